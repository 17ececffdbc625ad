/* flag.c - the "flags" section and variant selection. */
#include "routing/flag.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"
#include "common/json.h"
#include "common/time.h"

static const char *const reason_names[] = {
    "killed", "window", "blocked", "allowed",
    "rule",   "rollout", "no_unit", "ramp_inputs", "default"};
static const char *const unit_names[] = {"user", "attr", "request", "input"};

const char *mg_reason_name(enum mg_reason r, int32_t rule, char *buf,
                           size_t n) {
  char digits[12];
  size_t k = 0, i = 0;
  uint32_t v;
  /* Once or twice per request: no printf (a static name is returned as it
   * is; "rule:N" is written by hand). */
  if (r != MG_REASON_RULE)
    return reason_names[r];
  v = rule < 0 ? 0u : (uint32_t)rule;
  do
    digits[k++] = (char)('0' + v % 10);
  while ((v /= 10) != 0);
  if (n < 5 + k + 1) {
    if (n > 0)
      buf[0] = '\0';
    return buf;
  }
  memcpy(buf, "rule:", 5);
  for (i = 0; i < k; i++)
    buf[5 + i] = digits[k - 1 - i];
  buf[5 + k] = '\0';
  return buf;
}

const char *mg_unit_kind_name(enum mg_unit_kind k) { return unit_names[k]; }

uint32_t mg_bucket(const char *salt, size_t salt_len, const void *unit,
                   size_t len) {
  return (uint32_t)(mg_hash_salted(salt, salt_len, unit, len) % MG_BUCKETS);
}

/* ---- parsing ---------------------------------------------------------------- */

/* "ramp" and "guards" are parsed by ramps/ramp.c (a layer above). */
static const char *const flag_keys[] = {
    "enabled", "off_variant", "salt",         "unit",
    "start",   "end",         "block",        "variants",
    "rules",   "ramp",        "guards",       "missing_unit",
    "fallback_to_control",    "decide",       "brief", NULL};
static const char *const variant_keys[] = {"target", "weight", "allow", NULL};
static const char *const rule_keys[] = {"if", "variant", NULL};

/* A list of unit ids as a set. */
static void parse_id_set(const cJSON *arr, const char *path,
                         struct mg_map *set, char ***keys, size_t *n,
                         struct mg_cfg_errors *e) {
  const cJSON *it;
  size_t i = 0;
  mg_map_init(set);
  *keys = NULL;
  *n = 0;
  if (arr == NULL)
    return;
  if (!cJSON_IsArray(arr)) {
    mg_cfg_error(e, path, "must be an array of unit ids");
    return;
  }
  *keys = calloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof(char *));
  if (*keys == NULL) {
    mg_cfg_error(e, path, "out of memory");
    return;
  }
  cJSON_ArrayForEach(it, arr) {
    char p[MG_CFG_PATH_MAX];
    mg_cfg_join_idx(p, path, i++);
    if (!cJSON_IsString(it) || it->valuestring[0] == '\0') {
      mg_cfg_error(e, p, "must be a non-empty string");
      continue;
    }
    (*keys)[*n] = strdup(it->valuestring);
    if ((*keys)[*n] == NULL ||
        mg_map_put(set, (*keys)[*n], strlen((*keys)[*n]), (void *)1)) {
      mg_cfg_error(e, p, "out of memory");
      continue;
    }
    (*n)++;
  }
}

static void free_id_set(struct mg_map *set, char **keys, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    free(keys[i]);
  free(keys);
  mg_map_free(set);
}

/* Percent with at most two decimals -> basis points; -1 when invalid. */
static int64_t percent_to_bp(double w) {
  double bp = w * 100;
  double r = round(bp);
  if (!(w >= 0 && w <= 100) || fabs(bp - r) > 1e-6)
    return -1;
  return (int64_t)r;
}

static void parse_variants(struct mg_flag *f, const cJSON *vs,
                           const char *path, const struct mg_targets *targets,
                           struct mg_cfg_errors *e) {
  const cJSON *it;
  uint32_t with_weight = 0, sum = 0;
  size_t n;

  if (vs == NULL) {
    mg_cfg_error(e, path, "is required: name at least one variant");
    return;
  }
  if (!mg_cfg_object(vs, path, NULL, e))
    return;
  n = (size_t)cJSON_GetArraySize(vs);
  if (n == 0 || n > MG_FLAG_MAX_VARIANTS) {
    mg_cfg_error(e, path, "must name between 1 and %d variants",
                 MG_FLAG_MAX_VARIANTS);
    return;
  }
  f->variants = calloc(n, sizeof(*f->variants));
  if (f->variants == NULL) {
    mg_cfg_error(e, path, "out of memory");
    return;
  }
  cJSON_ArrayForEach(it, vs) {
    struct mg_variant *v = &f->variants[f->nvariants++];
    const cJSON *w;
    char p[MG_CFG_PATH_MAX], q[MG_CFG_PATH_MAX];

    mg_cfg_join(p, path, it->string);
    v->name = strdup(it->string);
    mg_map_init(&v->allow);
    if (!mg_cfg_object(it, p, variant_keys, e))
      continue;
    if (mg_cfg_require(it, "target", p, e)) {
      char *t = mg_cfg_str(it, "target", p, NULL, true, e);
      if (t) {
        v->target = mg_targets_find(targets, t);
        if (v->target == NULL) {
          mg_cfg_join(q, p, "target");
          mg_cfg_error(e, q, "unknown target \"%s\"", t);
        }
      }
      free(t);
    }
    w = cJSON_GetObjectItemCaseSensitive(it, "weight");
    if (w) {
      int64_t bp = cJSON_IsNumber(w) ? percent_to_bp(w->valuedouble) : -1;
      mg_cfg_join(q, p, "weight");
      if (bp < 0) {
        mg_cfg_error(e, q,
                     "must be a percentage between 0 and 100 with at most "
                     "two decimals");
      } else {
        v->weight = (uint32_t)bp;
        sum += (uint32_t)bp;
      }
      with_weight++;
    }
    mg_cfg_join(q, p, "allow");
    parse_id_set(cJSON_GetObjectItemCaseSensitive(it, "allow"), q, &v->allow,
                 &v->allow_keys, &v->nallow, e);
  }
  if (with_weight > 0 && with_weight != f->nvariants) {
    mg_cfg_error(e, path,
                 "give every variant a weight, or none (no rollout)");
  } else if (with_weight > 0 && sum != MG_BUCKETS) {
    mg_cfg_error(e, path, "weights must sum to 100, not %.2f", sum / 100.0);
  }
  f->has_weights = with_weight > 0;
}

static int variant_by_name(const struct mg_flag *f, const char *name) {
  uint32_t i;
  for (i = 0; i < f->nvariants; i++)
    if (f->variants[i].name && strcmp(f->variants[i].name, name) == 0)
      return (int)i;
  return -1;
}

int mg_flag_variant_index(const struct mg_flag *f, const char *name) {
  return variant_by_name(f, name);
}

static void parse_rules(struct mg_flag *f, const cJSON *rs, const char *path,
                        struct mg_cfg_errors *e) {
  const cJSON *it;
  uint32_t i = 0;
  if (rs == NULL)
    return;
  if (!cJSON_IsArray(rs)) {
    mg_cfg_error(e, path, "must be an array of rules");
    return;
  }
  f->rules = calloc((size_t)cJSON_GetArraySize(rs) + 1, sizeof(*f->rules));
  if (f->rules == NULL) {
    mg_cfg_error(e, path, "out of memory");
    return;
  }
  cJSON_ArrayForEach(it, rs) {
    struct mg_rule *r = &f->rules[f->nrules++];
    char p[MG_CFG_PATH_MAX], q[MG_CFG_PATH_MAX];
    mg_cfg_join_idx(p, path, i++);
    if (!mg_cfg_object(it, p, rule_keys, e))
      continue;
    if (mg_cfg_require(it, "if", p, e)) {
      mg_cfg_join(q, p, "if");
      mg_cond_parse(&r->cond, cJSON_GetObjectItemCaseSensitive(it, "if"), q,
                    e);
    }
    if (mg_cfg_require(it, "variant", p, e)) {
      char *name = mg_cfg_str(it, "variant", p, NULL, true, e);
      int vi = name ? variant_by_name(f, name) : -1;
      mg_cfg_join(q, p, "variant");
      if (name && vi < 0)
        mg_cfg_error(e, q, "unknown variant \"%s\"", name);
      r->variant = vi < 0 ? 0 : (uint32_t)vi;
      free(name);
    }
  }
}

static void parse_time(const cJSON *obj, const char *key, const char *path,
                       int64_t *out, struct mg_cfg_errors *e) {
  char *s = mg_cfg_str(obj, key, path, NULL, true, e);
  if (s && mg_rfc3339_parse(s, out) != 0) {
    char p[MG_CFG_PATH_MAX];
    mg_cfg_join(p, path, key);
    mg_cfg_error(e, p, "must be an RFC 3339 time such as "
                       "2026-11-21T09:00:00Z, not \"%s\"",
                 s);
  }
  free(s);
}

static void parse_flag(struct mg_flag *f, const char *name, const cJSON *obj,
                       const char *path, const struct mg_targets *targets,
                       struct mg_cfg_errors *e) {
  char p[MG_CFG_PATH_MAX];
  char *s;

  f->name = strdup(name);
  f->start_ms = INT64_MIN;
  f->end_ms = INT64_MAX;
  f->enabled = true;
  mg_map_init(&f->block);
  if (!mg_cfg_object(obj, path, flag_keys, e))
    return;
  f->enabled = mg_cfg_bool(obj, "enabled", path, true, e);
  f->salt = mg_cfg_str(obj, "salt", path, name, true, e);
  f->salt_len = f->salt ? strlen(f->salt) : 0;

  mg_cfg_join(p, path, "variants");
  parse_variants(f, cJSON_GetObjectItemCaseSensitive(obj, "variants"), p,
                 targets, e);

  if (mg_cfg_require(obj, "off_variant", path, e)) {
    s = mg_cfg_str(obj, "off_variant", path, NULL, true, e);
    if (s) {
      int vi = variant_by_name(f, s);
      mg_cfg_join(p, path, "off_variant");
      if (vi < 0 && f->nvariants > 0)
        mg_cfg_error(e, p, "unknown variant \"%s\"", s);
      f->off_variant = vi < 0 ? 0 : (uint32_t)vi;
    }
    free(s);
  }

  s = mg_cfg_str(obj, "unit", path, "user", true, e);
  mg_cfg_join(p, path, "unit");
  if (s == NULL || strcmp(s, "user") == 0) {
    f->unit = MG_UNIT_USER;
  } else if (strcmp(s, "request") == 0) {
    f->unit = MG_UNIT_REQUEST;
  } else if (strcmp(s, "input") == 0) {
    f->unit = MG_UNIT_INPUT;
  } else if (strncmp(s, "attr:", 5) == 0 && s[5] != '\0') {
    f->unit = MG_UNIT_ATTR;
    f->unit_attr = strdup(s + 5);
    f->unit_attr_len = strlen(s + 5);
  } else {
    mg_cfg_error(e, p, "must be user, request, input or attr:<name>, not "
                       "\"%s\"",
                 s);
  }
  free(s);

  s = mg_cfg_str(obj, "missing_unit", path, "off_variant", true, e);
  mg_cfg_join(p, path, "missing_unit");
  if (s && strcmp(s, "request") == 0)
    f->missing_unit = MG_MISSING_REQUEST;
  else if (s && strcmp(s, "off_variant") != 0)
    mg_cfg_error(e, p, "must be off_variant or request, not \"%s\"", s);
  free(s);
  f->fallback_to_control =
      mg_cfg_bool(obj, "fallback_to_control", path, true, e);

  parse_time(obj, "start", path, &f->start_ms, e);
  parse_time(obj, "end", path, &f->end_ms, e);
  if (f->start_ms != INT64_MIN && f->end_ms != INT64_MAX &&
      f->start_ms >= f->end_ms) {
    mg_cfg_join(p, path, "end");
    mg_cfg_error(e, p, "must be after start");
  }

  mg_cfg_join(p, path, "block");
  parse_id_set(cJSON_GetObjectItemCaseSensitive(obj, "block"), p, &f->block,
               &f->block_keys, &f->nblock, e);

  mg_cfg_join(p, path, "rules");
  parse_rules(f, cJSON_GetObjectItemCaseSensitive(obj, "rules"), p, e);

  /* Allow and block lists name units; request and input units have no
   * name a list could hold. */
  if (f->unit == MG_UNIT_REQUEST || f->unit == MG_UNIT_INPUT) {
    uint32_t i;
    bool lists = f->nblock > 0;
    for (i = 0; i < f->nvariants; i++)
      lists |= f->variants[i].nallow > 0;
    if (lists) {
      mg_cfg_join(p, path, "unit");
      mg_cfg_error(e, p,
                   "allow and block lists need unit user or attr:<name>");
    }
  }
}

void mg_flags_parse(struct mg_flags *out, const cJSON *section,
                    const struct mg_targets *targets,
                    struct mg_cfg_errors *e) {
  const cJSON *it;
  memset(out, 0, sizeof(*out));
  mg_map_init(&out->by_name);
  if (section == NULL || !mg_cfg_object(section, "$.flags", NULL, e))
    return;
  out->v = calloc((size_t)cJSON_GetArraySize(section) + 1, sizeof(*out->v));
  if (out->v == NULL) {
    mg_cfg_error(e, "$.flags", "out of memory");
    return;
  }
  cJSON_ArrayForEach(it, section) {
    struct mg_flag *f = &out->v[out->n];
    char p[MG_CFG_PATH_MAX];
    mg_cfg_join(p, "$.flags", it->string);
    f->index = (uint32_t)out->n++;
    parse_flag(f, it->string, it, p, targets, e);
    if (f->name && mg_map_put(&out->by_name, f->name, strlen(f->name), f))
      mg_cfg_error(e, p, "out of memory");
  }
}

void mg_flags_free(struct mg_flags *fs) {
  size_t i;
  uint32_t j;
  for (i = 0; i < fs->n; i++) {
    struct mg_flag *f = &fs->v[i];
    for (j = 0; j < f->nvariants; j++) {
      free(f->variants[j].name);
      free_id_set(&f->variants[j].allow, f->variants[j].allow_keys,
                  f->variants[j].nallow);
    }
    free(f->variants);
    for (j = 0; j < f->nrules; j++)
      mg_cond_free(&f->rules[j].cond);
    free(f->rules);
    free_id_set(&f->block, f->block_keys, f->nblock);
    free(f->name);
    free(f->salt);
    free(f->unit_attr);
  }
  free(fs->v);
  mg_map_free(&fs->by_name);
  memset(fs, 0, sizeof(*fs));
}

const struct mg_flag *mg_flags_find(const struct mg_flags *fs,
                                    const char *name) {
  return mg_map_get(&fs->by_name, name, strlen(name));
}

/* ---- state and layout --------------------------------------------------- */

static void layout(struct mg_flag_state *st, const struct mg_flag *f) {
  uint32_t lo = 0, hi = MG_BUCKETS, i, k = 0;
  for (i = 0; i < f->nvariants; i++) {
    uint32_t w = st->weights[i];
    if (i == f->off_variant)
      continue;
    if (k++ % 2 == 0) {
      st->lo[i] = lo;
      st->hi[i] = lo + w;
      lo += w;
    } else {
      st->lo[i] = hi - w;
      st->hi[i] = hi;
      hi -= w;
    }
  }
  /* The control holds what is left in the middle: its own weight, since
   * the weights sum to 10000. */
  st->lo[f->off_variant] = lo;
  st->hi[f->off_variant] = hi;
}

void mg_flag_state_init(struct mg_flag_state *st, const struct mg_flag *f) {
  uint32_t i;
  memset(st, 0, sizeof(*st));
  st->killed = !f->enabled;
  st->has_weights = f->has_weights;
  for (i = 0; i < f->nvariants; i++)
    st->weights[i] = f->variants[i].weight;
  if (st->has_weights)
    layout(st, f);
}

int mg_flag_state_set_weights(struct mg_flag_state *st,
                              const struct mg_flag *f,
                              const uint32_t *weights) {
  uint32_t i, sum = 0;
  for (i = 0; i < f->nvariants; i++) {
    if (weights[i] > MG_BUCKETS)
      return -EINVAL;
    sum += weights[i];
  }
  if (sum != MG_BUCKETS)
    return -EINVAL;
  for (i = 0; i < f->nvariants; i++)
    st->weights[i] = weights[i];
  st->has_weights = true;
  layout(st, f);
  return 0;
}

/* ---- evaluation ---------------------------------------------------------------- */

/* The unit id for user and attribute units; false when the request has
 * none. */
static bool named_unit(const struct mg_flag *f, const struct mg_request *r,
                       struct mg_str *id, enum mg_unit_source *src) {
  *src = MG_USRC_NONE;
  if (f->unit == MG_UNIT_USER) {
    *src = mg_request_unit(r, id);
    return *src != MG_USRC_NONE;
  }
  if (f->unit == MG_UNIT_ATTR) {
    const struct mg_str *v =
        mg_request_attr(r, (struct mg_str){f->unit_attr, f->unit_attr_len});
    if (v && v->len) {
      *id = *v;
      return true;
    }
  }
  return false;
}

#define DECIDE(v, why)                                                       \
  do {                                                                       \
    out->variant = (v);                                                      \
    out->reason = (why);                                                     \
    return;                                                                  \
  } while (0)

void mg_flag_eval(const struct mg_flag *f, const struct mg_flag_state *st,
                  const struct mg_request *r, int64_t now_ms, uint64_t rnd,
                  struct mg_flag_decision *out) {
  struct mg_str id = MG_STR_NULL;
  bool named = false;
  uint32_t i;

  out->rule = -1;
  out->bucket = MG_NO_BUCKET;
  out->unit_kind = f->unit;
  out->unit_source = MG_USRC_NONE;
  out->has_unit = false;
  out->unit_hash = 0;

  if (f->unit == MG_UNIT_USER || f->unit == MG_UNIT_ATTR) {
    named = named_unit(f, r, &id, &out->unit_source);
    if (named) {
      out->unit_hash = mg_xxh64(id.p, id.len, 0);
      out->has_unit = true;
    } else {
      /* No unit: the record says "request" and carries none. */
      out->unit_kind = MG_UNIT_REQUEST;
    }
  }

  if (st->killed)
    DECIDE(f->off_variant, MG_REASON_KILLED);
  if (now_ms < f->start_ms || now_ms >= f->end_ms)
    DECIDE(f->off_variant, MG_REASON_WINDOW);
  if (named && f->nblock && mg_map_gets(&f->block, id))
    DECIDE(f->off_variant, MG_REASON_BLOCKED);
  if (named)
    for (i = 0; i < f->nvariants; i++)
      if (f->variants[i].nallow && mg_map_gets(&f->variants[i].allow, id))
        DECIDE(i, MG_REASON_ALLOWED);
  for (i = 0; i < f->nrules; i++)
    if (mg_cond_eval(&f->rules[i].cond, r)) {
      out->rule = (int32_t)i;
      DECIDE(f->rules[i].variant, MG_REASON_RULE);
    }
  if (!st->has_weights)
    DECIDE(f->off_variant, MG_REASON_DEFAULT);
  if (st->gated && (r->input.chars > st->gate_max_chars ||
                    r->input.tools > st->gate_max_tools))
    DECIDE(f->off_variant, MG_REASON_RAMP_INPUTS);

  if (named) {
    out->bucket = mg_bucket(f->salt, f->salt_len, id.p, id.len);
  } else if (f->unit == MG_UNIT_INPUT && r->doc &&
             r->messages_tok != MG_JSON_NOTFOUND) {
    /* The same messages, however they are spelled (key order, spacing,
     * escapes, number forms), give the same unit. */
    struct mg_buf canon;
    mg_buf_init(&canon, r->body_len * 6 + 64);
    if (mg_json_canonical(r->doc, r->messages_tok, NULL, &canon) == 0 &&
        canon.data) {
      out->bucket = mg_bucket(f->salt, f->salt_len, canon.data, canon.len);
      out->unit_hash = mg_xxh64(canon.data, canon.len, 0);
      out->has_unit = true;
    } else {
      out->unit_kind = MG_UNIT_REQUEST;
    }
    mg_buf_free(&canon);
  } else {
    out->unit_kind = MG_UNIT_REQUEST;
  }
  if (out->bucket == MG_NO_BUCKET) {
    /* A request without its flag's unit is not randomized unless the flag
     * asks: drawing it afresh each time would flip one user between arms
     * on every call (issue 11.1). Request units are always drawn. */
    if (f->unit != MG_UNIT_REQUEST && f->missing_unit != MG_MISSING_REQUEST)
      DECIDE(f->off_variant, MG_REASON_NO_UNIT);
    out->bucket = (uint32_t)(rnd % MG_BUCKETS);
  }

  for (i = 0; i < f->nvariants; i++)
    if (out->bucket >= st->lo[i] && out->bucket < st->hi[i])
      DECIDE(i, MG_REASON_ROLLOUT);
  /* Unreachable with weights summing to 10000. */
  DECIDE(f->off_variant, MG_REASON_DEFAULT);
}
