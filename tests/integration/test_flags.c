/* test_flags.c - flags end to end (issue 3), against the real binary and
 * the mock model server, over loopback. What a client sees is checked:
 * status, the decision headers, which upstream model really answered (the
 * mock names it), and /metrics.
 *
 *   evaluation_order   every step of DESIGN.md's table and its reason:
 *                      killed (enabled:false, and at run time), window
 *                      (past, future, open), blocked, allowed (per variant,
 *                      unit from the body or the header), rule:<i> over
 *                      attributes from headers (case-insensitive names) and
 *                      from `metadata` (headers win), every operator, the
 *                      input features chars (characters, not bytes; escapes
 *                      decoded), messages, tools, stream, max_tokens, with
 *                      all/any/not; rollout; default. Which step wins when
 *                      several could. Then modelgate_flag_requests_total
 *                      holds exactly the requests sent, by flag, variant
 *                      and reason.
 *   units              the unit is the body's `user`, else x-modelgate-unit,
 *                      else the request; attr:<name> (header or metadata);
 *                      input (same messages, however spelled, same arm,
 *                      whoever sends them); request (drawn afresh).
 *   sticky             300 users: the variant each gets is the one the
 *                      README's formula gives (XXH3 over salt, 0x1F, unit;
 *                      the control in the middle), on one instance, on a
 *                      second instance on the same config, and after a
 *                      restart; a custom salt; three variants.
 *   headers            x-modelgate-decision, -flag, -variant and -reason on
 *                      every answer: errors before routing ("-", unrouted),
 *                      a direct alias ("-", direct), upstream errors passed
 *                      through, a timeout, a stream, the internal endpoints.
 *   check              `modelgate check` prints every error of a bad flags
 *                      section at once, each with its JSON path; exit 2;
 *                      serve refuses the same file. */
#define _GNU_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"
#include "test_flags.h"

/* ---- evaluation order and reasons ---------------------------------------- */

#define TARGETS3                                                               \
  "'targets':{'t-a':{'base_url':'@MOCK','model':'m-a'},"                       \
  "'t-b':{'base_url':'@MOCK','model':'m-b'},"                                  \
  "'t-c':{'base_url':'@MOCK','model':'m-c'}},"

/* Flag "main": control ctl (t-a), treatment trt (t-b) at 100%, a third
 * variant c3 (t-c) at 0%; allow and block lists; one rule per operator and
 * input feature. Every other flag isolates one step. */
static const char order_cfg[] =
    "{'admin':{'listen':'127.0.0.1:0','state_file':'@DIR/state.json'},"
    "'server':{'listen':'127.0.0.1:0','log_level':'info',"
    "'shutdown_grace_ms':2000},"
    "'decision_log':{'enabled':false}," TARGETS3 "'flags':{"
    "'off':{'enabled':false,'off_variant':'ctl','end':'" PAST_END "',"
    "  'block':['blk'],'variants':{'ctl':{'target':'t-a','weight':0},"
    "  'trt':{'target':'t-b','weight':100,'allow':['pin']}},"
    "  'rules':[{'if':{'attr':'tier','op':'exists'},'variant':'trt'}]},"
    "'past':{'off_variant':'ctl','start':'" PAST_START "','end':'" PAST_END "',"
    "  'block':['blk'],'variants':{'ctl':{'target':'t-a','weight':0},"
    "  'trt':{'target':'t-b','weight':100,'allow':['pin']}},"
    "  'rules':[{'if':{'attr':'tier','op':'exists'},'variant':'trt'}]},"
    "'future':{'off_variant':'ctl','start':'" FUTURE "',"
    "  'variants':{'ctl':{'target':'t-a','weight':0},"
    "  'trt':{'target':'t-b','weight':100,'allow':['pin']}}},"
    "'open':{'off_variant':'ctl','start':'" PAST_END "','end':'" FUTURE "',"
    "  'variants':{'ctl':{'target':'t-a','weight':0},"
    "  'trt':{'target':'t-b','weight':100}}},"
    "'main':{'off_variant':'ctl','block':['blk','pin-both'],"
    "  'variants':{'ctl':{'target':'t-a','weight':0,'allow':['pin-ctl']},"
    "    'trt':{'target':'t-b','weight':100,'allow':['pin-trt','pin-both']},"
    "    'c3':{'target':'t-c','weight':0,'allow':['pin-c3']}},"
    "  'rules':["
    /* 0 */ "{'if':{'attr':'tier','op':'eq','value':'free'},'variant':'c3'},"
    /* 1 */ "{'if':{'all':[{'attr':'region','op':'in','values':['eu-west',"
    "'eu-central']},{'not':{'attr':'beta','op':'exists'}}]},'variant':'ctl'},"
    /* 2 */ "{'if':{'any':[{'input':'chars','op':'gt','value':100},"
    "{'input':'input.tools','op':'ge','value':2}]},'variant':'ctl'},"
    /* 3 */ "{'if':{'input':'messages','op':'ge','value':3},'variant':'c3'},"
    /* 4 */ "{'if':{'input':'stream','op':'eq','value':true},'variant':'c3'},"
    /* 5 */ "{'if':{'input':'max_tokens','op':'lt','value':16},"
    "'variant':'c3'},"
    /* 6 */ "{'if':{'attr':'email','op':'suffix','value':'@corp.example'},"
    "'variant':'ctl'},"
    /* 7 */ "{'if':{'attr':'org','op':'prefix','value':'acme-'},"
    "'variant':'c3'},"
    /* 8 */ "{'if':{'attr':'plan','op':'contains','value':'enterprise'},"
    "'variant':'ctl'},"
    /* 9 */ "{'if':{'attr':'score','op':'ge','value':90},'variant':'c3'},"
    /* 10 */ "{'if':{'attr':'country','op':'not_in','values':['us','ca']},"
    "'variant':'ctl'},"
    /* 11 */ "{'if':{'attr':'lang','op':'ne','value':'en'},'variant':'c3'},"
    /* 12 */ "{'if':{'all':[{'input':'messages','op':'eq','value':2},"
    "{'input':'chars','op':'le','value':4},{'input':'max_tokens','op':'ge',"
    "'value':500}]},'variant':'ctl'}"
    "]},"
    "'noweights':{'off_variant':'ctl','variants':{'ctl':{'target':'t-a'},"
    "  'trt':{'target':'t-b','allow':['pin']}},"
    "  'rules':[{'if':{'attr':'tier','op':'eq','value':'free'},"
    "'variant':'trt'}]}},"
    "'aliases':{'m-off':{'flag':'off'},'m-past':{'flag':'past'},"
    "'m-future':{'flag':'future'},'m-open':{'flag':'open'},"
    "'m-main':{'flag':'main'},'m-now':{'flag':'noweights'}}}";

/* What the test sent, to compare with modelgate_flag_requests_total. */
struct tally {
  char key[256]; /* flag="f",variant="v",reason="r" */
  int n;
};
static struct tally tallies[64];
static int ntallies;

static void tally_add(const struct ans *a) {
  char key[256];
  int i;
  snprintf(key, sizeof(key), "flag=\"%s\",variant=\"%s\",reason=\"%s\"",
           a->flag, a->variant, a->reason);
  for (i = 0; i < ntallies; i++)
    if (strcmp(tallies[i].key, key) == 0) {
      tallies[i].n++;
      return;
    }
  assert_true(ntallies < 64);
  snprintf(tallies[ntallies].key, sizeof(tallies[ntallies].key), "%s", key);
  tallies[ntallies++].n = 1;
}

/* One case: a request and what must come of it. */
struct ocase {
  const char *what;
  const char *model;   /* the alias */
  const char *user;    /* body `user`, or NULL */
  const char *headers; /* extra header lines, or NULL */
  const char *extra;   /* more body members (",..."), or NULL */
  const char *text;    /* the message (NULL: "hello") */
  const char *body;    /* the whole body instead of the above, or NULL */
  const char *variant, *reason, *target, *upmodel;
};

static void run_case(struct cli *c, const struct ocase *k) {
  struct ans a;
  char *body = k->body
                   ? strdup(k->body)
                   : body_for(k->model, k->user, k->text ? k->text : "hello",
                              k->extra ? k->extra : "");
  const char *flag = strcmp(k->model, "m-main") == 0     ? "main"
                     : strcmp(k->model, "m-off") == 0    ? "off"
                     : strcmp(k->model, "m-past") == 0   ? "past"
                     : strcmp(k->model, "m-future") == 0 ? "future"
                     : strcmp(k->model, "m-open") == 0   ? "open"
                                                         : "noweights";
  cli_post(c, k->headers, body, &a);
  expect_ans(&a, k->what, flag, k->variant, k->reason, k->target, k->upmodel);
  tally_add(&a);
  free(body);
}

/* Characters: n copies of s. */
static char *rep(const char *s, int n) {
  size_t l = strlen(s);
  char *out = malloc(l * (size_t)n + 1);
  int i;
  assert_non_null(out);
  for (i = 0; i < n; i++)
    memcpy(out + l * (size_t)i, s, l);
  out[l * (size_t)n] = '\0';
  return out;
}

#define A "t-a", "m-a"
#define B "t-b", "m-b"
#define C "t-c", "m-c"

static void test_evaluation_order(void **state) {
  struct tenv *e = *state;
  struct cli c;
  struct ans a;
  char *c100 = rep("x", 100), *c101 = rep("x", 101), *e60 = rep("\\u00e9", 30),
       *e60b = rep("\xc3\xa9", 30), *e101 = rep("\\u00e9", 101), *m, *p;
  char *t100, *t101, *t60, *t101e;
  int i, nseries;
  size_t k;

  ntallies = 0;
  gate_up(e, order_cfg);
  cli_init(&c, e->gate.port);
  t100 = c100;
  t101 = c101;
  t60 = fmt("%s%s", e60, e60b); /* 60 characters, 90 bytes of JSON text */
  t101e = e101;                 /* 101 characters written as escapes */
  {
    const struct ocase cases[] = {
        /* rollout: nothing else applies. */
        {"plain user", "m-main", "plain-1", NULL, NULL, NULL, NULL, "trt",
         "rollout", B},
        /* rule 0, attribute from a header, from metadata, with a name in
         * another case; a header wins over metadata. */
        {"tier from header", "m-main", "u1", "x-modelgate-attr-tier: free\r\n",
         NULL, NULL, NULL, "c3", "rule:0", C},
        {"tier from metadata", "m-main", "u1", NULL,
         ",\"metadata\":{\"tier\":\"free\"}", NULL, NULL, "c3", "rule:0", C},
        {"attribute name case", "m-main", "u1",
         "X-Modelgate-Attr-TIER: free\r\n", NULL, NULL, NULL, "c3", "rule:0",
         C},
        {"header beats metadata", "m-main", "u1",
         "x-modelgate-attr-tier: pro\r\n", ",\"metadata\":{\"tier\":\"free\"}",
         NULL, NULL, "trt", "rollout", B},
        {"metadata number is no attribute", "m-main", "u1", NULL,
         ",\"metadata\":{\"score\":95}", NULL, NULL, "trt", "rollout", B},
        /* rule 1: all of (in, not exists). */
        {"region in, no beta", "m-main", "u1", NULL,
         ",\"metadata\":{\"region\":\"eu-central\"}", NULL, NULL, "ctl",
         "rule:1", A},
        {"region in, beta", "m-main", "u1", "x-modelgate-attr-beta: 1\r\n",
         ",\"metadata\":{\"region\":\"eu-west\"}", NULL, NULL, "trt", "rollout",
         B},
        {"region not in", "m-main", "u1", NULL,
         ",\"metadata\":{\"region\":\"us-east\"}", NULL, NULL, "trt", "rollout",
         B},
        /* rule 2: any of (chars gt 100, tools ge 2). */
        {"100 chars", "m-main", "u1", NULL, NULL, t100, NULL, "trt", "rollout",
         B},
        {"101 chars", "m-main", "u1", NULL, NULL, t101, NULL, "ctl", "rule:2",
         A},
        {"60 characters in 90 bytes", "m-main", "u1", NULL, NULL, t60, NULL,
         "trt", "rollout", B},
        {"101 escaped characters", "m-main", "u1", NULL, NULL, t101e, NULL,
         "ctl", "rule:2", A},
        {"two tools", "m-main", "u1", NULL,
         ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}},"
         "{\"type\":\"function\",\"function\":{\"name\":\"g\"}}]",
         NULL, NULL, "ctl", "rule:2", A},
        {"one tool", "m-main", "u1", NULL,
         ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]",
         NULL, NULL, "trt", "rollout", B},
        /* rule 3: messages ge 3 (and 2 messages fall through to rule 12
         * only when short and with a large max_tokens). */
        {"three messages", "m-main", NULL, NULL, NULL, NULL,
         "{\"model\":\"m-main\",\"user\":\"u1\",\"messages\":["
         "{\"role\":\"system\",\"content\":\"s\"},"
         "{\"role\":\"user\",\"content\":\"a\"},"
         "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"b\"}]}"
         "]}",
         "c3", "rule:3", C},
        {"two short messages, max_tokens 500", "m-main", NULL, NULL, NULL, NULL,
         "{\"model\":\"m-main\",\"user\":\"u1\",\"max_tokens\":500,"
         "\"messages\":[{\"role\":\"system\",\"content\":\"ab\"},"
         "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"cd\"}]"
         "}]}",
         "ctl", "rule:12", A},
        {"two messages of 5 chars, max_tokens 500", "m-main", NULL, NULL, NULL,
         NULL,
         "{\"model\":\"m-main\",\"user\":\"u1\",\"max_tokens\":500,"
         "\"messages\":[{\"role\":\"system\",\"content\":\"ab\"},"
         "{\"role\":\"user\",\"content\":\"cde\"}]}",
         "trt", "rollout", B},
        /* rule 5: max_tokens lt 16 (max_completion_tokens too); absent never
         * matches. */
        {"max_tokens 15", "m-main", "u1", NULL, ",\"max_tokens\":15", NULL,
         NULL, "c3", "rule:5", C},
        {"max_tokens 16", "m-main", "u1", NULL, ",\"max_tokens\":16", NULL,
         NULL, "trt", "rollout", B},
        {"max_completion_tokens 0", "m-main", "u1", NULL,
         ",\"max_completion_tokens\":0", NULL, NULL, "c3", "rule:5", C},
        /* rules 6 to 11: suffix, prefix, contains, ge on a number, not_in,
         * ne. */
        {"suffix", "m-main", "u1", "x-modelgate-attr-email: x@corp.example\r\n",
         NULL, NULL, NULL, "ctl", "rule:6", A},
        {"no suffix", "m-main", "u1",
         "x-modelgate-attr-email: x@corp.example.org\r\n", NULL, NULL, NULL,
         "trt", "rollout", B},
        {"prefix", "m-main", "u1", NULL, ",\"metadata\":{\"org\":\"acme-eu\"}",
         NULL, NULL, "c3", "rule:7", C},
        {"no prefix", "m-main", "u1", NULL,
         ",\"metadata\":{\"org\":\"xacme-eu\"}", NULL, NULL, "trt", "rollout",
         B},
        {"contains", "m-main", "u1",
         "x-modelgate-attr-plan: big-enterprise-2\r\n", NULL, NULL, NULL, "ctl",
         "rule:8", A},
        {"numeric ge", "m-main", "u1", "x-modelgate-attr-score: 95\r\n", NULL,
         NULL, NULL, "c3", "rule:9", C},
        {"numeric ge, decimal below", "m-main", "u1",
         "x-modelgate-attr-score: 89.5\r\n", NULL, NULL, NULL, "trt", "rollout",
         B},
        {"numeric ge, not a number", "m-main", "u1",
         "x-modelgate-attr-score: high\r\n", NULL, NULL, NULL, "trt", "rollout",
         B},
        {"not_in", "m-main", "u1", "x-modelgate-attr-country: fr\r\n", NULL,
         NULL, NULL, "ctl", "rule:10", A},
        {"not_in, listed", "m-main", "u1", "x-modelgate-attr-country: ca\r\n",
         NULL, NULL, NULL, "trt", "rollout", B},
        {"ne", "m-main", "u1", "x-modelgate-attr-lang: de\r\n", NULL, NULL,
         NULL, "c3", "rule:11", C},
        {"ne, equal", "m-main", "u1", "x-modelgate-attr-lang: en\r\n", NULL,
         NULL, NULL, "trt", "rollout", B},
        /* The first matching rule wins. */
        {"rules 0 and 1 match", "m-main", "u1",
         "x-modelgate-attr-region: eu-west\r\nx-modelgate-attr-tier: free\r\n",
         NULL, NULL, NULL, "c3", "rule:0", C},
        {"rules 2 and 6 match", "m-main", "u1",
         "x-modelgate-attr-email: a@corp.example\r\n", NULL, t101, NULL, "ctl",
         "rule:2", A},
        /* allowed: per variant, before any rule; unit from the header. */
        {"allowed ctl", "m-main", "pin-ctl", NULL, NULL, NULL, NULL, "ctl",
         "allowed", A},
        {"allowed c3", "m-main", "pin-c3", NULL, NULL, NULL, NULL, "c3",
         "allowed", C},
        {"allowed beats a rule", "m-main", "pin-trt",
         "x-modelgate-attr-tier: free\r\n", NULL, NULL, NULL, "trt", "allowed",
         B},
        {"allowed, unit from the header", "m-main", NULL,
         "x-modelgate-unit: pin-c3\r\n", NULL, NULL, NULL, "c3", "allowed", C},
        {"body user beats the header", "m-main", "pin-ctl",
         "x-modelgate-unit: pin-c3\r\n", NULL, NULL, NULL, "ctl", "allowed", A},
        /* no unit: no list applies, and no rollout either (issue 11.1) */
        {"no unit: no list applies", "m-main", NULL, NULL, NULL, NULL, NULL,
         "ctl", "no_unit", A},
        /* blocked: before allow lists and rules. */
        {"blocked", "m-main", "blk", "x-modelgate-attr-tier: free\r\n", NULL,
         NULL, NULL, "ctl", "blocked", A},
        {"blocked beats allowed", "m-main", "pin-both", NULL, NULL, NULL, NULL,
         "ctl", "blocked", A},
        {"blocked, unit from the header", "m-main", NULL,
         "x-modelgate-unit: blk\r\n", NULL, NULL, NULL, "ctl", "blocked", A},
        /* window: before block, allow and rules; killed before all. */
        {"past window, blocked user", "m-past", "blk", NULL, NULL, NULL, NULL,
         "ctl", "window", A},
        {"past window, allowed user", "m-past", "pin",
         "x-modelgate-attr-tier: x\r\n", NULL, NULL, NULL, "ctl", "window", A},
        {"future window", "m-future", "pin", NULL, NULL, NULL, NULL, "ctl",
         "window", A},
        {"open window", "m-open", "u1", NULL, NULL, NULL, NULL, "trt",
         "rollout", B},
        {"enabled false, past window, allowed", "m-off", "pin",
         "x-modelgate-attr-tier: x\r\n", NULL, NULL, NULL, "ctl", "killed", A},
        {"enabled false, blocked", "m-off", "blk", NULL, NULL, NULL, NULL,
         "ctl", "killed", A},
        /* default: no weights. */
        {"no weights", "m-now", "u1", NULL, NULL, NULL, NULL, "ctl", "default",
         A},
        {"no weights, rule", "m-now", "u1", "x-modelgate-attr-tier: free\r\n",
         NULL, NULL, NULL, "trt", "rule:0", B},
        {"no weights, allowed", "m-now", "pin", NULL, NULL, NULL, NULL, "trt",
         "allowed", B},
    };
    for (k = 0; k < sizeof(cases) / sizeof(cases[0]); k++)
      run_case(&c, &cases[k]);
  }

  /* rule 4: a stream. The decision headers come with the stream's head and
   * the events come from t-c. */
  {
    struct mg_h_resp r;
    char ct[64];
    char *b = body_for("m-main", "u1", "stream me", ",\"stream\":true");
    assert_int_equal(mg_h_request(e->gate.port, "POST", "/v1/chat/completions",
                                  NULL, b, &r, T_MS * SLOW),
                     0);
    ans_fill(&a, &r, 0);
    expect_ans(&a, "stream", "main", "c3", "rule:4", "t-c", "m-c");
    assert_non_null(mg_h_header(&r, "content-type", ct, sizeof(ct)));
    assert_non_null(strstr(ct, "text/event-stream"));
    assert_non_null(strstr(r.body, "data: [DONE]"));
    tally_add(&a);
    mg_h_resp_free(&r);
    free(b);
  }

  /* Killed at run time: from the next request on, before every other step;
   * unkilled: back to what it was. */
  {
    cJSON *j = adm_want(e, "POST", "/admin/flags/main/kill", "", 200);
    cJSON_Delete(j);
    const struct ocase killed[] = {
        {"killed: allowed user", "m-main", "pin-trt", NULL, NULL, NULL, NULL,
         "ctl", "killed", A},
        {"killed: blocked user", "m-main", "blk", NULL, NULL, NULL, NULL, "ctl",
         "killed", A},
        {"killed: a rule", "m-main", "u1", "x-modelgate-attr-tier: free\r\n",
         NULL, NULL, NULL, "ctl", "killed", A},
        {"killed: rollout", "m-main", "plain-1", NULL, NULL, NULL, NULL, "ctl",
         "killed", A},
    };
    for (k = 0; k < sizeof(killed) / sizeof(killed[0]); k++)
      run_case(&c, &killed[k]);
    j = adm_want(e, "POST", "/admin/flags/main/unkill", "", 200);
    cJSON_Delete(j);
    const struct ocase back[] = {
        {"unkilled: allowed user", "m-main", "pin-trt", NULL, NULL, NULL, NULL,
         "trt", "allowed", B},
        {"unkilled: rollout", "m-main", "plain-1", NULL, NULL, NULL, NULL,
         "trt", "rollout", B},
    };
    for (k = 0; k < sizeof(back) / sizeof(back[0]); k++)
      run_case(&c, &back[k]);
  }
  cli_close(&c);

  /* The counters hold exactly what was sent: every series the test saw,
   * with its count, and no other. */
  m = metrics(e->gate.port);
  for (i = 0; i < ntallies; i++) {
    double d = mval(m, "modelgate_flag_requests_total", tallies[i].key);
    if (d != tallies[i].n)
      fail_msg("modelgate_flag_requests_total{%s} is %g, %d requests were "
               "sent",
               tallies[i].key, d, tallies[i].n);
  }
  nseries = 0;
  for (p = m; (p = strstr(p, "\nmodelgate_flag_requests_total{")) != NULL; p++)
    nseries++;
  if (nseries != ntallies)
    fail_msg("%d modelgate_flag_requests_total series, %d expected:\n%s",
             nseries, ntallies, m);
  free(m);

  free(c100);
  free(c101);
  free(e60);
  free(e60b);
  free(e101);
  free(t60);
}

/* ---- units --------------------------------------------------------------- */

static const char units_cfg[] =
    "{'admin':{'listen':'127.0.0.1:0','state_file':'@DIR/state.json'},"
    "'server':{'listen':'127.0.0.1:0','log_level':'info',"
    "'shutdown_grace_ms':2000},"
    "'decision_log':{'enabled':false}," TARGETS3 "'flags':{"
    "'split':{'off_variant':'ctl','variants':{"
    "  'ctl':{'target':'t-a','weight':50},'trt':{'target':'t-b','weight':50}}},"
    "'salted':{'off_variant':'ctl','salt':'another-salt','variants':{"
    "  'ctl':{'target':'t-a','weight':50},'trt':{'target':'t-b','weight':50}}},"
    "'three':{'off_variant':'ctl','variants':{"
    "  'x':{'target':'t-a','weight':20.5},'ctl':{'target':'t-b','weight':49.5},"
    "  'y':{'target':'t-c','weight':30}}},"
    "'cust':{'off_variant':'ctl','unit':'attr:customer','variants':{"
    "  'ctl':{'target':'t-a','weight':50},'trt':{'target':'t-b','weight':50}}},"
    "'inp':{'off_variant':'ctl','unit':'input','variants':{"
    "  'ctl':{'target':'t-a','weight':50},'trt':{'target':'t-b','weight':50}}},"
    "'req':{'off_variant':'ctl','unit':'request','variants':{"
    "  'ctl':{'target':'t-a','weight':50},'trt':{'target':'t-b','weight':50}}}"
    "},"
    "'aliases':{'m-split':{'flag':'split'},'m-salted':{'flag':'salted'},"
    "'m-three':{'flag':'three'},'m-cust':{'flag':'cust'},"
    "'m-inp':{'flag':'inp'},'m-req':{'flag':'req'}}}";

static const char *const split_names[] = {"ctl", "trt"};
static const double split_w[] = {50, 50};
static const char *const three_names[] = {"x", "ctl", "y"};
static const double three_w[] = {20.5, 49.5, 30};

static const char *predict_split(const char *salt, const char *unit) {
  return variant_of_bucket(bucket_of(salt, unit), split_names, split_w, 2, 0);
}

static const char *predict_three(const char *unit) {
  return variant_of_bucket(bucket_of("three", unit), three_names, three_w, 3,
                           1);
}

static const char *model_of_split(const char *v) {
  return strcmp(v, "ctl") == 0 ? "m-a" : "m-b";
}

/* Ask for user's variant of alias on client c; checks the reason is
 * rollout and the answer came from the variant's target. */
static void variant_for(struct cli *c, const char *alias, const char *flag,
                        const char *user, const char *headers, char *out,
                        size_t n) {
  struct ans a;
  char *b = body_for(alias, user, "which arm", "");
  cli_post(c, headers, b, &a);
  if (!a.complete || a.status != 200 || strcmp(a.flag, flag) != 0 ||
      strcmp(a.reason, "rollout") != 0)
    fail_msg("%s for %s: %d %s/%s/%s %s", alias, user ? user : "(none)",
             a.status, a.flag, a.variant, a.reason, a.body);
  /* The variant named in the header is the one that answered. */
  if (strcmp(flag, "three") == 0) {
    const char *want = strcmp(a.variant, "x") == 0     ? "m-a"
                       : strcmp(a.variant, "ctl") == 0 ? "m-b"
                                                       : "m-c";
    if (strcmp(a.model, want) != 0)
      fail_msg("%s: variant %s answered by %s", alias, a.variant, a.model);
  } else if (strcmp(a.model, model_of_split(a.variant)) != 0) {
    fail_msg("%s: variant %s answered by %s", alias, a.variant, a.model);
  }
  snprintf(out, n, "%s", a.variant);
  free(b);
}

#define NUSERS 300

/* Variants of users user-0 .. user-299 for split and three, from the
 * README's formula; one letter each per flag. */
static void predicted(char split[NUSERS + 1], char three[NUSERS + 1]) {
  int i;
  for (i = 0; i < NUSERS; i++) {
    char u[32];
    snprintf(u, sizeof(u), "user-%d", i);
    split[i] = predict_split("split", u)[0];
    three[i] = predict_three(u)[0];
  }
  split[NUSERS] = three[NUSERS] = '\0';
}

/* What one gate gives the 300 users, for split and three. */
static void observed(int port, char split[NUSERS + 1], char three[NUSERS + 1]) {
  struct cli c;
  int i;
  cli_init(&c, port);
  for (i = 0; i < NUSERS; i++) {
    char u[32], v[64];
    snprintf(u, sizeof(u), "user-%d", i);
    variant_for(&c, "m-split", "split", u, NULL, v, sizeof(v));
    split[i] = v[0];
    variant_for(&c, "m-three", "three", u, NULL, v, sizeof(v));
    three[i] = v[0];
  }
  split[NUSERS] = three[NUSERS] = '\0';
  cli_close(&c);
}

static int count_char(const char *s, char ch) {
  int n = 0;
  for (; *s; s++)
    n += *s == ch;
  return n;
}

/* Sticky: the same variant per user on every request, on a second
 * instance, after a restart, and the one the README's formula gives. */
static void test_sticky_instances_restart(void **state) {
  struct tenv *e = *state;
  struct mg_h_proc other;
  char want_s[NUSERS + 1], want_t[NUSERS + 1];
  char a_s[NUSERS + 1], a_t[NUSERS + 1], b_s[NUSERS + 1], b_t[NUSERS + 1];
  char r_s[NUSERS + 1], r_t[NUSERS + 1];
  int i;

  predicted(want_s, want_t);
  /* The formula gives a plausible split, so the comparison means
   * something: both arms (and all three) hold users. */
  assert_true(count_char(want_s, 't') > 100 && count_char(want_s, 'c') > 100);
  assert_true(count_char(want_t, 'x') > 30 && count_char(want_t, 'y') > 50 &&
              count_char(want_t, 'c') > 100);

  gate_up(e, units_cfg);
  memset(&other, 0, sizeof(other));
  {
    /* The same config but a state file of its own: one state file
     * belongs to one process (issue 10, point 3). */
    const char *env[] = {"MODELGATE_ADMIN_TOKEN=" TOKEN, NULL};
    char *c = mg_h_read_file(e->config, NULL), *p, *c2, *path;
    assert_non_null(c);
    p = strstr(c, "/state.json");
    assert_non_null(p);
    c2 = fmt("%.*s/state-other.json%s", (int)(p - c), c, p + 11);
    path = fmt("%s/other.json", e->dir);
    assert_int_equal(mg_h_write_file(path, c2), 0);
    assert_int_equal(mg_h_start_gate(&other, path, env), 0);
    free(path);
    free(c2);
    free(c);
  }
  observed(e->gate.port, a_s, a_t);
  observed(other.port, b_s, b_t);
  assert_string_equal(a_s, want_s);
  assert_string_equal(a_t, want_t);
  assert_string_equal(b_s, want_s);
  assert_string_equal(b_t, want_t);
  gate_down(&other);

  /* Across a restart. */
  gate_down(&e->gate);
  gate_run_into(e, &e->gate);
  observed(e->gate.port, r_s, r_t);
  assert_string_equal(r_s, want_s);
  assert_string_equal(r_t, want_t);

  /* A custom salt buckets by itself, not by the flag's name: its split
   * differs from split's, and matches the formula with that salt. */
  {
    struct cli c;
    int differ = 0;
    cli_init(&c, e->gate.port);
    for (i = 0; i < 100; i++) {
      char u[32], v[64];
      snprintf(u, sizeof(u), "user-%d", i);
      variant_for(&c, "m-salted", "salted", u, NULL, v, sizeof(v));
      assert_string_equal(v, predict_split("another-salt", u));
      differ += v[0] != want_s[i];
    }
    cli_close(&c);
    assert_true(differ > 20);
  }
}

/* Where the unit comes from, and the other unit kinds. */
static void test_unit_sources(void **state) {
  struct tenv *e = *state;
  struct cli c;
  char v[64], w[64];
  int i, ctl, trt;
  /* Users whose arms differ, so that a wrong source shows. */
  const char *ua = NULL, *ub = NULL;
  char names[2][32];

  for (i = 0; ua == NULL || ub == NULL; i++) {
    char u[32];
    snprintf(u, sizeof(u), "src-%d", i);
    if (strcmp(predict_split("split", u), "ctl") == 0 && ua == NULL) {
      snprintf(names[0], sizeof(names[0]), "%s", u);
      ua = names[0];
    } else if (strcmp(predict_split("split", u), "trt") == 0 && ub == NULL) {
      snprintf(names[1], sizeof(names[1]), "%s", u);
      ub = names[1];
    }
  }

  gate_up(e, units_cfg);
  cli_init(&c, e->gate.port);

  /* Body user; header; the body wins over the header; an empty or
   * non-string user leaves the header in charge. */
  variant_for(&c, "m-split", "split", ua, NULL, v, sizeof(v));
  assert_string_equal(v, "ctl");
  {
    char *h = fmt("x-modelgate-unit: %s\r\n", ub);
    variant_for(&c, "m-split", "split", NULL, h, v, sizeof(v));
    assert_string_equal(v, "trt");
    variant_for(&c, "m-split", "split", ua, h, v, sizeof(v));
    assert_string_equal(v, "ctl");
    variant_for(&c, "m-split", "split", "", h, v, sizeof(v));
    assert_string_equal(v, "trt");
    {
      struct ans a;
      char *b =
          fmt("{\"model\":\"m-split\",\"user\":42,\"messages\":[{\"role\":"
              "\"user\",\"content\":\"x\"}]}");
      cli_post(&c, h, b, &a);
      expect_ans(&a, "numeric user", "split", "trt", "rollout", "t-b", "m-b");
      free(b);
    }
    free(h);
  }

  /* safety_identifier, what current OpenAI SDKs send in place of user
   * (issue 11.1): the first unit source. One user, eight calls, one arm;
   * it wins over user and header; a non-string one is no unit. */
  for (i = 0; i < 8; i++) {
    struct ans a;
    char *b = fmt("{\"model\":\"m-split\",\"safety_identifier\":\"%s\","
                  "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                  ub);
    cli_post(&c, NULL, b, &a);
    expect_ans(&a, "safety_identifier", "split", "trt", "rollout", "t-b",
               "m-b");
    free(b);
  }
  {
    struct ans a;
    char *h = fmt("x-modelgate-unit: %s\r\n", ub);
    char *b = fmt("{\"model\":\"m-split\",\"safety_identifier\":\"%s\","
                  "\"user\":\"%s\",\"messages\":[{\"role\":\"user\","
                  "\"content\":\"x\"}]}",
                  ua, ub);
    cli_post(&c, h, b, &a);
    expect_ans(&a, "safety_identifier over user and header", "split", "ctl",
               "rollout", "t-a", "m-a");
    free(b);
    b = fmt("{\"model\":\"m-split\",\"safety_identifier\":7,"
            "\"user\":\"%s\",\"messages\":[{\"role\":\"user\","
            "\"content\":\"x\"}]}",
            ub);
    cli_post(&c, NULL, b, &a);
    expect_ans(&a, "numeric safety_identifier", "split", "trt", "rollout",
               "t-b", "m-b");
    free(b);
    free(h);
  }

  /* Neither: not randomized (issue 11.1): the off_variant, reason
   * no_unit, every time. */
  for (i = 0; i < 20; i++) {
    struct ans a;
    char *b = body_for("m-split", NULL, "which arm", "");
    cli_post(&c, NULL, b, &a);
    expect_ans(&a, "no unit", "split", "ctl", "no_unit", NULL, "m-a");
    free(b);
  }

  /* unit: request: one user gets both arms. */
  ctl = trt = 0;
  for (i = 0; i < 80; i++) {
    variant_for(&c, "m-req", "req", "same-user", NULL, v, sizeof(v));
    ctl += strcmp(v, "ctl") == 0;
    trt += strcmp(v, "trt") == 0;
  }
  assert_true(ctl > 0 && trt > 0 && ctl + trt == 80);

  /* unit: attr:customer: every user of a customer in the customer's arm,
   * whether the attribute comes as a header or in metadata. */
  for (i = 0; i < 6; i++) {
    char cust[32];
    int k;
    snprintf(cust, sizeof(cust), "cust-%d", i);
    for (k = 0; k < 8; k++) {
      char u[32], *h = fmt("x-modelgate-attr-customer: %s\r\n", cust);
      struct ans a;
      char *b;
      snprintf(u, sizeof(u), "member-%d-%d", i, k);
      if (k % 2 == 0) {
        b = body_for("m-cust", u, "hi", "");
        cli_post(&c, h, b, &a);
      } else {
        char *md = fmt(",\"metadata\":{\"customer\":\"%s\"}", cust);
        b = body_for("m-cust", u, "hi", md);
        cli_post(&c, NULL, b, &a);
        free(md);
      }
      expect_ans(&a, u, "cust", predict_split("cust", cust), "rollout", NULL,
                 model_of_split(predict_split("cust", cust)));
      free(b);
      free(h);
    }
  }
  /* Without the attribute (a user is no customer): no unit either. */
  for (i = 0; i < 20; i++) {
    struct ans a;
    char *b = body_for("m-cust", "lonely-user", "which arm", "");
    cli_post(&c, NULL, b, &a);
    expect_ans(&a, "no customer", "cust", "ctl", "no_unit", NULL, "m-a");
    free(b);
  }

  /* unit: input: the same messages, spelled differently (key order,
   * spacing, escapes), from different users and with other members, get
   * one arm; different prompts spread over both. */
  ctl = trt = 0;
  for (i = 0; i < 40; i++) {
    char *b1 = fmt("{\"model\":\"m-inp\",\"user\":\"alice\",\"messages\":"
                   "[{\"role\":\"user\",\"content\":\"Hello prompt %d\"}]}",
                   i);
    char *b2 =
        fmt("{ \"messages\" : [ { \"content\" : \"\\u0048ello prompt %d\""
            " , \"role\" : \"user\" } ] , \"model\" : \"m-inp\" ,"
            " \"user\" : \"bob\", \"temperature\": 0.5 }",
            i);
    char *b3 = fmt("{\"model\":\"m-inp\",\"metadata\":{\"tier\":\"x\"},"
                   "\"messages\":[{\"content\":\"Hello prompt %d\",\"role\":"
                   "\"user\"}]}",
                   i);
    struct ans a1, a2, a3;
    cli_post(&c, NULL, b1, &a1);
    cli_post(&c, "x-modelgate-unit: carol\r\n", b2, &a2);
    cli_post(&c, NULL, b3, &a3);
    expect_ans(&a1, b1, "inp", a1.variant, "rollout", NULL,
               model_of_split(a1.variant));
    expect_ans(&a2, b2, "inp", a1.variant, "rollout", NULL,
               model_of_split(a1.variant));
    expect_ans(&a3, b3, "inp", a1.variant, "rollout", NULL,
               model_of_split(a1.variant));
    ctl += strcmp(a1.variant, "ctl") == 0;
    trt += strcmp(a1.variant, "trt") == 0;
    free(b1);
    free(b2);
    free(b3);
  }
  assert_true(ctl > 0 && trt > 0 && ctl + trt == 40);

  /* Sticky across requests on new connections too. */
  variant_for(&c, "m-split", "split", ub, NULL, v, sizeof(v));
  cli_close(&c);
  for (i = 0; i < 5; i++) {
    struct ans a;
    char *b = body_for("m-split", ub, "again", "");
    ask(e->gate.port, NULL, b, &a);
    snprintf(w, sizeof(w), "%s", a.variant);
    assert_string_equal(w, v);
    free(b);
  }
}

/* ---- decision headers on every answer ------------------------------------ */

static const char headers_cfg[] =
    "{'admin':{'listen':'127.0.0.1:0','state_file':'@DIR/state.json'},"
    "'server':{'listen':'127.0.0.1:0','log_level':'info',"
    "'shutdown_grace_ms':2000},"
    "'limits':{'body_bytes':2048},"
    "'decision_log':{'enabled':false},"
    "'targets':{'t-a':{'base_url':'@MOCK','model':'m-a',"
    "  'breaker':{'enabled':false}},"
    "'t-b':{'base_url':'@MOCK','model':'m-b','breaker':{'enabled':false},"
    "  'timeouts':{'first_byte_ms':%d}}},"
    /* No fallback to the control: the 504 below is the treatment's own. */
    "'flags':{'hf':{'off_variant':'ctl','fallback_to_control':false,"
    "  'variants':{"
    "  'ctl':{'target':'t-a','weight':100},'trt':{'target':'t-b','weight':0}},"
    "  'rules':[{'if':{'attr':'slow','op':'exists'},'variant':'trt'}]}},"
    "'aliases':{'m-flag':{'flag':'hf'},'m-direct':{'target':'t-a'}}}";

/* The decision headers of an answer, with the values they must have. */
static void expect_headers(const struct mg_h_resp *r, const char *what,
                           int status, const char *flag, const char *variant,
                           const char *reason, char ids[][40], int *nids) {
  char id[64], f[64], v[64], why[64];
  int i;
  if (r->status != status)
    fail_msg("%s: want %d, got %d: %s%s", what, status, r->status, r->head,
             r->body);
  if (mg_h_header(r, "x-modelgate-decision", id, sizeof(id)) == NULL ||
      strlen(id) != 32)
    fail_msg("%s: no x-modelgate-decision: %s", what, r->head);
  if (mg_h_header(r, "x-modelgate-flag", f, sizeof(f)) == NULL ||
      mg_h_header(r, "x-modelgate-variant", v, sizeof(v)) == NULL ||
      mg_h_header(r, "x-modelgate-reason", why, sizeof(why)) == NULL)
    fail_msg("%s: a decision header is missing: %s", what, r->head);
  if (strcmp(f, flag) || strcmp(v, variant) || strcmp(why, reason))
    fail_msg("%s: want %s/%s/%s, got %s/%s/%s", what, flag, variant, reason, f,
             v, why);
  /* Every answer has an id of its own. */
  for (i = 0; i < *nids; i++)
    if (strcmp(ids[i], id) == 0)
      fail_msg("%s: decision id %s used twice", what, id);
  memcpy(ids[(*nids)++], id, 33); /* 32 hex digits, checked above */
}

static void test_headers_on_every_answer(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  char ids[40][40], *cfg, *big, *b;
  int nids = 0;
  int fb = 300 * SLOW;

  cfg = fmt(headers_cfg, fb);
  gate_up(e, cfg);
  free(cfg);

  /* Proxied through the flag: 200. */
  b = body_for("m-flag", "u1", "hi", "");
  assert_int_equal(mg_h_request(e->gate.port, "POST", "/v1/chat/completions",
                                NULL, b, &r, T_MS * SLOW),
                   0);
  expect_headers(&r, "200 via the flag", 200, "hf", "ctl", "rollout", ids,
                 &nids);
  mg_h_resp_free(&r);

  /* A direct alias: no flag, reason direct. */
  free(b);
  b = body_for("m-direct", "u1", "hi", "");
  assert_int_equal(mg_h_request(e->gate.port, "POST", "/v1/chat/completions",
                                NULL, b, &r, T_MS * SLOW),
                   0);
  expect_headers(&r, "direct alias", 200, "-", "-", "direct", ids, &nids);
  mg_h_resp_free(&r);
  free(b);

  /* Before routing: invalid JSON, no model, an unknown model. */
  assert_int_equal(mg_h_request(e->gate.port, "POST", "/v1/chat/completions",
                                NULL, "{\"model\": \"m-flag\",", &r,
                                T_MS * SLOW),
                   0);
  assert_error(&r, 400, "invalid_json");
  expect_headers(&r, "invalid JSON", 400, "-", "-", "unrouted", ids, &nids);
  mg_h_resp_free(&r);
  assert_int_equal(mg_h_request(e->gate.port, "POST", "/v1/chat/completions",
                                NULL, "{\"messages\":[]}", &r, T_MS * SLOW),
                   0);
  assert_error(&r, 400, "missing_model");
  expect_headers(&r, "no model", 400, "-", "-", "unrouted", ids, &nids);
  mg_h_resp_free(&r);
  b = body_for("nobody-serves-this", "u1", "hi", "");
  assert_int_equal(mg_h_request(e->gate.port, "POST", "/v1/chat/completions",
                                NULL, b, &r, T_MS * SLOW),
                   0);
  assert_error(&r, 404, "model_not_found");
  expect_headers(&r, "unknown model", 404, "-", "-", "unrouted", ids, &nids);
  mg_h_resp_free(&r);
  free(b);

  /* Answered by the connection layer: a body over the limit, an unknown
   * URL, a wrong method. */
  big = malloc(4096);
  assert_non_null(big);
  memset(big, 'x', 4095);
  big[4095] = '\0';
  b = body_for("m-flag", "u1", big, "");
  assert_int_equal(mg_h_request(e->gate.port, "POST", "/v1/chat/completions",
                                NULL, b, &r, T_MS * SLOW),
                   0);
  assert_error(&r, 413, "body_too_large");
  expect_headers(&r, "413", 413, "-", "-", "unrouted", ids, &nids);
  mg_h_resp_free(&r);
  free(b);
  free(big);
  assert_int_equal(mg_h_request(e->gate.port, "POST", "/v1/nothing-here", NULL,
                                "{}", &r, T_MS * SLOW),
                   0);
  assert_error(&r, 404, "unknown_url");
  expect_headers(&r, "unknown URL", 404, "-", "-", "unrouted", ids, &nids);
  mg_h_resp_free(&r);
  assert_int_equal(mg_h_request(e->gate.port, "GET", "/v1/chat/completions",
                                NULL, NULL, &r, T_MS * SLOW),
                   0);
  assert_error(&r, 405, "method_not_allowed");
  expect_headers(&r, "405", 405, "-", "-", "unrouted", ids, &nids);
  mg_h_resp_free(&r);

  /* The internal endpoints. */
  {
    static const char *const paths[] = {"/healthz", "/readyz", "/metrics",
                                        "/v1/models"};
    size_t k;
    for (k = 0; k < 4; k++) {
      assert_int_equal(get(e->gate.port, paths[k], &r), 0);
      expect_headers(&r, paths[k], 200, "-", "-", "unrouted", ids, &nids);
      mg_h_resp_free(&r);
    }
  }

  /* Upstream errors passed through, on a routed request: the flag's
   * headers. */
  mock_behave(e, "{'model':'m-a','mode':'status','status':500,'times':1}");
  b = body_for("m-flag", "u1", "hi", "");
  assert_int_equal(mg_h_request(e->gate.port, "POST", "/v1/chat/completions",
                                NULL, b, &r, T_MS * SLOW),
                   0);
  expect_headers(&r, "upstream 500", 500, "hf", "ctl", "rollout", ids, &nids);
  assert_non_null(strstr(r.body, "\"error\""));
  mg_h_resp_free(&r);
  mock_behave(e, "{'model':'m-a','mode':'status','status':429,'times':1,"
             "'body':{'error':{'message':'slow down','type':'requests',"
             "'param':null,'code':'rate_limit_exceeded'}}}");
  assert_int_equal(mg_h_request(e->gate.port, "POST", "/v1/chat/completions",
                                NULL, b, &r, T_MS * SLOW),
                   0);
  assert_error(&r, 429, "rate_limit_exceeded");
  expect_headers(&r, "upstream 429", 429, "hf", "ctl", "rollout", ids, &nids);
  mg_h_resp_free(&r);
  free(b);

  /* A timeout, through a rule of the flag. */
  mock_behave(e, "{'model':'m-b','mode':'slow','ms':5000,'times':1}");
  b = body_for("m-flag", "u1", "hi", "");
  assert_int_equal(mg_h_request(e->gate.port, "POST", "/v1/chat/completions",
                                "x-modelgate-attr-slow: yes\r\n", b, &r,
                                T_MS * SLOW),
                   0);
  assert_error(&r, 504, "upstream_timeout");
  expect_headers(&r, "504", 504, "hf", "trt", "rule:0", ids, &nids);
  mg_h_resp_free(&r);

  /* A stream's head carries them too. */
  free(b);
  b = body_for("m-flag", "u2", "hi", ",\"stream\":true");
  assert_int_equal(mg_h_request(e->gate.port, "POST", "/v1/chat/completions",
                                NULL, b, &r, T_MS * SLOW),
                   0);
  expect_headers(&r, "stream", 200, "hf", "ctl", "rollout", ids, &nids);
  assert_true(r.chunked);
  mg_h_resp_free(&r);
  free(b);

  /* Only routed requests count in the flag's metric: the 200s, the
   * upstream 500 and 429, the stream (ctl, rollout) and the 504 (trt,
   * rule:0). */
  {
    char *m = metrics(e->gate.port);
    assert_true(mval(m, "modelgate_flag_requests_total",
                     "flag=\"hf\",variant=\"ctl\",reason=\"rollout\"") == 4);
    assert_true(mval(m, "modelgate_flag_requests_total",
                     "flag=\"hf\",variant=\"trt\",reason=\"rule:0\"") == 1);
    free(m);
  }
}

/* ---- modelgate check on bad flags ---------------------------------------- */

static void test_check_bad_flags(void **state) {
  struct tenv *e = *state;
  char *path = fmt("%s/bad-flags.json", e->dir), *out = NULL;
  const char *check[] = {MG_BIN, "check", "-c", path, NULL};
  const char *serve[] = {MG_BIN, "serve", "-c", path, NULL};
  static const char *const errors[] = {
      "$.flags.a.variants: weights must sum to 100, not 90.00",
      "$.flags.a.off_variant: unknown variant \"zzz\"",
      "$.flags.a.rules[0].variant: unknown variant \"nope\"",
      "$.flags.b.variants.v.target: unknown target \"ghost\"",
      "$.flags.b.start: must be an RFC 3339 time",
      "$.flags.b.rules[0].if.all[0].op: unknown operator \"equals\"",
      "$.flags.b.rules[0].if.all[1].input: must be one of chars, messages, "
      "tools, stream, max_tokens",
      "$.flags.b.rules[1].if.not.values: in needs \"values\"",
      "$.flags.b.rules[2].if.value: lt compares numbers",
      "$.flags.b.rules[3].if: exists takes no value",
      "$.flags.b.rules[4].if: must have exactly one of all, any, not, attr, "
      "input",
      "$.flags.c.colour: unknown key",
      "$.flags.c.variants.x.weight: must be a percentage between 0 and 100 "
      "with at most two decimals",
      "$.flags.c.variants: give every variant a weight, or none",
      "$.flags.c.unit: must be user, request, input or attr:<name>, not "
      "\"session\"",
      "$.flags.c.end: must be after start",
      "$.flags.d.unit: allow and block lists need unit user or attr:<name>",
      "$.flags.e.variants.w.weight: must be a percentage",
      "$.aliases.n.flag: unknown flag \"nope\"",
      NULL};
  size_t i, lines = 0;
  char *p, *want;

  assert_int_equal(
      mg_h_write_file(
          path,
          "{\"targets\":{\"t\":{\"base_url\":\"http://127.0.0.1:1/v1\","
          "\"model\":\"m\"}},\"flags\":{"
          "\"a\":{\"off_variant\":\"zzz\",\"variants\":{"
          "\"c\":{\"target\":\"t\",\"weight\":60},"
          "\"d\":{\"target\":\"t\",\"weight\":30}},"
          "\"rules\":[{\"if\":{\"attr\":\"x\",\"op\":\"eq\",\"value\":\"y\"},"
          "\"variant\":\"nope\"}]},"
          "\"b\":{\"off_variant\":\"v\",\"start\":\"yesterday\",\"variants\":{"
          "\"v\":{\"target\":\"ghost\"}},\"rules\":["
          "{\"if\":{\"all\":[{\"attr\":\"x\",\"op\":\"equals\",\"value\":\"y\"}"
          ","
          "{\"input\":\"bytes\",\"op\":\"gt\",\"value\":1}]},\"variant\":\"v\"}"
          ","
          "{\"if\":{\"not\":{\"attr\":\"x\",\"op\":\"in\",\"value\":\"y\"}},"
          "\"variant\":\"v\"},"
          "{\"if\":{\"attr\":\"x\",\"op\":\"lt\",\"value\":\"y\"},"
          "\"variant\":\"v\"},"
          "{\"if\":{\"attr\":\"x\",\"op\":\"exists\",\"value\":\"y\"},"
          "\"variant\":\"v\"},"
          "{\"if\":{\"attr\":\"x\",\"input\":\"chars\",\"op\":\"gt\","
          "\"value\":1},\"variant\":\"v\"}]},"
          "\"c\":{\"off_variant\":\"x\",\"unit\":\"session\","
          "\"start\":\"2026-01-02T00:00:00Z\",\"end\":\"2026-01-01T00:00:00Z\","
          "\"variants\":{\"x\":{\"target\":\"t\",\"weight\":33.333},"
          "\"y\":{\"target\":\"t\"}},\"colour\":\"red\"},"
          "\"d\":{\"off_variant\":\"x\",\"unit\":\"request\",\"block\":[\"u\"],"
          "\"variants\":{\"x\":{\"target\":\"t\",\"weight\":100,"
          "\"allow\":[\"a\"]}}},"
          "\"e\":{\"off_variant\":\"v\",\"variants\":{"
          "\"v\":{\"target\":\"t\",\"weight\":101},"
          "\"w\":{\"target\":\"t\",\"weight\":-1}}}},"
          "\"aliases\":{\"a\":{\"flag\":\"a\"},\"n\":{\"flag\":\"nope\"}}}"),
      0);
  assert_int_equal(mg_h_run(check, &out, T_MS * SLOW), 2);
  for (i = 0; errors[i]; i++) {
    want = fmt("%s: %s", path, errors[i]);
    if (strstr(out, want) == NULL)
      fail_msg("`modelgate check` did not report \"%s\":\n%s", want, out);
    free(want);
  }
  /* Every line names the file and a JSON path; the last one counts them. */
  for (p = out; *p;) {
    char *nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) : strlen(p);
    char *line = strndup(p, len);
    want = fmt("%s: ", path);
    if (strncmp(line, want, strlen(want)) != 0)
      fail_msg("a line of `modelgate check` does not name the file: %s", line);
    if (strncmp(line + strlen(want), "$", 1) == 0)
      lines++;
    else if (strstr(line, " errors") == NULL)
      fail_msg("a line of `modelgate check` has no JSON path: %s", line);
    free(want);
    free(line);
    p = nl ? nl + 1 : p + len;
  }
  want = fmt("%s: %zu errors", path, lines);
  if (strstr(out, want) == NULL)
    fail_msg("no \"%s\" in:\n%s", want, out);
  free(want);
  assert_true(lines >= 20);
  free(out);

  /* serve refuses the same file, with the same errors. */
  assert_int_equal(mg_h_run(serve, &out, 10000 * SLOW), 2);
  want = fmt("%s: $.flags.a.variants: weights must sum to 100", path);
  assert_non_null(strstr(out, want));
  free(want);
  free(out);
  free(path);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, tenv_setup, tenv_teardown)
  const struct CMUnitTest tests[] = {
      T(test_evaluation_order),         T(test_unit_sources),
      T(test_sticky_instances_restart), T(test_headers_on_every_answer),
      T(test_check_bad_flags),
  };
#undef T
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
