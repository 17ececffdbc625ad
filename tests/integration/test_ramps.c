/* test_ramps.c - automatic ramps and rollback guards end to end, against the
 * mock model server (DESIGN.md, "Automatic ramps and rollback"):
 *
 * - the treatment starts failing half-way through a ramp: it is rolled back
 *   without one request failing on the client side (the treatment's
 *   fallback covers every failure in between), and what an SRE sees then
 *   in /metrics, GET /admin/state, the decision log and the operational log;
 * - the p95 latency guard rolls back a treatment that is slow but correct;
 * - ramp state survives a restart (same step, same start of the step, same
 *   traffic split, user by user), a rolled-back flag stays rolled back
 *   after a restart, and a reload (SIGHUP or the admin API) keeps the step.
 *
 * Client traffic comes from threads on keep-alive connections, users in
 * turn, so that guard windows fill within a second. Every wait is bounded. */
#define _GNU_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"
#include "test_ramps.h"

/* Phases of the load in the rollback test. */
enum { BEFORE, FAILING, AFTER };

/* ---- the headline: a failing treatment rolled back, no client error ------ */

static void test_rollback_covered_by_fallbacks(void **state) {
  struct tenv *e = *state;
  struct load *l;
  struct load_counts b, f, a;
  cJSON *st, *evs;
  const cJSON *r, *ev;
  char *m, dl[400];
  double t_fail, t_rb, observed;
  long new_calls, new_calls2;
  int step_at_failure, i;

  gate_ramp(e,
            "{'variant':'new','interval_ms':100,'steps':["
            "{'weight':10,'hold_ms':700},{'weight':25,'hold_ms':700},"
            "{'weight':50,'hold_ms':600000},{'weight':100}]}",
            "{'window_ms':2000,'min_requests':30,'consecutive':2,"
            "'max_error_rate':0.2}",
            "");
  l = load_start(e->gate.port, 4, 1000, 200);

  /* The ramp advances by itself while the treatment is healthy: two steps,
   * the second one held for long. */
  st = wait_ramp(e, "running", 2, 15000 * SLOW);
  r = ramp_in(st);
  assert_true(num_at(r, "weight") == 50);
  assert_true(weight_in(st, "new") == 50 && weight_in(st, "old") == 50);
  step_at_failure = (int)num_at(r, "step");
  assert_int_equal(step_at_failure, 2);
  assert_true(num_at(r, "window.new.requests") >= 30);
  assert_true(num_at(r, "window.new.error_rate") == 0);
  cJSON_Delete(st);
  b = load_counts(l, BEFORE);
  assert_true(b.treat > 0 && b.served_new > 0 && b.control > 0);
  assert_int_equal(b.covered, 0);

  /* Half-way: the treatment's model starts failing. */
  mock_behave(e, "{'model':'m-new','mode':'status','status':500}");
  load_phase(l, FAILING);
  t_fail = mg_h_now_ms();
  st = wait_ramp(e, "rolled_back", 0, 10000 * SLOW);
  t_rb = mg_h_now_ms();
  load_phase(l, AFTER);
  /* What the SRE sees in the metrics, read at once (the window slides). */
  m = metrics(e->gate.port);

  /* GET /admin/state: why, when, and the guard's inputs. */
  r = ramp_in(st);
  assert_string_equal(str_at(r, "status"), "rolled_back");
  assert_int_equal((int)num_at(r, "step"), step_at_failure);
  assert_true(num_at(r, "weight") == 0);
  assert_int_equal((int)num_at(r, "failures"), 2);
  assert_string_equal(str_at(r, "variant"), "new");
  assert_string_equal(str_at(r, "rollback.guard"), "max_error_rate");
  observed = num_at(r, "rollback.observed");
  assert_true(observed > 0.2 && observed <= 1);
  assert_true(num_at(r, "rollback.threshold") == 0.2);
  assert_true(strlen(str_at(r, "rollback.at")) >= 20);
  assert_int_equal(cJSON_GetArraySize(at(r, "steps")), 4);
  assert_true(num_at(r, "window.new.requests") >= 30);
  assert_true(num_at(r, "window.new.error_rate") > 0.2);
  /* Every failure was covered by the fallback: errors of the variant's
   * own target are fallbacks. */
  assert_true(num_at(r, "window.new.fallback_rate") > 0.2);
  assert_true(num_at(r, "window.old.error_rate") == 0);
  assert_true(weight_in(st, "new") == 0 && weight_in(st, "old") == 100);
  cJSON_Delete(st);

  /* /metrics. */
  assert_true(series(m, M_ROLLED) == 1);
  assert_true(series(m, M_ROLLBACKS("max_error_rate")) == 1);
  assert_true(series(m, M_STEP) == step_at_failure);
  assert_true(series(m, M_WEIGHT("new")) == 0);
  assert_true(series(m, M_WEIGHT("old")) == 100);
  assert_true(series(m, M_WIN_REQ("new")) >= 30);
  assert_true(series(m, M_WIN_ERR("new")) > 0.2);
  assert_true(series(m, M_WIN_REQ("old")) > 0);
  assert_true(series(m, M_WIN_ERR("old")) == 0);
  assert_true(series(m, M_WIN_P95("new")) > 0);
  assert_true(series(m, "modelgate_fallbacks_total{target=\"new\",tier=\"old\","
                        "reason=\"5xx\"}") > 0);
  free(m);

  /* From the moment the rollback is visible, nobody is routed to the
   * treatment, and its upstream sees no more calls. */
  load_wait(l, AFTER, 200, 10000 * SLOW);
  new_calls = mock_requests(e, "m-new");
  load_wait(l, AFTER, 700, 10000 * SLOW);
  new_calls2 = mock_requests(e, "m-new");
  load_stop(l);
  b = load_counts(l, BEFORE);
  f = load_counts(l, FAILING);
  a = load_counts(l, AFTER);
  fprintf(stderr,
          "rollback %.0f ms after the failure began; answers: %ld before "
          "(%ld new), %ld failing (%ld new, %ld covered), %ld after (%ld "
          "new)\n",
          t_rb - t_fail, b.total, b.treat, f.total, f.treat, f.covered, a.total,
          a.treat);

  /* Not a single request failed on the client side, over the whole run. */
  if (b.bad || f.bad || a.bad)
    fail_msg("%ld/%ld/%ld client-side failures; first: %s", b.bad, f.bad, a.bad,
             l->first_bad);
  /* The failures in between were real, and covered by the fallback. */
  assert_true(f.covered > 0);
  assert_int_equal(a.covered, 0);
  assert_int_equal(f.served_new, 0);
  assert_int_equal(a.treat, 0);
  assert_int_equal(a.served_new, 0);
  assert_int_equal(a.control, a.total);
  assert_int_equal(a.rollout, a.total);
  assert_true(new_calls2 == new_calls);
  assert_true(t_rb - t_fail < 8000.0 * SLOW);

  /* The decision log: the two automatic steps, then the rollback. */
  evs = wait_events(e, "rollback", 1, 5000 * SLOW);
  assert_int_equal(cJSON_GetArraySize(evs), 1);
  ev = cJSON_GetArrayItem(evs, 0);
  check_event(ev, "rollback", "rolled_back", step_at_failure, 0);
  assert_string_equal(str_at(ev, "guard"), "max_error_rate");
  assert_true(fabs(num_at(ev, "observed") - observed) < 1e-5);
  assert_true(num_at(ev, "threshold") == 0.2);
  cJSON_Delete(evs);
  evs = log_events(e, NULL);
  {
    int nsteps = 0, rollback_at = -1;
    for (i = 0; i < cJSON_GetArraySize(evs); i++) {
      const cJSON *x = cJSON_GetArrayItem(evs, i);
      if (strcmp(str_at(x, "event"), "ramp_step") == 0) {
        nsteps++;
        check_event(x, "ramp_step", "running", nsteps, nsteps == 1 ? 25 : 50);
        assert_true(rollback_at < 0);
      } else if (strcmp(str_at(x, "event"), "rollback") == 0) {
        rollback_at = i;
      }
    }
    assert_int_equal(nsteps, 2);
    assert_true(rollback_at > 0);
  }
  cJSON_Delete(evs);

  /* The operational log says it in words. */
  assert_true(file_contains(e->gate.log_file,
                            "ramp of flag chat: ROLLED BACK new to 0% "
                            "(max_error_rate: observed"));

  /* The decision records show treatment requests answered by the control's
   * target after a 5xx, and no request that failed for its client. */
  gate_down(&e->gate);
  dlog_path(e, dl, sizeof(dl));
  {
    size_t len;
    char *s = mg_h_read_file(dl, &len), *line, *save = NULL;
    long covered = 0, records = 0, at_zero = 0, at_half = 0;
    assert_non_null(s);
    for (line = strtok_r(s, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
      if (strstr(line, "\"event\":"))
        continue;
      records++;
      if (strstr(line, "\"error\":true") || !strstr(line, "\"status\":200"))
        fail_msg("a decision record of a failed request: %s", line);
      if (strstr(line, "\"variant\":\"new\"") &&
          strstr(line, "\"served_by\":\"old\"") &&
          strstr(line, "\"fallback_reason\":\"5xx\""))
        covered++;
      /* The weights in force when each request was routed. */
      if (strstr(line, "\"weights\":{\"old\":100,\"new\":0}"))
        at_zero++;
      if (strstr(line, "\"weights\":{\"old\":50,\"new\":50}"))
        at_half++;
    }
    free(s);
    assert_true(records >= b.total + f.total + a.total);
    /* (A request sent just before the failure began may have met it.) */
    assert_int_equal(covered, b.covered + f.covered + a.covered);
    assert_true(at_zero >= a.total);
    assert_true(at_half > 0);
  }
}

/* The same with the treatment's circuit breaker as configured by default:
 * once it opens, the failures cost no upstream call, and they still count
 * against the treatment (an open breaker is its own target failing). */
static void test_rollback_with_breaker(void **state) {
  struct tenv *e = *state;
  struct load *l;
  struct load_counts b, f, a;
  cJSON *st, *evs;
  char *cfg;
  long calls;

  cfg = ramp_config_t(e,
                      "{'variant':'new','interval_ms':100,'steps':["
                      "{'weight':20,'hold_ms':500},"
                      "{'weight':50,'hold_ms':600000},{'weight':100}]}",
                      "{'window_ms':2000,'min_requests':30,'consecutive':3,"
                      "'max_error_rate':0.2}",
                      "", "");
  assert_int_equal(mg_h_write_file(e->config, cfg), 0);
  free(cfg);
  gate_run(e);
  l = load_start(e->gate.port, 4, 1000, 300);
  st = wait_ramp(e, "running", 1, 15000 * SLOW);
  cJSON_Delete(st);
  load_phase(l, FAILING);
  calls = mock_requests(e, "m-new");
  mock_behave(e, "{'model':'m-new','mode':'status','status':500}");
  st = wait_ramp(e, "rolled_back", 0, 10000 * SLOW);
  load_phase(l, AFTER);
  assert_string_equal(str_at(ramp_in(st), "rollback.guard"), "max_error_rate");
  assert_int_equal((int)num_at(ramp_in(st), "step"), 1);
  assert_int_equal((int)num_at(ramp_in(st), "failures"), 3);
  cJSON_Delete(st);
  load_wait(l, AFTER, 300, 10000 * SLOW);
  load_stop(l);
  b = load_counts(l, BEFORE);
  f = load_counts(l, FAILING);
  a = load_counts(l, AFTER);
  if (b.bad || f.bad || a.bad)
    fail_msg("%ld/%ld/%ld client-side failures; first: %s", b.bad, f.bad, a.bad,
             l->first_bad);
  /* The breaker opened (five failures in a row by default) and spared the
   * failing upstream most of the treatment's requests. */
  assert_true(f.breaker_open > 0);
  assert_true(f.covered > 0);
  assert_true(mock_requests(e, "m-new") - calls < f.treat);
  assert_int_equal(a.treat, 0);
  assert_int_equal(a.served_new, 0);
  evs = wait_events(e, "breaker", 1, 5000 * SLOW);
  cJSON_Delete(evs);
  evs = wait_events(e, "rollback", 1, 5000 * SLOW);
  check_event(cJSON_GetArrayItem(evs, 0), "rollback", "rolled_back", 1, 0);
  cJSON_Delete(evs);
}

/* ---- the p95 guard: slow but correct is still a reason to roll back -------
 */

static void test_p95_guard(void **state) {
  struct tenv *e = *state;
  struct load *l;
  struct load_counts c;
  cJSON *st, *evs;
  const cJSON *r;

  gate_ramp(e,
            "{'variant':'new','interval_ms':100,'steps':["
            "{'weight':50,'hold_ms':600000},{'weight':100}]}",
            "{'window_ms':2000,'min_requests':10,'max_error_rate':0.5,"
            "'max_p95_ms':150}",
            "");
  mock_behave(e, "{'model':'m-new','mode':'slow','ms':400}");
  l = load_start(e->gate.port, 8, 1000, 0);
  st = wait_ramp(e, "rolled_back", 0, 15000 * SLOW);
  load_stop(l);
  r = ramp_in(st);
  assert_string_equal(str_at(r, "rollback.guard"), "max_p95_ms");
  assert_true(num_at(r, "rollback.observed") >= 400);
  assert_true(num_at(r, "rollback.threshold") == 150);
  /* Slow is not an error: the treatment's target answered every time. */
  assert_true(num_at(r, "window.new.error_rate") == 0);
  assert_true(num_at(r, "window.new.p95_ms") >= 400);
  assert_true(metric(e->gate.port, M_ROLLBACKS("max_p95_ms")) == 1);
  assert_true(metric(e->gate.port, M_WIN_P95("new")) >= 400);
  cJSON_Delete(st);
  c = load_counts(l, 0);
  if (c.bad)
    fail_msg("%ld client-side failures; first: %s", c.bad, l->first_bad);
  assert_true(c.served_new > 0);
  assert_int_equal(c.covered, 0);
  evs = wait_events(e, "rollback", 1, 5000 * SLOW);
  check_event(cJSON_GetArrayItem(evs, 0), "rollback", "rolled_back", 0, 0);
  assert_string_equal(str_at(cJSON_GetArrayItem(evs, 0), "guard"),
                      "max_p95_ms");
  cJSON_Delete(evs);
}

/* ---- restarts and reloads
 * ---------------------------------------------------- */

/* The saved state of flag chat's ramp in the state file. */
static cJSON *saved_ramp(struct tenv *e) {
  char p[400];
  char *s;
  cJSON *j, *rr;
  state_path(e, p, sizeof(p));
  s = mg_h_read_file(p, NULL);
  if (s == NULL)
    fail_msg("no state file %s", p);
  j = cJSON_Parse(s);
  free(s);
  assert_non_null(j);
  rr = cJSON_DetachItemFromObjectCaseSensitive(
      cJSON_GetObjectItemCaseSensitive(j, "ramps"), "chat");
  cJSON_Delete(j);
  if (rr == NULL)
    fail_msg("the state file has no ramps.chat");
  return rr;
}

#define SPLIT_USERS 200

/* A restart mid-ramp resumes at the same step, with the same start of the
 * step, and every user stays in the arm they were in. */
static void test_restart_mid_ramp(void **state) {
  struct tenv *e = *state;
  struct load *l;
  cJSON *st, *saved;
  char started[64], before[SPLIT_USERS + 1], after[SPLIT_USERS + 1];
  char old_log[400];
  int n_before, n_after;

  gate_ramp(e,
            "{'variant':'new','interval_ms':100,'steps':["
            "{'weight':20,'hold_ms':500},{'weight':50,'hold_ms':600000},"
            "{'weight':100}]}",
            "{'window_ms':2000,'min_requests':20,'max_error_rate':0.5}", "");
  l = load_start(e->gate.port, 4, 1000, 500);
  st = wait_ramp(e, "running", 1, 15000 * SLOW);
  load_stop(l);
  if (load_counts(l, 0).bad)
    fail_msg("client-side failures: %s", l->first_bad);
  snprintf(started, sizeof(started), "%s", str_at(ramp_in(st), "step_started"));
  cJSON_Delete(st);
  n_before = split_of(e, SPLIT_USERS, before);
  /* Half the users, give or take the hash. */
  assert_true(n_before > SPLIT_USERS * 0.35 && n_before < SPLIT_USERS * 0.65);

  gate_down(&e->gate);
  saved = saved_ramp(e);
  assert_string_equal(str_at(saved, "status"), "running");
  assert_int_equal((int)num_at(saved, "step"), 1);
  assert_string_equal(str_at(saved, "step_started"), started);
  cJSON_Delete(saved);

  snprintf(old_log, sizeof(old_log), "%s", e->gate.log_file);
  gate_run(e);
  st = admin_state(e);
  assert_string_equal(str_at(ramp_in(st), "status"), "running");
  assert_int_equal((int)num_at(ramp_in(st), "step"), 1);
  assert_string_equal(str_at(ramp_in(st), "step_started"), started);
  assert_true(num_at(ramp_in(st), "weight") == 50);
  assert_true(weight_in(st, "new") == 50 && weight_in(st, "old") == 50);
  cJSON_Delete(st);
  assert_true(file_contains(e->gate.log_file,
                            "ramp of flag chat: resumed at step 1 (running)"));
  n_after = split_of(e, SPLIT_USERS, after);
  assert_int_equal(n_after, n_before);
  assert_string_equal(after, before);
  assert_true(metric(e->gate.port, M_STEP) == 1);
  assert_true(metric(e->gate.port, M_WEIGHT("new")) == 50);

  /* Several checks later: still step 1 of the same ramp, nothing logged
   * as a new step or a restart. */
  mg_h_sleep_ms(500);
  st = admin_state(e);
  assert_int_equal((int)num_at(ramp_in(st), "step"), 1);
  assert_string_equal(str_at(ramp_in(st), "step_started"), started);
  cJSON_Delete(st);
  {
    cJSON *evs = log_events(e, "ramp_step");
    assert_int_equal(cJSON_GetArraySize(evs), 1);
    cJSON_Delete(evs);
    evs = log_events(e, "ramp_restarted");
    assert_int_equal(cJSON_GetArraySize(evs), 0);
    cJSON_Delete(evs);
  }

  /* Paused, restarted: still paused, since the same moment. */
  {
    char paused_at[64];
    assert_int_equal(ramp_action_state(e, "pause", &st), 200);
    snprintf(paused_at, sizeof(paused_at), "%s",
             str_at(ramp_in(st), "paused_at"));
    cJSON_Delete(st);
    gate_down(&e->gate);
    gate_run(e);
    st = admin_state(e);
    assert_string_equal(str_at(ramp_in(st), "status"), "paused");
    assert_int_equal((int)num_at(ramp_in(st), "step"), 1);
    assert_string_equal(str_at(ramp_in(st), "paused_at"), paused_at);
    assert_string_equal(str_at(ramp_in(st), "step_started"), started);
    cJSON_Delete(st);
    assert_int_equal(ramp_action(e, "resume"), 200);
    st = admin_state(e);
    assert_string_equal(str_at(ramp_in(st), "status"), "running");
    assert_int_equal((int)num_at(ramp_in(st), "step"), 1);
    cJSON_Delete(st);
  }
}

/* When the first step began survives a restart too, even when nothing has
 * changed yet: otherwise every restart would start the first hold again,
 * and a gate restarted more often than that hold would never advance. */
static void test_restart_keeps_first_step_start(void **state) {
  struct tenv *e = *state;
  cJSON *st;
  char started[64], after[64];

  gate_ramp(e,
            "{'variant':'new','interval_ms':100,'steps':["
            "{'weight':20,'hold_ms':600000},{'weight':100}]}",
            "{'window_ms':2000,'min_requests':20,'max_error_rate':0.5}", "");
  st = admin_state(e);
  assert_int_equal((int)num_at(ramp_in(st), "step"), 0);
  snprintf(started, sizeof(started), "%s", str_at(ramp_in(st), "step_started"));
  cJSON_Delete(st);
  mg_h_sleep_ms(300);
  gate_down(&e->gate);
  gate_run(e);
  st = admin_state(e);
  assert_int_equal((int)num_at(ramp_in(st), "step"), 0);
  snprintf(after, sizeof(after), "%s", str_at(ramp_in(st), "step_started"));
  cJSON_Delete(st);
  if (strcmp(after, started) != 0)
    fail_msg("step 0 began at %s before the restart, at %s after it", started,
             after);
}

/* A rolled-back flag stays rolled back after a restart: why and when are
 * kept, and nobody is routed to the treatment, even once it is healthy
 * again. The error-ratio guard fires here (the control is healthy). */
static void test_rolled_back_survives_restart(void **state) {
  struct tenv *e = *state;
  struct load *l;
  cJSON *st, *saved;
  char at_s[64], split[SPLIT_USERS + 1];
  double observed;
  long new_calls;

  gate_ramp(e,
            "{'variant':'new','interval_ms':100,'steps':["
            "{'weight':50,'hold_ms':600000},{'weight':100}]}",
            "{'window_ms':2000,'min_requests':20,'max_error_ratio':2}", "");
  mock_behave(e, "{'model':'m-new','mode':'status','status':503}");
  l = load_start(e->gate.port, 4, 1000, 500);
  st = wait_ramp(e, "rolled_back", 0, 15000 * SLOW);
  load_stop(l);
  if (load_counts(l, 0).bad)
    fail_msg("client-side failures: %s", l->first_bad);
  assert_true(load_counts(l, 0).covered > 0);
  assert_string_equal(str_at(ramp_in(st), "rollback.guard"), "max_error_ratio");
  observed = num_at(ramp_in(st), "rollback.observed");
  assert_true(observed > 2);
  assert_true(num_at(ramp_in(st), "rollback.threshold") == 2);
  snprintf(at_s, sizeof(at_s), "%s", str_at(ramp_in(st), "rollback.at"));
  cJSON_Delete(st);

  gate_down(&e->gate);
  saved = saved_ramp(e);
  assert_string_equal(str_at(saved, "status"), "rolled_back");
  assert_string_equal(str_at(saved, "rollback.guard"), "max_error_ratio");
  cJSON_Delete(saved);

  /* The treatment is fixed meanwhile; only an explicit restart of the
   * ramp would expose users to it again. */
  assert_int_equal(mg_h_mock_reset(e->mock.port), 0);
  gate_run(e);
  st = admin_state(e);
  assert_string_equal(str_at(ramp_in(st), "status"), "rolled_back");
  assert_true(num_at(ramp_in(st), "weight") == 0);
  assert_int_equal((int)num_at(ramp_in(st), "step"), 0);
  assert_string_equal(str_at(ramp_in(st), "rollback.guard"), "max_error_ratio");
  assert_true(fabs(num_at(ramp_in(st), "rollback.observed") - observed) <
              1e-9 * observed);
  assert_true(num_at(ramp_in(st), "rollback.threshold") == 2);
  assert_string_equal(str_at(ramp_in(st), "rollback.at"), at_s);
  assert_true(weight_in(st, "new") == 0 && weight_in(st, "old") == 100);
  cJSON_Delete(st);
  assert_true(file_contains(e->gate.log_file,
                            "ramp of flag chat: resumed at step 0 "
                            "(rolled_back)"));

  new_calls = mock_requests(e, "m-new");
  assert_int_equal(split_of(e, SPLIT_USERS, split), 0);
  mg_h_sleep_ms(400); /* a few checks with a full, healthy window */
  assert_int_equal(split_of(e, SPLIT_USERS, split), 0);
  assert_int_equal(mock_requests(e, "m-new"), new_calls);
  st = admin_state(e);
  assert_string_equal(str_at(ramp_in(st), "status"), "rolled_back");
  cJSON_Delete(st);
  assert_true(metric(e->gate.port, M_ROLLED) == 1);
  assert_true(metric(e->gate.port, M_WEIGHT("new")) == 0);

  /* And after a reload. */
  assert_int_equal(kill(e->gate.pid, SIGHUP), 0);
  cJSON_Delete(wait_events(e, "reload", 1, 5000 * SLOW));
  st = admin_state(e);
  assert_true(num_at(st, "config.reloads") == 1);
  assert_string_equal(str_at(ramp_in(st), "status"), "rolled_back");
  assert_string_equal(str_at(ramp_in(st), "rollback.at"), at_s);
  cJSON_Delete(st);
  assert_int_equal(split_of(e, SPLIT_USERS, split), 0);
}

/* A reload, by SIGHUP or through the admin API, keeps the step, when it
 * began, and a pause; a changed guard window does not reset the ramp. */
static void test_reload_keeps_step(void **state) {
  struct tenv *e = *state;
  struct load *l;
  struct mg_h_resp r;
  cJSON *st, *evs;
  char started[64], before[SPLIT_USERS + 1], after[SPLIT_USERS + 1];
  char *cfg;
  double deadline;
  int n;

  gate_ramp(e,
            "{'variant':'new','interval_ms':100,'steps':["
            "{'weight':20,'hold_ms':500},{'weight':50,'hold_ms':600000},"
            "{'weight':100}]}",
            "{'window_ms':2000,'min_requests':20,'max_error_rate':0.5}", "");
  l = load_start(e->gate.port, 4, 1000, 500);
  st = wait_ramp(e, "running", 1, 15000 * SLOW);
  load_stop(l);
  if (load_counts(l, 0).bad)
    fail_msg("client-side failures: %s", l->first_bad);
  snprintf(started, sizeof(started), "%s", str_at(ramp_in(st), "step_started"));
  cJSON_Delete(st);
  n = split_of(e, SPLIT_USERS, before);

  /* SIGHUP with the same file. */
  assert_int_equal(kill(e->gate.pid, SIGHUP), 0);
  deadline = mg_h_now_ms() + 5000 * SLOW;
  for (;;) {
    st = admin_state(e);
    if (num_at(st, "config.reloads") >= 1)
      break;
    cJSON_Delete(st);
    if (mg_h_now_ms() > deadline)
      fail_msg("SIGHUP did not reload");
    mg_h_sleep_ms(20);
  }
  assert_string_equal(str_at(ramp_in(st), "status"), "running");
  assert_int_equal((int)num_at(ramp_in(st), "step"), 1);
  assert_string_equal(str_at(ramp_in(st), "step_started"), started);
  assert_true(weight_in(st, "new") == 50);
  cJSON_Delete(st);
  assert_int_equal(split_of(e, SPLIT_USERS, after), n);
  assert_string_equal(after, before);

  /* Paused, then reloaded through the admin API with another guard
   * window: still paused at step 1. */
  assert_int_equal(ramp_action(e, "pause"), 200);
  cfg = ramp_config(
      e,
      "{'variant':'new','interval_ms':100,'steps':["
      "{'weight':20,'hold_ms':500},{'weight':50,'hold_ms':600000},"
      "{'weight':100}]}",
      "{'window_ms':3000,'min_requests':20,'max_error_rate':0.5}", "");
  assert_int_equal(mg_h_write_file(e->config, cfg), 0);
  free(cfg);
  admin(e, "POST", "/admin/reload", "", &r);
  if (r.status != 200)
    fail_msg("POST /admin/reload: %d %s", r.status, r.body);
  st = json_body(&r);
  mg_h_resp_free(&r);
  assert_true(num_at(st, "config.reloads") == 2);
  assert_string_equal(str_at(ramp_in(st), "status"), "paused");
  assert_int_equal((int)num_at(ramp_in(st), "step"), 1);
  assert_string_equal(str_at(ramp_in(st), "step_started"), started);
  assert_true(weight_in(st, "new") == 50);
  cJSON_Delete(st);
  assert_int_equal(split_of(e, SPLIT_USERS, after), n);
  assert_string_equal(after, before);
  assert_int_equal(ramp_action(e, "resume"), 200);
  st = admin_state(e);
  assert_string_equal(str_at(ramp_in(st), "status"), "running");
  assert_int_equal((int)num_at(ramp_in(st), "step"), 1);
  cJSON_Delete(st);

  evs = wait_events(e, "reload", 2, 5000 * SLOW);
  cJSON_Delete(evs);
  evs = log_events(e, "ramp_restarted");
  assert_int_equal(cJSON_GetArraySize(evs), 0);
  cJSON_Delete(evs);
  evs = log_events(e, "ramp_step");
  assert_int_equal(cJSON_GetArraySize(evs), 1);
  cJSON_Delete(evs);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, tenv_setup, ramp_teardown)
  const struct CMUnitTest tests[] = {
      T(test_rollback_covered_by_fallbacks),
      T(test_rollback_with_breaker),
      T(test_p95_guard),
      T(test_restart_mid_ramp),
      T(test_restart_keeps_first_step_start),
      T(test_rolled_back_survives_restart),
      T(test_reload_keeps_step),
  };
#undef T
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
