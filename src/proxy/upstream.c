/* upstream.c - libcurl multi on libuv.
 *
 * The pattern is curl's docs/examples/multi-uv.c: curl tells us which
 * sockets to watch (socket callback, one uv_poll_t each, attached with
 * curl_multi_assign) and when to wake it (timer callback, one uv_timer_t);
 * we call curl_multi_socket_action on every event and then drain
 * curl_multi_info_read for finished transfers. Owners are told about a
 * finished transfer only from that drain, never from inside curl. */
#include "proxy/upstream.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/str.h"
#include "config/config.h"
#include "fallbacks/policy.h"

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
  struct mg_upstream *up; /* borrowed */
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

static struct up_fdslot *fdslot(struct mg_upstream *up, curl_socket_t fd,
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

static struct up_sock *sock_find(struct mg_upstream *up, curl_socket_t fd) {
  struct up_fdslot *slot = fdslot(up, fd, false);
  return slot ? slot->s : NULL;
}

static struct up_sock *sock_new(struct mg_upstream *up, curl_socket_t fd) {
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
static void closed(struct mg_upstream *up) {
  if (--up->pending_closes == 0 && up->closing && up->close_cb)
    up->close_cb(up->close_arg);
}

static const char *const result_names[] = {
    "ok",          "connect_error",      "timeout_connect",
    "timeout_first_byte", "timeout_idle", "timeout_total",
    "reset",       "truncated",          "too_big",
    "protocol_error", "aborted",         "error"};

const char *mg_up_result_name(enum mg_up_result r) {
  if ((size_t)r < sizeof(result_names) / sizeof(result_names[0]))
    return result_names[r];
  return "error";
}

static void check_multi_info(struct mg_upstream *up);
static void call_arm_timer(struct mg_up_call *call);

/* ---- curl -> libuv plumbing -------------------------------------------- */

static void on_sock_closed(uv_handle_t *h) {
  struct up_sock *s = (struct up_sock *)h;
  struct mg_upstream *up = s->up;
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
  struct mg_upstream *up = s->up;
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
  struct mg_upstream *up = userp;
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
  struct mg_upstream *up = clientp;
  struct up_fdslot *slot;
  curl_socket_t fd;

  (void)purpose;
  fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
  if (fd == CURL_SOCKET_BAD)
    return CURL_SOCKET_BAD;
  slot = fdslot(up, fd, true);
  if (slot == NULL) {
    close(fd);
    return CURL_SOCKET_BAD;
  }
  slot->gen++;
  return fd;
}

static int on_curl_close(void *clientp, curl_socket_t fd) {
  struct mg_upstream *up = clientp;
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
  struct mg_upstream *up = h->data;
  uv_idle_stop(h);
  check_multi_info(up);
}

static void on_curl_timeout(uv_timer_t *t) {
  struct mg_upstream *up = t->data;
  int running;
  curl_multi_socket_action(up->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_multi_info(up);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
  struct mg_upstream *up = userp;
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
  struct mg_up_call *call = userdata;
  size_t n = size * nmemb;

  if (!call->got_data) {
    char *ct = NULL;
    call->got_data = true;
    call->t_first_byte = uv_hrtime();
    curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &call->status);
    curl_easy_getinfo(call->easy, CURLINFO_CONTENT_TYPE, &ct);
    if (ct) {
      size_t l = strlen(ct);
      if (l >= sizeof(call->content_type))
        l = sizeof(call->content_type) - 1;
      memcpy(call->content_type, ct, l);
      call->content_type[l] = '\0';
    }
    /* Only a successful event stream is relayed piecewise; an error answer
     * to a streaming request is JSON and is buffered like any other. */
    call->streaming =
        call->want_stream && call->status == 200 &&
        mg_str_has_prefix_nocase(mg_str_c(call->content_type),
                                 "text/event-stream");
    call_arm_timer(call);
  }
  call->last_data = uv_now(call->up->loop);

  if (call->streaming) {
    size_t r = call->cbs->on_data(call, p, n);
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
  if (mg_buf_append(&call->body, p, n) != 0) {
    call->too_big = true;
    return 0;
  }
  return n;
}

static void on_call_timer(uv_timer_t *t);

/* Was a connection established? CONNECT_TIME is 0 for a reused connection,
 * so a request that went out counts as proof too. */
static bool call_connected(struct mg_up_call *call) {
  long connect_us = 0, sent = 0;
  curl_easy_getinfo(call->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
  curl_easy_getinfo(call->easy, CURLINFO_REQUEST_SIZE, &sent);
  return connect_us > 0 || sent > 0;
}

static struct mg_up_call *call_get(struct mg_upstream *up) {
  struct mg_up_call *call = up->free;
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
  curl_easy_setopt(call->easy, CURLOPT_ERRORBUFFER, call->error);
  curl_easy_setopt(call->easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(call->easy, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
  curl_easy_setopt(call->easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(call->easy, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(call->easy, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(call->easy, CURLOPT_OPENSOCKETFUNCTION, on_curl_open);
  curl_easy_setopt(call->easy, CURLOPT_OPENSOCKETDATA, up);
  curl_easy_setopt(call->easy, CURLOPT_CLOSESOCKETFUNCTION, on_curl_close);
  curl_easy_setopt(call->easy, CURLOPT_CLOSESOCKETDATA, up);
  /* An explicit proxy setting (empty: none) instead of curl reading the
   * proxy variables from the environment on every transfer. */
  curl_easy_setopt(call->easy, CURLOPT_PROXY, up->proxy ? up->proxy : "");
  /* No CURLOPT_ACCEPT_ENCODING: bodies pass through untouched (STYLE.md). */
  return call;
}

static void on_call_timer_closed(uv_handle_t *h) {
  struct mg_up_call *call = h->data;
  struct mg_upstream *up = call->up;
  free(call);
  closed(up);
}

static void call_destroy(struct mg_up_call *call) {
  struct mg_upstream *up = call->up;
  curl_easy_cleanup(call->easy);
  mg_buf_free(&call->body);
  up->calls--;
  up->pending_closes++;
  uv_close((uv_handle_t *)&call->timer, on_call_timer_closed);
}

static void call_put(struct mg_up_call *call) {
  struct mg_upstream *up = call->up;
  uv_timer_stop(&call->timer);
  free(call->req_body);
  call->req_body = NULL;
  if (up->closing || up->calls - up->active > up->pool_max) {
    call_destroy(call);
    return;
  }
  /* Keep a modest body buffer for the next call; drop big ones. */
  if (call->body.cap > (64u << 10))
    mg_buf_free(&call->body);
  else
    mg_buf_reset(&call->body);
  call->next_free = up->free;
  up->free = call;
}

/* Detach from the multi handle and stop the timer. */
static void call_stop(struct mg_up_call *call) {
  if (call->active) {
    call->active = false;
    call->up->active--;
    curl_multi_remove_handle(call->up->multi, call->easy);
  }
  uv_timer_stop(&call->timer);
  call->t_end = uv_hrtime();
}

static void call_finish(struct mg_up_call *call, enum mg_up_result res) {
  call_stop(call);
  call->cbs->on_done(call, res);
}

static void call_arm_timer(struct mg_up_call *call) {
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
  struct mg_up_call *call = t->data;
  uint64_t now = uv_now(call->up->loop);

  if (!call->active)
    return;
  if (now >= call->deadline_total) {
    call->connected = call->got_data || call_connected(call);
    call_finish(call, call->connected
                          ? MG_UP_TIMEOUT_TOTAL
                          : MG_UP_TIMEOUT_CONNECT);
    return;
  }
  if (!call->got_data && now >= call->deadline_first) {
    /* Still connecting when the first-byte budget ran out: report it as
     * the connect timeout it really is. */
    call->connected = call_connected(call);
    call_finish(call, call->connected ? MG_UP_TIMEOUT_FIRST_BYTE
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

static enum mg_up_result classify(struct mg_up_call *call, CURLcode rc) {
  call->connected = call_connected(call);
  switch (rc) {
  case CURLE_OK:
    return MG_UP_OK;
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
    return call->connected ? MG_UP_TIMEOUT_TOTAL : MG_UP_TIMEOUT_CONNECT;
  case CURLE_GOT_NOTHING:
  case CURLE_RECV_ERROR:
  case CURLE_SEND_ERROR:
    /* Data already arrived: the answer was cut, not refused. */
    return call->got_data ? MG_UP_TRUNCATED : MG_UP_RESET;
  case CURLE_PARTIAL_FILE:
    return MG_UP_TRUNCATED;
  case CURLE_WRITE_ERROR:
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

static void check_multi_info(struct mg_upstream *up) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(up->multi, &left)) != NULL) {
    struct mg_up_call *call = NULL;
    CURLcode rc;
    if (msg->msg != CURLMSG_DONE)
      continue;
    rc = msg->data.result;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&call);
    if (call == NULL || !call->active)
      continue;
    if (call->status == 0)
      curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &call->status);
    if (!call->got_data && rc == CURLE_OK) {
      char *ct = NULL;
      curl_easy_getinfo(call->easy, CURLINFO_CONTENT_TYPE, &ct);
      if (ct)
        snprintf(call->content_type, sizeof(call->content_type), "%s", ct);
    }
    call_finish(call, classify(call, rc));
  }
}

struct mg_up_call *mg_up_call_start(struct mg_upstream *up,
                                    const struct mg_up_request *req,
                                    const struct mg_up_call_cbs *cbs,
                                    void *owner) {
  struct mg_up_call *call;
  uint64_t now;
  CURL *e;

  if (up->closing)
    return NULL;
  call = call_get(up);
  if (call == NULL)
    return NULL;
  e = call->easy;
  call->owner = owner;
  call->cbs = cbs;
  call->status = 0;
  call->streaming = false;
  call->connected = false;
  call->content_type[0] = '\0';
  call->error[0] = '\0';
  call->t_first_byte = 0;
  call->t_end = 0;
  call->paused = false;
  call->got_data = false;
  call->aborted = false;
  call->too_big = false;
  call->want_stream = req->stream;
  call->req_body = req->body;
  mg_buf_reset(&call->body);
  call->body.max = req->max_response;

  curl_easy_setopt(e, CURLOPT_CURLU, req->url);
  if (req->decision) {
    /* curl only reads the list: a node of ours in front of the shared,
     * prebuilt one carries this request's decision id upstream, so the
     * upstream's logs can be joined with the decision log. */
    snprintf(call->decision_line, sizeof(call->decision_line),
             "x-modelgate-decision: %s", req->decision);
    call->decision_node.data = call->decision_line;
    call->decision_node.next = (struct curl_slist *)req->headers;
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, &call->decision_node);
  } else {
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->headers);
  }
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)req->timeouts.connect_ms);
  /* Pooled handles serve every target: always set the CA file, falling
   * back to the bundle libcurl was built with. */
  curl_easy_setopt(e, CURLOPT_CAINFO,
                   req->ca_file ? req->ca_file : up->default_cainfo);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, req->tls_verify ? 1L : 0L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, req->tls_verify ? 2L : 0L);
  curl_easy_setopt(e, CURLOPT_MAXAGE_CONN,
                   (long)(up->idle_connection_ms + 999) / 1000);

  now = uv_now(up->loop);
  call->t_start = uv_hrtime();
  call->deadline_total = now + req->timeouts.total_ms;
  call->deadline_first = now + req->timeouts.first_byte_ms;
  call->idle_ms = req->timeouts.idle_ms;
  call->last_data = now;

  if (curl_multi_add_handle(up->multi, e) != CURLM_OK) {
    call->req_body = NULL; /* the caller keeps its body on failure */
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
  return call;
}

int mg_up_call_header(struct mg_up_call *call, const char *name, char *out,
                      size_t n) {
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

void mg_up_call_resume(struct mg_up_call *call) {
  if (!call->active || !call->paused)
    return;
  call->paused = false;
  call->last_data = uv_now(call->up->loop);
  call_arm_timer(call);
  /* May deliver the held bytes to on_data right here, which may pause the
   * transfer again. */
  curl_easy_pause(call->easy, CURLPAUSE_CONT);
}

void mg_up_call_cancel(struct mg_up_call *call) {
  call_stop(call);
  call_put(call);
}

void mg_up_call_release(struct mg_up_call *call) {
  call_stop(call);
  call_put(call);
}

/* ---- per-snapshot target views -------------------------------------------- */

struct up_views {
  size_t n;                    /* targets */
  struct mg_up_target *v;      /* owned, by target index */
  size_t ntrad;
  struct mg_up_view *trad;     /* owned, by traditional index */
};

static void views_free(void *p) {
  struct up_views *vs = p;
  size_t i;
  int j;
  for (i = 0; i < vs->n; i++) {
    curl_slist_free_all(vs->v[i].headers);
    for (j = 0; j < MG_EP__COUNT; j++)
      curl_url_cleanup(vs->v[i].urls[j]);
  }
  for (i = 0; i < vs->ntrad; i++) {
    curl_slist_free_all(vs->trad[i].headers);
    curl_url_cleanup(vs->trad[i].url);
  }
  free(vs->v);
  free(vs->trad);
  free(vs);
}

static int trad_view_build(struct mg_up_view *v,
                           const struct mg_traditional *t) {
  struct curl_slist *l = NULL, *n;
  static const char *const fixed[] = {"Content-Type: application/json",
                                      "Expect:",
                                      "User-Agent: modelgate/" MG_VERSION};
  size_t i;
  if (t->url == NULL)
    return 0;
  for (i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
    if ((n = curl_slist_append(l, fixed[i])) == NULL) {
      curl_slist_free_all(l);
      return -ENOMEM;
    }
    l = n;
  }
  v->headers = l;
  v->url = curl_url();
  if (v->url == NULL || curl_url_set(v->url, CURLUPART_URL, t->url, 0) !=
                            CURLUE_OK)
    return -EINVAL;
  return 0;
}

static int view_build(struct mg_up_target *v, const struct mg_target *t) {
  struct curl_slist *l = NULL, *n;
  /* "Expect:" keeps curl from waiting for 100-continue on large bodies;
   * "Accept:" drops curl's default "*\/\*". The client's own framing headers
   * are never forwarded: curl frames the upstream request itself. */
  static const char *const fixed[] = {"Content-Type: application/json",
                                      "Expect:", "Accept:",
                                      "User-Agent: modelgate/" MG_VERSION};
  size_t i;
  int j;
  for (i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
    if ((n = curl_slist_append(l, fixed[i])) == NULL)
      goto fail;
    l = n;
  }
  if (t->auth_header) {
    if ((n = curl_slist_append(l, t->auth_header)) == NULL)
      goto fail;
    l = n;
  }
  v->headers = l;
  for (j = 0; j < MG_EP__COUNT; j++) {
    v->urls[j] = curl_url();
    if (v->urls[j] == NULL ||
        curl_url_set(v->urls[j], CURLUPART_URL, t->urls[j], 0) != CURLUE_OK)
      return -EINVAL;
  }
  return 0;
fail:
  curl_slist_free_all(l);
  return -ENOMEM;
}

/* Everything curl needs for a snapshot, built on first use, freed with
 * the snapshot. */
static struct up_views *views_of(struct mg_config *cfg) {
  struct up_views *vs = cfg->proxy_ext;
  size_t i;
  if (vs)
    return vs;
  vs = calloc(1, sizeof(*vs));
  if (vs == NULL)
    return NULL;
  vs->n = cfg->targets.n;
  vs->ntrad = cfg->fallbacks.ntrad;
  vs->v = calloc(vs->n ? vs->n : 1, sizeof(*vs->v));
  vs->trad = calloc(vs->ntrad ? vs->ntrad : 1, sizeof(*vs->trad));
  if (vs->v == NULL || vs->trad == NULL) {
    views_free(vs);
    return NULL;
  }
  for (i = 0; i < vs->n; i++) {
    if (view_build(&vs->v[i], &cfg->targets.v[i]) != 0) {
      mg_error("upstream: cannot prepare target %s", cfg->targets.v[i].name);
      views_free(vs);
      return NULL;
    }
  }
  for (i = 0; i < vs->ntrad; i++) {
    if (trad_view_build(&vs->trad[i], &cfg->fallbacks.trad[i]) != 0) {
      mg_error("upstream: cannot prepare traditional path %s",
               cfg->fallbacks.trad[i].name);
      views_free(vs);
      return NULL;
    }
  }
  cfg->proxy_ext = vs;
  cfg->proxy_ext_free = views_free;
  return vs;
}

const struct mg_up_target *mg_up_target_view(struct mg_config *cfg,
                                             const struct mg_target *t) {
  struct up_views *vs = views_of(cfg);
  return vs ? &vs->v[t->index] : NULL;
}

const struct mg_up_view *mg_up_trad_view(struct mg_config *cfg,
                                         const struct mg_traditional *t) {
  struct up_views *vs = views_of(cfg);
  if (vs == NULL || vs->trad[t->index].url == NULL)
    return NULL;
  return &vs->trad[t->index];
}

int mg_upstream_init(struct mg_upstream *up, uv_loop_t *loop,
                     const struct mg_upstream_cfg *cfg) {
  memset(up, 0, sizeof(*up));
  up->loop = loop;
  uv_timer_init(loop, &up->timer);
  up->timer.data = up;
  uv_idle_init(loop, &up->drain);
  up->drain.data = up;
  up->multi = curl_multi_init();
  if (up->multi == NULL)
    return -ENOMEM; /* the handles still close through mg_upstream_close */
  up->pool_max = 1024;
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
  mg_upstream_configure(up, cfg);
  return 0;
}

void mg_upstream_configure(struct mg_upstream *up,
                           const struct mg_upstream_cfg *cfg) {
  curl_multi_setopt(up->multi, CURLMOPT_MAXCONNECTS,
                    (long)cfg->max_idle_connections);
  curl_multi_setopt(up->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                    (long)cfg->max_host_connections);
  up->idle_connection_ms = cfg->idle_connection_ms;
  free(up->proxy);
  up->proxy = cfg->proxy && *cfg->proxy ? strdup(cfg->proxy) : NULL;
}

static void on_upstream_timer_closed(uv_handle_t *h) {
  closed(h->data);
}

void mg_upstream_close(struct mg_upstream *up, void (*cb)(void *arg),
                       void *arg) {
  struct mg_up_call *call;

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
  /* Active calls belong to exchanges, which the server finished before
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
