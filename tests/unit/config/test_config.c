/* test_config.c - the loader: defaults, every error with its JSON path,
 * secrets that never show up in messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"

static struct mg_config *load(const char *json, struct mg_cfg_errors *e) {
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

static void dump(const struct mg_cfg_errors *e) {
  size_t i;
  for (i = 0; i < e->n; i++)
    print_message("  error: %s\n", e->msgs[i]);
}

#define MINIMAL                                                              \
  "{\"targets\":{\"t1\":{\"base_url\":\"http://127.0.0.1:9/v1/\","         \
  "\"model\":\"up-1\"}},\"aliases\":{\"gpt\":{\"target\":\"t1\"}}}"

static void test_minimal_defaults(void **state) {
  struct mg_cfg_errors e;
  struct mg_config *c = load(MINIMAL, &e);
  const struct mg_target *t;
  (void)state;
  dump(&e);
  assert_non_null(c);
  assert_int_equal(e.n, 0);
  assert_string_equal(c->server.listen_host, "127.0.0.1");
  assert_int_equal(c->server.listen_port, 8080);
  assert_int_equal(c->limits.header_bytes, 16384);
  assert_int_equal(c->limits.body_bytes, 4u << 20);
  assert_int_equal(c->server.shutdown_grace_ms, 10000);
  assert_int_equal(strlen(c->hash), 16);
  t = mg_targets_find(&c->targets, "t1");
  assert_non_null(t);
  /* trailing slashes are dropped before the endpoint is appended */
  assert_string_equal(t->base_url, "http://127.0.0.1:9/v1");
  assert_string_equal(t->urls[MG_EP_CHAT],
                      "http://127.0.0.1:9/v1/chat/completions");
  assert_string_equal(t->urls[MG_EP_EMBEDDINGS],
                      "http://127.0.0.1:9/v1/embeddings");
  assert_null(t->auth_header);
  assert_int_equal(t->timeouts.connect_ms, 5000);
  assert_non_null(mg_route_lookup(&c->routes, mg_str_c("gpt")));
  assert_null(mg_route_lookup(&c->routes, mg_str_c("other")));
  mg_config_unref(c);
  mg_cfg_errors_free(&e);
}

static void test_same_bytes_same_hash(void **state) {
  struct mg_cfg_errors e1, e2;
  struct mg_config *a = load(MINIMAL, &e1), *b = load(MINIMAL, &e2);
  (void)state;
  assert_string_equal(a->hash, b->hash);
  mg_config_unref(a);
  mg_config_unref(b);
  mg_cfg_errors_free(&e1);
  mg_cfg_errors_free(&e2);
}

static void test_every_error_reported(void **state) {
  struct mg_cfg_errors e;
  struct mg_config *c = load(
      "{\"server\":{\"listen\":\"nope\",\"header_timeout_ms\":0,\"bogus\":1},"
      "\"limits\":{\"write_low_bytes\":9000000,\"write_high_bytes\":4096},"
      "\"targets\":{\"t1\":{\"base_url\":\"ftp://x\",\"timeouts\":"
      "{\"connect_ms\":-1,\"extra\":1}},"
      "\"t2\":{\"base_url\":\"http://h\",\"model\":\"m\","
      "\"api_key_env\":\"MG_TEST_UNSET_VARIABLE\"}},"
      "\"aliases\":{\"a\":{\"target\":\"nope\"},\"b\":{}},"
      "\"default_route\":\"zzz\",\"surprise\":true}",
      &e);
  (void)state;
  dump(&e);
  assert_null(c);
  assert_true(has_error(&e, "$.server.listen: must be \"host:port\""));
  assert_true(has_error(&e, "$.server.header_timeout_ms: must be between"));
  assert_true(has_error(&e, "$.server.bogus: unknown key"));
  assert_true(has_error(&e, "$.limits.write_low_bytes: must be below"));
  assert_true(has_error(&e, "$.targets.t1.base_url: must be an http://"));
  assert_true(has_error(&e, "$.targets.t1.model: is required"));
  assert_true(has_error(&e, "$.targets.t1.timeouts.connect_ms: must be"));
  assert_true(has_error(&e, "$.targets.t1.timeouts.extra: unknown key"));
  assert_true(has_error(&e, "$.targets.t2.api_key_env: environment variable "
                            "MG_TEST_UNSET_VARIABLE is not set"));
  assert_true(has_error(&e, "$.aliases.a.target: unknown target \"nope\""));
  assert_true(has_error(&e, "$.aliases.b: needs exactly one of \"target\" or \"flag\""));
  assert_true(has_error(&e, "$.default_route: unknown alias \"zzz\""));
  assert_true(has_error(&e, "$.surprise: unknown key"));
  mg_cfg_errors_free(&e);
}

static void test_secret_from_env_never_in_errors(void **state) {
  struct mg_cfg_errors e;
  struct mg_config *c;
  (void)state;
  setenv("MG_TEST_KEY", "sk-very-secret-value", 1);
  c = load("{\"targets\":{\"t\":{\"base_url\":\"http://h\",\"model\":\"m\","
           "\"api_key_env\":\"MG_TEST_KEY\"}},"
           "\"aliases\":{\"a\":{\"target\":\"t\"}}}",
           &e);
  assert_non_null(c);
  assert_string_equal(c->targets.v[0].auth_header,
                      "Authorization: Bearer sk-very-secret-value");
  mg_config_unref(c);
  mg_cfg_errors_free(&e);
  /* The same config with an error elsewhere: no message carries the key. */
  c = load("{\"targets\":{\"t\":{\"base_url\":\"http://h\",\"model\":\"m\","
           "\"api_key_env\":\"MG_TEST_KEY\",\"x\":1}},"
           "\"aliases\":{\"a\":{\"target\":\"t\"}}}",
           &e);
  assert_null(c);
  {
    size_t i;
    for (i = 0; i < e.n; i++)
      assert_null(strstr(e.msgs[i], "sk-very-secret"));
  }
  mg_cfg_errors_free(&e);
  /* A key with a line break would inject a header: refused. */
  setenv("MG_TEST_KEY", "abc\r\nX-Evil: 1", 1);
  c = load("{\"targets\":{\"t\":{\"base_url\":\"http://h\",\"model\":\"m\","
           "\"api_key_env\":\"MG_TEST_KEY\"}},"
           "\"aliases\":{\"a\":{\"target\":\"t\"}}}",
           &e);
  assert_null(c);
  assert_true(has_error(&e, "holds a line break"));
  mg_cfg_errors_free(&e);
  unsetenv("MG_TEST_KEY");
}

static void test_invalid_json_position(void **state) {
  struct mg_cfg_errors e;
  struct mg_config *c = load("{\n  \"targets\": {,\n}", &e);
  (void)state;
  assert_null(c);
  assert_int_equal(e.n, 1);
  assert_true(has_error(&e, "$: invalid JSON at line 2"));
  mg_cfg_errors_free(&e);
  c = load(MINIMAL " trailing", &e);
  assert_null(c);
  assert_true(has_error(&e, "invalid JSON"));
  mg_cfg_errors_free(&e);
  c = load("[]", &e);
  assert_null(c);
  assert_true(has_error(&e, "$: must be an object, not an array"));
  mg_cfg_errors_free(&e);
}

static void test_default_route(void **state) {
  struct mg_cfg_errors e;
  struct mg_config *c = load(
      "{\"targets\":{\"t\":{\"base_url\":\"https://h\",\"model\":\"m\"}},"
      "\"aliases\":{\"a\":{\"target\":\"t\"}},\"default_route\":\"a\"}",
      &e);
  const struct mg_alias *a;
  (void)state;
  assert_non_null(c);
  a = mg_route_lookup(&c->routes, mg_str_c("anything-else"));
  assert_non_null(a);
  assert_string_equal(a->name, "a");
  mg_config_unref(c);
  mg_cfg_errors_free(&e);
}

/* The feedback section: its defaults, its metrics (ramp guards may watch
 * them; a guard on an undeclared one is an error), and each flag's decide
 * rule checked against them (issue 15.1). */
static void test_feedback_section(void **state) {
  struct mg_cfg_errors e;
  struct mg_config *c = load(MINIMAL, &e);
  (void)state;
  assert_non_null(c);
  assert_int_equal(c->feedback.nmetrics, 0);
  assert_int_equal(c->feedback.max_batch, 100);
  assert_int_equal(c->feedback.max_bytes, 65536);
  assert_true(c->feedback.rate_per_second == 50);
  assert_true(c->feedback.rate_burst == 200);
  mg_config_unref(c);
  mg_cfg_errors_free(&e);

#define FB_FLAGS(guard, decide)                                              \
  "{\"targets\":{\"a\":{\"base_url\":\"http://127.0.0.1:9/v1\","           \
  "\"model\":\"m\"},\"b\":{\"base_url\":\"http://127.0.0.1:9/v1\","         \
  "\"model\":\"m2\"}},"                                                      \
  "\"feedback\":{\"metrics\":{\"complaint\":{\"type\":\"boolean\","          \
  "\"higher_is_better\":false},\"accuracy\":{\"type\":\"float\"}},"          \
  "\"max_batch\":10,\"rate_per_client\":{\"per_second\":2,\"burst\":20}},"   \
  "\"flags\":{\"f\":{\"off_variant\":\"a\",\"variants\":{\"a\":{\"target\":" \
  "\"a\"},\"b\":{\"target\":\"b\"}},\"ramp\":{\"variant\":\"b\","            \
  "\"steps\":[{\"weight\":10,\"hold_ms\":1000},{\"weight\":100}]},"          \
  "\"guards\":{\"feedback\":{\"" guard "\":{\"max_ratio\":3}}},"             \
  "\"decide\":{\"metric\":\"" decide "\",\"min_lift\":0.02}}},"              \
  "\"aliases\":{\"gpt\":{\"flag\":\"f\"}}}"

  c = load(FB_FLAGS("complaint", "accuracy"), &e);
  dump(&e);
  assert_non_null(c);
  assert_int_equal(c->feedback.nmetrics, 2);
  assert_string_equal(c->feedback.metrics[0].name, "complaint");
  assert_false(c->feedback.metrics[0].higher_is_better);
  assert_int_equal(c->feedback.max_batch, 10);
  assert_true(c->feedback.rate_per_second == 2);
  assert_true(c->ramps.v[0].enabled);
  mg_config_unref(c);
  mg_cfg_errors_free(&e);

  c = load(FB_FLAGS("thumbs", "nope"), &e);
  dump(&e);
  assert_null(c);
  assert_true(has_error(&e, "$.flags.f.guards.feedback.thumbs"));
  assert_true(has_error(&e, "$.flags.f.decide.metric: names no metric"));
  mg_cfg_errors_free(&e);

  c = load("{\"targets\":{\"t1\":{\"base_url\":\"http://127.0.0.1:9/v1/\","
           "\"model\":\"up-1\"}},\"aliases\":{\"gpt\":{\"target\":\"t1\"}},"
           "\"feedback\":{\"metrics\":{\"x\":{\"type\":\"int\"}},"
           "\"max_batch\":0}}",
           &e);
  assert_null(c);
  assert_true(has_error(&e, "$.feedback.metrics.x.type"));
  assert_true(has_error(&e, "$.feedback.max_batch"));
  mg_cfg_errors_free(&e);
}

static void test_refcount(void **state) {
  struct mg_cfg_errors e;
  struct mg_config *c = load(MINIMAL, &e);
  (void)state;
  assert_ptr_equal(mg_config_ref(c), c);
  assert_int_equal(c->refs, 2);
  mg_config_unref(c);
  assert_int_equal(c->refs, 1);
  mg_config_unref(c); /* freed: ASan in CI reports a double free or leak */
  mg_cfg_errors_free(&e);
}

static void test_missing_file(void **state) {
  struct mg_cfg_errors e;
  (void)state;
  mg_cfg_errors_init(&e);
  assert_null(mg_config_load_file("/nonexistent/modelgate.json", &e));
  assert_true(has_error(&e, "cannot open /nonexistent/modelgate.json"));
  mg_cfg_errors_free(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_minimal_defaults),
      cmocka_unit_test(test_same_bytes_same_hash),
      cmocka_unit_test(test_every_error_reported),
      cmocka_unit_test(test_secret_from_env_never_in_errors),
      cmocka_unit_test(test_invalid_json_position),
      cmocka_unit_test(test_default_route),
      cmocka_unit_test(test_feedback_section),
      cmocka_unit_test(test_refcount),
      cmocka_unit_test(test_missing_file),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
