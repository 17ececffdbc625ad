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
 * module that implements its family (api/openai_*.c, api/anthropic.c). */
#ifndef MG_API_H
#define MG_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/json.h"
#include "fallbacks/gate.h"
#include "routing/request.h"
#include "routing/target.h"

/* Tokens an answer used, from its `usage`; -1 where the answer does not
 * say. `cached` is OpenAI's prompt_tokens_details.cached_tokens (or the
 * Responses API's input_tokens_details.cached_tokens); `reasoning` is
 * completion_tokens_details.reasoning_tokens (output_tokens_details.
 * reasoning_tokens); cache_read / cache_write are Anthropic's
 * cache_read_input_tokens / cache_creation_input_tokens. `prompt` is the
 * whole input as the vendor counts it (Anthropic's input_tokens excludes the
 * cache reads and writes; the reader does not add them up). */
struct mg_usage {
  int64_t prompt, completion, cached, reasoning, cache_read, cache_write;
};

void mg_usage_init(struct mg_usage *u); /* every field -1 */

/* What an answer modelgate makes itself is stamped with. */
struct mg_answer_meta {
  const char *id;       /* the answer's id ("mg-<decision id>") */
  int64_t created;      /* unix seconds */
  const char *model;    /* what `model` says: "traditional:faq", "cache" */
};

struct mg_endpoint;

/* The operations of one endpoint. A NULL operation means the endpoint does
 * not have that capability (embeddings have no confidence, count_tokens has
 * no cached or traditional answer): the exchange then skips the step, and a
 * tier that needs it is skipped with the reason recorded. */
struct mg_endpoint_ops {
  /* Read usage from a buffered answer (doc: scanned body). */
  void (*usage)(const struct mg_json_doc *doc, struct mg_usage *u);
  /* Read usage from one SSE event of a stream (data: the JSON of one
   * event), adding what it says to u. May be NULL. */
  void (*usage_event)(const char *data, size_t len, struct mg_json_doc *scratch,
                      struct mg_usage *u);

  /* Token logprobs for the confidence gate: feed a buffered answer's, or
   * one stream event's, into the accumulator (fallbacks/gate.h). */
  void (*logprobs)(const struct mg_json_doc *doc, struct mg_gate_acc *acc);
  void (*logprobs_event)(const char *data, size_t len,
                         struct mg_json_doc *scratch, struct mg_gate_acc *acc);
  /* Copy the request asking the upstream for token logprobs (chat:
   * "logprobs": true; completions: "logprobs": 1; responses: include
   * "message.output_text.logprobs"), and copy an answer with what that
   * added taken out again: the answer as it would have been. */
  int (*ask_logprobs)(const struct mg_json_doc *req, struct mg_buf *out);
  int (*strip_logprobs)(const struct mg_json_doc *answer, struct mg_buf *out);

  /* An answer modelgate makes from text (a traditional tier): whole, and as
   * the event stream the family sends. json: the text is a JSON document
   * (a `static_json` tier), to be carried as the message content. */
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
   * from the status. */
  int (*error_body)(struct mg_buf *out, int status, const char *type,
                    const char *message, const char *param, const char *code);
  /* The SSE bytes that end a stream that failed after its head was sent:
   * chat/completions: an error event; responses: response.failed (and an
   * error event); messages: an `event: error` event. Never a fake
   * completion. */
  int (*stream_error)(struct mg_buf *out, const char *message,
                      const char *code);
};

enum mg_api_family {
  MG_API_OPENAI,
  MG_API_ANTHROPIC,
};

/* How the exchange treats a request to an endpoint. */
enum mg_ep_kind {
  MG_EPK_MODEL,   /* POST with a body naming a model: routed, fallbacks */
  MG_EPK_PINNED,  /* GET/DELETE of a stored response: goes to the target
                   * that made it (the id says which) */
};

struct mg_endpoint {
  enum mg_endpoint_id id;      /* routing/target.h */
  const char *name;            /* in records and metrics: "chat", ... */
  const char *path;            /* the client's path; for PINNED, its
                                * prefix ("/v1/responses/") */
  const char *upstream_path;   /* appended to a target's base_url */
  int method;                  /* llhttp_method_t value (HTTP_POST ...) */
  enum mg_ep_kind kind;
  enum mg_api_family family;
  enum mg_req_shape shape;     /* how routing reads the body */
  bool gated;                  /* the confidence gate applies */
  bool cacheable;              /* the cache tier applies */
  bool traditional;            /* a traditional tier can answer it */
  bool streams;                /* `stream: true` is meaningful */
  const struct mg_endpoint_ops *ops;
};

/* The endpoint for a request path (without query) and method. NULL when
 * the path is none of ours; *path_known is then false, or true when the
 * path is ours but the method is not (the caller answers 405 with
 * mg_endpoint_allow). */
const struct mg_endpoint *mg_endpoint_match(const char *path, size_t len,
                                            int method, bool *path_known);
/* "POST", "GET, DELETE": the methods a known path takes. */
const char *mg_endpoint_allow(const char *path, size_t len);
const struct mg_endpoint *mg_endpoint_get(enum mg_endpoint_id id);
const char *mg_api_family_name(enum mg_api_family f); /* "openai", ... */

#endif
