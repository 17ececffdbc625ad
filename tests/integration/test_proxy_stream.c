/* test_proxy_stream.c - streamed answers through modelgate: relayed as
 * they arrive, complete and intact, ended honestly when the upstream dies,
 * held back (and the upstream paused) while the client reads slowly, and
 * cancelled upstream as soon as the client goes away. */
#define _DEFAULT_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"

#define STREAM ",\"stream\":true"

/* A complete stream with the usage chunk, and a second one on the same
 * connection; completions stream too. */
static void test_stream_complete(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  struct events ev;
  char v[128], content[512] = "";
  int fd, i;

  gate_std(e, "", "", "", "");
  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  send_chat(fd, "gpt-test", "tell me a story",
            STREAM ",\"stream_options\":{\"include_usage\":true}");
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  assert_int_equal(r.status, 200);
  assert_true(r.chunked);
  assert_true(r.complete);
  assert_false(r.closed);
  assert_string_equal(mg_h_header(&r, "content-type", v, sizeof(v)),
                      "text/event-stream");
  assert_null(mg_h_header(&r, "content-length", v, sizeof(v)));
  assert_string_equal(mg_h_header(&r, "x-modelgate-served-by", v, sizeof(v)),
                      "main");
  assert_true(decision_id(&r, NULL));
  events_parse(r.body, &ev);
  assert_string_equal(ev.rest, "");
  /* 5 chunks, the usage chunk, [DONE]. */
  assert_int_equal(ev.n, 7);
  for (i = 0; i < 5; i++) {
    cJSON *a = cJSON_Parse(ev.items[i]);
    const cJSON *c;
    assert_non_null(a);
    assert_string_equal(str_at(a, "object"), "chat.completion.chunk");
    assert_string_equal(str_at(a, "model"), "up-model");
    c = at(a, "choices.0.delta.content");
    if (cJSON_IsString(c))
      strcat(content, c->valuestring);
    cJSON_Delete(a);
  }
  assert_string_equal(content, "Mock answer from up-model to: tell me a story");
  assert_non_null(strstr(ev.items[5], "\"usage\""));
  assert_string_equal(ev.items[6], "[DONE]");
  events_free(&ev);
  mg_h_resp_free(&r);

  /* Keep-alive: the next stream on the same connection. */
  send_chat(fd, "gpt-test", "again", STREAM);
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  assert_int_equal(r.status, 200);
  events_parse(r.body, &ev);
  assert_int_equal(ev.n, 6);
  assert_string_equal(ev.items[5], "[DONE]");
  events_free(&ev);
  mg_h_resp_free(&r);
  close(fd);

  assert_int_equal(post(e->gate.port, "/v1/completions",
                        "{\"model\":\"gpt-test\",\"prompt\":\"x\",\"stream\":"
                        "true}",
                        &r),
                   0);
  assert_true(r.chunked);
  events_parse(r.body, &ev);
  assert_int_equal(ev.n, 6);
  assert_non_null(strstr(ev.items[0], "\"text_completion\""));
  assert_string_equal(ev.items[5], "[DONE]");
  events_free(&ev);
  mg_h_resp_free(&r);
  assert_int_equal((int)stat_num(e->mock.port, "/streams_completed"), 3);
  assert_true(metric(e->gate.port, "modelgate_requests_total{route="
                                   "\"gpt-test\",status=\"200\"}") == 3);
}

/* Each event reaches the client when the upstream produces it, not when
 * the stream ends. */
static void test_stream_relayed_as_it_arrives(void **state) {
  struct tenv *e = *state;
  struct raw w = {0};
  double t_sent, t[8], produced_at_first;
  size_t k;
  int fd;

  gate_std(e, "", "", "", "");
  /* Events 200 ms apart: 5 chunks and [DONE], 1 s from first to last. */
  set_mock(e->mock.port, "{\"chunks\":5,\"chunk_ms\":200}");
  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  t_sent = mg_h_now_ms();
  send_chat(fd, "gpt-test", "slowly", STREAM);
  for (k = 1; k <= 6; k++) {
    if (!raw_read_until(fd, &w, "data: ", k, T_MS))
      fail_msg("event %zu never came:\n%s", k, w.data ? w.data : "");
    t[k - 1] = mg_h_now_ms();
    if (k == 1)
      produced_at_first = stat_num(e->mock.port, "/chunks_sent");
  }
  assert_true(raw_read_until(fd, &w, "0\r\n\r\n", 1, T_MS));
  assert_non_null(strstr(w.data, "data: [DONE]\n\n"));
  /* The first event came while the mock had written at most the first
   * couple of events. */
  if (produced_at_first > 3)
    fail_msg("first event arrived after the mock had sent %.0f of 6",
             produced_at_first);
  if (t[0] - t_sent > 700)
    fail_msg("first event after %.0f ms", t[0] - t_sent);
  if (t[5] - t[0] < 600)
    fail_msg("events bunched up: first at %.0f ms, last at %.0f ms",
             t[0] - t_sent, t[5] - t_sent);
  for (k = 1; k < 6; k++)
    assert_true(t[k] > t[k - 1]);
  raw_free(&w);
  close(fd);
}

/* The upstream dies half-way: what came is relayed, then an error event
 * (never a fake [DONE]) and the end of the chunked body (exchange.c,
 * fail_stream); the client connection can go on. */
static void test_stream_dies_midway(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  struct events ev;
  int fd;
  size_t i;

  gate_std(e, "", "", "", "");
  /* The mock resets the connection right after its third event; a reset
   * may destroy data the receiver has not read yet, so the events are
   * spaced out and the third may or may not make it. */
  set_mock(e->mock.port, "{\"mode\":\"stream_die\",\"chunks\":10,"
                         "\"die_after\":3,\"chunk_ms\":150,\"times\":1}");
  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  send_chat(fd, "gpt-test", "half a story", STREAM);
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  assert_int_equal(r.status, 200);
  assert_true(r.chunked);
  assert_true(r.complete); /* the terminating chunk is there */
  assert_null(strstr(r.body, "[DONE]"));
  events_parse(r.body, &ev);
  assert_string_equal(ev.rest, "");
  if (ev.n < 3 || ev.n > 4)
    fail_msg("want 2 or 3 events and an error event:\n%s", r.body);
  for (i = 0; i + 1 < ev.n; i++)
    assert_non_null(strstr(ev.items[i], "chat.completion.chunk"));
  assert_error_event(ev.items[ev.n - 1], "upstream_truncated");
  events_free(&ev);
  mg_h_resp_free(&r);
  assert_int_equal((int)stat_num(e->mock.port, "/streams_died"), 1);

  /* Same connection, next request. */
  send_chat(fd, "gpt-test", "whole story", STREAM);
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.body, "data: [DONE]\n\n"));
  mg_h_resp_free(&r);
  close(fd);
}

/* An upstream error before the first byte of a stream is an ordinary JSON
 * answer, not a stream. */
static void test_stream_error_before_first_byte(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;

  gate_std(e, "", "", "", "");
  set_mock(e->mock.port,
           "{\"mode\":\"status\",\"status\":429,\"body\":{\"error\":{"
           "\"message\":\"slow down\",\"type\":\"rate_limit_error\","
           "\"param\":null,\"code\":null}}}");
  assert_int_equal(chat(e->gate.port, "gpt-test", "x", STREAM, &r), 0);
  assert_int_equal(r.status, 429);
  assert_false(r.chunked);
  assert_non_null(strstr(r.body, "slow down"));
  mg_h_resp_free(&r);
  set_mock(e->mock.port, "{\"mode\":\"reset\"}");
  assert_int_equal(chat(e->gate.port, "gpt-test", "x", STREAM, &r), 0);
  assert_error(&r, 502, "upstream_reset");
  assert_false(r.chunked);
  mg_h_resp_free(&r);
}

/* A client that stops reading: modelgate's queue fills to the high
 * watermark, the upstream transfer is paused, the mock stops producing;
 * once the client reads again everything arrives, in order, intact. */
static void test_slow_reader_backpressure(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  struct events ev;
  int fd, small = 4096;
  double sent1, sent2, paused;
  size_t i;
  char *first_id = NULL, words[256];
  size_t words_len = 0;

  gate_std(e, "", "", "", "");
  /* 600 events of 64 KiB: about 39 MiB, far beyond every buffer. */
  set_mock(e->mock.port, "{\"chunks\":600,\"chunk_bytes\":65536}");
  fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  /* A small receive buffer, set before connecting so the window is
   * small from the start. */
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)),
                   0);
  {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)e->gate.port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  }
  send_chat(fd, "gpt-test", "a lot", STREAM);
  /* Read nothing for 1.5 s. */
  mg_h_sleep_ms(1500);
  sent1 = stat_num(e->mock.port, "/chunks_sent");
  paused = metric(e->gate.port, "modelgate_upstream_paused_total");
  mg_h_sleep_ms(300);
  sent2 = stat_num(e->mock.port, "/chunks_sent");
  if (paused < 1)
    fail_msg("the upstream was never paused (chunks sent: %.0f)", sent1);
  /* Stalled, and far from done. */
  if (sent1 < 1 || sent1 > 300 || sent2 != sent1)
    fail_msg("mock kept producing while the client read nothing: %.0f then "
             "%.0f of 601 events",
             sent1, sent2);
  assert_int_equal((int)stat_num(e->mock.port, "/active_streams"), 1);
  assert_true(metric(e->gate.port, "modelgate_requests_in_flight") == 1);

  /* Now read it all. */
  assert_int_equal(mg_h_read_response(fd, &r, 45000), 0);
  assert_int_equal(r.status, 200);
  assert_true(r.complete);
  events_parse(r.body, &ev);
  assert_string_equal(ev.rest, "");
  assert_int_equal(ev.n, 601);
  /* The first and the last chunk parsed in full; all 600 checked by their
   * bytes (parsing 39 MiB of JSON is slow under ASan): same id, same
   * object, and the content of each. */
  for (i = 0; i < 600; i += 599) {
    cJSON *a = cJSON_Parse(ev.items[i]);
    if (a == NULL)
      fail_msg("event %zu is not JSON (%zu bytes)", i, strlen(ev.items[i]));
    assert_string_equal(str_at(a, "object"), "chat.completion.chunk");
    if (first_id == NULL)
      first_id = fmt("{\"id\":\"%s\",\"object\":\"chat.completion.chunk\","
                     "\"created\":",
                     str_at(a, "id"));
    cJSON_Delete(a);
  }
  for (i = 0; i < 600; i++) {
    const char *p = ev.items[i], *c, *end;
    size_t len = strlen(p);
    if (strncmp(p, first_id, strlen(first_id)) != 0 || len < 2 ||
        strcmp(p + len - 2, "]}") != 0)
      fail_msg("event %zu is damaged: %.120s", i, p);
    /* Padded to 64 KiB each, except the first (role) and the last. */
    if (i > 0 && i < 599) {
      c = strstr(p, "\"content\":\"");
      assert_non_null(c);
      c += 11;
      end = strchr(c, '"');
      assert_non_null(end);
      if (end - c < 65536)
        fail_msg("event %zu lost content", i);
      for (; c < end; c++)
        if (*c != ' ' && words_len + 1 < sizeof(words))
          words[words_len++] = *c;
    }
  }
  assert_string_equal(ev.items[600], "[DONE]");
  /* The words, without the padding, are the answer: nothing lost or
   * repeated. */
  words[words_len] = '\0';
  assert_string_equal(words, "Mockanswerfromup-modelto:alot");
  free(first_id);
  events_free(&ev);
  mg_h_resp_free(&r);
  close(fd);
  assert_int_equal((int)stat_num(e->mock.port, "/streams_completed"), 1);
  assert_int_equal((int)stat_num(e->mock.port, "/chunks_sent"), 601);
  assert_true(
      metric_wait(e->gate.port, "modelgate_requests_in_flight", 0, 2000) == 0);
}

/* The client goes away mid-stream: the upstream transfer is cancelled at
 * once (the mock sees its stream aborted), nothing is left in flight. */
static void test_client_vanishes_mid_stream(void **state) {
  struct tenv *e = *state;
  struct raw w = {0};
  double t0;
  int fd;

  gate_std(e, "", "", "", "");
  set_mock(e->mock.port, "{\"chunks\":50,\"chunk_ms\":100}");
  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  send_chat(fd, "gpt-test", "stay with me", STREAM);
  assert_true(raw_read_until(fd, &w, "data: ", 1, T_MS));
  assert_int_equal(strncmp(w.data, "HTTP/1.1 200 ", 13), 0);
  raw_free(&w);
  close(fd);
  t0 = mg_h_now_ms();
  if (stat_wait(e->mock.port, "/streams_aborted", 1, 1, 2000) != 1)
    fail_msg("the upstream stream was not cancelled");
  if (mg_h_now_ms() - t0 > 1000)
    fail_msg("upstream cancelled %.0f ms after the client left",
             mg_h_now_ms() - t0);
  assert_int_equal((int)stat_num(e->mock.port, "/streams_completed"), 0);
  assert_true(stat_num(e->mock.port, "/chunks_sent") < 40);
  assert_true(
      metric_wait(e->gate.port, "modelgate_requests_in_flight", 0, 2000) == 0);
  assert_true(metric(e->gate.port, "modelgate_upstream_transfers_active") == 0);
  assert_gate_ok(e);
}

/* A non-streaming request whose client leaves while the upstream is slow:
 * modelgate drops the upstream request too (the mock's connection goes). */
static void test_client_vanishes_non_stream(void **state) {
  struct tenv *e = *state;
  int fd;

  gate_std(e, "", "", "", "");
  set_mock(e->mock.port, "{\"mode\":\"slow\",\"ms\":10000}");
  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  send_chat(fd, "gpt-test", "too slow", "");
  /* The request reached the mock: its connection and the stats one. */
  assert_int_equal((int)stat_wait(e->mock.port, "/requests", 1, 1, 2000), 1);
  assert_int_equal((int)stat_num(e->mock.port, "/connections_active"), 2);
  close(fd);
  if (stat_wait(e->mock.port, "/connections_active", 1, 1, 1000) != 1)
    fail_msg("the upstream request was not cancelled");
  assert_true(
      metric_wait(e->gate.port, "modelgate_requests_in_flight", 0, 2000) == 0);
  assert_true(metric(e->gate.port, "modelgate_requests_total{route="
                                   "\"gpt-test\",status=\"499\"}") == 1);
  assert_int_equal(mg_h_mock_reset(e->mock.port), 0);
  assert_gate_ok(e);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, tenv_setup, tenv_teardown)
  const struct CMUnitTest tests[] = {
      T(test_stream_complete),
      T(test_stream_relayed_as_it_arrives),
      T(test_stream_dies_midway),
      T(test_stream_error_before_first_byte),
      T(test_slow_reader_backpressure),
      T(test_client_vanishes_mid_stream),
      T(test_client_vanishes_non_stream),
  };
#undef T
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
