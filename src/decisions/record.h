/* record.h - one decision record: a JSON object on one line
 * (DESIGN.md, "The decision log"). Pure: the proxy fills a plain struct
 * (every pointer borrowed for the call) and gets the line back.
 *
 * {"ts":"2026-11-21T13:00:00.123Z","id":"<32 hex>","config":"<16 hex>",
 *  "endpoint":"chat","alias":"gpt-4o","flag":"chat-model"|null,
 *  "unit":"<16 hex>"|"<raw id>"|null,"unit_kind":"user|attr|request|input",
 *  "bucket":4186|null,"variant":"treatment"|null,"reason":"rollout",
 *  "weights":{"control":90,"treatment":10}|null,"attrs":{"region":"eu"},
 *  "input":{"chars":812,"messages":3,"tools":0,"stream":false},
 *  "attempts":[{"target":"primary","outcome":"timeout_first_byte",
 *               "status":0,"ms":1500,"confidence":null}, ...],
 *  "served_by":"secondary"|null,"tier":"fallback",
 *  "fallback_reason":"timeout"|null,"confidence":0.91|null,
 *  "threshold":0.7|null,"cache":"off|miss|hit|store","status":200,
 *  "error":false,"ms":1712.4,"ttfb_ms":1712.1,"overhead_us":38,
 *  "tokens":{"prompt":31,"completion":12,"cached":0,"reasoning":0,
 *            "cache_read":0,"cache_write":0}|null (members the answer did
 *            not give are absent),"cost":0.00012|null,
 *  "unit_source":"safety_identifier"|"user"|"header"|"client"|null,
 *  "client":"billing"|null,"instance":"gw-1:8080"|null}
 *
 * "error" is what the client saw as an error: a status of 400 or more
 * (but 499, the client's own disconnect), or a stream that ended with an
 * error event. "tier" is "primary", "fallback", "cache", "traditional"
 * or "none" (nothing answered, or the request never reached a target).
 *
 * Event lines share the file: {"ts":"...","event":"kill","flag":"x",...}. */
#ifndef MG_RECORD_H
#define MG_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

struct mg_record_attempt {
  const char *target;
  const char *outcome;
  int status;              /* upstream HTTP status, 0 when none */
  uint32_t ms;
  double confidence;
  bool has_confidence;
};

struct mg_record_weight {
  const char *variant;
  uint32_t bp;             /* basis points */
};

struct mg_record_attr {
  const char *name;
  size_t name_len;
  const char *value;
  size_t value_len;
};

struct mg_record {
  int64_t ts_ms;               /* wall clock when the answer was done */
  const char *id;
  const char *config;
  const char *endpoint;        /* "chat", "completions", "embeddings" */
  const char *alias;           /* NULL: the request was not routed */
  const char *flag;            /* NULL: no flag */
  const char *unit;            /* NULL: no unit (request units) */
  size_t unit_len;
  const char *unit_kind;
  int64_t bucket;              /* -1: none */
  const char *variant;
  const char *reason;
  const struct mg_record_weight *weights; /* NULL: none */
  size_t nweights;
  const struct mg_record_attr *attrs;
  size_t nattrs;
  uint64_t input_chars;
  uint32_t input_messages, input_tools;
  bool input_stream;
  const struct mg_record_attempt *attempts;
  size_t nattempts;
  const char *served_by;       /* NULL: nothing served */
  const char *tier;
  const char *fallback_reason; /* NULL: no fallback */
  double confidence;
  bool has_confidence;
  double threshold;
  bool has_threshold;
  const char *cache;           /* "off", "miss", "hit", "store" */
  int status;
  bool error;
  double ms;
  double ttfb_ms;              /* < 0: nothing was sent */
  uint64_t overhead_us;
  int64_t tokens_prompt;       /* < 0: unknown */
  int64_t tokens_completion;
  int64_t tokens_cached;       /* OpenAI cached prompt tokens; < 0: unknown */
  int64_t tokens_reasoning;    /* reasoning tokens (part of completion) */
  int64_t tokens_cache_read;   /* Anthropic cache_read_input_tokens */
  int64_t tokens_cache_write;  /* Anthropic cache_creation_input_tokens */
  double cost;                 /* USD from the target's price and the
                                * answer's usage */
  bool has_cost;
  const char *unit_source;     /* "safety_identifier", "user", "header",
                                * "client", or NULL */
  const char *client;          /* the authenticated client, or NULL */
  const char *instance;        /* this instance's name, or NULL */
};

/* The bytes of one string value a record keeps (a unit id, an attribute,
 * ...): a longer one is cut at a UTF-8 boundary and ends in
 * "\u2026[truncated from N bytes]", so that every record fits its line. */
#define MG_RECORD_VALUE_MAX 1024u

/* A record with nothing known yet: every token count and the bucket -1. */
void mg_record_init(struct mg_record *r);

/* Append the record's line (without a newline) to out. */
int mg_record_format(const struct mg_record *r,
                     struct mg_buf *out) MG_WARN_UNUSED;

/* Append an event line's opening: {"ts":"...","event":"<name>" - the
 * caller adds ,"key":value pairs and the closing brace. */
int mg_record_event_begin(struct mg_buf *out, int64_t ts_ms,
                          const char *event) MG_WARN_UNUSED;

#endif
