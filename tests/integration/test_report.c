/* test_report.c - `modelgate report` as a user runs it: the real binary on
 * generated logs with known answers (report_gen.h), in a scratch directory.
 *
 *   - an A/A comparison over two flags and three files, whose figures are
 *     checked against statistics computed independently here (two-pass
 *     delta method, sorted quantiles, chi-square), must raise no alarm, and
 *     neither may five more seeds;
 *   - a treatment that errs twice as often on long inputs must be found in
 *     the top input.chars quartile, not in the others;
 *   - lost treatment records (a sample ratio mismatch) must alarm;
 *   - heavy users clustered in one arm must be flagged;
 *   - two flags bucketing with one salt (correlated canaries) must alarm;
 *   - malformed lines are counted and skipped; usage errors exit 2,
 *     unreadable logs 1. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "harness.h"
#include "report_gen.h"

#define RUN_MS 120000

/* ---- helpers ------------------------------------------------------------ */

static void near(double a, double b, double tol, const char *what) {
  if (!(fabs(a - b) <= tol * fmax(1.0, fabs(b))))
    fail_msg("%s: %.17g is not within %g of %.17g", what, a, tol, b);
}

/* Run modelgate with args (NULL-ended) and return its exit status; *out
 * gets stdout and stderr. */
static int report(char **out, ...) {
  const char *argv[32];
  va_list ap;
  int n = 0;
  argv[n++] = MG_BIN;
  argv[n++] = "report";
  va_start(ap, out);
  while ((argv[n] = va_arg(ap, const char *)) != NULL && n < 30)
    n++;
  va_end(ap);
  argv[n] = NULL;
  return mg_h_run(argv, out, RUN_MS);
}

/* Write the scenario into a fresh directory, run the report as JSON over
 * all its files, and parse it. */
static cJSON *run_json(const struct rg_scen *s, struct rg_truth *t,
                       char *dir, size_t dirn) {
  char paths[8][512], outp[600], *out = NULL, *text;
  const char *argv[16];
  cJSON *j;
  int i, n = 0, rc;

  assert_int_equal(mg_h_tmpdir(dir, dirn), 0);
  rg_write(s, dir, paths, t);
  snprintf(outp, sizeof(outp), "%s/report.json", dir);
  argv[n++] = MG_BIN;
  argv[n++] = "report";
  argv[n++] = "--format";
  argv[n++] = "json";
  argv[n++] = "--out";
  argv[n++] = outp;
  for (i = 0; i < (s->files > 0 ? s->files : 1); i++)
    argv[n++] = paths[i];
  argv[n] = NULL;
  rc = mg_h_run(argv, &out, RUN_MS);
  if (rc != 0)
    fail_msg("modelgate report exited %d: %s", rc, out ? out : "");
  free(out);
  text = mg_h_read_file(outp, NULL);
  assert_non_null(text);
  j = cJSON_Parse(text);
  if (j == NULL)
    fail_msg("the report is not JSON: %.200s", text);
  free(text);
  return j;
}

static cJSON *get(const cJSON *o, const char *k) {
  cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  if (v == NULL)
    fail_msg("no \"%s\" in the report", k);
  return v;
}

static double num(const cJSON *o, const char *k) {
  cJSON *v = get(o, k);
  if (cJSON_IsNull(v))
    return NAN;
  if (!cJSON_IsNumber(v))
    fail_msg("\"%s\" is not a number", k);
  return v->valuedouble;
}

static cJSON *named(const cJSON *arr, const char *name) {
  cJSON *e;
  cJSON_ArrayForEach(e, arr) {
    cJSON *n = cJSON_GetObjectItemCaseSensitive(e, "name");
    if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0)
      return e;
  }
  fail_msg("no \"%s\" in the report", name);
  return NULL;
}

static int alarms_of(const cJSON *j, const char *check) {
  cJSON *a;
  int n = 0;
  cJSON_ArrayForEach(a, get(j, "alarms")) {
    if (check == NULL || strcmp(get(a, "check")->valuestring, check) == 0)
      n++;
  }
  return n;
}

static void print_alarms(const cJSON *j) {
  cJSON *a;
  cJSON_ArrayForEach(a, get(j, "alarms"))
      print_message("alarm: %s\n", get(a, "message")->valuestring);
}

static struct rg_scen aa(uint64_t seed) {
  struct rg_scen s;
  memset(&s, 0, sizeof(s));
  s.seed = seed;
  s.units = 20000;
  s.nflags = 2;
  s.weight_t = 30;
  s.heavy = 0.03;
  s.heavy_requests = 40;
  s.heavy_t = -1;
  s.err = 0.03;
  s.err_long_t = 0.03;
  s.files = 1;
  return s;
}

/* ---- the A/A, checked number by number ----------------------------------- */

static void check_flag_against_truth(const cJSON *flag,
                                     struct rg_arm arm[2]) {
  static const char *const names[2] = {"control", "treatment"};
  cJSON *vars = get(flag, "variants"), *v, *cmp, *m;
  double val[2][2], var[2][2], diff, se, obs[2], e0, chi2 = 0;
  int a, w;

  assert_string_equal(get(flag, "control")->valuestring, "control");
  for (a = 0; a < 2; a++) {
    v = named(vars, names[a]);
    assert_int_equal((uint64_t)num(v, "units"), arm[a].nu);
    assert_int_equal((uint64_t)num(v, "requests"), arm[a].requests);
    m = get(get(v, "metrics"), "error_rate");
    near(num(m, "value"), (double)arm[a].errors / (double)arm[a].requests,
         1e-12, "error rate");
    for (w = 0; w < 2; w++)
      rg_ratio(&arm[a], w, &val[a][w], &var[a][w]);
    near(num(m, "se"), sqrt(var[a][0]), 1e-9, "error rate se");
    m = get(get(v, "metrics"), "mean_latency_ms");
    near(num(m, "value"), val[a][1], 1e-12, "mean latency");
    m = get(v, "latency_ms");
    near(num(m, "p50"), rg_quantile(arm[a].ms, arm[a].nms, 0.5), 1e-9, "p50");
    near(num(m, "p95"), rg_quantile(arm[a].ms, arm[a].nms, 0.95), 1e-9,
         "p95");
    near(num(m, "p99"), rg_quantile(arm[a].ms, arm[a].nms, 0.99), 1e-9,
         "p99");
  }
  assert_true(cJSON_IsNull(get(named(vars, "control"), "vs_control")));
  cmp = get(named(vars, "treatment"), "vs_control");
  for (w = 0; w < 2; w++) {
    double df, q;
    m = get(cmp, w ? "mean_latency_ms" : "error_rate");
    diff = val[1][w] - val[0][w];
    se = sqrt(var[1][w] + var[0][w]);
    /* Welch-Satterthwaite, and Student's t by Simpson's rule. */
    df = (var[1][w] + var[0][w]) * (var[1][w] + var[0][w]) /
         (var[1][w] * var[1][w] / ((double)arm[1].nu - 1) +
          var[0][w] * var[0][w] / ((double)arm[0].nu - 1));
    q = rg_t_q975(df);
    near(num(m, "diff"), diff, 1e-9, "diff");
    near(num(m, "se"), se, 1e-9, "se of the difference");
    near(num(m, "df"), df, 1e-6, "Welch df");
    near(cJSON_GetArrayItem(get(m, "ci"), 0)->valuedouble, diff - q * se,
         1e-7, "ci low");
    near(cJSON_GetArrayItem(get(m, "ci"), 1)->valuedouble, diff + q * se,
         1e-7, "ci high");
    near(num(m, "p"), rg_t_p2(diff / se, df), 1e-7, "p");
  }
  /* Sample ratio: Pearson's statistic against 70/30, by hand. */
  obs[0] = (double)arm[0].nu;
  obs[1] = (double)arm[1].nu;
  e0 = (obs[0] + obs[1]) * 0.7;
  chi2 = (obs[0] - e0) * (obs[0] - e0) / e0 +
         (obs[1] - (obs[0] + obs[1] - e0)) * (obs[1] - (obs[0] + obs[1] - e0)) /
             (obs[0] + obs[1] - e0);
  m = get(get(flag, "checks"), "srm");
  near(num(m, "chi2"), chi2, 1e-9, "srm chi2");
  /* df 1: the survival function is erfc(sqrt(chi2 / 2)). */
  near(num(m, "p"), erfc(sqrt(chi2 / 2)), 1e-9, "srm p");
  assert_false(cJSON_IsTrue(get(m, "alarm")));
}

static void test_aa_against_independent_stats(void **state) {
  struct rg_scen s = aa(1);
  struct rg_truth t;
  char dir[256];
  cJSON *j, *in, *flags, *pair;
  (void)state;

  s.malformed = 7;
  s.files = 3; /* three instances */
  j = run_json(&s, &t, dir, sizeof(dir));
  in = get(j, "inputs");
  assert_int_equal(cJSON_GetArraySize(get(in, "files")), 3);
  assert_int_equal((uint64_t)num(in, "lines"), t.lines);
  assert_int_equal((uint64_t)num(in, "records"), t.records);
  assert_int_equal((uint64_t)num(in, "event_lines"), 1);
  assert_int_equal((uint64_t)num(in, "malformed_lines"), 7);
  assert_int_equal(cJSON_GetArraySize(get(in, "malformed_examples")), 7);
  if (alarms_of(j, NULL) != 0) {
    print_alarms(j);
    fail_msg("an A/A raised alarms");
  }
  flags = get(j, "flags");
  assert_int_equal(cJSON_GetArraySize(flags), 2);
  check_flag_against_truth(named(flags, "chat"), t.arm[0]);
  check_flag_against_truth(named(flags, "search"), t.arm[1]);
  assert_int_equal(cJSON_GetArraySize(get(j, "cross_flag")), 1);
  pair = cJSON_GetArrayItem(get(j, "cross_flag"), 0);
  assert_true(cJSON_IsTrue(get(pair, "tested")));
  assert_false(cJSON_IsTrue(get(pair, "alarm")));
  near(num(pair, "ratio"), 1.0, 0.2, "co-assignment ratio");
  assert_int_equal((uint64_t)num(pair, "shared_units"), 20000);
  cJSON_Delete(j);
  rg_truth_free(&t);
}

static void test_aa_seeds_clean(void **state) {
  uint64_t seed;
  (void)state;
  for (seed = 2; seed <= 6; seed++) {
    struct rg_scen s = aa(seed);
    struct rg_truth t;
    char dir[256];
    cJSON *j;
    if (seed % 2)
      s.weight_t = 50;
    j = run_json(&s, &t, dir, sizeof(dir));
    if (alarms_of(j, NULL) != 0) {
      print_alarms(j);
      fail_msg("A/A seed %" PRIu64 " raised alarms", seed);
    }
    cJSON_Delete(j);
    rg_truth_free(&t);
  }
}

/* ---- planted effects ----------------------------------------------------- */

static void test_planted_long_input_errors(void **state) {
  struct rg_scen s = aa(101);
  struct rg_truth t;
  char dir[256];
  cJSON *j, *cells, *c, *v;
  int chars_cells = 0, flagged = 0;
  (void)state;

  s.nflags = 1;
  s.weight_t = 50;
  s.err_long_t = 0.06; /* twice the rate, on the top quartile only */
  j = run_json(&s, &t, dir, sizeof(dir));
  print_alarms(j);
  assert_true(alarms_of(j, "input_axis") >= 1);
  assert_int_equal(alarms_of(j, "srm"), 0);
  assert_int_equal(alarms_of(j, "balance"), 0);
  cells = get(get(cJSON_GetArrayItem(get(j, "flags"), 0), "input_axis"),
              "cells");
  cJSON_ArrayForEach(c, cells) {
    cJSON *err;
    if (strcmp(get(c, "axis")->valuestring, "chars") != 0)
      continue;
    chars_cells++;
    v = named(get(c, "variants"), "treatment");
    err = get(get(v, "vs_control"), "error_rate");
    if (cJSON_IsNull(get(c, "max"))) {
      /* The top quartile: found, about +3 points. */
      assert_true(cJSON_IsTrue(get(err, "flagged")));
      near(num(err, "diff"), 0.03, 0.3, "planted difference");
      assert_true(num(err, "p_adjusted") < 1e-6);
      flagged++;
    } else {
      assert_false(cJSON_IsTrue(get(err, "flagged")));
    }
  }
  assert_int_equal(chars_cells, 4);
  assert_int_equal(flagged, 1);
  cJSON_Delete(j);
  rg_truth_free(&t);
}

static void test_planted_srm(void **state) {
  struct rg_scen s = aa(202);
  struct rg_truth t;
  char dir[256];
  cJSON *j, *srm;
  double n0, n1, e, chi2;
  (void)state;

  s.nflags = 1;
  s.weight_t = 50;
  s.lose_t = 0.08; /* 8% of the treatment's units never logged */
  j = run_json(&s, &t, dir, sizeof(dir));
  assert_int_equal(alarms_of(j, "srm"), 1);
  srm = get(get(cJSON_GetArrayItem(get(j, "flags"), 0), "checks"), "srm");
  assert_true(cJSON_IsTrue(get(srm, "alarm")));
  n0 = (double)t.arm[0][0].nu;
  n1 = (double)t.arm[0][1].nu;
  e = (n0 + n1) / 2;
  chi2 = (n0 - e) * (n0 - e) / e + (n1 - e) * (n1 - e) / e;
  near(num(srm, "chi2"), chi2, 1e-9, "srm chi2");
  near(num(srm, "p"), erfc(sqrt(chi2 / 2)), 1e-9, "srm p");
  assert_true(num(srm, "p") < 1e-6);
  cJSON_Delete(j);
  rg_truth_free(&t);
}

static void test_planted_heavy_users(void **state) {
  struct rg_scen s = aa(303);
  struct rg_truth t;
  char dir[256];
  cJSON *j, *bal, *flag;
  double heavy_t, heavy_c;
  (void)state;

  s.nflags = 1;
  s.weight_t = 50;
  s.heavy = 0.05;
  s.heavy_requests = 60;
  s.heavy_t = 0.85; /* heavy users cluster in the treatment */
  j = run_json(&s, &t, dir, sizeof(dir));
  print_alarms(j);
  assert_int_equal(alarms_of(j, "balance"), 1);
  assert_int_equal(alarms_of(j, "srm"), 0);
  flag = cJSON_GetArrayItem(get(j, "flags"), 0);
  bal = get(get(flag, "checks"), "balance");
  assert_true(cJSON_IsTrue(get(bal, "alarm")));
  assert_true(num(bal, "p") < 1e-20);
  heavy_t = num(named(get(flag, "variants"), "treatment"), "heavy_units");
  heavy_c = num(named(get(flag, "variants"), "control"), "heavy_units");
  assert_true(heavy_t > 3 * heavy_c);
  cJSON_Delete(j);
  rg_truth_free(&t);
}

static void test_planted_coassignment(void **state) {
  struct rg_scen s = aa(404);
  struct rg_truth t;
  char dir[256];
  cJSON *j, *pair;
  (void)state;

  /* Both flags bucket with one salt and both canaries sit at buckets
   * 0..999: the same units are in both treatments (the "hash(user_id) %
   * 100" trap). */
  s.salt[0] = s.salt[1] = "shared";
  s.weight_t = 10;
  j = run_json(&s, &t, dir, sizeof(dir));
  assert_int_equal(alarms_of(j, "coassignment"), 1);
  pair = cJSON_GetArrayItem(get(j, "cross_flag"), 0);
  assert_true(cJSON_IsTrue(get(pair, "alarm")));
  assert_true(num(pair, "ratio") > 5);
  /* Every unit in one treatment is in the other. */
  assert_int_equal((uint64_t)num(pair, "a_only"), 0);
  assert_int_equal((uint64_t)num(pair, "b_only"), 0);
  cJSON_Delete(j);
  rg_truth_free(&t);
}

/* ---- feedback, cost and decide, end to end --------------------------------- */

/* A decision line of flag chat, one request of unit u. */
static void fb_decision(FILE *o, int u, bool treat, const char *reason,
                        const char *endpoint, double cost) {
  fprintf(o,
          "{\"ts\":\"2026-12-01T10:00:00.000Z\",\"id\":\"%032x\","
          "\"endpoint\":\"%s\",\"flag\":\"chat\",\"unit\":%s%s%d%s,"
          "\"unit_kind\":\"user\",\"unit_source\":%s,\"variant\":\"%s\","
          "\"reason\":\"%s\",\"weights\":{\"control\":50,\"treatment\":50},"
          "\"input\":{\"chars\":%d,\"tools\":0},\"tier\":\"primary\","
          "\"status\":200,\"error\":false,\"ms\":%d,\"tokens\":{\"prompt\":"
          "10,\"completion\":5,\"cached\":2,\"reasoning\":null},"
          "\"cost\":%.6f,\"client\":\"app\",\"instance\":\"i-%d\"}\n",
          u + 1, endpoint, strcmp(reason, "no_unit") ? "\"u-" : "", "", u,
          strcmp(reason, "no_unit") ? "\"" : "",
          strcmp(reason, "no_unit") ? "\"safety_identifier\"" : "null",
          treat ? "treatment" : "control", reason, 100 + u % 900,
          200 + u % 50, cost, u % 2);
}

static void fb_line(FILE *o, int u, const char *metric, const char *value,
                    const char *ts) {
  fprintf(o,
          "{\"ts\":\"%s\",\"feedback\":{\"decision_id\":\"%032x\","
          "\"metric\":\"%s\",\"value\":%s,\"unit\":null,\"client\":"
          "\"app\",\"instance\":\"i-9\"}}\n",
          ts, u + 1, metric, value);
}

static void test_feedback_end_to_end(void **state) {
  char dir[256], dec[600], fb[600], cfg[600], bad[600], outp[600];
  char *out = NULL, *text;
  double yes[2] = {0, 0}, lines[2] = {0, 0}, cost[2] = {0, 0}, reqs[2] = {0, 0};
  cJSON *j, *flag, *t, *c, *acc;
  FILE *fd, *ff;
  int u;
  (void)state;

  assert_int_equal(mg_h_tmpdir(dir, sizeof(dir)), 0);
  snprintf(dec, sizeof(dec), "%s/decisions.jsonl", dir);
  snprintf(fb, sizeof(fb), "%s/feedback.jsonl", dir);
  fd = fopen(dec, "w");
  ff = fopen(fb, "w");
  assert_non_null(fd);
  assert_non_null(ff);
  /* 600 units of one request each, alternating arms; the treatment's
   * answers are right 85% of the time, the control's 60% (by unit id,
   * so the truth is known exactly); feedback for two decisions in three,
   * half of it in the other file, some before its decision. */
  for (u = 0; u < 600; u++) {
    bool treat = u % 2 == 1, ok = treat ? u % 20 < 17 : u % 10 < 6;
    double cst = (treat ? 0.0012 : 0.0010) * (1 + (u % 7) / 10.0);
    fb_decision(fd, u, treat, "rollout", u % 4 < 2 ? "chat" : "responses",
                cst);
    cost[treat] += cst;
    reqs[treat] += 1;
    if (u % 3 == 0)
      continue;
    fb_line(u % 2 ? ff : fd, u, "accuracy", ok ? "true" : "false",
            "2026-12-02T10:00:00.000Z");
    yes[treat] += ok;
    lines[treat] += 1;
  }
  /* Superseded: an earlier, opposite word for five decisions, in the other
   * file and after the later one in reading order. */
  for (u = 1; u <= 9; u += 2) {
    bool ok = u % 20 < 17;
    if (u % 3 == 0)
      continue;
    fb_line(fd, u, "accuracy", ok ? "false" : "true",
            "2026-12-02T09:00:00.000Z");
  }
  /* A decision that was not randomized, with feedback; and orphans. */
  fb_decision(fd, 1000, false, "no_unit", "chat", 0.001);
  fb_line(ff, 1000, "accuracy", "true", "2026-12-02T10:00:00.000Z");
  for (u = 2000; u < 2007; u++)
    fb_line(ff, u, "accuracy", "true", "2026-12-02T10:00:00.000Z");
  assert_int_equal(fclose(fd), 0);
  assert_int_equal(fclose(ff), 0);

  snprintf(cfg, sizeof(cfg), "%s/config.json", dir);
  assert_int_equal(
      mg_h_write_file(cfg,
                      "{\"feedback\":{\"metrics\":{\"accuracy\":{\"type\":"
                      "\"boolean\"}}},\"flags\":{\"chat\":{\"decide\":{"
                      "\"metric\":\"accuracy\",\"min_lift\":0.1,"
                      "\"guardrails\":{\"cost_per_request\":{\"max_ratio\":"
                      "1.5}}}}}}"),
      0);
  snprintf(outp, sizeof(outp), "%s/report.json", dir);
  if (report(&out, "-c", cfg, "--format", "json", "--out", outp, fb, dec,
             NULL) != 0)
    fail_msg("modelgate report failed: %s", out);
  free(out);
  text = mg_h_read_file(outp, NULL);
  j = cJSON_Parse(text);
  free(text);
  assert_non_null(j);
  /* 400 + 3 superseded + 1 + 7 lines; 400 joined, 1 not randomized, 7
   * orphans, 3 superseded (u = 1, 5, 7: u = 3 and 9 have no feedback). */
  assert_int_equal((uint64_t)num(get(j, "inputs"), "feedback_lines"), 411);
  assert_int_equal((uint64_t)num(get(j, "inputs"), "feedback_joined"), 400);
  assert_int_equal((uint64_t)num(get(j, "inputs"), "feedback_not_randomized"),
                   1);
  assert_int_equal((uint64_t)num(get(j, "inputs"), "feedback_orphans"), 7);
  assert_int_equal((uint64_t)num(get(j, "inputs"), "feedback_superseded"), 3);
  flag = named(get(j, "flags"), "chat");
  assert_int_equal((uint64_t)num(get(flag, "unit_sources"),
                                 "safety_identifier"),
                   600);
  assert_int_equal((uint64_t)num(get(flag, "unit_sources"), "none"), 1);
  t = named(get(flag, "variants"), "treatment");
  c = named(get(flag, "variants"), "control");
  assert_int_equal((uint64_t)num(c, "no_unit_records"), 1);
  assert_int_equal((uint64_t)num(get(t, "tokens"), "cached"), 600);
  /* One request and at most one feedback line per unit: the means are
   * plain shares, computed here from the truth. */
  acc = get(get(t, "feedback"), "accuracy");
  near(num(acc, "value"), yes[1] / lines[1], 1e-12, "treatment accuracy");
  near(num(get(get(c, "feedback"), "accuracy"), "value"), yes[0] / lines[0],
       1e-12, "control accuracy");
  near(num(get(acc, "vs_control"), "diff"),
       yes[1] / lines[1] - yes[0] / lines[0], 1e-12, "accuracy lift");
  near(num(get(t, "cost"), "per_request"), cost[1] / reqs[1], 1e-6,
       "cost per request");
  near(num(get(get(t, "metrics"), "feedback_coverage"), "value"),
       lines[1] / reqs[1], 1e-12, "coverage");
  /* +25 points against a declared 10, cost ratio 1.2 <= 1.5: ship. */
  assert_string_equal(get(get(t, "verdict"), "verdict")->valuestring, "ship");
  assert_true(cJSON_IsNull(get(c, "verdict")));
  cJSON_Delete(j);

  /* The text says it too; --by endpoint splits the flag in two sections
   * and does not compare them as two flags. */
  assert_int_equal(report(&out, "-c", cfg, "--by", "endpoint", dec, fb, NULL),
                   0);
  assert_non_null(strstr(out, "== flag chat [chat] =="));
  assert_non_null(strstr(out, "== flag chat [responses] =="));
  assert_null(strstr(out, "== cross-flag co-assignment"));
  assert_non_null(strstr(out, "treatment: ship."));
  assert_non_null(strstr(out, "reason no_unit"));
  free(out);

  /* A bad config: exit 1, every error with its path. */
  snprintf(bad, sizeof(bad), "%s/bad.json", dir);
  assert_int_equal(
      mg_h_write_file(bad, "{\"flags\":{\"chat\":{\"decide\":{\"metric\":"
                           "\"accuracy\",\"min_lift\":-1}}},\"feedback\":"
                           "{\"metrics\":{\"accuracy\":{\"type\":\"int\"}}}}"),
      0);
  assert_int_equal(report(&out, "-c", bad, dec, NULL), 1);
  assert_non_null(strstr(out, "$.flags.chat.decide.min_lift"));
  assert_non_null(strstr(out, "$.feedback.metrics.accuracy.type"));
  free(out);
  assert_int_equal(report(&out, "--by", "client", dec, NULL), 2);
  free(out);
}

/* ---- the command line ---------------------------------------------------- */

static void test_cli(void **state) {
  struct rg_scen s = aa(505);
  struct rg_truth t;
  char dir[256], paths[8][512], cmd[2048], *out = NULL;
  const char *sh[4];
  (void)state;

  s.units = 2000;
  assert_int_equal(mg_h_tmpdir(dir, sizeof(dir)), 0);
  rg_write(&s, dir, paths, &t);

  assert_int_equal(report(&out, NULL), 2);
  assert_non_null(strstr(out, "no LOG given"));
  free(out);
  assert_int_equal(report(&out, "--bogus", paths[0], NULL), 2);
  assert_non_null(strstr(out, "unknown option: --bogus"));
  assert_non_null(strstr(out, "usage: modelgate report"));
  free(out);
  assert_int_equal(report(&out, "--format", "xml", paths[0], NULL), 2);
  free(out);
  assert_int_equal(report(&out, paths[0], "--control", NULL), 2);
  free(out);
  assert_int_equal(report(&out, "--help", NULL), 0);
  assert_non_null(strstr(out, "--format"));
  free(out);
  assert_int_equal(report(&out, paths[0], "/nonexistent/decisions.jsonl",
                          NULL),
                   1);
  assert_non_null(strstr(out, "cannot read /nonexistent/decisions.jsonl"));
  free(out);
  assert_int_equal(report(&out, "--flag", "nope", paths[0], NULL), 1);
  assert_non_null(strstr(out, "no records for flag \"nope\""));
  free(out);

  /* Text by default; --flag narrows it; --control changes the baseline. */
  assert_int_equal(report(&out, paths[0], NULL), 0);
  assert_non_null(strstr(out, "ALARMS: none"));
  assert_non_null(strstr(out, "== flag chat =="));
  assert_non_null(strstr(out, "== flag search =="));
  assert_non_null(strstr(out, "treatment vs control"));
  free(out);
  assert_int_equal(report(&out, "--flag=search", "--control", "treatment",
                          paths[0], NULL),
                   0);
  assert_null(strstr(out, "== flag chat =="));
  assert_non_null(strstr(out, "control: treatment (--control)"));
  assert_non_null(strstr(out, "control vs treatment"));
  free(out);

  /* "-" reads stdin. */
  snprintf(cmd, sizeof(cmd), "%s report --format json - < %s", MG_BIN,
           paths[0]);
  sh[0] = "/bin/sh";
  sh[1] = "-c";
  sh[2] = cmd;
  sh[3] = NULL;
  assert_int_equal(mg_h_run(sh, &out, RUN_MS), 0);
  assert_non_null(strstr(out, "\"files\":[\"<stdin>\"]"));
  free(out);
  rg_truth_free(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_aa_against_independent_stats),
      cmocka_unit_test(test_aa_seeds_clean),
      cmocka_unit_test(test_planted_long_input_errors),
      cmocka_unit_test(test_planted_srm),
      cmocka_unit_test(test_planted_heavy_users),
      cmocka_unit_test(test_planted_coassignment),
      cmocka_unit_test(test_feedback_end_to_end),
      cmocka_unit_test(test_cli),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
