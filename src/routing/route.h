/* route.h - the alias table: the `model` a client sends names an alias, the
 * alias names a target (or, through a flag, one of several). */
#ifndef MG_ROUTE_H
#define MG_ROUTE_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "common/cfg.h"
#include "common/map.h"
#include "common/str.h"
#include "routing/flag.h"
#include "routing/target.h"

struct mg_alias {
  char *name;                     /* owned: the model name clients send */
  const struct mg_target *target; /* borrowed from the same snapshot: a
                                   * direct route, or NULL with a flag */
  const struct mg_flag *flag;     /* borrowed: route through a flag */
};

struct mg_routes {
  struct mg_alias *v; /* owned array */
  size_t n;
  struct mg_map by_name;                /* name -> struct mg_alias * */
  const struct mg_alias *default_route; /* borrowed from v, or NULL */
};

/* Parse "aliases" and "default_route" (both at the top level). Targets
 * and flags must already be parsed. */
void mg_routes_parse(struct mg_routes *out, const cJSON *root,
                     const struct mg_targets *targets,
                     const struct mg_flags *flags, struct mg_cfg_errors *e);
void mg_routes_free(struct mg_routes *r);

/* The alias for a requested model: its own, else the default route, else
 * NULL (the caller answers 404 model_not_found). */
const struct mg_alias *mg_route_lookup(const struct mg_routes *r,
                                       struct mg_str model);

#endif
