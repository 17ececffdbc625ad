/* native_resp.c - the answer side of the native engine: bytes from the
 * socket (or the fuzzer) through llhttp into the call's status, headers
 * and body, and how an answer ends.
 *
 * The llhttp callbacks only record (STYLE.md): they store headers, append
 * or relay body bytes and set flags; whatever ends the call happens in
 * mg_native__process after llhttp_execute returned. Every lenient flag is
 * off. Debian's llhttp 8.1 is built here without LLHTTP_STRICT_MODE,
 * which takes any two bytes after chunk data as its CRLF and a space in a
 * field name, and either build takes "0200" as a status code: those three
 * are checked here. (It also takes CR followed by any byte as a line end in
 * heads and chunk-size lines; that needs LLHTTP_STRICT_MODE=1 where the
 * library is built, see docs/drafts/h3-native.md.) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/str.h"
#include "upstream/native_int.h"

#define CALL(p) (((struct nat_conn *)(p)->data)->call)

static int stop(struct nat_call *c, enum mg_up_result res, const char *msg) {
  if (c->fail == MG_UP_OK) {
    c->fail = res;
    snprintf(c->pub.error, sizeof(c->pub.error), "%s", msg);
  }
  return -1;
}

void mg_native__resp_reset(struct nat_call *c) {
  c->got_byte = c->msg_started = c->headers_done = false;
  c->interim = c->interim_done = c->complete = c->keep = false;
  c->got_data = c->rearm = c->paused = false;
  c->fail = MG_UP_OK;
  c->sc = 0;
  c->crlf_need = 0;
  c->hstate = 0;
  c->head_fed = 0;
  c->nh = 0;
  mg_buf_reset(&c->hbytes);
  c->hbytes.max = MG_NATIVE_MAX_HEAD;
}

/* ---- llhttp callbacks ---------------------------------------------------- */

static int on_message_begin(llhttp_t *p) {
  struct nat_call *c = CALL(p);
  c->msg_started = true;
  c->nh = 0;
  c->hstate = 0;
  mg_buf_reset(&c->hbytes);
  return 0;
}

/* mg_buf_append without the call when the bytes fit (a warm call's
 * buffers do): answers arrive in a score of small pieces. */
static inline int append(struct mg_buf *b, const char *p, size_t n) {
  if (b->len + n < b->cap && b->len + n <= b->max) {
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
  }
  return mg_buf_append(b, p, n);
}

static int header_bytes(struct nat_call *c, const char *at, size_t n) {
  int rc = append(&c->hbytes, at, n);
  if (rc == -E2BIG)
    return stop(c, MG_UP_PROTOCOL, "the answer's head is over 64 KiB");
  if (rc != 0)
    return stop(c, MG_UP_LOCAL, "out of memory for the answer's head");
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n) {
  struct nat_call *c = CALL(p);
  /* A field name is a token (RFC 9110 5.6.2). llhttp 8.1 built without
   * LLHTTP_STRICT_MODE lets one byte outside tchar into names, the space
   * (checked for all 256 bytes), so that one is refused here. */
  if (memchr(at, ' ', n))
    return stop(c, MG_UP_PROTOCOL,
                "invalid answer: a header name that is not a token");
  /* Trailer fields after a chunked body are parsed but not kept: the
   * answer's headers are the head's (as with curl's CURLH_HEADER). */
  if (c->headers_done)
    return 0;
  if (c->hstate != 1) {
    struct nat_hdr *h;
    if (c->nh == c->hcap) {
      size_t cap = c->hcap ? c->hcap * 2 : 16;
      if (c->nh >= MG_NATIVE_MAX_HEADERS)
        return stop(c, MG_UP_PROTOCOL, "the answer has over 256 headers");
      h = realloc(c->hv, cap * sizeof(*h));
      if (h == NULL)
        return stop(c, MG_UP_LOCAL, "out of memory for the answer's head");
      c->hv = h;
      c->hcap = cap;
    }
    h = &c->hv[c->nh];
    h->name = (uint32_t)c->hbytes.len;
    h->nlen = h->vlen = 0;
    h->value = h->name;
    c->hstate = 1;
  }
  return header_bytes(c, at, n);
}

static int on_header_field_complete(llhttp_t *p) {
  struct nat_call *c = CALL(p);
  if (c->headers_done || c->hstate != 1)
    return 0;
  c->hv[c->nh].nlen = (uint32_t)c->hbytes.len - c->hv[c->nh].name;
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n) {
  struct nat_call *c = CALL(p);
  if (c->headers_done)
    return 0;
  if (c->hstate == 1) {
    c->hv[c->nh].value = (uint32_t)c->hbytes.len;
    c->hstate = 2;
  }
  return header_bytes(c, at, n);
}

static int on_header_value_complete(llhttp_t *p) {
  struct nat_call *c = CALL(p);
  struct nat_hdr *h;
  if (c->headers_done)
    return 0;
  h = &c->hv[c->nh];
  /* An empty value has no on_header_value. */
  if (c->hstate == 1)
    h->value = (uint32_t)c->hbytes.len;
  h->vlen = (uint32_t)c->hbytes.len - h->value;
  c->nh++;
  c->hstate = 0;
  return 0;
}

static struct mg_str trim(const char *p, size_t n) {
  while (n && (*p == ' ' || *p == '\t'))
    p++, n--;
  while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
    n--;
  return (struct mg_str){p, n};
}

static void find_content_type(struct nat_call *c) {
  size_t i;
  c->pub.content_type[0] = '\0';
  for (i = 0; i < c->nh; i++) {
    const struct nat_hdr *h = &c->hv[i];
    if (h->nlen == 12 &&
        mg_str_eq_nocase((struct mg_str){c->hbytes.data + h->name, 12},
                         MG_STR_LIT("content-type"))) {
      struct mg_str v = trim(c->hbytes.data + h->value, h->vlen);
      if (v.len >= sizeof(c->pub.content_type))
        v.len = sizeof(c->pub.content_type) - 1;
      memcpy(c->pub.content_type, v.p, v.len);
      c->pub.content_type[v.len] = '\0';
      return;
    }
  }
}

/* Return values (llhttp): 0 read the body, 1 there is none, -1 stop. */
static int on_headers_complete(llhttp_t *p) {
  struct nat_call *c = CALL(p);
  unsigned st = p->status_code;
  bool te = (p->flags & (F_CHUNKED | F_TRANSFER_ENCODING)) != 0;
  bool body = te || ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
  char msg[96];

  if (p->http_major != 1 || p->http_minor > 1) {
    snprintf(msg, sizeof(msg), "the answer is HTTP/%u.%u, not HTTP/1.x",
             p->http_major, p->http_minor);
    return stop(c, MG_UP_PROTOCOL, msg);
  }
  if (st < 100 || st > 599) {
    snprintf(msg, sizeof(msg), "status %u is outside 100-599", st);
    return stop(c, MG_UP_PROTOCOL, msg);
  }
  /* No request asks for an upgrade: a 101 is not an answer to it. */
  if (st == 101)
    return stop(c, MG_UP_PROTOCOL,
                "101 Switching Protocols to a request without Upgrade");
  if (st < 200) {
    /* Interim answers (100 Continue, 102, 103 Early Hints) come before the
     * final one and are skipped (RFC 9110 15.2); they never have a body. */
    if (body) {
      snprintf(msg, sizeof(msg), "a %u answer with a body", st);
      return stop(c, MG_UP_PROTOCOL, msg);
    }
    c->interim = true;
    return 1;
  }
  /* 204 and 205 have no content (RFC 9110 15.3.5, 15.3.6), nor has a 304
   * (15.4.5), whose Content-Length is the selected representation's. */
  if ((st == 204 || st == 205) && body) {
    snprintf(msg, sizeof(msg), "a %u answer with a body", st);
    return stop(c, MG_UP_PROTOCOL, msg);
  }
  if (st == 304 && te)
    return stop(c, MG_UP_PROTOCOL, "a 304 answer with a body");

  c->headers_done = true;
  c->pub.status = (long)st;
  find_content_type(c);
  /* Only a successful event stream is relayed piecewise; an error answer
   * to a streaming request is JSON and is buffered like any other. */
  c->pub.streaming =
      c->want_stream && st == 200 &&
      mg_str_has_prefix_nocase(mg_str_c(c->pub.content_type),
                               "text/event-stream");
  if (st == 204 || st == 205 || st == 304 || c->head_method)
    return 1;
  if (!c->pub.streaming && (p->flags & F_CONTENT_LENGTH) &&
      p->content_length > c->pub.body.max)
    return stop(c, MG_UP_TOO_BIG, "the answer's Content-Length is over "
                                  "the answer limit");
  return 0;
}

/* The CRLF that must follow chunk data (RFC 9112 7.1), from q on. */
static int check_crlf(struct nat_call *c, const char *q, const char *end) {
  while (c->crlf_need && q < end) {
    if (*q != (c->crlf_need == 2 ? '\r' : '\n'))
      return stop(c, MG_UP_PROTOCOL,
                  "invalid answer: chunk data not followed by CRLF");
    q++;
    c->crlf_need--;
  }
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n) {
  struct nat_conn *k = p->data;
  struct nat_call *c = k->call;
  int rc;

  /* llhttp ends a body read until EOF with an empty piece. */
  if (n == 0)
    return 0;
  c->last_data = uv_now(k->e->loop);
  if (!c->got_data) {
    c->got_data = true;
    c->rearm = true;
    c->pub.t_first_byte = uv_hrtime();
  }
  /* The chunk's last bytes: llhttp counts down its size. */
  if ((p->flags & F_CHUNKED) && p->content_length == 0) {
    c->crlf_need = 2;
    if (check_crlf(c, at + n, k->feed_end) != 0)
      return -1;
  }
  if (c->pub.streaming) {
    size_t r = c->pub.cbs->on_data(&c->pub, at, n);
    if (r == n)
      return 0;
    if (r == MG_UP_PAUSE) {
      c->paused = true;
      k->e->paused_total++;
      k->held_p = at;
      k->held = n;
      return HPE_PAUSED;
    }
    return stop(c, MG_UP_ABORTED, "");
  }
  rc = append(&c->pub.body, at, n);
  if (rc == -E2BIG)
    return stop(c, MG_UP_TOO_BIG, "the answer is over the answer limit");
  if (rc != 0)
    return stop(c, MG_UP_LOCAL, "out of memory for the answer's body");
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  struct nat_call *c = CALL(p);
  c->msg_started = false;
  if (c->interim) {
    /* Stop where the final answer begins, so that its status line is
     * checked from its first byte (mg_native__process). */
    c->interim = false;
    c->interim_done = true;
    return HPE_PAUSED;
  }
  c->complete = true;
  /* HTTP/1.1 without "Connection: close", HTTP/1.0 with keep-alive, and
   * not a body that ended with the connection. */
  c->keep = llhttp_should_keep_alive(p) != 0;
  return HPE_PAUSED;
}

const llhttp_settings_t mg_native__settings = {
    .on_message_begin = on_message_begin,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value_complete = on_header_value_complete,
};

/* ---- driving the parser -------------------------------------------------- */

/* The status code's digits, on raw bytes from the message's start:
 * "HTTP/1.1 200 OK" has them at offsets 9-11 and SP or CR at 12 (llhttp
 * checks the rest of the line). Empty lines before it are skipped as
 * llhttp skips them. */
static int check_status_line(struct nat_call *c, const char *q,
                             const char *end) {
  for (; q < end && c->sc < NAT_SC_DONE; q++) {
    unsigned char ch = (unsigned char)*q;
    if (c->sc == 0 && (ch == '\r' || ch == '\n'))
      continue;
    if (c->sc >= 9 && c->sc <= 11 && (ch < '0' || ch > '9'))
      return stop(c, MG_UP_PROTOCOL,
                  "invalid answer: the status code is not three digits");
    if (c->sc == 12 && ch != ' ' && ch != '\r')
      return stop(c, MG_UP_PROTOCOL,
                  "invalid answer: the status code is not three digits");
    c->sc++;
  }
  return 0;
}

/* Keep the refused piece and what followed it in k->pbuf until resume. */
static int hold(struct nat_conn *k, const char *end) {
  size_t n = (size_t)(end - k->held_p);
  if (k->parsing_pbuf) {
    memmove(k->pbuf, k->held_p, n); /* resuming, paused again */
  } else {
    if (n > k->pcap) {
      char *b = realloc(k->pbuf, n);
      if (b == NULL)
        return -ENOMEM;
      k->pbuf = b;
      k->pcap = n;
    }
    memcpy(k->pbuf, k->held_p, n);
  }
  k->plen = n;
  k->held_p = NULL;
  return 0;
}

static void fail_parse(struct nat_call *c, llhttp_t *p, llhttp_errno_t err) {
  if (c->fail != MG_UP_OK) {
    mg_native__end(c, c->fail, false);
    return;
  }
  snprintf(c->pub.error, sizeof(c->pub.error), "invalid answer: %s (%s)",
           llhttp_get_error_reason(p) ? llhttp_get_error_reason(p) : "",
           llhttp_errno_name(err));
  mg_native__end(c, MG_UP_PROTOCOL, false);
}

/* The final answer ended at pos; end - pos bytes followed it. */
static void complete(struct nat_conn *k, const char *pos, const char *end) {
  struct nat_call *c = k->call;
  long st = c->pub.status;
  bool extra = pos < end;
  if (extra && (st == 204 || st == 205 || st == 304)) {
    snprintf(c->pub.error, sizeof(c->pub.error), "a %ld answer with a body",
             st);
    mg_native__end(c, MG_UP_PROTOCOL, false);
    return;
  }
  /* Bytes after the answer to the one request in flight: the connection
   * is out of step with us and is not reused (the answer itself is whole). */
  mg_native__end(c, MG_UP_OK, c->keep && !extra && k->writing == 0);
}

void mg_native__process(struct nat_conn *k, const char *p, size_t n) {
  struct nat_call *c = k->call;
  const char *pos = p, *end = p + n;
  llhttp_errno_t err;

  /* Bytes on an idle pooled connection: the upstream closed it or is out
   * of step. Either way it is not reused. */
  if (c == NULL) {
    mg_native__conn_close(k);
    return;
  }
  if (n)
    c->got_byte = true;
  if (!c->headers_done)
    c->head_fed += n;
  k->feed_end = end;
  for (;;) {
    if (c->sc < NAT_SC_DONE && check_status_line(c, pos, end) != 0) {
      mg_native__end(c, c->fail, false);
      return;
    }
    if (c->crlf_need && check_crlf(c, pos, end) != 0) {
      mg_native__end(c, c->fail, false);
      return;
    }
    err = llhttp_execute(&k->parser, pos, (size_t)(end - pos));
    if (err == HPE_OK) {
      if (!c->headers_done && c->head_fed > MG_NATIVE_MAX_HEAD) {
        snprintf(c->pub.error, sizeof(c->pub.error),
                 "the answer's head is over 64 KiB");
        mg_native__end(c, MG_UP_PROTOCOL, false);
        return;
      }
      break;
    }
    if (err != HPE_PAUSED) {
      fail_parse(c, &k->parser, err);
      return;
    }
    pos = llhttp_get_error_pos(&k->parser);
    if (c->complete) {
      complete(k, pos, end);
      return;
    }
    if (c->paused) {
      if (hold(k, end) != 0) {
        snprintf(c->pub.error, sizeof(c->pub.error),
                 "out of memory for held answer bytes");
        mg_native__end(c, MG_UP_LOCAL, false);
        return;
      }
      mg_native__read_stop(k);
      return;
    }
    /* A 1xx ended: the final answer's status line starts at pos. */
    c->interim_done = false;
    c->sc = 0;
    llhttp_resume(&k->parser);
  }
  if (c->rearm) {
    c->rearm = false;
    mg_native__arm(c);
  }
}

void mg_native__eof(struct nat_conn *k, int status) {
  struct nat_call *c = k->call;
  bool eof = status == UV_EOF;

  /* An idle pooled connection closed by the upstream (its keep-alive
   * timeout) or failed: it leaves the pool. */
  if (c == NULL) {
    mg_native__conn_close(k);
    return;
  }
  /* Nothing of an answer (or only whole 1xx answers): the request was
   * written, so it may have reached the model. That is this attempt's
   * failure; the engine never writes the request again (issue 10.1). */
  if (!c->headers_done && !c->msg_started) {
    snprintf(c->pub.error, sizeof(c->pub.error), "%s",
             eof ? "the upstream closed the connection without answering"
                 : uv_strerror(status));
    mg_native__end(c, MG_UP_RESET, false);
    return;
  }
  if (!c->headers_done) {
    snprintf(c->pub.error, sizeof(c->pub.error),
             "the connection %s in the middle of the answer's head",
             eof ? "closed" : "failed");
    mg_native__end(c, MG_UP_PROTOCOL, false);
    return;
  }
  if (eof) {
    /* A body read until the connection closes ends here. */
    llhttp_errno_t err;
    k->feed_end = NULL;
    err = llhttp_finish(&k->parser);
    if (c->fail != MG_UP_OK) {
      mg_native__end(c, c->fail, false);
      return;
    }
    if (err == HPE_PAUSED && c->complete) {
      c->keep = false;
      complete(k, NULL, NULL);
      return;
    }
  }
  snprintf(c->pub.error, sizeof(c->pub.error),
           "the connection %s before the end of the answer's body",
           eof ? "closed" : "failed");
  mg_native__end(c, MG_UP_TRUNCATED, false);
}
