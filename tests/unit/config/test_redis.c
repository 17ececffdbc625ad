/* test_redis.c - the `redis` config section (config/redis.c): URLs (TCP,
 * IPv6, unix, db), defaults, every error with its JSON path, no password
 * in a URL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"

#define TARGETS                                                              \
  "\"targets\":{\"t1\":{\"base_url\":\"http://127.0.0.1:9/v1/\","          \
  "\"model\":\"up-1\"}},\"aliases\":{\"gpt\":{\"target\":\"t1\"}}"

static struct mg_config *load_redis(const char *redis,
                                    struct mg_cfg_errors *e) {
  char json[2048];
  snprintf(json, sizeof(json), "{%s%s%s}", TARGETS, redis ? ",\"redis\":" : "",
           redis ? redis : "");
  mg_cfg_errors_init(e);
  return mg_config_load_string(json, strlen(json), "test.json", e);
}

static bool has_error(const struct mg_cfg_errors *e, const char *text) {
  size_t i;
  for (i = 0; i < e->n; i++)
    if (strstr(e->msgs[i], text))
      return true;
  return false;
}

static void test_absent(void **state) {
  struct mg_cfg_errors e;
  struct mg_config *c = load_redis(NULL, &e);
  (void)state;
  assert_non_null(c);
  assert_false(c->redis.enabled);
  mg_config_unref(c);
  mg_cfg_errors_free(&e);
}

static void test_defaults(void **state) {
  struct mg_cfg_errors e;
  struct mg_config *c = load_redis("{\"url\":\"redis://cache.internal\"}", &e);
  (void)state;
  assert_non_null(c);
  assert_true(c->redis.enabled);
  assert_string_equal(c->redis.host, "cache.internal");
  assert_int_equal(c->redis.port, 6379);
  assert_int_equal(c->redis.db, 0);
  assert_null(c->redis.unix_path);
  assert_string_equal(c->redis.prefix, "modelgate:");
  assert_int_equal(c->redis.timeout_ms, 500);
  assert_int_equal(c->redis.resync_ms, 5000);
  assert_int_equal(c->redis.lease_ms, 3000);
  assert_null(c->redis.instance);
  assert_null(c->redis.password_env);
  mg_config_unref(c);
  mg_cfg_errors_free(&e);
}

static void test_urls(void **state) {
  struct mg_redis_cfg r;
  const char *why = NULL;
  (void)state;
  memset(&r, 0, sizeof(r));
  assert_int_equal(mg_redis_url_parse(&r, "redis://10.0.0.5:6380/3", &why), 0);
  assert_string_equal(r.host, "10.0.0.5");
  assert_int_equal(r.port, 6380);
  assert_int_equal(r.db, 3);
  assert_int_equal(mg_redis_url_parse(&r, "redis://[::1]:7000", &why), 0);
  assert_string_equal(r.host, "::1");
  assert_int_equal(r.port, 7000);
  assert_int_equal(r.db, 0);
  assert_int_equal(mg_redis_url_parse(&r, "unix:/run/redis.sock?db=2", &why),
                   0);
  assert_string_equal(r.unix_path, "/run/redis.sock");
  assert_int_equal(r.db, 2);
  assert_int_equal(mg_redis_url_parse(&r, "unix:///run/r.sock", &why), 0);
  assert_string_equal(r.unix_path, "/run/r.sock");
  assert_int_equal(mg_redis_url_parse(&r, "http://x", &why), -1);
  assert_int_equal(mg_redis_url_parse(&r, "redis://:p4ss@h:1", &why), -1);
  assert_non_null(strstr(why, "password_env"));
  assert_int_equal(mg_redis_url_parse(&r, "redis://h:0", &why), -1);
  assert_int_equal(mg_redis_url_parse(&r, "redis://h:99999", &why), -1);
  assert_int_equal(mg_redis_url_parse(&r, "redis://h/x", &why), -1);
  assert_int_equal(mg_redis_url_parse(&r, "redis://", &why), -1);
  assert_int_equal(mg_redis_url_parse(&r, "unix:relative.sock", &why), -1);
  free(r.unix_path);
}

static void test_errors(void **state) {
  struct mg_cfg_errors e;
  struct mg_config *c;
  (void)state;
  c = load_redis("{\"url\":\"redis://:secret@h\",\"timeout_ms\":1,"
                 "\"password_env\":\"A\",\"password_file\":\"/f\","
                 "\"nope\":1}",
                 &e);
  assert_null(c);
  assert_true(has_error(&e, "$.redis.url"));
  assert_true(has_error(&e, "$.redis.timeout_ms"));
  assert_true(has_error(&e, "not both"));
  assert_true(has_error(&e, "nope"));
  mg_cfg_errors_free(&e);
  c = load_redis("{\"prefix\":\"x:\"}", &e);
  assert_null(c);
  assert_true(has_error(&e, "url"));
  mg_cfg_errors_free(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_absent),
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_urls),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
