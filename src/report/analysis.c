/* analysis.c - metrics, comparisons, checks and alarms (analysis.h).
 *
 * Work is organised around two arrays the reader filled: the per-unit
 * aggregates (one pass gives every arm's per-unit statistics) and each
 * flag's rows (quantiles, histograms and the input-axis cells, which need
 * per-unit sums within a cell and so re-aggregate the rows of the cell).
 * Scratch memory is allocated once for the largest flag and reused. */
#include "report/analysis.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const struct mg_rp_metric_info mg_rp_metrics[MG_RP_NMETRICS] = {
    [MG_RP_M_ERROR] = {"error_rate", "error rate", 1, true, "error"},
    [MG_RP_M_FALLBACK] = {"fallback_rate", "fallback rate", 1, true,
                          "fallback"},
    [MG_RP_M_LOWCONF] = {"low_confidence_rate", "low-confidence rate", 1,
                         true, "low-conf"},
    [MG_RP_M_CONFIDENCE] = {"mean_confidence", "mean confidence", -1, false,
                            "conf"},
    [MG_RP_M_LATENCY] = {"mean_latency_ms", "mean latency (ms)", 1, false,
                         "latency"},
    [MG_RP_M_PROMPT] = {"prompt_tokens", "prompt tokens/request", 0, false,
                        "prompt tok"},
    [MG_RP_M_COMPLETION] = {"completion_tokens", "completion tokens/request",
                            0, false, "compl. tok"},
    [MG_RP_M_COST] = {"cost_per_request", "cost per request", 1, false,
                      "cost"},
    [MG_RP_M_COST_OK] = {"cost_per_success", "cost per successful answer", 1,
                         false, "cost/ok"},
    [MG_RP_M_COVERAGE] = {"feedback_coverage", "feedback coverage", 0, true,
                          "coverage"},
};

static bool is_cost(int m) { return m == MG_RP_M_COST || m == MG_RP_M_COST_OK; }

/* ---- formatting --------------------------------------------------------- */

const char *mg_rp_fmt_value(char *buf, size_t n, enum mg_rp_metric m,
                            double v) {
  if (isnan(v))
    snprintf(buf, n, "n/a");
  else if (is_cost(m))
    snprintf(buf, n, fabs(v) < 1 ? "$%.6f" : "$%.4f", v);
  else if (mg_rp_metrics[m].rate)
    snprintf(buf, n, "%.2f%%", v * 100);
  else if (m == MG_RP_M_CONFIDENCE)
    snprintf(buf, n, "%.3f", v);
  else
    snprintf(buf, n, "%.1f", v);
  return buf;
}

const char *mg_rp_fmt_diff(char *buf, size_t n, enum mg_rp_metric m,
                           double d) {
  if (isnan(d))
    snprintf(buf, n, "n/a");
  else if (is_cost(m))
    snprintf(buf, n, fabs(d) < 1 ? "%s$%.6f" : "%s$%.4f", d < 0 ? "-" : "+",
             fabs(d));
  else if (mg_rp_metrics[m].rate)
    snprintf(buf, n, "%+.2f pp", d * 100);
  else if (m == MG_RP_M_CONFIDENCE)
    snprintf(buf, n, "%+.3f", d);
  else if (m == MG_RP_M_LATENCY)
    snprintf(buf, n, "%+.1f ms", d);
  else
    snprintf(buf, n, "%+.1f", d);
  return buf;
}

const char *mg_rp_fmt_ms(char *buf, size_t n, double v) {
  if (isnan(v))
    snprintf(buf, n, "n/a");
  else
    snprintf(buf, n, "%.1f", v);
  return buf;
}

const char *mg_rp_fmt_p(char *buf, size_t n, double p) {
  if (isnan(p))
    snprintf(buf, n, "n/a");
  else if (p < 1e-300)
    snprintf(buf, n, "< 1e-300");
  else if (p < 0.001)
    snprintf(buf, n, "%.1e", p);
  else
    snprintf(buf, n, "%.3f", p);
  return buf;
}

const char *mg_rp_fmt_count(char *buf, size_t n, uint64_t v) {
  char tmp[32];
  size_t len, i, o = 0;
  snprintf(tmp, sizeof(tmp), "%" PRIu64, v);
  len = strlen(tmp);
  for (i = 0; i < len && o + 2 < n; i++) {
    if (i > 0 && (len - i) % 3 == 0)
      buf[o++] = ',';
    buf[o++] = tmp[i];
  }
  buf[o] = '\0';
  return buf;
}

/* ---- per-unit sums ------------------------------------------------------- */

/* What one unit (or one request, for request units) contributes. */
struct sums {
  double requests, errors, fallbacks, lowconf, conf_n, conf_sum, ms_sum;
  double tok_n, tok_prompt, tok_completion;
  double cost_n, ok_cost_n, cost_sum, fb_rows;
};

static void sums_of_unit(const struct mg_rp_unit *u, struct sums *s) {
  s->requests = u->requests;
  s->errors = u->errors;
  s->fallbacks = u->fallbacks;
  s->lowconf = u->lowconf;
  s->conf_n = u->conf_n;
  s->conf_sum = u->conf_sum;
  s->ms_sum = u->ms_sum;
  s->tok_n = u->tok_n;
  s->tok_prompt = (double)u->tok_prompt;
  s->tok_completion = (double)u->tok_completion;
  s->cost_n = u->cost_n;
  s->ok_cost_n = u->ok_cost_n;
  s->cost_sum = u->cost_sum;
  s->fb_rows = u->fb_rows;
}

static void sums_of_row(const struct mg_rp_row *r, struct sums *s) {
  bool tok = (r->bits & MG_RP_TOK) != 0, conf = (r->bits & MG_RP_CONF) != 0;
  s->requests = 1;
  s->errors = (r->bits & MG_RP_ERR) != 0;
  s->fallbacks = (r->bits & MG_RP_FB) != 0;
  s->lowconf = (r->bits & MG_RP_LC) != 0;
  s->conf_n = conf;
  s->conf_sum = conf ? r->confidence : 0;
  s->ms_sum = r->ms;
  s->tok_n = tok;
  s->tok_prompt = tok ? r->tok_prompt : 0;
  s->tok_completion = tok ? r->tok_completion : 0;
  s->cost_n = (r->bits & MG_RP_COST) != 0;
  s->ok_cost_n = s->cost_n && !(r->bits & MG_RP_ERR);
  s->cost_sum = s->cost_n ? r->cost : 0;
  s->fb_rows = (r->bits & MG_RP_FBK) != 0;
}

/* The numerator and denominator of metric m for one unit. */
static void metric_xy(const struct sums *s, int m, double *x, double *y) {
  switch (m) {
  case MG_RP_M_ERROR:
    *x = s->errors, *y = s->requests;
    break;
  case MG_RP_M_FALLBACK:
    *x = s->fallbacks, *y = s->requests;
    break;
  case MG_RP_M_LOWCONF:
    *x = s->lowconf, *y = s->requests;
    break;
  case MG_RP_M_CONFIDENCE:
    *x = s->conf_sum, *y = s->conf_n;
    break;
  case MG_RP_M_LATENCY:
    *x = s->ms_sum, *y = s->requests;
    break;
  case MG_RP_M_PROMPT:
    *x = s->tok_prompt, *y = s->tok_n;
    break;
  case MG_RP_M_COMPLETION:
    *x = s->tok_completion, *y = s->tok_n;
    break;
  case MG_RP_M_COST:
    *x = s->cost_sum, *y = s->cost_n;
    break;
  case MG_RP_M_COST_OK:
    *x = s->cost_sum, *y = s->ok_cost_n;
    break;
  default:
    *x = s->fb_rows, *y = s->requests;
    break;
  }
}

static void acc_add(struct mg_stats_ratio *acc, int nm, const struct sums *s) {
  int m;
  for (m = 0; m < nm; m++) {
    double x, y;
    metric_xy(s, m, &x, &y);
    mg_stats_ratio_add(&acc[m], x, y);
  }
}

static void variant_add(struct mg_rp_variant *v, const struct sums *s) {
  acc_add(v->acc, MG_RP_NMETRICS, s);
  v->cost_total += s->cost_sum;
  v->tok_n += (uint64_t)s->tok_n;
  v->tok_prompt += (uint64_t)s->tok_prompt;
  v->tok_completion += (uint64_t)s->tok_completion;
}

/* ---- alarms ------------------------------------------------------------- */

static int alarm_add(struct mg_rp_report *r, const char *check,
                     const char *flag, const char *variant, double p,
                     const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int alarm_add(struct mg_rp_report *r, const char *check,
                     const char *flag, const char *variant, double p,
                     const char *fmt, ...) {
  struct mg_rp_alarm *a;
  va_list ap;
  char *text;
  int len;

  va_start(ap, fmt);
  len = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  text = malloc((size_t)len + 1);
  if (text == NULL)
    return -ENOMEM;
  va_start(ap, fmt);
  vsnprintf(text, (size_t)len + 1, fmt, ap);
  va_end(ap);
  a = realloc(r->alarms, (r->nalarms + 1) * sizeof(*a));
  if (a == NULL) {
    free(text);
    return -ENOMEM;
  }
  r->alarms = a;
  a += r->nalarms++;
  a->check = check;
  a->flag = flag;
  a->variant = variant;
  a->p = p;
  a->metric = NULL;
  a->other_flag = NULL;
  a->cells = NULL;
  a->ncells = 0;
  a->text = text;
  return 0;
}

/* ---- shared scratch ------------------------------------------------------ */

/* One unit's sums within an input-axis cell. */
struct cell_sums {
  uint32_t requests, errors, fallbacks, lowconf, conf_n, tok_n;
  uint32_t arm; /* the unit's arm, kept here to spare a lookup */
  double conf_sum, ms_sum;
  uint64_t tok_prompt, tok_completion;
};

/* A unit for the cohort-balance ranking. */
struct ranked {
  uint32_t requests;
  uint32_t arm;
  uint64_t hash;
};

struct work {
  const struct mg_rp_log *log;  /* borrowed */
  uint32_t *by_flag;            /* owned: unit indexes grouped by flag */
  size_t *flag_first;           /* owned: nflags + 1 offsets into by_flag */
  double *dbl;                  /* owned: max rows or units of a flag */
  size_t ndbl;
  struct cell_sums *cell;       /* owned: one per unit, zero between uses */
  uint32_t *touched;            /* owned: units touched in a cell pass */
  struct ranked *rank;          /* owned: units of a flag */
  uint32_t *cellrows;           /* owned: 2 x max rows, rows by cell */
};

static void work_free(struct work *w) {
  free(w->by_flag);
  free(w->flag_first);
  free(w->dbl);
  free(w->cell);
  free(w->touched);
  free(w->rank);
  free(w->cellrows);
}

static int work_init(struct work *w, const struct mg_rp_log *log) {
  size_t i, maxrows = 0, maxunits = 0;

  memset(w, 0, sizeof(*w));
  w->log = log;
  w->flag_first = calloc(log->nflags + 1, sizeof(size_t));
  w->by_flag = malloc((log->nunits ? log->nunits : 1) * sizeof(uint32_t));
  w->cell = calloc(log->nunits ? log->nunits : 1, sizeof(*w->cell));
  w->touched = malloc((log->nunits ? log->nunits : 1) * sizeof(uint32_t));
  if (!w->flag_first || !w->by_flag || !w->cell || !w->touched)
    return -ENOMEM;
  /* Counting sort of the units by flag. */
  for (i = 0; i < log->nunits; i++)
    w->flag_first[log->units[i].flag + 1]++;
  for (i = 0; i < log->nflags; i++) {
    size_t units = w->flag_first[i + 1];
    w->flag_first[i + 1] += w->flag_first[i];
    if (log->flags[i]->nrows > maxrows)
      maxrows = log->flags[i]->nrows;
    /* A flag's units: its aggregates plus its request units (rows). */
    if (units + log->flags[i]->nrows > maxunits)
      maxunits = units + log->flags[i]->nrows;
  }
  {
    size_t *next = malloc((log->nflags + 1) * sizeof(size_t));
    if (next == NULL)
      return -ENOMEM;
    memcpy(next, w->flag_first, (log->nflags + 1) * sizeof(size_t));
    for (i = 0; i < log->nunits; i++)
      w->by_flag[next[log->units[i].flag]++] = (uint32_t)i;
    free(next);
  }
  w->ndbl = maxrows > maxunits ? maxrows : maxunits;
  w->dbl = malloc((w->ndbl ? w->ndbl : 1) * sizeof(double));
  w->rank = malloc((maxunits ? maxunits : 1) * sizeof(*w->rank));
  w->cellrows = malloc((maxrows ? 2 * maxrows : 1) * sizeof(uint32_t));
  if (!w->dbl || !w->rank || !w->cellrows)
    return -ENOMEM;
  return 0;
}

/* ---- per flag: metrics -------------------------------------------------- */

static int flag_init(struct mg_rp_flag_report *fr, const struct mg_rp_flag *f,
                     bool shown, const struct mg_rp_options *opt) {
  uint32_t a;
  int m;

  fr->src = f;
  fr->shown = shown;
  /* A rule names the flag itself; sections split by endpoint share it. */
  for (a = 0; a < opt->nrules; a++)
    if (strlen(opt->rules[a].flag) == f->base_len &&
        memcmp(opt->rules[a].flag, f->name, f->base_len) == 0)
    {
      if (opt->rules[a].has_rule)
        fr->decide = &opt->rules[a].rule;
      fr->cfg_off_variant = opt->rules[a].off_variant;
    }
  fr->narms = f->narms;
  fr->control = MG_RP_NONE;
  fr->modal_wset = -1;
  fr->records = f->records;
  fr->v = calloc(f->narms ? f->narms : 1, sizeof(*fr->v));
  if (fr->v == NULL)
    return -ENOMEM;
  for (a = 0; a < f->narms; a++) {
    struct mg_rp_variant *v = &fr->v[a];
    v->name = f->arms[a].name;
    v->records = f->arms[a].records;
    v->requests = f->arms[a].rollout;
    fr->rollout += v->requests;
    for (m = 0; m < MG_RP_NMETRICS; m++)
      mg_stats_ratio_init(&v->acc[m]);
    v->p50 = v->p95 = v->p99 = v->p95_lo = v->p95_hi = NAN;
    v->rpu_mean = v->rpu_p50 = v->rpu_p90 = v->rpu_p99 = NAN;
    v->heavy_requests = NAN;
  }
  /* The weight set most rollout records carried. */
  for (a = 0; a < f->nwsets; a++)
    if (fr->modal_wset < 0 ||
        f->wsets[a].records > f->wsets[fr->modal_wset].records)
      fr->modal_wset = (int)a;
  return 0;
}

static bool wset_has(const struct mg_rp_wset *ws, uint32_t arm, uint32_t *bp) {
  uint32_t i;
  for (i = 0; i < ws->n; i++)
    if (ws->arm[i] == arm) {
      *bp = ws->bp[i];
      return true;
    }
  return false;
}

static void choose_control(struct mg_rp_flag_report *fr,
                           const struct mg_rp_options *opt) {
  const struct mg_rp_flag *f = fr->src;
  uint64_t best = 0;
  uint32_t a, bp, best_bp = 0;

  if (opt->control) {
    for (a = 0; a < fr->narms; a++)
      if (strcmp(fr->v[a].name, opt->control) == 0) {
        fr->control = a;
        fr->control_source = "--control";
        return;
      }
    fr->control_option_missing = true;
  }
  /* The config names the flag's control: nothing in the log outranks it
   * (a treatment ramped past half holds the largest weight). */
  if (fr->cfg_off_variant) {
    for (a = 0; a < fr->narms; a++)
      if (strcmp(fr->v[a].name, fr->cfg_off_variant) == 0) {
        fr->control = a;
        fr->control_source = "the off_variant of the -c config";
        return;
      }
  }
  /* Records that were not randomized because the flag was killed, outside
   * its window, blocked, or fell through all name the off_variant, which is
   * what DESIGN.md compares against. */
  for (a = 0; a < fr->narms; a++)
    if (f->arms[a].off > best) {
      best = f->arms[a].off;
      fr->control = a;
    }
  if (fr->control != MG_RP_NONE) {
    fr->control_source = "the off_variant, named by killed/window/"
                         "blocked/default/no_unit records";
    return;
  }
  for (a = 0; a < fr->narms; a++)
    if (strcmp(fr->v[a].name, "control") == 0) {
      fr->control = a;
      fr->control_source = "the variant named \"control\"";
      return;
    }
  if (fr->modal_wset >= 0) {
    const struct mg_rp_wset *ws = &f->wsets[fr->modal_wset];
    for (a = 0; a < fr->narms; a++)
      if (wset_has(ws, a, &bp) && bp > best_bp && fr->v[a].requests > 0) {
        best_bp = bp;
        fr->control = a;
      }
    if (fr->control != MG_RP_NONE) {
      fr->control_source = "the variant with the largest logged weight";
      return;
    }
  }
  for (a = 0; a < fr->narms; a++)
    if (fr->v[a].requests > 0) {
      fr->control = a;
      fr->control_source = "the first variant seen";
      return;
    }
}

static void finish_metrics(struct mg_rp_flag_report *fr) {
  uint32_t a;
  int m;
  for (a = 0; a < fr->narms; a++) {
    struct mg_rp_variant *v = &fr->v[a];
    v->units = (uint64_t)v->acc[0].n;
    for (m = 0; m < MG_RP_NMETRICS; m++) {
      v->value[m] = mg_stats_ratio_value(&v->acc[m]);
      v->se[m] = sqrt(mg_stats_ratio_var(&v->acc[m]));
    }
  }
  if (fr->control == MG_RP_NONE)
    return;
  fr->v[fr->control].control = true;
  for (a = 0; a < fr->narms; a++) {
    if (a == fr->control || fr->v[a].units == 0)
      continue;
    fr->v[a].has_cmp = true;
    for (m = 0; m < MG_RP_NMETRICS; m++)
      mg_stats_ratio_compare(&fr->v[a].acc[m], &fr->v[fr->control].acc[m],
                             mg_rp_metrics[m].rate, &fr->v[a].cmp[m]);
  }
}

/* Latency quantiles and histograms: the rows' ms grouped by arm (a
 * counting sort into scratch), then selection per arm. */
static void latency(struct mg_rp_flag_report *fr, struct work *w) {
  const struct mg_rp_flag *f = fr->src;
  size_t first[MG_RP_MAX_ARMS + 1], next[MG_RP_MAX_ARMS], i;
  double lo = INFINITY, hi = -INFINITY, span;
  uint32_t a;

  memset(first, 0, sizeof(first));
  for (i = 0; i < f->nrows; i++) {
    double ms = f->rows[i].ms;
    first[f->rows[i].arm + 1]++;
    if (ms < lo)
      lo = ms;
    if (ms > hi)
      hi = ms;
  }
  for (a = 0; a < fr->narms; a++) {
    first[a + 1] += first[a];
    next[a] = first[a];
  }
  for (i = 0; i < f->nrows; i++)
    w->dbl[next[f->rows[i].arm]++] = f->rows[i].ms;
  for (a = 0; a < fr->narms; a++) {
    struct mg_rp_variant *v = &fr->v[a];
    size_t n = first[a + 1] - first[a];
    double ps[5], q[5], sum = 0, sum2 = 0, s2, vmean, deff, neff, z, h;
    double alpha = fr->decide ? fr->decide->alpha : 0.05;
    /* The p95's interval, distribution-free: the order statistics at
     * ranks n (0.95 -/+ z sqrt(0.95 0.05 / n_eff)), with n_eff the
     * requests over the design effect (the delta-method variance of the
     * mean latency against the variance of as many independent requests),
     * each arm at 1 - alpha/2 so that a ratio of two arms' bounds holds at
     * 1 - alpha (Bonferroni). */
    for (i = first[a]; i < first[a + 1]; i++) {
      sum += w->dbl[i];
      sum2 += w->dbl[i] * w->dbl[i];
    }
    s2 = n > 1 ? (sum2 - sum * sum / (double)n) / (double)(n - 1) : NAN;
    vmean = mg_stats_ratio_var(&v->acc[MG_RP_M_LATENCY]);
    deff = s2 > 0 && vmean > 0 ? vmean / (s2 / (double)n) : 1;
    neff = (double)n / (deff > 1 ? deff : 1);
    z = mg_stats_t_quantile2(alpha / 2, INFINITY);
    h = neff > 0 ? z * sqrt(0.95 * 0.05 / neff) : 1;
    ps[0] = 0.50;
    ps[1] = 0.95 - h < 0 ? 0 : 0.95 - h;
    ps[2] = 0.95;
    ps[3] = 0.95 + h > 1 ? 1 : 0.95 + h;
    ps[4] = 0.99;
    if (ps[3] > ps[4]) {
      /* Keep the probabilities ascending for the selection. */
      double t = ps[3];
      ps[3] = ps[4];
      ps[4] = t;
      mg_stats_quantiles(w->dbl + first[a], n, ps, 5, q);
      v->p99 = q[3];
      v->p95_hi = q[4];
    } else {
      mg_stats_quantiles(w->dbl + first[a], n, ps, 5, q);
      v->p95_hi = q[3];
      v->p99 = q[4];
    }
    v->p50 = q[0];
    v->p95_lo = q[1];
    v->p95 = q[2];
    if (n < 2)
      v->p95_lo = v->p95_hi = NAN;
  }
  /* Log-spaced bins: latencies span decades (a cache hit against a slow
   * fallback). Sub-0.1 ms values share the first bin. */
  if (f->nrows == 0)
    return;
  lo = log10(lo < 0.1 ? 0.1 : lo);
  hi = log10(hi < 0.1 ? 0.1 : hi);
  if (hi - lo < 1e-9)
    hi = lo + 1;
  fr->hist_lo = lo;
  fr->hist_hi = hi;
  span = hi - lo;
  for (i = 0; i < f->nrows; i++) {
    double ms = f->rows[i].ms;
    int b = (int)((log10(ms < 0.1 ? 0.1 : ms) - lo) / span * MG_RP_HIST_BINS);
    if (b < 0)
      b = 0;
    if (b >= MG_RP_HIST_BINS)
      b = MG_RP_HIST_BINS - 1;
    fr->v[f->rows[i].arm].hist[b]++;
  }
}

/* ---- per flag: sample ratio --------------------------------------------- */

static void srm(struct mg_rp_flag_report *fr) {
  const struct mg_rp_wset *ws;
  double obs[MG_RP_MAX_ARMS], prop[MG_RP_MAX_ARMS], total = 0;
  double total_units = 0;
  uint32_t a, bp;

  if (fr->modal_wset < 0) {
    fr->srm_note = "no weights in the rollout records";
    return;
  }
  ws = &fr->src->wsets[fr->modal_wset];
  for (a = 0; a < ws->n; a++)
    total += ws->bp[a];
  for (a = 0; a < fr->narms; a++) {
    obs[a] = (double)fr->v[a].srm_units;
    prop[a] = wset_has(ws, a, &bp) && total > 0 ? bp / total : 0;
    fr->v[a].srm_expected = prop[a];
  }
  if (mg_stats_chi2_gof(obs, prop, fr->narms, &fr->srm_chi2, &fr->srm_df,
                        &fr->srm_p) != 0) {
    fr->srm_note = "fewer than two variants with weight and units";
    return;
  }
  /* Pearson's statistic is chi-square distributed only when every
   * expected count is large enough (Cochran's rule: 5). */
  for (a = 0; a < fr->narms; a++)
    total_units += obs[a];
  for (a = 0; a < fr->narms; a++)
    if (prop[a] > 0 && total_units * prop[a] < MG_RP_MIN_EXPECTED &&
        !isinf(fr->srm_chi2)) {
      fr->srm_note = "too few units: an expected count is below 5";
      return;
    }
  fr->srm_tested = true;
  fr->srm_alarm = fr->srm_p < MG_RP_ALPHA_SRM;
}

/* ---- per flag: cohort balance ------------------------------------------- */

static int rank_cmp(const void *pa, const void *pb) {
  const struct ranked *a = pa, *b = pb;
  if (a->requests != b->requests)
    return a->requests > b->requests ? -1 : 1;
  if (a->hash != b->hash)
    return a->hash < b->hash ? -1 : 1;
  return 0;
}

static void balance(struct mg_rp_flag_report *fr, struct work *w) {
  const struct mg_rp_log *log = w->log;
  const struct mg_rp_flag *f = fr->src;
  size_t first[MG_RP_MAX_ARMS + 1], next[MG_RP_MAX_ARMS];
  double table[2 * MG_RP_MAX_ARMS], heavy_req[MG_RP_MAX_ARMS];
  size_t n = 0, k, i, u;
  uint32_t a, lo = UINT32_MAX, hi = 0;

  for (u = w->flag_first[f->index]; u < w->flag_first[f->index + 1]; u++) {
    const struct mg_rp_unit *x = &log->units[w->by_flag[u]];
    w->rank[n].requests = x->requests;
    w->rank[n].arm = x->arm;
    w->rank[n].hash = x->hash;
    n++;
  }
  for (i = 0; i < f->nrows; i++) {
    if (f->rows[i].unit != MG_RP_NONE)
      continue;
    w->rank[n].requests = 1;
    w->rank[n].arm = f->rows[i].arm;
    /* Request units have no id: order them by a hash of their position. */
    w->rank[n].hash = (uint64_t)i * UINT64_C(0x9e3779b97f4a7c15);
    n++;
  }
  fr->bal_units = n;
  for (i = 0; i < n; i++) {
    if (w->rank[i].requests < lo)
      lo = w->rank[i].requests;
    if (w->rank[i].requests > hi)
      hi = w->rank[i].requests;
  }

  /* Requests per unit, per arm (descriptive, whatever the test says). */
  memset(first, 0, sizeof(first));
  for (i = 0; i < n; i++)
    first[w->rank[i].arm + 1]++;
  for (a = 0; a < fr->narms; a++) {
    first[a + 1] += first[a];
    next[a] = first[a];
  }
  for (i = 0; i < n; i++)
    w->dbl[next[w->rank[i].arm]++] = w->rank[i].requests;
  for (a = 0; a < fr->narms; a++) {
    static const double ps[3] = {0.50, 0.90, 0.99};
    size_t m = first[a + 1] - first[a];
    double q[3];
    if (m == 0)
      continue;
    mg_stats_quantiles(w->dbl + first[a], m, ps, 3, q);
    fr->v[a].rpu_mean = (double)fr->v[a].requests / (double)m;
    fr->v[a].rpu_p50 = q[0];
    fr->v[a].rpu_p90 = q[1];
    fr->v[a].rpu_p99 = q[2];
  }

  if (n < 40) {
    fr->bal_note = "fewer than 40 units";
    return;
  }
  if (lo == hi) {
    fr->bal_note = "every unit sent the same number of requests";
    return;
  }
  k = (size_t)ceil(MG_RP_HEAVY_SHARE * (double)n);
  qsort(w->rank, n, sizeof(*w->rank), rank_cmp);
  fr->heavy_units = k;
  fr->heavy_min_requests = w->rank[k - 1].requests;
  memset(table, 0, sizeof(table));
  memset(heavy_req, 0, sizeof(heavy_req));
  for (i = 0; i < n; i++) {
    a = w->rank[i].arm;
    if (i < k) {
      table[a]++;
      heavy_req[a] += w->rank[i].requests;
    } else {
      table[fr->narms + a]++;
    }
  }
  for (a = 0; a < fr->narms; a++) {
    fr->v[a].heavy = (uint64_t)table[a];
    if (fr->v[a].requests > 0)
      fr->v[a].heavy_requests = heavy_req[a] / (double)fr->v[a].requests;
  }
  if (mg_stats_chi2_indep(table, 2, fr->narms, &fr->bal_chi2, &fr->bal_df,
                          &fr->bal_p) != 0) {
    fr->bal_note = "fewer than two variants with units";
    return;
  }
  /* The expected heavy units of an arm are k n_arm / n (Cochran's rule, as
   * for the sample ratio). */
  for (a = 0; a < fr->narms; a++) {
    double na = table[a] + table[fr->narms + a];
    if (na > 0 && (double)k * na / (double)n < MG_RP_MIN_EXPECTED) {
      fr->bal_note = "too few units: an expected count of heavy units is "
                     "below 5";
      return;
    }
  }
  fr->bal_tested = true;
  fr->bal_alarm = fr->bal_p < MG_RP_ALPHA_BALANCE;
}

/* ---- per flag: the input axis ------------------------------------------- */

/* The chars cell (0-3) and the tools cell (4-6) of a row. */
static void cells_of(const struct mg_rp_flag_report *fr,
                     const struct mg_rp_row *r, uint32_t *chars,
                     uint32_t *tools) {
  const double *e = fr->chars_edges;
  double x = r->chars;
  *chars = x <= e[0] ? 0 : x <= e[1] ? 1 : x <= e[2] ? 2 : 3;
  *tools = r->tools == 0 ? 4 : r->tools <= 2 ? 5 : 6;
}

static void cell_sums_add(struct cell_sums *s, const struct mg_rp_row *r) {
  s->requests++;
  s->errors += (r->bits & MG_RP_ERR) != 0;
  s->fallbacks += (r->bits & MG_RP_FB) != 0;
  s->lowconf += (r->bits & MG_RP_LC) != 0;
  s->ms_sum += r->ms;
  if (r->bits & MG_RP_CONF) {
    s->conf_n++;
    s->conf_sum += r->confidence;
  }
  if (r->bits & MG_RP_TOK) {
    s->tok_n++;
    s->tok_prompt += r->tok_prompt;
    s->tok_completion += r->tok_completion;
  }
}

static void cell_to_sums(const struct cell_sums *c, struct sums *s) {
  memset(s, 0, sizeof(*s));
  s->requests = c->requests;
  s->errors = c->errors;
  s->fallbacks = c->fallbacks;
  s->lowconf = c->lowconf;
  s->conf_n = c->conf_n;
  s->conf_sum = c->conf_sum;
  s->ms_sum = c->ms_sum;
  s->tok_n = c->tok_n;
  s->tok_prompt = (double)c->tok_prompt;
  s->tok_completion = (double)c->tok_completion;
}

/* One cell, whose rows are rows[idx[0..n)]: per-unit sums within the
 * cell, then per-arm statistics. */
static void cell_fill(struct mg_rp_flag_report *fr, struct mg_rp_cell *c,
                      struct work *w, const uint32_t *idx, size_t n,
                      struct mg_stats_ratio acc[][MG_RP_CELL_METRICS]) {
  const struct mg_rp_flag *f = fr->src;
  size_t first[MG_RP_MAX_ARMS + 1], next[MG_RP_MAX_ARMS], i, ntouched = 0;
  struct sums s;
  uint32_t a;
  int m;

  for (a = 0; a < fr->narms; a++)
    for (m = 0; m < MG_RP_CELL_METRICS; m++)
      mg_stats_ratio_init(&acc[a][m]);
  memset(first, 0, sizeof(first));
  for (i = 0; i < n; i++) {
    const struct mg_rp_row *r = &f->rows[idx[i]];
    /* Units come in no order: fetch the sums of a row a few ahead. */
    if (i + 8 < n && f->rows[idx[i + 8]].unit != MG_RP_NONE)
      __builtin_prefetch(&w->cell[f->rows[idx[i + 8]].unit]);
    first[r->arm + 1]++;
    if (r->unit == MG_RP_NONE) {
      sums_of_row(r, &s);
      acc_add(acc[r->arm], MG_RP_CELL_METRICS, &s);
      continue;
    }
    if (w->cell[r->unit].requests == 0) {
      w->touched[ntouched++] = r->unit;
      w->cell[r->unit].arm = r->arm;
    }
    cell_sums_add(&w->cell[r->unit], r);
  }
  for (i = 0; i < ntouched; i++) {
    struct cell_sums *cs = &w->cell[w->touched[i]];
    cell_to_sums(cs, &s);
    acc_add(acc[cs->arm], MG_RP_CELL_METRICS, &s);
    memset(cs, 0, sizeof(*cs));
  }
  /* Latency quantiles of the cell, per arm. */
  for (a = 0; a < fr->narms; a++) {
    first[a + 1] += first[a];
    next[a] = first[a];
  }
  for (i = 0; i < n; i++)
    w->dbl[next[f->rows[idx[i]].arm]++] = f->rows[idx[i]].ms;
  c->requests = first[fr->narms];
  for (a = 0; a < fr->narms; a++) {
    static const double ps[2] = {0.50, 0.95};
    struct mg_rp_cell_arm *ca = &c->arms[a];
    double q[2];
    ca->requests = first[a + 1] - first[a];
    ca->units = (uint64_t)acc[a][0].n;
    mg_stats_quantiles(w->dbl + first[a], ca->requests, ps, 2, q);
    ca->p50 = q[0];
    ca->p95 = q[1];
    for (m = 0; m < MG_RP_CELL_METRICS; m++) {
      ca->value[m] = mg_stats_ratio_value(&acc[a][m]);
      ca->se[m] = sqrt(mg_stats_ratio_var(&acc[a][m]));
    }
  }
  if (fr->control == MG_RP_NONE)
    return;
  for (a = 0; a < fr->narms; a++) {
    struct mg_rp_cell_arm *ca = &c->arms[a];
    if (a == fr->control || ca->units == 0)
      continue;
    ca->has_cmp = true;
    for (m = 0; m < MG_RP_CELL_METRICS; m++) {
      mg_stats_ratio_compare(&acc[a][m], &acc[fr->control][m],
                             mg_rp_metrics[m].rate, &ca->cmp[m]);
      if (!isnan(ca->cmp[m].p) && mg_rp_metrics[m].worse != 0)
        fr->cell_tests++;
    }
  }
}

static int input_axis(struct mg_rp_flag_report *fr, struct work *w) {
  static const double tools[3][2] = {{0, 0}, {1, 2}, {3, INFINITY}};
  const struct mg_rp_flag *f = fr->src;
  struct mg_stats_ratio(*acc)[MG_RP_CELL_METRICS];
  size_t cfirst[MG_RP_CELLS + 1], cnext[MG_RP_CELLS];
  double e[3];
  uint32_t c, a, keep = 0;
  size_t i;
  int m;

  if (f->nrows == 0)
    return 0;
  for (i = 0; i < f->nrows; i++)
    w->dbl[i] = f->rows[i].chars;
  /* Quartiles of the flag's rollout records, rounded down to whole
   * characters so the cells have printable integer edges. */
  {
    static const double ps[3] = {0.25, 0.50, 0.75};
    mg_stats_quantiles(w->dbl, f->nrows, ps, 3, e);
    for (c = 0; c < 3; c++)
      e[c] = floor(e[c]);
  }
  memcpy(fr->chars_edges, e, sizeof(e));
  /* Every cell's arms are freed with the report, also after a failure
   * half-way (the report starts zeroed). */
  fr->ncells = MG_RP_CELLS;
  for (c = 0; c < MG_RP_CELLS; c++) {
    struct mg_rp_cell *cell = &fr->cells[c];
    if (c < 4) {
      cell->axis = "chars";
      cell->lo = c == 0 ? -1 : e[c - 1];
      cell->hi = c == 3 ? INFINITY : e[c];
      if (c == 0)
        snprintf(cell->label, sizeof(cell->label), "chars <= %.0f", e[0]);
      else if (c == 3)
        snprintf(cell->label, sizeof(cell->label), "chars > %.0f", e[2]);
      else
        snprintf(cell->label, sizeof(cell->label), "chars %.0f-%.0f",
                 e[c - 1] + 1, e[c]);
    } else {
      cell->axis = "tools";
      cell->lo = tools[c - 4][0];
      cell->hi = tools[c - 4][1];
      snprintf(cell->label, sizeof(cell->label), "%s",
               c == 4 ? "tools 0" : c == 5 ? "tools 1-2" : "tools 3+");
    }
    cell->arms = calloc(fr->narms, sizeof(*cell->arms));
    if (cell->arms == NULL)
      return -ENOMEM;
  }
  /* Group the rows by cell once (a counting sort of their indexes, each
   * row in one chars cell and one tools cell) instead of scanning every
   * row for every cell. */
  memset(cfirst, 0, sizeof(cfirst));
  for (i = 0; i < f->nrows; i++) {
    uint32_t cc, tc;
    cells_of(fr, &f->rows[i], &cc, &tc);
    cfirst[cc + 1]++;
    cfirst[tc + 1]++;
  }
  for (c = 0; c < MG_RP_CELLS; c++) {
    cfirst[c + 1] += cfirst[c];
    cnext[c] = cfirst[c];
  }
  for (i = 0; i < f->nrows; i++) {
    uint32_t cc, tc;
    cells_of(fr, &f->rows[i], &cc, &tc);
    w->cellrows[cnext[cc]++] = (uint32_t)i;
    w->cellrows[cnext[tc]++] = (uint32_t)i;
  }
  acc = malloc(fr->narms * sizeof(*acc));
  if (acc == NULL)
    return -ENOMEM;
  for (c = 0; c < MG_RP_CELLS; c++)
    cell_fill(fr, &fr->cells[c], w, w->cellrows + cfirst[c],
              cfirst[c + 1] - cfirst[c], acc);
  free(acc);

  /* Bonferroni over every cell comparison of the flag: several cells and
   * metrics per treatment would otherwise raise false alarms in an A/A. */
  for (c = 0; c < MG_RP_CELLS; c++)
    for (a = 0; a < fr->narms; a++) {
      struct mg_rp_cell_arm *ca = &fr->cells[c].arms[a];
      const struct mg_rp_cell_arm *ctl;
      if (!ca->has_cmp)
        continue;
      ctl = &fr->cells[c].arms[fr->control];
      for (m = 0; m < MG_RP_CELL_METRICS; m++) {
        double p = ca->cmp[m].p * fr->cell_tests;
        ca->p_adj[m] = isnan(p) ? NAN : p > 1 ? 1 : p;
        ca->flagged[m] = mg_rp_metrics[m].worse * ca->cmp[m].diff > 0 &&
                         ca->p_adj[m] < MG_RP_ALPHA_CELL &&
                         ca->units >= MG_RP_MIN_CELL_UNITS &&
                         ctl->units >= MG_RP_MIN_CELL_UNITS;
      }
    }
  /* Cells no record fell in (tied quartiles) are left out. */
  for (c = 0; c < MG_RP_CELLS; c++) {
    if (fr->cells[c].requests == 0) {
      free(fr->cells[c].arms);
      continue;
    }
    fr->cells[keep++] = fr->cells[c];
  }
  fr->ncells = keep;
  return 0;
}

/* ---- cross-flag co-assignment -------------------------------------------- */

#define ST_EMPTY 0
#define ST_MIXED 255 /* the unit was seen in two arms of the flag */

/* A flag's units by hash: the arm (plus one) each is in. */
struct umap {
  uint64_t *hash; /* owned */
  uint8_t *st;    /* owned: ST_EMPTY, arm + 1, or ST_MIXED */
  size_t cap;     /* power of two; 0: no map (nothing to compare) */
  size_t n;
};

static uint8_t *umap_slot(const struct umap *m, uint64_t h) {
  size_t i = (size_t)(h ^ (h >> 29)) & (m->cap - 1);
  while (m->st[i] != ST_EMPTY && m->hash[i] != h)
    i = (i + 1) & (m->cap - 1);
  return &m->st[i];
}

static int umap_build(struct umap *m, const struct mg_rp_flag_report *fr,
                      const struct work *w, uint64_t *switched) {
  const struct mg_rp_flag *f = fr->src;
  size_t u, first = w->flag_first[f->index], last = w->flag_first[f->index + 1];
  size_t cap = 16;

  *switched = 0;
  while (cap < 2 * (last - first))
    cap *= 2;
  m->hash = malloc(cap * sizeof(*m->hash));
  m->st = calloc(cap, 1);
  if (!m->hash || !m->st)
    return -ENOMEM;
  m->cap = cap;
  for (u = first; u < last; u++) {
    const struct mg_rp_unit *x = &w->log->units[w->by_flag[u]];
    uint8_t st = (uint8_t)(x->arm + 1);
    uint8_t *s = umap_slot(m, x->hash);
    if (*s == ST_EMPTY) {
      m->hash[s - m->st] = x->hash;
      *s = st;
      m->n++;
    } else if (*s != ST_MIXED && *s != st) {
      /* The same unit in two arms of one flag: weights moved it, or two
       * unit ids collided. It belongs to no arm in the test. */
      *s = ST_MIXED;
      (*switched)++;
    }
  }
  return 0;
}

static void umap_free(struct umap *m) {
  free(m->hash);
  free(m->st);
}

/* The 2 x 2 test of one treatment pair (docs/report.md, "co-assignment"):
 * Pearson's chi-square when every expected count is at least 5, else
 * Fisher's exact test; the odds ratio as the effect size, because unlike
 * phi or observed/expected it does not depend on the treatments' shares:
 * a perfect overlap has an infinite odds ratio at 50/50 and at 10/90. */
static void copair_test(struct mg_rp_copair *t) {
  double a = (double)t->both, b = (double)t->a_only, c = (double)t->b_only;
  double d = (double)t->neither, n = a + b + c + d, e[4], k, se, lor;
  double r1 = a + b, r2 = c + d, c1 = a + c, c2 = b + d;
  int i;

  t->expected = t->odds_ratio = t->or_lo = t->or_hi = t->phi = NAN;
  t->chi2 = t->p = NAN;
  t->test = NULL;
  if (!(r1 > 0) || !(r2 > 0) || !(c1 > 0) || !(c2 > 0)) {
    t->note = "a treatment or its complement holds none of the shared units";
    return;
  }
  e[0] = r1 * c1 / n;
  e[1] = r1 * c2 / n;
  e[2] = r2 * c1 / n;
  e[3] = r2 * c2 / n;
  t->expected = e[0];
  /* Haldane-Anscombe: half a unit in every cell when one is empty, so a
   * perfect overlap has a large finite odds ratio and an interval. */
  k = a == 0 || b == 0 || c == 0 || d == 0 ? 0.5 : 0.0;
  lor = log(a + k) + log(d + k) - log(b + k) - log(c + k);
  se = sqrt(1 / (a + k) + 1 / (b + k) + 1 / (c + k) + 1 / (d + k));
  t->odds_ratio = exp(lor);
  t->or_lo = exp(lor - MG_STATS_Z95 * se);
  t->or_hi = exp(lor + MG_STATS_Z95 * se);
  t->phi = (a * d - b * c) / sqrt(r1 * r2 * c1 * c2);
  for (i = 0; i < 4 && e[i] >= MG_RP_MIN_EXPECTED; i++)
    ;
  if (i == 4) {
    t->test = "chi-square";
    t->chi2 = n * t->phi * t->phi; /* Pearson's X^2 of a 2 x 2 table */
    t->p = mg_stats_chi2_sf(t->chi2, 1);
  } else {
    t->test = "fisher";
    t->p = mg_stats_fisher2x2(a, b, c, d);
  }
  t->alarm = t->p < MG_RP_ALPHA_COASSIGN &&
             (t->odds_ratio >= MG_RP_COASSIGN_OR ||
              t->odds_ratio <= 1.0 / MG_RP_COASSIGN_OR);
}

static int pair_test(struct mg_rp_pair *p, const struct mg_rp_flag_report *fa,
                     const struct mg_rp_flag_report *fb, const struct umap *ma,
                     const struct umap *mb, bool swapped) {
  /* table[i][j]: shared units in arm i of the walked flag and arm j of the
   * probed one. */
  uint64_t table[MG_RP_MAX_ARMS][MG_RP_MAX_ARMS], rs[MG_RP_MAX_ARMS];
  uint64_t cs[MG_RP_MAX_ARMS];
  const struct mg_rp_flag_report *fw = swapped ? fb : fa;
  const struct mg_rp_flag_report *fp = swapped ? fa : fb;
  uint32_t i, j, ta, tb;
  size_t s;

  memset(table, 0, sizeof(table));
  for (s = 0; s < ma->cap; s++) {
    uint8_t sa = ma->st[s], sb;
    if (sa == ST_EMPTY || sa == ST_MIXED)
      continue;
    sb = *umap_slot(mb, ma->hash[s]);
    if (sb == ST_EMPTY || sb == ST_MIXED)
      continue;
    table[sa - 1][sb - 1]++;
  }
  memset(rs, 0, sizeof(rs));
  memset(cs, 0, sizeof(cs));
  for (i = 0; i < fw->narms; i++)
    for (j = 0; j < fp->narms; j++) {
      uint64_t x = table[i][j];
      bool ti = i != fw->control, tj = j != fp->control;
      rs[i] += x;
      cs[j] += x;
      p->common += x;
      /* a/b as flags a and b of the pair, whichever was walked. */
      if (ti && tj)
        p->both += x;
      else if (ti)
        *(swapped ? &p->b_only : &p->a_only) += x;
      else if (tj)
        *(swapped ? &p->a_only : &p->b_only) += x;
      else
        p->neither += x;
    }
  p->expected = p->ratio = p->chi2 = p->p = NAN;
  if (p->common == 0)
    return 0;
  {
    double pa = (double)(p->both + p->a_only) / (double)p->common;
    double pb = (double)(p->both + p->b_only) / (double)p->common;
    p->expected = (double)p->common * pa * pb;
    p->ratio = p->expected > 0 ? (double)p->both / p->expected : NAN;
  }
  /* Every treatment of a against every treatment of b. */
  for (ta = 0; ta < fa->narms; ta++)
    for (tb = 0; tb < fb->narms; tb++) {
      struct mg_rp_copair *t;
      uint32_t wi = swapped ? tb : ta, pj = swapped ? ta : tb;
      uint64_t x;
      if (ta == fa->control || tb == fb->control ||
          fa->v[ta].requests == 0 || fb->v[tb].requests == 0)
        continue;
      t = realloc(p->t, (p->nt + 1) * sizeof(*t));
      if (t == NULL)
        return -ENOMEM;
      p->t = t;
      t += p->nt++;
      memset(t, 0, sizeof(*t));
      t->arm_a = ta;
      t->arm_b = tb;
      x = table[wi][pj];
      t->both = x;
      t->a_only = (swapped ? cs[pj] : rs[wi]) - x;
      t->b_only = (swapped ? rs[wi] : cs[pj]) - x;
      t->neither = p->common - t->both - t->a_only - t->b_only;
      copair_test(t);
      if (t->test && (!p->tested || t->p < p->p)) {
        p->p = t->p;
        p->chi2 = t->chi2;
      }
      p->tested |= t->test != NULL;
      p->alarm |= t->alarm;
    }
  return 0;
}

static int cross_flags(struct mg_rp_report *r, struct work *w) {
  struct umap *maps;
  size_t a, b;
  int rc = 0;

  maps = calloc(r->nflags ? r->nflags : 1, sizeof(*maps));
  if (maps == NULL)
    return -ENOMEM;
  for (a = 0; a < r->nflags; a++) {
    struct mg_rp_flag_report *fr = &r->flags[a];
    if (fr->control == MG_RP_NONE || fr->records == 0)
      continue;
    rc = umap_build(&maps[a], fr, w, &fr->switched_units);
    if (rc)
      goto out;
  }
  for (a = 0; a < r->nflags; a++)
    for (b = a + 1; b < r->nflags; b++) {
      struct mg_rp_pair *p;
      if (maps[a].cap == 0 || maps[b].cap == 0 ||
          !(r->flags[a].shown || r->flags[b].shown))
        continue;
      /* Sections of one flag split by endpoint share its salt: their
       * units are the same by design, not by accident. */
      if (r->flags[a].src->base_len == r->flags[b].src->base_len &&
          memcmp(r->flags[a].src->name, r->flags[b].src->name,
                 r->flags[a].src->base_len) == 0)
        continue;
      p = realloc(r->pairs, (r->npairs + 1) * sizeof(*p));
      if (p == NULL) {
        rc = -ENOMEM;
        goto out;
      }
      r->pairs = p;
      p += r->npairs++;
      memset(p, 0, sizeof(*p));
      p->a = (uint32_t)a;
      p->b = (uint32_t)b;
      /* Walk the smaller map, probe the larger. */
      if (maps[a].n <= maps[b].n)
        rc = pair_test(p, &r->flags[a], &r->flags[b], &maps[a], &maps[b],
                       false);
      else
        rc = pair_test(p, &r->flags[a], &r->flags[b], &maps[b], &maps[a],
                       true);
      if (rc)
        goto out;
    }
out:
  for (a = 0; a < r->nflags; a++)
    umap_free(&maps[a]);
  free(maps);
  return rc;
}

/* ---- alarms ------------------------------------------------------------- */

/* A text that grows with snprintf, bounded. */
struct line {
  char s[2048];
  size_t n;
};

static void line_add(struct line *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void line_add(struct line *l, const char *fmt, ...) {
  va_list ap;
  int k;
  if (l->n >= sizeof(l->s) - 1)
    return;
  va_start(ap, fmt);
  k = vsnprintf(l->s + l->n, sizeof(l->s) - l->n, fmt, ap);
  va_end(ap);
  if (k > 0)
    l->n += (size_t)k < sizeof(l->s) - l->n ? (size_t)k : sizeof(l->s) - 1 - l->n;
}

/* Give the last alarm the labels of these cells. */
static int alarm_cells(struct mg_rp_report *r, const char *const *labels,
                       size_t n) {
  struct mg_rp_alarm *a = &r->alarms[r->nalarms - 1];
  size_t i;
  a->cells = calloc(n ? n : 1, sizeof(char *));
  if (a->cells == NULL)
    return -ENOMEM;
  for (i = 0; i < n; i++) {
    a->cells[i] = strdup(labels[i]);
    if (a->cells[i] == NULL)
      return -ENOMEM;
    a->ncells++;
  }
  return 0;
}

static int alarms(struct mg_rp_report *r) {
  char b1[64], b2[64], b3[64], b4[64], b5[64], ps[32], pa[32];
  size_t i, j, k;
  uint32_t a;
  int rc = 0, m;

  for (i = 0; i < r->nflags && !rc; i++) {
    const struct mg_rp_flag_report *fr = &r->flags[i];
    struct line l = {{0}, 0};
    if (!fr->shown || !fr->srm_alarm)
      continue;
    for (a = 0; a < fr->narms; a++)
      if (fr->v[a].srm_units > 0 || fr->v[a].srm_expected > 0)
        line_add(&l, "%s%s %s (expected %.2f%%)", l.n ? ", " : "",
                 fr->v[a].name,
                 mg_rp_fmt_count(b1, sizeof(b1), fr->v[a].srm_units),
                 fr->v[a].srm_expected * 100);
    rc = alarm_add(r, "srm", fr->src->name, NULL, fr->srm_p,
                   "%s: sample ratio mismatch: units %s against the logged "
                   "weights; chi-square %.1f, df %.0f, p = %s",
                   fr->src->name, l.s, fr->srm_chi2, fr->srm_df,
                   mg_rp_fmt_p(ps, sizeof(ps), fr->srm_p));
  }
  for (i = 0; i < r->nflags && !rc; i++) {
    const struct mg_rp_flag_report *fr = &r->flags[i];
    struct line l = {{0}, 0};
    if (!fr->shown || !fr->bal_alarm)
      continue;
    for (a = 0; a < fr->narms; a++)
      if (fr->v[a].units > 0)
        line_add(&l, "%s%.1f%% of %s's units", l.n ? ", " : "",
                 100.0 * (double)fr->v[a].heavy / (double)fr->v[a].units,
                 fr->v[a].name);
    rc = alarm_add(r, "balance", fr->src->name, NULL, fr->bal_p,
                   "%s: heavy users cluster in one arm: the top 5%% of units "
                   "by requests (>= %" PRIu64 " requests) are %s; chi-square "
                   "%.1f, df %.0f, p = %s",
                   fr->src->name, fr->heavy_min_requests, l.s, fr->bal_chi2,
                   fr->bal_df, mg_rp_fmt_p(ps, sizeof(ps), fr->bal_p));
  }
  for (i = 0; i < r->npairs && !rc; i++) {
    const struct mg_rp_pair *p = &r->pairs[i];
    const struct mg_rp_flag_report *fa = &r->flags[p->a], *fb = &r->flags[p->b];
    struct line l = {{0}, 0};
    if (!p->alarm)
      continue;
    for (k = 0; k < p->nt; k++) {
      const struct mg_rp_copair *t = &p->t[k];
      if (!t->alarm)
        continue;
      line_add(&l,
               "%s%s.%s x %s.%s: %s in both of %s shared units (%.1f "
               "expected), odds ratio %.3g [%.3g, %.3g], %s p = %s",
               l.n ? "; " : "", fa->src->name, fa->v[t->arm_a].name,
               fb->src->name, fb->v[t->arm_b].name,
               mg_rp_fmt_count(b1, sizeof(b1), t->both),
               mg_rp_fmt_count(b2, sizeof(b2), p->common), t->expected,
               t->odds_ratio, t->or_lo, t->or_hi, t->test,
               mg_rp_fmt_p(ps, sizeof(ps), t->p));
    }
    rc = alarm_add(r, "coassignment", fa->src->name, NULL, p->p,
                   "%s x %s: treatments are not independent: %s",
                   fa->src->name, fb->src->name, l.s);
    if (!rc)
      r->alarms[r->nalarms - 1].other_flag = fb->src->name;
  }
  /* A feedback channel that reaches one arm more than the other biases
   * every feedback metric. */
  for (i = 0; i < r->nflags && !rc; i++) {
    const struct mg_rp_flag_report *fr = &r->flags[i];
    if (!fr->shown || fr->fb_lines == 0)
      continue;
    for (a = 0; a < fr->narms && !rc; a++) {
      const struct mg_rp_variant *v = &fr->v[a], *c;
      const struct mg_stats_diff *d = &v->cmp[MG_RP_M_COVERAGE];
      if (!v->has_cmp || isnan(d->p) || !(d->p < MG_RP_ALPHA_COVERAGE))
        continue;
      c = &fr->v[fr->control];
      rc = alarm_add(r, "feedback_coverage", fr->src->name, v->name, d->p,
                     "%s: feedback reaches %s and %s unequally: %s vs %s of "
                     "decisions have feedback (%s, 95%% CI %s to %s), p = %s: "
                     "every feedback metric of this flag may be biased",
                     fr->src->name, v->name, c->name,
                     mg_rp_fmt_value(b1, sizeof(b1), MG_RP_M_COVERAGE,
                                     v->value[MG_RP_M_COVERAGE]),
                     mg_rp_fmt_value(b2, sizeof(b2), MG_RP_M_COVERAGE,
                                     c->value[MG_RP_M_COVERAGE]),
                     mg_rp_fmt_diff(b3, sizeof(b3), MG_RP_M_COVERAGE, d->diff),
                     mg_rp_fmt_diff(b4, sizeof(b4), MG_RP_M_COVERAGE, d->lo),
                     mg_rp_fmt_diff(b5, sizeof(b5), MG_RP_M_COVERAGE, d->hi),
                     mg_rp_fmt_p(ps, sizeof(ps), d->p));
      if (!rc)
        r->alarms[r->nalarms - 1].metric = "feedback_coverage";
    }
  }
  /* The input axis: one alarm per flag, treatment and metric, naming every
   * cell where that treatment is worse. */
  for (i = 0; i < r->nflags && !rc; i++) {
    const struct mg_rp_flag_report *fr = &r->flags[i];
    if (!fr->shown)
      continue;
    for (a = 0; a < fr->narms && !rc; a++)
      for (m = 0; m < MG_RP_CELL_METRICS && !rc; m++) {
        const char *labels[MG_RP_CELLS];
        struct line l = {{0}, 0};
        double pmin = INFINITY;
        size_t nl = 0;
        for (j = 0; j < fr->ncells; j++) {
          const struct mg_rp_cell_arm *ca = &fr->cells[j].arms[a], *ctl;
          if (!ca->has_cmp || !ca->flagged[m])
            continue;
          ctl = &fr->cells[j].arms[fr->control];
          labels[nl++] = fr->cells[j].label;
          if (ca->p_adj[m] < pmin)
            pmin = ca->p_adj[m];
          line_add(&l, "%s%s: %s vs %s (%s, 95%% CI %s to %s), p = %s, "
                       "adjusted %s",
                   l.n ? "; " : "", fr->cells[j].label,
                   mg_rp_fmt_value(b1, sizeof(b1), m, ca->value[m]),
                   mg_rp_fmt_value(b2, sizeof(b2), m, ctl->value[m]),
                   mg_rp_fmt_diff(b3, sizeof(b3), m, ca->cmp[m].diff),
                   mg_rp_fmt_diff(b4, sizeof(b4), m, ca->cmp[m].lo),
                   mg_rp_fmt_diff(b5, sizeof(b5), m, ca->cmp[m].hi),
                   mg_rp_fmt_p(ps, sizeof(ps), ca->cmp[m].p),
                   mg_rp_fmt_p(pa, sizeof(pa), ca->p_adj[m]));
        }
        if (nl == 0)
          continue;
        rc = alarm_add(r, "input_axis", fr->src->name, fr->v[a].name, pmin,
                       "%s: %s is worse than %s on %s in %zu input cell%s "
                       "(Bonferroni over %u comparisons): %s",
                       fr->src->name, fr->v[a].name, fr->v[fr->control].name,
                       mg_rp_metrics[m].label, nl, nl == 1 ? "" : "s",
                       fr->cell_tests, l.s);
        if (!rc) {
          r->alarms[r->nalarms - 1].metric = mg_rp_metrics[m].key;
          rc = alarm_cells(r, labels, nl);
        }
      }
  }
  return rc;
}

/* ---- feedback metrics ------------------------------------------------------ */

/* Each feedback metric's mean per variant, by the delta method over the
 * units of the decisions it was given for (x: a unit's summed values, y:
 * its feedback lines), each treatment against the control. */
static int feedback_metrics(struct mg_rp_report *r,
                            const struct mg_rp_options *opt) {
  const struct mg_rp_log *log = r->log;
  size_t nm = log->nfb_metrics, nf = r->nflags, nk = nf * nm, i, k;
  size_t *first = NULL, *next = NULL, *order = NULL, ntouched;
  double *sx = NULL, *sy = NULL;
  uint32_t *touched = NULL, a;
  int rc = -ENOMEM;

  if (nm == 0)
    return 0;
  for (i = 0; i < nf; i++) {
    struct mg_rp_flag_report *fr = &r->flags[i];
    fr->fbm = calloc(nm, sizeof(*fr->fbm));
    if (fr->fbm == NULL)
      return -ENOMEM;
    fr->nfbm = (uint32_t)nm;
    for (k = 0; k < nm; k++) {
      struct mg_rp_fb_metric_report *m = &fr->fbm[k];
      const struct mg_feedback_metric *decl =
          opt->feedback ? mg_feedback_metric(opt->feedback,
                                             log->fb_metrics[k].name)
                        : NULL;
      m->name = log->fb_metrics[k].name;
      m->declared = decl != NULL;
      m->boolean = decl ? decl->type == MG_FEEDBACK_BOOLEAN
                        : !log->fb_metrics[k].non_boolean;
      m->higher_is_better = decl ? decl->higher_is_better : true;
      m->arms = calloc(fr->narms ? fr->narms : 1, sizeof(*m->arms));
      if (m->arms == NULL)
        return -ENOMEM;
      for (a = 0; a < fr->narms; a++) {
        mg_stats_ratio_init(&m->arms[a].acc);
        m->arms[a].value = m->arms[a].se = NAN;
      }
    }
  }
  first = calloc(nk + 1, sizeof(*first));
  next = malloc((nk ? nk : 1) * sizeof(*next));
  order = malloc((log->nfbj ? log->nfbj : 1) * sizeof(*order));
  sx = calloc(log->nunits ? log->nunits : 1, sizeof(*sx));
  sy = calloc(log->nunits ? log->nunits : 1, sizeof(*sy));
  touched = malloc((log->nunits ? log->nunits : 1) * sizeof(*touched));
  if (!first || !next || !order || !sx || !sy || !touched)
    goto out;
  /* Group the joined values by flag and metric (a counting sort). */
  for (i = 0; i < log->nfbj; i++)
    first[log->fbj[i].flag * nm + log->fbj[i].metric + 1]++;
  for (k = 0; k < nk; k++) {
    first[k + 1] += first[k];
    next[k] = first[k];
  }
  for (i = 0; i < log->nfbj; i++)
    order[next[log->fbj[i].flag * nm + log->fbj[i].metric]++] = i;
  for (k = 0; k < nk; k++) {
    struct mg_rp_flag_report *fr = &r->flags[k / nm];
    struct mg_rp_fb_metric_report *m = &fr->fbm[k % nm];
    ntouched = 0;
    for (i = first[k]; i < first[k + 1]; i++) {
      const struct mg_rp_fbj *e = &log->fbj[order[i]];
      m->arms[e->arm].lines++;
      fr->fb_lines++;
      if (e->unit == MG_RP_NONE) {
        mg_stats_ratio_add(&m->arms[e->arm].acc, e->value, 1);
        continue;
      }
      if (sy[e->unit] == 0)
        touched[ntouched++] = e->unit;
      sx[e->unit] += e->value;
      sy[e->unit] += 1;
    }
    for (i = 0; i < ntouched; i++) {
      uint32_t u = touched[i];
      mg_stats_ratio_add(&m->arms[log->units[u].arm].acc, sx[u], sy[u]);
      sx[u] = sy[u] = 0;
    }
    for (a = 0; a < fr->narms; a++) {
      struct mg_rp_fb_arm *fa = &m->arms[a];
      fa->units = (uint64_t)fa->acc.n;
      fa->value = mg_stats_ratio_value(&fa->acc);
      fa->se = sqrt(mg_stats_ratio_var(&fa->acc));
    }
    if (fr->control == MG_RP_NONE)
      continue;
    for (a = 0; a < fr->narms; a++) {
      if (a == fr->control || m->arms[a].lines == 0)
        continue;
      m->arms[a].has_cmp = true;
      mg_stats_ratio_compare(&m->arms[a].acc, &m->arms[fr->control].acc,
                             m->boolean, &m->arms[a].cmp);
    }
  }
  rc = 0;
out:
  free(first);
  free(next);
  free(order);
  free(sx);
  free(sy);
  free(touched);
  return rc;
}

/* ---- decide ------------------------------------------------------------- */

/* A comparison as the decide rule sees it: intervals at 1 - alpha, the
 * difference by Welch's t and the ratio by the delta method on logs,
 * Var(log t - log c) = Var_t / t^2 + Var_c / c^2. */
static struct mg_decide_est est_of(const struct mg_stats_diff *d, double t,
                                   double c, double var_t, double var_c,
                                   double alpha) {
  struct mg_decide_est e;
  double q;
  memset(&e, 0, sizeof(e));
  e.treatment = t;
  e.control = c;
  e.diff = d->diff;
  e.diff_lo = e.diff_hi = e.ratio = e.ratio_lo = e.ratio_hi = NAN;
  if (d->undefined || isnan(d->p))
    return e;
  e.known = true;
  q = mg_stats_t_quantile2(alpha, d->df);
  e.diff_lo = d->diff - q * d->se;
  e.diff_hi = d->diff + q * d->se;
  if (t > 0 && c > 0) {
    double sl = sqrt(var_t / (t * t) + var_c / (c * c));
    e.ratio = t / c;
    e.ratio_lo = exp(log(e.ratio) - q * sl);
    e.ratio_hi = exp(log(e.ratio) + q * sl);
  }
  return e;
}

static void decide_flag(struct mg_rp_flag_report *fr) {
  static const int guard_metric[MG_DECIDE_NGUARDS] = {
      [MG_DECIDE_ERROR_RATE] = MG_RP_M_ERROR,
      [MG_DECIDE_FALLBACK_RATE] = MG_RP_M_FALLBACK,
      [MG_DECIDE_LOW_CONFIDENCE_RATE] = MG_RP_M_LOWCONF,
      [MG_DECIDE_COST_PER_REQUEST] = MG_RP_M_COST,
      [MG_DECIDE_COST_PER_SUCCESS] = MG_RP_M_COST_OK,
      [MG_DECIDE_MEAN_LATENCY_MS] = MG_RP_M_LATENCY,
      [MG_DECIDE_P95_MS] = -1,
  };
  const struct mg_decide *d = fr->decide;
  const struct mg_rp_fb_metric_report *m = NULL;
  uint32_t a, k;

  if (d == NULL || fr->control == MG_RP_NONE)
    return;
  for (k = 0; k < fr->nfbm; k++)
    if (strcmp(fr->fbm[k].name, d->metric) == 0)
      m = &fr->fbm[k];
  for (a = 0; a < fr->narms; a++) {
    struct mg_rp_variant *v = &fr->v[a], *c = &fr->v[fr->control];
    struct mg_decide_input in;
    int g;
    if (!v->has_cmp)
      continue;
    memset(&in, 0, sizeof(in));
    in.higher_is_better = m ? m->higher_is_better : true;
    in.var_unit_t = in.var_unit_c = NAN;
    if (m && m->arms[a].has_cmp) {
      const struct mg_rp_fb_arm *ft = &m->arms[a], *fc = &m->arms[fr->control];
      in.metric = est_of(&ft->cmp, ft->value, fc->value, ft->se * ft->se,
                         fc->se * fc->se, d->alpha);
      in.units_t = (double)ft->units;
      in.units_c = (double)fc->units;
      in.var_unit_t = ft->se * ft->se * (double)ft->units;
      in.var_unit_c = fc->se * fc->se * (double)fc->units;
    }
    for (g = 0; g < MG_DECIDE_NGUARDS; g++) {
      int mi = guard_metric[g];
      struct mg_decide_est *e = &in.guard[g];
      if (mi >= 0) {
        *e = est_of(&v->cmp[mi], v->value[mi], c->value[mi],
                    v->se[mi] * v->se[mi], c->se[mi] * c->se[mi], d->alpha);
        continue;
      }
      /* p95: the arms' intervals (each at 1 - alpha/2) combined. */
      memset(e, 0, sizeof(*e));
      e->treatment = v->p95;
      e->control = c->p95;
      e->diff = v->p95 - c->p95;
      e->ratio = c->p95 > 0 ? v->p95 / c->p95 : NAN;
      e->diff_lo = v->p95_lo - c->p95_hi;
      e->diff_hi = v->p95_hi - c->p95_lo;
      e->ratio_lo = c->p95_hi > 0 ? v->p95_lo / c->p95_hi : NAN;
      e->ratio_hi = c->p95_lo > 0 ? v->p95_hi / c->p95_lo : NAN;
      e->known = isfinite(e->diff_lo) && isfinite(e->diff_hi) &&
                 isfinite(e->ratio_lo) && isfinite(e->ratio_hi);
    }
    mg_decide_judge(d, &in, &v->verdict);
    v->has_verdict = true;
  }
}

/* ---- entry -------------------------------------------------------------- */

int mg_rp_analyze(const struct mg_rp_log *log, const struct mg_rp_options *opt,
                  struct mg_rp_report *out) {
  struct work w;
  struct sums s;
  size_t i, j;
  int rc;

  memset(out, 0, sizeof(*out));
  out->log = log;
  memset(&w, 0, sizeof(w));
  if (opt->flag) {
    const struct mg_rp_flag *f = mg_rp_log_flag(log, opt->flag);
    if (f == NULL || f->records == 0)
      return -ENOENT;
  }
  rc = work_init(&w, log);
  if (rc)
    goto out;
  if (!log->joined) {
    /* The join marks rows and units: the log is the caller's, and
     * mg_rp_log_join is idempotent, so it is done there or here. */
    rc = mg_rp_log_join((struct mg_rp_log *)log);
    if (rc)
      goto out;
  }
  out->flags = calloc(log->nflags ? log->nflags : 1, sizeof(*out->flags));
  if (out->flags == NULL) {
    rc = -ENOMEM;
    goto out;
  }
  out->nflags = log->nflags;
  for (i = 0; i < log->nflags; i++) {
    const struct mg_rp_flag *f = log->flags[i];
    bool shown = f->records > 0 &&
                 (opt->flag == NULL || strcmp(opt->flag, f->name) == 0);
    rc = flag_init(&out->flags[i], f, shown, opt);
    if (rc)
      goto out;
    choose_control(&out->flags[i], opt);
  }

  /* One pass over the unit aggregates feeds every arm of every flag; the
   * request units come from the rows. */
  for (i = 0; i < log->nunits; i++) {
    const struct mg_rp_unit *u = &log->units[i];
    struct mg_rp_flag_report *fr = &out->flags[u->flag];
    sums_of_unit(u, &s);
    variant_add(&fr->v[u->arm], &s);
    if (fr->modal_wset >= 0 && fr->modal_wset < 32 &&
        (u->wsets >> fr->modal_wset) & 1)
      fr->v[u->arm].srm_units++;
  }
  for (i = 0; i < log->nflags; i++) {
    struct mg_rp_flag_report *fr = &out->flags[i];
    const struct mg_rp_flag *f = log->flags[i];
    for (j = 0; j < f->nrows; j++) {
      const struct mg_rp_row *r = &f->rows[j];
      if (r->unit != MG_RP_NONE)
        continue;
      sums_of_row(r, &s);
      variant_add(&fr->v[r->arm], &s);
      if (fr->modal_wset >= 0 && r->wset == (uint8_t)fr->modal_wset)
        fr->v[r->arm].srm_units++;
    }
    finish_metrics(fr);
    latency(fr, &w);
    srm(fr);
    balance(fr, &w);
    rc = input_axis(fr, &w);
    if (rc)
      goto out;
  }
  rc = feedback_metrics(out, opt);
  if (rc)
    goto out;
  for (i = 0; i < log->nflags; i++) {
    struct mg_rp_flag_report *fr = &out->flags[i];
    uint32_t a;
    if (fr->fb_lines)
      for (a = 0; a < fr->narms; a++)
        fr->cov_tests += fr->v[a].has_cmp &&
                         !isnan(fr->v[a].cmp[MG_RP_M_COVERAGE].p);
    decide_flag(fr);
  }
  rc = cross_flags(out, &w);
  if (rc)
    goto out;
  rc = alarms(out);
out:
  work_free(&w);
  if (rc && rc != -ENOENT) {
    mg_rp_report_free(out);
    out->log = log;
  }
  return rc;
}

void mg_rp_report_free(struct mg_rp_report *r) {
  size_t i;
  uint32_t c;
  for (i = 0; i < r->nflags; i++) {
    for (c = 0; c < r->flags[i].ncells; c++)
      free(r->flags[i].cells[c].arms);
    for (c = 0; c < r->flags[i].nfbm; c++)
      free(r->flags[i].fbm[c].arms);
    free(r->flags[i].fbm);
    free(r->flags[i].v);
  }
  free(r->flags);
  for (i = 0; i < r->npairs; i++)
    free(r->pairs[i].t);
  free(r->pairs);
  for (i = 0; i < r->nalarms; i++) {
    for (c = 0; c < r->alarms[i].ncells; c++)
      free(r->alarms[i].cells[c]);
    free(r->alarms[i].cells);
    free(r->alarms[i].text);
  }
  free(r->alarms);
  memset(r, 0, sizeof(*r));
}
