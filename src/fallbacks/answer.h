/* answer.h - answers modelgate makes itself, in OpenAI's shapes: a
 * traditional (non-AI) answer wrapped as a completion, and a buffered
 * completion replayed as server-sent events for a streaming client. */
#ifndef MG_ANSWER_H
#define MG_ANSWER_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/json.h"

enum mg_answer_kind {
  MG_ANSWER_CHAT,        /* chat.completion / chat.completion.chunk */
  MG_ANSWER_COMPLETION,  /* text_completion */
};

/* A complete JSON answer carrying text:
 * chat: {"id","object":"chat.completion","created","model","choices":[{
 *   "index":0,"message":{"role":"assistant","content":text},
 *   "logprobs":null,"finish_reason":"stop"}],"usage":{zeros}}
 * completion: {"id","object":"text_completion",...,"choices":[{"text",
 *   "index":0,"logprobs":null,"finish_reason":"stop"}],...} */
int mg_answer_wrap(struct mg_buf *out, enum mg_answer_kind kind,
                   const char *id, int64_t created, const char *model,
                   const char *text, size_t len) MG_WARN_UNUSED;

/* The same answer as server-sent events, as OpenAI streams it: for chat a
 * first chunk with the role, one chunk with the content, a last chunk with
 * finish_reason, then "data: [DONE]". */
int mg_answer_wrap_sse(struct mg_buf *out, enum mg_answer_kind kind,
                       const char *id, int64_t created, const char *model,
                       const char *text, size_t len) MG_WARN_UNUSED;

/* Replay a buffered completion (doc: its scanned JSON) as server-sent
 * events: id, created and model carried over; for each choice its content
 * (or text) in one chunk, with the role first and finish_reason last; a
 * final chunk with usage when the answer has one; then "data: [DONE]".
 * -EINVAL when doc is not a chat.completion or text_completion. */
int mg_answer_replay_sse(const struct mg_json_doc *doc,
                         struct mg_buf *out) MG_WARN_UNUSED;

/* The text of an answer from a traditional service: the string at JSON
 * pointer `field` when given and the body is JSON, else the whole body.
 * Points into body (no copy) unless the string has escapes, in which case
 * it is decoded into tmp. -ENOENT when the field is missing (or null, an
 * object or an array; numbers and booleans answer their JSON text), -E2BIG
 * when the body is JSON past scratch's ceiling, -ENOMEM. */
int mg_answer_text(const char *body, size_t len, const char *field,
                   struct mg_json_doc *scratch, struct mg_buf *tmp,
                   const char **text, size_t *text_len);

#endif
