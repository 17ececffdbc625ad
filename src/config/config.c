/* config.c - the loader: file -> validated snapshot. */
#include "config/config.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/str.h"
#include "decisions/decide.h"

/* Largest config file accepted; a config is a few kilobytes. */
#define MG_CONFIG_MAX_BYTES (16u << 20)

static const char *const root_keys[] = {
    "server", "limits",  "upstream", "admin",         "decision_log",
    "targets", "traditional", "cache", "flags",      "aliases",
    "default_route", "clients", "feedback", "redis", "notify", NULL};
static const char *const admin_keys[] = {"enabled", "listen", "token_env",
                                         "state_file", "max_connections",
                                         NULL};
static const char *const server_keys[] = {
    "listen",          "header_timeout_ms", "body_timeout_ms",
    "keepalive_timeout_ms", "send_timeout_ms", "shutdown_grace_ms",
    "max_connections", "log_level",         "workers", NULL};
static const char *const limit_keys[] = {
    "header_bytes",     "headers",          "url_bytes",
    "body_bytes",       "response_bytes",   "write_high_bytes",
    "write_low_bytes",  "json_tokens",      NULL};
static const char *const upstream_keys[] = {
    "max_idle_connections", "max_host_connections", "idle_connection_ms",
    "proxy", "send_decision_id", NULL};

static void parse_server(struct mg_server_cfg *s, const cJSON *obj,
                         struct mg_cfg_errors *e) {
  const char *p = "$.server";
  char *listen;

  snprintf(s->listen_host, sizeof(s->listen_host), "127.0.0.1");
  s->listen_port = 8080;
  s->header_timeout_ms = 10000;
  s->body_timeout_ms = 30000;
  s->keepalive_timeout_ms = 75000;
  s->send_timeout_ms = 60000;
  s->shutdown_grace_ms = 10000;
  s->max_connections = 10000;
  s->log_level = MG_LOG_INFO;
  s->workers = 0;
  if (obj == NULL || !mg_cfg_object(obj, p, server_keys, e))
    return;
  {
    /* "auto" (the default): one per CPU the process may use. */
    const cJSON *wk = cJSON_GetObjectItemCaseSensitive(obj, "workers");
    if (cJSON_IsString(wk) && strcmp(wk->valuestring, "auto") == 0)
      s->workers = 0;
    else if (wk && !cJSON_IsString(wk))
      s->workers = (uint32_t)mg_cfg_int(obj, "workers", p, 0, 1, 256, e);
    else if (wk)
      mg_cfg_error(e, "$.server.workers",
                   "must be \"auto\" or a number from 1 to 256, not \"%s\"",
                   wk->valuestring);
  }
  listen = mg_cfg_str(obj, "listen", p, NULL, true, e);
  if (listen && mg_cfg_parse_hostport(listen, s->listen_host,
                                      sizeof(s->listen_host),
                                      &s->listen_port)) {
    mg_cfg_error(e, "$.server.listen", "must be \"host:port\", not \"%s\"",
                 listen);
  }
  free(listen);
  s->header_timeout_ms = (uint32_t)mg_cfg_int(
      obj, "header_timeout_ms", p, s->header_timeout_ms, 100, 600000, e);
  s->body_timeout_ms = (uint32_t)mg_cfg_int(obj, "body_timeout_ms", p,
                                            s->body_timeout_ms, 100, 600000, e);
  s->keepalive_timeout_ms = (uint32_t)mg_cfg_int(
      obj, "keepalive_timeout_ms", p, s->keepalive_timeout_ms, 100, 3600000, e);
  s->send_timeout_ms = (uint32_t)mg_cfg_int(obj, "send_timeout_ms", p,
                                            s->send_timeout_ms, 100, 3600000, e);
  s->shutdown_grace_ms = (uint32_t)mg_cfg_int(
      obj, "shutdown_grace_ms", p, s->shutdown_grace_ms, 0, 3600000, e);
  s->max_connections = (uint32_t)mg_cfg_int(obj, "max_connections", p,
                                            s->max_connections, 1, 1000000, e);
  {
    char *lvl = mg_cfg_str(obj, "log_level", p, "info", true, e);
    int l = lvl ? mg_log_level_parse(lvl) : MG_LOG_INFO;
    if (l < 0)
      mg_cfg_error(e, "$.server.log_level",
                   "must be debug, info, warn or error, not \"%s\"", lvl);
    else
      s->log_level = l;
    free(lvl);
  }
}

static void parse_limits(struct mg_limits *l, const cJSON *obj,
                         struct mg_cfg_errors *e) {
  const char *p = "$.limits";
  l->header_bytes = 16384;
  l->headers = 64;
  l->url_bytes = 4096;
  l->body_bytes = 4u << 20;
  l->response_bytes = 16u << 20;
  l->write_high_bytes = 256u << 10;
  l->write_low_bytes = 64u << 10;
  l->json_tokens = 1u << 20;
  if (obj == NULL || !mg_cfg_object(obj, p, limit_keys, e))
    return;
  l->header_bytes = (uint32_t)mg_cfg_int(obj, "header_bytes", p,
                                         l->header_bytes, 1024, 1 << 20, e);
  l->headers = (uint32_t)mg_cfg_int(obj, "headers", p, l->headers, 8, 1024, e);
  l->url_bytes =
      (uint32_t)mg_cfg_int(obj, "url_bytes", p, l->url_bytes, 64, 1 << 20, e);
  l->body_bytes = (uint32_t)mg_cfg_int(obj, "body_bytes", p, l->body_bytes,
                                       1024, 1 << 30, e);
  l->response_bytes = (uint32_t)mg_cfg_int(
      obj, "response_bytes", p, l->response_bytes, 1024, 1 << 30, e);
  l->write_high_bytes = (uint32_t)mg_cfg_int(
      obj, "write_high_bytes", p, l->write_high_bytes, 1024, 1 << 30, e);
  l->write_low_bytes = (uint32_t)mg_cfg_int(
      obj, "write_low_bytes", p, l->write_low_bytes, 0, 1 << 30, e);
  l->json_tokens = (uint32_t)mg_cfg_int(obj, "json_tokens", p, l->json_tokens,
                                        64, 1 << 26, e);
  if (l->write_low_bytes >= l->write_high_bytes)
    mg_cfg_error(e, "$.limits.write_low_bytes",
                 "must be below write_high_bytes (%u)", l->write_high_bytes);
  if (l->url_bytes > l->header_bytes)
    mg_cfg_error(e, "$.limits.url_bytes", "must not exceed header_bytes (%u)",
                 l->header_bytes);
}

static void parse_upstream(struct mg_upstream_cfg *u, const cJSON *obj,
                           struct mg_cfg_errors *e) {
  const char *p = "$.upstream";
  u->max_idle_connections = 256;
  u->max_host_connections = 0;
  u->idle_connection_ms = 60000;
  u->send_decision_id = false;
  if (obj == NULL || !mg_cfg_object(obj, p, upstream_keys, e))
    return;
  u->send_decision_id =
      mg_cfg_bool(obj, "send_decision_id", p, u->send_decision_id, e);
  u->max_idle_connections = (uint32_t)mg_cfg_int(
      obj, "max_idle_connections", p, u->max_idle_connections, 1, 100000, e);
  u->max_host_connections = (uint32_t)mg_cfg_int(
      obj, "max_host_connections", p, u->max_host_connections, 0, 100000, e);
  u->idle_connection_ms = (uint32_t)mg_cfg_int(
      obj, "idle_connection_ms", p, u->idle_connection_ms, 1000, 3600000, e);
  u->proxy = mg_cfg_str(obj, "proxy", p, NULL, false, e);
  if (u->proxy && u->proxy[0] == '\0') {
    free(u->proxy);
    u->proxy = NULL;
  }
}

static void parse_admin(struct mg_admin_cfg *a, const cJSON *obj,
                        struct mg_cfg_errors *e) {
  const char *p = "$.admin";
  char *listen;
  a->enabled = true;
  snprintf(a->listen_host, sizeof(a->listen_host), "127.0.0.1");
  a->listen_port = 8081;
  a->max_connections = 64;
  if (obj != NULL && !mg_cfg_object(obj, p, admin_keys, e))
    obj = NULL;
  a->enabled = mg_cfg_bool(obj, "enabled", p, true, e);
  listen = mg_cfg_str(obj, "listen", p, NULL, true, e);
  if (listen && mg_cfg_parse_hostport(listen, a->listen_host,
                                      sizeof(a->listen_host),
                                      &a->listen_port))
    mg_cfg_error(e, "$.admin.listen", "must be \"host:port\", not \"%s\"",
                 listen);
  free(listen);
  a->token_env =
      mg_cfg_str(obj, "token_env", p, "MODELGATE_ADMIN_TOKEN", true, e);
  a->state_file =
      mg_cfg_str(obj, "state_file", p, "modelgate.state.json", true, e);
  /* Its own budget: a flood of clients on the data listener must not keep
   * operators from the kill switch (issue 10.4). */
  a->max_connections = (uint32_t)mg_cfg_int(obj, "max_connections", p,
                                            a->max_connections, 1, 100000, e);
}

/* Each flag's `decide` rule is read by `modelgate report` (issue 15.3);
 * checked here so that `modelgate check` and a reload refuse a bad one. */
static void check_decide(const cJSON *flags, const struct mg_feedback_config *fc,
                         struct mg_cfg_errors *e) {
  const cJSON *f;
  if (!cJSON_IsObject(flags))
    return;
  cJSON_ArrayForEach(f, flags) {
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(f, "decide");
    char p[MG_CFG_PATH_MAX], dp[MG_CFG_PATH_MAX];
    struct mg_decide rule;
    if (d == NULL)
      continue;
    mg_cfg_join(p, "$.flags", f->string);
    mg_cfg_join(dp, p, "decide");
    if (mg_decide_parse(d, dp, &rule, e) == -ENOMEM) {
      mg_cfg_error(e, dp, "out of memory");
      continue;
    }
    if (rule.metric && !mg_feedback_metric(fc, rule.metric)) {
      char mp[MG_CFG_PATH_MAX];
      mg_cfg_join(mp, dp, "metric");
      mg_cfg_error(e, mp, "names no metric of feedback.metrics");
    }
    mg_decide_free(&rule);
  }
}

static void config_free(struct mg_config *c) {
  mg_routes_free(&c->routes);
  mg_clients_free(&c->clients);
  mg_ramps_free(&c->ramps);
  mg_feedback_config_free(&c->feedback);
  mg_briefs_free(&c->briefs);
  mg_notify_cfg_free(&c->notify);
  mg_flags_free(&c->flags);
  mg_fallbacks_free(&c->fallbacks);
  mg_targets_free(&c->targets);
  free(c->upstream.proxy);
  free(c->admin.token_env);
  free(c->admin.state_file);
  mg_dlog_cfg_free(&c->dlog);
  mg_redis_cfg_free(&c->redis);
  free(c->source);
  free(c);
}

/* Where a cJSON parse stopped, as line and column for the error message. */
static void line_col(const char *json, size_t len, const char *at, int *line,
                     int *col) {
  const char *p;
  *line = 1;
  *col = 1;
  for (p = json; p < at && p < json + len; p++) {
    if (*p == '\n') {
      (*line)++;
      *col = 1;
    } else {
      (*col)++;
    }
  }
}

struct mg_config *mg_config_load_string(const char *json, size_t len,
                                        const char *source,
                                        struct mg_cfg_errors *e) {
  struct mg_config *c;
  const char *end = NULL;
  cJSON *root;
  size_t before = e->n;

  root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
  if (root != NULL) {
    /* Only whitespace may follow the document. cJSON's own check wants a
     * NUL terminator, which a length-delimited buffer does not have. */
    const char *p = end;
    while (p < json + len && (*p == ' ' || *p == '\t' || *p == '\n' ||
                              *p == '\r'))
      p++;
    if (p < json + len) {
      cJSON_Delete(root);
      root = NULL;
      end = p;
    }
  }
  if (root == NULL) {
    int line, col;
    line_col(json, len, end ? end : json, &line, &col);
    mg_cfg_error(e, "$", "invalid JSON at line %d, column %d", line, col);
    return NULL;
  }
  c = calloc(1, sizeof(*c));
  if (c == NULL) {
    cJSON_Delete(root);
    mg_cfg_error(e, "$", "out of memory");
    return NULL;
  }
  atomic_init(&c->refs, 1);
  c->source = strdup(source ? source : "<string>");
  snprintf(c->hash, sizeof(c->hash), "%016llx",
           (unsigned long long)mg_xxh64(json, len, 0));

  if (mg_cfg_object(root, "$", root_keys, e)) {
    parse_server(&c->server,
                 cJSON_GetObjectItemCaseSensitive(root, "server"), e);
    parse_limits(&c->limits,
                 cJSON_GetObjectItemCaseSensitive(root, "limits"), e);
    parse_upstream(&c->upstream,
                   cJSON_GetObjectItemCaseSensitive(root, "upstream"), e);
    parse_admin(&c->admin, cJSON_GetObjectItemCaseSensitive(root, "admin"),
                e);
    mg_dlog_cfg_parse(&c->dlog,
                      cJSON_GetObjectItemCaseSensitive(root, "decision_log"), e);
    mg_targets_parse(&c->targets,
                     cJSON_GetObjectItemCaseSensitive(root, "targets"),
                     "$.targets", NULL, e);
    mg_fallbacks_parse(&c->fallbacks, root, &c->targets, e);
    mg_flags_parse(&c->flags, cJSON_GetObjectItemCaseSensitive(root, "flags"),
                   &c->targets, e);
    /* feedback.metrics first: ramp guards may watch them (issue 15.4). */
    {
      const char *names[MG_FEEDBACK_MAX_METRICS];
      size_t k;
      if (mg_feedback_parse(cJSON_GetObjectItemCaseSensitive(root, "feedback"),
                            "$.feedback", &c->feedback, e) == -ENOMEM)
        mg_cfg_error(e, "$.feedback", "out of memory");
      for (k = 0; k < c->feedback.nmetrics; k++)
        names[k] = c->feedback.metrics[k].name;
      mg_ramps_parse_metrics(&c->ramps,
                             cJSON_GetObjectItemCaseSensitive(root, "flags"),
                             &c->flags, names, c->feedback.nmetrics, e);
      check_decide(cJSON_GetObjectItemCaseSensitive(root, "flags"),
                   &c->feedback, e);
    }
    mg_routes_parse(&c->routes, root, &c->targets, &c->flags, e);
    mg_notify_cfg_parse(&c->notify,
                        cJSON_GetObjectItemCaseSensitive(root, "notify"), e);
    mg_briefs_parse(&c->briefs,
                    cJSON_GetObjectItemCaseSensitive(root, "flags"),
                    &c->flags, e);
    /* A request is only ever sent to a target of its API, as primary or
     * as fallback: refuse flags and chains that mix them (issue 14.5). */
    mg_api_check_families(&c->targets, &c->flags, &c->fallbacks, e);
    mg_clients_parse(&c->clients,
                     cJSON_GetObjectItemCaseSensitive(root, "clients"), e);
    mg_redis_cfg_parse(&c->redis,
                       cJSON_GetObjectItemCaseSensitive(root, "redis"), e);
  }
  cJSON_Delete(root);
  if (e->n > before) {
    config_free(c);
    return NULL;
  }
  return c;
}

struct mg_config *mg_config_load_file(const char *path,
                                      struct mg_cfg_errors *e) {
  struct mg_config *c = NULL;
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  size_t len = 0, cap = 0;

  if (f == NULL) {
    mg_cfg_error(e, "$", "cannot open %s: %s", path, strerror(errno));
    return NULL;
  }
  for (;;) {
    size_t n;
    if (len == cap) {
      char *p;
      cap = cap ? cap * 2 : 8192;
      if (cap > MG_CONFIG_MAX_BYTES + 1)
        cap = MG_CONFIG_MAX_BYTES + 1;
      p = realloc(buf, cap);
      if (p == NULL) {
        mg_cfg_error(e, "$", "out of memory reading %s", path);
        goto out;
      }
      buf = p;
    }
    n = fread(buf + len, 1, cap - len, f);
    len += n;
    if (n == 0)
      break;
    if (len > MG_CONFIG_MAX_BYTES) {
      mg_cfg_error(e, "$", "%s is larger than %u bytes", path,
                   MG_CONFIG_MAX_BYTES);
      goto out;
    }
  }
  if (ferror(f)) {
    mg_cfg_error(e, "$", "cannot read %s: %s", path, strerror(errno));
    goto out;
  }
  c = mg_config_load_string(buf ? buf : "", len, path, e);
  /* The places the config names are judged here, once for `check`,
   * `serve` and a reload alike (issue 10, point 3). */
  if (c && mg_dlog_cfg_check(&c->dlog, e) != 0) {
    mg_config_unref(c);
    c = NULL;
  }
out:
  free(buf);
  fclose(f);
  return c;
}

struct mg_config *mg_config_ref(struct mg_config *c) {
  atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
  return c;
}

void mg_config_unref(struct mg_config *c) {
  /* acq_rel: the thread that frees sees every write the others made
   * before letting go. */
  if (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
    config_free(c);
}
