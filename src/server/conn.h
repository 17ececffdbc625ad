/* conn.h - one client connection: strict HTTP/1.1 with llhttp, limits,
 * keep-alive, pipelining (one request in flight), timeouts, and a write
 * path with backpressure accounting. It implements the response interface
 * (server/resp.h) and knows nothing of what answers: its environment (the
 * worker, or the admin listener's owner) routes each request. */
#ifndef MG_CONN_H
#define MG_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>
#include <uv.h>

#include "common/buf.h"
#include "common/str.h"
#include "config/config.h"
#include "server/resp.h"

struct mg_conn;

/* Shared read buffer: reads are parsed synchronously, so one per loop. */
#define MG_READ_BUF_SIZE (64u << 10)

/* Where connections live: one per listener kind and loop. The owner fills
 * it in; conn.c keeps the list. */
struct mg_conn_env {
  uv_loop_t *loop;                /* borrowed */
  struct mg_config *const *cfg;   /* borrowed: the owner's current config
                                   * (limits and timeouts) */
  const char *date;               /* borrowed: the cached Date header */
  const bool *draining;           /* borrowed: the owner is stopping */
  char *read_buf;                 /* borrowed: MG_READ_BUF_SIZE bytes */
  bool *read_busy;                /* borrowed: the buffer is in use */
  bool admin;                     /* the admin listener's connections */
  /* Error bodies of requests whose route names no API shape (refused
   * before routing, the admin API, the operational endpoints). */
  int (*error_body)(struct mg_buf *out, int status, const char *type,
                    const char *message, const char *param, const char *code);
  uint32_t max_connections;       /* refuse beyond this many */
  void *owner;
  /* The request's headers are complete: choose what answers it (fill
   * route: a handler, or a refusal). */
  void (*route)(void *owner, struct mg_http_req *req, struct mg_route *out);
  /* A fresh decision id (32 hex digits). */
  void (*new_id)(void *owner, char out[33]);
  /* A request refused before any handler (a limit, framing, a timeout, an
   * unknown URL): its record and metrics. May be NULL. */
  void (*refused)(void *owner, const struct mg_http_req *req,
                  const char *endpoint, const char *id, int status,
                  double ms);
  /* The number of connections changed (gauges); may be NULL. */
  void (*count)(void *owner, size_t n);
  /* A connection was refused at max_connections (counted); may be NULL. */
  void (*refused_conn)(void *owner, bool admin);
  /* Every connection is closed and the owner is draining. May be NULL. */
  void (*idle)(void *owner);
  /* The list (conn.c's). */
  struct mg_conn *conns;
  size_t nconns;
  uint64_t refused_full;          /* accepts refused at max_connections */
};

/* Accept a connection from listener into env. */
void mg_conn_accept(struct mg_conn_env *env, uv_stream_t *listener);
/* Take fd, a connected stream socket, as a client connection in env, as
 * if accepted (the seam of tests/fuzz/fuzz_conn.c: one end of a
 * socketpair). 0, or a negative code (fd is then still the caller's). */
int mg_conn__adopt(struct mg_conn_env *env, int fd) MG_WARN_UNUSED;

/* Shutdown: close idle connections now, the others after their answer. */
void mg_conn_drain_all(struct mg_conn_env *env);
/* Grace over: abort every answer in progress and close everything. */
void mg_conn_abort_all(struct mg_conn_env *env);

#endif
