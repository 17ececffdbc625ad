/* server.h - one event loop's worth of modelgate: listeners, connections,
 * the upstream client, metrics, signals, reload and graceful shutdown. */
#ifndef MG_SERVER_H
#define MG_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/json.h"
#include "common/map.h"
#include "config/config.h"
#include "proxy/metrics.h"
#include "proxy/upstream.h"
#include "decisions/log.h"
#include "decisions/record.h"
#include "fallbacks/breaker.h"
#include "fallbacks/cache.h"
#include "routing/override.h"

struct mg_conn;

/* Shared read buffer: reads are parsed synchronously, so one suffices. */
#define MG_READ_BUF_SIZE (64u << 10)

struct mg_server {
  uv_loop_t *loop;             /* borrowed: the caller runs and closes it */
  struct mg_config *cfg;       /* owned reference: the current snapshot */
  char *config_path;           /* owned, or NULL (config given as string) */
  char *port_file;             /* owned, or NULL */
  uv_tcp_t listener;
  uv_tcp_t admin_listener;
  bool admin_listening;
  int admin_port;              /* bound admin port, or 0 */
  char *admin_token;           /* owned: bearer token, or NULL (no
                                * mutations); a secret, never logged */
  char *state_file;            /* owned: where overrides are persisted */
  struct mg_overrides overrides; /* runtime overrides, by flag name */
  struct mg_flag_state *flag_states; /* owned: per flag of cfg, in force */
  struct flag_series *flag_series;   /* owned: per flag, metric series */
  bool *flag_stale;            /* owned: per flag, override not applicable */
  uint64_t rng;                /* xorshift state: request units */
  struct mg_map breakers;      /* target name -> owned struct mg_breaker;
                                * they outlive snapshots and reloads */
  struct mg_cache *cache;      /* owned: the answer cache */
  struct mg_dlog *dlog;        /* owned: the decision log, or NULL */
  struct mg_map ramp_rt;       /* flag name -> owned struct ramp_rt: ramp
                                * state and guard windows, across reloads */
  cJSON *pending_ramps;        /* owned: ramp states read from the state
                                * file, used when their flag's ramp starts */
  uv_timer_t ramp_timer;       /* guard checks */
  uint32_t ramp_period;        /* its period in ms, 0 when stopped */
  struct mg_buf logline;       /* owned: a line being formatted */
  uint64_t reloads;
  int64_t config_loaded_ms;
  uv_signal_t sig_term, sig_int, sig_hup, sig_usr1;
  uv_timer_t grace_timer;      /* SIGTERM: the end of the grace period */
  uv_timer_t tick;             /* once a second: cached Date header */
  struct mg_upstream up;
  struct mg_metrics *metrics;  /* owned */
  struct mg_map route_stats;   /* route name -> owned struct mg_stats */
  struct mg_map target_stats;  /* target name -> owned struct mg_stats */
  struct mg_series *overhead;  /* borrowed from metrics */
  struct mg_json_doc scratch;  /* owned: tokens of the body being looked
                                * at; valid only within one callback */
  struct mg_conn *conns;       /* owned list of live connections */
  size_t nconns;
  size_t inflight;             /* exchanges not finished, orphans included */
  int open_handles;            /* server-owned handles not yet closed */
  bool listening;
  bool draining;               /* SIGTERM received */
  bool closed;                 /* handles are closing or closed */
  int exit_code;
  char date[40];               /* IMF-fixdate, refreshed by tick */
  uint64_t id_seed;            /* random per process: decision ids */
  uint64_t id_counter;
  char read_buf[MG_READ_BUF_SIZE];
  bool read_buf_busy;
};

/* Set up (nothing listens yet). Takes a reference to cfg. 0 or -errno. */
int mg_server_init(struct mg_server *s, uv_loop_t *loop, struct mg_config *cfg,
                   const char *config_path, const char *port_file)
    MG_WARN_UNUSED;
/* Bind, listen, install signal handlers, write the port file. */
int mg_server_start(struct mg_server *s) MG_WARN_UNUSED;
/* Begin a graceful stop: stop accepting, finish requests in flight within
 * the grace period, then close everything so the loop ends. */
void mg_server_shutdown(struct mg_server *s);
/* Free what the loop no longer references (after uv_run returned). */
void mg_server_free(struct mg_server *s);

/* Called by connections and exchanges. */
void mg_server__conn_closed(struct mg_server *s, struct mg_conn *c);
void mg_server__exchange_done(struct mg_server *s);
/* Validate the config file again and swap it in; errors go to e and the
 * old config keeps serving. 0 or a negative code. */
int mg_server_reload(struct mg_server *s, struct mg_cfg_errors *e);

/* Runtime overrides changed: recompute the flag states in force and save
 * them. 0, or -errno when the state file could not be written. */
int mg_server__overrides_changed(struct mg_server *s);

/* Count a flag decision in the metrics. */
void mg_server__observe_flag(struct mg_server *s, const struct mg_flag *f,
                             const struct mg_flag_decision *d);

/* The breakers of cfg's targets, by target index (built once per
 * snapshot; the breakers themselves live in s->breakers). NULL when out of
 * memory. */
struct mg_breaker *const *mg_server__breakers(struct mg_server *s,
                                              struct mg_config *cfg);
/* A breaker changed state (to enum mg_breaker_state): log and count it. */
void mg_server__breaker_changed(struct mg_server *s,
                                const struct mg_target *t, int state);
/* Count a request answered by a fallback tier, and a retry. */
void mg_server__observe_fallback(struct mg_server *s, const char *target,
                                 const char *tier, const char *reason);
void mg_server__observe_retry(struct mg_server *s, const char *target);
void mg_server__observe_stream_error(struct mg_server *s, const char *route);
/* The answer cache (now: the loop's time). */
bool mg_server__cache_get(struct mg_server *s, const struct mg_cache_key *k,
                          const char **body, size_t *len);
int mg_server__cache_put(struct mg_server *s, const struct mg_cache_key *k,
                         const char *body, size_t len);

/* The decision log: one record per answered request; event lines for
 * automatic and admin actions. event_begin returns the line buffer with
 * {"ts":...,"event":"<name>" written; add ,"key":value pairs, then
 * event_end. Both do nothing without a decision log. */
void mg_server__decision(struct mg_server *s, const struct mg_record *r);
struct mg_buf *mg_server__event_begin(struct mg_server *s, const char *event);
void mg_server__event_end(struct mg_server *s);

/* Feed a rollout request's outcome to its flag's guard windows. */
void mg_server__ramp_observe(struct mg_server *s, const struct mg_flag *f,
                             uint32_t variant, bool error, bool fallback,
                             bool low_conf, double ms);
/* Admin ramp actions: "pause", "resume", "promote", "rollback", "restart".
 * 0, -ENOENT (the flag has no ramp), -EINVAL (not possible now; msg says
 * why), or -errno when the state could not be saved. */
int mg_server__ramp_action(struct mg_server *s, const struct mg_flag *f,
                           const char *action, char *msg, size_t n);
/* The ramp of a flag as JSON for the admin state, or NULL. */
cJSON *mg_server__ramp_json(struct mg_server *s, const struct mg_flag *f);

/* A random number for request units. */
uint64_t mg_server__random(struct mg_server *s);

/* Count an answered request in the metrics. route: alias name or "-";
 * target: the target that served it, or NULL. */
void mg_server__observe(struct mg_server *s, const char *route,
                        const char *target, int status, uint64_t total_ns,
                        uint64_t up_ns);
/* Render /metrics (refreshing gauges first). */
int mg_server__render_metrics(struct mg_server *s, struct mg_buf *out);
/* A fresh decision id: 32 lowercase hex digits. */
void mg_server__new_id(struct mg_server *s, char out[33]);

#endif
