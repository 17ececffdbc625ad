/* test_record.c - decision records and event lines as JSON
 * (src/decisions/record.c): every field of a fully populated record and of
 * a minimal one, parsed back with the project's own strict JSON scanner
 * (src/common/json.h) and checked value by value and in the order record.h
 * documents; nulls, escapes, fixed decimals, weights in percent, tokens
 * null or object, raw unit ids; event lines; timestamps in RFC 3339 with
 * milliseconds, whose per-second cache must give the same text as a fresh
 * format whatever order the records come in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/json.h"
#include "common/time.h"
#include "decisions/record.h"

/* ---- helpers --------------------------------------------------------------- */

/* The keys of a record, in the order record.h documents them. */
static const char *const record_keys[] = {
    "ts",        "id",        "config",   "endpoint",        "alias",
    "flag",      "unit",      "unit_kind", "bucket",         "variant",
    "reason",    "weights",   "attrs",    "input",           "attempts",
    "served_by", "tier",      "fallback_reason", "confidence", "threshold",
    "cache",     "status",    "error",    "ms",              "ttfb_ms",
    "overhead_us", "tokens",  "cost",     "unit_source",     "client",
    "instance",  NULL};

struct line {
  struct mg_buf buf;
  struct mg_json_doc doc;
};

static void parse_line(struct line *l) {
  struct mg_json_error err = {0, NULL};
  int rc;
  assert_non_null(l->buf.data);
  /* One line: no newline of its own (the log adds it). */
  assert_null(memchr(l->buf.data, '\n', l->buf.len));
  mg_json_init(&l->doc, 100000);
  rc = mg_json_parse(&l->doc, l->buf.data, l->buf.len, &err);
  if (rc != 0)
    fail_msg("not JSON (rc %d at %zu: %s): %s", rc, err.offset,
             err.msg ? err.msg : "?", l->buf.data);
  assert_int_equal(l->doc.toks[0].type, MG_JSON_OBJECT);
}

static void format_record(const struct mg_record *r, struct line *l) {
  mg_buf_init(&l->buf, 1u << 20);
  assert_int_equal(mg_record_format(r, &l->buf), 0);
  parse_line(l);
}

static void line_free(struct line *l) {
  mg_json_free(&l->doc);
  mg_buf_free(&l->buf);
}

/* The members of the object at index o have exactly these keys, in this
 * order, each once. */
static void expect_keys(const struct mg_json_doc *d, uint32_t o,
                        const char *const *keys) {
  uint32_t i = o + 1, k;
  size_t n = 0;
  assert_int_equal(d->toks[o].type, MG_JSON_OBJECT);
  for (k = 0; k < d->toks[o].count; k++) {
    if (keys[n] == NULL)
      fail_msg("unexpected key %.*s", (int)mg_json_raw(d, i).len,
               mg_json_raw(d, i).p);
    if (!mg_json_str_eq(d, i, keys[n], strlen(keys[n])))
      fail_msg("key %zu: want \"%s\", got %.*s", n, keys[n],
               (int)mg_json_raw(d, i).len, mg_json_raw(d, i).p);
    n++;
    i = d->toks[i + 1].next;
  }
  if (keys[n] != NULL)
    fail_msg("missing key \"%s\"", keys[n]);
}

static uint32_t member(const struct mg_json_doc *d, uint32_t o,
                       const char *key) {
  uint32_t v = mg_json_getc(d, o, key);
  if (v == MG_JSON_NOTFOUND)
    fail_msg("no member \"%s\"", key);
  return v;
}

/* The raw JSON text of a member: numbers are checked as written. */
static void expect_raw(const struct mg_json_doc *d, uint32_t o,
                       const char *key, const char *want) {
  struct mg_str s = mg_json_raw(d, member(d, o, key));
  if (s.len != strlen(want) || memcmp(s.p, want, s.len) != 0)
    fail_msg("%s: want %s, got %.*s", key, want, (int)s.len, s.p);
}

static void expect_null(const struct mg_json_doc *d, uint32_t o,
                        const char *key) {
  if (d->toks[member(d, o, key)].type != MG_JSON_NULL)
    fail_msg("%s: want null", key);
}

/* A string member, compared after unescaping (n bytes of want). */
static void expect_strn(const struct mg_json_doc *d, uint32_t o,
                        const char *key, const char *want, size_t n) {
  uint32_t v = member(d, o, key);
  struct mg_buf b;
  if (d->toks[v].type != MG_JSON_STRING)
    fail_msg("%s: want a string", key);
  mg_buf_init(&b, 1u << 20);
  assert_int_equal(mg_json_str_decode(d, v, &b), 0);
  if (b.len != n || (n && memcmp(b.data, want, n) != 0))
    fail_msg("%s: want \"%.*s\", got \"%.*s\"", key, (int)n, want,
             (int)b.len, b.data ? b.data : "");
  mg_buf_free(&b);
}

static void expect_str(const struct mg_json_doc *d, uint32_t o,
                       const char *key, const char *want) {
  expect_strn(d, o, key, want, strlen(want));
}

static void expect_int(const struct mg_json_doc *d, uint32_t o,
                       const char *key, int64_t want) {
  int64_t v;
  assert_int_equal(d->toks[member(d, o, key)].type, MG_JSON_NUMBER);
  assert_int_equal(mg_json_int(d, member(d, o, key), &v), 0);
  if (v != want)
    fail_msg("%s: want %lld, got %lld", key, (long long)want, (long long)v);
}

static void expect_bool(const struct mg_json_doc *d, uint32_t o,
                        const char *key, bool want) {
  assert_int_equal(d->toks[member(d, o, key)].type,
                   want ? MG_JSON_TRUE : MG_JSON_FALSE);
}

/* ---- a fully populated record ------------------------------------------------ */

static const struct mg_record_weight full_weights[] = {
    {"control", 8999}, {"treatment", 1000}, {"canary", 1}};

/* Values come from headers and bodies: anything may be in them. */
static const char note[] = "a \"quoted\"\\ line\nwith\ttab\x01 and \xc3\xa9";

static const struct mg_record_attr full_attrs[] = {
    {"region", 6, "eu-west", 7},
    {"note", 4, note, sizeof(note) - 1},
};

static const struct mg_record_attempt full_attempts[] = {
    {"primary", "timeout_first_byte", 0, 1500, 0, false},
    {"secondary", "ok", 200, 211, 0.91, true},
};

static struct mg_record full_record(void) {
  struct mg_record r;
  mg_record_init(&r);
  r.ts_ms = 1795266000123; /* 2026-11-21T13:00:00.123Z */
  r.id = "0123456789abcdef0123456789abcdef";
  r.config = "fedcba9876543210";
  r.endpoint = "chat";
  r.alias = "gpt-4o";
  r.flag = "chat \"model\"\\v2"; /* a name that needs escapes */
  r.unit = "9f86d081884c7d65";
  r.unit_len = 16;
  r.unit_kind = "user";
  r.bucket = 4186;
  r.variant = "treatment";
  r.reason = "rollout";
  r.weights = full_weights;
  r.nweights = 3;
  r.attrs = full_attrs;
  r.nattrs = 2;
  r.input_chars = 812;
  r.input_messages = 3;
  r.input_tools = 2;
  r.input_stream = true;
  r.attempts = full_attempts;
  r.nattempts = 2;
  r.served_by = "secondary";
  r.tier = "fallback";
  r.fallback_reason = "timeout";
  r.confidence = 0.91;
  r.has_confidence = true;
  r.threshold = 0.7;
  r.has_threshold = true;
  r.cache = "store";
  r.status = 200;
  r.error = false;
  r.ms = 1712.4;
  r.ttfb_ms = 1712.1;
  r.overhead_us = 38;
  r.tokens_prompt = 31;
  r.tokens_completion = 12;
  r.tokens_cached = 4;
  r.tokens_reasoning = 2;
  r.cost = 0.00012345;
  r.has_cost = true;
  r.unit_source = "safety_identifier";
  r.client = "billing";
  r.instance = "gw-1";
  return r;
}

static void test_full_record(void **state) {
  struct mg_record r = full_record();
  struct line l;
  const struct mg_json_doc *d;
  uint32_t w, a, in, at, t;
  static const char *const input_keys[] = {"chars", "messages", "tools",
                                           "stream", NULL};
  static const char *const attempt_keys[] = {"target", "outcome", "status",
                                             "ms", "confidence", NULL};
  static const char *const token_keys[] = {"prompt", "completion", "cached",
                                           "reasoning", NULL};
  (void)state;

  format_record(&r, &l);
  d = &l.doc;
  expect_keys(d, 0, record_keys);

  expect_raw(d, 0, "ts", "\"2026-11-21T13:00:00.123Z\"");
  expect_str(d, 0, "id", "0123456789abcdef0123456789abcdef");
  expect_str(d, 0, "config", "fedcba9876543210");
  expect_str(d, 0, "endpoint", "chat");
  expect_str(d, 0, "alias", "gpt-4o");
  expect_str(d, 0, "flag", "chat \"model\"\\v2");
  expect_raw(d, 0, "flag", "\"chat \\\"model\\\"\\\\v2\"");
  expect_str(d, 0, "unit", "9f86d081884c7d65");
  expect_str(d, 0, "unit_kind", "user");
  expect_raw(d, 0, "bucket", "4186");
  expect_str(d, 0, "variant", "treatment");
  expect_str(d, 0, "reason", "rollout");

  /* Weights in percent with up to two decimals: 8999 bp is 89.99%,
   * 1000 bp is 10 (no trailing zeros), 1 bp is 0.01. */
  w = member(d, 0, "weights");
  {
    static const char *const wk[] = {"control", "treatment", "canary", NULL};
    expect_keys(d, w, wk);
  }
  expect_raw(d, w, "control", "89.99");
  expect_raw(d, w, "treatment", "10");
  expect_raw(d, w, "canary", "0.01");

  /* Attributes: names and values as given, escaped. */
  a = member(d, 0, "attrs");
  {
    static const char *const ak[] = {"region", "note", NULL};
    expect_keys(d, a, ak);
  }
  expect_str(d, a, "region", "eu-west");
  expect_strn(d, a, "note", full_attrs[1].value, full_attrs[1].value_len);
  /* Control characters are escaped, never written raw. */
  assert_non_null(strstr(l.buf.data, "\\n"));
  assert_non_null(strstr(l.buf.data, "\\t"));
  assert_non_null(strstr(l.buf.data, "\\u0001"));

  in = member(d, 0, "input");
  expect_keys(d, in, input_keys);
  expect_int(d, in, "chars", 812);
  expect_int(d, in, "messages", 3);
  expect_int(d, in, "tools", 2);
  expect_bool(d, in, "stream", true);

  at = member(d, 0, "attempts");
  assert_int_equal(d->toks[at].type, MG_JSON_ARRAY);
  assert_int_equal(d->toks[at].count, 2);
  t = mg_json_at(d, at, 0);
  expect_keys(d, t, attempt_keys);
  expect_str(d, t, "target", "primary");
  expect_str(d, t, "outcome", "timeout_first_byte");
  expect_int(d, t, "status", 0);
  expect_int(d, t, "ms", 1500);
  expect_null(d, t, "confidence");
  t = mg_json_at(d, at, 1);
  expect_keys(d, t, attempt_keys);
  expect_str(d, t, "target", "secondary");
  expect_str(d, t, "outcome", "ok");
  expect_int(d, t, "status", 200);
  expect_int(d, t, "ms", 211);
  expect_raw(d, t, "confidence", "0.91");

  expect_str(d, 0, "served_by", "secondary");
  expect_str(d, 0, "tier", "fallback");
  expect_str(d, 0, "fallback_reason", "timeout");
  expect_raw(d, 0, "confidence", "0.91");
  expect_raw(d, 0, "threshold", "0.7");
  expect_str(d, 0, "cache", "store");
  expect_raw(d, 0, "status", "200");
  expect_bool(d, 0, "error", false);
  expect_raw(d, 0, "ms", "1712.4");
  expect_raw(d, 0, "ttfb_ms", "1712.1");
  expect_raw(d, 0, "overhead_us", "38");
  t = member(d, 0, "tokens");
  expect_keys(d, t, token_keys);
  expect_int(d, t, "prompt", 31);
  expect_int(d, t, "completion", 12);
  line_free(&l);
}

/* The whole line, byte for byte: the format is a contract with `modelgate
 * report` and with whoever reads the file with jq. */
static void test_full_record_exact_text(void **state) {
  struct mg_record r = full_record();
  struct mg_buf b;
  static const char want[] =
      "{\"ts\":\"2026-11-21T13:00:00.123Z\","
      "\"id\":\"0123456789abcdef0123456789abcdef\","
      "\"config\":\"fedcba9876543210\",\"endpoint\":\"chat\","
      "\"alias\":\"gpt-4o\",\"flag\":\"chat \\\"model\\\"\\\\v2\","
      "\"unit\":\"9f86d081884c7d65\",\"unit_kind\":\"user\",\"bucket\":4186,"
      "\"variant\":\"treatment\",\"reason\":\"rollout\","
      "\"weights\":{\"control\":89.99,\"treatment\":10,\"canary\":0.01},"
      "\"attrs\":{\"region\":\"eu-west\",\"note\":\"a \\\"quoted\\\"\\\\ "
      "line\\nwith\\ttab\\u0001 and \xc3\xa9\"},"
      "\"input\":{\"chars\":812,\"messages\":3,\"tools\":2,\"stream\":true},"
      "\"attempts\":[{\"target\":\"primary\",\"outcome\":"
      "\"timeout_first_byte\",\"status\":0,\"ms\":1500,\"confidence\":null},"
      "{\"target\":\"secondary\",\"outcome\":\"ok\",\"status\":200,"
      "\"ms\":211,\"confidence\":0.91}],"
      "\"served_by\":\"secondary\",\"tier\":\"fallback\","
      "\"fallback_reason\":\"timeout\",\"confidence\":0.91,"
      "\"threshold\":0.7,\"cache\":\"store\",\"status\":200,\"error\":false,"
      "\"ms\":1712.4,\"ttfb_ms\":1712.1,\"overhead_us\":38,"
      "\"tokens\":{\"prompt\":31,\"completion\":12,\"cached\":4,"
      "\"reasoning\":2},\"cost\":0.00012345,\"unit_source\":"
      "\"safety_identifier\",\"client\":\"billing\",\"instance\":\"gw-1\"}";
  (void)state;
  mg_buf_init(&b, 1u << 20);
  assert_int_equal(mg_record_format(&r, &b), 0);
  assert_string_equal(b.data, want);
  mg_buf_free(&b);
}

/* ---- a minimal record ------------------------------------------------------- */

/* What the proxy writes for a request that never reached a target: a body
 * that was not JSON, say. */
static struct mg_record minimal_record(void) {
  struct mg_record r;
  mg_record_init(&r);
  r.ts_ms = 1709210096000; /* 2024-02-29T12:34:56.000Z */
  r.id = "ffffffffffffffffffffffffffffffff";
  r.config = "0000000000000000";
  r.endpoint = "completions";
  r.alias = NULL;
  r.flag = NULL;
  r.unit = NULL;
  r.unit_kind = "request";
  r.bucket = -1;
  r.variant = NULL;
  r.reason = "unrouted";
  r.weights = NULL;
  r.attrs = NULL;
  r.nattrs = 0;
  r.attempts = NULL;
  r.nattempts = 0;
  r.served_by = NULL;
  r.tier = "none";
  r.fallback_reason = NULL;
  r.has_confidence = false;
  r.has_threshold = false;
  r.cache = "off";
  r.status = 400;
  r.error = true;
  r.ms = 0.0421;
  r.ttfb_ms = -1;
  r.overhead_us = 0;
  r.tokens_prompt = -1;
  r.tokens_completion = -1;
  return r;
}

static void test_minimal_record(void **state) {
  struct mg_record r = minimal_record();
  struct line l;
  const struct mg_json_doc *d;
  uint32_t v;
  (void)state;

  format_record(&r, &l);
  d = &l.doc;
  expect_keys(d, 0, record_keys);
  expect_raw(d, 0, "ts", "\"2024-02-29T12:34:56.000Z\"");
  expect_str(d, 0, "endpoint", "completions");
  expect_null(d, 0, "alias");
  expect_null(d, 0, "flag");
  expect_null(d, 0, "unit");
  expect_str(d, 0, "unit_kind", "request");
  expect_null(d, 0, "bucket");
  expect_null(d, 0, "variant");
  expect_str(d, 0, "reason", "unrouted");
  expect_null(d, 0, "weights");
  /* attrs is always an object, empty when nothing is listed. */
  v = member(d, 0, "attrs");
  assert_int_equal(d->toks[v].type, MG_JSON_OBJECT);
  assert_int_equal(d->toks[v].count, 0);
  v = member(d, 0, "input");
  expect_int(d, v, "chars", 0);
  expect_int(d, v, "messages", 0);
  expect_int(d, v, "tools", 0);
  expect_bool(d, v, "stream", false);
  v = member(d, 0, "attempts");
  assert_int_equal(d->toks[v].type, MG_JSON_ARRAY);
  assert_int_equal(d->toks[v].count, 0);
  expect_null(d, 0, "served_by");
  expect_str(d, 0, "tier", "none");
  expect_null(d, 0, "fallback_reason");
  expect_null(d, 0, "confidence");
  expect_null(d, 0, "threshold");
  expect_str(d, 0, "cache", "off");
  expect_raw(d, 0, "status", "400");
  expect_bool(d, 0, "error", true);
  /* Three decimals at most: 0.0421 ms is written 0.042. */
  expect_raw(d, 0, "ms", "0.042");
  expect_null(d, 0, "ttfb_ms");
  expect_raw(d, 0, "overhead_us", "0");
  expect_null(d, 0, "tokens");
  line_free(&l);
}

/* ---- fields one at a time ------------------------------------------------------ */

static void test_tokens_null_or_object(void **state) {
  struct mg_record r = minimal_record();
  struct line l;
  uint32_t t;
  (void)state;

  /* Only one count known: an object with the other null. */
  r.tokens_prompt = 31;
  r.tokens_completion = -1;
  format_record(&r, &l);
  t = member(&l.doc, 0, "tokens");
  assert_int_equal(l.doc.toks[t].type, MG_JSON_OBJECT);
  expect_int(&l.doc, t, "prompt", 31);
  expect_null(&l.doc, t, "completion");
  line_free(&l);

  r.tokens_prompt = -1;
  r.tokens_completion = 7;
  format_record(&r, &l);
  t = member(&l.doc, 0, "tokens");
  expect_null(&l.doc, t, "prompt");
  expect_int(&l.doc, t, "completion", 7);
  line_free(&l);

  /* Zero is a count, not unknown. */
  r.tokens_prompt = 0;
  r.tokens_completion = 0;
  format_record(&r, &l);
  t = member(&l.doc, 0, "tokens");
  expect_int(&l.doc, t, "prompt", 0);
  expect_int(&l.doc, t, "completion", 0);
  line_free(&l);

  /* Large counts are written in full. */
  r.tokens_prompt = 9007199254740993LL;
  r.tokens_completion = 1;
  format_record(&r, &l);
  t = member(&l.doc, 0, "tokens");
  expect_raw(&l.doc, t, "prompt", "9007199254740993");
  line_free(&l);
}

static void test_bucket_values(void **state) {
  struct mg_record r = minimal_record();
  struct line l;
  (void)state;
  r.bucket = 0;
  format_record(&r, &l);
  expect_raw(&l.doc, 0, "bucket", "0");
  line_free(&l);
  r.bucket = 9999;
  format_record(&r, &l);
  expect_raw(&l.doc, 0, "bucket", "9999");
  line_free(&l);
  r.bucket = -1;
  format_record(&r, &l);
  expect_null(&l.doc, 0, "bucket");
  line_free(&l);
}

/* A raw unit id (raw_units: true) is written as given, escaped, with its
 * length (it is not NUL-terminated in the request). */
static void test_unit_raw(void **state) {
  static const char body[] = "al\"ice\\\n\xc3\xa9-and-more-after";
  struct mg_record r = minimal_record();
  struct line l;
  (void)state;
  r.unit = body;
  r.unit_len = 11; /* al"ice\<LF>é */
  r.unit_kind = "user";
  format_record(&r, &l);
  expect_strn(&l.doc, 0, "unit", body, 11);
  assert_null(strstr(l.buf.data, "-and-more-after"));
  line_free(&l);

  /* An empty id is a string, not null. */
  r.unit = "";
  r.unit_len = 0;
  format_record(&r, &l);
  expect_str(&l.doc, 0, "unit", "");
  line_free(&l);
}

/* What a client sends is bounded (issue 10, point 3): a value past
 * MG_RECORD_VALUE_MAX bytes is cut at a UTF-8 boundary and ends in a
 * marker with its length; 6-byte escapes of a 180 kB control-character
 * value and a 1 MB unit still fit a 1 MiB line; a value of exactly the
 * limit is kept whole. */
static void test_values_bounded(void **state) {
  struct mg_record r = minimal_record();
  struct mg_record_attr a;
  size_t n = 180000, u = 1000000;
  char *ctl = malloc(n), *unit = malloc(u), *want;
  struct mg_buf b;
  cJSON *doc;
  const char *v;
  (void)state;
  assert_non_null(ctl);
  assert_non_null(unit);
  memset(ctl, 1, n);
  /* "é" from byte 1 on: byte 1024 is the second byte of one. */
  memset(unit, 'u', u);
  {
    size_t i;
    for (i = 1; i + 1 < u; i += 2) {
      unit[i] = '\xc3';
      unit[i + 1] = '\xa9';
    }
  }
  a.name = "plan";
  a.name_len = 4;
  a.value = ctl;
  a.value_len = n;
  r.attrs = &a;
  r.nattrs = 1;
  r.unit = unit;
  r.unit_len = u;
  r.unit_kind = "user";
  mg_buf_init(&b, 1u << 20);
  assert_int_equal(mg_record_format(&r, &b), 0);
  assert_true(b.len < 16384);
  doc = cJSON_Parse(b.data);
  assert_non_null(doc);
  v = cJSON_GetStringValue(
      cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "attrs"), "plan"));
  assert_non_null(v);
  assert_int_equal(strspn(v, "\x01"), 1024);
  assert_string_equal(v + 1024, "\xe2\x80\xa6[truncated from 180000 bytes]");
  v = cJSON_GetStringValue(cJSON_GetObjectItem(doc, "unit"));
  assert_non_null(v);
  assert_int_equal(v[1022], '\xa9');
  want = "\xe2\x80\xa6[truncated from 1000000 bytes]";
  assert_string_equal(v + 1023, want);
  cJSON_Delete(doc);
  mg_buf_free(&b);

  /* Exactly the limit: whole, no marker. */
  a.value_len = MG_RECORD_VALUE_MAX;
  r.unit_len = 0;
  mg_buf_init(&b, 1u << 20);
  assert_int_equal(mg_record_format(&r, &b), 0);
  assert_null(strstr(b.data, "truncated"));
  mg_buf_free(&b);
  free(ctl);
  free(unit);
}

/* Numbers: fixed decimals with trailing zeros dropped, rounding to the
 * nearest; what is not finite is null; big values stay numbers. */
static void test_numbers(void **state) {
  static const struct {
    double v;
    const char *ms, *conf; /* 3 decimals, 4 decimals */
  } cases[] = {
      {0, "0", "0"},
      {1, "1", "1"},
      {0.5, "0.5", "0.5"},
      {0.0004, "0", "0.0004"},
      {0.00049, "0", "0.0005"},
      {0.12345, "0.123", "0.1235"},
      {0.99995, "1", "1"},
      {1712.4, "1712.4", "1712.4"},
      {1712.1004, "1712.1", "1712.1004"},
      {25.0001, "25", "25.0001"},
      {123456789.5, "123456789.5", "123456789.5"},
  };
  struct mg_record r = minimal_record();
  struct line l;
  size_t i;
  (void)state;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    r.ms = cases[i].v;
    r.ttfb_ms = cases[i].v;
    r.confidence = cases[i].v;
    r.has_confidence = true;
    r.threshold = cases[i].v;
    r.has_threshold = true;
    format_record(&r, &l);
    expect_raw(&l.doc, 0, "ms", cases[i].ms);
    expect_raw(&l.doc, 0, "ttfb_ms", cases[i].ms);
    expect_raw(&l.doc, 0, "confidence", cases[i].conf);
    expect_raw(&l.doc, 0, "threshold", cases[i].conf);
    line_free(&l);
  }

  /* Not finite: null, and the line stays JSON. */
  r.ms = NAN;
  r.confidence = INFINITY;
  format_record(&r, &l);
  expect_null(&l.doc, 0, "ms");
  expect_null(&l.doc, 0, "confidence");
  line_free(&l);

  /* Huge and negative values are still JSON numbers. */
  r.ms = 5e13;
  r.confidence = -0.25;
  format_record(&r, &l);
  assert_int_equal(l.doc.toks[member(&l.doc, 0, "ms")].type, MG_JSON_NUMBER);
  {
    double v;
    assert_int_equal(mg_json_num(&l.doc, member(&l.doc, 0, "ms"), &v), 0);
    assert_true(v == 5e13);
    assert_int_equal(
        mg_json_num(&l.doc, member(&l.doc, 0, "confidence"), &v), 0);
    assert_true(v == -0.25);
  }
  line_free(&l);

  /* Integers at their limits. */
  r = minimal_record();
  r.overhead_us = UINT64_MAX;
  r.input_chars = UINT64_MAX;
  r.input_messages = UINT32_MAX;
  r.status = 499;
  format_record(&r, &l);
  expect_raw(&l.doc, 0, "overhead_us", "18446744073709551615");
  expect_raw(&l.doc, member(&l.doc, 0, "input"), "chars",
             "18446744073709551615");
  expect_raw(&l.doc, member(&l.doc, 0, "input"), "messages", "4294967295");
  expect_raw(&l.doc, 0, "status", "499");
  line_free(&l);
}

/* Weights in percent, every basis point value round-trips: bp / 100 with
 * two decimals, parsed back and multiplied by 100, gives bp again. */
static void test_weights_every_basis_point(void **state) {
  struct mg_record_weight w[2] = {{"a", 0}, {"b", 0}};
  struct mg_record r = minimal_record();
  struct line l;
  uint32_t bp;
  (void)state;
  r.weights = w;
  r.nweights = 2;
  for (bp = 0; bp <= 10000; bp++) {
    double a, b;
    uint32_t o;
    w[0].bp = bp;
    w[1].bp = 10000 - bp;
    format_record(&r, &l);
    o = member(&l.doc, 0, "weights");
    assert_int_equal(mg_json_num(&l.doc, member(&l.doc, o, "a"), &a), 0);
    assert_int_equal(mg_json_num(&l.doc, member(&l.doc, o, "b"), &b), 0);
    if ((uint32_t)llround(a * 100) != bp ||
        (uint32_t)llround(b * 100) != 10000 - bp)
      fail_msg("bp %u: %s", bp, l.buf.data);
    /* At most two decimals, no trailing zero after the point. */
    {
      struct mg_str s = mg_json_raw(&l.doc, member(&l.doc, o, "a"));
      const char *dot = memchr(s.p, '.', s.len);
      if (dot) {
        assert_true((size_t)(s.p + s.len - dot) <= 3);
        assert_true(s.p[s.len - 1] != '0');
      }
    }
    line_free(&l);
  }

  /* An empty weights object (a flag with no variants cannot exist, but
   * the writer must still write JSON). */
  r.nweights = 0;
  format_record(&r, &l);
  assert_int_equal(l.doc.toks[member(&l.doc, 0, "weights")].type,
                   MG_JSON_OBJECT);
  line_free(&l);
}

/* A buffer too small for the line: an error, never a silently cut line. */
static void test_buffer_too_small(void **state) {
  struct mg_record r = full_record();
  struct mg_buf b;
  size_t full, max;
  (void)state;
  mg_buf_init(&b, 1u << 20);
  assert_int_equal(mg_record_format(&r, &b), 0);
  full = b.len;
  mg_buf_free(&b);
  for (max = 0; max < full; max += 37) {
    mg_buf_init(&b, max);
    assert_int_not_equal(mg_record_format(&r, &b), 0);
    mg_buf_free(&b);
  }
  mg_buf_init(&b, full);
  assert_int_equal(mg_record_format(&r, &b), 0);
  assert_int_equal(b.len, full);
  mg_buf_free(&b);
}

/* The line is appended: a buffer with something in it keeps it. */
static void test_appends(void **state) {
  struct mg_record r = minimal_record();
  struct mg_buf b;
  (void)state;
  mg_buf_init(&b, 1u << 20);
  assert_int_equal(mg_buf_puts(&b, "prefix|"), 0);
  assert_int_equal(mg_record_format(&r, &b), 0);
  assert_memory_equal(b.data, "prefix|{\"ts\":", 13);
  assert_int_equal(b.data[b.len - 1], '}');
  mg_buf_free(&b);
}

/* ---- event lines ----------------------------------------------------------- */

static void test_event_lines(void **state) {
  struct line l;
  static const char *const keys[] = {"ts", "event", "flag", "by", NULL};
  static const char *const bkeys[] = {"ts", "event", "target", "state", NULL};
  (void)state;

  mg_buf_init(&l.buf, 4096);
  assert_int_equal(mg_record_event_begin(&l.buf, 1795266000123, "kill"), 0);
  assert_string_equal(l.buf.data,
                      "{\"ts\":\"2026-11-21T13:00:00.123Z\",\"event\":\"kill\"");
  assert_int_equal(mg_buf_puts(&l.buf, ",\"flag\":\"chat\",\"by\":\"admin\"}"),
                   0);
  parse_line(&l);
  expect_keys(&l.doc, 0, keys);
  expect_str(&l.doc, 0, "event", "kill");
  expect_str(&l.doc, 0, "flag", "chat");
  line_free(&l);

  /* An event with a name that needs escaping stays JSON. */
  mg_buf_init(&l.buf, 4096);
  assert_int_equal(
      mg_record_event_begin(&l.buf, 1795266001999, "odd \"name\"\n"), 0);
  assert_int_equal(mg_buf_puts(&l.buf, ",\"target\":\"t\",\"state\":\"open\"}"),
                   0);
  parse_line(&l);
  expect_keys(&l.doc, 0, bkeys);
  expect_raw(&l.doc, 0, "ts", "\"2026-11-21T13:00:01.999Z\"");
  expect_str(&l.doc, 0, "event", "odd \"name\"\n");
  line_free(&l);

  /* Too small a buffer: an error. */
  mg_buf_init(&l.buf, 20);
  assert_int_not_equal(mg_record_event_begin(&l.buf, 0, "reload"), 0);
  mg_buf_free(&l.buf);
}

/* ---- timestamps -------------------------------------------------------------- */

static void ts_of(int64_t ms, char out[64]) {
  struct mg_record r = minimal_record();
  struct mg_buf b;
  const char *p, *q;
  r.ts_ms = ms;
  mg_buf_init(&b, 1u << 20);
  assert_int_equal(mg_record_format(&r, &b), 0);
  p = strstr(b.data, "{\"ts\":\"");
  assert_ptr_equal(p, b.data);
  p += 7;
  q = strchr(p, '"');
  assert_non_null(q);
  assert_true(q - p < 64);
  memcpy(out, p, (size_t)(q - p));
  out[q - p] = '\0';
  mg_buf_free(&b);
}

static void event_ts_of(int64_t ms, char out[64]) {
  struct mg_buf b;
  mg_buf_init(&b, 4096);
  assert_int_equal(mg_record_event_begin(&b, ms, "x"), 0);
  assert_int_equal(strncmp(b.data, "{\"ts\":\"", 7), 0);
  assert_true(strlen(b.data) > 7 + 24);
  memcpy(out, b.data + 7, 24);
  out[24] = '\0';
  assert_int_equal(b.data[7 + 24], '"');
  mg_buf_free(&b);
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" exactly. */
static void assert_rfc3339_ms(const char *s) {
  static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
  size_t i;
  int64_t back;
  if (strlen(s) != 24)
    fail_msg("not 24 characters: %s", s);
  for (i = 0; i < 24; i++) {
    if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
      fail_msg("not RFC 3339 with milliseconds: %s", s);
  }
  assert_int_equal(mg_rfc3339_parse(s, &back), 0);
}

static void test_timestamps(void **state) {
  static const struct {
    int64_t ms;
    const char *want;
  } cases[] = {
      {0, "1970-01-01T00:00:00.000Z"},
      {1, "1970-01-01T00:00:00.001Z"},
      {999, "1970-01-01T00:00:00.999Z"},
      {1000, "1970-01-01T00:00:01.000Z"},
      {1795266000123, "2026-11-21T13:00:00.123Z"},
      {1795266000050, "2026-11-21T13:00:00.050Z"},
      {1795266000007, "2026-11-21T13:00:00.007Z"},
      {1709210096000, "2024-02-29T12:34:56.000Z"},
      {1798761599999, "2026-12-31T23:59:59.999Z"},
      {1798761600000, "2027-01-01T00:00:00.000Z"},
  };
  char got[64];
  size_t i;
  (void)state;
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int64_t back;
    ts_of(cases[i].ms, got);
    assert_string_equal(got, cases[i].want);
    assert_rfc3339_ms(got);
    assert_int_equal(mg_rfc3339_parse(got, &back), 0);
    assert_int_equal(back, cases[i].ms);
  }
}

/* The second's text is cached: records in the same second reuse it (only
 * the milliseconds differ), a new second is formatted anew, and going back
 * to an earlier second (the wall clock was stepped back) is not served
 * from the cache of a later one. */
static void test_timestamp_cache(void **state) {
  char got[64];
  (void)state;
  ts_of(1795266000123, got);
  assert_string_equal(got, "2026-11-21T13:00:00.123Z");
  ts_of(1795266000124, got); /* same second */
  assert_string_equal(got, "2026-11-21T13:00:00.124Z");
  ts_of(1795266000000, got); /* same second, earlier in it */
  assert_string_equal(got, "2026-11-21T13:00:00.000Z");
  ts_of(1795266000999, got);
  assert_string_equal(got, "2026-11-21T13:00:00.999Z");
  ts_of(1795266001000, got); /* the next second */
  assert_string_equal(got, "2026-11-21T13:00:01.000Z");
  ts_of(1795266000500, got); /* back one second */
  assert_string_equal(got, "2026-11-21T13:00:00.500Z");
  ts_of(1795266060000, got); /* a new minute */
  assert_string_equal(got, "2026-11-21T13:01:00.000Z");
  ts_of(1798761599999, got); /* the last millisecond of a year */
  assert_string_equal(got, "2026-12-31T23:59:59.999Z");
  ts_of(1798761600000, got); /* ...and the first of the next */
  assert_string_equal(got, "2027-01-01T00:00:00.000Z");
  /* Events share the cache with records. */
  event_ts_of(1798761600001, got);
  assert_string_equal(got, "2027-01-01T00:00:00.001Z");
  ts_of(1798761600002, got);
  assert_string_equal(got, "2027-01-01T00:00:00.002Z");
  event_ts_of(1795266000123, got);
  assert_string_equal(got, "2026-11-21T13:00:00.123Z");
}

/* Differential: a long run of times, in an order that mixes runs within one
 * second with jumps forwards and back, always gives the text of a fresh,
 * uncached format (mg_rfc3339_format). */
static void test_timestamp_cache_differential(void **state) {
  uint64_t x = 0x9e3779b97f4a7c15ULL;
  int64_t ms = 1795266000000;
  char got[64], want[32];
  int i;
  (void)state;
  for (i = 0; i < 200000; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    switch (x % 8) {
    case 0:
    case 1:
    case 2:
      ms += (int64_t)(x >> 8) % 7; /* a few ms on */
      break;
    case 3:
      ms += 1000 - ms % 1000; /* to the very start of the next second */
      break;
    case 4:
      ms -= (int64_t)(x >> 8) % 1500; /* back, sometimes a second */
      break;
    case 5:
      ms += (int64_t)(x >> 8) % 86400000; /* up to a day on */
      break;
    case 6:
      ms = ms - ms % 1000 + 999; /* the last ms of this second */
      break;
    default:
      ms = 946684800000 + (int64_t)((x >> 8) % 4102444800000ULL); /* anywhere */
      break;
    }
    if (ms < 0)
      ms = 0;
    if (x & 0x100)
      ts_of(ms, got);
    else
      event_ts_of(ms, got);
    mg_rfc3339_format(ms, want);
    if (strcmp(got, want) != 0)
      fail_msg("ts %lld: got %s, want %s (step %d)", (long long)ms, got, want,
               i);
  }
  assert_rfc3339_ms(got);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_full_record),
      cmocka_unit_test(test_full_record_exact_text),
      cmocka_unit_test(test_minimal_record),
      cmocka_unit_test(test_tokens_null_or_object),
      cmocka_unit_test(test_bucket_values),
      cmocka_unit_test(test_unit_raw),
      cmocka_unit_test(test_values_bounded),
      cmocka_unit_test(test_numbers),
      cmocka_unit_test(test_weights_every_basis_point),
      cmocka_unit_test(test_buffer_too_small),
      cmocka_unit_test(test_appends),
      cmocka_unit_test(test_event_lines),
      cmocka_unit_test(test_timestamps),
      cmocka_unit_test(test_timestamp_cache),
      cmocka_unit_test(test_timestamp_cache_differential),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
