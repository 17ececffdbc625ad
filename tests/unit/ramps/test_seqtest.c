/* test_seqtest.c - the always-valid sequential tests against reference
 * values worked independently by tests/unit/ramps/seqtest_ref.py (python3,
 * standard library): the mixture likelihood ratio integrated numerically
 * (Simpson) instead of the closed form, variances summed over the raw
 * observations instead of from moments. Run the script to reproduce every
 * number below. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

#include <cmocka.h>

#include "ramps/seqtest.h"

#define NEAR(a, b, tol)                                                      \
  do {                                                                       \
    double a_ = (a), b_ = (b);                                               \
    if (!(fabs(a_ - b_) <= (tol) * fmax(1, fabs(b_))))                       \
      fail_msg("%s = %.12g, want %.12g", #a, a_, b_);                        \
  } while (0)

static struct mg_seq_arm bern(double n, double x) {
  return mg_seq_arm_mean(n, x, x);
}

/* Moments of a list of (y, s), repeated reps times. */
static struct mg_seq_arm arm_of(const double *y, const double *s, int n,
                                int reps) {
  struct mg_seq_arm a;
  int i, r;
  memset(&a, 0, sizeof(a));
  for (r = 0; r < reps; r++)
    for (i = 0; i < n; i++) {
      double ss = s ? s[i] : 1;
      a.n++;
      a.sum += y[i];
      a.sq += y[i] * y[i];
      a.den += ss;
      a.den_sq += ss * ss;
      a.cross += y[i] * ss;
    }
  return a;
}

static void test_error_ratio(void **state) {
  struct mg_seq_arm t = bern(1000, 40), c = bern(10000, 150);
  struct mg_seq_result r;
  (void)state;
  /* seqtest_ref.py "error_ratio": 4% against 1.5%, k = 1.5 */
  mg_seq_ratio(&t, &c, 1.5, +1, 1.5, 0.01, &r);
  assert_true(r.defined);
  NEAR(r.estimate, 0.0175, 1e-12);
  NEAR(r.se, 0.0052025125049, 1e-9);
  NEAR(r.z, 3.36375933427, 1e-9);
  NEAR(r.tau, 0.0120454545455, 1e-9);
  NEAR(r.log_lr, 4.014623975, 1e-6);
  NEAR(r.observed, 2.66666666667, 1e-9);
  NEAR(r.boundary, log(100), 1e-12);
  assert_false(r.reject); /* 4.01 < log 100 = 4.61 */
  /* at alpha = 0.05 (boundary log 20 = 3.00) the same evidence rejects */
  mg_seq_ratio(&t, &c, 1.5, +1, 1.5, 0.05, &r);
  assert_true(r.reject);
  /* "error_ratio_k3": the same counts are within 3x */
  mg_seq_ratio(&t, &c, 3, +1, 1.5, 0.05, &r);
  NEAR(r.se, 0.00746500928575, 1e-9);
  NEAR(r.log_lr, -2.407640159, 1e-6);
  assert_false(r.reject);
}

static void test_error_ratio_zero_control(void **state) {
  /* "error_ratio_zero_control": 5 of 300 against 0 of 3000, k = 2. The
   * null variance keeps the evidence finite, and the 4 and 16 tau scales
   * make it strong (a single scale-tau0 mixture gives log_lr 0.19 on the
   * empirical variance). */
  struct mg_seq_arm t = bern(300, 5), c = bern(3000, 0);
  struct mg_seq_result r;
  (void)state;
  mg_seq_ratio(&t, &c, 2, +1, 1.5, 0.01, &r);
  assert_true(r.defined);
  NEAR(r.se, 0.00246011962152, 1e-9);
  NEAR(r.z, 6.77473831796, 1e-9);
  NEAR(r.tau, 0.000757575757576, 1e-9);
  NEAR(r.log_lr, 20.0210935, 1e-6);
  NEAR(r.observed, 50, 1e-12); /* 5/300 over one error in 3000 */
  assert_true(r.reject);
}

static void test_cost_ratio(void **state) {
  static const double ct[] = {0.004, 0.006, 0.005, 0.007, 0.0,
                              0.009, 0.005, 0.006, 0.008, 0.004};
  static const double cs[] = {1, 1, 1, 1, 0, 1, 1, 1, 1, 1};
  static const double cc[] = {0.003, 0.004, 0.002, 0.005, 0.004,
                              0.003, 0.001, 0.004, 0.003, 0.0};
  static const double ccs[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 0};
  struct mg_seq_arm t = arm_of(ct, cs, 10, 30), c = arm_of(cc, ccs, 10, 30);
  struct mg_seq_result r;
  (void)state;
  /* "cost_ratio": cost per successful answer, k = 1.1 */
  mg_seq_ratio(&t, &c, 1.1, +1, 1.5, 0.01, &r);
  NEAR(r.estimate, 0.00245555555556, 1e-9);
  NEAR(r.se, 0.000163697139693, 1e-9);
  NEAR(r.tau, 0.00238611111111, 1e-9);
  NEAR(r.log_lr, 109.3111658, 1e-6);
  NEAR(r.observed, 1.86206896552, 1e-9);
  assert_true(r.reject);
}

static void test_feedback_ratios(void **state) {
  static const double rt[] = {3, 4, 5, 2, 4, 5, 5, 3, 4, 5, 1, 5};
  static const double rc[] = {3, 3, 4, 2, 3, 4, 3, 3, 2, 4, 3, 3, 4, 2};
  struct mg_seq_arm t = bern(200, 160), c = bern(300, 270);
  struct mg_seq_result r;
  (void)state;
  /* "accuracy_min_ratio": 0.80 against 0.90, must stay >= 0.95x */
  mg_seq_ratio(&t, &c, 0.95, -1, 1.5, 0.01, &r);
  NEAR(r.estimate, 0.055, 1e-12);
  NEAR(r.se, 0.0319440917855, 1e-9);
  NEAR(r.tau, 0.4165, 1e-9);
  NEAR(r.log_lr, -1.272032314, 1e-6);
  NEAR(r.observed, 0.888888888889, 1e-9);
  assert_false(r.reject);
  /* "rating_max_ratio": a 1..5 rating, not 0/1: the delta-method variance */
  t = arm_of(rt, NULL, 12, 8);
  c = arm_of(rc, NULL, 14, 8);
  mg_seq_ratio(&t, &c, 1.1, +1, 1.5, 0.01, &r);
  NEAR(r.estimate, 0.454761904762, 1e-9);
  NEAR(r.se, 0.153089414848, 1e-9);
  NEAR(r.tau, 1.79423076923, 1e-9);
  NEAR(r.log_lr, 1.788368665, 1e-6);
  NEAR(r.observed, 1.2480620155, 1e-9);
}

static void test_latency_shift(void **state) {
  static const double mt[] = {120, 340, 95, 800, 410, 230,
                              150, 600, 275, 330, 90, 510};
  static const double mc[] = {100, 200, 80, 300, 250, 180, 120,
                              400, 210, 150, 70, 260, 190, 230};
  double lt[12], lc[14];
  struct mg_seq_arm t, c;
  struct mg_seq_result r;
  int i;
  (void)state;
  for (i = 0; i < 12; i++)
    lt[i] = log(mt[i]);
  for (i = 0; i < 14; i++)
    lc[i] = log(mc[i]);
  t = arm_of(lt, NULL, 12, 10);
  c = arm_of(lc, NULL, 14, 10);
  /* "latency_shift": geometric means 1.5x apart, k = 1.2 */
  mg_seq_shift(&t, &c, 1.2, 1.5, 0.01, &r);
  NEAR(r.estimate, 0.223148895868, 1e-9);
  NEAR(r.se, 0.0759948375994, 1e-9);
  NEAR(r.tau, 0.405465108108, 1e-9);
  NEAR(r.log_lr, 2.376930531, 1e-6);
  NEAR(r.observed, 1.50000801685, 1e-9);
  assert_false(r.reject);
}

static void test_levels(void **state) {
  struct mg_seq_arm t = bern(100, 70);
  struct mg_seq_result r;
  (void)state;
  /* "accuracy_floor": 70 of 100 against a floor of 0.85 */
  mg_seq_level(&t, 0.85, -1, 1.5, 0.01, &r);
  NEAR(r.estimate, 0.15, 1e-12);
  NEAR(r.se, 0.0357071421427, 1e-9);
  NEAR(r.tau, 0.283333333333, 1e-9);
  NEAR(r.log_lr, 6.507593839, 1e-6);
  NEAR(r.observed, 0.7, 1e-12);
  assert_true(r.reject);
  /* "complaint_ceiling": 3 of 100 under a ceiling of 0.05 */
  t = bern(100, 3);
  mg_seq_level(&t, 0.05, +1, 1.5, 0.01, &r);
  NEAR(r.se, 0.0217944947177, 1e-9);
  NEAR(r.log_lr, -1.68597195, 1e-6);
  assert_false(r.reject);
}

/* Undefined is no evidence: never a rollback (issue 11.2). */
static void test_undefined(void **state) {
  struct mg_seq_arm t, c;
  struct mg_seq_result r;
  (void)state;
  /* no events in either arm */
  t = bern(5000, 0);
  c = bern(50000, 0);
  mg_seq_ratio(&t, &c, 1, +1, 1.5, 0.01, &r);
  assert_false(r.defined);
  assert_false(r.reject);
  /* constant latencies in both arms, different constants: no variance */
  t = mg_seq_arm_mean(1000, 1000 * log(300), 1000 * log(300) * log(300));
  c = mg_seq_arm_mean(1000, 1000 * log(100), 1000 * log(100) * log(100));
  mg_seq_shift(&t, &c, 1.2, 1.5, 0.01, &r);
  assert_false(r.defined);
  assert_false(r.reject);
  /* a constant float feedback exactly at its floor */
  t = mg_seq_arm_mean(500, 500 * 0.85, 500 * 0.85 * 0.85);
  mg_seq_level(&t, 0.85, -1, 1.5, 0.01, &r);
  assert_false(r.reject);
  /* fewer than two observations */
  t = bern(1, 1);
  c = bern(1, 0);
  mg_seq_ratio(&t, &c, 1, +1, 1.5, 0.01, &r);
  assert_false(r.defined);
  /* a treatment failing every time cannot exceed a null that allows it */
  t = bern(100, 100);
  c = bern(100, 60);
  mg_seq_ratio(&t, &c, 2, +1, 1.5, 0.01, &r);
  assert_false(r.defined);
}

/* The rejection region is {z >= b}: log_lr increases with the estimate at
 * a fixed variance (the composite-null argument in seqtest.h rests on it),
 * across the switch to the asymptotic log Phi far in the left tail. */
static void test_monotone(void **state) {
  double prev = -INFINITY, est;
  (void)state;
  for (est = -60; est <= 60; est += 0.25) {
    double l = mg_seq_log_lr(est, 1, 0.5);
    assert_true(isfinite(l));
    if (!(l > prev))
      fail_msg("log_lr(%g) = %g does not exceed log_lr(%g) = %g", est, l,
               est - 0.25, prev);
    prev = l;
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_error_ratio),
      cmocka_unit_test(test_error_ratio_zero_control),
      cmocka_unit_test(test_cost_ratio),
      cmocka_unit_test(test_feedback_ratios),
      cmocka_unit_test(test_latency_shift),
      cmocka_unit_test(test_levels),
      cmocka_unit_test(test_undefined),
      cmocka_unit_test(test_monotone),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
