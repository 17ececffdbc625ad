/* admin.c - the admin API. Handlers are synchronous: each reads or changes
 * the runtime's state through its verbs and answers at once. They run on
 * the control loop (worker 0's), where the runtime's verbs belong. */
#include "handlers/admin.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <llhttp.h>

#include "common/log.h"
#include "common/time.h"
#include "config/config.h"
#include "handlers/dashboard.h"
#include "handlers/live.h"
#include "handlers/ops.h"
#include "server/worker.h"
#include "store/redis.h"

bool mg_admin_token_equal(const char *expected, const char *given,
                          size_t given_len) {
  size_t n = strlen(expected), i;
  unsigned char diff = (unsigned char)(n != given_len);
  /* Every byte of the expected token is looked at whatever the input, so
   * the time taken does not reveal how much of a guess was right. */
  for (i = 0; i < n; i++)
    diff |= (unsigned char)(expected[i] ^ (i < given_len ? given[i] : 0));
  return diff == 0;
}

static void reply(struct mg_resp *c, int status, cJSON *body) {
  char *text = cJSON_PrintUnformatted(body);
  if (text == NULL) {
    mg_resp_error(c, 500, "Out of memory.", "internal_error", NULL,
                          NULL);
  } else {
    mg_resp_send(c, status, "application/json", NULL, text, strlen(text));
    free(text);
  }
  cJSON_Delete(body);
}

static void fail(struct mg_resp *c, int status, const char *msg,
                 const char *code) {
  mg_resp_error(c, status, msg, code, NULL, NULL);
}

/* 405 names the methods the URL takes (RFC 9110, 15.5.6). */
static void fail_method(struct mg_resp *c, const char *allow,
                        const char *msg) {
  char extra[64];
  snprintf(extra, sizeof(extra), "allow: %s\r\n", allow);
  mg_resp_error(c, 405, msg, "method_not_allowed", NULL, extra);
}

/* ---- state ------------------------------------------------------------------ */

static cJSON *weights_json(const struct mg_flag *f, const uint32_t *w) {
  cJSON *o = cJSON_CreateObject();
  uint32_t i;
  for (i = 0; o && i < f->nvariants; i++)
    cJSON_AddNumberToObject(o, f->variants[i].name, w[i] / 100.0);
  return o;
}

static cJSON *state_json(struct mg_worker *w) {
  struct mg_runtime *rt = w->sh->rt;
  struct mg_wsnap *ws = mg_worker_snap(w);
  const struct mg_snap *sn = ws->snap;
  const struct mg_config *cfg = sn->cfg;
  cJSON *root = cJSON_CreateObject(), *conf, *flags, *ov;
  char ts[32];
  size_t i;

  conf = cJSON_AddObjectToObject(root, "config");
  cJSON_AddStringToObject(conf, "hash", cfg->hash);
  cJSON_AddStringToObject(conf, "source", cfg->source);
  mg_rfc3339_format(sn->loaded_ms, ts);
  cJSON_AddStringToObject(conf, "loaded", ts);
  cJSON_AddNumberToObject(conf, "reloads", (double)sn->reloads);
  cJSON_AddNumberToObject(root, "workers", (double)w->sh->nworkers);
  cJSON_AddBoolToObject(root, "mutations", sn->admin_token != NULL);
  flags = cJSON_AddObjectToObject(root, "flags");
  for (i = 0; i < cfg->flags.n; i++) {
    const struct mg_flag *f = &cfg->flags.v[i];
    const struct mg_flag_state *st = &sn->flag_states[i];
    cJSON *o = cJSON_AddObjectToObject(flags, f->name), *vs;
    bool kill_ov, weights_ov;
    uint32_t j;

    mg_rt_override_of(rt, f->name, &kill_ov, &weights_ov);
    cJSON_AddBoolToObject(o, "enabled", f->enabled);
    cJSON_AddBoolToObject(o, "killed", st->killed);
    cJSON_AddStringToObject(o, "off_variant", f->variants[f->off_variant].name);
    if (f->unit == MG_UNIT_ATTR) {
      char u[300];
      snprintf(u, sizeof(u), "attr:%s", f->unit_attr);
      cJSON_AddStringToObject(o, "unit", u);
    } else {
      cJSON_AddStringToObject(o, "unit", mg_unit_kind_name(f->unit));
    }
    if (st->has_weights)
      cJSON_AddItemToObject(o, "weights", weights_json(f, st->weights));
    else
      cJSON_AddNullToObject(o, "weights");
    if (f->has_weights) {
      uint32_t fw[MG_FLAG_MAX_VARIANTS];
      for (j = 0; j < f->nvariants; j++)
        fw[j] = f->variants[j].weight;
      cJSON_AddItemToObject(o, "file_weights", weights_json(f, fw));
    } else {
      cJSON_AddNullToObject(o, "file_weights");
    }
    cJSON_AddBoolToObject(o, "kill_override", kill_ov);
    cJSON_AddBoolToObject(o, "weights_override", weights_ov);
    cJSON_AddBoolToObject(o, "override_stale", sn->flag_stale[i]);
    {
      cJSON *ramp = mg_rt_ramp_json(rt, f, (int64_t)uv_now(w->loop));
      if (ramp)
        cJSON_AddItemToObject(o, "ramp", ramp);
    }
    vs = cJSON_AddObjectToObject(o, "variants");
    for (j = 0; j < f->nvariants; j++) {
      cJSON *v = cJSON_AddObjectToObject(vs, f->variants[j].name);
      cJSON_AddStringToObject(v, "target", f->variants[j].target->name);
    }
  }
  ov = mg_rt_overrides_json(rt);
  if (ov)
    cJSON_AddItemToObject(root, "overrides", ov);
  /* Each target's confidence threshold in force (issue 15.6). */
  ov = mg_rt_targets_json(rt, sn);
  if (ov)
    cJSON_AddItemToObject(root, "targets", ov);
  if (w->sh->store) {
    struct mg_buf b;
    mg_buf_init(&b, 1u << 16);
    if (mg_store_ready_json(w->sh->store, &b) == 0)
      cJSON_AddItemToObject(root, "store",
                            cJSON_ParseWithLength(b.data, b.len));
    mg_buf_free(&b);
  }
  mg_wsnap_release(ws);
  return root;
}

/* ---- actions ------------------------------------------------------------------ */

/* Who asks and why: a caller may say so in the body of a kill, an unkill,
 * a ramp action or a DELETE of weights ({"by": "...", "reason": "..."}), or
 * in the headers x-modelgate-by and x-modelgate-reason (any call, PUT
 * weights included); the body wins. Bounded, so that the event line and
 * the state file stay small (issue 10, point 4). */
#define ACTOR_BY_MAX 128
#define ACTOR_REASON_MAX 1024

struct actor_buf {
  char by[ACTOR_BY_MAX + 1];
  char reason[ACTOR_REASON_MAX + 1];
  struct mg_actor a;
};

static bool actor_set(struct mg_resp *c, char *dst, size_t max,
                      const char *what, const char *v, size_t n) {
  char msg[160];
  if (n > max) {
    snprintf(msg, sizeof(msg), "\"%s\" is longer than %zu bytes.", what, max);
    fail(c, 400, msg, "invalid_actor");
    return false;
  }
  memcpy(dst, v, n);
  dst[n] = '\0';
  return true;
}

/* Fill ab from the request; false when it is malformed (answered). */
static bool actor_of(struct mg_resp *c, bool body_says, struct actor_buf *ab) {
  const struct mg_http_req *r = mg_resp_req(c);
  struct mg_str v;
  const char *b = r->body.data;
  size_t n = r->body.len;
  bool ok = true;

  ab->by[0] = ab->reason[0] = '\0';
  if (mg_http_req_header(r, "x-modelgate-by", &v))
    ok = actor_set(c, ab->by, ACTOR_BY_MAX, "x-modelgate-by", v.p, v.len);
  if (ok && mg_http_req_header(r, "x-modelgate-reason", &v))
    ok = actor_set(c, ab->reason, ACTOR_REASON_MAX, "x-modelgate-reason", v.p,
                   v.len);
  while (body_says && n && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r' ||
                            b[0] == '\n')) {
    b++;
    n--;
  }
  if (ok && body_says && n) {
    cJSON *j = cJSON_ParseWithLength(b, n), *it;
    if (!cJSON_IsObject(j)) {
      fail(c, 400, "The body must be empty or a JSON object "
                   "{\"by\": \"...\", \"reason\": \"...\"}.",
           "invalid_actor");
      ok = false;
    }
    cJSON *members = ok ? j : (cJSON *)NULL;
    cJSON_ArrayForEach(it, members) {
      bool by = strcmp(it->string, "by") == 0,
           why = strcmp(it->string, "reason") == 0;
      char msg[320];
      if ((!by && !why) || !cJSON_IsString(it)) {
        snprintf(msg, sizeof(msg),
                 "\"%.64s\": the body takes the strings \"by\" and "
                 "\"reason\" only.",
                 it->string);
        fail(c, 400, msg, "invalid_actor");
        ok = false;
        break;
      }
      ok = by ? actor_set(c, ab->by, ACTOR_BY_MAX, "by", it->valuestring,
                          strlen(it->valuestring))
              : actor_set(c, ab->reason, ACTOR_REASON_MAX, "reason",
                          it->valuestring, strlen(it->valuestring));
      if (!ok)
        break;
    }
    cJSON_Delete(j);
  }
  ab->a.by = ab->by[0] ? ab->by : "admin";
  ab->a.reason = ab->reason[0] ? ab->reason : NULL;
  return ok;
}

/* The answer to a verb: the state after it, or why it failed. */
static void after_verb(struct mg_worker *w, struct mg_resp *c, int rc,
                       const char *msg) {
  if (rc == 0)
    reply(c, 200, state_json(w));
  else if (rc == -ENOENT)
    fail(c, 404, msg, "unknown_flag");
  else if (rc == -EIO)
    /* The change is in force but not saved: say so rather than pretend. */
    fail(c, 500, msg, "state_not_saved");
  else
    fail(c, 500, msg, "internal_error");
}

static void set_weights(struct mg_worker *w, struct mg_resp *c,
                        const struct mg_flag *f, const char *body,
                        size_t len, const struct mg_actor *actor) {
  cJSON *j = cJSON_ParseWithLength(body, len), *it;
  const char *names[MG_FLAG_MAX_VARIANTS];
  uint32_t wt[MG_FLAG_MAX_VARIANTS], sum = 0, n = 0;
  bool seen[MG_FLAG_MAX_VARIANTS] = {false};
  char msg[256];

  if (!cJSON_IsObject(j)) {
    fail(c, 400, "The body must be a JSON object of variant weights, e.g. "
                 "{\"control\": 90, \"treatment\": 10}.",
         "invalid_weights");
    goto out;
  }
  cJSON_ArrayForEach(it, j) {
    double bp = cJSON_IsNumber(it) ? it->valuedouble * 100 : -1;
    int vi;
    /* Not a variant: read by store_refuses. */
    if (strcmp(it->string, "force_local") == 0 && cJSON_IsBool(it))
      continue;
    vi = mg_flag_variant_index(f, it->string);
    if (vi < 0) {
      snprintf(msg, sizeof(msg), "Flag %s has no variant \"%s\".", f->name,
               it->string);
      fail(c, 400, msg, "unknown_variant");
      goto out;
    }
    if (seen[vi]) {
      snprintf(msg, sizeof(msg), "The weight of \"%s\" is given twice.",
               it->string);
      fail(c, 400, msg, "invalid_weights");
      goto out;
    }
    seen[vi] = true;
    if (!(bp >= 0 && bp <= 10000) || fabs(bp - round(bp)) > 1e-6 ||
        n == MG_FLAG_MAX_VARIANTS) {
      snprintf(msg, sizeof(msg),
               "The weight of \"%s\" must be a percentage with at most two "
               "decimals.",
               it->string);
      fail(c, 400, msg, "invalid_weights");
      goto out;
    }
    names[n] = it->string;
    wt[n] = (uint32_t)round(bp);
    sum += wt[n++];
  }
  if (n != f->nvariants) {
    snprintf(msg, sizeof(msg), "Give a weight for each of the %u variants.",
             f->nvariants);
    fail(c, 400, msg, "invalid_weights");
    goto out;
  }
  if (sum != 10000) {
    snprintf(msg, sizeof(msg), "The weights must sum to 100, not %.2f.",
             sum / 100.0);
    fail(c, 400, msg, "invalid_weights");
    goto out;
  }
  {
    int rc = mg_rt_set_weights(w->sh->rt, f->name, names, wt, n, actor, msg,
                               sizeof(msg));
    after_verb(w, c, rc, msg);
  }
out:
  cJSON_Delete(j);
}

/* PUT /admin/targets/<target>/min_confidence {"min_confidence": 0.8,
 * "by": "who", "reason": "why"} sets the target's confidence threshold;
 * DELETE (the same optional "by" and "reason") puts the config's back
 * (issue 15.6). */
static void set_min_confidence(struct mg_worker *w, struct mg_resp *c,
                               const char *target, bool clear,
                               const char *body, size_t len) {
  cJSON *j = len ? cJSON_ParseWithLength(body, len) : NULL;
  const cJSON *v = NULL, *by, *why;
  struct mg_actor actor = {"admin", NULL};
  char msg[320];
  int rc;

  if ((len && !cJSON_IsObject(j)) ||
      (!clear &&
       !cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(j, "min_confidence")))) {
    fail(c, 400,
         clear ? "The body, if any, must be a JSON object such as {\"by\": "
                 "\"alice\", \"reason\": \"...\"}."
               : "The body must be a JSON object such as "
                 "{\"min_confidence\": 0.8, \"by\": \"alice\", "
                 "\"reason\": \"...\"}.",
         "invalid_min_confidence");
    goto out;
  }
  by = cJSON_GetObjectItemCaseSensitive(j, "by");
  why = cJSON_GetObjectItemCaseSensitive(j, "reason");
  if (cJSON_IsString(by) && by->valuestring[0] && strlen(by->valuestring) <= 128)
    actor.by = by->valuestring;
  if (cJSON_IsString(why) && strlen(why->valuestring) <= 512)
    actor.reason = why->valuestring;
  rc = mg_rt_set_min_confidence(w->sh->rt, target, clear,
                                v ? v->valuedouble : 0, &actor, msg,
                                sizeof(msg));
  if (rc == -ENOENT)
    fail(c, 404, msg, "unknown_target");
  else if (rc == -EINVAL)
    fail(c, 400, msg, "invalid_min_confidence");
  else
    after_verb(w, c, rc, msg);
out:
  cJSON_Delete(j);
}

static void reload(struct mg_worker *w, struct mg_resp *c) {
  struct mg_cfg_errors e;
  int rc;
  mg_cfg_errors_init(&e);
  rc = w->sh->reload(w->sh->reload_arg, &e);
  if (rc == 0) {
    reply(c, 200, state_json(w));
  } else {
    cJSON *body = cJSON_CreateObject(), *err, *list;
    size_t i;
    err = cJSON_AddObjectToObject(body, "error");
    cJSON_AddStringToObject(err, "message",
                            "The new config is invalid; the old one keeps "
                            "serving.");
    cJSON_AddStringToObject(err, "type", "invalid_request_error");
    cJSON_AddNullToObject(err, "param");
    cJSON_AddStringToObject(err, "code", "invalid_config");
    list = cJSON_AddArrayToObject(err, "errors");
    for (i = 0; i < e.n; i++)
      cJSON_AddItemToArray(list, cJSON_CreateString(e.msgs[i]));
    reply(c, 422, body);
  }
  mg_cfg_errors_free(&e);
}

/* ---- the fleet's store ------------------------------------------------------------ */

/* force_local asked for: ?force_local=1 (or true) in the query, or
 * "force_local": true in a JSON body. */
static bool force_local(const struct mg_http_req *r) {
  const char *url = r->head.data ? r->head.data : "";
  const char *q = memchr(url, '?', r->url_len);
  if (q) {
    const char *end = url + r->url_len, *p = q + 1;
    while (p < end) {
      const char *amp = memchr(p, '&', (size_t)(end - p));
      size_t n = (size_t)((amp ? amp : end) - p);
      if ((n == 11 && memcmp(p, "force_local", 11) == 0) ||
          (n == 13 && memcmp(p, "force_local=1", 13) == 0) ||
          (n == 16 && memcmp(p, "force_local=true", 16) == 0))
        return true;
      p += n + 1;
    }
  }
  if (r->body.len) {
    cJSON *j = cJSON_ParseWithLength(r->body.data, r->body.len);
    bool yes = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "force_local"));
    cJSON_Delete(j);
    return yes;
  }
  return false;
}

/* With a store, a change that cannot reach the fleet is refused unless the
 * caller asks for it here only (issue 13.6): an operator must know that a
 * kill did not reach the other instances. True when answered. */
static bool store_refuses(struct mg_worker *w, struct mg_resp *c) {
  if (w->sh->store == NULL || mg_store_reachable(w->sh->store) ||
      force_local(mg_resp_req(c)))
    return false;
  fail(c, 503,
       "The fleet's store (Redis) is unreachable: this change would be in "
       "force on this instance only. Retry when it is back, or add "
       "?force_local=1 (or \"force_local\": true in the body) to change "
       "this instance only; the change is written to the store when it "
       "returns unless a newer one was made there.",
       "store_unreachable");
  return true;
}

/* ---- routing -------------------------------------------------------------------- */

static bool authorized(const char *token, struct mg_resp *c, bool mutation) {
  struct mg_str auth;
  if (token == NULL) {
    if (!mutation)
      return true;
    fail(c, 403,
         "Admin changes are disabled: no admin token is configured "
         "(admin.token_env).",
         "admin_disabled");
    return false;
  }
  if (mg_http_req_header(mg_resp_req(c), "authorization", &auth) &&
      mg_str_has_prefix_nocase(auth, "bearer ")) {
    /* "Bearer" 1*SP token (RFC 6750, 2.1; RFC 9110, 11.4) */
    auth.p += 7;
    auth.len -= 7;
    while (auth.len && auth.p[0] == ' ') {
      auth.p++;
      auth.len--;
    }
  } else {
    auth = MG_STR_NULL;
  }
  if (auth.p == NULL ||
      !mg_admin_token_equal(token, auth.p, auth.len)) {
    fail(c, 401, "A valid admin bearer token is required.", "unauthorized");
    return false;
  }
  return true;
}

/* The whole path matches the pattern (two %[...] conversions, then %n):
 * "/kill123", "/kill.json", "/kill/extra" and "/unkill/../kill" are not
 * "/kill" (issue 10, point 4). */
static bool url_is(const char *path, const char *pattern, char *a, char *b) {
  int end = -1;
  return sscanf(path, pattern, a, b, &end) == 2 && end >= 0 &&
         path[end] == '\0';
}

static void admin_handle(void *owner, struct mg_resp *c,
                         const struct mg_route *route) {
  struct mg_worker *w = owner;
  struct mg_wsnap *ws = mg_worker_snap(w);
  const char *token = ws->snap->admin_token;
  const struct mg_http_req *r = mg_resp_req(c);
  const char *url = r->head.data ? r->head.data : "";
  char path[512], flag[256], action[32];
  int m = r->method;
  size_t n = r->url_len;
  const char *q;

  q = memchr(url, '?', n);
  if (q)
    n = (size_t)(q - url);
  if (n >= sizeof(path))
    n = sizeof(path) - 1;
  memcpy(path, url, n);
  path[n] = '\0';

  if (strcmp(path, "/admin/live") == 0) {
    if (m != HTTP_GET && m != HTTP_HEAD)
      fail_method(c, "GET, HEAD", "Use GET.");
    else if (authorized(token, c, false))
      reply(c, 200, mg_live_json(w));
  } else if (strcmp(path, "/admin/state") == 0) {
    if (m != HTTP_GET && m != HTTP_HEAD)
      fail_method(c, "GET, HEAD", "Use GET.");
    else if (authorized(token, c, false))
      reply(c, 200, state_json(w));
  } else if (strcmp(path, "/admin/reload") == 0) {
    if (m != HTTP_POST)
      fail_method(c, "POST", "Use POST.");
    else if (authorized(token, c, true))
      reload(w, c);
  } else if (url_is(path, "/admin/flags/%255[^/]/ramp/%31[a-z]%n", flag,
                    action)) {
    const struct mg_flag *f = mg_flags_find(&ws->snap->cfg->flags, flag);
    struct actor_buf ab;
    char msg[320];
    int rc;
    if (m != HTTP_POST) {
      fail_method(c, "POST", "Use POST.");
    } else if (!authorized(token, c, true)) {
      /* answered */
    } else if (!actor_of(c, true, &ab)) {
      /* answered */
    } else if (f == NULL) {
      snprintf(msg, sizeof(msg), "No flag named \"%s\".", flag);
      fail(c, 404, msg, "unknown_flag");
    } else if (strcmp(action, "pause") != 0 && strcmp(action, "resume") != 0 &&
               strcmp(action, "promote") != 0 &&
               strcmp(action, "rollback") != 0 &&
               strcmp(action, "restart") != 0) {
      snprintf(msg, sizeof(msg),
               "No ramp action \"%s\": use pause, resume, promote, rollback "
               "or restart.",
               action);
      fail(c, 404, msg, "unknown_url");
    } else if (store_refuses(w, c)) {
      /* answered: the store is unreachable */
    } else if ((rc = mg_rt_ramp_action(w->sh->rt, f->name, action, &ab.a,
                                       msg, sizeof(msg))) == 0) {
      reply(c, 200, state_json(w));
    } else {
      fail(c, rc == -ENOENT ? 404 : (rc == -EINVAL ? 409 : 500), msg,
           rc == -ENOENT ? "no_ramp"
                         : (rc == -EINVAL ? "ramp_conflict"
                                          : (rc == -EIO ? "state_not_saved"
                                                        : "internal_error")));
    }
  } else if (url_is(path, "/admin/flags/%255[^/]/%31[a-z]%n", flag, action)) {
    const struct mg_flag *f = mg_flags_find(&ws->snap->cfg->flags, flag);
    struct actor_buf ab;
    bool kill = strcmp(action, "kill") == 0,
         unkill = strcmp(action, "unkill") == 0,
         weights = strcmp(action, "weights") == 0;
    if (!kill && !unkill && !weights) {
      fail(c, 404, "Unknown admin URL.", "unknown_url");
    } else if ((kill || unkill) && m != HTTP_POST) {
      fail_method(c, "POST", "Use POST.");
    } else if (weights && m != HTTP_PUT && m != HTTP_DELETE) {
      fail_method(c, "PUT, DELETE",
                  "Use PUT to set weights, DELETE to clear them.");
    } else if (!authorized(token, c, true)) {
      /* answered */
    } else if (!actor_of(c, !(weights && m == HTTP_PUT), &ab)) {
      /* answered */
    } else if (f == NULL) {
      char msg[320];
      snprintf(msg, sizeof(msg), "No flag named \"%s\".", flag);
      fail(c, 404, msg, "unknown_flag");
    } else if (store_refuses(w, c)) {
      /* answered: the store is unreachable */
    } else if (unkill && !f->enabled) {
      /* The file's "enabled": false is a kill no admin call lifts: say so
       * rather than answer 200 with the flag still off. A runtime kill on
       * top of it is removed all the same (issue 10, point 4). */
      char msg[400];
      int rc = mg_rt_kill(w->sh->rt, f->name, false, &ab.a, msg, sizeof(msg));
      if (rc == 0 || rc == -EIO)
        snprintf(msg, sizeof(msg),
                 "Flag %s is disabled in the config file (\"enabled\": "
                 "false): unkill cannot turn it on. Any runtime kill is "
                 "removed; enable the flag in the file and reload.",
                 f->name);
      fail(c, 409, msg, "flag_disabled");
    } else if (kill || unkill) {
      char msg[320];
      int rc = mg_rt_kill(w->sh->rt, f->name, kill, &ab.a, msg, sizeof(msg));
      after_verb(w, c, rc, msg);
    } else if (ws->snap->cfg->ramps.v[f->index].enabled) {
      /* The ramp owns the weights: two hands on one dial would fight. */
      char msg[320];
      snprintf(msg, sizeof(msg),
               "Flag %s is ramping: use /admin/flags/%s/ramp/... (promote, "
               "pause, rollback, restart).",
               f->name, f->name);
      fail(c, 409, msg, "ramp_conflict");
    } else if (m == HTTP_DELETE) {
      char msg[320];
      int rc = mg_rt_clear_weights(w->sh->rt, f->name, &ab.a, msg,
                                   sizeof(msg));
      after_verb(w, c, rc, msg);
    } else {
      set_weights(w, c, f, r->body.data ? r->body.data : "", r->body.len,
                  &ab.a);
    }
  } else if (url_is(path, "/admin/targets/%255[^/]/%31[a-z_]%n", flag,
                    action) &&
             strcmp(action, "min_confidence") == 0) {
    if (m != HTTP_PUT && m != HTTP_DELETE)
      fail_method(c, "PUT, DELETE",
                  "Use PUT to set min_confidence, DELETE to clear it.");
    else if (authorized(token, c, true))
      set_min_confidence(w, c, flag, m == HTTP_DELETE,
                         r->body.data ? r->body.data : "", r->body.len);
  } else {
    fail(c, 404, "Unknown admin URL.", "unknown_url");
  }
  mg_wsnap_release(ws);
  mg_resp_done(c);
  (void)route;
}

void mg_admin_route(void *owner, struct mg_http_req *req,
                    struct mg_route *out) {
  struct mg_str path = mg_http_req_path(req);
  (void)owner;
  memset(out, 0, sizeof(*out));
  /* The admin listener serves the admin API and the health and metrics
   * endpoints, never model traffic. */
  if (path.len > 7 && memcmp(path.p, "/admin/", 7) == 0) {
    out->handler = admin_handle;
    out->buffer_body = true;
    return;
  }
  if (mg_dashboard_route(path, req->method, out))
    return;
  if (mg_ops_route(path, req->method, false, out))
    return;
  out->status = 404;
  out->code = "unknown_url";
}
