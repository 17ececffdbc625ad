/* cfg.h - typed config getters that report errors with their JSON path.
 *
 * Every module parses its own section with these (h2o's configurators).
 * A getter never stops at the first problem: it records an error and the
 * caller keeps going, so `modelgate check` prints every error at once. */
#ifndef MG_CFG_H
#define MG_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#define MG_CFG_PATH_MAX 320

struct mg_cfg_errors {
  char **msgs; /* owned, each "path: message" */
  size_t n, cap;
};

void mg_cfg_errors_init(struct mg_cfg_errors *e);
void mg_cfg_errors_free(struct mg_cfg_errors *e);
void mg_cfg_error(struct mg_cfg_errors *e, const char *path, const char *fmt,
                  ...) __attribute__((format(printf, 3, 4)));

/* "$.a" + "b" -> "$.a.b"; keys that are not plain identifiers are quoted:
 * "$.a[\"my key\"]". */
void mg_cfg_join(char out[MG_CFG_PATH_MAX], const char *parent, const char *key);
/* "$.a" + 3 -> "$.a[3]" */
void mg_cfg_join_idx(char out[MG_CFG_PATH_MAX], const char *parent, size_t i);

/* Require obj to be an object whose keys are all in allowed (NULL-ended).
 * Returns false (and records errors) when it is not an object. */
bool mg_cfg_object(const cJSON *obj, const char *path,
                   const char *const *allowed, struct mg_cfg_errors *e);

/* Getters: a missing key yields def; a present key of the wrong type or out
 * of [min, max] records an error and yields def. */
int64_t mg_cfg_int(const cJSON *obj, const char *key, const char *path,
                   int64_t def, int64_t min, int64_t max,
                   struct mg_cfg_errors *e);
double mg_cfg_num(const cJSON *obj, const char *key, const char *path,
                  double def, double min, double max, struct mg_cfg_errors *e);
bool mg_cfg_bool(const cJSON *obj, const char *key, const char *path, bool def,
                 struct mg_cfg_errors *e);
/* Returns a fresh copy of the string, or of def (NULL when def is NULL).
 * With nonempty, an empty string is an error. */
char *mg_cfg_str(const cJSON *obj, const char *key, const char *path,
                 const char *def, bool nonempty, struct mg_cfg_errors *e);
/* A key that must be present. */
bool mg_cfg_require(const cJSON *obj, const char *key, const char *path,
                    struct mg_cfg_errors *e);

/* Parse "host:port" ("[v6]:port" too); port 0 means "any free port". */
int mg_cfg_parse_hostport(const char *s, char *host, size_t hostlen,
                          int *port);

#endif
