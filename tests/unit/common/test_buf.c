/* test_buf.c - growable byte buffers with a ceiling (src/common/buf.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

static void assert_buf(const struct mg_buf *b, const char *want, size_t n) {
  assert_int_equal(b->len, n);
  assert_non_null(b->data);
  assert_memory_equal(b->data, want, n);
  assert_int_equal(b->data[n], '\0');
  assert_true(b->cap > b->len);
}

static void test_append(void **state) {
  struct mg_buf b;
  (void)state;

  mg_buf_init(&b, 1000);
  assert_null(b.data);
  assert_int_equal(b.len, 0);
  assert_int_equal(mg_buf_append(&b, "abc", 3), 0);
  assert_buf(&b, "abc", 3);
  assert_int_equal(mg_buf_puts(&b, "def"), 0);
  assert_buf(&b, "abcdef", 6);
  /* Embedded NULs are bytes like any other. */
  assert_int_equal(mg_buf_append(&b, "\0x", 2), 0);
  assert_buf(&b, "abcdef\0x", 8);
  /* Appending nothing still leaves a terminated buffer. */
  assert_int_equal(mg_buf_append(&b, NULL, 0), 0);
  assert_buf(&b, "abcdef\0x", 8);
  mg_buf_free(&b);
  assert_null(b.data);
  assert_int_equal(b.len, 0);
  assert_int_equal(b.cap, 0);
  /* Usable after free, with the same ceiling. */
  assert_int_equal(mg_buf_puts(&b, "again"), 0);
  assert_buf(&b, "again", 5);
  assert_int_equal(b.max, 1000);
  mg_buf_free(&b);

  mg_buf_init(&b, 100);
  assert_int_equal(mg_buf_append(&b, "", 0), 0);
  assert_buf(&b, "", 0);
  mg_buf_free(&b);
}

static void test_ceiling(void **state) {
  struct mg_buf b;
  (void)state;

  mg_buf_init(&b, 10);
  assert_int_equal(mg_buf_append(&b, "0123456789", 10), 0);
  assert_buf(&b, "0123456789", 10);
  /* Past the ceiling: refused, and the buffer is unchanged. */
  assert_int_equal(mg_buf_append(&b, "x", 1), -E2BIG);
  assert_buf(&b, "0123456789", 10);
  assert_int_equal(mg_buf_puts(&b, "x"), -E2BIG);
  assert_int_equal(mg_buf_reserve(&b, 1), -E2BIG);
  assert_int_equal(mg_buf_reserve(&b, 0), 0);
  assert_int_equal(mg_buf_printf(&b, "%d", 1), -E2BIG);
  assert_int_equal(mg_buf_json_str(&b, "", 0), -E2BIG);
  assert_buf(&b, "0123456789", 10);
  /* Doubling never allocates far past the ceiling. */
  assert_true(b.cap <= b.max + 1);
  mg_buf_free(&b);

  /* A single oversized append, and sizes that would overflow. */
  mg_buf_init(&b, 10);
  assert_int_equal(mg_buf_append(&b, "01234567890", 11), -E2BIG);
  assert_null(b.data);
  assert_int_equal(mg_buf_append(&b, "0123", 4), 0);
  assert_int_equal(mg_buf_reserve(&b, SIZE_MAX), -E2BIG);
  assert_int_equal(mg_buf_reserve(&b, SIZE_MAX - 2), -E2BIG);
  assert_int_equal(mg_buf_reserve(&b, 7), -E2BIG);
  assert_int_equal(mg_buf_reserve(&b, 6), 0);
  assert_buf(&b, "0123", 4);
  mg_buf_free(&b);

  /* A zero ceiling holds only the empty string. */
  mg_buf_init(&b, 0);
  assert_int_equal(mg_buf_append(&b, "", 0), 0);
  assert_buf(&b, "", 0);
  assert_int_equal(mg_buf_append(&b, "x", 1), -E2BIG);
  mg_buf_free(&b);
}

/* Growth in many small steps keeps every byte. */
static void test_growth(void **state) {
  struct mg_buf b;
  size_t i;
  (void)state;

  mg_buf_init(&b, 100000);
  for (i = 0; i < 100000; i++) {
    char c = (char)('a' + i % 26);
    assert_int_equal(mg_buf_append(&b, &c, 1), 0);
  }
  assert_int_equal(b.len, 100000);
  for (i = 0; i < 100000; i++)
    assert_int_equal(b.data[i], 'a' + i % 26);
  assert_int_equal(b.data[b.len], '\0');
  assert_int_equal(mg_buf_append(&b, "x", 1), -E2BIG);
  mg_buf_free(&b);
}

static void test_printf(void **state) {
  struct mg_buf b;
  char big[1001];
  char *want;
  int n;
  (void)state;

  mg_buf_init(&b, 1 << 16);
  assert_int_equal(mg_buf_printf(&b, "%s=%d", "x", 42), 0);
  assert_buf(&b, "x=42", 4);

  /* Past the 256-byte stack buffer: formatted again into the buffer. */
  memset(big, 'y', 1000);
  big[1000] = '\0';
  assert_int_equal(mg_buf_printf(&b, "[%s|%05d]", big, 7), 0);
  want = malloc(4 + 1000 + 8 + 1);
  assert_non_null(want);
  n = snprintf(want, 4 + 1000 + 8 + 1, "x=42[%s|%05d]", big, 7);
  assert_int_equal(n, 4 + 1000 + 8);
  assert_buf(&b, want, (size_t)n);
  free(want);
  mg_buf_free(&b);

  /* Both sides of the 256-byte boundary. */
  for (n = 250; n <= 260; n++) {
    mg_buf_init(&b, 1000);
    assert_int_equal(mg_buf_printf(&b, "%*s", n, "z"), 0);
    assert_int_equal(b.len, (size_t)n);
    assert_int_equal(b.data[n - 1], 'z');
    assert_int_equal(b.data[n - 2], ' ');
    assert_int_equal(b.data[n], '\0');
    mg_buf_free(&b);
  }

  /* A long result past the ceiling is refused and changes nothing. */
  mg_buf_init(&b, 300);
  assert_int_equal(mg_buf_puts(&b, "keep"), 0);
  assert_int_equal(mg_buf_printf(&b, "%s", big), -E2BIG);
  assert_buf(&b, "keep", 4);
  assert_int_equal(mg_buf_printf(&b, "%.296s", big), 0);
  assert_int_equal(b.len, 300);
  assert_int_equal(mg_buf_printf(&b, "%s", ""), 0);
  assert_int_equal(mg_buf_printf(&b, "."), -E2BIG);
  mg_buf_free(&b);
}

static void test_json_str(void **state) {
  static const struct {
    const char *in;
    size_t len;
    const char *want;
  } cases[] = {
      {"", 0, "\"\""},
      {"plain", 5, "\"plain\""},
      {"a\"b\\c", 5, "\"a\\\"b\\\\c\""},
      {"\n\r\t", 3, "\"\\n\\r\\t\""},
      {"\x01\x1f\x7f", 3, "\"\\u0001\\u001f\\u007f\""},
      {"\b\f", 2, "\"\\u0008\\u000c\""},
      {"a\0b", 3, "\"a\\u0000b\""},
      {"/", 1, "\"/\""},
      {"caf\xc3\xa9 \xf0\x9f\x98\x80", 10, "\"caf\xc3\xa9 \xf0\x9f\x98\x80\""},
  };
  struct mg_buf b;
  size_t i;
  (void)state;

  mg_buf_init(&b, 1000);
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    mg_buf_reset(&b);
    assert_int_equal(mg_buf_json_str(&b, cases[i].in, cases[i].len), 0);
    assert_string_equal(b.data, cases[i].want);
  }
  /* It appends. */
  mg_buf_reset(&b);
  assert_int_equal(mg_buf_puts(&b, "{\"k\":"), 0);
  assert_int_equal(mg_buf_json_str(&b, "v\n", 2), 0);
  assert_int_equal(mg_buf_puts(&b, "}"), 0);
  assert_string_equal(b.data, "{\"k\":\"v\\n\"}");
  mg_buf_free(&b);

  /* Escapes count against the ceiling: "\u0001" with quotes is 8 bytes. */
  mg_buf_init(&b, 8);
  assert_int_equal(mg_buf_json_str(&b, "\x01", 1), 0);
  assert_string_equal(b.data, "\"\\u0001\"");
  mg_buf_free(&b);
  mg_buf_init(&b, 7);
  assert_int_equal(mg_buf_json_str(&b, "\x01", 1), -E2BIG);
  mg_buf_free(&b);
}

static void test_consume(void **state) {
  struct mg_buf b;
  char *before;
  (void)state;

  mg_buf_init(&b, 100);
  /* Consuming an empty, unallocated buffer is harmless. */
  mg_buf_consume(&b, 5);
  assert_int_equal(b.len, 0);
  assert_int_equal(mg_buf_puts(&b, "hello world"), 0);
  before = b.data;
  mg_buf_consume(&b, 0);
  assert_buf(&b, "hello world", 11);
  mg_buf_consume(&b, 6);
  assert_buf(&b, "world", 5);
  /* The allocation is kept: consumption moves bytes, it does not free. */
  assert_ptr_equal(b.data, before);
  mg_buf_consume(&b, 5);
  assert_buf(&b, "", 0);
  assert_int_equal(mg_buf_puts(&b, "abc"), 0);
  mg_buf_consume(&b, 1000);
  assert_buf(&b, "", 0);
  assert_int_equal(mg_buf_puts(&b, "next"), 0);
  assert_buf(&b, "next", 4);
  mg_buf_free(&b);
}

static void test_reset(void **state) {
  struct mg_buf b;
  char *p;
  size_t cap;
  (void)state;

  mg_buf_init(&b, 100);
  mg_buf_reset(&b); /* on an unallocated buffer */
  assert_null(b.data);
  assert_int_equal(mg_buf_puts(&b, "some text"), 0);
  p = b.data;
  cap = b.cap;
  mg_buf_reset(&b);
  assert_buf(&b, "", 0);
  assert_ptr_equal(b.data, p);
  assert_int_equal(b.cap, cap);
  mg_buf_free(&b);
}

/* Truncating undoes appends: the bytes after len are gone, the string is
 * terminated there, the storage is kept. */
static void test_truncate(void **state) {
  struct mg_buf b;
  char *p;
  (void)state;

  mg_buf_init(&b, 100);
  mg_buf_truncate(&b, 0); /* on an unallocated buffer */
  assert_null(b.data);
  assert_int_equal(mg_buf_puts(&b, "kept"), 0);
  assert_int_equal(mg_buf_puts(&b, ", undone"), 0);
  p = b.data;
  mg_buf_truncate(&b, 4);
  assert_buf(&b, "kept", 4);
  assert_ptr_equal(b.data, p);
  assert_int_equal(mg_buf_puts(&b, "!"), 0);
  assert_buf(&b, "kept!", 5);
  mg_buf_free(&b);
}

static void test_steal(void **state) {
  struct mg_buf b;
  size_t len = 99;
  char *p;
  (void)state;

  mg_buf_init(&b, 100);
  /* Nothing allocated yet: nothing to hand over. */
  assert_null(mg_buf_steal(&b, &len));
  assert_int_equal(len, 0);

  assert_int_equal(mg_buf_puts(&b, "owned by the caller"), 0);
  p = mg_buf_steal(&b, &len);
  assert_non_null(p);
  assert_int_equal(len, 19);
  assert_string_equal(p, "owned by the caller");
  /* The buffer forgot the allocation and is reusable. */
  assert_null(b.data);
  assert_int_equal(b.len, 0);
  assert_int_equal(b.cap, 0);
  assert_int_equal(mg_buf_puts(&b, "new"), 0);
  assert_buf(&b, "new", 3);
  assert_true(b.data != p);
  free(p);
  /* len may be NULL. */
  p = mg_buf_steal(&b, NULL);
  assert_string_equal(p, "new");
  free(p);
  mg_buf_free(&b);
}

/* A ceiling of SIZE_MAX means "no limit": `max + 1` must not wrap to a
 * zero-byte allocation (a heap overflow found in review). */
static void test_ceiling_size_max(void **state) {
  struct mg_buf b;
  (void)state;

  mg_buf_init(&b, SIZE_MAX);
  assert_int_equal(mg_buf_puts(&b, "longer than nothing at all"), 0);
  assert_buf(&b, "longer than nothing at all", 26);
  mg_buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_append),
      cmocka_unit_test(test_ceiling),
      cmocka_unit_test(test_growth),
      cmocka_unit_test(test_printf),
      cmocka_unit_test(test_json_str),
      cmocka_unit_test(test_consume),
      cmocka_unit_test(test_reset),
      cmocka_unit_test(test_truncate),
      cmocka_unit_test(test_steal),
      cmocka_unit_test(test_ceiling_size_max),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
