/* dashboard.c - GET /dashboard (dashboard.h). */
#include "handlers/dashboard.h"

#include <stddef.h>

#include <llhttp.h>

/* Generated at build time from dashboard.html (cmake/embed.cmake). */
extern const char mg_dashboard_html[];
extern const size_t mg_dashboard_html_len;

/* The page runs its own inline script and style and talks to this origin
 * only: nothing else may load, frame it or be posted to. */
static const char headers[] =
    "content-security-policy: default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; connect-src 'self'; img-src data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n"
    "cache-control: no-store\r\n"
    "x-content-type-options: nosniff\r\n"
    "referrer-policy: no-referrer\r\n";

static void dashboard_handle(void *owner, struct mg_resp *r,
                             const struct mg_route *route) {
  (void)owner;
  (void)route;
  mg_resp_send(r, 200, "text/html; charset=utf-8", headers, mg_dashboard_html,
               mg_dashboard_html_len);
  mg_resp_done(r);
}

bool mg_dashboard_route(struct mg_str path, int method, struct mg_route *out) {
  if (!mg_str_eq(path, MG_STR_LIT("/dashboard")) &&
      !mg_str_eq(path, MG_STR_LIT("/dashboard/")))
    return false;
  if (method != HTTP_GET && method != HTTP_HEAD) {
    out->status = 405;
    out->message = "Only GET and HEAD are allowed on this URL.";
    out->code = "method_not_allowed";
    out->allow = "GET, HEAD";
    return true;
  }
  out->handler = dashboard_handle;
  return true;
}
