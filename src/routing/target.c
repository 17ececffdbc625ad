/* target.c - the "targets" section. */
#include "routing/target.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/str.h"

static const char *const ep_paths[MG_EP__COUNT] = {
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings"};
static const char *const ep_suffix[MG_EP__COUNT] = {
    "/chat/completions", "/completions", "/embeddings"};

const char *mg_endpoint_path(enum mg_endpoint ep) { return ep_paths[ep]; }

const char *mg_endpoint_name(enum mg_endpoint ep) {
  static const char *const names[] = {"chat", "completions", "embeddings"};
  return ep < MG_EP__COUNT ? names[ep] : NULL;
}

int mg_endpoint_from_path(const char *path, size_t len) {
  int i;
  for (i = 0; i < MG_EP__COUNT; i++) {
    size_t n = strlen(ep_paths[i]);
    if (len == n && memcmp(path, ep_paths[i], n) == 0)
      return i;
  }
  return -1;
}

/* The fallback keys are parsed by fallbacks/policy.c (a layer above). */
static const char *const target_keys[] = {
    "base_url",  "model",      "api_key_env", "ca_file",     "tls_verify",
    "timeouts",  "retries",    "confidence",  "breaker",     "fallbacks",
    "fallback_on", "deadline_ms", NULL};
static const char *const timeout_keys[] = {"connect_ms", "first_byte_ms",
                                           "idle_ms", "total_ms", NULL};

static void parse_timeouts(struct mg_timeouts *t, const cJSON *obj,
                           const char *path, struct mg_cfg_errors *e) {
  /* Defaults fit a chat model: answers may take a minute, a stream may pause
   * for a while between tokens, connecting should be quick. */
  t->connect_ms = 5000;
  t->first_byte_ms = 60000;
  t->idle_ms = 30000;
  t->total_ms = 300000;
  if (obj == NULL || !mg_cfg_object(obj, path, timeout_keys, e))
    return;
  t->connect_ms = (uint32_t)mg_cfg_int(obj, "connect_ms", path, t->connect_ms,
                                       1, 600000, e);
  t->first_byte_ms = (uint32_t)mg_cfg_int(obj, "first_byte_ms", path,
                                          t->first_byte_ms, 1, 3600000, e);
  t->idle_ms =
      (uint32_t)mg_cfg_int(obj, "idle_ms", path, t->idle_ms, 1, 3600000, e);
  t->total_ms =
      (uint32_t)mg_cfg_int(obj, "total_ms", path, t->total_ms, 1, 86400000, e);
}

static char *join_url(const char *base, const char *suffix) {
  size_t n = strlen(base) + strlen(suffix) + 1;
  char *p = malloc(n);
  if (p)
    snprintf(p, n, "%s%s", base, suffix);
  return p;
}

static bool valid_base_url(const char *u) {
  const char *rest;
  if (strncmp(u, "http://", 7) == 0)
    rest = u + 7;
  else if (strncmp(u, "https://", 8) == 0)
    rest = u + 8;
  else
    return false;
  /* A host is required; spaces and control bytes would break the request
   * line curl builds. */
  if (*rest == '\0' || *rest == '/')
    return false;
  for (; *u; u++)
    if ((unsigned char)*u <= ' ' || *u == 0x7f)
      return false;
  return true;
}

static void parse_target(struct mg_target *t, const char *name,
                         const cJSON *obj, const char *path,
                         char *(*getenv_fn)(const char *),
                         struct mg_cfg_errors *e) {
  char p[MG_CFG_PATH_MAX];
  int i;

  t->name = strdup(name);
  t->tls_verify = true;
  parse_timeouts(&t->timeouts, NULL, path, e);
  if (!mg_cfg_object(obj, path, target_keys, e))
    return;
  mg_cfg_require(obj, "base_url", path, e);
  mg_cfg_require(obj, "model", path, e);
  t->base_url = mg_cfg_str(obj, "base_url", path, NULL, true, e);
  if (t->base_url) {
    size_t n = strlen(t->base_url);
    while (n > 0 && t->base_url[n - 1] == '/')
      t->base_url[--n] = '\0';
    if (!valid_base_url(t->base_url)) {
      mg_cfg_join(p, path, "base_url");
      mg_cfg_error(e, p, "must be an http:// or https:// URL with a host");
    }
    for (i = 0; i < MG_EP__COUNT; i++)
      t->urls[i] = join_url(t->base_url, ep_suffix[i]);
  }
  t->model = mg_cfg_str(obj, "model", path, NULL, true, e);
  t->ca_file = mg_cfg_str(obj, "ca_file", path, NULL, true, e);
  t->tls_verify = mg_cfg_bool(obj, "tls_verify", path, true, e);
  t->api_key_env = mg_cfg_str(obj, "api_key_env", path, NULL, true, e);
  if (t->api_key_env) {
    const char *key = getenv_fn(t->api_key_env);
    mg_cfg_join(p, path, "api_key_env");
    /* The error names the variable, never its value. */
    if (key == NULL || *key == '\0') {
      mg_cfg_error(e, p, "environment variable %s is not set",
                   t->api_key_env);
    } else if (strpbrk(key, "\r\n") != NULL) {
      mg_cfg_error(e, p, "environment variable %s holds a line break",
                   t->api_key_env);
    } else {
      size_t n = strlen(key) + sizeof("Authorization: Bearer ");
      t->auth_header = malloc(n);
      if (t->auth_header)
        snprintf(t->auth_header, n, "Authorization: Bearer %s", key);
    }
  }
  {
    const cJSON *to = cJSON_GetObjectItemCaseSensitive(obj, "timeouts");
    if (to) {
      mg_cfg_join(p, path, "timeouts");
      parse_timeouts(&t->timeouts, to, p, e);
    }
  }
}

void mg_targets_parse(struct mg_targets *out, const cJSON *section,
                      const char *path, char *(*getenv_fn)(const char *),
                      struct mg_cfg_errors *e) {
  const cJSON *it;
  size_t n = 0;

  memset(out, 0, sizeof(*out));
  mg_map_init(&out->by_name);
  if (getenv_fn == NULL)
    getenv_fn = getenv;
  if (section == NULL) {
    mg_cfg_error(e, path, "is required: name at least one target");
    return;
  }
  if (!mg_cfg_object(section, path, NULL, e))
    return;
  n = (size_t)cJSON_GetArraySize(section);
  if (n == 0) {
    mg_cfg_error(e, path, "must name at least one target");
    return;
  }
  out->v = calloc(n, sizeof(*out->v));
  if (out->v == NULL) {
    mg_cfg_error(e, path, "out of memory");
    return;
  }
  cJSON_ArrayForEach(it, section) {
    struct mg_target *t = &out->v[out->n];
    char p[MG_CFG_PATH_MAX];
    mg_cfg_join(p, path, it->string);
    t->index = (uint32_t)out->n;
    parse_target(t, it->string, it, p, getenv_fn, e);
    out->n++;
    if (t->name && mg_map_put(&out->by_name, t->name, strlen(t->name), t))
      mg_cfg_error(e, p, "out of memory");
  }
}

void mg_targets_free(struct mg_targets *t) {
  size_t i;
  int j;
  for (i = 0; i < t->n; i++) {
    struct mg_target *x = &t->v[i];
    free(x->name);
    free(x->base_url);
    for (j = 0; j < MG_EP__COUNT; j++)
      free(x->urls[j]);
    free(x->model);
    free(x->api_key_env);
    if (x->auth_header) {
      /* Do not leave the secret lying in freed memory. */
      volatile char *s = x->auth_header;
      while (*s)
        *s++ = 0;
      free(x->auth_header);
    }
    free(x->ca_file);
  }
  free(t->v);
  mg_map_free(&t->by_name);
  memset(t, 0, sizeof(*t));
}

const struct mg_target *mg_targets_find(const struct mg_targets *t,
                                        const char *name) {
  return mg_map_get(&t->by_name, name, strlen(name));
}
