/* test_fallbacks.h - helpers shared by the graceful-degradation suites
 * (test_fallbacks*.c): configs written with single quotes and placeholders,
 * answers checked by the headers that say who served them and why, mock
 * counts per model, a tiny traditional (non-AI) HTTP service, latency
 * percentiles.
 *
 * Include after common.h. Functions are static and marked unused, as in
 * common.h: each suite takes what it needs. */
#ifndef MG_TEST_FALLBACKS_H
#define MG_TEST_FALLBACKS_H

#include <math.h>
#include <pthread.h>

/* Timing bounds scale with the build: the ASan + UBSan Debug build runs
 * everything about three times slower, and CI machines are busy. */
#ifdef MG_SANITIZE
#define SLOW 4
#else
#define SLOW 1
#endif

#define STREAM ",\"stream\":true"

/* ---- configs ------------------------------------------------------------- */

/* A port where nothing listens, held for the whole test process. */
U int dead_port(void) {
  static int fd = -1, port;
  if (fd < 0)
    port = closed_port(&fd);
  return port;
}

/* The traditional service's port, when a suite runs one (0 otherwise). */
static int trad_port_g;

/* Config and behaviour text is written with single quotes; placeholders:
 * @MOCK  the mock's base URL (http://127.0.0.1:PORT/v1)
 * @DEAD  a base URL where nothing listens
 * @TRAD  the traditional service's URL (http://127.0.0.1:PORT/faq) */
U char *expand(const struct tenv *e, const char *s) {
  size_t cap = strlen(s) * 2 + 256, n = 0;
  char *out = malloc(cap);
  assert_non_null(out);
  while (*s) {
    char piece[64];
    const char *add = NULL;
    size_t al;
    if (strncmp(s, "@MOCK", 5) == 0) {
      snprintf(piece, sizeof(piece), "http://127.0.0.1:%d/v1", e->mock.port);
      add = piece;
      s += 5;
    } else if (strncmp(s, "@DEAD", 5) == 0) {
      snprintf(piece, sizeof(piece), "http://127.0.0.1:%d/v1", dead_port());
      add = piece;
      s += 5;
    } else if (strncmp(s, "@TRAD", 5) == 0) {
      snprintf(piece, sizeof(piece), "http://127.0.0.1:%d/faq", trad_port_g);
      add = piece;
      s += 5;
    } else {
      piece[0] = *s == '\'' ? '"' : *s;
      piece[1] = '\0';
      add = piece;
      s++;
    }
    al = strlen(add);
    if (n + al + 1 > cap) {
      cap = (n + al + 1) * 2;
      out = realloc(out, cap);
      assert_non_null(out);
    }
    memcpy(out + n, add, al);
    n += al;
  }
  out[n] = '\0';
  return out;
}

/* Start modelgate on the given root members (targets, aliases, cache...),
 * with the admin listener on a port of its own and a short grace period. */
U void gate_cfg_level(struct tenv *e, const char *level, const char *members) {
  char *body = expand(e, members);
  char *cfg = fmt("{\"admin\":{\"listen\":\"127.0.0.1:0\"},\"server\":{"
                  "\"listen\":\"127.0.0.1:0\",\"log_level\":\"%s\","
                  "\"shutdown_grace_ms\":2000},%s}",
                  level, body);
  int rc = gate_start(e, cfg);
  if (rc != 0) {
    char *log = mg_h_read_file(e->gate.log_file, NULL);
    fail_msg("modelgate did not start on %s\n%s", cfg, log ? log : "");
  }
  free(body);
  free(cfg);
}

U void gate_cfg(struct tenv *e, const char *members) {
  gate_cfg_level(e, "debug", members);
}

/* Set a mock behaviour (single quotes allowed). */
U void behave(struct tenv *e, const char *json) {
  char *s = expand(e, json);
  if (mg_h_mock_set(e->mock.port, s) != 0)
    fail_msg("mock refused behaviour %s", s);
  free(s);
}

/* Requests the mock received for an upstream model. */
U int mock_count(struct tenv *e, const char *model) {
  char ptr[128];
  double d;
  snprintf(ptr, sizeof(ptr), "/by_model/%s", model);
  d = stat_num(e->mock.port, ptr);
  return d < 0 ? 0 : (int)d;
}

/* The last body the mock received for model, parsed (caller deletes). */
U cJSON *mock_last_body(struct tenv *e, const char *model) {
  char *s = mg_h_mock_stats(e->mock.port);
  cJSON *all, *b;
  assert_non_null(s);
  all = cJSON_Parse(s);
  free(s);
  assert_non_null(all);
  b = cJSON_DetachItemFromObjectCaseSensitive(
      cJSON_GetObjectItemCaseSensitive(all, "last"), model);
  cJSON_Delete(all);
  if (b == NULL)
    fail_msg("the mock has no request for model %s", model);
  all = cJSON_DetachItemFromObjectCaseSensitive(b, "body");
  cJSON_Delete(b);
  assert_non_null(all);
  return all;
}

/* ---- requests ------------------------------------------------------------ */

/* A chat request for alias on a new connection; extra: more body members. */
U void ask(struct tenv *e, const char *alias, const char *text,
           const char *extra, struct mg_h_resp *r) {
  char *b = chat_body(alias, text, extra);
  if (mg_h_request(e->gate.port, "POST", "/v1/chat/completions", NULL, b, r,
                   10000 * SLOW) != 0)
    fail_msg("no complete answer to %s (status %d, %.0f ms): %s", b, r->status,
             r->ms, r->body ? r->body : "");
  free(b);
}

/* The same with header lines ("Name: v\r\n"). */
U void ask_h(struct tenv *e, const char *alias, const char *text,
             const char *extra, const char *headers, struct mg_h_resp *r) {
  char *b = chat_body(alias, text, extra);
  if (mg_h_request(e->gate.port, "POST", "/v1/chat/completions", headers, b, r,
                   10000 * SLOW) != 0)
    fail_msg("no complete answer to %s (status %d): %s", b, r->status,
             r->body ? r->body : "");
  free(b);
}

/* A header's value (from a small ring of buffers), or NULL. */
U const char *hdr(const struct mg_h_resp *r, const char *name) {
  static char v[8][512];
  static int k;
  k = (k + 1) % 8;
  return mg_h_header(r, name, v[k], sizeof(v[k]));
}

/* Header name has value want; want NULL: the header is absent. */
#define assert_hdr(r, name, want) check_hdr((r), (name), (want), __LINE__)
U void check_hdr(const struct mg_h_resp *r, const char *name, const char *want,
                 int line) {
  const char *v = hdr(r, name);
  if (want == NULL && v != NULL)
    fail_msg("line %d: unexpected %s: %s (status %d, body %s)", line, name, v,
             r->status, r->body);
  if (want != NULL && (v == NULL || strcmp(v, want) != 0))
    fail_msg("line %d: want %s: %s, got %s (status %d, body %s)", line, name,
             want, v ? v : "(absent)", r->status, r->body);
}

/* The answer has this status, was served by `by` and, when `why` is not
 * NULL, after a fallback for that reason (NULL: no fallback header). */
#define assert_served(r, status, by, why)                                      \
  check_served((r), (status), (by), (why), __LINE__)
U void check_served(const struct mg_h_resp *r, int status, const char *by,
                    const char *why, int line) {
  if (r->status != status)
    fail_msg("line %d: want status %d, got %d: %s", line, status, r->status,
             r->body);
  check_hdr(r, "x-modelgate-served-by", by, line);
  check_hdr(r, "x-modelgate-fallback", why, line);
  if (!decision_id(r, NULL))
    fail_msg("line %d: no decision id", line);
}

/* choices[0].message.content of a chat completion (copied into out). */
U const char *content_of(const struct mg_h_resp *r, char *out, size_t n) {
  cJSON *a = json_body(r);
  const cJSON *c = at(a, "choices.0.message.content");
  if (!cJSON_IsString(c))
    fail_msg("no message content in %s", r->body);
  snprintf(out, n, "%s", c->valuestring);
  cJSON_Delete(a);
  return out;
}

#define assert_content(r, want) check_content((r), (want), __LINE__)
U void check_content(const struct mg_h_resp *r, const char *want, int line) {
  char c[1024];
  content_of(r, c, sizeof(c));
  if (strcmp(c, want) != 0)
    fail_msg("line %d: want content \"%s\", got \"%s\"", line, want, c);
}

/* A chat event stream: every event but the last is a chat.completion.chunk
 * of `model`, the last is [DONE], nothing follows; the deltas' content is
 * concatenated into out. Returns the number of events. */
U size_t sse_content(const struct mg_h_resp *r, const char *model, char *out,
                     size_t n) {
  struct events ev;
  size_t i, k;
  const char *ct = hdr(r, "content-type");
  if (ct == NULL || strcmp(ct, "text/event-stream") != 0)
    fail_msg("not an event stream (%s): %s", ct ? ct : "no content-type",
             r->body);
  if (!r->complete)
    fail_msg("event stream did not end properly: %s", r->body);
  out[0] = '\0';
  events_parse(r->body, &ev);
  if (ev.n < 2 || strcmp(ev.items[ev.n - 1], "[DONE]") != 0 ||
      strcmp(ev.rest, "") != 0)
    fail_msg("want chunks then [DONE]: %s", r->body);
  for (i = 0; i + 1 < ev.n; i++) {
    cJSON *a = cJSON_Parse(ev.items[i]);
    const cJSON *c;
    if (a == NULL)
      fail_msg("event %zu is not JSON: %s", i, ev.items[i]);
    if (strcmp(str_at(a, "object"), "chat.completion.chunk") != 0)
      fail_msg("event %zu is not a chat.completion.chunk: %s", i, ev.items[i]);
    if (model && strcmp(str_at(a, "model"), model) != 0)
      fail_msg("event %zu: want model %s: %s", i, model, ev.items[i]);
    /* Nobody asked for logprobs: no chunk carries any. */
    c = at(a, "choices.0.logprobs");
    if (c && !cJSON_IsNull(c))
      fail_msg("event %zu carries logprobs nobody asked for: %s", i,
               ev.items[i]);
    c = at(a, "choices.0.delta.content");
    if (cJSON_IsString(c)) {
      k = strlen(out);
      snprintf(out + k, n - k, "%s", c->valuestring);
    }
    cJSON_Delete(a);
  }
  k = ev.n;
  events_free(&ev);
  return k;
}

#define assert_sse(r, model, want) check_sse((r), (model), (want), __LINE__)
U void check_sse(const struct mg_h_resp *r, const char *model, const char *want,
                 int line) {
  char c[1024];
  sse_content(r, model, c, sizeof(c));
  if (strcmp(c, want) != 0)
    fail_msg("line %d: want streamed content \"%s\", got \"%s\"", line, want,
             c);
}

/* A metric that may be absent counts as 0. */
U double mval(struct tenv *e, const char *series) {
  double d = metric(e->gate.port, series);
  return d < 0 ? 0 : d;
}

#define assert_metric(e, series, want)                                         \
  check_metric((e), (series), (want), __LINE__)
U void check_metric(struct tenv *e, const char *series, double want, int line) {
  double d = mval(e, series);
  if (d != want)
    fail_msg("line %d: want %s %g, got %g", line, series, want, d);
}

#define assert_between(what, v, lo, hi)                                        \
  check_between((what), (double)(v), (double)(lo), (double)(hi), __LINE__)
U void check_between(const char *what, double v, double lo, double hi,
                     int line) {
  if (v < lo || v > hi)
    fail_msg("line %d: %s = %.1f, want %.1f..%.1f", line, what, v, lo, hi);
}

/* ---- latency ------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The p-th percentile (nearest rank) of n samples; sorts a copy. */
U double percentile(const double *v, size_t n, double p) {
  double *s = malloc(n * sizeof(*s)), r;
  size_t k;
  assert_non_null(s);
  memcpy(s, v, n * sizeof(*s));
  qsort(s, n, sizeof(*s), cmp_double);
  k = (size_t)ceil(p / 100.0 * (double)n);
  r = s[k == 0 ? 0 : k - 1];
  free(s);
  return r;
}

/* ---- a traditional (non-AI) service -------------------------------------- */

/* A tiny HTTP/1.1 server on a thread: for every POST it records the body
 * and answers `answer` (application/json, or text/plain when it does not
 * start with '{') with `status`, after `delay_ms`, then closes. */
struct trad {
  int lfd;
  int port;
  pthread_t th;
  pthread_mutex_t mu;
  bool stop;
  int requests; /* guarded by mu */
  char last_body[8192];
  char last_path[256];
  char answer[4096];
  int status;
  int delay_ms;
};

U void trad_set(struct trad *t, int status, int delay_ms, const char *answer) {
  pthread_mutex_lock(&t->mu);
  t->status = status;
  t->delay_ms = delay_ms;
  snprintf(t->answer, sizeof(t->answer), "%s", answer);
  pthread_mutex_unlock(&t->mu);
}

U int trad_requests(struct trad *t) {
  int n;
  pthread_mutex_lock(&t->mu);
  n = t->requests;
  pthread_mutex_unlock(&t->mu);
  return n;
}

/* Serve one connection: one request, one answer, close. */
static void trad_serve(struct trad *t, int fd) {
  char buf[16384], out[8192];
  size_t len = 0, clen = 0, hl;
  char *end = NULL, *p;
  int status, delay;
  const char *ctype;

  for (;;) {
    struct pollfd pfd = {fd, POLLIN, 0};
    ssize_t k;
    if (poll(&pfd, 1, 5000) <= 0)
      return;
    k = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
    if (k <= 0)
      return;
    len += (size_t)k;
    buf[len] = '\0';
    if (end == NULL && (end = strstr(buf, "\r\n\r\n")) != NULL) {
      for (p = buf; p && p < end; p = strstr(p, "\r\n")) {
        if (*p == '\r')
          p += 2;
        if (strncasecmp(p, "content-length:", 15) == 0)
          clen = strtoul(p + 15, NULL, 10);
      }
    }
    if (end && len >= (size_t)(end + 4 - buf) + clen)
      break;
    if (len >= sizeof(buf) - 1)
      return;
  }
  hl = (size_t)(end + 4 - buf);
  pthread_mutex_lock(&t->mu);
  t->requests++;
  snprintf(t->last_body, sizeof(t->last_body), "%.*s", (int)clen, buf + hl);
  p = strchr(buf, ' ');
  snprintf(t->last_path, sizeof(t->last_path), "%.*s",
           p ? (int)strcspn(p + 1, " ") : 0, p ? p + 1 : "");
  status = t->status;
  delay = t->delay_ms;
  ctype = t->answer[0] == '{' ? "application/json" : "text/plain";
  snprintf(out, sizeof(out),
           "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
           "Connection: close\r\n\r\n%s",
           status, ctype, strlen(t->answer), t->answer);
  pthread_mutex_unlock(&t->mu);
  if (delay > 0)
    mg_h_sleep_ms(delay);
  (void)send(fd, out, strlen(out), MSG_NOSIGNAL);
}

static void *trad_main(void *arg) {
  struct trad *t = arg;
  for (;;) {
    struct pollfd pfd = {t->lfd, POLLIN, 0};
    bool stop;
    int fd;
    pthread_mutex_lock(&t->mu);
    stop = t->stop;
    pthread_mutex_unlock(&t->mu);
    if (stop)
      return NULL;
    if (poll(&pfd, 1, 50) <= 0)
      continue;
    fd = accept4(t->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
      continue;
    trad_serve(t, fd);
    close(fd);
  }
}

U void trad_start(struct trad *t) {
  struct sockaddr_in sa;
  socklen_t sl = sizeof(sa);
  memset(t, 0, sizeof(*t));
  pthread_mutex_init(&t->mu, NULL);
  t->status = 200;
  snprintf(t->answer, sizeof(t->answer), "{\"answer\":\"traditional\"}");
  t->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(t->lfd >= 0);
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(t->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(listen(t->lfd, 64), 0);
  assert_int_equal(getsockname(t->lfd, (struct sockaddr *)&sa, &sl), 0);
  t->port = ntohs(sa.sin_port);
  trad_port_g = t->port;
  assert_int_equal(pthread_create(&t->th, NULL, trad_main, t), 0);
}

U void trad_stop(struct trad *t) {
  pthread_mutex_lock(&t->mu);
  t->stop = true;
  pthread_mutex_unlock(&t->mu);
  pthread_join(t->th, NULL);
  close(t->lfd);
  pthread_mutex_destroy(&t->mu);
  trad_port_g = 0;
}

#endif
