/* record.c - decision records as JSON lines. Runs once per request, so
 * numbers and timestamps are written by hand rather than with printf. */
#include "decisions/record.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "common/str.h"
#include "common/time.h"

/* ---- the record: an upper bound reserved once, then unchecked writes ---- */

struct w {
  char *p; /* next byte; the room was reserved by the caller */
};

static void w_raw(struct w *w, const char *s, size_t n) {
  memcpy(w->p, s, n);
  w->p += n;
}

#define W_LIT(w, lit) w_raw((w), (lit), sizeof(lit) - 1)

static void w_u64(struct w *w, uint64_t v) {
  char tmp[24], *d = mg_u64_digits(tmp, v);
  w_raw(w, d, (size_t)(tmp + sizeof(tmp) - d));
}

static void w_i64(struct w *w, int64_t v) {
  if (v < 0) {
    *w->p++ = '-';
    v = -v;
  }
  w_u64(w, (uint64_t)v);
}

/* As put_num, for at most 32 bytes of output. */
static void w_num(struct w *w, double v, int decimals) {
  static const uint64_t scale[] = {1,         10,         100,
                                   1000,      10000,      100000,
                                   1000000,   10000000,   100000000,
                                   1000000000, 10000000000};
  uint64_t sc = scale[decimals], x, fp;
  char frac[12];
  int n;
  if (!isfinite(v)) {
    W_LIT(w, "null");
    return;
  }
  if (v < 0 || v >= 1e12) {
    w->p += snprintf(w->p, 32, "%.10g", v);
    return;
  }
  x = (uint64_t)(v * (double)sc + 0.5);
  fp = x % sc;
  w_u64(w, x / sc);
  if (fp == 0 || decimals == 0)
    return;
  for (n = decimals; n > 0; n--) {
    frac[n - 1] = (char)('0' + fp % 10);
    fp /= 10;
  }
  n = decimals;
  while (n > 0 && frac[n - 1] == '0')
    n--;
  *w->p++ = '.';
  w_raw(w, frac, (size_t)n);
}

/* Length of the well-formed UTF-8 sequence at s (s[0] >= 0x80), or 0 when
 * it is not one: overlong forms, surrogates and code points past U+10FFFF
 * are refused as RFC 3629 says. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  if (c >= 0xc2 && c <= 0xdf)
    return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    return n >= 3 && s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 ? 3
                                                                         : 0;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    return n >= 4 && s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 &&
                   (s[3] & 0xc0) == 0x80
               ? 4
               : 0;
  }
  return 0;
}

/* How much of a value the record keeps: a client chooses its user id, its
 * attribute values and its metadata, and a value escaped at 6 bytes a byte
 * must not push its own line past the line buffer, or a client could hide
 * its request from the audit log (issue 10, point 3). The cut falls on a
 * UTF-8 boundary, before a continuation byte. */
static size_t clip_len(const char *s, size_t n) {
  size_t k;
  if (n <= MG_RECORD_VALUE_MAX)
    return n;
  k = MG_RECORD_VALUE_MAX;
  while (k > MG_RECORD_VALUE_MAX - 3 && ((unsigned char)s[k] & 0xc0) == 0x80)
    k--;
  return k;
}

/* The marker after a cut value: U+2026 and the length the client sent. */
#define CLIP_MARK_MAX 48

/* 1 for the bytes that go into a JSON string as they are: printable
 * ASCII but '"' (0x22) and '\\' (0x5c). The rest is escaped, or checked
 * as UTF-8 (0x80 and up, all 0 here). */
static const unsigned char json_safe[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0,
};

/* A JSON string: at most 6 bytes per input byte, plus the quotes. Bytes
 * that are not UTF-8 (a Latin-1 header value, say) become U+FFFD so that
 * every line stays valid JSON. A value longer than MG_RECORD_VALUE_MAX is
 * cut and ends in "\u2026[truncated from N bytes]". */
static void w_str(struct w *w, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  size_t i, run = 0, full = n;
  n = clip_len(s, n);
  *w->p++ = '"';
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (json_safe[c]) {
      run++;
      continue;
    }
    if (c >= 0x80) {
      size_t k = utf8_len((const unsigned char *)s + i, n - i);
      if (k) {
        run += k;
        i += k - 1;
        continue;
      }
      w_raw(w, s + i - run, run);
      run = 0;
      W_LIT(w, "\\ufffd");
      continue;
    }
    w_raw(w, s + i - run, run);
    run = 0;
    *w->p++ = '\\';
    if (c == '"' || c == '\\') {
      *w->p++ = (char)c;
    } else if (c == '\n') {
      *w->p++ = 'n';
    } else if (c == '\r') {
      *w->p++ = 'r';
    } else if (c == '\t') {
      *w->p++ = 't';
    } else {
      *w->p++ = 'u';
      *w->p++ = '0';
      *w->p++ = '0';
      *w->p++ = hex[c >> 4];
      *w->p++ = hex[c & 15];
    }
  }
  w_raw(w, s + n - run, run);
  if (n < full) {
    W_LIT(w, "\\u2026[truncated from ");
    w_u64(w, full);
    W_LIT(w, " bytes]");
  }
  *w->p++ = '"';
}

static void w_cstr(struct w *w, const char *s) {
  if (s == NULL)
    W_LIT(w, "null");
  else
    w_str(w, s, strlen(s));
}

static void w_ts(struct w *w, int64_t ms) {
  /* Per thread: every worker formats its own records. */
  static _Thread_local int64_t cached_sec = INT64_MIN;
  static _Thread_local char cached[32];
  int64_t sec = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
  unsigned frac = (unsigned)(ms - sec * 1000);
  if (sec != cached_sec) {
    mg_rfc3339_format(sec * 1000, cached);
    cached_sec = sec;
  }
  *w->p++ = '"';
  w_raw(w, cached, 19);
  *w->p++ = '.';
  *w->p++ = (char)('0' + frac / 100);
  *w->p++ = (char)('0' + frac / 10 % 10);
  *w->p++ = (char)('0' + frac % 10);
  *w->p++ = 'Z';
  *w->p++ = '"';
}

/* Bytes a string of n bytes takes at most in a record. */
static size_t bound_str(size_t n) {
  return n > MG_RECORD_VALUE_MAX ? MG_RECORD_VALUE_MAX * 6 + CLIP_MARK_MAX + 2
                                 : n * 6 + 2;
}

static size_t bound_cstr(const char *s) { return s ? bound_str(strlen(s)) : 4; }

/* Bytes the record can take at most: every string escaped at 6 bytes a
 * byte, every number at 32. */
static size_t bound(const struct mg_record *r) {
  size_t n = 1024, i;
  n += bound_cstr(r->id) + bound_cstr(r->config) + bound_cstr(r->endpoint) +
       bound_cstr(r->alias) + bound_cstr(r->flag) + bound_cstr(r->unit_kind) +
       bound_cstr(r->variant) + bound_cstr(r->reason) +
       bound_cstr(r->served_by) + bound_cstr(r->tier) +
       bound_cstr(r->fallback_reason) + bound_cstr(r->cache) +
       bound_cstr(r->unit_source) + bound_cstr(r->client) +
       bound_cstr(r->instance) + 256;
  n += r->unit ? bound_str(r->unit_len) : 4;
  for (i = 0; i < r->nweights; i++)
    n += bound_cstr(r->weights[i].variant) + 40;
  for (i = 0; i < r->nattrs; i++)
    n += bound_str(r->attrs[i].name_len) + bound_str(r->attrs[i].value_len) +
         4;
  for (i = 0; i < r->nattempts; i++)
    n += bound_cstr(r->attempts[i].target) +
         bound_cstr(r->attempts[i].outcome) + 160;
  return n;
}

int mg_record_event_begin(struct mg_buf *out, int64_t ts_ms,
                          const char *event) {
  struct w w;
  int rc = mg_buf_reserve(out, 64 + bound_cstr(event));
  if (rc)
    return rc;
  w.p = out->data + out->len;
  W_LIT(&w, "{\"ts\":");
  w_ts(&w, ts_ms);
  W_LIT(&w, ",\"event\":");
  w_cstr(&w, event);
  out->len = (size_t)(w.p - out->data);
  out->data[out->len] = '\0';
  return 0;
}

/* Write the record at p (room for bound(r) bytes); returns its end. */
static char *format_at(const struct mg_record *r, char *p) {
  struct w w;
  size_t i;
  w.p = p;
  W_LIT(&w, "{\"ts\":");
  w_ts(&w, r->ts_ms);
  W_LIT(&w, ",\"id\":");
  w_cstr(&w, r->id);
  W_LIT(&w, ",\"config\":");
  w_cstr(&w, r->config);
  W_LIT(&w, ",\"endpoint\":");
  w_cstr(&w, r->endpoint);
  W_LIT(&w, ",\"alias\":");
  w_cstr(&w, r->alias);
  W_LIT(&w, ",\"flag\":");
  w_cstr(&w, r->flag);
  W_LIT(&w, ",\"unit\":");
  if (r->unit)
    w_str(&w, r->unit, r->unit_len);
  else
    W_LIT(&w, "null");
  W_LIT(&w, ",\"unit_kind\":");
  w_cstr(&w, r->unit_kind);
  W_LIT(&w, ",\"bucket\":");
  if (r->bucket >= 0)
    w_i64(&w, r->bucket);
  else
    W_LIT(&w, "null");
  W_LIT(&w, ",\"variant\":");
  w_cstr(&w, r->variant);
  W_LIT(&w, ",\"reason\":");
  w_cstr(&w, r->reason);
  W_LIT(&w, ",\"weights\":");
  if (r->weights == NULL) {
    W_LIT(&w, "null");
  } else {
    *w.p++ = '{';
    for (i = 0; i < r->nweights; i++) {
      if (i)
        *w.p++ = ',';
      w_cstr(&w, r->weights[i].variant);
      *w.p++ = ':';
      w_num(&w, r->weights[i].bp / 100.0, 2);
    }
    *w.p++ = '}';
  }
  W_LIT(&w, ",\"attrs\":{");
  for (i = 0; i < r->nattrs; i++) {
    if (i)
      *w.p++ = ',';
    w_str(&w, r->attrs[i].name, r->attrs[i].name_len);
    *w.p++ = ':';
    w_str(&w, r->attrs[i].value, r->attrs[i].value_len);
  }
  W_LIT(&w, "},\"input\":{\"chars\":");
  w_u64(&w, r->input_chars);
  W_LIT(&w, ",\"messages\":");
  w_u64(&w, r->input_messages);
  W_LIT(&w, ",\"tools\":");
  w_u64(&w, r->input_tools);
  if (r->input_stream)
    W_LIT(&w, ",\"stream\":true}");
  else
    W_LIT(&w, ",\"stream\":false}");
  W_LIT(&w, ",\"attempts\":[");
  for (i = 0; i < r->nattempts; i++) {
    const struct mg_record_attempt *a = &r->attempts[i];
    if (i)
      *w.p++ = ',';
    W_LIT(&w, "{\"target\":");
    w_cstr(&w, a->target);
    W_LIT(&w, ",\"outcome\":");
    w_cstr(&w, a->outcome);
    W_LIT(&w, ",\"status\":");
    w_i64(&w, a->status);
    W_LIT(&w, ",\"ms\":");
    w_u64(&w, a->ms);
    W_LIT(&w, ",\"confidence\":");
    if (a->has_confidence)
      w_num(&w, a->confidence, 4);
    else
      W_LIT(&w, "null");
    *w.p++ = '}';
  }
  W_LIT(&w, "],\"served_by\":");
  w_cstr(&w, r->served_by);
  W_LIT(&w, ",\"tier\":");
  w_cstr(&w, r->tier);
  W_LIT(&w, ",\"fallback_reason\":");
  w_cstr(&w, r->fallback_reason);
  W_LIT(&w, ",\"confidence\":");
  if (r->has_confidence)
    w_num(&w, r->confidence, 4);
  else
    W_LIT(&w, "null");
  W_LIT(&w, ",\"threshold\":");
  if (r->has_threshold)
    w_num(&w, r->threshold, 4);
  else
    W_LIT(&w, "null");
  W_LIT(&w, ",\"cache\":");
  w_cstr(&w, r->cache);
  W_LIT(&w, ",\"status\":");
  w_i64(&w, r->status);
  if (r->error)
    W_LIT(&w, ",\"error\":true");
  else
    W_LIT(&w, ",\"error\":false");
  W_LIT(&w, ",\"ms\":");
  w_num(&w, r->ms, 3);
  W_LIT(&w, ",\"ttfb_ms\":");
  if (r->ttfb_ms >= 0)
    w_num(&w, r->ttfb_ms, 3);
  else
    W_LIT(&w, "null");
  W_LIT(&w, ",\"overhead_us\":");
  w_u64(&w, r->overhead_us);
  W_LIT(&w, ",\"tokens\":");
  if (r->tokens_prompt < 0 && r->tokens_completion < 0 &&
      r->tokens_cache_read < 0 && r->tokens_cache_write < 0) {
    W_LIT(&w, "null");
  } else {
    W_LIT(&w, "{\"prompt\":");
    if (r->tokens_prompt >= 0)
      w_i64(&w, r->tokens_prompt);
    else
      W_LIT(&w, "null");
    W_LIT(&w, ",\"completion\":");
    if (r->tokens_completion >= 0)
      w_i64(&w, r->tokens_completion);
    else
      W_LIT(&w, "null");
    /* The details only where the answer gave them. */
    if (r->tokens_cached >= 0) {
      W_LIT(&w, ",\"cached\":");
      w_i64(&w, r->tokens_cached);
    }
    if (r->tokens_reasoning >= 0) {
      W_LIT(&w, ",\"reasoning\":");
      w_i64(&w, r->tokens_reasoning);
    }
    if (r->tokens_cache_read >= 0) {
      W_LIT(&w, ",\"cache_read\":");
      w_i64(&w, r->tokens_cache_read);
    }
    if (r->tokens_cache_write >= 0) {
      W_LIT(&w, ",\"cache_write\":");
      w_i64(&w, r->tokens_cache_write);
    }
    *w.p++ = '}';
  }
  W_LIT(&w, ",\"cost\":");
  if (r->has_cost)
    w_num(&w, r->cost, 8);
  else
    W_LIT(&w, "null");
  W_LIT(&w, ",\"unit_source\":");
  w_cstr(&w, r->unit_source);
  W_LIT(&w, ",\"client\":");
  w_cstr(&w, r->client);
  W_LIT(&w, ",\"instance\":");
  w_cstr(&w, r->instance);
  *w.p++ = '}';
  return w.p;
}

void mg_record_init(struct mg_record *r) {
  memset(r, 0, sizeof(*r));
  r->bucket = -1;
  r->tokens_prompt = r->tokens_completion = -1;
  r->tokens_cached = r->tokens_reasoning = -1;
  r->tokens_cache_read = r->tokens_cache_write = -1;
}

int mg_record_format(const struct mg_record *r, struct mg_buf *b) {
  size_t n = bound(r);
  char *tmp, *end;
  int rc = mg_buf_reserve(b, n);
  if (rc == 0) {
    end = format_at(r, b->data + b->len);
    b->len = (size_t)(end - b->data);
    b->data[b->len] = '\0';
    return 0;
  }
  if (rc != -E2BIG)
    return rc;
  /* The bound is generous; the line itself may still fit: write it aside
   * and append the exact bytes, or fail without a partial line. */
  tmp = malloc(n);
  if (tmp == NULL)
    return -ENOMEM;
  end = format_at(r, tmp);
  rc = mg_buf_append(b, tmp, (size_t)(end - tmp));
  free(tmp);
  return rc;
}
