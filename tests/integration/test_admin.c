/* test_admin.c - the admin API, hot reload, runtime overrides and their
 * state file, and the flag metrics (issue 3), against the real binary and
 * the mock model server, over loopback:
 *
 *   auth           the bearer token comes from the variable admin.token_env
 *                  names (not MODELGATE_ADMIN_TOKEN then); a missing or
 *                  wrong token is 401 and changes nothing (no kill, no
 *                  weights, no reload, no state file); its own listener.
 *   methods        a wrong method is 405 and changes nothing; 405s name the
 *                  allowed methods (allow), as the main listener's do.
 *   no token       reads work, every mutation is 403 admin_disabled.
 *   state          GET /admin/state: config hash (XXH64 of the file) and
 *                  source, per flag enabled/killed, weights in force, file
 *                  weights, overrides; the gauges say the same.
 *   kill           in force from the very next request (no pause), on a
 *                  kept-alive connection; unkill; a flag disabled in the
 *                  file stays killed after an unkill; a kill survives a
 *                  restart and a reload that drops and restores the flag.
 *   weights        PUT validation (every variant, sum 100, two decimals,
 *                  unknown variant or flag); an override wins over the file
 *                  and survives reloads (SIGHUP and admin) that change the
 *                  file's weights, and a restart; a renamed variant makes
 *                  it stale (file weights in force) until the name is back;
 *                  DELETE goes back to the file; weights on a flag without
 *                  any start a rollout.
 *   state file     written atomically: a reader polling it during 80
 *                  changes never sees anything but a whole JSON document,
 *                  and it says what the last call did; a malformed file
 *                  stops modelgate from starting, saying why.
 *   reload         admin (200 with the new state, or 422 with every error
 *                  and its JSON path) and SIGHUP (errors logged); the hash
 *                  changes only on success; new requests use the new config
 *                  at once; a request in flight finishes on the snapshot it
 *                  started with, even when its target is gone.
 *   reload load    24 reloads (SIGHUP and admin, two valid configs and an
 *                  invalid one) under four keep-alive clients: not one
 *                  failed request, and every request that ran entirely
 *                  between two reloads was routed on the config in force. */
#define _GNU_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"
#include "test_flags.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>

/* The token lives in a variable of the config's choosing; the default
 * variable holds a decoy that must not open anything. */
#define TOKEN_ENV "MGA_TOKEN"
#define DECOY "decoy-token-in-the-default-variable"

/* ---- configs and processes ----------------------------------------------- */

/* Flag "chat": ctl (t-a) and trt (t-b) with the given file weights; "dark":
 * disabled in the file, by customer; "plain": no weights. flag_extra: more
 * members of chat (",..."); token_env: the variable naming the token. */
static char *cfg_text(struct tenv *e, const char *token_env, const char *wc,
                      const char *wt, const char *flag_extra) {
  char *t = fmt(
      "{'admin':{'listen':'127.0.0.1:0','state_file':'@DIR/state.json',"
      "'token_env':'%s'},"
      "'server':{'listen':'127.0.0.1:0','log_level':'info',"
      "'shutdown_grace_ms':2000},"
      "'decision_log':{'enabled':false},"
      "'targets':{'t-a':{'base_url':'@MOCK','model':'m-a',"
      "  'breaker':{'enabled':false}},"
      "'t-b':{'base_url':'@MOCK','model':'m-b','breaker':{'enabled':false}},"
      "'t-c':{'base_url':'@MOCK','model':'m-c','breaker':{'enabled':false}}},"
      "'flags':{'chat':{'off_variant':'ctl','variants':{"
      "  'ctl':{'target':'t-a','weight':%s},'trt':{'target':'t-b','weight':%s}}"
      "%s},"
      "'dark':{'enabled':false,'off_variant':'ctl','unit':'attr:org',"
      "  'variants':{'ctl':{'target':'t-a','weight':80},"
      "  'trt':{'target':'t-c','weight':20}}},"
      "'plain':{'off_variant':'ctl','variants':{'ctl':{'target':'t-a'},"
      "  'trt':{'target':'t-c'}}}},"
      "'aliases':{'m-chat':{'flag':'chat'},'m-dark':{'flag':'dark'},"
      "'m-plain':{'flag':'plain'}}}",
      token_env, wc, wt, flag_extra);
  char *c = q(e, t);
  free(t);
  return c;
}

static void put_cfg(struct tenv *e, const char *wc, const char *wt,
                    const char *flag_extra) {
  char *c = cfg_text(e, TOKEN_ENV, wc, wt, flag_extra);
  assert_int_equal(mg_h_write_file(e->config, c), 0);
  free(c);
}

/* Start e->gate on the config file as it is, with extra environment. */
static void run_env(struct tenv *e, const char *const *env) {
  if (mg_h_start_gate(&e->gate, e->config, env) != 0)
    fail_msg("modelgate did not start");
  assert_true(e->gate.admin_port > 0);
}

static void run(struct tenv *e) {
  const char *env[] = {TOKEN_ENV "=" TOKEN, "MODELGATE_ADMIN_TOKEN=" DECOY,
                       NULL};
  run_env(e, env);
}

static void start_w(struct tenv *e, const char *wc, const char *wt) {
  put_cfg(e, wc, wt, "");
  run(e);
}

static void restart(struct tenv *e) {
  gate_down(&e->gate);
  run(e);
}

static char *state_file(struct tenv *e) { return fmt("%s/state.json", e->dir); }

static bool state_file_exists(struct tenv *e) {
  char *p = state_file(e);
  struct stat st;
  bool ok = stat(p, &st) == 0;
  free(p);
  return ok;
}

/* The state file, parsed; fails when it is missing or not JSON. */
static cJSON *state_file_json(struct tenv *e) {
  char *p = state_file(e);
  cJSON *j = read_json_file(p);
  if (!cJSON_IsObject(j))
    fail_msg("the state file %s is missing or not a JSON object", p);
  free(p);
  return j;
}

/* XXH64 of the config file, as the hash modelgate reports. */
static void file_hash(struct tenv *e, char out[32]) {
  size_t len;
  char *s = mg_h_read_file(e->config, &len);
  assert_non_null(s);
  snprintf(out, 32, "%016llx", (unsigned long long)XXH64(s, len, 0));
  free(s);
}

/* ---- requests ------------------------------------------------------------ */

static const char *const cw_names[] = {"ctl", "trt"};

/* The variant user gets on flag chat with these weights (README formula). */
static const char *predict_chat(const char *user, double wc, double wt) {
  double w[2];
  w[0] = wc;
  w[1] = wt;
  return variant_of_bucket(bucket_of("chat", user), cw_names, w, 2, 0);
}

/* One chat request for user on alias m-chat over c. */
static void chat_as(struct cli *c, const char *user, struct ans *a) {
  char *b = body_for("m-chat", user, "hello", "");
  cli_post(c, NULL, b, a);
  free(b);
}

/* Users u-0 .. u-(n-1) on m-chat all get their predicted variant with the
 * given weights and reason; returns how many got trt. */
static int users_follow(struct tenv *e, int n, double wc, double wt,
                        const char *reason) {
  struct cli c;
  int i, trt = 0;
  cli_init(&c, e->gate.port);
  for (i = 0; i < n; i++) {
    char u[32];
    struct ans a;
    const char *v;
    snprintf(u, sizeof(u), "u-%d", i);
    v = strcmp(reason, "killed") == 0 ? "ctl" : predict_chat(u, wc, wt);
    chat_as(&c, u, &a);
    expect_ans(&a, u, "chat", v, reason, strcmp(v, "ctl") == 0 ? "t-a" : "t-b",
               strcmp(v, "ctl") == 0 ? "m-a" : "m-b");
    trt += strcmp(v, "trt") == 0;
  }
  cli_close(&c);
  return trt;
}

/* An admin call with explicit headers; returns the status. */
static int adm_h(struct tenv *e, const char *method, const char *path,
                 const char *headers, const char *body, struct mg_h_resp *r) {
  if (mg_h_request(e->gate.admin_port, method, path, headers, body, r,
                   T_MS * SLOW) != 0)
    fail_msg("no answer from the admin API to %s %s", method, path);
  return r->status;
}

/* weights.<v> of flags.<flag> in a state. */
static double w_of(const cJSON *st, const char *flag, const char *what,
                   const char *v) {
  char p[160];
  snprintf(p, sizeof(p), "flags.%s.%s.%s", flag, what, v);
  return num_of(st, p);
}

/* The gauges of flag chat. */
static void expect_gauges(struct tenv *e, double wc, double wt, int killed) {
  char *m = metrics(e->gate.port);
  double gc = mval(m, "modelgate_flag_weight_percent",
                   "flag=\"chat\",variant=\"ctl\""),
         gt = mval(m, "modelgate_flag_weight_percent",
                   "flag=\"chat\",variant=\"trt\""),
         k = mval(m, "modelgate_flag_killed", "flag=\"chat\"");
  if (fabs(gc - wc) > 1e-9 || fabs(gt - wt) > 1e-9 || k != killed)
    fail_msg("gauges of chat: weights %g/%g killed %g, want %g/%g killed %d",
             gc, gt, k, wc, wt, killed);
  free(m);
}

/* ---- auth and the listener ----------------------------------------------- */

static void test_auth(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  char hash[32], hash2[32];
  cJSON *st;
  static const char *const bad[] = {
      NULL,
      "Authorization: Bearer " DECOY "\r\n",
      "Authorization: Bearer wrong\r\n",
      "Authorization: Bearer " TOKEN "x\r\n",
      "Authorization: Bearer flags-admin-token-Vb81q\r\n", /* a prefix */
      "Authorization: Bearer \r\n",
      "Authorization: Basic " TOKEN "\r\n",
      "Authorization: " TOKEN "\r\n",
      "X-Admin-Token: " TOKEN "\r\n",
  };
  static const struct {
    const char *method, *path, *body;
  } muts[] = {
      {"POST", "/admin/flags/chat/kill", ""},
      {"POST", "/admin/flags/chat/unkill", ""},
      {"PUT", "/admin/flags/chat/weights", "{\"ctl\":0,\"trt\":100}"},
      {"DELETE", "/admin/flags/chat/weights", NULL},
      {"POST", "/admin/reload", ""},
      {"POST", "/admin/flags/chat/ramp/pause", ""},
      {"POST", "/admin/flags/nope/kill", ""},
  };
  size_t i, k;

  start_w(e, "70", "30");
  file_hash(e, hash);
  /* A changed file on disk: a reload that got through would show. */
  put_cfg(e, "0", "100", "");

  /* Reads need the token too. */
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    adm_h(e, "GET", "/admin/state", bad[i], NULL, &r);
    assert_error(&r, 401, "unauthorized");
    mg_h_resp_free(&r);
  }
  for (k = 0; k < sizeof(muts) / sizeof(muts[0]); k++)
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
      adm_h(e, muts[k].method, muts[k].path, bad[i], muts[k].body, &r);
      if (r.status != 401)
        fail_msg("%s %s with %s: %d %s", muts[k].method, muts[k].path,
                 bad[i] ? bad[i] : "no token", r.status, r.body);
      assert_error(&r, 401, "unauthorized");
      /* The answer never echoes a token. */
      assert_null(strstr(r.body, TOKEN));
      assert_null(strstr(r.head, TOKEN));
      mg_h_resp_free(&r);
    }

  /* Nothing changed: no kill, no override, no reload, no state file. */
  st = state_now(e);
  assert_string_equal(str_at(st, "config.hash"), hash);
  assert_true(num_of(st, "config.reloads") == 0);
  assert_true(bool_of(st, "mutations"));
  assert_false(bool_of(st, "flags.chat.killed"));
  assert_false(bool_of(st, "flags.chat.weights_override"));
  assert_true(w_of(st, "chat", "weights", "trt") == 30);
  assert_int_equal(cJSON_GetArraySize(at(st, "overrides")), 0);
  cJSON_Delete(st);
  assert_false(state_file_exists(e));
  users_follow(e, 40, 70, 30, "rollout");
  assert_true(mnow(e, "modelgate_config_reloads_total", "result=\"ok\"") <= 0);

  /* More than one space after the scheme is allowed (RFC 9110, 11.4). */
  assert_int_equal(adm_h(e, "GET", "/admin/state",
                         "Authorization: Bearer   " TOKEN "\r\n", NULL, &r),
                   200);
  mg_h_resp_free(&r);

  /* The scheme is case-insensitive, as HTTP's are. */
  assert_int_equal(adm_h(e, "POST", "/admin/flags/chat/kill",
                         "authorization: bearer " TOKEN "\r\n", "", &r),
                   200);
  mg_h_resp_free(&r);
  users_follow(e, 10, 70, 30, "killed");
  assert_int_equal(adm_h(e, "POST", "/admin/flags/chat/unkill",
                         "AUTHORIZATION: BEARER " TOKEN "\r\n", "", &r),
                   200);
  mg_h_resp_free(&r);
  hash_now(e, hash2);
  assert_string_equal(hash, hash2);

  /* Its own listener: no admin API on the main one, no model traffic on
   * the admin one (which does serve health and metrics). */
  assert_int_equal(mg_h_request(e->gate.port, "GET", "/admin/state", AUTH, NULL,
                                &r, T_MS * SLOW),
                   0);
  assert_error(&r, 404, "unknown_url");
  mg_h_resp_free(&r);
  {
    char *b = body_for("m-chat", "u-1", "hi", "");
    assert_int_equal(adm_h(e, "POST", "/v1/chat/completions", AUTH, b, &r),
                     404);
    assert_error(&r, 404, "unknown_url");
    mg_h_resp_free(&r);
    free(b);
  }
  assert_int_equal(adm_h(e, "GET", "/healthz", NULL, NULL, &r), 200);
  mg_h_resp_free(&r);
  assert_int_equal(adm_h(e, "GET", "/metrics", NULL, NULL, &r), 200);
  assert_non_null(strstr(r.body, "modelgate_flag_weight_percent"));
  mg_h_resp_free(&r);
  assert_int_equal(adm_h(e, "GET", "/admin/nothing", AUTH, NULL, &r), 404);
  assert_error(&r, 404, "unknown_url");
  mg_h_resp_free(&r);
  assert_int_equal(adm_h(e, "POST", "/admin/flags/chat/explode", AUTH, "", &r),
                   404);
  assert_error(&r, 404, "unknown_url");
  mg_h_resp_free(&r);
}

/* ---- wrong methods ------------------------------------------------------- */

static const struct {
  const char *method, *path, *allow;
} wrong_methods[] = {
    {"POST", "/admin/state", "GET"},
    {"DELETE", "/admin/state", "GET"},
    {"GET", "/admin/reload", "POST"},
    {"PUT", "/admin/reload", "POST"},
    {"GET", "/admin/flags/chat/kill", "POST"},
    {"DELETE", "/admin/flags/chat/kill", "POST"},
    {"PUT", "/admin/flags/chat/unkill", "POST"},
    {"GET", "/admin/flags/chat/weights", "PUT"},
    {"POST", "/admin/flags/chat/weights", "PUT"},
    {"GET", "/admin/flags/chat/ramp/pause", "POST"},
};
#define NWRONG (sizeof(wrong_methods) / sizeof(wrong_methods[0]))

static void test_wrong_methods(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  cJSON *st;
  size_t i;

  start_w(e, "70", "30");
  put_cfg(e, "0", "100", "");
  for (i = 0; i < NWRONG; i++) {
    const char *body = strcmp(wrong_methods[i].method, "GET") == 0
                           ? NULL
                           : "{\"ctl\":0,\"trt\":100}";
    adm_h(e, wrong_methods[i].method, wrong_methods[i].path, AUTH, body, &r);
    if (r.status != 405)
      fail_msg("%s %s: want 405, got %d: %s", wrong_methods[i].method,
               wrong_methods[i].path, r.status, r.body);
    assert_error(&r, 405, "method_not_allowed");
    mg_h_resp_free(&r);
  }
  st = state_now(e);
  assert_false(bool_of(st, "flags.chat.killed"));
  assert_false(bool_of(st, "flags.chat.weights_override"));
  assert_true(num_of(st, "config.reloads") == 0);
  cJSON_Delete(st);
  assert_false(state_file_exists(e));
  users_follow(e, 20, 70, 30, "rollout");
}

/* RFC 9110, 15.5.6: a 405 names the methods the resource supports, in
 * `allow`. The main listener does (README, "When things go wrong"). */
static void test_wrong_methods_allow(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  /* Static: a failure jumps out of the test, and must not leak. */
  static char missing[4096];
  char allow[128];
  size_t i;

  start_w(e, "70", "30");
  /* The main listener, for reference. */
  assert_int_equal(mg_h_request(e->gate.port, "GET", "/v1/chat/completions",
                                NULL, NULL, &r, T_MS * SLOW),
                   0);
  assert_int_equal(r.status, 405);
  assert_non_null(mg_h_header(&r, "allow", allow, sizeof(allow)));
  assert_string_equal(allow, "POST");
  mg_h_resp_free(&r);
  missing[0] = '\0';
  for (i = 0; i < NWRONG; i++) {
    adm_h(e, wrong_methods[i].method, wrong_methods[i].path, AUTH, NULL, &r);
    assert_int_equal(r.status, 405);
    if (mg_h_header(&r, "allow", allow, sizeof(allow)) == NULL ||
        strstr(allow, wrong_methods[i].allow) == NULL) {
      size_t l = strlen(missing);
      snprintf(missing + l, sizeof(missing) - l,
               "%s %s -> 405 without allow: %s\n", wrong_methods[i].method,
               wrong_methods[i].path, wrong_methods[i].allow);
    }
    mg_h_resp_free(&r);
  }
  if (missing[0])
    fail_msg("admin API 405s without an allow header (RFC 9110, 15.5.6):\n%s",
             missing);
}

/* ---- no token configured ------------------------------------------------- */

static void test_no_token(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  cJSON *st;
  int round;
  static const struct {
    const char *method, *path, *body;
  } muts[] = {
      {"POST", "/admin/flags/chat/kill", ""},
      {"POST", "/admin/flags/chat/unkill", ""},
      {"PUT", "/admin/flags/chat/weights", "{\"ctl\":0,\"trt\":100}"},
      {"DELETE", "/admin/flags/chat/weights", NULL},
      {"POST", "/admin/reload", ""},
  };

  /* Round 0: the variable is not set; round 1: it is set but empty. Both
   * times MODELGATE_ADMIN_TOKEN holds a token, which must not count: the
   * config names another variable. */
  for (round = 0; round < 2; round++) {
    const char *env0[] = {"MODELGATE_ADMIN_TOKEN=" TOKEN, NULL};
    const char *env1[] = {"MODELGATE_ADMIN_TOKEN=" TOKEN, TOKEN_ENV "=", NULL};
    size_t k;
    char hash[32];
    unsetenv(TOKEN_ENV);
    if (round == 1)
      gate_down(&e->gate);
    put_cfg(e, "70", "30", "");
    run_env(e, round == 0 ? env0 : env1);
    file_hash(e, hash);
    put_cfg(e, "0", "100", "");

    /* Reads work without a token. */
    assert_int_equal(adm_h(e, "GET", "/admin/state", NULL, NULL, &r), 200);
    st = json_body(&r);
    mg_h_resp_free(&r);
    assert_false(bool_of(st, "mutations"));
    assert_string_equal(str_at(st, "config.hash"), hash);
    cJSON_Delete(st);

    for (k = 0; k < sizeof(muts) / sizeof(muts[0]); k++) {
      adm_h(e, muts[k].method, muts[k].path, NULL, muts[k].body, &r);
      assert_error(&r, 403, "admin_disabled");
      mg_h_resp_free(&r);
      /* Whatever token is offered. */
      adm_h(e, muts[k].method, muts[k].path, AUTH, muts[k].body, &r);
      assert_error(&r, 403, "admin_disabled");
      mg_h_resp_free(&r);
    }
    assert_int_equal(adm_h(e, "GET", "/admin/state", AUTH, NULL, &r), 200);
    st = json_body(&r);
    mg_h_resp_free(&r);
    assert_false(bool_of(st, "flags.chat.killed"));
    assert_false(bool_of(st, "flags.chat.weights_override"));
    assert_true(num_of(st, "config.reloads") == 0);
    assert_string_equal(str_at(st, "config.hash"), hash);
    cJSON_Delete(st);
    assert_false(state_file_exists(e));
    users_follow(e, 20, 70, 30, "rollout");
  }
}

/* ---- GET /admin/state and the gauges ------------------------------------- */

static void test_state_content(void **state) {
  struct tenv *e = *state;
  char hash[32], ts[64];
  cJSON *st;
  char *m;
  struct ans a;

  start_w(e, "70", "30");
  file_hash(e, hash);
  st = state_now(e);
  assert_string_equal(str_at(st, "config.hash"), hash);
  assert_string_equal(str_at(st, "config.source"), e->config);
  assert_true(num_of(st, "config.reloads") == 0);
  snprintf(ts, sizeof(ts), "%s", str_at(st, "config.loaded"));
  assert_true(strlen(ts) >= 20 && ts[4] == '-' && ts[10] == 'T');
  assert_true(bool_of(st, "mutations"));
  assert_int_equal(cJSON_GetArraySize(at(st, "flags")), 3);

  assert_true(bool_of(st, "flags.chat.enabled"));
  assert_false(bool_of(st, "flags.chat.killed"));
  assert_string_equal(str_at(st, "flags.chat.off_variant"), "ctl");
  assert_string_equal(str_at(st, "flags.chat.unit"), "user");
  assert_true(w_of(st, "chat", "weights", "ctl") == 70);
  assert_true(w_of(st, "chat", "weights", "trt") == 30);
  assert_true(w_of(st, "chat", "file_weights", "ctl") == 70);
  assert_true(w_of(st, "chat", "file_weights", "trt") == 30);
  assert_false(bool_of(st, "flags.chat.kill_override"));
  assert_false(bool_of(st, "flags.chat.weights_override"));
  assert_false(bool_of(st, "flags.chat.override_stale"));
  assert_string_equal(str_at(st, "flags.chat.variants.ctl.target"), "t-a");
  assert_string_equal(str_at(st, "flags.chat.variants.trt.target"), "t-b");
  assert_null(at(st, "flags.chat.ramp"));

  /* Disabled in the file: killed, without an override. */
  assert_false(bool_of(st, "flags.dark.enabled"));
  assert_string_equal(str_at(st, "flags.dark.unit"), "attr:org");
  assert_true(bool_of(st, "flags.dark.killed"));
  assert_false(bool_of(st, "flags.dark.kill_override"));
  assert_true(w_of(st, "dark", "weights", "trt") == 20);
  /* No weights in the file: null, and no override. */
  assert_true(cJSON_IsNull(at(st, "flags.plain.weights")));
  assert_true(cJSON_IsNull(at(st, "flags.plain.file_weights")));
  assert_int_equal(cJSON_GetArraySize(at(st, "overrides")), 0);
  cJSON_Delete(st);

  /* The gauges say the same; the config's hash is its info series. */
  m = metrics(e->gate.port);
  {
    char *l = fmt("hash=\"%s\"", hash);
    assert_true(mval(m, "modelgate_config_info", l) == 1);
    free(l);
  }
  assert_true(mval(m, "modelgate_flag_weight_percent",
                   "flag=\"chat\",variant=\"ctl\"") == 70);
  assert_true(mval(m, "modelgate_flag_weight_percent",
                   "flag=\"chat\",variant=\"trt\"") == 30);
  assert_true(mval(m, "modelgate_flag_killed", "flag=\"chat\"") == 0);
  assert_true(mval(m, "modelgate_flag_killed", "flag=\"dark\"") == 1);
  assert_true(mval(m, "modelgate_flag_weight_percent",
                   "flag=\"dark\",variant=\"trt\"") == 20);
  /* A flag without weights has none in force: 0 for every variant. */
  assert_true(mval(m, "modelgate_flag_weight_percent",
                   "flag=\"plain\",variant=\"ctl\"") == 0);
  assert_true(mval(m, "modelgate_flag_weight_percent",
                   "flag=\"plain\",variant=\"trt\"") == 0);
  assert_true(mval(m, "modelgate_flag_killed", "flag=\"plain\"") == 0);
  free(m);

  /* And the traffic agrees. */
  {
    char *b = body_for("m-dark", "u-1", "hi", ",\"metadata\":{\"org\":\"o\"}");
    ask(e->gate.port, NULL, b, &a);
    expect_ans(&a, "dark", "dark", "ctl", "killed", "t-a", "m-a");
    free(b);
    b = body_for("m-plain", "u-1", "hi", "");
    ask(e->gate.port, NULL, b, &a);
    expect_ans(&a, "plain", "plain", "ctl", "default", "t-a", "m-a");
    free(b);
  }
  users_follow(e, 60, 70, 30, "rollout");
}

/* ---- kill ---------------------------------------------------------------- */

static void test_kill(void **state) {
  struct tenv *e = *state;
  struct cli c;
  struct ans a;
  cJSON *st, *f;
  int i;
  /* A user in the treatment, so a kill shows in the traffic. */
  char trt_user[32] = "";

  for (i = 0; trt_user[0] == '\0'; i++) {
    char u[32];
    snprintf(u, sizeof(u), "k-%d", i);
    if (strcmp(predict_chat(u, 50, 50), "trt") == 0)
      snprintf(trt_user, sizeof(trt_user), "%s", u);
  }
  start_w(e, "50", "50");
  cli_init(&c, e->gate.port);
  chat_as(&c, trt_user, &a);
  expect_ans(&a, "before", "chat", "trt", "rollout", "t-b", "m-b");

  /* From the very next request on, on a connection already open, with no
   * pause: ten times over. The answer is the state after the change; the
   * state file says the same when the answer arrives; so do the gauges. */
  for (i = 0; i < 10; i++) {
    st = adm_want(e, "POST", "/admin/flags/chat/kill", "", 200);
    chat_as(&c, trt_user, &a);
    expect_ans(&a, "right after kill", "chat", "ctl", "killed", "t-a", "m-a");
    assert_true(bool_of(st, "flags.chat.killed"));
    assert_true(bool_of(st, "flags.chat.kill_override"));
    cJSON_Delete(st);
    f = state_file_json(e);
    assert_true(bool_of(f, "overrides.chat.killed"));
    cJSON_Delete(f);
    if (i == 0)
      expect_gauges(e, 50, 50, 1);
    st = adm_want(e, "POST", "/admin/flags/chat/unkill", "", 200);
    chat_as(&c, trt_user, &a);
    expect_ans(&a, "right after unkill", "chat", "trt", "rollout", "t-b",
               "m-b");
    assert_false(bool_of(st, "flags.chat.killed"));
    cJSON_Delete(st);
    f = state_file_json(e);
    assert_false(cJSON_IsTrue(at(f, "overrides.chat.killed")));
    cJSON_Delete(f);
    if (i == 0)
      expect_gauges(e, 50, 50, 0);
  }
  cli_close(&c);

  /* Twice is the same as once; an unknown flag is named. */
  cJSON_Delete(adm_want(e, "POST", "/admin/flags/chat/kill", "", 200));
  st = adm_want(e, "POST", "/admin/flags/chat/kill", "", 200);
  assert_true(bool_of(st, "flags.chat.killed"));
  cJSON_Delete(st);
  {
    struct mg_h_resp r;
    char msg[256];
    adm(e, "POST", "/admin/flags/nope/kill", "", &r);
    assert_error_msg(&r, 404, "unknown_flag", msg, sizeof(msg));
    assert_non_null(strstr(msg, "nope"));
    mg_h_resp_free(&r);
  }

  /* A kill survives a restart: restored from the state file, and said. */
  restart(e);
  assert_true(file_contains(e->gate.log_file, "restored 1 flag override(s)"));
  st = state_now(e);
  assert_true(bool_of(st, "flags.chat.killed"));
  assert_true(bool_of(st, "flags.chat.kill_override"));
  cJSON_Delete(st);
  expect_gauges(e, 50, 50, 1);
  users_follow(e, 30, 50, 50, "killed");

  /* ... and reloads, even one that drops the flag and one that brings it
   * back: overrides are kept by flag name. */
  {
    char *c2 = cfg_text(e, TOKEN_ENV, "50", "50", ""), *p;
    /* Flag chat renamed to chat2 (and its alias with it). */
    while ((p = strstr(c2, "\"chat\"")) != NULL)
      memcpy(p, "\"cht2\"", 6);
    assert_int_equal(mg_h_write_file(e->config, c2), 0);
    free(c2);
    st = adm_want(e, "POST", "/admin/reload", "", 200);
    assert_null(at(st, "flags.chat"));
    assert_false(bool_of(st, "flags.cht2.killed"));
    assert_true(cJSON_IsTrue(at(st, "overrides.chat.killed")));
    cJSON_Delete(st);
    put_cfg(e, "50", "50", "");
    st = adm_want(e, "POST", "/admin/reload", "", 200);
    assert_true(bool_of(st, "flags.chat.killed"));
    cJSON_Delete(st);
    users_follow(e, 20, 50, 50, "killed");
  }

  /* Unkill a flag the file disables: the runtime kill goes, the file's
   * stays. */
  st = adm_want(e, "POST", "/admin/flags/dark/kill", "", 200);
  assert_true(bool_of(st, "flags.dark.kill_override"));
  cJSON_Delete(st);
  /* 409 flag_disabled since issue 10 (test_unkill_disabled_flag). */
  cJSON_Delete(adm_want(e, "POST", "/admin/flags/dark/unkill", "", 409));
  st = state_now(e);
  assert_true(bool_of(st, "flags.dark.killed"));
  assert_false(bool_of(st, "flags.dark.kill_override"));
  cJSON_Delete(st);
  {
    char *b = body_for("m-dark", "u-1", "hi", ",\"metadata\":{\"org\":\"o\"}");
    ask(e->gate.port, NULL, b, &a);
    expect_ans(&a, "dark after unkill", "dark", "ctl", "killed", "t-a", "m-a");
    free(b);
  }
  cJSON_Delete(adm_want(e, "POST", "/admin/flags/chat/unkill", "", 200));
  users_follow(e, 20, 50, 50, "rollout");
}

/* ---- issue 10, point 4: operators can always reach the kill switch ------- */

/* The admin listener has its own connection budget: ten idle client
 * connections at server.max_connections 10 fill the main listener (an
 * eleventh is refused), and the admin API still answers and kills. */
static void test_admin_own_budget(void **state) {
  struct tenv *e = *state;
  char *c = cfg_text(e, TOKEN_ENV, "50", "50", ""), *p;
  int fds[10], extra, i;
  cJSON *st;
  static const char key[] = "\"shutdown_grace_ms\":2000";

  p = strstr(c, key);
  assert_non_null(p);
  {
    char *c2 = fmt("%.*s\"max_connections\":10,\"workers\":1,%s",
                   (int)(p - c), c, p);
    assert_int_equal(mg_h_write_file(e->config, c2), 0);
    free(c2);
  }
  free(c);
  run(e);
  for (i = 0; i < 10; i++) {
    fds[i] = mg_h_connect(e->gate.port);
    assert_true(fds[i] >= 0);
  }
  /* The gate has taken all ten when an eleventh is closed on arrival. */
  {
    double deadline = mg_h_now_ms() + 3000 * SLOW;
    bool refused = false;
    while (!refused && mg_h_now_ms() < deadline) {
      extra = mg_h_connect(e->gate.port);
      assert_true(extra >= 0);
      refused = mg_h_wait_closed(extra, 300);
      close(extra);
    }
    assert_true(refused);
  }
  for (i = 0; i < 3; i++) {
    st = state_now(e);
    cJSON_Delete(st);
  }
  st = adm_want(e, "POST", "/admin/flags/chat/kill", "", 200);
  assert_true(bool_of(st, "flags.chat.killed"));
  cJSON_Delete(st);
  /* The refusals are counted (the admin listener serves /metrics too) and
   * logged (issue 10, point 3). */
  {
    char *m = metrics(e->gate.admin_port);
    double v = mval(m, "modelgate_connections_refused_total",
                    "listener=\"main\",reason=\"max_connections\"");
    if (!(v >= 1))
      fail_msg("refusals not counted (%g):\n%s", v, m);
    free(m);
  }
  assert_true(file_contains(e->gate.log_file, "refusing connections"));
  for (i = 0; i < 10; i++)
    close(fds[i]);
}

/* Admin URLs match exactly: a suffix, an extension, an extra segment or a
 * dot segment is 404 and changes nothing. */
static void test_admin_urls_exact(void **state) {
  struct tenv *e = *state;
  static const char *const kills[] = {
      "/admin/flags/chat/kill123", "/admin/flags/chat/kill.json",
      "/admin/flags/chat/kill/extra", "/admin/flags/chat/kill/",
      "/admin/flags/chat/ramp/pause123", "/admin/flags/chat/ramp/pause/x",
      NULL};
  struct mg_h_resp r;
  cJSON *st;
  int i;

  start_w(e, "50", "50");
  for (i = 0; kills[i]; i++) {
    adm(e, "POST", kills[i], "", &r);
    if (r.status != 404)
      fail_msg("POST %s: want 404, got %d: %s", kills[i], r.status, r.body);
    assert_error_msg(&r, 404, "unknown_url", NULL, 0);
    mg_h_resp_free(&r);
    st = state_now(e);
    if (bool_of(st, "flags.chat.killed"))
      fail_msg("POST %s killed the flag", kills[i]);
    cJSON_Delete(st);
  }
  cJSON_Delete(adm_want(e, "POST", "/admin/flags/chat/kill", "", 200));
  adm(e, "POST", "/admin/flags/chat/unkill/../kill", "", &r);
  assert_error_msg(&r, 404, "unknown_url", NULL, 0);
  mg_h_resp_free(&r);
  adm(e, "POST", "/admin/flags/chat/unkill123", "", &r);
  assert_error_msg(&r, 404, "unknown_url", NULL, 0);
  mg_h_resp_free(&r);
  st = state_now(e);
  assert_true(bool_of(st, "flags.chat.killed"));
  cJSON_Delete(st);
}

/* The last event of this type in /admin/live, or NULL. */
static cJSON *live_event(struct tenv *e, const char *type) {
  struct mg_h_resp r;
  cJSON *live, *ev, *found = NULL;
  adm(e, "GET", "/admin/live", NULL, &r);
  assert_int_equal(r.status, 200);
  live = json_body(&r);
  mg_h_resp_free(&r);
  cJSON_ArrayForEach(ev, cJSON_GetObjectItemCaseSensitive(live, "events")) {
    const char *line = cJSON_GetStringValue(ev);
    cJSON *l = line ? cJSON_Parse(line) : cJSON_Duplicate(ev, 1);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(l, "event");
    if (cJSON_IsString(t) && strcmp(t->valuestring, type) == 0) {
      found = l; /* newest first */
      break;
    }
    cJSON_Delete(l);
  }
  cJSON_Delete(live);
  return found;
}

/* A caller says who it is and why, in the body or in headers: the event
 * line and /admin/state (and the state file, across a restart) show it;
 * without either it is "admin"; malformed or oversized names are 400. */
static void test_admin_actor(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  cJSON *st, *ev, *f;
  char big[2000];

  start_w(e, "50", "50");
  st = adm_want(e, "POST", "/admin/flags/chat/kill",
                "{\"by\":\"alice\",\"reason\":\"incident 4711\"}", 200);
  assert_string_equal(str_at(st, "overrides.chat.by"), "alice");
  assert_string_equal(str_at(st, "overrides.chat.reason"), "incident 4711");
  cJSON_Delete(st);
  ev = live_event(e, "kill");
  assert_non_null(ev);
  assert_string_equal(str_at(ev, "by"), "alice");
  assert_string_equal(str_at(ev, "reason"), "incident 4711");
  cJSON_Delete(ev);
  f = state_file_json(e);
  assert_string_equal(str_at(f, "overrides.chat.by"), "alice");
  cJSON_Delete(f);
  restart(e);
  st = state_now(e);
  assert_string_equal(str_at(st, "overrides.chat.by"), "alice");
  assert_string_equal(str_at(st, "overrides.chat.reason"), "incident 4711");
  cJSON_Delete(st);

  /* Headers, for PUT weights (whose body is the weights). */
  assert_int_equal(adm_h(e, "PUT", "/admin/flags/chat/weights",
                         AUTH "x-modelgate-by: bob\r\n"
                              "x-modelgate-reason: canary looks fine\r\n",
                         "{\"ctl\":70,\"trt\":30}", &r),
                   200);
  mg_h_resp_free(&r);
  st = state_now(e);
  assert_string_equal(str_at(st, "overrides.chat.by"), "bob");
  assert_string_equal(str_at(st, "overrides.chat.reason"),
                      "canary looks fine");
  cJSON_Delete(st);
  ev = live_event(e, "weights");
  assert_non_null(ev);
  assert_string_equal(str_at(ev, "by"), "bob");
  assert_string_equal(str_at(ev, "reason"), "canary looks fine");
  cJSON_Delete(ev);

  /* Nobody named: "admin", no reason. */
  cJSON_Delete(adm_want(e, "POST", "/admin/flags/plain/kill", "", 200));
  ev = live_event(e, "kill");
  assert_string_equal(str_at(ev, "by"), "admin");
  assert_string_equal(str_at(ev, "flag"), "plain");
  assert_null(cJSON_GetObjectItemCaseSensitive(ev, "reason"));
  cJSON_Delete(ev);

  /* Malformed: not an object, another member, not a string, too long. */
  adm(e, "POST", "/admin/flags/chat/unkill", "by alice", &r);
  assert_error_msg(&r, 400, "invalid_actor", NULL, 0);
  mg_h_resp_free(&r);
  adm(e, "POST", "/admin/flags/chat/unkill", "{\"who\":\"x\"}", &r);
  assert_error_msg(&r, 400, "invalid_actor", NULL, 0);
  mg_h_resp_free(&r);
  adm(e, "POST", "/admin/flags/chat/unkill", "{\"by\":7}", &r);
  assert_error_msg(&r, 400, "invalid_actor", NULL, 0);
  mg_h_resp_free(&r);
  memset(big, 'r', sizeof(big));
  memcpy(big, "{\"reason\":\"", 11);
  memcpy(big + sizeof(big) - 3, "\"}", 3);
  adm(e, "POST", "/admin/flags/chat/unkill", big, &r);
  assert_error_msg(&r, 400, "invalid_actor", NULL, 0);
  mg_h_resp_free(&r);
  st = state_now(e);
  assert_true(bool_of(st, "flags.chat.killed"));
  cJSON_Delete(st);
}

/* An unkill of a flag the file disables says so (409 flag_disabled),
 * instead of a 200 with the flag still off; a runtime kill on top of it is
 * removed. */
static void test_unkill_disabled_flag(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  char msg[400];
  cJSON *st;

  start_w(e, "50", "50");
  cJSON_Delete(adm_want(e, "POST", "/admin/flags/dark/kill", "", 200));
  adm(e, "POST", "/admin/flags/dark/unkill", "", &r);
  assert_error_msg(&r, 409, "flag_disabled", msg, sizeof(msg));
  mg_h_resp_free(&r);
  assert_non_null(strstr(msg, "disabled in the config"));
  assert_non_null(strstr(msg, "dark"));
  st = state_now(e);
  assert_true(bool_of(st, "flags.dark.killed"));
  assert_false(bool_of(st, "flags.dark.kill_override"));
  cJSON_Delete(st);
  /* Without a runtime kill: the same answer. */
  adm(e, "POST", "/admin/flags/dark/unkill", "", &r);
  assert_error_msg(&r, 409, "flag_disabled", NULL, 0);
  mg_h_resp_free(&r);
}

/* admin.listen off the loopback without a token: refused at start, saying
 * why; on the loopback without a token it starts (read-only API). */
static void test_admin_public_needs_token(void **state) {
  struct tenv *e = *state;
  char *c = cfg_text(e, "MGA_NO_SUCH_TOKEN_VAR", "50", "50", ""), *p, *out;
  char *port_file = fmt("%s/port", e->dir);
  const char *argv[] = {MG_BIN, "serve", "-c", e->config, "--port-file",
                        port_file, NULL};
  static const char lo[] = "\"listen\":\"127.0.0.1:0\",\"state_file\"";
  int rc;

  p = strstr(c, lo);
  assert_non_null(p);
  {
    char *c2 = fmt("%.*s\"listen\":\"0.0.0.0:0\",\"state_file\"%s",
                   (int)(p - c), c, p + strlen(lo));
    assert_int_equal(mg_h_write_file(e->config, c2), 0);
    free(c2);
  }
  rc = mg_h_run(argv, &out, 10000 * SLOW);
  assert_non_null(out);
  if (rc == 0 || strstr(out, "refusing to listen on 0.0.0.0 without a "
                             "token") == NULL)
    fail_msg("exit status %d: %s", rc, out);
  assert_int_not_equal(access(port_file, F_OK), 0);
  free(out);
  /* The same with a token: it starts. */
  {
    const char *env[] = {"MGA_NO_SUCH_TOKEN_VAR=" TOKEN, NULL};
    run_env(e, env);
    gate_down(&e->gate);
  }
  free(c);
  free(port_file);
}

/* A state file that cannot be written: the change is in force, and the
 * answer says it was not saved rather than pretend. */
static void test_state_not_saved(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  char msg[512];
  char *c = cfg_text(e, TOKEN_ENV, "0", "100", ""), *p, *fixed;

  /* state_file in a directory that does not exist. */
  p = strstr(c, "state.json");
  assert_non_null(p);
  fixed = fmt("%.*sno-such-dir/state.json%s", (int)(p - c), c, p + 10);
  assert_int_equal(mg_h_write_file(e->config, fixed), 0);
  free(fixed);
  free(c);
  run(e);
  adm(e, "POST", "/admin/flags/chat/kill", "", &r);
  assert_error_msg(&r, 500, "state_not_saved", msg, sizeof(msg));
  assert_non_null(strstr(msg, "in force"));
  mg_h_resp_free(&r);
  users_follow(e, 10, 0, 100, "killed");
  assert_true(file_contains(e->gate.log_file, "cannot save state to"));
}

/* ---- weights ------------------------------------------------------------- */

static void expect_put_refused(struct tenv *e, const char *flag,
                               const char *body, int status, const char *code,
                               const char *in_msg) {
  struct mg_h_resp r;
  char msg[512], *path = fmt("/admin/flags/%s/weights", flag);
  adm(e, "PUT", path, body, &r);
  if (r.status != status)
    fail_msg("PUT %s %s: want %d %s, got %d: %s", path, body, status, code,
             r.status, r.body);
  assert_error_msg(&r, status, code, msg, sizeof(msg));
  if (strstr(msg, in_msg) == NULL)
    fail_msg("PUT %s %s: the message \"%s\" does not say \"%s\"", path, body,
             msg, in_msg);
  mg_h_resp_free(&r);
  free(path);
}

static void expect_weights_state(const cJSON *st, double wc, double wt,
                                 double fc, double ft, bool override) {
  if (w_of(st, "chat", "weights", "ctl") != wc ||
      w_of(st, "chat", "weights", "trt") != wt ||
      w_of(st, "chat", "file_weights", "ctl") != fc ||
      w_of(st, "chat", "file_weights", "trt") != ft ||
      bool_of(st, "flags.chat.weights_override") != override) {
    char *s = cJSON_PrintUnformatted(at(st, "flags.chat"));
    fail_msg("want weights %g/%g, file %g/%g, override %d: %s", wc, wt, fc, ft,
             override, s);
  }
}

static void test_weights(void **state) {
  struct tenv *e = *state;
  cJSON *st, *f;
  int n;

  start_w(e, "70", "30");

  /* Validation: each refusal says what is wrong, and changes nothing. */
  expect_put_refused(e, "chat", "{\"ctl\":100}", 400, "invalid_weights",
                     "each of the 2 variants");
  expect_put_refused(e, "chat", "{}", 400, "invalid_weights",
                     "each of the 2 variants");
  expect_put_refused(e, "chat", "{\"ctl\":60,\"trt\":30}", 400,
                     "invalid_weights", "must sum to 100, not 90.00");
  expect_put_refused(e, "chat", "{\"ctl\":60,\"trt\":60}", 400,
                     "invalid_weights", "must sum to 100, not 120.00");
  expect_put_refused(e, "chat", "{\"ctl\":50,\"trt\":50,\"zz\":0}", 400,
                     "unknown_variant", "no variant \"zz\"");
  expect_put_refused(e, "chat", "{\"ctl\":33.333,\"trt\":66.667}", 400,
                     "invalid_weights", "at most two decimals");
  expect_put_refused(e, "chat", "{\"ctl\":-10,\"trt\":110}", 400,
                     "invalid_weights", "\"ctl\"");
  expect_put_refused(e, "chat", "{\"ctl\":\"50\",\"trt\":50}", 400,
                     "invalid_weights", "\"ctl\"");
  expect_put_refused(e, "chat", "[50,50]", 400, "invalid_weights",
                     "JSON object");
  expect_put_refused(e, "chat", "ctl=50&trt=50", 400, "invalid_weights",
                     "JSON object");
  expect_put_refused(e, "nope", "{\"ctl\":50,\"trt\":50}", 404, "unknown_flag",
                     "nope");
  {
    struct mg_h_resp r;
    adm(e, "DELETE", "/admin/flags/nope/weights", NULL, &r);
    assert_error(&r, 404, "unknown_flag");
    mg_h_resp_free(&r);
  }
  st = state_now(e);
  expect_weights_state(st, 70, 30, 70, 30, false);
  cJSON_Delete(st);
  assert_false(state_file_exists(e));
  expect_gauges(e, 70, 30, 0);

  /* An override wins over the file, from the next request on. */
  st = adm_want(e, "PUT", "/admin/flags/chat/weights",
                "{\"ctl\":33.33,\"trt\":66.67}", 200);
  expect_weights_state(st, 33.33, 66.67, 70, 30, true);
  cJSON_Delete(st);
  f = state_file_json(e);
  assert_true(num_of(f, "overrides.chat.weights.trt") == 66.67);
  cJSON_Delete(f);
  expect_gauges(e, 33.33, 66.67, 0);
  n = users_follow(e, 100, 33.33, 66.67, "rollout");
  assert_true(n > 40 && n < 90);

  st = adm_want(e, "PUT", "/admin/flags/chat/weights",
                "{\"trt\":100,\"ctl\":0}", 200);
  expect_weights_state(st, 0, 100, 70, 30, true);
  cJSON_Delete(st);
  assert_int_equal(users_follow(e, 40, 0, 100, "rollout"), 40);

  /* It survives reloads that change the file's weights: admin, SIGHUP. */
  put_cfg(e, "60", "40", "");
  st = adm_want(e, "POST", "/admin/reload", "", 200);
  expect_weights_state(st, 0, 100, 60, 40, true);
  cJSON_Delete(st);
  expect_gauges(e, 0, 100, 0);
  assert_int_equal(users_follow(e, 40, 0, 100, "rollout"), 40);
  put_cfg(e, "100", "0", "");
  kill(e->gate.pid, SIGHUP);
  wait_reloads(e, "ok", 2);
  st = state_now(e);
  expect_weights_state(st, 0, 100, 100, 0, true);
  cJSON_Delete(st);
  assert_int_equal(users_follow(e, 40, 0, 100, "rollout"), 40);

  /* A config that renames a variant: the override no longer fits and the
   * file's weights are in force (said, and warned about); with the name
   * back, the override is in force again. */
  {
    char *c = cfg_text(e, TOKEN_ENV, "90", "10", ""), *p;
    p = strstr(c, "\"trt\":{\"target\":\"t-b\"");
    assert_non_null(p);
    memcpy(p, "\"new\"", 5);
    assert_int_equal(mg_h_write_file(e->config, c), 0);
    free(c);
    st = adm_want(e, "POST", "/admin/reload", "", 200);
    assert_true(bool_of(st, "flags.chat.override_stale"));
    assert_true(bool_of(st, "flags.chat.weights_override"));
    assert_true(w_of(st, "chat", "weights", "ctl") == 90);
    assert_true(w_of(st, "chat", "weights", "new") == 10);
    cJSON_Delete(st);
    assert_true(
        file_contains(e->gate.log_file, "flag chat: the weights override"));
  }
  put_cfg(e, "100", "0", "");
  st = adm_want(e, "POST", "/admin/reload", "", 200);
  expect_weights_state(st, 0, 100, 100, 0, true);
  assert_false(bool_of(st, "flags.chat.override_stale"));
  cJSON_Delete(st);

  /* ... and a restart. */
  restart(e);
  st = state_now(e);
  expect_weights_state(st, 0, 100, 100, 0, true);
  cJSON_Delete(st);
  expect_gauges(e, 0, 100, 0);
  assert_int_equal(users_follow(e, 40, 0, 100, "rollout"), 40);

  /* DELETE: back to the file, now and after a restart. */
  put_cfg(e, "50", "50", "");
  kill(e->gate.pid, SIGHUP);
  wait_reloads(e, "ok", 1);
  st = adm_want(e, "DELETE", "/admin/flags/chat/weights", NULL, 200);
  expect_weights_state(st, 50, 50, 50, 50, false);
  cJSON_Delete(st);
  f = state_file_json(e);
  assert_null(at(f, "overrides.chat.weights"));
  cJSON_Delete(f);
  expect_gauges(e, 50, 50, 0);
  n = users_follow(e, 100, 50, 50, "rollout");
  assert_true(n > 20 && n < 80);
  cJSON_Delete(adm_want(e, "DELETE", "/admin/flags/chat/weights", NULL, 200));
  restart(e);
  st = state_now(e);
  expect_weights_state(st, 50, 50, 50, 50, false);
  cJSON_Delete(st);

  /* A kill does not change the weights in force, as the state and the
   * gauges report them; modelgate_flag_killed says it. */
  st = adm_want(e, "POST", "/admin/flags/chat/kill", "", 200);
  expect_weights_state(st, 50, 50, 50, 50, false);
  cJSON_Delete(st);
  expect_gauges(e, 50, 50, 1);
  cJSON_Delete(adm_want(e, "POST", "/admin/flags/chat/unkill", "", 200));

  /* Weights on a flag whose file has none start a rollout; DELETE stops
   * it. */
  {
    struct ans a;
    char *b = body_for("m-plain", "u-1", "hi", "");
    st = adm_want(e, "PUT", "/admin/flags/plain/weights",
                  "{\"ctl\":0,\"trt\":100}", 200);
    assert_true(w_of(st, "plain", "weights", "trt") == 100);
    assert_true(cJSON_IsNull(at(st, "flags.plain.file_weights")));
    cJSON_Delete(st);
    ask(e->gate.port, NULL, b, &a);
    expect_ans(&a, "plain with weights", "plain", "trt", "rollout", "t-c",
               "m-c");
    st = adm_want(e, "DELETE", "/admin/flags/plain/weights", NULL, 200);
    assert_true(cJSON_IsNull(at(st, "flags.plain.weights")));
    cJSON_Delete(st);
    ask(e->gate.port, NULL, b, &a);
    expect_ans(&a, "plain without", "plain", "ctl", "default", "t-a", "m-a");
    free(b);
  }
}

/* A weights object naming one variant twice names too few: refused like
 * any other that does not give every variant a weight. */
static void test_weights_duplicate_variant(void **state) {
  struct tenv *e = *state;
  cJSON *st;
  struct mg_h_resp r;

  start_w(e, "70", "30");
  adm(e, "PUT", "/admin/flags/chat/weights", "{\"ctl\":50,\"ctl\":50}", &r);
  st = state_now(e);
  if (r.status != 400) {
    /* Static, and everything freed first: the failure must not leak. */
    static char flag[2048];
    char *s = cJSON_PrintUnformatted(at(st, "flags.chat"));
    int status = r.status;
    snprintf(flag, sizeof(flag), "%s", s ? s : "?");
    free(s);
    cJSON_Delete(st);
    mg_h_resp_free(&r);
    fail_msg("PUT {\"ctl\":50,\"ctl\":50} (no weight for trt): want 400, got "
             "%d; flag chat is now %s",
             status, flag);
  }
  assert_error(&r, 400, "invalid_weights");
  mg_h_resp_free(&r);
  expect_weights_state(st, 70, 30, 70, 30, false);
  cJSON_Delete(st);
}

/* ---- the state file ------------------------------------------------------ */

struct watcher {
  const char *path;
  atomic_bool stop;
  long reads, bad, inodes;
  char first_bad[512];
};

static void *watch(void *arg) {
  struct watcher *w = arg;
  ino_t last = 0;
  while (!atomic_load(&w->stop)) {
    struct stat st;
    size_t len;
    char *s;
    cJSON *j;
    if (stat(w->path, &st) != 0)
      continue; /* not written yet */
    if (st.st_ino != last) {
      w->inodes++;
      last = st.st_ino;
    }
    s = mg_h_read_file(w->path, &len);
    if (s == NULL)
      continue;
    w->reads++;
    j = cJSON_ParseWithLength(s, len);
    if (!cJSON_IsObject(j) ||
        !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(j, "overrides"))) {
      if (w->bad++ == 0)
        snprintf(w->first_bad, sizeof(w->first_bad), "%.*s", (int)len, s);
    }
    cJSON_Delete(j);
    free(s);
  }
  return NULL;
}

static void test_state_file_atomic(void **state) {
  struct tenv *e = *state;
  struct watcher w;
  pthread_t th;
  char *path = state_file(e);
  int i;
  DIR *d;
  struct dirent *de;

  start_w(e, "70", "30");
  memset(&w, 0, sizeof(w));
  w.path = path;
  atomic_init(&w.stop, false);
  assert_int_equal(pthread_create(&th, NULL, watch, &w), 0);
  for (i = 0; i < 80; i++) {
    cJSON *f;
    switch (i % 4) {
    case 0:
      cJSON_Delete(adm_want(e, "POST", "/admin/flags/chat/kill", "", 200));
      f = state_file_json(e);
      assert_true(bool_of(f, "overrides.chat.killed"));
      break;
    case 1: {
      char *b = fmt("{\"ctl\":%d,\"trt\":%d}", i, 100 - i);
      cJSON_Delete(adm_want(e, "PUT", "/admin/flags/chat/weights", b, 200));
      free(b);
      f = state_file_json(e);
      assert_true(num_of(f, "overrides.chat.weights.trt") == 100 - i);
      break;
    }
    case 2:
      cJSON_Delete(adm_want(e, "POST", "/admin/flags/chat/unkill", "", 200));
      f = state_file_json(e);
      assert_false(bool_of(f, "overrides.chat.killed"));
      break;
    default:
      cJSON_Delete(
          adm_want(e, "DELETE", "/admin/flags/chat/weights", NULL, 200));
      f = state_file_json(e);
      assert_null(at(f, "overrides.chat.weights"));
      break;
    }
    assert_true(num_of(f, "version") == 1);
    cJSON_Delete(f);
  }
  atomic_store(&w.stop, true);
  pthread_join(th, NULL);
  if (w.bad)
    fail_msg("%ld of %ld reads of the state file were not a whole JSON "
             "document; the first: %s",
             w.bad, w.reads, w.first_bad);
  assert_true(w.reads > 0);
  /* Each write is a new file renamed into place. */
  assert_true(w.inodes > 1);
  /* No temporary file left behind. */
  d = opendir(e->dir);
  assert_non_null(d);
  while ((de = readdir(d)) != NULL)
    if (strncmp(de->d_name, "state.json", 10) == 0 &&
        strcmp(de->d_name, "state.json") != 0 &&
        strcmp(de->d_name, "state.json.lock") != 0) /* the owner's lock */
      fail_msg("a temporary file is left: %s", de->d_name);
  closedir(d);
  print_message("state file: %ld reads during 80 changes, %ld files\n", w.reads,
                w.inodes);
  free(path);
}

/* A state file modelgate cannot trust stops it from starting: a kill must
 * never silently vanish. */
static void test_malformed_state_file(void **state) {
  struct tenv *e = *state;
  char *path = state_file(e), *out;
  const char *serve[] = {MG_BIN, "serve", "-c", e->config, NULL};
  static const struct {
    const char *content, *says;
  } bad[] = {
      {"{\"version\":1,\"overrides\":{\"chat\":{\"killed\":tru",
       " is not valid JSON; fix or remove it"},
      {"", " is not valid JSON; fix or remove it"},
      {"[]", " is not valid JSON; fix or remove it"},
      {"{\"version\":1,\"overrides\":{\"chat\":{\"killed\":\"yes\"}}}",
       ": overrides.chat: malformed"},
      {"{\"version\":1,\"overrides\":{\"chat\":{\"weights\":{\"ctl\":150,"
       "\"trt\":-50}}}}",
       ": overrides.chat.weights: malformed"},
      {"{\"version\":1,\"overrides\":[]}", ": overrides: not an object"},
  };
  size_t i;

  put_cfg(e, "70", "30", "");
  assert_int_equal(setenv(TOKEN_ENV, TOKEN, 1), 0);
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    int rc;
    char *want;
    assert_int_equal(mg_h_write_file(path, bad[i].content), 0);
    rc = mg_h_run(serve, &out, 10000 * SLOW);
    if (rc <= 0)
      fail_msg("modelgate served (exit %d) with the state file %s:\n%s", rc,
               bad[i].content, out);
    want = fmt("state file %s%s", path, bad[i].says);
    if (strstr(out, want) == NULL)
      fail_msg("modelgate did not say \"%s\":\n%s", want, out);
    free(want);
    free(out);
  }
  unsetenv(TOKEN_ENV);

  /* A good one written by hand is restored. */
  assert_int_equal(mg_h_write_file(path,
                                   "{\"version\":1,\"overrides\":{\"chat\":{"
                                   "\"killed\":true,\"weights\":{\"ctl\":10,"
                                   "\"trt\":90}}}}"),
                   0);
  run(e);
  {
    cJSON *st = state_now(e);
    expect_weights_state(st, 10, 90, 70, 30, true);
    assert_true(bool_of(st, "flags.chat.killed"));
    cJSON_Delete(st);
  }
  users_follow(e, 10, 10, 90, "killed");
  free(path);
}

/* ---- reload -------------------------------------------------------------- */

/* An invalid config: weights summing to 90, an unknown target, a rule
 * naming an unknown variant. */
static void put_invalid(struct tenv *e) {
  char *sq = cfg_text(e, TOKEN_ENV, "60", "30",
                      ",'rules':[{'if':{'attr':'x','op':'exists'},"
                      "'variant':'nope'}]"),
       *c = q(e, sq), *p, *fixed;
  free(sq);
  /* trt's target: t-zz. */
  p = strstr(c, "\"trt\":{\"target\":\"t-b\"");
  assert_non_null(p);
  fixed = fmt("%.*s\"trt\":{\"target\":\"t-zz\"%s", (int)(p - c), c,
              p + strlen("\"trt\":{\"target\":\"t-b\""));
  assert_int_equal(mg_h_write_file(e->config, fixed), 0);
  free(fixed);
  free(c);
}

static const char *const invalid_errors[] = {
    "$.flags.chat.variants: weights must sum to 100, not 90.00",
    "$.flags.chat.variants.trt.target: unknown target \"t-zz\"",
    "$.flags.chat.rules[0].variant: unknown variant \"nope\"", NULL};

static void test_reload(void **state) {
  struct tenv *e = *state;
  char ha[32], hb[32], h[32];
  cJSON *st, *errs;
  struct mg_h_resp r;
  size_t i;
  char *m;

  start_w(e, "100", "0");
  file_hash(e, ha);
  assert_int_equal(users_follow(e, 20, 100, 0, "rollout"), 0);

  /* Admin: 200 with the new state; new requests see it at once. */
  put_cfg(e, "0", "100", "");
  file_hash(e, hb);
  st = adm_want(e, "POST", "/admin/reload", "", 200);
  assert_string_equal(str_at(st, "config.hash"), hb);
  assert_true(num_of(st, "config.reloads") == 1);
  expect_weights_state(st, 0, 100, 0, 100, false);
  cJSON_Delete(st);
  assert_int_equal(users_follow(e, 20, 0, 100, "rollout"), 20);
  m = metrics(e->gate.port);
  {
    char *l = fmt("hash=\"%s\"", hb);
    assert_true(mval(m, "modelgate_config_info", l) == 1);
    free(l);
  }
  assert_true(mval(m, "modelgate_config_reloads_total", "result=\"ok\"") == 1);
  free(m);

  /* Admin, invalid: 422 with every error and its JSON path; nothing
   * changes. */
  put_invalid(e);
  adm(e, "POST", "/admin/reload", "", &r);
  assert_error(&r, 422, "invalid_config");
  st = json_body(&r);
  mg_h_resp_free(&r);
  errs = (cJSON *)at(st, "error.errors");
  assert_true(cJSON_IsArray(errs));
  assert_int_equal(cJSON_GetArraySize(errs), 3);
  for (i = 0; invalid_errors[i]; i++) {
    const cJSON *it;
    bool found = false;
    cJSON_ArrayForEach(it, errs) {
      if (cJSON_IsString(it) && strcmp(it->valuestring, invalid_errors[i]) == 0)
        found = true;
    }
    if (!found) {
      char *s = cJSON_PrintUnformatted(errs);
      fail_msg("the 422 does not list \"%s\": %s", invalid_errors[i], s);
    }
  }
  assert_non_null(strstr(str_at(st, "error.message"), "old one keeps"));
  cJSON_Delete(st);
  /* Broken JSON: where. */
  assert_int_equal(mg_h_write_file(e->config, "{\"flags\": {\n  \"chat\": ,"),
                   0);
  adm(e, "POST", "/admin/reload", "", &r);
  assert_error(&r, 422, "invalid_config");
  assert_non_null(strstr(r.body, "$: invalid JSON at line 2"));
  mg_h_resp_free(&r);
  st = state_now(e);
  assert_string_equal(str_at(st, "config.hash"), hb);
  assert_true(num_of(st, "config.reloads") == 1);
  cJSON_Delete(st);
  assert_true(mnow(e, "modelgate_config_reloads_total", "result=\"error\"") ==
              2);
  assert_int_equal(users_follow(e, 20, 0, 100, "rollout"), 20);

  /* SIGHUP: valid. */
  put_cfg(e, "100", "0", "");
  kill(e->gate.pid, SIGHUP);
  wait_reloads(e, "ok", 2);
  hash_now(e, h);
  assert_string_equal(h, ha);
  assert_int_equal(users_follow(e, 20, 100, 0, "rollout"), 0);

  /* SIGHUP: invalid, every error in the log, the old config serving. */
  put_invalid(e);
  kill(e->gate.pid, SIGHUP);
  wait_reloads(e, "error", 3);
  {
    char *want =
        fmt("reload of %s refused; the old config keeps serving", e->config);
    assert_true(file_contains(e->gate.log_file, want));
    free(want);
    for (i = 0; invalid_errors[i]; i++)
      if (!file_contains(e->gate.log_file, invalid_errors[i]))
        fail_msg("the log does not say \"%s\"", invalid_errors[i]);
  }
  hash_now(e, h);
  assert_string_equal(h, ha);
  assert_int_equal(users_follow(e, 20, 100, 0, "rollout"), 0);

  /* The same file again: reloaded, same hash. */
  put_cfg(e, "100", "0", "");
  st = adm_want(e, "POST", "/admin/reload", "", 200);
  assert_string_equal(str_at(st, "config.hash"), ha);
  assert_true(num_of(st, "config.reloads") == 3);
  cJSON_Delete(st);
}

/* After a reload, the old config's info series is gone (or 0): one
 * snapshot is in use. */
static void test_reload_config_info(void **state) {
  struct tenv *e = *state;
  char ha[32], hb[32];
  char *m, *la, *lb;

  start_w(e, "100", "0");
  file_hash(e, ha);
  la = fmt("hash=\"%s\"", ha);
  /* Scraped once before the reload (series are made when first used). */
  assert_true(mnow(e, "modelgate_config_info", la) == 1);
  put_cfg(e, "0", "100", "");
  file_hash(e, hb);
  cJSON_Delete(adm_want(e, "POST", "/admin/reload", "", 200));
  m = metrics(e->gate.port);
  lb = fmt("hash=\"%s\"", hb);
  {
    double now = mval(m, "modelgate_config_info", lb),
           old = mval(m, "modelgate_config_info", la);
    free(la);
    free(lb);
    free(m);
    assert_true(now == 1);
    if (old > 0)
      fail_msg("after a reload from %s to %s, /metrics still says "
               "modelgate_config_info{hash=\"%s\"} %g: two configs in use?",
               ha, hb, ha, old);
  }
}

/* Has anything arrived on fd (without waiting)? */
static bool bytes_waiting(int fd) {
  struct pollfd p = {fd, POLLIN, 0};
  return poll(&p, 1, 0) > 0;
}

/* A request in flight finishes on the snapshot it started with, even when
 * the new config no longer has its target. */
static void test_reload_in_flight(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  struct ans a, now;
  char *b, *req;
  int fd;
  double t0;
  /* The new config: t-a gone; ctl on t-c, everyone on trt (t-b). */
  static const char cfg_c[] =
      "{'admin':{'listen':'127.0.0.1:0','state_file':'@DIR/state.json',"
      "'token_env':'" TOKEN_ENV "'},"
      "'server':{'listen':'127.0.0.1:0','log_level':'info',"
      "'shutdown_grace_ms':5000},"
      "'decision_log':{'enabled':false},"
      "'targets':{'t-b':{'base_url':'@MOCK','model':'m-b'},"
      "'t-c':{'base_url':'@MOCK','model':'m-c'}},"
      "'flags':{'chat':{'off_variant':'ctl','variants':{"
      "  'ctl':{'target':'t-c','weight':0},'trt':{'target':'t-b',"
      "'weight':100}}}},"
      "'aliases':{'m-chat':{'flag':'chat'}}}";

  start_w(e, "100", "0");

  /* Admin reload while a request to t-a is at the mock. */
  mock_behave(e, "{'model':'m-a','mode':'slow','ms':2500,'times':1}");
  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  b = body_for("m-chat", "in-flight-1", "slow one", "");
  req = fmt("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
            strlen(b), b);
  t0 = mg_h_now_ms();
  assert_int_equal(mg_h_sends(fd, req), 0);
  free(req);
  free(b);
  assert_true(stat_wait(e->mock.port, "/by_model/m-a", 1, 1, 5000 * SLOW) == 1);
  write_cfg(e, cfg_c);
  cJSON_Delete(adm_want(e, "POST", "/admin/reload", "", 200));
  b = body_for("m-chat", "u-now", "fast one", "");
  ask(e->gate.port, NULL, b, &now);
  free(b);
  expect_ans(&now, "after reload", "chat", "trt", "rollout", "t-b", "m-b");
  /* The first request is still in flight: nothing of its answer yet. */
  assert_false(bytes_waiting(fd));
  assert_int_equal(mg_h_read_response(fd, &r, 10000 * SLOW), 0);
  ans_fill(&a, &r, 0);
  mg_h_resp_free(&r);
  close(fd);
  expect_ans(&a, "in flight", "chat", "ctl", "rollout", "t-a", "m-a");
  assert_true(mg_h_now_ms() - t0 >= 2400);

  /* SIGHUP while a request to t-b is at the mock; back to the first
   * config. */
  mock_behave(e, "{'model':'m-b','mode':'slow','ms':2500,'times':1}");
  {
    double before = stat_num(e->mock.port, "/by_model/m-b");
    fd = mg_h_connect(e->gate.port);
    assert_true(fd >= 0);
    b = body_for("m-chat", "in-flight-2", "slow two", "");
    req = fmt("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
              "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n"
              "%s",
              strlen(b), b);
    assert_int_equal(mg_h_sends(fd, req), 0);
    free(req);
    free(b);
    assert_true(stat_wait(e->mock.port, "/by_model/m-b", before + 1, before + 1,
                          5000 * SLOW) == before + 1);
  }
  put_cfg(e, "100", "0", "");
  kill(e->gate.pid, SIGHUP);
  wait_reloads(e, "ok", 2);
  b = body_for("m-chat", "u-now", "fast two", "");
  ask(e->gate.port, NULL, b, &now);
  free(b);
  expect_ans(&now, "after SIGHUP", "chat", "ctl", "rollout", "t-a", "m-a");
  assert_false(bytes_waiting(fd));
  assert_int_equal(mg_h_read_response(fd, &r, 10000 * SLOW), 0);
  ans_fill(&a, &r, 0);
  mg_h_resp_free(&r);
  close(fd);
  expect_ans(&a, "in flight over SIGHUP", "chat", "trt", "rollout", "t-b",
             "m-b");
}

/* ---- reload under load --------------------------------------------------- */

#define LOAD_THREADS 4
#define STEPS 24
#define MAX_PHASES (2 * STEPS + 4)

/* Phases: even = stable (a known config in force), odd = a reload going
 * on. A request whose phase is the same even number when it is sent and
 * when its answer has arrived ran entirely under one config. */
struct rload {
  int port;
  atomic_bool stop;
  atomic_int phase;
  char expect[MAX_PHASES][8]; /* variant expected in a stable phase */
  pthread_mutex_t mu;
  long total, bad, checked, mismatched;
  char first_bad[768];
};

static void rload_bad(struct rload *l, const char *fmtstr, ...)
    __attribute__((format(printf, 2, 3)));
static void rload_bad(struct rload *l, const char *fmtstr, ...) {
  va_list ap;
  pthread_mutex_lock(&l->mu);
  if (l->first_bad[0] == '\0') {
    va_start(ap, fmtstr);
    vsnprintf(l->first_bad, sizeof(l->first_bad), fmtstr, ap);
    va_end(ap);
  }
  pthread_mutex_unlock(&l->mu);
}

struct rload_arg {
  struct rload *l;
  int k;
};

static void *rload_thread(void *arg) {
  struct rload_arg *ra = arg;
  struct rload *l = ra->l;
  int fd = -1;
  long i = 0;
  while (!atomic_load(&l->stop)) {
    struct mg_h_resp r;
    char body[256], *req, v[64], id[64];
    int p0, p1, rc;
    bool ok;
    if (fd < 0 && (fd = mg_h_connect(l->port)) < 0) {
      pthread_mutex_lock(&l->mu);
      l->bad++;
      pthread_mutex_unlock(&l->mu);
      rload_bad(l, "connect failed");
      mg_h_sleep_ms(10);
      continue;
    }
    snprintf(body, sizeof(body),
             "{\"model\":\"m-chat\",\"user\":\"load-%d-%ld\",\"messages\":"
             "[{\"role\":\"user\",\"content\":\"hi\"}]}",
             ra->k, i++ % 50);
    req = fmt("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
              "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n"
              "%s",
              strlen(body), body);
    p0 = atomic_load(&l->phase);
    rc = mg_h_sends(fd, req);
    free(req);
    memset(&r, 0, sizeof(r));
    if (rc == 0)
      rc = mg_h_read_response(fd, &r, 10000 * SLOW);
    p1 = atomic_load(&l->phase);
    ok = rc == 0 && r.status == 200 &&
         mg_h_header(&r, "x-modelgate-variant", v, sizeof(v)) != NULL &&
         mg_h_header(&r, "x-modelgate-decision", id, sizeof(id)) != NULL &&
         strlen(id) == 32;
    pthread_mutex_lock(&l->mu);
    l->total++;
    if (!ok)
      l->bad++;
    pthread_mutex_unlock(&l->mu);
    if (!ok) {
      rload_bad(l, "phase %d: rc %d status %d: %.400s%.200s", p0, rc, r.status,
                r.head ? r.head : "", r.body ? r.body : "");
    } else if (p0 == p1 && p0 % 2 == 0) {
      bool match = strcmp(v, l->expect[p0]) == 0;
      pthread_mutex_lock(&l->mu);
      l->checked++;
      if (!match)
        l->mismatched++;
      pthread_mutex_unlock(&l->mu);
      if (!match)
        rload_bad(l, "phase %d: variant %s, want %s", p0, v, l->expect[p0]);
    }
    if (rc != 0 || r.closed) {
      close(fd);
      fd = -1;
    }
    mg_h_resp_free(&r);
  }
  if (fd >= 0)
    close(fd);
  free(ra);
  return NULL;
}

/* The load of the running test, in static storage so that a failed test
 * (cmocka jumps out of it) can still be stopped in teardown. */
static struct rload the_rload;
static pthread_t rload_th[LOAD_THREADS];
static int rload_n;

static void rload_stop(void) {
  int k;
  atomic_store(&the_rload.stop, true);
  for (k = 0; k < rload_n; k++)
    pthread_join(rload_th[k], NULL);
  rload_n = 0;
}

static int admin_teardown(void **state) {
  rload_stop();
  return tenv_teardown(state);
}

static void test_reload_under_load(void **state) {
  struct tenv *e = *state;
  struct rload *l = &the_rload;
  double t0 = mg_h_now_ms();
  int k, ok = 0, err = 0;
  const char *in_force;

  start_w(e, "100", "0");
  /* Every answer takes a little while, so that requests are in flight
   * when the config changes under them. */
  mock_behave(e, "[{'model':'m-a','mode':'slow','ms':15},"
             "{'model':'m-b','mode':'slow','ms':15}]");
  memset(l, 0, sizeof(*l));
  pthread_mutex_init(&l->mu, NULL);
  l->port = e->gate.port;
  atomic_init(&l->stop, false);
  atomic_init(&l->phase, 0);
  in_force = "ctl";
  snprintf(l->expect[0], sizeof(l->expect[0]), "%s", in_force);
  for (k = 0; k < LOAD_THREADS; k++) {
    struct rload_arg *a = malloc(sizeof(*a));
    assert_non_null(a);
    a->l = l;
    a->k = k;
    assert_int_equal(pthread_create(&rload_th[k], NULL, rload_thread, a), 0);
    rload_n++;
  }
  mg_h_sleep_ms(100);

  /* Config A (everyone on ctl), B (everyone on trt), X (invalid), in
   * turn; by SIGHUP and by the admin API in turn. */
  for (k = 0; k < STEPS; k++) {
    int which = k % 3;
    bool sighup = k % 2 == 1;
    atomic_store(&l->phase, 2 * k + 1);
    if (which == 0)
      put_cfg(e, "100", "0", "");
    else if (which == 1)
      put_cfg(e, "0", "100", "");
    else
      put_invalid(e);
    if (sighup) {
      kill(e->gate.pid, SIGHUP);
      if (which == 2)
        wait_reloads(e, "error", ++err);
      else
        wait_reloads(e, "ok", ++ok);
    } else {
      struct mg_h_resp r;
      adm(e, "POST", "/admin/reload", "", &r);
      if (r.status != (which == 2 ? 422 : 200))
        fail_msg("reload %d: %d %s", k, r.status, r.body);
      mg_h_resp_free(&r);
      if (which == 2)
        err++;
      else
        ok++;
    }
    if (which != 2)
      in_force = which == 0 ? "ctl" : "trt";
    snprintf(l->expect[2 * k + 2], sizeof(l->expect[0]), "%s", in_force);
    atomic_store(&l->phase, 2 * k + 2);
    mg_h_sleep_ms(80);
  }
  rload_stop();
  assert_true(mg_h_alive(&e->gate));
  print_message("reload under load: %d reloads (%d refused) in %.0f ms, %ld "
                "requests, %ld checked against the config in force\n",
                STEPS, err, mg_h_now_ms() - t0, l->total, l->checked);
  if (l->bad || l->mismatched)
    fail_msg("%ld failed and %ld misrouted of %ld requests; the first: %s",
             l->bad, l->mismatched, l->total, l->first_bad);
  assert_true(l->total >= 100);
  assert_true(l->checked >= 50);
  assert_true(mnow(e, "modelgate_config_reloads_total", "result=\"ok\"") == ok);
  assert_true(mnow(e, "modelgate_config_reloads_total", "result=\"error\"") ==
              err);
  pthread_mutex_destroy(&l->mu);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, tenv_setup, admin_teardown)
  const struct CMUnitTest tests[] = {
      T(test_auth),
      T(test_wrong_methods),
      T(test_wrong_methods_allow),
      T(test_no_token),
      T(test_state_content),
      T(test_kill),
      T(test_admin_own_budget),
      T(test_admin_urls_exact),
      T(test_admin_actor),
      T(test_unkill_disabled_flag),
      T(test_admin_public_needs_token),
      T(test_state_not_saved),
      T(test_weights),
      T(test_weights_duplicate_variant),
      T(test_state_file_atomic),
      T(test_malformed_state_file),
      T(test_reload),
      T(test_reload_config_info),
      T(test_reload_in_flight),
      T(test_reload_under_load),
  };
#undef T
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
