/* call.h - the one contract both upstream engines keep (DESIGN.md, "Scale ->
 * Upstream engines"): modelgate's own HTTP/1.1 client for http:// upstreams
 * (upstream/native.c) and libcurl for everything else (upstream/curl.c).
 *
 * A call is one HTTP request to one upstream, made on the worker's loop. The
 * owner (the exchange) starts it, gets the body piecewise (streams) or whole,
 * and is told once how it ended. Both engines give the same timeouts, the
 * same streaming backpressure (on_data may answer MG_UP_PAUSE; resume()
 * delivers the held bytes), the same cancellation, and exactly one send per
 * attempt: a request that may have reached the upstream is never written
 * again by an engine; only the owner's retry policy may start a new call. */
#ifndef MG_UP_CALL_H
#define MG_UP_CALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "routing/target.h"

enum mg_up_result {
  MG_UP_OK,                 /* a complete response arrived (any status) */
  MG_UP_CONNECT_ERROR,      /* DNS, refused, TLS handshake or verification */
  MG_UP_TIMEOUT_CONNECT,
  MG_UP_TIMEOUT_FIRST_BYTE,
  MG_UP_TIMEOUT_IDLE,
  MG_UP_TIMEOUT_TOTAL,
  MG_UP_RESET,              /* the connection closed or was reset after the
                             * request was (maybe partly) written and before
                             * any answer byte: it may have reached the model */
  MG_UP_TRUNCATED,          /* the body ended before its announced length */
  MG_UP_TOO_BIG,            /* a buffered answer over max_response */
  MG_UP_PROTOCOL,           /* not a valid HTTP response: bad status line,
                             * a status outside 100-599, a body on a
                             * 1xx/204/205/304, broken chunking */
  MG_UP_ABORTED,            /* the owner refused data (its client left) */
  MG_UP_LOCAL,              /* a local resource failed (EMFILE, ENOMEM): not
                             * the upstream's fault, never a breaker failure */
  MG_UP_ERROR,              /* anything else (see call->error) */
};

/* Short stable name: "ok", "connect_error", "timeout_first_byte", ... */
const char *mg_up_result_name(enum mg_up_result r);
static inline bool mg_up_result_is_timeout(enum mg_up_result r) {
  return r >= MG_UP_TIMEOUT_CONNECT && r <= MG_UP_TIMEOUT_TOTAL;
}

/* Returned by on_data to keep the bytes and pause the call. */
#define MG_UP_PAUSE ((size_t)-2)

struct mg_up_call;

struct mg_up_call_cbs {
  /* Streaming calls only: a piece of a 200 text/event-stream body. Return n
   * when it was taken, MG_UP_PAUSE to get the same bytes again after
   * resume(), or anything else to abort (the call ends with MG_UP_ABORTED).
   * Runs inside the engine: do not start, cancel or release calls here. */
  size_t (*on_data)(struct mg_up_call *call, const char *p, size_t n);
  /* The call ended. Runs outside the engine's own callbacks (never from
   * inside start()): the owner may release this call and start others.
   * Not called after cancel(). */
  void (*on_done)(struct mg_up_call *call, enum mg_up_result res);
};

/* One request. Everything borrowed must outlive the call. */
struct mg_up_request {
  const void *dest;            /* borrowed: the engine's prepared
                                * destination (engine->ops->dest_new) */
  const char *method;          /* "POST", "GET", "DELETE" */
  const char *path_extra;      /* appended to the destination's path
                                * ("/resp_123"), or NULL */
  const char *extra_headers;   /* borrowed: more header lines for this
                                * request only, each "Name: value\r\n", or
                                * NULL */
  size_t extra_len;
  char *body;                  /* owned by the call from start() on (also
                                * when start() fails: the engine frees it) */
  size_t body_len;
  struct mg_timeouts timeouts; /* already clamped to the request deadline */
  bool stream;                 /* deliver a 200 event stream via on_data */
  size_t max_response;         /* ceiling of a buffered body */
};

/* The part of a call every engine fills; read-only for the owner. An
 * engine's own call struct begins with this one. */
struct mg_up_call {
  const struct mg_up_engine_ops *ops; /* the engine's */
  struct mg_up_engine *engine;        /* borrowed */
  long status;              /* HTTP status; 0 before the response head */
  bool streaming;           /* the body goes to on_data, not to body */
  bool connected;           /* a connection was established (or reused) */
  bool sent;                /* at least one request byte was written */
  bool reused;              /* the connection came from the pool */
  struct mg_buf body;       /* the buffered body (non-streaming) */
  char content_type[96];    /* response Content-Type, or "" */
  uint64_t t_start;         /* uv_hrtime() at start */
  uint64_t t_first_byte;    /* ... at the first body byte, or 0 */
  uint64_t t_end;           /* ... at the end */
  char error[256];          /* the engine's words for a failure, or "" */
  void *owner;              /* borrowed: whoever started the call */
  const struct mg_up_call_cbs *cbs; /* borrowed */
};

/* Settings of an engine, from the config's `upstream` section. */
struct mg_up_engine_cfg {
  uint32_t max_idle_connections; /* idle pooled connections kept in all */
  uint32_t max_host_connections; /* per origin; 0: no limit */
  uint32_t idle_connection_ms;   /* an idle pooled connection is closed
                                  * after this long */
  const char *proxy;             /* egress proxy URL, or NULL (curl only) */
};

/* TLS settings of a destination (curl only; the native engine refuses
 * https:// destinations). */
struct mg_up_tls {
  const char *ca_file;   /* borrowed, or NULL for the system bundle */
  bool verify;
};

/* The part of an engine every kind begins with. */
struct mg_up_engine {
  const struct mg_up_engine_ops *ops;
};

/* What an engine does. A worker has one engine of each kind, on its loop. */
struct mg_up_engine_ops {
  const char *name;      /* "native", "curl" */
  /* Prepare a destination once per snapshot: parse url (the full URL of
   * the endpoint), fold the constant header lines ("Name: value", no CRLF)
   * into whatever the engine sends fastest. NULL with a message in err
   * when the URL cannot be served by this engine. */
  void *(*dest_new)(struct mg_up_engine *e, const char *url,
                    const char *const *header_lines, size_t nlines,
                    const struct mg_up_tls *tls, char *err, size_t errlen);
  void (*dest_free)(void *dest);
  /* Start a call; NULL when it could not start (on_done is then never
   * called; the body was freed). */
  struct mg_up_call *(*start)(struct mg_up_engine *e,
                              const struct mg_up_request *req,
                              const struct mg_up_call_cbs *cbs, void *owner);
  /* Resume a call paused by MG_UP_PAUSE; may call on_data before
   * returning. Not from inside on_data. */
  void (*resume)(struct mg_up_call *call);
  /* Stop a call now and give it back; on_done is not called. Not from
   * inside on_data. The connection is closed (it is mid-answer). */
  void (*cancel)(struct mg_up_call *call);
  /* Give a finished call back after on_done; its body is freed. */
  void (*release)(struct mg_up_call *call);
  /* A response header's value (case-insensitive name), trimmed, into out:
   * 0, or -ENOENT. Valid from the first on_data (or on_done) until
   * release. */
  int (*header)(struct mg_up_call *call, const char *name, char *out,
                size_t n);
  /* Every response header, in order. */
  void (*each_header)(struct mg_up_call *call,
                      void (*fn)(void *arg, const char *name, size_t nlen,
                                 const char *value, size_t vlen),
                      void *arg);
  void (*configure)(struct mg_up_engine *e, const struct mg_up_engine_cfg *c);
  /* Transfers in progress, and times a call was paused (metrics). */
  size_t (*active)(struct mg_up_engine *e);
  uint64_t (*paused_total)(struct mg_up_engine *e);
  /* Refuse new calls, close pooled connections and handles; cb runs once
   * everything is closed. Active calls are a bug here (reported). */
  void (*close)(struct mg_up_engine *e, void (*cb)(void *arg), void *arg);
};

static inline void mg_up_call_resume(struct mg_up_call *c) {
  c->ops->resume(c);
}
static inline void mg_up_call_cancel(struct mg_up_call *c) {
  c->ops->cancel(c);
}
static inline void mg_up_call_release(struct mg_up_call *c) {
  c->ops->release(c);
}
static inline int mg_up_call_header(struct mg_up_call *c, const char *name,
                                    char *out, size_t n) {
  return c->ops->header(c, name, out, n);
}

#endif
