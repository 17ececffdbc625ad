/* test_answer.c - answers modelgate makes itself (src/fallbacks/answer.c):
 * wrapped traditional answers, their streams, replayed completions and the
 * text of a traditional service's body. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>

#include "fallbacks/answer.h"

#define MAX_EVENTS 32

static void parse_ok(struct mg_json_doc *d, const char *s, size_t n) {
  struct mg_json_error err = {0, NULL};
  if (mg_json_parse(d, s, n, &err) != 0)
    fail_msg("parse failed at %zu: %s: %.*s", err.offset,
             err.msg ? err.msg : "?", (int)n, s);
}

/* The value at pointer ptr of d must be the string want (after
 * unescaping). */
static void assert_str_at(const struct mg_json_doc *d, uint32_t root,
                          const char *ptr, const char *want, size_t wlen) {
  uint32_t i = mg_json_pointer(d, root, ptr);
  if (i == MG_JSON_NOTFOUND)
    fail_msg("%s: missing", ptr);
  if (!mg_json_str_eq(d, i, want, wlen)) {
    struct mg_str r = mg_json_raw(d, i);
    fail_msg("%s: %.*s, want \"%.*s\"", ptr, (int)r.len, r.p, (int)wlen, want);
  }
}

static void assert_raw_at(const struct mg_json_doc *d, uint32_t root,
                          const char *ptr, const char *want) {
  uint32_t i = mg_json_pointer(d, root, ptr);
  struct mg_str r;
  if (i == MG_JSON_NOTFOUND)
    fail_msg("%s: missing", ptr);
  r = mg_json_raw(d, i);
  if (!mg_str_eq_c(r, want))
    fail_msg("%s: %.*s, want %s", ptr, (int)r.len, r.p, want);
}

static void assert_absent(const struct mg_json_doc *d, uint32_t root,
                          const char *ptr) {
  if (mg_json_pointer(d, root, ptr) != MG_JSON_NOTFOUND)
    fail_msg("%s: present", ptr);
}

/* A stream cut into its events' data, the way a client reads it: events
 * end with a blank line, each is one "data: " line. The data slices point
 * into s. */
struct sse {
  struct mg_str data[MAX_EVENTS];
  size_t n;
};

static void split_sse(const char *s, size_t len, struct sse *ev) {
  const char *p = s, *e = s + len;
  ev->n = 0;
  while (p < e) {
    const char *end = strstr(p, "\n\n");
    assert_non_null(end);
    assert_true(end < e);
    assert_true(ev->n < MAX_EVENTS);
    assert_memory_equal(p, "data: ", 6);
    /* One line per event: no newline inside the data. */
    assert_null(memchr(p, '\n', (size_t)(end - p)));
    ev->data[ev->n].p = p + 6;
    ev->data[ev->n].len = (size_t)(end - p - 6);
    ev->n++;
    p = end + 2;
  }
  assert_true(p == e);
  assert_true(ev->n >= 2);
  /* [DONE] last, and only last; every other event is one JSON object. */
  assert_true(mg_str_eq_c(ev->data[ev->n - 1], "[DONE]"));
  {
    struct mg_json_doc d;
    size_t i;
    mg_json_init(&d, 10000);
    for (i = 0; i + 1 < ev->n; i++) {
      parse_ok(&d, ev->data[i].p, ev->data[i].len);
      assert_int_equal(d.toks[0].type, MG_JSON_OBJECT);
    }
    mg_json_free(&d);
  }
}

/* ---- wrap --------------------------------------------------------------- */

static void test_wrap_chat_exact(void **state) {
  struct mg_buf out;
  (void)state;
  mg_buf_init(&out, 1 << 16);
  assert_int_equal(mg_answer_wrap(&out, MG_ANSWER_CHAT, "chatcmpl-mg-1",
                                  1718000000, "faq", "Opening hours: 9-5.",
                                  19),
                   0);
  assert_string_equal(
      out.data,
      "{\"id\":\"chatcmpl-mg-1\",\"object\":\"chat.completion\",\"created\":"
      "1718000000,\"model\":\"faq\",\"choices\":[{\"index\":0,\"message\":{"
      "\"role\":\"assistant\",\"content\":\"Opening hours: 9-5.\"},"
      "\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":{"
      "\"prompt_tokens\":0,\"completion_tokens\":0,\"total_tokens\":0}}");
  mg_buf_reset(&out);
  assert_int_equal(mg_answer_wrap(&out, MG_ANSWER_COMPLETION, "cmpl-mg-2", 7,
                                  "faq", "x", 1),
                   0);
  assert_string_equal(
      out.data,
      "{\"id\":\"cmpl-mg-2\",\"object\":\"text_completion\",\"created\":7,"
      "\"model\":\"faq\",\"choices\":[{\"text\":\"x\",\"index\":0,"
      "\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":{"
      "\"prompt_tokens\":0,\"completion_tokens\":0,\"total_tokens\":0}}");
  mg_buf_free(&out);
}

static void test_wrap_fields_and_escaping(void **state) {
  /* Quotes, backslash, newline, tab, a control byte, DEL, accents, a
   * non-BMP emoji, and an embedded NUL. */
  static const char text[] = "He said \"hi\\\"\n\ttab \x01 \x7f h\xc3\xa9llo "
                             "\xe2\x9c\x93 \xf0\x9f\x98\x80 nul:\0end";
  struct mg_json_doc d;
  struct mg_buf out, dec;
  int64_t n;
  (void)state;

  mg_json_init(&d, 1000);
  mg_buf_init(&out, 1 << 16);
  mg_buf_init(&dec, 1 << 16);
  assert_int_equal(mg_answer_wrap(&out, MG_ANSWER_CHAT, "id\"1", -5,
                                  "m\\odel", text, sizeof(text) - 1),
                   0);
  parse_ok(&d, out.data, out.len);
  assert_str_at(&d, 0, "/id", "id\"1", 4);
  assert_str_at(&d, 0, "/object", "chat.completion", 15);
  assert_raw_at(&d, 0, "/created", "-5");
  assert_str_at(&d, 0, "/model", "m\\odel", 6);
  assert_int_equal(d.toks[mg_json_pointer(&d, 0, "/choices")].count, 1);
  assert_raw_at(&d, 0, "/choices/0/index", "0");
  assert_str_at(&d, 0, "/choices/0/message/role", "assistant", 9);
  assert_str_at(&d, 0, "/choices/0/message/content", text, sizeof(text) - 1);
  assert_raw_at(&d, 0, "/choices/0/logprobs", "null");
  assert_str_at(&d, 0, "/choices/0/finish_reason", "stop", 4);
  assert_int_equal(mg_json_int(&d, mg_json_pointer(&d, 0, "/usage/total_tokens"),
                               &n),
                   0);
  assert_int_equal(n, 0);
  /* The line stays one line: nothing raw below 0x20 in the output. */
  {
    size_t i;
    for (i = 0; i < out.len; i++)
      assert_true((unsigned char)out.data[i] >= 0x20);
  }

  mg_buf_reset(&out);
  assert_int_equal(mg_answer_wrap(&out, MG_ANSWER_COMPLETION, "c", 1, "m", text,
                                  sizeof(text) - 1),
                   0);
  parse_ok(&d, out.data, out.len);
  assert_str_at(&d, 0, "/object", "text_completion", 15);
  assert_str_at(&d, 0, "/choices/0/text", text, sizeof(text) - 1);
  assert_raw_at(&d, 0, "/choices/0/index", "0");
  assert_absent(&d, 0, "/choices/0/message");

  /* Invalid UTF-8 (a Latin-1 service): still valid JSON, with U+FFFD. */
  mg_buf_reset(&out);
  assert_int_equal(mg_answer_wrap(&out, MG_ANSWER_CHAT, "c", 1, "m",
                                  "caf\xe9 \xc3 \xed\xa0\x80!", 11),
                   0);
  parse_ok(&d, out.data, out.len);
  assert_int_equal(
      mg_json_str_decode(&d, mg_json_pointer(&d, 0, "/choices/0/message/content"),
                         &dec),
      0);
  assert_string_equal(dec.data, "caf\xef\xbf\xbd \xef\xbf\xbd \xef\xbf\xbd"
                                "\xef\xbf\xbd\xef\xbf\xbd!");

  /* Empty text, NULL text of length 0. */
  mg_buf_reset(&out);
  assert_int_equal(mg_answer_wrap(&out, MG_ANSWER_CHAT, "c", 1, "m", NULL, 0),
                   0);
  parse_ok(&d, out.data, out.len);
  assert_str_at(&d, 0, "/choices/0/message/content", "", 0);
  mg_buf_free(&dec);
  mg_buf_free(&out);
  mg_json_free(&d);
}

static void test_wrap_errors(void **state) {
  struct mg_buf out;
  (void)state;
  mg_buf_init(&out, 1 << 16);
  assert_int_equal(mg_buf_puts(&out, "keep"), 0);
  assert_int_equal(mg_answer_wrap(&out, MG_ANSWER_CHAT, NULL, 1, "m", "x", 1),
                   -EINVAL);
  assert_int_equal(mg_answer_wrap(&out, MG_ANSWER_CHAT, "i", 1, NULL, "x", 1),
                   -EINVAL);
  assert_int_equal(mg_answer_wrap(&out, MG_ANSWER_CHAT, "i", 1, "m", NULL, 1),
                   -EINVAL);
  assert_int_equal(
      mg_answer_wrap_sse(&out, MG_ANSWER_CHAT, "i", 1, "m", NULL, 1), -EINVAL);
  /* Past the ceiling: -E2BIG, and out as it was. */
  out.max = 40;
  assert_int_equal(mg_answer_wrap(&out, MG_ANSWER_CHAT, "i", 1, "m", "x", 1),
                   -E2BIG);
  assert_int_equal(
      mg_answer_wrap_sse(&out, MG_ANSWER_COMPLETION, "i", 1, "m", "x", 1),
      -E2BIG);
  assert_string_equal(out.data, "keep");
  mg_buf_free(&out);
}

static void test_wrap_sse_chat(void **state) {
  static const char text[] = "Line one\nline \"two\" \xe2\x9c\x93";
  struct mg_json_doc d;
  struct mg_buf out;
  struct sse ev;
  size_t i;
  (void)state;

  mg_json_init(&d, 1000);
  mg_buf_init(&out, 1 << 16);
  assert_int_equal(mg_answer_wrap_sse(&out, MG_ANSWER_CHAT, "chatcmpl-mg-3",
                                      1718000001, "faq", text,
                                      sizeof(text) - 1),
                   0);
  split_sse(out.data, out.len, &ev);
  assert_int_equal(ev.n, 4);
  for (i = 0; i < 3; i++) {
    parse_ok(&d, ev.data[i].p, ev.data[i].len);
    assert_str_at(&d, 0, "/id", "chatcmpl-mg-3", 13);
    assert_str_at(&d, 0, "/object", "chat.completion.chunk", 21);
    assert_raw_at(&d, 0, "/created", "1718000001");
    assert_str_at(&d, 0, "/model", "faq", 3);
    assert_int_equal(d.toks[mg_json_pointer(&d, 0, "/choices")].count, 1);
    assert_raw_at(&d, 0, "/choices/0/index", "0");
    assert_raw_at(&d, 0, "/choices/0/logprobs", "null");
    assert_absent(&d, 0, "/usage");
  }
  parse_ok(&d, ev.data[0].p, ev.data[0].len);
  assert_str_at(&d, 0, "/choices/0/delta/role", "assistant", 9);
  assert_str_at(&d, 0, "/choices/0/delta/content", "", 0);
  assert_raw_at(&d, 0, "/choices/0/finish_reason", "null");
  parse_ok(&d, ev.data[1].p, ev.data[1].len);
  assert_absent(&d, 0, "/choices/0/delta/role");
  assert_str_at(&d, 0, "/choices/0/delta/content", text, sizeof(text) - 1);
  assert_raw_at(&d, 0, "/choices/0/finish_reason", "null");
  parse_ok(&d, ev.data[2].p, ev.data[2].len);
  assert_raw_at(&d, 0, "/choices/0/delta", "{}");
  assert_str_at(&d, 0, "/choices/0/finish_reason", "stop", 4);
  /* The exact bytes of the role event. */
  assert_true(mg_str_eq_c(
      ev.data[0],
      "{\"id\":\"chatcmpl-mg-3\",\"object\":\"chat.completion.chunk\","
      "\"created\":1718000001,\"model\":\"faq\",\"choices\":[{\"index\":0,"
      "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,"
      "\"finish_reason\":null}]}"));
  mg_buf_free(&out);
  mg_json_free(&d);
}

static void test_wrap_sse_completion(void **state) {
  struct mg_json_doc d;
  struct mg_buf out;
  struct sse ev;
  (void)state;

  mg_json_init(&d, 1000);
  mg_buf_init(&out, 1 << 16);
  assert_int_equal(mg_buf_puts(&out, "data: {\"earlier\":1}\n\n"), 0);
  assert_int_equal(mg_answer_wrap_sse(&out, MG_ANSWER_COMPLETION, "cmpl-4", 9,
                                      "faq", "a\n\nb", 4),
                   0);
  split_sse(out.data, out.len, &ev);
  assert_int_equal(ev.n, 4); /* appended after what was there */
  parse_ok(&d, ev.data[1].p, ev.data[1].len);
  assert_str_at(&d, 0, "/object", "text_completion", 15);
  assert_str_at(&d, 0, "/choices/0/text", "a\n\nb", 4);
  assert_raw_at(&d, 0, "/choices/0/index", "0");
  assert_raw_at(&d, 0, "/choices/0/finish_reason", "null");
  parse_ok(&d, ev.data[2].p, ev.data[2].len);
  assert_str_at(&d, 0, "/choices/0/text", "", 0);
  assert_str_at(&d, 0, "/choices/0/finish_reason", "stop", 4);
  assert_absent(&d, 0, "/choices/0/delta");
  mg_buf_free(&out);
  mg_json_free(&d);
}

/* ---- replay ------------------------------------------------------------- */

/* A real n=2 chat completion (gpt-4o-mini with logprobs and n=2), as the
 * upstream sent it: escapes, unicode, refusal null, usage details. */
static const char chat_n2[] =
    "{\n  \"id\": \"chatcmpl-AbC123\",\n  \"object\": \"chat.completion\",\n"
    "  \"created\": 1727000000,\n  \"model\": \"gpt-4o-mini-2024-07-18\",\n"
    "  \"choices\": [\n    {\n      \"index\": 0,\n      \"message\": {\n"
    "        \"role\": \"assistant\",\n        \"content\": \"Caf\\u00e9 "
    "\\\"au lait\\\"\\nis \xe2\x98\x95.\",\n        \"refusal\": null\n"
    "      },\n      \"logprobs\": {\"content\": [{\"token\": \"Caf\", "
    "\"logprob\": -0.1, \"bytes\": [67,97,102], \"top_logprobs\": []}], "
    "\"refusal\": null},\n      \"finish_reason\": \"stop\"\n    },\n"
    "    {\n      \"index\": 1,\n      \"message\": {\n        \"role\": "
    "\"assistant\",\n        \"content\": \"Second answer, cut\",\n"
    "        \"refusal\": null\n      },\n      \"logprobs\": null,\n"
    "      \"finish_reason\": \"length\"\n    }\n  ],\n  \"usage\": {\n"
    "    \"prompt_tokens\": 21,\n    \"completion_tokens\": 17,\n"
    "    \"total_tokens\": 38,\n    \"prompt_tokens_details\": "
    "{\"cached_tokens\": 0}\n  },\n  \"system_fingerprint\": \"fp_f85bea6784\"\n"
    "}\n";

/* Concatenate the string at pointer key of every event of choice idx. */
static void concat_field(const struct sse *ev, int idx, const char *key,
                         struct mg_buf *cat, size_t *nev) {
  struct mg_json_doc d;
  size_t i;
  mg_json_init(&d, 10000);
  *nev = 0;
  for (i = 0; i + 1 < ev->n; i++) {
    uint32_t ch, c, v;
    int64_t index;
    parse_ok(&d, ev->data[i].p, ev->data[i].len);
    ch = mg_json_getc(&d, 0, "choices");
    if (ch == MG_JSON_NOTFOUND || d.toks[ch].count == 0)
      continue;
    c = mg_json_at(&d, ch, 0);
    assert_int_equal(mg_json_int(&d, mg_json_getc(&d, c, "index"), &index), 0);
    if (index != idx)
      continue;
    (*nev)++;
    v = mg_json_pointer(&d, c, key);
    if (v != MG_JSON_NOTFOUND && d.toks[v].type == MG_JSON_STRING)
      assert_int_equal(mg_json_str_decode(&d, v, cat), 0);
  }
  mg_json_free(&d);
}

static void test_replay_chat_n2(void **state) {
  struct mg_json_doc src, d;
  struct mg_buf out, cat, want;
  struct sse ev;
  size_t i, nev;
  (void)state;

  mg_json_init(&src, 10000);
  mg_json_init(&d, 10000);
  mg_buf_init(&out, 1 << 16);
  mg_buf_init(&cat, 1 << 16);
  mg_buf_init(&want, 1 << 16);
  parse_ok(&src, chat_n2, sizeof(chat_n2) - 1);
  assert_int_equal(mg_answer_replay_sse(&src, &out), 0);
  split_sse(out.data, out.len, &ev);
  /* 3 per choice, usage, [DONE] */
  assert_int_equal(ev.n, 8);

  for (i = 0; i + 1 < ev.n; i++) {
    parse_ok(&d, ev.data[i].p, ev.data[i].len);
    assert_str_at(&d, 0, "/id", "chatcmpl-AbC123", 15);
    assert_str_at(&d, 0, "/object", "chat.completion.chunk", 21);
    assert_raw_at(&d, 0, "/created", "1727000000");
    assert_str_at(&d, 0, "/model", "gpt-4o-mini-2024-07-18", 22);
    assert_str_at(&d, 0, "/system_fingerprint", "fp_f85bea6784", 13);
  }

  /* Per choice: role first, content concatenates to the message's,
   * finish_reason only on the last event. */
  for (i = 0; i < 2; i++) {
    const char *ptr = i == 0 ? "/choices/0/message/content"
                             : "/choices/1/message/content";
    size_t first = i * 3;
    mg_buf_reset(&cat);
    mg_buf_reset(&want);
    concat_field(&ev, (int)i, "/delta/content", &cat, &nev);
    assert_int_equal(nev, 3);
    assert_int_equal(mg_json_str_decode(&src, mg_json_pointer(&src, 0, ptr),
                                        &want),
                     0);
    assert_int_equal(cat.len, want.len);
    assert_memory_equal(cat.data, want.data, want.len);

    parse_ok(&d, ev.data[first].p, ev.data[first].len);
    assert_str_at(&d, 0, "/choices/0/delta/role", "assistant", 9);
    assert_raw_at(&d, 0, "/choices/0/finish_reason", "null");
    parse_ok(&d, ev.data[first + 1].p, ev.data[first + 1].len);
    assert_absent(&d, 0, "/choices/0/delta/role");
    assert_raw_at(&d, 0, "/choices/0/finish_reason", "null");
    parse_ok(&d, ev.data[first + 2].p, ev.data[first + 2].len);
    assert_raw_at(&d, 0, "/choices/0/delta", "{}");
    assert_str_at(&d, 0, "/choices/0/finish_reason", i == 0 ? "stop" : "length",
                  i == 0 ? 4 : 6);
  }
  /* The content bytes are the upstream's, escapes and all. */
  parse_ok(&d, ev.data[1].p, ev.data[1].len);
  assert_raw_at(&d, 0, "/choices/0/delta/content",
                "\"Caf\\u00e9 \\\"au lait\\\"\\nis \xe2\x98\x95.\"");
  /* Logprobs travel with the content, as in an upstream stream. */
  assert_raw_at(&d, 0, "/choices/0/logprobs/content/0/logprob", "-0.1");
  parse_ok(&d, ev.data[4].p, ev.data[4].len);
  assert_raw_at(&d, 0, "/choices/0/logprobs", "null");

  /* The usage chunk: no choices, the usage object's bytes without the
   * upstream's line breaks (they would end the event). */
  parse_ok(&d, ev.data[6].p, ev.data[6].len);
  assert_raw_at(&d, 0, "/choices", "[]");
  assert_raw_at(&d, 0, "/usage",
                "{\"prompt_tokens\":21,\"completion_tokens\":17,"
                "\"total_tokens\":38,\"prompt_tokens_details\":"
                "{\"cached_tokens\":0}}");

  mg_buf_free(&want);
  mg_buf_free(&cat);
  mg_buf_free(&out);
  mg_json_free(&d);
  mg_json_free(&src);
}

static void test_replay_tool_calls(void **state) {
  static const char body[] =
      "{\"id\":\"chatcmpl-t\",\"object\":\"chat.completion\",\"created\":5,"
      "\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
      "\"assistant\",\"content\":null,\"tool_calls\":[{\n  \"id\": \"call_a\",\n  "
      "\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
      "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}},{ }, {\n \"index\":7,\n"
      "\"id\":\"call_c\"}],\"refusal\":null},\"logprobs\":null,"
      "\"finish_reason\":\"tool_calls\"}]}";
  struct mg_json_doc src, d;
  struct mg_buf out;
  struct sse ev;
  (void)state;

  mg_json_init(&src, 1000);
  mg_json_init(&d, 1000);
  mg_buf_init(&out, 1 << 16);
  parse_ok(&src, body, sizeof(body) - 1);
  assert_int_equal(mg_answer_replay_sse(&src, &out), 0);
  split_sse(out.data, out.len, &ev);
  assert_int_equal(ev.n, 4); /* role, calls, finish, [DONE]: no usage */
  parse_ok(&d, ev.data[0].p, ev.data[0].len);
  assert_raw_at(&d, 0, "/choices/0/delta/content", "null");
  parse_ok(&d, ev.data[1].p, ev.data[1].len);
  assert_absent(&d, 0, "/choices/0/delta/content");
  assert_raw_at(&d, 0, "/choices/0/delta/tool_calls",
                "[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\","
                "\"function\":{\"name\":\"get_weather\",\"arguments\":"
                "\"{\\\"city\\\":\\\"Paris\\\"}\"}},{\"index\":1},"
                "{\"index\":7,\"id\":\"call_c\"}]");
  assert_str_at(&d, 0, "/choices/0/delta/tool_calls/0/function/arguments",
                "{\"city\":\"Paris\"}", 16);
  parse_ok(&d, ev.data[2].p, ev.data[2].len);
  assert_str_at(&d, 0, "/choices/0/finish_reason", "tool_calls", 10);
  mg_buf_free(&out);
  mg_json_free(&d);
  mg_json_free(&src);
}

static void test_replay_text_completion(void **state) {
  /* mg-mock's shape with logprobs, plus a second choice without index. */
  static const char body[] =
      "{\"id\":\"cmpl-mock-3\",\"object\":\"text_completion\",\"created\":"
      "1718000002,\"model\":\"davinci-002\",\"choices\":[{\"text\":\"Mock "
      "answer\\n\",\"index\":0,\"logprobs\":{\"tokens\":[\"Mock\",\" answer\"],"
      "\"token_logprobs\":[-0.1,-0.2],\"top_logprobs\":null,\"text_offset\":"
      "[0,4]},\"finish_reason\":\"stop\"},{\"text\":\"\",\"logprobs\":null,"
      "\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":1,"
      "\"completion_tokens\":2,\"total_tokens\":3}}";
  struct mg_json_doc src, d;
  struct mg_buf out, cat;
  struct sse ev;
  size_t nev;
  (void)state;

  mg_json_init(&src, 1000);
  mg_json_init(&d, 1000);
  mg_buf_init(&out, 1 << 16);
  mg_buf_init(&cat, 1 << 16);
  parse_ok(&src, body, sizeof(body) - 1);
  assert_int_equal(mg_answer_replay_sse(&src, &out), 0);
  split_sse(out.data, out.len, &ev);
  assert_int_equal(ev.n, 6); /* 2 per choice, usage, [DONE] */
  concat_field(&ev, 0, "/text", &cat, &nev);
  assert_int_equal(nev, 2);
  assert_string_equal(cat.data, "Mock answer\n");

  parse_ok(&d, ev.data[0].p, ev.data[0].len);
  assert_str_at(&d, 0, "/object", "text_completion", 15);
  assert_str_at(&d, 0, "/id", "cmpl-mock-3", 11);
  assert_raw_at(&d, 0, "/choices/0/logprobs/token_logprobs", "[-0.1,-0.2]");
  assert_raw_at(&d, 0, "/choices/0/finish_reason", "null");
  assert_absent(&d, 0, "/choices/0/delta");
  parse_ok(&d, ev.data[1].p, ev.data[1].len);
  assert_str_at(&d, 0, "/choices/0/text", "", 0);
  assert_str_at(&d, 0, "/choices/0/finish_reason", "stop", 4);
  /* The choice without an index gets its position. */
  parse_ok(&d, ev.data[2].p, ev.data[2].len);
  assert_raw_at(&d, 0, "/choices/0/index", "1");
  parse_ok(&d, ev.data[3].p, ev.data[3].len);
  assert_raw_at(&d, 0, "/choices/0/finish_reason", "null");
  parse_ok(&d, ev.data[4].p, ev.data[4].len);
  assert_raw_at(&d, 0, "/usage",
                "{\"prompt_tokens\":1,\"completion_tokens\":2,"
                "\"total_tokens\":3}");
  mg_buf_free(&cat);
  mg_buf_free(&out);
  mg_json_free(&d);
  mg_json_free(&src);
}

static void test_replay_invalid(void **state) {
  static const char *const bad[] = {
      "[]",
      "\"chat.completion\"",
      "{\"object\":\"list\",\"data\":[]}",
      "{\"object\":\"chat.completion.chunk\",\"choices\":[]}",
      "{\"choices\":[]}",
      "{\"object\":\"chat.completion\"}",
      "{\"object\":\"chat.completion\",\"choices\":{}}",
      "{\"object\":\"chat.completion\",\"choices\":[1]}",
      "{\"object\":\"chat.completion\",\"choices\":[{\"index\":0}]}",
      "{\"object\":\"chat.completion\",\"choices\":[{\"message\":\"hi\"}]}",
      "{\"object\":\"chat.completion\",\"choices\":[{\"message\":{"
      "\"content\":1}}]}",
      "{\"object\":\"chat.completion\",\"choices\":[{\"message\":{"
      "\"content\":\"a\"}},{\"message\":{\"tool_calls\":[1]}}]}",
      "{\"object\":\"chat.completion\",\"choices\":[{\"message\":{"
      "\"tool_calls\":{}}}]}",
      "{\"object\":\"text_completion\",\"choices\":[{\"message\":{"
      "\"content\":\"a\"}}]}",
      "{\"object\":\"text_completion\",\"choices\":[{\"text\":null}]}",
      NULL};
  struct mg_json_doc d;
  struct mg_buf out;
  size_t i;
  (void)state;

  mg_json_init(&d, 1000);
  mg_buf_init(&out, 1 << 16);
  assert_int_equal(mg_buf_puts(&out, "keep"), 0);
  assert_int_equal(mg_answer_replay_sse(&d, &out), -EINVAL); /* unscanned */
  for (i = 0; bad[i]; i++) {
    parse_ok(&d, bad[i], strlen(bad[i]));
    if (mg_answer_replay_sse(&d, &out) != -EINVAL)
      fail_msg("replayed %s", bad[i]);
    assert_string_equal(out.data, "keep");
  }
  /* No choices at all is a valid (if empty) answer. */
  {
    static const char empty[] = "{\"object\":\"chat.completion\",\"choices\":[]}";
    parse_ok(&d, empty, sizeof(empty) - 1);
  }
  assert_int_equal(mg_answer_replay_sse(&d, &out), 0);
  assert_string_equal(out.data, "keepdata: [DONE]\n\n");
  /* Past the ceiling: out as it was. */
  parse_ok(&d, chat_n2, sizeof(chat_n2) - 1);
  mg_buf_reset(&out);
  out.max = 300;
  assert_int_equal(mg_answer_replay_sse(&d, &out), -E2BIG);
  assert_int_equal(out.len, 0);
  mg_buf_free(&out);
  mg_json_free(&d);
}

/* ---- traditional text --------------------------------------------------- */

static void test_text(void **state) {
  struct mg_json_doc d;
  struct mg_buf tmp;
  const char *t = NULL;
  size_t n = 0;
  static const char plain[] = "We open at 9.\n";
  static const char json[] =
      "{\"answer\":\"Open 9-5\",\"esc\":\"line\\none \\u00e9\",\"n\":42,"
      "\"b\":false,\"nil\":null,\"o\":{\"deep\":[\"x\",\"y\"]}}";
  (void)state;

  mg_json_init(&d, 1000);
  mg_buf_init(&tmp, 1 << 16);
  /* No field: the whole body, JSON or not. */
  assert_int_equal(mg_answer_text(plain, sizeof(plain) - 1, NULL, &d, &tmp, &t,
                                  &n),
                   0);
  assert_ptr_equal(t, plain);
  assert_int_equal(n, sizeof(plain) - 1);
  assert_int_equal(mg_answer_text(json, sizeof(json) - 1, NULL, &d, &tmp, &t,
                                  &n),
                   0);
  assert_ptr_equal(t, json);
  assert_int_equal(n, sizeof(json) - 1);
  /* A field in a body that is not JSON: the whole body. */
  assert_int_equal(mg_answer_text(plain, sizeof(plain) - 1, "/answer", &d,
                                  &tmp, &t, &n),
                   0);
  assert_ptr_equal(t, plain);
  /* A plain string points into the body. */
  assert_int_equal(mg_answer_text(json, sizeof(json) - 1, "/answer", &d, &tmp,
                                  &t, &n),
                   0);
  assert_int_equal(n, 8);
  assert_memory_equal(t, "Open 9-5", 8);
  assert_true(t > json && t < json + sizeof(json));
  /* An escaped one is decoded into tmp. */
  assert_int_equal(mg_buf_puts(&tmp, "stale"), 0);
  assert_int_equal(mg_answer_text(json, sizeof(json) - 1, "/esc", &d, &tmp, &t,
                                  &n),
                   0);
  assert_ptr_equal(t, tmp.data);
  assert_int_equal(n, 11);
  assert_memory_equal(t, "line\none \xc3\xa9", 11);
  assert_int_equal(mg_answer_text(json, sizeof(json) - 1, "/o/deep/1", &d,
                                  &tmp, &t, &n),
                   0);
  assert_memory_equal(t, "y", 1);
  /* Numbers and booleans answer their JSON text. */
  assert_int_equal(mg_answer_text(json, sizeof(json) - 1, "/n", &d, &tmp, &t,
                                  &n),
                   0);
  assert_int_equal(n, 2);
  assert_memory_equal(t, "42", 2);
  assert_int_equal(mg_answer_text(json, sizeof(json) - 1, "/b", &d, &tmp, &t,
                                  &n),
                   0);
  assert_memory_equal(t, "false", 5);
  /* Missing, null, containers. */
  assert_int_equal(mg_answer_text(json, sizeof(json) - 1, "/nope", &d, &tmp,
                                  &t, &n),
                   -ENOENT);
  assert_int_equal(mg_answer_text(json, sizeof(json) - 1, "/nil", &d, &tmp, &t,
                                  &n),
                   -ENOENT);
  assert_int_equal(mg_answer_text(json, sizeof(json) - 1, "/o", &d, &tmp, &t,
                                  &n),
                   -ENOENT);
  assert_int_equal(mg_answer_text(json, sizeof(json) - 1, "answer", &d, &tmp,
                                  &t, &n),
                   -ENOENT);
  /* "" is the document itself: a JSON string body. */
  assert_int_equal(mg_answer_text("\"hi\"", 4, "", &d, &tmp, &t, &n), 0);
  assert_int_equal(n, 2);
  assert_memory_equal(t, "hi", 2);
  /* An empty body is an empty answer. */
  assert_int_equal(mg_answer_text("", 0, NULL, &d, &tmp, &t, &n), 0);
  assert_int_equal(n, 0);
  /* JSON past the scratch ceiling is not mistaken for text. */
  mg_json_free(&d);
  mg_json_init(&d, 3);
  assert_int_equal(mg_answer_text(json, sizeof(json) - 1, "/answer", &d, &tmp,
                                  &t, &n),
                   -E2BIG);
  mg_buf_free(&tmp);
  mg_json_free(&d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_wrap_chat_exact),
      cmocka_unit_test(test_wrap_fields_and_escaping),
      cmocka_unit_test(test_wrap_errors),
      cmocka_unit_test(test_wrap_sse_chat),
      cmocka_unit_test(test_wrap_sse_completion),
      cmocka_unit_test(test_replay_chat_n2),
      cmocka_unit_test(test_replay_tool_calls),
      cmocka_unit_test(test_replay_text_completion),
      cmocka_unit_test(test_replay_invalid),
      cmocka_unit_test(test_text),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
