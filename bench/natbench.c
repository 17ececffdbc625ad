/* natbench.c - instructions per upstream call of the native engine and of
 * the libcurl engine, by callgrind (issue 17, "Performance"); not a test,
 * and not run by bench/run.sh.
 *
 *   natbench serve              keep-alive server on 127.0.0.1, prints its
 *                               port, answers every request the same
 *   natbench native PORT W N    W warm-up calls, then N measured calls,
 *   natbench curl PORT W N      one after another, each started from the
 *                               previous one's on_done
 *
 *   build/bench/natbench serve > /tmp/port & 
 *   valgrind --tool=callgrind --instr-atstart=no \
 *       build/bench/natbench native $(cat /tmp/port) 1000 20000
 *   callgrind_annotate callgrind.out.* | head -40
 *
 * Instrumentation is switched on only around the N measured calls
 * (CALLGRIND_START_INSTRUMENTATION), so the total Ir divided by N is the
 * client side of one call: building and writing the request, reading and
 * parsing the answer, libuv, libc. */
#define _GNU_SOURCE 1

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>
#include <valgrind/callgrind.h>

#include <curl/curl.h>

#include "upstream/curl.h"
#include "upstream/native.h"

/* A chat request as the SDKs send it, after modelgate's rewrite. */
static const char natbench_body[] =
    "{\"model\":\"gpt-4o-mini-2024-07-18\",\"messages\":[{\"role\":\"system\","
    "\"content\":\"You are a helpful assistant.\"},{\"role\":\"user\","
    "\"content\":\"Say hello in one word.\"}],\"temperature\":0.2,"
    "\"max_tokens\":16}";

/* The target's header lines: a 164-character key, an OpenAI project key's
 * length (issue 17). */
static const char *const natbench_lines[3] = {
    "Content-Type: application/json",
    "User-Agent: modelgate/0.1.0",
    "Authorization: Bearer sk-proj-"
    "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrStUvWxYz01234567"
    "89AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrStUvWxYz012345"
    "6789AbCdEfGhIjKl"};

/* This request's own header line (send_decision_id). */
static const char natbench_decision[] = "x-modelgate-decision: 01J9ZQ4X7M8N2P3Q4R5S6T7V8W";

/* What an OpenAI-compatible upstream answers (headers as api.openai.com
 * sends them, trimmed of cookies). */
static const char answer_body[] =
    "{\"id\":\"chatcmpl-9xYzAbCdEfGhIjKlMnOpQrStUv\",\"object\":\"chat."
    "completion\",\"created\":1733000000,\"model\":\"gpt-4o-mini-2024-07-18\","
    "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
    "\"Hello!\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"stop\""
    "}],\"usage\":{\"prompt_tokens\":24,\"completion_tokens\":2,\"total_tokens"
    "\":26},\"system_fingerprint\":\"fp_0ba0d124f1\"}";

static char answer[2048];
static size_t answer_len;

static void build_answer(void) {
  answer_len = (size_t)snprintf(
      answer, sizeof(answer),
      "HTTP/1.1 200 OK\r\nDate: Mon, 02 Dec 2024 12:00:00 GMT\r\n"
      "Content-Type: application/json\r\nContent-Length: %zu\r\n"
      "Connection: keep-alive\r\naccess-control-expose-headers: X-Request-ID"
      "\r\nopenai-organization: user-abc123\r\nopenai-processing-ms: 212\r\n"
      "openai-version: 2020-10-01\r\nx-ratelimit-limit-requests: 10000\r\n"
      "x-ratelimit-remaining-requests: 9999\r\nx-request-id: "
      "req_0123456789abcdef0123456789abcdef\r\n\r\n%s",
      sizeof(answer_body) - 1, answer_body);
}

/* ---- the server ----------------------------------------------------------- */

static void *serve_conn(void *p) {
  int fd = (int)(intptr_t)p, one = 1;
  char buf[65536];
  size_t len = 0;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  for (;;) {
    char *e;
    ssize_t r = read(fd, buf + len, sizeof(buf) - len);
    if (r <= 0)
      break;
    len += (size_t)r;
    while ((e = memmem(buf, len, "\r\n\r\n", 4)) != NULL) {
      size_t hl = (size_t)(e - buf) + 4, cl = 0;
      char *c;
      *e = '\0';
      c = strcasestr(buf, "\r\ncontent-length:");
      if (c)
        cl = strtoul(c + 17, NULL, 10);
      *e = '\r';
      if (len < hl + cl)
        break;
      if (write(fd, answer, answer_len) != (ssize_t)answer_len)
        goto out;
      memmove(buf, buf + hl + cl, len - hl - cl);
      len -= hl + cl;
    }
  }
out:
  close(fd);
  return NULL;
}

static int serve(void) {
  struct sockaddr_in a;
  socklen_t l = sizeof(a);
  int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(lfd, 64) ||
      getsockname(lfd, (struct sockaddr *)&a, &l) != 0) {
    perror("natbench serve");
    return 1;
  }
  printf("%d\n", ntohs(a.sin_port));
  fflush(stdout);
  for (;;) {
    pthread_t t;
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
      continue;
    pthread_create(&t, NULL, serve_conn, (void *)(intptr_t)fd);
    pthread_detach(t);
  }
}

/* ---- the engine under test, through upstream/call.h ---------------------- */

struct drive {
  uv_loop_t loop;
  struct mg_up_engine *e;
  void *dest;
  int warm, n, done, bad;
  bool closed;
  char extra[128];
  size_t extra_len;
};

static const struct mg_up_call_cbs cbs;

static void next(struct drive *d) {
  struct mg_up_request q;
  char *body;
  if (d->done == d->warm)
    CALLGRIND_START_INSTRUMENTATION;
  if (d->done == d->warm + d->n) {
    CALLGRIND_STOP_INSTRUMENTATION;
    uv_stop(&d->loop); /* pooled connections keep the loop alive */
    return;
  }
  body = malloc(sizeof(natbench_body) - 1);
  memcpy(body, natbench_body, sizeof(natbench_body) - 1);
  memset(&q, 0, sizeof(q));
  q.dest = d->dest;
  q.method = "POST";
  q.extra_headers = d->extra;
  q.extra_len = d->extra_len;
  q.body = body;
  q.body_len = sizeof(natbench_body) - 1;
  q.timeouts = (struct mg_timeouts){5000, 30000, 30000, 60000};
  q.max_response = 16u << 20;
  if (d->e->ops->start(d->e, &q, &cbs, d) == NULL) {
    d->bad++;
    return;
  }
}

static void on_done(struct mg_up_call *call, enum mg_up_result res) {
  struct drive *d = call->owner;
  if (res != MG_UP_OK || call->status != 200 || call->body.len == 0)
    d->bad++;
  mg_up_call_release(call);
  d->done++;
  next(d);
}

static const struct mg_up_call_cbs cbs = {NULL, on_done};

static void on_closed(void *arg) { ((struct drive *)arg)->closed = true; }

static int drive(const char *which, const char *url, int warm, int n) {
  struct drive d;
  struct mg_up_engine_cfg cfg = {256, 0, 60000, NULL};
  char err[256];
  memset(&d, 0, sizeof(d));
  uv_loop_init(&d.loop);
  d.e = strcmp(which, "curl") == 0 ? mg_curl_new(&d.loop, &cfg)
                                    : mg_native_new(&d.loop, &cfg);
  if (d.e == NULL)
    return 1;
  d.dest = d.e->ops->dest_new(d.e, url, natbench_lines, 3, NULL, err,
                                  sizeof(err));
  if (d.dest == NULL) {
    fprintf(stderr, "natbench: %s\n", err);
    return 1;
  }
  d.extra_len = (size_t)snprintf(d.extra, sizeof(d.extra), "%s\r\n",
                                 natbench_decision);
  d.warm = warm;
  d.n = n;
  next(&d);
  uv_run(&d.loop, UV_RUN_DEFAULT);
  void (*dest_free)(void *) = d.e->ops->dest_free;
  d.e->ops->close(d.e, on_closed, &d);
  while (!d.closed)
    uv_run(&d.loop, UV_RUN_ONCE);
  dest_free(d.dest);
  uv_run(&d.loop, UV_RUN_DEFAULT);
  printf("%s: %d calls, %d bad, loop_close %d\n",
         which, d.done, d.bad, uv_loop_close(&d.loop));
  return d.bad != 0 || d.done != warm + n;
}

int main(int argc, char **argv) {
  char url[128];
  signal(SIGPIPE, SIG_IGN);
  build_answer();
  if (argc == 2 && strcmp(argv[1], "serve") == 0)
    return serve();
  if (argc != 5) {
    fprintf(stderr, "usage: natbench serve | natbench native|curl PORT W N\n");
    return 2;
  }
  snprintf(url, sizeof(url), "http://127.0.0.1:%s/v1/chat/completions",
           argv[2]);
  if (strcmp(argv[1], "native") != 0 && strcmp(argv[1], "curl") != 0)
    return 2;
  curl_global_init(CURL_GLOBAL_DEFAULT);
  return drive(argv[1], url, atoi(argv[3]), atoi(argv[4]));
}
