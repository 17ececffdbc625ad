/* test_chaos.c - nothing is lost while everything changes at once.
 *
 * Four keep-alive clients send chat requests (a flag and a plain alias,
 * 40% streamed) for a bounded time while the main thread, every 100 ms,
 * switches an upstream model to another failure (slow, 500, 429 with
 * Retry-After, hang, reset, garbage JSON, a truncated body, low
 * confidence, a stream that dies half-way), and in between rewrites the
 * config and sends SIGHUP, kills and unkills the flag, sets and clears
 * weights, reloads through the admin API and reopens the decision log with
 * SIGUSR1.
 *
 * Every request must get a whole answer with a decision id: HTTP 200 (the
 * fallback chain ends in a static answer that never fails) and, for a
 * stream, one that ends in [DONE] or an error event. Every answer must have
 * exactly one record in the decision log; modelgate must still be running
 * at the end and exit 0 at SIGTERM (under ASan: no leak, no memory error). */
#define _DEFAULT_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"

#include <pthread.h>

#define CLIENTS 4
#define CHAOS_MS 6000
#define MAX_PER_CLIENT 100000
#define TOKEN "tok-chaos-Vb81"

static const char config_tmpl[] =
    "{\"server\":{\"listen\":\"127.0.0.1:0\",\"log_level\":\"warn\","
    "\"shutdown_grace_ms\":5000},"
    "\"admin\":{\"listen\":\"127.0.0.1:0\",\"token_env\":\"CHAOS_TOKEN\","
    "\"state_file\":\"%s/state.json\"},"
    "\"decision_log\":{\"path\":\"%s/decisions.jsonl\",\"flush_ms\":50},"
    "\"cache\":{\"max_entries\":100},"
    "\"traditional\":{\"sorry\":{\"static\":\"Sorry, try again later.\"}},"
    "\"targets\":{"
    "\"big\":{\"base_url\":\"http://127.0.0.1:%d/v1\",\"model\":\"big\","
    "\"timeouts\":{\"first_byte_ms\":300,\"total_ms\":3000},"
    "\"retries\":{\"count\":1,\"backoff_ms\":10,"
    "\"on\":[\"5xx\",\"429\",\"connect_error\"]},"
    "\"confidence\":{\"min\":0.5,\"source\":\"logprobs_mean\"},"
    "\"fallbacks\":[\"small\",\"cache\",\"traditional:sorry\"]},"
    "\"small\":{\"base_url\":\"http://127.0.0.1:%d/v1\",\"model\":\"small\","
    "\"timeouts\":{\"first_byte_ms\":300,\"total_ms\":3000},"
    "\"fallbacks\":[\"traditional:sorry\"]}},"
    "\"flags\":{\"chat\":{\"off_variant\":\"a\",\"variants\":{"
    "\"a\":{\"target\":\"big\",\"weight\":%d},"
    "\"b\":{\"target\":\"small\",\"weight\":%d}}}},"
    "\"aliases\":{\"gpt\":{\"flag\":\"chat\"},"
    "\"gpt-small\":{\"target\":\"small\"}}}";

static void write_config(struct tenv *e, int weight_a) {
  char *c = fmt(config_tmpl, e->dir, e->dir, e->mock.port, e->mock.port,
                weight_a, 100 - weight_a);
  assert_int_equal(mg_h_write_file(e->config, c), 0);
  free(c);
}

struct client {
  int port;
  unsigned seed;
  double deadline;
  char (*ids)[33];
  size_t n;
  size_t statuses[6]; /* by hundreds: [2] = 2xx ... [5] = 5xx, [0] other */
  size_t streams, stream_errors;
  char problem[256]; /* the first one */
};

static void *client_run(void *arg) {
  struct client *c = arg;
  int fd = -1;
  while (mg_h_now_ms() < c->deadline && c->n < MAX_PER_CLIENT) {
    struct mg_h_resp r;
    bool stream = rand_r(&c->seed) % 10 < 4;
    char *body, *req;
    int rc;
    if (fd < 0 && (fd = mg_h_connect(c->port)) < 0) {
      snprintf(c->problem, sizeof(c->problem), "cannot connect");
      break;
    }
    body = fmt("{\"model\":\"%s\",\"user\":\"u%u\",\"messages\":[{\"role\":"
               "\"user\",\"content\":\"question %u\"}]%s}",
               rand_r(&c->seed) % 3 ? "gpt" : "gpt-small",
               rand_r(&c->seed) % 50, rand_r(&c->seed) % 5,
               stream ? ",\"stream\":true" : "");
    req = fmt("POST /v1/chat/completions HTTP/1.1\r\nHost: modelgate\r\n"
              "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n"
              "%s",
              strlen(body), body);
    rc = mg_h_sends(fd, req) == 0 ? mg_h_read_response(fd, &r, 10000) : -1;
    free(req);
    free(body);
    if (rc != 0 || !r.complete) {
      snprintf(c->problem, sizeof(c->problem),
               "request %zu: no whole answer (status %d)", c->n,
               rc == 0 ? r.status : 0);
      if (rc == 0)
        mg_h_resp_free(&r);
      break;
    }
    c->statuses[r.status >= 200 && r.status < 600 ? r.status / 100 : 0]++;
    if (!decision_id(&r, c->ids[c->n])) {
      snprintf(c->problem, sizeof(c->problem),
               "request %zu: HTTP %d without a decision id", c->n, r.status);
      mg_h_resp_free(&r);
      break;
    }
    c->n++;
    if (stream && r.status == 200) {
      c->streams++;
      if (strstr(r.body, "\"error\"") != NULL)
        c->stream_errors++;
      else if (strstr(r.body, "data: [DONE]") == NULL && !c->problem[0])
        snprintf(c->problem, sizeof(c->problem),
                 "a stream ended with neither [DONE] nor an error event: "
                 "%.120s",
                 r.body);
    }
    if (r.closed) {
      close(fd);
      fd = -1;
    }
    mg_h_resp_free(&r);
  }
  if (fd >= 0)
    close(fd);
  return NULL;
}

static void admin(struct tenv *e, const char *method, const char *url,
                  const char *body) {
  struct mg_h_resp r;
  assert_int_equal(mg_h_request(e->gate.admin_port, method, url,
                                "Authorization: Bearer " TOKEN "\r\n", body,
                                &r, T_MS),
                   0);
  if (r.status != 200)
    fail_msg("%s %s: HTTP %d %s", method, url, r.status, r.body);
  mg_h_resp_free(&r);
}

static int cmp_id(const void *a, const void *b) {
  return memcmp(a, b, 32);
}

/* Every id the clients saw has exactly one record. */
static void check_records(struct tenv *e, struct client *cl, size_t total) {
  char *path = fmt("%s/decisions.jsonl", e->dir), *text, *line, *save = NULL;
  char(*all)[33] = malloc((total ? total : 1) * sizeof(*all));
  unsigned char *seen = calloc(total ? total : 1, 1);
  size_t n = 0, i, records = 0;
  FILE *f;
  long len;

  assert_non_null(all);
  assert_non_null(seen);
  for (i = 0; i < CLIENTS; i++) {
    memcpy(all + n, cl[i].ids, cl[i].n * sizeof(*all));
    n += cl[i].n;
  }
  qsort(all, n, sizeof(*all), cmp_id);
  for (i = 1; i < n; i++)
    if (memcmp(all[i - 1], all[i], 32) == 0)
      fail_msg("two answers with decision id %.32s", all[i]);

  f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  len = ftell(f);
  fseek(f, 0, SEEK_SET);
  text = malloc((size_t)len + 1);
  assert_non_null(text);
  assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
  text[len] = '\0';
  fclose(f);
  for (line = strtok_r(text, "\n", &save); line;
       line = strtok_r(NULL, "\n", &save)) {
    const char *id;
    char(*hit)[33];
    if (strncmp(line, "{\"ts\":", 6) != 0)
      fail_msg("not a decision log line: %.120s", line);
    if (strstr(line, "\"event\":") != NULL && strstr(line, "\"id\":") == NULL)
      continue;
    id = strstr(line, "\"id\":\"");
    if (id == NULL)
      fail_msg("a record without an id: %.120s", line);
    records++;
    hit = bsearch(id + 6, all, n, sizeof(*all), cmp_id);
    if (hit == NULL)
      fail_msg("a record no client saw: %.120s", line);
    if (seen[hit - all]++)
      fail_msg("two records with id %.32s", id + 6);
  }
  for (i = 0; i < n; i++)
    if (!seen[i])
      fail_msg("no record for decision id %.32s (%zu of %zu answers have "
               "one)",
               all[i], records, n);
  free(text);
  free(all);
  free(seen);
  free(path);
}

static void test_chaos(void **state) {
  static const char *const modes[] = {
      "'mode':'ok'",
      "'mode':'slow','ms':50",
      "'mode':'status','status':500",
      "'mode':'status','status':429,'retry_after':0.05",
      "'mode':'hang'",
      "'mode':'reset'",
      "'mode':'garbage'",
      "'mode':'truncate'",
      "'mode':'low_confidence'",
      "'mode':'stream_die'",
  };
  struct tenv *e = *state;
  const char *env[] = {"CHAOS_TOKEN=" TOKEN, NULL};
  struct client cl[CLIENTS];
  pthread_t th[CLIENTS];
  unsigned seed = 20261121;
  size_t total = 0, ok = 0, streams = 0, stream_errors = 0, i;
  int step = 0;

  write_config(e, 50);
  assert_int_equal(mg_h_start_gate(&e->gate, e->config, env), 0);
  memset(cl, 0, sizeof(cl));
  for (i = 0; i < CLIENTS; i++) {
    cl[i].port = e->gate.port;
    cl[i].seed = (unsigned)(i * 7919 + 1);
    cl[i].deadline = mg_h_now_ms() + CHAOS_MS;
    cl[i].ids = malloc(MAX_PER_CLIENT * sizeof(*cl[i].ids));
    assert_non_null(cl[i].ids);
    assert_int_equal(pthread_create(&th[i], NULL, client_run, &cl[i]), 0);
  }

  while (mg_h_now_ms() < cl[0].deadline) {
    char *b;
    mg_h_sleep_ms(100);
    step++;
    b = fmt("{'model':'%s',%s}", rand_r(&seed) % 2 ? "big" : "small",
            modes[rand_r(&seed) % (sizeof(modes) / sizeof(modes[0]))]);
    mock_behave(e, b);
    free(b);
    if (step % 8 == 0) {
      static const int w[] = {0, 10, 50, 90, 100};
      write_config(e, w[rand_r(&seed) % 5]);
      kill(e->gate.pid, SIGHUP);
    }
    if (step % 5 == 0)
      admin(e, "POST", step % 10 ? "/admin/flags/chat/kill"
                                 : "/admin/flags/chat/unkill",
            NULL);
    if (step % 7 == 0)
      admin(e, "PUT", "/admin/flags/chat/weights",
            "{\"a\":30,\"b\":70}");
    if (step % 14 == 0)
      admin(e, "DELETE", "/admin/flags/chat/weights", NULL);
    if (step % 11 == 0)
      admin(e, "POST", "/admin/reload", NULL);
    if (step % 13 == 0)
      kill(e->gate.pid, SIGUSR1);
  }
  for (i = 0; i < CLIENTS; i++)
    assert_int_equal(pthread_join(th[i], NULL), 0);

  for (i = 0; i < CLIENTS; i++) {
    if (cl[i].problem[0])
      fail_msg("client %zu: %s", i, cl[i].problem);
    total += cl[i].n;
    ok += cl[i].statuses[2];
    streams += cl[i].streams;
    stream_errors += cl[i].stream_errors;
  }
  print_message("chaos: %d changes, %zu answers (%zu streams, %zu ended by an "
                "error event)\n",
                step, total, streams, stream_errors);
  if (ok != total)
    fail_msg("%zu of %zu answers were not 200 (3xx %zu, 4xx %zu, 5xx %zu)",
             total - ok, total, cl[0].statuses[3] + cl[1].statuses[3] +
                                    cl[2].statuses[3] + cl[3].statuses[3],
             cl[0].statuses[4] + cl[1].statuses[4] + cl[2].statuses[4] +
                 cl[3].statuses[4],
             cl[0].statuses[5] + cl[1].statuses[5] + cl[2].statuses[5] +
                 cl[3].statuses[5]);
  /* Bounded, but not idle: the clients must have got real work done. */
  assert_true(total >= 100);

  assert_true(mg_h_alive(&e->gate));
  gate_down(&e->gate);
  check_records(e, cl, total);
  for (i = 0; i < CLIENTS; i++)
    free(cl[i].ids);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_chaos, tenv_setup, tenv_teardown),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  mg_h_cleanup_dirs();
  return rc;
}
