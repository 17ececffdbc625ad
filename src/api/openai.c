/* openai.c - the chat-era OpenAI endpoints: chat completions, legacy
 * completions and embeddings. Their answers and streams are built by
 * fallbacks/answer.c and read by fallbacks/gate.c; this module puts them
 * behind the endpoint table's operations, and holds what all OpenAI
 * shapes share (usage counts, the error object). */
#include <errno.h>
#include <string.h>

#include "api/family.h"
#include "fallbacks/answer.h"
#include "fallbacks/gate.h"

/* ---- shared ------------------------------------------------------------ */

void mg_api__count(const struct mg_json_doc *d, uint32_t obj, const char *key,
                   int64_t *out) {
  uint32_t v;
  int64_t n;
  if (!mg_api__is(d, obj, MG_JSON_OBJECT))
    return;
  v = mg_json_getc(d, obj, key);
  if (mg_api__is(d, v, MG_JSON_NUMBER) && mg_json_int(d, v, &n) == 0 && n >= 0)
    *out = n;
}

bool mg_api__has(struct mg_str s, const char *needle) {
  size_t n = strlen(needle), i;
  if (n == 0)
    return true;
  if (s.len < n)
    return false;
  for (i = 0; i + n <= s.len; i++) {
    const char *p = memchr(s.p + i, needle[0], s.len - n - i + 1);
    if (p == NULL)
      return false;
    i = (size_t)(p - s.p);
    if (memcmp(p, needle, n) == 0)
      return true;
  }
  return false;
}

int mg_api__event_open(struct mg_buf *out, const char *name) {
  int rc;
  if ((rc = mg_buf_puts(out, "event: ")) != 0 ||
      (rc = mg_buf_puts(out, name)) != 0)
    return rc;
  return mg_buf_puts(out, "\ndata: ");
}

/* OpenAI's error types by status, as its API answers them. */
static const char *openai_type(int status) {
  /* A missing or wrong key: 401 with code invalid_api_key, of type
   * invalid_request_error (what api.openai.com answers). */
  if (status == 401)
    return "invalid_request_error";
  if (status == 403)
    return "permission_error";
  if (status == 429)
    return "rate_limit_error";
  if (status >= 500)
    return "server_error";
  return "invalid_request_error";
}

static int str_or_null(struct mg_buf *out, const char *s) {
  return s ? mg_answer_json_text(out, s, strlen(s)) : mg_buf_puts(out, "null");
}

int mg_api__openai_error(struct mg_buf *out, int status, const char *type,
                         const char *message, const char *param,
                         const char *code) {
  size_t start = out->len;
  int rc;
  if (message == NULL)
    message = "";
  if ((rc = mg_buf_puts(out, "{\"error\":{\"message\":")) != 0 ||
      (rc = mg_answer_json_text(out, message, strlen(message))) != 0 ||
      (rc = mg_buf_puts(out, ",\"type\":")) != 0 ||
      (rc = str_or_null(out, type ? type : openai_type(status))) != 0 ||
      (rc = mg_buf_puts(out, ",\"param\":")) != 0 ||
      (rc = str_or_null(out, param)) != 0 ||
      (rc = mg_buf_puts(out, ",\"code\":")) != 0 ||
      (rc = str_or_null(out, code)) != 0 ||
      (rc = mg_buf_puts(out, "}}")) != 0)
    mg_buf_truncate(out, start);
  return rc;
}

/* ---- usage ------------------------------------------------------------- */

/* usage of chat and completions answers (and of a chunk that carries it). */
static void usage_of(const struct mg_json_doc *d, uint32_t u,
                     struct mg_usage *out) {
  if (!mg_api__is(d, u, MG_JSON_OBJECT))
    return;
  mg_api__count(d, u, "prompt_tokens", &out->prompt);
  mg_api__count(d, u, "completion_tokens", &out->completion);
  mg_api__count(d, mg_json_getc(d, u, "prompt_tokens_details"),
                "cached_tokens", &out->cached);
  mg_api__count(d, mg_json_getc(d, u, "completion_tokens_details"),
                "reasoning_tokens", &out->reasoning);
}

static void chat_usage(const struct mg_json_doc *d, struct mg_usage *u) {
  if (mg_api__is(d, 0, MG_JSON_OBJECT))
    usage_of(d, mg_json_getc(d, 0, "usage"), u);
}

/* Embeddings make no output tokens: a known prompt count is the whole
 * usage. */
static void embeddings_usage(const struct mg_json_doc *d, struct mg_usage *u) {
  chat_usage(d, u);
  if (u->prompt >= 0 && u->completion < 0)
    u->completion = 0;
}

/* A chunk carries usage only at the end (stream_options.include_usage),
 * and logprobs per delta: most chunks need no scan at all. */
static void chat_stream_event(struct mg_stream_state *st,
                              const struct mg_sse_event *ev,
                              struct mg_json_doc *scratch) {
  const struct mg_str d = ev->data;
  bool usage, error;
  uint32_t v;

  if (d.len == 6 && memcmp(d.p, "[DONE]", 6) == 0) {
    st->done = true;
    return;
  }
  usage = mg_api__has(d, "\"usage\"");
  error = mg_api__has(d, "\"error\"");
  if (!usage && !error && !st->want_logprobs)
    return;
  if (mg_json_parse(scratch, d.p, d.len, NULL) != 0 ||
      !mg_api__is(scratch, 0, MG_JSON_OBJECT))
    return;
  v = mg_json_getc(scratch, 0, "error");
  if (error && mg_api__is(scratch, v, MG_JSON_OBJECT)) {
    st->done = st->failed = true;
    return;
  }
  if (usage)
    usage_of(scratch, mg_json_getc(scratch, 0, "usage"), &st->usage);
  if (st->want_logprobs)
    mg_gate_acc_chunk(&st->acc, scratch);
}

/* ---- logprobs ------------------------------------------------------------ */

static void chat_logprobs(const struct mg_json_doc *d,
                          struct mg_gate_acc *acc) {
  mg_gate_acc_chunk(acc, d);
}

static int chat_ask(const struct mg_json_doc *req, struct mg_buf *out) {
  return mg_gate_ask_logprobs(req, true, out);
}

static int completions_ask(const struct mg_json_doc *req, struct mg_buf *out) {
  return mg_gate_ask_logprobs(req, false, out);
}

static int strip(const struct mg_json_doc *answer, struct mg_buf *out) {
  return mg_gate_strip_logprobs(answer, out);
}

/* ---- rendering ------------------------------------------------------------ */

static int chat_wrap(struct mg_buf *out, const struct mg_answer_meta *m,
                     const char *text, size_t len) {
  return mg_answer_wrap(out, MG_ANSWER_CHAT, m->id, m->created, m->model,
                        text, len);
}

static int chat_wrap_sse(struct mg_buf *out, const struct mg_answer_meta *m,
                         const char *text, size_t len) {
  return mg_answer_wrap_sse(out, MG_ANSWER_CHAT, m->id, m->created, m->model,
                            text, len);
}

static int completions_wrap(struct mg_buf *out, const struct mg_answer_meta *m,
                            const char *text, size_t len) {
  return mg_answer_wrap(out, MG_ANSWER_COMPLETION, m->id, m->created,
                        m->model, text, len);
}

static int completions_wrap_sse(struct mg_buf *out,
                                const struct mg_answer_meta *m,
                                const char *text, size_t len) {
  return mg_answer_wrap_sse(out, MG_ANSWER_COMPLETION, m->id, m->created,
                            m->model, text, len);
}

static int replay(const struct mg_json_doc *doc, struct mg_buf *out) {
  return mg_answer_replay_sse(doc, out);
}

/* A failure after the head: an error data event in OpenAI's shape, and
 * never the [DONE] that would make it look complete (DESIGN.md,
 * "Streaming"). */
static int chat_stream_error(struct mg_buf *out,
                             const struct mg_stream_state *st,
                             const char *response_id, const char *message,
                             const char *code) {
  size_t start = out->len;
  int rc;
  (void)st;
  (void)response_id;
  if ((rc = mg_buf_puts(out, "data: ")) != 0 ||
      (rc = mg_api__openai_error(out, 500, "server_error", message, NULL,
                                 code)) != 0 ||
      (rc = mg_buf_puts(out, "\n\n")) != 0)
    mg_buf_truncate(out, start);
  return rc;
}

const struct mg_endpoint_ops mg_api__chat_ops = {
    .usage = chat_usage,
    .stream_event = chat_stream_event,
    .logprobs = chat_logprobs,
    .ask_logprobs = chat_ask,
    .strip_logprobs = strip,
    .answer_text = mg_gate_choice_text,
    .wrap_text = chat_wrap,
    .wrap_text_sse = chat_wrap_sse,
    .replay_sse = replay,
    .error_body = mg_api__openai_error,
    .stream_error = chat_stream_error,
};

const struct mg_endpoint_ops mg_api__completions_ops = {
    .usage = chat_usage,
    .stream_event = chat_stream_event,
    .logprobs = chat_logprobs,
    .ask_logprobs = completions_ask,
    .strip_logprobs = strip,
    .answer_text = mg_gate_choice_text,
    .wrap_text = completions_wrap,
    .wrap_text_sse = completions_wrap_sse,
    .replay_sse = replay,
    .error_body = mg_api__openai_error,
    .stream_error = chat_stream_error,
};

/* Vectors: no confidence, no stream, nothing modelgate could make. */
const struct mg_endpoint_ops mg_api__embeddings_ops = {
    .usage = embeddings_usage,
    .error_body = mg_api__openai_error,
};
