/* test_ramps_admin.c - the SRE's hands on a ramp, through the admin API,
 * against the real binary and the mock model server:
 *
 * - pause (no advance while paused, guards still on duty), resume (the
 *   hold does not run while paused);
 * - a manual step waits for a promote; promote by hand, to the end;
 * - rollback by hand: weight 0 at once, all traffic to the control;
 *   restart: back to step 0 with the windows cleared;
 * - PUT/DELETE weights refused with 409 while a ramp owns them; a kill wins
 *   over the ramp (even at 100%) and the ramp learns nothing meanwhile;
 * - only rollout requests feed the guard windows: a failing treatment
 *   reached through a targeting rule does not roll the ramp back.
 *
 * Each action is checked in its answer, in GET /admin/state, in the
 * traffic split and in the decision log's event lines. */
#define _GNU_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"
#include "test_ramps.h"

#define GUARDS "{'window_ms':2000,'min_requests':20,'max_error_rate':0.3}"

/* ---- pause and resume
 * ----------------------------------------------------------- */

static void test_pause_resume(void **state) {
  struct tenv *e = *state;
  struct load *l;
  cJSON *st, *evs;
  char started[64], started2[64];
  double t_pause, t_resume;
  int64_t s1, s2;

  gate_ramp(e,
            "{'variant':'new','interval_ms':100,'steps':["
            "{'weight':20,'hold_ms':1000},{'weight':50,'hold_ms':600000},"
            "{'weight':100}]}",
            GUARDS, "");
  st = admin_state(e);
  snprintf(started, sizeof(started), "%s", str_at(ramp_in(st), "step_started"));
  cJSON_Delete(st);

  /* Paused before its hold is over. */
  assert_int_equal(ramp_action_state(e, "pause", &st), 200);
  t_pause = mg_h_now_ms();
  assert_string_equal(str_at(ramp_in(st), "status"), "paused");
  assert_true(strlen(str_at(ramp_in(st), "paused_at")) >= 20);
  assert_true(weight_in(st, "new") == 20);
  cJSON_Delete(st);
  assert_int_equal(ramp_action(e, "pause"), 409);

  /* Traffic for longer than the hold, with full windows: no advance. */
  l = load_start(e->gate.port, 4, 1000, 500);
  mg_h_sleep_ms(1800);
  st = admin_state(e);
  assert_string_equal(str_at(ramp_in(st), "status"), "paused");
  assert_int_equal((int)num_at(ramp_in(st), "step"), 0);
  assert_true(num_at(ramp_in(st), "window.new.requests") >= 20);
  assert_true(weight_in(st, "new") == 20);
  cJSON_Delete(st);

  /* Resumed: the paused time is not counted in the hold. */
  assert_int_equal(ramp_action_state(e, "resume", &st), 200);
  t_resume = mg_h_now_ms();
  assert_string_equal(str_at(ramp_in(st), "status"), "running");
  assert_null(at(ramp_in(st), "paused_at"));
  snprintf(started2, sizeof(started2), "%s",
           str_at(ramp_in(st), "step_started"));
  cJSON_Delete(st);
  assert_int_equal(ramp_action(e, "resume"), 409);
  {
    char a[64], b[64];
    snprintf(a, sizeof(a), "%s", started);
    snprintf(b, sizeof(b), "%s", started2);
    /* Both are RFC 3339 with milliseconds, same day. */
    s1 = ((a[11] - '0') * 10 + (a[12] - '0')) * 3600000L +
         ((a[14] - '0') * 10 + (a[15] - '0')) * 60000L +
         ((a[17] - '0') * 10 + (a[18] - '0')) * 1000L + atoi(a + 20);
    s2 = ((b[11] - '0') * 10 + (b[12] - '0')) * 3600000L +
         ((b[14] - '0') * 10 + (b[15] - '0')) * 60000L +
         ((b[17] - '0') * 10 + (b[18] - '0')) * 1000L + atoi(b + 20);
    if (s2 < s1) /* midnight passed */
      s2 += 86400000L;
    /* Shifted by the time paused, give or take the admin round trips. */
    assert_true(s2 - s1 >= (int64_t)(t_resume - t_pause) - 200 * SLOW);
    assert_true(s2 - s1 <= (int64_t)(t_resume - t_pause) + 200 * SLOW);
    assert_true(s2 - s1 >= 1500);
  }
  st = wait_ramp(e, "running", 1, 10000 * SLOW);
  assert_true(weight_in(st, "new") == 50);
  cJSON_Delete(st);

  /* Guards still watch a paused ramp: a failure rolls it back. */
  assert_int_equal(ramp_action(e, "pause"), 200);
  mock_behave(e, "{'model':'m-new','mode':'status','status':500}");
  st = wait_ramp(e, "rolled_back", 0, 10000 * SLOW);
  load_stop(l);
  assert_string_equal(str_at(ramp_in(st), "rollback.guard"), "max_error_rate");
  assert_int_equal((int)num_at(ramp_in(st), "step"), 1);
  cJSON_Delete(st);
  if (load_counts(l, 0).bad)
    fail_msg("client-side failures: %s", l->first_bad);
  assert_int_equal(ramp_action(e, "resume"), 409);
  assert_int_equal(ramp_action(e, "pause"), 409);

  evs = wait_events(e, "rollback", 1, 5000 * SLOW);
  cJSON_Delete(evs);
  evs = log_events(e, NULL);
  assert_int_equal(cJSON_GetArraySize(evs), 5);
  check_event(cJSON_GetArrayItem(evs, 0), "ramp_paused", "paused", 0, 20);
  check_event(cJSON_GetArrayItem(evs, 1), "ramp_resumed", "running", 0, 20);
  check_event(cJSON_GetArrayItem(evs, 2), "ramp_step", "running", 1, 50);
  check_event(cJSON_GetArrayItem(evs, 3), "ramp_paused", "paused", 1, 50);
  check_event(cJSON_GetArrayItem(evs, 4), "rollback", "rolled_back", 1, 0);
  cJSON_Delete(evs);
}

/* ---- manual steps and promote
 * ---------------------------------------------------- */

static void test_manual_step_promote(void **state) {
  struct tenv *e = *state;
  struct load *l;
  cJSON *st, *evs;
  char split[101];
  int n;

  gate_ramp(e,
            "{'variant':'new','interval_ms':100,'steps':["
            "{'weight':20,'hold_ms':300,'manual':true},"
            "{'weight':60,'hold_ms':600000},{'weight':100}]}",
            GUARDS, "");
  l = load_start(e->gate.port, 4, 1000, 500);
  st = wait_ramp(e, "waiting", 0, 10000 * SLOW);
  assert_int_equal((int)num_at(ramp_in(st), "step"), 0);
  assert_true(weight_in(st, "new") == 20);
  /* The steps as configured. */
  assert_int_equal(cJSON_GetArraySize(at(ramp_in(st), "steps")), 3);
  assert_true(num_at(ramp_in(st), "steps.0.weight") == 20);
  assert_true(num_at(ramp_in(st), "steps.0.hold_ms") == 300);
  assert_true(cJSON_IsTrue(at(ramp_in(st), "steps.0.manual")));
  assert_true(cJSON_IsFalse(at(ramp_in(st), "steps.1.manual")));
  assert_true(num_at(ramp_in(st), "steps.2.weight") == 100);
  cJSON_Delete(st);
  /* It waits for a human, however long the traffic is green. */
  mg_h_sleep_ms(1000);
  st = admin_state(e);
  assert_string_equal(str_at(ramp_in(st), "status"), "waiting");
  assert_int_equal((int)num_at(ramp_in(st), "step"), 0);
  cJSON_Delete(st);
  load_stop(l);
  if (load_counts(l, 0).bad)
    fail_msg("client-side failures: %s", l->first_bad);

  /* Promoted out of the wait. */
  assert_int_equal(ramp_action_state(e, "promote", &st), 200);
  assert_string_equal(str_at(ramp_in(st), "status"), "running");
  assert_int_equal((int)num_at(ramp_in(st), "step"), 1);
  assert_true(weight_in(st, "new") == 60 && weight_in(st, "old") == 40);
  cJSON_Delete(st);
  n = split_of(e, 100, split);
  assert_true(n > 40 && n < 80);

  /* Promoted by hand out of a long hold: the last step, done. */
  assert_int_equal(ramp_action_state(e, "promote", &st), 200);
  assert_string_equal(str_at(ramp_in(st), "status"), "done");
  assert_int_equal((int)num_at(ramp_in(st), "step"), 2);
  assert_true(weight_in(st, "new") == 100 && weight_in(st, "old") == 0);
  cJSON_Delete(st);
  assert_int_equal(split_of(e, 100, split), 100);
  assert_true(metric(e->gate.port, M_STEP) == 2);
  assert_true(metric(e->gate.port, M_WEIGHT("new")) == 100);
  assert_int_equal(ramp_action(e, "promote"), 409);
  assert_int_equal(ramp_action(e, "pause"), 409);

  evs = wait_events(e, "ramp_step", 2, 5000 * SLOW);
  check_event(cJSON_GetArrayItem(evs, 0), "ramp_step", "running", 1, 60);
  check_event(cJSON_GetArrayItem(evs, 1), "ramp_step", "done", 2, 100);
  cJSON_Delete(evs);
  evs = log_events(e, "ramp_waiting");
  assert_int_equal(cJSON_GetArraySize(evs), 1);
  check_event(cJSON_GetArrayItem(evs, 0), "ramp_waiting", "waiting", 0, 20);
  cJSON_Delete(evs);
}

/* ---- rollback by hand, restart
 * ---------------------------------------------------- */

static void test_manual_rollback_and_restart(void **state) {
  struct tenv *e = *state;
  struct load *l;
  struct load_counts c;
  cJSON *st, *evs;
  char *m, split[101];

  gate_ramp(e,
            "{'variant':'new','interval_ms':100,'steps':["
            "{'weight':30,'hold_ms':300},{'weight':60,'hold_ms':600000},"
            "{'weight':100}]}",
            GUARDS, "");
  l = load_start(e->gate.port, 4, 1000, 500);
  st = wait_ramp(e, "running", 1, 10000 * SLOW);
  cJSON_Delete(st);
  assert_true(load_counts(l, 0).treat > 0);

  /* Rolled back by hand: 0% at once. Requests sent after the answer all
   * go to the control. */
  assert_int_equal(ramp_action_state(e, "rollback", &st), 200);
  load_phase(l, 1);
  assert_string_equal(str_at(ramp_in(st), "status"), "rolled_back");
  assert_int_equal((int)num_at(ramp_in(st), "step"), 1);
  assert_true(num_at(ramp_in(st), "weight") == 0);
  assert_string_equal(str_at(ramp_in(st), "rollback.guard"), "manual");
  assert_true(num_at(ramp_in(st), "rollback.observed") == 0);
  assert_true(num_at(ramp_in(st), "rollback.threshold") == 0);
  assert_true(weight_in(st, "new") == 0 && weight_in(st, "old") == 100);
  cJSON_Delete(st);
  load_wait(l, 1, 300, 10000 * SLOW);
  c = load_counts(l, 1);
  assert_int_equal(c.treat, 0);
  assert_int_equal(c.served_new, 0);
  m = metrics(e->gate.port);
  assert_true(series(m, M_ROLLED) == 1);
  assert_true(series(m, M_ROLLBACKS("manual")) == 1);
  assert_true(series(m, M_WEIGHT("new")) == 0);
  free(m);
  /* Nothing else to do with a rolled-back ramp but restart it. */
  assert_int_equal(ramp_action(e, "rollback"), 409);
  assert_int_equal(ramp_action(e, "promote"), 409);
  assert_int_equal(ramp_action(e, "pause"), 409);
  assert_int_equal(ramp_action(e, "resume"), 409);

  /* Restart: step 0, the windows emptied (old outcomes belong to the
   * version that was rolled back), traffic to the treatment again. */
  assert_int_equal(ramp_action_state(e, "restart", &st), 200);
  load_phase(l, 2);
  assert_string_equal(str_at(ramp_in(st), "status"), "running");
  assert_int_equal((int)num_at(ramp_in(st), "step"), 0);
  assert_true(num_at(ramp_in(st), "weight") == 30);
  assert_null(at(ramp_in(st), "rollback"));
  assert_true(num_at(ramp_in(st), "window.new.requests") == 0);
  assert_true(num_at(ramp_in(st), "window.old.requests") == 0);
  assert_true(weight_in(st, "new") == 30);
  cJSON_Delete(st);
  load_wait(l, 2, 300, 10000 * SLOW);
  assert_true(load_counts(l, 2).treat > 0);
  /* And it ramps again by itself. */
  st = wait_ramp(e, "running", 1, 10000 * SLOW);
  cJSON_Delete(st);
  load_stop(l);
  if (load_counts(l, 0).bad || load_counts(l, 1).bad || load_counts(l, 2).bad)
    fail_msg("client-side failures: %s", l->first_bad);
  assert_true(split_of(e, 100, split) > 30);

  evs = wait_events(e, "ramp_restarted", 1, 5000 * SLOW);
  check_event(cJSON_GetArrayItem(evs, 0), "ramp_restarted", "running", 0, 30);
  cJSON_Delete(evs);
  evs = log_events(e, "rollback");
  assert_int_equal(cJSON_GetArraySize(evs), 1);
  check_event(cJSON_GetArrayItem(evs, 0), "rollback", "rolled_back", 1, 0);
  assert_string_equal(str_at(cJSON_GetArrayItem(evs, 0), "guard"), "manual");
  assert_true(num_at(cJSON_GetArrayItem(evs, 0), "observed") == 0);
  assert_true(num_at(cJSON_GetArrayItem(evs, 0), "threshold") == 0);
  cJSON_Delete(evs);
}

/* ---- weights, kill, auth
 * ------------------------------------------------------------ */

static void test_weights_refused_kill_wins(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  cJSON *st;
  char split[101], v[64], why[64];
  int i;

  gate_ramp(e,
            "{'variant':'new','interval_ms':100,'steps':["
            "{'weight':50,'hold_ms':600000},{'weight':100}]}",
            GUARDS, "");

  /* The ramp owns the weights. */
  admin(e, "PUT", "/admin/flags/chat/weights", "{\"old\":90,\"new\":10}", &r);
  assert_error(&r, 409, "ramp_conflict");
  mg_h_resp_free(&r);
  admin(e, "DELETE", "/admin/flags/chat/weights", NULL, &r);
  assert_error(&r, 409, "ramp_conflict");
  mg_h_resp_free(&r);
  /* A mistyped action is an unknown URL, not a conflict. */
  admin(e, "POST", "/admin/flags/chat/ramp/pasue", NULL, &r);
  assert_error(&r, 404, "unknown_url");
  mg_h_resp_free(&r);
  st = admin_state(e);
  assert_true(weight_in(st, "new") == 50);
  assert_false(cJSON_IsTrue(at(st, "flags.chat.weights_override")));
  cJSON_Delete(st);

  /* Changes need the token; unknown flags are named. */
  assert_int_equal(mg_h_request(e->gate.admin_port, "POST",
                                "/admin/flags/chat/ramp/rollback", NULL, "", &r,
                                T_MS * SLOW),
                   0);
  assert_error(&r, 401, "unauthorized");
  mg_h_resp_free(&r);
  admin(e, "POST", "/admin/flags/nope/ramp/pause", "", &r);
  assert_error(&r, 404, "unknown_flag");
  mg_h_resp_free(&r);

  /* A kill wins: every request to the control, reason killed, and the
   * ramp's windows learn nothing from it. */
  admin(e, "POST", "/admin/flags/chat/kill", "", &r);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  for (i = 0; i < 100; i++) {
    struct mg_h_resp a;
    char *b = fmt("{\"model\":\"" ALIAS "\",\"user\":\"user-%d\","
                  "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                  i);
    assert_int_equal(mg_h_request(e->gate.port, "POST", "/v1/chat/completions",
                                  NULL, b, &a, T_MS * SLOW),
                     0);
    assert_int_equal(a.status, 200);
    assert_string_equal(mg_h_header(&a, "x-modelgate-variant", v, sizeof(v)),
                        "old");
    assert_string_equal(mg_h_header(&a, "x-modelgate-reason", why, sizeof(why)),
                        "killed");
    mg_h_resp_free(&a);
    free(b);
  }
  st = admin_state(e);
  assert_true(cJSON_IsTrue(at(st, "flags.chat.killed")));
  assert_true(num_at(ramp_in(st), "window.new.requests") == 0);
  assert_true(num_at(ramp_in(st), "window.old.requests") == 0);
  cJSON_Delete(st);

  /* Even a ramp promoted to 100% does not beat the kill. */
  assert_int_equal(ramp_action_state(e, "promote", &st), 200);
  assert_string_equal(str_at(ramp_in(st), "status"), "done");
  assert_true(cJSON_IsTrue(at(st, "flags.chat.killed")));
  cJSON_Delete(st);
  assert_int_equal(split_of(e, 100, split), 0);

  /* Unkilled: the ramp's weights are in force again. */
  admin(e, "POST", "/admin/flags/chat/unkill", "", &r);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  assert_int_equal(split_of(e, 100, split), 100);
}

/* ---- only rollout requests feed the guards
 * ------------------------------------------ */

static void test_only_rollout_feeds_guards(void **state) {
  struct tenv *e = *state;
  struct load *l;
  struct load_counts c;
  cJSON *st;

  gate_ramp(e,
            "{'variant':'new','interval_ms':100,'steps':["
            "{'weight':10,'hold_ms':600000},{'weight':100}]}",
            "{'window_ms':2000,'min_requests':10,'max_error_rate':0.1}",
            ",'rules':[{'if':{'attr':'pin','op':'eq','value':'new'},"
            "'variant':'new'}]");
  mock_behave(e, "{'model':'m-new','mode':'status','status':500}");

  /* Pinned to the treatment by a rule: failing, covered, not randomized,
   * so not the guards' business. */
  l = load_start_h(e->gate.port, 4, 1000, 500, "x-modelgate-attr-pin: new\r\n");
  load_wait(l, 0, 300, 10000 * SLOW);
  mg_h_sleep_ms(500); /* several checks */
  st = admin_state(e);
  assert_string_equal(str_at(ramp_in(st), "status"), "running");
  assert_true(num_at(ramp_in(st), "window.new.requests") == 0);
  cJSON_Delete(st);
  load_stop(l);
  c = load_counts(l, 0);
  if (c.bad)
    fail_msg("client-side failures: %s", l->first_bad);
  assert_true(c.covered > 0);
  assert_int_equal(c.rollout, 0);

  /* The same failure on randomized traffic rolls it back. */
  l = load_start(e->gate.port, 4, 1000, 500);
  st = wait_ramp(e, "rolled_back", 0, 10000 * SLOW);
  load_stop(l);
  assert_string_equal(str_at(ramp_in(st), "rollback.guard"), "max_error_rate");
  cJSON_Delete(st);
  if (load_counts(l, 0).bad)
    fail_msg("client-side failures: %s", l->first_bad);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, tenv_setup, ramp_teardown)
  const struct CMUnitTest tests[] = {
      T(test_pause_resume),
      T(test_manual_step_promote),
      T(test_manual_rollback_and_restart),
      T(test_weights_refused_kill_wins),
      T(test_only_rollout_feeds_guards),
  };
#undef T
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
