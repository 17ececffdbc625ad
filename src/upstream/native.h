/* native.h - modelgate's own HTTP/1.1 client for plain http:// upstreams
 * (upstream/call.h; DESIGN.md "Scale -> Upstream engines", issue 17).
 *
 * One engine per worker loop. It keeps a keep-alive pool per origin
 * (host:port), resolves host names with uv_getaddrinfo (answers cached per
 * origin for 30 s; IP literals skip DNS), writes each request with one
 * writev (head built once into a buffer the call keeps, body as given),
 * and parses answers with llhttp (every lenient flag off). A request that
 * may have reached the upstream is never written twice: only a pooled
 * connection found dead before any byte of the request was written is
 * replaced, transparently, by another one. docs/drafts/h3-native.md has
 * the design. */
#ifndef MG_UP_NATIVE_H
#define MG_UP_NATIVE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "upstream/call.h"

extern const struct mg_up_engine_ops mg_native_ops;

/* A new engine on loop; NULL when out of memory. Free it with its close
 * operation (cb runs once every handle is closed; the engine's memory is
 * gone when cb runs). */
struct mg_up_engine *mg_native_new(uv_loop_t *loop,
                                   const struct mg_up_engine_cfg *cfg);

/* What the engine holds and has done (metrics, tests). */
struct mg_native_stats {
  size_t conns;          /* open connections: connecting, busy or idle */
  size_t idle;           /* of which idle in the pools */
  size_t waiting;        /* calls queued for DNS or a connection slot */
  uint64_t connects;     /* connections opened (connect started) */
  uint64_t reuses;       /* requests sent on a pooled connection */
  uint64_t replaced;     /* pooled connections found closed before a
                          * request was written on them (not an attempt) */
  uint64_t dns_lookups;  /* uv_getaddrinfo calls */
  uint64_t queued_writes; /* requests the socket did not take at once (the
                           * rest went with a uv_write) */
};
/* On the engine's loop thread only. */
void mg_native_stats(struct mg_up_engine *e, struct mg_native_stats *out);

/* The ceilings of an answer's head (status line and header fields). */
#define MG_NATIVE_MAX_HEAD (64u << 10)
#define MG_NATIVE_MAX_HEADERS 256
/* How long a DNS answer is used for new connections. */
#define MG_NATIVE_DNS_TTL_MS 30000

/* ---- internals for the fuzzer and the engine's own tests ---------------- */

/* Put an already connected stream socket fd into dest's pool as an idle
 * connection (the engine owns fd from then on, also on failure). 0 or a
 * negative errno. */
int mg_native__adopt(struct mg_up_engine *e, const void *dest, int fd);
/* Hand n answer bytes (n <= MG_NATIVE__FEED_MAX) to call's connection as if
 * they had been read from its socket. 0, or -EINVAL when the call has no
 * connection to feed, is paused or has ended. on_data and on_done may run
 * inside. */
#define MG_NATIVE__FEED_MAX (64u << 10)
int mg_native__feed(struct mg_up_call *call, const char *p, size_t n);
/* As if the upstream closed call's connection. 0 or -EINVAL. */
int mg_native__feed_eof(struct mg_up_call *call);
struct sockaddr;
/* Use these n addresses (with their ports) for new connections of dest's
 * origin, as if DNS had answered them (tests: a name with two addresses).
 * 0 or a negative errno. */
int mg_native__set_addrs(const void *dest, const struct sockaddr *const *addrs,
                         size_t n);

#endif
