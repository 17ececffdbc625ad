/* request.h - what routing needs to know about one request, read once from
 * its JSON body and headers (DESIGN.md, "Identify the unit and its
 * attributes", "The APIs"). All slices borrow from the body, the headers,
 * the server (the client name) or r->owned.
 *
 * Every endpoint reads its body by one of a few shapes: chat `messages`,
 * completions `prompt`, embeddings `input`, the Responses API (`input` and
 * `instructions`) and Anthropic's Messages API (`messages` and `system`).
 * The features a rule or the report sees mean the same for all of them:
 *   input.chars     Unicode code points of the text the model reads: message
 *                   contents (strings, or the `text` of their parts),
 *                   Responses `instructions`, Anthropic `system`
 *   input.messages  chat/Anthropic: messages; Responses: input items (a
 *                   string input is one); completions/embeddings: inputs;
 *                   plus one for `instructions` / `system` when present
 *   input.tools     entries of `tools` (chat's legacy `functions` too)
 *   input.stream    `stream: true` where the endpoint streams
 *   input.max_tokens max_tokens, max_completion_tokens (chat),
 *                   max_output_tokens (Responses); -1 when absent */
#ifndef MG_REQUEST_H
#define MG_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/json.h"
#include "common/str.h"
#include "routing/target.h"

#define MG_REQ_MAX_ATTRS 32
#define MG_REQ_MAX_OWNED 12

/* How a body is read. */
enum mg_req_shape {
  MG_SHAPE_NONE,        /* no body (GET/DELETE of a stored response) */
  MG_SHAPE_CHAT,        /* `messages` */
  MG_SHAPE_COMPLETIONS, /* `prompt` */
  MG_SHAPE_EMBEDDINGS,  /* `input`: strings or token arrays */
  MG_SHAPE_RESPONSES,   /* `input` string or items, `instructions` */
  MG_SHAPE_MESSAGES,    /* Anthropic: `messages`, `system` */
};

/* The shape of an endpoint's body (api/api.c's table says the same). */
enum mg_req_shape mg_req_shape_of(enum mg_endpoint_id ep);

/* Where the unit id came from, in DESIGN.md's order. */
enum mg_unit_source {
  MG_USRC_NONE,
  MG_USRC_SAFETY_IDENTIFIER, /* body `safety_identifier` (OpenAI) */
  MG_USRC_USER,              /* body `user`; Anthropic `metadata.user_id` */
  MG_USRC_HEADER,            /* header x-modelgate-unit */
  MG_USRC_CLIENT,            /* the authenticated client's name */
};

/* "safety_identifier", "user", "header", "client"; "none". */
const char *mg_unit_source_name(enum mg_unit_source s);

/* What a request asks of whoever answers it: a fallback tier that cannot
 * honour one of these is skipped (DESIGN.md, "Fallbacks keep the client's
 * contract"). */
enum mg_req_need {
  MG_NEED_JSON = 1u << 0,     /* response_format json_object/json_schema;
                               * Responses text.format the same */
  MG_NEED_TOOL = 1u << 1,     /* tool_choice "required" (Anthropic "any")
                               * or one named function / tool */
  MG_NEED_N = 1u << 2,        /* n > 1 */
  MG_NEED_LOGPROBS = 1u << 3, /* the client asked for token logprobs */
};

/* "response_format", "tool_choice", "n", "logprobs" for one bit (the
 * reason a tier is skipped: "skipped:<name>"); NULL otherwise. */
const char *mg_need_name(uint32_t need);

struct mg_attr {
  struct mg_str name;
  struct mg_str value;
};

/* Input features, the input axis of a rollout. */
struct mg_input {
  uint64_t chars;
  uint32_t messages;
  uint32_t tools;
  bool stream;
  int64_t max_tokens;
};

struct mg_request {
  enum mg_endpoint_id endpoint;
  enum mg_req_shape shape;
  const char *body;             /* borrowed */
  size_t body_len;
  const struct mg_json_doc *doc; /* borrowed: the scanned body */
  uint32_t model_tok;           /* token of the `model` value */
  struct mg_str model;          /* the requested model, unescaped */
  struct mg_str safety_identifier; /* body `safety_identifier`, or empty */
  struct mg_str user;           /* body `user` (Anthropic: metadata.user_id),
                                 * or empty */
  struct mg_str unit_header;    /* header x-modelgate-unit, or empty */
  struct mg_str client;         /* borrowed from the server: the
                                 * authenticated client, or empty */
  size_t nattrs;                /* attrs[] in use */
  struct mg_input input;
  uint32_t messages_tok;        /* `messages` (chat, Anthropic), `prompt`
                                 * or `input`, or MG_JSON_NOTFOUND */
  uint32_t previous_tok;        /* Responses `previous_response_id` (a
                                 * string), or MG_JSON_NOTFOUND */
  struct mg_str previous_response_id; /* its value, or empty */
  bool logprobs;                /* the client asked for logprobs */
  uint32_t needs;               /* MG_NEED_* */
  size_t nowned;                /* owned[] in use */
  /* Not zeroed by mg_request_init (once per request: most of the struct);
   * only the first nattrs and nowned entries are ever read. Keep last. */
  struct mg_attr attrs[MG_REQ_MAX_ATTRS];
  char *owned[MG_REQ_MAX_OWNED]; /* owned: unescaped copies of strings */
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

void mg_request_init(struct mg_request *r, enum mg_endpoint_id ep);
/* Add an attribute from a header before mg_request_parse; attributes set
 * by headers win over the body's metadata of the same name. Returns false
 * when the table is full (the attribute is ignored). */
bool mg_request_add_attr(struct mg_request *r, struct mg_str name,
                         struct mg_str value);
/* The server authenticated the caller as `name` (borrowed: it must outlive
 * r): the last unit source, and the attribute `client`, which nothing a
 * caller sends (header or metadata) can set or override. Call before or
 * after mg_request_parse. false when the attribute table is full. */
bool mg_request_set_client(struct mg_request *r, struct mg_str name);
/* Scan the body into doc and read the features. 0, or -1 with err set. */
int mg_request_parse(struct mg_request *r, const char *body, size_t len,
                     struct mg_json_doc *doc, struct mg_request_error *err);
void mg_request_free(struct mg_request *r);

/* The attribute's value, or NULL. */
const struct mg_str *mg_request_attr(const struct mg_request *r,
                                     struct mg_str name);

/* The unit id (DESIGN.md's order: safety_identifier, user, header
 * x-modelgate-unit, the authenticated client; the first non-empty one) and
 * where it came from; MG_USRC_NONE with *id empty when there is none. */
enum mg_unit_source mg_request_unit(const struct mg_request *r,
                                    struct mg_str *id);

#endif
