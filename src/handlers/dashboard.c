/* dashboard.c - GET /dashboard (dashboard.h). */
#include "handlers/dashboard.h"

#include <stddef.h>
#include <string.h>

#include <llhttp.h>

#include "common/buf.h"
#include "server/worker.h"

/* Generated at build time from dashboard.html (cmake/embed.cmake). */
extern const char mg_dashboard_html[];
extern const size_t mg_dashboard_html_len;

/* Where the page learns whether the admin API wants a token: "token"
 * (reading and acting need it: the page asks before its first read),
 * "none" (reading is open, acting disabled). */
#define AUTH_MARK "@MG_AUTH@"

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
  struct mg_worker *w = owner;
  struct mg_wsnap *ws = mg_worker_snap(w);
  const char *auth = ws->snap->admin_token ? "token" : "none";
  const char *mark = strstr(mg_dashboard_html, AUTH_MARK);
  struct mg_buf page;
  (void)route;
  mg_buf_init(&page, mg_dashboard_html_len + 64);
  if (mark == NULL ||
      mg_buf_append(&page, mg_dashboard_html,
                    (size_t)(mark - mg_dashboard_html)) != 0 ||
      mg_buf_puts(&page, auth) != 0 ||
      mg_buf_puts(&page, mark + strlen(AUTH_MARK)) != 0)
    mg_resp_error(r, 500, "Could not serve the dashboard.", "internal_error",
                  NULL, NULL);
  else
    mg_resp_send(r, 200, "text/html; charset=utf-8", headers, page.data,
                 page.len);
  mg_buf_free(&page);
  mg_wsnap_release(ws);
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
