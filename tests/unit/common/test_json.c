/* test_json.c - the strict JSON scanner, accessors and canonical form
 * (src/common/json.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"

/* A string literal as (pointer, length), so embedded NULs count. */
#define L(s) (s), (sizeof(s) - 1)

static void parse_ok(struct mg_json_doc *d, const char *s, size_t n) {
  struct mg_json_error err = {0, NULL};
  int rc = mg_json_parse(d, s, n, &err);
  if (rc != 0)
    fail_msg("parse of '%.*s' failed: rc=%d at %zu: %s", (int)n, s, rc,
             err.offset, err.msg ? err.msg : "?");
}

/* Walk the token array and check every structural promise of json.h. */
static void check_tokens(const struct mg_json_doc *d) {
  uint32_t i;

  assert_true(d->n > 0);
  assert_int_equal(d->toks[0].next, d->n);
  for (i = 0; i < d->n; i++) {
    const struct mg_json_tok *t = &d->toks[i];
    assert_true(t->start < t->end);
    assert_true(t->end <= d->len);
    assert_true(t->next > i && t->next <= d->n);
    if (t->type == MG_JSON_OBJECT || t->type == MG_JSON_ARRAY) {
      uint32_t k = i + 1, c;
      assert_int_equal(d->src[t->start], t->type == MG_JSON_OBJECT ? '{' : '[');
      assert_int_equal(d->src[t->end - 1], t->type == MG_JSON_OBJECT ? '}' : ']');
      for (c = 0; c < t->count; c++) {
        assert_true(k < t->next);
        assert_true(d->toks[k].start > t->start && d->toks[k].end < t->end);
        if (t->type == MG_JSON_OBJECT) {
          assert_int_equal(d->toks[k].type, MG_JSON_STRING);
          assert_int_equal(d->toks[k].next, k + 1);
          k = d->toks[k + 1].next;
        } else {
          k = d->toks[k].next;
        }
      }
      assert_int_equal(k, t->next);
    } else {
      assert_int_equal(t->next, i + 1);
      assert_int_equal(t->count, 0);
    }
    if (t->type == MG_JSON_STRING) {
      assert_int_equal(d->src[t->start], '"');
      assert_int_equal(d->src[t->end - 1], '"');
      assert_int_equal(t->escaped,
                       memchr(d->src + t->start + 1, '\\',
                              t->end - t->start - 2) != NULL);
    }
  }
}

/* Canonical form of the root as a fresh string (caller frees). */
static char *canon(const char *s, const char *const *skip) {
  struct mg_json_doc d;
  struct mg_buf out;
  char *r;

  mg_json_init(&d, 100000);
  mg_buf_init(&out, 1 << 20);
  parse_ok(&d, s, strlen(s));
  assert_int_equal(mg_json_canonical(&d, 0, skip, &out), 0);
  r = mg_buf_steal(&out, NULL);
  assert_non_null(r);
  mg_json_free(&d);
  return r;
}

static void assert_canon(const char *in, const char *want) {
  char *got = canon(in, NULL);
  if (strcmp(got, want) != 0)
    fail_msg("canonical(%s) = %s, want %s", in, got, want);
  free(got);
}

/* --- scanning valid documents ------------------------------------------- */

static void test_valid_every_type(void **state) {
  (void)state;
  static const struct {
    const char *in;
    size_t len;
    enum mg_json_type type;
  } cases[] = {
      {L("{}"), MG_JSON_OBJECT},
      {L("[]"), MG_JSON_ARRAY},
      {L("\"\""), MG_JSON_STRING},
      {L("\"hello\""), MG_JSON_STRING},
      {L("0"), MG_JSON_NUMBER},
      {L("-0"), MG_JSON_NUMBER},
      {L("-0.0e-0"), MG_JSON_NUMBER},
      {L("1E+10"), MG_JSON_NUMBER},
      {L("123.456e789"), MG_JSON_NUMBER},
      {L("true"), MG_JSON_TRUE},
      {L("false"), MG_JSON_FALSE},
      {L("null"), MG_JSON_NULL},
      {L(" \t\r\n[ \t\r\n] \t\r\n"), MG_JSON_ARRAY},
      {L("{\"\":\"\"}"), MG_JSON_OBJECT},
      /* Every escape, and the boundaries of well-formed UTF-8. */
      {L("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0000\\uABCD\\uabcd\""), MG_JSON_STRING},
      {L("\"\\ud800\\udfff\\udc00\\ud83d\""), MG_JSON_STRING},
      {L("\"\x7f\""), MG_JSON_STRING},
      {L("\"\xc2\x80\xdf\xbf\""), MG_JSON_STRING},
      {L("\"\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf\""), MG_JSON_STRING},
      {L("\"\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\""), MG_JSON_STRING},
      {L("\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\""), MG_JSON_STRING},
      /* Duplicate keys are the caller's business, not the scanner's. */
      {L("{\"a\":1,\"a\":2}"), MG_JSON_OBJECT},
  };
  struct mg_json_doc d;
  size_t i;

  mg_json_init(&d, 1000);
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    parse_ok(&d, cases[i].in, cases[i].len);
    assert_int_equal(d.toks[0].type, cases[i].type);
    check_tokens(&d);
  }
  /* err may be NULL. */
  assert_int_equal(mg_json_parse(&d, L("[1]"), NULL), 0);
  mg_json_free(&d);
}

static void test_layout_header_example(void **state) {
  (void)state;
  static const char s[] = "{\"a\":[1,2],\"b\":true}";
  static const struct mg_json_tok want[] = {
      /* start end next count type escaped */
      {0, 20, 7, 2, MG_JSON_OBJECT, 0},
      {1, 4, 2, 0, MG_JSON_STRING, 0},
      {5, 10, 5, 2, MG_JSON_ARRAY, 0},
      {6, 7, 4, 0, MG_JSON_NUMBER, 0},
      {8, 9, 5, 0, MG_JSON_NUMBER, 0},
      {11, 14, 6, 0, MG_JSON_STRING, 0},
      {15, 19, 7, 0, MG_JSON_TRUE, 0},
  };
  struct mg_json_doc d;
  size_t i;

  mg_json_init(&d, 100);
  parse_ok(&d, L(s));
  assert_int_equal(d.n, 7);
  for (i = 0; i < 7; i++) {
    assert_int_equal(d.toks[i].start, want[i].start);
    assert_int_equal(d.toks[i].end, want[i].end);
    assert_int_equal(d.toks[i].next, want[i].next);
    assert_int_equal(d.toks[i].count, want[i].count);
    assert_int_equal(d.toks[i].type, want[i].type);
    assert_int_equal(d.toks[i].escaped, want[i].escaped);
  }
  check_tokens(&d);
  mg_json_free(&d);
}

static void test_layout_nested(void **state) {
  (void)state;
  static const char s[] =
      " { \"x\" : { \"y\" : [ ] , \"z\" : {} } , \"w\\n\" : [ [ 1 ] , \"s\" ] } ";
  static const struct {
    uint32_t start, end, next, count;
    uint8_t type, escaped;
  } want[] = {
      {1, 61, 12, 2, MG_JSON_OBJECT, 0},  /* 0 root */
      {3, 6, 2, 0, MG_JSON_STRING, 0},    /* 1 "x" */
      {9, 33, 7, 2, MG_JSON_OBJECT, 0},   /* 2 {y,z} */
      {11, 14, 4, 0, MG_JSON_STRING, 0},  /* 3 "y" */
      {17, 20, 5, 0, MG_JSON_ARRAY, 0},   /* 4 [ ] */
      {23, 26, 6, 0, MG_JSON_STRING, 0},  /* 5 "z" */
      {29, 31, 7, 0, MG_JSON_OBJECT, 0},  /* 6 {} */
      {36, 41, 8, 0, MG_JSON_STRING, 1},  /* 7 "w\n" */
      {44, 59, 12, 2, MG_JSON_ARRAY, 0},  /* 8 [[1],"s"] */
      {46, 51, 11, 1, MG_JSON_ARRAY, 0},  /* 9 [ 1 ] */
      {48, 49, 11, 0, MG_JSON_NUMBER, 0}, /* 10 1 */
      {54, 57, 12, 0, MG_JSON_STRING, 0}, /* 11 "s" */
  };
  struct mg_json_doc d;
  size_t i;

  mg_json_init(&d, 100);
  parse_ok(&d, L(s));
  assert_int_equal(d.n, 12);
  for (i = 0; i < 12; i++) {
    const struct mg_json_tok *t = &d.toks[i];
    struct mg_str raw = mg_json_raw(&d, (uint32_t)i);
    if (t->start != want[i].start || t->end != want[i].end ||
        t->next != want[i].next || t->count != want[i].count ||
        t->type != want[i].type || t->escaped != want[i].escaped)
      fail_msg("token %zu (%.*s): got %u..%u next %u count %u type %u esc %u",
               i, (int)raw.len, raw.p, t->start, t->end, t->next, t->count,
               t->type, t->escaped);
  }
  check_tokens(&d);
  mg_json_free(&d);
}

/* --- rejections ------------------------------------------------------- */

static void test_reject(void **state) {
  (void)state;
  static const struct {
    const char *in;
    size_t len;
    size_t off;
    const char *msg;
  } cases[] = {
      /* document structure */
      {L(""), 0, "expected value"},
      {L("   "), 3, "expected value"},
      {L("\f1"), 0, "expected value"},       /* form feed is not whitespace */
      {L("\v1"), 0, "expected value"},
      {L("\xc2\xa0" "1"), 0, "expected value"}, /* nor is U+00A0 */
      {L("1\f"), 1, "trailing characters"},
      {L("1 2"), 2, "trailing characters"},
      {L("{} {}"), 3, "trailing characters"},
      {L("[1,2]]"), 5, "trailing characters"},
      {L("nullx"), 4, "trailing characters"},
      {L("1\0"), 1, "trailing characters"},
      {L("\0"), 0, "expected value"},
      {L("// c\n1"), 0, "expected value"},
      {L("/**/1"), 0, "expected value"},
      {L("[1,]"), 3, "expected value"},
      {L("[,1]"), 1, "expected value"},
      {L("[1 2]"), 3, "expected ',' or ']'"},
      {L("[1"), 2, "expected ',' or ']'"},
      {L("["), 1, "expected value"},
      {L("]"), 0, "expected value"},
      {L("[}"), 1, "expected value"},
      {L("{]"), 1, "expected string key"},
      {L("{"), 1, "expected string key"},
      {L("{,}"), 1, "expected string key"},
      {L("{\"a\":1,}"), 7, "expected string key"},
      {L("{1:2}"), 1, "expected string key"},
      {L("{'a':1}"), 1, "expected string key"},
      {L("{a:1}"), 1, "expected string key"},
      {L("{\"a\"}"), 4, "expected ':'"},
      {L("{\"a\" 1}"), 5, "expected ':'"},
      {L("{\"a\""), 4, "expected ':'"},
      {L("{\"a\":}"), 5, "expected value"},
      {L("{\"a\":1 \"b\":2}"), 7, "expected ',' or '}'"},
      {L("{\"a\":1]"), 6, "expected ',' or '}'"},
      {L("{\"a\":1"), 6, "expected ',' or '}'"},
      /* numbers */
      {L("01"), 1, "invalid number"},
      {L("-01"), 2, "invalid number"},
      {L("[01]"), 2, "invalid number"},
      {L("-"), 1, "invalid number"},
      {L("-a"), 1, "invalid number"},
      {L("-Infinity"), 1, "invalid number"},
      {L("+1"), 0, "expected value"},
      {L(".5"), 0, "expected value"},
      {L("1."), 2, "invalid number"},
      {L("1.e5"), 2, "invalid number"},
      {L("1e"), 2, "invalid number"},
      {L("1e+"), 3, "invalid number"},
      {L("1E-x"), 3, "invalid number"},
      {L("0x10"), 1, "trailing characters"},
      {L("1.5.2"), 3, "trailing characters"},
      {L("Infinity"), 0, "expected value"},
      {L("NaN"), 0, "expected value"},
      /* literals */
      {L("tru"), 0, "invalid literal"},
      {L("truE"), 0, "invalid literal"},
      {L("True"), 0, "expected value"},
      {L("nul"), 0, "invalid literal"},
      {L("fals"), 0, "invalid literal"},
      {L("[nan]"), 1, "invalid literal"},
      /* strings: termination */
      {L("\""), 0, "unterminated string"},
      {L("\"abc"), 0, "unterminated string"},
      {L("\"abc\\"), 0, "unterminated string"},
      {L("\"abc\\\""), 0, "unterminated string"},
      {L("[\"abcdefghijklmnopqrstuvwxyz"), 1, "unterminated string"},
      /* strings: raw control characters */
      {L("\"a\x01z\""), 2, "control character in string"},
      {L("\"a\tb\""), 2, "control character in string"},
      {L("\"a\nb\""), 2, "control character in string"},
      {L("\"\0\""), 1, "control character in string"},
      {L("\"\x1f\""), 1, "control character in string"},
      {L("\"abcdefghijklmnop\x01\""), 17, "control character in string"},
      /* strings: escapes */
      {L("\"\\x\""), 1, "invalid escape"},
      {L("\"\\'\""), 1, "invalid escape"},
      {L("\"\\U0041\""), 1, "invalid escape"},
      {L("\"\\a\""), 1, "invalid escape"},
      {L("\"\\0\""), 1, "invalid escape"},
      {L("\"\\u12\""), 1, "invalid \\u escape"},
      {L("\"\\u12G4\""), 1, "invalid \\u escape"},
      {L("\"\\u\""), 1, "invalid \\u escape"},
      {L("\"\\u123"), 1, "invalid \\u escape"},
      {L("\"ab\\u 123\""), 3, "invalid \\u escape"},
      {L("\"\\ud83d\\u\""), 7, "invalid \\u escape"},
      /* strings: UTF-8 */
      {L("\"\x80\""), 1, "invalid UTF-8"},         /* lone continuation */
      {L("\"\xbf\""), 1, "invalid UTF-8"},
      {L("\"\xc0\x80\""), 1, "invalid UTF-8"},     /* overlong NUL */
      {L("\"\xc1\xbf\""), 1, "invalid UTF-8"},     /* overlong 2-byte */
      {L("\"\xe0\x80\x80\""), 1, "invalid UTF-8"}, /* overlong 3-byte */
      {L("\"\xe0\x9f\xbf\""), 1, "invalid UTF-8"},
      {L("\"\xed\xa0\x80\""), 1, "invalid UTF-8"}, /* U+D800 */
      {L("\"\xed\xbf\xbf\""), 1, "invalid UTF-8"}, /* U+DFFF */
      {L("\"\xf0\x8f\xbf\xbf\""), 1, "invalid UTF-8"}, /* overlong 4-byte */
      {L("\"\xf4\x90\x80\x80\""), 1, "invalid UTF-8"}, /* U+110000 */
      {L("\"\xf5\x80\x80\x80\""), 1, "invalid UTF-8"},
      {L("\"\xfe\""), 1, "invalid UTF-8"},
      {L("\"\xff\""), 1, "invalid UTF-8"},
      {L("\"\xc3\""), 1, "invalid UTF-8"},          /* truncated by '"' */
      {L("\"\xc3"), 1, "invalid UTF-8"},            /* truncated by the end */
      {L("\"\xe2\x82\""), 1, "invalid UTF-8"},
      {L("\"\xf0\x9f\x98\""), 1, "invalid UTF-8"},
      {L("\"\xf0\x9f\x98\x41\""), 1, "invalid UTF-8"},
      {L("\"\xc3\xa9\xc3\""), 3, "invalid UTF-8"},
      {L("\"abcdefghijklmnopqrstuvwxyz\x80\""), 27, "invalid UTF-8"},
      {L("{\"\xff\":1}"), 2, "invalid UTF-8"},
  };
  struct mg_json_doc d;
  size_t i;

  mg_json_init(&d, 1000);
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct mg_json_error err = {12345, NULL};
    int rc = mg_json_parse(&d, cases[i].in, cases[i].len, &err);
    if (rc != MG_JSON_EINVAL || err.msg == NULL ||
        strcmp(err.msg, cases[i].msg) != 0 || err.offset != cases[i].off)
      fail_msg("case %zu '%.*s': rc=%d off=%zu msg=%s (want off=%zu msg=%s)",
               i, (int)cases[i].len, cases[i].in, rc, err.offset,
               err.msg ? err.msg : "NULL", cases[i].off, cases[i].msg);
    /* A failed parse leaves no tokens behind. */
    assert_int_equal(d.n, 0);
  }
  /* NULL with length 0 is an empty document. */
  {
    struct mg_json_error err;
    assert_int_equal(mg_json_parse(&d, NULL, 0, &err), MG_JSON_EINVAL);
    assert_int_equal(err.offset, 0);
  }
  mg_json_free(&d);
}

static void test_reject_too_large(void **state) {
  (void)state;
  struct mg_json_doc d;
  struct mg_json_error err;
  size_t big = (size_t)UINT32_MAX + 1;

  if (sizeof(size_t) <= 4)
    skip();
  mg_json_init(&d, 10);
  /* Offsets are 32-bit: refused before a single byte is read. */
  assert_int_equal(mg_json_parse(&d, "1", big, &err), MG_JSON_EINVAL);
  assert_int_equal(err.offset, 0);
  assert_string_equal(err.msg, "document too large");
  mg_json_free(&d);
}

static char *nest(const char *open, const char *inner, const char *close,
                  int depth) {
  size_t lo = strlen(open), li = strlen(inner), lc = strlen(close);
  char *s = malloc((size_t)depth * (lo + lc) + li + 1), *p = s;
  int i;

  assert_non_null(s);
  for (i = 0; i < depth; i++, p += lo)
    memcpy(p, open, lo);
  memcpy(p, inner, li);
  p += li;
  for (i = 0; i < depth; i++, p += lc)
    memcpy(p, close, lc);
  *p = '\0';
  return s;
}

static void test_depth_limit(void **state) {
  (void)state;
  struct mg_json_doc d;
  struct mg_json_error err;
  char *s;

  mg_json_init(&d, 100000);
  s = nest("[", "1", "]", MG_JSON_MAX_DEPTH);
  parse_ok(&d, s, strlen(s));
  assert_int_equal(d.n, MG_JSON_MAX_DEPTH + 1);
  check_tokens(&d);
  free(s);

  s = nest("[", "", "]", MG_JSON_MAX_DEPTH + 1);
  assert_int_equal(mg_json_parse(&d, s, strlen(s), &err), MG_JSON_EDEPTH);
  assert_int_equal(err.offset, MG_JSON_MAX_DEPTH);
  free(s);

  s = nest("{\"k\":", "{}", "}", MG_JSON_MAX_DEPTH - 1);
  parse_ok(&d, s, strlen(s));
  free(s);
  s = nest("{\"k\":", "{}", "}", MG_JSON_MAX_DEPTH);
  assert_int_equal(mg_json_parse(&d, s, strlen(s), &err), MG_JSON_EDEPTH);
  free(s);

  /* Hostile nesting far past the limit fails fast, without recursion. */
  s = nest("[", "", "]", 1000000);
  assert_int_equal(mg_json_parse(&d, s, strlen(s), &err), MG_JSON_EDEPTH);
  free(s);
  /* Siblings do not add depth. */
  {
    static char wide[1 + 5 * 1000 + 3];
    int i;
    strcpy(wide, "[");
    for (i = 0; i < 1000; i++)
      strcat(wide, "[[]],");
    strcat(wide, "1]");
    parse_ok(&d, wide, strlen(wide));
    assert_int_equal(d.toks[0].count, 1001);
  }
  mg_json_free(&d);
}

static void test_token_limit(void **state) {
  (void)state;
  struct mg_json_doc d;
  struct mg_json_error err;

  mg_json_init(&d, 3);
  parse_ok(&d, L("[1,2]"));
  assert_int_equal(d.n, 3);
  parse_ok(&d, L("{\"a\":1}")); /* keys are tokens too */
  assert_int_equal(mg_json_parse(&d, L("[1,2,3]"), &err), MG_JSON_ETOOMANY);
  assert_int_equal(err.offset, 5);
  assert_int_equal(d.n, 0);
  assert_int_equal(mg_json_parse(&d, L("{\"a\":1,\"b\":2}"), &err),
                   MG_JSON_ETOOMANY);
  assert_true(d.cap <= 3);
  mg_json_free(&d);

  /* A ceiling of zero refuses everything. */
  mg_json_init(&d, 0);
  assert_int_equal(mg_json_parse(&d, L("1"), &err), MG_JSON_ETOOMANY);
  mg_json_free(&d);
}

static void test_reuse(void **state) {
  (void)state;
  static const char *docs[] = {
      "{\"model\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
      "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]",
      "\"just a string\"",
      "{\"broken\":",
      "42",
  };
  struct mg_json_doc d;
  char big[4096];
  uint32_t cap;
  int i;

  mg_json_init(&d, 10000);
  /* Grow once for a big document... */
  strcpy(big, "[");
  for (i = 0; i < 500; i++)
    strcat(big, i ? ",0" : "0");
  strcat(big, "]");
  parse_ok(&d, big, strlen(big));
  assert_int_equal(d.n, 501);
  cap = d.cap;
  /* ...then many parses reuse the same array. */
  for (i = 0; i < 10000; i++) {
    const char *s = docs[i % 5];
    int rc = mg_json_parse(&d, s, strlen(s), NULL);
    if (i % 5 == 3) {
      assert_int_equal(rc, MG_JSON_EINVAL);
      assert_int_equal(d.n, 0);
      continue;
    }
    assert_int_equal(rc, 0);
    check_tokens(&d);
    assert_int_equal(d.cap, cap);
  }
  parse_ok(&d, L("{\"a\":[true]}"));
  assert_int_equal(d.n, 4);
  assert_int_equal(d.toks[3].type, MG_JSON_TRUE);
  mg_json_free(&d);
  assert_null(d.toks);
  /* Usable again after free. */
  parse_ok(&d, L("[null]"));
  assert_int_equal(d.n, 2);
  mg_json_free(&d);
}

/* --- navigation --------------------------------------------------------- */

static void test_get(void **state) {
  (void)state;
  static const char s[] =
      "{\"model\":\"m\",\"a\\u0062c\":1,\"x\\/y\":2,\"\":3,\"caf\xc3\xa9\":4,"
      "\"caf\\u00e9\":5,\"nested\":{\"model\":6},\"dup\":7,\"dup\":8,"
      "\"\\ud83d\\ude00\":9,\"q\\\"\":10}";
  struct mg_json_doc d;
  int64_t v;

#define GETV(key, want)                                                      \
  do {                                                                       \
    uint32_t i_ = mg_json_get(&d, 0, key, sizeof(key) - 1);                  \
    assert_int_not_equal(i_, MG_JSON_NOTFOUND);                              \
    assert_int_equal(mg_json_int(&d, i_, &v), 0);                            \
    assert_int_equal(v, want);                                               \
  } while (0)

  mg_json_init(&d, 100);
  parse_ok(&d, L(s));
  assert_true(mg_json_str_eq(&d, mg_json_getc(&d, 0, "model"), "m", 1));
  GETV("abc", 1);
  GETV("x/y", 2);
  GETV("", 3);
  GETV("caf\xc3\xa9", 4); /* the raw spelling comes first */
  GETV("dup", 7);         /* the first duplicate wins */
  GETV("\xf0\x9f\x98\x80", 9);
  GETV("q\"", 10);
  assert_int_equal(mg_json_getc(&d, 0, "ab"), MG_JSON_NOTFOUND);
  assert_int_equal(mg_json_getc(&d, 0, "abcd"), MG_JSON_NOTFOUND);
  assert_int_equal(mg_json_getc(&d, 0, "a\\u0062c"), MG_JSON_NOTFOUND);
  assert_int_equal(mg_json_getc(&d, 0, "missing"), MG_JSON_NOTFOUND);
  /* Only direct members, not nested ones. */
  {
    uint32_t n = mg_json_getc(&d, 0, "nested");
    assert_int_equal(mg_json_int(&d, mg_json_getc(&d, n, "model"), &v), 0);
    assert_int_equal(v, 6);
  }
  /* Not an object, or out of range. */
  assert_int_equal(mg_json_getc(&d, 1, "model"), MG_JSON_NOTFOUND);
  assert_int_equal(mg_json_getc(&d, d.n, "model"), MG_JSON_NOTFOUND);
  assert_int_equal(mg_json_getc(&d, MG_JSON_NOTFOUND, "model"),
                   MG_JSON_NOTFOUND);
  /* Keys are bytes: an embedded NUL is part of the key. */
  parse_ok(&d, L("{\"a\\u0000b\":1,\"a\":2}"));
  assert_int_equal(mg_json_get(&d, 0, "a\0b", 3), 2);
  assert_int_equal(mg_json_get(&d, 0, "a", 1), 4);
  /* An empty object. */
  parse_ok(&d, L("{}"));
  assert_int_equal(mg_json_get(&d, 0, "", 0), MG_JSON_NOTFOUND);
  mg_json_free(&d);
#undef GETV
}

static void test_at(void **state) {
  (void)state;
  struct mg_json_doc d;
  int64_t v;

  mg_json_init(&d, 100);
  parse_ok(&d, L("[[1,[2]],{\"a\":[3]},\"s\",4]"));
  assert_int_equal(mg_json_at(&d, 0, 0), 1);
  assert_int_equal(mg_json_at(&d, 0, 1), 5);
  assert_int_equal(mg_json_at(&d, 0, 2), 9);
  assert_int_equal(mg_json_int(&d, mg_json_at(&d, 0, 3), &v), 0);
  assert_int_equal(v, 4);
  assert_int_equal(mg_json_at(&d, 0, 4), MG_JSON_NOTFOUND);
  assert_int_equal(mg_json_at(&d, 0, UINT32_MAX), MG_JSON_NOTFOUND);
  assert_int_equal(mg_json_at(&d, 5, 0), MG_JSON_NOTFOUND); /* an object */
  assert_int_equal(mg_json_at(&d, 99, 0), MG_JSON_NOTFOUND);
  assert_int_equal(mg_json_int(&d, mg_json_at(&d, mg_json_at(&d, 1, 1), 0), &v), 0);
  assert_int_equal(v, 2);
  parse_ok(&d, L("[]"));
  assert_int_equal(mg_json_at(&d, 0, 0), MG_JSON_NOTFOUND);
  mg_json_free(&d);
}

static void test_pointer(void **state) {
  (void)state;
  /* The example document of RFC 6901 section 5. */
  static const char s[] =
      "{\"foo\":[\"bar\",\"baz\"],\"\":0,\"a/b\":1,\"c%d\":2,\"e^f\":3,"
      "\"g|h\":4,\"i\\\\j\":5,\"k\\\"l\":6,\" \":7,\"m~n\":8,"
      "\"esc\\u002fkey\":9,\"t\\u007e\":10,\"deep\":{\"x\":[0,{\"y\":[11]}]}}";
  static const struct {
    const char *ptr;
    int64_t want;
  } nums[] = {
      {"/", 0},       {"/a~1b", 1}, {"/c%d", 2},     {"/e^f", 3},
      {"/g|h", 4},    {"/i\\j", 5}, {"/k\"l", 6},    {"/ ", 7},
      {"/m~0n", 8},   {"/esc~1key", 9}, {"/t~0", 10}, {"/deep/x/1/y/0", 11},
      {"/deep/x/0", 0},
  };
  static const char *absent[] = {
      "foo",        /* no leading slash */
      "/foo/01",    /* leading zero */
      "/foo/-",     /* past the end */
      "/foo/2",     "/foo/",      "/foo/0x",  "/foo/ 1",
      "/foo/99999999999999999999999",
      "/foo/0/x",   /* into a string */
      "/m~2n",      /* invalid escape */
      "/m~",        "/a/b",       "/a~1b/",   "/missing",
      "/deep/x/1/y/1",
  };
  struct mg_json_doc d;
  size_t i;
  int64_t v;

  mg_json_init(&d, 100);
  parse_ok(&d, L(s));
  assert_int_equal(mg_json_pointer(&d, 0, ""), 0);
  {
    uint32_t foo = mg_json_pointer(&d, 0, "/foo");
    assert_int_equal(d.toks[foo].type, MG_JSON_ARRAY);
    assert_true(mg_json_str_eq(&d, mg_json_pointer(&d, 0, "/foo/0"), "bar", 3));
    assert_true(mg_json_str_eq(&d, mg_json_pointer(&d, 0, "/foo/1"), "baz", 3));
    /* Relative to a non-root value. */
    assert_true(mg_json_str_eq(&d, mg_json_pointer(&d, foo, "/1"), "baz", 3));
  }
  for (i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
    uint32_t t = mg_json_pointer(&d, 0, nums[i].ptr);
    if (t == MG_JSON_NOTFOUND || mg_json_int(&d, t, &v) != 0 ||
        v != nums[i].want)
      fail_msg("pointer %s", nums[i].ptr);
  }
  for (i = 0; i < sizeof(absent) / sizeof(absent[0]); i++)
    if (mg_json_pointer(&d, 0, absent[i]) != MG_JSON_NOTFOUND)
      fail_msg("pointer %s should not resolve", absent[i]);
  assert_int_equal(mg_json_pointer(&d, d.n, ""), MG_JSON_NOTFOUND);
  assert_int_equal(mg_json_pointer(&d, 0, NULL), MG_JSON_NOTFOUND);
  mg_json_free(&d);
}

/* --- strings ---------------------------------------------------------- */

static void test_str_decode(void **state) {
  (void)state;
  static const struct {
    const char *in;
    size_t len;
    const char *want;
    size_t wlen;
    size_t chars;
  } cases[] = {
      {L("\"\""), L(""), 0},
      {L("\"plain ascii\""), L("plain ascii"), 11},
      {L("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\""), L("\"\\/\b\f\n\r\t"), 8},
      {L("\"\\u0041\\u00e9\\u20AC\""), L("A\xc3\xa9\xe2\x82\xac"), 3},
      {L("\"\\u0000\""), L("\0"), 1},
      {L("\"\\u07ff\\u0800\\uffff\""), L("\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf"), 3},
      /* a surrogate pair is one code point */
      {L("\"\\ud83d\\ude00\""), L("\xf0\x9f\x98\x80"), 1},
      {L("\"\\uDBFF\\uDFFF\""), L("\xf4\x8f\xbf\xbf"), 1},
      /* lone surrogates become U+FFFD */
      {L("\"\\ud800\""), L("\xef\xbf\xbd"), 1},
      {L("\"\\udc00\""), L("\xef\xbf\xbd"), 1},
      {L("\"x\\ud800\\u0041\""), L("x\xef\xbf\xbd" "A"), 3},
      {L("\"\\ud800\\ud800\\udc00\""), L("\xef\xbf\xbd\xf0\x90\x80\x80"), 2},
      {L("\"\\ude00\\ud83d\""), L("\xef\xbf\xbd\xef\xbf\xbd"), 2},
      {L("\"\\ud83d\\n\""), L("\xef\xbf\xbd\n"), 2},
      /* raw 2/3/4-byte UTF-8 passes through */
      {L("\"caf\xc3\xa9\""), L("caf\xc3\xa9"), 4},
      {L("\"\xe2\x82\xac\xe4\xb8\xad\""), L("\xe2\x82\xac\xe4\xb8\xad"), 2},
      {L("\"\xf0\x9f\x98\x80!\""), L("\xf0\x9f\x98\x80!"), 2},
      {L("\"a\\nb\xf0\x9f\x98\x80\\u20ac\xc3\xa9\""),
       L("a\nb\xf0\x9f\x98\x80\xe2\x82\xac\xc3\xa9"), 6},
  };
  struct mg_json_doc d;
  struct mg_buf out;
  size_t i;

  mg_json_init(&d, 10);
  mg_buf_init(&out, 1024);
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    parse_ok(&d, cases[i].in, cases[i].len);
    mg_buf_reset(&out);
    assert_int_equal(mg_json_str_decode(&d, 0, &out), 0);
    if (out.len != cases[i].wlen || memcmp(out.data, cases[i].want, out.len))
      fail_msg("case %zu: decoded %zu bytes", i, out.len);
    assert_int_equal(out.data[out.len], '\0');
    if (mg_json_str_chars(&d, 0) != cases[i].chars)
      fail_msg("case %zu: %zu chars, want %zu", i, mg_json_str_chars(&d, 0),
               cases[i].chars);
    assert_true(mg_json_str_eq(&d, 0, cases[i].want, cases[i].wlen));
    if (cases[i].wlen > 0) {
      assert_false(mg_json_str_eq(&d, 0, cases[i].want, cases[i].wlen - 1));
    }
    assert_false(mg_json_str_eq(&d, 0, "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", cases[i].wlen + 1));
  }
  mg_buf_free(&out);

  /* Decoding appends; the ceiling applies to the decoded size. */
  parse_ok(&d, L("\"\\u0041\\u0042\\u0043\""));
  mg_buf_init(&out, 4);
  assert_int_equal(mg_buf_append(&out, "x", 1), 0);
  assert_int_equal(mg_json_str_decode(&d, 0, &out), 0);
  assert_string_equal(out.data, "xABC");
  assert_int_equal(mg_json_str_decode(&d, 0, &out), -E2BIG);
  assert_string_equal(out.data, "xABC");
  mg_buf_free(&out);

  /* Not a string. */
  parse_ok(&d, L("[1]"));
  mg_buf_init(&out, 100);
  assert_int_equal(mg_json_str_decode(&d, 1, &out), -EINVAL);
  assert_int_equal(mg_json_str_decode(&d, 7, &out), -EINVAL);
  assert_int_equal(mg_json_str_chars(&d, 1), 0);
  assert_false(mg_json_str_eq(&d, 1, "1", 1));
  assert_null(mg_json_str_raw(&d, 1).p);
  mg_buf_free(&out);
  mg_json_free(&d);
}

/* Long strings: the word-at-a-time paths of the scanner and of
 * mg_json_str_chars, with multi-byte sequences and escapes at every
 * alignment. */
static void test_str_long(void **state) {
  static const struct {
    const char *piece;
    const char *decoded;
    size_t chars;
  } pieces[] = {
      {"a", "a", 1},
      {"hello, world", "hello, world", 12},
      {"\xc3\xa9", "\xc3\xa9", 1},
      {"\xe2\x82\xac", "\xe2\x82\xac", 1},
      {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80", 1},
      {"\\n", "\n", 1},
      {"\\u00e9", "\xc3\xa9", 1},
      {"\\ud83d\\ude00", "\xf0\x9f\x98\x80", 1},
      {"\x7f", "\x7f", 1},
  };
  struct mg_json_doc d;
  struct mg_buf src, want, got;
  int round;
  (void)state;

  mg_json_init(&d, 10);
  mg_buf_init(&src, 1 << 20);
  mg_buf_init(&want, 1 << 20);
  mg_buf_init(&got, 1 << 20);
  for (round = 0; round < 300; round++) {
    size_t chars = 0;
    int i, n = 1 + (int)(round % 40);
    unsigned seed = (unsigned)round * 2654435761u;

    mg_buf_reset(&src);
    mg_buf_reset(&want);
    mg_buf_reset(&got);
    assert_int_equal(mg_buf_puts(&src, "\""), 0);
    for (i = 0; i < n; i++) {
      size_t k;
      seed = seed * 1103515245u + 12345u;
      k = (seed >> 16) % (sizeof(pieces) / sizeof(pieces[0]));
      assert_int_equal(mg_buf_puts(&src, pieces[k].piece), 0);
      assert_int_equal(mg_buf_puts(&want, pieces[k].decoded), 0);
      chars += pieces[k].chars;
    }
    assert_int_equal(mg_buf_puts(&src, "\""), 0);
    parse_ok(&d, src.data, src.len);
    assert_int_equal(mg_json_str_chars(&d, 0), chars);
    assert_int_equal(mg_json_str_decode(&d, 0, &got), 0);
    assert_int_equal(got.len, want.len);
    assert_memory_equal(got.data, want.data, want.len);
    assert_true(mg_json_str_eq(&d, 0, want.data, want.len));
  }
  mg_buf_free(&src);
  mg_buf_free(&want);
  mg_buf_free(&got);
  mg_json_free(&d);
}

static void test_str_raw(void **state) {
  (void)state;
  struct mg_json_doc d;
  struct mg_str r;

  mg_json_init(&d, 10);
  parse_ok(&d, L(" {\"k\":\"a\\nb\", \"n\" : -1.5e3 } "));
  r = mg_json_raw(&d, 0);
  assert_int_equal(r.len, 27);
  assert_memory_equal(r.p, "{\"k\":\"a\\nb\", \"n\" : -1.5e3 }", 27);
  r = mg_json_raw(&d, 2);
  assert_true(mg_str_eq_c(r, "\"a\\nb\""));
  r = mg_json_str_raw(&d, 2);
  assert_true(mg_str_eq_c(r, "a\\nb"));
  assert_int_equal(d.toks[2].escaped, 1);
  assert_int_equal(d.toks[1].escaped, 0);
  r = mg_json_raw(&d, 4);
  assert_true(mg_str_eq_c(r, "-1.5e3"));
  assert_null(mg_json_raw(&d, 5).p);
  mg_json_free(&d);
}

/* --- numbers ------------------------------------------------------------ */

static void test_num(void **state) {
  (void)state;
  static const struct {
    const char *in;
    double want;
  } cases[] = {
      {"0", 0.0},        {"-0", -0.0},         {"1.5", 1.5},
      {"-2.5e-3", -2.5e-3}, {"1E2", 100.0},    {"1e308", 1e308},
      {"5e-324", 5e-324}, {"1e-400", 0.0},
      {"123456789012345678901234567890123456789012345678901234567890123456789.5",
       1.2345678901234568e68},
      {"0.000000000000000000000000000000000000000000000000000000000000000000001",
       1e-69},
  };
  struct mg_json_doc d;
  size_t i;
  double x;

  mg_json_init(&d, 10);
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    parse_ok(&d, cases[i].in, strlen(cases[i].in));
    assert_int_equal(mg_json_num(&d, 0, &x), 0);
    if (x != cases[i].want || signbit(x) != signbit(cases[i].want))
      fail_msg("%s -> %.17g", cases[i].in, x);
  }
  parse_ok(&d, L("[1e400,-1e400,\"1\"]"));
  assert_int_equal(mg_json_num(&d, 1, &x), 0);
  assert_true(isinf(x) && x > 0);
  assert_int_equal(mg_json_num(&d, 2, &x), 0);
  assert_true(isinf(x) && x < 0);
  assert_int_equal(mg_json_num(&d, 3, &x), -EINVAL);
  assert_int_equal(mg_json_num(&d, 0, &x), -EINVAL);
  assert_int_equal(mg_json_num(&d, 4, &x), -EINVAL);
  /* A root number ends the buffer: no terminator to rely on. */
  {
    char *p = malloc(3);
    memcpy(p, "125", 3);
    parse_ok(&d, p, 3);
    assert_int_equal(mg_json_num(&d, 0, &x), 0);
    assert_true(x == 125.0);
    free(p);
  }
  mg_json_free(&d);
}

static void test_int(void **state) {
  (void)state;
  static const struct {
    const char *in;
    int rc;
    int64_t want;
  } cases[] = {
      {"5", 0, 5},
      {"-3", 0, -3},
      {"0", 0, 0},
      {"-0", 0, 0},
      {"0.000", 0, 0},
      {"0e99999999999999999999", 0, 0},
      {"-0.0e-5", 0, 0},
      {"1e3", 0, 1000},
      {"1E+2", 0, 100},
      {"2.0", 0, 2},
      {"2.500e1", 0, 25},
      {"100e-2", 0, 1},
      {"0.5e1", 0, 5},
      {"1.23e2", 0, 123},
      {"10000000000000000000000e-4", 0, 1000000000000000000},
      {"1e18", 0, 1000000000000000000},
      {"9223372036854775807", 0, INT64_MAX},
      {"-9223372036854775808", 0, INT64_MIN},
      {"92233720368547758.07e2", 0, INT64_MAX},
      {"0.00000000000000000000009223372036854775807e41", 0, INT64_MAX},
      {"2.5", -EINVAL, 0},
      {"1.234e2", -EINVAL, 0},
      {"1e-5", -EINVAL, 0},
      {"5e-1", -EINVAL, 0},
      {"0.1", -EINVAL, 0},
      {"1e-99999999999999999999", -EINVAL, 0},
      {"9223372036854775808", -ERANGE, 0},
      {"-9223372036854775809", -ERANGE, 0},
      {"18446744073709551616", -ERANGE, 0},
      {"1e19", -ERANGE, 0},
      {"1.5e30", -ERANGE, 0},
      {"1e99999999999999999999", -ERANGE, 0},
      {"123456789012345678901234567890", -ERANGE, 0},
  };
  struct mg_json_doc d;
  size_t i;
  int64_t v;

  mg_json_init(&d, 10);
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int rc;
    parse_ok(&d, cases[i].in, strlen(cases[i].in));
    v = 424242;
    rc = mg_json_int(&d, 0, &v);
    if (rc != cases[i].rc || (rc == 0 && v != cases[i].want))
      fail_msg("%s -> rc %d v %lld", cases[i].in, rc, (long long)v);
  }
  parse_ok(&d, L("[\"5\",true,null]"));
  assert_int_equal(mg_json_int(&d, 1, &v), -EINVAL);
  assert_int_equal(mg_json_int(&d, 2, &v), -EINVAL);
  assert_int_equal(mg_json_int(&d, 3, &v), -EINVAL);
  assert_int_equal(mg_json_int(&d, 9, &v), -EINVAL);
  mg_json_free(&d);
}

/* --- canonical form ----------------------------------------------------- */

static void test_canonical_values(void **state) {
  (void)state;
  assert_canon("{\"b\":1,\"a\":[true,false,null,\"x\"]}",
               "{\"a\":[true,false,null,\"x\"],\"b\":1}");
  assert_canon(" [ ] ", "[]");
  assert_canon(" { } ", "{}");
  assert_canon("[{},[],[{}]]", "[{},[],[{}]]");
  /* keys sort by unescaped bytes */
  assert_canon("{\"b\":1,\"\\u0061\":2,\"aa\":3,\"\":4,\"\xc3\xa9\":5,\"Z\":6,"
               "\"\\u00e8\":7}",
               "{\"\":4,\"Z\":6,\"a\":2,\"aa\":3,\"b\":1,\"\xc3\xa8\":7,"
               "\"\xc3\xa9\":5}");
  /* duplicate keys stay, in document order */
  assert_canon("{\"b\":0,\"a\":2,\"a\":1}", "{\"a\":2,\"a\":1,\"b\":0}");
  /* numbers */
  assert_canon("1.0", "1");
  assert_canon("1e0", "1");
  assert_canon("-0", "0");
  assert_canon("-0.0e7", "0");
  assert_canon("0.1", "0.1");
  assert_canon("1e-7", "1e-07");
  assert_canon("1e21", "1e+21");
  assert_canon("123456.789", "123456.789");
  assert_canon("3.141592653589793", "3.141592653589793");
  assert_canon("0.30000000000000004", "0.30000000000000004");
  assert_canon("9007199254740991", "9007199254740991");
  assert_canon("-9007199254740991", "-9007199254740991");
  assert_canon("9007199254740993", "9007199254740992");
  assert_canon("1.7976931348623157e308", "1.7976931348623157e+308");
  assert_canon("1e400", "1e999");
  assert_canon("-1e400", "-1e999");
  assert_canon("1e-400", "0");
  /* strings: only '"', '\\' and control characters are escaped */
  assert_canon("\"\\/\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001F\\u007f\\u0020\"",
               "\"/\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f\x7f \"");
  assert_canon("\"\\u00e9\\u20ac\\ud83d\\ude00\\ud800\"",
               "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xef\xbf\xbd\"");
  assert_canon("\"\\u0000\"", "\"\\u0000\"");
  assert_canon("{\"\\n\":\"\\u000A\"}", "{\"\\n\":\"\\n\"}");
}

static void test_canonical_equal(void **state) {
  (void)state;
  static const char *const sets[][4] = {
      {
          "{\"model\":\"gpt\",\"messages\":[{\"role\":\"user\",\"content\":"
          "\"hi \xc3\xa9 \xf0\x9f\x98\x80\"}],\"temperature\":0.5,\"n\":1}",
          " {\n  \"n\" : 1.0 ,\t\"temperature\" : 5e-1, \"messages\" : [ {"
          " \"content\" : \"hi \\u00e9 \\ud83d\\ude00\", \"role\" : "
          "\"us\\u0065r\" } ], \"m\\u006fdel\" : \"g\\u0070t\" }\r\n",
          "{\"temperature\":0.50,\"n\":1e0,\"model\":\"gpt\",\"messages\":"
          "[{\"content\":\"hi \\u00E9 \\uD83D\\uDE00\",\"role\":\"user\"}]}",
          "{\"messages\":[{\"content\":\"hi \xc3\xa9 \xf0\x9f\x98\x80\","
          "\"role\":\"user\"}],\"model\":\"gpt\",\"n\":1,\"temperature\":0.5}",
      },
      {
          "[100,0,0.1,1e21,-2.5,1e400,12.5]",
          "[1e2,-0,1e-1,1000000000000000000000,-25e-1,1e999,125e-1]",
          "[1.00e2,0.0e0,0.10,1E+21,-0.25e1,10e400,0.125E2]",
          "[100,0,0.1,1e+21,-2.5,1e999,12.5]",
      },
      {
          "\"\\/\\\"\\\\\\b\\f\\n\\r\\t\\u0001\"",
          "\"/\\u0022\\u005c\\u0008\\u000c\\u000a\\u000D\\u0009\\u0001\"",
          "\"\\u002f\\\"\\\\\\b\\u000C\\n\\r\\t\\u0001\"",
          "\"/\\\"\\\\\\b\\f\\n\\r\\t\\u0001\"",
      },
      {
          "{\"a\":{\"z\":[1,{\"y\":2,\"x\":3}],\"b\":null},\"\\u0000\":true}",
          "{\"\\u0000\":true,\"a\":{\"b\":null,\"z\":[1,{\"x\":3,\"y\":2}]}}",
          "{ \"a\" : { \"b\" : null , \"z\" : [ 1.0 , { \"x\" : 3e0 , \"y\" :"
          " 0.2e1 } ] } , \"\\u0000\" : true }",
          "{\"\\u0000\":true,\"a\":{\"b\":null,\"z\":[1,{\"x\":3,\"y\":2}]}}",
      },
  };
  size_t s, i;

  for (s = 0; s < sizeof(sets) / sizeof(sets[0]); s++) {
    char *first = canon(sets[s][0], NULL);
    for (i = 1; i < 4; i++) {
      char *c = canon(sets[s][i], NULL);
      if (strcmp(c, first) != 0)
        fail_msg("set %zu: %s != %s", s, c, first);
      free(c);
    }
    /* The last entry of each set is the expected canonical form. */
    assert_string_equal(first, sets[s][3]);
    free(first);
  }
}

static void test_canonical_differs(void **state) {
  (void)state;
  static const char *const pairs[][2] = {
      {"{\"a\":1}", "{\"a\":2}"},
      {"{\"a\":1}", "{\"b\":1}"},
      {"[1,2]", "[2,1]"},
      {"1", "\"1\""},
      {"1", "1.0000000000000002"},
      {"0.1", "0.10000000000000002"},
      {"{\"a\":{\"b\":null}}", "{\"a\":{\"b\":false}}"},
      {"{\"a\":1,\"a\":2}", "{\"a\":2,\"a\":1}"},
      {"\"a\\u0000\"", "\"a\""},
      {"[]", "{}"},
      {"{\"a\":[]}", "{\"a\":[[]]}"},
      {"{\"ab\":1}", "{\"a\":1,\"b\":1}"},
      {"[\"a\",\"b\"]", "[\"a,b\"]"},
      {"\"\xc3\xa9\"", "\"e\\u0301\""}, /* no Unicode normalisation */
  };
  size_t i;

  for (i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
    char *a = canon(pairs[i][0], NULL), *b = canon(pairs[i][1], NULL);
    if (strcmp(a, b) == 0)
      fail_msg("%s and %s share canonical form %s", pairs[i][0], pairs[i][1], a);
    free(a);
    free(b);
  }
}

static void test_canonical_skip_keys(void **state) {
  (void)state;
  static const char *const skip[] = {"stream", "user", NULL};
  static const char *const skip_none[] = {NULL};
  char *c;

  c = canon("{\"stream\":true,\"model\":\"x\",\"user\":\"u\",\"n\":{\"stream\":1},"
            "\"\\u0073tream\":false}",
            skip);
  /* Only keys of the value itself; escaped spellings match too. */
  assert_string_equal(c, "{\"model\":\"x\",\"n\":{\"stream\":1}}");
  free(c);
  c = canon("{\"user\":1,\"stream\":2}", skip);
  assert_string_equal(c, "{}");
  free(c);
  c = canon("[\"stream\",{\"stream\":1}]", skip);
  assert_string_equal(c, "[\"stream\",{\"stream\":1}]");
  free(c);
  c = canon("{\"b\":1,\"a\":2}", skip_none);
  assert_string_equal(c, "{\"a\":2,\"b\":1}");
  free(c);
}

static void test_canonical_subvalue_and_errors(void **state) {
  (void)state;
  struct mg_json_doc d;
  struct mg_buf out;
  uint32_t m;

  mg_json_init(&d, 100);
  parse_ok(&d, L("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"model\":\"m\"}"));
  m = mg_json_getc(&d, 0, "messages");
  mg_buf_init(&out, 1000);
  assert_int_equal(mg_json_canonical(&d, m, NULL, &out), 0);
  assert_string_equal(out.data, "[{\"content\":\"x\",\"role\":\"user\"}]");
  /* Appends. */
  assert_int_equal(mg_json_canonical(&d, mg_json_getc(&d, 0, "model"), NULL, &out), 0);
  assert_string_equal(out.data, "[{\"content\":\"x\",\"role\":\"user\"}]\"m\"");
  assert_int_equal(mg_json_canonical(&d, d.n, NULL, &out), -EINVAL);
  mg_buf_free(&out);
  /* The output ceiling holds. */
  mg_buf_init(&out, 10);
  assert_int_equal(mg_json_canonical(&d, 0, NULL, &out), -E2BIG);
  mg_buf_free(&out);
  mg_json_free(&d);
}

/* The canonical form is valid JSON and its own canonical form. */
static void check_canon_fixed_point(const struct mg_json_doc *d) {
  struct mg_json_doc d2;
  struct mg_buf a, b;

  mg_buf_init(&a, 1 << 24);
  mg_buf_init(&b, 1 << 24);
  mg_json_init(&d2, 1 << 20);
  assert_int_equal(mg_json_canonical(d, 0, NULL, &a), 0);
  parse_ok(&d2, a.data, a.len);
  assert_true(d2.n <= d->n);
  assert_int_equal(mg_json_canonical(&d2, 0, NULL, &b), 0);
  if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0)
    fail_msg("canonical not a fixed point: %s vs %s", a.data, b.data);
  mg_json_free(&d2);
  mg_buf_free(&a);
  mg_buf_free(&b);
}

/* --- randomized differential test against cJSON ------------------------- */

static uint64_t rng_state = UINT64_C(0x9E3779B97F4A7C15);

static uint32_t rnd(uint32_t n) {
  /* xorshift64*: fixed seed, same sequence on every platform. */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (uint32_t)((rng_state * UINT64_C(2685821657736338717)) >> 33) % n;
}

static void put(struct mg_buf *b, const char *s) {
  assert_int_equal(mg_buf_puts(b, s), 0);
}

static void gen_ws(struct mg_buf *b) {
  static const char *ws[] = {"", "", "", " ", "\n", "\t", "\r\n  "};
  put(b, ws[rnd(7)]);
}

static void gen_string(struct mg_buf *b) {
  static const char *pieces[] = {
      "a", "hello", "Z", " ", "\\n", "\\\"", "\\\\", "\\/", "\\u00e9",
      "\\u20AC", "\\ud83d\\ude00", "\xc3\xa9", "\xe2\x82\xac",
      "\xf0\x9f\x98\x80", "\\t", "\\u0000", "\x7f", "~", "/",
  };
  int i, n = (int)rnd(6);
  put(b, "\"");
  for (i = 0; i < n; i++)
    put(b, pieces[rnd(sizeof(pieces) / sizeof(pieces[0]))]);
  put(b, "\"");
}

static void gen_number(struct mg_buf *b) {
  int i, n;
  if (rnd(2))
    put(b, "-");
  if (rnd(3) == 0) {
    put(b, "0");
  } else {
    char dig[2] = {(char)('1' + rnd(9)), 0};
    put(b, dig);
    for (n = (int)rnd(8), i = 0; i < n; i++) {
      dig[0] = (char)('0' + rnd(10));
      put(b, dig);
    }
  }
  if (rnd(3) == 0) {
    char dig[2] = {0, 0};
    put(b, ".");
    for (n = 1 + (int)rnd(6), i = 0; i < n; i++) {
      dig[0] = (char)('0' + rnd(10));
      put(b, dig);
    }
  }
  if (rnd(4) == 0) {
    static const char *e[] = {"e", "E", "e+", "e-", "E-"};
    char dig[2] = {(char)('0' + rnd(10)), 0};
    put(b, e[rnd(5)]);
    put(b, dig);
    if (rnd(2)) {
      dig[0] = (char)('0' + rnd(10));
      put(b, dig);
    }
  }
}

static void gen_value(struct mg_buf *b, int depth) {
  uint32_t k = rnd(depth > 5 ? 5 : 7);
  uint32_t i, n;

  gen_ws(b);
  switch (k) {
  case 0: gen_string(b); break;
  case 1: gen_number(b); break;
  case 2: put(b, "true"); break;
  case 3: put(b, "false"); break;
  case 4: put(b, "null"); break;
  case 5:
    put(b, "[");
    for (n = rnd(5), i = 0; i < n; i++) {
      if (i)
        put(b, ",");
      gen_value(b, depth + 1);
    }
    gen_ws(b);
    put(b, "]");
    break;
  default:
    put(b, "{");
    for (n = rnd(5), i = 0; i < n; i++) {
      if (i)
        put(b, ",");
      gen_ws(b);
      gen_string(b);
      gen_ws(b);
      put(b, ":");
      gen_value(b, depth + 1);
    }
    gen_ws(b);
    put(b, "}");
  }
  gen_ws(b);
}

static void gen_fragments(struct mg_buf *b) {
  static const char *frags[] = {
      "{", "}", "[", "]", ",", ":", "\"", "\"k\"", "\"v\"", "1", "-",
      "0", ".5", "e3", "true", "fals", "null", " ", "\n", "\\", "\\u",
      "\\ud83d", "\\ude00", "\\n", "\xc3", "\xa9", "\xed\xa0\x80", "\xff",
      "\x01", "\"\\u00", "41\"", "{\"a\":", "[1,", "]}", "\"x\":[]",
  };
  int i, n = 1 + (int)rnd(12);
  for (i = 0; i < n; i++)
    put(b, frags[rnd(sizeof(frags) / sizeof(frags[0]))]);
}

static void mutate(struct mg_buf *b) {
  static const char alphabet[] = "{}[],:\"\\ \t\n0123456789-+.eEtrufalsnu"
                                 "\x00\x01\x1f\x7f\x80\xbf\xc0\xc3\xa9\xed"
                                 "\xf0\xf4\xf5\xff";
  int i, n = 1 + (int)rnd(3);
  for (i = 0; i < n && b->len > 0; i++) {
    size_t at = rnd((uint32_t)b->len);
    char c = alphabet[rnd(sizeof(alphabet) - 1)];
    switch (rnd(4)) {
    case 0: /* replace */
      b->data[at] = c;
      break;
    case 1: /* insert */
      assert_int_equal(mg_buf_append(b, "x", 1), 0);
      memmove(b->data + at + 1, b->data + at, b->len - at - 1);
      b->data[at] = c;
      break;
    case 2: /* delete */
      memmove(b->data + at, b->data + at + 1, b->len - at - 1);
      b->len--;
      break;
    default: /* truncate */
      b->len = at;
    }
  }
}

/* cJSON is laxer than RFC 8259 in nearly everything, but it refuses lone
 * surrogate escapes (which RFC 8259 allows) and numbers longer than 63
 * bytes (its fixed-size copy). Skip the comparison for those. */
static bool cjson_may_refuse(const char *s, size_t n) {
  size_t i, run = 0;
  for (i = 0; i < n; i++) {
    if (i + 3 < n && s[i] == '\\' && s[i + 1] == 'u' &&
        (s[i + 2] | 0x20) == 'd' && strchr("89abcdefABCDEF", s[i + 3]) &&
        s[i + 3] != '\0')
      return true;
    run = strchr("0123456789+-.eE", s[i]) && s[i] ? run + 1 : 0;
    if (run >= 60)
      return true;
  }
  return false;
}

static void test_random_differential(void **state) {
  (void)state;
  struct mg_json_doc d;
  struct mg_buf b;
  int iter, accepted = 0, valid = 0, compared = 0;

  mg_json_init(&d, 1 << 20);
  mg_buf_init(&b, 1 << 20);
  for (iter = 0; iter < 30000; iter++) {
    int kind = (int)rnd(3), rc;
    mg_buf_reset(&b);
    if (kind == 2)
      gen_fragments(&b);
    else
      gen_value(&b, 0);
    if (kind == 1)
      mutate(&b);
    /* Parse from an exact-size heap copy so ASan sees any overread. */
    {
      char *copy = malloc(b.len ? b.len : 1);
      assert_non_null(copy);
      if (b.len)
        memcpy(copy, b.data, b.len);
      rc = mg_json_parse(&d, copy, b.len, NULL);
      if (kind == 0 && rc != 0)
        fail_msg("generated valid JSON refused: %.*s", (int)b.len, b.data);
      valid += kind == 0;
      if (rc == 0) {
        accepted++;
        check_tokens(&d);
        check_canon_fixed_point(&d);
        if (!cjson_may_refuse(copy, b.len)) {
          cJSON *j = cJSON_ParseWithLength(copy, b.len);
          if (j == NULL)
            fail_msg("accepted but cJSON refuses: %.*s", (int)b.len, b.data);
          cJSON_Delete(j);
          compared++;
        }
      } else {
        assert_int_equal(d.n, 0);
      }
      free(copy);
    }
  }
  /* The generator must exercise both sides. */
  assert_true(accepted > 10000 && accepted < 30000);
  assert_true(compared > 10000);
  print_message("random: %d accepted (%d generated valid), %d compared with cJSON\n",
                accepted, valid, compared);
  mg_buf_free(&b);
  mg_json_free(&d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_every_type),
      cmocka_unit_test(test_layout_header_example),
      cmocka_unit_test(test_layout_nested),
      cmocka_unit_test(test_reject),
      cmocka_unit_test(test_reject_too_large),
      cmocka_unit_test(test_depth_limit),
      cmocka_unit_test(test_token_limit),
      cmocka_unit_test(test_reuse),
      cmocka_unit_test(test_get),
      cmocka_unit_test(test_at),
      cmocka_unit_test(test_pointer),
      cmocka_unit_test(test_str_decode),
      cmocka_unit_test(test_str_long),
      cmocka_unit_test(test_str_raw),
      cmocka_unit_test(test_num),
      cmocka_unit_test(test_int),
      cmocka_unit_test(test_canonical_values),
      cmocka_unit_test(test_canonical_equal),
      cmocka_unit_test(test_canonical_differs),
      cmocka_unit_test(test_canonical_skip_keys),
      cmocka_unit_test(test_canonical_subvalue_and_errors),
      cmocka_unit_test(test_random_differential),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
