/* test_fallbacks_breaker.c - circuit breakers through the real binary.
 *
 * The outage test is issue point 8's: the primary is down for 1,000
 * requests; once its breaker is open those requests cost the fallback's
 * own latency plus less than 5 ms at p99, with no client-visible error,
 * and the primary is not called again. Then recovery (a failed probe
 * opens the breaker again, a good one closes it and traffic returns), the
 * error-rate rule, unsure answers that are not failures, the breaker of a
 * fallback tier, and breakers that keep their state across a reload. */
#define _DEFAULT_SOURCE 1
#define _GNU_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"
#include "test_fallbacks.h"

#define BACKUP "'backup':{'base_url':'@MOCK','model':'m-backup'}"

/* The p99 criterion of issue point 8 holds on the normal build. Under
 * ASan + UBSan (a Debug build, every request several times slower and
 * noisier) only a looser bound is asserted. */
#ifdef MG_SANITIZE
#define P99_MARGIN_MS 50.0
#else
#define P99_MARGIN_MS 5.0
#endif

#define OUTAGE_REQUESTS 1000
#define THRESHOLD 3

/* One request on an open keep-alive connection, timed from the first byte
 * sent to the last byte received. */
static double timed_chat(int fd, const char *alias, const char *text,
                         struct mg_h_resp *r) {
  double t0 = mg_h_now_ms();
  send_chat(fd, alias, text, "");
  if (mg_h_read_response(fd, r, 10000 * SLOW) != 0)
    fail_msg("no complete answer from %s (status %d): %s", alias, r->status,
             r->body);
  return mg_h_now_ms() - t0;
}

static void test_outage_1000_requests(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  static double outage[OUTAGE_REQUESTS], own[OUTAGE_REQUESTS];
  int fa, fb, i, non200 = 0;
  double p50o, p99o, p50b, p99b, maxo, maxb;

  /* The primary hangs: before the breaker opens each request pays the
   * 100 ms first-byte timeout. info, not debug: no log line per request. */
  gate_cfg_level(e, "info",
                 "'targets':{"
                 "'primary':{'base_url':'@MOCK','model':'m-primary',"
                 "'timeouts':{'first_byte_ms':100},"
                 "'breaker':{'failures':3,'cooldown_ms':60000},"
                 "'fallbacks':['backup']}," BACKUP "},"
                 "'aliases':{'gpt-fb':{'target':'primary'},"
                 "'gpt-backup':{'target':'backup'}}");
  behave(e, "{'model':'m-primary','mode':'hang'}");
  fa = mg_h_connect(e->gate.port);
  fb = mg_h_connect(e->gate.port);
  assert_true(fa >= 0 && fb >= 0);
  /* Warm the backup's upstream connections. */
  for (i = 0; i < 20; i++) {
    timed_chat(fb, "gpt-backup", "warm up", &r);
    assert_int_equal(r.status, 200);
    mg_h_resp_free(&r);
  }

  /* Outage requests and direct requests to the fallback, interleaved so
   * both see the same machine. */
  for (i = 0; i < OUTAGE_REQUESTS; i++) {
    outage[i] = timed_chat(fa, "gpt-fb", "where is my order", &r);
    if (r.status != 200) {
      non200++;
      fprintf(stderr, "request %d: %d %s\n", i, r.status, r.body);
    } else {
      assert_hdr(&r, "x-modelgate-served-by", "backup");
      assert_hdr(&r, "x-modelgate-fallback",
                 i < THRESHOLD ? "timeout" : "breaker_open");
    }
    mg_h_resp_free(&r);
    own[i] = timed_chat(fb, "gpt-backup", "where is my order", &r);
    assert_int_equal(r.status, 200);
    mg_h_resp_free(&r);
  }
  close(fa);
  close(fb);

  /* The first THRESHOLD requests paid the timeout; after them the breaker
   * was open. */
  for (i = 0; i < THRESHOLD; i++)
    assert_between("a request before the breaker opened (ms)", outage[i], 95,
                   100 + 250 * SLOW);
  p50o = percentile(outage + THRESHOLD, OUTAGE_REQUESTS - THRESHOLD, 50);
  p99o = percentile(outage + THRESHOLD, OUTAGE_REQUESTS - THRESHOLD, 99);
  maxo = percentile(outage + THRESHOLD, OUTAGE_REQUESTS - THRESHOLD, 100);
  p50b = percentile(own, OUTAGE_REQUESTS, 50);
  p99b = percentile(own, OUTAGE_REQUESTS, 99);
  maxb = percentile(own, OUTAGE_REQUESTS, 100);
  fprintf(stderr,
          "outage, breaker open (%d requests): p50 %.3f ms, p99 %.3f ms, "
          "max %.3f ms\n"
          "fallback alone (%d requests):       p50 %.3f ms, p99 %.3f ms, "
          "max %.3f ms\n"
          "p99 difference %.3f ms (bound %.0f ms)\n",
          OUTAGE_REQUESTS - THRESHOLD, p50o, p99o, maxo, OUTAGE_REQUESTS, p50b,
          p99b, maxb, p99o - p99b, P99_MARGIN_MS);
  assert_int_equal(non200, 0);
  if (p99o > p99b + P99_MARGIN_MS)
    fail_msg("p99 with the breaker open %.3f ms > the fallback's own p99 "
             "%.3f ms + %.0f ms",
             p99o, p99b, P99_MARGIN_MS);

  /* The primary saw the requests that opened the breaker, no more. */
  assert_int_equal(mock_count(e, "m-primary"), THRESHOLD);
  assert_int_equal(mock_count(e, "m-backup"), 2 * OUTAGE_REQUESTS + 20);
  assert_metric(e, "modelgate_breaker_state{target=\"primary\"}", 1);
  assert_metric(e, "modelgate_breaker_state{target=\"backup\"}", 0);
  assert_metric(e,
                "modelgate_breaker_transitions_total{target=\"primary\","
                "state=\"open\"}",
                1);
  assert_metric(e,
                "modelgate_fallbacks_total{target=\"primary\",tier=\"backup\","
                "reason=\"timeout\"}",
                THRESHOLD);
  assert_metric(e,
                "modelgate_fallbacks_total{target=\"primary\",tier=\"backup\","
                "reason=\"breaker_open\"}",
                OUTAGE_REQUESTS - THRESHOLD);
  assert_metric(e, "modelgate_requests_total{route=\"gpt-fb\",status=\"200\"}",
                OUTAGE_REQUESTS);
  assert_true(
      file_contains(e->gate.log_file, "warn breaker of target primary: open"));
}

/* After the cooldown one probe goes through: a failing probe opens the
 * breaker again, a good one closes it and traffic returns to the primary. */
static void test_recovery(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  int i;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary',"
              "'breaker':{'failures':2,'cooldown_ms':400,'probes':1},"
              "'fallbacks':['backup']}," BACKUP "},"
              "'aliases':{'gpt-fb':{'target':'primary'}}");
  behave(e, "{'model':'m-primary','mode':'status','status':500}");
  for (i = 0; i < 2; i++) {
    ask(e, "gpt-fb", "outage", "", &r);
    assert_served(&r, 200, "backup", "5xx");
    mg_h_resp_free(&r);
  }
  assert_metric(e, "modelgate_breaker_state{target=\"primary\"}", 1);
  ask(e, "gpt-fb", "outage", "", &r);
  assert_served(&r, 200, "backup", "breaker_open");
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-primary"), 2);

  /* Cooldown over, the outage is not: the probe fails, open again. */
  mg_h_sleep_ms(500);
  ask(e, "gpt-fb", "outage", "", &r);
  assert_served(&r, 200, "backup", "5xx");
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-primary"), 3);
  assert_metric(e, "modelgate_breaker_state{target=\"primary\"}", 1);
  assert_metric(e,
                "modelgate_breaker_transitions_total{target=\"primary\","
                "state=\"open\"}",
                2);
  ask(e, "gpt-fb", "outage", "", &r);
  assert_served(&r, 200, "backup", "breaker_open");
  mg_h_resp_free(&r);

  /* The outage ends; the breaker only notices after the cooldown. */
  behave(e, "{'model':'m-primary','mode':'ok'}");
  ask(e, "gpt-fb", "recovered", "", &r);
  assert_served(&r, 200, "backup", "breaker_open");
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-primary"), 3);
  mg_h_sleep_ms(500);
  ask(e, "gpt-fb", "recovered", "", &r);
  assert_served(&r, 200, "primary", NULL);
  assert_content(&r, "Mock answer from m-primary to: recovered");
  mg_h_resp_free(&r);
  assert_metric(e, "modelgate_breaker_state{target=\"primary\"}", 0);
  for (i = 0; i < 5; i++) {
    ask(e, "gpt-fb", "recovered", "", &r);
    assert_served(&r, 200, "primary", NULL);
    mg_h_resp_free(&r);
  }
  assert_int_equal(mock_count(e, "m-primary"), 9);
  assert_true(
      file_contains(e->gate.log_file, "breaker of target primary: closed"));
  assert_metric(e,
                "modelgate_breaker_transitions_total{target=\"primary\","
                "state=\"closed\"}",
                1);
  /* Every state change is counted, half-open ones included (two
   * cooldowns ended). */
  assert_metric(e,
                "modelgate_breaker_transitions_total{target=\"primary\","
                "state=\"half_open\"}",
                2);
}

/* Half-open lets `probes` requests through at once; others keep skipping
 * the target while the probe is out, and the state gauge says 2. */
static void test_half_open_probes(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  int fd;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary',"
              "'breaker':{'failures':1,'cooldown_ms':300,'probes':1},"
              "'fallbacks':['backup']}," BACKUP "},"
              "'aliases':{'gpt-fb':{'target':'primary'}}");
  /* One failure, then slow good answers. */
  behave(e, "{'model':'m-primary','mode':'slow','ms':800}");
  behave(e, "{'model':'m-primary','mode':'status','status':500,'times':1}");
  ask(e, "gpt-fb", "fail once", "", &r);
  assert_served(&r, 200, "backup", "5xx");
  mg_h_resp_free(&r);
  assert_metric(e, "modelgate_breaker_state{target=\"primary\"}", 1);

  mg_h_sleep_ms(400);
  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  send_chat(fd, "gpt-fb", "the probe", "");
  assert_int_equal(
      (int)stat_wait(e->mock.port, "/by_model/m-primary", 2, 2, 2000 * SLOW),
      2);
  assert_metric(e, "modelgate_breaker_state{target=\"primary\"}", 2);
  ask(e, "gpt-fb", "meanwhile", "", &r);
  assert_served(&r, 200, "backup", "breaker_open");
  if (r.ms > 300.0 * SLOW)
    fail_msg("a request skipping a half-open breaker took %.0f ms", r.ms);
  mg_h_resp_free(&r);

  assert_int_equal(mg_h_read_response(fd, &r, 5000 * SLOW), 0);
  assert_served(&r, 200, "primary", NULL);
  assert_content(&r, "Mock answer from m-primary to: the probe");
  mg_h_resp_free(&r);
  close(fd);
  assert_int_equal(mock_count(e, "m-primary"), 2);
  assert_metric(e, "modelgate_breaker_state{target=\"primary\"}", 0);
}

/* The error-rate rule: it waits for min_requests, then opens at the rate
 * (on a success, too). */
static void test_error_rate(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary',"
              "'breaker':{'failures':0,'error_rate':0.5,'window_ms':10000,"
              "'min_requests':4,'cooldown_ms':60000},"
              "'fallbacks':['backup']}," BACKUP "},"
              "'aliases':{'gpt-fb':{'target':'primary'}}");
  behave(e, "[{'model':'m-primary','mode':'status','status':500,'times':1},"
            "{'model':'m-primary','mode':'ok','times':1},"
            "{'model':'m-primary','mode':'status','status':500,'times':1}]");
  ask(e, "gpt-fb", "a", "", &r);
  assert_served(&r, 200, "backup", "5xx");
  mg_h_resp_free(&r);
  ask(e, "gpt-fb", "b", "", &r);
  assert_served(&r, 200, "primary", NULL);
  mg_h_resp_free(&r);
  ask(e, "gpt-fb", "c", "", &r);
  assert_served(&r, 200, "backup", "5xx");
  mg_h_resp_free(&r);
  /* 2 of 3 failed, but 3 < min_requests. */
  assert_metric(e, "modelgate_breaker_state{target=\"primary\"}", 0);
  ask(e, "gpt-fb", "d", "", &r);
  assert_served(&r, 200, "primary", NULL);
  mg_h_resp_free(&r);
  /* 2 of 4: at the rate. */
  assert_metric(e, "modelgate_breaker_state{target=\"primary\"}", 1);
  ask(e, "gpt-fb", "e", "", &r);
  assert_served(&r, 200, "backup", "breaker_open");
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-primary"), 4);
}

/* Unsure answers fall back but say nothing about the upstream's health. */
static void test_unsure_is_not_a_failure(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  int i;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary',"
              "'confidence':{'min':0.8},"
              "'breaker':{'failures':2,'cooldown_ms':60000},"
              "'fallbacks':['backup']}," BACKUP "},"
              "'aliases':{'gpt-fb':{'target':'primary'}}");
  behave(e, "{'model':'m-primary','mode':'low_confidence'}");
  for (i = 0; i < 5; i++) {
    ask(e, "gpt-fb", "hmm", "", &r);
    assert_served(&r, 200, "backup", "low_confidence");
    mg_h_resp_free(&r);
  }
  assert_int_equal(mock_count(e, "m-primary"), 5);
  assert_metric(e, "modelgate_breaker_state{target=\"primary\"}", 0);
}

/* A fallback target has its own breaker: once it opened, the chain skips
 * it and goes on to the next tier; the reason stays the first one. */
static void test_fallback_tier_breaker(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  int i;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@DEAD','model':'m-primary',"
              "'breaker':{'enabled':false},"
              "'fallbacks':['backup','traditional:sorry']},"
              "'backup':{'base_url':'@MOCK','model':'m-backup',"
              "'breaker':{'failures':2,'cooldown_ms':60000}}},"
              "'traditional':{'sorry':{'static':'Sorry.'}},"
              "'aliases':{'gpt-fb':{'target':'primary'}}");
  behave(e, "{'model':'m-backup','mode':'status','status':500}");
  for (i = 0; i < 5; i++) {
    ask(e, "gpt-fb", "both down", "", &r);
    assert_served(&r, 200, "traditional:sorry", "connect_error");
    assert_content(&r, "Sorry.");
    mg_h_resp_free(&r);
  }
  assert_int_equal(mock_count(e, "m-backup"), 2);
  assert_metric(e, "modelgate_breaker_state{target=\"backup\"}", 1);
  assert_metric(e, "modelgate_breaker_state{target=\"primary\"}", 0);
}

/* Breakers live across reloads: an open breaker stays open after SIGHUP. */
static void test_breaker_survives_reload(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  char *cfg;
  int i;
  static const char targets[] =
      "'targets':{"
      "'primary':{'base_url':'@MOCK','model':'m-primary',"
      "'breaker':{'failures':2,'cooldown_ms':60000},"
      "'fallbacks':['backup']}," BACKUP "},";

  cfg = fmt("%s'aliases':{'gpt-fb':{'target':'primary'}}", targets);
  gate_cfg(e, cfg);
  free(cfg);
  behave(e, "{'model':'m-primary','mode':'status','status':500}");
  for (i = 0; i < 2; i++) {
    ask(e, "gpt-fb", "x", "", &r);
    mg_h_resp_free(&r);
  }
  assert_metric(e, "modelgate_breaker_state{target=\"primary\"}", 1);

  /* A new snapshot (one more alias), same targets. */
  {
    char *members = fmt("%s'aliases':{'gpt-fb':{'target':'primary'},"
                        "'gpt-new':{'target':'backup'}}",
                        targets);
    char *body = expand(e, members);
    char *full = fmt("{\"admin\":{\"listen\":\"127.0.0.1:0\"},\"server\":{"
                     "\"listen\":\"127.0.0.1:0\",\"log_level\":\"debug\","
                     "\"shutdown_grace_ms\":2000},%s}",
                     body);
    assert_int_equal(mg_h_write_file(e->config, full), 0);
    free(members);
    free(body);
    free(full);
  }
  kill(e->gate.pid, SIGHUP);
  assert_true(metric_wait(e->gate.port,
                          "modelgate_config_reloads_total{result=\"ok\"}", 1,
                          5000) == 1);
  ask(e, "gpt-new", "new alias", "", &r);
  assert_served(&r, 200, "backup", NULL);
  mg_h_resp_free(&r);
  ask(e, "gpt-fb", "x", "", &r);
  assert_served(&r, 200, "backup", "breaker_open");
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-primary"), 2);
  assert_metric(e, "modelgate_breaker_state{target=\"primary\"}", 1);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, tenv_setup, tenv_teardown)
  const struct CMUnitTest tests[] = {
      T(test_outage_1000_requests),    T(test_recovery),
      T(test_half_open_probes),        T(test_error_rate),
      T(test_unsure_is_not_a_failure), T(test_fallback_tier_breaker),
      T(test_breaker_survives_reload),
  };
#undef T
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
