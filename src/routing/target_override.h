/* target_override.h - runtime overrides of targets, set through the admin
 * API: today a target's confidence threshold, `min_confidence` (issue
 * 15.6: "threshold in config, adjust in 5 minutes"). Like the flag
 * overrides (override.h) they win over the config file until cleared,
 * survive reloads (kept by target name, outside any snapshot) and restarts
 * (the state file's "targets" member). Pure. */
#ifndef MG_TARGET_OVERRIDE_H
#define MG_TARGET_OVERRIDE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/buf.h"

struct mg_target_override {
  char *target;           /* owned */
  double min_confidence;  /* the gate's threshold in force */
  char *by;               /* owned: who set it ("admin" when unnamed) */
  char *reason;           /* owned, or NULL */
  int64_t updated_ms;     /* wall clock of the change */
};

struct mg_target_overrides {
  struct mg_target_override *v; /* owned */
  size_t n;
};

void mg_toverrides_init(struct mg_target_overrides *o);
void mg_toverrides_free(struct mg_target_overrides *o);

/* The override of a target, or NULL. */
const struct mg_target_override *
mg_toverrides_find(const struct mg_target_overrides *o, const char *target);

/* Set a target's min_confidence (by, reason: may be NULL). 0 or -ENOMEM. */
int mg_toverrides_set(struct mg_target_overrides *o, const char *target,
                      double min_confidence, const char *by,
                      const char *reason, int64_t now_ms) MG_WARN_UNUSED;
/* Clear it: the config's threshold is in force again. */
void mg_toverrides_clear(struct mg_target_overrides *o, const char *target);

/* JSON: {"<target>": {"min_confidence": x, "by": "...", "reason": ...,
 * "updated": "<RFC 3339>"}, ...} */
int mg_toverrides_to_json(const struct mg_target_overrides *o,
                          cJSON **out) MG_WARN_UNUSED;
/* Replace o's contents from such JSON; -EINVAL (with a message) when it is
 * malformed, leaving o unchanged. */
int mg_toverrides_from_json(struct mg_target_overrides *o, const cJSON *json,
                            char *err, size_t errlen);

#endif
