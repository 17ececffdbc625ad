/* responses.c - the OpenAI Responses API of the mock (POST /v1/responses,
 * its typed event stream, and the bodies of GET /v1/responses/{id}/
 * input_items and DELETE /v1/responses/{id}).
 *
 * A Response object carries the members the real API returns, the ones the
 * request set echoed and the others at their defaults. The answer text
 * follows the mock's convention and, after `previous_response_id`, names
 * the response it followed, so a test sees that a chain reached the mock
 * that holds its state. */
#include "mock.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOGPROBS_INCLUDE "message.output_text.logprobs"
#define LIST_LIMIT_DEFAULT 20
#define LIST_LIMIT_MAX 100

/* An invalid request as OpenAI words it: message, param, code. */
static int bad(struct mg_mock_req *rq, struct mg_buf *err, const char *param,
               const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int bad(struct mg_mock_req *rq, struct mg_buf *err, const char *param,
               const char *code, const char *fmt, ...) {
  va_list ap;
  int rc;
  rq->err_param = param;
  rq->err_code = code;
  va_start(ap, fmt);
  rc = mg_buf_vprintf(err, fmt, ap);
  va_end(ap);
  return rc ? -ENOMEM : -EINVAL;
}

static const char *json_type(const cJSON *v) {
  if (cJSON_IsString(v))
    return "a string";
  if (cJSON_IsNumber(v))
    return "a number";
  if (cJSON_IsBool(v))
    return "a boolean";
  if (cJSON_IsArray(v))
    return "an array";
  if (cJSON_IsObject(v))
    return "an object";
  return "null";
}

/* A member that may be absent or null, else must pass is(). */
static bool opt_ok(const cJSON *v, cJSON_bool (*is)(const cJSON *)) {
  return v == NULL || cJSON_IsNull(v) || is(v);
}

static bool is_role(const char *r) {
  return strcmp(r, "user") == 0 || strcmp(r, "assistant") == 0 ||
         strcmp(r, "system") == 0 || strcmp(r, "developer") == 0;
}

/* One element of an `input` array, copied into rq->items with an id.
 * Messages get their content as parts; other items (function_call_output,
 * item_reference, ...) are kept as they came. */
static int input_item(struct mg_mock_req *rq, const cJSON *it, long i,
                      size_t *chars, struct mg_buf *last_user,
                      struct mg_buf *err) {
  struct mg_mock__jb j = {false};
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(it, "type");
  const cJSON *role = cJSON_GetObjectItemCaseSensitive(it, "role");
  const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
  const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
  char idbuf[64];
  cJSON *item;
  int rc;

  if (!cJSON_IsObject(it))
    return bad(rq, err, "input", "invalid_type",
               "Invalid type for 'input[%ld]': expected an object, but got %s "
               "instead.",
               i, json_type(it));
  if (type && !cJSON_IsString(type))
    return bad(rq, err, "input", "invalid_type",
               "Invalid type for 'input[%ld].type': expected a string, but "
               "got %s instead.",
               i, json_type(type));
  if (role || (type && strcmp(type->valuestring, "message") == 0)) {
    struct mg_buf text;
    cJSON *parts;
    const char *r;

    if (!cJSON_IsString(role))
      return bad(rq, err, "input", "missing_required_parameter",
                 "Missing required parameter: 'input[%ld].role'.", i);
    r = role->valuestring;
    if (!is_role(r))
      return bad(rq, err, "input", "invalid_value",
                 "Invalid value: '%s'. Supported values are: 'assistant', "
                 "'system', 'developer', and 'user'.",
                 r);
    if (cJSON_IsString(content)) {
      cJSON *part = cJSON_CreateObject();
      parts = cJSON_CreateArray();
      mg_mock__add(&j, part, "type",
                   cJSON_CreateString(strcmp(r, "assistant") == 0
                                          ? "output_text"
                                          : "input_text"));
      mg_mock__add(&j, part, "text", cJSON_CreateString(content->valuestring));
      mg_mock__add(&j, parts, NULL, part);
    } else if (cJSON_IsArray(content)) {
      const cJSON *p;
      cJSON_ArrayForEach(p, content) {
        if (!cJSON_IsObject(p))
          return bad(rq, err, "input", "invalid_type",
                     "Invalid type for 'input[%ld].content': expected an "
                     "array of content parts (objects).",
                     i);
      }
      parts = cJSON_Duplicate(content, 1);
    } else {
      return bad(rq, err, "input", "invalid_type",
                 "Invalid type for 'input[%ld].content': expected a string or "
                 "an array of content parts, but got %s instead.",
                 i, json_type(content));
    }
    mg_buf_init(&text, SIZE_MAX / 2);
    if (parts == NULL || (rc = mg_mock__content_text(parts, &text)) != 0) {
      cJSON_Delete(parts);
      mg_buf_free(&text);
      return -ENOMEM;
    }
    if (text.data)
      *chars += mg_mock__utf8_chars(text.data);
    if (strcmp(r, "user") == 0) {
      mg_buf_reset(last_user);
      if (text.data && mg_buf_puts(last_user, text.data)) {
        cJSON_Delete(parts);
        mg_buf_free(&text);
        return -ENOMEM;
      }
    }
    mg_buf_free(&text);
    if (!cJSON_IsString(id))
      mg_mock_new_id(idbuf, sizeof(idbuf), "msg_");
    item = cJSON_CreateObject();
    mg_mock__add(
        &j, item, "id",
        cJSON_CreateString(cJSON_IsString(id) ? id->valuestring : idbuf));
    mg_mock__add(&j, item, "type", cJSON_CreateString("message"));
    mg_mock__add(&j, item, "role", cJSON_CreateString(r));
    mg_mock__add(&j, item, "status", cJSON_CreateString("completed"));
    mg_mock__add(&j, item, "content", parts);
  } else if (type == NULL) {
    return bad(rq, err, "input", "missing_required_parameter",
               "Missing required parameter: 'input[%ld].type'.", i);
  } else {
    const cJSON *output = cJSON_GetObjectItemCaseSensitive(it, "output");
    if (cJSON_IsString(output))
      *chars += mg_mock__utf8_chars(output->valuestring);
    item = cJSON_Duplicate(it, 1);
    if (item && !cJSON_IsString(id)) {
      mg_mock_new_id(idbuf, sizeof(idbuf), "item_");
      mg_mock__add(&j, item, "id", cJSON_CreateString(idbuf));
    }
  }
  mg_mock__add(&j, rq->items, NULL, item);
  return j.oom ? -ENOMEM : 0;
}

int mg_mock__resp_parse(struct mg_mock_req *rq, const cJSON *body,
                        struct mg_buf *err) {
  const cJSON *model = cJSON_GetObjectItemCaseSensitive(body, "model");
  const cJSON *stream = cJSON_GetObjectItemCaseSensitive(body, "stream");
  const cJSON *include = cJSON_GetObjectItemCaseSensitive(body, "include");
  const cJSON *instr = cJSON_GetObjectItemCaseSensitive(body, "instructions");
  const cJSON *prev =
      cJSON_GetObjectItemCaseSensitive(body, "previous_response_id");
  const cJSON *store = cJSON_GetObjectItemCaseSensitive(body, "store");
  const cJSON *input = cJSON_GetObjectItemCaseSensitive(body, "input");
  const cJSON *it;
  struct mg_buf last;
  size_t chars = 0;
  long i = 0;
  int rc = 0;

  if (!cJSON_IsString(model) || model->valuestring[0] == '\0')
    return bad(rq, err, "model", "missing_required_parameter",
               "Missing required parameter: 'model'.");
  if ((rq->model = strdup(model->valuestring)) == NULL)
    return -ENOMEM;
  if (!opt_ok(stream, cJSON_IsBool))
    return bad(rq, err, "stream", "invalid_type",
               "Invalid type for 'stream': expected a boolean, but got %s "
               "instead.",
               json_type(stream));
  rq->stream = cJSON_IsTrue(stream);
  if (!opt_ok(store, cJSON_IsBool))
    return bad(rq, err, "store", "invalid_type",
               "Invalid type for 'store': expected a boolean, but got %s "
               "instead.",
               json_type(store));
  rq->store = !cJSON_IsFalse(store);
  if (!opt_ok(include, cJSON_IsArray))
    return bad(rq, err, "include", "invalid_type",
               "Invalid type for 'include': expected an array of strings, but "
               "got %s instead.",
               json_type(include));
  cJSON_ArrayForEach(it, include) {
    if (!cJSON_IsString(it))
      return bad(rq, err, "include", "invalid_type",
                 "Invalid type for 'include[%ld]': expected a string, but got "
                 "%s instead.",
                 i, json_type(it));
    if (strcmp(it->valuestring, LOGPROBS_INCLUDE) == 0)
      rq->logprobs = true;
    i++;
  }
  if (!opt_ok(instr, cJSON_IsString))
    return bad(rq, err, "instructions", "invalid_type",
               "Invalid type for 'instructions': expected a string, but got "
               "%s instead.",
               json_type(instr));
  if (cJSON_IsString(instr))
    chars += mg_mock__utf8_chars(instr->valuestring);
  if (!opt_ok(prev, cJSON_IsString) ||
      (cJSON_IsString(prev) && prev->valuestring[0] == '\0'))
    return bad(rq, err, "previous_response_id", "invalid_type",
               "Invalid type for 'previous_response_id': expected a non-empty "
               "string, but got %s instead.",
               json_type(prev));
  if (cJSON_IsString(prev) &&
      (rq->previous_id = strdup(prev->valuestring)) == NULL)
    return -ENOMEM;

  if ((rq->items = cJSON_CreateArray()) == NULL ||
      (rq->echo = cJSON_Duplicate(body, 1)) == NULL)
    return -ENOMEM;
  mg_buf_init(&last, SIZE_MAX / 2);
  if (cJSON_IsString(input)) {
    /* A string is one user message. */
    cJSON *msg = cJSON_CreateObject();
    struct mg_mock__jb j = {false};
    mg_mock__add(&j, msg, "role", cJSON_CreateString("user"));
    mg_mock__add(&j, msg, "content", cJSON_CreateString(input->valuestring));
    rc = j.oom ? -ENOMEM : input_item(rq, msg, 0, &chars, &last, err);
    cJSON_Delete(msg);
  } else if (cJSON_IsArray(input)) {
    i = 0;
    cJSON_ArrayForEach(it, input) {
      if ((rc = input_item(rq, it, i++, &chars, &last, err)) != 0)
        break;
    }
  } else if (!opt_ok(input, cJSON_IsString)) {
    rc = bad(rq, err, "input", "invalid_type",
             "Invalid type for 'input': expected a string or an array of "
             "input items, but got %s instead.",
             json_type(input));
  }
  if (rc == 0) {
    rq->prompt_tokens = mg_mock__prompt_tokens(chars);
    mg_mock_new_id(rq->id, sizeof(rq->id), "resp_");
    mg_mock_new_id(rq->item_id, sizeof(rq->item_id), "msg_");
    rc = mg_mock__default_content(rq, last.data ? last.data : "",
                                  rq->previous_id);
  }
  mg_buf_free(&last);
  return rc;
}

/* ---- the Response object ------------------------------------------------ */

/* The request's member key when it set one (null included), else def (may
 * be NULL: JSON null). def is consumed. */
static void echo(struct mg_mock__jb *j, cJSON *root, const cJSON *req,
                 const char *key, cJSON *def) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(req, key);
  if (v) {
    cJSON_Delete(def);
    mg_mock__add(j, root, key, cJSON_Duplicate(v, 1));
  } else {
    mg_mock__add(j, root, key, def ? def : cJSON_CreateNull());
  }
}

/* {"type":"output_text","annotations":[],"logprobs":[...],"text":text}
 * (logprobs only when the request asked); words [from, to) of the text. */
static cJSON *output_text(struct mg_mock__jb *j, const struct mg_mock_req *rq,
                          const char *text, const size_t *wstart,
                          const size_t *wend, long from, long to, double lp) {
  cJSON *part = cJSON_CreateObject();
  mg_mock__add(j, part, "type", cJSON_CreateString("output_text"));
  mg_mock__add(j, part, "annotations", cJSON_CreateArray());
  if (rq->logprobs)
    mg_mock__add(j, part, "logprobs",
                 mg_mock__token_logprobs(j, text, wstart, wend, from, to, lp));
  mg_mock__add(j, part, "text", cJSON_CreateString(text));
  return part;
}

/* The output message; done: completed with its text, else in progress and
 * empty. */
static cJSON *message_item(struct mg_mock__jb *j, const struct mg_mock_req *rq,
                           bool done, double lp) {
  cJSON *item = cJSON_CreateObject(), *content;
  mg_mock__add(j, item, "id", cJSON_CreateString(rq->item_id));
  mg_mock__add(j, item, "type", cJSON_CreateString("message"));
  mg_mock__add(j, item, "status",
               cJSON_CreateString(done ? "completed" : "in_progress"));
  content = mg_mock__add(j, item, "content", cJSON_CreateArray());
  if (done) {
    size_t *ws = NULL, *we = NULL;
    long n = 0;
    if (mg_mock__split_words(rq->content, &ws, &we, &n))
      j->oom = true;
    else
      mg_mock__add(j, content, NULL,
                   output_text(j, rq, rq->content, ws, we, 0, n, lp));
    free(ws);
    free(we);
  }
  mg_mock__add(j, item, "role", cJSON_CreateString("assistant"));
  return item;
}

cJSON *mg_mock__resp_object(const struct mg_mock_req *rq, double confidence,
                            long cache_read, long reasoning_tokens,
                            long created, bool done) {
  struct mg_mock__jb j = {false};
  const cJSON *req = rq->echo;
  cJSON *root = cJSON_CreateObject(), *output, *d;

  mg_mock__add(&j, root, "id", cJSON_CreateString(rq->id));
  mg_mock__add(&j, root, "object", cJSON_CreateString("response"));
  mg_mock__add(&j, root, "created_at", cJSON_CreateNumber((double)created));
  mg_mock__add(&j, root, "status",
               cJSON_CreateString(done ? "completed" : "in_progress"));
  echo(&j, root, req, "background", cJSON_CreateFalse());
  mg_mock__add(&j, root, "error", cJSON_CreateNull());
  mg_mock__add(&j, root, "incomplete_details", cJSON_CreateNull());
  echo(&j, root, req, "instructions", NULL);
  echo(&j, root, req, "max_output_tokens", NULL);
  echo(&j, root, req, "max_tool_calls", NULL);
  mg_mock__add(&j, root, "model", cJSON_CreateString(rq->model));
  output = mg_mock__add(&j, root, "output", cJSON_CreateArray());
  if (done)
    mg_mock__add(&j, output, NULL, message_item(&j, rq, true, log(confidence)));
  echo(&j, root, req, "parallel_tool_calls", cJSON_CreateTrue());
  echo(&j, root, req, "previous_response_id", NULL);
  echo(&j, root, req, "prompt_cache_key", NULL);
  if ((d = cJSON_CreateObject()) != NULL) {
    mg_mock__add(&j, d, "effort", cJSON_CreateNull());
    mg_mock__add(&j, d, "summary", cJSON_CreateNull());
  }
  echo(&j, root, req, "reasoning", d);
  echo(&j, root, req, "safety_identifier", NULL);
  echo(&j, root, req, "service_tier", cJSON_CreateString("default"));
  mg_mock__add(&j, root, "store", cJSON_CreateBool(rq->store));
  echo(&j, root, req, "temperature", cJSON_CreateNumber(1));
  if ((d = cJSON_CreateObject()) != NULL) {
    cJSON *f = mg_mock__add(&j, d, "format", cJSON_CreateObject());
    mg_mock__add(&j, f, "type", cJSON_CreateString("text"));
  }
  echo(&j, root, req, "text", d);
  echo(&j, root, req, "tool_choice", cJSON_CreateString("auto"));
  echo(&j, root, req, "tools", cJSON_CreateArray());
  echo(&j, root, req, "top_logprobs", cJSON_CreateNumber(0));
  echo(&j, root, req, "top_p", cJSON_CreateNumber(1));
  echo(&j, root, req, "truncation", cJSON_CreateString("disabled"));
  if (done) {
    /* OpenAI counts cached tokens inside input_tokens and reasoning tokens
     * inside output_tokens. */
    long in = rq->prompt_tokens + cache_read;
    long out = rq->completion_tokens + reasoning_tokens;
    cJSON *u = mg_mock__add(&j, root, "usage", cJSON_CreateObject());
    mg_mock__add(&j, u, "input_tokens", cJSON_CreateNumber((double)in));
    d = mg_mock__add(&j, u, "input_tokens_details", cJSON_CreateObject());
    mg_mock__add(&j, d, "cached_tokens",
                 cJSON_CreateNumber((double)cache_read));
    mg_mock__add(&j, u, "output_tokens", cJSON_CreateNumber((double)out));
    d = mg_mock__add(&j, u, "output_tokens_details", cJSON_CreateObject());
    mg_mock__add(&j, d, "reasoning_tokens",
                 cJSON_CreateNumber((double)reasoning_tokens));
    mg_mock__add(&j, u, "total_tokens", cJSON_CreateNumber((double)(in + out)));
  } else {
    mg_mock__add(&j, root, "usage", cJSON_CreateNull());
  }
  echo(&j, root, req, "user", NULL);
  echo(&j, root, req, "metadata", cJSON_CreateObject());
  if (j.oom) {
    cJSON_Delete(root);
    return NULL;
  }
  return root;
}

/* ---- the event stream --------------------------------------------------- */

/* Events: created, in_progress, output_item.added, content_part.added, one
 * output_text.delta per piece, output_text.done, content_part.done,
 * output_item.done, completed. */
#define FIRST_DELTA 4

int mg_mock__resp_stream_init(struct mg_mock_stream *s, double confidence) {
  s->pieces = s->chunks;
  s->first_piece = FIRST_DELTA;
  s->events = FIRST_DELTA + s->pieces + 4;
  s->final = mg_mock__resp_object(s->rq, confidence, s->cache_read,
                                  s->reasoning_tokens, s->created, true);
  return s->final ? 0 : -ENOMEM;
}

/* "item_id", "output_index", "content_index" of the text events. */
static void text_position(struct mg_mock__jb *j, cJSON *ev,
                          const struct mg_mock_req *rq) {
  mg_mock__add(j, ev, "item_id", cJSON_CreateString(rq->item_id));
  mg_mock__add(j, ev, "output_index", cJSON_CreateNumber(0));
  mg_mock__add(j, ev, "content_index", cJSON_CreateNumber(0));
}

int mg_mock__resp_event(const struct mg_mock_stream *s, long i,
                        struct mg_buf *out) {
  const struct mg_mock_req *rq = s->rq;
  struct mg_mock__jb j = {false};
  const cJSON *item = cJSON_GetArrayItem(
      cJSON_GetObjectItemCaseSensitive(s->final, "output"), 0);
  const cJSON *part =
      cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(item, "content"), 0);
  const cJSON *lps = cJSON_GetObjectItemCaseSensitive(part, "logprobs");
  long k = i - FIRST_DELTA;
  const char *type;
  cJSON *ev = cJSON_CreateObject();
  int rc;

  if (i == 0 || i == 1)
    type = i == 0 ? "response.created" : "response.in_progress";
  else if (i == 2)
    type = "response.output_item.added";
  else if (i == 3)
    type = "response.content_part.added";
  else if (k < s->pieces)
    type = "response.output_text.delta";
  else if (k == s->pieces)
    type = "response.output_text.done";
  else if (k == s->pieces + 1)
    type = "response.content_part.done";
  else if (k == s->pieces + 2)
    type = "response.output_item.done";
  else
    type = "response.completed";
  mg_mock__add(&j, ev, "type", cJSON_CreateString(type));
  mg_mock__add(&j, ev, "sequence_number", cJSON_CreateNumber((double)i));
  if (i <= 1) {
    mg_mock__add(&j, ev, "response",
                 mg_mock__resp_object(rq, 1, 0, 0, s->created, false));
  } else if (i == 2) {
    mg_mock__add(&j, ev, "output_index", cJSON_CreateNumber(0));
    mg_mock__add(&j, ev, "item", message_item(&j, rq, false, 0));
  } else if (i == 3) {
    cJSON *p = cJSON_CreateObject();
    text_position(&j, ev, rq);
    mg_mock__add(&j, p, "type", cJSON_CreateString("output_text"));
    mg_mock__add(&j, p, "annotations", cJSON_CreateArray());
    if (rq->logprobs)
      mg_mock__add(&j, p, "logprobs", cJSON_CreateArray());
    mg_mock__add(&j, p, "text", cJSON_CreateString(""));
    mg_mock__add(&j, ev, "part", p);
  } else if (k < s->pieces) {
    long w0, w1;
    char *piece = mg_mock__piece(s, k, &w0, &w1);
    text_position(&j, ev, rq);
    if (piece == NULL)
      j.oom = true;
    else
      mg_mock__add(&j, ev, "delta", cJSON_CreateString(piece));
    free(piece);
    if (rq->logprobs && !j.oom)
      mg_mock__add(&j, ev, "logprobs",
                   mg_mock__token_logprobs(&j, rq->content, s->wstart, s->wend,
                                           w0, w1, s->logprob));
  } else if (k == s->pieces) {
    text_position(&j, ev, rq);
    mg_mock__add(&j, ev, "text", cJSON_CreateString(rq->content));
    if (rq->logprobs)
      mg_mock__add(&j, ev, "logprobs", cJSON_Duplicate(lps, 1));
  } else if (k == s->pieces + 1) {
    text_position(&j, ev, rq);
    mg_mock__add(&j, ev, "part", cJSON_Duplicate(part, 1));
  } else if (k == s->pieces + 2) {
    mg_mock__add(&j, ev, "output_index", cJSON_CreateNumber(0));
    mg_mock__add(&j, ev, "item", cJSON_Duplicate(item, 1));
  } else {
    mg_mock__add(&j, ev, "response", cJSON_Duplicate(s->final, 1));
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

/* ---- stored responses --------------------------------------------------- */

/* The value of key in a query string ("a=1&b=2"), copied into out; false
 * when absent. No percent-decoding: ids and the values here need none. */
static bool query_get(const char *q, const char *key, char *out, size_t n) {
  size_t kl = strlen(key);
  while (q && *q) {
    const char *end = strchr(q, '&');
    size_t len = end ? (size_t)(end - q) : strlen(q);
    if (len > kl && strncmp(q, key, kl) == 0 && q[kl] == '=') {
      size_t vl = len - kl - 1;
      if (vl >= n)
        vl = n - 1;
      memcpy(out, q + kl + 1, vl);
      out[vl] = '\0';
      return true;
    }
    q = end ? end + 1 : NULL;
  }
  return false;
}

int mg_mock_resp_input_items(const char *items_json, const char *query,
                             struct mg_buf *out, struct mg_buf *err) {
  struct mg_mock__jb j = {false};
  cJSON *items = cJSON_Parse(items_json), *root = NULL, *data;
  char order[16] = "desc", limit_s[32], after[256];
  long limit = LIST_LIMIT_DEFAULT, n, i, start = 0, taken = 0;
  bool asc, has_after;
  int rc = -EINVAL;

  if (!cJSON_IsArray(items)) {
    rc = mg_buf_puts(err, "stored input items are not an array") ? -ENOMEM
                                                                 : -EINVAL;
    goto out;
  }
  (void)query_get(query, "order", order, sizeof(order));
  if (strcmp(order, "asc") != 0 && strcmp(order, "desc") != 0) {
    rc = mg_buf_printf(err,
                       "Invalid value: '%s'. Supported values are: 'asc' and "
                       "'desc'.",
                       order)
             ? -ENOMEM
             : -EINVAL;
    goto out;
  }
  asc = order[0] == 'a';
  if (query_get(query, "limit", limit_s, sizeof(limit_s))) {
    char *end;
    limit = strtol(limit_s, &end, 10);
    if (*end || end == limit_s || limit < 1 || limit > LIST_LIMIT_MAX) {
      rc = mg_buf_printf(err,
                         "Invalid 'limit': integer between 1 and %d expected.",
                         LIST_LIMIT_MAX)
               ? -ENOMEM
               : -EINVAL;
      goto out;
    }
  }
  has_after = query_get(query, "after", after, sizeof(after));
  n = cJSON_GetArraySize(items);
  if (has_after) {
    /* Start past the named item, in the order asked for. */
    start = n;
    for (i = 0; i < n; i++) {
      const cJSON *it = cJSON_GetArrayItem(items, (int)(asc ? i : n - 1 - i));
      const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
      if (cJSON_IsString(id) && strcmp(id->valuestring, after) == 0) {
        start = i + 1;
        break;
      }
    }
  }
  root = cJSON_CreateObject();
  mg_mock__add(&j, root, "object", cJSON_CreateString("list"));
  data = mg_mock__add(&j, root, "data", cJSON_CreateArray());
  for (i = start; i < n && taken < limit; i++, taken++)
    mg_mock__add(&j, data, NULL,
                 cJSON_Duplicate(
                     cJSON_GetArrayItem(items, (int)(asc ? i : n - 1 - i)), 1));
  {
    const cJSON *first = cJSON_GetArrayItem(data, 0);
    const cJSON *last = cJSON_GetArrayItem(data, cJSON_GetArraySize(data) - 1);
    const cJSON *fid = cJSON_GetObjectItemCaseSensitive(first, "id");
    const cJSON *lid = cJSON_GetObjectItemCaseSensitive(last, "id");
    mg_mock__add(&j, root, "first_id",
                 cJSON_IsString(fid) ? cJSON_CreateString(fid->valuestring)
                                     : cJSON_CreateNull());
    mg_mock__add(&j, root, "last_id",
                 cJSON_IsString(lid) ? cJSON_CreateString(lid->valuestring)
                                     : cJSON_CreateNull());
  }
  mg_mock__add(&j, root, "has_more", cJSON_CreateBool(i < n));
  if (j.oom) {
    rc = -ENOMEM;
    goto out;
  }
  rc = mg_mock__emit(root, out);
  root = NULL;
out:
  cJSON_Delete(root);
  cJSON_Delete(items);
  return rc;
}

int mg_mock_resp_deleted(const char *id, struct mg_buf *out) {
  struct mg_mock__jb j = {false};
  cJSON *root = cJSON_CreateObject();
  mg_mock__add(&j, root, "id", cJSON_CreateString(id));
  mg_mock__add(&j, root, "object", cJSON_CreateString("response"));
  mg_mock__add(&j, root, "deleted", cJSON_CreateTrue());
  if (j.oom) {
    cJSON_Delete(root);
    return -ENOMEM;
  }
  return mg_mock__emit(root, out);
}
