/* admin.h - the admin API, on its own listener (loopback by default).
 *
 *   GET    /admin/state                      effective state
 *   POST   /admin/flags/<flag>/kill          kill switch on
 *   POST   /admin/flags/<flag>/unkill        ...and off
 *   PUT    /admin/flags/<flag>/weights       {"<variant>": percent, ...}
 *   DELETE /admin/flags/<flag>/weights       back to the file's weights
 *   POST   /admin/flags/<flag>/ramp/<action> pause, resume, promote,
 *                                            rollback, restart
 *   POST   /admin/reload                     reload the config file
 *
 * With a token configured (admin.token_env), every call needs
 * "Authorization: Bearer <token>", compared in constant time. Without one,
 * the state can be read but nothing can be changed. */
#ifndef MG_ADMIN_H
#define MG_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include "server/resp.h"

/* The route of a request on the admin listener (owner: the worker whose
 * loop runs the admin listener, worker 0). */
void mg_admin_route(void *owner, struct mg_http_req *req, struct mg_route *out);

/* Constant-time comparison of a presented secret with the expected one. */
bool mg_admin_token_equal(const char *expected, const char *given,
                          size_t given_len);

#endif
