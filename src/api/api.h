/* api.h - the endpoints of the data plane as data (DESIGN.md, "The APIs").
 *
 * One table (api.c) says, per endpoint: its path and method, the API family
 * it belongs to, how routing reads its body (the request shape), and how the
 * answer side works: reading usage and confidence from an answer, asking for
 * and stripping logprobs, rendering an answer modelgate makes itself (cache,
 * traditional) whole and as a stream, and writing errors in the family's
 * shape. The exchange (server layer) holds a `const struct mg_endpoint *`
 * and calls through it; it never branches on which endpoint it serves.
 *
 * Pure: no libuv, no curl. Adding an endpoint touches the table and the one
 * module that implements its family (api/openai.c, api/responses.c,
 * api/anthropic.c). Conversation ids (Responses) are api/conv.h. */
#ifndef MG_API_H
#define MG_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/cfg.h"
#include "common/json.h"
#include "common/str.h"
#include "fallbacks/gate.h"
#include "fallbacks/policy.h"
#include "routing/flag.h"
#include "routing/request.h"
#include "routing/route.h"
#include "routing/target.h"

/* `struct mg_endpoint` below shares the tag namespace with the legacy
 * `enum mg_endpoint_id` spelling routing/target.h keeps for old code. */
#undef mg_endpoint

/* HTTP methods by llhttp's numbers (llhttp_method_t: HTTP_DELETE 0,
 * HTTP_GET 1, HTTP_POST 3); test_api checks them against llhttp.h, so the
 * pure layer needs no llhttp header. */
enum {
  MG_HTTP_DELETE = 0,
  MG_HTTP_GET = 1,
  MG_HTTP_POST = 3,
};

/* Tokens an answer used, from its `usage`; -1 where the answer does not
 * say.
 *   prompt      OpenAI prompt_tokens / Responses input_tokens (cached
 *               ones included); Anthropic input_tokens, which counts only
 *               the input that was neither read from nor written to the
 *               cache (the reader does not add them up)
 *   completion  completion_tokens / output_tokens (reasoning included)
 *   cached      prompt_tokens_details.cached_tokens / input_tokens_details.
 *               cached_tokens (OpenAI only: part of prompt)
 *   reasoning   completion_tokens_details.reasoning_tokens /
 *               output_tokens_details.reasoning_tokens (part of completion)
 *   cache_read, cache_write  Anthropic cache_read_input_tokens /
 *               cache_creation_input_tokens (beside prompt, not in it) */
struct mg_usage {
  int64_t prompt, completion, cached, reasoning, cache_read, cache_write;
};

void mg_usage_init(struct mg_usage *u); /* every field -1 */

/* The cost of an answer in USD, from the target's price (per million
 * tokens) and the answer's usage (DESIGN.md, "Cost"):
 *   openai:    (prompt - cached) x input + cached x cached_input
 *              + completion x output (reasoning is output)
 *   anthropic: prompt x input + cache_read x cache_read
 *              + cache_write x cache_write + completion x output
 * Missing cached / cache fields count as 0. 0, -ENOENT when the usage has
 * no prompt or completion count (no cost: never a guess), -EINVAL when the
 * target has no price. */
int mg_price_cost(const struct mg_price *p, const struct mg_usage *u,
                  double *usd);

/* What an answer modelgate makes itself is stamped with. */
struct mg_answer_meta {
  const char *id;       /* the answer's id: chat "mg-<decision id>",
                         * Responses mg_conv_local_id(), Anthropic
                         * "msg_mg_<decision id>" */
  int64_t created;      /* unix seconds */
  const char *model;    /* what `model` says: "traditional:faq", "cache" */
};

/* One event of a server-sent event stream, as the relay split it. */
struct mg_sse_event {
  struct mg_str event;  /* the `event:` field, or empty */
  struct mg_str data;   /* the `data:` field (one line; "[DONE]" for
                         * chat's end) */
};

/* What a relay learns from the events of one upstream stream. */
struct mg_stream_state {
  struct mg_usage usage;    /* the stream's usage, once it has said so */
  struct mg_gate_acc acc;   /* token logprobs, when want_logprobs */
  bool want_logprobs;       /* set by the caller before the first event */
  int64_t seq;              /* Responses: the last sequence_number, or -1 */
  char response_id[256];    /* Responses: the response's id as the
                             * upstream sent it (response.created), or ""
                             * (longer ids are not kept) */
  bool done;                /* the stream's own end arrived: [DONE],
                             * response.completed/incomplete/failed,
                             * message_stop (an `error` event too) */
  bool failed;              /* ...and it said the answer failed */
};

void mg_stream_state_init(struct mg_stream_state *st);

struct mg_endpoint;

/* The operations of one endpoint. A NULL operation means the endpoint does
 * not have that capability (embeddings have no confidence, count_tokens has
 * no cached or traditional answer): the exchange then skips the step, and a
 * tier that needs it is skipped with the reason recorded. */
struct mg_endpoint_ops {
  /* Read usage from a buffered answer (doc: scanned body). */
  void (*usage)(const struct mg_json_doc *doc, struct mg_usage *u);
  /* Learn from one event of an upstream stream: usage, logprobs (when
   * st->want_logprobs), the sequence number and response id (Responses),
   * the end. scratch is parsed only when the event can matter. */
  void (*stream_event)(struct mg_stream_state *st,
                       const struct mg_sse_event *ev,
                       struct mg_json_doc *scratch);

  /* Token logprobs of a buffered answer, into the accumulator. */
  void (*logprobs)(const struct mg_json_doc *doc, struct mg_gate_acc *acc);
  /* Copy the request asking the upstream for token logprobs (chat:
   * "logprobs": true; completions: "logprobs": 1; responses: include
   * "message.output_text.logprobs"), and copy an answer with what that
   * added taken out again: the answer as it would have been. */
  int (*ask_logprobs)(const struct mg_json_doc *req, struct mg_buf *out);
  int (*strip_logprobs)(const struct mg_json_doc *answer, struct mg_buf *out);
  /* The token of the answer's first text (chat: choices[0].message.
   * content; Responses: the first output_text; Anthropic: the first text
   * block), for a json:<pointer> confidence; MG_JSON_NOTFOUND. */
  uint32_t (*answer_text)(const struct mg_json_doc *doc);

  /* An answer modelgate makes from text (a traditional tier; a
   * `static_json` document is text too: it becomes the message content),
   * whole, and as the event stream the family sends. */
  int (*wrap_text)(struct mg_buf *out, const struct mg_answer_meta *m,
                   const char *text, size_t len);
  int (*wrap_text_sse)(struct mg_buf *out, const struct mg_answer_meta *m,
                       const char *text, size_t len);
  /* A buffered answer of this endpoint (a cache hit, a gated stream)
   * replayed as the family's event stream. -EINVAL when doc is not one. */
  int (*replay_sse)(const struct mg_json_doc *doc, struct mg_buf *out);

  /* An error body in the family's shape. OpenAI:
   * {"error":{"message","type","param","code"}}; Anthropic:
   * {"type":"error","error":{"type","message"}}. type may be NULL: derived
   * from the status. param and code may be NULL (Anthropic has neither:
   * they are not written). */
  int (*error_body)(struct mg_buf *out, int status, const char *type,
                    const char *message, const char *param, const char *code);
  /* The SSE bytes that end a stream that failed after its head was sent:
   * chat/completions: an error data event (never [DONE]); responses:
   * response.failed with the error, then an `error` event, numbered after
   * st->seq (st may be NULL), for response_id (the id the client saw:
   * wrapped, mg_conv_wrap; NULL: st->response_id as it is); messages: an
   * `event: error`. Never a fake completion. */
  int (*stream_error)(struct mg_buf *out, const struct mg_stream_state *st,
                      const char *response_id, const char *message,
                      const char *code);
};

/* How the exchange treats a request to an endpoint. */
enum mg_ep_kind {
  MG_EPK_MODEL,   /* POST with a body naming a model: routed, fallbacks */
  MG_EPK_PINNED,  /* GET/DELETE of a stored response: goes to the target
                   * that made it (the id says which: api/conv.h) */
};

struct mg_endpoint {
  enum mg_endpoint_id id;      /* routing/target.h */
  const char *name;            /* in records and metrics: "chat", ... */
  const char *path;            /* the client's path; for PINNED, its
                                * prefix ("/v1/responses/") */
  const char *pinned_suffix;   /* PINNED: after the id ("" or
                                * "/input_items") */
  const char *upstream_path;   /* appended to a target's base_url; PINNED:
                                * then "/<upstream id>" + pinned_suffix */
  int method;                  /* MG_HTTP_* */
  enum mg_ep_kind kind;
  enum mg_api_family family;
  enum mg_req_shape shape;     /* how routing reads the body */
  bool gated;                  /* the confidence gate applies */
  bool cacheable;              /* the cache tier applies */
  bool traditional;            /* a traditional tier can answer it */
  bool streams;                /* `stream: true` is meaningful */
  bool conversation_ids;       /* answers carry a response id to wrap
                                * (mg_conv_rewrite_*) */
  const struct mg_endpoint_ops *ops;
};

/* The endpoint for a request path (without query) and method. NULL when
 * the path is none of ours; *path_known is then false, or true when the
 * path is ours but the method is not (the caller answers 405 with
 * mg_endpoint_allow). */
const struct mg_endpoint *mg_endpoint_match(const char *path, size_t len,
                                            int method, bool *path_known);
/* "POST", "GET, DELETE", "GET": the methods a known path takes; NULL for
 * a path that is not ours. */
const char *mg_endpoint_allow(const char *path, size_t len);
const struct mg_endpoint *mg_endpoint_get(enum mg_endpoint_id id);
/* The {id} of a PINNED endpoint's path: 0, or -EINVAL. */
int mg_endpoint_pinned_id(const struct mg_endpoint *ep, const char *path,
                          size_t len, struct mg_str *id);
/* What a PINNED call appends to urls[ep->id] (mg_up_request.path_extra):
 * "/<upstream id>" + pinned_suffix. The id must have passed
 * mg_conv_unwrap (its bytes are URL-safe). */
int mg_endpoint_pinned_path(const struct mg_endpoint *ep,
                            struct mg_str upstream_id,
                            struct mg_buf *out) MG_WARN_UNUSED;

/* Confidence of a buffered answer of ep (as mg_gate_confidence, reading
 * the answer in ep's shape). -ENOENT without a signal. */
int mg_api_confidence(const struct mg_endpoint *ep,
                      const struct mg_gate_cfg *g,
                      const struct mg_json_doc *doc, const char *header_value,
                      double *conf);

/* ---- families (issue 14.5) ------------------------------------------- */

/* Refuse a config where a flag's variants, or a target's fallback chain,
 * mix API families: each error names the JSON path of the offending
 * target reference ($.flags.<f>.variants.<v>.target,
 * $.targets.<t>.fallbacks[<i>]). The loader calls it after targets,
 * fallbacks and flags are parsed. */
void mg_api_check_families(const struct mg_targets *targets,
                           const struct mg_flags *flags,
                           const struct mg_fallbacks *fb,
                           struct mg_cfg_errors *e);

/* The family an alias's targets speak: 0, or -ENOENT when it has none. */
int mg_api_alias_family(const struct mg_alias *a, enum mg_api_family *out);

/* May alias a serve requests to ep? Only when its targets speak ep's
 * family. */
bool mg_api_alias_serves(const struct mg_alias *a,
                         const struct mg_endpoint *ep);

/* The answer to a request that names an alias of the other family: a 404
 * in ep's shape (OpenAI: invalid_request_error, code model_not_found;
 * Anthropic: not_found_error) whose message says which endpoint serves
 * the model. The model does not exist on this API, as a model no alias
 * claims. */
int mg_api_wrong_family_error(const struct mg_endpoint *ep,
                              const struct mg_alias *a, struct mg_str model,
                              struct mg_buf *out, int *status) MG_WARN_UNUSED;

#endif
