/* curl.c - the libcurl engine (upstream/call.h): libcurl multi on libuv,
 * for https:// upstreams and whatever the native engine does not serve.
 *
 * The pattern is curl's docs/examples/multi-uv.c: curl tells us which
 * sockets to watch (socket callback, one uv_poll_t each, attached with
 * curl_multi_assign) and when to wake it (timer callback, one uv_timer_t);
 * we call curl_multi_socket_action on every event and then drain
 * curl_multi_info_read for finished transfers. Owners are told about a
 * finished transfer only from that drain, never from inside curl. */
#include "upstream/curl.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "common/log.h"
#include "common/str.h"

/* One call: the contract's public part first (upstream/call.h). */
struct curl_call {
  struct mg_up_call pub;
  struct curl_engine *up;   /* borrowed */
  struct curl_call *next_free;
  CURL *easy;               /* owned, reused across calls */
  uv_timer_t timer;         /* first byte / idle / total */
  char *req_body;           /* owned */
  CURLU *extra_url;         /* owned: a URL of this call's own, or NULL */
  int open_errno;           /* socket() failed for this call: why */
  size_t req_len, req_off;  /* the body and how much curl has read */
  uint64_t deadline_total;  /* uv_now() milliseconds */
  uint64_t deadline_first;
  uint64_t last_data;
  uint32_t idle_ms;
  bool active;              /* in the multi handle */
  bool paused;
  bool want_stream;
  bool got_data;
  bool aborted, too_big;
  bool bad_status;          /* on_header refused the status line */
  /* This request's own header lines (decision id, anthropic-version...),
   * chained in front of the destination's shared list: no allocation per
   * call. */
#define CALL_EXTRA_LINES 8
  struct curl_slist extra_nodes[CALL_EXTRA_LINES];
  char extra[1024];
  char curl_error[CURL_ERROR_SIZE];
};

/* A destination: the URL parsed once and the constant header list. */
struct curl_dest {
  CURLU *url;                  /* owned */
  struct curl_slist *headers;  /* owned */
  char *ca_file;               /* owned, or NULL */
  bool tls_verify;
};

struct curl_engine {
  struct mg_up_engine base;  /* first: the engine is one */
  uv_loop_t *loop;           /* borrowed */
  CURLM *multi;              /* owned */
  uv_timer_t timer;          /* curl's own timeout */
  uv_idle_t drain;           /* delivers finished transfers (on_drain) */
  struct curl_call *free;    /* pool of idle calls */
  size_t calls;              /* calls allocated (idle + active) */
  /* Written on the loop, read by a scrape on any thread: relaxed atomics. */
  _Atomic size_t active;
  size_t pool_max;           /* idle calls kept beyond this are freed */
  uint32_t idle_connection_ms;
  _Atomic uint64_t paused_total; /* times a transfer was paused (metrics) */
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

/* A socket curl asked us to watch, with its uv_poll_t.
 *
 * curl drops a cached connection's socket from its watch list
 * (CURL_POLL_REMOVE) after every transfer and adds it back for the next;
 * keeping the handle (and its epoll registration) across that saves two
 * system calls and an allocation per request. That is only safe while we
 * learn about every close of the descriptor, or libuv would be left
 * watching a number that now belongs to another socket:
 *
 * - A socket curl watched for reading and that became readable (`active`)
 *   is connected (curl waits for writability while connecting), and
 *   libcurl closes connected sockets through CURLOPT_CLOSESOCKETFUNCTION
 *   (on_curl_close), which closes our handle first. Active sockets keep
 *   their handle across CURL_POLL_REMOVE.
 * - libcurl 7.88 closes a socket whose connect had not completed without
 *   calling that callback (curl PR #11439, fixed in 8.2). Sockets that are
 *   not active therefore lose their handle at CURL_POLL_REMOVE, which curl
 *   sends when it stops using a socket.
 * - Should curl reuse a descriptor number before we saw its REMOVE, the
 *   generation counter (bumped by on_curl_open) tells the stale handle from
 *   the new socket. */
struct up_sock {
  uv_poll_t poll;       /* first: the handle's memory is the struct's */
  curl_socket_t fd;
  struct curl_engine *up; /* borrowed */
  struct up_sock *prev, *next; /* the upstream's list of sockets */
  uint32_t gen;         /* the descriptor's generation at creation */
  int events;           /* UV_READABLE/UV_WRITABLE being polled */
  bool wanted;          /* curl watches it (between add and REMOVE) */
  bool active;          /* it was readable: connected */
};

struct up_fdslot {
  struct up_sock *s;    /* borrowed from the list, or NULL */
  uint32_t gen;         /* times curl opened a socket with this number */
};

static struct up_fdslot *fdslot(struct curl_engine *up, curl_socket_t fd,
                                bool grow) {
  if (fd < 0)
    return NULL;
  if ((size_t)fd >= up->nfdslots) {
    size_t n = up->nfdslots ? up->nfdslots : 64;
    struct up_fdslot *p;
    if (!grow)
      return NULL;
    while (n <= (size_t)fd)
      n *= 2;
    p = realloc(up->fdslots, n * sizeof(*p));
    if (p == NULL)
      return NULL;
    memset(p + up->nfdslots, 0, (n - up->nfdslots) * sizeof(*p));
    up->fdslots = p;
    up->nfdslots = n;
  }
  return &up->fdslots[fd];
}

static struct up_sock *sock_find(struct curl_engine *up, curl_socket_t fd) {
  struct up_fdslot *slot = fdslot(up, fd, false);
  return slot ? slot->s : NULL;
}

static struct up_sock *sock_new(struct curl_engine *up, curl_socket_t fd) {
  struct up_fdslot *slot = fdslot(up, fd, true);
  struct up_sock *s;
  if (slot == NULL || (s = calloc(1, sizeof(*s))) == NULL)
    return NULL;
  s->fd = fd;
  s->up = up;
  s->gen = slot->gen;
  if (uv_poll_init_socket(up->loop, &s->poll, fd) != 0) {
    free(s);
    return NULL;
  }
  slot->s = s;
  s->next = up->socks;
  if (up->socks)
    up->socks->prev = s;
  up->socks = s;
  return s;
}

static void sock_unlink(struct up_sock *s) {
  struct up_fdslot *slot = fdslot(s->up, s->fd, false);
  if (slot && slot->s == s)
    slot->s = NULL;
  if (s->prev)
    s->prev->next = s->next;
  else
    s->up->socks = s->next;
  if (s->next)
    s->next->prev = s->prev;
  s->prev = s->next = NULL;
}

/* Every uv_close here goes through closed(): the upstream knows when the
 * last of its handles is gone. */
static void closed(struct curl_engine *up) {
  void (*cb)(void *) = up->close_cb;
  void *arg = up->close_arg;
  if (--up->pending_closes != 0 || !up->closing)
    return;
  free(up);
  if (cb)
    cb(arg);
}

static void check_multi_info(struct curl_engine *up);
static void call_arm_timer(struct curl_call *call);

/* ---- curl -> libuv plumbing -------------------------------------------- */

static void on_sock_closed(uv_handle_t *h) {
  struct up_sock *s = (struct up_sock *)h;
  struct curl_engine *up = s->up;
  free(s);
  closed(up);
}

static void sock_close(struct up_sock *s) {
  sock_unlink(s);
  uv_poll_stop(&s->poll);
  s->up->pending_closes++;
  uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  struct up_sock *s = (struct up_sock *)h;
  struct curl_engine *up = s->up;
  curl_socket_t fd = s->fd; /* s may be closed inside socket_action */
  int flags = 0, running;

  /* An idle cached connection became readable: the upstream closed it or
   * sent junk. curl is not watching it, so stop polling (level-triggered
   * epoll would spin) and let curl find it dead when it next reuses it. */
  if (!s->wanted) {
    uv_poll_stop(&s->poll);
    s->events = 0;
    return;
  }

  /* A poll error is handed to curl as CURL_CSELECT_ERR so it fails the
   * transfer on that socket instead of us guessing (STYLE.md). */
  if (status < 0)
    flags = CURL_CSELECT_ERR;
  else {
    /* Readable without error: curl watches a socket for reading only once
     * it is connected (while connecting it waits for writability), so this
     * one is, and its close will reach on_curl_close (struct up_sock).
     * CURLINFO_ACTIVESOCKET cannot tell: in 7.88 it answers only after a
     * transfer. */
    if (events & UV_READABLE)
      s->active = true;
    if (events & UV_READABLE)
      flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
      flags |= CURL_CSELECT_OUT;
  }
  curl_multi_socket_action(up->multi, fd, flags, &running);
  check_multi_info(up);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp,
                          void *socketp) {
  struct curl_engine *up = userp;
  struct up_sock *s = sock_find(up, fd);
  struct up_fdslot *slot;
  int events = 0;

  (void)easy;
  (void)socketp;
  if (what == CURL_POLL_REMOVE) {
    if (s == NULL)
      return 0;
    if (!s->active) {
      sock_close(s); /* curl may close it without telling us */
    } else {
      /* Cached for reuse: keep watching for readability only, which costs
       * nothing while nothing arrives (see struct up_sock). */
      s->wanted = false;
      if (s->events != UV_READABLE) {
        s->events = UV_READABLE;
        uv_poll_start(&s->poll, UV_READABLE, on_poll);
      }
    }
    return 0;
  }
  slot = fdslot(up, fd, true);
  if (s && slot && s->gen != slot->gen) {
    sock_close(s); /* a stale handle: curl reopened this number */
    s = NULL;
  }
  if (s == NULL && (s = sock_new(up, fd)) == NULL)
    return -1;
  if (what & CURL_POLL_IN)
    events |= UV_READABLE;
  if (what & CURL_POLL_OUT)
    events |= UV_WRITABLE;
  s->wanted = true;
  if (events != s->events) {
    if (uv_poll_start(&s->poll, events, on_poll) != 0)
      return -1;
    s->events = events;
  }
  return 0;
}

/* curl opens its sockets through us only to let us count descriptor
 * generations (see struct up_sock). */
static curl_socket_t on_curl_open(void *clientp, curlsocktype purpose,
                                  struct curl_sockaddr *addr) {
  struct curl_call *call = clientp;
  struct curl_engine *up = call->up;
  struct up_fdslot *slot;
  curl_socket_t fd;

  (void)purpose;
  fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
  if (fd == CURL_SOCKET_BAD) {
    /* Out of descriptors (or memory) here is our own trouble, not the
     * upstream's: remembered so that it is not blamed (issue 10.3). */
    call->open_errno = errno;
    return CURL_SOCKET_BAD;
  }
  slot = fdslot(up, fd, true);
  if (slot == NULL) {
    close(fd);
    return CURL_SOCKET_BAD;
  }
  slot->gen++;
  return fd;
}

static int on_curl_close(void *clientp, curl_socket_t fd) {
  struct curl_engine *up = clientp;
  struct up_sock *s = sock_find(up, fd);
  /* The handle goes first: libuv must forget the descriptor before the
   * number can be reused. */
  if (s)
    sock_close(s);
  return close(fd);
}

/* Deliver transfers that finished during a synchronous socket_action. An
 * active idle handle makes the loop's next poll non-blocking only if it is
 * still active then; it stops itself first, so this costs no system call. */
static void on_drain(uv_idle_t *h) {
  struct curl_engine *up = h->data;
  uv_idle_stop(h);
  check_multi_info(up);
}

static void on_curl_timeout(uv_timer_t *t) {
  struct curl_engine *up = t->data;
  int running;
  curl_multi_socket_action(up->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_multi_info(up);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
  struct curl_engine *up = userp;
  (void)multi;
  if (timeout_ms < 0) {
    uv_timer_stop(&up->timer);
    return 0;
  }
  /* A zero timeout asks for socket_action "as soon as possible": doing it
   * from the next loop turn keeps curl from being re-entered. */
  uv_timer_start(&up->timer, on_curl_timeout, (uint64_t)timeout_ms, 0);
  return 0;
}

/* ---- calls ---------------------------------------------------------------- */

static size_t on_write(char *p, size_t size, size_t nmemb, void *userdata) {
  struct curl_call *call = userdata;
  size_t n = size * nmemb;

  if (!call->got_data) {
    char *ct = NULL;
    call->got_data = true;
    call->pub.t_first_byte = uv_hrtime();
    curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &call->pub.status);
    curl_easy_getinfo(call->easy, CURLINFO_CONTENT_TYPE, &ct);
    if (ct) {
      size_t l = strlen(ct);
      if (l >= sizeof(call->pub.content_type))
        l = sizeof(call->pub.content_type) - 1;
      memcpy(call->pub.content_type, ct, l);
      call->pub.content_type[l] = '\0';
    }
    /* Only a successful event stream is relayed piecewise; an error answer
     * to a streaming request is JSON and is buffered like any other. */
    call->pub.streaming =
        call->want_stream && call->pub.status == 200 &&
        mg_str_has_prefix_nocase(mg_str_c(call->pub.content_type),
                                 "text/event-stream");
    call_arm_timer(call);
  }
  call->last_data = uv_now(call->up->loop);

  if (call->pub.streaming) {
    size_t r = call->pub.cbs->on_data(&call->pub, p, n);
    if (r == MG_UP_PAUSE) {
      call->paused = true;
      call->up->paused_total++;
      return CURL_WRITEFUNC_PAUSE;
    }
    if (r != n) {
      call->aborted = true;
      return 0;
    }
    return n;
  }
  if (mg_buf_append(&call->pub.body, p, n) != 0) {
    call->too_big = true;
    return 0;
  }
  return n;
}

static void on_call_timer(uv_timer_t *t);

/* Was a connection established? CONNECT_TIME is 0 for a reused connection,
 * so a request that went out counts as proof too. */
static bool call_connected(struct curl_call *call) {
  long connect_us = 0, sent = 0;
  curl_easy_getinfo(call->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
  curl_easy_getinfo(call->easy, CURLINFO_REQUEST_SIZE, &sent);
  return connect_us > 0 || sent > 0;
}

/* Status lines only: an upstream switching protocols on a request that
 * asked for no upgrade is not answering in HTTP (RFC 9110, 15.2.2). Other
 * interim answers (100, 103) are skipped by curl, as they should be. */
static size_t on_header(char *p, size_t size, size_t nitems, void *ud) {
  struct curl_call *call = ud;
  size_t n = size * nitems;
  if (n > 12 && memcmp(p, "HTTP/", 5) == 0) {
    const char *sp = memchr(p, ' ', n);
    if (sp && (size_t)(sp - p) + 4 <= n && memcmp(sp + 1, "101", 3) == 0) {
      call->bad_status = true;
      return 0;
    }
  }
  return n;
}

static size_t on_read_body(char *buf, size_t size, size_t nitems, void *ud) {
  struct curl_call *call = ud;
  size_t n = size * nitems, left = call->req_len - call->req_off;
  if (n > left)
    n = left;
  memcpy(buf, call->req_body + call->req_off, n);
  call->req_off += n;
  if (n)
    call->pub.sent = true;
  return n;
}

/* Rewinding to where we already are is no re-send; anything else is. */
static int on_seek_body(void *ud, curl_off_t offset, int origin) {
  struct curl_call *call = ud;
  if (origin == SEEK_SET && offset == 0 && call->req_off == 0)
    return CURL_SEEKFUNC_OK;
  return CURL_SEEKFUNC_CANTSEEK;
}

static struct curl_call *call_get(struct curl_engine *up) {
  struct curl_call *call = up->free;
  if (call) {
    up->free = call->next_free;
    return call;
  }
  call = calloc(1, sizeof(*call));
  if (call == NULL)
    return NULL;
  call->easy = curl_easy_init();
  if (call->easy == NULL) {
    free(call);
    return NULL;
  }
  uv_timer_init(up->loop, &call->timer);
  call->timer.data = call;
  call->up = up;
  up->calls++;

  /* Settings that never change for a pooled handle. */
  curl_easy_setopt(call->easy, CURLOPT_PRIVATE, call);
  curl_easy_setopt(call->easy, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(call->easy, CURLOPT_WRITEDATA, call);
  curl_easy_setopt(call->easy, CURLOPT_ERRORBUFFER, call->curl_error);
  /* The body goes through a read callback that cannot rewind once curl
   * read any of it: libcurl re-sends a request on a fresh connection when a
   * reused one dies before the answer, but only if it can rewind the body.
   * A request that may have reached the model is never sent twice behind
   * the retry policy's back (issue 10.1); curl ends the transfer with
   * CURLE_SEND_FAIL_REWIND instead, classified as MG_UP_RESET. */
  curl_easy_setopt(call->easy, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(call->easy, CURLOPT_HEADERDATA, call);
  curl_easy_setopt(call->easy, CURLOPT_READFUNCTION, on_read_body);
  curl_easy_setopt(call->easy, CURLOPT_READDATA, call);
  curl_easy_setopt(call->easy, CURLOPT_SEEKFUNCTION, on_seek_body);
  curl_easy_setopt(call->easy, CURLOPT_SEEKDATA, call);
  curl_easy_setopt(call->easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(call->easy, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
  curl_easy_setopt(call->easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(call->easy, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(call->easy, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(call->easy, CURLOPT_OPENSOCKETFUNCTION, on_curl_open);
  curl_easy_setopt(call->easy, CURLOPT_OPENSOCKETDATA, call);
  curl_easy_setopt(call->easy, CURLOPT_CLOSESOCKETFUNCTION, on_curl_close);
  curl_easy_setopt(call->easy, CURLOPT_CLOSESOCKETDATA, up);
  /* An explicit proxy setting (empty: none) instead of curl reading the
   * proxy variables from the environment on every transfer. */
  curl_easy_setopt(call->easy, CURLOPT_PROXY, up->proxy ? up->proxy : "");
  /* No CURLOPT_ACCEPT_ENCODING: bodies pass through untouched (STYLE.md). */
  return call;
}

static void on_call_timer_closed(uv_handle_t *h) {
  struct curl_call *call = h->data;
  struct curl_engine *up = call->up;
  free(call);
  closed(up);
}

static void call_destroy(struct curl_call *call) {
  struct curl_engine *up = call->up;
  curl_easy_cleanup(call->easy);
  mg_buf_free(&call->pub.body);
  up->calls--;
  up->pending_closes++;
  uv_close((uv_handle_t *)&call->timer, on_call_timer_closed);
}

static void call_put(struct curl_call *call) {
  struct curl_engine *up = call->up;
  uv_timer_stop(&call->timer);
  free(call->req_body);
  call->req_body = NULL;
  curl_url_cleanup(call->extra_url);
  call->extra_url = NULL;
  if (up->closing || up->calls - up->active > up->pool_max) {
    call_destroy(call);
    return;
  }
  /* Keep a modest body buffer for the next call; drop big ones. */
  if (call->pub.body.cap > (64u << 10))
    mg_buf_free(&call->pub.body);
  else
    mg_buf_reset(&call->pub.body);
  call->next_free = up->free;
  up->free = call;
}

/* Detach from the multi handle and stop the timer. */
static void call_stop(struct curl_call *call) {
  if (call->active) {
    call->active = false;
    call->up->active--;
    curl_multi_remove_handle(call->up->multi, call->easy);
  }
  uv_timer_stop(&call->timer);
  call->pub.t_end = uv_hrtime();
}

static void call_finish(struct curl_call *call, enum mg_up_result res) {
  call_stop(call);
  if (call->curl_error[0])
    snprintf(call->pub.error, sizeof(call->pub.error), "%s", call->curl_error);
  call->pub.cbs->on_done(&call->pub, res);
}

static void call_arm_timer(struct curl_call *call) {
  uint64_t now = uv_now(call->up->loop), d = call->deadline_total;
  if (!call->got_data) {
    if (call->deadline_first < d)
      d = call->deadline_first;
  } else if (!call->paused) {
    uint64_t idle = call->last_data + call->idle_ms;
    if (idle < d)
      d = idle;
  }
  uv_timer_start(&call->timer, on_call_timer, d > now ? d - now : 0, 0);
}

static void on_call_timer(uv_timer_t *t) {
  struct curl_call *call = t->data;
  uint64_t now = uv_now(call->up->loop);

  if (!call->active)
    return;
  if (now >= call->deadline_total) {
    call->pub.connected = call->got_data || call_connected(call);
    call_finish(call, call->pub.connected
                          ? MG_UP_TIMEOUT_TOTAL
                          : MG_UP_TIMEOUT_CONNECT);
    return;
  }
  if (!call->got_data && now >= call->deadline_first) {
    /* Still connecting when the first-byte budget ran out: report it as
     * the connect timeout it really is. */
    call->pub.connected = call_connected(call);
    call_finish(call, call->pub.connected ? MG_UP_TIMEOUT_FIRST_BYTE
                                      : MG_UP_TIMEOUT_CONNECT);
    return;
  }
  /* Idle time only counts while the transfer is not paused: a slow client
   * is not the upstream's fault (the total deadline still applies). */
  if (call->got_data && !call->paused &&
      now >= call->last_data + call->idle_ms) {
    call_finish(call, MG_UP_TIMEOUT_IDLE);
    return;
  }
  call_arm_timer(call);
}

static int curl_header(struct mg_up_call *pub, const char *name, char *out,
                       size_t n);

/* Is a complete response a valid final answer (RFC 9110, 15; RFC 9112, 6.3)?
 * A status outside 100-599, an interim (1xx) status as the final one, or a
 * body on an answer that has none (204, 205, 304) is not: the upstream is
 * broken, and its bytes are never relayed (issue 10.1). */
static bool final_answer_ok(struct curl_call *call) {
  long st = call->pub.status;
  char v[32];
  if (st < 100 || st > 599) {
    snprintf(call->curl_error, sizeof(call->curl_error),
             "status %ld is not an HTTP status", st);
    return false;
  }
  if (st < 200) {
    snprintf(call->curl_error, sizeof(call->curl_error),
             "an interim status (%ld) as the final answer", st);
    return false;
  }
  if (st == 204 || st == 205 || st == 304) {
    bool body = call->pub.body.len > 0 || call->got_data ||
                curl_header(&call->pub, "transfer-encoding", v, sizeof(v)) ==
                    0 ||
                (curl_header(&call->pub, "content-length", v, sizeof(v)) ==
                     0 &&
                 strcmp(v, "0") != 0);
    if (body) {
      snprintf(call->curl_error, sizeof(call->curl_error),
               "a body on a %ld answer", st);
      return false;
    }
  }
  return true;
}

static enum mg_up_result classify(struct curl_call *call, CURLcode rc) {
  call->pub.connected = call_connected(call);
  if (rc != CURLE_OK &&
      (call->open_errno == EMFILE || call->open_errno == ENFILE ||
       call->open_errno == ENOMEM || call->open_errno == ENOBUFS)) {
    snprintf(call->curl_error, sizeof(call->curl_error),
             "cannot open a socket: %s", strerror(call->open_errno));
    return MG_UP_LOCAL;
  }
  switch (rc) {
  case CURLE_OK:
    return final_answer_ok(call) ? MG_UP_OK : MG_UP_PROTOCOL;
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_COULDNT_CONNECT:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    return MG_UP_CONNECT_ERROR;
  case CURLE_OPERATION_TIMEDOUT:
    return call->pub.connected ? MG_UP_TIMEOUT_TOTAL : MG_UP_TIMEOUT_CONNECT;
  case CURLE_SEND_FAIL_REWIND:
    /* A reused connection died after curl had read the body: curl wanted
     * to send it again (see on_seek_body). */
    call->pub.sent = true;
    return MG_UP_RESET;
  case CURLE_OUT_OF_MEMORY:
    return MG_UP_LOCAL;
  case CURLE_GOT_NOTHING:
  case CURLE_RECV_ERROR:
  case CURLE_SEND_ERROR:
    /* Data already arrived: the answer was cut, not refused. */
    return call->got_data ? MG_UP_TRUNCATED : MG_UP_RESET;
  case CURLE_PARTIAL_FILE:
    return MG_UP_TRUNCATED;
  case CURLE_WRITE_ERROR:
    if (call->bad_status) {
      snprintf(call->curl_error, sizeof(call->curl_error),
               "101 Switching Protocols to a request that asked for none");
      return MG_UP_PROTOCOL;
    }
    if (call->too_big)
      return MG_UP_TOO_BIG;
    if (call->aborted)
      return MG_UP_ABORTED;
    return MG_UP_ERROR;
  case CURLE_WEIRD_SERVER_REPLY:
  case CURLE_UNSUPPORTED_PROTOCOL:
  case CURLE_BAD_CONTENT_ENCODING:
    return MG_UP_PROTOCOL;
  default:
    return MG_UP_ERROR;
  }
}

static void check_multi_info(struct curl_engine *up) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(up->multi, &left)) != NULL) {
    struct curl_call *call = NULL;
    CURLcode rc;
    if (msg->msg != CURLMSG_DONE)
      continue;
    rc = msg->data.result;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&call);
    if (call == NULL || !call->active)
      continue;
    if (call->pub.status == 0)
      curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &call->pub.status);
    if (!call->got_data && rc == CURLE_OK) {
      char *ct = NULL;
      curl_easy_getinfo(call->easy, CURLINFO_CONTENT_TYPE, &ct);
      if (ct)
        snprintf(call->pub.content_type, sizeof(call->pub.content_type), "%s", ct);
    }
    call_finish(call, classify(call, rc));
  }
}

/* "A: b\r\nC: d\r\n": the request's own header lines, as nodes in front of
 * the shared list. */
static const struct curl_slist *chain_extra(struct curl_call *call,
                                            const struct mg_up_request *req,
                                            const struct curl_slist *shared) {
  const struct curl_slist *head = shared;
  size_t n = req->extra_len < sizeof(call->extra) - 1
                 ? req->extra_len
                 : sizeof(call->extra) - 1;
  char *p, *end;
  int k = 0;
  if (req->extra_headers == NULL || n == 0)
    return shared;
  memcpy(call->extra, req->extra_headers, n);
  call->extra[n] = '\0';
  /* Lines go in front in reverse, so curl sends them in their order. */
  p = call->extra;
  end = p + n;
  {
    char *lines[CALL_EXTRA_LINES];
    while (p < end && k < CALL_EXTRA_LINES) {
      char *nl = strstr(p, "\r\n");
      if (nl == NULL)
        break;
      *nl = '\0';
      if (nl > p)
        lines[k++] = p;
      p = nl + 2;
    }
    while (k-- > 0) {
      call->extra_nodes[k].data = lines[k];
      call->extra_nodes[k].next = (struct curl_slist *)head;
      head = &call->extra_nodes[k];
    }
  }
  return head;
}

static struct mg_up_call *curl_start(struct mg_up_engine *e,
                                     const struct mg_up_request *req,
                                     const struct mg_up_call_cbs *cbs,
                                     void *owner) {
  struct curl_engine *up = (struct curl_engine *)e;
  const struct curl_dest *d = req->dest;
  struct curl_call *call;
  CURLU *url = d->url;
  uint64_t now;
  CURL *h;

  if (up->closing || (call = call_get(up)) == NULL) {
    free(req->body);
    return NULL;
  }
  h = call->easy;
  call->pub.ops = &mg_curl_ops;
  call->pub.engine = e;
  call->pub.owner = owner;
  call->pub.cbs = cbs;
  call->pub.status = 0;
  call->pub.streaming = false;
  call->pub.connected = false;
  call->pub.sent = false;
  call->pub.reused = false;
  call->pub.content_type[0] = '\0';
  call->pub.error[0] = '\0';
  call->curl_error[0] = '\0';
  call->pub.t_first_byte = 0;
  call->pub.t_end = 0;
  call->paused = false;
  call->got_data = false;
  call->aborted = false;
  call->too_big = false;
  call->bad_status = false;
  call->want_stream = req->stream;
  call->req_body = req->body;
  call->req_len = req->body_len;
  call->req_off = 0;
  call->open_errno = 0;
  mg_buf_reset(&call->pub.body);
  call->pub.body.max = req->max_response;

  if (req->path_extra) {
    /* A URL of its own (a stored response's id after the path): rare, so
     * a copy of the parsed one. */
    char *path = NULL, *joined;
    CURLU *u = curl_url_dup(d->url);
    if (u == NULL || curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK ||
        (joined = malloc(strlen(path) + strlen(req->path_extra) + 1)) ==
            NULL) {
      curl_free(path);
      curl_url_cleanup(u);
      call_put(call);
      return NULL;
    }
    strcpy(joined, path);
    strcat(joined, req->path_extra);
    curl_url_set(u, CURLUPART_PATH, joined, 0);
    free(joined);
    curl_free(path);
    url = u;
    /* Kept until the call is put back. */
    call->extra_url = u;
  }
  curl_easy_setopt(h, CURLOPT_CURLU, url);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, chain_extra(call, req, d->headers));
  if (strcmp(req->method, "GET") == 0) {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, NULL);
  } else {
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
                     (curl_off_t)req->body_len);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST,
                     strcmp(req->method, "POST") == 0 ? NULL : req->method);
  }
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                   (long)req->timeouts.connect_ms);
  /* Pooled handles serve every target: always set the CA file, falling
   * back to the bundle libcurl was built with. */
  curl_easy_setopt(h, CURLOPT_CAINFO,
                   d->ca_file ? d->ca_file : up->default_cainfo);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, d->tls_verify ? 1L : 0L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, d->tls_verify ? 2L : 0L);
  curl_easy_setopt(h, CURLOPT_MAXAGE_CONN,
                   (long)(up->idle_connection_ms + 999) / 1000);

  now = uv_now(up->loop);
  call->pub.t_start = uv_hrtime();
  call->deadline_total = now + req->timeouts.total_ms;
  call->deadline_first = now + req->timeouts.first_byte_ms;
  call->idle_ms = req->timeouts.idle_ms;
  call->last_data = now;

  if (curl_multi_add_handle(up->multi, h) != CURLM_OK) {
    call_put(call);
    return NULL;
  }
  call->active = true;
  up->active++;
  call_arm_timer(call);
  /* Send now rather than on the next loop turn (where curl's zero timeout
   * would do it): one hop less latency per request. Finished transfers are
   * drained from the idle handle, never from here, so on_done cannot run
   * before the caller has the call. */
  {
    int running;
    curl_multi_socket_action(up->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  }
  if (!uv_is_active((uv_handle_t *)&up->drain))
    uv_idle_start(&up->drain, on_drain);
  return &call->pub;
}

static int curl_header(struct mg_up_call *pub, const char *name, char *out,
                       size_t n) {
  struct curl_call *call = (struct curl_call *)pub;
  struct curl_header *h = NULL;
  const char *v, *e;
  size_t len;
  if (curl_easy_header(call->easy, name, 0, CURLH_HEADER, -1, &h) !=
          CURLHE_OK ||
      h == NULL || h->value == NULL)
    return -ENOENT;
  v = h->value;
  while (*v == ' ' || *v == '\t')
    v++;
  e = v + strlen(v);
  while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
    e--;
  len = (size_t)(e - v);
  if (n == 0)
    return -ENOENT;
  if (len >= n)
    len = n - 1;
  memcpy(out, v, len);
  out[len] = '\0';
  return 0;
}

static void curl_each_header(struct mg_up_call *pub,
                             void (*fn)(void *arg, const char *name,
                                        size_t nlen, const char *value,
                                        size_t vlen),
                             void *arg) {
  struct curl_call *call = (struct curl_call *)pub;
  struct curl_header *h, *prev = NULL;
  /* The headers of the last response (-1): not of a 100-continue. */
  while ((h = curl_easy_nextheader(call->easy, CURLH_HEADER, -1, prev)) !=
         NULL) {
    fn(arg, h->name, strlen(h->name), h->value, strlen(h->value));
    prev = h;
  }
}

static void curl_resume(struct mg_up_call *pub) {
  struct curl_call *call = (struct curl_call *)pub;
  if (!call->active || !call->paused)
    return;
  call->paused = false;
  call->last_data = uv_now(call->up->loop);
  call_arm_timer(call);
  /* May deliver the held bytes to on_data right here, which may pause the
   * transfer again. */
  curl_easy_pause(call->easy, CURLPAUSE_CONT);
}

static void curl_cancel(struct mg_up_call *pub) {
  struct curl_call *call = (struct curl_call *)pub;
  call_stop(call);
  call_put(call);
}

static void curl_release(struct mg_up_call *pub) {
  struct curl_call *call = (struct curl_call *)pub;
  call_stop(call);
  call_put(call);
}

/* ---- destinations ------------------------------------------------------------- */

static void curl_dest_free(void *p) {
  struct curl_dest *d = p;
  if (d == NULL)
    return;
  curl_slist_free_all(d->headers);
  curl_url_cleanup(d->url);
  free(d->ca_file);
  free(d);
}

static void *curl_dest_new(struct mg_up_engine *e, const char *url,
                           const char *const *lines, size_t nlines,
                           const struct mg_up_tls *tls, char *err,
                           size_t errlen) {
  /* "Expect:" keeps curl from waiting for 100-continue on large bodies;
   * "Accept:" drops curl's default "*\/\*". The client's own framing
   * headers are never forwarded: curl frames the upstream request itself. */
  static const char *const fixed[] = {"Expect:", "Accept:"};
  struct curl_dest *d = calloc(1, sizeof(*d));
  struct curl_slist *n;
  size_t i;
  (void)e;
  if (d == NULL)
    goto oom;
  for (i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
    if ((n = curl_slist_append(d->headers, fixed[i])) == NULL)
      goto oom;
    d->headers = n;
  }
  for (i = 0; i < nlines; i++) {
    if ((n = curl_slist_append(d->headers, lines[i])) == NULL)
      goto oom;
    d->headers = n;
  }
  d->tls_verify = tls ? tls->verify : true;
  if (tls && tls->ca_file && (d->ca_file = strdup(tls->ca_file)) == NULL)
    goto oom;
  d->url = curl_url();
  if (d->url == NULL)
    goto oom;
  if (curl_url_set(d->url, CURLUPART_URL, url, 0) != CURLUE_OK) {
    snprintf(err, errlen, "libcurl cannot parse the URL %s", url);
    curl_dest_free(d);
    return NULL;
  }
  return d;
oom:
  snprintf(err, errlen, "out of memory");
  curl_dest_free(d);
  return NULL;
}

/* ---- the engine --------------------------------------------------------------- */

static void curl_configure(struct mg_up_engine *e,
                           const struct mg_up_engine_cfg *cfg) {
  struct curl_engine *up = (struct curl_engine *)e;
  curl_multi_setopt(up->multi, CURLMOPT_MAXCONNECTS,
                    (long)cfg->max_idle_connections);
  curl_multi_setopt(up->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                    (long)cfg->max_host_connections);
  up->idle_connection_ms = cfg->idle_connection_ms;
  free(up->proxy);
  up->proxy = cfg->proxy && *cfg->proxy ? strdup(cfg->proxy) : NULL;
}

static size_t curl_active(struct mg_up_engine *e) {
  return atomic_load_explicit(&((struct curl_engine *)e)->active,
                              memory_order_relaxed);
}

static uint64_t curl_paused_total(struct mg_up_engine *e) {
  return atomic_load_explicit(&((struct curl_engine *)e)->paused_total,
                              memory_order_relaxed);
}

static void on_upstream_timer_closed(uv_handle_t *h) { closed(h->data); }

static void curl_close(struct mg_up_engine *e, void (*cb)(void *arg),
                       void *arg) {
  struct curl_engine *up = (struct curl_engine *)e;
  struct curl_call *call;

  if (up->closing)
    return;
  up->closing = true;
  up->close_cb = cb;
  up->close_arg = arg;
  /* Hold one count ourselves so that close callbacks cannot report the
   * end while we are still issuing closes. */
  up->pending_closes++;
  while ((call = up->free) != NULL) {
    up->free = call->next_free;
    call_destroy(call);
  }
  /* Active calls belong to exchanges, which the worker finished before
   * closing us; one left here is a bug, reported rather than hidden. */
  if (up->active)
    mg_warn("upstream: %zu transfers still active at close", up->active);
  /* Shutdown order (STYLE.md): easy handles, then the multi handle. The
   * socket and timer callbacks are unhooked first: nothing may be
   * scheduled on a multi handle that is going away. */
  if (up->multi) {
    curl_multi_setopt(up->multi, CURLMOPT_SOCKETFUNCTION, NULL);
    curl_multi_setopt(up->multi, CURLMOPT_TIMERFUNCTION, NULL);
    /* The cached connections' sockets are closed through on_curl_close,
     * which closes their poll handles first. */
    curl_multi_cleanup(up->multi);
    up->multi = NULL;
  }
  while (up->socks)
    sock_close(up->socks); /* none should be left; do not leak if so */
  free(up->fdslots);
  up->fdslots = NULL;
  up->nfdslots = 0;
  free(up->proxy);
  up->proxy = NULL;
  free(up->default_cainfo);
  up->default_cainfo = NULL;
  up->pending_closes += 2;
  uv_close((uv_handle_t *)&up->timer, on_upstream_timer_closed);
  uv_close((uv_handle_t *)&up->drain, on_upstream_timer_closed);
  closed(up);
}

const struct mg_up_engine_ops mg_curl_ops = {
    .name = "curl",
    .dest_new = curl_dest_new,
    .dest_free = curl_dest_free,
    .start = curl_start,
    .resume = curl_resume,
    .cancel = curl_cancel,
    .release = curl_release,
    .header = curl_header,
    .each_header = curl_each_header,
    .configure = curl_configure,
    .active = curl_active,
    .paused_total = curl_paused_total,
    .close = curl_close,
};

struct mg_up_engine *mg_curl_new(uv_loop_t *loop,
                                 const struct mg_up_engine_cfg *cfg) {
  struct curl_engine *up = calloc(1, sizeof(*up));
  if (up == NULL)
    return NULL;
  up->base.ops = &mg_curl_ops;
  up->loop = loop;
  uv_timer_init(loop, &up->timer);
  up->timer.data = up;
  uv_idle_init(loop, &up->drain);
  up->drain.data = up;
  up->multi = curl_multi_init();
  up->pool_max = 1024;
  if (up->multi == NULL) {
    /* the handles still close through curl_close, which frees up */
    curl_close(&up->base, NULL, NULL);
    return NULL;
  }
  {
    /* The CA bundle libcurl was built with (CURLINFO_CAINFO, 7.84+). */
    CURL *probe = curl_easy_init();
    char *ca = NULL;
    if (probe && curl_easy_getinfo(probe, CURLINFO_CAINFO, &ca) == CURLE_OK &&
        ca)
      up->default_cainfo = strdup(ca);
    if (probe)
      curl_easy_cleanup(probe);
  }
  curl_multi_setopt(up->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
  curl_multi_setopt(up->multi, CURLMOPT_SOCKETDATA, up);
  curl_multi_setopt(up->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(up->multi, CURLMOPT_TIMERDATA, up);
  curl_configure(&up->base, cfg);
  return &up->base;
}
