/* test_route.c - the alias table and targets section. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "routing/route.h"
#include "routing/target.h"

static char *no_env(const char *name) {
  (void)name;
  return NULL;
}

static char *fake_env(const char *name) {
  return strcmp(name, "KEY") == 0 ? (char *)"sk-1" : NULL;
}

static void test_endpoints(void **state) {
  (void)state;
  assert_int_equal(mg_endpoint_from_path("/v1/chat/completions", 20),
                   MG_EP_CHAT);
  assert_int_equal(mg_endpoint_from_path("/v1/completions", 15),
                   MG_EP_COMPLETIONS);
  assert_int_equal(mg_endpoint_from_path("/v1/embeddings", 14),
                   MG_EP_EMBEDDINGS);
  assert_int_equal(mg_endpoint_from_path("/v1/chat/completions/", 21), -1);
  assert_int_equal(mg_endpoint_from_path("/v1/models", 10), -1);
  assert_string_equal(mg_endpoint_path(MG_EP_CHAT), "/v1/chat/completions");
}

static void test_targets_and_aliases(void **state) {
  struct mg_cfg_errors e;
  struct mg_targets t;
  struct mg_routes r;
  struct mg_flags flags;
  cJSON *root = cJSON_Parse(
      "{\"targets\":{\"a\":{\"base_url\":\"http://u/v1\",\"model\":\"m-a\","
      "\"api_key_env\":\"KEY\",\"timeouts\":{\"first_byte_ms\":1234}},"
      "\"b\":{\"base_url\":\"https://v\",\"model\":\"m-b\","
      "\"tls_verify\":false,\"ca_file\":\"/tmp/ca.pem\"}},"
      "\"aliases\":{\"small\":{\"target\":\"a\"},\"big\":{\"target\":\"b\"}},"
      "\"default_route\":\"small\"}");
  const struct mg_alias *al;
  (void)state;
  mg_cfg_errors_init(&e);
  mg_targets_parse(&t, cJSON_GetObjectItem(root, "targets"), "$.targets",
                   fake_env, &e);
  mg_flags_parse(&flags, NULL, &t, &e);
  mg_routes_parse(&r, root, &t, &flags, &e);
  assert_int_equal(e.n, 0);
  assert_int_equal(t.n, 2);
  assert_int_equal(mg_targets_find(&t, "b")->index, 1);
  assert_string_equal(mg_targets_find(&t, "a")->auth_header,
                      "Authorization: Bearer sk-1");
  assert_int_equal(mg_targets_find(&t, "a")->timeouts.first_byte_ms, 1234);
  assert_int_equal(mg_targets_find(&t, "a")->timeouts.total_ms, 300000);
  assert_false(mg_targets_find(&t, "b")->tls_verify);
  assert_string_equal(mg_targets_find(&t, "b")->ca_file, "/tmp/ca.pem");
  al = mg_route_lookup(&r, mg_str_c("big"));
  assert_non_null(al);
  assert_ptr_equal(al->target, mg_targets_find(&t, "b"));
  /* unknown names go to the default route */
  al = mg_route_lookup(&r, mg_str_c("gpt-5"));
  assert_non_null(al);
  assert_string_equal(al->name, "small");
  /* lookups are exact: no prefix or case folding */
  assert_string_equal(mg_route_lookup(&r, mg_str_c("BIG"))->name, "small");
  mg_routes_free(&r);
  mg_flags_free(&flags);
  mg_targets_free(&t);
  mg_cfg_errors_free(&e);
  cJSON_Delete(root);
}

static void test_no_default_route(void **state) {
  struct mg_cfg_errors e;
  struct mg_targets t;
  struct mg_routes r;
  struct mg_flags flags;
  cJSON *root = cJSON_Parse(
      "{\"targets\":{\"a\":{\"base_url\":\"http://u\",\"model\":\"m\"}},"
      "\"aliases\":{\"x\":{\"target\":\"a\"}}}");
  (void)state;
  mg_cfg_errors_init(&e);
  mg_targets_parse(&t, cJSON_GetObjectItem(root, "targets"), "$.targets",
                   no_env, &e);
  mg_flags_parse(&flags, NULL, &t, &e);
  mg_routes_parse(&r, root, &t, &flags, &e);
  assert_int_equal(e.n, 0);
  assert_null(mg_route_lookup(&r, mg_str_c("y")));
  assert_non_null(mg_route_lookup(&r, mg_str_c("x")));
  mg_routes_free(&r);
  mg_flags_free(&flags);
  mg_targets_free(&t);
  mg_cfg_errors_free(&e);
  cJSON_Delete(root);
}

static void test_target_errors(void **state) {
  struct mg_cfg_errors e;
  struct mg_targets t;
  cJSON *sec = cJSON_Parse(
      "{\"a\":{\"base_url\":\"http:///nohost\",\"model\":\"\"},"
      "\"b\":{\"base_url\":\"http://h x\",\"model\":\"m\",\"api_key_env\":"
      "\"NOPE\"},\"c\":[]}");
  (void)state;
  mg_cfg_errors_init(&e);
  mg_targets_parse(&t, sec, "$.targets", no_env, &e);
  assert_true(e.n >= 5);
  mg_targets_free(&t);
  mg_cfg_errors_free(&e);
  cJSON_Delete(sec);
  sec = cJSON_Parse("{}");
  mg_cfg_errors_init(&e);
  mg_targets_parse(&t, sec, "$.targets", no_env, &e);
  assert_int_equal(e.n, 1);
  assert_non_null(strstr(e.msgs[0], "at least one target"));
  mg_targets_free(&t);
  mg_cfg_errors_free(&e);
  cJSON_Delete(sec);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_endpoints),
      cmocka_unit_test(test_targets_and_aliases),
      cmocka_unit_test(test_no_default_route),
      cmocka_unit_test(test_target_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
