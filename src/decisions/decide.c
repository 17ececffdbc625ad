/* decide.c - a flag's decide rule and its verdict (decide.h). */
#include "decisions/decide.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const mg_decide_guard_names[MG_DECIDE_NGUARDS] = {
    [MG_DECIDE_ERROR_RATE] = "error_rate",
    [MG_DECIDE_FALLBACK_RATE] = "fallback_rate",
    [MG_DECIDE_LOW_CONFIDENCE_RATE] = "low_confidence_rate",
    [MG_DECIDE_COST_PER_REQUEST] = "cost_per_request",
    [MG_DECIDE_COST_PER_SUCCESS] = "cost_per_success",
    [MG_DECIDE_MEAN_LATENCY_MS] = "mean_latency_ms",
    [MG_DECIDE_P95_MS] = "p95_ms",
};

int mg_decide_parse(const cJSON *obj, const char *path, struct mg_decide *out,
                    struct mg_cfg_errors *e) {
  static const char *const keys[] = {"metric", "min_lift", "alpha", "power",
                                     "guardrails", NULL};
  static const char *const gkeys[] = {"max_increase", "max_ratio", NULL};
  const cJSON *gs, *g;
  char p[MG_CFG_PATH_MAX], gp[MG_CFG_PATH_MAX];
  size_t before = e->n;
  int k;

  memset(out, 0, sizeof(*out));
  out->alpha = 0.05;
  out->power = 0.8;
  out->min_lift = NAN;
  for (k = 0; k < MG_DECIDE_NGUARDS; k++)
    out->guard[k].max_increase = out->guard[k].max_ratio = NAN;
  if (!mg_cfg_object(obj, path, keys, e))
    return -EINVAL;
  if (mg_cfg_require(obj, "metric", path, e))
    out->metric = mg_cfg_str(obj, "metric", path, NULL, true, e);
  if (mg_cfg_require(obj, "min_lift", path, e)) {
    out->min_lift = mg_cfg_num(obj, "min_lift", path, NAN, 0, 1e15, e);
    if (out->min_lift == 0) {
      mg_cfg_join(p, path, "min_lift");
      mg_cfg_error(e, p, "must be greater than 0");
    }
  }
  out->alpha = mg_cfg_num(obj, "alpha", path, 0.05, 0.0001, 0.5, e);
  out->power = mg_cfg_num(obj, "power", path, 0.8, 0.5, 0.999, e);
  gs = cJSON_GetObjectItemCaseSensitive(obj, "guardrails");
  if (gs) {
    mg_cfg_join(p, path, "guardrails");
    const char *names[MG_DECIDE_NGUARDS + 1];
    for (k = 0; k < MG_DECIDE_NGUARDS; k++)
      names[k] = mg_decide_guard_names[k];
    names[MG_DECIDE_NGUARDS] = NULL; /* mg_cfg_object's list ends so */
    if (mg_cfg_object(gs, p, names, e)) {
      cJSON_ArrayForEach(g, gs) {
        for (k = 0; k < MG_DECIDE_NGUARDS; k++)
          if (strcmp(g->string, mg_decide_guard_names[k]) == 0)
            break;
        if (k == MG_DECIDE_NGUARDS)
          continue; /* reported by mg_cfg_object */
        mg_cfg_join(gp, p, g->string);
        if (!mg_cfg_object(g, gp, gkeys, e))
          continue;
        out->guard[k].set = true;
        if (cJSON_GetObjectItemCaseSensitive(g, "max_increase"))
          out->guard[k].max_increase =
              mg_cfg_num(g, "max_increase", gp, NAN, 0, 1e15, e);
        if (cJSON_GetObjectItemCaseSensitive(g, "max_ratio")) {
          out->guard[k].max_ratio =
              mg_cfg_num(g, "max_ratio", gp, NAN, 0, 1e15, e);
          if (out->guard[k].max_ratio == 0) {
            char rp[MG_CFG_PATH_MAX];
            mg_cfg_join(rp, gp, "max_ratio");
            mg_cfg_error(e, rp, "must be greater than 0");
          }
        }
        if (!cJSON_GetObjectItemCaseSensitive(g, "max_increase") &&
            !cJSON_GetObjectItemCaseSensitive(g, "max_ratio"))
          mg_cfg_error(e, gp, "needs max_increase, max_ratio or both");
      }
    }
  }
  return e->n > before ? -EINVAL : 0;
}

void mg_decide_free(struct mg_decide *d) {
  free(d->metric);
  memset(d, 0, sizeof(*d));
}

double mg_decide_norm_quantile(double p) {
  /* Acklam's coefficients (a published rational approximation, relative
   * error 1.15e-9 before the refinement). */
  static const double a[6] = {-3.969683028665376e+01, 2.209460984245205e+02,
                              -2.759285104469687e+02, 1.383577518672690e+02,
                              -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[5] = {-5.447609879822406e+01, 1.615858368580409e+02,
                              -1.556989798598866e+02, 6.680131188771972e+01,
                              -1.328068155288572e+01};
  static const double c[6] = {-7.784894002430293e-03, -3.223964580411365e-01,
                              -2.400758277161838e+00, -2.549732539343734e+00,
                              4.374664141464968e+00,  2.938163982698783e+00};
  static const double d[4] = {7.784695709041462e-03, 3.224671290700398e-01,
                              2.445134137142996e+00, 3.754408661907416e+00};
  const double lo = 0.02425;
  double q, r, x, e, u;

  if (!(p > 0 && p < 1))
    return NAN;
  if (p < lo) {
    q = sqrt(-2 * log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  } else if (p <= 1 - lo) {
    q = p - 0.5;
    r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) *
        q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  } else {
    q = sqrt(-2 * log1p(-p));
    x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  /* One step of Halley's method on Phi(x) - p, Phi from erfc. */
  e = 0.5 * erfc(-x / 1.41421356237309504880) - p;
  u = e * 2.50662827463100050242 * exp(x * x / 2);
  return x - u / (1 + x * u / 2);
}

double mg_decide_units_needed(double var_unit_t, double var_unit_c,
                              double share_t, double lift, double alpha,
                              double power) {
  double z;
  if (!isfinite(var_unit_t) || !isfinite(var_unit_c) || !(share_t > 0) ||
      !(share_t < 1) || !(lift > 0) || !(alpha > 0 && alpha < 1) ||
      !(power > 0 && power < 1))
    return NAN;
  z = mg_decide_norm_quantile(1 - alpha / 2) + mg_decide_norm_quantile(power);
  return z * z * (var_unit_t / share_t + var_unit_c / (1 - share_t)) /
         (lift * lift);
}

static enum mg_decide_status judge_limit(double lo, double hi, double limit) {
  if (isnan(limit))
    return MG_DECIDE_UNKNOWN;
  if (isnan(lo) || isnan(hi))
    return MG_DECIDE_UNKNOWN;
  if (lo > limit)
    return MG_DECIDE_BREACHED;
  if (hi <= limit)
    return MG_DECIDE_HOLDS;
  return MG_DECIDE_UNCLEAR;
}

static const char *status_name(enum mg_decide_status s) {
  switch (s) {
  case MG_DECIDE_HOLDS:
    return "holds";
  case MG_DECIDE_UNCLEAR:
    return "unclear";
  case MG_DECIDE_BREACHED:
    return "BREACHED";
  default:
    return "unknown (no data)";
  }
}

/* Append to the evidence, bounded. */
static void say(struct mg_decide_verdict *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void say(struct mg_decide_verdict *v, const char *fmt, ...) {
  size_t n = strlen(v->evidence);
  va_list ap;
  if (n + 1 >= sizeof(v->evidence))
    return;
  va_start(ap, fmt);
  vsnprintf(v->evidence + n, sizeof(v->evidence) - n, fmt, ap);
  va_end(ap);
}

void mg_decide_judge(const struct mg_decide *d, const struct mg_decide_input *in,
                     struct mg_decide_verdict *out) {
  const struct mg_decide_est *m = &in->metric;
  double sign = in->higher_is_better ? 1 : -1, level = 100 * (1 - d->alpha);
  bool breached = false, all_hold = true, better, worse, small = false;
  int k;

  memset(out, 0, sizeof(*out));
  out->units_needed = NAN;
  out->lift = out->lift_lo = out->lift_hi = NAN;
  if (m->known) {
    out->lift = sign * m->diff;
    out->lift_lo = sign > 0 ? m->diff_lo : -m->diff_hi;
    out->lift_hi = sign > 0 ? m->diff_hi : -m->diff_lo;
    say(out, "%s: lift %+.4g (%.0f%% CI %+.4g to %+.4g; %.4g vs %.4g), "
             "declared %+.4g. ",
        d->metric, out->lift, level, out->lift_lo, out->lift_hi, m->treatment,
        m->control, d->min_lift);
  } else {
    say(out, "%s: no estimate yet (no feedback in an arm, or no test). ",
        d->metric);
  }
  for (k = 0; k < MG_DECIDE_NGUARDS; k++) {
    const struct mg_decide_guard *g = &d->guard[k];
    const struct mg_decide_est *e = &in->guard[k];
    if (!g->set)
      continue;
    if (!isnan(g->max_increase)) {
      out->increase[k] = e->known ? judge_limit(e->diff_lo, e->diff_hi,
                                                g->max_increase)
                                  : MG_DECIDE_UNKNOWN;
      say(out, "%s increase %+.4g (CI %+.4g to %+.4g) <= %.4g: %s. ",
          mg_decide_guard_names[k], e->diff, e->diff_lo, e->diff_hi,
          g->max_increase, status_name(out->increase[k]));
      breached |= out->increase[k] == MG_DECIDE_BREACHED;
      all_hold &= out->increase[k] == MG_DECIDE_HOLDS;
    }
    if (!isnan(g->max_ratio)) {
      out->ratio[k] = e->known ? judge_limit(e->ratio_lo, e->ratio_hi,
                                             g->max_ratio)
                               : MG_DECIDE_UNKNOWN;
      say(out, "%s ratio %.4g (CI %.4g to %.4g) <= %.4g: %s. ",
          mg_decide_guard_names[k], e->ratio, e->ratio_lo, e->ratio_hi,
          g->max_ratio, status_name(out->ratio[k]));
      breached |= out->ratio[k] == MG_DECIDE_BREACHED;
      all_hold &= out->ratio[k] == MG_DECIDE_HOLDS;
    }
  }
  better = m->known && out->lift_lo > 0;
  worse = m->known && out->lift_hi < 0;
  if (worse || breached) {
    out->kind = MG_DECIDE_ROLL_BACK;
    out->label = "roll back";
    say(out, "%s", worse ? "The metric is significantly worse."
                         : "A guardrail is breached.");
    return;
  }
  if (better && out->lift_hi >= d->min_lift && all_hold) {
    out->kind = MG_DECIDE_SHIP;
    out->label = "ship";
    say(out, "Significantly better, the declared lift within reach, every "
             "guardrail holds.");
    return;
  }
  out->kind = MG_DECIDE_KEEP_TESTING;
  out->label = "keep testing";
  small = better && out->lift_hi < d->min_lift;
  if (small) {
    say(out, "Better, but significantly less than the declared lift: more "
             "units will not reach it.");
    return;
  }
  if (in->units_t > 0 && in->units_c > 0) {
    double n = in->units_t + in->units_c;
    double need = mg_decide_units_needed(in->var_unit_t, in->var_unit_c,
                                         in->units_t / n, d->min_lift,
                                         d->alpha, d->power);
    if (!isnan(need))
      out->units_needed = need > n ? ceil(need - n) : 0;
  }
  if (!isnan(out->units_needed))
    say(out, "About %.0f more units with %s are needed to detect %+.4g at "
             "%.0f%% power.",
        out->units_needed, d->metric, d->min_lift, 100 * d->power);
  else
    say(out, "The units still needed are unknown (no variance yet).");
  if (!all_hold)
    say(out, " Not every guardrail holds yet.");
}
