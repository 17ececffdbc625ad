/* test_apis.c - the OpenAI Responses and Anthropic Messages APIs through the
 * real modelgate in front of mg-mock, over loopback (issue 14; DESIGN.md,
 * "The APIs"): each endpoint answered in its own shape, ids that name the
 * target holding the conversation, GET/DELETE and previous_response_id
 * pinned there, the conversation rule when the flag moves, streams relayed
 * as typed events and ended in the family's way when they fail, Anthropic
 * keys and headers, fallbacks within a family and a made answer in its
 * shape, and no request ever sent across families. */
#define _DEFAULT_SOURCE 1
#define _GNU_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"
#include "test_fallbacks.h"

/* ra and rb share an upstream (same base URL and key), so they share the
 * stored state of a conversation; rc reaches the same mock by another base
 * URL (localhost), so to modelgate it is another upstream. */
static const char config_fmt[] =
    "'targets':{"
    "'ra':{'base_url':'@MOCK','model':'m-ra','api_key_env':'" KEY_ENV "'},"
    "'rb':{'base_url':'@MOCK','model':'m-rb','api_key_env':'" KEY_ENV "'},"
    "'rc':{'base_url':'http://localhost:%d/v1','model':'m-rc',"
    "'api_key_env':'" KEY_ENV "'},"
    "'rdie':{'base_url':'@MOCK','model':'m-rdie'},"
    "'ca':{'base_url':'@MOCK','model':'c-a','api':'anthropic',"
    "'api_key_env':'" KEY_ENV "','anthropic_version':'2023-06-01'},"
    "'cdown':{'base_url':'@MOCK','model':'c-down','api':'anthropic',"
    "'api_key_env':'" KEY_ENV "','fallbacks':['cb']},"
    "'cb':{'base_url':'@MOCK','model':'c-b','api':'anthropic',"
    "'api_key_env':'" KEY_ENV "'},"
    "'cgone':{'base_url':'@MOCK','model':'c-gone','api':'anthropic',"
    "'api_key_env':'" KEY_ENV "','fallbacks':['traditional:sorry']},"
    "'csolo':{'base_url':'@MOCK','model':'c-solo','api':'anthropic',"
    "'api_key_env':'" KEY_ENV "'},"
    "'cdie':{'base_url':'@MOCK','model':'c-die','api':'anthropic',"
    "'api_key_env':'" KEY_ENV "'}},"
    "'traditional':{'sorry':{'static':'Sorry, the assistant is away.'}},"
    /* Both arms share the upstream, then arms on two upstreams. */
    "'flags':{"
    "'same':{'off_variant':'ctl','variants':{"
    "'ctl':{'target':'ra','weight':0},'trt':{'target':'rb','weight':100}}},"
    "'moved':{'off_variant':'ctl','variants':{"
    "'ctl':{'target':'ra','weight':0},'trt':{'target':'rc','weight':100}}}},"
    "'aliases':{'gpt-r':{'target':'ra'},'gpt-same':{'flag':'same'},"
    "'gpt-moved':{'flag':'moved'},'gpt-rdie':{'target':'rdie'},"
    "'claude':{'target':'ca'},'claude-fb':{'target':'cdown'},"
    "'claude-trad':{'target':'cgone'},'claude-solo':{'target':'csolo'},"
    "'claude-die':{'target':'cdie'}}";

#define ADMIN_H "Authorization: Bearer " KEY_VALUE "\r\n"

static int group_setup(void **state) {
  struct tenv *e;
  char *cfg;
  if (tenv_setup(state) != 0)
    return -1;
  e = *state;
  {
    /* gate_cfg_level's config, with an admin token: the harness gives
     * modelgate one variable (KEY_ENV), which serves as the token too. */
    char *members = fmt(config_fmt, e->mock.port), *body;
    body = expand(e, members);
    cfg = fmt("{\"admin\":{\"listen\":\"127.0.0.1:0\",\"token_env\":\"" KEY_ENV
              "\"},\"server\":{\"listen\":\"127.0.0.1:0\",\"log_level\":"
              "\"info\",\"shutdown_grace_ms\":2000},%s}",
              body);
    if (gate_start(e, cfg) != 0)
      fail_msg("modelgate did not start on %s", cfg);
    free(body);
    free(members);
    free(cfg);
  }
  behave(e, "{'model':'m-rdie','mode':'stream_die','die_after':3,"
            "'chunk_ms':20}");
  behave(e, "{'model':'c-down','mode':'status','status':529}");
  behave(e, "{'model':'c-gone','mode':'status','status':500}");
  behave(e, "{'model':'c-solo','mode':'status','status':429,"
            "'retry_after':3}");
  behave(e, "{'model':'c-die','mode':'stream_die','die_after':3,"
            "'chunk_ms':20}");
  return 0;
}

static int request(struct tenv *e, const char *method, const char *path,
                   const char *headers, const char *body,
                   struct mg_h_resp *r) {
  return mg_h_request(e->gate.port, method, path, headers, body, r,
                      T_MS * SLOW);
}

/* POST /v1/responses; the answer parsed (caller deletes). */
static cJSON *respond(struct tenv *e, const char *body, struct mg_h_resp *r) {
  assert_int_equal(request(e, "POST", "/v1/responses", NULL, body, r), 0);
  return json_body(r);
}

/* A wrapped id: "resp_mg" and a name, then "_" and the upstream's id. */
static const char *upstream_part(const char *id) {
  const char *u;
  assert_int_equal(strncmp(id, "resp_mg", 7), 0);
  u = strchr(id + 7, '_');
  assert_non_null(u);
  return u + 1;
}

/* ---- Responses ------------------------------------------------------------ */

static void test_responses_plain_get_delete(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  char id[512], path[600], up[512];
  cJSON *a, *last;

  a = respond(e, "{\"model\":\"gpt-r\",\"input\":\"Hello there\"}", &r);
  assert_int_equal(r.status, 200);
  check_hdr(&r, "x-modelgate-served-by", "ra", __LINE__);
  assert_string_equal(str_at(a, "object"), "response");
  assert_string_equal(str_at(a, "status"), "completed");
  assert_non_null(strstr(str_at(a, "output.0.content.0.text"),
                         "Mock answer from m-ra to: Hello there"));
  snprintf(id, sizeof(id), "%s", str_at(a, "id"));
  snprintf(up, sizeof(up), "%s", upstream_part(id));
  assert_true(strlen(up) > 0);
  cJSON_Delete(a);
  mg_h_resp_free(&r);
  /* The upstream was sent its own model name and never saw our id. */
  last = mock_last_body(e, "m-ra");
  assert_string_equal(str_at(last, "model"), "m-ra");
  cJSON_Delete(last);

  /* GET reaches the target that made it and answers with our id. */
  snprintf(path, sizeof(path), "/v1/responses/%s", id);
  assert_int_equal(request(e, "GET", path, NULL, NULL, &r), 0);
  assert_int_equal(r.status, 200);
  a = json_body(&r);
  assert_string_equal(str_at(a, "id"), id);
  cJSON_Delete(a);
  mg_h_resp_free(&r);
  snprintf(path, sizeof(path), "/v1/responses/%s/input_items", id);
  assert_int_equal(request(e, "GET", path, NULL, NULL, &r), 0);
  assert_int_equal(r.status, 200);
  a = json_body(&r);
  assert_string_equal(str_at(a, "object"), "list");
  assert_non_null(strstr(r.body, "Hello there"));
  cJSON_Delete(a);
  mg_h_resp_free(&r);

  /* DELETE, then it is gone (the upstream's 404, in OpenAI's shape). */
  snprintf(path, sizeof(path), "/v1/responses/%s", id);
  assert_int_equal(request(e, "DELETE", path, NULL, NULL, &r), 0);
  assert_int_equal(r.status, 200);
  a = json_body(&r);
  assert_string_equal(str_at(a, "id"), id);
  assert_true(cJSON_IsTrue(at(a, "deleted")));
  cJSON_Delete(a);
  mg_h_resp_free(&r);
  assert_int_equal(request(e, "GET", path, NULL, NULL, &r), 0);
  assert_int_equal(r.status, 404);
  mg_h_resp_free(&r);

  /* An id that names no target of the config: 404, nothing sent. */
  {
    int before = mock_count(e, "m-ra");
    assert_int_equal(request(e, "GET", "/v1/responses/resp_forged_123", NULL,
                             NULL, &r),
                     0);
    assert_int_equal(r.status, 404);
    mg_h_resp_free(&r);
    assert_int_equal(mock_count(e, "m-ra"), before);
  }
}

static void test_responses_chain_and_conversation_rule(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  char id[512], body[1024], up[512];
  cJSON *a, *last;

  /* A chain on one target: the follow-up reaches it with the upstream's
   * own id for previous_response_id. */
  a = respond(e, "{\"model\":\"gpt-r\",\"input\":\"first\"}", &r);
  assert_int_equal(r.status, 200);
  snprintf(id, sizeof(id), "%s", str_at(a, "id"));
  snprintf(up, sizeof(up), "%s", upstream_part(id));
  cJSON_Delete(a);
  mg_h_resp_free(&r);
  snprintf(body, sizeof(body),
           "{\"model\":\"gpt-r\",\"input\":\"second\","
           "\"previous_response_id\":\"%s\"}",
           id);
  a = respond(e, body, &r);
  assert_int_equal(r.status, 200);
  cJSON_Delete(a);
  mg_h_resp_free(&r);
  last = mock_last_body(e, "m-ra");
  assert_string_equal(str_at(last, "previous_response_id"), up);
  cJSON_Delete(last);

  /* Flag "same": the unit is in trt (rb); killed, the flag serves ctl
   * (ra), which shares rb's upstream: the follow-up is served there. */
  a = respond(e, "{\"model\":\"gpt-same\",\"user\":\"u1\",\"input\":\"hi\"}",
              &r);
  assert_int_equal(r.status, 200);
  check_hdr(&r, "x-modelgate-served-by", "rb", __LINE__);
  snprintf(id, sizeof(id), "%s", str_at(a, "id"));
  cJSON_Delete(a);
  mg_h_resp_free(&r);
  /* Same variant: the same target. */
  snprintf(body, sizeof(body),
           "{\"model\":\"gpt-same\",\"user\":\"u1\",\"input\":\"again\","
           "\"previous_response_id\":\"%s\"}",
           id);
  a = respond(e, body, &r);
  assert_int_equal(r.status, 200);
  check_hdr(&r, "x-modelgate-served-by", "rb", __LINE__);
  cJSON_Delete(a);
  mg_h_resp_free(&r);
  assert_int_equal(mg_h_request(e->gate.admin_port, "POST",
                                "/admin/flags/same/kill", ADMIN_H, "", &r,
                                T_MS),
                   0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  a = respond(e, body, &r);
  assert_int_equal(r.status, 200);
  check_hdr(&r, "x-modelgate-served-by", "ra", __LINE__);
  check_hdr(&r, "x-modelgate-reason", "killed", __LINE__);
  cJSON_Delete(a);
  mg_h_resp_free(&r);

  /* Flag "moved": trt is rc, another upstream. Killed, ctl's ra does not
   * hold the conversation: conversation_unavailable, nothing sent. */
  a = respond(e, "{\"model\":\"gpt-moved\",\"user\":\"u2\",\"input\":\"hi\"}",
              &r);
  assert_int_equal(r.status, 200);
  check_hdr(&r, "x-modelgate-served-by", "rc", __LINE__);
  snprintf(id, sizeof(id), "%s", str_at(a, "id"));
  cJSON_Delete(a);
  mg_h_resp_free(&r);
  assert_int_equal(mg_h_request(e->gate.admin_port, "POST",
                                "/admin/flags/moved/kill", ADMIN_H, "", &r,
                                T_MS),
                   0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  {
    int before = mock_count(e, "m-ra");
    snprintf(body, sizeof(body),
             "{\"model\":\"gpt-moved\",\"user\":\"u2\",\"input\":\"more\","
             "\"previous_response_id\":\"%s\"}",
             id);
    assert_int_equal(request(e, "POST", "/v1/responses", NULL, body, &r), 0);
    assert_error(&r, r.status, "conversation_unavailable");
    assert_true(r.status == 400 || r.status == 409);
    mg_h_resp_free(&r);
    assert_int_equal(mock_count(e, "m-ra"), before);
  }
  /* The stored response is still reachable where it lives. */
  snprintf(body, sizeof(body), "/v1/responses/%s", id);
  assert_int_equal(request(e, "GET", body, NULL, NULL, &r), 0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
}

/* The typed events of one stream: each data: carries its type; the ids in
 * response.* events are ours. */
static void test_responses_stream(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  struct events ev;
  size_t i;
  bool created = false, completed = false, delta = false;

  assert_int_equal(request(e, "POST", "/v1/responses", NULL,
                           "{\"model\":\"gpt-r\",\"input\":\"stream me\","
                           "\"stream\":true}",
                           &r),
                   0);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.head, "text/event-stream"));
  /* Typed events carry an event: line before data:; keep only data. */
  {
    char *only = malloc(r.body_len + 1);
    const char *p = r.body;
    size_t n = 0;
    assert_non_null(only);
    while (*p) {
      const char *nl = strchr(p, '\n');
      size_t l = nl ? (size_t)(nl - p + 1) : strlen(p);
      if (strncmp(p, "event: ", 7) != 0) {
        memcpy(only + n, p, l);
        n += l;
      }
      p += l;
    }
    only[n] = '\0';
    events_parse(only, &ev);
    free(only);
  }
  assert_true(ev.n >= 5);
  for (i = 0; i < ev.n; i++) {
    cJSON *a = cJSON_Parse(ev.items[i]);
    const char *type;
    if (a == NULL)
      fail_msg("event %zu is not JSON: %s", i, ev.items[i]);
    type = str_at(a, "type");
    if (strcmp(type, "response.created") == 0) {
      created = true;
      assert_int_equal(strncmp(str_at(a, "response.id"), "resp_mg", 7), 0);
    }
    if (strcmp(type, "response.output_text.delta") == 0)
      delta = true;
    if (strcmp(type, "response.completed") == 0) {
      completed = true;
      assert_int_equal(strncmp(str_at(a, "response.id"), "resp_mg", 7), 0);
      assert_int_equal(i, ev.n - 1); /* the last one */
    }
    cJSON_Delete(a);
  }
  assert_true(created && delta && completed);
  events_free(&ev);
  mg_h_resp_free(&r);
}

/* A stream that dies after its head went out ends with response.failed
 * and an error event, never response.completed. */
static void test_responses_stream_dies(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  assert_int_equal(request(e, "POST", "/v1/responses", NULL,
                           "{\"model\":\"gpt-rdie\",\"input\":\"x\","
                           "\"stream\":true}",
                           &r),
                   0);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.body, "\"type\":\"response.failed\""));
  assert_non_null(strstr(r.body, "\"type\":\"error\""));
  assert_null(strstr(r.body, "response.completed"));
  assert_true(strstr(r.body, "response.failed") <
              strstr(r.body, "\"type\":\"error\""));
  mg_h_resp_free(&r);
}

/* ---- Anthropic Messages ---------------------------------------------------- */

#define ANTH_H "anthropic-version: 2023-06-01\r\nx-api-key: sk-client-own\r\n"
#define MSG(model, extra)                                                     \
  "{\"model\":\"" model "\",\"max_tokens\":64,\"messages\":[{\"role\":"      \
  "\"user\",\"content\":\"Hello Claude\"}]" extra "}"

static void test_messages_plain_and_headers(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  char v[256];
  cJSON *a;
  char *s;

  assert_int_equal(request(e, "POST", "/v1/messages",
                           ANTH_H "anthropic-beta: tools-2024-04-04\r\n",
                           MSG("claude", ""), &r),
                   0);
  assert_int_equal(r.status, 200);
  check_hdr(&r, "x-modelgate-served-by", "ca", __LINE__);
  a = json_body(&r);
  assert_string_equal(str_at(a, "type"), "message");
  assert_string_equal(str_at(a, "role"), "assistant");
  assert_non_null(strstr(str_at(a, "content.0.text"),
                         "Mock answer from c-a to: Hello Claude"));
  assert_true(cJSON_IsNumber(at(a, "usage.input_tokens")));
  cJSON_Delete(a);
  mg_h_resp_free(&r);

  /* Upstream: the target's key as x-api-key (never the client's), the
   * client's anthropic-version and anthropic-beta, its own model name. */
  s = mg_h_mock_stats(e->mock.port);
  assert_non_null(s);
  assert_non_null(mg_h_json_str(s, "/anthropic/x-api-key", v, sizeof(v)));
  assert_string_equal(v, KEY_VALUE);
  assert_non_null(
      mg_h_json_str(s, "/anthropic/anthropic-version", v, sizeof(v)));
  assert_string_equal(v, "2023-06-01");
  assert_non_null(mg_h_json_str(s, "/anthropic/anthropic-beta", v, sizeof(v)));
  assert_string_equal(v, "tools-2024-04-04");
  free(s);
  a = mock_last_body(e, "c-a");
  assert_string_equal(str_at(a, "model"), "c-a");
  cJSON_Delete(a);

  /* count_tokens passes through to the same target. */
  assert_int_equal(request(e, "POST", "/v1/messages/count_tokens", ANTH_H,
                           "{\"model\":\"claude\",\"messages\":[{\"role\":"
                           "\"user\",\"content\":\"count me\"}]}",
                           &r),
                   0);
  assert_int_equal(r.status, 200);
  a = json_body(&r);
  assert_true(cJSON_IsNumber(at(a, "input_tokens")));
  cJSON_Delete(a);
  mg_h_resp_free(&r);
}

static void test_messages_stream(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  const char *start, *stop, *delta;
  assert_int_equal(request(e, "POST", "/v1/messages", ANTH_H,
                           MSG("claude", ",\"stream\":true"), &r),
                   0);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.head, "text/event-stream"));
  start = strstr(r.body, "event: message_start");
  delta = strstr(r.body, "event: content_block_delta");
  stop = strstr(r.body, "event: message_stop");
  assert_non_null(start);
  assert_non_null(delta);
  assert_non_null(stop);
  assert_true(start < delta && delta < stop);
  assert_null(strstr(r.body, "event: error"));
  mg_h_resp_free(&r);

  /* Cut by the upstream after its head went out: an error event ends it,
   * never message_stop. */
  assert_int_equal(request(e, "POST", "/v1/messages", ANTH_H,
                           MSG("claude-die", ",\"stream\":true"), &r),
                   0);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.body, "event: error"));
  assert_null(strstr(r.body, "event: message_stop"));
  mg_h_resp_free(&r);
}

/* Anthropic's error shape for this endpoint, with the type for the
 * status. */
static void check_anthropic_error(const struct mg_h_resp *r, int status,
                                  const char *type) {
  cJSON *a = json_body(r);
  assert_int_equal(r->status, status);
  assert_string_equal(str_at(a, "type"), "error");
  assert_string_equal(str_at(a, "error.type"), type);
  assert_true(strlen(str_at(a, "error.message")) > 0);
  assert_null(at(a, "error.code")); /* Anthropic's shape has none */
  cJSON_Delete(a);
}

static void test_messages_fallbacks_and_errors(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  cJSON *a;

  /* Overloaded (529): the next Anthropic target in the chain answers. */
  assert_int_equal(
      request(e, "POST", "/v1/messages", ANTH_H, MSG("claude-fb", ""), &r), 0);
  assert_int_equal(r.status, 200);
  check_hdr(&r, "x-modelgate-served-by", "cb", __LINE__);
  a = json_body(&r);
  assert_non_null(strstr(str_at(a, "content.0.text"), "Mock answer from c-b"));
  cJSON_Delete(a);
  mg_h_resp_free(&r);

  /* Down with only a traditional tier: the made answer is an Anthropic
   * message. */
  assert_int_equal(
      request(e, "POST", "/v1/messages", ANTH_H, MSG("claude-trad", ""), &r),
      0);
  assert_int_equal(r.status, 200);
  check_hdr(&r, "x-modelgate-served-by", "traditional:sorry", __LINE__);
  a = json_body(&r);
  assert_string_equal(str_at(a, "type"), "message");
  assert_string_equal(str_at(a, "role"), "assistant");
  assert_string_equal(str_at(a, "content.0.type"), "text");
  assert_string_equal(str_at(a, "content.0.text"),
                      "Sorry, the assistant is away.");
  cJSON_Delete(a);
  mg_h_resp_free(&r);
  /* ...and as its event stream. */
  assert_int_equal(request(e, "POST", "/v1/messages", ANTH_H,
                           MSG("claude-trad", ",\"stream\":true"), &r),
                   0);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.body, "event: message_start"));
  assert_non_null(strstr(r.body, "Sorry, the assistant is away."));
  assert_non_null(strstr(r.body, "event: message_stop"));
  mg_h_resp_free(&r);

  /* No fallback: the upstream's 429 in Anthropic's shape, Retry-After
   * passed on. */
  assert_int_equal(
      request(e, "POST", "/v1/messages", ANTH_H, MSG("claude-solo", ""), &r),
      0);
  check_anthropic_error(&r, 429, "rate_limit_error");
  check_hdr(&r, "retry-after", "3", __LINE__);
  mg_h_resp_free(&r);

  /* modelgate's own errors on this endpoint are Anthropic-shaped too. */
  assert_int_equal(request(e, "POST", "/v1/messages", ANTH_H,
                           "{\"model\":\"claude\",", &r),
                   0);
  check_anthropic_error(&r, 400, "invalid_request_error");
  mg_h_resp_free(&r);
  assert_int_equal(request(e, "POST", "/v1/messages", ANTH_H,
                           MSG("no-such-model", ""), &r),
                   0);
  check_anthropic_error(&r, 404, "not_found_error");
  mg_h_resp_free(&r);
}

/* No request crosses families: a chat request for an Anthropic alias and a
 * Messages request for an OpenAI one are refused in the endpoint's shape,
 * and nothing reaches the upstream. */
static void test_families_never_mix(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  char msg[400];
  int ca = mock_count(e, "c-a"), ra = mock_count(e, "m-ra");

  assert_int_equal(chat(e->gate.port, "claude", "hello", "", &r), 0);
  assert_error_msg(&r, 404, "model_not_found", msg, sizeof(msg));
  assert_non_null(strstr(msg, "/v1/messages"));
  mg_h_resp_free(&r);
  assert_int_equal(
      request(e, "POST", "/v1/messages", ANTH_H, MSG("gpt-r", ""), &r), 0);
  check_anthropic_error(&r, 404, "not_found_error");
  mg_h_resp_free(&r);
  assert_int_equal(mock_count(e, "c-a"), ca);
  assert_int_equal(mock_count(e, "m-ra"), ra);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_responses_plain_get_delete),
      cmocka_unit_test(test_responses_chain_and_conversation_rule),
      cmocka_unit_test(test_responses_stream),
      cmocka_unit_test(test_responses_stream_dies),
      cmocka_unit_test(test_messages_plain_and_headers),
      cmocka_unit_test(test_messages_stream),
      cmocka_unit_test(test_messages_fallbacks_and_errors),
      cmocka_unit_test(test_families_never_mix),
  };
  return cmocka_run_group_tests(tests, group_setup, tenv_teardown);
}
