/* worker.c - one event loop: listener, connections, engines, snapshot
 * (worker.h).
 *
 * Life of a worker:
 *   init   handles on its loop, the listener bound (SO_REUSEPORT when
 *          there are several workers: the kernel spreads connections)
 *   run    listen; a threaded worker's thread runs its loop
 *   drain  (a message from the control thread) stop accepting, close idle
 *          connections, let the others finish
 *   close  once no connection and no exchange is left: every handle and
 *          engine closes, the loop runs dry, `stopped` is called */
/* SO_REUSEPORT is Linux (and BSD), not POSIX. */
#define _DEFAULT_SOURCE 1

#include "server/worker.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/hash.h"
#include "common/log.h"
#include "common/time.h"
#include "api/api.h"
#include "server/http.h"
#include "upstream/curl.h"
#include "upstream/native.h"

/* ---- snapshots -------------------------------------------------------------------- */

static void wsnap_free(struct mg_wsnap *ws) {
  size_t i;
  uint32_t j;
  if (ws->flag_series) {
    for (i = 0; i < ws->snap->cfg->flags.n; i++)
      free(ws->flag_series[i]);
    free(ws->flag_series);
  }
  if (ws->variants) {
    for (i = 0; i < ws->snap->cfg->flags.n; i++) {
      for (j = 0; ws->variants[i] && j < ws->snap->cfg->flags.v[i].nvariants;
           j++)
        mg_tel_variant_free(ws->variants[i][j]);
      free(ws->variants[i]);
    }
    free(ws->variants);
  }
  mg_up_views_free(ws->views);
  mg_snap_unref(ws->snap);
  free(ws);
}

void mg_wsnap_release(struct mg_wsnap *ws) {
  if (ws && --ws->refs == 0)
    wsnap_free(ws);
}

/* Take the snapshot in force when it is not the one we have. */
static int refresh(struct mg_worker *w) {
  struct mg_wsnap *ws;
  if (w->cur && mg_rt_gen(w->sh->rt) == w->cur->snap->gen)
    return 0;
  ws = calloc(1, sizeof(*ws));
  if (ws == NULL)
    return -ENOMEM; /* keep serving on the old one */
  ws->snap = mg_rt_snap(w->sh->rt);
  ws->w = w;
  ws->refs = 1;
  mg_wsnap_release(w->cur);
  w->cur = ws;
  w->cfg = ws->snap->cfg;
  return 0;
}

struct mg_wsnap *mg_worker_snap(struct mg_worker *w) {
  (void)refresh(w);
  w->cur->refs++;
  return w->cur;
}

const struct mg_up_views *mg_wsnap_views(struct mg_wsnap *ws) {
  if (ws->views == NULL)
    ws->views = mg_up_views_new(ws->snap->cfg, &ws->w->up);
  return ws->views;
}

struct mg_tel_variant *mg_wsnap_variant(struct mg_wsnap *ws,
                                        const struct mg_flag *f, uint32_t v) {
  const struct mg_config *cfg = ws->snap->cfg;
  size_t nf = cfg->flags.n;
  if (ws->variants == NULL &&
      (ws->variants = calloc(nf ? nf : 1, sizeof(*ws->variants))) == NULL)
    return NULL;
  if (ws->variants[f->index] == NULL &&
      (ws->variants[f->index] =
           calloc(f->nvariants, sizeof(**ws->variants))) == NULL)
    return NULL;
  if (ws->variants[f->index][v] == NULL)
    ws->variants[f->index][v] = mg_tel_variant_new(
        ws->w->tel, f->name, f->variants[v].name, cfg->targets.n);
  return ws->variants[f->index][v];
}

void mg_wsnap_count_flag(struct mg_wsnap *ws, const struct mg_flag *f,
                         uint32_t variant, uint32_t slot, uint32_t nslots,
                         const char *reason) {
  struct mg_series **fs;
  size_t nf = ws->snap->cfg->flags.n;
  if (ws->flag_series == NULL &&
      (ws->flag_series = calloc(nf ? nf : 1, sizeof(*ws->flag_series))) ==
          NULL)
    return;
  fs = ws->flag_series[f->index];
  if (fs == NULL &&
      (fs = ws->flag_series[f->index] =
           calloc((size_t)nslots * f->nvariants, sizeof(*fs))) == NULL)
    return;
  if (fs[variant * nslots + slot] == NULL)
    fs[variant * nslots + slot] = mg_tel_flag_series(
        ws->w->tel, f->name, f->variants[variant].name, reason);
  mg_tel_count(ws->w->tel, fs[variant * nslots + slot]);
}

/* ---- ids ------------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

void mg_worker_new_id(struct mg_worker *w, char out[33]) {
  /* A random half per worker and a bijective scramble of a counter: ids
   * never repeat within a worker, workers' random halves differ, and ids
   * do not reveal request counts. Bytes 4..7 are left 0 for the
   * decision tag, which the exchange writes once its flag has decided
   * (decisions/dtag.h): an untagged id names no flag. */
  uint64_t parts[2] = {w->id_seed & 0xffffffff00000000ULL,
                       splitmix64(++w->id_counter ^ w->id_seed)};
  unsigned char b[16];
  int i;
  for (i = 0; i < 8; i++) {
    b[i] = (unsigned char)(parts[0] >> (56 - 8 * i));
    b[8 + i] = (unsigned char)(parts[1] >> (56 - 8 * i));
  }
  mg_hex(b, 16, out);
}

uint64_t mg_worker_random(struct mg_worker *w) {
  /* xorshift64*: fast, and random enough to split request units. */
  uint64_t x = w->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  w->rng = x;
  return x * 0x2545f4914f6cdd1dULL;
}

/* ---- gauges and life ---------------------------------------------------------- */

void mg_worker_live(struct mg_worker *w, struct mg_tel_live *out) {
  struct mg_up_engine *e[2];
  int i;
  out->conns += atomic_load_explicit(&w->live_conns, memory_order_relaxed);
  out->inflight +=
      atomic_load_explicit(&w->live_inflight, memory_order_relaxed);
  /* The engines' counters are relaxed atomics. Under wake_mu the engines
   * cannot start closing (close_all takes it first): their memory is
   * there while we read. */
  uv_mutex_lock(&w->wake_mu);
  e[0] = w->up.curl;
  e[1] = w->up.native;
  for (i = 0; i < 2; i++)
    if (e[i]) {
      out->transfers += e[i]->ops->active(e[i]);
      out->paused += e[i]->ops->paused_total(e[i]);
    }
  {
    const struct mg_native_stats ns = w->up_stats;
    out->up_conns += ns.conns;
    out->up_idle += ns.idle;
    out->up_waiting += ns.waiting;
    out->up_connects += ns.connects;
    out->up_reuses += ns.reuses;
    out->up_replaced += ns.replaced;
  }
  uv_mutex_unlock(&w->wake_mu);
}

static void close_all(struct mg_worker *w);

static void maybe_done(struct mg_worker *w) {
  if (w->draining && w->env.nconns == 0 && w->inflight == 0)
    close_all(w);
}

void mg_worker_begin(struct mg_worker *w) {
  w->inflight++;
  atomic_fetch_add_explicit(&w->live_inflight, 1, memory_order_relaxed);
}

void mg_worker_answered(struct mg_worker *w) {
  atomic_fetch_sub_explicit(&w->live_inflight, 1, memory_order_relaxed);
}

void mg_worker_end(struct mg_worker *w) {
  w->inflight--;
  maybe_done(w);
}

static void check_stopped(struct mg_worker *w) {
  if (w->closed && w->open_handles == 0 && w->engines_open == 0 &&
      w->stopped) {
    void (*cb)(void *, struct mg_worker *) = w->stopped;
    w->stopped = NULL;
    cb(w->stopped_arg, w);
  }
}

static void on_handle_closed(uv_handle_t *h) {
  struct mg_worker *w = h->data;
  w->open_handles--;
  check_stopped(w);
}

static void close_handle(struct mg_worker *w, uv_handle_t *h) {
  if (uv_is_closing(h))
    return;
  h->data = w;
  w->open_handles++;
  uv_close(h, on_handle_closed);
}

static void on_engine_closed(void *arg) {
  struct mg_worker *w = arg;
  w->engines_open--;
  check_stopped(w);
}

static void close_all(struct mg_worker *w) {
  if (w->closed)
    return;
  w->closed = true;
  w->listening = false;
  close_handle(w, (uv_handle_t *)&w->listener);
  close_handle(w, (uv_handle_t *)&w->tick);
  uv_mutex_lock(&w->wake_mu);
  w->wake_closed = true;
  close_handle(w, (uv_handle_t *)&w->wake);
  /* A scrape reads the engines under this lock: they are gone from here. */
  {
    struct mg_up_engine *curl = w->up.curl, *native = w->up.native;
    w->up.curl = w->up.native = NULL;
    uv_mutex_unlock(&w->wake_mu);
    if (curl) {
      w->engines_open++;
      curl->ops->close(curl, on_engine_closed, w);
    }
    if (native) {
      w->engines_open++;
      native->ops->close(native, on_engine_closed, w);
    }
  }
  /* The snapshot (and the engine destinations of its views, which are plain
   * memory) stays until mg_worker_free: admin connections on this loop
   * still read its limits. */
  check_stopped(w);
}

static void on_conns_idle(void *owner) { maybe_done(owner); }

static void on_conns_count(void *owner, size_t n) {
  struct mg_worker *w = owner;
  atomic_store_explicit(&w->live_conns, n, memory_order_relaxed);
}

static void drain(struct mg_worker *w) {
  if (w->draining)
    return;
  w->draining = true;
  /* Stop accepting first: new connections go to the other workers (until
   * they stop too) and to other instances. */
  if (w->listening) {
    w->listening = false;
    close_handle(w, (uv_handle_t *)&w->listener);
  }
  mg_conn_drain_all(&w->env);
  maybe_done(w);
}

static void on_wake(uv_async_t *a) {
  struct mg_worker *w = a->data;
  unsigned m = atomic_exchange(&w->msgs, 0);
  if (w->closed)
    return;
  if (m & MG_WMSG_DRAIN)
    drain(w);
  if (m & MG_WMSG_ABORT) {
    if (w->inflight)
      mg_warn("shutdown: grace period over, ending %zu requests", w->inflight);
    mg_conn_abort_all(&w->env);
    maybe_done(w);
  }
}

void mg_worker_post(struct mg_worker *w, unsigned msgs) {
  atomic_fetch_or(&w->msgs, msgs);
  uv_mutex_lock(&w->wake_mu);
  if (!w->wake_closed)
    uv_async_send(&w->wake);
  uv_mutex_unlock(&w->wake_mu);
}

/* ---- the connection environment ------------------------------------------------ */

static void env_new_id(void *owner, char out[33]) {
  mg_worker_new_id(owner, out);
}

/* A request refused before routing: its record and its metrics (route
 * "-"). */
static void env_refused(void *owner, const struct mg_http_req *req,
                        const char *endpoint, const char *id, int status,
                        double ms) {
  struct mg_worker *w = owner;
  struct mg_record r;
  (void)req;
  mg_record_init(&r);
  r.ts_ms = mg_wall_ms();
  r.instance = w->sh->instance;
  r.id = id;
  r.config = w->cfg->hash;
  r.endpoint = endpoint;
  r.unit_kind = "request";
  r.bucket = -1;
  r.reason = "unrouted";
  r.tier = "none";
  r.cache = "off";
  r.status = status;
  r.error = status >= 400;
  r.ms = ms;
  r.ttfb_ms = r.ms;
  r.overhead_us = (uint64_t)(r.ms * 1000);
  mg_tel_decision(w->tel, &r);
  mg_tel_observe(w->tel, "-", NULL, status, (uint64_t)(r.ms * 1e6), 0);
}

static void refresh_date(struct mg_worker *w) {
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) == 0)
    mg_http_date(w->date, tv.tv_sec);
}

static void on_tick(uv_timer_t *t) {
  struct mg_worker *w = t->data;
  refresh_date(w);
  /* The native engine's counters are its thread's: a scrape reads this
   * copy, at most a second old. */
  if (w->up.native) {
    struct mg_native_stats ns;
    mg_native_stats(w->up.native, &ns);
    uv_mutex_lock(&w->wake_mu);
    w->up_stats = ns;
    uv_mutex_unlock(&w->wake_mu);
  }
}

static void on_refused_conn(void *owner, bool admin) {
  struct mg_worker *w = owner;
  mg_tel_conn_refused(w->tel, admin ? "admin" : "main", "max_connections");
}

void mg_worker_accept_failed(struct mg_worker *w, bool admin, int status) {
  /* Counted, and logged at most once a second per listener (a flood must
   * not flood the log). */
  static _Thread_local uint64_t last[2];
  uint64_t now = uv_now(w->loop);
  bool fds = status == UV_EMFILE || status == UV_ENFILE;
  mg_tel_conn_refused(w->tel, admin ? "admin" : "main",
                      fds ? "no_fds" : "accept_error");
  if (last[admin] == 0 || now - last[admin] >= 1000) {
    last[admin] = now;
    mg_warn("%s: cannot accept a connection: %s%s", admin ? "admin" : "accept",
            uv_strerror(status),
            fds ? " (out of file descriptors: raise the limit, ulimit -n)"
                : "");
  }
}

static void on_connection(uv_stream_t *listener, int status) {
  struct mg_worker *w = listener->data;
  if (status < 0) {
    mg_worker_accept_failed(w, false, status);
    return;
  }
  (void)refresh(w);
  mg_conn_accept(&w->env, listener);
}

/* The listener's socket, made by hand when several workers share the port:
 * libuv 1.44 has no UV_TCP_REUSEPORT. */
static int bind_listener(struct mg_worker *w, const char *host, int port,
                         bool reuseport) {
  struct sockaddr_storage ss;
  int fd, one = 1, rc;
  memset(&ss, 0, sizeof(ss));
  if ((rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&ss)) != 0 &&
      (rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss)) != 0) {
    mg_error("listen: invalid address %s", host);
    return rc;
  }
  if (!reuseport)
    return uv_tcp_bind(&w->listener, (const struct sockaddr *)&ss, 0);
  fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return -errno;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
      bind(fd, (const struct sockaddr *)&ss,
           ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                    : sizeof(struct sockaddr_in)) != 0) {
    rc = -errno;
    close(fd);
    return rc;
  }
  rc = uv_tcp_open(&w->listener, fd);
  if (rc != 0)
    close(fd);
  return rc;
}

int mg_worker_init(struct mg_worker *w, unsigned index, struct mg_shared *sh,
                   uv_loop_t *loop, mg_route_fn route, int *port,
                   void (*stopped)(void *arg, struct mg_worker *w),
                   void *stopped_arg) {
  struct sockaddr_storage ss;
  struct mg_up_engine_cfg ec;
  int rc, namelen = sizeof(ss);
  const struct mg_server_cfg *sc;

  memset(w, 0, sizeof(*w));
  w->index = index;
  w->sh = sh;
  w->tel = mg_tel_worker(sh->tm, index);
  w->stopped = stopped;
  w->stopped_arg = stopped_arg;
  atomic_init(&w->msgs, 0);
  uv_mutex_init(&w->wake_mu);
  if (loop == NULL) {
    if ((rc = uv_loop_init(&w->own_loop)) != 0)
      return rc;
    w->loop = &w->own_loop;
    w->threaded = true;
  } else {
    w->loop = loop;
  }
  /* Handles first: whatever fails below, they close with the worker. */
  uv_tcp_init(w->loop, &w->listener);
  uv_timer_init(w->loop, &w->tick);
  uv_async_init(w->loop, &w->wake, on_wake);
  w->listener.data = w->tick.data = w->wake.data = w;
  (void)refresh(w);
  sc = &w->cfg->server;
  refresh_date(w);
  if (uv_random(NULL, NULL, &w->id_seed, sizeof(w->id_seed), 0, NULL) != 0)
    w->id_seed = splitmix64(uv_hrtime() ^ (uint64_t)getpid() ^ index);
  w->rng = splitmix64(w->id_seed) | 1;
  mg_json_init(&w->scratch, w->cfg->limits.json_tokens);

  ec.max_idle_connections = w->cfg->upstream.max_idle_connections;
  ec.max_host_connections = w->cfg->upstream.max_host_connections;
  ec.idle_connection_ms = w->cfg->upstream.idle_connection_ms;
  ec.proxy = w->cfg->upstream.proxy;
  w->up.curl = mg_curl_new(w->loop, &ec);
  w->up.native = mg_native_new(w->loop, &ec);
  if (w->up.curl == NULL || w->up.native == NULL)
    return -ENOMEM;

  w->env.loop = w->loop;
  w->env.cfg = &w->cfg;
  w->env.date = w->date;
  w->env.draining = &w->draining;
  w->env.read_buf = w->read_buf;
  w->env.read_busy = &w->read_busy;
  w->env.max_connections = sc->max_connections;
  w->env.owner = w;
  /* OpenAI's shape where no endpoint says otherwise. */
  w->env.error_body = mg_endpoint_get(MG_EP_CHAT)->ops->error_body;
  w->env.route = route;
  w->env.new_id = env_new_id;
  w->env.refused = env_refused;
  w->env.count = on_conns_count;
  w->env.refused_conn = on_refused_conn;
  w->env.idle = on_conns_idle;

  rc = bind_listener(w, sc->listen_host, *port ? *port : sc->listen_port,
                     sh->nworkers > 1);
  if (rc != 0) {
    mg_error("listen on %s:%d: %s", sc->listen_host,
             *port ? *port : sc->listen_port, uv_strerror(rc));
    return rc;
  }
  uv_tcp_getsockname(&w->listener, (struct sockaddr *)&ss, &namelen);
  *port = ss.ss_family == AF_INET6
              ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
              : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  return 0;
}

static void thread_main(void *arg) {
  struct mg_worker *w = arg;
  uv_run(w->loop, UV_RUN_DEFAULT);
}

int mg_worker_run(struct mg_worker *w) {
  int rc = uv_listen((uv_stream_t *)&w->listener, 4096, on_connection);
  if (rc != 0) {
    mg_error("listen: %s", uv_strerror(rc));
    return rc;
  }
  w->listening = true;
  uv_timer_start(&w->tick, on_tick, 1000, 1000);
  /* The tick only refreshes a cached string, and the wake-up handle only
   * carries messages: neither keeps the loop alive on its own. */
  uv_unref((uv_handle_t *)&w->tick);
  uv_unref((uv_handle_t *)&w->wake);
  if (w->threaded && (rc = uv_thread_create(&w->thread, thread_main, w)) != 0) {
    mg_error("worker %u: cannot start its thread: %s", w->index,
             uv_strerror(rc));
    return rc;
  }
  w->running = true;
  return 0;
}

void mg_worker_free(struct mg_worker *w) {
  if (w->threaded && !w->running) {
    /* Never started: close its handles here, on this thread. */
    w->stopped = NULL;
    drain(w);
    uv_run(w->loop, UV_RUN_DEFAULT);
  }
  if (w->threaded) {
    if (w->running)
      uv_thread_join(&w->thread);
    if (uv_loop_close(&w->own_loop) != 0) {
      mg_error("worker %u: event loop did not close cleanly; open handles:",
               w->index);
      uv_print_all_handles(&w->own_loop, stderr);
    }
  }
  mg_wsnap_release(w->cur);
  w->cur = NULL;
  mg_json_free(&w->scratch);
  uv_mutex_destroy(&w->wake_mu);
}
