/* target_override.c - runtime overrides of targets (target_override.h). */
#include "routing/target_override.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/time.h"

void mg_toverrides_init(struct mg_target_overrides *o) {
  o->v = NULL;
  o->n = 0;
}

static void entry_free(struct mg_target_override *x) {
  free(x->target);
  free(x->by);
  free(x->reason);
  memset(x, 0, sizeof(*x));
}

void mg_toverrides_free(struct mg_target_overrides *o) {
  size_t i;
  for (i = 0; i < o->n; i++)
    entry_free(&o->v[i]);
  free(o->v);
  mg_toverrides_init(o);
}

const struct mg_target_override *
mg_toverrides_find(const struct mg_target_overrides *o, const char *target) {
  size_t i;
  for (i = 0; i < o->n; i++)
    if (strcmp(o->v[i].target, target) == 0)
      return &o->v[i];
  return NULL;
}

int mg_toverrides_set(struct mg_target_overrides *o, const char *target,
                      double min_confidence, const char *by,
                      const char *reason, int64_t now_ms) {
  struct mg_target_override *x = NULL, *v;
  char *b = strdup(by ? by : "admin"), *r = reason ? strdup(reason) : NULL;
  size_t i;
  if (b == NULL || (reason && r == NULL))
    goto oom;
  for (i = 0; i < o->n; i++)
    if (strcmp(o->v[i].target, target) == 0)
      x = &o->v[i];
  if (x == NULL) {
    char *t = strdup(target);
    v = t ? realloc(o->v, (o->n + 1) * sizeof(*v)) : NULL;
    if (v == NULL) {
      free(t);
      goto oom;
    }
    o->v = v;
    x = &o->v[o->n++];
    memset(x, 0, sizeof(*x));
    x->target = t;
  }
  free(x->by);
  free(x->reason);
  x->by = b;
  x->reason = r;
  x->min_confidence = min_confidence;
  x->updated_ms = now_ms;
  return 0;
oom:
  free(b);
  free(r);
  return -ENOMEM;
}

void mg_toverrides_clear(struct mg_target_overrides *o, const char *target) {
  size_t i;
  for (i = 0; i < o->n; i++)
    if (strcmp(o->v[i].target, target) == 0) {
      entry_free(&o->v[i]);
      memmove(&o->v[i], &o->v[i + 1], (o->n - i - 1) * sizeof(*o->v));
      o->n--;
      return;
    }
}

int mg_toverrides_to_json(const struct mg_target_overrides *o, cJSON **out) {
  cJSON *root = cJSON_CreateObject();
  size_t i;
  if (root == NULL)
    return -ENOMEM;
  for (i = 0; i < o->n; i++) {
    const struct mg_target_override *x = &o->v[i];
    cJSON *t = cJSON_AddObjectToObject(root, x->target);
    char ts[32];
    mg_rfc3339_format(x->updated_ms, ts);
    if (t == NULL ||
        cJSON_AddNumberToObject(t, "min_confidence", x->min_confidence) ==
            NULL ||
        cJSON_AddStringToObject(t, "by", x->by) == NULL ||
        (x->reason ? cJSON_AddStringToObject(t, "reason", x->reason)
                   : cJSON_AddNullToObject(t, "reason")) == NULL ||
        cJSON_AddStringToObject(t, "updated", ts) == NULL) {
      cJSON_Delete(root);
      return -ENOMEM;
    }
  }
  *out = root;
  return 0;
}

int mg_toverrides_from_json(struct mg_target_overrides *o, const cJSON *json,
                            char *err, size_t errlen) {
  struct mg_target_overrides fresh;
  const cJSON *t;
  mg_toverrides_init(&fresh);
  if (!cJSON_IsObject(json)) {
    snprintf(err, errlen, "targets: not an object");
    return -EINVAL;
  }
  cJSON_ArrayForEach(t, json) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(t, "min_confidence");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(t, "by");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(t, "reason");
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(t, "updated");
    int64_t updated = 0;
    if (!cJSON_IsObject(t) || !cJSON_IsNumber(m) ||
        !isfinite(m->valuedouble)) {
      snprintf(err, errlen, "targets.%s: malformed", t->string);
      mg_toverrides_free(&fresh);
      return -EINVAL;
    }
    if (cJSON_IsString(u))
      mg_rfc3339_parse(u->valuestring, &updated);
    if (mg_toverrides_set(&fresh, t->string, m->valuedouble,
                          cJSON_IsString(b) ? b->valuestring : NULL,
                          cJSON_IsString(r) ? r->valuestring : NULL,
                          updated) != 0) {
      snprintf(err, errlen, "out of memory");
      mg_toverrides_free(&fresh);
      return -EINVAL;
    }
  }
  mg_toverrides_free(o);
  *o = fresh;
  return 0;
}
