/* server.c - listeners, signals, graceful shutdown, metrics plumbing. */
#include "proxy/server.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "proxy/conn.h"
#include "proxy/exchange.h"
#include "proxy/http.h"

/* Seconds. Request latencies span from a cache hit to a long generation. */
static const double request_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025,
                                        0.05,  0.1,    0.25,  0.5,  1,
                                        2.5,   5,      10,    30,   60,
                                        120,   300};
/* Seconds. modelgate's own share should sit in the microseconds. */
static const double overhead_bounds[] = {0.00001, 0.000025, 0.00005, 0.0001,
                                         0.00025, 0.0005,   0.001,   0.0025,
                                         0.005,   0.01,     0.025,   0.1};

#define NB(a) (sizeof(a) / sizeof((a)[0]))

static int register_metrics(struct mg_metrics *m) {
  int rc = 0;
  rc |= mg_metrics_family(m, "modelgate_requests_total",
                          "Requests answered, by route (alias) and status.",
                          MG_COUNTER, NULL, 0);
  rc |= mg_metrics_family(m, "modelgate_request_duration_seconds",
                          "Whole request, from the last request byte to the "
                          "last response byte queued.",
                          MG_HISTOGRAM, request_bounds, NB(request_bounds));
  rc |= mg_metrics_family(m, "modelgate_upstream_duration_seconds",
                          "Time spent waiting for upstreams, by target.",
                          MG_HISTOGRAM, request_bounds, NB(request_bounds));
  rc |= mg_metrics_family(m, "modelgate_overhead_seconds",
                          "Time spent in modelgate itself per request "
                          "(whole request minus upstream time).",
                          MG_HISTOGRAM, overhead_bounds, NB(overhead_bounds));
  rc |= mg_metrics_family(m, "modelgate_connections",
                          "Open client connections.", MG_GAUGE, NULL, 0);
  rc |= mg_metrics_family(m, "modelgate_requests_in_flight",
                          "Requests being answered.", MG_GAUGE, NULL, 0);
  rc |= mg_metrics_family(m, "modelgate_upstream_transfers_active",
                          "Upstream transfers in progress.", MG_GAUGE, NULL,
                          0);
  rc |= mg_metrics_family(m, "modelgate_upstream_paused_total",
                          "Times a streaming upstream transfer was paused "
                          "because its client read slowly.",
                          MG_COUNTER, NULL, 0);
  rc |= mg_metrics_family(m, "modelgate_config_info",
                          "The config snapshot in use (label: hash).",
                          MG_GAUGE, NULL, 0);
  return rc ? -ENOMEM : 0;
}

/* Series looked up once per route (or target) and status, then kept:
 * formatting label sets on every request is measurable (bench/). */
#define STATS_STATUSES 12
struct mg_stats {
  char *name;                 /* owned; also the map key */
  struct mg_series *duration; /* borrowed from the registry */
  int nst;
  struct {
    int status;
    struct mg_series *count;
  } st[STATS_STATUSES];
};

static struct mg_stats *stats_get(struct mg_server *s, struct mg_map *map,
                                  const char *family, const char *label,
                                  const char *name) {
  struct mg_stats *st = mg_map_get(map, name, strlen(name));
  struct mg_buf l;
  if (st)
    return st;
  st = calloc(1, sizeof(*st));
  if (st == NULL || (st->name = strdup(name)) == NULL ||
      mg_map_put(map, st->name, strlen(st->name), st) != 0) {
    if (st)
      free(st->name);
    free(st);
    return NULL;
  }
  mg_buf_init(&l, 4096);
  if (mg_metrics_labels(&l, label, name, NULL) == 0)
    st->duration = mg_metrics_series(s->metrics, family, l.data);
  mg_buf_free(&l);
  return st;
}

static struct mg_series *stats_count(struct mg_server *s, struct mg_stats *st,
                                     int status) {
  struct mg_series *series = NULL;
  struct mg_buf l;
  char code[16];
  int i;
  for (i = 0; i < st->nst; i++)
    if (st->st[i].status == status)
      return st->st[i].count;
  snprintf(code, sizeof(code), "%d", status);
  mg_buf_init(&l, 4096);
  if (mg_metrics_labels(&l, "route", st->name, "status", code, NULL) == 0)
    series = mg_metrics_series(s->metrics, "modelgate_requests_total", l.data);
  mg_buf_free(&l);
  if (series && st->nst < STATS_STATUSES) {
    st->st[st->nst].status = status;
    st->st[st->nst].count = series;
    st->nst++;
  }
  return series;
}

static void stats_free_all(struct mg_map *map) {
  size_t i;
  for (i = 0; i < map->cap; i++) {
    struct mg_stats *st = map->slots[i].value;
    if (map->slots[i].key && st) {
      free(st->name);
      free(st);
    }
  }
  mg_map_free(map);
}

void mg_server__observe(struct mg_server *s, const char *route,
                        const char *target, int status, uint64_t total_ns,
                        uint64_t up_ns) {
  struct mg_stats *rs =
      stats_get(s, &s->route_stats, "modelgate_request_duration_seconds",
                "route", route);
  double total = total_ns / 1e9, up = up_ns / 1e9;

  if (rs) {
    mg_series_add(stats_count(s, rs, status), 1);
    mg_series_observe(rs->duration, total);
  }
  if (target) {
    struct mg_stats *ts =
        stats_get(s, &s->target_stats, "modelgate_upstream_duration_seconds",
                  "target", target);
    if (ts)
      mg_series_observe(ts->duration, up);
  }
  mg_series_observe(s->overhead, total > up ? total - up : 0);
}

int mg_server__render_metrics(struct mg_server *s, struct mg_buf *out) {
  struct mg_buf l;
  mg_series_set(mg_metrics_series(s->metrics, "modelgate_connections", ""),
                (double)s->nconns);
  mg_series_set(
      mg_metrics_series(s->metrics, "modelgate_requests_in_flight", ""),
      (double)s->inflight);
  mg_series_set(
      mg_metrics_series(s->metrics, "modelgate_upstream_transfers_active", ""),
      (double)s->up.active);
  mg_series_set(
      mg_metrics_series(s->metrics, "modelgate_upstream_paused_total", ""),
      (double)s->up.paused_total);
  mg_buf_init(&l, 256);
  if (mg_metrics_labels(&l, "hash", s->cfg->hash, NULL) == 0)
    mg_series_set(mg_metrics_series(s->metrics, "modelgate_config_info",
                                    l.data),
                  1);
  mg_buf_free(&l);
  return mg_metrics_render(s->metrics, out);
}

/* ---- ids and time ---------------------------------------------------------- */

static uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

void mg_server__new_id(struct mg_server *s, char out[33]) {
  /* A per-process random half and a bijective scramble of a counter: ids
   * never repeat within a process, and do not reveal request counts. */
  uint64_t parts[2] = {s->id_seed, splitmix64(++s->id_counter ^ s->id_seed)};
  unsigned char b[16];
  int i;
  for (i = 0; i < 8; i++) {
    b[i] = (unsigned char)(parts[0] >> (56 - 8 * i));
    b[8 + i] = (unsigned char)(parts[1] >> (56 - 8 * i));
  }
  mg_hex(b, 16, out);
}

static void refresh_date(struct mg_server *s) {
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) == 0)
    mg_http_date(s->date, tv.tv_sec);
}

static void on_tick(uv_timer_t *t) { refresh_date(t->data); }

/* ---- accept ------------------------------------------------------------------- */

static void on_connection(uv_stream_t *listener, int status) {
  struct mg_server *s = listener->data;
  if (status < 0) {
    mg_warn("accept: %s", uv_strerror(status));
    return;
  }
  mg_conn_accept(s, listener);
}

void mg_server__conn_closed(struct mg_server *s, struct mg_conn *c) {
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  s->nconns--;
  if (s->draining && s->nconns == 0 && s->inflight == 0)
    mg_server_shutdown(s);
}

void mg_server__exchange_done(struct mg_server *s) {
  s->inflight--;
  if (s->draining && s->nconns == 0 && s->inflight == 0)
    mg_server_shutdown(s);
}

/* ---- shutdown ------------------------------------------------------------------ */

static void on_handle_closed(uv_handle_t *h) {
  struct mg_server *s = h->data;
  s->open_handles--;
}

static void close_handle(struct mg_server *s, uv_handle_t *h) {
  if (uv_is_closing(h))
    return;
  h->data = s;
  s->open_handles++;
  uv_close(h, on_handle_closed);
}

static void on_upstream_closed(void *arg) {
  struct mg_server *s = arg;
  mg_info("stopped");
  (void)s;
}

/* Everything has finished: close the remaining handles so the loop ends. */
static void close_all(struct mg_server *s) {
  if (s->closed)
    return;
  s->closed = true;
  close_handle(s, (uv_handle_t *)&s->grace_timer);
  close_handle(s, (uv_handle_t *)&s->tick);
  close_handle(s, (uv_handle_t *)&s->sig_term);
  close_handle(s, (uv_handle_t *)&s->sig_int);
  close_handle(s, (uv_handle_t *)&s->sig_hup);
  if (s->listening) {
    s->listening = false;
    close_handle(s, (uv_handle_t *)&s->listener);
  }
  mg_upstream_close(&s->up, on_upstream_closed, s);
}

static void on_grace_over(uv_timer_t *t) {
  struct mg_server *s = t->data;
  struct mg_conn *c, *next;
  mg_warn("shutdown: grace period over, ending %zu requests", s->inflight);
  for (c = s->conns; c; c = next) {
    next = c->next;
    if (c->ex)
      mg_exchange_abort(c->ex);
    mg_conn_close(c);
  }
}

void mg_server_shutdown(struct mg_server *s) {
  struct mg_conn *c, *next;

  if (!s->draining) {
    s->draining = true;
    mg_info("shutdown: draining %zu connections, %zu requests in flight",
            s->nconns, s->inflight);
    /* Stop accepting first: new connections go to other instances. */
    if (s->listening) {
      s->listening = false;
      close_handle(s, (uv_handle_t *)&s->listener);
    }
    for (c = s->conns; c; c = next) {
      next = c->next;
      mg_conn_drain(c);
    }
    if (s->nconns > 0 || s->inflight > 0) {
      s->grace_timer.data = s;
      uv_timer_start(&s->grace_timer, on_grace_over,
                     s->cfg->server.shutdown_grace_ms, 0);
      return;
    }
  }
  if (s->nconns == 0 && s->inflight == 0)
    close_all(s);
}

static void on_signal(uv_signal_t *h, int signum) {
  struct mg_server *s = h->data;
  mg_info("received %s", signum == SIGTERM ? "SIGTERM" : "SIGINT");
  mg_server_shutdown(s);
}

static void on_sighup(uv_signal_t *h, int signum) {
  (void)signum;
  (void)h;
  mg_info("received SIGHUP: reload is not available in this build");
}

/* ---- start ---------------------------------------------------------------------- */

static int write_port_file(struct mg_server *s, int port) {
  char tmp[4096], body[64];
  int fd, n;
  ssize_t w;

  snprintf(tmp, sizeof(tmp), "%s.tmp", s->port_file);
  n = snprintf(body, sizeof(body), "listen=%d\n", port);
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return -errno;
  w = write(fd, body, (size_t)n);
  close(fd);
  if (w != n || rename(tmp, s->port_file) != 0)
    return -EIO;
  return 0;
}

int mg_server_init(struct mg_server *s, uv_loop_t *loop, struct mg_config *cfg,
                   const char *config_path, const char *port_file) {
  int rc;
  memset(s, 0, sizeof(*s));
  s->loop = loop;
  s->cfg = mg_config_ref(cfg);
  s->config_path = config_path ? strdup(config_path) : NULL;
  s->port_file = port_file ? strdup(port_file) : NULL;
  mg_map_init(&s->route_stats);
  mg_map_init(&s->target_stats);
  mg_json_init(&s->scratch, cfg->limits.json_tokens);
  s->metrics = mg_metrics_new();
  if (s->metrics == NULL || register_metrics(s->metrics) != 0)
    return -ENOMEM;
  s->overhead = mg_metrics_series(s->metrics, "modelgate_overhead_seconds", "");
  if (uv_random(NULL, NULL, &s->id_seed, sizeof(s->id_seed), 0, NULL) != 0)
    s->id_seed = splitmix64(uv_hrtime() ^ (uint64_t)getpid());
  rc = mg_upstream_init(&s->up, loop, &cfg->upstream);
  if (rc)
    return rc;
  uv_tcp_init(loop, &s->listener);
  uv_timer_init(loop, &s->grace_timer);
  uv_timer_init(loop, &s->tick);
  uv_signal_init(loop, &s->sig_term);
  uv_signal_init(loop, &s->sig_int);
  uv_signal_init(loop, &s->sig_hup);
  s->listener.data = s;
  s->tick.data = s;
  s->grace_timer.data = s;
  s->sig_term.data = s->sig_int.data = s->sig_hup.data = s;
  refresh_date(s);
  mg_log_set_level((enum mg_log_level)cfg->server.log_level);
  return 0;
}

int mg_server_start(struct mg_server *s) {
  const struct mg_server_cfg *sc = &s->cfg->server;
  struct sockaddr_storage ss;
  int rc, namelen = sizeof(ss), port;

  if ((rc = uv_ip4_addr(sc->listen_host, sc->listen_port,
                        (struct sockaddr_in *)&ss)) != 0 &&
      (rc = uv_ip6_addr(sc->listen_host, sc->listen_port,
                        (struct sockaddr_in6 *)&ss)) != 0) {
    mg_error("listen: invalid address %s", sc->listen_host);
    return rc;
  }
  rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&ss, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&s->listener, 4096, on_connection);
  if (rc) {
    mg_error("listen on %s:%d: %s", sc->listen_host, sc->listen_port,
             uv_strerror(rc));
    return rc;
  }
  s->listening = true;
  uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &namelen);
  port = ss.ss_family == AF_INET6
             ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
             : ntohs(((struct sockaddr_in *)&ss)->sin_port);

  uv_signal_start(&s->sig_term, on_signal, SIGTERM);
  uv_signal_start(&s->sig_int, on_signal, SIGINT);
  uv_signal_start(&s->sig_hup, on_sighup, SIGHUP);
  uv_timer_start(&s->tick, on_tick, 1000, 1000);
  /* The tick only refreshes a cached string: it must not keep the loop
   * alive on its own. Signals likewise. */
  uv_unref((uv_handle_t *)&s->tick);

  if (s->port_file && (rc = write_port_file(s, port)) != 0) {
    mg_error("cannot write port file %s: %s", s->port_file, uv_strerror(rc));
    return rc;
  }
  mg_info("listening on %s:%d (config %s, %zu targets, %zu aliases)",
          sc->listen_host, port, s->cfg->hash, s->cfg->targets.n,
          s->cfg->routes.n);
  return 0;
}

void mg_server_free(struct mg_server *s) {
  stats_free_all(&s->route_stats);
  stats_free_all(&s->target_stats);
  mg_json_free(&s->scratch);
  mg_metrics_free(s->metrics);
  mg_config_unref(s->cfg);
  free(s->config_path);
  free(s->port_file);
  s->metrics = NULL;
  s->cfg = NULL;
}
