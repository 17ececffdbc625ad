/* feedback.h - POST /v1/feedback on the data listener (DESIGN.md, "Quality
 * signals and cost"; issue 15.1): quality signals about decisions, one
 * object or a batch array, validated against feedback.metrics, written to
 * the decision log as feedback lines, and fed to the live view and to the
 * guards of the decision's ramp. */
#ifndef MG_HANDLERS_FEEDBACK_H
#define MG_HANDLERS_FEEDBACK_H

#include "server/resp.h"

/* The handler (owner: the worker the request arrived on). */
void mg_feedback_handle(void *owner, struct mg_resp *c,
                        const struct mg_route *route);

#endif
