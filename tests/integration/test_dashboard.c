/* test_dashboard.c - the live dashboard (issue 16.3, 16.5) in a real
 * browser: a modelgate with a ramping flag and a flag whose target is down
 * (its breaker opens) serves GET /dashboard; headless Chromium, driven over
 * the DevTools protocol by dashboard_cdp.mjs, opens it, is asked for the
 * admin token, shows the ramp and the open breaker, is laid out at 1,280
 * and 1,920 px (screenshots kept in tests/artifacts/dashboard-*.png) and
 * clicks "Kill" with the token; the kill must then be in GET /admin/state.
 * No console error, uncaught exception or failed load on the way.
 *
 * The page itself over plain HTTP: self-contained (no script, style or
 * image from elsewhere), a CSP that says so, GET and HEAD only, and it
 * knows whether the admin API wants a token. And deploy/'s Grafana
 * dashboard and alert rules against a scrape of this modelgate: every
 * label they match or group by is one its series carry.
 *
 * Exits 77 (ctest: skipped) without Chromium, or a node with WebSocket
 * (node 20's --experimental-websocket or a newer node). */
#define _DEFAULT_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "common.h"

#define TOKEN "dash-test-token"
#define AUTH "Authorization: Bearer " TOKEN "\r\n"
#define NODE_MS 120000

#ifndef MG_ARTIFACT_DIR
#define MG_ARTIFACT_DIR "."
#endif

static char chromium[512], node_bin[512];
/* Kept bound while a test runs, so that nobody else takes the port. */
static int closed_fd = -1;

static bool on_path(const char *const *names, char *out, size_t n) {
  const char *path = getenv("PATH");
  char dirs[4096], *save = NULL, *d;
  size_t i;
  snprintf(dirs, sizeof(dirs), "%s", path ? path : "/usr/bin:/bin");
  for (d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save))
    for (i = 0; names[i]; i++) {
      snprintf(out, n, "%s/%s", d, names[i]);
      if (access(out, X_OK) == 0)
        return true;
    }
  return false;
}

/* Target "down" points at a closed port: two failures open its breaker.
 * Flags "legacy" and "spare" send everything there; "spare" falls back to
 * its control's target.
 * Flag "chat" ramps its treatment: 20% for an hour under two guards, then
 * 50% by hand. */
static const char cfg_tmpl[] =
    "{'admin':{'listen':'127.0.0.1:0','state_file':'@DIR/state.json'},"
    "'server':{'listen':'127.0.0.1:0','shutdown_grace_ms':2000},"
    "'targets':{'ctl':{'base_url':'@MOCK','model':'m-ctl'},"
    "'trt':{'base_url':'@MOCK','model':'m-trt','price':{'input':2,"
    "'output':8}},"
    "'down':{'base_url':'http://127.0.0.1:@CLOSED/v1','model':'m-down',"
    "'retries':{'count':1,'backoff_ms':10,'jitter':0},"
    "'breaker':{'failures':2,'cooldown_ms':600000}}},"
    "'flags':{'chat':{'off_variant':'ctl',"
    "'variants':{'ctl':{'target':'ctl'},'trt':{'target':'trt'}},"
    "'ramp':{'variant':'trt','interval_ms':200,'steps':[{'weight':20,"
    "'hold_ms':3600000,'guards':{'max_error_rate':0.5,'max_p95_ms':10000,"
    "'min_requests':3}},{'weight':50,'manual':true},{'weight':100}]}},"
    "'legacy':{'off_variant':'old','fallback_to_control':false,"
    "'variants':{'old':{'target':'ctl','weight':0},"
    "'new':{'target':'down','weight':100}}},"
    "'spare':{'off_variant':'old','variants':{'old':{'target':'ctl',"
    "'weight':0},'new':{'target':'down','weight':100}}}},"
    "'aliases':{'gpt-chat':{'flag':'chat'},'gpt-legacy':{'flag':'legacy'},"
    "'gpt-spare':{'flag':'spare'}}}";

static void start(struct tenv *e, bool with_token) {
  const char *env[] = {"MODELGATE_ADMIN_TOKEN=" TOKEN, NULL};
  char *tmpl, *cfg, port[16];
  int closed = closed_port(&closed_fd);
  const char *at;
  assert_true(closed > 0);
  snprintf(port, sizeof(port), "%d", closed);
  /* @CLOSED: q() knows @MOCK and @DIR only. */
  at = strstr(cfg_tmpl, "@CLOSED");
  tmpl = fmt("%.*s%s%s", (int)(at - cfg_tmpl), cfg_tmpl, port, at + 7);
  cfg = q(e, tmpl);
  assert_int_equal(mg_h_write_file(e->config, cfg), 0);
  free(cfg);
  free(tmpl);
  assert_int_equal(mg_h_start_gate(&e->gate, e->config,
                                   with_token ? env : NULL),
                   0);
}

static int teardown(void **state) {
  if (closed_fd >= 0)
    close(closed_fd);
  closed_fd = -1;
  return tenv_teardown(state);
}

static int chat_as(struct tenv *e, const char *model, int user) {
  struct mg_h_resp r;
  char *b = fmt("{\"model\":\"%s\",\"user\":\"u%d\",\"messages\":["
                "{\"role\":\"user\",\"content\":\"hi\"}]}",
                model, user);
  int fd = mg_h_connect(e->gate.port), status;
  assert_true(fd >= 0);
  send_post(fd, "/v1/chat/completions", NULL, b);
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  close(fd);
  status = r.status;
  mg_h_resp_free(&r);
  free(b);
  return status;
}

static void test_dashboard_page(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  char v[512];
  start(e, true);

  assert_int_equal(
      mg_h_request(e->gate.admin_port, "GET", "/dashboard", NULL, NULL, &r,
                   T_MS),
      0);
  assert_int_equal(r.status, 200);
  assert_non_null(mg_h_header(&r, "content-type", v, sizeof(v)));
  assert_string_equal(v, "text/html; charset=utf-8");
  assert_non_null(mg_h_header(&r, "content-security-policy", v, sizeof(v)));
  assert_non_null(strstr(v, "default-src 'none'"));
  assert_non_null(strstr(v, "connect-src 'self'"));
  /* One page: nothing fetched from elsewhere, the token asked for. */
  assert_non_null(memstr(r.body, r.body_len, "data-auth=\"token\""));
  assert_non_null(memstr(r.body, r.body_len, "/admin/live"));
  assert_null(memstr(r.body, r.body_len, "src="));
  assert_null(memstr(r.body, r.body_len, "http://"));
  assert_null(memstr(r.body, r.body_len, "https://"));
  assert_null(memstr(r.body, r.body_len, "@import"));
  assert_null(memstr(r.body, r.body_len, "@MG_AUTH@"));
  mg_h_resp_free(&r);

  assert_int_equal(mg_h_request(e->gate.admin_port, "POST", "/dashboard",
                                NULL, "", &r, T_MS),
                   0);
  assert_int_equal(r.status, 405);
  assert_non_null(mg_h_header(&r, "allow", v, sizeof(v)));
  assert_string_equal(v, "GET, HEAD");
  mg_h_resp_free(&r);
  /* Model traffic's listener has no dashboard. */
  assert_int_equal(
      mg_h_request(e->gate.port, "GET", "/dashboard", NULL, NULL, &r, T_MS),
      0);
  assert_int_equal(r.status, 404);
  mg_h_resp_free(&r);
}

static void test_dashboard_no_token(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  start(e, false);
  assert_int_equal(
      mg_h_request(e->gate.admin_port, "GET", "/dashboard", NULL, NULL, &r,
                   T_MS),
      0);
  assert_int_equal(r.status, 200);
  /* Reading is open, changes are disabled: the page reads at once and
   * greys its buttons. */
  assert_non_null(memstr(r.body, r.body_len, "data-auth=\"none\""));
  mg_h_resp_free(&r);
}

/* The Grafana dashboard's and the alert rules' labels against a scrape of
 * this modelgate: every label matched or grouped by is one its series
 * carry (tests/deploy/check_deploy.py --metrics). */
static void test_deploy_labels(void **state) {
  static const char *const py[] = {"python3", NULL};
  struct tenv *e = *state;
  struct mg_h_resp r;
  char python[512], scrape[400], *out = NULL, *m;
  int i, rc;
  if (!on_path(py, python, sizeof(python))) {
    print_message("python3 is not installed: skipping\n");
    skip();
  }
  start(e, true);
  for (i = 0; i < 20; i++)
    assert_int_equal(chat_as(e, "gpt-chat", i), 200);
  for (i = 0; i < 3; i++)
    assert_true(chat_as(e, "gpt-legacy", i) >= 500);
  /* Its breaker open, "down" is skipped: the control's target answers. */
  for (i = 0; i < 3; i++)
    assert_int_equal(chat_as(e, "gpt-spare", i), 200);
  assert_int_equal(mg_h_request(e->gate.admin_port, "POST",
                                "/admin/flags/chat/ramp/rollback", AUTH, "",
                                &r, T_MS),
                   0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  m = metrics(e->gate.port);
  assert_non_null(strstr(m, "modelgate_variant_fallbacks_total{"));
  assert_non_null(strstr(m, "modelgate_fallbacks_total{"));
  assert_non_null(strstr(m, "modelgate_breaker_transitions_total{"));
  assert_non_null(strstr(m, "modelgate_ramp_rollbacks_total{"));
  assert_non_null(strstr(m, "modelgate_retries_total{"));
  snprintf(scrape, sizeof(scrape), "%s/metrics.txt", e->dir);
  assert_int_equal(mg_h_write_file(scrape, m), 0);
  free(m);
  {
    const char *argv[] = {python, MG_SOURCE_DIR "/tests/deploy/check_deploy.py",
                          MG_SOURCE_DIR, "--metrics", scrape, NULL};
    rc = mg_h_run(argv, &out, 60000);
  }
  print_message("check_deploy.py: %s\n", out ? out : "");
  if (rc != 0)
    fail_msg("check_deploy.py --metrics exited %d", rc);
  assert_non_null(strstr(out, "labels checked against"));
  free(out);
}

static void test_dashboard_in_chromium(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  char url[128], profile[400], *out = NULL, script[] =
      MG_SOURCE_DIR "/tests/integration/dashboard_cdp.mjs";
  cJSON *j;
  int i, rc;
  start(e, true);

  /* Traffic on both arms of the ramp; the legacy flag's target refuses
   * connections until its breaker opens. */
  for (i = 0; i < 40; i++)
    assert_int_equal(chat_as(e, "gpt-chat", i), 200);
  for (i = 0; i < 3; i++)
    assert_true(chat_as(e, "gpt-legacy", i) >= 500);
  assert_int_equal(mg_h_request(e->gate.admin_port, "GET", "/admin/live",
                                AUTH, NULL, &r, T_MS),
                   0);
  assert_int_equal(r.status, 200);
  j = json_body(&r);
  mg_h_resp_free(&r);
  assert_string_equal(str_at(j, "breakers.down.state"), "open");
  assert_string_equal(str_at(j, "flags.chat.ramp.status"), "running");
  cJSON_Delete(j);

  snprintf(url, sizeof(url), "http://127.0.0.1:%d/dashboard",
           e->gate.admin_port);
  snprintf(profile, sizeof(profile), "%s/chromium-profile", e->dir);
  {
    const char *argv[] = {node_bin,        "--experimental-websocket",
                          "--no-warnings", script,
                          chromium,        url,
                          TOKEN,           "chat",
                          "down",          MG_ARTIFACT_DIR,
                          profile,         NULL};
    rc = mg_h_run(argv, &out, NODE_MS);
  }
  print_message("dashboard_cdp: %s\n", out ? out : "(no output)");
  if (rc != 0)
    fail_msg("dashboard_cdp.mjs exited %d", rc);
  {
    const char *line = out ? strstr(out, "{\"ok\"") : NULL;
    assert_non_null(line);
    j = cJSON_Parse(line);
    assert_non_null(j);
    assert_true(cJSON_IsTrue(at(j, "ok")));
    assert_int_equal(cJSON_GetArraySize(at(j, "consoleErrors")), 0);
    /* The ramp as the page shows it: step 1 of 3 at 20%, an hour's hold,
     * its guards' observed values against their thresholds. */
    assert_string_equal(str_at(j, "notes.ramp.step"), "1");
    assert_string_equal(str_at(j, "notes.ramp.weight"), "20%");
    assert_true(cJSON_GetArraySize(at(j, "notes.guards")) >= 2);
    assert_string_equal(str_at(j, "notes.guards.0.0"), "max_error_rate");
    assert_string_equal(str_at(j, "notes.guards.0.2"), "0");
    assert_string_equal(str_at(j, "notes.guards.0.3"), "0.5");
    assert_string_equal(str_at(j, "notes.guards.0.4"), "ok");
    assert_string_equal(str_at(j, "notes.guards.1.0"), "max_p95_ms");
    assert_string_equal(str_at(j, "notes.guards.1.3"), "10000");
    assert_string_equal(str_at(j, "notes.ramp.status"), "running");
    assert_non_null(strstr(str_at(j, "notes.ramp.next"), "next step in"));
    assert_int_equal((int)at(j, "notes.ramp.steps")->valuedouble, 3);
    /* Two variants by three windows. */
    assert_int_equal((int)at(j, "notes.variantRows")->valuedouble, 6);
    assert_string_equal(str_at(j, "notes.breaker"), "open");
    assert_string_equal(str_at(j, "notes.killedBadge"), "killed");
    cJSON_Delete(j);
  }
  free(out);

  /* The click killed the flag. */
  assert_int_equal(mg_h_request(e->gate.admin_port, "GET", "/admin/state",
                                AUTH, NULL, &r, T_MS),
                   0);
  assert_int_equal(r.status, 200);
  j = json_body(&r);
  mg_h_resp_free(&r);
  assert_true(cJSON_IsTrue(at(j, "flags.chat.killed")));
  assert_true(cJSON_IsTrue(at(j, "flags.chat.kill_override")));
  assert_true(cJSON_IsFalse(at(j, "flags.legacy.killed")));
  cJSON_Delete(j);
  /* And requests see it: the off variant answers. */
  {
    int fd = mg_h_connect(e->gate.port);
    char *b = chat_body("gpt-chat", "hi", ",\"user\":\"u1\"");
    char variant[64];
    assert_true(fd >= 0);
    send_post(fd, "/v1/chat/completions", NULL, b);
    assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
    close(fd);
    assert_non_null(
        mg_h_header(&r, "x-modelgate-variant", variant, sizeof(variant)));
    assert_string_equal(variant, "ctl");
    mg_h_resp_free(&r);
    free(b);
  }

  {
    static const char *const shots[] = {"/dashboard-1280.png",
                                        "/dashboard-1920.png"};
    struct stat st;
    for (i = 0; i < 2; i++) {
      char path[600];
      snprintf(path, sizeof(path), "%s%s", MG_ARTIFACT_DIR, shots[i]);
      assert_int_equal(stat(path, &st), 0);
      /* A blank page compresses to a few kilobytes. */
      assert_true(st.st_size > 30000);
      print_message("screenshot: %s (%lld bytes)\n", path,
                    (long long)st.st_size);
    }
  }
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, tenv_setup, teardown)
  static const char *const chromes[] = {"chromium", "chromium-browser",
                                        "google-chrome", NULL};
  static const char *const nodes[] = {"node", "nodejs", NULL};
  const struct CMUnitTest page[] = {
      T(test_dashboard_page),
      T(test_dashboard_no_token),
      T(test_deploy_labels),
  };
  const struct CMUnitTest browser[] = {
      T(test_dashboard_in_chromium),
  };
  int failed = cmocka_run_group_tests_name("page", page, NULL, NULL);
  if (!on_path(chromes, chromium, sizeof(chromium)) ||
      !on_path(nodes, node_bin, sizeof(node_bin))) {
    printf("chromium or node is not installed (scripts/test.sh installs "
           "both): skipping the browser test\n");
    return failed ? 1 : 77;
  }
  {
    const char *argv[] = {node_bin, "--experimental-websocket", "--no-warnings",
                          "-e",
                          "process.exit(typeof WebSocket==='function'?0:1)",
                          NULL};
    char *out = NULL;
    int rc = mg_h_run(argv, &out, 30000);
    free(out);
    if (rc != 0) {
      printf("this node has no WebSocket: skipping the browser test\n");
      return failed ? 1 : 77;
    }
  }
  failed += cmocka_run_group_tests_name("browser", browser, NULL, NULL);
  return failed ? 1 : 0;
}
