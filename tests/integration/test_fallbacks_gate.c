/* test_fallbacks_gate.c - the confidence gate through the real binary:
 * logprobs asked for and stripped again (kept when the client asked), the
 * confidence header, header: and json: sources, abstain, a missing signal
 * that passes or fails, and streams either passed through (the gate only
 * records) or buffered, gated and replayed as events. */
#define _DEFAULT_SOURCE 1
#define _GNU_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"
#include "test_fallbacks.h"

#define BACKUP "'backup':{'base_url':'@MOCK','model':'m-backup'}"

/* choices[0].logprobs of a JSON answer: NULL when absent. */
static bool logprobs_null(const struct mg_h_resp *r) {
  cJSON *a = json_body(r);
  const cJSON *l = at(a, "choices.0.logprobs");
  bool null = l != NULL && cJSON_IsNull(l);
  cJSON_Delete(a);
  return null;
}

/* logprobs_mean: modelgate asks the upstream for logprobs the client did
 * not ask for, reads the confidence from them and strips them; a client
 * that asked keeps them. logprobs_min likewise. A target without a gate
 * asks for nothing. The legacy completions API gets "logprobs": 1. */
static void test_logprobs_asked_and_stripped(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  cJSON *b, *a;

  gate_cfg(e, "'targets':{"
              "'mean':{'base_url':'@MOCK','model':'m-mean',"
              "'confidence':{'min':0.5,'source':'logprobs_mean'}},"
              "'least':{'base_url':'@MOCK','model':'m-min',"
              "'confidence':{'min':0.5,'source':'logprobs_min'}},"
              "'plain':{'base_url':'@MOCK','model':'m-plain'}},"
              "'aliases':{'gpt-mean':{'target':'mean'},"
              "'gpt-min':{'target':'least'},'gpt-plain':{'target':'plain'}}");

  ask(e, "gpt-mean", "how sure", "", &r);
  assert_served(&r, 200, "mean", NULL);
  assert_hdr(&r, "x-modelgate-confidence", "0.9500");
  assert_content(&r, "Mock answer from m-mean to: how sure");
  if (!logprobs_null(&r))
    fail_msg("logprobs modelgate asked for reached the client: %s", r.body);
  mg_h_resp_free(&r);
  b = mock_last_body(e, "m-mean");
  assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "logprobs")));
  cJSON_Delete(b);

  ask(e, "gpt-mean", "how sure", ",\"logprobs\":true", &r);
  assert_served(&r, 200, "mean", NULL);
  assert_hdr(&r, "x-modelgate-confidence", "0.9500");
  a = json_body(&r);
  if (!cJSON_IsArray(at(a, "choices.0.logprobs.content")) ||
      cJSON_GetArraySize(at(a, "choices.0.logprobs.content")) != 7)
    fail_msg("the client asked for logprobs and got none: %s", r.body);
  cJSON_Delete(a);
  mg_h_resp_free(&r);

  behave(e, "{'model':'m-min','confidence':0.625}");
  ask(e, "gpt-min", "how sure", "", &r);
  assert_served(&r, 200, "least", NULL);
  assert_hdr(&r, "x-modelgate-confidence", "0.6250");
  assert_true(logprobs_null(&r));
  mg_h_resp_free(&r);

  ask(e, "gpt-plain", "no gate", "", &r);
  assert_served(&r, 200, "plain", NULL);
  assert_hdr(&r, "x-modelgate-confidence", NULL);
  mg_h_resp_free(&r);
  b = mock_last_body(e, "m-plain");
  assert_null(cJSON_GetObjectItemCaseSensitive(b, "logprobs"));
  cJSON_Delete(b);

  assert_int_equal(post(e->gate.port, "/v1/completions",
                        "{\"model\":\"gpt-mean\",\"prompt\":\"legacy\"}", &r),
                   0);
  assert_served(&r, 200, "mean", NULL);
  assert_hdr(&r, "x-modelgate-confidence", "0.9500");
  a = json_body(&r);
  assert_string_equal(str_at(a, "object"), "text_completion");
  assert_true(cJSON_IsNull(at(a, "choices.0.logprobs")));
  cJSON_Delete(a);
  mg_h_resp_free(&r);
  b = mock_last_body(e, "m-mean");
  assert_int_equal((int)cJSON_GetNumberValue(
                       cJSON_GetObjectItemCaseSensitive(b, "logprobs")),
                   1);
  cJSON_Delete(b);
}

/* source header:<name>: the number in that upstream header. Nothing is
 * asked of the upstream. */
static void test_header_source(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  cJSON *b;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary',"
              "'confidence':{'min':0.5,'source':'header:x-confidence'},"
              "'fallbacks':['backup']}," BACKUP "},"
              "'aliases':{'gpt-fb':{'target':'primary'}}");
  behave(e, "{'model':'m-primary','header_confidence':0.7}");
  ask(e, "gpt-fb", "by header", "", &r);
  assert_served(&r, 200, "primary", NULL);
  assert_hdr(&r, "x-modelgate-confidence", "0.7000");
  mg_h_resp_free(&r);
  b = mock_last_body(e, "m-primary");
  assert_null(cJSON_GetObjectItemCaseSensitive(b, "logprobs"));
  cJSON_Delete(b);

  behave(e, "{'model':'m-primary','header_confidence':0.2}");
  ask(e, "gpt-fb", "by header", "", &r);
  assert_served(&r, 200, "backup", "low_confidence");
  assert_content(&r, "Mock answer from m-backup to: by header");
  mg_h_resp_free(&r);
}

/* source json:<pointer>: a number in the answer itself, or in the message
 * content parsed as JSON. */
static void test_json_source(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary',"
              "'confidence':{'min':0.5,'source':'json:/confidence'},"
              "'fallbacks':['backup']},"
              "'tokens':{'base_url':'@MOCK','model':'m-tokens',"
              "'confidence':{'min':5,'source':'json:/usage/completion_tokens'},"
              "'fallbacks':['backup']}," BACKUP "},"
              "'aliases':{'gpt-fb':{'target':'primary'},"
              "'gpt-tokens':{'target':'tokens'}}");
  behave(e,
         "{'model':'m-primary','content':{'answer':'yes','confidence':0.9}}");
  ask(e, "gpt-fb", "in the content", "", &r);
  assert_served(&r, 200, "primary", NULL);
  assert_hdr(&r, "x-modelgate-confidence", "0.9000");
  assert_content(&r, "{\"answer\":\"yes\",\"confidence\":0.9}");
  mg_h_resp_free(&r);

  behave(e,
         "{'model':'m-primary','content':{'answer':'maybe','confidence':0.1}}");
  ask(e, "gpt-fb", "in the content", "", &r);
  assert_served(&r, 200, "backup", "low_confidence");
  mg_h_resp_free(&r);

  /* A pointer into the answer: 8 words are 8 completion tokens. */
  behave(e, "{'model':'m-tokens','content':'one two three four five six "
            "seven eight'}");
  ask(e, "gpt-tokens", "long", "", &r);
  assert_served(&r, 200, "tokens", NULL);
  assert_hdr(&r, "x-modelgate-confidence", "8.0000");
  mg_h_resp_free(&r);
  behave(e, "{'model':'m-tokens','content':'too short'}");
  ask(e, "gpt-tokens", "short", "", &r);
  assert_served(&r, 200, "backup", "low_confidence");
  mg_h_resp_free(&r);
}

/* action abstain: the client hears that the model is unsure, even though
 * another tier could answer. */
static void test_abstain(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary',"
              "'confidence':{'min':0.8,'action':'abstain'},"
              "'fallbacks':['backup']}," BACKUP "},"
              "'aliases':{'gpt-fb':{'target':'primary'}}");
  behave(e, "{'model':'m-primary','mode':'low_confidence'}");
  ask(e, "gpt-fb", "unsure", "", &r);
  assert_error(&r, 422, "low_confidence");
  assert_hdr(&r, "x-modelgate-served-by", "primary");
  assert_hdr(&r, "x-modelgate-fallback", NULL);
  assert_hdr(&r, "x-modelgate-confidence", "0.3000");
  mg_h_resp_free(&r);

  ask(e, "gpt-fb", "unsure", STREAM, &r);
  /* A stream passes (the gate only records), so nothing abstains. */
  assert_served(&r, 200, "primary", NULL);
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-backup"), 0);

  behave(e, "{'model':'m-primary','mode':'ok'}");
  ask(e, "gpt-fb", "sure", "", &r);
  assert_served(&r, 200, "primary", NULL);
  assert_hdr(&r, "x-modelgate-confidence", "0.9500");
  mg_h_resp_free(&r);
}

/* An answer without the signal: "missing": "pass" serves it, "fail"
 * treats it as unsure. */
static void test_missing_signal(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;

  gate_cfg(e, "'targets':{"
              "'lenient':{'base_url':'@MOCK','model':'m-lenient',"
              "'confidence':{'min':0.5,'source':'header:x-confidence',"
              "'missing':'pass'},'fallbacks':['backup']},"
              "'strict':{'base_url':'@MOCK','model':'m-strict',"
              "'confidence':{'min':0.5,'source':'header:x-confidence',"
              "'missing':'fail'},'fallbacks':['backup']},"
              "'strictlone':{'base_url':'@MOCK','model':'m-strict',"
              "'confidence':{'min':0.5,'source':'json:/confidence',"
              "'missing':'fail'}}," BACKUP "},"
              "'aliases':{'gpt-lenient':{'target':'lenient'},"
              "'gpt-strict':{'target':'strict'},"
              "'gpt-strictlone':{'target':'strictlone'}}");
  ask(e, "gpt-lenient", "no signal", "", &r);
  assert_served(&r, 200, "lenient", NULL);
  assert_hdr(&r, "x-modelgate-confidence", NULL);
  mg_h_resp_free(&r);

  ask(e, "gpt-strict", "no signal", "", &r);
  assert_served(&r, 200, "backup", "low_confidence");
  assert_hdr(&r, "x-modelgate-confidence", NULL);
  mg_h_resp_free(&r);

  ask(e, "gpt-strictlone", "no signal", "", &r);
  assert_error(&r, 422, "low_confidence");
  mg_h_resp_free(&r);
}

/* "stream": "buffer": the upstream is asked for a whole answer, which is
 * gated, then replayed to the streaming client as events; an unsure one
 * falls back before anything reached the client (the backup streams). */
static void test_stream_buffer(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  cJSON *b;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary',"
              "'confidence':{'min':0.8,'stream':'buffer'},"
              "'fallbacks':['backup']},"
              "'lone':{'base_url':'@MOCK','model':'m-lone',"
              "'confidence':{'min':0.8,'stream':'buffer'}}," BACKUP "},"
              "'aliases':{'gpt-fb':{'target':'primary'},"
              "'gpt-lone':{'target':'lone'}}");

  ask(e, "gpt-fb", "buffer me", STREAM, &r);
  assert_served(&r, 200, "primary", NULL);
  assert_hdr(&r, "x-modelgate-confidence", "0.9500");
  assert_true(r.chunked);
  assert_sse(&r, "m-primary", "Mock answer from m-primary to: buffer me");
  mg_h_resp_free(&r);
  b = mock_last_body(e, "m-primary");
  assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(b, "stream")));
  assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "logprobs")));
  cJSON_Delete(b);

  behave(e, "{'model':'m-primary','mode':'low_confidence'}");
  ask(e, "gpt-fb", "buffer me", STREAM, &r);
  assert_served(&r, 200, "backup", "low_confidence");
  assert_sse(&r, "m-backup", "Mock answer from m-backup to: buffer me");
  mg_h_resp_free(&r);
  b = mock_last_body(e, "m-backup");
  assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "stream")));
  cJSON_Delete(b);

  /* No other tier: a JSON 422, not a stream. */
  behave(e, "{'model':'m-lone','mode':'low_confidence'}");
  ask(e, "gpt-lone", "buffer me", STREAM, &r);
  assert_error(&r, 422, "low_confidence");
  assert_false(r.chunked);
  mg_h_resp_free(&r);
}

/* "stream": "pass" (the default): the stream is relayed as it comes, even
 * an unsure one (the gate only records), without the logprobs modelgate
 * asked for; a client that asked for logprobs gets them. */
static void test_stream_pass(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  struct events ev;
  size_t i, with = 0;
  cJSON *b;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary',"
              "'confidence':{'min':0.8},'fallbacks':['backup']}," BACKUP "},"
              "'aliases':{'gpt-fb':{'target':'primary'}}");
  behave(e, "{'model':'m-primary','mode':'low_confidence'}");

  ask(e, "gpt-fb", "let it pass", ",\"stream\":true,\"logprobs\":true", &r);
  assert_served(&r, 200, "primary", NULL);
  events_parse(r.body, &ev);
  for (i = 0; i < ev.n; i++)
    if (strstr(ev.items[i], "\"logprobs\":{"))
      with++;
  events_free(&ev);
  if (with == 0)
    fail_msg("the client asked for logprobs and got none: %s", r.body);
  mg_h_resp_free(&r);

  ask(e, "gpt-fb", "let it pass", STREAM, &r);
  assert_served(&r, 200, "primary", NULL);
  assert_int_equal(mock_count(e, "m-backup"), 0);
  /* The client did not ask for logprobs: every chunk says null (they
   * could not be taken out of a relayed stream, so modelgate does not ask
   * the upstream for them either). */
  assert_sse(&r, "m-primary", "Mock answer from m-primary to: let it pass");
  mg_h_resp_free(&r);
  b = mock_last_body(e, "m-primary");
  assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "stream")));
  assert_null(cJSON_GetObjectItemCaseSensitive(b, "logprobs"));
  cJSON_Delete(b);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, tenv_setup, tenv_teardown)
  const struct CMUnitTest tests[] = {
      T(test_logprobs_asked_and_stripped),
      T(test_header_source),
      T(test_json_source),
      T(test_abstain),
      T(test_missing_signal),
      T(test_stream_buffer),
      T(test_stream_pass),
  };
#undef T
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
