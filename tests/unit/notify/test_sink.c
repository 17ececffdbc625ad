/* test_sink.c - notify/sink.c: the config's defaults and errors, the
 * payload of a rollback, the dedup key, the signature. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "notify/sink.h"

static bool has(const struct mg_cfg_errors *e, const char *a, const char *b) {
  size_t i;
  for (i = 0; i < e->n; i++)
    if (strstr(e->msgs[i], a) && strstr(e->msgs[i], b))
      return true;
  return false;
}

static void test_defaults_and_errors(void **state) {
  struct mg_notify_cfg c;
  struct mg_cfg_errors e;
  cJSON *j = cJSON_Parse(
      "{\"sinks\":{\"ok\":{\"url\":\"http://h/x\"},"
      "\"bad\":{\"url\":\"ftp://h\",\"format\":\"xml\",\"events\":[\"nope\"],"
      "\"min_severity\":\"loud\",\"retries\":-1,\"secret_env\":"
      "\"MG_TEST_UNSET_SECRET_9\"}}}");
  (void)state;
  mg_cfg_errors_init(&e);
  mg_notify_cfg_parse(&c, j, &e);
  assert_int_equal(c.queue_size, 1000);
  assert_int_equal(c.nsinks, 2);
  assert_string_equal(c.sinks[0].name, "ok");
  assert_int_equal(c.sinks[0].format, MG_NOTIFY_JSON);
  assert_int_equal(c.sinks[0].timeout_ms, 5000);
  assert_int_equal(c.sinks[0].retries, 5);
  assert_int_equal(c.sinks[0].backoff_ms, 500);
  assert_int_equal(c.sinks[0].breaker_failures, 5);
  assert_null(c.sinks[0].events);
  assert_true(has(&e, "$.notify.sinks.bad.url", "http"));
  assert_true(has(&e, "$.notify.sinks.bad.format", "slack"));
  assert_true(has(&e, "$.notify.sinks.bad.events[0]", "nope"));
  assert_true(has(&e, "$.notify.sinks.bad.min_severity", "critical"));
  assert_true(has(&e, "$.notify.sinks.bad.retries", ""));
  assert_true(has(&e, "$.notify.sinks.bad.secret_env", "not set"));
  mg_notify_cfg_free(&c);
  mg_cfg_errors_free(&e);
  cJSON_Delete(j);
}

static void test_payload_key_signature(void **state) {
  const char *names[] = {"ctl", "trt"};
  uint32_t before[] = {9500, 500}, after[] = {10000, 0};
  struct mg_event ev;
  struct mg_buf b;
  char k1[17], k2[17], k3[17], sig[72];
  (void)state;
  memset(&ev, 0, sizeof(ev));
  ev.type = "rollback";
  ev.severity = MG_SEV_CRITICAL;
  ev.flag = "chat";
  ev.variant = "trt";
  ev.state = "rolled_back";
  ev.step = 1;
  ev.weight_bp = 0;
  ev.variants = names;
  ev.nvariants = 2;
  ev.weights_before = before;
  ev.weights_after = after;
  ev.guard = "max_error_rate";
  ev.observed = 0.081;
  ev.threshold = 0.05;
  ev.window_ms = 300000;
  ev.instance = "gw-1:8080";
  mg_notify_key(&ev, 1000, k1);
  mg_notify_key(&ev, 1000, k2);
  mg_notify_key(&ev, 1001, k3);
  assert_string_equal(k1, k2);
  assert_string_not_equal(k1, k3);
  mg_buf_init(&b, 1 << 20);
  assert_int_equal(mg_notify_payload(&ev, MG_NOTIFY_JSON, 1000, k1, "brief",
                                     &b),
                   0);
  assert_non_null(strstr(b.data, "\"weights_before\":{\"ctl\":95,\"trt\":5}"));
  assert_non_null(strstr(b.data, "\"weights_after\":{\"ctl\":100,\"trt\":0}"));
  assert_non_null(strstr(b.data, "\"evidence\":{\"guard\":\"max_error_rate\","
                                 "\"observed\":0.081,\"threshold\":0.05,"
                                 "\"window_ms\":300000}"));
  assert_non_null(strstr(b.data, "\"severity\":\"critical\""));
  assert_non_null(strstr(b.data, "\"by\":null"));
  assert_non_null(strstr(b.data, "\"brief\":\"brief\""));
  {
    cJSON *j = cJSON_Parse(b.data);
    assert_non_null(j);
    cJSON_Delete(j);
  }
  mg_buf_reset(&b);
  assert_int_equal(mg_notify_payload(&ev, MG_NOTIFY_SLACK, 1000, k1, NULL,
                                     &b),
                   0);
  assert_non_null(strstr(b.data, "{\"text\":\"[critical] modelgate rollback "
                                 "flag chat variant trt"));
  mg_buf_free(&b);
  /* RFC 4231 test case 2. */
  mg_notify_sign("Jefe", "what do ya want for nothing?", 28, sig);
  assert_string_equal(sig, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d"
                           "2739839dec58b964ec3843");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults_and_errors),
      cmocka_unit_test(test_payload_key_signature),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
