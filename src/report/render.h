/* render.h - the three faces of a report: a text table, JSON, and a
 * self-contained HTML page with inline SVG charts. Each renderer appends
 * to a buffer and returns 0, -ENOMEM or -E2BIG. */
#ifndef MG_REPORT_RENDER_H
#define MG_REPORT_RENDER_H

#include "common/buf.h"
#include "report/analysis.h"

/* The default: one screen per flag, alarms first. */
int mg_rp_render_text(const struct mg_rp_report *r,
                      struct mg_buf *out) MG_WARN_UNUSED;
/* The structure documented in render_json.c and docs/report.md. */
int mg_rp_render_json(const struct mg_rp_report *r,
                      struct mg_buf *out) MG_WARN_UNUSED;
/* One HTML document: no scripts, no network, no external assets. */
int mg_rp_render_html(const struct mg_rp_report *r,
                      struct mg_buf *out) MG_WARN_UNUSED;

/* ---- shared by the renderers (render.c) ---------------------------------- */

/* A buffer with a sticky error: renderers write without checking every
 * call and read err once at the end. */
struct mg_rp_w {
  struct mg_buf *b; /* borrowed */
  int err;          /* the first append error, or 0 */
};

void mg_rp_w_printf(struct mg_rp_w *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void mg_rp_w_puts(struct mg_rp_w *w, const char *s);
/* s as a JSON string literal. */
void mg_rp_w_json_str(struct mg_rp_w *w, const char *s);
/* A JSON number with enough digits to round-trip; null for NaN and
 * infinities. */
void mg_rp_w_json_num(struct mg_rp_w *w, double v);
/* s with &, <, >, " and ' escaped for HTML text and attribute values. */
void mg_rp_w_html(struct mg_rp_w *w, const char *s);

/* "N files, N lines: N decision records, N event lines, N malformed lines
 * skipped", plural where due, counts with thousands separators; the
 * opening of the text and HTML reports. */
void mg_rp_w_inputs(struct mg_rp_w *w, const struct mg_rp_log *log);

/* The columns of one variant in one input-axis cell, formatted for people:
 * units, requests, error, fallback, low-conf, confidence, p50 ms, p95 ms,
 * prompt and completion tokens. Shared by the text and HTML tables. */
#define MG_RP_CELL_COLS 10
void mg_rp_cell_cols(const struct mg_rp_cell_arm *ca,
                     char out[MG_RP_CELL_COLS][32]);

/* "units from safety_identifier 81.2%, user 15.0%, none 1.0%; 42 records
 * without a unit (reason no_unit) got the off_variant, not randomized";
 * empty when the records carry no unit_source. Into buf (n bytes). */
void mg_rp_unit_sources_text(const struct mg_rp_flag_report *fr, char *buf,
                             size_t n);
/* "2,000 feedback lines: 1,800 joined to rollout decisions, 50 to
 * decisions not randomized, 100 whose decision is not in these logs, 50
 * superseded by a later line"; empty without feedback. */
void mg_rp_feedback_text(const struct mg_rp_log *log, char *buf, size_t n);
/* "i-0 12,000, i-1 11,000" from a names table. */
void mg_rp_names_text(const struct mg_rp_names *t, char *buf, size_t n);

/* The text of the method footnote, shared by every format. */
extern const char mg_rp_method_text[];

#endif
