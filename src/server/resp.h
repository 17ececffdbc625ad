/* resp.h - how a handler sees a request and answers it (h2o's
 * h2o_req_t / h2o_send): the parsed request, and a small response interface
 * that the client connection (server/conn.c) implements.
 *
 * A handler answers at once (send or error, then done), or takes the
 * answer asynchronously: it attaches hooks, and the connection tells it
 * when the client went away, when a congested write queue drained, and when
 * the shutdown grace is over. Any write can find the client gone: the
 * connection then calls the `gone` hook before the write returns, and the
 * handler must not touch the response again. */
#ifndef MG_RESP_H
#define MG_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/str.h"

struct mg_http_hdr {
  uint32_t name_off, name_len; /* into req.head */
  uint32_t value_off, value_len;
};

struct mg_resp;
struct mg_route;

/* What answers a request, chosen when its headers are complete (so that a
 * refused request's body is discarded, not buffered). */
typedef void (*mg_handler_fn)(void *owner, struct mg_resp *r,
                              const struct mg_route *route);

struct mg_route {
  mg_handler_fn handler;  /* NULL: refused (below) */
  const void *arg;        /* the handler's (an endpoint, an admin verb) */
  bool buffer_body;       /* the handler reads the body */
  /* A request refused at its headers. */
  int status;
  const char *message;    /* static, or NULL for OpenAI's "Invalid URL" */
  const char *code;       /* static, or NULL */
  const char *allow;      /* the Allow header of a 405, or NULL */
  const char *endpoint;   /* its endpoint's name for the record, or NULL */
  /* Errors in the endpoint's API shape (an Anthropic endpoint answers in
   * Anthropic's), for every error answer on this request, refusals by the
   * connection included; NULL: OpenAI's. */
  int (*error_body)(struct mg_buf *out, int status, const char *type,
                    const char *message, const char *param, const char *code);
};

/* The request being parsed, then handed to its handler. */
struct mg_http_req {
  struct mg_buf head;        /* owned: URL, then header names and values */
  uint32_t url_len;          /* the URL is head.data[0..url_len) */
  struct mg_http_hdr *hdrs;  /* owned: limits.headers entries */
  uint32_t nhdrs;
  struct mg_buf body;        /* owned: the de-chunked body */
  int method;                /* llhttp_method_t */
  struct mg_route route;     /* chosen at the headers */
  bool routed;               /* route holds a handler */
  uint64_t discarded;        /* body bytes of a refused request, counted */
  bool in_name, in_value;
  bool keep_alive;           /* llhttp's verdict at message end */
  bool http10;
  bool expect_continue;
  bool answer_now;           /* refused at the headers: answer, then close */
};

/* The path of the request: without "http://host" (absolute form, RFC 9112,
 * 3.2.2) and without the query. */
struct mg_str mg_http_req_path(const struct mg_http_req *r);
/* A header's value (case-insensitive name); false when absent. */
bool mg_http_req_header(const struct mg_http_req *r, const char *name,
                        struct mg_str *value);

/* ---- the response interface ------------------------------------------------ */

struct mg_resp_hooks {
  void (*gone)(void *arg);    /* the client went away */
  void (*drained)(void *arg); /* the write queue fell below the low mark */
  void (*abort)(void *arg);   /* shutdown grace over: end now */
};

/* The request being answered. */
struct mg_http_req *mg_resp_req(struct mg_resp *r);
/* The handler answers later: hooks (and arg) until mg_resp_done. */
void mg_resp_attach(struct mg_resp *r, const struct mg_resp_hooks *h,
                    void *arg);
/* The Date header the connection stamps on answers (IMF-fixdate). */
const char *mg_resp_date(const struct mg_resp *r);
/* Is the server stopping? */
bool mg_resp_draining(const struct mg_resp *r);

/* Answer in one piece. extra: "name: value\r\n" lines, or NULL. 0, or a
 * negative code when the client is gone. */
int mg_resp_send(struct mg_resp *r, int status, const char *content_type,
                 const char *extra, const char *body, size_t len);
/* An error answer in the shape of the request's API (its route's
 * error_body; OpenAI's when it has none). */
int mg_resp_error(struct mg_resp *r, int status, const char *message,
                  const char *code, const char *param, const char *extra);
/* Streamed answers: the head (chunked), chunks, the end. */
int mg_resp_stream_head(struct mg_resp *r, int status,
                        const char *content_type, const char *extra);
int mg_resp_stream_chunk(struct mg_resp *r, const char *p, size_t n);
int mg_resp_stream_end(struct mg_resp *r);
/* Is the write queue over the high watermark? If so, the drained hook runs
 * once it falls below the low one. */
bool mg_resp_congested(struct mg_resp *r);
/* The answer is queued: the connection goes on with its next request (or
 * closes). The hooks are detached. */
void mg_resp_done(struct mg_resp *r);

#endif
