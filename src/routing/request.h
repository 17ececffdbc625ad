/* request.h - what routing needs to know about one request, read once from
 * its JSON body and headers (DESIGN.md, "Identify the unit and its
 * attributes"). All slices borrow from the body, the headers, or r->owned. */
#ifndef MG_REQUEST_H
#define MG_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/json.h"
#include "common/str.h"
#include "routing/target.h"

#define MG_REQ_MAX_ATTRS 32
#define MG_REQ_MAX_OWNED 8

struct mg_attr {
  struct mg_str name;
  struct mg_str value;
};

/* Input features, the input axis of a rollout. */
struct mg_input {
  uint64_t chars;     /* Unicode code points of every message content */
  uint32_t messages;  /* chat: messages; completions/embeddings: inputs */
  uint32_t tools;     /* entries of `tools` (or legacy `functions`) */
  bool stream;
  int64_t max_tokens; /* max_tokens or max_completion_tokens, -1 if absent */
};

struct mg_request {
  enum mg_endpoint endpoint;
  const char *body;             /* borrowed */
  size_t body_len;
  const struct mg_json_doc *doc; /* borrowed: the scanned body */
  uint32_t model_tok;           /* token of the `model` value */
  struct mg_str model;          /* the requested model, unescaped */
  struct mg_str user;           /* body `user`, or empty */
  struct mg_str unit_header;    /* header x-modelgate-unit, or empty */
  struct mg_attr attrs[MG_REQ_MAX_ATTRS];
  size_t nattrs;
  struct mg_input input;
  uint32_t messages_tok;        /* `messages` (chat), `prompt` or `input`,
                                 * or MG_JSON_NOTFOUND */
  bool logprobs;                /* the client asked for logprobs */
  char *owned[MG_REQ_MAX_OWNED]; /* owned: unescaped copies of strings */
  size_t nowned;
};

enum mg_request_code {
  MG_REQ_OK = 0,
  MG_REQ_INVALID_JSON,
  MG_REQ_NOT_OBJECT,
  MG_REQ_MISSING_MODEL,
  MG_REQ_INVALID_FIELD,
  MG_REQ_DUPLICATE_KEY,
  MG_REQ_TOO_COMPLEX,
  MG_REQ_NOMEM,
};

struct mg_request_error {
  enum mg_request_code code;
  char message[200];
  const char *param; /* static: the offending field, or NULL */
};

void mg_request_init(struct mg_request *r, enum mg_endpoint ep);
/* Add an attribute from a header before mg_request_parse; attributes set
 * by headers win over the body's metadata of the same name. Returns false
 * when the table is full (the attribute is ignored). */
bool mg_request_add_attr(struct mg_request *r, struct mg_str name,
                         struct mg_str value);
/* Scan the body into doc and read the features. 0, or -1 with err set. */
int mg_request_parse(struct mg_request *r, const char *body, size_t len,
                     struct mg_json_doc *doc, struct mg_request_error *err);
void mg_request_free(struct mg_request *r);

/* The attribute's value, or NULL. */
const struct mg_str *mg_request_attr(const struct mg_request *r,
                                     struct mg_str name);

#endif
