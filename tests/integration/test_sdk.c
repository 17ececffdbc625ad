/* test_sdk.c - the official OpenAI Node SDK (npm package "openai", pinned
 * in tests/sdk/package.json) through the real modelgate in front of
 * mg-mock, both on loopback ports chosen at run time.
 *
 * One mock and one modelgate serve the whole group; every test runs one case
 * of tests/sdk/openai_sdk.mjs, which asserts on what the SDK returns or
 * throws (an application's view), and then checks here what the mock saw.
 * Each alias leads to an upstream model of its own, so the mock's behaviours
 * are set once and the cases do not disturb each other.
 *
 * The Responses API cases (responses.create, streams, retrieve, chains
 * across a flag kill) run in openai_sdk.mjs; Anthropic Messages ones, on
 * targets with api "anthropic", in anthropic_sdk.mjs (@anthropic-ai/sdk).
 *
 * Exits 77 (ctest: skipped) when node or tests/sdk/node_modules is missing;
 * scripts/test.sh installs both, so CI always runs it. */
#define _DEFAULT_SOURCE 1
#define _GNU_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"
#include "test_fallbacks.h"

#define SDK_DIR MG_SOURCE_DIR "/tests/sdk"
/* One run of node: its start-up, a few calls, one 300 ms first-byte timeout.
 * The script's own watchdog fires first (45 s); this bounds node itself. */
#define NODE_MS 60000

static char node_bin[512];

/* node (or Debian's older name, nodejs) on PATH; false when there is none. */
static bool find_node(void) {
  static const char *const names[] = {"node", "nodejs"};
  const char *path = getenv("PATH");
  char dirs[4096], *save = NULL, *d;
  size_t i;

  snprintf(dirs, sizeof(dirs), "%s", path ? path : "/usr/bin:/bin");
  for (d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save))
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
      snprintf(node_bin, sizeof(node_bin), "%s/%s", d, names[i]);
      if (access(node_bin, X_OK) == 0)
        return true;
    }
  return false;
}

/* Every alias leads to an upstream model of its own. Only "main" has an API
 * key: one is enough to prove the client's own key is not forwarded. */
/* The SDK's key is a client's (clients.keys: its SHA-256; issue 10.6). */
#define SDK_KEY_SHA256 \
  "9934265507d90c84dda2b8fae6504943643448647f4461a6dcd56c8c4870d219"

/* A second upstream account's key, and the admin token the chain case
 * kills flags with (both in modelgate's environment, inherited). */
#define OTHER_KEY_ENV "MGT_OTHER_API_KEY"
#define ADMIN_TOKEN "sdk-admin-token-Jw4e9Rk2"

static const char config[] =
    "'clients':{'keys':{'sdk-app':'" SDK_KEY_SHA256 "'}},"
    "'targets':{"
    "'main':{'base_url':'@MOCK','model':'m-main','api_key_env':'" KEY_ENV "'},"
    /* A flag whose whole rollout is on the canary. */
    "'canary':{'base_url':'@MOCK','model':'m-canary'},"
    /* Dies half-way through a stream. */
    "'dying':{'base_url':'@MOCK','model':'m-die'},"
    /* Refuses the request with its own 400: returned as is, although the
     * target has a fallback. */
    "'picky':{'base_url':'@MOCK','model':'m-picky','fallbacks':['backup']},"
    /* Upstream errors with no fallback: 503, and 429 with Retry-After. */
    "'down':{'base_url':'@MOCK','model':'m-down'},"
    "'limited':{'base_url':'@MOCK','model':'m-limited'},"
    /* Unsure answers, and a gate that abstains. */
    "'gated':{'base_url':'@MOCK','model':'m-gated',"
    "'confidence':{'min':0.8,'action':'abstain'}},"
    /* 503, then a hang past first_byte_ms: the backup answers. */
    "'primary':{'base_url':'@MOCK','model':'m-primary',"
    "'fallbacks':['backup']},"
    "'sleepy':{'base_url':'@MOCK','model':'m-sleepy',"
    "'timeouts':{'first_byte_ms':300},'fallbacks':['backup']},"
    "'backup':{'base_url':'@MOCK','model':'m-backup'},"
    /* The Responses API: a plain target, one that dies mid-stream, and two
     * flags. resp-flag's variants are one upstream account (same base URL
     * and key: they share stored responses); resp-split's off variant is
     * another account (another key), which cannot see them. */
    "'resp':{'base_url':'@MOCK','model':'m-resp','api_key_env':'" KEY_ENV "'},"
    "'resp-die':{'base_url':'@MOCK','model':'m-resp-die'},"
    "'r-canary':{'base_url':'@MOCK','model':'m-r-canary',"
    "'api_key_env':'" KEY_ENV "'},"
    "'r-stable':{'base_url':'@MOCK','model':'m-r-stable',"
    "'api_key_env':'" KEY_ENV "'},"
    "'split-canary':{'base_url':'@MOCK','model':'m-split-canary',"
    "'api_key_env':'" KEY_ENV "'},"
    "'split-stable':{'base_url':'@MOCK','model':'m-split-stable',"
    "'api_key_env':'" OTHER_KEY_ENV "'},"
    /* Anthropic Messages (anthropic_sdk.mjs): the mock wants the target's
     * key as x-api-key. */
    "'claude':{'api':'anthropic','base_url':'@MOCK','model':'m-claude',"
    "'api_key_env':'" KEY_ENV "'},"
    "'claude-die':{'api':'anthropic','base_url':'@MOCK',"
    "'model':'m-claude-die','api_key_env':'" KEY_ENV "'},"
    "'claude-busy':{'api':'anthropic','base_url':'@MOCK',"
    "'model':'m-claude-busy','api_key_env':'" KEY_ENV "'},"
    "'claude-limited':{'api':'anthropic','base_url':'@MOCK',"
    "'model':'m-claude-limited','api_key_env':'" KEY_ENV "'},"
    "'claude-picky':{'api':'anthropic','base_url':'@MOCK',"
    "'model':'m-claude-picky','api_key_env':'" KEY_ENV "'}},"
    "'flags':{'chat-model':{'off_variant':'stable','variants':{"
    "'stable':{'target':'main','weight':0},"
    "'canary':{'target':'canary','weight':100}}},"
    "'resp-flag':{'off_variant':'stable','variants':{"
    "'stable':{'target':'r-stable','weight':0},"
    "'canary':{'target':'r-canary','weight':100}}},"
    "'resp-split':{'off_variant':'stable','variants':{"
    "'stable':{'target':'split-stable','weight':0},"
    "'canary':{'target':'split-canary','weight':100}}}},"
    "'aliases':{'gpt-test':{'target':'main'},"
    "'gpt-flag':{'flag':'chat-model'},"
    "'gpt-die':{'target':'dying'},"
    "'gpt-picky':{'target':'picky'},"
    "'gpt-down':{'target':'down'},"
    "'gpt-limited':{'target':'limited'},"
    "'gpt-gated':{'target':'gated'},"
    "'gpt-fallback':{'target':'primary'},"
    "'gpt-slow-fallback':{'target':'sleepy'},"
    "'gpt-instruct':{'target':'main'},"
    "'gpt-resp':{'target':'resp'},"
    "'gpt-resp-die':{'target':'resp-die'},"
    "'gpt-resp-flag':{'flag':'resp-flag'},"
    "'gpt-resp-split':{'flag':'resp-split'},"
    "'claude-test':{'target':'claude'},"
    "'claude-die':{'target':'claude-die'},"
    "'claude-overloaded':{'target':'claude-busy'},"
    "'claude-limited':{'target':'claude-limited'},"
    "'claude-picky':{'target':'claude-picky'},"
    "'text-embedding-test':{'target':'main'}}";

static const char *const behaviours[] = {
    "{'model':'m-die','mode':'stream_die','chunks':6,'die_after':3,"
    "'chunk_ms':20}",
    "{'model':'m-picky','mode':'status','status':400,'body':{'error':{"
    "'message':'max_tokens is too large for this model',"
    "'type':'invalid_request_error','param':'max_tokens',"
    "'code':'context_length_exceeded'}}}",
    "{'model':'m-down','mode':'status','status':503,'body':{'error':{"
    "'message':'The upstream is overloaded','type':'server_error',"
    "'param':null,'code':'overloaded'}}}",
    "{'model':'m-limited','mode':'status','status':429,'retry_after':7,"
    "'body':{'error':{'message':'Rate limit reached','type':'requests',"
    "'param':null,'code':'rate_limit_exceeded'}}}",
    "{'model':'m-gated','mode':'low_confidence'}",
    "{'model':'m-primary','mode':'status','status':503}",
    "{'model':'m-sleepy','mode':'hang'}",
    "{'model':'m-resp-die','mode':'stream_die','chunks':6,'die_after':8,"
    "'chunk_ms':20}",
    "{'model':'m-claude','mode':'ok','cache_read':40,'cache_write':12}",
    "{'model':'m-claude-die','mode':'stream_die','chunks':6,'die_after':5,"
    "'chunk_ms':20}",
    "{'model':'m-claude-busy','mode':'status','status':529}",
    "{'model':'m-claude-limited','mode':'status','status':429,"
    "'retry_after':7}",
    "{'model':'m-claude-picky','mode':'status','status':400,'body':{"
    "'type':'error','error':{'type':'invalid_request_error',"
    "'message':'prompt is too long'}}}",
};

static int group_setup(void **state) {
  struct tenv *e;
  size_t i;

  if (tenv_setup(state) != 0)
    return -1;
  e = *state;
  setenv(OTHER_KEY_ENV, "sk-mgtest-another-account-Hq2", 1);
  setenv("MODELGATE_ADMIN_TOKEN", ADMIN_TOKEN, 1);
  gate_cfg_level(e, "info", config);
  {
    char port[16];
    snprintf(port, sizeof(port), "%d", e->gate.admin_port);
    setenv("MG_SDK_ADMIN_PORT", port, 1);
  }
  for (i = 0; i < sizeof(behaviours) / sizeof(behaviours[0]); i++)
    behave(e, behaviours[i]);
  return 0;
}

/* Zero the mock's counters before each test (its behaviours stay). */
static int reset_stats(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  int rc = mg_h_request(e->mock.port, "DELETE", "/_mock/stats", NULL, NULL, &r,
                        T_MS);
  rc = rc == 0 && r.status == 200 ? 0 : -1;
  mg_h_resp_free(&r);
  return rc;
}

/* Run `node SCRIPT PORT name`; it must exit 0 and say "ok name". */
static void sdk_run(struct tenv *e, const char *file, const char *name) {
  char port[16], want[64], script[512];
  const char *argv[] = {node_bin, script, port, name, NULL};
  char *out = NULL;
  double t0 = mg_h_now_ms();
  int rc;

  snprintf(script, sizeof(script), "%s/%s", SDK_DIR, file);
  snprintf(port, sizeof(port), "%d", e->gate.port);
  snprintf(want, sizeof(want), "ok %s:", name);
  rc = mg_h_run(argv, &out, NODE_MS);
  /* On failure the harness prints modelgate's log as well. */
  if (rc != 0 || out == NULL || strstr(out, want) == NULL) {
    print_error("%s", out ? out : "(no output)\n");
    free(out);
    fail_msg("node %s %s %s: exit %d", file, port, name, rc);
  }
  print_message("%s(%.0f ms)\n", out, mg_h_now_ms() - t0);
  free(out);
}

static void sdk_case(struct tenv *e, const char *name) {
  sdk_run(e, "openai_sdk.mjs", name);
}

/* A case of anthropic_sdk.mjs (@anthropic-ai/sdk). */
static void ant_case(struct tenv *e, const char *name) {
  sdk_run(e, "anthropic_sdk.mjs", name);
}

/* The last request the mock saw for model carried this header value. */
static void assert_mock_header(struct tenv *e, const char *model,
                               const char *name, const char *want) {
  char ptr[160], v[256];
  char *s = mg_h_mock_stats(e->mock.port);
  assert_non_null(s);
  snprintf(ptr, sizeof(ptr), "/last/%s/headers/%s", model, name);
  if (want == NULL) {
    if (mg_h_json_str(s, ptr, v, sizeof(v)) != NULL)
      fail_msg("%s: unexpected %s: %s", model, name, v);
  } else if (mg_h_json_str(s, ptr, v, sizeof(v)) == NULL ||
             strcmp(v, want) != 0) {
    fail_msg("%s: want %s: %s in %s", model, name, want, s);
  }
  free(s);
}

static void test_chat(void **state) {
  struct tenv *e = *state;
  sdk_case(e, "chat");
  /* modelgate sent the target's own key, never the one the SDK sent. */
  assert_mock_header(e, "m-main", "authorization", "Bearer " KEY_VALUE);
  assert_mock_header(e, "m-canary", "authorization", NULL);
}

static void test_stream(void **state) { sdk_case(*state, "stream"); }

static void test_stream_dies(void **state) {
  struct tenv *e = *state;
  sdk_case(e, "stream_die");
  /* Both streams were cut by the upstream; nothing was tried again. */
  assert_int_equal(stat_num(e->mock.port, "/streams_died"), 2);
  assert_int_equal(mock_count(e, "m-die"), 2);
}

static void test_unknown_model(void **state) {
  sdk_case(*state, "unknown_model");
}

static void test_bad_request(void **state) {
  struct tenv *e = *state;
  sdk_case(e, "bad_request");
  /* The client's own fault: the backup was not asked. */
  assert_int_equal(mock_count(e, "m-picky"), 1);
  assert_int_equal(mock_count(e, "m-backup"), 0);
}

static void test_body_too_large(void **state) {
  struct tenv *e = *state;
  sdk_case(e, "body_too_large");
  /* Refused before anything went upstream. */
  assert_int_equal(mock_count(e, "m-main"), 0);
}

/* With maxRetries: 0 and no retries configured, each failure is exactly one
 * upstream request: what the SDK reports is modelgate's first answer. */
static void test_upstream_errors(void **state) {
  struct tenv *e = *state;
  sdk_case(e, "upstream_errors");
  assert_int_equal(mock_count(e, "m-down"), 1);
  assert_int_equal(mock_count(e, "m-limited"), 1);
  assert_int_equal(mock_count(e, "m-gated"), 1);
}

static void test_fallback(void **state) {
  struct tenv *e = *state;
  sdk_case(e, "fallback");
  assert_int_equal(mock_count(e, "m-primary"), 2);
  assert_int_equal(mock_count(e, "m-sleepy"), 1);
  assert_int_equal(mock_count(e, "m-backup"), 3);
}

static void test_completions(void **state) { sdk_case(*state, "completions"); }
static void test_models(void **state) { sdk_case(*state, "models"); }

/* A wrong key is the SDK's AuthenticationError; the right one gets
 * through, and the answer's x-request-id is the upstream's own, so the
 * SDK's _request_id names the upstream request (issue 10.6). */
static void test_auth_and_request_id(void **state) {
  struct tenv *e = *state;
  char port[16], script[] = SDK_DIR "/openai_sdk.mjs", want[64], *s, *p;
  const char *argv[] = {node_bin, script, port, "auth", NULL};
  char *out = NULL;
  snprintf(port, sizeof(port), "%d", e->gate.port);
  if (mg_h_run(argv, &out, NODE_MS) != 0)
    fail_msg("node openai_sdk.mjs %s auth: %s", port, out ? out : "");
  assert_non_null(out);
  p = strstr(out, "ok auth: request ");
  if (p == NULL)
    fail_msg("node: %s", out);
  p += strlen("ok auth: request ");
  s = mg_h_mock_stats(e->mock.port);
  assert_non_null(s);
  assert_non_null(mg_h_json_str(s, "/last/m-main/request_id", want,
                                sizeof(want)));
  assert_true(strlen(want) > 4);
  if (strncmp(p, want, strlen(want)) != 0)
    fail_msg("SDK _request_id %.40s, upstream's %s", p, want);
  free(s);
  free(out);
}

static void test_embeddings(void **state) {
  struct tenv *e = *state;
  sdk_case(e, "embeddings");
  /* The SDK's default asked the upstream for base64 itself. */
  cJSON *b = mock_last_body(e, "m-main");
  assert_string_equal(str_at(b, "encoding_format"), "base64");
  cJSON_Delete(b);
}

/* ---- the Responses API ---- */

static void test_responses(void **state) {
  struct tenv *e = *state;
  sdk_case(e, "responses");
  assert_int_equal(mock_count(e, "m-resp"), 2);
  assert_mock_header(e, "m-resp", "authorization", "Bearer " KEY_VALUE);
}

static void test_responses_stream(void **state) {
  sdk_case(*state, "responses_stream");
}

static void test_responses_stream_dies(void **state) {
  struct tenv *e = *state;
  sdk_case(e, "responses_stream_die");
  assert_int_equal(stat_num(e->mock.port, "/streams_died"), 2);
  assert_int_equal(mock_count(e, "m-resp-die"), 2);
}

static void test_responses_retrieve(void **state) {
  struct tenv *e = *state;
  sdk_case(e, "responses_retrieve");
  /* Nothing went to the off variant. */
  assert_int_equal(mock_count(e, "m-r-stable"), 0);
}

/* Runs last among the Responses cases: it kills both of their flags. */
static void test_responses_chain_across_kill(void **state) {
  struct tenv *e = *state;
  sdk_case(e, "responses_chain");
  /* The refused link never reached any upstream. */
  assert_int_equal(mock_count(e, "m-split-canary"), 1);
  assert_int_equal(mock_count(e, "m-split-stable"), 1);
  assert_int_equal(mock_count(e, "m-r-stable"), 1);
}

/* ---- Anthropic Messages, @anthropic-ai/sdk ---- */

static void test_anthropic_messages(void **state) {
  struct tenv *e = *state;
  ant_case(e, "messages");
  assert_int_equal(mock_count(e, "m-claude"), 2);
  /* The target's key as x-api-key, never the client's. */
  assert_mock_header(e, "m-claude", "x-api-key", KEY_VALUE);
  assert_mock_header(e, "m-claude", "authorization", NULL);
}

static void test_anthropic_stream(void **state) {
  ant_case(*state, "stream");
}

static void test_anthropic_stream_dies(void **state) {
  struct tenv *e = *state;
  ant_case(e, "stream_die");
  assert_int_equal(stat_num(e->mock.port, "/streams_died"), 2);
  assert_int_equal(mock_count(e, "m-claude-die"), 2);
}

static void test_anthropic_upstream_errors(void **state) {
  struct tenv *e = *state;
  ant_case(e, "upstream_errors");
  assert_int_equal(mock_count(e, "m-claude-busy"), 1);
  assert_int_equal(mock_count(e, "m-claude-limited"), 1);
  assert_int_equal(mock_count(e, "m-claude-picky"), 1);
  /* The unknown client went nowhere. */
  assert_int_equal(mock_count(e, "m-claude"), 0);
}

static void test_anthropic_count_tokens(void **state) {
  struct tenv *e = *state;
  ant_case(e, "count_tokens");
  assert_int_equal(mock_count(e, "m-claude"), 2);
}

int main(void) {
#define SDK_TEST(f) cmocka_unit_test_setup(f, reset_stats)
  const struct CMUnitTest tests[] = {
      SDK_TEST(test_chat),        SDK_TEST(test_stream),
      SDK_TEST(test_stream_dies), SDK_TEST(test_unknown_model),
      SDK_TEST(test_bad_request), SDK_TEST(test_upstream_errors),
      SDK_TEST(test_fallback),    SDK_TEST(test_completions),
      SDK_TEST(test_embeddings),  SDK_TEST(test_body_too_large),
      SDK_TEST(test_models),      SDK_TEST(test_auth_and_request_id),
      SDK_TEST(test_responses),   SDK_TEST(test_responses_stream),
      SDK_TEST(test_responses_stream_dies),
      SDK_TEST(test_responses_retrieve),
      SDK_TEST(test_responses_chain_across_kill),
      SDK_TEST(test_anthropic_messages),
      SDK_TEST(test_anthropic_stream),
      SDK_TEST(test_anthropic_stream_dies),
      SDK_TEST(test_anthropic_upstream_errors),
      SDK_TEST(test_anthropic_count_tokens),
  };
  char probe[] = SDK_DIR "/node_modules/openai/package.json";
  char probe_ant[] = SDK_DIR "/node_modules/@anthropic-ai/sdk/package.json";

  if (!find_node()) {
    printf("node is not installed (scripts/test.sh installs it): "
           "skipping\n");
    return 77;
  }
  if (access(probe, R_OK) != 0) {
    printf("%s is missing (npm ci --prefix tests/sdk installs it; "
           "scripts/test.sh does): skipping\n",
           probe);
    return 77;
  }
  if (access(probe_ant, R_OK) != 0) {
    printf("%s is missing (npm ci --prefix tests/sdk installs it; "
           "scripts/test.sh does): skipping\n",
           probe_ant);
    return 77;
  }
  return cmocka_run_group_tests(tests, group_setup, tenv_teardown);
}
