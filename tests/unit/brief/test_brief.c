/* test_brief.c - brief/brief.c: a flag's release brief and CS handoff
 * against a fixed config and start date; the loader's errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "brief/brief.h"
#include "common/time.h"
#include "config/config.h"

static const char *const cfg_json =
    "{\"admin\": {\"listen\": \"127.0.0.1:8081\"},"
    " \"feedback\": {\"metrics\": {\"thumbs_up\": {\"type\": \"boolean\"}}},"
    " \"targets\": {"
    "  \"chat-v1\": {\"base_url\": \"http://127.0.0.1:9900/v1\", \"model\": \"m\"},"
    "  \"chat-v2\": {\"base_url\": \"http://127.0.0.1:9900/v1\", \"model\": \"m\"}},"
    " \"flags\": {\"chat-model\": {"
    "  \"off_variant\": \"stable\","
    "  \"variants\": {\"stable\": {\"target\": \"chat-v1\", \"weight\": 100},"
    "               \"canary\": {\"target\": \"chat-v2\", \"weight\": 0}},"
    "  \"brief\": {\"summary\": \"chat-v2 for the web chat\","
    "            \"changes\": \"Answers come from chat-v2: shorter.\","
    "            \"audience\": \"Users of the web chat\","
    "            \"contact\": \"#ml-releases\"},"
    "  \"decide\": {\"metric\": \"thumbs_up\", \"min_lift\": 0.02,"
    "    \"guardrails\": {\"cost_per_request\": {\"max_ratio\": 1.1}}},"
    "  \"ramp\": {\"variant\": \"canary\", \"interval_ms\": 10000,"
    "    \"steps\": [{\"weight\": 1, \"hold_ms\": 600000},"
    "              {\"weight\": 25, \"hold_ms\": 3600000, \"manual\": true},"
    "              {\"weight\": 100}]},"
    "  \"guards\": {\"window_ms\": 300000, \"min_requests\": 200,"
    "    \"consecutive\": 2, \"max_error_rate\": 0.05,"
    "    \"max_error_ratio\": 2, \"max_p95_ms\": 8000}}},"
    " \"aliases\": {\"gpt-4o\": {\"flag\": \"chat-model\"}}}";

static char *render(enum mg_brief_format fmt) {
  struct mg_cfg_errors e;
  struct mg_config *c;
  struct mg_buf out;
  int64_t start;
  char *s;
  mg_cfg_errors_init(&e);
  c = mg_config_load_string(cfg_json, strlen(cfg_json), "t", &e);
  if (c == NULL && e.n)
    fprintf(stderr, "%s\n", e.msgs[0]);
  assert_non_null(c);
  mg_cfg_errors_free(&e);
  assert_int_equal(mg_rfc3339_parse("2026-12-07T09:00:00Z", &start), 0);
  mg_buf_init(&out, 1u << 20);
  assert_int_equal(mg_brief_render(&c->flags.v[0], &c->briefs.v[0],
                                   &c->ramps.v[0], "127.0.0.1:8081", start,
                                   fmt, &out),
                   0);
  assert_string_equal(mg_brief_summary(&c->briefs.v[0]),
                      "chat-v2 for the web chat");
  s = strdup(out.data);
  mg_buf_free(&out);
  mg_config_unref(c);
  return s;
}

#define HAS(s, x)                                                            \
  do {                                                                       \
    if (strstr((s), (x)) == NULL)                                            \
      fail_msg("missing: %s\nin:\n%s", (x), (s));                            \
  } while (0)

static void test_text(void **state) {
  char *s = render(MG_BRIEF_TEXT);
  (void)state;
  HAS(s, "Release brief: chat-model - chat-v2 for the web chat\n====");
  HAS(s, "What changes: Answers come from chat-v2: shorter.\n");
  HAS(s, "For whom: Users of the web chat\n");
  HAS(s, "Contact: #ml-releases\n");
  /* The dates come from the holds. */
  HAS(s, "  1. 1% of units from 2026-12-07 09:00 UTC, held 10min; advances "
         "at the earliest 2026-12-07 09:10 UTC\n");
  HAS(s, "  2. 25% of units from 2026-12-07 09:10 UTC, held 1h; waits for a "
         "human promote (earliest 2026-12-07 10:10 UTC)\n");
  HAS(s, "  3. 100% of units from 2026-12-07 10:10 UTC; final\n");
  /* Exit criteria in words. */
  HAS(s, "the error rate of canary stays at or below 5% over any 5min "
         "window");
  HAS(s, "the p95 latency of canary stays at or below 8000 ms");
  HAS(s, "the error rate of canary is not shown to exceed 2x stable's");
  HAS(s, "2 breached checks in a row roll the ramp back to 0% at once");
  /* ...and the decide rule: what ships it. */
  HAS(s, "To ship canary (the decide rule `modelgate report -c` applies):\n");
  HAS(s, "  - feedback thumbs_up of canary is at least 0.02 above stable's, "
         "at 95% confidence");
  HAS(s, "  - and its cost_per_request is at most 1.1x stable's\n");
  HAS(s, "http://127.0.0.1:8081/admin/flags/chat-model/kill");
  HAS(s, "Customer-support handoff\n");
  HAS(s, "When: from 2026-12-07 09:00 UTC; everyone in scope by 2026-12-07 "
         "10:10 UTC at the earliest\n");
  free(s);
}

static void test_markdown(void **state) {
  char *s = render(MG_BRIEF_MARKDOWN);
  (void)state;
  HAS(s, "# Release brief: chat-model - chat-v2 for the web chat\n\n");
  HAS(s, "**For whom:** Users of the web chat\n\n");
  HAS(s, "| step | canary gets | from | held | then |\n|---|---|---|---|---|\n");
  HAS(s, "| 2 | 25% | 2026-12-07 09:10 UTC | 1h | waits for a human promote "
         "(earliest 2026-12-07 10:10 UTC) |\n");
  HAS(s, "## Exit criteria\n\n");
  HAS(s, "## Customer-support handoff\n\n");
  free(s);
}

static void test_errors_name_their_path(void **state) {
  const char *bad =
      "{\"targets\": {\"a\": {\"base_url\": \"http://127.0.0.1:1/v1\", \"model\": \"m\"}},"
      " \"flags\": {\"f\": {\"variants\": {\"x\": {\"target\": \"a\"}},"
      "  \"brief\": {\"contact\": 3, \"whom\": \"x\"}}}}";
  struct mg_cfg_errors e;
  struct mg_config *c;
  size_t i;
  bool type = false, key = false;
  (void)state;
  mg_cfg_errors_init(&e);
  c = mg_config_load_string(bad, strlen(bad), "t", &e);
  assert_null(c);
  for (i = 0; i < e.n; i++) {
    if (strstr(e.msgs[i], "$.flags.f.brief.contact"))
      type = true;
    if (strstr(e.msgs[i], "$.flags.f.brief") && strstr(e.msgs[i], "whom"))
      key = true;
  }
  assert_true(type);
  assert_true(key);
  mg_cfg_errors_free(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_text),
      cmocka_unit_test(test_markdown),
      cmocka_unit_test(test_errors_name_their_path),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
