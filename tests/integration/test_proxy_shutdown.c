/* test_proxy_shutdown.c - SIGTERM and SIGINT: stop accepting, tell load
 * balancers (/readyz 503), close idle keep-alive connections, let requests
 * in flight finish within shutdown_grace_ms, end the rest with an error,
 * and exit 0 (under ASan: without a leak). */
#define _DEFAULT_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"

/* Wait for the process to end on its own; true if it did in time. */
static bool exits_within(struct mg_h_proc *p, int timeout_ms) {
  double deadline = mg_h_now_ms() + timeout_ms;
  while (mg_h_alive(p)) {
    if (mg_h_now_ms() > deadline)
      return false;
    mg_h_sleep_ms(5);
  }
  return true;
}

/* Poll until a connect is refused; the time it took, or -1. */
static double refused_within(int port, int timeout_ms) {
  double t0 = mg_h_now_ms();
  while (mg_h_now_ms() - t0 < timeout_ms) {
    if (connect_refused(port))
      return mg_h_now_ms() - t0;
    mg_h_sleep_ms(10);
  }
  return -1;
}

/* A slow request is in flight when the signal comes: it completes. */
static void drain_in_flight(struct tenv *e, int sig) {
  struct mg_h_resp r;
  int busy, probe, idle, gp;
  double t_sig, refused;
  char v[64];

  gate_std(e, ",\"shutdown_grace_ms\":5000", "", "", "");
  gp = e->gate.port;
  set_mock(e->mock.port, "{\"mode\":\"slow\",\"ms\":1500}");
  busy = mg_h_connect(gp);
  assert_true(busy >= 0);
  send_chat(busy, "gpt-test", "finish me", "");
  assert_int_equal((int)stat_wait(e->mock.port, "/requests", 1, 1, 2000), 1);
  /* An idle keep-alive connection. */
  idle = mg_h_connect(gp);
  assert_true(idle >= 0);
  assert_int_equal(mg_h_sends(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
                   0);
  assert_int_equal(mg_h_read_response(idle, &r, T_MS), 0);
  assert_false(r.closed);
  mg_h_resp_free(&r);
  /* A readiness probe whose request is half sent when the signal comes. */
  probe = mg_h_connect(gp);
  assert_true(probe >= 0);
  assert_int_equal(mg_h_sends(probe, "GET /readyz HTTP/1.1\r\nHost: x\r\n"), 0);
  mg_h_sleep_ms(100);

  t_sig = mg_h_now_ms();
  assert_int_equal(kill(e->gate.pid, sig), 0);

  /* Idle connections go at once. */
  if (!mg_h_wait_closed(idle, 1000))
    fail_msg("idle keep-alive connection still open 1 s after the signal");
  close(idle);
  /* Nothing new is accepted. */
  refused = refused_within(gp, 2000);
  if (refused < 0)
    fail_msg("new connections still accepted 2 s after the signal");
  /* The probe learns that this instance is going away. */
  assert_int_equal(mg_h_sends(probe, "\r\n"), 0);
  assert_int_equal(mg_h_read_response(probe, &r, T_MS), 0);
  assert_int_equal(r.status, 503);
  assert_string_equal(r.body, "{\"status\":\"draining\"}");
  assert_true(r.closed);
  mg_h_resp_free(&r);
  close(probe);

  /* The request in flight completes normally, with a close. */
  assert_int_equal(mg_h_read_response(busy, &r, T_MS), 0);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.body, "Mock answer from up-model to: finish me"));
  assert_string_equal(mg_h_header(&r, "connection", v, sizeof(v)), "close");
  assert_true(r.closed);
  assert_true(mg_h_now_ms() - t_sig < 5000);
  mg_h_resp_free(&r);
  close(busy);

  /* Then the process ends by itself, well before the grace period. */
  if (!exits_within(&e->gate, 2000))
    fail_msg("still running 2 s after its last request finished");
  assert_int_equal(mg_h_stop(&e->gate, sig, 100), 0);
}

static void test_sigterm_in_flight(void **state) {
  drain_in_flight(*state, SIGTERM);
}

static void test_sigint_in_flight(void **state) {
  drain_in_flight(*state, SIGINT);
}

/* Requests still running when the grace period ends: a 503
 * shutting_down (or, for a stream already started, an error event), then
 * the exit. */
static void test_sigterm_past_grace(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  struct raw w = {0};
  struct events ev;
  int busy, stream, gp;
  double t_sig, dt;

  gate_std(e, ",\"shutdown_grace_ms\":500", "", "", "");
  gp = e->gate.port;
  /* The first request is slow; the second streams for 10 s. */
  set_mock(e->mock.port, "{\"chunks\":100,\"chunk_ms\":100}");
  set_mock(e->mock.port, "{\"mode\":\"slow\",\"ms\":5000,\"times\":1}");
  busy = mg_h_connect(gp);
  assert_true(busy >= 0);
  send_chat(busy, "gpt-test", "too long", "");
  assert_int_equal((int)stat_wait(e->mock.port, "/requests", 1, 1, 2000), 1);
  stream = mg_h_connect(gp);
  assert_true(stream >= 0);
  send_chat(stream, "gpt-test", "endless", ",\"stream\":true");
  assert_true(raw_read_until(stream, &w, "data: ", 1, T_MS));

  t_sig = mg_h_now_ms();
  assert_int_equal(kill(e->gate.pid, SIGTERM), 0);
  assert_int_equal(mg_h_read_response(busy, &r, T_MS), 0);
  dt = mg_h_now_ms() - t_sig;
  assert_error(&r, 503, "shutting_down");
  assert_true(r.closed);
  if (dt < 400 || dt > 500 + 1500)
    fail_msg("ended %.0f ms after the signal; grace is 500 ms", dt);
  mg_h_resp_free(&r);
  close(busy);

  /* The stream: its events so far, an error event, the end; no [DONE]. */
  while (!w.closed && mg_h_now_ms() - t_sig < T_MS)
    raw_read_once(stream, &w, 200);
  assert_true(w.closed);
  close(stream);
  {
    /* De-chunk what came after the head. */
    const char *p = strstr(w.data, "\r\n\r\n");
    char *body = calloc(1, w.len + 1);
    size_t bl = 0;
    bool last = false;
    assert_non_null(p);
    p += 4;
    while (p < w.data + w.len) {
      char *end;
      unsigned long n = strtoul(p, &end, 16);
      assert_int_equal(strncmp(end, "\r\n", 2), 0);
      if (n == 0) {
        last = strcmp(end, "\r\n\r\n") == 0;
        break;
      }
      memcpy(body + bl, end + 2, n);
      bl += n;
      p = end + 2 + n;
      assert_int_equal(strncmp(p, "\r\n", 2), 0);
      p += 2;
    }
    assert_true(last);
    events_parse(body, &ev);
    assert_string_equal(ev.rest, "");
    assert_true(ev.n >= 2);
    assert_error_event(ev.items[ev.n - 1], "shutting_down");
    assert_null(strstr(body, "[DONE]"));
    events_free(&ev);
    free(body);
  }
  raw_free(&w);

  if (!exits_within(&e->gate, 2000))
    fail_msg("still running 2 s after the grace period");
  assert_int_equal(mg_h_stop(&e->gate, SIGTERM, 100), 0);
  /* Both upstream transfers were dropped. */
  assert_int_equal((int)stat_wait(e->mock.port, "/streams_aborted", 1, 1, 2000),
                   1);
  assert_int_equal(
      (int)stat_wait(e->mock.port, "/connections_active", 1, 1, 2000), 1);
}

/* Nothing in flight: idle connections close at once and the process
 * exits without waiting for the grace period. */
static void test_sigterm_idle(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  int fds[3], i;
  double t0;

  gate_std(e, ",\"shutdown_grace_ms\":10000", "", "", "");
  for (i = 0; i < 3; i++) {
    fds[i] = mg_h_connect(e->gate.port);
    assert_true(fds[i] >= 0);
    send_chat(fds[i], "gpt-test", "keep me", "");
    assert_int_equal(mg_h_read_response(fds[i], &r, T_MS), 0);
    assert_int_equal(r.status, 200);
    assert_false(r.closed);
    mg_h_resp_free(&r);
  }
  t0 = mg_h_now_ms();
  assert_int_equal(kill(e->gate.pid, SIGTERM), 0);
  for (i = 0; i < 3; i++) {
    if (!mg_h_wait_closed(fds[i], 1000))
      fail_msg("idle connection %d still open after SIGTERM", i);
    close(fds[i]);
  }
  if (!exits_within(&e->gate, 2000))
    fail_msg("idle modelgate still running 2 s after SIGTERM");
  assert_true(mg_h_now_ms() - t0 < 2000);
  assert_int_equal(mg_h_stop(&e->gate, SIGTERM, 100), 0);
  /* Its upstream connection was closed too. */
  assert_int_equal(
      (int)stat_wait(e->mock.port, "/connections_active", 1, 1, 2000), 1);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, tenv_setup, tenv_teardown)
  const struct CMUnitTest tests[] = {
      T(test_sigterm_in_flight),
      T(test_sigint_in_flight),
      T(test_sigterm_past_grace),
      T(test_sigterm_idle),
  };
#undef T
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
