/* test_plan.c - the fallback chain as a state machine, with a fake clock:
 * retries with backoff and Retry-After inside one deadline, triggers,
 * tiers in order, breakers skipping a target at no cost. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
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
  struct mg_outcome o = {trigger, retry_after, false};
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

/* ---- the client's contract and fallback_to_control (issue 11.4) -------- */

static const char *CFG2 =
    "{\"targets\":{"
    "\"t1\":{\"base_url\":\"http://h/v1\",\"model\":\"a\",\"deadline_ms\":"
    "10000,\"fallbacks\":[\"t2\",\"cache\",\"traditional:faq\","
    "\"traditional:json\"]},"
    "\"t2\":{\"base_url\":\"http://h/v1\",\"model\":\"b\"},"
    "\"ctl\":{\"base_url\":\"http://h/v1\",\"model\":\"c\",\"fallbacks\":"
    "[\"t2\"]},"
    "\"solo\":{\"base_url\":\"http://h/v1\",\"model\":\"d\",\"deadline_ms\":"
    "1000}},"
    "\"traditional\":{\"faq\":{\"static\":\"Please see our FAQ.\"},"
    "\"json\":{\"static\":\"Sorry.\",\"static_json\":{\"answer\": null, "
    "\"fallback\": true}}},"
    "\"aliases\":{\"a\":{\"target\":\"t1\"}}}";

struct skips {
  char log[512];
};

static void on_skip(void *arg, const struct mg_plan_skipped *s) {
  struct skips *k = arg;
  size_t n = strlen(k->log);
  snprintf(k->log + n, sizeof(k->log) - n, "%s%s:%s%s", n ? " " : "",
           s->kind == MG_TIER_TARGET
               ? s->target->name
               : (s->kind == MG_TIER_CACHE ? "cache" : s->trad->name),
           s->reason, s->contract ? "" : "(free)");
}

static void begin(struct fx *f, struct skips *k, const char *first,
                  uint32_t needs, const char *control, bool no_cache,
                  bool no_trad, int64_t now) {
  struct mg_plan_opts o;
  memset(&o, 0, sizeof(o));
  memset(k, 0, sizeof(*k));
  o.needs = needs;
  o.control = control ? T(f, control) : NULL;
  o.no_cache = no_cache;
  o.no_traditional = no_trad;
  o.on_skip = on_skip;
  o.arg = k;
  mg_plan_begin(&f->plan, &f->cfg->fallbacks, T(f, first), &o, f->brp, now,
                &f->step);
}

static int setup2(void **state) {
  struct fx *f = calloc(1, sizeof(*f));
  int i;
  f->cfg = load(CFG2);
  for (i = 0; i < 8; i++) {
    mg_breaker_init(&f->br[i]);
    f->brp[i] = &f->br[i];
  }
  *state = f;
  return 0;
}

/* A JSON-mode request: the prose FAQ cannot answer it (the SDK would throw
 * on it), the static_json tier can, with its document. */
static void test_json_request_skips_prose(void **state) {
  struct fx *f = *state;
  struct skips k;
  begin(f, &k, "t1", MG_NEED_JSON, NULL, false, false, 0);
  assert_int_equal(f->step.kind, MG_STEP_CALL);
  result(f, MG_TRIG_5XX, 0, 10);
  assert_ptr_equal(f->step.target, T(f, "t2"));
  result(f, MG_TRIG_5XX, 0, 20);
  /* the cache: its key holds response_format, so a hit honours it */
  assert_int_equal(f->step.kind, MG_STEP_CACHE);
  mg_plan_skip(&f->plan, 0, 30, &f->step);
  assert_int_equal(f->step.kind, MG_STEP_TRADITIONAL);
  assert_string_equal(f->step.trad->name, "json");
  assert_true(f->step.json);
  assert_string_equal(f->step.text, "{\"answer\":null,\"fallback\":true}");
  assert_string_equal(k.log, "faq:response_format");
  /* a plain request gets the first traditional tier's prose */
  begin(f, &k, "t1", 0, NULL, false, false, 0);
  result(f, MG_TRIG_5XX, 0, 10);
  result(f, MG_TRIG_5XX, 0, 20);
  mg_plan_skip(&f->plan, 0, 30, &f->step);
  assert_string_equal(f->step.trad->name, "faq");
  assert_false(f->step.json);
  assert_string_equal(f->step.text, "Please see our FAQ.");
  assert_string_equal(k.log, "");
}

/* tool_choice required, n > 1, logprobs: no traditional tier honours them;
 * the chain ends with the failure, each skip recorded. */
static void test_never_traditional(void **state) {
  struct fx *f = *state;
  static const uint32_t needs[] = {MG_NEED_TOOL, MG_NEED_N, MG_NEED_LOGPROBS};
  static const char *const want[] = {
      "faq:tool_choice json:tool_choice", "faq:n json:n",
      "faq:logprobs json:logprobs"};
  struct skips k;
  size_t i;
  for (i = 0; i < 3; i++) {
    begin(f, &k, "t1", needs[i] | MG_NEED_JSON, NULL, false, false, 0);
    result(f, MG_TRIG_TIMEOUT, 0, 10);
    result(f, MG_TRIG_TIMEOUT, 0, 20);
    mg_plan_skip(&f->plan, 0, 30, &f->step);
    assert_int_equal(f->step.kind, MG_STEP_FAIL);
    assert_string_equal(k.log, want[i]);
    /* the failure to report stays the upstream's */
    assert_int_equal(f->plan.last, MG_TRIG_TIMEOUT);
  }
  /* an endpoint without cache or traditional answers (embeddings) */
  begin(f, &k, "t1", 0, NULL, true, true, 0);
  result(f, MG_TRIG_5XX, 0, 10);
  result(f, MG_TRIG_5XX, 0, 20);
  assert_int_equal(f->step.kind, MG_STEP_FAIL);
  assert_string_equal(k.log, "cache:endpoint faq:endpoint json:endpoint");
}

/* fallback_to_control: the control's target after the chain's targets and
 * caches, before any traditional tier; once, not its own chain. */
static void test_control_before_traditional(void **state) {
  struct fx *f = *state;
  struct skips k;
  begin(f, &k, "t1", 0, "ctl", false, false, 0);
  result(f, MG_TRIG_5XX, 0, 10);
  assert_ptr_equal(f->step.target, T(f, "t2"));
  assert_false(f->step.control);
  result(f, MG_TRIG_5XX, 0, 20);
  assert_int_equal(f->step.kind, MG_STEP_CACHE);
  mg_plan_skip(&f->plan, 0, 30, &f->step);
  assert_int_equal(f->step.kind, MG_STEP_CALL);
  assert_ptr_equal(f->step.target, T(f, "ctl"));
  assert_true(f->step.control);
  assert_true(mg_plan_fell_back(&f->plan));
  /* the request's one deadline: 10000 from the start */
  assert_int_equal(f->step.budget_ms, 10000 - 30);
  assert_int_equal(f->plan.why, MG_TRIG_5XX);
  /* the control failing too: the traditional tier, not ctl's chain (t2) */
  result(f, MG_TRIG_5XX, 0, 40);
  assert_int_equal(f->step.kind, MG_STEP_TRADITIONAL);
  assert_string_equal(f->step.trad->name, "faq");
  /* the control answering: done, as a fallback of the arm */
  begin(f, &k, "t1", 0, "ctl", false, false, 0);
  result(f, MG_TRIG_5XX, 0, 10);
  result(f, MG_TRIG_5XX, 0, 20);
  mg_plan_skip(&f->plan, 0, 30, &f->step);
  result(f, 0, 0, 50);
  assert_int_equal(f->step.kind, MG_STEP_DONE);
  assert_ptr_equal(f->plan.current, T(f, "ctl"));
  assert_true(mg_plan_fell_back(&f->plan));
}

static void test_control_edges(void **state) {
  struct fx *f = *state;
  struct skips k;
  /* a variant with no fallbacks at all: the control is its one tier */
  begin(f, &k, "solo", 0, "ctl", false, false, 0);
  result(f, MG_TRIG_CONNECT, 0, 10);
  assert_ptr_equal(f->step.target, T(f, "ctl"));
  assert_true(f->step.control);
  result(f, MG_TRIG_CONNECT, 0, 20);
  assert_int_equal(f->step.kind, MG_STEP_FAIL);
  /* the variant is the control: no extra tier */
  begin(f, &k, "ctl", 0, "ctl", false, false, 0);
  result(f, MG_TRIG_5XX, 0, 10);
  assert_ptr_equal(f->step.target, T(f, "t2"));
  result(f, MG_TRIG_5XX, 0, 20);
  assert_int_equal(f->step.kind, MG_STEP_FAIL);
  /* the chain names the control already: tried there, not twice */
  begin(f, &k, "t1", 0, "t2", false, false, 0);
  result(f, MG_TRIG_5XX, 0, 10);
  assert_ptr_equal(f->step.target, T(f, "t2"));
  result(f, MG_TRIG_5XX, 0, 20);
  assert_int_equal(f->step.kind, MG_STEP_CACHE);
  mg_plan_skip(&f->plan, 0, 30, &f->step);
  assert_int_equal(f->step.kind, MG_STEP_TRADITIONAL);
  /* past the deadline the control is skipped at no cost */
  begin(f, &k, "solo", 0, "ctl", false, false, 0);
  result(f, MG_TRIG_TIMEOUT, 0, 1000);
  assert_int_equal(f->step.kind, MG_STEP_FAIL);
  assert_string_equal(k.log, "ctl:deadline(free)");
  /* an open breaker on the control: skipped, said so */
  {
    struct mg_breaker_cfg bc = mg_policy_of(&f->cfg->fallbacks, T(f, "ctl"))
                                   ->breaker;
    int i;
    for (i = 0; i < 10; i++)
      (void)mg_breaker_record(f->brp[T(f, "ctl")->index], &bc, 0, false,
                              false);
  }
  begin(f, &k, "solo", 0, "ctl", false, false, 100);
  result(f, MG_TRIG_5XX, 0, 110);
  assert_int_equal(f->step.kind, MG_STEP_FAIL);
  assert_string_equal(k.log, "ctl:breaker_open(free)");
}

static void test_contract_config(void **state) {
  struct mg_cfg_errors e;
  struct mg_config *c;
  const char *bad =
      "{\"targets\":{\"a\":{\"base_url\":\"http://h\",\"model\":\"m\","
      "\"api\":\"anthropic\",\"confidence\":{\"min\":0.5}}},"
      "\"traditional\":{\"s\":{\"static_json\":\"just text\"},"
      "\"n\":{}},\"aliases\":{\"x\":{\"target\":\"a\"}}}";
  const char *want[] = {
      "$.targets.a.confidence.source: a target with api \"anthropic\" has no "
      "token logprobs",
      "$.traditional.s.static_json: must be a JSON object or array",
      "$.traditional.n: needs one of \"url\", \"static\" or \"static_json\"",
      NULL};
  size_t i, j;
  (void)state;
  mg_cfg_errors_init(&e);
  c = mg_config_load_string(bad, strlen(bad), "test", &e);
  assert_null(c);
  for (i = 0; want[i]; i++) {
    bool found = false;
    for (j = 0; j < e.n; j++)
      found |= strstr(e.msgs[j], want[i]) != NULL;
    if (!found)
      fail_msg("missing error: %s", want[i]);
  }
  mg_cfg_errors_free(&e);
  /* static_json alone answers every request with the document */
  c = load("{\"targets\":{\"a\":{\"base_url\":\"http://h\",\"model\":\"m\","
           "\"api\":\"anthropic\",\"confidence\":{\"min\":0.5,\"source\":"
           "\"json:/c\"}}},\"traditional\":{\"s\":{\"static_json\":[1, 2]}},"
           "\"aliases\":{\"x\":{\"target\":\"a\"}}}");
  assert_string_equal(c->fallbacks.trad[0].static_json, "[1,2]");
  assert_string_equal(c->fallbacks.trad[0].static_text, "[1,2]");
  mg_config_unref(c);
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
      cmocka_unit_test_setup_teardown(test_json_request_skips_prose, setup2,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_never_traditional, setup2,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_control_before_traditional,
                                      setup2, teardown),
      cmocka_unit_test_setup_teardown(test_control_edges, setup2, teardown),
      cmocka_unit_test(test_contract_config),
      cmocka_unit_test(test_config_errors),
      cmocka_unit_test(test_retry_after_headers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
