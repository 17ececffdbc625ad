/* sink.c - notification config, payloads, keys and signatures (sink.h). */
#include "notify/sink.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/hash.h"
#include "common/time.h"

static const char *const notify_keys[] = {"queue_size", "sinks", NULL};
static const char *const sink_keys[] = {
    "url",        "format",         "events",           "min_severity",
    "secret_env", "timeout_ms",     "retries",          "backoff_ms",
    "max_backoff_ms", "breaker_failures", "breaker_cooldown_ms", NULL};
static const char *const event_types[] = {
    "kill",        "unkill",       "weights",        "weights_cleared",
    "ramp_step",   "ramp_waiting", "rollback",       "ramp_paused",
    "ramp_resumed", "ramp_restarted", "breaker",     "reload",
    "fallback_storm", "fallback_storm_over", NULL};

static const char *const sev_names[] = {"info", "warning", "critical"};

static const char *sev_name(enum mg_severity s) {
  return (unsigned)s < 3 ? sev_names[s] : "info";
}

static void sink_free(struct mg_notify_sink_cfg *s) {
  size_t i;
  free(s->name);
  free(s->url);
  for (i = 0; i < s->nevents; i++)
    free(s->events[i]);
  free(s->events);
  free(s->secret_env);
  if (s->secret) {
    memset(s->secret, 0, strlen(s->secret));
    free(s->secret);
  }
}

static int severity_of(const char *s, enum mg_severity *out) {
  int i;
  for (i = 0; i < 3; i++)
    if (strcmp(s, sev_name((enum mg_severity)i)) == 0) {
      *out = (enum mg_severity)i;
      return 0;
    }
  return -1;
}

static void parse_sink(struct mg_notify_sink_cfg *s, const char *name,
                       const cJSON *o, const char *path,
                       struct mg_cfg_errors *e) {
  char *fmt, *sev, p[MG_CFG_PATH_MAX];
  const cJSON *ev;
  s->name = strdup(name);
  if (!mg_cfg_object(o, path, sink_keys, e))
    return;
  if (mg_cfg_require(o, "url", path, e)) {
    s->url = mg_cfg_str(o, "url", path, NULL, true, e);
    if (s->url && strncmp(s->url, "http://", 7) != 0 &&
        strncmp(s->url, "https://", 8) != 0) {
      mg_cfg_join(p, path, "url");
      mg_cfg_error(e, p, "must be an http:// or https:// URL");
    }
  }
  fmt = mg_cfg_str(o, "format", path, "json", true, e);
  if (fmt && strcmp(fmt, "slack") == 0)
    s->format = MG_NOTIFY_SLACK;
  else if (fmt && strcmp(fmt, "json") != 0) {
    mg_cfg_join(p, path, "format");
    mg_cfg_error(e, p, "must be \"json\" or \"slack\"");
  }
  free(fmt);
  sev = mg_cfg_str(o, "min_severity", path, "info", true, e);
  if (sev && severity_of(sev, &s->min_severity) != 0) {
    mg_cfg_join(p, path, "min_severity");
    mg_cfg_error(e, p, "must be \"info\", \"warning\" or \"critical\"");
  }
  free(sev);
  mg_cfg_join(p, path, "events");
  ev = cJSON_GetObjectItemCaseSensitive(o, "events");
  if (ev && !cJSON_IsArray(ev))
    mg_cfg_error(e, p, "must be an array of event types");
  else if (ev) {
    int n = cJSON_GetArraySize(ev), i;
    s->events = calloc((size_t)n + 1, sizeof(*s->events));
    for (i = 0; s->events && i < n; i++) {
      const cJSON *t = cJSON_GetArrayItem(ev, i);
      char ip[MG_CFG_PATH_MAX];
      size_t k;
      mg_cfg_join_idx(ip, p, (size_t)i);
      if (!cJSON_IsString(t)) {
        mg_cfg_error(e, ip, "must be a string");
        continue;
      }
      for (k = 0; event_types[k]; k++)
        if (strcmp(event_types[k], t->valuestring) == 0)
          break;
      if (event_types[k] == NULL && strcmp(t->valuestring, "*") != 0) {
        mg_cfg_error(e, ip, "unknown event type \"%s\"", t->valuestring);
        continue;
      }
      s->events[s->nevents++] = strdup(t->valuestring);
    }
  }
  s->secret_env = mg_cfg_str(o, "secret_env", path, NULL, true, e);
  if (s->secret_env) {
    const char *v = getenv(s->secret_env);
    if (v == NULL || *v == '\0') {
      mg_cfg_join(p, path, "secret_env");
      mg_cfg_error(e, p, "environment variable %s is not set",
                   s->secret_env);
    } else
      s->secret = strdup(v);
  }
  s->timeout_ms = (uint32_t)mg_cfg_int(o, "timeout_ms", path, 5000, 100,
                                       600000, e);
  s->retries = (uint32_t)mg_cfg_int(o, "retries", path, 5, 0, 100, e);
  s->backoff_ms = (uint32_t)mg_cfg_int(o, "backoff_ms", path, 500, 10,
                                       600000, e);
  s->max_backoff_ms = (uint32_t)mg_cfg_int(o, "max_backoff_ms", path, 60000,
                                           10, 3600000, e);
  s->breaker_failures = (uint32_t)mg_cfg_int(o, "breaker_failures", path, 5,
                                             1, 1000, e);
  s->breaker_cooldown_ms = (uint32_t)mg_cfg_int(
      o, "breaker_cooldown_ms", path, 30000, 100, 3600000, e);
  if (s->max_backoff_ms < s->backoff_ms) {
    mg_cfg_join(p, path, "max_backoff_ms");
    mg_cfg_error(e, p, "must be at least backoff_ms");
  }
}

void mg_notify_cfg_parse(struct mg_notify_cfg *out, const cJSON *obj,
                         struct mg_cfg_errors *e) {
  const char *path = "$.notify";
  const cJSON *sinks, *it;
  char sp[MG_CFG_PATH_MAX];
  size_t n = 0;
  memset(out, 0, sizeof(*out));
  out->queue_size = 1000;
  if (obj == NULL || !mg_cfg_object(obj, path, notify_keys, e))
    return;
  out->queue_size =
      (uint32_t)mg_cfg_int(obj, "queue_size", path, 1000, 1, 1000000, e);
  sinks = cJSON_GetObjectItemCaseSensitive(obj, "sinks");
  mg_cfg_join(sp, path, "sinks");
  if (sinks == NULL)
    return;
  if (!cJSON_IsObject(sinks)) {
    mg_cfg_error(e, sp, "must be an object of sinks by name");
    return;
  }
  out->sinks = calloc((size_t)cJSON_GetArraySize(sinks) + 1,
                      sizeof(*out->sinks));
  if (out->sinks == NULL) {
    mg_cfg_error(e, sp, "out of memory");
    return;
  }
  cJSON_ArrayForEach(it, sinks) {
    char p[MG_CFG_PATH_MAX];
    mg_cfg_join(p, sp, it->string);
    parse_sink(&out->sinks[n++], it->string, it, p, e);
  }
  out->nsinks = n;
}

void mg_notify_cfg_free(struct mg_notify_cfg *c) {
  size_t i;
  for (i = 0; i < c->nsinks; i++)
    sink_free(&c->sinks[i]);
  free(c->sinks);
  memset(c, 0, sizeof(*c));
}

bool mg_notify_wants(const struct mg_notify_sink_cfg *s,
                     const struct mg_event *ev) {
  size_t i;
  if (ev->severity < s->min_severity)
    return false;
  if (s->events == NULL)
    return true;
  for (i = 0; i < s->nevents; i++)
    if (strcmp(s->events[i], "*") == 0 || strcmp(s->events[i], ev->type) == 0)
      return true;
  return false;
}

void mg_notify_key(const struct mg_event *ev, int64_t ts_ms, char out[17]) {
  char id[1024];
  snprintf(id, sizeof(id), "%s|%s|%s|%s|%s|%d|%lld|%s|%s|%s|%lld",
           ev->type, ev->flag ? ev->flag : "", ev->variant ? ev->variant : "",
           ev->target ? ev->target : "", ev->state ? ev->state : "",
           (int)ev->step, (long long)ev->weight_bp, ev->guard ? ev->guard : "",
           ev->to_hash ? ev->to_hash : "", ev->instance ? ev->instance : "",
           (long long)ts_ms);
  snprintf(out, 17, "%016llx",
           (unsigned long long)mg_xxh64(id, strlen(id), 0x6e6f74696679ULL));
}

static const char *reason_of(const struct mg_event *ev) {
  if (ev->actor && ev->actor->reason)
    return ev->actor->reason;
  if (strcmp(ev->type, "fallback_storm") == 0)
    return "fallbacks answer too many of the variant's requests";
  if (strcmp(ev->type, "fallback_storm_over") == 0)
    return "fallbacks back to a normal share";
  if (ev->guard)
    return "guard breached";
  if (ev->actor)
    return "admin action";
  if (strcmp(ev->type, "ramp_step") == 0)
    return "hold passed and guards green";
  if (strcmp(ev->type, "ramp_waiting") == 0)
    return "manual step: waiting for a human promote";
  if (strcmp(ev->type, "breaker") == 0)
    return "upstream failures";
  if (strcmp(ev->type, "reload") == 0)
    return ev->result && strcmp(ev->result, "ok") == 0 ? "config reloaded"
                                                       : "config refused";
  return "automatic";
}

/* One line for people (Slack's text, the JSON's "text"). */
static void human_line(const struct mg_event *ev, const char *brief,
                       char *out, size_t n) {
  size_t l;
  l = (size_t)snprintf(out, n, "[%s] modelgate %s", sev_name(ev->severity),
                       ev->type);
  if (l < n && ev->flag)
    l += (size_t)snprintf(out + l, n - l, " flag %s", ev->flag);
  if (l < n && ev->variant)
    l += (size_t)snprintf(out + l, n - l, " variant %s", ev->variant);
  if (l < n && ev->target)
    l += (size_t)snprintf(out + l, n - l, " target %s", ev->target);
  if (l < n && ev->state)
    l += (size_t)snprintf(out + l, n - l, ": %s", ev->state);
  if (l < n && ev->step >= 0)
    l += (size_t)snprintf(out + l, n - l, ", step %d", (int)ev->step + 1);
  if (l < n && ev->weight_bp >= 0)
    l += (size_t)snprintf(out + l, n - l, " at %.2f%%", ev->weight_bp / 100.0);
  if (l < n && ev->guard)
    l += (size_t)snprintf(out + l, n - l, " (guard %s: observed %.4g, "
                          "threshold %.4g)", ev->guard, ev->observed,
                          ev->threshold);
  if (l < n && ev->result)
    l += (size_t)snprintf(out + l, n - l, ": %s", ev->result);
  if (l < n && ev->actor)
    l += (size_t)snprintf(out + l, n - l, " by %s",
                          ev->actor->by ? ev->actor->by : "admin");
  if (l < n && ev->actor && ev->actor->reason)
    l += (size_t)snprintf(out + l, n - l, " (%s)", ev->actor->reason);
  if (l < n && ev->instance)
    l += (size_t)snprintf(out + l, n - l, " on %s", ev->instance);
  if (l < n && brief)
    (void)snprintf(out + l, n - l, ". Release: %s", brief);
}

static int str_member(struct mg_buf *b, const char *k, const char *v) {
  int rc;
  if (v == NULL)
    return mg_buf_printf(b, ",\"%s\":null", k);
  rc = mg_buf_printf(b, ",\"%s\":", k);
  return rc ? rc : mg_buf_json_str(b, v, strlen(v));
}

static int weights(struct mg_buf *b, const char *k, const struct mg_event *ev,
                   const uint32_t *w) {
  uint32_t i;
  int rc;
  if (w == NULL || ev->nvariants == 0)
    return mg_buf_printf(b, ",\"%s\":null", k);
  rc = mg_buf_printf(b, ",\"%s\":{", k);
  for (i = 0; rc == 0 && i < ev->nvariants; i++) {
    if (i)
      rc = mg_buf_puts(b, ",");
    if (rc == 0)
      rc = mg_buf_json_str(b, ev->variants[i], strlen(ev->variants[i]));
    if (rc == 0)
      rc = mg_buf_printf(b, ":%.10g", w[i] / 100.0);
  }
  return rc ? rc : mg_buf_puts(b, "}");
}

int mg_notify_payload(const struct mg_event *ev, enum mg_notify_format fmt,
                      int64_t ts_ms, const char *key, const char *brief,
                      struct mg_buf *out) {
  char line[1024], ts[32];
  int rc;
  human_line(ev, brief, line, sizeof(line));
  if (fmt == MG_NOTIFY_SLACK) {
    rc = mg_buf_puts(out, "{\"text\":");
    if (rc == 0)
      rc = mg_buf_json_str(out, line, strlen(line));
    return rc ? rc : mg_buf_puts(out, "}");
  }
  mg_rfc3339_format(ts_ms, ts);
  rc = mg_buf_puts(out, "{\"source\":\"modelgate\"");
  if (rc == 0)
    rc = str_member(out, "event", ev->type);
  if (rc == 0)
    rc = str_member(out, "severity", sev_name(ev->severity));
  if (rc == 0)
    rc = str_member(out, "dedup_key", key);
  if (rc == 0)
    rc = str_member(out, "ts", ts);
  if (rc == 0)
    rc = str_member(out, "instance", ev->instance);
  if (rc == 0)
    rc = str_member(out, "flag", ev->flag);
  if (rc == 0)
    rc = str_member(out, "variant", ev->variant);
  if (rc == 0 && ev->target)
    rc = str_member(out, "target", ev->target);
  if (rc == 0 && ev->state)
    rc = str_member(out, "state", ev->state);
  if (rc == 0 && ev->step >= 0)
    rc = mg_buf_printf(out, ",\"step\":%d", (int)ev->step);
  if (rc == 0 && ev->weight_bp >= 0)
    rc = mg_buf_printf(out, ",\"weight\":%.10g", ev->weight_bp / 100.0);
  if (rc == 0)
    rc = weights(out, "weights_before", ev, ev->weights_before);
  if (rc == 0)
    rc = weights(out, "weights_after", ev, ev->weights_after);
  if (rc == 0)
    rc = str_member(out, "reason", reason_of(ev));
  if (rc == 0 && ev->guard) {
    const struct mg_ramp_evidence *x = ev->evidence;
    rc = mg_buf_puts(out, ",\"evidence\":{\"guard\":");
    if (rc == 0)
      rc = mg_buf_json_str(out, ev->guard, strlen(ev->guard));
    if (rc == 0)
      rc = mg_buf_printf(out, ",\"observed\":%.6g,\"threshold\":%.6g,"
                         "\"window_ms\":%u", ev->observed, ev->threshold,
                         x ? x->window_ms : ev->window_ms);
    if (rc == 0 && x && x->cell[0])
      rc = str_member(out, "cell", x->cell);
    if (rc == 0 && x)
      rc = mg_buf_printf(out, ",\"sequential\":%s,\"n_treatment\":%llu,"
                         "\"n_control\":%llu", x->sequential ? "true" : "false",
                         (unsigned long long)x->n_treatment,
                         (unsigned long long)x->n_control);
    if (rc == 0)
      rc = mg_buf_puts(out, "}");
  } else if (rc == 0)
    rc = mg_buf_puts(out, ",\"evidence\":null");
  if (rc == 0)
    rc = str_member(out, "by", ev->actor ? (ev->actor->by ? ev->actor->by
                                                          : "admin")
                                         : NULL);
  if (rc == 0 && ev->result)
    rc = str_member(out, "result", ev->result);
  if (rc == 0 && ev->from_hash)
    rc = str_member(out, "from", ev->from_hash);
  if (rc == 0 && ev->to_hash)
    rc = str_member(out, "to", ev->to_hash);
  if (rc == 0 && ev->result && strcmp(ev->result, "refused") == 0)
    rc = mg_buf_printf(out, ",\"errors\":%zu", ev->errors);
  if (rc == 0 && brief)
    rc = str_member(out, "brief", brief);
  if (rc == 0)
    rc = str_member(out, "text", line);
  return rc ? rc : mg_buf_puts(out, "}");
}

void mg_notify_sign(const char *secret, const char *body, size_t len,
                    char out[72]) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mlen = 0, i;
  HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)body,
       len, mac, &mlen);
  memcpy(out, "sha256=", 7);
  for (i = 0; i < mlen && i < 32; i++)
    snprintf(out + 7 + 2 * i, 3, "%02x", mac[i]);
  out[7 + 2 * (mlen < 32 ? mlen : 32)] = '\0';
}
