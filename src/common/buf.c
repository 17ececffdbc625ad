/* buf.c - growable byte buffers with a hard ceiling. */
#include "common/buf.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mg_buf_init(struct mg_buf *b, size_t max) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
  b->max = max;
}

void mg_buf_free(struct mg_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

void mg_buf_reset(struct mg_buf *b) { mg_buf_truncate(b, 0); }

void mg_buf_truncate(struct mg_buf *b, size_t len) {
  b->len = len;
  if (b->data)
    b->data[len] = '\0';
}

int mg_buf_reserve(struct mg_buf *b, size_t n) {
  size_t need, cap;
  char *p;

  if (n > b->max || b->len > b->max - n)
    return -E2BIG;
  if (b->len + n == SIZE_MAX)
    return -E2BIG; /* no room for the terminator */
  need = b->len + n + 1; /* room for the terminator */
  if (need <= b->cap)
    return 0;
  cap = b->cap ? b->cap : 64;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  /* Never allocate far past the ceiling just because of doubling (a
   * ceiling of SIZE_MAX means none: max + 1 would wrap to 0). */
  if (b->max < SIZE_MAX && cap > b->max + 1)
    cap = b->max + 1;
  p = realloc(b->data, cap);
  if (p == NULL)
    return -ENOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

int mg_buf_append(struct mg_buf *b, const void *p, size_t n) {
  int rc = mg_buf_reserve(b, n);
  if (rc)
    return rc;
  if (n)
    memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

int mg_buf_puts(struct mg_buf *b, const char *s) {
  return mg_buf_append(b, s, strlen(s));
}

int mg_buf_vprintf(struct mg_buf *b, const char *fmt, va_list ap) {
  char small[256];
  va_list ap2;
  int n;

  va_copy(ap2, ap);
  n = vsnprintf(small, sizeof(small), fmt, ap2);
  va_end(ap2);
  if (n < 0)
    return -EINVAL;
  if ((size_t)n < sizeof(small))
    return mg_buf_append(b, small, (size_t)n);
  {
    int rc = mg_buf_reserve(b, (size_t)n);
    if (rc)
      return rc;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
  }
  return 0;
}

int mg_buf_printf(struct mg_buf *b, const char *fmt, ...) {
  va_list ap;
  int rc;
  va_start(ap, fmt);
  rc = mg_buf_vprintf(b, fmt, ap);
  va_end(ap);
  return rc;
}

int mg_buf_json_str(struct mg_buf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  size_t i, run = 0;
  int rc;

  if ((rc = mg_buf_append(b, "\"", 1)))
    return rc;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    char esc[7];
    size_t elen = 0;

    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      elen = 2;
    } else if (c == '\n') {
      memcpy(esc, "\\n", 2);
      elen = 2;
    } else if (c == '\r') {
      memcpy(esc, "\\r", 2);
      elen = 2;
    } else if (c == '\t') {
      memcpy(esc, "\\t", 2);
      elen = 2;
    } else if (c < 0x20 || c == 0x7f) {
      esc[0] = '\\';
      esc[1] = 'u';
      esc[2] = '0';
      esc[3] = '0';
      esc[4] = hex[c >> 4];
      esc[5] = hex[c & 15];
      elen = 6;
    }
    if (elen == 0) {
      run++;
      continue;
    }
    if (run && (rc = mg_buf_append(b, s + i - run, run)))
      return rc;
    run = 0;
    if ((rc = mg_buf_append(b, esc, elen)))
      return rc;
  }
  if (run && (rc = mg_buf_append(b, s + n - run, run)))
    return rc;
  return mg_buf_append(b, "\"", 1);
}

void mg_buf_consume(struct mg_buf *b, size_t n) {
  if (n >= b->len) {
    mg_buf_reset(b);
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
  b->data[b->len] = '\0';
}

char *mg_buf_steal(struct mg_buf *b, size_t *len) {
  char *p = b->data;
  if (len)
    *len = b->len;
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
  return p;
}
