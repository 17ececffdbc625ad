/* test_mock.c - mg-mock as a client sees it, driven through the harness.
 *
 * Every test starts its own mock and stops it with SIGTERM, expecting exit
 * status 0: under the sanitizer build that also proves each scenario leaves
 * no leak and a clean loop behind. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
  mg_h_sleep_ms(500);
  sent = stat_num(port, "/chunks_sent");
  mg_h_sleep_ms(300);
  later = stat_num(port, "/chunks_sent");
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
      cmocka_unit_test(test_harness),
  };
  /* A vanished server must fail a send, not kill the test with SIGPIPE. */
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
