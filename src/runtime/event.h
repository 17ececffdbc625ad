/* event.h - what happened to the state in force: a kill, new weights, a
 * ramp step, a rollback, a breaker opening, a reload (DESIGN.md, "The
 * decision log": event lines; "Notifications").
 *
 * The runtime fills one struct mg_event per change and hands it to its
 * hooks (runtime.h), which write the event line, count it, and pass it on.
 * Every pointer is borrowed for the duration of the call. */
#ifndef MG_EVENT_H
#define MG_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "ramps/ramp.h"

enum mg_severity { MG_SEV_INFO, MG_SEV_WARNING, MG_SEV_CRITICAL };

const char *mg_severity_name(enum mg_severity s); /* "info", ... */

/* Who asked for a change made through the admin API. */
struct mg_actor {
  const char *by;     /* the caller's name ("admin" when it gave none) */
  const char *reason; /* why, or NULL */
};

struct mg_event {
  const char *type;        /* "kill", "unkill", "weights",
                            * "weights_cleared", "ramp_step",
                            * "ramp_waiting", "rollback", "ramp_paused",
                            * "ramp_resumed", "ramp_restarted", "breaker",
                            * "reload", "min_confidence",
                            * "min_confidence_cleared", "fallback_storm",
                            * "fallback_storm_over" */
  enum mg_severity severity;
  const char *flag;        /* or NULL */
  const char *variant;     /* the ramped (or changed) variant, or NULL */
  const char *target;      /* breaker events */
  const char *state;       /* breaker state, ramp status, or NULL */
  /* Weights of the flag's variants before and after, in basis points
   * (NULL when the event does not change them). */
  const char *const *variants;
  const uint32_t *weights_before, *weights_after;
  uint32_t nvariants;
  int32_t step;            /* ramp step, or -1 */
  int64_t weight_bp;       /* the ramped variant's weight now, or -1 */
  /* The evidence of an automatic decision (a guard's rollback). */
  const char *guard;       /* or NULL */
  double observed, threshold;
  uint32_t window_ms;
  const struct mg_ramp_evidence *evidence; /* the whole evidence of a
                                            * guard's rollback, or NULL */
  const struct mg_actor *actor; /* an admin call, or NULL: automatic */
  /* reload */
  const char *from_hash, *to_hash;
  const char *result;      /* "ok", "refused" */
  size_t errors;
  const char *instance;    /* filled by the hooks' owner */
  /* min_confidence, min_confidence_cleared: the target's threshold */
  bool has_min_confidence;
  double min_confidence, min_confidence_before;
};

/* The event as the members of a decision-log event line, after
 * {"ts":...,"event":"<type>" (decisions/record.h): ,"flag":...,... */
int mg_event_members(const struct mg_event *ev,
                     struct mg_buf *out) MG_WARN_UNUSED;

#endif
