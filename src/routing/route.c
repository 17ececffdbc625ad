/* route.c - the alias table. */
#include "routing/route.h"

#include <stdlib.h>
#include <string.h>

static const char *const alias_keys[] = {"target", "flag", NULL};

void mg_routes_parse(struct mg_routes *out, const cJSON *root,
                     const struct mg_targets *targets,
                     const struct mg_flags *flags, struct mg_cfg_errors *e) {
  const cJSON *section = cJSON_GetObjectItemCaseSensitive(root, "aliases");
  const cJSON *def = cJSON_GetObjectItemCaseSensitive(root, "default_route");
  const cJSON *it;

  memset(out, 0, sizeof(*out));
  mg_map_init(&out->by_name);
  if (section == NULL) {
    mg_cfg_error(e, "$.aliases", "is required: map at least one model name");
    return;
  }
  if (!mg_cfg_object(section, "$.aliases", NULL, e))
    return;
  out->v = calloc((size_t)cJSON_GetArraySize(section) + 1, sizeof(*out->v));
  if (out->v == NULL) {
    mg_cfg_error(e, "$.aliases", "out of memory");
    return;
  }
  cJSON_ArrayForEach(it, section) {
    struct mg_alias *a = &out->v[out->n];
    char p[MG_CFG_PATH_MAX];

    mg_cfg_join(p, "$.aliases", it->string);
    if (it->string[0] == '\0')
      mg_cfg_error(e, p, "an alias name must not be empty");
    a->name = strdup(it->string);
    out->n++;
    if (a->name == NULL ||
        mg_map_put(&out->by_name, a->name, strlen(a->name), a)) {
      mg_cfg_error(e, p, "out of memory");
      continue;
    }
    if (!mg_cfg_object(it, p, alias_keys, e))
      continue;
    {
      const cJSON *t = cJSON_GetObjectItemCaseSensitive(it, "target");
      const cJSON *f = cJSON_GetObjectItemCaseSensitive(it, "flag");
      char tp[MG_CFG_PATH_MAX];
      if ((t == NULL) == (f == NULL)) {
        mg_cfg_error(e, p, "needs exactly one of \"target\" or \"flag\"");
        continue;
      }
      if (t) {
        char *name = mg_cfg_str(it, "target", p, NULL, true, e);
        if (name) {
          a->target = mg_targets_find(targets, name);
          if (a->target == NULL) {
            mg_cfg_join(tp, p, "target");
            mg_cfg_error(e, tp, "unknown target \"%s\"", name);
          }
        }
        free(name);
      } else {
        char *name = mg_cfg_str(it, "flag", p, NULL, true, e);
        if (name) {
          a->flag = mg_flags_find(flags, name);
          if (a->flag == NULL) {
            mg_cfg_join(tp, p, "flag");
            mg_cfg_error(e, tp, "unknown flag \"%s\"", name);
          }
        }
        free(name);
      }
    }
  }
  if (def != NULL) {
    if (!cJSON_IsString(def)) {
      mg_cfg_error(e, "$.default_route", "must be a string naming an alias");
    } else {
      out->default_route = mg_map_get(&out->by_name, def->valuestring,
                                      strlen(def->valuestring));
      if (out->default_route == NULL)
        mg_cfg_error(e, "$.default_route", "unknown alias \"%s\"",
                     def->valuestring);
    }
  }
}

void mg_routes_free(struct mg_routes *r) {
  size_t i;
  for (i = 0; i < r->n; i++)
    free(r->v[i].name);
  free(r->v);
  mg_map_free(&r->by_name);
  memset(r, 0, sizeof(*r));
}

const struct mg_alias *mg_route_lookup(const struct mg_routes *r,
                                       struct mg_str model) {
  const struct mg_alias *a = mg_map_gets(&r->by_name, model);
  return a ? a : r->default_route;
}
