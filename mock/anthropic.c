/* anthropic.c - the Anthropic Messages API of the mock: POST /v1/messages
 * (whole and as its event stream), POST /v1/messages/count_tokens, and
 * Anthropic's error shape.
 *
 * Usage follows Anthropic's accounting: input_tokens excludes the cache
 * reads and writes, which a behaviour sets (cache_read, cache_write) so
 * tests can check what the proxy records. The headers Anthropic requires
 * (x-api-key, anthropic-version) are checked by mock.c, which has them. */
#include "mock.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int bad(struct mg_buf *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int bad(struct mg_buf *err, const char *fmt, ...) {
  va_list ap;
  int rc;
  va_start(ap, fmt);
  rc = mg_buf_vprintf(err, fmt, ap);
  va_end(ap);
  return rc ? -ENOMEM : -EINVAL;
}

/* Text of `system`: a string or an array of text blocks. */
static int system_text(const cJSON *sys, size_t *chars, struct mg_buf *err) {
  const cJSON *b;
  if (sys == NULL || cJSON_IsNull(sys))
    return 0;
  if (cJSON_IsString(sys)) {
    *chars += mg_mock__utf8_chars(sys->valuestring);
    return 0;
  }
  if (!cJSON_IsArray(sys))
    return bad(err, "system: Input should be a valid string or a list of "
                    "text blocks");
  cJSON_ArrayForEach(b, sys) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(b, "type");
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(b, "text");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0 ||
        !cJSON_IsString(text))
      return bad(err, "system: each block must be {\"type\": \"text\", "
                      "\"text\": ...}");
    *chars += mg_mock__utf8_chars(text->valuestring);
  }
  return 0;
}

int mg_mock__msg_parse(struct mg_mock_req *rq, const cJSON *body,
                       struct mg_buf *err) {
  const cJSON *model = cJSON_GetObjectItemCaseSensitive(body, "model");
  const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(body, "messages");
  const cJSON *max = cJSON_GetObjectItemCaseSensitive(body, "max_tokens");
  const cJSON *stream = cJSON_GetObjectItemCaseSensitive(body, "stream");
  const cJSON *m;
  struct mg_buf last, text;
  size_t chars = 0;
  long i = 0;
  int rc;

  if (!cJSON_IsString(model) || model->valuestring[0] == '\0')
    return bad(err, "model: Field required");
  if ((rq->model = strdup(model->valuestring)) == NULL)
    return -ENOMEM;
  if (!cJSON_IsArray(msgs))
    return bad(err, "messages: Field required");
  if (cJSON_GetArraySize(msgs) == 0)
    return bad(err, "messages: at least one message is required");
  if (rq->api == MG_MOCK_MESSAGES) {
    if (max == NULL)
      return bad(err, "max_tokens: Field required");
    if (!cJSON_IsNumber(max) || max->valuedouble < 1 ||
        max->valuedouble != (double)(long long)max->valuedouble)
      return bad(err, "max_tokens: Input should be a positive integer");
    if (stream && !cJSON_IsBool(stream) && !cJSON_IsNull(stream))
      return bad(err, "stream: Input should be a valid boolean");
    rq->stream = cJSON_IsTrue(stream);
  }
  if ((rc = system_text(cJSON_GetObjectItemCaseSensitive(body, "system"),
                        &chars, err)) != 0)
    return rc;
  mg_buf_init(&last, SIZE_MAX / 2);
  mg_buf_init(&text, SIZE_MAX / 2);
  cJSON_ArrayForEach(m, msgs) {
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (!cJSON_IsObject(m)) {
      rc = bad(err, "messages.%ld: Input should be an object", i);
      goto out;
    }
    if (!cJSON_IsString(role) ||
        (strcmp(role->valuestring, "user") != 0 &&
         strcmp(role->valuestring, "assistant") != 0)) {
      rc = bad(err, "messages.%ld.role: Input should be 'user' or 'assistant'",
               i);
      goto out;
    }
    if (!cJSON_IsString(content) && !cJSON_IsArray(content)) {
      rc = bad(err,
               "messages.%ld.content: Input should be a valid string or a "
               "list of content blocks",
               i);
      goto out;
    }
    mg_buf_reset(&text);
    if ((rc = mg_mock__content_text(content, &text)) != 0)
      goto out;
    if (text.data)
      chars += mg_mock__utf8_chars(text.data);
    if (strcmp(role->valuestring, "user") == 0) {
      mg_buf_reset(&last);
      if (text.data && (rc = mg_buf_puts(&last, text.data)) != 0)
        goto out;
    }
    i++;
  }
  rq->prompt_tokens = mg_mock__prompt_tokens(chars);
  mg_mock_new_id(rq->id, sizeof(rq->id), "msg_");
  rc = rq->api == MG_MOCK_MESSAGES
           ? mg_mock__default_content(rq, last.data ? last.data : "", NULL)
           : 0;
out:
  mg_buf_free(&last);
  mg_buf_free(&text);
  return rc;
}

/* The usage object; start: what message_start says (one output token so
 * far, as the API reports). */
static cJSON *usage(struct mg_mock__jb *j, const struct mg_mock_req *rq,
                    long cache_read, long cache_write, bool start) {
  cJSON *u = cJSON_CreateObject();
  mg_mock__add(j, u, "input_tokens",
               cJSON_CreateNumber((double)rq->prompt_tokens));
  mg_mock__add(j, u, "cache_creation_input_tokens",
               cJSON_CreateNumber((double)cache_write));
  mg_mock__add(j, u, "cache_read_input_tokens",
               cJSON_CreateNumber((double)cache_read));
  mg_mock__add(j, u, "output_tokens",
               cJSON_CreateNumber(start ? 1 : (double)rq->completion_tokens));
  return u;
}

/* The message; start: empty content, no stop reason yet. */
static cJSON *message(struct mg_mock__jb *j, const struct mg_mock_req *rq,
                      long cache_read, long cache_write, bool start) {
  cJSON *root = cJSON_CreateObject(), *content;
  mg_mock__add(j, root, "id", cJSON_CreateString(rq->id));
  mg_mock__add(j, root, "type", cJSON_CreateString("message"));
  mg_mock__add(j, root, "role", cJSON_CreateString("assistant"));
  mg_mock__add(j, root, "model", cJSON_CreateString(rq->model));
  content = mg_mock__add(j, root, "content", cJSON_CreateArray());
  if (!start) {
    cJSON *b = mg_mock__add(j, content, NULL, cJSON_CreateObject());
    mg_mock__add(j, b, "type", cJSON_CreateString("text"));
    mg_mock__add(j, b, "text", cJSON_CreateString(rq->content));
  }
  mg_mock__add(j, root, "stop_reason",
               start ? cJSON_CreateNull() : cJSON_CreateString("end_turn"));
  mg_mock__add(j, root, "stop_sequence", cJSON_CreateNull());
  mg_mock__add(j, root, "usage", usage(j, rq, cache_read, cache_write, start));
  return root;
}

int mg_mock__msg_answer(const struct mg_mock_req *rq,
                        const struct mg_mock_bhv *b, struct mg_buf *out) {
  struct mg_mock__jb j = {false};
  cJSON *root;

  if (rq->api == MG_MOCK_COUNT_TOKENS) {
    root = cJSON_CreateObject();
    mg_mock__add(&j, root, "input_tokens",
                 cJSON_CreateNumber((double)rq->prompt_tokens));
  } else {
    root = message(&j, rq, b->cache_read, b->cache_write, false);
  }
  if (j.oom) {
    cJSON_Delete(root);
    return -ENOMEM;
  }
  return mg_mock__emit(root, out);
}

/* Events: message_start, content_block_start, ping, one content_block_delta
 * per piece, content_block_stop, message_delta, message_stop. */
#define FIRST_DELTA 3

int mg_mock__msg_stream_init(struct mg_mock_stream *s) {
  s->pieces = s->chunks;
  s->first_piece = FIRST_DELTA;
  s->events = FIRST_DELTA + s->pieces + 3;
  return 0;
}

int mg_mock__msg_event(const struct mg_mock_stream *s, long i,
                       struct mg_buf *out) {
  const struct mg_mock_req *rq = s->rq;
  struct mg_mock__jb j = {false};
  long k = i - FIRST_DELTA;
  cJSON *ev = cJSON_CreateObject(), *o;
  const char *type;
  int rc;

  if (i == 0)
    type = "message_start";
  else if (i == 1)
    type = "content_block_start";
  else if (i == 2)
    type = "ping";
  else if (k < s->pieces)
    type = "content_block_delta";
  else if (k == s->pieces)
    type = "content_block_stop";
  else if (k == s->pieces + 1)
    type = "message_delta";
  else
    type = "message_stop";
  mg_mock__add(&j, ev, "type", cJSON_CreateString(type));
  if (i == 0) {
    mg_mock__add(&j, ev, "message",
                 message(&j, rq, s->cache_read, s->cache_write, true));
  } else if (i == 1) {
    mg_mock__add(&j, ev, "index", cJSON_CreateNumber(0));
    o = mg_mock__add(&j, ev, "content_block", cJSON_CreateObject());
    mg_mock__add(&j, o, "type", cJSON_CreateString("text"));
    mg_mock__add(&j, o, "text", cJSON_CreateString(""));
  } else if (i == 2) {
    /* {"type": "ping"} */
  } else if (k < s->pieces) {
    long w0, w1;
    char *piece = mg_mock__piece(s, k, &w0, &w1);
    mg_mock__add(&j, ev, "index", cJSON_CreateNumber(0));
    o = mg_mock__add(&j, ev, "delta", cJSON_CreateObject());
    mg_mock__add(&j, o, "type", cJSON_CreateString("text_delta"));
    if (piece == NULL)
      j.oom = true;
    else
      mg_mock__add(&j, o, "text", cJSON_CreateString(piece));
    free(piece);
  } else if (k == s->pieces) {
    mg_mock__add(&j, ev, "index", cJSON_CreateNumber(0));
  } else if (k == s->pieces + 1) {
    o = mg_mock__add(&j, ev, "delta", cJSON_CreateObject());
    mg_mock__add(&j, o, "stop_reason", cJSON_CreateString("end_turn"));
    mg_mock__add(&j, o, "stop_sequence", cJSON_CreateNull());
    o = mg_mock__add(&j, ev, "usage", cJSON_CreateObject());
    mg_mock__add(&j, o, "output_tokens",
                 cJSON_CreateNumber((double)rq->completion_tokens));
  }
  if (j.oom) {
    cJSON_Delete(ev);
    return -ENOMEM;
  }
  if ((rc = mg_buf_printf(out, "event: %s\ndata: ", type)) ||
      (rc = mg_mock__emit(ev, out)) || (rc = mg_buf_puts(out, "\n\n")))
    return rc;
  return 0;
}

/* ---- errors ------------------------------------------------------------- */

const char *mg_mock_anthropic_type(int status) {
  switch (status) {
  case 401:
    return "authentication_error";
  case 403:
    return "permission_error";
  case 404:
    return "not_found_error";
  case 413:
    return "request_too_large";
  case 429:
    return "rate_limit_error";
  case 529:
    return "overloaded_error";
  default:
    return status >= 500 ? "api_error" : "invalid_request_error";
  }
}

int mg_mock_anthropic_error(struct mg_buf *out, int status, const char *type,
                            const char *msg, const char *request_id) {
  struct mg_mock__jb j = {false};
  cJSON *root = cJSON_CreateObject(), *e;
  mg_mock__add(&j, root, "type", cJSON_CreateString("error"));
  e = mg_mock__add(&j, root, "error", cJSON_CreateObject());
  mg_mock__add(
      &j, e, "type",
      cJSON_CreateString(type ? type : mg_mock_anthropic_type(status)));
  mg_mock__add(&j, e, "message", cJSON_CreateString(msg));
  if (request_id)
    mg_mock__add(&j, root, "request_id", cJSON_CreateString(request_id));
  if (j.oom) {
    cJSON_Delete(root);
    return -ENOMEM;
  }
  return mg_mock__emit(root, out);
}
