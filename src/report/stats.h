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

/* Regularized incomplete beta function I_x(a, b), a, b > 0, 0 <= x <= 1
 * (NaN otherwise): the continued fraction of Abramowitz and Stegun 26.5.8,
 * evaluated with the modified Lentz method on the side of the symmetry
 * I_x(a, b) = 1 - I_{1-x}(b, a) where it converges fast. */
double mg_stats_beta_inc(double a, double b, double x);

/* Two-sided p-value of Student's t with df degrees of freedom (df > 0,
 * not necessarily an integer): P(|T| >= |t|) = I_{df/(df+t^2)}(df/2, 1/2).
 * Past 10^7 degrees of freedom (and for an infinite df) the normal.
 * NaN in, NaN out. */
double mg_stats_t_p2(double t, double df);

/* The two-sided (1 - alpha) quantile of Student's t: the q with
 * mg_stats_t_p2(q, df) = alpha, 0 < alpha < 1 (found by bisection to
 * 1e-12); the normal quantile for an infinite df. */
double mg_stats_t_quantile2(double alpha, double df);

/* One comparison of a treatment against the control. */
struct mg_stats_diff {
  double diff;   /* treatment - control (NaN when either value is) */
  double se;     /* sqrt(Var_t + Var_c) */
  double df;     /* Welch-Satterthwaite degrees of freedom */
  double lo, hi; /* diff -/+ t(0.975, df) * se */
  double z;      /* diff / se: the t statistic */
  double p;      /* two-sided, Student's t with df */
  double rel;    /* diff / control (NaN when the control is 0) */
  const char *undefined; /* static: why there is no test ("no variance",
                          * "no events", "too few units", "no data"), or
                          * NULL. se, df, lo, hi, z and p are NaN then. */
};

/* Compare two arms' ratios by Welch's t test on the delta-method
 * variances, with the Welch-Satterthwaite degrees of freedom
 *
 *   df = (V_t + V_c)^2 / (V_t^2 / (n_t - 1) + V_c^2 / (n_c - 1)),
 *
 * which stays right when one arm is constant (V_c = 0 gives df = n_t - 1:
 * the other arm's own t test against a known value). The test is
 * undefined, and says why, when an arm has fewer than two units ("too few
 * units") or no denominator ("no data"), and when both arms are constant
 * ("no variance"): a zero standard error is no evidence of anything.
 *
 * proportion: the metric is a share of requests (x counts events among
 * y requests). An arm without events (or with nothing but events) has a
 * per-unit variance of 0 only because of the sample, not because its rate
 * cannot vary: such an arm gets the binomial variance at the pooled rate,
 * Rp (1 - Rp) / requests, times the other arm's design effect (its
 * delta-method variance over its binomial variance, at least 1). With
 * pooled rate 0 the test is undefined ("no events"); with pooled rate 1,
 * too ("no variance: every request is an event"). */
void mg_stats_ratio_compare(const struct mg_stats_ratio *treatment,
                            const struct mg_stats_ratio *control,
                            bool proportion, struct mg_stats_diff *out);

/* Fisher's exact test of a 2 x 2 table [[a, b], [c, d]], two-sided: the
 * sum of the hypergeometric probabilities (margins fixed) of every table
 * no more likely than the one observed (with R's relative tolerance of
 * 1e-7 for ties). NaN when a margin is 0. */
double mg_stats_fisher2x2(double a, double b, double c, double d);

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
