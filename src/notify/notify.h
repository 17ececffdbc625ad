/* notify.h - delivery of notifications (DESIGN.md, "Notifications, briefs
 * and the live view"; issue 16.1): off the request path, on the control
 * loop (worker 0's, the main thread), by libcurl (upstream/curl.h).
 *
 * mg_notify_event (any thread: breakers change on workers) formats one
 * payload per sink that wants the event and queues it (bounded: beyond
 * notify.queue_size a delivery is dropped and counted) and wakes the loop.
 * On the loop each sink has at most one delivery in flight; a failure (a
 * transport error, a 5xx, a 408 or a 429) is retried after a jittered,
 * doubling backoff, at most `retries` times; `breaker_failures` failed
 * attempts in a row open the sink's breaker for `breaker_cooldown_ms`
 * (deliveries wait, then one attempt probes). Nothing here ever runs on a
 * request's path: a sink that hangs costs one curl handle on the control
 * loop until its timeout. */
#ifndef MG_NOTIFY_H
#define MG_NOTIFY_H

#include <uv.h>

#include "common/buf.h"
#include "notify/sink.h"
#include "runtime/event.h"

struct mg_notifier;

/* A notifier for cfg's sinks on loop (cfg is copied by reference: the
 * caller keeps its config alive until mg_notify_free). NULL when out of
 * memory. */
struct mg_notifier *mg_notify_new(uv_loop_t *loop,
                                  const struct mg_notify_cfg *cfg);
/* Queue ev for every sink that wants it (any thread). brief: the flag's
 * brief summary, or NULL. */
void mg_notify_event(struct mg_notifier *n, const struct mg_event *ev,
                     const char *brief);
/* modelgate_notify_* in the Prometheus text format (any thread). */
int mg_notify_metrics(void *n, struct mg_buf *out);
/* Cancel what is in flight and close the handles (loop thread); the loop
 * then ends them. */
void mg_notify_close(struct mg_notifier *n);
/* After the loop ran the close callbacks. */
void mg_notify_free(struct mg_notifier *n);

#endif
