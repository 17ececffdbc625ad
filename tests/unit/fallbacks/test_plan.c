/* test_plan.c - the fallback chain as a state machine, with a fake clock:
 * retries with backoff and Retry-After inside one deadline, triggers,
 * tiers in order, breakers skipping a target at no cost. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "fallbacks/plan.h"

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

struct fx {
  struct mg_config *cfg;
  struct mg_breaker br[8];
  struct mg_breaker *brp[8];
  struct mg_plan plan;
  struct mg_step step;
};

static const char *CFG =
    "{\"targets\":{"
    "\"primary\":{\"base_url\":\"http://h/v1\",\"model\":\"p\","
    "\"deadline_ms\":10000,"
    "\"retries\":{\"count\":2,\"backoff_ms\":100,\"max_backoff_ms\":150,"
    "\"jitter\":0.5,\"retry_after_max_ms\":3000,\"on\":[\"5xx\",\"429\"]},"
    "\"breaker\":{\"failures\":3,\"cooldown_ms\":1000},"
    "\"fallbacks\":[\"secondary\",\"cache\",\"traditional:faq\"],"
    "\"fallback_on\":[\"timeout\",\"5xx\",\"429\",\"connect_error\","
    "\"breaker_open\",\"low_confidence\"]},"
    "\"secondary\":{\"base_url\":\"http://h/v1\",\"model\":\"s\"},"
    "\"strict\":{\"base_url\":\"http://h/v1\",\"model\":\"x\","
    "\"fallbacks\":[\"secondary\"],\"fallback_on\":[\"timeout\"]}},"
    "\"traditional\":{\"faq\":{\"static\":\"Please see our FAQ.\"}},"
    "\"aliases\":{\"a\":{\"target\":\"primary\"}}}";

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof(*f));
  int i;
  f->cfg = load(CFG);
  for (i = 0; i < 8; i++) {
    mg_breaker_init(&f->br[i]);
    f->brp[i] = &f->br[i];
  }
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fx *f = *state;
  mg_config_unref(f->cfg);
  free(f);
  return 0;
}

static const struct mg_target *T(struct fx *f, const char *name) {
  return mg_targets_find(&f->cfg->targets, name);
}

static void start(struct fx *f, const char *first, int64_t now) {
  mg_plan_start(&f->plan, &f->cfg->fallbacks, T(f, first), f->brp, now,
                &f->step);
}

static void result(struct fx *f, uint32_t trigger, uint32_t retry_after,
                   int64_t now) {
  struct mg_outcome o = {trigger, retry_after};
  mg_plan_result(&f->plan, &o, now, 0x123456789abcdefULL, &f->step);
}

static void test_success_first_try(void **state) {
  struct fx *f = *state;
  start(f, "primary", 0);
  assert_int_equal(f->step.kind, MG_STEP_CALL);
  assert_ptr_equal(f->step.target, T(f, "primary"));
  assert_int_equal(f->step.budget_ms, 10000);
  result(f, 0, 0, 50);
  assert_int_equal(f->step.kind, MG_STEP_DONE);
  assert_false(mg_plan_fell_back(&f->plan));
  assert_int_equal(f->plan.why, 0);
}

static void test_retries_then_fallback(void **state) {
  struct fx *f = *state;
  start(f, "primary", 0);
  result(f, MG_TRIG_5XX, 0, 10);
  /* first wait: 100 ms with half of it random: within [50, 100] */
  assert_int_equal(f->step.kind, MG_STEP_WAIT);
  assert_in_range(f->step.wait_ms, 50, 100);
  mg_plan_resume(&f->plan, 110, &f->step);
  assert_int_equal(f->step.kind, MG_STEP_CALL);
  assert_ptr_equal(f->step.target, T(f, "primary"));
  assert_int_equal(f->step.budget_ms, 10000 - 110);
  result(f, MG_TRIG_5XX, 0, 120);
  /* doubled, capped at 150: within [75, 150] */
  assert_int_equal(f->step.kind, MG_STEP_WAIT);
  assert_in_range(f->step.wait_ms, 75, 150);
  mg_plan_resume(&f->plan, 300, &f->step);
  result(f, MG_TRIG_5XX, 0, 310);
  /* retries spent: the next tier */
  assert_int_equal(f->step.kind, MG_STEP_CALL);
  assert_ptr_equal(f->step.target, T(f, "secondary"));
  assert_true(mg_plan_fell_back(&f->plan));
  assert_int_equal(f->plan.why, MG_TRIG_5XX);
  assert_int_equal(f->plan.calls, 4);
  result(f, 0, 0, 400);
  assert_int_equal(f->step.kind, MG_STEP_DONE);
}

static void test_retry_after_honoured_and_capped(void **state) {
  struct fx *f = *state;
  start(f, "primary", 0);
  result(f, MG_TRIG_429, 1200, 5);
  assert_int_equal(f->step.kind, MG_STEP_WAIT);
  assert_int_equal(f->step.wait_ms, 1200);
  mg_plan_resume(&f->plan, 1205, &f->step);
  result(f, MG_TRIG_429, 60000, 1300);
  assert_int_equal(f->step.kind, MG_STEP_WAIT);
  assert_int_equal(f->step.wait_ms, 3000); /* retry_after_max_ms */
}

static void test_no_retry_past_the_deadline(void **state) {
  struct fx *f = *state;
  start(f, "primary", 0);
  /* 9950 ms in: any wait would end after the 10 s deadline, so no retry;
   * the secondary gets what is left */
  result(f, MG_TRIG_429, 100, 9950);
  assert_int_equal(f->step.kind, MG_STEP_CALL);
  assert_ptr_equal(f->step.target, T(f, "secondary"));
  assert_int_equal(f->step.budget_ms, 50);
  assert_int_equal(f->plan.why, MG_TRIG_429);
  result(f, MG_TRIG_TIMEOUT, 0, 10000);
  /* past the deadline: only tiers that answer at once remain */
  assert_int_equal(f->step.kind, MG_STEP_CACHE);
  mg_plan_skip(&f->plan, 0, 10001, &f->step);
  assert_int_equal(f->step.kind, MG_STEP_TRADITIONAL);
  assert_string_equal(f->step.trad->static_text, "Please see our FAQ.");
  mg_plan_skip(&f->plan, MG_TRIG_INVALID, 10002, &f->step);
  assert_int_equal(f->step.kind, MG_STEP_FAIL);
}

static void test_trigger_not_configured_fails(void **state) {
  struct fx *f = *state;
  start(f, "strict", 0);
  result(f, MG_TRIG_5XX, 0, 10); /* strict falls back on timeouts only */
  assert_int_equal(f->step.kind, MG_STEP_FAIL);
  assert_int_equal(f->plan.last, MG_TRIG_5XX);
  start(f, "strict", 1000);
  result(f, MG_TRIG_TIMEOUT, 0, 1010);
  assert_int_equal(f->step.kind, MG_STEP_CALL);
  assert_ptr_equal(f->step.target, T(f, "secondary"));
}

static void test_chain_in_order_and_exhausted(void **state) {
  struct fx *f = *state;
  start(f, "primary", 0);
  result(f, MG_TRIG_TIMEOUT, 0, 100); /* timeouts are not retried */
  assert_ptr_equal(f->step.target, T(f, "secondary"));
  result(f, MG_TRIG_CONNECT, 0, 150);
  assert_int_equal(f->step.kind, MG_STEP_CACHE);
  mg_plan_skip(&f->plan, 0, 151, &f->step);
  assert_int_equal(f->step.kind, MG_STEP_TRADITIONAL);
  mg_plan_skip(&f->plan, 0, 152, &f->step);
  assert_int_equal(f->step.kind, MG_STEP_FAIL);
  /* the first reason to fall back is kept; the last failure too */
  assert_int_equal(f->plan.why, MG_TRIG_TIMEOUT);
  assert_int_equal(f->plan.last, MG_TRIG_CONNECT);
}

static void test_breaker_skips_at_no_cost(void **state) {
  struct fx *f = *state;
  int i;
  /* three consecutive failures open the primary's breaker */
  for (i = 0; i < 3; i++) {
    start(f, "primary", i * 10);
    result(f, MG_TRIG_TIMEOUT, 0, i * 10 + 5);
  }
  assert_ptr_equal(f->plan.breaker_target, T(f, "primary"));
  assert_int_equal(f->plan.breaker_state, MG_BREAKER_OPEN);
  /* now the primary is skipped without a call */
  start(f, "primary", 100);
  assert_int_equal(f->step.kind, MG_STEP_CALL);
  assert_ptr_equal(f->step.target, T(f, "secondary"));
  assert_int_equal(f->plan.why, MG_TRIG_BREAKER);
  assert_int_equal(f->plan.calls, 1);
  assert_int_equal(f->step.budget_ms, 10000);
  result(f, 0, 0, 120);
  assert_int_equal(f->step.kind, MG_STEP_DONE);
  /* after the cooldown, one probe reaches the primary; success closes it */
  start(f, "primary", 1200);
  assert_ptr_equal(f->step.target, T(f, "primary"));
  result(f, 0, 0, 1210);
  assert_int_equal(f->plan.breaker_state, MG_BREAKER_CLOSED);
  start(f, "primary", 1300);
  assert_ptr_equal(f->step.target, T(f, "primary"));
}

static void test_breaker_open_without_trigger_fails(void **state) {
  struct fx *f = *state;
  int i;
  /* the strict target's breaker uses the defaults: 5 failures */
  for (i = 0; i < 5; i++) {
    start(f, "strict", i);
    result(f, MG_TRIG_5XX, 0, i);
  }
  start(f, "strict", 10);
  assert_int_equal(f->step.kind, MG_STEP_FAIL);
  assert_int_equal(f->plan.last, MG_TRIG_BREAKER);
  assert_int_equal(f->plan.calls, 0);
}

static void test_low_confidence_is_not_an_outage(void **state) {
  struct fx *f = *state;
  int i;
  for (i = 0; i < 10; i++) {
    start(f, "primary", i * 10);
    result(f, MG_TRIG_LOW_CONF, 0, i * 10 + 1);
    assert_ptr_equal(f->step.target, T(f, "secondary"));
    assert_int_equal(f->plan.why, MG_TRIG_LOW_CONF);
  }
  /* ten unsure answers did not open the primary's breaker */
  assert_int_equal(f->br[T(f, "primary")->index].state, MG_BREAKER_CLOSED);
}

static void test_config_errors(void **state) {
  struct mg_cfg_errors e;
  struct mg_config *c;
  const char *bad =
      "{\"targets\":{\"t\":{\"base_url\":\"http://h\",\"model\":\"m\","
      "\"fallbacks\":[\"t\",\"nope\",\"traditional:zz\",\"cache\",3],"
      "\"fallback_on\":[\"timeout\",\"sometimes\"],"
      "\"retries\":{\"count\":99,\"on\":[\"breaker_open\",\"x\"]},"
      "\"confidence\":{\"min\":2,\"source\":\"logprobs_mean\",\"action\":"
      "\"shrug\"},\"breaker\":{\"error_rate\":1.5,\"extra\":1}}},"
      "\"traditional\":{\"q\":{\"url\":\"ftp://x\",\"static\":\"y\"}},"
      "\"cache\":{\"enabled\":false},"
      "\"aliases\":{\"a\":{\"target\":\"t\"}}}";
  const char *want[] = {
      "$.targets.t.fallbacks[0]: a target cannot fall back to itself",
      "$.targets.t.fallbacks[1]: unknown target \"nope\"",
      "$.targets.t.fallbacks[2]: unknown traditional path \"zz\"",
      "$.targets.t.fallbacks[3]: the cache is disabled",
      "$.targets.t.fallbacks[4]: must be a target",
      "$.targets.t.fallback_on[1]: must be one of",
      "$.targets.t.retries.count: must be between 0 and 10",
      "$.targets.t.retries.on[1]: must be one of",
      "$.targets.t.confidence.min: a logprobs confidence lies between 0 and 1",
      "$.targets.t.confidence.action: must be fallback or abstain",
      "$.targets.t.breaker.error_rate: must be between 0 and 1",
      "$.targets.t.breaker.extra: unknown key",
      /* static_json may stand beside either (issue 11.4). */
      "$.traditional.q: needs one of \"url\" or \"static\", not both",
      "$.traditional.q.url: must be an http:// or https:// URL",
      NULL};
  size_t i, j;
  (void)state;
  mg_cfg_errors_init(&e);
  c = mg_config_load_string(bad, strlen(bad), "test", &e);
  assert_null(c);
  for (j = 0; j < e.n; j++)
    print_message("  %s\n", e.msgs[j]);
  for (i = 0; want[i]; i++) {
    bool found = false;
    for (j = 0; j < e.n; j++)
      found |= strstr(e.msgs[j], want[i]) != NULL;
    if (!found)
      fail_msg("missing error: %s", want[i]);
  }
  mg_cfg_errors_free(&e);
}

/* The headers an upstream asks for a wait with: retry-after-ms wins, then
 * Retry-After as seconds or as an HTTP date; garbage and past dates ask for
 * nothing; a wait is capped at a day. */
static void test_retry_after_headers(void **state) {
  /* 1994-11-06T08:49:37Z */
  const int64_t at = 784111777000;
  (void)state;
  assert_int_equal(mg_retry_after_ms(NULL, NULL, at), 0);
  assert_int_equal(mg_retry_after_ms(NULL, "2", at), 2000);
  assert_int_equal(mg_retry_after_ms(NULL, " 0.25 ", at), 250);
  assert_int_equal(mg_retry_after_ms(NULL, "0", at), 0);
  assert_int_equal(mg_retry_after_ms("1500", "2", at), 1500);
  assert_int_equal(mg_retry_after_ms("12.7", NULL, at), 12);
  /* An unreadable retry-after-ms leaves Retry-After in charge. */
  assert_int_equal(mg_retry_after_ms("soon", "3", at), 3000);
  /* Dates, in the three forms, relative to now. */
  assert_int_equal(
      mg_retry_after_ms(NULL, "Sun, 06 Nov 1994 08:49:40 GMT", at), 3000);
  assert_int_equal(
      mg_retry_after_ms(NULL, "Sunday, 06-Nov-94 08:49:42 GMT", at), 5000);
  assert_int_equal(mg_retry_after_ms(NULL, "Sun Nov  6 08:50:37 1994", at),
                   60000);
  assert_int_equal(
      mg_retry_after_ms(NULL, "Sun, 06 Nov 1994 08:49:40 GMT", at + 2500),
      500);
  /* The past, now, garbage, negatives, signs: no wait. */
  assert_int_equal(
      mg_retry_after_ms(NULL, "Sun, 06 Nov 1994 08:49:30 GMT", at), 0);
  assert_int_equal(
      mg_retry_after_ms(NULL, "Sun, 06 Nov 1994 08:49:37 GMT", at), 0);
  assert_int_equal(mg_retry_after_ms(NULL, "tomorrow", at), 0);
  assert_int_equal(mg_retry_after_ms(NULL, "-5", at), 0);
  assert_int_equal(mg_retry_after_ms(NULL, "+5", at), 0);
  assert_int_equal(mg_retry_after_ms(NULL, "5s", at), 0);
  assert_int_equal(mg_retry_after_ms(NULL, "inf", at), 0);
  assert_int_equal(mg_retry_after_ms("-1", NULL, at), 0);
  assert_int_equal(mg_retry_after_ms(NULL, "", at), 0);
  /* Capped at a day. */
  assert_int_equal(mg_retry_after_ms(NULL, "999999999", at), 86400000);
  assert_int_equal(mg_retry_after_ms("1e300", NULL, at), 86400000);
  assert_int_equal(
      mg_retry_after_ms(NULL, "Sun, 06 Nov 2094 08:49:37 GMT", at), 86400000);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_success_first_try, setup, teardown),
      cmocka_unit_test_setup_teardown(test_retries_then_fallback, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_retry_after_honoured_and_capped,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_no_retry_past_the_deadline, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_trigger_not_configured_fails, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_chain_in_order_and_exhausted, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_breaker_skips_at_no_cost, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_breaker_open_without_trigger_fails,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_low_confidence_is_not_an_outage,
                                      setup, teardown),
      cmocka_unit_test(test_config_errors),
      cmocka_unit_test(test_retry_after_headers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
