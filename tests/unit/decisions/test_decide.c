/* test_decide.c - a flag's decide rule: parsing with errors that name
 * their path, the normal quantile and the units still needed against
 * values worked independently, and each verdict on estimates that call
 * for it. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "decisions/decide.h"

static void near(double a, double b, double tol) {
  if (!(fabs(a - b) <= tol * fmax(1.0, fabs(b))))
    fail_msg("%.17g is not within %g of %.17g", a, tol, b);
}

static bool has_error(const struct mg_cfg_errors *e, const char *needle) {
  size_t i;
  for (i = 0; i < e->n; i++)
    if (strstr(e->msgs[i], needle))
      return true;
  return false;
}

static void test_parse(void **state) {
  struct mg_cfg_errors e;
  struct mg_decide d;
  cJSON *j;
  (void)state;

  mg_cfg_errors_init(&e);
  j = cJSON_Parse("{\"metric\":\"accuracy\",\"min_lift\":0.02,"
                  "\"guardrails\":{\"error_rate\":{\"max_increase\":0.005},"
                  "\"cost_per_request\":{\"max_ratio\":1.10},"
                  "\"p95_ms\":{\"max_ratio\":1.2}}}");
  assert_int_equal(mg_decide_parse(j, "$.flags.chat.decide", &d, &e), 0);
  assert_int_equal(e.n, 0);
  assert_string_equal(d.metric, "accuracy");
  near(d.min_lift, 0.02, 0);
  near(d.alpha, 0.05, 0);
  near(d.power, 0.8, 0);
  assert_true(d.guard[MG_DECIDE_ERROR_RATE].set);
  near(d.guard[MG_DECIDE_ERROR_RATE].max_increase, 0.005, 0);
  assert_true(isnan(d.guard[MG_DECIDE_ERROR_RATE].max_ratio));
  near(d.guard[MG_DECIDE_COST_PER_REQUEST].max_ratio, 1.1, 0);
  near(d.guard[MG_DECIDE_P95_MS].max_ratio, 1.2, 0);
  assert_false(d.guard[MG_DECIDE_FALLBACK_RATE].set);
  mg_decide_free(&d);
  cJSON_Delete(j);

  /* Every error at once, each with its path. */
  j = cJSON_Parse("{\"min_lift\":-1,\"alpha\":2,\"power\":\"high\","
                  "\"guardrails\":{\"latency\":{\"max_ratio\":1},"
                  "\"p95_ms\":{},\"error_rate\":{\"max_increase\":\"x\"}},"
                  "\"extra\":1}");
  assert_int_equal(mg_decide_parse(j, "$.flags.chat.decide", &d, &e),
                   -EINVAL);
  assert_true(has_error(&e, "$.flags.chat.decide.metric: is required"));
  assert_true(has_error(&e, "$.flags.chat.decide.min_lift"));
  assert_true(has_error(&e, "$.flags.chat.decide.alpha"));
  assert_true(has_error(&e, "$.flags.chat.decide.power"));
  assert_true(has_error(&e, "$.flags.chat.decide.extra: unknown key"));
  assert_true(
      has_error(&e, "$.flags.chat.decide.guardrails.latency: unknown key"));
  assert_true(has_error(&e, "$.flags.chat.decide.guardrails.p95_ms: needs"));
  assert_true(
      has_error(&e, "$.flags.chat.decide.guardrails.error_rate.max_increase"));
  mg_decide_free(&d);
  cJSON_Delete(j);
  mg_cfg_errors_free(&e);
}

static void test_norm_quantile(void **state) {
  /* Bisection on Phi(x) = 0.5 erfc(-x / sqrt 2) in Python (200 steps),
   * and the textbook 1.959963984540054 and 0.8416212335729143. */
  (void)state;
  near(mg_decide_norm_quantile(0.975), 1.959963984540054, 1e-14);
  near(mg_decide_norm_quantile(0.8), 0.8416212335729141, 1e-14);
  near(mg_decide_norm_quantile(0.001), -3.090232306167814, 1e-13);
  near(mg_decide_norm_quantile(0.999), 3.090232306167814, 1e-12);
  near(mg_decide_norm_quantile(1e-10), -6.3613409024040575, 1e-12);
  near(mg_decide_norm_quantile(0.5), 0, 1e-15);
  assert_true(isnan(mg_decide_norm_quantile(0)));
  assert_true(isnan(mg_decide_norm_quantile(1)));
}

static void test_units_needed(void **state) {
  (void)state;
  /* The textbook two-proportion case, by hand: p = 0.5 in both arms
   * (per-unit variance 0.25), equal split, lift 0.02, alpha 0.05, power
   * 0.8: n per arm = 2 (1.959964 + 0.841621)^2 0.25 / 0.02^2 = 9,811.1,
   * so 19,622.2 in all ((z_a + z_b)^2 = 7.848879734349081, Python). */
  near(mg_decide_units_needed(0.25, 0.25, 0.5, 0.02, 0.05, 0.8),
       19622.1993358727, 1e-9);
  /* Unequal variances and split: 0.16 and 0.21, 30% in the treatment,
   * lift 0.03, alpha 0.10, power 0.9: (z_.95 + z_.9)^2 (0.16/0.3 +
   * 0.21/0.7) / 0.0009 = 7929.488287655528 (Python). */
  near(mg_decide_units_needed(0.16, 0.21, 0.3, 0.03, 0.10, 0.9),
       7929.488287655528, 1e-9);
  assert_true(isnan(mg_decide_units_needed(NAN, 0.2, 0.5, 0.02, 0.05, 0.8)));
  assert_true(isnan(mg_decide_units_needed(0.2, 0.2, 0.0, 0.02, 0.05, 0.8)));
}

static struct mg_decide_est est(double t, double c, double half) {
  struct mg_decide_est e;
  e.known = true;
  e.treatment = t;
  e.control = c;
  e.diff = t - c;
  e.diff_lo = e.diff - half;
  e.diff_hi = e.diff + half;
  e.ratio = t / c;
  e.ratio_lo = (t - half) / c;
  e.ratio_hi = (t + half) / c;
  return e;
}

static void rule(struct mg_decide *d) {
  memset(d, 0, sizeof(*d));
  d->metric = (char *)"accuracy";
  d->min_lift = 0.02;
  d->alpha = 0.05;
  d->power = 0.8;
  for (int k = 0; k < MG_DECIDE_NGUARDS; k++)
    d->guard[k].max_increase = d->guard[k].max_ratio = NAN;
  d->guard[MG_DECIDE_ERROR_RATE].set = true;
  d->guard[MG_DECIDE_ERROR_RATE].max_increase = 0.005;
  d->guard[MG_DECIDE_COST_PER_REQUEST].set = true;
  d->guard[MG_DECIDE_COST_PER_REQUEST].max_ratio = 1.10;
}

static void test_verdicts(void **state) {
  struct mg_decide d;
  struct mg_decide_input in;
  struct mg_decide_verdict v;
  (void)state;

  rule(&d);
  memset(&in, 0, sizeof(in));
  in.higher_is_better = true;
  in.var_unit_t = in.var_unit_c = 0.25;
  in.units_t = in.units_c = 2000;
  /* +3 points, CI +1 to +5; errors +0.1 pp (CI -0.2 to +0.4 pp); cost
   * ratio 1.02 (CI 1.0 to 1.04): ship. */
  in.metric = est(0.83, 0.80, 0.02);
  in.guard[MG_DECIDE_ERROR_RATE] = est(0.021, 0.020, 0.003);
  in.guard[MG_DECIDE_COST_PER_REQUEST] = est(0.00102, 0.001, 0.00002);
  mg_decide_judge(&d, &in, &v);
  assert_string_equal(v.label, "ship");
  near(v.lift, 0.03, 1e-12);
  assert_int_equal(v.increase[MG_DECIDE_ERROR_RATE], MG_DECIDE_HOLDS);
  assert_int_equal(v.ratio[MG_DECIDE_COST_PER_REQUEST], MG_DECIDE_HOLDS);
  assert_non_null(strstr(v.evidence, "accuracy: lift +0.03"));

  /* The same lift, but errors up by 1 pp (CI +0.7 to +1.3): roll back. */
  in.guard[MG_DECIDE_ERROR_RATE] = est(0.03, 0.02, 0.003);
  mg_decide_judge(&d, &in, &v);
  assert_string_equal(v.label, "roll back");
  assert_int_equal(v.increase[MG_DECIDE_ERROR_RATE], MG_DECIDE_BREACHED);
  assert_non_null(strstr(v.evidence, "BREACHED"));

  /* Accuracy significantly worse: roll back. */
  in.guard[MG_DECIDE_ERROR_RATE] = est(0.021, 0.020, 0.003);
  in.metric = est(0.75, 0.80, 0.02);
  mg_decide_judge(&d, &in, &v);
  assert_string_equal(v.label, "roll back");

  /* Not significant (+1 point, CI -1 to +3): keep testing, with the
   * units still needed: 19,622.2 for p = 0.5 (test_units_needed), minus
   * the 4,000 there are = 15,623 (rounded up). */
  in.metric = est(0.81, 0.80, 0.02);
  mg_decide_judge(&d, &in, &v);
  assert_string_equal(v.label, "keep testing");
  near(v.units_needed, 15623, 0);
  assert_non_null(strstr(v.evidence, "15623 more units"));

  /* Significantly better but below the declared lift (+0.5 points, CI
   * +0.2 to +0.8): keep testing, saying more units will not help. */
  in.metric = est(0.805, 0.80, 0.003);
  mg_decide_judge(&d, &in, &v);
  assert_string_equal(v.label, "keep testing");
  assert_true(isnan(v.units_needed));
  assert_non_null(strstr(v.evidence, "will not reach it"));

  /* Better, but a guardrail unclear (cost ratio CI 1.05 to 1.15): keep
   * testing. */
  in.metric = est(0.83, 0.80, 0.02);
  in.guard[MG_DECIDE_COST_PER_REQUEST] = est(0.0011, 0.001, 0.00005);
  mg_decide_judge(&d, &in, &v);
  assert_string_equal(v.label, "keep testing");
  assert_int_equal(v.ratio[MG_DECIDE_COST_PER_REQUEST], MG_DECIDE_UNCLEAR);

  /* Lower is better (a complaint rate): a fall of 3 points is a lift. */
  in.higher_is_better = false;
  in.metric = est(0.07, 0.10, 0.02);
  in.guard[MG_DECIDE_COST_PER_REQUEST] = est(0.00102, 0.001, 0.00002);
  mg_decide_judge(&d, &in, &v);
  assert_string_equal(v.label, "ship");
  near(v.lift, 0.03, 1e-12);
  near(v.lift_lo, 0.01, 1e-12);

  /* No feedback yet: keep testing, units unknown. */
  memset(&in.metric, 0, sizeof(in.metric));
  in.var_unit_t = NAN;
  mg_decide_judge(&d, &in, &v);
  assert_string_equal(v.label, "keep testing");
  assert_non_null(strstr(v.evidence, "no estimate yet"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse),
      cmocka_unit_test(test_norm_quantile),
      cmocka_unit_test(test_units_needed),
      cmocka_unit_test(test_verdicts),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
