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
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
