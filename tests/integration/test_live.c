/* test_live.c - what the live dashboard reads (GET /admin/live) and the
 * per-flag-and-variant Prometheus series (issue 16.3, 16.4): counts over
 * the last minutes from the counters the runtime keeps, every worker's
 * summed; a ramp's step, weight and time to its next step; breakers;
 * recent events; the token when one is set. */
#define _DEFAULT_SOURCE 1

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"

#define TOKEN "live-test-token"
#define AUTH "Authorization: Bearer " TOKEN "\r\n"

static const char cfg_tmpl[] =
    "{'admin':{'listen':'127.0.0.1:0','state_file':'@DIR/state.json'},"
    "'server':{'listen':'127.0.0.1:0','shutdown_grace_ms':2000},"
    "'targets':{'ctl':{'base_url':'@MOCK','model':'m-ctl','breaker':{"
    "'failures':3,'cooldown_ms':60000}},"
    "'trt':{'base_url':'@MOCK','model':'m-trt','breaker':{'enabled':false},"
    "'price':{'input':2,"
    "'output':8}}},"
    "'flags':{'chat':{'off_variant':'ctl','fallback_to_control':false,"
    "'variants':{'ctl':{'target':'ctl'},'trt':{'target':'trt'}},"
    "'ramp':{'variant':'trt','interval_ms':200,'steps':[{'weight':50,"
    "'hold_ms':3600000},{'weight':100}]}}},"
    "'aliases':{'gpt-live':{'flag':'chat'}}}";

static void start(struct tenv *e) {
  const char *env[] = {"MODELGATE_ADMIN_TOKEN=" TOKEN, NULL};
  char *cfg = q(e, cfg_tmpl);
  assert_int_equal(mg_h_write_file(e->config, cfg), 0);
  free(cfg);
  assert_int_equal(mg_h_start_gate(&e->gate, e->config, env), 0);
}

static cJSON *live(struct tenv *e) {
  struct mg_h_resp r;
  cJSON *j;
  assert_int_equal(mg_h_request(e->gate.admin_port, "GET", "/admin/live",
                                AUTH, NULL, &r, T_MS),
                   0);
  assert_int_equal(r.status, 200);
  j = json_body(&r);
  mg_h_resp_free(&r);
  return j;
}

static double num(const cJSON *j, const char *path) {
  const cJSON *v = at(j, path);
  if (!cJSON_IsNumber(v))
    fail_msg("%s is not a number", path);
  return v->valuedouble;
}

static void test_live_view(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  cJSON *j;
  int i, ctl = 0, trt = 0;
  char v[64], *m;
  start(e);

  /* Reading needs the token. */
  assert_int_equal(mg_h_request(e->gate.admin_port, "GET", "/admin/live",
                                NULL, NULL, &r, T_MS),
                   0);
  assert_int_equal(r.status, 401);
  mg_h_resp_free(&r);

  /* 40 users over both arms; the treatment's target fails for 5 of them. */
  mock_behave(e, "{'model':'m-trt','mode':'status','status':500,'times':5}");
  for (i = 0; i < 40; i++) {
    char *b = fmt("{\"model\":\"gpt-live\",\"user\":\"u%d\",\"messages\":["
                  "{\"role\":\"user\",\"content\":\"hi\"}]}",
                  i);
    int fd = mg_h_connect(e->gate.port);
    assert_true(fd >= 0);
    send_post(fd, "/v1/chat/completions", NULL, b);
    assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
    close(fd);
    assert_non_null(mg_h_header(&r, "x-modelgate-variant", v, sizeof(v)));
    if (strcmp(v, "ctl") == 0)
      ctl++;
    else
      trt++;
    mg_h_resp_free(&r);
    free(b);
  }
  assert_true(ctl > 5 && trt > 5);

  j = live(e);
  assert_non_null(at(j, "now"));
  assert_true(cJSON_IsString(at(j, "instance")));
  assert_int_equal((int)num(j, "flags.chat.variants.ctl.windows.1m.requests"),
                   ctl);
  assert_int_equal((int)num(j, "flags.chat.variants.trt.windows.1m.requests"),
                   trt);
  assert_int_equal((int)num(j, "flags.chat.variants.trt.windows.15m.requests"),
                   trt);
  /* 5 of the treatment's answers were errors. */
  {
    double er = num(j, "flags.chat.variants.trt.windows.5m.error_rate");
    if (fabs(er - 5.0 / trt) > 1e-9)
      fail_msg("treatment error rate %g, want %g", er, 5.0 / trt);
  }
  assert_true(num(j, "flags.chat.variants.ctl.windows.1m.error_rate") == 0);
  assert_true(num(j, "flags.chat.variants.ctl.windows.1m.p50_ms") > 0);
  assert_true(num(j, "flags.chat.variants.ctl.windows.1m.p99_ms") >=
              num(j, "flags.chat.variants.ctl.windows.1m.p50_ms"));
  /* The treatment has a price: its answers have a cost; the control's
   * none. */
  assert_true(num(j, "flags.chat.variants.trt.windows.1m.cost_per_request") >
              0);
  assert_true(cJSON_IsNull(
      at(j, "flags.chat.variants.ctl.windows.1m.cost_per_request")));
  /* The ramp: step 0 at 50%, an hour's hold ahead, nobody to wait for. */
  assert_string_equal(str_at(j, "flags.chat.ramp.status"), "running");
  assert_int_equal((int)num(j, "flags.chat.ramp.step"), 0);
  assert_true(num(j, "flags.chat.ramp.weight") == 50);
  assert_true(num(j, "flags.chat.ramp.next_step_in_ms") > 3500000);
  assert_true(cJSON_IsFalse(at(j, "flags.chat.ramp.waiting_for_human")));
  assert_string_equal(str_at(j, "breakers.ctl.state"), "closed");
  cJSON_Delete(j);

  /* Events: a kill shows first. */
  assert_int_equal(mg_h_request(e->gate.admin_port, "POST",
                                "/admin/flags/chat/kill", AUTH, "", &r, T_MS),
                   0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  j = live(e);
  assert_true(cJSON_IsTrue(at(j, "flags.chat.killed")));
  assert_string_equal(str_at(j, "events.0.event"), "kill");
  assert_string_equal(str_at(j, "events.0.flag"), "chat");
  cJSON_Delete(j);

  /* The same counts in /metrics, per flag and variant. */
  m = metrics(e->gate.port);
  {
    char *s = fmt("modelgate_variant_requests_total{flag=\"chat\","
                  "variant=\"trt\",status_class=\"5xx\"}");
    assert_true(metric_in(m, s) == 5);
    free(s);
    s = fmt("modelgate_variant_requests_total{flag=\"chat\","
            "variant=\"ctl\",status_class=\"2xx\"}");
    assert_true(metric_in(m, s) == ctl);
    free(s);
    s = fmt("modelgate_variant_duration_seconds_count{flag=\"chat\","
            "variant=\"trt\"}");
    assert_true(metric_in(m, s) == trt);
    free(s);
    s = fmt("modelgate_cost_total{flag=\"chat\",variant=\"trt\","
            "target=\"trt\"}");
    assert_true(metric_in(m, s) > 0);
    free(s);
  }
  free(m);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, tenv_setup, tenv_teardown)
  const struct CMUnitTest tests[] = {
      T(test_live_view),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
