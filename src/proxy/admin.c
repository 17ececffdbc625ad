/* admin.c - the admin API. Handlers are synchronous: each reads or changes
 * the server's runtime state and answers at once. */
#include "proxy/admin.h"

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
#include "proxy/conn.h"
#include "proxy/server.h"
#include "routing/override.h"

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

static void reply(struct mg_conn *c, int status, cJSON *body) {
  char *text = cJSON_PrintUnformatted(body);
  if (text == NULL) {
    mg_conn_respond_error(c, 500, "Out of memory.", "internal_error", NULL,
                          NULL);
  } else {
    mg_conn_respond(c, status, "application/json", NULL, text, strlen(text));
    free(text);
  }
  cJSON_Delete(body);
}

static void fail(struct mg_conn *c, int status, const char *msg,
                 const char *code) {
  mg_conn_respond_error(c, status, msg, code, NULL, NULL);
}

/* 405 names the methods the URL takes (RFC 9110, 15.5.6). */
static void fail_method(struct mg_conn *c, const char *allow,
                        const char *msg) {
  char extra[64];
  snprintf(extra, sizeof(extra), "allow: %s\r\n", allow);
  mg_conn_respond_error(c, 405, msg, "method_not_allowed", NULL, extra);
}

/* ---- state ------------------------------------------------------------------ */

static cJSON *weights_json(const struct mg_flag *f, const uint32_t *w) {
  cJSON *o = cJSON_CreateObject();
  uint32_t i;
  for (i = 0; o && i < f->nvariants; i++)
    cJSON_AddNumberToObject(o, f->variants[i].name, w[i] / 100.0);
  return o;
}

static cJSON *state_json(struct mg_server *s) {
  const struct mg_config *cfg = s->cfg;
  cJSON *root = cJSON_CreateObject(), *conf, *flags, *ov = NULL;
  char ts[32];
  size_t i;

  conf = cJSON_AddObjectToObject(root, "config");
  cJSON_AddStringToObject(conf, "hash", cfg->hash);
  cJSON_AddStringToObject(conf, "source", cfg->source);
  mg_rfc3339_format(s->config_loaded_ms, ts);
  cJSON_AddStringToObject(conf, "loaded", ts);
  cJSON_AddNumberToObject(conf, "reloads", (double)s->reloads);
  cJSON_AddBoolToObject(root, "mutations", s->admin_token != NULL);
  flags = cJSON_AddObjectToObject(root, "flags");
  for (i = 0; i < cfg->flags.n; i++) {
    const struct mg_flag *f = &cfg->flags.v[i];
    const struct mg_flag_state *st = &s->flag_states[i];
    const struct mg_override *x = mg_overrides_find(&s->overrides, f->name);
    cJSON *o = cJSON_AddObjectToObject(flags, f->name), *vs;
    uint32_t j;

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
      uint32_t w[MG_FLAG_MAX_VARIANTS];
      for (j = 0; j < f->nvariants; j++)
        w[j] = f->variants[j].weight;
      cJSON_AddItemToObject(o, "file_weights", weights_json(f, w));
    } else {
      cJSON_AddNullToObject(o, "file_weights");
    }
    cJSON_AddBoolToObject(o, "kill_override", x && x->killed);
    cJSON_AddBoolToObject(o, "weights_override", x && x->has_weights);
    cJSON_AddBoolToObject(o, "override_stale", s->flag_stale[i]);
    {
      cJSON *ramp = mg_server__ramp_json(s, f);
      if (ramp)
        cJSON_AddItemToObject(o, "ramp", ramp);
    }
    vs = cJSON_AddObjectToObject(o, "variants");
    for (j = 0; j < f->nvariants; j++) {
      cJSON *v = cJSON_AddObjectToObject(vs, f->variants[j].name);
      cJSON_AddStringToObject(v, "target", f->variants[j].target->name);
    }
  }
  if (mg_overrides_to_json(&s->overrides, &ov) == 0)
    cJSON_AddItemToObject(root, "overrides", ov);
  return root;
}

/* ---- actions ------------------------------------------------------------------ */

static const struct mg_flag *find_flag(struct mg_server *s, const char *name) {
  return mg_flags_find(&s->cfg->flags, name);
}

static void after_change(struct mg_server *s, struct mg_conn *c,
                         const char *what, const char *event,
                         const char *flag) {
  int rc = mg_server__overrides_changed(s);
  struct mg_buf *ev;
  mg_info("admin: %s %s", what, flag);
  ev = mg_server__event_begin(s, event);
  if (ev && mg_buf_puts(ev, ",\"flag\":") == 0 &&
      mg_buf_json_str(ev, flag, strlen(flag)) == 0 &&
      mg_buf_puts(ev, ",\"by\":\"admin\"") == 0) {
    const struct mg_flag *f = mg_flags_find(&s->cfg->flags, flag);
    /* The weights in force after the change. */
    if (f && s->flag_states[f->index].has_weights) {
      uint32_t i;
      int e = mg_buf_puts(ev, ",\"weights\":{");
      for (i = 0; e == 0 && i < f->nvariants; i++) {
        const char *v = f->variants[i].name;
        if (i)
          e = mg_buf_puts(ev, ",");
        if (e == 0)
          e = mg_buf_json_str(ev, v, strlen(v));
        if (e == 0)
          e = mg_buf_printf(ev, ":%.10g",
                            s->flag_states[f->index].weights[i] / 100.0);
      }
      if (e == 0)
        e = mg_buf_puts(ev, "}");
    }
    mg_server__event_end(s);
  }
  if (rc != 0) {
    char msg[256];
    /* The change is in force but not saved: say so rather than pretend. */
    snprintf(msg, sizeof(msg),
             "The change is in force but could not be saved to the state "
             "file: %s.",
             strerror(-rc));
    fail(c, 500, msg, "state_not_saved");
    return;
  }
  reply(c, 200, state_json(s));
}

static void set_weights(struct mg_server *s, struct mg_conn *c,
                        const struct mg_flag *f, const char *body,
                        size_t len) {
  cJSON *j = cJSON_ParseWithLength(body, len), *it;
  const char *names[MG_FLAG_MAX_VARIANTS];
  uint32_t w[MG_FLAG_MAX_VARIANTS], sum = 0, n = 0;
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
    int vi = mg_flag_variant_index(f, it->string);
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
    w[n] = (uint32_t)round(bp);
    sum += w[n++];
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
  if (mg_overrides_set_weights(&s->overrides, f->name, names, w, n,
                               mg_wall_ms()) != 0) {
    fail(c, 500, "Out of memory.", "internal_error");
    goto out;
  }
  after_change(s, c, "set weights of", "weights", f->name);
out:
  cJSON_Delete(j);
}

static void reload(struct mg_server *s, struct mg_conn *c) {
  struct mg_cfg_errors e;
  int rc;
  mg_cfg_errors_init(&e);
  rc = mg_server_reload(s, &e);
  if (rc == 0) {
    reply(c, 200, state_json(s));
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

/* ---- routing -------------------------------------------------------------------- */

static bool authorized(struct mg_server *s, struct mg_conn *c, bool mutation) {
  struct mg_str auth;
  if (s->admin_token == NULL) {
    if (!mutation)
      return true;
    fail(c, 403,
         "Admin changes are disabled: no admin token is configured "
         "(admin.token_env).",
         "admin_disabled");
    return false;
  }
  if (mg_conn_header(c, "authorization", &auth) &&
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
      !mg_admin_token_equal(s->admin_token, auth.p, auth.len)) {
    fail(c, 401, "A valid admin bearer token is required.", "unauthorized");
    return false;
  }
  return true;
}

void mg_admin_handle(struct mg_server *s, struct mg_conn *c) {
  const struct mg_http_req *r = &c->req;
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

  if (strcmp(path, "/admin/state") == 0) {
    if (m != HTTP_GET && m != HTTP_HEAD)
      fail_method(c, "GET, HEAD", "Use GET.");
    else if (authorized(s, c, false))
      reply(c, 200, state_json(s));
  } else if (strcmp(path, "/admin/reload") == 0) {
    if (m != HTTP_POST)
      fail_method(c, "POST", "Use POST.");
    else if (authorized(s, c, true))
      reload(s, c);
  } else if (sscanf(path, "/admin/flags/%255[^/]/ramp/%31[a-z]", flag,
                    action) == 2) {
    const struct mg_flag *f = find_flag(s, flag);
    char msg[320];
    int rc;
    if (m != HTTP_POST) {
      fail_method(c, "POST", "Use POST.");
    } else if (!authorized(s, c, true)) {
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
    } else if ((rc = mg_server__ramp_action(s, f, action, msg, sizeof(msg))) ==
               0) {
      mg_info("admin: ramp %s on flag %s", action, f->name);
      reply(c, 200, state_json(s));
    } else {
      fail(c, rc == -ENOENT ? 404 : (rc == -EINVAL ? 409 : 500), msg,
           rc == -ENOENT ? "no_ramp"
                         : (rc == -EINVAL ? "ramp_conflict" : "internal_error"));
    }
  } else if (sscanf(path, "/admin/flags/%255[^/]/%31[a-z]", flag, action) ==
             2) {
    const struct mg_flag *f = find_flag(s, flag);
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
    } else if (!authorized(s, c, true)) {
      /* answered */
    } else if (f == NULL) {
      char msg[320];
      snprintf(msg, sizeof(msg), "No flag named \"%s\".", flag);
      fail(c, 404, msg, "unknown_flag");
    } else if (kill || unkill) {
      if (mg_overrides_kill(&s->overrides, f->name, kill, mg_wall_ms()) != 0)
        fail(c, 500, "Out of memory.", "internal_error");
      else
        after_change(s, c, kill ? "killed" : "unkilled",
                     kill ? "kill" : "unkill", f->name);
    } else if (s->cfg->ramps.v[f->index].enabled) {
      /* The ramp owns the weights: two hands on one dial would fight. */
      char msg[320];
      snprintf(msg, sizeof(msg),
               "Flag %s is ramping: use /admin/flags/%s/ramp/... (promote, "
               "pause, rollback, restart).",
               f->name, f->name);
      fail(c, 409, msg, "ramp_conflict");
    } else if (m == HTTP_DELETE) {
      mg_overrides_clear_weights(&s->overrides, f->name);
      after_change(s, c, "cleared the weights of", "weights_cleared",
                   f->name);
    } else {
      set_weights(s, c, f, r->body.data ? r->body.data : "", r->body.len);
    }
  } else {
    fail(c, 404, "Unknown admin URL.", "unknown_url");
  }
  mg_conn_request_done(c);
}
