/* test_fallbacks_tiers.c - every kind of tier answering, for plain and
 * streaming clients: a traditional HTTP service (a tiny server on a thread
 * of the test), a static traditional answer, the answer cache through a
 * primary outage and with serve_hits; and the limits of falling back on a
 * stream: possible before the first byte, an error event (never a fake
 * [DONE]) after it. */
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

/* Each test's world: the usual one plus a traditional service. */
struct world {
  struct tenv *e; /* first: teardown hands it to tenv_teardown */
  struct trad trad;
};

static int world_setup(void **state) {
  struct world *w = calloc(1, sizeof(*w));
  void *e = NULL;
  if (w == NULL || tenv_setup(&e) != 0) {
    free(w);
    return -1;
  }
  w->e = e;
  trad_start(&w->trad);
  *state = w;
  return 0;
}

static int world_teardown(void **state) {
  struct world *w = *state;
  void *e = w->e;
  int rc;
  trad_stop(&w->trad);
  rc = tenv_teardown(&e);
  free(w);
  *state = NULL;
  return rc;
}

/* The event stream a traditional or static answer makes for a chat
 * client: a role chunk, one content chunk, a finish chunk, [DONE]. */
static void assert_wrapped_sse(const struct mg_h_resp *r, const char *model,
                               const char *text) {
  struct events ev;
  cJSON *a;
  assert_int_equal(sse_content(r, model, (char[1024]){0}, 1024), 4);
  assert_sse(r, model, text);
  events_parse(r->body, &ev);
  a = cJSON_Parse(ev.items[0]);
  assert_string_equal(str_at(a, "choices.0.delta.role"), "assistant");
  cJSON_Delete(a);
  a = cJSON_Parse(ev.items[2]);
  assert_string_equal(str_at(a, "choices.0.finish_reason"), "stop");
  cJSON_Delete(a);
  events_free(&ev);
}

/* A wrapped chat.completion carrying text, from `model`. */
static void assert_wrapped(const struct mg_h_resp *r, const char *model,
                           const char *text) {
  cJSON *a = json_body(r);
  assert_string_equal(str_at(a, "object"), "chat.completion");
  assert_string_equal(str_at(a, "model"), model);
  assert_string_equal(str_at(a, "choices.0.message.role"), "assistant");
  assert_string_equal(str_at(a, "choices.0.message.content"), text);
  assert_string_equal(str_at(a, "choices.0.finish_reason"), "stop");
  assert_true(cJSON_IsNull(at(a, "choices.0.logprobs")));
  cJSON_Delete(a);
}

/* A traditional HTTP service: it receives the client's original request,
 * its answer (the string at `field`, or the whole body) is wrapped as a
 * chat completion, or as events for a streaming client. One that fails or
 * is too slow is skipped. Embeddings skip traditional tiers. */
static void test_traditional_url(void **state) {
  struct world *w = *state;
  struct tenv *e = w->e;
  struct mg_h_resp r;
  char *want_body;
  cJSON *a;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary',"
              "'breaker':{'enabled':false},"
              "'fallbacks':['traditional:faq','traditional:sorry']},"
              "'second':{'base_url':'@MOCK','model':'m-primary',"
              "'breaker':{'enabled':false},"
              "'fallbacks':['traditional:whole']}},"
              "'traditional':{"
              "'faq':{'url':'@TRAD','field':'/answer','timeout_ms':400},"
              "'whole':{'url':'@TRAD'},"
              "'sorry':{'static':'Sorry.'}},"
              "'aliases':{'gpt-fb':{'target':'primary'},"
              "'gpt-whole':{'target':'second'}}");
  behave(e, "{'model':'m-primary','mode':'status','status':503}");
  trad_set(&w->trad, 200, 0, "{\"answer\":\"We open at 9 \\u2014 see you.\"}");

  ask(e, "gpt-fb", "when do you open", "", &r);
  assert_served(&r, 200, "traditional:faq", "5xx");
  assert_wrapped(&r, "traditional:faq", "We open at 9 \xe2\x80\x94 see you.");
  mg_h_resp_free(&r);
  /* The client's own body, model and all, not the upstream's. */
  want_body = chat_body("gpt-fb", "when do you open", "");
  pthread_mutex_lock(&w->trad.mu);
  assert_string_equal(w->trad.last_body, want_body);
  assert_string_equal(w->trad.last_path, "/faq");
  pthread_mutex_unlock(&w->trad.mu);
  free(want_body);

  ask(e, "gpt-fb", "when do you open", STREAM, &r);
  assert_served(&r, 200, "traditional:faq", "5xx");
  assert_true(r.chunked);
  assert_wrapped_sse(&r, "traditional:faq",
                     "We open at 9 \xe2\x80\x94 see you.");
  mg_h_resp_free(&r);

  /* Legacy completions get a text_completion. */
  assert_int_equal(post(e->gate.port, "/v1/completions",
                        "{\"model\":\"gpt-fb\",\"prompt\":\"open?\"}", &r),
                   0);
  assert_served(&r, 200, "traditional:faq", "5xx");
  a = json_body(&r);
  assert_string_equal(str_at(a, "object"), "text_completion");
  assert_string_equal(str_at(a, "choices.0.text"),
                      "We open at 9 \xe2\x80\x94 see you.");
  cJSON_Delete(a);
  mg_h_resp_free(&r);

  /* No field: the whole body is the answer. */
  trad_set(&w->trad, 200, 0, "Plain words, no JSON.");
  ask(e, "gpt-whole", "plain", "", &r);
  assert_served(&r, 200, "traditional:whole", "5xx");
  assert_wrapped(&r, "traditional:whole", "Plain words, no JSON.");
  mg_h_resp_free(&r);

  /* A failing service, a slow one, a missing field: the next tier. */
  trad_set(&w->trad, 500, 0, "{\"answer\":\"no\"}");
  ask(e, "gpt-fb", "x", "", &r);
  assert_served(&r, 200, "traditional:sorry", "5xx");
  assert_content(&r, "Sorry.");
  mg_h_resp_free(&r);
  trad_set(&w->trad, 200, 0, "{\"other\":\"no\"}");
  ask(e, "gpt-fb", "x", "", &r);
  assert_served(&r, 200, "traditional:sorry", "5xx");
  mg_h_resp_free(&r);
  trad_set(&w->trad, 200, 1000, "{\"answer\":\"late\"}");
  ask(e, "gpt-fb", "x", "", &r);
  assert_served(&r, 200, "traditional:sorry", "5xx");
  assert_between("traditional timeout then static (ms)", r.ms, 390,
                 400 + 250 * SLOW);
  mg_h_resp_free(&r);

  /* Embeddings: a traditional service cannot make them. */
  {
    int before = trad_requests(&w->trad);
    assert_int_equal(post(e->gate.port, "/v1/embeddings",
                          "{\"model\":\"gpt-whole\",\"input\":\"vec\"}", &r),
                     0);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "mock server error"));
    assert_int_equal(trad_requests(&w->trad), before);
    mg_h_resp_free(&r);
  }
}

/* A static traditional answer, for every client shape. */
static void test_traditional_static(void **state) {
  struct world *w = *state;
  struct tenv *e = w->e;
  struct mg_h_resp r;
  cJSON *a;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@DEAD','model':'m-primary',"
              "'fallbacks':['traditional:sorry']}},"
              "'traditional':{'sorry':{'static':'Busy \\\"now\\\", sorry.'}},"
              "'aliases':{'gpt-fb':{'target':'primary'}}");
  ask(e, "gpt-fb", "hi", "", &r);
  assert_served(&r, 200, "traditional:sorry", "connect_error");
  assert_wrapped(&r, "traditional:sorry", "Busy \"now\", sorry.");
  mg_h_resp_free(&r);

  ask(e, "gpt-fb", "hi", STREAM, &r);
  assert_served(&r, 200, "traditional:sorry", "connect_error");
  assert_wrapped_sse(&r, "traditional:sorry", "Busy \"now\", sorry.");
  mg_h_resp_free(&r);

  assert_int_equal(post(e->gate.port, "/v1/completions",
                        "{\"model\":\"gpt-fb\",\"prompt\":\"hi\",\"stream\":"
                        "true}",
                        &r),
                   0);
  assert_served(&r, 200, "traditional:sorry", "connect_error");
  assert_non_null(strstr(r.body, "\"object\":\"text_completion\""));
  assert_non_null(strstr(r.body, "Busy \\\"now\\\", sorry."));
  assert_non_null(strstr(r.body, "data: [DONE]\n\n"));
  mg_h_resp_free(&r);

  ask(e, "gpt-fb", "again", "", &r);
  a = json_body(&r);
  assert_string_equal(str_at(a, "model"), "traditional:sorry");
  cJSON_Delete(a);
  mg_h_resp_free(&r);
  assert_metric(e,
                "modelgate_fallbacks_total{target=\"primary\",tier="
                "\"traditional:sorry\",reason=\"connect_error\"}",
                4);
}

/* The cache serves through a primary outage: warmed by a good answer, the
 * same request (the key ignores model, user, stream, metadata) is answered
 * from it while the primary fails, as JSON or as events; other requests
 * miss and get the failure. */
static void test_cache_through_outage(void **state) {
  struct world *w = *state;
  struct tenv *e = w->e;
  struct mg_h_resp r;
  char *first;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary',"
              "'breaker':{'enabled':false},'fallbacks':['cache']}},"
              "'cache':{'max_entries':100,'ttl_ms':600000},"
              "'aliases':{'gpt-fb':{'target':'primary'},"
              "'gpt-other':{'target':'primary'}}");
  ask(e, "gpt-fb", "capital of France", ",\"temperature\":0", &r);
  assert_served(&r, 200, "primary", NULL);
  first = r.body;
  r.body = NULL;
  mg_h_resp_free(&r);
  assert_metric(e, "modelgate_cache_stores_total", 1);
  assert_metric(e, "modelgate_cache_entries", 1);
  if (mval(e, "modelgate_cache_bytes") < (double)strlen(first))
    fail_msg("modelgate_cache_bytes below the answer's size");

  behave(e, "{'model':'m-primary','mode':'status','status':500}");
  ask(e, "gpt-fb", "capital of France", ",\"temperature\":0", &r);
  assert_served(&r, 200, "cache", "5xx");
  assert_string_equal(r.body, first);
  mg_h_resp_free(&r);

  ask(e, "gpt-fb", "capital of France",
      ",\"temperature\":0.0,\"user\":\"bob\",\"metadata\":{\"a\":\"b\"}", &r);
  assert_served(&r, 200, "cache", "5xx");
  assert_string_equal(r.body, first);
  mg_h_resp_free(&r);

  ask(e, "gpt-fb", "capital of France",
      ",\"temperature\":0,\"stream\":true,\"stream_options\":"
      "{\"include_usage\":true}",
      &r);
  assert_served(&r, 200, "cache", "5xx");
  assert_true(r.chunked);
  assert_sse(&r, "m-primary",
             "Mock answer from m-primary to: capital of France");
  mg_h_resp_free(&r);

  /* Misses: another prompt, another parameter, another alias. */
  ask(e, "gpt-fb", "capital of Spain", ",\"temperature\":0", &r);
  assert_int_equal(r.status, 500);
  assert_hdr(&r, "x-modelgate-fallback", "5xx");
  mg_h_resp_free(&r);
  ask(e, "gpt-fb", "capital of France", ",\"temperature\":1", &r);
  assert_int_equal(r.status, 500);
  mg_h_resp_free(&r);
  ask(e, "gpt-other", "capital of France", ",\"temperature\":0", &r);
  assert_int_equal(r.status, 500);
  mg_h_resp_free(&r);

  assert_metric(e, "modelgate_cache_hits_total", 3);
  assert_metric(e, "modelgate_cache_misses_total", 3);
  assert_metric(e, "modelgate_cache_stores_total", 1);
  assert_metric(e,
                "modelgate_fallbacks_total{target=\"primary\",tier=\"cache\","
                "reason=\"5xx\"}",
                3);
  free(first);
}

/* The cache also answers when the primary used up the whole deadline,
 * and while the primary's breaker is open (the primary is not called). */
static void test_cache_after_deadline_and_breaker(void **state) {
  struct world *w = *state;
  struct tenv *e = w->e;
  struct mg_h_resp r;
  char *first;
  int i;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary',"
              "'timeouts':{'first_byte_ms':10000},'deadline_ms':500,"
              "'breaker':{'failures':2,'cooldown_ms':60000},"
              "'fallbacks':['cache']}},"
              "'aliases':{'gpt-fb':{'target':'primary'}}");
  ask(e, "gpt-fb", "remember me", "", &r);
  assert_served(&r, 200, "primary", NULL);
  first = r.body;
  r.body = NULL;
  mg_h_resp_free(&r);

  behave(e, "{'model':'m-primary','mode':'hang'}");
  for (i = 0; i < 2; i++) {
    ask(e, "gpt-fb", "remember me", "", &r);
    assert_served(&r, 200, "cache", "timeout");
    assert_string_equal(r.body, first);
    assert_between("deadline then cache (ms)", r.ms, 490, 500 + 250 * SLOW);
    mg_h_resp_free(&r);
  }
  assert_metric(e, "modelgate_breaker_state{target=\"primary\"}", 1);
  ask(e, "gpt-fb", "remember me", STREAM, &r);
  assert_served(&r, 200, "cache", "breaker_open");
  assert_sse(&r, "m-primary", "Mock answer from m-primary to: remember me");
  if (r.ms > 200.0 * SLOW)
    fail_msg("a cached answer behind an open breaker took %.0f ms", r.ms);
  mg_h_resp_free(&r);
  /* A request the cache does not know: the breaker's 503. */
  ask(e, "gpt-fb", "never seen", "", &r);
  assert_error(&r, 503, "upstream_unavailable");
  assert_hdr(&r, "x-modelgate-fallback", "breaker_open");
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-primary"), 3);
  free(first);
}

/* Only answers that passed the gate are stored; the cache then stands in
 * for an unsure answer too. */
static void test_cache_stores_only_sure_answers(void **state) {
  struct world *w = *state;
  struct tenv *e = w->e;
  struct mg_h_resp r;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary',"
              "'confidence':{'min':0.8},'fallbacks':['cache']}},"
              "'aliases':{'gpt-fb':{'target':'primary'}}");
  behave(e, "{'model':'m-primary','mode':'low_confidence','times':1}");
  ask(e, "gpt-fb", "sure?", "", &r);
  assert_error(&r, 422, "low_confidence");
  mg_h_resp_free(&r);
  assert_metric(e, "modelgate_cache_stores_total", 0);

  ask(e, "gpt-fb", "sure?", "", &r);
  assert_served(&r, 200, "primary", NULL);
  mg_h_resp_free(&r);
  assert_metric(e, "modelgate_cache_stores_total", 1);

  behave(e, "{'model':'m-primary','mode':'low_confidence'}");
  ask(e, "gpt-fb", "sure?", "", &r);
  assert_served(&r, 200, "cache", "low_confidence");
  assert_content(&r, "Mock answer from m-primary to: sure?");
  /* What was stored is what the client saw: no logprobs. */
  assert_null(strstr(r.body, "\"logprobs\":{"));
  mg_h_resp_free(&r);
}

/* serve_hits: a hit is answered before any target is called (no fallback
 * header: nothing failed); entries expire after ttl_ms. */
static void test_serve_hits(void **state) {
  struct world *w = *state;
  struct tenv *e = w->e;
  struct mg_h_resp r;
  char *first;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary'}},"
              "'cache':{'serve_hits':true,'ttl_ms':1000},"
              "'aliases':{'gpt-fb':{'target':'primary'}}");
  ask(e, "gpt-fb", "hit me", "", &r);
  assert_served(&r, 200, "primary", NULL);
  first = r.body;
  r.body = NULL;
  mg_h_resp_free(&r);

  ask(e, "gpt-fb", "hit me", "", &r);
  assert_served(&r, 200, "cache", NULL);
  assert_string_equal(r.body, first);
  mg_h_resp_free(&r);
  ask(e, "gpt-fb", "hit me", STREAM, &r);
  assert_served(&r, 200, "cache", NULL);
  assert_sse(&r, "m-primary", "Mock answer from m-primary to: hit me");
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-primary"), 1);
  assert_metric(e, "modelgate_cache_hits_total", 2);

  mg_h_sleep_ms(1100);
  ask(e, "gpt-fb", "hit me", "", &r);
  assert_served(&r, 200, "primary", NULL);
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "m-primary"), 2);
  free(first);
}

/* Before the first byte a stream can still fall back (an error status, a
 * garbage answer); after it, the upstream dying ends the stream with an
 * error event and no [DONE], and nothing else is tried. */
static void test_stream_fallback_limits(void **state) {
  struct world *w = *state;
  struct tenv *e = w->e;
  struct mg_h_resp r;
  struct events ev;
  size_t i;

  gate_cfg(e, "'targets':{"
              "'primary':{'base_url':'@MOCK','model':'m-primary',"
              "'breaker':{'enabled':false},'timeouts':{'idle_ms':300},"
              "'fallbacks':['backup','traditional:sorry']}," BACKUP "},"
              "'traditional':{'sorry':{'static':'Sorry.'}},"
              "'aliases':{'gpt-fb':{'target':'primary'}}");

  behave(e, "{'model':'m-primary','mode':'status','status':503,'times':1}");
  ask(e, "gpt-fb", "before the first byte", STREAM, &r);
  assert_served(&r, 200, "backup", "5xx");
  assert_sse(&r, "m-backup",
             "Mock answer from m-backup to: before the first "
             "byte");
  mg_h_resp_free(&r);

  behave(e, "{'model':'m-primary','mode':'garbage','times':1}");
  ask(e, "gpt-fb", "garbage first", STREAM, &r);
  assert_served(&r, 200, "backup", "invalid");
  assert_sse(&r, "m-backup", "Mock answer from m-backup to: garbage first");
  mg_h_resp_free(&r);

  /* The mock resets the connection right after its third event; a reset
   * may destroy data the receiver has not read yet (test_proxy_stream.c),
   * so the third event may or may not make it. */
  behave(e, "{'model':'m-primary','mode':'stream_die','chunks':8,"
            "'die_after':3,'chunk_ms':100}");
  ask(e, "gpt-fb", "die half way", STREAM, &r);
  assert_served(&r, 200, "primary", NULL);
  assert_true(r.chunked);
  assert_true(r.complete);
  events_parse(r.body, &ev);
  assert_string_equal(ev.rest, "");
  if (ev.n < 3 || ev.n > 4)
    fail_msg("want 2 or 3 chunks and an error event: %s", r.body);
  for (i = 0; i + 1 < ev.n; i++)
    assert_non_null(strstr(ev.items[i], "\"chat.completion.chunk\""));
  assert_error_event(ev.items[ev.n - 1], "upstream_truncated");
  assert_null(strstr(r.body, "[DONE]"));
  events_free(&ev);
  mg_h_resp_free(&r);
  assert_int_equal((int)stat_num(e->mock.port, "/streams_died"), 1);

  /* A stream that stalls after its first events: the idle timeout ends it
   * with an error event; the backup is not called either. */
  behave(e, "{'model':'m-primary','mode':'ok','chunks':5,'chunk_ms':3000,"
            "'times':1}");
  ask(e, "gpt-fb", "go quiet", STREAM, &r);
  assert_served(&r, 200, "primary", NULL);
  events_parse(r.body, &ev);
  assert_string_equal(ev.rest, "");
  assert_int_equal(ev.n, 2);
  assert_error_event(ev.items[1], "upstream_timeout");
  assert_null(strstr(r.body, "[DONE]"));
  events_free(&ev);
  assert_between("idle timeout mid-stream (ms)", r.ms, 290, 300 + 250 * SLOW);
  mg_h_resp_free(&r);

  assert_int_equal(mock_count(e, "m-backup"), 2);
  assert_metric(e, "modelgate_stream_errors_total{route=\"gpt-fb\"}", 2);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, world_setup, world_teardown)
  const struct CMUnitTest tests[] = {
      T(test_traditional_url),
      T(test_traditional_static),
      T(test_cache_through_outage),
      T(test_cache_after_deadline_and_breaker),
      T(test_cache_stores_only_sure_answers),
      T(test_serve_hits),
      T(test_stream_fallback_limits),
  };
#undef T
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
