/* metrics.h - counters, gauges and histograms rendered in the Prometheus
 * text format (version 0.0.4). A registry is not thread-safe: each worker
 * owns one (telemetry.c locks it), and a scrape merges them. */
#ifndef MG_METRICS_H
#define MG_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

enum mg_metric_type { MG_COUNTER, MG_GAUGE, MG_HISTOGRAM };

struct mg_metrics;
struct mg_series;

struct mg_metrics *mg_metrics_new(void);
void mg_metrics_free(struct mg_metrics *m);

/* Declare a family once (later calls with the same name are no-ops). bounds
 * are the histogram's upper bucket bounds, ascending (copied). */
int mg_metrics_family(struct mg_metrics *m, const char *name, const char *help,
                      enum mg_metric_type type, const double *bounds,
                      size_t nbounds) MG_WARN_UNUSED;

/* The series of a declared family with the given rendered label set
 * (e.g. `route="chat",status="200"`, or "" for none); created on first use.
 * NULL when the family is unknown or memory ran out. */
struct mg_series *mg_metrics_series(struct mg_metrics *m, const char *name,
                                    const char *labels);

/* Hide every series of a gauge family until it is set again: for gauges
 * describing the config in force (its hash, the flags and targets it has),
 * so that what a reload removed stops being exported. */
void mg_metrics_hide(struct mg_metrics *m, const char *name);

void mg_series_add(struct mg_series *s, double v);  /* counters, gauges */
void mg_series_set(struct mg_series *s, double v);  /* gauges */
void mg_series_observe(struct mg_series *s, double v); /* histograms */
double mg_series_value(const struct mg_series *s);

/* Append `name="value"` pairs with Prometheus escaping to out, comma
 * separated, for a NULL-terminated list of name, value, name, value... */
int mg_metrics_labels(struct mg_buf *out, ...) MG_WARN_UNUSED;

/* Add every visible series of src into dst (families are declared in dst
 * as needed): counters and gauges add up, histograms add bucket by bucket.
 * What several workers counted becomes one set of series. */
int mg_metrics_merge(struct mg_metrics *dst,
                     const struct mg_metrics *src) MG_WARN_UNUSED;

/* Render every family. */
int mg_metrics_render(const struct mg_metrics *m,
                      struct mg_buf *out) MG_WARN_UNUSED;

#endif
