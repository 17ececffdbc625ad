/* test_proxy_strict.c - strict HTTP/1.1 on the client side (RFC 9112,
 * issue 10.2).
 *
 * Requests whose framing or header section a server must not trust are
 * refused with a 400 and a closed connection, as nginx does: chunk data
 * not followed by CRLF, Transfer-Encoding in an HTTP/1.0 request,
 * whitespace between a field name and its colon, a field name that is not
 * a token, an HTTP/1.1 request without Host or any request with two. Each
 * case is sent as exact bytes over a real socket, some split over several
 * writes, and the valid neighbours of each case are still answered. */
#define _DEFAULT_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"

/* Send the pieces (NULL-ended) on a new connection, pausing between them
 * so that each arrives in its own read, then read one answer. Send errors
 * are ignored: the server may answer and close before taking everything. */
static void send_pieces(int port, const char *const *pieces,
                        struct mg_h_resp *r) {
  int fd = mg_h_connect(port);
  size_t i;
  assert_true(fd >= 0);
  for (i = 0; pieces[i]; i++) {
    if (i > 0)
      mg_h_sleep_ms(30);
    (void)mg_h_send(fd, pieces[i], strlen(pieces[i]));
  }
  (void)mg_h_read_response(fd, r, T_MS);
  close(fd);
}

/* 400 with this code (any code when NULL), then a closed connection. */
static void expect_400(int port, const char *const *pieces, const char *code,
                       const char *what) {
  struct mg_h_resp r;
  send_pieces(port, pieces, &r);
  if (r.status != 400)
    fail_msg("%s: want 400, got %d: %s", what, r.status, r.body);
  if (code)
    assert_error(&r, 400, code);
  if (!r.closed)
    fail_msg("%s: connection left open after a 400", what);
  mg_h_resp_free(&r);
}

static void expect_400_1(int port, const char *req, const char *code,
                         const char *what) {
  const char *pieces[] = {req, NULL};
  expect_400(port, pieces, code, what);
}

/* A status other than 400, and the connection kept (keep_open) or not. */
static void expect_status(int port, const char *const *pieces, int status,
                          bool keep_open, const char *what) {
  struct mg_h_resp r;
  send_pieces(port, pieces, &r);
  if (r.status != status)
    fail_msg("%s: want %d, got %d: %s", what, status, r.status, r.body);
  assert_true(r.complete);
  if (keep_open && r.closed)
    fail_msg("%s: connection closed after a valid request", what);
  mg_h_resp_free(&r);
}

/* A chat request's JSON body for alias gpt-test (caller frees). */
static char *chat_json(const char *text) {
  return chat_body("gpt-test", text, "");
}

/* ---- chunked bodies --------------------------------------------------------
 */

/* RFC 9112, 7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF.
 * llhttp 8.1 skips any two bytes after the data, so "{}XX" passes it. */
static void test_chunk_data_without_crlf(void **state) {
  struct tenv *e = *state;
  char *body = chat_json("chunks"), *te, *head, *req;
  size_t n = strlen(body);
  int port;

  gate_std(e, "", "", "", "");
  port = e->gate.port;
  te = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
       "Content-Type: application/json\r\n"
       "Transfer-Encoding: chunked\r\n\r\n";
  /* The head and the size line of one chunk holding the whole body. */
  head = fmt("%s%zx\r\n", te, n);

  /* Two bytes that are not CRLF, in one read. */
  req = fmt("%s%sXX0\r\n\r\n", head, body);
  expect_400_1(port, req, "bad_chunking", "chunk data then XX");
  free(req);
  /* The next chunk's size where CRLF belongs. */
  req = fmt("%s%s0\r\n\r\n", head, body);
  expect_400_1(port, req, "bad_chunking", "chunk data then 0");
  free(req);
  /* A bare LF, and CR then something else. */
  req = fmt("%s%s\n0\r\n\r\n", head, body);
  expect_400_1(port, req, "bad_chunking", "chunk data then LF");
  free(req);
  req = fmt("%s%s\rX0\r\n\r\n", head, body);
  expect_400_1(port, req, "bad_chunking", "chunk data then CR X");
  free(req);
  /* The same across reads: the data ends one read, the bad bytes start
   * the next; and a good CR, then a bad byte in the read after. */
  {
    char *first = fmt("%s%s", head, body);
    const char *p1[] = {first, "XX0\r\n\r\n", NULL};
    const char *p2[] = {first, "\r", "X0\r\n\r\n", NULL};
    expect_400(port, p1, "bad_chunking", "split: chunk data | XX");
    expect_400(port, p2, "bad_chunking", "split: chunk data | CR | X");
    free(first);
  }
  /* A request refused at its headers (wrong method) still has its chunks
   * checked while its body is discarded. */
  expect_400_1(port,
               "POST /healthz HTTP/1.1\r\nHost: x\r\n"
               "Transfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
               "bad_chunking", "discarded body: chunk data then XX");

  /* Proper chunking is still answered, in one read and with every CRLF
   * split across reads, over several chunks. */
  {
    const char *half = body + n / 2;
    char *one = fmt("%s%zx\r\n%.*s\r\n%zx\r\n%s\r\n0\r\n\r\n", te, n / 2,
                    (int)(n / 2), body, strlen(half), half);
    char *a = fmt("%s%zx\r\n%.*s", te, n / 2, (int)(n / 2), body);
    char *b = fmt("\n%zx\r\n%s", strlen(half), half);
    const char *ok1[] = {one, NULL};
    const char *ok2[] = {a, "\r", b, "\r", "\n0\r\n\r\n", NULL};
    expect_status(port, ok1, 200, true, "proper chunks");
    expect_status(port, ok2, 200, true, "proper chunks, CRLFs split");
    free(one);
    free(a);
    free(b);
  }
  free(head);
  free(body);
  assert_gate_ok(e);
}

/* RFC 9112, 6.1: Transfer-Encoding in an HTTP/1.0 message means faulty
 * framing; HTTP/1.0 has no chunked coding (nginx: 400). */
static void test_transfer_encoding_in_http10(void **state) {
  struct tenv *e = *state;
  char *body = chat_json("one-oh"), *req;
  size_t n = strlen(body);
  int port;

  gate_std(e, "", "", "", "");
  port = e->gate.port;
  req = fmt("POST /v1/chat/completions HTTP/1.0\r\n"
            "Content-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n%zx\r\n%s\r\n0\r\n\r\n",
            n, body);
  expect_400_1(port, req, "bad_framing", "HTTP/1.0 with chunked");
  free(req);
  req = fmt("POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\n"
            "Transfer-Encoding: gzip, chunked\r\n\r\n%zx\r\n%s\r\n0\r\n\r\n",
            n, body);
  expect_400_1(port, req, "bad_framing", "HTTP/1.0 with gzip, chunked");
  free(req);
  /* A body-less HTTP/1.0 request with the header is refused too. */
  expect_400_1(port,
               "GET /healthz HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
               "0\r\n\r\n",
               "bad_framing", "HTTP/1.0 GET with chunked");

  /* HTTP/1.0 with Content-Length is fine (and closes after its answer). */
  req = fmt("POST /v1/chat/completions HTTP/1.0\r\n"
            "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
            n, body);
  {
    const char *ok[] = {req, NULL};
    expect_status(port, ok, 200, false, "HTTP/1.0 with Content-Length");
  }
  free(req);
  /* And HTTP/1.1 with chunked is fine. */
  req = fmt("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            "Transfer-Encoding: chunked\r\n\r\n%zx\r\n%s\r\n0\r\n\r\n",
            n, body);
  {
    const char *ok[] = {req, NULL};
    expect_status(port, ok, 200, true, "HTTP/1.1 with chunked");
  }
  free(req);
  free(body);
  assert_gate_ok(e);
}

/* ---- header field names ----------------------------------------------------
 */

/* RFC 9112, 5.1: "A server MUST reject, with a response status code of 400
 * (Bad Request), any received request message that contains whitespace
 * between a header field name and colon." Only Content-Length and
 * Transfer-Encoding were refused before (by llhttp). */
static void test_space_before_colon(void **state) {
  struct tenv *e = *state;
  static const struct {
    const char *req, *what;
  } cases[] = {
      {"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Foo : bar\r\n\r\n",
       "X-Foo SP :"},
      {"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Foo   : bar\r\n\r\n",
       "X-Foo SP SP SP :"},
      {"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n", "Host SP :"},
      {"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization : Bearer k\r\n\r\n",
       "Authorization SP :"},
      {"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
       "Content-Type : application/json\r\nContent-Length: 2\r\n\r\n{}",
       "Content-Type SP :"},
      {"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Foo\t: bar\r\n\r\n",
       "X-Foo HTAB :"},
      {"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length : 0\r\n\r\n",
       "Content-Length SP :"},
  };
  size_t i;

  gate_std(e, "", "", "", "");
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    expect_400_1(e->gate.port, cases[i].req, "bad_header", cases[i].what);
  /* Split: the space ends one read, the colon starts the next. */
  {
    const char *p[] = {"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Foo ",
                       ": bar\r\n\r\n", NULL};
    expect_400(e->gate.port, p, "bad_header", "split: X-Foo SP | :");
  }
  /* Whitespace after the colon is optional whitespace, and fine. */
  {
    const char *ok[] = {"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                        "X-Foo:bar\r\nX-Bar: \t baz \t\r\n\r\n",
                        NULL};
    expect_status(e->gate.port, ok, 200, true, "OWS after the colon");
  }
  assert_gate_ok(e);
}

/* RFC 9110, 5.1: field-name = token; token = 1*tchar. */
static void test_field_name_not_token(void **state) {
  struct tenv *e = *state;
  static const struct {
    const char *req, *what;
  } cases[] = {
      {"GET /healthz HTTP/1.1\r\nHost: x\r\n: bar\r\n\r\n", "empty name"},
      {"GET /healthz HTTP/1.1\r\nHost: x\r\n:\r\n\r\n", "empty name, empty"},
      {"GET /healthz HTTP/1.1\r\nHost: x\r\nX(Foo): bar\r\n\r\n", "X(Foo)"},
      {"GET /healthz HTTP/1.1\r\nHost: x\r\nX\"F: bar\r\n\r\n", "X\"F"},
      {"GET /healthz HTTP/1.1\r\nHost: x\r\nX/F: bar\r\n\r\n", "X/F"},
      {"GET /healthz HTTP/1.1\r\nHost: x\r\nX[F]: bar\r\n\r\n", "X[F]"},
      {"GET /healthz HTTP/1.1\r\nHost: x\r\nX\xc3\xa9: bar\r\n\r\n",
       "UTF-8 in the name"},
      {"GET /healthz HTTP/1.1\r\nHost: x\r\nX@F: bar\r\n\r\n", "X@F"},
  };
  size_t i;

  gate_std(e, "", "", "", "");
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    expect_400_1(e->gate.port, cases[i].req, "bad_header", cases[i].what);
  /* Every tchar is accepted in a name. */
  {
    const char *ok[] = {"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                        "!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n",
                        NULL};
    expect_status(e->gate.port, ok, 200, true, "every tchar");
  }
  assert_gate_ok(e);
}

/* ---- Host ------------------------------------------------------------------
 */

/* RFC 9112, 3.2: "A server MUST respond with a 400 (Bad Request) status
 * code to any HTTP/1.1 request message that lacks a Host header field and
 * to any request message that contains more than one Host header field
 * line." */
/* Only HTTP/1.0 and 1.1: other versions llhttp accepts get a 505 and the
 * close (the answer is an HTTP/1.1 one, RFC 9110, 15.6.6). */
static void test_http_version(void **state) {
  struct tenv *e = *state;
  static const char *const bad[] = {
      "GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n",
      "GET /healthz HTTP/0.9\r\nHost: x\r\n\r\n",
      "GET /healthz HTTP/1.2\r\nHost: x\r\n\r\n",
      "GET /healthz HTTP/3.0\r\nHost: x\r\n\r\n",
  };
  size_t i;
  gate_std(e, "", "", "", "");
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    const char *pieces[] = {bad[i], NULL};
    struct mg_h_resp r;
    send_pieces(e->gate.port, pieces, &r);
    if (r.status != 505)
      fail_msg("%.25s: want 505, got %d: %s", bad[i], r.status, r.body);
    assert_error(&r, 505, "http_version_not_supported");
    if (!r.closed)
      fail_msg("%.25s: connection left open after a 505", bad[i]);
    mg_h_resp_free(&r);
  }
  {
    const char *ok[] = {"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", NULL};
    expect_status(e->gate.port, ok, 200, true, "HTTP/1.1");
  }
}

static void test_host(void **state) {
  struct tenv *e = *state;
  static const struct {
    const char *req, *what;
  } bad[] = {
      {"GET /healthz HTTP/1.1\r\n\r\n", "HTTP/1.1 without Host"},
      {"GET /healthz HTTP/1.1\r\nX-Host: x\r\n\r\n", "only X-Host"},
      {"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
       "HTTP/1.1 POST without Host"},
      {"GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", "two Hosts"},
      {"GET /healthz HTTP/1.1\r\nHost: x\r\nhost: x\r\n\r\n",
       "two Hosts, equal, other case"},
      {"GET /healthz HTTP/1.0\r\nHost: x\r\nHost: y\r\n\r\n",
       "HTTP/1.0 with two Hosts"},
  };
  size_t i;
  int port;

  gate_std(e, "", "", "", "");
  port = e->gate.port;
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    expect_400_1(port, bad[i].req, "bad_host", bad[i].what);
  /* The admin listener is just as strict. */
  expect_400_1(e->gate.admin_port, "GET /admin/state HTTP/1.1\r\n\r\n",
               "bad_host", "admin: HTTP/1.1 without Host");

  /* Host once (also empty: RFC 9112, 3.2), and HTTP/1.0 without Host. */
  {
    const char *once[] = {"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", NULL};
    const char *empty[] = {"GET /healthz HTTP/1.1\r\nHost:\r\n\r\n", NULL};
    const char *ten[] = {"GET /healthz HTTP/1.0\r\n\r\n", NULL};
    expect_status(port, once, 200, true, "Host once");
    expect_status(port, empty, 200, true, "Host empty");
    expect_status(port, ten, 200, false, "HTTP/1.0 without Host");
  }
  /* Pipelined: a good request is answered, the one without Host gets a
   * 400 and the close, and the request after it is never answered. */
  {
    struct mg_h_resp r;
    int fd = mg_h_connect(port);
    assert_true(fd >= 0);
    assert_int_equal(mg_h_sends(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                                    "GET /healthz HTTP/1.1\r\n\r\n"
                                    "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
                     0);
    assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
    assert_int_equal(r.status, 200);
    assert_false(r.closed);
    mg_h_resp_free(&r);
    assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
    assert_error(&r, 400, "bad_host");
    assert_true(r.closed);
    mg_h_resp_free(&r);
    close(fd);
  }
  assert_gate_ok(e);
}

/* ---- HEAD and the answer after it ------------------------------------------
 */

/* A 400 for a malformed request after a HEAD on the same connection
 * carries its body (it was sent with the length of the body but without
 * it, as if it answered the HEAD); a HEAD refused in its headers gets the
 * head of its 400 only (RFC 9110, 9.3.2). */
static void test_refusal_after_head(void **state) {
  struct tenv *e = *state;
  struct raw w = {0};
  const char *second;
  int fd;

  gate_std(e, "", "", "", "");
  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  assert_int_equal(mg_h_sends(fd, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                                  "GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                  "X-Foo : bar\r\n\r\n"),
                   0);
  if (!raw_read_until(fd, &w, "\"bad_header\"", 1, T_MS))
    fail_msg("the 400 after a HEAD came without its body:\n%s",
             w.data ? w.data : "");
  assert_int_equal(count_in(w.data, w.len, "HTTP/1.1 "), 2);
  second = strstr(w.data, "HTTP/1.1 400 ");
  assert_non_null(second);
  assert_null(memstr(w.data, (size_t)(second - w.data), "{"));
  raw_free(&w);
  close(fd);

  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  assert_int_equal(
      mg_h_sends(fd, "HEAD /healthz HTTP/1.1\r\nHost: x\r\nX-Foo : bar\r\n\r\n"),
      0);
  while (!w.closed && raw_read_once(fd, &w, T_MS) > 0)
    ;
  assert_true(w.closed);
  assert_int_equal(strncmp(w.data, "HTTP/1.1 400 ", 13), 0);
  second = strstr(w.data, "\r\n\r\n");
  assert_non_null(second);
  assert_int_equal(second[4], '\0');
  raw_free(&w);
  close(fd);
  assert_gate_ok(e);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, tenv_setup, tenv_teardown)
  const struct CMUnitTest tests[] = {
      T(test_chunk_data_without_crlf),
      T(test_transfer_encoding_in_http10),
      T(test_space_before_colon),
      T(test_field_name_not_token),
      T(test_host),
      T(test_http_version),
      T(test_refusal_after_head),
  };
#undef T
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
