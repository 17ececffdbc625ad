/* test_responses.c - the Responses API's operations: usage (buffered and
 * streamed), token logprobs (asked for, read, stripped back to what the
 * API answers without them), answers modelgate makes and replays as a
 * Response object and its typed events, and the end of a failed stream.
 * Event bytes are read back as a client reads them (sse.h, cJSON). */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/api.h"
#include "sse.h"

static const struct mg_endpoint *EP(void) {
  return mg_endpoint_get(MG_EP_RESPONSES);
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

/* A Response as the API answers one with include
 * ["message.output_text.logprobs"]: a reasoning item, a message with two
 * tokens, a function call. */
static const char *ANSWER =
    "{\"id\":\"resp_abc\",\"object\":\"response\",\"created_at\":1741476542,"
    "\"status\":\"completed\",\"error\":null,\"model\":\"gpt-4.1\","
    "\"output\":[{\"type\":\"reasoning\",\"id\":\"rs_1\",\"summary\":[]},"
    "{\"type\":\"message\",\"id\":\"msg_1\",\"status\":\"completed\","
    "\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\","
    "\"text\":\"Hello there\",\"annotations\":[],\"logprobs\":["
    "{\"token\":\"Hello\",\"logprob\":-0.1,\"bytes\":[72],"
    "\"top_logprobs\":[]},{\"token\":\" there\",\"logprob\":-0.3,"
    "\"bytes\":[32],\"top_logprobs\":[]}]}]},"
    "{\"type\":\"function_call\",\"id\":\"fc_1\",\"call_id\":\"call_1\","
    "\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\","
    "\"status\":\"completed\"}],"
    "\"usage\":{\"input_tokens\":36,\"input_tokens_details\":{"
    "\"cached_tokens\":16},\"output_tokens\":87,\"output_tokens_details\":{"
    "\"reasoning_tokens\":64},\"total_tokens\":123}}";

static void test_usage_buffered(void **state) {
  struct fx *f = *state;
  struct mg_usage u;
  mg_usage_init(&u);
  scan(&f->doc, ANSWER);
  EP()->ops->usage(&f->doc, &u);
  assert_int_equal(u.prompt, 36);
  assert_int_equal(u.cached, 16);
  assert_int_equal(u.completion, 87);
  assert_int_equal(u.reasoning, 64);
  assert_int_equal(u.cache_read, -1);
  /* an answer without usage leaves everything unknown */
  mg_usage_init(&u);
  scan(&f->doc, "{\"object\":\"response\",\"output\":[]}");
  EP()->ops->usage(&f->doc, &u);
  assert_int_equal(u.prompt, -1);
  assert_int_equal(u.completion, -1);
}

static void feed(struct fx *f, struct mg_stream_state *st, const char *event,
                 const char *data) {
  struct mg_sse_event ev = {mg_str_c(event), mg_str_c(data)};
  EP()->ops->stream_event(st, &ev, &f->scratch);
}

/* Usage comes with response.completed only; the id with response.created;
 * logprobs with each output_text delta. */
static void test_stream_state(void **state) {
  struct fx *f = *state;
  struct mg_stream_state st;
  double c;

  mg_stream_state_init(&st);
  st.want_logprobs = true;
  feed(f, &st, "response.created",
       "{\"type\":\"response.created\",\"sequence_number\":0,\"response\":{"
       "\"id\":\"resp_s1\",\"object\":\"response\",\"status\":\"in_progress\","
       "\"output\":[],\"usage\":null}}");
  assert_string_equal(st.response_id, "resp_s1");
  assert_int_equal(st.seq, 0);
  feed(f, &st, "response.output_text.delta",
       "{\"type\":\"response.output_text.delta\",\"sequence_number\":4,"
       "\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,"
       "\"delta\":\"Hi \\\"sequence_number\\\": 99\",\"logprobs\":[{\"token\":"
       "\"Hi\",\"logprob\":-0.5,\"top_logprobs\":[]}]}");
  /* the key inside the delta's text is not the event's */
  assert_int_equal(st.seq, 4);
  /* without an event: line the data's type says what it is */
  feed(f, &st, "",
       "{\"type\":\"response.output_text.delta\",\"sequence_number\":5,"
       "\"delta\":\"!\",\"logprobs\":[{\"token\":\"!\",\"logprob\":-1.5}]}");
  assert_int_equal(st.acc.n, 2);
  assert_false(st.done);
  feed(f, &st, "response.completed",
       "{\"type\":\"response.completed\",\"sequence_number\":9,\"response\":{"
       "\"id\":\"resp_s1\",\"status\":\"completed\",\"output\":[],\"usage\":{"
       "\"input_tokens\":10,\"input_tokens_details\":{\"cached_tokens\":0},"
       "\"output_tokens\":2,\"output_tokens_details\":{\"reasoning_tokens\":"
       "0},\"total_tokens\":12}}}");
  assert_true(st.done);
  assert_false(st.failed);
  assert_int_equal(st.seq, 9);
  assert_int_equal(st.usage.prompt, 10);
  assert_int_equal(st.usage.completion, 2);
  /* the completed event repeats the output: its logprobs are not counted
   * twice. exp(mean(-0.5, -1.5)) = exp(-1) = 0.36787944 */
  assert_int_equal(st.acc.n, 2);
  assert_int_equal(mg_gate_acc_confidence(&st.acc, MG_CONF_LOGPROBS_MEAN, &c),
                   0);
  assert_true(fabs(c - 0.36787944117144233) < 1e-12);

  mg_stream_state_init(&st);
  feed(f, &st, "response.failed",
       "{\"type\":\"response.failed\",\"sequence_number\":3,\"response\":{"
       "\"id\":\"resp_f\",\"status\":\"failed\",\"error\":{\"code\":"
       "\"server_error\",\"message\":\"x\"},\"usage\":null}}");
  assert_true(st.done);
  assert_true(st.failed);
  mg_stream_state_init(&st);
  feed(f, &st, "error",
       "{\"type\":\"error\",\"sequence_number\":1,\"code\":\"x\","
       "\"message\":\"y\",\"param\":null}");
  assert_true(st.done && st.failed);
}

/* exp of the mean and of the min of the two token logprobs (-0.1, -0.3):
 * exp(-0.2) = 0.8187307531, exp(-0.3) = 0.7408182207. */
static void test_confidence(void **state) {
  struct fx *f = *state;
  struct mg_gate_cfg g;
  double c;
  memset(&g, 0, sizeof(g));
  g.enabled = true;
  scan(&f->doc, ANSWER);
  g.source = MG_CONF_LOGPROBS_MEAN;
  assert_int_equal(mg_api_confidence(EP(), &g, &f->doc, NULL, &c), 0);
  assert_true(fabs(c - 0.8187307530779818) < 1e-12);
  g.source = MG_CONF_LOGPROBS_MIN;
  assert_int_equal(mg_api_confidence(EP(), &g, &f->doc, NULL, &c), 0);
  assert_true(fabs(c - 0.7408182206817179) < 1e-12);
  /* json:<pointer> reads the output text parsed as JSON */
  assert_int_equal(mg_gate_parse_source(&g, "json:/confidence"), 0);
  scan(&f->doc, "{\"object\":\"response\",\"output\":[{\"type\":\"message\","
                "\"content\":[{\"type\":\"output_text\",\"text\":"
                "\"{\\\"answer\\\":1,\\\"confidence\\\":0.42}\"}]}]}");
  assert_int_equal(mg_api_confidence(EP(), &g, &f->doc, NULL, &c), 0);
  assert_true(c == 0.42);
  free(g.pointer);
  /* no logprobs at all: no signal */
  g.pointer = NULL;
  g.source = MG_CONF_LOGPROBS_MEAN;
  assert_int_equal(mg_api_confidence(EP(), &g, &f->doc, NULL, &c), -ENOENT);
}

static void ask(struct fx *f, const char *req, const char *want) {
  mg_buf_reset(&f->out);
  scan(&f->doc, req);
  assert_int_equal(EP()->ops->ask_logprobs(&f->doc, &f->out), 0);
  assert_string_equal(f->out.data, want);
}

static void test_ask_logprobs(void **state) {
  struct fx *f = *state;
  ask(f, "{\"model\":\"m\",\"input\":\"hi\"}",
      "{\"include\":[\"message.output_text.logprobs\"],\"model\":\"m\","
      "\"input\":\"hi\"}");
  ask(f, "{}", "{\"include\":[\"message.output_text.logprobs\"]}");
  ask(f, "{\"model\":\"m\",\"include\":null}",
      "{\"model\":\"m\",\"include\":[\"message.output_text.logprobs\"]}");
  ask(f, "{\"include\": [ \"reasoning.encrypted_content\" ] ,\"model\":\"m\"}",
      "{\"include\": [\"message.output_text.logprobs\", "
      "\"reasoning.encrypted_content\" ] ,\"model\":\"m\"}");
  ask(f, "{\"include\":[]}", "{\"include\":[\"message.output_text.logprobs\"]}");
  /* already asked: unchanged */
  ask(f, "{\"include\":[\"message.output_text.logprobs\"]}",
      "{\"include\":[\"message.output_text.logprobs\"]}");
  scan(&f->doc, "{\"include\":\"x\"}");
  assert_int_equal(EP()->ops->ask_logprobs(&f->doc, &f->out), -EINVAL);
}

/* Stripped, the answer is what the API sends without the include: every
 * output_text part's logprobs is [] (and nothing else changes). */
static void test_strip_logprobs(void **state) {
  struct fx *f = *state;
  char *want = strdup(ANSWER);
  const char *a = strstr(ANSWER, "\"logprobs\":[{");
  const char *b = strstr(ANSWER, "}]}]},{\"type\":\"function_call\"");
  size_t pre = (size_t)(a - ANSWER) + strlen("\"logprobs\":");
  /* want = ANSWER with the logprobs array's bytes replaced by [] */
  memcpy(want + pre, "[]", 2);
  memmove(want + pre + 2, b + 2, strlen(b + 2) + 1);
  scan(&f->doc, ANSWER);
  assert_int_equal(EP()->ops->strip_logprobs(&f->doc, &f->out), 0);
  assert_string_equal(f->out.data, want);
  free(want);
  /* a duplicated logprobs member is emptied too */
  mg_buf_reset(&f->out);
  scan(&f->doc, "{\"output\":[{\"type\":\"message\",\"content\":[{\"type\":"
                "\"output_text\",\"logprobs\":[{\"logprob\":-1}],\"text\":"
                "\"a\",\"logprobs\":[{\"logprob\":-2}]}]}]}");
  assert_int_equal(EP()->ops->strip_logprobs(&f->doc, &f->out), 0);
  assert_string_equal(f->out.data,
                      "{\"output\":[{\"type\":\"message\",\"content\":[{"
                      "\"type\":\"output_text\",\"logprobs\":[],\"text\":"
                      "\"a\",\"logprobs\":[]}]}]}");
}

static const struct mg_answer_meta META = {"resp_mg_d123", 1700000000,
                                           "traditional:faq"};

static void test_wrap_text(void **state) {
  struct fx *f = *state;
  cJSON *j, *item, *part;
  assert_int_equal(EP()->ops->wrap_text(&f->out, &META, "Hi \xff", 4), 0);
  j = cJSON_Parse(f->out.data);
  assert_non_null(j);
  assert_string_equal(jstr(j, "id"), "resp_mg_d123");
  assert_string_equal(jstr(j, "object"), "response");
  assert_string_equal(jstr(j, "status"), "completed");
  assert_string_equal(jstr(j, "model"), "traditional:faq");
  assert_true(jnum(j, "created_at") == 1700000000);
  assert_true(cJSON_IsFalse(jget(j, "store")));
  item = cJSON_GetArrayItem(jget(j, "output"), 0);
  assert_string_equal(jstr(item, "type"), "message");
  assert_string_equal(jstr(item, "id"), "msg_mg_d123");
  assert_string_equal(jstr(item, "role"), "assistant");
  part = cJSON_GetArrayItem(jget(item, "content"), 0);
  assert_string_equal(jstr(part, "type"), "output_text");
  /* invalid UTF-8 from a traditional service becomes U+FFFD */
  assert_string_equal(jstr(part, "text"), "Hi \xef\xbf\xbd");
  assert_true(cJSON_IsArray(jget(part, "logprobs")));
  assert_true(jnum(jget(j, "usage"), "total_tokens") == 0);
  cJSON_Delete(j);
}

static const char *const MADE_SEQ[] = {
    "response.created",           "response.in_progress",
    "response.output_item.added", "response.content_part.added",
    "response.output_text.delta", "response.output_text.done",
    "response.content_part.done", "response.output_item.done",
    "response.completed",         NULL};

/* Every event: `event: <type>` and data carrying the same type and the
 * next sequence number from 0. */
static void check_events(const struct sse *s) {
  int i;
  assert_int_equal(s->bad, 0);
  for (i = 0; i < s->n; i++) {
    assert_non_null(s->ev[i].json);
    assert_string_equal(jstr(s->ev[i].json, "type"), s->ev[i].event);
    assert_true(jnum(s->ev[i].json, "sequence_number") == i);
  }
}

static void test_wrap_text_sse(void **state) {
  struct fx *f = *state;
  struct sse s;
  const cJSON *r;
  int i;
  assert_int_equal(EP()->ops->wrap_text_sse(&f->out, &META, "Hello", 5), 0);
  sse_parse(&s, f->out.data, f->out.len);
  check_events(&s);
  for (i = 0; MADE_SEQ[i]; i++)
    assert_string_equal(s.ev[i].event, MADE_SEQ[i]);
  assert_int_equal(s.n, i);
  r = jget(s.ev[0].json, "response");
  assert_string_equal(jstr(r, "status"), "in_progress");
  assert_int_equal(cJSON_GetArraySize(jget(r, "output")), 0);
  assert_string_equal(jstr(s.ev[4].json, "delta"), "Hello");
  assert_string_equal(jstr(s.ev[4].json, "item_id"), "msg_mg_d123");
  assert_string_equal(jstr(s.ev[5].json, "text"), "Hello");
  r = jget(s.ev[8].json, "response");
  assert_string_equal(jstr(r, "status"), "completed");
  assert_string_equal(
      jstr(cJSON_GetArrayItem(
               jget(cJSON_GetArrayItem(jget(r, "output"), 0), "content"), 0),
           "text"),
      "Hello");
  sse_free(&s);
}

/* A cached Response replayed: the events rebuild the same output (the
 * text deltas, the call's arguments), the final event holds the answer
 * itself, and nothing is lost on the way. */
static void test_replay(void **state) {
  struct fx *f = *state;
  struct sse s;
  const char *want_types[] = {
      "response.created",
      "response.in_progress",
      "response.output_item.added", /* reasoning */
      "response.output_item.done",
      "response.output_item.added", /* message */
      "response.content_part.added",
      "response.output_text.delta",
      "response.output_text.done",
      "response.content_part.done",
      "response.output_item.done",
      "response.output_item.added", /* function call */
      "response.function_call_arguments.delta",
      "response.function_call_arguments.done",
      "response.output_item.done",
      "response.completed",
      NULL};
  cJSON *orig;
  int i;

  scan(&f->doc, ANSWER);
  assert_int_equal(EP()->ops->replay_sse(&f->doc, &f->out), 0);
  sse_parse(&s, f->out.data, f->out.len);
  check_events(&s);
  for (i = 0; want_types[i]; i++)
    assert_string_equal(s.ev[i].event, want_types[i]);
  assert_int_equal(s.n, i);
  /* created: the answer in progress, without its output and usage */
  assert_string_equal(jstr(jget(s.ev[0].json, "response"), "id"), "resp_abc");
  assert_string_equal(jstr(jget(s.ev[0].json, "response"), "status"),
                      "in_progress");
  assert_true(cJSON_IsNull(jget(jget(s.ev[0].json, "response"), "usage")));
  /* the message item is announced without content */
  assert_int_equal(
      cJSON_GetArraySize(jget(jget(s.ev[4].json, "item"), "content")), 0);
  assert_string_equal(jstr(jget(s.ev[4].json, "item"), "status"),
                      "in_progress");
  assert_string_equal(jstr(s.ev[6].json, "delta"), "Hello there");
  assert_string_equal(jstr(s.ev[6].json, "item_id"), "msg_1");
  assert_true(jnum(s.ev[6].json, "output_index") == 1);
  assert_int_equal(cJSON_GetArraySize(jget(s.ev[6].json, "logprobs")), 2);
  assert_string_equal(jstr(s.ev[11].json, "delta"), "{\"city\":\"Paris\"}");
  assert_string_equal(jstr(jget(s.ev[10].json, "item"), "arguments"), "");
  /* the last event is the whole answer */
  orig = cJSON_Parse(ANSWER);
  assert_true(cJSON_Compare(orig, jget(s.ev[14].json, "response"), 1));
  cJSON_Delete(orig);
  sse_free(&s);

  /* an incomplete answer ends with response.incomplete, never completed */
  mg_buf_reset(&f->out);
  scan(&f->doc, "{\"id\":\"r\",\"object\":\"response\",\"status\":"
                "\"incomplete\",\"output\":[]}");
  assert_int_equal(EP()->ops->replay_sse(&f->doc, &f->out), 0);
  sse_parse(&s, f->out.data, f->out.len);
  assert_string_equal(s.ev[s.n - 1].event, "response.incomplete");
  sse_free(&s);
  /* not a response: nothing written */
  mg_buf_reset(&f->out);
  scan(&f->doc, "{\"object\":\"chat.completion\",\"choices\":[]}");
  assert_int_equal(EP()->ops->replay_sse(&f->doc, &f->out), -EINVAL);
  assert_int_equal(f->out.len, 0);
  scan(&f->doc, "{\"object\":\"response\",\"output\":[1]}");
  assert_int_equal(EP()->ops->replay_sse(&f->doc, &f->out), -EINVAL);
  assert_int_equal(f->out.len, 0);
}

/* After the head, a failure ends the stream with response.failed and an
 * error event, numbered after the last event relayed; never a
 * response.completed. */
static void test_stream_error(void **state) {
  struct fx *f = *state;
  struct mg_stream_state st;
  struct sse s;
  const cJSON *r;
  mg_stream_state_init(&st);
  st.seq = 6;
  snprintf(st.response_id, sizeof(st.response_id), "resp_up");
  assert_int_equal(EP()->ops->stream_error(&f->out, &st, "resp_mgxx_resp_up",
                                           "The upstream stopped.",
                                           "upstream_timeout"),
                   0);
  sse_parse(&s, f->out.data, f->out.len);
  assert_int_equal(s.bad, 0);
  assert_int_equal(s.n, 2);
  assert_string_equal(s.ev[0].event, "response.failed");
  assert_string_equal(jstr(s.ev[0].json, "type"), "response.failed");
  assert_true(jnum(s.ev[0].json, "sequence_number") == 7);
  r = jget(s.ev[0].json, "response");
  assert_string_equal(jstr(r, "id"), "resp_mgxx_resp_up");
  assert_string_equal(jstr(r, "status"), "failed");
  assert_string_equal(jstr(jget(r, "error"), "code"), "upstream_timeout");
  assert_string_equal(jstr(jget(r, "error"), "message"),
                      "The upstream stopped.");
  assert_string_equal(s.ev[1].event, "error");
  assert_true(jnum(s.ev[1].json, "sequence_number") == 8);
  assert_string_equal(jstr(s.ev[1].json, "code"), "upstream_timeout");
  assert_null(strstr(f->out.data, "response.completed"));
  sse_free(&s);
  /* no state: the upstream's id as it is unknown, numbering from 0 */
  mg_buf_reset(&f->out);
  assert_int_equal(EP()->ops->stream_error(&f->out, NULL, NULL, "x", NULL), 0);
  sse_parse(&s, f->out.data, f->out.len);
  assert_true(cJSON_IsNull(jget(jget(s.ev[0].json, "response"), "id")));
  assert_true(jnum(s.ev[0].json, "sequence_number") == 0);
  sse_free(&s);
}

static void test_error_body(void **state) {
  struct fx *f = *state;
  cJSON *j;
  assert_int_equal(EP()->ops->error_body(&f->out, 404, NULL, "No such \"x\"",
                                         "model", "model_not_found"),
                   0);
  j = cJSON_Parse(f->out.data);
  assert_string_equal(jstr(jget(j, "error"), "message"), "No such \"x\"");
  assert_string_equal(jstr(jget(j, "error"), "type"), "invalid_request_error");
  assert_string_equal(jstr(jget(j, "error"), "param"), "model");
  assert_string_equal(jstr(jget(j, "error"), "code"), "model_not_found");
  cJSON_Delete(j);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_usage_buffered, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stream_state, setup, teardown),
      cmocka_unit_test_setup_teardown(test_confidence, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ask_logprobs, setup, teardown),
      cmocka_unit_test_setup_teardown(test_strip_logprobs, setup, teardown),
      cmocka_unit_test_setup_teardown(test_wrap_text, setup, teardown),
      cmocka_unit_test_setup_teardown(test_wrap_text_sse, setup, teardown),
      cmocka_unit_test_setup_teardown(test_replay, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stream_error, setup, teardown),
      cmocka_unit_test_setup_teardown(test_error_body, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
