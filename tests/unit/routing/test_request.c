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
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
