/* test_flags.h - helpers shared by the flag and admin suites
 * (test_flags.c, test_admin.c): configs written with single quotes and
 * placeholders, a modelgate with an admin token, chat requests whose
 * decision headers and serving model are read back, the admin API, the
 * bucketing formula of the README computed independently (XXH3 from
 * libxxhash, not modelgate's code), and /metrics series by label.
 *
 * The mock answers with the upstream model's name ("model":"m-a"), so a
 * test sees which target really served a request, not only what the
 * headers claim.
 *
 * Include after common.h. Functions are static and marked unused. */
#ifndef MG_TEST_FLAGS_H
#define MG_TEST_FLAGS_H

#include <math.h>
#include <sys/stat.h>
#include <xxhash.h>

/* Timing bounds scale with the build: the ASan + UBSan Debug build runs
 * everything several times slower, and the machine may be busy. */
#ifdef MG_SANITIZE
#define SLOW 4
#else
#define SLOW 1
#endif

#define TOKEN "flags-admin-token-Vb81qZ"
#define AUTH "Authorization: Bearer " TOKEN "\r\n"

#define PAST_START "2019-01-01T00:00:00Z"
#define PAST_END "2020-01-01T00:00:00Z"
#define FUTURE "2099-01-01T00:00:00Z"

/* ---- configs ---------------------------------------------------------------
 */

/* Write the config (single quotes, placeholders) to e->config. */
U void write_cfg(struct tenv *e, const char *tmpl) {
  char *c = q(e, tmpl);
  assert_int_equal(mg_h_write_file(e->config, c), 0);
  free(c);
}

/* Start a modelgate on e->config (as it is) into p, with the admin token in
 * MODELGATE_ADMIN_TOKEN. */
U void gate_run_into(struct tenv *e, struct mg_h_proc *p) {
  const char *env[] = {"MODELGATE_ADMIN_TOKEN=" TOKEN, NULL};
  if (mg_h_start_gate(p, e->config, env) != 0) {
    char *cfg = mg_h_read_file(e->config, NULL);
    fail_msg("modelgate did not start on %s", cfg ? cfg : "?");
  }
}

/* Write the config and start e->gate on it. */
U void gate_up(struct tenv *e, const char *tmpl) {
  write_cfg(e, tmpl);
  gate_run_into(e, &e->gate);
  assert_true(e->gate.admin_port > 0);
}

/* ---- answers ----------------------------------------------------------------
 */

/* What the client saw of one answer. Strings are "" when absent
 * (has_* tell). */
struct ans {
  int status;
  bool complete;
  bool has_decision, has_flag, has_variant, has_reason;
  char decision[64], flag[64], variant[64], reason[64], served[64];
  char model[64]; /* "model" of a JSON answer (or of the first event) */
  char head[2048];
  char body[2048]; /* the start of the body, for messages */
  double ms;
};

U void ans_fill(struct ans *a, const struct mg_h_resp *r, int rc) {
  memset(a, 0, sizeof(*a));
  a->status = r->status;
  a->complete = rc == 0 && r->complete;
  a->ms = r->ms;
  snprintf(a->head, sizeof(a->head), "%s", r->head ? r->head : "");
  snprintf(a->body, sizeof(a->body), "%s", r->body ? r->body : "");
  a->has_decision = mg_h_header(r, "x-modelgate-decision", a->decision,
                                sizeof(a->decision)) != NULL;
  a->has_flag =
      mg_h_header(r, "x-modelgate-flag", a->flag, sizeof(a->flag)) != NULL;
  a->has_variant = mg_h_header(r, "x-modelgate-variant", a->variant,
                               sizeof(a->variant)) != NULL;
  a->has_reason = mg_h_header(r, "x-modelgate-reason", a->reason,
                              sizeof(a->reason)) != NULL;
  mg_h_header(r, "x-modelgate-served-by", a->served, sizeof(a->served));
  if (r->body && r->body[0] == '{') {
    mg_h_json_str(r->body, "/model", a->model, sizeof(a->model));
  } else if (r->body && strncmp(r->body, "data: ", 6) == 0) {
    /* A stream: the model of the first event. */
    const char *end = strstr(r->body, "\n\n");
    if (end) {
      char *ev = strndup(r->body + 6, (size_t)(end - r->body - 6));
      mg_h_json_str(ev, "/model", a->model, sizeof(a->model));
      free(ev);
    }
  }
}

/* A client on one keep-alive connection (reconnects when it was closed). */
struct cli {
  int port;
  int fd;
};

U void cli_init(struct cli *c, int port) {
  c->port = port;
  c->fd = -1;
}

U void cli_close(struct cli *c) {
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
}

/* POST body to /v1/chat/completions on the client's connection; headers:
 * more header lines ("Name: v\r\n...") or NULL. */
U void cli_post(struct cli *c, const char *headers, const char *body,
                struct ans *a) {
  struct mg_h_resp r;
  char *req;
  int rc;
  if (c->fd < 0)
    c->fd = mg_h_connect(c->port);
  if (c->fd < 0)
    fail_msg("cannot connect to port %d", c->port);
  req = fmt("POST /v1/chat/completions HTTP/1.1\r\nHost: modelgate\r\n"
            "Content-Type: application/json\r\n%sContent-Length: %zu\r\n\r\n"
            "%s",
            headers ? headers : "", strlen(body), body);
  rc = mg_h_sends(c->fd, req);
  free(req);
  if (rc != 0)
    fail_msg("could not send to modelgate: %s", body);
  rc = mg_h_read_response(c->fd, &r, T_MS * SLOW);
  ans_fill(a, &r, rc);
  if (rc != 0 || r.closed)
    cli_close(c);
  mg_h_resp_free(&r);
}

/* One chat request on a new connection. */
U void ask(int port, const char *headers, const char *body, struct ans *a) {
  struct mg_h_resp r;
  int rc = mg_h_request(port, "POST", "/v1/chat/completions", headers, body, &r,
                        T_MS * SLOW);
  ans_fill(a, &r, rc);
  mg_h_resp_free(&r);
}

/* A chat body for model, user (NULL: none) and one message; extra: more
 * members beginning with a comma, or "". */
U char *body_for(const char *model, const char *user, const char *text,
                 const char *extra) {
  if (user)
    return fmt("{\"model\":\"%s\",\"user\":\"%s\",\"messages\":[{\"role\":"
               "\"user\",\"content\":\"%s\"}]%s}",
               model, user, text, extra);
  return fmt("{\"model\":\"%s\",\"messages\":[{\"role\":\"user\","
             "\"content\":\"%s\"}]%s}",
             model, text, extra);
}

/* The answer is a complete 200 with these decision headers, served by
 * target (x-modelgate-served-by) whose upstream model is `model` (what the
 * mock's answer names). what: a description for failure messages. */
U void expect_ans(const struct ans *a, const char *what, const char *flag,
                  const char *variant, const char *reason, const char *target,
                  const char *model) {
  if (!a->complete || a->status != 200)
    fail_msg("%s: want a complete 200, got %d: %s", what, a->status, a->body);
  if (!a->has_decision || strlen(a->decision) != 32)
    fail_msg("%s: no decision id: %s", what, a->head);
  if (strcmp(a->flag, flag) != 0 || strcmp(a->variant, variant) != 0 ||
      strcmp(a->reason, reason) != 0)
    fail_msg("%s: want flag %s variant %s reason %s, got %s / %s / %s", what,
             flag, variant, reason, a->flag, a->variant, a->reason);
  if (target && strcmp(a->served, target) != 0)
    fail_msg("%s: want served by %s, got \"%s\"", what, target, a->served);
  if (model && strcmp(a->model, model) != 0)
    fail_msg("%s: the answer comes from model \"%s\", want %s: %s", what,
             a->model, model, a->body);
}

/* ---- the admin API
 * -----------------------------------------------------------
 */

/* An admin call with the token; fails the test when nothing answers. */
U void adm(struct tenv *e, const char *method, const char *path,
           const char *body, struct mg_h_resp *r) {
  if (mg_h_request(e->gate.admin_port, method, path, AUTH, body, r,
                   T_MS * SLOW) != 0)
    fail_msg("no answer from the admin API to %s %s", method, path);
}

/* An admin call that must answer `want`; returns the parsed body (caller
 * deletes), or NULL when the body is not JSON. */
U cJSON *adm_want(struct tenv *e, const char *method, const char *path,
                  const char *body, int want) {
  struct mg_h_resp r;
  cJSON *j;
  adm(e, method, path, body, &r);
  if (r.status != want)
    fail_msg("%s %s %s: want %d, got %d: %s", method, path, body ? body : "",
             want, r.status, r.body);
  j = cJSON_Parse(r.body);
  mg_h_resp_free(&r);
  return j;
}

U cJSON *admin_state_of(int admin_port) {
  struct mg_h_resp r;
  cJSON *st;
  if (mg_h_request(admin_port, "GET", "/admin/state", AUTH, NULL, &r,
                   T_MS * SLOW) != 0 ||
      r.status != 200)
    fail_msg("GET /admin/state: %d %s", r.status, r.body ? r.body : "");
  st = json_body(&r);
  mg_h_resp_free(&r);
  return st;
}

U cJSON *state_now(struct tenv *e) {
  return admin_state_of(e->gate.admin_port);
}

U double num_of(const cJSON *v, const char *path) {
  const cJSON *n = at(v, path);
  if (!cJSON_IsNumber(n)) {
    char *s = cJSON_PrintUnformatted(v);
    fail_msg("%s is not a number in %s", path, s ? s : "?");
  }
  return n->valuedouble;
}

U bool bool_of(const cJSON *v, const char *path) {
  const cJSON *b = at(v, path);
  if (!cJSON_IsBool(b)) {
    char *s = cJSON_PrintUnformatted(v);
    fail_msg("%s is not a boolean in %s", path, s ? s : "?");
  }
  return cJSON_IsTrue(b);
}

/* config.hash of the running snapshot. */
U void hash_now(struct tenv *e, char out[32]) {
  cJSON *st = state_now(e);
  snprintf(out, 32, "%s", str_at(st, "config.hash"));
  cJSON_Delete(st);
}

/* ---- bucketing, computed from the README's formula
 * -----------------------------
 */

/* bucket = XXH3_64(salt, 0x1F, unit) mod 10000 */
U unsigned bucket_of(const char *salt, const char *unit) {
  size_t sl = strlen(salt), ul = strlen(unit);
  char *buf = malloc(sl + ul + 1);
  unsigned b;
  assert_non_null(buf);
  memcpy(buf, salt, sl);
  buf[sl] = 0x1f;
  memcpy(buf + sl + 1, unit, ul);
  b = (unsigned)(XXH3_64bits(buf, sl + ul + 1) % 10000);
  free(buf);
  return b;
}

/* The variant a bucket falls in, from the layout the README describes: the
 * control (off_variant) in the middle of [0, 10000); the other variants, in
 * config order, from the ends inwards: the first from 0 up, the second from
 * 10000 down, the third up after the first... names/weights: every variant
 * in config order (weights in percent); off: the control's index. */
U const char *variant_of_bucket(unsigned bucket, const char *const *names,
                                const double *weights, int n, int off) {
  unsigned lo = 0, hi = 10000;
  int i, k = 0;
  for (i = 0; i < n; i++) {
    unsigned w = (unsigned)llround(weights[i] * 100);
    if (i == off)
      continue;
    if (k++ % 2 == 0) {
      if (bucket >= lo && bucket < lo + w)
        return names[i];
      lo += w;
    } else {
      if (bucket >= hi - w && bucket < hi)
        return names[i];
      hi -= w;
    }
  }
  return names[off];
}

/* ---- /metrics by labels
 * ------------------------------------------------------
 */

/* The value of family{labels}; -1 when absent. labels as rendered:
 * flag="x",variant="y". */
U double mval(const char *text, const char *family, const char *labels) {
  char *series = fmt("%s{%s}", family, labels);
  double d = metric_in(text, series);
  free(series);
  return d;
}

U double mnow(struct tenv *e, const char *family, const char *labels) {
  char *m = metrics(e->gate.port);
  double d = mval(m, family, labels);
  free(m);
  return d;
}

/* Wait until the reloads counter of `result` reaches want. */
U void wait_reloads(struct tenv *e, const char *result, double want) {
  char *series = fmt("modelgate_config_reloads_total{result=\"%s\"}", result);
  double d = metric_wait(e->gate.port, series, want, 5000 * SLOW);
  if (d != want)
    fail_msg("%s is %g, want %g", series, d, want);
  free(series);
}

/* ---- files
 * ----------------------------------------------------------------------
 */

U cJSON *read_json_file(const char *path) {
  size_t len;
  char *s = mg_h_read_file(path, &len);
  cJSON *j;
  if (s == NULL)
    return NULL;
  j = cJSON_ParseWithLength(s, len);
  free(s);
  return j;
}

#endif
