/* test_fleet.c - instances that agree through Redis (issue 13), with real
 * redis-server processes started on free ports (no persistence: --save ''
 * --appendonly no) and two modelgate instances on loopback:
 *
 *   kill           a kill on one instance is in force on the other within
 *                  1 s (its answers come from the off variant); an unkill
 *                  on the other comes back as fast
 *   weights        weights set on one are in force on the other within
 *                  1 s; cleared the same way
 *   restart        both instances stopped, one state file removed, both
 *                  started again: the fleet's overrides are in force from
 *                  the first request (read from Redis at start)
 *   redis down     Redis killed mid-run with traffic flowing on both: not
 *                  one request fails; /readyz stays 200 and says the store
 *                  is unreachable, modelgate_store_up is 0; an admin kill is
 *                  refused with 503 store_unreachable, and with force_local
 *                  is 200 and in force on that instance only; Redis
 *                  started again, empty: the overrides set before the
 *                  outage are written back and the force_local kill
 *                  reaches the other instance; the store is up again
 *   redis stalled  Redis stopped (SIGSTOP, connections kept): both notice
 *                  within resync_ms + timeout_ms, a change is refused, and
 *                  no request is slower for it; Redis flapping (stopped and
 *                  continued five times); steady again, a kill travels
 *                  within 1 s; not one request failed throughout
 *   partition      three instances, the third reaching Redis through a
 *                  forwarder the test cuts: a kill reaches both others
 *                  within 1 s; cut off, the third serves on what it knew,
 *                  says so and refuses changes, while the other two go on
 *                  agreeing; healed, it catches up
 *   breaker hint   a breaker opening on one instance opens it on the other
 *                  within 1 s, though the other sent that target nothing */
#define _GNU_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"
#include "test_flags.h"

#include <pthread.h>
#include <stdatomic.h>

/* ---- redis ------------------------------------------------------------------ */

struct fleet {
  struct tenv *e;
  pid_t redis;
  int redis_port;
  char redis_log[320];
  struct mg_h_proc g[3];
  char cfg[3][320];
};

static bool redis_ping(int port) {
  int fd = mg_h_connect(port);
  char buf[64];
  ssize_t n = -1;
  struct pollfd pfd;
  if (fd < 0)
    return false;
  if (mg_h_sends(fd, "PING\r\n") == 0) {
    pfd.fd = fd;
    pfd.events = POLLIN;
    if (poll(&pfd, 1, 1000) == 1)
      n = read(fd, buf, sizeof(buf) - 1);
  }
  close(fd);
  return n >= 5 && memcmp(buf, "+PONG", 5) == 0;
}

static void redis_start(struct fleet *f) {
  char port[16];
  double deadline;
  snprintf(port, sizeof(port), "%d", f->redis_port);
  {
    const char *argv[] = {"redis-server", "--port",       port,
                          "--bind",       "127.0.0.1",    "--save",
                          "",             "--appendonly", "no",
                          "--dir",        f->e->dir,      NULL};
    f->redis = spawn(argv, f->redis_log);
  }
  assert_true(f->redis > 0);
  deadline = mg_h_now_ms() + 10000;
  while (!redis_ping(f->redis_port)) {
    if (mg_h_now_ms() > deadline)
      fail_msg("redis-server did not start on port %d", f->redis_port);
    mg_h_sleep_ms(20);
  }
}

static void redis_kill(struct fleet *f) {
  assert_true(reap(f->redis, SIGKILL, 5000) >= 0);
  f->redis = 0;
}

/* ---- instances ---------------------------------------------------------------- */

/* Flag "chat": ctl (t-a, model m-a) and trt (t-b, m-b), 50/50 by user;
 * t-b's breaker opens after 2 failures. */
static void write_cfg_i(struct fleet *f, int i, int redis_port) {
  {
    char *t = fmt(
        "{'admin':{'listen':'127.0.0.1:0','state_file':'@DIR/state%d.json'},"
        "'server':{'listen':'127.0.0.1:0','log_level':'info',"
        "'shutdown_grace_ms':2000},"
        "'decision_log':{'enabled':false},"
        "'redis':{'url':'redis://127.0.0.1:%d/0','prefix':'mgtest:',"
        "'timeout_ms':300,'resync_ms':1000,'instance':'i%d'},"
        "'targets':{'t-a':{'base_url':'@MOCK','model':'m-a',"
        "  'breaker':{'enabled':false}},"
        "'t-b':{'base_url':'@MOCK','model':'m-b',"
        "  'breaker':{'failures':2,'cooldown_ms':60000}}},"
        "'flags':{'chat':{'off_variant':'ctl','variants':{"
        "  'ctl':{'target':'t-a','weight':50},"
        "  'trt':{'target':'t-b','weight':50}}}},"
        "'aliases':{'m-chat':{'flag':'chat'}}}",
        i + 1, redis_port, i + 1);
    char *c = q(f->e, t);
    snprintf(f->cfg[i], sizeof(f->cfg[i]), "%s/gate%d.json", f->e->dir, i + 1);
    assert_int_equal(mg_h_write_file(f->cfg[i], c), 0);
    free(c);
    free(t);
  }
}

static void write_cfgs(struct fleet *f) {
  write_cfg_i(f, 0, f->redis_port);
  write_cfg_i(f, 1, f->redis_port);
}

static void gate_start_i(struct fleet *f, int i) {
  const char *env[] = {"MODELGATE_ADMIN_TOKEN=" TOKEN, NULL};
  if (mg_h_start_gate(&f->g[i], f->cfg[i], env) != 0)
    fail_msg("modelgate %d did not start", i + 1);
}

static int setup(void **state) {
  struct fleet *f = calloc(1, sizeof(*f));
  if (f == NULL || tenv_setup((void **)&f->e) != 0)
    return -1;
  f->redis_port = free_port();
  snprintf(f->redis_log, sizeof(f->redis_log), "%s/redis.log", f->e->dir);
  redis_start(f);
  write_cfgs(f);
  gate_start_i(f, 0);
  gate_start_i(f, 1);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fleet *f = *state;
  int i, rc = 0;
  for (i = 0; i < 3; i++)
    if (f->g[i].pid > 0 && mg_h_stop(&f->g[i], SIGTERM, 15000) != 0) {
      fprintf(stderr, "modelgate %d did not exit 0 at SIGTERM\n", i + 1);
      rc = -1;
    }
  if (f->redis > 0)
    reap(f->redis, SIGTERM, 5000);
  if (tenv_teardown((void **)&f->e) != 0)
    rc = -1;
  free(f);
  return rc;
}

/* ---- what an instance says ------------------------------------------------------ */

static cJSON *adm_at(struct fleet *f, int i, const char *method,
                     const char *path, const char *body, int want) {
  struct mg_h_resp r;
  cJSON *j;
  if (mg_h_request(f->g[i].admin_port, method, path, AUTH, body, &r,
                   T_MS * SLOW) != 0)
    fail_msg("no answer from instance %d to %s %s", i + 1, method, path);
  if (r.status != want)
    fail_msg("instance %d: %s %s: want %d, got %d: %s", i + 1, method, path,
             want, r.status, r.body);
  j = cJSON_Parse(r.body);
  mg_h_resp_free(&r);
  return j;
}

static bool killed_at(struct fleet *f, int i) {
  cJSON *st = admin_state_of(f->g[i].admin_port);
  bool k = bool_of(st, "flags.chat.killed");
  cJSON_Delete(st);
  return k;
}

/* The weight of trt in force at instance i (-1: the file's, no override). */
static double trt_weight_at(struct fleet *f, int i) {
  cJSON *st = admin_state_of(f->g[i].admin_port);
  const cJSON *w = at(st, "flags.chat.weights.trt");
  bool ov = bool_of(st, "flags.chat.weights_override");
  double d = ov && cJSON_IsNumber(w) ? w->valuedouble : -1;
  cJSON_Delete(st);
  return d;
}

static bool store_up_at(struct fleet *f, int i) {
  cJSON *st = admin_state_of(f->g[i].admin_port);
  const cJSON *r = at(st, "store.reachable");
  bool up = cJSON_IsTrue(r);
  cJSON_Delete(st);
  return up;
}

/* Poll until killed_at(i) == want; the milliseconds it took, or fail after
 * limit_ms. */
static double wait_killed(struct fleet *f, int i, bool want, int limit_ms) {
  double t0 = mg_h_now_ms(), t;
  for (;;) {
    t = mg_h_now_ms() - t0;
    if (killed_at(f, i) == want)
      return t;
    if (t > limit_ms)
      fail_msg("instance %d: killed is not %d after %d ms", i + 1, want,
               limit_ms);
    mg_h_sleep_ms(10);
  }
}

static double wait_weight(struct fleet *f, int i, double want, int limit_ms) {
  double t0 = mg_h_now_ms(), t;
  for (;;) {
    t = mg_h_now_ms() - t0;
    if (trt_weight_at(f, i) == want)
      return t;
    if (t > limit_ms)
      fail_msg("instance %d: trt's weight is %g, not %g after %d ms", i + 1,
               trt_weight_at(f, i), want, limit_ms);
    mg_h_sleep_ms(10);
  }
}

static void wait_store(struct fleet *f, int i, bool up, int limit_ms) {
  double deadline = mg_h_now_ms() + limit_ms;
  while (store_up_at(f, i) != up) {
    if (mg_h_now_ms() > deadline)
      fail_msg("instance %d: the store is not %s after %d ms", i + 1,
               up ? "up" : "down", limit_ms);
    mg_h_sleep_ms(20);
  }
}

/* Ask instance i as user; the answer must be a 200 from model `model`. */
static void ask_as(struct fleet *f, int i, const char *user,
                   const char *model) {
  char *body = body_for("m-chat", user, "hello", "");
  struct ans a;
  ask(f->g[i].port, NULL, body, &a);
  free(body);
  if (a.status != 200 || strcmp(a.model, model) != 0)
    fail_msg("instance %d, user %s: want a 200 from %s, got %d from \"%s\": "
             "%s",
             i + 1, user, model, a.status, a.model, a.body);
}

/* ---- tests -------------------------------------------------------------------- */

static void test_kill(void **state) {
  struct fleet *f = *state;
  double ms;
  cJSON *j;
  int u;
  wait_store(f, 0, true, 3000 * SLOW);
  wait_store(f, 1, true, 3000 * SLOW);
  assert_false(killed_at(f, 1));
  j = adm_at(f, 0, "POST", "/admin/flags/chat/kill", NULL, 200);
  cJSON_Delete(j);
  ms = wait_killed(f, 1, true, 1000 * SLOW);
  print_message("kill on instance 1 in force on instance 2 after %.0f ms\n",
                ms);
  /* Every user now gets the off variant on instance 2. */
  for (u = 0; u < 10; u++) {
    char user[16];
    snprintf(user, sizeof(user), "u%d", u);
    ask_as(f, 1, user, "m-a");
  }
  j = adm_at(f, 1, "POST", "/admin/flags/chat/unkill", NULL, 200);
  cJSON_Delete(j);
  ms = wait_killed(f, 0, false, 1000 * SLOW);
  print_message("unkill on instance 2 in force on instance 1 after %.0f ms\n",
                ms);
  assert_false(killed_at(f, 1));
}

static void test_weights(void **state) {
  struct fleet *f = *state;
  double ms;
  cJSON *j;
  int u;
  wait_store(f, 0, true, 3000 * SLOW);
  j = adm_at(f, 0, "PUT", "/admin/flags/chat/weights",
             "{\"ctl\":0,\"trt\":100}", 200);
  cJSON_Delete(j);
  ms = wait_weight(f, 1, 100, 1000 * SLOW);
  print_message("weights on instance 1 in force on instance 2 after %.0f ms\n",
                ms);
  for (u = 0; u < 10; u++) {
    char user[16];
    snprintf(user, sizeof(user), "w%d", u);
    ask_as(f, 1, user, "m-b");
  }
  j = adm_at(f, 1, "DELETE", "/admin/flags/chat/weights", NULL, 200);
  cJSON_Delete(j);
  wait_weight(f, 0, -1, 1000 * SLOW);
}

static void test_restart_all(void **state) {
  struct fleet *f = *state;
  char *sf;
  cJSON *j;
  wait_store(f, 0, true, 3000 * SLOW);
  j = adm_at(f, 0, "POST", "/admin/flags/chat/kill", NULL, 200);
  cJSON_Delete(j);
  j = adm_at(f, 0, "PUT", "/admin/flags/chat/weights",
             "{\"ctl\":25,\"trt\":75}", 200);
  cJSON_Delete(j);
  wait_killed(f, 1, true, 1000 * SLOW);
  wait_weight(f, 1, 75, 1000 * SLOW);
  gate_down(&f->g[0]);
  gate_down(&f->g[1]);
  /* Instance 2 forgets everything it had: it must learn it from Redis. */
  sf = fmt("%s/state2.json", f->e->dir);
  assert_int_equal(unlink(sf), 0);
  free(sf);
  gate_start_i(f, 1);
  gate_start_i(f, 0);
  /* From the first request: the kill is in force (the off variant). */
  ask_as(f, 1, "first", "m-a");
  assert_true(killed_at(f, 1));
  assert_true(trt_weight_at(f, 1) == 75);
  assert_true(killed_at(f, 0));
  j = adm_at(f, 1, "POST", "/admin/flags/chat/unkill", NULL, 200);
  cJSON_Delete(j);
  j = adm_at(f, 1, "DELETE", "/admin/flags/chat/weights", NULL, 200);
  cJSON_Delete(j);
  wait_killed(f, 0, false, 1000 * SLOW);
  wait_weight(f, 0, -1, 1000 * SLOW);
}

/* Traffic on both instances while Redis goes away and comes back. */
struct traffic {
  struct fleet *f;
  atomic_bool stop;
  atomic_int sent, failed;
  _Atomic double max_ms;
  atomic_bool down[3];          /* ramp_traffic: instance i was killed */
  char last_error[512];
};

static void *traffic_main(void *arg) {
  struct traffic *t = arg;
  struct cli c[2];
  int n = 0, i;
  double end = mg_h_now_ms() + 60000;
  cli_init(&c[0], t->f->g[0].port);
  cli_init(&c[1], t->f->g[1].port);
  /* Bounded: at most 20000 requests or 60 s. */
  while (!atomic_load(&t->stop) && n < 20000 && mg_h_now_ms() < end) {
    char user[32];
    char *body;
    struct ans a;
    i = n % 2;
    snprintf(user, sizeof(user), "t%d", n % 50);
    body = body_for("m-chat", user, "hello", "");
    cli_post(&c[i], NULL, body, &a);
    free(body);
    atomic_fetch_add(&t->sent, 1);
    if (a.ms > atomic_load(&t->max_ms))
      atomic_store(&t->max_ms, a.ms);
    if (a.status != 200 || !a.complete) {
      atomic_fetch_add(&t->failed, 1);
      snprintf(t->last_error, sizeof(t->last_error), "%d: %.400s", a.status,
               a.body);
    }
    n++;
    mg_h_sleep_ms(2);
  }
  cli_close(&c[0]);
  cli_close(&c[1]);
  return NULL;
}

static void test_redis_down(void **state) {
  struct fleet *f = *state;
  struct traffic t;
  pthread_t th;
  struct mg_h_resp r;
  cJSON *j;
  double ms;

  wait_store(f, 0, true, 3000 * SLOW);
  wait_store(f, 1, true, 3000 * SLOW);
  /* An override from before the outage, that Redis will lose. */
  j = adm_at(f, 0, "PUT", "/admin/flags/chat/weights",
             "{\"ctl\":60,\"trt\":40}", 200);
  cJSON_Delete(j);
  wait_weight(f, 1, 40, 1000 * SLOW);

  memset(&t, 0, sizeof(t));
  t.f = f;
  assert_int_equal(pthread_create(&th, NULL, traffic_main, &t), 0);
  mg_h_sleep_ms(300);

  redis_kill(f);
  wait_store(f, 0, false, 2000 * SLOW);
  wait_store(f, 1, false, 2000 * SLOW);
  /* Ready, saying why the store is not there. */
  assert_int_equal(get(f->g[0].port, "/readyz", &r), 0);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.body, "\"reachable\":false"));
  assert_non_null(strstr(r.body, "unreachable"));
  mg_h_resp_free(&r);
  assert_true(metric(f->g[1].port, "modelgate_store_up{store=\"redis\"}") ==
              0);
  /* A change that cannot reach the fleet is refused... */
  {
    struct mg_h_resp rr;
    assert_int_equal(mg_h_request(f->g[0].admin_port, "POST",
                                  "/admin/flags/chat/kill", AUTH, NULL, &rr,
                                  T_MS * SLOW),
                     0);
    assert_error(&rr, 503, "store_unreachable");
    mg_h_resp_free(&rr);
  }
  assert_false(killed_at(f, 0));
  /* ...unless asked for here only: the query parameter, or the body. */
  j = adm_at(f, 0, "POST", "/admin/flags/chat/kill?force_local=1", NULL, 200);
  cJSON_Delete(j);
  assert_true(killed_at(f, 0));
  j = adm_at(f, 0, "PUT", "/admin/flags/chat/weights",
             "{\"ctl\":60,\"trt\":40,\"force_local\":true}", 200);
  cJSON_Delete(j);
  mg_h_sleep_ms(1200);
  assert_false(killed_at(f, 1));
  assert_true(trt_weight_at(f, 1) == 40);

  /* Redis comes back empty (no persistence): the instances write back
   * what they hold, the force_local kill included. */
  redis_start(f);
  wait_store(f, 0, true, 5000 * SLOW);
  wait_store(f, 1, true, 5000 * SLOW);
  ms = wait_killed(f, 1, true, 3000 * SLOW);
  print_message("force_local kill reached instance 2 %.0f ms after it saw "
                "redis again\n",
                ms);
  assert_true(trt_weight_at(f, 0) == 40);
  assert_true(trt_weight_at(f, 1) == 40);
  mg_h_sleep_ms(300);
  atomic_store(&t.stop, true);
  pthread_join(th, NULL);
  print_message("%d requests during the outage and return, %d failed\n",
                atomic_load(&t.sent), atomic_load(&t.failed));
  if (atomic_load(&t.failed) != 0)
    fail_msg("%d of %d requests failed, the last: %s", atomic_load(&t.failed),
             atomic_load(&t.sent), t.last_error);
  assert_true(atomic_load(&t.sent) > 50);
  /* A new change goes everywhere again. */
  j = adm_at(f, 1, "POST", "/admin/flags/chat/unkill", NULL, 200);
  cJSON_Delete(j);
  wait_killed(f, 0, false, 1000 * SLOW);
  j = adm_at(f, 1, "DELETE", "/admin/flags/chat/weights", NULL, 200);
  cJSON_Delete(j);
  wait_weight(f, 0, -1, 1000 * SLOW);
}

/* Redis stops answering (SIGSTOP) but keeps its connections: each
 * instance notices within resync_ms + timeout_ms, requests never wait on
 * it, and a change is refused; then Redis flaps (stopped and continued
 * five times); once it is steady a kill travels within 1 s again. */
static void test_redis_stalled(void **state) {
  struct fleet *f = *state;
  struct traffic t;
  pthread_t th;
  struct mg_h_resp rr;
  cJSON *j;
  double ms;
  int k;

  wait_store(f, 0, true, 3000 * SLOW);
  wait_store(f, 1, true, 3000 * SLOW);
  memset(&t, 0, sizeof(t));
  t.f = f;
  assert_int_equal(pthread_create(&th, NULL, traffic_main, &t), 0);
  mg_h_sleep_ms(200);
  assert_int_equal(kill(f->redis, SIGSTOP), 0);
  wait_store(f, 0, false, 3000 * SLOW);
  wait_store(f, 1, false, 3000 * SLOW);
  assert_int_equal(mg_h_request(f->g[1].admin_port, "PUT",
                                "/admin/flags/chat/weights", AUTH,
                                "{\"ctl\":10,\"trt\":90}", &rr, T_MS * SLOW),
                   0);
  assert_error(&rr, 503, "store_unreachable");
  mg_h_resp_free(&rr);
  for (k = 0; k < 5; k++) {
    assert_int_equal(kill(f->redis, SIGCONT), 0);
    mg_h_sleep_ms(150);
    assert_int_equal(kill(f->redis, SIGSTOP), 0);
    mg_h_sleep_ms(150);
  }
  assert_int_equal(kill(f->redis, SIGCONT), 0);
  wait_store(f, 0, true, 5000 * SLOW);
  wait_store(f, 1, true, 5000 * SLOW);
  j = adm_at(f, 1, "POST", "/admin/flags/chat/kill", NULL, 200);
  cJSON_Delete(j);
  ms = wait_killed(f, 0, true, 1000 * SLOW);
  print_message("after the flapping, a kill reached the other instance in "
                "%.0f ms\n",
                ms);
  atomic_store(&t.stop, true);
  pthread_join(th, NULL);
  print_message("%d requests while redis stalled and flapped, %d failed, the "
                "slowest %.1f ms\n",
                atomic_load(&t.sent), atomic_load(&t.failed),
                atomic_load(&t.max_ms));
  if (atomic_load(&t.failed) != 0)
    fail_msg("%d of %d requests failed, the last: %s", atomic_load(&t.failed),
             atomic_load(&t.sent), t.last_error);
  /* No request waited on Redis (timeout_ms is 300). */
  assert_true(atomic_load(&t.max_ms) < 250 * SLOW);
  j = adm_at(f, 0, "POST", "/admin/flags/chat/unkill", NULL, 200);
  cJSON_Delete(j);
}

/* ---- a partition: a TCP forwarder one instance reaches Redis through ---------- */

#define FWD_PAIRS 16

struct fwd {
  int lfd, port, target;
  atomic_bool cut, stop;
  int a[FWD_PAIRS], b[FWD_PAIRS]; /* client side, Redis side; -1: free */
  pthread_t th;
};

static void fwd_close_all(struct fwd *w) {
  int i;
  for (i = 0; i < FWD_PAIRS; i++)
    if (w->a[i] >= 0) {
      close(w->a[i]);
      close(w->b[i]);
      w->a[i] = w->b[i] = -1;
    }
}

static void *fwd_main(void *arg) {
  struct fwd *w = arg;
  double end = mg_h_now_ms() + 120000; /* bounded */
  while (!atomic_load(&w->stop) && mg_h_now_ms() < end) {
    struct pollfd p[1 + 2 * FWD_PAIRS];
    int n = 1, i, idx[2 * FWD_PAIRS];
    char buf[16384];
    if (atomic_load(&w->cut))
      fwd_close_all(w);
    p[0].fd = w->lfd;
    p[0].events = POLLIN;
    for (i = 0; i < FWD_PAIRS; i++)
      if (w->a[i] >= 0) {
        idx[n - 1] = i;
        p[n].fd = w->a[i];
        p[n++].events = POLLIN;
        idx[n - 1] = i + FWD_PAIRS;
        p[n].fd = w->b[i];
        p[n++].events = POLLIN;
      }
    if (poll(p, (nfds_t)n, 20) <= 0)
      continue;
    if (p[0].revents & POLLIN) {
      int c = accept(w->lfd, NULL, NULL);
      if (c >= 0) {
        int r = atomic_load(&w->cut) ? -1 : mg_h_connect(w->target);
        for (i = 0; r >= 0 && i < FWD_PAIRS && w->a[i] >= 0; i++)
          ;
        if (r < 0 || i == FWD_PAIRS) {
          close(c);
          if (r >= 0)
            close(r);
        } else {
          w->a[i] = c;
          w->b[i] = r;
        }
      }
    }
    for (i = 1; i < n; i++) {
      int k = idx[i - 1] % FWD_PAIRS, from, to;
      ssize_t got;
      if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)) || w->a[k] < 0)
        continue;
      from = idx[i - 1] < FWD_PAIRS ? w->a[k] : w->b[k];
      to = idx[i - 1] < FWD_PAIRS ? w->b[k] : w->a[k];
      got = read(from, buf, sizeof(buf));
      if (got <= 0 || mg_h_send(to, buf, (size_t)got) != 0) {
        close(w->a[k]);
        close(w->b[k]);
        w->a[k] = w->b[k] = -1;
      }
    }
  }
  fwd_close_all(w);
  return NULL;
}

static void fwd_start(struct fwd *w, int target) {
  struct sockaddr_in sa;
  socklen_t sl = sizeof(sa);
  int i, one = 1;
  memset(w, 0, sizeof(*w));
  for (i = 0; i < FWD_PAIRS; i++)
    w->a[i] = w->b[i] = -1;
  w->target = target;
  w->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(w->lfd >= 0);
  setsockopt(w->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(w->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(listen(w->lfd, 16), 0);
  assert_int_equal(getsockname(w->lfd, (struct sockaddr *)&sa, &sl), 0);
  w->port = ntohs(sa.sin_port);
  assert_int_equal(pthread_create(&w->th, NULL, fwd_main, w), 0);
}

static void fwd_stop(struct fwd *w) {
  atomic_store(&w->stop, true);
  pthread_join(w->th, NULL);
  close(w->lfd);
}

/* Three instances; the third reaches Redis through a forwarder that the
 * test cuts: a kill on the first is in force on the other two within
 * 1 s; cut off, the third keeps serving on what it knew (the kill),
 * says the store is unreachable and refuses a change, while the first
 * two go on agreeing (an unkill); healed, the third catches up. */
static void test_partition(void **state) {
  struct fleet *f = *state;
  struct fwd w;
  struct mg_h_resp rr;
  cJSON *j;
  double ms;

  fwd_start(&w, f->redis_port);
  write_cfg_i(f, 2, w.port);
  gate_start_i(f, 2);
  wait_store(f, 0, true, 3000 * SLOW);
  wait_store(f, 1, true, 3000 * SLOW);
  wait_store(f, 2, true, 3000 * SLOW);
  j = adm_at(f, 0, "POST", "/admin/flags/chat/kill", NULL, 200);
  cJSON_Delete(j);
  ms = wait_killed(f, 1, true, 1000 * SLOW);
  ms = fmax(ms, wait_killed(f, 2, true, 1000 * SLOW));
  print_message("kill on instance 1 in force on instances 2 and 3 within "
                "%.0f ms\n",
                ms);

  atomic_store(&w.cut, true);
  wait_store(f, 2, false, 3000 * SLOW);
  assert_true(store_up_at(f, 0) && store_up_at(f, 1));
  assert_int_equal(mg_h_request(f->g[2].admin_port, "POST",
                                "/admin/flags/chat/unkill", AUTH, NULL, &rr,
                                T_MS * SLOW),
                   0);
  assert_error(&rr, 503, "store_unreachable");
  mg_h_resp_free(&rr);
  /* Cut off, it serves on the last state it knew. */
  ask_as(f, 2, "p1", "m-a");
  j = adm_at(f, 1, "POST", "/admin/flags/chat/unkill", NULL, 200);
  cJSON_Delete(j);
  wait_killed(f, 0, false, 1000 * SLOW);
  mg_h_sleep_ms(500);
  assert_true(killed_at(f, 2));

  atomic_store(&w.cut, false);
  wait_store(f, 2, true, 5000 * SLOW);
  ms = wait_killed(f, 2, false, 1000 * SLOW);
  print_message("healed: instance 3 caught up %.0f ms after it saw redis\n",
                ms);
  gate_down(&f->g[2]);
  fwd_stop(&w);
}

static void test_breaker_hint(void **state) {
  struct fleet *f = *state;
  const char *series = "modelgate_breaker_state{target=\"t-b\"}";
  double t0, v;
  cJSON *j;
  int u;
  wait_store(f, 0, true, 3000 * SLOW);
  wait_store(f, 1, true, 3000 * SLOW);
  /* Everything to t-b on instance 1, which fails. */
  j = adm_at(f, 0, "PUT", "/admin/flags/chat/weights",
             "{\"ctl\":0,\"trt\":100}", 200);
  cJSON_Delete(j);
  wait_weight(f, 1, 100, 1000 * SLOW);
  mock_behave(f->e, "{'model':'m-b','mode':'status','status':500}");
  assert_true(metric(f->g[1].port, series) == 0);
  for (u = 0; u < 4; u++) {
    char *body = body_for("m-chat", "b", "hello", "");
    struct ans a;
    ask(f->g[0].port, NULL, body, &a);
    free(body);
  }
  assert_true(metric(f->g[0].port, series) == 1);
  t0 = mg_h_now_ms();
  v = metric_wait(f->g[1].port, series, 1, 1000 * SLOW);
  print_message("breaker open on instance 1 seen on instance 2 after %.0f "
                "ms\n",
                mg_h_now_ms() - t0);
  assert_true(v == 1);
  assert_true(file_contains(f->g[1].log_file, "on a hint from instance i1"));
  mg_h_mock_reset(f->e->mock.port);
  j = adm_at(f, 0, "DELETE", "/admin/flags/chat/weights", NULL, 200);
  cJSON_Delete(j);
}

/* ---- ramps in a fleet ---------------------------------------------------------- */

/* Flag "chat" ramps "new" (target new, model m-new, falling back to old)
 * against "old"; ramp and guards as given. */
static void write_ramp_cfg(struct fleet *f, int i, const char *ramp,
                           const char *guards) {
  char *t = fmt(
      "{'admin':{'listen':'127.0.0.1:0','state_file':'@DIR/rstate%d.json'},"
      "'server':{'listen':'127.0.0.1:0','log_level':'info',"
      "'shutdown_grace_ms':2000},"
      "'decision_log':{'enabled':false},"
      "'redis':{'url':'redis://127.0.0.1:%d','prefix':'mgramp:',"
      "'timeout_ms':200,'resync_ms':1000,'lease_ms':900,'instance':'r%d'},"
      "'targets':{'old':{'base_url':'@MOCK','model':'m-old',"
      "  'breaker':{'enabled':false}},"
      "'new':{'base_url':'@MOCK','model':'m-new','fallbacks':['old'],"
      "  'breaker':{'enabled':false}}},"
      "'flags':{'chat':{'off_variant':'old','variants':{"
      "  'old':{'target':'old'},'new':{'target':'new'}},"
      "  'ramp':%s,'guards':%s}},"
      "'aliases':{'m-chat':{'flag':'chat'}}}",
      i + 1, f->redis_port, i + 1, ramp, guards);
  char *c = q(f->e, t);
  snprintf(f->cfg[i], sizeof(f->cfg[i]), "%s/ramp%d.json", f->e->dir, i + 1);
  assert_int_equal(mg_h_write_file(f->cfg[i], c), 0);
  free(c);
  free(t);
}

static int ramp_setup(void **state) {
  struct fleet *f = calloc(1, sizeof(*f));
  if (f == NULL || tenv_setup((void **)&f->e) != 0)
    return -1;
  f->redis_port = free_port();
  snprintf(f->redis_log, sizeof(f->redis_log), "%s/redis.log", f->e->dir);
  redis_start(f);
  *state = f;
  return 0;
}

/* The ramp as instance i has it (caller deletes the state). */
static cJSON *ramp_at(struct fleet *f, int i, const cJSON **r) {
  cJSON *st = admin_state_of(f->g[i].admin_port);
  *r = at(st, "flags.chat.ramp");
  if (!cJSON_IsObject(*r))
    fail_msg("instance %d: no flags.chat.ramp", i + 1);
  return st;
}

/* Which instance leads the ramp (-1: none yet); fails when two say so. */
static int ramp_leader(struct fleet *f, int n) {
  int i, who = -1;
  for (i = 0; i < n; i++) {
    cJSON *st;
    const cJSON *l, *it;
    if (f->g[i].pid <= 0)
      continue;
    st = admin_state_of(f->g[i].admin_port);
    l = at(st, "store.leads_ramps");
    cJSON_ArrayForEach(it, l) {
      if (cJSON_IsString(it) && strcmp(it->valuestring, "chat") == 0) {
        if (who >= 0)
          fail_msg("instances %d and %d both lead the ramp", who + 1, i + 1);
        who = i;
      }
    }
    cJSON_Delete(st);
  }
  return who;
}

static int wait_leader(struct fleet *f, int n, int limit_ms) {
  double deadline = mg_h_now_ms() + limit_ms;
  int who;
  while ((who = ramp_leader(f, n)) < 0) {
    if (mg_h_now_ms() > deadline)
      fail_msg("no instance leads the ramp after %d ms", limit_ms);
    mg_h_sleep_ms(20);
  }
  return who;
}

static int step_at(struct fleet *f, int i, char *status, size_t n) {
  const cJSON *r;
  cJSON *st = ramp_at(f, i, &r);
  int step = (int)num_of(r, "step");
  if (status)
    snprintf(status, n, "%s", str_at(r, "status"));
  cJSON_Delete(st);
  return step;
}

/* Light healthy traffic on both instances, until stop. */
static void *ramp_traffic(void *arg) {
  struct traffic *t = arg;
  int n = 0;
  double end = mg_h_now_ms() + 60000;
  while (!atomic_load(&t->stop) && n < 20000 && mg_h_now_ms() < end) {
    int i = n % 2;
    char user[32];
    char *body;
    struct ans a;
    snprintf(user, sizeof(user), "r%d", n % 200);
    body = body_for("m-chat", user, "hello", "");
    /* The main thread kills instances: whether one is up is read from
     * down[], never from the fleet's pids (written there meanwhile). */
    if (!atomic_load(&t->down[i])) {
      ask(t->f->g[i].port, NULL, body, &a);
      atomic_fetch_add(&t->sent, 1);
      if (a.status != 200)
        atomic_fetch_add(&t->failed, 1);
    }
    free(body);
    n++;
    mg_h_sleep_ms(5);
  }
  return NULL;
}

/* Two instances, one leads; its steps are in force on both; the leader is
 * killed (SIGKILL) mid-ramp: the other takes the lease once it expires
 * and the ramp continues from the step it had reached, never from the
 * start; at no time do two instances say they lead. */
static void test_ramp_leader_killed(void **state) {
  struct fleet *f = *state;
  struct traffic t;
  pthread_t th;
  int leader, other, step;
  char status[32];
  double t0, deadline;
  const char *ramp =
      "{'variant':'new','interval_ms':100,'steps':["
      "{'weight':10,'hold_ms':1200},{'weight':20,'hold_ms':1200},"
      "{'weight':30,'hold_ms':1200},{'weight':40,'hold_ms':1200},"
      "{'weight':50,'hold_ms':1200},{'weight':100}]}";
  const char *guards = "{'window_ms':3000,'min_requests':5,"
                       "'max_error_rate':0.5}";

  write_ramp_cfg(f, 0, ramp, guards);
  write_ramp_cfg(f, 1, ramp, guards);
  gate_start_i(f, 0);
  gate_start_i(f, 1);
  memset(&t, 0, sizeof(t));
  t.f = f;
  assert_int_equal(pthread_create(&th, NULL, ramp_traffic, &t), 0);
  leader = wait_leader(f, 2, 3000 * SLOW);
  other = 1 - leader;
  print_message("instance %d leads the ramp\n", leader + 1);
  /* The leader's steps are in force on both. */
  deadline = mg_h_now_ms() + 6000 * SLOW;
  while ((step = step_at(f, other, NULL, 0)) < 1) {
    if (mg_h_now_ms() > deadline)
      fail_msg("the follower never saw a step");
    mg_h_sleep_ms(20);
  }
  assert_true(ramp_leader(f, 2) == leader);
  step = step_at(f, leader, NULL, 0);
  /* Kill the leader mid-ramp. */
  atomic_store(&t.down[leader], true);
  assert_true(reap(f->g[leader].pid, SIGKILL, 5000) >= 0);
  f->g[leader].pid = 0;
  t0 = mg_h_now_ms();
  assert_true(wait_leader(f, 2, 3000 * SLOW) == other);
  print_message("instance %d took the lease %.0f ms after the leader died, "
                "at step %d\n",
                other + 1, mg_h_now_ms() - t0, step_at(f, other, NULL, 0));
  /* It continues from where the ramp was, and advances. */
  assert_true(step_at(f, other, NULL, 0) >= step);
  deadline = mg_h_now_ms() + 5000 * SLOW;
  while (step_at(f, other, status, sizeof(status)) < step + 1) {
    if (mg_h_now_ms() > deadline)
      fail_msg("the new leader did not advance the ramp past step %d", step);
    mg_h_sleep_ms(20);
  }
  assert_string_equal(status, "running");
  atomic_store(&t.stop, true);
  pthread_join(th, NULL);
  print_message("%d requests, %d not 200\n", atomic_load(&t.sent),
                atomic_load(&t.failed));
}

/* Send requests to instance i with fresh users until n of them were
 * routed to the treatment. */
static void treatment_requests(struct fleet *f, int i, int n, int *seq) {
  int got = 0, tries = 0;
  while (got < n) {
    char user[32];
    char *body;
    struct ans a;
    if (++tries > 2000)
      fail_msg("instance %d: too few requests routed to the treatment", i + 1);
    snprintf(user, sizeof(user), "fb%d", (*seq)++);
    body = body_for("m-chat", user, "hello", "");
    ask(f->g[i].port, NULL, body, &a);
    free(body);
    if (a.status != 200)
      fail_msg("instance %d: a request failed: %d %s", i + 1, a.status,
               a.body);
    if (strcmp(a.variant, "new") == 0)
      got++;
  }
}

/* The treatment fails on both instances; the guard needs 40 treatment
 * requests in its window. 30 on the first instance decide nothing; 30
 * more on the second (neither alone has 40) roll the ramp back, on the
 * leader's judgement of the fleet's counts, and the rollback is in force
 * on both within 1 s of the decision. */
static void test_ramp_fleet_rollback(void **state) {
  struct fleet *f = *state;
  const char *ramp = "{'variant':'new','interval_ms':100,'steps':["
                     "{'weight':50,'hold_ms':600000},{'weight':100}]}";
  const char *guards = "{'window_ms':20000,'min_requests':40,"
                       "'consecutive':1,'max_error_rate':0.2}";
  char status[32];
  int seq = 0, leader;
  double t_rb, deadline;

  write_ramp_cfg(f, 0, ramp, guards);
  write_ramp_cfg(f, 1, ramp, guards);
  gate_start_i(f, 0);
  gate_start_i(f, 1);
  leader = wait_leader(f, 2, 3000 * SLOW);
  mock_behave(f->e, "{'model':'m-new','mode':'status','status':500}");
  treatment_requests(f, 0, 30, &seq);
  /* Published, fetched and judged several times over: not enough alone. */
  mg_h_sleep_ms(1500);
  step_at(f, leader, status, sizeof(status));
  assert_string_equal(status, "running");
  treatment_requests(f, 1, 30, &seq);
  deadline = mg_h_now_ms() + 5000 * SLOW;
  while (step_at(f, leader, status, sizeof(status)) >= 0 &&
         strcmp(status, "rolled_back") != 0) {
    if (mg_h_now_ms() > deadline)
      fail_msg("the leader did not roll back on the fleet's counts: %s",
               status);
    mg_h_sleep_ms(10);
  }
  t_rb = mg_h_now_ms();
  for (;;) {
    step_at(f, 1 - leader, status, sizeof(status));
    if (strcmp(status, "rolled_back") == 0)
      break;
    if (mg_h_now_ms() - t_rb > 1000 * SLOW)
      fail_msg("the follower still says %s 1 s after the rollback", status);
    mg_h_sleep_ms(10);
  }
  print_message("rollback decided by instance %d on fleet-wide counts, in "
                "force on the other after %.0f ms\n",
                leader + 1, mg_h_now_ms() - t_rb);
  /* Nobody is sent to the treatment any more, on either instance. */
  {
    cJSON *st = admin_state_of(f->g[1 - leader].admin_port);
    assert_true(num_of(st, "flags.chat.weights.new") == 0);
    cJSON_Delete(st);
  }
  mg_h_mock_reset(f->e->mock.port);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_kill, setup, teardown),
      cmocka_unit_test_setup_teardown(test_weights, setup, teardown),
      cmocka_unit_test_setup_teardown(test_restart_all, setup, teardown),
      cmocka_unit_test_setup_teardown(test_redis_down, setup, teardown),
      cmocka_unit_test_setup_teardown(test_redis_stalled, setup, teardown),
      cmocka_unit_test_setup_teardown(test_partition, setup, teardown),
      cmocka_unit_test_setup_teardown(test_breaker_hint, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ramp_leader_killed, ramp_setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_ramp_fleet_rollback, ramp_setup,
                                      teardown),
  };
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
