/* breaker.h - a circuit breaker per target (DESIGN.md, "Circuit breaker").
 *
 *   closed --(N consecutive failures, or error rate over the window with
 *             at least min_requests)--> open
 *   open --(cooldown_ms)--> half-open: up to `probes` requests go through
 *   half-open --(a probe succeeds)--> closed
 *   half-open --(a probe fails)--> open again
 *
 * Pure: time comes in as `now` (milliseconds, any monotonic origin), so
 * tests drive it with a fake clock.
 *
 * Thread-safe: one breaker per target serves every worker (a breaker
 * opened by failures on one worker protects requests on all). The state
 * changes under the breaker's own mutex; the common case - a closed
 * breaker letting a request through, a success with nothing to count -
 * reads atomics and takes no lock (bench/RESULTS.md measures it). */
#ifndef MG_BREAKER_H
#define MG_BREAKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum mg_breaker_state {
  MG_BREAKER_CLOSED,
  MG_BREAKER_OPEN,
  MG_BREAKER_HALF_OPEN,
};

struct mg_breaker_cfg {
  bool enabled;
  uint32_t failures;     /* consecutive failures that open it; 0: no rule */
  double error_rate;     /* failure share over the window that opens it;
                          * 0: no rule */
  uint32_t window_ms;    /* the sliding window of the rate rule */
  uint32_t min_requests; /* requests the window needs before the rate counts */
  uint32_t cooldown_ms;  /* open -> half-open */
  uint32_t probes;       /* requests let through at once while half-open */
};

#define MG_BREAKER_SLOTS 10

struct mg_breaker {
  pthread_mutex_t mu;     /* guards everything below; state and
                           * consecutive are also read without it */
  _Atomic enum mg_breaker_state state;
  _Atomic uint32_t consecutive; /* failures in a row */
  int64_t opened_at;      /* when it last opened */
  uint32_t probes_out;    /* probes let through, not yet recorded */
  uint64_t transitions;   /* state changes so far (metrics) */
  /* The window in MG_BREAKER_SLOTS slots of window_ms / SLOTS each. */
  struct {
    int64_t start;        /* slot start time; stale slots are reset */
    uint32_t ok, fail;
  } slots[MG_BREAKER_SLOTS];
};

void mg_breaker_init(struct mg_breaker *b);
void mg_breaker_destroy(struct mg_breaker *b);

/* May a request go to the target now? Moves open to half-open once the
 * cooldown has passed. When it lets a half-open request through, *probe is
 * set (pass it back to mg_breaker_record). A disabled breaker always lets
 * requests through. */
bool mg_breaker_allow(struct mg_breaker *b, const struct mg_breaker_cfg *c,
                      int64_t now, bool *probe);
/* The same, also telling whether this call changed the state (open to
 * half-open): *changed is the new state, or -1. With several threads the
 * state read before and after a call may reflect another thread's change;
 * this one is exact. */
bool mg_breaker_allow_ex(struct mg_breaker *b, const struct mg_breaker_cfg *c,
                         int64_t now, bool *probe, int *changed);

/* Record the outcome of a request mg_breaker_allow let through. Returns the
 * new state when this changed it, else -1. */
int mg_breaker_record(struct mg_breaker *b, const struct mg_breaker_cfg *c,
                      int64_t now, bool ok, bool probe);

/* A request mg_breaker_allow let through ended without an outcome (the
 * client went away and the call was cancelled): frees its probe slot
 * without deciding anything. Without it, a cancelled probe would hold its
 * slot and leave the breaker half-open, refusing everything, for good. */
void mg_breaker_release(struct mg_breaker *b, const struct mg_breaker_cfg *c,
                        bool probe);

/* Open a closed breaker because another instance saw its target fail (a
 * breaker hint, DESIGN.md "Scale -> Instances"): the cooldown runs from
 * now, and half-open probes are this instance's own. A breaker that is
 * open or half-open already, or disabled, is left alone. True when this
 * call opened it. */
bool mg_breaker_trip(struct mg_breaker *b, const struct mg_breaker_cfg *c,
                     int64_t now);

const char *mg_breaker_state_name(enum mg_breaker_state s);

/* The state now (a relaxed read, for gauges). */
static inline enum mg_breaker_state
mg_breaker_state(const struct mg_breaker *b) {
  return atomic_load_explicit(&((struct mg_breaker *)b)->state,
                              memory_order_relaxed);
}

#endif
