/* test_flag.c - variant selection: evaluation order, and the bucketing
 * properties the product promises, each over 100,000 synthetic units:
 * shares match weights, assignment is sticky (across requests, restarts and
 * instances), ramps are monotone, flags are independent, and the input axis
 * assigns by prompt. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "common/hash.h"
#include "routing/flag.h"

#define UNITS 100000

static struct mg_config *load(const char *json) {
  struct mg_cfg_errors e;
  struct mg_config *c;
  size_t i;
  mg_cfg_errors_init(&e);
  c = mg_config_load_string(json, strlen(json), "test", &e);
  for (i = 0; i < e.n; i++)
    print_message("config error: %s\n", e.msgs[i]);
  mg_cfg_errors_free(&e);
  return c;
}

/* Config errors of a JSON text, joined, for assertions. */
static char *errors_of(const char *json) {
  struct mg_cfg_errors e;
  struct mg_config *c;
  struct mg_buf b;
  size_t i;
  mg_cfg_errors_init(&e);
  c = mg_config_load_string(json, strlen(json), "test", &e);
  mg_config_unref(c);
  mg_buf_init(&b, 1 << 20);
  for (i = 0; i < e.n; i++)
    if (mg_buf_puts(&b, e.msgs[i]) || mg_buf_puts(&b, "\n"))
      break;
  mg_cfg_errors_free(&e);
  return mg_buf_steal(&b, NULL);
}

#define TARGETS                                                              \
  "\"targets\":{\"v1\":{\"base_url\":\"http://h/v1\",\"model\":\"m1\"},"    \
  "\"v2\":{\"base_url\":\"http://h/v1\",\"model\":\"m2\"},"                 \
  "\"v3\":{\"base_url\":\"http://h/v1\",\"model\":\"m3\"}}"

/* A request for unit u (body `user`), with optional attributes. */
struct req {
  struct mg_json_doc doc;
  struct mg_request r;
  char body[512];
};

static void req_user(struct req *q, const char *user) {
  struct mg_request_error err;
  mg_request_free(&q->r);
  mg_request_init(&q->r, MG_EP_CHAT);
  if (user)
    snprintf(q->body, sizeof(q->body),
             "{\"model\":\"chat\",\"user\":\"%s\",\"messages\":[]}", user);
  else
    snprintf(q->body, sizeof(q->body), "{\"model\":\"chat\",\"messages\":[]}");
  assert_int_equal(
      mg_request_parse(&q->r, q->body, strlen(q->body), &q->doc, &err), 0);
}

static void req_body(struct req *q, const char *body) {
  struct mg_request_error err;
  mg_request_free(&q->r);
  mg_request_init(&q->r, MG_EP_CHAT);
  snprintf(q->body, sizeof(q->body), "%s", body);
  assert_int_equal(
      mg_request_parse(&q->r, q->body, strlen(q->body), &q->doc, &err), 0);
}

static void req_init(struct req *q) {
  memset(q, 0, sizeof(*q));
  mg_json_init(&q->doc, 10000);
  mg_request_init(&q->r, MG_EP_CHAT);
}

static void req_free(struct req *q) {
  mg_request_free(&q->r);
  mg_json_free(&q->doc);
}

static uint32_t pick(const struct mg_flag *f, const struct mg_flag_state *st,
                     struct req *q, const char *user) {
  struct mg_flag_decision d;
  req_user(q, user);
  mg_flag_eval(f, st, &q->r, 0, 0, &d);
  return d.variant;
}

/* (a) Observed shares match the weights within 3 standard errors. */
static void test_shares_match_weights(void **state) {
  struct mg_config *c = load(
      "{" TARGETS ",\"flags\":{\"f\":{\"off_variant\":\"control\","
      "\"variants\":{\"control\":{\"target\":\"v1\",\"weight\":50},"
      "\"a\":{\"target\":\"v2\",\"weight\":33.33},"
      "\"b\":{\"target\":\"v3\",\"weight\":16.67}}}},"
      "\"aliases\":{\"chat\":{\"flag\":\"f\"}}}");
  const struct mg_flag *f;
  struct mg_flag_state st;
  unsigned counts[3] = {0};
  struct req q;
  char u[32];
  int i;
  (void)state;
  assert_non_null(c);
  f = mg_flags_find(&c->flags, "f");
  mg_flag_state_init(&st, f);
  req_init(&q);
  for (i = 0; i < UNITS; i++) {
    snprintf(u, sizeof(u), "user-%d", i);
    counts[pick(f, &st, &q, u)]++;
  }
  for (i = 0; i < 3; i++) {
    double p = f->variants[i].weight / 10000.0;
    double se = sqrt(p * (1 - p) / UNITS);
    double obs = counts[i] / (double)UNITS;
    print_message("variant %s: weight %.4f observed %.4f (3 SE = %.4f)\n",
                  f->variants[i].name, p, obs, 3 * se);
    assert_true(fabs(obs - p) < 3 * se);
  }
  req_free(&q);
  mg_config_unref(c);
}

static struct mg_config *canary(double treatment) {
  char json[1024];
  snprintf(json, sizeof(json),
           "{" TARGETS ",\"flags\":{\"canary\":{\"off_variant\":\"stable\","
           "\"variants\":{\"stable\":{\"target\":\"v1\",\"weight\":%.2f},"
           "\"next\":{\"target\":\"v2\",\"weight\":%.2f}}}},"
           "\"aliases\":{\"chat\":{\"flag\":\"canary\"}}}",
           100 - treatment, treatment);
  return load(json);
}

/* (b) Sticky: the same unit gets the same variant on every request, after a
 * restart (a config loaded afresh) and on another instance (another load of
 * the same file); and bucketing itself never changes between versions. */
static void test_sticky(void **state) {
  struct mg_config *a = canary(30), *b = canary(30);
  const struct mg_flag *fa = mg_flags_find(&a->flags, "canary");
  const struct mg_flag *fb = mg_flags_find(&b->flags, "canary");
  struct mg_flag_state sa, sb;
  struct req q;
  char u[32];
  int i;
  (void)state;
  mg_flag_state_init(&sa, fa);
  mg_flag_state_init(&sb, fb);
  req_init(&q);
  for (i = 0; i < UNITS; i++) {
    uint32_t v1, v2, v3;
    snprintf(u, sizeof(u), "user-%d", i);
    v1 = pick(fa, &sa, &q, u);
    v2 = pick(fa, &sa, &q, u);
    v3 = pick(fb, &sb, &q, u);
    assert_int_equal(v1, v2);
    assert_int_equal(v1, v3);
  }
  /* Golden buckets: XXH3_64(salt, 0x1f, unit) mod 10000, computed outside
   * modelgate with Debian's xxhsum:
   *   printf 'canary\x1fuser-1' | xxhsum -H3 -   -> 8da4bac3e40ae779
   *   printf 'checkout-model\x1falice@example.com' | xxhsum -H3 -
   *                                              -> 970daa7adcac9bbe
   * If these change, every user moves to another arm on upgrade: that must
   * never happen by accident. */
  assert_int_equal(mg_bucket("canary", 6, "user-1", 6),
                   0x8da4bac3e40ae779ULL % 10000);
  assert_int_equal(mg_bucket("checkout-model", 14, "alice@example.com", 17),
                   0x970daa7adcac9bbeULL % 10000);
  req_free(&q);
  mg_config_unref(a);
  mg_config_unref(b);
}

/* (c) Monotone ramp: raising the treatment from 10% to 20% keeps every unit
 * that was in it, and the share doubles. Also through a runtime override. */
static void test_monotone_ramp(void **state) {
  struct mg_config *c10 = canary(10), *c20 = canary(20);
  const struct mg_flag *f10 = mg_flags_find(&c10->flags, "canary");
  const struct mg_flag *f20 = mg_flags_find(&c20->flags, "canary");
  struct mg_flag_state s10, s20, sov;
  uint32_t w[2] = {7500, 2500};
  unsigned in10 = 0, in20 = 0, in25 = 0;
  struct req q;
  char u[32];
  int i;
  (void)state;
  mg_flag_state_init(&s10, f10);
  mg_flag_state_init(&s20, f20);
  mg_flag_state_init(&sov, f10);
  assert_int_equal(mg_flag_state_set_weights(&sov, f10, w), 0);
  req_init(&q);
  for (i = 0; i < UNITS; i++) {
    uint32_t a, b, c;
    snprintf(u, sizeof(u), "user-%d", i);
    a = pick(f10, &s10, &q, u);
    b = pick(f20, &s20, &q, u);
    c = pick(f10, &sov, &q, u);
    if (a == 1) {
      in10++;
      assert_int_equal(b, 1); /* nobody leaves the treatment */
      assert_int_equal(c, 1);
    }
    in20 += b == 1;
    in25 += c == 1;
    if (b == 1)
      assert_int_equal(c, 1);
  }
  print_message("treatment: %u at 10%%, %u at 20%%, %u at 25%%\n", in10, in20,
                in25);
  assert_true(in20 > in10 * 19 / 10 && in20 < in10 * 21 / 10);
  assert_true(in25 > in10 * 24 / 10 && in25 < in10 * 26 / 10);
  req_free(&q);
  mg_config_unref(c10);
  mg_config_unref(c20);
}

/* Two treatments: raising one leaves the other's units exactly in place. */
static void test_two_treatments_do_not_disturb_each_other(void **state) {
  struct mg_config *c = load(
      "{" TARGETS ",\"flags\":{\"f\":{\"off_variant\":\"c\","
      "\"variants\":{\"c\":{\"target\":\"v1\",\"weight\":80},"
      "\"t1\":{\"target\":\"v2\",\"weight\":10},"
      "\"t2\":{\"target\":\"v3\",\"weight\":10}}}},"
      "\"aliases\":{\"chat\":{\"flag\":\"f\"}}}");
  const struct mg_flag *f = mg_flags_find(&c->flags, "f");
  struct mg_flag_state before, after;
  uint32_t w[3] = {5000, 10 * 100, 40 * 100};
  struct req q;
  char u[32];
  int i;
  (void)state;
  mg_flag_state_init(&before, f);
  mg_flag_state_init(&after, f);
  assert_int_equal(mg_flag_state_set_weights(&after, f, w), 0);
  req_init(&q);
  for (i = 0; i < UNITS; i++) {
    uint32_t a, b;
    snprintf(u, sizeof(u), "user-%d", i);
    a = pick(f, &before, &q, u);
    b = pick(f, &after, &q, u);
    if (a == 1 || b == 1)
      assert_int_equal(a, b); /* t1's membership did not move */
    if (a == 2)
      assert_int_equal(b, 2); /* t2 only gained */
  }
  req_free(&q);
  mg_config_unref(c);
}

/* (d) Independence: two flags at 10% each put about 1% of units in both
 * treatments, not about 10% as hash(user) % 100 does. The same test with a
 * shared salt shows the trap. */
static void test_independence(void **state) {
  struct mg_config *c = load(
      "{" TARGETS ",\"flags\":{"
      "\"model-a\":{\"off_variant\":\"c\",\"variants\":{\"c\":{\"target\":"
      "\"v1\",\"weight\":90},\"t\":{\"target\":\"v2\",\"weight\":10}}},"
      "\"model-b\":{\"off_variant\":\"c\",\"variants\":{\"c\":{\"target\":"
      "\"v1\",\"weight\":90},\"t\":{\"target\":\"v2\",\"weight\":10}}},"
      "\"same-salt\":{\"salt\":\"model-a\",\"off_variant\":\"c\","
      "\"variants\":{\"c\":{\"target\":\"v1\",\"weight\":90},"
      "\"t\":{\"target\":\"v2\",\"weight\":10}}}},"
      "\"aliases\":{\"chat\":{\"flag\":\"model-a\"}}}");
  const struct mg_flag *a = mg_flags_find(&c->flags, "model-a");
  const struct mg_flag *b = mg_flags_find(&c->flags, "model-b");
  const struct mg_flag *s = mg_flags_find(&c->flags, "same-salt");
  struct mg_flag_state sa, sb, ss;
  unsigned both = 0, both_same_salt = 0, ina = 0;
  double p = 0.01, se = sqrt(UNITS * p * (1 - p));
  struct req q;
  char u[32];
  int i;
  (void)state;
  mg_flag_state_init(&sa, a);
  mg_flag_state_init(&sb, b);
  mg_flag_state_init(&ss, s);
  req_init(&q);
  for (i = 0; i < UNITS; i++) {
    uint32_t va, vb, vs;
    snprintf(u, sizeof(u), "user-%d", i);
    va = pick(a, &sa, &q, u);
    vb = pick(b, &sb, &q, u);
    vs = pick(s, &ss, &q, u);
    ina += va == 1;
    both += va == 1 && vb == 1;
    both_same_salt += va == 1 && vs == 1;
  }
  print_message("in both treatments: %u (expected %.0f +- %.0f); with a "
                "shared salt: %u of %u\n",
                both, UNITS * p, 3 * se, both_same_salt, ina);
  assert_true(fabs(both - UNITS * p) < 3 * se);
  /* The trap: the same hash puts the same units in both canaries. */
  assert_int_equal(both_same_salt, ina);
  req_free(&q);
  mg_config_unref(c);
}

/* (e) unit: input - the same messages get the same variant whoever sends
 * them and however the JSON is spelled; different messages spread. */
static void test_input_axis(void **state) {
  struct mg_config *c = load(
      "{" TARGETS ",\"flags\":{\"f\":{\"unit\":\"input\",\"off_variant\":"
      "\"c\",\"variants\":{\"c\":{\"target\":\"v1\",\"weight\":50},"
      "\"t\":{\"target\":\"v2\",\"weight\":50}}}},"
      "\"aliases\":{\"chat\":{\"flag\":\"f\"}}}");
  const struct mg_flag *f = mg_flags_find(&c->flags, "f");
  struct mg_flag_state st;
  struct mg_flag_decision d1, d2, d3;
  unsigned treated = 0;
  struct req q;
  char body[512];
  int i;
  (void)state;
  mg_flag_state_init(&st, f);
  req_init(&q);
  for (i = 0; i < UNITS; i++) {
    snprintf(body, sizeof(body),
             "{\"model\":\"chat\",\"user\":\"alice\",\"messages\":[{\"role\":"
             "\"user\",\"content\":\"question %d\"}]}",
             i);
    req_body(&q, body);
    mg_flag_eval(f, &st, &q.r, 0, 0, &d1);
    assert_int_equal(d1.reason, MG_REASON_ROLLOUT);
    assert_int_equal(d1.unit_kind, MG_UNIT_INPUT);
    treated += d1.variant == 1;
    if (i % 100 != 0)
      continue;
    /* another user, other key order, other spacing, an escape */
    snprintf(body, sizeof(body),
             "{\"user\":\"bob\", \"messages\" : [ {\"content\":\"questio\\u006e "
             "%d\", \"role\":\"user\"} ], \"model\":\"chat\"}",
             i);
    req_body(&q, body);
    mg_flag_eval(f, &st, &q.r, 0, 7, &d2);
    assert_int_equal(d1.variant, d2.variant);
    assert_int_equal(d1.bucket, d2.bucket);
    assert_true(d1.unit_hash == d2.unit_hash);
    /* without any user at all */
    snprintf(body, sizeof(body),
             "{\"model\":\"chat\",\"messages\":[{\"role\":\"user\","
             "\"content\":\"question %d\"}]}",
             i);
    req_body(&q, body);
    mg_flag_eval(f, &st, &q.r, 0, 99, &d3);
    assert_int_equal(d1.variant, d3.variant);
  }
  assert_true(fabs(treated / (double)UNITS - 0.5) < 3 * sqrt(0.25 / UNITS));
  req_free(&q);
  mg_config_unref(c);
}

#define ORDER_FLAG(extra)                                                    \
  "{" TARGETS ",\"flags\":{\"f\":{\"off_variant\":\"c\"," extra             \
  "\"block\":[\"blocked-user\",\"vip\"],"                                   \
  "\"variants\":{\"c\":{\"target\":\"v1\",\"weight\":0},"                   \
  "\"t\":{\"target\":\"v2\",\"weight\":100,\"allow\":[\"vip\",\"beta\"]},"  \
  "\"r\":{\"target\":\"v3\",\"weight\":0,\"allow\":[\"ruler\"]}},"          \
  "\"rules\":[{\"if\":{\"attr\":\"region\",\"op\":\"eq\",\"value\":\"eu\"}," \
  "\"variant\":\"r\"},{\"if\":{\"input\":\"chars\",\"op\":\"gt\","          \
  "\"value\":20},\"variant\":\"c\"}]}},"                                    \
  "\"aliases\":{\"chat\":{\"flag\":\"f\"}}}"

static void eval_body(const struct mg_flag *f, const struct mg_flag_state *st,
                      struct req *q, const char *body, int64_t now,
                      struct mg_flag_decision *d) {
  req_body(q, body);
  mg_flag_eval(f, st, &q->r, now, 5, d);
}

/* The evaluation order of DESIGN.md, first match wins. */
static void test_evaluation_order(void **state) {
  struct mg_config *c = load(ORDER_FLAG(
      "\"start\":\"2026-01-01T00:00:00Z\",\"end\":\"2027-01-01T00:00:00Z\","));
  const struct mg_flag *f = mg_flags_find(&c->flags, "f");
  struct mg_flag_state st;
  struct mg_flag_decision d;
  int64_t in = 1795000000000LL /* 2026-11 */, out = 1700000000000LL;
  struct req q;
  char why[24];
  (void)state;
  mg_flag_state_init(&st, f);
  req_init(&q);
  /* rollout: 100% to t */
  eval_body(f, &st, &q, "{\"model\":\"chat\",\"user\":\"u1\"}", in, &d);
  assert_int_equal(d.reason, MG_REASON_ROLLOUT);
  assert_string_equal(f->variants[d.variant].name, "t");
  assert_true(d.bucket < 10000);
  /* rules in order: rule 0 wins over rule 1 */
  eval_body(f, &st, &q,
            "{\"model\":\"chat\",\"user\":\"u1\",\"metadata\":{\"region\":"
            "\"eu\"},\"messages\":[{\"content\":\"a long prompt, over twenty "
            "characters\"}]}",
            in, &d);
  assert_int_equal(d.reason, MG_REASON_RULE);
  assert_int_equal(d.rule, 0);
  assert_string_equal(mg_reason_name(d.reason, d.rule, why, sizeof(why)),
                      "rule:0");
  eval_body(f, &st, &q,
            "{\"model\":\"chat\",\"user\":\"u1\",\"messages\":[{\"content\":"
            "\"a long prompt, over twenty characters\"}]}",
            in, &d);
  assert_int_equal(d.reason, MG_REASON_RULE);
  assert_int_equal(d.rule, 1);
  assert_string_equal(f->variants[d.variant].name, "c");
  /* allow beats rules */
  eval_body(f, &st, &q,
            "{\"model\":\"chat\",\"user\":\"ruler\",\"metadata\":{\"region\":"
            "\"us\"}}",
            in, &d);
  assert_int_equal(d.reason, MG_REASON_ALLOWED);
  assert_string_equal(f->variants[d.variant].name, "r");
  eval_body(f, &st, &q,
            "{\"model\":\"chat\",\"user\":\"beta\",\"metadata\":{\"region\":"
            "\"eu\"}}",
            in, &d);
  assert_int_equal(d.reason, MG_REASON_ALLOWED);
  assert_string_equal(f->variants[d.variant].name, "t");
  /* block beats allow */
  eval_body(f, &st, &q, "{\"model\":\"chat\",\"user\":\"vip\"}", in, &d);
  assert_int_equal(d.reason, MG_REASON_BLOCKED);
  assert_int_equal(d.variant, f->off_variant);
  /* the unit may come from x-modelgate-unit when the body has no user */
  req_body(&q, "{\"model\":\"chat\"}");
  q.r.unit_header = mg_str_c("blocked-user");
  mg_flag_eval(f, &st, &q.r, in, 5, &d);
  assert_int_equal(d.reason, MG_REASON_BLOCKED);
  /* window beats block */
  eval_body(f, &st, &q, "{\"model\":\"chat\",\"user\":\"vip\"}", out, &d);
  assert_int_equal(d.reason, MG_REASON_WINDOW);
  /* kill beats everything */
  st.killed = true;
  eval_body(f, &st, &q, "{\"model\":\"chat\",\"user\":\"beta\"}", in, &d);
  assert_int_equal(d.reason, MG_REASON_KILLED);
  assert_int_equal(d.variant, f->off_variant);
  req_free(&q);
  mg_config_unref(c);
}

static void test_default_without_weights_and_request_units(void **state) {
  struct mg_config *c = load(
      "{" TARGETS ",\"flags\":{\"f\":{\"off_variant\":\"c\",\"enabled\":true,"
      "\"variants\":{\"c\":{\"target\":\"v1\"},\"t\":{\"target\":\"v2\","
      "\"allow\":[\"qa\"]}}},"
      "\"r\":{\"off_variant\":\"c\",\"unit\":\"request\",\"variants\":{"
      "\"c\":{\"target\":\"v1\",\"weight\":50},\"t\":{\"target\":\"v2\","
      "\"weight\":50}}},"
      "\"off\":{\"enabled\":false,\"off_variant\":\"c\",\"variants\":{"
      "\"c\":{\"target\":\"v1\",\"weight\":0},\"t\":{\"target\":\"v2\","
      "\"weight\":100}}}},"
      "\"aliases\":{\"chat\":{\"flag\":\"f\"}}}");
  const struct mg_flag *f = mg_flags_find(&c->flags, "f");
  const struct mg_flag *r = mg_flags_find(&c->flags, "r");
  const struct mg_flag *off = mg_flags_find(&c->flags, "off");
  struct mg_flag_state sf, sr, so;
  struct mg_flag_decision d;
  unsigned t = 0;
  struct req q;
  uint64_t i;
  (void)state;
  mg_flag_state_init(&sf, f);
  mg_flag_state_init(&sr, r);
  mg_flag_state_init(&so, off);
  req_init(&q);
  eval_body(f, &sf, &q, "{\"model\":\"chat\",\"user\":\"x\"}", 0, &d);
  assert_int_equal(d.reason, MG_REASON_DEFAULT);
  assert_int_equal(d.bucket, MG_NO_BUCKET);
  eval_body(f, &sf, &q, "{\"model\":\"chat\",\"user\":\"qa\"}", 0, &d);
  assert_int_equal(d.reason, MG_REASON_ALLOWED);
  /* enabled: false in the file is a kill */
  eval_body(off, &so, &q, "{\"model\":\"chat\",\"user\":\"x\"}", 0, &d);
  assert_int_equal(d.reason, MG_REASON_KILLED);
  /* request units: the same user is drawn afresh each time */
  req_user(&q, "same-user");
  for (i = 0; i < 10000; i++) {
    mg_flag_eval(r, &sr, &q.r, 0, i * 2654435761u, &d);
    assert_int_equal(d.unit_kind, MG_UNIT_REQUEST);
    t += d.variant == 1;
  }
  assert_true(t > 4500 && t < 5500);
  /* a user flag on a request without any unit falls back to the request */
  mg_flag_state_init(&sf, f);
  eval_body(f, &sf, &q, "{\"model\":\"chat\"}", 0, &d);
  assert_int_equal(d.unit_kind, MG_UNIT_REQUEST);
  req_free(&q);
  mg_config_unref(c);
}

static void test_attr_unit(void **state) {
  struct mg_config *c = load(
      "{" TARGETS ",\"flags\":{\"f\":{\"off_variant\":\"c\",\"unit\":"
      "\"attr:customer\",\"variants\":{\"c\":{\"target\":\"v1\",\"weight\":"
      "50},\"t\":{\"target\":\"v2\",\"weight\":50}}}},"
      "\"aliases\":{\"chat\":{\"flag\":\"f\"}}}");
  const struct mg_flag *f = mg_flags_find(&c->flags, "f");
  struct mg_flag_state st;
  struct mg_flag_decision d, d2;
  struct req q;
  char body[256];
  int i;
  (void)state;
  mg_flag_state_init(&st, f);
  req_init(&q);
  /* all of a customer's users share the customer's arm */
  for (i = 0; i < 200; i++) {
    snprintf(body, sizeof(body),
             "{\"model\":\"chat\",\"user\":\"u%d\",\"metadata\":{\"customer\":"
             "\"acme\"}}",
             i);
    eval_body(f, &st, &q, body, 0, &d2);
    if (i == 0)
      d = d2;
    assert_int_equal(d.variant, d2.variant);
    assert_int_equal(d2.unit_kind, MG_UNIT_ATTR);
  }
  assert_int_equal(d.bucket, mg_bucket("f", 1, "acme", 4));
  req_free(&q);
  mg_config_unref(c);
}

#define FIFTY_FIFTY(extra)                                                   \
  "{" TARGETS ",\"flags\":{\"f\":{\"off_variant\":\"c\"," extra             \
  "\"variants\":{\"c\":{\"target\":\"v1\",\"weight\":50},"                  \
  "\"t\":{\"target\":\"v2\",\"weight\":50}}}},"                             \
  "\"aliases\":{\"chat\":{\"flag\":\"f\"}}}"

/* Issue 11.1: a request that carries only safety_identifier went
 * "stable llm llm llm llm llm stable llm" over 8 calls. It is the unit now:
 * whatever the random draw, the same arm, bucket and reason. */
static void test_safety_identifier_is_sticky(void **state) {
  struct mg_config *c = load(FIFTY_FIFTY(""));
  const struct mg_flag *f = mg_flags_find(&c->flags, "f");
  struct mg_flag_state st;
  struct mg_flag_decision d, first;
  struct req q;
  uint64_t i;
  (void)state;
  mg_flag_state_init(&st, f);
  req_init(&q);
  req_body(&q, "{\"model\":\"chat\",\"safety_identifier\":\"user-7f3a\","
               "\"messages\":[]}");
  for (i = 0; i < 1000; i++) {
    mg_flag_eval(f, &st, &q.r, 0, i * 0x9e3779b97f4a7c15ULL, &d);
    if (i == 0)
      first = d;
    assert_int_equal(d.reason, MG_REASON_ROLLOUT);
    assert_int_equal(d.variant, first.variant);
    assert_int_equal(d.bucket, mg_bucket("f", 1, "user-7f3a", 9));
    assert_int_equal(d.unit_kind, MG_UNIT_USER);
    assert_int_equal(d.unit_source, MG_USRC_SAFETY_IDENTIFIER);
    assert_true(d.has_unit);
    assert_true(d.unit_hash == mg_xxh64("user-7f3a", 9, 0));
  }
  /* the same person through the Responses API lands in the same arm */
  mg_request_free(&q.r);
  mg_request_init(&q.r, MG_EP_RESPONSES);
  snprintf(q.body, sizeof(q.body),
           "{\"model\":\"chat\",\"safety_identifier\":\"user-7f3a\","
           "\"input\":\"hi\"}");
  {
    struct mg_request_error err;
    assert_int_equal(mg_request_parse(&q.r, q.body, strlen(q.body), &q.doc,
                                      &err),
                     0);
  }
  mg_flag_eval(f, &st, &q.r, 0, 12345, &d);
  assert_int_equal(d.variant, first.variant);
  req_free(&q);
  mg_config_unref(c);
}

/* Each unit source, and where it was found. */
static void test_unit_sources(void **state) {
  struct mg_config *c = load(FIFTY_FIFTY(""));
  const struct mg_flag *f = mg_flags_find(&c->flags, "f");
  struct mg_flag_state st;
  struct mg_flag_decision d;
  struct req q;
  (void)state;
  mg_flag_state_init(&st, f);
  req_init(&q);
  eval_body(f, &st, &q, "{\"model\":\"chat\",\"user\":\"u9\"}", 0, &d);
  assert_int_equal(d.unit_source, MG_USRC_USER);
  assert_int_equal(d.bucket, mg_bucket("f", 1, "u9", 2));
  req_body(&q, "{\"model\":\"chat\"}");
  q.r.unit_header = mg_str_c("h9");
  mg_flag_eval(f, &st, &q.r, 0, 1, &d);
  assert_int_equal(d.unit_source, MG_USRC_HEADER);
  assert_int_equal(d.bucket, mg_bucket("f", 1, "h9", 2));
  req_body(&q, "{\"model\":\"chat\"}");
  assert_true(mg_request_set_client(&q.r, mg_str_c("svc-a")));
  mg_flag_eval(f, &st, &q.r, 0, 1, &d);
  assert_int_equal(d.reason, MG_REASON_ROLLOUT);
  assert_int_equal(d.unit_source, MG_USRC_CLIENT);
  assert_int_equal(d.bucket, mg_bucket("f", 1, "svc-a", 5));
  req_free(&q);
  mg_config_unref(c);
}

/* No unit: not randomized. The off_variant with reason no_unit, however
 * the draw falls; everything before the rollout still applies. */
static void test_no_unit(void **state) {
  struct mg_config *c = load(
      "{" TARGETS ",\"flags\":{\"f\":{\"off_variant\":\"c\",\"rules\":[{"
      "\"if\":{\"attr\":\"tier\",\"op\":\"eq\",\"value\":\"gold\"},"
      "\"variant\":\"t\"}],\"variants\":{\"c\":{\"target\":\"v1\","
      "\"weight\":0},\"t\":{\"target\":\"v2\",\"weight\":100}}},"
      "\"a\":{\"off_variant\":\"c\",\"unit\":\"attr:customer\",\"variants\":"
      "{\"c\":{\"target\":\"v1\",\"weight\":0},\"t\":{\"target\":\"v2\","
      "\"weight\":100}}},"
      "\"r\":{\"off_variant\":\"c\",\"missing_unit\":\"request\",\"variants\":"
      "{\"c\":{\"target\":\"v1\",\"weight\":50},\"t\":{\"target\":\"v2\","
      "\"weight\":50}}},"
      "\"in\":{\"off_variant\":\"c\",\"unit\":\"input\",\"variants\":{\"c\":"
      "{\"target\":\"v1\",\"weight\":0},\"t\":{\"target\":\"v2\","
      "\"weight\":100}}}},"
      "\"aliases\":{\"chat\":{\"flag\":\"f\"}}}");
  const struct mg_flag *f = mg_flags_find(&c->flags, "f");
  const struct mg_flag *a = mg_flags_find(&c->flags, "a");
  const struct mg_flag *r = mg_flags_find(&c->flags, "r");
  const struct mg_flag *in = mg_flags_find(&c->flags, "in");
  struct mg_flag_state sf, sa, sr, si;
  struct mg_flag_decision d;
  struct req q;
  char why[24];
  uint64_t i;
  unsigned t = 0;
  (void)state;
  mg_flag_state_init(&sf, f);
  mg_flag_state_init(&sa, a);
  mg_flag_state_init(&sr, r);
  mg_flag_state_init(&si, in);
  req_init(&q);
  for (i = 0; i < 100; i++) {
    req_body(&q, "{\"model\":\"chat\",\"messages\":[]}");
    mg_flag_eval(f, &sf, &q.r, 0, i * 7919, &d);
    assert_int_equal(d.reason, MG_REASON_NO_UNIT);
    assert_int_equal(d.variant, f->off_variant);
    assert_int_equal(d.bucket, MG_NO_BUCKET);
    assert_false(d.has_unit);
    assert_int_equal(d.unit_source, MG_USRC_NONE);
    /* the record carries no unit */
    assert_int_equal(d.unit_kind, MG_UNIT_REQUEST);
  }
  assert_string_equal(mg_reason_name(d.reason, d.rule, why, sizeof(why)),
                      "no_unit");
  /* rules apply first */
  eval_body(f, &sf, &q,
            "{\"model\":\"chat\",\"metadata\":{\"tier\":\"gold\"}}", 0, &d);
  assert_int_equal(d.reason, MG_REASON_RULE);
  /* and the kill switch before anything */
  sf.killed = true;
  eval_body(f, &sf, &q, "{\"model\":\"chat\"}", 0, &d);
  assert_int_equal(d.reason, MG_REASON_KILLED);
  /* attr:<name> without the attribute: no_unit too, even with a user */
  eval_body(a, &sa, &q, "{\"model\":\"chat\",\"user\":\"u1\"}", 0, &d);
  assert_int_equal(d.reason, MG_REASON_NO_UNIT);
  assert_int_equal(d.variant, a->off_variant);
  eval_body(a, &sa, &q,
            "{\"model\":\"chat\",\"metadata\":{\"customer\":\"acme\"}}", 0,
            &d);
  assert_int_equal(d.reason, MG_REASON_ROLLOUT);
  assert_string_equal(a->variants[d.variant].name, "t");
  /* input units without messages have no unit either */
  eval_body(in, &si, &q, "{\"model\":\"chat\"}", 0, &d);
  assert_int_equal(d.reason, MG_REASON_NO_UNIT);
  /* missing_unit: request opts into a fresh draw per request */
  req_body(&q, "{\"model\":\"chat\"}");
  for (i = 0; i < 10000; i++) {
    mg_flag_eval(r, &sr, &q.r, 0, i * 2654435761u, &d);
    assert_int_equal(d.reason, MG_REASON_ROLLOUT);
    assert_int_equal(d.unit_kind, MG_UNIT_REQUEST);
    t += d.variant == 1;
  }
  /* 10000 draws at 50%: 5000 +- 3 x 50 */
  assert_true(t > 4850 && t < 5150);
  req_free(&q);
  mg_config_unref(c);
}

static void test_flag_options(void **state) {
  struct mg_config *c = load(FIFTY_FIFTY("\"fallback_to_control\":false,"));
  char *e;
  (void)state;
  assert_false(mg_flags_find(&c->flags, "f")->fallback_to_control);
  mg_config_unref(c);
  c = load(FIFTY_FIFTY(""));
  assert_true(mg_flags_find(&c->flags, "f")->fallback_to_control);
  assert_int_equal(mg_flags_find(&c->flags, "f")->missing_unit,
                   MG_MISSING_OFF);
  mg_config_unref(c);
  e = errors_of(FIFTY_FIFTY("\"missing_unit\":\"random\","
                            "\"fallback_to_control\":1,"));
  assert_non_null(strstr(e, "$.flags.f.missing_unit: must be off_variant or "
                            "request, not \"random\""));
  assert_non_null(strstr(e, "$.flags.f.fallback_to_control: must be"));
  free(e);
}

static void test_config_errors(void **state) {
  char *e;
  (void)state;
  e = errors_of("{" TARGETS ",\"flags\":{\"f\":{\"off_variant\":\"zz\","
                "\"unit\":\"team\",\"start\":\"yesterday\",\"bogus\":1,"
                "\"variants\":{\"c\":{\"target\":\"nope\",\"weight\":50.005},"
                "\"t\":{\"target\":\"v2\",\"weight\":40}},"
                "\"rules\":[{\"if\":{\"attr\":\"a\",\"op\":\"matches\","
                "\"value\":\"x\"},\"variant\":\"c\"},{\"if\":{\"input\":"
                "\"chars\",\"op\":\"prefix\",\"value\":1},\"variant\":\"q\"}]}},"
                "\"aliases\":{\"chat\":{\"flag\":\"g\"},\"x\":{\"flag\":\"f\","
                "\"target\":\"v1\"}}}");
  print_message("%s", e);
  assert_non_null(strstr(e, "$.flags.f.off_variant: unknown variant \"zz\""));
  assert_non_null(strstr(e, "$.flags.f.unit: must be user, request, input"));
  assert_non_null(strstr(e, "$.flags.f.start: must be an RFC 3339 time"));
  assert_non_null(strstr(e, "$.flags.f.bogus: unknown key"));
  assert_non_null(
      strstr(e, "$.flags.f.variants.c.target: unknown target \"nope\""));
  assert_non_null(strstr(e, "$.flags.f.variants.c.weight: must be a "
                            "percentage between 0 and 100 with at most two"));
  assert_non_null(strstr(e, "$.flags.f.rules[0].if.op: unknown operator "
                            "\"matches\""));
  assert_non_null(strstr(e, "$.flags.f.rules[1].if.value: prefix applies to "
                            "attributes"));
  assert_non_null(strstr(e, "$.flags.f.rules[1].variant: unknown variant "
                            "\"q\""));
  assert_non_null(strstr(e, "$.aliases.chat.flag: unknown flag \"g\""));
  assert_non_null(strstr(e, "$.aliases.x: needs exactly one of"));
  free(e);
  e = errors_of("{" TARGETS ",\"flags\":{\"f\":{\"off_variant\":\"c\","
                "\"variants\":{\"c\":{\"target\":\"v1\",\"weight\":60},"
                "\"t\":{\"target\":\"v2\",\"weight\":30}}},"
                "\"g\":{\"off_variant\":\"c\",\"variants\":{\"c\":{\"target\":"
                "\"v1\",\"weight\":60},\"t\":{\"target\":\"v2\"}}},"
                "\"h\":{\"off_variant\":\"c\",\"unit\":\"request\",\"block\":"
                "[\"x\"],\"variants\":{\"c\":{\"target\":\"v1\"}}},"
                "\"i\":{\"off_variant\":\"c\",\"start\":\"2026-02-01T00:00:00Z\","
                "\"end\":\"2026-01-01T00:00:00Z\",\"variants\":{\"c\":{"
                "\"target\":\"v1\"}}}},"
                "\"aliases\":{\"chat\":{\"flag\":\"f\"}}}");
  print_message("%s", e);
  assert_non_null(strstr(e, "$.flags.f.variants: weights must sum to 100, "
                            "not 90.00"));
  assert_non_null(strstr(e, "$.flags.g.variants: give every variant a "
                            "weight, or none"));
  assert_non_null(strstr(e, "$.flags.h.unit: allow and block lists need"));
  assert_non_null(strstr(e, "$.flags.i.end: must be after start"));
  free(e);
}

static void test_set_weights_validation(void **state) {
  struct mg_config *c = canary(10);
  const struct mg_flag *f = mg_flags_find(&c->flags, "canary");
  struct mg_flag_state st;
  uint32_t bad[2] = {5000, 4000}, good[2] = {0, 10000};
  struct req q;
  char u[32];
  int i;
  (void)state;
  mg_flag_state_init(&st, f);
  assert_int_equal(mg_flag_state_set_weights(&st, f, bad), -EINVAL);
  assert_int_equal(st.weights[1], 1000); /* unchanged */
  assert_int_equal(mg_flag_state_set_weights(&st, f, good), 0);
  req_init(&q);
  for (i = 0; i < 1000; i++) {
    snprintf(u, sizeof(u), "user-%d", i);
    assert_int_equal(pick(f, &st, &q, u), 1); /* 100% treatment */
  }
  req_free(&q);
  mg_config_unref(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_shares_match_weights),
      cmocka_unit_test(test_sticky),
      cmocka_unit_test(test_monotone_ramp),
      cmocka_unit_test(test_two_treatments_do_not_disturb_each_other),
      cmocka_unit_test(test_independence),
      cmocka_unit_test(test_input_axis),
      cmocka_unit_test(test_evaluation_order),
      cmocka_unit_test(test_default_without_weights_and_request_units),
      cmocka_unit_test(test_attr_unit),
      cmocka_unit_test(test_safety_identifier_is_sticky),
      cmocka_unit_test(test_unit_sources),
      cmocka_unit_test(test_no_unit),
      cmocka_unit_test(test_flag_options),
      cmocka_unit_test(test_config_errors),
      cmocka_unit_test(test_set_weights_validation),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
