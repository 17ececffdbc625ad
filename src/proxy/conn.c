/* conn.c - one client connection.
 *
 * Reads are parsed as they arrive with llhttp in strict mode. One request is
 * answered at a time: on_message_complete pauses the parser, the bytes after
 * the request (pipelined ones) wait in `pending`, and the parser resumes on
 * them once the answer is queued. Parser callbacks only record; decisions
 * are taken after llhttp_execute returns (STYLE.md). */
#include "proxy/conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/time.h"
#include "config/config.h"
#include "decisions/record.h"
#include "proxy/admin.h"
#include "proxy/exchange.h"
#include "proxy/http.h"
#include "proxy/server.h"
#include "routing/target.h"

enum req_kind {
  KIND_NONE,
  KIND_PROXY,
  KIND_HEALTHZ,
  KIND_READYZ,
  KIND_METRICS,
  KIND_MODELS, /* GET /v1/models[/<id>]: the aliases clients may name */
  KIND_REJECT, /* answer req.reject_status once the body has been read */
  KIND_ADMIN,  /* the admin API (admin listener only) */
};

static const struct mg_limits *limits(const struct mg_conn *c) {
  return &c->srv->cfg->limits;
}

static const struct mg_server_cfg *scfg(const struct mg_conn *c) {
  return &c->srv->cfg->server;
}

static void conn_process(struct mg_conn *c);
static void conn_arm(struct mg_conn *c);
static void conn_fail(struct mg_conn *c);
static void conn_finish(struct mg_conn *c);
static void read_start(struct mg_conn *c);

/* The bounds of a lingering close (conn_finish): in all, and without a
 * byte from the client. */
#define LINGER_MS 5000
#define LINGER_IDLE_MS 1000

/* Decision headers for answers that never reached routing: every answer
 * carries them (issue 3), with "-" for what does not apply. id gets the
 * decision id. */
#define PLAIN_EXTRA_MAX 256
static void plain_extra(struct mg_conn *c, char out[PLAIN_EXTRA_MAX],
                        char id[33]) {
  mg_server__new_id(c->srv, id);
  snprintf(out, PLAIN_EXTRA_MAX,
           "x-modelgate-decision: %s\r\nx-modelgate-flag: -\r\n"
           "x-modelgate-variant: -\r\nx-modelgate-reason: unrouted\r\n",
           id);
}

/* The decision record and the request metrics (route "-") of an answer
 * given before routing: a request refused at the HTTP level (bad framing, a
 * limit, a timeout, an unknown URL, a method the URL does not take). Model
 * requests that reach routing are recorded by the exchange; the admin
 * listener and the operational endpoints (health, metrics, the model list)
 * choose no model and are not recorded. */
static void plain_record(struct mg_conn *c, const char *id, int status) {
  struct mg_record r;
  uint64_t now = uv_now(c->srv->loop);
  if (c->admin)
    return;
  memset(&r, 0, sizeof(r));
  r.ts_ms = mg_wall_ms();
  r.id = id;
  r.config = c->srv->cfg->hash;
  r.endpoint = c->req.endpoint >= 0
                   ? mg_endpoint_name((enum mg_endpoint)c->req.endpoint)
                   : NULL;
  r.unit_kind = "request";
  r.bucket = -1;
  r.reason = "unrouted";
  r.tier = "none";
  r.cache = "off";
  r.status = status;
  r.error = status >= 400;
  r.ms = now > c->started ? (double)(now - c->started) : 0.0;
  r.ttfb_ms = r.ms;
  r.overhead_us = (uint64_t)(r.ms * 1000);
  r.tokens_prompt = r.tokens_completion = -1;
  mg_server__decision(c->srv, &r);
  mg_server__observe(c->srv, "-", NULL, status,
                     (uint64_t)(r.ms * 1e6), 0);
}

/* ---- parser callbacks ------------------------------------------------------ */

static int parse_error(struct mg_conn *c, int status, const char *msg,
                       const char *code) {
  c->err_status = status;
  c->err_msg = msg;
  c->err_code = code;
  return -1;
}

static int on_message_begin(llhttp_t *p) {
  struct mg_conn *c = p->data;
  struct mg_http_req *r = &c->req;

  mg_buf_reset(&r->head);
  mg_buf_reset(&r->body);
  r->url_len = 0;
  r->nhdrs = 0;
  r->discarded = 0;
  r->kind = KIND_NONE;
  r->endpoint = -1;
  r->reject_status = 0;
  r->reject_msg = NULL;
  r->reject_code = NULL;
  r->in_name = r->in_value = false;
  r->keep_alive = false;
  r->http10 = false;
  r->expect_continue = false;
  r->answer_now = false;
  c->state = MG_CONN_HEAD;
  c->fresh = false;
  c->started = uv_now(c->srv->loop);
  conn_arm(c);
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  struct mg_conn *c = p->data;
  if (c->req.url_len + len > limits(c)->url_bytes)
    return parse_error(c, 414, "The request URL is too long.", "url_too_long");
  if (mg_buf_append(&c->req.head, at, len))
    return parse_error(c, 431, "The request headers are too large.",
                       "headers_too_large");
  c->req.url_len += (uint32_t)len;
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  struct mg_conn *c = p->data;
  struct mg_http_req *r = &c->req;
  struct mg_http_hdr *h;

  if (!r->in_name) {
    if (r->nhdrs == limits(c)->headers)
      return parse_error(c, 431, "The request has too many header fields.",
                         "too_many_headers");
    h = &r->hdrs[r->nhdrs];
    h->name_off = (uint32_t)r->head.len;
    h->name_len = 0;
    h->value_off = 0;
    h->value_len = 0;
    r->in_name = true;
  }
  h = &r->hdrs[r->nhdrs];
  if (mg_buf_append(&r->head, at, len))
    return parse_error(c, 431, "The request headers are too large.",
                       "headers_too_large");
  h->name_len += (uint32_t)len;
  return 0;
}

static int on_header_field_complete(llhttp_t *p) {
  struct mg_conn *c = p->data;
  c->req.in_name = false;
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  struct mg_conn *c = p->data;
  struct mg_http_req *r = &c->req;
  struct mg_http_hdr *h = &r->hdrs[r->nhdrs];

  if (!r->in_value) {
    h->value_off = (uint32_t)r->head.len;
    h->value_len = 0;
    r->in_value = true;
  }
  if (mg_buf_append(&r->head, at, len))
    return parse_error(c, 431, "The request headers are too large.",
                       "headers_too_large");
  h->value_len += (uint32_t)len;
  return 0;
}

static int on_header_value_complete(llhttp_t *p) {
  struct mg_conn *c = p->data;
  struct mg_http_req *r = &c->req;
  struct mg_http_hdr *h = &r->hdrs[r->nhdrs];

  if (!r->in_value) { /* an empty value: no data callback came */
    h->value_off = (uint32_t)r->head.len;
    h->value_len = 0;
  }
  r->in_value = false;
  r->nhdrs++;
  return 0;
}

static struct mg_str hdr_name(const struct mg_conn *c, uint32_t i) {
  struct mg_str s = {c->req.head.data + c->req.hdrs[i].name_off,
                     c->req.hdrs[i].name_len};
  return s;
}

static struct mg_str hdr_value(const struct mg_conn *c, uint32_t i) {
  struct mg_str s = {c->req.head.data + c->req.hdrs[i].value_off,
                     c->req.hdrs[i].value_len};
  return s;
}

bool mg_conn_header(const struct mg_conn *c, const char *name,
                    struct mg_str *value) {
  struct mg_str n = mg_str_c(name);
  uint32_t i;
  for (i = 0; i < c->req.nhdrs; i++)
    if (mg_str_eq_nocase(hdr_name(c, i), n)) {
      *value = hdr_value(c, i);
      return true;
    }
  return false;
}

static void reject(struct mg_http_req *r, int status, const char *msg,
                   const char *code) {
  r->kind = KIND_REJECT;
  r->reject_status = status;
  r->reject_msg = msg;
  r->reject_code = code;
}

/* Decide what the request is for, from its method and path. */
static void classify(struct mg_conn *c) {
  struct mg_http_req *r = &c->req;
  const char *url = r->head.data ? r->head.data : "";
  size_t len = r->url_len, i;
  int m = r->method;

  /* Absolute form ("http://host/v1/...") is accepted as RFC 9112, 3.2.2
   * requires of servers; only the path matters here. */
  if (len > 7 && (strncmp(url, "http://", 7) == 0 ||
                  (len > 8 && strncmp(url, "https://", 8) == 0))) {
    const char *slash = memchr(url + 8, '/', len - 8);
    if (slash == NULL) {
      url = "/";
      len = 1;
    } else {
      len -= (size_t)(slash - url);
      url = slash;
    }
  }
  for (i = 0; i < len; i++)
    if (url[i] == '?' || url[i] == '#')
      break;
  len = i;

  /* The admin listener serves the admin API and the health and metrics
   * endpoints, never model traffic. */
  if (c->admin) {
    if (len > 7 && memcmp(url, "/admin/", 7) == 0) {
      r->kind = KIND_ADMIN;
      return;
    }
  } else {
    int ep = mg_endpoint_from_path(url, len);
    if (ep >= 0) {
      r->endpoint = ep;
      if (m != HTTP_POST) {
        reject(r, 405, "Only POST is allowed on this URL.",
               "method_not_allowed");
        return;
      }
      r->kind = KIND_PROXY;
      return;
    }
  }
  if (!c->admin && len >= 10 && memcmp(url, "/v1/models", 10) == 0 &&
      (len == 10 || url[10] == '/')) {
    if (m != HTTP_GET && m != HTTP_HEAD) {
      reject(r, 405, "Only GET and HEAD are allowed on this URL.",
             "method_not_allowed");
      return;
    }
    r->kind = KIND_MODELS;
    return;
  }
  if ((len == 8 && memcmp(url, "/healthz", 8) == 0) ||
      (len == 7 && memcmp(url, "/readyz", 7) == 0) ||
      (len == 8 && memcmp(url, "/metrics", 8) == 0)) {
    if (m != HTTP_GET && m != HTTP_HEAD) {
      reject(r, 405, "Only GET and HEAD are allowed on this URL.",
             "method_not_allowed");
      return;
    }
    r->kind = url[1] == 'h' ? KIND_HEALTHZ
                            : (url[1] == 'r' ? KIND_READYZ : KIND_METRICS);
    return;
  }
  reject(r, 404, NULL, "unknown_url");
}

static int on_headers_complete(llhttp_t *p) {
  struct mg_conn *c = p->data;
  struct mg_http_req *r = &c->req;
  struct mg_str v;

  r->method = llhttp_get_method(p);
  r->http10 = llhttp_get_http_major(p) == 1 && llhttp_get_http_minor(p) == 0;
  if (r->method == HTTP_CONNECT)
    return parse_error(c, 405, "CONNECT is not supported.",
                       "method_not_allowed");
  classify(c);

  /* A declared body over the limit is refused before it is read. */
  if ((p->flags & F_CONTENT_LENGTH) &&
      p->content_length > limits(c)->body_bytes)
    return parse_error(c, 413, "The request body is too large.",
                       "body_too_large");

  if (mg_conn_header(c, "expect", &v)) {
    if (!mg_str_eq_nocase(v, MG_STR_LIT("100-continue"))) {
      reject(r, 417, "Only the expectation 100-continue is supported.",
             "expectation_failed");
    } else if (r->kind != KIND_REJECT && !r->http10) {
      /* The client waits for this before sending the body (RFC 9110,
       * 10.1.1). */
      r->expect_continue = true;
    }
    if (r->kind == KIND_REJECT) {
      /* A refused request that expects 100-continue gets its final answer
       * now, without its body; the connection then closes, as the client
       * may still send the body (RFC 9110, 10.1.1). */
      r->keep_alive = false;
      r->answer_now = true;
      return HPE_PAUSED;
    }
  }
  c->state = MG_CONN_BODY;
  c->started = c->last_progress = uv_now(c->srv->loop);
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  struct mg_conn *c = p->data;
  struct mg_http_req *r = &c->req;

  /* Refused requests still have their body read (and counted against the
   * limit) so that the connection can be kept. */
  if (r->kind != KIND_PROXY && r->kind != KIND_ADMIN) {
    if (r->discarded + len > limits(c)->body_bytes)
      return parse_error(c, 413, "The request body is too large.",
                         "body_too_large");
    r->discarded += len;
    return 0;
  }
  if (mg_buf_append(&r->body, at, len))
    return parse_error(c, 413, "The request body is too large.",
                       "body_too_large");
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  struct mg_conn *c = p->data;
  c->req.keep_alive = llhttp_should_keep_alive(p) && !p->upgrade;
  return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- writing --------------------------------------------------------------- */

struct wreq {
  uv_write_t req;
  struct mg_conn *conn; /* borrowed: a connection is freed only after its
                         * writes called back (UV_ECANCELED included) */
  size_t len;
  char data[];
};

static void on_write(uv_write_t *req, int status) {
  struct wreq *w = (struct wreq *)req;
  struct mg_conn *c = w->conn;

  c->queued -= w->len;
  free(w);
  if (c->state == MG_CONN_CLOSING)
    return;
  if (status < 0) {
    mg_debug("conn: write failed: %s", uv_strerror(status));
    conn_fail(c);
    return;
  }
  c->last_progress = uv_now(c->srv->loop);
  if (c->queued == 0 && c->close_after) {
    conn_finish(c);
    return;
  }
  if (c->drain_wait && c->queued <= limits(c)->write_low_bytes) {
    c->drain_wait = false;
    if (c->ex)
      mg_exchange_drained(c->ex);
    if (c->state == MG_CONN_CLOSING)
      return;
  }
  conn_arm(c);
  if (c->state == MG_CONN_IDLE && c->queued <= limits(c)->write_low_bytes)
    conn_process(c);
}

int mg_conn_write(struct mg_conn *c, const uv_buf_t *bufs, unsigned n) {
  size_t total = 0, skip = 0, off = 0;
  struct wreq *w;
  unsigned i;
  uv_buf_t b;
  int r;

  if (c->state == MG_CONN_CLOSING)
    return -EPIPE;
  for (i = 0; i < n; i++)
    total += bufs[i].len;
  if (total == 0)
    return 0;
  /* Most answers fit the socket buffer: write them straight from the
   * caller's memory and copy nothing. uv_try_write refuses (EAGAIN) while
   * earlier writes are queued, which keeps the bytes in order. */
  if (c->queued == 0) {
    r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
    if (r >= 0 && (size_t)r == total)
      return 0;
    if (r < 0 && r != UV_EAGAIN) {
      conn_fail(c);
      return r;
    }
    if (r > 0)
      skip = (size_t)r;
  }
  w = malloc(sizeof(*w) + total - skip);
  if (w == NULL) {
    conn_fail(c);
    return -ENOMEM;
  }
  for (i = 0; i < n; i++) {
    size_t l = bufs[i].len;
    const char *p = bufs[i].base;
    if (skip >= l) {
      skip -= l;
      continue;
    }
    memcpy(w->data + off, p + skip, l - skip);
    off += l - skip;
    skip = 0;
  }
  w->conn = c;
  w->len = off;
  b = uv_buf_init(w->data, (unsigned)off);
  r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
  if (r < 0) {
    free(w);
    conn_fail(c);
    return r;
  }
  if (c->queued == 0)
    c->last_progress = uv_now(c->srv->loop);
  c->queued += off;
  conn_arm(c);
  return 0;
}

bool mg_conn_congested(struct mg_conn *c) {
  if (c->queued > limits(c)->write_high_bytes) {
    c->drain_wait = true;
    return true;
  }
  return false;
}

static bool closing_after(const struct mg_conn *c) {
  return !c->req.keep_alive || c->srv->draining;
}

static int send_head_body(struct mg_conn *c, struct mg_head *head,
                          const char *body, size_t len) {
  uv_buf_t bufs[2];
  unsigned n = 1;
  if (head->overflow) {
    mg_error("conn: response head over %d bytes", MG_HEAD_MAX);
    conn_fail(c);
    return -E2BIG;
  }
  bufs[0] = uv_buf_init(head->buf, (unsigned)head->len);
  /* HEAD answers carry the length of the body they do not send. */
  if (len && c->req.method != HTTP_HEAD) {
    bufs[1] = uv_buf_init((char *)body, (unsigned)len);
    n = 2;
  }
  return mg_conn_write(c, bufs, n);
}

int mg_conn_respond(struct mg_conn *c, int status, const char *content_type,
                    const char *extra_headers, const char *body, size_t len) {
  struct mg_head head;
  mg_head_begin(&head, status, c->srv->date);
  mg_head_end(&head, content_type, (int64_t)len, closing_after(c),
              extra_headers);
  return send_head_body(c, &head, body, len);
}

int mg_conn_respond_error(struct mg_conn *c, int status, const char *message,
                          const char *code, const char *param,
                          const char *extra_headers) {
  struct mg_buf body;
  int rc;
  mg_buf_init(&body, 64u << 10);
  rc = mg_http_error_json(&body, message, mg_http_error_type(status), param,
                          code);
  if (rc == 0)
    rc = mg_conn_respond(c, status, "application/json", extra_headers,
                         body.data, body.len);
  mg_buf_free(&body);
  return rc;
}

int mg_conn_stream_head(struct mg_conn *c, int status,
                        const char *content_type, const char *extra_headers) {
  struct mg_head head;
  int rc;
  mg_head_begin(&head, status, c->srv->date);
  mg_head_puts(&head, "cache-control: no-cache\r\n");
  /* HTTP/1.0 has no chunked coding: the end of the stream is the end of
   * the connection. */
  mg_head_end(&head, content_type, c->req.http10 ? -2 : -1,
              closing_after(c) || c->req.http10, extra_headers);
  rc = send_head_body(c, &head, NULL, 0);
  if (c->req.http10)
    c->req.keep_alive = false;
  return rc;
}

int mg_conn_stream_chunk(struct mg_conn *c, const char *p, size_t n) {
  char size[24];
  uv_buf_t bufs[3];
  int l;
  if (n == 0)
    return 0;
  if (c->req.http10) {
    bufs[0] = uv_buf_init((char *)p, (unsigned)n);
    return mg_conn_write(c, bufs, 1);
  }
  l = snprintf(size, sizeof(size), "%zx\r\n", n);
  bufs[0] = uv_buf_init(size, (unsigned)l);
  bufs[1] = uv_buf_init((char *)p, (unsigned)n);
  bufs[2] = uv_buf_init("\r\n", 2);
  return mg_conn_write(c, bufs, 3);
}

int mg_conn_stream_end(struct mg_conn *c) {
  uv_buf_t b = uv_buf_init("0\r\n\r\n", 5);
  if (c->req.http10)
    return 0;
  return mg_conn_write(c, &b, 1);
}

/* ---- timers ---------------------------------------------------------------- */

static void on_timer(uv_timer_t *t) {
  struct mg_conn *c = t->data;
  uint64_t now = uv_now(c->srv->loop);

  switch (c->state) {
  case MG_CONN_IDLE:
    /* An idle keep-alive connection just goes. */
    mg_conn_close(c);
    return;
  case MG_CONN_HEAD:
  case MG_CONN_BODY: {
    /* Slow headers (slowloris) or a stalled body: say so, then close. */
    bool head = c->state == MG_CONN_HEAD;
    char extra[PLAIN_EXTRA_MAX], id[33];
    c->req.keep_alive = false;
    c->close_after = true;
    c->linger = true;
    c->state = MG_CONN_BUSY;
    plain_extra(c, extra, id);
    mg_conn_respond_error(c, 408,
                          head ? "The request headers did not arrive in time."
                               : "The request body did not arrive in time.",
                          "request_timeout", NULL, extra);
    plain_record(c, id, 408);
    if (c->state != MG_CONN_CLOSING && c->queued == 0)
      conn_finish(c);
    return;
  }
  case MG_CONN_BUSY:
    if (c->queued > 0 &&
        now >= c->last_progress + scfg(c)->send_timeout_ms) {
      mg_debug("conn: client read nothing for %u ms, closing",
               scfg(c)->send_timeout_ms);
      conn_fail(c);
      return;
    }
    conn_arm(c);
    return;
  case MG_CONN_LINGER:
    if (now >= c->started + LINGER_MS ||
        now >= c->last_progress + LINGER_IDLE_MS) {
      mg_conn_close(c);
      return;
    }
    conn_arm(c);
    return;
  case MG_CONN_CLOSING:
    return;
  }
}

/* Arm the one timer for whatever the connection waits for now. */
static void conn_arm(struct mg_conn *c) {
  const struct mg_server_cfg *s = scfg(c);
  uint64_t now = uv_now(c->srv->loop), deadline;

  switch (c->state) {
  case MG_CONN_IDLE:
    deadline = c->started +
               (c->fresh ? s->header_timeout_ms : s->keepalive_timeout_ms);
    break;
  case MG_CONN_HEAD:
    deadline = c->started + s->header_timeout_ms;
    break;
  case MG_CONN_BODY:
    deadline = c->last_progress + s->body_timeout_ms;
    break;
  case MG_CONN_BUSY:
    if (c->queued == 0) {
      uv_timer_stop(&c->timer);
      return;
    }
    deadline = c->last_progress + s->send_timeout_ms;
    break;
  case MG_CONN_LINGER:
    deadline = c->started + LINGER_MS;
    if (c->last_progress + LINGER_IDLE_MS < deadline)
      deadline = c->last_progress + LINGER_IDLE_MS;
    break;
  default:
    return;
  }
  uv_timer_start(&c->timer, on_timer, deadline > now ? deadline - now : 0, 0);
}

/* ---- reading and dispatch ------------------------------------------------- */

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
static void answer_models(struct mg_conn *c, const char *extra) {
  const struct mg_routes *rt = &c->srv->cfg->routes;
  int64_t created = c->srv->config_loaded_ms / 1000;
  const char *url = c->req.head.data ? c->req.head.data : "";
  const char *p = url;
  size_t len, i;
  struct mg_buf out;
  char id[256];
  size_t n = 0;
  int rc = 0;

  /* classify() found "/v1/models" in the path, maybe after "http://host". */
  while (p + 10 <= url + c->req.url_len && memcmp(p, "/v1/models", 10) != 0)
    p++;
  len = c->req.url_len - (size_t)(p - url) - 10;
  p += 10;
  for (i = 0; i < len; i++)
    if (p[i] == '?' || p[i] == '#')
      break;
  len = i;
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
      if (p[i] == '%' && i + 2 < len &&
          (hi = hexval(p[i + 1])) >= 0 && (lo = hexval(p[i + 2])) >= 0) {
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
      mg_conn_respond_error(c, 404, msg, "model_not_found", "model", extra);
      mg_buf_free(&out);
      return;
    }
    rc = model_json(&out, a->name, created);
  }
  if (rc == 0)
    mg_conn_respond(c, 200, "application/json", extra, out.data, out.len);
  else
    mg_conn_respond_error(c, 500, "Could not list the models.", NULL, NULL,
                          extra);
  mg_buf_free(&out);
}

static void answer_internal(struct mg_conn *c) {
  struct mg_server *srv = c->srv;
  char extra[PLAIN_EXTRA_MAX + 32], id[33];

  plain_extra(c, extra, id);
  switch (c->req.kind) {
  case KIND_HEALTHZ:
    mg_conn_respond(c, 200, "application/json", extra, "{\"status\":\"ok\"}",
                    15);
    break;
  case KIND_READYZ:
    if (srv->draining)
      mg_conn_respond(c, 503, "application/json", extra,
                      "{\"status\":\"draining\"}", 21);
    else
      mg_conn_respond(c, 200, "application/json", extra,
                      "{\"status\":\"ready\"}", 18);
    break;
  case KIND_METRICS: {
    struct mg_buf out;
    mg_buf_init(&out, 64u << 20);
    if (mg_server__render_metrics(srv, &out) == 0)
      mg_conn_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8",
                      extra, out.data ? out.data : "", out.len);
    else
      mg_conn_respond_error(c, 500, "Could not render metrics.", NULL, NULL,
                            extra);
    mg_buf_free(&out);
    break;
  }
  case KIND_MODELS:
    answer_models(c, extra);
    break;
  case KIND_REJECT: {
    char msg[160];
    const char *text = c->req.reject_msg;
    if (text == NULL) {
      /* OpenAI's wording for an unknown URL. */
      const char *url = c->req.head.data ? c->req.head.data : "";
      int ul = (int)(c->req.url_len > 100 ? 100 : c->req.url_len);
      snprintf(msg, sizeof(msg), "Invalid URL (%s %.*s)",
               llhttp_method_name((llhttp_method_t)c->req.method), ul, url);
      text = msg;
    }
    if (c->req.reject_status == 405) {
      snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra),
               "allow: %s\r\n", c->req.endpoint >= 0 ? "POST" : "GET, HEAD");
    }
    mg_conn_respond_error(c, c->req.reject_status, text, c->req.reject_code,
                          NULL, extra);
    plain_record(c, id, c->req.reject_status);
    break;
  }
  default:
    mg_conn_respond_error(c, 500, "Unroutable request.", NULL, NULL, extra);
    break;
  }
  mg_conn_request_done(c);
}

static void dispatch(struct mg_conn *c) {
  c->state = MG_CONN_BUSY;
  c->last_progress = uv_now(c->srv->loop);
  conn_arm(c);
  if (c->req.kind == KIND_PROXY)
    mg_exchange_start(c->srv, c, c->req.endpoint);
  else if (c->req.kind == KIND_ADMIN)
    mg_admin_handle(c->srv, c);
  else
    answer_internal(c);
}

/* A parse failure: answer with a clear error and close. */
static void fail_parse(struct mg_conn *c, llhttp_errno_t err) {
  int status = c->err_status;
  const char *msg = c->err_msg, *code = c->err_code;
  char extra[PLAIN_EXTRA_MAX + 32], id[33];

  if (status == 0) {
    switch (err) {
    case HPE_INVALID_METHOD:
      status = 405;
      msg = "The request method is not supported.";
      code = "method_not_allowed";
      break;
    case HPE_INVALID_VERSION:
      status = 505;
      msg = "Only HTTP/1.1 and HTTP/1.0 are supported.";
      code = "http_version_not_supported";
      break;
    case HPE_UNEXPECTED_CONTENT_LENGTH:
      status = 400;
      msg = "The request has a duplicate Content-Length, or a "
            "Content-Length together with Transfer-Encoding.";
      code = "bad_framing";
      break;
    case HPE_INVALID_CHUNK_SIZE:
    case HPE_INVALID_TRANSFER_ENCODING:
      status = 400;
      msg = "The request body's chunked encoding is malformed.";
      code = "bad_chunking";
      break;
    case HPE_INVALID_CONTENT_LENGTH:
      status = 400;
      msg = "The request's Content-Length is invalid.";
      code = "bad_framing";
      break;
    default:
      status = 400;
      msg = "The request is not valid HTTP/1.1.";
      code = "bad_request";
      break;
    }
  }
  mg_debug("conn: bad request (%s): %s", llhttp_errno_name(err),
           llhttp_get_error_reason(&c->parser)
               ? llhttp_get_error_reason(&c->parser)
               : "");
  c->req.keep_alive = false;
  c->close_after = true;
  c->linger = true;
  c->state = MG_CONN_BUSY;
  uv_timer_stop(&c->timer);
  plain_extra(c, extra, id);
  /* A method llhttp does not know: the URL was never read, so name every
   * method modelgate accepts anywhere (RFC 9110, 15.5.6). */
  if (status == 405)
    strcat(extra, "allow: GET, HEAD, POST\r\n");
  mg_conn_respond_error(c, status, msg, code, NULL, extra);
  plain_record(c, id, status);
  if (c->state != MG_CONN_CLOSING && c->queued == 0)
    conn_finish(c);
}

/* Feed bytes to the parser. Bytes after a complete request are kept in
 * pending. Returns true when the caller may go on feeding. */
static bool conn_feed(struct mg_conn *c, const char *data, size_t len) {
  llhttp_errno_t err;
  const char *pos;

  if (len == 0)
    return true;
  err = llhttp_execute(&c->parser, data, len);
  if (err == HPE_OK) {
    if (c->state == MG_CONN_BODY) {
      c->last_progress = uv_now(c->srv->loop);
      conn_arm(c);
    }
    if (c->req.expect_continue) {
      static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
      uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
      c->req.expect_continue = false;
      mg_conn_write(c, &b, 1);
    }
    return true;
  }
  if (err == HPE_PAUSED && c->req.answer_now) {
    /* Paused at the headers: answer and close, ignoring what follows. */
    c->linger = true;
    dispatch(c);
    return false;
  }
  if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
    pos = llhttp_get_error_pos(&c->parser);
    if (pos && pos < data + len &&
        mg_buf_append(&c->pending, pos, (size_t)(data + len - pos))) {
      /* Too much pipelined: refuse to buffer more; answer what we have. */
      c->req.keep_alive = false;
      c->linger = true;
    }
    if (err == HPE_PAUSED_UPGRADE)
      c->req.keep_alive = false;
    dispatch(c);
    return false;
  }
  fail_parse(c, err);
  return false;
}

/* Parse what is pending, answering requests one at a time. */
static void conn_process(struct mg_conn *c) {
  if (c->in_process)
    return;
  c->in_process = true;
  while (c->state != MG_CONN_BUSY && c->state != MG_CONN_CLOSING &&
         c->pending.len > 0 && c->queued <= limits(c)->write_high_bytes) {
    struct mg_buf b = c->pending;
    mg_buf_init(&c->pending, b.max);
    conn_feed(c, b.data, b.len);
    mg_buf_free(&b);
  }
  c->in_process = false;
  if (c->pending.len < c->pending.max / 2)
    read_start(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct mg_conn *c = h->data;
  struct mg_server *srv = c->srv;
  (void)suggested;
  /* One shared buffer: every read is consumed before the next alloc. */
  if (srv->read_buf_busy) {
    buf->base = NULL;
    buf->len = 0;
    return;
  }
  srv->read_buf_busy = true;
  buf->base = srv->read_buf;
  buf->len = sizeof(srv->read_buf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct mg_conn *c = s->data;
  struct mg_server *srv = c->srv;

  if (buf->base == srv->read_buf)
    srv->read_buf_busy = false;
  if (nread == 0)
    return;
  if (nread < 0) {
    /* EOF or error. While an answer is in progress this is a client that
     * gave up (as nginx treats it): the exchange cancels its upstream. */
    if (nread != UV_EOF)
      mg_debug("conn: read error: %s", uv_strerror((int)nread));
    conn_fail(c);
    return;
  }
  if (c->state == MG_CONN_CLOSING)
    return;
  if (c->state == MG_CONN_LINGER) {
    c->last_progress = uv_now(srv->loop); /* discarded */
    return;
  }
  if (c->state == MG_CONN_BUSY || c->pending.len > 0) {
    /* Pipelined bytes wait for the current answer. Past the ceiling we stop
     * reading until they are parsed (TCP then pushes back). */
    if (mg_buf_append(&c->pending, buf->base, (size_t)nread)) {
      conn_fail(c);
      return;
    }
    if (c->pending.len >= c->pending.max / 2 && c->reading) {
      uv_read_stop(s);
      c->reading = false;
    }
    if (c->state != MG_CONN_BUSY)
      conn_process(c);
    return;
  }
  /* Parse straight from the shared buffer; only leftovers are copied. The
   * in_process guard turns answers given synchronously (health checks,
   * errors) into iterations of conn_process instead of recursion. */
  c->in_process = true;
  conn_feed(c, buf->base, (size_t)nread);
  c->in_process = false;
  conn_process(c);
}

static void read_start(struct mg_conn *c) {
  if (c->reading || c->state == MG_CONN_CLOSING)
    return;
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
    c->reading = true;
}

void mg_conn_request_done(struct mg_conn *c) {
  c->ex = NULL;
  c->drain_wait = false;
  if (c->state == MG_CONN_CLOSING)
    return;
  if (closing_after(c)) {
    c->close_after = true;
    if (c->queued == 0)
      conn_finish(c);
    return;
  }
  c->state = MG_CONN_IDLE;
  c->started = uv_now(c->srv->loop);
  llhttp_resume(&c->parser);
  conn_arm(c);
  if (c->queued <= limits(c)->write_high_bytes)
    conn_process(c);
  read_start(c);
}

/* ---- lifetime ---------------------------------------------------------------- */

static void on_closed(uv_handle_t *h) {
  struct mg_conn *c = h->data;
  if (--c->handles > 0)
    return;
  mg_buf_free(&c->req.head);
  mg_buf_free(&c->req.body);
  mg_buf_free(&c->pending);
  free(c->req.hdrs);
  mg_server__conn_closed(c->srv, c);
  free(c);
}

void mg_conn_close(struct mg_conn *c) {
  if (c->state == MG_CONN_CLOSING)
    return;
  c->state = MG_CONN_CLOSING;
  if (c->ex) {
    struct mg_exchange *ex = c->ex;
    c->ex = NULL;
    mg_exchange_client_gone(ex);
  }
  /* Pending writes call back with UV_ECANCELED before on_closed. */
  uv_close((uv_handle_t *)&c->tcp, on_closed);
  uv_close((uv_handle_t *)&c->timer, on_closed);
}

/* The client is gone or misbehaved: close without answering. */
static void conn_fail(struct mg_conn *c) { mg_conn_close(c); }

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)req; /* UV_ECANCELED when the close came first */
  (void)status;
}

/* Close once an answer is written. After an answer given before the whole
 * request was read (a body too large, bad framing, a refused expectation),
 * closing at once with bytes unread makes the kernel reset the connection,
 * and the reset can destroy the answer before the client reads it: the
 * client sees "connection reset" instead of the 413. So linger (RFC 9112,
 * 9.6): send FIN, then read and discard until the client closes, goes
 * quiet for LINGER_IDLE_MS, or LINGER_MS pass. */
static void conn_finish(struct mg_conn *c) {
  if (c->state == MG_CONN_CLOSING)
    return;
  if (!c->linger || c->srv->draining ||
      uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    mg_conn_close(c);
    return;
  }
  c->state = MG_CONN_LINGER;
  c->started = c->last_progress = uv_now(c->srv->loop);
  mg_buf_reset(&c->pending);
  conn_arm(c);
  read_start(c);
}

void mg_conn_drain(struct mg_conn *c) {
  if ((c->state == MG_CONN_IDLE && c->pending.len == 0 && c->queued == 0) ||
      c->state == MG_CONN_LINGER)
    mg_conn_close(c);
  /* Busy ones see srv->draining when they answer and close after it. */
}

void mg_conn_accept(struct mg_server *srv, uv_stream_t *listener, bool admin) {
  const struct mg_limits *l = &srv->cfg->limits;
  struct mg_conn *c = calloc(1, sizeof(*c));

  if (c == NULL) {
    uv_tcp_t tmp;
    /* Out of memory: take the connection off the backlog and drop it. */
    mg_error("conn: out of memory accepting a connection");
    if (uv_tcp_init(srv->loop, &tmp) == 0 &&
        uv_accept(listener, (uv_stream_t *)&tmp) == 0)
      uv_close((uv_handle_t *)&tmp, NULL);
    return;
  }
  c->srv = srv;
  c->admin = admin;
  c->req.endpoint = -1;
  uv_tcp_init(srv->loop, &c->tcp);
  uv_timer_init(srv->loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  c->handles = 2;
  c->state = MG_CONN_IDLE;
  c->fresh = true;
  mg_buf_init(&c->req.head, l->header_bytes);
  mg_buf_init(&c->req.body, l->body_bytes);
  /* Pipelined bytes: at most one more full request. */
  mg_buf_init(&c->pending, (size_t)l->header_bytes + l->body_bytes);
  llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
  c->parser.data = c;
  c->next = srv->conns;
  if (srv->conns)
    srv->conns->prev = c;
  srv->conns = c;
  srv->nconns++;

  c->req.hdrs = malloc(l->headers * sizeof(*c->req.hdrs));
  if (c->req.hdrs == NULL ||
      uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
    mg_conn_close(c);
    return;
  }
  if (srv->nconns > srv->cfg->server.max_connections || srv->draining) {
    mg_conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  c->started = uv_now(srv->loop);
  conn_arm(c);
  read_start(c);
}
