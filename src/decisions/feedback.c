/* feedback.c - the feedback config, item validation and lines
 * (feedback.h). */
#include "decisions/feedback.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/time.h"

static bool name_ok(const char *s) {
  size_t n = strlen(s), i;
  if (n == 0 || n > MG_FEEDBACK_MAX_NAME)
    return false;
  for (i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
      return false;
  }
  return true;
}

static int parse_metric(const cJSON *m, const char *path,
                        struct mg_feedback_metric *out,
                        struct mg_cfg_errors *e) {
  static const char *const keys[] = {"type", "min", "max", "higher_is_better",
                                     NULL};
  char p[MG_CFG_PATH_MAX], *type;

  out->type = MG_FEEDBACK_FLOAT;
  out->min = 0;
  out->max = 1;
  out->higher_is_better = true;
  out->name = strdup(m->string);
  if (out->name == NULL)
    return -ENOMEM;
  if (!name_ok(m->string))
    mg_cfg_error(e, path,
                 "a metric name is 1 to 64 letters, digits, '_', '.' or '-'");
  if (!mg_cfg_object(m, path, keys, e))
    return 0;
  if (mg_cfg_require(m, "type", path, e)) {
    type = mg_cfg_str(m, "type", path, "float", true, e);
    mg_cfg_join(p, path, "type");
    if (type && strcmp(type, "boolean") == 0)
      out->type = MG_FEEDBACK_BOOLEAN;
    else if (type && strcmp(type, "float") != 0)
      mg_cfg_error(e, p, "must be \"boolean\" or \"float\", not \"%s\"", type);
    free(type);
  }
  out->higher_is_better =
      mg_cfg_bool(m, "higher_is_better", path, true, e);
  if (out->type == MG_FEEDBACK_BOOLEAN) {
    if (cJSON_GetObjectItemCaseSensitive(m, "min") ||
        cJSON_GetObjectItemCaseSensitive(m, "max")) {
      mg_cfg_join(p, path, "min");
      mg_cfg_error(e, p, "a boolean metric takes no bounds (its values are "
                         "true and false)");
    }
    return 0;
  }
  out->min = mg_cfg_num(m, "min", path, 0, -1e15, 1e15, e);
  out->max = mg_cfg_num(m, "max", path, 1, -1e15, 1e15, e);
  if (!(out->min < out->max)) {
    mg_cfg_join(p, path, "max");
    mg_cfg_error(e, p, "must be greater than min (%g)", out->min);
  }
  return 0;
}

int mg_feedback_parse(const cJSON *sec, const char *path,
                      struct mg_feedback_config *out,
                      struct mg_cfg_errors *e) {
  static const char *const keys[] = {"metrics", "max_batch", "max_bytes",
                                     "rate_per_client", NULL};
  static const char *const rate_keys[] = {"per_second", "burst", NULL};
  const cJSON *metrics, *m, *rate;
  char p[MG_CFG_PATH_MAX], mp[MG_CFG_PATH_MAX];
  size_t before = e->n, n = 0;
  int rc;

  memset(out, 0, sizeof(*out));
  out->max_batch = 100;
  out->max_bytes = 65536;
  out->rate_per_second = 50;
  out->rate_burst = 200;
  if (sec == NULL)
    return 0;
  if (!mg_cfg_object(sec, path, keys, e))
    return -EINVAL;
  out->max_batch = (uint32_t)mg_cfg_int(sec, "max_batch", path, 100, 1, 10000, e);
  out->max_bytes =
      (uint32_t)mg_cfg_int(sec, "max_bytes", path, 65536, 64, 16777216, e);
  rate = cJSON_GetObjectItemCaseSensitive(sec, "rate_per_client");
  if (rate) {
    mg_cfg_join(p, path, "rate_per_client");
    if (mg_cfg_object(rate, p, rate_keys, e)) {
      out->rate_per_second = mg_cfg_num(rate, "per_second", p, 50, 0.01, 1e6, e);
      out->rate_burst = mg_cfg_num(rate, "burst", p, 200, 1, 1e7, e);
    }
  }
  metrics = cJSON_GetObjectItemCaseSensitive(sec, "metrics");
  if (metrics) {
    mg_cfg_join(p, path, "metrics");
    if (mg_cfg_object(metrics, p, NULL, e)) {
      cJSON_ArrayForEach(m, metrics) n++;
      if (n > MG_FEEDBACK_MAX_METRICS) {
        mg_cfg_error(e, p, "at most %d metrics, not %zu",
                     MG_FEEDBACK_MAX_METRICS, n);
        n = MG_FEEDBACK_MAX_METRICS;
      }
      out->metrics = calloc(n ? n : 1, sizeof(*out->metrics));
      if (out->metrics == NULL)
        return -ENOMEM;
      cJSON_ArrayForEach(m, metrics) {
        size_t k;
        if (out->nmetrics == n)
          break;
        mg_cfg_join(mp, p, m->string);
        for (k = 0; k < out->nmetrics; k++)
          if (strcmp(out->metrics[k].name, m->string) == 0)
            mg_cfg_error(e, mp, "duplicate metric");
        rc = parse_metric(m, mp, &out->metrics[out->nmetrics], e);
        out->nmetrics++;
        if (rc)
          return rc;
      }
    }
  }
  return e->n > before ? -EINVAL : 0;
}

void mg_feedback_config_free(struct mg_feedback_config *c) {
  size_t i;
  for (i = 0; i < c->nmetrics; i++)
    free(c->metrics[i].name);
  free(c->metrics);
  memset(c, 0, sizeof(*c));
}

const struct mg_feedback_metric *
mg_feedback_metric(const struct mg_feedback_config *c, const char *name) {
  size_t i;
  for (i = 0; i < c->nmetrics; i++)
    if (strcmp(c->metrics[i].name, name) == 0)
      return &c->metrics[i];
  return NULL;
}

bool mg_feedback_is_decision_id(const char *s, size_t n) {
  size_t i;
  if (n != 32)
    return false;
  for (i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return false;
  return true;
}

static int refuse(struct mg_feedback_error *err, int index, const char *field,
                  const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int refuse(struct mg_feedback_error *err, int index, const char *field,
                  const char *code, const char *fmt, ...) {
  va_list ap;
  if (index >= 0)
    snprintf(err->param, sizeof(err->param), "[%d]%s%s", index,
             field[0] ? "." : "", field);
  else
    snprintf(err->param, sizeof(err->param), "%s", field);
  err->code = code;
  va_start(ap, fmt);
  vsnprintf(err->message, sizeof(err->message), fmt, ap);
  va_end(ap);
  return -EINVAL;
}

int mg_feedback_validate(const struct mg_feedback_config *c,
                         const cJSON *item, int index,
                         struct mg_feedback_item *out,
                         struct mg_feedback_error *err) {
  static const char *const fields[] = {"decision_id", "metric", "value",
                                       "unit", NULL};
  const cJSON *id, *metric, *value, *unit, *it;
  const struct mg_feedback_metric *m;

  memset(out, 0, sizeof(*out));
  memset(err, 0, sizeof(*err));
  if (!cJSON_IsObject(item))
    return refuse(err, index, "", "invalid_type",
                  "A feedback item must be a JSON object with decision_id, "
                  "metric and value.");
  cJSON_ArrayForEach(it, item) {
    const char *const *f;
    for (f = fields; *f && strcmp(*f, it->string) != 0; f++)
      ;
    if (*f == NULL)
      return refuse(err, index, it->string, "unknown_parameter",
                    "Unrecognized feedback field: '%.64s' (expected "
                    "decision_id, metric, value and unit).",
                    it->string);
  }
  id = cJSON_GetObjectItemCaseSensitive(item, "decision_id");
  if (id == NULL)
    return refuse(err, index, "decision_id", "missing_required_parameter",
                  "Missing required parameter: 'decision_id' (the "
                  "x-modelgate-decision header of the answer).");
  if (!cJSON_IsString(id) ||
      !mg_feedback_is_decision_id(id->valuestring, strlen(id->valuestring)))
    return refuse(err, index, "decision_id", "invalid_value",
                  "'decision_id' must be the 32 lowercase hex digits of an "
                  "x-modelgate-decision header.");
  metric = cJSON_GetObjectItemCaseSensitive(item, "metric");
  if (metric == NULL)
    return refuse(err, index, "metric", "missing_required_parameter",
                  "Missing required parameter: 'metric'.");
  if (!cJSON_IsString(metric))
    return refuse(err, index, "metric", "invalid_type",
                  "'metric' must be a string.");
  m = mg_feedback_metric(c, metric->valuestring);
  if (m == NULL)
    return refuse(err, index, "metric", "unknown_metric",
                  "Unknown feedback metric '%.64s': declare it in "
                  "feedback.metrics.",
                  metric->valuestring);
  value = cJSON_GetObjectItemCaseSensitive(item, "value");
  if (value == NULL)
    return refuse(err, index, "value", "missing_required_parameter",
                  "Missing required parameter: 'value'.");
  if (m->type == MG_FEEDBACK_BOOLEAN) {
    if (cJSON_IsBool(value))
      out->value = cJSON_IsTrue(value) ? 1 : 0;
    else if (cJSON_IsNumber(value) &&
             (value->valuedouble == 0 || value->valuedouble == 1))
      out->value = value->valuedouble;
    else
      return refuse(err, index, "value", "invalid_value",
                    "Metric '%s' is boolean: 'value' must be true, false, 0 "
                    "or 1.",
                    m->name);
  } else {
    if (!cJSON_IsNumber(value) || !isfinite(value->valuedouble))
      return refuse(err, index, "value", "invalid_type",
                    "Metric '%s' is a number: 'value' must be a number "
                    "between %g and %g.",
                    m->name, m->min, m->max);
    if (value->valuedouble < m->min || value->valuedouble > m->max)
      return refuse(err, index, "value", "invalid_value",
                    "'value' %g is out of bounds for metric '%s': it must "
                    "lie between %g and %g.",
                    value->valuedouble, m->name, m->min, m->max);
    out->value = value->valuedouble;
  }
  unit = cJSON_GetObjectItemCaseSensitive(item, "unit");
  if (unit && !cJSON_IsNull(unit)) {
    size_t n;
    if (!cJSON_IsString(unit))
      return refuse(err, index, "unit", "invalid_type",
                    "'unit' must be a string or null.");
    n = strlen(unit->valuestring);
    if (n == 0 || n > MG_FEEDBACK_MAX_UNIT)
      return refuse(err, index, "unit", "invalid_value",
                    "'unit' must be 1 to %d bytes.", MG_FEEDBACK_MAX_UNIT);
    out->unit = unit->valuestring;
  }
  memcpy(out->decision_id, id->valuestring, 32);
  out->decision_id[32] = '\0';
  out->metric = m;
  return 0;
}

int mg_feedback_error_json(const struct mg_feedback_error *err,
                           struct mg_buf *out) {
  size_t start = out->len;
  int rc = mg_buf_puts(out, "{\"error\":{\"message\":");
  if (!rc)
    rc = mg_buf_json_str(out, err->message, strlen(err->message));
  if (!rc)
    rc = mg_buf_puts(out, ",\"type\":\"invalid_request_error\",\"param\":");
  if (!rc)
    rc = err->param[0] ? mg_buf_json_str(out, err->param, strlen(err->param))
                       : mg_buf_puts(out, "null");
  if (!rc)
    rc = mg_buf_puts(out, ",\"code\":");
  if (!rc)
    rc = err->code ? mg_buf_json_str(out, err->code, strlen(err->code))
                   : mg_buf_puts(out, "null");
  if (!rc)
    rc = mg_buf_puts(out, "}}");
  if (rc)
    mg_buf_truncate(out, start);
  return rc;
}

/* The shortest "%.*g" of v that reads back as v. */
static void num(char buf[40], double v) {
  int prec;
  for (prec = 6; prec <= 17; prec++) {
    snprintf(buf, 40, "%.*g", prec, v);
    if (strtod(buf, NULL) == v)
      return;
  }
}

static int str_or_null(struct mg_buf *out, const char *s) {
  return s ? mg_buf_json_str(out, s, strlen(s)) : mg_buf_puts(out, "null");
}

int mg_feedback_format(const struct mg_feedback_item *it, int64_t ts_ms,
                       const char *client, const char *instance,
                       struct mg_buf *out) {
  char ts[32], v[40];
  size_t start = out->len;
  int rc;

  mg_rfc3339_format(ts_ms, ts);
  if (it->metric->type == MG_FEEDBACK_BOOLEAN)
    snprintf(v, sizeof(v), "%s", it->value != 0 ? "true" : "false");
  else
    num(v, it->value);
  rc = mg_buf_printf(out,
                     "{\"ts\":\"%s\",\"feedback\":{\"decision_id\":\"%s\","
                     "\"metric\":",
                     ts, it->decision_id);
  if (!rc)
    rc = mg_buf_json_str(out, it->metric->name, strlen(it->metric->name));
  if (!rc)
    rc = mg_buf_printf(out, ",\"value\":%s,\"unit\":", v);
  if (!rc)
    rc = str_or_null(out, it->unit);
  if (!rc)
    rc = mg_buf_puts(out, ",\"client\":");
  if (!rc)
    rc = str_or_null(out, client);
  if (!rc)
    rc = mg_buf_puts(out, ",\"instance\":");
  if (!rc)
    rc = str_or_null(out, instance);
  if (!rc)
    rc = mg_buf_puts(out, "}}");
  if (rc)
    mg_buf_truncate(out, start);
  return rc;
}
