/* native.c - the native engine (upstream/native.h): destinations, origins
 * and their keep-alive pools, DNS, connections, writing requests, calls and
 * their timers. The answer side is native_resp.c.
 *
 * A call's way: start() builds the request head into the call's own buffer
 * (kept across calls: no allocation once warm) and dispatches it. Dispatch
 * takes the origin's most recently idle connection, or queues the call when
 * max_host_connections connections are open, or waits for DNS, or opens a
 * connection to the address that last worked (the next ones on failure).
 * The request goes out with one uv_try_write of head and body (writev);
 * whatever the socket does not take at once goes to one uv_write. Answers
 * are read into one buffer per engine; only the bytes of a paused stream
 * are copied aside. on_done runs from a uv_idle tick when the call ended
 * inside start() or resume(), directly otherwise, and always after the
 * connection went back to the pool, so that a call started from on_done
 * can reuse it. */
#include "upstream/native.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netdb.h>

#include "common/log.h"
#include "common/str.h"
#include "upstream/native_int.h"

/* A request head is built from trusted pieces; this bounds a broken one. */
#define REQ_HEAD_MAX (64u << 10)
/* Pooled call structs keep body buffers up to this size. */
#define KEEP_BUF (64u << 10)

struct nat_lookup {
  uv_getaddrinfo_t req;
  struct nat_origin *o;   /* counted reference */
  struct nat_engine *e;   /* borrowed: counted in e->pending */
};

struct nat_write {
  uv_write_t req;
  struct nat_conn *k;     /* borrowed: its close callback comes after ours */
  char *head;             /* owned */
  char *body;             /* owned */
};

static void dispatch(struct nat_call *c);
static void conn_init(struct nat_engine *e, struct nat_origin *o,
                      struct nat_conn *k);
static void on_conn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);
static void on_conn_alloc(uv_handle_t *h, size_t size, uv_buf_t *b);
static void pool_put(struct nat_conn *k);

/* ---- queues of calls ----------------------------------------------------- */

static void q_push(struct nat_queue *q, struct nat_call *c) {
  c->q = q;
  c->qnext = NULL;
  c->qprev = q->tail;
  if (q->tail)
    q->tail->qnext = c;
  else
    q->head = c;
  q->tail = c;
  q->n++;
}

static void q_remove(struct nat_call *c) {
  struct nat_queue *q = c->q;
  if (q == NULL)
    return;
  if (c->qprev)
    c->qprev->qnext = c->qnext;
  else
    q->head = c->qnext;
  if (c->qnext)
    c->qnext->qprev = c->qprev;
  else
    q->tail = c->qprev;
  q->n--;
  c->q = NULL;
  c->qprev = c->qnext = NULL;
}

static struct nat_call *q_pop(struct nat_queue *q) {
  struct nat_call *c = q->head;
  if (c)
    q_remove(c);
  return c;
}

/* Move every call of from into to (to is empty; each call's q follows). */
static void q_move(struct nat_queue *to, struct nat_queue *from) {
  struct nat_call *c;
  while ((c = q_pop(from)) != NULL)
    q_push(to, c);
}

/* ---- the engine's lifetime ----------------------------------------------- */

static void maybe_done(struct nat_engine *e) {
  void (*cb)(void *);
  void *arg;
  if (!e->closing || e->pending != 0)
    return;
  cb = e->close_cb;
  arg = e->close_arg;
  free(e->rbuf);
  free(e);
  if (cb)
    cb(arg);
}

static void on_tick(uv_idle_t *h);

static void tick_start(struct nat_engine *e) {
  if (!e->closing && !uv_is_active((uv_handle_t *)&e->tick))
    uv_idle_start(&e->tick, on_tick);
}

/* ---- origins ------------------------------------------------------------- */

static void origin_unref(struct nat_origin *o) {
  if (--o->refs != 0)
    return;
  if (o->e) {
    if (o->prev)
      o->prev->next = o->next;
    else
      o->e->origins = o->next;
    if (o->next)
      o->next->prev = o->prev;
  }
  free(o->addrs);
  free(o->host);
  free(o->name);
  free(o);
}

/* Let the origin's slot queue move from the tick (a connection went idle
 * or closed). */
static void schedule_pump(struct nat_origin *o) {
  struct nat_engine *e = o->e;
  if (e == NULL || e->closing || o->pump_pending || o->slotq.n == 0)
    return;
  o->pump_pending = true;
  o->refs++;
  o->pump_next = e->pumpq;
  e->pumpq = o;
  tick_start(e);
}

static bool has_slot(const struct nat_engine *e, const struct nat_origin *o) {
  return o->idle || e->max_host == 0 || o->nconns < e->max_host;
}

static void pump(struct nat_origin *o) {
  struct nat_engine *e = o->e;
  while (e && !e->closing && o->slotq.n && has_slot(e, o))
    dispatch(q_pop(&o->slotq));
}

/* ---- connections ----------------------------------------------------------- */

static void idle_unlink(struct nat_conn *k) {
  struct nat_engine *e = k->e;
  struct nat_origin *o = k->o;
  if (k->oprev)
    k->oprev->onext = k->onext;
  else
    o->idle = k->onext;
  if (k->onext)
    k->onext->oprev = k->oprev;
  if (k->iprev)
    k->iprev->inext = k->inext;
  else
    e->idle_head = k->inext;
  if (k->inext)
    k->inext->iprev = k->iprev;
  else
    e->idle_tail = k->iprev;
  k->oprev = k->onext = k->iprev = k->inext = NULL;
  e->nidle--;
  o->nidle--;
}

static void on_conn_closed(uv_handle_t *h) {
  struct nat_conn *k = (struct nat_conn *)h;
  struct nat_engine *e = k->e;
  if (k->kprev)
    k->kprev->knext = k->knext;
  else
    e->conns = k->knext;
  if (k->knext)
    k->knext->kprev = k->kprev;
  free(k->pbuf);
  origin_unref(k->o);
  free(k);
  e->pending--;
  maybe_done(e);
}

void mg_native__conn_close(struct nat_conn *k) {
  if (k->state == NK_CLOSING)
    return;
  if (k->state == NK_IDLE)
    idle_unlink(k);
  if (k->call) {
    k->call->conn = NULL;
    k->call = NULL;
  }
  k->state = NK_CLOSING;
  k->reading = false;
  k->o->nconns--;
  k->e->st.conns--;
  schedule_pump(k->o);
  /* Pending writes get UV_ECANCELED and the connect request too, before
   * on_conn_closed (libuv's order). */
  uv_close((uv_handle_t *)&k->tcp, on_conn_closed);
}

static void conn_init(struct nat_engine *e, struct nat_origin *o,
                      struct nat_conn *k) {
  k->e = e;
  k->o = o;
  o->refs++;
  o->nconns++;
  e->st.conns++;
  e->pending++;
  k->knext = e->conns;
  if (e->conns)
    e->conns->kprev = k;
  e->conns = k;
  k->tcp.data = k;
  k->creq.data = k;
  llhttp_init(&k->parser, HTTP_RESPONSE, &mg_native__settings);
  k->parser.data = k;
}

void mg_native__read_stop(struct nat_conn *k) {
  if (k->reading) {
    uv_read_stop((uv_stream_t *)&k->tcp);
    k->reading = false;
  }
}

void mg_native__read_start(struct nat_conn *k) {
  if (!k->reading && k->state != NK_CLOSING &&
      uv_read_start((uv_stream_t *)&k->tcp, on_conn_alloc, on_conn_read) == 0)
    k->reading = true;
}

static void on_conn_alloc(uv_handle_t *h, size_t size, uv_buf_t *b) {
  struct nat_conn *k = h->data;
  (void)size;
  /* One buffer for every socket of the engine: bytes are parsed before the
   * next read, and a paused stream's bytes are copied aside (hold()). */
  b->base = k->e->rbuf;
  b->len = NAT_RBUF;
}

static void on_conn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b) {
  struct nat_conn *k = s->data;
  if (nread > 0) {
    mg_native__process(k, b->base, (size_t)nread);
  } else if (nread < 0) {
    /* libuv stopped reading on EOF; an error ends the connection too. */
    mg_native__read_stop(k);
    mg_native__eof(k, (int)nread);
  }
}

/* The pooled connection is still usable: neither closed by the upstream
 * nor carrying bytes nobody asked for. */
static bool conn_alive(struct nat_conn *k) {
  uv_os_fd_t fd;
  char b;
  ssize_t r;
  if (uv_fileno((uv_handle_t *)&k->tcp, &fd) != 0)
    return false;
  r = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
}

/* The origin's most recently idle connection that is still open.
 *
 * A connection the upstream closed while it sat in the pool is normally
 * gone already: its EOF reached on_conn_read, which closed it. The EOF may
 * still be unread when the connection is taken, though (it arrived in this
 * loop turn), so one that has been idle since an earlier millisecond is
 * asked with a MSG_PEEK recv (one system call). A connection idle for less
 * than that is taken as it is, which saves the call on busy pools; if its
 * upstream closed it in that instant, the request that goes out on it ends
 * with MG_UP_RESET and is never written again (see send_request). */
static struct nat_conn *pool_take(struct nat_origin *o) {
  struct nat_conn *k;
  while ((k = o->idle) != NULL) {
    struct nat_engine *e = k->e;
    idle_unlink(k);
    k->state = NK_ACTIVE;
    if (k->idle_since != uv_now(e->loop) && !conn_alive(k)) {
      e->st.replaced++;
      mg_native__conn_close(k);
      continue;
    }
    return k;
  }
  return NULL;
}

static void on_sweep(uv_timer_t *t) {
  struct nat_engine *e = t->data;
  uint64_t now = uv_now(e->loop);
  struct nat_conn *k;
  while ((k = e->idle_head) != NULL && k->idle_since + e->idle_ms <= now)
    mg_native__conn_close(k);
  if (k)
    uv_timer_start(&e->sweep, on_sweep, k->idle_since + e->idle_ms - now, 0);
}

static void pool_put(struct nat_conn *k) {
  struct nat_engine *e = k->e;
  struct nat_origin *o = k->o;
  /* A stream that ended while resuming had its reading stopped; an idle
   * connection is read to notice the upstream closing it. */
  if (!e->closing)
    mg_native__read_start(k);
  if (e->closing || e->max_idle == 0 || !k->reading ||
      k->state == NK_CLOSING) {
    mg_native__conn_close(k);
    return;
  }
  while (e->nidle >= e->max_idle)
    mg_native__conn_close(e->idle_head); /* the oldest makes room */
  k->state = NK_IDLE;
  k->idle_since = uv_now(e->loop);
  k->onext = o->idle;
  if (o->idle)
    o->idle->oprev = k;
  o->idle = k;
  k->iprev = e->idle_tail;
  if (e->idle_tail)
    e->idle_tail->inext = k;
  else
    e->idle_head = k;
  e->idle_tail = k;
  e->nidle++;
  o->nidle++;
  /* One timer for the whole pool, armed for the oldest connection: going
   * idle costs no timer call while it runs. */
  if (!uv_is_active((uv_handle_t *)&e->sweep))
    uv_timer_start(&e->sweep, on_sweep, e->idle_ms, 0);
  schedule_pump(o);
}

/* ---- calls ------------------------------------------------------------------ */

static void on_call_closed(uv_handle_t *h) {
  struct nat_call *c = h->data;
  struct nat_engine *e = c->e;
  free(c);
  e->pending--;
  maybe_done(e);
}

static void call_destroy(struct nat_call *c) {
  struct nat_engine *e = c->e;
  mg_buf_free(&c->pub.body);
  mg_buf_free(&c->hbytes);
  free(c->hv);
  free(c->head);
  free(c->body);
  c->hv = NULL;
  c->head = c->body = NULL;
  e->ncalls--;
  uv_close((uv_handle_t *)&c->timer, on_call_closed);
}

static struct nat_call *call_get(struct nat_engine *e) {
  struct nat_call *c = e->free;
  if (c) {
    e->free = c->next_free;
    e->nfree--;
  } else {
    c = calloc(1, sizeof(*c));
    if (c == NULL)
      return NULL;
    c->e = e;
    uv_timer_init(e->loop, &c->timer);
    c->timer.data = c;
    mg_buf_init(&c->hbytes, MG_NATIVE_MAX_HEAD);
    e->ncalls++;
    e->pending++;
  }
  c->aprev = NULL;
  c->anext = e->calls;
  if (e->calls)
    e->calls->aprev = c;
  e->calls = c;
  return c;
}

static void call_unlist(struct nat_call *c) {
  struct nat_engine *e = c->e;
  if (c->aprev)
    c->aprev->anext = c->anext;
  else
    e->calls = c->anext;
  if (c->anext)
    c->anext->aprev = c->aprev;
  c->aprev = c->anext = NULL;
}

/* Give a call struct back: pooled with its buffers, or freed. */
static void call_put(struct nat_call *c) {
  struct nat_engine *e = c->e;
  call_unlist(c);
  c->state = NC_FREE;
  free(c->body);
  c->body = NULL;
  if (e->closing || e->nfree >= e->pool_max) {
    call_destroy(c);
    return;
  }
  /* Keep modest buffers for the next call; drop big ones. */
  if (c->pub.body.cap > KEEP_BUF)
    mg_buf_free(&c->pub.body);
  else
    mg_buf_reset(&c->pub.body);
  if (c->hbytes.cap > KEEP_BUF)
    mg_buf_free(&c->hbytes);
  c->next_free = e->free;
  e->free = c;
  e->nfree++;
}

/* Stop everything a call in progress has going; its connection, if any,
 * was dealt with. */
static void call_stop(struct nat_call *c) {
  q_remove(c);
  uv_timer_stop(&c->timer);
  if (c->state != NC_DONE && c->state != NC_FREE)
    atomic_fetch_sub_explicit(&c->e->nactive, 1, memory_order_relaxed);
  free(c->body);
  c->body = NULL;
  c->pub.t_end = uv_hrtime();
}

void mg_native__end(struct nat_call *c, enum mg_up_result res, bool keep) {
  struct nat_engine *e = c->e;
  struct nat_conn *k = c->conn;
  if (k) {
    c->conn = NULL;
    k->call = NULL;
    if (keep)
      pool_put(k);
    else
      mg_native__conn_close(k);
  }
  call_stop(c);
  c->state = NC_DONE;
  c->result = res;
  /* The owner may not be told from inside start() or resume() (call.h). */
  if (e->depth) {
    q_push(&e->doneq, c);
    tick_start(e);
    return;
  }
  c->pub.cbs->on_done(&c->pub, res);
}

/* End the call with its connection closed and error text. */
static void end_msg(struct nat_call *c, enum mg_up_result res,
                    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void end_msg(struct nat_call *c, enum mg_up_result res,
                    const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->pub.error, sizeof(c->pub.error), fmt, ap);
  va_end(ap);
  mg_native__end(c, res, false);
}

static void on_call_timer(uv_timer_t *t);

void mg_native__arm(struct nat_call *c) {
  uint64_t now = uv_now(c->e->loop), d = c->deadline_total;
  if (!c->pub.connected) {
    if (c->deadline_connect < d)
      d = c->deadline_connect;
    if (c->deadline_first < d)
      d = c->deadline_first;
  } else if (!c->got_data) {
    if (c->deadline_first < d)
      d = c->deadline_first;
  } else if (!c->paused) {
    uint64_t idle = c->last_data + c->idle_ms;
    if (idle < d)
      d = idle;
  }
  uv_timer_start(&c->timer, on_call_timer, d > now ? d - now : 0, 0);
}

static void on_call_timer(uv_timer_t *t) {
  struct nat_call *c = t->data;
  uint64_t now = uv_now(c->e->loop);
  char ms[24];

  if (c->state == NC_DONE || c->state == NC_FREE)
    return;
  if (!c->pub.connected) {
    /* Any deadline that passes before a connection is a connect timeout
     * (DNS and waiting for a slot included), as with the curl engine. */
    if (now >= c->deadline_connect || now >= c->deadline_first ||
        now >= c->deadline_total) {
      snprintf(ms, sizeof(ms), "%u", c->connect_ms);
      end_msg(c, MG_UP_TIMEOUT_CONNECT, "no connection to %s within %s ms",
              c->dest->o->name, ms);
      return;
    }
  } else if (now >= c->deadline_total) {
    mg_native__end(c, MG_UP_TIMEOUT_TOTAL, false);
    return;
  } else if (!c->got_data) {
    if (now >= c->deadline_first) {
      mg_native__end(c, MG_UP_TIMEOUT_FIRST_BYTE, false);
      return;
    }
  } else if (!c->paused && now >= c->last_data + c->idle_ms) {
    /* Idle time only counts while the call is not paused: a slow client
     * is not the upstream's fault (the total deadline still applies). */
    mg_native__end(c, MG_UP_TIMEOUT_IDLE, false);
    return;
  }
  mg_native__arm(c);
}

/* From the tick: on_done of calls that ended inside start() or resume(),
 * and slot queues that may move. */
static void on_tick(uv_idle_t *h) {
  struct nat_engine *e = h->data;
  struct nat_call *c;
  struct nat_origin *o;
  while ((c = q_pop(&e->doneq)) != NULL)
    c->pub.cbs->on_done(&c->pub, c->result);
  while ((o = e->pumpq) != NULL) {
    e->pumpq = o->pump_next;
    o->pump_pending = false;
    pump(o);
    origin_unref(o);
  }
  if (e->doneq.n == 0 && e->pumpq == NULL)
    uv_idle_stop(h);
}

/* ---- requests ---------------------------------------------------------------- */

static bool local_errno(int r) {
  return r == UV_EMFILE || r == UV_ENFILE || r == UV_ENOMEM || r == UV_ENOBUFS;
}

static void on_write(uv_write_t *req, int status) {
  struct nat_write *w = (struct nat_write *)req;
  struct nat_conn *k = w->k;
  struct nat_call *c = k->call;
  k->writing--;
  free(w->head);
  free(w->body);
  free(w);
  /* A failed write does not end the call here: an upstream that answered
   * early (a 413) and closed makes the rest of the request fail while its
   * whole answer still waits in the socket. The read side sees the close
   * after it and judges: the answer, or MG_UP_RESET without one (the
   * call's timers bound it should nothing come). Only a connection that is
   * not being read ends the call now. */
  if (status < 0 && status != UV_ECANCELED && c && c->state == NC_SENT &&
      !k->reading)
    end_msg(c, c->got_byte ? MG_UP_TRUNCATED : MG_UP_RESET,
            "writing the request failed: %s", uv_strerror(status));
}

#define SEND_DEAD 1  /* nothing of the request was written: k is unusable */
#define SEND_ENDED 2 /* the call ended (reported) */

/* Write the request on k: one uv_try_write of head and body, the rest (if
 * the socket took less) with one uv_write that owns the buffers. */
static int send_request(struct nat_call *c, struct nat_conn *k) {
  uv_buf_t b[2];
  unsigned nb = 1, i = 0;
  size_t total = c->head_len + c->body_len, done;
  struct nat_write *w;
  int r;

  b[0] = uv_buf_init(c->head, (unsigned)c->head_len);
  if (c->body_len)
    b[nb++] = uv_buf_init(c->body, (unsigned)c->body_len);
  k->call = c;
  c->conn = k;
  k->state = NK_ACTIVE;
  llhttp_reset(&k->parser);
  mg_native__resp_reset(c);
  r = uv_try_write((uv_stream_t *)&k->tcp, b, nb);
  if (r >= 0 && (size_t)r == total) {
    c->pub.sent = true;
    c->state = NC_SENT;
    free(c->body);
    c->body = NULL;
    return 0;
  }
  if (r < 0 && r != UV_EAGAIN) {
    k->call = NULL;
    c->conn = NULL;
    snprintf(c->pub.error, sizeof(c->pub.error),
             "the connection closed before the request was written: %s",
             uv_strerror(r));
    return SEND_DEAD;
  }
  done = r > 0 ? (size_t)r : 0;
  c->state = NC_SENT;
  c->pub.sent = done > 0;
  w = malloc(sizeof(*w));
  if (w == NULL) {
    end_msg(c, MG_UP_LOCAL, "out of memory writing the request");
    return SEND_ENDED;
  }
  while (done >= b[i].len) {
    done -= b[i].len;
    i++;
  }
  b[i].base += done;
  b[i].len -= (unsigned)done;
  w->k = k;
  r = uv_write(&w->req, (uv_stream_t *)&k->tcp, b + i, nb - i, on_write);
  if (r != 0) {
    free(w);
    if (!c->pub.sent) {
      c->state = NC_CONNECTING;
      k->call = NULL;
      c->conn = NULL;
      snprintf(c->pub.error, sizeof(c->pub.error),
               "the connection closed before the request was written: %s",
               uv_strerror(r));
      return SEND_DEAD;
    }
    end_msg(c, MG_UP_RESET, "writing the request failed: %s",
            uv_strerror(r));
    return SEND_ENDED;
  }
  /* The write owns the buffers now (uv_write keeps pointers to them); the
   * call builds its next head in a new one. */
  w->head = c->head;
  w->body = c->body;
  c->head = NULL;
  c->head_cap = 0;
  c->body = NULL;
  k->writing++;
  c->e->st.queued_writes++;
  /* From here on bytes may reach the upstream at any moment. */
  c->pub.sent = true;
  return 0;
}

/* ---- connecting ------------------------------------------------------------- */

static void connect_next(struct nat_call *c);

static void on_connect(uv_connect_t *req, int status) {
  struct nat_conn *k = req->data;
  struct nat_call *c = k->call;
  int r;

  if (status == UV_ECANCELED || k->state == NK_CLOSING || c == NULL)
    return;
  if (status < 0) {
    snprintf(c->pub.error, sizeof(c->pub.error), "connect to %s: %s",
             k->o->name, uv_strerror(status));
    mg_native__conn_close(k);
    connect_next(c);
    return;
  }
  k->o->good = k->addr_i;
  k->state = NK_ACTIVE;
  c->pub.connected = true;
  mg_native__read_start(k);
  if (!k->reading) {
    end_msg(c, MG_UP_CONNECT_ERROR, "cannot read from %s", k->o->name);
    return;
  }
  r = send_request(c, k);
  if (r == SEND_DEAD) {
    /* A fresh connection that died before any byte of the request was
     * written: nothing reached the upstream (call->sent stays false). */
    mg_native__conn_close(k);
    mg_native__end(c, MG_UP_CONNECT_ERROR, false);
  }
}

/* Open a connection to address idx of the call's origin. 0, or a negative
 * libuv error (nothing is left open then). */
static int conn_connect(struct nat_call *c, size_t idx) {
  struct nat_engine *e = c->e;
  struct nat_origin *o = c->dest->o;
  const struct sockaddr *sa = (const struct sockaddr *)&o->addrs[idx];
  struct nat_conn *k = calloc(1, sizeof(*k));
  int r;

  if (k == NULL)
    return UV_ENOMEM;
  /* The socket is made here, so that a local shortage (EMFILE) is told
   * apart from the upstream refusing. */
  r = uv_tcp_init_ex(e->loop, &k->tcp, sa->sa_family);
  if (r != 0) {
    free(k); /* not initialised: libuv has forgotten it */
    return r;
  }
  conn_init(e, o, k);
  k->state = NK_CONNECTING;
  k->addr_i = idx;
  uv_tcp_nodelay(&k->tcp, 1);
  r = uv_tcp_connect(&k->creq, &k->tcp, sa, on_connect);
  if (r != 0) {
    mg_native__conn_close(k);
    return r;
  }
  e->st.connects++;
  k->call = c;
  c->conn = k;
  c->state = NC_CONNECTING;
  return 0;
}

/* Try the origin's addresses from the one that last worked, each once per
 * call, until a connect starts. */
static void connect_next(struct nat_call *c) {
  struct nat_origin *o = c->dest->o;
  while (c->tries < o->naddrs) {
    size_t idx = (c->addr0 + c->tries) % o->naddrs;
    int r;
    c->tries++;
    r = conn_connect(c, idx);
    if (r == 0)
      return;
    if (local_errno(r)) {
      end_msg(c, MG_UP_LOCAL, "cannot open a socket to %s: %s", o->name,
              uv_strerror(r));
      return;
    }
    snprintf(c->pub.error, sizeof(c->pub.error), "connect to %s: %s",
             o->name, uv_strerror(r));
  }
  if (c->pub.error[0] == '\0')
    snprintf(c->pub.error, sizeof(c->pub.error), "%s has no address",
             o->name);
  mg_native__end(c, MG_UP_CONNECT_ERROR, false);
}

/* ---- DNS ---------------------------------------------------------------------- */

static void fail_queue(struct nat_queue *from, enum mg_up_result res,
                       const char *msg) {
  struct nat_queue local = {NULL, NULL, 0};
  struct nat_call *c;
  q_move(&local, from);
  while ((c = q_pop(&local)) != NULL)
    end_msg(c, res, "%s", msg);
}

static int set_addrs(struct nat_origin *o, const struct addrinfo *ai) {
  const struct addrinfo *a;
  size_t n = 0;
  struct sockaddr_storage *v;
  for (a = ai; a; a = a->ai_next)
    if (a->ai_family == AF_INET || a->ai_family == AF_INET6)
      n++;
  if (n == 0)
    return UV_EAI_NODATA;
  v = calloc(n, sizeof(*v));
  if (v == NULL)
    return UV_ENOMEM;
  n = 0;
  for (a = ai; a; a = a->ai_next)
    if (a->ai_family == AF_INET || a->ai_family == AF_INET6)
      memcpy(&v[n++], a->ai_addr, a->ai_addrlen);
  free(o->addrs);
  o->addrs = v;
  o->naddrs = n;
  o->good = 0;
  return 0;
}

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  struct nat_lookup *l = (struct nat_lookup *)req;
  struct nat_origin *o = l->o;
  struct nat_engine *e = l->e;

  o->resolving = false;
  o->lookup = NULL;
  if (!e->closing && status != UV_ECANCELED) {
    if (status == 0)
      status = set_addrs(o, res);
    if (status == 0) {
      struct nat_queue local = {NULL, NULL, 0};
      struct nat_call *c;
      o->dns_expiry = uv_now(e->loop) + MG_NATIVE_DNS_TTL_MS;
      q_move(&local, &o->dnsq);
      while ((c = q_pop(&local)) != NULL)
        dispatch(c);
    } else {
      char msg[200];
      snprintf(msg, sizeof(msg), "cannot resolve %s: %s", o->host,
               uv_strerror(status));
      fail_queue(&o->dnsq,
                 status == UV_ENOMEM || status == UV_EAI_MEMORY
                     ? MG_UP_LOCAL
                     : MG_UP_CONNECT_ERROR,
                 msg);
    }
  }
  uv_freeaddrinfo(res);
  free(l);
  origin_unref(o);
  e->pending--;
  maybe_done(e);
}

/* Resolve o's host off the loop (libuv's thread pool). */
static void resolve(struct nat_engine *e, struct nat_origin *o) {
  struct nat_lookup *l = malloc(sizeof(*l));
  struct addrinfo hints;
  int r;
  char msg[200];

  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  hints.ai_flags = AI_NUMERICSERV;
  if (l == NULL) {
    fail_queue(&o->dnsq, MG_UP_LOCAL, "out of memory resolving a host");
    return;
  }
  l->o = o;
  l->e = e;
  r = uv_getaddrinfo(e->loop, &l->req, on_resolved, o->host, o->port, &hints);
  if (r != 0) {
    free(l);
    snprintf(msg, sizeof(msg), "cannot resolve %s: %s", o->host,
             uv_strerror(r));
    fail_queue(&o->dnsq, local_errno(r) ? MG_UP_LOCAL : MG_UP_CONNECT_ERROR,
               msg);
    return;
  }
  o->refs++;
  o->resolving = true;
  o->lookup = l;
  e->pending++;
  e->st.dns_lookups++;
}

/* ---- dispatch ------------------------------------------------------------------ */

static void dispatch(struct nat_call *c) {
  struct nat_engine *e = c->e;
  struct nat_origin *o = c->dest->o;
  struct nat_conn *k;

  while ((k = pool_take(o)) != NULL) {
    int r;
    c->pub.connected = true;
    c->pub.reused = true;
    r = send_request(c, k);
    if (r == 0) {
      e->st.reuses++;
      return;
    }
    if (r == SEND_ENDED)
      return;
    /* Found closed (EPIPE, ECONNRESET) before any byte of this request
     * was written: replacing it with another connection is not a second
     * send. call->reused then describes the connection that carries the
     * request. */
    e->st.replaced++;
    mg_native__conn_close(k);
    c->pub.error[0] = '\0';
  }
  c->pub.connected = false;
  c->pub.reused = false;
  /* Over max_host_connections the call waits for a connection of this
   * origin to go idle or close (its timers run meanwhile), as curl does
   * with CURLMOPT_MAX_HOST_CONNECTIONS. */
  if (!has_slot(e, o)) {
    c->state = NC_WAIT_SLOT;
    q_push(&o->slotq, c);
    return;
  }
  if (!o->literal && (o->naddrs == 0 || uv_now(e->loop) >= o->dns_expiry)) {
    c->state = NC_WAIT_DNS;
    q_push(&o->dnsq, c);
    if (!o->resolving)
      resolve(e, o);
    return;
  }
  c->addr0 = o->good < o->naddrs ? o->good : 0;
  c->tries = 0;
  connect_next(c);
}

/* Build the whole request head into c->head: request line, the
 * destination's prebuilt lines, the request's own, Content-Length. One
 * pass of memcpy, the length's digits by hand. */
static int build_head(struct nat_call *c, const struct nat_dest *d,
                      const struct mg_up_request *req) {
  const char *m = req->method ? req->method : "POST";
  size_t ml = strlen(m), xl = 0, el = req->extra_headers ? req->extra_len : 0;
  size_t need, dl = 0, i;
  char digits[24], *dp = NULL, *p;
  bool cl = true;

  if (req->path_extra) {
    xl = strlen(req->path_extra);
    /* The one piece that may come from a client (a stored response's
     * id): nothing in it may end the request line. */
    for (i = 0; i < xl; i++) {
      unsigned char ch = (unsigned char)req->path_extra[i];
      if (ch <= 0x20 || ch >= 0x7f)
        return -EINVAL;
    }
  }
  /* RFC 9110 8.6: no Content-Length on a request without content whose
   * method does not anticipate any. */
  if (req->body_len == 0 &&
      (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 ||
       strcmp(m, "DELETE") == 0 || strcmp(m, "OPTIONS") == 0))
    cl = false;
  if (cl) {
    dp = mg_u64_digits(digits, req->body_len);
    dl = (size_t)(digits + sizeof(digits) - dp);
  }
  need = ml + 1 + d->path_len + xl + 11 + d->head_len + el +
         (cl ? 16 + dl + 2 : 0) + 2;
  if (need > REQ_HEAD_MAX)
    return -E2BIG;
  if (need > c->head_cap) {
    size_t cap = need < 1024 ? 1024 : need;
    char *h = realloc(c->head, cap);
    if (h == NULL)
      return -ENOMEM;
    c->head = h;
    c->head_cap = cap;
  }
  p = c->head;
  memcpy(p, m, ml);
  p += ml;
  *p++ = ' ';
  memcpy(p, d->path, d->path_len);
  p += d->path_len;
  if (xl) {
    memcpy(p, req->path_extra, xl);
    p += xl;
  }
  memcpy(p, " HTTP/1.1\r\n", 11);
  p += 11;
  memcpy(p, d->head, d->head_len);
  p += d->head_len;
  if (el) {
    memcpy(p, req->extra_headers, el);
    p += el;
  }
  if (cl) {
    memcpy(p, "Content-Length: ", 16);
    p += 16;
    memcpy(p, dp, dl);
    p += dl;
    *p++ = '\r';
    *p++ = '\n';
  }
  *p++ = '\r';
  *p++ = '\n';
  c->head_len = (size_t)(p - c->head);
  return 0;
}

/* ---- the operations --------------------------------------------------------------- */

static struct mg_up_call *nat_start(struct mg_up_engine *pe,
                                    const struct mg_up_request *req,
                                    const struct mg_up_call_cbs *cbs,
                                    void *owner) {
  struct nat_engine *e = (struct nat_engine *)pe;
  const struct nat_dest *d = req->dest;
  struct nat_call *c;
  uint64_t now;
  int rc;

  if (e->closing || d == NULL || d->o->e != e ||
      (c = call_get(e)) == NULL) {
    free(req->body);
    return NULL;
  }
  c->pub.ops = &mg_native_ops;
  c->pub.engine = pe;
  c->pub.owner = owner;
  c->pub.cbs = cbs;
  c->pub.status = 0;
  c->pub.streaming = c->pub.connected = c->pub.sent = c->pub.reused = false;
  c->pub.content_type[0] = '\0';
  c->pub.error[0] = '\0';
  c->pub.t_start = uv_hrtime();
  c->pub.t_first_byte = c->pub.t_end = 0;
  mg_buf_reset(&c->pub.body);
  c->pub.body.max = req->max_response;
  c->dest = d;
  c->body = req->body;
  c->body_len = req->body_len;
  c->want_stream = req->stream;
  c->head_method = req->method && strcmp(req->method, "HEAD") == 0;
  c->conn = NULL;
  c->q = NULL;
  c->tries = 0;
  mg_native__resp_reset(c);
  now = uv_now(e->loop);
  c->deadline_connect = now + req->timeouts.connect_ms;
  c->deadline_first = now + req->timeouts.first_byte_ms;
  c->deadline_total = now + req->timeouts.total_ms;
  c->last_data = now;
  c->idle_ms = req->timeouts.idle_ms;
  c->connect_ms = req->timeouts.connect_ms;
  c->state = NC_CONNECTING;
  atomic_fetch_add_explicit(&e->nactive, 1, memory_order_relaxed);

  e->depth++;
  mg_native__arm(c);
  rc = build_head(c, d, req);
  if (rc == -EINVAL)
    end_msg(c, MG_UP_ERROR, "the path to append contains a space or a "
                            "control character");
  else if (rc == -E2BIG)
    end_msg(c, MG_UP_ERROR, "the request head is over 64 KiB");
  else if (rc != 0)
    end_msg(c, MG_UP_LOCAL, "out of memory for the request head");
  else
    dispatch(c);
  e->depth--;
  return &c->pub;
}

static void nat_resume(struct mg_up_call *pub) {
  struct nat_call *c = (struct nat_call *)pub;
  struct nat_engine *e = c->e;
  struct nat_conn *k = c->conn;
  size_t r, held, rest;

  if (c->state != NC_SENT || !c->paused || k == NULL)
    return;
  e->depth++;
  c->paused = false;
  c->last_data = uv_now(e->loop);
  held = k->held;
  r = c->pub.cbs->on_data(&c->pub, k->pbuf, held);
  if (r == MG_UP_PAUSE) {
    c->paused = true;
    atomic_fetch_add_explicit(&e->paused_total, 1, memory_order_relaxed);
  } else if (r != held) {
    mg_native__end(c, MG_UP_ABORTED, false);
  } else {
    rest = k->plen - held;
    k->held = k->plen = 0;
    mg_native__arm(c);
    llhttp_resume(&k->parser);
    k->parsing_pbuf = true;
    mg_native__process(k, k->pbuf + held, rest);
    k->parsing_pbuf = false;
    if (c->state == NC_SENT && !c->paused && c->conn == k)
      mg_native__read_start(k);
  }
  e->depth--;
}

static void nat_cancel(struct mg_up_call *pub) {
  struct nat_call *c = (struct nat_call *)pub;
  if (c->state == NC_FREE)
    return;
  if (c->conn) {
    /* Mid-answer (or connecting): the connection cannot serve another
     * request. */
    struct nat_conn *k = c->conn;
    c->conn = NULL;
    k->call = NULL;
    mg_native__conn_close(k);
  }
  call_stop(c); /* out of any queue: a queued on_done is not delivered */
  call_put(c);
}

static void nat_release(struct mg_up_call *pub) {
  nat_cancel(pub);
}

static int nat_header(struct mg_up_call *pub, const char *name, char *out,
                      size_t n) {
  struct nat_call *c = (struct nat_call *)pub;
  struct mg_str want = mg_str_c(name);
  size_t i;
  for (i = 0; i < c->nh; i++) {
    const struct nat_hdr *h = &c->hv[i];
    const char *v;
    size_t vl;
    if (h->nlen != want.len ||
        !mg_str_eq_nocase((struct mg_str){c->hbytes.data + h->name, h->nlen},
                          want))
      continue;
    if (n == 0)
      return -ENOENT;
    v = c->hbytes.data + h->value;
    vl = h->vlen;
    while (vl && (*v == ' ' || *v == '\t'))
      v++, vl--;
    while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
      vl--;
    if (vl >= n)
      vl = n - 1;
    memcpy(out, v, vl);
    out[vl] = '\0';
    return 0;
  }
  return -ENOENT;
}

static void nat_each_header(struct mg_up_call *pub,
                            void (*fn)(void *arg, const char *name,
                                       size_t nlen, const char *value,
                                       size_t vlen),
                            void *arg) {
  struct nat_call *c = (struct nat_call *)pub;
  size_t i;
  for (i = 0; i < c->nh; i++) {
    const struct nat_hdr *h = &c->hv[i];
    const char *v = c->hbytes.data + h->value;
    size_t vl = h->vlen;
    while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
      vl--;
    fn(arg, c->hbytes.data + h->name, h->nlen, v, vl);
  }
}

static void nat_configure(struct mg_up_engine *pe,
                          const struct mg_up_engine_cfg *cfg) {
  struct nat_engine *e = (struct nat_engine *)pe;
  struct nat_origin *o;
  e->max_idle = cfg->max_idle_connections;
  e->max_host = cfg->max_host_connections;
  e->idle_ms = cfg->idle_connection_ms ? cfg->idle_connection_ms : 1;
  while (e->nidle > e->max_idle)
    mg_native__conn_close(e->idle_head);
  if (e->idle_head) {
    uv_timer_stop(&e->sweep);
    on_sweep(&e->sweep);
  }
  /* A higher max_host_connections lets waiting calls go. */
  for (o = e->origins; o; o = o->next)
    schedule_pump(o);
}

static size_t nat_active(struct mg_up_engine *pe) {
  return atomic_load_explicit(&((struct nat_engine *)pe)->nactive,
                              memory_order_relaxed);
}

static uint64_t nat_paused_total(struct mg_up_engine *pe) {
  return atomic_load_explicit(&((struct nat_engine *)pe)->paused_total,
                              memory_order_relaxed);
}

static void on_engine_handle_closed(uv_handle_t *h) {
  struct nat_engine *e = h->data;
  e->pending--;
  maybe_done(e);
}

static void nat_close(struct mg_up_engine *pe, void (*cb)(void *arg),
                      void *arg) {
  struct nat_engine *e = (struct nat_engine *)pe;
  struct nat_call *c;
  struct nat_origin *o;
  struct nat_conn *k;

  if (e->closing)
    return;
  e->closing = true;
  e->close_cb = cb;
  e->close_arg = arg;
  e->pending++; /* ours, while closes are being issued */
  /* Calls belong to their owners, who end them before closing us; one
   * left here is a bug, reported, and its struct is freed (the owner must
   * not touch it again). */
  if (e->calls)
    mg_warn("upstream (native): %zu calls still out at close (%zu in "
            "progress)", e->ncalls - e->nfree, (size_t)e->nactive);
  while ((c = e->calls) != NULL)
    nat_cancel(&c->pub);
  while ((c = e->free) != NULL) {
    e->free = c->next_free;
    e->nfree--;
    call_destroy(c);
  }
  for (k = e->conns; k; k = k->knext)
    mg_native__conn_close(k);
  while ((o = e->pumpq) != NULL) {
    e->pumpq = o->pump_next;
    o->pump_pending = false;
    origin_unref(o);
  }
  /* A lookup in the thread pool finishes anyway; its callback sees the
   * engine closing. */
  for (o = e->origins; o; o = o->next)
    if (o->lookup)
      uv_cancel((uv_req_t *)&o->lookup->req);
  /* Origins live on while destinations hold them; they no longer know the
   * engine. */
  while ((o = e->origins) != NULL) {
    e->origins = o->next;
    o->prev = o->next = NULL;
    o->e = NULL;
  }
  uv_close((uv_handle_t *)&e->sweep, on_engine_handle_closed);
  uv_close((uv_handle_t *)&e->tick, on_engine_handle_closed);
  e->pending--;
  maybe_done(e);
}

/* ---- destinations --------------------------------------------------------------- */

static bool host_char(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' ||
         ch == '~';
}

struct url_parts {
  char host[256];   /* without brackets */
  unsigned port;
  bool v6;
  const char *path; /* from '/' or '?' on, without a fragment */
  size_t path_len;
};

static int parse_url(const char *url, struct url_parts *u, char *err,
                     size_t errlen) {
  const char *a, *end, *hp, *he, *pp;
  size_t i, n;

  if (strncasecmp(url, "http://", 7) != 0) {
    if (strncasecmp(url, "https://", 8) == 0)
      snprintf(err, errlen,
               "%s: https:// is served by the curl engine (the native "
               "engine speaks plain http:// only)", url);
    else
      snprintf(err, errlen, "%s: the native engine serves http:// URLs only",
               url);
    return -EINVAL;
  }
  for (i = 0; url[i]; i++) {
    unsigned char ch = (unsigned char)url[i];
    if (ch <= 0x20 || ch >= 0x7f) {
      snprintf(err, errlen,
               "%s: the URL contains a space, a control character or a "
               "non-ASCII byte", url);
      return -EINVAL;
    }
  }
  a = url + 7;
  end = a + strcspn(a, "/?#");
  if (memchr(a, '@', (size_t)(end - a))) {
    snprintf(err, errlen, "%s: user information in the URL is not supported",
             url);
    return -EINVAL;
  }
  u->v6 = *a == '[';
  if (u->v6) {
    hp = a + 1;
    he = memchr(hp, ']', (size_t)(end - hp));
    if (he == NULL) {
      snprintf(err, errlen, "%s: no ']' after the IPv6 address", url);
      return -EINVAL;
    }
    pp = he + 1;
  } else {
    hp = a;
    he = memchr(a, ':', (size_t)(end - a));
    if (he == NULL)
      he = end;
    pp = he;
  }
  n = (size_t)(he - hp);
  if (n == 0 || n >= sizeof(u->host)) {
    snprintf(err, errlen, "%s: %s host", url, n ? "an overlong" : "no");
    return -EINVAL;
  }
  memcpy(u->host, hp, n);
  u->host[n] = '\0';
  if (u->v6) {
    char buf[sizeof(struct in6_addr)];
    if (strchr(u->host, '%') || uv_inet_pton(AF_INET6, u->host, buf) != 0) {
      snprintf(err, errlen,
               "%s: not an IPv6 address (zone identifiers are not "
               "supported)", url);
      return -EINVAL;
    }
  } else {
    for (i = 0; i < n; i++)
      if (!host_char((unsigned char)u->host[i])) {
        snprintf(err, errlen, "%s: the host name has a character outside "
                              "letters, digits and -._~", url);
        return -EINVAL;
      }
  }
  u->port = 80;
  if (pp < end) {
    unsigned long v = 0;
    const char *q = pp + 1;
    if (*pp != ':' || q == end || end - q > 5) {
      snprintf(err, errlen, "%s: a bad port", url);
      return -EINVAL;
    }
    for (; q < end; q++) {
      if (*q < '0' || *q > '9') {
        snprintf(err, errlen, "%s: a bad port", url);
        return -EINVAL;
      }
      v = v * 10 + (unsigned long)(*q - '0');
    }
    if (v == 0 || v > 65535) {
      snprintf(err, errlen, "%s: port %lu is outside 1-65535", url, v);
      return -EINVAL;
    }
    u->port = (unsigned)v;
  }
  u->path = end;
  u->path_len = strcspn(end, "#");
  return 0;
}

static struct nat_origin *origin_get(struct nat_engine *e,
                                     const struct url_parts *u) {
  struct nat_origin *o;
  char port[6];
  size_t hl = strlen(u->host);
  snprintf(port, sizeof(port), "%u", u->port);
  for (o = e->origins; o; o = o->next)
    if (strcmp(o->port, port) == 0 &&
        mg_str_eq_nocase(mg_str_c(o->host), (struct mg_str){u->host, hl})) {
      o->refs++;
      return o;
    }
  o = calloc(1, sizeof(*o));
  if (o == NULL)
    return NULL;
  memcpy(o->port, port, sizeof(port));
  o->host = strdup(u->host);
  o->name = malloc(hl + 9);
  if (o->host == NULL || o->name == NULL) {
    free(o->host);
    free(o->name);
    free(o);
    return NULL;
  }
  snprintf(o->name, hl + 9, u->v6 ? "[%s]:%s" : "%s:%s", u->host, port);
  {
    struct sockaddr_in s4;
    struct sockaddr_in6 s6;
    if (!u->v6 && uv_ip4_addr(u->host, (int)u->port, &s4) == 0) {
      o->addrs = calloc(1, sizeof(*o->addrs));
      if (o->addrs)
        memcpy(o->addrs, &s4, sizeof(s4));
      o->literal = true;
    } else if (u->v6 && uv_ip6_addr(u->host, (int)u->port, &s6) == 0) {
      o->addrs = calloc(1, sizeof(*o->addrs));
      if (o->addrs)
        memcpy(o->addrs, &s6, sizeof(s6));
      o->literal = true;
    }
    if (o->literal) {
      if (o->addrs == NULL) {
        free(o->host);
        free(o->name);
        free(o);
        return NULL;
      }
      o->naddrs = 1;
    }
  }
  o->e = e;
  o->refs = 1;
  o->next = e->origins;
  if (e->origins)
    e->origins->prev = o;
  e->origins = o;
  return o;
}

static void nat_dest_free(void *p) {
  struct nat_dest *d = p;
  if (d == NULL)
    return;
  if (d->o)
    origin_unref(d->o);
  free(d->path);
  free(d->head);
  free(d);
}

/* A constant header line: "Name: value", no CR or LF. A line "Name:" with
 * nothing after it is skipped (curl's way of removing a header, which the
 * callers share with the curl engine). */
static int check_line(const char *l, bool *skip) {
  const char *colon = strchr(l, ':');
  const char *p;
  *skip = false;
  if (colon == NULL || colon == l)
    return -EINVAL;
  for (p = l; p < colon; p++)
    if (*p <= 0x20 || *p >= 0x7f)
      return -EINVAL;
  for (p = colon + 1; *p; p++)
    if (*p == '\r' || *p == '\n' || (*p < 0x20 && *p != '\t') || *p == 0x7f)
      return -EINVAL;
  for (p = colon + 1; *p == ' ' || *p == '\t'; p++)
    ;
  *skip = *p == '\0';
  return 0;
}

static void *nat_dest_new(struct mg_up_engine *pe, const char *url,
                          const char *const *lines, size_t nlines,
                          const struct mg_up_tls *tls, char *err,
                          size_t errlen) {
  struct nat_engine *e = (struct nat_engine *)pe;
  struct url_parts u;
  struct nat_dest *d;
  struct mg_buf h;
  size_t i;
  bool skip;
  int rc = 0;

  (void)tls; /* plain http:// only */
  if (url == NULL || parse_url(url, &u, err, errlen) != 0) {
    if (url == NULL)
      snprintf(err, errlen, "no URL");
    return NULL;
  }
  for (i = 0; i < nlines; i++)
    if (lines[i] == NULL || check_line(lines[i], &skip) != 0) {
      snprintf(err, errlen, "header line %zu is not \"Name: value\" "
                            "without CR or LF", i + 1);
      return NULL;
    }
  d = calloc(1, sizeof(*d));
  if (d == NULL)
    goto oom;
  mg_buf_init(&h, REQ_HEAD_MAX);
  if (u.path_len == 0 || u.path[0] == '?')
    rc |= mg_buf_puts(&h, "/");
  rc |= mg_buf_append(&h, u.path, u.path_len);
  d->path_len = h.len;
  d->path = mg_buf_steal(&h, &d->path_len);
  /* Host names the origin as the URL did, without the default port. */
  rc |= mg_buf_printf(&h, u.v6 ? "Host: [%s]" : "Host: %s", u.host);
  if (u.port != 80)
    rc |= mg_buf_printf(&h, ":%u", u.port);
  rc |= mg_buf_puts(&h, "\r\n");
  for (i = 0; i < nlines; i++) {
    check_line(lines[i], &skip);
    if (skip)
      continue;
    rc |= mg_buf_puts(&h, lines[i]);
    rc |= mg_buf_puts(&h, "\r\n");
  }
  if (rc != 0 || d->path == NULL) {
    mg_buf_free(&h);
    goto oom;
  }
  d->head = mg_buf_steal(&h, &d->head_len);
  d->o = origin_get(e, &u);
  if (d->head == NULL || d->o == NULL)
    goto oom;
  return d;
oom:
  snprintf(err, errlen, "out of memory");
  nat_dest_free(d);
  return NULL;
}

/* ---- the engine ------------------------------------------------------------------- */

const struct mg_up_engine_ops mg_native_ops = {
    .name = "native",
    .dest_new = nat_dest_new,
    .dest_free = nat_dest_free,
    .start = nat_start,
    .resume = nat_resume,
    .cancel = nat_cancel,
    .release = nat_release,
    .header = nat_header,
    .each_header = nat_each_header,
    .configure = nat_configure,
    .active = nat_active,
    .paused_total = nat_paused_total,
    .close = nat_close,
};

struct mg_up_engine *mg_native_new(uv_loop_t *loop,
                                   const struct mg_up_engine_cfg *cfg) {
  struct nat_engine *e = calloc(1, sizeof(*e));
  if (e == NULL)
    return NULL;
  e->rbuf = malloc(NAT_RBUF);
  if (e->rbuf == NULL) {
    free(e);
    return NULL;
  }
  e->base.ops = &mg_native_ops;
  e->loop = loop;
  e->pool_max = 1024;
  uv_timer_init(loop, &e->sweep);
  e->sweep.data = e;
  uv_idle_init(loop, &e->tick);
  e->tick.data = e;
  e->pending = 2; /* sweep and tick */
  nat_configure(&e->base, cfg);
  return &e->base;
}

void mg_native_stats(struct mg_up_engine *pe, struct mg_native_stats *out) {
  struct nat_engine *e = (struct nat_engine *)pe;
  struct nat_origin *o;
  *out = e->st;
  out->idle = e->nidle;
  out->waiting = 0;
  for (o = e->origins; o; o = o->next)
    out->waiting += o->dnsq.n + o->slotq.n;
}

/* ---- internals for the fuzzer and tests ---------------------------------------------- */

int mg_native__adopt(struct mg_up_engine *pe, const void *dest, int fd) {
  struct nat_engine *e = (struct nat_engine *)pe;
  const struct nat_dest *d = dest;
  struct nat_conn *k;
  int r;
  if (e->closing || d == NULL || (k = calloc(1, sizeof(*k))) == NULL)
    return -EINVAL;
  r = uv_tcp_init(e->loop, &k->tcp);
  if (r != 0) {
    free(k);
    return r;
  }
  conn_init(e, d->o, k);
  k->state = NK_ACTIVE;
  r = uv_tcp_open(&k->tcp, fd);
  if (r == 0)
    mg_native__read_start(k);
  if (r != 0 || !k->reading) {
    mg_native__conn_close(k);
    return r ? r : -EIO;
  }
  pool_put(k);
  return 0;
}

int mg_native__feed(struct mg_up_call *pub, const char *p, size_t n) {
  struct nat_call *c = (struct nat_call *)pub;
  struct nat_conn *k = c->conn;
  if (k == NULL || c->state != NC_SENT || c->paused || n > NAT_RBUF)
    return -EINVAL;
  memcpy(c->e->rbuf, p, n);
  mg_native__process(k, c->e->rbuf, n);
  return 0;
}

int mg_native__feed_eof(struct mg_up_call *pub) {
  struct nat_call *c = (struct nat_call *)pub;
  struct nat_conn *k = c->conn;
  if (k == NULL || c->state != NC_SENT || c->paused)
    return -EINVAL;
  mg_native__eof(k, UV_EOF);
  return 0;
}

int mg_native__set_addrs(const void *dest, const struct sockaddr *const *addrs,
                         size_t n) {
  const struct nat_dest *d = dest;
  struct nat_origin *o = d->o;
  struct sockaddr_storage *v;
  size_t i;
  if (n == 0 || o->e == NULL || (v = calloc(n, sizeof(*v))) == NULL)
    return -EINVAL;
  for (i = 0; i < n; i++)
    memcpy(&v[i], addrs[i], addrs[i]->sa_family == AF_INET6
                                ? sizeof(struct sockaddr_in6)
                                : sizeof(struct sockaddr_in));
  free(o->addrs);
  o->addrs = v;
  o->naddrs = n;
  o->good = 0;
  o->literal = false;
  o->dns_expiry = uv_now(o->e->loop) + MG_NATIVE_DNS_TTL_MS;
  return 0;
}
