/* server.c - listeners, signals, graceful shutdown, metrics plumbing. */
#include "proxy/server.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/log.h"
#include "common/time.h"
#include "proxy/admin.h"
#include "proxy/conn.h"
#include "proxy/exchange.h"
#include "proxy/http.h"

/* A flag's ramp at run time (see the ramps section). */
struct ramp_rt {
  char *flag;               /* owned; the map key */
  struct mg_ramp_state st;
  char *treatment;          /* owned: variant names the windows are for */
  char *control;
  uint32_t window_ms;
  struct mg_window wt, wc;  /* treatment and control outcomes */
};
static struct ramp_rt *ramp_rt_for(struct mg_server *s, const struct mg_flag *f,
                                   const struct mg_ramp_cfg *rc);

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

/* Every metric family modelgate exports, declared once at start-up. */
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
};

static int register_metrics(struct mg_metrics *m) {
  size_t i;
  for (i = 0; i < NB(families); i++)
    if (mg_metrics_family(m, families[i].name, families[i].help,
                          families[i].type, families[i].bounds,
                          families[i].nbounds) != 0)
      return -ENOMEM;
  return 0;
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
  struct mg_cache_stats cs;
  size_t i;
  mg_cache_stats(s->cache, &cs);
  if (s->dlog) {
    struct mg_dlog_stats ds;
    mg_dlog_stats(s->dlog, &ds);
    mg_series_set(mg_metrics_series(s->metrics,
                                    "modelgate_decision_log_lines_total", ""),
                  (double)ds.lines);
    mg_series_set(mg_metrics_series(s->metrics,
                                    "modelgate_decision_log_dropped_total", ""),
                  (double)ds.dropped);
    mg_series_set(
        mg_metrics_series(s->metrics,
                          "modelgate_decision_log_write_errors_total", ""),
        (double)ds.write_errors);
    mg_series_set(mg_metrics_series(
                      s->metrics, "modelgate_decision_log_rotations_total", ""),
                  (double)ds.rotations);
  }
  mg_series_set(mg_metrics_series(s->metrics, "modelgate_cache_hits_total", ""),
                (double)cs.hits);
  mg_series_set(
      mg_metrics_series(s->metrics, "modelgate_cache_misses_total", ""),
      (double)cs.misses);
  mg_series_set(
      mg_metrics_series(s->metrics, "modelgate_cache_stores_total", ""),
      (double)cs.stores);
  mg_series_set(
      mg_metrics_series(s->metrics, "modelgate_cache_evictions_total", ""),
      (double)cs.evictions);
  mg_series_set(mg_metrics_series(s->metrics, "modelgate_cache_entries", ""),
                (double)cs.entries);
  mg_series_set(mg_metrics_series(s->metrics, "modelgate_cache_bytes", ""),
                (double)cs.bytes);
  /* Ramps of the current snapshot's flags. */
  mg_metrics_hide(s->metrics, "modelgate_ramp_step");
  mg_metrics_hide(s->metrics, "modelgate_ramp_rolled_back");
  mg_metrics_hide(s->metrics, "modelgate_ramp_window_requests");
  mg_metrics_hide(s->metrics, "modelgate_ramp_window_error_rate");
  mg_metrics_hide(s->metrics, "modelgate_ramp_window_p95_ms");
  for (i = 0; i < s->cfg->flags.n; i++) {
    const struct mg_flag *f = &s->cfg->flags.v[i];
    const struct mg_ramp_cfg *rc = &s->cfg->ramps.v[i];
    struct ramp_rt *rt;
    struct mg_window_sum sums[2];
    struct mg_buf fl;
    int k;
    if (!rc->enabled || (rt = ramp_rt_for(s, f, rc)) == NULL)
      continue;
    mg_buf_init(&fl, 4096);
    if (mg_metrics_labels(&fl, "flag", f->name, NULL) == 0) {
      mg_series_set(mg_metrics_series(s->metrics, "modelgate_ramp_step",
                                      fl.data),
                    rt->st.step);
      mg_series_set(mg_metrics_series(s->metrics, "modelgate_ramp_rolled_back",
                                      fl.data),
                    rt->st.status == MG_RAMP_ROLLED_BACK);
    }
    mg_window_sum(&rt->wt, (int64_t)uv_now(s->loop), &sums[0]);
    mg_window_sum(&rt->wc, (int64_t)uv_now(s->loop), &sums[1]);
    for (k = 0; k < 2; k++) {
      double n = (double)sums[k].requests;
      mg_buf_reset(&fl);
      if (mg_metrics_labels(&fl, "flag", f->name, "variant",
                            k ? rt->control : rt->treatment, NULL) != 0)
        continue;
      mg_series_set(mg_metrics_series(s->metrics,
                                      "modelgate_ramp_window_requests", fl.data),
                    n);
      mg_series_set(mg_metrics_series(s->metrics,
                                      "modelgate_ramp_window_error_rate",
                                      fl.data),
                    n ? sums[k].errors / n : 0);
      mg_series_set(mg_metrics_series(s->metrics,
                                      "modelgate_ramp_window_p95_ms", fl.data),
                    mg_window_quantile(&sums[k], 0.95));
    }
    mg_buf_free(&fl);
  }
  /* Breaker states of the current snapshot's targets. */
  mg_metrics_hide(s->metrics, "modelgate_breaker_state");
  for (i = 0; i < s->cfg->targets.n; i++) {
    const struct mg_target *t = &s->cfg->targets.v[i];
    struct mg_breaker *b = mg_map_get(&s->breakers, t->name, strlen(t->name));
    struct mg_buf bl;
    mg_buf_init(&bl, 4096);
    if (b && mg_metrics_labels(&bl, "target", t->name, NULL) == 0)
      mg_series_set(mg_metrics_series(s->metrics, "modelgate_breaker_state",
                                      bl.data),
                    (double)b->state);
    mg_buf_free(&bl);
  }
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
  mg_metrics_hide(s->metrics, "modelgate_config_info");
  if (mg_metrics_labels(&l, "hash", s->cfg->hash, NULL) == 0)
    mg_series_set(mg_metrics_series(s->metrics, "modelgate_config_info",
                                    l.data),
                  1);
  mg_buf_free(&l);
  return mg_metrics_render(s->metrics, out);
}

/* ---- the decision log ------------------------------------------------------ */

void mg_server__decision(struct mg_server *s, const struct mg_record *r) {
  if (s->dlog == NULL)
    return;
  mg_buf_reset(&s->logline);
  if (mg_record_format(r, &s->logline) == 0)
    mg_dlog_write(s->dlog, s->logline.data, s->logline.len);
}

struct mg_buf *mg_server__event_begin(struct mg_server *s, const char *event) {
  mg_buf_reset(&s->logline);
  if (s->dlog == NULL ||
      mg_record_event_begin(&s->logline, mg_wall_ms(), event) != 0)
    return NULL;
  return &s->logline;
}

void mg_server__event_end(struct mg_server *s) {
  if (s->dlog == NULL || s->logline.len == 0)
    return;
  if (mg_buf_append(&s->logline, "}", 1) == 0)
    mg_dlog_write(s->dlog, s->logline.data, s->logline.len);
  mg_buf_reset(&s->logline);
}

/* Open, switch or close the decision log to match cfg. */
static int dlog_apply(struct mg_server *s, const struct mg_dlog_cfg *c) {
  char err[512];
  if (!c->enabled) {
    if (s->dlog) {
      mg_dlog_close(s->dlog, NULL);
      s->dlog = NULL;
      mg_info("decision log: off");
    }
    return 0;
  }
  if (s->dlog) {
    mg_dlog_reopen(s->dlog, c);
    return 0;
  }
  s->dlog = mg_dlog_open(c, err, sizeof(err));
  if (s->dlog == NULL) {
    mg_error("decision log: %s", err);
    return -EIO;
  }
  mg_info("decision log: %s", c->path);
  return 0;
}

/* ---- fallbacks: breakers, cache, metrics ------------------------------------ */

/* Per snapshot: the breakers of its targets by index. */
struct snapshot_rt {
  size_t n;
  struct mg_breaker **breakers; /* owned array of borrowed breakers */
};

static void snapshot_rt_free(void *p) {
  struct snapshot_rt *rt = p;
  free(rt->breakers);
  free(rt);
}

static struct mg_breaker *breaker_for(struct mg_server *s, const char *name) {
  struct mg_breaker *b = mg_map_get(&s->breakers, name, strlen(name));
  char *key;
  if (b)
    return b;
  b = calloc(1, sizeof(*b) + strlen(name) + 1);
  if (b == NULL)
    return NULL;
  mg_breaker_init(b);
  /* The name is stored right after the breaker: one allocation. */
  key = (char *)(b + 1);
  strcpy(key, name);
  if (mg_map_put(&s->breakers, key, strlen(key), b) != 0) {
    free(b);
    return NULL;
  }
  return b;
}

struct mg_breaker *const *mg_server__breakers(struct mg_server *s,
                                              struct mg_config *cfg) {
  struct snapshot_rt *rt = cfg->server_rt;
  size_t i;
  if (rt)
    return rt->breakers;
  rt = calloc(1, sizeof(*rt));
  if (rt)
    rt->breakers = calloc(cfg->targets.n ? cfg->targets.n : 1,
                          sizeof(*rt->breakers));
  if (rt == NULL || rt->breakers == NULL) {
    if (rt)
      free(rt->breakers);
    free(rt);
    return NULL;
  }
  rt->n = cfg->targets.n;
  for (i = 0; i < rt->n; i++) {
    rt->breakers[i] = breaker_for(s, cfg->targets.v[i].name);
    if (rt->breakers[i] == NULL) {
      snapshot_rt_free(rt);
      return NULL;
    }
  }
  cfg->server_rt = rt;
  cfg->server_rt_free = snapshot_rt_free;
  return rt->breakers;
}

void mg_server__breaker_changed(struct mg_server *s, const struct mg_target *t,
                                int state) {
  struct mg_buf l;
  const char *name = mg_breaker_state_name((enum mg_breaker_state)state);
  if (state == MG_BREAKER_OPEN)
    mg_warn("breaker of target %s: open (requests skip it)", t->name);
  else
    mg_info("breaker of target %s: %s", t->name, name);
  mg_buf_init(&l, 4096);
  if (mg_metrics_labels(&l, "target", t->name, "state", name, NULL) == 0)
    mg_series_add(mg_metrics_series(s->metrics,
                                    "modelgate_breaker_transitions_total",
                                    l.data),
                  1);
  mg_buf_free(&l);
  {
    struct mg_buf *ev = mg_server__event_begin(s, "breaker");
    if (ev && mg_buf_puts(ev, ",\"target\":") == 0 &&
        mg_buf_json_str(ev, t->name, strlen(t->name)) == 0 &&
        mg_buf_puts(ev, ",\"state\":") == 0 &&
        mg_buf_json_str(ev, name, strlen(name)) == 0)
      mg_server__event_end(s);
  }
}

void mg_server__observe_fallback(struct mg_server *s, const char *target,
                                 const char *tier, const char *reason) {
  struct mg_buf l;
  mg_buf_init(&l, 4096);
  if (mg_metrics_labels(&l, "target", target, "tier", tier[0] ? tier : "none",
                        "reason", reason, NULL) == 0)
    mg_series_add(
        mg_metrics_series(s->metrics, "modelgate_fallbacks_total", l.data), 1);
  mg_buf_free(&l);
}

void mg_server__observe_stream_error(struct mg_server *s, const char *route) {
  struct mg_buf l;
  mg_buf_init(&l, 4096);
  if (mg_metrics_labels(&l, "route", route, NULL) == 0)
    mg_series_add(
        mg_metrics_series(s->metrics, "modelgate_stream_errors_total", l.data),
        1);
  mg_buf_free(&l);
}

void mg_server__observe_retry(struct mg_server *s, const char *target) {
  struct mg_buf l;
  mg_buf_init(&l, 4096);
  if (mg_metrics_labels(&l, "target", target, NULL) == 0)
    mg_series_add(
        mg_metrics_series(s->metrics, "modelgate_retries_total", l.data), 1);
  mg_buf_free(&l);
}

bool mg_server__cache_get(struct mg_server *s, const struct mg_cache_key *k,
                          const char **body, size_t *len) {
  return mg_cache_get(s->cache, k, (int64_t)uv_now(s->loop), body, len);
}

int mg_server__cache_put(struct mg_server *s, const struct mg_cache_key *k,
                         const char *body, size_t len) {
  return mg_cache_put(s->cache, k, (int64_t)uv_now(s->loop), body, len);
}

static void breakers_free(struct mg_map *m) {
  size_t i;
  for (i = 0; i < m->cap; i++)
    if (m->slots[i].key)
      free(m->slots[i].value);
  mg_map_free(m);
}

/* ---- ramps ---------------------------------------------------------------- */


static void ramp_rt_free(struct ramp_rt *rt) {
  free(rt->flag);
  free(rt->treatment);
  free(rt->control);
  free(rt);
}

static int save_state(struct mg_server *s);

/* The runtime of a flag's ramp, made on first use: from the state file
 * when it knows the flag, else a fresh start. Windows follow the config. */
static struct ramp_rt *ramp_rt_for(struct mg_server *s, const struct mg_flag *f,
                                   const struct mg_ramp_cfg *rc) {
  struct ramp_rt *rt = mg_map_get(&s->ramp_rt, f->name, strlen(f->name));
  const char *tn = f->variants[rc->variant].name;
  const char *cn = f->variants[rc->control].name;
  if (rt == NULL) {
    const cJSON *saved =
        s->pending_ramps
            ? cJSON_GetObjectItemCaseSensitive(s->pending_ramps, f->name)
            : NULL;
    rt = calloc(1, sizeof(*rt));
    if (rt == NULL || (rt->flag = strdup(f->name)) == NULL ||
        mg_map_put(&s->ramp_rt, rt->flag, strlen(rt->flag), rt) != 0) {
      if (rt)
        free(rt->flag);
      free(rt);
      return NULL;
    }
    if (saved &&
        mg_ramp_state_from_json(&rt->st, saved, rc->nsteps) == 0) {
      mg_info("ramp of flag %s: resumed at step %u (%s)", f->name, rt->st.step,
              mg_ramp_status_name(rt->st.status));
    } else {
      mg_ramp_start(&rt->st, mg_wall_ms());
      mg_info("ramp of flag %s: started", f->name);
    }
  }
  if (rt->treatment == NULL || strcmp(rt->treatment, tn) != 0 ||
      rt->control == NULL || strcmp(rt->control, cn) != 0 ||
      rt->window_ms != rc->guards.window_ms) {
    free(rt->treatment);
    free(rt->control);
    rt->treatment = strdup(tn);
    rt->control = strdup(cn);
    rt->window_ms = rc->guards.window_ms;
    mg_window_init(&rt->wt, rc->guards.window_ms);
    mg_window_init(&rt->wc, rc->guards.window_ms);
  }
  if (rt->st.step >= rc->nsteps && rc->nsteps)
    rt->st.step = rc->nsteps - 1;
  return rt;
}

void mg_server__ramp_observe(struct mg_server *s, const struct mg_flag *f,
                             uint32_t variant, bool error, bool fallback,
                             bool low_conf, double ms) {
  struct ramp_rt *rt = mg_map_get(&s->ramp_rt, f->name, strlen(f->name));
  const char *v = f->variants[variant].name;
  int64_t now = (int64_t)uv_now(s->loop);
  if (rt == NULL || rt->treatment == NULL)
    return;
  if (strcmp(v, rt->treatment) == 0)
    mg_window_add(&rt->wt, now, error, fallback, low_conf, ms);
  else if (strcmp(v, rt->control) == 0)
    mg_window_add(&rt->wc, now, error, fallback, low_conf, ms);
}

static int rebuild_states(struct mg_server *s, size_t old_nflags);

/* Something changed a ramp's state: weights, state file, event, log. */
static void ramp_changed(struct mg_server *s, const struct mg_flag *f,
                         const struct mg_ramp_cfg *rc, struct ramp_rt *rt,
                         const char *event) {
  struct mg_buf *ev;
  uint32_t w = mg_ramp_weight(rc, &rt->st);
  rebuild_states(s, s->cfg->flags.n);
  save_state(s);
  if (rt->st.status == MG_RAMP_ROLLED_BACK && strcmp(event, "rollback") == 0) {
    struct mg_buf l;
    mg_warn("ramp of flag %s: ROLLED BACK %s to 0%% (%s: observed %.4g, "
            "threshold %.4g)",
            f->name, rt->treatment, rt->st.guard, rt->st.observed,
            rt->st.threshold);
    mg_buf_init(&l, 4096);
    if (mg_metrics_labels(&l, "flag", f->name, "guard", rt->st.guard, NULL) ==
        0)
      mg_series_add(mg_metrics_series(s->metrics,
                                      "modelgate_ramp_rollbacks_total", l.data),
                    1);
    mg_buf_free(&l);
  } else {
    mg_info("ramp of flag %s: %s, step %u, %s at %.2f%%", f->name, event,
            rt->st.step, rt->treatment, w / 100.0);
  }
  ev = mg_server__event_begin(s, event);
  if (ev && mg_buf_puts(ev, ",\"flag\":") == 0 &&
      mg_buf_json_str(ev, f->name, strlen(f->name)) == 0 &&
      mg_buf_puts(ev, ",\"variant\":") == 0 &&
      mg_buf_json_str(ev, rt->treatment, strlen(rt->treatment)) == 0 &&
      mg_buf_printf(ev, ",\"status\":\"%s\",\"step\":%u,\"weight\":%.10g",
                    mg_ramp_status_name(rt->st.status), rt->st.step,
                    w / 100.0) == 0) {
    int e = 0;
    if (rt->st.status == MG_RAMP_ROLLED_BACK) {
      e = mg_buf_puts(ev, ",\"guard\":");
      if (e == 0)
        e = mg_buf_json_str(ev, rt->st.guard, strlen(rt->st.guard));
      if (e == 0)
        e = mg_buf_printf(ev, ",\"observed\":%.6g,\"threshold\":%.6g",
                          rt->st.observed, rt->st.threshold);
    }
    if (e == 0)
      mg_server__event_end(s);
  }
}

static void on_ramp_timer(uv_timer_t *t) {
  struct mg_server *s = t->data;
  int64_t wall = mg_wall_ms(), mono = (int64_t)uv_now(s->loop);
  size_t i;
  for (i = 0; i < s->cfg->flags.n; i++) {
    const struct mg_ramp_cfg *rc = &s->cfg->ramps.v[i];
    const struct mg_flag *f = &s->cfg->flags.v[i];
    struct mg_window_sum ts, cs;
    struct ramp_rt *rt;
    enum mg_ramp_event ev;
    if (!rc->enabled || (rt = ramp_rt_for(s, f, rc)) == NULL)
      continue;
    mg_window_sum(&rt->wt, mono, &ts);
    mg_window_sum(&rt->wc, mono, &cs);
    ev = mg_ramp_check(rc, &rt->st, wall, &ts, &cs);
    if (ev == MG_RAMP_ADVANCED)
      ramp_changed(s, f, rc, rt, "ramp_step");
    else if (ev == MG_RAMP_ROLLBACK)
      ramp_changed(s, f, rc, rt, "rollback");
    else if (ev == MG_RAMP_WAIT)
      ramp_changed(s, f, rc, rt, "ramp_waiting");
  }
}

/* Run the guard checks at the shortest interval any ramp asks for. */
static void ramps_sync_timer(struct mg_server *s) {
  uint32_t period = 0;
  size_t i;
  for (i = 0; i < s->cfg->flags.n; i++) {
    const struct mg_ramp_cfg *rc = &s->cfg->ramps.v[i];
    if (rc->enabled && (period == 0 || rc->interval_ms < period))
      period = rc->interval_ms;
  }
  if (period == s->ramp_period)
    return;
  s->ramp_period = period;
  if (period == 0) {
    uv_timer_stop(&s->ramp_timer);
    return;
  }
  uv_timer_start(&s->ramp_timer, on_ramp_timer, period, period);
}

int mg_server__ramp_action(struct mg_server *s, const struct mg_flag *f,
                           const char *action, char *msg, size_t n) {
  const struct mg_ramp_cfg *rc = &s->cfg->ramps.v[f->index];
  struct ramp_rt *rt;
  int64_t now = mg_wall_ms();
  int rc2 = -EINVAL;
  const char *event = action;

  if (!rc->enabled) {
    snprintf(msg, n, "Flag %s has no ramp.", f->name);
    return -ENOENT;
  }
  rt = ramp_rt_for(s, f, rc);
  if (rt == NULL) {
    snprintf(msg, n, "Out of memory.");
    return -ENOMEM;
  }
  if (strcmp(action, "pause") == 0) {
    rc2 = mg_ramp_pause(&rt->st, now);
    event = "ramp_paused";
  } else if (strcmp(action, "resume") == 0) {
    rc2 = mg_ramp_resume(&rt->st, now);
    event = "ramp_resumed";
  } else if (strcmp(action, "promote") == 0) {
    rc2 = mg_ramp_promote(rc, &rt->st, now);
    event = "ramp_step";
  } else if (strcmp(action, "rollback") == 0) {
    rc2 = mg_ramp_rollback(&rt->st, now);
    event = "rollback";
  } else if (strcmp(action, "restart") == 0) {
    mg_ramp_restart(&rt->st, now);
    /* Old outcomes belong to the version that failed. */
    mg_window_init(&rt->wt, rt->window_ms);
    mg_window_init(&rt->wc, rt->window_ms);
    rc2 = 0;
    event = "ramp_restarted";
  } else {
    snprintf(msg, n, "Unknown ramp action '%s'.", action);
    return -EINVAL;
  }
  if (rc2 != 0) {
    snprintf(msg, n, "Cannot %s the ramp of %s: it is %s.", action, f->name,
             mg_ramp_status_name(rt->st.status));
    return rc2;
  }
  ramp_changed(s, f, rc, rt, event);
  return 0;
}

cJSON *mg_server__ramp_json(struct mg_server *s, const struct mg_flag *f) {
  const struct mg_ramp_cfg *rc = &s->cfg->ramps.v[f->index];
  struct ramp_rt *rt;
  struct mg_window_sum ts, cs;
  cJSON *o, *w, *arr;
  int64_t mono = (int64_t)uv_now(s->loop);
  uint32_t i;
  if (!rc->enabled || (rt = ramp_rt_for(s, f, rc)) == NULL)
    return NULL;
  o = mg_ramp_state_to_json(&rt->st);
  if (o == NULL)
    return NULL;
  cJSON_AddStringToObject(o, "variant", rt->treatment);
  cJSON_AddNumberToObject(o, "weight", mg_ramp_weight(rc, &rt->st) / 100.0);
  arr = cJSON_AddArrayToObject(o, "steps");
  for (i = 0; i < rc->nsteps; i++) {
    cJSON *st = cJSON_CreateObject();
    cJSON_AddNumberToObject(st, "weight", rc->steps[i].weight / 100.0);
    cJSON_AddNumberToObject(st, "hold_ms", rc->steps[i].hold_ms);
    cJSON_AddBoolToObject(st, "manual", rc->steps[i].manual);
    cJSON_AddItemToArray(arr, st);
  }
  mg_window_sum(&rt->wt, mono, &ts);
  mg_window_sum(&rt->wc, mono, &cs);
  w = cJSON_AddObjectToObject(o, "window");
  {
    const struct mg_window_sum *sums[2] = {&ts, &cs};
    const char *names[2] = {rt->treatment, rt->control};
    int k;
    for (k = 0; k < 2; k++) {
      cJSON *v = cJSON_AddObjectToObject(w, names[k]);
      double n = (double)sums[k]->requests;
      cJSON_AddNumberToObject(v, "requests", n);
      cJSON_AddNumberToObject(v, "error_rate", n ? sums[k]->errors / n : 0);
      cJSON_AddNumberToObject(v, "fallback_rate",
                              n ? sums[k]->fallbacks / n : 0);
      cJSON_AddNumberToObject(v, "low_confidence_rate",
                              n ? sums[k]->low_conf / n : 0);
      cJSON_AddNumberToObject(v, "p95_ms", mg_window_quantile(sums[k], 0.95));
    }
  }
  return o;
}

static void ramps_free(struct mg_server *s) {
  size_t i;
  for (i = 0; i < s->ramp_rt.cap; i++)
    if (s->ramp_rt.slots[i].key)
      ramp_rt_free(s->ramp_rt.slots[i].value);
  mg_map_free(&s->ramp_rt);
  cJSON_Delete(s->pending_ramps);
  s->pending_ramps = NULL;
}

/* ---- flags: state in force, overrides, metrics ------------------------------ */

/* Per flag of the current snapshot: series of modelgate_flag_requests_total
 * by variant and reason slot (the fixed reasons, then one per rule). */
struct flag_series {
  uint32_t nslots;
  struct mg_series **s; /* owned array of borrowed series */
};

static uint32_t reason_slot(const struct mg_flag_decision *d) {
  return d->reason == MG_REASON_RULE ? (uint32_t)(MG_REASON_DEFAULT + 1) +
                                           (uint32_t)d->rule
                                     : (uint32_t)d->reason;
}

void mg_server__observe_flag(struct mg_server *s, const struct mg_flag *f,
                             const struct mg_flag_decision *d) {
  struct flag_series *fs = &s->flag_series[f->index];
  uint32_t slot = d->variant * fs->nslots + reason_slot(d);
  if (fs->s[slot] == NULL) {
    char why[24];
    struct mg_buf l;
    mg_buf_init(&l, 4096);
    if (mg_metrics_labels(&l, "flag", f->name, "variant",
                          f->variants[d->variant].name, "reason",
                          mg_reason_name(d->reason, d->rule, why, sizeof(why)),
                          NULL) == 0)
      fs->s[slot] =
          mg_metrics_series(s->metrics, "modelgate_flag_requests_total", l.data);
    mg_buf_free(&l);
  }
  mg_series_add(fs->s[slot], 1);
}

static void flag_series_free(struct mg_server *s, size_t n) {
  size_t i;
  if (s->flag_series == NULL)
    return;
  for (i = 0; i < n; i++)
    free(s->flag_series[i].s);
  free(s->flag_series);
  s->flag_series = NULL;
}

/* Recompute the state in force of every flag of the current snapshot. */
static int rebuild_states(struct mg_server *s, size_t old_nflags) {
  const struct mg_flags *fl = &s->cfg->flags;
  size_t n = fl->n ? fl->n : 1, i;
  struct mg_flag_state *st = calloc(n, sizeof(*st));
  bool *stale = calloc(n, sizeof(*stale));
  struct flag_series *fs = calloc(n, sizeof(*fs));

  if (st == NULL || stale == NULL || fs == NULL)
    goto oom;
  for (i = 0; i < fl->n; i++) {
    const struct mg_flag *f = &fl->v[i];
    fs[i].nslots = (uint32_t)MG_REASON_DEFAULT + 1 + f->nrules;
    fs[i].s = calloc((size_t)fs[i].nslots * f->nvariants, sizeof(*fs[i].s));
    if (fs[i].s == NULL)
      goto oom;
    mg_overrides_state(&s->overrides, f, &st[i], &stale[i]);
    /* A ramp owns its flag's weights (a kill still wins: it is not a
     * weight). */
    if (s->cfg->ramps.v[i].enabled) {
      struct ramp_rt *rt = ramp_rt_for(s, f, &s->cfg->ramps.v[i]);
      if (rt)
        mg_ramp_apply(&s->cfg->ramps.v[i], &rt->st, f, &st[i]);
    }
    if (stale[i])
      mg_warn("flag %s: the weights override names variants the config no "
              "longer has; the file's weights are in force",
              f->name);
  }
  free(s->flag_states);
  free(s->flag_stale);
  flag_series_free(s, old_nflags);
  s->flag_states = st;
  s->flag_stale = stale;
  s->flag_series = fs;
  /* Gauges for what is in force now; flags and variants a reload removed
   * are no longer exported. */
  mg_metrics_hide(s->metrics, "modelgate_flag_killed");
  mg_metrics_hide(s->metrics, "modelgate_flag_weight_percent");
  for (i = 0; i < fl->n; i++) {
    const struct mg_flag *f = &fl->v[i];
    struct mg_buf l;
    uint32_t j;
    mg_buf_init(&l, 4096);
    if (mg_metrics_labels(&l, "flag", f->name, NULL) == 0)
      mg_series_set(mg_metrics_series(s->metrics, "modelgate_flag_killed",
                                      l.data),
                    st[i].killed ? 1 : 0);
    for (j = 0; j < f->nvariants; j++) {
      mg_buf_reset(&l);
      if (mg_metrics_labels(&l, "flag", f->name, "variant",
                            f->variants[j].name, NULL) == 0)
        mg_series_set(mg_metrics_series(s->metrics,
                                        "modelgate_flag_weight_percent",
                                        l.data),
                      st[i].has_weights ? st[i].weights[j] / 100.0 : 0);
    }
    mg_buf_free(&l);
  }
  return 0;
oom:
  if (fs)
    for (i = 0; i < fl->n; i++)
      free(fs[i].s);
  free(fs);
  free(st);
  free(stale);
  return -ENOMEM;
}

/* The state file: {"version": 1, "overrides": {...}}. */
static int save_state(struct mg_server *s) {
  cJSON *root = cJSON_CreateObject(), *ov = NULL;
  char *text = NULL;
  int rc = -ENOMEM;
  if (root == NULL || cJSON_AddNumberToObject(root, "version", 1) == NULL ||
      mg_overrides_to_json(&s->overrides, &ov) != 0)
    goto out;
  cJSON_AddItemToObject(root, "overrides", ov);
  {
    cJSON *ramps = cJSON_AddObjectToObject(root, "ramps");
    size_t i;
    for (i = 0; ramps && i < s->ramp_rt.cap; i++) {
      struct ramp_rt *rt = s->ramp_rt.slots[i].value;
      if (s->ramp_rt.slots[i].key)
        cJSON_AddItemToObject(ramps, rt->flag, mg_ramp_state_to_json(&rt->st));
    }
  }
  text = cJSON_Print(root);
  if (text == NULL)
    goto out;
  rc = mg_write_file_atomic(s->state_file, text, strlen(text));
  if (rc != 0)
    mg_error("cannot save state to %s: %s", s->state_file, strerror(-rc));
out:
  free(text);
  cJSON_Delete(root);
  return rc;
}

static int load_state(struct mg_server *s) {
  FILE *f = fopen(s->state_file, "rb");
  char *buf = NULL, err[256];
  size_t len = 0, cap = 0, n;
  cJSON *root = NULL;
  int rc = 0;

  if (f == NULL) {
    if (errno == ENOENT)
      return 0; /* first start: nothing overridden yet */
    mg_error("cannot read state file %s: %s", s->state_file, strerror(errno));
    return -errno;
  }
  do {
    if (len == cap) {
      char *p = realloc(buf, cap = cap ? cap * 2 : 4096);
      if (p == NULL) {
        rc = -ENOMEM;
        goto out;
      }
      buf = p;
    }
    n = fread(buf + len, 1, cap - len, f);
    len += n;
  } while (n > 0 && len < (64u << 20));
  root = cJSON_ParseWithLength(buf ? buf : "", len);
  if (!cJSON_IsObject(root)) {
    /* A kill switch must not silently vanish: refuse to start instead. */
    mg_error("state file %s is not valid JSON; fix or remove it",
             s->state_file);
    rc = -EINVAL;
    goto out;
  }
  {
    const cJSON *ov = cJSON_GetObjectItemCaseSensitive(root, "overrides");
    if (ov && mg_overrides_from_json(&s->overrides, ov, err, sizeof(err))) {
      mg_error("state file %s: %s", s->state_file, err);
      rc = -EINVAL;
      goto out;
    }
  }
  if (s->overrides.n)
    mg_info("restored %zu flag override(s) from %s", s->overrides.n,
            s->state_file);
  {
    const cJSON *ramps = cJSON_GetObjectItemCaseSensitive(root, "ramps");
    if (cJSON_IsObject(ramps))
      s->pending_ramps = cJSON_Duplicate(ramps, 1);
  }
out:
  cJSON_Delete(root);
  free(buf);
  fclose(f);
  return rc;
}

int mg_server__overrides_changed(struct mg_server *s) {
  int rc = rebuild_states(s, s->cfg->flags.n);
  if (rc)
    return rc;
  return save_state(s);
}

uint64_t mg_server__random(struct mg_server *s) {
  /* xorshift64*: fast, and random enough to split request units. */
  uint64_t x = s->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  s->rng = x;
  return x * 0x2545f4914f6cdd1dULL;
}

static void read_token(struct mg_server *s) {
  const char *name = s->cfg->admin.token_env, *v = name ? getenv(name) : NULL;
  if (s->admin_token) {
    memset(s->admin_token, 0, strlen(s->admin_token));
    free(s->admin_token);
  }
  s->admin_token = v && *v ? strdup(v) : NULL;
}

int mg_server_reload(struct mg_server *s, struct mg_cfg_errors *e) {
  struct mg_config *cfg, *old = s->cfg;
  struct mg_buf l;
  int rc;

  if (s->config_path == NULL) {
    mg_cfg_error(e, "$", "modelgate runs on its built-in demo config: there "
                         "is no file to reload");
    rc = -EINVAL;
    goto count;
  }
  cfg = mg_config_load_file(s->config_path, e);
  if (cfg == NULL) {
    size_t i;
    mg_error("reload of %s refused; the old config keeps serving:",
             s->config_path);
    for (i = 0; i < e->n; i++)
      mg_error("  %s", e->msgs[i]);
    rc = -EINVAL;
    goto count;
  }
  if (strcmp(cfg->server.listen_host, old->server.listen_host) != 0 ||
      cfg->server.listen_port != old->server.listen_port ||
      strcmp(cfg->admin.listen_host, old->admin.listen_host) != 0 ||
      cfg->admin.listen_port != old->admin.listen_port ||
      cfg->admin.enabled != old->admin.enabled)
    mg_warn("reload: listen addresses change only on restart");
  /* Requests in flight keep their reference to the old snapshot and finish
   * on it; new ones see the new one from now on. */
  s->cfg = cfg;
  rc = rebuild_states(s, old->flags.n);
  if (rc != 0) {
    s->cfg = old;
    mg_config_unref(cfg);
    mg_cfg_error(e, "$", "out of memory");
    goto count;
  }
  mg_upstream_configure(&s->up, &cfg->upstream);
  mg_cache_configure(s->cache, &cfg->fallbacks.cache);
  ramps_sync_timer(s);
  save_state(s); /* ramps that just started are on record */
  mg_log_set_level((enum mg_log_level)cfg->server.log_level);
  read_token(s);
  s->reloads++;
  s->config_loaded_ms = mg_wall_ms();
  mg_info("reloaded %s: config %s -> %s", s->config_path, old->hash,
          cfg->hash);
  if (dlog_apply(s, &cfg->dlog) != 0)
    mg_warn("reload: the decision log could not follow the new config");
  {
    struct mg_buf *ev = mg_server__event_begin(s, "reload");
    if (ev && mg_buf_printf(ev, ",\"from\":\"%s\",\"to\":\"%s\",\"result\":\"ok\"",
                            old->hash, cfg->hash) == 0)
      mg_server__event_end(s);
  }
  mg_config_unref(old);
count:
  if (rc != 0) {
    struct mg_buf *ev = mg_server__event_begin(s, "reload");
    if (ev && mg_buf_printf(ev, ",\"from\":\"%s\",\"result\":\"refused\",\"errors\":%zu",
                            s->cfg->hash, e->n) == 0)
      mg_server__event_end(s);
  }
  mg_buf_init(&l, 256);
  if (mg_metrics_labels(&l, "result", rc == 0 ? "ok" : "error", NULL) == 0)
    mg_series_add(mg_metrics_series(s->metrics,
                                    "modelgate_config_reloads_total", l.data),
                  1);
  mg_buf_free(&l);
  return rc;
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
  mg_conn_accept(s, listener, false);
}

static void on_admin_connection(uv_stream_t *listener, int status) {
  struct mg_server *s = listener->data;
  if (status < 0) {
    mg_warn("admin accept: %s", uv_strerror(status));
    return;
  }
  mg_conn_accept(s, listener, true);
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
  close_handle(s, (uv_handle_t *)&s->sig_usr1);
  close_handle(s, (uv_handle_t *)&s->ramp_timer);
  /* Both listeners were initialized whether or not they listen. */
  s->listening = s->admin_listening = false;
  close_handle(s, (uv_handle_t *)&s->listener);
  close_handle(s, (uv_handle_t *)&s->admin_listener);
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
    if (s->admin_listening) {
      s->admin_listening = false;
      close_handle(s, (uv_handle_t *)&s->admin_listener);
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

static void on_sigusr1(uv_signal_t *h, int signum) {
  struct mg_server *s = h->data;
  (void)signum;
  if (s->dlog) {
    mg_info("received SIGUSR1: reopening the decision log");
    mg_dlog_reopen(s->dlog, NULL);
  }
}

static void on_sighup(uv_signal_t *h, int signum) {
  struct mg_server *s = h->data;
  struct mg_cfg_errors e;
  (void)signum;
  mg_info("received SIGHUP: reloading");
  mg_cfg_errors_init(&e);
  mg_server_reload(s, &e);
  mg_cfg_errors_free(&e);
}

/* ---- start ---------------------------------------------------------------------- */

static int write_port_file(struct mg_server *s, int port) {
  char tmp[4096], body[64];
  int fd, n;
  ssize_t w;

  snprintf(tmp, sizeof(tmp), "%s.tmp", s->port_file);
  n = snprintf(body, sizeof(body), "listen=%d\nadmin=%d\n", port,
               s->admin_port);
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
  /* Handles first: whatever fails below, mg_server_shutdown can close
   * them and let the loop end cleanly. */
  uv_tcp_init(loop, &s->listener);
  uv_tcp_init(loop, &s->admin_listener);
  uv_timer_init(loop, &s->grace_timer);
  uv_timer_init(loop, &s->tick);
  uv_signal_init(loop, &s->sig_term);
  uv_signal_init(loop, &s->sig_int);
  uv_signal_init(loop, &s->sig_hup);
  uv_signal_init(loop, &s->sig_usr1);
  uv_timer_init(loop, &s->ramp_timer);
  s->ramp_timer.data = s;
  s->listener.data = s->admin_listener.data = s;
  s->tick.data = s->grace_timer.data = s;
  s->sig_term.data = s->sig_int.data = s->sig_hup.data = s;
  s->sig_usr1.data = s;
  mg_buf_init(&s->logline, 1u << 20);
  rc = mg_upstream_init(&s->up, loop, &cfg->upstream);
  if (rc)
    return rc;
  refresh_date(s);
  mg_log_set_level((enum mg_log_level)cfg->server.log_level);

  s->config_path = config_path ? strdup(config_path) : NULL;
  s->port_file = port_file ? strdup(port_file) : NULL;
  mg_overrides_init(&s->overrides);
  s->state_file = strdup(cfg->admin.state_file);
  s->config_loaded_ms = mg_wall_ms();
  mg_map_init(&s->route_stats);
  mg_map_init(&s->target_stats);
  mg_map_init(&s->breakers);
  mg_map_init(&s->ramp_rt);
  s->cache = mg_cache_new(&cfg->fallbacks.cache);
  mg_json_init(&s->scratch, cfg->limits.json_tokens);
  s->metrics = mg_metrics_new();
  if (s->metrics == NULL || register_metrics(s->metrics) != 0 ||
      s->state_file == NULL || s->cache == NULL)
    return -ENOMEM;
  s->overhead = mg_metrics_series(s->metrics, "modelgate_overhead_seconds", "");
  if (uv_random(NULL, NULL, &s->id_seed, sizeof(s->id_seed), 0, NULL) != 0)
    s->id_seed = splitmix64(uv_hrtime() ^ (uint64_t)getpid());
  s->rng = splitmix64(s->id_seed) | 1;
  rc = load_state(s);
  if (rc == 0)
    rc = rebuild_states(s, 0);
  /* Ramps that just started are on record, so that a restart resumes the
   * hold of their first step instead of beginning it again. */
  if (rc == 0 && s->ramp_rt.count)
    save_state(s);
  if (rc == 0)
    rc = dlog_apply(s, &cfg->dlog);
  read_token(s);
  return rc;
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

  if (s->cfg->admin.enabled) {
    const struct mg_admin_cfg *ac = &s->cfg->admin;
    namelen = sizeof(ss);
    if ((rc = uv_ip4_addr(ac->listen_host, ac->listen_port,
                          (struct sockaddr_in *)&ss)) != 0 &&
        (rc = uv_ip6_addr(ac->listen_host, ac->listen_port,
                          (struct sockaddr_in6 *)&ss)) != 0) {
      mg_error("admin: invalid address %s", ac->listen_host);
      return rc;
    }
    rc = uv_tcp_bind(&s->admin_listener, (const struct sockaddr *)&ss, 0);
    if (rc == 0)
      rc = uv_listen((uv_stream_t *)&s->admin_listener, 128,
                     on_admin_connection);
    if (rc) {
      mg_error("admin: listen on %s:%d: %s", ac->listen_host, ac->listen_port,
               uv_strerror(rc));
      return rc;
    }
    s->admin_listening = true;
    uv_tcp_getsockname(&s->admin_listener, (struct sockaddr *)&ss, &namelen);
    s->admin_port = ss.ss_family == AF_INET6
                        ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                        : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    mg_info("admin API on %s:%d (changes %s)", ac->listen_host,
            s->admin_port,
            s->admin_token ? "need the bearer token"
                           : "disabled: no token configured");
  }

  uv_signal_start(&s->sig_term, on_signal, SIGTERM);
  uv_signal_start(&s->sig_int, on_signal, SIGINT);
  uv_signal_start(&s->sig_hup, on_sighup, SIGHUP);
  uv_signal_start(&s->sig_usr1, on_sigusr1, SIGUSR1);
  ramps_sync_timer(s);
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
  if (s->dlog) {
    struct mg_dlog_stats ds;
    /* Everything queued reaches the file before the process ends. */
    mg_dlog_close(s->dlog, &ds);
    s->dlog = NULL;
    if (ds.dropped)
      mg_warn("decision log: %llu lines written, %llu dropped",
              (unsigned long long)ds.lines, (unsigned long long)ds.dropped);
    else
      mg_info("decision log: %llu lines written, none dropped",
              (unsigned long long)ds.lines);
  }
  mg_buf_free(&s->logline);
  mg_cache_free(s->cache);
  s->cache = NULL;
  flag_series_free(s, s->cfg ? s->cfg->flags.n : 0);
  free(s->flag_states);
  free(s->flag_stale);
  mg_overrides_free(&s->overrides);
  free(s->state_file);
  /* Snapshots hold pointers to the breakers: free them after the last
   * snapshot reference is gone (s->cfg below). */
  if (s->admin_token) {
    memset(s->admin_token, 0, strlen(s->admin_token));
    free(s->admin_token);
  }
  stats_free_all(&s->route_stats);
  stats_free_all(&s->target_stats);
  mg_json_free(&s->scratch);
  mg_metrics_free(s->metrics);
  mg_config_unref(s->cfg);
  breakers_free(&s->breakers);
  ramps_free(s);
  free(s->config_path);
  free(s->port_file);
  s->metrics = NULL;
  s->cfg = NULL;
}
