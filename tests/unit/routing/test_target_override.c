/* test_target_override.c - runtime target overrides (min_confidence):
 * set, replace, clear, and their JSON for the state file. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "routing/target_override.h"

static void test_set_clear_json(void **state) {
  struct mg_target_overrides o, back;
  const struct mg_target_override *x;
  cJSON *j = NULL;
  char err[128];
  (void)state;
  mg_toverrides_init(&o);
  mg_toverrides_init(&back);
  assert_null(mg_toverrides_find(&o, "main"));
  assert_int_equal(mg_toverrides_set(&o, "main", 0.9, "pm", "why", 1000), 0);
  assert_int_equal(mg_toverrides_set(&o, "other", 0.2, NULL, NULL, 2000), 0);
  assert_int_equal(mg_toverrides_set(&o, "main", 0.8, "sre", NULL, 3000), 0);
  assert_int_equal(o.n, 2);
  x = mg_toverrides_find(&o, "main");
  assert_non_null(x);
  assert_true(x->min_confidence == 0.8);
  assert_string_equal(x->by, "sre");
  assert_null(x->reason);
  assert_string_equal(mg_toverrides_find(&o, "other")->by, "admin");

  assert_int_equal(mg_toverrides_to_json(&o, &j), 0);
  assert_int_equal(mg_toverrides_from_json(&back, j, err, sizeof(err)), 0);
  cJSON_Delete(j);
  assert_int_equal(back.n, 2);
  x = mg_toverrides_find(&back, "main");
  assert_true(x->min_confidence == 0.8);
  assert_string_equal(x->by, "sre");
  assert_int_equal(x->updated_ms, 3000);

  mg_toverrides_clear(&o, "main");
  mg_toverrides_clear(&o, "absent");
  assert_int_equal(o.n, 1);
  assert_null(mg_toverrides_find(&o, "main"));

  /* Malformed JSON leaves the overrides as they were. */
  j = cJSON_Parse("{\"main\":{\"min_confidence\":\"high\"}}");
  assert_int_equal(mg_toverrides_from_json(&back, j, err, sizeof(err)),
                   -EINVAL);
  assert_non_null(strstr(err, "targets.main"));
  assert_int_equal(back.n, 2);
  cJSON_Delete(j);
  mg_toverrides_free(&o);
  mg_toverrides_free(&back);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_set_clear_json),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
