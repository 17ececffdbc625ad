/* render_html.c - the report as one self-contained HTML page: inline CSS
 * and inline SVG charts drawn here, no scripts, no fonts or images to fetch,
 * so it opens from a file on a machine without network access.
 *
 * The page: a headline listing every alarm, then per flag the metrics
 * table, the differences against the control (table and interval chart),
 * rates with their 95% intervals, one latency histogram per variant, the
 * checks, and the input-axis breakdown (chart and table); then cross-flag
 * co-assignment and the method. Charts carry stable ids and classes that
 * tests look for:
 *
 *   svg.chart.rates       id "rates-F"      (F: flag position on the page)
 *   svg.chart.diffs       id "diffs-F"
 *   svg.chart.latency     id "latency-F-V"  (V: variant index), one per
 *                                           variant with requests
 *   svg.chart.input-axis  id "axis-F"
 *   table.input-axis      id "axis-table-F"
 *   section#alarms li.alarm                 one per alarm */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "report/render.h"

#define FONT "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"

/* Colour per variant index; the control is drawn in the first. */
static const char *const PALETTE[] = {"#4e79a7", "#f28e2b", "#59a14f",
                                      "#e15759", "#b07aa1", "#76b7b2",
                                      "#edc948", "#9c755f"};

static const char *colour(const struct mg_rp_flag_report *fr, uint32_t a) {
  uint32_t k;
  if (fr->control == MG_RP_NONE)
    return PALETTE[a % 8];
  if (a == fr->control)
    return PALETTE[0];
  /* Treatments take the other colours in order. */
  k = a < fr->control ? a + 1 : a;
  return PALETTE[1 + (k - 1) % 7];
}

static const char CSS[] =
    "body{" FONT ";margin:24px auto;max-width:1400px;padding:0 24px;"
    "color:#1d2330;background:#fff;line-height:1.4}"
    "h1{font-size:26px;margin:0 0 4px}h2{font-size:21px;margin:32px 0 8px;"
    "border-bottom:2px solid #d8dde6;padding-bottom:4px}"
    "h3{font-size:16px;margin:20px 0 6px}"
    ".meta{color:#566070;font-size:14px}"
    "#alarms{border-radius:6px;padding:12px 18px;margin:16px 0}"
    "#alarms.alarms-bad{background:#fdecea;border:1px solid #e0a19b}"
    "#alarms.alarms-ok{background:#eaf6ec;border:1px solid #9fcfaa}"
    "#alarms h2{border:0;margin:0 0 6px;font-size:19px}"
    "#alarms li{margin:4px 0}"
    ".tag{display:inline-block;font-size:12px;font-weight:600;"
    "padding:1px 6px;border-radius:3px;background:#c0392b;color:#fff;"
    "margin-right:6px}"
    "table{border-collapse:collapse;font-size:13px;margin:6px 0 10px}"
    ".wide{overflow-x:auto;max-width:100%}"
    "th,td{padding:3px 9px;border-bottom:1px solid #e3e6eb;text-align:right;"
    "white-space:nowrap}"
    "th{background:#f3f5f8;font-weight:600}"
    "td.l,th.l{text-align:left}"
    "tr.worse td{background:#fdecea}"
    "td.sig{font-weight:600}"
    ".swatch{display:inline-block;width:10px;height:10px;border-radius:2px;"
    "margin-right:5px;vertical-align:baseline}"
    ".ok{color:#2e7d32;font-weight:600}.alarm{color:#c0392b;font-weight:600}"
    "svg.chart{display:block;margin:6px 0 14px;background:#fcfcfd;"
    "border:1px solid #e3e6eb;border-radius:4px;max-width:100%;height:auto}"
    "td.wrap{white-space:normal;text-align:left}"
    "tr.vs td{border-bottom:1px solid #c9ced8;color:#3b4452;font-size:12px;"
    "padding-top:0}"
    "tr.cell-first td{border-top:2px solid #c9ced8}"
    "span.d{white-space:nowrap}span.d.flagged{font-weight:700;color:#c0392b}"
    "td.undefined{color:#566070;font-style:italic}"
    "#alarms li .cells{display:block;font-size:13px;color:#3b4452}"
    "svg text{" FONT ";fill:#1d2330}"
    ".charts{display:flex;flex-wrap:wrap;gap:0 18px}"
    "p.method{font-size:13px;color:#3b4452;max-width:1100px}"
    "nav a{margin-right:14px}";

/* ---- small helpers ------------------------------------------------------ */

static void esc(struct mg_rp_w *w, const char *s) { mg_rp_w_html(w, s); }

/* A label for a chart: at most 18 characters, escaped. */
static void short_label(struct mg_rp_w *w, const char *s) {
  char buf[24];
  size_t n = strlen(s);
  if (n <= 18) {
    esc(w, s);
    return;
  }
  memcpy(buf, s, 16);
  memcpy(buf + 16, "..", 3);
  esc(w, buf);
}

/* A "nice" upper bound for an axis: 1, 2, 2.5 or 5 times a power of ten. */
static double nice_max(double v) {
  double e, f;
  if (!(v > 0))
    return 1;
  e = pow(10, floor(log10(v)));
  f = v / e;
  f = f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10;
  return f * e;
}

static void value_text(char *buf, size_t n, enum mg_rp_metric m, double v) {
  mg_rp_fmt_value(buf, n, m, v);
}

/* ---- headline ----------------------------------------------------------- */

static void head(struct mg_rp_w *w, const struct mg_rp_report *r) {
  const struct mg_rp_log *log = r->log;
  char a[32];
  size_t i;

  mg_rp_w_printf(w,
                 "<!DOCTYPE html>\n<html lang=\"en\"><head><meta "
                 "charset=\"utf-8\"><meta name=\"viewport\" "
                 "content=\"width=device-width\"><title>modelgate report"
                 "</title><style>%s</style></head><body>\n",
                 CSS);
  mg_rp_w_puts(w, "<header><h1>modelgate report</h1><p class=\"meta\">");
  mg_rp_w_inputs(w, log);
  if (log->unflagged)
    mg_rp_w_printf(w, "; %s records without a flag",
                   mg_rp_fmt_count(a, sizeof(a), log->unflagged));
  mg_rp_w_puts(w, ".<br>Files: ");
  for (i = 0; i < log->nfiles; i++) {
    if (i)
      mg_rp_w_puts(w, ", ");
    esc(w, log->files[i]);
  }
  {
    char t[1024];
    mg_rp_feedback_text(log, t, sizeof(t));
    if (t[0]) {
      mg_rp_w_puts(w, "<br>Feedback: ");
      esc(w, t);
    }
    mg_rp_names_text(&log->instances, t, sizeof(t));
    if (t[0]) {
      mg_rp_w_puts(w, "<br>Instances (lines): ");
      esc(w, t);
    }
  }
  for (i = 0; i < log->nbad; i++) {
    mg_rp_w_puts(w, "<br>Malformed: ");
    esc(w, log->bad[i].file);
    mg_rp_w_printf(w, ":%" PRIu64 ": ", log->bad[i].line);
    esc(w, log->bad[i].why);
  }
  if (log->nevents) {
    mg_rp_w_puts(w, "<br>Events:");
    for (i = 0; i < log->nevents; i++) {
      mg_rp_w_puts(w, i ? ", " : " ");
      esc(w, log->events[i].name);
      if (log->events[i].flag[0]) {
        mg_rp_w_puts(w, " (");
        esc(w, log->events[i].flag);
        mg_rp_w_puts(w, ")");
      }
      mg_rp_w_printf(w, " &times;%" PRIu64, log->events[i].n);
    }
  }
  mg_rp_w_puts(w, "</p></header>\n");

  mg_rp_w_printf(w, "<section id=\"alarms\" class=\"%s\">",
                 r->nalarms ? "alarms-bad" : "alarms-ok");
  if (r->nalarms == 0) {
    mg_rp_w_puts(w, "<h2>No alarms</h2><p>Sample ratio, cohort balance, "
                    "cross-flag co-assignment and the input-axis breakdown "
                    "all pass.</p>");
  } else {
    mg_rp_w_printf(w, "<h2>%zu alarm%s</h2><ul>", r->nalarms,
                   r->nalarms == 1 ? "" : "s");
    for (i = 0; i < r->nalarms; i++) {
      const struct mg_rp_alarm *al = &r->alarms[i];
      size_t c;
      mg_rp_w_printf(w, "<li class=\"alarm-item\" data-check=\"%s\">"
                        "<span class=\"tag\">%s</span>",
                     al->check, al->check);
      esc(w, al->text);
      if (al->ncells) {
        mg_rp_w_printf(w, "<span class=\"cells\">%s: ",
                       al->ncells == 1 ? "cell" : "cells");
        for (c = 0; c < al->ncells; c++) {
          mg_rp_w_puts(w, c ? ", " : "");
          esc(w, al->cells[c]);
        }
        mg_rp_w_puts(w, "</span>");
      }
      mg_rp_w_puts(w, "</li>");
    }
    mg_rp_w_puts(w, "</ul>");
  }
  mg_rp_w_puts(w, "</section>\n<nav>");
  for (i = 0; i < r->nflags; i++) {
    if (!r->flags[i].shown)
      continue;
    mg_rp_w_printf(w, "<a href=\"#flag-%zu\">", i);
    esc(w, r->flags[i].src->name);
    mg_rp_w_puts(w, "</a>");
  }
  if (r->npairs)
    mg_rp_w_puts(w, "<a href=\"#cross-flag\">cross-flag</a>");
  mg_rp_w_puts(w, "<a href=\"#method\">method</a></nav>\n");
}

/* ---- tables ------------------------------------------------------------- */

static void swatch(struct mg_rp_w *w, const struct mg_rp_flag_report *fr,
                   uint32_t a) {
  mg_rp_w_printf(w, "<span class=\"swatch\" style=\"background:%s\">"
                    "</span>",
                 colour(fr, a));
}

static void metrics_table(struct mg_rp_w *w,
                          const struct mg_rp_flag_report *fr) {
  char b[8][32];
  uint32_t a;
  int m;

  mg_rp_w_puts(w, "<div class=\"wide\"><table class=\"metrics\"><tr>"
                  "<th class=\"l\">variant</th><th>units</th>"
                  "<th>requests</th><th>error</th><th>fallback</th>"
                  "<th>low-conf.</th><th>confidence</th><th>mean ms</th>"
                  "<th>p50 ms</th><th>p95 ms</th><th>p99 ms</th>"
                  "<th>prompt tok./req.</th><th>compl. tok./req.</th></tr>");
  for (a = 0; a < fr->narms; a++) {
    const struct mg_rp_variant *v = &fr->v[a];
    mg_rp_w_puts(w, "<tr><td class=\"l\">");
    swatch(w, fr, a);
    esc(w, v->name);
    mg_rp_w_printf(w, "%s</td><td>%s</td><td>%s</td>",
                   v->control ? " <em>(control)</em>" : "",
                   mg_rp_fmt_count(b[0], 32, v->units),
                   mg_rp_fmt_count(b[1], 32, v->requests));
    for (m = 0; m < MG_RP_CELL_METRICS; m++) {
      value_text(b[2], 32, m, v->value[m]);
      if (m == MG_RP_M_LATENCY)
        mg_rp_w_printf(w, "<td>%s</td><td>%s</td><td>%s</td><td>%s</td>",
                       b[2], mg_rp_fmt_ms(b[3], 32, v->p50),
                       mg_rp_fmt_ms(b[4], 32, v->p95),
                       mg_rp_fmt_ms(b[5], 32, v->p99));
      else
        mg_rp_w_printf(w, "<td>%s</td>", b[2]);
    }
    mg_rp_w_puts(w, "</tr>");
  }
  mg_rp_w_puts(w, "</table></div>\n");
}

static void comparison_table(struct mg_rp_w *w,
                             const struct mg_rp_flag_report *fr) {
  char b[6][32];
  uint32_t a;
  int m;

  mg_rp_w_puts(w, "<table class=\"comparison\"><tr><th class=\"l\">variant"
                  "</th><th class=\"l\">metric</th><th>treatment</th>"
                  "<th>control</th><th>difference</th><th>95% CI</th>"
                  "<th>relative</th><th>p</th></tr>");
  for (a = 0; a < fr->narms; a++) {
    const struct mg_rp_variant *v = &fr->v[a], *c = &fr->v[fr->control];
    if (!v->has_cmp)
      continue;
    for (m = 0; m < MG_RP_NMETRICS; m++) {
      const struct mg_stats_diff *d = &v->cmp[m];
      bool sig = !isnan(d->p) && d->p < 0.05;
      char rel[32];
      if (isnan(d->rel))
        snprintf(rel, sizeof(rel), "n/a");
      else
        snprintf(rel, sizeof(rel), "%+.1f%%", d->rel * 100);
      mg_rp_w_puts(w, "<tr><td class=\"l\">");
      if (m == 0) {
        swatch(w, fr, a);
        esc(w, v->name);
      }
      mg_rp_w_printf(
          w,
          "</td><td class=\"l\">%s</td><td>%s</td><td>%s</td>"
          "<td%s>%s</td>",
          mg_rp_metrics[m].label, mg_rp_fmt_value(b[0], 32, m, v->value[m]),
          mg_rp_fmt_value(b[1], 32, m, c->value[m]),
          sig ? " class=\"sig\"" : "", mg_rp_fmt_diff(b[2], 32, m, d->diff));
      if (d->undefined)
        mg_rp_w_printf(w, "<td class=\"l undefined\" colspan=\"3\">no test: "
                          "%s</td></tr>",
                       d->undefined);
      else
        mg_rp_w_printf(w, "<td>%s &ndash; %s</td><td>%s</td><td%s>%s</td></tr>",
                       mg_rp_fmt_diff(b[3], 32, m, d->lo),
                       mg_rp_fmt_diff(b[4], 32, m, d->hi), rel,
                       sig ? " class=\"sig\"" : "",
                       mg_rp_fmt_p(b[5], 32, d->p));
    }
  }
  mg_rp_w_puts(w, "</table>\n");
}

/* Cost, feedback and the decide verdict of one flag. */
static void quality(struct mg_rp_w *w, const struct mg_rp_flag_report *fr,
                    size_t fi) {
  char b[6][32];
  uint32_t a, k;

  mg_rp_w_printf(w, "<h3>Cost and feedback</h3><table class=\"quality\" "
                    "id=\"quality-%zu\"><tr><th class=\"l\">variant</th>"
                    "<th>cost total</th><th>cost / request</th>"
                    "<th>cost / success</th><th>feedback coverage</th>",
                 fi);
  for (k = 0; k < fr->nfbm; k++) {
    mg_rp_w_puts(w, "<th>");
    esc(w, fr->fbm[k].name);
    mg_rp_w_printf(w, " (%s)</th>", fr->fbm[k].boolean ? "share true" : "mean");
  }
  mg_rp_w_puts(w, "</tr>");
  for (a = 0; a < fr->narms; a++) {
    const struct mg_rp_variant *v = &fr->v[a];
    if (v->requests == 0)
      continue;
    mg_rp_w_puts(w, "<tr><td class=\"l\">");
    swatch(w, fr, a);
    esc(w, v->name);
    mg_rp_w_printf(w, "</td><td>$%.4f</td><td>%s</td><td>%s</td><td>%s</td>",
                   v->cost_total,
                   mg_rp_fmt_value(b[0], 32, MG_RP_M_COST, v->value[MG_RP_M_COST]),
                   mg_rp_fmt_value(b[1], 32, MG_RP_M_COST_OK,
                                   v->value[MG_RP_M_COST_OK]),
                   mg_rp_fmt_value(b[2], 32, MG_RP_M_COVERAGE,
                                   v->value[MG_RP_M_COVERAGE]));
    for (k = 0; k < fr->nfbm; k++) {
      const struct mg_rp_fb_metric_report *m = &fr->fbm[k];
      const struct mg_rp_fb_arm *fa = &m->arms[a];
      if (isnan(fa->value))
        snprintf(b[3], 32, "n/a");
      else
        snprintf(b[3], 32, m->boolean ? "%.2f%%" : "%.4g",
                 m->boolean ? 100 * fa->value : fa->value);
      mg_rp_w_printf(w, "<td>%s", b[3]);
      if (fa->has_cmp) {
        if (fa->cmp.undefined)
          mg_rp_w_printf(w, "<br><small>no test: %s</small>",
                         fa->cmp.undefined);
        else if (m->boolean)
          mg_rp_w_printf(w, "<br><small>%+.2f pp [%+.2f, %+.2f], p %s</small>",
                         100 * fa->cmp.diff, 100 * fa->cmp.lo,
                         100 * fa->cmp.hi, mg_rp_fmt_p(b[4], 32, fa->cmp.p));
        else
          mg_rp_w_printf(w, "<br><small>%+.4g [%+.4g, %+.4g], p %s</small>",
                         fa->cmp.diff, fa->cmp.lo, fa->cmp.hi,
                         mg_rp_fmt_p(b[4], 32, fa->cmp.p));
      }
      mg_rp_w_printf(w, "<br><small>%s lines</small></td>",
                     mg_rp_fmt_count(b[5], 32, fa->lines));
    }
    mg_rp_w_puts(w, "</tr>");
  }
  mg_rp_w_puts(w, "</table>\n");
  if (fr->decide == NULL)
    return;
  mg_rp_w_printf(w, "<h3>Verdict</h3><p class=\"meta\">decide: ");
  esc(w, fr->decide->metric);
  mg_rp_w_printf(w, ", min lift %+g, alpha %g, power %g.</p><ul class=\"verdicts\">",
                 fr->decide->min_lift, fr->decide->alpha, fr->decide->power);
  for (a = 0; a < fr->narms; a++) {
    const struct mg_rp_variant *v = &fr->v[a];
    if (!v->has_verdict)
      continue;
    mg_rp_w_printf(w, "<li class=\"verdict\" data-verdict=\"%s\"><b>",
                   v->verdict.label);
    esc(w, v->name);
    mg_rp_w_printf(w, ": <span class=\"%s\">%s</span></b>. ",
                   v->verdict.kind == MG_DECIDE_SHIP        ? "ok"
                   : v->verdict.kind == MG_DECIDE_ROLL_BACK ? "alarm"
                                                            : "",
                   v->verdict.label);
    esc(w, v->verdict.evidence);
    mg_rp_w_puts(w, "</li>");
  }
  mg_rp_w_puts(w, "</ul>\n");
}

/* ---- charts ------------------------------------------------------------- */

/* Rates with 95% intervals: one panel per rate metric, one row per
 * variant (dot and whisker). */
static void rates_chart(struct mg_rp_w *w, const struct mg_rp_flag_report *fr,
                        size_t fi) {
  static const int metrics[] = {MG_RP_M_ERROR, MG_RP_M_FALLBACK,
                                MG_RP_M_LOWCONF};
  const double left = 110, width = 200, row = 22, top = 30;
  uint32_t a, shown = 0;
  double panel_w = left + width + 70, h;
  int k;

  for (a = 0; a < fr->narms; a++)
    shown += fr->v[a].requests > 0;
  h = top + row * shown + 34;
  mg_rp_w_printf(w,
                 "<svg id=\"rates-%zu\" class=\"chart rates\" "
                 "xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" "
                 "height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" role=\"img\">",
                 fi, panel_w * 3, h, panel_w * 3, h);
  for (k = 0; k < 3; k++) {
    int m = metrics[k];
    double x0 = k * panel_w, max = 0, y;
    char b[32];
    for (a = 0; a < fr->narms; a++) {
      double hi = fr->v[a].value[m] + MG_STATS_Z95 * fr->v[a].se[m];
      if (isfinite(hi) && hi > max)
        max = hi;
      if (isfinite(fr->v[a].value[m]) && fr->v[a].value[m] > max)
        max = fr->v[a].value[m];
    }
    max = nice_max(max * 1.05);
    mg_rp_w_printf(w,
                   "<g class=\"panel\" data-metric=\"%s\">"
                   "<text x=\"%.1f\" y=\"18\" font-size=\"14\" "
                   "font-weight=\"600\">%s (95%% CI)</text>",
                   mg_rp_metrics[m].key, x0 + 10, mg_rp_metrics[m].label);
    /* Axis: 0, half, max. */
    for (a = 0; a <= 4; a++) {
      double x = x0 + left + width * a / 4.0;
      mg_rp_w_printf(w,
                     "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                     "stroke=\"#e3e6eb\"/><text x=\"%.1f\" y=\"%.1f\" "
                     "font-size=\"11\" text-anchor=\"middle\">%s</text>",
                     x, top - 4, x, top + row * shown, x,
                     top + row * shown + 16,
                     mg_rp_fmt_value(b, sizeof(b), m, max * a / 4.0));
    }
    y = top;
    for (a = 0; a < fr->narms; a++) {
      const struct mg_rp_variant *v = &fr->v[a];
      double val = v->value[m], lo, hi, cx;
      if (v->requests == 0)
        continue;
      mg_rp_w_printf(w, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\">",
                     x0 + 10, y + row / 2 + 4);
      short_label(w, v->name);
      mg_rp_w_puts(w, "</text>");
      if (isfinite(val)) {
        lo = val - MG_STATS_Z95 * v->se[m];
        hi = val + MG_STATS_Z95 * v->se[m];
        if (!isfinite(lo))
          lo = hi = val;
        lo = lo < 0 ? 0 : lo;
        cx = x0 + left + width * val / max;
        mg_rp_w_printf(
            w,
            "<line class=\"ci\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" "
            "y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>"
            "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4.5\" fill=\"%s\"/>"
            "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\">%s</text>",
            x0 + left + width * lo / max, y + row / 2,
            x0 + left + width * (hi > max ? max : hi) / max, y + row / 2,
            colour(fr, a), cx, y + row / 2, colour(fr, a),
            x0 + left + width + 8, y + row / 2 + 4,
            mg_rp_fmt_value(b, sizeof(b), m, val));
      }
      y += row;
    }
    mg_rp_w_puts(w, "</g>");
  }
  mg_rp_w_puts(w, "</svg>\n");
}

/* Differences against the control with 95% intervals, relative to the
 * control's value (so every metric shares one axis), per treatment. */
static void diffs_chart(struct mg_rp_w *w, const struct mg_rp_flag_report *fr,
                        size_t fi) {
  const double left = 300, width = 560, row = 20, top = 34;
  double max = 0, h, y, zero;
  uint32_t a, rows = 0;
  int m;
  char b[32];

  for (a = 0; a < fr->narms; a++) {
    const struct mg_rp_variant *v = &fr->v[a];
    double c;
    if (!v->has_cmp)
      continue;
    for (m = 0; m < MG_RP_NMETRICS; m++) {
      c = fr->v[fr->control].value[m];
      rows++;
      if (!(c > 0) || isnan(v->cmp[m].lo))
        continue;
      if (fabs(v->cmp[m].lo / c) > max)
        max = fabs(v->cmp[m].lo / c);
      if (fabs(v->cmp[m].hi / c) > max)
        max = fabs(v->cmp[m].hi / c);
    }
  }
  if (rows == 0)
    return;
  max = nice_max(max > 2 ? 2 : max);
  h = top + row * rows + 30;
  zero = left + width / 2;
  mg_rp_w_printf(w,
                 "<svg id=\"diffs-%zu\" class=\"chart diffs\" "
                 "xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" "
                 "height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" role=\"img\">"
                 "<text x=\"10\" y=\"20\" font-size=\"14\" "
                 "font-weight=\"600\">difference against the control, "
                 "relative to the control's value (95%% CI)</text>",
                 fi, left + width + 175, h, left + width + 175, h);
  for (a = 0; a <= 4; a++) {
    double x = left + width * a / 4.0, rel = -max + 2 * max * a / 4.0;
    mg_rp_w_printf(w,
                   "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                   "stroke=\"%s\"/><text x=\"%.1f\" y=\"%.1f\" "
                   "font-size=\"11\" text-anchor=\"middle\">%+.0f%%</text>",
                   x, top - 4, x, top + row * rows,
                   a == 2 ? "#8a93a3" : "#e3e6eb", x, top + row * rows + 16,
                   rel * 100);
  }
  y = top;
  for (a = 0; a < fr->narms; a++) {
    const struct mg_rp_variant *v = &fr->v[a];
    if (!v->has_cmp)
      continue;
    for (m = 0; m < MG_RP_NMETRICS; m++) {
      const struct mg_stats_diff *d = &v->cmp[m];
      double c = fr->v[fr->control].value[m], lo, hi, mid;
      bool sig = !isnan(d->p) && d->p < 0.05;
      mg_rp_w_printf(w, "<text x=\"10\" y=\"%.1f\" font-size=\"12\">",
                     y + row / 2 + 4);
      short_label(w, v->name);
      mg_rp_w_printf(w, ": %s</text>", mg_rp_metrics[m].label);
      if (c > 0 && !isnan(d->lo)) {
        lo = d->lo / c;
        hi = d->hi / c;
        mid = d->diff / c;
        lo = lo < -max ? -max : lo > max ? max : lo;
        hi = hi < -max ? -max : hi > max ? max : hi;
        mid = mid < -max ? -max : mid > max ? max : mid;
        mg_rp_w_printf(
            w,
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
            "stroke=\"%s\" stroke-width=\"2\"/><rect x=\"%.1f\" y=\"%.1f\" "
            "width=\"8\" height=\"8\" fill=\"%s\"/>"
            "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\"%s>%s (p %s)</text>",
            zero + width / 2 * lo / max, y + row / 2,
            zero + width / 2 * hi / max, y + row / 2, colour(fr, a),
            zero + width / 2 * mid / max - 4, y + row / 2 - 4, colour(fr, a),
            left + width + 8, y + row / 2 + 4,
            sig ? " font-weight=\"600\"" : "",
            mg_rp_fmt_diff(b, sizeof(b), m, d->diff),
            mg_rp_fmt_p(b + 16, 16, d->p));
      } else if (!isnan(d->diff)) {
        /* No relative difference to draw: say what there is instead. A
         * control at 0% (no events) makes the relative difference
         * undefined; the absolute one is still a figure. */
        char lo_s[32], hi_s[32], p_s[32];
        const char *why = d->undefined ? d->undefined
                          : c == 0     ? NULL
                                       : "the control's value is not "
                                         "positive";
        mg_rp_w_printf(w,
                       "<text class=\"absolute\" x=\"%.1f\" y=\"%.1f\" "
                       "font-size=\"11\" font-style=\"italic\">",
                       left + 6, y + row / 2 + 4);
        if (d->undefined)
          mg_rp_w_printf(w, "%s; no test: %s", 
                         mg_rp_fmt_diff(b, sizeof(b), m, d->diff), why);
        else if (why == NULL)
          mg_rp_w_printf(w,
                         "absolute %s [%s, %s], p %s: the control's %s is "
                         "0, so no relative difference",
                         mg_rp_fmt_diff(b, sizeof(b), m, d->diff),
                         mg_rp_fmt_diff(lo_s, sizeof(lo_s), m, d->lo),
                         mg_rp_fmt_diff(hi_s, sizeof(hi_s), m, d->hi),
                         mg_rp_fmt_p(p_s, sizeof(p_s), d->p),
                         mg_rp_metrics[m].rate ? "rate" : "value");
        else
          mg_rp_w_printf(w, "absolute %s [%s, %s], p %s: %s",
                         mg_rp_fmt_diff(b, sizeof(b), m, d->diff),
                         mg_rp_fmt_diff(lo_s, sizeof(lo_s), m, d->lo),
                         mg_rp_fmt_diff(hi_s, sizeof(hi_s), m, d->hi),
                         mg_rp_fmt_p(p_s, sizeof(p_s), d->p), why);
        mg_rp_w_puts(w, "</text>");
      }
      y += row;
    }
  }
  mg_rp_w_puts(w, "</svg>\n");
}

/* One variant's latency histogram on a log axis, with p50/p95/p99. */
static void latency_chart(struct mg_rp_w *w,
                          const struct mg_rp_flag_report *fr, size_t fi,
                          uint32_t a, double ymax) {
  const struct mg_rp_variant *v = &fr->v[a];
  const double left = 50, width = 560, top = 66, height = 120;
  const double lo = fr->hist_lo, hi = fr->hist_hi, span = hi - lo;
  const double bw = width / MG_RP_HIST_BINS;
  static const double steps[] = {1, 2, 5};
  static const char *const qn[] = {"p50", "p95", "p99"};
  double q[3] = {v->p50, v->p95, v->p99}, e;
  char b[32];
  int i, k;

  mg_rp_w_printf(w,
                 "<svg id=\"latency-%zu-%u\" class=\"chart latency\" "
                 "data-variant=\"",
                 fi, a);
  esc(w, v->name);
  mg_rp_w_printf(w,
                 "\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" "
                 "height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" role=\"img\">"
                 "<text x=\"10\" y=\"18\" font-size=\"13\" "
                 "font-weight=\"600\">",
                 left + width + 30, top + height + 34, left + width + 30,
                 top + height + 34);
  esc(w, v->name);
  mg_rp_w_printf(w,
                 " &mdash; %s requests</text><text x=\"10\" y=\"34\" "
                 "font-size=\"11\">share of requests per bin; p50 %.0f ms, "
                 "p95 %.0f ms, p99 %.0f ms</text>",
                 mg_rp_fmt_count(b, sizeof(b), v->requests), v->p50, v->p95,
                 v->p99);
  /* Bars. */
  for (i = 0; i < MG_RP_HIST_BINS; i++) {
    double share = v->requests ? (double)v->hist[i] / (double)v->requests : 0;
    double bh = ymax > 0 ? height * share / ymax : 0;
    if (bh <= 0)
      continue;
    mg_rp_w_printf(w,
                   "<rect class=\"bar\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                   "height=\"%.1f\" fill=\"%s\" opacity=\"0.85\"/>",
                   left + i * bw + 0.5, top + height - bh, bw - 1, bh,
                   colour(fr, a));
  }
  /* Axis with 1-2-5 ticks inside the range. */
  mg_rp_w_printf(w,
                 "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                 "stroke=\"#8a93a3\"/>",
                 left, top + height, left + width, top + height);
  for (e = floor(lo); e <= ceil(hi); e += 1)
    for (k = 0; k < 3; k++) {
      double t = log10(steps[k]) + e, x;
      if (t < lo - 1e-9 || t > hi + 1e-9)
        continue;
      /* With many decades, label only the powers of ten. */
      if (span > 2.5 && k > 0)
        continue;
      x = left + width * (t - lo) / span;
      mg_rp_w_printf(w,
                     "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                     "stroke=\"#8a93a3\"/><text x=\"%.1f\" y=\"%.1f\" "
                     "font-size=\"11\" text-anchor=\"middle\">%g ms</text>",
                     x, top + height, x, top + height + 4, x,
                     top + height + 17, pow(10, t));
    }
  /* Quantile markers, the values being in the subtitle: short names on
   * three staggered rows, centred on their lines, never overlap. */
  for (k = 0; k < 3; k++) {
    double x, ly = top - 16 + 7 * k;
    if (!(q[k] > 0))
      continue;
    x = left + width * (log10(q[k] < 0.1 ? 0.1 : q[k]) - lo) / span;
    mg_rp_w_printf(w,
                   "<line class=\"quantile\" x1=\"%.1f\" y1=\"%.1f\" "
                   "x2=\"%.1f\" y2=\"%.1f\" stroke=\"#1d2330\" "
                   "stroke-dasharray=\"3,2\"/><text x=\"%.1f\" y=\"%.1f\" "
                   "font-size=\"10\" text-anchor=\"middle\">%s</text>",
                   x, ly + 3, x, top + height, x, ly, qn[k]);
  }
  mg_rp_w_puts(w, "</svg>\n");
}

/* The input axis: per cell, error and fallback rates with intervals for
 * every variant, and p95 latency; flagged cells are shaded. */
static void axis_chart(struct mg_rp_w *w, const struct mg_rp_flag_report *fr,
                       size_t fi) {
  static const int metrics[] = {MG_RP_M_ERROR, MG_RP_M_FALLBACK,
                                MG_RP_M_LOWCONF, -1};
  const double left = 70, cellw = 150, ph = 150, top = 40, gap = 70;
  double width = left + cellw * fr->ncells + 20;
  double h = top + (ph + gap) * 4;
  uint32_t c, a, nv = 0;
  int k;
  char b[32];

  for (a = 0; a < fr->narms; a++)
    nv += fr->v[a].requests > 0;
  if (nv == 0)
    return;
  mg_rp_w_printf(w,
                 "<svg id=\"axis-%zu\" class=\"chart input-axis\" "
                 "xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" "
                 "height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" role=\"img\">",
                 fi, width, h, width, h);
  /* Legend. */
  {
    double x = left;
    for (a = 0; a < fr->narms; a++) {
      if (fr->v[a].requests == 0)
        continue;
      mg_rp_w_printf(w,
                     "<rect x=\"%.1f\" y=\"10\" width=\"12\" height=\"12\" "
                     "fill=\"%s\"/><text x=\"%.1f\" y=\"21\" "
                     "font-size=\"12\">",
                     x, colour(fr, a), x + 17);
      short_label(w, fr->v[a].name);
      mg_rp_w_puts(w, "</text>");
      x += 40 + 7.5 * (double)(strlen(fr->v[a].name) > 18
                                   ? 18
                                   : strlen(fr->v[a].name));
    }
    mg_rp_w_printf(w,
                   "<rect x=\"%.1f\" y=\"10\" width=\"12\" height=\"12\" "
                   "fill=\"#fbd5d0\"/><text x=\"%.1f\" y=\"21\" "
                   "font-size=\"12\">treatment worse (adjusted p &lt; "
                   "0.01)</text>",
                   x + 10, x + 27);
  }
  for (k = 0; k < 4; k++) {
    int m = metrics[k];
    double y0 = top + k * (ph + gap) + 24, max = 0;
    for (c = 0; c < fr->ncells; c++)
      for (a = 0; a < fr->narms; a++) {
        const struct mg_rp_cell_arm *ca = &fr->cells[c].arms[a];
        double v = m < 0 ? ca->p95 : ca->value[m] + MG_STATS_Z95 * ca->se[m];
        if (m >= 0 && !isfinite(v))
          v = ca->value[m];
        if (isfinite(v) && v > max)
          max = v;
      }
    max = nice_max(max * 1.05);
    mg_rp_w_printf(w,
                   "<g class=\"panel\" data-metric=\"%s\"><text x=\"%.1f\" "
                   "y=\"%.1f\" font-size=\"14\" font-weight=\"600\">%s</text>",
                   m < 0 ? "latency_p95_ms" : mg_rp_metrics[m].key, left,
                   y0 - 8,
                   m < 0 ? "p95 latency (ms) by input"
                   : m == MG_RP_M_ERROR ? "error rate by input (95% CI)"
                   : m == MG_RP_M_FALLBACK ? "fallback rate by input (95% CI)"
                                           : "low-confidence rate by input "
                                             "(95% CI)");
    /* Shade flagged cells first, under everything. */
    for (c = 0; c < fr->ncells; c++) {
      bool flagged = false;
      for (a = 0; a < fr->narms; a++)
        flagged |= m >= 0 ? fr->cells[c].arms[a].flagged[m]
                          : fr->cells[c].arms[a].flagged[MG_RP_M_LATENCY];
      if (flagged)
        mg_rp_w_printf(w,
                       "<rect class=\"flagged\" x=\"%.1f\" y=\"%.1f\" "
                       "width=\"%.1f\" height=\"%.1f\" fill=\"#fbd5d0\"/>",
                       left + c * cellw + 2, y0, cellw - 4, ph);
    }
    for (a = 0; a <= 2; a++) {
      double y = y0 + ph - ph * a / 2.0, v = max * a / 2.0;
      if (m < 0)
        snprintf(b, sizeof(b), "%.0f", v);
      else
        mg_rp_fmt_value(b, sizeof(b), m, v);
      mg_rp_w_printf(w,
                     "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                     "stroke=\"#e3e6eb\"/><text x=\"%.1f\" y=\"%.1f\" "
                     "font-size=\"11\" text-anchor=\"end\">%s</text>",
                     left, y, left + cellw * fr->ncells, y, left - 6, y + 4, b);
    }
    for (c = 0; c < fr->ncells; c++) {
      const struct mg_rp_cell *cell = &fr->cells[c];
      double slot = (cellw - 30) / nv, x = left + c * cellw + 15;
      mg_rp_w_printf(w,
                     "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" "
                     "text-anchor=\"middle\">",
                     left + c * cellw + cellw / 2, y0 + ph + 16);
      esc(w, cell->label);
      mg_rp_w_puts(w, "</text>");
      for (a = 0; a < fr->narms; a++) {
        const struct mg_rp_cell_arm *ca = &cell->arms[a];
        double cx = x + slot / 2, v;
        if (fr->v[a].requests == 0)
          continue;
        x += slot;
        v = m < 0 ? ca->p95 : ca->value[m];
        if (!isfinite(v))
          continue;
        if (m < 0) {
          double bh = ph * v / max;
          mg_rp_w_printf(w,
                         "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                         "height=\"%.1f\" fill=\"%s\"/>",
                         cx - slot * 0.35, y0 + ph - bh, slot * 0.7, bh,
                         colour(fr, a));
        } else {
          double lo = v - MG_STATS_Z95 * ca->se[m];
          double hi = v + MG_STATS_Z95 * ca->se[m];
          if (!isfinite(lo))
            lo = hi = v;
          lo = lo < 0 ? 0 : lo;
          hi = hi > max ? max : hi;
          mg_rp_w_printf(w,
                         "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" "
                         "y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>"
                         "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" "
                         "fill=\"%s\"/>",
                         cx, y0 + ph - ph * lo / max, cx,
                         y0 + ph - ph * hi / max, colour(fr, a), cx,
                         y0 + ph - ph * v / max, colour(fr, a));
        }
      }
    }
    mg_rp_w_puts(w, "</g>");
  }
  mg_rp_w_puts(w, "</svg>\n");
}

/* ---- sections ----------------------------------------------------------- */

/* The input axis as a table that fits a laptop screen: one row per cell
 * and variant with the figures, and under each treatment a full-width row
 * with its differences against the control (wrapping as it must). */
static void axis_table(struct mg_rp_w *w, const struct mg_rp_flag_report *fr,
                       size_t fi) {
  char b[2][32], col[MG_RP_CELL_COLS][32];
  uint32_t c, a;
  int m;

  mg_rp_w_printf(w,
                 "<table id=\"axis-table-%zu\" class=\"input-axis\"><tr>"
                 "<th class=\"l\">cell</th><th class=\"l\">variant</th>"
                 "<th>units</th><th>requests</th><th>error</th>"
                 "<th>fallback</th><th>low-conf</th><th>conf</th>"
                 "<th>p50 ms</th><th>p95 ms</th><th>prompt tok.</th>"
                 "<th>compl. tok.</th></tr>",
                 fi);
  for (c = 0; c < fr->ncells; c++) {
    const struct mg_rp_cell *cell = &fr->cells[c];
    bool first = true;
    for (a = 0; a < fr->narms; a++) {
      const struct mg_rp_cell_arm *ca = &cell->arms[a];
      bool worse = false;
      if (fr->v[a].requests == 0)
        continue;
      for (m = 0; m < MG_RP_CELL_METRICS; m++)
        worse |= ca->flagged[m];
      mg_rp_w_printf(w, "<tr class=\"%s%s\"><td class=\"l\">",
                     first ? "cell-first" : "cell-next",
                     worse ? " worse" : "");
      if (first)
        esc(w, cell->label);
      first = false;
      mg_rp_w_puts(w, "</td><td class=\"l\">");
      swatch(w, fr, a);
      esc(w, fr->v[a].name);
      if (a == fr->control)
        mg_rp_w_puts(w, " <em>(control)</em>");
      mg_rp_cell_cols(ca, col);
      mg_rp_w_printf(
          w,
          "</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>"
          "<td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>",
          col[0], col[1], col[2], col[3], col[4], col[5], col[6], col[7],
          col[8], col[9]);
      if (!ca->has_cmp)
        continue;
      mg_rp_w_printf(w, "<tr class=\"vs%s\"><td></td><td class=\"l wrap\" "
                        "colspan=\"11\">vs control: ",
                     worse ? " worse" : "");
      for (m = 0; m < MG_RP_CELL_METRICS; m++) {
        mg_rp_w_printf(w, "%s<span class=\"d%s\">%s %s ", m ? ", " : "",
                       ca->flagged[m] ? " flagged" : "",
                       mg_rp_metrics[m].abbr,
                       mg_rp_fmt_diff(b[0], 32, m, ca->cmp[m].diff));
        if (ca->cmp[m].undefined)
          mg_rp_w_printf(w, "(no test: %s)", ca->cmp[m].undefined);
        else
          mg_rp_w_printf(w, "(p %s)%s", mg_rp_fmt_p(b[1], 32, ca->cmp[m].p),
                         ca->flagged[m] ? " worse" : "");
        mg_rp_w_puts(w, "</span>");
      }
      mg_rp_w_puts(w, "</td></tr>");
    }
  }
  mg_rp_w_puts(w, "</table>\n");
}

static void checks(struct mg_rp_w *w, const struct mg_rp_flag_report *fr) {
  char b[4][32];
  uint32_t a;

  mg_rp_w_puts(w, "<h3>Checks</h3><table class=\"checks\"><tr>"
                  "<th class=\"l\">variant</th><th>units (SRM)</th>"
                  "<th>seen share</th><th>expected share</th>"
                  "<th>heavy units</th><th>requests/unit mean</th>"
                  "<th>p50</th><th>p90</th><th>p99</th>"
                  "<th>heavy users' share of requests</th></tr>");
  for (a = 0; a < fr->narms; a++) {
    const struct mg_rp_variant *v = &fr->v[a];
    uint64_t tot = 0;
    uint32_t i;
    for (i = 0; i < fr->narms; i++)
      tot += fr->v[i].srm_units;
    mg_rp_w_puts(w, "<tr><td class=\"l\">");
    swatch(w, fr, a);
    esc(w, v->name);
    mg_rp_w_printf(w,
                   "</td><td>%s</td><td>%.2f%%</td><td>%.2f%%</td>"
                   "<td>%s (%.1f%%)</td><td>%.1f</td><td>%.0f</td>"
                   "<td>%.0f</td><td>%.0f</td><td>%.1f%%</td></tr>",
                   mg_rp_fmt_count(b[0], 32, v->srm_units),
                   tot ? 100.0 * (double)v->srm_units / (double)tot : 0.0,
                   100 * v->srm_expected, mg_rp_fmt_count(b[1], 32, v->heavy),
                   v->units ? 100.0 * (double)v->heavy / (double)v->units : 0,
                   isnan(v->rpu_mean) ? 0 : v->rpu_mean,
                   isnan(v->rpu_p50) ? 0 : v->rpu_p50,
                   isnan(v->rpu_p90) ? 0 : v->rpu_p90,
                   isnan(v->rpu_p99) ? 0 : v->rpu_p99,
                   isnan(v->heavy_requests) ? 0 : 100 * v->heavy_requests);
  }
  mg_rp_w_puts(w, "</table><ul>");
  if (fr->srm_tested)
    mg_rp_w_printf(w,
                   "<li>Sample ratio: <span class=\"%s\">%s</span>, "
                   "chi-square %.2f, df %.0f, p = %s.</li>",
                   fr->srm_alarm ? "alarm" : "ok",
                   fr->srm_alarm ? "mismatch" : "ok", fr->srm_chi2, fr->srm_df,
                   mg_rp_fmt_p(b[2], 32, fr->srm_p));
  else
    mg_rp_w_printf(w, "<li>Sample ratio: not tested (%s).</li>", fr->srm_note);
  if (fr->bal_tested)
    mg_rp_w_printf(w,
                   "<li>Cohort balance: <span class=\"%s\">%s</span>; heavy "
                   "users are the top 5%% of %s units by requests (&ge; "
                   "%" PRIu64 " requests); chi-square %.2f, df %.0f, "
                   "p = %s.</li>",
                   fr->bal_alarm ? "alarm" : "ok",
                   fr->bal_alarm ? "heavy users cluster" : "ok",
                   mg_rp_fmt_count(b[0], 32, fr->bal_units),
                   fr->heavy_min_requests, fr->bal_chi2, fr->bal_df,
                   mg_rp_fmt_p(b[2], 32, fr->bal_p));
  else
    mg_rp_w_printf(w, "<li>Cohort balance: not tested (%s).</li>",
                   fr->bal_note);
  if (fr->switched_units)
    mg_rp_w_printf(w, "<li>Units seen in more than one variant: %s.</li>",
                   mg_rp_fmt_count(b[0], 32, fr->switched_units));
  mg_rp_w_puts(w, "</ul>\n");
}

static void flag(struct mg_rp_w *w, const struct mg_rp_flag_report *fr,
                 size_t fi) {
  const struct mg_rp_flag *f = fr->src;
  char b[2][32];
  double ymax = 0;
  uint32_t a, i, k;

  mg_rp_w_printf(w, "<section class=\"flag\" id=\"flag-%zu\"><h2>flag ", fi);
  esc(w, f->name);
  mg_rp_w_puts(w, "</h2><p class=\"meta\">");
  if (fr->control != MG_RP_NONE) {
    mg_rp_w_puts(w, "Control: <b>");
    esc(w, fr->v[fr->control].name);
    mg_rp_w_puts(w, "</b> (");
    esc(w, fr->control_source);
    mg_rp_w_puts(w, fr->control_option_missing
                        ? "; --control names no variant of this flag)"
                        : ")");
  } else {
    mg_rp_w_puts(w, "No control: no rollout records");
  }
  mg_rp_w_printf(w, ". Records: %s, rollout (randomized): %s.",
                 mg_rp_fmt_count(b[0], 32, fr->records),
                 mg_rp_fmt_count(b[1], 32, fr->rollout));
  for (i = 0; i < f->nwsets; i++) {
    const struct mg_rp_wset *ws = &f->wsets[i];
    mg_rp_w_puts(w, i ? "<br>" : "<br>Weights: ");
    for (k = 0; k < ws->n; k++) {
      mg_rp_w_puts(w, k ? ", " : "");
      esc(w, f->arms[ws->arm[k]].name);
      mg_rp_w_printf(w, " %g%%", ws->bp[k] / 100.0);
    }
    mg_rp_w_printf(w, " in %s rollout records",
                   mg_rp_fmt_count(b[0], 32, ws->records));
    if (ws->first_ts[0]) {
      mg_rp_w_puts(w, " (");
      esc(w, ws->first_ts);
      mg_rp_w_puts(w, " &ndash; ");
      esc(w, ws->last_ts);
      mg_rp_w_puts(w, ")");
    }
    if ((int)i == fr->modal_wset && f->nwsets > 1)
      mg_rp_w_puts(w, " &larr; most common, used for the sample ratio");
  }
  mg_rp_w_puts(w, "<br>Records by reason: ");
  for (i = 0; i < f->nreasons; i++) {
    mg_rp_w_puts(w, i ? "; " : "");
    esc(w, f->arms[f->reasons[i].arm].name);
    mg_rp_w_puts(w, " ");
    esc(w, f->reasons[i].reason);
    mg_rp_w_printf(w, " %s", mg_rp_fmt_count(b[0], 32, f->reasons[i].n));
  }
  mg_rp_w_puts(w, ".");
  {
    char t[1024];
    mg_rp_unit_sources_text(fr, t, sizeof(t));
    if (t[0]) {
      mg_rp_w_puts(w, "<br><span class=\"unit-sources\">");
      esc(w, t);
      mg_rp_w_puts(w, ".</span>");
    }
    mg_rp_names_text(&f->endpoints, t, sizeof(t));
    if (t[0]) {
      mg_rp_w_puts(w, "<br>Endpoints (rollout records): ");
      esc(w, t);
      mg_rp_w_puts(w, ".");
    }
  }
  mg_rp_w_puts(w, "</p>\n");
  if (fr->rollout == 0) {
    mg_rp_w_puts(w, "<p>No rollout records: nothing randomized to compare."
                    "</p></section>\n");
    return;
  }
  mg_rp_w_puts(w, "<h3>Per variant</h3>");
  metrics_table(w, fr);
  if (fr->control != MG_RP_NONE) {
    mg_rp_w_puts(w, "<h3>Against the control</h3>");
    comparison_table(w, fr);
    diffs_chart(w, fr, fi);
  }
  quality(w, fr, fi);
  mg_rp_w_puts(w, "<h3>Rates with 95% intervals</h3>");
  rates_chart(w, fr, fi);
  mg_rp_w_puts(w, "<h3>Latency distributions</h3><div class=\"charts\">");
  for (a = 0; a < fr->narms; a++)
    for (i = 0; i < MG_RP_HIST_BINS && fr->v[a].requests; i++) {
      double s = (double)fr->v[a].hist[i] / (double)fr->v[a].requests;
      if (s > ymax)
        ymax = s;
    }
  for (a = 0; a < fr->narms; a++)
    if (fr->v[a].requests)
      latency_chart(w, fr, fi, a, ymax);
  mg_rp_w_puts(w, "</div>");
  checks(w, fr);
  if (fr->ncells) {
    mg_rp_w_printf(w,
                   "<h3>Input axis</h3><p class=\"meta\">input.chars "
                   "quartiles of this flag's rollout records: %.0f / %.0f / "
                   "%.0f; tool counts 0, 1&ndash;2, 3+. Shaded: a treatment "
                   "worse than the control with a Bonferroni-adjusted "
                   "p &lt; 0.01 over %u comparisons.</p>",
                   fr->chars_edges[0], fr->chars_edges[1], fr->chars_edges[2],
                   fr->cell_tests);
    axis_chart(w, fr, fi);
    axis_table(w, fr, fi);
  }
  mg_rp_w_puts(w, "</section>\n");
}

static void pairs(struct mg_rp_w *w, const struct mg_rp_report *r) {
  char b[4][32];
  size_t i, k;

  if (r->npairs == 0)
    return;
  mg_rp_w_puts(w, "<section id=\"cross-flag\"><h2>Cross-flag co-assignment"
                  "</h2><p class=\"meta\">Units seen in both flags' "
                  "rollouts; every treatment of one flag against every "
                  "treatment of the other. Independent assignment puts about "
                  "shared &times; share A &times; share B units in both; the "
                  "odds ratio is 1 then, whatever the shares, and infinite "
                  "for a perfect overlap. Pearson's chi-square, or Fisher's "
                  "exact test when an expected count is below 5; alarm at "
                  "p &lt; 0.001 with an odds ratio &ge; 2 or &le; 0.5.</p>"
                  "<table class=\"cross-flag\"><tr><th class=\"l\">flags</th>"
                  "<th class=\"l\">treatments</th><th>shared units</th>"
                  "<th>in both</th><th>expected</th><th>odds ratio "
                  "(95% CI)</th><th>phi</th><th class=\"l\">test</th>"
                  "<th>p</th><th class=\"l\">verdict</th></tr>");
  for (i = 0; i < r->npairs; i++) {
    const struct mg_rp_pair *p = &r->pairs[i];
    const struct mg_rp_flag_report *fa = &r->flags[p->a], *fb = &r->flags[p->b];
    for (k = 0; k < p->nt || (k == 0 && p->nt == 0); k++) {
      const struct mg_rp_copair *t = p->nt ? &p->t[k] : NULL;
      mg_rp_w_puts(w, "<tr><td class=\"l\">");
      if (k == 0) {
        esc(w, fa->src->name);
        mg_rp_w_puts(w, " &times; ");
        esc(w, fb->src->name);
      }
      mg_rp_w_puts(w, "</td><td class=\"l\">");
      if (t == NULL) {
        mg_rp_w_printf(w, "</td><td>%s</td><td colspan=\"7\" class=\"l\">"
                          "no treatment with records in both</td></tr>",
                       mg_rp_fmt_count(b[0], 32, p->common));
        continue;
      }
      esc(w, fa->v[t->arm_a].name);
      mg_rp_w_puts(w, " &times; ");
      esc(w, fb->v[t->arm_b].name);
      mg_rp_w_printf(w, "</td><td>%s</td><td>%s</td><td>%.1f</td>",
                     mg_rp_fmt_count(b[0], 32, p->common),
                     mg_rp_fmt_count(b[1], 32, t->both),
                     isnan(t->expected) ? 0 : t->expected);
      if (t->test == NULL) {
        mg_rp_w_puts(w, "<td colspan=\"5\" class=\"l\">not tested: ");
        esc(w, t->note ? t->note : "");
        mg_rp_w_puts(w, "</td></tr>");
        continue;
      }
      mg_rp_w_printf(w,
                     "<td>%.3g (%.3g &ndash; %.3g)</td><td>%.3f</td>"
                     "<td class=\"l\">%s</td><td>%s</td>"
                     "<td class=\"l %s\">%s</td></tr>",
                     t->odds_ratio, t->or_lo, t->or_hi, t->phi, t->test,
                     mg_rp_fmt_p(b[2], 32, t->p), t->alarm ? "alarm" : "ok",
                     t->alarm ? "not independent" : "ok");
    }
  }
  mg_rp_w_puts(w, "</table></section>\n");
}

int mg_rp_render_html(const struct mg_rp_report *r, struct mg_buf *out) {
  struct mg_rp_w w = {out, 0};
  size_t i;

  head(&w, r);
  for (i = 0; i < r->nflags; i++)
    if (r->flags[i].shown)
      flag(&w, &r->flags[i], i);
  pairs(&w, r);
  mg_rp_w_puts(&w, "<section id=\"method\"><h2>Method</h2><p "
                   "class=\"method\">");
  esc(&w, mg_rp_method_text);
  mg_rp_w_puts(&w, "</p></section></body></html>\n");
  return w.err;
}
