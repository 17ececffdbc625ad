/* http.h - response building blocks shared by connections and exchanges. */
#ifndef MG_HTTP_H
#define MG_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <string.h>

#include "common/buf.h"

/* "OK", "Bad Request", ... ("Unknown" for codes we never send). */
const char *mg_http_reason(int status);

/* A response head built on the stack without printf: this is on every
 * request's path. Overflow is sticky and makes the head unusable. */
#define MG_HEAD_MAX 4096
struct mg_head {
  size_t len;
  bool overflow;
  char buf[MG_HEAD_MAX];
};

static inline void mg_head_put(struct mg_head *h, const char *s, size_t n) {
  if (n > MG_HEAD_MAX - h->len) {
    h->overflow = true;
    return;
  }
  memcpy(h->buf + h->len, s, n);
  h->len += n;
}

/* A string literal, its length known at compile time. */
#define MG_HEAD_LIT(h, lit) mg_head_put((h), (lit), sizeof(lit) - 1)

static inline void mg_head_puts(struct mg_head *h, const char *s) {
  mg_head_put(h, s, strlen(s));
}

/* Decimal digits of v. */
void mg_head_u64(struct mg_head *h, uint64_t v);

/* Status line, date and server. */
void mg_head_begin(struct mg_head *h, int status, const char *date);
/* content-type, framing (content_length >= 0; -1 chunked; -2 close-
 * delimited), connection: close when closing, extra ("name: value\r\n"
 * lines or NULL), then the blank line. */
void mg_head_end(struct mg_head *h, const char *content_type,
                 int64_t content_length, bool close, const char *extra);

/* An IMF-fixdate for the Date header (RFC 9110, 5.6.7) of unix time t. */
void mg_http_date(char out[40], int64_t t);

#endif
