/* anthropic.c - Anthropic's Messages API: POST /v1/messages and
 * /v1/messages/count_tokens, passed through to targets with api
 * "anthropic".
 *
 * A message carries content blocks (text, tool_use, thinking, ...). A
 * stream is named events: message_start (the message without content, and
 * the input usage), per block content_block_start, content_block_delta...,
 * content_block_stop, then message_delta (stop_reason and the cumulative
 * output_tokens), message_stop; `ping` may come between, and a failure is
 * an `error` event. The API has no token logprobs: a confidence gate reads
 * a header or a JSON field (its logprobs operations are NULL). */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "api/family.h"
#include "fallbacks/answer.h"

/* ---- usage --------------------------------------------------------------- */

/* input_tokens counts only the input that was neither read from nor
 * written to the prompt cache; cache reads and writes are counted beside
 * it, not in it (Anthropic's usage object). Every count present is
 * assigned: message_delta's counts are cumulative. */
static void usage_of(const struct mg_json_doc *d, uint32_t u,
                     struct mg_usage *out) {
  if (!mg_api__is(d, u, MG_JSON_OBJECT))
    return;
  mg_api__count(d, u, "input_tokens", &out->prompt);
  mg_api__count(d, u, "output_tokens", &out->completion);
  mg_api__count(d, u, "cache_read_input_tokens", &out->cache_read);
  mg_api__count(d, u, "cache_creation_input_tokens", &out->cache_write);
}

static void messages_usage(const struct mg_json_doc *d, struct mg_usage *u) {
  if (mg_api__is(d, 0, MG_JSON_OBJECT))
    usage_of(d, mg_json_getc(d, 0, "usage"), u);
}

static void messages_stream_event(struct mg_stream_state *st,
                                  const struct mg_sse_event *ev,
                                  struct mg_json_doc *d) {
  struct mg_str type = ev->event;
  bool parsed = false;
  uint32_t v;

  if (type.len == 0) {
    if (mg_json_parse(d, ev->data.p, ev->data.len, NULL) != 0 ||
        !mg_api__is(d, 0, MG_JSON_OBJECT))
      return;
    parsed = true;
    v = mg_json_getc(d, 0, "type");
    if (!mg_api__is(d, v, MG_JSON_STRING) || d->toks[v].escaped)
      return;
    type = mg_json_str_raw(d, v);
  }
  if (mg_str_eq_c(type, "message_stop")) {
    st->done = true;
    return;
  }
  if (mg_str_eq_c(type, "error")) {
    st->done = st->failed = true;
    return;
  }
  if (!mg_str_eq_c(type, "message_start") &&
      !mg_str_eq_c(type, "message_delta"))
    return; /* content blocks and pings say nothing the relay needs */
  if (!parsed && (mg_json_parse(d, ev->data.p, ev->data.len, NULL) != 0 ||
                  !mg_api__is(d, 0, MG_JSON_OBJECT)))
    return;
  if (mg_str_eq_c(type, "message_start")) {
    v = mg_json_getc(d, 0, "message");
    if (mg_api__is(d, v, MG_JSON_OBJECT))
      usage_of(d, mg_json_getc(d, v, "usage"), &st->usage);
  } else {
    usage_of(d, mg_json_getc(d, 0, "usage"), &st->usage);
  }
}

/* The first text block's text, for a json:<pointer> confidence. */
static uint32_t messages_answer_text(const struct mg_json_doc *d) {
  uint32_t c, k, i;
  if (!mg_api__is(d, 0, MG_JSON_OBJECT))
    return MG_JSON_NOTFOUND;
  c = mg_json_getc(d, 0, "content");
  if (!mg_api__is(d, c, MG_JSON_ARRAY))
    return MG_JSON_NOTFOUND;
  for (k = 0, i = c + 1; k < d->toks[c].count; k++, i = d->toks[i].next)
    if (d->toks[i].type == MG_JSON_OBJECT &&
        mg_api__str_is(d, mg_json_getc(d, i, "type"), "text"))
      return mg_json_getc(d, i, "text");
  return MG_JSON_NOTFOUND;
}

/* ---- errors -------------------------------------------------------------- */

/* Anthropic's error types by status (its API reference, "Errors"): other
 * 4xx are invalid_request_error, other 5xx api_error. */
static const char *anthropic_type(int status) {
  switch (status) {
  case 400:
    return "invalid_request_error";
  case 401:
    return "authentication_error";
  case 402:
    return "billing_error";
  case 403:
    return "permission_error";
  case 404:
    return "not_found_error";
  case 413:
    return "request_too_large";
  case 429:
    return "rate_limit_error";
  case 504:
    return "timeout_error";
  case 529:
    return "overloaded_error";
  default:
    return status >= 500 ? "api_error" : "invalid_request_error";
  }
}

static int error_object(struct mg_buf *out, const char *type,
                        const char *message) {
  int rc;
  if (message == NULL)
    message = "";
  if ((rc = mg_buf_puts(out, "{\"type\":\"error\",\"error\":{\"type\":")) !=
          0 ||
      (rc = mg_answer_json_text(out, type, strlen(type))) != 0 ||
      (rc = mg_buf_puts(out, ",\"message\":")) != 0 ||
      (rc = mg_answer_json_text(out, message, strlen(message))) != 0)
    return rc;
  return mg_buf_puts(out, "}}");
}

/* {"type":"error","error":{"type","message"}}: Anthropic's shape has no
 * param or code; modelgate's code (low_confidence, upstream_timeout...)
 * goes into the message's end, so that clients still see it. */
static int messages_error(struct mg_buf *out, int status, const char *type,
                          const char *message, const char *param,
                          const char *code) {
  size_t start = out->len;
  struct mg_buf msg;
  int rc;
  (void)param;
  mg_buf_init(&msg, out->max);
  rc = mg_buf_puts(&msg, message ? message : "");
  if (rc == 0 && code)
    rc = mg_buf_printf(&msg, " (%s)", code);
  if (rc == 0)
    rc = error_object(out, type ? type : anthropic_type(status),
                      msg.data ? msg.data : "");
  if (rc)
    mg_buf_truncate(out, start);
  mg_buf_free(&msg);
  return rc;
}

/* A failure after the head: an `error` event, as the API itself sends
 * one mid-stream (never a fake message_stop). */
static int messages_stream_error(struct mg_buf *out,
                                 const struct mg_stream_state *st,
                                 const char *response_id, const char *message,
                                 const char *code) {
  size_t start = out->len;
  const char *type =
      code && strstr(code, "timeout") ? "timeout_error" : "api_error";
  struct mg_buf msg;
  int rc;
  (void)st;
  (void)response_id;
  mg_buf_init(&msg, out->max);
  rc = mg_buf_puts(&msg, message ? message : "");
  if (rc == 0 && code)
    rc = mg_buf_printf(&msg, " (%s)", code);
  if (rc == 0 && (rc = mg_api__event_open(out, "error")) == 0 &&
      (rc = error_object(out, type, msg.data ? msg.data : "")) == 0)
    rc = mg_buf_puts(out, "\n\n");
  if (rc)
    mg_buf_truncate(out, start);
  mg_buf_free(&msg);
  return rc;
}

/* ---- rendering ----------------------------------------------------------- */

static int ev(struct mg_buf *out, const char *name, const char *body) {
  int rc;
  if ((rc = mg_api__event_open(out, name)) != 0 ||
      (rc = mg_buf_puts(out, body)) != 0)
    return rc;
  return mg_buf_puts(out, "\n\n");
}

/* {"id":..,"type":"message","role":"assistant","model":..,"content":[ */
static int made_head(struct mg_buf *out, const struct mg_answer_meta *m) {
  int rc;
  if ((rc = mg_buf_puts(out, "{\"id\":")) != 0 ||
      (rc = mg_answer_json_text(out, m->id, strlen(m->id))) != 0 ||
      (rc = mg_buf_puts(out, ",\"type\":\"message\",\"role\":\"assistant\","
                             "\"model\":")) != 0 ||
      (rc = mg_answer_json_text(out, m->model, strlen(m->model))) != 0)
    return rc;
  return mg_buf_puts(out, ",\"content\":[");
}

static int messages_wrap(struct mg_buf *out, const struct mg_answer_meta *m,
                         const char *text, size_t len) {
  size_t start = out->len;
  int rc;
  if (m->id == NULL || m->model == NULL || (text == NULL && len > 0))
    return -EINVAL;
  if ((rc = made_head(out, m)) != 0 ||
      (rc = mg_buf_puts(out, "{\"type\":\"text\",\"text\":")) != 0 ||
      (rc = mg_answer_json_text(out, text ? text : "", len)) != 0 ||
      (rc = mg_buf_puts(out, "}],\"stop_reason\":\"end_turn\","
                             "\"stop_sequence\":null,\"usage\":{"
                             "\"input_tokens\":0,\"output_tokens\":0}}")) != 0)
    mg_buf_truncate(out, start);
  return rc;
}

static int messages_wrap_sse(struct mg_buf *out,
                             const struct mg_answer_meta *m, const char *text,
                             size_t len) {
  size_t start = out->len;
  int rc;
  if (m->id == NULL || m->model == NULL || (text == NULL && len > 0))
    return -EINVAL;
  if ((rc = mg_api__event_open(out, "message_start")) != 0 ||
      (rc = mg_buf_puts(out, "{\"type\":\"message_start\",\"message\":")) !=
          0 ||
      (rc = made_head(out, m)) != 0 ||
      (rc = mg_buf_puts(out, "],\"stop_reason\":null,\"stop_sequence\":null,"
                             "\"usage\":{\"input_tokens\":0,"
                             "\"output_tokens\":0}}}\n\n")) != 0 ||
      (rc = ev(out, "content_block_start",
               "{\"type\":\"content_block_start\",\"index\":0,"
               "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}")) != 0 ||
      (rc = mg_api__event_open(out, "content_block_delta")) != 0 ||
      (rc = mg_buf_puts(out, "{\"type\":\"content_block_delta\",\"index\":0,"
                             "\"delta\":{\"type\":\"text_delta\",\"text\":")) !=
          0 ||
      (rc = mg_answer_json_text(out, text ? text : "", len)) != 0 ||
      (rc = mg_buf_puts(out, "}}\n\n")) != 0 ||
      (rc = ev(out, "content_block_stop",
               "{\"type\":\"content_block_stop\",\"index\":0}")) != 0 ||
      (rc = ev(out, "message_delta",
               "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
               "\"end_turn\",\"stop_sequence\":null},\"usage\":{"
               "\"output_tokens\":0}}")) != 0 ||
      (rc = ev(out, "message_stop", "{\"type\":\"message_stop\"}")) != 0)
    mg_buf_truncate(out, start);
  return rc;
}

/* ---- replay of a buffered message ----------------------------------------- */

static int raw(struct mg_buf *out, const struct mg_json_doc *d, uint32_t i) {
  return mg_answer_compact(out, d, i);
}

static int raw_or(struct mg_buf *out, const struct mg_json_doc *d, uint32_t i,
                  const char *dflt) {
  return i == MG_JSON_NOTFOUND ? mg_buf_puts(out, dflt) : raw(out, d, i);
}

/* Members of obj but those in skip, each after a comma unless *first. */
static int copy_members(struct mg_buf *out, const struct mg_json_doc *d,
                        uint32_t obj, const char *const *skip, bool *first) {
  uint32_t m, key;
  int rc;
  for (m = 0, key = obj + 1; m < d->toks[obj].count;
       m++, key = d->toks[key + 1].next) {
    const char *const *s;
    for (s = skip; *s; s++)
      if (mg_json_str_eq(d, key, *s, strlen(*s)))
        break;
    if (*s)
      continue;
    if ((!*first && (rc = mg_buf_puts(out, ",")) != 0) ||
        (rc = raw(out, d, key)) != 0 || (rc = mg_buf_puts(out, ":")) != 0 ||
        (rc = raw(out, d, key + 1)) != 0)
      return rc;
    *first = false;
  }
  return 0;
}

static int block_delta(struct mg_buf *out, uint32_t index, const char *type,
                       const char *key) {
  int rc;
  if ((rc = mg_api__event_open(out, "content_block_delta")) != 0)
    return rc;
  return mg_buf_printf(out,
                       "{\"type\":\"content_block_delta\",\"index\":%" PRIu32
                       ",\"delta\":{\"type\":\"%s\",\"%s\":",
                       index, type, key);
}

/* The events of one content block: its start (without what the deltas
 * bring), the deltas, its stop. */
static int replay_block(struct mg_buf *out, const struct mg_json_doc *d,
                        uint32_t index, uint32_t b) {
  static const char *const tool_skip[] = {"input", NULL};
  uint32_t type = mg_json_getc(d, b, "type");
  bool text = mg_api__str_is(d, type, "text");
  bool think = mg_api__str_is(d, type, "thinking");
  bool tool = mg_api__str_is(d, type, "tool_use") ||
              mg_api__str_is(d, type, "server_tool_use");
  int rc;

  if ((rc = mg_api__event_open(out, "content_block_start")) != 0 ||
      (rc = mg_buf_printf(out,
                          "{\"type\":\"content_block_start\",\"index\":%" PRIu32
                          ",\"content_block\":",
                          index)) != 0)
    return rc;
  if (text)
    rc = mg_buf_puts(out, "{\"type\":\"text\",\"text\":\"\"}");
  else if (think)
    rc = mg_buf_puts(out, "{\"type\":\"thinking\",\"thinking\":\"\"}");
  else if (tool) {
    bool first = true;
    if ((rc = mg_buf_puts(out, "{")) == 0 &&
        (rc = copy_members(out, d, b, tool_skip, &first)) == 0)
      rc = mg_buf_puts(out, first ? "\"input\":{}}" : ",\"input\":{}}");
  } else
    rc = raw(out, d, b);
  if (rc || (rc = mg_buf_puts(out, "}\n\n")) != 0)
    return rc;

  if (text) {
    if ((rc = block_delta(out, index, "text_delta", "text")) != 0 ||
        (rc = raw_or(out, d, mg_json_getc(d, b, "text"), "\"\"")) != 0 ||
        (rc = mg_buf_puts(out, "}}\n\n")) != 0)
      return rc;
  } else if (think) {
    uint32_t sig = mg_json_getc(d, b, "signature");
    if ((rc = block_delta(out, index, "thinking_delta", "thinking")) != 0 ||
        (rc = raw_or(out, d, mg_json_getc(d, b, "thinking"), "\"\"")) != 0 ||
        (rc = mg_buf_puts(out, "}}\n\n")) != 0)
      return rc;
    if (sig != MG_JSON_NOTFOUND &&
        ((rc = block_delta(out, index, "signature_delta", "signature")) != 0 ||
         (rc = raw(out, d, sig)) != 0 ||
         (rc = mg_buf_puts(out, "}}\n\n")) != 0))
      return rc;
  } else if (tool) {
    /* The input object arrives as JSON text in a string. */
    uint32_t in = mg_json_getc(d, b, "input");
    struct mg_buf js;
    mg_buf_init(&js, out->max);
    rc = raw_or(&js, d, in, "{}");
    if (rc == 0 &&
        (rc = block_delta(out, index, "input_json_delta", "partial_json")) ==
            0 &&
        (rc = mg_answer_json_text(out, js.data ? js.data : "", js.len)) == 0)
      rc = mg_buf_puts(out, "}}\n\n");
    mg_buf_free(&js);
    if (rc)
      return rc;
  }
  if ((rc = mg_api__event_open(out, "content_block_stop")) != 0)
    return rc;
  return mg_buf_printf(out,
                       "{\"type\":\"content_block_stop\",\"index\":%" PRIu32
                       "}\n\n",
                       index);
}

static int messages_replay(const struct mg_json_doc *d, struct mg_buf *out) {
  static const char *const skip[] = {"content", "stop_reason", "stop_sequence",
                                     NULL};
  size_t start = out->len;
  uint32_t c, k, i, usage;
  bool first = true;
  int rc;

  if (!mg_api__is(d, 0, MG_JSON_OBJECT) ||
      !mg_api__str_is(d, mg_json_getc(d, 0, "type"), "message"))
    return -EINVAL;
  c = mg_json_getc(d, 0, "content");
  if (!mg_api__is(d, c, MG_JSON_ARRAY))
    return -EINVAL;
  for (k = 0, i = c + 1; k < d->toks[c].count; k++, i = d->toks[i].next)
    if (d->toks[i].type != MG_JSON_OBJECT)
      return -EINVAL;
  usage = mg_json_getc(d, 0, "usage");

  if ((rc = mg_api__event_open(out, "message_start")) != 0 ||
      (rc = mg_buf_puts(out, "{\"type\":\"message_start\",\"message\":{")) !=
          0 ||
      (rc = copy_members(out, d, 0, skip, &first)) != 0 ||
      (rc = mg_buf_puts(out, first ? "" : ",")) != 0 ||
      (rc = mg_buf_puts(out, "\"content\":[],\"stop_reason\":null,"
                             "\"stop_sequence\":null}}\n\n")) != 0)
    goto out;
  for (k = 0, i = c + 1; k < d->toks[c].count; k++, i = d->toks[i].next)
    if ((rc = replay_block(out, d, k, i)) != 0)
      goto out;
  if ((rc = mg_api__event_open(out, "message_delta")) != 0 ||
      (rc = mg_buf_puts(out, "{\"type\":\"message_delta\",\"delta\":{"
                             "\"stop_reason\":")) != 0 ||
      (rc = raw_or(out, d, mg_json_getc(d, 0, "stop_reason"), "null")) != 0 ||
      (rc = mg_buf_puts(out, ",\"stop_sequence\":")) != 0 ||
      (rc = raw_or(out, d, mg_json_getc(d, 0, "stop_sequence"), "null")) !=
          0 ||
      (rc = mg_buf_puts(out, "},\"usage\":{\"output_tokens\":")) != 0 ||
      (rc = raw_or(out, d,
                   mg_api__is(d, usage, MG_JSON_OBJECT)
                       ? mg_json_getc(d, usage, "output_tokens")
                       : MG_JSON_NOTFOUND,
                   "0")) != 0 ||
      (rc = mg_buf_puts(out, "}}\n\n")) != 0 ||
      (rc = ev(out, "message_stop", "{\"type\":\"message_stop\"}")) != 0)
    goto out;
out:
  if (rc)
    mg_buf_truncate(out, start);
  return rc;
}

const struct mg_endpoint_ops mg_api__messages_ops = {
    .usage = messages_usage,
    .stream_event = messages_stream_event,
    .answer_text = messages_answer_text,
    .wrap_text = messages_wrap,
    .wrap_text_sse = messages_wrap_sse,
    .replay_sse = messages_replay,
    .error_body = messages_error,
    .stream_error = messages_stream_error,
};

/* A token count: neither generated nor cacheable; only errors are
 * modelgate's. */
const struct mg_endpoint_ops mg_api__count_tokens_ops = {
    .error_body = messages_error,
};
