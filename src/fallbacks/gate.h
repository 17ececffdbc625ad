/* gate.h - the confidence gate (DESIGN.md, "Confidence"): read how sure a
 * model answer is, and undo what modelgate added to get it.
 *
 * Sources:
 *   logprobs_mean  exp(mean of the answer's token logprobs)
 *   logprobs_min   exp(min of them)
 *   header:<name>  a number in a response header
 *   json:<pointer> a number at an RFC 6901 pointer into the response, or,
 *                  when the response has nothing there, into the first
 *                  choice's message content parsed as JSON
 *
 * Token logprobs are read from chat completions (choices[0].logprobs.content
 * [].logprob) and legacy completions (choices[0].logprobs.token_logprobs[]),
 * buffered or streamed (chunks carry the same fields per delta). */
#ifndef MG_GATE_H
#define MG_GATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/json.h"

enum mg_conf_source {
  MG_CONF_LOGPROBS_MEAN,
  MG_CONF_LOGPROBS_MIN,
  MG_CONF_HEADER,
  MG_CONF_JSON,
};

struct mg_gate_cfg {
  bool enabled;
  double min;                 /* threshold: below it the answer is unsure */
  enum mg_conf_source source;
  char *header;               /* owned: header name for MG_CONF_HEADER */
  char *pointer;              /* owned: JSON pointer for MG_CONF_JSON */
  bool abstain;               /* below: answer low_confidence instead of
                               * falling back */
  bool missing_fails;         /* no signal in the answer counts as below */
  bool buffer_streams;        /* streams are buffered and gated; otherwise
                               * they pass and the gate only records */
};

static inline bool mg_gate_needs_logprobs(const struct mg_gate_cfg *g) {
  return g->enabled && (g->source == MG_CONF_LOGPROBS_MEAN ||
                        g->source == MG_CONF_LOGPROBS_MIN);
}

/* Confidence of a buffered answer (doc: the scanned response body;
 * header_value: the source header's value, or NULL when absent). 0 with
 * *conf in [0, 1] for logprobs sources (any finite number for the others),
 * or -ENOENT when the answer carries no such signal. */
int mg_gate_confidence(const struct mg_gate_cfg *g, const struct mg_json_doc *doc,
                       const char *header_value, double *conf);

/* Accumulates token logprobs over a stream, event by event. */
struct mg_gate_acc {
  double sum;   /* of logprobs */
  double min;   /* smallest logprob */
  uint64_t n;   /* tokens seen */
};

void mg_gate_acc_init(struct mg_gate_acc *a);
/* Feed one SSE event's data (the JSON after "data: ", not "[DONE]"). */
void mg_gate_acc_event(struct mg_gate_acc *a, const char *data, size_t len,
                       struct mg_json_doc *scratch);
/* The same for an event already scanned (chat and completions chunks). */
void mg_gate_acc_chunk(struct mg_gate_acc *a, const struct mg_json_doc *doc);
/* Add one token logprob: the number at index i of doc (anything else is
 * ignored; a value above 0 counts as 0). For the other APIs' shapes. */
void mg_gate_acc_add_tok(struct mg_gate_acc *a, const struct mg_json_doc *doc,
                         uint32_t i);
/* The confidence so far for a logprobs source; -ENOENT without tokens. */
int mg_gate_acc_confidence(const struct mg_gate_acc *a,
                           enum mg_conf_source source, double *conf);

/* json:<pointer> for any shape: the number at the pointer into doc, or,
 * when doc has nothing there, at the pointer into the string at index
 * text_tok (the answer's text) parsed as JSON. -ENOENT without one. */
int mg_gate_json_confidence(const char *pointer, const struct mg_json_doc *doc,
                            uint32_t text_tok, double *conf);

/* The first choice's text (chat: message.content; completions: text) in a
 * chat or completions answer, or MG_JSON_NOTFOUND. */
uint32_t mg_gate_choice_text(const struct mg_json_doc *doc);

/* Copy a response body with the value of every choices[i].logprobs
 * replaced by null: what the upstream answers when logprobs were not asked
 * for. Other bytes are copied unchanged. */
int mg_gate_strip_logprobs(const struct mg_json_doc *doc,
                           struct mg_buf *out) MG_WARN_UNUSED;

/* Copy a request body asking for token logprobs: chat gets
 * "logprobs": true, completions "logprobs": 1; an existing logprobs member
 * is overwritten, else one is inserted after the opening brace. */
int mg_gate_ask_logprobs(const struct mg_json_doc *req, bool chat,
                         struct mg_buf *out) MG_WARN_UNUSED;

/* Parse a config source string: "logprobs_mean", "logprobs_min",
 * "header:<name>", "json:<pointer>". 0, -EINVAL or -ENOMEM; fills source
 * and the owned header/pointer of g (freeing the previous ones: g must be
 * zeroed or parsed before). */
int mg_gate_parse_source(struct mg_gate_cfg *g, const char *s);

#endif
