/* conn.h - one client connection: strict HTTP/1.1 with llhttp, limits,
 * keep-alive, pipelining (one request in flight), timeouts, and a write
 * path with backpressure accounting. */
#ifndef MG_CONN_H
#define MG_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>
#include <uv.h>

#include "common/buf.h"
#include "common/str.h"

struct mg_server;
struct mg_exchange;

struct mg_http_hdr {
  uint32_t name_off, name_len;   /* into req.head */
  uint32_t value_off, value_len;
};

/* The request being parsed, then handed to its exchange. */
struct mg_http_req {
  struct mg_buf head;        /* owned: URL, then header names and values */
  uint32_t url_len;          /* the URL is head.data[0..url_len) */
  struct mg_http_hdr *hdrs;  /* owned: limits.headers entries */
  uint32_t nhdrs;
  struct mg_buf body;        /* owned: the de-chunked body */
  int method;                /* llhttp_method_t */
  int kind;                  /* what to do with it: enum in conn.c */
  int endpoint;              /* enum mg_endpoint when kind is proxy */
  int reject_status;         /* answer this error once the body is read */
  uint64_t discarded;        /* body bytes of a refused request, counted */
  const char *reject_msg;    /* static */
  const char *reject_code;   /* static or NULL */
  bool in_name, in_value;
  bool keep_alive;           /* llhttp's verdict at message end */
  bool http10;
  bool expect_continue;
  bool answer_now;           /* refused at the headers: answer, then close */
};

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
  struct mg_server *srv;      /* borrowed: outlives every connection */
  struct mg_conn *prev, *next; /* the server's list */
  llhttp_t parser;
  struct mg_http_req req;
  struct mg_buf pending;      /* owned: bytes after the request in flight */
  struct mg_exchange *ex;     /* the exchange answering, or NULL; the
                               * exchange owns itself and detaches */
  size_t queued;              /* bytes given to uv_write, not yet written */
  uint64_t started;           /* uv_now() when the current phase began */
  uint64_t last_progress;     /* uv_now() of the last read or write */
  enum mg_conn_state state;
  int handles;                /* open handles: freed when 0 */
  int err_status;             /* set by a parser callback before failing */
  const char *err_msg;
  const char *err_code;
  bool reading;
  bool admin;                 /* accepted on the admin listener */
  bool fresh;                 /* no request seen yet */
  bool close_after;           /* close once the queued bytes are written */
  bool linger;                /* the client may still be sending: half-close
                               * and discard before closing */
  bool in_process;
  bool drain_wait;            /* the exchange waits for the queue to drain */
};

/* Accept a connection from the listener (admin: the admin listener). */
void mg_conn_accept(struct mg_server *srv, uv_stream_t *listener, bool admin);

/* Write bytes to the client, copying what the socket does not take at
 * once. 0, or a negative code when the client is gone. */
int mg_conn_write(struct mg_conn *c, const uv_buf_t *bufs, unsigned n);

/* Answer the current request in one piece. */
int mg_conn_respond(struct mg_conn *c, int status, const char *content_type,
                    const char *extra_headers, const char *body, size_t len);
/* An OpenAI-shaped error answer. */
int mg_conn_respond_error(struct mg_conn *c, int status, const char *message,
                          const char *code, const char *param,
                          const char *extra_headers);
/* Streamed answers: the head (chunked), chunks, the end. */
int mg_conn_stream_head(struct mg_conn *c, int status,
                        const char *content_type, const char *extra_headers);
int mg_conn_stream_chunk(struct mg_conn *c, const char *p, size_t n);
int mg_conn_stream_end(struct mg_conn *c);

/* The current request is answered (its bytes are queued): go on with the
 * next one, or close. Detaches the exchange. */
void mg_conn_request_done(struct mg_conn *c);

/* Close at once (the exchange, if any, is told its client is gone). */
void mg_conn_close(struct mg_conn *c);

/* Shutdown: close if idle, else close after the current answer. */
void mg_conn_drain(struct mg_conn *c);

/* Is the write queue over the high watermark? If so, the exchange is told
 * (mg_exchange_drained) once it falls below the low one. */
bool mg_conn_congested(struct mg_conn *c);

/* Header value of the request being answered (case-insensitive). */
bool mg_conn_header(const struct mg_conn *c, const char *name,
                    struct mg_str *value);

#endif
