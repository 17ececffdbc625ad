/* auth.h - client keys on the data plane (DESIGN.md, "Clients"). */
#ifndef MG_AUTH_H
#define MG_AUTH_H

#include <stdbool.h>

#include "config/config.h"
#include "server/resp.h"

/* The key a request presents: `Authorization: Bearer <key>` (OpenAI SDKs)
 * or `x-api-key: <key>` (Anthropic SDKs); empty when none. */
struct mg_str mg_auth_presented_key(const struct mg_http_req *rq);

/* With cfg->clients configured: the client the request's key belongs to
 * (*name, borrowed from cfg), or false. Without: true, *name NULL. */
bool mg_auth_client(const struct mg_config *cfg, const struct mg_http_req *rq,
                    const char **name);

/* OpenAI's words for a missing or a wrong key. */
const char *mg_auth_message(const struct mg_http_req *rq);

#endif
