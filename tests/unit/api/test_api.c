/* test_api.c - the endpoint table: which request line reaches which
 * endpoint (405 and 404 alike), the pinned paths, the methods by llhttp's
 * numbers; the chat-era operations behind the table; cost from prices and
 * usage (values worked by hand); and the API family rules: a config that
 * mixes families is refused with the JSON path, an alias of the other
 * family gets a 404 in the endpoint's own shape. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <llhttp.h>

#include "api/api.h"
#include "config/config.h"
#include "sse.h"

/* The pure layer numbers methods as llhttp does. */
_Static_assert((int)MG_HTTP_GET == (int)HTTP_GET, "GET");
_Static_assert((int)MG_HTTP_POST == (int)HTTP_POST, "POST");
_Static_assert((int)MG_HTTP_DELETE == (int)HTTP_DELETE, "DELETE");

static const struct mg_endpoint *match(const char *path, int method,
                                       bool *known) {
  return mg_endpoint_match(path, strlen(path), method, known);
}

static void expect(const char *path, int method, enum mg_endpoint_id id) {
  bool known;
  const struct mg_endpoint *ep = match(path, method, &known);
  assert_non_null(ep);
  assert_true(known);
  assert_int_equal(ep->id, id);
}

static void expect_none(const char *path, int method, bool known_path) {
  bool known;
  assert_null(match(path, method, &known));
  assert_true(known == known_path);
}

static void test_match(void **state) {
  (void)state;
  expect("/v1/chat/completions", MG_HTTP_POST, MG_EP_CHAT);
  expect("/v1/completions", MG_HTTP_POST, MG_EP_COMPLETIONS);
  expect("/v1/embeddings", MG_HTTP_POST, MG_EP_EMBEDDINGS);
  expect("/v1/responses", MG_HTTP_POST, MG_EP_RESPONSES);
  expect("/v1/responses/resp_mgabc_resp_1", MG_HTTP_GET, MG_EP_RESPONSE_GET);
  expect("/v1/responses/resp_1", MG_HTTP_DELETE, MG_EP_RESPONSE_DELETE);
  expect("/v1/responses/resp_1/input_items", MG_HTTP_GET,
         MG_EP_RESPONSE_INPUT_ITEMS);
  expect("/v1/messages", MG_HTTP_POST, MG_EP_MESSAGES);
  expect("/v1/messages/count_tokens", MG_HTTP_POST, MG_EP_COUNT_TOKENS);
  /* ours, with the wrong method: 405 with Allow */
  expect_none("/v1/responses", MG_HTTP_GET, true);
  expect_none("/v1/messages", MG_HTTP_GET, true);
  expect_none("/v1/responses/resp_1", MG_HTTP_POST, true);
  expect_none("/v1/responses/resp_1/input_items", MG_HTTP_DELETE, true);
  assert_string_equal(mg_endpoint_allow("/v1/responses", 13), "POST");
  assert_string_equal(mg_endpoint_allow("/v1/responses/r1", 16),
                      "GET, DELETE");
  assert_string_equal(
      mg_endpoint_allow("/v1/responses/r1/input_items", 28), "GET");
  /* not ours: 404 */
  expect_none("/v1/responses/", MG_HTTP_GET, false);
  expect_none("/v1/responses/r1/cancel", MG_HTTP_POST, false);
  expect_none("/v1/responses/r1/input_items/x", MG_HTTP_GET, false);
  expect_none("/v1/responses/r%2F1", MG_HTTP_GET, false);
  expect_none("/v1/responsesx", MG_HTTP_POST, false);
  expect_none("/v1/messages/", MG_HTTP_POST, false);
  expect_none("/v2/messages", MG_HTTP_POST, false);
  assert_null(mg_endpoint_allow("/v1/nope", 8));
}

static void test_pinned_paths(void **state) {
  const struct mg_endpoint *get = mg_endpoint_get(MG_EP_RESPONSE_GET);
  const struct mg_endpoint *items =
      mg_endpoint_get(MG_EP_RESPONSE_INPUT_ITEMS);
  const char *p = "/v1/responses/resp_mgx_resp_9/input_items";
  struct mg_str id;
  struct mg_buf b;
  (void)state;
  assert_int_equal(mg_endpoint_pinned_id(items, p, strlen(p), &id), 0);
  assert_true(mg_str_eq_c(id, "resp_mgx_resp_9"));
  assert_int_equal(mg_endpoint_pinned_id(get, p, strlen(p), &id), -EINVAL);
  assert_int_equal(mg_endpoint_pinned_id(mg_endpoint_get(MG_EP_CHAT), p,
                                         strlen(p), &id),
                   -EINVAL);
  mg_buf_init(&b, 1024);
  assert_int_equal(mg_endpoint_pinned_path(items, mg_str_c("resp_9"), &b), 0);
  assert_string_equal(b.data, "/resp_9/input_items");
  mg_buf_reset(&b);
  assert_int_equal(mg_endpoint_pinned_path(get, mg_str_c("resp_9"), &b), 0);
  assert_string_equal(b.data, "/resp_9");
  assert_int_equal(mg_endpoint_pinned_path(get, mg_str_c("a/../b"), &b),
                   -EINVAL);
  mg_buf_free(&b);
}

/* routing/target.c keeps per-id strings for the legacy functions and
 * urls[]: they must say what the table says. */
static void test_table_agrees_with_routing(void **state) {
  int i;
  (void)state;
  for (i = 0; i < MG_EP__COUNT; i++) {
    const struct mg_endpoint *ep = mg_endpoint_get((enum mg_endpoint_id)i);
    assert_non_null(ep);
    assert_int_equal(ep->id, i);
    assert_string_equal(ep->name, mg_endpoint_name(ep->id));
    assert_string_equal(ep->path, mg_endpoint_path(ep->id));
    assert_int_equal(ep->shape, mg_req_shape_of(ep->id));
    assert_non_null(ep->ops);
    assert_non_null(ep->ops->error_body);
    /* a tier that renders must have its renderers */
    if (ep->traditional)
      assert_true(ep->ops->wrap_text && ep->ops->wrap_text_sse);
    if (ep->cacheable && ep->streams)
      assert_non_null(ep->ops->replay_sse);
    if (ep->streams)
      assert_true(ep->ops->stream_event && ep->ops->stream_error);
  }
  assert_null(mg_endpoint_get(MG_EP__COUNT));
  /* the legacy matcher still knows only the three the exchange serves */
  assert_int_equal(mg_endpoint_from_path("/v1/chat/completions", 20),
                   MG_EP_CHAT);
  assert_int_equal(mg_endpoint_from_path("/v1/responses", 13), -1);
}

/* ---- chat-era operations ---------------------------------------------- */

static void test_chat_ops(void **state) {
  const struct mg_endpoint *chat = mg_endpoint_get(MG_EP_CHAT);
  const struct mg_endpoint *emb = mg_endpoint_get(MG_EP_EMBEDDINGS);
  struct mg_json_doc d, scratch;
  struct mg_stream_state st;
  struct mg_sse_event ev;
  struct mg_usage u;
  struct mg_buf out;
  struct sse s;
  const char *answer =
      "{\"id\":\"c1\",\"object\":\"chat.completion\",\"choices\":[{\"index\":"
      "0,\"message\":{\"role\":\"assistant\",\"content\":\"hi\"},"
      "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1000,"
      "\"completion_tokens\":500,\"total_tokens\":1500,"
      "\"prompt_tokens_details\":{\"cached_tokens\":400},"
      "\"completion_tokens_details\":{\"reasoning_tokens\":200}}}";
  (void)state;
  mg_json_init(&d, 10000);
  mg_json_init(&scratch, 10000);
  mg_buf_init(&out, 1 << 16);
  assert_int_equal(mg_json_parse(&d, answer, strlen(answer), NULL), 0);
  mg_usage_init(&u);
  chat->ops->usage(&d, &u);
  assert_int_equal(u.prompt, 1000);
  assert_int_equal(u.completion, 500);
  assert_int_equal(u.cached, 400);
  assert_int_equal(u.reasoning, 200);

  /* a stream: usage arrives in the last chunk, then [DONE] */
  mg_stream_state_init(&st);
  ev.event = MG_STR_NULL;
  ev.data = mg_str_c("{\"choices\":[{\"index\":0,\"delta\":{\"content\":"
                     "\"usage\"}}]}");
  chat->ops->stream_event(&st, &ev, &scratch);
  assert_int_equal(st.usage.prompt, -1);
  ev.data = mg_str_c("{\"choices\":[],\"usage\":{\"prompt_tokens\":7,"
                     "\"completion_tokens\":3}}");
  chat->ops->stream_event(&st, &ev, &scratch);
  assert_int_equal(st.usage.prompt, 7);
  assert_int_equal(st.usage.completion, 3);
  assert_false(st.done);
  ev.data = mg_str_c("[DONE]");
  chat->ops->stream_event(&st, &ev, &scratch);
  assert_true(st.done);
  assert_false(st.failed);
  /* an upstream's error chunk ends it as failed */
  mg_stream_state_init(&st);
  ev.data = mg_str_c("{\"error\":{\"message\":\"x\",\"type\":\"server_error\"}}");
  chat->ops->stream_event(&st, &ev, &scratch);
  assert_true(st.done && st.failed);

  /* embeddings make no output tokens */
  {
    const char *e = "{\"usage\":{\"prompt_tokens\":8,\"total_tokens\":8}}";
    assert_int_equal(mg_json_parse(&d, e, strlen(e), NULL), 0);
  }
  mg_usage_init(&u);
  emb->ops->usage(&d, &u);
  assert_int_equal(u.prompt, 8);
  assert_int_equal(u.completion, 0);
  assert_null(emb->ops->logprobs);
  assert_null(emb->ops->wrap_text);

  /* a failed stream: an error event, never [DONE] */
  assert_int_equal(chat->ops->stream_error(&out, NULL, NULL, "gone",
                                           "upstream_error"),
                   0);
  sse_parse(&s, out.data, out.len);
  assert_int_equal(s.n, 1);
  assert_int_equal(s.bad, 0);
  assert_string_equal(jstr(jget(s.ev[0].json, "error"), "code"),
                      "upstream_error");
  assert_string_equal(jstr(jget(s.ev[0].json, "error"), "type"),
                      "server_error");
  assert_null(strstr(out.data, "[DONE]"));
  sse_free(&s);
  mg_buf_free(&out);
  mg_json_free(&d);
  mg_json_free(&scratch);
}

/* ---- cost ---------------------------------------------------------------- */

static void test_cost(void **state) {
  struct mg_price oa = {true, MG_API_OPENAI, 2.50, 1.25, 10.00, 2.50, 2.50};
  struct mg_price an = {true, MG_API_ANTHROPIC, 3.00, 3.00, 15.00, 0.30, 3.75};
  struct mg_price none = {0};
  struct mg_usage u;
  double c;
  (void)state;
  /* OpenAI: (1000-400) x 2.50 + 400 x 1.25 + 500 x 10.00 = 1500 + 500 +
   * 5000 = 7000 per million = $0.007 (the 200 reasoning tokens are inside
   * the 500 completion tokens) */
  mg_usage_init(&u);
  u.prompt = 1000;
  u.cached = 400;
  u.completion = 500;
  u.reasoning = 200;
  assert_int_equal(mg_price_cost(&oa, &u, &c), 0);
  assert_true(fabs(c - 0.007) < 1e-15);
  /* no cached count: all input at the input price: 2500 + 5000 */
  u.cached = -1;
  assert_int_equal(mg_price_cost(&oa, &u, &c), 0);
  assert_true(fabs(c - 0.0075) < 1e-15);
  /* Anthropic: 25 x 3 + 3000 x 0.30 + 1000 x 3.75 + 40 x 15 = 75 + 900 +
   * 3750 + 600 = 5325 per million */
  mg_usage_init(&u);
  u.prompt = 25;
  u.cache_read = 3000;
  u.cache_write = 1000;
  u.completion = 40;
  assert_int_equal(mg_price_cost(&an, &u, &c), 0);
  assert_true(fabs(c - 0.005325) < 1e-15);
  /* unknown usage: no cost, never a guess */
  mg_usage_init(&u);
  assert_int_equal(mg_price_cost(&oa, &u, &c), -ENOENT);
  u.prompt = 5;
  assert_int_equal(mg_price_cost(&oa, &u, &c), -ENOENT);
  u.completion = 1;
  assert_int_equal(mg_price_cost(&none, &u, &c), -EINVAL);
}

/* ---- families ------------------------------------------------------------ */

static struct mg_config *load(const char *json) {
  struct mg_cfg_errors e;
  struct mg_config *c;
  size_t i;
  mg_cfg_errors_init(&e);
  c = mg_config_load_string(json, strlen(json), "test", &e);
  for (i = 0; i < e.n; i++)
    print_message("config error: %s\n", e.msgs[i]);
  mg_cfg_errors_free(&e);
  assert_non_null(c);
  return c;
}

#define FAMILY_TARGETS                                                       \
  "\"targets\":{\"gpt\":{\"base_url\":\"http://o/v1\",\"model\":\"g\","      \
  "\"fallbacks\":[\"claude\",\"gpt-mini\",\"traditional:faq\",\"cache\"]}," \
  "\"gpt-mini\":{\"base_url\":\"http://o/v1\",\"model\":\"gm\"},"            \
  "\"claude\":{\"base_url\":\"http://a/v1\",\"model\":\"c\",\"api\":"        \
  "\"anthropic\",\"fallbacks\":[\"haiku\"]},"                                \
  "\"haiku\":{\"base_url\":\"http://a/v1\",\"model\":\"h\",\"api\":"         \
  "\"anthropic\"}},"                                                         \
  "\"traditional\":{\"faq\":{\"static\":\"See the FAQ.\"}}"

/* The same without the fallback across families. */
#define FAMILY_TARGETS_OK                                                    \
  "\"targets\":{\"gpt\":{\"base_url\":\"http://o/v1\",\"model\":\"g\","      \
  "\"fallbacks\":[\"gpt-mini\",\"traditional:faq\",\"cache\"]},"             \
  "\"gpt-mini\":{\"base_url\":\"http://o/v1\",\"model\":\"gm\"},"            \
  "\"claude\":{\"base_url\":\"http://a/v1\",\"model\":\"c\",\"api\":"        \
  "\"anthropic\",\"fallbacks\":[\"haiku\"]},"                                \
  "\"haiku\":{\"base_url\":\"http://a/v1\",\"model\":\"h\",\"api\":"         \
  "\"anthropic\"}},"                                                         \
  "\"traditional\":{\"faq\":{\"static\":\"See the FAQ.\"}}"

/* The loader refuses a flag and a chain that mix families, naming each
 * path (`modelgate check` prints them). */
static void test_check_families(void **state) {
  static const char json[] =
      "{" FAMILY_TARGETS ",\"flags\":{"
      "\"mixed\":{\"off_variant\":\"ctl\",\"variants\":{"
      "\"ctl\":{\"target\":\"gpt\",\"weight\":90},"
      "\"trt\":{\"target\":\"claude\",\"weight\":10}}},"
      "\"fine\":{\"off_variant\":\"a\",\"variants\":{"
      "\"a\":{\"target\":\"claude\"},\"b\":{\"target\":\"haiku\"}}}},"
      "\"aliases\":{\"m\":{\"flag\":\"mixed\"},\"f\":{\"flag\":\"fine\"},"
      "\"g\":{\"target\":\"gpt\"},\"c\":{\"target\":\"claude\"}}}";
  struct mg_cfg_errors e;
  struct mg_config *c;
  (void)state;
  mg_cfg_errors_init(&e);
  c = mg_config_load_string(json, strlen(json), "test", &e);
  assert_null(c);
  assert_int_equal(e.n, 2);
  assert_non_null(strstr(e.msgs[0], "$.flags.mixed.variants.trt.target: "
                                    "target \"claude\" speaks api anthropic"));
  assert_non_null(strstr(e.msgs[1], "$.targets.gpt.fallbacks[0]: target "
                                    "\"claude\" speaks api anthropic, but "
                                    "\"gpt\" speaks openai"));
  mg_cfg_errors_free(&e);
}

/* A model name of the other API: a 404 in the endpoint's own shape that
 * says where the model is served. */
static void test_alias_serves(void **state) {
  struct mg_config *c = load(
      "{" FAMILY_TARGETS_OK ",\"flags\":{\"fine\":{\"off_variant\":\"a\","
      "\"variants\":{\"a\":{\"target\":\"claude\"},\"b\":{\"target\":"
      "\"haiku\"}}}},\"aliases\":{\"f\":{\"flag\":\"fine\"},"
      "\"g\":{\"target\":\"gpt\"}}}");
  const struct mg_alias *f = mg_route_lookup(&c->routes, mg_str_c("f"));
  const struct mg_alias *g = mg_route_lookup(&c->routes, mg_str_c("g"));
  const struct mg_endpoint *chat = mg_endpoint_get(MG_EP_CHAT);
  const struct mg_endpoint *msgs = mg_endpoint_get(MG_EP_MESSAGES);
  struct mg_buf b;
  cJSON *j;
  int status = 0;
  (void)state;
  assert_true(mg_api_alias_serves(g, chat));
  assert_true(mg_api_alias_serves(g, mg_endpoint_get(MG_EP_RESPONSES)));
  assert_false(mg_api_alias_serves(g, msgs));
  assert_true(mg_api_alias_serves(f, msgs));
  assert_true(mg_api_alias_serves(f, mg_endpoint_get(MG_EP_COUNT_TOKENS)));
  assert_false(mg_api_alias_serves(f, chat));
  assert_false(mg_api_alias_serves(NULL, chat));

  mg_buf_init(&b, 4096);
  assert_int_equal(mg_api_wrong_family_error(chat, f, mg_str_c("f"), &b,
                                             &status),
                   0);
  assert_int_equal(status, 404);
  j = cJSON_Parse(b.data);
  assert_string_equal(jstr(jget(j, "error"), "code"), "model_not_found");
  assert_non_null(strstr(jstr(jget(j, "error"), "message"),
                         "POST /v1/messages"));
  cJSON_Delete(j);
  mg_buf_reset(&b);
  assert_int_equal(mg_api_wrong_family_error(msgs, g, mg_str_c("g"), &b,
                                             &status),
                   0);
  j = cJSON_Parse(b.data);
  assert_string_equal(jstr(j, "type"), "error");
  assert_string_equal(jstr(jget(j, "error"), "type"), "not_found_error");
  assert_non_null(strstr(jstr(jget(j, "error"), "message"),
                         "/v1/chat/completions"));
  cJSON_Delete(j);
  mg_buf_free(&b);
  mg_config_unref(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_match),
      cmocka_unit_test(test_pinned_paths),
      cmocka_unit_test(test_table_agrees_with_routing),
      cmocka_unit_test(test_chat_ops),
      cmocka_unit_test(test_cost),
      cmocka_unit_test(test_check_families),
      cmocka_unit_test(test_alias_serves),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
