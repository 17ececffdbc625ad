/* upstream.h - upstream transfers: libcurl's multi interface driven by the
 * server's libuv loop (the shape of curl's docs/examples/multi-uv.c).
 *
 * One struct mg_upstream per loop holds the multi handle (and with it
 * curl's connection cache, so connections to upstreams are reused) and a
 * pool of calls. A call is one HTTP POST to one target. Calls are pooled with
 * their curl easy handle and timer, so a request allocates nothing here. */
#ifndef MG_UPSTREAM_H
#define MG_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <uv.h>

#include "common/buf.h"
#include "routing/target.h"

enum mg_up_result {
  MG_UP_OK,                 /* a complete response arrived (any status) */
  MG_UP_CONNECT_ERROR,      /* DNS, refused, TLS handshake or verification */
  MG_UP_TIMEOUT_CONNECT,
  MG_UP_TIMEOUT_FIRST_BYTE,
  MG_UP_TIMEOUT_IDLE,
  MG_UP_TIMEOUT_TOTAL,
  MG_UP_RESET,              /* connection reset or closed before an answer */
  MG_UP_TRUNCATED,          /* the body ended before its announced length */
  MG_UP_TOO_BIG,            /* a buffered answer over limits.response_bytes */
  MG_UP_PROTOCOL,           /* not an HTTP response */
  MG_UP_ABORTED,            /* the owner refused data (its client left) */
  MG_UP_ERROR,              /* anything else (see call->error) */
};

/* Short stable name: "ok", "connect_error", "timeout_first_byte", ... */
const char *mg_up_result_name(enum mg_up_result r);
static inline bool mg_up_result_is_timeout(enum mg_up_result r) {
  return r >= MG_UP_TIMEOUT_CONNECT && r <= MG_UP_TIMEOUT_TOTAL;
}

/* Returned by on_data to keep the data and pause the transfer. */
#define MG_UP_PAUSE CURL_WRITEFUNC_PAUSE

struct mg_up_call;

struct mg_up_call_cbs {
  /* Streaming calls only: a piece of a 200 text/event-stream body. Return n
   * when it was taken, MG_UP_PAUSE to get the same bytes again after
   * mg_up_call_resume(), or 0 to abort (the call ends with MG_UP_ABORTED).
   * Runs inside curl: do not start, cancel or release calls here. */
  size_t (*on_data)(struct mg_up_call *call, const char *p, size_t n);
  /* The call ended. Runs outside curl: the owner may release this call and
   * start others. Not called after mg_up_call_cancel(). */
  void (*on_done)(struct mg_up_call *call, enum mg_up_result res);
};

/* What curl needs to call one target, derived once per config snapshot:
 * the header list and each endpoint's URL, parsed in advance (curl would
 * otherwise parse the URL string on every transfer). */
struct mg_up_target {
  struct curl_slist *headers;      /* owned */
  CURLU *urls[MG_EP__COUNT];       /* owned */
};

struct mg_config;
/* The view of target t in snapshot cfg, built on first use and freed with
 * the snapshot. NULL when out of memory. */
const struct mg_up_target *mg_up_target_view(struct mg_config *cfg,
                                             const struct mg_target *t);

/* A traditional path's view: its URL and headers. */
struct mg_up_view {
  CURLU *url;                      /* owned */
  struct curl_slist *headers;      /* owned */
};

struct mg_traditional;
/* The view of a traditional path in snapshot cfg (NULL when out of
 * memory or the path has no URL). */
const struct mg_up_view *mg_up_trad_view(struct mg_config *cfg,
                                         const struct mg_traditional *t);

struct mg_up_request {
  CURLU *url;                        /* borrowed until the call ends */
  const struct curl_slist *headers;  /* borrowed until the call ends */
  char *body;                        /* owned by the call from now on */
  size_t body_len;
  struct mg_timeouts timeouts;       /* total_ms already clamped to the
                                      * request's deadline */
  bool stream;           /* deliver a 200 event stream through on_data */
  size_t max_response;   /* ceiling for a buffered body */
  const char *ca_file;   /* borrowed, or NULL for the system bundle */
  bool tls_verify;
  const char *decision;  /* sent as x-modelgate-decision, or NULL */
};

struct mg_up_call {
  /* Read-only for the owner. */
  long status;              /* HTTP status; 0 before the response */
  bool streaming;           /* the body goes to on_data, not to body */
  bool connected;           /* a connection was established */
  struct mg_buf body;       /* the buffered body (non-streaming) */
  char content_type[96];    /* response Content-Type, or "" */
  uint64_t t_start;         /* uv_hrtime() at start */
  uint64_t t_first_byte;    /* ... at the first body byte, or 0 */
  uint64_t t_end;           /* ... at the end */
  char error[CURL_ERROR_SIZE]; /* curl's text for failures, or "" */
  void *owner;              /* borrowed: whoever started the call */

  /* Private to upstream.c. */
  struct mg_upstream *up;   /* borrowed */
  struct mg_up_call *next_free;
  const struct mg_up_call_cbs *cbs;
  CURL *easy;               /* owned, reused across calls */
  uv_timer_t timer;         /* first byte / idle / total */
  char *req_body;           /* owned */
  uint64_t deadline_total;  /* uv_now() milliseconds */
  uint64_t deadline_first;
  uint64_t last_data;
  uint32_t idle_ms;
  bool active;              /* in the multi handle */
  bool paused;
  bool want_stream;
  bool got_data;
  bool aborted, too_big;
  /* The request's own header line, chained in front of the shared list
   * (no allocation per call). */
  struct curl_slist decision_node;
  char decision_line[64];
};

struct mg_upstream_cfg;

struct mg_upstream {
  uv_loop_t *loop;           /* borrowed */
  CURLM *multi;              /* owned */
  uv_timer_t timer;          /* curl's own timeout */
  uv_idle_t drain;           /* delivers finished transfers (on_drain) */
  struct mg_up_call *free;   /* pool of idle calls */
  size_t calls;              /* calls allocated (idle + active) */
  size_t active;
  size_t pool_max;           /* idle calls kept beyond this are freed */
  uint32_t idle_connection_ms;
  uint64_t paused_total;     /* times a transfer was paused (metrics) */
  int pending_closes;        /* close callbacks still to come */
  struct up_sock *socks;     /* sockets being watched (owned) */
  struct up_fdslot *fdslots; /* owned table by descriptor number */
  size_t nfdslots;
  char *proxy;               /* owned: CURLOPT_PROXY for calls, or NULL */
  char *default_cainfo;      /* owned: libcurl's built-in CA bundle */
  bool closing;
  void (*close_cb)(void *arg);
  void *close_arg;
};

/* 0 or a negative errno. */
int mg_upstream_init(struct mg_upstream *up, uv_loop_t *loop,
                     const struct mg_upstream_cfg *cfg) MG_WARN_UNUSED;
/* Apply a new config's connection settings (reload). */
void mg_upstream_configure(struct mg_upstream *up,
                           const struct mg_upstream_cfg *cfg);

/* Start a call. NULL when it could not start (out of memory, or curl
 * refused it); on_done is then never called. */
struct mg_up_call *mg_up_call_start(struct mg_upstream *up,
                                    const struct mg_up_request *req,
                                    const struct mg_up_call_cbs *cbs,
                                    void *owner);
/* A response header's value (case-insensitive name), trimmed, copied into
 * out. 0, or -ENOENT when absent. Valid from the first on_data until the
 * call is released. */
int mg_up_call_header(struct mg_up_call *call, const char *name, char *out,
                      size_t n);

/* Resume a call paused by MG_UP_PAUSE. May call on_data before returning.
 * Not from inside on_data. */
void mg_up_call_resume(struct mg_up_call *call);
/* Stop a call now and give it back; on_done is not called. Not from inside
 * on_data. */
void mg_up_call_cancel(struct mg_up_call *call);
/* Give a finished call back (after on_done); its body is freed. */
void mg_up_call_release(struct mg_up_call *call);

/* Cancel nothing, refuse new calls, free the pool and close the handles;
 * cb runs when everything is closed. Calls still active are cancelled. */
void mg_upstream_close(struct mg_upstream *up, void (*cb)(void *arg),
                       void *arg);

#endif
