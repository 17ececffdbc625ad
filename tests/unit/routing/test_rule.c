/* test_rule.c - every targeting operator, combinators, missing values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "routing/rule.h"

struct fx {
  struct mg_json_doc doc;
  struct mg_request r;
};

static struct fx F;

/* The request every case runs against. */
static const char *const BODY =
    "{\"model\":\"m\",\"stream\":true,\"max_tokens\":256,"
    "\"tools\":[{},{}],\"messages\":[{\"role\":\"user\",\"content\":"
    "\"0123456789\"},{\"role\":\"user\",\"content\":\"abcde\"}],"
    "\"metadata\":{\"Region\":\"eu-west\",\"tier\":\"3\",\"customer\":"
    "\"acme-corp\"}}";

static int setup(void **state) {
  struct mg_request_error err;
  (void)state;
  mg_json_init(&F.doc, 1000);
  mg_request_init(&F.r, MG_EP_CHAT);
  mg_request_add_attr(&F.r, mg_str_c("role"), mg_str_c("admin"));
  return mg_request_parse(&F.r, BODY, strlen(BODY), &F.doc, &err);
}

static int teardown(void **state) {
  (void)state;
  mg_request_free(&F.r);
  mg_json_free(&F.doc);
  return 0;
}

/* Parse a condition and evaluate it; -1 when it does not parse. */
static int eval(const char *json) {
  struct mg_cfg_errors e;
  struct mg_cond c;
  cJSON *j = cJSON_Parse(json);
  int res;
  mg_cfg_errors_init(&e);
  assert_non_null(j);
  if (!mg_cond_parse(&c, j, "$.if", &e) || e.n) {
    size_t i;
    for (i = 0; i < e.n; i++)
      print_message("  %s\n", e.msgs[i]);
    res = -1;
  } else {
    res = mg_cond_eval(&c, &F.r) ? 1 : 0;
  }
  mg_cond_free(&c);
  mg_cfg_errors_free(&e);
  cJSON_Delete(j);
  return res;
}

static void test_attr_ops(void **state) {
  (void)state;
  /* names are case-insensitive: metadata "Region" matches "region" */
  assert_int_equal(eval("{\"attr\":\"region\",\"op\":\"eq\",\"value\":\"eu-west\"}"), 1);
  assert_int_equal(eval("{\"attr\":\"region\",\"op\":\"ne\",\"value\":\"eu-west\"}"), 0);
  assert_int_equal(eval("{\"attr\":\"region\",\"op\":\"in\",\"values\":[\"us\",\"eu-west\"]}"), 1);
  assert_int_equal(eval("{\"attr\":\"region\",\"op\":\"not_in\",\"values\":[\"us\",\"eu-west\"]}"), 0);
  assert_int_equal(eval("{\"attr\":\"region\",\"op\":\"not_in\",\"values\":[\"us\"]}"), 1);
  assert_int_equal(eval("{\"attr\":\"region\",\"op\":\"prefix\",\"value\":\"eu-\"}"), 1);
  assert_int_equal(eval("{\"attr\":\"region\",\"op\":\"prefix\",\"value\":\"west\"}"), 0);
  assert_int_equal(eval("{\"attr\":\"region\",\"op\":\"suffix\",\"value\":\"-west\"}"), 1);
  assert_int_equal(eval("{\"attr\":\"customer\",\"op\":\"contains\",\"value\":\"e-co\"}"), 1);
  assert_int_equal(eval("{\"attr\":\"customer\",\"op\":\"contains\",\"value\":\"xyz\"}"), 0);
  assert_int_equal(eval("{\"attr\":\"role\",\"op\":\"exists\"}"), 1);
  assert_int_equal(eval("{\"attr\":\"nope\",\"op\":\"exists\"}"), 0);
  /* numeric comparisons of attribute values */
  assert_int_equal(eval("{\"attr\":\"tier\",\"op\":\"ge\",\"value\":3}"), 1);
  assert_int_equal(eval("{\"attr\":\"tier\",\"op\":\"gt\",\"value\":3}"), 0);
  assert_int_equal(eval("{\"attr\":\"tier\",\"op\":\"lt\",\"value\":10}"), 1);
  assert_int_equal(eval("{\"attr\":\"tier\",\"op\":\"eq\",\"value\":3}"), 1);
  assert_int_equal(eval("{\"attr\":\"region\",\"op\":\"lt\",\"value\":3}"), 0);
  /* a missing attribute matches no operator but exists (and not exists) */
  assert_int_equal(eval("{\"attr\":\"nope\",\"op\":\"ne\",\"value\":\"x\"}"), 0);
  assert_int_equal(eval("{\"attr\":\"nope\",\"op\":\"not_in\",\"values\":[\"x\"]}"), 0);
  assert_int_equal(eval("{\"not\":{\"attr\":\"nope\",\"op\":\"exists\"}}"), 1);
}

static void test_input_ops(void **state) {
  (void)state;
  assert_int_equal(eval("{\"input\":\"chars\",\"op\":\"eq\",\"value\":15}"), 1);
  assert_int_equal(eval("{\"input\":\"input.chars\",\"op\":\"gt\",\"value\":14}"), 1);
  assert_int_equal(eval("{\"input\":\"chars\",\"op\":\"le\",\"value\":14}"), 0);
  assert_int_equal(eval("{\"input\":\"messages\",\"op\":\"in\",\"values\":[1,2]}"), 1);
  assert_int_equal(eval("{\"input\":\"tools\",\"op\":\"ge\",\"value\":3}"), 0);
  assert_int_equal(eval("{\"input\":\"tools\",\"op\":\"ne\",\"value\":0}"), 1);
  assert_int_equal(eval("{\"input\":\"stream\",\"op\":\"eq\",\"value\":true}"), 1);
  assert_int_equal(eval("{\"input\":\"max_tokens\",\"op\":\"lt\",\"value\":512}"), 1);
  assert_int_equal(eval("{\"input\":\"max_tokens\",\"op\":\"exists\"}"), 1);
}

static void test_combinators(void **state) {
  (void)state;
  assert_int_equal(eval("{\"all\":[{\"attr\":\"role\",\"op\":\"eq\",\"value\":\"admin\"},"
                        "{\"input\":\"tools\",\"op\":\"eq\",\"value\":2}]}"), 1);
  assert_int_equal(eval("{\"all\":[{\"attr\":\"role\",\"op\":\"eq\",\"value\":\"admin\"},"
                        "{\"input\":\"tools\",\"op\":\"eq\",\"value\":3}]}"), 0);
  assert_int_equal(eval("{\"any\":[{\"attr\":\"role\",\"op\":\"eq\",\"value\":\"x\"},"
                        "{\"input\":\"tools\",\"op\":\"eq\",\"value\":2}]}"), 1);
  assert_int_equal(eval("{\"any\":[]}"), 0);
  assert_int_equal(eval("{\"all\":[]}"), 1);
  assert_int_equal(eval("{\"not\":{\"any\":[{\"attr\":\"role\",\"op\":\"eq\",\"value\":\"admin\"}]}}"), 0);
}

static void test_invalid(void **state) {
  (void)state;
  assert_int_equal(eval("{\"attr\":\"a\",\"op\":\"like\",\"value\":\"x\"}"), -1);
  assert_int_equal(eval("{\"attr\":\"a\",\"op\":\"in\",\"value\":\"x\"}"), -1);
  assert_int_equal(eval("{\"attr\":\"a\",\"op\":\"in\",\"values\":[]}"), -1);
  assert_int_equal(eval("{\"attr\":\"a\",\"op\":\"eq\",\"values\":[\"x\"]}"), -1);
  assert_int_equal(eval("{\"attr\":\"a\",\"op\":\"exists\",\"value\":1}"), -1);
  assert_int_equal(eval("{\"attr\":\"a\",\"op\":\"lt\",\"value\":\"x\"}"), -1);
  assert_int_equal(eval("{\"attr\":\"a\",\"op\":\"in\",\"values\":[\"x\",1]}"), -1);
  assert_int_equal(eval("{\"input\":\"bytes\",\"op\":\"gt\",\"value\":1}"), -1);
  assert_int_equal(eval("{\"input\":\"chars\",\"op\":\"contains\",\"value\":\"1\"}"), -1);
  assert_int_equal(eval("{\"input\":\"chars\",\"op\":\"eq\",\"value\":\"1\"}"), -1);
  assert_int_equal(eval("{\"attr\":\"a\",\"input\":\"chars\",\"op\":\"exists\"}"), -1);
  assert_int_equal(eval("{\"all\":{}}"), -1);
  assert_int_equal(eval("{\"attr\":\"a\",\"op\":\"eq\",\"value\":\"x\",\"extra\":1}"), -1);
  assert_int_equal(eval("[]"), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_attr_ops),
      cmocka_unit_test(test_input_ops),
      cmocka_unit_test(test_combinators),
      cmocka_unit_test(test_invalid),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
