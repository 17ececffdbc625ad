/* mock.c - mg-mock: a mock model server (OpenAI and Anthropic APIs) for
 * modelgate's integration tests, its demo and its benchmarks.
 *
 *   mg-mock [--listen HOST:PORT] [--port-file FILE] [--quiet] [--name NAME]
 *           [--store-max N]
 *
 * --name (or MG_MOCK_NAME): shown in /_mock/stats and as "[NAME] " before
 * every answer text, so a test with several mocks sees which one answered.
 * --store-max: how many responses GET /v1/responses/{id} remembers (the
 * most recent ones; default 10000).
 *
 * One libuv loop, HTTP/1.1 with llhttp (strict), one request in flight per
 * connection. Streams write their next event only once the previous write has
 * completed, so a client (or a proxy) that stops reading stops the stream:
 * tests rely on it to prove backpressure.
 *
 * API: POST /v1/chat/completions, /v1/completions, /v1/embeddings (OpenAI
 * shapes, `stream`, `logprobs`, `stream_options.include_usage`,
 * `encoding_format` "float" or "base64"); POST /v1/responses (plain and
 * `stream`, `include` "message.output_text.logprobs",
 * `previous_response_id`, `store`), GET and DELETE /v1/responses/{id}, GET
 * /v1/responses/{id}/input_items (`order`, `limit`, `after`); POST
 * /v1/messages (plain and `stream`) and /v1/messages/count_tokens
 * (Anthropic; x-api-key, or Authorization: Bearer, and anthropic-version
 * required); GET /healthz.
 * OpenAI-family answers carry x-request-id, openai-processing-ms,
 * openai-version and x-ratelimit-{limit,remaining,reset}-requests;
 * Anthropic ones request-id and anthropic-ratelimit-requests-*.
 *
 * Control (not counted in `requests`):
 *   POST /_mock/behaviour  one behaviour object, or an array of them (all
 *       validated before any is applied); every mode and option is listed
 *       in mock.h. Behaviours are keyed by the request's model and apply
 *       to every POST endpoint, each answering in its own family's shapes;
 *       GET/DELETE of stored responses ignore them.
 *   DELETE /_mock/behaviour  every model back to "ok".
 *   GET /_mock/stats         counters, by_model, received_by_model,
 *                            by_endpoint, last {body, headers, method,
 *                            path, request_id}, the Anthropic headers
 *                            last seen.
 *   DELETE /_mock/stats      zero the counters, forget the maps. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <llhttp.h>
#include <uv.h>

#include "common/cfg.h"
#include "common/log.h"
#include "mock.h"

#define BODY_MAX (1024 * 1024)
#define URL_MAX (8 * 1024)
#define HEADERS_MAX (64 * 1024)
#define HEADER_COUNT_MAX 100
/* Received bytes not parsed yet: a pipelined request waits here while the
 * previous one is answered. */
#define IN_MAX (BODY_MAX + HEADERS_MAX + URL_MAX + 64 * 1024)
#define READ_CHUNK (64 * 1024)
/* After a response that ends the connection, how long to drain what the
 * client still sends before closing (so that the close does not turn into a
 * reset that destroys the response in flight). */
#define LINGER_MS 1000
/* Responses kept for GET /v1/responses/{id}: the last STORE_MAX of them
 * (--store-max), and at most STORE_BYTES. */
#define STORE_MAX 10000
#define STORE_BYTES (256u * 1024 * 1024)
/* The request budget the rate-limit headers describe, per minute. */
#define RATE_LIMIT 10000
#define RATE_WINDOW_MS 60000

enum conn_state {
  C_READING,   /* parsing a request */
  C_WAITING,   /* the timer holds the answer back (`ms`) */
  C_WRITING,   /* a response is being written */
  C_STREAMING, /* an event stream is being written */
  C_HANGING,   /* mode hang: never answer */
  C_LINGER,    /* answered and shut down; draining until the peer closes */
  C_CLOSING    /* handles closing; freed in the last close callback */
};

/* One client connection. */
struct conn {
  uv_tcp_t tcp;     /* data = this conn */
  uv_timer_t timer; /* `ms`, `chunk_ms` and linger; data = conn */
  uv_shutdown_t shutdown;
  int handles;              /* open handles; freed when it drops to 0 */
  struct conn *prev, *next; /* the server's list of connections */
  llhttp_t parser;          /* data = this conn */
  enum conn_state state;
  struct mg_buf in; /* owned: received bytes not parsed yet */
  int writes;       /* uv_write requests in flight */

  /* The request being parsed (reset by on_message_begin). */
  struct mg_buf url;  /* owned */
  struct mg_buf hdrs; /* owned: name\0value\0..., names lower-case */
  size_t nhdrs;
  struct mg_buf body; /* owned, de-chunked */
  int reject;         /* status refusing the request: 413, 414, 431 */
  bool expect_continue;
  bool continue_sent;
  bool keep_alive;
  bool head_only;    /* a HEAD request: headers without the body */
  bool head_counted; /* counted in requests_received */
  bool mid_request;  /* bytes of a request arrived, not yet dispatched */
  uint64_t t_begin;  /* loop time of the request's first byte */
  bool idle_armed;   /* the timer runs close_idle_ms */

  /* The response. */
  bool close_after;             /* end the connection after this response */
  int status;                   /* for the log line */
  bool is_api;                  /* rq and bhv describe an API request */
  enum mg_mock_family family;   /* whose headers and errors it gets */
  char request_id[48];          /* x-request-id / request-id */
  struct mg_mock_req rq;        /* owned */
  struct mg_mock_bhv bhv;       /* owned copy of the behaviour in force */
  bool stream_counted;          /* counted in stats.active_streams */
  struct mg_mock_stream stream; /* owned; borrows rq */
  long next_event;              /* index of the next stream event to write */
};

/* One write: the buffer lives until the callback. */
enum wkind {
  W_PLAIN,        /* nothing to do when written (100 Continue) */
  W_RESPONSE_END, /* the last bytes of a response */
  W_STREAM_HEAD,  /* a stream's status line and headers */
  W_EVENT,        /* one stream event */
  W_STREAM_END,   /* [DONE] and the terminating chunk */
  W_TRUNCATED,    /* mode truncate: the first half, then close */
  W_RAW           /* mode raw: the bytes, then close or keep */
};

struct wreq {
  uv_write_t req;
  struct conn *c; /* borrowed: the conn is freed only after this callback */
  enum wkind kind;
  char *data; /* owned */
};

enum stream_end { S_COMPLETED, S_ABORTED, S_DIED };

static struct {
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_signal_t sigterm, sigint;
  bool quiet;
  bool stopping;
  struct conn *conns;         /* list of live connections */
  struct mg_mock_table table; /* behaviours */
  struct mg_mock_stats stats;
  unsigned long next_id; /* answer ids */
  llhttp_settings_t settings;
  const char *name;           /* borrowed: --name or MG_MOCK_NAME, or NULL */
  struct mg_mock_store store; /* responses for GET /v1/responses/{id} */
  bool rate_started;
  uint64_t rate_start; /* loop time the rate window began */
  long rate_used;      /* answers in the window */
} srv;

static void conn_process(struct conn *c);
static void stream_next(struct conn *c);

/* ---- connection lifetime ------------------------------------------------ */

static void stream_end(struct conn *c, enum stream_end how) {
  if (!c->stream_counted)
    return;
  c->stream_counted = false;
  srv.stats.active_streams--;
  if (how == S_COMPLETED)
    srv.stats.streams_completed++;
  else if (how == S_ABORTED)
    srv.stats.streams_aborted++;
  else
    srv.stats.streams_died++;
}

/* Forget the request just answered. */
static void request_clear(struct conn *c) {
  mg_buf_reset(&c->url);
  mg_buf_reset(&c->hdrs);
  mg_buf_reset(&c->body);
  c->nhdrs = 0;
  mg_mock_stream_clear(&c->stream);
  mg_mock_req_clear(&c->rq);
  mg_mock_bhv_clear(&c->bhv);
  c->is_api = false;
  c->family = MG_MOCK_FAM_NONE;
  c->request_id[0] = '\0';
  c->head_only = false;
  c->next_event = 0;
  c->status = 0;
}

static void conn_free(struct conn *c) {
  if (c->prev)
    c->prev->next = c->next;
  else
    srv.conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  request_clear(c);
  mg_buf_free(&c->in);
  mg_buf_free(&c->url);
  mg_buf_free(&c->hdrs);
  mg_buf_free(&c->body);
  srv.stats.connections_active--;
  free(c);
}

static void on_close(uv_handle_t *h) {
  struct conn *c = h->data;
  if (--c->handles == 0)
    conn_free(c);
}

/* Close both handles; a stream still running counts as aborted (the client
 * went away, or the server is stopping). reset: abortive close (RST). */
static void conn_close_how(struct conn *c, bool reset) {
  if (c->state == C_CLOSING)
    return;
  stream_end(c, S_ABORTED);
  c->state = C_CLOSING;
  if (!reset || uv_tcp_close_reset(&c->tcp, on_close) != 0)
    uv_close((uv_handle_t *)&c->tcp, on_close);
  uv_close((uv_handle_t *)&c->timer, on_close);
}

static void conn_close(struct conn *c) { conn_close_how(c, false); }

static void on_shutdown(uv_shutdown_t *req, int status) {
  struct conn *c = req->data;
  if (status < 0)
    conn_close(c);
}

static void on_timer(uv_timer_t *t);

/* End the connection gracefully: send FIN, drain the client's bytes until it
 * closes too (or LINGER_MS passes), then close. */
static void conn_linger(struct conn *c) {
  if (c->state == C_CLOSING || c->state == C_LINGER)
    return;
  c->state = C_LINGER;
  c->shutdown.data = c;
  mg_buf_reset(&c->in);
  if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0 ||
      uv_timer_start(&c->timer, on_timer, LINGER_MS, 0) != 0)
    conn_close(c);
}

/* ---- writing ------------------------------------------------------------ */

static void response_done(struct conn *c);

static void on_write(uv_write_t *req, int status) {
  struct wreq *w = (struct wreq *)req;
  struct conn *c = w->c;
  enum wkind kind = w->kind;

  free(w->data);
  free(w);
  c->writes--;
  if (c->state == C_CLOSING)
    return;
  if (status < 0) {
    /* The client is gone (EPIPE, ECONNRESET): a running stream is aborted. */
    conn_close(c);
    return;
  }
  switch (kind) {
  case W_PLAIN:
    break;
  case W_RESPONSE_END:
    response_done(c);
    break;
  case W_STREAM_HEAD:
    stream_next(c);
    break;
  case W_EVENT:
    srv.stats.chunks_sent++;
    stream_next(c);
    break;
  case W_STREAM_END:
    srv.stats.chunks_sent++;
    stream_end(c, S_COMPLETED);
    response_done(c);
    break;
  case W_TRUNCATED:
    conn_linger(c);
    break;
  case W_RAW:
    if (c->bhv.raw_keep)
      response_done(c);
    else
      conn_linger(c);
    break;
  }
}

/* Write the first len bytes of b (b is emptied). Closes the connection on
 * failure. */
static int conn_write(struct conn *c, struct mg_buf *b, size_t len,
                      enum wkind kind) {
  struct wreq *w = malloc(sizeof(*w));
  size_t n;
  uv_buf_t ub;
  int rc;

  if (w == NULL) {
    mg_buf_free(b);
    conn_close(c);
    return -ENOMEM;
  }
  w->c = c;
  w->kind = kind;
  w->data = mg_buf_steal(b, &n);
  if (len > n)
    len = n;
  ub = uv_buf_init(w->data, (unsigned int)len);
  rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &ub, 1, on_write);
  if (rc != 0) {
    /* The callback will never run. */
    free(w->data);
    free(w);
    conn_close(c);
    return rc;
  }
  c->writes++;
  return 0;
}

static const char *reason(int status) {
  switch (status) {
  case 100:
    return "Continue";
  case 200:
    return "OK";
  case 201:
    return "Created";
  case 202:
    return "Accepted";
  case 204:
    return "No Content";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 409:
    return "Conflict";
  case 413:
    return "Content Too Large";
  case 414:
    return "URI Too Long";
  case 422:
    return "Unprocessable Content";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 501:
    return "Not Implemented";
  case 502:
    return "Bad Gateway";
  case 503:
    return "Service Unavailable";
  case 504:
    return "Gateway Timeout";
  case 529:
    return "Overloaded";
  default:
    return "Status";
  }
}

/* The Retry-After of a behaviour, in the format it asks for. */
static int retry_after(struct mg_buf *h, const struct mg_mock_bhv *b) {
  if (b->retry_after_format == 2)
    return mg_buf_printf(h, "retry-after-ms: %.0f\r\n", b->retry_after * 1000);
  if (b->retry_after_format == 1) {
    struct timespec now;
    struct tm tm;
    char date[64];
    long long at_ms;
    time_t at;
    clock_gettime(CLOCK_REALTIME, &now);
    at_ms = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000 +
            (long long)(b->retry_after * 1000);
    at = (time_t)((at_ms + 999) / 1000); /* whole seconds: never early */
    gmtime_r(&at, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    return mg_buf_printf(h, "retry-after: %s\r\n", date);
  }
  return mg_buf_printf(h, "retry-after: %g\r\n", b->retry_after);
}

/* The request-id and rate-limit headers of the OpenAI or Anthropic family
 * (what their SDKs read: x-request-id becomes `_request_id`). */
static int family_headers(struct mg_buf *h, struct conn *c) {
  uint64_t now = uv_now(&srv.loop), reset_ms;
  long remaining;
  int rc;

  if (!srv.rate_started || now - srv.rate_start >= RATE_WINDOW_MS) {
    srv.rate_started = true;
    srv.rate_start = now;
    srv.rate_used = 0;
  }
  srv.rate_used++;
  remaining = srv.rate_used < RATE_LIMIT ? RATE_LIMIT - srv.rate_used : 0;
  reset_ms = srv.rate_start + RATE_WINDOW_MS - now;
  if (c->family == MG_MOCK_FAM_OPENAI) {
    char reset[32];
    if (reset_ms < 1000)
      snprintf(reset, sizeof(reset), "%llums", (unsigned long long)reset_ms);
    else
      snprintf(reset, sizeof(reset), "%gs", (double)reset_ms / 1000);
    rc = mg_buf_printf(h,
                       "x-request-id: %s\r\nopenai-processing-ms: %llu\r\n"
                       "openai-version: 2020-10-01\r\n"
                       "x-ratelimit-limit-requests: %d\r\n"
                       "x-ratelimit-remaining-requests: %ld\r\n"
                       "x-ratelimit-reset-requests: %s\r\n",
                       c->request_id, (unsigned long long)(now - c->t_begin),
                       RATE_LIMIT, remaining, reset);
  } else {
    /* Anthropic gives the reset as an RFC 3339 time. */
    time_t at = time(NULL) + (time_t)((reset_ms + 999) / 1000);
    struct tm tm;
    char when[40];
    gmtime_r(&at, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    rc = mg_buf_printf(h,
                       "request-id: %s\r\n"
                       "anthropic-ratelimit-requests-limit: %d\r\n"
                       "anthropic-ratelimit-requests-remaining: %ld\r\n"
                       "anthropic-ratelimit-requests-reset: %s\r\n",
                       c->request_id, RATE_LIMIT, remaining, when);
  }
  return rc;
}

/* Status line and headers; clen < 0 means chunked. A behaviour's `headers`
 * come last and replace the mock's Content-Type, Connection and
 * Transfer-Encoding lines when they name them. */
static int head(struct mg_buf *h, struct conn *c, int status, const char *ctype,
                long long clen) {
  const struct mg_mock_bhv *b = c->is_api ? &c->bhv : NULL;
  int rc = mg_buf_printf(h, "HTTP/1.1 %d %s\r\nserver: mg-mock\r\n", status,
                         reason(status));
  c->status = status;
  if (rc == 0 && ctype && !(b && b->h_ctype))
    rc = mg_buf_printf(h, "content-type: %s\r\n", ctype);
  if (rc == 0 && clen >= 0)
    rc = mg_buf_printf(h, "content-length: %lld\r\n", clen);
  if (rc == 0 && clen < 0 && !(b && b->h_chunked))
    rc = mg_buf_puts(h, "transfer-encoding: chunked\r\n");
  if (rc == 0 && clen < 0)
    rc = mg_buf_puts(h, "cache-control: no-cache\r\n");
  if (rc == 0 && b && b->has_retry_after)
    rc = retry_after(h, b);
  if (rc == 0 && b && b->has_header_confidence)
    rc = mg_buf_printf(h, "x-confidence: %g\r\n", b->header_confidence);
  if (rc == 0 && c->family != MG_MOCK_FAM_NONE)
    rc = family_headers(h, c);
  if (rc == 0 && b && b->headers)
    rc = mg_buf_puts(h, b->headers);
  if (rc == 0 && !(b && b->h_conn) &&
      (c->close_after || !c->keep_alive || srv.stopping))
    rc = mg_buf_puts(h, "connection: close\r\n");
  if (rc == 0)
    rc = mg_buf_puts(h, "\r\n");
  return rc;
}

/* A whole response; body may be NULL. With a behaviour's Transfer-Encoding
 * header the body goes as one chunk. */
static void respond(struct conn *c, int status, const char *ctype,
                    const char *body, size_t len) {
  bool chunked = c->is_api && c->bhv.h_chunked;
  struct mg_buf b;
  int rc;
  mg_buf_init(&b, SIZE_MAX / 2);
  rc = head(&b, c, status, ctype, chunked ? -1 : (long long)len);
  if (rc == 0 && !c->head_only) {
    if (chunked && len)
      rc = mg_buf_printf(&b, "%zx\r\n", len);
    if (rc == 0 && len)
      rc = mg_buf_append(&b, body, len);
    if (rc == 0 && chunked)
      rc = mg_buf_puts(&b, len ? "\r\n0\r\n\r\n" : "0\r\n\r\n");
  }
  if (rc) {
    mg_buf_free(&b);
    conn_close(c);
    return;
  }
  c->state = C_WRITING;
  (void)conn_write(c, &b, b.len, W_RESPONSE_END);
}

/* An error in the family's shape: OpenAI {"error":{message, type, param,
 * code}}; Anthropic {"type":"error","error":{type, message},"request_id"},
 * its type following the status. */
static void respond_error_full(struct conn *c, int status, const char *type,
                               const char *msg, const char *param,
                               const char *code) {
  struct mg_buf b;
  int rc;
  mg_buf_init(&b, SIZE_MAX / 2);
  if (c->family == MG_MOCK_FAM_ANTHROPIC)
    rc = mg_mock_anthropic_error(&b, status, NULL, msg, c->request_id);
  else
    rc = mg_mock_error_body_full(&b, type, msg, param, code);
  if (rc) {
    mg_buf_free(&b);
    conn_close(c);
    return;
  }
  respond(c, status, "application/json", b.data, b.len);
  mg_buf_free(&b);
}

static void respond_error(struct conn *c, int status, const char *type,
                          const char *msg) {
  respond_error_full(c, status, type, msg, NULL, NULL);
}

static void respond_json(struct conn *c, int status, const char *json) {
  respond(c, status, "application/json", json, strlen(json));
}

/* The response is written: serve the next request, or end. */
static void response_done(struct conn *c) {
  long idle = c->is_api ? c->bhv.close_idle_ms : 0;

  request_clear(c);
  if (c->close_after || !c->keep_alive || srv.stopping) {
    conn_linger(c);
    return;
  }
  c->state = C_READING;
  llhttp_resume(&c->parser);
  conn_process(c);
  /* close_idle_ms: a pooled connection the client finds closed before its
   * next request. Only when nothing of a next request has arrived. */
  if (idle > 0 && c->state == C_READING && !c->mid_request) {
    c->idle_armed = true;
    if (uv_timer_start(&c->timer, on_timer, (uint64_t)idle, 0) != 0)
      conn_close(c);
  }
}

/* Keep one answered Response for GET /v1/responses/{id}. */
static void store_response(struct conn *c, const char *json) {
  char *items = cJSON_PrintUnformatted(c->rq.items);
  if (json == NULL || items == NULL ||
      mg_mock_store_put(&srv.store, c->rq.id, c->rq.model, json, items) != 0)
    mg_warn("store: out of memory: %s not kept", c->rq.id);
  free(items);
}

/* ---- answers ------------------------------------------------------------ */

static void stream_write_event(struct conn *c) {
  long total = mg_mock_stream_events(&c->stream);
  long i = c->next_event;
  struct mg_buf ev, out;
  bool last = i == total - 1;
  int rc;

  mg_buf_init(&ev, SIZE_MAX / 2);
  mg_buf_init(&out, SIZE_MAX / 2);
  rc = mg_mock_stream_event(&c->stream, i, &ev);
  if (rc == 0)
    rc = mg_buf_printf(&out, "%zx\r\n", ev.len);
  if (rc == 0)
    rc = mg_buf_append(&out, ev.data, ev.len);
  if (rc == 0)
    rc = mg_buf_puts(&out, last ? "\r\n0\r\n\r\n" : "\r\n");
  mg_buf_free(&ev);
  if (rc) {
    mg_buf_free(&out);
    conn_close(c);
    return;
  }
  c->next_event++;
  (void)conn_write(c, &out, out.len, last ? W_STREAM_END : W_EVENT);
}

/* The previous stream write completed: write the next event now or after
 * chunk_ms, or die (stream_die). */
static void stream_next(struct conn *c) {
  if (c->bhv.mode == MG_MOCK_STREAM_DIE) {
    /* Chat and completions die at the latest before their finish chunk;
     * the typed streams before their last event. */
    long cap = c->rq.api == MG_MOCK_CHAT || c->rq.api == MG_MOCK_COMPLETIONS
                   ? c->stream.chunks
                   : c->stream.events - 1;
    long die = c->bhv.die_after < cap ? c->bhv.die_after : cap;
    if (c->next_event >= die) {
      stream_end(c, S_DIED);
      conn_close_how(c, true);
      return;
    }
  }
  if (c->next_event > 0 && c->bhv.chunk_ms > 0) {
    if (uv_timer_start(&c->timer, on_timer, (uint64_t)c->bhv.chunk_ms, 0))
      conn_close(c);
    return;
  }
  stream_write_event(c);
}

static void stream_start(struct conn *c) {
  struct mg_buf h;

  mg_buf_init(&h, SIZE_MAX / 2);
  if (mg_mock_stream_init(&c->stream, &c->rq, &c->bhv, ++srv.next_id) ||
      head(&h, c, 200, "text/event-stream", -1)) {
    mg_buf_free(&h);
    conn_close(c);
    return;
  }
  /* The response exists from its first event on (a stream that is made
   * to die never completes, so it is not kept). */
  if (c->rq.api == MG_MOCK_RESPONSES && c->rq.store &&
      c->bhv.mode != MG_MOCK_STREAM_DIE) {
    char *json = cJSON_PrintUnformatted(c->stream.final);
    store_response(c, json);
    free(json);
  }
  c->next_event = 0;
  c->state = C_STREAMING;
  (void)conn_write(c, &h, h.len, W_STREAM_HEAD);
}

/* Mode truncate: announce the whole answer, send about half, close. */
static void truncate_answer(struct conn *c) {
  struct mg_buf body, h;
  size_t half;

  mg_buf_init(&body, SIZE_MAX / 2);
  mg_buf_init(&h, SIZE_MAX / 2);
  if (mg_mock_answer(&c->rq, &c->bhv, ++srv.next_id, &body) ||
      head(&h, c, 200, "application/json", (long long)body.len) ||
      mg_buf_append(&h, body.data, body.len)) {
    mg_buf_free(&body);
    mg_buf_free(&h);
    conn_close(c);
    return;
  }
  half = h.len - body.len + body.len / 2;
  mg_buf_free(&body);
  c->state = C_WRITING;
  (void)conn_write(c, &h, half, W_TRUNCATED);
}

static void answer(struct conn *c) {
  struct mg_buf b;

  switch (c->bhv.mode) {
  case MG_MOCK_RESET:
    conn_close_how(c, true);
    return;
  case MG_MOCK_CLOSE:
    /* The whole request was read; FIN without a byte of answer. */
    c->status = 0;
    conn_linger(c);
    return;
  case MG_MOCK_RAW: {
    struct mg_buf r;
    mg_buf_init(&r, MG_MOCK_RAW_MAX + 1);
    c->status = 0;
    if (c->bhv.raw == NULL || mg_buf_append(&r, c->bhv.raw, c->bhv.raw_len)) {
      mg_buf_free(&r);
      conn_linger(c);
      return;
    }
    c->state = C_WRITING;
    (void)conn_write(c, &r, r.len, W_RAW);
    return;
  }
  case MG_MOCK_STATUS:
    if (c->bhv.body) {
      respond_json(c, c->bhv.status, c->bhv.body);
      return;
    }
    respond_error(c, c->bhv.status, "server_error",
                  c->family == MG_MOCK_FAM_ANTHROPIC && c->bhv.status == 529
                      ? "Overloaded"
                      : "mock server error");
    return;
  case MG_MOCK_GARBAGE:
    respond_json(
        c, 200,
        c->rq.api == MG_MOCK_RESPONSES
            ? "{\"id\":\"resp_garbage\",\"object\":\"response\",\"output\":"
              "[{\"content\": this is not JSON <html>"
        : c->family == MG_MOCK_FAM_ANTHROPIC
            ? "{\"id\":\"msg_garbage\",\"type\":\"message\",\"content\":"
              "[{\"text\": this is not JSON <html>"
            : "{\"id\":\"chatcmpl-mock-garbage\",\"object\":"
              "\"chat.completion\",\"choices\":[{\"message\": this is not "
              "JSON <html>");
    return;
  case MG_MOCK_TRUNCATE:
    truncate_answer(c);
    return;
  case MG_MOCK_STREAM_DIE:
    if (!c->rq.stream) {
      truncate_answer(c);
      return;
    }
    stream_start(c);
    return;
  default:
    break;
  }
  if (c->rq.stream) {
    stream_start(c);
    return;
  }
  mg_buf_init(&b, SIZE_MAX / 2);
  if (mg_mock_answer(&c->rq, &c->bhv, ++srv.next_id, &b)) {
    mg_buf_free(&b);
    conn_close(c);
    return;
  }
  if (c->rq.api == MG_MOCK_RESPONSES && c->rq.store)
    store_response(c, b.data);
  respond(c, 200, "application/json", b.data, b.len);
  mg_buf_free(&b);
}

static void on_timer(uv_timer_t *t) {
  struct conn *c = t->data;
  switch (c->state) {
  case C_WAITING:
    answer(c);
    break;
  case C_STREAMING:
    stream_write_event(c);
    break;
  case C_LINGER:
    conn_close(c);
    break;
  case C_READING:
    /* close_idle_ms ran out before a byte of the next request came. */
    if (c->idle_armed) {
      c->idle_armed = false;
      srv.stats.idle_closes++;
      conn_close(c);
    }
    break;
  default:
    break;
  }
}

/* The first value of a request header (lower-case name), or NULL. */
static const char *header_get(const struct conn *c, const char *name) {
  const char *h = c->hdrs.data;
  size_t i;
  for (i = 0; h && i < c->nhdrs; i++) {
    const char *value = h + strlen(h) + 1;
    if (strcmp(h, name) == 0)
      return value;
    h = value + strlen(value) + 1;
  }
  return NULL;
}

static void count(cJSON *map, const char *key) {
  if (mg_mock_stats_count(map, key) != 0)
    mg_warn("stats: out of memory");
}

/* Anthropic's required headers: 401 without a key, 400 without
 * anthropic-version (what the API answers). The key is x-api-key, or
 * Authorization: Bearer (how @anthropic-ai/sdk 1.x sends an apiKey). Records
 * what came. false when the request was answered. */
static bool anthropic_headers_ok(struct conn *c) {
  const char *key = header_get(c, "x-api-key");
  const char *auth = header_get(c, "authorization");
  const char *version = header_get(c, "anthropic-version");
  bool bearer = auth && strncmp(auth, "Bearer ", 7) == 0 && auth[7] != '\0';
  if (key && key[0] == '\0')
    key = NULL;
  if (version && version[0] == '\0')
    version = NULL;
  if (mg_mock_stats_anthropic(&srv.stats, key, auth, version,
                              header_get(c, "anthropic-beta")) != 0)
    mg_warn("stats: out of memory");
  if (key == NULL && !bearer) {
    respond_error(c, 401, NULL, "x-api-key header is required");
    return false;
  }
  if (version == NULL) {
    respond_error(c, 400, NULL, "anthropic-version: header is required");
    return false;
  }
  return true;
}

static void log_request(struct conn *c, const char *method, const char *path) {
  if (srv.quiet)
    return;
  if (c->is_api)
    mg_info("%s %s model=%s mode=%s%s -> %s%d", method, path, c->rq.model,
            mg_mock_mode_name(c->bhv.mode), c->rq.stream ? " stream" : "",
            c->bhv.ms > 0 ? "(delayed) " : "", c->status);
  else
    mg_info("%s %s -> %d", method, path, c->status);
}

static void api_request(struct conn *c, enum mg_mock_api api,
                        const char *method, const char *path,
                        const char *endpoint) {
  struct mg_buf err;
  cJSON *body;
  const cJSON *model;
  bool stream;
  int rc;

  srv.stats.requests++;
  count(srv.stats.by_endpoint, endpoint);
  if (strcmp(method, "POST") != 0) {
    respond_error(c, 405, "invalid_request_error", "use POST");
    return;
  }
  body = cJSON_ParseWithLength(c->body.data ? c->body.data : "", c->body.len);
  if (body == NULL) {
    respond_error(c, 400, "invalid_request_error",
                  "We could not parse the JSON body of your request.");
    return;
  }
  model = cJSON_GetObjectItemCaseSensitive(body, "model");
  if (cJSON_IsString(model))
    count(srv.stats.received_by_model, model->valuestring);
  if (c->family == MG_MOCK_FAM_ANTHROPIC && !anthropic_headers_ok(c)) {
    cJSON_Delete(body);
    return;
  }
  mg_buf_init(&err, 4096);
  rc = mg_mock_req_parse(&c->rq, api, body, &err);
  if (rc == 0 && c->rq.previous_id &&
      mg_mock_store_get(&srv.store, c->rq.previous_id) == NULL) {
    /* What OpenAI answers for an unknown (or deleted, or unstored) id. */
    mg_buf_reset(&err);
    rc = mg_buf_printf(&err, "Previous response with id '%s' not found.",
                       c->rq.previous_id)
             ? -ENOMEM
             : -EINVAL;
    c->rq.err_param = "previous_response_id";
    c->rq.err_code = "previous_response_not_found";
  }
  if (rc == 0)
    rc = mg_mock_stats_record(&srv.stats, c->rq.model, method, path,
                              c->request_id, body, c->hdrs.data, c->nhdrs);
  cJSON_Delete(body);
  if (rc == -EINVAL) {
    respond_error_full(c, 400, "invalid_request_error",
                       err.data ? err.data : "invalid request", c->rq.err_param,
                       c->rq.err_code);
    mg_buf_free(&err);
    return;
  }
  mg_buf_free(&err);
  if (rc == 0)
    rc = mg_mock_table_take(&srv.table, c->rq.model, &c->bhv);
  if (rc == 0 && c->bhv.content)
    rc = mg_mock_req_set_content(&c->rq, c->bhv.content);
  if (rc != 0) {
    respond_error(c, 500, "server_error", "mock out of memory");
    return;
  }
  c->is_api = true;
  if (c->bhv.h_close)
    c->close_after = true;
  c->status = c->bhv.mode == MG_MOCK_STATUS ? c->bhv.status : 200;
  if (c->bhv.mode == MG_MOCK_HANG) {
    c->state = C_HANGING;
    return;
  }
  stream = c->rq.stream &&
           (c->bhv.mode == MG_MOCK_OK || c->bhv.mode == MG_MOCK_SLOW ||
            c->bhv.mode == MG_MOCK_LOW_CONFIDENCE ||
            c->bhv.mode == MG_MOCK_STREAM_DIE);
  if (stream) {
    c->stream_counted = true;
    srv.stats.active_streams++;
  }
  if (c->bhv.ms > 0) {
    c->state = C_WAITING;
    if (uv_timer_start(&c->timer, on_timer, (uint64_t)c->bhv.ms, 0))
      conn_close(c);
    return;
  }
  answer(c);
}

static void set_behaviour(struct conn *c) {
  cJSON *v =
      cJSON_ParseWithLength(c->body.data ? c->body.data : "", c->body.len);
  struct mg_buf err;
  int rc;

  if (v == NULL) {
    respond_error(c, 400, "invalid_request_error",
                  "the behaviour is not valid JSON");
    return;
  }
  mg_buf_init(&err, 64 * 1024);
  rc = mg_mock_table_set(&srv.table, v, &err);
  cJSON_Delete(v);
  if (rc == 0)
    respond_json(c, 200, "{\"ok\":true}");
  else
    respond_error(c, rc == -EINVAL ? 400 : 500, "invalid_request_error",
                  err.data ? err.data : "out of memory");
  mg_buf_free(&err);
}

/* GET or DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items:
 * a stored response, counted under its model (behaviours do not apply). */
static void responses_pinned(struct conn *c, const char *method,
                             const char *path, const char *id, bool items,
                             const char *query) {
  const struct mg_mock_stored *e;
  bool get = strcmp(method, "GET") == 0, del = strcmp(method, "DELETE") == 0;
  struct mg_buf b, err;
  char msg[400];
  int rc;

  srv.stats.requests++;
  count(srv.stats.by_endpoint, items ? "responses.input_items"
                               : get ? "responses.get"
                               : del ? "responses.delete"
                                     : "responses.other");
  if (!get && !(del && !items)) {
    respond_error(c, 405, "invalid_request_error",
                  items ? "use GET" : "use GET or DELETE");
    return;
  }
  if ((e = mg_mock_store_get(&srv.store, id)) == NULL) {
    snprintf(msg, sizeof(msg), "Response with id '%s' not found.", id);
    respond_error(c, 404, "invalid_request_error", msg);
    return;
  }
  if (mg_mock_stats_record(&srv.stats, e->model, method, path, c->request_id,
                           NULL, c->hdrs.data, c->nhdrs) != 0)
    mg_warn("stats: out of memory");
  mg_buf_init(&b, SIZE_MAX / 2);
  mg_buf_init(&err, 4096);
  if (items) {
    rc = mg_mock_resp_input_items(e->items, query, &b, &err);
  } else if (get) {
    rc = mg_buf_puts(&b, e->response);
  } else {
    rc = mg_mock_resp_deleted(id, &b);
    (void)mg_mock_store_delete(&srv.store, id);
  }
  if (rc == 0)
    respond(c, 200, "application/json", b.data, b.len);
  else if (rc == -EINVAL)
    respond_error(c, 400, "invalid_request_error",
                  err.data ? err.data : "invalid query");
  else
    respond_error(c, 500, "server_error", "mock out of memory");
  mg_buf_free(&b);
  mg_buf_free(&err);
}

static void send_stats(struct conn *c) {
  struct mg_buf b;
  srv.stats.responses_stored = srv.store.count;
  mg_buf_init(&b, SIZE_MAX / 2);
  if (mg_mock_stats_json(&srv.stats, &b)) {
    mg_buf_free(&b);
    respond_error(c, 500, "server_error", "mock out of memory");
    return;
  }
  respond(c, 200, "application/json", b.data, b.len);
  mg_buf_free(&b);
}

/* A complete request is in c: answer it. */
static void dispatch(struct conn *c) {
  const char *method =
      llhttp_method_name((llhttp_method_t)llhttp_get_method(&c->parser));
  char path[256];
  size_t plen = c->url.len;
  const char *q = c->url.data ? memchr(c->url.data, '?', c->url.len) : NULL;

  if (q)
    plen = (size_t)(q - c->url.data);
  if (plen >= sizeof(path))
    plen = sizeof(path) - 1;
  if (plen)
    memcpy(path, c->url.data, plen);
  path[plen] = '\0';
  c->state = C_WRITING;
  c->head_only = strcmp(method, "HEAD") == 0;
  c->mid_request = false;
  /* The family whose headers and error shapes the answer takes. */
  if (strncmp(path, "/v1/messages", 12) == 0 &&
      (path[12] == '\0' || path[12] == '/'))
    c->family = MG_MOCK_FAM_ANTHROPIC;
  else if (strcmp(path, "/v1/chat/completions") == 0 ||
           strcmp(path, "/v1/completions") == 0 ||
           strcmp(path, "/v1/embeddings") == 0 ||
           strncmp(path, "/v1/responses", 13) == 0)
    c->family = MG_MOCK_FAM_OPENAI;
  if (c->family != MG_MOCK_FAM_NONE)
    mg_mock_new_id(c->request_id, sizeof(c->request_id), "req_");

  if (strcmp(path, "/healthz") == 0) {
    if (strcmp(method, "GET") == 0 || c->head_only)
      respond_json(c, 200, "{\"status\":\"ok\"}");
    else
      respond_error(c, 405, "invalid_request_error", "use GET");
  } else if (strcmp(path, "/_mock/behaviour") == 0) {
    if (strcmp(method, "POST") == 0) {
      set_behaviour(c);
    } else if (strcmp(method, "DELETE") == 0) {
      mg_mock_table_free(&srv.table);
      respond_json(c, 200, "{\"ok\":true}");
    } else {
      respond_error(c, 405, "invalid_request_error", "use POST or DELETE");
    }
  } else if (strcmp(path, "/_mock/stats") == 0) {
    if (strcmp(method, "GET") == 0 || c->head_only) {
      send_stats(c);
    } else if (strcmp(method, "DELETE") == 0) {
      mg_mock_stats_reset(&srv.stats);
      respond_json(c, 200, "{\"ok\":true}");
    } else {
      respond_error(c, 405, "invalid_request_error", "use GET or DELETE");
    }
  } else if (strcmp(path, "/v1/chat/completions") == 0) {
    api_request(c, MG_MOCK_CHAT, method, path, "chat");
  } else if (strcmp(path, "/v1/completions") == 0) {
    api_request(c, MG_MOCK_COMPLETIONS, method, path, "completions");
  } else if (strcmp(path, "/v1/embeddings") == 0) {
    api_request(c, MG_MOCK_EMBEDDINGS, method, path, "embeddings");
  } else if (strcmp(path, "/v1/responses") == 0) {
    api_request(c, MG_MOCK_RESPONSES, method, path, "responses");
  } else if (strncmp(path, "/v1/responses/", 14) == 0 && path[14] &&
             (strchr(path + 14, '/') == NULL ||
              (strchr(path + 14, '/') > path + 14 &&
               strcmp(strchr(path + 14, '/'), "/input_items") == 0))) {
    char id[256];
    const char *slash = strchr(path + 14, '/');
    size_t n = slash ? (size_t)(slash - (path + 14)) : strlen(path + 14);
    memcpy(id, path + 14, n);
    id[n] = '\0';
    responses_pinned(c, method, path, id, slash != NULL, q ? q + 1 : NULL);
  } else if (strcmp(path, "/v1/messages") == 0) {
    api_request(c, MG_MOCK_MESSAGES, method, path, "messages");
  } else if (strcmp(path, "/v1/messages/count_tokens") == 0) {
    api_request(c, MG_MOCK_COUNT_TOKENS, method, path, "count_tokens");
  } else {
    char msg[400];
    srv.stats.requests++;
    snprintf(msg, sizeof(msg), "Unknown request URL: %s %s", method, path);
    respond_error(c, 404, "invalid_request_error", msg);
  }
  log_request(c, method, path);
}

/* ---- parsing ------------------------------------------------------------ */

static int on_message_begin(llhttp_t *p) {
  struct conn *c = p->data;
  if (c->idle_armed) {
    c->idle_armed = false;
    uv_timer_stop(&c->timer);
  }
  c->mid_request = true;
  c->head_counted = false;
  c->t_begin = uv_now(&srv.loop);
  mg_buf_reset(&c->url);
  mg_buf_reset(&c->hdrs);
  mg_buf_reset(&c->body);
  c->nhdrs = 0;
  c->reject = 0;
  c->expect_continue = false;
  c->continue_sent = false;
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  struct conn *c = p->data;
  if (mg_buf_append(&c->url, at, len)) {
    c->reject = 414;
    return -1;
  }
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  struct conn *c = p->data;
  size_t i;
  if (mg_buf_reserve(&c->hdrs, len)) {
    c->reject = 431;
    return -1;
  }
  for (i = 0; i < len; i++) {
    char ch = at[i];
    c->hdrs.data[c->hdrs.len++] = ch >= 'A' && ch <= 'Z' ? ch + 32 : ch;
  }
  c->hdrs.data[c->hdrs.len] = '\0';
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  struct conn *c = p->data;
  if (mg_buf_append(&c->hdrs, at, len)) {
    c->reject = 431;
    return -1;
  }
  return 0;
}

/* Both "complete" callbacks end a string with a NUL byte. */
static int on_header_field_complete(llhttp_t *p) {
  struct conn *c = p->data;
  if (c->nhdrs >= HEADER_COUNT_MAX || mg_buf_append(&c->hdrs, "", 1)) {
    c->reject = 431;
    return -1;
  }
  return 0;
}

static int on_header_value_complete(llhttp_t *p) {
  struct conn *c = p->data;
  if (mg_buf_append(&c->hdrs, "", 1)) {
    c->reject = 431;
    return -1;
  }
  c->nhdrs++;
  return 0;
}

/* Is this URL an API request (not /_mock/... nor /healthz)? */
static bool counted_url(const struct mg_buf *url) {
  size_t n = url->len;
  const char *q = url->data ? memchr(url->data, '?', url->len) : NULL;
  if (url->data == NULL)
    return true;
  if (q)
    n = (size_t)(q - url->data);
  if (n >= 7 && memcmp(url->data, "/_mock/", 7) == 0)
    return false;
  return !(n == 8 && memcmp(url->data, "/healthz", 8) == 0);
}

static int on_headers_complete(llhttp_t *p) {
  struct conn *c = p->data;
  const char *h = c->hdrs.data;
  size_t i;

  /* A request counts once its head arrived, whatever happens next (issue
   * 10.1: tests compare it with the requests a client sent). */
  if (counted_url(&c->url)) {
    c->head_counted = true;
    srv.stats.requests_received++;
  }

  if ((p->flags & F_CONTENT_LENGTH) && p->content_length > BODY_MAX) {
    c->reject = 413;
    return -1;
  }
  for (i = 0; h && i < c->nhdrs; i++) {
    const char *value = h + strlen(h) + 1;
    if (strcmp(h, "expect") == 0) {
      /* RFC 9110, 10.1.1: answer 100 before the client sends the body
       * (curl waits a second for it otherwise). */
      const char *v = value;
      static const char want[] = "100-continue";
      size_t k;
      for (k = 0; k < sizeof(want) - 1; k++)
        if (v[k] == '\0' || (v[k] | 0x20) != want[k])
          break;
      c->expect_continue = k == sizeof(want) - 1 && v[k] == '\0';
    }
    h = value + strlen(value) + 1;
  }
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  struct conn *c = p->data;
  if (mg_buf_append(&c->body, at, len)) {
    c->reject = 413;
    return -1;
  }
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  struct conn *c = p->data;
  if (c->head_counted)
    srv.stats.bodies_read++;
  c->keep_alive = llhttp_should_keep_alive(p) != 0;
  /* One request at a time: keep the pipelined bytes until it is answered. */
  return HPE_PAUSED;
}

/* Parse what has arrived; dispatch a complete request. */
static void conn_process(struct conn *c) {
  while (c->state == C_READING && c->in.len > 0) {
    const char *data = c->in.data;
    llhttp_errno_t e = llhttp_execute(&c->parser, data, c->in.len);

    if (e == HPE_OK) {
      mg_buf_reset(&c->in);
      break;
    }
    if (e == HPE_PAUSED) {
      mg_buf_consume(&c->in, (size_t)(llhttp_get_error_pos(&c->parser) - data));
      dispatch(c);
      continue;
    }
    {
      int status = c->reject ? c->reject : 400;
      char msg[256];
      snprintf(msg, sizeof(msg), "malformed request: %s",
               c->reject ? reason(c->reject)
                         : llhttp_get_error_reason(&c->parser));
      mg_buf_reset(&c->in);
      c->close_after = true;
      c->state = C_WRITING;
      respond_error(c, status, "invalid_request_error", msg);
      if (!srv.quiet)
        mg_info("bad request -> %d (%s)", status, msg);
      return;
    }
  }
  if (c->state == C_READING && c->expect_continue && !c->continue_sent) {
    struct mg_buf b;
    mg_buf_init(&b, 64);
    c->continue_sent = true;
    if (mg_buf_puts(&b, "HTTP/1.1 100 Continue\r\n\r\n")) {
      mg_buf_free(&b);
      conn_close(c);
      return;
    }
    (void)conn_write(c, &b, b.len, W_PLAIN);
  }
}

/* ---- reading and accepting --------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct conn *c = h->data;
  size_t room = c->in.max - c->in.len;

  if (room > READ_CHUNK)
    room = READ_CHUNK;
  /* No room: libuv reports UV_ENOBUFS to on_read, which closes. */
  if (room == 0 || mg_buf_reserve(&c->in, room) != 0) {
    *buf = uv_buf_init(NULL, 0);
    return;
  }
  *buf = uv_buf_init(c->in.data + c->in.len, (unsigned int)room);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct conn *c = s->data;

  if (nread > 0) {
    c->in.len += (size_t)nread;
    c->in.data[c->in.len] = '\0';
    /* Bytes of a next request: close_idle_ms no longer applies. */
    if (c->idle_armed) {
      c->idle_armed = false;
      uv_timer_stop(&c->timer);
    }
  }
  if (c->state == C_CLOSING || nread == 0)
    return;
  if (nread < 0) {
    /* EOF or an error: the client is gone. A stream in progress, or one
     * waiting for its `ms`, counts as aborted (conn_close). */
    conn_close(c);
    return;
  }
  if (c->state == C_LINGER) {
    mg_buf_reset(&c->in);
    return;
  }
  if (c->state == C_READING)
    conn_process(c);
}

static void on_connection(uv_stream_t *server, int status) {
  struct conn *c;

  if (status < 0) {
    mg_warn("accept: %s", uv_strerror(status));
    return;
  }
  if ((c = calloc(1, sizeof(*c))) == NULL)
    return;
  mg_buf_init(&c->in, IN_MAX);
  mg_buf_init(&c->url, URL_MAX);
  mg_buf_init(&c->hdrs, HEADERS_MAX);
  mg_buf_init(&c->body, BODY_MAX);
  mg_mock_bhv_default(&c->bhv);
  c->keep_alive = true;
  c->tcp.data = c;
  c->timer.data = c;
  c->parser.data = NULL;
  if (uv_tcp_init(&srv.loop, &c->tcp) != 0) {
    free(c);
    return;
  }
  c->handles = 1;
  if (uv_timer_init(&srv.loop, &c->timer) == 0)
    c->handles++;
  c->tcp.data = c;
  c->timer.data = c;
  c->next = srv.conns;
  if (srv.conns)
    srv.conns->prev = c;
  srv.conns = c;
  srv.stats.connections_opened++;
  srv.stats.connections_active++;
  if (c->handles != 2) {
    /* Only the tcp handle is open. */
    c->state = C_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, on_close);
    return;
  }
  llhttp_init(&c->parser, HTTP_REQUEST, &srv.settings);
  c->parser.data = c;
  c->state = C_READING;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
}

/* ---- process ------------------------------------------------------------ */

static void on_signal(uv_signal_t *s, int signum) {
  struct conn *c;

  if (srv.stopping)
    return;
  srv.stopping = true;
  if (!srv.quiet)
    mg_info("signal %d: stopping", signum);
  uv_close((uv_handle_t *)&srv.listener, NULL);
  uv_close((uv_handle_t *)&srv.sigterm, NULL);
  uv_close((uv_handle_t *)&srv.sigint, NULL);
  /* Handles close asynchronously: the list stays valid while walking it. */
  for (c = srv.conns; c; c = c->next)
    conn_close(c);
}

/* Write "listen=<port>\n" to path atomically: a reader never sees half. */
static int write_port_file(const char *path, int port) {
  char tmp[4096];
  FILE *f;
  int ok;

  if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
    return -ENAMETOOLONG;
  if ((f = fopen(tmp, "w")) == NULL)
    return -errno;
  ok = fprintf(f, "listen=%d\n", port) > 0;
  ok = (fclose(f) == 0) && ok;
  if (!ok || rename(tmp, path) != 0) {
    int err = errno ? errno : EIO;
    remove(tmp);
    return -err;
  }
  return 0;
}

static void usage(void) {
  fprintf(stderr, "usage: mg-mock [--listen HOST:PORT] [--port-file FILE] "
                  "[--quiet] [--name NAME] [--store-max N]\n");
}

/* Random bits for the ids (so two mocks never hand out the same one); the
 * clock and pid when /dev/urandom cannot be read. */
static uint64_t nonce(void) {
  uint64_t n = 0;
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t r = read(fd, &n, sizeof(n));
    close(fd);
    if (r == (ssize_t)sizeof(n))
      return n;
  }
  return (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid() ^
         (uint64_t)uv_hrtime();
}

int main(int argc, char **argv) {
  const char *listen_addr = "127.0.0.1:9900", *port_file = NULL;
  long store_max = STORE_MAX;
  char host[256];
  int port, i, rc, exit_code = 1;
  struct sockaddr_storage addr;
  int alen = sizeof(addr);

  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
      listen_addr = argv[++i];
    } else if (strcmp(argv[i], "--port-file") == 0 && i + 1 < argc) {
      port_file = argv[++i];
    } else if (strcmp(argv[i], "--quiet") == 0) {
      srv.quiet = true;
    } else if (strcmp(argv[i], "--name") == 0 && i + 1 < argc) {
      srv.name = argv[++i];
    } else if (strcmp(argv[i], "--store-max") == 0 && i + 1 < argc) {
      char *end;
      store_max = strtol(argv[++i], &end, 10);
      if (*end || end == argv[i] || store_max < 0 || store_max > 10000000) {
        fprintf(stderr, "mg-mock: bad --store-max \"%s\" (0..10000000)\n",
                argv[i]);
        return 2;
      }
    } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage();
      return 0;
    } else {
      usage();
      return 2;
    }
  }
  if (mg_cfg_parse_hostport(listen_addr, host, sizeof(host), &port) != 0) {
    fprintf(stderr, "mg-mock: bad --listen \"%s\" (want HOST:PORT)\n",
            listen_addr);
    return 2;
  }
  if (srv.name == NULL) {
    const char *env_name = getenv("MG_MOCK_NAME");
    srv.name = env_name && env_name[0] ? env_name : NULL;
  }
  /* A write to a vanished client must be an EPIPE error, not a signal. */
  signal(SIGPIPE, SIG_IGN);

  mg_mock_env_init(srv.name, nonce());
  mg_mock_table_init(&srv.table);
  if (mg_mock_stats_init(&srv.stats) != 0)
    return 1;
  srv.stats.name = srv.name;
  if (mg_mock_store_init(&srv.store, (size_t)store_max, STORE_BYTES) != 0) {
    mg_mock_stats_free(&srv.stats);
    return 1;
  }
  llhttp_settings_init(&srv.settings);
  srv.settings.on_message_begin = on_message_begin;
  srv.settings.on_url = on_url;
  srv.settings.on_header_field = on_header_field;
  srv.settings.on_header_field_complete = on_header_field_complete;
  srv.settings.on_header_value = on_header_value;
  srv.settings.on_header_value_complete = on_header_value_complete;
  srv.settings.on_headers_complete = on_headers_complete;
  srv.settings.on_body = on_body;
  srv.settings.on_message_complete = on_message_complete;

  if ((rc = uv_loop_init(&srv.loop)) != 0) {
    fprintf(stderr, "mg-mock: loop: %s\n", uv_strerror(rc));
    goto out_stats;
  }
  uv_tcp_init(&srv.loop, &srv.listener);
  uv_signal_init(&srv.loop, &srv.sigterm);
  uv_signal_init(&srv.loop, &srv.sigint);

  rc = strchr(host, ':') ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr)
                         : uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
  if (rc == 0)
    rc = uv_tcp_bind(&srv.listener, (const struct sockaddr *)&addr, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&srv.listener, 511, on_connection);
  if (rc == 0)
    rc = uv_tcp_getsockname(&srv.listener, (struct sockaddr *)&addr, &alen);
  if (rc != 0) {
    fprintf(stderr, "mg-mock: listen on %s: %s\n", listen_addr,
            uv_strerror(rc));
    goto out_close;
  }
  port = ntohs(addr.ss_family == AF_INET6
                   ? ((struct sockaddr_in6 *)&addr)->sin6_port
                   : ((struct sockaddr_in *)&addr)->sin_port);
  if (port_file && (rc = write_port_file(port_file, port)) != 0) {
    fprintf(stderr, "mg-mock: port file %s: %s\n", port_file, strerror(-rc));
    goto out_close;
  }
  if ((rc = uv_signal_start(&srv.sigterm, on_signal, SIGTERM)) != 0 ||
      (rc = uv_signal_start(&srv.sigint, on_signal, SIGINT)) != 0) {
    fprintf(stderr, "mg-mock: signals: %s\n", uv_strerror(rc));
    goto out_close;
  }
  if (!srv.quiet)
    mg_info("mg-mock listening on %s:%d", host, port);
  uv_run(&srv.loop, UV_RUN_DEFAULT);
  exit_code = 0;
  goto out_loop;

out_close:
  uv_close((uv_handle_t *)&srv.listener, NULL);
  uv_close((uv_handle_t *)&srv.sigterm, NULL);
  uv_close((uv_handle_t *)&srv.sigint, NULL);
  uv_run(&srv.loop, UV_RUN_DEFAULT);
out_loop:
  if ((rc = uv_loop_close(&srv.loop)) != 0) {
    fprintf(stderr, "mg-mock: loop not clean at exit: %s\n", uv_strerror(rc));
    exit_code = 1;
  }
out_stats:
  mg_mock_table_free(&srv.table);
  mg_mock_stats_free(&srv.stats);
  mg_mock_store_free(&srv.store);
  return exit_code;
}
