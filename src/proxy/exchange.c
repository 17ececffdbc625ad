/* exchange.c - one proxied request.
 *
 *   start: body -> features (routing/request.c) -> alias -> target
 *   attempt: splice the upstream model name into the body, start a call
 *   on_data (streams): relay each piece as a chunk, pausing the upstream
 *     while the client's write queue is over the high watermark
 *   on_done: check the answer, respond, finish
 *   finish: metrics, release everything, let the connection go on
 *
 * Re-entrancy: writing to the client can fail and close the connection,
 * which calls mg_exchange_client_gone() on us while we are still inside one
 * of our own functions. Every entry point holds the exchange; finishing only
 * marks it, and the last release frees it (Redis' freeClientAsync idea). */
#include "proxy/exchange.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/log.h"
#include "common/time.h"
#include "config/config.h"
#include "proxy/conn.h"
#include "proxy/http.h"
#include "proxy/server.h"
#include "proxy/upstream.h"
#include "routing/request.h"
#include "routing/route.h"

#define EXTRA_MAX 1024

struct mg_exchange {
  struct mg_server *srv;        /* borrowed */
  struct mg_conn *conn;         /* borrowed; NULL once the client is gone */
  struct mg_config *cfg;        /* owned reference: the snapshot we began on */
  enum mg_endpoint ep;
  struct mg_buf body;           /* owned: the request body */
  struct mg_buf hdrcopy;        /* owned: header values routing uses */
  struct mg_request req;        /* slices into body and hdrcopy; its doc is
                                 * the server's scratch, valid in start only */
  uint32_t model_start, model_end; /* byte range of the `model` value */
  const struct mg_alias *alias; /* borrowed from cfg */
  const struct mg_flag *flag;   /* borrowed from cfg, or NULL */
  struct mg_flag_decision fd;   /* the flag's decision, when flag is set */
  const struct mg_target *target; /* borrowed from cfg */
  struct mg_up_call *call;      /* the call in flight, or NULL */
  char id[33];
  uint64_t t_start;             /* uv_hrtime() when the request was read */
  uint64_t up_ns;               /* time spent waiting for upstreams */
  int status;                   /* status sent to the client */
  int holds;                    /* entry points active on the stack */
  bool finished;
  bool in_data;                 /* inside on_data (curl's write callback) */
  bool stream_started;          /* the head of a stream was sent */
  bool stream_failed;           /* a stream ended with an error event */
  char extra[EXTRA_MAX];        /* x-modelgate-* header lines */
};

static void ex_free(struct mg_exchange *ex) {
  mg_request_free(&ex->req);
  mg_buf_free(&ex->body);
  mg_buf_free(&ex->hdrcopy);
  mg_config_unref(ex->cfg);
  free(ex);
}

static void hold(struct mg_exchange *ex) { ex->holds++; }

static void release(struct mg_exchange *ex) {
  if (--ex->holds == 0 && ex->finished)
    ex_free(ex);
}

/* ---- answering ------------------------------------------------------------ */

/* Append "name: value\r\n" to the extra headers, if it fits. */
static void extra_add(struct mg_exchange *ex, size_t *len, const char *name,
                      const char *value) {
  size_t nl = strlen(name), vl = strlen(value);
  if (*len + nl + vl + 5 > sizeof(ex->extra))
    return;
  memcpy(ex->extra + *len, name, nl);
  *len += nl;
  memcpy(ex->extra + *len, ": ", 2);
  *len += 2;
  memcpy(ex->extra + *len, value, vl);
  *len += vl;
  memcpy(ex->extra + *len, "\r\n", 3); /* with the terminator */
  *len += 2;
}

/* The decision headers (DESIGN.md, "What the client sees"), on every
 * answer: "-" where a request never reached a flag. */
static void set_extra(struct mg_exchange *ex) {
  char why[24];
  size_t len = 0;
  extra_add(ex, &len, "x-modelgate-decision", ex->id);
  if (ex->flag) {
    extra_add(ex, &len, "x-modelgate-flag", ex->flag->name);
    extra_add(ex, &len, "x-modelgate-variant",
              ex->flag->variants[ex->fd.variant].name);
    extra_add(ex, &len, "x-modelgate-reason",
              mg_reason_name(ex->fd.reason, ex->fd.rule, why, sizeof(why)));
  } else {
    extra_add(ex, &len, "x-modelgate-flag", "-");
    extra_add(ex, &len, "x-modelgate-variant", "-");
    extra_add(ex, &len, "x-modelgate-reason",
              ex->alias ? "direct" : "unrouted");
  }
  if (ex->target)
    extra_add(ex, &len, "x-modelgate-served-by", ex->target->name);
}

static void finish(struct mg_exchange *ex, int status) {
  struct mg_server *srv = ex->srv;
  struct mg_conn *c = ex->conn;
  uint64_t total_ns;

  if (ex->finished)
    return;
  ex->finished = true;
  if (status)
    ex->status = status;
  total_ns = uv_hrtime() - ex->t_start;
  mg_server__observe(srv, ex->alias ? ex->alias->name : "-",
                     ex->target ? ex->target->name : NULL, ex->status,
                     total_ns, ex->up_ns);
  mg_debug("request %s %s -> %s %d %.3f ms", ex->id,
           ex->alias ? ex->alias->name : "-",
           ex->target ? ex->target->name : "-", ex->status, total_ns / 1e6);
  ex->conn = NULL;
  if (c)
    mg_conn_request_done(c);
  mg_server__exchange_done(srv);
}

static void respond_error(struct mg_exchange *ex, int status,
                          const char *message, const char *code,
                          const char *param) {
  if (ex->conn)
    mg_conn_respond_error(ex->conn, status, message, code, param, ex->extra);
  finish(ex, status);
}

/* The client already has a 200 stream head: end it with an OpenAI-style
 * error event. Never a fake [DONE] (DESIGN.md, "Streaming"). */
static void fail_stream(struct mg_exchange *ex, const char *message,
                        const char *code) {
  struct mg_buf ev;
  mg_buf_init(&ev, 64u << 10);
  if (mg_buf_puts(&ev, "data: ") == 0 &&
      mg_http_error_json(&ev, message, "server_error", NULL, code) == 0 &&
      mg_buf_puts(&ev, "\n\n") == 0 && ex->conn) {
    mg_conn_stream_chunk(ex->conn, ev.data, ev.len);
    if (ex->conn)
      mg_conn_stream_end(ex->conn);
  }
  mg_buf_free(&ev);
  ex->stream_failed = true;
  finish(ex, 200);
}

static void describe_failure(const struct mg_exchange *ex,
                             const struct mg_up_call *call,
                             enum mg_up_result res, int *status, char *msg,
                             size_t n, const char **code) {
  const struct mg_timeouts *t = &ex->target->timeouts;
  const char *name = ex->target->name;
  *status = 502;
  switch (res) {
  case MG_UP_TIMEOUT_CONNECT:
    *status = 504;
    *code = "upstream_timeout";
    snprintf(msg, n, "Could not connect to the upstream of %s within %u ms.",
             name, t->connect_ms);
    break;
  case MG_UP_TIMEOUT_FIRST_BYTE:
    *status = 504;
    *code = "upstream_timeout";
    snprintf(msg, n, "The upstream of %s sent no answer within %u ms.", name,
             t->first_byte_ms);
    break;
  case MG_UP_TIMEOUT_IDLE:
    *status = 504;
    *code = "upstream_timeout";
    snprintf(msg, n, "The upstream of %s stalled for %u ms mid-answer.", name,
             t->idle_ms);
    break;
  case MG_UP_TIMEOUT_TOTAL:
    *status = 504;
    *code = "upstream_timeout";
    snprintf(msg, n, "The upstream of %s did not finish within %u ms.", name,
             t->total_ms);
    break;
  case MG_UP_CONNECT_ERROR:
    *code = "upstream_unreachable";
    snprintf(msg, n, "Could not reach the upstream of %s: %s", name,
             call->error[0] ? call->error : "connection failed");
    break;
  case MG_UP_RESET:
    *code = "upstream_reset";
    snprintf(msg, n,
             "The upstream of %s closed the connection without answering.",
             name);
    break;
  case MG_UP_TRUNCATED:
    *code = "upstream_truncated";
    snprintf(msg, n, "The upstream of %s sent an incomplete answer.", name);
    break;
  case MG_UP_TOO_BIG:
    *code = "upstream_too_large";
    snprintf(msg, n, "The answer of the upstream of %s exceeds %u bytes.",
             name, ex->cfg->limits.response_bytes);
    break;
  case MG_UP_PROTOCOL:
    *code = "upstream_invalid_response";
    snprintf(msg, n, "The upstream of %s did not answer in HTTP.", name);
    break;
  default:
    *code = "upstream_error";
    snprintf(msg, n, "The upstream of %s failed: %s", name,
             call->error[0] ? call->error : mg_up_result_name(res));
    break;
  }
}

/* A complete buffered answer: check it and pass it on byte for byte. */
static void respond_upstream(struct mg_exchange *ex, struct mg_up_call *call) {
  struct mg_json_doc *doc = &ex->srv->scratch;
  long st = call->status;
  bool json_ok;
  char msg[256];

  /* Answers can hold far more values than requests (logprobs): the token
   * ceiling is for request bodies only. */
  doc->max_tokens = UINT32_MAX;
  json_ok = call->body.len > 0 &&
            mg_json_parse(doc, call->body.data, call->body.len, NULL) == 0 &&
            doc->toks[0].type == MG_JSON_OBJECT;

  if (st >= 200 && st < 300) {
    if (!json_ok) {
      snprintf(msg, sizeof(msg),
               "The upstream of %s answered HTTP %ld with a body that is not "
               "a JSON object.",
               ex->target->name, st);
      respond_error(ex, 502, msg, "upstream_invalid_response", NULL);
      return;
    }
  } else if (st >= 400 && st < 600) {
    /* The upstream's own error, passed on as it is when it is JSON: a 4xx
     * about the client's request must reach the client unchanged. */
    if (!json_ok) {
      snprintf(msg, sizeof(msg),
               "The upstream of %s answered HTTP %ld with a body that is not "
               "JSON.",
               ex->target->name, st);
      respond_error(ex, 502, msg, "upstream_error", NULL);
      return;
    }
  } else {
    snprintf(msg, sizeof(msg), "The upstream of %s answered HTTP %ld.",
             ex->target->name, st);
    respond_error(ex, 502, msg, "upstream_invalid_response", NULL);
    return;
  }
  if (ex->conn)
    mg_conn_respond(ex->conn, (int)st, "application/json", ex->extra,
                    call->body.data, call->body.len);
  finish(ex, (int)st);
}

/* ---- upstream callbacks --------------------------------------------------- */

static size_t on_data(struct mg_up_call *call, const char *p, size_t n) {
  struct mg_exchange *ex = call->owner;
  size_t taken = 0;

  if (ex->conn == NULL)
    return 0;
  hold(ex);
  ex->in_data = true;
  if (!ex->stream_started) {
    ex->stream_started = true;
    ex->status = 200;
    mg_conn_stream_head(ex->conn, 200,
                        call->content_type[0] ? call->content_type
                                              : "text/event-stream",
                        ex->extra);
  } else if (mg_conn_congested(ex->conn)) {
    /* Keep the bytes in curl; the connection tells us when it drained. */
    ex->in_data = false;
    release(ex);
    return MG_UP_PAUSE;
  }
  if (ex->conn && mg_conn_stream_chunk(ex->conn, p, n) == 0 && ex->conn)
    taken = n;
  ex->in_data = false;
  release(ex);
  return taken;
}

static void on_done(struct mg_up_call *call, enum mg_up_result res) {
  struct mg_exchange *ex = call->owner;

  hold(ex);
  ex->call = NULL;
  ex->up_ns += call->t_end - call->t_start;
  if (ex->conn == NULL || res == MG_UP_ABORTED) {
    finish(ex, 499);
  } else if (ex->stream_started) {
    if (res == MG_UP_OK) {
      mg_conn_stream_end(ex->conn);
      finish(ex, 200);
    } else {
      int status;
      const char *code = NULL;
      char msg[512];
      describe_failure(ex, call, res, &status, msg, sizeof(msg), &code);
      fail_stream(ex, msg, code);
    }
  } else if (res == MG_UP_OK) {
    respond_upstream(ex, call);
  } else {
    int status;
    const char *code = NULL;
    char msg[512];
    describe_failure(ex, call, res, &status, msg, sizeof(msg), &code);
    mg_debug("request %s: %s", ex->id, msg);
    respond_error(ex, status, msg, code, NULL);
  }
  mg_up_call_release(call);
  release(ex);
}

static const struct mg_up_call_cbs call_cbs = {on_data, on_done};

/* ---- start ------------------------------------------------------------------ */

/* The body with `model` replaced by the target's upstream model name. */
static int upstream_body(struct mg_exchange *ex, char **out, size_t *len) {
  struct mg_buf b;
  int rc;

  mg_buf_init(&b, (size_t)-1 / 2);
  rc = mg_buf_reserve(&b, ex->body.len + strlen(ex->target->model) * 6 + 2);
  if (rc == 0)
    rc = mg_buf_append(&b, ex->body.data, ex->model_start);
  if (rc == 0)
    rc = mg_buf_json_str(&b, ex->target->model, strlen(ex->target->model));
  if (rc == 0)
    rc = mg_buf_append(&b, ex->body.data + ex->model_end,
                       ex->body.len - ex->model_end);
  if (rc) {
    mg_buf_free(&b);
    return rc;
  }
  *out = mg_buf_steal(&b, len);
  return 0;
}

static void attempt(struct mg_exchange *ex) {
  const struct mg_target *t = ex->target;
  struct mg_up_request ur;
  char *body = NULL;
  size_t len = 0;

  memset(&ur, 0, sizeof(ur));
  ur.target = mg_up_target_view(ex->cfg, t);
  if (ur.target == NULL || upstream_body(ex, &body, &len) != 0) {
    respond_error(ex, 500, "Out of memory.", "internal_error", NULL);
    return;
  }
  ur.endpoint = ex->ep;
  ur.body = body;
  ur.body_len = len;
  ur.timeouts = t->timeouts;
  ur.stream = ex->req.input.stream;
  ur.max_response = ex->cfg->limits.response_bytes;
  ur.ca_file = t->ca_file;
  ur.tls_verify = t->tls_verify;
  ex->call = mg_up_call_start(&ex->srv->up, &ur, &call_cbs, ex);
  if (ex->call == NULL) {
    free(body);
    respond_error(ex, 503, "Could not start the upstream request.",
                  "upstream_unavailable", NULL);
  }
}

/* Copy the headers routing reads (unit and attributes) so that they outlive
 * the connection's buffers. */
static void copy_headers(struct mg_exchange *ex, struct mg_conn *c) {
  static const char attr_prefix[] = "x-modelgate-attr-";
  const size_t plen = sizeof(attr_prefix) - 1;
  size_t need = 0;
  uint32_t i;

  for (i = 0; i < c->req.nhdrs; i++) {
    struct mg_str name = {c->req.head.data + c->req.hdrs[i].name_off,
                          c->req.hdrs[i].name_len};
    if (mg_str_has_prefix_nocase(name, "x-modelgate-"))
      need += c->req.hdrs[i].name_len + c->req.hdrs[i].value_len;
  }
  mg_buf_init(&ex->hdrcopy, need + 1);
  /* One reservation up front: slices into hdrcopy stay valid. */
  if (need == 0 || mg_buf_reserve(&ex->hdrcopy, need) != 0)
    return;
  for (i = 0; i < c->req.nhdrs; i++) {
    struct mg_str name = {c->req.head.data + c->req.hdrs[i].name_off,
                          c->req.hdrs[i].name_len};
    struct mg_str value = {c->req.head.data + c->req.hdrs[i].value_off,
                           c->req.hdrs[i].value_len};
    const char *v;
    if (mg_str_eq_nocase(name, MG_STR_LIT("x-modelgate-unit"))) {
      v = ex->hdrcopy.data + ex->hdrcopy.len;
      if (mg_buf_append(&ex->hdrcopy, value.p, value.len) == 0)
        ex->req.unit_header = (struct mg_str){v, value.len};
    } else if (name.len > plen && mg_str_has_prefix_nocase(name, attr_prefix)) {
      /* Attribute names are matched in lower case, as header names are
       * case-insensitive. */
      char *n = ex->hdrcopy.data + ex->hdrcopy.len;
      size_t k, nl = name.len - plen;
      if (mg_buf_append(&ex->hdrcopy, name.p + plen, nl) != 0)
        continue;
      for (k = 0; k < nl; k++)
        if (n[k] >= 'A' && n[k] <= 'Z')
          n[k] = (char)(n[k] | 0x20);
      v = ex->hdrcopy.data + ex->hdrcopy.len;
      if (mg_buf_append(&ex->hdrcopy, value.p, value.len) == 0)
        mg_request_add_attr(&ex->req, (struct mg_str){n, nl},
                            (struct mg_str){v, value.len});
    }
  }
}

static const char *request_error_code(enum mg_request_code c) {
  switch (c) {
  case MG_REQ_INVALID_JSON:
  case MG_REQ_NOT_OBJECT:
    return "invalid_json";
  case MG_REQ_MISSING_MODEL:
    return "missing_model";
  case MG_REQ_DUPLICATE_KEY:
    return "duplicate_key";
  case MG_REQ_TOO_COMPLEX:
    return "body_too_complex";
  default:
    return "invalid_request";
  }
}

void mg_exchange_start(struct mg_server *srv, struct mg_conn *c,
                       int endpoint) {
  struct mg_exchange *ex = calloc(1, sizeof(*ex));
  struct mg_request_error err;

  if (ex == NULL) {
    mg_conn_respond_error(c, 503, "Out of memory.", "internal_error", NULL,
                          NULL);
    mg_conn_request_done(c);
    return;
  }
  ex->srv = srv;
  ex->conn = c;
  ex->cfg = mg_config_ref(srv->cfg);
  ex->ep = (enum mg_endpoint)endpoint;
  ex->t_start = uv_hrtime();
  ex->body = c->req.body;
  mg_buf_init(&c->req.body, ex->body.max);
  mg_request_init(&ex->req, ex->ep);
  mg_server__new_id(srv, ex->id);
  c->ex = ex;
  srv->inflight++;
  hold(ex);
  set_extra(ex);
  copy_headers(ex, c);

  srv->scratch.max_tokens = ex->cfg->limits.json_tokens;
  if (mg_request_parse(&ex->req, ex->body.data ? ex->body.data : "",
                       ex->body.len, &srv->scratch, &err) != 0) {
    respond_error(ex, err.code == MG_REQ_NOMEM ? 503 : 400, err.message,
                  request_error_code(err.code), err.param);
    goto out;
  }
  ex->model_start = srv->scratch.toks[ex->req.model_tok].start;
  ex->model_end = srv->scratch.toks[ex->req.model_tok].end;
  ex->alias = mg_route_lookup(&ex->cfg->routes, ex->req.model);
  if (ex->alias == NULL) {
    char msg[300];
    snprintf(msg, sizeof(msg), "The model `%.*s` does not exist.",
             (int)(ex->req.model.len > 200 ? 200 : ex->req.model.len),
             ex->req.model.p);
    respond_error(ex, 404, msg, "model_not_found", "model");
    goto out;
  }
  if (ex->alias->flag) {
    const struct mg_flag *f = ex->alias->flag;
    /* The wall clock is read only for flags with a time window. */
    int64_t now = (f->start_ms != INT64_MIN || f->end_ms != INT64_MAX)
                      ? mg_wall_ms()
                      : 0;
    ex->flag = f;
    mg_flag_eval(f, &srv->flag_states[f->index], &ex->req, now,
                 mg_server__random(srv), &ex->fd);
    ex->target = f->variants[ex->fd.variant].target;
    mg_server__observe_flag(srv, f, &ex->fd);
  } else {
    ex->target = ex->alias->target;
  }
  set_extra(ex);
  attempt(ex);
out:
  release(ex);
}

void mg_exchange_client_gone(struct mg_exchange *ex) {
  if (ex->finished)
    return;
  ex->conn = NULL;
  /* Inside curl's write callback we may not touch the transfer: on_data
   * sees the missing connection and aborts it instead. */
  if (ex->in_data)
    return;
  hold(ex);
  if (ex->call) {
    struct mg_up_call *call = ex->call;
    ex->call = NULL;
    ex->up_ns += uv_hrtime() - call->t_start;
    mg_up_call_cancel(call);
  }
  finish(ex, 499);
  release(ex);
}

void mg_exchange_drained(struct mg_exchange *ex) {
  if (ex->finished || ex->call == NULL)
    return;
  hold(ex);
  mg_up_call_resume(ex->call);
  release(ex);
}

void mg_exchange_abort(struct mg_exchange *ex) {
  if (ex->finished)
    return;
  hold(ex);
  if (ex->call) {
    struct mg_up_call *call = ex->call;
    ex->call = NULL;
    ex->up_ns += uv_hrtime() - call->t_start;
    mg_up_call_cancel(call);
  }
  if (ex->stream_started)
    fail_stream(ex, "modelgate is shutting down.", "shutting_down");
  else
    respond_error(ex, 503, "modelgate is shutting down.", "shutting_down",
                  NULL);
  release(ex);
}
