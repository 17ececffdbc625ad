/* override.h - runtime overrides of flags (kill, weights), set through the
 * admin API. They win over the config file until cleared, survive reloads
 * (they are kept by flag and variant name, outside any snapshot) and
 * restarts (the state file, written atomically). */
#ifndef MG_OVERRIDE_H
#define MG_OVERRIDE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/buf.h"
#include "routing/flag.h"

struct mg_override {
  char *flag;             /* owned */
  bool killed;
  bool has_weights;
  uint32_t nweights;
  char **variants;        /* owned names, nweights of them */
  uint32_t *weights;      /* owned, basis points */
  int64_t updated_ms;     /* wall clock of the last change */
  char *by;               /* owned: who made the last change, or NULL */
  char *reason;           /* owned: why, or NULL */
};

struct mg_overrides {
  struct mg_override *v; /* owned */
  size_t n;
};

void mg_overrides_init(struct mg_overrides *o);
void mg_overrides_free(struct mg_overrides *o);

/* The override of a flag, or NULL. */
struct mg_override *mg_overrides_find(const struct mg_overrides *o,
                                      const char *flag);

/* Note who made the last change of flag's override and why (either may be
 * NULL); nothing when the flag has no override (the change removed it). */
int mg_overrides_note(struct mg_overrides *o, const char *flag,
                      const char *by, const char *reason) MG_WARN_UNUSED;

/* Set or clear a kill. */
int mg_overrides_kill(struct mg_overrides *o, const char *flag, bool killed,
                      int64_t now_ms) MG_WARN_UNUSED;
/* Set weights for the flag's variants by name (basis points). The caller
 * has validated them against the current flag. */
int mg_overrides_set_weights(struct mg_overrides *o, const char *flag,
                             const char *const *variants,
                             const uint32_t *weights, uint32_t n,
                             int64_t now_ms) MG_WARN_UNUSED;
void mg_overrides_clear_weights(struct mg_overrides *o, const char *flag);

/* The state in force for flag f: the file's, with the override applied.
 * A weights override whose variant names no longer match the flag's is not
 * applied (*stale is then true). */
void mg_overrides_state(const struct mg_overrides *o, const struct mg_flag *f,
                        struct mg_flag_state *st, bool *stale);

/* JSON: {"<flag>": {"killed": bool, "weights": {"<variant>": pct, ...},
 * "updated": "<RFC 3339>"}, ...} */
int mg_overrides_to_json(const struct mg_overrides *o,
                         cJSON **out) MG_WARN_UNUSED;
/* Replace o's contents from such JSON; -EINVAL (with a message) when it is
 * malformed, leaving o unchanged. */
int mg_overrides_from_json(struct mg_overrides *o, const cJSON *json,
                           char *err, size_t errlen);

/* Write JSON to path atomically: a temporary file in the same directory,
 * fsync, rename, fsync of the directory. 0 or -errno. */
int mg_write_file_atomic(const char *path, const char *data,
                         size_t len) MG_WARN_UNUSED;

#endif
