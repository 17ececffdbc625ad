/* test_cache.c - the answer cache: which request differences change the
 * key and which do not, LRU eviction by entries and by bytes, TTL with a
 * fake clock, replacement, limits, reconfiguration and stats. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fallbacks/cache.h"

#define OVH MG_CACHE_ENTRY_OVERHEAD

/* The key of alias + a JSON body given as text. */
static struct mg_cache_key key_of(const char *alias, const char *json) {
  struct mg_json_doc d;
  struct mg_cache_key k;
  mg_json_init(&d, 100000);
  assert_int_equal(mg_json_parse(&d, json, strlen(json), NULL), 0);
  assert_int_equal(mg_cache_key(alias, &d, &k), 0);
  mg_json_free(&d);
  return k;
}

static bool same(struct mg_cache_key a, struct mg_cache_key b) {
  return a.hi == b.hi && a.lo == b.lo;
}

#define BASE                                                               \
  "{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":"      \
  "\"Hello\"}],\"temperature\":1,\"max_tokens\":100}"

static void test_key_invariant(void **state) {
  struct mg_cache_key k = key_of("chat", BASE);
  static const char *const equal[] = {
      /* key order, whitespace */
      "{ \"max_tokens\" : 100 , \"temperature\":1,\n\t\"messages\":[{"
      "\"content\":\"Hello\",\"role\":\"user\"}],\"model\":\"chat\"}",
      /* number spelling */
      "{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":"
      "\"Hello\"}],\"temperature\":1.0,\"max_tokens\":1e2}",
      "{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":"
      "\"Hello\"}],\"temperature\":1e0,\"max_tokens\":100.000}",
      "{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":"
      "\"Hello\"}],\"temperature\":10E-1,\"max_tokens\":0.1e3}",
      /* escape spelling, in values and in keys */
      "{\"model\":\"chat\",\"messages\":[{\"role\":\"\\u0075ser\",\"content\":"
      "\"\\u0048ello\"}],\"temperature\":1,\"max_tokens\":100}",
      "{\"model\":\"chat\",\"m\\u0065ssages\":[{\"role\":\"user\",\"content\":"
      "\"Hello\"}],\"temperature\":1,\"max_tokens\":100}",
      /* fields that do not change the answer */
      "{\"model\":\"gpt-other\",\"messages\":[{\"role\":\"user\",\"content\":"
      "\"Hello\"}],\"temperature\":1,\"max_tokens\":100}",
      "{\"messages\":[{\"role\":\"user\",\"content\":"
      "\"Hello\"}],\"temperature\":1,\"max_tokens\":100}",
      "{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":"
      "\"Hello\"}],\"temperature\":1,\"max_tokens\":100,\"user\":\"u-42\","
      "\"stream\":true,\"stream_options\":{\"include_usage\":true},"
      "\"metadata\":{\"customer\":\"acme\"}}",
      "{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":"
      "\"Hello\"}],\"temperature\":1,\"max_tokens\":100,\"user\":\"u-7\","
      "\"stream\":false,\"metadata\":{}}",
      "{\"us\\u0065r\":\"u-9\",\"model\":\"chat\",\"messages\":[{\"role\":"
      "\"user\",\"content\":\"Hello\"}],\"temperature\":1,\"max_tokens\":100}",
  };
  size_t i;
  for (i = 0; i < sizeof(equal) / sizeof(equal[0]); i++) {
    if (!same(k, key_of("chat", equal[i])))
      fail_msg("key differs for %s", equal[i]);
  }
}

static void test_key_sensitive(void **state) {
  struct mg_cache_key k = key_of("chat", BASE);
  static const char *const differ[] = {
      /* temperature */
      "{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":"
      "\"Hello\"}],\"temperature\":0.7,\"max_tokens\":100}",
      /* max_tokens */
      "{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":"
      "\"Hello\"}],\"temperature\":1,\"max_tokens\":101}",
      "{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":"
      "\"Hello\"}],\"temperature\":1}",
      /* messages: content, role, order, count */
      "{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":"
      "\"Hello!\"}],\"temperature\":1,\"max_tokens\":100}",
      "{\"model\":\"chat\",\"messages\":[{\"role\":\"system\",\"content\":"
      "\"Hello\"}],\"temperature\":1,\"max_tokens\":100}",
      "{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":"
      "\"Hello\"},{\"role\":\"user\",\"content\":\"Hello\"}],"
      "\"temperature\":1,\"max_tokens\":100}",
      /* tools */
      "{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":"
      "\"Hello\"}],\"temperature\":1,\"max_tokens\":100,\"tools\":[{\"type\":"
      "\"function\",\"function\":{\"name\":\"f\"}}]}",
      /* any other parameter, even one we do not know */
      "{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":"
      "\"Hello\"}],\"temperature\":1,\"max_tokens\":100,\"seed\":1}",
      "{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":"
      "\"Hello\"}],\"temperature\":1,\"max_tokens\":100,\"top_p\":1}",
      /* skip keys apply to the root only: a nested "model" counts */
      "{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":"
      "\"Hello\",\"model\":\"x\"}],\"temperature\":1,\"max_tokens\":100}",
      /* types matter: "1" is not 1 */
      "{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":"
      "\"Hello\"}],\"temperature\":\"1\",\"max_tokens\":100}",
  };
  size_t i;
  for (i = 0; i < sizeof(differ) / sizeof(differ[0]); i++) {
    if (same(k, key_of("chat", differ[i])))
      fail_msg("key equal for %s", differ[i]);
  }
  /* The alias is part of the key. */
  assert_false(same(k, key_of("chat2", BASE)));
  assert_false(same(k, key_of("", BASE)));
  /* The 0 byte after the alias keeps alias and body apart. */
  assert_false(same(key_of("a", "{\"b\":1}"), key_of("a{", "{\"b\":1}")));
}

static void test_key_errors(void **state) {
  struct mg_json_doc d;
  struct mg_cache_key k;
  static const char *const bad[] = {"[1,2]", "\"x\"", "1", "null"};
  size_t i;

  mg_json_init(&d, 100);
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    assert_int_equal(mg_json_parse(&d, bad[i], strlen(bad[i]), NULL), 0);
    assert_int_equal(mg_cache_key("chat", &d, &k), -EINVAL);
  }
  /* An empty object is a valid (if odd) request. */
  assert_int_equal(mg_json_parse(&d, "{}", 2, NULL), 0);
  assert_int_equal(mg_cache_key("chat", &d, &k), 0);
  mg_json_free(&d);
}

/* ------------------------------------------------------------------------ */

static struct mg_cache_key K(uint64_t n) {
  struct mg_cache_key k = {n * 0x9e3779b97f4a7c15ULL, n};
  return k;
}

static struct mg_cache_cfg cfg(uint32_t entries, uint64_t bytes,
                               uint32_t ttl) {
  struct mg_cache_cfg c = {
      .enabled = true,
      .max_entries = entries,
      .max_bytes = bytes,
      .ttl_ms = ttl,
      .serve_hits = false,
  };
  return c;
}

static bool has(struct mg_cache *c, uint64_t n, int64_t now) {
  struct mg_cache_key k = K(n);
  const char *b;
  size_t len;
  return mg_cache_get(c, &k, now, &b, &len);
}

static void put(struct mg_cache *c, uint64_t n, int64_t now, const char *s) {
  struct mg_cache_key k = K(n);
  assert_int_equal(mg_cache_put(c, &k, now, s, strlen(s)), 0);
}

static void expect(struct mg_cache *c, uint64_t n, int64_t now,
                   const char *s) {
  struct mg_cache_key k = K(n);
  const char *b = NULL;
  size_t len = 0;
  assert_true(mg_cache_get(c, &k, now, &b, &len));
  assert_int_equal(len, strlen(s));
  assert_memory_equal(b, s, len);
  assert_int_equal(b[len], '\0');
}

static void test_get_put(void **state) {
  struct mg_cache_cfg c0 = cfg(10, 1 << 20, 0);
  struct mg_cache *c = mg_cache_new(&c0);
  struct mg_cache_stats st;
  char body[] = "{\"answer\":42}";
  struct mg_cache_key k = K(1);

  assert_non_null(c);
  assert_false(has(c, 1, 0));
  assert_int_equal(mg_cache_put(c, &k, 0, body, strlen(body)), 0);
  /* The cache keeps its own copy. */
  memset(body, 'x', strlen(body));
  expect(c, 1, 0, "{\"answer\":42}");
  /* An empty answer is a valid answer. */
  put(c, 2, 0, "");
  expect(c, 2, 0, "");
  mg_cache_stats(c, &st);
  assert_int_equal(st.entries, 2);
  assert_int_equal(st.bytes, 13 + 2 * OVH);
  assert_int_equal(st.hits, 2);
  assert_int_equal(st.misses, 1);
  assert_int_equal(st.stores, 2);
  assert_int_equal(st.evictions, 0);
  assert_int_equal(st.expirations, 0);
  mg_cache_free(c);
  mg_cache_free(NULL);
}

static void test_lru_entries(void **state) {
  struct mg_cache_cfg c0 = cfg(3, 1 << 20, 0);
  struct mg_cache *c = mg_cache_new(&c0);
  struct mg_cache_stats st;

  put(c, 1, 0, "one");
  put(c, 2, 0, "two");
  put(c, 3, 0, "three");
  /* Use 1: now 2 is the least recently used. */
  expect(c, 1, 0, "one");
  put(c, 4, 0, "four");
  assert_false(has(c, 2, 0));
  expect(c, 1, 0, "one");
  expect(c, 3, 0, "three");
  expect(c, 4, 0, "four");
  /* Order now (most recent first): 4 3 1. */
  put(c, 5, 0, "five");
  assert_false(has(c, 1, 0));
  mg_cache_stats(c, &st);
  assert_int_equal(st.entries, 3);
  assert_int_equal(st.evictions, 2);
  assert_int_equal(st.bytes, 5 + 4 + 4 + 3 * OVH);
  mg_cache_free(c);
}

static void test_lru_bytes(void **state) {
  /* Room for three 100-byte answers, not four. */
  struct mg_cache_cfg c0 = cfg(100, 3 * (100 + OVH) + 50, 0);
  struct mg_cache *c = mg_cache_new(&c0);
  struct mg_cache_stats st;
  char a[101], big[551];
  struct mg_cache_key k;

  memset(a, 'a', 100);
  a[100] = '\0';
  memset(big, 'b', 550);
  big[550] = '\0';
  put(c, 1, 0, a);
  put(c, 2, 0, a);
  put(c, 3, 0, a);
  expect(c, 1, 0, a); /* 2 is now the least recently used */
  put(c, 4, 0, a);
  assert_false(has(c, 2, 0));
  assert_true(has(c, 1, 0));
  assert_true(has(c, 3, 0));
  assert_true(has(c, 4, 0));
  /* One big answer pushes out as many as it needs: 550 + OVH leaves no
   * room for any small one (order now 4 3 1, oldest first: 1, 3, 4). */
  k = K(5);
  assert_int_equal(mg_cache_put(c, &k, 0, big, 550), 0);
  mg_cache_stats(c, &st);
  assert_true(st.bytes <= c0.max_bytes);
  assert_int_equal(st.entries, 1);
  assert_int_equal(st.evictions, 4);
  expect(c, 5, 0, big);
  mg_cache_free(c);
}

static void test_too_big(void **state) {
  struct mg_cache_cfg c0 = cfg(10, 1000, 0);
  struct mg_cache *c = mg_cache_new(&c0);
  struct mg_cache_stats before, after;
  struct mg_cache_key k = K(1);
  static char buf[2000];

  put(c, 1, 0, "small");
  put(c, 2, 0, "other");
  mg_cache_stats(c, &before);
  /* Body alone under max_bytes, but not with its overhead. */
  assert_int_equal(mg_cache_put(c, &k, 0, buf, 1000 - OVH + 1), -E2BIG);
  assert_int_equal(mg_cache_put(c, &k, 0, buf, 2000), -E2BIG);
  /* Hostile sizes must not wrap the accounting. */
  assert_int_equal(mg_cache_put(c, &k, 0, buf, SIZE_MAX), -E2BIG);
  assert_int_equal(mg_cache_put(c, &k, 0, buf, SIZE_MAX - OVH + 1), -E2BIG);
  mg_cache_stats(c, &after);
  assert_memory_equal(&before, &after, sizeof(before));
  /* Replacing entry 1 by a too-big answer keeps the old one. */
  expect(c, 1, 0, "small");
  expect(c, 2, 0, "other");
  /* Exactly max_bytes fits, alone. */
  assert_int_equal(mg_cache_put(c, &k, 0, buf, 1000 - OVH), 0);
  mg_cache_stats(c, &after);
  assert_int_equal(after.entries, 1);
  assert_int_equal(after.bytes, 1000);
  mg_cache_free(c);

  /* The largest budget there is: no overflow either. */
  c0 = cfg(10, UINT64_MAX, 0);
  c = mg_cache_new(&c0);
  assert_int_equal(mg_cache_put(c, &k, 0, buf, SIZE_MAX - 8), -E2BIG);
  put(c, 1, 0, "fine");
  mg_cache_free(c);
}

static void test_ttl(void **state) {
  struct mg_cache_cfg c0 = cfg(10, 1 << 20, 1000);
  struct mg_cache *c = mg_cache_new(&c0);
  struct mg_cache_stats st;

  put(c, 1, 5000, "one");
  put(c, 2, 5500, "two");
  expect(c, 1, 5000 + 1000, "one"); /* exactly ttl old: still fresh */
  assert_false(has(c, 1, 5000 + 1001));
  mg_cache_stats(c, &st);
  assert_int_equal(st.expirations, 1);
  assert_int_equal(st.misses, 1);
  assert_int_equal(st.hits, 1);
  assert_int_equal(st.entries, 1);
  assert_int_equal(st.bytes, 3 + OVH);
  /* Gone for good, not just hidden: a second miss is no expiration. */
  assert_false(has(c, 1, 5000 + 1001));
  mg_cache_stats(c, &st);
  assert_int_equal(st.expirations, 1);
  assert_int_equal(st.misses, 2);
  /* A get does not extend the TTL; a put (replace) does. */
  expect(c, 2, 6400, "two");
  put(c, 2, 6400, "two again");
  expect(c, 2, 7300, "two again");
  assert_false(has(c, 2, 7401));
  /* A clock that runs backwards does not expire anything. */
  put(c, 3, 9000, "three");
  expect(c, 3, 100, "three");
  /* ttl 0: no expiry. */
  c0.ttl_ms = 0;
  mg_cache_configure(c, &c0);
  expect(c, 3, INT64_MAX, "three");
  mg_cache_free(c);
}

static void test_replace(void **state) {
  struct mg_cache_cfg c0 = cfg(2, 1 << 20, 0);
  struct mg_cache *c = mg_cache_new(&c0);
  struct mg_cache_stats st;

  put(c, 1, 0, "one");
  put(c, 2, 0, "two");
  /* Replacing 1 updates it and makes it the most recent: 2 goes next. */
  put(c, 1, 0, "one, longer now");
  mg_cache_stats(c, &st);
  assert_int_equal(st.entries, 2);
  assert_int_equal(st.bytes, 3 + 15 + 2 * OVH);
  assert_int_equal(st.stores, 3);
  assert_int_equal(st.evictions, 0);
  put(c, 3, 0, "three");
  assert_false(has(c, 2, 0));
  expect(c, 1, 0, "one, longer now");
  put(c, 1, 0, "1");
  expect(c, 1, 0, "1");
  mg_cache_stats(c, &st);
  assert_int_equal(st.bytes, 1 + 5 + 2 * OVH);
  mg_cache_free(c);
}

static void test_configure(void **state) {
  struct mg_cache_cfg c0 = cfg(100, 1 << 20, 0);
  struct mg_cache *c = mg_cache_new(&c0);
  struct mg_cache_stats st;
  uint64_t i;

  for (i = 0; i < 100; i++)
    put(c, i, 0, "0123456789");
  /* Use the first ten: they are the most recent now. */
  for (i = 0; i < 10; i++)
    assert_true(has(c, i, 0));
  /* Shrink by entries: the 80 least recently used go at once. */
  c0.max_entries = 20;
  mg_cache_configure(c, &c0);
  mg_cache_stats(c, &st);
  assert_int_equal(st.entries, 20);
  assert_int_equal(st.evictions, 80);
  for (i = 0; i < 10; i++)
    assert_true(has(c, i, 0));
  for (i = 90; i < 100; i++)
    assert_true(has(c, i, 0));
  assert_false(has(c, 10, 0));
  /* Shrink by bytes: room for 5. */
  c0.max_bytes = 5 * (10 + OVH);
  mg_cache_configure(c, &c0);
  mg_cache_stats(c, &st);
  assert_int_equal(st.entries, 5);
  assert_int_equal(st.bytes, 5 * (10 + OVH));
  /* Still works after the table shrank. */
  for (i = 200; i < 210; i++)
    put(c, i, 0, "abcdefghij");
  for (i = 205; i < 210; i++)
    assert_true(has(c, i, 0));
  /* Disabling clears it; enabling again starts empty. */
  c0.enabled = false;
  mg_cache_configure(c, &c0);
  mg_cache_stats(c, &st);
  assert_int_equal(st.entries, 0);
  assert_int_equal(st.bytes, 0);
  c0.enabled = true;
  mg_cache_configure(c, &c0);
  assert_false(has(c, 209, 0));
  put(c, 209, 0, "back");
  expect(c, 209, 0, "back");
  mg_cache_free(c);
}

static void test_disabled(void **state) {
  struct mg_cache_cfg c0 = cfg(10, 1 << 20, 0);
  struct mg_cache *c;
  struct mg_cache_stats st;
  struct mg_cache_key k = K(1);
  static char buf[4096];

  c0.enabled = false;
  c = mg_cache_new(&c0);
  assert_int_equal(mg_cache_put(c, &k, 0, "x", 1), 0);
  /* Even a too-big answer is simply not stored. */
  assert_int_equal(mg_cache_put(c, &k, 0, buf, sizeof(buf)), 0);
  assert_false(has(c, 1, 0));
  mg_cache_stats(c, &st);
  assert_int_equal(st.entries + st.bytes + st.hits + st.misses + st.stores +
                       st.evictions + st.expirations,
                   0);
  mg_cache_free(c);
}

static void test_many(void **state) {
  /* Many entries through a small cache: the table grows, chains stay
   * consistent, the limits always hold and nothing leaks (ASan). */
  struct mg_cache_cfg c0 = cfg(1000, 1000 * (OVH + 16), 0);
  struct mg_cache *c = mg_cache_new(&c0);
  struct mg_cache_stats st;
  char body[64];
  uint64_t i;

  for (i = 0; i < 20000; i++) {
    int n = snprintf(body, sizeof(body), "answer %llu",
                     (unsigned long long)i);
    struct mg_cache_key k = K(i % 3000);
    assert_int_equal(mg_cache_put(c, &k, (int64_t)i, body, (size_t)n), 0);
    if (i % 7 == 0)
      (void)has(c, i / 2 % 3000, (int64_t)i);
    mg_cache_stats(c, &st);
    assert_true(st.entries <= c0.max_entries);
    assert_true(st.bytes <= c0.max_bytes);
  }
  /* The last 500 are certainly there, with the right bodies. */
  for (i = 19500; i < 20000; i++) {
    snprintf(body, sizeof(body), "answer %llu", (unsigned long long)i);
    expect(c, i % 3000, 0, body);
  }
  mg_cache_free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_key_invariant),
      cmocka_unit_test(test_key_sensitive),
      cmocka_unit_test(test_key_errors),
      cmocka_unit_test(test_get_put),
      cmocka_unit_test(test_lru_entries),
      cmocka_unit_test(test_lru_bytes),
      cmocka_unit_test(test_too_big),
      cmocka_unit_test(test_ttl),
      cmocka_unit_test(test_replace),
      cmocka_unit_test(test_configure),
      cmocka_unit_test(test_disabled),
      cmocka_unit_test(test_many),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
