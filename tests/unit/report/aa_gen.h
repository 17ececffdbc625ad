/* aa_gen.h - decision logs with realistic traffic for measuring the
 * report's false-alarm rate (A/A) and its power on planted effects
 * (issue 11.2): test_report_aa.c runs many seeds through the reader and
 * the analysis in memory.
 *
 * Traffic. Units have an activity drawn from a Pareto law (P(n >= k) =
 * k^-1.7, capped at 300 requests: a few users send most requests) and a
 * propensity to fail of their own (log-normal, so requests of one unit are
 * correlated, as in life). Three flags share them, each bucketed with its
 * own salt by the proxy's own mg_bucket:
 *   chat    70/30, confidence varying per request (0.5 .. 1)
 *   search  50/50, confidence constant 0.9 in both arms (the case that once
 *           alarmed on 6 of 8 seeds)
 *   embed   90/10, no confidence at all (embeddings), no completion tokens
 * Inputs: input.chars log-normal (median 600), tools 0 (60%), 1-2, 3+;
 * latency log-normal (median 350 ms + chars / 10, sigma 0.5); 2% errors
 * (times the unit's propensity), 5% fallbacks, 40% of them low-confidence;
 * tokens; costs from tokens at a price. Some requests have no unit
 * (reason "no_unit") and some records another reason ("rule:0"): neither
 * may enter the comparison. With feedback, a share of chat decisions get
 * an "accuracy" line (boolean) and a "rating" line (float), written in the
 * same log before or after their decision.
 *
 * Planted effects (enum aa_plant) change what the records say. Include
 * after <cmocka.h>. */
#ifndef MG_TEST_AA_GEN_H
#define MG_TEST_AA_GEN_H

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/buf.h"
#include "common/hash.h"
#include "routing/flag.h"

enum aa_plant {
  AA_NONE,
  AA_SRM,            /* chat at 50/50 loses 28% of its treatment units'
                      * records: 58/42, as issue 11 found it */
  AA_HEAVY,          /* chat: heavy users go to the treatment with 0.8 */
  AA_COASSIGN_50,    /* chat at 50/50 bucketed with search's salt */
  AA_COASSIGN_10,    /* chat and embed at 10% with one salt */
  AA_LONG_FAILURES,  /* chat at 50/50, its treatment failing 4x on the
                      * longest quarter of inputs (seeds of this plant get
                      * 2.4 times the units: a quarter of the requests is
                      * what the test sees) */
  AA_FEEDBACK_BIAS,  /* chat's treatment decisions get feedback with 0.45,
                      * the control's with 0.30 (feedback always on) */
  AA_NPLANTS
};

static const char *const AA_PLANT_NAMES[AA_NPLANTS] = {
    "none", "srm", "heavy users", "co-assignment 50/50",
    "co-assignment 10%", "4x failures on long inputs",
    "a biased feedback channel"};

/* The check that must find each plant. */
static const char *const AA_PLANT_CHECK[AA_NPLANTS] = {
    NULL,         "srm",        "balance",          "coassignment",
    "coassignment", "input_axis", "feedback_coverage"};

struct aa_rng {
  uint64_t s;
};

static uint64_t aa_next(struct aa_rng *r) {
  uint64_t z = (r->s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static double aa_unif(struct aa_rng *r) {
  return ((double)(aa_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* A standard normal by Box-Muller. */
static double aa_norm(struct aa_rng *r) {
  double u = aa_unif(r), v = aa_unif(r);
  return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

struct aa_flag {
  const char *name, *salt;
  uint32_t treat_bp;   /* treatment share in basis points, from bucket 0 */
  int confidence;      /* 0 none, 1 varying, 2 constant 0.9 */
};

/* Long inputs: the top quarter of input.chars, log-normal with median 600
 * and sigma 1.2: 600 e^(1.2 * 0.6745). */
#define AA_LONG_CHARS 1345

/* Append one seed's log to out. units: units of traffic; feedback: write
 * feedback lines for a share of chat's decisions. */
static __attribute__((unused)) void aa_write(struct mg_buf *out, uint64_t seed,
                                             int units, enum aa_plant plant,
                                             bool feedback) {
  struct aa_flag flags[3] = {{"chat", "chat", 3000, 1},
                             {"search", "search", 5000, 2},
                             {"embed", "embed", 1000, 0}};
  struct aa_rng r = {seed * UINT64_C(0x2545f4914f6cdd1d) + 17};
  struct mg_buf later;
  uint64_t line = 0;
  int u, f, k;

  if (plant == AA_SRM || plant == AA_LONG_FAILURES) {
    flags[0].treat_bp = 5000;
    if (plant == AA_LONG_FAILURES)
      units = units * 12 / 5;
  } else if (plant == AA_COASSIGN_50) {
    flags[0].salt = "search";
    flags[0].treat_bp = 5000;
  } else if (plant == AA_COASSIGN_10) {
    flags[0].salt = flags[2].salt = "shared";
    flags[0].treat_bp = flags[2].treat_bp = 1000;
  }
  mg_buf_init(&later, SIZE_MAX);
  for (u = 0; u < units; u++) {
    char id[48], hex[17];
    double act = pow(aa_unif(&r), -1 / 1.7), prop = exp(0.5 * aa_norm(&r));
    int n = act > 300 ? 300 : (int)act;
    bool lost = aa_unif(&r) < 0.28;

    snprintf(id, sizeof(id), "user-%" PRIu64 "-%d", seed, u);
    snprintf(hex, sizeof(hex), "%016" PRIx64, mg_xxh64(id, strlen(id), 0));
    for (f = 0; f < 3; f++) {
      const struct aa_flag *fl = &flags[f];
      uint32_t bucket = mg_bucket(fl->salt, strlen(fl->salt), id, strlen(id));
      bool treat = bucket < fl->treat_bp;
      int nf;
      if (aa_unif(&r) < 0.2)
        continue; /* not every unit uses every feature */
      nf = (int)ceil(n * (0.5 + aa_unif(&r)));
      if (f == 0 && plant == AA_HEAVY) {
        /* Units of 8 requests or more (about the top 5%) go to the
         * treatment with 0.8; the others with what keeps 30% overall. */
        treat = aa_unif(&r) < (nf >= 8 ? 0.8 : 0.27);
      }
      if (f == 0 && plant == AA_SRM && treat && lost)
        continue;
      for (k = 0; k < nf; k++) {
        double chars = 600 * exp(1.2 * aa_norm(&r)), ux = aa_unif(&r);
        int tools = ux < 0.6 ? 0 : ux < 0.85 ? 1 + (int)(ux * 10) % 2 : 3;
        double pe = 0.02 * prop, ms, conf = 0, cost;
        bool err, fb, lc, no_unit = aa_unif(&r) < 0.01;
        bool other = aa_unif(&r) < 0.02;
        int prompt = (int)(chars / 4), completion;
        char did[33];
        if (plant == AA_LONG_FAILURES && f == 0 && treat &&
            chars > AA_LONG_CHARS)
          pe *= 4;
        err = aa_unif(&r) < pe;
        fb = !err && aa_unif(&r) < 0.05;
        lc = fb && aa_unif(&r) < 0.4;
        ms = (350 + chars / 10) * exp(0.5 * aa_norm(&r));
        if (fl->confidence == 1)
          conf = floor((0.5 + 0.5 * aa_unif(&r)) * 1000) / 1000;
        else if (fl->confidence == 2)
          conf = 0.9;
        completion = f == 2 ? 0 : (int)(40 * exp(0.8 * aa_norm(&r)));
        cost = err ? 0 : (prompt * 2.5 + completion * 10.0) / 1e6;
        snprintf(did, sizeof(did), "%016" PRIx64 "%016" PRIx64, aa_next(&r),
                 aa_next(&r));
        line++;
        assert_int_equal(
            mg_buf_printf(
                out,
                "{\"ts\":\"2026-12-01T10:%02d:%02d.%03dZ\",\"id\":\"%s\","
                "\"endpoint\":\"%s\",\"flag\":\"%s\",\"unit\":%s%s%s,"
                "\"unit_kind\":\"user\",\"unit_source\":%s,\"bucket\":%u,"
                "\"variant\":\"%s\",\"reason\":\"%s\",\"weights\":"
                "{\"control\":%g,\"treatment\":%g},\"input\":{\"chars\":%d,"
                "\"messages\":2,\"tools\":%d,\"stream\":false},"
                "\"tier\":\"%s\",\"fallback_reason\":%s,\"confidence\":",
                (int)(line / 60) % 60, (int)line % 60, (int)(line % 1000), did,
                f == 2 ? "embeddings" : "chat", fl->name,
                no_unit ? "" : "\"", no_unit ? "null" : hex,
                no_unit ? "" : "\"", no_unit ? "null" : "\"user\"", bucket,
                no_unit || other || !treat ? "control" : "treatment",
                no_unit ? "no_unit" : other ? "rule:0" : "rollout",
                100 - fl->treat_bp / 100.0, fl->treat_bp / 100.0, (int)chars,
                tools, err ? "none" : fb ? "fallback" : "primary",
                lc ? "\"low_confidence\"" : fb ? "\"timeout\"" : "null"),
            0);
        if (fl->confidence)
          assert_int_equal(mg_buf_printf(out, "%.3f", conf), 0);
        else
          assert_int_equal(mg_buf_puts(out, "null"), 0);
        assert_int_equal(
            mg_buf_printf(out,
                          ",\"status\":%d,\"error\":%s,\"ms\":%.1f,"
                          "\"tokens\":{\"prompt\":%d,\"completion\":%d,"
                          "\"cached\":%d,\"reasoning\":null},\"cost\":%.8f,"
                          "\"client\":null,\"instance\":\"i-%d\"}\n",
                          err ? 502 : 200, err ? "true" : "false", ms, prompt,
                          completion, prompt / 3, cost, (int)(line % 3)),
            0);
        if ((feedback || plant == AA_FEEDBACK_BIAS) && f == 0 && !err &&
            aa_unif(&r) < (plant == AA_FEEDBACK_BIAS && treat ? 0.45 : 0.3)) {
          /* A thumbs-up or down, right after the answer or much later
           * (here: at the end of the log), and sometimes a rating. */
          struct mg_buf *dst = aa_unif(&r) < 0.5 ? out : &later;
          bool ok = aa_unif(&r) < 0.8;
          assert_int_equal(
              mg_buf_printf(dst,
                            "{\"ts\":\"2026-12-02T10:00:00.000Z\","
                            "\"feedback\":{\"decision_id\":\"%s\","
                            "\"metric\":\"accuracy\",\"value\":%s,"
                            "\"unit\":null,\"client\":null,"
                            "\"instance\":\"i-0\"}}\n",
                            did, ok ? "true" : "false"),
              0);
          if (aa_unif(&r) < 0.5)
            assert_int_equal(
                mg_buf_printf(dst,
                              "{\"ts\":\"2026-12-02T10:00:01.000Z\","
                              "\"feedback\":{\"decision_id\":\"%s\","
                              "\"metric\":\"rating\",\"value\":%.2f,"
                              "\"unit\":null,\"client\":null,"
                              "\"instance\":\"i-1\"}}\n",
                              did, floor(aa_unif(&r) * 100) / 100),
                0);
        }
      }
    }
  }
  if (later.len)
    assert_int_equal(mg_buf_append(out, later.data, later.len), 0);
  mg_buf_free(&later);
}

#endif
