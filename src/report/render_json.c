/* render_json.c - the report as one JSON document. The structure is stable:
 * fields are added, never renamed or removed, without raising "version".
 * Numbers that are undefined (no data, fewer than two units, no test) are
 * null. docs/report.md ("JSON") has the whole structure; in short:
 *
 * {"report": "modelgate.report", "version": 1,
 *  "inputs": {files, line and record counts, feedback_lines,
 *             feedback_joined, feedback_not_randomized, feedback_orphans,
 *             feedback_superseded, instances, clients, malformed examples,
 *             events},
 *  "alarms": [{check, flag, variant, metric, other_flag, cells, p,
 *              message}],
 *  "flags": [{name, control, unit_sources, endpoints, decide, weights,
 *             reasons,
 *             "variants": [{name, units, requests, metrics{METRIC},
 *                           latency_ms, tokens, no_unit_records, cost,
 *                           feedback{NAME}, verdict, vs_control{METRIC:
 *                           {diff, se, z, p, df, undefined, relative,
 *                           ci}}, requests_per_unit, heavy units}],
 *             checks{srm, balance}, input_axis{cells}}],
 *  "cross_flag": [{flags, shared_units, ..., treatment_pairs: [{a, b,
 *                  both, a_only, b_only, neither, expected_both,
 *                  odds_ratio, odds_ratio_ci, phi, test, note, chi2, p,
 *                  alarm}]}],
 *  "method": str}
 *
 * METRIC: error_rate, fallback_rate, low_confidence_rate, mean_confidence,
 * mean_latency_ms, prompt_tokens, completion_tokens, cost_per_request,
 * cost_per_success, feedback_coverage. Rates are fractions (0.021). */
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "report/render.h"

static void key(struct mg_rp_w *w, const char *k) {
  mg_rp_w_json_str(w, k);
  mg_rp_w_puts(w, ":");
}

static void kv_num(struct mg_rp_w *w, const char *k, double v, bool comma) {
  key(w, k);
  mg_rp_w_json_num(w, v);
  if (comma)
    mg_rp_w_puts(w, ",");
}

static void kv_int(struct mg_rp_w *w, const char *k, uint64_t v, bool comma) {
  key(w, k);
  mg_rp_w_printf(w, "%" PRIu64 "%s", v, comma ? "," : "");
}

static void kv_bool(struct mg_rp_w *w, const char *k, bool v, bool comma) {
  key(w, k);
  mg_rp_w_printf(w, "%s%s", v ? "true" : "false", comma ? "," : "");
}

static void kv_str(struct mg_rp_w *w, const char *k, const char *v,
                   bool comma) {
  key(w, k);
  if (v)
    mg_rp_w_json_str(w, v);
  else
    mg_rp_w_puts(w, "null");
  if (comma)
    mg_rp_w_puts(w, ",");
}

static void ci(struct mg_rp_w *w, double lo, double hi) {
  key(w, "ci");
  mg_rp_w_puts(w, "[");
  mg_rp_w_json_num(w, lo);
  mg_rp_w_puts(w, ",");
  mg_rp_w_json_num(w, hi);
  mg_rp_w_puts(w, "]");
}

/* "key":{"name":count,...,"(others)":n}, with a comma. */
static void names(struct mg_rp_w *w, const char *k,
                  const struct mg_rp_names *t) {
  uint32_t i;
  key(w, k);
  mg_rp_w_puts(w, "{");
  for (i = 0; i < t->count; i++)
    kv_int(w, t->name[i], t->n[i], i + 1 < t->count || t->other);
  if (t->other)
    kv_int(w, "(others)", t->other, false);
  mg_rp_w_puts(w, "},");
}

static void diff_obj(struct mg_rp_w *w, const struct mg_stats_diff *d) {
  mg_rp_w_puts(w, "{");
  kv_num(w, "diff", d->diff, true);
  kv_num(w, "se", d->se, true);
  kv_num(w, "z", d->z, true);
  kv_num(w, "p", d->p, true);
  kv_num(w, "df", d->df, true);
  kv_str(w, "undefined", d->undefined, true);
  kv_num(w, "relative", d->rel, true);
  ci(w, d->lo, d->hi);
  mg_rp_w_puts(w, "}");
}

static const char *status_key(enum mg_decide_status s) {
  return s == MG_DECIDE_HOLDS      ? "holds"
         : s == MG_DECIDE_UNCLEAR  ? "unclear"
         : s == MG_DECIDE_BREACHED ? "breached"
                                   : "unknown";
}

static void verdict(struct mg_rp_w *w, const struct mg_rp_flag_report *fr,
                    const struct mg_rp_variant *v) {
  int g;
  key(w, "verdict");
  if (!v->has_verdict) {
    mg_rp_w_puts(w, "null,");
    return;
  }
  mg_rp_w_puts(w, "{");
  kv_str(w, "verdict", v->verdict.label, true);
  kv_str(w, "metric", fr->decide->metric, true);
  kv_num(w, "lift", v->verdict.lift, true);
  key(w, "lift_ci");
  mg_rp_w_puts(w, "[");
  mg_rp_w_json_num(w, v->verdict.lift_lo);
  mg_rp_w_puts(w, ",");
  mg_rp_w_json_num(w, v->verdict.lift_hi);
  mg_rp_w_puts(w, "],");
  kv_num(w, "min_lift", fr->decide->min_lift, true);
  kv_num(w, "alpha", fr->decide->alpha, true);
  kv_num(w, "units_needed", v->verdict.units_needed, true);
  mg_rp_w_puts(w, "\"guardrails\":{");
  {
    bool first = true;
    for (g = 0; g < MG_DECIDE_NGUARDS; g++) {
      if (!fr->decide->guard[g].set)
        continue;
      if (!first)
        mg_rp_w_puts(w, ",");
      first = false;
      key(w, mg_decide_guard_names[g]);
      mg_rp_w_puts(w, "{");
      kv_str(w, "max_increase",
             isnan(fr->decide->guard[g].max_increase)
                 ? NULL
                 : status_key(v->verdict.increase[g]),
             true);
      kv_str(w, "max_ratio",
             isnan(fr->decide->guard[g].max_ratio)
                 ? NULL
                 : status_key(v->verdict.ratio[g]),
             false);
      mg_rp_w_puts(w, "}");
    }
  }
  mg_rp_w_puts(w, "},");
  kv_str(w, "evidence", v->verdict.evidence, false);
  mg_rp_w_puts(w, "},");
}

/* Each feedback metric of one variant. */
static void feedback(struct mg_rp_w *w, const struct mg_rp_flag_report *fr,
                     uint32_t a) {
  uint32_t k;
  mg_rp_w_puts(w, "\"feedback\":{");
  for (k = 0; k < fr->nfbm; k++) {
    const struct mg_rp_fb_metric_report *m = &fr->fbm[k];
    const struct mg_rp_fb_arm *fa = &m->arms[a];
    if (k)
      mg_rp_w_puts(w, ",");
    key(w, m->name);
    mg_rp_w_puts(w, "{");
    kv_str(w, "type", m->boolean ? "boolean" : "float", true);
    kv_bool(w, "declared", m->declared, true);
    kv_bool(w, "higher_is_better", m->higher_is_better, true);
    kv_int(w, "lines", fa->lines, true);
    kv_int(w, "units", fa->units, true);
    kv_num(w, "value", fa->value, true);
    kv_num(w, "se", fa->se, true);
    key(w, "vs_control");
    if (fa->has_cmp)
      diff_obj(w, &fa->cmp);
    else
      mg_rp_w_puts(w, "null");
    mg_rp_w_puts(w, "}");
  }
  mg_rp_w_puts(w, "},");
}

static void inputs(struct mg_rp_w *w, const struct mg_rp_log *log) {
  size_t i;
  mg_rp_w_puts(w, "\"inputs\":{\"files\":[");
  for (i = 0; i < log->nfiles; i++) {
    if (i)
      mg_rp_w_puts(w, ",");
    mg_rp_w_json_str(w, log->files[i]);
  }
  mg_rp_w_puts(w, "],");
  kv_int(w, "bytes", log->bytes, true);
  kv_int(w, "lines", log->lines, true);
  kv_int(w, "blank_lines", log->blank, true);
  kv_int(w, "records", log->records, true);
  kv_int(w, "event_lines", log->event_lines, true);
  kv_int(w, "unflagged_records", log->unflagged, true);
  kv_int(w, "malformed_lines", log->malformed, true);
  kv_int(w, "feedback_lines", log->fb_lines, true);
  kv_int(w, "feedback_joined", log->fb_matched, true);
  kv_int(w, "feedback_not_randomized", log->fb_not_rollout, true);
  kv_int(w, "feedback_orphans", log->fb_orphans, true);
  kv_int(w, "feedback_superseded", log->fb_superseded, true);
  kv_int(w, "feedback_unknown_metric_lines", log->fb_metric_overflow, true);
  kv_int(w, "duplicate_decision_ids", log->duplicate_ids, true);
  names(w, "instances", &log->instances);
  names(w, "clients", &log->clients);
  mg_rp_w_puts(w, "\"malformed_examples\":[");
  for (i = 0; i < log->nbad; i++) {
    mg_rp_w_puts(w, i ? ",{" : "{");
    kv_str(w, "file", log->bad[i].file, true);
    kv_int(w, "line", log->bad[i].line, true);
    kv_str(w, "why", log->bad[i].why, false);
    mg_rp_w_puts(w, "}");
  }
  mg_rp_w_puts(w, "],\"events\":[");
  for (i = 0; i < log->nevents; i++) {
    mg_rp_w_puts(w, i ? ",{" : "{");
    kv_str(w, "event", log->events[i].name, true);
    kv_str(w, "flag", log->events[i].flag[0] ? log->events[i].flag : NULL,
           true);
    kv_int(w, "count", log->events[i].n, false);
    mg_rp_w_puts(w, "}");
  }
  mg_rp_w_puts(w, "]}");
}

static void alarms(struct mg_rp_w *w, const struct mg_rp_report *r) {
  size_t i;
  mg_rp_w_puts(w, "\"alarms\":[");
  for (i = 0; i < r->nalarms; i++) {
    const struct mg_rp_alarm *a = &r->alarms[i];
    mg_rp_w_puts(w, i ? ",{" : "{");
    kv_str(w, "check", a->check, true);
    kv_str(w, "flag", a->flag, true);
    kv_str(w, "variant", a->variant, true);
    kv_str(w, "metric", a->metric, true);
    kv_str(w, "other_flag", a->other_flag, true);
    key(w, "cells");
    if (a->cells == NULL) {
      mg_rp_w_puts(w, "null,");
    } else {
      size_t c;
      mg_rp_w_puts(w, "[");
      for (c = 0; c < a->ncells; c++) {
        if (c)
          mg_rp_w_puts(w, ",");
        mg_rp_w_json_str(w, a->cells[c]);
      }
      mg_rp_w_puts(w, "],");
    }
    kv_num(w, "p", a->p, true);
    kv_str(w, "message", a->text, false);
    mg_rp_w_puts(w, "}");
  }
  mg_rp_w_puts(w, "]");
}

static void weights(struct mg_rp_w *w, const struct mg_rp_flag_report *fr) {
  const struct mg_rp_flag *f = fr->src;
  uint32_t i, k;
  mg_rp_w_puts(w, "\"weights\":[");
  for (i = 0; i < f->nwsets; i++) {
    const struct mg_rp_wset *ws = &f->wsets[i];
    mg_rp_w_puts(w, i ? ",{\"weights\":{" : "{\"weights\":{");
    for (k = 0; k < ws->n; k++) {
      if (k)
        mg_rp_w_puts(w, ",");
      kv_num(w, f->arms[ws->arm[k]].name, ws->bp[k] / 100.0, false);
    }
    mg_rp_w_puts(w, "},");
    kv_int(w, "records", ws->records, true);
    kv_str(w, "first_ts", ws->first_ts[0] ? ws->first_ts : NULL, true);
    kv_str(w, "last_ts", ws->last_ts[0] ? ws->last_ts : NULL, true);
    kv_bool(w, "most_common", (int)i == fr->modal_wset, false);
    mg_rp_w_puts(w, "}");
  }
  mg_rp_w_puts(w, "],\"reasons\":[");
  for (i = 0; i < f->nreasons; i++) {
    mg_rp_w_puts(w, i ? ",{" : "{");
    kv_str(w, "variant", f->arms[f->reasons[i].arm].name, true);
    kv_str(w, "reason", f->reasons[i].reason, true);
    kv_int(w, "records", f->reasons[i].n, false);
    mg_rp_w_puts(w, "}");
  }
  mg_rp_w_puts(w, "],");
}

static void variant(struct mg_rp_w *w, const struct mg_rp_flag_report *fr,
                    const struct mg_rp_variant *v) {
  int m, b;
  mg_rp_w_puts(w, "{");
  kv_str(w, "name", v->name, true);
  kv_bool(w, "control", v->control, true);
  kv_int(w, "records", v->records, true);
  kv_int(w, "units", v->units, true);
  kv_int(w, "requests", v->requests, true);
  mg_rp_w_puts(w, "\"metrics\":{");
  for (m = 0; m < MG_RP_NMETRICS; m++) {
    key(w, mg_rp_metrics[m].key);
    mg_rp_w_puts(w, "{");
    kv_num(w, "value", v->value[m], true);
    kv_num(w, "se", v->se[m], true);
    ci(w, v->value[m] - MG_STATS_Z95 * v->se[m],
       v->value[m] + MG_STATS_Z95 * v->se[m]);
    mg_rp_w_puts(w, m + 1 < MG_RP_NMETRICS ? "}," : "}");
  }
  mg_rp_w_puts(w, "},\"latency_ms\":{");
  kv_num(w, "p50", v->p50, true);
  kv_num(w, "p95", v->p95, true);
  kv_num(w, "p99", v->p99, true);
  mg_rp_w_puts(w, "\"histogram\":{");
  kv_num(w, "log10_lo", fr->hist_lo, true);
  kv_num(w, "log10_hi", fr->hist_hi, true);
  mg_rp_w_puts(w, "\"counts\":[");
  for (b = 0; b < MG_RP_HIST_BINS; b++)
    mg_rp_w_printf(w, "%s%" PRIu64, b ? "," : "", v->hist[b]);
  mg_rp_w_puts(w, "]}},\"tokens\":{");
  kv_int(w, "requests", v->tok_n, true);
  kv_int(w, "prompt", v->tok_prompt, true);
  kv_int(w, "completion", v->tok_completion, true);
  {
    const struct mg_rp_arm *arm = &fr->src->arms[v - fr->v];
    kv_int(w, "cached", arm->tok_cached, true);
    kv_int(w, "reasoning", arm->tok_reasoning, true);
    kv_int(w, "cache_read", arm->tok_cache_read, true);
    kv_int(w, "cache_write", arm->tok_cache_write, false);
    mg_rp_w_puts(w, "},");
    kv_int(w, "no_unit_records", arm->no_unit, true);
  }
  mg_rp_w_puts(w, "\"cost\":{");
  kv_num(w, "total", v->cost_total, true);
  kv_num(w, "per_request", v->value[MG_RP_M_COST], true);
  kv_num(w, "per_success", v->value[MG_RP_M_COST_OK], false);
  mg_rp_w_puts(w, "},");
  feedback(w, fr, (uint32_t)(v - fr->v));
  verdict(w, fr, v);
  mg_rp_w_puts(w, "\"vs_control\":");
  if (!v->has_cmp) {
    mg_rp_w_puts(w, "null,");
  } else {
    mg_rp_w_puts(w, "{");
    for (m = 0; m < MG_RP_NMETRICS; m++) {
      key(w, mg_rp_metrics[m].key);
      diff_obj(w, &v->cmp[m]);
      if (m + 1 < MG_RP_NMETRICS)
        mg_rp_w_puts(w, ",");
    }
    mg_rp_w_puts(w, "},");
  }
  mg_rp_w_puts(w, "\"requests_per_unit\":{");
  kv_num(w, "mean", v->rpu_mean, true);
  kv_num(w, "p50", v->rpu_p50, true);
  kv_num(w, "p90", v->rpu_p90, true);
  kv_num(w, "p99", v->rpu_p99, false);
  mg_rp_w_puts(w, "},");
  kv_int(w, "heavy_units", v->heavy, true);
  kv_num(w, "heavy_request_share", v->heavy_requests, false);
  mg_rp_w_puts(w, "}");
}

static void checks(struct mg_rp_w *w, const struct mg_rp_flag_report *fr) {
  uint32_t a;
  mg_rp_w_puts(w, "\"checks\":{\"srm\":{");
  kv_bool(w, "tested", fr->srm_tested, true);
  kv_str(w, "note", fr->srm_note, true);
  kv_num(w, "chi2", fr->srm_tested ? fr->srm_chi2 : NAN, true);
  kv_num(w, "df", fr->srm_tested ? fr->srm_df : NAN, true);
  kv_num(w, "p", fr->srm_tested ? fr->srm_p : NAN, true);
  kv_bool(w, "alarm", fr->srm_alarm, true);
  mg_rp_w_puts(w, "\"units\":{");
  for (a = 0; a < fr->narms; a++)
    kv_int(w, fr->v[a].name, fr->v[a].srm_units, a + 1 < fr->narms);
  mg_rp_w_puts(w, "},\"expected_share\":{");
  for (a = 0; a < fr->narms; a++)
    kv_num(w, fr->v[a].name, fr->v[a].srm_expected, a + 1 < fr->narms);
  mg_rp_w_puts(w, "}},\"balance\":{");
  kv_bool(w, "tested", fr->bal_tested, true);
  kv_str(w, "note", fr->bal_note, true);
  kv_int(w, "units", fr->bal_units, true);
  kv_num(w, "heavy_share", MG_RP_HEAVY_SHARE, true);
  kv_int(w, "heavy_units", fr->heavy_units, true);
  kv_int(w, "heavy_min_requests", fr->heavy_min_requests, true);
  kv_num(w, "chi2", fr->bal_tested ? fr->bal_chi2 : NAN, true);
  kv_num(w, "df", fr->bal_tested ? fr->bal_df : NAN, true);
  kv_num(w, "p", fr->bal_tested ? fr->bal_p : NAN, true);
  kv_bool(w, "alarm", fr->bal_alarm, false);
  mg_rp_w_puts(w, "}},");
}

static void cells(struct mg_rp_w *w, const struct mg_rp_flag_report *fr) {
  uint32_t c, a;
  int m;
  mg_rp_w_puts(w, "\"input_axis\":{\"chars_quartiles\":[");
  for (c = 0; c < 3; c++) {
    if (c)
      mg_rp_w_puts(w, ",");
    mg_rp_w_json_num(w, fr->ncells ? fr->chars_edges[c] : NAN);
  }
  mg_rp_w_puts(w, "],");
  kv_int(w, "tests", fr->cell_tests, true);
  mg_rp_w_puts(w, "\"cells\":[");
  for (c = 0; c < fr->ncells; c++) {
    const struct mg_rp_cell *cell = &fr->cells[c];
    bool chars = cell->axis[0] == 'c';
    int k = 0;
    mg_rp_w_puts(w, c ? ",{" : "{");
    kv_str(w, "axis", cell->axis, true);
    kv_str(w, "label", cell->label, true);
    kv_num(w, "min", chars ? (cell->lo < 0 ? 0 : cell->lo + 1) : cell->lo,
           true);
    kv_num(w, "max", cell->hi, true);
    kv_int(w, "requests", cell->requests, true);
    mg_rp_w_puts(w, "\"variants\":[");
    for (a = 0; a < fr->narms; a++) {
      const struct mg_rp_cell_arm *ca = &cell->arms[a];
      if (fr->v[a].requests == 0)
        continue;
      mg_rp_w_puts(w, k++ ? ",{" : "{");
      kv_str(w, "name", fr->v[a].name, true);
      kv_int(w, "units", ca->units, true);
      kv_int(w, "requests", ca->requests, true);
      for (m = 0; m < MG_RP_CELL_METRICS; m++)
        kv_num(w, mg_rp_metrics[m].key, ca->value[m], true);
      kv_num(w, "latency_p50_ms", ca->p50, true);
      kv_num(w, "latency_p95_ms", ca->p95, true);
      key(w, "vs_control");
      if (!ca->has_cmp) {
        mg_rp_w_puts(w, "null}");
        continue;
      }
      mg_rp_w_puts(w, "{");
      for (m = 0; m < MG_RP_CELL_METRICS; m++) {
        key(w, mg_rp_metrics[m].key);
        mg_rp_w_puts(w, "{");
        kv_num(w, "diff", ca->cmp[m].diff, true);
        kv_num(w, "p", ca->cmp[m].p, true);
        kv_str(w, "undefined", ca->cmp[m].undefined, true);
        kv_num(w, "p_adjusted", ca->p_adj[m], true);
        kv_bool(w, "flagged", ca->flagged[m], true);
        ci(w, ca->cmp[m].lo, ca->cmp[m].hi);
        mg_rp_w_puts(w, m + 1 < MG_RP_CELL_METRICS ? "}," : "}");
      }
      mg_rp_w_puts(w, "}}");
    }
    mg_rp_w_puts(w, "]}");
  }
  mg_rp_w_puts(w, "]}");
}

static void flag(struct mg_rp_w *w, const struct mg_rp_flag_report *fr) {
  uint32_t a;
  mg_rp_w_puts(w, "{");
  kv_str(w, "name", fr->src->name, true);
  kv_str(w, "control",
         fr->control != MG_RP_NONE ? fr->v[fr->control].name : NULL, true);
  kv_str(w, "control_source", fr->control_source, true);
  kv_bool(w, "control_option_ignored", fr->control_option_missing, true);
  kv_int(w, "records", fr->records, true);
  kv_int(w, "rollout_records", fr->rollout, true);
  kv_int(w, "units_in_several_variants", fr->switched_units, true);
  {
    int k;
    mg_rp_w_puts(w, "\"unit_sources\":{");
    for (k = 0; k < MG_RP_NUS; k++)
      kv_int(w, mg_rp_unit_sources[k], fr->src->unit_source[k],
             k + 1 < MG_RP_NUS);
    mg_rp_w_puts(w, "},");
  }
  names(w, "endpoints", &fr->src->endpoints);
  kv_int(w, "feedback_values", fr->fb_lines, true);
  key(w, "decide");
  if (fr->decide) {
    mg_rp_w_puts(w, "{");
    kv_str(w, "metric", fr->decide->metric, true);
    kv_num(w, "min_lift", fr->decide->min_lift, true);
    kv_num(w, "alpha", fr->decide->alpha, true);
    kv_num(w, "power", fr->decide->power, false);
    mg_rp_w_puts(w, "},");
  } else {
    mg_rp_w_puts(w, "null,");
  }
  weights(w, fr);
  mg_rp_w_puts(w, "\"variants\":[");
  for (a = 0; a < fr->narms; a++) {
    if (a)
      mg_rp_w_puts(w, ",");
    variant(w, fr, &fr->v[a]);
  }
  mg_rp_w_puts(w, "],");
  checks(w, fr);
  cells(w, fr);
  mg_rp_w_puts(w, "}");
}

static void pairs(struct mg_rp_w *w, const struct mg_rp_report *r) {
  size_t i, k;
  mg_rp_w_puts(w, "\"cross_flag\":[");
  for (i = 0; i < r->npairs; i++) {
    const struct mg_rp_pair *p = &r->pairs[i];
    mg_rp_w_puts(w, i ? ",{\"flags\":[" : "{\"flags\":[");
    mg_rp_w_json_str(w, r->flags[p->a].src->name);
    mg_rp_w_puts(w, ",");
    mg_rp_w_json_str(w, r->flags[p->b].src->name);
    mg_rp_w_puts(w, "],");
    kv_int(w, "shared_units", p->common, true);
    kv_int(w, "both_treatments", p->both, true);
    kv_int(w, "a_only", p->a_only, true);
    kv_int(w, "b_only", p->b_only, true);
    kv_int(w, "neither", p->neither, true);
    kv_num(w, "expected_both", p->expected, true);
    kv_num(w, "ratio", p->ratio, true);
    kv_bool(w, "tested", p->tested, true);
    kv_num(w, "chi2", p->chi2, true);
    kv_num(w, "p", p->p, true);
    kv_bool(w, "alarm", p->alarm, true);
    mg_rp_w_puts(w, "\"treatment_pairs\":[");
    for (k = 0; k < p->nt; k++) {
      const struct mg_rp_copair *t = &p->t[k];
      mg_rp_w_puts(w, k ? ",{" : "{");
      kv_str(w, "a", r->flags[p->a].v[t->arm_a].name, true);
      kv_str(w, "b", r->flags[p->b].v[t->arm_b].name, true);
      kv_int(w, "both", t->both, true);
      kv_int(w, "a_only", t->a_only, true);
      kv_int(w, "b_only", t->b_only, true);
      kv_int(w, "neither", t->neither, true);
      kv_num(w, "expected_both", t->expected, true);
      kv_num(w, "odds_ratio", t->odds_ratio, true);
      key(w, "odds_ratio_ci");
      mg_rp_w_puts(w, "[");
      mg_rp_w_json_num(w, t->or_lo);
      mg_rp_w_puts(w, ",");
      mg_rp_w_json_num(w, t->or_hi);
      mg_rp_w_puts(w, "],");
      kv_num(w, "phi", t->phi, true);
      kv_str(w, "test", t->test, true);
      kv_str(w, "note", t->note, true);
      kv_num(w, "chi2", t->chi2, true);
      kv_num(w, "p", t->p, true);
      kv_bool(w, "alarm", t->alarm, false);
      mg_rp_w_puts(w, "}");
    }
    mg_rp_w_puts(w, "]}");
  }
  mg_rp_w_puts(w, "]");
}

int mg_rp_render_json(const struct mg_rp_report *r, struct mg_buf *out) {
  struct mg_rp_w w = {out, 0};
  size_t i;
  int k = 0;

  mg_rp_w_puts(&w, "{\"report\":\"modelgate.report\",\"version\":1,");
  inputs(&w, r->log);
  mg_rp_w_puts(&w, ",");
  alarms(&w, r);
  mg_rp_w_puts(&w, ",\"flags\":[");
  for (i = 0; i < r->nflags; i++) {
    if (!r->flags[i].shown)
      continue;
    if (k++)
      mg_rp_w_puts(&w, ",");
    flag(&w, &r->flags[i]);
  }
  mg_rp_w_puts(&w, "],");
  pairs(&w, r);
  mg_rp_w_puts(&w, ",");
  kv_str(&w, "method", mg_rp_method_text, false);
  mg_rp_w_puts(&w, "}\n");
  return w.err;
}
