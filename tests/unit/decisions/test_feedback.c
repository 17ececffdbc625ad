/* test_feedback.c - the feedback config (every key, defaults, errors that
 * name their path), the validation of items with the 400 a client gets,
 * and the feedback line, read back as JSON. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "decisions/feedback.h"

static bool has_error(const struct mg_cfg_errors *e, const char *needle) {
  size_t i;
  for (i = 0; i < e->n; i++)
    if (strstr(e->msgs[i], needle))
      return true;
  return false;
}

static const char CONFIG[] =
    "{\"metrics\":{\"accuracy\":{\"type\":\"boolean\"},"
    "\"rating\":{\"type\":\"float\",\"min\":1,\"max\":5},"
    "\"complaint\":{\"type\":\"boolean\",\"higher_is_better\":false}},"
    "\"max_batch\":10,\"rate_per_client\":{\"per_second\":5,\"burst\":20}}";

static void load(struct mg_feedback_config *c) {
  struct mg_cfg_errors e;
  cJSON *j = cJSON_Parse(CONFIG);
  mg_cfg_errors_init(&e);
  assert_int_equal(mg_feedback_parse(j, "$.feedback", c, &e), 0);
  assert_int_equal(e.n, 0);
  mg_cfg_errors_free(&e);
  cJSON_Delete(j);
}

static void test_config(void **state) {
  struct mg_feedback_config c;
  struct mg_cfg_errors e;
  const struct mg_feedback_metric *m;
  cJSON *j;
  (void)state;

  load(&c);
  assert_int_equal(c.nmetrics, 3);
  m = mg_feedback_metric(&c, "accuracy");
  assert_non_null(m);
  assert_int_equal(m->type, MG_FEEDBACK_BOOLEAN);
  assert_true(m->higher_is_better);
  m = mg_feedback_metric(&c, "rating");
  assert_int_equal(m->type, MG_FEEDBACK_FLOAT);
  assert_true(m->min == 1 && m->max == 5);
  assert_false(mg_feedback_metric(&c, "complaint")->higher_is_better);
  assert_null(mg_feedback_metric(&c, "nope"));
  assert_int_equal(c.max_batch, 10);
  assert_int_equal(c.max_bytes, 65536);
  assert_true(c.rate_per_second == 5 && c.rate_burst == 20);
  mg_feedback_config_free(&c);

  /* No section: the defaults. */
  mg_cfg_errors_init(&e);
  assert_int_equal(mg_feedback_parse(NULL, "$.feedback", &c, &e), 0);
  assert_int_equal(c.nmetrics, 0);
  assert_int_equal(c.max_batch, 100);
  assert_true(c.rate_per_second == 50 && c.rate_burst == 200);
  mg_feedback_config_free(&c);

  /* Every error, each with its path. */
  j = cJSON_Parse("{\"metrics\":{\"a\":{\"type\":\"int\"},\"b\":{},"
                  "\"c\":{\"type\":\"float\",\"min\":3,\"max\":1},"
                  "\"d\":{\"type\":\"boolean\",\"max\":2},"
                  "\"bad name\":{\"type\":\"float\"}},\"max_batch\":0,"
                  "\"rate_per_client\":{\"per_second\":-1},\"x\":1}");
  assert_int_equal(mg_feedback_parse(j, "$.feedback", &c, &e), -EINVAL);
  assert_true(has_error(&e, "$.feedback.metrics.a.type: must be \"boolean\" "
                            "or \"float\""));
  assert_true(has_error(&e, "$.feedback.metrics.b.type: is required"));
  assert_true(has_error(&e, "$.feedback.metrics.c.max: must be greater"));
  assert_true(has_error(&e, "$.feedback.metrics.d.min: a boolean metric"));
  assert_true(has_error(&e, "a metric name is 1 to 64"));
  assert_true(has_error(&e, "$.feedback.max_batch"));
  assert_true(has_error(&e, "$.feedback.rate_per_client.per_second"));
  assert_true(has_error(&e, "$.feedback.x: unknown key"));
  mg_feedback_config_free(&c);
  mg_cfg_errors_free(&e);
  cJSON_Delete(j);
}

/* Validate the JSON text s; the return code, with err filled. */
static int check(const struct mg_feedback_config *c, const char *s, int index,
                 struct mg_feedback_item *it, struct mg_feedback_error *err) {
  cJSON *j = cJSON_Parse(s);
  int rc;
  assert_non_null(j);
  rc = mg_feedback_validate(c, j, index, it, err);
  /* The item borrows from j: copy what the test reads. */
  if (rc == 0 && it->unit)
    it->unit = strcmp(it->unit, "u-1") == 0 ? "u-1" : "?";
  cJSON_Delete(j);
  return rc;
}

#define ID "0123456789abcdef0123456789abcdef"

static void test_validate(void **state) {
  struct mg_feedback_config c;
  struct mg_feedback_item it;
  struct mg_feedback_error err;
  struct mg_buf b;
  static const struct {
    const char *body, *param, *code, *msg;
  } bad[] = {
      {"[1]", "", "invalid_type", "must be a JSON object"},
      {"{\"metric\":\"accuracy\",\"value\":true}", "decision_id",
       "missing_required_parameter", "Missing required parameter"},
      {"{\"decision_id\":\"0123456789ABCDEF0123456789ABCDEF\","
       "\"metric\":\"accuracy\",\"value\":true}",
       "decision_id", "invalid_value", "32 lowercase hex"},
      {"{\"decision_id\":\"abc\",\"metric\":\"accuracy\",\"value\":true}",
       "decision_id", "invalid_value", "32 lowercase hex"},
      {"{\"decision_id\":\"" ID "\",\"value\":true}", "metric",
       "missing_required_parameter", "'metric'"},
      {"{\"decision_id\":\"" ID "\",\"metric\":\"speed\",\"value\":1}",
       "metric", "unknown_metric", "Unknown feedback metric 'speed'"},
      {"{\"decision_id\":\"" ID "\",\"metric\":\"accuracy\"}", "value",
       "missing_required_parameter", "'value'"},
      {"{\"decision_id\":\"" ID "\",\"metric\":\"accuracy\",\"value\":0.5}",
       "value", "invalid_value", "true, false, 0 or 1"},
      {"{\"decision_id\":\"" ID "\",\"metric\":\"accuracy\",\"value\":\"yes\"}",
       "value", "invalid_value", "is boolean"},
      {"{\"decision_id\":\"" ID "\",\"metric\":\"rating\",\"value\":7}",
       "value", "invalid_value", "out of bounds"},
      {"{\"decision_id\":\"" ID "\",\"metric\":\"rating\",\"value\":0.5}",
       "value", "invalid_value", "between 1 and 5"},
      {"{\"decision_id\":\"" ID "\",\"metric\":\"rating\",\"value\":true}",
       "value", "invalid_type", "must be a number"},
      {"{\"decision_id\":\"" ID "\",\"metric\":\"accuracy\",\"value\":true,"
       "\"unit\":5}",
       "unit", "invalid_type", "'unit'"},
      {"{\"decision_id\":\"" ID "\",\"metric\":\"accuracy\",\"value\":true,"
       "\"score\":1}",
       "score", "unknown_parameter", "Unrecognized feedback field"},
  };
  size_t i;
  (void)state;

  load(&c);
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    if (check(&c, bad[i].body, -1, &it, &err) != -EINVAL)
      fail_msg("accepted: %s", bad[i].body);
    assert_string_equal(err.param, bad[i].param);
    assert_string_equal(err.code, bad[i].code);
    if (strstr(err.message, bad[i].msg) == NULL)
      fail_msg("%s: message \"%s\" lacks \"%s\"", bad[i].body, err.message,
               bad[i].msg);
  }
  /* In a batch, the param names the item. */
  assert_int_equal(check(&c, bad[9].body, 3, &it, &err), -EINVAL);
  assert_string_equal(err.param, "[3].value");
  /* The 400 body a client gets. */
  mg_buf_init(&b, 4096);
  assert_int_equal(mg_feedback_error_json(&err, &b), 0);
  {
    cJSON *j = cJSON_Parse(b.data), *e = cJSON_GetObjectItem(j, "error");
    assert_non_null(e);
    assert_string_equal(cJSON_GetObjectItem(e, "type")->valuestring,
                        "invalid_request_error");
    assert_string_equal(cJSON_GetObjectItem(e, "param")->valuestring,
                        "[3].value");
    assert_string_equal(cJSON_GetObjectItem(e, "code")->valuestring,
                        "invalid_value");
    assert_non_null(
        strstr(cJSON_GetObjectItem(e, "message")->valuestring, "rating"));
    cJSON_Delete(j);
  }
  mg_buf_free(&b);

  /* Good ones: true, 0/1 for a boolean, a float within bounds, a unit. */
  assert_int_equal(check(&c, "{\"decision_id\":\"" ID "\",\"metric\":"
                             "\"accuracy\",\"value\":true,\"unit\":\"u-1\"}",
                         -1, &it, &err),
                   0);
  assert_string_equal(it.decision_id, ID);
  assert_true(it.value == 1);
  assert_string_equal(it.unit, "u-1");
  assert_int_equal(check(&c, "{\"decision_id\":\"" ID "\",\"metric\":"
                             "\"accuracy\",\"value\":0,\"unit\":null}",
                         -1, &it, &err),
                   0);
  assert_true(it.value == 0);
  assert_null(it.unit);
  assert_int_equal(check(&c, "{\"decision_id\":\"" ID "\",\"metric\":"
                             "\"rating\",\"value\":4.5}",
                         -1, &it, &err),
                   0);
  assert_true(it.value == 4.5);
  mg_feedback_config_free(&c);
}

static void test_format(void **state) {
  struct mg_feedback_config c;
  struct mg_feedback_item it;
  struct mg_buf b;
  cJSON *j, *f;
  (void)state;

  load(&c);
  mg_buf_init(&b, 4096);
  memset(&it, 0, sizeof(it));
  memcpy(it.decision_id, ID, 33);
  it.metric = mg_feedback_metric(&c, "accuracy");
  it.value = 1;
  it.unit = "user \"7\"\n";
  /* 2026-12-02T10:00:00.000Z is 1796205600000 ms (Python datetime). */
  assert_int_equal(mg_feedback_format(&it, 1796205600000, NULL, "i-1", &b), 0);
  assert_string_equal(b.data,
                      "{\"ts\":\"2026-12-02T10:00:00.000Z\",\"feedback\":{"
                      "\"decision_id\":\"" ID "\",\"metric\":\"accuracy\","
                      "\"value\":true,\"unit\":\"user \\\"7\\\"\\n\","
                      "\"client\":null,\"instance\":\"i-1\"}}");
  mg_buf_reset(&b);
  it.metric = mg_feedback_metric(&c, "rating");
  it.value = 0.1 + 0.2; /* needs 17 digits to read back */
  it.unit = NULL;
  assert_int_equal(mg_feedback_format(&it, 1796205600123, "app", "i-1", &b),
                   0);
  j = cJSON_Parse(b.data);
  assert_non_null(j);
  assert_string_equal(cJSON_GetObjectItem(j, "ts")->valuestring,
                      "2026-12-02T10:00:00.123Z");
  f = cJSON_GetObjectItem(j, "feedback");
  assert_true(cJSON_GetObjectItem(f, "value")->valuedouble == 0.1 + 0.2);
  assert_true(cJSON_IsNull(cJSON_GetObjectItem(f, "unit")));
  assert_string_equal(cJSON_GetObjectItem(f, "client")->valuestring, "app");
  cJSON_Delete(j);
  /* A ceiling: the line fails whole, nothing half-written. */
  {
    struct mg_buf small;
    mg_buf_init(&small, 40);
    assert_int_equal(mg_feedback_format(&it, 0, NULL, "i", &small), -E2BIG);
    assert_int_equal(small.len, 0);
    mg_buf_free(&small);
  }
  mg_buf_free(&b);
  mg_feedback_config_free(&c);
  assert_true(mg_feedback_is_decision_id(ID, 32));
  assert_false(mg_feedback_is_decision_id(ID, 31));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config),
      cmocka_unit_test(test_validate),
      cmocka_unit_test(test_format),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
