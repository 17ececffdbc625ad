/* breaker.h - a circuit breaker per target (DESIGN.md, "Circuit breaker").
 *
 *   closed --(N consecutive failures, or error rate over the window with
 *             at least min_requests)--> open
 *   open --(cooldown_ms)--> half-open: up to `probes` requests go through
 *   half-open --(a probe succeeds)--> closed
 *   half-open --(a probe fails)--> open again
 *
 * Pure: time comes in as `now` (milliseconds, any monotonic origin), so
 * tests drive it with a fake clock. */
#ifndef MG_BREAKER_H
#define MG_BREAKER_H

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
  enum mg_breaker_state state;
  uint32_t consecutive;   /* failures in a row */
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

/* May a request go to the target now? Moves open to half-open once the
 * cooldown has passed. When it lets a half-open request through, *probe is
 * set (pass it back to mg_breaker_record). A disabled breaker always lets
 * requests through. */
bool mg_breaker_allow(struct mg_breaker *b, const struct mg_breaker_cfg *c,
                      int64_t now, bool *probe);

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

const char *mg_breaker_state_name(enum mg_breaker_state s);

#endif
