/* ops.h - the operational endpoints: /healthz, /readyz, /metrics on both
 * listeners, and GET /v1/models[/<id>] (the aliases) on the data one. */
#ifndef MG_OPS_H
#define MG_OPS_H

#include <stdbool.h>

#include "common/str.h"
#include "server/resp.h"

/* Fill out for an operational path and return true; false when path is
 * none of them. models: /v1/models is served here (data listener). */
bool mg_ops_route(struct mg_str path, int method, bool models,
                  struct mg_route *out);

#endif
