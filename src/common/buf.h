/* buf.h - growable byte buffers with a hard ceiling (after curl's dynbuf). */
#ifndef MG_BUF_H
#define MG_BUF_H

#include <stdarg.h>
#include <stddef.h>

#define MG_WARN_UNUSED __attribute__((warn_unused_result))

struct mg_buf {
  char *data;  /* owned; NUL-terminated when non-NULL; freed by mg_buf_free */
  size_t len;  /* bytes used, excluding the terminator */
  size_t cap;  /* bytes allocated */
  size_t max;  /* ceiling for len; appends past it fail with -E2BIG */
};

/* Initialise an empty buffer that refuses to grow past max bytes. */
void mg_buf_init(struct mg_buf *b, size_t max);
/* Release the memory; the buffer is empty and reusable afterwards. */
void mg_buf_free(struct mg_buf *b);
/* Forget the contents but keep the allocation. */
void mg_buf_reset(struct mg_buf *b);
/* Cut back to len bytes (len <= b->len): undo appends made since. */
void mg_buf_truncate(struct mg_buf *b, size_t len);
/* Make room for at least n more bytes: 0, -ENOMEM or -E2BIG. */
int mg_buf_reserve(struct mg_buf *b, size_t n) MG_WARN_UNUSED;
/* Append n bytes: 0, -ENOMEM or -E2BIG (the buffer is unchanged on error). */
int mg_buf_append(struct mg_buf *b, const void *p, size_t n) MG_WARN_UNUSED;
/* Append a NUL-terminated string. */
int mg_buf_puts(struct mg_buf *b, const char *s) MG_WARN_UNUSED;
/* Append formatted text. */
int mg_buf_printf(struct mg_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3))) MG_WARN_UNUSED;
int mg_buf_vprintf(struct mg_buf *b, const char *fmt, va_list ap) MG_WARN_UNUSED;
/* Append s as a JSON string literal, quotes included. */
int mg_buf_json_str(struct mg_buf *b, const char *s, size_t n) MG_WARN_UNUSED;
/* Drop the first n bytes, moving the rest to the front. */
void mg_buf_consume(struct mg_buf *b, size_t n);
/* Hand the allocation to the caller (NULL when empty); the buffer is reset. */
char *mg_buf_steal(struct mg_buf *b, size_t *len);

#endif
