/* telemetry.c - metric families, per-worker counters, the decision-log
 * hand-off (telemetry.h). */
#include "telemetry/telemetry.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/map.h"
#include "common/time.h"

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

/* Every metric family modelgate exports, declared once per registry. */
static const struct {
  const char *name, *help;
  enum mg_metric_type type;
  const double *bounds;
  size_t nbounds;
} families[] = {
    {"modelgate_requests_total",
     "Requests answered, by route (alias) and status.", MG_COUNTER, NULL, 0},
    {"modelgate_request_duration_seconds",
     "Whole request, from the last request byte to the last response byte "
     "queued.",
     MG_HISTOGRAM, request_bounds, NB(request_bounds)},
    {"modelgate_upstream_duration_seconds",
     "Time spent waiting for upstreams, by target.", MG_HISTOGRAM,
     request_bounds, NB(request_bounds)},
    {"modelgate_overhead_seconds",
     "Time spent in modelgate itself per request (whole request minus upstream "
     "time).",
     MG_HISTOGRAM, overhead_bounds, NB(overhead_bounds)},
    {"modelgate_connections", "Open client connections.", MG_GAUGE, NULL, 0},
    {"modelgate_requests_in_flight", "Requests being answered.", MG_GAUGE, NULL,
     0},
    {"modelgate_upstream_transfers_active", "Upstream transfers in progress.",
     MG_GAUGE, NULL, 0},
    {"modelgate_upstream_paused_total",
     "Times a streaming upstream transfer was paused because its client read "
     "slowly.",
     MG_COUNTER, NULL, 0},
    {"modelgate_upstream_connections",
     "Connections of the native engine to upstreams, by state (idle or "
     "busy: connecting or carrying a request).",
     MG_GAUGE, NULL, 0},
    {"modelgate_upstream_waiting",
     "Native-engine calls waiting for DNS or for a connection slot "
     "(max_host_connections).",
     MG_GAUGE, NULL, 0},
    {"modelgate_upstream_connects_total",
     "Connections the native engine opened to upstreams.", MG_COUNTER, NULL,
     0},
    {"modelgate_upstream_reuses_total",
     "Requests the native engine sent on a pooled keep-alive connection.",
     MG_COUNTER, NULL, 0},
    {"modelgate_upstream_replaced_total",
     "Pooled connections found closed by the upstream before a request was "
     "written on them, replaced by a fresh one (not an attempt).",
     MG_COUNTER, NULL, 0},
    {"modelgate_config_info", "The config snapshot in use (label: hash).",
     MG_GAUGE, NULL, 0},
    {"modelgate_config_reloads_total",
     "Config reloads, by result (ok or error).", MG_COUNTER, NULL, 0},
    {"modelgate_flag_requests_total",
     "Requests routed through a flag, by flag, variant and reason.", MG_COUNTER,
     NULL, 0},
    {"modelgate_flag_weight_percent",
     "Weights in force per flag and variant (file or runtime override).",
     MG_GAUGE, NULL, 0},
    {"modelgate_fallbacks_total",
     "Requests answered by a fallback tier, by the first target, the tier that "
     "answered and the reason.",
     MG_COUNTER, NULL, 0},
    {"modelgate_ramp_step", "Current step of a flag's ramp (0-based).",
     MG_GAUGE, NULL, 0},
    {"modelgate_ramp_rolled_back", "1 when a flag's ramp is rolled back.",
     MG_GAUGE, NULL, 0},
    {"modelgate_ramp_rollbacks_total",
     "Ramp rollbacks, by flag and the guard that fired (manual for the admin "
     "API).",
     MG_COUNTER, NULL, 0},
    {"modelgate_ramp_window_requests",
     "Rollout requests in a ramp's guard window, by flag and variant.",
     MG_GAUGE, NULL, 0},
    {"modelgate_ramp_window_error_rate",
     "Error rate in a ramp's guard window (the variant's own target failed, "
     "even if a fallback answered).",
     MG_GAUGE, NULL, 0},
    {"modelgate_ramp_window_p95_ms", "p95 latency in a ramp's guard window.",
     MG_GAUGE, NULL, 0},
    {"modelgate_decision_log_lines_total", "Decision log lines written.",
     MG_COUNTER, NULL, 0},
    {"modelgate_decision_log_dropped_total",
     "Decision log lines lost (buffer full or write errors).", MG_COUNTER, NULL,
     0},
    {"modelgate_decision_log_write_errors_total",
     "Failed writes to the decision log file.", MG_COUNTER, NULL, 0},
    {"modelgate_decision_log_rotations_total", "Decision log rotations.",
     MG_COUNTER, NULL, 0},
    {"modelgate_stream_errors_total",
     "Streams that ended with an error event after their 200 head was sent "
     "(counted as 200 in modelgate_requests_total).",
     MG_COUNTER, NULL, 0},
    {"modelgate_retries_total", "Retries of a target after a failure.",
     MG_COUNTER, NULL, 0},
    {"modelgate_local_errors_total",
     "Calls to a target that failed for a shortage of modelgate's own (file "
     "descriptors, memory): not the upstream's fault, not counted by its "
     "breaker.",
     MG_COUNTER, NULL, 0},
    {"modelgate_connections_refused_total",
     "Client connections closed unserved, by listener (main, admin) and "
     "reason (max_connections, no_fds, accept_error).",
     MG_COUNTER, NULL, 0},
    {"modelgate_breaker_state",
     "Circuit breaker per target: 0 closed, 1 open, 2 half-open.", MG_GAUGE,
     NULL, 0},
    {"modelgate_breaker_transitions_total",
     "Circuit breaker state changes, by target and new state.", MG_COUNTER,
     NULL, 0},
    {"modelgate_cache_hits_total", "Answers served from the cache.", MG_COUNTER,
     NULL, 0},
    {"modelgate_cache_misses_total", "Cache lookups that found nothing fresh.",
     MG_COUNTER, NULL, 0},
    {"modelgate_cache_stores_total", "Answers stored in the cache.", MG_COUNTER,
     NULL, 0},
    {"modelgate_cache_evictions_total",
     "Entries evicted to stay within the cache limits.", MG_COUNTER, NULL, 0},
    {"modelgate_cache_entries", "Entries in the answer cache.", MG_GAUGE, NULL,
     0},
    {"modelgate_cache_bytes", "Bytes held by the answer cache.", MG_GAUGE, NULL,
     0},
    {"modelgate_flag_killed", "1 when the flag's kill switch is on.", MG_GAUGE,
     NULL, 0},
    {"modelgate_workers", "Event loops serving requests (server.workers).",
     MG_GAUGE, NULL, 0},
    {"modelgate_variant_requests_total",
     "Requests routed through a flag, by flag, variant and status class "
     "(2xx, 4xx, 5xx; a stream that failed after its head counts as 5xx).",
     MG_COUNTER, NULL, 0},
    {"modelgate_variant_fallbacks_total",
     "Requests of a flag's variant answered by a fallback tier.", MG_COUNTER,
     NULL, 0},
    {"modelgate_variant_duration_seconds",
     "Whole request per flag and variant.", MG_HISTOGRAM, request_bounds,
     NB(request_bounds)},
    {"modelgate_feedback_items_total",
     "Items of POST /v1/feedback, by metric (\"-\" when refused before "
     "their metric was known) and outcome: accepted, invalid, rate_limited, "
     "too_large, dropped (accepted, but the decision log had no room).",
     MG_COUNTER, NULL, 0},
    {"modelgate_cost_total",
     "Cost in USD of the answers served, from the target's price and the "
     "answer's usage, by flag, variant and the target that served.",
     MG_COUNTER, NULL, 0},
};

static struct mg_metrics *registry_new(void) {
  struct mg_metrics *m = mg_metrics_new();
  size_t i;
  if (m == NULL)
    return NULL;
  for (i = 0; i < NB(families); i++)
    if (mg_metrics_family(m, families[i].name, families[i].help,
                          families[i].type, families[i].bounds,
                          families[i].nbounds) != 0) {
      mg_metrics_free(m);
      return NULL;
    }
  return m;
}

/* ---- structures ---------------------------------------------------------------- */

#define STATS_STATUSES 12
struct stats {
  char *name;                 /* owned; also the map key */
  struct mg_series *duration; /* borrowed from the registry */
  int nst;
  struct {
    int status;
    struct mg_series *count;
  } st[STATS_STATUSES];
};

struct mg_wtel {
  pthread_mutex_t mu;         /* the worker's, and a scrape's */
  struct mg_metrics *m;       /* owned */
  struct mg_map route_stats;  /* route name -> owned struct stats */
  struct mg_map target_stats; /* target name -> owned struct stats */
  struct mg_series *overhead; /* borrowed from m */
  struct mg_buf line;         /* owned: a record being formatted */
  struct mg_telemetry *tm;    /* borrowed: the owner */
};

/* The last events, for the live view. */
#define RECENT_EVENTS 50

struct mg_telemetry {
  unsigned nworkers;
  pthread_mutex_t ev_mu;      /* guards recent */
  char *recent[RECENT_EVENTS]; /* owned lines, a ring */
  unsigned recent_next;
  struct mg_wtel *w;          /* owned array */
  pthread_mutex_t mu;         /* guards global */
  struct mg_metrics *global;  /* owned: process-wide counters */
  /* Set once by the control thread, read by workers; closed only after
   * every worker stopped. A reload that turns the log off stops new lines
   * (the snapshot says so) but keeps the file open. */
  _Atomic(struct mg_dlog *) dlog;
  _Atomic bool dlog_on;
  /* More families rendered after ours (notify/notify.h), set once before
   * the workers run. */
  int (*extra_fn)(void *arg, struct mg_buf *out);
  void *extra_arg;
};

static void stats_free_all(struct mg_map *map) {
  size_t i;
  for (i = 0; i < map->cap; i++) {
    struct stats *st = map->slots[i].value;
    if (map->slots[i].key && st) {
      free(st->name);
      free(st);
    }
  }
  mg_map_free(map);
}

struct mg_telemetry *mg_tel_new(unsigned nworkers) {
  struct mg_telemetry *tm = calloc(1, sizeof(*tm));
  unsigned i;
  if (tm == NULL)
    return NULL;
  pthread_mutex_init(&tm->mu, NULL);
  pthread_mutex_init(&tm->ev_mu, NULL);
  atomic_init(&tm->dlog, NULL);
  atomic_init(&tm->dlog_on, false);
  tm->nworkers = nworkers ? nworkers : 1;
  tm->global = registry_new();
  tm->w = calloc(tm->nworkers, sizeof(*tm->w));
  if (tm->global == NULL || tm->w == NULL) {
    mg_metrics_free(tm->global);
    free(tm->w);
    pthread_mutex_destroy(&tm->mu);
    free(tm);
    return NULL;
  }
  for (i = 0; i < tm->nworkers; i++) {
    struct mg_wtel *w = &tm->w[i];
    pthread_mutex_init(&w->mu, NULL);
    w->tm = tm;
    mg_map_init(&w->route_stats);
    mg_map_init(&w->target_stats);
    mg_buf_init(&w->line, 1u << 20);
    w->m = registry_new();
    if (w->m == NULL) {
      tm->nworkers = i + 1;
      mg_tel_free(tm);
      return NULL;
    }
    w->overhead = mg_metrics_series(w->m, "modelgate_overhead_seconds", "");
  }
  return tm;
}

void mg_tel_free(struct mg_telemetry *tm) {
  unsigned i;
  if (tm == NULL)
    return;
  mg_tel_dlog_close(tm);
  for (i = 0; i < tm->nworkers; i++) {
    struct mg_wtel *w = &tm->w[i];
    stats_free_all(&w->route_stats);
    stats_free_all(&w->target_stats);
    mg_buf_free(&w->line);
    mg_metrics_free(w->m);
    pthread_mutex_destroy(&w->mu);
  }
  free(tm->w);
  mg_metrics_free(tm->global);
  for (i = 0; i < RECENT_EVENTS; i++)
    free(tm->recent[i]);
  pthread_mutex_destroy(&tm->ev_mu);
  pthread_mutex_destroy(&tm->mu);
  free(tm);
}

struct mg_wtel *mg_tel_worker(struct mg_telemetry *tm, unsigned i) {
  return i < tm->nworkers ? &tm->w[i] : NULL;
}

/* ---- the decision log ------------------------------------------------------- */

int mg_tel_dlog_apply(struct mg_telemetry *tm, const struct mg_dlog_cfg *c) {
  struct mg_dlog *l = atomic_load(&tm->dlog);
  char err[512];
  if (!c->enabled) {
    if (atomic_exchange(&tm->dlog_on, false))
      mg_info("decision log: off");
    return 0;
  }
  if (l) {
    mg_dlog_reopen(l, c);
    atomic_store(&tm->dlog_on, true);
    return 0;
  }
  l = mg_dlog_open(c, err, sizeof(err));
  if (l == NULL) {
    mg_error("decision log: %s", err);
    return -EIO;
  }
  mg_info("decision log: %s", c->path);
  atomic_store(&tm->dlog, l);
  atomic_store(&tm->dlog_on, true);
  return 0;
}

void mg_tel_dlog_reopen(struct mg_telemetry *tm) {
  struct mg_dlog *l = atomic_load(&tm->dlog);
  if (l && atomic_load(&tm->dlog_on)) {
    mg_info("received SIGUSR1: reopening the decision log");
    mg_dlog_reopen(l, NULL);
  }
}

void mg_tel_dlog_close(struct mg_telemetry *tm) {
  mg_tel_dlog_close_within(tm, -1);
}

void mg_tel_dlog_close_within(struct mg_telemetry *tm, int64_t ms) {
  struct mg_dlog *l = atomic_exchange(&tm->dlog, NULL);
  struct mg_dlog_stats ds;
  if (l == NULL)
    return;
  /* Everything queued reaches the file before the process ends, unless
   * the file does not take it in time (issue 10, point 3). */
  if (!mg_dlog_close_within(l, ms, &ds))
    mg_warn("decision log: the file did not take the last lines within the "
            "shutdown grace (%lld ms): they are dropped",
            (long long)ms);
  if (ds.dropped)
    mg_warn("decision log: %llu lines written, %llu dropped",
            (unsigned long long)ds.lines, (unsigned long long)ds.dropped);
  else
    mg_info("decision log: %llu lines written, none dropped",
            (unsigned long long)ds.lines);
}

static struct mg_dlog *dlog_of(struct mg_telemetry *tm) {
  if (!atomic_load_explicit(&tm->dlog_on, memory_order_relaxed))
    return NULL;
  return atomic_load_explicit(&tm->dlog, memory_order_acquire);
}

void mg_tel_decision(struct mg_wtel *w, const struct mg_record *r) {
  struct mg_dlog *l = dlog_of(w->tm);
  if (l == NULL)
    return;
  /* The line buffer is the worker's own: only this thread formats here. */
  mg_buf_reset(&w->line);
  if (mg_record_format(r, &w->line) == 0)
    mg_dlog_write(l, w->line.data, w->line.len);
  else
    mg_dlog_drop(l);
}

int mg_tel_feedback_line(struct mg_wtel *w, const struct mg_feedback_item *it,
                         int64_t ts_ms, const char *client,
                         const char *instance) {
  struct mg_dlog *l = dlog_of(w->tm);
  if (l == NULL)
    return 0;
  mg_buf_reset(&w->line);
  if (mg_feedback_format(it, ts_ms, client, instance, &w->line) != 0)
    return -ENOMEM;
  return mg_dlog_write(l, w->line.data, w->line.len);
}

/* ---- per-worker counters ------------------------------------------------------- */

static struct stats *stats_get(struct mg_wtel *w, struct mg_map *map,
                               const char *family, const char *label,
                               const char *name) {
  struct stats *st = mg_map_get(map, name, strlen(name));
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
    st->duration = mg_metrics_series(w->m, family, l.data);
  mg_buf_free(&l);
  return st;
}

static struct mg_series *stats_count(struct mg_wtel *w, struct stats *st,
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
    series = mg_metrics_series(w->m, "modelgate_requests_total", l.data);
  mg_buf_free(&l);
  if (series && st->nst < STATS_STATUSES) {
    st->st[st->nst].status = status;
    st->st[st->nst].count = series;
    st->nst++;
  }
  return series;
}

void mg_tel_observe(struct mg_wtel *w, const char *route, const char *target,
                    int status, uint64_t total_ns, uint64_t up_ns) {
  double total = total_ns / 1e9, up = up_ns / 1e9;
  struct stats *rs;
  pthread_mutex_lock(&w->mu);
  rs = stats_get(w, &w->route_stats, "modelgate_request_duration_seconds",
                 "route", route);
  if (rs) {
    mg_series_add(stats_count(w, rs, status), 1);
    mg_series_observe(rs->duration, total);
  }
  if (target) {
    struct stats *ts =
        stats_get(w, &w->target_stats, "modelgate_upstream_duration_seconds",
                  "target", target);
    if (ts)
      mg_series_observe(ts->duration, up);
  }
  mg_series_observe(w->overhead, total > up ? total - up : 0);
  pthread_mutex_unlock(&w->mu);
}

/* A counter with a label set built now: for what is rare per request. */
static void count_labels(struct mg_wtel *w, const char *family, ...) {
  struct mg_buf l;
  const char *names[6], *values[6];
  va_list ap;
  int n = 0, rc;
  va_start(ap, family);
  while (n < 3 && (names[n] = va_arg(ap, const char *)) != NULL) {
    values[n] = va_arg(ap, const char *);
    n++;
  }
  va_end(ap);
  mg_buf_init(&l, 4096);
  rc = n == 1   ? mg_metrics_labels(&l, names[0], values[0], NULL)
       : n == 2 ? mg_metrics_labels(&l, names[0], values[0], names[1],
                                    values[1], NULL)
                : mg_metrics_labels(&l, names[0], values[0], names[1],
                                    values[1], names[2], values[2], NULL);
  if (rc == 0) {
    pthread_mutex_lock(&w->mu);
    mg_series_add(mg_metrics_series(w->m, family, l.data), 1);
    pthread_mutex_unlock(&w->mu);
  }
  mg_buf_free(&l);
}

void mg_tel_fallback(struct mg_wtel *w, const char *target, const char *tier,
                     const char *reason) {
  count_labels(w, "modelgate_fallbacks_total", "target", target, "tier",
               tier[0] ? tier : "none", "reason", reason, NULL);
}

void mg_tel_retry(struct mg_wtel *w, const char *target) {
  count_labels(w, "modelgate_retries_total", "target", target, NULL);
}

void mg_tel_feedback(struct mg_wtel *w, const char *metric,
                     const char *outcome, uint64_t n) {
  struct mg_buf l;
  if (n == 0)
    return;
  mg_buf_init(&l, 4096);
  if (mg_metrics_labels(&l, "metric", metric, "outcome", outcome, NULL) ==
      0) {
    pthread_mutex_lock(&w->mu);
    mg_series_add(mg_metrics_series(w->m, "modelgate_feedback_items_total",
                                    l.data),
                  (double)n);
    pthread_mutex_unlock(&w->mu);
  }
  mg_buf_free(&l);
}

void mg_tel_local_error(struct mg_wtel *w, const char *target) {
  count_labels(w, "modelgate_local_errors_total", "target", target, NULL);
}

void mg_tel_conn_refused(struct mg_wtel *w, const char *listener,
                         const char *reason) {
  count_labels(w, "modelgate_connections_refused_total", "listener",
               listener, "reason", reason, NULL);
}

void mg_tel_stream_error(struct mg_wtel *w, const char *route) {
  count_labels(w, "modelgate_stream_errors_total", "route", route, NULL);
}

struct mg_series *mg_tel_flag_series(struct mg_wtel *w, const char *flag,
                                     const char *variant, const char *reason) {
  struct mg_series *s = NULL;
  struct mg_buf l;
  mg_buf_init(&l, 4096);
  if (mg_metrics_labels(&l, "flag", flag, "variant", variant, "reason",
                        reason, NULL) == 0) {
    pthread_mutex_lock(&w->mu);
    s = mg_metrics_series(w->m, "modelgate_flag_requests_total", l.data);
    pthread_mutex_unlock(&w->mu);
  }
  mg_buf_free(&l);
  return s;
}

struct mg_tel_variant {
  const char *flag, *variant;   /* borrowed from the snapshot */
  struct mg_series *req[3];     /* 2xx, 4xx, 5xx */
  struct mg_series *fallbacks, *duration;
  size_t ncost;
  struct mg_series **cost;      /* owned array: by target index */
};

struct mg_tel_variant *mg_tel_variant_new(struct mg_wtel *w, const char *flag,
                                          const char *variant,
                                          size_t ntargets) {
  static const char *const classes[3] = {"2xx", "4xx", "5xx"};
  struct mg_tel_variant *v = calloc(1, sizeof(*v));
  struct mg_buf l;
  int k;
  if (v == NULL)
    return NULL;
  v->flag = flag;
  v->variant = variant;
  v->ncost = ntargets;
  v->cost = calloc(ntargets ? ntargets : 1, sizeof(*v->cost));
  if (v->cost == NULL) {
    free(v);
    return NULL;
  }
  mg_buf_init(&l, 4096);
  pthread_mutex_lock(&w->mu);
  for (k = 0; k < 3; k++) {
    mg_buf_reset(&l);
    if (mg_metrics_labels(&l, "flag", flag, "variant", variant,
                          "status_class", classes[k], NULL) == 0)
      v->req[k] =
          mg_metrics_series(w->m, "modelgate_variant_requests_total", l.data);
  }
  mg_buf_reset(&l);
  if (mg_metrics_labels(&l, "flag", flag, "variant", variant, NULL) == 0) {
    v->fallbacks =
        mg_metrics_series(w->m, "modelgate_variant_fallbacks_total", l.data);
    v->duration =
        mg_metrics_series(w->m, "modelgate_variant_duration_seconds", l.data);
  }
  pthread_mutex_unlock(&w->mu);
  mg_buf_free(&l);
  return v;
}

void mg_tel_variant_free(struct mg_tel_variant *v) {
  if (v == NULL)
    return;
  free(v->cost);
  free(v);
}

void mg_tel_variant_observe(struct mg_wtel *w, struct mg_tel_variant *v,
                            int status, bool failed, bool fallback,
                            double seconds, const char *target,
                            size_t target_index, double cost, bool has_cost) {
  int k = failed || status >= 500 ? 2 : (status >= 400 ? 1 : 0);
  if (v == NULL)
    return;
  /* The cost series of a target is made on the first answer it serves. */
  if (has_cost && target && target_index < v->ncost &&
      v->cost[target_index] == NULL) {
    struct mg_buf l;
    mg_buf_init(&l, 4096);
    if (mg_metrics_labels(&l, "flag", v->flag, "variant", v->variant,
                          "target", target, NULL) == 0) {
      pthread_mutex_lock(&w->mu);
      v->cost[target_index] =
          mg_metrics_series(w->m, "modelgate_cost_total", l.data);
      pthread_mutex_unlock(&w->mu);
    }
    mg_buf_free(&l);
  }
  pthread_mutex_lock(&w->mu);
  mg_series_add(v->req[k], 1);
  if (fallback)
    mg_series_add(v->fallbacks, 1);
  mg_series_observe(v->duration, seconds);
  if (has_cost && target_index < v->ncost)
    mg_series_add(v->cost[target_index], cost);
  pthread_mutex_unlock(&w->mu);
}

void mg_tel_count(struct mg_wtel *w, struct mg_series *s) {
  if (s == NULL)
    return;
  pthread_mutex_lock(&w->mu);
  mg_series_add(s, 1);
  pthread_mutex_unlock(&w->mu);
}

/* ---- process-wide ------------------------------------------------------------------ */

static void global_count(struct mg_telemetry *tm, const char *family,
                         const char *labels) {
  pthread_mutex_lock(&tm->mu);
  mg_series_add(mg_metrics_series(tm->global, family, labels), 1);
  pthread_mutex_unlock(&tm->mu);
}

void mg_tel_reload(struct mg_telemetry *tm, bool ok) {
  struct mg_buf l;
  mg_buf_init(&l, 256);
  if (mg_metrics_labels(&l, "result", ok ? "ok" : "error", NULL) == 0)
    global_count(tm, "modelgate_config_reloads_total", l.data);
  mg_buf_free(&l);
}

void mg_tel_event(struct mg_telemetry *tm, const struct mg_event *ev) {
  struct mg_dlog *dl = dlog_of(tm);
  struct mg_buf l;
  mg_buf_init(&l, 1u << 20);
  if (strcmp(ev->type, "breaker") == 0 && ev->target && ev->state) {
    if (mg_metrics_labels(&l, "target", ev->target, "state", ev->state,
                          NULL) == 0)
      global_count(tm, "modelgate_breaker_transitions_total", l.data);
  } else if (strcmp(ev->type, "rollback") == 0 && ev->flag && ev->guard) {
    if (mg_metrics_labels(&l, "flag", ev->flag, "guard", ev->guard, NULL) ==
        0)
      global_count(tm, "modelgate_ramp_rollbacks_total", l.data);
  }
  mg_buf_reset(&l);
  if (!(mg_record_event_begin(&l, mg_wall_ms(), ev->type) == 0 &&
        mg_event_members(ev, &l) == 0 && mg_buf_append(&l, "}", 1) == 0)) {
    if (dl)
      mg_dlog_drop(dl);
  } else {
    char *copy = strdup(l.data);
    if (dl)
      mg_dlog_write(dl, l.data, l.len);
    if (copy) {
      pthread_mutex_lock(&tm->ev_mu);
      free(tm->recent[tm->recent_next]);
      tm->recent[tm->recent_next] = copy;
      tm->recent_next = (tm->recent_next + 1) % RECENT_EVENTS;
      pthread_mutex_unlock(&tm->ev_mu);
    }
  }
  mg_buf_free(&l);
}

cJSON *mg_tel_recent_events(struct mg_telemetry *tm) {
  cJSON *arr = cJSON_CreateArray();
  unsigned k;
  if (arr == NULL)
    return NULL;
  pthread_mutex_lock(&tm->ev_mu);
  /* Newest first. */
  for (k = 1; k <= RECENT_EVENTS; k++) {
    unsigned i = (tm->recent_next + RECENT_EVENTS - k) % RECENT_EVENTS;
    cJSON *j;
    if (tm->recent[i] == NULL)
      break;
    if ((j = cJSON_Parse(tm->recent[i])) != NULL)
      cJSON_AddItemToArray(arr, j);
  }
  pthread_mutex_unlock(&tm->ev_mu);
  return arr;
}

/* ---- scrape --------------------------------------------------------------------- */

static void set_gauge(struct mg_metrics *m, const char *family, double v,
                      ...) {
  struct mg_buf l;
  const char *n1, *v1 = NULL, *n2 = NULL, *v2 = NULL;
  va_list ap;
  int rc;
  va_start(ap, v);
  n1 = va_arg(ap, const char *);
  if (n1) {
    v1 = va_arg(ap, const char *);
    n2 = va_arg(ap, const char *);
    if (n2)
      v2 = va_arg(ap, const char *);
  }
  va_end(ap);
  mg_buf_init(&l, 4096);
  rc = n1 == NULL   ? 0
       : n2 == NULL ? mg_metrics_labels(&l, n1, v1, NULL)
                    : mg_metrics_labels(&l, n1, v1, n2, v2, NULL);
  if (rc == 0)
    mg_series_set(mg_metrics_series(m, family, l.data ? l.data : ""), v);
  mg_buf_free(&l);
}

/* The gauges of the state in force: every one describes s, so what a reload
 * removed is not exported. */
static void state_gauges(struct mg_metrics *m, struct mg_telemetry *tm,
                         struct mg_runtime *rt, const struct mg_snap *s,
                         int64_t mono) {
  const struct mg_config *cfg = s->cfg;
  struct mg_dlog *dl = atomic_load(&tm->dlog);
  struct mg_cache_stats cs;
  size_t i;
  uint32_t j;

  if (dl) {
    struct mg_dlog_stats ds;
    mg_dlog_stats(dl, &ds);
    set_gauge(m, "modelgate_decision_log_lines_total", (double)ds.lines, NULL);
    set_gauge(m, "modelgate_decision_log_dropped_total", (double)ds.dropped,
              NULL);
    set_gauge(m, "modelgate_decision_log_write_errors_total",
              (double)ds.write_errors, NULL);
    set_gauge(m, "modelgate_decision_log_rotations_total",
              (double)ds.rotations, NULL);
  }
  mg_rt_cache_stats(rt, &cs);
  set_gauge(m, "modelgate_cache_hits_total", (double)cs.hits, NULL);
  set_gauge(m, "modelgate_cache_misses_total", (double)cs.misses, NULL);
  set_gauge(m, "modelgate_cache_stores_total", (double)cs.stores, NULL);
  set_gauge(m, "modelgate_cache_evictions_total", (double)cs.evictions, NULL);
  set_gauge(m, "modelgate_cache_entries", (double)cs.entries, NULL);
  set_gauge(m, "modelgate_cache_bytes", (double)cs.bytes, NULL);
  set_gauge(m, "modelgate_config_info", 1, "hash", cfg->hash, NULL);
  set_gauge(m, "modelgate_workers", (double)tm->nworkers, NULL);
  for (i = 0; i < cfg->flags.n; i++) {
    const struct mg_flag *f = &cfg->flags.v[i];
    const struct mg_flag_state *st = &s->flag_states[i];
    struct mg_rt_ramp_view v;
    set_gauge(m, "modelgate_flag_killed", st->killed ? 1 : 0, "flag", f->name,
              NULL);
    for (j = 0; j < f->nvariants; j++)
      set_gauge(m, "modelgate_flag_weight_percent",
                st->has_weights ? st->weights[j] / 100.0 : 0, "flag", f->name,
                "variant", f->variants[j].name, NULL);
    if (!mg_rt_ramp_view(s, i, mono, &v))
      continue;
    set_gauge(m, "modelgate_ramp_step", v.step, "flag", f->name, NULL);
    set_gauge(m, "modelgate_ramp_rolled_back", v.rolled_back, "flag", f->name,
              NULL);
    for (j = 0; j < 2; j++) {
      const char *vn = j ? v.control : v.treatment;
      double n = (double)v.sum[j].requests;
      set_gauge(m, "modelgate_ramp_window_requests", n, "flag", f->name,
                "variant", vn, NULL);
      set_gauge(m, "modelgate_ramp_window_error_rate",
                n ? v.sum[j].errors / n : 0, "flag", f->name, "variant", vn,
                NULL);
      set_gauge(m, "modelgate_ramp_window_p95_ms",
                mg_window_quantile(&v.sum[j], 0.95), "flag", f->name,
                "variant", vn, NULL);
    }
  }
  for (i = 0; i < cfg->targets.n; i++)
    set_gauge(m, "modelgate_breaker_state",
              (double)mg_breaker_state(s->breakers[i]), "target",
              cfg->targets.v[i].name, NULL);
}

int mg_tel_render(struct mg_telemetry *tm, struct mg_runtime *rt,
                  const struct mg_snap *s, int64_t mono,
                  const struct mg_tel_live *live, struct mg_buf *out) {
  struct mg_metrics *m = registry_new();
  unsigned i;
  int rc = 0;
  if (m == NULL)
    return -ENOMEM;
  pthread_mutex_lock(&tm->mu);
  rc = mg_metrics_merge(m, tm->global);
  pthread_mutex_unlock(&tm->mu);
  for (i = 0; rc == 0 && i < tm->nworkers; i++) {
    pthread_mutex_lock(&tm->w[i].mu);
    rc = mg_metrics_merge(m, tm->w[i].m);
    pthread_mutex_unlock(&tm->w[i].mu);
  }
  if (rc == 0) {
    state_gauges(m, tm, rt, s, mono);
    set_gauge(m, "modelgate_connections", (double)live->conns, NULL);
    set_gauge(m, "modelgate_requests_in_flight", (double)live->inflight, NULL);
    set_gauge(m, "modelgate_upstream_transfers_active",
              (double)live->transfers, NULL);
    set_gauge(m, "modelgate_upstream_paused_total", (double)live->paused,
              NULL);
    set_gauge(m, "modelgate_upstream_connections", (double)live->up_idle,
              "state", "idle", NULL);
    set_gauge(m, "modelgate_upstream_connections",
              (double)(live->up_conns - live->up_idle), "state", "busy", NULL);
    set_gauge(m, "modelgate_upstream_waiting", (double)live->up_waiting, NULL);
    set_gauge(m, "modelgate_upstream_connects_total",
              (double)live->up_connects, NULL);
    set_gauge(m, "modelgate_upstream_reuses_total", (double)live->up_reuses,
              NULL);
    set_gauge(m, "modelgate_upstream_replaced_total",
              (double)live->up_replaced, NULL);
    rc = mg_metrics_render(m, out);
  }
  if (rc == 0 && tm->extra_fn)
    rc = tm->extra_fn(tm->extra_arg, out);
  mg_metrics_free(m);
  return rc;
}

void mg_tel_set_extra(struct mg_telemetry *tm,
                      int (*fn)(void *arg, struct mg_buf *out), void *arg) {
  tm->extra_fn = fn;
  tm->extra_arg = arg;
}
