/* notify.c - queue, retries, breakers and delivery of notifications
 * (notify.h). */
#include "notify/notify.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/time.h"
#include "upstream/curl.h"

struct item {
  struct item *next;
  size_t sink;
  char *body;        /* owned */
  size_t len;
  char *headers;     /* owned: "Name: value\r\n"... */
  uint32_t attempts; /* made so far */
  uint64_t due;      /* uv_now at which it may go */
};

struct sink {
  const struct mg_notify_sink_cfg *cfg; /* borrowed from the notifier's */
  void *dest;                  /* owned by the engine (dest_free) */
  struct mg_up_call *call;     /* in flight, or NULL */
  struct item *item;           /* owned: the delivery in flight */
  uint32_t fails_in_row;
  uint64_t open_until;         /* breaker open until this uv_now; 0 closed */
  _Atomic uint64_t sent, failed, dropped, retries, attempts_failed;
  _Atomic int open;
  struct mg_notifier *n;       /* borrowed: the owner */
  bool seen;                   /* pump: its oldest delivery was looked at */
};

struct mg_notifier {
  uv_loop_t *loop;                  /* borrowed */
  const struct mg_notify_cfg *cfg;  /* borrowed: outlives the notifier */
  struct mg_up_engine *engine;      /* owned: closed by mg_notify_close */
  struct sink *sinks;               /* owned */
  size_t nsinks;
  pthread_mutex_t mu;               /* guards head, tail, depth */
  struct item *head, *tail;
  _Atomic size_t depth;             /* queued (not in flight) */
  uv_async_t wake;
  uv_timer_t timer;
  bool closing;
  uint32_t rng;
};

static void item_free(struct item *it) {
  if (it == NULL)
    return;
  free(it->body);
  free(it->headers);
  free(it);
}

static uint32_t rnd(struct mg_notifier *n) {
  /* xorshift32: jitter only, not security. */
  uint32_t x = n->rng;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return n->rng = x ? x : 0x9e3779b9u;
}

static void pump(struct mg_notifier *n);
static void on_timer(uv_timer_t *t) { pump(t->data); }

static void on_done(struct mg_up_call *call, enum mg_up_result res) {
  struct sink *s = call->owner;
  struct mg_notifier *n = s->n;
  struct item *it = s->item;
  long st = call->status;
  bool ok = res == MG_UP_OK && st >= 200 && st < 300;
  bool retriable = !(res == MG_UP_OK && st >= 400 && st < 500 && st != 408 &&
                     st != 429);
  uint64_t now = uv_now(n->loop);

  mg_up_call_release(call);
  s->call = NULL;
  s->item = NULL;
  it->next = NULL;
  it->attempts++;
  if (ok) {
    atomic_fetch_add(&s->sent, 1);
    s->fails_in_row = 0;
    s->open_until = 0;
    atomic_store(&s->open, 0);
    item_free(it);
  } else {
    atomic_fetch_add(&s->attempts_failed, 1);
    if (++s->fails_in_row >= s->cfg->breaker_failures) {
      if (s->open_until == 0)
        mg_warn("notify: sink %s: breaker open after %u failures (%s)",
                s->cfg->name, s->fails_in_row,
                res == MG_UP_OK ? "HTTP error" : mg_up_result_name(res));
      s->open_until = now + s->cfg->breaker_cooldown_ms;
      atomic_store(&s->open, 1);
    }
    if (!retriable || it->attempts > s->cfg->retries) {
      atomic_fetch_add(&s->failed, 1);
      mg_warn("notify: sink %s: giving up after %u attempt(s): %s %ld",
              s->cfg->name, it->attempts, mg_up_result_name(res), st);
      item_free(it);
    } else {
      /* Full jitter in [d/2, d], d doubling from backoff_ms. */
      uint64_t d = s->cfg->backoff_ms;
      uint32_t k;
      for (k = 1; k < it->attempts && d < s->cfg->max_backoff_ms; k++)
        d *= 2;
      if (d > s->cfg->max_backoff_ms)
        d = s->cfg->max_backoff_ms;
      it->due = now + d / 2 + rnd(n) % (d / 2 + 1);
      atomic_fetch_add(&s->retries, 1);
      /* Back to the front of the queue: order per sink is kept. */
      pthread_mutex_lock(&n->mu);
      it->next = n->head;
      n->head = it;
      if (n->tail == NULL)
        n->tail = it;
      atomic_fetch_add(&n->depth, 1);
      pthread_mutex_unlock(&n->mu);
    }
  }
  pump(n);
}

static const struct mg_up_call_cbs cbs = {NULL, on_done};

static void start(struct mg_notifier *n, struct sink *s, struct item *it) {
  struct mg_up_request req;
  char *body = malloc(it->len + 1);
  if (body == NULL) {
    item_free(it);
    atomic_fetch_add(&s->failed, 1);
    return;
  }
  memcpy(body, it->body, it->len);
  memset(&req, 0, sizeof(req));
  req.dest = s->dest;
  req.method = "POST";
  req.extra_headers = it->headers;
  req.extra_len = strlen(it->headers);
  req.body = body;
  req.body_len = it->len;
  req.timeouts.connect_ms = s->cfg->timeout_ms;
  req.timeouts.first_byte_ms = s->cfg->timeout_ms;
  req.timeouts.idle_ms = s->cfg->timeout_ms;
  req.timeouts.total_ms = s->cfg->timeout_ms;
  req.max_response = 64u << 10;
  s->item = it;
  s->call = n->engine->ops->start(n->engine, &req, &cbs, s);
  if (s->call == NULL) {
    s->item = NULL;
    it->next = NULL;
    atomic_fetch_add(&s->failed, 1);
    item_free(it);
  }
}

/* Start what may go now; arm the timer for the earliest that may not. */
static void pump(struct mg_notifier *n) {
  uint64_t now, next = UINT64_MAX;
  struct item **pp, *it;
  if (n->closing)
    return;
  now = uv_now(n->loop);
  for (size_t i = 0; i < n->nsinks; i++)
    n->sinks[i].seen = false;
  pthread_mutex_lock(&n->mu);
  pp = &n->head;
  while ((it = *pp) != NULL) {
    struct sink *s = &n->sinks[it->sink];
    uint64_t when = it->due;
    /* Per sink, in order: only its oldest delivery may go. */
    if (s->seen) {
      pp = &it->next;
      continue;
    }
    s->seen = true;
    if (s->open_until > when)
      when = s->open_until;
    if (s->call == NULL && when <= now) {
      *pp = it->next;
      if (n->tail == it) {
        struct item *t = n->head;
        while (t && t->next)
          t = t->next;
        n->tail = t;
      }
      atomic_fetch_sub(&n->depth, 1);
      it->next = NULL;
      pthread_mutex_unlock(&n->mu);
      start(n, s, it);
      pthread_mutex_lock(&n->mu);
      pp = &n->head; /* the list may have changed while unlocked */
      continue;
    }
    if (s->call == NULL && when < next)
      next = when;
    pp = &it->next;
  }
  pthread_mutex_unlock(&n->mu);
  if (next != UINT64_MAX)
    uv_timer_start(&n->timer, on_timer, next > now ? next - now : 1, 0);
}

static void on_wake(uv_async_t *a) { pump(a->data); }

struct mg_notifier *mg_notify_new(uv_loop_t *loop,
                                  const struct mg_notify_cfg *cfg) {
  struct mg_notifier *n = calloc(1, sizeof(*n));
  struct mg_up_engine_cfg ec;
  static const char *const lines[] = {"Content-Type: application/json",
                                      "User-Agent: modelgate-notify"};
  struct mg_up_tls tls = {NULL, true};
  size_t i;
  if (n == NULL)
    return NULL;
  n->loop = loop;
  n->cfg = cfg;
  n->rng = (uint32_t)mg_wall_ms() | 1u;
  pthread_mutex_init(&n->mu, NULL);
  memset(&ec, 0, sizeof(ec));
  ec.max_idle_connections = 8;
  ec.idle_connection_ms = 60000;
  n->engine = mg_curl_new(loop, &ec);
  n->sinks = calloc(cfg->nsinks + 1, sizeof(*n->sinks));
  if (n->engine == NULL || n->sinks == NULL) {
    free(n->sinks);
    free(n);
    return NULL;
  }
  n->nsinks = cfg->nsinks;
  for (i = 0; i < cfg->nsinks; i++) {
    char err[256];
    n->sinks[i].cfg = &cfg->sinks[i];
    n->sinks[i].n = n;
    n->sinks[i].dest = n->engine->ops->dest_new(
        n->engine, cfg->sinks[i].url, lines, 2, &tls, err, sizeof(err));
    if (n->sinks[i].dest == NULL)
      mg_error("notify: sink %s: %s", cfg->sinks[i].name, err);
  }
  uv_async_init(loop, &n->wake, on_wake);
  n->wake.data = n;
  uv_timer_init(loop, &n->timer);
  n->timer.data = n;
  uv_unref((uv_handle_t *)&n->wake);
  uv_unref((uv_handle_t *)&n->timer);
  return n;
}

void mg_notify_event(struct mg_notifier *n, const struct mg_event *ev,
                     const char *brief) {
  int64_t ts = mg_wall_ms();
  char key[17];
  size_t i;
  bool queued = false;
  if (n == NULL || n->closing)
    return;
  mg_notify_key(ev, ts, key);
  for (i = 0; i < n->nsinks; i++) {
    struct sink *s = &n->sinks[i];
    struct item *it;
    struct mg_buf b;
    char hdr[512];
    if (s->dest == NULL || !mg_notify_wants(s->cfg, ev))
      continue;
    mg_buf_init(&b, 1u << 20);
    it = calloc(1, sizeof(*it));
    if (it == NULL ||
        mg_notify_payload(ev, s->cfg->format, ts, key, brief, &b) != 0) {
      free(it);
      mg_buf_free(&b);
      atomic_fetch_add(&s->dropped, 1);
      continue;
    }
    {
      int l = snprintf(hdr, sizeof(hdr),
                       "X-Modelgate-Event: %s\r\nX-Modelgate-Dedup-Key: %s\r\n"
                       "X-Modelgate-Timestamp: %lld\r\n",
                       ev->type, key, (long long)(ts / 1000));
      if (s->cfg->secret && l > 0 && (size_t)l < sizeof(hdr)) {
        char sig[72];
        mg_notify_sign(s->cfg->secret, b.data, b.len, sig);
        snprintf(hdr + l, sizeof(hdr) - (size_t)l,
                 "X-Modelgate-Signature: %s\r\n", sig);
      }
    }
    it->sink = i;
    it->body = mg_buf_steal(&b, &it->len);
    it->headers = strdup(hdr);
    if (it->headers == NULL) {
      item_free(it);
      atomic_fetch_add(&s->dropped, 1);
      continue;
    }
    pthread_mutex_lock(&n->mu);
    /* Bounded: beyond queue_size the new delivery is dropped (the ones
     * waiting are older news, already in order). */
    if (atomic_load(&n->depth) >= n->cfg->queue_size) {
      pthread_mutex_unlock(&n->mu);
      item_free(it);
      atomic_fetch_add(&s->dropped, 1);
      continue;
    }
    if (n->tail)
      n->tail->next = it;
    else
      n->head = it;
    n->tail = it;
    atomic_fetch_add(&n->depth, 1);
    pthread_mutex_unlock(&n->mu);
    queued = true;
  }
  if (queued)
    uv_async_send(&n->wake);
}

int mg_notify_metrics(void *arg, struct mg_buf *out) {
  struct mg_notifier *n = arg;
  static const char *const fam[][3] = {
      {"modelgate_notify_sent_total", "counter",
       "Notifications delivered (2xx), by sink."},
      {"modelgate_notify_failed_total", "counter",
       "Notifications given up after their retries, by sink."},
      {"modelgate_notify_dropped_total", "counter",
       "Notifications dropped: the queue was full, by sink."},
      {"modelgate_notify_retries_total", "counter",
       "Notification attempts retried, by sink."},
      {"modelgate_notify_breaker_open", "gauge",
       "1 while a sink's breaker is open."}};
  size_t f, i;
  int rc = 0;
  if (n == NULL)
    return 0;
  for (f = 0; rc == 0 && f < 5; f++) {
    rc = mg_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", fam[f][0],
                       fam[f][2], fam[f][0], fam[f][1]);
    for (i = 0; rc == 0 && i < n->nsinks; i++) {
      struct sink *s = &n->sinks[i];
      uint64_t v = f == 0   ? atomic_load(&s->sent)
                   : f == 1 ? atomic_load(&s->failed)
                   : f == 2 ? atomic_load(&s->dropped)
                   : f == 3 ? atomic_load(&s->retries)
                            : (uint64_t)atomic_load(&s->open);
      rc = mg_buf_printf(out, "%s{sink=", fam[f][0]);
      if (rc == 0)
        rc = mg_buf_json_str(out, s->cfg->name, strlen(s->cfg->name));
      if (rc == 0)
        rc = mg_buf_printf(out, "} %llu\n", (unsigned long long)v);
    }
  }
  if (rc == 0)
    rc = mg_buf_printf(out, "# HELP modelgate_notify_queue_depth Notifications "
                            "waiting to be sent.\n# TYPE "
                            "modelgate_notify_queue_depth gauge\n"
                            "modelgate_notify_queue_depth %zu\n",
                       atomic_load(&n->depth));
  return rc;
}

static void on_engine_closed(void *arg) { (void)arg; }

void mg_notify_close(struct mg_notifier *n) {
  size_t i;
  if (n == NULL || n->closing)
    return;
  n->closing = true;
  for (i = 0; i < n->nsinks; i++) {
    struct sink *s = &n->sinks[i];
    if (s->call) {
      mg_up_call_cancel(s->call);
      s->call = NULL;
      item_free(s->item);
      s->item = NULL;
    }
    if (s->dest)
      n->engine->ops->dest_free(s->dest);
    s->dest = NULL;
  }
  uv_close((uv_handle_t *)&n->wake, NULL);
  uv_close((uv_handle_t *)&n->timer, NULL);
  n->engine->ops->close(n->engine, on_engine_closed, n);
}

void mg_notify_free(struct mg_notifier *n) {
  struct item *it;
  if (n == NULL)
    return;
  while ((it = n->head) != NULL) {
    n->head = it->next;
    item_free(it);
  }
  pthread_mutex_destroy(&n->mu);
  free(n->sinks);
  free(n);
}
