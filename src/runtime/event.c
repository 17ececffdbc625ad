/* event.c - an event as the members of its decision-log line. */
#include "runtime/event.h"

#include <string.h>

const char *mg_severity_name(enum mg_severity s) {
  static const char *const names[] = {"info", "warning", "critical"};
  return (unsigned)s < 3 ? names[s] : "info";
}

static int member_str(struct mg_buf *out, const char *key, const char *v) {
  int rc = mg_buf_printf(out, ",\"%s\":", key);
  if (rc == 0)
    rc = mg_buf_json_str(out, v, strlen(v));
  return rc;
}

/* {"<variant>": percent, ...} */
static int weights_obj(struct mg_buf *out, const char *key,
                       const struct mg_event *ev, const uint32_t *w) {
  uint32_t i;
  int rc = mg_buf_printf(out, ",\"%s\":{", key);
  for (i = 0; rc == 0 && i < ev->nvariants; i++) {
    if (i)
      rc = mg_buf_puts(out, ",");
    if (rc == 0)
      rc = mg_buf_json_str(out, ev->variants[i], strlen(ev->variants[i]));
    if (rc == 0)
      rc = mg_buf_printf(out, ":%.10g", w[i] / 100.0);
  }
  if (rc == 0)
    rc = mg_buf_puts(out, "}");
  return rc;
}

int mg_event_members(const struct mg_event *ev, struct mg_buf *out) {
  int rc = 0;
  if (ev->flag)
    rc = member_str(out, "flag", ev->flag);
  if (rc == 0 && ev->target)
    rc = member_str(out, "target", ev->target);
  if (rc == 0 && ev->variant)
    rc = member_str(out, "variant", ev->variant);
  if (rc == 0 && ev->state)
    rc = member_str(out, ev->target ? "state" : "status", ev->state);
  if (rc == 0 && ev->step >= 0)
    rc = mg_buf_printf(out, ",\"step\":%d", (int)ev->step);
  if (rc == 0 && ev->weight_bp >= 0)
    rc = mg_buf_printf(out, ",\"weight\":%.10g", ev->weight_bp / 100.0);
  if (rc == 0 && ev->guard) {
    rc = member_str(out, "guard", ev->guard);
    if (rc == 0)
      rc = mg_buf_printf(out, ",\"observed\":%.6g,\"threshold\":%.6g",
                         ev->observed, ev->threshold);
  }
  if (rc == 0 && ev->actor) {
    rc = member_str(out, "by", ev->actor->by ? ev->actor->by : "admin");
    if (rc == 0 && ev->actor->reason)
      rc = member_str(out, "reason", ev->actor->reason);
  }
  if (rc == 0 && ev->weights_after && ev->nvariants)
    rc = weights_obj(out, "weights", ev, ev->weights_after);
  if (rc == 0 && ev->from_hash)
    rc = member_str(out, "from", ev->from_hash);
  if (rc == 0 && ev->to_hash)
    rc = member_str(out, "to", ev->to_hash);
  if (rc == 0 && ev->result)
    rc = member_str(out, "result", ev->result);
  if (rc == 0 && ev->result && strcmp(ev->result, "refused") == 0)
    rc = mg_buf_printf(out, ",\"errors\":%zu", ev->errors);
  if (rc == 0 && ev->has_min_confidence)
    rc = mg_buf_printf(out, ",\"min_confidence\":%.10g,\"previous\":%.10g",
                       ev->min_confidence, ev->min_confidence_before);
  if (rc == 0 && ev->instance)
    rc = member_str(out, "instance", ev->instance);
  return rc;
}
