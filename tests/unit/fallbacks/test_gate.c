/* test_gate.c - the confidence gate (src/fallbacks/gate.c): confidence
 * sources, stream accumulation, and the logprobs rewrites of request and
 * response bodies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <math.h>

#include "fallbacks/gate.h"

/* Expected confidences are computed here from the literal logprobs, never
 * by the code under test; exp() of the same double agrees to the last bit,
 * a different summation order to a few ulps. */
#define assert_near(got, want)                                                \
  do {                                                                        \
    double g_ = (got), w_ = (want);                                           \
    if (!(fabs(g_ - w_) <= 1e-12 * (fabs(w_) > 1 ? fabs(w_) : 1)))            \
      fail_msg("%s = %.17g, want %.17g", #got, g_, w_);                       \
  } while (0)

static void parse_ok(struct mg_json_doc *d, const char *s) {
  struct mg_json_error err = {0, NULL};
  if (mg_json_parse(d, s, strlen(s), &err) != 0)
    fail_msg("parse failed at %zu: %s: %s", err.offset,
             err.msg ? err.msg : "?", s);
}

/* Confidence of body for a source string; rc returned, value in *conf. */
static int conf_of(const char *source, const char *body, const char *header,
                   double *conf) {
  struct mg_gate_cfg g;
  struct mg_json_doc d;
  int rc;

  memset(&g, 0, sizeof(g));
  g.enabled = true;
  assert_int_equal(mg_gate_parse_source(&g, source), 0);
  mg_json_init(&d, 10000);
  if (body)
    parse_ok(&d, body);
  *conf = -42;
  rc = mg_gate_confidence(&g, body ? &d : NULL, header, conf);
  mg_json_free(&d);
  free(g.header);
  free(g.pointer);
  return rc;
}

static double conf_ok(const char *source, const char *body,
                      const char *header) {
  double c;
  int rc = conf_of(source, body, header, &c);
  if (rc != 0)
    fail_msg("%s: rc=%d for %s", source, rc, body ? body : header);
  return c;
}

static void assert_enoent(const char *source, const char *body,
                          const char *header) {
  double c;
  int rc = conf_of(source, body, header, &c);
  if (rc != -ENOENT)
    fail_msg("%s: rc=%d (conf %g), want -ENOENT for %s", source, rc, c,
             body ? body : header ? header : "(null)");
  assert_true(c == -42); /* untouched */
}

/* A chat completion the way OpenAI sends one with logprobs: true. */
#define CHAT_LP                                                               \
  "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1,"     \
  "\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"message\":{\"role\":"    \
  "\"assistant\",\"content\":\"Paris is nice\",\"refusal\":null},"           \
  "\"logprobs\":{\"content\":["                                               \
  "{\"token\":\"Paris\",\"logprob\":-0.05,\"bytes\":[80,97,114,105,115],"    \
  "\"top_logprobs\":[{\"token\":\"Paris\",\"logprob\":-0.05,\"bytes\":null}" \
  "]},"                                                                       \
  "{\"token\":\" is\",\"logprob\":-1.2,\"bytes\":[32,105,115],"              \
  "\"top_logprobs\":[]},"                                                     \
  "{\"token\":\" nice\",\"logprob\":-1e-4,\"bytes\":null,"                   \
  "\"top_logprobs\":[]},"                                                     \
  "{\"token\":\".\",\"logprob\":-0.35,\"bytes\":[46],\"top_logprobs\":[]}"   \
  "],\"refusal\":null},\"finish_reason\":\"stop\"}],"                         \
  "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,"                   \
  "\"total_tokens\":13}}"

static void test_logprobs_chat(void **state) {
  double lps[] = {-0.05, -1.2, -1e-4, -0.35};
  double sum = lps[0] + lps[1] + lps[2] + lps[3];
  (void)state;
  assert_near(conf_ok("logprobs_mean", CHAT_LP, NULL), exp(sum / 4));
  assert_near(conf_ok("logprobs_min", CHAT_LP, NULL), exp(-1.2));
  /* The same numbers worked out by hand: mean -0.400025. */
  assert_near(conf_ok("logprobs_mean", CHAT_LP, NULL), 0.6703032882439617);
  assert_near(conf_ok("logprobs_min", CHAT_LP, NULL), 0.30119421191220214);
  /* Headers do not matter to a logprobs source. */
  assert_near(conf_ok("logprobs_min", CHAT_LP, "0.99"), exp(-1.2));
}

static void test_logprobs_completions(void **state) {
  /* The legacy shape; the first token of an echoed prompt has no logprob. */
  const char *body =
      "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,"
      "\"model\":\"davinci-002\",\"choices\":[{\"text\":\" a b c\","
      "\"index\":0,\"logprobs\":{\"tokens\":[\"x\",\" a\",\" b\",\" c\"],"
      "\"token_logprobs\":[null,-0.5,-1.5,-0.25],"
      "\"top_logprobs\":[null,{\" a\":-0.5},{\" b\":-1.5},{\" c\":-0.25}],"
      "\"text_offset\":[0,1,3,5]},\"finish_reason\":\"length\"}]}";
  (void)state;
  assert_near(conf_ok("logprobs_mean", body, NULL), exp(-2.25 / 3));
  assert_near(conf_ok("logprobs_min", body, NULL), exp(-1.5));
}

static void test_logprobs_first_choice_by_index(void **state) {
  /* choices[] out of order: the gate reads the choice with index 0. */
  const char *body =
      "{\"object\":\"chat.completion\",\"choices\":["
      "{\"index\":1,\"message\":{\"content\":\"b\"},\"logprobs\":{\"content\":"
      "[{\"token\":\"b\",\"logprob\":-3}]}},"
      "{\"index\":0,\"message\":{\"content\":\"a\"},\"logprobs\":{\"content\":"
      "[{\"token\":\"a\",\"logprob\":-0.1},{\"token\":\"!\",\"logprob\":-0.3}"
      "]}}]}";
  (void)state;
  assert_near(conf_ok("logprobs_mean", body, NULL), exp(-0.2));
  assert_near(conf_ok("logprobs_min", body, NULL), exp(-0.3));
}

static void test_logprobs_edge_values(void **state) {
  (void)state;
  /* A positive logprob is a bug upstream: it counts as certain, no more. */
  assert_near(conf_ok("logprobs_mean",
                      "{\"choices\":[{\"logprobs\":{\"content\":["
                      "{\"logprob\":0.7},{\"logprob\":-0.4}]}}]}",
                      NULL),
              exp(-0.2));
  assert_near(conf_ok("logprobs_min",
                      "{\"choices\":[{\"logprobs\":{\"content\":["
                      "{\"logprob\":0.7}]}}]}",
                      NULL),
              1.0);
  /* -1e999 overflows to -inf: probability 0, not NaN. */
  assert_near(conf_ok("logprobs_mean",
                      "{\"choices\":[{\"logprobs\":{\"content\":["
                      "{\"logprob\":-1e999},{\"logprob\":-0.4}]}}]}",
                      NULL),
              0.0);
  /* OpenAI's floor for a token it would never pick. */
  assert_near(conf_ok("logprobs_min",
                      "{\"choices\":[{\"logprobs\":{\"content\":["
                      "{\"logprob\":-9999.0},{\"logprob\":0}]}}]}",
                      NULL),
              0.0);
  /* Malformed entries are skipped, well-formed ones still count. */
  assert_near(conf_ok("logprobs_mean",
                      "{\"choices\":[{\"logprobs\":{\"content\":["
                      "{\"logprob\":\"-9\"},7,null,{\"token\":\"x\"},"
                      "{\"logprob\":-0.6}]}}]}",
                      NULL),
              exp(-0.6));
}

/* Logprobs are read without strtod when that is exact: every spelling
 * must give strtod's double, bit for bit. */
static void test_logprobs_number_spellings(void **state) {
  static const char *const fixed[] = {
      "-0", "-0.0", "0", "-1", "-0.0021447763", "-1.9816675e-06",
      "-3.1281633E-07", "-0.00020735491", "-12.5", "-1e0", "-1E+2",
      "-9007199254740991", "-9007199254740993", "-0.12345678901234567",
      "-123456789012345678901234567890", "-1e-22", "-1e-23", "-4.5e-300",
      "-1.5e22", "-2e23", "-0.000000000000000000000001234", "-1e-0400",
      "-1e999"};
  const size_t nfixed = sizeof(fixed) / sizeof(fixed[0]);
  char body[256], num[64];
  unsigned seed = 12345;
  size_t i;
  (void)state;

  for (i = 0; i < nfixed + 2000; i++) {
    const char *s = i < nfixed ? fixed[i] : num;
    double c, want;
    if (i >= nfixed) {
      /* Random short decimals, plain and with exponents, the way model
       * servers print float32 logprobs. */
      unsigned a, b, k;
      seed = seed * 1103515245u + 12345u;
      a = (seed >> 8) % 100000u;
      seed = seed * 1103515245u + 12345u;
      b = (seed >> 8) % 100000000u;
      k = (seed >> 4) % 4;
      if (k == 0)
        snprintf(num, sizeof(num), "-%u.%08u", a % 20, b);
      else if (k == 1)
        snprintf(num, sizeof(num), "-%u.%07ue-%02u", a % 10, b % 10000000u,
                 a % 40);
      else if (k == 2)
        snprintf(num, sizeof(num), "-0.%05u%u", a, b);
      else
        snprintf(num, sizeof(num), "-%u%u.%ue-%u", a, b, a, b % 30);
    }
    snprintf(body, sizeof(body),
             "{\"choices\":[{\"logprobs\":{\"content\":[{\"logprob\":%s}]}}]}",
             s);
    want = strtod(s, NULL);
    if (want > 0)
      want = 0;
    want = exp(want);
    c = conf_ok("logprobs_min", body, NULL);
    if (memcmp(&c, &want, sizeof(c)) != 0)
      fail_msg("%s: %.17g, want %.17g", s, c, want);
  }
}

static void test_logprobs_missing(void **state) {
  (void)state;
  assert_enoent("logprobs_mean",
                "{\"choices\":[{\"index\":0,\"message\":{\"content\":\"hi\"},"
                "\"logprobs\":null,\"finish_reason\":\"stop\"}]}",
                NULL);
  assert_enoent("logprobs_min",
                "{\"choices\":[{\"index\":0,\"message\":{\"content\":\"hi\"}}]}",
                NULL);
  assert_enoent("logprobs_mean",
                "{\"choices\":[{\"logprobs\":{\"content\":[]}}]}", NULL);
  assert_enoent("logprobs_mean",
                "{\"choices\":[{\"logprobs\":{\"content\":null,"
                "\"refusal\":[{\"token\":\"No\",\"logprob\":-0.1}]}}]}",
                NULL);
  assert_enoent("logprobs_mean",
                "{\"choices\":[{\"text\":\"x\",\"logprobs\":{\"tokens\":[\"x\"],"
                "\"token_logprobs\":[null]}}]}",
                NULL);
  assert_enoent("logprobs_mean", "{\"choices\":[]}", NULL);
  assert_enoent("logprobs_mean", "{\"error\":{\"message\":\"x\"}}", NULL);
  assert_enoent("logprobs_mean", "[1,2,3]", NULL);
  assert_enoent("logprobs_mean", NULL, NULL);
  /* Only choice 0 counts: choice 1's tokens are another answer. */
  assert_enoent("logprobs_mean",
                "{\"choices\":[{\"index\":0,\"logprobs\":null},{\"index\":1,"
                "\"logprobs\":{\"content\":[{\"logprob\":-1}]}}]}",
                NULL);
}

static void test_header_source(void **state) {
  (void)state;
  assert_near(conf_ok("header:x-confidence", NULL, "0.75"), 0.75);
  assert_near(conf_ok("header:x-confidence", NULL, "  0.5\t"), 0.5);
  assert_near(conf_ok("header:x-confidence", NULL, "-3"), -3.0);
  assert_near(conf_ok("header:x-confidence", NULL, "+12.5"), 12.5);
  assert_near(conf_ok("header:x-confidence", NULL, "1e-2"), 0.01);
  assert_near(conf_ok("header:x-confidence", NULL, ".25"), 0.25);
  /* The body does not matter to a header source. */
  assert_near(conf_ok("header:x-confidence", "{\"confidence\":0.1}", "0.9"),
              0.9);
  assert_enoent("header:x-confidence", NULL, NULL);
  assert_enoent("header:x-confidence", NULL, "");
  assert_enoent("header:x-confidence", NULL, "   ");
  assert_enoent("header:x-confidence", NULL, "abc");
  assert_enoent("header:x-confidence", NULL, "0.5abc");
  assert_enoent("header:x-confidence", NULL, "0.5 0.6");
  assert_enoent("header:x-confidence", NULL, "0,5");
  assert_enoent("header:x-confidence", NULL, "nan");
  assert_enoent("header:x-confidence", NULL, "inf");
  assert_enoent("header:x-confidence", NULL, "-Infinity");
  assert_enoent("header:x-confidence", NULL, "0x1p-1");
  assert_enoent("header:x-confidence", NULL, "1e999");
  assert_enoent("header:x-confidence", NULL, "1e");
  assert_enoent("header:x-confidence", NULL, "-");
  assert_enoent("header:x-confidence", NULL, ".");
  assert_enoent("header:x-confidence", NULL,
                "0.0000000000000000000000000000000000000000000000000000000000"
                "00000001");
}

static void test_json_source_in_response(void **state) {
  (void)state;
  assert_near(conf_ok("json:/confidence",
                      "{\"choices\":[],\"confidence\":0.9}", NULL),
              0.9);
  assert_near(conf_ok("json:/meta/scores/1",
                      "{\"meta\":{\"scores\":[0.1,0.62]}}", NULL),
              0.62);
  /* RFC 6901 escapes: "~1" is '/', "~0" is '~'. */
  assert_near(conf_ok("json:/a~1b/c~0d", "{\"a/b\":{\"c~d\":7}}", NULL), 7.0);
  /* A numeric string counts. */
  assert_near(conf_ok("json:/confidence", "{\"confidence\":\" 0.8 \"}", NULL),
              0.8);
  assert_near(conf_ok("json:/confidence", "{\"confidence\":\"\\u0030.5\"}",
                      NULL),
              0.5);
  /* The response wins over the content when both have the field. */
  assert_near(conf_ok("json:/confidence",
                      "{\"confidence\":0.3,\"choices\":[{\"message\":{"
                      "\"content\":\"{\\\"confidence\\\":0.9}\"}}]}",
                      NULL),
              0.3);
}

static void test_json_source_in_content(void **state) {
  /* A model told to answer {"answer": ..., "confidence": ...}: the content
   * is a JSON text inside a JSON string, escaped. */
  const char *chat =
      "{\"id\":\"c\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,"
      "\"message\":{\"role\":\"assistant\",\"content\":\"{\\n  \\\"answer\\\": "
      "\\\"Paris \\\\u00e9\\\",\\n  \\\"confidence\\\": 0.82,\\n  \\\"meta\\\":"
      " {\\\"score\\\": \\\"0.4\\\"}\\n}\"},\"finish_reason\":\"stop\"}]}";
  const char *text =
      "{\"object\":\"text_completion\",\"choices\":[{\"text\":"
      "\"{\\\"confidence\\\":0.31}\",\"index\":0}]}";
  (void)state;
  assert_near(conf_ok("json:/confidence", chat, NULL), 0.82);
  assert_near(conf_ok("json:/meta/score", chat, NULL), 0.4);
  assert_near(conf_ok("json:/confidence", text, NULL), 0.31);
  /* Something there that is not a number: look into the content. */
  assert_near(conf_ok("json:/confidence",
                      "{\"confidence\":\"high\",\"choices\":[{\"message\":{"
                      "\"content\":\"{\\\"confidence\\\":0.6}\"}}]}",
                      NULL),
              0.6);
  /* The whole content as the number. */
  assert_near(conf_ok("json:", "{\"choices\":[{\"message\":{\"content\":"
                               "\"0.7\"}}]}",
                      NULL),
              0.7);
  /* Unescaped content (no backslash) is parsed in place. */
  assert_near(conf_ok("json:/1", "{\"choices\":[{\"message\":{\"content\":"
                                 "\"[1, 2.5]\"}}]}",
                      NULL),
              2.5);
}

static void test_json_source_missing(void **state) {
  (void)state;
  assert_enoent("json:/confidence",
                "{\"choices\":[{\"message\":{\"content\":\"Paris.\"}}]}", NULL);
  assert_enoent("json:/confidence",
                "{\"choices\":[{\"message\":{\"content\":\"{\\\"x\\\":1}\"}}]}",
                NULL);
  assert_enoent("json:/confidence",
                "{\"confidence\":\"high\",\"choices\":[{\"message\":{"
                "\"content\":\"{\\\"confidence\\\":\\\"very\\\"}\"}}]}",
                NULL);
  assert_enoent("json:/confidence",
                "{\"choices\":[{\"message\":{\"content\":null,\"tool_calls\":"
                "[]}}]}",
                NULL);
  assert_enoent("json:/confidence",
                "{\"confidence\":{\"v\":1},\"choices\":[]}", NULL);
  assert_enoent("json:/confidence", "{\"confidence\":true}", NULL);
  assert_enoent("json:/confidence", "{\"confidence\":1e999}", NULL);
  assert_enoent("json:/confidence", NULL, NULL);
}

static void test_parse_source(void **state) {
  static const char *const bad[] = {
      "", "logprobs", "logprobs_mean ", "LOGPROBS_MEAN", "header:",
      "header:x y", "header:x:y", "header: x", "header:x\t",
      "header:\xc3\xa9", "json:a", "json:confidence", "json:/a~", "json:/a~2",
      "json", "jsonx:/a", "mean", NULL};
  struct mg_gate_cfg g;
  size_t i;
  (void)state;

  memset(&g, 0, sizeof(g));
  assert_int_equal(mg_gate_parse_source(&g, "logprobs_mean"), 0);
  assert_int_equal(g.source, MG_CONF_LOGPROBS_MEAN);
  assert_int_equal(mg_gate_parse_source(&g, "logprobs_min"), 0);
  assert_int_equal(g.source, MG_CONF_LOGPROBS_MIN);
  assert_int_equal(mg_gate_parse_source(&g, "header:X-Model-Confidence"), 0);
  assert_int_equal(g.source, MG_CONF_HEADER);
  assert_string_equal(g.header, "X-Model-Confidence");
  assert_null(g.pointer);
  /* Parsing again replaces (and frees) what was there. */
  assert_int_equal(mg_gate_parse_source(&g, "json:/a/0/b~1c"), 0);
  assert_int_equal(g.source, MG_CONF_JSON);
  assert_string_equal(g.pointer, "/a/0/b~1c");
  assert_null(g.header);
  assert_int_equal(mg_gate_parse_source(&g, "json:"), 0);
  assert_string_equal(g.pointer, "");
  assert_int_equal(mg_gate_parse_source(&g, "json:/"), 0);
  assert_string_equal(g.pointer, "/");

  for (i = 0; bad[i]; i++) {
    if (mg_gate_parse_source(&g, bad[i]) != -EINVAL)
      fail_msg("accepted \"%s\"", bad[i]);
    /* A failed parse leaves g as it was. */
    assert_int_equal(g.source, MG_CONF_JSON);
    assert_string_equal(g.pointer, "/");
  }
  assert_int_equal(mg_gate_parse_source(&g, NULL), -EINVAL);
  assert_int_equal(mg_gate_parse_source(&g, "logprobs_mean"), 0);
  assert_null(g.header);
  assert_null(g.pointer);
  assert_true(mg_gate_needs_logprobs(&g) == false); /* not enabled */
  g.enabled = true;
  assert_true(mg_gate_needs_logprobs(&g));
}

/* ---- streams ------------------------------------------------------------ */

static void test_acc_chat_stream(void **state) {
  /* A chat stream with logprobs: true, event by event (the data after
   * "data: "): role, three content deltas, finish, usage, [DONE]. */
  static const char *const events[] = {
      "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":"
      "1718000000,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_1\","
      "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":"
      "\"\",\"refusal\":null},\"logprobs\":{\"content\":[],\"refusal\":null},"
      "\"finish_reason\":null}],\"usage\":null}",
      "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":"
      "1718000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,"
      "\"delta\":{\"content\":\"The\"},\"logprobs\":{\"content\":[{\"token\":"
      "\"The\",\"logprob\":-0.0021,\"bytes\":[84,104,101],\"top_logprobs\":"
      "[]}],\"refusal\":null},\"finish_reason\":null}],\"usage\":null}",
      "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":"
      "1718000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,"
      "\"delta\":{\"content\":\" capital is\"},\"logprobs\":{\"content\":["
      "{\"token\":\" capital\",\"logprob\":-0.73,\"bytes\":null,"
      "\"top_logprobs\":[]},{\"token\":\" is\",\"logprob\":-0.04,\"bytes\":"
      "null,\"top_logprobs\":[]}],\"refusal\":null},\"finish_reason\":null}],"
      "\"usage\":null}",
      "not json at all",
      "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":"
      "1718000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,"
      "\"delta\":{\"content\":\" Paris.\"},\"logprobs\":{\"content\":[{"
      "\"token\":\" Paris\",\"logprob\":-1.9,\"bytes\":null,\"top_logprobs\":"
      "[]},{\"token\":\".\",\"logprob\":-0.1,\"bytes\":null,\"top_logprobs\":"
      "[]}],\"refusal\":null},\"finish_reason\":null}],\"usage\":null}",
      "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":"
      "1718000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,"
      "\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":"
      "null}",
      "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":"
      "1718000000,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{"
      "\"prompt_tokens\":12,\"completion_tokens\":5,\"total_tokens\":17}}",
      "[DONE]",
      NULL};
  double lps[] = {-0.0021, -0.73, -0.04, -1.9, -0.1};
  double sum = 0, c = -1;
  struct mg_gate_acc a;
  struct mg_json_doc scratch;
  size_t i;
  (void)state;

  for (i = 0; i < 5; i++)
    sum += lps[i];
  mg_json_init(&scratch, 1000);
  mg_gate_acc_init(&a);
  assert_int_equal(mg_gate_acc_confidence(&a, MG_CONF_LOGPROBS_MEAN, &c),
                   -ENOENT);
  for (i = 0; events[i]; i++)
    mg_gate_acc_event(&a, events[i], strlen(events[i]), &scratch);
  assert_int_equal(a.n, 5);
  assert_int_equal(mg_gate_acc_confidence(&a, MG_CONF_LOGPROBS_MEAN, &c), 0);
  assert_near(c, exp(sum / 5));
  assert_int_equal(mg_gate_acc_confidence(&a, MG_CONF_LOGPROBS_MIN, &c), 0);
  assert_near(c, exp(-1.9));
  assert_int_equal(mg_gate_acc_confidence(&a, MG_CONF_HEADER, &c), -EINVAL);
  assert_int_equal(mg_gate_acc_confidence(&a, MG_CONF_JSON, &c), -EINVAL);
  mg_json_free(&scratch);
}

static void test_acc_completions_and_n2_stream(void **state) {
  static const char *const events[] = {
      /* legacy completions chunks (mg-mock's shape) */
      "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,"
      "\"model\":\"m\",\"choices\":[{\"text\":\"a b\",\"index\":0,"
      "\"logprobs\":{\"tokens\":[\"a\",\" b\"],\"token_logprobs\":[null,-0.2],"
      "\"top_logprobs\":null,\"text_offset\":[0,1]},\"finish_reason\":null}]}",
      /* another choice of an n=2 stream: not choice 0 */
      "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,"
      "\"model\":\"m\",\"choices\":[{\"text\":\"z\",\"index\":1,"
      "\"logprobs\":{\"tokens\":[\"z\"],\"token_logprobs\":[-5],"
      "\"top_logprobs\":null,\"text_offset\":[0]},\"finish_reason\":null}]}",
      "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,"
      "\"model\":\"m\",\"choices\":[{\"text\":\" c\",\"index\":0,"
      "\"logprobs\":{\"tokens\":[\" c\"],\"token_logprobs\":[-0.6],"
      "\"top_logprobs\":null,\"text_offset\":[3]},\"finish_reason\":null}]}",
      "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,"
      "\"model\":\"m\",\"choices\":[{\"text\":\"\",\"index\":0,"
      "\"logprobs\":null,\"finish_reason\":\"stop\"}]}",
      "",
      "{\"choices\":{\"index\":0}}",
      NULL};
  struct mg_gate_acc a;
  struct mg_json_doc scratch;
  double c;
  size_t i;
  (void)state;

  mg_json_init(&scratch, 1000);
  mg_gate_acc_init(&a);
  for (i = 0; events[i]; i++)
    mg_gate_acc_event(&a, events[i], strlen(events[i]), &scratch);
  assert_int_equal(a.n, 2);
  assert_int_equal(mg_gate_acc_confidence(&a, MG_CONF_LOGPROBS_MEAN, &c), 0);
  assert_near(c, exp(-0.4));
  assert_int_equal(mg_gate_acc_confidence(&a, MG_CONF_LOGPROBS_MIN, &c), 0);
  assert_near(c, exp(-0.6));
  mg_json_free(&scratch);
}

/* ---- rewrites ----------------------------------------------------------- */

/* Run strip_logprobs on in and compare with want, byte for byte. */
static void check_strip(const char *in, const char *want) {
  struct mg_json_doc d;
  struct mg_buf out;

  mg_json_init(&d, 10000);
  mg_buf_init(&out, 1 << 20);
  parse_ok(&d, in);
  assert_int_equal(mg_buf_puts(&out, "prefix|"), 0);
  assert_int_equal(mg_gate_strip_logprobs(&d, &out), 0);
  assert_int_equal(out.len, strlen("prefix|") + strlen(want));
  assert_memory_equal(out.data, "prefix|", 7);
  if (strcmp(out.data + 7, want) != 0)
    fail_msg("got\n%s\nwant\n%s", out.data + 7, want);
  /* What is stripped still parses. */
  parse_ok(&d, out.data + 7);
  mg_buf_free(&out);
  mg_json_free(&d);
}

static void test_strip_multi_choice(void **state) {
  (void)state;
  /* n=2, pretty-printed, logprobs before and after other members, a
   * logprobs member that is not in a choice (kept), a choice with null. */
  check_strip(
      "{\n  \"id\": \"chatcmpl-2\",\n  \"object\": \"chat.completion\",\n"
      "  \"logprobs\": {\"kept\": true},\n"
      "  \"choices\": [\n"
      "    {\"index\": 0, \"message\": {\"role\": \"assistant\", \"content\": "
      "\"a \\\"logprobs\\\": 1\"},\n"
      "     \"logprobs\" :  {\"content\": [{\"token\": \"a\", \"logprob\": "
      "-0.1, \"bytes\": [97], \"top_logprobs\": []}], \"refusal\": null} ,\n"
      "     \"finish_reason\": \"stop\"},\n"
      "    {\"logprobs\":{\"content\":[{\"token\":\"b\",\"logprob\":-2,"
      "\"bytes\":null,\"top_logprobs\":[]}]},\"index\":1,\"message\":{"
      "\"role\":\"assistant\",\"content\":\"b\"},\"finish_reason\":\"stop\"},"
      "\n    {\"index\": 2, \"logprobs\": null, \"finish_reason\": \"stop\"}\n"
      "  ],\n  \"usage\": {\"prompt_tokens\": 1, \"completion_tokens\": 2, "
      "\"total_tokens\": 3}\n}\n",
      "{\n  \"id\": \"chatcmpl-2\",\n  \"object\": \"chat.completion\",\n"
      "  \"logprobs\": {\"kept\": true},\n"
      "  \"choices\": [\n"
      "    {\"index\": 0, \"message\": {\"role\": \"assistant\", \"content\": "
      "\"a \\\"logprobs\\\": 1\"},\n"
      "     \"logprobs\" :  null ,\n"
      "     \"finish_reason\": \"stop\"},\n"
      "    {\"logprobs\":null,\"index\":1,\"message\":{"
      "\"role\":\"assistant\",\"content\":\"b\"},\"finish_reason\":\"stop\"},"
      "\n    {\"index\": 2, \"logprobs\": null, \"finish_reason\": \"stop\"}\n"
      "  ],\n  \"usage\": {\"prompt_tokens\": 1, \"completion_tokens\": 2, "
      "\"total_tokens\": 3}\n}\n");
  /* Legacy completions, escaped key, duplicate member. */
  check_strip("{\"choices\":[{\"text\":\"x\",\"index\":0,\"log\\u0070robs\":"
              "{\"tokens\":[\"x\"],\"token_logprobs\":[-1]},\"logprobs\":[1],"
              "\"finish_reason\":\"length\"}]}",
              "{\"choices\":[{\"text\":\"x\",\"index\":0,\"log\\u0070robs\":"
              "null,\"logprobs\":null,\"finish_reason\":\"length\"}]}");
  /* A stream chunk has the same shape. */
  check_strip("{\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
              "\"delta\":{\"content\":\"hi\"},\"logprobs\":{\"content\":[{"
              "\"token\":\"hi\",\"logprob\":-0.5}]},\"finish_reason\":null}]}",
              "{\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
              "\"delta\":{\"content\":\"hi\"},\"logprobs\":null,"
              "\"finish_reason\":null}]}");
}

static void test_strip_unchanged(void **state) {
  static const char *const same[] = {
      "{\"choices\":[{\"index\":0,\"message\":{\"content\":\"x\"},"
      "\"logprobs\":null}]}",
      "{\"choices\":[{\"index\":0,\"message\":{\"content\":\"x\"}}]}",
      "  {\"id\":\"x\",\"logprobs\":{\"a\":1}}  \n",
      "{\"choices\":{\"logprobs\":{\"a\":1}}}",
      "{\"choices\":[[{\"logprobs\":1}],\"logprobs\",{}]}",
      "{\"error\":{\"message\":\"bad\",\"type\":\"x\",\"param\":null,"
      "\"code\":null}}",
      "[{\"choices\":[{\"logprobs\":1}]}]",
      "\"logprobs\"",
      "{}",
      NULL};
  struct mg_json_doc d;
  struct mg_buf out;
  size_t i;
  (void)state;

  for (i = 0; same[i]; i++)
    check_strip(same[i], same[i]);
  /* A document that was never scanned copies nothing and does not fail. */
  mg_json_init(&d, 10);
  mg_buf_init(&out, 100);
  assert_int_equal(mg_gate_strip_logprobs(&d, &out), 0);
  assert_int_equal(out.len, 0);
  /* Past the buffer's ceiling: an error, and out as it was. */
  parse_ok(&d, "{\"choices\":[{\"logprobs\":{\"content\":[]}}]}");
  assert_int_equal(mg_buf_puts(&out, "abc"), 0);
  out.max = 10;
  assert_int_equal(mg_gate_strip_logprobs(&d, &out), -E2BIG);
  assert_int_equal(out.len, 3);
  assert_string_equal(out.data, "abc");
  mg_buf_free(&out);
  mg_json_free(&d);
}

/* ask_logprobs(in) must be want exactly, and still parse. */
static void check_ask(const char *in, bool chat, const char *want) {
  struct mg_json_doc d;
  struct mg_buf out;

  mg_json_init(&d, 10000);
  mg_buf_init(&out, 1 << 20);
  parse_ok(&d, in);
  assert_int_equal(mg_gate_ask_logprobs(&d, chat, &out), 0);
  if (strcmp(out.data, want) != 0)
    fail_msg("got\n%s\nwant\n%s", out.data, want);
  parse_ok(&d, out.data);
  {
    uint32_t v = mg_json_getc(&d, 0, "logprobs");
    int64_t n;
    assert_true(v != MG_JSON_NOTFOUND);
    if (chat) {
      assert_int_equal(d.toks[v].type, MG_JSON_TRUE);
    } else {
      assert_int_equal(mg_json_int(&d, v, &n), 0);
      assert_int_equal(n, 1);
    }
  }
  mg_buf_free(&out);
  mg_json_free(&d);
}

static void test_ask_insert(void **state) {
  (void)state;
  check_ask("{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\","
            "\"content\":\"hi\"}],\"stream\":true}",
            true,
            "{\"logprobs\":true,\"model\":\"gpt-4o\",\"messages\":[{\"role\":"
            "\"user\",\"content\":\"hi\"}],\"stream\":true}");
  check_ask("{\"model\":\"davinci\",\"prompt\":\"Say\"}", false,
            "{\"logprobs\":1,\"model\":\"davinci\",\"prompt\":\"Say\"}");
  check_ask("{}", true, "{\"logprobs\":true}");
  check_ask("{}", false, "{\"logprobs\":1}");
  check_ask(" \n{ \t\n } \n", true, " \n{\"logprobs\":true \t\n } \n");
  check_ask("\t{\n  \"model\" : \"m\" ,\n  \"top_logprobs\" : 3\n}\r\n", true,
            "\t{\"logprobs\":true,\n  \"model\" : \"m\" ,\n  "
            "\"top_logprobs\" : 3\n}\r\n");
  /* A nested logprobs is not the request's. */
  check_ask("{\"metadata\":{\"logprobs\":false}}", true,
            "{\"logprobs\":true,\"metadata\":{\"logprobs\":false}}");
}

static void test_ask_replace(void **state) {
  (void)state;
  check_ask("{\"model\":\"m\",\"logprobs\":false,\"n\":2}", true,
            "{\"model\":\"m\",\"logprobs\":true,\"n\":2}");
  check_ask("{\"logprobs\":true}", true, "{\"logprobs\":true}");
  check_ask("{\"logprobs\":null}", true, "{\"logprobs\":true}");
  check_ask("{\"prompt\":\"x\",\"logprobs\":0}", false,
            "{\"prompt\":\"x\",\"logprobs\":1}");
  check_ask("{\"prompt\":\"x\",\"logprobs\":5}", false,
            "{\"prompt\":\"x\",\"logprobs\":1}");
  check_ask("{\"prompt\":\"x\",\"logprobs\":true}", false,
            "{\"prompt\":\"x\",\"logprobs\":1}");
  check_ask("{\n  \"model\"  :  \"m\",\n  \"logprobs\"   :   false   ,\n"
            "  \"messages\" : [ ]\n}",
            true,
            "{\n  \"model\"  :  \"m\",\n  \"logprobs\"   :   true   ,\n"
            "  \"messages\" : [ ]\n}");
  /* Escaped key and a duplicate: both values become true. */
  check_ask("{\"log\\u0070robs\":false,\"x\":1,\"logprobs\":-1e3}", true,
            "{\"log\\u0070robs\":true,\"x\":1,\"logprobs\":true}");
}

static void test_ask_errors(void **state) {
  struct mg_json_doc d;
  struct mg_buf out;
  (void)state;

  mg_json_init(&d, 100);
  mg_buf_init(&out, 100);
  assert_int_equal(mg_gate_ask_logprobs(&d, true, &out), -EINVAL);
  parse_ok(&d, "[{}]");
  assert_int_equal(mg_gate_ask_logprobs(&d, true, &out), -EINVAL);
  parse_ok(&d, "\"x\"");
  assert_int_equal(mg_gate_ask_logprobs(&d, false, &out), -EINVAL);
  assert_int_equal(out.len, 0);
  parse_ok(&d, "{\"model\":\"m\"}");
  out.max = 10;
  assert_int_equal(mg_gate_ask_logprobs(&d, true, &out), -E2BIG);
  assert_int_equal(out.len, 0);
  mg_buf_free(&out);
  mg_json_free(&d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_logprobs_chat),
      cmocka_unit_test(test_logprobs_completions),
      cmocka_unit_test(test_logprobs_first_choice_by_index),
      cmocka_unit_test(test_logprobs_edge_values),
      cmocka_unit_test(test_logprobs_number_spellings),
      cmocka_unit_test(test_logprobs_missing),
      cmocka_unit_test(test_header_source),
      cmocka_unit_test(test_json_source_in_response),
      cmocka_unit_test(test_json_source_in_content),
      cmocka_unit_test(test_json_source_missing),
      cmocka_unit_test(test_parse_source),
      cmocka_unit_test(test_acc_chat_stream),
      cmocka_unit_test(test_acc_completions_and_n2_stream),
      cmocka_unit_test(test_strip_multi_choice),
      cmocka_unit_test(test_strip_unchanged),
      cmocka_unit_test(test_ask_insert),
      cmocka_unit_test(test_ask_replace),
      cmocka_unit_test(test_ask_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
