/* test_feedback_api.c - quality signals end to end through the real binary
 * (DESIGN.md, "Quality signals and cost"; issue 15.1, 15.2, 15.6):
 *
 * - an app gets x-modelgate-decision with its answer, POSTs a thumbs-up
 *   naming it, the feedback line is in the decision log, and `modelgate
 *   report -c` shows the metric and the decide rule's verdict; the live
 *   view sees the feedback under the variant that made the decision; whole
 *   answers carry x-modelgate-cost (the record's cost), streams do not, and
 *   /metrics has modelgate_cost_total;
 * - batches, validation errors naming the field, client keys, the size
 *   and batch limits, the per-client rate (429 with retry-after), unknown
 *   decision ids accepted;
 * - min_confidence set through the admin API changes which answers fall
 *   back, is shown in /admin/state, logged with who asked, survives a
 *   restart, and clears;
 * - a ramp rolled back by a complaint-rate guard fed only through
 *   POST /v1/feedback, with no client-visible error.
 *
 * Every loop is bounded in count and time. */
#define _GNU_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"
#include "test_ramps.h"

/* ---- helpers ------------------------------------------------------------- */

/* Write the config (single quotes, @MOCK, @DIR) and start modelgate. */
static void start_cfg(struct tenv *e, const char *sq) {
  char *cfg = q(e, sq);
  assert_int_equal(mg_h_write_file(e->config, cfg), 0);
  free(cfg);
  gate_run(e);
}

/* One chat request as user `user` on alias (extra: more body members,
 * "" or ",\"stream\":true"; headers: more header lines or NULL). The
 * decision id and variant of the answer are copied into id (33 bytes) and
 * variant (64), when not NULL. The response goes to out (caller frees)
 * when not NULL. Returns the status. */
static int ask_as(struct tenv *e, const char *alias, const char *user,
                  const char *extra, const char *headers, char *id,
                  char *variant, struct mg_h_resp *out) {
  struct mg_h_resp r;
  char *b = fmt("{\"model\":\"%s\",\"user\":\"%s\",\"messages\":[{\"role\":"
                "\"user\",\"content\":\"hello from %s\"}]%s}",
                alias, user, user, extra);
  int status;
  if (mg_h_request(e->gate.port, "POST", "/v1/chat/completions", headers, b,
                   &r, T_MS * SLOW) != 0)
    fail_msg("no answer to a chat request of %s", user);
  free(b);
  status = r.status;
  if (id && !mg_h_header(&r, "x-modelgate-decision", id, 33))
    fail_msg("no x-modelgate-decision: %s", r.head);
  if (variant && !mg_h_header(&r, "x-modelgate-variant", variant, 64))
    fail_msg("no x-modelgate-variant: %s", r.head);
  if (out)
    *out = r;
  else
    mg_h_resp_free(&r);
  return status;
}

/* POST /v1/feedback with body (headers: more lines or NULL). */
static void send_feedback(struct tenv *e, const char *headers,
                          const char *body, struct mg_h_resp *r) {
  if (mg_h_request(e->gate.port, "POST", "/v1/feedback", headers, body, r,
                   T_MS * SLOW) != 0)
    fail_msg("no answer to POST /v1/feedback %s", body);
}

/* The status of a feedback POST; a 200 must say it accepted want items
 * (want < 0: do not check). */
static int feedback_status(struct tenv *e, const char *headers,
                           const char *body, int want) {
  struct mg_h_resp r;
  int status;
  send_feedback(e, headers, body, &r);
  status = r.status;
  if (status == 200 && want >= 0) {
    cJSON *j = json_body(&r);
    if (num_at(j, "accepted") != want || num_at(j, "dropped") != 0)
      fail_msg("want %d accepted: %s", want, r.body);
    cJSON_Delete(j);
  }
  mg_h_resp_free(&r);
  return status;
}

/* Feedback lines ({"feedback": ...}) in the decision log, parsed, in
 * order (caller deletes). */
static cJSON *log_feedback(struct tenv *e) {
  char path[400];
  char *s, *line, *save = NULL;
  cJSON *arr = cJSON_CreateArray();
  dlog_path(e, path, sizeof(path));
  s = mg_h_read_file(path, NULL);
  if (s == NULL)
    return arr;
  for (line = strtok_r(s, "\n", &save); line;
       line = strtok_r(NULL, "\n", &save)) {
    cJSON *j;
    if (strstr(line, "\"feedback\":{") == NULL)
      continue;
    j = cJSON_Parse(line);
    if (j == NULL)
      fail_msg("a feedback line is not JSON: %s", line);
    cJSON_AddItemToArray(arr, j);
  }
  free(s);
  return arr;
}

/* Wait until the decision log holds n feedback lines (at most 5 s). */
static cJSON *wait_feedback(struct tenv *e, int n) {
  double deadline = mg_h_now_ms() + 5000 * SLOW;
  for (;;) {
    cJSON *a = log_feedback(e);
    if (cJSON_GetArraySize(a) >= n)
      return a;
    cJSON_Delete(a);
    if (mg_h_now_ms() > deadline)
      fail_msg("want %d feedback lines in the decision log", n);
    mg_h_sleep_ms(20);
  }
}

/* The request record of a decision id in the log, parsed (NULL: none). */
static cJSON *log_record(struct tenv *e, const char *id) {
  char path[400], want[64];
  char *s, *line, *save = NULL;
  cJSON *rec = NULL;
  dlog_path(e, path, sizeof(path));
  snprintf(want, sizeof(want), "\"id\":\"%s\"", id);
  s = mg_h_read_file(path, NULL);
  if (s == NULL)
    return NULL;
  for (line = strtok_r(s, "\n", &save); line && rec == NULL;
       line = strtok_r(NULL, "\n", &save))
    if (strstr(line, want))
      rec = cJSON_Parse(line);
  free(s);
  return rec;
}

/* ---- the app sends a thumbs-up; the report shows it ---------------------- */

/* The control gets the larger weight: the report takes the variant with
 * the largest logged weight as the control. */

#define E2E_CFG                                                                \
  "{'admin':{'listen':'127.0.0.1:0','state_file':'@DIR/state.json'},"         \
  "'server':{'listen':'127.0.0.1:0','log_level':'info',"                       \
  "'shutdown_grace_ms':2000},"                                                 \
  "'decision_log':{'path':'@DIR/decisions.jsonl','flush_ms':20},"              \
  "'feedback':{'metrics':{'thumbs_up':{'type':'boolean'},"                     \
  "'rating':{'type':'float','min':1,'max':5}},"                                \
  "'rate_per_client':{'per_second':100000,'burst':100000}},"                   \
  "'targets':{'old':{'base_url':'@MOCK','model':'m-old',"                      \
  "'price':{'input':1,'output':2}},"                                           \
  "'new':{'base_url':'@MOCK','model':'m-new',"                                 \
  "'price':{'input':2,'output':4}}},"                                          \
  "'flags':{'chat':{'off_variant':'old','variants':{"                          \
  "'old':{'target':'old','weight':60},'new':{'target':'new','weight':40}},"    \
  "'decide':{'metric':'thumbs_up','min_lift':0.05}}},"                         \
  "'aliases':{'gpt-fb':{'flag':'chat'}}}"

#define E2E_USERS 240

static void test_thumbs_up_end_to_end(void **state) {
  struct tenv *e = *state;
  static char ids[E2E_USERS][33], vars[E2E_USERS][64];
  struct mg_h_resp r;
  cJSON *lines, *j, *rec;
  char user[32], cost[64], path[400], *body, *out = NULL, *m;
  const cJSON *fb, *v;
  int i, nnew = 0, nold = 0, sent = 0, rc;

  start_cfg(e, E2E_CFG);

  /* The app's request: the answer says which decision served it, and
   * what it cost (usage is known before the head of a whole answer). */
  assert_int_equal(ask_as(e, "gpt-fb", "user-0", "", NULL, ids[0], vars[0],
                          &r),
                   200);
  assert_non_null(mg_h_header(&r, "x-modelgate-cost", cost, sizeof(cost)));
  assert_true(strtod(cost, NULL) > 0);
  mg_h_resp_free(&r);

  /* The thumbs-up, as the README shows it. */
  body = fmt("{\"decision_id\":\"%s\",\"metric\":\"thumbs_up\","
             "\"value\":true}",
             ids[0]);
  send_feedback(e, NULL, body, &r);
  free(body);
  assert_int_equal(r.status, 200);
  j = json_body(&r);
  assert_true(num_at(j, "accepted") == 1);
  assert_true(num_at(j, "dropped") == 0);
  cJSON_Delete(j);
  mg_h_resp_free(&r);

  lines = wait_feedback(e, 1);
  fb = at(cJSON_GetArrayItem(lines, 0), "feedback");
  assert_string_equal(str_at(fb, "decision_id"), ids[0]);
  assert_string_equal(str_at(fb, "metric"), "thumbs_up");
  assert_true(cJSON_IsTrue(at(fb, "value")));
  assert_true(cJSON_IsNull(at(fb, "client")));
  assert_true(strlen(str_at(cJSON_GetArrayItem(lines, 0), "ts")) >= 20);
  cJSON_Delete(lines);

  /* The record of that decision carries the cost the header said. */
  {
    double deadline = mg_h_now_ms() + 5000 * SLOW;
    while ((rec = log_record(e, ids[0])) == NULL &&
           mg_h_now_ms() < deadline)
      mg_h_sleep_ms(20);
    assert_non_null(rec);
    assert_true(fabs(num_at(rec, "cost") - strtod(cost, NULL)) < 1e-7);
    cJSON_Delete(rec);
  }

  /* A stream's usage comes at its end: no cost header. */
  assert_int_equal(ask_as(e, "gpt-fb", "user-s", ",\"stream\":true", NULL,
                          NULL, NULL, &r),
                   200);
  assert_null(mg_h_header(&r, "x-modelgate-cost", cost, sizeof(cost)));
  mg_h_resp_free(&r);

  /* More users; the treatment pleases 90% of them, the control 50%. */
  for (i = 1; i < E2E_USERS; i++) {
    snprintf(user, sizeof(user), "user-%d", i);
    assert_int_equal(
        ask_as(e, "gpt-fb", user, "", NULL, ids[i], vars[i], NULL), 200);
  }
  for (i = 0; i < E2E_USERS; i += 40) {
    /* Batches of 40 (the default max_batch is 100). */
    cJSON *batch = cJSON_CreateArray();
    char *text;
    int k;
    for (k = i; k < i + 40 && k < E2E_USERS; k++) {
      bool isnew = strcmp(vars[k], "new") == 0;
      bool up = isnew ? k % 10 != 0 : k % 2 == 0;
      cJSON *it;
      if (k == 0)
        continue; /* already sent */
      it = cJSON_CreateObject();
      cJSON_AddStringToObject(it, "decision_id", ids[k]);
      cJSON_AddStringToObject(it, "metric", "thumbs_up");
      cJSON_AddBoolToObject(it, "value", up);
      snprintf(user, sizeof(user), "user-%d", k);
      cJSON_AddStringToObject(it, "unit", user);
      cJSON_AddItemToArray(batch, it);
      nnew += isnew;
      nold += !isnew;
    }
    text = cJSON_PrintUnformatted(batch);
    assert_int_equal(
        feedback_status(e, NULL, text, cJSON_GetArraySize(batch)), 200);
    sent += cJSON_GetArraySize(batch);
    free(text);
    cJSON_Delete(batch);
  }
  assert_true(nnew > 60 && nold > 60);
  /* A float metric, too. */
  body = fmt("[{\"decision_id\":\"%s\",\"metric\":\"rating\",\"value\":4.5}]",
             ids[1]);
  assert_int_equal(feedback_status(e, NULL, body, 1), 200);
  free(body);
  lines = wait_feedback(e, 1 + sent + 1);
  assert_int_equal(cJSON_GetArraySize(lines), 1 + sent + 1);
  v = at(cJSON_GetArrayItem(lines, 1 + sent), "feedback.value");
  assert_true(cJSON_IsNumber(v) && v->valuedouble == 4.5);
  cJSON_Delete(lines);

  /* The live view found each decision's variant from its id alone. */
  admin(e, "GET", "/admin/live", NULL, &r);
  assert_int_equal(r.status, 200);
  j = json_body(&r);
  {
    const cJSON *nv = NULL, *ov = NULL, *flags = at(j, "flags"), *f;
    char *s;
    /* flags may be an object or an array of flags: find the variants. */
    cJSON_ArrayForEach(f, flags) {
      const cJSON *vs = at(f, "variants");
      if (vs && !nv) {
        nv = at(vs, "new");
        ov = at(vs, "old");
      }
    }
    s = cJSON_PrintUnformatted(j);
    if (nv == NULL || ov == NULL)
      fail_msg("no variants in /admin/live: %s", s);
    if (num_at(nv, "windows.1m.feedback.thumbs_up.n") +
            num_at(ov, "windows.1m.feedback.thumbs_up.n") !=
        sent + 1)
      fail_msg("want %d thumbs_up in the live view: %s", sent + 1, s);
    assert_true(num_at(nv, "windows.1m.feedback.thumbs_up.mean") > 0.8);
    assert_true(num_at(ov, "windows.1m.feedback.thumbs_up.mean") < 0.7);
    free(s);
  }
  cJSON_Delete(j);
  mg_h_resp_free(&r);

  /* Cost per flag, variant and target in /metrics. */
  m = metrics(e->gate.port);
  assert_true(metric_in(m, "modelgate_cost_total{flag=\"chat\","
                           "variant=\"new\",target=\"new\"}") > 0);
  assert_true(metric_in(m, "modelgate_feedback_items_total{metric="
                           "\"thumbs_up\",outcome=\"accepted\"}") == sent + 1);
  free(m);

  /* Stop (the log is flushed), then the report joins the feedback. */
  gate_down(&e->gate);
  dlog_path(e, path, sizeof(path));
  {
    const char *argv[] = {MG_BIN, "report", "-c", e->config, path, NULL};
    rc = mg_h_run(argv, &out, 30000 * SLOW);
  }
  if (rc != 0 || out == NULL)
    fail_msg("modelgate report exited %d: %s", rc, out ? out : "");
  if (strstr(out, "thumbs_up") == NULL || strstr(out, "decide") == NULL ||
      strstr(out, "new: ship") == NULL)
    fail_msg("the report lacks the metric or the verdict:\n%s", out);
  free(out);
}

/* ---- batches, validation, keys, limits ------------------------------------ */

#define KEY_A "sk-feedback-a-0001"
#define KEY_B "sk-feedback-b-0002"

static char *key_hash(const char *key) {
  char *cmd = fmt("printf %%s '%s' | sha256sum", key), *out = NULL;
  const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
  assert_int_equal(mg_h_run(argv, &out, T_MS), 0);
  assert_non_null(out);
  out[64] = '\0';
  free(cmd);
  return out;
}

/* An OpenAI-shaped 400 naming param (NULL: null) with code. */
static void check_refusal(struct tenv *e, const char *headers,
                          const char *body, int status, const char *code,
                          const char *param) {
  struct mg_h_resp r;
  cJSON *j;
  const cJSON *p;
  send_feedback(e, headers, body, &r);
  assert_error(&r, status, code);
  j = json_body(&r);
  p = at(j, "error.param");
  if (param == NULL ? !cJSON_IsNull(p)
                    : !(cJSON_IsString(p) &&
                        strcmp(p->valuestring, param) == 0))
    fail_msg("want param %s: %s", param ? param : "null", r.body);
  if (status == 400 || status == 413)
    assert_string_equal(str_at(j, "error.type"), "invalid_request_error");
  cJSON_Delete(j);
  mg_h_resp_free(&r);
}

static void test_batch_validation_limits(void **state) {
  struct tenv *e = *state;
  char id[33], id2[33], var[64], big[3000], retry[32], *cfg, *body, *m;
  char *ha = key_hash(KEY_A), *hb = key_hash(KEY_B);
  const char *A = "Authorization: Bearer " KEY_A "\r\n";
  const char *B = "Authorization: Bearer " KEY_B "\r\n";
  /* An id no instance ever gave out: accepted, joined (or not) later. */
  const char *unknown = "0123456789abcdef0123456789abcdef";
  struct mg_h_resp r;
  cJSON *lines;
  int i;

  cfg = fmt("{'admin':{'listen':'127.0.0.1:0','state_file':'@DIR/state.json'},"
            "'server':{'listen':'127.0.0.1:0','shutdown_grace_ms':2000},"
            "'decision_log':{'path':'@DIR/decisions.jsonl','flush_ms':20},"
            "'clients':{'keys':{'a':'%s','b':'%s'}},"
            "'feedback':{'metrics':{'thumbs_up':{'type':'boolean'},"
            "'accuracy':{'type':'float'}},'max_batch':4,'max_bytes':2048,"
            "'rate_per_client':{'per_second':1,'burst':6}},"
            "'targets':{'main':{'base_url':'@MOCK','model':'m-main'}},"
            "'flags':{'chat':{'off_variant':'main','variants':{"
            "'main':{'target':'main'}}}},"
            "'aliases':{'gpt-fb':{'flag':'chat'}}}",
            ha, hb);
  start_cfg(e, cfg);
  free(cfg);
  free(ha);
  free(hb);
  assert_int_equal(ask_as(e, "gpt-fb", "u1", "", A, id, var, NULL), 200);
  assert_int_equal(ask_as(e, "gpt-fb", "u2", "", A, id2, var, NULL), 200);

  /* Refused before any budget is spent: no key, a wrong method, too many
   * bytes, not JSON, too many items. */
  body = fmt("{\"decision_id\":\"%s\",\"metric\":\"thumbs_up\","
             "\"value\":true}",
             id);
  check_refusal(e, NULL, body, 401, "invalid_api_key", NULL);
  assert_int_equal(mg_h_request(e->gate.port, "GET", "/v1/feedback", A, NULL,
                                &r, T_MS),
                   0);
  assert_error(&r, 405, "method_not_allowed");
  assert_non_null(mg_h_header(&r, "allow", retry, sizeof(retry)));
  assert_string_equal(retry, "POST");
  mg_h_resp_free(&r);
  memset(big, ' ', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  memcpy(big, "[]", 2);
  check_refusal(e, A, big, 413, "request_too_large", NULL);
  check_refusal(e, A, "{\"decision_id\":", 400, "invalid_json", NULL);
  check_refusal(e, A, "[]", 400, "empty_batch", NULL);
  {
    char *five = fmt("[%s,%s,%s,%s,%s]", body, body, body, body, body);
    check_refusal(e, A, five, 400, "batch_too_large", NULL);
    free(five);
  }

  /* Each invalid item is named by its field; a batch is taken whole or
   * refused whole. These spend 1 + 1 + 1 + 2 of A's 6 items. */
  check_refusal(e, A,
                "{\"decision_id\":\"0123\",\"metric\":\"thumbs_up\","
                "\"value\":true}",
                400, "invalid_value", "decision_id");
  {
    char *s = fmt("{\"decision_id\":\"%s\",\"metric\":\"nope\",\"value\":1}",
                  id);
    check_refusal(e, A, s, 400, "unknown_metric", "metric");
    free(s);
    s = fmt("{\"decision_id\":\"%s\",\"metric\":\"accuracy\",\"value\":1.5}",
            id);
    check_refusal(e, A, s, 400, "invalid_value", "value");
    free(s);
    s = fmt("[%s,{\"decision_id\":\"%s\",\"metric\":\"thumbs_up\","
            "\"value\":\"yes\"}]",
            body, id2);
    check_refusal(e, A, s, 400, "invalid_value", "[1].value");
    free(s);
  }
  /* A's last item: an unknown decision id is accepted. */
  {
    char *s = fmt("[{\"decision_id\":\"%s\",\"metric\":\"accuracy\","
                  "\"value\":0.25}]",
                  unknown);
    assert_int_equal(feedback_status(e, A, s, 1), 200);
    /* A's budget is spent: 429, with the wait. */
    send_feedback(e, A, s, &r);
    assert_error(&r, 429, "rate_limit_exceeded");
    assert_non_null(mg_h_header(&r, "retry-after", retry, sizeof(retry)));
    assert_true(atoi(retry) >= 1);
    mg_h_resp_free(&r);
    free(s);
  }
  /* B has a budget of its own: a batch of three, one of them about a
   * decision A's request made. */
  {
    char *s = fmt("[%s,{\"decision_id\":\"%s\",\"metric\":\"accuracy\","
                  "\"value\":0.5,\"unit\":\"u2\"},{\"decision_id\":\"%s\","
                  "\"metric\":\"thumbs_up\",\"value\":false,\"unit\":null}]",
                  body, id2, id2);
    assert_int_equal(feedback_status(e, B, s, 3), 200);
    free(s);
  }
  /* A's bucket refills at one item a second (bounded wait). */
  for (i = 0; i < 40; i++) {
    if (feedback_status(e, A, body, 1) == 200)
      break;
    mg_h_sleep_ms(100);
  }
  assert_true(i < 40);

  /* What reached the log: only what was accepted, with its client. */
  lines = wait_feedback(e, 5);
  mg_h_sleep_ms(100);
  cJSON_Delete(lines);
  lines = log_feedback(e);
  assert_int_equal(cJSON_GetArraySize(lines), 5);
  assert_string_equal(str_at(lines, "0.feedback.decision_id"), unknown);
  assert_string_equal(str_at(lines, "0.feedback.client"), "a");
  assert_true(num_at(lines, "0.feedback.value") == 0.25);
  assert_string_equal(str_at(lines, "1.feedback.client"), "b");
  assert_string_equal(str_at(lines, "1.feedback.decision_id"), id);
  assert_string_equal(str_at(lines, "2.feedback.unit"), "u2");
  assert_true(cJSON_IsFalse(at(lines, "3.feedback.value")));
  assert_true(cJSON_IsNull(at(lines, "3.feedback.unit")));
  assert_string_equal(str_at(lines, "4.feedback.client"), "a");
  cJSON_Delete(lines);

  m = metrics(e->gate.port);
  assert_true(metric_in(m, "modelgate_feedback_items_total{metric=\"-\","
                           "outcome=\"rate_limited\"}") >= 1);
  assert_true(metric_in(m, "modelgate_feedback_items_total{metric=\"-\","
                           "outcome=\"too_large\"}") == 1);
  assert_true(metric_in(m, "modelgate_feedback_items_total{metric=\"-\","
                           "outcome=\"invalid\"}") >= 6);
  free(m);
  free(body);
  assert_int_equal(ask_as(e, "gpt-fb", "u3", "", A, id, var, NULL), 200);
}

/* ---- min_confidence at run time ------------------------------------------- */

#define CONF_CFG                                                               \
  "{'admin':{'listen':'127.0.0.1:0','state_file':'@DIR/state.json'},"         \
  "'server':{'listen':'127.0.0.1:0','shutdown_grace_ms':2000},"                \
  "'decision_log':{'path':'@DIR/decisions.jsonl','flush_ms':20},"              \
  "'targets':{'main':{'base_url':'@MOCK','model':'m-main',"                    \
  "'confidence':{'min':0.5,'source':'logprobs_mean'},"                         \
  "'fallbacks':['backup']},"                                                   \
  "'backup':{'base_url':'@MOCK','model':'m-backup'}},"                         \
  "'aliases':{'gpt-conf':{'target':'main'}}}"

/* Who served an answer, and why it fell back ("" when it did not). */
static void served(struct tenv *e, char *by, char *why) {
  struct mg_h_resp r;
  assert_int_equal(ask_as(e, "gpt-conf", "u", "", NULL, NULL, NULL, &r), 200);
  if (!mg_h_header(&r, "x-modelgate-served-by", by, 64))
    fail_msg("no x-modelgate-served-by: %s", r.head);
  if (!mg_h_header(&r, "x-modelgate-fallback", why, 64))
    why[0] = '\0';
  mg_h_resp_free(&r);
}

static void test_min_confidence_admin(void **state) {
  struct tenv *e = *state;
  struct mg_h_resp r;
  char by[64], why[64], st_path[400], *saved;
  cJSON *st, *evs;
  const cJSON *ev;

  start_cfg(e, CONF_CFG);
  /* Answers of confidence 0.8 pass the file's 0.5. */
  mock_behave(e, "{'model':'m-main','confidence':0.8}");
  served(e, by, why);
  assert_string_equal(by, "main");
  assert_string_equal(why, "");
  st = admin_state(e);
  assert_true(num_at(st, "targets.main.min_confidence") == 0.5);
  assert_true(num_at(st, "targets.main.file_min_confidence") == 0.5);
  assert_true(cJSON_IsNull(at(st, "targets.main.min_confidence_override")));
  assert_true(cJSON_IsNull(at(st, "targets.backup.min_confidence")));
  cJSON_Delete(st);

  /* Refusals: no token, no such target, a target without a gate, out of
   * range, not a number, a wrong method. */
  assert_int_equal(mg_h_request(e->gate.admin_port, "PUT",
                                "/admin/targets/main/min_confidence", NULL,
                                "{\"min_confidence\":0.9}", &r, T_MS),
                   0);
  assert_error(&r, 401, "unauthorized");
  mg_h_resp_free(&r);
  admin(e, "PUT", "/admin/targets/nope/min_confidence",
        "{\"min_confidence\":0.9}", &r);
  assert_error(&r, 404, "unknown_target");
  mg_h_resp_free(&r);
  /* The URL matches exactly, as the flag URLs do. */
  admin(e, "PUT", "/admin/targets/main/min_confidence123",
        "{\"min_confidence\":0.9}", &r);
  assert_error(&r, 404, "unknown_url");
  mg_h_resp_free(&r);
  admin(e, "PUT", "/admin/targets/main/min_confidence/extra",
        "{\"min_confidence\":0.9}", &r);
  assert_error(&r, 404, "unknown_url");
  mg_h_resp_free(&r);
  admin(e, "PUT", "/admin/targets/backup/min_confidence",
        "{\"min_confidence\":0.9}", &r);
  assert_error(&r, 400, "invalid_min_confidence");
  mg_h_resp_free(&r);
  admin(e, "PUT", "/admin/targets/main/min_confidence",
        "{\"min_confidence\":1.5}", &r);
  assert_error(&r, 400, "invalid_min_confidence");
  mg_h_resp_free(&r);
  admin(e, "PUT", "/admin/targets/main/min_confidence",
        "{\"min_confidence\":\"high\"}", &r);
  assert_error(&r, 400, "invalid_min_confidence");
  mg_h_resp_free(&r);
  admin(e, "POST", "/admin/targets/main/min_confidence",
        "{\"min_confidence\":0.9}", &r);
  assert_error(&r, 405, "method_not_allowed");
  mg_h_resp_free(&r);
  served(e, by, why);
  assert_string_equal(by, "main");

  /* A PM raises the threshold: the same answers now fall back. */
  admin(e, "PUT", "/admin/targets/main/min_confidence",
        "{\"min_confidence\":0.9,\"by\":\"pm-alice\","
        "\"reason\":\"too many wrong answers\"}",
        &r);
  if (r.status != 200)
    fail_msg("PUT min_confidence: %d %s", r.status, r.body);
  st = json_body(&r);
  mg_h_resp_free(&r);
  assert_true(num_at(st, "targets.main.min_confidence") == 0.9);
  assert_true(num_at(st, "targets.main.file_min_confidence") == 0.5);
  assert_true(num_at(st, "targets.main.min_confidence_override.value") == 0.9);
  assert_string_equal(str_at(st, "targets.main.min_confidence_override.by"),
                      "pm-alice");
  assert_true(
      cJSON_IsTrue(at(st, "targets.main.min_confidence_override.applied")));
  cJSON_Delete(st);
  served(e, by, why);
  assert_string_equal(by, "backup");
  assert_string_equal(why, "low_confidence");

  /* Logged as an event with who asked and why. */
  evs = wait_events(e, "min_confidence", 1, 5000 * SLOW);
  ev = cJSON_GetArrayItem(evs, 0);
  assert_string_equal(str_at(ev, "target"), "main");
  assert_string_equal(str_at(ev, "by"), "pm-alice");
  assert_string_equal(str_at(ev, "reason"), "too many wrong answers");
  assert_true(num_at(ev, "min_confidence") == 0.9);
  assert_true(num_at(ev, "previous") == 0.5);
  cJSON_Delete(evs);

  /* Persisted: in the state file, and in force after a restart. */
  state_path(e, st_path, sizeof(st_path));
  saved = mg_h_read_file(st_path, NULL);
  assert_non_null(saved);
  assert_non_null(strstr(saved, "\"min_confidence\""));
  free(saved);
  gate_down(&e->gate);
  gate_run(e);
  st = admin_state(e);
  assert_true(num_at(st, "targets.main.min_confidence") == 0.9);
  assert_string_equal(str_at(st, "targets.main.min_confidence_override.by"),
                      "pm-alice");
  cJSON_Delete(st);
  served(e, by, why);
  assert_string_equal(by, "backup");
  /* Lowering it below the answers' confidence serves them again. */
  admin(e, "PUT", "/admin/targets/main/min_confidence",
        "{\"min_confidence\":0.7}", &r);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  served(e, by, why);
  assert_string_equal(by, "main");
  mock_behave(e, "{'model':'m-main','confidence':0.6}");
  served(e, by, why);
  assert_string_equal(by, "backup");

  /* Cleared: the file's 0.5 again, logged. */
  admin(e, "DELETE", "/admin/targets/main/min_confidence", NULL, &r);
  assert_int_equal(r.status, 200);
  st = json_body(&r);
  mg_h_resp_free(&r);
  assert_true(num_at(st, "targets.main.min_confidence") == 0.5);
  assert_true(cJSON_IsNull(at(st, "targets.main.min_confidence_override")));
  cJSON_Delete(st);
  served(e, by, why);
  assert_string_equal(by, "main");
  evs = wait_events(e, "min_confidence_cleared", 1, 5000 * SLOW);
  assert_string_equal(str_at(cJSON_GetArrayItem(evs, 0), "by"), "admin");
  cJSON_Delete(evs);
}

/* ---- a complaint-rate guard fed through /v1/feedback ---------------------- */

#define GUARD_CFG                                                              \
  "{'admin':{'listen':'127.0.0.1:0','state_file':'@DIR/state.json'},"         \
  "'server':{'listen':'127.0.0.1:0','log_level':'info',"                       \
  "'shutdown_grace_ms':2000},"                                                 \
  "'decision_log':{'path':'@DIR/decisions.jsonl','flush_ms':20},"              \
  "'feedback':{'metrics':{'complaint':{'type':'boolean',"                      \
  "'higher_is_better':false}},"                                                \
  "'rate_per_client':{'per_second':100000,'burst':100000}},"                   \
  "'targets':{'old':{'base_url':'@MOCK','model':'m-old',"                      \
  "'breaker':{'enabled':false}},"                                              \
  "'new':{'base_url':'@MOCK','model':'m-new','fallbacks':['old'],"             \
  "'breaker':{'enabled':false}}},"                                             \
  "'flags':{'chat':{'off_variant':'old','variants':{"                          \
  "'old':{'target':'old'},'new':{'target':'new'}},"                            \
  "'ramp':{'variant':'new','interval_ms':100,'steps':["                        \
  "{'weight':50,'hold_ms':600000},{'weight':100}]},"                           \
  "'guards':{'window_ms':60000,'min_requests':20,'consecutive':1,"             \
  "'alpha':0.05,'feedback':{'complaint':{'max_ratio':3}}}}},"                  \
  "'aliases':{'" ALIAS "':{'flag':'chat'}}}"

static void test_complaint_guard_rollback(void **state) {
  struct tenv *e = *state;
  cJSON *st = NULL, *evs;
  const cJSON *ev;
  char id[33], var[64], user[32];
  double deadline;
  long asked = 0, bad = 0, nnew = 0, nold = 0, after_new = 0;
  int round, i;
  bool rolled = false;

  start_cfg(e, GUARD_CFG);
  /* Rounds of 40 users, then their feedback: the treatment draws a
   * complaint from 60% of its answers, the control from 10%. The models
   * themselves are healthy: only feedback tells them apart. */
  deadline = mg_h_now_ms() + 60000 * SLOW;
  for (round = 0; round < 60 && !rolled && mg_h_now_ms() < deadline;
       round++) {
    cJSON *batch = cJSON_CreateArray();
    char *text;
    for (i = 0; i < 40; i++) {
      long u = round * 40 + i;
      bool isnew, complaint;
      snprintf(user, sizeof(user), "user-%ld", u);
      asked++;
      if (ask_as(e, ALIAS, user, "", NULL, id, var, NULL) != 200) {
        bad++;
        continue;
      }
      isnew = strcmp(var, "new") == 0;
      nnew += isnew;
      nold += !isnew;
      complaint = isnew ? u % 5 < 3 : u % 10 == 0;
      {
        cJSON *it = cJSON_CreateObject();
        cJSON_AddStringToObject(it, "decision_id", id);
        cJSON_AddStringToObject(it, "metric", "complaint");
        cJSON_AddBoolToObject(it, "value", complaint);
        cJSON_AddStringToObject(it, "unit", user);
        cJSON_AddItemToArray(batch, it);
      }
    }
    text = cJSON_PrintUnformatted(batch);
    assert_int_equal(
        feedback_status(e, NULL, text, cJSON_GetArraySize(batch)), 200);
    free(text);
    cJSON_Delete(batch);
    /* The ramp looks every 100 ms. */
    mg_h_sleep_ms(150);
    st = admin_state(e);
    rolled = strcmp(str_at(ramp_in(st), "status"), "rolled_back") == 0;
    if (!rolled) {
      cJSON_Delete(st);
      st = NULL;
    }
  }
  fprintf(stderr,
          "complaint guard: %ld requests (%ld new, %ld old) in %d rounds, "
          "rolled back: %s\n",
          asked, nnew, nold, round, rolled ? "yes" : "no");
  if (!rolled) {
    st = admin_state(e);
    fail_msg("no rollback: %s", cJSON_PrintUnformatted(ramp_in(st)));
  }
  assert_int_equal(bad, 0);
  assert_string_equal(str_at(ramp_in(st), "rollback.guard"),
                      "feedback.complaint.max_ratio");
  assert_true(weight_in(st, "new") == 0 && weight_in(st, "old") == 100);
  cJSON_Delete(st);
  evs = wait_events(e, "rollback", 1, 5000 * SLOW);
  ev = cJSON_GetArrayItem(evs, 0);
  assert_string_equal(str_at(ev, "guard"), "feedback.complaint.max_ratio");
  assert_string_equal(str_at(ev, "flag"), "chat");
  cJSON_Delete(evs);

  /* After it, nobody gets the treatment, and nobody sees an error. */
  for (i = 0; i < 50; i++) {
    snprintf(user, sizeof(user), "after-%d", i);
    assert_int_equal(ask_as(e, ALIAS, user, "", NULL, id, var, NULL), 200);
    after_new += strcmp(var, "new") == 0;
  }
  assert_int_equal(after_new, 0);
}

/* ---- a full disk never blocks feedback ------------------------------------ */

/* The decision log on /dev/full: every write fails. Feedback is still
 * answered at once, and the lost lines are counted. */
static void test_feedback_log_full(void **state) {
  struct tenv *e = *state;
  char id[33], var[64], *body, *m;
  double t0, dropped = -1, deadline;
  int i;

  start_cfg(e, "{'admin':{'listen':'127.0.0.1:0',"
               "'state_file':'@DIR/state.json'},"
               "'server':{'listen':'127.0.0.1:0','shutdown_grace_ms':2000},"
               "'decision_log':{'path':'/dev/full','flush_ms':5},"
               "'feedback':{'metrics':{'thumbs_up':{'type':'boolean'}}},"
               "'targets':{'main':{'base_url':'@MOCK','model':'m-main'}},"
               "'aliases':{'gpt-fb':{'target':'main'}}}");
  assert_int_equal(ask_as(e, "gpt-fb", "u1", "", NULL, id, var, NULL), 200);
  body = fmt("{\"decision_id\":\"%s\",\"metric\":\"thumbs_up\","
             "\"value\":true}",
             id);
  t0 = mg_h_now_ms();
  for (i = 0; i < 20; i++)
    assert_int_equal(feedback_status(e, NULL, body, 1), 200);
  /* Twenty answers well within a second each: nothing waited on the disk. */
  assert_true(mg_h_now_ms() - t0 < 20 * 1000.0 * SLOW);
  free(body);
  deadline = mg_h_now_ms() + 5000 * SLOW;
  while (mg_h_now_ms() < deadline) {
    m = metrics(e->gate.port);
    dropped = metric_in(m, "modelgate_decision_log_dropped_total");
    free(m);
    if (dropped >= 21) /* the record and the twenty feedback lines */
      break;
    mg_h_sleep_ms(20);
  }
  if (dropped < 21)
    fail_msg("want >= 21 dropped decision-log lines, got %g", dropped);
  assert_int_equal(ask_as(e, "gpt-fb", "u2", "", NULL, id, var, NULL), 200);
}

/* ---- a cost guard ---------------------------------------------------------- */

/* The treatment's price is three times the control's; max_cost_ratio 1.10
 * rolls it back, from the answers' usage alone, with no client error. */
static void test_cost_guard_rollback(void **state) {
  struct tenv *e = *state;
  cJSON *st = NULL;
  char id[33], var[64], user[32];
  double deadline;
  long asked = 0, bad = 0, after_new = 0;
  bool rolled = false;
  int i;

  start_cfg(e,
            "{'admin':{'listen':'127.0.0.1:0','state_file':'@DIR/state.json'},"
            "'server':{'listen':'127.0.0.1:0','log_level':'info',"
            "'shutdown_grace_ms':2000},"
            "'decision_log':{'path':'@DIR/decisions.jsonl','flush_ms':20},"
            "'targets':{'old':{'base_url':'@MOCK','model':'m-old',"
            "'price':{'input':1,'output':2},'breaker':{'enabled':false}},"
            "'new':{'base_url':'@MOCK','model':'m-new','fallbacks':['old'],"
            "'price':{'input':3,'output':6},'breaker':{'enabled':false}}},"
            "'flags':{'chat':{'off_variant':'old','variants':{"
            "'old':{'target':'old'},'new':{'target':'new'}},"
            "'ramp':{'variant':'new','interval_ms':100,'steps':["
            "{'weight':50,'hold_ms':600000},{'weight':100}]},"
            "'guards':{'window_ms':60000,'min_requests':20,'consecutive':1,"
            "'alpha':0.05,'max_cost_ratio':1.10}}},"
            "'aliases':{'" ALIAS "':{'flag':'chat'}}}");
  deadline = mg_h_now_ms() + 60000 * SLOW;
  while (!rolled && asked < 4000 && mg_h_now_ms() < deadline) {
    for (i = 0; i < 40; i++, asked++) {
      /* Prompts of different lengths: costs vary within each arm. */
      snprintf(user, sizeof(user), "user-%ld%.*s", asked, (int)(asked % 7),
               "xxxxxxx");
      if (ask_as(e, ALIAS, user, "", NULL, id, var, NULL) != 200)
        bad++;
    }
    mg_h_sleep_ms(150);
    st = admin_state(e);
    rolled = strcmp(str_at(ramp_in(st), "status"), "rolled_back") == 0;
    if (!rolled) {
      cJSON_Delete(st);
      st = NULL;
    }
  }
  fprintf(stderr, "cost guard: %ld requests, rolled back: %s\n", asked,
          rolled ? "yes" : "no");
  if (!rolled) {
    st = admin_state(e);
    fail_msg("no rollback: %s", cJSON_PrintUnformatted(ramp_in(st)));
  }
  assert_int_equal(bad, 0);
  assert_string_equal(str_at(ramp_in(st), "rollback.guard"),
                      "max_cost_ratio");
  assert_true(weight_in(st, "new") == 0);
  cJSON_Delete(st);
  for (i = 0; i < 30; i++) {
    snprintf(user, sizeof(user), "after-%d", i);
    assert_int_equal(ask_as(e, ALIAS, user, "", NULL, id, var, NULL), 200);
    after_new += strcmp(var, "new") == 0;
  }
  assert_int_equal(after_new, 0);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, tenv_setup, tenv_teardown)
  const struct CMUnitTest tests[] = {
      T(test_thumbs_up_end_to_end),
      T(test_batch_validation_limits),
      T(test_min_confidence_admin),
      T(test_complaint_guard_rollback),
      T(test_feedback_log_full),
      T(test_cost_guard_rollback),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
