/* fuzz_conn.c - arbitrary client bytes through a whole client connection
 * (server/conn.c, issue 10.2): llhttp and modelgate's own checks beside
 * it, limits, pipelining, 100-continue, bodies buffered or discarded,
 * answers given at once, streamed or later, the lingering close, on a real
 * loop. The connection is one end of a socketpair taken with
 * mg_conn__adopt; the client is a uv_pipe_t on the other end, in the same
 * loop. What answers is a stub router (no upstream): GET /healthz, POST
 * /v1/echo (the body back), POST /v1/stream (the body back in chunks),
 * /v1/async (answered a few loop turns later), GET /v1/big (256 KiB), other /v1/
 * URLs 405, the rest 404. Many requests per input get parsed and
 * answered.
 *
 * Input: flags, step, then the client's bytes.
 *   flags bit 0  the client writes `step` bytes at a time (0: 1), running
 *                the loop between writes, so reads split anywhere
 *   flags bit 1  small limits (header 256 B, 8 fields, URL 64 B, body
 *                128 B) instead of 4 KiB, 32, 1 KiB, 16 KiB
 *   flags bit 2  a low write watermark (64 B), so answers queue and the
 *                connection waits for the client to drain
 *   flags bit 3  the server drains (as at SIGTERM) once the bytes are in
 *   flags bit 4  the client half-closes right after its last byte, before
 *                the answers are out (it gives up: late answers are
 *                dropped)
 *   flags bit 5  the shutdown grace ends right after the last byte: every
 *                answer in progress is aborted
 *
 * What must hold: the client's bytes parse, with llhttp in strict mode, as
 * a sequence of HTTP/1.1 answers: interim 100s, then one final answer per
 * request that was routed (no body for a HEAD), in order, then at most one
 * answer more (a request refused before its headers were complete), with
 * nothing after an answer that said "connection: close" (with bits 4 and
 * 5 the last answer may be cut short by the close); the loop closes
 * clean (every handle closed, uv_loop_close 0), and under ASan nothing
 * leaks. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <llhttp.h>
#include <uv.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/str.h"
#include "config/config.h"
#include "server/conn.h"
#include "server/resp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ROUTED (1u << 16)
#define OUT_MAX (8u << 20)
#define BIG_LEN (256u << 10)

struct run;

/* An answer given later (/v1/async): an idle handle counts loop turns, so
 * that runs do not depend on the clock. */
#define LATER_TURNS 3
struct later {
  uv_idle_t timer;
  int turns;           /* loop turns still to wait */
  struct run *run;     /* borrowed: outlives the loop */
  struct mg_resp *resp; /* borrowed: NULL once the client is gone */
};

struct run {
  uv_loop_t loop;
  struct mg_conn_env env;
  struct mg_config cfg;
  struct mg_config *cfgp;
  bool draining, read_busy;
  char read_buf[MG_READ_BUF_SIZE];
  uv_pipe_t client;
  bool client_open, client_eof;
  struct mg_buf out;            /* what the client read */
  size_t writes_pending;        /* client writes not called back */
  int later_open;               /* struct later alive (handle not closed) */
  uint64_t ids;
  /* HEAD or not, for every request routed, in order. */
  bool head[MAX_ROUTED];
  size_t routed;
};

static char big[BIG_LEN];

/* ---- the environment's callbacks ----------------------------------------- */

static int error_body(struct mg_buf *out, int status, const char *type,
                      const char *message, const char *param,
                      const char *code) {
  (void)type;
  (void)param;
  return mg_buf_printf(out, "{\"error\":{\"status\":%d,\"message\":\"%s\","
                            "\"code\":\"%s\"}}",
                       status, message ? message : "", code ? code : "");
}

static void new_id(void *owner, char out[33]) {
  struct run *r = owner;
  snprintf(out, 33, "%032llx", (unsigned long long)++r->ids);
}

static void later_closed(uv_handle_t *h) {
  struct later *l = h->data;
  l->run->later_open--;
  free(l);
}

static void later_end(struct later *l) {
  l->resp = NULL;
  uv_idle_stop(&l->timer);
  uv_close((uv_handle_t *)&l->timer, later_closed);
}

static void later_gone(void *arg) { later_end(arg); }

static void later_abort(void *arg) {
  struct later *l = arg;
  struct mg_resp *resp = l->resp;
  later_end(l);
  (void)mg_resp_error(resp, 503, "Shutting down.", "shutting_down", NULL,
                      NULL);
  mg_resp_done(resp);
}

static const struct mg_resp_hooks later_hooks = {later_gone, NULL,
                                                 later_abort};

static void later_fire(uv_idle_t *t) {
  struct later *l = t->data;
  struct mg_resp *resp = l->resp;
  struct mg_http_req *q;
  if (--l->turns > 0)
    return;
  q = mg_resp_req(resp);
  later_end(l);
  if (q->body.len % 2 == 0) {
    (void)mg_resp_send(resp, 200, "application/json", NULL, q->body.data,
                       q->body.len);
  } else {
    (void)mg_resp_stream_head(resp, 200, "text/event-stream", NULL);
    (void)mg_resp_stream_chunk(resp, "data: 1\n\n", 9);
    (void)mg_resp_stream_end(resp);
  }
  mg_resp_done(resp);
}

static void h_health(void *owner, struct mg_resp *resp,
                     const struct mg_route *rt) {
  (void)owner;
  (void)rt;
  (void)mg_resp_send(resp, 200, "application/json", NULL, "{\"status\":\"ok\"}",
                     15);
  mg_resp_done(resp);
}

static void h_echo(void *owner, struct mg_resp *resp,
                   const struct mg_route *rt) {
  struct mg_http_req *q = mg_resp_req(resp);
  (void)owner;
  (void)rt;
  (void)mg_resp_send(resp, 200, "application/octet-stream",
                     "x-echo: 1\r\n", q->body.data, q->body.len);
  mg_resp_done(resp);
}

static void h_stream(void *owner, struct mg_resp *resp,
                     const struct mg_route *rt) {
  struct mg_http_req *q = mg_resp_req(resp);
  size_t off = 0;
  (void)owner;
  (void)rt;
  (void)mg_resp_stream_head(resp, 200, "text/event-stream", NULL);
  while (off < q->body.len) {
    size_t k = q->body.len - off < 7 ? q->body.len - off : 7;
    (void)mg_resp_stream_chunk(resp, q->body.data + off, k);
    off += k;
  }
  (void)mg_resp_stream_end(resp);
  (void)mg_resp_congested(resp);
  mg_resp_done(resp);
}

static void h_big(void *owner, struct mg_resp *resp,
                  const struct mg_route *rt) {
  (void)owner;
  (void)rt;
  (void)mg_resp_send(resp, 200, "text/plain", NULL, big, sizeof(big));
  mg_resp_done(resp);
}

static void h_async(void *owner, struct mg_resp *resp,
                    const struct mg_route *rt) {
  struct run *r = owner;
  struct later *l = calloc(1, sizeof(*l));
  (void)rt;
  if (l == NULL)
    abort();
  l->run = r;
  l->resp = resp;
  uv_idle_init(&r->loop, &l->timer);
  l->timer.data = l;
  l->turns = LATER_TURNS;
  r->later_open++;
  mg_resp_attach(resp, &later_hooks, l);
  uv_idle_start(&l->timer, later_fire);
}

static bool is_tchar(unsigned char ch) {
  return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
         (ch >= 'A' && ch <= 'Z') ||
         (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* What reaches a handler is strict HTTP/1.1 (RFC 9112, issue 10.2): field
 * names are tokens, one Host (none only in HTTP/1.0), no Transfer-Encoding
 * in HTTP/1.0. */
static void assert_strict(const struct mg_http_req *req) {
  uint32_t i, j, hosts = 0;
  bool te = false;
  for (i = 0; i < req->nhdrs; i++) {
    struct mg_str n = {req->head.data + req->hdrs[i].name_off,
                       req->hdrs[i].name_len};
    if (n.len == 0)
      abort();
    for (j = 0; j < n.len; j++)
      if (!is_tchar((unsigned char)n.p[j]))
        abort();
    if (mg_str_eq_nocase(n, MG_STR_LIT("host")))
      hosts++;
    if (mg_str_eq_nocase(n, MG_STR_LIT("transfer-encoding")))
      te = true;
  }
  if (hosts > 1 || (hosts == 0 && !req->http10) || (te && req->http10))
    abort();
}

static void route(void *owner, struct mg_http_req *req, struct mg_route *out) {
  struct run *r = owner;
  struct mg_str path = mg_http_req_path(req);
  int m = req->method;

  assert_strict(req);
  if (r->routed == MAX_ROUTED)
    abort(); /* more requests than bytes can hold */
  r->head[r->routed++] = m == HTTP_HEAD;
  memset(out, 0, sizeof(*out));
  if (mg_str_eq(path, MG_STR_LIT("/healthz")) &&
      (m == HTTP_GET || m == HTTP_HEAD)) {
    out->handler = h_health;
  } else if (mg_str_eq(path, MG_STR_LIT("/v1/echo")) && m == HTTP_POST) {
    out->handler = h_echo;
    out->buffer_body = true;
  } else if (mg_str_eq(path, MG_STR_LIT("/v1/stream")) && m == HTTP_POST) {
    out->handler = h_stream;
    out->buffer_body = true;
  } else if (mg_str_eq(path, MG_STR_LIT("/v1/async")) &&
             (m == HTTP_POST || m == HTTP_GET)) {
    out->handler = h_async;
    out->buffer_body = true;
  } else if (mg_str_eq(path, MG_STR_LIT("/v1/big")) && m == HTTP_GET) {
    out->handler = h_big;
  } else if (path.len >= 4 && memcmp(path.p, "/v1/", 4) == 0) {
    out->status = 405;
    out->message = "Wrong method.";
    out->code = "method_not_allowed";
    out->allow = "POST";
  } else {
    out->status = 404;
    out->code = "unknown_url";
  }
}

/* ---- the client ------------------------------------------------------------ */

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char rbuf[65536];
  (void)h;
  (void)suggested;
  buf->base = rbuf;
  buf->len = sizeof(rbuf);
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  struct run *r = s->data;
  if (n < 0) {
    r->client_eof = true;
    uv_read_stop(s);
    return;
  }
  if (n > 0 && mg_buf_append(&r->out, buf->base, (size_t)n) != 0)
    abort(); /* more answer than OUT_MAX */
}

struct cwrite {
  uv_write_t req;
  struct run *run;
  char data[];
};

static void client_wrote(uv_write_t *req, int status) {
  struct cwrite *w = (struct cwrite *)req;
  (void)status; /* the server may have closed first */
  w->run->writes_pending--;
  free(w);
}

static void client_write(struct run *r, const uint8_t *p, size_t n) {
  struct cwrite *w = malloc(sizeof(*w) + n);
  uv_buf_t b;
  if (w == NULL)
    abort();
  memcpy(w->data, p, n);
  w->run = r;
  b = uv_buf_init(w->data, (unsigned)n);
  if (uv_write(&w->req, (uv_stream_t *)&r->client, &b, 1, client_wrote) !=
      0) {
    free(w);
    return;
  }
  r->writes_pending++;
}

static void client_shut(uv_shutdown_t *req, int status) {
  (void)status;
  free(req);
}

static void client_closed(uv_handle_t *h) {
  ((struct run *)h->data)->client_open = false;
}

/* Run the loop without blocking until nothing moves: no new answer bytes,
 * no client write or later answer outstanding, three times in a row (at
 * most `max` turns). */
static void settle(struct run *r, int max) {
  size_t last = (size_t)-1;
  int quiet = 0, i;
  for (i = 0; i < max && quiet < 3; i++) {
    uv_run(&r->loop, UV_RUN_NOWAIT);
    if (r->out.len == last && r->writes_pending == 0 && r->later_open == 0)
      quiet++;
    else
      quiet = 0;
    last = r->out.len;
  }
}

/* ---- the answers ----------------------------------------------------------- */

struct check {
  const struct run *run;
  bool extra_head; /* the answer for no routed request is a HEAD's */
  size_t next;  /* the routed request the next final answer is for */
  size_t extra; /* final answers for no routed request */
  bool done;    /* an answer after which nothing may come */
};

static int ck_headers(llhttp_t *p) {
  struct check *k = p->data;
  if (p->status_code >= 100 && p->status_code < 200) {
    if (p->status_code != 100)
      abort(); /* the only interim answer modelgate sends */
    return 0;
  }
  if (k->done)
    abort(); /* an answer after the one for no routed request */
  if (k->next < k->run->routed)
    return k->run->head[k->next++] ? 1 : 0;
  /* A request refused before its headers were complete: closes. Its
   * method may be HEAD (known from the request line on). */
  k->extra++;
  k->done = true;
  return k->extra_head ? 1 : 0;
}

/* Parse the answers; the last one for no routed request read as a HEAD's
 * or not. */
static llhttp_errno_t parse_answers(const struct run *r, bool extra_head,
                                    struct check *k, llhttp_t *p) {
  static llhttp_settings_t s;
  llhttp_errno_t err;

  llhttp_settings_init(&s);
  s.on_headers_complete = ck_headers;
  llhttp_init(p, HTTP_RESPONSE, &s);
  memset(k, 0, sizeof(*k));
  k->run = r;
  k->extra_head = extra_head;
  p->data = k;
  err = llhttp_execute(p, r->out.data ? r->out.data : "", r->out.len);
  if (err == HPE_OK)
    err = llhttp_finish(p);
  return err;
}

static void check_answers(const struct run *r, bool cut) {
  struct check k;
  llhttp_t p;
  llhttp_errno_t err = parse_answers(r, false, &k, &p);

  if (err != HPE_OK && k.extra == 1)
    err = parse_answers(r, true, &k, &p);
  /* The connection closed in the middle of an answer. */
  if (cut && err == HPE_INVALID_EOF_STATE)
    err = HPE_OK;
  if (err != HPE_OK) {
    fprintf(stderr, "fuzz_conn: answers do not parse: %s (%s), %zu bytes\n",
            llhttp_errno_name(err), p.reason ? p.reason : "", r->out.len);
    abort();
  }
  if (k.next > r->routed || k.extra > 1)
    abort();
}

/* ---- one input ------------------------------------------------------------- */

static void one(struct run *r, const uint8_t *in, size_t n, unsigned flags,
                size_t step) {
  struct mg_limits *l = &r->cfg.limits;
  struct mg_server_cfg *sc = &r->cfg.server;
  int sv[2];
  size_t off = 0;

  memset(r, 0, sizeof(*r));
  if (uv_loop_init(&r->loop) != 0)
    abort();
  l->header_bytes = (flags & 2) ? 256 : 4096;
  l->headers = (flags & 2) ? 8 : 32;
  l->url_bytes = (flags & 2) ? 64 : 1024;
  l->body_bytes = (flags & 2) ? 128 : 16384;
  l->response_bytes = 1u << 20;
  l->write_high_bytes = (flags & 4) ? 64 : (1u << 20);
  l->write_low_bytes = (flags & 4) ? 16 : (256u << 10);
  l->json_tokens = 1024;
  /* Long timeouts: a run never waits for one, and the end is forced. */
  sc->header_timeout_ms = sc->body_timeout_ms = 60000;
  sc->keepalive_timeout_ms = sc->send_timeout_ms = 60000;
  sc->max_connections = 4;
  r->cfgp = &r->cfg;
  r->env.loop = &r->loop;
  r->env.cfg = &r->cfgp;
  r->env.date = "Thu, 01 Jan 2026 00:00:00 GMT";
  r->env.draining = &r->draining;
  r->env.read_buf = r->read_buf;
  r->env.read_busy = &r->read_busy;
  r->env.error_body = error_body;
  r->env.max_connections = 4;
  r->env.owner = r;
  r->env.route = route;
  r->env.new_id = new_id;
  mg_buf_init(&r->out, OUT_MAX);

  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    abort();
  if (mg_conn__adopt(&r->env, sv[0]) != 0)
    abort();
  if (uv_pipe_init(&r->loop, &r->client, 0) != 0 ||
      uv_pipe_open(&r->client, sv[1]) != 0)
    abort();
  r->client.data = r;
  r->client_open = true;
  uv_read_start((uv_stream_t *)&r->client, client_alloc, client_read);

  if (flags & 1) {
    if (step == 0)
      step = 1;
    while (off < n && !r->client_eof) {
      size_t k = n - off < step ? n - off : step;
      client_write(r, in + off, k);
      off += k;
      settle(r, 50);
    }
  } else if (n > 0) {
    client_write(r, in, n);
  }
  if (flags & 32) {
    uv_run(&r->loop, UV_RUN_NOWAIT);
    mg_conn_abort_all(&r->env);
  }
  if (!(flags & 16))
    settle(r, 2000);
  if (flags & 8) {
    r->draining = true;
    mg_conn_drain_all(&r->env);
    settle(r, 200);
  }
  /* The client is done sending: its FIN ends the connection (or its
   * lingering close). */
  if (!r->client_eof) {
    uv_shutdown_t *sh = malloc(sizeof(*sh));
    if (sh == NULL)
      abort();
    if (uv_shutdown(sh, (uv_stream_t *)&r->client, client_shut) != 0)
      free(sh);
  }
  settle(r, 200);
  /* What still runs (an answer waiting on a client that reads nothing)
   * ends as at the end of the shutdown grace. */
  mg_conn_abort_all(&r->env);
  settle(r, 200);
  uv_close((uv_handle_t *)&r->client, client_closed);
  uv_run(&r->loop, UV_RUN_DEFAULT);
  if (r->env.nconns != 0 || r->client_open || r->later_open != 0)
    abort();
  if (uv_loop_close(&r->loop) != 0)
    abort();
  /* FUZZ_CONN_DUMP=1: what the client read, to look at a seed. */
  if (getenv("FUZZ_CONN_DUMP") && r->out.len)
    fwrite(r->out.data, 1, r->out.len, stderr);
  check_answers(r, (flags & 48) != 0);
  mg_buf_free(&r->out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static struct run *r;
  if (r == NULL) {
    r = malloc(sizeof(*r));
    if (r == NULL)
      abort();
    memset(big, 'b', sizeof(big));
    mg_log_set_level(MG_LOG_ERROR);
  }
  if (size < 2)
    return 0;
  one(r, data + 2, size - 2, data[0], data[1]);
  return 0;
}
