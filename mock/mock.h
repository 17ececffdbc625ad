/* mock.h - internals of mg-mock, the mock OpenAI-compatible model server.
 *
 * mock.c owns the loop, the sockets and HTTP; behaviour.c keeps the table of
 * behaviours set through /_mock/behaviour; answer.c builds the OpenAI-shaped
 * bodies and stream events; stats.c keeps what /_mock/stats reports. Only
 * mock.c includes libuv or llhttp. */
#ifndef MG_MOCK_H
#define MG_MOCK_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "common/buf.h"

/* ---- behaviours (behaviour.c) ------------------------------------------ */

enum mg_mock_mode {
  MG_MOCK_OK,
  MG_MOCK_SLOW,
  MG_MOCK_STATUS,
  MG_MOCK_HANG,
  MG_MOCK_RESET,
  MG_MOCK_GARBAGE,
  MG_MOCK_TRUNCATE,
  MG_MOCK_LOW_CONFIDENCE,
  MG_MOCK_STREAM_DIE
};

/* One behaviour as posted to /_mock/behaviour, defaults filled in. */
struct mg_mock_bhv {
  enum mg_mock_mode mode;
  long ms;    /* delay before anything is sent */
  int status; /* mode status: the HTTP status */
  char *body; /* owned, or NULL: a default server_error body */
  bool has_retry_after;
  double retry_after; /* seconds, for the Retry-After header */
  int retry_after_format; /* 0: Retry-After in seconds; 1: Retry-After as an
                             HTTP date (now + retry_after, rounded up to the
                             second); 2: retry-after-ms instead */
  double confidence;  /* per-token probability in logprobs */
  bool has_header_confidence;
  double header_confidence; /* value of the x-confidence header */
  char *content;            /* owned, or NULL: the default answer text */
  long chunks;              /* stream: chunk events */
  long chunk_ms;            /* stream: delay between events */
  long chunk_bytes;         /* stream: pad each content piece to this */
  long die_after;           /* stream_die: events sent before the reset */
  long times;               /* uses left for a queued behaviour; 0: none */
  struct mg_mock_bhv *next; /* owned: the next queued behaviour */
};

struct mg_mock_entry;

/* Behaviours by model name; "*" is the default for models without one. */
struct mg_mock_table {
  struct mg_mock_entry *head; /* owned list */
};

void mg_mock_table_init(struct mg_mock_table *t);
/* Forget every behaviour: all models answer "ok" again. */
void mg_mock_table_free(struct mg_mock_table *t);
/* Validate v (one behaviour object, or an array of them) and apply it. On
 * error the table is unchanged and err holds a message. 0, -EINVAL, or
 * -ENOMEM. */
int mg_mock_table_set(struct mg_mock_table *t, const cJSON *v,
                      struct mg_buf *err) MG_WARN_UNUSED;
/* The behaviour for one request to model, copied into out (free it with
 * mg_mock_bhv_clear). Uses up one of the `times` of a queued behaviour.
 * 0 or -ENOMEM. */
int mg_mock_table_take(struct mg_mock_table *t, const char *model,
                       struct mg_mock_bhv *out) MG_WARN_UNUSED;
/* The defaults of behaviour "ok". */
void mg_mock_bhv_default(struct mg_mock_bhv *b);
/* Free what b owns (b itself is not freed); b is "ok" afterwards. */
void mg_mock_bhv_clear(struct mg_mock_bhv *b);
const char *mg_mock_mode_name(enum mg_mock_mode m);

/* ---- requests and answers (answer.c) ----------------------------------- */

enum mg_mock_api { MG_MOCK_CHAT, MG_MOCK_COMPLETIONS, MG_MOCK_EMBEDDINGS };

/* What one API request asked for. */
struct mg_mock_req {
  enum mg_mock_api api;
  char *model; /* owned */
  bool stream;
  bool include_usage; /* stream_options.include_usage */
  bool logprobs;      /* chat: "logprobs": true; completions: a number */
  long top_logprobs;  /* completions: the number given */
  char *content;      /* owned: the answer text */
  long prompt_tokens;
  long completion_tokens;
  cJSON *inputs; /* owned: embeddings, one string per input */
  bool base64;   /* embeddings: encoding_format "base64" */
};

/* Parse and check a request body. On error (-EINVAL) err holds an
 * OpenAI-style message; -ENOMEM otherwise. rq is always safe to clear. */
int mg_mock_req_parse(struct mg_mock_req *rq, enum mg_mock_api api,
                      const cJSON *body, struct mg_buf *err) MG_WARN_UNUSED;
/* Replace the answer text (a behaviour's `content`). */
int mg_mock_req_set_content(struct mg_mock_req *rq,
                            const char *content) MG_WARN_UNUSED;
void mg_mock_req_clear(struct mg_mock_req *rq);

/* The whole non-streamed answer body. */
int mg_mock_answer(const struct mg_mock_req *rq, double confidence,
                   unsigned long id, struct mg_buf *out) MG_WARN_UNUSED;
/* {"error":{"message":msg,"type":type,"param":null,"code":null}} */
int mg_mock_error_body(struct mg_buf *out, const char *type,
                       const char *msg) MG_WARN_UNUSED;

/* A streamed answer, generated one event at a time. */
struct mg_mock_stream {
  const struct mg_mock_req *rq; /* borrowed: outlives the stream */
  unsigned long id;
  long created;
  double logprob; /* ln(confidence) */
  long chunk_bytes;
  long chunks;      /* chunk events; the last carries finish_reason */
  long first_piece; /* index of the first event that carries content */
  long pieces;      /* events that carry content */
  size_t *wstart;   /* owned: byte offset of each word of the content */
  size_t *wend;     /* owned: one past each word */
  long nwords;
};

int mg_mock_stream_init(struct mg_mock_stream *s, const struct mg_mock_req *rq,
                        const struct mg_mock_bhv *b,
                        unsigned long id) MG_WARN_UNUSED;
void mg_mock_stream_clear(struct mg_mock_stream *s);
/* Number of `data:` events: the chunks, the usage chunk when asked, [DONE]. */
long mg_mock_stream_events(const struct mg_mock_stream *s);
/* Append event i ("data: ...\n\n") to out. */
int mg_mock_stream_event(const struct mg_mock_stream *s, long i,
                         struct mg_buf *out) MG_WARN_UNUSED;

/* ---- statistics (stats.c) ---------------------------------------------- */

struct mg_mock_stats {
  unsigned long requests; /* API requests; control ones excluded */
  unsigned long connections_opened;
  unsigned long connections_active;
  unsigned long active_streams;
  unsigned long streams_completed;
  unsigned long streams_aborted; /* the client went away before the end */
  unsigned long streams_died;    /* ended by stream_die */
  unsigned long chunks_sent;     /* stream events written */
  cJSON *by_model;               /* owned: {"model": count} */
  cJSON *last;                   /* owned: {"model": {body, headers}} */
};

int mg_mock_stats_init(struct mg_mock_stats *st) MG_WARN_UNUSED;
void mg_mock_stats_free(struct mg_mock_stats *st);
/* Zero the cumulative counters and forget by_model and last. The gauges
 * (active connections and streams) are kept. */
void mg_mock_stats_reset(struct mg_mock_stats *st);
/* Remember one API request to model. hdrs holds nhdrs pairs of
 * NUL-terminated lower-case names and values. */
int mg_mock_stats_record(struct mg_mock_stats *st, const char *model,
                         const cJSON *body, const char *hdrs,
                         size_t nhdrs) MG_WARN_UNUSED;
int mg_mock_stats_json(const struct mg_mock_stats *st,
                       struct mg_buf *out) MG_WARN_UNUSED;

#endif
