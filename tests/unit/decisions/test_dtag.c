/* test_dtag.c - the decision tag inside decision ids: written and read
 * back, the other digits untouched, untagged ids recognised, hashes stable
 * and never 0. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "decisions/dtag.h"
#include "decisions/feedback.h"

static void test_round_trip(void **state) {
  char id[33] = "0123456700000000fedcba9876543210";
  struct mg_dtag t = {0}, back;
  uint8_t c, k;
  (void)state;
  assert_false(mg_dtag_get(id, &back)); /* bytes 4..7 zero: untagged */
  for (c = 0; c <= 4; c++)
    for (k = 0; k <= 3; k++) {
      t.hash = mg_dtag_hash("chat", "v2");
      t.rollout = (c + k) % 2;
      t.chars = c;
      t.tools = k;
      mg_dtag_set(id, &t);
      assert_true(mg_feedback_is_decision_id(id, 32));
      assert_memory_equal(id, "01234567", 8);
      assert_memory_equal(id + 16, "fedcba9876543210", 16);
      assert_true(mg_dtag_get(id, &back));
      assert_int_equal(back.hash, t.hash);
      assert_int_equal(back.rollout, t.rollout);
      assert_int_equal(back.chars, c);
      assert_int_equal(back.tools, k);
    }
  /* A tag of hash 0 writes an untagged id. */
  memset(&t, 0, sizeof(t));
  t.rollout = true;
  mg_dtag_set(id, &t);
  assert_memory_equal(id + 8, "00000000", 8);
  assert_false(mg_dtag_get(id, &back));
}

static void test_hash(void **state) {
  char longname[600];
  uint32_t h;
  (void)state;
  h = mg_dtag_hash("chat", "v2");
  assert_int_equal(h, mg_dtag_hash("chat", "v2"));
  assert_true(h != 0 && h < (1u << 26));
  /* The separator keeps "a"+"bc" and "ab"+"c" apart. */
  assert_true(mg_dtag_hash("a", "bc") != mg_dtag_hash("ab", "c"));
  assert_true(mg_dtag_hash("chat", "v1") != h);
  memset(longname, 'x', sizeof(longname) - 1);
  longname[sizeof(longname) - 1] = '\0';
  h = mg_dtag_hash(longname, "v");
  assert_true(h != 0 && h < (1u << 26));
  assert_int_equal(h, mg_dtag_hash(longname, "v"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_hash),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
