/* dashboard.h - GET /dashboard on the admin listener: the live view, one
 * self-contained page (src/handlers/dashboard.html, compiled in) that
 * reads GET /admin/live and calls the admin API's verbs with the token it
 * asks for. The page holds no data: it is served without the token. */
#ifndef MG_DASHBOARD_H
#define MG_DASHBOARD_H

#include <stdbool.h>

#include "common/str.h"
#include "server/resp.h"

/* Fill out for /dashboard and return true; false for any other path. */
bool mg_dashboard_route(struct mg_str path, int method, struct mg_route *out);

#endif
