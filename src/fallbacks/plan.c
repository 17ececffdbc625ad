/* plan.c - the fallback chain as a state machine. */
#include "fallbacks/plan.h"

#include <stdlib.h>
#include <string.h>

#include "common/time.h"

#define RETRY_AFTER_MAX_MS 86400000.0

/* A non-negative number of `unit` ms, whitespace around it allowed. */
static bool wait_of(const char *v, double unit, uint32_t *out) {
  char *end;
  double x;
  while (*v == ' ' || *v == '\t')
    v++;
  if (*v < '0' || *v > '9')
    return false; /* no sign, no "inf", no hex */
  x = strtod(v, &end);
  while (*end == ' ' || *end == '\t')
    end++;
  if (*end != '\0' || !(x >= 0))
    return false;
  x *= unit;
  *out = x > RETRY_AFTER_MAX_MS ? (uint32_t)RETRY_AFTER_MAX_MS : (uint32_t)x;
  return true;
}

uint32_t mg_retry_after_ms(const char *retry_after_ms, const char *retry_after,
                           int64_t now_ms) {
  uint32_t w;
  int64_t at;
  if (retry_after_ms && wait_of(retry_after_ms, 1.0, &w))
    return w;
  if (retry_after == NULL)
    return 0;
  if (wait_of(retry_after, 1000.0, &w))
    return w;
  if (mg_http_date_parse(retry_after, &at) != 0 || at <= now_ms)
    return 0;
  return at - now_ms > (int64_t)RETRY_AFTER_MAX_MS
             ? (uint32_t)RETRY_AFTER_MAX_MS
             : (uint32_t)(at - now_ms);
}

static void fail(struct mg_plan *p, struct mg_step *out) {
  memset(out, 0, sizeof(*out));
  out->kind = MG_STEP_FAIL;
  (void)p;
}

static uint32_t budget(const struct mg_plan *p, int64_t now) {
  return now < p->deadline ? (uint32_t)(p->deadline - now) : 0;
}

static bool allow(struct mg_plan *p, const struct mg_target *t, int64_t now) {
  const struct mg_policy *pol = mg_policy_of(p->fb, t);
  struct mg_breaker *b = p->breakers[t->index];
  int changed;
  bool probe = false,
       ok = mg_breaker_allow_ex(b, &pol->breaker, now, &probe, &changed);
  /* Asking can change the state too (open -> half-open after the
   * cooldown): the owner reports it like any other change. Told by the
   * breaker itself: with several workers, its state may also change under
   * another thread's hands. */
  if (changed >= 0 && p->breaker_target == NULL) {
    p->breaker_target = t;
    p->breaker_state = changed;
  }
  if (!ok)
    return false;
  p->probe = probe;
  return true;
}

static void call(struct mg_plan *p, const struct mg_target *t, int64_t now,
                 struct mg_step *out) {
  memset(out, 0, sizeof(*out));
  out->kind = MG_STEP_CALL;
  out->target = t;
  out->budget_ms = budget(p, now);
  p->current = t;
  p->calls++;
}

/* The tiers in walking order: the owner's chain with the control tier (if
 * any) at ctl_at. */
static uint32_t ntiers(const struct mg_plan *p) {
  return p->owner->nchain + (p->ctl_at >= 0 ? 1u : 0u);
}

static const struct mg_tier *tier_at(const struct mg_plan *p, uint32_t i) {
  if (p->ctl_at >= 0) {
    if (i == (uint32_t)p->ctl_at)
      return &p->ctl;
    if (i > (uint32_t)p->ctl_at)
      i--;
  }
  return &p->owner->chain[i];
}

static void skipped(struct mg_plan *p, const struct mg_tier *t,
                    const char *reason, bool contract) {
  struct mg_plan_skipped s;
  if (p->opts.on_skip == NULL)
    return;
  s.kind = t->kind;
  s.target = t->target;
  s.trad = t->trad;
  s.reason = reason;
  s.contract = contract;
  s.control = t == &p->ctl;
  p->opts.on_skip(p->opts.arg, &s);
}

/* What of the request a traditional tier cannot honour, or NULL. It never
 * calls tools, makes one answer, and has no token logprobs; it answers
 * JSON only with a static_json document. */
static const char *trad_cannot(const struct mg_plan *p,
                               const struct mg_traditional *t) {
  static const uint32_t never[] = {MG_NEED_TOOL, MG_NEED_N, MG_NEED_LOGPROBS};
  size_t i;
  for (i = 0; i < sizeof(never) / sizeof(never[0]); i++)
    if (p->opts.needs & never[i])
      return mg_need_name(never[i]);
  if ((p->opts.needs & MG_NEED_JSON) && t->static_json == NULL)
    return mg_need_name(MG_NEED_JSON);
  return NULL;
}

/* Move down the chain to the next tier that can serve. */
static void advance(struct mg_plan *p, int64_t now, struct mg_step *out) {
  for (;;) {
    const struct mg_tier *t;
    const char *why;
    if ((uint32_t)(p->tier + 1) >= ntiers(p)) {
      fail(p, out);
      return;
    }
    t = tier_at(p, (uint32_t)++p->tier);
    switch (t->kind) {
    case MG_TIER_TARGET:
      /* No time left: a call could not finish. Cheaper tiers may still
       * answer at once. */
      if (now >= p->deadline) {
        skipped(p, t, "deadline", false);
        continue;
      }
      if (!allow(p, t->target, now)) {
        /* Skipped at no cost. The original failure stays the one to
         * report if nothing else answers. */
        if (p->last == 0)
          p->last = MG_TRIG_BREAKER;
        skipped(p, t, "breaker_open", false);
        continue;
      }
      p->tries = 1;
      call(p, t->target, now, out);
      out->control = t == &p->ctl;
      return;
    case MG_TIER_CACHE:
      if (p->opts.no_cache) {
        skipped(p, t, "endpoint", true);
        continue;
      }
      memset(out, 0, sizeof(*out));
      out->kind = MG_STEP_CACHE;
      return;
    case MG_TIER_TRADITIONAL:
      if (p->opts.no_traditional) {
        skipped(p, t, "endpoint", true);
        continue;
      }
      if ((why = trad_cannot(p, t->trad)) != NULL) {
        skipped(p, t, why, true);
        continue;
      }
      memset(out, 0, sizeof(*out));
      out->kind = MG_STEP_TRADITIONAL;
      out->trad = t->trad;
      out->json = (p->opts.needs & MG_NEED_JSON) != 0;
      out->text = out->json ? t->trad->static_json : t->trad->static_text;
      /* A fixed answer costs nothing; a call needs time. */
      if (out->text == NULL && now >= p->deadline) {
        skipped(p, t, "deadline", false);
        continue;
      }
      out->budget_ms = budget(p, now);
      return;
    }
  }
}

/* Leave the current tier because of trigger: fall back if the chain's
 * owner says so for this trigger, else give up. */
static void fall_back(struct mg_plan *p, uint32_t trigger, int64_t now,
                      struct mg_step *out) {
  p->last = trigger;
  if ((trigger & p->owner->fallback_on) == 0) {
    fail(p, out);
    return;
  }
  advance(p, now, out);
  /* A fallback happened only if some tier is left to try. */
  if (out->kind != MG_STEP_FAIL && p->why == 0)
    p->why = trigger;
}

/* Where the control tier goes: before the first traditional tier, unless
 * there is no control or the chain already tries it. */
static void place_control(struct mg_plan *p, const struct mg_target *first) {
  const struct mg_policy *o = p->owner;
  const struct mg_target *c = p->opts.control;
  uint32_t i;

  p->ctl_at = -1;
  if (c == NULL || c == first)
    return;
  for (i = 0; i < o->nchain; i++)
    if (o->chain[i].kind == MG_TIER_TARGET && o->chain[i].target == c)
      return;
  for (i = 0; i < o->nchain; i++)
    if (o->chain[i].kind == MG_TIER_TRADITIONAL)
      break;
  memset(&p->ctl, 0, sizeof(p->ctl));
  p->ctl.kind = MG_TIER_TARGET;
  p->ctl.target = c;
  p->ctl_at = (int32_t)i;
}

void mg_plan_begin(struct mg_plan *p, const struct mg_fallbacks *fb,
                   const struct mg_target *first,
                   const struct mg_plan_opts *o,
                   struct mg_breaker *const *breakers, int64_t now,
                   struct mg_step *out) {
  memset(p, 0, sizeof(*p));
  p->fb = fb;
  p->owner = mg_policy_of(fb, first);
  p->breakers = breakers;
  p->tier = -1;
  if (o)
    p->opts = *o;
  place_control(p, first);
  /* One deadline for the whole request, the control tier included. */
  p->deadline = now + p->owner->deadline_ms;
  p->breaker_state = -1;
  if (!allow(p, first, now)) {
    /* An open breaker: straight to the next tier, no timeout paid. */
    fall_back(p, MG_TRIG_BREAKER, now, out);
    return;
  }
  p->tries = 1;
  call(p, first, now, out);
}

void mg_plan_start(struct mg_plan *p, const struct mg_fallbacks *fb,
                   const struct mg_target *first,
                   struct mg_breaker *const *breakers, int64_t now,
                   struct mg_step *out) {
  mg_plan_begin(p, fb, first, NULL, breakers, now, out);
}

/* The wait before retry number `tries` (1-based): exponential backoff with
 * jitter, or the upstream's Retry-After (capped) when it gave one. */
static uint32_t retry_wait(const struct mg_retry_cfg *r, uint32_t tries,
                           uint32_t retry_after_ms, uint64_t rnd) {
  uint64_t base;
  double span;
  if (retry_after_ms)
    return retry_after_ms < r->retry_after_max_ms ? retry_after_ms
                                                  : r->retry_after_max_ms;
  base = r->backoff_ms;
  while (--tries > 0 && base < r->max_backoff_ms)
    base *= 2;
  if (base > r->max_backoff_ms)
    base = r->max_backoff_ms;
  /* A share `jitter` of the wait is drawn at random, so that clients
   * failing together do not retry together. */
  span = (double)base * r->jitter;
  return (uint32_t)((double)base - span +
                    span * ((double)(rnd >> 11) / (double)(1ULL << 53)));
}

/* Tell the current target's breaker how the call went. */
static void record(struct mg_plan *p, const struct mg_outcome *o, int64_t now) {
  const struct mg_target *t = p->current;
  const struct mg_policy *pol = mg_policy_of(p->fb, t);
  /* Low confidence says nothing about the upstream's health. */
  bool ok = o->trigger == 0 || o->trigger == MG_TRIG_LOW_CONF;
  int changed;
  if (o->local) {
    /* Our own shortage says nothing about the upstream either: a
     * half-open breaker's probe slot is given back. */
    mg_plan_abandon(p);
    return;
  }
  changed =
      mg_breaker_record(p->breakers[t->index], &pol->breaker, now, ok, p->probe);
  if (changed >= 0) {
    p->breaker_target = t;
    p->breaker_state = changed;
  }
  p->probe = false;
}

void mg_plan_end(struct mg_plan *p, const struct mg_outcome *o, int64_t now) {
  if (p->current)
    record(p, o, now);
}

void mg_plan_result(struct mg_plan *p, const struct mg_outcome *o,
                    int64_t now, uint64_t rnd, struct mg_step *out) {
  const struct mg_target *t = p->current;
  const struct mg_policy *pol = mg_policy_of(p->fb, t);

  record(p, o, now);
  if (o->trigger == 0) {
    memset(out, 0, sizeof(*out));
    out->kind = MG_STEP_DONE;
    return;
  }
  /* Retry the same target while it has retries left for this trigger and
   * the wait still ends before the deadline. */
  if ((o->trigger & pol->retry.on) && p->tries <= pol->retry.count) {
    uint32_t wait = retry_wait(&pol->retry, p->tries, o->retry_after_ms, rnd);
    if (now + wait < p->deadline) {
      p->last = o->trigger;
      memset(out, 0, sizeof(*out));
      out->kind = MG_STEP_WAIT;
      out->target = t;
      out->wait_ms = wait;
      return;
    }
  }
  fall_back(p, o->trigger, now, out);
}

void mg_plan_resume(struct mg_plan *p, int64_t now, struct mg_step *out) {
  const struct mg_target *t = p->current;
  if (now >= p->deadline) {
    fall_back(p, MG_TRIG_TIMEOUT, now, out);
    return;
  }
  if (!allow(p, t, now)) {
    fall_back(p, MG_TRIG_BREAKER, now, out);
    return;
  }
  p->tries++;
  call(p, t, now, out);
}

void mg_plan_abandon(struct mg_plan *p) {
  const struct mg_target *t = p->current;
  if (t == NULL || !p->probe)
    return;
  mg_breaker_release(p->breakers[t->index],
                     &mg_policy_of(p->fb, t)->breaker, p->probe);
  p->probe = false;
}

void mg_plan_skip(struct mg_plan *p, uint32_t trigger, int64_t now,
                  struct mg_step *out) {
  /* The reason to fall back stays the original one; a cache miss or a
   * failed traditional path just moves on. */
  if (trigger)
    p->last = trigger;
  advance(p, now, out);
}
