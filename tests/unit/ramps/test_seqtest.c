/* test_seqtest.c - the always-valid sequential tests against reference
 * values worked independently by tests/unit/ramps/seqtest_ref.py (python3,
 * standard library): the mixture likelihood ratio integrated numerically
 * (Simpson) instead of the closed form, variances summed over the raw
 * observations instead of from moments, the design effect from lists of
 * clustered observations. Run the script to reproduce every number
 * below. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

#include <cmocka.h>

#include "ramps/seqtest.h"

#define MG_UNIT_BUCKETS_TEST 32

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
  /* seqtest_ref.py "error_ratio": 4% against 1.5%, k = 1.5, on the
   * square-root scale of 0/1 values */
  mg_seq_ratio(&t, &c, 1.5, +1, 1.5, 0.01, &r);
  assert_true(r.defined);
  NEAR(r.estimate, 0.05, 1e-12);
  NEAR(r.se, 0.0167593257621, 1e-9);
  NEAR(r.z, 2.98341357581, 1e-9);
  NEAR(r.tau, 0.0337117307087, 1e-9);
  NEAR(r.log_lr, 2.934911268, 1e-6);
  NEAR(r.observed, 2.66666666667, 1e-9);
  NEAR(r.boundary, log(100), 1e-12);
  assert_false(r.reject); /* 2.93 < log 100 = 4.61 */
  /* at alpha = 0.1 (boundary log 10 = 2.30) the same evidence rejects */
  mg_seq_ratio(&t, &c, 1.5, +1, 1.5, 0.1, &r);
  assert_true(r.reject);
  /* "error_ratio_k3": the same counts are within 3x */
  mg_seq_ratio(&t, &c, 3, +1, 1.5, 0.1, &r);
  NEAR(r.se, 0.0176847391838, 1e-9);
  NEAR(r.log_lr, -2.320870556, 1e-6);
  assert_false(r.reject);
}

static void test_error_ratio_zero_control(void **state) {
  struct mg_seq_arm t = bern(300, 5), c = bern(3000, 0);
  struct mg_seq_result r;
  (void)state;
  /* "error_ratio_zero_control": 5 of 300 against 0 of 3000, k = 2: the
   * null expects 0.45 treatment events, too few for a normal
   * approximation: no evidence (max_error_rate is the guard for this) */
  mg_seq_ratio(&t, &c, 2, +1, 1.5, 0.01, &r);
  assert_false(r.defined);
  assert_false(r.reject);
  /* "error_ratio_zero_control_defined": 30 of 1000 against 0 of 3000;
   * the control's half an event sets tau, the 16 tau scale carries it */
  t = bern(1000, 30);
  mg_seq_ratio(&t, &c, 2, +1, 1.5, 0.01, &r);
  assert_true(r.defined);
  NEAR(r.estimate, 0.173205080757, 1e-9);
  NEAR(r.se, 0.0203510851472, 1e-9);
  NEAR(r.tau, 0.00410326119149, 1e-9);
  NEAR(r.log_lr, 31.4197047, 1e-6);
  NEAR(r.observed, 90, 1e-12); /* 3% over one error in 3000 */
  assert_true(r.reject);
}

static void test_design_effect(void **state) {
  /* "design_effect": 8 buckets of requests, the errors clustered in two */
  static const double sizes[] = {30, 25, 40, 35, 20, 30, 45, 25};
  static const double errs[] = {0, 1, 0, 9, 0, 1, 8, 1};
  double y[MG_UNIT_BUCKETS_TEST] = {0}, s[MG_UNIT_BUCKETS_TEST] = {0};
  struct mg_seq_arm t = bern(250, 20), c = bern(3000, 60);
  struct mg_seq_result r;
  int i;
  (void)state;
  for (i = 0; i < 8; i++) {
    y[i * 3] = errs[i]; /* spread over 24 of 32 buckets, 8 non-empty */
    s[i * 3] = sizes[i];
  }
  t.design = mg_seq_design_effect(&t, y, s, MG_UNIT_BUCKETS_TEST);
  NEAR(t.design, 4.98881987578, 1e-9);
  /* "error_ratio_clustered": 8% against 2%, k = 1, with it */
  mg_seq_ratio(&t, &c, 1, +1, 1.5, 0.01, &r);
  NEAR(r.se, 0.0703370471874, 1e-9);
  NEAR(r.log_lr, 1.025014242, 1e-6);
  assert_false(r.reject); /* independent requests would have said z = 4.5 */
  c.design = 1;
  t.design = 1;
  mg_seq_ratio(&t, &c, 1, +1, 1.5, 0.01, &r);
  assert_true(r.reject);
  /* three non-empty buckets cannot estimate it: undefined, no evidence */
  memset(y, 0, sizeof(y));
  memset(s, 0, sizeof(s));
  y[0] = 10, s[0] = 100, y[1] = 5, s[1] = 100, y[2] = 5, s[2] = 50;
  t.design = mg_seq_design_effect(&t, y, s, MG_UNIT_BUCKETS_TEST);
  assert_true(isinf(t.design));
  mg_seq_ratio(&t, &c, 1, +1, 1.5, 0.01, &r);
  assert_false(r.defined);
  /* no buckets at all (a caller that keeps none): independent */
  memset(s, 0, sizeof(s));
  memset(y, 0, sizeof(y));
  assert_true(mg_seq_design_effect(&t, y, s, MG_UNIT_BUCKETS_TEST) == 1);
  /* evenly spread errors: never below 1 */
  for (i = 0; i < 10; i++)
    y[i] = 2, s[i] = 25;
  assert_true(mg_seq_design_effect(&t, y, s, MG_UNIT_BUCKETS_TEST) == 1);
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
  NEAR(r.tau, 0.00177222222222, 1e-9);
  NEAR(r.log_lr, 109.3389527, 1e-6);
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
  NEAR(r.estimate, 0.0302349094454, 1e-9);
  NEAR(r.se, 0.0175, 1e-9);
  NEAR(r.tau, 0.207813064845, 1e-9);
  NEAR(r.log_lr, -1.169704938, 1e-6);
  NEAR(r.observed, 0.888888888889, 1e-9);
  assert_false(r.reject);
  /* "rating_max_ratio": a 1..5 rating, not 0/1: the delta-method variance */
  t = arm_of(rt, NULL, 12, 8);
  c = arm_of(rc, NULL, 14, 8);
  mg_seq_ratio(&t, &c, 1.1, +1, 1.5, 0.01, &r);
  NEAR(r.estimate, 0.454761904762, 1e-9);
  NEAR(r.se, 0.153089414848, 1e-9);
  NEAR(r.tau, 1.68928571429, 1e-9);
  NEAR(r.log_lr, 1.845167154, 1e-6);
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
  NEAR(r.estimate, 0.0852944191952, 1e-9);
  NEAR(r.se, 0.019364916731, 1e-9);
  NEAR(r.tau, 0.16918179302, 1e-9);
  NEAR(r.log_lr, 7.298439315, 1e-6);
  NEAR(r.observed, 0.7, 1e-12);
  assert_true(r.reject);
  /* "complaint_ceiling": 6 of 200 under a ceiling of 0.05 */
  t = bern(200, 6);
  mg_seq_level(&t, 0.05, +1, 1.5, 0.01, &r);
  NEAR(r.se, 0.0344601218802, 1e-9);
  NEAR(r.log_lr, -2.131831692, 1e-6);
  assert_false(r.reject);
  /* 3 of 100 under 0.05: the null expects 5 events, as it must */
  t = bern(100, 3);
  mg_seq_level(&t, 0.05, +1, 1.5, 0.01, &r);
  assert_true(r.defined);
  t = bern(99, 3);
  mg_seq_level(&t, 0.05, +1, 1.5, 0.01, &r);
  assert_false(r.defined);
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
  /* rare events: the null must expect 5 in each arm */
  t = bern(400, 3);
  c = bern(4000, 10);
  mg_seq_ratio(&t, &c, 1, +1, 1.5, 0.01, &r); /* expects 1.2 and 11.8 */
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
      cmocka_unit_test(test_design_effect),
      cmocka_unit_test(test_cost_ratio),
      cmocka_unit_test(test_feedback_ratios),
      cmocka_unit_test(test_latency_shift),
      cmocka_unit_test(test_levels),
      cmocka_unit_test(test_undefined),
      cmocka_unit_test(test_monotone),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
