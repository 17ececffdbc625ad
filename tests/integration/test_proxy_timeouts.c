/* test_proxy_timeouts.c - the target's timeouts as a client notices them:
 * a refused connection, a connect that never completes, no first byte, a
 * stream that stalls, an answer that takes too long in all. Each must end
 * with the documented error about when the config says, not before and not
 * much after (the upper bounds leave 1.5 s of slack for a slow sanitizer
 * build on a busy CI machine). */
#define _DEFAULT_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"

#define SLACK_MS 1500

static void check_elapsed(const char *what, double ms, double want) {
  if (ms < want - 100 || ms > want + SLACK_MS)
    fail_msg("%s after %.0f ms, configured %.0f ms", what, ms, want);
}

/* A config whose target "main" points at base_url. */
static void gate_at(struct tenv *e, const char *base_url,
                    const char *timeouts) {
  char *cfg = fmt("{\"admin\":{\"listen\":\"127.0.0.1:0\"},\"server\":{"
                  "\"listen\":\"127.0.0.1:0\",\"log_level\":"
                  "\"debug\",\"shutdown_grace_ms\":2000},"
                  "\"targets\":{\"main\":{\"base_url\":\"%s\",\"model\":"
                  "\"up-model\",\"timeouts\":{%s}}},"
                  "\"aliases\":{\"gpt-test\":{\"target\":\"main\"}}}",
                  base_url, timeouts);
  assert_int_equal(gate_start(e, cfg), 0);
  free(cfg);
}

static void test_connect_refused(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  int fd, port = closed_port(&fd);
  char *url = fmt("http://127.0.0.1:%d/v1", port), msg[512];

  gate_at(e, url, "\"connect_ms\":3000");
  free(url);
  assert_int_equal(chat(e->gate.port, "gpt-test", "hi", "", &r), 0);
  assert_error_msg(&r, 502, "upstream_unreachable", msg, sizeof(msg));
  assert_non_null(strstr(msg, "main"));
  /* Refused is immediate: no waiting for connect_ms. */
  if (r.ms > 1000)
    fail_msg("a refused connection took %.0f ms", r.ms);
  mg_h_resp_free(&r);
  close(fd);
}

/* A listener whose accept queue is full: the kernel drops further SYNs, so
 * a connect to it neither succeeds nor fails (no external network
 * needed). Returns the port; the listener and the queued connections are
 * in fds (count in *n), closed by the caller. */
static int blackhole(int *fds, int max, int *n) {
  struct sockaddr_in sa;
  socklen_t sl = sizeof(sa);
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), i;
  assert_true(lfd >= 0);
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(listen(lfd, 0), 0);
  assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
  fds[0] = lfd;
  *n = 1;
  for (i = 1; i < max; i++) {
    struct pollfd pfd;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    assert_true(fd >= 0);
    fds[(*n)++] = fd;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
      continue;
    assert_int_equal(errno, EINPROGRESS);
    pfd.fd = fd;
    pfd.events = POLLOUT;
    pfd.revents = 0;
    if (poll(&pfd, 1, 300) == 0)
      return ntohs(sa.sin_port); /* this one hangs: the queue is full */
  }
  fail_msg("could not fill the accept queue of a listener with backlog 0");
  return -1;
}

static void test_connect_timeout(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  int fds[16], n, i, port = blackhole(fds, 16, &n);
  char *url = fmt("http://127.0.0.1:%d/v1", port), msg[512];

  gate_at(e, url, "\"connect_ms\":700,\"first_byte_ms\":10000");
  free(url);
  assert_int_equal(chat(e->gate.port, "gpt-test", "hi", "", &r), 0);
  assert_error_msg(&r, 504, "upstream_timeout", msg, sizeof(msg));
  assert_non_null(strstr(msg, "connect"));
  check_elapsed("connect timeout", r.ms, 700);
  mg_h_resp_free(&r);
  /* And modelgate is still there to tell the next client. */
  mg_h_sleep_ms(300);
  if (!mg_h_alive(&e->gate))
    fail_msg("modelgate died after an upstream connect timeout");
  assert_int_equal(get(e->gate.port, "/healthz", &r), 0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  for (i = 0; i < n; i++)
    close(fds[i]);
}

/* The client leaves while the upstream connection is still being made:
 * the transfer is cancelled and modelgate goes on. */
static void test_client_gone_while_connecting(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  int fds[16], n, i, fd, port = blackhole(fds, 16, &n);
  char *url = fmt("http://127.0.0.1:%d/v1", port);

  gate_at(e, url, "\"connect_ms\":5000");
  free(url);
  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  send_chat(fd, "gpt-test", "never mind", "");
  assert_true(metric_wait(e->gate.port, "modelgate_upstream_transfers_active",
                          1, 2000) == 1);
  close(fd);
  mg_h_sleep_ms(300);
  if (!mg_h_alive(&e->gate))
    fail_msg("modelgate died after cancelling a connecting transfer");
  assert_true(
      metric_wait(e->gate.port, "modelgate_requests_in_flight", 0, 2000) == 0);
  assert_true(metric(e->gate.port, "modelgate_upstream_transfers_active") == 0);
  assert_true(metric(e->gate.port,
                     "modelgate_requests_total{route=\"gpt-test\","
                     "status=\"499\"}") == 1);
  assert_int_equal(get(e->gate.port, "/healthz", &r), 0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  for (i = 0; i < n; i++)
    close(fds[i]);
}

static void test_first_byte_timeout(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  char *url = fmt("http://127.0.0.1:%d/v1", e->mock.port), msg[512];
  int fd;

  gate_at(e, url, "\"first_byte_ms\":800");
  free(url);
  set_mock(e->mock.port, "{\"mode\":\"hang\",\"times\":1}");
  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  send_chat(fd, "gpt-test", "anyone there", "");
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  assert_error_msg(&r, 504, "upstream_timeout", msg, sizeof(msg));
  assert_non_null(strstr(msg, "800 ms"));
  check_elapsed("first-byte timeout", r.ms, 800);
  assert_false(r.closed);
  mg_h_resp_free(&r);
  /* modelgate gave up the hung upstream connection (it cannot be reused):
   * only the stats request's own connection is left at the mock. */
  assert_int_equal(
      (int)stat_wait(e->mock.port, "/connections_active", 1, 1, 2000), 1);
  /* The client connection is fine, and so is the next request. */
  send_chat(fd, "gpt-test", "second try", "");
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.body, "to: second try"));
  mg_h_resp_free(&r);
  close(fd);

  /* A streaming request times out the same way before its first byte. */
  set_mock(e->mock.port, "{\"mode\":\"hang\",\"times\":1}");
  assert_int_equal(chat(e->gate.port, "gpt-test", "x", ",\"stream\":true", &r),
                   0);
  assert_error(&r, 504, "upstream_timeout");
  assert_false(r.chunked);
  check_elapsed("first-byte timeout (stream)", r.ms, 800);
  mg_h_resp_free(&r);
}

/* The stream started, then the upstream went quiet for longer than
 * idle_ms: the client gets what came, an error event, the end of the
 * chunked body, and no [DONE]. */
static void test_idle_timeout_mid_stream(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  struct events ev;
  char *url = fmt("http://127.0.0.1:%d/v1", e->mock.port), v[64];
  int fd;

  gate_at(e, url, "\"first_byte_ms\":5000,\"idle_ms\":600");
  free(url);
  set_mock(e->mock.port, "{\"chunks\":5,\"chunk_ms\":3000}");
  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  send_chat(fd, "gpt-test", "go quiet", ",\"stream\":true");
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  assert_int_equal(r.status, 200);
  assert_true(r.chunked);
  assert_true(r.complete);
  assert_string_equal(mg_h_header(&r, "content-type", v, sizeof(v)),
                      "text/event-stream");
  check_elapsed("idle timeout", r.ms, 600);
  events_parse(r.body, &ev);
  assert_string_equal(ev.rest, "");
  assert_int_equal(ev.n, 2);
  assert_non_null(strstr(ev.items[0], "chat.completion.chunk"));
  assert_error_event(ev.items[1], "upstream_timeout");
  assert_null(strstr(r.body, "[DONE]"));
  events_free(&ev);
  mg_h_resp_free(&r);
  /* The upstream stream was dropped, not left running. */
  assert_int_equal((int)stat_wait(e->mock.port, "/streams_aborted", 1, 1, 2000),
                   1);
  /* The client connection goes on. */
  send_chat(fd, "gpt-test", "after", "");
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  close(fd);
}

static void test_total_timeout(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  struct events ev;
  char *url = fmt("http://127.0.0.1:%d/v1", e->mock.port), msg[512];

  gate_at(e, url,
          "\"first_byte_ms\":10000,\"idle_ms\":10000,"
          "\"total_ms\":1000");
  free(url);
  set_mock(e->mock.port, "{\"mode\":\"slow\",\"ms\":4000,\"times\":1}");
  assert_int_equal(chat(e->gate.port, "gpt-test", "take your time", "", &r), 0);
  assert_error_msg(&r, 504, "upstream_timeout", msg, sizeof(msg));
  assert_non_null(strstr(msg, "1000 ms"));
  check_elapsed("total timeout", r.ms, 1000);
  mg_h_resp_free(&r);

  /* A stream that keeps going past total_ms is cut there, with an error
   * event, though it never stalls. */
  set_mock(e->mock.port, "{\"chunks\":100,\"chunk_ms\":50}");
  assert_int_equal(
      chat(e->gate.port, "gpt-test", "long story", ",\"stream\":true", &r), 0);
  assert_int_equal(r.status, 200);
  assert_true(r.complete);
  check_elapsed("total timeout (stream)", r.ms, 1000);
  events_parse(r.body, &ev);
  assert_true(ev.n >= 3);
  assert_error_event(ev.items[ev.n - 1], "upstream_timeout");
  assert_null(strstr(r.body, "[DONE]"));
  events_free(&ev);
  mg_h_resp_free(&r);
  assert_int_equal((int)stat_wait(e->mock.port, "/streams_aborted", 1, 1, 2000),
                   1);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, tenv_setup, tenv_teardown)
  const struct CMUnitTest tests[] = {
      T(test_connect_refused),
      T(test_connect_timeout),
      T(test_client_gone_while_connecting),
      T(test_first_byte_timeout),
      T(test_idle_timeout_mid_stream),
      T(test_total_timeout),
  };
#undef T
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
