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
  return a;
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

/* The variance of sum(y)/sum(s) when its true value is R: for 0/1 values
 * the Bernoulli variance R (1 - R) / n (the score test's), else the delta
 * method's sum((y - R s)^2) / (sum s)^2 around the null value. Rounding
 * can take the sum of squares a hair below zero: clamp. */
static double arm_var(const struct mg_seq_arm *a, double R, bool bin) {
  double ss;
  if (bin)
    return R > 0 && R < 1 ? R * (1 - R) / a->n : 0;
  ss = a->sq - 2 * R * a->cross + R * R * a->den_sq;
  if (ss < 0)
    ss = 0;
  return ss / (a->den * a->den);
}

void mg_seq_ratio(const struct mg_seq_arm *t, const struct mg_seq_arm *c,
                  double k, int dir, double detect_ratio, double alpha,
                  struct mg_seq_result *out) {
  double rt, rc, r0, v, est;
  bool bin;
  result_init(out, alpha);
  if (!(t->n >= 2 && c->n >= 2 && t->den > 0 && c->den > 0 && k > 0))
    return;
  rt = t->sum / t->den;
  rc = c->sum / c->den;
  /* Against a control with none, report the ratio to a control with one
   * (the log and the event need a finite number). */
  out->observed = rc > 0 ? rt / rc : rt * c->den;
  r0 = (t->sum / k + c->sum) / (t->den + c->den);
  bin = binary(t) && binary(c);
  /* A null that lets the treatment fail every time cannot be exceeded. */
  if (bin && dir > 0 && k * r0 >= 1)
    return;
  v = arm_var(t, k * r0, bin) + k * k * arm_var(c, r0, bin);
  est = dir * (rt - k * rc);
  finish(out, est, v, (detect_ratio - 1) * k * fabs(r0));
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
  finish(out, (mt - mc) - log(k), vt / t->n + vc / c->n, log(detect_ratio));
}

void mg_seq_level(const struct mg_seq_arm *t, double thr, int dir,
                  double detect_ratio, double alpha,
                  struct mg_seq_result *out) {
  double m, v, scale;
  result_init(out, alpha);
  if (!(t->n >= 2))
    return;
  m = t->sum / t->n;
  out->observed = m;
  v = arm_var(t, thr, binary(t));
  scale = thr != 0 ? fabs(thr) : 1;
  finish(out, dir * (m - thr), v,
         (dir > 0 ? detect_ratio - 1 : 1 - 1 / detect_ratio) * scale);
}
