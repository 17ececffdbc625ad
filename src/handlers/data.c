/* data.c - the data listener's routes (data.h). */
#include "handlers/data.h"

#include <string.h>

#include <llhttp.h>

#include "handlers/exchange.h"
#include "handlers/ops.h"
#include "routing/target.h"

static const enum mg_endpoint endpoints[MG_EP__COUNT] = {
    MG_EP_CHAT, MG_EP_COMPLETIONS, MG_EP_EMBEDDINGS};

void mg_data_route(void *owner, struct mg_http_req *req, struct mg_route *out) {
  struct mg_str path = mg_http_req_path(req);
  int ep = mg_endpoint_from_path(path.p, path.len);
  (void)owner;
  memset(out, 0, sizeof(*out));
  if (ep >= 0) {
    out->endpoint = mg_endpoint_name((enum mg_endpoint)ep);
    if (req->method != HTTP_POST) {
      out->status = 405;
      out->message = "Only POST is allowed on this URL.";
      out->code = "method_not_allowed";
      out->allow = "POST";
      return;
    }
    out->handler = mg_exchange_handle;
    out->arg = &endpoints[ep];
    out->buffer_body = true;
    return;
  }
  if (mg_ops_route(path, req->method, true, out))
    return;
  out->status = 404;
  out->code = "unknown_url";
}
