/* seqtest.h - always-valid sequential tests for ramp guards (issue 15.5).
 *
 * A ramp looks at its guards every interval_ms, for hours: a fixed-sample
 * test read a thousand times rolls back a healthy canary far more often
 * than its nominal level. Every comparative guard therefore uses a mixture
 * sequential probability ratio test (mSPRT; Robbins 1970, as used for A/B
 * tests by Johari, Pekelis and Walsh, "Always valid inference: continuous
 * monitoring of A/B tests", Operations Research 2022). Its p-value may be
 * read after every request, and the chance that it EVER crosses alpha under
 * the null is at most alpha.
 *
 * Why an mSPRT and not a confidence sequence: both are always valid; the
 * mSPRT's normal mixture has a closed form in two numbers (the estimate and
 * its variance), the same two that every test below computes from summable
 * sums, and the literature gives a rule for its one parameter (tau, below).
 * A confidence sequence would bring nothing the guards use (they need a
 * yes/no against one threshold, not an interval).
 *
 * The statistic. Each test estimates a contrast theta whose null is
 * theta <= 0 ("the treatment is within its threshold") with an estimate
 * theta_hat of variance V. In information time I = 1/V the score
 * S = theta_hat / V behaves as a Brownian motion with drift theta (the
 * Gaussian approximation the two-sample mSPRT of Johari et al. also uses,
 * with plug-in variances). For every theta, exp(theta S - theta^2 I / 2) is
 * then a martingale of mean 1 when the truth is theta; mixing theta over a
 * half-normal of scale tau on theta >= 0 gives (worked by hand, completing
 * the square):
 *
 *   Lambda = 2 (1 + r)^(-1/2) exp(r z^2 / (2 (1 + r))) Phi(z sqrt(r / (1 + r)))
 *   with z = theta_hat / sqrt(V), r = tau^2 / V,
 *
 * a non-negative martingale of mean 1 under theta = 0, so by Ville's
 * inequality P(sup_n Lambda_n >= 1/alpha) <= alpha. The guard rolls back
 * when log Lambda >= log(1/alpha). Lambda is increasing in z (d/dx of
 * exp(x^2/2) Phi(x) is exp(x^2/2)(x Phi(x) + phi(x)) > 0), so the rejection
 * region is {S >= b(I)}; under any theta < 0 the path S lies below the
 * theta = 0 path (S = W(I) + theta I), so the whole composite null
 * theta <= 0 keeps the bound. The one-sided (half-normal) mixture is used
 * because guards only roll back a WORSE treatment: it is twice the
 * symmetric mixture's Lambda times Phi, hence at least as powerful.
 *
 * Looking less often, or only once enough requests are in (min_requests),
 * or demanding several breaches in a row (consecutive), only shrinks the
 * rejection event: the bound still holds.
 *
 * The mixing scale tau. Under the normal mixture the test is fastest for
 * effects near tau: the boundary in z at information I is about
 * (1 + 1/r)(2 log(1/alpha) + log(1 + r)), minimised at r ~ 2 log(1/alpha),
 * which for an effect delta puts the optimum at tau^2 ~ delta^2
 * (r/(1 + r) ~ 1). So tau is matched to the smallest excess over the
 * threshold worth catching quickly; smaller effects are caught later (the
 * cost of a mismatch grows only with log(1 + r)). The guards express that
 * excess as one ratio, `detect_ratio` (default 1.5: a treatment 1.5 times
 * beyond its threshold), turned into tau0 on each test's own scale:
 *   - ratio tests (theta = R_t - k R_c, relative to k R_c):
 *     tau0 = (detect_ratio - 1) k R_c; on the square-root scale of 0/1
 *     values, (sqrt(detect_ratio) - 1) sqrt(k R_c). R_c is the control's
 *     estimate alone (half an event when it has none): a scale that moved
 *     with the treatment's own count would tune the test to the
 *     treatment's excursions after the fact (see "Measured" below);
 *   - shift tests on a log scale (latency): tau0 = log(detect_ratio);
 *   - level tests (a floor or ceiling on the treatment alone), relative to
 *     the threshold: ceilings tau0 = (detect_ratio - 1) |thr|, floors
 *     tau0 = (1 - 1/detect_ratio) |thr| (|thr| replaced by 1 when thr = 0);
 *     for 0/1 values the same on the square-root scale, with sqrt(d) and
 *     sqrt(thr).
 * Much LARGER effects matter too: a control with almost no errors makes
 * k R_c tiny, and a treatment failing 5% of the time against none is
 * 20 x tau0 away, where a single normal mixture of scale tau0 waits for
 * thousands of requests. So Lambda is the equal-weight mean of the mixtures
 * at tau0, 4 tau0 and 16 tau0 (MG_SEQ_SCALES, MG_SEQ_SCALE_STEP): a mean
 * of mean-1 martingales is one, each is increasing in z, so everything
 * above still holds, at a cost of at most log 3 on the boundary of the
 * best-matched scale.
 * tau0 scaled by R_c uses an estimate, as V itself does: like the plug-in
 * variance of Johari et al. it makes the guarantee asymptotic (R_c
 * converges fast: the control is the larger arm), and the simulations in
 * tests/unit/ramps/sim_ramp.c measure the false-rollback rate at realistic
 * counts instead of assuming it.
 *
 * Variances are estimated under the null (score-test style), not from the
 * raw estimates: a control with no events would otherwise have variance 0
 * and turn one treatment error into infinite evidence, and a constant arm
 * would claim significance (issue 11.2: zero variance is not
 * significance). For 0/1 values (errors; a feedback metric whose values
 * are all 0 or 1, recognised by sum(y^2) = sum(y)) the variance is the
 * Bernoulli one at the null value, on the square-root scale (below);
 * otherwise the spread of the values around the null value. When the
 * variance is still 0, or an arm has fewer than two observations, or 0/1
 * data expect fewer than MG_SEQ_MIN_EVENTS events or non-events under the
 * null, the test is undefined and never rejects.
 *
 * Measured (sim_ramp calibration: a 10% canary, 1,000 looks, the null
 * boundary, alpha 5%): error rates of 2% and 0.3% on the raw scale with
 * tau scaled by the pooled null value and no minimum of events rolled back
 * 4.8% and 5.5% of the time; tau from the control and 5 expected events,
 * 3.9% and 2.6%; the square-root scale, 1.5% and 0.9% (2,000 seeds). The
 * normal approximation is what costs the slack Ville's inequality leaves:
 * the log-normal latency test, Gaussian from the start, measures 0.5%.
 *
 * Clustering. The tests treat requests as independent, but a unit's
 * requests are not: users with their own error propensity (Beta(0.5,
 * 24.5), heavy users) took a request-level test at alpha 5% to 14.7%
 * false rollbacks. Each arm's variance is therefore multiplied by its
 * design effect, estimated from units hashed into buckets
 * (mg_seq_design_effect): 1.5% with it. The buckets add across workers
 * like every other sum.
 *
 * Inputs are moments of one arm (struct mg_seq_arm), additive over requests
 * and over workers. The three tests:
 *   mg_seq_ratio: R_t <= k R_c with R = sum(y) / sum(s) (a mean when s = 1:
 *     error rates, feedback means; cost per successful answer with
 *     y = cost, s = success). theta = dir (R_t - k R_c). The null value
 *     R_c0 = (Y_t / k + Y_c) / (S_t + S_c) (the pooled estimate when
 *     R_t = k R_c); V = V_t(k R_c0) + k^2 V_c(R_c0) with the delta-method
 *     V_arm(R) = sum((y - R s)^2) / (sum s)^2. For 0/1 values the test
 *     runs on the square-root scale, sqrt(R_t) against sqrt(k R_c), with
 *     the Bernoulli variances at the null value (1 - k R_c0) / 4n_t and
 *     k (1 - R_c0) / 4n_c: the variance no longer depends on the rate, and
 *     most of a rare count's right skew (which the normal approximation
 *     misses, and which took a raw-scale test to alpha at 0.3% error
 *     rates) is gone; each arm must also expect MG_SEQ_MIN_EVENTS events
 *     and non-events under the null.
 *   mg_seq_shift: (mean_t - mean_c) <= d0, the geometric-mean latency ratio
 *     on ln ms with d0 = ln k; V = s_t^2 / n_t + s_c^2 / n_c (sample
 *     variances of the logs: log latencies are close to normal, and a
 *     shift has no null value to centre a variance on).
 *   mg_seq_level: mean_t >= thr (dir -1, a floor) or <= thr (dir +1, a
 *     ceiling); V = sum((y - thr)^2) / n^2; for 0/1 values
 *     sqrt(mean_t) against sqrt(thr) with V = (1 - thr) / 4n.
 *
 * Pure; no allocation. */
#ifndef MG_SEQTEST_H
#define MG_SEQTEST_H

#include <stdbool.h>
#include <stdint.h>

/* The mixing scales: tau0 x MG_SEQ_SCALE_STEP^j, j < MG_SEQ_SCALES. */
#define MG_SEQ_SCALES 3
#define MG_SEQ_SCALE_STEP 4.0
/* Non-empty unit buckets an arm needs for its design effect. */
#define MG_SEQ_MIN_CLUSTERS 4
/* 0/1 data: events each arm must expect under the null before a ratio
 * test is defined. */
#ifndef MG_SEQ_MIN_EVENTS
#define MG_SEQ_MIN_EVENTS 5
#endif

/* Moments of one arm for a ratio sum(y) / sum(s). For a mean, s = 1:
 * den = den_sq = n and cross = sum (mg_seq_arm_mean). */
struct mg_seq_arm {
  double n;      /* observations */
  double sum;    /* sum of y */
  double sq;     /* sum of y^2 */
  double den;    /* sum of s */
  double den_sq; /* sum of s^2 */
  double cross;  /* sum of y s */
  double design; /* variance inflation of clustered observations
                  * (mg_seq_design_effect); below 1 counts as 1; +inf:
                  * too few clusters, the test is undefined */
};

/* The arm of a mean of n values with sum and sum of squares (design 1). */
struct mg_seq_arm mg_seq_arm_mean(double n, double sum, double sq);

/* The design effect of an arm whose observations come in clusters (the
 * requests of one unit are not independent: a user whose prompts fail
 * fails again). Units are hashed into nb buckets; y[b] and s[b] are the
 * sums of y and s over bucket b. The cluster-robust (sandwich) variance of
 * R = sum(y) / sum(s) over the G non-empty buckets,
 *   G / (G - 1) sum_b (y_b - R s_b)^2,
 * over the independent one, sum_i (y_i - R s_i)^2 (from the arm's
 * moments), is the factor by which independence understates the
 * variance. Returns at least 1 (never shrinks a null variance on noise),
 * +inf with 1 to MG_SEQ_MIN_CLUSTERS - 1 non-empty buckets, and 1 when
 * every bucket is empty (the caller keeps none). */
double mg_seq_design_effect(const struct mg_seq_arm *a, const double *y,
                            const double *s, unsigned nb);

struct mg_seq_result {
  bool defined;     /* false: no evidence either way (too few, no variance) */
  double estimate;  /* theta_hat, on the test's scale */
  double se;        /* sqrt(V) */
  double z;         /* theta_hat / se */
  double tau;       /* tau0, the smallest mixing scale */
  double log_lr;    /* log Lambda; 0 when undefined */
  double boundary;  /* log(1 / alpha) */
  bool reject;      /* defined and log_lr >= boundary */
  double observed;  /* the guard's quantity: R_t / R_c (ratio), the
                     * geometric-mean ratio (shift), mean_t (level) */
};

/* log Lambda of the one-sided normal mixtures (scales tau x 4^j, equal
 * weights) for an estimate, its variance v > 0 and tau > 0. */
double mg_seq_log_lr(double estimate, double v, double tau);

/* Treatment ratio against k times the control's. dir +1: H1 is
 * R_t > k R_c (a max_ratio guard); dir -1: H1 is R_t < k R_c (min_ratio).
 * detect_ratio > 1 sets tau; alpha in (0, 1). */
void mg_seq_ratio(const struct mg_seq_arm *t, const struct mg_seq_arm *c,
                  double k, int dir, double detect_ratio, double alpha,
                  struct mg_seq_result *out);

/* Two means of logs (t's and c's arms: n, sum, sq of ln values): H1 is
 * mean_t - mean_c > ln k. */
void mg_seq_shift(const struct mg_seq_arm *t, const struct mg_seq_arm *c,
                  double k, double detect_ratio, double alpha,
                  struct mg_seq_result *out);

/* One mean against a threshold. dir -1: a floor (H1 is mean < thr); dir +1:
 * a ceiling (H1 is mean > thr). 0/1 values are tested on the square-root
 * scale like mg_seq_ratio's. */
void mg_seq_level(const struct mg_seq_arm *t, double thr, int dir,
                  double detect_ratio, double alpha,
                  struct mg_seq_result *out);

#endif
