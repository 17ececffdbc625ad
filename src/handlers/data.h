/* data.h - what answers each request on the data listener: the model
 * endpoints (handlers/exchange.c), the operational endpoints
 * (handlers/ops.c), or a refusal. */
#ifndef MG_DATA_H
#define MG_DATA_H

#include "server/resp.h"

/* The route of a request whose headers are complete (owner: the worker). */
void mg_data_route(void *owner, struct mg_http_req *req, struct mg_route *out);

#endif
