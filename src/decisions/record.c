/* record.c - decision records as JSON lines. Runs once per request, so
 * numbers and timestamps are written by hand rather than with printf. */
#include "decisions/record.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/time.h"

#define PUT(b, lit) mg_buf_append((b), (lit), sizeof(lit) - 1)

static int put_u64(struct mg_buf *b, uint64_t v) {
  char tmp[24];
  size_t i = sizeof(tmp);
  do {
    tmp[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  return mg_buf_append(b, tmp + i, sizeof(tmp) - i);
}

static int put_i64(struct mg_buf *b, int64_t v) {
  int rc = 0;
  if (v < 0) {
    rc = PUT(b, "-");
    v = -v;
  }
  return rc ? rc : put_u64(b, (uint64_t)v);
}

/* A non-negative number with `decimals` fixed decimals, trailing zeros
 * dropped; anything else through printf. */
static int put_num(struct mg_buf *b, double v, int decimals) {
  static const uint64_t scale[] = {1, 10, 100, 1000, 10000, 100000, 1000000};
  uint64_t s = scale[decimals], x, ip, fp;
  char frac[8];
  int n, rc;

  if (!isfinite(v))
    return PUT(b, "null");
  if (v < 0 || v >= 1e12)
    return mg_buf_printf(b, "%.*g", 10, v);
  x = (uint64_t)(v * (double)s + 0.5);
  ip = x / s;
  fp = x % s;
  rc = put_u64(b, ip);
  if (rc || fp == 0 || decimals == 0)
    return rc;
  for (n = decimals; n > 0; n--) {
    frac[n - 1] = (char)('0' + fp % 10);
    fp /= 10;
  }
  n = decimals;
  while (n > 0 && frac[n - 1] == '0')
    n--;
  rc = PUT(b, ".");
  return rc ? rc : mg_buf_append(b, frac, (size_t)n);
}

static int put_str(struct mg_buf *b, const char *s) {
  if (s == NULL)
    return PUT(b, "null");
  return mg_buf_json_str(b, s, strlen(s));
}

/* "2026-11-21T13:00:00.123Z", the second's text cached: records come many
 * per second. Loop thread only. */
static int put_ts(struct mg_buf *b, int64_t ms) {
  static int64_t cached_sec = INT64_MIN;
  static char cached[32];
  int64_t sec = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
  unsigned frac = (unsigned)(ms - sec * 1000);
  char tail[6];
  int rc;
  if (sec != cached_sec) {
    mg_rfc3339_format(sec * 1000, cached); /* "...:SS.000Z" */
    cached[19] = '\0';
    cached_sec = sec;
  }
  tail[0] = '.';
  tail[1] = (char)('0' + frac / 100);
  tail[2] = (char)('0' + frac / 10 % 10);
  tail[3] = (char)('0' + frac % 10);
  tail[4] = 'Z';
  rc = PUT(b, "\"");
  if (rc == 0)
    rc = mg_buf_append(b, cached, 19);
  if (rc == 0)
    rc = mg_buf_append(b, tail, 5);
  if (rc == 0)
    rc = PUT(b, "\"");
  return rc;
}

int mg_record_event_begin(struct mg_buf *out, int64_t ts_ms,
                          const char *event) {
  int rc = PUT(out, "{\"ts\":");
  if (rc == 0)
    rc = put_ts(out, ts_ms);
  if (rc == 0)
    rc = PUT(out, ",\"event\":");
  if (rc == 0)
    rc = put_str(out, event);
  return rc;
}

int mg_record_format(const struct mg_record *r, struct mg_buf *b) {
  size_t i;
  int rc = PUT(b, "{\"ts\":");
  if (rc == 0)
    rc = put_ts(b, r->ts_ms);
  if (rc == 0)
    rc = PUT(b, ",\"id\":");
  if (rc == 0)
    rc = put_str(b, r->id);
  if (rc == 0)
    rc = PUT(b, ",\"config\":");
  if (rc == 0)
    rc = put_str(b, r->config);
  if (rc == 0)
    rc = PUT(b, ",\"endpoint\":");
  if (rc == 0)
    rc = put_str(b, r->endpoint);
  if (rc == 0)
    rc = PUT(b, ",\"alias\":");
  if (rc == 0)
    rc = put_str(b, r->alias);
  if (rc == 0)
    rc = PUT(b, ",\"flag\":");
  if (rc == 0)
    rc = put_str(b, r->flag);
  if (rc == 0)
    rc = PUT(b, ",\"unit\":");
  if (rc == 0)
    rc = r->unit ? mg_buf_json_str(b, r->unit, r->unit_len) : PUT(b, "null");
  if (rc == 0)
    rc = PUT(b, ",\"unit_kind\":");
  if (rc == 0)
    rc = put_str(b, r->unit_kind);
  if (rc == 0)
    rc = PUT(b, ",\"bucket\":");
  if (rc == 0)
    rc = r->bucket >= 0 ? put_i64(b, r->bucket) : PUT(b, "null");
  if (rc == 0)
    rc = PUT(b, ",\"variant\":");
  if (rc == 0)
    rc = put_str(b, r->variant);
  if (rc == 0)
    rc = PUT(b, ",\"reason\":");
  if (rc == 0)
    rc = put_str(b, r->reason);
  if (rc == 0)
    rc = PUT(b, ",\"weights\":");
  if (rc == 0 && r->weights == NULL) {
    rc = PUT(b, "null");
  } else if (rc == 0) {
    rc = PUT(b, "{");
    for (i = 0; rc == 0 && i < r->nweights; i++) {
      if (i)
        rc = PUT(b, ",");
      if (rc == 0)
        rc = put_str(b, r->weights[i].variant);
      if (rc == 0)
        rc = PUT(b, ":");
      if (rc == 0)
        rc = put_num(b, r->weights[i].bp / 100.0, 2);
    }
    if (rc == 0)
      rc = PUT(b, "}");
  }
  if (rc == 0)
    rc = PUT(b, ",\"attrs\":{");
  for (i = 0; rc == 0 && i < r->nattrs; i++) {
    if (i)
      rc = PUT(b, ",");
    if (rc == 0)
      rc = mg_buf_json_str(b, r->attrs[i].name, r->attrs[i].name_len);
    if (rc == 0)
      rc = PUT(b, ":");
    if (rc == 0)
      rc = mg_buf_json_str(b, r->attrs[i].value, r->attrs[i].value_len);
  }
  if (rc == 0)
    rc = PUT(b, "},\"input\":{\"chars\":");
  if (rc == 0)
    rc = put_u64(b, r->input_chars);
  if (rc == 0)
    rc = PUT(b, ",\"messages\":");
  if (rc == 0)
    rc = put_u64(b, r->input_messages);
  if (rc == 0)
    rc = PUT(b, ",\"tools\":");
  if (rc == 0)
    rc = put_u64(b, r->input_tools);
  if (rc == 0)
    rc = r->input_stream ? PUT(b, ",\"stream\":true}") : PUT(b, ",\"stream\":false}");
  if (rc == 0)
    rc = PUT(b, ",\"attempts\":[");
  for (i = 0; rc == 0 && i < r->nattempts; i++) {
    const struct mg_record_attempt *a = &r->attempts[i];
    if (i)
      rc = PUT(b, ",");
    if (rc == 0)
      rc = PUT(b, "{\"target\":");
    if (rc == 0)
      rc = put_str(b, a->target);
    if (rc == 0)
      rc = PUT(b, ",\"outcome\":");
    if (rc == 0)
      rc = put_str(b, a->outcome);
    if (rc == 0)
      rc = PUT(b, ",\"status\":");
    if (rc == 0)
      rc = put_i64(b, a->status);
    if (rc == 0)
      rc = PUT(b, ",\"ms\":");
    if (rc == 0)
      rc = put_u64(b, a->ms);
    if (rc == 0)
      rc = PUT(b, ",\"confidence\":");
    if (rc == 0)
      rc = a->has_confidence ? put_num(b, a->confidence, 4) : PUT(b, "null");
    if (rc == 0)
      rc = PUT(b, "}");
  }
  if (rc == 0)
    rc = PUT(b, "],\"served_by\":");
  if (rc == 0)
    rc = put_str(b, r->served_by);
  if (rc == 0)
    rc = PUT(b, ",\"tier\":");
  if (rc == 0)
    rc = put_str(b, r->tier);
  if (rc == 0)
    rc = PUT(b, ",\"fallback_reason\":");
  if (rc == 0)
    rc = put_str(b, r->fallback_reason);
  if (rc == 0)
    rc = PUT(b, ",\"confidence\":");
  if (rc == 0)
    rc = r->has_confidence ? put_num(b, r->confidence, 4) : PUT(b, "null");
  if (rc == 0)
    rc = PUT(b, ",\"threshold\":");
  if (rc == 0)
    rc = r->has_threshold ? put_num(b, r->threshold, 4) : PUT(b, "null");
  if (rc == 0)
    rc = PUT(b, ",\"cache\":");
  if (rc == 0)
    rc = put_str(b, r->cache);
  if (rc == 0)
    rc = PUT(b, ",\"status\":");
  if (rc == 0)
    rc = put_i64(b, r->status);
  if (rc == 0)
    rc = r->error ? PUT(b, ",\"error\":true") : PUT(b, ",\"error\":false");
  if (rc == 0)
    rc = PUT(b, ",\"ms\":");
  if (rc == 0)
    rc = put_num(b, r->ms, 3);
  if (rc == 0)
    rc = PUT(b, ",\"ttfb_ms\":");
  if (rc == 0)
    rc = r->ttfb_ms >= 0 ? put_num(b, r->ttfb_ms, 3) : PUT(b, "null");
  if (rc == 0)
    rc = PUT(b, ",\"overhead_us\":");
  if (rc == 0)
    rc = put_u64(b, r->overhead_us);
  if (rc == 0)
    rc = PUT(b, ",\"tokens\":");
  if (rc == 0 && (r->tokens_prompt < 0 && r->tokens_completion < 0)) {
    rc = PUT(b, "null");
  } else if (rc == 0) {
    rc = PUT(b, "{\"prompt\":");
    if (rc == 0)
      rc = r->tokens_prompt >= 0 ? put_i64(b, r->tokens_prompt) : PUT(b, "null");
    if (rc == 0)
      rc = PUT(b, ",\"completion\":");
    if (rc == 0)
      rc = r->tokens_completion >= 0 ? put_i64(b, r->tokens_completion)
                                     : PUT(b, "null");
    if (rc == 0)
      rc = PUT(b, "}");
  }
  if (rc == 0)
    rc = PUT(b, "}");
  return rc;
}
