/* telemetry.h - what modelgate tells about itself: the metric families of
 * /metrics, each worker's counters, and the hand-off to the decision log.
 *
 * Counters a worker bumps on every request live in that worker's own
 * registry (struct mg_wtel), under a lock only the worker and a scrape take
 * (Envoy's per-worker stats): the request path never waits for another
 * worker. A scrape merges every worker's registry with the process-wide one
 * (events, reloads) and adds the gauges of the state in force, read from
 * the runtime's snapshot. The decision log has one writer thread
 * (decisions/log.c); every worker queues its lines to it. */
#ifndef MG_TELEMETRY_H
#define MG_TELEMETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/buf.h"
#include "decisions/feedback.h"
#include "decisions/log.h"
#include "decisions/record.h"
#include "runtime/event.h"
#include "runtime/runtime.h"
#include "telemetry/metrics.h"

struct mg_telemetry;
struct mg_wtel;

/* Per-request counters of one route (alias) or target, looked up once per
 * name and then kept: formatting label sets on every request is
 * measurable (bench/). */
struct mg_telemetry *mg_tel_new(unsigned nworkers);
void mg_tel_free(struct mg_telemetry *tm);
/* Worker i's counters. */
struct mg_wtel *mg_tel_worker(struct mg_telemetry *tm, unsigned i);

/* ---- the decision log (control thread) ------------------------------------ */

/* Open, switch or stop the decision log to match c. 0, or -EIO when it
 * could not be opened (the message is logged). */
int mg_tel_dlog_apply(struct mg_telemetry *tm, const struct mg_dlog_cfg *c);
/* Reopen the file (SIGUSR1). */
void mg_tel_dlog_reopen(struct mg_telemetry *tm);
/* Flush and close, logging how many lines were written and dropped. After
 * every worker has stopped. */
void mg_tel_dlog_close(struct mg_telemetry *tm);
/* The same, waiting at most ms for the file (< 0: for ever); lines it did
 * not take by then are counted as dropped. */
void mg_tel_dlog_close_within(struct mg_telemetry *tm, int64_t ms);

/* ---- workers ---------------------------------------------------------------- */

/* The decision record of one answer, if the log is on. */
void mg_tel_decision(struct mg_wtel *w, const struct mg_record *r);
/* A feedback item's line in the decision log, through the same writer
 * (never blocking). 0 (also when the log is off), or -ENOSPC when the log
 * dropped it (counted in modelgate_decision_log_dropped_total). */
int mg_tel_feedback_line(struct mg_wtel *w, const struct mg_feedback_item *it,
                         int64_t ts_ms, const char *client,
                         const char *instance);
/* n feedback items of metric ("-" when unknown) with this outcome. */
void mg_tel_feedback(struct mg_wtel *w, const char *metric,
                     const char *outcome, uint64_t n);
/* An answered request. route: alias name or "-"; target: the target that
 * served it, or NULL. */
void mg_tel_observe(struct mg_wtel *w, const char *route, const char *target,
                    int status, uint64_t total_ns, uint64_t up_ns);
void mg_tel_fallback(struct mg_wtel *w, const char *target, const char *tier,
                     const char *reason);
void mg_tel_retry(struct mg_wtel *w, const char *target);
/* A call to target failed for a local shortage (out of file descriptors
 * or memory): modelgate_local_errors_total{target}. */
void mg_tel_local_error(struct mg_wtel *w, const char *target);
/* A connection was refused before it was served: listener "main" or
 * "admin", reason "max_connections" or "no_fds" (accept failed for lack of
 * file descriptors) or "accept_error". */
void mg_tel_conn_refused(struct mg_wtel *w, const char *listener,
                         const char *reason);
void mg_tel_stream_error(struct mg_wtel *w, const char *route);
/* The series counting a flag's decisions with this variant and reason
 * (cache the pointer: it lives as long as the telemetry), then count one
 * on it. */
struct mg_series *mg_tel_flag_series(struct mg_wtel *w, const char *flag,
                                     const char *variant, const char *reason);
void mg_tel_count(struct mg_wtel *w, struct mg_series *s);

/* The series of one flag variant (requests by status class, fallbacks,
 * duration, cost by target), looked up once per snapshot and worker: the
 * label sets are the config's flags and variants, so their number is
 * bounded by the config. flag and variant are borrowed from the snapshot
 * and must outlive v. */
struct mg_tel_variant;
struct mg_tel_variant *mg_tel_variant_new(struct mg_wtel *w, const char *flag,
                                          const char *variant,
                                          size_t ntargets);
void mg_tel_variant_free(struct mg_tel_variant *v);
/* An answered request of the variant. failed: a stream that failed after
 * its head (a 200 on the wire). target (index): the target that served,
 * or NULL. */
void mg_tel_variant_observe(struct mg_wtel *w, struct mg_tel_variant *v,
                            int status, bool failed, bool fallback,
                            double seconds, const char *target,
                            size_t target_index, double cost, bool has_cost);
/* What the workers hold right now, summed (read at scrape time, so that a
 * stream in progress shows). */
struct mg_tel_live {
  size_t conns, inflight, transfers;
  uint64_t paused;
  /* The native engine's pools (upstream/native.h), summed over workers. */
  size_t up_conns, up_idle, up_waiting;
  uint64_t up_connects, up_reuses, up_replaced;
};

/* ---- the process ------------------------------------------------------------ */

/* An event: its decision-log line, and its counters (any thread). */
void mg_tel_event(struct mg_telemetry *tm, const struct mg_event *ev);
/* The last events (at most 50), newest first, as their log lines. */
cJSON *mg_tel_recent_events(struct mg_telemetry *tm);
/* A reload was attempted. */
void mg_tel_reload(struct mg_telemetry *tm, bool ok);

/* More metric families, rendered after ours by fn(arg, out) (set once,
 * before the workers run). */
void mg_tel_set_extra(struct mg_telemetry *tm,
                      int (*fn)(void *arg, struct mg_buf *out), void *arg);

/* /metrics: every worker's counters merged, with the gauges of the state in
 * force (s: a snapshot reference the caller holds; rt for the cache). */
int mg_tel_render(struct mg_telemetry *tm, struct mg_runtime *rt,
                  const struct mg_snap *s, int64_t mono,
                  const struct mg_tel_live *live,
                  struct mg_buf *out) MG_WARN_UNUSED;

#endif
