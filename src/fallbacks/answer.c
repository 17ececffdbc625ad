/* answer.c - answers modelgate makes itself, in OpenAI's shapes: a
 * traditional answer wrapped as a (chat) completion, buffered or streamed,
 * and a buffered completion replayed as a stream.
 *
 * Replayed streams copy the upstream's value bytes (id, content, usage...)
 * from the scanned answer, only without whitespace between tokens: nothing
 * is decoded and re-encoded, so the deltas concatenate to exactly what the
 * buffered answer said. */
#include "fallbacks/answer.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <string.h>

#define SSE_DONE "data: [DONE]\n\n"

static inline bool is_type(const struct mg_json_doc *d, uint32_t i,
                           enum mg_json_type t) {
  return i < d->n && d->toks[i].type == t;
}

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong
 * forms, no surrogates, nothing past U+10FFFF), or 0. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *e) {
  unsigned char c = p[0];
  size_t n, i;
  unsigned char lo = 0x80, hi = 0xBF;

  if (c < 0x80)
    return 1;
  if (c >= 0xC2 && c <= 0xDF)
    n = 2;
  else if (c >= 0xE0 && c <= 0xEF)
    n = 3;
  else if (c >= 0xF0 && c <= 0xF4)
    n = 4;
  else
    return 0;
  if ((size_t)(e - p) < n)
    return 0;
  if (c == 0xE0)
    lo = 0xA0;
  else if (c == 0xED)
    hi = 0x9F;
  else if (c == 0xF0)
    lo = 0x90;
  else if (c == 0xF4)
    hi = 0x8F;
  if (p[1] < lo || p[1] > hi)
    return 0;
  for (i = 2; i < n; i++)
    if ((p[i] & 0xC0) != 0x80)
      return 0;
  return n;
}

/* Append text as a JSON string. A traditional service may answer in any
 * charset, and a JSON text must be UTF-8 (RFC 8259, 8.1): invalid bytes
 * become U+FFFD, one per byte. */
static int json_text(struct mg_buf *out, const char *text, size_t len) {
  const unsigned char *p = (const unsigned char *)text, *e = p + len;
  struct mg_buf fixed;
  size_t n;
  int rc;

  if (len == 0)
    return mg_buf_puts(out, "\"\"");
  while (p < e && (n = utf8_seq(p, e)) != 0)
    p += n;
  if (p == e)
    return mg_buf_json_str(out, text, len);

  mg_buf_init(&fixed, out->max);
  p = (const unsigned char *)text;
  rc = 0;
  while (p < e && rc == 0) {
    n = utf8_seq(p, e);
    if (n == 0) {
      rc = mg_buf_append(&fixed, "\xEF\xBF\xBD", 3);
      p++;
    } else {
      rc = mg_buf_append(&fixed, p, n);
      p += n;
    }
  }
  if (rc == 0)
    rc = mg_buf_json_str(out, fixed.data, fixed.len);
  mg_buf_free(&fixed);
  return rc;
}

int mg_answer_json_text(struct mg_buf *out, const char *text, size_t len) {
  return json_text(out, text, len);
}

static const char *object_name(enum mg_answer_kind kind, bool chunk) {
  if (kind == MG_ANSWER_COMPLETION)
    return "text_completion";
  return chunk ? "chat.completion.chunk" : "chat.completion";
}

/* The members before "choices": {"id":..,"object":..,"created":..,"model":..,
 * (the trailing comma included). */
static int head(struct mg_buf *out, const char *object, const char *id,
                int64_t created, const char *model) {
  int rc;
  if ((rc = mg_buf_puts(out, "{\"id\":")) != 0 ||
      (rc = json_text(out, id, strlen(id))) != 0 ||
      (rc = mg_buf_printf(out, ",\"object\":\"%s\",\"created\":%" PRId64
                               ",\"model\":",
                          object, created)) != 0 ||
      (rc = json_text(out, model, strlen(model))) != 0)
    return rc;
  return mg_buf_append(out, ",", 1);
}

int mg_answer_wrap(struct mg_buf *out, enum mg_answer_kind kind,
                   const char *id, int64_t created, const char *model,
                   const char *text, size_t len) {
  size_t start = out->len;
  bool chat = kind == MG_ANSWER_CHAT;
  int rc;

  if (id == NULL || model == NULL || (text == NULL && len > 0))
    return -EINVAL;
  if ((rc = head(out, object_name(kind, false), id, created, model)) != 0 ||
      (rc = mg_buf_puts(out, chat ? "\"choices\":[{\"index\":0,\"message\":{"
                                    "\"role\":\"assistant\",\"content\":"
                                  : "\"choices\":[{\"text\":")) != 0 ||
      (rc = json_text(out, text, len)) != 0 ||
      (rc = mg_buf_puts(out, chat ? "},\"logprobs\":null," : ",\"index\":0,"
                                    "\"logprobs\":null,")) != 0 ||
      (rc = mg_buf_puts(out, "\"finish_reason\":\"stop\"}],\"usage\":{"
                             "\"prompt_tokens\":0,\"completion_tokens\":0,"
                             "\"total_tokens\":0}}")) != 0)
    mg_buf_truncate(out, start);
  return rc;
}

/* A member's key in an object being written: a comma before all but the
 * first. */
static int member(struct mg_buf *out, bool *first, const char *name) {
  int rc = *first ? 0 : mg_buf_puts(out, ",");
  *first = false;
  if (rc == 0 && (rc = mg_buf_puts(out, "\"")) == 0 &&
      (rc = mg_buf_puts(out, name)) == 0)
    rc = mg_buf_puts(out, "\":");
  return rc;
}

/* The start of an event: "data: " + prefix (the members before
 * "choices") + text; the caller writes the rest. */
static int event_open(struct mg_buf *out, const struct mg_buf *prefix,
                      const char *text) {
  int rc;
  if ((rc = mg_buf_puts(out, "data: ")) != 0 ||
      (rc = mg_buf_append(out, prefix->data, prefix->len)) != 0)
    return rc;
  return mg_buf_puts(out, text);
}

/* One whole event: event_open + "\n\n". */
static int event(struct mg_buf *out, const struct mg_buf *prefix,
                 const char *body) {
  int rc = event_open(out, prefix, body);
  return rc ? rc : mg_buf_puts(out, "\n\n");
}

int mg_answer_wrap_sse(struct mg_buf *out, enum mg_answer_kind kind,
                       const char *id, int64_t created, const char *model,
                       const char *text, size_t len) {
  struct mg_buf prefix;
  size_t start = out->len;
  int rc;

  if (id == NULL || model == NULL || (text == NULL && len > 0))
    return -EINVAL;
  mg_buf_init(&prefix, out->max);
  if ((rc = head(&prefix, object_name(kind, true), id, created, model)) != 0)
    goto out;
  if (kind == MG_ANSWER_CHAT) {
    if ((rc = event(out, &prefix,
                    "\"choices\":[{\"index\":0,\"delta\":{\"role\":"
                    "\"assistant\",\"content\":\"\"},\"logprobs\":null,"
                    "\"finish_reason\":null}]}")) != 0 ||
        (rc = event_open(
             out, &prefix,
             "\"choices\":[{\"index\":0,\"delta\":{\"content\":")) != 0 ||
        (rc = json_text(out, text, len)) != 0 ||
        (rc = mg_buf_puts(out, "},\"logprobs\":null,\"finish_reason\":null}"
                               "]}\n\n")) != 0 ||
        (rc = event(out, &prefix,
                    "\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,"
                    "\"finish_reason\":\"stop\"}]}")) != 0)
      goto out;
  } else {
    if ((rc = event_open(out, &prefix, "\"choices\":[{\"text\":")) != 0 ||
        (rc = json_text(out, text, len)) != 0 ||
        (rc = mg_buf_puts(out, ",\"index\":0,\"logprobs\":null,"
                               "\"finish_reason\":null}]}\n\n")) != 0 ||
        (rc = event(out, &prefix,
                    "\"choices\":[{\"text\":\"\",\"index\":0,\"logprobs\":null,"
                    "\"finish_reason\":\"stop\"}]}")) != 0)
      goto out;
  }
  rc = mg_buf_puts(out, SSE_DONE);
out:
  if (rc != 0)
    mg_buf_truncate(out, start);
  mg_buf_free(&prefix);
  return rc;
}

/* ---- replay ------------------------------------------------------------- */

/* Append p[0..n) (valid JSON) without the whitespace between its tokens.
 * An event's data is one line (WHATWG HTML, "Server-sent events"): a
 * pretty-printed upstream's line breaks would end it. Strings are copied
 * byte for byte (they hold no raw line break). */
static int compact(struct mg_buf *out, const char *p, size_t n) {
  size_t k, run = 0;
  bool in_str = false, esc = false;
  int rc;

  for (k = 0; k < n; k++) {
    char c = p[k];
    if (in_str) {
      if (esc)
        esc = false;
      else if (c == '\\')
        esc = true;
      else if (c == '"')
        in_str = false;
    } else if (c == '"') {
      in_str = true;
    } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      if (run && (rc = mg_buf_append(out, p + k - run, run)) != 0)
        return rc;
      run = 0;
      continue;
    }
    run++;
  }
  return mg_buf_append(out, p + n - run, run);
}

int mg_answer_compact_bytes(struct mg_buf *out, const char *p, size_t n) {
  return compact(out, p, n);
}

int mg_answer_compact(struct mg_buf *out, const struct mg_json_doc *d,
                      uint32_t i) {
  struct mg_str r;
  if (i >= d->n)
    return -EINVAL;
  r = mg_json_raw(d, i);
  return compact(out, r.p, r.len);
}

/* Append value i, compacted. */
static int raw(struct mg_buf *out, const struct mg_json_doc *d, uint32_t i) {
  struct mg_str r = mg_json_raw(d, i);
  return compact(out, r.p, r.len);
}

/* `"key":<raw value>,` when the root has key, nothing otherwise. */
static int carry(struct mg_buf *prefix, const struct mg_json_doc *d,
                 const char *key) {
  uint32_t v = mg_json_getc(d, 0, key);
  int rc;
  if (v == MG_JSON_NOTFOUND)
    return 0;
  if ((rc = mg_buf_printf(prefix, "\"%s\":", key)) != 0 ||
      (rc = raw(prefix, d, v)) != 0)
    return rc;
  return mg_buf_append(prefix, ",", 1);
}

/* A choice's index: its own when numeric, else its position. */
static int choice_index(struct mg_buf *out, const struct mg_json_doc *d,
                        uint32_t choice, uint32_t pos) {
  uint32_t v = mg_json_getc(d, choice, "index");
  if (is_type(d, v, MG_JSON_NUMBER))
    return raw(out, d, v);
  return mg_buf_printf(out, "%" PRIu32, pos);
}

/* A value that may be absent: its raw bytes, or null. */
static int raw_or_null(struct mg_buf *out, const struct mg_json_doc *d,
                       uint32_t i) {
  return i == MG_JSON_NOTFOUND ? mg_buf_puts(out, "null") : raw(out, d, i);
}

/* message.tool_calls in the streaming shape: every call gets the "index"
 * deltas are merged by (the OpenAI SDKs require it). A call that already
 * has one is copied as is. */
static int tool_calls(struct mg_buf *out, const struct mg_json_doc *d,
                      uint32_t arr) {
  uint32_t k, i;
  int rc;

  if ((rc = mg_buf_append(out, "[", 1)) != 0)
    return rc;
  for (k = 0, i = arr + 1; k < d->toks[arr].count; k++, i = d->toks[i].next) {
    const struct mg_json_tok *t = &d->toks[i];
    if (k > 0 && (rc = mg_buf_append(out, ",", 1)) != 0)
      return rc;
    if (mg_json_getc(d, i, "index") != MG_JSON_NOTFOUND) {
      rc = raw(out, d, i);
    } else if (t->count == 0) {
      rc = mg_buf_printf(out, "{\"index\":%" PRIu32 "}", k);
    } else {
      /* Everything after the '{', members and closing brace alike. */
      rc = mg_buf_printf(out, "{\"index\":%" PRIu32 ",", k);
      if (rc == 0)
        rc = compact(out, d->src + t->start + 1, t->end - t->start - 1);
    }
    if (rc != 0)
      return rc;
  }
  return mg_buf_append(out, "]", 1);
}

/* Is the choice at index c replayable? */
static bool valid_choice(const struct mg_json_doc *d, uint32_t c, bool chat) {
  uint32_t msg, v, k, i;

  if (!is_type(d, c, MG_JSON_OBJECT))
    return false;
  if (!chat) {
    v = mg_json_getc(d, c, "text");
    return is_type(d, v, MG_JSON_STRING);
  }
  msg = mg_json_getc(d, c, "message");
  if (!is_type(d, msg, MG_JSON_OBJECT))
    return false;
  v = mg_json_getc(d, msg, "content");
  if (v != MG_JSON_NOTFOUND && !is_type(d, v, MG_JSON_STRING) &&
      !is_type(d, v, MG_JSON_NULL))
    return false;
  v = mg_json_getc(d, msg, "tool_calls");
  if (v != MG_JSON_NOTFOUND && !is_type(d, v, MG_JSON_NULL)) {
    if (!is_type(d, v, MG_JSON_ARRAY))
      return false;
    for (k = 0, i = v + 1; k < d->toks[v].count; k++, i = d->toks[i].next)
      if (d->toks[i].type != MG_JSON_OBJECT)
        return false;
  }
  return true;
}

/* The events of one chat choice: role, content (with refusal, tool calls
 * and the choice's logprobs), finish_reason. */
static int replay_chat_choice(struct mg_buf *out, const struct mg_buf *prefix,
                              const struct mg_json_doc *d, uint32_t c,
                              uint32_t pos) {
  uint32_t msg = mg_json_getc(d, c, "message");
  uint32_t role = mg_json_getc(d, msg, "role");
  uint32_t content = mg_json_getc(d, msg, "content");
  uint32_t refusal = mg_json_getc(d, msg, "refusal");
  uint32_t fcall = mg_json_getc(d, msg, "function_call");
  uint32_t calls = mg_json_getc(d, msg, "tool_calls");
  bool has_content = is_type(d, content, MG_JSON_STRING);
  bool has_refusal = is_type(d, refusal, MG_JSON_STRING);
  bool has_fcall = is_type(d, fcall, MG_JSON_OBJECT);
  bool has_calls = is_type(d, calls, MG_JSON_ARRAY);
  bool first = true;
  int rc;

  /* 1: the role, with empty content (null when the answer has none, as
   * for a pure tool call). */
  if ((rc = event_open(out, prefix, "\"choices\":[{\"index\":")) != 0 ||
      (rc = choice_index(out, d, c, pos)) != 0 ||
      (rc = mg_buf_puts(out, ",\"delta\":{\"role\":")) != 0 ||
      (rc = is_type(d, role, MG_JSON_STRING)
                ? raw(out, d, role)
                : mg_buf_puts(out, "\"assistant\"")) != 0 ||
      (rc = mg_buf_puts(out, has_content ? ",\"content\":\"\"}"
                                         : ",\"content\":null}")) != 0 ||
      (rc = mg_buf_puts(out, ",\"logprobs\":null,\"finish_reason\":null}]}"
                             "\n\n")) != 0)
    return rc;

  /* 2: everything the message says, in one delta. */
  if (has_content || has_refusal || has_fcall || has_calls) {
    if ((rc = event_open(out, prefix, "\"choices\":[{\"index\":")) != 0 ||
        (rc = choice_index(out, d, c, pos)) != 0 ||
        (rc = mg_buf_puts(out, ",\"delta\":{")) != 0)
      return rc;
    if ((has_content && ((rc = member(out, &first, "content")) != 0 ||
                         (rc = raw(out, d, content)) != 0)) ||
        (has_refusal && ((rc = member(out, &first, "refusal")) != 0 ||
                         (rc = raw(out, d, refusal)) != 0)) ||
        (has_fcall && ((rc = member(out, &first, "function_call")) != 0 ||
                       (rc = raw(out, d, fcall)) != 0)) ||
        (has_calls && ((rc = member(out, &first, "tool_calls")) != 0 ||
                       (rc = tool_calls(out, d, calls)) != 0)))
      return rc;
    if ((rc = mg_buf_puts(out, "},\"logprobs\":")) != 0 ||
        (rc = raw_or_null(out, d, mg_json_getc(d, c, "logprobs"))) != 0 ||
        (rc = mg_buf_puts(out, ",\"finish_reason\":null}]}\n\n")) != 0)
      return rc;
  }

  /* 3: why it ended. */
  if ((rc = event_open(out, prefix, "\"choices\":[{\"index\":")) != 0 ||
      (rc = choice_index(out, d, c, pos)) != 0 ||
      (rc = mg_buf_puts(out, ",\"delta\":{},\"logprobs\":null,"
                             "\"finish_reason\":")) != 0 ||
      (rc = raw_or_null(out, d, mg_json_getc(d, c, "finish_reason"))) != 0)
    return rc;
  return mg_buf_puts(out, "}]}\n\n");
}

/* The events of one legacy completion choice: its text (with its
 * logprobs), then finish_reason. */
static int replay_text_choice(struct mg_buf *out, const struct mg_buf *prefix,
                              const struct mg_json_doc *d, uint32_t c,
                              uint32_t pos) {
  int rc;
  if ((rc = event_open(out, prefix, "\"choices\":[{\"text\":")) != 0 ||
      (rc = raw(out, d, mg_json_getc(d, c, "text"))) != 0 ||
      (rc = mg_buf_puts(out, ",\"index\":")) != 0 ||
      (rc = choice_index(out, d, c, pos)) != 0 ||
      (rc = mg_buf_puts(out, ",\"logprobs\":")) != 0 ||
      (rc = raw_or_null(out, d, mg_json_getc(d, c, "logprobs"))) != 0 ||
      (rc = mg_buf_puts(out, ",\"finish_reason\":null}]}\n\n")) != 0)
    return rc;
  if ((rc = event_open(out, prefix,
                       "\"choices\":[{\"text\":\"\",\"index\":")) != 0 ||
      (rc = choice_index(out, d, c, pos)) != 0 ||
      (rc = mg_buf_puts(out, ",\"logprobs\":null,\"finish_reason\":")) != 0 ||
      (rc = raw_or_null(out, d, mg_json_getc(d, c, "finish_reason"))) != 0)
    return rc;
  return mg_buf_puts(out, "}]}\n\n");
}

int mg_answer_replay_sse(const struct mg_json_doc *doc, struct mg_buf *out) {
  struct mg_buf prefix;
  size_t start = out->len;
  uint32_t obj, choices, usage, k, i;
  bool chat;
  int rc = 0;

  if (!is_type(doc, 0, MG_JSON_OBJECT))
    return -EINVAL;
  obj = mg_json_getc(doc, 0, "object");
  if (mg_json_str_eq(doc, obj, "chat.completion", 15))
    chat = true;
  else if (mg_json_str_eq(doc, obj, "text_completion", 15))
    chat = false;
  else
    return -EINVAL;
  choices = mg_json_getc(doc, 0, "choices");
  if (!is_type(doc, choices, MG_JSON_ARRAY))
    return -EINVAL;
  /* Check everything before writing anything: a half-replayed answer is
   * worse than none. */
  for (k = 0, i = choices + 1; k < doc->toks[choices].count;
       k++, i = doc->toks[i].next)
    if (!valid_choice(doc, i, chat))
      return -EINVAL;

  mg_buf_init(&prefix, out->max);
  if ((rc = mg_buf_append(&prefix, "{", 1)) != 0 ||
      (rc = carry(&prefix, doc, "id")) != 0 ||
      (rc = mg_buf_printf(&prefix, "\"object\":\"%s\",",
                          chat ? "chat.completion.chunk"
                               : "text_completion")) != 0 ||
      (rc = carry(&prefix, doc, "created")) != 0 ||
      (rc = carry(&prefix, doc, "model")) != 0 ||
      (rc = carry(&prefix, doc, "system_fingerprint")) != 0 ||
      (rc = carry(&prefix, doc, "service_tier")) != 0)
    goto out;

  for (k = 0, i = choices + 1; k < doc->toks[choices].count;
       k++, i = doc->toks[i].next) {
    rc = chat ? replay_chat_choice(out, &prefix, doc, i, k)
              : replay_text_choice(out, &prefix, doc, i, k);
    if (rc != 0)
      goto out;
  }

  /* The usage chunk of stream_options.include_usage: no choices. */
  usage = mg_json_getc(doc, 0, "usage");
  if (is_type(doc, usage, MG_JSON_OBJECT) &&
      ((rc = event_open(out, &prefix, "\"choices\":[],\"usage\":")) != 0 ||
       (rc = raw(out, doc, usage)) != 0 ||
       (rc = mg_buf_puts(out, "}\n\n")) != 0))
    goto out;
  rc = mg_buf_puts(out, SSE_DONE);
out:
  if (rc != 0)
    mg_buf_truncate(out, start);
  mg_buf_free(&prefix);
  return rc;
}

/* ---- traditional answers ------------------------------------------------ */

int mg_answer_text(const char *body, size_t len, const char *field,
                   struct mg_json_doc *scratch, struct mg_buf *tmp,
                   const char **text, size_t *text_len) {
  uint32_t i;
  int rc;

  if (field == NULL)
    goto whole;
  rc = mg_json_parse(scratch, body, len, NULL);
  if (rc == MG_JSON_EINVAL)
    goto whole; /* plain text: the body is the answer */
  if (rc == MG_JSON_ENOMEM)
    return -ENOMEM;
  if (rc != 0)
    return -E2BIG; /* JSON, but past the token or depth ceiling */

  i = mg_json_pointer(scratch, 0, field);
  if (i == MG_JSON_NOTFOUND)
    return -ENOENT;
  switch (scratch->toks[i].type) {
  case MG_JSON_STRING:
    if (!scratch->toks[i].escaped) {
      struct mg_str s = mg_json_str_raw(scratch, i);
      *text = s.p;
      *text_len = s.len;
      return 0;
    }
    mg_buf_reset(tmp);
    if ((rc = mg_json_str_decode(scratch, i, tmp)) != 0)
      return rc;
    *text = tmp->data;
    *text_len = tmp->len;
    return 0;
  case MG_JSON_NUMBER:
  case MG_JSON_TRUE:
  case MG_JSON_FALSE: {
    /* {"answer": 42} answers "42". */
    struct mg_str s = mg_json_raw(scratch, i);
    *text = s.p;
    *text_len = s.len;
    return 0;
  }
  default:
    return -ENOENT; /* null, or an object or array that is no text */
  }
whole:
  *text = body;
  *text_len = len;
  return 0;
}
