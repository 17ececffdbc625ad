/* render_text.c - the report as plain text: what was read, every alarm,
 * then one section per flag (metrics, comparisons, checks, input axis),
 * cross-flag co-assignment, and the method. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "report/render.h"

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

  mg_rp_w_puts(w, "modelgate report: ");
  mg_rp_w_inputs(w, log);
  mg_rp_w_puts(w, "\n");
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
  for (i = 0; i < r->nalarms; i++)
    mg_rp_w_printf(w, "  ! [%s] %s\n", r->alarms[i].check, r->alarms[i].text);
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
    if (ws->first_ts[0])
      mg_rp_w_printf(w, " (%s .. %s)", ws->first_ts, ws->last_ts);
    mg_rp_w_printf(w, "%s\n",
                   (int)i == fr->modal_wset && f->nwsets > 1
                       ? "  <- most common: used for the sample-ratio check"
                       : "");
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
  int nw = name_width(fr);
  char b[12][32];
  uint32_t a;

  mg_rp_w_printf(w,
                 "\n  %-*s %9s %10s %8s %8s %8s %6s %8s %8s %8s %8s %8s\n",
                 nw, "variant", "units", "requests", "error", "fallback",
                 "low-conf", "conf", "p50 ms", "p95 ms", "p99 ms", "prompt",
                 "compl.");
  for (a = 0; a < fr->narms; a++) {
    const struct mg_rp_variant *v = &fr->v[a];
    mg_rp_w_printf(
        w, "  %-*s %9s %10s %8s %8s %8s %6s %8s %8s %8s %8s %8s%s\n", nw,
        v->name, mg_rp_fmt_count(b[0], 32, v->units),
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
                        v->value[MG_RP_M_COMPLETION]),
        v->control ? "  (control)" : "");
  }
  mg_rp_w_puts(w, "  (error, fallback, low-conf: share of requests; conf: "
                  "mean confidence; prompt, compl.: mean tokens per request "
                  "with tokens)\n");
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
                   "delta method)\n",
                   v->name, c->name);
    for (m = 0; m < MG_RP_NMETRICS; m++) {
      const struct mg_stats_diff *d = &v->cmp[m];
      mg_rp_w_printf(w, "    %-27s %9s vs %-9s %11s  [%s, %s]  p = %s%s\n",
                     mg_rp_metrics[m].label,
                     mg_rp_fmt_value(b[0], 32, m, v->value[m]),
                     mg_rp_fmt_value(b[1], 32, m, c->value[m]),
                     mg_rp_fmt_diff(b[2], 32, m, d->diff),
                     mg_rp_fmt_diff(b[3], 32, m, d->lo),
                     mg_rp_fmt_diff(b[4], 32, m, d->hi),
                     mg_rp_fmt_p(b[5], 32, d->p),
                     !isnan(d->p) && d->p < 0.05 ? "  *" : "");
    }
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
    mg_rp_w_printf(w, "    sample ratio    not tested: %s\n", fr->srm_note);
  } else {
    mg_rp_w_printf(w, "    sample ratio    %-5s units ",
                   fr->srm_alarm ? "ALARM" : "ok");
    k = 0;
    for (a = 0; a < fr->narms; a++) {
      uint64_t tot = 0;
      uint32_t i;
      if (fr->v[a].srm_units == 0 && fr->v[a].srm_expected == 0)
        continue;
      for (i = 0; i < fr->narms; i++)
        tot += fr->v[i].srm_units;
      mg_rp_w_printf(w, "%s%s %s (%.2f%% seen, %.2f%% expected)",
                     k++ ? ", " : "", fr->v[a].name,
                     mg_rp_fmt_count(b[0], 32, fr->v[a].srm_units),
                     tot ? 100.0 * (double)fr->v[a].srm_units / (double)tot : 0,
                     fr->v[a].srm_expected * 100);
    }
    mg_rp_w_printf(w, "; chi-square %.2f, df %.0f, p = %s\n", fr->srm_chi2,
                   fr->srm_df, mg_rp_fmt_p(b[1], 32, fr->srm_p));
  }
  /* Cohort balance. */
  if (!fr->bal_tested) {
    mg_rp_w_printf(w, "    cohort balance  not tested: %s\n", fr->bal_note);
  } else {
    mg_rp_w_printf(w,
                   "    cohort balance  %-5s heavy users = top 5%% of %s "
                   "units by requests (>= %" PRIu64
                   " requests); chi-square %.2f, df %.0f, p = %s\n",
                   fr->bal_alarm ? "ALARM" : "ok",
                   mg_rp_fmt_count(b[0], 32, fr->bal_units),
                   fr->heavy_min_requests, fr->bal_chi2, fr->bal_df,
                   mg_rp_fmt_p(b[1], 32, fr->bal_p));
  }
  mg_rp_w_printf(w,
                 "      %-*s %9s %8s   requests per unit: %6s %6s %6s %6s  "
                 "heavy users' share of requests\n",
                 nw, "variant", "units", "heavy", "mean", "p50", "p90", "p99");
  for (a = 0; a < fr->narms; a++) {
    const struct mg_rp_variant *v = &fr->v[a];
    if (v->units == 0)
      continue;
    mg_rp_w_printf(w,
                   "      %-*s %9s %7.1f%%                      %6.1f %6.0f "
                   "%6.0f %6.0f  %5.1f%%\n",
                   nw, v->name, mg_rp_fmt_count(b[0], 32, v->units),
                   100.0 * (double)v->heavy / (double)v->units, v->rpu_mean,
                   v->rpu_p50, v->rpu_p90, v->rpu_p99,
                   isnan(v->heavy_requests) ? 0 : 100 * v->heavy_requests);
  }
  if (fr->switched_units)
    mg_rp_w_printf(w,
                   "    units seen in more than one variant: %s (weights "
                   "moved them, or unit ids collide)\n",
                   mg_rp_fmt_count(b[0], 32, fr->switched_units));
}

static void input_axis(struct mg_rp_w *w, const struct mg_rp_flag_report *fr) {
  int nw = name_width(fr);
  char b[2][32], col[MG_RP_CELL_COLS][32];
  uint32_t c, a;
  int m;

  if (fr->ncells == 0)
    return;
  mg_rp_w_printf(w,
                 "\n  input axis (input.chars quartiles %.0f / %.0f / %.0f of "
                 "the flag's rollout records; tools 0, 1-2, 3+)\n",
                 fr->chars_edges[0], fr->chars_edges[1], fr->chars_edges[2]);
  mg_rp_w_printf(w,
                 "    %-16s %-*s %9s %9s %8s %8s %8s %6s %8s %8s %8s %8s\n",
                 "cell", nw, "variant", "units", "requests", "error",
                 "fallback", "low-conf", "conf", "p50 ms", "p95 ms", "prompt",
                 "compl.");
  for (c = 0; c < fr->ncells; c++) {
    const struct mg_rp_cell *cell = &fr->cells[c];
    for (a = 0; a < fr->narms; a++) {
      const struct mg_rp_cell_arm *ca = &cell->arms[a];
      if (ca->requests == 0 && fr->v[a].requests == 0)
        continue;
      mg_rp_cell_cols(ca, col);
      mg_rp_w_printf(
          w, "    %-16s %-*s %9s %9s %8s %8s %8s %6s %8s %8s %8s %8s\n",
          a == 0 ? cell->label : "", nw, fr->v[a].name, col[0], col[1],
          col[2], col[3], col[4], col[5], col[6], col[7], col[8], col[9]);
    }
    for (a = 0; a < fr->narms; a++) {
      const struct mg_rp_cell_arm *ca = &cell->arms[a];
      bool any = false;
      if (!ca->has_cmp)
        continue;
      for (m = 0; m < MG_RP_CELL_METRICS; m++)
        any |= ca->flagged[m];
      mg_rp_w_printf(w, "    %-16s %s %s vs %s:", "", any ? "!" : " ",
                     fr->v[a].name, fr->v[fr->control].name);
      for (m = 0; m < MG_RP_CELL_METRICS; m++)
        mg_rp_w_printf(w, "%s %s %s (p %s)%s", m ? "," : "",
                       mg_rp_metrics[m].abbr,
                       mg_rp_fmt_diff(b[0], 32, m, ca->cmp[m].diff),
                       mg_rp_fmt_p(b[1], 32, ca->cmp[m].p),
                       ca->flagged[m] ? " WORSE" : "");
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
  if (fr->rollout == 0) {
    mg_rp_w_puts(w, "no rollout records: nothing randomized to compare\n");
    return;
  }
  metrics(w, fr);
  comparisons(w, fr);
  checks(w, fr);
  input_axis(w, fr);
}

static void pairs(struct mg_rp_w *w, const struct mg_rp_report *r) {
  char a[32], b[32], c[32];
  size_t i;

  if (r->npairs == 0)
    return;
  mg_rp_w_puts(w, "\n== cross-flag co-assignment (units in both flags' "
                  "rollouts; treatment = any variant but the control) ==\n");
  for (i = 0; i < r->npairs; i++) {
    const struct mg_rp_pair *p = &r->pairs[i];
    mg_rp_w_printf(w, "  %s x %s: %s shared units, %s in both treatments",
                   r->flags[p->a].src->name, r->flags[p->b].src->name,
                   mg_rp_fmt_count(a, sizeof(a), p->common),
                   mg_rp_fmt_count(b, sizeof(b), p->both));
    if (p->common == 0) {
      mg_rp_w_puts(w, "\n");
      continue;
    }
    mg_rp_w_printf(w, " vs %.1f expected (%.2fx)", p->expected, p->ratio);
    if (p->tested)
      mg_rp_w_printf(w, "; chi-square %.2f, p = %s: %s\n", p->chi2,
                     mg_rp_fmt_p(c, sizeof(c), p->p),
                     p->alarm ? "ALARM" : "ok");
    else
      mg_rp_w_puts(w, "; not tested: an expected count is below 5\n");
  }
}

/* Wrap the method text at 78 columns. */
static void method(struct mg_rp_w *w) {
  const char *s = mg_rp_method_text;
  mg_rp_w_puts(w, "\nmethod:\n");
  while (*s) {
    size_t n = strlen(s), cut = n;
    if (n > 76) {
      cut = 76;
      while (cut > 0 && s[cut] != ' ')
        cut--;
      if (cut == 0)
        cut = 76;
    }
    mg_rp_w_printf(w, "  %.*s\n", (int)cut, s);
    s += cut;
    while (*s == ' ')
      s++;
  }
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
