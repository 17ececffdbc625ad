/* test_fallbacks.c - graceful degradation, the triggers: every trigger
 * moves a request to the next tier (a refused or reset connection, a
 * primary that hangs, a 5xx, a 429, an invalid answer, an unsure answer,
 * an open breaker); a trigger left out of fallback_on does not; retries
 * honour their count, their backoff and Retry-After; retries and fallbacks
 * together stay inside the request's one deadline; a client's own 4xx is
 * passed through unmasked; and when nothing answers the client gets the
 * last failure.
 *
 * One mock serves every target: behaviours are set per upstream model
 * (m-primary, m-backup, ...), and its per-model counts show which targets
 * modelgate really called. */
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
#define NOBREAKER "'breaker':{'enabled':false}"

/* A refused connection and a connection reset before any answer are both
 * connect_error, and the backup answers at once. */
static void test_connect_error(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@DEAD','model':'m-primary',"
              "'fallbacks':['backup']},"
              "'resetting':{'base_url':'@MOCK','model':'m-reset',"
              "'fallbacks':['backup']}," BACKUP "},"
              "'aliases':{'gpt-dead':{'target':'primary'},"
              "'gpt-reset':{'target':'resetting'}}");
  behave(e, "{'model':'m-reset','mode':'reset'}");

  /* First, while modelgate has no pooled connection to the mock: libcurl
   * silently sends a request again when a *reused* connection dies before
   * any answer, which would make the mock count two. */
  ask(e, "gpt-reset", "reset me", "", &r);
  assert_served(&r, 200, "backup", "connect_error");
  assert_content(&r, "Mock answer from m-backup to: reset me");
  mg_h_resp_free(&r);

  ask(e, "gpt-dead", "hello", "", &r);
  assert_served(&r, 200, "backup", "connect_error");
  assert_content(&r, "Mock answer from m-backup to: hello");
  /* Nothing waited for a timeout. */
  if (r.ms > 1000.0 * SLOW)
    fail_msg("a refused connection cost %.0f ms", r.ms);
  mg_h_resp_free(&r);

  assert_int_equal(mock_count(e, "m-reset"), 1);
  assert_int_equal(mock_count(e, "m-backup"), 2);
  assert_metric(e,
                "modelgate_fallbacks_total{target=\"primary\",tier=\"backup\","
                "reason=\"connect_error\"}",
                1);
  assert_metric(e,
                "modelgate_fallbacks_total{target=\"resetting\",tier="
                "\"backup\",reason=\"connect_error\"}",
                1);
}

/* The primary hangs: after its first_byte_ms the backup answers, and the
 * whole request takes first_byte_ms plus the backup's own time, far inside
 * the deadline. The same for a streaming client, which gets the backup's
 * stream (nothing reached it before the fallback). */
static void test_primary_hangs(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  double own;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary',"
              "'timeouts':{'first_byte_ms':300},'deadline_ms':5000,"
              "'fallbacks':['backup']}," BACKUP "},"
              "'aliases':{'gpt-fb':{'target':'primary'},"
              "'gpt-backup':{'target':'backup'}}");
  behave(e, "{'model':'m-primary','mode':'hang'}");
  behave(e, "{'model':'m-backup','mode':'slow','ms':200}");

  /* The backup's own latency, measured the same way. */
  ask(e, "gpt-backup", "direct", "", &r);
  assert_served(&r, 200, "backup", NULL);
  own = r.ms;
  mg_h_resp_free(&r);

  ask(e, "gpt-fb", "are you there", "", &r);
  assert_served(&r, 200, "backup", "timeout");
  assert_content(&r, "Mock answer from m-backup to: are you there");
  /* first_byte_ms + the backup's own time, give or take scheduling. */
  assert_between("hang then fallback (ms)", r.ms, 300 + own - 30,
                 300 + own + 150 * SLOW);
  mg_h_resp_free(&r);

  ask(e, "gpt-fb", "stream it", STREAM, &r);
  assert_served(&r, 200, "backup", "timeout");
  assert_true(r.chunked);
  assert_sse(&r, "m-backup", "Mock answer from m-backup to: stream it");
  assert_between("hang then fallback, streamed (ms)", r.ms, 300 + own - 30,
                 300 + own + 150 * SLOW);
  mg_h_resp_free(&r);

  assert_int_equal(mock_count(e, "m-primary"), 2);
  assert_int_equal(mock_count(e, "m-backup"), 3);
  assert_metric(e,
                "modelgate_fallbacks_total{target=\"primary\",tier=\"backup\","
                "reason=\"timeout\"}",
                2);
}

/* A 5xx moves on. When the backup fails too, the client gets the last
 * failure: the backup's own JSON error, byte for byte, and the header
 * still says a fallback was tried. */
static void test_5xx(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  static const char own[] = "{\"error\":{\"message\":\"backup is down\","
                            "\"type\":\"server_error\",\"param\":null,"
                            "\"code\":\"backup_down\"}}";
  char *b;

  gate_cfg(e, "'upstream':{'send_decision_id':true},'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary',"
              "'fallbacks':['backup']}," BACKUP "},"
              "'aliases':{'gpt-fb':{'target':'primary'}}");
  behave(e, "{'model':'m-primary','mode':'status','status':503}");

  ask(e, "gpt-fb", "five hundred", "", &r);
  assert_served(&r, 200, "backup", "5xx");
  assert_content(&r, "Mock answer from m-backup to: five hundred");
  /* With send_decision_id, every attempt carries the request's one
   * decision id upstream. */
  {
    char id[33], v[64], *st = mg_h_mock_stats(e->mock.port);
    assert_true(decision_id(&r, id));
    assert_non_null(st);
    assert_string_equal(mg_h_json_str(st,
                                      "/last/m-primary/headers/"
                                      "x-modelgate-decision",
                                      v, sizeof(v)),
                        id);
    assert_string_equal(mg_h_json_str(st,
                                      "/last/m-backup/headers/"
                                      "x-modelgate-decision",
                                      v, sizeof(v)),
                        id);
    free(st);
  }
  mg_h_resp_free(&r);

  b = fmt("{\"model\":\"m-backup\",\"mode\":\"status\",\"status\":500,"
          "\"body\":%s}",
          own);
  set_mock(e->mock.port, b);
  free(b);
  ask(e, "gpt-fb", "both down", "", &r);
  assert_int_equal(r.status, 500);
  assert_hdr(&r, "x-modelgate-fallback", "5xx");
  assert_string_equal(r.body, own);
  assert_hdr(&r, "content-type", "application/json");
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-primary"), 2);
  assert_int_equal(mock_count(e, "m-backup"), 2);
  /* "Requests answered by a fallback tier, by ... the tier that
   * answered": the backup answered the first request only. */
  assert_metric(e,
                "modelgate_fallbacks_total{target=\"primary\",tier=\"backup\","
                "reason=\"5xx\"}",
                1);
}

/* 429 with Retry-After: the retries wait as long as the upstream asks
 * (not the configured backoff), capped by retry_after_max_ms; a retry
 * whose wait would pass the deadline is not made; when the retries are
 * spent the request falls back with reason 429. */
static void test_429_retry_after(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;

  gate_cfg(e,
           "'targets':{"
           "'primary':{'base_url':'@MOCK','model':'m-primary'," NOBREAKER ","
           "'retries':{'count':2,'backoff_ms':10,'jitter':0,"
           "'retry_after_max_ms':2000,'on':['429']},"
           "'fallbacks':['backup']},"
           "'capped':{'base_url':'@MOCK','model':'m-capped',"
           "'retries':{'count':1,'backoff_ms':10,'jitter':0,"
           "'retry_after_max_ms':150,'on':['429']}},"
           "'limited':{'base_url':'@MOCK','model':'m-limited'},"
           "'hasty':{'base_url':'@MOCK','model':'m-hasty','deadline_ms':1000,"
           "'retries':{'count':3,'backoff_ms':10,'jitter':0,"
           "'retry_after_max_ms':10000,'on':['429']},"
           "'fallbacks':['backup']}," BACKUP "},"
           "'aliases':{'gpt-fb':{'target':'primary'},"
           "'gpt-capped':{'target':'capped'},"
           "'gpt-limited':{'target':'limited'},"
           "'gpt-hasty':{'target':'hasty'}}");

  /* Two 429s asking for 0.3 s each, then an answer: 3 calls, ~600 ms. */
  behave(e, "{'model':'m-primary','mode':'status','status':429,"
            "'retry_after':0.3,'times':2}");
  ask(e, "gpt-fb", "rate limited", "", &r);
  assert_served(&r, 200, "primary", NULL);
  assert_content(&r, "Mock answer from m-primary to: rate limited");
  assert_between("two Retry-After waits of 300 ms (ms)", r.ms, 590,
                 600 + 200 * SLOW);
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-primary"), 3);
  assert_metric(e, "modelgate_retries_total{target=\"primary\"}", 2);

  /* Always 429: count + 1 calls, then the backup. */
  behave(e, "{'model':'m-primary','mode':'status','status':429,"
            "'retry_after':0.1}");
  ask(e, "gpt-fb", "still limited", "", &r);
  assert_served(&r, 200, "backup", "429");
  assert_between("two waits of 100 ms then the backup (ms)", r.ms, 190,
                 200 + 200 * SLOW);
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-primary"), 6);
  assert_metric(e, "modelgate_retries_total{target=\"primary\"}", 4);
  assert_metric(e,
                "modelgate_fallbacks_total{target=\"primary\",tier=\"backup\","
                "reason=\"429\"}",
                1);

  /* Retry-After: 30 s, capped at 150 ms. */
  behave(e, "{'model':'m-capped','mode':'status','status':429,"
            "'retry_after':30,'times':1}");
  ask(e, "gpt-capped", "capped", "", &r);
  assert_served(&r, 200, "capped", NULL);
  assert_between("Retry-After capped at 150 ms (ms)", r.ms, 140,
                 150 + 200 * SLOW);
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-capped"), 2);

  /* Retry-After: 5 s with a 1 s deadline: no retry, the backup at once. */
  behave(e, "{'model':'m-hasty','mode':'status','status':429,"
            "'retry_after':5}");
  ask(e, "gpt-hasty", "no time", "", &r);
  assert_served(&r, 200, "backup", "429");
  if (r.ms > 300.0 * SLOW)
    fail_msg("a retry that could not fit the deadline cost %.0f ms", r.ms);
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-hasty"), 1);
  assert_metric(e, "modelgate_retries_total{target=\"hasty\"}", 0);

  /* Nothing else to try: the upstream's 429 as it is, Retry-After too. */
  behave(e, "{'model':'m-limited','mode':'status','status':429,"
            "'retry_after':7}");
  ask(e, "gpt-limited", "limited", "", &r);
  assert_int_equal(r.status, 429);
  assert_hdr(&r, "retry-after", "7");
  assert_hdr(&r, "x-modelgate-fallback", NULL);
  assert_non_null(strstr(r.body, "mock server error"));
  mg_h_resp_free(&r);

  /* ...and retry-after-ms, which OpenAI's SDKs read first. */
  behave(e, "{'model':'m-limited','mode':'status','status':429,"
            "'retry_after':7,'retry_after_format':'ms'}");
  ask(e, "gpt-limited", "limited", "", &r);
  assert_int_equal(r.status, 429);
  assert_hdr(&r, "retry-after-ms", "7000");
  assert_hdr(&r, "retry-after", NULL);
  mg_h_resp_free(&r);

  /* retry-after-ms (OpenAI, Azure): a 300 ms wait. */
  behave(e, "{'model':'m-primary','mode':'ok'}");
  behave(e, "{'model':'m-primary','mode':'status','status':429,"
            "'retry_after':0.3,'retry_after_format':'ms','times':1}");
  ask(e, "gpt-fb", "ms", "", &r);
  assert_served(&r, 200, "primary", NULL);
  assert_between("a retry-after-ms wait of 300 ms (ms)", r.ms, 290,
                 300 + 200 * SLOW);
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-primary"), 8);

  /* Retry-After as an HTTP date one second or so ahead (whole seconds,
   * rounded up by the mock): the retry waits until then, not the 10 ms
   * backoff. */
  behave(e, "{'model':'m-primary','mode':'status','status':429,"
            "'retry_after':1,'retry_after_format':'date','times':1}");
  ask(e, "gpt-fb", "date", "", &r);
  assert_served(&r, 200, "primary", NULL);
  assert_between("a Retry-After date 1-2 s ahead (ms)", r.ms, 950,
                 2000 + 200 * SLOW);
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-primary"), 10);
  assert_metric(e, "modelgate_retries_total{target=\"primary\"}", 6);
}

/* Invalid answers: invalid JSON on a 200, a truncated body, a status that
 * is neither 2xx nor 4xx/5xx. Each one falls back with reason invalid; with
 * nothing to fall back to, the client gets a 502. */
static void test_invalid(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  int i;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary',"
              "'fallbacks':['backup']},"
              "'lone':{'base_url':'@MOCK','model':'m-lone'}," BACKUP "},"
              "'aliases':{'gpt-fb':{'target':'primary'},"
              "'gpt-lone':{'target':'lone'}}");
  behave(e, "[{'model':'m-primary','mode':'garbage','times':1},"
            "{'model':'m-primary','mode':'truncate','times':1},"
            "{'model':'m-primary','mode':'status','status':302,'times':1}]");
  for (i = 0; i < 3; i++) {
    ask(e, "gpt-fb", "broken", "", &r);
    assert_served(&r, 200, "backup", "invalid");
    assert_content(&r, "Mock answer from m-backup to: broken");
    mg_h_resp_free(&r);
  }
  /* The queue is used up: the primary answers again. */
  ask(e, "gpt-fb", "fine now", "", &r);
  assert_served(&r, 200, "primary", NULL);
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-primary"), 4);
  assert_metric(e,
                "modelgate_fallbacks_total{target=\"primary\",tier=\"backup\","
                "reason=\"invalid\"}",
                3);

  behave(e, "{'model':'m-lone','mode':'garbage'}");
  ask(e, "gpt-lone", "broken", "", &r);
  assert_error(&r, 502, "upstream_invalid_response");
  assert_hdr(&r, "x-modelgate-fallback", NULL);
  mg_h_resp_free(&r);
}

/* An unsure answer moves on to the next tier; the confidence header is
 * the served answer's. With no other tier, the client gets a 422. */
static void test_low_confidence(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary',"
              "'confidence':{'min':0.8},'fallbacks':['backup']},"
              "'backup':{'base_url':'@MOCK','model':'m-backup',"
              "'confidence':{'min':0.5}},"
              "'unsure':{'base_url':'@MOCK','model':'m-unsure',"
              "'confidence':{'min':0.8}},"
              "'gated':{'base_url':'@MOCK','model':'m-primary',"
              "'confidence':{'min':0.8},'fallbacks':['ungated']},"
              "'ungated':{'base_url':'@MOCK','model':'m-ungated'}},"
              "'aliases':{'gpt-fb':{'target':'primary'},"
              "'gpt-unsure':{'target':'unsure'},"
              "'gpt-gated':{'target':'gated'}}");
  behave(e, "{'model':'m-primary','mode':'low_confidence'}");
  behave(e, "{'model':'m-unsure','mode':'low_confidence'}");

  ask(e, "gpt-fb", "are you sure", "", &r);
  assert_served(&r, 200, "backup", "low_confidence");
  assert_content(&r, "Mock answer from m-backup to: are you sure");
  assert_hdr(&r, "x-modelgate-confidence", "0.9500");
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-primary"), 1);
  assert_metric(e,
                "modelgate_fallbacks_total{target=\"primary\",tier=\"backup\","
                "reason=\"low_confidence\"}",
                1);

  ask(e, "gpt-unsure", "are you sure", "", &r);
  assert_error(&r, 422, "low_confidence");
  assert_hdr(&r, "x-modelgate-confidence", "0.3000");
  assert_hdr(&r, "x-modelgate-fallback", NULL);
  mg_h_resp_free(&r);

  /* The backup has no gate: nothing is known about its answer's
   * confidence, so the header must not carry the primary's 0.3. */
  ask(e, "gpt-gated", "who answers", "", &r);
  assert_served(&r, 200, "ungated", "low_confidence");
  assert_content(&r, "Mock answer from m-ungated to: who answers");
  assert_hdr(&r, "x-modelgate-confidence", NULL);
  mg_h_resp_free(&r);
}

/* An open breaker is a trigger too: once it opened, requests skip the
 * primary without calling it. With no other tier, 503
 * upstream_unavailable. */
static void test_breaker_open(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  int i;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary',"
              "'breaker':{'failures':2,'cooldown_ms':60000},"
              "'fallbacks':['backup']},"
              "'lone':{'base_url':'@MOCK','model':'m-lone',"
              "'breaker':{'failures':1,'cooldown_ms':60000}}," BACKUP "},"
              "'aliases':{'gpt-fb':{'target':'primary'},"
              "'gpt-lone':{'target':'lone'}}");
  behave(e, "{'model':'m-primary','mode':'status','status':500}");
  behave(e, "{'model':'m-lone','mode':'status','status':500}");

  for (i = 0; i < 2; i++) {
    ask(e, "gpt-fb", "failing", "", &r);
    assert_served(&r, 200, "backup", "5xx");
    mg_h_resp_free(&r);
  }
  for (i = 0; i < 3; i++) {
    ask(e, "gpt-fb", "failing", "", &r);
    assert_served(&r, 200, "backup", "breaker_open");
    assert_content(&r, "Mock answer from m-backup to: failing");
    mg_h_resp_free(&r);
  }
  assert_int_equal(mock_count(e, "m-primary"), 2);
  assert_metric(e, "modelgate_breaker_state{target=\"primary\"}", 1);
  assert_metric(e,
                "modelgate_fallbacks_total{target=\"primary\",tier=\"backup\","
                "reason=\"breaker_open\"}",
                3);

  ask(e, "gpt-lone", "alone", "", &r);
  assert_int_equal(r.status, 500);
  mg_h_resp_free(&r);
  ask(e, "gpt-lone", "alone", "", &r);
  assert_error(&r, 503, "upstream_unavailable");
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-lone"), 1);
  assert_true(
      file_contains(e->gate.log_file, "breaker of target primary: open"));
}

/* fallback_on: a trigger left out of it does not fall back, the client
 * gets the failure as it is. And it is the first target's list that
 * counts along the whole chain, not the fallback targets' own. */
static void test_fallback_on(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary',"
              "'fallback_on':['timeout'],'fallbacks':['backup']},"
              "'deadt':{'base_url':'@DEAD','model':'m-dead',"
              "'fallback_on':['5xx','timeout'],'fallbacks':['backup']},"
              "'chained':{'base_url':'@MOCK','model':'m-chained',"
              "'fallbacks':['picky','backup']},"
              "'picky':{'base_url':'@MOCK','model':'m-picky',"
              "'fallback_on':['timeout']},"
              "'strict':{'base_url':'@MOCK','model':'m-strict',"
              "'breaker':{'failures':1,'cooldown_ms':60000},"
              "'fallback_on':['5xx'],'fallbacks':['backup']}," BACKUP "},"
              "'aliases':{'gpt-fb':{'target':'primary'},"
              "'gpt-dead':{'target':'deadt'},"
              "'gpt-chain':{'target':'chained'},"
              "'gpt-strict':{'target':'strict'}}");
  behave(e, "{'model':'m-primary','mode':'status','status':500}");

  ask(e, "gpt-fb", "no fallback for 5xx", "", &r);
  assert_int_equal(r.status, 500);
  assert_hdr(&r, "x-modelgate-fallback", NULL);
  assert_non_null(strstr(r.body, "mock server error"));
  mg_h_resp_free(&r);

  ask(e, "gpt-dead", "no fallback for connect errors", "", &r);
  assert_error(&r, 502, "upstream_unreachable");
  assert_hdr(&r, "x-modelgate-fallback", NULL);
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-backup"), 0);

  /* chained (all triggers) -> picky (5xx, not in its own list) -> backup. */
  behave(e, "{'model':'m-chained','mode':'status','status':502}");
  behave(e, "{'model':'m-picky','mode':'status','status':500}");
  ask(e, "gpt-chain", "walk on", "", &r);
  assert_served(&r, 200, "backup", "5xx");
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-picky"), 1);
  assert_int_equal(mock_count(e, "m-backup"), 1);

  /* breaker_open left out: once the breaker opened, the client hears
   * that the target is unavailable instead of getting the backup. */
  behave(e, "{'model':'m-strict','mode':'status','status':500}");
  ask(e, "gpt-strict", "first", "", &r);
  assert_served(&r, 200, "backup", "5xx");
  mg_h_resp_free(&r);
  ask(e, "gpt-strict", "second", "", &r);
  assert_error(&r, 503, "upstream_unavailable");
  assert_hdr(&r, "x-modelgate-fallback", NULL);
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-strict"), 1);
  assert_int_equal(mock_count(e, "m-backup"), 2);
}

/* Retries: count + 1 calls for a trigger they are on, none for one they
 * are not on; a fallback target's own retries apply when it serves as a
 * tier; connection errors are retried by default. */
static void test_retries(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary'," NOBREAKER ","
              "'retries':{'count':3,'backoff_ms':20,'jitter':0,'on':['5xx']},"
              "'fallbacks':['backup']},"
              "'deadt':{'base_url':'@DEAD','model':'m-dead'," NOBREAKER ","
              "'fallbacks':['backup2']},"
              "'backup2':{'base_url':'@MOCK','model':'m-backup2',"
              "'retries':{'count':1,'backoff_ms':20,'jitter':0}},"
              "'deadr':{'base_url':'@DEAD','model':'m-deadr'," NOBREAKER ","
              "'retries':{'count':2,'backoff_ms':20}}," BACKUP "},"
              "'aliases':{'gpt-fb':{'target':'primary'},"
              "'gpt-dead':{'target':'deadt'},"
              "'gpt-deadr':{'target':'deadr'}}");

  behave(e, "{'model':'m-primary','mode':'status','status':500}");
  ask(e, "gpt-fb", "retry me", "", &r);
  assert_served(&r, 200, "backup", "5xx");
  /* Waits of 20, 40 and 80 ms. */
  assert_between("three backoffs (ms)", r.ms, 135, 140 + 200 * SLOW);
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-primary"), 4);
  assert_metric(e, "modelgate_retries_total{target=\"primary\"}", 3);

  /* Not retried on invalid. */
  behave(e, "{'model':'m-primary','mode':'garbage'}");
  ask(e, "gpt-fb", "retry me", "", &r);
  assert_served(&r, 200, "backup", "invalid");
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-primary"), 5);
  assert_metric(e, "modelgate_retries_total{target=\"primary\"}", 3);

  /* The fallback target retries by its own policy (default triggers). */
  behave(e, "{'model':'m-backup2','mode':'status','status':503,'times':1}");
  ask(e, "gpt-dead", "tier retries", "", &r);
  assert_served(&r, 200, "backup2", "connect_error");
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-backup2"), 2);
  assert_metric(e, "modelgate_retries_total{target=\"backup2\"}", 1);

  ask(e, "gpt-deadr", "nobody", "", &r);
  assert_error(&r, 502, "upstream_unreachable");
  mg_h_resp_free(&r);
  assert_metric(e, "modelgate_retries_total{target=\"deadr\"}", 2);
}

/* One deadline per request: retries and fallbacks fit in it; an attempt
 * gets at most the time left; when the primary used it all, target tiers
 * are skipped but a static traditional tier still answers. */
static void test_deadline(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary'," NOBREAKER ","
              "'deadline_ms':1000,'retries':{'count':5,'backoff_ms':200,"
              "'max_backoff_ms':1000,'jitter':0,'on':['5xx']},"
              "'fallbacks':['backup']},"
              "'hung':{'base_url':'@MOCK','model':'m-hung'," NOBREAKER ","
              "'timeouts':{'first_byte_ms':10000},'deadline_ms':800,"
              "'fallbacks':['backup','traditional:sorry']},"
              "'hung2':{'base_url':'@MOCK','model':'m-hung'," NOBREAKER ","
              "'timeouts':{'first_byte_ms':10000},'deadline_ms':800,"
              "'fallbacks':['backup']},"
              "'half':{'base_url':'@MOCK','model':'m-hung'," NOBREAKER ","
              "'timeouts':{'first_byte_ms':500},'deadline_ms':1000,"
              "'fallbacks':['slowpoke']},"
              "'slowpoke':{'base_url':'@MOCK','model':'m-slow',"
              "'timeouts':{'first_byte_ms':10000}}," BACKUP "},"
              "'traditional':{'sorry':{'static':'Sorry, try again later.'}},"
              "'aliases':{'gpt-fb':{'target':'primary'},"
              "'gpt-hung':{'target':'hung'},'gpt-hung2':{'target':'hung2'},"
              "'gpt-half':{'target':'half'}}");
  behave(e, "{'model':'m-primary','mode':'status','status':500}");
  behave(e, "{'model':'m-backup','mode':'slow','ms':100}");
  behave(e, "{'model':'m-hung','mode':'hang'}");
  behave(e, "{'model':'m-slow','mode':'slow','ms':3000}");

  /* Calls at 0, 200 and 600 ms; the next wait (800 ms) would end past
   * the deadline, so the backup answers at ~700 ms. */
  ask(e, "gpt-fb", "within the deadline", "", &r);
  assert_served(&r, 200, "backup", "5xx");
  assert_between("retries then fallback (ms)", r.ms, 680, 1000 + 50 * SLOW);
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-primary"), 3);

  /* The hung primary takes the whole 800 ms (not its 10 s first_byte_ms);
   * the backup cannot be called any more, the static answer can. */
  ask(e, "gpt-hung", "hung", "", &r);
  assert_served(&r, 200, "traditional:sorry", "timeout");
  assert_content(&r, "Sorry, try again later.");
  assert_between("deadline then static answer (ms)", r.ms, 780,
                 800 + 250 * SLOW);
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-backup"), 1);

  ask(e, "gpt-hung2", "hung", "", &r);
  assert_error(&r, 504, "upstream_timeout");
  assert_between("deadline then nothing (ms)", r.ms, 780, 800 + 250 * SLOW);
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-backup"), 1);

  /* 500 ms lost on the primary, the slow fallback gets the 500 left. */
  ask(e, "gpt-half", "half and half", "", &r);
  assert_error(&r, 504, "upstream_timeout");
  assert_hdr(&r, "x-modelgate-fallback", "timeout");
  assert_between("two attempts in one deadline (ms)", r.ms, 980,
                 1000 + 250 * SLOW);
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-slow"), 1);
}

/* A 4xx caused by the client's request is returned as it is: not retried,
 * not masked by a fallback, not a breaker failure. */
static void test_client_4xx_unmasked(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  static const int statuses[] = {400, 401, 404, 422};
  size_t i;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary',"
              "'retries':{'count':2,'backoff_ms':10,'on':['connect_error',"
              "'timeout','5xx','429','invalid']},"
              "'breaker':{'failures':2,'cooldown_ms':60000},"
              "'fallbacks':['backup','traditional:sorry']},"
              "'second':{'base_url':'@MOCK','model':'m-second',"
              "'fallbacks':['backup','traditional:sorry']}," BACKUP "},"
              "'traditional':{'sorry':{'static':'Sorry.'}},"
              "'aliases':{'gpt-fb':{'target':'primary'},"
              "'gpt-second':{'target':'second'}}");
  for (i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
    char *body = fmt("{\"error\":{\"message\":\"status %d\",\"type\":"
                     "\"invalid_request_error\",\"param\":\"messages\","
                     "\"code\":\"context_length_exceeded\"}}",
                     statuses[i]);
    char *b = fmt("{\"model\":\"m-primary\",\"mode\":\"status\","
                  "\"status\":%d,\"body\":%s,\"times\":1}",
                  statuses[i], body);
    set_mock(e->mock.port, b);
    ask(e, "gpt-fb", "too long", "", &r);
    assert_served(&r, statuses[i], "primary", NULL);
    assert_string_equal(r.body, body);
    mg_h_resp_free(&r);
    free(b);
    free(body);
  }
  assert_int_equal(mock_count(e, "m-primary"), 4);
  assert_int_equal(mock_count(e, "m-backup"), 0);
  assert_metric(e, "modelgate_retries_total{target=\"primary\"}", 0);
  assert_metric(e, "modelgate_breaker_state{target=\"primary\"}", 0);
  ask(e, "gpt-fb", "fine", "", &r);
  assert_served(&r, 200, "primary", NULL);
  mg_h_resp_free(&r);

  /* A fallback tier's 4xx is the client's own error too: passed on, the
   * static tier after it is not used. */
  behave(e, "{'model':'m-second','mode':'status','status':500}");
  behave(e, "{'model':'m-backup','mode':'status','status':400,'times':1}");
  ask(e, "gpt-second", "bad for both", "", &r);
  assert_served(&r, 400, "backup", "5xx");
  assert_non_null(strstr(r.body, "mock server error"));
  mg_h_resp_free(&r);
}

/* Nothing answers: every target refuses; the last failure is reported. */
static void test_nothing_answers(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@DEAD','model':'m-primary',"
              "'fallbacks':['second']},"
              "'second':{'base_url':'@MOCK','model':'m-second',"
              "'timeouts':{'first_byte_ms':300}}},"
              "'aliases':{'gpt-fb':{'target':'primary'}}");
  behave(e, "{'model':'m-second','mode':'hang'}");
  ask(e, "gpt-fb", "anyone", "", &r);
  assert_error(&r, 504, "upstream_timeout");
  assert_hdr(&r, "x-modelgate-fallback", "connect_error");
  mg_h_resp_free(&r);

  behave(e, "{'model':'m-second','mode':'reset'}");
  ask(e, "gpt-fb", "anyone", "", &r);
  assert_error(&r, 502, "upstream_reset");
  assert_hdr(&r, "x-modelgate-fallback", "connect_error");
  mg_h_resp_free(&r);
}

/* A flag picks the variant; the chain walked is the variant target's. */
static void test_flag_variant_chain(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;

  gate_cfg(e, "'targets':{"
              "'big':{'base_url':'@MOCK','model':'m-big',"
              "'fallbacks':['backup']},"
              "'small':{'base_url':'@MOCK','model':'m-small',"
              "'fallbacks':['traditional:sorry']}," BACKUP "},"
              "'traditional':{'sorry':{'static':'Sorry.'}},"
              "'flags':{'chat':{'off_variant':'big','variants':{"
              "'big':{'target':'big'},'small':{'target':'small'}},"
              "'rules':[{'if':{'attr':'tier','op':'eq','value':'free'},"
              "'variant':'small'}]}},"
              "'aliases':{'gpt-flag':{'flag':'chat'}}");
  behave(e, "{'model':'m-big','mode':'status','status':500}");
  behave(e, "{'model':'m-small','mode':'status','status':500}");

  ask(e, "gpt-flag", "paid", "", &r);
  assert_served(&r, 200, "backup", "5xx");
  assert_hdr(&r, "x-modelgate-variant", "big");
  mg_h_resp_free(&r);

  ask_h(e, "gpt-flag", "free", "", "x-modelgate-attr-tier: free\r\n", &r);
  assert_served(&r, 200, "traditional:sorry", "5xx");
  assert_hdr(&r, "x-modelgate-variant", "small");
  assert_content(&r, "Sorry.");
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-backup"), 1);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, tenv_setup, tenv_teardown)
  const struct CMUnitTest tests[] = {
      T(test_connect_error),
      T(test_primary_hangs),
      T(test_5xx),
      T(test_429_retry_after),
      T(test_invalid),
      T(test_low_confidence),
      T(test_breaker_open),
      T(test_fallback_on),
      T(test_retries),
      T(test_deadline),
      T(test_client_4xx_unmasked),
      T(test_nothing_answers),
      T(test_flag_variant_chain),
  };
#undef T
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
