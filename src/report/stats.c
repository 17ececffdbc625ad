/* stats.c - tail probabilities, selection, and the delta method (stats.h).
 *
 * The incomplete gamma function is evaluated from its two classic
 * expansions (Abramowitz and Stegun 6.5.29 and 6.5.31):
 *
 *   P(a, x) = e^-x x^a / Gamma(a + 1) * sum_{n>=0} x^n / ((a+1)...(a+n))
 *   Q(a, x) = e^-x x^a / Gamma(a) *
 *             1 / (x + 1 - a - 1(1 - a) / (x + 3 - a - 2(2 - a) / (x + 5 - a - ...)))
 *
 * The series converges quickly for x < a + 1, the continued fraction for
 * x >= a + 1; each function takes the side that converges and subtracts
 * from 1 only when the result is far from 0, so tails keep their relative
 * precision (a p-value of 1e-30 is still printed as 1e-30, not 0). */
#include "report/stats.h"

#include <float.h>
#include <math.h>
#include <stddef.h>

/* M_SQRT2 is not ISO C. */
#define MG_SQRT2 1.41421356237309504880
#define GAMMA_EPS 1e-15
#define GAMMA_ITERS 10000
/* The smallest number Lentz's algorithm lets a denominator be, so that a
 * zero never divides. */
#define LENTZ_TINY (DBL_MIN / DBL_EPSILON)

double mg_stats_norm_cdf(double x) { return 0.5 * erfc(-x / MG_SQRT2); }

double mg_stats_norm_p2(double z) {
  if (isnan(z))
    return NAN;
  /* 2 (1 - Phi(|z|)) = erfc(|z| / sqrt 2), without cancelling in 1 - Phi. */
  return erfc(fabs(z) / MG_SQRT2);
}

/* e^-x x^a / Gamma(a), the factor both expansions share, in logs so large
 * a and x neither overflow nor underflow early. */
static double gamma_prefix(double a, double x) {
  return exp(-x + a * log(x) - lgamma(a));
}

/* P(a, x) by the series; meant for x < a + 1. */
static double gamma_series(double a, double x) {
  double ap = a, term = 1.0 / a, sum = term;
  int i;

  for (i = 0; i < GAMMA_ITERS; i++) {
    ap += 1.0;
    term *= x / ap;
    sum += term;
    if (fabs(term) < fabs(sum) * GAMMA_EPS)
      break;
  }
  /* 1/a * sum is the series over Gamma(a + 1) = a Gamma(a). */
  return sum * gamma_prefix(a, x);
}

/* Q(a, x) by the continued fraction, evaluated with the modified Lentz
 * method; meant for x >= a + 1. The fraction above is b0 + a1/(b1 + a2/
 * (b2 + ...)) with b_i = x + 2i + 1 - a and a_i = -i (i - a). */
static double gamma_fraction(double a, double x) {
  double b = x + 1.0 - a, c = 1.0 / LENTZ_TINY, d = 1.0 / b, h = d;
  int i;

  for (i = 1; i <= GAMMA_ITERS; i++) {
    double an = -i * (i - a), del;
    b += 2.0;
    d = an * d + b;
    if (fabs(d) < LENTZ_TINY)
      d = LENTZ_TINY;
    c = b + an / c;
    if (fabs(c) < LENTZ_TINY)
      c = LENTZ_TINY;
    d = 1.0 / d;
    del = d * c;
    h *= del;
    if (fabs(del - 1.0) < GAMMA_EPS)
      break;
  }
  return gamma_prefix(a, x) * h;
}

double mg_stats_gamma_p(double a, double x) {
  if (isnan(a) || isnan(x) || a <= 0 || x < 0)
    return NAN;
  if (x == 0)
    return 0.0;
  if (isinf(x))
    return 1.0;
  if (x < a + 1.0)
    return gamma_series(a, x);
  return 1.0 - gamma_fraction(a, x);
}

double mg_stats_gamma_q(double a, double x) {
  if (isnan(a) || isnan(x) || a <= 0 || x < 0)
    return NAN;
  if (x == 0)
    return 1.0;
  if (isinf(x))
    return 0.0;
  if (x < a + 1.0)
    return 1.0 - gamma_series(a, x);
  return gamma_fraction(a, x);
}

double mg_stats_chi2_sf(double x, double df) {
  if (isnan(x) || isnan(df) || df <= 0)
    return NAN;
  if (x <= 0)
    return 1.0;
  return mg_stats_gamma_q(df / 2.0, x / 2.0);
}

static inline void swap_d(double *v, ptrdiff_t i, ptrdiff_t j) {
  double t = v[i];
  v[i] = v[j];
  v[j] = t;
}

/* Put the k-th smallest value of v[0..n) at v[k], smaller or equal ones
 * before it and greater or equal ones after it (Hoare's FIND, with a
 * median-of-three pivot so sorted input stays linear). */
static void select_k(double *v, ptrdiff_t n, ptrdiff_t k) {
  ptrdiff_t lo = 0, hi = n - 1;

  while (hi > lo) {
    ptrdiff_t mid = lo + (hi - lo) / 2, i = lo, j = hi;
    double pivot;
    if (v[mid] < v[lo])
      swap_d(v, mid, lo);
    if (v[hi] < v[lo])
      swap_d(v, hi, lo);
    if (v[hi] < v[mid])
      swap_d(v, hi, mid);
    pivot = v[mid];
    /* v[lo] <= pivot <= v[hi] now, so both scans stop inside [lo, hi]. */
    while (i <= j) {
      while (v[i] < pivot)
        i++;
      while (v[j] > pivot)
        j--;
      if (i <= j) {
        swap_d(v, i, j);
        i++;
        j--;
      }
    }
    /* [lo, j] <= pivot, [i, hi] >= pivot, and anything between equals it. */
    if (k <= j)
      hi = j;
    else if (k >= i)
      lo = i;
    else
      return;
  }
}

double mg_stats_quantile(double *v, size_t n, double p) {
  double h, frac, a, b;
  size_t k, i;

  if (n == 0 || isnan(p))
    return NAN;
  if (p < 0)
    p = 0;
  if (p > 1)
    p = 1;
  h = (double)(n - 1) * p;
  k = (size_t)floor(h);
  if (k >= n - 1)
    k = n - 1;
  frac = h - (double)k;
  select_k(v, (ptrdiff_t)n, (ptrdiff_t)k);
  a = v[k];
  if (frac == 0 || k + 1 >= n)
    return a;
  /* The next order statistic is the smallest value after position k. */
  b = v[k + 1];
  for (i = k + 2; i < n; i++)
    if (v[i] < b)
      b = v[i];
  return a + frac * (b - a);
}

void mg_stats_quantiles(double *v, size_t n, const double *p, size_t k,
                        double *out) {
  size_t lo = 0, i, j;

  for (i = 0; i < k; i++) {
    double h, frac, a, b;
    size_t kk;
    if (n == 0 || isnan(p[i])) {
      out[i] = NAN;
      continue;
    }
    h = (double)(n - 1) * (p[i] < 0 ? 0 : p[i] > 1 ? 1 : p[i]);
    kk = (size_t)floor(h);
    if (kk >= n - 1)
      kk = n - 1;
    frac = h - (double)kk;
    /* Everything from lo on is >= everything before it, and v[lo] is the
     * lo-th order statistic: select within that part. */
    if (kk < lo)
      kk = lo;
    select_k(v + lo, (ptrdiff_t)(n - lo), (ptrdiff_t)(kk - lo));
    a = v[kk];
    if (frac > 0 && kk + 1 < n) {
      b = v[kk + 1];
      for (j = kk + 2; j < n; j++)
        if (v[j] < b)
          b = v[j];
      a += frac * (b - a);
    }
    out[i] = a;
    lo = kk;
  }
}

void mg_stats_ratio_init(struct mg_stats_ratio *r) {
  r->n = r->mx = r->my = r->m2x = r->m2y = r->cxy = 0;
}

void mg_stats_ratio_add(struct mg_stats_ratio *r, double x, double y) {
  double dx = x - r->mx, dy = y - r->my;
  r->n += 1.0;
  r->mx += dx / r->n;
  r->my += dy / r->n;
  /* Each product pairs a deviation from the old mean with one from the new
   * mean: the exact update of the sums of (cross) squared deviations. */
  r->m2x += dx * (x - r->mx);
  r->m2y += dy * (y - r->my);
  r->cxy += dx * (y - r->my);
}

double mg_stats_ratio_value(const struct mg_stats_ratio *r) {
  if (r->n == 0 || r->my == 0)
    return NAN;
  return r->mx / r->my;
}

double mg_stats_ratio_var(const struct mg_stats_ratio *r) {
  double R, sxx, syy, sxy, v;

  if (r->n < 2 || r->my == 0)
    return NAN;
  R = r->mx / r->my;
  sxx = r->m2x / (r->n - 1);
  syy = r->m2y / (r->n - 1);
  sxy = r->cxy / (r->n - 1);
  v = (sxx - 2 * R * sxy + R * R * syy) / (r->n * r->my * r->my);
  /* The bracket is the variance of x - R y: never negative but for
   * rounding. */
  return v < 0 ? 0 : v;
}

/* ---- Student's t ---------------------------------------------------------- */

/* The continued fraction of I_x(a, b) (A&S 26.5.8): 1 / (1 + d1 / (1 + d2 /
 * (1 + ...))) with d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1))
 * and d_{2m} = m (b - m) x / ((a + 2m - 1)(a + 2m)), by modified Lentz. */
static double beta_fraction(double a, double b, double x) {
  double c = 1.0, d = 1.0 - (a + b) * x / (a + 1.0), h;
  int m;

  if (fabs(d) < LENTZ_TINY)
    d = LENTZ_TINY;
  d = 1.0 / d;
  h = d;
  for (m = 1; m <= 100 * GAMMA_ITERS; m++) {
    double m2 = 2.0 * m, num, del;
    num = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2));
    d = 1.0 + num * d;
    if (fabs(d) < LENTZ_TINY)
      d = LENTZ_TINY;
    c = 1.0 + num / c;
    if (fabs(c) < LENTZ_TINY)
      c = LENTZ_TINY;
    d = 1.0 / d;
    h *= d * c;
    num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0));
    d = 1.0 + num * d;
    if (fabs(d) < LENTZ_TINY)
      d = LENTZ_TINY;
    c = 1.0 + num / c;
    if (fabs(c) < LENTZ_TINY)
      c = LENTZ_TINY;
    d = 1.0 / d;
    del = d * c;
    h *= del;
    if (fabs(del - 1.0) < GAMMA_EPS)
      break;
  }
  return h;
}

double mg_stats_beta_inc(double a, double b, double x) {
  double front;

  if (isnan(a) || isnan(b) || isnan(x) || a <= 0 || b <= 0 || x < 0 ||
      x > 1)
    return NAN;
  if (x == 0)
    return 0.0;
  if (x == 1)
    return 1.0;
  /* x^a (1 - x)^b / B(a, b), in logs; log1p keeps (1 - x) exact near 0. */
  front = exp(lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) +
              b * log1p(-x));
  if (x < (a + 1.0) / (a + b + 2.0))
    return front * beta_fraction(a, b, x) / a;
  return 1.0 - front * beta_fraction(b, a, 1.0 - x) / b;
}

double mg_stats_t_p2(double t, double df) {
  double x;

  if (isnan(t) || isnan(df) || df <= 0)
    return NAN;
  /* Past 10^7 degrees of freedom the t is the normal to far better than
   * the 1e-8 to which lgamma's large arguments keep the beta's prefactor
   * (the two differ by about t^4 / (4 df) relative). */
  if (df > 1e7)
    return mg_stats_norm_p2(t);
  if (isinf(t))
    return 0.0;
  /* I_x(df/2, 1/2) with x = df / (df + t^2): the beta takes the side of
   * its symmetry that keeps a small p's relative precision. */
  x = df / (df + t * t);
  return mg_stats_beta_inc(df / 2.0, 0.5, x);
}

double mg_stats_t_quantile2(double alpha, double df) {
  double lo = 0, hi = 1, mid;
  int i;

  if (isnan(alpha) || isnan(df) || alpha <= 0 || alpha >= 1 || df <= 0)
    return NAN;
  /* Past 10^7 df, mg_stats_t_p2 is the normal's: the same bisection
   * finds the normal quantile. */
  /* The p-value falls as q grows: double hi until it is past alpha. */
  while (mg_stats_t_p2(hi, df) > alpha && hi < 1e300)
    hi *= 2;
  for (i = 0; i < 200 && hi - lo > 1e-12 * hi; i++) {
    mid = 0.5 * (lo + hi);
    if (mg_stats_t_p2(mid, df) > alpha)
      lo = mid;
    else
      hi = mid;
  }
  return 0.5 * (lo + hi);
}

/* The 97.5% t quantile for many comparisons: the last df asked is cached
 * (a report asks the same few again and again). Not thread-safe; the
 * analysis runs on one thread. */
static double t975(double df) {
  static double last_df = -1, last_q = 0;
  if (df > 1e7)
    return MG_STATS_Z95;
  if (df != last_df) {
    last_q = mg_stats_t_quantile2(0.05, df);
    last_df = df;
  }
  return last_q;
}

/* A standard error below this share of the value is rounding, not
 * sampling (see mg_stats_ratio_compare). */
#define CONSTANT_REL 1e-9

static void diff_undefined(struct mg_stats_diff *out, const char *why) {
  out->se = out->df = out->lo = out->hi = out->z = out->p = NAN;
  out->undefined = why;
}

void mg_stats_ratio_compare(const struct mg_stats_ratio *treatment,
                            const struct mg_stats_ratio *control,
                            bool proportion, struct mg_stats_diff *out) {
  const struct mg_stats_ratio *arm[2] = {treatment, control};
  double v[2], r[2], req[2], n[2], se2, den;
  int k;

  r[0] = mg_stats_ratio_value(treatment);
  r[1] = mg_stats_ratio_value(control);
  out->diff = r[0] - r[1];
  out->rel = !isnan(r[1]) && r[1] != 0 ? out->diff / r[1] : NAN;
  out->undefined = NULL;
  if (isnan(r[0]) || isnan(r[1])) {
    diff_undefined(out, treatment->n < 2 || control->n < 2 ? "too few units"
                                                           : "no data");
    return;
  }
  if (treatment->n < 2 || control->n < 2) {
    diff_undefined(out, "too few units");
    return;
  }
  for (k = 0; k < 2; k++) {
    v[k] = mg_stats_ratio_var(arm[k]);
    n[k] = arm[k]->n;
    req[k] = arm[k]->n * arm[k]->my;
    /* Sums of a value that is the same in every unit (0.9 stored as a
     * float, summed in doubles) leave a variance of rounding noise, some
     * 1e-17 of the value: that is a constant arm, not a precise one. */
    if (sqrt(v[k]) <= CONSTANT_REL * fabs(r[k]))
      v[k] = 0;
  }
  if (v[0] == 0 && v[1] == 0 &&
      fabs(out->diff) <= CONSTANT_REL * fmax(fabs(r[0]), fabs(r[1])))
    out->diff = 0;
  if (proportion) {
    double rp = (r[0] * req[0] + r[1] * req[1]) / (req[0] + req[1]);
    double deff[2];
    if (!(rp > 0)) {
      diff_undefined(out, "no events");
      return;
    }
    if (!(rp < 1)) {
      diff_undefined(out, "no variance: every request is an event");
      return;
    }
    /* Each arm's design effect: its delta-method variance against the
     * binomial variance of as many independent requests. */
    for (k = 0; k < 2; k++) {
      double bin = r[k] * (1 - r[k]) / req[k];
      deff[k] = v[k] > 0 && bin > 0 ? v[k] / bin : 1.0;
      if (deff[k] < 1)
        deff[k] = 1.0;
    }
    for (k = 0; k < 2; k++)
      if (!(v[k] > 0))
        v[k] = rp * (1 - rp) / req[k] * (v[1 - k] > 0 ? deff[1 - k] : 1.0);
  } else if (!(v[0] > 0) && !(v[1] > 0)) {
    diff_undefined(out, "no variance");
    return;
  }
  se2 = v[0] + v[1];
  out->se = sqrt(se2);
  den = v[0] * v[0] / (n[0] - 1) + v[1] * v[1] / (n[1] - 1);
  out->df = se2 * se2 / den;
  out->z = out->diff / out->se;
  out->p = mg_stats_t_p2(out->z, out->df);
  out->lo = out->diff - t975(out->df) * out->se;
  out->hi = out->diff + t975(out->df) * out->se;
}

/* ---- Fisher's exact test ------------------------------------------------ */

/* log P(X = x) for the hypergeometric count in the first cell: row sums
 * r1, r2, first column sum c1, total n = r1 + r2. */
static double hyper_log(double x, double r1, double r2, double c1) {
  return lgamma(r1 + 1) - lgamma(x + 1) - lgamma(r1 - x + 1) + lgamma(r2 + 1) -
         lgamma(c1 - x + 1) - lgamma(r2 - c1 + x + 1) - lgamma(r1 + r2 + 1) +
         lgamma(c1 + 1) + lgamma(r1 + r2 - c1 + 1);
}

double mg_stats_fisher2x2(double a, double b, double c, double d) {
  double r1 = a + b, r2 = c + d, c1 = a + c, c2 = b + d;
  double lo, hi, x, lp0, sum = 0;

  if (!(r1 > 0) || !(r2 > 0) || !(c1 > 0) || !(c2 > 0))
    return NAN;
  lo = c1 - r2 > 0 ? c1 - r2 : 0;
  hi = c1 < r1 ? c1 : r1;
  lp0 = hyper_log(a, r1, r2, c1);
  for (x = lo; x <= hi; x += 1) {
    double lp = hyper_log(x, r1, r2, c1);
    if (lp <= lp0 + 1e-7)
      sum += exp(lp);
  }
  return sum > 1 ? 1.0 : sum;
}

int mg_stats_chi2_gof(const double *obs, const double *prop, size_t k,
                      double *chi2, double *df, double *p) {
  double total = 0, x = 0;
  size_t i, cells = 0;
  bool impossible = false;

  for (i = 0; i < k; i++)
    total += obs[i];
  if (total <= 0)
    return -1;
  for (i = 0; i < k; i++) {
    if (prop[i] <= 0) {
      /* A count where none is expected (a variant at weight 0 that still
       * got units) cannot come from the weights at all. */
      if (obs[i] > 0)
        impossible = true;
      continue;
    }
    cells++;
    x += (obs[i] - total * prop[i]) * (obs[i] - total * prop[i]) /
         (total * prop[i]);
  }
  if (cells < 2 && !impossible)
    return -1;
  *df = cells > 1 ? (double)(cells - 1) : 1.0;
  *chi2 = impossible ? INFINITY : x;
  *p = impossible ? 0.0 : mg_stats_chi2_sf(x, *df);
  return 0;
}

int mg_stats_chi2_indep(const double *t, size_t r, size_t c, double *chi2,
                        double *df, double *p) {
  double total = 0, x = 0, rs, cs;
  size_t i, j, rows = 0, cols = 0;

  for (i = 0; i < r; i++) {
    rs = 0;
    for (j = 0; j < c; j++)
      rs += t[i * c + j];
    total += rs;
    rows += rs > 0;
  }
  for (j = 0; j < c; j++) {
    cs = 0;
    for (i = 0; i < r; i++)
      cs += t[i * c + j];
    cols += cs > 0;
  }
  if (rows < 2 || cols < 2)
    return -1;
  for (i = 0; i < r; i++) {
    rs = 0;
    for (j = 0; j < c; j++)
      rs += t[i * c + j];
    if (rs <= 0)
      continue;
    for (j = 0; j < c; j++) {
      double e;
      size_t m;
      cs = 0;
      for (m = 0; m < r; m++)
        cs += t[m * c + j];
      if (cs <= 0)
        continue;
      e = rs * cs / total;
      x += (t[i * c + j] - e) * (t[i * c + j] - e) / e;
    }
  }
  *df = (double)((rows - 1) * (cols - 1));
  *chi2 = x;
  *p = mg_stats_chi2_sf(x, *df);
  return 0;
}
