/* test_anthropic.c - the Messages API's operations: usage with cache reads
 * and writes (buffered, and from message_start + message_delta), errors
 * in Anthropic's shape with its type per status, the `error` event that
 * ends a failed stream, and answers made and replayed as a message and
 * its named events (read back as a client reads them: sse.h, cJSON). */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/api.h"
#include "sse.h"

static const struct mg_endpoint *EP(void) {
  return mg_endpoint_get(MG_EP_MESSAGES);
}

struct fx {
  struct mg_json_doc doc, scratch;
  struct mg_buf out;
};

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof(*f));
  mg_json_init(&f->doc, 100000);
  mg_json_init(&f->scratch, 100000);
  mg_buf_init(&f->out, 1 << 20);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fx *f = *state;
  mg_json_free(&f->doc);
  mg_json_free(&f->scratch);
  mg_buf_free(&f->out);
  free(f);
  return 0;
}

static void scan(struct mg_json_doc *d, const char *s) {
  assert_int_equal(mg_json_parse(d, s, strlen(s), NULL), 0);
}

static const char *MESSAGE =
    "{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\","
    "\"model\":\"claude-x\",\"content\":["
    "{\"type\":\"thinking\",\"thinking\":\"Let me see.\",\"signature\":"
    "\"sig1\"},"
    "{\"type\":\"text\",\"text\":\"Paris is \\\"sunny\\\".\"},"
    "{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\","
    "\"input\":{\"city\": \"Paris\", \"days\": [1, 2]}}],"
    "\"stop_reason\":\"tool_use\",\"stop_sequence\":null,"
    "\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":1000,"
    "\"cache_read_input_tokens\":3000,\"output_tokens\":40}}";

static void test_usage(void **state) {
  struct fx *f = *state;
  struct mg_usage u;
  mg_usage_init(&u);
  scan(&f->doc, MESSAGE);
  EP()->ops->usage(&f->doc, &u);
  /* input_tokens stays what Anthropic says: the uncached input only */
  assert_int_equal(u.prompt, 25);
  assert_int_equal(u.completion, 40);
  assert_int_equal(u.cache_read, 3000);
  assert_int_equal(u.cache_write, 1000);
  assert_int_equal(u.cached, -1);
  assert_int_equal(u.reasoning, -1);
}

static void feed(struct fx *f, struct mg_stream_state *st, const char *event,
                 const char *data) {
  struct mg_sse_event ev = {mg_str_c(event), mg_str_c(data)};
  EP()->ops->stream_event(st, &ev, &f->scratch);
}

/* message_start gives the input side; message_delta the cumulative output
 * count (assigned, not added); message_stop ends it. */
static void test_stream_usage(void **state) {
  struct fx *f = *state;
  struct mg_stream_state st;
  mg_stream_state_init(&st);
  feed(f, &st, "message_start",
       "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":"
       "\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"c\","
       "\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{"
       "\"input_tokens\":25,\"cache_read_input_tokens\":100,"
       "\"cache_creation_input_tokens\":0,\"output_tokens\":1}}}");
  feed(f, &st, "ping", "{\"type\": \"ping\"}");
  feed(f, &st, "content_block_delta",
       "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
       "\"text_delta\",\"text\":\"Hi\"}}");
  feed(f, &st, "message_delta",
       "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\","
       "\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}");
  assert_false(st.done);
  feed(f, &st, "message_stop", "{\"type\":\"message_stop\"}");
  assert_true(st.done);
  assert_false(st.failed);
  assert_int_equal(st.usage.prompt, 25);
  assert_int_equal(st.usage.cache_read, 100);
  assert_int_equal(st.usage.cache_write, 0);
  assert_int_equal(st.usage.completion, 15);
  /* without event: lines, the data's type */
  mg_stream_state_init(&st);
  feed(f, &st, "", "{\"type\":\"message_delta\",\"delta\":{},\"usage\":{"
                   "\"output_tokens\":7}}");
  assert_int_equal(st.usage.completion, 7);
  feed(f, &st, "", "{\"type\":\"error\",\"error\":{\"type\":"
                   "\"overloaded_error\",\"message\":\"Overloaded\"}}");
  assert_true(st.done && st.failed);
}

static void expect_error(struct fx *f, int status, const char *type) {
  cJSON *j;
  mg_buf_reset(&f->out);
  assert_int_equal(
      EP()->ops->error_body(&f->out, status, NULL, "Nope.", "model", NULL), 0);
  j = cJSON_Parse(f->out.data);
  assert_non_null(j);
  assert_string_equal(jstr(j, "type"), "error");
  assert_string_equal(jstr(jget(j, "error"), "type"), type);
  assert_string_equal(jstr(jget(j, "error"), "message"), "Nope.");
  /* Anthropic's shape has no param */
  assert_null(jget(jget(j, "error"), "param"));
  cJSON_Delete(j);
}

/* Anthropic's error types per status (its "Errors" reference). */
static void test_errors(void **state) {
  struct fx *f = *state;
  cJSON *j;
  expect_error(f, 400, "invalid_request_error");
  expect_error(f, 401, "authentication_error");
  expect_error(f, 402, "billing_error");
  expect_error(f, 403, "permission_error");
  expect_error(f, 404, "not_found_error");
  expect_error(f, 413, "request_too_large");
  expect_error(f, 429, "rate_limit_error");
  expect_error(f, 500, "api_error");
  expect_error(f, 502, "api_error");
  expect_error(f, 504, "timeout_error");
  expect_error(f, 529, "overloaded_error");
  expect_error(f, 422, "invalid_request_error");
  /* modelgate's code still reaches the client, in the message */
  mg_buf_reset(&f->out);
  assert_int_equal(EP()->ops->error_body(&f->out, 422, NULL, "Unsure.", NULL,
                                         "low_confidence"),
                   0);
  j = cJSON_Parse(f->out.data);
  assert_string_equal(jstr(jget(j, "error"), "message"),
                      "Unsure. (low_confidence)");
  cJSON_Delete(j);
  /* count_tokens answers errors in the same shape */
  mg_buf_reset(&f->out);
  assert_int_equal(mg_endpoint_get(MG_EP_COUNT_TOKENS)
                       ->ops->error_body(&f->out, 404, NULL, "x", NULL, NULL),
                   0);
  j = cJSON_Parse(f->out.data);
  assert_string_equal(jstr(jget(j, "error"), "type"), "not_found_error");
  cJSON_Delete(j);
}

static void test_stream_error(void **state) {
  struct fx *f = *state;
  struct sse s;
  assert_int_equal(EP()->ops->stream_error(&f->out, NULL, NULL,
                                           "The upstream stopped.",
                                           "upstream_timeout"),
                   0);
  sse_parse(&s, f->out.data, f->out.len);
  assert_int_equal(s.bad, 0);
  assert_int_equal(s.n, 1);
  assert_string_equal(s.ev[0].event, "error");
  assert_string_equal(jstr(s.ev[0].json, "type"), "error");
  assert_string_equal(jstr(jget(s.ev[0].json, "error"), "type"),
                      "timeout_error");
  assert_null(strstr(f->out.data, "message_stop"));
  sse_free(&s);
}

static const struct mg_answer_meta META = {"msg_mg_d9", 1700000000,
                                           "traditional:faq"};

static void test_wrap(void **state) {
  struct fx *f = *state;
  struct sse s;
  cJSON *j;
  const char *want[] = {"message_start",       "content_block_start",
                        "content_block_delta", "content_block_stop",
                        "message_delta",       "message_stop",
                        NULL};
  int i;

  assert_int_equal(EP()->ops->wrap_text(&f->out, &META, "{\"a\":1}", 7), 0);
  j = cJSON_Parse(f->out.data);
  assert_string_equal(jstr(j, "id"), "msg_mg_d9");
  assert_string_equal(jstr(j, "type"), "message");
  assert_string_equal(jstr(j, "role"), "assistant");
  assert_string_equal(jstr(j, "model"), "traditional:faq");
  assert_string_equal(jstr(j, "stop_reason"), "end_turn");
  /* a static_json document is the text block's text */
  assert_string_equal(jstr(cJSON_GetArrayItem(jget(j, "content"), 0), "text"),
                      "{\"a\":1}");
  assert_true(jnum(jget(j, "usage"), "output_tokens") == 0);
  cJSON_Delete(j);

  mg_buf_reset(&f->out);
  assert_int_equal(EP()->ops->wrap_text_sse(&f->out, &META, "Hello", 5), 0);
  sse_parse(&s, f->out.data, f->out.len);
  assert_int_equal(s.bad, 0);
  for (i = 0; want[i]; i++) {
    assert_string_equal(s.ev[i].event, want[i]);
    assert_string_equal(jstr(s.ev[i].json, "type"), want[i]);
  }
  assert_int_equal(s.n, i);
  assert_string_equal(jstr(jget(s.ev[0].json, "message"), "id"), "msg_mg_d9");
  assert_int_equal(cJSON_GetArraySize(jget(jget(s.ev[0].json, "message"),
                                           "content")),
                   0);
  assert_string_equal(jstr(jget(s.ev[2].json, "delta"), "type"), "text_delta");
  assert_string_equal(jstr(jget(s.ev[2].json, "delta"), "text"), "Hello");
  assert_string_equal(jstr(jget(s.ev[4].json, "delta"), "stop_reason"),
                      "end_turn");
  sse_free(&s);
}

/* A cached message replayed: what an SDK accumulates from the events is
 * the message itself. */
static void test_replay(void **state) {
  struct fx *f = *state;
  struct sse s;
  cJSON *orig, *input;
  const cJSON *m;

  scan(&f->doc, MESSAGE);
  assert_int_equal(EP()->ops->replay_sse(&f->doc, &f->out), 0);
  sse_parse(&s, f->out.data, f->out.len);
  assert_int_equal(s.bad, 0);
  /* start; thinking (start, thinking, signature, stop); text (start,
   * delta, stop); tool_use (start, json, stop); delta; stop */
  assert_int_equal(s.n, 1 + 4 + 3 + 3 + 2);
  assert_string_equal(s.ev[0].event, "message_start");
  m = jget(s.ev[0].json, "message");
  assert_string_equal(jstr(m, "id"), "msg_01");
  assert_int_equal(cJSON_GetArraySize(jget(m, "content")), 0);
  assert_true(cJSON_IsNull(jget(m, "stop_reason")));
  assert_true(jnum(jget(m, "usage"), "cache_read_input_tokens") == 3000);
  assert_string_equal(jstr(jget(s.ev[2].json, "delta"), "thinking"),
                      "Let me see.");
  assert_string_equal(jstr(jget(s.ev[3].json, "delta"), "type"),
                      "signature_delta");
  assert_string_equal(jstr(jget(s.ev[6].json, "delta"), "text"),
                      "Paris is \"sunny\".");
  assert_true(jnum(s.ev[6].json, "index") == 1);
  /* the tool's input arrives as JSON text that parses to the input */
  assert_string_equal(jstr(jget(s.ev[8].json, "content_block"), "name"),
                      "get_weather");
  assert_int_equal(
      cJSON_GetArraySize(jget(jget(s.ev[8].json, "content_block"), "input")),
      0);
  assert_string_equal(jstr(jget(s.ev[9].json, "delta"), "type"),
                      "input_json_delta");
  input = cJSON_Parse(jstr(jget(s.ev[9].json, "delta"), "partial_json"));
  orig = cJSON_Parse(MESSAGE);
  assert_true(cJSON_Compare(
      input, jget(cJSON_GetArrayItem(jget(orig, "content"), 2), "input"), 1));
  cJSON_Delete(input);
  cJSON_Delete(orig);
  assert_string_equal(s.ev[11].event, "message_delta");
  assert_string_equal(jstr(jget(s.ev[11].json, "delta"), "stop_reason"),
                      "tool_use");
  assert_true(jnum(jget(s.ev[11].json, "usage"), "output_tokens") == 40);
  assert_string_equal(s.ev[12].event, "message_stop");
  sse_free(&s);
  /* not a message */
  mg_buf_reset(&f->out);
  scan(&f->doc, "{\"type\":\"error\",\"error\":{}}");
  assert_int_equal(EP()->ops->replay_sse(&f->doc, &f->out), -EINVAL);
  assert_int_equal(f->out.len, 0);
}

/* No logprobs in this API: the gate reads headers and JSON only. */
static void test_no_logprobs(void **state) {
  struct fx *f = *state;
  struct mg_gate_cfg g;
  double c;
  memset(&g, 0, sizeof(g));
  assert_null(EP()->ops->logprobs);
  assert_null(EP()->ops->ask_logprobs);
  assert_null(EP()->ops->strip_logprobs);
  scan(&f->doc, "{\"type\":\"message\",\"content\":[{\"type\":\"text\","
                "\"text\":\"{\\\"confidence\\\":0.7}\"}]}");
  g.source = MG_CONF_LOGPROBS_MEAN;
  assert_int_equal(mg_api_confidence(EP(), &g, &f->doc, NULL, &c), -ENOENT);
  g.source = MG_CONF_HEADER;
  assert_int_equal(mg_api_confidence(EP(), &g, &f->doc, "0.25", &c), 0);
  assert_true(c == 0.25);
  assert_int_equal(mg_gate_parse_source(&g, "json:/confidence"), 0);
  assert_int_equal(mg_api_confidence(EP(), &g, &f->doc, NULL, &c), 0);
  assert_true(c == 0.7);
  free(g.pointer);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_usage, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stream_usage, setup, teardown),
      cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stream_error, setup, teardown),
      cmocka_unit_test_setup_teardown(test_wrap, setup, teardown),
      cmocka_unit_test_setup_teardown(test_replay, setup, teardown),
      cmocka_unit_test_setup_teardown(test_no_logprobs, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
