/* responses.c - OpenAI's Responses API: POST /v1/responses, and the stored
 * responses (GET / DELETE /v1/responses/{id}, GET .../input_items).
 *
 * A Response carries its text in output[] items: a `message` item holds
 * content parts, `output_text` parts hold the text and, when the request
 * included "message.output_text.logprobs", the token logprobs. A stream is
 * typed events, each `event: <type>` plus a data object carrying the same
 * `type` and a `sequence_number`: response.created, response.in_progress,
 * response.output_item.added, response.content_part.added,
 * response.output_text.delta ... .done, response.content_part.done,
 * response.output_item.done, and one terminal event: response.completed,
 * response.incomplete or response.failed (an `error` event may come too).
 * There is no [DONE].
 *
 * Replays copy the upstream's value bytes from the scanned answer, without
 * whitespace between tokens (fallbacks/answer.c does the same for chat). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "api/family.h"
#include "fallbacks/answer.h"
#include "fallbacks/gate.h"

#define LOGPROBS_INCLUDE "message.output_text.logprobs"

/* ---- usage --------------------------------------------------------------- */

static void usage_of(const struct mg_json_doc *d, uint32_t u,
                     struct mg_usage *out) {
  if (!mg_api__is(d, u, MG_JSON_OBJECT))
    return;
  mg_api__count(d, u, "input_tokens", &out->prompt);
  mg_api__count(d, u, "output_tokens", &out->completion);
  mg_api__count(d, mg_json_getc(d, u, "input_tokens_details"),
                "cached_tokens", &out->cached);
  mg_api__count(d, mg_json_getc(d, u, "output_tokens_details"),
                "reasoning_tokens", &out->reasoning);
}

static void responses_usage(const struct mg_json_doc *d, struct mg_usage *u) {
  if (mg_api__is(d, 0, MG_JSON_OBJECT))
    usage_of(d, mg_json_getc(d, 0, "usage"), u);
}

/* ---- logprobs ------------------------------------------------------------ */

/* The logprob of every entry of a `logprobs` array. */
static void acc_array(struct mg_gate_acc *acc, const struct mg_json_doc *d,
                      uint32_t arr) {
  uint32_t k, i;
  if (!mg_api__is(d, arr, MG_JSON_ARRAY))
    return;
  for (k = 0, i = arr + 1; k < d->toks[arr].count; k++, i = d->toks[i].next)
    if (d->toks[i].type == MG_JSON_OBJECT)
      mg_gate_acc_add_tok(acc, d, mg_json_getc(d, i, "logprob"));
}

/* Calls fn for every output_text part of every message item. */
static void each_text_part(const struct mg_json_doc *d,
                           void (*fn)(void *arg, const struct mg_json_doc *d,
                                      uint32_t part),
                           void *arg) {
  uint32_t out, k, i, c, kk, j;
  if (!mg_api__is(d, 0, MG_JSON_OBJECT))
    return;
  out = mg_json_getc(d, 0, "output");
  if (!mg_api__is(d, out, MG_JSON_ARRAY))
    return;
  for (k = 0, i = out + 1; k < d->toks[out].count; k++, i = d->toks[i].next) {
    if (d->toks[i].type != MG_JSON_OBJECT ||
        !mg_api__str_is(d, mg_json_getc(d, i, "type"), "message"))
      continue;
    c = mg_json_getc(d, i, "content");
    if (!mg_api__is(d, c, MG_JSON_ARRAY))
      continue;
    for (kk = 0, j = c + 1; kk < d->toks[c].count; kk++, j = d->toks[j].next)
      if (d->toks[j].type == MG_JSON_OBJECT &&
          mg_api__str_is(d, mg_json_getc(d, j, "type"), "output_text"))
        fn(arg, d, j);
  }
}

static void acc_part(void *arg, const struct mg_json_doc *d, uint32_t part) {
  acc_array(arg, d, mg_json_getc(d, part, "logprobs"));
}

static void responses_logprobs(const struct mg_json_doc *d,
                               struct mg_gate_acc *acc) {
  each_text_part(d, acc_part, acc);
}

static void first_text(void *arg, const struct mg_json_doc *d,
                       uint32_t part) {
  uint32_t *t = arg;
  if (*t == MG_JSON_NOTFOUND)
    *t = mg_json_getc(d, part, "text");
}

static uint32_t responses_answer_text(const struct mg_json_doc *d) {
  uint32_t t = MG_JSON_NOTFOUND;
  each_text_part(d, first_text, &t);
  return t;
}

/* include gets "message.output_text.logprobs": created when absent (or
 * null), the string added first when the array lacks it. */
static int responses_ask(const struct mg_json_doc *req, struct mg_buf *out) {
  const struct mg_json_tok *root;
  size_t start = out->len, at, resume;
  const char *ins;
  char tmp[96];
  uint32_t inc, k, i;
  int rc;

  if (!mg_api__is(req, 0, MG_JSON_OBJECT))
    return -EINVAL;
  root = &req->toks[0];
  inc = mg_json_getc(req, 0, "include");
  if (inc == MG_JSON_NOTFOUND) {
    /* First member, so the rest of the object follows unchanged; an empty
     * object gets no separating comma. */
    snprintf(tmp, sizeof(tmp), "\"include\":[\"" LOGPROBS_INCLUDE "\"]%s",
             root->count > 0 ? "," : "");
    ins = tmp;
    at = resume = root->start + 1;
  } else if (req->toks[inc].type == MG_JSON_NULL) {
    ins = "[\"" LOGPROBS_INCLUDE "\"]";
    at = req->toks[inc].start;
    resume = req->toks[inc].end;
  } else if (req->toks[inc].type == MG_JSON_ARRAY) {
    for (k = 0, i = inc + 1; k < req->toks[inc].count;
         k++, i = req->toks[i].next)
      if (mg_api__str_is(req, i, LOGPROBS_INCLUDE))
        return mg_buf_append(out, req->src, req->len);
    snprintf(tmp, sizeof(tmp), "\"" LOGPROBS_INCLUDE "\"%s",
             req->toks[inc].count > 0 ? "," : "");
    ins = tmp;
    at = resume = req->toks[inc].start + 1;
  } else {
    return -EINVAL; /* not an include the upstream would take */
  }
  if ((rc = mg_buf_append(out, req->src, at)) != 0 ||
      (rc = mg_buf_puts(out, ins)) != 0 ||
      (rc = mg_buf_append(out, req->src + resume, req->len - resume)) != 0)
    mg_buf_truncate(out, start);
  return rc;
}

struct strip_ctx {
  struct mg_buf *out;
  size_t pos;
  int rc;
};

/* Every "logprobs" member of the part becomes [], duplicates included:
 * parsers differ on which duplicate wins, and none may leak. */
static void strip_part(void *arg, const struct mg_json_doc *d, uint32_t part) {
  struct strip_ctx *c = arg;
  uint32_t m, key;
  for (m = 0, key = part + 1; m < d->toks[part].count && c->rc == 0;
       m++, key = d->toks[key + 1].next) {
    const struct mg_json_tok *v = &d->toks[key + 1];
    if (!mg_json_str_eq(d, key, "logprobs", 8))
      continue;
    if ((c->rc = mg_buf_append(c->out, d->src + c->pos, v->start - c->pos)) ==
            0 &&
        (c->rc = mg_buf_puts(c->out, "[]")) == 0)
      c->pos = v->end;
  }
}

/* Without the include, output_text parts carry "logprobs": [] (that is
 * what the API answers when they were not asked for). */
static int responses_strip(const struct mg_json_doc *d, struct mg_buf *out) {
  struct strip_ctx c = {out, 0, 0};
  size_t start = out->len;
  if (d->src == NULL)
    return 0;
  each_text_part(d, strip_part, &c);
  if (c.rc == 0)
    c.rc = mg_buf_append(out, d->src + c.pos, d->len - c.pos);
  if (c.rc)
    mg_buf_truncate(out, start);
  return c.rc;
}

/* ---- streams ------------------------------------------------------------- */

/* The event's sequence_number, read without scanning the event: the
 * member's key cannot appear inside a string value (its quotes would be
 * escaped there). */
static void seq_of(struct mg_str d, int64_t *seq) {
  static const char key[] = "\"sequence_number\"";
  const char *p = d.p, *e = d.p + d.len;
  int64_t v = 0;
  bool any = false;
  while (p + sizeof(key) - 1 <= e) {
    const char *q = memchr(p, '"', (size_t)(e - p));
    if (q == NULL || (size_t)(e - q) < sizeof(key) - 1)
      return;
    if (memcmp(q, key, sizeof(key) - 1) != 0) {
      p = q + 1;
      continue;
    }
    q += sizeof(key) - 1;
    while (q < e && (*q == ' ' || *q == '\t'))
      q++;
    if (q == e || *q != ':')
      return;
    for (q++; q < e && (*q == ' ' || *q == '\t'); q++)
      ;
    for (; q < e && *q >= '0' && *q <= '9' && v < INT64_MAX / 10 - 10; q++) {
      v = v * 10 + (*q - '0');
      any = true;
    }
    if (any)
      *seq = v;
    return;
  }
}

static bool type_is(struct mg_str t, const char *s) {
  return mg_str_eq_c(t, s);
}

static void responses_stream_event(struct mg_stream_state *st,
                                   const struct mg_sse_event *ev,
                                   struct mg_json_doc *d) {
  struct mg_str type = ev->event;
  bool parsed = false;
  uint32_t r;

  seq_of(ev->data, &st->seq);
  if (type.len == 0) {
    /* No `event:` line: the data's own type says. */
    if (mg_json_parse(d, ev->data.p, ev->data.len, NULL) != 0 ||
        !mg_api__is(d, 0, MG_JSON_OBJECT))
      return;
    parsed = true;
    r = mg_json_getc(d, 0, "type");
    if (!mg_api__is(d, r, MG_JSON_STRING) || d->toks[r].escaped)
      return;
    type = mg_json_str_raw(d, r);
  }
  if (type_is(type, "error")) {
    st->done = st->failed = true;
    return;
  }
  if (type_is(type, "response.output_text.delta")) {
    if (!st->want_logprobs)
      return;
  } else if (!type_is(type, "response.created") &&
             !type_is(type, "response.in_progress") &&
             !type_is(type, "response.queued") &&
             !type_is(type, "response.completed") &&
             !type_is(type, "response.incomplete") &&
             !type_is(type, "response.failed")) {
    return;
  }
  if (!parsed && (mg_json_parse(d, ev->data.p, ev->data.len, NULL) != 0 ||
                  !mg_api__is(d, 0, MG_JSON_OBJECT)))
    return;
  if (type_is(type, "response.output_text.delta")) {
    acc_array(&st->acc, d, mg_json_getc(d, 0, "logprobs"));
    return;
  }
  r = mg_json_getc(d, 0, "response");
  if (!mg_api__is(d, r, MG_JSON_OBJECT))
    return;
  if (st->response_id[0] == '\0') {
    uint32_t id = mg_json_getc(d, r, "id");
    struct mg_str s;
    if (mg_api__is(d, id, MG_JSON_STRING) && !d->toks[id].escaped &&
        (s = mg_json_str_raw(d, id)).len < sizeof(st->response_id)) {
      memcpy(st->response_id, s.p, s.len);
      st->response_id[s.len] = '\0';
    }
  }
  if (type_is(type, "response.completed") ||
      type_is(type, "response.incomplete") ||
      type_is(type, "response.failed")) {
    usage_of(d, mg_json_getc(d, r, "usage"), &st->usage);
    st->done = true;
    st->failed = type_is(type, "response.failed");
  }
}

/* ---- rendering: writing helpers --------------------------------------- */

/* "event: <type>\ndata: {"type":"<type>","sequence_number":<n>" - the
 * caller writes the other members (each after a comma) and ends with
 * "}\n\n" (ev_close). */
static int ev_open(struct mg_buf *out, const char *type, int64_t *seq) {
  int rc;
  if ((rc = mg_api__event_open(out, type)) != 0)
    return rc;
  return mg_buf_printf(out, "{\"type\":\"%s\",\"sequence_number\":%" PRId64,
                       type, (*seq)++);
}

static int ev_close(struct mg_buf *out) { return mg_buf_puts(out, "}\n\n"); }

static int raw(struct mg_buf *out, const struct mg_json_doc *d, uint32_t i) {
  return mg_answer_compact(out, d, i);
}

static int raw_or(struct mg_buf *out, const struct mg_json_doc *d, uint32_t i,
                  const char *dflt) {
  return i == MG_JSON_NOTFOUND ? mg_buf_puts(out, dflt) : raw(out, d, i);
}

/* The members of the object at obj but those named in skip, each as
 * ,"key":value (a comma first unless *first). */
static int copy_members(struct mg_buf *out, const struct mg_json_doc *d,
                        uint32_t obj, const char *const *skip, bool *first) {
  uint32_t m, key;
  int rc;
  for (m = 0, key = obj + 1; m < d->toks[obj].count;
       m++, key = d->toks[key + 1].next) {
    const char *const *s;
    for (s = skip; s && *s; s++)
      if (mg_json_str_eq(d, key, *s, strlen(*s)))
        break;
    if (s && *s)
      continue;
    if ((!*first && (rc = mg_buf_puts(out, ",")) != 0) ||
        (rc = raw(out, d, key)) != 0 || (rc = mg_buf_puts(out, ":")) != 0 ||
        (rc = raw(out, d, key + 1)) != 0)
      return rc;
    *first = false;
  }
  return 0;
}

/* The id of a message item modelgate makes: "msg_" + the response id's
 * tail. */
static int msg_id(struct mg_buf *out, const struct mg_answer_meta *m) {
  const char *id = strncmp(m->id, "resp_", 5) == 0 ? m->id + 5 : m->id;
  int rc;
  if ((rc = mg_buf_puts(out, "\"msg_")) != 0)
    return rc;
  /* The id is modelgate's own (mg_conv_local_id): no byte needs escaping,
   * but a caller's must not break the JSON either. */
  {
    struct mg_buf tmp;
    mg_buf_init(&tmp, out->max);
    rc = mg_answer_json_text(&tmp, id, strlen(id));
    if (rc == 0)
      rc = mg_buf_append(out, tmp.data + 1, tmp.len - 1); /* after its '"' */
    mg_buf_free(&tmp);
  }
  return rc;
}

static int text_part(struct mg_buf *out, const char *text, size_t len) {
  int rc;
  if ((rc = mg_buf_puts(out, "{\"type\":\"output_text\",\"text\":")) != 0 ||
      (rc = mg_answer_json_text(out, text, len)) != 0)
    return rc;
  return mg_buf_puts(out, ",\"annotations\":[],\"logprobs\":[]}");
}

/* The message item of a made answer; text NULL: in progress, no content. */
static int text_item(struct mg_buf *out, const struct mg_answer_meta *m,
                     const char *text, size_t len, bool done) {
  int rc;
  if ((rc = mg_buf_puts(out, "{\"id\":")) != 0 || (rc = msg_id(out, m)) != 0 ||
      (rc = mg_buf_printf(out,
                          ",\"type\":\"message\",\"status\":\"%s\",\"role\":"
                          "\"assistant\",\"content\":[",
                          done ? "completed" : "in_progress")) != 0)
    return rc;
  if (done && (rc = text_part(out, text, len)) != 0)
    return rc;
  return mg_buf_puts(out, "]}");
}

/* A Response object for a made answer: status "completed" with the text,
 * or "in_progress" with no output yet. store is false: nothing upstream
 * holds it, so it cannot be continued or fetched. */
static int made_response(struct mg_buf *out, const struct mg_answer_meta *m,
                         const char *text, size_t len, bool done) {
  int rc;
  if ((rc = mg_buf_puts(out, "{\"id\":")) != 0 ||
      (rc = mg_answer_json_text(out, m->id, strlen(m->id))) != 0 ||
      (rc = mg_buf_printf(out,
                          ",\"object\":\"response\",\"created_at\":%" PRId64
                          ",\"status\":\"%s\",\"error\":null,"
                          "\"incomplete_details\":null,\"instructions\":null,"
                          "\"max_output_tokens\":null,\"model\":",
                          m->created, done ? "completed" : "in_progress")) !=
          0 ||
      (rc = mg_answer_json_text(out, m->model, strlen(m->model))) != 0 ||
      (rc = mg_buf_puts(out, ",\"output\":[")) != 0)
    return rc;
  if (done && (rc = text_item(out, m, text, len, true)) != 0)
    return rc;
  return mg_buf_puts(
      out, done ? "],\"parallel_tool_calls\":true,\"previous_response_id\":"
                  "null,\"store\":false,\"tool_choice\":\"auto\",\"tools\":[],"
                  "\"usage\":{\"input_tokens\":0,\"input_tokens_details\":{"
                  "\"cached_tokens\":0},\"output_tokens\":0,"
                  "\"output_tokens_details\":{\"reasoning_tokens\":0},"
                  "\"total_tokens\":0},\"metadata\":{}}"
                : "],\"parallel_tool_calls\":true,\"previous_response_id\":"
                  "null,\"store\":false,\"tool_choice\":\"auto\",\"tools\":[],"
                  "\"usage\":null,\"metadata\":{}}");
}

static int responses_wrap(struct mg_buf *out, const struct mg_answer_meta *m,
                          const char *text, size_t len) {
  size_t start = out->len;
  int rc;
  if (m->id == NULL || m->model == NULL || (text == NULL && len > 0))
    return -EINVAL;
  if ((rc = made_response(out, m, text ? text : "", len, true)) != 0)
    mg_buf_truncate(out, start);
  return rc;
}

/* The ids an event about the item and its part carries. */
static int item_ref(struct mg_buf *out, const struct mg_buf *item_id,
                    uint32_t output_index, int64_t content_index) {
  int rc;
  if ((rc = mg_buf_puts(out, ",\"item_id\":")) != 0 ||
      (rc = mg_buf_append(out, item_id->data, item_id->len)) != 0 ||
      (rc = mg_buf_printf(out, ",\"output_index\":%" PRIu32, output_index)) !=
          0)
    return rc;
  if (content_index >= 0)
    rc = mg_buf_printf(out, ",\"content_index\":%" PRId64, content_index);
  return rc;
}

static int responses_wrap_sse(struct mg_buf *out,
                              const struct mg_answer_meta *m, const char *text,
                              size_t len) {
  struct mg_buf id;
  size_t start = out->len;
  int64_t seq = 0;
  int rc;

  if (m->id == NULL || m->model == NULL || (text == NULL && len > 0))
    return -EINVAL;
  if (text == NULL)
    text = "";
  mg_buf_init(&id, out->max);
  if ((rc = msg_id(&id, m)) != 0)
    goto out;
#define STEP(x)                                                              \
  if ((rc = (x)) != 0)                                                       \
  goto out
  STEP(ev_open(out, "response.created", &seq));
  STEP(mg_buf_puts(out, ",\"response\":"));
  STEP(made_response(out, m, NULL, 0, false));
  STEP(ev_close(out));
  STEP(ev_open(out, "response.in_progress", &seq));
  STEP(mg_buf_puts(out, ",\"response\":"));
  STEP(made_response(out, m, NULL, 0, false));
  STEP(ev_close(out));
  STEP(ev_open(out, "response.output_item.added", &seq));
  STEP(mg_buf_puts(out, ",\"output_index\":0,\"item\":"));
  STEP(text_item(out, m, NULL, 0, false));
  STEP(ev_close(out));
  STEP(ev_open(out, "response.content_part.added", &seq));
  STEP(item_ref(out, &id, 0, 0));
  STEP(mg_buf_puts(out, ",\"part\":"));
  STEP(text_part(out, "", 0));
  STEP(ev_close(out));
  STEP(ev_open(out, "response.output_text.delta", &seq));
  STEP(item_ref(out, &id, 0, 0));
  STEP(mg_buf_puts(out, ",\"delta\":"));
  STEP(mg_answer_json_text(out, text, len));
  STEP(mg_buf_puts(out, ",\"logprobs\":[]"));
  STEP(ev_close(out));
  STEP(ev_open(out, "response.output_text.done", &seq));
  STEP(item_ref(out, &id, 0, 0));
  STEP(mg_buf_puts(out, ",\"text\":"));
  STEP(mg_answer_json_text(out, text, len));
  STEP(mg_buf_puts(out, ",\"logprobs\":[]"));
  STEP(ev_close(out));
  STEP(ev_open(out, "response.content_part.done", &seq));
  STEP(item_ref(out, &id, 0, 0));
  STEP(mg_buf_puts(out, ",\"part\":"));
  STEP(text_part(out, text, len));
  STEP(ev_close(out));
  STEP(ev_open(out, "response.output_item.done", &seq));
  STEP(mg_buf_puts(out, ",\"output_index\":0,\"item\":"));
  STEP(text_item(out, m, text, len, true));
  STEP(ev_close(out));
  STEP(ev_open(out, "response.completed", &seq));
  STEP(mg_buf_puts(out, ",\"response\":"));
  STEP(made_response(out, m, text, len, true));
  STEP(ev_close(out));
out:
  if (rc)
    mg_buf_truncate(out, start);
  mg_buf_free(&id);
  return rc;
}

/* ---- replay of a buffered Response ---------------------------------------- */

static bool valid_response(const struct mg_json_doc *d) {
  uint32_t o, k, i, c, kk, j;
  if (!mg_api__is(d, 0, MG_JSON_OBJECT) ||
      !mg_api__str_is(d, mg_json_getc(d, 0, "object"), "response"))
    return false;
  o = mg_json_getc(d, 0, "output");
  if (!mg_api__is(d, o, MG_JSON_ARRAY))
    return false;
  for (k = 0, i = o + 1; k < d->toks[o].count; k++, i = d->toks[i].next) {
    if (d->toks[i].type != MG_JSON_OBJECT)
      return false;
    if (!mg_api__str_is(d, mg_json_getc(d, i, "type"), "message"))
      continue;
    c = mg_json_getc(d, i, "content");
    if (c == MG_JSON_NOTFOUND)
      continue;
    if (!mg_api__is(d, c, MG_JSON_ARRAY))
      return false;
    for (kk = 0, j = c + 1; kk < d->toks[c].count; kk++, j = d->toks[j].next)
      if (d->toks[j].type != MG_JSON_OBJECT)
        return false;
  }
  return true;
}

/* The response as response.created shows it: everything but its output
 * and usage, in progress. */
static int snapshot(struct mg_buf *out, const struct mg_json_doc *d) {
  static const char *const skip[] = {"status", "output", "usage",
                                     "completed_at", NULL};
  bool first = true;
  int rc;
  if ((rc = mg_buf_puts(out, "{")) != 0 ||
      (rc = copy_members(out, d, 0, skip, &first)) != 0)
    return rc;
  return mg_buf_puts(out, first ? "\"status\":\"in_progress\",\"output\":[],"
                                  "\"usage\":null}"
                                : ",\"status\":\"in_progress\",\"output\":[],"
                                  "\"usage\":null}");
}

/* The events of one message content part. */
static int replay_part(struct mg_buf *out, int64_t *seq,
                       const struct mg_json_doc *d, const struct mg_buf *id,
                       uint32_t oi, uint32_t ci, uint32_t part) {
  uint32_t type = mg_json_getc(d, part, "type");
  bool text = mg_api__str_is(d, type, "output_text");
  bool refusal = mg_api__str_is(d, type, "refusal");
  uint32_t lp = mg_json_getc(d, part, "logprobs");
  int rc;

  if ((rc = ev_open(out, "response.content_part.added", seq)) != 0 ||
      (rc = item_ref(out, id, oi, ci)) != 0 ||
      (rc = mg_buf_puts(out, ",\"part\":")) != 0)
    return rc;
  if (text)
    rc = mg_buf_puts(out, "{\"type\":\"output_text\",\"text\":\"\","
                          "\"annotations\":[],\"logprobs\":[]}");
  else if (refusal)
    rc = mg_buf_puts(out, "{\"type\":\"refusal\",\"refusal\":\"\"}");
  else
    rc = raw(out, d, part);
  if (rc || (rc = ev_close(out)) != 0)
    return rc;
  if (text || refusal) {
    const char *key = text ? "text" : "refusal";
    uint32_t v = mg_json_getc(d, part, key);
    if ((rc = ev_open(out, text ? "response.output_text.delta"
                                : "response.refusal.delta",
                      seq)) != 0 ||
        (rc = item_ref(out, id, oi, ci)) != 0 ||
        (rc = mg_buf_puts(out, ",\"delta\":")) != 0 ||
        (rc = raw_or(out, d, v, "\"\"")) != 0 ||
        (text && ((rc = mg_buf_puts(out, ",\"logprobs\":")) != 0 ||
                  (rc = raw_or(out, d, lp, "[]")) != 0)) ||
        (rc = ev_close(out)) != 0)
      return rc;
    if ((rc = ev_open(out, text ? "response.output_text.done"
                                : "response.refusal.done",
                      seq)) != 0 ||
        (rc = item_ref(out, id, oi, ci)) != 0 ||
        (rc = mg_buf_printf(out, ",\"%s\":", key)) != 0 ||
        (rc = raw_or(out, d, v, "\"\"")) != 0 ||
        (text && ((rc = mg_buf_puts(out, ",\"logprobs\":")) != 0 ||
                  (rc = raw_or(out, d, lp, "[]")) != 0)) ||
        (rc = ev_close(out)) != 0)
      return rc;
  }
  if ((rc = ev_open(out, "response.content_part.done", seq)) != 0 ||
      (rc = item_ref(out, id, oi, ci)) != 0 ||
      (rc = mg_buf_puts(out, ",\"part\":")) != 0 ||
      (rc = raw(out, d, part)) != 0)
    return rc;
  return ev_close(out);
}

/* The events of one output item: added (in progress, without what the
 * deltas will bring), its deltas, done (the item as it is). */
static int replay_item(struct mg_buf *out, int64_t *seq,
                       const struct mg_json_doc *d, uint32_t oi,
                       uint32_t item) {
  static const char *const msg_skip[] = {"status", "content", NULL};
  static const char *const call_skip[] = {"status", "arguments", NULL};
  uint32_t type = mg_json_getc(d, item, "type");
  uint32_t iid = mg_json_getc(d, item, "id");
  bool msg = mg_api__str_is(d, type, "message");
  bool call = mg_api__str_is(d, type, "function_call");
  struct mg_buf id;
  bool first = true;
  int rc;

  mg_buf_init(&id, out->max);
  if ((rc = raw_or(&id, d, iid, "\"\"")) != 0)
    goto out;
  if ((rc = ev_open(out, "response.output_item.added", seq)) != 0 ||
      (rc = mg_buf_printf(out, ",\"output_index\":%" PRIu32 ",\"item\":",
                          oi)) != 0)
    goto out;
  if (msg || call) {
    if ((rc = mg_buf_puts(out, "{")) != 0 ||
        (rc = copy_members(out, d, item, msg ? msg_skip : call_skip,
                           &first)) != 0 ||
        (rc = mg_buf_puts(out, first ? "" : ",")) != 0 ||
        (rc = mg_buf_puts(out, msg ? "\"status\":\"in_progress\","
                                     "\"content\":[]}"
                                   : "\"status\":\"in_progress\","
                                     "\"arguments\":\"\"}")) != 0)
      goto out;
  } else if ((rc = raw(out, d, item)) != 0) {
    goto out;
  }
  if ((rc = ev_close(out)) != 0)
    goto out;

  if (msg) {
    uint32_t c = mg_json_getc(d, item, "content"), k, j;
    if (mg_api__is(d, c, MG_JSON_ARRAY))
      for (k = 0, j = c + 1; k < d->toks[c].count; k++, j = d->toks[j].next)
        if ((rc = replay_part(out, seq, d, &id, oi, k, j)) != 0)
          goto out;
  } else if (call) {
    uint32_t a = mg_json_getc(d, item, "arguments");
    if ((rc = ev_open(out, "response.function_call_arguments.delta", seq)) !=
            0 ||
        (rc = item_ref(out, &id, oi, -1)) != 0 ||
        (rc = mg_buf_puts(out, ",\"delta\":")) != 0 ||
        (rc = raw_or(out, d, a, "\"\"")) != 0 || (rc = ev_close(out)) != 0 ||
        (rc = ev_open(out, "response.function_call_arguments.done", seq)) !=
            0 ||
        (rc = item_ref(out, &id, oi, -1)) != 0 ||
        (rc = mg_buf_puts(out, ",\"arguments\":")) != 0 ||
        (rc = raw_or(out, d, a, "\"\"")) != 0 || (rc = ev_close(out)) != 0)
      goto out;
  }
  if ((rc = ev_open(out, "response.output_item.done", seq)) != 0 ||
      (rc = mg_buf_printf(out, ",\"output_index\":%" PRIu32 ",\"item\":",
                          oi)) != 0 ||
      (rc = raw(out, d, item)) != 0)
    goto out;
  rc = ev_close(out);
out:
  mg_buf_free(&id);
  return rc;
}

static int responses_replay(const struct mg_json_doc *d, struct mg_buf *out) {
  size_t start = out->len;
  uint32_t o, k, i, st;
  const char *last = "response.completed";
  int64_t seq = 0;
  int rc;

  /* Check everything before writing anything: a half-replayed answer is
   * worse than none. */
  if (!valid_response(d))
    return -EINVAL;
  st = mg_json_getc(d, 0, "status");
  if (mg_api__str_is(d, st, "incomplete"))
    last = "response.incomplete";
  else if (mg_api__str_is(d, st, "failed"))
    last = "response.failed";
  if ((rc = ev_open(out, "response.created", &seq)) != 0 ||
      (rc = mg_buf_puts(out, ",\"response\":")) != 0 ||
      (rc = snapshot(out, d)) != 0 || (rc = ev_close(out)) != 0 ||
      (rc = ev_open(out, "response.in_progress", &seq)) != 0 ||
      (rc = mg_buf_puts(out, ",\"response\":")) != 0 ||
      (rc = snapshot(out, d)) != 0 || (rc = ev_close(out)) != 0)
    goto out;
  o = mg_json_getc(d, 0, "output");
  for (k = 0, i = o + 1; k < d->toks[o].count; k++, i = d->toks[i].next)
    if ((rc = replay_item(out, &seq, d, k, i)) != 0)
      goto out;
  if ((rc = ev_open(out, last, &seq)) != 0 ||
      (rc = mg_buf_puts(out, ",\"response\":")) != 0 ||
      (rc = raw(out, d, 0)) != 0)
    goto out;
  rc = ev_close(out);
out:
  if (rc)
    mg_buf_truncate(out, start);
  return rc;
}

/* A failure after the head: response.failed (the response, failed, with
 * the error), then an `error` event; never a response.completed. */
static int responses_stream_error(struct mg_buf *out,
                                  const struct mg_stream_state *st,
                                  const char *response_id,
                                  const char *message, const char *code) {
  size_t start = out->len;
  int64_t seq = st && st->seq >= 0 ? st->seq + 1 : 0;
  const char *id = response_id ? response_id : (st ? st->response_id : "");
  int rc;

  if (message == NULL)
    message = "";
  if (code == NULL)
    code = "server_error";
  if ((rc = ev_open(out, "response.failed", &seq)) != 0 ||
      (rc = mg_buf_puts(out, ",\"response\":{\"id\":")) != 0 ||
      (rc = *id ? mg_answer_json_text(out, id, strlen(id))
                : mg_buf_puts(out, "null")) != 0 ||
      (rc = mg_buf_puts(out, ",\"object\":\"response\",\"status\":\"failed\","
                             "\"error\":{\"code\":")) != 0 ||
      (rc = mg_answer_json_text(out, code, strlen(code))) != 0 ||
      (rc = mg_buf_puts(out, ",\"message\":")) != 0 ||
      (rc = mg_answer_json_text(out, message, strlen(message))) != 0 ||
      (rc = mg_buf_puts(out, "},\"incomplete_details\":null,\"output\":[],"
                             "\"usage\":null}")) != 0 ||
      (rc = ev_close(out)) != 0 || (rc = ev_open(out, "error", &seq)) != 0 ||
      (rc = mg_buf_puts(out, ",\"code\":")) != 0 ||
      (rc = mg_answer_json_text(out, code, strlen(code))) != 0 ||
      (rc = mg_buf_puts(out, ",\"message\":")) != 0 ||
      (rc = mg_answer_json_text(out, message, strlen(message))) != 0 ||
      (rc = mg_buf_puts(out, ",\"param\":null")) != 0 ||
      (rc = ev_close(out)) != 0)
    mg_buf_truncate(out, start);
  return rc;
}

const struct mg_endpoint_ops mg_api__responses_ops = {
    .usage = responses_usage,
    .stream_event = responses_stream_event,
    .logprobs = responses_logprobs,
    .ask_logprobs = responses_ask,
    .strip_logprobs = responses_strip,
    .answer_text = responses_answer_text,
    .wrap_text = responses_wrap,
    .wrap_text_sse = responses_wrap_sse,
    .replay_sse = responses_replay,
    .error_body = mg_api__openai_error,
    .stream_error = responses_stream_error,
};

/* GET / DELETE of a stored response and its input items: passed through
 * from the target that holds it; only errors are modelgate's. */
const struct mg_endpoint_ops mg_api__responses_store_ops = {
    .error_body = mg_api__openai_error,
};
