/* flag.h - feature flags: which variant (model version) serves a request,
 * and why (DESIGN.md, "Flags: how a variant is chosen").
 *
 * Evaluation order, first match wins:
 *   killed -> window -> blocked -> allowed -> rule:<i> -> [no weights:
 *   default] -> no_unit -> rollout -> default
 *
 * Units (issue 11.1): a flag of unit `user` reads the request's unit id in
 * DESIGN.md's order (safety_identifier, user, header x-modelgate-unit, the
 * authenticated client: mg_request_unit); `attr:<name>` an attribute;
 * `input` the normalized messages. A request that has none of its flag's
 * unit is not randomized: the rollout serves it the off_variant with
 * reason no_unit, unless the flag says "missing_unit": "request" (then it
 * is drawn afresh, unit_kind request). Everything before the rollout
 * (kill, window, lists, rules) applies as usual.
 *
 * Bucketing: bucket = XXH3_64(salt, 0x1f, unit id) mod 10000. Two flags
 * with different salts (the default salt is the flag's name) bucket the same
 * unit independently.
 *
 * Layout: the off_variant (the control) holds the middle of [0, 10000); the
 * first other variant grows up from 0, the second down from 10000, the third
 * up after the first, and so on. Raising a treatment's weight therefore only
 * takes buckets from the control: nobody who was in it leaves (with up to two
 * treatments, whatever the other's weight; with more, while the treatments
 * laid out before it on the same side keep their weights). */
#ifndef MG_FLAG_H
#define MG_FLAG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/cfg.h"
#include "common/map.h"
#include "routing/request.h"
#include "routing/rule.h"
#include "routing/target.h"

#define MG_BUCKETS 10000
#define MG_FLAG_MAX_VARIANTS 16
#define MG_NO_BUCKET UINT32_MAX

enum mg_unit_kind {
  MG_UNIT_USER,    /* the request's unit id (mg_request_unit) */
  MG_UNIT_ATTR,    /* an attribute's value (unit: "attr:<name>") */
  MG_UNIT_REQUEST, /* every request drawn afresh */
  MG_UNIT_INPUT,   /* the normalized messages: same prompt, same arm */
};

enum mg_reason {
  MG_REASON_KILLED,
  MG_REASON_WINDOW,
  MG_REASON_BLOCKED,
  MG_REASON_ALLOWED,
  MG_REASON_RULE,
  MG_REASON_ROLLOUT,
  MG_REASON_NO_UNIT, /* a rollout, but the request has no unit */
  MG_REASON_RAMP_INPUTS, /* the ramp's step does not let the treatment see
                          * inputs this large yet: the control serves */
  MG_REASON_DEFAULT, /* keep last: metrics count slots up to it */
};

/* What a flag does with a request that lacks its unit. */
enum mg_missing_unit {
  MG_MISSING_OFF,     /* "off_variant" (default): reason no_unit */
  MG_MISSING_REQUEST, /* "request": drawn afresh per request */
};

struct mg_variant {
  char *name;                     /* owned */
  const struct mg_target *target; /* borrowed from the same snapshot */
  uint32_t weight;                /* basis points from the file */
  struct mg_map allow;            /* unit id -> non-NULL; keys owned by
                                   * allow_keys */
  char **allow_keys;              /* owned */
  size_t nallow;
};

struct mg_rule {
  struct mg_cond cond;
  uint32_t variant;
};

struct mg_flag {
  char *name;              /* owned */
  char *salt;              /* owned; the name unless configured */
  size_t salt_len;
  bool enabled;            /* false: killed in the file */
  uint32_t off_variant;
  enum mg_unit_kind unit;
  char *unit_attr;         /* owned: the attribute for MG_UNIT_ATTR */
  size_t unit_attr_len;
  int64_t start_ms;        /* INT64_MIN when open */
  int64_t end_ms;          /* INT64_MAX when open */
  struct mg_map block;     /* unit id -> non-NULL; keys owned by block_keys */
  char **block_keys;       /* owned */
  size_t nblock;
  struct mg_variant *variants; /* owned */
  uint32_t nvariants;
  struct mg_rule *rules;   /* owned */
  uint32_t nrules;
  bool has_weights;        /* the file gives weights (else no rollout) */
  enum mg_missing_unit missing_unit;
  bool fallback_to_control; /* a variant whose chain is exhausted falls
                             * back to the off_variant's target (default
                             * true; fallbacks/plan.h) */
  uint32_t index;          /* position in the snapshot's flag array */
};

struct mg_flags {
  struct mg_flag *v; /* owned */
  size_t n;
  struct mg_map by_name;
};

/* The flag's state in force: the file's, or the file's with runtime
 * overrides (kill, weights) applied. Built by whoever owns the overrides. */
struct mg_flag_state {
  bool killed;                           /* by the file or at run time */
  bool has_weights;
  uint32_t weights[MG_FLAG_MAX_VARIANTS]; /* basis points in force */
  uint32_t lo[MG_FLAG_MAX_VARIANTS];      /* bucket range [lo, hi) */
  uint32_t hi[MG_FLAG_MAX_VARIANTS];
  /* A ramp step widening the inputs the treatment sees (ramps/ramp.h
   * mg_ramp_gate): larger inputs are served by the off_variant, reason
   * ramp_inputs, not randomized. */
  bool gated;
  uint64_t gate_max_chars;
  uint32_t gate_max_tools;
};

struct mg_flag_decision {
  uint32_t variant;           /* index into flag->variants */
  enum mg_reason reason;
  int32_t rule;               /* for MG_REASON_RULE, else -1 */
  uint32_t bucket;            /* for MG_REASON_ROLLOUT, else MG_NO_BUCKET */
  enum mg_unit_kind unit_kind; /* the kind used: MG_UNIT_REQUEST when the
                                * configured unit was missing (the record
                                * then has no unit) */
  enum mg_unit_source unit_source; /* for MG_UNIT_USER: where the unit id
                                    * came from; MG_USRC_NONE otherwise */
  bool has_unit;              /* a unit id (or input digest) was found */
  uint64_t unit_hash;         /* XXH64 of the unit id, for the log; 0 for
                               * request units */
};

/* Parse the "flags" section (may be NULL: no flags). */
void mg_flags_parse(struct mg_flags *out, const cJSON *section,
                    const struct mg_targets *targets, struct mg_cfg_errors *e);
void mg_flags_free(struct mg_flags *f);
const struct mg_flag *mg_flags_find(const struct mg_flags *f,
                                    const char *name);
int mg_flag_variant_index(const struct mg_flag *f, const char *name);

/* The file's state of a flag. */
void mg_flag_state_init(struct mg_flag_state *st, const struct mg_flag *f);
/* Put weights (basis points, one per variant, summing to 10000) in force;
 * -EINVAL when they do not sum to 10000. */
int mg_flag_state_set_weights(struct mg_flag_state *st,
                              const struct mg_flag *f, const uint32_t *weights);

/* Choose the variant. rnd: a random number for request units. Pure: no
 * allocation unless the flag's unit is MG_UNIT_INPUT. */
void mg_flag_eval(const struct mg_flag *f, const struct mg_flag_state *st,
                  const struct mg_request *r, int64_t now_ms, uint64_t rnd,
                  struct mg_flag_decision *out);

/* bucket = XXH3_64(salt, 0x1f, unit) mod 10000 */
uint32_t mg_bucket(const char *salt, size_t salt_len, const void *unit,
                   size_t len);

/* "killed", "rule:2", ...: a static name, or "rule:N" written into buf (at
 * least 24 bytes) and buf returned. */
const char *mg_reason_name(enum mg_reason r, int32_t rule, char *buf,
                           size_t n);
const char *mg_unit_kind_name(enum mg_unit_kind k);

#endif
