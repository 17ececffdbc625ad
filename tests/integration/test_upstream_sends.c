/* test_upstream_sends.c - exactly one upstream send per attempt (issue
 * 10.1), and what is not an HTTP answer is never relayed.
 *
 * A request that may have reached the model is never sent again behind the
 * retry policy's back: with retries off, an upstream that reads a request
 * on a reused connection and then closes it (FIN) or resets it (RST) gets
 * that request once, and the client gets the failure. Only a pooled
 * connection found closed before the request went out is replaced, and
 * then the request is sent once, on the new connection.
 *
 * The mock's queued behaviours tell the sends apart: each upstream request
 * takes the next behaviour in the queue, so a hidden re-send would take
 * the `ok` meant for the next client request (the client would see 200
 * where the upstream failed) and the mock would count one request more. */
#define _DEFAULT_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"

#define ROUNDS 10

static void start(struct tenv *e, const char *extra_root) {
  char *root = fmt(",\"decision_log\":{\"path\":\"%s/d.jsonl\"}%s", e->dir,
                   extra_root);
  gate_std(e, "", "", "", root);
  free(root);
}

static double received(struct tenv *e) {
  return stat_num(e->mock.port, "/requests_received");
}

/* The decision records of the log, by line. */
static cJSON *records(struct tenv *e) {
  char *path = fmt("%s/d.jsonl", e->dir), *s, *p, *nl;
  cJSON *arr = cJSON_CreateArray();
  size_t len;
  s = mg_h_read_file(path, &len);
  assert_non_null(s);
  for (p = s; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
    cJSON *l = cJSON_ParseWithLength(p, (size_t)(nl - p));
    assert_non_null(l);
    if (cJSON_GetObjectItemCaseSensitive(l, "event"))
      cJSON_Delete(l);
    else
      cJSON_AddItemToArray(arr, l);
  }
  free(s);
  free(path);
  return arr;
}

static const cJSON *record_of(const cJSON *recs, const char *id) {
  const cJSON *r;
  cJSON_ArrayForEach(r, recs) {
    if (strcmp(str_at(r, "id"), id) == 0)
      return r;
  }
  fail_msg("no decision record with id %s", id);
  return NULL;
}

/* On one keep-alive client connection: an answer that leaves the upstream
 * connection pooled, then a request the upstream reads and kills with
 * `mode` ("close": FIN, "reset": RST). Every round, the upstream counts
 * exactly two requests and the client gets 200 then a 502. */
static void no_resend(struct tenv *e, const char *mode) {
  int fd, i;
  char ids[ROUNDS][33];
  cJSON *recs;

  start(e, "");
  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  for (i = 0; i < ROUNDS; i++) {
    struct mg_h_resp r;
    double before = received(e);
    char *q = fmt("[{'mode':'ok','times':1},{'mode':'%s','times':1}]", mode);
    mock_behave(e, q);
    free(q);
    send_chat(fd, "gpt-test", "first", "");
    assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
    assert_int_equal(r.status, 200);
    mg_h_resp_free(&r);
    send_chat(fd, "gpt-test", "second", "");
    assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
    /* The upstream read it: that is the attempt's failure. A re-send
     * would have taken the next behaviour (ok) and answered 200. */
    assert_error(&r, 502, "upstream_reset");
    assert_true(decision_id(&r, ids[i]));
    mg_h_resp_free(&r);
    assert_true(received(e) - before == 2);
  }
  close(fd);
  assert_true(received(e) == 2 * ROUNDS);
  gate_down(&e->gate);
  /* Every failed request has one attempt on record, and it says so. */
  recs = records(e);
  for (i = 0; i < ROUNDS; i++) {
    const cJSON *r = record_of(recs, ids[i]);
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(r, "attempts");
    assert_int_equal(cJSON_GetArraySize(at), 1);
    assert_string_equal(str_at(r, "attempts.0.outcome"), "reset");
    assert_string_equal(str_at(r, "attempts.0.target"), "main");
  }
  cJSON_Delete(recs);
}

static void test_clean_close_after_read_is_not_resent(void **state) {
  no_resend(*state, "close");
}

static void test_reset_after_read_is_not_resent(void **state) {
  no_resend(*state, "reset");
}

/* The upstream closed the pooled connection while it was idle (its own
 * keep-alive timeout): nothing of the next request was written to it, so
 * sending it on a fresh connection is no re-send. The client gets its
 * answer, the upstream counts one request per client request, and the
 * record shows one attempt. */
static void test_close_before_read_is_transparent(void **state) {
  struct tenv *e = *state;
  int fd, i;
  char ids[ROUNDS][33];
  cJSON *recs;

  start(e, "");
  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  for (i = 0; i < ROUNDS; i++) {
    struct mg_h_resp r;
    double before = received(e);
    mock_behave(e, "{'mode':'ok','close_idle_ms':30,'times':1}");
    send_chat(fd, "gpt-test", "before the close", "");
    assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
    assert_int_equal(r.status, 200);
    mg_h_resp_free(&r);
    /* The mock closes its side 30 ms after that answer. */
    stat_wait(e->mock.port, "/idle_closes", i + 1, 1e9, T_MS);
    mg_h_sleep_ms(20);
    send_chat(fd, "gpt-test", "after the close", "");
    assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "after the close"));
    assert_true(decision_id(&r, ids[i]));
    mg_h_resp_free(&r);
    assert_true(received(e) - before == 2);
  }
  close(fd);
  gate_down(&e->gate);
  recs = records(e);
  for (i = 0; i < ROUNDS; i++) {
    const cJSON *r = record_of(recs, ids[i]);
    assert_int_equal(
        cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r, "attempts")),
        1);
    assert_string_equal(str_at(r, "attempts.0.outcome"), "ok");
  }
  cJSON_Delete(recs);
}

/* Statuses outside 100-599, and bodies on answers that have none, are not
 * HTTP answers: 502 upstream_invalid_response, never relayed; and with a
 * fallback configured, trigger `invalid` sends the request on. */
static void test_invalid_statuses(void **state) {
  struct tenv *e = *state;
  static const char *const raws[] = {
      "HTTP/1.1 600 Weird\\r\\nContent-Type: application/json\\r\\n"
      "Content-Length: 2\\r\\n\\r\\n{}",
      "HTTP/1.1 099 Early\\r\\nContent-Length: 2\\r\\n\\r\\n{}",
      "HTTP/1.1 204 No Content\\r\\nContent-Length: 5\\r\\n\\r\\nhello",
      "HTTP/1.1 205 Reset Content\\r\\nContent-Length: 5\\r\\n\\r\\nhello",
      "HTTP/1.1 304 Not Modified\\r\\nContent-Length: 5\\r\\n\\r\\nhello",
      "HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: x\\r\\n"
      "Connection: upgrade\\r\\n\\r\\n",
      "HTTP/1.1 204 No Content\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n"
      "5\\r\\nhello\\r\\n0\\r\\n\\r\\n",
  };
  size_t i;
  char *behave, *cfg;
  /* No breaker: seven broken answers in a row would open it. */
  cfg = q(e, "{'admin':{'listen':'127.0.0.1:0'},'server':{'listen':"
             "'127.0.0.1:0','shutdown_grace_ms':2000},'targets':{"
             "'main':{'base_url':'@MOCK','model':'up-model',"
             "'breaker':{'enabled':false}}},"
             "'aliases':{'gpt-test':{'target':'main'}}}");
  assert_int_equal(gate_start(e, cfg), 0);
  free(cfg);
  for (i = 0; i < sizeof(raws) / sizeof(raws[0]); i++) {
    struct mg_h_resp r;
    behave = fmt("{'mode':'raw','raw':'%s'}", raws[i]);
    mock_behave(e, behave);
    free(behave);
    assert_int_equal(chat(e->gate.port, "gpt-test", "odd", "", &r), 0);
    if (r.status != 502)
      fail_msg("raw answer %zu: want 502, got %d: %s", i, r.status, r.body);
    if (strstr(r.body, "upstream_invalid_response") == NULL)
      fail_msg("raw answer %zu: %s", i, r.body);
    assert_error(&r, 502, "upstream_invalid_response");
    mg_h_resp_free(&r);
  }
  gate_down(&e->gate);
  mg_h_mock_reset(e->mock.port);

  /* With a fallback, `invalid` is a trigger like any other. */
  {
    struct mg_h_resp r;
    char v[64];
    cfg = q(e, "{'admin':{'listen':'127.0.0.1:0'},'server':{'listen':"
                     "'127.0.0.1:0','shutdown_grace_ms':2000},'targets':{"
                     "'main':{'base_url':'@MOCK','model':'up-model',"
                     "'fallbacks':['backup']},"
                     "'backup':{'base_url':'@MOCK','model':'backup-model'}},"
                     "'aliases':{'gpt-test':{'target':'main'}}}");
    assert_int_equal(gate_start(e, cfg), 0);
    free(cfg);
    mock_behave(e, "{'model':'up-model','mode':'raw','raw':'HTTP/1.1 600 "
                   "Weird\\r\\nContent-Length: 2\\r\\n\\r\\n{}'}");
    assert_int_equal(chat(e->gate.port, "gpt-test", "odd", "", &r), 0);
    if (r.status != 200)
      fail_msg("want the backup's 200, got %d: %s\n%s", r.status, r.head,
               r.body);
    assert_string_equal(mg_h_header(&r, "x-modelgate-fallback", v, sizeof(v)),
                        "invalid");
    assert_string_equal(
        mg_h_header(&r, "x-modelgate-served-by", v, sizeof(v)), "backup");
    mg_h_resp_free(&r);
  }
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, tenv_setup, tenv_teardown)
  const struct CMUnitTest tests[] = {
      T(test_clean_close_after_read_is_not_resent),
      T(test_reset_after_read_is_not_resent),
      T(test_close_before_read_is_transparent),
      T(test_invalid_statuses),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
