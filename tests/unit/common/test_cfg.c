/* test_cfg.c - typed config getters and their JSON paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/cfg.h"

static bool has_error(const struct mg_cfg_errors *e, const char *text) {
  size_t i;
  for (i = 0; i < e->n; i++)
    if (strstr(e->msgs[i], text))
      return true;
  return false;
}

static void test_paths(void **state) {
  char p[MG_CFG_PATH_MAX];
  (void)state;
  mg_cfg_join(p, "$", "targets");
  assert_string_equal(p, "$.targets");
  mg_cfg_join(p, "$.targets", "my model");
  assert_string_equal(p, "$.targets[\"my model\"]");
  mg_cfg_join(p, "$.targets", "gpt-4o_mini");
  assert_string_equal(p, "$.targets.gpt-4o_mini");
  mg_cfg_join_idx(p, "$.flags.f.rules", 3);
  assert_string_equal(p, "$.flags.f.rules[3]");
}

static void test_getters(void **state) {
  struct mg_cfg_errors e;
  cJSON *o = cJSON_Parse("{\"a\":5,\"b\":2.5,\"c\":\"x\",\"d\":true,"
                         "\"e\":\"\",\"f\":99,\"g\":\"s\"}");
  char *s;
  (void)state;
  mg_cfg_errors_init(&e);
  assert_int_equal(mg_cfg_int(o, "a", "$", 1, 0, 10, &e), 5);
  assert_int_equal(mg_cfg_int(o, "missing", "$", 7, 0, 10, &e), 7);
  assert_int_equal(e.n, 0);
  /* wrong type, fraction, range: each an error, each yields the default */
  assert_int_equal(mg_cfg_int(o, "c", "$", 1, 0, 10, &e), 1);
  assert_int_equal(mg_cfg_int(o, "b", "$", 1, 0, 10, &e), 1);
  assert_int_equal(mg_cfg_int(o, "f", "$", 1, 0, 10, &e), 1);
  assert_int_equal(e.n, 3);
  assert_true(has_error(&e, "$.c: must be an integer, not a string"));
  assert_true(has_error(&e, "$.b: must be an integer, not 2.5"));
  assert_true(has_error(&e, "$.f: must be between 0 and 10, not 99"));
  assert_true(mg_cfg_num(o, "b", "$", 0, 0, 3, &e) == 2.5);
  assert_true(mg_cfg_bool(o, "d", "$", false, &e));
  assert_false(mg_cfg_bool(o, "a", "$", false, &e));
  assert_true(has_error(&e, "$.a: must be true or false, not a number"));
  s = mg_cfg_str(o, "c", "$", NULL, true, &e);
  assert_string_equal(s, "x");
  free(s);
  s = mg_cfg_str(o, "e", "$", "dflt", true, &e);
  assert_string_equal(s, "dflt");
  free(s);
  assert_true(has_error(&e, "$.e: must not be empty"));
  assert_false(mg_cfg_require(o, "zzz", "$.sec", &e));
  assert_true(has_error(&e, "$.sec.zzz: is required"));
  mg_cfg_errors_free(&e);
  cJSON_Delete(o);
}

static void test_unknown_and_duplicate_keys(void **state) {
  static const char *const allowed[] = {"a", "b", NULL};
  struct mg_cfg_errors e;
  cJSON *o = cJSON_Parse("{\"a\":1,\"zz\":2,\"a\":3}");
  cJSON *arr = cJSON_Parse("[1]");
  (void)state;
  mg_cfg_errors_init(&e);
  assert_true(mg_cfg_object(o, "$.x", allowed, &e));
  assert_true(has_error(&e, "$.x.zz: unknown key"));
  assert_true(has_error(&e, "$.x.a: duplicate key"));
  assert_false(mg_cfg_object(arr, "$.y", allowed, &e));
  assert_true(has_error(&e, "$.y: must be an object, not an array"));
  mg_cfg_errors_free(&e);
  cJSON_Delete(o);
  cJSON_Delete(arr);
}

static void test_hostport(void **state) {
  char host[64];
  int port;
  (void)state;
  assert_int_equal(mg_cfg_parse_hostport("127.0.0.1:8080", host, 64, &port), 0);
  assert_string_equal(host, "127.0.0.1");
  assert_int_equal(port, 8080);
  assert_int_equal(mg_cfg_parse_hostport("[::1]:0", host, 64, &port), 0);
  assert_string_equal(host, "::1");
  assert_int_equal(port, 0);
  assert_int_not_equal(mg_cfg_parse_hostport("localhost", host, 64, &port), 0);
  assert_int_not_equal(mg_cfg_parse_hostport("h:70000", host, 64, &port), 0);
  assert_int_not_equal(mg_cfg_parse_hostport(":80", host, 64, &port), 0);
  assert_int_not_equal(mg_cfg_parse_hostport("h:8x", host, 64, &port), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_paths),
      cmocka_unit_test(test_getters),
      cmocka_unit_test(test_unknown_and_duplicate_keys),
      cmocka_unit_test(test_hostport),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
