/* report_gen.h - synthetic decision logs with planted effects for the
 * `modelgate report` integration tests (test_report.c, test_report_html.c),
 * and the ground truth of each log computed while writing it.
 *
 * Every unit sends a few requests (heavy units many) to every flag of the
 * scenario; its arm comes from the proxy's own bucketing (mg_bucket with the
 * flag's salt, treatment from bucket 0 up), or from a biased coin when the
 * scenario clusters heavy users. Effects are planted by changing what the
 * records say: a treatment's error rate on long inputs, lost treatment
 * records (a sample ratio mismatch), a salt shared by two flags (correlated
 * canaries). Latencies are multiples of 1/4 ms so that float storage in the
 * reader is exact and the truth can be compared to many digits.
 *
 * Functions are static and marked unused: each test takes what it needs.
 * Include after <cmocka.h>. */
#ifndef MG_TEST_REPORT_GEN_H
#define MG_TEST_REPORT_GEN_H

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"
#include "routing/flag.h"

#define RG_U static __attribute__((unused))
#define RG_MAX_FLAGS 2
/* input.chars is 50 * 200^u for uniform u: its 75th percentile. */
#define RG_LONG_CHARS 2659
#define M_PI_RG 3.14159265358979323846

struct rg_scen {
  uint64_t seed;
  int units;
  int nflags;                     /* "chat", then "search" */
  const char *salt[RG_MAX_FLAGS]; /* bucketing salts; NULL: the flag name */
  double weight_t;                /* logged treatment weight, percent */
  double lose_t;                  /* share of treatment units whose records
                                   * never reach the log (planted SRM) */
  double heavy;                   /* share of heavy units */
  int heavy_requests;             /* requests of a heavy unit, per flag */
  double heavy_t;                 /* P(treatment | heavy); < 0: bucketing */
  double err;                     /* error rate */
  double err_long_t;              /* the treatment's on long inputs */
  int malformed;                  /* garbage lines sprinkled in */
  int files;                      /* split round-robin over this many */
  double feedback;                /* share of answers with an "accuracy"
                                   * feedback line (right after them) */
};

/* One unit's sums, for the independent delta method. */
struct rg_unit {
  double req, err, ms;
};

struct rg_arm {
  struct rg_unit *u; /* owned */
  size_t nu, capu;
  double *ms;        /* owned: every request's latency */
  size_t nms, capms;
  uint64_t requests, errors;
};

struct rg_truth {
  struct rg_arm arm[RG_MAX_FLAGS][2]; /* [flag][0 control, 1 treatment] */
  uint64_t lines, records, malformed;
};

struct rg_rng {
  uint64_t s;
};

static uint64_t rg_next(struct rg_rng *r) {
  uint64_t z = (r->s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static double rg_unif(struct rg_rng *r) {
  return (double)(rg_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

static const char *const RG_FLAGS[RG_MAX_FLAGS] = {"chat", "search"};

static void rg_push(void **p, size_t *n, size_t *cap, size_t size,
                    const void *v) {
  if (*n == *cap) {
    *cap = *cap ? *cap * 2 : 1024;
    *p = realloc(*p, *cap * size);
    assert_non_null(*p);
  }
  memcpy((char *)*p + *n * size, v, size);
  (*n)++;
}

RG_U void rg_truth_free(struct rg_truth *t) {
  int f, a;
  for (f = 0; f < RG_MAX_FLAGS; f++)
    for (a = 0; a < 2; a++) {
      free(t->arm[f][a].u);
      free(t->arm[f][a].ms);
    }
  memset(t, 0, sizeof(*t));
}

/* Write the scenario's log to dir/log-<i>.jsonl (i < s->files); paths get
 * the file names (each at least 512 bytes). */
RG_U void rg_write(const struct rg_scen *s, const char *dir,
                   char paths[][512], struct rg_truth *t) {
  FILE *out[8];
  struct rg_rng r = {s->seed};
  int nf = s->files > 0 ? s->files : 1, i, f, u, k;
  uint64_t line = 0;

  memset(t, 0, sizeof(*t));
  assert_true(nf <= 8);
  for (i = 0; i < nf; i++) {
    snprintf(paths[i], 512, "%s/log-%d.jsonl", dir, i);
    out[i] = fopen(paths[i], "w");
    assert_non_null(out[i]);
  }
  /* An event line and a non-rollout record, which the comparison skips. */
  fprintf(out[0], "{\"ts\":\"2026-11-21T12:00:00.000Z\",\"event\":"
                  "\"reload\",\"ok\":true}\n");
  t->lines++;
  for (u = 0; u < s->units; u++) {
    char id[32], hex[17];
    bool heavy = rg_unif(&r) < s->heavy;
    int n = heavy ? s->heavy_requests : 1 + (int)(rg_unif(&r) * 8);
    bool lost_draw = rg_unif(&r) < s->lose_t;

    snprintf(id, sizeof(id), "user-%" PRIu64 "-%d", s->seed, u);
    snprintf(hex, sizeof(hex), "%016" PRIx64, mg_xxh64(id, strlen(id), 0));
    for (f = 0; f < s->nflags; f++) {
      const char *salt = s->salt[f] ? s->salt[f] : RG_FLAGS[f];
      struct rg_unit sum = {0, 0, 0};
      bool treat;
      if (s->heavy_t >= 0) {
        /* Heavy units go to the treatment with heavy_t; light ones with
         * what keeps the overall share at the weight. */
        double pl = (s->weight_t / 100 - s->heavy * s->heavy_t) /
                    (1 - s->heavy);
        treat = rg_unif(&r) < (heavy ? s->heavy_t : pl);
      } else {
        treat = mg_bucket(salt, strlen(salt), id, strlen(id)) <
                (uint32_t)(s->weight_t * 100);
      }
      if (treat && lost_draw)
        continue;
      for (k = 0; k < n; k++) {
        double uc = rg_unif(&r), ue = rg_unif(&r), ux = rg_unif(&r);
        int chars = (int)(50 * pow(200, uc));
        int tools = ux < 0.6 ? 0 : ux < 0.85 ? 1 + (int)(ux * 10) % 2
                                             : 3 + (int)(ux * 100) % 4;
        bool longi = chars > RG_LONG_CHARS;
        bool err = ue < (treat && longi ? s->err_long_t : s->err);
        bool fb = !err && rg_unif(&r) < 0.05;
        bool lc = fb && rg_unif(&r) < 0.4;
        double conf = floor((0.5 + 0.5 * rg_unif(&r)) * 1024) / 1024;
        double ms = floor((300 + chars / 8.0 + 200 * rg_unif(&r)) * 4) / 4;
        FILE *o = out[line++ % (uint64_t)nf];
        struct rg_arm *arm = &t->arm[f][treat];
        uint64_t id_hi = rg_next(&r), id_lo = rg_next(&r);

        fprintf(o,
                "{\"ts\":\"2026-11-21T12:%02d:%02d.%03dZ\",\"id\":\"%016" PRIx64
                "%016" PRIx64 "\",\"config\":\"00c0ffee00c0ffee\","
                "\"endpoint\":\"chat\",\"alias\":\"%s\",\"flag\":\"%s\","
                "\"unit\":\"%s\",\"unit_kind\":\"user\",\"bucket\":%u,"
                "\"variant\":\"%s\",\"reason\":\"rollout\",\"weights\":"
                "{\"control\":%g,\"treatment\":%g},\"attrs\":{},"
                "\"input\":{\"chars\":%d,\"messages\":2,\"tools\":%d,"
                "\"stream\":false},\"attempts\":[{\"target\":\"%s\","
                "\"outcome\":\"%s\",\"status\":%d,\"ms\":%d,"
                "\"confidence\":%.10g}],\"served_by\":%s,\"tier\":\"%s\","
                "\"fallback_reason\":%s,\"confidence\":%.10g,"
                "\"threshold\":0.6,\"cache\":\"off\",\"status\":%d,"
                "\"error\":%s,\"ms\":%.2f,\"ttfb_ms\":%.2f,\"overhead_us\":40,"
                "\"tokens\":{\"prompt\":%d,\"completion\":%d},"
                "\"cost\":%.6f}\n",
                (u / 60) % 60, u % 60, k % 1000, id_hi, id_lo,
                RG_FLAGS[f], RG_FLAGS[f], hex,
                mg_bucket(salt, strlen(salt), id, strlen(id)),
                treat ? "treatment" : "control", 100 - s->weight_t,
                s->weight_t, chars, tools, treat ? "new" : "old",
                err ? "http_5xx" : lc ? "low_confidence" : "ok",
                err ? 502 : 200, (int)ms, conf,
                err ? "null" : fb ? "\"small\"" : "\"main\"",
                err ? "none" : fb ? "fallback" : "primary",
                lc ? "\"low_confidence\"" : fb ? "\"timeout\"" : "null", conf,
                err ? 502 : 200, err ? "true" : "false", ms, ms * 0.7,
                chars / 4, 20 + (int)(rg_unif(&r) * 300),
                err ? 0.0 : chars / 4 * 2.5e-6 + 0.0004 * rg_unif(&r));
        if (!err && rg_unif(&r) < s->feedback)
          fprintf(o,
                  "{\"ts\":\"2026-11-21T13:00:00.000Z\",\"feedback\":{"
                  "\"decision_id\":\"%016" PRIx64 "%016" PRIx64 "\","
                  "\"metric\":\"accuracy\",\"value\":%s,\"unit\":null,"
                  "\"client\":null,\"instance\":\"i-0\"}}\n",
                  id_hi, id_lo, rg_unif(&r) < (treat ? 0.85 : 0.8) ? "true"
                                                                 : "false");
        t->lines++;
        t->records++;
        sum.req += 1;
        sum.err += err;
        sum.ms += ms;
        arm->requests++;
        arm->errors += err;
        rg_push((void **)&arm->ms, &arm->nms, &arm->capms, sizeof(double),
                &ms);
        if (t->malformed < (uint64_t)s->malformed && line % 997 == 0) {
          /* A torn line (a crash mid-write) and a line of noise. */
          fputs(t->malformed % 2 ? "{\"ts\":\"2026-11-21T12:00:00Z\",\"flag\""
                                 : "\x01\x02 garbage",
                o);
          fputs("\n", o);
          t->malformed++;
          t->lines++;
        }
      }
      rg_push((void **)&t->arm[f][treat].u, &t->arm[f][treat].nu,
              &t->arm[f][treat].capu, sizeof(struct rg_unit), &sum);
    }
  }
  for (i = 0; i < nf; i++)
    assert_int_equal(fclose(out[i]), 0);
}

/* ---- independent statistics --------------------------------------------- */

/* Delta-method ratio of per-unit sums, two-pass (the report accumulates in
 * one pass): value and variance of sum x / sum y. which: 0 errors, 1 ms. */
RG_U void rg_ratio(const struct rg_arm *a, int which, double *value,
                   double *var) {
  double sx = 0, sy = 0, mx, my, R, cxx = 0, cyy = 0, cxy = 0, n;
  size_t i;
  n = (double)a->nu;
  for (i = 0; i < a->nu; i++) {
    sx += which ? a->u[i].ms : a->u[i].err;
    sy += a->u[i].req;
  }
  mx = sx / n;
  my = sy / n;
  R = sx / sy;
  for (i = 0; i < a->nu; i++) {
    double dx = (which ? a->u[i].ms : a->u[i].err) - mx;
    double dy = a->u[i].req - my;
    cxx += dx * dx;
    cyy += dy * dy;
    cxy += dx * dy;
  }
  *value = R;
  *var = (cxx - 2 * R * cxy + R * R * cyy) / (n - 1) / (n * my * my);
}

/* Student's t, independently of the report: the two-sided tail
 * 2 * integral_{|t|}^inf f(x) dx, substituted x = |t| / s and summed by
 * Simpson's rule over s in (0, 1] (the density f from lgamma). */
static double rg_t_dens(double x, double df) {
  return exp(lgamma((df + 1) / 2) - lgamma(df / 2) - 0.5 * log(df * M_PI_RG) -
             (df + 1) / 2 * log1p(x * x / df));
}

RG_U double rg_t_p2(double t, double df) {
  const int n = 20000;
  double h = 1.0 / n, sum = 0;
  int i;
  t = fabs(t);
  if (t == 0)
    return 1;
  for (i = 1; i <= n; i++) {
    double s = i * h, f = rg_t_dens(t / s, df) * t / (s * s);
    sum += (i == n ? 1 : i % 2 ? 4 : 2) * f;
  }
  return 2 * sum * h / 3;
}

/* The two-sided 95% quantile of t by bisection on rg_t_p2. */
RG_U double rg_t_q975(double df) {
  double lo = 1.9, hi = 13;
  int i;
  for (i = 0; i < 60; i++) {
    double mid = (lo + hi) / 2;
    if (rg_t_p2(mid, df) > 0.05)
      lo = mid;
    else
      hi = mid;
  }
  return (lo + hi) / 2;
}

static int rg_cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Type-7 quantile by sorting a copy. */
RG_U double rg_quantile(const double *v, size_t n, double p) {
  double *c = malloc(n * sizeof(double)), h, q;
  size_t k;
  assert_non_null(c);
  memcpy(c, v, n * sizeof(double));
  qsort(c, n, sizeof(double), rg_cmp_d);
  h = (double)(n - 1) * p;
  k = (size_t)floor(h);
  q = k + 1 < n ? c[k] + (h - (double)k) * (c[k + 1] - c[k]) : c[n - 1];
  free(c);
  return q;
}

#endif
