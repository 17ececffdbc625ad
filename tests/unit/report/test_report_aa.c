/* test_report_aa.c - the report's false-alarm rate, measured (issue 11.2):
 * many A/A seeds of realistic traffic (aa_gen.h) must raise alarms on at
 * most the nominal share of seeds, and every seed of each planted effect
 * must raise the alarm of the check that exists to find it.
 *
 * The nominal family-wise rate of one seed is the union (Bonferroni) bound
 * over every test that can alarm, computed from the report's own alphas
 * for the tests that ran on that seed:
 *   per flag   sample ratio     MG_RP_ALPHA_SRM      (0.001)
 *              cohort balance   MG_RP_ALPHA_BALANCE  (0.001)
 *              input axis       MG_RP_ALPHA_CELL / 2 (0.005: Bonferroni
 *                               over the flag's cell comparisons at 0.01,
 *                               two-sided p, but only "worse" alarms)
 *              feedback coverage MG_RP_ALPHA_COVERAGE (0.001, with feedback)
 *   per pair   co-assignment    MG_RP_ALPHA_COASSIGN (0.001) per tested
 *                               treatment pair
 * With three flags and three flag pairs of one treatment each that is
 * 3 x 0.008 + 3 x 0.001 = 0.027 per seed. The test fails when the number
 * of seeds with any alarm exceeds the 99.9th percentile of a binomial at
 * that rate (so a correct report fails it at most once in a thousand
 * runs, while a report that alarms on a tenth of its seeds fails it
 * nearly always).
 *
 * MG_AA_SEEDS (default 100) and MG_AA_PLANT_SEEDS (default 10 per plant)
 * measure at more seeds; MG_AA_UNITS (default 2500) sets the traffic. The
 * rates are printed; docs/report.md has the figures of a long run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "aa_gen.h"
#include "report/analysis.h"
#include "report/reader.h"

#define AA_FEEDBACK 1

static long env_long(const char *name, long def) {
  const char *v = getenv(name);
  long n = v && *v ? strtol(v, NULL, 10) : def;
  return n > 0 ? n : def;
}

/* P(X <= k) for X ~ Binomial(n, p), summed in logs. */
static double binom_cdf(long k, long n, double p) {
  double s = 0;
  long i;
  for (i = 0; i <= k && i <= n; i++)
    s += exp(lgamma(n + 1.0) - lgamma(i + 1.0) - lgamma(n - i + 1.0) +
             i * log(p) + (n - i) * log1p(-p));
  return s;
}

/* The smallest k with P(X <= k) >= q. */
static long binom_quantile(long n, double p, double q) {
  long k = 0;
  while (k < n && binom_cdf(k, n, p) < q)
    k++;
  return k;
}

struct seed_result {
  size_t alarms;
  bool by_check[8];
  double nominal;       /* union bound over the tests that ran */
};

static const char *const CHECKS[] = {"srm", "balance", "coassignment",
                                     "input_axis", "feedback_coverage"};
#define NCHECKS (sizeof(CHECKS) / sizeof(CHECKS[0]))

static void run_seed(uint64_t seed, int units, enum aa_plant plant,
                     bool feedback, struct seed_result *out) {
  struct mg_rp_options opt = {0};
  struct mg_rp_report r;
  struct mg_rp_log lg;
  struct mg_buf b;
  size_t i, k;

  memset(out, 0, sizeof(*out));
  mg_buf_init(&b, SIZE_MAX);
  aa_write(&b, seed, units, plant, feedback);
  mg_rp_log_init(&lg);
  assert_int_equal(mg_rp_read_mem(&lg, b.data, b.len, "aa"), 0);
  assert_int_equal(lg.malformed, 0);
  assert_int_equal(mg_rp_analyze(&lg, &opt, &r), 0);
  out->alarms = r.nalarms;
  for (i = 0; i < r.nalarms; i++)
    for (k = 0; k < NCHECKS; k++)
      if (strcmp(r.alarms[i].check, CHECKS[k]) == 0)
        out->by_check[k] = true;
  for (i = 0; i < r.nflags; i++) {
    const struct mg_rp_flag_report *fr = &r.flags[i];
    if (!fr->shown)
      continue;
    out->nominal += fr->srm_tested ? MG_RP_ALPHA_SRM : 0;
    out->nominal += fr->bal_tested ? MG_RP_ALPHA_BALANCE : 0;
    out->nominal += fr->cell_tests ? MG_RP_ALPHA_CELL / 2 : 0;
    out->nominal += fr->cov_tests * MG_RP_ALPHA_COVERAGE;
  }
  for (i = 0; i < r.npairs; i++)
    for (k = 0; k < r.pairs[i].nt; k++)
      out->nominal += r.pairs[i].t[k].test ? MG_RP_ALPHA_COASSIGN : 0;
  if (plant == AA_NONE && r.nalarms)
    for (i = 0; i < r.nalarms; i++)
      print_message("A/A seed %" PRIu64 ": %s\n", seed, r.alarms[i].text);
  mg_rp_report_free(&r);
  mg_rp_log_free(&lg);
  mg_buf_free(&b);
}

static void test_aa_false_alarm_rate(void **state) {
  long seeds = env_long("MG_AA_SEEDS", 100), s, bound;
  int units = (int)env_long("MG_AA_UNITS", 2500);
  long any = 0, per[NCHECKS] = {0};
  double nominal = 0;
  size_t k;
  (void)state;

  for (s = 0; s < seeds; s++) {
    struct seed_result res;
    run_seed(1000 + (uint64_t)s, units, AA_NONE, AA_FEEDBACK && s % 2 == 0, &res);
    any += res.alarms > 0;
    for (k = 0; k < NCHECKS; k++)
      per[k] += res.by_check[k];
    nominal += res.nominal;
  }
  nominal /= (double)seeds;
  bound = binom_quantile(seeds, nominal, 0.999);
  print_message("A/A: %ld of %ld seeds with an alarm (%.2f%%); nominal "
                "family-wise rate %.2f%% (union bound), so at most %ld "
                "allowed (binomial 99.9th percentile)\n",
                any, seeds, 100.0 * (double)any / (double)seeds,
                100 * nominal, bound);
  for (k = 0; k < NCHECKS; k++)
    print_message("  %-17s %ld seeds\n", CHECKS[k], per[k]);
  assert_true(nominal > 0.01 && nominal < 0.05);
  assert_true(any <= bound);
}

static void test_planted_effects_found(void **state) {
  long seeds = env_long("MG_AA_PLANT_SEEDS", 10), s;
  int units = (int)env_long("MG_AA_UNITS", 2500);
  int p;
  (void)state;

  for (p = AA_NONE + 1; p < AA_NPLANTS; p++) {
    long found = 0;
    size_t want = NCHECKS;
    size_t k;
    for (k = 0; k < NCHECKS; k++)
      if (strcmp(CHECKS[k], AA_PLANT_CHECK[p]) == 0)
        want = k;
    assert_true(want < NCHECKS);
    for (s = 0; s < seeds; s++) {
      struct seed_result res;
      run_seed(5000 + (uint64_t)(p * 1000 + s), units, (enum aa_plant)p,
               AA_FEEDBACK && s % 2 == 1, &res);
      if (res.by_check[want])
        found++;
      else
        print_message("%s: seed %ld missed\n", AA_PLANT_NAMES[p], s);
    }
    print_message("planted %s: found by %s on %ld of %ld seeds\n",
                  AA_PLANT_NAMES[p], AA_PLANT_CHECK[p], found, seeds);
    assert_int_equal(found, seeds);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_aa_false_alarm_rate),
      cmocka_unit_test(test_planted_effects_found),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
