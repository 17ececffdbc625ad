/* cfg.c - typed config getters with JSON paths. */
#include "common/cfg.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mg_cfg_errors_init(struct mg_cfg_errors *e) {
  e->msgs = NULL;
  e->n = 0;
  e->cap = 0;
}

void mg_cfg_errors_free(struct mg_cfg_errors *e) {
  size_t i;
  for (i = 0; i < e->n; i++)
    free(e->msgs[i]);
  free(e->msgs);
  mg_cfg_errors_init(e);
}

void mg_cfg_error(struct mg_cfg_errors *e, const char *path, const char *fmt,
                  ...) {
  char msg[512];
  int n;
  va_list ap;

  n = snprintf(msg, sizeof(msg), "%s: ", path);
  if (n < 0 || (size_t)n >= sizeof(msg))
    n = 0;
  va_start(ap, fmt);
  vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
  va_end(ap);
  if (e->n == e->cap) {
    size_t cap = e->cap ? e->cap * 2 : 8;
    char **p = realloc(e->msgs, cap * sizeof(*p));
    if (p == NULL)
      return; /* out of memory: the error is lost, the config still fails */
    e->msgs = p;
    e->cap = cap;
  }
  if ((e->msgs[e->n] = strdup(msg)) != NULL)
    e->n++;
}

static bool plain_key(const char *k) {
  if (!*k || isdigit((unsigned char)*k))
    return false;
  for (; *k; k++)
    if (!isalnum((unsigned char)*k) && *k != '_' && *k != '-')
      return false;
  return true;
}

void mg_cfg_join(char out[MG_CFG_PATH_MAX], const char *parent,
                 const char *key) {
  if (plain_key(key))
    snprintf(out, MG_CFG_PATH_MAX, "%s.%s", parent, key);
  else
    snprintf(out, MG_CFG_PATH_MAX, "%s[\"%s\"]", parent, key);
}

void mg_cfg_join_idx(char out[MG_CFG_PATH_MAX], const char *parent, size_t i) {
  snprintf(out, MG_CFG_PATH_MAX, "%s[%zu]", parent, i);
}

static const char *type_name(const cJSON *v) {
  if (cJSON_IsObject(v))
    return "an object";
  if (cJSON_IsArray(v))
    return "an array";
  if (cJSON_IsString(v))
    return "a string";
  if (cJSON_IsNumber(v))
    return "a number";
  if (cJSON_IsBool(v))
    return "a boolean";
  if (cJSON_IsNull(v))
    return "null";
  return "invalid";
}

bool mg_cfg_object(const cJSON *obj, const char *path,
                   const char *const *allowed, struct mg_cfg_errors *e) {
  const cJSON *it;
  if (!cJSON_IsObject(obj)) {
    mg_cfg_error(e, path, "must be an object, not %s", type_name(obj));
    return false;
  }
  if (allowed == NULL)
    return true;
  cJSON_ArrayForEach(it, obj) {
    const char *const *a;
    bool ok = false, dup = false;
    const cJSON *prev;
    char p[MG_CFG_PATH_MAX];
    for (a = allowed; *a; a++)
      if (strcmp(*a, it->string) == 0) {
        ok = true;
        break;
      }
    mg_cfg_join(p, path, it->string);
    if (!ok)
      mg_cfg_error(e, p, "unknown key");
    for (prev = obj->child; prev != it; prev = prev->next)
      if (strcmp(prev->string, it->string) == 0)
        dup = true;
    if (dup)
      mg_cfg_error(e, p, "duplicate key");
  }
  return true;
}

bool mg_cfg_require(const cJSON *obj, const char *key, const char *path,
                    struct mg_cfg_errors *e) {
  char p[MG_CFG_PATH_MAX];
  if (cJSON_GetObjectItemCaseSensitive(obj, key))
    return true;
  mg_cfg_join(p, path, key);
  mg_cfg_error(e, p, "is required");
  return false;
}

int64_t mg_cfg_int(const cJSON *obj, const char *key, const char *path,
                   int64_t def, int64_t min, int64_t max,
                   struct mg_cfg_errors *e) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  char p[MG_CFG_PATH_MAX];
  double d;

  if (v == NULL)
    return def;
  mg_cfg_join(p, path, key);
  if (!cJSON_IsNumber(v)) {
    mg_cfg_error(e, p, "must be an integer, not %s", type_name(v));
    return def;
  }
  d = v->valuedouble;
  if (d != floor(d)) {
    mg_cfg_error(e, p, "must be an integer, not %g", d);
    return def;
  }
  if (d < (double)min || d > (double)max) {
    mg_cfg_error(e, p, "must be between %lld and %lld, not %.0f",
                 (long long)min, (long long)max, d);
    return def;
  }
  return (int64_t)d;
}

double mg_cfg_num(const cJSON *obj, const char *key, const char *path,
                  double def, double min, double max,
                  struct mg_cfg_errors *e) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  char p[MG_CFG_PATH_MAX];

  if (v == NULL)
    return def;
  mg_cfg_join(p, path, key);
  if (!cJSON_IsNumber(v)) {
    mg_cfg_error(e, p, "must be a number, not %s", type_name(v));
    return def;
  }
  if (!(v->valuedouble >= min && v->valuedouble <= max)) {
    mg_cfg_error(e, p, "must be between %g and %g, not %g", min, max,
                 v->valuedouble);
    return def;
  }
  return v->valuedouble;
}

bool mg_cfg_bool(const cJSON *obj, const char *key, const char *path, bool def,
                 struct mg_cfg_errors *e) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  char p[MG_CFG_PATH_MAX];
  if (v == NULL)
    return def;
  if (!cJSON_IsBool(v)) {
    mg_cfg_join(p, path, key);
    mg_cfg_error(e, p, "must be true or false, not %s", type_name(v));
    return def;
  }
  return cJSON_IsTrue(v);
}

char *mg_cfg_str(const cJSON *obj, const char *key, const char *path,
                 const char *def, bool nonempty, struct mg_cfg_errors *e) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  char p[MG_CFG_PATH_MAX];
  if (v == NULL)
    return def ? strdup(def) : NULL;
  mg_cfg_join(p, path, key);
  if (!cJSON_IsString(v)) {
    mg_cfg_error(e, p, "must be a string, not %s", type_name(v));
    return def ? strdup(def) : NULL;
  }
  if (nonempty && v->valuestring[0] == '\0') {
    mg_cfg_error(e, p, "must not be empty");
    return def ? strdup(def) : NULL;
  }
  return strdup(v->valuestring);
}

int mg_cfg_parse_hostport(const char *s, char *host, size_t hostlen,
                          int *port) {
  const char *colon, *h = s;
  size_t hl;
  char *end;
  long p;

  if (*s == '[') {
    const char *rb = strchr(s, ']');
    if (rb == NULL || rb[1] != ':')
      return -EINVAL;
    h = s + 1;
    hl = (size_t)(rb - h);
    colon = rb + 1;
  } else {
    colon = strrchr(s, ':');
    if (colon == NULL)
      return -EINVAL;
    hl = (size_t)(colon - s);
  }
  if (hl == 0 || hl >= hostlen)
    return -EINVAL;
  errno = 0;
  p = strtol(colon + 1, &end, 10);
  if (errno || *end || end == colon + 1 || p < 0 || p > 65535)
    return -EINVAL;
  memcpy(host, h, hl);
  host[hl] = '\0';
  *port = (int)p;
  return 0;
}
