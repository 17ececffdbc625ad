/* decide.h - how a flag's experiment is decided (DESIGN.md, "Quality
 * signals and cost", "Deciding"; issue 15.3): the flag's `decide` object
 * and the verdict it gives on a treatment against the control. Pure:
 * common/ only. `modelgate report` computes the estimates (report/) and
 * asks this module for the verdict.
 *
 *   "decide": {
 *     "metric": "accuracy",     a feedback metric (required)
 *     "min_lift": 0.02,         the smallest lift worth shipping, in the
 *                               metric's own units (0.02: 2 points of a
 *                               boolean metric); required, > 0
 *     "alpha": 0.05,            two-sided level of every interval [0.05],
 *                               0.0001 .. 0.5
 *     "power": 0.8,             for the units still needed [0.8], 0.5 .. 0.999
 *     "guardrails": {           each optional; each takes max_increase (an
 *                               absolute difference, >= 0) and/or max_ratio
 *                               (treatment / control, > 0)
 *       "error_rate": {"max_increase": 0.005},
 *       "cost_per_request": {"max_ratio": 1.10},
 *       "p95_ms": {"max_ratio": 1.2}
 *     }                         names: error_rate, fallback_rate,
 *                               low_confidence_rate, cost_per_request,
 *                               cost_per_success, mean_latency_ms, p95_ms
 *   }
 *
 * The verdict (mg_decide_judge), with lift = treatment - control signed so
 * that positive is better (higher_is_better of the metric) and [lo, hi]
 * its (1 - alpha) interval:
 *   - a guardrail (every one of them is "higher is worse") is breached when
 *     its whole interval lies past the limit (lower bound of the difference
 *     > max_increase, or of the ratio > max_ratio), holds when its whole
 *     interval lies within (upper bound <= the limit), and is unclear
 *     otherwise;
 *   - roll back: the metric is significantly worse (hi < 0), or a
 *     guardrail is breached;
 *   - ship: the lift is significantly positive (lo > 0), the declared lift
 *     is within its interval or below it (hi >= min_lift: the data do not
 *     say the lift is smaller than declared), and every guardrail holds;
 *   - keep testing: anything else, with the units still needed to detect
 *     min_lift at the declared power (mg_decide_units_needed), unless the
 *     lift is significantly positive but smaller than min_lift (hi <
 *     min_lift: more units will not make it larger; said so). */
#ifndef MG_DECIDE_H
#define MG_DECIDE_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "common/buf.h"
#include "common/cfg.h"

enum mg_decide_guard_metric {
  MG_DECIDE_ERROR_RATE,
  MG_DECIDE_FALLBACK_RATE,
  MG_DECIDE_LOW_CONFIDENCE_RATE,
  MG_DECIDE_COST_PER_REQUEST,
  MG_DECIDE_COST_PER_SUCCESS,
  MG_DECIDE_MEAN_LATENCY_MS,
  MG_DECIDE_P95_MS,
  MG_DECIDE_NGUARDS
};

/* Config names of the guardrails, by enum mg_decide_guard_metric. */
extern const char *const mg_decide_guard_names[MG_DECIDE_NGUARDS];

struct mg_decide_guard {
  bool set;
  double max_increase; /* NaN when absent */
  double max_ratio;    /* NaN when absent */
};

struct mg_decide {
  char *metric;        /* owned */
  double min_lift, alpha, power;
  struct mg_decide_guard guard[MG_DECIDE_NGUARDS];
};

/* Parse a flag's "decide" object at path ("$.flags.chat.decide"). Errors
 * name their JSON path. Returns 0, -EINVAL when errors were recorded, or
 * -ENOMEM; out must be freed either way. */
int mg_decide_parse(const cJSON *obj, const char *path, struct mg_decide *out,
                    struct mg_cfg_errors *e) MG_WARN_UNUSED;
void mg_decide_free(struct mg_decide *d);

/* One treatment-against-control estimate, its intervals at the decide
 * rule's level (1 - alpha). */
struct mg_decide_est {
  bool known;                      /* false: no data, or no test */
  double treatment, control;
  double diff, diff_lo, diff_hi;   /* NaN when unknown */
  double ratio, ratio_lo, ratio_hi; /* NaN when unknown */
};

/* What the verdict is judged on. */
struct mg_decide_input {
  struct mg_decide_est metric;     /* the decide metric */
  bool higher_is_better;           /* of the metric */
  double var_unit_t, var_unit_c;   /* per-unit variances of the metric:
                                    * Var(mean) x units, NaN when unknown */
  double units_t, units_c;         /* units with the metric, per arm */
  struct mg_decide_est guard[MG_DECIDE_NGUARDS];
};

enum mg_decide_kind { MG_DECIDE_SHIP, MG_DECIDE_KEEP_TESTING, MG_DECIDE_ROLL_BACK };
enum mg_decide_status {
  MG_DECIDE_UNKNOWN,  /* not set, or no estimate */
  MG_DECIDE_HOLDS,
  MG_DECIDE_UNCLEAR,
  MG_DECIDE_BREACHED
};

struct mg_decide_verdict {
  enum mg_decide_kind kind;
  const char *label;                /* static: "ship", "keep testing",
                                     * "roll back" */
  double lift, lift_lo, lift_hi;    /* signed: positive is better */
  double units_needed;              /* more units with the metric, both
                                     * arms together; NaN when unknown */
  enum mg_decide_status increase[MG_DECIDE_NGUARDS];
  enum mg_decide_status ratio[MG_DECIDE_NGUARDS];
  char evidence[1024];              /* one paragraph for people */
};

/* The verdict of rule d on in. */
void mg_decide_judge(const struct mg_decide *d, const struct mg_decide_input *in,
                     struct mg_decide_verdict *out);

/* Units (both arms together, split as now: share_t in the treatment) for
 * a two-sided test at level alpha to detect a difference of lift with the
 * given power, from per-unit variances s_t^2 and s_c^2:
 *
 *   N = (z_{1-alpha/2} + z_{power})^2 (s_t^2 / share_t + s_c^2 / (1 -
 *       share_t)) / lift^2
 *
 * (the normal approximation: Var(diff) = s_t^2 / (N share_t) + s_c^2 /
 * (N (1 - share_t)) set equal to (lift / (z_a + z_b))^2). NaN when an
 * input is not finite or lift, share_t are out of range. */
double mg_decide_units_needed(double var_unit_t, double var_unit_c,
                              double share_t, double lift, double alpha,
                              double power);

/* The standard normal quantile Phi^-1(p), 0 < p < 1 (Acklam's rational
 * approximation refined by one Halley step on erfc: about 1e-15). */
double mg_decide_norm_quantile(double p);

#endif
