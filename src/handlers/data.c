/* data.c - the data listener's routes (data.h). */
#include "handlers/data.h"

#include <string.h>

#include <llhttp.h>

#include "api/api.h"
#include "handlers/exchange.h"
#include "handlers/feedback.h"
#include "handlers/ops.h"

void mg_data_route(void *owner, struct mg_http_req *req, struct mg_route *out) {
  struct mg_str path = mg_http_req_path(req);
  bool known = false;
  const struct mg_endpoint *ep =
      mg_endpoint_match(path.p, path.len, req->method, &known);
  (void)owner;
  memset(out, 0, sizeof(*out));
  if (ep) {
    out->endpoint = ep->name;
    out->error_body = ep->ops->error_body;
    out->handler =
        ep->kind == MG_EPK_PINNED ? mg_exchange_pinned : mg_exchange_handle;
    out->arg = ep;
    out->buffer_body = ep->kind == MG_EPK_MODEL;
    return;
  }
  if (known) {
    /* One of ours, with another method: the shape and name of the one
     * that takes the path. */
    static const int methods[] = {MG_HTTP_POST, MG_HTTP_GET, MG_HTTP_DELETE};
    const char *allow = mg_endpoint_allow(path.p, path.len);
    size_t i;
    for (i = 0; i < 3 && ep == NULL; i++)
      ep = mg_endpoint_match(path.p, path.len, methods[i], &known);
    if (ep) {
      out->endpoint = ep->name;
      out->error_body = ep->ops->error_body;
    }
    out->status = 405;
    out->message = strcmp(allow, "POST") == 0
                       ? "Only POST is allowed on this URL."
                       : "This method is not allowed on this URL.";
    out->code = "method_not_allowed";
    out->allow = allow;
    return;
  }
  /* Quality signals about decisions (issue 15.1). */
  if (path.len == 12 && memcmp(path.p, "/v1/feedback", 12) == 0) {
    if (req->method == MG_HTTP_POST) {
      out->handler = mg_feedback_handle;
      out->buffer_body = true;
    } else {
      out->status = 405;
      out->message = "Only POST is allowed on this URL.";
      out->code = "method_not_allowed";
      out->allow = "POST";
    }
    return;
  }
  if (mg_ops_route(path, req->method, true, out))
    return;
  out->status = 404;
  out->code = "unknown_url";
}
