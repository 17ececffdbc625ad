/* test_proxy_limits.c - bad input, from the client and from the upstream.
 *
 * Each case is sent as exact bytes over a real socket; the answer must be
 * the documented status with an OpenAI-shaped error and code, the
 * connection closed where the framing can no longer be trusted, and the
 * process unharmed: a normal request on a new connection still succeeds,
 * and modelgate exits 0 at SIGTERM (no leak under ASan). */
#define _DEFAULT_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"

/* Send raw bytes on a new connection (errors ignored: the server may
 * answer and close before taking everything), read one answer. */
static int raw_request(int port, const char *bytes, size_t len,
                       struct mg_h_resp *r, int timeout_ms) {
  int fd = mg_h_connect(port), rc;
  assert_true(fd >= 0);
  (void)mg_h_send(fd, bytes, len);
  rc = mg_h_read_response(fd, r, timeout_ms);
  close(fd);
  return rc;
}

static int raw_requests(int port, const char *s, struct mg_h_resp *r) {
  return raw_request(port, s, strlen(s), r, T_MS);
}

/* Status and code, then a closed connection. */
static void expect_close(struct tenv *e, const char *req, int status,
                         const char *code) {
  struct mg_h_resp r;
  raw_requests(e->gate.port, req, &r);
  assert_error(&r, status, code);
  if (!r.closed)
    fail_msg("%d %s: connection left open after an untrustworthy request",
             status, code);
  mg_h_resp_free(&r);
}

/* ---- request head -------------------------------------------------------- */

static void test_headers_too_large(void **state) {
  struct tenv *e = *state;
  char *big = malloc(20001), *req;
  assert_non_null(big);
  memset(big, 'a', 20000);
  big[20000] = '\0';
  gate_std(e, "", "", "", "");
  req = fmt("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", big);
  expect_close(e, req, 431, "headers_too_large");
  free(req);
  /* Many modest headers that add up past header_bytes (16384). */
  {
    char *many = strdup(""), *next;
    int i;
    for (i = 0; i < 40; i++) {
      next = fmt("%sX-H%d: %.*s\r\n", many, i, 500, big);
      free(many);
      many = next;
    }
    req = fmt("GET /healthz HTTP/1.1\r\nHost: x\r\n%s\r\n", many);
    expect_close(e, req, 431, "headers_too_large");
    free(req);
    free(many);
  }
  free(big);
  assert_gate_ok(e);
}

static void test_too_many_headers(void **state) {
  struct tenv *e = *state;
  char *hdrs = strdup(""), *next, *req;
  int i;
  gate_std(e, "", "", "", "");
  for (i = 0; i < 70; i++) {
    next = fmt("%sX-N%d: v\r\n", hdrs, i);
    free(hdrs);
    hdrs = next;
  }
  req = fmt("GET /healthz HTTP/1.1\r\nHost: x\r\n%s\r\n", hdrs);
  expect_close(e, req, 431, "too_many_headers");
  free(req);
  free(hdrs);
  /* 63 more than Host is exactly the limit (64): fine. */
  hdrs = strdup("");
  for (i = 0; i < 63; i++) {
    next = fmt("%sX-N%d: v\r\n", hdrs, i);
    free(hdrs);
    hdrs = next;
  }
  {
    struct mg_h_resp r;
    req = fmt("GET /healthz HTTP/1.1\r\nHost: x\r\n%s\r\n", hdrs);
    assert_int_equal(raw_requests(e->gate.port, req, &r), 0);
    assert_int_equal(r.status, 200);
    mg_h_resp_free(&r);
    free(req);
  }
  free(hdrs);
  assert_gate_ok(e);
}

static void test_url_too_long(void **state) {
  struct tenv *e = *state;
  char *path = malloc(5001), *req;
  assert_non_null(path);
  memset(path, 'a', 5000);
  path[5000] = '\0';
  gate_std(e, "", "", "", "");
  req = fmt("POST /v1/%s HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
            path);
  expect_close(e, req, 414, "url_too_long");
  free(req);
  free(path);
  assert_gate_ok(e);
}

/* ---- request body ----------------------------------------------------------
 */

/* A client that sends a too-large body without waiting (as SDKs do) must
 * still read its 413: modelgate half-closes and discards the rest of the
 * body instead of closing on unread bytes, which would reset the
 * connection and destroy the answer before the client reads it. */
static void test_body_too_large_while_uploading(void **state) {
  struct tenv *e = *state;
  const size_t len = 8u << 20;
  char *req, *body;
  int i;

  gate_std(e, "", "", "", ""); /* the default limit, 4 MiB */
  body = malloc(len);
  assert_non_null(body);
  memset(body, 'x', len);
  req = fmt("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
            len);
  for (i = 0; i < 5; i++) {
    struct mg_h_resp r;
    int fd = mg_h_connect(e->gate.port);
    assert_true(fd >= 0);
    if (mg_h_sends(fd, req) != 0 || mg_h_send(fd, body, len) != 0)
      fail_msg("upload %d: the connection was reset while sending", i);
    if (mg_h_read_response(fd, &r, T_MS) != 0)
      fail_msg("upload %d: no answer (status %d)", i, r.status);
    assert_error(&r, 413, "body_too_large");
    assert_true(r.closed);
    mg_h_resp_free(&r);
    close(fd);
  }
  free(req);
  free(body);
  assert_gate_ok(e);
}

static void test_body_too_large(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  int fd, i;
  char *chunk, *body, *content;

  gate_std(e, "", "\"body_bytes\":65536", "", "");
  /* Declared too large: refused on the headers, before any body byte. */
  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  assert_int_equal(mg_h_sends(fd,
                              "POST /v1/chat/completions HTTP/1.1\r\n"
                              "Host: x\r\nContent-Type: application/json\r\n"
                              "Content-Length: 1000000\r\n\r\n"),
                   0);
  assert_int_equal(mg_h_read_response(fd, &r, 2000), 0);
  assert_error(&r, 413, "body_too_large");
  assert_true(r.closed);
  mg_h_resp_free(&r);
  close(fd);

  /* Chunked past the limit: refused once it is crossed. */
  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  assert_int_equal(mg_h_sends(fd, "POST /v1/chat/completions HTTP/1.1\r\n"
                                  "Host: x\r\nTransfer-Encoding: chunked\r\n"
                                  "\r\n"),
                   0);
  content = malloc(16385);
  assert_non_null(content);
  memset(content, 'b', 16384);
  content[16384] = '\0';
  chunk = fmt("4000\r\n%s\r\n", content);
  for (i = 0; i < 6; i++)
    if (mg_h_sends(fd, chunk) != 0)
      break;
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  assert_error(&r, 413, "body_too_large");
  assert_true(r.closed);
  mg_h_resp_free(&r);
  close(fd);
  free(chunk);
  free(content);

  /* Exactly at the limit is fine. */
  {
    const char *pre =
                   "{\"model\":\"gpt-test\",\"messages\":[{\"role\":\"user\","
                   "\"content\":\"",
               *post_ = "\"}]}";
    size_t fill = 65536 - strlen(pre) - strlen(post_);
    content = malloc(fill + 1);
    assert_non_null(content);
    memset(content, 'c', fill);
    content[fill] = '\0';
    body = fmt("%s%s%s", pre, content, post_);
    assert_int_equal(strlen(body), 65536);
    assert_int_equal(post(e->gate.port, "/v1/chat/completions", body, &r), 0);
    assert_int_equal(r.status, 200);
    mg_h_resp_free(&r);
    /* One byte more (trailing whitespace, still valid JSON) is not. */
    {
      char *bigger = fmt("%s ", body);
      assert_int_equal(post(e->gate.port, "/v1/chat/completions", bigger, &r),
                       0);
      assert_error(&r, 413, "body_too_large");
      mg_h_resp_free(&r);
      free(bigger);
    }
    free(body);
    free(content);
  }
  assert_gate_ok(e);
}

static void test_invalid_json_and_model(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  int fd;
  size_t i;
  static const struct {
    const char *body;
    const char *code;
  } cases[] = {
      {"{\"model\":", "invalid_json"},
      {"", "invalid_json"},
      {"{\"model\":\"gpt-test\",\"messages\":[]} trailing", "invalid_json"},
      {"[1,2]", "invalid_json"},
      {"{\"messages\":[]}", "missing_model"},
      {"{\"model\":\"\",\"messages\":[]}", "missing_model"},
      {"{\"model\":null,\"messages\":[]}", "missing_model"},
      {"{\"model\":\"gpt-test\",\"model\":\"other\",\"messages\":[]}",
       "duplicate_key"},
  };
  char v[64];

  gate_std(e, "", "", "", "");
  /* All on one connection: these are the client's mistakes, the framing is
   * fine, so the connection is kept. */
  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    cJSON *a;
    send_post(fd, "/v1/chat/completions", NULL, cases[i].body);
    assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
    assert_error(&r, 400, cases[i].code);
    assert_false(r.closed);
    a = json_body(&r);
    assert_string_equal(str_at(a, "error.type"), "invalid_request_error");
    if (strcmp(cases[i].code, "invalid_json") != 0)
      assert_string_equal(str_at(a, "error.param"), "model");
    cJSON_Delete(a);
    assert_null(mg_h_header(&r, "x-modelgate-served-by", v, sizeof(v)));
    mg_h_resp_free(&r);
  }
  send_chat(fd, "gpt-test", "good after bad", "");
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  close(fd);
  /* Only the good one went upstream. */
  assert_int_equal((int)stat_num(e->mock.port, "/requests"), 1);
  assert_gate_ok(e);
}

/* ---- framing ---------------------------------------------------------------
 */

static void test_bad_framing(void **state) {
  struct tenv *e = *state;
  gate_std(e, "", "", "", "");
  /* Content-Length with Transfer-Encoding: request smuggling material. */
  expect_close(e,
               "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
               "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
               "0\r\n\r\n",
               400, "bad_framing");
  expect_close(e,
               "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
               "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
               "0\r\n\r\n",
               400, "bad_framing");
  /* Duplicate Content-Length, equal or not. */
  expect_close(e,
               "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
               "Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
               400, "bad_framing");
  expect_close(e,
               "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
               "Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}x",
               400, "bad_framing");
  /* Bad chunk sizes. */
  expect_close(e,
               "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
               "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
               400, "bad_chunking");
  expect_close(e,
               "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
               "Transfer-Encoding: chunked\r\n\r\n-2\r\n{}\r\n0\r\n\r\n",
               400, "bad_chunking");
  /* The pipelined request after a bad one is never answered. */
  {
    struct mg_h_resp r;
    int fd = mg_h_connect(e->gate.port);
    assert_true(fd >= 0);
    assert_int_equal(
        mg_h_sends(fd, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                       "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n"
                       "\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
        0);
    assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
    assert_int_equal(r.status, 400);
    assert_true(r.closed);
    mg_h_resp_free(&r);
    close(fd);
  }
  assert_gate_ok(e);
}

/* ---- methods ---------------------------------------------------------------
 */

static void test_method_not_allowed(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  char v[64];
  int fd;
  static const struct {
    const char *req, *allow;
  } cases[] = {
      {"GET /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n", "POST"},
      {"PUT /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
       "POST"},
      {"DELETE /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n", "POST"},
      {"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
       "GET, HEAD"},
  };
  size_t i;

  gate_std(e, "", "", "", "");
  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    assert_int_equal(mg_h_sends(fd, cases[i].req), 0);
    if (mg_h_read_response(fd, &r, T_MS) != 0)
      fail_msg("%.30s...: no well-formed answer in %d ms; got head:\n%s%s",
               cases[i].req, T_MS, r.head, r.body);
    assert_error(&r, 405, "method_not_allowed");
    assert_non_null(mg_h_header(&r, "allow", v, sizeof(v)));
    assert_string_equal(v, cases[i].allow);
    /* A known method on the wrong URL: the connection is fine. */
    assert_false(r.closed);
    mg_h_resp_free(&r);
  }
  close(fd);

  /* Unknown URL. */
  assert_int_equal(post(e->gate.port, "/v1/nothing/here", "{}", &r), 0);
  assert_error(&r, 404, "unknown_url");
  mg_h_resp_free(&r);
  assert_gate_ok(e);
}

/* A method token llhttp does not know: an error answer and a close. A 405
 * must carry Allow (RFC 9110, 15.5.6); 501 is the usual answer for a method
 * the server does not recognise (RFC 9110, 9.1). */
static void test_invalid_method_token(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  char v[64];

  gate_std(e, "", "", "", "");
  raw_requests(e->gate.port,
               "BREW /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
               "Content-Length: 2\r\n\r\n{}",
               &r);
  if (r.status != 400 && r.status != 405 && r.status != 501)
    fail_msg("unknown method: got %d", r.status);
  assert_true(r.closed);
  {
    cJSON *a = json_body(&r);
    assert_true(strlen(str_at(a, "error.message")) > 0);
    cJSON_Delete(a);
  }
  if (r.status == 405 && mg_h_header(&r, "allow", v, sizeof(v)) == NULL)
    fail_msg("405 without an Allow header (RFC 9110, 15.5.6):\n%s", r.head);
  mg_h_resp_free(&r);
  assert_gate_ok(e);
}

/* ---- slow clients ----------------------------------------------------------
 */

static void test_slow_headers(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  double t0, dt;
  int fd, i;

  gate_std(e, ",\"header_timeout_ms\":1000,\"body_timeout_ms\":1000", "", "",
           "");
  /* Slowloris: a header line every 100 ms; the budget counts from the
   * first byte, not from the last. */
  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  t0 = mg_h_now_ms();
  assert_int_equal(mg_h_sends(fd, "POST /v1/chat/completions HTTP/1.1\r\n"), 0);
  for (i = 0; i < 40; i++) {
    char line[32];
    struct pollfd pfd = {fd, POLLIN, 0};
    if (poll(&pfd, 1, 100) > 0)
      break; /* the answer is there */
    snprintf(line, sizeof(line), "X-Slow-%d: v\r\n", i);
    if (mg_h_sends(fd, line) != 0)
      break;
  }
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  dt = mg_h_now_ms() - t0;
  assert_error(&r, 408, "request_timeout");
  assert_true(r.closed);
  if (dt < 900 || dt > 2500)
    fail_msg("408 after %.0f ms, header_timeout_ms is 1000", dt);
  mg_h_resp_free(&r);
  close(fd);

  /* A connection that never sends a byte is closed after the same time. */
  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  t0 = mg_h_now_ms();
  assert_true(mg_h_wait_closed(fd, 4000));
  dt = mg_h_now_ms() - t0;
  if (dt < 900 || dt > 2500)
    fail_msg("silent connection closed after %.0f ms", dt);
  close(fd);

  /* A stalled body: 408 once nothing came for body_timeout_ms. */
  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  assert_int_equal(mg_h_sends(fd, "POST /v1/chat/completions HTTP/1.1\r\n"
                                  "Host: x\r\nContent-Length: 100\r\n\r\n"
                                  "{\"model\":"),
                   0);
  t0 = mg_h_now_ms();
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  dt = mg_h_now_ms() - t0;
  assert_error(&r, 408, "request_timeout");
  assert_true(r.closed);
  if (dt < 900 || dt > 2500)
    fail_msg("body 408 after %.0f ms, body_timeout_ms is 1000", dt);
  mg_h_resp_free(&r);
  close(fd);
  assert_int_equal((int)stat_num(e->mock.port, "/requests"), 0);
  assert_gate_ok(e);
}

/* ---- bad upstream answers --------------------------------------------------
 */

static void test_bad_upstream_answers(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  char v[64];
  size_t i;
  static const struct {
    const char *mode;
    int status;
    const char *code;
  } cases[] = {
      {"{\"mode\":\"garbage\"}", 502, "upstream_invalid_response"},
      {"{\"mode\":\"truncate\"}", 502, "upstream_truncated"},
      {"{\"mode\":\"reset\"}", 502, "upstream_reset"},
      {"{\"mode\":\"status\",\"status\":503,\"body\":\"<html>busy</html>\"}",
       502, "upstream_error"},
  };

  gate_std(e, "", "", "", "");
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    set_mock(e->mock.port, cases[i].mode);
    assert_int_equal(chat(e->gate.port, "gpt-test", "hi", "", &r), 0);
    assert_error(&r, cases[i].status, cases[i].code);
    assert_true(decision_id(&r, NULL));
    assert_string_equal(mg_h_header(&r, "x-modelgate-served-by", v, sizeof(v)),
                        "main");
    {
      cJSON *a = json_body(&r);
      assert_string_equal(str_at(a, "error.type"), "server_error");
      /* The message names the target. */
      assert_non_null(strstr(str_at(a, "error.message"), "main"));
      cJSON_Delete(a);
    }
    mg_h_resp_free(&r);
  }
  assert_int_equal(mg_h_mock_reset(e->mock.port), 0);
  assert_gate_ok(e);
}

/* Upstream errors in JSON reach the client as they are. */
static void test_upstream_errors_passed_through(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  char v[64];
  static const char e500[] =
      "{\"error\":{\"message\":\"The server had an error while processing "
      "your request.\",\"type\":\"server_error\",\"param\":null,\"code\":"
      "null}}";
  static const char e429[] =
      "{\"error\":{\"message\":\"Rate limit reached for requests\","
      "\"type\":\"requests\",\"param\":null,\"code\":"
      "\"rate_limit_exceeded\"}}";
  char *mode;

  gate_std(e, "", "", "", "");
  mode = fmt("{\"mode\":\"status\",\"status\":500,\"body\":%s}", e500);
  set_mock(e->mock.port, mode);
  free(mode);
  assert_int_equal(chat(e->gate.port, "gpt-test", "hi", "", &r), 0);
  assert_int_equal(r.status, 500);
  assert_string_equal(r.body, e500);
  assert_string_equal(mg_h_header(&r, "content-type", v, sizeof(v)),
                      "application/json");
  assert_true(decision_id(&r, NULL));
  assert_false(r.closed);
  mg_h_resp_free(&r);

  mode = fmt("{\"mode\":\"status\",\"status\":429,\"body\":%s}", e429);
  set_mock(e->mock.port, mode);
  free(mode);
  assert_int_equal(chat(e->gate.port, "gpt-test", "hi", "", &r), 0);
  assert_int_equal(r.status, 429);
  assert_string_equal(r.body, e429);
  assert_string_equal(mg_h_header(&r, "x-modelgate-served-by", v, sizeof(v)),
                      "main");
  mg_h_resp_free(&r);

  /* A 400 about the client's request too, for a streaming request. */
  set_mock(e->mock.port,
           "{\"mode\":\"status\",\"status\":400,\"body\":{\"error\":{"
           "\"message\":\"bad messages\",\"type\":\"invalid_request_error\","
           "\"param\":\"messages\",\"code\":null}}}");
  assert_int_equal(chat(e->gate.port, "gpt-test", "hi", ",\"stream\":true", &r),
                   0);
  assert_int_equal(r.status, 400);
  assert_false(r.chunked);
  assert_string_equal(r.body,
                      "{\"error\":{\"message\":\"bad messages\",\"type\":"
                      "\"invalid_request_error\",\"param\":\"messages\","
                      "\"code\":null}}");
  mg_h_resp_free(&r);
  assert_int_equal(mg_h_mock_reset(e->mock.port), 0);
  assert_gate_ok(e);
}

/* DESIGN.md, "What the client sees": every answer carries
 * x-modelgate-decision. Walk every kind of answer and list those without. */
static void test_every_answer_has_decision_id(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  char missing[2048] = "", *big = malloc(20001), *req;
  size_t i;
  static const char *const reqs[] = {
      "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n",
      "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
      "\r\n{",
      "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
      "Transfer-Encoding: chunked\r\n\r\nzz\r\n",
      "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
      "Content-Length: 99999999\r\n\r\n",
      "BREW / HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET / HTTP/3.0\r\nHost: x\r\n\r\n",
      NULL, /* headers too large */
      NULL, /* URL too long */
  };

  static const char *const names[] = {
      "health",         "unknown URL",    "invalid JSON",
      "CL+TE",          "bad chunk size", "declared body too large",
      "unknown method", "HTTP/3.0",       "headers too large",
      "URL too long"};

  gate_std(e, "", "", "", "");
  assert_non_null(big);
  memset(big, 'a', 20000);
  big[20000] = '\0';
  for (i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
    if (reqs[i])
      req = strdup(reqs[i]);
    else if (i == 8)
      req = fmt("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", big);
    else
      req = fmt("GET /%.5000s HTTP/1.1\r\nHost: x\r\n\r\n", big);
    raw_requests(e->gate.port, req, &r);
    if (r.status < 200)
      fail_msg("case %zu: no answer", i);
    if (!decision_id(&r, NULL)) {
      char line[64];
      snprintf(line, sizeof(line), " %d (%s);", r.status, names[i]);
      strncat(missing, line, sizeof(missing) - strlen(missing) - 1);
    }
    mg_h_resp_free(&r);
    free(req);
  }
  free(big);
  if (missing[0])
    fail_msg("answers without x-modelgate-decision:%s", missing);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, tenv_setup, tenv_teardown)
  const struct CMUnitTest tests[] = {
      T(test_headers_too_large),
      T(test_too_many_headers),
      T(test_url_too_long),
      T(test_body_too_large),
      T(test_body_too_large_while_uploading),
      T(test_invalid_json_and_model),
      T(test_bad_framing),
      T(test_method_not_allowed),
      T(test_invalid_method_token),
      T(test_slow_headers),
      T(test_bad_upstream_answers),
      T(test_upstream_errors_passed_through),
      T(test_every_answer_has_decision_id),
  };
#undef T
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
