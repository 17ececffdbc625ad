/* redis.c - the `redis` config section (redis.h). */
#include "config/redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const redis_keys[] = {
    "url",    "password_env", "password_file", "prefix",
    "timeout_ms", "resync_ms", "instance",      "lease_ms", NULL};

static int parse_uint(const char *s, size_t n, uint32_t max, uint32_t *out) {
  uint64_t v = 0;
  size_t i;
  if (n == 0 || n > 10)
    return -1;
  for (i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  if (v > max)
    return -1;
  *out = (uint32_t)v;
  return 0;
}

int mg_redis_url_parse(struct mg_redis_cfg *c, const char *url,
                       const char **why) {
  const char *p, *end, *colon, *slash;
  uint32_t v;
  c->port = 6379;
  c->db = 0;
  c->host[0] = '\0';
  if (strncmp(url, "unix:", 5) == 0) {
    const char *q = strchr(url + 5, '?');
    size_t n = q ? (size_t)(q - url - 5) : strlen(url + 5);
    /* "unix:///run/redis.sock" and "unix:/run/redis.sock" both name it. */
    p = url + 5;
    if (n >= 2 && p[0] == '/' && p[1] == '/') {
      p += 2;
      n -= 2;
    }
    if (n == 0 || p[0] != '/') {
      *why = "a unix URL needs an absolute path: unix:/path/to/redis.sock";
      return -1;
    }
    free(c->unix_path);
    c->unix_path = strndup(p, n);
    if (q) {
      if (strncmp(q, "?db=", 4) != 0 ||
          parse_uint(q + 4, strlen(q + 4), 1000000, &c->db) != 0) {
        *why = "the only query a unix URL takes is ?db=N";
        return -1;
      }
    }
    return c->unix_path ? 0 : -1;
  }
  if (strncmp(url, "redis://", 8) != 0) {
    *why = "must be redis://host:port/db or unix:/path";
    return -1;
  }
  p = url + 8;
  if (strchr(p, '@')) {
    *why = "no password in the URL: use redis.password_env or "
           "redis.password_file";
    return -1;
  }
  slash = strchr(p, '/');
  end = slash ? slash : p + strlen(p);
  if (*p == '[') { /* [v6]:port */
    const char *rb = memchr(p, ']', (size_t)(end - p));
    if (rb == NULL || (size_t)(rb - p - 1) >= sizeof(c->host)) {
      *why = "a bad IPv6 address";
      return -1;
    }
    memcpy(c->host, p + 1, (size_t)(rb - p - 1));
    c->host[rb - p - 1] = '\0';
    colon = rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
  } else {
    colon = memchr(p, ':', (size_t)(end - p));
    size_t hn = (size_t)((colon ? colon : end) - p);
    if (hn == 0 || hn >= sizeof(c->host)) {
      *why = "the URL names no host";
      return -1;
    }
    memcpy(c->host, p, hn);
    c->host[hn] = '\0';
  }
  if (colon) {
    if (parse_uint(colon + 1, (size_t)(end - colon - 1), 65535, &v) != 0 ||
        v == 0) {
      *why = "the port must be a number from 1 to 65535";
      return -1;
    }
    c->port = (int)v;
  }
  if (slash && slash[1] != '\0' &&
      parse_uint(slash + 1, strlen(slash + 1), 1000000, &c->db) != 0) {
    *why = "the database (after the /) must be a number";
    return -1;
  }
  return 0;
}

void mg_redis_cfg_parse(struct mg_redis_cfg *c, const cJSON *obj,
                        struct mg_cfg_errors *e) {
  const char *p = "$.redis";
  const char *why = NULL;
  memset(c, 0, sizeof(*c));
  c->timeout_ms = 500;
  c->resync_ms = 5000;
  c->lease_ms = 3000;
  if (obj == NULL || cJSON_IsNull(obj))
    return;
  if (!mg_cfg_object(obj, p, redis_keys, e))
    return;
  c->enabled = true;
  if (!mg_cfg_require(obj, "url", p, e))
    return;
  c->url = mg_cfg_str(obj, "url", p, NULL, true, e);
  if (c->url && mg_redis_url_parse(c, c->url, &why) != 0)
    mg_cfg_error(e, "$.redis.url", "%s, not \"%s\"",
                 why ? why : "out of memory", c->url);
  c->password_env = mg_cfg_str(obj, "password_env", p, NULL, true, e);
  c->password_file = mg_cfg_str(obj, "password_file", p, NULL, true, e);
  if (c->password_env && c->password_file)
    mg_cfg_error(e, "$.redis", "give password_env or password_file, not both");
  c->prefix = mg_cfg_str(obj, "prefix", p, "modelgate:", true, e);
  c->timeout_ms =
      (uint32_t)mg_cfg_int(obj, "timeout_ms", p, c->timeout_ms, 10, 60000, e);
  c->resync_ms =
      (uint32_t)mg_cfg_int(obj, "resync_ms", p, c->resync_ms, 100, 600000, e);
  c->lease_ms =
      (uint32_t)mg_cfg_int(obj, "lease_ms", p, c->lease_ms, 300, 600000, e);
  if (c->lease_ms < 3 * c->timeout_ms)
    mg_cfg_error(e, "$.redis.lease_ms",
                 "must be at least three times timeout_ms (%u)",
                 c->timeout_ms);
  c->instance = mg_cfg_str(obj, "instance", p, NULL, true, e);
}

void mg_redis_cfg_free(struct mg_redis_cfg *c) {
  free(c->url);
  free(c->unix_path);
  free(c->password_env);
  free(c->password_file);
  free(c->prefix);
  free(c->instance);
  memset(c, 0, sizeof(*c));
}
