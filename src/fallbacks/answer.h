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

/* Helpers the other API families' renderers share (api/).
 * Append bytes of any charset as a JSON string: invalid UTF-8 becomes
 * U+FFFD, one per byte (RFC 8259, 8.1). */
int mg_answer_json_text(struct mg_buf *out, const char *text,
                        size_t len) MG_WARN_UNUSED;
/* Append the value at index i of doc without the whitespace between its
 * tokens (an SSE data line must be one line); strings byte for byte. */
int mg_answer_compact(struct mg_buf *out, const struct mg_json_doc *doc,
                      uint32_t i) MG_WARN_UNUSED;
/* The same for bytes that are valid JSON (a part of a value). */
int mg_answer_compact_bytes(struct mg_buf *out, const char *p,
                            size_t n) MG_WARN_UNUSED;

#endif
