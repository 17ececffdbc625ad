/* family.h - internals the api modules share (not for the exchange: it
 * reads the table through api.h). */
#ifndef MG_API_FAMILY_H
#define MG_API_FAMILY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "api/api.h"

/* The operations of each endpoint (openai.c, responses.c, anthropic.c). */
extern const struct mg_endpoint_ops mg_api__chat_ops;
extern const struct mg_endpoint_ops mg_api__completions_ops;
extern const struct mg_endpoint_ops mg_api__embeddings_ops;
extern const struct mg_endpoint_ops mg_api__responses_ops;
extern const struct mg_endpoint_ops mg_api__responses_store_ops;
extern const struct mg_endpoint_ops mg_api__messages_ops;
extern const struct mg_endpoint_ops mg_api__count_tokens_ops;

static inline bool mg_api__is(const struct mg_json_doc *d, uint32_t i,
                              enum mg_json_type t) {
  return i < d->n && d->toks[i].type == t;
}

/* Is the value at i the string s? */
static inline bool mg_api__str_is(const struct mg_json_doc *d, uint32_t i,
                                  const char *s) {
  return mg_api__is(d, i, MG_JSON_STRING) &&
         mg_json_str_eq(d, i, s, strlen(s));
}

/* The non-negative integer member key of the object at obj into *out;
 * left alone when absent or not one. */
void mg_api__count(const struct mg_json_doc *d, uint32_t obj, const char *key,
                   int64_t *out);

/* Does s contain needle? (A cheap test before scanning an event.) */
bool mg_api__has(struct mg_str s, const char *needle);

/* The OpenAI error object, shared by chat-era endpoints and Responses:
 * {"error":{"message","type","param","code"}}. */
int mg_api__openai_error(struct mg_buf *out, int status, const char *type,
                         const char *message, const char *param,
                         const char *code);

/* "event: <name>\ndata: " (the caller writes the data and "\n\n"). */
int mg_api__event_open(struct mg_buf *out, const char *name);

#endif
