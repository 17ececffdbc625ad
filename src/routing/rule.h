/* rule.h - targeting conditions over attributes and input features
 * (DESIGN.md, "Flags: how a variant is chosen").
 *
 *   {"attr": "region", "op": "in", "values": ["eu", "uk"]}
 *   {"input": "chars", "op": "gt", "value": 8000}
 *   {"all": [...]}, {"any": [...]}, {"not": {...}}
 */
#ifndef MG_RULE_H
#define MG_RULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/cfg.h"
#include "common/str.h"
#include "routing/request.h"

enum mg_cond_kind {
  MG_COND_ALL,
  MG_COND_ANY,
  MG_COND_NOT,
  MG_COND_ATTR,
  MG_COND_INPUT,
};

enum mg_cond_op {
  MG_OP_IN,
  MG_OP_NOT_IN,
  MG_OP_EQ,
  MG_OP_NE,
  MG_OP_LT,
  MG_OP_LE,
  MG_OP_GT,
  MG_OP_GE,
  MG_OP_PREFIX,
  MG_OP_SUFFIX,
  MG_OP_CONTAINS,
  MG_OP_EXISTS,
};

enum mg_input_field {
  MG_IN_CHARS,
  MG_IN_MESSAGES,
  MG_IN_TOOLS,
  MG_IN_STREAM,
  MG_IN_MAX_TOKENS,
};

struct mg_cond {
  uint8_t kind;              /* enum mg_cond_kind */
  uint8_t op;                /* enum mg_cond_op (leaves) */
  uint8_t field;             /* enum mg_input_field (input leaves) */
  bool numeric;              /* the values are numbers */
  uint32_t n;                /* children, or values */
  struct mg_cond *children;  /* owned: all / any / not */
  char *attr;                /* owned: attribute name (attr leaves) */
  size_t attr_len;
  struct mg_str *strs;       /* owned array of owned strings */
  double *nums;              /* owned */
};

/* Parse one condition at path; returns false (with errors in e) when it is
 * invalid. out is always safe to free afterwards. */
bool mg_cond_parse(struct mg_cond *out, const cJSON *json, const char *path,
                   struct mg_cfg_errors *e);
void mg_cond_free(struct mg_cond *c);

/* Does the request match? Pure and allocation-free. */
bool mg_cond_eval(const struct mg_cond *c, const struct mg_request *r);

#endif
