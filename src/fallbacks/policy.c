/* policy.c - the fallback configuration of targets, traditional paths and
 * the answer cache. */
#include "fallbacks/policy.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const trigger_names[] = {
    "connect_error", "timeout", "5xx", "429", "invalid", "low_confidence",
    "breaker_open"};

#define NTRIG (sizeof(trigger_names) / sizeof(trigger_names[0]))

const char *mg_trigger_name(uint32_t trigger) {
  size_t i;
  for (i = 0; i < NTRIG; i++)
    if (trigger == (1u << i))
      return trigger_names[i];
  return "none";
}

/* An array of trigger names as a mask; def when absent. */
static uint32_t parse_triggers(const cJSON *obj, const char *key,
                               const char *path, uint32_t def,
                               struct mg_cfg_errors *e) {
  const cJSON *arr = cJSON_GetObjectItemCaseSensitive(obj, key), *it;
  char p[MG_CFG_PATH_MAX];
  uint32_t mask = 0;
  size_t i = 0, j;

  if (arr == NULL)
    return def;
  mg_cfg_join(p, path, key);
  if (!cJSON_IsArray(arr)) {
    mg_cfg_error(e, p, "must be an array of triggers");
    return def;
  }
  cJSON_ArrayForEach(it, arr) {
    char ip[MG_CFG_PATH_MAX];
    mg_cfg_join_idx(ip, p, i++);
    for (j = 0; j < NTRIG; j++)
      if (cJSON_IsString(it) && strcmp(it->valuestring, trigger_names[j]) == 0)
        break;
    if (j == NTRIG) {
      mg_cfg_error(e, ip,
                   "must be one of connect_error, timeout, 5xx, 429, "
                   "invalid, low_confidence, breaker_open");
      continue;
    }
    mask |= 1u << j;
  }
  return mask;
}

static void parse_retry(struct mg_retry_cfg *r, const cJSON *obj,
                        const char *path, struct mg_cfg_errors *e) {
  static const char *const keys[] = {"count", "backoff_ms", "max_backoff_ms",
                                     "jitter", "retry_after_max_ms", "on",
                                     NULL};
  /* Retries are off unless asked for: they spend the request's deadline. */
  r->count = 0;
  r->backoff_ms = 100;
  r->max_backoff_ms = 2000;
  r->jitter = 0.5;
  r->retry_after_max_ms = 10000;
  r->on = MG_TRIG_CONNECT | MG_TRIG_5XX | MG_TRIG_429;
  if (obj == NULL || !mg_cfg_object(obj, path, keys, e))
    return;
  r->count = (uint32_t)mg_cfg_int(obj, "count", path, 0, 0, 10, e);
  r->backoff_ms =
      (uint32_t)mg_cfg_int(obj, "backoff_ms", path, 100, 0, 600000, e);
  r->max_backoff_ms =
      (uint32_t)mg_cfg_int(obj, "max_backoff_ms", path, 2000, 0, 600000, e);
  r->jitter = mg_cfg_num(obj, "jitter", path, 0.5, 0, 1, e);
  r->retry_after_max_ms = (uint32_t)mg_cfg_int(obj, "retry_after_max_ms", path,
                                               10000, 0, 600000, e);
  r->on = parse_triggers(obj, "on", path, r->on, e) &
          ~(uint32_t)MG_TRIG_BREAKER;
}

static void parse_gate(struct mg_gate_cfg *g, const cJSON *obj,
                       const char *path, const struct mg_target *t,
                       struct mg_cfg_errors *e) {
  static const char *const keys[] = {"min", "source", "action", "missing",
                                     "stream", NULL};
  char p[MG_CFG_PATH_MAX], *s;

  memset(g, 0, sizeof(*g));
  g->source = MG_CONF_LOGPROBS_MEAN;
  if (obj == NULL || !mg_cfg_object(obj, path, keys, e))
    return;
  g->enabled = true;
  if (mg_cfg_require(obj, "min", path, e))
    g->min = mg_cfg_num(obj, "min", path, 0, -1e300, 1e300, e);
  s = mg_cfg_str(obj, "source", path, "logprobs_mean", true, e);
  if (s && mg_gate_parse_source(g, s) != 0) {
    mg_cfg_join(p, path, "source");
    mg_cfg_error(e, p,
                 "must be logprobs_mean, logprobs_min, header:<name> or "
                 "json:<pointer>, not \"%s\"",
                 s);
  }
  free(s);
  /* Anthropic's Messages API has no token logprobs: such a gate would
   * never see a signal. */
  if (mg_gate_needs_logprobs(g) && t->api == MG_API_ANTHROPIC) {
    mg_cfg_join(p, path, "source");
    mg_cfg_error(e, p,
                 "a target with api \"anthropic\" has no token logprobs; use "
                 "header:<name> or json:<pointer>");
  }
  if (mg_gate_needs_logprobs(g) && (g->min < 0 || g->min > 1)) {
    mg_cfg_join(p, path, "min");
    mg_cfg_error(e, p, "a logprobs confidence lies between 0 and 1");
  }
  s = mg_cfg_str(obj, "action", path, "fallback", true, e);
  mg_cfg_join(p, path, "action");
  if (s && strcmp(s, "abstain") == 0)
    g->abstain = true;
  else if (s && strcmp(s, "fallback") != 0)
    mg_cfg_error(e, p, "must be fallback or abstain, not \"%s\"", s);
  free(s);
  s = mg_cfg_str(obj, "missing", path, "pass", true, e);
  mg_cfg_join(p, path, "missing");
  if (s && strcmp(s, "fail") == 0)
    g->missing_fails = true;
  else if (s && strcmp(s, "pass") != 0)
    mg_cfg_error(e, p, "must be pass or fail, not \"%s\"", s);
  free(s);
  s = mg_cfg_str(obj, "stream", path, "pass", true, e);
  mg_cfg_join(p, path, "stream");
  if (s && strcmp(s, "buffer") == 0)
    g->buffer_streams = true;
  else if (s && strcmp(s, "pass") != 0)
    mg_cfg_error(e, p, "must be pass or buffer, not \"%s\"", s);
  free(s);
}

static void parse_breaker(struct mg_breaker_cfg *b, const cJSON *obj,
                          const char *path, struct mg_cfg_errors *e) {
  static const char *const keys[] = {"enabled",      "failures",
                                     "error_rate",   "window_ms",
                                     "min_requests", "cooldown_ms",
                                     "probes",       NULL};
  /* On by default: an outage must not cost every request a timeout. */
  b->enabled = true;
  b->failures = 5;
  b->error_rate = 0.5;
  b->window_ms = 10000;
  b->min_requests = 20;
  b->cooldown_ms = 5000;
  b->probes = 1;
  if (obj == NULL || !mg_cfg_object(obj, path, keys, e))
    return;
  b->enabled = mg_cfg_bool(obj, "enabled", path, true, e);
  b->failures = (uint32_t)mg_cfg_int(obj, "failures", path, 5, 0, 100000, e);
  b->error_rate = mg_cfg_num(obj, "error_rate", path, 0.5, 0, 1, e);
  b->window_ms =
      (uint32_t)mg_cfg_int(obj, "window_ms", path, 10000, 100, 3600000, e);
  b->min_requests =
      (uint32_t)mg_cfg_int(obj, "min_requests", path, 20, 1, 1000000, e);
  b->cooldown_ms =
      (uint32_t)mg_cfg_int(obj, "cooldown_ms", path, 5000, 1, 3600000, e);
  b->probes = (uint32_t)mg_cfg_int(obj, "probes", path, 1, 1, 1000, e);
}

static void parse_cache(struct mg_cache_cfg *c, const cJSON *obj,
                        struct mg_cfg_errors *e) {
  static const char *const keys[] = {"enabled",    "max_entries", "max_bytes",
                                     "ttl_ms",     "serve_hits",  NULL};
  const char *p = "$.cache";
  c->enabled = true;
  c->max_entries = 10000;
  c->max_bytes = 64u << 20;
  c->ttl_ms = 3600000;
  c->serve_hits = false;
  if (obj == NULL || !mg_cfg_object(obj, p, keys, e))
    return;
  c->enabled = mg_cfg_bool(obj, "enabled", p, true, e);
  c->max_entries =
      (uint32_t)mg_cfg_int(obj, "max_entries", p, 10000, 1, 100000000, e);
  c->max_bytes = (uint64_t)mg_cfg_int(obj, "max_bytes", p, 64 << 20, 4096,
                                      (int64_t)1 << 40, e);
  c->ttl_ms = (uint32_t)mg_cfg_int(obj, "ttl_ms", p, 3600000, 1, 2000000000, e);
  c->serve_hits = mg_cfg_bool(obj, "serve_hits", p, false, e);
}

static void parse_traditional(struct mg_fallbacks *f, const cJSON *sec,
                              struct mg_cfg_errors *e) {
  static const char *const keys[] = {"url",        "static", "static_json",
                                     "field",      "engine", "timeout_ms",
                                     NULL};
  const cJSON *it;
  if (sec == NULL || !mg_cfg_object(sec, "$.traditional", NULL, e))
    return;
  f->trad = calloc((size_t)cJSON_GetArraySize(sec) + 1, sizeof(*f->trad));
  if (f->trad == NULL) {
    mg_cfg_error(e, "$.traditional", "out of memory");
    return;
  }
  cJSON_ArrayForEach(it, sec) {
    struct mg_traditional *t = &f->trad[f->ntrad];
    char p[MG_CFG_PATH_MAX];
    mg_cfg_join(p, "$.traditional", it->string);
    t->name = strdup(it->string);
    t->index = (uint32_t)f->ntrad++;
    if (t->name == NULL ||
        mg_map_put(&f->trad_by_name, t->name, strlen(t->name), t) != 0)
      mg_cfg_error(e, p, "out of memory");
    if (!mg_cfg_object(it, p, keys, e))
      continue;
    t->url = mg_cfg_str(it, "url", p, NULL, true, e);
    t->static_text = mg_cfg_str(it, "static", p, NULL, false, e);
    t->field = mg_cfg_str(it, "field", p, NULL, false, e);
    t->timeout_ms =
        (uint32_t)mg_cfg_int(it, "timeout_ms", p, 5000, 1, 600000, e);
    {
      const cJSON *sj = cJSON_GetObjectItemCaseSensitive(it, "static_json");
      if (sj) {
        char q[MG_CFG_PATH_MAX];
        mg_cfg_join(q, p, "static_json");
        /* The answer's message content will be this document: a client in
         * JSON mode parses it, so it must be an object or an array. */
        if (!cJSON_IsObject(sj) && !cJSON_IsArray(sj))
          mg_cfg_error(e, q, "must be a JSON object or array (the answer "
                             "a JSON-mode client parses)");
        else if ((t->static_json = cJSON_PrintUnformatted(sj)) == NULL)
          mg_cfg_error(e, q, "out of memory");
      }
    }
    if (t->url && t->static_text)
      mg_cfg_error(e, p, "needs one of \"url\" or \"static\", not both");
    else if (t->url == NULL && t->static_text == NULL &&
             t->static_json == NULL)
      mg_cfg_error(e, p, "needs one of \"url\", \"static\" or "
                         "\"static_json\"");
    /* static_json alone answers every request with the document. */
    if (t->url == NULL && t->static_text == NULL && t->static_json &&
        (t->static_text = strdup(t->static_json)) == NULL)
      mg_cfg_error(e, p, "out of memory");
    if (t->url && strncmp(t->url, "http://", 7) != 0 &&
        strncmp(t->url, "https://", 8) != 0) {
      char q[MG_CFG_PATH_MAX];
      mg_cfg_join(q, p, "url");
      mg_cfg_error(e, q, "must be an http:// or https:// URL");
    }
    {
      char q[MG_CFG_PATH_MAX];
      char *en = mg_cfg_str(it, "engine", p, "auto", true, e);
      mg_cfg_join(q, p, "engine");
      if (en && strcmp(en, "native") == 0)
        t->engine = MG_ENGINE_NATIVE;
      else if (en && strcmp(en, "curl") == 0)
        t->engine = MG_ENGINE_CURL;
      else if (en && strcmp(en, "auto") != 0)
        mg_cfg_error(e, q, "must be auto, native or curl, not \"%s\"", en);
      free(en);
      if (t->engine == MG_ENGINE_NATIVE && t->url &&
          strncmp(t->url, "http://", 7) != 0)
        mg_cfg_error(e, q, "native serves http:// URLs only; %s needs curl "
                           "(or auto)", t->url);
    }
    if (t->field && t->field[0] != '\0' && t->field[0] != '/') {
      char q[MG_CFG_PATH_MAX];
      mg_cfg_join(q, p, "field");
      mg_cfg_error(e, q, "must be a JSON pointer such as \"/answer\"");
    }
  }
}

static void parse_chain(struct mg_policy *pol, const struct mg_target *self,
                        const cJSON *arr, const char *path,
                        const struct mg_targets *targets,
                        const struct mg_fallbacks *f, struct mg_cfg_errors *e) {
  const cJSON *it;
  size_t i = 0;
  if (arr == NULL)
    return;
  if (!cJSON_IsArray(arr)) {
    mg_cfg_error(e, path, "must be an array of tiers");
    return;
  }
  pol->chain = calloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof(*pol->chain));
  if (pol->chain == NULL) {
    mg_cfg_error(e, path, "out of memory");
    return;
  }
  cJSON_ArrayForEach(it, arr) {
    struct mg_tier *t = &pol->chain[pol->nchain];
    char p[MG_CFG_PATH_MAX];
    mg_cfg_join_idx(p, path, i++);
    if (!cJSON_IsString(it)) {
      mg_cfg_error(e, p, "must be a target, \"cache\" or \"traditional:<name>\"");
      continue;
    }
    if (strcmp(it->valuestring, "cache") == 0) {
      t->kind = MG_TIER_CACHE;
      if (!f->cache.enabled)
        mg_cfg_error(e, p, "the cache is disabled ($.cache.enabled)");
    } else if (strncmp(it->valuestring, "traditional:", 12) == 0) {
      const char *name = it->valuestring + 12;
      t->kind = MG_TIER_TRADITIONAL;
      t->trad = mg_map_get(&f->trad_by_name, name, strlen(name));
      if (t->trad == NULL) {
        mg_cfg_error(e, p, "unknown traditional path \"%s\"", name);
        continue;
      }
    } else {
      t->kind = MG_TIER_TARGET;
      t->target = mg_targets_find(targets, it->valuestring);
      if (t->target == NULL) {
        mg_cfg_error(e, p, "unknown target \"%s\"", it->valuestring);
        continue;
      }
      if (t->target == self) {
        mg_cfg_error(e, p, "a target cannot fall back to itself (use "
                           "retries)");
        continue;
      }
    }
    pol->nchain++;
  }
}

void mg_fallbacks_parse(struct mg_fallbacks *out, const cJSON *root,
                        const struct mg_targets *targets,
                        struct mg_cfg_errors *e) {
  const cJSON *tsec = cJSON_GetObjectItemCaseSensitive(root, "targets");
  size_t i;

  memset(out, 0, sizeof(*out));
  mg_map_init(&out->trad_by_name);
  parse_cache(&out->cache, cJSON_GetObjectItemCaseSensitive(root, "cache"), e);
  parse_traditional(out,
                    cJSON_GetObjectItemCaseSensitive(root, "traditional"), e);
  out->npolicies = targets->n;
  out->policies = calloc(targets->n ? targets->n : 1, sizeof(*out->policies));
  if (out->policies == NULL) {
    mg_cfg_error(e, "$.targets", "out of memory");
    return;
  }
  for (i = 0; i < targets->n; i++) {
    const struct mg_target *t = &targets->v[i];
    struct mg_policy *pol = &out->policies[i];
    const cJSON *obj = cJSON_GetObjectItemCaseSensitive(tsec, t->name);
    char path[MG_CFG_PATH_MAX], p[MG_CFG_PATH_MAX];

    mg_cfg_join(path, "$.targets", t->name);
    mg_cfg_join(p, path, "retries");
    parse_retry(&pol->retry, cJSON_GetObjectItemCaseSensitive(obj, "retries"),
                p, e);
    mg_cfg_join(p, path, "confidence");
    parse_gate(&pol->gate, cJSON_GetObjectItemCaseSensitive(obj, "confidence"),
               p, t, e);
    mg_cfg_join(p, path, "breaker");
    parse_breaker(&pol->breaker,
                  cJSON_GetObjectItemCaseSensitive(obj, "breaker"), p, e);
    mg_cfg_join(p, path, "fallbacks");
    parse_chain(pol, t, cJSON_GetObjectItemCaseSensitive(obj, "fallbacks"), p,
                targets, out, e);
    pol->fallback_on = parse_triggers(obj, "fallback_on", path, MG_TRIG_ALL, e);
    /* By default the whole request, fallbacks included, fits in the first
     * target's total timeout: fallbacks never multiply it. */
    pol->deadline_ms = (uint32_t)mg_cfg_int(obj, "deadline_ms", path,
                                            t->timeouts.total_ms, 1, 86400000,
                                            e);
  }
}

void mg_fallbacks_free(struct mg_fallbacks *f) {
  size_t i;
  for (i = 0; i < f->npolicies; i++) {
    free(f->policies[i].chain);
    free(f->policies[i].gate.header);
    free(f->policies[i].gate.pointer);
  }
  free(f->policies);
  for (i = 0; i < f->ntrad; i++) {
    free(f->trad[i].name);
    free(f->trad[i].url);
    free(f->trad[i].static_text);
    free(f->trad[i].static_json);
    free(f->trad[i].field);
  }
  free(f->trad);
  mg_map_free(&f->trad_by_name);
  memset(f, 0, sizeof(*f));
}
