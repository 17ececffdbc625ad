/* ops.c - health, readiness, metrics and the model list (ops.h). */
#include "handlers/ops.h"

#include <stdio.h>
#include <string.h>

#include <llhttp.h>

#include "handlers/auth.h"
#include "server/worker.h"
#include "store/redis.h"
#include "telemetry/telemetry.h"

enum op { OP_HEALTHZ, OP_READYZ, OP_METRICS, OP_MODELS };
static const enum op ops[] = {OP_HEALTHZ, OP_READYZ, OP_METRICS, OP_MODELS};

/* Decision headers, as every answer carries them (issue 3). */
static void plain_extra(struct mg_worker *w, char *out, size_t n) {
  char id[33];
  mg_worker_new_id(w, id);
  snprintf(out, n,
           "x-modelgate-decision: %s\r\nx-modelgate-flag: -\r\n"
           "x-modelgate-variant: -\r\nx-modelgate-reason: unrouted\r\n",
           id);
}

static int hexval(char ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

static int model_json(struct mg_buf *b, const char *name, int64_t created) {
  if (mg_buf_puts(b, "{\"id\":") || mg_buf_json_str(b, name, strlen(name)))
    return -1;
  return mg_buf_printf(b,
                       ",\"object\":\"model\",\"created\":%lld,"
                       "\"owned_by\":\"modelgate\"}",
                       (long long)created);
}

/* GET /v1/models lists the aliases (what clients put in `model`), as
 * OpenAI's API does, so that SDK helpers and frameworks that list or
 * check models work; GET /v1/models/<id> is one of them, or 404. */
static void answer_models(struct mg_resp *r, const struct mg_snap *s,
                          const char *extra) {
  const struct mg_routes *rt = &s->cfg->routes;
  int64_t created = s->loaded_ms / 1000;
  struct mg_str path = mg_http_req_path(mg_resp_req(r));
  const char *p = path.p + 10; /* after "/v1/models" */
  size_t len = path.len - 10, i, n = 0;
  struct mg_buf out;
  char id[256];
  int rc = 0;

  mg_buf_init(&out, 16u << 20);
  if (len <= 1) { /* "/v1/models" or "/v1/models/" */
    rc = mg_buf_puts(&out, "{\"object\":\"list\",\"data\":[");
    for (i = 0; rc == 0 && i < rt->n; i++) {
      if (i)
        rc = mg_buf_puts(&out, ",");
      if (rc == 0)
        rc = model_json(&out, rt->v[i].name, created);
    }
    if (rc == 0)
      rc = mg_buf_puts(&out, "]}");
  } else {
    const struct mg_alias *a = NULL;
    for (i = 1; i < len && n < sizeof(id) - 1; i++) {
      int hi, lo;
      if (p[i] == '%' && i + 2 < len && (hi = hexval(p[i + 1])) >= 0 &&
          (lo = hexval(p[i + 2])) >= 0) {
        id[n++] = (char)(hi * 16 + lo);
        i += 2;
      } else {
        id[n++] = p[i];
      }
    }
    id[n] = '\0';
    if (i == len && memchr(id, '\0', n) == NULL)
      a = mg_map_get(&rt->by_name, id, n);
    if (a == NULL) {
      char msg[320];
      snprintf(msg, sizeof(msg), "The model '%.200s' does not exist.", id);
      mg_resp_error(r, 404, msg, "model_not_found", "model", extra);
      mg_buf_free(&out);
      return;
    }
    rc = model_json(&out, a->name, created);
  }
  if (rc == 0)
    mg_resp_send(r, 200, "application/json", extra, out.data, out.len);
  else
    mg_resp_error(r, 500, "Could not list the models.", NULL, NULL, extra);
  mg_buf_free(&out);
}

static void ops_handle(void *owner, struct mg_resp *r,
                       const struct mg_route *route) {
  struct mg_worker *w = owner;
  struct mg_wsnap *ws = mg_worker_snap(w);
  char extra[256];

  plain_extra(w, extra, sizeof(extra));
  switch (*(const enum op *)route->arg) {
  case OP_HEALTHZ:
    mg_resp_send(r, 200, "application/json", extra, "{\"status\":\"ok\"}", 15);
    break;
  case OP_READYZ:
    if (mg_resp_draining(r))
      mg_resp_send(r, 503, "application/json", extra,
                   "{\"status\":\"draining\"}", 21);
    else if (w->sh->store) {
      /* Ready either way: the last known state serves while the fleet's
       * store is away; the detail says so (issue 13.6). */
      struct mg_buf b;
      mg_buf_init(&b, 1u << 16);
      if (mg_buf_puts(&b, "{\"status\":\"ready\",\"store\":") == 0 &&
          mg_store_ready_json(w->sh->store, &b) == 0 &&
          mg_buf_puts(&b, "}") == 0)
        mg_resp_send(r, 200, "application/json", extra, b.data, b.len);
      else
        mg_resp_send(r, 200, "application/json", extra,
                     "{\"status\":\"ready\"}", 18);
      mg_buf_free(&b);
    } else
      mg_resp_send(r, 200, "application/json", extra,
                   "{\"status\":\"ready\"}", 18);
    break;
  case OP_METRICS: {
    struct mg_tel_live live;
    memset(&live, 0, sizeof(live));
    struct mg_buf out;
    unsigned i;
    for (i = 0; i < w->sh->nworkers; i++)
      mg_worker_live(&w->sh->workers[i], &live);
    mg_buf_init(&out, 64u << 20);
    if (mg_tel_render(w->sh->tm, w->sh->rt, ws->snap,
                      (int64_t)uv_now(w->loop), &live, &out) == 0 &&
        (w->sh->store == NULL || mg_store_metrics(w->sh->store, &out) == 0))
      mg_resp_send(r, 200, "text/plain; version=0.0.4; charset=utf-8", extra,
                   out.data ? out.data : "", out.len);
    else
      mg_resp_error(r, 500, "Could not render metrics.", NULL, NULL, extra);
    mg_buf_free(&out);
    break;
  }
  case OP_MODELS: {
    /* With client keys, the model list is theirs too, as on OpenAI. */
    const char *client;
    if (!mg_auth_client(ws->snap->cfg, mg_resp_req(r), &client))
      mg_resp_error(r, 401, mg_auth_message(mg_resp_req(r)),
                    "invalid_api_key", NULL, extra);
    else
      answer_models(r, ws->snap, extra);
    break;
  }
  }
  mg_wsnap_release(ws);
  mg_resp_done(r);
}

bool mg_ops_route(struct mg_str path, int method, bool models,
                  struct mg_route *out) {
  const enum op *op = NULL;
  if (models && path.len >= 10 && memcmp(path.p, "/v1/models", 10) == 0 &&
      (path.len == 10 || path.p[10] == '/'))
    op = &ops[OP_MODELS];
  else if (mg_str_eq(path, MG_STR_LIT("/healthz")))
    op = &ops[OP_HEALTHZ];
  else if (mg_str_eq(path, MG_STR_LIT("/readyz")))
    op = &ops[OP_READYZ];
  else if (mg_str_eq(path, MG_STR_LIT("/metrics")))
    op = &ops[OP_METRICS];
  if (op == NULL)
    return false;
  if (method != HTTP_GET && method != HTTP_HEAD) {
    out->status = 405;
    out->message = "Only GET and HEAD are allowed on this URL.";
    out->code = "method_not_allowed";
    out->allow = "GET, HEAD";
    return true;
  }
  out->handler = ops_handle;
  out->arg = op;
  return true;
}
