/* sim_ramp.c - simulations of ramp guards that look often (issue 15.5):
 * the false-rollback rate of a healthy canary looked at 1,000 times is
 * measured, not assumed, and so is the time a real 2x effect takes to be
 * rolled back. Pure and bounded: no event loop, a fixed number of seeds and
 * looks, deterministic (seeded) random numbers.
 *
 *   sim_ramp calibration   each sequential test alone (mg_seq_*), at the
 *                          null boundary (treatment exactly at k x control),
 *                          alpha = 0.05, 1,000 looks per seed
 *   sim_ramp aa            the whole machinery (windows with cells,
 *                          mg_ramp_judge, a four-step ramp) on an A/A
 *                          canary with every comparative guard at k = 1,
 *                          alpha = 0.05: the family-wise false-rollback
 *                          rate over the ramp
 *   sim_ramp effect        the same guards and alpha split with a 2x effect
 *                          on one metric at a time, the canary held at its
 *                          10% step: treatment requests until the rollback
 *                          (median, 95th percentile, max)
 *
 * Seeds: MG_SIM_SEEDS=n overrides each scenario's default (e.g.
 * MG_SIM_SEEDS=5000 build/tests/sim_ramp aa); MG_SIM_ALPHA=a the whole-ramp
 * runs' alpha (default 0.05; the stated bounds hold for 0.05). Every figure is printed as a
 * "SIM" line; docs/drafts/h4-ramps.md quotes them. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "config/config.h"
#include "ramps/hll.h"
#include "ramps/ramp.h"
#include "ramps/seqtest.h"

#define LOOKS 1000
#define INTERVAL_MS 10000
#define ALPHA 0.05

/* ---- random numbers (xoshiro256**, seeded by splitmix64) ------------------ */

struct rng {
  uint64_t s[4];
  bool has_spare;
  double spare;
};

static uint64_t splitmix(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static void rng_seed(struct rng *r, uint64_t seed) {
  int i;
  for (i = 0; i < 4; i++)
    r->s[i] = splitmix(&seed);
  r->has_spare = false;
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next(struct rng *r) {
  uint64_t *s = r->s, res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return res;
}

/* uniform in (0, 1) */
static double unif(struct rng *r) {
  return ((double)(next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* standard normal (Marsaglia's polar method) */
static double gauss(struct rng *r) {
  double u, v, q;
  if (r->has_spare) {
    r->has_spare = false;
    return r->spare;
  }
  do {
    u = 2 * unif(r) - 1;
    v = 2 * unif(r) - 1;
    q = u * u + v * v;
  } while (q >= 1 || q == 0);
  q = sqrt(-2 * log(q) / q);
  r->spare = v * q;
  r->has_spare = true;
  return u * q;
}

/* Poisson by inversion (exact; fine for the means used here, <= 1000) */
static uint32_t poisson(struct rng *r, double lambda) {
  double p = exp(-lambda), c = p, u = unif(r);
  uint32_t k = 0;
  while (u > c && k < 100000) {
    k++;
    p *= lambda / k;
    c += p;
  }
  return k;
}

/* Binomial by inversion (exact; O(n p)) */
static uint32_t binomial(struct rng *r, uint32_t n, double p) {
  double q = 1 - p, f, c, u;
  uint32_t k = 0;
  bool flip = p > 0.5;
  if (n == 0)
    return 0;
  if (flip) {
    p = 1 - p;
    q = 1 - q;
  }
  f = pow(q, n);
  c = f;
  u = unif(r);
  while (u > c && k < n) {
    f *= (double)(n - k) / (k + 1) * p / q;
    k++;
    c += f;
  }
  return flip ? n - k : k;
}

/* Gamma(shape a >= 1, scale 1) (Marsaglia and Tsang 2000) */
static double gamma_rv(struct rng *r, double a) {
  double d = a - 1.0 / 3, c = 1 / sqrt(9 * d), x, v, u;
  for (;;) {
    do {
      x = gauss(r);
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    u = unif(r);
    if (log(u) < 0.5 * x * x + d - d * v + d * log(v))
      return d * v;
  }
}

/* ---- reporting ------------------------------------------------------------ */

static int seeds_or(int def) {
  const char *s = getenv("MG_SIM_SEEDS");
  int n = s ? atoi(s) : 0;
  return n > 0 ? n : def;
}

/* Wilson score interval for k of n at 95%. */
static void wilson(int k, int n, double *lo, double *hi) {
  double z = 1.959963984540054, p = (double)k / n, d = 1 + z * z / n;
  double c = (p + z * z / (2 * n)) / d;
  double h = z * sqrt(p * (1 - p) / n + z * z / (4.0 * n * n)) / d;
  *lo = c - h < 0 ? 0 : c - h;
  *hi = c + h > 1 ? 1 : c + h;
}

static int failures;

/* The whole-ramp runs' alpha: 0.05 unless MG_SIM_ALPHA says otherwise. */
static double ramp_alpha(void) {
  const char *s = getenv("MG_SIM_ALPHA");
  double a = s ? atof(s) : 0;
  return a > 0 && a < 0.5 ? a : ALPHA;
}

static void report_rate(const char *what, int k, int n, double alpha) {
  double lo, hi;
  wilson(k, n, &lo, &hi);
  printf("SIM %s: seeds=%d looks=%d alpha=%g false_rollbacks=%d rate=%.4f "
         "wilson95=[%.4f, %.4f] %s\n",
         what, n, LOOKS, alpha, k, (double)k / n, lo, hi,
         (double)k / n <= alpha ? "ok" : "ABOVE ALPHA");
  if ((double)k / n > alpha)
    failures++;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double quantile(double *v, int n, double q) {
  int i = (int)ceil(q * n) - 1;
  qsort(v, (size_t)n, sizeof(*v), cmp_d);
  return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

/* ---- 1. calibration of each test alone -------------------------------------- */

/* A 10% canary at 20 requests per second, looked at every 10 s: about 20
 * treatment and 180 control requests between looks, every look adding to
 * the evidence; min_requests 100 per arm as the guards default. */
#define CAL_T 20.0
#define CAL_C 180.0
#define CAL_MIN 100

enum cal_kind {
  CAL_ERRORS,     /* 2% vs 2%, k = 1 */
  CAL_RARE,       /* 0.3% vs 0.3%, k = 1: few events, the hard case */
  CAL_K2,         /* 4% vs 2%, k = 2: the boundary away from k = 1 */
  CAL_CLUSTER,    /* 2% on average, but each user has a propensity of
                   * its own: requests are not independent */
  CAL_LATENCY,    /* same lognormal latencies, k = 1 */
  CAL_COST,       /* same lognormal costs per request, 98% success, k = 1 */
  CAL_COMPLAINT,  /* boolean feedback on 25% of requests, 5% vs 5% */
  CAL_RATING,     /* float feedback U(0.6, 1.0) with a floor at its mean */
  CAL_ACCURACY,   /* boolean accuracy 90% vs 90%, min_ratio 1 */
  CAL_CEILING,    /* boolean complaint rate 5%, ceiling 0.05 */
  CAL_FLOOR,      /* boolean accuracy 85%, floor 0.85 */
  CAL_KINDS
};

static const char *const cal_names[CAL_KINDS] = {
    "error_ratio p=2%",
    "error_ratio p=0.3%",
    "error_ratio 4% vs 2% k=2",
    "error_ratio p=2% clustered by user",
    "latency_ratio",
    "cost_ratio",
    "feedback max_ratio (boolean 5%)",
    "feedback min (float)",
    "feedback min_ratio (boolean 90%)",
    "feedback max (boolean 5%)",
    "feedback min (boolean 85%)"};

/* Clustered traffic: 2,000 users per arm, picked with probability
 * proportional to a lognormal activity (sigma 1.5: heavy users), each
 * with an error propensity Beta(0.5, 24.5) (mean 2%, intra-user
 * correlation 1/26). */
#define CL_USERS 2000
struct cluster {
  double cum[CL_USERS]; /* cumulative activity, normalised */
  double p[CL_USERS];
};

static double beta_rv(struct rng *r, double a, double b) {
  /* Gamma(a) for a < 1 as Gamma(a + 1) U^(1/a) */
  double x = gamma_rv(r, a + 1) * pow(unif(r), 1 / a);
  double y = gamma_rv(r, b);
  return x / (x + y);
}

static void cluster_init(struct cluster *cl, struct rng *r) {
  double tot = 0;
  int i;
  for (i = 0; i < CL_USERS; i++) {
    tot += exp(1.5 * gauss(r));
    cl->cum[i] = tot;
    cl->p[i] = beta_rv(r, 0.5, 24.5);
  }
  for (i = 0; i < CL_USERS; i++)
    cl->cum[i] /= tot;
}

/* Per-bucket sums of the clustered arm: users hashed into the window's
 * MG_UNIT_BUCKETS buckets, as the window does. */
struct buckets {
  double y[MG_UNIT_BUCKETS], s[MG_UNIT_BUCKETS];
};

static uint32_t cluster_errors(const struct cluster *cl, struct rng *r,
                               uint32_t n, struct buckets *bk) {
  uint32_t i, x = 0;
  for (i = 0; i < n; i++) {
    double u = unif(r);
    int lo = 0, hi = CL_USERS - 1;
    while (lo < hi) {
      int mid = (lo + hi) / 2;
      if (cl->cum[mid] < u)
        lo = mid + 1;
      else
        hi = mid;
    }
    {
      bool e = unif(r) < cl->p[lo];
      unsigned b = (unsigned)(mg_hll_mix((uint64_t)lo) % MG_UNIT_BUCKETS);
      x += e;
      bk->y[b] += e;
      bk->s[b] += 1;
    }
  }
  return x;
}

/* Moments of n lognormal values exp(mu + sigma Z), drawn one by one. */
static void add_lognormal(struct rng *r, struct mg_seq_arm *a, uint32_t n,
                          double mu, double sigma, double p_ok) {
  uint32_t i;
  for (i = 0; i < n; i++) {
    double y = exp(mu + sigma * gauss(r));
    double s = unif(r) < p_ok;
    a->n++;
    a->sum += y;
    a->sq += y * y;
    a->den += s;
    a->den_sq += s;
    a->cross += y * s;
  }
}

/* Sums of n normal values mu + sigma Z, drawn exactly from their joint law:
 * sum(Z) ~ N(0, n) and sum(Z^2) = sum(Z)^2 / n + chi2(n - 1), independent. */
static void add_normal_sums(struct rng *r, struct mg_seq_arm *a, uint32_t n,
                            double mu, double sigma) {
  double sz, szz;
  if (n == 0)
    return;
  sz = sqrt((double)n) * gauss(r);
  szz = sz * sz / n + (n > 1 ? 2 * gamma_rv(r, (n - 1) / 2.0 + 1) *
                                   pow(unif(r), 2.0 / (n - 1))
                             : 0);
  a->n += n;
  a->sum += n * mu + sigma * sz;
  a->sq += n * mu * mu + 2 * mu * sigma * sz + sigma * sigma * szz;
  a->den += n;
  a->den_sq += n;
  a->cross = a->sum;
}

static void add_binary(struct mg_seq_arm *a, uint32_t n, uint32_t x) {
  a->n += n;
  a->sum += x;
  a->sq += x;
  a->den = a->den_sq = a->n;
  a->cross = a->sum;
}

static bool cal_seed(enum cal_kind kind, uint64_t seed,
                     struct cluster *clt, struct cluster *clc,
                     bool unclustered) {
  struct rng r;
  struct mg_seq_arm t, c;
  struct mg_seq_result res;
  struct buckets bt, bc;
  int look;
  rng_seed(&r, seed * 7919 + (uint64_t)kind);
  memset(&t, 0, sizeof(t));
  memset(&c, 0, sizeof(c));
  memset(&bt, 0, sizeof(bt));
  memset(&bc, 0, sizeof(bc));
  if (kind == CAL_CLUSTER) {
    cluster_init(clt, &r);
    cluster_init(clc, &r);
  }
  for (look = 0; look < LOOKS; look++) {
    uint32_t nt = poisson(&r, CAL_T), nc = poisson(&r, CAL_C), x;
    switch (kind) {
    case CAL_ERRORS:
    case CAL_RARE: {
      double p = kind == CAL_ERRORS ? 0.02 : 0.003;
      x = binomial(&r, nt, p);
      t.n += nt, t.sum += x, t.sq += x;
      x = binomial(&r, nc, p);
      c.n += nc, c.sum += x, c.sq += x;
      t.den = t.den_sq = t.n, t.cross = t.sum;
      c.den = c.den_sq = c.n, c.cross = c.sum;
      break;
    }
    case CAL_K2:
      add_binary(&t, nt, binomial(&r, nt, 0.04));
      add_binary(&c, nc, binomial(&r, nc, 0.02));
      break;
    case CAL_CLUSTER:
      add_binary(&t, nt, cluster_errors(clt, &r, nt, &bt));
      add_binary(&c, nc, cluster_errors(clc, &r, nc, &bc));
      if (unclustered) {
        t.design = c.design = 1;
      } else {
        t.design = mg_seq_design_effect(&t, bt.y, bt.s, MG_UNIT_BUCKETS);
        c.design = mg_seq_design_effect(&c, bc.y, bc.s, MG_UNIT_BUCKETS);
      }
      break;
    case CAL_ACCURACY:
      nt = binomial(&r, nt, 0.25);
      nc = binomial(&r, nc, 0.25);
      add_binary(&t, nt, binomial(&r, nt, 0.9));
      add_binary(&c, nc, binomial(&r, nc, 0.9));
      break;
    case CAL_CEILING:
    case CAL_FLOOR:
      nt = binomial(&r, nt, 0.25);
      add_binary(&t, nt, binomial(&r, nt, kind == CAL_CEILING ? 0.05 : 0.85));
      break;
    case CAL_LATENCY:
      add_normal_sums(&r, &t, nt, log(600), 0.6);
      add_normal_sums(&r, &c, nc, log(600), 0.6);
      break;
    case CAL_COST:
      add_lognormal(&r, &t, nt, log(0.004), 0.8, 0.98);
      add_lognormal(&r, &c, nc, log(0.004), 0.8, 0.98);
      break;
    case CAL_COMPLAINT:
      nt = binomial(&r, nt, 0.25);
      nc = binomial(&r, nc, 0.25);
      x = binomial(&r, nt, 0.05);
      t.n += nt, t.sum += x, t.sq += x;
      x = binomial(&r, nc, 0.05);
      c.n += nc, c.sum += x, c.sq += x;
      t.den = t.den_sq = t.n, t.cross = t.sum;
      c.den = c.den_sq = c.n, c.cross = c.sum;
      break;
    case CAL_RATING: {
      uint32_t i;
      nt = binomial(&r, nt, 0.25);
      for (i = 0; i < nt; i++) {
        double y = 0.6 + 0.4 * unif(&r);
        t.n++, t.sum += y, t.sq += y * y;
      }
      t.den = t.den_sq = t.n, t.cross = t.sum;
      break;
    }
    default:
      break;
    }
    if (t.n < CAL_MIN ||
        (kind != CAL_RATING && kind != CAL_CEILING && kind != CAL_FLOOR &&
         c.n < CAL_MIN))
      continue;
    if (kind == CAL_LATENCY)
      mg_seq_shift(&t, &c, 1, 1.5, ALPHA, &res);
    else if (kind == CAL_RATING)
      mg_seq_level(&t, 0.8, -1, 1.5, ALPHA, &res);
    else if (kind == CAL_CEILING)
      mg_seq_level(&t, 0.05, +1, 1.5, ALPHA, &res);
    else if (kind == CAL_FLOOR)
      mg_seq_level(&t, 0.85, -1, 1.5, ALPHA, &res);
    else if (kind == CAL_ACCURACY)
      mg_seq_ratio(&t, &c, 1, -1, 1.5, ALPHA, &res);
    else
      mg_seq_ratio(&t, &c, kind == CAL_K2 ? 2 : 1, +1, 1.5, ALPHA, &res);
    if (res.reject)
      return true;
  }
  return false;
}

static void sim_calibration(void) {
  int n = seeds_or(600), k, s;
  enum cal_kind kind;
  struct cluster *cl = malloc(2 * sizeof(*cl));
  if (cl == NULL) {
    failures++;
    return;
  }
  for (kind = 0; kind < CAL_KINDS; kind++) {
    /* per-request draws cost more: half the seeds */
    int ns = kind == CAL_COST || kind == CAL_RATING || kind == CAL_CLUSTER
                 ? (n + 1) / 2
                 : n;
    char what[96];
    for (k = 0, s = 0; s < ns; s++)
      k += cal_seed(kind, (uint64_t)s, &cl[0], &cl[1], false);
    snprintf(what, sizeof(what), "calibration %s", cal_names[kind]);
    report_rate(what, k, ns, ALPHA);
    /* The same clustered traffic judged as if requests were independent
     * (design effect 1): what the unit buckets are for. Reported, not
     * held to alpha. */
    if (kind == CAL_CLUSTER) {
      double lo, hi;
      for (k = 0, s = 0; s < ns; s++)
        k += cal_seed(kind, (uint64_t)s, &cl[0], &cl[1], true);
      wilson(k, ns, &lo, &hi);
      printf("SIM %s without the design effect: seeds=%d looks=%d "
             "alpha=%g false_rollbacks=%d rate=%.4f wilson95=[%.4f, %.4f] "
             "(reported, not asserted)\n",
             what, ns, LOOKS, ALPHA, k, (double)k / ns, lo, hi);
    }
  }
  free(cl);
}

/* ---- 2 and 3. the whole ramp ------------------------------------------------- */

/* Four steps (10%, 25%, 50%, 100%); every comparative guard at k = 1 ("no
 * worse than the control"), on "all" and every cell. The A/A holds each
 * step 250 looks, so its 1,000 looks cross every step; the effect runs
 * hold the first step until the guards decide (at 100% there is no
 * control left to compare with). The alpha split (4 steps, 5 guards x 8
 * cells) is the same in both. */
static const char *SIM_CFG =
    "{\"targets\":{\"v1\":{\"base_url\":\"http://h/v1\",\"model\":\"a\"},"
    "\"v2\":{\"base_url\":\"http://h/v1\",\"model\":\"b\"}},"
    "\"flags\":{\"chat\":{\"off_variant\":\"old\","
    "\"variants\":{\"old\":{\"target\":\"v1\"},\"new\":{\"target\":\"v2\"}}}},"
    "\"aliases\":{\"chat\":{\"flag\":\"chat\"}}}";
#define SIM_RAMP_FMT                                                          \
  "{\"chat\":{\"ramp\":{\"interval_ms\":10000,\"steps\":["                   \
  "{\"weight\":10,\"hold_ms\":%lld},{\"weight\":25,\"hold_ms\":%lld},"         \
  "{\"weight\":50,\"hold_ms\":%lld},{\"weight\":100}]},"                       \
  "\"guards\":{\"window_ms\":300000,\"min_requests\":100,"                     \
  "\"max_error_ratio\":1,\"max_latency_ratio\":1,\"max_cost_ratio\":1,"        \
  "\"feedback\":{\"complaint\":{\"max_ratio\":1},"                             \
  "\"accuracy\":{\"min_ratio\":1}},\"alpha\":%g}}}"
#define AA_HOLD_MS (250LL * INTERVAL_MS)
#define EFFECT_HOLD_MS 2000000000LL
#define EFFECT_LOOKS 6000
static const char *const SIM_METRICS[] = {"complaint", "accuracy"};

/* A unit: heavy users send more (activity lognormal, sigma 1.2), and each
 * has an error propensity and a latency of its own. (The calibration's
 * clustered case is harsher: Beta(0.5, 24.5) and sigma 1.5.) */
struct user {
  uint64_t hash;
  double p_error;  /* Beta(2, 198): mean 1%, intra-user correlation 0.5% */
  double slowness; /* lognormal(0, 0.3): some users' prompts are slower */
};

#define USERS 3000 /* per arm */

struct world {
  struct user users[2][USERS];
  double cum[2][USERS];           /* cumulative activity, normalised */
  struct mg_config *cfg;
  struct mg_ramps ramps;
  const struct mg_ramp_cfg *rc;
  struct mg_window *wt, *wc;      /* owned */
  struct mg_window_view *vt, *vc; /* owned */
};

static int world_init(struct world *w, long long hold_ms) {
  struct mg_cfg_errors e;
  char ramp[2048];
  cJSON *j;
  size_t i;
  memset(w, 0, sizeof(*w));
  mg_cfg_errors_init(&e);
  w->cfg = mg_config_load_string(SIM_CFG, strlen(SIM_CFG), "sim", &e);
  snprintf(ramp, sizeof(ramp), SIM_RAMP_FMT, hold_ms, hold_ms, hold_ms,
           ramp_alpha());
  j = cJSON_Parse(ramp);
  if (w->cfg && j)
    mg_ramps_parse_metrics(&w->ramps, j, &w->cfg->flags, SIM_METRICS, 2, &e);
  cJSON_Delete(j);
  for (i = 0; i < e.n; i++)
    fprintf(stderr, "config: %s\n", e.msgs[i]);
  if (w->cfg == NULL || e.n) {
    mg_cfg_errors_free(&e);
    return -1;
  }
  mg_cfg_errors_free(&e);
  w->rc = &w->ramps.v[0];
  w->wt = malloc(sizeof(*w->wt));
  w->wc = malloc(sizeof(*w->wc));
  w->vt = malloc(sizeof(*w->vt));
  w->vc = malloc(sizeof(*w->vc));
  return w->wt && w->wc && w->vt && w->vc ? 0 : -1;
}

/* Fresh users for a seed (the arms' users are disjoint, as the bucket
 * hash makes them). */
static void world_users(struct world *w, struct rng *r) {
  int a, i;
  for (a = 0; a < 2; a++) {
    double tot = 0;
    for (i = 0; i < USERS; i++) {
      struct user *u = &w->users[a][i];
      u->hash = next(r);
      u->p_error = beta_rv(r, 2, 198);
      u->slowness = exp(0.3 * gauss(r));
      tot += exp(1.2 * gauss(r));
      w->cum[a][i] = tot;
    }
    for (i = 0; i < USERS; i++)
      w->cum[a][i] /= tot;
  }
}

static const struct user *pick_user(const struct world *w, struct rng *r,
                                    bool treat) {
  const double *cum = w->cum[treat];
  double u = unif(r);
  int lo = 0, hi = USERS - 1;
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (cum[mid] < u)
      lo = mid + 1;
    else
      hi = mid;
  }
  return &w->users[treat][lo];
}

static void world_free(struct world *w) {
  free(w->wt);
  free(w->wc);
  free(w->vt);
  free(w->vc);
  mg_ramps_free(&w->ramps);
  mg_config_unref(w->cfg);
}

/* What the treatment does differently. */
struct effect {
  const char *name;
  double errors, latency, cost, complaints; /* multipliers */
  const char *guard; /* the guard that should catch it */
};

/* 100 requests between looks (10 per second); inputs lognormal around
 * 1,500 characters (6% above 8,000), 60% without tools; 1% errors;
 * latency lognormal around 600 ms growing with the input; cost from input
 * and output tokens; a quarter of the answers get a complaint flag (4%
 * yes), a quarter an accuracy score (about 0.8, in [0, 1]). */
#define TRAFFIC 100.0

static void one_request(struct world *w, struct rng *r, int64_t t,
                        uint64_t epoch, bool treat, const struct effect *fx) {
  struct mg_window_outcome o;
  struct mg_window_fb f;
  struct mg_input in;
  struct mg_window *win = treat ? w->wt : w->wc;
  const struct user *us = pick_user(w, r, treat);
  double u, out_tok;
  memset(&o, 0, sizeof(o));
  memset(&f, 0, sizeof(f));
  o.has_unit = true;
  o.unit_hash = us->hash;
  memset(&in, 0, sizeof(in));
  in.chars = (uint64_t)(1500 * exp(1.1 * gauss(r)));
  u = unif(r);
  in.tools = u < 0.6 ? 0 : u < 0.75 ? 1 : u < 0.9 ? 2 : 3 + (uint32_t)(3 * unif(r));
  mg_ramp_cells(w->rc, &in, &o.chars_cell, &o.tools_cell);
  o.error = unif(r) < us->p_error * (treat ? fx->errors : 1);
  o.ok = !o.error;
  o.latency_ms = 600 * us->slowness * pow(in.chars / 1500.0, 0.25) *
                 exp(0.5 * gauss(r)) * (treat ? fx->latency : 1);
  out_tok = 250 * exp(0.6 * gauss(r));
  o.cost = (in.chars / 4.0 * 2.5e-6 + out_tok * 1e-5) * (treat ? fx->cost : 1);
  mg_window_record(win, t, epoch, &o);
  f.chars_cell = o.chars_cell;
  f.tools_cell = o.tools_cell;
  f.has_unit = true;
  f.unit_hash = o.unit_hash;
  if (unif(r) < 0.25) {
    f.metric = 0;
    f.value = unif(r) < 0.04 * (treat ? fx->complaints : 1);
    mg_window_feedback(win, t, epoch, &f);
  }
  if (unif(r) < 0.25) {
    double a = 0.8 + 0.15 * gauss(r);
    f.metric = 1;
    f.value = a < 0 ? 0 : a > 1 ? 1 : a;
    mg_window_feedback(win, t, epoch, &f);
  }
}

struct run {
  bool rolled_back;
  bool reached_full; /* the last step (no control) came first */
  int look;
  uint64_t treatment_requests; /* since the ramp began */
  struct mg_ramp_evidence why;
};

static void run_seed(struct world *w, uint64_t seed, const struct effect *fx,
                     int looks, struct run *out) {
  struct rng r;
  struct mg_ramp_state st;
  int64_t now = 1800000000000LL;
  int look;
  memset(out, 0, sizeof(*out));
  rng_seed(&r, seed);
  world_users(w, &r);
  mg_window_init(w->wt, w->rc->guards.window_ms);
  mg_window_init(w->wc, w->rc->guards.window_ms);
  mg_ramp_start(&st, now);
  for (look = 1; look <= looks; look++) {
    uint32_t n = poisson(&r, TRAFFIC), i;
    double share = mg_ramp_weight(w->rc, &st) / 10000.0;
    enum mg_ramp_event ev;
    for (i = 0; i < n; i++) {
      bool treat = unif(&r) < share;
      /* arrivals spread over the interval before the look */
      int64_t t = now + 1 + (int64_t)(unif(&r) * (INTERVAL_MS - 1));
      one_request(w, &r, t, st.epoch, treat, fx);
      out->treatment_requests += treat;
    }
    now += INTERVAL_MS;
    mg_window_read(w->wt, now, w->vt);
    mg_window_read(w->wc, now, w->vc);
    ev = mg_ramp_judge(w->rc, &st, now, w->vt, w->vc, &out->why);
    if (ev == MG_RAMP_ROLLBACK) {
      out->rolled_back = true;
      out->look = look;
      return;
    }
    if (st.status == MG_RAMP_DONE)
      out->reached_full = true;
  }
}

static void sim_aa(void) {
  static const struct effect none = {"none", 1, 1, 1, 1, NULL};
  static struct world w;
  struct run run;
  int n = seeds_or(200), k = 0, s, full = 0;
  if (world_init(&w, AA_HOLD_MS) != 0) {
    failures++;
    return;
  }
  for (s = 0; s < n; s++) {
    run_seed(&w, 1000003ULL * (uint64_t)s + 17, &none, LOOKS, &run);
    full += run.reached_full;
    if (run.rolled_back) {
      k++;
      printf("  seed %d: false rollback at look %d: %s on %s (statistic "
             "%.2f >= %.2f)\n",
             s, run.look, run.why.guard, run.why.cell, run.why.statistic,
             run.why.boundary);
    }
  }
  report_rate("aa ramp (4 steps, 5 comparative guards x 8 cells, k = 1)", k,
              n, ramp_alpha());
  printf("SIM aa: %d of %d seeds walked every step to 100%%\n", full, n);
  world_free(&w);
}

static void sim_effect(void) {
  static const struct effect fxs[] = {
      {"errors 2x", 2, 1, 1, 1, "max_error_ratio"},
      {"latency 2x", 1, 2, 1, 1, "max_latency_ratio"},
      {"cost 2x", 1, 1, 2, 1, "max_cost_ratio"},
      {"complaints 2x", 1, 1, 1, 2, "feedback.complaint.max_ratio"},
  };
  /* Stated bounds (README): a 2x effect is rolled back within these many
   * treatment requests on 95% of seeds (measured at 100 seeds: 6,451,
   * 111, 113 and 5,859; the bounds leave room for other seed counts). */
  static const double p95_bound[] = {9000, 200, 200, 8000};
  static struct world w;
  struct run run;
  int n = seeds_or(100), s;
  size_t f;
  double *req = calloc((size_t)n, sizeof(*req));
  if (req == NULL || world_init(&w, EFFECT_HOLD_MS) != 0) {
    free(req);
    failures++;
    return;
  }
  for (f = 0; f < sizeof(fxs) / sizeof(fxs[0]); f++) {
    int missed = 0, wrong = 0;
    double med, p95, max;
    for (s = 0; s < n; s++) {
      run_seed(&w, 7000003ULL * (uint64_t)s + 5 + f, &fxs[f], EFFECT_LOOKS,
               &run);
      req[s] = run.rolled_back ? (double)run.treatment_requests : INFINITY;
      missed += !run.rolled_back;
      if (run.rolled_back && strcmp(run.why.guard, fxs[f].guard) != 0) {
        wrong++;
        printf("  seed %d: %s rolled back by %s on %s\n", s, fxs[f].name,
               run.why.guard, run.why.cell);
      }
    }
    med = quantile(req, n, 0.5);
    p95 = quantile(req, n, 0.95);
    max = req[n - 1];
    /* Another guard may fire first: a false rollback of a metric the
     * effect leaves alone, as rare as the A/A's. */
    printf("SIM effect %s: seeds=%d rolled_back=%d (by another guard: %d) "
           "treatment requests to rollback at a 10%% step: median=%.0f "
           "p95=%.0f max=%.0f (bound p95 <= %.0f) %s\n",
           fxs[f].name, n, n - missed, wrong, med, p95, max, p95_bound[f],
           missed == 0 && p95 <= p95_bound[f] && wrong <= ramp_alpha() * n
               ? "ok"
               : "TOO SLOW");
    if (missed || p95 > p95_bound[f] || wrong > ramp_alpha() * n)
      failures++;
  }
  free(req);
  world_free(&w);
}

int main(int argc, char **argv) {
  const char *what = argc > 1 ? argv[1] : "all";
  bool all = strcmp(what, "all") == 0;
  if (all || strcmp(what, "calibration") == 0)
    sim_calibration();
  if (all || strcmp(what, "aa") == 0)
    sim_aa();
  if (all || strcmp(what, "effect") == 0)
    sim_effect();
  if (failures)
    printf("SIM: %d figure(s) out of bounds\n", failures);
  return failures ? 1 : 0;
}
