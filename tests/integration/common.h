/* common.h - helpers shared by the proxy integration tests
 * (test_proxy_*.c): a mock plus a modelgate per test, configs, raw HTTP on
 * open connections, OpenAI error checks, mock statistics, /metrics values,
 * event streams, and child processes the harness does not start (nginx).
 *
 * Everything is bounded by a timeout, so a broken server fails a test
 * instead of hanging CI. Functions are static and marked unused: each test
 * file takes what it needs. Include after <cmocka.h>. */
#ifndef MG_TEST_COMMON_H
#define MG_TEST_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <cjson/cJSON.h>

#include "harness.h"

#define T_MS 5000
#define U static __attribute__((unused))

/* The API key modelgate reads from the environment for target "main". It
 * must never show up in a log line or an answer. */
#define KEY_ENV "MGT_API_KEY"
#define KEY_VALUE "sk-mgtest-Zq7VwX3e9Kp0SECRET"

/* One test's world: a mock, a modelgate in front of it, a scratch dir. */
struct tenv {
  struct mg_h_proc mock;
  struct mg_h_proc gate;
  char dir[256];    /* scratch directory for configs and files */
  char config[320]; /* the modelgate config path */
};

/* ---- strings ------------------------------------------------------------- */

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
U char *fmt(const char *f, ...) {
  va_list ap;
  char *s;
  int n;
  va_start(ap, f);
  n = vsnprintf(NULL, 0, f, ap);
  va_end(ap);
  s = malloc((size_t)n + 1);
  assert_non_null(s);
  va_start(ap, f);
  vsnprintf(s, (size_t)n + 1, f, ap);
  va_end(ap);
  return s;
}

/* Occurrences of needle in the first n bytes of hay. */
U size_t count_in(const char *hay, size_t n, const char *needle) {
  size_t k = 0, nl = strlen(needle), i;
  if (nl == 0 || n < nl)
    return 0;
  for (i = 0; i + nl <= n; i++)
    if (memcmp(hay + i, needle, nl) == 0) {
      k++;
      i += nl - 1;
    }
  return k;
}

U const char *memstr(const char *hay, size_t n, const char *needle) {
  size_t nl = strlen(needle), i;
  if (n < nl)
    return NULL;
  for (i = 0; i + nl <= n; i++)
    if (memcmp(hay + i, needle, nl) == 0)
      return hay + i;
  return NULL;
}

/* ---- processes ----------------------------------------------------------- */

/* A fresh world with a running mock; modelgate is started by the test with
 * the config it needs (gate_start). */
U int tenv_setup(void **state) {
  struct tenv *e = calloc(1, sizeof(*e));
  if (e == NULL)
    return -1;
  if (mg_h_tmpdir(e->dir, sizeof(e->dir)) != 0 ||
      mg_h_start_mock(&e->mock) != 0) {
    free(e);
    return -1;
  }
  snprintf(e->config, sizeof(e->config), "%s/modelgate.json", e->dir);
  *state = e;
  return 0;
}

/* Stop both servers; each must exit 0 at SIGTERM (under ASan that also
 * means no leak). */
U int tenv_teardown(void **state) {
  struct tenv *e = *state;
  int rc = 0, r;
  if (e == NULL)
    return 0;
  if (e->gate.pid > 0 && (r = mg_h_stop(&e->gate, SIGTERM, 15000)) != 0) {
    fprintf(stderr, "modelgate exited with %d at SIGTERM\n", r);
    rc = -1;
  }
  if (e->mock.pid > 0 && (r = mg_h_stop(&e->mock, SIGTERM, T_MS)) != 0) {
    fprintf(stderr, "mg-mock exited with %d at SIGTERM\n", r);
    rc = -1;
  }
  free(e);
  *state = NULL;
  return rc;
}

/* Write config_json and start modelgate on it, with the API key in its
 * environment. */
U int gate_start(struct tenv *e, const char *config_json) {
  const char *env[] = {KEY_ENV "=" KEY_VALUE, NULL};
  if (mg_h_write_file(e->config, config_json) != 0)
    return -1;
  return mg_h_start_gate(&e->gate, e->config, env);
}

/* The usual config: target "main" on the mock (upstream model "up-model",
 * API key from KEY_ENV), alias "gpt-test" for it. server, limits and
 * timeouts are members spliced into their objects ("" for none; server's
 * begins with a comma); root is more root members, beginning with a comma. */
U char *std_config(int mock_port, const char *server, const char *limits,
                   const char *timeouts, const char *root) {
  /* A short grace period unless the test sets its own: a failed test
   * still stops quickly in teardown. The admin listener would default to
   * a fixed port; port 0 keeps tests running in parallel apart. */
  const char *grace =
      strstr(server, "shutdown_grace_ms") ? "" : ",\"shutdown_grace_ms\":2000";
  return fmt("{\"admin\":{\"listen\":\"127.0.0.1:0\"},\"server\":{\"listen\":"
             "\"127.0.0.1:0\",\"log_level\":\"debug\""
             "%s%s},"
             "\"limits\":{%s},"
             "\"targets\":{\"main\":{\"base_url\":\"http://127.0.0.1:%d/v1\","
             "\"model\":\"up-model\",\"api_key_env\":\"" KEY_ENV "\","
             "\"timeouts\":{%s}}},"
             "\"aliases\":{\"gpt-test\":{\"target\":\"main\"}}%s}",
             grace, server, limits, mock_port, timeouts, root);
}

/* Start modelgate on std_config. */
U void gate_std(struct tenv *e, const char *server, const char *limits,
                const char *timeouts, const char *root) {
  char *cfg = std_config(e->mock.port, server, limits, timeouts, root);
  int rc = gate_start(e, cfg);
  free(cfg);
  assert_int_equal(rc, 0);
}

/* A port with nothing listening on it: bound, never listened on, and kept
 * bound (the descriptor is returned) so nobody else takes it. */
U int closed_port(int *fd_out) {
  struct sockaddr_in sa;
  socklen_t sl = sizeof(sa);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
  *fd_out = fd;
  return ntohs(sa.sin_port);
}

/* A free port for a server we start ourselves (nginx): bind port 0, read
 * it, let it go. */
U int free_port(void) {
  int fd, port = closed_port(&fd);
  close(fd);
  return port;
}

/* Start argv with stdout and stderr to log; it dies with the test. */
U pid_t spawn(const char *const *argv, const char *log) {
  pid_t parent = getpid(), pid;
  int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0)
    return -1;
  fflush(NULL);
  pid = fork();
  if (pid == 0) {
    long max = sysconf(_SC_OPEN_MAX), i;
    sigset_t none;
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
    if (getppid() != parent)
      _exit(127);
    dup2(fd, 1);
    dup2(fd, 2);
    if (max < 0 || max > 65536)
      max = 65536;
    for (i = 3; i < max; i++)
      close((int)i);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    execvp(argv[0], (char *const *)argv);
    _exit(127);
  }
  close(fd);
  return pid;
}

/* Send sig to pid and wait up to timeout_ms; SIGKILL after. Returns the
 * exit status, 128+signal, or -1 when it had to be killed. */
U int reap(pid_t pid, int sig, int timeout_ms) {
  double deadline = mg_h_now_ms() + timeout_ms;
  int st;
  if (pid <= 0)
    return -1;
  kill(pid, sig);
  for (;;) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid)
      return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (r < 0)
      return -1;
    if (mg_h_now_ms() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      return -1;
    }
    mg_h_sleep_ms(5);
  }
}

/* Does the file contain needle? */
U bool file_contains(const char *path, const char *needle) {
  size_t len;
  char *s = mg_h_read_file(path, &len);
  bool found = s && memstr(s, len, needle) != NULL;
  free(s);
  return found;
}

/* ---- requests ------------------------------------------------------------ */

/* Config text with single quotes for double ones; placeholders:
 * @MOCK  the mock's base URL
 * @DIR   the test's scratch directory */
U char *q(const struct tenv *e, const char *s) {
  size_t cap = strlen(s) * 2 + 1024, n = 0;
  char *out = malloc(cap);
  assert_non_null(out);
  while (*s) {
    char piece[400];
    if (strncmp(s, "@MOCK", 5) == 0) {
      snprintf(piece, sizeof(piece), "http://127.0.0.1:%d/v1", e->mock.port);
      s += 5;
    } else if (strncmp(s, "@DIR", 4) == 0) {
      snprintf(piece, sizeof(piece), "%s", e->dir);
      s += 4;
    } else {
      piece[0] = *s == '\'' ? '"' : *s;
      piece[1] = '\0';
      s++;
    }
    if (n + strlen(piece) + 1 > cap) {
      cap = (n + strlen(piece) + 1) * 2;
      out = realloc(out, cap);
      assert_non_null(out);
    }
    memcpy(out + n, piece, strlen(piece));
    n += strlen(piece);
  }
  out[n] = '\0';
  return out;
}

/* SIGTERM: the process must exit 0 (under ASan: no leak, no error). */
U void gate_down(struct mg_h_proc *p) {
  int rc = mg_h_stop(p, SIGTERM, 60000);
  if (rc != 0)
    fail_msg("modelgate exited with %d at SIGTERM", rc);
}

/* Set a mock behaviour written with single quotes (and placeholders, as
 * for q()); the mock must accept it. */
U void mock_behave(struct tenv *e, const char *json_sq) {
  char *s = q(e, json_sq);
  if (mg_h_mock_set(e->mock.port, s) != 0)
    fail_msg("the mock refused behaviour %s", s);
  free(s);
}

/* A one-message chat body; extra: more members ("" or ",\"stream\":true"). */
U char *chat_body(const char *model, const char *text, const char *extra) {
  return fmt("{\"model\":\"%s\",\"messages\":[{\"role\":\"user\","
             "\"content\":\"%s\"}]%s}",
             model, text, extra);
}

/* One POST on an open connection, Content-Length framing. headers: more
 * header lines ("Name: v\r\n...") or NULL. */
U void send_post(int fd, const char *path, const char *headers,
                 const char *body) {
  char *req = fmt("POST %s HTTP/1.1\r\nHost: modelgate\r\n"
                  "Content-Type: application/json\r\n%s"
                  "Content-Length: %zu\r\n\r\n%s",
                  path, headers ? headers : "", strlen(body), body);
  assert_int_equal(mg_h_sends(fd, req), 0);
  free(req);
}

U void send_chat(int fd, const char *model, const char *text,
                 const char *extra) {
  char *b = chat_body(model, text, extra);
  send_post(fd, "/v1/chat/completions", NULL, b);
  free(b);
}

/* POST a chat request on a new connection. */
U int chat(int port, const char *model, const char *text, const char *extra,
           struct mg_h_resp *r) {
  char *b = chat_body(model, text, extra);
  int rc = mg_h_request(port, "POST", "/v1/chat/completions", NULL, b, r, T_MS);
  free(b);
  return rc;
}

U int post(int port, const char *path, const char *body, struct mg_h_resp *r) {
  return mg_h_request(port, "POST", path, NULL, body, r, T_MS);
}

U int get(int port, const char *path, struct mg_h_resp *r) {
  return mg_h_request(port, "GET", path, NULL, NULL, r, T_MS);
}

/* The gate still answers a normal request on a new connection. */
U void assert_gate_ok(struct tenv *e) {
  struct mg_h_resp r;
  assert_true(mg_h_alive(&e->gate));
  assert_int_equal(chat(e->gate.port, "gpt-test", "still fine", "", &r), 0);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.body, "Mock answer from up-model to: still fine"));
  mg_h_resp_free(&r);
}

/* ---- JSON ---------------------------------------------------------------- */

U cJSON *json_body(const struct mg_h_resp *r) {
  cJSON *v = cJSON_Parse(r->body);
  if (v == NULL)
    fail_msg("not JSON (status %d): %s", r->status, r->body);
  return v;
}

/* "a.b.0.c": object members and array indices. */
U const cJSON *at(const cJSON *v, const char *path) {
  char buf[256], *tok, *save = NULL;
  snprintf(buf, sizeof(buf), "%s", path);
  for (tok = strtok_r(buf, ".", &save); tok && v;
       tok = strtok_r(NULL, ".", &save)) {
    if (cJSON_IsArray(v))
      v = cJSON_GetArrayItem(v, atoi(tok));
    else
      v = cJSON_GetObjectItemCaseSensitive(v, tok);
  }
  return v;
}

U const char *str_at(const cJSON *v, const char *path) {
  const cJSON *s = at(v, path);
  if (!cJSON_IsString(s))
    fail_msg("%s is not a string", path);
  return s->valuestring;
}

/* The response is an OpenAI-shaped error with this status and code:
 * {"error":{"message":"...","type":"...","param":null|"...","code":"..."}}
 * The message is copied into msg when msg is not NULL. */
U void assert_error_msg(const struct mg_h_resp *r, int status, const char *code,
                        char *msg, size_t msgn) {
  char v[128];
  cJSON *a;
  const cJSON *p;
  if (r->status != status)
    fail_msg("want %d %s, got %d: %s", status, code, r->status, r->body);
  assert_true(r->complete);
  assert_non_null(mg_h_header(r, "content-type", v, sizeof(v)));
  assert_string_equal(v, "application/json");
  a = json_body(r);
  assert_true(cJSON_IsObject(a) && cJSON_GetArraySize(a) == 1);
  assert_true(cJSON_IsObject(at(a, "error")));
  assert_true(strlen(str_at(a, "error.message")) > 0);
  assert_true(strlen(str_at(a, "error.type")) > 0);
  p = at(a, "error.param");
  assert_true(cJSON_IsNull(p) || cJSON_IsString(p));
  if (!cJSON_IsString(at(a, "error.code")) ||
      strcmp(str_at(a, "error.code"), code) != 0)
    fail_msg("want code %s: %s", code, r->body);
  if (msg)
    snprintf(msg, msgn, "%s", str_at(a, "error.message"));
  cJSON_Delete(a);
}

U void assert_error(const struct mg_h_resp *r, int status, const char *code) {
  assert_error_msg(r, status, code, NULL, 0);
}

/* x-modelgate-decision: 32 lowercase hex digits; copied into id (33). */
U bool decision_id(const struct mg_h_resp *r, char *id) {
  char v[128];
  size_t i;
  if (mg_h_header(r, "x-modelgate-decision", v, sizeof(v)) == NULL ||
      strlen(v) != 32)
    return false;
  for (i = 0; i < 32; i++)
    if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f')))
      return false;
  if (id)
    memcpy(id, v, 33);
  return true;
}

/* ---- mock statistics ----------------------------------------------------- */

U double stat_num(int mock_port, const char *pointer) {
  char *s = mg_h_mock_stats(mock_port);
  double d;
  assert_non_null(s);
  d = mg_h_json_num(s, pointer, -1);
  free(s);
  return d;
}

/* Poll a statistic until it is >= lo and <= hi, or time runs out; returns
 * the last value. */
U double stat_wait(int mock_port, const char *pointer, double lo, double hi,
                   int timeout_ms) {
  double deadline = mg_h_now_ms() + timeout_ms, d;
  while (((d = stat_num(mock_port, pointer)) < lo || d > hi) &&
         mg_h_now_ms() < deadline)
    mg_h_sleep_ms(10);
  return d;
}

U void set_mock(int mock_port, const char *json) {
  assert_int_equal(mg_h_mock_set(mock_port, json), 0);
}

/* ---- /metrics --------------------------------------------------------------
 */

U char *metrics(int gate_port) {
  struct mg_h_resp r;
  char *s;
  assert_int_equal(get(gate_port, "/metrics", &r), 0);
  assert_int_equal(r.status, 200);
  s = r.body;
  r.body = NULL;
  mg_h_resp_free(&r);
  return s;
}

/* The value of one series ("name{labels}" exactly as rendered, or a bare
 * name), or -1 when it is absent. */
U double metric_in(const char *text, const char *series) {
  size_t sl = strlen(series);
  const char *p = text;
  while (p && *p) {
    if (strncmp(p, series, sl) == 0 && p[sl] == ' ')
      return strtod(p + sl + 1, NULL);
    p = strchr(p, '\n');
    if (p)
      p++;
  }
  return -1;
}

U double metric(int gate_port, const char *series) {
  char *s = metrics(gate_port);
  double d = metric_in(s, series);
  free(s);
  return d;
}

U double metric_wait(int gate_port, const char *series, double want,
                     int timeout_ms) {
  double deadline = mg_h_now_ms() + timeout_ms, d;
  while ((d = metric(gate_port, series)) != want && mg_h_now_ms() < deadline)
    mg_h_sleep_ms(10);
  return d;
}

/* ---- event streams ------------------------------------------------------- */

/* The `data:` payloads of an event stream body, in order; rest: what
 * follows the last complete event ("" for a clean stream). */
struct events {
  char **items;
  size_t n;
  const char *rest;
};

U void events_parse(const char *body, struct events *ev) {
  const char *p = body;
  size_t cap = 64;
  ev->n = 0;
  ev->items = malloc(cap * sizeof(*ev->items));
  assert_non_null(ev->items);
  for (;;) {
    const char *end = strstr(p, "\n\n");
    if (end == NULL || strncmp(p, "data: ", 6) != 0)
      break;
    if (ev->n == cap) {
      cap *= 2;
      ev->items = realloc(ev->items, cap * sizeof(*ev->items));
      assert_non_null(ev->items);
    }
    ev->items[ev->n++] = strndup(p + 6, (size_t)(end - p - 6));
    p = end + 2;
  }
  ev->rest = p;
}

U void events_free(struct events *ev) {
  size_t i;
  for (i = 0; i < ev->n; i++)
    free(ev->items[i]);
  free(ev->items);
  ev->items = NULL;
  ev->n = 0;
}

/* The event is an OpenAI-style error event with this code. */
U void assert_error_event(const char *payload, const char *code) {
  cJSON *a = cJSON_Parse(payload);
  if (a == NULL)
    fail_msg("error event is not JSON: %s", payload);
  assert_true(cJSON_IsObject(at(a, "error")));
  assert_true(strlen(str_at(a, "error.message")) > 0);
  assert_string_equal(str_at(a, "error.type"), "server_error");
  if (!cJSON_IsString(at(a, "error.code")) ||
      strcmp(str_at(a, "error.code"), code) != 0)
    fail_msg("want an error event with code %s: %s", code, payload);
  cJSON_Delete(a);
}

/* ---- raw reads ----------------------------------------------------------- */

/* Bytes read from a socket so far. */
struct raw {
  char *data;
  size_t len, cap;
  bool closed; /* the peer closed (or reset) */
};

U void raw_free(struct raw *w) {
  free(w->data);
  memset(w, 0, sizeof(*w));
}

/* Read what is there within timeout_ms (at most one recv). Returns the
 * number of bytes added. */
U size_t raw_read_once(int fd, struct raw *w, int timeout_ms) {
  struct pollfd pfd = {fd, POLLIN, 0};
  ssize_t n;
  if (w->closed || poll(&pfd, 1, timeout_ms) <= 0)
    return 0;
  if (w->cap - w->len < 65536 + 1) {
    w->cap = w->cap ? w->cap * 2 : 131072;
    w->data = realloc(w->data, w->cap);
    assert_non_null(w->data);
  }
  n = recv(fd, w->data + w->len, 65536, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
    return 0;
  if (n <= 0) {
    w->closed = true;
    return 0;
  }
  w->len += (size_t)n;
  w->data[w->len] = '\0';
  return (size_t)n;
}

/* Read until needle has appeared `times` times, the peer closed, or
 * timeout_ms passed. True when it appeared often enough. */
U bool raw_read_until(int fd, struct raw *w, const char *needle, size_t times,
                      int timeout_ms) {
  double deadline = mg_h_now_ms() + timeout_ms;
  while (count_in(w->data ? w->data : "", w->len, needle) < times) {
    double left = deadline - mg_h_now_ms();
    if (w->closed || left <= 0)
      return false;
    raw_read_once(fd, w, (int)left + 1);
  }
  return true;
}

/* Connect and expect a refusal (nothing listens). */
U bool connect_refused(int port) {
  struct sockaddr_in sa;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), rc;
  bool refused;
  assert_true(fd >= 0);
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  do
    rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
  while (rc != 0 && errno == EINTR);
  refused = rc != 0 && errno == ECONNREFUSED;
  close(fd);
  return refused;
}

#endif
