/* test_request.c - features read from request bodies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "routing/request.h"

struct fx {
  struct mg_json_doc doc;
  struct mg_request r;
  struct mg_request_error err;
};

static int parse(struct fx *f, enum mg_endpoint ep, const char *body) {
  mg_request_free(&f->r);
  mg_request_init(&f->r, ep);
  memset(&f->err, 0, sizeof(f->err));
  return mg_request_parse(&f->r, body, strlen(body), &f->doc, &f->err);
}

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof(*f));
  mg_json_init(&f->doc, 1000);
  mg_request_init(&f->r, MG_EP_CHAT);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fx *f = *state;
  mg_request_free(&f->r);
  mg_json_free(&f->doc);
  free(f);
  return 0;
}

static void test_chat_features(void **state) {
  struct fx *f = *state;
  assert_int_equal(
      parse(f, MG_EP_CHAT,
            "{\"model\":\"gpt\",\"user\":\"u-1\",\"stream\":true,"
            "\"max_tokens\":64,\"tools\":[{},{},{}],"
            "\"messages\":[{\"role\":\"system\",\"content\":\"héllo\"},"
            "{\"role\":\"user\",\"content\":[{\"type\":\"text\","
            "\"text\":\"ab\\u00e9\"},{\"type\":\"image_url\"}]}],"
            "\"metadata\":{\"region\":\"eu\",\"n\":3}}"),
      0);
  assert_true(mg_str_eq_c(f->r.model, "gpt"));
  assert_true(mg_str_eq_c(f->r.user, "u-1"));
  assert_true(f->r.input.stream);
  assert_int_equal(f->r.input.max_tokens, 64);
  assert_int_equal(f->r.input.tools, 3);
  assert_int_equal(f->r.input.messages, 2);
  /* code points, not bytes: "héllo" is 5, "abé" is 3 */
  assert_int_equal(f->r.input.chars, 8);
  assert_non_null(mg_request_attr(&f->r, mg_str_c("region")));
  assert_true(mg_str_eq_c(*mg_request_attr(&f->r, mg_str_c("region")), "eu"));
  /* non-string metadata values are not attributes */
  assert_null(mg_request_attr(&f->r, mg_str_c("n")));
}

static void test_headers_win_over_metadata(void **state) {
  struct fx *f = *state;
  mg_request_free(&f->r);
  mg_request_init(&f->r, MG_EP_CHAT);
  assert_true(mg_request_add_attr(&f->r, mg_str_c("region"), mg_str_c("us")));
  {
    const char *b = "{\"model\":\"m\",\"metadata\":{\"region\":\"eu\","
                    "\"tier\":\"gold\"}}";
    assert_int_equal(mg_request_parse(&f->r, b, strlen(b), &f->doc, &f->err),
                     0);
  }
  assert_true(mg_str_eq_c(*mg_request_attr(&f->r, mg_str_c("region")), "us"));
  assert_true(mg_str_eq_c(*mg_request_attr(&f->r, mg_str_c("tier")), "gold"));
}

static void test_escaped_model_is_unescaped(void **state) {
  struct fx *f = *state;
  assert_int_equal(parse(f, MG_EP_CHAT, "{\"model\":\"g\\u0070t\"}"), 0);
  assert_true(mg_str_eq_c(f->r.model, "gpt"));
}

static void test_completions_and_embeddings(void **state) {
  struct fx *f = *state;
  assert_int_equal(
      parse(f, MG_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"abcd\"}"), 0);
  assert_int_equal(f->r.input.chars, 4);
  assert_int_equal(f->r.input.messages, 1);
  assert_int_equal(parse(f, MG_EP_EMBEDDINGS,
                         "{\"model\":\"m\",\"input\":[\"ab\",\"c\",[1,2]],"
                         "\"stream\":true}"),
                   0);
  assert_int_equal(f->r.input.chars, 3);
  assert_int_equal(f->r.input.messages, 3);
  /* embeddings never stream */
  assert_false(f->r.input.stream);
}

static void test_errors(void **state) {
  struct fx *f = *state;
  assert_int_equal(parse(f, MG_EP_CHAT, "{\"model\":"), -1);
  assert_int_equal(f->err.code, MG_REQ_INVALID_JSON);
  assert_non_null(strstr(f->err.message, "could not parse"));
  assert_int_equal(parse(f, MG_EP_CHAT, "[1]"), -1);
  assert_int_equal(f->err.code, MG_REQ_NOT_OBJECT);
  assert_int_equal(parse(f, MG_EP_CHAT, "{\"messages\":[]}"), -1);
  assert_int_equal(f->err.code, MG_REQ_MISSING_MODEL);
  assert_string_equal(f->err.param, "model");
  assert_int_equal(parse(f, MG_EP_CHAT, "{\"model\":\"\"}"), -1);
  assert_int_equal(f->err.code, MG_REQ_MISSING_MODEL);
  assert_int_equal(parse(f, MG_EP_CHAT, "{\"model\":null}"), -1);
  assert_int_equal(f->err.code, MG_REQ_MISSING_MODEL);
  assert_int_equal(parse(f, MG_EP_CHAT, "{\"model\":42}"), -1);
  assert_int_equal(f->err.code, MG_REQ_INVALID_FIELD);
  assert_int_equal(parse(f, MG_EP_CHAT, "{\"model\":\"m\",\"stream\":\"yes\"}"),
                   -1);
  assert_int_equal(f->err.code, MG_REQ_INVALID_FIELD);
  assert_string_equal(f->err.param, "stream");
  /* a duplicated key that routing reads could be read differently upstream */
  assert_int_equal(parse(f, MG_EP_CHAT, "{\"model\":\"a\",\"model\":\"b\"}"),
                   -1);
  assert_int_equal(f->err.code, MG_REQ_DUPLICATE_KEY);
  /* ...also when one of the two is spelled with an escape */
  assert_int_equal(parse(f, MG_EP_CHAT,
                         "{\"model\":\"a\",\"stream\":false,"
                         "\"mod\\u0065l\":\"b\"}"),
                   -1);
  assert_int_equal(f->err.code, MG_REQ_DUPLICATE_KEY);
  assert_string_equal(f->err.param, "model");
  /* an escaped key is the key it spells */
  assert_int_equal(parse(f, MG_EP_CHAT,
                         "{\"\\u006dodel\":\"esc\",\"str\\u0065am\":true}"),
                   0);
  assert_int_equal(f->r.model.len, 3);
  assert_memory_equal(f->r.model.p, "esc", 3);
  assert_true(f->r.input.stream);
  assert_int_equal(parse(f, MG_EP_CHAT,
                         "{\"model\":\"a\",\"x\":1,\"x\":2}"),
                   0); /* keys routing ignores are the upstream's business */
}

static void test_too_many_tokens(void **state) {
  struct fx *f = *state;
  char body[8000];
  size_t n = 0, i;
  n += (size_t)snprintf(body, sizeof(body), "{\"model\":\"m\",\"a\":[");
  for (i = 0; i < 1500; i++)
    n += (size_t)snprintf(body + n, sizeof(body) - n, "%s1", i ? "," : "");
  snprintf(body + n, sizeof(body) - n, "]}");
  assert_int_equal(parse(f, MG_EP_CHAT, body), -1);
  assert_int_equal(f->err.code, MG_REQ_TOO_COMPLEX);
}

/* Responses: `input` as a string or items (content strings or parts, a
 * function call's output), `instructions` one more message. */
static void test_responses_features(void **state) {
  struct fx *f = *state;
  assert_int_equal(
      parse(f, MG_EP_RESPONSES,
            "{\"model\":\"m\",\"input\":\"héllo\",\"instructions\":\"abc\","
            "\"stream\":true,\"max_output_tokens\":300,\"tools\":[{},{}]}"),
      0);
  assert_int_equal(f->r.shape, MG_SHAPE_RESPONSES);
  assert_int_equal(f->r.input.messages, 2);
  assert_int_equal(f->r.input.chars, 8);
  assert_true(f->r.input.stream);
  assert_int_equal(f->r.input.max_tokens, 300);
  assert_int_equal(f->r.input.tools, 2);
  assert_int_equal(
      parse(f, MG_EP_RESPONSES,
            "{\"model\":\"m\",\"input\":["
            "{\"role\":\"user\",\"content\":\"ab\"},"
            "{\"type\":\"message\",\"role\":\"user\",\"content\":["
            "{\"type\":\"input_text\",\"text\":\"cde\"},"
            "{\"type\":\"input_image\",\"image_url\":\"http://x/long\"}]},"
            "{\"type\":\"function_call\",\"call_id\":\"c\",\"arguments\":"
            "\"{}\"},"
            "{\"type\":\"function_call_output\",\"call_id\":\"c\","
            "\"output\":\"fgh\"}]}"),
      0);
  assert_int_equal(f->r.input.messages, 4);
  assert_int_equal(f->r.input.chars, 8);
  assert_false(f->r.input.stream);
  assert_int_equal(f->r.input.max_tokens, -1);
}

/* Anthropic: messages with string or block content (a tool_result's own
 * content counts), `system` as a string or blocks, metadata.user_id the
 * unit. */
static void test_messages_features(void **state) {
  struct fx *f = *state;
  assert_int_equal(
      parse(f, MG_EP_MESSAGES,
            "{\"model\":\"claude\",\"max_tokens\":1024,\"stream\":true,"
            "\"system\":[{\"type\":\"text\",\"text\":\"Be brief.\"}],"
            "\"metadata\":{\"user_id\":\"u-42\"},\"tools\":[{}],"
            "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
            "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\","
            "\"text\":\"ok\"},{\"type\":\"tool_use\",\"id\":\"t\",\"name\":"
            "\"f\",\"input\":{}}]},"
            "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\","
            "\"tool_use_id\":\"t\",\"content\":[{\"type\":\"text\","
            "\"text\":\"42\"}]}]}]}"),
      0);
  assert_int_equal(f->r.input.messages, 4);
  /* "Be brief." 9 + "hi" 2 + "ok" 2 + "42" 2 */
  assert_int_equal(f->r.input.chars, 15);
  assert_int_equal(f->r.input.max_tokens, 1024);
  assert_int_equal(f->r.input.tools, 1);
  assert_true(f->r.input.stream);
  assert_true(mg_str_eq_c(f->r.user, "u-42"));
  /* Anthropic has no body user or safety_identifier */
  assert_int_equal(parse(f, MG_EP_MESSAGES,
                         "{\"model\":\"c\",\"user\":\"x\",\"system\":\"abc\","
                         "\"safety_identifier\":\"y\",\"messages\":[]}"),
                   0);
  assert_int_equal(f->r.user.len, 0);
  assert_int_equal(f->r.safety_identifier.len, 0);
  assert_int_equal(f->r.input.chars, 3);
  assert_int_equal(f->r.input.messages, 1);
  /* two user_ids could be read differently upstream */
  assert_int_equal(parse(f, MG_EP_MESSAGES,
                         "{\"model\":\"c\",\"metadata\":{\"user_id\":\"a\","
                         "\"user_id\":\"b\"}}"),
                   -1);
  assert_int_equal(f->err.code, MG_REQ_DUPLICATE_KEY);
  /* a token count never streams */
  assert_int_equal(parse(f, MG_EP_COUNT_TOKENS,
                         "{\"model\":\"c\",\"stream\":true,\"messages\":[]}"),
                   0);
  assert_false(f->r.input.stream);
}

static enum mg_unit_source unit_of(struct fx *f, struct mg_str *id) {
  return mg_request_unit(&f->r, id);
}

/* DESIGN.md's order: safety_identifier, user, header, the client. */
static void test_unit_sources(void **state) {
  struct fx *f = *state;
  struct mg_str id;
  const char *full = "{\"model\":\"m\",\"safety_identifier\":\"sid\","
                     "\"user\":\"usr\"}";

  mg_request_free(&f->r);
  mg_request_init(&f->r, MG_EP_CHAT);
  f->r.unit_header = mg_str_c("hdr");
  assert_true(mg_request_set_client(&f->r, mg_str_c("acme-app")));
  assert_int_equal(mg_request_parse(&f->r, full, strlen(full), &f->doc,
                                    &f->err),
                   0);
  assert_int_equal(unit_of(f, &id), MG_USRC_SAFETY_IDENTIFIER);
  assert_true(mg_str_eq_c(id, "sid"));
  f->r.safety_identifier = MG_STR_NULL;
  assert_int_equal(unit_of(f, &id), MG_USRC_USER);
  assert_true(mg_str_eq_c(id, "usr"));
  f->r.user = MG_STR_NULL;
  assert_int_equal(unit_of(f, &id), MG_USRC_HEADER);
  assert_true(mg_str_eq_c(id, "hdr"));
  f->r.unit_header = MG_STR_NULL;
  assert_int_equal(unit_of(f, &id), MG_USRC_CLIENT);
  assert_true(mg_str_eq_c(id, "acme-app"));
  f->r.client = MG_STR_NULL;
  assert_int_equal(unit_of(f, &id), MG_USRC_NONE);
  assert_int_equal(id.len, 0);
  assert_string_equal(mg_unit_source_name(MG_USRC_SAFETY_IDENTIFIER),
                      "safety_identifier");
  assert_string_equal(mg_unit_source_name(MG_USRC_CLIENT), "client");
  assert_string_equal(mg_unit_source_name(MG_USRC_HEADER), "header");
  /* for every endpoint with a body */
  assert_int_equal(parse(f, MG_EP_RESPONSES,
                         "{\"model\":\"m\",\"safety_identifier\":\"s\\u0031\","
                         "\"input\":\"x\"}"),
                   0);
  assert_int_equal(unit_of(f, &id), MG_USRC_SAFETY_IDENTIFIER);
  assert_true(mg_str_eq_c(id, "s1"));
  assert_int_equal(parse(f, MG_EP_EMBEDDINGS,
                         "{\"model\":\"m\",\"user\":\"e\",\"input\":\"x\"}"),
                   0);
  assert_int_equal(unit_of(f, &id), MG_USRC_USER);
  /* an empty or non-string identifier is no unit */
  assert_int_equal(parse(f, MG_EP_CHAT,
                         "{\"model\":\"m\",\"safety_identifier\":\"\","
                         "\"user\":7}"),
                   0);
  assert_int_equal(unit_of(f, &id), MG_USRC_NONE);
}

/* The client attribute is the server's word: no header or metadata sets
 * or overrides it. */
static void test_client_attr(void **state) {
  struct fx *f = *state;
  const char *b = "{\"model\":\"m\",\"metadata\":{\"client\":\"spoof\"}}";
  mg_request_free(&f->r);
  mg_request_init(&f->r, MG_EP_CHAT);
  assert_true(mg_request_add_attr(&f->r, mg_str_c("Client"),
                                  mg_str_c("header-spoof")));
  assert_true(mg_request_set_client(&f->r, mg_str_c("real")));
  assert_int_equal(mg_request_parse(&f->r, b, strlen(b), &f->doc, &f->err), 0);
  assert_true(mg_str_eq_c(*mg_request_attr(&f->r, mg_str_c("client")),
                          "real"));
  /* set after parsing: still wins over the metadata */
  mg_request_free(&f->r);
  mg_request_init(&f->r, MG_EP_CHAT);
  assert_int_equal(mg_request_parse(&f->r, b, strlen(b), &f->doc, &f->err), 0);
  assert_true(mg_request_set_client(&f->r, mg_str_c("real")));
  assert_true(mg_str_eq_c(*mg_request_attr(&f->r, mg_str_c("client")),
                          "real"));
}

static uint32_t needs(struct fx *f, enum mg_endpoint_id ep, const char *b) {
  assert_int_equal(parse(f, ep, b), 0);
  return f->r.needs;
}

/* What a fallback tier must honour. */
static void test_needs(void **state) {
  struct fx *f = *state;
  assert_int_equal(needs(f, MG_EP_CHAT, "{\"model\":\"m\"}"), 0);
  assert_int_equal(needs(f, MG_EP_CHAT,
                         "{\"model\":\"m\",\"response_format\":{\"type\":"
                         "\"json_object\"}}"),
                   MG_NEED_JSON);
  assert_int_equal(needs(f, MG_EP_CHAT,
                         "{\"model\":\"m\",\"response_format\":{\"type\":"
                         "\"json_schema\",\"json_schema\":{}}}"),
                   MG_NEED_JSON);
  assert_int_equal(needs(f, MG_EP_CHAT,
                         "{\"model\":\"m\",\"response_format\":{\"type\":"
                         "\"text\"},\"tool_choice\":\"auto\",\"n\":1}"),
                   0);
  assert_int_equal(needs(f, MG_EP_CHAT,
                         "{\"model\":\"m\",\"tool_choice\":\"required\"}"),
                   MG_NEED_TOOL);
  assert_int_equal(needs(f, MG_EP_CHAT,
                         "{\"model\":\"m\",\"tool_choice\":{\"type\":"
                         "\"function\",\"function\":{\"name\":\"f\"}}}"),
                   MG_NEED_TOOL);
  assert_int_equal(needs(f, MG_EP_CHAT, "{\"model\":\"m\",\"n\":3}"),
                   MG_NEED_N);
  assert_int_equal(needs(f, MG_EP_CHAT, "{\"model\":\"m\",\"logprobs\":true}"),
                   MG_NEED_LOGPROBS);
  assert_int_equal(needs(f, MG_EP_COMPLETIONS,
                         "{\"model\":\"m\",\"logprobs\":2,\"n\":2}"),
                   MG_NEED_LOGPROBS | MG_NEED_N);
  /* Responses */
  assert_int_equal(needs(f, MG_EP_RESPONSES,
                         "{\"model\":\"m\",\"text\":{\"format\":{\"type\":"
                         "\"json_schema\",\"name\":\"x\",\"schema\":{}}}}"),
                   MG_NEED_JSON);
  assert_int_equal(needs(f, MG_EP_RESPONSES,
                         "{\"model\":\"m\",\"text\":{\"format\":{\"type\":"
                         "\"text\"}},\"tool_choice\":\"none\"}"),
                   0);
  assert_int_equal(needs(f, MG_EP_RESPONSES,
                         "{\"model\":\"m\",\"tool_choice\":{\"type\":"
                         "\"file_search\"}}"),
                   MG_NEED_TOOL);
  assert_int_equal(needs(f, MG_EP_RESPONSES,
                         "{\"model\":\"m\",\"tool_choice\":{\"type\":"
                         "\"allowed_tools\",\"mode\":\"auto\",\"tools\":[]}}"),
                   0);
  assert_int_equal(needs(f, MG_EP_RESPONSES,
                         "{\"model\":\"m\",\"include\":[\"message.output_text."
                         "logprobs\"]}"),
                   MG_NEED_LOGPROBS);
  assert_true(f->r.logprobs);
  /* Responses has no n; top_logprobs alone returns nothing */
  assert_int_equal(needs(f, MG_EP_RESPONSES,
                         "{\"model\":\"m\",\"n\":4,\"top_logprobs\":5}"),
                   0);
  /* Anthropic */
  assert_int_equal(needs(f, MG_EP_MESSAGES,
                         "{\"model\":\"c\",\"tool_choice\":{\"type\":\"any\"}}"),
                   MG_NEED_TOOL);
  assert_int_equal(needs(f, MG_EP_MESSAGES,
                         "{\"model\":\"c\",\"tool_choice\":{\"type\":\"tool\","
                         "\"name\":\"f\"}}"),
                   MG_NEED_TOOL);
  assert_int_equal(needs(f, MG_EP_MESSAGES,
                         "{\"model\":\"c\",\"tool_choice\":{\"type\":"
                         "\"auto\"}}"),
                   0);
  assert_string_equal(mg_need_name(MG_NEED_JSON), "response_format");
  assert_string_equal(mg_need_name(MG_NEED_TOOL), "tool_choice");
  assert_null(mg_need_name(MG_NEED_JSON | MG_NEED_N));
}

static void test_previous_response_id(void **state) {
  struct fx *f = *state;
  assert_int_equal(parse(f, MG_EP_RESPONSES,
                         "{\"model\":\"m\",\"previous_response_id\":"
                         "\"resp_mgabc_resp_1\",\"input\":\"more\"}"),
                   0);
  assert_true(mg_str_eq_c(f->r.previous_response_id, "resp_mgabc_resp_1"));
  assert_int_equal(f->doc.toks[f->r.previous_tok].type, MG_JSON_STRING);
  assert_int_equal(parse(f, MG_EP_RESPONSES,
                         "{\"model\":\"m\",\"previous_response_id\":null}"),
                   0);
  assert_int_equal(f->r.previous_tok, MG_JSON_NOTFOUND);
  assert_int_equal(parse(f, MG_EP_RESPONSES,
                         "{\"model\":\"m\",\"previous_response_id\":7}"),
                   -1);
  assert_int_equal(f->err.code, MG_REQ_INVALID_FIELD);
  assert_string_equal(f->err.param, "previous_response_id");
  assert_int_equal(parse(f, MG_EP_RESPONSES,
                         "{\"model\":\"m\",\"previous_response_id\":\"\"}"),
                   -1);
  /* which conversation: a duplicate could be read differently upstream */
  assert_int_equal(parse(f, MG_EP_RESPONSES,
                         "{\"model\":\"m\",\"previous_response_id\":\"a\","
                         "\"previous_response_id\":\"b\"}"),
                   -1);
  assert_int_equal(f->err.code, MG_REQ_DUPLICATE_KEY);
  /* the pinned endpoints take no body */
  assert_int_equal(parse(f, MG_EP_RESPONSE_GET, "{\"model\":\"m\"}"), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_chat_features, setup, teardown),
      cmocka_unit_test_setup_teardown(test_headers_win_over_metadata, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_escaped_model_is_unescaped, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_completions_and_embeddings, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_too_many_tokens, setup, teardown),
      cmocka_unit_test_setup_teardown(test_responses_features, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_messages_features, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_unit_sources, setup, teardown),
      cmocka_unit_test_setup_teardown(test_client_attr, setup, teardown),
      cmocka_unit_test_setup_teardown(test_needs, setup, teardown),
      cmocka_unit_test_setup_teardown(test_previous_response_id, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
