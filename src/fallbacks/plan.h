/* plan.h - walking a request's fallback chain (DESIGN.md, "Fallback
 * tiers"): which target to call next, whether to wait and retry, when to
 * move to the next tier, and when to give up - all within one deadline.
 *
 * Pure: the caller makes the calls and reports their outcomes; time and
 * randomness come in as arguments. The plan also keeps the targets'
 * circuit breakers up to date (they are borrowed: they live as long as the
 * process, across reloads).
 *
 * The client's contract (DESIGN.md, "Fallbacks keep the client's
 * contract"): a tier that cannot honour what the request asks for
 * (mg_plan_opts.needs) is skipped and reported through on_skip: a target
 * tier honours everything (it speaks the request's API: config check); a
 * cache tier too (its key holds every parameter, so a hit answered a
 * request that asked the same); a traditional tier never honours
 * tool_choice, n > 1 or logprobs, and honours JSON only with
 * `static_json`.
 *
 * fallback_to_control: when the request's flag variant is not the
 * control, the control's target (mg_plan_opts.control) is one more tier,
 * placed before the first traditional tier of the chain (or at its end):
 * the chain's targets and caches first, then the control, then the
 * traditional answers. The control is tried once, as any fallback target
 * (its own retries, gate and breaker), not its own chain; it is left out
 * when the chain already names it. */
#ifndef MG_PLAN_H
#define MG_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "fallbacks/breaker.h"
#include "fallbacks/policy.h"
#include "routing/request.h"

enum mg_step_kind {
  MG_STEP_CALL,        /* call step.target within step.budget_ms */
  MG_STEP_WAIT,        /* wait step.wait_ms, then mg_plan_resume() */
  MG_STEP_CACHE,       /* answer from the cache, or mg_plan_skip() on a miss */
  MG_STEP_TRADITIONAL, /* answer from step.trad, or mg_plan_skip() */
  MG_STEP_FAIL,        /* nothing left: answer with the last failure */
  MG_STEP_DONE,        /* the answer was good */
};

struct mg_step {
  enum mg_step_kind kind;
  const struct mg_target *target;    /* CALL, WAIT */
  const struct mg_traditional *trad; /* TRADITIONAL */
  const char *text;                  /* TRADITIONAL: the fixed answer to
                                      * give (trad's static_json when the
                                      * request needs JSON, else its
                                      * static), or NULL: call trad->url */
  bool json;                         /* TRADITIONAL: text is static_json */
  bool control;                      /* CALL: the flag's control target,
                                      * by fallback_to_control */
  uint32_t wait_ms;                  /* WAIT */
  uint32_t budget_ms;                /* CALL, TRADITIONAL: until the deadline */
};

/* A tier passed over without being tried. */
struct mg_plan_skipped {
  enum mg_tier_kind kind;
  const struct mg_target *target;    /* MG_TIER_TARGET */
  const struct mg_traditional *trad; /* MG_TIER_TRADITIONAL */
  const char *reason;   /* static: "response_format", "tool_choice", "n",
                         * "logprobs" (what it cannot honour), "endpoint"
                         * (the endpoint has no such answer), or
                         * "breaker_open", "deadline" */
  bool contract;        /* skipped for the request's contract or endpoint:
                         * the record's attempt says "skipped:<reason>" */
  bool control;         /* the control tier of fallback_to_control */
};

/* What the request brings to its plan. All optional (zeroed: none). */
struct mg_plan_opts {
  uint32_t needs;                   /* MG_NEED_* (routing/request.h) */
  const struct mg_target *control;  /* fallback_to_control: the flag's
                                     * off_variant target, when the
                                     * request's variant is another one
                                     * and the flag has the option on; or
                                     * NULL */
  bool no_cache;                    /* the endpoint has no cache tier */
  bool no_traditional;              /* ...nor traditional answers */
  /* Called once per skipped tier, in chain order, from inside the plan's
   * functions. May be NULL. */
  void (*on_skip)(void *arg, const struct mg_plan_skipped *s);
  void *arg;                        /* borrowed: on_skip's */
};

/* How an attempt ended, as the fallbacks see it. */
struct mg_outcome {
  uint32_t trigger;        /* one MG_TRIG_* bit, or 0 for a good answer */
  uint32_t retry_after_ms; /* the upstream's Retry-After, or 0 */
  bool local;              /* the failure is modelgate's own (out of file
                            * descriptors): the target's breaker learns
                            * nothing from it (issue 10, point 3) */
};

/* The wait an upstream asked for before a retry, in ms, from the values of
 * its `retry-after-ms` header (milliseconds, sent by OpenAI and Azure; it
 * wins) and its `Retry-After` header (delta-seconds, a fraction accepted, or
 * an HTTP date, counted from now_ms); NULL for a header that is absent.
 * 0 when neither gives a wait (absent, unreadable, or a date in the past);
 * at most a day. */
uint32_t mg_retry_after_ms(const char *retry_after_ms, const char *retry_after,
                           int64_t now_ms);

struct mg_plan {
  const struct mg_fallbacks *fb;     /* borrowed: the request's snapshot */
  const struct mg_policy *owner;     /* the first target's policy */
  struct mg_breaker *const *breakers; /* borrowed: by target index */
  const struct mg_target *current;   /* the target of the last CALL */
  bool probe;                        /* ...let through a half-open breaker */
  int32_t tier;                      /* -1: the first target; else the
                                      * position in the chain with the
                                      * control tier in it (see ctl_at) */
  struct mg_plan_opts opts;
  struct mg_tier ctl;                /* the control tier, when ctl_at >= 0 */
  int32_t ctl_at;                    /* its position, or -1 */
  uint32_t tries;                    /* calls to the current target */
  int64_t deadline;
  uint32_t why;                      /* the trigger of the first fallback */
  uint32_t last;                     /* the latest failure's trigger */
  uint32_t calls;                    /* calls made, all targets */
  /* A breaker whose state a call to the plan changed, for the owner to
   * report and then clear (set breaker_target to NULL). */
  const struct mg_target *breaker_target;
  int breaker_state;                 /* enum mg_breaker_state, or -1 */
};

/* Begin with first (the variant's target). breakers: one per target of the
 * snapshot, by target index. o may be NULL (no needs, no control). */
void mg_plan_begin(struct mg_plan *p, const struct mg_fallbacks *fb,
                   const struct mg_target *first,
                   const struct mg_plan_opts *o,
                   struct mg_breaker *const *breakers, int64_t now,
                   struct mg_step *out);

/* Legacy: mg_plan_begin without options. */
void mg_plan_start(struct mg_plan *p, const struct mg_fallbacks *fb,
                   const struct mg_target *first,
                   struct mg_breaker *const *breakers, int64_t now,
                   struct mg_step *out);

/* The last CALL ended with outcome o (trigger 0: a good answer, which
 * gives MG_STEP_DONE). rnd: a random number for retry jitter. */
void mg_plan_result(struct mg_plan *p, const struct mg_outcome *o,
                    int64_t now, uint64_t rnd, struct mg_step *out);

/* The last CALL ended with outcome o and nothing more will be tried
 * whatever it was (a stream already under way, the client's own 4xx, an
 * abstention): only the breaker learns from it. */
void mg_plan_end(struct mg_plan *p, const struct mg_outcome *o, int64_t now);

/* The WAIT is over: call again. */
void mg_plan_resume(struct mg_plan *p, int64_t now, struct mg_step *out);

/* A cache tier missed or a traditional tier failed (trigger: why): on to
 * the next tier. */
void mg_plan_skip(struct mg_plan *p, uint32_t trigger, int64_t now,
                  struct mg_step *out);

/* The last CALL is abandoned without an outcome (its client left): a
 * half-open breaker's probe slot is given back. */
void mg_plan_abandon(struct mg_plan *p);

/* The tier that produced the answer: "primary" while on the first target,
 * else "fallback". */
static inline bool mg_plan_fell_back(const struct mg_plan *p) {
  return p->tier >= 0;
}

#endif
