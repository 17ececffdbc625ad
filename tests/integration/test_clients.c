/* test_clients.c - client keys on the data plane (issue 10.6; DESIGN.md,
 * "Clients"): without a known key a request gets OpenAI's 401; with one,
 * the client's name is the attribute `client` for targeting and units; the
 * keys file is read again on reload; nobody can claim another client's
 * name. Over loopback against the real binary and mg-mock. */
#define _DEFAULT_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"

/* sha256("sk-billing-0001"), sha256("sk-search-0002") */
#define BILLING_KEY "sk-billing-0001"
#define SEARCH_KEY "sk-search-0002"

static char *key_hash(const char *key) {
  char *cmd = fmt("printf %%s '%s' | sha256sum", key), *out = NULL;
  const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
  assert_int_equal(mg_h_run(argv, &out, T_MS), 0);
  assert_non_null(out);
  out[64] = '\0';
  free(cmd);
  return out;
}

/* Two variants told apart by their upstream model; a rule sends the
 * search client to "b"; the keys come from a file. */
static void start(struct tenv *e, const char *keys_file) {
  char *cfg = q(e, "{'admin':{'listen':'127.0.0.1:0'},'server':{'listen':"
                   "'127.0.0.1:0','shutdown_grace_ms':2000},"
                   "'clients':{'keys_file':'@DIR/clients.json'},"
                   "'targets':{'a':{'base_url':'@MOCK','model':'m-a'},"
                   "'b':{'base_url':'@MOCK','model':'m-b'}},"
                   "'flags':{'f':{'off_variant':'a','unit':'attr:client',"
                   "'variants':{'a':{'target':'a'},'b':{'target':'b'}},"
                   "'rules':[{'if':{'attr':'client','op':'eq','value':'search'},"
                   "'variant':'b'}]}},"
                   "'aliases':{'gpt-test':{'flag':'f'}}}");
  char *path = fmt("%s/clients.json", e->dir);
  assert_int_equal(mg_h_write_file(path, keys_file), 0);
  assert_int_equal(gate_start(e, cfg), 0);
  free(path);
  free(cfg);
}

static int call(struct tenv *e, const char *headers, struct mg_h_resp *r) {
  char *b = chat_body("gpt-test", "hello", "");
  int rc = mg_h_request(e->gate.port, "POST", "/v1/chat/completions", headers,
                        b, r, T_MS);
  free(b);
  return rc;
}

static void test_keys(void **state) {
  struct tenv *e = *state;
  char *hb = key_hash(BILLING_KEY), *hs = key_hash(SEARCH_KEY);
  char *keys = fmt("{\"billing\":\"%s\",\"search\":\"%s\"}", hb, hs), v[64];
  struct mg_h_resp r;
  start(e, keys);

  /* No key, a wrong key, a key with a different case: 401, nothing sent. */
  assert_int_equal(call(e, NULL, &r), 0);
  assert_error(&r, 401, "invalid_api_key");
  assert_true(decision_id(&r, NULL));
  mg_h_resp_free(&r);
  assert_int_equal(call(e, "Authorization: Bearer sk-nobody\r\n", &r), 0);
  assert_error(&r, 401, "invalid_api_key");
  mg_h_resp_free(&r);
  assert_int_equal(call(e, "Authorization: Bearer SK-BILLING-0001\r\n", &r),
                   0);
  assert_error(&r, 401, "invalid_api_key");
  mg_h_resp_free(&r);
  assert_true(stat_num(e->mock.port, "/requests_received") == 0);

  /* The billing client: Bearer, as the OpenAI SDKs send it. */
  assert_int_equal(call(e, "Authorization: Bearer " BILLING_KEY "\r\n", &r),
                   0);
  assert_int_equal(r.status, 200);
  assert_string_equal(mg_h_header(&r, "x-modelgate-served-by", v, sizeof(v)),
                      "a");
  mg_h_resp_free(&r);
  /* The search client, as the Anthropic SDKs send a key: the rule on the
   * attribute `client` serves it from b. */
  assert_int_equal(call(e, "x-api-key: " SEARCH_KEY "\r\n", &r), 0);
  assert_int_equal(r.status, 200);
  assert_string_equal(mg_h_header(&r, "x-modelgate-served-by", v, sizeof(v)),
                      "b");
  assert_string_equal(mg_h_header(&r, "x-modelgate-reason", v, sizeof(v)),
                      "rule:0");
  mg_h_resp_free(&r);
  /* The billing client cannot pass for the search client, by header or by
   * metadata: `client` is who the key says. */
  assert_int_equal(call(e,
                        "Authorization: Bearer " BILLING_KEY "\r\n"
                        "x-modelgate-attr-client: search\r\n",
                        &r),
                   0);
  assert_string_equal(mg_h_header(&r, "x-modelgate-served-by", v, sizeof(v)),
                      "a");
  mg_h_resp_free(&r);
  {
    char *b = chat_body("gpt-test", "hello",
                        ",\"metadata\":{\"client\":\"search\"}");
    assert_int_equal(mg_h_request(e->gate.port, "POST",
                                  "/v1/chat/completions",
                                  "Authorization: Bearer " BILLING_KEY "\r\n",
                                  b, &r, T_MS),
                     0);
    free(b);
    assert_string_equal(
        mg_h_header(&r, "x-modelgate-served-by", v, sizeof(v)), "a");
    mg_h_resp_free(&r);
  }
  /* The model list needs a key too. */
  assert_int_equal(get(e->gate.port, "/v1/models", &r), 0);
  assert_error(&r, 401, "invalid_api_key");
  mg_h_resp_free(&r);
  free(keys);
  free(hb);
  free(hs);
}

/* The keys file is read again on reload (how Kubernetes rotates a mounted
 * secret): a key added to it works after SIGHUP, a key removed stops. */
static void test_keys_file_reload(void **state) {
  struct tenv *e = *state;
  char *hb = key_hash(BILLING_KEY), *hs = key_hash(SEARCH_KEY);
  char *keys = fmt("{\"billing\":\"%s\"}", hb);
  char *path = fmt("%s/clients.json", e->dir);
  struct mg_h_resp r;
  start(e, keys);
  assert_int_equal(call(e, "x-api-key: " SEARCH_KEY "\r\n", &r), 0);
  assert_error(&r, 401, "invalid_api_key");
  mg_h_resp_free(&r);
  free(keys);
  keys = fmt("{\"search\":\"%s\"}", hs);
  assert_int_equal(mg_h_write_file(path, keys), 0);
  kill(e->gate.pid, SIGHUP);
  assert_true(metric_wait(e->gate.port,
                          "modelgate_config_reloads_total{result=\"ok\"}", 1,
                          T_MS) == 1);
  assert_int_equal(call(e, "x-api-key: " SEARCH_KEY "\r\n", &r), 0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  assert_int_equal(call(e, "Authorization: Bearer " BILLING_KEY "\r\n", &r),
                   0);
  assert_error(&r, 401, "invalid_api_key");
  mg_h_resp_free(&r);
  free(keys);
  free(path);
  free(hb);
  free(hs);
}

/* `modelgate check` refuses keys that are not SHA-256 digests (someone
 * pasted the key itself) and an unreadable keys file, naming the path. */
static void test_check_refuses_bad_keys(void **state) {
  struct tenv *e = *state;
  const char *argv[] = {MG_BIN, "check", "-c", e->config, NULL};
  char *out = NULL, *cfg;
  cfg = q(e, "{'clients':{'keys':{'app':'sk-live-not-a-hash'}},'targets':{"
             "'a':{'base_url':'@MOCK','model':'m'}},"
             "'aliases':{'x':{'target':'a'}}}");
  assert_int_equal(mg_h_write_file(e->config, cfg), 0);
  free(cfg);
  assert_int_equal(mg_h_run(argv, &out, T_MS), 2);
  assert_non_null(strstr(out, "$.clients.keys.app"));
  assert_non_null(strstr(out, "SHA-256"));
  /* The refusal never echoes what was pasted. */
  assert_null(strstr(out, "sk-live-not-a-hash"));
  free(out);
  cfg = q(e, "{'clients':{'keys_file':'@DIR/missing.json'},'targets':{"
             "'a':{'base_url':'@MOCK','model':'m'}},"
             "'aliases':{'x':{'target':'a'}}}");
  assert_int_equal(mg_h_write_file(e->config, cfg), 0);
  free(cfg);
  out = NULL;
  assert_int_equal(mg_h_run(argv, &out, T_MS), 2);
  assert_non_null(strstr(out, "$.clients.keys_file"));
  free(out);
}

/* The line of decision id in the log, waiting for the writer (flush_ms
 * 20) up to T_MS; NULL when it never came. Owned by the caller. */
static char *record_of(struct tenv *e, const char *id) {
  char *path = fmt("%s/decisions.jsonl", e->dir);
  double end = mg_h_now_ms() + T_MS;
  char *line = NULL;
  while (line == NULL && mg_h_now_ms() < end) {
    size_t len;
    char *text = mg_h_read_file(path, &len), *at;
    if (text && (at = strstr(text, id)) != NULL) {
      char *b = at, *f;
      while (b > text && b[-1] != '\n')
        b--;
      f = strchr(at, '\n');
      line = fmt("%.*s", (int)(f ? f - b : (ptrdiff_t)strlen(b)), b);
    }
    free(text);
    if (line == NULL)
      mg_h_sleep_ms(20);
  }
  free(path);
  return line;
}

/* With clients on, the authenticated client is the last unit source
 * (DESIGN.md, "Identify the unit"): a request with no other unit is not
 * left to no_unit but randomized by its client, stably; a
 * safety_identifier still comes first. The record names the source. */
static void test_client_is_the_last_unit(void **state) {
  struct tenv *e = *state;
  char *hb = key_hash(BILLING_KEY);
  char *keys = fmt("{\"billing\":\"%s\"}", hb), v[64], first[64] = "";
  char id[33], *cfg, *path, *rec;
  struct mg_h_resp r;
  int i;

  cfg = q(e, "{'admin':{'listen':'127.0.0.1:0'},'server':{'listen':"
             "'127.0.0.1:0','shutdown_grace_ms':2000},"
             "'decision_log':{'path':'@DIR/decisions.jsonl','flush_ms':20},"
             "'clients':{'keys_file':'@DIR/clients.json'},"
             "'targets':{'a':{'base_url':'@MOCK','model':'m-a'},"
             "'b':{'base_url':'@MOCK','model':'m-b'}},"
             "'flags':{'g':{'off_variant':'a','variants':{"
             "'a':{'target':'a','weight':50},'b':{'target':'b','weight':50}}}},"
             "'aliases':{'gpt-test':{'flag':'g'}}}");
  path = fmt("%s/clients.json", e->dir);
  assert_int_equal(mg_h_write_file(path, keys), 0);
  assert_int_equal(gate_start(e, cfg), 0);

  for (i = 0; i < 6; i++) {
    assert_int_equal(call(e, "Authorization: Bearer " BILLING_KEY "\r\n", &r),
                     0);
    assert_int_equal(r.status, 200);
    assert_string_equal(mg_h_header(&r, "x-modelgate-reason", v, sizeof(v)),
                        "rollout");
    assert_non_null(mg_h_header(&r, "x-modelgate-variant", v, sizeof(v)));
    if (i == 0) {
      snprintf(first, sizeof(first), "%s", v);
      assert_true(decision_id(&r, id));
    }
    assert_string_equal(v, first); /* the client's arm, every time */
    mg_h_resp_free(&r);
  }
  rec = record_of(e, id);
  assert_non_null(rec);
  assert_non_null(strstr(rec, "\"unit_source\":\"client\""));
  free(rec);

  {
    char *b = chat_body("gpt-test", "hello",
                        ",\"safety_identifier\":\"sid-0042\"");
    assert_int_equal(mg_h_request(e->gate.port, "POST",
                                  "/v1/chat/completions",
                                  "Authorization: Bearer " BILLING_KEY "\r\n",
                                  b, &r, T_MS),
                     0);
    free(b);
    assert_int_equal(r.status, 200);
    assert_string_equal(mg_h_header(&r, "x-modelgate-reason", v, sizeof(v)),
                        "rollout");
    assert_true(decision_id(&r, id));
    mg_h_resp_free(&r);
    rec = record_of(e, id);
    assert_non_null(rec);
    assert_non_null(strstr(rec, "\"unit_source\":\"safety_identifier\""));
    free(rec);
  }
  free(path);
  free(cfg);
  free(keys);
  free(hb);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, tenv_setup, tenv_teardown)
  const struct CMUnitTest tests[] = {
      T(test_keys),
      T(test_client_is_the_last_unit),
      T(test_keys_file_reload),
      T(test_check_refuses_bad_keys),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
