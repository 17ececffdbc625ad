/* test_ramps.h - helpers shared by the ramp suites (test_ramps*.c): a
 * modelgate with one ramped flag in front of the mock, the admin API with
 * its bearer token, client traffic from threads on keep-alive connections
 * (counted by the test's phase at the time each request was sent), the
 * decision log's event lines, and the ramp's part of GET /admin/state.
 *
 * The world of every test: flag "chat" behind alias "gpt-ramp", control
 * variant "old" on target "old" (upstream model m-old), treatment variant
 * "new" on target "new" (upstream model m-new) whose fallback is "old".
 * Breakers are off, so every failure of "new" is a real upstream call that
 * the fallback covers. The state file and the decision log live in the
 * test's scratch directory (absolute paths), so a restarted modelgate
 * finds them again.
 *
 * Include after common.h. Functions are static and marked unused. */
#ifndef MG_TEST_RAMPS_H
#define MG_TEST_RAMPS_H

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>

/* Timing bounds scale with the build: the ASan + UBSan Debug build runs
 * everything several times slower, and CI machines are busy. */
#ifdef MG_SANITIZE
#define SLOW 3
#else
#define SLOW 1
#endif

#define TOKEN "ramp-token-4f1c9a"
#define AUTH "Authorization: Bearer " TOKEN "\r\n"
#define ALIAS "gpt-ramp"

/* ---- config and processes --------------------------------------------------
 */

U void state_path(const struct tenv *e, char *out, size_t n) {
  snprintf(out, n, "%s/state.json", e->dir);
}

U void dlog_path(const struct tenv *e, char *out, size_t n) {
  snprintf(out, n, "%s/decisions.jsonl", e->dir);
}

/* The config: ramp and guards are the members' JSON ("ramp":{...} is
 * written as given); flag_extra: more members of the flag (rules, allow
 * lists...), beginning with a comma, or ""; new_extra: more members of
 * target "new", likewise. Single quotes become double. */
U char *ramp_config_t(const struct tenv *e, const char *ramp,
                      const char *guards, const char *flag_extra,
                      const char *new_extra) {
  char st[400], dl[400], *cfg, *out;
  state_path(e, st, sizeof(st));
  dlog_path(e, dl, sizeof(dl));
  cfg = fmt("{'admin':{'listen':'127.0.0.1:0','state_file':'%s'},"
            "'server':{'listen':'127.0.0.1:0','log_level':'info',"
            "'shutdown_grace_ms':2000},"
            "'decision_log':{'path':'%s','flush_ms':20},"
            "'targets':{"
            "'old':{'base_url':'http://127.0.0.1:%d/v1','model':'m-old',"
            "'breaker':{'enabled':false}},"
            "'new':{'base_url':'http://127.0.0.1:%d/v1','model':'m-new',"
            "'fallbacks':['old']%s}},"
            "'flags':{'chat':{'off_variant':'old','variants':{"
            "'old':{'target':'old'},'new':{'target':'new'}}%s,"
            "'ramp':%s,'guards':%s}},"
            "'aliases':{'" ALIAS "':{'flag':'chat'}}}",
            st, dl, e->mock.port, e->mock.port, new_extra, flag_extra, ramp,
            guards);
  out = q(e, cfg);
  free(cfg);
  return out;
}

U char *ramp_config(const struct tenv *e, const char *ramp, const char *guards,
                    const char *flag_extra) {
  return ramp_config_t(e, ramp, guards, flag_extra,
                       ",'breaker':{'enabled':false}");
}

/* Start (or start again) modelgate on the config file as it is, with the
 * admin token in its environment. */
U void gate_run(struct tenv *e) {
  const char *env[] = {"MODELGATE_ADMIN_TOKEN=" TOKEN, NULL};
  if (mg_h_start_gate(&e->gate, e->config, env) != 0) {
    char *cfg = mg_h_read_file(e->config, NULL);
    fail_msg("modelgate did not start on %s", cfg ? cfg : "?");
  }
  assert_true(e->gate.admin_port > 0);
}

U void gate_ramp(struct tenv *e, const char *ramp, const char *guards,
                 const char *flag_extra) {
  char *cfg = ramp_config(e, ramp, guards, flag_extra);
  assert_int_equal(mg_h_write_file(e->config, cfg), 0);
  free(cfg);
  gate_run(e);
}

/* Requests the mock received for an upstream model. */
U long mock_requests(struct tenv *e, const char *model) {
  char ptr[128];
  double d;
  snprintf(ptr, sizeof(ptr), "/by_model/%s", model);
  d = stat_num(e->mock.port, ptr);
  return d < 0 ? 0 : (long)d;
}

/* ---- admin API --------------------------------------------------------------
 */

U void admin(struct tenv *e, const char *method, const char *path,
             const char *body, struct mg_h_resp *r) {
  if (mg_h_request(e->gate.admin_port, method, path, AUTH, body, r,
                   T_MS * SLOW) != 0)
    fail_msg("no answer from the admin API to %s %s", method, path);
}

/* GET /admin/state, parsed (caller deletes). */
U cJSON *admin_state(struct tenv *e) {
  struct mg_h_resp r;
  cJSON *st;
  admin(e, "GET", "/admin/state", NULL, &r);
  if (r.status != 200)
    fail_msg("GET /admin/state: %d %s", r.status, r.body);
  st = json_body(&r);
  mg_h_resp_free(&r);
  return st;
}

/* POST /admin/flags/chat/ramp/<action>; returns the status (the body of a
 * refusal is checked to be OpenAI-shaped with code ramp_conflict). When
 * out is not NULL it gets the state the action answered with (200 only):
 * the state right after the action, in the same turn of modelgate's loop. */
U int ramp_action_state(struct tenv *e, const char *action, cJSON **out) {
  struct mg_h_resp r;
  char path[128];
  int status;
  snprintf(path, sizeof(path), "/admin/flags/chat/ramp/%s", action);
  admin(e, "POST", path, NULL, &r);
  status = r.status;
  if (status == 409)
    assert_error(&r, 409, "ramp_conflict");
  else if (status != 200)
    fail_msg("POST %s: %d %s", path, r.status, r.body);
  if (out)
    *out = status == 200 ? json_body(&r) : NULL;
  mg_h_resp_free(&r);
  return status;
}

U int ramp_action(struct tenv *e, const char *action) {
  return ramp_action_state(e, action, NULL);
}

U double num_at(const cJSON *v, const char *path) {
  const cJSON *n = at(v, path);
  if (!cJSON_IsNumber(n)) {
    char *s = cJSON_PrintUnformatted(v);
    fail_msg("%s is not a number in %s", path, s ? s : "?");
  }
  return n->valuedouble;
}

/* flags.chat.ramp of a state. */
U const cJSON *ramp_in(const cJSON *st) {
  const cJSON *r = at(st, "flags.chat.ramp");
  if (!cJSON_IsObject(r))
    fail_msg("no flags.chat.ramp in /admin/state");
  return r;
}

/* Poll GET /admin/state until the ramp has this status (NULL: any) at a
 * step of at least min_step; returns that state (caller deletes). Fails
 * with the last state seen when timeout_ms passes. */
U cJSON *wait_ramp(struct tenv *e, const char *status, int min_step,
                   int timeout_ms) {
  double deadline = mg_h_now_ms() + timeout_ms;
  for (;;) {
    cJSON *st = admin_state(e);
    const cJSON *r = ramp_in(st);
    if ((status == NULL || strcmp(str_at(r, "status"), status) == 0) &&
        num_at(r, "step") >= min_step)
      return st;
    if (mg_h_now_ms() > deadline) {
      char *s = cJSON_PrintUnformatted(r);
      fail_msg("the ramp did not reach %s at step >= %d in %d ms: %s",
               status ? status : "any status", min_step, timeout_ms, s);
    }
    cJSON_Delete(st);
    mg_h_sleep_ms(25);
  }
}

/* Weight in force of a variant of flag chat in a state. */
U double weight_in(const cJSON *st, const char *variant) {
  char p[128];
  snprintf(p, sizeof(p), "flags.chat.weights.%s", variant);
  return num_at(st, p);
}

/* ---- metrics ----------------------------------------------------------------
 */

#define M_STEP "modelgate_ramp_step{flag=\"chat\"}"
#define M_ROLLED "modelgate_ramp_rolled_back{flag=\"chat\"}"
#define M_ROLLBACKS(guard)                                                     \
  "modelgate_ramp_rollbacks_total{flag=\"chat\",guard=\"" guard "\"}"
#define M_WEIGHT(v)                                                            \
  "modelgate_flag_weight_percent{flag=\"chat\",variant=\"" v "\"}"
#define M_WIN_REQ(v)                                                           \
  "modelgate_ramp_window_requests{flag=\"chat\",variant=\"" v "\"}"
#define M_WIN_ERR(v)                                                           \
  "modelgate_ramp_window_error_rate{flag=\"chat\",variant=\"" v "\"}"
#define M_WIN_P95(v)                                                           \
  "modelgate_ramp_window_p95_ms{flag=\"chat\",variant=\"" v "\"}"

/* The value of a series in a /metrics text; fails when it is absent. */
U double series(const char *text, const char *name) {
  double d = metric_in(text, name);
  if (d < 0)
    fail_msg("no series %s in /metrics", name);
  return d;
}

/* ---- decision log events
 * ------------------------------------------------------ */

/* Event lines ({"event": ...}) of the decision log named `event` (NULL:
 * all), in order, as a JSON array (caller deletes). Request records are
 * skipped without being parsed. */
U cJSON *log_events(struct tenv *e, const char *event) {
  char path[400], want[96];
  size_t len;
  char *s, *line, *save = NULL;
  cJSON *arr = cJSON_CreateArray();
  dlog_path(e, path, sizeof(path));
  snprintf(want, sizeof(want), "\"event\":\"%s\"", event ? event : "");
  s = mg_h_read_file(path, &len);
  if (s == NULL)
    return arr;
  for (line = strtok_r(s, "\n", &save); line;
       line = strtok_r(NULL, "\n", &save)) {
    cJSON *j;
    /* Events carry "event" right after "ts"; records never do. */
    if (strstr(line, "\"event\":") == NULL ||
        (event && strstr(line, want) == NULL))
      continue;
    j = cJSON_Parse(line);
    if (j == NULL)
      fail_msg("an event line of the decision log is not JSON: %s", line);
    cJSON_AddItemToArray(arr, j);
  }
  free(s);
  return arr;
}

/* Wait until at least n lines of `event` are in the decision log. */
U cJSON *wait_events(struct tenv *e, const char *event, int n, int timeout_ms) {
  double deadline = mg_h_now_ms() + timeout_ms;
  for (;;) {
    cJSON *a = log_events(e, event);
    if (cJSON_GetArraySize(a) >= n)
      return a;
    cJSON_Delete(a);
    if (mg_h_now_ms() > deadline) {
      a = log_events(e, NULL);
      fail_msg("want %d \"%s\" event line(s) in the decision log; events: %s",
               n, event, cJSON_PrintUnformatted(a));
    }
    mg_h_sleep_ms(20);
  }
}

/* The common members of a ramp event line. */
U void check_event(const cJSON *ev, const char *event, const char *status,
                   int step, double weight) {
  char ts[64];
  assert_string_equal(str_at(ev, "event"), event);
  assert_string_equal(str_at(ev, "flag"), "chat");
  assert_string_equal(str_at(ev, "variant"), "new");
  assert_string_equal(str_at(ev, "status"), status);
  assert_int_equal((int)num_at(ev, "step"), step);
  assert_true(fabs(num_at(ev, "weight") - weight) < 1e-9);
  snprintf(ts, sizeof(ts), "%s", str_at(ev, "ts"));
  assert_true(strlen(ts) >= 20 && ts[4] == '-' && ts[10] == 'T');
}

/* ---- client traffic
 * ------------------------------------------------------------ */

#define LOAD_THREADS 8
#define LOAD_PHASES 4

/* Answers counted by the phase the test was in when the request was sent:
 * a request sent after the test saw a change (a rollback, say) is routed
 * on the changed state, because modelgate makes a change and answers the
 * admin request in the same turn of its loop. */
struct load_counts {
  long total;          /* answers that arrived */
  long bad;            /* not a complete 200 (or no answer at all) */
  long treat, control; /* by x-modelgate-variant */
  long rollout;        /* x-modelgate-reason: rollout */
  long served_new;     /* x-modelgate-served-by: new */
  long covered;        /* variant new, served by old after a fallback */
  long breaker_open;   /* x-modelgate-fallback: breaker_open */
};

struct load {
  int port;
  int nthreads;
  int nusers;
  int pace_us;               /* pause between a thread's requests */
  int timeout_ms;            /* for one answer */
  const char *extra_headers; /* on every request, or NULL */
  atomic_bool stop;
  atomic_int phase;
  atomic_long seq; /* requests sent, all threads */
  pthread_t th[LOAD_THREADS];
  struct load_counts c[LOAD_PHASES]; /* under load_mu */
  char first_bad[1024];              /* under load_mu */
};

/* One lock for the counts, never destroyed: a finished load's counts are
 * still read. */
static pthread_mutex_t load_mu = PTHREAD_MUTEX_INITIALIZER;

struct load_arg {
  struct load *l;
  int k;
};

static void load_record(struct load *l, int phase, const struct mg_h_resp *r,
                        int rc, const char *what) {
  struct load_counts *c = &l->c[phase];
  char v[128], by[128], fb[128], why[128];
  bool has_v = mg_h_header(r, "x-modelgate-variant", v, sizeof(v)) != NULL;
  bool has_by = mg_h_header(r, "x-modelgate-served-by", by, sizeof(by)) != NULL;
  bool has_fb = mg_h_header(r, "x-modelgate-fallback", fb, sizeof(fb)) != NULL;
  bool has_why = mg_h_header(r, "x-modelgate-reason", why, sizeof(why)) != NULL;
  pthread_mutex_lock(&load_mu);
  if (rc != 0 || r->status != 200) {
    c->bad++;
    if (l->first_bad[0] == '\0')
      snprintf(l->first_bad, sizeof(l->first_bad),
               "phase %d: %s: rc %d status %d: %.600s", phase, what, rc,
               r->status, r->body ? r->body : "(no body)");
  }
  if (rc == 0) {
    c->total++;
    if (has_v && strcmp(v, "new") == 0)
      c->treat++;
    else if (has_v && strcmp(v, "old") == 0)
      c->control++;
    if (has_why && strcmp(why, "rollout") == 0)
      c->rollout++;
    if (has_by && strcmp(by, "new") == 0)
      c->served_new++;
    if (has_v && strcmp(v, "new") == 0 && has_by && strcmp(by, "old") == 0 &&
        has_fb)
      c->covered++;
    if (has_fb && strcmp(fb, "breaker_open") == 0)
      c->breaker_open++;
  }
  pthread_mutex_unlock(&load_mu);
}

static void *load_thread(void *arg) {
  struct load_arg *a = arg;
  struct load *l = a->l;
  int fd = -1;
  long i = 0;
  while (!atomic_load(&l->stop)) {
    struct mg_h_resp r;
    char body[256], *req;
    int phase, rc, n;
    long u;
    memset(&r, 0, sizeof(r));
    if (fd < 0 && (fd = mg_h_connect(l->port)) < 0) {
      load_record(l, atomic_load(&l->phase), &r, -1, "connect failed");
      mg_h_sleep_ms(10);
      continue;
    }
    /* Users in turn, so that every bucket range sees traffic. */
    u = (i++ * l->nthreads + a->k) % l->nusers;
    snprintf(body, sizeof(body),
             "{\"model\":\"" ALIAS "\",\"user\":\"user-%ld\","
             "\"messages\":[{\"role\":\"user\",\"content\":\"hello %ld\"}]}",
             u, u);
    n = asprintf(&req,
                 "POST /v1/chat/completions HTTP/1.1\r\nHost: modelgate\r\n"
                 "Content-Type: application/json\r\n%sContent-Length: %zu"
                 "\r\n\r\n%s",
                 l->extra_headers ? l->extra_headers : "", strlen(body), body);
    if (n < 0)
      break;
    phase = atomic_load(&l->phase);
    atomic_fetch_add(&l->seq, 1);
    rc = mg_h_sends(fd, req);
    free(req);
    if (rc == 0)
      rc = mg_h_read_response(fd, &r, l->timeout_ms);
    load_record(l, phase, &r, rc, rc ? "no complete answer" : "answer");
    if (rc != 0 || r.closed) {
      close(fd);
      fd = -1;
    }
    mg_h_resp_free(&r);
    if (l->pace_us)
      usleep((useconds_t)l->pace_us);
  }
  if (fd >= 0)
    close(fd);
  free(a);
  return NULL;
}

/* The load of the running test: in static storage, so that a test that
 * fails half-way (cmocka jumps out of it) leaves nothing pointing into its
 * dead stack frame; ramp_teardown stops it. */
static struct load the_load;
static bool the_load_running;

/* Start nthreads clients over users user-0 .. user-(nusers-1), pausing
 * pace_us between requests; headers: more header lines on every request
 * ("Name: v\r\n"), or NULL. */
U struct load *load_start_h(int port, int nthreads, int nusers, int pace_us,
                            const char *headers) {
  struct load *l = &the_load;
  int k;
  assert_false(the_load_running);
  memset(l, 0, sizeof(*l));
  l->extra_headers = headers;
  l->port = port;
  /* Set before any thread starts: the threads read it. */
  l->nthreads = nthreads;
  l->nusers = nusers;
  l->pace_us = pace_us;
  l->timeout_ms = 10000 * SLOW;
  atomic_init(&l->stop, false);
  atomic_init(&l->phase, 0);
  atomic_init(&l->seq, 0);
  the_load_running = true;
  assert_true(nthreads <= LOAD_THREADS);
  for (k = 0; k < nthreads; k++) {
    struct load_arg *a = malloc(sizeof(*a));
    assert_non_null(a);
    a->l = l;
    a->k = k;
    assert_int_equal(pthread_create(&l->th[k], NULL, load_thread, a), 0);
  }
  return l;
}

U struct load *load_start(int port, int nthreads, int nusers, int pace_us) {
  return load_start_h(port, nthreads, nusers, pace_us, NULL);
}

/* Stop the clients and wait for them; the counts stay readable. */
U void load_stop(struct load *l) {
  int k;
  if (!the_load_running)
    return;
  atomic_store(&l->stop, true);
  for (k = 0; k < l->nthreads; k++)
    pthread_join(l->th[k], NULL);
  l->nthreads = 0;
  the_load_running = false;
}

/* tenv_teardown, after stopping a load a failed test left running. */
U int ramp_teardown(void **state) {
  load_stop(&the_load);
  return tenv_teardown(state);
}

U void load_phase(struct load *l, int phase) { atomic_store(&l->phase, phase); }

U struct load_counts load_counts(struct load *l, int phase) {
  struct load_counts c;
  pthread_mutex_lock(&load_mu);
  c = l->c[phase];
  pthread_mutex_unlock(&load_mu);
  return c;
}

/* Wait until `n` answers of a phase arrived. */
U void load_wait(struct load *l, int phase, long n, int timeout_ms) {
  double deadline = mg_h_now_ms() + timeout_ms;
  while (load_counts(l, phase).total < n) {
    if (mg_h_now_ms() > deadline)
      fail_msg("only %ld of %ld answers in phase %d within %d ms",
               load_counts(l, phase).total, n, phase, timeout_ms);
    mg_h_sleep_ms(10);
  }
}

/* One request of user `user` on a new connection; the variant that served
 * it is copied into v (and the target into by, when not NULL). */
U void ask_user(struct tenv *e, const char *user, char *v, size_t vn, char *by,
                size_t byn) {
  struct mg_h_resp r;
  char *b = fmt("{\"model\":\"" ALIAS "\",\"user\":\"%s\",\"messages\":"
                "[{\"role\":\"user\",\"content\":\"hi\"}]}",
                user);
  if (mg_h_request(e->gate.port, "POST", "/v1/chat/completions", NULL, b, &r,
                   T_MS * SLOW) != 0 ||
      r.status != 200)
    fail_msg("%s: status %d: %s", b, r.status, r.body ? r.body : "");
  if (mg_h_header(&r, "x-modelgate-variant", v, vn) == NULL)
    fail_msg("no x-modelgate-variant: %s", r.head);
  if (by && mg_h_header(&r, "x-modelgate-served-by", by, byn) == NULL)
    fail_msg("no x-modelgate-served-by: %s", r.head);
  free(b);
  mg_h_resp_free(&r);
}

/* Variants of users user-0 .. user-(n-1), one letter each ('n' new, 'o'
 * old) into out (n + 1 bytes); returns how many got "new". */
U int split_of(struct tenv *e, int n, char *out) {
  int i, k = 0;
  for (i = 0; i < n; i++) {
    char u[32], v[64];
    snprintf(u, sizeof(u), "user-%d", i);
    ask_user(e, u, v, sizeof(v), NULL, 0);
    out[i] = strcmp(v, "new") == 0 ? 'n' : 'o';
    k += out[i] == 'n';
  }
  out[n] = '\0';
  return k;
}

#endif
