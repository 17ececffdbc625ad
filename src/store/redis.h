/* redis.h - the fleet's store: what instances share through Redis
 * (DESIGN.md, "Scale -> Instances"; issue 13).
 *
 * One store per process, on the control loop (the main loop): two hiredis
 * async connections through hiredis' libuv adapter, one for commands and
 * one subscribed to the events channel. Nothing on a request path talks to
 * it: what it learns goes through the runtime's verbs, which publish a new
 * snapshot to the workers as an admin change does.
 *
 *   overrides   HSET <prefix>overrides <flag> {"killed":..,"weights":..,
 *               "updated_ms":..,"instance":..} and PUBLISH <prefix>events,
 *               in one script; every instance re-reads the hash on a
 *               message and every resync_ms (a missed message is
 *               corrected), and once, synchronously, at start
 *   breakers    a breaker opening here is PUBLISHed; other instances open
 *               theirs (mg_rt_breaker_hint) and probe it themselves
 *   down        reconnects with backoff; changes made here while it was
 *               unreachable (force_local) are written when it returns if
 *               they are newer than what Redis holds; the fleet's hash is
 *               then read again. Overrides Redis lost (a restart without
 *               persistence) are written back by every instance that has
 *               them.
 *
 * Thread rules: everything runs on the control loop except
 * mg_store_reachable, mg_store_breaker_opened, mg_store_ready_json and
 * mg_store_metrics, which any worker may call. */
#ifndef MG_STORE_REDIS_H
#define MG_STORE_REDIS_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "common/buf.h"
#include "config/redis.h"
#include "runtime/runtime.h"

struct mg_store;

/* Start the store on loop (the control loop) for runtime rt: read the
 * password, load the fleet's overrides synchronously (at most about
 * 2 * timeout_ms; Redis unreachable is a warning, not an error: the state
 * file's overrides serve until it returns), then connect asynchronously.
 * NULL with a message in err when it cannot start (no password where one
 * was named, out of memory). */
struct mg_store *mg_store_new(const struct mg_redis_cfg *c, uv_loop_t *loop,
                              struct mg_runtime *rt, const char *instance,
                              char *err, size_t errlen);
/* Disconnect and close the store's handles (control loop); the loop then
 * runs their close callbacks. Idempotent. */
void mg_store_close(struct mg_store *s);
/* Free it, once the loop has run after mg_store_close. NULL is fine. */
void mg_store_free(struct mg_store *s);

/* Can a change reach the fleet now? (any thread) */
bool mg_store_reachable(const struct mg_store *s);
/* An admin verb changed flag's override here: write it to Redis (control
 * loop). When Redis is unreachable it is kept and written on return. */
void mg_store_override_changed(struct mg_store *s, const char *flag);
/* A breaker of this instance opened (any thread): tell the others. */
void mg_store_breaker_opened(struct mg_store *s, const char *target);

/* Ramps (control loop): does this instance lead flag's ramp now (it holds
 * the lease and Redis answers)? True without a store. */
bool mg_store_ramp_leads(struct mg_store *s, const char *flag);
/* Merge the other instances' last published guard windows of flag's ramp
 * into v[0] (treatment) and v[1] (control). */
void mg_store_ramp_fleet_views(struct mg_store *s, const char *flag,
                               struct mg_window_view *v);
/* A ramp's state changed here: write it (the leader's decision, fenced by
 * its token; an admin action, compared and set). */
void mg_store_ramp_changed(struct mg_store *s, const char *flag);

/* {"kind":"redis","url":..,"instance":..,"reachable":..,"detail":..,
 *  "pending_changes":..,"last_sync":..} (any thread) */
int mg_store_ready_json(struct mg_store *s, struct mg_buf *out) MG_WARN_UNUSED;
/* The store's metric families in the Prometheus text format (any thread). */
int mg_store_metrics(struct mg_store *s, struct mg_buf *out) MG_WARN_UNUSED;

#endif
