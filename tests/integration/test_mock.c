/* test_mock.c - mg-mock as a client sees it, driven through the harness.
 *
 * Every test starts its own mock and stops it with SIGTERM, expecting exit
 * status 0: under the sanitizer build that also proves each scenario leaves
 * no leak and a clean loop behind. */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "harness.h"

#define T_MS 5000

/* ---- helpers ------------------------------------------------------------ */

static int setup(void **state) {
  struct mg_h_proc *p = calloc(1, sizeof(*p));
  if (p == NULL || mg_h_start_mock(p) != 0) {
    free(p);
    return -1;
  }
  *state = p;
  return 0;
}

static int teardown(void **state) {
  struct mg_h_proc *p = *state;
  int rc = 0;
  if (p->pid > 0) {
    rc = mg_h_stop(p, SIGTERM, T_MS);
    if (rc != 0)
      fprintf(stderr, "mg-mock exited with %d at SIGTERM\n", rc);
  }
  free(p);
  return rc == 0 ? 0 : -1;
}

static int port_of(void **state) { return ((struct mg_h_proc *)*state)->port; }

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...) {
  va_list ap;
  char *s;
  int n;
  va_start(ap, f);
  n = vsnprintf(NULL, 0, f, ap);
  va_end(ap);
  s = malloc((size_t)n + 1);
  assert_non_null(s);
  va_start(ap, f);
  vsnprintf(s, (size_t)n + 1, f, ap);
  va_end(ap);
  return s;
}

static int post(int port, const char *path, const char *body,
                struct mg_h_resp *r) {
  return mg_h_request(port, "POST", path, NULL, body, r, T_MS);
}

/* POST a one-message chat request; extra is more JSON members or "". */
static int chat(int port, const char *model, const char *text,
                const char *extra, struct mg_h_resp *r) {
  char *body = fmt("{\"model\":\"%s\",\"messages\":[{\"role\":\"user\","
                   "\"content\":\"%s\"}]%s}",
                   model, text, extra);
  int rc = post(port, "/v1/chat/completions", body, r);
  free(body);
  return rc;
}

static void set_ok(int port, const char *json) {
  assert_int_equal(mg_h_mock_set(port, json), 0);
}

static double stat_num(int port, const char *pointer) {
  char *s = mg_h_mock_stats(port);
  double d;
  assert_non_null(s);
  d = mg_h_json_num(s, pointer, -1);
  free(s);
  return d;
}

/* Poll a statistic until it equals want (or time runs out). */
static double stat_wait(int port, const char *pointer, double want,
                        int timeout_ms) {
  double deadline = mg_h_now_ms() + timeout_ms, d;
  while ((d = stat_num(port, pointer)) != want && mg_h_now_ms() < deadline)
    mg_h_sleep_ms(10);
  return d;
}

/* Send one POST on an open connection, Content-Length framing. */
static void send_post(int fd, const char *path, const char *body) {
  char *req = fmt("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n"
                  "\r\n%s",
                  path, strlen(body), body);
  assert_int_equal(mg_h_sends(fd, req), 0);
  free(req);
}

/* The body of a response parsed as JSON; fails the test when it is not. */
static cJSON *json_body(const struct mg_h_resp *r) {
  cJSON *v = cJSON_Parse(r->body);
  if (v == NULL)
    fail_msg("not JSON: %s", r->body);
  return v;
}

static const cJSON *at(const cJSON *v, const char *path) {
  /* "a.b.0.c": object members and array indices. */
  char buf[256], *tok, *save = NULL;
  snprintf(buf, sizeof(buf), "%s", path);
  for (tok = strtok_r(buf, ".", &save); tok && v;
       tok = strtok_r(NULL, ".", &save)) {
    if (cJSON_IsArray(v))
      v = cJSON_GetArrayItem(v, atoi(tok));
    else
      v = cJSON_GetObjectItemCaseSensitive(v, tok);
  }
  return v;
}

static const char *str_at(const cJSON *v, const char *path) {
  const cJSON *s = at(v, path);
  if (!cJSON_IsString(s))
    fail_msg("%s is not a string", path);
  return s->valuestring;
}

static double num_at(const cJSON *v, const char *path) {
  const cJSON *n = at(v, path);
  if (!cJSON_IsNumber(n))
    fail_msg("%s is not a number", path);
  return n->valuedouble;
}

/* The `data:` payloads of an event stream body, in order. */
struct events {
  char *items[2048];
  size_t n;
};

static void events_parse(const char *body, struct events *ev) {
  const char *p = body;
  ev->n = 0;
  while (*p && ev->n < 2048) {
    const char *end = strstr(p, "\n\n");
    if (end == NULL)
      break;
    assert_memory_equal(p, "data: ", 6);
    ev->items[ev->n++] = strndup(p + 6, (size_t)(end - p - 6));
    p = end + 2;
  }
  assert_string_equal(p, ""); /* nothing after the last complete event */
}

static void events_free(struct events *ev) {
  size_t i;
  for (i = 0; i < ev->n; i++)
    free(ev->items[i]);
  ev->n = 0;
}

/* ---- tests -------------------------------------------------------------- */

static void test_healthz_and_chat(void **state) {
  int port = port_of(state);
  struct mg_h_resp r;
  cJSON *a, *b;
  char v[128];

  assert_int_equal(mg_h_request(port, "GET", "/healthz", NULL, NULL, &r, T_MS),
                   0);
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body, "{\"status\":\"ok\"}");
  mg_h_resp_free(&r);
  /* HEAD: the headers of GET, no body. */
  assert_int_equal(mg_h_request(port, "HEAD", "/healthz", NULL, NULL, &r, T_MS),
                   0);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.body_len, 0);
  assert_string_equal(mg_h_header(&r, "content-length", v, sizeof(v)), "15");
  mg_h_resp_free(&r);

  assert_int_equal(chat(port, "m1", "Hello world", "", &r), 0);
  assert_int_equal(r.status, 200);
  assert_true(r.complete);
  assert_false(r.chunked);
  assert_string_equal(mg_h_header(&r, "Content-Type", v, sizeof(v)),
                      "application/json");
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_int_equal(strncmp(str_at(a, "id"), "chatcmpl-mock-", 14), 0);
  assert_string_equal(str_at(a, "object"), "chat.completion");
  assert_string_equal(str_at(a, "model"), "m1");
  assert_true(num_at(a, "created") > 1.6e9);
  assert_int_equal(cJSON_GetArraySize(at(a, "choices")), 1);
  assert_int_equal((int)num_at(a, "choices.0.index"), 0);
  assert_string_equal(str_at(a, "choices.0.message.role"), "assistant");
  assert_string_equal(str_at(a, "choices.0.message.content"),
                      "Mock answer from m1 to: Hello world");
  assert_true(cJSON_IsNull(at(a, "choices.0.logprobs")));
  assert_string_equal(str_at(a, "choices.0.finish_reason"), "stop");
  /* 11 characters / 4 -> 2 prompt tokens; 7 words. */
  assert_int_equal((int)num_at(a, "usage.prompt_tokens"), 2);
  assert_int_equal((int)num_at(a, "usage.completion_tokens"), 7);
  assert_int_equal((int)num_at(a, "usage.total_tokens"), 9);

  /* Deterministic content for the same model and messages; fresh ids. */
  assert_int_equal(chat(port, "m1", "Hello world", "", &r), 0);
  b = json_body(&r);
  mg_h_resp_free(&r);
  assert_string_equal(str_at(a, "choices.0.message.content"),
                      str_at(b, "choices.0.message.content"));
  assert_string_not_equal(str_at(a, "id"), str_at(b, "id"));
  cJSON_Delete(a);
  cJSON_Delete(b);

  /* The prompt is cut at 40 characters; the last message counts. */
  assert_int_equal(
      post(port, "/v1/chat/completions",
           "{\"model\":\"m2\",\"messages\":[{\"role\":\"system\",\"content\":"
           "\"be brief\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\","
           "\"text\":\"0123456789012345678901234567890123456789TAIL\"}]}]}",
           &r),
      0);
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_string_equal(str_at(a, "choices.0.message.content"),
                      "Mock answer from m2 to: "
                      "0123456789012345678901234567890123456789");
  assert_int_equal((int)num_at(a, "usage.prompt_tokens"), (8 + 44) / 4);
  cJSON_Delete(a);
}

static void check_chat_logprobs(const cJSON *a, double p) {
  const cJSON *content = at(a, "choices.0.logprobs.content"), *e;
  int n = 0;
  assert_true(cJSON_IsArray(content));
  assert_int_equal(cJSON_GetArraySize(content),
                   (int)num_at(a, "usage.completion_tokens"));
  cJSON_ArrayForEach(e, content) {
    assert_true(fabs(num_at(e, "logprob") - log(p)) < 1e-9);
    assert_true(cJSON_IsArray(at(e, "bytes")));
    assert_int_equal(cJSON_GetArraySize(at(e, "bytes")),
                     (int)strlen(str_at(e, "token")));
    assert_true(cJSON_IsArray(at(e, "top_logprobs")));
    n++;
  }
  assert_string_equal(str_at(content, "0.token"), "Mock");
  assert_int_equal((int)num_at(content, "0.bytes.0"), 'M');
  assert_true(n > 0);
}

static void test_logprobs(void **state) {
  int port = port_of(state);
  struct mg_h_resp r;
  cJSON *a;

  assert_int_equal(chat(port, "m", "how sure", ",\"logprobs\":false", &r), 0);
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_true(cJSON_IsNull(at(a, "choices.0.logprobs")));
  cJSON_Delete(a);

  assert_int_equal(chat(port, "m", "how sure", ",\"logprobs\":true", &r), 0);
  a = json_body(&r);
  mg_h_resp_free(&r);
  check_chat_logprobs(a, 0.95);
  cJSON_Delete(a);

  set_ok(port, "{\"model\":\"m\",\"mode\":\"low_confidence\"}");
  assert_int_equal(chat(port, "m", "how sure", ",\"logprobs\":true", &r), 0);
  assert_int_equal(r.status, 200);
  a = json_body(&r);
  mg_h_resp_free(&r);
  check_chat_logprobs(a, 0.3);
  cJSON_Delete(a);

  set_ok(port, "{\"model\":\"m\",\"confidence\":0.5}");
  assert_int_equal(chat(port, "m", "how sure", ",\"logprobs\":true", &r), 0);
  a = json_body(&r);
  mg_h_resp_free(&r);
  check_chat_logprobs(a, 0.5);
  cJSON_Delete(a);
}

/* Decode standard base64 (with padding) into out; the byte count, or
 * SIZE_MAX on a bad character or when out is too small. */
static size_t unbase64(const char *s, unsigned char *out, size_t cap) {
  static const char digits[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  uint32_t acc = 0;
  size_t n = 0;
  int bits = 0;
  for (; *s && *s != '='; s++) {
    const char *d = strchr(digits, *s);
    if (d == NULL)
      return SIZE_MAX;
    acc = acc << 6 | (uint32_t)(d - digits);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (n == cap)
        return SIZE_MAX;
      out[n++] = (unsigned char)(acc >> bits);
    }
  }
  return n;
}

static void test_completions_and_embeddings(void **state) {
  int port = port_of(state);
  struct mg_h_resp r;
  cJSON *a, *b;

  assert_int_equal(post(port, "/v1/completions",
                        "{\"model\":\"c\",\"prompt\":\"Say hi\"}", &r),
                   0);
  assert_int_equal(r.status, 200);
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_int_equal(strncmp(str_at(a, "id"), "cmpl-mock-", 10), 0);
  assert_string_equal(str_at(a, "object"), "text_completion");
  assert_string_equal(str_at(a, "choices.0.text"),
                      "Mock answer from c to: Say hi");
  assert_true(cJSON_IsNull(at(a, "choices.0.logprobs")));
  assert_string_equal(str_at(a, "choices.0.finish_reason"), "stop");
  assert_int_equal((int)num_at(a, "usage.completion_tokens"), 7);
  cJSON_Delete(a);

  /* Legacy logprobs when "logprobs" is a number. */
  assert_int_equal(post(port, "/v1/completions",
                        "{\"model\":\"c\",\"prompt\":\"Say hi\","
                        "\"logprobs\":0}",
                        &r),
                   0);
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_int_equal(cJSON_GetArraySize(at(a, "choices.0.logprobs.tokens")), 7);
  assert_int_equal(
      cJSON_GetArraySize(at(a, "choices.0.logprobs.token_logprobs")), 7);
  assert_string_equal(str_at(a, "choices.0.logprobs.tokens.5"), "Say");
  assert_true(fabs(num_at(a, "choices.0.logprobs.token_logprobs.0") -
                   log(0.95)) < 1e-9);
  cJSON_Delete(a);

  assert_int_equal(
      post(port, "/v1/embeddings", "{\"model\":\"e\",\"input\":\"hello\"}", &r),
      0);
  assert_int_equal(r.status, 200);
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_string_equal(str_at(a, "object"), "list");
  assert_string_equal(str_at(a, "model"), "e");
  assert_int_equal(cJSON_GetArraySize(at(a, "data")), 1);
  assert_string_equal(str_at(a, "data.0.object"), "embedding");
  assert_int_equal((int)num_at(a, "data.0.index"), 0);
  assert_int_equal(cJSON_GetArraySize(at(a, "data.0.embedding")), 8);
  assert_true(num_at(a, "usage.prompt_tokens") >= 1);
  assert_true(num_at(a, "usage.total_tokens") >= 1);

  assert_int_equal(post(port, "/v1/embeddings",
                        "{\"model\":\"e\",\"input\":[\"other\",\"hello\"]}",
                        &r),
                   0);
  b = json_body(&r);
  mg_h_resp_free(&r);
  assert_int_equal(cJSON_GetArraySize(at(b, "data")), 2);
  assert_int_equal((int)num_at(b, "data.1.index"), 1);
  /* Deterministic per input, different across inputs. */
  assert_true(
      cJSON_Compare(at(a, "data.0.embedding"), at(b, "data.1.embedding"), 1));
  assert_false(
      cJSON_Compare(at(a, "data.0.embedding"), at(b, "data.0.embedding"), 1));
  cJSON_Delete(b);

  /* encoding_format "base64" (the OpenAI Node SDK's default): the same
   * vector as little-endian float32 values in base64. */
  assert_int_equal(post(port, "/v1/embeddings",
                        "{\"model\":\"e\",\"input\":\"hello\","
                        "\"encoding_format\":\"base64\"}",
                        &r),
                   0);
  assert_int_equal(r.status, 200);
  b = json_body(&r);
  mg_h_resp_free(&r);
  {
    unsigned char raw[64];
    size_t n = unbase64(str_at(b, "data.0.embedding"), raw, sizeof(raw)), k;
    assert_int_equal(n, 8 * 4);
    for (k = 0; k < 8; k++) {
      uint32_t u = (uint32_t)raw[k * 4] | (uint32_t)raw[k * 4 + 1] << 8 |
                   (uint32_t)raw[k * 4 + 2] << 16 |
                   (uint32_t)raw[k * 4 + 3] << 24;
      float f;
      char path[64];
      memcpy(&f, &u, sizeof(f));
      snprintf(path, sizeof(path), "data.0.embedding.%zu", k);
      assert_true(fabs((double)f - num_at(a, path)) < 1e-6);
    }
  }
  cJSON_Delete(a);
  cJSON_Delete(b);
  assert_int_equal(post(port, "/v1/embeddings",
                        "{\"model\":\"e\",\"input\":\"hello\","
                        "\"encoding_format\":\"int8\"}",
                        &r),
                   0);
  assert_int_equal(r.status, 400);
  mg_h_resp_free(&r);
}

static void test_bad_requests(void **state) {
  int port = port_of(state);
  struct mg_h_resp r;
  cJSON *a;

  assert_int_equal(post(port, "/v1/chat/completions", "{\"model\":", &r), 0);
  assert_int_equal(r.status, 400);
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_string_equal(str_at(a, "error.type"), "invalid_request_error");
  assert_true(strlen(str_at(a, "error.message")) > 0);
  assert_true(cJSON_IsNull(at(a, "error.param")));
  assert_true(cJSON_IsNull(at(a, "error.code")));
  cJSON_Delete(a);

  assert_int_equal(post(port, "/v1/chat/completions", "{\"messages\":[]}", &r),
                   0);
  assert_int_equal(r.status, 400);
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_non_null(strstr(str_at(a, "error.message"), "model"));
  cJSON_Delete(a);

  assert_int_equal(post(port, "/v1/embeddings", "{\"model\":\"e\"}", &r), 0);
  assert_int_equal(r.status, 400);
  mg_h_resp_free(&r);

  assert_int_equal(
      mg_h_request(port, "GET", "/v1/chat/completions", NULL, NULL, &r, T_MS),
      0);
  assert_int_equal(r.status, 405);
  mg_h_resp_free(&r);
  assert_int_equal(post(port, "/v2/nothing", "{}", &r), 0);
  assert_int_equal(r.status, 404);
  mg_h_resp_free(&r);

  /* Behaviours are checked whole: unknown modes, keys and bad values. */
  assert_int_equal(post(port, "/_mock/behaviour", "{\"mode\":\"explode\"}", &r),
                   0);
  assert_int_equal(r.status, 400);
  assert_non_null(strstr(r.body, "explode"));
  mg_h_resp_free(&r);
  assert_int_equal(
      post(port, "/_mock/behaviour", "{\"mode\":\"ok\",\"ms2\":1}", &r), 0);
  assert_int_equal(r.status, 400);
  assert_non_null(strstr(r.body, "ms2"));
  mg_h_resp_free(&r);
  assert_int_not_equal(mg_h_mock_set(port, "{\"mode\":\"slow\",\"ms\":\"x\"}"),
                       0);
  assert_int_not_equal(mg_h_mock_set(port, "{\"confidence\":0}"), 0);
  assert_int_not_equal(mg_h_mock_set(port, "{\"times\":0}"), 0);
  assert_int_not_equal(mg_h_mock_set(port, "[{\"mode\":\"ok\"},{\"x\":1}]"), 0);
  assert_int_not_equal(mg_h_mock_set(port, "not json"), 0);
  /* None of that changed anything. */
  assert_int_equal(chat(port, "m", "hi", "", &r), 0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);

  /* A malformed request line gets 400 and a closed connection. */
  {
    int fd = mg_h_connect(port);
    assert_true(fd >= 0);
    assert_int_equal(mg_h_sends(fd, "GET /healthz HTTP/1.1\r\nHost x\r\n\r\n"),
                     0);
    assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
    assert_int_equal(r.status, 400);
    assert_true(r.closed);
    mg_h_resp_free(&r);
    close(fd);
  }
}

static void test_body_limit(void **state) {
  int port = port_of(state);
  size_t n = 2 * 1024 * 1024;
  char *big = malloc(n + 1);
  struct mg_h_resp r;

  assert_non_null(big);
  memset(big, 'a', n);
  big[n] = '\0';
  /* The mock refuses on the headers and drains the rest, so the client
   * reads the 413 instead of a reset. */
  assert_int_equal(post(port, "/v1/chat/completions", big, &r), 0);
  assert_int_equal(r.status, 413);
  mg_h_resp_free(&r);
  free(big);
  /* Chunked bodies are limited too. */
  {
    int fd = mg_h_connect(port), i;
    char chunk[70000];
    assert_true(fd >= 0);
    assert_int_equal(mg_h_sends(fd, "POST /v1/chat/completions HTTP/1.1\r\n"
                                    "Host: x\r\nTransfer-Encoding: chunked\r\n"
                                    "\r\n"),
                     0);
    memset(chunk, 'b', sizeof(chunk));
    sprintf(chunk, "10000\r\n");
    chunk[7 + 65536] = '\r';
    chunk[7 + 65536 + 1] = '\n';
    for (i = 0; i < 17; i++)
      if (mg_h_send(fd, chunk, 7 + 65536 + 2) != 0)
        break;
    assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
    assert_int_equal(r.status, 413);
    mg_h_resp_free(&r);
    close(fd);
  }
  assert_int_equal(chat(port, "m", "still fine", "", &r), 0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
}

/* A streamed chat answer on an open connection; returns the events. */
static void stream_chat(int fd, const char *extra, struct mg_h_resp *r) {
  char *body = fmt("{\"model\":\"s\",\"stream\":true,\"messages\":[{\"role\":"
                   "\"user\",\"content\":\"tell me a story\"}]%s}",
                   extra);
  char *req = fmt("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                  "\r\n%s",
                  strlen(body), body);
  assert_int_equal(mg_h_sends(fd, req), 0);
  free(body);
  free(req);
  (void)mg_h_read_response(fd, r, T_MS);
}

static void test_stream(void **state) {
  int port = port_of(state), fd, i;
  struct mg_h_resp r;
  struct events ev;
  char v[128], content[1024] = "";
  cJSON *e;

  fd = mg_h_connect(port);
  assert_true(fd >= 0);
  stream_chat(fd, ",\"stream_options\":{\"include_usage\":true}", &r);
  assert_int_equal(r.status, 200);
  assert_true(r.chunked);
  assert_true(r.complete);
  assert_false(r.closed);
  assert_string_equal(mg_h_header(&r, "content-type", v, sizeof(v)),
                      "text/event-stream");
  assert_null(mg_h_header(&r, "content-length", v, sizeof(v)));
  events_parse(r.body, &ev);
  mg_h_resp_free(&r);
  /* 5 chunks, the usage chunk, [DONE]. */
  assert_int_equal(ev.n, 7);
  assert_string_equal(ev.items[6], "[DONE]");
  for (i = 0; i < 5; i++) {
    const cJSON *c;
    e = cJSON_Parse(ev.items[i]);
    assert_non_null(e);
    assert_string_equal(str_at(e, "object"), "chat.completion.chunk");
    assert_string_equal(str_at(e, "model"), "s");
    if (i == 0)
      assert_string_equal(str_at(e, "choices.0.delta.role"), "assistant");
    c = at(e, "choices.0.delta.content");
    if (cJSON_IsString(c))
      strcat(content, c->valuestring);
    if (i == 4)
      assert_string_equal(str_at(e, "choices.0.finish_reason"), "stop");
    else
      assert_true(cJSON_IsNull(at(e, "choices.0.finish_reason")));
    cJSON_Delete(e);
  }
  assert_string_equal(content, "Mock answer from s to: tell me a story");
  e = cJSON_Parse(ev.items[5]);
  assert_int_equal(cJSON_GetArraySize(at(e, "choices")), 0);
  assert_int_equal((int)num_at(e, "usage.completion_tokens"), 9);
  cJSON_Delete(e);
  events_free(&ev);

  /* Keep-alive: the next stream on the same connection, with logprobs,
   * more chunks and big events; no usage chunk this time. */
  set_ok(port, "{\"chunks\":8,\"chunk_bytes\":3000,\"chunk_ms\":5}");
  stream_chat(fd, ",\"logprobs\":true", &r);
  assert_int_equal(r.status, 200);
  assert_true(r.complete);
  events_parse(r.body, &ev);
  mg_h_resp_free(&r);
  assert_int_equal(ev.n, 9);
  assert_string_equal(ev.items[8], "[DONE]");
  {
    int words = 0;
    for (i = 1; i < 7; i++) {
      e = cJSON_Parse(ev.items[i]);
      assert_non_null(e);
      assert_true(strlen(str_at(e, "choices.0.delta.content")) >= 3000);
      assert_true(cJSON_IsArray(at(e, "choices.0.logprobs.content")));
      words += cJSON_GetArraySize(at(e, "choices.0.logprobs.content"));
      cJSON_Delete(e);
    }
    assert_int_equal(words, 9);
  }
  events_free(&ev);
  close(fd);

  /* Completions stream too. */
  assert_int_equal(post(port, "/v1/completions",
                        "{\"model\":\"c\",\"prompt\":\"x\",\"stream\":true}",
                        &r),
                   0);
  assert_true(r.chunked);
  events_parse(r.body, &ev);
  mg_h_resp_free(&r);
  assert_int_equal(ev.n, 9);
  e = cJSON_Parse(ev.items[0]);
  assert_string_equal(str_at(e, "object"), "text_completion");
  assert_true(cJSON_IsString(at(e, "choices.0.text")));
  cJSON_Delete(e);
  events_free(&ev);

  assert_int_equal((int)stat_num(port, "/streams_completed"), 3);
  assert_int_equal((int)stat_num(port, "/active_streams"), 0);
  assert_int_equal((int)stat_num(port, "/chunks_sent"), 7 + 9 + 9);
}

static void test_stream_die(void **state) {
  int port = port_of(state), fd;
  struct mg_h_resp r;
  struct events ev;
  char v[64];

  set_ok(port, "{\"mode\":\"stream_die\",\"chunks\":10,\"die_after\":3}");
  fd = mg_h_connect(port);
  assert_true(fd >= 0);
  stream_chat(fd, "", &r);
  close(fd);
  assert_int_equal(r.status, 200);
  assert_true(r.chunked);
  assert_false(r.complete); /* no terminating chunk */
  assert_true(r.closed);
  assert_null(strstr(r.body, "[DONE]"));
  events_parse(r.body, &ev);
  assert_int_equal(ev.n, 3);
  events_free(&ev);
  mg_h_resp_free(&r);
  assert_int_equal((int)stat_num(port, "/streams_died"), 1);
  assert_int_equal((int)stat_num(port, "/streams_aborted"), 0);
  assert_int_equal((int)stat_num(port, "/active_streams"), 0);

  /* Without stream, stream_die truncates. */
  assert_int_not_equal(chat(port, "m", "hi", "", &r), 0);
  assert_int_equal(r.status, 200);
  assert_false(r.complete);
  assert_true(r.body_len <
              (size_t)atoi(mg_h_header(&r, "content-length", v, sizeof(v))));
  mg_h_resp_free(&r);
}

static void test_hang(void **state) {
  int port = port_of(state), fd;
  struct mg_h_resp r;

  set_ok(port, "{\"model\":\"h\",\"mode\":\"hang\"}");
  fd = mg_h_connect(port);
  assert_true(fd >= 0);
  send_post(fd, "/v1/chat/completions",
            "{\"model\":\"h\",\"messages\":[{\"content\":\"\"}]}");
  assert_int_equal(mg_h_read_response(fd, &r, 300), -1);
  assert_int_equal(r.status, 0);
  assert_false(r.closed);
  assert_true(r.ms >= 290);
  mg_h_resp_free(&r);
  /* The connection is kept. */
  assert_false(mg_h_wait_closed(fd, 100));
  close(fd);
  /* Other models are not affected, and the mock counted the request. */
  assert_int_equal(chat(port, "m", "hi", "", &r), 0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  assert_int_equal((int)stat_num(port, "/by_model/h"), 1);
}

static void test_reset(void **state) {
  int port = port_of(state), fd;
  struct mg_h_resp r;
  char buf[64];
  ssize_t n;

  set_ok(port, "{\"mode\":\"reset\"}");
  assert_int_equal(chat(port, "m", "hi", "", &r), -1);
  assert_int_equal(r.status, 0);
  assert_true(r.closed);
  mg_h_resp_free(&r);

  /* An RST, not a FIN. */
  fd = mg_h_connect(port);
  assert_true(fd >= 0);
  send_post(fd, "/v1/embeddings", "{\"model\":\"m\",\"input\":\"x\"}");
  errno = 0;
  do
    n = recv(fd, buf, sizeof(buf), 0);
  while (n > 0);
  assert_int_equal(n, -1);
  assert_int_equal(errno, ECONNRESET);
  close(fd);
  /* The next request on a fresh connection is reset too. */
  fd = mg_h_connect(port);
  send_post(fd, "/v1/embeddings", "{\"model\":\"m\",\"input\":\"x\"}");
  assert_true(mg_h_wait_closed(fd, T_MS));
  close(fd);
}

static void test_garbage_and_truncate(void **state) {
  int port = port_of(state);
  struct mg_h_resp r;
  char v[64];
  cJSON *a;

  set_ok(port, "{\"mode\":\"garbage\"}");
  assert_int_equal(chat(port, "m", "hi", "", &r), 0);
  assert_int_equal(r.status, 200);
  assert_true(r.complete);
  assert_string_equal(mg_h_header(&r, "content-type", v, sizeof(v)),
                      "application/json");
  assert_int_equal(r.body_len,
                   atoi(mg_h_header(&r, "content-length", v, sizeof(v))));
  a = cJSON_Parse(r.body);
  assert_null(a);
  mg_h_resp_free(&r);

  set_ok(port, "{\"mode\":\"truncate\"}");
  assert_int_equal(chat(port, "m", "hi", "", &r), -1);
  assert_int_equal(r.status, 200);
  assert_false(r.complete);
  assert_true(r.closed);
  assert_true(r.body_len > 0);
  assert_true(r.body_len <
              (size_t)atoi(mg_h_header(&r, "content-length", v, sizeof(v))));
  mg_h_resp_free(&r);
}

static void test_status_and_headers(void **state) {
  int port = port_of(state);
  struct mg_h_resp r;
  char v[128];
  cJSON *a;

  set_ok(port, "{\"mode\":\"status\",\"status\":503,\"retry_after\":2}");
  assert_int_equal(chat(port, "m", "hi", "", &r), 0);
  assert_int_equal(r.status, 503);
  assert_string_equal(mg_h_header(&r, "retry-after", v, sizeof(v)), "2");
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_string_equal(str_at(a, "error.type"), "server_error");
  cJSON_Delete(a);

  /* Default status 500; a custom body as a string or as JSON. */
  set_ok(port,
         "{\"mode\":\"status\",\"body\":\"{\\\"error\\\":{\\\"message\\\":"
         "\\\"nope\\\"}}\"}");
  assert_int_equal(chat(port, "m", "hi", "", &r), 0);
  assert_int_equal(r.status, 500);
  assert_string_equal(r.body, "{\"error\":{\"message\":\"nope\"}}");
  assert_null(mg_h_header(&r, "retry-after", v, sizeof(v)));
  mg_h_resp_free(&r);
  set_ok(port, "{\"mode\":\"status\",\"status\":429,\"body\":{\"a\":1}}");
  assert_int_equal(chat(port, "m", "hi", "", &r), 0);
  assert_int_equal(r.status, 429);
  assert_string_equal(r.body, "{\"a\":1}");
  mg_h_resp_free(&r);

  /* Retry-After in any mode; x-confidence; content override. */
  set_ok(port, "{\"retry_after\":1,\"header_confidence\":0.42,"
               "\"content\":{\"answer\":\"x\",\"confidence\":0.4}}");
  assert_int_equal(chat(port, "m", "hi", "", &r), 0);
  assert_int_equal(r.status, 200);
  assert_string_equal(mg_h_header(&r, "Retry-After", v, sizeof(v)), "1");
  assert_string_equal(mg_h_header(&r, "x-confidence", v, sizeof(v)), "0.42");
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_string_equal(str_at(a, "choices.0.message.content"),
                      "{\"answer\":\"x\",\"confidence\":0.4}");
  assert_int_equal((int)num_at(a, "usage.completion_tokens"), 1);
  cJSON_Delete(a);
}

static void test_slow(void **state) {
  int port = port_of(state);
  struct mg_h_resp r;

  set_ok(port, "{\"mode\":\"slow\",\"ms\":300}");
  assert_int_equal(chat(port, "m", "hi", "", &r), 0);
  assert_int_equal(r.status, 200);
  assert_true(r.ms >= 290);
  mg_h_resp_free(&r);
  /* A client that gives up first. */
  assert_int_equal(mg_h_request(port, "POST", "/v1/chat/completions", NULL,
                                "{\"model\":\"m\",\"messages\":[]}", &r, 100),
                   -1);
  assert_int_equal(r.status, 0);
  mg_h_resp_free(&r);

  /* `ms` delays other modes too; streams wait before their headers. */
  set_ok(port, "{\"mode\":\"status\",\"status\":502,\"ms\":200}");
  assert_int_equal(chat(port, "m", "hi", "", &r), 0);
  assert_int_equal(r.status, 502);
  assert_true(r.ms >= 190);
  mg_h_resp_free(&r);
  set_ok(port, "{\"mode\":\"slow\",\"ms\":200}");
  assert_int_equal(chat(port, "m", "hi", ",\"stream\":true", &r), 0);
  assert_true(r.chunked);
  assert_true(r.ms >= 190);
  mg_h_resp_free(&r);
}

static void test_times_and_precedence(void **state) {
  int port = port_of(state);
  struct mg_h_resp r;
  int i;
  static const int want[] = {500, 500, 200, 200};

  set_ok(port, "{\"model\":\"a\",\"mode\":\"status\",\"times\":2}");
  for (i = 0; i < 4; i++) {
    assert_int_equal(chat(port, "a", "hi", "", &r), 0);
    assert_int_equal(r.status, want[i]);
    mg_h_resp_free(&r);
  }

  /* "*" for models without their own; a model's own wins. */
  set_ok(port, "[{\"model\":\"*\",\"mode\":\"status\",\"status\":503},"
               "{\"model\":\"a\",\"mode\":\"ok\"}]");
  assert_int_equal(chat(port, "a", "hi", "", &r), 0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  assert_int_equal(chat(port, "b", "hi", "", &r), 0);
  assert_int_equal(r.status, 503);
  mg_h_resp_free(&r);

  /* Queued behaviours run in order, then what was set before. */
  set_ok(port, "{\"model\":\"a\",\"mode\":\"status\",\"status\":429,"
               "\"times\":1}");
  set_ok(port, "{\"model\":\"a\",\"mode\":\"status\",\"status\":502,"
               "\"times\":1}");
  assert_int_equal(chat(port, "a", "hi", "", &r), 0);
  assert_int_equal(r.status, 429);
  mg_h_resp_free(&r);
  assert_int_equal(chat(port, "a", "hi", "", &r), 0);
  assert_int_equal(r.status, 502);
  mg_h_resp_free(&r);
  assert_int_equal(chat(port, "a", "hi", "", &r), 0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);

  /* A permanent behaviour replaces the queue. */
  set_ok(port, "{\"model\":\"a\",\"mode\":\"status\",\"status\":429,"
               "\"times\":5}");
  set_ok(port, "{\"model\":\"a\",\"mode\":\"status\",\"status\":418}");
  assert_int_equal(chat(port, "a", "hi", "", &r), 0);
  assert_int_equal(r.status, 418);
  mg_h_resp_free(&r);

  assert_int_equal(mg_h_mock_reset(port), 0);
  assert_int_equal(chat(port, "a", "hi", "", &r), 0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  assert_int_equal(chat(port, "b", "hi", "", &r), 0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
}

static void test_stats(void **state) {
  int port = port_of(state), fd;
  struct mg_h_resp r;
  char *s, v[256];

  s = mg_h_mock_stats(port);
  assert_non_null(s);
  assert_int_equal((int)mg_h_json_num(s, "/requests", -1), 0);
  assert_int_equal((int)mg_h_json_num(s, "/active_streams", -1), 0);
  assert_string_equal(mg_h_json_str(s, "/by_model", v, sizeof(v)), "{}");
  free(s);

  assert_int_equal(mg_h_request(port, "POST", "/v1/chat/completions",
                                "Authorization: Bearer k1\r\n"
                                "X-Custom: v\r\n",
                                "{\"model\":\"m1\",\"messages\":[]}", &r, T_MS),
                   0);
  mg_h_resp_free(&r);
  assert_int_equal(chat(port, "m1", "second", "", &r), 0);
  mg_h_resp_free(&r);
  assert_int_equal(
      post(port, "/v1/embeddings", "{\"model\":\"m2\",\"input\":\"x\"}", &r),
      0);
  mg_h_resp_free(&r);
  assert_int_equal(mg_h_request(port, "GET", "/healthz", NULL, NULL, &r, T_MS),
                   0);
  mg_h_resp_free(&r);

  /* A chunked request body: the mock records the framing headers it got. */
  fd = mg_h_connect(port);
  assert_true(fd >= 0);
  assert_int_equal(mg_h_sends(fd, "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n"
                                  "Transfer-Encoding: chunked\r\n\r\n"
                                  "f\r\n{\"model\":\"m3\",\"\r\n"
                                  "b\r\ninput\":\"y\"}\r\n0\r\n\r\n"),
                   0);
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  close(fd);

  s = mg_h_mock_stats(port);
  assert_non_null(s);
  assert_int_equal((int)mg_h_json_num(s, "/requests", -1), 4);
  assert_int_equal((int)mg_h_json_num(s, "/by_model/m1", -1), 2);
  assert_int_equal((int)mg_h_json_num(s, "/by_model/m2", -1), 1);
  assert_int_equal((int)mg_h_json_num(s, "/by_model/m3", -1), 1);
  assert_true(mg_h_json_num(s, "/connections_opened", -1) >= 6);
  /* The last request per model, body and lower-cased headers. */
  assert_string_equal(
      mg_h_json_str(s, "/last/m1/body/messages/0/content", v, sizeof(v)),
      "second");
  assert_null(mg_h_json_str(s, "/last/m1/headers/authorization", v, sizeof(v)));
  assert_string_equal(
      mg_h_json_str(s, "/last/m3/headers/transfer-encoding", v, sizeof(v)),
      "chunked");
  assert_string_equal(mg_h_json_str(s, "/last/m3/body/input", v, sizeof(v)),
                      "y");
  assert_string_equal(
      mg_h_json_str(s, "/last/m2/headers/content-type", v, sizeof(v)),
      "application/json");
  free(s);

  /* The first m1 request is gone from `last`; send it again to see its
   * headers. */
  assert_int_equal(mg_h_request(port, "POST", "/v1/chat/completions",
                                "Authorization: Bearer k1\r\n"
                                "X-Custom: v\r\n",
                                "{\"model\":\"m1\",\"messages\":[]}", &r, T_MS),
                   0);
  mg_h_resp_free(&r);
  s = mg_h_mock_stats(port);
  assert_string_equal(
      mg_h_json_str(s, "/last/m1/headers/authorization", v, sizeof(v)),
      "Bearer k1");
  assert_string_equal(
      mg_h_json_str(s, "/last/m1/headers/x-custom", v, sizeof(v)), "v");
  assert_string_equal(mg_h_json_str(s, "/last/m1/body/messages", v, sizeof(v)),
                      "[]");
  free(s);

  /* DELETE /_mock/stats zeroes the counters. */
  assert_int_equal(
      mg_h_request(port, "DELETE", "/_mock/stats", NULL, NULL, &r, T_MS), 0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  assert_int_equal((int)stat_num(port, "/requests"), 0);
  assert_int_equal((int)stat_num(port, "/by_model/m1"), -1);
}

static void test_client_vanishes_mid_stream(void **state) {
  int port = port_of(state), fd;
  char buf[256];
  ssize_t n;

  set_ok(port, "{\"chunks\":100,\"chunk_ms\":20}");
  fd = mg_h_connect(port);
  assert_true(fd >= 0);
  send_post(fd, "/v1/chat/completions",
            "{\"model\":\"v\",\"stream\":true,\"messages\":[]}");
  n = recv(fd, buf, sizeof(buf) - 1, 0);
  assert_true(n > 0);
  buf[n] = '\0';
  assert_non_null(strstr(buf, "200"));
  assert_int_equal((int)stat_wait(port, "/active_streams", 1, 1000), 1);
  close(fd);
  /* Promptly, long before the stream (2 s) would have ended. */
  assert_int_equal((int)stat_wait(port, "/streams_aborted", 1, 1000), 1);
  assert_int_equal((int)stat_num(port, "/active_streams"), 0);
  assert_int_equal((int)stat_num(port, "/streams_completed"), 0);
  assert_true(stat_num(port, "/chunks_sent") < 50);
  /* Only the connection asking for the stats is left. */
  assert_int_equal((int)stat_wait(port, "/connections_active", 1, 1000), 1);
}

static void test_backpressure(void **state) {
  int port = port_of(state), fd;
  struct mg_h_resp r;
  struct events ev;
  double sent, later;

  /* 400 events of 64 KiB (25 MiB) cannot all fit in the socket buffers. */
  set_ok(port, "{\"chunks\":400,\"chunk_bytes\":65536}");
  fd = mg_h_connect(port);
  assert_true(fd >= 0);
  send_post(fd, "/v1/chat/completions",
            "{\"model\":\"b\",\"stream\":true,\"messages\":[]}");
  /* Wait until the count holds still for 300 ms (a slow build, or a busy
   * machine, fills the socket buffers later), at most 10 s. */
  {
    double end = mg_h_now_ms() + 10000;
    mg_h_sleep_ms(300);
    later = stat_num(port, "/chunks_sent");
    do {
      sent = later;
      mg_h_sleep_ms(300);
      later = stat_num(port, "/chunks_sent");
    } while (later != sent && mg_h_now_ms() < end);
  }
  /* The mock stopped writing: it waits for each write to complete. */
  assert_true(sent > 0);
  assert_true(sent < 400);
  assert_true(later == sent);
  assert_int_equal((int)stat_num(port, "/active_streams"), 1);
  /* Reading resumes it to the end. */
  assert_int_equal(mg_h_read_response(fd, &r, 20000), 0);
  assert_true(r.complete);
  events_parse(r.body, &ev);
  assert_int_equal(ev.n, 401);
  events_free(&ev);
  mg_h_resp_free(&r);
  close(fd);
  assert_int_equal((int)stat_num(port, "/streams_completed"), 1);
  assert_int_equal((int)stat_num(port, "/chunks_sent"), 401);
}

static void test_keepalive_pipelining_expect(void **state) {
  int port = port_of(state), fd;
  struct mg_h_resp r;
  char buf[128];
  ssize_t n;
  cJSON *a;
  static const char b1[] =
      "{\"model\":\"p\",\"messages\":[{\"content\":\"first\"}]}";
  static const char b2[] =
      "{\"model\":\"p\",\"messages\":[{\"content\":\"second\"}]}";
  char *two = fmt("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  "Content-Length: %zu\r\n\r\n%s"
                  "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  "Content-Length: %zu\r\n\r\n%s",
                  strlen(b1), b1, strlen(b2), b2);

  fd = mg_h_connect(port);
  assert_true(fd >= 0);
  /* Two requests in one write: two answers, in order. */
  assert_int_equal(mg_h_sends(fd, two), 0);
  free(two);
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_string_equal(str_at(a, "choices.0.message.content"),
                      "Mock answer from p to: first");
  cJSON_Delete(a);
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  assert_false(r.closed);
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_string_equal(str_at(a, "choices.0.message.content"),
                      "Mock answer from p to: second");
  cJSON_Delete(a);

  /* Expect: 100-continue gets its interim answer before the body. */
  assert_int_equal(mg_h_sends(fd, "POST /v1/chat/completions HTTP/1.1\r\n"
                                  "Host: x\r\nExpect: 100-continue\r\n"
                                  "Content-Length: 46\r\n\r\n"),
                   0);
  n = recv(fd, buf, sizeof(buf) - 1, 0);
  assert_true(n > 0);
  buf[n] = '\0';
  assert_string_equal(buf, "HTTP/1.1 100 Continue\r\n\r\n");
  assert_int_equal(mg_h_sends(fd, "{\"model\":\"p\",\"messages\":[{\"content\":"
                                  "\"third\"}]}"),
                   0);
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);

  /* Connection: close is honoured. */
  assert_int_equal(mg_h_sends(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                  "Connection: close\r\n\r\n"),
                   0);
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  assert_int_equal(r.status, 200);
  assert_true(r.closed);
  mg_h_resp_free(&r);
  close(fd);
}

static void test_sigterm_with_work_in_flight(void **state) {
  struct mg_h_proc *p = *state;
  int port = p->port, hang, stream, idle;
  char buf[64];

  set_ok(port, "[{\"model\":\"h\",\"mode\":\"hang\"},"
               "{\"model\":\"s\",\"chunks\":1000,\"chunk_ms\":10},"
               "{\"model\":\"w\",\"mode\":\"slow\",\"ms\":60000}]");
  hang = mg_h_connect(port);
  stream = mg_h_connect(port);
  idle = mg_h_connect(port);
  assert_true(hang >= 0 && stream >= 0 && idle >= 0);
  send_post(hang, "/v1/chat/completions", "{\"model\":\"h\",\"messages\":[]}");
  send_post(stream, "/v1/chat/completions",
            "{\"model\":\"s\",\"stream\":true,\"messages\":[]}");
  send_post(idle, "/v1/chat/completions", "{\"model\":\"w\",\"messages\":[]}");
  assert_true(recv(stream, buf, sizeof(buf), 0) > 0);
  assert_int_equal((int)stat_wait(port, "/active_streams", 1, 1000), 1);
  /* SIGTERM: everything closed, the loop clean, exit 0 (no leaks under
   * LeakSanitizer). */
  assert_int_equal(mg_h_stop(p, SIGTERM, T_MS), 0);
  assert_false(mg_h_alive(p));
  assert_true(mg_h_wait_closed(hang, 1000));
  assert_true(mg_h_wait_closed(stream, 1000));
  assert_true(mg_h_wait_closed(idle, 1000));
  close(hang);
  close(stream);
  close(idle);

  /* SIGINT too. */
  assert_int_equal(mg_h_start_mock(p), 0);
  assert_true(mg_h_alive(p));
  assert_int_equal(mg_h_stop(p, SIGINT, T_MS), 0);
}

/* ---- helpers for the typed APIs ----------------------------------------- */

/* The `event:` names and `data:` payloads of a typed event stream
 * (Responses, Messages): "event: T\ndata: D\n\n" blocks. */
struct tevents {
  char *type[512];
  char *data[512];
  size_t n;
};

static void tevents_parse(const char *body, struct tevents *ev) {
  const char *p = body;
  ev->n = 0;
  while (*p && ev->n < 512) {
    const char *nl = strchr(p, '\n'), *end = strstr(p, "\n\n");
    if (end == NULL || nl == NULL || nl >= end)
      break;
    assert_memory_equal(p, "event: ", 7);
    assert_memory_equal(nl + 1, "data: ", 6);
    ev->type[ev->n] = strndup(p + 7, (size_t)(nl - p - 7));
    ev->data[ev->n] = strndup(nl + 7, (size_t)(end - nl - 7));
    ev->n++;
    p = end + 2;
  }
  assert_string_equal(p, ""); /* nothing after the last complete event */
}

static void tevents_free(struct tevents *ev) {
  size_t i;
  for (i = 0; i < ev->n; i++) {
    free(ev->type[i]);
    free(ev->data[i]);
  }
  ev->n = 0;
}

/* Event i's data as JSON, checked to carry its own type. */
static cJSON *tevent(const struct tevents *ev, size_t i) {
  cJSON *e = cJSON_Parse(ev->data[i]);
  if (e == NULL)
    fail_msg("event %zu is not JSON: %s", i, ev->data[i]);
  assert_string_equal(str_at(e, "type"), ev->type[i]);
  return e;
}

static int responses(int port, const char *body, struct mg_h_resp *r) {
  return post(port, "/v1/responses", body, r);
}

#define ANTHROPIC_HEADERS                                                      \
  "x-api-key: sk-ant-test\r\nanthropic-version: 2023-06-01\r\n"

static int messages(int port, const char *body, struct mg_h_resp *r) {
  return mg_h_request(port, "POST", "/v1/messages", ANTHROPIC_HEADERS, body, r,
                      T_MS);
}

/* A header that must be there. */
static const char *hdr(const struct mg_h_resp *r, const char *name) {
  static char v[512];
  if (mg_h_header(r, name, v, sizeof(v)) == NULL)
    fail_msg("no %s header in:\n%s", name, r->head);
  return v;
}

/* "<prefix>" followed by 32 lower-case hex digits. */
static void assert_id(const char *id, const char *prefix) {
  size_t n = strlen(prefix), i;
  assert_int_equal(strncmp(id, prefix, n), 0);
  assert_int_equal(strlen(id), n + 32);
  for (i = n; id[i]; i++)
    assert_non_null(strchr("0123456789abcdef", id[i]));
}

/* Read until the peer closes (or timeout_ms): the bytes into buf (NUL-
 * terminated) and how it ended: 0 FIN, 1 RST, -1 still open. */
static size_t read_to_close(int fd, char *buf, size_t cap, int timeout_ms,
                            int *how) {
  double deadline = mg_h_now_ms() + timeout_ms;
  size_t n = 0;
  *how = -1;
  for (;;) {
    struct pollfd pfd = {fd, POLLIN, 0};
    int left = (int)(deadline - mg_h_now_ms()), pr;
    ssize_t got;
    if (left <= 0)
      break;
    pr = poll(&pfd, 1, left);
    if (pr < 0 && errno == EINTR)
      continue;
    if (pr <= 0)
      break;
    got = recv(fd, buf + n, cap - 1 - n, 0);
    if (got > 0) {
      n += (size_t)got;
      if (n == cap - 1)
        break;
      continue;
    }
    if (got == 0)
      *how = 0;
    else if (errno == ECONNRESET)
      *how = 1;
    else if (errno == EINTR)
      continue;
    break;
  }
  buf[n] = '\0';
  return n;
}

/* Read exactly n bytes (or fail the test). */
static void read_exactly(int fd, char *buf, size_t n) {
  size_t got = 0;
  double deadline = mg_h_now_ms() + T_MS;
  while (got < n) {
    struct pollfd pfd = {fd, POLLIN, 0};
    ssize_t k;
    assert_true(mg_h_now_ms() < deadline);
    if (poll(&pfd, 1, 100) <= 0)
      continue;
    k = recv(fd, buf + got, n - got, 0);
    assert_true(k > 0);
    got += (size_t)k;
  }
  buf[n] = '\0';
}

/* ---- OpenAI Responses --------------------------------------------------- */

static void check_resp_logprobs(const cJSON *lps, int words, double p) {
  const cJSON *e;
  assert_true(cJSON_IsArray(lps));
  assert_int_equal(cJSON_GetArraySize(lps), words);
  cJSON_ArrayForEach(e, lps) {
    assert_true(fabs(num_at(e, "logprob") - log(p)) < 1e-9);
    assert_int_equal(cJSON_GetArraySize(at(e, "bytes")),
                     (int)strlen(str_at(e, "token")));
    assert_true(cJSON_IsArray(at(e, "top_logprobs")));
  }
}

static void test_responses_plain(void **state) {
  int port = port_of(state);
  struct mg_h_resp r;
  char rid1[64];
  cJSON *a;

  assert_int_equal(
      responses(port,
                "{\"model\":\"r1\",\"input\":\"Hello world\",\"instructions\":"
                "\"Be brief\",\"temperature\":0.2,\"metadata\":{\"k\":\"v\"},"
                "\"tools\":[{\"type\":\"function\",\"name\":\"f\","
                "\"parameters\":{}}]}",
                &r),
      0);
  assert_int_equal(r.status, 200);
  assert_string_equal(hdr(&r, "content-type"), "application/json");
  /* The headers the OpenAI SDKs read; the first answer of this mock. */
  assert_id(hdr(&r, "x-request-id"), "req_");
  snprintf(rid1, sizeof(rid1), "%.63s", hdr(&r, "x-request-id"));
  assert_string_equal(hdr(&r, "openai-version"), "2020-10-01");
  assert_true(atoi(hdr(&r, "openai-processing-ms")) >= 0);
  assert_string_equal(hdr(&r, "x-ratelimit-limit-requests"), "10000");
  assert_string_equal(hdr(&r, "x-ratelimit-remaining-requests"), "9999");
  assert_true(hdr(&r, "x-ratelimit-reset-requests")[0] >= '0');
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_id(str_at(a, "id"), "resp_");
  assert_string_equal(str_at(a, "object"), "response");
  assert_true(num_at(a, "created_at") > 1.6e9);
  assert_string_equal(str_at(a, "status"), "completed");
  assert_string_equal(str_at(a, "model"), "r1");
  assert_true(cJSON_IsNull(at(a, "error")));
  assert_true(cJSON_IsNull(at(a, "incomplete_details")));
  assert_true(cJSON_IsNull(at(a, "previous_response_id")));
  assert_int_equal(cJSON_GetArraySize(at(a, "output")), 1);
  assert_string_equal(str_at(a, "output.0.type"), "message");
  assert_id(str_at(a, "output.0.id"), "msg_");
  assert_string_equal(str_at(a, "output.0.status"), "completed");
  assert_string_equal(str_at(a, "output.0.role"), "assistant");
  assert_int_equal(cJSON_GetArraySize(at(a, "output.0.content")), 1);
  assert_string_equal(str_at(a, "output.0.content.0.type"), "output_text");
  assert_string_equal(str_at(a, "output.0.content.0.text"),
                      "Mock answer from r1 to: Hello world");
  assert_int_equal(cJSON_GetArraySize(at(a, "output.0.content.0.annotations")),
                   0);
  /* Not asked for: no logprobs member. */
  assert_null(at(a, "output.0.content.0.logprobs"));
  /* Echoed members, and the defaults of the others. */
  assert_string_equal(str_at(a, "instructions"), "Be brief");
  assert_true(fabs(num_at(a, "temperature") - 0.2) < 1e-12);
  assert_string_equal(str_at(a, "metadata.k"), "v");
  assert_string_equal(str_at(a, "tools.0.name"), "f");
  assert_true(num_at(a, "top_p") == 1);
  assert_string_equal(str_at(a, "tool_choice"), "auto");
  assert_true(cJSON_IsTrue(at(a, "store")));
  assert_true(cJSON_IsTrue(at(a, "parallel_tool_calls")));
  assert_string_equal(str_at(a, "truncation"), "disabled");
  assert_string_equal(str_at(a, "text.format.type"), "text");
  /* Prompt: "Be brief" (8) + "Hello world" (11) = 19 characters, / 4 -> 4
   * tokens; the answer is 7 words. */
  assert_int_equal((int)num_at(a, "usage.input_tokens"), 4);
  assert_int_equal((int)num_at(a, "usage.input_tokens_details.cached_tokens"),
                   0);
  assert_int_equal((int)num_at(a, "usage.output_tokens"), 7);
  assert_int_equal(
      (int)num_at(a, "usage.output_tokens_details.reasoning_tokens"), 0);
  assert_int_equal((int)num_at(a, "usage.total_tokens"), 11);
  cJSON_Delete(a);

  /* Input items: the last user message's parts are the prompt; every
   * message counts for the tokens: 3 + 5 + 5 + 11 = 24 -> 6. */
  assert_int_equal(
      responses(
          port,
          "{\"model\":\"r1\",\"input\":[{\"role\":\"system\",\"content\":"
          "\"sys\"},{\"role\":\"user\",\"content\":[{\"type\":\"input_text\","
          "\"text\":\"first\"}]},{\"role\":\"assistant\",\"content\":"
          "\"reply\"},{\"type\":\"message\",\"role\":\"user\",\"content\":"
          "[{\"type\":\"input_text\",\"text\":\"second \"},{\"type\":"
          "\"input_text\",\"text\":\"part\"}]}]}",
          &r),
      0);
  assert_int_equal(r.status, 200);
  assert_string_not_equal(hdr(&r, "x-request-id"), rid1);
  assert_string_equal(hdr(&r, "x-ratelimit-remaining-requests"), "9998");
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_string_equal(str_at(a, "output.0.content.0.text"),
                      "Mock answer from r1 to: second part");
  assert_int_equal((int)num_at(a, "usage.input_tokens"), 6);
  assert_true(cJSON_IsNull(at(a, "instructions")));
  assert_true(num_at(a, "temperature") == 1);
  cJSON_Delete(a);

  /* include message.output_text.logprobs: one entry per word, ln(0.95). */
  assert_int_equal(responses(port,
                             "{\"model\":\"r1\",\"input\":\"Hello world\","
                             "\"include\":[\"message.output_text.logprobs\"]}",
                             &r),
                   0);
  a = json_body(&r);
  mg_h_resp_free(&r);
  check_resp_logprobs(at(a, "output.0.content.0.logprobs"), 7, 0.95);
  assert_string_equal(str_at(a, "output.0.content.0.logprobs.0.token"), "Mock");
  cJSON_Delete(a);
  /* low_confidence lowers them to ln(0.3). */
  set_ok(port, "{\"model\":\"r1\",\"mode\":\"low_confidence\"}");
  assert_int_equal(responses(port,
                             "{\"model\":\"r1\",\"input\":\"Hello world\","
                             "\"include\":[\"message.output_text.logprobs\"]}",
                             &r),
                   0);
  assert_int_equal(r.status, 200);
  a = json_body(&r);
  mg_h_resp_free(&r);
  check_resp_logprobs(at(a, "output.0.content.0.logprobs"), 7, 0.3);
  cJSON_Delete(a);

  /* Usage options: OpenAI counts cached tokens inside input_tokens and
   * reasoning tokens inside output_tokens: 4 + 100, 7 + 5, 116 in all. */
  set_ok(port, "{\"model\":\"r1\",\"cache_read\":100,\"reasoning_tokens\":5}");
  assert_int_equal(responses(port,
                             "{\"model\":\"r1\",\"input\":\"Hello world\","
                             "\"instructions\":\"Be brief\"}",
                             &r),
                   0);
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_int_equal((int)num_at(a, "usage.input_tokens"), 104);
  assert_int_equal((int)num_at(a, "usage.input_tokens_details.cached_tokens"),
                   100);
  assert_int_equal((int)num_at(a, "usage.output_tokens"), 12);
  assert_int_equal(
      (int)num_at(a, "usage.output_tokens_details.reasoning_tokens"), 5);
  assert_int_equal((int)num_at(a, "usage.total_tokens"), 116);
  cJSON_Delete(a);
  /* Chat reports them too, only when set (the default shape is kept). */
  assert_int_equal(chat(port, "r1", "Hello world", "", &r), 0);
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_int_equal((int)num_at(a, "usage.prompt_tokens"), 2 + 100);
  assert_int_equal((int)num_at(a, "usage.prompt_tokens_details.cached_tokens"),
                   100);
  assert_int_equal((int)num_at(a, "usage.completion_tokens"), 7 + 5);
  assert_int_equal(
      (int)num_at(a, "usage.completion_tokens_details.reasoning_tokens"), 5);
  cJSON_Delete(a);

  /* Invalid requests: OpenAI's message, param and code. */
  assert_int_equal(responses(port, "{\"input\":\"x\"}", &r), 0);
  assert_int_equal(r.status, 400);
  assert_id(hdr(&r, "x-request-id"), "req_");
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_string_equal(str_at(a, "error.type"), "invalid_request_error");
  assert_string_equal(str_at(a, "error.param"), "model");
  assert_string_equal(str_at(a, "error.code"), "missing_required_parameter");
  cJSON_Delete(a);
  assert_int_equal(responses(port, "{\"model\":\"r1\",\"input\":5}", &r), 0);
  assert_int_equal(r.status, 400);
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_string_equal(str_at(a, "error.param"), "input");
  assert_string_equal(str_at(a, "error.code"), "invalid_type");
  cJSON_Delete(a);
  assert_int_equal(responses(port,
                             "{\"model\":\"r1\",\"input\":[{\"role\":\"robot\","
                             "\"content\":\"x\"}]}",
                             &r),
                   0);
  assert_int_equal(r.status, 400);
  assert_non_null(strstr(r.body, "robot"));
  mg_h_resp_free(&r);
  assert_int_equal(
      mg_h_request(port, "GET", "/v1/responses", NULL, NULL, &r, T_MS), 0);
  assert_int_equal(r.status, 405);
  mg_h_resp_free(&r);
}

/* POST a Responses request and return its id (into id). */
static void resp_create(int port, const char *body, char *id, size_t n,
                        cJSON **out) {
  struct mg_h_resp r;
  cJSON *a;
  assert_int_equal(responses(port, body, &r), 0);
  assert_int_equal(r.status, 200);
  a = json_body(&r);
  mg_h_resp_free(&r);
  snprintf(id, n, "%s", str_at(a, "id"));
  if (out)
    *out = a;
  else
    cJSON_Delete(a);
}

static cJSON *get_json(int port, const char *method, const char *path,
                       int want_status) {
  struct mg_h_resp r;
  cJSON *a;
  assert_int_equal(mg_h_request(port, method, path, NULL, NULL, &r, T_MS), 0);
  if (r.status != want_status)
    fail_msg("%s %s -> %d, want %d: %s", method, path, r.status, want_status,
             r.body);
  a = json_body(&r);
  mg_h_resp_free(&r);
  return a;
}

static void test_responses_store(void **state) {
  int port = port_of(state);
  struct mg_h_resp r;
  char a_id[64], b_id[64], path[256], *body;
  cJSON *a, *g;

  resp_create(port, "{\"model\":\"r\",\"input\":\"one\"}", a_id, sizeof(a_id),
              &a);
  /* GET gives back the very object POST answered. */
  snprintf(path, sizeof(path), "/v1/responses/%s", a_id);
  g = get_json(port, "GET", path, 200);
  assert_true(cJSON_Compare(a, g, 1));
  cJSON_Delete(g);
  cJSON_Delete(a);
  /* Its input items: the string input as one user message. */
  snprintf(path, sizeof(path), "/v1/responses/%s/input_items", a_id);
  g = get_json(port, "GET", path, 200);
  assert_string_equal(str_at(g, "object"), "list");
  assert_int_equal(cJSON_GetArraySize(at(g, "data")), 1);
  assert_string_equal(str_at(g, "data.0.type"), "message");
  assert_string_equal(str_at(g, "data.0.role"), "user");
  assert_string_equal(str_at(g, "data.0.content.0.type"), "input_text");
  assert_string_equal(str_at(g, "data.0.content.0.text"), "one");
  assert_id(str_at(g, "data.0.id"), "msg_");
  assert_string_equal(str_at(g, "first_id"), str_at(g, "data.0.id"));
  assert_string_equal(str_at(g, "last_id"), str_at(g, "data.0.id"));
  assert_true(cJSON_IsFalse(at(g, "has_more")));
  cJSON_Delete(g);

  /* A chain: the answer says which response it followed. */
  body = fmt("{\"model\":\"r\",\"input\":\"two\",\"previous_response_id\":"
             "\"%s\"}",
             a_id);
  resp_create(port, body, b_id, sizeof(b_id), &a);
  free(body);
  assert_string_not_equal(a_id, b_id);
  assert_string_equal(str_at(a, "previous_response_id"), a_id);
  {
    char *want = fmt("Mock answer from r to: two (after %s)", a_id);
    assert_string_equal(str_at(a, "output.0.content.0.text"), want);
    free(want);
  }
  cJSON_Delete(a);

  /* Three items: listed newest first by default; order, limit, after. */
  resp_create(
      port,
      "{\"model\":\"r\",\"input\":[{\"role\":\"user\",\"content\":"
      "\"i0\"},{\"role\":\"assistant\",\"content\":\"i1\"},{\"type\":"
      "\"function_call_output\",\"call_id\":\"c1\",\"output\":\"i2\"}]}",
      b_id, sizeof(b_id), NULL);
  snprintf(path, sizeof(path), "/v1/responses/%s/input_items", b_id);
  g = get_json(port, "GET", path, 200);
  assert_int_equal(cJSON_GetArraySize(at(g, "data")), 3);
  assert_string_equal(str_at(g, "data.0.type"), "function_call_output");
  assert_string_equal(str_at(g, "data.0.call_id"), "c1");
  assert_true(strlen(str_at(g, "data.0.id")) > 0);
  assert_string_equal(str_at(g, "data.1.content.0.type"), "output_text");
  assert_string_equal(str_at(g, "data.2.content.0.text"), "i0");
  cJSON_Delete(g);
  snprintf(path, sizeof(path), "/v1/responses/%s/input_items?order=asc&limit=2",
           b_id);
  g = get_json(port, "GET", path, 200);
  assert_int_equal(cJSON_GetArraySize(at(g, "data")), 2);
  assert_string_equal(str_at(g, "data.0.content.0.text"), "i0");
  assert_true(cJSON_IsTrue(at(g, "has_more")));
  {
    char last[64];
    snprintf(last, sizeof(last), "%s", str_at(g, "last_id"));
    cJSON_Delete(g);
    snprintf(path, sizeof(path),
             "/v1/responses/%s/input_items?order=asc&after=%s", b_id, last);
  }
  g = get_json(port, "GET", path, 200);
  assert_int_equal(cJSON_GetArraySize(at(g, "data")), 1);
  assert_string_equal(str_at(g, "data.0.type"), "function_call_output");
  assert_true(cJSON_IsFalse(at(g, "has_more")));
  cJSON_Delete(g);
  snprintf(path, sizeof(path), "/v1/responses/%s/input_items?order=up", b_id);
  cJSON_Delete(get_json(port, "GET", path, 400));

  /* An unknown previous_response_id: OpenAI's 400. */
  assert_int_equal(
      responses(port,
                "{\"model\":\"r\",\"input\":\"x\",\"previous_response_id\":"
                "\"resp_nope\"}",
                &r),
      0);
  assert_int_equal(r.status, 400);
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_string_equal(str_at(a, "error.type"), "invalid_request_error");
  assert_string_equal(str_at(a, "error.param"), "previous_response_id");
  assert_string_equal(str_at(a, "error.code"), "previous_response_not_found");
  assert_string_equal(str_at(a, "error.message"),
                      "Previous response with id 'resp_nope' not found.");
  cJSON_Delete(a);

  /* DELETE, then the id is gone for GET, DELETE and chains. */
  snprintf(path, sizeof(path), "/v1/responses/%s", a_id);
  g = get_json(port, "DELETE", path, 200);
  assert_string_equal(str_at(g, "id"), a_id);
  assert_string_equal(str_at(g, "object"), "response");
  assert_true(cJSON_IsTrue(at(g, "deleted")));
  cJSON_Delete(g);
  g = get_json(port, "GET", path, 404);
  assert_string_equal(str_at(g, "error.type"), "invalid_request_error");
  assert_non_null(strstr(str_at(g, "error.message"), a_id));
  cJSON_Delete(g);
  cJSON_Delete(get_json(port, "DELETE", path, 404));
  snprintf(path, sizeof(path), "/v1/responses/%s/input_items", a_id);
  cJSON_Delete(get_json(port, "GET", path, 404));
  body = fmt("{\"model\":\"r\",\"input\":\"x\",\"previous_response_id\":"
             "\"%s\"}",
             a_id);
  assert_int_equal(responses(port, body, &r), 0);
  free(body);
  assert_int_equal(r.status, 400);
  mg_h_resp_free(&r);
  /* Methods and paths. */
  snprintf(path, sizeof(path), "/v1/responses/%s", b_id);
  cJSON_Delete(get_json(port, "POST", path, 405));
  snprintf(path, sizeof(path), "/v1/responses/%s/other", b_id);
  cJSON_Delete(get_json(port, "GET", path, 404));

  /* store: false is not kept. */
  resp_create(port, "{\"model\":\"r\",\"input\":\"x\",\"store\":false}", a_id,
              sizeof(a_id), &a);
  assert_true(cJSON_IsFalse(at(a, "store")));
  cJSON_Delete(a);
  snprintf(path, sizeof(path), "/v1/responses/%s", a_id);
  cJSON_Delete(get_json(port, "GET", path, 404));

  /* Retrievals count under the stored response's model, per endpoint. */
  {
    char *s = mg_h_mock_stats(port);
    /* GET: 200, then 404 after the delete, and for the unstored one. */
    assert_int_equal((int)mg_h_json_num(s, "/by_endpoint/responses.get", -1),
                     3);
    assert_int_equal((int)mg_h_json_num(s, "/by_endpoint/responses.other", -1),
                     1);
    assert_int_equal((int)mg_h_json_num(s, "/by_endpoint/responses.delete", -1),
                     2);
    assert_int_equal(
        (int)mg_h_json_num(s, "/by_endpoint/responses.input_items", -1), 6);
    assert_int_equal((int)mg_h_json_num(s, "/responses_stored", -1), 2);
    free(s);
  }
}

static void test_responses_store_bound(void **state) {
  struct mg_h_proc p;
  const char *const args[] = {"--store-max", "3", NULL};
  char ids[4][64], path[256];
  int i;
  (void)state;

  memset(&p, 0, sizeof(p));
  assert_int_equal(mg_h_start_mock_args(&p, args), 0);
  for (i = 0; i < 4; i++)
    resp_create(p.port, "{\"model\":\"r\",\"input\":\"x\"}", ids[i],
                sizeof(ids[i]), NULL);
  /* The oldest went first. */
  snprintf(path, sizeof(path), "/v1/responses/%s", ids[0]);
  cJSON_Delete(get_json(p.port, "GET", path, 404));
  for (i = 1; i < 4; i++) {
    snprintf(path, sizeof(path), "/v1/responses/%s", ids[i]);
    cJSON_Delete(get_json(p.port, "GET", path, 200));
  }
  assert_int_equal((int)stat_num(p.port, "/responses_stored"), 3);
  assert_int_equal(mg_h_stop(&p, SIGTERM, T_MS), 0);
}

static void test_responses_stream(void **state) {
  int port = port_of(state);
  static const char *const types[] = {
      "response.created",           "response.in_progress",
      "response.output_item.added", "response.content_part.added",
      "response.output_text.delta", "response.output_text.delta",
      "response.output_text.delta", "response.output_text.delta",
      "response.output_text.delta", "response.output_text.done",
      "response.content_part.done", "response.output_item.done",
      "response.completed"};
  struct mg_h_resp r;
  struct tevents ev;
  char text[512] = "", path[256], id[64], item[64];
  int lps = 0;
  size_t i;
  cJSON *e, *done = NULL;

  assert_int_equal(responses(port,
                             "{\"model\":\"rs\",\"input\":\"tell me a story\","
                             "\"stream\":true,\"include\":"
                             "[\"message.output_text.logprobs\"]}",
                             &r),
                   0);
  assert_int_equal(r.status, 200);
  assert_true(r.chunked);
  assert_true(r.complete);
  assert_string_equal(hdr(&r, "content-type"), "text/event-stream");
  assert_id(hdr(&r, "x-request-id"), "req_");
  tevents_parse(r.body, &ev);
  mg_h_resp_free(&r);
  assert_int_equal(ev.n, 13);
  for (i = 0; i < ev.n; i++) {
    assert_string_equal(ev.type[i], types[i]);
    e = tevent(&ev, i);
    assert_int_equal((int)num_at(e, "sequence_number"), (int)i);
    if (i == 0) {
      assert_id(str_at(e, "response.id"), "resp_");
      snprintf(id, sizeof(id), "%s", str_at(e, "response.id"));
      assert_string_equal(str_at(e, "response.status"), "in_progress");
      assert_int_equal(cJSON_GetArraySize(at(e, "response.output")), 0);
      assert_true(cJSON_IsNull(at(e, "response.usage")));
    } else if (i == 1) {
      assert_string_equal(str_at(e, "response.id"), id);
    } else if (i == 2) {
      snprintf(item, sizeof(item), "%s", str_at(e, "item.id"));
      assert_string_equal(str_at(e, "item.status"), "in_progress");
      assert_int_equal(cJSON_GetArraySize(at(e, "item.content")), 0);
      assert_int_equal((int)num_at(e, "output_index"), 0);
    } else if (i == 3) {
      assert_string_equal(str_at(e, "item_id"), item);
      assert_string_equal(str_at(e, "part.text"), "");
    } else if (i < 9) {
      assert_string_equal(str_at(e, "item_id"), item);
      assert_int_equal((int)num_at(e, "content_index"), 0);
      strcat(text, str_at(e, "delta"));
      check_resp_logprobs(at(e, "logprobs"),
                          cJSON_GetArraySize(at(e, "logprobs")), 0.95);
      lps += cJSON_GetArraySize(at(e, "logprobs"));
    } else if (i == 9) {
      assert_string_equal(str_at(e, "text"), text);
      check_resp_logprobs(at(e, "logprobs"), 9, 0.95);
    } else if (i == 10) {
      assert_string_equal(str_at(e, "part.text"), text);
    } else if (i == 11) {
      assert_string_equal(str_at(e, "item.status"), "completed");
      assert_string_equal(str_at(e, "item.content.0.text"), text);
    } else {
      done = cJSON_Duplicate(at(e, "response"), 1);
    }
    cJSON_Delete(e);
  }
  tevents_free(&ev);
  assert_string_equal(text, "Mock answer from rs to: tell me a story");
  assert_int_equal(lps, 9); /* one logprob per word, across the deltas */
  assert_string_equal(str_at(done, "id"), id);
  assert_string_equal(str_at(done, "status"), "completed");
  assert_string_equal(str_at(done, "output.0.id"), item);
  assert_string_equal(str_at(done, "output.0.content.0.text"), text);
  /* "tell me a story": 15 characters -> 3 tokens; 9 words. */
  assert_int_equal((int)num_at(done, "usage.input_tokens"), 3);
  assert_int_equal((int)num_at(done, "usage.output_tokens"), 9);
  /* The completed response is what GET gives afterwards. */
  snprintf(path, sizeof(path), "/v1/responses/%s", id);
  e = get_json(port, "GET", path, 200);
  assert_true(cJSON_Compare(e, done, 1));
  cJSON_Delete(e);
  cJSON_Delete(done);

  /* chunks sets the number of deltas; without include, no logprobs; big
   * padded deltas with chunk_bytes. */
  set_ok(port, "{\"model\":\"rs\",\"chunks\":2,\"chunk_bytes\":2000}");
  assert_int_equal(responses(port,
                             "{\"model\":\"rs\",\"input\":\"x\",\"stream\":"
                             "true}",
                             &r),
                   0);
  tevents_parse(r.body, &ev);
  mg_h_resp_free(&r);
  assert_int_equal(ev.n, 10);
  for (i = 4; i < 6; i++) {
    e = tevent(&ev, i);
    assert_string_equal(ev.type[i], "response.output_text.delta");
    assert_true(strlen(str_at(e, "delta")) >= 2000);
    assert_null(at(e, "logprobs"));
    cJSON_Delete(e);
  }
  tevents_free(&ev);

  /* stream_die: die_after events, then a reset; never completed, so not
   * kept either. */
  set_ok(port, "{\"model\":\"rs\",\"mode\":\"stream_die\",\"die_after\":5}");
  assert_int_not_equal(responses(port,
                                 "{\"model\":\"rs\",\"input\":\"x\","
                                 "\"stream\":true}",
                                 &r),
                       0);
  assert_int_equal(r.status, 200);
  assert_false(r.complete);
  assert_true(r.closed);
  tevents_parse(r.body, &ev);
  mg_h_resp_free(&r);
  assert_int_equal(ev.n, 5);
  assert_string_equal(ev.type[4], "response.output_text.delta");
  e = tevent(&ev, 0);
  snprintf(path, sizeof(path), "/v1/responses/%s", str_at(e, "response.id"));
  cJSON_Delete(e);
  tevents_free(&ev);
  cJSON_Delete(get_json(port, "GET", path, 404));
  assert_int_equal((int)stat_num(port, "/streams_died"), 1);
  assert_int_equal((int)stat_num(port, "/streams_completed"), 2);
}

/* ---- Anthropic Messages ------------------------------------------------- */

/* System 13 characters ("You are terse"), messages 5 + 2 + 11 ("Hello",
 * "Hi", "How are you"): 31 / 4 -> 7 input tokens; the answer "Mock answer
 * from claude-x to: How are you" is 8 words. */
#define MSG_BODY_TAIL                                                          \
  "\"system\":[{\"type\":\"text\",\"text\":\"You are terse\"}],"               \
  "\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"},{\"role\":"         \
  "\"assistant\",\"content\":\"Hi\"},{\"role\":\"user\",\"content\":"          \
  "[{\"type\":\"text\",\"text\":\"How are \"},{\"type\":\"text\",\"text\":"    \
  "\"you\"}]}]}"
#define MSG_BODY "{\"model\":\"claude-x\",\"max_tokens\":100," MSG_BODY_TAIL

static void check_anthropic_error(const struct mg_h_resp *r, int status,
                                  const char *type) {
  cJSON *a;
  assert_int_equal(r->status, status);
  a = json_body(r);
  assert_string_equal(str_at(a, "type"), "error");
  assert_string_equal(str_at(a, "error.type"), type);
  assert_true(strlen(str_at(a, "error.message")) > 0);
  /* The body's request_id is the request-id header. */
  assert_id(str_at(a, "request_id"), "req_");
  assert_string_equal(str_at(a, "request_id"), hdr(r, "request-id"));
  cJSON_Delete(a);
}

static void test_messages(void **state) {
  int port = port_of(state);
  struct mg_h_resp r;
  char v[256], *s;
  cJSON *a;

  /* The headers Anthropic requires. */
  assert_int_equal(mg_h_request(port, "POST", "/v1/messages",
                                "anthropic-version: 2023-06-01\r\n", MSG_BODY,
                                &r, T_MS),
                   0);
  check_anthropic_error(&r, 401, "authentication_error");
  assert_non_null(strstr(r.body, "x-api-key"));
  mg_h_resp_free(&r);
  assert_string_equal(mg_h_json_str(s = mg_h_mock_stats(port),
                                    "/anthropic/x-api-key", v, sizeof(v)),
                      "null");
  free(s);
  assert_int_equal(mg_h_request(port, "POST", "/v1/messages",
                                "x-api-key: k\r\n", MSG_BODY, &r, T_MS),
                   0);
  check_anthropic_error(&r, 400, "invalid_request_error");
  assert_non_null(strstr(r.body, "anthropic-version"));
  mg_h_resp_free(&r);
  /* Authorization: Bearer is a key too (what @anthropic-ai/sdk 1.x
   * sends); the stats tell the two apart. */
  assert_int_equal(mg_h_request(port, "POST", "/v1/messages",
                                "Authorization: Bearer tok\r\n"
                                "anthropic-version: 2023-06-01\r\n",
                                MSG_BODY, &r, T_MS),
                   0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  s = mg_h_mock_stats(port);
  assert_string_equal(mg_h_json_str(s, "/anthropic/x-api-key", v, sizeof(v)),
                      "null");
  assert_string_equal(
      mg_h_json_str(s, "/anthropic/authorization", v, sizeof(v)), "Bearer tok");
  free(s);
  assert_int_equal(mg_h_request(port, "POST", "/v1/messages",
                                "Authorization: Basic eA==\r\n"
                                "anthropic-version: 2023-06-01\r\n",
                                MSG_BODY, &r, T_MS),
                   0);
  check_anthropic_error(&r, 401, "authentication_error");
  mg_h_resp_free(&r);
  /* Refusals are not valid requests of the model; all were received. */
  assert_int_equal((int)stat_num(port, "/by_model/claude-x"), 1);
  assert_int_equal((int)stat_num(port, "/received_by_model/claude-x"), 4);

  assert_int_equal(mg_h_request(port, "POST", "/v1/messages",
                                ANTHROPIC_HEADERS
                                "anthropic-beta: prompt-caching-2024-07-31\r\n",
                                MSG_BODY, &r, T_MS),
                   0);
  assert_int_equal(r.status, 200);
  assert_id(hdr(&r, "request-id"), "req_");
  assert_string_equal(hdr(&r, "anthropic-ratelimit-requests-limit"), "10000");
  assert_true(atoi(hdr(&r, "anthropic-ratelimit-requests-remaining")) > 0);
  assert_non_null(strchr(hdr(&r, "anthropic-ratelimit-requests-reset"), 'T'));
  assert_null(mg_h_header(&r, "x-request-id", v, sizeof(v)));
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_id(str_at(a, "id"), "msg_");
  assert_string_equal(str_at(a, "type"), "message");
  assert_string_equal(str_at(a, "role"), "assistant");
  assert_string_equal(str_at(a, "model"), "claude-x");
  assert_int_equal(cJSON_GetArraySize(at(a, "content")), 1);
  assert_string_equal(str_at(a, "content.0.type"), "text");
  assert_string_equal(str_at(a, "content.0.text"),
                      "Mock answer from claude-x to: How are you");
  assert_string_equal(str_at(a, "stop_reason"), "end_turn");
  assert_true(cJSON_IsNull(at(a, "stop_sequence")));
  assert_int_equal((int)num_at(a, "usage.input_tokens"), 7);
  assert_int_equal((int)num_at(a, "usage.output_tokens"), 8);
  assert_int_equal((int)num_at(a, "usage.cache_creation_input_tokens"), 0);
  assert_int_equal((int)num_at(a, "usage.cache_read_input_tokens"), 0);
  cJSON_Delete(a);
  /* What came in, for tests of what the proxy sends. */
  s = mg_h_mock_stats(port);
  assert_string_equal(mg_h_json_str(s, "/anthropic/x-api-key", v, sizeof(v)),
                      "sk-ant-test");
  assert_string_equal(
      mg_h_json_str(s, "/anthropic/anthropic-version", v, sizeof(v)),
      "2023-06-01");
  assert_string_equal(
      mg_h_json_str(s, "/anthropic/anthropic-beta", v, sizeof(v)),
      "prompt-caching-2024-07-31");
  assert_string_equal(
      mg_h_json_str(s, "/last/claude-x/headers/x-api-key", v, sizeof(v)),
      "sk-ant-test");
  assert_string_equal(mg_h_json_str(s, "/last/claude-x/path", v, sizeof(v)),
                      "/v1/messages");
  assert_int_equal((int)mg_h_json_num(s, "/by_model/claude-x", -1), 2);
  free(s);

  /* Cache tokens from the behaviour; Anthropic's input_tokens excludes
   * them. A string system prompt counts the same. */
  set_ok(port, "{\"model\":\"claude-x\",\"cache_read\":1200,"
               "\"cache_write\":300}");
  assert_int_equal(
      messages(port,
               "{\"model\":\"claude-x\",\"max_tokens\":5,\"system\":\"You "
               "are terse\",\"messages\":[{\"role\":\"user\",\"content\":"
               "\"Hello\"},{\"role\":\"assistant\",\"content\":\"Hi\"},"
               "{\"role\":\"user\",\"content\":\"How are you\"}]}",
               &r),
      0);
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_int_equal((int)num_at(a, "usage.input_tokens"), 7);
  assert_int_equal((int)num_at(a, "usage.cache_read_input_tokens"), 1200);
  assert_int_equal((int)num_at(a, "usage.cache_creation_input_tokens"), 300);
  cJSON_Delete(a);

  /* count_tokens: the input tokens of the same request. */
  assert_int_equal(
      mg_h_request(port, "POST", "/v1/messages/count_tokens", ANTHROPIC_HEADERS,
                   "{\"model\":\"claude-x\"," MSG_BODY_TAIL, &r, T_MS),
      0);
  assert_int_equal(r.status, 200);
  assert_id(hdr(&r, "request-id"), "req_");
  assert_string_equal(r.body, "{\"input_tokens\":7}");
  mg_h_resp_free(&r);
  assert_int_equal(mg_h_request(port, "POST", "/v1/messages/count_tokens",
                                "anthropic-version: 2023-06-01\r\n",
                                "{\"model\":\"claude-x\"," MSG_BODY_TAIL, &r,
                                T_MS),
                   0);
  check_anthropic_error(&r, 401, "authentication_error");
  mg_h_resp_free(&r);

  /* Invalid bodies in Anthropic's words and shape. */
  assert_int_equal(messages(port, "{\"model\":\"claude-x\"," MSG_BODY_TAIL, &r),
                   0);
  check_anthropic_error(&r, 400, "invalid_request_error");
  assert_non_null(strstr(r.body, "max_tokens"));
  mg_h_resp_free(&r);
  assert_int_equal(
      messages(port, "{\"model\":\"claude-x\",\"max_tokens\":5}", &r), 0);
  check_anthropic_error(&r, 400, "invalid_request_error");
  assert_non_null(strstr(r.body, "messages"));
  mg_h_resp_free(&r);
  assert_int_equal(messages(port,
                            "{\"model\":\"claude-x\",\"max_tokens\":5,"
                            "\"messages\":[{\"role\":\"system\",\"content\":"
                            "\"x\"}]}",
                            &r),
                   0);
  check_anthropic_error(&r, 400, "invalid_request_error");
  mg_h_resp_free(&r);
  assert_int_equal(messages(port, "{\"model\":", &r), 0);
  check_anthropic_error(&r, 400, "invalid_request_error");
  mg_h_resp_free(&r);
  assert_int_equal(mg_h_request(port, "GET", "/v1/messages", ANTHROPIC_HEADERS,
                                NULL, &r, T_MS),
                   0);
  check_anthropic_error(&r, 405, "invalid_request_error");
  mg_h_resp_free(&r);
}

static void test_messages_stream(void **state) {
  int port = port_of(state);
  static const char *const types[] = {
      "message_start",       "content_block_start", "ping",
      "content_block_delta", "content_block_delta", "content_block_delta",
      "content_block_delta", "content_block_delta", "content_block_stop",
      "message_delta",       "message_stop"};
  struct mg_h_resp r;
  struct tevents ev;
  char text[512] = "";
  size_t i;
  cJSON *e;

  set_ok(port, "{\"model\":\"claude-x\",\"cache_read\":40}");
  assert_int_equal(messages(port,
                            "{\"model\":\"claude-x\",\"max_tokens\":100,"
                            "\"stream\":true," MSG_BODY_TAIL,
                            &r),
                   0);
  assert_int_equal(r.status, 200);
  assert_true(r.chunked);
  assert_true(r.complete);
  assert_string_equal(hdr(&r, "content-type"), "text/event-stream");
  assert_id(hdr(&r, "request-id"), "req_");
  tevents_parse(r.body, &ev);
  mg_h_resp_free(&r);
  assert_int_equal(ev.n, 11);
  for (i = 0; i < ev.n; i++) {
    assert_string_equal(ev.type[i], types[i]);
    e = tevent(&ev, i);
    if (i == 0) {
      assert_id(str_at(e, "message.id"), "msg_");
      assert_string_equal(str_at(e, "message.type"), "message");
      assert_string_equal(str_at(e, "message.role"), "assistant");
      assert_string_equal(str_at(e, "message.model"), "claude-x");
      assert_int_equal(cJSON_GetArraySize(at(e, "message.content")), 0);
      assert_true(cJSON_IsNull(at(e, "message.stop_reason")));
      assert_int_equal((int)num_at(e, "message.usage.input_tokens"), 7);
      assert_int_equal((int)num_at(e, "message.usage.cache_read_input_tokens"),
                       40);
    } else if (i == 1) {
      assert_int_equal((int)num_at(e, "index"), 0);
      assert_string_equal(str_at(e, "content_block.type"), "text");
      assert_string_equal(str_at(e, "content_block.text"), "");
    } else if (i >= 3 && i < 8) {
      assert_int_equal((int)num_at(e, "index"), 0);
      assert_string_equal(str_at(e, "delta.type"), "text_delta");
      strcat(text, str_at(e, "delta.text"));
    } else if (i == 8) {
      assert_int_equal((int)num_at(e, "index"), 0);
    } else if (i == 9) {
      assert_string_equal(str_at(e, "delta.stop_reason"), "end_turn");
      assert_true(cJSON_IsNull(at(e, "delta.stop_sequence")));
      assert_int_equal((int)num_at(e, "usage.output_tokens"), 8);
    }
    cJSON_Delete(e);
  }
  tevents_free(&ev);
  assert_string_equal(text, "Mock answer from claude-x to: How are you");

  /* stream_die: the first die_after events, then a reset. */
  set_ok(port, "{\"model\":\"claude-x\",\"mode\":\"stream_die\","
               "\"die_after\":4}");
  assert_int_not_equal(messages(port,
                                "{\"model\":\"claude-x\",\"max_tokens\":100,"
                                "\"stream\":true," MSG_BODY_TAIL,
                                &r),
                       0);
  assert_int_equal(r.status, 200);
  assert_false(r.complete);
  assert_true(r.closed);
  tevents_parse(r.body, &ev);
  mg_h_resp_free(&r);
  assert_int_equal(ev.n, 4);
  assert_string_equal(ev.type[3], "content_block_delta");
  tevents_free(&ev);
  assert_int_equal((int)stat_num(port, "/streams_died"), 1);
  assert_int_equal((int)stat_num(port, "/streams_completed"), 1);
}

/* ---- faults in each family's shapes ------------------------------------ */

/* One request of each typed API for model m, "stream" or not. */
static int typed(int port, bool anthropic, const char *m, bool stream,
                 struct mg_h_resp *r) {
  char *body = anthropic
                   ? fmt("{\"model\":\"%s\",\"max_tokens\":9,\"stream\":%s,"
                         "\"messages\":[{\"role\":\"user\",\"content\":"
                         "\"hi\"}]}",
                         m, stream ? "true" : "false")
                   : fmt("{\"model\":\"%s\",\"input\":\"hi\",\"stream\":%s}", m,
                         stream ? "true" : "false");
  int rc = anthropic ? messages(port, body, r) : responses(port, body, r);
  free(body);
  return rc;
}

static void test_faults_typed_apis(void **state) {
  int port = port_of(state), fam;
  struct mg_h_resp r;
  cJSON *a;

  for (fam = 0; fam < 2; fam++) {
    bool anth = fam == 1;
    const char *m = anth ? "fa" : "fr";
    char *b;

    /* status: each family's error shape; Retry-After in any mode. */
    b = fmt("{\"model\":\"%s\",\"mode\":\"status\",\"status\":429,"
            "\"retry_after\":3}",
            m);
    set_ok(port, b);
    free(b);
    assert_int_equal(typed(port, anth, m, false, &r), 0);
    assert_string_equal(hdr(&r, "retry-after"), "3");
    if (anth) {
      check_anthropic_error(&r, 429, "rate_limit_error");
    } else {
      assert_int_equal(r.status, 429);
      assert_id(hdr(&r, "x-request-id"), "req_");
      a = json_body(&r);
      assert_string_equal(str_at(a, "error.type"), "server_error");
      cJSON_Delete(a);
    }
    mg_h_resp_free(&r);
    /* ... for streams too (no stream starts). */
    assert_int_equal(typed(port, anth, m, true, &r), 0);
    assert_int_equal(r.status, 429);
    assert_false(r.chunked);
    mg_h_resp_free(&r);

    /* garbage: 200, not JSON. */
    b = fmt("{\"model\":\"%s\",\"mode\":\"garbage\"}", m);
    set_ok(port, b);
    free(b);
    assert_int_equal(typed(port, anth, m, false, &r), 0);
    assert_int_equal(r.status, 200);
    assert_null(cJSON_Parse(r.body));
    assert_non_null(strstr(r.body, anth ? "msg_garbage" : "resp_garbage"));
    mg_h_resp_free(&r);

    /* truncate: about half of the announced body, then FIN. */
    b = fmt("{\"model\":\"%s\",\"mode\":\"truncate\"}", m);
    set_ok(port, b);
    free(b);
    assert_int_equal(typed(port, anth, m, false, &r), -1);
    assert_int_equal(r.status, 200);
    assert_false(r.complete);
    assert_true(r.closed);
    assert_true(r.body_len > 0 &&
                r.body_len < (size_t)atoi(hdr(&r, "content-length")));
    mg_h_resp_free(&r);

    /* reset, hang. */
    b = fmt("{\"model\":\"%s\",\"mode\":\"reset\"}", m);
    set_ok(port, b);
    free(b);
    assert_int_equal(typed(port, anth, m, false, &r), -1);
    assert_int_equal(r.status, 0);
    assert_true(r.closed);
    mg_h_resp_free(&r);
    b = fmt("{\"model\":\"%s\",\"mode\":\"hang\"}", m);
    set_ok(port, b);
    free(b);
    {
      int fd = mg_h_connect(port);
      char *body = fmt("{\"model\":\"%s\",\"max_tokens\":1,\"messages\":[{"
                       "\"role\":\"user\",\"content\":\"x\"}],\"input\":\"x\"}",
                       m);
      char *req = fmt("POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %zu"
                      "\r\n\r\n%s",
                      anth ? "/v1/messages" : "/v1/responses",
                      anth ? ANTHROPIC_HEADERS : "", strlen(body), body);
      assert_true(fd >= 0);
      assert_int_equal(mg_h_sends(fd, req), 0);
      assert_int_equal(mg_h_read_response(fd, &r, 300), -1);
      assert_int_equal(r.status, 0);
      assert_false(r.closed);
      mg_h_resp_free(&r);
      free(body);
      free(req);
      close(fd);
    }

    /* slow; retry-after-ms; content; x-confidence; queued times. */
    b = fmt("[{\"model\":\"%s\",\"mode\":\"slow\",\"ms\":200,"
            "\"retry_after\":1.5,\"retry_after_format\":\"ms\","
            "\"header_confidence\":0.25,\"content\":\"forty two\"},"
            "{\"model\":\"%s\",\"mode\":\"status\",\"status\":%d,"
            "\"times\":1}]",
            m, m, anth ? 529 : 503);
    set_ok(port, b);
    free(b);
    assert_int_equal(typed(port, anth, m, false, &r), 0);
    assert_int_equal(r.status, anth ? 529 : 503);
    if (anth)
      check_anthropic_error(&r, 529, "overloaded_error");
    mg_h_resp_free(&r);
    assert_int_equal(typed(port, anth, m, false, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(r.ms >= 190);
    assert_string_equal(hdr(&r, "retry-after-ms"), "1500");
    assert_string_equal(hdr(&r, "x-confidence"), "0.25");
    a = json_body(&r);
    assert_string_equal(
        str_at(a, anth ? "content.0.text" : "output.0.content.0.text"),
        "forty two");
    assert_int_equal((int)num_at(a, "usage.output_tokens"), 2);
    cJSON_Delete(a);
    mg_h_resp_free(&r);

    /* A custom body as it is; 500 and 503 are api_error for Anthropic;
     * retry-after as an HTTP date. */
    b = fmt("[{\"model\":\"%s\",\"mode\":\"status\",\"status\":400,"
            "\"body\":{\"x\":1},\"times\":1},{\"model\":\"%s\",\"mode\":"
            "\"status\",\"status\":503,\"retry_after\":2,"
            "\"retry_after_format\":\"date\",\"times\":1}]",
            m, m);
    set_ok(port, b);
    free(b);
    assert_int_equal(typed(port, anth, m, false, &r), 0);
    assert_int_equal(r.status, 400);
    assert_string_equal(r.body, "{\"x\":1}");
    mg_h_resp_free(&r);
    assert_int_equal(typed(port, anth, m, false, &r), 0);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(hdr(&r, "retry-after"), " GMT"));
    if (anth)
      check_anthropic_error(&r, 503, "api_error");
    mg_h_resp_free(&r);
  }
}

/* ---- hardening: one send per attempt (issue 10.1) ---------------------- */

static void test_close_mode(void **state) {
  int port = port_of(state), fd, how;
  char buf[256];
  struct mg_h_resp r;

  set_ok(port, "{\"model\":\"c\",\"mode\":\"close\"}");
  fd = mg_h_connect(port);
  assert_true(fd >= 0);
  send_post(fd, "/v1/chat/completions",
            "{\"model\":\"c\",\"messages\":[{\"content\":\"x\"}]}");
  /* A clean FIN and not a byte of answer. */
  assert_int_equal(read_to_close(fd, buf, sizeof(buf), T_MS, &how), 0);
  assert_int_equal(how, 0);
  close(fd);
  /* The request was read whole and counted. */
  assert_int_equal((int)stat_num(port, "/requests_received"), 1);
  assert_int_equal((int)stat_num(port, "/bodies_read"), 1);
  assert_int_equal((int)stat_num(port, "/by_model/c"), 1);
  /* The typed APIs too. */
  assert_int_equal(responses(port, "{\"model\":\"c\",\"input\":\"x\"}", &r),
                   -1);
  assert_int_equal(r.status, 0);
  assert_true(r.closed);
  assert_int_equal(r.body_len, 0);
  mg_h_resp_free(&r);
  assert_int_equal(
      messages(port,
               "{\"model\":\"c\",\"max_tokens\":1,\"messages\":[{\"role\":"
               "\"user\",\"content\":\"x\"}]}",
               &r),
      -1);
  assert_int_equal(r.status, 0);
  mg_h_resp_free(&r);
  assert_int_equal((int)stat_num(port, "/by_model/c"), 3);
  /* reset, in contrast, is an RST after reading. */
  set_ok(port, "{\"model\":\"c\",\"mode\":\"reset\"}");
  fd = mg_h_connect(port);
  send_post(fd, "/v1/chat/completions", "{\"model\":\"c\",\"messages\":[]}");
  assert_int_equal(read_to_close(fd, buf, sizeof(buf), T_MS, &how), 0);
  assert_int_equal(how, 1);
  close(fd);
  assert_int_equal((int)stat_num(port, "/bodies_read"), 4);
}

static void test_close_idle(void **state) {
  int port = port_of(state), fd;
  struct mg_h_resp r;
  double t0;
  static const char body[] = "{\"model\":\"i\",\"messages\":[]}";
  char *req = fmt("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  "Content-Length: %zu\r\n\r\n%s",
                  strlen(body), body);
  size_t half = strlen(req) / 2;

  set_ok(port, "{\"model\":\"i\",\"close_idle_ms\":300}");
  fd = mg_h_connect(port);
  assert_true(fd >= 0);
  assert_int_equal(mg_h_sends(fd, req), 0);
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  assert_int_equal(r.status, 200);
  assert_false(r.closed); /* announced as kept */
  mg_h_resp_free(&r);
  /* The next request in time is served (and the timer starts again). */
  mg_h_sleep_ms(100);
  assert_int_equal(mg_h_sends(fd, req), 0);
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  t0 = mg_h_now_ms();
  /* Then nothing: closed (FIN) once 300 ms have passed. */
  assert_true(mg_h_wait_closed(fd, T_MS));
  assert_true(mg_h_now_ms() - t0 >= 250);
  close(fd);
  assert_int_equal((int)stat_num(port, "/idle_closes"), 1);

  /* Half a request is a request arriving: the connection is kept. */
  fd = mg_h_connect(port);
  assert_int_equal(mg_h_sends(fd, req), 0);
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  mg_h_resp_free(&r);
  assert_int_equal(mg_h_send(fd, req, half), 0);
  assert_false(mg_h_wait_closed(fd, 700));
  assert_int_equal(mg_h_sends(fd, req + half), 0);
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  close(fd);
  /* Without the option, an idle kept connection stays open. */
  set_ok(port, "{\"model\":\"i\"}");
  fd = mg_h_connect(port);
  assert_int_equal(mg_h_sends(fd, req), 0);
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  mg_h_resp_free(&r);
  assert_false(mg_h_wait_closed(fd, 600));
  close(fd);
  free(req);
  assert_int_equal((int)stat_num(port, "/idle_closes"), 1);
}

static void test_raw(void **state) {
  int port = port_of(state), fd, how;
  char buf[512];
  struct mg_h_resp r;
  static const char status600[] = "HTTP/1.1 600 Weird\r\nContent-Length: 2"
                                  "\r\n\r\nhi";
  static const char nocontent[] = "HTTP/1.1 204 No Content\r\n"
                                  "Content-Length: 5\r\n\r\nhello";
  static const char headonly[] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n"
                                 "\r\n";

  /* The bytes exactly (CR LF through JSON escapes), then FIN. */
  set_ok(port, "{\"model\":\"w\",\"mode\":\"raw\",\"raw\":\"HTTP/1.1 600 "
               "Weird\\r\\nContent-Length: 2\\r\\n\\r\\nhi\"}");
  fd = mg_h_connect(port);
  send_post(fd, "/v1/chat/completions", "{\"model\":\"w\",\"messages\":[]}");
  assert_int_equal(read_to_close(fd, buf, sizeof(buf), T_MS, &how),
                   strlen(status600));
  assert_string_equal(buf, status600);
  assert_int_equal(how, 0);
  close(fd);

  /* then: keep: the next request on the connection is read and answered. */
  set_ok(port, "[{\"model\":\"w\",\"mode\":\"raw\",\"then\":\"keep\","
               "\"raw\":\"HTTP/1.1 204 No Content\\r\\nContent-Length: 5\\r\\n"
               "\\r\\nhello\",\"times\":1},{\"model\":\"w\",\"mode\":\"raw\","
               "\"raw\":\"HTTP/1.1 200 OK\\r\\nContent-Length: 100\\r\\n\\r\\n"
               "\",\"times\":1}]");
  fd = mg_h_connect(port);
  send_post(fd, "/v1/responses", "{\"model\":\"w\",\"input\":\"x\"}");
  read_exactly(fd, buf, strlen(nocontent));
  assert_string_equal(buf, nocontent);
  assert_false(mg_h_wait_closed(fd, 200));
  /* A head announcing 100 bytes and none of them. */
  send_post(fd, "/v1/responses", "{\"model\":\"w\",\"input\":\"x\"}");
  assert_int_equal(read_to_close(fd, buf, sizeof(buf), T_MS, &how),
                   strlen(headonly));
  assert_string_equal(buf, headonly);
  assert_int_equal(how, 0);
  close(fd);
  /* After the queue, the model's behaviour before it (raw 600) again. */
  fd = mg_h_connect(port);
  send_post(fd, "/v1/chat/completions", "{\"model\":\"w\",\"messages\":[]}");
  assert_int_equal(read_to_close(fd, buf, sizeof(buf), T_MS, &how),
                   strlen(status600));
  close(fd);
  assert_int_equal(mg_h_mock_reset(port), 0);
  assert_int_equal(chat(port, "w", "hi", "", &r), 0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  assert_int_equal((int)stat_num(port, "/requests_received"), 5);

  /* Checked whole. */
  assert_int_not_equal(mg_h_mock_set(port, "{\"mode\":\"raw\"}"), 0);
  assert_int_not_equal(mg_h_mock_set(port, "{\"mode\":\"raw\",\"raw\":\"\"}"),
                       0);
  assert_int_not_equal(mg_h_mock_set(port, "{\"mode\":\"raw\",\"raw\":5}"), 0);
  assert_int_not_equal(
      mg_h_mock_set(port,
                    "{\"mode\":\"raw\",\"raw\":\"x\",\"then\":\"maybe\"}"),
      0);
  assert_int_not_equal(mg_h_mock_set(port, "{\"close_idle_ms\":0}"), 0);
  assert_int_not_equal(mg_h_mock_set(port, "{\"cache_read\":-1}"), 0);
}

static void test_requests_received(void **state) {
  int port = port_of(state), fd, idle[3], i;
  double before, after;
  struct mg_h_resp r;

  /* A head whose body never comes counts as received, not as read. */
  fd = mg_h_connect(port);
  assert_int_equal(mg_h_sends(fd, "POST /v1/chat/completions HTTP/1.1\r\n"
                                  "Host: x\r\nContent-Length: 100\r\n\r\n"
                                  "{\"model\":"),
                   0);
  assert_int_equal((int)stat_wait(port, "/requests_received", 1, T_MS), 1);
  assert_int_equal((int)stat_num(port, "/bodies_read"), 0);
  assert_int_equal((int)stat_num(port, "/requests"), 0);
  close(fd);
  /* Control requests and /healthz are not counted; the polls above were
   * not either. */
  assert_int_equal(mg_h_request(port, "GET", "/healthz", NULL, NULL, &r, T_MS),
                   0);
  mg_h_resp_free(&r);
  assert_int_equal((int)stat_num(port, "/requests_received"), 1);
  /* A body that names a model but is not valid: received by the model,
   * not a valid request of it. */
  assert_int_equal(post(port, "/v1/chat/completions",
                        "{\"model\":\"rm\",\"messages\":5}", &r),
                   0);
  assert_int_equal(r.status, 400);
  mg_h_resp_free(&r);
  assert_int_equal((int)stat_num(port, "/requests_received"), 2);
  assert_int_equal((int)stat_num(port, "/bodies_read"), 1);
  assert_int_equal((int)stat_num(port, "/received_by_model/rm"), 1);
  assert_int_equal((int)stat_num(port, "/by_model/rm"), -1);
  assert_int_equal((int)stat_num(port, "/by_endpoint/chat"), 1);

  /* Every TCP connection accepted, requests or not (each stats poll is a
   * connection too: +1 for the second poll). */
  before = stat_num(port, "/connections_opened");
  for (i = 0; i < 3; i++)
    assert_true((idle[i] = mg_h_connect(port)) >= 0);
  after = stat_wait(port, "/connections_opened", before + 4, T_MS);
  assert_true(after == before + 4);
  for (i = 0; i < 3; i++)
    close(idle[i]);

  /* DELETE /_mock/stats zeroes the new counters and maps too. */
  assert_int_equal(
      mg_h_request(port, "DELETE", "/_mock/stats", NULL, NULL, &r, T_MS), 0);
  mg_h_resp_free(&r);
  assert_int_equal((int)stat_num(port, "/requests_received"), 0);
  assert_int_equal((int)stat_num(port, "/bodies_read"), 0);
  assert_int_equal((int)stat_num(port, "/received_by_model/rm"), -1);
  assert_int_equal((int)stat_num(port, "/by_endpoint/chat"), -1);
}

/* ---- response headers --------------------------------------------------- */

/* Lines of the head that start with name (case-insensitive). */
static int header_lines(const struct mg_h_resp *r, const char *name) {
  const char *p = r->head;
  int n = 0;
  size_t nl = strlen(name);
  while ((p = strchr(p, '\n')) != NULL) {
    p++;
    if (strncasecmp(p, name, nl) == 0 && p[nl] == ':')
      n++;
  }
  return n;
}

static void test_headers(void **state) {
  int port = port_of(state);
  struct mg_h_resp r;
  char v[128], first[64];
  cJSON *a;

  /* x-request-id on every OpenAI-family answer, unique; errors too; not on
   * unknown URLs nor control answers. */
  assert_int_equal(chat(port, "h", "hi", "", &r), 0);
  snprintf(first, sizeof(first), "%.63s", hdr(&r, "x-request-id"));
  assert_id(first, "req_");
  mg_h_resp_free(&r);
  /* The stats say which id went out (pass-through tests compare). */
  {
    char *s = mg_h_mock_stats(port);
    assert_string_equal(mg_h_json_str(s, "/last/h/request_id", v, sizeof(v)),
                        first);
    free(s);
  }
  assert_int_equal(
      post(port, "/v1/completions", "{\"model\":\"h\",\"prompt\":\"x\"}", &r),
      0);
  assert_string_not_equal(hdr(&r, "x-request-id"), first);
  assert_string_equal(hdr(&r, "openai-version"), "2020-10-01");
  mg_h_resp_free(&r);
  assert_int_equal(
      post(port, "/v1/embeddings", "{\"model\":\"h\",\"input\":\"x\"}", &r), 0);
  assert_id(hdr(&r, "x-request-id"), "req_");
  mg_h_resp_free(&r);
  assert_int_equal(post(port, "/v1/chat/completions", "{\"model\":", &r), 0);
  assert_int_equal(r.status, 400);
  assert_id(hdr(&r, "x-request-id"), "req_");
  mg_h_resp_free(&r);
  assert_int_equal(post(port, "/v9/none", "{}", &r), 0);
  assert_null(mg_h_header(&r, "x-request-id", v, sizeof(v)));
  mg_h_resp_free(&r);

  /* Extra headers, hop-by-hop ones included, sent as given. */
  set_ok(port, "{\"model\":\"h\",\"headers\":{\"Keep-Alive\":\"timeout=5\","
               "\"X-Custom\":\"v 1\",\"Upgrade\":\"h2c\",\"X-Num\":7}}");
  assert_int_equal(chat(port, "h", "hi", "", &r), 0);
  assert_int_equal(r.status, 200);
  assert_string_equal(hdr(&r, "keep-alive"), "timeout=5");
  assert_string_equal(hdr(&r, "x-custom"), "v 1");
  assert_string_equal(hdr(&r, "upgrade"), "h2c");
  assert_string_equal(hdr(&r, "x-num"), "7");
  assert_non_null(strstr(r.head, "\r\nKeep-Alive: timeout=5\r\n"));
  a = json_body(&r);
  cJSON_Delete(a);
  mg_h_resp_free(&r);
  /* On streams and on errors too, for both families. */
  assert_int_equal(chat(port, "h", "hi", ",\"stream\":true", &r), 0);
  assert_true(r.chunked);
  assert_string_equal(hdr(&r, "keep-alive"), "timeout=5");
  mg_h_resp_free(&r);
  set_ok(port, "{\"model\":\"h\",\"mode\":\"status\",\"status\":502,"
               "\"headers\":{\"X-Custom\":\"e\"}}");
  assert_int_equal(typed(port, true, "h", false, &r), 0);
  assert_int_equal(r.status, 502);
  assert_string_equal(hdr(&r, "x-custom"), "e");
  assert_id(hdr(&r, "request-id"), "req_");
  mg_h_resp_free(&r);

  /* Connection replaces the mock's and "close" closes; Content-Type
   * replaces the mock's; Transfer-Encoding: chunked frames the body. */
  set_ok(port, "{\"model\":\"h\",\"headers\":{\"Connection\":\"close\","
               "\"Content-Type\":\"text/plain\",\"Transfer-Encoding\":"
               "\"chunked\"}}");
  {
    int fd = mg_h_connect(port);
    send_post(fd, "/v1/chat/completions", "{\"model\":\"h\",\"messages\":[]}");
    assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
    close(fd);
  }
  assert_int_equal(r.status, 200);
  assert_true(r.closed);
  assert_true(r.chunked);
  assert_true(r.complete);
  assert_int_equal(header_lines(&r, "connection"), 1);
  assert_int_equal(header_lines(&r, "content-type"), 1);
  assert_int_equal(header_lines(&r, "transfer-encoding"), 1);
  assert_int_equal(header_lines(&r, "content-length"), 0);
  assert_string_equal(hdr(&r, "content-type"), "text/plain");
  a = json_body(&r);
  assert_string_equal(str_at(a, "object"), "chat.completion");
  cJSON_Delete(a);
  mg_h_resp_free(&r);

  /* Checked whole. */
  assert_int_not_equal(
      mg_h_mock_set(port, "{\"headers\":{\"Content-Length\":\"3\"}}"), 0);
  assert_int_not_equal(
      mg_h_mock_set(port, "{\"headers\":{\"Bad Name\":\"x\"}}"), 0);
  assert_int_not_equal(
      mg_h_mock_set(port, "{\"headers\":{\"X\":\"a\\r\\nInjected: 1\"}}"), 0);
  assert_int_not_equal(
      mg_h_mock_set(port, "{\"headers\":{\"Transfer-Encoding\":\"gzip\"}}"), 0);
  assert_int_not_equal(mg_h_mock_set(port, "{\"headers\":[\"X: y\"]}"), 0);
  assert_int_not_equal(mg_h_mock_set(port, "{\"headers\":{\"X\":{}}}"), 0);
}

/* ---- --name ------------------------------------------------------------- */

static void test_name(void **state) {
  struct mg_h_proc p;
  const char *const args[] = {"--name", "alpha", NULL};
  struct mg_h_resp r;
  char v[64], *s;
  cJSON *a;

  /* Without a name: null in the stats, no prefix. */
  s = mg_h_mock_stats(port_of(state));
  assert_string_equal(mg_h_json_str(s, "/name", v, sizeof(v)), "null");
  free(s);

  memset(&p, 0, sizeof(p));
  assert_int_equal(mg_h_start_mock_args(&p, args), 0);
  s = mg_h_mock_stats(p.port);
  assert_string_equal(mg_h_json_str(s, "/name", v, sizeof(v)), "alpha");
  free(s);
  assert_int_equal(chat(p.port, "m", "hi", "", &r), 0);
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_string_equal(str_at(a, "choices.0.message.content"),
                      "[alpha] Mock answer from m to: hi");
  cJSON_Delete(a);
  assert_int_equal(responses(p.port, "{\"model\":\"m\",\"input\":\"hi\"}", &r),
                   0);
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_string_equal(str_at(a, "output.0.content.0.text"),
                      "[alpha] Mock answer from m to: hi");
  cJSON_Delete(a);
  assert_int_equal(typed(p.port, true, "m", false, &r), 0);
  a = json_body(&r);
  mg_h_resp_free(&r);
  assert_string_equal(str_at(a, "content.0.text"),
                      "[alpha] Mock answer from m to: hi");
  cJSON_Delete(a);
  assert_int_equal(mg_h_stop(&p, SIGTERM, T_MS), 0);

  /* MG_MOCK_NAME when there is no --name. */
  setenv("MG_MOCK_NAME", "beta", 1);
  memset(&p, 0, sizeof(p));
  assert_int_equal(mg_h_start_mock(&p), 0);
  unsetenv("MG_MOCK_NAME");
  s = mg_h_mock_stats(p.port);
  assert_string_equal(mg_h_json_str(s, "/name", v, sizeof(v)), "beta");
  free(s);
  assert_int_equal(mg_h_stop(&p, SIGTERM, T_MS), 0);
}

/* The harness on its own: commands, files, JSON pointers, start failures. */
static void test_harness(void **state) {
  const char *sh_ok[] = {"/bin/sh", "-c", "echo out; echo err >&2; exit 3",
                         NULL};
  const char *sh_slow[] = {"/bin/sh", "-c", "sleep 5", NULL};
  char dir[256], path[300], *s, v[64];
  const char *j;
  size_t len;
  double t0;
  struct mg_h_proc g;

  (void)state;
  s = NULL;
  assert_int_equal(mg_h_run(sh_ok, &s, T_MS), 3);
  assert_non_null(strstr(s, "out\n"));
  assert_non_null(strstr(s, "err\n"));
  free(s);
  t0 = mg_h_now_ms();
  assert_int_equal(mg_h_run(sh_slow, NULL, 200), -1);
  assert_true(mg_h_now_ms() - t0 < 2000);

  assert_int_equal(mg_h_tmpdir(dir, sizeof(dir)), 0);
  snprintf(path, sizeof(path), "%s/f.txt", dir);
  assert_int_equal(mg_h_write_file(path, "abc"), 0);
  s = mg_h_read_file(path, &len);
  assert_int_equal(len, 3);
  assert_string_equal(s, "abc");
  free(s);
  assert_null(mg_h_read_file("/nonexistent/x", NULL));

  j = "{\"a/b\":{\"m~n\":[1,{\"x\":\"y\"}]},\"t\":true}";
  assert_true(mg_h_json_num(j, "/a~1b/m~0n/0", -1) == 1);
  assert_string_equal(mg_h_json_str(j, "/a~1b/m~0n/1/x", v, sizeof(v)), "y");
  assert_string_equal(mg_h_json_str(j, "/a~1b/m~0n/1", v, sizeof(v)),
                      "{\"x\":\"y\"}");
  assert_true(mg_h_json_num(j, "/t", -1) == 1);
  assert_true(mg_h_json_num(j, "/missing", -7) == -7);
  assert_true(mg_h_json_num(j, "/a~1b/m~0n/01", -7) == -7);
  assert_null(mg_h_json_str("not json", "", v, sizeof(v)));

  /* A server that cannot start fails fast, not after the 10 s wait. */
  memset(&g, 0, sizeof(g));
  t0 = mg_h_now_ms();
  assert_int_equal(mg_h_start_gate(&g, "/nonexistent/modelgate.json", NULL),
                   -1);
  assert_true(mg_h_now_ms() - t0 < 5000);
  assert_int_equal(g.pid, 0);
  assert_false(mg_h_alive(&g));
  assert_int_equal(mg_h_stop(&g, SIGTERM, 100), -1);

  /* Nothing listens on a port the kernel just gave back. */
  assert_int_equal(mg_h_connect(1), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_healthz_and_chat, setup, teardown),
      cmocka_unit_test_setup_teardown(test_logprobs, setup, teardown),
      cmocka_unit_test_setup_teardown(test_completions_and_embeddings, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
      cmocka_unit_test_setup_teardown(test_body_limit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stream, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stream_die, setup, teardown),
      cmocka_unit_test_setup_teardown(test_hang, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reset, setup, teardown),
      cmocka_unit_test_setup_teardown(test_garbage_and_truncate, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_status_and_headers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_slow, setup, teardown),
      cmocka_unit_test_setup_teardown(test_times_and_precedence, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_stats, setup, teardown),
      cmocka_unit_test_setup_teardown(test_client_vanishes_mid_stream, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_backpressure, setup, teardown),
      cmocka_unit_test_setup_teardown(test_keepalive_pipelining_expect, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_sigterm_with_work_in_flight, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_responses_plain, setup, teardown),
      cmocka_unit_test_setup_teardown(test_responses_store, setup, teardown),
      cmocka_unit_test(test_responses_store_bound),
      cmocka_unit_test_setup_teardown(test_responses_stream, setup, teardown),
      cmocka_unit_test_setup_teardown(test_messages, setup, teardown),
      cmocka_unit_test_setup_teardown(test_messages_stream, setup, teardown),
      cmocka_unit_test_setup_teardown(test_faults_typed_apis, setup, teardown),
      cmocka_unit_test_setup_teardown(test_close_mode, setup, teardown),
      cmocka_unit_test_setup_teardown(test_close_idle, setup, teardown),
      cmocka_unit_test_setup_teardown(test_raw, setup, teardown),
      cmocka_unit_test_setup_teardown(test_requests_received, setup, teardown),
      cmocka_unit_test_setup_teardown(test_headers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_name, setup, teardown),
      cmocka_unit_test(test_harness),
  };
  /* A vanished server must fail a send, not kill the test with SIGPIPE. */
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
