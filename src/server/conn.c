/* conn.c - one client connection.
 *
 * Reads are parsed as they arrive with llhttp in strict mode. One request is
 * answered at a time: on_message_complete pauses the parser, the bytes after
 * the request (pipelined ones) wait in `pending`, and the parser resumes on
 * them once the answer is queued. Parser callbacks only record; decisions
 * are taken after llhttp_execute returns (STYLE.md).
 *
 * The connection is also the response interface of server/resp.h: a
 * handler gets it as a `struct mg_resp *`. */
#include "server/conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/time.h"
#include "server/http.h"

enum mg_conn_state {
  MG_CONN_IDLE,    /* between requests */
  MG_CONN_HEAD,    /* reading a request line and headers */
  MG_CONN_BODY,    /* reading a body */
  MG_CONN_BUSY,    /* a request is being answered */
  MG_CONN_LINGER,  /* answered early and half-closed: discarding input */
  MG_CONN_CLOSING,
};

struct mg_conn {
  uv_tcp_t tcp;               /* handle.data = this */
  uv_timer_t timer;           /* header, body, keep-alive, send or linger
                               * timeout */
  uv_shutdown_t shutdown;     /* the half-close of a lingering close */
  struct mg_conn_env *env;    /* borrowed: outlives every connection */
  struct mg_conn *prev, *next; /* the env's list */
  llhttp_t parser;
  struct mg_http_req req;
  struct mg_buf pending;      /* owned: bytes after the request in flight */
  /* The handler answering asynchronously, or none (hooks NULL). */
  const struct mg_resp_hooks *hooks;
  void *hooks_arg;
  size_t queued;              /* bytes given to uv_write, not yet written */
  uint64_t started;           /* uv_now() when the current phase began */
  uint64_t last_progress;     /* uv_now() of the last read or write */
  enum mg_conn_state state;
  int handles;                /* open handles: freed when 0 */
  int err_status;             /* set by a parser callback before failing */
  const char *err_msg;
  const char *err_code;
  /* The end of the bytes llhttp_execute is parsing (borrowed: valid only
   * during conn_feed), so that on_body can look past a chunk's data. */
  const char *feed_end;
  /* Bytes of the CRLF after a chunk's data not yet seen: 2 (CR LF), 1 (LF)
   * or 0. Checked here because llhttp 8.1 skips any two bytes there. */
  uint8_t chunk_crlf;
  bool reading;
  bool fresh;                 /* no request seen yet */
  bool close_after;           /* close once the queued bytes are written */
  bool linger;                /* the client may still be sending: half-close
                               * and discard before closing */
  bool in_process;
  bool drain_wait;            /* the handler waits for the queue to drain */
};

/* The connection is the response (resp.h). */
#define RESP(c) ((struct mg_resp *)(c))
#define CONN(r) ((struct mg_conn *)(r))

static const struct mg_limits *limits(const struct mg_conn *c) {
  return &(*c->env->cfg)->limits;
}

static const struct mg_server_cfg *scfg(const struct mg_conn *c) {
  return &(*c->env->cfg)->server;
}

static bool draining(const struct mg_conn *c) { return *c->env->draining; }

static void conn_process(struct mg_conn *c);
static void client_gone(struct mg_conn *c);
static void conn_close(struct mg_conn *c);
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
  c->env->new_id(c->env->owner, id);
  snprintf(out, PLAIN_EXTRA_MAX,
           "x-modelgate-decision: %s\r\nx-modelgate-flag: -\r\n"
           "x-modelgate-variant: -\r\nx-modelgate-reason: unrouted\r\n",
           id);
}

/* The decision record and the request metrics of an answer given before
 * any handler: a request refused at the HTTP level (bad framing, a limit, a
 * timeout, an unknown URL, a method the URL does not take). */
static void plain_record(struct mg_conn *c, const char *id, int status) {
  uint64_t now = uv_now(c->env->loop);
  if (c->env->refused == NULL)
    return;
  c->env->refused(c->env->owner, &c->req, c->req.route.endpoint, id, status,
                  now > c->started ? (double)(now - c->started) : 0.0);
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
  memset(&r->route, 0, sizeof(r->route));
  r->routed = false;
  r->in_name = r->in_value = false;
  r->keep_alive = false;
  r->http10 = false;
  r->expect_continue = false;
  r->answer_now = false;
  /* Until the method is read: an answer given before then (a malformed
   * request line) carries its body, whatever the request before was. */
  r->method = HTTP_GET;
  c->chunk_crlf = 0;
  c->state = MG_CONN_HEAD;
  c->fresh = false;
  c->started = uv_now(c->env->loop);
  conn_arm(c);
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  struct mg_conn *c = p->data;
  /* Known now (the method comes first): a HEAD request refused in its
   * headers gets its answer without a body too (RFC 9110, 9.3.2). */
  c->req.method = llhttp_get_method(p);
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

/* tchar (RFC 9110, 5.6.2): what a field name is made of. */
static bool is_tchar(unsigned char ch) {
  if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
      (ch >= 'A' && ch <= 'Z'))
    return true;
  return ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static int on_header_field_complete(llhttp_t *p) {
  struct mg_conn *c = p->data;
  struct mg_http_req *r = &c->req;
  const struct mg_http_hdr *h = &r->hdrs[r->nhdrs];
  const unsigned char *name;
  uint32_t i;

  /* llhttp 8.1 keeps spaces before the colon in the name and lets an
   * empty name through. RFC 9112, 5.1: whitespace between a field name
   * and its colon MUST be refused with a 400 (a proxy that passed "Host :"
   * on would hand the next hop a header it may read differently); and a
   * field name is a token (RFC 9110, 5.1). */
  if (!r->in_name || h->name_len == 0)
    return parse_error(c, 400, "The request has a header field without a "
                       "name.", "bad_header");
  name = (const unsigned char *)r->head.data + h->name_off;
  if (name[h->name_len - 1] == ' ' || name[h->name_len - 1] == '\t')
    return parse_error(c, 400, "The request has whitespace between a header "
                       "field name and its colon.", "bad_header");
  for (i = 0; i < h->name_len; i++)
    if (!is_tchar(name[i]))
      return parse_error(c, 400, "The request has a header field name that "
                         "is not a token.", "bad_header");
  r->in_name = false;
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

bool mg_http_req_header(const struct mg_http_req *r, const char *name,
                        struct mg_str *value) {
  struct mg_str n = mg_str_c(name);
  uint32_t i;
  for (i = 0; i < r->nhdrs; i++) {
    struct mg_str hn = {r->head.data + r->hdrs[i].name_off,
                        r->hdrs[i].name_len};
    if (mg_str_eq_nocase(hn, n)) {
      value->p = r->head.data + r->hdrs[i].value_off;
      value->len = r->hdrs[i].value_len;
      return true;
    }
  }
  return false;
}

static bool conn_header(const struct mg_conn *c, const char *name,
                        struct mg_str *value) {
  return mg_http_req_header(&c->req, name, value);
}

struct mg_str mg_http_req_path(const struct mg_http_req *r) {
  const char *url = r->head.data ? r->head.data : "";
  size_t len = r->url_len, i;
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
  return (struct mg_str){url, i};
}

static void reject(struct mg_http_req *r, int status, const char *msg,
                   const char *code) {
  r->routed = false;
  r->route.handler = NULL;
  r->route.status = status;
  r->route.message = msg;
  r->route.code = code;
}

static int on_headers_complete(llhttp_t *p) {
  struct mg_conn *c = p->data;
  struct mg_http_req *r = &c->req;
  struct mg_str v;

  r->method = llhttp_get_method(p);
  r->http10 = llhttp_get_http_major(p) == 1 && llhttp_get_http_minor(p) == 0;
  /* llhttp 8.1 takes any one-digit version ("HTTP/2.0", "HTTP/0.9"): this
   * server speaks HTTP/1.0 and 1.1 only (RFC 9110, 15.6.6), as nginx. */
  if (llhttp_get_http_major(p) != 1 || llhttp_get_http_minor(p) > 1)
    return parse_error(c, 505, "Only HTTP/1.0 and HTTP/1.1 are supported.",
                       "http_version_not_supported");
  if (r->method == HTTP_CONNECT)
    return parse_error(c, 405, "CONNECT is not supported.",
                       "method_not_allowed");
  {
    uint32_t i, hosts = 0;
    bool te = false;
    for (i = 0; i < r->nhdrs; i++) {
      struct mg_str hn = {r->head.data + r->hdrs[i].name_off,
                          r->hdrs[i].name_len};
      if (mg_str_eq_nocase(hn, MG_STR_LIT("host")))
        hosts++;
      else if (mg_str_eq_nocase(hn, MG_STR_LIT("transfer-encoding")))
        te = true;
    }
    /* RFC 9112, 3.2: a 400 for an HTTP/1.1 request without Host and for
     * any request with more than one. */
    if (hosts > 1)
      return parse_error(c, 400, "The request has more than one Host "
                         "header.", "bad_host");
    if (hosts == 0 && !r->http10)
      return parse_error(c, 400, "An HTTP/1.1 request must have a Host "
                         "header.", "bad_host");
    /* RFC 9112, 6.1: Transfer-Encoding in an HTTP/1.0 message is faulty
     * framing (HTTP/1.0 has no transfer codings); llhttp would parse the
     * body as chunked anyway. */
    if (te && r->http10)
      return parse_error(c, 400, "An HTTP/1.0 request cannot use "
                         "Transfer-Encoding.", "bad_framing");
  }
  /* What answers it is known now: a refused request's body is read and
   * thrown away rather than buffered. */
  c->env->route(c->env->owner, r, &r->route);
  r->routed = r->route.handler != NULL;

  /* A declared body over the limit is refused before it is read. */
  if ((p->flags & F_CONTENT_LENGTH) &&
      p->content_length > limits(c)->body_bytes)
    return parse_error(c, 413, "The request body is too large.",
                       "body_too_large");

  if (conn_header(c, "expect", &v)) {
    if (!mg_str_eq_nocase(v, MG_STR_LIT("100-continue"))) {
      reject(r, 417, "Only the expectation 100-continue is supported.",
             "expectation_failed");
    } else if (r->routed && !r->http10) {
      /* The client waits for this before sending the body (RFC 9110,
       * 10.1.1). */
      r->expect_continue = true;
    }
    if (!r->routed) {
      /* A refused request that expects 100-continue gets its final answer
       * now, without its body; the connection then closes, as the client
       * may still send the body (RFC 9110, 10.1.1). */
      r->keep_alive = false;
      r->answer_now = true;
      return HPE_PAUSED;
    }
  }
  c->state = MG_CONN_BODY;
  c->started = c->last_progress = uv_now(c->env->loop);
  return 0;
}

/* Check the bytes after a chunk's data against the CRLF still expected
 * (chunk_crlf), as far as n bytes at s go. */
static bool chunk_crlf_ok(struct mg_conn *c, const char *s, size_t n) {
  while (c->chunk_crlf > 0 && n > 0) {
    if (*s != (c->chunk_crlf == 2 ? '\r' : '\n'))
      return false;
    c->chunk_crlf--;
    s++;
    n--;
  }
  return true;
}

static int chunk_crlf_error(struct mg_conn *c) {
  return parse_error(c, 400, "The request body's chunked encoding is "
                     "malformed: chunk data not followed by CRLF.",
                     "bad_chunking");
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  struct mg_conn *c = p->data;
  struct mg_http_req *r = &c->req;

  /* The last bytes of a chunk's data (llhttp has counted the chunk down
   * to 0): RFC 9112, 7.1 wants CRLF next, and llhttp 8.1 accepts any two
   * bytes there, so look at them here; those in the next read are
   * checked by conn_feed. */
  if ((p->flags & F_CHUNKED) && p->content_length == 0) {
    const char *end = at + len;
    c->chunk_crlf = 2;
    if (!chunk_crlf_ok(c, end, end < c->feed_end ? (size_t)(c->feed_end - end)
                                                 : 0))
      return chunk_crlf_error(c);
  }

  /* Refused requests still have their body read (and counted against the
   * limit) so that the connection can be kept. */
  if (!r->routed || !r->route.buffer_body) {
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
  c->last_progress = uv_now(c->env->loop);
  if (c->queued == 0 && c->close_after) {
    conn_finish(c);
    return;
  }
  if (c->drain_wait && c->queued <= limits(c)->write_low_bytes) {
    c->drain_wait = false;
    if (c->hooks && c->hooks->drained)
      c->hooks->drained(c->hooks_arg);
    if (c->state == MG_CONN_CLOSING)
      return;
  }
  conn_arm(c);
  if (c->state == MG_CONN_IDLE && c->queued <= limits(c)->write_low_bytes)
    conn_process(c);
}

static int conn_write(struct mg_conn *c, const uv_buf_t *bufs, unsigned n) {
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
    c->last_progress = uv_now(c->env->loop);
  c->queued += off;
  conn_arm(c);
  return 0;
}

bool mg_resp_congested(struct mg_resp *r) {
  struct mg_conn *c = CONN(r);
  if (c->queued > limits(c)->write_high_bytes) {
    c->drain_wait = true;
    return true;
  }
  return false;
}

static bool closing_after(const struct mg_conn *c) {
  return !c->req.keep_alive || draining(c);
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
  return conn_write(c, bufs, n);
}

int mg_resp_send(struct mg_resp *r, int status, const char *content_type,
                 const char *extra_headers, const char *body, size_t len) {
  struct mg_conn *c = CONN(r);
  struct mg_head head;
  mg_head_begin(&head, status, c->env->date);
  mg_head_end(&head, content_type, (int64_t)len, closing_after(c),
              extra_headers);
  return send_head_body(c, &head, body, len);
}

int mg_resp_error(struct mg_resp *r, int status, const char *message,
                  const char *code, const char *param,
                  const char *extra_headers) {
  struct mg_buf body;
  int rc;
  mg_buf_init(&body, 64u << 10);
  rc = (CONN(r)->req.route.error_body ? CONN(r)->req.route.error_body
                                      : CONN(r)->env->error_body)(
      &body, status, NULL, message, param, code);
  if (rc == 0)
    rc = mg_resp_send(r, status, "application/json", extra_headers,
                         body.data, body.len);
  mg_buf_free(&body);
  return rc;
}

int mg_resp_stream_head(struct mg_resp *r, int status,
                        const char *content_type, const char *extra_headers) {
  struct mg_conn *c = CONN(r);
  struct mg_head head;
  int rc;
  mg_head_begin(&head, status, c->env->date);
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

int mg_resp_stream_chunk(struct mg_resp *r, const char *p, size_t n) {
  struct mg_conn *c = CONN(r);
  char size[24];
  uv_buf_t bufs[3];
  int l;
  if (n == 0)
    return 0;
  if (c->req.http10) {
    bufs[0] = uv_buf_init((char *)p, (unsigned)n);
    return conn_write(c, bufs, 1);
  }
  l = snprintf(size, sizeof(size), "%zx\r\n", n);
  bufs[0] = uv_buf_init(size, (unsigned)l);
  bufs[1] = uv_buf_init((char *)p, (unsigned)n);
  bufs[2] = uv_buf_init("\r\n", 2);
  return conn_write(c, bufs, 3);
}

int mg_resp_stream_end(struct mg_resp *r) {
  struct mg_conn *c = CONN(r);
  uv_buf_t b = uv_buf_init("0\r\n\r\n", 5);
  if (c->req.http10)
    return 0;
  return conn_write(c, &b, 1);
}

/* ---- timers ---------------------------------------------------------------- */

static void on_timer(uv_timer_t *t) {
  struct mg_conn *c = t->data;
  uint64_t now = uv_now(c->env->loop);

  switch (c->state) {
  case MG_CONN_IDLE:
    /* An idle keep-alive connection just goes. */
    conn_close(c);
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
    mg_resp_error(RESP(c), 408,
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
      conn_close(c);
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
  uint64_t now = uv_now(c->env->loop), deadline;

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

/* A request refused at its headers, now that its body (if any) is read. */
static void answer_refused(struct mg_conn *c) {
  const struct mg_route *rt = &c->req.route;
  char extra[PLAIN_EXTRA_MAX + 64], id[33], msg[160];
  const char *text = rt->message;

  plain_extra(c, extra, id);
  if (text == NULL) {
    /* OpenAI's wording for an unknown URL. */
    const char *url = c->req.head.data ? c->req.head.data : "";
    int ul = (int)(c->req.url_len > 100 ? 100 : c->req.url_len);
    snprintf(msg, sizeof(msg), "Invalid URL (%s %.*s)",
             llhttp_method_name((llhttp_method_t)c->req.method), ul, url);
    text = msg;
  }
  if (rt->status == 405 && rt->allow)
    snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra),
             "allow: %s\r\n", rt->allow);
  mg_resp_error(RESP(c), rt->status ? rt->status : 500, text, rt->code, NULL,
                extra);
  plain_record(c, id, rt->status ? rt->status : 500);
  mg_resp_done(RESP(c));
}

static void dispatch(struct mg_conn *c) {
  c->state = MG_CONN_BUSY;
  c->last_progress = uv_now(c->env->loop);
  conn_arm(c);
  if (c->req.routed)
    c->req.route.handler(c->env->owner, RESP(c), &c->req.route);
  else
    answer_refused(c);
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
    case HPE_INVALID_HEADER_TOKEN:
      status = 400;
      msg = "The request has an invalid header field.";
      code = "bad_header";
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
  mg_resp_error(RESP(c), status, msg, code, NULL, extra);
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
  /* The CRLF after a chunk's data that the last read ended in. */
  if (!chunk_crlf_ok(c, data, len)) {
    (void)chunk_crlf_error(c);
    fail_parse(c, HPE_INVALID_CHUNK_SIZE);
    return false;
  }
  c->feed_end = data + len;
  err = llhttp_execute(&c->parser, data, len);
  c->feed_end = NULL;
  if (err == HPE_OK) {
    if (c->state == MG_CONN_BODY) {
      c->last_progress = uv_now(c->env->loop);
      conn_arm(c);
    }
    if (c->req.expect_continue) {
      static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
      uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
      c->req.expect_continue = false;
      conn_write(c, &b, 1);
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
  struct mg_conn_env *env = c->env;
  (void)suggested;
  /* One shared buffer: every read is consumed before the next alloc. */
  if (*env->read_busy) {
    buf->base = NULL;
    buf->len = 0;
    return;
  }
  *env->read_busy = true;
  buf->base = env->read_buf;
  buf->len = MG_READ_BUF_SIZE;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct mg_conn *c = s->data;
  struct mg_conn_env *env = c->env;

  if (buf->base == env->read_buf)
    *env->read_busy = false;
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
    c->last_progress = uv_now(env->loop); /* discarded */
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

struct mg_http_req *mg_resp_req(struct mg_resp *r) { return &CONN(r)->req; }

void mg_resp_attach(struct mg_resp *r, const struct mg_resp_hooks *h,
                    void *arg) {
  CONN(r)->hooks = h;
  CONN(r)->hooks_arg = arg;
}

const char *mg_resp_date(const struct mg_resp *r) {
  return CONN(r)->env->date;
}

bool mg_resp_draining(const struct mg_resp *r) { return draining(CONN(r)); }

void mg_resp_done(struct mg_resp *r) {
  struct mg_conn *c = CONN(r);
  c->hooks = NULL;
  c->hooks_arg = NULL;
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
  c->started = uv_now(c->env->loop);
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
  {
    struct mg_conn_env *env = c->env;
    if (c->prev)
      c->prev->next = c->next;
    else
      env->conns = c->next;
    if (c->next)
      c->next->prev = c->prev;
    env->nconns--;
    free(c);
    if (env->count)
      env->count(env->owner, env->nconns);
    if (*env->draining && env->nconns == 0 && env->idle)
      env->idle(env->owner);
  }
}

/* Tell the handler answering (if one is) that its client is gone. */
static void client_gone(struct mg_conn *c) {
  const struct mg_resp_hooks *h = c->hooks;
  void *arg = c->hooks_arg;
  c->hooks = NULL;
  c->hooks_arg = NULL;
  if (h && h->gone)
    h->gone(arg);
}

static void conn_close(struct mg_conn *c) {
  if (c->state == MG_CONN_CLOSING)
    return;
  c->state = MG_CONN_CLOSING;
  client_gone(c);
  /* Pending writes call back with UV_ECANCELED before on_closed. */
  uv_close((uv_handle_t *)&c->tcp, on_closed);
  uv_close((uv_handle_t *)&c->timer, on_closed);
}

/* The client is gone or misbehaved: close without answering. */
static void conn_fail(struct mg_conn *c) { conn_close(c); }

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
  if (!c->linger || draining(c) ||
      uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    conn_close(c);
    return;
  }
  c->state = MG_CONN_LINGER;
  c->started = c->last_progress = uv_now(c->env->loop);
  mg_buf_reset(&c->pending);
  conn_arm(c);
  read_start(c);
}

static void conn_drain(struct mg_conn *c) {
  if ((c->state == MG_CONN_IDLE && c->pending.len == 0 && c->queued == 0) ||
      c->state == MG_CONN_LINGER)
    conn_close(c);
  /* Busy ones see the owner draining when they answer and close after. */
}

void mg_conn_drain_all(struct mg_conn_env *env) {
  struct mg_conn *c, *next;
  for (c = env->conns; c; c = next) {
    next = c->next;
    conn_drain(c);
  }
}

void mg_conn_abort_all(struct mg_conn_env *env) {
  struct mg_conn *c, *next;
  for (c = env->conns; c; c = next) {
    const struct mg_resp_hooks *h = c->hooks;
    void *arg = c->hooks_arg;
    next = c->next;
    /* The handler ends its answer (a 503, or an error event) first. */
    if (h && h->abort)
      h->abort(arg);
    conn_close(c);
  }
}

/* Out of memory at accept: take the connection off the backlog and drop
 * it. The handle lives on the heap until its close callback (libuv links
 * it into the loop), and is closed whether or not the accept worked. */
static void on_dropped_closed(uv_handle_t *h) { free(h); }

static void drop_connection(struct mg_conn_env *env, uv_stream_t *listener) {
  uv_tcp_t *tmp = malloc(sizeof(*tmp));
  if (tmp == NULL || uv_tcp_init(env->loop, tmp) != 0) {
    free(tmp);
    return;
  }
  (void)uv_accept(listener, (uv_stream_t *)tmp);
  uv_close((uv_handle_t *)tmp, on_dropped_closed);
}

/* A connection in env, its handles initialised, not yet connected: the
 * caller accepts or opens its socket (on failure, conn_close), then
 * conn_start. NULL when out of memory. */
static struct mg_conn *conn_new(struct mg_conn_env *env) {
  const struct mg_limits *l = &(*env->cfg)->limits;
  struct mg_conn *c = calloc(1, sizeof(*c));

  if (c == NULL)
    return NULL;
  c->env = env;
  uv_tcp_init(env->loop, &c->tcp);
  uv_timer_init(env->loop, &c->timer);
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
  c->next = env->conns;
  if (env->conns)
    env->conns->prev = c;
  env->conns = c;
  env->nconns++;
  if (env->count)
    env->count(env->owner, env->nconns);
  c->req.hdrs = malloc(l->headers * sizeof(*c->req.hdrs));
  return c;
}

static void conn_start(struct mg_conn *c) {
  uv_tcp_nodelay(&c->tcp, 1);
  c->started = uv_now(c->env->loop);
  conn_arm(c);
  read_start(c);
}

void mg_conn_accept(struct mg_conn_env *env, uv_stream_t *listener) {
  struct mg_conn *c;

  if (env->nconns >= env->max_connections || *env->draining) {
    /* Over the budget of this listener (the admin listener has its own,
     * so a flood of clients cannot lock operators out): counted, logged
     * at most once a second. */
    static _Thread_local uint64_t last_log;
    uint64_t now = uv_now(env->loop);
    env->refused_full++;
    if (env->refused_conn && !*env->draining)
      env->refused_conn(env->owner, env->admin);
    if (!*env->draining && now - last_log >= 1000) {
      last_log = now;
      mg_warn("%s: refusing connections: %zu open (max_connections %u); "
              "%llu refused so far",
              env->admin ? "admin" : "listener", env->nconns,
              env->max_connections, (unsigned long long)env->refused_full);
    }
    drop_connection(env, listener);
    return;
  }
  c = conn_new(env);
  if (c == NULL) {
    mg_error("conn: out of memory accepting a connection");
    drop_connection(env, listener);
    return;
  }
  if (c->req.hdrs == NULL ||
      uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  conn_start(c);
}

int mg_conn__adopt(struct mg_conn_env *env, int fd) {
  struct mg_conn *c = conn_new(env);
  if (c == NULL)
    return -ENOMEM;
  if (c->req.hdrs == NULL || uv_tcp_open(&c->tcp, fd) != 0) {
    conn_close(c);
    return -EINVAL;
  }
  conn_start(c);
  return 0;
}
