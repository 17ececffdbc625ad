/* feedback.h - quality signals joined to decisions (DESIGN.md, "Quality
 * signals and cost"; issue 15.1): the config section `feedback`, the
 * validation of one item of `POST /v1/feedback`, and its line in the
 * decision log. Pure: common/ only; the proxy calls it, and so does
 * `modelgate report` to learn each metric's type and direction.
 *
 * Config (every key optional; defaults in brackets):
 *
 *   "feedback": {
 *     "metrics": {                      metric names: [A-Za-z0-9_.-]{1,64}
 *       "accuracy": {"type": "boolean" | "float"   (required)
 *                    "min": 0, "max": 1            (floats only) [0, 1]
 *                    "higher_is_better": true}     [true]
 *     },                                at most MG_FEEDBACK_MAX_METRICS
 *     "max_batch": 100,                 items per request, 1..10000 [100]
 *     "max_bytes": 65536,               body bytes, 64..16777216 [65536]
 *     "rate_per_client": {"per_second": 50, "burst": 200}
 *                                       items per client, a token bucket:
 *                                       per_second 0.01..1e6 [50],
 *                                       burst 1..1e7 [200]
 *   }
 *
 * A feedback line (one per item, written by the proxy):
 *
 *   {"ts":"2026-12-02T10:00:00.000Z","feedback":{"decision_id":"<32 hex>",
 *    "metric":"accuracy","value":true|false|0.73,"unit":"..."|null,
 *    "client":"..."|null,"instance":"..."}} */
#ifndef MG_FEEDBACK_H
#define MG_FEEDBACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/buf.h"
#include "common/cfg.h"

#define MG_FEEDBACK_MAX_METRICS 64
#define MG_FEEDBACK_MAX_NAME 64  /* bytes of a metric name */
#define MG_FEEDBACK_MAX_UNIT 256 /* bytes of an item's "unit" */

enum mg_feedback_type { MG_FEEDBACK_BOOLEAN, MG_FEEDBACK_FLOAT };

struct mg_feedback_metric {
  char *name;                  /* owned */
  enum mg_feedback_type type;
  double min, max;             /* floats: the accepted bounds; booleans 0, 1 */
  bool higher_is_better;
};

struct mg_feedback_config {
  struct mg_feedback_metric *metrics; /* owned: nmetrics, in config order */
  size_t nmetrics;
  uint32_t max_batch;
  uint32_t max_bytes;
  double rate_per_second;
  double rate_burst;
};

/* Parse the "feedback" object sec (NULL: the defaults, no metrics) at JSON
 * path path ("$.feedback") into out. Every error is recorded in e with its
 * path; out is usable (and must be freed) either way. Returns 0, or
 * -EINVAL when errors were recorded, or -ENOMEM. */
int mg_feedback_parse(const cJSON *sec, const char *path,
                      struct mg_feedback_config *out,
                      struct mg_cfg_errors *e) MG_WARN_UNUSED;
void mg_feedback_config_free(struct mg_feedback_config *c);

/* The metric called name, or NULL. */
const struct mg_feedback_metric *
mg_feedback_metric(const struct mg_feedback_config *c, const char *name);

/* One validated item; pointers borrowed from the item and the config. */
struct mg_feedback_item {
  char decision_id[33];                   /* 32 lowercase hex + NUL */
  const struct mg_feedback_metric *metric; /* borrowed from the config */
  double value;                           /* booleans: 0 or 1 */
  const char *unit;                       /* borrowed from the item, or NULL */
};

/* Why an item was refused: an OpenAI-shaped 400. */
struct mg_feedback_error {
  char param[96];    /* the field: "value", or "[3].value" in a batch */
  const char *code;  /* static: "missing_required_parameter", "invalid_type",
                      * "invalid_value", "unknown_metric",
                      * "unknown_parameter" */
  char message[256];
};

/* Validate item (index: its position in a batch array, or -1 for a lone
 * object). 0 and out filled, or -EINVAL and err filled. */
int mg_feedback_validate(const struct mg_feedback_config *c,
                         const cJSON *item, int index,
                         struct mg_feedback_item *out,
                         struct mg_feedback_error *err) MG_WARN_UNUSED;

/* The error as {"error":{"message","type":"invalid_request_error","param",
 * "code"}} appended to out. */
int mg_feedback_error_json(const struct mg_feedback_error *err,
                           struct mg_buf *out) MG_WARN_UNUSED;

/* The item's feedback line (without a newline) appended to out. client:
 * the authenticated client, or NULL; instance: this instance's name. */
int mg_feedback_format(const struct mg_feedback_item *it, int64_t ts_ms,
                       const char *client, const char *instance,
                       struct mg_buf *out) MG_WARN_UNUSED;

/* True when s (n bytes) is 32 lowercase hex digits: a decision id. */
bool mg_feedback_is_decision_id(const char *s, size_t n);

#endif
