/* policy.h - what to do when a target fails, is slow or is unsure
 * (DESIGN.md, "Targets, confidence and fallbacks"), as configured:
 *
 *   "targets": {"primary": {..., "retries": {...}, "confidence": {...},
 *               "breaker": {...}, "fallbacks": ["simple", "cache",
 *               "traditional:faq"], "fallback_on": [...], "deadline_ms": N}}
 *   "traditional": {"faq": {"url": "...", "field": "/answer"} | {"static": "..."},
 *                   and/or "static_json": <a JSON document>}
 *   "cache": {...}
 *
 * The target keys are parsed here, not by routing/target.c, which only
 * lets them through: fallbacks sit above routing. */
#ifndef MG_POLICY_H
#define MG_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/cfg.h"
#include "common/map.h"
#include "fallbacks/breaker.h"
#include "fallbacks/cache.h"
#include "fallbacks/gate.h"
#include "routing/target.h"

/* Why an attempt failed; also the triggers a fallback or retry acts on. */
enum mg_trigger {
  MG_TRIG_CONNECT = 1u << 0,  /* "connect_error": refused, reset, TLS */
  MG_TRIG_TIMEOUT = 1u << 1,  /* "timeout": connect, first byte, idle, total */
  MG_TRIG_5XX = 1u << 2,      /* "5xx" */
  MG_TRIG_429 = 1u << 3,      /* "429" */
  MG_TRIG_INVALID = 1u << 4,  /* "invalid": not a valid answer */
  MG_TRIG_LOW_CONF = 1u << 5, /* "low_confidence" */
  MG_TRIG_BREAKER = 1u << 6,  /* "breaker_open" */
  MG_TRIG_ALL = (1u << 7) - 1,
};

/* "timeout", "breaker_open", ... for one trigger bit. */
const char *mg_trigger_name(uint32_t trigger);

struct mg_retry_cfg {
  uint32_t count;            /* further attempts on the same target */
  uint32_t backoff_ms;       /* first wait; doubles each retry */
  uint32_t max_backoff_ms;   /* cap of the doubling */
  double jitter;             /* 0..1: the share of each wait drawn at random */
  uint32_t retry_after_max_ms; /* cap on an upstream's Retry-After */
  uint32_t on;               /* trigger mask */
};

enum mg_tier_kind {
  MG_TIER_TARGET,
  MG_TIER_CACHE,
  MG_TIER_TRADITIONAL,
};

struct mg_traditional {
  char *name;        /* owned */
  char *url;         /* owned: an HTTP endpoint, or NULL */
  char *static_text; /* owned: a fixed answer, or NULL */
  char *static_json; /* owned: `static_json`, a JSON document in compact
                      * form: the answer to requests that ask for JSON
                      * (response_format), and to all when the tier has
                      * neither url nor static; or NULL */
  char *field;       /* owned: JSON pointer to the answer text, or NULL */
  uint32_t timeout_ms;
  enum mg_engine engine; /* `engine`, as configured (url only) */
  uint32_t index;    /* position in the snapshot's array */
};

struct mg_tier {
  enum mg_tier_kind kind;
  const struct mg_target *target;     /* borrowed: MG_TIER_TARGET */
  const struct mg_traditional *trad;  /* borrowed: MG_TIER_TRADITIONAL */
};

/* The policy of one target. When the target serves a request first, its
 * chain, triggers and deadline govern the whole request; when it serves
 * as a fallback tier, its own retries, gate and breaker still apply. */
struct mg_policy {
  struct mg_retry_cfg retry;
  struct mg_gate_cfg gate;
  struct mg_breaker_cfg breaker;
  struct mg_tier *chain;     /* owned */
  uint32_t nchain;
  uint32_t fallback_on;      /* trigger mask */
  uint32_t deadline_ms;      /* the whole request, retries and fallbacks */
};

struct mg_fallbacks {
  struct mg_policy *policies;     /* owned: by target index */
  size_t npolicies;
  struct mg_traditional *trad;    /* owned */
  size_t ntrad;
  struct mg_map trad_by_name;
  struct mg_cache_cfg cache;
};

/* Parse the fallback keys of every target, "traditional" and "cache". */
void mg_fallbacks_parse(struct mg_fallbacks *out, const cJSON *root,
                        const struct mg_targets *targets,
                        struct mg_cfg_errors *e);
void mg_fallbacks_free(struct mg_fallbacks *f);

static inline const struct mg_policy *
mg_policy_of(const struct mg_fallbacks *f, const struct mg_target *t) {
  return &f->policies[t->index];
}

#endif
