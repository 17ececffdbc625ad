/* runtime.h - the state in force, process-wide (DESIGN.md, "Scale -> Cores";
 * h2o's globalconf): the config snapshot, runtime overrides (kill, weights),
 * ramps and their guard windows, circuit breakers, the answer cache and the
 * state file behind them.
 *
 * Workers read the state through a published snapshot (struct mg_snap):
 * immutable once published, reference-counted, replaced as a whole by every
 * change. A worker keeps the snapshot it last took and compares one atomic
 * generation number per request; only when it changed does it take the new
 * one (a mutex, rarely). Everything a request changes - breakers, guard
 * windows, the cache - is its own object with its own lock (or atomics), so
 * workers never serialize on the runtime.
 *
 * Changes come through verbs (apply a config, kill, set weights, a ramp
 * action, a tick), each of which builds and publishes a new snapshot, saves
 * the state file when it must, and tells the hooks what happened. Verbs are
 * called from the control thread (the admin API, signals, timers); observe
 * and the cache are called from workers.
 *
 * No libuv here: time comes in as arguments (wall clock for ramps, which
 * survive restarts; monotonic milliseconds for windows), so the runtime is
 * tested without a loop. */
#ifndef MG_RUNTIME_H
#define MG_RUNTIME_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/buf.h"
#include "config/config.h"
#include "fallbacks/breaker.h"
#include "fallbacks/cache.h"
#include "ramps/ramp.h"
#include "routing/flag.h"
#include "runtime/event.h"
#include "runtime/live.h"

struct mg_runtime;
struct mg_rt_ramp;
struct mg_rt_live;

/* The state in force, as one immutable object. */
struct mg_snap {
  _Atomic int refs;
  uint64_t gen;                       /* increases with every publication */
  struct mg_config *cfg;              /* owned reference */
  struct mg_flag_state *flag_states;  /* owned: by flag index */
  bool *flag_stale;                   /* owned: a weights override names
                                       * variants the flag no longer has */
  struct mg_breaker **breakers;       /* owned array of borrowed breakers
                                       * (they live as long as the runtime),
                                       * by target index */
  struct mg_rt_ramp **ramps;          /* owned array of borrowed ramp
                                       * runtimes by flag index, NULL where
                                       * the flag has no ramp */
  struct mg_ramp_state *ramp_states;  /* owned: a copy of each ramp's state
                                       * as published, by flag index */
  uint32_t *ramp_epochs;              /* owned: each ramp's window epoch */
  double *min_conf;                   /* owned: by target index, the
                                       * confidence threshold in force (the
                                       * config's, or the admin's) */
  struct mg_rt_live ***live;          /* owned arrays of borrowed live
                                       * windows, by flag and variant */
  char *admin_token;                  /* owned: the bearer token, or NULL;
                                       * a secret, wiped when freed */
  int64_t loaded_ms;                  /* wall clock of the config's load */
  uint64_t reloads;
};

/* What the runtime tells its owner. Called with no runtime lock held. */
struct mg_rt_hooks {
  void *arg;
  /* Something changed (any thread: breakers change on workers). */
  void (*event)(void *arg, const struct mg_event *ev);
  /* A new snapshot is in force (control thread). */
  void (*published)(void *arg, struct mg_snap *snap);
  /* An admin verb changed the override of flag (control thread; not
   * called for mg_rt_replace_overrides): the fleet's store writes it. */
  void (*override_changed)(void *arg, const char *flag);
  /* May this instance judge flag's ramp now (the fleet's store: it holds
   * the ramp's lease)? NULL: always. Control thread. */
  bool (*ramp_leads)(void *arg, const char *flag);
  /* Merge the other instances' guard windows of flag's ramp into v[0]
   * (treatment) and v[1] (control) before a check. Control thread. */
  void (*ramp_fleet_views)(void *arg, const char *flag,
                           struct mg_window_view *v);
  /* A ramp's state changed here (a check or an admin action; not called
   * for mg_rt_ramp_adopt). Control thread. */
  void (*ramp_changed)(void *arg, const char *flag);
};

/* Create the runtime on cfg (takes a reference): reads the state file named
 * by cfg (admin.state_file); nworkers guard-window slots per ramp. NULL with
 * a message in err when the state file cannot be used (a kill switch must
 * not silently vanish: refusing to start is the safe answer). */
struct mg_runtime *mg_rt_new(struct mg_config *cfg, unsigned nworkers,
                             const struct mg_rt_hooks *hooks, char *err,
                             size_t errlen);
/* Free everything; every snapshot reference must have been given back. */
void mg_rt_free(struct mg_runtime *rt);

/* ---- snapshots (any thread) ---------------------------------------------- */

/* The generation in force: a relaxed atomic read, once per request. */
uint64_t mg_rt_gen(const struct mg_runtime *rt);
/* A new reference to the snapshot in force. */
struct mg_snap *mg_rt_snap(struct mg_runtime *rt);
void mg_snap_unref(struct mg_snap *s);

/* ---- verbs (control thread) ---------------------------------------------- */

/* Put a new config in force (reload): it takes a reference. Overrides,
 * ramps, breakers and the cache carry over by name. 0 or -ENOMEM. */
int mg_rt_apply(struct mg_runtime *rt, struct mg_config *cfg) MG_WARN_UNUSED;

/* Emit a reload event (ok or refused) through the hooks. */
void mg_rt_reload_event(struct mg_runtime *rt, const char *from,
                        const char *to, size_t errors);

/* Runtime overrides. Each returns 0, -ENOENT (no such flag), -ENOMEM, or
 * -EIO when the change is in force but the state file could not be
 * written (msg says why). */
int mg_rt_kill(struct mg_runtime *rt, const char *flag, bool killed,
               const struct mg_actor *by, char *msg, size_t n) MG_WARN_UNUSED;
int mg_rt_set_weights(struct mg_runtime *rt, const char *flag,
                      const char *const *variants, const uint32_t *bp,
                      uint32_t nv, const struct mg_actor *by, char *msg,
                      size_t n) MG_WARN_UNUSED;
int mg_rt_clear_weights(struct mg_runtime *rt, const char *flag,
                        const struct mg_actor *by, char *msg,
                        size_t n) MG_WARN_UNUSED;

/* Set (or clear) a target's confidence threshold at run time (issue
 * 15.6): persisted, published, logged as a min_confidence event with who
 * asked. 0, -ENOENT (no such target), -EINVAL (the target has no gate, or
 * value out of range; msg says why), -ENOMEM, -EIO (in force, not
 * saved). */
int mg_rt_set_min_confidence(struct mg_runtime *rt, const char *target,
                             bool clear, double value,
                             const struct mg_actor *by, char *msg,
                             size_t n) MG_WARN_UNUSED;

/* Admin ramp actions: "pause", "resume", "promote", "rollback", "restart".
 * 0, -ENOENT (the flag has no ramp), -EINVAL (not possible now; msg says
 * why), or -EIO (in force, not saved). */
int mg_rt_ramp_action(struct mg_runtime *rt, const char *flag,
                      const char *action, const struct mg_actor *by,
                      char *msg, size_t n) MG_WARN_UNUSED;

/* Check every ramp's guards (wall: wall-clock ms; mono: monotonic ms).
 * Returns the period in ms at which it wants to be called (the shortest
 * ramp interval), or 0 when no flag has a ramp. */
uint32_t mg_rt_tick(struct mg_runtime *rt, int64_t wall, int64_t mono);
/* The period mg_rt_tick wants with the snapshot in force (0: none). */
uint32_t mg_rt_tick_period(struct mg_runtime *rt);

/* ---- what workers report (any thread) ------------------------------------ */

/* A rollout request's outcome, for its flag's guard windows (r: the
 * snapshot's ramps[flag index]). widx: the worker's index (each worker has
 * its own window slot; a check merges them). arm: 0 for the ramped
 * variant, 1 for the control; anything else (or r NULL) does nothing.
 * reset_epoch: the snapshot's ramp_epochs[flag index] (an outcome from
 * before the windows were emptied is dropped); step_epoch: the snapshot's
 * ramp_states[flag index].epoch (the evidence of one step). */
void mg_rt_ramp_observe(struct mg_rt_ramp *r, uint32_t reset_epoch,
                        uint64_t step_epoch, unsigned widx, int arm,
                        int64_t mono, const struct mg_window_outcome *o);

/* A feedback value about a rollout decision of the ramp's flag (the same
 * arguments as mg_rt_ramp_observe): it joins the arm's window and the
 * step's evidence at its arrival. */
void mg_rt_ramp_feedback(struct mg_rt_ramp *r, uint32_t reset_epoch,
                         uint64_t step_epoch, unsigned widx, int arm,
                         int64_t mono, const struct mg_window_fb *f);

/* May client (NULL: a caller without a key) send items more feedback
 * items now? A token bucket per client (feedback.rate_per_client): true
 * and the items taken, or false and *retry_ms until they would pass. A
 * batch larger than burst needs a full bucket. Any thread. */
bool mg_rt_feedback_admit(struct mg_runtime *rt, const char *client,
                          uint32_t items, double per_second, double burst,
                          int64_t mono, uint32_t *retry_ms);

/* The live view of a flag variant (l: the snapshot's live[f][v]): a
 * finished request, a feedback value, and the sums of every worker's
 * slots over the last span_ms (any thread). */
void mg_rt_live_observe(struct mg_rt_live *l, unsigned widx, int64_t mono,
                        bool error, bool fallback, bool low_conf, double ms,
                        double cost);
void mg_rt_live_feedback(struct mg_rt_live *l, unsigned widx, int64_t mono,
                         uint32_t metric, double value);
/* Fallback storms (DESIGN.md, "Notifications"): over the last minute, a
 * flag variant with at least MG_STORM_MIN_REQUESTS requests of which at
 * least MG_STORM_RATE were answered by a fallback tier is in a storm: the
 * event fallback_storm (warning), once; fallback_storm_over (info) when
 * its rate falls below half of it (or its traffic below the minimum).
 * Control thread, every few seconds. */
#define MG_STORM_RATE 0.20
#define MG_STORM_MIN_REQUESTS 20
#define MG_STORM_WINDOW_MS 60000
void mg_rt_watch(struct mg_runtime *rt, int64_t mono);
void mg_rt_live_read(struct mg_rt_live *l, int64_t mono, uint32_t span_ms,
                     struct mg_live_sum *acc);

/* A breaker changed state (enum mg_breaker_state): log and count it. */
void mg_rt_breaker_changed(struct mg_runtime *rt, const char *target,
                           int state);

/* The answer cache, shared by every worker. get copies a fresh entry into
 * out (true on a hit). */
bool mg_rt_cache_get(struct mg_runtime *rt, const struct mg_cache_key *k,
                     int64_t mono, struct mg_buf *out);
int mg_rt_cache_put(struct mg_runtime *rt, const struct mg_cache_key *k,
                    int64_t mono, const char *body, size_t len);
void mg_rt_cache_stats(struct mg_runtime *rt, struct mg_cache_stats *out);

/* ---- reading the state (control thread) ---------------------------------- */

/* The overrides as JSON ({"<flag>": {...}}), for /admin/state. */
cJSON *mg_rt_overrides_json(struct mg_runtime *rt);
/* Does flag have a kill / weights override in force? */
void mg_rt_override_of(struct mg_runtime *rt, const char *flag, bool *kill,
                       bool *weights);
/* Every target's confidence threshold for /admin/state: {"<target>":
 * {"min_confidence", "file_min_confidence", "min_confidence_override":
 * {"value", "applied", "by", "reason", "updated"} | null}} (s: the
 * snapshot in force). */
cJSON *mg_rt_targets_json(struct mg_runtime *rt, const struct mg_snap *s);
/* The ramp of a flag as JSON for the admin state, or NULL. */
cJSON *mg_rt_ramp_json(struct mg_runtime *rt, const struct mg_flag *f,
                       int64_t mono);

/* A ramp's figures for the metrics (any thread: from the snapshot and the
 * windows' own locks). */
struct mg_rt_ramp_view {
  const char *treatment, *control; /* variant names, from s->cfg */
  uint32_t step;
  bool rolled_back;
  struct mg_window_sum sum[2];     /* treatment, control */
};
/* Fill v for flag i of snapshot s at mono; false when it has no ramp. */
bool mg_rt_ramp_view(const struct mg_snap *s, size_t i, int64_t mono,
                     struct mg_rt_ramp_view *v);

/* ---- the fleet's store (control thread; store/redis.c) ------------------ */

struct mg_overrides;
/* The overrides in force (borrowed until the next verb). */
const struct mg_overrides *mg_rt_overrides(struct mg_runtime *rt);
/* Put the fleet's overrides in force: takes fresh's contents (fresh is left
 * empty), saves the state file, publishes, and emits an event for each flag
 * whose kill or weights changed (actor: the store). 0 or -ENOMEM. */
int mg_rt_replace_overrides(struct mg_runtime *rt, struct mg_overrides *fresh,
                            const char *store) MG_WARN_UNUSED;
/* flag's ramp state as the state file keeps it (caller deletes), or NULL
 * when the flag has no ramp. */
cJSON *mg_rt_ramp_state_json(struct mg_runtime *rt, const char *flag);
/* This instance's guard windows of flag's ramp at mono, every worker's
 * merged: v[0] the treatment, v[1] the control. False when no ramp. */
bool mg_rt_ramp_local_views(struct mg_runtime *rt, const char *flag,
                            int64_t mono, struct mg_window_view v[2]);
/* Put in force a ramp state decided on another instance (origin: the
 * ramp's leader, or an admin action there): publishes, saves, and emits
 * the event of what changed. 0, -ENOENT (no such ramp here), -EINVAL (not
 * a ramp state), -ENOMEM. */
int mg_rt_ramp_adopt(struct mg_runtime *rt, const char *flag,
                     const cJSON *state, const char *origin) MG_WARN_UNUSED;
/* The ramped flags of the config in force, for the store: the name of the
 * i-th (NULL past the last). */
const char *mg_rt_ramp_flag(struct mg_runtime *rt, size_t i);

/* Another instance (origin) opened its breaker of target: open ours too
 * (mg_breaker_trip) and emit a breaker event naming origin. mono: the
 * workers' clock (uv_now). */
void mg_rt_breaker_hint(struct mg_runtime *rt, const char *target,
                        const char *origin, int64_t mono);

#endif
