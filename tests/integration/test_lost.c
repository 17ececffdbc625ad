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

/* Start e->gate on tmpl (single quotes, placeholders), or on e->config as
 * it is when tmpl is NULL. */
static void start(struct tenv *e, const char *tmpl) {
  const char *env[] = {"MODELGATE_ADMIN_TOKEN=" TOKEN, NULL};
  if (tmpl) {
    char *cfg = q(e, tmpl);
    assert_int_equal(mg_h_write_file(e->config, cfg), 0);
    free(cfg);
  }
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

/* ---- the state file ---------------------------------------------------------- */

static const char state_cfg[] =
    "{'admin':{'listen':'127.0.0.1:0','state_file':'@DIR/%s'},"
    "'server':{'listen':'127.0.0.1:0','log_level':'info',"
    "  'shutdown_grace_ms':2000},"
    "'decision_log':{'enabled':false},"
    "'targets':{'t':{'base_url':'@MOCK','model':'m'}},"
    "'flags':{'f':{'off_variant':'a','variants':{'a':{'target':'t'}}}},"
    "'aliases':{'chat':{'flag':'f'}}}";

static void write_state_cfg(struct tenv *e, const char *path,
                            const char *state) {
  char *t = fmt(state_cfg, state), *c = q(e, t);
  assert_int_equal(mg_h_write_file(path, c), 0);
  free(c);
  free(t);
}

/* Run `modelgate serve` on config to its end (it must refuse to start);
 * its output must say want. */
static void expect_refused(struct tenv *e, const char *config,
                           const char *want) {
  char *port_file = fmt("%s/refused.port", e->dir), *out = NULL;
  const char *argv[] = {MG_BIN, "serve", "-c", config, "--port-file",
                        port_file, NULL};
  int rc = mg_h_run(argv, &out, 10000 * SLOW);
  assert_non_null(out);
  if (rc <= 0 || strstr(out, want) == NULL)
    fail_msg("exit status %d, want a refusal saying \"%s\":\n%s", rc, want,
             out);
  assert_int_not_equal(access(port_file, F_OK), 0);
  free(out);
  free(port_file);
}

/* A save that crashed between writing and renaming left its temp file:
 * the next start removes it (and says so); a live process's is left. */
static void test_state_tmp_cleaned(void **state) {
  struct tenv *e = *state;
  char *dead_tmp, *live_tmp;
  pid_t dead = fork();
  int st;

  assert_true(dead >= 0);
  if (dead == 0)
    _exit(0);
  assert_int_equal(waitpid(dead, &st, 0), dead);
  dead_tmp = fmt("%s/state.json.tmp.%d", e->dir, (int)dead);
  live_tmp = fmt("%s/state.json.tmp.%d", e->dir, (int)getpid());
  assert_int_equal(mg_h_write_file(dead_tmp, "{\"version\":1,\"overr"), 0);
  assert_int_equal(mg_h_write_file(live_tmp, "{\"version\":1,\"overr"), 0);
  write_state_cfg(e, e->config, "state.json");
  start(e, NULL);
  assert_int_not_equal(access(dead_tmp, F_OK), 0);
  assert_int_equal(access(live_tmp, F_OK), 0);
  assert_true(file_contains(e->gate.log_file,
                            "left by a state save that did not finish"));
  gate_down(&e->gate);
  free(dead_tmp);
  free(live_tmp);
}

/* A state file of another version, without one, or a directory: refused
 * at start, each named for what it is. */
static void test_state_version_and_dir(void **state) {
  struct tenv *e = *state;
  char *path = fmt("%s/state.json", e->dir), *want;

  write_state_cfg(e, e->config, "state.json");
  assert_int_equal(mg_h_write_file(path, "{\"version\":2,\"overrides\":{"
                                         "\"f\":{\"killed\":true}}}"),
                   0);
  want = fmt("state file %s has version 2; this modelgate reads version 1",
             path);
  expect_refused(e, e->config, want);
  free(want);
  assert_int_equal(mg_h_write_file(path, "{\"overrides\":{}}"), 0);
  want = fmt("state file %s has no version", path);
  expect_refused(e, e->config, want);
  free(want);
  assert_int_equal(unlink(path), 0);
  assert_int_equal(mkdir(path, 0755), 0);
  want = fmt("state file %s is a directory", path);
  expect_refused(e, e->config, want);
  free(want);
  free(path);
}

/* A reload that points admin.state_file elsewhere says it is not applied;
 * changes keep going to the file the process owns. */
static void test_state_reload_says_so(void **state) {
  struct tenv *e = *state;
  char *old = fmt("%s/state.json", e->dir), *moved = fmt("%s/moved.json", e->dir);
  char *s;
  struct mg_h_resp r;

  write_state_cfg(e, e->config, "state.json");
  start(e, NULL);
  write_state_cfg(e, e->config, "moved.json");
  assert_int_equal(mg_h_request(e->gate.admin_port, "POST", "/admin/reload",
                                AUTH, "", &r, T_MS * SLOW),
                   0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  assert_true(file_contains(e->gate.log_file,
                            "admin.state_file changes only on restart"));
  assert_int_equal(mg_h_request(e->gate.admin_port, "POST",
                                "/admin/flags/f/kill", AUTH, "", &r,
                                T_MS * SLOW),
                   0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  s = mg_h_read_file(old, NULL);
  assert_non_null(s);
  {
    cJSON *j = cJSON_Parse(s);
    assert_true(cJSON_IsTrue(at(j, "overrides.f.killed")));
    cJSON_Delete(j);
  }
  free(s);
  assert_int_not_equal(access(moved, F_OK), 0);
  gate_down(&e->gate);
  free(old);
  free(moved);
}

/* Two processes on one state file would erase each other's changes: the
 * second refuses to start, naming the first; once the first is gone, it
 * starts and finds the first one's kill. */
static void test_state_second_process_refused(void **state) {
  struct tenv *e = *state;
  char *cfg2 = fmt("%s/second.json", e->dir), *want;
  struct mg_h_proc second;
  struct mg_h_resp r;
  const char *env[] = {"MODELGATE_ADMIN_TOKEN=" TOKEN, NULL};

  write_state_cfg(e, e->config, "state.json");
  write_state_cfg(e, cfg2, "state.json");
  start(e, NULL);
  want = fmt("state file %s/state.json is in use by another modelgate "
             "process (pid %d)",
             e->dir, (int)e->gate.pid);
  expect_refused(e, cfg2, want);
  free(want);
  assert_int_equal(mg_h_request(e->gate.admin_port, "POST",
                                "/admin/flags/f/kill", AUTH, "", &r,
                                T_MS * SLOW),
                   0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  gate_down(&e->gate);

  memset(&second, 0, sizeof(second));
  assert_int_equal(mg_h_start_gate(&second, cfg2, env), 0);
  assert_int_equal(mg_h_request(second.admin_port, "GET", "/admin/state",
                                AUTH, NULL, &r, T_MS * SLOW),
                   0);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.body, "\"killed\":true"));
  mg_h_resp_free(&r);
  gate_down(&second);
  free(cfg2);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, tenv_setup, tenv_teardown)
  const struct CMUnitTest tests[] = {
      T(test_upstream_emfile_not_blamed),
      T(test_state_tmp_cleaned),
      T(test_state_version_and_dir),
      T(test_state_reload_says_so),
      T(test_state_second_process_refused),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  if (rc == 0)
    mg_h_cleanup_dirs();
  return rc;
}
