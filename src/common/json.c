/* json.c - strict RFC 8259 scanner, token accessors and the canonical form.
 *
 * The scanner validates and tokenises in one pass over the bytes with an
 * explicit stack of open containers, so hostile nesting costs a bounded
 * amount of C stack. Tokens live in the doc's growable array, which is kept
 * across parses: a connection that parses one body after another allocates
 * only when a body needs more tokens than any before it.
 *
 * Everything after the scanner (accessors, decoding, canonical form) trusts
 * that the tokens came from a successful parse of d->src, but still never
 * reads outside a token's bytes.
 *
 * Numbers are converted with strtod and printed with snprintf, which follow
 * LC_NUMERIC: the program must leave it at "C" (it never calls setlocale).
 */
#include "common/json.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Scanner                                                                   */

/* Byte classes inside a string. Everything but S_PLAIN needs a closer look;
 * bytes >= 0x80 start (or wrongly continue) a UTF-8 sequence. */
enum { S_PLAIN = 0, S_QUOTE, S_BSLASH, S_CTRL, S_HIGH };

static const uint8_t str_class[256] = {
    /* 0x00-0x1f: control characters must be escaped (RFC 8259 section 7) */
    S_CTRL, S_CTRL, S_CTRL, S_CTRL, S_CTRL, S_CTRL, S_CTRL, S_CTRL,
    S_CTRL, S_CTRL, S_CTRL, S_CTRL, S_CTRL, S_CTRL, S_CTRL, S_CTRL,
    S_CTRL, S_CTRL, S_CTRL, S_CTRL, S_CTRL, S_CTRL, S_CTRL, S_CTRL,
    S_CTRL, S_CTRL, S_CTRL, S_CTRL, S_CTRL, S_CTRL, S_CTRL, S_CTRL,
    ['"'] = S_QUOTE,
    ['\\'] = S_BSLASH,
    [0x80] = S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH,
    S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH,
    S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH,
    S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH,
    S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH,
    S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH,
    S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH,
    S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH,
    S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH,
    S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH,
    S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH,
    S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH,
    S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH,
    S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH,
    S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH,
    S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH, S_HIGH,
};

#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

/* Does any of the 8 bytes in x need a closer look inside a string (control
 * character, '"', '\\' or a byte >= 0x80)? The "has a zero byte" trick can
 * flag bytes above a true hit, never a word without one, which is all the
 * caller needs: it then walks the word byte by byte. */
static inline bool word_special(uint64_t x) {
  uint64_t q = x ^ (ONES * '"');
  uint64_t b = x ^ (ONES * '\\');
  uint64_t ctl = (x - ONES * 0x20) & ~x;
  q = (q - ONES) & ~q;
  b = (b - ONES) & ~b;
  return ((x | ctl | q | b) & HIGHS) != 0;
}

static inline bool is_digit(unsigned char c) {
  return (unsigned)(c - '0') < 10;
}

static inline int hex_val(unsigned char c) {
  if (is_digit(c))
    return c - '0';
  c |= 0x20;
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

/* Four hex digits at p (the caller checked they are in bounds), or -1. */
static inline int32_t hex4(const unsigned char *p) {
  int a = hex_val(p[0]), b = hex_val(p[1]), c = hex_val(p[2]), e = hex_val(p[3]);
  if ((a | b | c | e) < 0)
    return -1;
  return (int32_t)((a << 12) | (b << 8) | (c << 4) | e);
}

static inline const unsigned char *skip_ws(const unsigned char *p,
                                           const unsigned char *e) {
  /* RFC 8259 whitespace only: cJSON and others skip any byte <= 0x20. */
  while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
    p++;
  return p;
}

/* Where and why a scan failed. */
struct scan_err {
  const unsigned char *at; /* borrowed: points into the scanned bytes */
  const char *msg;         /* static text */
};

/* Validate one UTF-8 sequence starting at p (a byte >= 0x80) following
 * Unicode's table 3-7 of well-formed sequences: no overlong forms, no
 * encoded surrogates, nothing past U+10FFFF. Returns its length or 0. */
static inline size_t utf8_seq(const unsigned char *p, const unsigned char *e) {
  unsigned char c = p[0], lo = 0x80, hi = 0xBF;
  size_t avail = (size_t)(e - p);

  if (c < 0xC2)
    return 0; /* stray continuation byte or overlong 2-byte lead */
  if (c < 0xE0) {
    if (avail < 2 || p[1] < 0x80 || p[1] > 0xBF)
      return 0;
    return 2;
  }
  if (c < 0xF0) {
    if (c == 0xE0)
      lo = 0xA0; /* overlong */
    else if (c == 0xED)
      hi = 0x9F; /* U+D800..U+DFFF */
    if (avail < 3 || p[1] < lo || p[1] > hi || p[2] < 0x80 || p[2] > 0xBF)
      return 0;
    return 3;
  }
  if (c < 0xF5) {
    if (c == 0xF0)
      lo = 0x90; /* overlong */
    else if (c == 0xF4)
      hi = 0x8F; /* past U+10FFFF */
    if (avail < 4 || p[1] < lo || p[1] > hi || p[2] < 0x80 || p[2] > 0xBF ||
        p[3] < 0x80 || p[3] > 0xBF)
      return 0;
    return 4;
  }
  return 0;
}

/* Scan a string whose opening quote is at p. Returns the position after the
 * closing quote, or NULL with *er set. *escaped is set when the string holds
 * a backslash escape. */
static const unsigned char *scan_string(const unsigned char *p,
                                        const unsigned char *e,
                                        uint8_t *escaped,
                                        struct scan_err *er) {
  const unsigned char *open = p++;

  for (;;) {
    /* Typical bodies are long runs of plain ASCII: skip them a word at a
     * time, then find the interesting byte one at a time. */
    while (e - p >= 8) {
      uint64_t x;
      memcpy(&x, p, sizeof(x));
      if (word_special(x))
        break;
      p += 8;
    }
    while (p < e && str_class[*p] == S_PLAIN)
      p++;
    if (p >= e) {
      er->at = open;
      er->msg = "unterminated string";
      return NULL;
    }
    switch (str_class[*p]) {
    case S_QUOTE:
      return p + 1;
    case S_BSLASH:
      if (e - p < 2) {
        er->at = open;
        er->msg = "unterminated string";
        return NULL;
      }
      switch (p[1]) {
      case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r':
      case 't':
        p += 2;
        break;
      case 'u':
        /* Lone surrogates (\ud800) are grammatical (RFC 8259 section 8.2);
         * decoding turns them into U+FFFD. */
        if (e - p < 6 || hex4(p + 2) < 0) {
          er->at = p;
          er->msg = "invalid \\u escape";
          return NULL;
        }
        p += 6;
        break;
      default:
        er->at = p;
        er->msg = "invalid escape";
        return NULL;
      }
      *escaped = 1;
      break;
    case S_CTRL:
      er->at = p;
      er->msg = "control character in string";
      return NULL;
    default: { /* S_HIGH */
      size_t n = utf8_seq(p, e);
      if (n == 0) {
        er->at = p;
        er->msg = "invalid UTF-8";
        return NULL;
      }
      p += n;
      break;
    }
    }
  }
}

/* Scan -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at p. */
static const unsigned char *scan_number(const unsigned char *p,
                                        const unsigned char *e,
                                        struct scan_err *er) {
  if (*p == '-')
    p++;
  if (p < e && *p == '0') {
    p++;
    /* "01" would otherwise surface as a puzzling "trailing characters". */
    if (p < e && is_digit(*p))
      goto bad;
  } else if (p < e && is_digit(*p)) {
    while (p < e && is_digit(*p))
      p++;
  } else {
    goto bad;
  }
  if (p < e && *p == '.') {
    p++;
    if (p >= e || !is_digit(*p))
      goto bad;
    while (p < e && is_digit(*p))
      p++;
  }
  if (p < e && (*p | 0x20) == 'e') {
    p++;
    if (p < e && (*p == '+' || *p == '-'))
      p++;
    if (p >= e || !is_digit(*p))
      goto bad;
    while (p < e && is_digit(*p))
      p++;
  }
  return p;
bad:
  er->at = p;
  er->msg = "invalid number";
  return NULL;
}

/* Make room for one more token: 0 or a MG_JSON_E* code. */
static int tok_room(struct mg_json_doc *d) {
  uint32_t cap;
  struct mg_json_tok *t;

  if (d->n >= d->max_tokens)
    return MG_JSON_ETOOMANY;
  if (d->n < d->cap)
    return 0;
  cap = d->cap ? d->cap : 64;
  while (cap <= d->n && cap < UINT32_MAX / 2)
    cap *= 2;
  /* Never allocate far past what the ceiling allows. */
  if (cap > d->max_tokens)
    cap = d->max_tokens;
  t = realloc(d->toks, (size_t)cap * sizeof(*t));
  if (t == NULL)
    return MG_JSON_ENOMEM;
  d->toks = t;
  d->cap = cap;
  return 0;
}

void mg_json_init(struct mg_json_doc *d, uint32_t max_tokens) {
  d->src = NULL;
  d->len = 0;
  d->toks = NULL;
  d->n = 0;
  d->cap = 0;
  d->max_tokens = max_tokens;
}

void mg_json_free(struct mg_json_doc *d) {
  free(d->toks);
  d->toks = NULL;
  d->n = 0;
  d->cap = 0;
  d->src = NULL;
  d->len = 0;
}

void mg_json_shrink(struct mg_json_doc *d, uint32_t keep) {
  if (d->cap <= keep)
    return;
  /* The tokens of the last parse are gone with the memory. */
  free(d->toks);
  d->toks = NULL;
  d->n = 0;
  d->cap = 0;
  d->src = NULL;
  d->len = 0;
}

int mg_json_parse(struct mg_json_doc *d, const char *src, size_t len,
                  struct mg_json_error *err) {
  uint32_t stack[MG_JSON_MAX_DEPTH]; /* indexes of the open containers */
  unsigned depth = 0;
  const unsigned char *s, *p, *e;
  struct mg_json_tok *t;
  struct scan_err er = {NULL, NULL};
  uint32_t idx;
  int rc = MG_JSON_EINVAL;

  /* A NULL pointer is an empty (invalid) document; keep the pointer
   * arithmetic below defined. */
  if (src == NULL) {
    src = "";
    len = 0;
  }
  d->src = src;
  d->len = len;
  d->n = 0;
  s = p = (const unsigned char *)src;
  e = s; /* set properly once len is known to fit */

  /* Offsets are 32-bit. */
  if (len > UINT32_MAX) {
    er.at = s;
    er.msg = "document too large";
    goto fail;
  }
  e = s + len;

value:
  /* Expecting a value: at the root, after '[', ',' in an array, or ':'. */
  p = skip_ws(p, e);
  if (p >= e) {
    er.at = p;
    er.msg = "expected value";
    goto fail;
  }
  if ((rc = tok_room(d)) != 0)
    goto fail_code;
  rc = MG_JSON_EINVAL;
  idx = d->n++;
  t = &d->toks[idx];
  t->start = (uint32_t)(p - s);
  t->next = idx + 1;
  t->count = 0;
  t->escaped = 0;
  switch (*p) {
  case '{':
  case '[':
    t->type = *p == '{' ? MG_JSON_OBJECT : MG_JSON_ARRAY;
    if (depth == MG_JSON_MAX_DEPTH) {
      rc = MG_JSON_EDEPTH;
      er.at = p;
      er.msg = "nested too deeply";
      goto fail;
    }
    stack[depth++] = idx;
    p = skip_ws(p + 1, e);
    if (p < e && *p == (t->type == MG_JSON_OBJECT ? '}' : ']'))
      goto after_value; /* the loop below closes the empty container */
    t->count = 1;
    if (t->type == MG_JSON_OBJECT)
      goto key;
    goto value;
  case '"':
    t->type = MG_JSON_STRING;
    if ((p = scan_string(p, e, &t->escaped, &er)) == NULL)
      goto fail;
    break;
  case '-': case '0': case '1': case '2': case '3': case '4': case '5':
  case '6': case '7': case '8': case '9':
    t->type = MG_JSON_NUMBER;
    if ((p = scan_number(p, e, &er)) == NULL)
      goto fail;
    break;
  case 't':
    t->type = MG_JSON_TRUE;
    if (e - p < 4 || memcmp(p, "true", 4) != 0)
      goto bad_literal;
    p += 4;
    break;
  case 'f':
    t->type = MG_JSON_FALSE;
    if (e - p < 5 || memcmp(p, "false", 5) != 0)
      goto bad_literal;
    p += 5;
    break;
  case 'n':
    t->type = MG_JSON_NULL;
    if (e - p < 4 || memcmp(p, "null", 4) != 0)
      goto bad_literal;
    p += 4;
    break;
  default:
    er.at = p;
    er.msg = "expected value";
    goto fail;
  }
  t->end = (uint32_t)(p - s);

after_value:
  /* A value just ended: close containers or move to the next member. */
  while (depth > 0) {
    struct mg_json_tok *top = &d->toks[stack[depth - 1]];
    char closer = top->type == MG_JSON_OBJECT ? '}' : ']';

    p = skip_ws(p, e);
    if (p < e && *p == ',') {
      top->count++;
      p++;
      if (top->type == MG_JSON_OBJECT)
        goto key;
      goto value;
    }
    if (p < e && *p == closer) {
      p++;
      top->end = (uint32_t)(p - s);
      top->next = d->n;
      depth--;
      continue;
    }
    er.at = p;
    er.msg = top->type == MG_JSON_OBJECT ? "expected ',' or '}'"
                                         : "expected ',' or ']'";
    goto fail;
  }
  p = skip_ws(p, e);
  if (p != e) {
    er.at = p;
    er.msg = "trailing characters";
    goto fail;
  }
  return 0;

key:
  /* Object member: "key" ws ':' then the value. Duplicate keys are not the
   * scanner's business: callers decide (mg_json_get takes the first). */
  p = skip_ws(p, e);
  if (p >= e || *p != '"') {
    er.at = p;
    er.msg = "expected string key";
    goto fail;
  }
  if ((rc = tok_room(d)) != 0)
    goto fail_code;
  rc = MG_JSON_EINVAL;
  idx = d->n++;
  t = &d->toks[idx];
  t->type = MG_JSON_STRING;
  t->start = (uint32_t)(p - s);
  t->next = idx + 1;
  t->count = 0;
  t->escaped = 0;
  if ((p = scan_string(p, e, &t->escaped, &er)) == NULL)
    goto fail;
  t->end = (uint32_t)(p - s);
  p = skip_ws(p, e);
  if (p >= e || *p != ':') {
    er.at = p;
    er.msg = "expected ':'";
    goto fail;
  }
  p++;
  goto value;

bad_literal:
  er.at = p;
  er.msg = "invalid literal";
  goto fail;

fail_code:
  er.at = p;
  er.msg = rc == MG_JSON_ETOOMANY ? "too many tokens" : "out of memory";
fail:
  /* Never leave half a token array for a caller to trip over. */
  d->n = 0;
  if (err) {
    err->offset = (size_t)(er.at - s);
    err->msg = er.msg;
  }
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Strings                                                                   */

/* Decode the escape at p (p[0] == '\\') into a code point. Surrogate pairs
 * become one code point and lone surrogates U+FFFD. Returns the bytes
 * consumed; never reads at or past e, even on bytes the scanner would have
 * refused. */
static size_t esc_decode(const char *p, const char *e, uint32_t *cp) {
  const unsigned char *u = (const unsigned char *)p;
  int32_t hi, lo;

  if (e - p < 2) {
    *cp = 0xFFFD;
    return (size_t)(e - p);
  }
  switch (u[1]) {
  case 'b': *cp = '\b'; return 2;
  case 'f': *cp = '\f'; return 2;
  case 'n': *cp = '\n'; return 2;
  case 'r': *cp = '\r'; return 2;
  case 't': *cp = '\t'; return 2;
  case 'u':
    break;
  default:
    *cp = u[1]; /* '"', '\\', '/' */
    return 2;
  }
  if (e - p < 6 || (hi = hex4(u + 2)) < 0) {
    *cp = 0xFFFD;
    return 2;
  }
  if (hi >= 0xD800 && hi <= 0xDBFF && e - p >= 12 && u[6] == '\\' &&
      u[7] == 'u' && (lo = hex4(u + 8)) >= 0xDC00 && lo <= 0xDFFF) {
    *cp = 0x10000 + (((uint32_t)hi - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
    return 12;
  }
  *cp = (hi >= 0xD800 && hi <= 0xDFFF) ? 0xFFFD : (uint32_t)hi;
  return 6;
}

/* UTF-8 encoding of cp (never a surrogate here) into out[4]; its length. */
static size_t utf8_put(uint32_t cp, unsigned char *out) {
  if (cp < 0x80) {
    out[0] = (unsigned char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (unsigned char)(0xC0 | (cp >> 6));
    out[1] = (unsigned char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (unsigned char)(0xE0 | (cp >> 12));
    out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (unsigned char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (unsigned char)(0xF0 | (cp >> 18));
  out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
  out[3] = (unsigned char)(0x80 | (cp & 0x3F));
  return 4;
}

/* Unescape the n bytes of a string body at p into dst (which has room for
 * the result), or only measure it when dst is NULL. Returns the decoded
 * length, which is never more than n. */
static size_t str_unescape(const char *p, size_t n, char *dst) {
  const char *e = p + n;
  size_t len = 0;

  while (p < e) {
    const char *bs = memchr(p, '\\', (size_t)(e - p));
    size_t run = (size_t)((bs ? bs : e) - p);
    unsigned char tmp[4];
    uint32_t cp;
    size_t k;

    if (dst && run)
      memcpy(dst + len, p, run);
    len += run;
    if (bs == NULL)
      break;
    p = bs + esc_decode(bs, e, &cp);
    k = utf8_put(cp, tmp);
    if (dst)
      memcpy(dst + len, tmp, k);
    len += k;
  }
  return len;
}

/* Byte-at-a-time view of an unescaped string, for the comparisons that
 * cannot use memcmp (escaped keys, JSON pointer segments with '~'). */
struct str_iter {
  const char *p, *e;    /* borrowed: the rest of the string body */
  unsigned char buf[4]; /* the current escape's UTF-8 bytes */
  unsigned nb, ib;      /* bytes in buf, next byte of buf to return */
};

static void str_iter_init(struct str_iter *it, const char *p, size_t n) {
  it->p = p;
  it->e = p + n;
  it->nb = it->ib = 0;
}

/* Next unescaped byte, or -1 at the end. */
static int str_iter_next(struct str_iter *it) {
  uint32_t cp;

  if (it->ib < it->nb)
    return it->buf[it->ib++];
  if (it->p >= it->e)
    return -1;
  if (*it->p != '\\')
    return (unsigned char)*it->p++;
  it->p += esc_decode(it->p, it->e, &cp);
  it->nb = (unsigned)utf8_put(cp, it->buf);
  it->ib = 1;
  return it->buf[0];
}

static inline bool is_str(const struct mg_json_doc *d, uint32_t i) {
  return i < d->n && d->toks[i].type == MG_JSON_STRING;
}

/* The body of string token t, without quotes. */
static inline struct mg_str tok_body(const struct mg_json_doc *d,
                                     const struct mg_json_tok *t) {
  struct mg_str r = {d->src + t->start + 1, t->end - t->start - 2};
  return r;
}

/* Does string token t unescape to s[0..n)? */
static bool tok_eq(const struct mg_json_doc *d, const struct mg_json_tok *t,
                   const char *s, size_t n) {
  struct mg_str b = tok_body(d, t);
  struct str_iter it;
  size_t j;
  int c;

  if (!t->escaped)
    return b.len == n && (n == 0 || memcmp(b.p, s, n) == 0);
  /* Unescaping never lengthens a string. */
  if (n > b.len)
    return false;
  str_iter_init(&it, b.p, b.len);
  for (j = 0; (c = str_iter_next(&it)) >= 0; j++)
    if (j >= n || (unsigned char)s[j] != c)
      return false;
  return j == n;
}

struct mg_str mg_json_raw(const struct mg_json_doc *d, uint32_t i) {
  struct mg_str r = MG_STR_NULL;
  if (i < d->n) {
    r.p = d->src + d->toks[i].start;
    r.len = d->toks[i].end - d->toks[i].start;
  }
  return r;
}

struct mg_str mg_json_str_raw(const struct mg_json_doc *d, uint32_t i) {
  if (!is_str(d, i))
    return MG_STR_NULL;
  return tok_body(d, &d->toks[i]);
}

bool mg_json_str_eq(const struct mg_json_doc *d, uint32_t i, const char *s,
                    size_t n) {
  return is_str(d, i) && tok_eq(d, &d->toks[i], s, n);
}

int mg_json_str_decode(const struct mg_json_doc *d, uint32_t i,
                       struct mg_buf *out) {
  struct mg_str b;
  size_t n;
  int rc;

  if (!is_str(d, i))
    return -EINVAL;
  b = tok_body(d, &d->toks[i]);
  if (!d->toks[i].escaped)
    return mg_buf_append(out, b.p, b.len);
  /* Measure first so the ceiling applies to the decoded size, not the
   * (larger) escaped one. */
  n = str_unescape(b.p, b.len, NULL);
  if ((rc = mg_buf_reserve(out, n)) != 0)
    return rc;
  str_unescape(b.p, b.len, out->data + out->len);
  out->len += n;
  out->data[out->len] = '\0';
  return 0;
}

size_t mg_json_str_chars(const struct mg_json_doc *d, uint32_t i) {
  struct mg_str b;
  const char *p, *e;
  size_t n = 0;

  if (!is_str(d, i))
    return 0;
  b = tok_body(d, &d->toks[i]);
  p = b.p;
  e = b.p + b.len;
  /* The scanner guaranteed well-formed UTF-8, so every byte that is not a
   * continuation byte (10xxxxxx) starts a code point; an escape (or a
   * surrogate pair of them) is one code point. This runs for every request
   * (input.chars), so words without a backslash are counted 8 bytes at a
   * time. */
  while (p < e) {
    unsigned char c;
    while (e - p >= 8) {
      uint64_t x, bs, cont;
      memcpy(&x, p, sizeof(x));
      bs = x ^ (ONES * '\\');
      if (((bs - ONES) & ~bs & HIGHS) != 0)
        break;
      /* High bit set and the next bit clear, one flag bit per byte;
       * multiplying by ONES sums the eight flags into the top byte. */
      cont = (x & ~(x << 1) & HIGHS) >> 7;
      n += 8 - (size_t)((cont * ONES) >> 56);
      p += 8;
    }
    if (p >= e)
      break;
    c = (unsigned char)*p;
    if (c == '\\') {
      uint32_t cp;
      p += esc_decode(p, e, &cp);
      n++;
    } else {
      n += (c & 0xC0) != 0x80;
      p++;
    }
  }
  return n;
}

/* ------------------------------------------------------------------------ */
/* Navigation                                                                */

uint32_t mg_json_get(const struct mg_json_doc *d, uint32_t obj,
                     const char *key, size_t klen) {
  uint32_t k, c;

  if (obj >= d->n || d->toks[obj].type != MG_JSON_OBJECT)
    return MG_JSON_NOTFOUND;
  k = obj + 1;
  for (c = 0; c < d->toks[obj].count; c++) {
    if (tok_eq(d, &d->toks[k], key, klen))
      return k + 1;
    k = d->toks[k + 1].next;
  }
  return MG_JSON_NOTFOUND;
}

uint32_t mg_json_at(const struct mg_json_doc *d, uint32_t arr, uint32_t i) {
  uint32_t k;

  if (arr >= d->n || d->toks[arr].type != MG_JSON_ARRAY ||
      i >= d->toks[arr].count)
    return MG_JSON_NOTFOUND;
  k = arr + 1;
  while (i--)
    k = d->toks[k].next;
  return k;
}

/* Is string token t equal to the RFC 6901 reference token seg[0..n) once
 * both are unescaped ("~1" is '/', "~0" is '~')? */
static bool tok_eq_ptr(const struct mg_json_doc *d,
                       const struct mg_json_tok *t, const char *seg,
                       size_t n) {
  struct mg_str b;
  struct str_iter it;
  size_t j = 0;
  int c;

  if (memchr(seg, '~', n) == NULL)
    return tok_eq(d, t, seg, n);
  b = tok_body(d, t);
  str_iter_init(&it, b.p, b.len);
  while ((c = str_iter_next(&it)) >= 0) {
    int want;
    if (j >= n)
      return false;
    want = (unsigned char)seg[j++];
    if (want == '~')
      want = seg[j++] == '1' ? '/' : '~'; /* validated by the caller */
    if (c != want)
      return false;
  }
  return j == n;
}

uint32_t mg_json_pointer(const struct mg_json_doc *d, uint32_t root,
                         const char *ptr) {
  uint32_t cur = root;
  const char *p = ptr;

  if (root >= d->n || ptr == NULL)
    return MG_JSON_NOTFOUND;
  while (*p) {
    const struct mg_json_tok *t = &d->toks[cur];
    const char *seg;
    size_t n, j;

    if (*p != '/')
      return MG_JSON_NOTFOUND;
    seg = ++p;
    n = strcspn(seg, "/");
    p += n;
    /* A '~' not followed by '0' or '1' makes the whole pointer invalid. */
    for (j = 0; j < n; j++)
      if (seg[j] == '~' && (j + 1 >= n || (seg[j + 1] != '0' && seg[j + 1] != '1')))
        return MG_JSON_NOTFOUND;

    if (t->type == MG_JSON_OBJECT) {
      uint32_t k = cur + 1, c, found = MG_JSON_NOTFOUND;
      for (c = 0; c < t->count; c++) {
        if (tok_eq_ptr(d, &d->toks[k], seg, n)) {
          found = k + 1;
          break;
        }
        k = d->toks[k + 1].next;
      }
      if (found == MG_JSON_NOTFOUND)
        return MG_JSON_NOTFOUND;
      cur = found;
    } else if (t->type == MG_JSON_ARRAY) {
      uint64_t idx = 0;
      /* Array indexes are "0" or digits without a leading zero; "-" (past
       * the end) never names an existing element. */
      if (n == 0 || (n > 1 && seg[0] == '0'))
        return MG_JSON_NOTFOUND;
      for (j = 0; j < n; j++) {
        if (!is_digit((unsigned char)seg[j]))
          return MG_JSON_NOTFOUND;
        idx = idx * 10 + (uint64_t)(seg[j] - '0');
        if (idx >= t->count)
          return MG_JSON_NOTFOUND;
      }
      cur = mg_json_at(d, cur, (uint32_t)idx);
    } else {
      return MG_JSON_NOTFOUND;
    }
  }
  return cur;
}

/* ------------------------------------------------------------------------ */
/* Numbers                                                                   */

/* strtod over a token that is not NUL-terminated in the source. Returns 0,
 * or -ENOMEM for an absurdly long number that does not fit the stack copy. */
static int num_parse(const char *p, size_t n, double *out) {
  char small[64];
  char *buf = small;

  if (n >= sizeof(small)) {
    buf = malloc(n + 1);
    if (buf == NULL)
      return -ENOMEM;
  }
  memcpy(buf, p, n);
  buf[n] = '\0';
  /* Out-of-range values come back as +-HUGE_VAL or a (sub)normal near 0,
   * which is the double the text rounds to; errno is irrelevant. */
  *out = strtod(buf, NULL);
  if (buf != small)
    free(buf);
  return 0;
}

int mg_json_num(const struct mg_json_doc *d, uint32_t i, double *out) {
  const struct mg_json_tok *t;

  if (i >= d->n || d->toks[i].type != MG_JSON_NUMBER)
    return -EINVAL;
  t = &d->toks[i];
  return num_parse(d->src + t->start, t->end - t->start, out);
}

int mg_json_int(const struct mg_json_doc *d, uint32_t i, int64_t *out) {
  const char *p, *e, *ip, *fp = NULL;
  size_t ilen, flen = 0, L, z, k, drop;
  int64_t exp = 0, E;
  uint64_t v = 0;
  bool neg, eneg = false;

  if (i >= d->n || d->toks[i].type != MG_JSON_NUMBER)
    return -EINVAL;
  p = d->src + d->toks[i].start;
  e = d->src + d->toks[i].end;

  /* Work in decimal, not through a double: int64 has more precision than
   * a double's 53 bits. The value is digits(int part . frac part) times
   * 10^(exp - flen); only the digit positions matter. */
  neg = *p == '-';
  if (neg)
    p++;
  ip = p;
  while (p < e && is_digit((unsigned char)*p))
    p++;
  ilen = (size_t)(p - ip);
  if (p < e && *p == '.') {
    fp = ++p;
    while (p < e && is_digit((unsigned char)*p))
      p++;
    flen = (size_t)(p - fp);
  }
  if (p < e && (*p | 0x20) == 'e') {
    p++;
    if (p < e && (*p == '+' || *p == '-'))
      eneg = *p++ == '-';
    /* Saturate far above any digit count a 4 GiB document can hold. */
    for (; p < e; p++)
      if (exp < INT64_C(1000000000000))
        exp = exp * 10 + (*p - '0');
  }
#define DIGIT(k) ((k) < ilen ? ip[(k)] : fp[(k) - ilen])
  L = ilen + flen;
  for (z = 0; z < L && DIGIT(z) == '0'; z++)
    ;
  if (z == L) { /* zero, whatever its exponent or sign */
    *out = 0;
    return 0;
  }
  E = (eneg ? -exp : exp) - (int64_t)flen;
  if (E < 0) {
    /* The last -E significant digits move behind the decimal point: they
     * must all be zero, and at least one non-zero digit must stay. */
    if ((uint64_t)-E >= L - z)
      return -EINVAL;
    drop = (size_t)-E;
    for (k = L - drop; k < L; k++)
      if (DIGIT(k) != '0')
        return -EINVAL;
    L -= drop;
    E = 0;
  }
  /* No leading zero from z on, so L - z + E digits is at least
   * 10^(L - z + E - 1): 20 digits are past any int64. */
  if ((uint64_t)E > 19 || L - z + (size_t)E > 19)
    return -ERANGE;
  for (k = z; k < L; k++)
    v = v * 10 + (uint64_t)(DIGIT(k) - '0');
  for (; E > 0; E--)
    v *= 10;
#undef DIGIT
  if (neg) {
    if (v > (uint64_t)INT64_MAX + 1)
      return -ERANGE;
    *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
  } else {
    if (v > (uint64_t)INT64_MAX)
      return -ERANGE;
    *out = (int64_t)v;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Canonical form                                                            */

/* One object member while sorting. */
struct canon_member {
  const char *key; /* borrowed: into d->src, or into the scratch buffer */
  size_t klen;     /* unescaped length */
  size_t off;      /* offset in the scratch buffer, for escaped keys */
  uint32_t kidx;   /* key token; also document order for equal keys */
};

static int canon_member_cmp(const void *a, const void *b) {
  const struct canon_member *x = a, *y = b;
  size_t n = x->klen < y->klen ? x->klen : y->klen;
  int r = n ? memcmp(x->key, y->key, n) : 0;

  if (r)
    return r;
  if (x->klen != y->klen)
    return x->klen < y->klen ? -1 : 1;
  /* Duplicate keys keep document order so the sort is deterministic. */
  return x->kidx < y->kidx ? -1 : x->kidx > y->kidx;
}

/* Append string token t quoted, with only '"', '\\' and control characters
 * escaped (short forms where JSON has them, else \u00xx). Unescaped bytes of
 * a scanned string contain none of those, so they are copied as they are. */
static int canon_string(const struct mg_json_doc *d,
                        const struct mg_json_tok *t, struct mg_buf *out) {
  static const char hex[] = "0123456789abcdef";
  struct mg_str b = tok_body(d, t);
  const char *p = b.p, *e = b.p + b.len;
  int rc;

  if ((rc = mg_buf_append(out, "\"", 1)) != 0)
    return rc;
  while (p < e) {
    const char *bs = memchr(p, '\\', (size_t)(e - p));
    size_t run = (size_t)((bs ? bs : e) - p);
    unsigned char tmp[6];
    size_t k;
    uint32_t cp;

    if (run && (rc = mg_buf_append(out, p, run)) != 0)
      return rc;
    if (bs == NULL)
      break;
    p = bs + esc_decode(bs, e, &cp);
    k = 2;
    tmp[0] = '\\';
    switch (cp) {
    case '"': tmp[1] = '"'; break;
    case '\\': tmp[1] = '\\'; break;
    case '\b': tmp[1] = 'b'; break;
    case '\f': tmp[1] = 'f'; break;
    case '\n': tmp[1] = 'n'; break;
    case '\r': tmp[1] = 'r'; break;
    case '\t': tmp[1] = 't'; break;
    default:
      if (cp < 0x20) {
        memcpy(tmp + 1, "u00", 3);
        tmp[4] = (unsigned char)hex[cp >> 4];
        tmp[5] = (unsigned char)hex[cp & 15];
        k = 6;
      } else {
        k = utf8_put(cp, tmp);
      }
    }
    if ((rc = mg_buf_append(out, tmp, k)) != 0)
      return rc;
  }
  return mg_buf_append(out, "\"", 1);
}

static int canon_number(const struct mg_json_doc *d,
                        const struct mg_json_tok *t, struct mg_buf *out) {
  char tmp[40];
  double x;
  int rc, prec;

  if ((rc = num_parse(d->src + t->start, t->end - t->start, &x)) != 0)
    return rc;
  /* Every spelling past DBL_MAX is the same double; print one that parses
   * back to it and is still valid JSON. */
  if (isinf(x))
    return mg_buf_puts(out, x < 0 ? "-1e999" : "1e999");
  /* Integral and exactly representable: print as an integer (this also
   * turns -0 into 0). */
  if (x > -9007199254740992.0 && x < 9007199254740992.0 &&
      x == (double)(int64_t)x)
    return mg_buf_printf(out, "%" PRId64, (int64_t)x);
  /* The shortest of 15, 16, 17 significant digits that round-trips;
   * 17 always does. */
  for (prec = 15; prec < 17; prec++) {
    snprintf(tmp, sizeof(tmp), "%.*g", prec, x);
    if (strtod(tmp, NULL) == x)
      break;
  }
  snprintf(tmp, sizeof(tmp), "%.*g", prec, x);
  return mg_buf_puts(out, tmp);
}

static bool skip_key(const char *k, size_t n, const char *const *skip) {
  for (; skip && *skip; skip++)
    if (strlen(*skip) == n && (n == 0 || memcmp(*skip, k, n) == 0))
      return true;
  return false;
}

static int canon_value(const struct mg_json_doc *d, uint32_t i,
                       const char *const *skip, struct mg_buf *out);

static int canon_object(const struct mg_json_doc *d, uint32_t i,
                        const char *const *skip, struct mg_buf *out) {
  const struct mg_json_tok *t = &d->toks[i];
  struct canon_member *m = NULL;
  struct mg_buf keys; /* unescaped escaped-keys, back to back */
  uint32_t c, k, nm = 0;
  bool first = true;
  int rc = 0;

  /* Unescaped keys are never longer than the document holding them. */
  mg_buf_init(&keys, d->len);
  if (t->count == 0)
    return mg_buf_append(out, "{}", 2);
  m = malloc((size_t)t->count * sizeof(*m));
  if (m == NULL)
    return -ENOMEM;
  for (c = 0, k = i + 1; c < t->count; c++, k = d->toks[k + 1].next) {
    const struct mg_json_tok *kt = &d->toks[k];
    m[nm].kidx = k;
    if (!kt->escaped) {
      struct mg_str b = tok_body(d, kt);
      m[nm].key = b.p;
      m[nm].klen = b.len;
    } else {
      /* Pointers into keys.data are fixed up after the last realloc. */
      m[nm].key = NULL;
      m[nm].off = keys.len;
      if ((rc = mg_json_str_decode(d, k, &keys)) != 0)
        goto out;
      m[nm].klen = keys.len - m[nm].off;
    }
    nm++;
  }
  for (c = 0; c < nm; c++)
    if (m[c].key == NULL)
      m[c].key = keys.data + m[c].off;
  qsort(m, nm, sizeof(*m), canon_member_cmp);

  if ((rc = mg_buf_append(out, "{", 1)) != 0)
    goto out;
  for (c = 0; c < nm; c++) {
    if (skip_key(m[c].key, m[c].klen, skip))
      continue;
    if (!first && (rc = mg_buf_append(out, ",", 1)) != 0)
      goto out;
    first = false;
    if ((rc = canon_string(d, &d->toks[m[c].kidx], out)) != 0 ||
        (rc = mg_buf_append(out, ":", 1)) != 0 ||
        (rc = canon_value(d, m[c].kidx + 1, NULL, out)) != 0)
      goto out;
  }
  rc = mg_buf_append(out, "}", 1);
out:
  free(m);
  mg_buf_free(&keys);
  return rc;
}

/* Recursion is bounded: a parsed document nests at most MG_JSON_MAX_DEPTH
 * deep. */
static int canon_value(const struct mg_json_doc *d, uint32_t i,
                       const char *const *skip, struct mg_buf *out) {
  const struct mg_json_tok *t = &d->toks[i];
  uint32_t c, k;
  int rc;

  switch (t->type) {
  case MG_JSON_OBJECT:
    return canon_object(d, i, skip, out);
  case MG_JSON_ARRAY:
    if ((rc = mg_buf_append(out, "[", 1)) != 0)
      return rc;
    for (c = 0, k = i + 1; c < t->count; c++, k = d->toks[k].next) {
      if (c && (rc = mg_buf_append(out, ",", 1)) != 0)
        return rc;
      if ((rc = canon_value(d, k, NULL, out)) != 0)
        return rc;
    }
    return mg_buf_append(out, "]", 1);
  case MG_JSON_STRING:
    return canon_string(d, t, out);
  case MG_JSON_NUMBER:
    return canon_number(d, t, out);
  case MG_JSON_TRUE:
    return mg_buf_append(out, "true", 4);
  case MG_JSON_FALSE:
    return mg_buf_append(out, "false", 5);
  case MG_JSON_NULL:
    return mg_buf_append(out, "null", 4);
  default:
    return -EINVAL;
  }
}

int mg_json_canonical(const struct mg_json_doc *d, uint32_t i,
                      const char *const *skip_keys, struct mg_buf *out) {
  if (i >= d->n)
    return -EINVAL;
  return canon_value(d, i, skip_keys, out);
}
