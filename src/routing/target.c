/* target.c - the "targets" section. */
#include "routing/target.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/str.h"

/* Per endpoint id: the client's path, the name in records, the path after
 * a target's base_url. api/api.c's table says the same (test_api checks
 * that they agree); these serve the legacy functions and urls[]. */
static const char *const ep_paths[MG_EP__COUNT] = {
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings",
    "/v1/responses",        "/v1/responses/",  "/v1/responses/",
    "/v1/responses/",       "/v1/messages",    "/v1/messages/count_tokens"};
static const char *const ep_names[MG_EP__COUNT] = {
    "chat",          "completions",      "embeddings",
    "responses",     "responses.get",    "responses.delete",
    "responses.input_items", "messages", "messages.count_tokens"};
static const char *const ep_suffix[MG_EP__COUNT] = {
    "/chat/completions", "/completions", "/embeddings",
    "/responses",        "/responses",   "/responses",
    "/responses",        "/messages",    "/messages/count_tokens"};

const char *mg_api_family_name(enum mg_api_family f) {
  return f == MG_API_ANTHROPIC ? "anthropic" : "openai";
}

const char *mg_endpoint_path(enum mg_endpoint_id ep) {
  return (unsigned)ep < MG_EP__COUNT ? ep_paths[ep] : NULL;
}

const char *mg_endpoint_name(enum mg_endpoint_id ep) {
  return (unsigned)ep < MG_EP__COUNT ? ep_names[ep] : NULL;
}

int mg_endpoint_from_path(const char *path, size_t len) {
  int i;
  /* Only the three endpoints the exchange of today serves: the others
   * reach a client through mg_endpoint_match once the exchange reads the
   * endpoint table. */
  for (i = MG_EP_CHAT; i <= MG_EP_EMBEDDINGS; i++) {
    size_t n = strlen(ep_paths[i]);
    if (len == n && memcmp(path, ep_paths[i], n) == 0)
      return i;
  }
  return -1;
}

const char *mg_engine_name(enum mg_engine e) {
  static const char *const names[] = {"auto", "native", "curl"};
  return (unsigned)e < 3 ? names[e] : "auto";
}

enum mg_engine mg_target_engine(const struct mg_target *t) {
  if (t->engine != MG_ENGINE_AUTO)
    return t->engine;
  return t->base_url && strncmp(t->base_url, "http://", 7) == 0
             ? MG_ENGINE_NATIVE
             : MG_ENGINE_CURL;
}

static bool same_str(const char *a, const char *b) {
  if (a == NULL || b == NULL)
    return a == b;
  return strcmp(a, b) == 0;
}

bool mg_target_shares_state(const struct mg_target *a,
                            const struct mg_target *b) {
  if (a == b)
    return true;
  /* Stored responses live per upstream and per account: another base URL
   * or another key may see none of them. */
  return a->api == b->api && same_str(a->base_url, b->base_url) &&
         same_str(a->auth_header, b->auth_header);
}

/* The fallback keys are parsed by fallbacks/policy.c (a layer above). */
static const char *const target_keys[] = {
    "base_url",    "model",       "api_key_env", "api_key_file",
    "ca_file",     "tls_verify",  "timeouts",    "retries",
    "confidence",  "breaker",     "fallbacks",   "fallback_on",
    "deadline_ms", "api",         "engine",      "anthropic_version",
    "price",       NULL};
static const char *const timeout_keys[] = {"connect_ms", "first_byte_ms",
                                           "idle_ms", "total_ms", NULL};
static const char *const openai_price_keys[] = {"input", "cached_input",
                                                "output", NULL};
static const char *const anthropic_price_keys[] = {
    "input", "output", "cache_read", "cache_write", NULL};

/* A secret is at most this long: keys are a few hundred bytes. */
#define SECRET_MAX 16384

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

int mg_secret_file_read(const char *path, size_t max, char **out) {
  struct mg_buf b;
  char chunk[4096];
  ssize_t n;
  size_t i;
  int fd, rc = 0;

  *out = NULL;
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  mg_buf_init(&b, max);
  for (;;) {
    n = read(fd, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      rc = -errno;
      break;
    }
    if (n == 0)
      break;
    if ((rc = mg_buf_append(&b, chunk, (size_t)n)) != 0) {
      rc = rc == -E2BIG ? -EFBIG : rc;
      break;
    }
  }
  close(fd);
  /* Kubernetes (and `echo key > file`) leave a line break at the end. */
  while (rc == 0 && b.len > 0 &&
         (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == '\r'))
    b.data[--b.len] = '\0';
  if (rc == 0 && b.len == 0)
    rc = -EINVAL;
  /* A header value may not hold CR, LF or NUL (RFC 9110, 5.5); other
   * control bytes are no key either. */
  for (i = 0; rc == 0 && i < b.len; i++)
    if ((unsigned char)b.data[i] < 0x20 || b.data[i] == 0x7f)
      rc = -EINVAL;
  if (rc == 0) {
    *out = mg_buf_steal(&b, NULL);
    return 0;
  }
  if (b.data)
    memset(b.data, 0, b.cap); /* the secret must not linger */
  mg_buf_free(&b);
  return rc;
}

static void wipe_free(char *s) {
  if (s) {
    volatile char *p = s;
    while (*p)
      *p++ = 0;
    free(s);
  }
}

/* The header line that carries the key, by the API's convention. */
static void set_auth(struct mg_target *t, const char *key, const char *path,
                     struct mg_cfg_errors *e) {
  const char *fmt = t->api == MG_API_ANTHROPIC ? "x-api-key: %s"
                                               : "Authorization: Bearer %s";
  size_t n = strlen(key) + strlen(fmt) + 1;
  t->auth_header = malloc(n);
  if (t->auth_header == NULL) {
    mg_cfg_error(e, path, "out of memory");
    return;
  }
  snprintf(t->auth_header, n, fmt, key);
}

static void parse_key(struct mg_target *t, const cJSON *obj, const char *path,
                      char *(*getenv_fn)(const char *),
                      struct mg_cfg_errors *e) {
  char p[MG_CFG_PATH_MAX];

  t->api_key_env = mg_cfg_str(obj, "api_key_env", path, NULL, true, e);
  t->api_key_file = mg_cfg_str(obj, "api_key_file", path, NULL, true, e);
  if (t->api_key_env && t->api_key_file) {
    mg_cfg_join(p, path, "api_key_file");
    mg_cfg_error(e, p, "give api_key_env or api_key_file, not both");
    return;
  }
  if (t->api_key_env) {
    const char *key = getenv_fn(t->api_key_env);
    mg_cfg_join(p, path, "api_key_env");
    /* The error names the variable, never its value. */
    if (key == NULL || *key == '\0')
      mg_cfg_error(e, p, "environment variable %s is not set",
                   t->api_key_env);
    else if (strpbrk(key, "\r\n") != NULL)
      mg_cfg_error(e, p, "environment variable %s holds a line break",
                   t->api_key_env);
    else
      set_auth(t, key, p, e);
  } else if (t->api_key_file) {
    char *key = NULL;
    int rc = mg_secret_file_read(t->api_key_file, SECRET_MAX, &key);
    mg_cfg_join(p, path, "api_key_file");
    /* The error names the file, never its bytes. */
    if (rc == -EFBIG)
      mg_cfg_error(e, p, "%s is larger than %d bytes: not a key",
                   t->api_key_file, SECRET_MAX);
    else if (rc == -EINVAL)
      mg_cfg_error(e, p, "%s holds no key (empty, or a control character "
                         "or line break inside it)",
                   t->api_key_file);
    else if (rc < 0)
      mg_cfg_error(e, p, "cannot read %s: %s", t->api_key_file,
                   strerror(-rc));
    else
      set_auth(t, key, p, e);
    wipe_free(key);
  }
}

static void parse_price(struct mg_target *t, const cJSON *obj,
                        const char *path, struct mg_cfg_errors *e) {
  const char *const *keys = t->api == MG_API_ANTHROPIC ? anthropic_price_keys
                                                       : openai_price_keys;
  struct mg_price *pr = &t->price;
  const cJSON *it;
  char p[MG_CFG_PATH_MAX];

  pr->api = t->api;
  if (obj == NULL)
    return;
  /* A key of the other API is a mistake worth naming: an OpenAI target has
   * no cache writes, an Anthropic one no cached_input. */
  if (cJSON_IsObject(obj))
    cJSON_ArrayForEach(it, obj) {
      const char *const *k;
      for (k = keys; *k; k++)
        if (strcmp(*k, it->string) == 0)
          break;
      if (*k == NULL) {
        mg_cfg_join(p, path, it->string);
        mg_cfg_error(e, p,
                     "is not a price of api %s (its prices: %s)",
                     mg_api_family_name(t->api),
                     t->api == MG_API_ANTHROPIC
                         ? "input, output, cache_read, cache_write"
                         : "input, cached_input, output");
      }
    }
  if (!mg_cfg_object(obj, path, NULL, e))
    return;
  pr->set = true;
  mg_cfg_require(obj, "input", path, e);
  mg_cfg_require(obj, "output", path, e);
  pr->input = mg_cfg_num(obj, "input", path, 0, 0, 1e6, e);
  pr->output = mg_cfg_num(obj, "output", path, 0, 0, 1e6, e);
  pr->cached_input = pr->cache_read = pr->cache_write = pr->input;
  if (t->api == MG_API_ANTHROPIC) {
    pr->cache_read = mg_cfg_num(obj, "cache_read", path, pr->input, 0, 1e6, e);
    pr->cache_write =
        mg_cfg_num(obj, "cache_write", path, pr->input, 0, 1e6, e);
  } else {
    pr->cached_input =
        mg_cfg_num(obj, "cached_input", path, pr->input, 0, 1e6, e);
  }
}

static void parse_target(struct mg_target *t, const char *name,
                         const cJSON *obj, const char *path,
                         char *(*getenv_fn)(const char *),
                         struct mg_cfg_errors *e) {
  char p[MG_CFG_PATH_MAX];
  char *s;
  int i;

  t->name = strdup(name);
  t->tls_verify = true;
  parse_timeouts(&t->timeouts, NULL, path, e);
  if (!mg_cfg_object(obj, path, target_keys, e))
    return;
  mg_cfg_require(obj, "base_url", path, e);
  mg_cfg_require(obj, "model", path, e);

  s = mg_cfg_str(obj, "api", path, "openai", true, e);
  mg_cfg_join(p, path, "api");
  if (s && strcmp(s, "anthropic") == 0)
    t->api = MG_API_ANTHROPIC;
  else if (s && strcmp(s, "openai") != 0)
    mg_cfg_error(e, p, "must be openai or anthropic, not \"%s\"", s);
  free(s);

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

  s = mg_cfg_str(obj, "engine", path, "auto", true, e);
  mg_cfg_join(p, path, "engine");
  if (s && strcmp(s, "native") == 0)
    t->engine = MG_ENGINE_NATIVE;
  else if (s && strcmp(s, "curl") == 0)
    t->engine = MG_ENGINE_CURL;
  else if (s && strcmp(s, "auto") != 0)
    mg_cfg_error(e, p, "must be auto, native or curl, not \"%s\"", s);
  free(s);
  /* The native engine speaks plain HTTP/1.1 only: TLS is libcurl's. */
  if (t->engine == MG_ENGINE_NATIVE && t->base_url &&
      strncmp(t->base_url, "http://", 7) != 0)
    mg_cfg_error(e, p,
                 "native serves http:// base URLs only; %s needs curl (or "
                 "auto)",
                 t->base_url);

  if (cJSON_GetObjectItemCaseSensitive(obj, "anthropic_version") &&
      t->api != MG_API_ANTHROPIC) {
    mg_cfg_join(p, path, "anthropic_version");
    mg_cfg_error(e, p, "applies to targets with api \"anthropic\" only");
  } else if (t->api == MG_API_ANTHROPIC) {
    t->anthropic_version =
        mg_cfg_str(obj, "anthropic_version", path, "2023-06-01", true, e);
    if (t->anthropic_version &&
        strpbrk(t->anthropic_version, "\r\n") != NULL) {
      mg_cfg_join(p, path, "anthropic_version");
      mg_cfg_error(e, p, "must not hold a line break");
    }
  }

  t->model = mg_cfg_str(obj, "model", path, NULL, true, e);
  t->ca_file = mg_cfg_str(obj, "ca_file", path, NULL, true, e);
  t->tls_verify = mg_cfg_bool(obj, "tls_verify", path, true, e);
  parse_key(t, obj, path, getenv_fn, e);
  {
    const cJSON *to = cJSON_GetObjectItemCaseSensitive(obj, "timeouts");
    if (to) {
      mg_cfg_join(p, path, "timeouts");
      parse_timeouts(&t->timeouts, to, p, e);
    }
  }
  mg_cfg_join(p, path, "price");
  parse_price(t, cJSON_GetObjectItemCaseSensitive(obj, "price"), p, e);
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
    free(x->anthropic_version);
    free(x->api_key_env);
    free(x->api_key_file);
    /* Do not leave the secret lying in freed memory. */
    wipe_free(x->auth_header);
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
