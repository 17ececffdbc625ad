/* rule.c - targeting conditions: parsing with JSON paths, evaluation. */
#include "routing/rule.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const op_names[] = {
    "in",     "not_in", "eq",     "ne",       "lt",     "le",
    "gt",     "ge",     "prefix", "suffix",   "contains", "exists"};
static const char *const input_names[] = {"chars", "messages", "tools",
                                          "stream", "max_tokens"};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

void mg_cond_free(struct mg_cond *c) {
  uint32_t i;
  if (c->children) {
    for (i = 0; i < c->n; i++)
      mg_cond_free(&c->children[i]);
    free(c->children);
  }
  if (c->strs) {
    for (i = 0; i < c->n; i++)
      free((char *)c->strs[i].p);
    free(c->strs);
  }
  free(c->nums);
  free(c->attr);
  memset(c, 0, sizeof(*c));
}

static bool parse_children(struct mg_cond *c, const cJSON *arr,
                           const char *path, struct mg_cfg_errors *e) {
  const cJSON *it;
  uint32_t i = 0;
  bool ok = true;
  if (!cJSON_IsArray(arr)) {
    mg_cfg_error(e, path, "must be an array of conditions");
    return false;
  }
  c->n = (uint32_t)cJSON_GetArraySize(arr);
  c->children = calloc(c->n ? c->n : 1, sizeof(*c->children));
  if (c->children == NULL) {
    c->n = 0;
    mg_cfg_error(e, path, "out of memory");
    return false;
  }
  cJSON_ArrayForEach(it, arr) {
    char p[MG_CFG_PATH_MAX];
    mg_cfg_join_idx(p, path, i);
    ok &= mg_cond_parse(&c->children[i++], it, p, e);
  }
  return ok;
}

static int op_from_name(const char *s) {
  size_t i;
  for (i = 0; i < NELEM(op_names); i++)
    if (strcmp(op_names[i], s) == 0)
      return (int)i;
  return -1;
}

static int input_from_name(const char *s) {
  size_t i;
  if (strncmp(s, "input.", 6) == 0)
    s += 6;
  for (i = 0; i < NELEM(input_names); i++)
    if (strcmp(input_names[i], s) == 0)
      return (int)i;
  return -1;
}

/* Store one scalar as the leaf's value(s); numbers and strings may not be
 * mixed within one condition. */
static bool add_value(struct mg_cond *c, const cJSON *v, uint32_t i,
                      const char *path, struct mg_cfg_errors *e) {
  if (cJSON_IsNumber(v) || cJSON_IsBool(v)) {
    if (i > 0 && !c->numeric)
      goto mixed;
    c->numeric = true;
    c->nums[i] = cJSON_IsBool(v) ? (cJSON_IsTrue(v) ? 1 : 0) : v->valuedouble;
    return true;
  }
  if (cJSON_IsString(v)) {
    if (i > 0 && c->numeric)
      goto mixed;
    c->strs[i].p = strdup(v->valuestring);
    c->strs[i].len = strlen(v->valuestring);
    return c->strs[i].p != NULL;
  }
  mg_cfg_error(e, path, "must be a string, a number or a boolean");
  return false;
mixed:
  mg_cfg_error(e, path, "mixes numbers and strings");
  return false;
}

static bool parse_leaf(struct mg_cond *c, const cJSON *json, const char *path,
                       struct mg_cfg_errors *e) {
  static const char *const attr_keys[] = {"attr", "op", "value", "values",
                                          NULL};
  static const char *const input_keys[] = {"input", "op", "value", "values",
                                            NULL};
  const cJSON *op = cJSON_GetObjectItemCaseSensitive(json, "op");
  const cJSON *value = cJSON_GetObjectItemCaseSensitive(json, "value");
  const cJSON *values = cJSON_GetObjectItemCaseSensitive(json, "values");
  char p[MG_CFG_PATH_MAX];
  bool ok = true;
  int o;
  uint32_t i;

  mg_cfg_object(json, path, c->kind == MG_COND_ATTR ? attr_keys : input_keys,
                e);
  if (c->kind == MG_COND_ATTR) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(json, "attr");
    mg_cfg_join(p, path, "attr");
    if (!cJSON_IsString(a) || a->valuestring[0] == '\0') {
      mg_cfg_error(e, p, "must name an attribute");
      ok = false;
    } else {
      /* Matched case-insensitively (mg_request_attr). */
      c->attr = strdup(a->valuestring);
      c->attr_len = c->attr ? strlen(c->attr) : 0;
    }
  } else {
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(json, "input");
    int f = cJSON_IsString(in) ? input_from_name(in->valuestring) : -1;
    mg_cfg_join(p, path, "input");
    if (f < 0) {
      mg_cfg_error(e, p,
                   "must be one of chars, messages, tools, stream, max_tokens");
      ok = false;
    } else {
      c->field = (uint8_t)f;
    }
  }

  mg_cfg_join(p, path, "op");
  if (!cJSON_IsString(op)) {
    mg_cfg_error(e, p, "is required: one of in, not_in, eq, ne, lt, le, gt, "
                       "ge, prefix, suffix, contains, exists");
    return false;
  }
  o = op_from_name(op->valuestring);
  if (o < 0) {
    mg_cfg_error(e, p, "unknown operator \"%s\"", op->valuestring);
    return false;
  }
  c->op = (uint8_t)o;

  if (o == MG_OP_EXISTS) {
    if (value || values) {
      mg_cfg_error(e, path, "exists takes no value");
      return false;
    }
    return ok;
  }
  if (o == MG_OP_IN || o == MG_OP_NOT_IN) {
    mg_cfg_join(p, path, "values");
    if (value || !cJSON_IsArray(values) || cJSON_GetArraySize(values) == 0) {
      mg_cfg_error(e, p, "%s needs \"values\": a non-empty array",
                   op_names[o]);
      return false;
    }
    c->n = (uint32_t)cJSON_GetArraySize(values);
  } else {
    mg_cfg_join(p, path, "value");
    if (values || value == NULL) {
      mg_cfg_error(e, p, "%s needs one \"value\"", op_names[o]);
      return false;
    }
    c->n = 1;
  }
  c->strs = calloc(c->n, sizeof(*c->strs));
  c->nums = calloc(c->n, sizeof(*c->nums));
  if (c->strs == NULL || c->nums == NULL) {
    mg_cfg_error(e, path, "out of memory");
    return false;
  }
  if (values) {
    const cJSON *it;
    i = 0;
    cJSON_ArrayForEach(it, values) {
      char ip[MG_CFG_PATH_MAX];
      mg_cfg_join_idx(ip, p, i);
      ok &= add_value(c, it, i++, ip, e);
    }
  } else {
    ok &= add_value(c, value, 0, p, e);
  }
  if (!ok)
    return false;

  /* Operators that need a kind of value. */
  if ((o == MG_OP_LT || o == MG_OP_LE || o == MG_OP_GT || o == MG_OP_GE) &&
      !c->numeric) {
    mg_cfg_error(e, p, "%s compares numbers: the value must be a number",
                 op_names[o]);
    return false;
  }
  if ((o == MG_OP_PREFIX || o == MG_OP_SUFFIX || o == MG_OP_CONTAINS) &&
      (c->numeric || c->kind == MG_COND_INPUT)) {
    mg_cfg_error(e, p, "%s applies to attributes with a string value",
                 op_names[o]);
    return false;
  }
  if (c->kind == MG_COND_INPUT && !c->numeric) {
    mg_cfg_error(e, p, "input features are numbers (stream: true/false)");
    return false;
  }
  return true;
}

bool mg_cond_parse(struct mg_cond *c, const cJSON *json, const char *path,
                   struct mg_cfg_errors *e) {
  static const char *const kinds[] = {"all", "any", "not", "attr", "input"};
  const cJSON *k = NULL;
  size_t i, found = 0;
  char p[MG_CFG_PATH_MAX];

  memset(c, 0, sizeof(*c));
  if (!cJSON_IsObject(json)) {
    mg_cfg_error(e, path, "must be a condition object");
    return false;
  }
  for (i = 0; i < NELEM(kinds); i++) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(json, kinds[i]);
    if (x) {
      found++;
      k = x;
      c->kind = (uint8_t)i;
    }
  }
  if (found != 1) {
    mg_cfg_error(e, path,
                 "must have exactly one of all, any, not, attr, input");
    return false;
  }
  if (c->kind == MG_COND_ALL || c->kind == MG_COND_ANY) {
    static const char *const all_keys[] = {"all", NULL};
    static const char *const any_keys[] = {"any", NULL};
    mg_cfg_object(json, path, c->kind == MG_COND_ALL ? all_keys : any_keys,
                  e);
    mg_cfg_join(p, path, kinds[c->kind]);
    return parse_children(c, k, p, e);
  }
  if (c->kind == MG_COND_NOT) {
    static const char *const not_keys[] = {"not", NULL};
    mg_cfg_object(json, path, not_keys, e);
    c->n = 1;
    c->children = calloc(1, sizeof(*c->children));
    if (c->children == NULL) {
      c->n = 0;
      return false;
    }
    mg_cfg_join(p, path, "not");
    return mg_cond_parse(&c->children[0], k, p, e);
  }
  return parse_leaf(c, json, path, e);
}

/* ---- evaluation ------------------------------------------------------------ */

static bool num_cmp(uint8_t op, double v, const struct mg_cond *c) {
  uint32_t i;
  switch (op) {
  case MG_OP_IN:
  case MG_OP_EQ:
    for (i = 0; i < c->n; i++)
      if (v == c->nums[i])
        return true;
    return false;
  case MG_OP_NOT_IN:
  case MG_OP_NE:
    for (i = 0; i < c->n; i++)
      if (v == c->nums[i])
        return false;
    return true;
  case MG_OP_LT:
    return v < c->nums[0];
  case MG_OP_LE:
    return v <= c->nums[0];
  case MG_OP_GT:
    return v > c->nums[0];
  case MG_OP_GE:
    return v >= c->nums[0];
  default:
    return false;
  }
}

/* An attribute's value as a number, when it is one. */
static bool attr_number(struct mg_str s, double *out) {
  char buf[64], *end;
  if (s.len == 0 || s.len >= sizeof(buf))
    return false;
  memcpy(buf, s.p, s.len);
  buf[s.len] = '\0';
  *out = strtod(buf, &end);
  return *end == '\0' && isfinite(*out);
}

static bool eval_attr(const struct mg_cond *c, const struct mg_request *r) {
  const struct mg_str *v =
      mg_request_attr(r, (struct mg_str){c->attr, c->attr_len});
  uint32_t i;

  if (c->op == MG_OP_EXISTS)
    return v != NULL;
  /* A condition on a missing attribute does not match, whatever its
   * operator (use {"not": {"attr": x, "op": "exists"}} for absence). */
  if (v == NULL)
    return false;
  if (c->numeric) {
    double d;
    return attr_number(*v, &d) && num_cmp(c->op, d, c);
  }
  switch (c->op) {
  case MG_OP_IN:
  case MG_OP_EQ:
    for (i = 0; i < c->n; i++)
      if (mg_str_eq(*v, c->strs[i]))
        return true;
    return false;
  case MG_OP_NOT_IN:
  case MG_OP_NE:
    for (i = 0; i < c->n; i++)
      if (mg_str_eq(*v, c->strs[i]))
        return false;
    return true;
  case MG_OP_PREFIX:
    return v->len >= c->strs[0].len &&
           memcmp(v->p, c->strs[0].p, c->strs[0].len) == 0;
  case MG_OP_SUFFIX:
    return v->len >= c->strs[0].len &&
           memcmp(v->p + v->len - c->strs[0].len, c->strs[0].p,
                  c->strs[0].len) == 0;
  case MG_OP_CONTAINS: {
    size_t n = c->strs[0].len, k;
    if (n == 0)
      return true;
    for (k = 0; k + n <= v->len; k++)
      if (v->p[k] == c->strs[0].p[0] && memcmp(v->p + k, c->strs[0].p, n) == 0)
        return true;
    return false;
  }
  default:
    return false;
  }
}

static bool eval_input(const struct mg_cond *c, const struct mg_request *r) {
  double v;
  switch (c->field) {
  case MG_IN_CHARS:
    v = (double)r->input.chars;
    break;
  case MG_IN_MESSAGES:
    v = r->input.messages;
    break;
  case MG_IN_TOOLS:
    v = r->input.tools;
    break;
  case MG_IN_STREAM:
    v = r->input.stream ? 1 : 0;
    break;
  default: /* max_tokens: absent unless the request set it */
    if (r->input.max_tokens < 0)
      return false;
    v = (double)r->input.max_tokens;
    break;
  }
  if (c->op == MG_OP_EXISTS)
    return true;
  return num_cmp(c->op, v, c);
}

bool mg_cond_eval(const struct mg_cond *c, const struct mg_request *r) {
  uint32_t i;
  switch (c->kind) {
  case MG_COND_ALL:
    for (i = 0; i < c->n; i++)
      if (!mg_cond_eval(&c->children[i], r))
        return false;
    return true;
  case MG_COND_ANY:
    for (i = 0; i < c->n; i++)
      if (mg_cond_eval(&c->children[i], r))
        return true;
    return false;
  case MG_COND_NOT:
    return !mg_cond_eval(&c->children[0], r);
  case MG_COND_ATTR:
    return eval_attr(c, r);
  default:
    return eval_input(c, r);
  }
}
