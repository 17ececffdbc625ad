/* stats.h - the statistics behind `modelgate report`: normal and
 * chi-square tail probabilities, quantiles by selection, and the delta
 * method for a ratio of per-unit sums.
 *
 * Why a ratio of sums: a cohort report compares arms whose sampling unit is
 * the unit (a user, a customer, a prompt), while its metrics are per request
 * (error rate = errors / requests). Requests of one unit are not
 * independent, so the variance of an arm's rate is computed from per-unit
 * totals: with x_i the numerator and y_i the denominator of unit i (errors
 * and requests, say), the arm's value is R = sum x / sum y, and the delta
 * method gives
 *
 *   Var(R) ~= (s_x^2 - 2 R s_xy + R^2 s_y^2) / (n * ybar^2)
 *
 * with s_x^2, s_y^2, s_xy the sample (co)variances over the arm's n units
 * (Deng, Knoblich and Lu, "Applying the Delta Method in Metric Analytics",
 * KDD 2018, section 3). Two arms are independent samples of units, so the
 * difference has variance Var(R_t) + Var(R_c) and a z statistic.
 *
 * Pure: libc and libm only. */
#ifndef MG_REPORT_STATS_H
#define MG_REPORT_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h" /* MG_WARN_UNUSED */

/* Two-sided 95% normal quantile, Phi^-1(0.975). */
#define MG_STATS_Z95 1.959963984540054

/* Standard normal distribution function Phi(x), via erfc. */
double mg_stats_norm_cdf(double x);

/* Two-sided p-value of a z statistic: P(|Z| >= |z|). NaN in, NaN out. */
double mg_stats_norm_p2(double z);

/* Regularized incomplete gamma functions P(a, x) and Q(a, x) = 1 - P(a, x),
 * a > 0, x >= 0 (NaN otherwise): a power series where x < a + 1, a continued
 * fraction (modified Lentz) elsewhere, each the side where it converges
 * fast. */
double mg_stats_gamma_p(double a, double x);
double mg_stats_gamma_q(double a, double x);

/* Survival function of the chi-square distribution: P(X >= x) for df
 * degrees of freedom, Q(df/2, x/2). 1 for x <= 0; 0 for x = +inf. */
double mg_stats_chi2_sf(double x, double df);

/* The p-quantile (0 <= p <= 1) of v[0..n), interpolating linearly between
 * order statistics (Hyndman and Fan's type 7, numpy's default): with
 * h = (n - 1) p, x[floor h] + (h - floor h)(x[floor h + 1] - x[floor h]).
 * Reorders v (Hoare selection, expected O(n)); NaN when n is 0. */
double mg_stats_quantile(double *v, size_t n, double p);

/* Several quantiles of v[0..n) at once: p[0..k) ascending, results in
 * out. Each selection works on the part the previous one left at its
 * right, so p50, p95 and p99 together cost little more than p50. */
void mg_stats_quantiles(double *v, size_t n, const double *p, size_t k,
                        double *out);

/* Running co-moments of per-unit (numerator, denominator) pairs, updated
 * one unit at a time (Welford's update extended to the covariance), so
 * large sums never cancel catastrophically. */
struct mg_stats_ratio {
  double n;        /* units */
  double mx, my;   /* means of x and y */
  double m2x, m2y; /* sums of squared deviations */
  double cxy;      /* sum of cross deviations */
};

void mg_stats_ratio_init(struct mg_stats_ratio *r);
/* Add one unit's totals. */
void mg_stats_ratio_add(struct mg_stats_ratio *r, double x, double y);
/* sum x / sum y; NaN when sum y is 0. */
double mg_stats_ratio_value(const struct mg_stats_ratio *r);
/* Delta-method variance of the ratio (formula above); NaN with fewer than
 * two units or when sum y is 0. */
double mg_stats_ratio_var(const struct mg_stats_ratio *r);

/* One comparison of a treatment against the control. */
struct mg_stats_diff {
  double diff;   /* treatment - control */
  double se;     /* sqrt(Var_t + Var_c) */
  double lo, hi; /* diff -/+ MG_STATS_Z95 * se */
  double z;      /* diff / se */
  double p;      /* two-sided, normal */
  double rel;    /* diff / control (NaN when the control is 0) */
};

/* Compare two arms' ratios. Every field is NaN when either arm lacks a
 * variance (fewer than two units, or no denominator). A zero standard error
 * (every unit identical) gives p = 1 for a zero difference, else 0. */
void mg_stats_ratio_compare(const struct mg_stats_ratio *treatment,
                            const struct mg_stats_ratio *control,
                            struct mg_stats_diff *out);

/* Pearson's chi-square goodness of fit of counts obs[0..k) against
 * proportions prop[0..k) (summing to 1): sum (O - E)^2 / E with
 * E = N prop. Cells with prop 0 leave the test, unless they hold counts
 * (then chi2 is +inf and p 0). df = cells with prop > 0, minus one.
 * Returns 0, or -1 when fewer than two cells remain or N is 0. */
int mg_stats_chi2_gof(const double *obs, const double *prop, size_t k,
                      double *chi2, double *df, double *p) MG_WARN_UNUSED;

/* Pearson's chi-square test of independence of an r x c table of counts
 * (row-major), expected counts from the margins; empty rows and columns
 * leave the test. df = (r' - 1)(c' - 1). Returns 0, or -1 when df is 0. */
int mg_stats_chi2_indep(const double *t, size_t r, size_t c, double *chi2,
                        double *df, double *p) MG_WARN_UNUSED;

#endif
