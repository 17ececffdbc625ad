/* render.c - helpers the three renderers share (render.h). */
#include "report/render.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char mg_rp_method_text[] =
    "Only records with reason \"rollout\" (the randomized ones) enter the "
    "metrics, comparisons and checks; other reasons (no_unit, rules, the "
    "kill switch) are counted apart. Every metric is a ratio of per-unit "
    "sums (errors / requests, fallbacks / requests, low-confidence / "
    "requests, summed confidence / requests with a confidence, summed ms / "
    "requests, tokens / requests with tokens, cost / requests with a cost, "
    "cost / successful answers, a feedback metric's values / its feedback "
    "lines, decisions with feedback / decisions). Requests of one unit are "
    "not independent, so the unit is the sampling unit: Var(R) = (s_x^2 - "
    "2R s_xy + R^2 s_y^2) / (n ybar^2) over the arm's n units (the delta "
    "method), and a difference from the control is tested by Welch's t with "
    "the Welch-Satterthwaite degrees of freedom, which stays valid when one "
    "arm is constant. A share with no events in one arm takes the binomial "
    "variance at the pooled rate there. A test is undefined, and says so "
    "instead of alarming, with fewer than two units in an arm, with no "
    "variance in either arm, or with no events at all. p50, p95 and p99 "
    "are request-level and descriptive. Sample ratio: Pearson chi-square "
    "goodness of fit of units per variant against the most common logged "
    "weight set, alarm at p < 0.001. Cohort balance: the top 5% of units by "
    "requests are heavy; chi-square test of heavy x variant, alarm at p < "
    "0.001. Both need every expected count >= 5. Cross-flag co-assignment: "
    "over units in both flags' rollouts, for every treatment A of one and B "
    "of the other, the 2x2 table 'in A' x 'in B': Pearson chi-square (Fisher's "
    "exact test when an expected count is below 5) and the odds ratio, "
    "which does not depend on the treatments' shares; alarm when p < 0.001 "
    "and the odds ratio is >= 2 or <= 0.5. Input axis: input.chars "
    "quartiles of the flag's rollout records and tool counts 0, 1-2, 3+; in "
    "each cell each treatment is compared with the control as above, and "
    "flagged when worse with a Bonferroni-adjusted p < 0.01 (p times the "
    "number of cell comparisons of the flag) and at least 30 units per arm "
    "in the cell; one alarm per flag, variant and metric names its cells. "
    "Feedback coverage: the share of decisions with feedback, treatment "
    "against control; a difference at p < 0.001 is an alarm (a biased "
    "feedback channel).";

void mg_rp_w_printf(struct mg_rp_w *w, const char *fmt, ...) {
  va_list ap;
  if (w->err)
    return;
  va_start(ap, fmt);
  w->err = mg_buf_vprintf(w->b, fmt, ap);
  va_end(ap);
}

void mg_rp_w_puts(struct mg_rp_w *w, const char *s) {
  if (w->err)
    return;
  w->err = mg_buf_puts(w->b, s);
}

void mg_rp_w_json_str(struct mg_rp_w *w, const char *s) {
  if (w->err)
    return;
  w->err = mg_buf_json_str(w->b, s, strlen(s));
}

void mg_rp_w_json_num(struct mg_rp_w *w, double v) {
  if (!isfinite(v)) {
    mg_rp_w_puts(w, "null");
    return;
  }
  /* 17 significant digits round-trip any double; integers print plainly. */
  if (v == floor(v) && fabs(v) < 9007199254740992.0)
    mg_rp_w_printf(w, "%.0f", v);
  else
    mg_rp_w_printf(w, "%.17g", v);
}

void mg_rp_w_html(struct mg_rp_w *w, const char *s) {
  const char *run = s;
  for (; *s; s++) {
    const char *esc = NULL;
    switch (*s) {
    case '&':
      esc = "&amp;";
      break;
    case '<':
      esc = "&lt;";
      break;
    case '>':
      esc = "&gt;";
      break;
    case '"':
      esc = "&quot;";
      break;
    case '\'':
      esc = "&#39;";
      break;
    default:
      continue;
    }
    if (!w->err && s > run)
      w->err = mg_buf_append(w->b, run, (size_t)(s - run));
    mg_rp_w_puts(w, esc);
    run = s + 1;
  }
  if (!w->err && s > run)
    w->err = mg_buf_append(w->b, run, (size_t)(s - run));
}

void mg_rp_cell_cols(const struct mg_rp_cell_arm *ca,
                     char out[MG_RP_CELL_COLS][32]) {
  static const enum mg_rp_metric before[] = {MG_RP_M_ERROR, MG_RP_M_FALLBACK,
                                             MG_RP_M_LOWCONF,
                                             MG_RP_M_CONFIDENCE};
  size_t i;
  mg_rp_fmt_count(out[0], 32, ca->units);
  mg_rp_fmt_count(out[1], 32, ca->requests);
  for (i = 0; i < 4; i++)
    mg_rp_fmt_value(out[2 + i], 32, before[i], ca->value[before[i]]);
  mg_rp_fmt_ms(out[6], 32, ca->p50);
  mg_rp_fmt_ms(out[7], 32, ca->p95);
  mg_rp_fmt_value(out[8], 32, MG_RP_M_PROMPT, ca->value[MG_RP_M_PROMPT]);
  mg_rp_fmt_value(out[9], 32, MG_RP_M_COMPLETION,
                  ca->value[MG_RP_M_COMPLETION]);
}

static const char *plural(uint64_t n) { return n == 1 ? "" : "s"; }

void mg_rp_w_inputs(struct mg_rp_w *w, const struct mg_rp_log *log) {
  char a[32], b[32], c[32], d[32];
  mg_rp_w_printf(w,
                 "%zu file%s, %s line%s: %s decision record%s, %s event "
                 "line%s, %s malformed line%s skipped",
                 log->nfiles, plural(log->nfiles),
                 mg_rp_fmt_count(a, sizeof(a), log->lines), plural(log->lines),
                 mg_rp_fmt_count(b, sizeof(b), log->records),
                 plural(log->records),
                 mg_rp_fmt_count(c, sizeof(c), log->event_lines),
                 plural(log->event_lines),
                 mg_rp_fmt_count(d, sizeof(d), log->malformed),
                 plural(log->malformed));
}

void mg_rp_unit_sources_text(const struct mg_rp_flag_report *fr, char *buf,
                             size_t n) {
  const struct mg_rp_flag *f = fr->src;
  uint64_t tot = 0, no_unit = 0;
  size_t o = 0;
  uint32_t a;
  int k;

  buf[0] = '\0';
  for (k = 0; k < MG_RP_NUS; k++)
    if (k != MG_RP_US_ABSENT)
      tot += f->unit_source[k];
  for (a = 0; a < fr->narms; a++)
    no_unit += f->arms[a].no_unit;
  for (k = 0; k < MG_RP_NUS && tot && o + 64 < n; k++) {
    if (k == MG_RP_US_ABSENT || f->unit_source[k] == 0)
      continue;
    o += (size_t)snprintf(buf + o, n - o, "%s%s %.1f%%",
                          o ? ", " : "units from ", mg_rp_unit_sources[k],
                          100.0 * (double)f->unit_source[k] / (double)tot);
  }
  if (no_unit && o + 128 < n) {
    char c[32];
    o += (size_t)snprintf(buf + o, n - o,
                          "%s%s record%s without a unit (reason no_unit) got "
                          "the off_variant: not randomized, not compared",
                          o ? "; " : "", mg_rp_fmt_count(c, sizeof(c), no_unit),
                          no_unit == 1 ? "" : "s");
  }
}

void mg_rp_feedback_text(const struct mg_rp_log *log, char *buf, size_t n) {
  char a[32], b[32], c[32], d[32], e[32];
  buf[0] = '\0';
  if (log->fb_lines == 0)
    return;
  snprintf(buf, n,
           "%s feedback line%s: %s joined to rollout decisions, %s to "
           "decisions not randomized, %s whose decision is not in these "
           "logs, %s superseded by a later line for the same decision and "
           "metric",
           mg_rp_fmt_count(a, sizeof(a), log->fb_lines),
           log->fb_lines == 1 ? "" : "s",
           mg_rp_fmt_count(b, sizeof(b), log->fb_matched),
           mg_rp_fmt_count(c, sizeof(c), log->fb_not_rollout),
           mg_rp_fmt_count(d, sizeof(d), log->fb_orphans),
           mg_rp_fmt_count(e, sizeof(e), log->fb_superseded));
}

void mg_rp_names_text(const struct mg_rp_names *t, char *buf, size_t n) {
  char c[32];
  size_t o = 0;
  uint32_t i;
  buf[0] = '\0';
  for (i = 0; i < t->count && o + 96 < n; i++)
    o += (size_t)snprintf(buf + o, n - o, "%s%.40s %s", o ? ", " : "",
                          t->name[i], mg_rp_fmt_count(c, sizeof(c), t->n[i]));
  if (t->other && o + 64 < n)
    snprintf(buf + o, n - o, "%sothers %s", o ? ", " : "",
             mg_rp_fmt_count(c, sizeof(c), t->other));
}
