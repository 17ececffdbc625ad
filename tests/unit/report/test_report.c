/* test_report.c - the pieces of `modelgate report`: the statistics against
 * values computed independently (closed forms, published tables, a
 * hand-worked delta-method example), the reader on awkward lines, and the
 * analysis on small logs with known answers. The real binary on large
 * generated logs is tests/integration/test_report.c. */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/buf.h"
#include "decisions/record.h"
#include "report/analysis.h"
#include "report/reader.h"
#include "report/render.h"
#include "report/stats.h"

/* |a - b| <= tol * max(1, |b|)... relative for large values, absolute for
 * small ones; for tail probabilities use rel(). */
static void near(double a, double b, double tol) {
  if (!(fabs(a - b) <= tol * fmax(1.0, fabs(b))))
    fail_msg("%.17g is not within %g of %.17g", a, tol, b);
}

static void rel(double a, double b, double tol) {
  if (!(fabs(a - b) <= tol * fabs(b)))
    fail_msg("%.17g is not within a relative %g of %.17g", a, tol, b);
}

/* ---- normal ------------------------------------------------------------- */

static void test_norm(void **state) {
  (void)state;
  near(mg_stats_norm_cdf(0), 0.5, 1e-15);
  /* 0.5 erfc(1/sqrt 2) and 0.5 erfc(-3/sqrt 2), from Python's math.erfc. */
  near(mg_stats_norm_cdf(-1), 0.15865525393145707, 1e-15);
  near(mg_stats_norm_cdf(3), 0.9986501019683699, 1e-15);
  near(mg_stats_norm_cdf(MG_STATS_Z95), 0.975, 1e-12);
  near(mg_stats_norm_p2(MG_STATS_Z95), 0.05, 1e-12);
  near(mg_stats_norm_p2(-MG_STATS_Z95), 0.05, 1e-12);
  near(mg_stats_norm_p2(0), 1.0, 1e-15);
  /* 2.5758293035489 is the 99.5% quantile. */
  near(mg_stats_norm_p2(2.5758293035489004), 0.01, 1e-12);
  /* The far tail keeps its relative precision (no 1 - Phi cancellation):
   * P(|Z| > 10) = erfc(10 / sqrt 2) = 1.5239706048321186e-23 (Python). */
  rel(mg_stats_norm_p2(10), 1.5239706048321186e-23, 1e-10);
  assert_true(isnan(mg_stats_norm_p2(NAN)));
}

/* ---- chi-square --------------------------------------------------------- */

static void test_chi2_table(void **state) {
  /* Critical values from the standard chi-square table (NIST/SEMATECH
   * e-Handbook 1.3.6.7.4), checked against the closed forms below. */
  static const struct {
    double x, df, p;
  } t[] = {
      {3.841458820694124, 1, 0.05},   {6.634896601021214, 1, 0.01},
      {10.827566170662733, 1, 0.001}, {5.991464547107979, 2, 0.05},
      {7.814727903251178, 3, 0.05},   {18.307038053275146, 10, 0.05},
      {43.77297182574219, 30, 0.05},  {124.3421134, 100, 0.05},
  };
  size_t i;
  (void)state;
  for (i = 0; i < sizeof(t) / sizeof(t[0]); i++)
    rel(mg_stats_chi2_sf(t[i].x, t[i].df), t[i].p, 1e-7);
  /* The rounded textbook triple the report's alarms rest on. */
  near(mg_stats_chi2_sf(3.841, 1), 0.05, 2e-5);
  near(mg_stats_chi2_sf(6.635, 1), 0.01, 2e-6);
  near(mg_stats_chi2_sf(10.828, 1), 0.001, 5e-7);
}

static void test_chi2_closed_forms(void **state) {
  /* Independent closed forms (Abramowitz and Stegun 26.4.4, 26.4.5),
   * evaluated in Python with math.erfc / math.exp:
   *   df = 1: erfc(sqrt(x/2));  df = 2: exp(-x/2);
   *   df even: exp(-x/2) sum_{k<df/2} (x/2)^k / k!
   *   df odd: erfc(sqrt(x/2)) + exp(-x/2) sum_{k=1}^{(df-1)/2}
   *           (x/2)^(k-1/2) / Gamma(k+1/2) */
  double x;
  (void)state;
  for (x = 0.01; x < 60; x *= 1.7) {
    rel(mg_stats_chi2_sf(x, 1), erfc(sqrt(x / 2)), 1e-10);
    rel(mg_stats_chi2_sf(x, 2), exp(-x / 2), 1e-10);
    rel(mg_stats_chi2_sf(x, 4), exp(-x / 2) * (1 + x / 2), 1e-10);
  }
  rel(mg_stats_chi2_sf(0.5, 3), 0.9188914116546758, 1e-10);
  rel(mg_stats_chi2_sf(50, 4), 3.610865404890645e-10, 1e-9);
  rel(mg_stats_chi2_sf(200, 5), 2.8406228986415315e-41, 1e-8);
  near(mg_stats_chi2_sf(0, 3), 1.0, 0);
  near(mg_stats_chi2_sf(-1, 3), 1.0, 0);
  near(mg_stats_chi2_sf(INFINITY, 3), 0.0, 0);
}

static void test_gamma(void **state) {
  double a, x;
  (void)state;
  /* P(1, x) = 1 - e^-x; P + Q = 1 on both sides of the switch at a + 1. */
  for (x = 0.05; x < 30; x *= 1.9)
    near(mg_stats_gamma_p(1, x), 1 - exp(-x), 1e-13);
  for (a = 0.3; a < 200; a *= 2.3)
    for (x = 0.1; x < 400; x *= 2.1)
      near(mg_stats_gamma_p(a, x) + mg_stats_gamma_q(a, x), 1.0, 1e-12);
  assert_true(isnan(mg_stats_gamma_p(-1, 1)));
  assert_true(isnan(mg_stats_gamma_q(1, -1)));
}

static void test_chi2_tests(void **state) {
  double obs[3] = {90, 110, 0}, prop[3] = {0.5, 0.5, 0};
  double t[4] = {10, 20, 30, 40};
  double chi2, df, p;
  (void)state;
  /* (90-100)^2/100 + (110-100)^2/100 = 2, df 1: p = erfc(1). */
  assert_int_equal(mg_stats_chi2_gof(obs, prop, 3, &chi2, &df, &p), 0);
  near(chi2, 2.0, 1e-12);
  near(df, 1, 0);
  rel(p, 0.15729920705028513, 1e-10);
  /* Units in a variant at weight 0: impossible under the weights. */
  obs[2] = 5;
  assert_int_equal(mg_stats_chi2_gof(obs, prop, 3, &chi2, &df, &p), 0);
  assert_true(isinf(chi2));
  near(p, 0, 0);
  /* [[10,20],[30,40]]: expected [[12,18],[28,42]], chi2 = 0.79365..., df 1
   * (Python, from the margins). */
  assert_int_equal(mg_stats_chi2_indep(t, 2, 2, &chi2, &df, &p), 0);
  near(chi2, 0.7936507936507936, 1e-12);
  rel(p, 0.37299848361348714, 1e-9);
  /* A single non-empty column has no degrees of freedom. */
  t[1] = t[3] = 0;
  assert_int_equal(mg_stats_chi2_indep(t, 2, 2, &chi2, &df, &p), -1);
}

/* ---- quantiles ---------------------------------------------------------- */

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Type 7 by sorting: the reference the selection must agree with. */
static double quantile_sorted(const double *s, size_t n, double p) {
  double h = (double)(n - 1) * p;
  size_t k = (size_t)floor(h);
  if (k + 1 >= n)
    return s[n - 1];
  return s[k] + (h - (double)k) * (s[k + 1] - s[k]);
}

static void test_quantile(void **state) {
  static const double probs[] = {0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1};
  double v[4] = {4, 1, 3, 2}, *a, *b, *c;
  uint64_t s = 42;
  size_t n, i, k;
  (void)state;
  /* numpy.percentile([1,2,3,4], [25, 50, 100]) = 1.75, 2.5, 4. */
  near(mg_stats_quantile(v, 4, 0.25), 1.75, 1e-15);
  near(mg_stats_quantile(v, 4, 0.5), 2.5, 1e-15);
  near(mg_stats_quantile(v, 4, 1), 4, 0);
  near(mg_stats_quantile(v, 1, 0.7), v[0], 0);
  assert_true(isnan(mg_stats_quantile(v, 0, 0.5)));
  /* Random, sorted, reversed and heavily tied inputs. */
  for (n = 1; n < 5000; n = n * 3 + 1) {
    a = malloc(n * sizeof(double));
    b = malloc(n * sizeof(double));
    c = malloc(n * sizeof(double));
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    for (k = 0; k < 4; k++) {
      for (i = 0; i < n; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        a[i] = k == 0   ? (double)(s >> 11)
               : k == 1 ? (double)i
               : k == 2 ? (double)(n - i)
                        : (double)((s >> 33) % 3);
      }
      memcpy(b, a, n * sizeof(double));
      qsort(b, n, sizeof(double), cmp_d);
      for (i = 0; i < sizeof(probs) / sizeof(probs[0]); i++) {
        memcpy(c, a, n * sizeof(double));
        near(mg_stats_quantile(c, n, probs[i]),
             quantile_sorted(b, n, probs[i]), 1e-12);
      }
    }
    free(a);
    free(b);
    free(c);
  }
}

/* ---- the delta method --------------------------------------------------- */

static void test_delta_method(void **state) {
  /* Per-unit (errors, requests). By hand:
   *   treatment (0,1) (1,3) (2,4) (0,2): R = 3/10; xbar .75, ybar 2.5;
   *     s_x^2 = 2.75/3 = 11/12, s_y^2 = 5/3, s_xy = 3.5/3 = 7/6;
   *     Var = (11/12 - 2(.3)(7/6) + .09(5/3)) / (4 * 6.25) = 11/750
   *   control (0,2) (1,2) (0,1) (0,3) (1,2): R = 2/10; xbar .4, ybar 2;
   *     s_x^2 = .3, s_y^2 = .5, s_xy = 0;
   *     Var = (.3 + .04 * .5) / (5 * 4) = .016
   *   diff .1, se sqrt(11/750 + .016) = 0.17511900715418263,
   *   t 0.5710402407201608 (checked with Python's fractions);
   *   Welch-Satterthwaite df = (Vt + Vc)^2 / (Vt^2/3 + Vc^2/4)
   *     = 6.930131004366812 (fractions);
   *   p = P(|T_6.93| >= 0.571) = 0.5860047178551213 and t(0.975, 6.93) =
   *   2.369465630762753, so the CI is [-0.3149384687451324,
   *   0.5149384687451324]: Simpson's rule on the t density (200,000
   *   intervals, Python's math.lgamma), and bisection on it.
   * Compared as a plain ratio (not a proportion) so that the variances are
   * the delta method's own. */
  static const double t[][2] = {{0, 1}, {1, 3}, {2, 4}, {0, 2}};
  static const double c[][2] = {{0, 2}, {1, 2}, {0, 1}, {0, 3}, {1, 2}};
  struct mg_stats_ratio rt, rc;
  struct mg_stats_diff d;
  size_t i;
  (void)state;

  mg_stats_ratio_init(&rt);
  mg_stats_ratio_init(&rc);
  for (i = 0; i < 4; i++)
    mg_stats_ratio_add(&rt, t[i][0], t[i][1]);
  for (i = 0; i < 5; i++)
    mg_stats_ratio_add(&rc, c[i][0], c[i][1]);
  near(mg_stats_ratio_value(&rt), 0.3, 1e-15);
  near(mg_stats_ratio_value(&rc), 0.2, 1e-15);
  near(mg_stats_ratio_var(&rt), 11.0 / 750.0, 1e-15);
  near(mg_stats_ratio_var(&rc), 0.016, 1e-15);
  mg_stats_ratio_compare(&rt, &rc, false, &d);
  assert_null(d.undefined);
  near(d.diff, 0.1, 1e-15);
  near(d.se, 0.17511900715418263, 1e-14);
  near(d.z, 0.5710402407201608, 1e-13);
  near(d.df, 6.930131004366812, 1e-12);
  near(d.p, 0.5860047178551213, 1e-10);
  near(d.lo, -0.3149384687451324, 1e-9);
  near(d.hi, 0.5149384687451324, 1e-9);
  near(d.rel, 0.5, 1e-14);

  /* One unit: no variance, so no test, and it says why. */
  mg_stats_ratio_init(&rt);
  mg_stats_ratio_add(&rt, 1, 2);
  assert_true(isnan(mg_stats_ratio_var(&rt)));
  mg_stats_ratio_compare(&rt, &rc, false, &d);
  assert_true(isnan(d.p));
  assert_string_equal(d.undefined, "too few units");
  near(d.diff, 0.3, 1e-15);
}

/* Zero variance is not significance (issue 11.2). */
static void test_zero_variance(void **state) {
  struct mg_stats_ratio rt, rc;
  struct mg_stats_diff d;
  static const double conf[4] = {0.8, 0.9, 1.0, 0.7};
  size_t i;
  (void)state;

  /* Constant confidence in both arms, equal or not: no test at all. */
  mg_stats_ratio_init(&rt);
  mg_stats_ratio_init(&rc);
  for (i = 0; i < 50; i++) {
    mg_stats_ratio_add(&rt, 0.92 * 3, 3);
    mg_stats_ratio_add(&rc, 0.80, 1);
  }
  mg_stats_ratio_compare(&rt, &rc, false, &d);
  assert_string_equal(d.undefined, "no variance");
  assert_true(isnan(d.p));
  assert_true(isnan(d.lo));
  near(d.diff, 0.12, 1e-12);

  /* One arm constant (0.9 from a header, 5 units), the other not (four
   * units at 0.8, 0.9, 1.0, 0.7): Welch's df is the varying arm's n - 1 =
   * 3, t = (0.85 - 0.9) / sqrt(0.05/3/4) = -0.7745966692414823, and the
   * closed form for 3 df (A&S 26.7.3), p = 1 - (2/pi)(th + sin th cos th)
   * with th = atan(|t|/sqrt 3), gives 0.4950253460597115 (Python). */
  mg_stats_ratio_init(&rt);
  mg_stats_ratio_init(&rc);
  for (i = 0; i < 4; i++)
    mg_stats_ratio_add(&rt, conf[i], 1);
  for (i = 0; i < 5; i++)
    mg_stats_ratio_add(&rc, 0.9, 1);
  mg_stats_ratio_compare(&rt, &rc, false, &d);
  assert_null(d.undefined);
  near(d.df, 3, 1e-12);
  near(d.z, -0.7745966692414823, 1e-12);
  near(d.p, 0.4950253460597115, 1e-12);

  /* No events in either arm: "no events", never p = 1 or 0. */
  mg_stats_ratio_init(&rt);
  mg_stats_ratio_init(&rc);
  for (i = 0; i < 40; i++) {
    mg_stats_ratio_add(&rt, 0, 1 + i % 3);
    mg_stats_ratio_add(&rc, 0, 2);
  }
  mg_stats_ratio_compare(&rt, &rc, true, &d);
  assert_string_equal(d.undefined, "no events");
  near(d.diff, 0, 0);
  /* Every request an event on both sides. */
  mg_stats_ratio_init(&rt);
  mg_stats_ratio_init(&rc);
  for (i = 0; i < 40; i++) {
    mg_stats_ratio_add(&rt, 2, 2);
    mg_stats_ratio_add(&rc, 1, 1);
  }
  mg_stats_ratio_compare(&rt, &rc, true, &d);
  assert_non_null(strstr(d.undefined, "no variance"));

  /* A rate with no events in one arm: the control's 0 of 90 requests (30
   * units of 3) gets the binomial variance at the pooled rate, not 0.
   * By hand (Python fractions): treatment 3 errors in 90 requests, one
   * each in 3 units of 30: Vt = s_x^2 / (n ybar^2) = (2.7/29) / 270 =
   * 3.448275862068965e-4; its binomial variance (1/30)(29/30)/90 =
   * 3.580246913580247e-4, a design effect of 0.963, floored at 1; pooled
   * rate 3/180, so Vc = (1/60)(59/60)/90 = 1.8209876543209876e-4;
   * se = 0.022954876423953916, t = 1.4521242771121725, Welch df =
   * 52.9499606744699, p = 0.15236715199015405 (Simpson on the t density).
   * Treating the control's variance as 0 would have given t = 1.795. */
  mg_stats_ratio_init(&rt);
  mg_stats_ratio_init(&rc);
  for (i = 0; i < 30; i++) {
    mg_stats_ratio_add(&rt, i < 3, 3);
    mg_stats_ratio_add(&rc, 0, 3);
  }
  mg_stats_ratio_compare(&rt, &rc, true, &d);
  assert_null(d.undefined);
  near(d.se, 0.022954876423953916, 1e-14);
  near(d.z, 1.4521242771121725, 1e-12);
  near(d.df, 52.9499606744699, 1e-9);
  near(d.p, 0.15236715199015405, 1e-10);
}

static void test_student_t(void **state) {
  /* Closed forms (Abramowitz and Stegun 26.7.3, 26.7.4), worked in Python:
   *   df 1: p = 1 - (2/pi) atan|t|;  df 2: p = 1 - |t| / sqrt(2 + t^2);
   *   df 3: p = 1 - (2/pi)(th + sin th cos th), th = atan(|t|/sqrt 3);
   *   df 4: p = 1 - sin th (1 + cos^2 th / 2), th = atan(|t|/2).
   * Non-integer df: Simpson's rule on the density (tests/ comment above). */
  static const struct {
    double t, df, p;
  } v[] = {
      {2.0, 1, 0.2951672353008665},     {2.0, 2, 0.18350341907227385},
      {2.0, 3, 0.13932596855884305},    {5.0, 3, 0.015392438073302261},
      {2.0, 4, 0.11611652351681567},    {3.0, 2.5, 0.07257609554903137},
      {4.2, 7.3, 0.003675057001648907}, {2.5, 30, 0.018115649068066352},
      {3.0, 1000, 0.002766709044238369},
      /* far tails keep their relative precision */
      {13.7, 1000, 2.8095264320545004e-39}, {5.0, 30000, 5.765316686507711e-07},
  };
  size_t i;
  (void)state;
  for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
    rel(mg_stats_t_p2(v[i].t, v[i].df), v[i].p, 1e-9);
    rel(mg_stats_t_p2(-v[i].t, v[i].df), v[i].p, 1e-9);
  }
  near(mg_stats_t_p2(0, 5), 1, 1e-15);
  /* A large df is the normal: erfc(3 / sqrt 2) = 0.0026997960632601866. */
  rel(mg_stats_t_p2(3, 1e12), 0.0026997960632601866, 1e-12);
  /* Just below the switch the beta is still used, and the t's heavier
   * tail still shows (Simpson on the density: 0.0026998034323375587 at
   * 9e6 df, 0.0027004608840092404 at 1e5). */
  rel(mg_stats_t_p2(3, 9e6), 0.0026998034323375587, 1e-8);
  rel(mg_stats_t_p2(3, 1e5), 0.0027004608840092404, 1e-9);
  rel(mg_stats_t_p2(3, INFINITY), 0.0026997960632601866, 1e-12);
  /* Quantiles: tan(0.95 pi/2) = 12.706204736174696 (df 1), and for df 2
   * t = sqrt(2 * 0.9025 / 0.0975) = 4.302652729749464. */
  near(mg_stats_t_quantile2(0.05, 1), 12.706204736174696, 1e-9);
  near(mg_stats_t_quantile2(0.05, 2), 4.302652729749464, 1e-9);
  near(mg_stats_t_quantile2(0.05, INFINITY), MG_STATS_Z95, 1e-9);
  /* The incomplete beta: I_x(1, b) = 1 - (1-x)^b, I_x(a, 1) = x^a. */
  near(mg_stats_beta_inc(1, 3.5, 0.3), 1 - pow(0.7, 3.5), 1e-14);
  near(mg_stats_beta_inc(2.5, 1, 0.6), pow(0.6, 2.5), 1e-14);
  assert_true(isnan(mg_stats_t_p2(1, 0)));
}

static void test_fisher(void **state) {
  /* Hypergeometric sums by hand in Python (math.comb), with R's 1e-7
   * tolerance for ties: Fisher's tea tasting [[3,1],[1,3]] = 17/35;
   * [[1,9],[11,3]] = 0.002759456185220083 (the textbook example, R's
   * fisher.test prints 0.002759); a perfect split [[10,0],[0,10]] =
   * 2 / C(20,10) = 1.082508822446903e-05; [[2,7],[8,2]] =
   * 0.023014137565221155. */
  (void)state;
  near(mg_stats_fisher2x2(3, 1, 1, 3), 17.0 / 35.0, 1e-12);
  rel(mg_stats_fisher2x2(1, 9, 11, 3), 0.002759456185220083, 1e-9);
  rel(mg_stats_fisher2x2(10, 0, 0, 10), 1.082508822446903e-05, 1e-9);
  rel(mg_stats_fisher2x2(2, 7, 8, 2), 0.023014137565221155, 1e-9);
  near(mg_stats_fisher2x2(0, 5, 7, 200), 1.0, 1e-12);
  assert_true(isnan(mg_stats_fisher2x2(0, 0, 3, 4)));
}

/* With one request per unit, the delta method is the classic two-
 * proportion z-test with unpooled variances p(1-p)/(n-1)... exactly:
 * Var(R) = s_x^2 / n where s_x^2 = n p (1 - p) / (n - 1). */
static void test_delta_single_requests(void **state) {
  struct mg_stats_ratio r;
  const int n = 1000, k = 37;
  double p = (double)k / n;
  int i;
  (void)state;
  mg_stats_ratio_init(&r);
  for (i = 0; i < n; i++)
    mg_stats_ratio_add(&r, i < k, 1);
  near(mg_stats_ratio_value(&r), p, 1e-15);
  near(mg_stats_ratio_var(&r), p * (1 - p) / (n - 1), 1e-15);
}

/* ---- reader ------------------------------------------------------------- */

#define REC(flag, unit, variant, reason, extra)                               \
  "{\"ts\":\"2026-11-21T13:00:00.000Z\",\"flag\":" flag ",\"unit\":" unit    \
  ",\"unit_kind\":\"user\",\"variant\":" variant ",\"reason\":" reason       \
  ",\"weights\":{\"control\":90,\"treatment\":10},\"input\":{\"chars\":100," \
  "\"messages\":1,\"tools\":0,\"stream\":false},\"attempts\":[],\"tier\":"   \
  "\"primary\",\"fallback_reason\":null,\"confidence\":0.9,\"status\":200,"  \
  "\"error\":false,\"ms\":100.5,\"tokens\":{\"prompt\":10,\"completion\":5}" \
  extra "}"

static void test_reader_lines(void **state) {
  static const char log[] =
      REC("\"f\"", "\"u1\"", "\"control\"", "\"rollout\"", "") "\n"
      REC("\"f\"", "\"u1\"", "\"control\"", "\"rollout\"", "") "\r\n"
      "\n"
      "   \n"
      "not json\n"
      "[1,2]\n"
      "{\"ts\":\"x\",\"event\":\"kill\",\"flag\":\"f\"}\n"
      "{\"ts\":\"x\",\"event\":\"kill\",\"flag\":\"f\"}\n"
      "{\"ts\":\"x\",\"event\":\"reload\"}\n"
      "{\"hello\":1}\n"
      REC("null", "null", "null", "null", "") "\n"
      REC("\"f\"", "null", "\"treatment\"", "\"rollout\"", "") "\n"
      REC("\"f\"", "\"u2\"", "\"control\"", "\"killed\"", "") "\n"
      REC("\"f\"", "\"u2\"", "\"control\"", "\"rollout\"",
          ",\"ms\":\"slow\"") "\n" /* duplicate key: the first wins */
      "{\"flag\":\"f\",\"variant\":\"control\",\"reason\":\"rollout\","
      "\"ms\":\"slow\"}\n"
      "{\"flag\":\"f\",\"variant\":\"control\",\"reason\":\"rollout\","
      "\"ms\":5,\"error\":\"yes\"}\n"
      "{\"flag\":\"f\",\"variant\":7,\"reason\":\"rollout\",\"ms\":5}\n"
      /* Escapes in names decode; the last line has no newline. */
      "{\"flag\":\"f\\u0032\",\"variant\":\"c\\\"q\",\"reason\":\"rollout\","
      "\"ms\":1e3,\"unit\":\"u9\"}";
  struct mg_rp_log lg;
  const struct mg_rp_flag *f, *f2;
  size_t i;
  (void)state;

  mg_rp_log_init(&lg);
  assert_int_equal(mg_rp_read_mem(&lg, log, sizeof(log) - 1, "mem"), 0);
  assert_int_equal(lg.lines, 18);
  assert_int_equal(lg.blank, 2);
  assert_int_equal(lg.event_lines, 3);
  assert_int_equal(lg.malformed, 6);
  assert_int_equal(lg.unflagged, 1);
  assert_int_equal(lg.records, 7);
  assert_int_equal(lg.nbad, 6);
  assert_string_equal(lg.bad[0].why, "not valid JSON");
  assert_int_equal(lg.bad[0].line, 5);
  assert_string_equal(lg.bad[1].why, "not a JSON object");
  assert_string_equal(lg.bad[2].why, "neither a decision record nor an event");
  assert_int_equal(lg.bad[2].line, 10);
  assert_string_equal(lg.bad[3].file, "mem");
  assert_int_equal(lg.nevents, 2);
  assert_string_equal(lg.events[0].name, "kill");
  assert_string_equal(lg.events[0].flag, "f");
  assert_int_equal(lg.events[0].n, 2);

  f = mg_rp_log_flag(&lg, "f");
  assert_non_null(f);
  assert_int_equal(f->records, 5);
  assert_int_equal(f->nrows, 4);
  assert_int_equal(f->narms, 2);
  assert_string_equal(f->arms[0].name, "control");
  assert_int_equal(f->arms[0].rollout, 3);
  assert_int_equal(f->arms[0].off, 1);
  assert_int_equal(f->arms[1].rollout, 1);
  assert_int_equal(f->nwsets, 1);
  assert_int_equal(f->wsets[0].bp[0], 9000);
  assert_int_equal(f->wsets[0].records, 4);
  assert_string_equal(f->wsets[0].first_ts, "2026-11-21T13:00:00.000Z");
  /* Units: u1 (two requests) and u2 in control; the treatment request had
   * no unit, so it has no aggregate. */
  assert_int_equal(lg.nunits, 3);
  for (i = 0; i < lg.nunits; i++)
    if (lg.units[i].flag == f->index && lg.units[i].requests == 2)
      break;
  assert_true(i < lg.nunits);
  near(lg.units[i].ms_sum, 201.0, 1e-9);
  assert_int_equal(lg.units[i].tok_prompt, 20);
  assert_int_equal(f->rows[2].unit, MG_RP_NONE);

  f2 = mg_rp_log_flag(&lg, "f2");
  assert_non_null(f2);
  assert_string_equal(f2->arms[0].name, "c\"q");
  near(f2->rows[0].ms, 1000, 0);
  mg_rp_log_free(&lg);
}

static void test_reader_bits(void **state) {
  static const char log[] =
      /* error, fallback via tier, low confidence via an attempt */
      "{\"flag\":\"f\",\"variant\":\"a\",\"reason\":\"rollout\",\"ms\":1,"
      "\"error\":true,\"tier\":\"cache\",\"attempts\":[{\"outcome\":\"ok\"},"
      "{\"outcome\":\"low_confidence\"}],\"confidence\":null}\n"
      /* fallback via fallback_reason, low confidence by it too */
      "{\"flag\":\"f\",\"variant\":\"a\",\"reason\":\"rollout\",\"ms\":1,"
      "\"tier\":\"none\",\"fallback_reason\":\"low_confidence\","
      "\"confidence\":0.25,\"tokens\":null}\n"
      /* no "error": derived from the status (499 is the client's own) */
      "{\"flag\":\"f\",\"variant\":\"a\",\"reason\":\"rollout\",\"ms\":1,"
      "\"status\":502}\n"
      "{\"flag\":\"f\",\"variant\":\"a\",\"reason\":\"rollout\",\"ms\":1,"
      "\"status\":499,\"input\":{\"chars\":70000,\"tools\":900}}\n";
  struct mg_rp_log lg;
  const struct mg_rp_flag *f;
  (void)state;

  mg_rp_log_init(&lg);
  assert_int_equal(mg_rp_read_mem(&lg, log, sizeof(log) - 1, "mem"), 0);
  assert_int_equal(lg.malformed, 0);
  f = mg_rp_log_flag(&lg, "f");
  assert_int_equal(f->nrows, 4);
  assert_int_equal(f->rows[0].bits, MG_RP_ERR | MG_RP_FB | MG_RP_LC);
  assert_int_equal(f->rows[1].bits, MG_RP_FB | MG_RP_LC | MG_RP_CONF);
  near(f->rows[1].confidence, 0.25, 0);
  assert_int_equal(f->rows[2].bits, MG_RP_ERR);
  assert_int_equal(f->rows[3].bits, 0);
  assert_int_equal(f->rows[3].chars, 70000);
  assert_int_equal(f->rows[3].tools, 255);
  assert_int_equal(f->rows[0].wset, MG_RP_NO_WSET);
  mg_rp_log_free(&lg);
}

/* Lines from the proxy's own writer (decisions/record.c) read back as
 * they were meant. */
static void test_reader_real_records(void **state) {
  static const struct mg_record_weight w1[] = {{"control", 9000},
                                               {"treatment", 1000}};
  static const struct mg_record_weight w2[] = {{"control", 8750},
                                               {"treatment", 1250}};
  static const struct mg_record_attempt at[] = {
      {"primary", "low_confidence", 200, 1500, 0.41, true},
      {"secondary", "ok", 200, 200, 0.93, true}};
  struct mg_record r;
  struct mg_rp_log lg;
  struct mg_buf b;
  const struct mg_rp_flag *f;
  (void)state;

  mg_buf_init(&b, SIZE_MAX);
  mg_record_init(&r);
  r.ts_ms = 1795266000123; /* 2026-11-21T13:00:00.123Z */
  r.id = "0123456789abcdef0123456789abcdef";
  r.config = "00c0ffee00c0ffee";
  r.endpoint = "chat";
  r.alias = "gpt-4o";
  r.flag = "chat";
  r.unit = "00ff00ff00ff00ff";
  r.unit_len = 16;
  r.unit_kind = "user";
  r.bucket = 417;
  r.variant = "treatment";
  r.reason = "rollout";
  r.weights = w1;
  r.nweights = 2;
  r.input_chars = 812;
  r.input_messages = 3;
  r.input_tools = 3;
  r.attempts = at;
  r.nattempts = 2;
  r.served_by = "secondary";
  r.tier = "fallback";
  r.fallback_reason = "low_confidence";
  r.confidence = 0.93;
  r.has_confidence = true;
  r.cache = "miss";
  r.status = 200;
  r.ms = 1712.5;
  r.ttfb_ms = 1700;
  r.overhead_us = 38;
  r.tokens_prompt = 31;
  r.tokens_completion = 12;
  assert_int_equal(mg_record_format(&r, &b), 0);
  assert_int_equal(mg_buf_puts(&b, "\n"), 0);
  /* A request unit that failed: no unit, no confidence, no tokens. */
  r.unit = NULL;
  r.unit_len = 0;
  r.unit_kind = "request";
  r.bucket = -1;
  r.variant = "control";
  r.weights = w2;
  r.attempts = NULL;
  r.nattempts = 0;
  r.served_by = NULL;
  r.tier = "none";
  r.fallback_reason = NULL;
  r.has_confidence = false;
  r.status = 502;
  r.error = true;
  r.ms = 30000;
  r.ttfb_ms = -1;
  r.tokens_prompt = r.tokens_completion = -1;
  assert_int_equal(mg_record_format(&r, &b), 0);
  assert_int_equal(mg_buf_puts(&b, "\n"), 0);
  assert_int_equal(mg_record_event_begin(&b, r.ts_ms, "kill"), 0);
  assert_int_equal(mg_buf_puts(&b, ",\"flag\":\"chat\"}\n"), 0);

  mg_rp_log_init(&lg);
  assert_int_equal(mg_rp_read_mem(&lg, b.data, b.len, "real"), 0);
  if (lg.malformed)
    fail_msg("%s: %s", lg.bad[0].why, b.data);
  assert_int_equal(lg.records, 2);
  assert_int_equal(lg.event_lines, 1);
  f = mg_rp_log_flag(&lg, "chat");
  assert_non_null(f);
  assert_int_equal(f->nrows, 2);
  assert_int_equal(f->rows[0].bits, MG_RP_FB | MG_RP_LC | MG_RP_CONF |
                                        MG_RP_TOK);
  assert_int_equal(f->rows[0].chars, 812);
  assert_int_equal(f->rows[0].tools, 3);
  near(f->rows[0].ms, 1712.5, 0);
  near(f->rows[0].confidence, 0.93, 1e-6);
  assert_int_equal(f->rows[0].tok_prompt, 31);
  assert_int_equal(f->rows[0].tok_completion, 12);
  assert_int_not_equal(f->rows[0].unit, MG_RP_NONE);
  assert_int_equal(f->rows[1].bits, MG_RP_ERR);
  assert_int_equal(f->rows[1].unit, MG_RP_NONE);
  assert_int_equal(f->nwsets, 2);
  assert_int_equal(f->wsets[0].bp[0] + f->wsets[0].bp[1], 10000);
  /* Arms are numbered as first seen: "treatment" (the first record's
   * variant) is 0, and weight sets are sorted by arm. */
  assert_string_equal(f->arms[f->wsets[1].arm[0]].name, "treatment");
  assert_int_equal(f->wsets[1].bp[0], 1250);
  assert_string_equal(f->wsets[0].first_ts, "2026-11-21T13:00:00.123Z");
  mg_rp_log_free(&lg);
  mg_buf_free(&b);
}

/* ---- analysis on small generated logs ----------------------------------- */

struct rng {
  uint64_t s;
};

static double unif(struct rng *r) {
  r->s = r->s * 6364136223846793005ULL + 1442695040888963407ULL;
  return (double)(r->s >> 11) * (1.0 / 9007199254740992.0);
}

/* units users, each with 1-4 requests, treatment share t, error rates. */
/* With gen_later non-NULL, a third of the records get an "accuracy"
 * feedback line, half right after them, half in gen_later (to be appended
 * at the end: feedback long after its decision). */
static struct mg_buf *gen_later;

static void gen(struct mg_buf *b, const char *flag, int units, double t,
                double err_c, double err_t, const char *extra_weights,
                uint64_t seed) {
  struct rng r = {seed};
  int u, k, n;
  for (u = 0; u < units; u++) {
    bool treat = unif(&r) < t;
    n = 1 + (int)(unif(&r) * 4);
    for (k = 0; k < n; k++) {
      bool e = unif(&r) < (treat ? err_t : err_c);
      uint64_t id = r.s;
      assert_int_equal(
          mg_buf_printf(b,
                        "{\"flag\":\"%s\",\"id\":\"%016" PRIx64 "%016" PRIx64
                        "\",\"unit\":\"%s-%d\",\"variant\":"
                        "\"%s\",\"reason\":\"rollout\",\"weights\":%s,"
                        "\"input\":{\"chars\":%d,\"tools\":%d},"
                        "\"error\":%s,\"ms\":%.1f,\"cost\":%.5f}\n",
                        flag, id, seed, flag, u, treat ? "b" : "a",
                        extra_weights ? extra_weights
                                      : "{\"a\":50,\"b\":50}",
                        (int)(unif(&r) * 1000), (int)(unif(&r) * 5),
                        e ? "true" : "false", 100 + unif(&r) * 50,
                        unif(&r) / 100),
          0);
      if (gen_later && unif(&r) < 1.0 / 3)
        assert_int_equal(
            mg_buf_printf(unif(&r) < 0.5 ? b : gen_later,
                          "{\"ts\":\"2026-12-02T10:00:00.000Z\",\"feedback\":"
                          "{\"decision_id\":\"%016" PRIx64 "%016" PRIx64 "\","
                          "\"metric\":\"accuracy\",\"value\":%s}}\n",
                          id, seed, unif(&r) < 0.8 ? "true" : "false"),
            0);
    }
  }
}

static void lines_fit(const char *text, size_t width);

static void analyse(const char *text, size_t len,
                    const struct mg_rp_options *opt, struct mg_rp_log *lg,
                    struct mg_rp_report *r) {
  mg_rp_log_init(lg);
  assert_int_equal(mg_rp_read_mem(lg, text, len, "gen"), 0);
  assert_int_equal(mg_rp_analyze(lg, opt, r), 0);
}

static void test_analysis_aa(void **state) {
  struct mg_rp_options opt = {0};
  struct mg_rp_report r;
  struct mg_rp_log lg;
  struct mg_buf b, out;
  const struct mg_rp_flag_report *fr;
  (void)state;

  mg_buf_init(&b, SIZE_MAX);
  mg_buf_init(&out, SIZE_MAX);
  gen(&b, "f", 4000, 0.5, 0.05, 0.05, NULL, 7);
  analyse(b.data, b.len, &opt, &lg, &r);
  assert_int_equal(r.nalarms, 0);
  fr = &r.flags[0];
  /* No off-variant records, no variant named "control", equal weights:
   * the first variant seen with the largest weight. */
  assert_string_equal(fr->control_source,
                      "the variant with the largest logged weight");
  assert_true(fr->srm_tested);
  assert_false(fr->srm_alarm);
  assert_true(fr->bal_tested);
  assert_int_equal(fr->v[0].units + fr->v[1].units, 4000);
  assert_true(fr->v[1].has_cmp);
  assert_true(fr->v[1].cmp[MG_RP_M_ERROR].p > 0.001);
  assert_int_equal(fr->ncells, 7);
  /* Every renderer runs on it. */
  assert_int_equal(mg_rp_render_text(&r, &out), 0);
  assert_non_null(strstr(out.data, "ALARMS: none"));
  lines_fit(out.data, 100);
  mg_buf_reset(&out);
  assert_int_equal(mg_rp_render_json(&r, &out), 0);
  mg_buf_reset(&out);
  assert_int_equal(mg_rp_render_html(&r, &out), 0);
  assert_non_null(strstr(out.data, "class=\"chart rates\""));
  mg_rp_report_free(&r);
  mg_rp_log_free(&lg);

  /* --control picks the other arm; an unknown --flag is -ENOENT. */
  opt.control = "b";
  analyse(b.data, b.len, &opt, &lg, &r);
  assert_string_equal(r.flags[0].v[r.flags[0].control].name, "b");
  assert_string_equal(r.flags[0].control_source, "--control");
  mg_rp_report_free(&r);
  mg_rp_log_free(&lg);
  /* The -c config's off_variant outranks what the log suggests (here the
   * first arm with the largest weight, "a"), and --control outranks it. */
  {
    struct mg_rp_decide_rule fc = {0};
    fc.flag = "f";
    fc.off_variant = "b";
    opt.control = NULL;
    opt.rules = &fc;
    opt.nrules = 1;
    analyse(b.data, b.len, &opt, &lg, &r);
    assert_string_equal(r.flags[0].v[r.flags[0].control].name, "b");
    assert_string_equal(r.flags[0].control_source,
                        "the off_variant of the -c config");
    assert_null(r.flags[0].decide); /* no decide rule: none borrowed */
    mg_rp_report_free(&r);
    mg_rp_log_free(&lg);
    opt.control = "a";
    analyse(b.data, b.len, &opt, &lg, &r);
    assert_string_equal(r.flags[0].v[r.flags[0].control].name, "a");
    mg_rp_report_free(&r);
    opt.rules = NULL;
    opt.nrules = 0;
  }
  opt.control = NULL;
  opt.flag = "nope";
  assert_int_equal(mg_rp_analyze(&lg, &opt, &r), -ENOENT);
  mg_rp_report_free(&r);
  mg_rp_log_free(&lg);
  mg_buf_free(&b);
  mg_buf_free(&out);
}

static void test_analysis_srm_and_effect(void **state) {
  struct mg_rp_options opt = {0};
  struct mg_rp_report r;
  struct mg_rp_log lg;
  struct mg_buf b;
  const struct mg_rp_flag_report *fr;
  (void)state;

  /* 40% of units in the treatment against logged 50/50; treatment errs
   * three times as often. */
  mg_buf_init(&b, SIZE_MAX);
  gen(&b, "f", 6000, 0.4, 0.02, 0.06, NULL, 11);
  analyse(b.data, b.len, &opt, &lg, &r);
  fr = &r.flags[0];
  assert_true(fr->srm_alarm);
  assert_true(fr->srm_p < 1e-20);
  assert_true(r.nalarms >= 1);
  assert_string_equal(r.alarms[0].check, "srm");
  assert_true(fr->v[1].cmp[MG_RP_M_ERROR].diff > 0.03);
  assert_true(fr->v[1].cmp[MG_RP_M_ERROR].p < 1e-10);
  mg_rp_report_free(&r);
  mg_rp_log_free(&lg);
  mg_buf_free(&b);
}

static void test_analysis_control_choice(void **state) {
  static const char log[] =
      "{\"flag\":\"f\",\"unit\":\"1\",\"variant\":\"new\",\"reason\":"
      "\"rollout\",\"weights\":{\"old\":20,\"new\":80},\"ms\":1}\n"
      "{\"flag\":\"f\",\"unit\":\"2\",\"variant\":\"old\",\"reason\":"
      "\"rollout\",\"weights\":{\"old\":20,\"new\":80},\"ms\":1}\n"
      "{\"flag\":\"g\",\"unit\":\"1\",\"variant\":\"new\",\"reason\":"
      "\"rollout\",\"ms\":1}\n"
      "{\"flag\":\"g\",\"unit\":\"2\",\"variant\":\"control\",\"reason\":"
      "\"rollout\",\"ms\":1}\n"
      "{\"flag\":\"h\",\"unit\":\"1\",\"variant\":\"x\",\"reason\":"
      "\"rollout\",\"ms\":1}\n"
      "{\"flag\":\"h\",\"unit\":\"1\",\"variant\":\"y\",\"reason\":"
      "\"default\",\"ms\":1}\n";
  struct mg_rp_options opt = {0};
  struct mg_rp_report r;
  struct mg_rp_log lg;
  (void)state;

  analyse(log, sizeof(log) - 1, &opt, &lg, &r);
  /* f: largest weight; g: the variant named control; h: the off_variant
   * that a "default" record names. */
  assert_string_equal(r.flags[0].v[r.flags[0].control].name, "new");
  assert_string_equal(r.flags[1].v[r.flags[1].control].name, "control");
  assert_string_equal(r.flags[2].v[r.flags[2].control].name, "y");
  assert_non_null(strstr(r.flags[2].control_source, "off_variant"));
  mg_rp_report_free(&r);
  mg_rp_log_free(&lg);
}

/* A large file parsed on several threads gives the very report one thread
 * gives: same counts, same line numbers in the examples, same figures. */
static void test_parallel_read_matches(void **state) {
  struct mg_rp_options opt = {0};
  struct mg_rp_report r1, r3;
  struct mg_rp_log l1, l3;
  struct mg_buf b, o1, o3;
  char path[] = "/tmp/mg-test-report-XXXXXX";
  int fd;
  (void)state;

  mg_buf_init(&b, SIZE_MAX);
  mg_buf_init(&o1, SIZE_MAX);
  mg_buf_init(&o3, SIZE_MAX);
  /* Past the 16 MiB below which one thread reads, with malformed lines
   * and an event in every part, and feedback both right after its
   * decision and at the very end (joined across the parts). */
  {
    struct mg_buf later;
    mg_buf_init(&later, SIZE_MAX);
    gen_later = &later;
    while (b.len < (24u << 20)) {
      gen(&b, "f", 3000, 0.5, 0.05, 0.06, NULL, b.len + 1);
      gen(&b, "g", 1000, 0.2, 0.05, 0.05, "{\"a\":80,\"b\":20}",
          b.len + 7);
      assert_int_equal(mg_buf_puts(&b, "torn {\"flag\n"
                                        "{\"event\":\"kill\",\"flag\":\"f\"}\n"),
                       0);
    }
    gen_later = NULL;
    assert_int_equal(mg_buf_append(&b, later.data, later.len), 0);
    mg_buf_free(&later);
  }
  fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, b.data, b.len), (ssize_t)b.len);

  mg_rp_log_init(&l1);
  mg_rp_log_init(&l3);
  l3.threads = 3;
  assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
  assert_int_equal(mg_rp_read_fd(&l1, fd, "big"), 0);
  assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
  assert_int_equal(mg_rp_read_fd(&l3, fd, "big"), 0);
  close(fd);
  unlink(path);
  assert_int_equal(l1.lines, l3.lines);
  assert_int_equal(l1.malformed, l3.malformed);
  assert_true(l1.malformed > 8);
  assert_int_equal(l1.nbad, l3.nbad);
  assert_int_equal(l1.bad[MG_RP_MAX_BAD - 1].line,
                   l3.bad[MG_RP_MAX_BAD - 1].line);
  assert_int_equal(l1.nunits, l3.nunits);
  assert_int_equal(l1.nfb, l3.nfb);
  assert_int_equal(l1.nids, l3.nids);
  assert_true(l1.nfb > 10000);
  assert_int_equal(mg_rp_analyze(&l1, &opt, &r1), 0);
  assert_int_equal(mg_rp_analyze(&l3, &opt, &r3), 0);
  assert_int_equal(mg_rp_render_json(&r1, &o1), 0);
  assert_int_equal(mg_rp_render_json(&r3, &o3), 0);
  assert_int_equal(o1.len, o3.len);
  assert_memory_equal(o1.data, o3.data, o1.len);
  /* Every feedback line found its decision, whichever part held each. */
  assert_int_equal(l3.fb_matched, l3.nfb);
  assert_int_equal(l3.fb_orphans, 0);
  mg_rp_report_free(&r1);
  mg_rp_report_free(&r3);
  mg_rp_log_free(&l1);
  mg_rp_log_free(&l3);
  mg_buf_free(&b);
  mg_buf_free(&o1);
  mg_buf_free(&o3);
}

/* Every line of the text at most 100 columns. */
static void lines_fit(const char *text, size_t width) {
  const char *s = text, *nl;
  while ((nl = strchr(s, '\n')) != NULL) {
    if ((size_t)(nl - s) > width)
      fail_msg("a line of %zu columns: %.*s", (size_t)(nl - s), (int)(nl - s),
               s);
    s = nl + 1;
  }
}

/* Issue 11.2's case: a constant confidence in each arm (0.92 against
 * 0.80) and no fallbacks in the control. The report must show the
 * differences, say that the tests are undefined, and raise no alarm; the
 * HTML chart must show the fallback difference as an absolute one and say
 * why; the text must fit 100 columns. */
static void test_constant_arms(void **state) {
  struct mg_rp_options opt = {0};
  struct mg_rp_report r;
  struct mg_rp_log lg;
  struct mg_buf b, out;
  const struct mg_rp_flag_report *fr;
  const struct mg_rp_variant *t;
  uint32_t c;
  int i;
  (void)state;

  mg_buf_init(&b, SIZE_MAX);
  mg_buf_init(&out, SIZE_MAX);
  for (i = 0; i < 4000; i++) {
    bool treat = i % 2;
    assert_int_equal(
        mg_buf_printf(&b,
                      "{\"flag\":\"f\",\"unit\":\"u%d\",\"variant\":\"%s\","
                      "\"reason\":\"rollout\",\"weights\":{\"control\":50,"
                      "\"treatment\":50},\"input\":{\"chars\":%d,\"tools\":%d},"
                      "\"confidence\":%s,\"tier\":\"%s\",\"error\":false,"
                      "\"ms\":%d}\n",
                      i / 3, treat ? "treatment" : "control", 100 + i % 997,
                      i % 5, treat ? "0.92" : "0.8",
                      treat && i % 7 == 1 ? "fallback" : "primary",
                      100 + i % 13),
        0);
  }
  analyse(b.data, b.len, &opt, &lg, &r);
  fr = &r.flags[0];
  t = &fr->v[fr->control == 0 ? 1 : 0];
  assert_true(t->has_cmp);
  near(t->cmp[MG_RP_M_CONFIDENCE].diff, 0.12, 1e-6);
  assert_string_equal(t->cmp[MG_RP_M_CONFIDENCE].undefined, "no variance");
  assert_true(isnan(t->cmp[MG_RP_M_CONFIDENCE].p));
  /* Errors: none anywhere. */
  assert_string_equal(t->cmp[MG_RP_M_ERROR].undefined, "no events");
  /* Fallbacks only in the treatment: a real test (pooled variance). */
  assert_null(t->cmp[MG_RP_M_FALLBACK].undefined);
  assert_true(t->cmp[MG_RP_M_FALLBACK].p < 1e-6);
  for (c = 0; c < fr->ncells; c++) {
    const struct mg_rp_cell_arm *ca = &fr->cells[c].arms[t - fr->v];
    assert_true(ca->has_cmp);
    assert_string_equal(ca->cmp[MG_RP_M_CONFIDENCE].undefined, "no variance");
    assert_false(ca->flagged[MG_RP_M_CONFIDENCE]);
  }
  /* Worse confidence would be the control's; the treatment's fallbacks
   * are worse and may alarm, but never the constant confidence. */
  for (c = 0; c < r.nalarms; c++)
    assert_true(r.alarms[c].metric == NULL ||
                strcmp(r.alarms[c].metric, "mean_confidence") != 0);
  assert_int_equal(mg_rp_render_text(&r, &out), 0);
  assert_non_null(strstr(out.data, "no test: no variance"));
  lines_fit(out.data, 100);
  mg_buf_reset(&out);
  assert_int_equal(mg_rp_render_json(&r, &out), 0);
  assert_non_null(strstr(out.data, "\"undefined\":\"no variance\""));
  mg_buf_reset(&out);
  assert_int_equal(mg_rp_render_html(&r, &out), 0);
  assert_non_null(strstr(out.data, "class=\"absolute\""));
  assert_non_null(strstr(out.data, "the control's rate is 0, so no "
                                   "relative difference"));
  mg_rp_report_free(&r);
  mg_rp_log_free(&lg);
  mg_buf_free(&b);
  mg_buf_free(&out);
}

/* Co-assignment over a 2 x 2 table known in advance, against values
 * worked by hand (Python): 1,000 units in both flags; 30 in both
 * treatments, 70 only in a's, 20 only in b's, 880 in neither. Odds ratio
 * 30 x 880 / (70 x 20) = 18.857142857142858, phi 0.3823595564509363,
 * X^2 = n phi^2 = 146.19883040935673 (every expected count >= 5: the
 * smallest is 100 x 50 / 1000 = 5), p = erfc(sqrt(X^2/2)) =
 * 1.1745568608837685e-33, Woolf's interval exp(ln OR -/+ 1.96 sqrt(1/30 +
 * 1/70 + 1/20 + 1/880)) = [10.185506382371216, 34.911552100162844]. */
static void test_coassignment_table(void **state) {
  struct mg_rp_options opt = {0};
  struct mg_rp_report r;
  struct mg_rp_log lg;
  struct mg_buf b;
  const struct mg_rp_copair *t;
  int u;
  (void)state;

  mg_buf_init(&b, SIZE_MAX);
  for (u = 0; u < 1000; u++) {
    bool ta = u < 100, tb = u < 30 || (u >= 100 && u < 120);
    assert_int_equal(
        mg_buf_printf(&b,
                      "{\"flag\":\"a\",\"unit\":\"u%d\",\"variant\":\"%s\","
                      "\"reason\":\"rollout\",\"ms\":1}\n"
                      "{\"flag\":\"b\",\"unit\":\"u%d\",\"variant\":\"%s\","
                      "\"reason\":\"rollout\",\"ms\":1}\n",
                      u, ta ? "treatment" : "control", u,
                      tb ? "treatment" : "control"),
        0);
  }
  analyse(b.data, b.len, &opt, &lg, &r);
  assert_int_equal(r.npairs, 1);
  assert_int_equal(r.pairs[0].nt, 1);
  t = &r.pairs[0].t[0];
  assert_int_equal(t->both, 30);
  assert_int_equal(t->a_only, 70);
  assert_int_equal(t->b_only, 20);
  assert_int_equal(t->neither, 880);
  near(t->expected, 5, 1e-12);
  near(t->odds_ratio, 18.857142857142858, 1e-12);
  near(t->phi, 0.3823595564509363, 1e-12);
  assert_string_equal(t->test, "chi-square");
  near(t->chi2, 146.19883040935673, 1e-9);
  rel(t->p, 1.1745568608837685e-33, 1e-8);
  near(t->or_lo, 10.185506382371216, 1e-9);
  near(t->or_hi, 34.911552100162844, 1e-9);
  assert_true(t->alarm);
  assert_int_equal(r.nalarms, 1);
  assert_string_equal(r.alarms[0].check, "coassignment");
  mg_rp_report_free(&r);
  mg_rp_log_free(&lg);
  mg_buf_reset(&b);

  /* A perfect overlap of 5 units in 20: expected counts below 5, so
   * Fisher's exact test, p = 1 / C(20, 5) = 6.449948400412796e-05 (the
   * other extreme, 0 in both, is more likely and not counted); the odds
   * ratio with half a unit added everywhere, 5.5 x 15.5 / 0.25 = 341. */
  for (u = 0; u < 20; u++)
    assert_int_equal(
        mg_buf_printf(&b,
                      "{\"flag\":\"a\",\"unit\":\"u%d\",\"variant\":\"%s\","
                      "\"reason\":\"rollout\",\"ms\":1}\n"
                      "{\"flag\":\"b\",\"unit\":\"u%d\",\"variant\":\"%s\","
                      "\"reason\":\"rollout\",\"ms\":1}\n",
                      u, u < 5 ? "treatment" : "control", u,
                      u < 5 ? "treatment" : "control"),
        0);
  analyse(b.data, b.len, &opt, &lg, &r);
  t = &r.pairs[0].t[0];
  assert_string_equal(t->test, "fisher");
  rel(t->p, 6.449948400412796e-05, 1e-9);
  near(t->odds_ratio, 341, 1e-9);
  assert_true(t->alarm);
  mg_rp_report_free(&r);
  mg_rp_log_free(&lg);
  mg_buf_free(&b);
}

/* The p95's interval behind the decide rule's p95_ms guardrail: 1,000
 * units of one request at 1, 2, ..., 1000 ms (design effect 1), each arm
 * at 1 - 0.05/2: z = 2.241402727604945 (bisection on erfc), h = z
 * sqrt(0.95 x 0.05 / 1000), and the type-7 quantiles at 0.95 -/+ h are
 * 1 + 999 (0.95 -/+ h) = 934.6176455670479 and 965.4823544329521. */
static void test_p95_interval(void **state) {
  struct mg_rp_options opt = {0};
  struct mg_rp_report r;
  struct mg_rp_log lg;
  struct mg_buf b;
  const struct mg_rp_variant *v;
  int u;
  (void)state;

  mg_buf_init(&b, SIZE_MAX);
  for (u = 0; u < 1000; u++)
    assert_int_equal(mg_buf_printf(&b,
                                   "{\"flag\":\"f\",\"unit\":\"u%d\","
                                   "\"variant\":\"control\",\"reason\":"
                                   "\"rollout\",\"ms\":%d}\n",
                                   u, u + 1),
                     0);
  analyse(b.data, b.len, &opt, &lg, &r);
  v = &r.flags[0].v[0];
  near(v->p95, 1 + 999 * 0.95, 1e-9);
  near(v->p95_lo, 934.6176455670479, 1e-9);
  near(v->p95_hi, 965.4823544329521, 1e-9);
  mg_rp_report_free(&r);
  mg_rp_log_free(&lg);
  mg_buf_free(&b);
}

static void test_format(void **state) {
  char b[64];
  (void)state;
  assert_string_equal(mg_rp_fmt_count(b, sizeof(b), 0), "0");
  assert_string_equal(mg_rp_fmt_count(b, sizeof(b), 999), "999");
  assert_string_equal(mg_rp_fmt_count(b, sizeof(b), 1000000), "1,000,000");
  assert_string_equal(mg_rp_fmt_value(b, sizeof(b), MG_RP_M_ERROR, 0.0412),
                      "4.12%");
  assert_string_equal(mg_rp_fmt_diff(b, sizeof(b), MG_RP_M_ERROR, 0.0208),
                      "+2.08 pp");
  assert_string_equal(mg_rp_fmt_p(b, sizeof(b), 0.0431), "0.043");
  assert_string_equal(mg_rp_fmt_p(b, sizeof(b), 3.1e-5), "3.1e-05");
  assert_string_equal(mg_rp_fmt_p(b, sizeof(b), NAN), "n/a");
}

/* The input axis covers tokens too: per cell and arm, the mean prompt and
 * completion tokens over the records that carry tokens, computed here from
 * the cell's own bounds; a token difference, however clear, is shown but
 * never flagged (tokens have no "worse" direction) and does not widen the
 * Bonferroni factor. */
static void test_input_axis_tokens(void **state) {
  enum { N = 800 };
  struct mg_rp_options opt = {0};
  struct mg_rp_report r;
  struct mg_rp_log lg;
  struct mg_buf b, out;
  const struct mg_rp_flag_report *fr;
  int chars[N], prompt[N], completion[N], arm[N];
  bool tok[N];
  uint32_t c, a, directional = 0;
  size_t i;
  (void)state;

  mg_buf_init(&b, SIZE_MAX);
  mg_buf_init(&out, SIZE_MAX);
  for (i = 0; i < N; i++) {
    arm[i] = (int)(i % 2);
    chars[i] = 100 * (int)(1 + (i / 2) % 4);
    tok[i] = i % 10 != 3;
    /* The treatment's prompts are 5 tokens longer everywhere. */
    prompt[i] = chars[i] / 10 + (arm[i] ? 5 : 0) + (int)(i % 7);
    completion[i] = 7 + (int)(i % 3);
    assert_int_equal(
        mg_buf_printf(&b,
                      "{\"flag\":\"f\",\"unit\":\"u%zu\",\"variant\":\"%s\","
                      "\"reason\":\"rollout\",\"weights\":{\"control\":50,"
                      "\"treatment\":50},\"input\":{\"chars\":%d,"
                      "\"messages\":1,\"tools\":0,\"stream\":false},"
                      "\"status\":200,\"error\":false,\"ms\":%d",
                      i, arm[i] ? "treatment" : "control", chars[i],
                      10 + (int)(i % 5)),
        0);
    if (tok[i])
      assert_int_equal(mg_buf_printf(&b,
                                     ",\"tokens\":{\"prompt\":%d,"
                                     "\"completion\":%d}}\n",
                                     prompt[i], completion[i]),
                       0);
    else
      assert_int_equal(mg_buf_printf(&b, ",\"tokens\":null}\n"), 0);
  }
  analyse(b.data, b.len, &opt, &lg, &r);
  fr = &r.flags[0];
  assert_string_equal(fr->v[fr->control].name, "control");
  assert_true(fr->ncells >= 2);
  for (c = 0; c < fr->ncells; c++) {
    const struct mg_rp_cell *cell = &fr->cells[c];
    for (a = 0; a < fr->narms; a++) {
      const struct mg_rp_cell_arm *ca = &cell->arms[a];
      int want_arm = strcmp(fr->v[a].name, "treatment") == 0;
      double sp = 0, sc = 0, n = 0;
      int m;
      for (i = 0; i < N; i++) {
        bool in = strcmp(cell->axis, "chars") == 0
                      ? (cell->lo < 0 || chars[i] > cell->lo) &&
                            chars[i] <= cell->hi
                      : true; /* tools: every record has 0 tools */
        if (!in || arm[i] != want_arm || !tok[i])
          continue;
        sp += prompt[i];
        sc += completion[i];
        n++;
      }
      assert_true(n > 0);
      if (fabs(ca->value[MG_RP_M_PROMPT] - sp / n) > 1e-9 ||
          fabs(ca->value[MG_RP_M_COMPLETION] - sc / n) > 1e-9)
        fail_msg("%s, %s: tokens %g / %g, want %g / %g", cell->label,
                 fr->v[a].name, ca->value[MG_RP_M_PROMPT],
                 ca->value[MG_RP_M_COMPLETION], sp / n, sc / n);
      if (!ca->has_cmp)
        continue;
      /* Clear, and still not flagged. */
      assert_true(ca->cmp[MG_RP_M_PROMPT].diff > 4);
      assert_true(ca->cmp[MG_RP_M_PROMPT].p < 1e-6);
      assert_false(ca->flagged[MG_RP_M_PROMPT]);
      assert_false(ca->flagged[MG_RP_M_COMPLETION]);
      for (m = 0; m < MG_RP_CELL_METRICS; m++)
        directional += mg_rp_metrics[m].worse != 0 && !isnan(ca->cmp[m].p);
    }
  }
  assert_int_equal(fr->cell_tests, directional);
  assert_int_equal(r.nalarms, 0);
  /* Every renderer shows them. */
  assert_int_equal(mg_rp_render_text(&r, &out), 0);
  assert_non_null(strstr(out.data, "compl."));
  assert_non_null(strstr(out.data, "prompt tok +"));
  mg_buf_reset(&out);
  assert_int_equal(mg_rp_render_json(&r, &out), 0);
  assert_non_null(strstr(out.data, "\"vs_control\":{\"error_rate\""));
  assert_non_null(strstr(out.data, "\"completion_tokens\":{\"diff\""));
  mg_buf_reset(&out);
  assert_int_equal(mg_rp_render_html(&r, &out), 0);
  assert_non_null(strstr(out.data, "<th>compl. tok.</th>"));
  mg_rp_report_free(&r);
  mg_rp_log_free(&lg);
  mg_buf_free(&b);
  mg_buf_free(&out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_norm),
      cmocka_unit_test(test_chi2_table),
      cmocka_unit_test(test_chi2_closed_forms),
      cmocka_unit_test(test_gamma),
      cmocka_unit_test(test_chi2_tests),
      cmocka_unit_test(test_quantile),
      cmocka_unit_test(test_delta_method),
      cmocka_unit_test(test_delta_single_requests),
      cmocka_unit_test(test_zero_variance),
      cmocka_unit_test(test_student_t),
      cmocka_unit_test(test_fisher),
      cmocka_unit_test(test_reader_lines),
      cmocka_unit_test(test_reader_bits),
      cmocka_unit_test(test_reader_real_records),
      cmocka_unit_test(test_analysis_aa),
      cmocka_unit_test(test_analysis_srm_and_effect),
      cmocka_unit_test(test_analysis_control_choice),
      cmocka_unit_test(test_input_axis_tokens),
      cmocka_unit_test(test_parallel_read_matches),
      cmocka_unit_test(test_format),
      cmocka_unit_test(test_constant_arms),
      cmocka_unit_test(test_coassignment_table),
      cmocka_unit_test(test_p95_interval),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
