/* test_conv.c - conversation ids: the target's name survives the round
 * trip (any name, on any instance: nothing but the id and the config is
 * read), forged and foreign ids are refused, Response bodies, stream
 * events and follow-up requests are rewritten byte-exactly, and the rule
 * of DESIGN.md for a follow-up whose target is no longer allowed. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/conv.h"
#include "config/config.h"

static const char *CFG =
    "{\"targets\":{"
    "\"a-main\":{\"base_url\":\"http://up-a/v1\",\"model\":\"m1\"},"
    "\"a-canary\":{\"base_url\":\"http://up-a/v1\",\"model\":\"m2\"},"
    "\"b-other\":{\"base_url\":\"http://up-b/v1\",\"model\":\"m3\"},"
    "\"my model.v2 \xc3\xa9\":{\"base_url\":\"http://up-a/v1\",\"model\":\"m4\"},"
    "\"claude\":{\"base_url\":\"http://up-c/v1\",\"model\":\"c\","
    "\"api\":\"anthropic\"}},"
    "\"flags\":{"
    "\"same\":{\"off_variant\":\"ctl\",\"variants\":{"
    "\"ctl\":{\"target\":\"a-main\",\"weight\":50},"
    "\"trt\":{\"target\":\"a-canary\",\"weight\":50}}},"
    "\"diff\":{\"off_variant\":\"ctl\",\"variants\":{"
    "\"ctl\":{\"target\":\"a-main\",\"weight\":50},"
    "\"trt\":{\"target\":\"b-other\",\"weight\":50}}}},"
    "\"aliases\":{\"same\":{\"flag\":\"same\"},\"diff\":{\"flag\":\"diff\"},"
    "\"direct\":{\"target\":\"b-other\"}}}";

struct fx {
  struct mg_config *cfg;
  struct mg_json_doc doc;
  struct mg_buf out;
};

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof(*f));
  struct mg_cfg_errors e;
  size_t i;
  mg_cfg_errors_init(&e);
  f->cfg = mg_config_load_string(CFG, strlen(CFG), "test", &e);
  for (i = 0; i < e.n; i++)
    print_message("config error: %s\n", e.msgs[i]);
  mg_cfg_errors_free(&e);
  assert_non_null(f->cfg);
  mg_json_init(&f->doc, 10000);
  mg_buf_init(&f->out, 1 << 20);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fx *f = *state;
  mg_config_unref(f->cfg);
  mg_json_free(&f->doc);
  mg_buf_free(&f->out);
  free(f);
  return 0;
}

static const struct mg_target *T(struct fx *f, const char *name) {
  const struct mg_target *t = mg_targets_find(&f->cfg->targets, name);
  assert_non_null(t);
  return t;
}

static void test_round_trip(void **state) {
  struct fx *f = *state;
  const char *names[] = {"a-main", "a-canary", "b-other",
                         "my model.v2 \xc3\xa9", NULL};
  const struct mg_target *t;
  struct mg_str up;
  char id[MG_CONV_ID_MAX];
  int i;

  /* RFC 4648 base32 of "a-main", lower case, no padding (worked by hand:
   * 61 2d 6d 61 69 6e -> 01100 00100 10110 10110 11010 11000 01011 01001
   * 01101 110(00) -> 12 4 22 22 26 24 11 9 13 24 -> m e w w 2 y l j n y;
   * Python's base64.b32encode(b"a-main") agrees) */
  assert_int_equal(mg_conv_wrap("a-main", mg_str_c("resp_123"), id,
                                sizeof(id)),
                   0);
  assert_string_equal(id, "resp_mgmeww2yljny_resp_123");
  for (i = 0; names[i]; i++) {
    assert_int_equal(
        mg_conv_wrap(names[i], mg_str_c("resp_68cd-x.y_z"), id, sizeof(id)),
        0);
    assert_int_equal(strncmp(id, "resp_mg", 7), 0);
    /* another process with the same config reads it back: only the
     * name is in the id */
    assert_int_equal(
        mg_conv_unwrap(mg_str_c(id), &f->cfg->targets, &t, &up), 0);
    assert_ptr_equal(t, T(f, names[i]));
    assert_true(mg_str_eq_c(up, "resp_68cd-x.y_z"));
  }
  /* an id wrapped twice (modelgate behind modelgate) unwraps one layer */
  assert_int_equal(mg_conv_wrap("a-main",
                                mg_str_c("resp_mgmeww2yljny_resp_1"), id,
                                sizeof(id)),
                   0);
  assert_int_equal(mg_conv_unwrap(mg_str_c(id), &f->cfg->targets, &t, &up), 0);
  assert_true(mg_str_eq_c(up, "resp_mgmeww2yljny_resp_1"));
  /* ids that cannot be wrapped */
  assert_int_equal(mg_conv_wrap("a-main", mg_str_c(""), id, sizeof(id)),
                   -EINVAL);
  assert_int_equal(mg_conv_wrap("a-main", mg_str_c("a/b"), id, sizeof(id)),
                   -EINVAL);
  assert_int_equal(mg_conv_wrap("a-main", mg_str_c("resp_1"), id, 20),
                   -E2BIG);
}

static void test_forged(void **state) {
  struct fx *f = *state;
  const struct mg_target *t;
  struct mg_str up;
  char id[MG_CONV_ID_MAX];
  const char *bad[] = {
      "resp_123",                    /* the upstream's own id */
      "resp_mg",                     /* nothing after the prefix */
      "resp_mgmeww2yljny",           /* no upstream id */
      "resp_mgmeww2yljny_",          /* an empty one */
      "resp_mgmeww2yljnz_resp_1",    /* non-canonical: low bits set */
      "resp_mgmewW2yljny_resp_1",    /* upper case is not the alphabet */
      "resp_mgm_resp_1",             /* 1 character: no whole byte */
      "resp_mgnfxw2zlt_resp_1",      /* "iomes": no such target */
      "resp_mgmeww2yljny_resp_1/x",  /* a path byte in the upstream id */
      "resp_mgmewW2yljny_resp_1\"",  /* a quote */
      NULL};
  int i;
  for (i = 0; bad[i]; i++) {
    t = (const void *)1;
    assert_int_equal(mg_conv_unwrap(mg_str_c(bad[i]), &f->cfg->targets, &t,
                                    &up),
                     -ENOENT);
    assert_null(t);
  }
  /* a name of an Anthropic target holds no stored responses */
  assert_int_equal(mg_conv_wrap("claude", mg_str_c("resp_1"), id, sizeof(id)),
                   0);
  assert_int_equal(mg_conv_unwrap(mg_str_c(id), &f->cfg->targets, &t, &up),
                   -ENOENT);
  /* a target renamed or removed since: not found on this config */
  assert_int_equal(mg_conv_wrap("gone", mg_str_c("resp_1"), id, sizeof(id)),
                   0);
  assert_int_equal(mg_conv_unwrap(mg_str_c(id), &f->cfg->targets, &t, &up),
                   -ENOENT);
  /* an answer modelgate made has no state anywhere */
  assert_int_equal(mg_conv_local_id("0123abcd", id, sizeof(id)), 0);
  assert_string_equal(id, "resp_mg_0123abcd");
  assert_int_equal(mg_conv_unwrap(mg_str_c(id), &f->cfg->targets, &t, &up),
                   -EPERM);
}

static void scan(struct mg_json_doc *d, const char *s) {
  assert_int_equal(mg_json_parse(d, s, strlen(s), NULL), 0);
}

/* Exactly the id and previous_response_id values change. */
static void test_rewrite_response(void **state) {
  struct fx *f = *state;
  scan(&f->doc, "{\"previous_response_id\" : \"resp_0\", \"id\":\"resp_1\","
                "\"object\":\"response\",\"output\":[{\"id\":\"msg_1\"}]}");
  assert_int_equal(mg_conv_rewrite_response(&f->doc, "a-main", &f->out), 0);
  assert_string_equal(f->out.data,
                      "{\"previous_response_id\" : "
                      "\"resp_mgmeww2yljny_resp_0\", "
                      "\"id\":\"resp_mgmeww2yljny_resp_1\","
                      "\"object\":\"response\",\"output\":[{\"id\":"
                      "\"msg_1\"}]}");
  /* DELETE's answer; a null previous id stays null */
  mg_buf_reset(&f->out);
  scan(&f->doc, "{\"id\":\"resp_1\",\"object\":\"response\",\"deleted\":true,"
                "\"previous_response_id\":null}");
  assert_int_equal(mg_conv_rewrite_response(&f->doc, "a-main", &f->out), 0);
  assert_string_equal(f->out.data,
                      "{\"id\":\"resp_mgmeww2yljny_resp_1\",\"object\":"
                      "\"response\",\"deleted\":true,"
                      "\"previous_response_id\":null}");
  /* an error body passes unchanged */
  mg_buf_reset(&f->out);
  scan(&f->doc, "{\"error\":{\"message\":\"x\"}}");
  assert_int_equal(mg_conv_rewrite_response(&f->doc, "a-main", &f->out), 0);
  assert_string_equal(f->out.data, "{\"error\":{\"message\":\"x\"}}");
}

static void test_rewrite_event(void **state) {
  struct fx *f = *state;
  scan(&f->doc, "{\"type\":\"response.created\",\"sequence_number\":0,"
                "\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\","
                "\"previous_response_id\":\"resp_0\"}}");
  assert_int_equal(mg_conv_rewrite_event(&f->doc, "a-main", &f->out), 1);
  assert_string_equal(f->out.data,
                      "{\"type\":\"response.created\",\"sequence_number\":0,"
                      "\"response\":{\"id\":\"resp_mgmeww2yljny_resp_1\","
                      "\"status\":\"in_progress\",\"previous_response_id\":"
                      "\"resp_mgmeww2yljny_resp_0\"}}");
  /* deltas carry item ids only: relayed as they are */
  mg_buf_reset(&f->out);
  scan(&f->doc, "{\"type\":\"response.output_text.delta\",\"item_id\":"
                "\"msg_1\",\"delta\":\"resp_1\"}");
  assert_int_equal(mg_conv_rewrite_event(&f->doc, "a-main", &f->out), 0);
  assert_int_equal(f->out.len, 0);
}

static void test_unwrap_request(void **state) {
  struct fx *f = *state;
  const char *body = "{\"model\":\"m\",\"previous_response_id\":"
                     "\"resp_mgmeww2yljny_resp_0\",\"input\":\"more\"}";
  const struct mg_target *t;
  struct mg_str up;
  uint32_t tok;
  scan(&f->doc, body);
  tok = mg_json_getc(&f->doc, 0, "previous_response_id");
  assert_int_equal(mg_conv_unwrap(mg_json_str_raw(&f->doc, tok),
                                  &f->cfg->targets, &t, &up),
                   0);
  assert_ptr_equal(t, T(f, "a-main"));
  assert_int_equal(mg_conv_unwrap_request(&f->doc, tok, up, &f->out), 0);
  assert_string_equal(f->out.data, "{\"model\":\"m\",\"previous_response_id\":"
                                   "\"resp_0\",\"input\":\"more\"}");
  assert_int_equal(mg_conv_unwrap_request(&f->doc, 0, up, &f->out), -EINVAL);
}

static const struct mg_alias *A(struct fx *f, const char *name) {
  const struct mg_alias *a = mg_route_lookup(&f->cfg->routes, mg_str_c(name));
  assert_non_null(a);
  return a;
}

/* DESIGN.md: the pinned target while allowed; else the flag's current
 * choice when it shares the stored state; else conversation_unavailable. */
static void test_pin(void **state) {
  struct fx *f = *state;
  const struct mg_flag *same = mg_flags_find(&f->cfg->flags, "same");
  const struct mg_flag *diff = mg_flags_find(&f->cfg->flags, "diff");
  struct mg_flag_state st;
  uint32_t w[2] = {10000, 0};

  /* the same variant (the unit's arm did not change) */
  mg_flag_state_init(&st, same);
  assert_int_equal(mg_conv_pin(A(f, "same"), &st, 0, T(f, "a-canary"),
                               T(f, "a-canary")),
                   MG_PIN_STAY);
  /* another arm chosen now (a request without a unit, a weight change),
   * but the pinned variant still serves: the conversation stays */
  assert_int_equal(mg_conv_pin(A(f, "same"), &st, 0, T(f, "a-canary"),
                               T(f, "a-main")),
                   MG_PIN_STAY);
  /* variant killed, the control on the same upstream and key: moves */
  st.killed = true;
  assert_int_equal(mg_conv_pin(A(f, "same"), &st, 0, T(f, "a-canary"),
                               T(f, "a-main")),
                   MG_PIN_MOVE);
  /* rolled back to 0% towards another upstream: unavailable */
  mg_flag_state_init(&st, diff);
  assert_int_equal(mg_flag_state_set_weights(&st, diff, w), 0);
  assert_int_equal(mg_conv_pin(A(f, "diff"), &st, 0, T(f, "b-other"),
                               T(f, "a-main")),
                   MG_PIN_UNAVAILABLE);
  /* ... and killed, likewise */
  mg_flag_state_init(&st, diff);
  st.killed = true;
  assert_int_equal(mg_conv_pin(A(f, "diff"), &st, 0, T(f, "b-other"),
                               T(f, "a-main")),
                   MG_PIN_UNAVAILABLE);
  /* a direct alias allows its target only */
  assert_int_equal(mg_conv_pin(A(f, "direct"), NULL, 0, T(f, "b-other"),
                               T(f, "b-other")),
                   MG_PIN_STAY);
  assert_int_equal(mg_conv_pin(A(f, "direct"), NULL, 0, T(f, "a-main"),
                               T(f, "b-other")),
                   MG_PIN_UNAVAILABLE);
  assert_string_equal(mg_conv_pin_name(MG_PIN_MOVE), "move");
  assert_true(mg_target_shares_state(T(f, "a-main"), T(f, "a-canary")));
  assert_false(mg_target_shares_state(T(f, "a-main"), T(f, "b-other")));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_forged, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rewrite_response, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rewrite_event, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unwrap_request, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pin, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
