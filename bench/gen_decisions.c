/* gen_decisions.c - write a synthetic decision log (src/decisions/record.h
 * format) for bench/reportbench.sh: realistic lines, a realistic mix.
 *
 *   mg-gen-decisions [--lines N] [--units N] [--seed N] [--feedback N]
 *                    [--out FILE]
 *
 * Three flags share the traffic: "chat-model" (control 90 / treatment 10,
 * with a treatment that errs twice as often on long inputs), "summarize"
 * (three arms 80/10/10) and "embed-model" (50/50, a third of its requests
 * without a unit). Units are drawn with a heavy tail (a few users send many
 * requests) and bucketed as the proxy does (XXH3 of salt and unit id).
 * About 3% of the records are not rollouts (rules, the kill switch), 1%
 * have no flag, and one line in 20,000 is an {"event":...} line. Records
 * carry the fields of issues 11, 14 and 15 (unit_source, endpoint, token
 * details, cost, client, instance; 1% of the requests have no unit and get
 * reason "no_unit"). With --feedback N (default 0), about N more lines are
 * {"feedback": ...} lines ("accuracy", boolean, and "rating", a float) for
 * random decisions: half right after their decision, half at the end of
 * the log (feedback long after its answer), and 1% with an id no decision
 * has (an orphan). --lines counts the decision, event and unflagged lines
 * only. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"
#include "routing/flag.h"

struct rng {
  uint64_t s;
};

/* splitmix64: fast, and plenty for synthetic data. */
static uint64_t rnd(struct rng *r) {
  uint64_t z = (r->s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static double unif(struct rng *r) {
  return (double)(rnd(r) >> 11) * (1.0 / 9007199254740992.0);
}

struct gflag {
  const char *name;
  const char *variants[3];
  uint32_t bp[3]; /* basis points, the first is the control */
  int nvar;
  double request_units; /* share of requests without a unit */
};

static const struct gflag FLAGS[] = {
    {"chat-model", {"control", "treatment", NULL}, {9000, 1000, 0}, 2, 0.0},
    {"summarize", {"v1", "v2", "v3"}, {8000, 1000, 1000}, 3, 0.0},
    {"embed-model", {"old", "new", NULL}, {5000, 5000, 0}, 2, 0.33},
};
#define NFLAGS (sizeof(FLAGS) / sizeof(FLAGS[0]))

static const char *const OUTCOMES[] = {"ok", "timeout_first_byte", "http_5xx",
                                       "low_confidence"};

static void weights(FILE *o, const struct gflag *f) {
  int i;
  fputc('{', o);
  for (i = 0; i < f->nvar; i++)
    fprintf(o, "%s\"%s\":%g", i ? "," : "", f->variants[i], f->bp[i] / 100.0);
  fputc('}', o);
}

struct later {
  uint64_t hi, lo;
  int ok;
};

static void feedback_line(FILE *o, uint64_t hi, uint64_t lo, int ok,
                          struct rng *r) {
  if (unif(r) < 0.7)
    fprintf(o,
            "{\"ts\":\"2023-11-15T09:00:00.000Z\",\"feedback\":{"
            "\"decision_id\":\"%016" PRIx64 "%016" PRIx64 "\",\"metric\":"
            "\"accuracy\",\"value\":%s,\"unit\":null,\"client\":\"web\","
            "\"instance\":\"mg-%d\"}}\n",
            hi, lo, ok ? "true" : "false", (int)(rnd(r) % 3));
  else
    fprintf(o,
            "{\"ts\":\"2023-11-15T09:00:00.000Z\",\"feedback\":{"
            "\"decision_id\":\"%016" PRIx64 "%016" PRIx64 "\",\"metric\":"
            "\"rating\",\"value\":%.2f,\"unit\":null,\"client\":\"web\","
            "\"instance\":\"mg-%d\"}}\n",
            hi, lo, ok ? 0.5 + unif(r) / 2 : unif(r) / 2, (int)(rnd(r) % 3));
}

int main(int argc, char **argv) {
  long lines = 1000000, units = 50000, feedback = 0, i;
  struct later *later = NULL;
  size_t nlater = 0, caplater = 0;
  double fb_rate;
  uint64_t seed = 1;
  const char *out = NULL;
  struct rng r;
  FILE *o;
  int a;

  for (a = 1; a < argc; a++) {
    if (strcmp(argv[a], "--lines") == 0 && a + 1 < argc)
      lines = atol(argv[++a]);
    else if (strcmp(argv[a], "--units") == 0 && a + 1 < argc)
      units = atol(argv[++a]);
    else if (strcmp(argv[a], "--seed") == 0 && a + 1 < argc)
      seed = strtoull(argv[++a], NULL, 10);
    else if (strcmp(argv[a], "--feedback") == 0 && a + 1 < argc)
      feedback = atol(argv[++a]);
    else if (strcmp(argv[a], "--out") == 0 && a + 1 < argc)
      out = argv[++a];
    else {
      fprintf(stderr, "usage: mg-gen-decisions [--lines N] [--units N] "
                      "[--seed N] [--feedback N] [--out FILE]\n");
      return 2;
    }
  }
  if (units < 1)
    units = 1;
  o = out ? fopen(out, "w") : stdout;
  if (o == NULL) {
    perror(out);
    return 1;
  }
  setvbuf(o, NULL, _IOFBF, 1 << 20);
  r.s = seed;
  /* Rollout records without an error are about 93% of the lines. */
  fb_rate = lines > 0 ? (double)feedback / (0.93 * (double)lines) : 0;
  for (i = 0; i < lines; i++) {
    const struct gflag *f = &FLAGS[rnd(&r) % NFLAGS];
    long sec = 1700000000 + i / 300;
    double u = unif(&r), ms, conf;
    /* Heavy tail: unit = units * u^3 sends most requests to low ids. */
    long uid = (long)(units * u * u * u);
    char id[32], hex[17];
    uint32_t bucket, acc;
    int v, tools, chars, status, err, fb, lowc, prompt, compl_;
    const char *reason = "rollout", *tier = "primary", *fbr = NULL;
    const char *outcome;
    bool has_unit = unif(&r) >= f->request_units;
    bool no_unit = unif(&r) < 0.01;
    uint64_t id_hi, id_lo;
    double cost;

    if (i % 20000 == 19999) {
      fprintf(o,
              "{\"ts\":\"2023-11-14T22:%02ld:%02ld.000Z\",\"event\":\"reload\","
              "\"config\":\"%016" PRIx64 "\",\"ok\":true}\n",
              (sec / 60) % 60, sec % 60, rnd(&r));
      continue;
    }
    if (unif(&r) < 0.01) {
      fprintf(o,
              "{\"ts\":\"2023-11-14T22:%02ld:%02ld.%03dZ\",\"id\":\"%016" PRIx64
              "%016" PRIx64 "\",\"config\":\"6a1f0c3d2b9e8f47\","
              "\"endpoint\":\"chat\",\"alias\":null,\"flag\":null,"
              "\"unit\":null,\"unit_kind\":\"request\",\"bucket\":null,"
              "\"variant\":null,\"reason\":null,\"weights\":null,\"attrs\":{},"
              "\"input\":{\"chars\":120,\"messages\":1,\"tools\":0,"
              "\"stream\":false},\"attempts\":[],\"served_by\":null,"
              "\"tier\":\"none\",\"fallback_reason\":null,\"confidence\":null,"
              "\"threshold\":null,\"cache\":\"off\",\"status\":404,"
              "\"error\":true,\"ms\":0.3,\"ttfb_ms\":0.3,\"overhead_us\":21,"
              "\"tokens\":null}\n",
              (sec / 60) % 60, sec % 60, (int)(i % 1000), rnd(&r), rnd(&r));
      continue;
    }
    snprintf(id, sizeof(id), "user-%ld", uid);
    snprintf(hex, sizeof(hex), "%016" PRIx64, mg_xxh64(id, strlen(id), 0));
    bucket = mg_bucket(f->name, strlen(f->name), id, strlen(id));
    if (!has_unit)
      bucket = (uint32_t)(rnd(&r) % 10000);
    /* Treatments grow from bucket 0, as the proxy lays them out. */
    v = 0;
    acc = 0;
    for (a = 1; a < f->nvar; a++) {
      if (bucket >= acc && bucket < acc + f->bp[a]) {
        v = a;
        break;
      }
      acc += f->bp[a];
    }
    if (unif(&r) < 0.03) {
      reason = unif(&r) < 0.5 ? "rule:0" : "killed";
      v = 0;
    }
    if (no_unit) {
      reason = "no_unit";
      has_unit = false;
      v = 0;
    }
    chars = (int)(40 + 6000 * pow(unif(&r), 3));
    tools = unif(&r) < 0.7 ? 0 : (int)(1 + rnd(&r) % 6);
    ms = 200 + 40 * sqrt(chars) * (0.5 + unif(&r)) + 90 * tools;
    err = unif(&r) < (v == 1 && chars > 2500 && f == &FLAGS[0] ? 0.04 : 0.02);
    fb = !err && unif(&r) < 0.05;
    lowc = fb && unif(&r) < 0.4;
    conf = 0.55 + 0.44 * unif(&r);
    status = err ? (unif(&r) < 0.5 ? 502 : 504) : 200;
    outcome = err ? OUTCOMES[1 + rnd(&r) % 2] : lowc ? OUTCOMES[3] : OUTCOMES[0];
    if (fb) {
      tier = unif(&r) < 0.7 ? "fallback" : "cache";
      fbr = lowc ? "low_confidence" : "timeout";
    }
    prompt = chars / 4;
    compl_ = 20 + (int)(rnd(&r) % 400);
    cost = err ? 0 : (prompt * 2.5 + compl_ * 10.0) / 1e6;
    id_hi = rnd(&r);
    id_lo = rnd(&r);
    fprintf(o,
            "{\"ts\":\"2023-11-14T22:%02ld:%02ld.%03dZ\",\"id\":\"%016" PRIx64
            "%016" PRIx64 "\",\"config\":\"6a1f0c3d2b9e8f47\","
            "\"endpoint\":\"%s\",\"alias\":\"%s\",\"flag\":\"%s\","
            "\"unit\":%s%s%s,\"unit_kind\":\"%s\",\"unit_source\":%s,"
            "\"bucket\":%u,\"variant\":\"%s\",\"reason\":\"%s\","
            "\"weights\":",
            (sec / 60) % 60, sec % 60, (int)(i % 1000), id_hi, id_lo,
            f == &FLAGS[2] ? "embeddings" : uid % 4 ? "chat" : "responses",
            f->name, f->name, has_unit ? "\"" : "", has_unit ? hex : "null",
            has_unit ? "\"" : "", has_unit ? "user" : "request",
            has_unit ? (uid % 5 ? "\"safety_identifier\"" : "\"user\"")
                     : "null",
            bucket, f->variants[v], reason);
    weights(o, f);
    fprintf(o,
            ",\"attrs\":{\"region\":\"%s\"},\"input\":{\"chars\":%d,"
            "\"messages\":%d,\"tools\":%d,\"stream\":%s},"
            "\"attempts\":[{\"target\":\"%s-%s\",\"outcome\":\"%s\","
            "\"status\":%d,\"ms\":%d,\"confidence\":%.3f}]",
            uid % 3 ? "eu" : "us", chars, 1 + (int)(rnd(&r) % 8), tools,
            rnd(&r) & 1 ? "true" : "false", f->name, f->variants[v], outcome,
            err ? 0 : 200, (int)ms, conf);
    if (err)
      fputs(",\"served_by\":null", o);
    else if (fb)
      fprintf(o, ",\"served_by\":\"%s\"", strcmp(tier, "cache") ? "small" : "cache");
    else
      fprintf(o, ",\"served_by\":\"%s-%s\"", f->name, f->variants[v]);
    fprintf(o,
            ",\"tier\":\"%s\",\"fallback_reason\":%s%s%s,\"confidence\":%.3f,"
            "\"threshold\":0.6,\"cache\":\"miss\",\"status\":%d,"
            "\"error\":%s,\"ms\":%.1f,\"ttfb_ms\":%.1f,\"overhead_us\":%d,"
            "\"tokens\":",
            err ? "none" : tier, fbr ? "\"" : "", fbr ? fbr : "null",
            fbr ? "\"" : "", conf, status, err ? "true" : "false", ms,
            ms * 0.8, 20 + (int)(rnd(&r) % 40));
    if (err)
      fputs("null", o);
    else
      fprintf(o,
              "{\"prompt\":%d,\"completion\":%d,\"cached\":%d,"
              "\"reasoning\":null}",
              prompt, compl_, prompt / 3);
    fprintf(o, ",\"cost\":%.7f,\"client\":\"web\",\"instance\":\"mg-%d\"}\n",
            cost, (int)(i % 3));
    if (!err && strcmp(reason, "rollout") == 0 && unif(&r) < fb_rate) {
      int ok = unif(&r) < (v == 1 ? 0.83 : 0.80);
      if (unif(&r) < 0.01)
        id_hi ^= 0xdeadbeef; /* an orphan */
      if (unif(&r) < 0.5) {
        feedback_line(o, id_hi, id_lo, ok, &r);
      } else {
        if (nlater == caplater) {
          struct later *nl;
          caplater = caplater ? caplater * 2 : 4096;
          nl = realloc(later, caplater * sizeof(*later));
          if (nl == NULL) {
            perror("realloc");
            return 1;
          }
          later = nl;
        }
        later[nlater].hi = id_hi;
        later[nlater].lo = id_lo;
        later[nlater].ok = ok;
        nlater++;
      }
    }
  }
  for (i = 0; i < (long)nlater; i++)
    feedback_line(o, later[i].hi, later[i].lo, later[i].ok, &r);
  free(later);
  if (fflush(o) != 0 || (out && fclose(o) != 0)) {
    perror(out ? out : "stdout");
    return 1;
  }
  return 0;
}
