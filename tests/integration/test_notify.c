/* test_notify.c - notifications (issue 16.1, 16.5): a receiver in this
 * process gets every event type modelgate emits, a 500 is retried with the
 * same dedup key, the signature verifies, and a sink that hangs or resets
 * never slows or fails a request. */
#define _GNU_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#define TOKEN_ENV "MGN_TOKEN"
#define TOKEN "notify-admin-token-7Qe"
#define SECRET_ENV "MGN_SECRET"
#define SECRET "notify-secret-Kx81"
#define MAXREQ 256

/* ---- the receiver ----------------------------------------------------------- */

enum mode { RX_OK, RX_HANG, RX_RESET };

struct rx_req {
  char path[64];
  char *head; /* owned */
  char *body; /* owned */
  double at;  /* mg_h_now_ms */
};

struct rx {
  int fd, port;
  enum mode mode;
  _Atomic int fail_first;   /* answer 500 to this many requests first */
  _Atomic bool stop;
  pthread_t th;
  pthread_mutex_t mu;
  struct rx_req req[MAXREQ];
  size_t n;
  int hung[64];
  size_t nhung;
};

static void *rx_main(void *arg) {
  struct rx *x = arg;
  while (!atomic_load(&x->stop)) {
    struct pollfd p = {x->fd, POLLIN, 0};
    char buf[65536];
    size_t len = 0;
    int c;
    if (poll(&p, 1, 50) <= 0)
      continue;
    c = accept(x->fd, NULL, NULL);
    if (c < 0)
      continue;
    if (x->mode == RX_RESET) {
      struct linger lg = {1, 0};
      char tmp[4096];
      struct pollfd q2 = {c, POLLIN, 0};
      if (poll(&q2, 1, 1000) > 0)
        (void)!read(c, tmp, sizeof(tmp));
      setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
      close(c);
      pthread_mutex_lock(&x->mu);
      if (x->n < MAXREQ)
        x->req[x->n++].at = mg_h_now_ms();
      pthread_mutex_unlock(&x->mu);
      continue;
    }
    /* One request per connection: head, then Content-Length bytes. */
    for (;;) {
      struct pollfd q2 = {c, POLLIN, 0};
      ssize_t r;
      char *he;
      if (poll(&q2, 1, 2000) <= 0)
        break;
      r = read(c, buf + len, sizeof(buf) - 1 - len);
      if (r <= 0)
        break;
      len += (size_t)r;
      buf[len] = '\0';
      if ((he = strstr(buf, "\r\n\r\n")) != NULL) {
        const char *cl = strcasestr(buf, "\r\ncontent-length:");
        size_t want = cl ? (size_t)atol(cl + 17) : 0;
        size_t hl = (size_t)(he + 4 - buf);
        if (len >= hl + want) {
          /* Filled in whole, then published under the lock: the test
           * thread reads the list meanwhile. */
          struct rx_req got;
          memset(&got, 0, sizeof(got));
          sscanf(buf, "POST %63s", got.path);
          got.head = strndup(buf, hl);
          got.body = strndup(he + 4, want);
          got.at = mg_h_now_ms();
          pthread_mutex_lock(&x->mu);
          if (x->n < MAXREQ) {
            x->req[x->n++] = got;
            got.head = got.body = NULL;
          }
          pthread_mutex_unlock(&x->mu);
          free(got.head);
          free(got.body);
          if (x->mode == RX_HANG) {
            if (x->nhung < 64)
              x->hung[x->nhung++] = c;
            c = -1;
          } else if (atomic_fetch_sub(&x->fail_first, 1) > 0) {
            const char *a = "HTTP/1.1 500 Internal Server Error\r\n"
                            "Content-Length: 0\r\nConnection: close\r\n\r\n";
            (void)!write(c, a, strlen(a));
          } else {
            const char *a = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                            "Connection: close\r\n\r\nok";
            (void)!write(c, a, strlen(a));
          }
          break;
        }
      }
      if (len + 1 >= sizeof(buf))
        break;
    }
    if (c >= 0)
      close(c);
  }
  return NULL;
}

static void rx_start(struct rx *x, enum mode m, int fail_first) {
  struct sockaddr_in a;
  socklen_t al = sizeof(a);
  int one = 1;
  memset(x, 0, sizeof(*x));
  x->mode = m;
  atomic_init(&x->fail_first, fail_first);
  pthread_mutex_init(&x->mu, NULL);
  x->fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(x->fd >= 0);
  setsockopt(x->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(x->fd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(listen(x->fd, 64), 0);
  getsockname(x->fd, (struct sockaddr *)&a, &al);
  x->port = ntohs(a.sin_port);
  assert_int_equal(pthread_create(&x->th, NULL, rx_main, x), 0);
}

static void rx_stop(struct rx *x) {
  size_t i;
  atomic_store(&x->stop, true);
  pthread_join(x->th, NULL);
  close(x->fd);
  for (i = 0; i < x->nhung; i++)
    close(x->hung[i]);
  for (i = 0; i < x->n; i++) {
    free(x->req[i].head);
    free(x->req[i].body);
  }
  pthread_mutex_destroy(&x->mu);
}

static size_t rx_count(struct rx *x) {
  size_t n;
  pthread_mutex_lock(&x->mu);
  n = x->n;
  pthread_mutex_unlock(&x->mu);
  return n;
}

/* Index of the i-th request (from 0) whose path is path and whose body
 * contains needle, or -1, waiting up to ms. */
static int rx_find(struct rx *x, const char *path, const char *needle,
                   int nth, int ms) {
  double end = mg_h_now_ms() + ms;
  do {
    size_t i;
    int k = 0;
    pthread_mutex_lock(&x->mu);
    for (i = 0; i < x->n; i++)
      if (x->req[i].body && strcmp(x->req[i].path, path) == 0 &&
          strstr(x->req[i].body, needle) && k++ == nth) {
        pthread_mutex_unlock(&x->mu);
        return (int)i;
      }
    pthread_mutex_unlock(&x->mu);
    mg_h_sleep_ms(20);
  } while (mg_h_now_ms() < end);
  return -1;
}

static void hdr(const char *head, const char *name, char *out, size_t n) {
  const char *p = strcasestr(head, name);
  size_t k = 0;
  out[0] = '\0';
  if (p == NULL)
    return;
  p += strlen(name);
  while (*p == ' ' || *p == ':')
    p++;
  while (p[k] && p[k] != '\r' && k + 1 < n) {
    out[k] = p[k];
    k++;
  }
  out[k] = '\0';
}

static double metric_ge(int port, const char *series, double want, int ms) {
  double end = mg_h_now_ms() + ms, v;
  while ((v = metric(port, series)) < want && mg_h_now_ms() < end)
    mg_h_sleep_ms(20);
  return v;
}

/* ---- modelgate ---------------------------------------------------------------- */

static const char *tb_breaker = "{'enabled':false}";
static const char *notify_extra = "";
static const char *ramp_cfg =
    "'ramp':{'variant':'trt','interval_ms':100000,'steps':["
    "    {'weight':10,'hold_ms':3600000},{'weight':50,'hold_ms':3600000,"
    "     'manual':true},{'weight':100}]},"
    "  'guards':{'window_ms':60000,'min_requests':1000,"
    "    'max_error_rate':0.5}}},";

static void start_gate(struct tenv *e, const char *sinks) {
  const char *env[] = {KEY_ENV "=" KEY_VALUE, TOKEN_ENV "=" TOKEN,
                       SECRET_ENV "=" SECRET, NULL};
  char *t = fmt(
      "{'admin':{'listen':'127.0.0.1:0','state_file':'@DIR/state.json',"
      "'token_env':'" TOKEN_ENV "'},"
      "'server':{'listen':'127.0.0.1:0','log_level':'info',"
      "'shutdown_grace_ms':2000},"
      "'decision_log':{'enabled':false},"
      "'targets':{'t-a':{'base_url':'@MOCK','model':'m-a',"
      "  'breaker':{'enabled':false}},"
      "'t-b':{'base_url':'@MOCK','model':'m-b','breaker':%s}},"
      "'flags':{'chat':{'off_variant':'ctl','variants':{"
      "  'ctl':{'target':'t-a','weight':100},'trt':{'target':'t-b','weight':0}}},"
      " 'ramped':{'off_variant':'ctl','variants':{"
      "  'ctl':{'target':'t-a','weight':100},'trt':{'target':'t-b','weight':0}},"
      "  'brief':{'summary':'trt for everyone','contact':'#rel'},"
      "  %s"
      "'aliases':{'gpt-test':{'flag':'chat'},'gpt-r':{'flag':'ramped'},"
      "'gpt-b':{'target':'t-b'}},"
      "'notify':{%s'sinks':{%s}}}",
      tb_breaker, ramp_cfg, notify_extra, sinks);
  char *c = q(e, t);
  assert_int_equal(mg_h_write_file(e->config, c), 0);
  assert_int_equal(mg_h_start_gate(&e->gate, e->config, env), 0);
  free(t);
  free(c);
}

static int admin(struct tenv *e, const char *method, const char *path,
                 const char *body) {
  struct mg_h_resp r;
  int st;
  assert_int_equal(mg_h_request(e->gate.admin_port, method, path,
                                "Authorization: Bearer " TOKEN "\r\n", body,
                                &r, T_MS),
                   0);
  st = r.status;
  mg_h_resp_free(&r);
  return st;
}

/* Every event type, a retry after a 500 with the same key, the signature,
 * the Slack format, the evidence and weights, the metrics. */
static void test_notify_events(void **state) {
  struct tenv *e = *state;
  struct rx x;
  char *sinks, key1[64], key2[64], sig[128], want[80], kslack[64];
  int i1, i2, is;
  size_t i;
  rx_start(&x, RX_OK, 1);
  sinks = fmt("'ops':{'url':'http://127.0.0.1:%d/json','secret_env':'"
              SECRET_ENV "','backoff_ms':50,'max_backoff_ms':200},"
              "'chat':{'url':'http://127.0.0.1:%d/slack','format':'slack',"
              "'events':['kill','rollback'],'min_severity':'info'},"
              "'crit':{'url':'http://127.0.0.1:%d/crit',"
              "'min_severity':'critical'}",
              x.port, x.port, x.port);
  start_gate(e, sinks);
  free(sinks);

  /* kill: the first delivery to /json gets a 500 and is retried. */
  assert_int_equal(admin(e, "POST", "/admin/flags/chat/kill", NULL), 200);
  i1 = rx_find(&x, "/json", "\"event\":\"kill\"", 0, T_MS);
  i2 = rx_find(&x, "/json", "\"event\":\"kill\"", 1, T_MS);
  assert_true(i1 >= 0 && i2 > i1);
  hdr(x.req[i1].head, "X-Modelgate-Dedup-Key", key1, sizeof(key1));
  hdr(x.req[i2].head, "X-Modelgate-Dedup-Key", key2, sizeof(key2));
  assert_true(strlen(key1) == 16);
  assert_string_equal(key1, key2);
  assert_string_equal(x.req[i1].body, x.req[i2].body);
  assert_non_null(strstr(x.req[i2].body, key1));
  /* The retry waited at least the jittered backoff (>= 25 ms). */
  assert_true(x.req[i2].at - x.req[i1].at >= 20);
  /* The signature is HMAC-SHA256 of the body under the secret. */
  {
    unsigned char mac[32];
    unsigned int ml = 0, k;
    hdr(x.req[i2].head, "X-Modelgate-Signature", sig, sizeof(sig));
    HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET),
         (const unsigned char *)x.req[i2].body, strlen(x.req[i2].body), mac,
         &ml);
    strcpy(want, "sha256=");
    for (k = 0; k < ml; k++)
      sprintf(want + 7 + 2 * k, "%02x", mac[k]);
    assert_string_equal(sig, want);
  }
  assert_non_null(strstr(x.req[i2].body, "\"flag\":\"chat\""));
  assert_non_null(strstr(x.req[i2].body, "\"by\":\"admin\""));
  assert_non_null(strstr(x.req[i2].body, "\"severity\":\"warning\""));
  assert_non_null(strstr(x.req[i2].body, "\"instance\":\""));
  /* The Slack-style sink got the same event, with the same key. */
  is = rx_find(&x, "/slack", "{\"text\":\"[warning] modelgate kill flag chat",
               0, T_MS);
  assert_true(is >= 0);
  hdr(x.req[is].head, "X-Modelgate-Dedup-Key", kslack, sizeof(kslack));
  assert_string_equal(kslack, key1);

  assert_int_equal(admin(e, "POST", "/admin/flags/chat/unkill", NULL), 200);
  assert_true(rx_find(&x, "/json", "\"event\":\"unkill\"", 0, T_MS) >= 0);
  assert_int_equal(admin(e, "PUT", "/admin/flags/chat/weights",
                         "{\"ctl\":70,\"trt\":30}"), 200);
  i1 = rx_find(&x, "/json", "\"event\":\"weights\"", 0, T_MS);
  assert_true(i1 >= 0);
  assert_non_null(strstr(x.req[i1].body,
                         "\"weights_before\":{\"ctl\":100,\"trt\":0}"));
  assert_non_null(strstr(x.req[i1].body,
                         "\"weights_after\":{\"ctl\":70,\"trt\":30}"));
  assert_int_equal(admin(e, "DELETE", "/admin/flags/chat/weights", NULL), 200);
  assert_true(rx_find(&x, "/json", "\"event\":\"weights_cleared\"", 0, T_MS) >=
              0);
  /* Ramp events carry the brief. */
  assert_int_equal(admin(e, "POST", "/admin/flags/ramped/ramp/pause", NULL),
                   200);
  i1 = rx_find(&x, "/json", "\"event\":\"ramp_paused\"", 0, T_MS);
  assert_true(i1 >= 0);
  assert_non_null(strstr(x.req[i1].body, "\"brief\":\"trt for everyone\""));
  assert_int_equal(admin(e, "POST", "/admin/flags/ramped/ramp/resume", NULL),
                   200);
  assert_true(rx_find(&x, "/json", "\"event\":\"ramp_resumed\"", 0, T_MS) >= 0);
  assert_int_equal(admin(e, "POST", "/admin/flags/ramped/ramp/promote", NULL),
                   200);
  i1 = rx_find(&x, "/json", "\"event\":\"ramp_step\"", 0, T_MS);
  assert_true(i1 >= 0);
  assert_non_null(strstr(x.req[i1].body, "\"variant\":\"trt\""));
  assert_int_equal(admin(e, "POST", "/admin/flags/ramped/ramp/rollback", NULL),
                   200);
  i1 = rx_find(&x, "/json", "\"event\":\"rollback\"", 0, T_MS);
  assert_true(i1 >= 0);
  assert_non_null(strstr(x.req[i1].body, "\"evidence\":{\"guard\":\"manual\""));
  assert_true(rx_find(&x, "/slack", "rollback flag ramped", 0, T_MS) >= 0);
  assert_int_equal(admin(e, "POST", "/admin/flags/ramped/ramp/restart", NULL),
                   200);
  assert_true(rx_find(&x, "/json", "\"event\":\"ramp_restarted\"", 0, T_MS) >=
              0);
  /* reload ok; the Slack sink's filter kept all of these away from it. */
  assert_int_equal(admin(e, "POST", "/admin/reload", NULL), 200);
  assert_true(rx_find(&x, "/json", "\"result\":\"ok\"", 0, T_MS) >= 0);
  assert_int_equal(rx_find(&x, "/slack", "unkill", 0, 100), -1);
  assert_int_equal(rx_find(&x, "/slack", "weights", 0, 100), -1);
  /* Metrics. */
  assert_true(metric_ge(e->gate.port,
                          "modelgate_notify_retries_total{sink=\"ops\"}", 1,
                          T_MS) >= 1);
  assert_true(metric(e->gate.port,
                     "modelgate_notify_sent_total{sink=\"ops\"}") >= 9);
  assert_true(metric(e->gate.port, "modelgate_notify_queue_depth") >= 0);
  /* min_severity critical: only the rollback reached /crit. */
  assert_true(rx_find(&x, "/crit", "\"event\":\"rollback\"", 0, T_MS) >= 0);
  for (i = 0; i < rx_count(&x); i++)
    if (strcmp(x.req[i].path, "/crit") == 0)
      assert_non_null(strstr(x.req[i].body, "\"severity\":\"critical\""));
  gate_down(&e->gate);
  e->gate.pid = 0;
  rx_stop(&x);
}

/* Sinks that hang and reset: requests keep their latency and status. */
static void test_notify_dead_sinks(void **state) {
  struct tenv *e = *state;
  struct rx hang, rst;
  char *sinks;
  int i;
  double worst = 0;
  rx_start(&hang, RX_HANG, 0);
  rx_start(&rst, RX_RESET, 0);
  sinks = fmt("'hang':{'url':'http://127.0.0.1:%d/h','timeout_ms':3000,"
              "'backoff_ms':50,'retries':3},"
              "'reset':{'url':'http://127.0.0.1:%d/r','backoff_ms':20,"
              "'max_backoff_ms':40,'retries':2,'breaker_failures':2,"
              "'breaker_cooldown_ms':500}",
              hang.port, rst.port);
  notify_extra = "'queue_size':8,";
  start_gate(e, sinks);
  notify_extra = "";
  free(sinks);
  for (i = 0; i < 10; i++) {
    assert_int_equal(admin(e, "POST", "/admin/flags/chat/kill", NULL), 200);
    assert_int_equal(admin(e, "POST", "/admin/flags/chat/unkill", NULL), 200);
  }
  /* The hanging sink holds a delivery now. */
  assert_true(rx_find(&hang, "/h", "\"event\":\"kill\"", 0, T_MS) >= 0);
  for (i = 0; i < 40; i++) {
    struct mg_h_resp r;
    char *b = chat_body("gpt-test", "hello", "");
    double t0 = mg_h_now_ms(), ms;
    assert_int_equal(mg_h_request(e->gate.port, "POST", "/v1/chat/completions",
                                  "Content-Type: application/json\r\n", b, &r,
                                  T_MS),
                     0);
    ms = mg_h_now_ms() - t0;
    assert_int_equal(r.status, 200);
    if (ms > worst)
      worst = ms;
    mg_h_resp_free(&r);
    free(b);
    if (i % 10 == 0)
      assert_int_equal(admin(e, "POST", "/admin/flags/chat/kill", NULL), 200),
          assert_int_equal(admin(e, "POST", "/admin/flags/chat/unkill", NULL),
                           200);
  }
  fprintf(stderr, "worst request latency with dead sinks: %.1f ms\n", worst);
  assert_true(worst < 250);
  /* The resetting sink failed, retried and opened its breaker. */
  assert_true(metric_ge(e->gate.port,
                          "modelgate_notify_retries_total{sink=\"reset\"}", 1,
                          T_MS) >= 1);
  assert_true(rx_count(&rst) >= 2);
  /* The hanging sink's deliveries piled up to the bound, then dropped. */
  assert_true(metric(e->gate.port,
                     "modelgate_notify_dropped_total{sink=\"hang\"}") > 0);
  /* The bound, plus a retry per sink put back after its attempt. */
  assert_true(metric(e->gate.port, "modelgate_notify_queue_depth") <= 8 + 2);
  assert_true(metric(e->gate.port,
                     "modelgate_notify_sent_total{sink=\"reset\"}") == 0);
  gate_down(&e->gate);
  e->gate.pid = 0;
  rx_stop(&hang);
  rx_stop(&rst);
}

/* A manual step, once held, waits for a human: ramp_waiting (warning). */
static void test_notify_waiting(void **state) {
  struct tenv *e = *state;
  struct rx x;
  char *sinks;
  int i, k = -1;
  rx_start(&x, RX_OK, 0);
  sinks = fmt("'ops':{'url':'http://127.0.0.1:%d/json'}", x.port);
  ramp_cfg = "'ramp':{'variant':'trt','interval_ms':100,'steps':["
             "  {'weight':100,'hold_ms':200,'manual':true},{'weight':100}]},"
             "'guards':{'window_ms':60000,'min_requests':1,"
             "  'max_error_rate':0.5}}},";
  start_gate(e, sinks);
  free(sinks);
  for (i = 0; i < 50 && k < 0; i++) {
    struct mg_h_resp r;
    char user[48];
    char *b;
    snprintf(user, sizeof(user), ",\"user\":\"u%d\"", i);
    b = chat_body("gpt-r", "hi", user);
    assert_int_equal(mg_h_request(e->gate.port, "POST", "/v1/chat/completions",
                                  "Content-Type: application/json\r\n", b, &r,
                                  T_MS),
                     0);
    mg_h_resp_free(&r);
    free(b);
    k = rx_find(&x, "/json", "\"event\":\"ramp_waiting\"", 0, 100);
  }
  assert_true(k >= 0);
  assert_non_null(strstr(x.req[k].body, "\"severity\":\"warning\""));
  assert_non_null(strstr(x.req[k].body, "\"brief\":\"trt for everyone\""));
  gate_down(&e->gate);
  e->gate.pid = 0;
  rx_stop(&x);
}

/* A breaker that opens, and a reload refused. */
static void test_notify_breaker_reload(void **state) {
  struct tenv *e = *state;
  struct rx x;
  char *sinks;
  int i, k;
  rx_start(&x, RX_OK, 0);
  sinks = fmt("'ops':{'url':'http://127.0.0.1:%d/json'}", x.port);
  tb_breaker = "{'failures':2,'cooldown_ms':60000}";
  start_gate(e, sinks);
  tb_breaker = "{'enabled':false}";
  free(sinks);
  mock_behave(e, "{'model':'m-b','mode':'status','status':500}");
  for (i = 0; i < 3; i++) {
    struct mg_h_resp r;
    char *b = chat_body("gpt-b", "outage", "");
    assert_int_equal(mg_h_request(e->gate.port, "POST", "/v1/chat/completions",
                                  "Content-Type: application/json\r\n", b, &r,
                                  T_MS),
                     0);
    mg_h_resp_free(&r);
    free(b);
  }
  k = rx_find(&x, "/json", "\"event\":\"breaker\"", 0, T_MS);
  assert_true(k >= 0);
  assert_non_null(strstr(x.req[k].body, "\"target\":\"t-b\""));
  assert_non_null(strstr(x.req[k].body, "\"state\":\"open\""));
  /* A broken file: the reload is refused, and said so. */
  assert_int_equal(mg_h_write_file(e->config, "{\"targets\": 3}"), 0);
  assert_int_equal(admin(e, "POST", "/admin/reload", NULL) / 100, 4);
  k = rx_find(&x, "/json", "\"result\":\"refused\"", 0, T_MS);
  assert_true(k >= 0);
  assert_non_null(strstr(x.req[k].body, "\"event\":\"reload\""));
  gate_down(&e->gate);
  e->gate.pid = 0;
  rx_stop(&x);
}

/* A flag variant whose target fails, answered by the control's target
 * (fallback_to_control) on most of its requests: a fallback storm is sent
 * once, with the rate against its threshold; when the variant is healthy
 * again, its end. */
static void test_notify_fallback_storm(void **state) {
  struct tenv *e = *state;
  struct rx x;
  char *sinks;
  int i, k;
  rx_start(&x, RX_OK, 0);
  sinks = fmt("'ops':{'url':'http://127.0.0.1:%d/json',"
              "'events':['fallback_storm','fallback_storm_over']}",
              x.port);
  start_gate(e, sinks);
  free(sinks);
  assert_int_equal(admin(e, "PUT", "/admin/flags/chat/weights",
                         "{\"ctl\":0,\"trt\":100}"),
                   200);
  mock_behave(e, "{'model':'m-b','mode':'status','status':500}");
  for (i = 0; i < 30; i++) {
    struct mg_h_resp r;
    char *extra = fmt(",\"user\":\"storm-%d\"", i);
    assert_int_equal(chat(e->gate.port, "gpt-test", "storm", extra, &r), 0);
    /* No client sees the storm: the control's target answers. */
    assert_int_equal(r.status, 200);
    mg_h_resp_free(&r);
    free(extra);
  }
  /* The control side looks every 5 s. */
  k = rx_find(&x, "/json", "\"event\":\"fallback_storm\"", 0, 12000);
  assert_true(k >= 0);
  assert_non_null(strstr(x.req[k].body, "\"flag\":\"chat\""));
  assert_non_null(strstr(x.req[k].body, "\"variant\":\"trt\""));
  assert_non_null(strstr(x.req[k].body, "\"severity\":\"warning\""));
  assert_non_null(strstr(x.req[k].body, "fallback_rate"));
  /* Once: a storm that goes on is not sent again. */
  mg_h_sleep_ms(5500);
  assert_int_equal(rx_find(&x, "/json", "\"event\":\"fallback_storm\"", 1, 0),
                   -1);
  /* Healthy again: enough good answers bring the minute's rate below half
   * the threshold. */
  mock_behave(e, "{'model':'m-b','mode':'ok'}");
  for (i = 0; i < 300; i++) {
    struct mg_h_resp r;
    char *extra = fmt(",\"user\":\"calm-%d\"", i);
    assert_int_equal(chat(e->gate.port, "gpt-test", "calm", extra, &r), 0);
    assert_int_equal(r.status, 200);
    mg_h_resp_free(&r);
    free(extra);
  }
  k = rx_find(&x, "/json", "\"event\":\"fallback_storm_over\"", 0,
              12000);
  assert_true(k >= 0);
  assert_non_null(strstr(x.req[k].body, "\"variant\":\"trt\""));
  gate_down(&e->gate);
  e->gate.pid = 0;
  rx_stop(&x);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_notify_events, tenv_setup,
                                      tenv_teardown),
      cmocka_unit_test_setup_teardown(test_notify_dead_sinks, tenv_setup,
                                      tenv_teardown),
      cmocka_unit_test_setup_teardown(test_notify_breaker_reload, tenv_setup,
                                      tenv_teardown),
      cmocka_unit_test_setup_teardown(test_notify_waiting, tenv_setup,
                                      tenv_teardown),
      cmocka_unit_test_setup_teardown(test_notify_fallback_storm, tenv_setup,
                                      tenv_teardown),
  };
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
