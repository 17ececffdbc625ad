/* mock.h - internals of mg-mock, the mock model server (OpenAI chat,
 * completions, embeddings and Responses; Anthropic Messages).
 *
 * mock.c owns the loop, the sockets and HTTP; behaviour.c keeps the table of
 * behaviours set through /_mock/behaviour; answer.c builds the OpenAI chat,
 * completions and embeddings bodies and stream events (and the helpers the
 * other answer modules share); responses.c the OpenAI Responses API;
 * anthropic.c the Anthropic Messages API; store.c keeps the responses that
 * GET /v1/responses/{id} reads; stats.c keeps what /_mock/stats reports.
 * Only mock.c includes libuv or llhttp.
 *
 * Behaviours (POST /_mock/behaviour, one object or an array; all members
 * optional, keyed by "model", "*" the default for models without one):
 *
 *   mode        ok (default) | slow | status | hang | reset | garbage |
 *               truncate | low_confidence | stream_die | close | raw
 *     ok              the API's answer (streamed when the request asks)
 *     slow            ok after `ms` (default 1000)
 *     status          `status` (default 500) with `body`, or an error in
 *                     the endpoint's family shape (OpenAI or Anthropic)
 *     hang            read the request, never answer, keep the connection
 *     reset           read the request, close with RST
 *     garbage         200 with a body that is not JSON
 *     truncate        announce the whole answer, send about half, FIN
 *     low_confidence  ok with token probability `confidence` (default 0.3)
 *                     in every logprob (chat, completions, Responses)
 *     stream_die      stream `die_after` events, then RST (without
 *                     `stream`: truncate)
 *     close           read the whole request, then FIN with no answer
 *     raw             write the bytes of `raw` as the whole response, then
 *                     `then`: "close" (default: FIN) or "keep" (read the
 *                     next request on the connection)
 *   ms              delay before anything is sent, in any mode
 *   status          mode status: the HTTP status, 200..599
 *   body            mode status: the body (a string, or JSON sent compact)
 *   retry_after     seconds, as Retry-After on the answer (any mode)
 *   retry_after_format  "seconds" (default) | "date" (an HTTP date,
 *                   rounded up) | "ms" (retry-after-ms instead)
 *   confidence      per-token probability in logprobs (default 0.95)
 *   header_confidence  value of an x-confidence response header
 *   content         the answer text (a string, or JSON sent compact)
 *   chunks          stream: chat/completions chunk events (role and finish
 *                   included); Responses: output_text.delta events;
 *                   Messages: content_block_delta events. Default 5.
 *   chunk_ms        stream: delay between events
 *   chunk_bytes     stream: pad each text piece with spaces to this size
 *   die_after       stream_die: events sent before the reset (default 2)
 *   times           use this behaviour for that many requests (queued in
 *                   the order posted), then the one before applies again;
 *                   without `times` a behaviour replaces the model's
 *                   behaviour and its queue
 *   cache_read      usage: cached input tokens (OpenAI cached_tokens, added
 *                   to the input tokens; Anthropic cache_read_input_tokens)
 *   cache_write     usage: Anthropic cache_creation_input_tokens
 *   reasoning_tokens  usage: OpenAI reasoning tokens, added to the output
 *   headers         object of extra response headers sent as given (any
 *                   mode but raw); Content-Type replaces the mock's,
 *                   Connection replaces the mock's (and "close" closes
 *                   after the answer), Transfer-Encoding must be "chunked"
 *                   (the body is then sent as one chunk); Content-Length is
 *                   refused (use raw)
 *   close_idle_ms   after this answer, close the connection (FIN) when no
 *                   byte of a next request arrived within this many ms
 *   raw, then       mode raw: the response bytes; "close" | "keep"
 */
#ifndef MG_MOCK_H
#define MG_MOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
  MG_MOCK_STREAM_DIE,
  MG_MOCK_CLOSE,
  MG_MOCK_RAW
};

/* Ceiling of a behaviour's `raw` bytes and of its `headers` lines. */
#define MG_MOCK_RAW_MAX (1024 * 1024)
#define MG_MOCK_HEADERS_MAX (64 * 1024)

/* One behaviour as posted to /_mock/behaviour, defaults filled in. */
struct mg_mock_bhv {
  enum mg_mock_mode mode;
  long ms;    /* delay before anything is sent */
  int status; /* mode status: the HTTP status */
  char *body; /* owned, or NULL: a default error body */
  bool has_retry_after;
  double retry_after;     /* seconds, for the Retry-After header */
  int retry_after_format; /* 0: Retry-After in seconds; 1: Retry-After as an
                             HTTP date (now + retry_after, rounded up to the
                             second); 2: retry-after-ms instead */
  double confidence;      /* per-token probability in logprobs */
  bool has_header_confidence;
  double header_confidence; /* value of the x-confidence header */
  char *content;            /* owned, or NULL: the default answer text */
  long chunks;              /* stream: text events */
  long chunk_ms;            /* stream: delay between events */
  long chunk_bytes;         /* stream: pad each content piece to this */
  long die_after;           /* stream_die: events sent before the reset */
  long times;               /* uses left for a queued behaviour; 0: none */
  long cache_read;          /* usage: cached input tokens */
  long cache_write;         /* usage: Anthropic cache creation tokens */
  long reasoning_tokens;    /* usage: OpenAI reasoning tokens */
  long close_idle_ms;       /* close the kept connection after this idle */
  char *headers;            /* owned, or NULL: extra "Name: value\r\n" lines */
  bool h_ctype;             /* headers has Content-Type: the mock sends none */
  bool h_conn;              /* headers has Connection: the mock sends none */
  bool h_close;             /* ... and it says close: end after the answer */
  bool h_chunked;           /* headers has Transfer-Encoding: chunked */
  char *raw;                /* owned, or NULL: mode raw's bytes */
  size_t raw_len;
  bool raw_keep;            /* mode raw: keep the connection afterwards */
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

/* ---- requests and answers (answer.c, responses.c, anthropic.c) --------- */

enum mg_mock_api {
  MG_MOCK_CHAT,
  MG_MOCK_COMPLETIONS,
  MG_MOCK_EMBEDDINGS,
  MG_MOCK_RESPONSES,   /* POST /v1/responses */
  MG_MOCK_MESSAGES,    /* POST /v1/messages */
  MG_MOCK_COUNT_TOKENS /* POST /v1/messages/count_tokens */
};

/* Whose shapes (errors, headers) an answer takes. */
enum mg_mock_family {
  MG_MOCK_FAM_NONE,
  MG_MOCK_FAM_OPENAI,
  MG_MOCK_FAM_ANTHROPIC
};

enum mg_mock_family mg_mock_api_family(enum mg_mock_api api);

/* What one API request asked for. */
struct mg_mock_req {
  enum mg_mock_api api;
  char *model; /* owned */
  bool stream;
  bool include_usage; /* stream_options.include_usage */
  bool logprobs;      /* chat: "logprobs": true; completions: a number;
                         responses: include "message.output_text.logprobs" */
  long top_logprobs;  /* completions: the number given */
  char *content;      /* owned: the answer text */
  long prompt_tokens;
  long completion_tokens;
  cJSON *inputs; /* owned: embeddings, one string per input */
  bool base64;   /* embeddings: encoding_format "base64" */

  /* Responses and Messages. */
  char id[64];       /* "resp_<hex>" or "msg_<hex>" */
  char item_id[64];  /* responses: the output message's "msg_<hex>" */
  cJSON *echo;       /* owned: responses: the request body, whose members
                        the Response object echoes */
  cJSON *items;      /* owned: responses: the input items, with ids */
  char *previous_id; /* owned, or NULL: previous_response_id */
  bool store;        /* responses: keep the answer (`store` not false) */

  /* When parsing failed with -EINVAL: OpenAI's `param` and `code` (static
   * strings, or NULL). */
  const char *err_param;
  const char *err_code;
};

/* Process-wide settings of the answers, set once at start-up: the mock's
 * --name (borrowed, may be NULL: then no prefix) and a random nonce that
 * makes ids unique across mock processes. */
void mg_mock_env_init(const char *name, uint64_t nonce);
const char *mg_mock_env_name(void);
/* "<prefix><32 hex digits>", never the same twice in one process and
 * (by the nonce) not across processes either. */
void mg_mock_new_id(char *out, size_t n, const char *prefix);

/* Parse and check a request body. On error (-EINVAL) err holds a message in
 * the API's words (and rq->err_param, err_code what OpenAI would say);
 * -ENOMEM otherwise. rq is always safe to clear. */
int mg_mock_req_parse(struct mg_mock_req *rq, enum mg_mock_api api,
                      const cJSON *body, struct mg_buf *err) MG_WARN_UNUSED;
/* Replace the answer text (a behaviour's `content`). */
int mg_mock_req_set_content(struct mg_mock_req *rq,
                            const char *content) MG_WARN_UNUSED;
void mg_mock_req_clear(struct mg_mock_req *rq);

/* The whole non-streamed answer body of any API; b gives the confidence
 * and the usage options. id numbers chat and completions answers. */
int mg_mock_answer(const struct mg_mock_req *rq, const struct mg_mock_bhv *b,
                   unsigned long id, struct mg_buf *out) MG_WARN_UNUSED;
/* {"error":{"message":msg,"type":type,"param":null,"code":null}} */
int mg_mock_error_body(struct mg_buf *out, const char *type,
                       const char *msg) MG_WARN_UNUSED;
/* The same with param and code (NULL: JSON null). */
int mg_mock_error_body_full(struct mg_buf *out, const char *type,
                            const char *msg, const char *param,
                            const char *code) MG_WARN_UNUSED;

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
  long events;      /* all events of the stream */
  size_t *wstart;   /* owned: byte offset of each word of the content */
  size_t *wend;     /* owned: one past each word */
  long nwords;
  long cache_read, cache_write, reasoning_tokens; /* usage options */
  cJSON *final; /* owned: responses: the completed Response object */
};

int mg_mock_stream_init(struct mg_mock_stream *s, const struct mg_mock_req *rq,
                        const struct mg_mock_bhv *b,
                        unsigned long id) MG_WARN_UNUSED;
void mg_mock_stream_clear(struct mg_mock_stream *s);
/* Number of events: chat and completions: the chunks, the usage chunk when
 * asked, [DONE]; Responses and Messages: their typed events. */
long mg_mock_stream_events(const struct mg_mock_stream *s);
/* Append event i ("data: ...\n\n", or "event: T\ndata: ...\n\n") to out. */
int mg_mock_stream_event(const struct mg_mock_stream *s, long i,
                         struct mg_buf *out) MG_WARN_UNUSED;

/* ---- OpenAI Responses (responses.c) ------------------------------------ */

int mg_mock__resp_parse(struct mg_mock_req *rq, const cJSON *body,
                        struct mg_buf *err) MG_WARN_UNUSED;
/* The Response object: done: "completed" with its output and usage;
 * otherwise "in_progress" with neither (what response.created carries).
 * NULL when out of memory. */
cJSON *mg_mock__resp_object(const struct mg_mock_req *rq, double confidence,
                            long cache_read, long reasoning_tokens,
                            long created, bool done);
/* Set up s (words split, pieces from chunks) for the typed events. */
int mg_mock__resp_stream_init(struct mg_mock_stream *s,
                              double confidence) MG_WARN_UNUSED;
int mg_mock__resp_event(const struct mg_mock_stream *s, long i,
                        struct mg_buf *out) MG_WARN_UNUSED;
/* The input items list of a stored response: query is the URL's query
 * string (order, limit, after) or NULL. -EINVAL (err says why) on a bad
 * query or stored items that are not an array. */
int mg_mock_resp_input_items(const char *items_json, const char *query,
                             struct mg_buf *out,
                             struct mg_buf *err) MG_WARN_UNUSED;
/* {"id":id,"object":"response","deleted":true} */
int mg_mock_resp_deleted(const char *id, struct mg_buf *out) MG_WARN_UNUSED;

/* ---- Anthropic Messages (anthropic.c) ---------------------------------- */

int mg_mock__msg_parse(struct mg_mock_req *rq, const cJSON *body,
                       struct mg_buf *err) MG_WARN_UNUSED;
int mg_mock__msg_answer(const struct mg_mock_req *rq,
                        const struct mg_mock_bhv *b,
                        struct mg_buf *out) MG_WARN_UNUSED;
int mg_mock__msg_stream_init(struct mg_mock_stream *s) MG_WARN_UNUSED;
int mg_mock__msg_event(const struct mg_mock_stream *s, long i,
                       struct mg_buf *out) MG_WARN_UNUSED;
/* The error type Anthropic gives a status: 401 authentication_error, 429
 * rate_limit_error, 529 overloaded_error, other 5xx api_error, ... */
const char *mg_mock_anthropic_type(int status);
/* {"type":"error","error":{"type":type,"message":msg},"request_id":rid};
 * type NULL: the one for status. */
int mg_mock_anthropic_error(struct mg_buf *out, int status, const char *type,
                            const char *msg,
                            const char *request_id) MG_WARN_UNUSED;

/* ---- shared by the answer modules (answer.c) --------------------------- */

/* cJSON's adders return NULL on failure; one flag keeps the code linear. */
struct mg_mock__jb {
  bool oom;
};

/* Add item to parent (under key, or appended when key is NULL); on any
 * failure item is freed and j->oom set. Returns item or NULL. */
cJSON *mg_mock__add(struct mg_mock__jb *j, cJSON *parent, const char *key,
                    cJSON *item);
/* Print root compactly and append it to out; root is deleted. */
int mg_mock__emit(cJSON *root, struct mg_buf *out) MG_WARN_UNUSED;
size_t mg_mock__utf8_chars(const char *s);
long mg_mock__count_words(const char *s);
long mg_mock__prompt_tokens(size_t chars);
/* The text of a message's content: a string, or the text parts of an array
 * of content parts. Appends to out. */
int mg_mock__content_text(const cJSON *content,
                          struct mg_buf *out) MG_WARN_UNUSED;
/* "[name] Mock answer from <model> to: <first 40 characters of prompt>",
 * then " (after <after>)" when after is not NULL; into rq->content. */
int mg_mock__default_content(struct mg_mock_req *rq, const char *prompt,
                             const char *after) MG_WARN_UNUSED;
/* err gets msg; returns -EINVAL (or -ENOMEM). */
int mg_mock__set_err(struct mg_buf *err, const char *msg) MG_WARN_UNUSED;
/* Split s into words for a stream: s->wstart, wend, nwords. */
int mg_mock__split_words(const char *s, size_t **wstart, size_t **wend,
                         long *nwords) MG_WARN_UNUSED;
/* Token logprobs of words [from, to): [{token, logprob, bytes,
 * top_logprobs}...] (chat's logprobs.content, Responses' logprobs). */
cJSON *mg_mock__token_logprobs(struct mg_mock__jb *j, const char *text,
                               const size_t *wstart, const size_t *wend,
                               long from, long to, double lp);
/* Text piece k (of s->pieces) of the content, padded to chunk_bytes: a
 * fresh string; *w0, *w1 its words. NULL when out of memory. */
char *mg_mock__piece(const struct mg_mock_stream *s, long k, long *w0,
                     long *w1);

/* ---- stored responses (store.c) ---------------------------------------- */

struct mg_mock_stored {
  char *id;                             /* owned */
  char *model;                          /* owned */
  char *response;                       /* owned: the Response object's JSON */
  char *items;                          /* owned: the input items' JSON array */
  size_t bytes;                         /* what the four strings take */
  struct mg_mock_stored *hnext;         /* the hash chain */
  struct mg_mock_stored *older, *newer; /* age order */
};

/* The last `max` responses (and at most max_bytes of them), by id. */
struct mg_mock_store {
  struct mg_mock_stored **buckets;        /* owned array of chains */
  size_t nbuckets;                        /* power of two */
  struct mg_mock_stored *oldest, *newest; /* owned, through `newer` */
  size_t count, max, bytes, max_bytes;
};

int mg_mock_store_init(struct mg_mock_store *s, size_t max,
                       size_t max_bytes) MG_WARN_UNUSED;
void mg_mock_store_free(struct mg_mock_store *s);
/* Keep a copy of one response (replacing one with the same id), evicting
 * the oldest ones past the bounds. 0 or -ENOMEM. */
int mg_mock_store_put(struct mg_mock_store *s, const char *id,
                      const char *model, const char *response,
                      const char *items) MG_WARN_UNUSED;
const struct mg_mock_stored *mg_mock_store_get(const struct mg_mock_store *s,
                                               const char *id);
/* true when it was there. */
bool mg_mock_store_delete(struct mg_mock_store *s, const char *id);

/* ---- statistics (stats.c) ---------------------------------------------- */

struct mg_mock_stats {
  unsigned long requests;           /* API requests; control ones excluded */
  unsigned long requests_received;  /* heads of non-control requests */
  unsigned long bodies_read;        /* ... whose body was read whole */
  unsigned long connections_opened; /* TCP connections accepted */
  unsigned long connections_active;
  unsigned long active_streams;
  unsigned long streams_completed;
  unsigned long streams_aborted; /* the client went away before the end */
  unsigned long streams_died;    /* ended by stream_die */
  unsigned long chunks_sent;     /* stream events written */
  unsigned long idle_closes;     /* connections ended by close_idle_ms */
  cJSON *by_model;               /* owned: {"model": count}, valid requests */
  cJSON *received_by_model;      /* owned: {"model": count}, every request
                                    whose body named a model */
  cJSON *by_endpoint;            /* owned: {"responses.get": count} */
  cJSON *last;                   /* owned: {"model": {body, headers, ...}} */
  cJSON *anthropic;              /* owned: the Anthropic headers last seen */
  const char *name;              /* borrowed: --name, or NULL */
  size_t responses_stored;       /* set by mock.c before a report */
};

int mg_mock_stats_init(struct mg_mock_stats *st) MG_WARN_UNUSED;
void mg_mock_stats_free(struct mg_mock_stats *st);
/* Zero the cumulative counters and forget the maps. The gauges (active
 * connections and streams) are kept. */
void mg_mock_stats_reset(struct mg_mock_stats *st);
/* Remember one valid API request to model: counted in by_model, its body
 * (NULL: none), method, path, headers and the request id the answer carries
 * (x-request-id / request-id; NULL: none) kept in last. hdrs holds nhdrs
 * pairs of NUL-terminated lower-case names and values. */
int mg_mock_stats_record(struct mg_mock_stats *st, const char *model,
                         const char *method, const char *path,
                         const char *request_id, const cJSON *body,
                         const char *hdrs, size_t nhdrs) MG_WARN_UNUSED;
/* Count one under key in map (by_endpoint, received_by_model). */
int mg_mock_stats_count(cJSON *map, const char *key) MG_WARN_UNUSED;
/* Remember the x-api-key, authorization, anthropic-version and
 * anthropic-beta of a request to an Anthropic endpoint (each NULL when
 * absent). */
int mg_mock_stats_anthropic(struct mg_mock_stats *st, const char *api_key,
                            const char *authorization, const char *version,
                            const char *beta) MG_WARN_UNUSED;
int mg_mock_stats_json(const struct mg_mock_stats *st,
                       struct mg_buf *out) MG_WARN_UNUSED;

#endif
