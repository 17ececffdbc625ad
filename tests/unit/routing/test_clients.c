/* test_clients.c - client keys (routing/clients.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "routing/clients.h"

/* FIPS 180-2, appendix B.1: SHA-256("abc"). */
static void test_sha256_reference(void **state) {
  static const unsigned char want[32] = {
      0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
      0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
      0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
  unsigned char d[32];
  (void)state;
  mg_sha256("abc", 3, d);
  assert_memory_equal(d, want, 32);
}

static void parse(struct mg_clients *c, const char *json,
                  struct mg_cfg_errors *e) {
  cJSON *j = cJSON_Parse(json);
  assert_non_null(j);
  mg_cfg_errors_init(e);
  mg_clients_parse(c, j, e);
  cJSON_Delete(j);
}

static void test_find(void **state) {
  struct mg_clients c;
  struct mg_cfg_errors e;
  (void)state;
  /* sha256("abc") for "app", and another digest. */
  parse(&c,
        "{\"keys\":{\"app\":\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9c"
        "b410ff61f20015ad\",\"other\":\"0000000000000000000000000000000000000"
        "000000000000000000000000000\"}}",
        &e);
  assert_int_equal(e.n, 0);
  assert_true(c.enabled);
  assert_int_equal(c.n, 2);
  assert_non_null(mg_clients_find(&c, "abc", 3));
  assert_string_equal(mg_clients_find(&c, "abc", 3)->name, "app");
  assert_null(mg_clients_find(&c, "abd", 3));
  assert_null(mg_clients_find(&c, "ab", 2));
  assert_null(mg_clients_find(&c, "", 0));
  mg_clients_free(&c);
  mg_cfg_errors_free(&e);
}

static void test_errors_name_the_path(void **state) {
  struct mg_clients c;
  struct mg_cfg_errors e;
  (void)state;
  parse(&c, "{\"keys\":{\"app\":\"sk-the-key-itself\"}}", &e);
  assert_true(e.n >= 1);
  assert_non_null(strstr(e.msgs[0], "$.clients.keys.app"));
  assert_null(strstr(e.msgs[0], "sk-the-key-itself"));
  mg_clients_free(&c);
  mg_cfg_errors_free(&e);
  parse(&c, "{}", &e);
  assert_int_equal(e.n, 1);
  assert_non_null(strstr(e.msgs[0], "names no client"));
  mg_clients_free(&c);
  mg_cfg_errors_free(&e);
  parse(&c, "{\"keys\":{\"a\":1},\"nope\":2}", &e);
  assert_true(e.n >= 1);
  mg_clients_free(&c);
  mg_cfg_errors_free(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sha256_reference),
      cmocka_unit_test(test_find),
      cmocka_unit_test(test_errors_name_the_path),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
