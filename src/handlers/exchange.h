/* exchange.h - the model endpoints: one proxied request, from its parsed
 * body to its answer and its record. The exchange owns itself: it ends (and
 * frees itself) once the answer is queued, or once its client is gone and
 * its upstream call is cancelled. */
#ifndef MG_EXCHANGE_H
#define MG_EXCHANGE_H

#include "server/resp.h"

/* The handler (server/resp.h) of a model endpoint. owner: the struct
 * mg_worker the request arrived on; route->arg: its struct mg_endpoint
 * (api/api.h). */
void mg_exchange_handle(void *owner, struct mg_resp *r,
                        const struct mg_route *route);
/* The handler of a pinned endpoint: GET/DELETE of a stored response and
 * its input items, sent to the target that made it (its id says which). */
void mg_exchange_pinned(void *owner, struct mg_resp *r,
                        const struct mg_route *route);

#endif
