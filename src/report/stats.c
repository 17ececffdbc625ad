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

void mg_stats_ratio_compare(const struct mg_stats_ratio *treatment,
                            const struct mg_stats_ratio *control,
                            struct mg_stats_diff *out) {
  double vt = mg_stats_ratio_var(treatment), vc = mg_stats_ratio_var(control);
  double rt = mg_stats_ratio_value(treatment);
  double rc = mg_stats_ratio_value(control);

  if (isnan(vt) || isnan(vc) || isnan(rt) || isnan(rc)) {
    out->diff = out->se = out->lo = out->hi = out->z = out->p = out->rel = NAN;
    return;
  }
  out->diff = rt - rc;
  out->se = sqrt(vt + vc);
  out->lo = out->diff - MG_STATS_Z95 * out->se;
  out->hi = out->diff + MG_STATS_Z95 * out->se;
  out->rel = rc != 0 ? out->diff / rc : NAN;
  if (out->se > 0) {
    out->z = out->diff / out->se;
    out->p = mg_stats_norm_p2(out->z);
  } else {
    /* Every unit of both arms has the same value: no sampling noise. */
    out->z = out->diff == 0 ? 0 : copysign(INFINITY, out->diff);
    out->p = out->diff == 0 ? 1.0 : 0.0;
  }
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
