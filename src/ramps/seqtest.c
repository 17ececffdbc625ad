/* seqtest.c - always-valid sequential tests (formulas in seqtest.h). */
#include "ramps/seqtest.h"

#include <math.h>
#include <string.h>

struct mg_seq_arm mg_seq_arm_mean(double n, double sum, double sq) {
  struct mg_seq_arm a;
  a.n = n;
  a.sum = sum;
  a.sq = sq;
  a.den = n;
  a.den_sq = n;
  a.cross = sum;
  a.design = 1;
  return a;
}

double mg_seq_design_effect(const struct mg_seq_arm *a, const double *y,
                            const double *s, unsigned nb) {
  double R, cl = 0, iid;
  unsigned b, g = 0;
  if (!(a->den > 0))
    return 1;
  R = a->sum / a->den;
  for (b = 0; b < nb; b++) {
    double d = y[b] - R * s[b];
    if (s[b] == 0 && y[b] == 0)
      continue;
    g++;
    cl += d * d;
  }
  /* No buckets at all: the caller keeps none (legacy sums); treat the
   * observations as independent. */
  if (g == 0)
    return 1;
  if (g < MG_SEQ_MIN_CLUSTERS)
    return INFINITY;
  cl *= (double)g / (g - 1);
  iid = a->sq - 2 * R * a->cross + R * R * a->den_sq;
  if (!(iid > 0))
    return 1;
  return cl / iid > 1 ? cl / iid : 1;
}

/* An arm's design effect as a variance factor. */
static double design(const struct mg_seq_arm *a) {
  return a->design > 1 ? a->design : 1;
}

/* log Phi(x), finite for every x: the direct form until erfc underflows,
 * then the first term of the Mills-ratio expansion. */
static double log_phi_cdf(double x) {
  double p = 0.5 * erfc(-x / sqrt(2.0));
  if (p > 1e-300)
    return log(p);
  return -0.5 * x * x - log(-x) - 0.9189385332046727 /* log sqrt(2 pi) */;
}

/* log Lambda for one mixing scale. */
static double log_lr_one(double z, double v, double tau) {
  double r = tau * tau / v;
  return log(2.0) - 0.5 * log1p(r) + r * z * z / (2 * (1 + r)) +
         log_phi_cdf(z * sqrt(r / (1 + r)));
}

double mg_seq_log_lr(double estimate, double v, double tau) {
  double z = estimate / sqrt(v), l[MG_SEQ_SCALES], top, sum = 0;
  int j;
  for (j = 0; j < MG_SEQ_SCALES; j++)
    l[j] = log_lr_one(z, v, tau * pow(MG_SEQ_SCALE_STEP, j));
  top = l[0];
  for (j = 1; j < MG_SEQ_SCALES; j++)
    if (l[j] > top)
      top = l[j];
  /* log of the mean of exp(l[j]), without overflow */
  for (j = 0; j < MG_SEQ_SCALES; j++)
    sum += exp(l[j] - top);
  return top + log(sum / MG_SEQ_SCALES);
}

static void result_init(struct mg_seq_result *out, double alpha) {
  memset(out, 0, sizeof(*out));
  out->boundary = log(1.0 / alpha);
}

/* Fill the rest once estimate, V and tau are known. */
static void finish(struct mg_seq_result *out, double estimate, double v,
                   double tau) {
  if (!(v > 0) || !isfinite(v) || !(tau > 0) || !isfinite(tau) ||
      !isfinite(estimate))
    return;
  out->defined = true;
  out->estimate = estimate;
  out->se = sqrt(v);
  out->z = estimate / out->se;
  out->tau = tau;
  out->log_lr = mg_seq_log_lr(estimate, v, tau);
  out->reject = out->log_lr >= out->boundary;
}

/* 0/1 values (errors, boolean feedback): a mean (s = 1) whose values all
 * satisfy y^2 = y. Sums of 0s and 1s are exact in a double, so the test
 * is exact; a float metric with any value strictly between 0 and 1 has
 * sq < sum. */
static bool binary(const struct mg_seq_arm *a) {
  return a->den == a->n && a->den_sq == a->n && a->cross == a->sum &&
         a->sq == a->sum;
}

/* The variance of sum(y)/sum(s) when its true value is R, by the delta
 * method: sum((y - R s)^2) / (sum s)^2 around the null value. Rounding can
 * take the sum of squares a hair below zero: clamp. */
static double arm_var(const struct mg_seq_arm *a, double R) {
  double ss = a->sq - 2 * R * a->cross + R * R * a->den_sq;
  if (ss < 0)
    ss = 0;
  return ss / (a->den * a->den);
}

/* Under the null, an arm with mean R among n 0/1 values expects
 * MG_SEQ_MIN_EVENTS events and as many non-events. */
static bool enough_events(double R, double n) {
  return R * n >= MG_SEQ_MIN_EVENTS && (1 - R) * n >= MG_SEQ_MIN_EVENTS;
}

void mg_seq_ratio(const struct mg_seq_arm *t, const struct mg_seq_arm *c,
                  double k, int dir, double detect_ratio, double alpha,
                  struct mg_seq_result *out) {
  double rt, rc, r0, rc_tau;
  result_init(out, alpha);
  if (!(t->n >= 2 && c->n >= 2 && t->den > 0 && c->den > 0 && k > 0))
    return;
  rt = t->sum / t->den;
  rc = c->sum / c->den;
  /* Against a control with none, report the ratio to a control with one
   * (the log and the event need a finite number). */
  out->observed = rc > 0 ? rt / rc : rt * c->den;
  r0 = (t->sum / k + c->sum) / (t->den + c->den);
  /* tau from the control alone: a scale that grew with the treatment's
   * own excursions would tune the test to them after the fact. A control
   * with none counts as half an event. */
  rc_tau = rc > 0 ? fabs(rc) : 0.5 / c->den;
  if (binary(t) && binary(c)) {
    /* 0/1 values on the square-root scale, where the variance no longer
     * depends on the rate ((1 - R) / 4n) and a count's right skew is
     * mostly gone: sqrt(R_t) <= sqrt(k R_c) is the same null. */
    double vt = (1 - k * r0) / (4 * t->n) * design(t);
    double vc = k * (1 - r0) / (4 * c->n) * design(c);
    if (!enough_events(k * r0, t->n) || !enough_events(r0, c->n))
      return;
    finish(out, dir * (sqrt(rt) - sqrt(k * rc)), vt + vc,
           (sqrt(detect_ratio) - 1) * sqrt(k * rc_tau));
    return;
  }
  finish(out, dir * (rt - k * rc),
         arm_var(t, k * r0) * design(t) + k * k * arm_var(c, r0) * design(c),
         (detect_ratio - 1) * k * rc_tau);
}

void mg_seq_shift(const struct mg_seq_arm *t, const struct mg_seq_arm *c,
                  double k, double detect_ratio, double alpha,
                  struct mg_seq_result *out) {
  double mt, mc, vt, vc;
  result_init(out, alpha);
  if (!(t->n >= 2 && c->n >= 2 && k > 0))
    return;
  mt = t->sum / t->n;
  mc = c->sum / c->n;
  out->observed = exp(mt - mc);
  vt = (t->sq - t->sum * mt) / (t->n - 1);
  vc = (c->sq - c->sum * mc) / (c->n - 1);
  if (vt < 0)
    vt = 0;
  if (vc < 0)
    vc = 0;
  finish(out, (mt - mc) - log(k),
         vt / t->n * design(t) + vc / c->n * design(c), log(detect_ratio));
}

void mg_seq_level(const struct mg_seq_arm *t, double thr, int dir,
                  double detect_ratio, double alpha,
                  struct mg_seq_result *out) {
  double m, scale;
  result_init(out, alpha);
  if (!(t->n >= 2))
    return;
  m = t->sum / t->n;
  out->observed = m;
  if (binary(t)) {
    double d = sqrt(detect_ratio);
    if (!(thr > 0 && thr < 1) || !enough_events(thr, t->n))
      return;
    finish(out, dir * (sqrt(m) - sqrt(thr)),
           (1 - thr) / (4 * t->n) * design(t),
           (dir > 0 ? d - 1 : 1 - 1 / d) * sqrt(thr));
    return;
  }
  scale = thr != 0 ? fabs(thr) : 1;
  finish(out, dir * (m - thr), arm_var(t, thr) * design(t),
         (dir > 0 ? detect_ratio - 1 : 1 - 1 / detect_ratio) * scale);
}
