/* render_text.c - the report as plain text: what was read, every alarm,
 * then one section per flag (metrics, comparisons, checks, input axis),
 * cross-flag co-assignment, and the method. */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "report/render.h"

static void wrap_text(struct mg_rp_w *w, int first_cols, int indent,
                      int width, const char *s);

static void para(struct mg_rp_w *w, const char *prefix, int indent,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static const char *clip(char *buf, size_t size, const char *s, int n);

/* The widest line the text report writes (but for tables of very long
 * variant names). */
#define WRAP 100

static int name_width(const struct mg_rp_flag_report *fr) {
  uint32_t a;
  int w = 9;
  for (a = 0; a < fr->narms; a++)
    if ((int)strlen(fr->v[a].name) > w)
      w = (int)strlen(fr->v[a].name);
  return w > 40 ? 40 : w;
}

static void header(struct mg_rp_w *w, const struct mg_rp_report *r) {
  const struct mg_rp_log *log = r->log;
  char a[32];
  size_t i;

  {
    struct mg_buf tmp;
    struct mg_rp_w tw;
    mg_buf_init(&tmp, 4096);
    tw.b = &tmp;
    tw.err = 0;
    mg_rp_w_inputs(&tw, log);
    para(w, "modelgate report: ", 2, "%s", tmp.data ? tmp.data : "");
    mg_buf_free(&tmp);
  }
  for (i = 0; i < log->nbad; i++)
    mg_rp_w_printf(w, "  malformed: %s:%" PRIu64 ": %s\n", log->bad[i].file,
                   log->bad[i].line, log->bad[i].why);
  if (log->malformed > log->nbad)
    mg_rp_w_printf(w, "  malformed: ... and %" PRIu64 " more\n",
                   log->malformed - log->nbad);
  if (log->unflagged)
    mg_rp_w_printf(w,
                   "records without a flag (not routed through one): %s\n",
                   mg_rp_fmt_count(a, sizeof(a), log->unflagged));
  {
    char t[1024];
    mg_rp_feedback_text(log, t, sizeof(t));
    if (t[0])
      para(w, "feedback: ", 2, "%s", t);
    mg_rp_names_text(&log->instances, t, sizeof(t));
    if (t[0])
      para(w, "instances (lines): ", 2, "%s", t);
  }
  if (log->nevents) {
    mg_rp_w_puts(w, "events:");
    for (i = 0; i < log->nevents; i++)
      mg_rp_w_printf(w, "%s %s%s%s%s x%" PRIu64, i ? "," : "",
                     log->events[i].name, log->events[i].flag[0] ? " (" : "",
                     log->events[i].flag, log->events[i].flag[0] ? ")" : "",
                     log->events[i].n);
    mg_rp_w_puts(w, "\n");
  }
}

static void alarms(struct mg_rp_w *w, const struct mg_rp_report *r) {
  size_t i;
  size_t shown = 0;
  for (i = 0; i < r->nflags; i++)
    shown += r->flags[i].shown;
  if (r->nalarms == 0) {
    mg_rp_w_puts(w, shown ? "\nALARMS: none (sample ratio, cohort balance, "
                            "cross-flag co-assignment and input axis)\n"
                          : "\nALARMS: none (no flagged records)\n");
    return;
  }
  mg_rp_w_printf(w, "\nALARMS (%zu)\n", r->nalarms);
  for (i = 0; i < r->nalarms; i++) {
    char head[64];
    snprintf(head, sizeof(head), "  ! [%s] ", r->alarms[i].check);
    mg_rp_w_puts(w, head);
    wrap_text(w, (int)strlen(head), 6, WRAP, r->alarms[i].text);
  }
}

static void weights(struct mg_rp_w *w, const struct mg_rp_flag_report *fr) {
  const struct mg_rp_flag *f = fr->src;
  char a[32];
  uint32_t i, k;

  if (f->nwsets == 0) {
    mg_rp_w_puts(w, "weights: none logged\n");
    return;
  }
  for (i = 0; i < f->nwsets; i++) {
    const struct mg_rp_wset *ws = &f->wsets[i];
    mg_rp_w_printf(w, "%s", i == 0 ? "weights: " : "         ");
    for (k = 0; k < ws->n; k++)
      mg_rp_w_printf(w, "%s%s %g%%", k ? ", " : "", f->arms[ws->arm[k]].name,
                     ws->bp[k] / 100.0);
    mg_rp_w_printf(w, " in %s rollout records",
                   mg_rp_fmt_count(a, sizeof(a), ws->records));
    if ((int)i == fr->modal_wset && f->nwsets > 1)
      mg_rp_w_puts(w, " (the most common: the sample ratio's)");
    if (ws->first_ts[0])
      mg_rp_w_printf(w, "\n           %s .. %s", ws->first_ts, ws->last_ts);
    mg_rp_w_puts(w, "\n");
  }
  if (f->wsets_untracked)
    mg_rp_w_printf(w, "         ... and %s records with later weight sets\n",
                   mg_rp_fmt_count(a, sizeof(a), f->wsets_untracked));
}

/* Records by reason, one line per variant. */
static void reasons_by_variant(struct mg_rp_w *w,
                               const struct mg_rp_flag_report *fr) {
  const struct mg_rp_flag *f = fr->src;
  char a[32];
  uint32_t arm;
  size_t i;

  mg_rp_w_puts(w, "records by reason:\n");
  for (arm = 0; arm < fr->narms; arm++) {
    int k = 0;
    mg_rp_w_printf(w, "  %-*s ", name_width(fr), fr->v[arm].name);
    for (i = 0; i < f->nreasons; i++)
      if (f->reasons[i].arm == arm)
        mg_rp_w_printf(w, "%s%s %s", k++ ? ", " : "", f->reasons[i].reason,
                       mg_rp_fmt_count(a, sizeof(a), f->reasons[i].n));
    mg_rp_w_puts(w, k ? "\n" : "(none)\n");
  }
}

static void metrics(struct mg_rp_w *w, const struct mg_rp_flag_report *fr) {
  int nw = name_width(fr) > 12 ? 12 : name_width(fr);
  char b[12][32], nm[32];
  uint32_t a;

  mg_rp_w_printf(w,
                 "\n  %-*s %8s %9s %7s %8s %8s %5s %7s %7s %7s %6s %6s\n",
                 nw, "variant", "units", "requests", "error", "fallback",
                 "low-conf", "conf", "p50 ms", "p95 ms", "p99 ms", "prompt",
                 "compl.");
  for (a = 0; a < fr->narms; a++) {
    const struct mg_rp_variant *v = &fr->v[a];
    mg_rp_w_printf(
        w, "  %-*s %8s %9s %7s %8s %8s %5s %7s %7s %7s %6s %6s\n", nw,
        clip(nm, sizeof(nm), v->name, nw), mg_rp_fmt_count(b[0], 32, v->units),
        mg_rp_fmt_count(b[1], 32, v->requests),
        mg_rp_fmt_value(b[2], 32, MG_RP_M_ERROR, v->value[MG_RP_M_ERROR]),
        mg_rp_fmt_value(b[3], 32, MG_RP_M_FALLBACK, v->value[MG_RP_M_FALLBACK]),
        mg_rp_fmt_value(b[4], 32, MG_RP_M_LOWCONF, v->value[MG_RP_M_LOWCONF]),
        mg_rp_fmt_value(b[5], 32, MG_RP_M_CONFIDENCE,
                        v->value[MG_RP_M_CONFIDENCE]),
        mg_rp_fmt_ms(b[8], 32, v->p50), mg_rp_fmt_ms(b[9], 32, v->p95),
        mg_rp_fmt_ms(b[10], 32, v->p99),
        mg_rp_fmt_value(b[6], 32, MG_RP_M_PROMPT, v->value[MG_RP_M_PROMPT]),
        mg_rp_fmt_value(b[7], 32, MG_RP_M_COMPLETION,
                        v->value[MG_RP_M_COMPLETION]));
  }
  para(w, "  (", 3,
       "error, fallback, low-conf: share of requests; conf: mean "
       "confidence; prompt, compl.: mean tokens per request with tokens)");
}

static void comparisons(struct mg_rp_w *w,
                        const struct mg_rp_flag_report *fr) {
  char b[6][32];
  uint32_t a;
  int m;

  if (fr->control == MG_RP_NONE)
    return;
  for (a = 0; a < fr->narms; a++) {
    const struct mg_rp_variant *v = &fr->v[a], *c = &fr->v[fr->control];
    if (!v->has_cmp)
      continue;
    mg_rp_w_printf(w,
                   "\n  %s vs %s (difference, 95%% CI, two-sided p; per-unit "
                   "delta method, Welch's t)\n",
                   v->name, c->name);
    for (m = 0; m < MG_RP_NMETRICS; m++) {
      const struct mg_stats_diff *d = &v->cmp[m];
      mg_rp_w_printf(w, "    %-25s %8s vs %-8s %10s", mg_rp_metrics[m].label,
                     mg_rp_fmt_value(b[0], 32, m, v->value[m]),
                     mg_rp_fmt_value(b[1], 32, m, c->value[m]),
                     mg_rp_fmt_diff(b[2], 32, m, d->diff));
      if (d->undefined)
        mg_rp_w_printf(w, "  no test: %s\n", d->undefined);
      else
        mg_rp_w_printf(w, " [%s, %s] p = %s%s\n",
                       mg_rp_fmt_diff(b[3], 32, m, d->lo),
                       mg_rp_fmt_diff(b[4], 32, m, d->hi),
                       mg_rp_fmt_p(b[5], 32, d->p),
                       !isnan(d->p) && d->p < 0.05 ? " *" : "");
    }
  }
}

/* Cost and each feedback metric, per variant, and against the control. */
static void feedback(struct mg_rp_w *w, const struct mg_rp_flag_report *fr) {
  char b[6][32];
  uint32_t a, k;
  bool any_cost = false;

  for (a = 0; a < fr->narms; a++)
    any_cost |= fr->v[a].acc[MG_RP_M_COST].my > 0;
  if (any_cost) {
    mg_rp_w_puts(w, "\n  cost (USD; per request with a cost, per successful "
                    "answer)\n");
    for (a = 0; a < fr->narms; a++) {
      const struct mg_rp_variant *v = &fr->v[a];
      if (v->requests == 0)
        continue;
      mg_rp_w_printf(w, "    %-12.12s total $%.4f, per request %s, per "
                        "success %s\n",
                     v->name, v->cost_total,
                     mg_rp_fmt_value(b[0], 32, MG_RP_M_COST,
                                     v->value[MG_RP_M_COST]),
                     mg_rp_fmt_value(b[1], 32, MG_RP_M_COST_OK,
                                     v->value[MG_RP_M_COST_OK]));
    }
  }
  if (fr->nfbm == 0 || fr->fb_lines == 0)
    return;
  mg_rp_w_puts(w, "\n  feedback (mean per feedback line, per-unit delta "
                  "method; coverage: decisions with feedback)\n");
  for (k = 0; k < fr->nfbm; k++) {
    const struct mg_rp_fb_metric_report *m = &fr->fbm[k];
    uint64_t lines = 0;
    for (a = 0; a < fr->narms; a++)
      lines += m->arms[a].lines;
    if (lines == 0)
      continue;
    mg_rp_w_printf(w, "    %s (%s%s, %s is better)\n", m->name,
                   m->boolean ? "boolean" : "float",
                   m->declared ? "" : ", not declared in a -c config",
                   m->higher_is_better ? "higher" : "lower");
    for (a = 0; a < fr->narms; a++) {
      const struct mg_rp_fb_arm *fa = &m->arms[a];
      const struct mg_stats_diff *d = &fa->cmp;
      if (fr->v[a].requests == 0)
        continue;
      snprintf(b[0], 32, m->boolean ? "%.2f%%" : "%.4g",
               m->boolean ? 100 * fa->value : fa->value);
      if (isnan(fa->value))
        snprintf(b[0], 32, "n/a");
      mg_rp_w_printf(w, "      %-12.12s %9s over %s lines, %s units", 
                     fr->v[a].name, b[0],
                     mg_rp_fmt_count(b[1], 32, fa->lines),
                     mg_rp_fmt_count(b[2], 32, fa->units));
      if (!fa->has_cmp) {
        mg_rp_w_puts(w, a == fr->control ? " (control)\n" : "\n");
        continue;
      }
      if (m->boolean)
        snprintf(b[3], 32, "%+.2f pp", 100 * d->diff);
      else
        snprintf(b[3], 32, "%+.4g", d->diff);
      if (d->undefined) {
        mg_rp_w_printf(w, "; %s, no test: %s\n", b[3], d->undefined);
      } else {
        if (m->boolean)
          snprintf(b[4], 32, "[%+.2f, %+.2f] pp", 100 * d->lo, 100 * d->hi);
        else
          snprintf(b[4], 32, "[%+.4g, %+.4g]", d->lo, d->hi);
        mg_rp_w_printf(w, "\n        %s %s p = %s\n", b[3], b[4],
                       mg_rp_fmt_p(b[5], 32, d->p));
      }
    }
  }
  for (a = 0; a < fr->narms; a++)
    if (fr->v[a].requests)
      mg_rp_w_printf(w, "    coverage %-12.12s %s\n", fr->v[a].name,
                     mg_rp_fmt_value(b[0], 32, MG_RP_M_COVERAGE,
                                     fr->v[a].value[MG_RP_M_COVERAGE]));
}

/* The decide rule's verdict on each treatment. */
static void verdicts(struct mg_rp_w *w, const struct mg_rp_flag_report *fr) {
  uint32_t a;
  if (fr->decide == NULL)
    return;
  mg_rp_w_printf(w, "\n  decide (%s, min lift %+g, alpha %g, power %g)\n",
                 fr->decide->metric, fr->decide->min_lift, fr->decide->alpha,
                 fr->decide->power);
  for (a = 0; a < fr->narms; a++) {
    const struct mg_rp_variant *v = &fr->v[a];
    char head[96];
    if (!v->has_verdict)
      continue;
    snprintf(head, sizeof(head), "    %s: %s. ", v->name, v->verdict.label);
    para(w, head, 6, "%s", v->verdict.evidence);
  }
}

static void checks(struct mg_rp_w *w, const struct mg_rp_flag_report *fr) {
  int nw = name_width(fr);
  char b[8][32];
  uint32_t a;
  int k;

  mg_rp_w_puts(w, "\n  checks\n");
  /* Sample ratio. */
  if (!fr->srm_tested) {
    para(w, "    sample ratio    ", 20, "not tested: %s", fr->srm_note);
  } else {
    char list[1024];
    size_t o = 0;
    uint64_t tot = 0;
    uint32_t i;
    list[0] = '\0';
    for (i = 0; i < fr->narms; i++)
      tot += fr->v[i].srm_units;
    for (a = 0; a < fr->narms && o < sizeof(list) - 128; a++) {
      if (fr->v[a].srm_units == 0 && fr->v[a].srm_expected == 0)
        continue;
      o += (size_t)snprintf(
          list + o, sizeof(list) - o, "%s%s %s (%.2f%% seen, %.2f%% expected)",
          o ? ", " : "", fr->v[a].name,
          mg_rp_fmt_count(b[0], 32, fr->v[a].srm_units),
          tot ? 100.0 * (double)fr->v[a].srm_units / (double)tot : 0,
          fr->v[a].srm_expected * 100);
    }
    para(w, "    sample ratio    ", 20,
         "%s units %s; chi-square %.2f, df %.0f, p = %s",
         fr->srm_alarm ? "ALARM" : "ok", list, fr->srm_chi2, fr->srm_df,
         mg_rp_fmt_p(b[1], 32, fr->srm_p));
  }
  /* Cohort balance. */
  if (!fr->bal_tested) {
    para(w, "    cohort balance  ", 20, "not tested: %s", fr->bal_note);
  } else {
    para(w, "    cohort balance  ", 20,
         "%s heavy users = top 5%% of %s units by requests (>= %" PRIu64
         " requests); chi-square %.2f, df %.0f, p = %s",
         fr->bal_alarm ? "ALARM" : "ok",
         mg_rp_fmt_count(b[0], 32, fr->bal_units), fr->heavy_min_requests,
         fr->bal_chi2, fr->bal_df, mg_rp_fmt_p(b[1], 32, fr->bal_p));
  }
  k = 0;
  if (nw > 12)
    nw = 12;
  mg_rp_w_printf(w,
                 "      %-*s %8s %7s  requests per unit: %6s %5s %5s %5s  "
                 "heavy share\n",
                 nw, "variant", "units", "heavy", "mean", "p50", "p90", "p99");
  for (a = 0; a < fr->narms; a++) {
    const struct mg_rp_variant *v = &fr->v[a];
    char nm[32];
    if (v->units == 0)
      continue;
    k++;
    mg_rp_w_printf(w,
                   "      %-*s %8s %6.1f%%                     %6.1f %5.0f "
                   "%5.0f %5.0f  %10.1f%%\n",
                   nw, clip(nm, sizeof(nm), v->name, nw),
                   mg_rp_fmt_count(b[0], 32, v->units),
                   100.0 * (double)v->heavy / (double)v->units, v->rpu_mean,
                   v->rpu_p50, v->rpu_p90, v->rpu_p99,
                   isnan(v->heavy_requests) ? 0 : 100 * v->heavy_requests);
  }
  if (k)
    mg_rp_w_puts(w, "      (heavy share: the heavy users' share of the "
                    "arm's requests)\n");
  if (fr->switched_units)
    mg_rp_w_printf(w,
                   "    units seen in more than one variant: %s (weights "
                   "moved them, or unit ids collide)\n",
                   mg_rp_fmt_count(b[0], 32, fr->switched_units));
}

/* Lines of at most WRAP columns: items joined with ", ", continued on
 * lines indented by cont spaces. */
struct wrap {
  struct mg_rp_w *w;
  int col, cont;
  bool first;
};

static void wrap_item(struct wrap *x, const char *item) {
  int n = (int)strlen(item);
  /* An item that would end past WRAP, with the comma that may follow it,
   * goes on a line of its own. */
  if (!x->first && x->col + 2 + n + 1 > WRAP) {
    mg_rp_w_printf(x->w, ",\n%*s", x->cont, "");
    x->col = x->cont;
  } else if (!x->first) {
    mg_rp_w_puts(x->w, ", ");
    x->col += 2;
  }
  mg_rp_w_puts(x->w, item);
  x->col += n;
  x->first = false;
}

/* A variant's name in at most n columns: "long-variant-n..". */
static const char *clip(char *buf, size_t size, const char *s, int n) {
  if ((int)strlen(s) <= n)
    return s;
  snprintf(buf, size, "%.*s..", n - 2, s);
  return buf;
}

/* The input axis in at most 100 columns: a heading per cell, one row per
 * variant, and each treatment's differences wrapped below it. */
static void input_axis(struct mg_rp_w *w, const struct mg_rp_flag_report *fr) {
  int nw = name_width(fr) > 12 ? 12 : name_width(fr);
  char b[3][32], item[128], nm[32], col[MG_RP_CELL_COLS][32];
  uint32_t c, a;
  int m;

  if (fr->ncells == 0)
    return;
  mg_rp_w_printf(w,
                 "\n  input axis (input.chars quartiles %.0f / %.0f / %.0f of "
                 "the flag's rollout\n  records; tools 0, 1-2, 3+; WORSE: "
                 "Bonferroni-adjusted p < 0.01 over %u comparisons)\n",
                 fr->chars_edges[0], fr->chars_edges[1], fr->chars_edges[2],
                 fr->cell_tests);
  for (c = 0; c < fr->ncells; c++) {
    const struct mg_rp_cell *cell = &fr->cells[c];
    mg_rp_w_printf(w, "    %s\n", cell->label);
    mg_rp_w_printf(w,
                   "      %-*s %8s %9s %7s %8s %8s %5s %7s %7s %6s %6s\n", nw,
                   "variant", "units", "requests", "error", "fallback",
                   "low-conf", "conf", "p50 ms", "p95 ms", "prompt", "compl.");
    for (a = 0; a < fr->narms; a++) {
      const struct mg_rp_cell_arm *ca = &cell->arms[a];
      if (ca->requests == 0 && fr->v[a].requests == 0)
        continue;
      mg_rp_cell_cols(ca, col);
      mg_rp_w_printf(
          w, "      %-*s %8s %9s %7s %8s %8s %5s %7s %7s %6s %6s\n", nw,
          clip(nm, sizeof(nm), fr->v[a].name, nw), col[0], col[1], col[2],
          col[3], col[4], col[5], col[6], col[7], col[8], col[9]);
    }
    for (a = 0; a < fr->narms; a++) {
      const struct mg_rp_cell_arm *ca = &cell->arms[a];
      struct wrap x;
      bool any = false;
      if (!ca->has_cmp)
        continue;
      for (m = 0; m < MG_RP_CELL_METRICS; m++)
        any |= ca->flagged[m];
      x.w = w;
      x.cont = 10;
      x.first = true;
      snprintf(item, sizeof(item), "      %s %s vs %s:", any ? "!" : " ",
               clip(nm, sizeof(nm), fr->v[a].name, nw),
               clip(b[2], sizeof(b[2]), fr->v[fr->control].name, nw));
      mg_rp_w_puts(w, item);
      x.col = (int)strlen(item) + 1;
      mg_rp_w_puts(w, " ");
      for (m = 0; m < MG_RP_CELL_METRICS; m++) {
        if (ca->cmp[m].undefined)
          snprintf(item, sizeof(item), "%s %s (no test: %s)",
                   mg_rp_metrics[m].abbr,
                   mg_rp_fmt_diff(b[0], 32, m, ca->cmp[m].diff),
                   ca->cmp[m].undefined);
        else
          snprintf(item, sizeof(item), "%s %s (p %s)%s",
                   mg_rp_metrics[m].abbr,
                   mg_rp_fmt_diff(b[0], 32, m, ca->cmp[m].diff),
                   mg_rp_fmt_p(b[1], 32, ca->cmp[m].p),
                   ca->flagged[m] ? " WORSE" : "");
        wrap_item(&x, item);
      }
      mg_rp_w_puts(w, "\n");
    }
  }
}

static void flag(struct mg_rp_w *w, const struct mg_rp_flag_report *fr) {
  char a[32], b[32];

  mg_rp_w_printf(w, "\n== flag %s ==\n", fr->src->name);
  if (fr->control != MG_RP_NONE)
    mg_rp_w_printf(w, "control: %s (%s)%s\n", fr->v[fr->control].name,
                   fr->control_source,
                   fr->control_option_missing
                       ? "; --control names no variant of this flag"
                       : "");
  else
    mg_rp_w_puts(w, "control: none (no rollout records)\n");
  mg_rp_w_printf(w, "records: %s, of which rollout (randomized): %s\n",
                 mg_rp_fmt_count(a, sizeof(a), fr->records),
                 mg_rp_fmt_count(b, sizeof(b), fr->rollout));
  weights(w, fr);
  reasons_by_variant(w, fr);
  {
    char t[1024];
    mg_rp_unit_sources_text(fr, t, sizeof(t));
    if (t[0])
      para(w, "", 2, "%s", t);
    mg_rp_names_text(&fr->src->endpoints, t, sizeof(t));
    if (t[0])
      para(w, "endpoints (rollout records): ", 2, "%s", t);
  }
  if (fr->rollout == 0) {
    mg_rp_w_puts(w, "no rollout records: nothing randomized to compare\n");
    return;
  }
  metrics(w, fr);
  comparisons(w, fr);
  feedback(w, fr);
  verdicts(w, fr);
  checks(w, fr);
  input_axis(w, fr);
}

static void pairs(struct mg_rp_w *w, const struct mg_rp_report *r) {
  char a[32], b[32], c[32];
  size_t i, k;

  if (r->npairs == 0)
    return;
  mg_rp_w_puts(w, "\n== cross-flag co-assignment (units in both flags' "
                  "rollouts; every treatment\n   of one against every "
                  "treatment of the other: chi-square or Fisher, odds ratio) "
                  "==\n");
  for (i = 0; i < r->npairs; i++) {
    const struct mg_rp_pair *p = &r->pairs[i];
    const struct mg_rp_flag_report *fa = &r->flags[p->a], *fb = &r->flags[p->b];
    mg_rp_w_printf(w, "  %s x %s: %s shared units\n", fa->src->name,
                   fb->src->name, mg_rp_fmt_count(a, sizeof(a), p->common));
    for (k = 0; k < p->nt; k++) {
      const struct mg_rp_copair *t = &p->t[k];
      if (t->test == NULL) {
        para(w, "    ", 6, "%s x %s: %s in both (%.1f expected); not tested: %s",
             fa->v[t->arm_a].name, fb->v[t->arm_b].name,
             mg_rp_fmt_count(b, sizeof(b), t->both),
             isnan(t->expected) ? 0 : t->expected, t->note);
        continue;
      }
      para(w, "    ", 6,
           "%s x %s: %s: %s in both (%.1f expected), odds ratio %.3g [%.3g, "
           "%.3g], phi %.3f; %s p = %s",
           fa->v[t->arm_a].name, fb->v[t->arm_b].name,
           t->alarm ? "ALARM" : "ok", mg_rp_fmt_count(b, sizeof(b), t->both),
           t->expected, t->odds_ratio, t->or_lo, t->or_hi, t->phi, t->test,
           mg_rp_fmt_p(c, sizeof(c), t->p));
    }
  }
}

/* s wrapped at width columns: the first line after first (already
 * written, first_cols wide), the others indented by indent spaces. */
static void wrap_text(struct mg_rp_w *w, int first_cols, int indent,
                      int width, const char *s) {
  int room = width - first_cols;
  while (*s) {
    size_t n = strlen(s), cut = n;
    if (room < 20)
      room = 20;
    if (n > (size_t)room) {
      cut = (size_t)room;
      while (cut > 0 && s[cut] != ' ')
        cut--;
      if (cut == 0)
        cut = (size_t)room;
    }
    mg_rp_w_printf(w, "%.*s\n", (int)cut, s);
    s += cut;
    while (*s == ' ')
      s++;
    if (*s)
      mg_rp_w_printf(w, "%*s", indent, "");
    room = width - indent;
  }
}

/* prefix, then the formatted text wrapped at WRAP columns, continued
 * lines indented by indent spaces. */
static void para(struct mg_rp_w *w, const char *prefix, int indent,
                 const char *fmt, ...) {
  char text[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof(text), fmt, ap);
  va_end(ap);
  mg_rp_w_puts(w, prefix);
  wrap_text(w, (int)strlen(prefix), indent, WRAP, text);
}

static void method(struct mg_rp_w *w) {
  mg_rp_w_puts(w, "\nmethod:\n  ");
  wrap_text(w, 2, 2, 78, mg_rp_method_text);
}

int mg_rp_render_text(const struct mg_rp_report *r, struct mg_buf *out) {
  struct mg_rp_w w = {out, 0};
  size_t i;

  header(&w, r);
  alarms(&w, r);
  for (i = 0; i < r->nflags; i++)
    if (r->flags[i].shown)
      flag(&w, &r->flags[i]);
  pairs(&w, r);
  method(&w);
  return w.err;
}
