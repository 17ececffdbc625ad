/* test_ramp.c - ramps and guards with an injectable clock: a healthy
 * treatment walks every step; errors against the control roll it back
 * within one interval once the evidence is strong enough; p95; too little
 * traffic means no action; restarts resume the step and keep a rollback.
 * Then the input axis (cells judged on their own, input gates), exit
 * criteria per step, guards on feedback and cost, the evidence a rollback
 * carries, and state files from before all that. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include <cmocka.h>

#include "config/config.h"
#include "ramps/ramp.h"

#define MIN 60000LL

static const char *CFG =
    "{\"targets\":{\"v1\":{\"base_url\":\"http://h/v1\",\"model\":\"a\"},"
    "\"v2\":{\"base_url\":\"http://h/v1\",\"model\":\"b\"}},"
    "\"flags\":{\"chat\":{\"off_variant\":\"stable\","
    "\"variants\":{\"stable\":{\"target\":\"v1\"},\"next\":{\"target\":\"v2\"}},"
    "\"ramp\":{\"interval_ms\":10000,\"steps\":["
    "{\"weight\":1,\"hold_ms\":600000},{\"weight\":5,\"hold_ms\":3600000},"
    "{\"weight\":25,\"hold_ms\":3600000,\"manual\":true},"
    "{\"weight\":50,\"hold_ms\":3600000},{\"weight\":100}]},"
    "\"guards\":{\"window_ms\":300000,\"min_requests\":200,\"consecutive\":1,"
    "\"max_error_rate\":0.5,\"max_error_ratio\":2,\"max_p95_ms\":8000,"
    "\"max_fallback_rate\":0.9,\"max_low_confidence_rate\":0.9}}},"
    "\"aliases\":{\"chat\":{\"flag\":\"chat\"}}}";

struct fx {
  struct mg_config *cfg;
  const struct mg_flag *f;
  const struct mg_ramp_cfg *rc;
  struct mg_ramps own;      /* ramps parsed by a test itself (feedback) */
  struct mg_ramp_state st;
  struct mg_window wt, wc;
  struct mg_window_view vt, vc;
  int64_t now;  /* wall clock for the ramp */
};

static int setup(void **state) {
  struct fx *x = calloc(1, sizeof(*x));
  struct mg_cfg_errors e;
  size_t i;
  mg_cfg_errors_init(&e);
  x->cfg = mg_config_load_string(CFG, strlen(CFG), "t", &e);
  for (i = 0; i < e.n; i++)
    print_message("config: %s\n", e.msgs[i]);
  mg_cfg_errors_free(&e);
  assert_non_null(x->cfg);
  x->f = mg_flags_find(&x->cfg->flags, "chat");
  x->rc = &x->cfg->ramps.v[x->f->index];
  assert_true(x->rc->enabled);
  x->now = 1795000000000LL;
  mg_ramp_start(&x->st, x->now);
  mg_window_init(&x->wt, x->rc->guards.window_ms);
  mg_window_init(&x->wc, x->rc->guards.window_ms);
  *state = x;
  return 0;
}

static int teardown(void **state) {
  struct fx *x = *state;
  mg_ramps_free(&x->own);
  mg_config_unref(x->cfg);
  free(x);
  return 0;
}

/* n requests to one window at x->now under the ramp's epoch: the first
 * nerr of them errors, every one with latency ms, input in (or none) and a
 * cost (NaN: unknown). */
static void add(struct fx *x, struct mg_window *w, int n, int nerr, double ms,
                const struct mg_input *in, double cost) {
  struct mg_window_outcome o;
  int i;
  memset(&o, 0, sizeof(o));
  o.latency_ms = ms;
  o.cost = cost;
  o.chars_cell = o.tools_cell = MG_CELL_NONE;
  if (in)
    mg_ramp_cells(x->rc, in, &o.chars_cell, &o.tools_cell);
  for (i = 0; i < n; i++) {
    o.error = i < nerr;
    o.ok = !o.error;
    mg_window_record(w, x->now, x->st.epoch, &o);
  }
}

/* Traffic: n requests to each arm at time x->now, with error counts and a
 * latency. */
static void traffic(struct fx *x, int n_t, int err_t, int n_c, int err_c,
                    double ms) {
  add(x, &x->wt, n_t, err_t, ms, NULL, NAN);
  add(x, &x->wc, n_c, err_c, ms, NULL, NAN);
}

static enum mg_ramp_event judge(struct fx *x, const struct mg_ramp_cfg *rc,
                                struct mg_ramp_evidence *why) {
  mg_window_read(&x->wt, x->now, &x->vt);
  mg_window_read(&x->wc, x->now, &x->vc);
  return mg_ramp_judge(rc, &x->st, x->now, &x->vt, &x->vc, why);
}

static enum mg_ramp_event check(struct fx *x) {
  return judge(x, x->rc, NULL);
}

static uint32_t weight(struct fx *x) { return mg_ramp_weight(x->rc, &x->st); }

/* Advance the clock by ms, feeding healthy traffic and checking at every
 * interval; returns the events seen, OR-ed as bits. */
static unsigned run_healthy(struct fx *x, int64_t ms) {
  unsigned seen = 0;
  int64_t end = x->now + ms;
  while (x->now < end) {
    x->now += 10000;
    /* the same 1% error rate in both arms */
    traffic(x, 100, 1, 1000, 10, 120);
    seen |= 1u << check(x);
  }
  return seen;
}

static void test_healthy_walks_every_step(void **state) {
  struct fx *x = *state;
  assert_int_equal(weight(x), 100); /* 1% */
  run_healthy(x, 10 * MIN);
  assert_int_equal(x->st.step, 1);
  assert_int_equal(weight(x), 500);
  run_healthy(x, 60 * MIN);
  assert_int_equal(x->st.step, 2);
  /* step 2 is manual: held for an hour, then it waits for a human */
  run_healthy(x, 61 * MIN);
  assert_int_equal(x->st.status, MG_RAMP_WAITING);
  assert_int_equal(x->st.step, 2);
  run_healthy(x, 300 * MIN);
  assert_int_equal(x->st.step, 2); /* nothing moves by itself */
  assert_int_equal(mg_ramp_promote(x->rc, &x->st, x->now), 0);
  assert_int_equal(x->st.step, 3);
  assert_int_equal(weight(x), 5000);
  run_healthy(x, 61 * MIN);
  assert_int_equal(x->st.step, 4);
  assert_int_equal(x->st.status, MG_RAMP_DONE);
  assert_int_equal(weight(x), 10000);
}

static void test_hold_is_respected(void **state) {
  struct fx *x = *state;
  run_healthy(x, 9 * MIN);
  assert_int_equal(x->st.step, 0); /* 10 minute hold not over */
  run_healthy(x, 2 * MIN);
  assert_int_equal(x->st.step, 1);
}

/* Changed with issue 15.5: max_error_ratio used to fire on a fixed-sample
 * z-test of "treatment worse than control" as soon as the observed ratio
 * passed k; 9 errors in 210 against 21 in 2,100 (4.3% vs 1%) rolled back.
 * Now it rolls back only when the sequential test shows the treatment
 * beyond k x the control's rate, which that sample cannot show; a
 * treatment failing 30% of the time shows it at once. */
static void test_error_ratio_rolls_back_within_one_interval(void **state) {
  struct fx *x = *state;
  struct mg_flag_state fs;
  struct mg_ramp_evidence why;
  int i;
  /* Below the minimum sample nothing happens, however bad. */
  x->now += 10000;
  traffic(x, 150, 45, 1500, 15, 100); /* 30% vs 1% */
  assert_int_equal(check(x), MG_RAMP_NOTHING);
  assert_int_equal(x->st.status, MG_RAMP_RUNNING);
  /* The sample reaches 200 before the next check: the first check after
   * it rolls back. */
  x->now += 5000;
  traffic(x, 60, 18, 600, 6, 100);
  x->now += 5000;
  assert_int_equal(judge(x, x->rc, &why), MG_RAMP_ROLLBACK);
  assert_int_equal(x->st.status, MG_RAMP_ROLLED_BACK);
  assert_string_equal(x->st.guard, "max_error_ratio");
  assert_true(x->st.observed > 2);
  assert_true(x->st.threshold == 2);
  /* the evidence: a sequential test on "all", over the step's requests */
  assert_string_equal(why.guard, "max_error_ratio");
  assert_string_equal(why.cell, "all");
  assert_true(why.sequential);
  assert_int_equal(why.n_treatment, 210);
  assert_int_equal(why.n_control, 2100);
  assert_true(why.statistic >= why.boundary);
  /* alpha 0.01 over 5 steps and 8 cells (one sequential guard) */
  assert_true(fabs(why.alpha - 0.01 / 5 / 8) < 1e-15);
  assert_true(fabs(why.boundary - log(4000)) < 1e-9);
  assert_true(why.window_ms == 0);
  assert_string_equal(x->st.why.guard, "max_error_ratio");
  assert_int_equal(weight(x), 0);
  mg_flag_state_init(&fs, x->f);
  mg_ramp_apply(x->rc, &x->st, x->f, &fs);
  assert_int_equal(fs.weights[mg_flag_variant_index(x->f, "next")], 0);
  assert_int_equal(fs.weights[mg_flag_variant_index(x->f, "stable")], 10000);
  /* rolled back stays rolled back, whatever follows */
  for (i = 0; i < 100; i++) {
    x->now += 10000;
    traffic(x, 100, 0, 100, 0, 10);
    assert_int_equal(check(x), MG_RAMP_NOTHING);
  }
  assert_int_equal(x->st.status, MG_RAMP_ROLLED_BACK);
}

/* 4.3% against 1% with k = 2: the ratio is above 2 but 210 requests
 * cannot show it is; more of the same traffic does. */
static void test_error_ratio_needs_evidence(void **state) {
  struct fx *x = *state;
  int i, checks = 0;
  x->now += 10000;
  traffic(x, 210, 9, 2100, 21, 100);
  assert_int_equal(check(x), MG_RAMP_NOTHING);
  assert_int_equal(x->st.failures, 0);
  /* 4% vs 1% keeps coming: rolled back within a bounded number of checks,
   * each adding 200 treatment requests */
  for (i = 0; i < 200 && x->st.status != MG_RAMP_ROLLED_BACK; i++) {
    x->now += 10000;
    traffic(x, 200, 8, 2000, 20, 100);
    check(x);
    checks++;
  }
  assert_int_equal(x->st.status, MG_RAMP_ROLLED_BACK);
  assert_string_equal(x->st.guard, "max_error_ratio");
  print_message("4%% vs 1%% (k = 2): rolled back after %d checks, %d "
                "treatment requests\n", checks, 210 + 200 * checks);
  assert_true(checks >= 2);
}

static void test_equal_error_rates_do_not_roll_back(void **state) {
  struct fx *x = *state;
  int i;
  for (i = 0; i < 10; i++) {
    x->now += 10000;
    traffic(x, 100, 5, 1000, 50, 100); /* 5% and 5% */
    assert_int_not_equal(check(x), MG_RAMP_ROLLBACK);
  }
}

static void test_p95_breach(void **state) {
  struct fx *x = *state;
  x->now += 10000;
  traffic(x, 180, 0, 500, 0, 100);
  traffic(x, 20, 0, 0, 0, 12000); /* 10% of the treatment takes 12 s */
  assert_int_equal(check(x), MG_RAMP_ROLLBACK);
  assert_string_equal(x->st.guard, "max_p95_ms");
  assert_true(x->st.observed > 8000);
}

static void test_too_little_traffic_no_action(void **state) {
  struct fx *x = *state;
  int i;
  /* Hours pass; the treatment gets 10 requests per interval, all errors,
   * and the window never holds 200: neither rollback nor advance. */
  for (i = 0; i < 200; i++) {
    x->now += 10000;
    traffic(x, 1, 1, 10, 0, 100);
    assert_int_equal(check(x), MG_RAMP_NOTHING);
  }
  assert_int_equal(x->st.status, MG_RAMP_RUNNING);
  assert_int_equal(x->st.step, 0);
}

static void test_consecutive_checks(void **state) {
  struct fx *x = *state;
  struct mg_ramp_cfg rc = *x->rc;
  int i;
  rc.guards.consecutive = 3;
  /* two breaches, then a green check resets the count */
  for (i = 0; i < 2; i++) {
    struct mg_window_sum t, c;
    x->now += 10000;
    traffic(x, 300, 200, 300, 3, 100);
    mg_window_sum(&x->wt, x->now, &t);
    mg_window_sum(&x->wc, x->now, &c);
    assert_int_equal(mg_ramp_check(&rc, &x->st, x->now, &t, &c),
                     MG_RAMP_NOTHING);
  }
  assert_int_equal(x->st.failures, 2);
  {
    struct mg_window_sum t, c;
    /* the window slides past the bad traffic: a green check */
    x->now += 400000;
    traffic(x, 300, 0, 300, 0, 100);
    mg_window_sum(&x->wt, x->now, &t);
    mg_window_sum(&x->wc, x->now, &c);
    mg_ramp_check(&rc, &x->st, x->now, &t, &c);
    assert_int_equal(x->st.failures, 0);
  }
  for (i = 0; i < 3; i++) {
    struct mg_window_sum t, c;
    x->now += 10000;
    traffic(x, 300, 250, 300, 3, 100);
    mg_window_sum(&x->wt, x->now, &t);
    mg_window_sum(&x->wc, x->now, &c);
    if (i < 2)
      assert_int_equal(mg_ramp_check(&rc, &x->st, x->now, &t, &c),
                       MG_RAMP_NOTHING);
    else
      assert_int_equal(mg_ramp_check(&rc, &x->st, x->now, &t, &c),
                       MG_RAMP_ROLLBACK);
  }
}

static void test_interval(void **state) {
  struct fx *x = *state;
  /* A check sooner than interval_ms after the last does nothing. */
  x->now += 5000;
  traffic(x, 300, 300, 300, 0, 100);
  assert_int_equal(check(x), MG_RAMP_NOTHING);
  x->now += 5000;
  assert_int_equal(check(x), MG_RAMP_ROLLBACK);
}

static void test_restart_resumes_step(void **state) {
  struct fx *x = *state;
  struct mg_ramp_state back;
  cJSON *j;
  run_healthy(x, 11 * MIN);
  assert_int_equal(x->st.step, 1);
  j = mg_ramp_state_to_json(&x->st);
  assert_int_equal(mg_ramp_state_from_json(&back, j, x->rc->nsteps), 0);
  cJSON_Delete(j);
  assert_int_equal(back.step, 1);
  assert_int_equal(back.status, MG_RAMP_RUNNING);
  /* step_started survives to the millisecond: the hold continues */
  assert_true(back.step_started == x->st.step_started);
  assert_int_equal(mg_ramp_weight(x->rc, &back), 500);
}

static void test_rolled_back_stays_after_restart(void **state) {
  struct fx *x = *state;
  struct mg_ramp_state back;
  struct mg_flag_state fs;
  cJSON *j;
  char *text;
  run_healthy(x, 11 * MIN);
  assert_int_equal(mg_ramp_rollback(&x->st, x->now), 0);
  j = mg_ramp_state_to_json(&x->st);
  text = cJSON_Print(j);
  cJSON_Delete(j);
  /* a restart reads the file's text */
  j = cJSON_Parse(text);
  free(text);
  assert_int_equal(mg_ramp_state_from_json(&back, j, x->rc->nsteps), 0);
  cJSON_Delete(j);
  assert_int_equal(back.status, MG_RAMP_ROLLED_BACK);
  assert_string_equal(back.guard, "manual");
  mg_flag_state_init(&fs, x->f);
  mg_ramp_apply(x->rc, &back, x->f, &fs);
  assert_int_equal(fs.weights[mg_flag_variant_index(x->f, "next")], 0);
  /* only a restart re-exposes users */
  mg_ramp_restart(&back, x->now);
  assert_int_equal(back.status, MG_RAMP_RUNNING);
  assert_int_equal(back.step, 0);
  assert_int_equal(mg_ramp_weight(x->rc, &back), 100);
}

static void test_pause_resume_promote(void **state) {
  struct fx *x = *state;
  run_healthy(x, 5 * MIN);
  assert_int_equal(mg_ramp_pause(&x->st, x->now), 0);
  run_healthy(x, 30 * MIN); /* paused: no advance, hold frozen */
  assert_int_equal(x->st.step, 0);
  assert_int_equal(mg_ramp_resume(&x->st, x->now), 0);
  run_healthy(x, 4 * MIN); /* 9 minutes of hold in all */
  assert_int_equal(x->st.step, 0);
  run_healthy(x, 2 * MIN);
  assert_int_equal(x->st.step, 1);
  assert_int_equal(mg_ramp_resume(&x->st, x->now), -EINVAL);
  assert_int_equal(mg_ramp_promote(x->rc, &x->st, x->now), 0);
  assert_int_equal(x->st.step, 2);
  assert_int_equal(mg_ramp_rollback(&x->st, x->now), 0);
  assert_int_equal(mg_ramp_promote(x->rc, &x->st, x->now), -EINVAL);
  assert_int_equal(mg_ramp_pause(&x->st, x->now), -EINVAL);
}

static void test_window_slides(void **state) {
  struct mg_window w;
  struct mg_window_sum s;
  int i;
  (void)state;
  mg_window_init(&w, 60000);
  for (i = 0; i < 100; i++)
    mg_window_add(&w, 1000, i < 10, i < 20, i < 30, 100 + i);
  mg_window_sum(&w, 1000, &s);
  assert_int_equal(s.requests, 100);
  assert_int_equal(s.errors, 10);
  assert_int_equal(s.fallbacks, 20);
  assert_int_equal(s.low_conf, 30);
  /* p95 of 100..199 ms is ~194 ms; buckets are 12% wide */
  assert_true(mg_window_quantile(&s, 0.95) >= 194 &&
              mg_window_quantile(&s, 0.95) <= 194 * 1.12 + 1);
  /* slots are window/30 = 2 s wide: the requests of t=1 s sit in the slot
   * [0, 2 s) and leave the window once it is 60 s old */
  mg_window_sum(&w, 57000, &s);
  assert_int_equal(s.requests, 100);
  mg_window_sum(&w, 60000, &s);
  assert_int_equal(s.requests, 0);
  /* a lap later the slot is reused from scratch */
  mg_window_add(&w, 1000 + 120000, true, false, false, 5);
  mg_window_sum(&w, 1000 + 120000, &s);
  assert_int_equal(s.requests, 1);
}

static void test_config_errors(void **state) {
  const char *bad =
      "{\"targets\":{\"v1\":{\"base_url\":\"http://h/v1\",\"model\":\"a\"},"
      "\"v2\":{\"base_url\":\"http://h/v1\",\"model\":\"b\"},"
      "\"v3\":{\"base_url\":\"http://h/v1\",\"model\":\"c\"}},"
      "\"flags\":{\"a\":{\"off_variant\":\"s\",\"variants\":{\"s\":{\"target\":"
      "\"v1\",\"weight\":70},\"n\":{\"target\":\"v2\",\"weight\":0},\"o\":{"
      "\"target\":\"v3\",\"weight\":30}},"
      "\"ramp\":{\"variant\":\"n\",\"steps\":[{\"weight\":50},{\"weight\":80},"
      "{\"weight\":20},{\"weight\":0}]},\"guards\":{\"max_error_ratio\":0.5,"
      "\"bogus\":1}},"
      "\"b\":{\"off_variant\":\"s\",\"variants\":{\"s\":{\"target\":\"v1\"},"
      "\"n\":{\"target\":\"v2\"},\"o\":{\"target\":\"v3\"}},\"ramp\":{"
      "\"steps\":[]}},"
      "\"c\":{\"off_variant\":\"s\",\"variants\":{\"s\":{\"target\":\"v1\"},"
      "\"n\":{\"target\":\"v2\"}},\"guards\":{}}},"
      "\"aliases\":{\"x\":{\"flag\":\"a\"}}}";
  const char *want[] = {
      "$.flags.a.ramp.steps[1].weight: leaves no room for the other variants' "
      "30.00%",
      "$.flags.a.ramp.steps[2].weight: a ramp only goes up",
      "$.flags.a.ramp.steps[3].weight: must be a percentage above 0",
      "$.flags.a.guards.max_error_ratio: must be between 1 and",
      "$.flags.a.guards.bogus: unknown key",
      "$.flags.b.ramp: name the variant to ramp",
      "$.flags.b.ramp.steps: must be a non-empty array",
      "$.flags.c.guards: guards protect a ramp",
      NULL};
  struct mg_cfg_errors e;
  size_t i, j;
  (void)state;
  mg_cfg_errors_init(&e);
  assert_null(mg_config_load_string(bad, strlen(bad), "t", &e));
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

/* ---- the input axis, exit criteria, feedback and cost (issues 11.5, 15.4) */

static const char *BASE =
    "{\"targets\":{\"v1\":{\"base_url\":\"http://h/v1\",\"model\":\"a\"},"
    "\"v2\":{\"base_url\":\"http://h/v1\",\"model\":\"b\"}},"
    "\"flags\":{\"chat\":{\"off_variant\":\"stable\","
    "\"variants\":{\"stable\":{\"target\":\"v1\"},\"next\":{\"target\":\"v2\"}}}},"
    "\"aliases\":{\"chat\":{\"flag\":\"chat\"}}}";
static const char *const METRICS[] = {"complaint", "accuracy", "rating"};

/* Parse {"chat": {"ramp": ..., "guards": ...}} (single quotes for double)
 * against the flags of BASE with the declared METRICS; errors into e (may
 * be NULL: then there must be none). */
static void own_ramp_e(struct fx *x, const char *json,
                       struct mg_cfg_errors *e) {
  char buf[8192];
  struct mg_cfg_errors mine;
  cJSON *j;
  size_t i;
  for (i = 0; json[i] && i + 1 < sizeof(buf); i++)
    buf[i] = json[i] == '\'' ? '"' : json[i];
  buf[i] = '\0';
  j = cJSON_Parse(buf);
  assert_non_null(j);
  mg_ramps_free(&x->own);
  mg_cfg_errors_init(&mine);
  mg_ramps_parse_metrics(&x->own, j, &x->cfg->flags, METRICS, 3,
                         e ? e : &mine);
  cJSON_Delete(j);
  for (i = 0; i < mine.n; i++)
    print_message("config: %s\n", mine.msgs[i]);
  assert_int_equal(mine.n, 0);
  mg_cfg_errors_free(&mine);
  x->rc = &x->own.v[x->f->index];
}

static void own_ramp(struct fx *x, const char *json) {
  own_ramp_e(x, json, NULL);
  assert_true(x->rc->enabled);
  mg_ramp_start(&x->st, x->now);
  mg_window_init(&x->wt, x->rc->guards.window_ms);
  mg_window_init(&x->wc, x->rc->guards.window_ms);
}

static int setup_base(void **state) {
  struct fx *x = calloc(1, sizeof(*x));
  struct mg_cfg_errors e;
  mg_cfg_errors_init(&e);
  x->cfg = mg_config_load_string(BASE, strlen(BASE), "t", &e);
  mg_cfg_errors_free(&e);
  assert_non_null(x->cfg);
  x->f = mg_flags_find(&x->cfg->flags, "chat");
  x->now = 1795000000000LL;
  *state = x;
  return 0;
}

static struct mg_input input(uint64_t chars, uint32_t tools) {
  struct mg_input in;
  memset(&in, 0, sizeof(in));
  in.chars = chars;
  in.tools = tools;
  return in;
}

/* What the flag layer does with a rollout request: the gate first (a
 * request beyond the step's inputs goes to the control with reason
 * ramp_inputs and feeds no window), then the bucket (every `every`-th
 * request is the treatment's). Returns whether it was recorded. */
static bool route(struct fx *x, unsigned i, unsigned every,
                  const struct mg_input *in, bool t_err, bool c_err,
                  double cost_t, double cost_c) {
  bool treat = i % every == 0;
  if (!mg_ramp_admits(x->rc, &x->st, in))
    return false;
  if (treat)
    add(x, &x->wt, 1, t_err, 100, in, cost_t);
  else
    add(x, &x->wc, 1, c_err, 100, in, cost_c);
  return true;
}

/* A small deterministic random number generator (xorshift64*): patterns
 * such as i % 5 alias with each other. */
static unsigned rnd(uint64_t *s) {
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return (unsigned)((*s * 0x2545F4914F6CDD1DULL) >> 33);
}

static const char *GATED =
    "{'chat':{'ramp':{'interval_ms':10000,'steps':["
    "{'weight':50,'hold_ms':600000,'inputs':{'max_chars':2000,'max_tools':0}},"
    "{'weight':50,'hold_ms':600000,'inputs':{'max_chars':8000,'max_tools':3}},"
    "{'weight':50,'hold_ms':600000},{'weight':100}]},"
    "'guards':{'window_ms':300000,'min_requests':50,%s}}}";

/* Issue 11.5: a canary that fails only on long inputs is rolled back at
 * the step that first lets them in, by the long-input cell, while the
 * aggregate stays under the threshold. */
static void long_inputs_fail(struct fx *x, const char *guards,
                             const char *want_guard) {
  char json[2048];
  unsigned i = 0, t;
  uint64_t seed = 42;
  enum mg_ramp_event ev = MG_RAMP_NOTHING;
  struct mg_ramp_evidence why;
  snprintf(json, sizeof(json), GATED, guards);
  own_ramp(x, json);
  assert_string_equal(
      mg_ramp_cell_name(x->rc, MG_CELL_CHARS0 + 2, why.cell, sizeof(why.cell)),
      "chars > 8000");
  for (t = 0; t < 500 && ev != MG_RAMP_ROLLBACK; t++) {
    unsigned k;
    x->now += 10000;
    /* per interval 100 requests: 60% short, 35% medium, 5% long (all
     * without tools); the treatment fails 40% of long inputs, 1% of the
     * rest, the control 1% everywhere */
    for (k = 0; k < 100; k++, i++) {
      unsigned r = rnd(&seed) % 100;
      uint64_t chars = r < 60 ? 800 : r < 95 ? 5000 : 20000;
      struct mg_input in = input(chars, 0);
      bool t_err = chars > 8000 ? rnd(&seed) % 5 < 2 : rnd(&seed) % 100 == 0;
      route(x, i, 2, &in, t_err, rnd(&seed) % 100 == 0, NAN, NAN);
    }
    ev = judge(x, x->rc, &why);
    if (x->st.step < 2)
      assert_int_not_equal(ev, MG_RAMP_ROLLBACK);
  }
  assert_int_equal(ev, MG_RAMP_ROLLBACK);
  assert_int_equal(x->st.step, 2); /* the first step without limits */
  assert_string_equal(why.guard, want_guard);
  assert_string_equal(why.cell, "chars > 8000");
  assert_int_equal(why.step, 2);
  /* the aggregate was within its threshold when it happened */
  {
    const struct mg_window_sum *all = &x->vt.win[MG_CELL_ALL];
    double rate = (double)all->errors / (double)all->requests;
    print_message("rolled back by %s on %s at step %u; aggregate error rate "
                  "%.3f\n", why.guard, why.cell, why.step, rate);
    assert_true(rate < 0.05);
  }
}

static void test_long_input_cell_absolute(void **state) {
  long_inputs_fail(*state, "'max_error_rate':0.05", "max_error_rate");
}

static void test_long_input_cell_sequential(void **state) {
  /* 40% on 5% of the traffic makes the aggregate ratio about 2.9: a
   * threshold of 4 keeps "all" within it, the long cell (40x) is not */
  long_inputs_fail(*state, "'max_error_ratio':4", "max_error_ratio");
}

static void test_gates_and_cells(void **state) {
  struct fx *x = *state;
  struct mg_ramp_gate g;
  struct mg_input in;
  uint8_t cc, tc;
  char name[MG_RAMP_CELL_NAME_MAX];
  own_ramp(x, "{'chat':{'ramp':{'steps':["
              "{'weight':100,'inputs':{'max_chars':2000,'max_tools':0}},"
              "{'weight':100,'inputs':{'max_chars':8000,'max_tools':3}},"
              "{'weight':100}]}}}");
  /* the steps' limits are the chars edges */
  assert_int_equal(x->rc->nchars_edges, 2);
  mg_ramp_gate(x->rc, &x->st, &g);
  assert_true(g.on && g.max_chars == 2000 && g.max_tools == 0);
  in = input(2000, 0);
  assert_true(mg_ramp_admits(x->rc, &x->st, &in));
  in = input(2001, 0);
  assert_false(mg_ramp_admits(x->rc, &x->st, &in));
  in = input(10, 1);
  assert_false(mg_ramp_admits(x->rc, &x->st, &in));
  assert_int_equal(mg_ramp_promote(x->rc, &x->st, x->now), 0);
  in = input(8000, 3);
  assert_true(mg_ramp_admits(x->rc, &x->st, &in));
  in = input(8000, 4);
  assert_false(mg_ramp_admits(x->rc, &x->st, &in));
  assert_int_equal(mg_ramp_promote(x->rc, &x->st, x->now), 0);
  mg_ramp_gate(x->rc, &x->st, &g);
  assert_false(g.on);
  in = input(1000000, 50);
  assert_true(mg_ramp_admits(x->rc, &x->st, &in));
  /* rolled back: no gate (the treatment has 0% anyway) */
  mg_ramp_restart(&x->st, x->now);
  assert_int_equal(mg_ramp_rollback(&x->st, x->now), 0);
  mg_ramp_gate(x->rc, &x->st, &g);
  assert_false(g.on);
  /* cells and their names, the report's tools buckets */
  in = input(2000, 0);
  mg_ramp_cells(x->rc, &in, &cc, &tc);
  assert_int_equal(cc, MG_CELL_CHARS0);
  assert_int_equal(tc, MG_CELL_TOOLS0);
  in = input(2001, 2);
  mg_ramp_cells(x->rc, &in, &cc, &tc);
  assert_int_equal(cc, MG_CELL_CHARS0 + 1);
  assert_int_equal(tc, MG_CELL_TOOLS0 + 1);
  assert_string_equal(mg_ramp_cell_name(x->rc, cc, name, sizeof(name)),
                      "chars 2001-8000");
  assert_string_equal(mg_ramp_cell_name(x->rc, tc, name, sizeof(name)),
                      "tools 1-2");
  in = input(8001, 3);
  mg_ramp_cells(x->rc, &in, &cc, &tc);
  assert_string_equal(mg_ramp_cell_name(x->rc, cc, name, sizeof(name)),
                      "chars > 8000");
  assert_string_equal(mg_ramp_cell_name(x->rc, tc, name, sizeof(name)),
                      "tools 3+");
  assert_string_equal(mg_ramp_cell_name(x->rc, MG_CELL_CHARS0 + 3, name,
                                        sizeof(name)),
                      ""); /* a fourth chars cell is not in use */
  assert_string_equal(mg_ramp_cell_name(x->rc, MG_CELL_ALL, name,
                                        sizeof(name)),
                      "all");
  /* without limits: the default edges; explicit ones win */
  own_ramp(x, "{'chat':{'ramp':{'steps':[{'weight':5}]}}}");
  assert_int_equal(x->rc->nchars_edges, 3);
  assert_true(x->rc->chars_edges[0] == 500 && x->rc->chars_edges[2] == 8000);
  own_ramp(x, "{'chat':{'ramp':{'steps':[{'weight':5,'inputs':{'max_tools':"
              "0}},{'weight':6}],'cells':{'chars':[1000,30000]}}}}");
  assert_int_equal(x->rc->nchars_edges, 2);
  in = input(30001, 0);
  mg_ramp_cells(x->rc, &in, &cc, &tc);
  assert_string_equal(mg_ramp_cell_name(x->rc, cc, name, sizeof(name)),
                      "chars > 30000");
}

/* Seed 001: "two days at 10%, error rate within SLO": a step advances
 * only once its hold, its requests and its units are in. */
static void units_traffic(struct fx *x, int n, uint64_t first_unit,
                          int units) {
  struct mg_window_outcome o;
  int k;
  memset(&o, 0, sizeof(o));
  o.ok = true;
  o.latency_ms = 50;
  o.cost = NAN;
  o.chars_cell = o.tools_cell = MG_CELL_NONE;
  o.has_unit = true;
  for (k = 0; k < n; k++) {
    o.unit_hash = first_unit + (uint64_t)(k % units);
    mg_window_record(&x->wt, x->now, x->st.epoch, &o);
  }
  traffic(x, 0, 0, n, 0, 50);
}

static void test_step_exit_criteria(void **state) {
  struct fx *x = *state;
  int i;
  uint64_t next_unit = 1000;
  own_ramp(x, "{'chat':{'ramp':{'interval_ms':10000,'steps':["
              "{'weight':10,'hold_ms':60000,'min_requests':3000,"
              "'min_units':500},{'weight':50}]},"
              "'guards':{'min_requests':20,'max_error_rate':0.5}}}");
  /* 100 requests an interval from the same 10 units: the hold is over
   * after 6 intervals, 3000 requests after 30; the units never come */
  for (i = 1; i <= 40; i++) {
    x->now += 10000;
    units_traffic(x, 100, 1, 10);
    check(x);
    assert_int_equal(x->st.step, 0);
  }
  assert_true(x->vt.total[MG_CELL_ALL].requests == 4000);
  assert_true(mg_hll_estimate(&x->vt.units) < 11);
  /* then 50 new units an interval: 500 distinct after 9 more intervals
   * (10 + 9 x 50 = 460 < 500 < 510 after 10); the sketch's 3% error
   * allows a step either side */
  for (i = 1; i <= 20 && x->st.step == 0; i++) {
    x->now += 10000;
    units_traffic(x, 100, next_unit, 50);
    next_unit += 50;
    check(x);
  }
  print_message("advanced after %d intervals of new units\n", i - 1);
  assert_int_equal(x->st.step, 1);
  assert_true(i - 1 >= 9 && i - 1 <= 11);
  /* the new step counts afresh: its epoch changed */
  assert_true(x->st.epoch == 2);
}

/* A step may carry its own guards: stricter at the wide step here. */
static void test_step_guards(void **state) {
  struct fx *x = *state;
  int i;
  own_ramp(x, "{'chat':{'ramp':{'interval_ms':10000,'steps':["
              "{'weight':10,'hold_ms':60000},"
              "{'weight':50,'hold_ms':60000,'guards':{'max_error_rate':0.05,"
              "'min_requests':40}},{'weight':100}]},"
              "'guards':{'min_requests':100,'max_error_rate':0.2}}}");
  assert_null(x->rc->steps[0].guards);
  assert_non_null(x->rc->steps[1].guards);
  /* the step's guards start from the flag's and override what they name */
  assert_true(x->rc->steps[1].guards->max_error_rate == 0.05);
  assert_int_equal(x->rc->steps[1].guards->min_requests, 40);
  assert_int_equal(x->rc->steps[1].guards->window_ms, 300000);
  /* 10% errors: within the flag's 20% at step 0, which advances */
  for (i = 0; i < 8 && x->st.step == 0; i++) {
    x->now += 10000;
    traffic(x, 100, 10, 100, 1, 50);
    assert_int_equal(check(x), i < 5 ? MG_RAMP_NOTHING : MG_RAMP_ADVANCED);
  }
  assert_int_equal(x->st.step, 1);
  assert_int_equal(x->st.status, MG_RAMP_RUNNING);
  x->now += 10000;
  traffic(x, 100, 10, 100, 1, 50);
  assert_int_equal(check(x), MG_RAMP_ROLLBACK);
  assert_string_equal(x->st.why.guard, "max_error_rate");
  assert_true(x->st.why.threshold == 0.05);
  assert_int_equal(x->st.why.step, 1);
  assert_int_equal(x->st.why.window_ms, 300000);
  assert_false(x->st.why.sequential);
}

/* Feedback arrives after its request, at its own time, through
 * mg_window_feedback; a complaint rate 5x the control's rolls back. */
static void feedback(struct fx *x, struct mg_window *w, uint32_t metric,
                     int n, int ones, double value_else) {
  static uint64_t unit = 77; /* every value from a unit of its own */
  struct mg_window_fb f;
  int k;
  memset(&f, 0, sizeof(f));
  f.metric = metric;
  f.chars_cell = f.tools_cell = MG_CELL_NONE;
  for (k = 0; k < n; k++) {
    f.value = k < ones ? 1 : value_else;
    f.has_unit = true;
    f.unit_hash = unit++;
    mg_window_feedback(w, x->now, x->st.epoch, &f);
  }
}

static void test_feedback_guards(void **state) {
  struct fx *x = *state;
  struct mg_ramp_evidence why;
  int i;
  enum mg_ramp_event ev = MG_RAMP_NOTHING;
  own_ramp(x, "{'chat':{'ramp':{'interval_ms':10000,'steps':["
              "{'weight':10,'hold_ms':100000000},{'weight':100}]},"
              "'guards':{'min_requests':100,'feedback':{"
              "'complaint':{'max_ratio':3},'accuracy':{'min':0.85}}}}}");
  assert_true(x->rc->guards.fb[0].on);
  assert_true(x->rc->guards.fb[0].max_ratio == 3);
  assert_false(x->rc->guards.fb[0].has_min);
  assert_true(x->rc->guards.fb[1].has_min && x->rc->guards.fb[1].min == 0.85);
  assert_false(x->rc->guards.fb[2].on);
  /* healthy: complaints 2% in both arms, accuracy 0.9 */
  for (i = 0; i < 30; i++) {
    x->now += 10000;
    traffic(x, 100, 0, 900, 0, 50);
    feedback(x, &x->wt, 0, 50, 1, 0);
    feedback(x, &x->wc, 0, 450, 9, 0);
    feedback(x, &x->wt, 1, 20, 18, 0); /* 18 of 20 right */
    assert_int_not_equal(check(x), MG_RAMP_ROLLBACK);
  }
  /* the treatment draws complaints at 10%, 5x the control's 2% */
  for (i = 0; i < 200 && ev != MG_RAMP_ROLLBACK; i++) {
    x->now += 10000;
    traffic(x, 100, 0, 900, 0, 50);
    feedback(x, &x->wt, 0, 50, 5, 0);
    feedback(x, &x->wc, 0, 450, 9, 0);
    feedback(x, &x->wt, 1, 20, 18, 0);
    ev = judge(x, x->rc, &why);
  }
  assert_int_equal(ev, MG_RAMP_ROLLBACK);
  print_message("complaints 5x: rolled back after %d intervals\n", i);
  assert_string_equal(why.guard, "feedback.complaint.max_ratio");
  assert_string_equal(why.cell, "all");
  assert_true(why.sequential);
  assert_true(why.threshold == 3);
  assert_true(why.observed > 3);
  assert_true(why.n_treatment >= 100 && why.n_control >= 100);

  /* accuracy under its floor: 0.75 where 0.85 is asked */
  own_ramp(x, "{'chat':{'ramp':{'interval_ms':10000,'steps':["
              "{'weight':10,'hold_ms':100000000},{'weight':100}]},"
              "'guards':{'min_requests':100,'feedback':{"
              "'accuracy':{'min':0.85}}}}}");
  ev = MG_RAMP_NOTHING;
  for (i = 0; i < 200 && ev != MG_RAMP_ROLLBACK; i++) {
    x->now += 10000;
    traffic(x, 100, 0, 900, 0, 50);
    feedback(x, &x->wt, 1, 20, 15, 0);
    ev = judge(x, x->rc, &why);
  }
  assert_int_equal(ev, MG_RAMP_ROLLBACK);
  assert_string_equal(why.guard, "feedback.accuracy.min");
  assert_true(fabs(why.observed - 0.75) < 1e-9);
  assert_true(why.threshold == 0.85);
  assert_int_equal(why.n_control, 0);
}

/* Cost per successful answer: 1.5x the control's rolls back under a
 * 1.10 guard; 1.05x does not, looked at 300 times. */
static void cost_run(struct fx *x, double ratio, int intervals,
                     enum mg_ramp_event *ev, struct mg_ramp_evidence *why) {
  int i, k;
  *ev = MG_RAMP_NOTHING;
  for (i = 0; i < intervals && *ev != MG_RAMP_ROLLBACK; i++) {
    x->now += 10000;
    for (k = 0; k < 100; k++) {
      /* costs 0.001 to 0.005 in a fixed pattern, failures cost too */
      double c = 0.001 + 0.004 * ((k * 7) % 10) / 9.0;
      add(x, &x->wt, 1, k % 50 == 0, 100, NULL, c * ratio);
    }
    for (k = 0; k < 900; k++) {
      double c = 0.001 + 0.004 * ((k * 7) % 10) / 9.0;
      add(x, &x->wc, 1, k % 50 == 0, 100, NULL, c);
    }
    *ev = judge(x, x->rc, why);
  }
}

static void test_cost_guard(void **state) {
  struct fx *x = *state;
  struct mg_ramp_evidence why;
  enum mg_ramp_event ev;
  const char *json =
      "{'chat':{'ramp':{'interval_ms':10000,'steps':["
      "{'weight':10,'hold_ms':100000000},{'weight':100}]},"
      "'guards':{'min_requests':100,'max_cost_ratio':1.10}}}";
  own_ramp(x, json);
  cost_run(x, 1.05, 300, &ev, &why);
  assert_int_not_equal(ev, MG_RAMP_ROLLBACK);
  own_ramp(x, json);
  cost_run(x, 1.5, 300, &ev, &why);
  assert_int_equal(ev, MG_RAMP_ROLLBACK);
  assert_string_equal(why.guard, "max_cost_ratio");
  assert_true(fabs(why.observed - 1.5) < 1e-9);
  assert_true(why.threshold == 1.10);
  assert_true(why.statistic >= why.boundary);
}

/* The evidence survives the state file, and files from before it load. */
static void test_evidence_persists(void **state) {
  struct fx *x = *state;
  struct mg_ramp_state back;
  cJSON *j;
  char *text;
  const char *old =
      "{\"status\":\"rolled_back\",\"step\":1,"
      "\"step_started\":\"2026-11-18T10:00:00.000Z\",\"failures\":1,"
      "\"rollback\":{\"guard\":\"max_error_ratio\",\"observed\":3.5,"
      "\"threshold\":2,\"at\":\"2026-11-18T10:05:00.000Z\"}}";
  long_inputs_fail(x, "'max_error_ratio':4", "max_error_ratio");
  j = mg_ramp_state_to_json(&x->st);
  text = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  print_message("%s\n", text);
  j = cJSON_Parse(text);
  free(text);
  assert_int_equal(mg_ramp_state_from_json(&back, j, x->rc->nsteps), 0);
  cJSON_Delete(j);
  assert_int_equal(back.status, MG_RAMP_ROLLED_BACK);
  assert_string_equal(back.why.guard, "max_error_ratio");
  assert_string_equal(back.why.cell, "chars > 8000");
  assert_true(back.why.sequential);
  assert_true(fabs(back.why.statistic - x->st.why.statistic) < 1e-9);
  assert_true(fabs(back.why.alpha - x->st.why.alpha) < 1e-15);
  assert_int_equal(back.why.n_treatment, x->st.why.n_treatment);
  assert_int_equal(back.why.step, 2);
  assert_true(back.why.since == x->st.why.since);
  assert_true(back.epoch == x->st.epoch);
  assert_string_equal(back.guard, "max_error_ratio");
  /* a file written before cells and sequential tests */
  j = cJSON_Parse(old);
  assert_int_equal(mg_ramp_state_from_json(&back, j, 4), 0);
  cJSON_Delete(j);
  assert_int_equal(back.status, MG_RAMP_ROLLED_BACK);
  assert_int_equal(back.step, 1);
  assert_int_equal(back.failures, 1);
  assert_string_equal(back.guard, "max_error_ratio");
  assert_true(back.observed == 3.5 && back.threshold == 2);
  assert_string_equal(back.why.guard, "max_error_ratio");
  assert_string_equal(back.why.cell, "");
  assert_false(back.why.sequential);
  assert_true(back.epoch == 1);
  /* a corrupt file: numbers far out of range load clamped, not undefined */
  j = cJSON_Parse("{\"status\":\"rolled_back\",\"step\":1e300,"
                  "\"step_started\":\"2026-11-18T10:00:00.000Z\","
                  "\"failures\":-7,\"epoch\":1e300,\"rollback\":{"
                  "\"guard\":\"max_error_ratio\",\"window_ms\":-1,"
                  "\"step\":1e20,\"sequential\":{\"n_treatment\":1e300,"
                  "\"n_control\":\"many\"}}}");
  assert_int_equal(mg_ramp_state_from_json(&back, j, 4), 0);
  cJSON_Delete(j);
  assert_int_equal(back.step, 3);
  assert_int_equal(back.failures, 0);
  assert_true(back.epoch >= 1);
  assert_int_equal(back.why.window_ms, 0);
  assert_int_equal(back.why.n_control, 0);
}

/* Evidence belongs to its step: a view still on the previous epoch (a
 * worker that has not seen the step change) gives none. */
static void test_epochs(void **state) {
  struct fx *x = *state;
  int i;
  own_ramp(x, "{'chat':{'ramp':{'interval_ms':10000,'steps':["
              "{'weight':10,'hold_ms':60000},{'weight':50,'hold_ms':60000,"
              "'min_requests':500},{'weight':100}]},"
              "'guards':{'min_requests':50,'max_error_ratio':1}}}");
  for (i = 0; i < 8 && x->st.step == 0; i++) {
    x->now += 10000;
    traffic(x, 100, 1, 900, 9, 50);
    check(x);
  }
  assert_int_equal(x->st.step, 1);
  assert_true(x->st.epoch == 2);
  /* no outcome under epoch 2 yet: the windows still hold step 0's */
  /* traffic recorded under the old epoch joins the sliding window only */
  {
    uint64_t e = x->st.epoch;
    x->st.epoch = 1;
    for (i = 0; i < 10; i++) {
      x->now += 10000;
      traffic(x, 100, 50, 900, 9, 50); /* 50% errors, old epoch */
    }
    x->st.epoch = e;
  }
  mg_window_read(&x->wt, x->now, &x->vt);
  assert_true(x->vt.epoch == 1); /* never saw epoch 2 */
  assert_true(x->vt.win[MG_CELL_ALL].requests >= 1000);
  /* no sequential evidence for epoch 2: no rollback, no advance */
  assert_int_equal(check(x), MG_RAMP_NOTHING);
  assert_int_equal(x->st.step, 1);
  /* the first outcome of epoch 2 restarts the totals */
  x->now += 10000;
  traffic(x, 100, 1, 900, 9, 50);
  mg_window_read(&x->wt, x->now, &x->vt);
  assert_true(x->vt.epoch == 2);
  assert_int_equal(x->vt.total[MG_CELL_ALL].requests, 100);
}

/* Summable: two workers' windows, read and merged, are one window that
 * saw all their traffic; feedback joins the slot of its arrival. */
static void test_window_views_merge(void **state) {
  static struct mg_window w1, w2, both;
  static struct mg_window_view v1, v2, vb, acc;
  struct mg_window_outcome o;
  struct mg_window_fb f;
  int i, c;
  (void)state;
  mg_window_init(&w1, 60000);
  mg_window_init(&w2, 60000);
  mg_window_init(&both, 60000);
  memset(&o, 0, sizeof(o));
  memset(&f, 0, sizeof(f));
  for (i = 0; i < 3000; i++) {
    int64_t t = 100000 + i * 37;
    struct mg_window *w = i % 3 ? &w1 : &w2;
    o.error = i % 17 == 0;
    o.ok = !o.error;
    o.fallback = i % 5 == 0;
    o.latency_ms = 50 + i % 400;
    o.cost = i % 4 ? 0.001 * (i % 9) : NAN;
    o.chars_cell = (uint8_t)(MG_CELL_CHARS0 + i % 4);
    o.tools_cell = (uint8_t)(MG_CELL_TOOLS0 + i % 3);
    o.has_unit = true;
    o.unit_hash = (uint64_t)(i % 250);
    mg_window_record(w, t, 3, &o);
    mg_window_record(&both, t, 3, &o);
    if (i % 7 == 0) {
      f.metric = i % 2;
      f.value = i % 3 ? 1 : 0.25;
      f.chars_cell = o.chars_cell;
      f.tools_cell = o.tools_cell;
      f.has_unit = true;
      f.unit_hash = o.unit_hash;
      mg_window_feedback(w, t + 5000, 3, &f);
      mg_window_feedback(&both, t + 5000, 3, &f);
    }
  }
  mg_window_read(&w1, 211000, &v1);
  mg_window_read(&w2, 211000, &v2);
  mg_window_read(&both, 211000, &vb);
  mg_window_view_init(&acc);
  mg_window_view_merge(&acc, &v1);
  mg_window_view_merge(&acc, &v2);
  assert_true(acc.epoch == 3);
  for (c = 0; c < MG_CELLS; c++) {
    assert_int_equal(acc.win[c].requests, vb.win[c].requests);
    assert_int_equal(acc.win[c].errors, vb.win[c].errors);
    assert_int_equal(acc.total[c].requests, vb.total[c].requests);
    assert_int_equal(acc.total[c].cost_ok, vb.total[c].cost_ok);
    assert_true(fabs(acc.total[c].cost - vb.total[c].cost) < 1e-9);
    assert_true(fabs(acc.total[c].ln_ms_sq - vb.total[c].ln_ms_sq) < 1e-6);
    assert_int_equal(acc.total[c].fb[1].n, vb.total[c].fb[1].n);
    assert_true(memcmp(acc.win[c].lat, vb.win[c].lat, sizeof(vb.win[c].lat)) ==
                0);
    for (i = 0; i < MG_UNIT_BUCKETS; i++)
      assert_true(fabs(acc.buckets[c][i].errors - vb.buckets[c][i].errors) <
                  1e-9);
  }
  /* the window forgets (60 s), the totals do not */
  assert_true(vb.win[MG_CELL_ALL].requests < vb.total[MG_CELL_ALL].requests);
  assert_int_equal(vb.total[MG_CELL_ALL].requests, 3000);
  /* each outcome is in "all", one chars cell and one tools cell */
  assert_int_equal(vb.total[MG_CELL_CHARS0].requests +
                       vb.total[MG_CELL_CHARS0 + 1].requests +
                       vb.total[MG_CELL_CHARS0 + 2].requests +
                       vb.total[MG_CELL_CHARS0 + 3].requests,
                   3000);
  assert_int_equal(vb.total[MG_CELL_TOOLS0].requests +
                       vb.total[MG_CELL_TOOLS0 + 1].requests +
                       vb.total[MG_CELL_TOOLS0 + 2].requests,
                   3000);
  /* 250 units in all: the sketches merged count each once */
  assert_true(fabs(mg_hll_estimate(&acc.units) - 250) < 250 * 0.1);
  /* a view from an older epoch adds its window but not its totals */
  v2.epoch = 2;
  mg_window_view_init(&acc);
  mg_window_view_merge(&acc, &v1);
  mg_window_view_merge(&acc, &v2);
  assert_int_equal(acc.win[MG_CELL_ALL].requests,
                   vb.win[MG_CELL_ALL].requests);
  assert_int_equal(acc.total[MG_CELL_ALL].requests, 2000);
}

/* The running sums a read uses equal the slots summed again, after many
 * laps of the ring and gaps in the traffic; a resize keeps the evidence. */
static void test_window_running_sums(void **state) {
  static struct mg_window w;
  struct mg_window_sum s;
  int64_t t = 0;
  int i;
  (void)state;
  mg_window_init(&w, 30000);
  for (i = 0; i < 20000; i++) {
    /* bursts and silences: sometimes more than a window without traffic */
    t += i % 1000 == 999 ? 45000 : 13 + i % 29;
    mg_window_add(&w, t, i % 11 == 0, false, false, 10 + i % 90);
    if (i % 97 == 0) {
      uint64_t n = 0, e = 0;
      int k;
      mg_window_sum(&w, t, &s);
      for (k = 0; k < MG_WINDOW_SLOTS; k++)
        if (w.slots[k].start != INT64_MIN && w.slots[k].start <= t &&
            t - w.slots[k].start < w.window_ms) {
          n += w.slots[k].cell[MG_CELL_ALL].requests;
          e += w.slots[k].cell[MG_CELL_ALL].errors;
        }
      assert_int_equal(s.requests, n);
      assert_int_equal(s.errors, e);
    }
  }
  mg_window_sum(&w, t + 60000, &s);
  assert_int_equal(s.requests, 0);
  mg_window_resize(&w, 120000);
  mg_window_sum(&w, t, &s);
  assert_int_equal(s.requests, 0);
  assert_int_equal(w.total[MG_CELL_ALL].requests, 20000);
}

static void test_guards_json(void **state) {
  struct fx *x = *state;
  cJSON *j, *it;
  int n = 0, seq = 0;
  own_ramp(x, "{'chat':{'ramp':{'interval_ms':10000,'steps':["
              "{'weight':10}, {'weight':100}]},"
              "'guards':{'min_requests':50,'max_error_rate':0.1,"
              "'max_error_ratio':2}}}");
  x->now += 10000;
  traffic(x, 100, 1, 900, 9, 50);
  mg_window_read(&x->wt, x->now, &x->vt);
  mg_window_read(&x->wc, x->now, &x->vc);
  j = mg_ramp_guards_json(x->rc, &x->st, &x->vt, &x->vc);
  assert_non_null(j);
  cJSON_ArrayForEach(it, j) {
    n++;
    if (cJSON_IsTrue(cJSON_GetObjectItem(it, "breached")))
      fail_msg("nothing is breached");
    if (cJSON_GetObjectItem(it, "statistic"))
      seq++;
  }
  /* traffic without inputs: only "all" holds it */
  assert_int_equal(n, 2);
  assert_int_equal(seq, 1);
  cJSON_Delete(j);
}

static void test_new_config_errors(void **state) {
  struct fx *x = *state;
  const char *bad =
      "{'chat':{'ramp':{'steps':["
      "{'weight':10,'inputs':{'max_chars':8000}},"
      "{'weight':20,'inputs':{'max_chars':2000}},"
      "{'weight':30,'inputs':{},'guards':{'window_ms':1000}},"
      "{'weight':40,'inputs':{'max_chars':100},'min_units':-1}],"
      "'cells':{'chars':[10,5]}},"
      "'guards':{'alpha':0.9,'detect_ratio':1,'max_cost_ratio':0,"
      "'feedback':{'thumbs':{'min':0.5},'rating':{},"
      "'accuracy':{'min':0.9,'max':0.8},'complaint':{'max_ratio':-2}}}}}";
  const char *want[] = {
      "$.flags.chat.ramp.steps[1].inputs: a ramp only widens its inputs",
      "$.flags.chat.ramp.steps[2].inputs: give max_chars and/or max_tools",
      "$.flags.chat.ramp.steps[2].guards.window_ms: unknown key",
      "$.flags.chat.ramp.steps[3].min_units: must be between 0 and",
      "$.flags.chat.ramp.cells.chars: must be an array of 1 to 3 increasing",
      "$.flags.chat.guards.alpha: must be between",
      "$.flags.chat.guards.detect_ratio: must be between",
      "$.flags.chat.guards.max_cost_ratio: must be between",
      "$.flags.chat.guards.feedback.thumbs: no feedback metric \"thumbs\" is "
      "declared in feedback.metrics",
      "$.flags.chat.guards.feedback.rating: give min, max, max_ratio or "
      "min_ratio",
      "$.flags.chat.guards.feedback.accuracy.min: must be below max",
      "$.flags.chat.guards.feedback.complaint.max_ratio: must be between",
      NULL};
  struct mg_cfg_errors e;
  size_t i, k;
  mg_cfg_errors_init(&e);
  own_ramp_e(x, bad, &e);
  for (k = 0; k < e.n; k++)
    print_message("  %s\n", e.msgs[k]);
  for (i = 0; want[i]; i++) {
    bool found = false;
    for (k = 0; k < e.n; k++)
      found |= strstr(e.msgs[k], want[i]) != NULL;
    if (!found)
      fail_msg("missing error: %s", want[i]);
  }
  mg_cfg_errors_free(&e);
  /* too many distinct limits for the cells */
  mg_cfg_errors_init(&e);
  own_ramp_e(x, "{'chat':{'ramp':{'steps':["
                "{'weight':1,'inputs':{'max_chars':100}},"
                "{'weight':2,'inputs':{'max_chars':200}},"
                "{'weight':3,'inputs':{'max_chars':300}},"
                "{'weight':4,'inputs':{'max_chars':400}},{'weight':5}]}}}",
             &e);
  assert_int_equal(e.n, 1);
  assert_non_null(strstr(e.msgs[0], "$.flags.chat.ramp.cells: the steps' "
                                    "inputs.max_chars make 5 input cells"));
  mg_cfg_errors_free(&e);
  /* a feedback guard without declared metrics (mg_ramps_parse) */
  {
    cJSON *j = cJSON_Parse("{\"chat\":{\"ramp\":{\"steps\":[{\"weight\":5}]},"
                           "\"guards\":{\"feedback\":{\"complaint\":{"
                           "\"max_ratio\":3}}}}}");
    struct mg_ramps r;
    mg_cfg_errors_init(&e);
    mg_ramps_parse(&r, j, &x->cfg->flags, &e);
    assert_int_equal(e.n, 1);
    assert_non_null(strstr(e.msgs[0], "no feedback metric \"complaint\""));
    mg_ramps_free(&r);
    mg_cfg_errors_free(&e);
    cJSON_Delete(j);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_healthy_walks_every_step, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_hold_is_respected, setup, teardown),
      cmocka_unit_test_setup_teardown(
          test_error_ratio_rolls_back_within_one_interval, setup, teardown),
      cmocka_unit_test_setup_teardown(test_error_ratio_needs_evidence, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_equal_error_rates_do_not_roll_back,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_p95_breach, setup, teardown),
      cmocka_unit_test_setup_teardown(test_too_little_traffic_no_action, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_consecutive_checks, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_interval, setup, teardown),
      cmocka_unit_test_setup_teardown(test_restart_resumes_step, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_rolled_back_stays_after_restart,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_pause_resume_promote, setup,
                                      teardown),
      cmocka_unit_test(test_window_slides),
      cmocka_unit_test(test_config_errors),
#define B(t) cmocka_unit_test_setup_teardown(t, setup_base, teardown)
      B(test_long_input_cell_absolute),
      B(test_long_input_cell_sequential),
      B(test_gates_and_cells),
      B(test_step_exit_criteria),
      B(test_step_guards),
      B(test_feedback_guards),
      B(test_cost_guard),
      B(test_evidence_persists),
      B(test_epochs),
      cmocka_unit_test(test_window_views_merge),
      cmocka_unit_test(test_window_running_sums),
      B(test_guards_json),
      B(test_new_config_errors),
#undef B
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
