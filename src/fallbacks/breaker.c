/* breaker.c - the circuit breaker of one target (DESIGN.md, "Circuit
 * breaker").
 *
 * The breaker is told about requests it let through, often long after it
 * let them through: a slow answer can arrive after the breaker opened,
 * went half-open, or closed again. Outcomes therefore only count in the
 * state they can speak for:
 *   closed     every outcome feeds both rules;
 *   open       nothing counts (the cooldown runs from the failure that
 *              opened it, and an old success says nothing about now);
 *   half-open  only probes decide; other requests were let through before
 *              the breaker opened.
 */
#include "fallbacks/breaker.h"

#include <string.h>

void mg_breaker_init(struct mg_breaker *b) {
  memset(b, 0, sizeof(*b));
  pthread_mutex_init(&b->mu, NULL);
  atomic_init(&b->state, MG_BREAKER_CLOSED);
  atomic_init(&b->consecutive, 0);
}

void mg_breaker_destroy(struct mg_breaker *b) { pthread_mutex_destroy(&b->mu); }

const char *mg_breaker_state_name(enum mg_breaker_state s) {
  switch (s) {
  case MG_BREAKER_CLOSED:
    return "closed";
  case MG_BREAKER_OPEN:
    return "open";
  case MG_BREAKER_HALF_OPEN:
    return "half_open";
  }
  return "unknown";
}

/* Width of one slot. A window shorter than MG_BREAKER_SLOTS milliseconds
 * still gets 1 ms slots rather than a division by zero. */
static int64_t slot_width(const struct mg_breaker_cfg *c) {
  int64_t w = (int64_t)(c->window_ms / MG_BREAKER_SLOTS);
  return w > 0 ? w : 1;
}

/* Start of the slot holding now. Floor division: the clock's origin is
 * arbitrary, so now may be negative. */
static int64_t slot_start(int64_t now, int64_t width) {
  int64_t q = now / width;
  if (now % width < 0)
    q--;
  return q * width;
}

static void window_reset(struct mg_breaker *b) {
  memset(b->slots, 0, sizeof(b->slots));
}

/* Count one outcome in the slot of now. The slot at that index last served
 * a whole window ago (or earlier): its counts are stale, so start it over. */
static void window_add(struct mg_breaker *b, const struct mg_breaker_cfg *c,
                       int64_t now, bool ok) {
  int64_t width = slot_width(c);
  int64_t start = slot_start(now, width);
  int64_t n = start / width % MG_BREAKER_SLOTS;
  size_t i = (size_t)(n < 0 ? n + MG_BREAKER_SLOTS : n);

  if (b->slots[i].start != start) {
    b->slots[i].start = start;
    b->slots[i].ok = 0;
    b->slots[i].fail = 0;
  }
  if (ok)
    b->slots[i].ok++;
  else
    b->slots[i].fail++;
}

/* The error-rate rule: failures / requests over the slots inside the window
 * (those that started less than one window ago), once the window holds at
 * least min_requests requests. */
static bool rate_trips(const struct mg_breaker *b,
                       const struct mg_breaker_cfg *c, int64_t now) {
  int64_t span = slot_width(c) * MG_BREAKER_SLOTS;
  uint64_t ok = 0, fail = 0, total;
  size_t i;

  if (!(c->error_rate > 0))
    return false;
  for (i = 0; i < MG_BREAKER_SLOTS; i++) {
    int64_t age = now - b->slots[i].start;
    if (age >= 0 && age < span) {
      ok += b->slots[i].ok;
      fail += b->slots[i].fail;
    }
  }
  total = ok + fail;
  if (total == 0 || total < c->min_requests)
    return false;
  return (double)fail / (double)total >= c->error_rate;
}

static int change(struct mg_breaker *b, enum mg_breaker_state to) {
  atomic_store_explicit(&b->state, to, memory_order_release);
  b->transitions++;
  return (int)to;
}

static int trip(struct mg_breaker *b, int64_t now) {
  b->opened_at = now;
  /* Probes still out belong to the half-open spell that just ended; their
   * outcomes arrive while open and are ignored. */
  b->probes_out = 0;
  return change(b, MG_BREAKER_OPEN);
}

/* A probe of 0 would leave a half-open breaker refusing everything for
 * ever; configuration validates it, but be safe. */
static uint32_t max_probes(const struct mg_breaker_cfg *c) {
  return c->probes > 0 ? c->probes : 1;
}

static bool allow_locked(struct mg_breaker *b, const struct mg_breaker_cfg *c,
                         int64_t now, bool *probe, int *changed) {
  switch (atomic_load_explicit(&b->state, memory_order_relaxed)) {
  case MG_BREAKER_CLOSED:
    return true;
  case MG_BREAKER_OPEN:
    /* Compared as a difference so a clock near INT64_MAX cannot overflow
     * opened_at + cooldown_ms. */
    if (now - b->opened_at < (int64_t)c->cooldown_ms)
      return false;
    b->probes_out = 0;
    *changed = change(b, MG_BREAKER_HALF_OPEN);
    /* The request that noticed the cooldown is over is the first probe. */
    /* fall through */
  case MG_BREAKER_HALF_OPEN:
    if (b->probes_out >= max_probes(c))
      return false;
    b->probes_out++;
    if (probe)
      *probe = true;
    return true;
  }
  return false;
}

bool mg_breaker_allow_ex(struct mg_breaker *b, const struct mg_breaker_cfg *c,
                         int64_t now, bool *probe, int *changed) {
  bool ok;
  if (probe)
    *probe = false;
  *changed = -1;
  if (!c->enabled)
    return true;
  /* The common case, without the lock: a closed breaker lets everything
   * through. Acquire pairs with the release in change(). */
  if (atomic_load_explicit(&b->state, memory_order_acquire) ==
      MG_BREAKER_CLOSED)
    return true;
  pthread_mutex_lock(&b->mu);
  ok = allow_locked(b, c, now, probe, changed);
  pthread_mutex_unlock(&b->mu);
  return ok;
}

bool mg_breaker_allow(struct mg_breaker *b, const struct mg_breaker_cfg *c,
                      int64_t now, bool *probe) {
  int changed;
  return mg_breaker_allow_ex(b, c, now, probe, &changed);
}

static int record_locked(struct mg_breaker *b, const struct mg_breaker_cfg *c,
                         int64_t now, bool ok, bool probe);

int mg_breaker_record(struct mg_breaker *b, const struct mg_breaker_cfg *c,
                      int64_t now, bool ok, bool probe) {
  int rc;
  if (!c->enabled)
    return -1;
  /* A success of a closed breaker with no failure streak and no rate rule
   * changes nothing: no lock. */
  if (ok && !probe && !(c->error_rate > 0) &&
      atomic_load_explicit(&b->state, memory_order_acquire) ==
          MG_BREAKER_CLOSED &&
      atomic_load_explicit(&b->consecutive, memory_order_relaxed) == 0)
    return -1;
  pthread_mutex_lock(&b->mu);
  rc = record_locked(b, c, now, ok, probe);
  pthread_mutex_unlock(&b->mu);
  return rc;
}

static int record_locked(struct mg_breaker *b, const struct mg_breaker_cfg *c,
                         int64_t now, bool ok, bool probe) {

  switch (atomic_load_explicit(&b->state, memory_order_relaxed)) {
  case MG_BREAKER_OPEN:
    return -1;

  case MG_BREAKER_HALF_OPEN:
    /* With no probe out, a probe outcome is a straggler from an earlier
     * half-open spell: it does not speak for this one. */
    if (!probe || b->probes_out == 0)
      return -1;
    b->probes_out--;
    if (!ok)
      return trip(b, now);
    /* Start closed with a clean slate, or the failures that opened the
     * breaker would open it again on the next failure. */
    b->consecutive = 0;
    b->probes_out = 0;
    window_reset(b);
    return change(b, MG_BREAKER_CLOSED);

  case MG_BREAKER_CLOSED:
    /* A late probe of a spell that already closed is an ordinary answer
     * of the target now: it counts like any other. */
    window_add(b, c, now, ok);
    if (ok) {
      b->consecutive = 0;
    } else if (b->consecutive < UINT32_MAX) {
      b->consecutive++;
    }
    if (!ok && c->failures > 0 && b->consecutive >= c->failures)
      return trip(b, now);
    /* Checked on successes too: a success can bring the window up to
     * min_requests while the share of failures is still over the rate. */
    if (rate_trips(b, c, now))
      return trip(b, now);
    return -1;
  }
  return -1;
}

void mg_breaker_release(struct mg_breaker *b, const struct mg_breaker_cfg *c,
                        bool probe) {
  if (!c->enabled || !probe)
    return;
  pthread_mutex_lock(&b->mu);
  if (b->state == MG_BREAKER_HALF_OPEN && b->probes_out > 0)
    b->probes_out--;
  pthread_mutex_unlock(&b->mu);
}

bool mg_breaker_trip(struct mg_breaker *b, const struct mg_breaker_cfg *c,
                     int64_t now) {
  bool opened = false;
  if (!c->enabled)
    return false;
  pthread_mutex_lock(&b->mu);
  if (atomic_load_explicit(&b->state, memory_order_relaxed) ==
      MG_BREAKER_CLOSED) {
    (void)trip(b, now);
    opened = true;
  }
  pthread_mutex_unlock(&b->mu);
  return opened;
}
