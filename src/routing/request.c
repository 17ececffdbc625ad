/* request.c - read routing features from a request body. */
#include "routing/request.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const usrc_names[] = {"none", "safety_identifier", "user",
                                         "header", "client"};

const char *mg_unit_source_name(enum mg_unit_source s) {
  return (unsigned)s < sizeof(usrc_names) / sizeof(usrc_names[0])
             ? usrc_names[s]
             : "none";
}

const char *mg_need_name(uint32_t need) {
  switch (need) {
  case MG_NEED_JSON:
    return "response_format";
  case MG_NEED_TOOL:
    return "tool_choice";
  case MG_NEED_N:
    return "n";
  case MG_NEED_LOGPROBS:
    return "logprobs";
  default:
    return NULL;
  }
}

enum mg_req_shape mg_req_shape_of(enum mg_endpoint_id ep) {
  switch (ep) {
  case MG_EP_CHAT:
    return MG_SHAPE_CHAT;
  case MG_EP_COMPLETIONS:
    return MG_SHAPE_COMPLETIONS;
  case MG_EP_EMBEDDINGS:
    return MG_SHAPE_EMBEDDINGS;
  case MG_EP_RESPONSES:
    return MG_SHAPE_RESPONSES;
  case MG_EP_MESSAGES:
  case MG_EP_COUNT_TOKENS:
    return MG_SHAPE_MESSAGES;
  default:
    return MG_SHAPE_NONE;
  }
}

void mg_request_init(struct mg_request *r, enum mg_endpoint_id ep) {
  memset(r, 0, offsetof(struct mg_request, attrs));
  r->endpoint = ep;
  r->shape = mg_req_shape_of(ep);
  r->messages_tok = MG_JSON_NOTFOUND;
  r->model_tok = MG_JSON_NOTFOUND;
  r->previous_tok = MG_JSON_NOTFOUND;
  r->input.max_tokens = -1;
}

void mg_request_free(struct mg_request *r) {
  size_t i;
  for (i = 0; i < r->nowned; i++)
    free(r->owned[i]);
  r->nowned = 0;
}

/* The top-level keys whose meaning modelgate itself depends on, read in
 * one pass over the body's members (index_top). A body naming one of them
 * twice is refused: modelgate and the upstream could otherwise read
 * different values (most JSON parsers keep the last, the scanner the
 * first). */
enum top_key {
  K_MODEL, K_USER, K_STREAM, K_METADATA, K_MESSAGES, K_PROMPT, K_INPUT,
  K_TOOLS, K_FUNCTIONS, K_MAX_TOKENS, K_LOGPROBS, K_MAX_COMPLETION_TOKENS,
  K_TOP_LOGPROBS, K_SAFETY_IDENTIFIER, K_PREVIOUS_RESPONSE_ID, K_INCLUDE,
  K_INSTRUCTIONS, K_SYSTEM, K_MAX_OUTPUT_TOKENS, K_TEXT, K_TOOL_CHOICE,
  K_RESPONSE_FORMAT, K_N, K_COUNT
};

#define TOP_KEY(s) {s, sizeof(s) - 1}
static const struct {
  const char *name;
  size_t len;
} top_keys[K_COUNT] = {
    TOP_KEY("model"),        TOP_KEY("user"),
    TOP_KEY("stream"),       TOP_KEY("metadata"),
    TOP_KEY("messages"),     TOP_KEY("prompt"),
    TOP_KEY("input"),        TOP_KEY("tools"),
    TOP_KEY("functions"),    TOP_KEY("max_tokens"),
    TOP_KEY("logprobs"),     TOP_KEY("max_completion_tokens"),
    TOP_KEY("top_logprobs"), TOP_KEY("safety_identifier"),
    TOP_KEY("previous_response_id"), TOP_KEY("include"),
    TOP_KEY("instructions"), TOP_KEY("system"),
    TOP_KEY("max_output_tokens"), TOP_KEY("text"),
    TOP_KEY("tool_choice"),  TOP_KEY("response_format"),
    TOP_KEY("n")};
#undef TOP_KEY

static struct mg_attr *find_attr(const struct mg_request *r,
                                 struct mg_str name) {
  size_t i;
  /* Names compare case-insensitively: headers carry them too, and header
   * names are case-insensitive. */
  for (i = 0; i < r->nattrs; i++)
    if (mg_str_eq_nocase(r->attrs[i].name, name))
      return (struct mg_attr *)&r->attrs[i];
  return NULL;
}

const struct mg_str *mg_request_attr(const struct mg_request *r,
                                     struct mg_str name) {
  const struct mg_attr *a = find_attr(r, name);
  return a ? &a->value : NULL;
}

bool mg_request_add_attr(struct mg_request *r, struct mg_str name,
                         struct mg_str value) {
  if (mg_request_attr(r, name) != NULL)
    return true; /* first one wins: headers are added before metadata */
  if (r->nattrs == MG_REQ_MAX_ATTRS)
    return false;
  r->attrs[r->nattrs].name = name;
  r->attrs[r->nattrs].value = value;
  r->nattrs++;
  return true;
}

bool mg_request_set_client(struct mg_request *r, struct mg_str name) {
  struct mg_attr *a = find_attr(r, MG_STR_LIT("client"));
  r->client = name;
  /* The server's word replaces whatever a header or the body's metadata
   * said: a caller must not pass itself off as another client. */
  if (a) {
    a->name = MG_STR_LIT("client");
    a->value = name;
    return true;
  }
  return mg_request_add_attr(r, MG_STR_LIT("client"), name);
}

enum mg_unit_source mg_request_unit(const struct mg_request *r,
                                    struct mg_str *id) {
  if (r->safety_identifier.len) {
    *id = r->safety_identifier;
    return MG_USRC_SAFETY_IDENTIFIER;
  }
  if (r->user.len) {
    *id = r->user;
    return MG_USRC_USER;
  }
  if (r->unit_header.len) {
    *id = r->unit_header;
    return MG_USRC_HEADER;
  }
  if (r->client.len) {
    *id = r->client;
    return MG_USRC_CLIENT;
  }
  *id = MG_STR_NULL;
  return MG_USRC_NONE;
}

static int fail(struct mg_request_error *err, enum mg_request_code code,
                const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(struct mg_request_error *err, enum mg_request_code code,
                const char *param, const char *fmt, ...) {
  va_list ap;
  err->code = code;
  err->param = param;
  va_start(ap, fmt);
  vsnprintf(err->message, sizeof(err->message), fmt, ap);
  va_end(ap);
  return -1;
}

static inline bool is_type(const struct mg_json_doc *d, uint32_t i,
                           enum mg_json_type t) {
  return i < d->n && d->toks[i].type == t;
}

/* A string token as a slice: borrowed from the body when it has no escapes,
 * else an unescaped copy owned by r. */
static int string_of(struct mg_request *r, const struct mg_json_doc *d,
                     uint32_t i, struct mg_str *out) {
  struct mg_buf b;
  if (!d->toks[i].escaped) {
    *out = mg_json_str_raw(d, i);
    return 0;
  }
  if (r->nowned == MG_REQ_MAX_OWNED)
    return -1;
  mg_buf_init(&b, d->toks[i].end - d->toks[i].start);
  if (mg_json_str_decode(d, i, &b) || b.data == NULL) {
    mg_buf_free(&b);
    if (d->toks[i].end - d->toks[i].start == 2) { /* "" */
      *out = MG_STR_LIT("");
      return 0;
    }
    return -1;
  }
  out->len = b.len;
  out->p = r->owned[r->nowned++] = mg_buf_steal(&b, NULL);
  return 0;
}

/* Characters of a `content`: a string, or an array of parts whose `text`
 * strings count (images and audio parts have none). A part without text
 * that holds a `content` of its own (Anthropic's tool_result) counts that
 * one, one level down. */
static uint64_t content_chars_depth(const struct mg_json_doc *d, uint32_t c,
                                    int depth) {
  uint64_t n = 0;
  uint32_t i, k;
  if (c == MG_JSON_NOTFOUND)
    return 0;
  if (d->toks[c].type == MG_JSON_STRING)
    return mg_json_str_chars(d, c);
  if (d->toks[c].type != MG_JSON_ARRAY)
    return 0;
  for (k = 0, i = c + 1; k < d->toks[c].count; k++, i = d->toks[i].next) {
    if (d->toks[i].type == MG_JSON_STRING) {
      n += mg_json_str_chars(d, i);
    } else if (d->toks[i].type == MG_JSON_OBJECT) {
      uint32_t t = mg_json_getc(d, i, "text");
      if (is_type(d, t, MG_JSON_STRING))
        n += mg_json_str_chars(d, t);
      else if (depth > 0)
        n += content_chars_depth(d, mg_json_getc(d, i, "content"), depth - 1);
    }
  }
  return n;
}

static uint64_t content_chars(const struct mg_json_doc *d, uint32_t c) {
  return content_chars_depth(d, c, 1);
}

/* An array of message objects: their number and the characters of their
 * contents. */
static void read_messages(struct mg_request *r, const struct mg_json_doc *d,
                          uint32_t m) {
  uint32_t i, k;
  if (!is_type(d, m, MG_JSON_ARRAY))
    return;
  r->input.messages += d->toks[m].count;
  for (k = 0, i = m + 1; k < d->toks[m].count; k++, i = d->toks[i].next)
    if (d->toks[i].type == MG_JSON_OBJECT)
      r->input.chars += content_chars(d, mg_json_getc(d, i, "content"));
}

/* Responses `input`: a string (one message), or items. A message item's
 * content is a string or parts; a function_call_output's `output` string
 * is text the model reads too. */
static void read_items(struct mg_request *r, const struct mg_json_doc *d,
                       uint32_t m) {
  uint32_t i, k;
  if (is_type(d, m, MG_JSON_STRING)) {
    r->input.messages += 1;
    r->input.chars += mg_json_str_chars(d, m);
    return;
  }
  if (!is_type(d, m, MG_JSON_ARRAY))
    return;
  r->input.messages += d->toks[m].count;
  for (k = 0, i = m + 1; k < d->toks[m].count; k++, i = d->toks[i].next) {
    uint32_t c;
    if (d->toks[i].type != MG_JSON_OBJECT)
      continue;
    c = mg_json_getc(d, i, "content");
    if (c != MG_JSON_NOTFOUND) {
      r->input.chars += content_chars(d, c);
      continue;
    }
    c = mg_json_getc(d, i, "output");
    if (is_type(d, c, MG_JSON_STRING))
      r->input.chars += mg_json_str_chars(d, c);
  }
}

/* completions `prompt` and embeddings `input`: a string or an array of
 * strings (token arrays count as inputs without characters). */
static void read_prompts(struct mg_request *r, const struct mg_json_doc *d,
                         uint32_t m) {
  uint32_t i, k;
  if (is_type(d, m, MG_JSON_STRING)) {
    r->input.messages = 1;
    r->input.chars = mg_json_str_chars(d, m);
  } else if (is_type(d, m, MG_JSON_ARRAY)) {
    r->input.messages = d->toks[m].count;
    for (k = 0, i = m + 1; k < d->toks[m].count; k++, i = d->toks[i].next)
      if (d->toks[i].type == MG_JSON_STRING)
        r->input.chars += mg_json_str_chars(d, i);
  }
}

/* A system prompt beside the messages (Responses `instructions`, Anthropic
 * `system`): one more message, and its characters. */
static void read_system(struct mg_request *r, const struct mg_json_doc *d,
                        uint32_t s) {
  if (s == MG_JSON_NOTFOUND || d->toks[s].type == MG_JSON_NULL)
    return;
  if (d->toks[s].type != MG_JSON_STRING && d->toks[s].type != MG_JSON_ARRAY)
    return;
  r->input.messages += 1;
  r->input.chars += content_chars(d, s);
}

static void read_input(struct mg_request *r, const struct mg_json_doc *d,
                       const uint32_t *top) {
  switch (r->shape) {
  case MG_SHAPE_CHAT:
    r->messages_tok = top[K_MESSAGES];
    read_messages(r, d, r->messages_tok);
    break;
  case MG_SHAPE_MESSAGES:
    r->messages_tok = top[K_MESSAGES];
    read_messages(r, d, r->messages_tok);
    read_system(r, d, top[K_SYSTEM]);
    break;
  case MG_SHAPE_RESPONSES:
    r->messages_tok = top[K_INPUT];
    read_items(r, d, r->messages_tok);
    read_system(r, d, top[K_INSTRUCTIONS]);
    break;
  case MG_SHAPE_COMPLETIONS:
    r->messages_tok = top[K_PROMPT];
    read_prompts(r, d, r->messages_tok);
    break;
  case MG_SHAPE_EMBEDDINGS:
    r->messages_tok = top[K_INPUT];
    read_prompts(r, d, r->messages_tok);
    break;
  case MG_SHAPE_NONE:
    break;
  }
}

static bool str_is(const struct mg_json_doc *d, uint32_t i, const char *s) {
  return is_type(d, i, MG_JSON_STRING) && mg_json_str_eq(d, i, s, strlen(s));
}

/* Does a `type` at i name a JSON answer? */
static bool json_format(const struct mg_json_doc *d, uint32_t fmt) {
  uint32_t t;
  if (!is_type(d, fmt, MG_JSON_OBJECT))
    return false;
  t = mg_json_getc(d, fmt, "type");
  return str_is(d, t, "json_object") || str_is(d, t, "json_schema");
}

/* Does tool_choice force a tool call? OpenAI: "required", a named function
 * or tool object, or allowed_tools in mode "required"; Anthropic: {"type":
 * "any"} or {"type": "tool", "name": ...}. "auto" and "none" do not. */
static bool forces_tool(const struct mg_json_doc *d, uint32_t tc, bool anthropic) {
  uint32_t t;
  if (str_is(d, tc, "required"))
    return !anthropic;
  if (!is_type(d, tc, MG_JSON_OBJECT))
    return false;
  t = mg_json_getc(d, tc, "type");
  if (anthropic)
    return str_is(d, t, "any") || str_is(d, t, "tool");
  if (str_is(d, t, "allowed_tools"))
    return str_is(d, mg_json_getc(d, tc, "mode"), "required");
  return !str_is(d, t, "auto") && !str_is(d, t, "none");
}

/* Does an `include` array ask for the output's token logprobs? */
static bool includes_logprobs(const struct mg_json_doc *d, uint32_t inc) {
  uint32_t i, k;
  if (!is_type(d, inc, MG_JSON_ARRAY))
    return false;
  for (k = 0, i = inc + 1; k < d->toks[inc].count; k++, i = d->toks[i].next)
    if (str_is(d, i, "message.output_text.logprobs"))
      return true;
  return false;
}

/* What a fallback tier would have to honour. */
static void read_needs(struct mg_request *r, const struct mg_json_doc *d,
                       const uint32_t *top) {
  bool anthropic = r->shape == MG_SHAPE_MESSAGES;
  uint32_t v;
  int64_t n;

  if (r->shape == MG_SHAPE_NONE || r->shape == MG_SHAPE_EMBEDDINGS)
    return;
  if (r->shape == MG_SHAPE_CHAT &&
      json_format(d, top[K_RESPONSE_FORMAT]))
    r->needs |= MG_NEED_JSON;
  if (r->shape == MG_SHAPE_RESPONSES) {
    v = top[K_TEXT];
    if (is_type(d, v, MG_JSON_OBJECT) &&
        json_format(d, mg_json_getc(d, v, "format")))
      r->needs |= MG_NEED_JSON;
  }
  if (forces_tool(d, top[K_TOOL_CHOICE], anthropic))
    r->needs |= MG_NEED_TOOL;
  v = top[K_N];
  if ((r->shape == MG_SHAPE_CHAT || r->shape == MG_SHAPE_COMPLETIONS) &&
      is_type(d, v, MG_JSON_NUMBER) && mg_json_int(d, v, &n) == 0 && n > 1)
    r->needs |= MG_NEED_N;
  if (r->logprobs)
    r->needs |= MG_NEED_LOGPROBS;
}

/* One pass over the body's members: top[k] is the value of top_keys[k], or
 * MG_JSON_NOTFOUND; a key named twice fails. Unescaped keys (nearly all)
 * compare by length and bytes; escaped ones after unescaping. */
static int index_top(const struct mg_json_doc *doc, uint32_t *top,
                     struct mg_request_error *err) {
  uint32_t i, k, n = doc->toks[0].count;
  size_t j;
  for (j = 0; j < K_COUNT; j++)
    top[j] = MG_JSON_NOTFOUND;
  for (k = 0, i = 1; k < n; k++, i = doc->toks[i + 1].next) {
    struct mg_str key = mg_json_str_raw(doc, i);
    bool esc = doc->toks[i].escaped;
    for (j = 0; j < K_COUNT; j++) {
      if (esc ? mg_json_str_eq(doc, i, top_keys[j].name, top_keys[j].len)
              : key.len == top_keys[j].len &&
                    memcmp(key.p, top_keys[j].name, key.len) == 0)
        break;
    }
    if (j == K_COUNT)
      continue;
    if (top[j] != MG_JSON_NOTFOUND)
      return fail(err, MG_REQ_DUPLICATE_KEY, top_keys[j].name,
                  "The key '%s' appears more than once in your request.",
                  top_keys[j].name);
    top[j] = i + 1;
  }
  return 0;
}

static int check_duplicates(const struct mg_json_doc *doc, uint32_t obj,
                            const char *const *watched,
                            struct mg_request_error *err) {
  uint32_t i, k, n = doc->toks[obj].count;
  for (k = 0, i = obj + 1; k < n; k++, i = doc->toks[i + 1].next) {
    const char *const *w;
    uint32_t j, kk;
    for (w = watched; *w; w++)
      if (mg_json_str_eq(doc, i, *w, strlen(*w)))
        break;
    if (*w == NULL)
      continue;
    /* Quadratic only over the watched keys, which are few. */
    for (kk = 0, j = obj + 1; kk < k; kk++, j = doc->toks[j + 1].next)
      if (mg_json_str_eq(doc, j, *w, strlen(*w)))
        return fail(err, MG_REQ_DUPLICATE_KEY, *w,
                    "The key '%s' appears more than once in your request.",
                    *w);
  }
  return 0;
}

int mg_request_parse(struct mg_request *r, const char *body, size_t len,
                     struct mg_json_doc *doc, struct mg_request_error *err) {
  static const char *const metadata_watched[] = {"user_id", NULL};
  uint32_t top[K_COUNT];
  struct mg_json_error jerr;
  uint32_t i, k, v;
  int rc;

  r->body = body;
  r->body_len = len;
  r->doc = doc;
  if (r->shape == MG_SHAPE_NONE)
    return fail(err, MG_REQ_INVALID_FIELD, NULL,
                "This endpoint does not take a request body.");
  rc = mg_json_parse(doc, body, len, &jerr);
  if (rc == MG_JSON_ETOOMANY || rc == MG_JSON_EDEPTH)
    return fail(err, MG_REQ_TOO_COMPLEX, NULL,
                "The JSON body of your request is nested too deeply or "
                "holds too many values.");
  if (rc == MG_JSON_ENOMEM)
    return fail(err, MG_REQ_NOMEM, NULL, "Out of memory.");
  if (rc)
    return fail(err, MG_REQ_INVALID_JSON, NULL,
                "We could not parse the JSON body of your request: %s at "
                "byte %zu.",
                jerr.msg ? jerr.msg : "invalid JSON", jerr.offset);
  if (doc->toks[0].type != MG_JSON_OBJECT)
    return fail(err, MG_REQ_NOT_OBJECT, NULL,
                "The body of your request must be a JSON object.");
  if (index_top(doc, top, err))
    return -1;

  v = top[K_MODEL];
  if (v == MG_JSON_NOTFOUND || doc->toks[v].type == MG_JSON_NULL)
    return fail(err, MG_REQ_MISSING_MODEL, "model",
                "You must provide a model parameter.");
  if (doc->toks[v].type != MG_JSON_STRING)
    return fail(err, MG_REQ_INVALID_FIELD, "model",
                "The model parameter must be a string.");
  if (string_of(r, doc, v, &r->model))
    return fail(err, MG_REQ_NOMEM, NULL, "Out of memory.");
  if (r->model.len == 0)
    return fail(err, MG_REQ_MISSING_MODEL, "model",
                "You must provide a model parameter.");
  r->model_tok = v;

  v = top[K_STREAM];
  if (v != MG_JSON_NOTFOUND) {
    if (doc->toks[v].type == MG_JSON_TRUE)
      r->input.stream = true;
    else if (doc->toks[v].type != MG_JSON_FALSE &&
             doc->toks[v].type != MG_JSON_NULL)
      return fail(err, MG_REQ_INVALID_FIELD, "stream",
                  "The stream parameter must be a boolean.");
  }
  /* Embeddings and token counts are never streamed. */
  if (r->shape == MG_SHAPE_EMBEDDINGS || r->endpoint == MG_EP_COUNT_TOKENS)
    r->input.stream = false;

  /* Anthropic has no body `user` or `safety_identifier`: its unit is
   * metadata.user_id, read with the metadata below. */
  if (r->shape != MG_SHAPE_MESSAGES) {
    v = top[K_SAFETY_IDENTIFIER];
    if (is_type(doc, v, MG_JSON_STRING) &&
        string_of(r, doc, v, &r->safety_identifier))
      return fail(err, MG_REQ_NOMEM, NULL, "Out of memory.");
    v = top[K_USER];
    if (is_type(doc, v, MG_JSON_STRING) && string_of(r, doc, v, &r->user))
      return fail(err, MG_REQ_NOMEM, NULL, "Out of memory.");
  }

  if (r->shape == MG_SHAPE_RESPONSES) {
    /* Which target holds the conversation hangs on this id: a value of
     * another type would be read differently upstream. */
    v = top[K_PREVIOUS_RESPONSE_ID];
    if (v != MG_JSON_NOTFOUND && doc->toks[v].type != MG_JSON_NULL) {
      if (doc->toks[v].type != MG_JSON_STRING ||
          doc->toks[v].end - doc->toks[v].start == 2)
        return fail(err, MG_REQ_INVALID_FIELD, "previous_response_id",
                    "The previous_response_id parameter must be a "
                    "non-empty string.");
      if (string_of(r, doc, v, &r->previous_response_id))
        return fail(err, MG_REQ_NOMEM, NULL, "Out of memory.");
      r->previous_tok = v;
    }
    r->logprobs = includes_logprobs(doc, top[K_INCLUDE]);
  } else if (r->shape == MG_SHAPE_CHAT || r->shape == MG_SHAPE_COMPLETIONS) {
    v = top[K_LOGPROBS];
    if (v != MG_JSON_NOTFOUND)
      r->logprobs = doc->toks[v].type == MG_JSON_TRUE ||
                    doc->toks[v].type == MG_JSON_NUMBER;
  }

  v = top[K_MAX_TOKENS];
  if (v == MG_JSON_NOTFOUND)
    v = top[K_MAX_COMPLETION_TOKENS];
  if (v == MG_JSON_NOTFOUND)
    v = top[K_MAX_OUTPUT_TOKENS];
  if (is_type(doc, v, MG_JSON_NUMBER)) {
    int64_t mt;
    if (mg_json_int(doc, v, &mt) == 0 && mt >= 0)
      r->input.max_tokens = mt;
  }

  v = top[K_TOOLS];
  if (v == MG_JSON_NOTFOUND && r->shape == MG_SHAPE_CHAT)
    v = top[K_FUNCTIONS];
  if (is_type(doc, v, MG_JSON_ARRAY))
    r->input.tools = doc->toks[v].count;

  read_input(r, doc, top);
  read_needs(r, doc, top);

  /* Body metadata: string values become attributes unless a header set the
   * same name. Other value types are not attributes. */
  v = top[K_METADATA];
  if (is_type(doc, v, MG_JSON_OBJECT)) {
    if (r->shape == MG_SHAPE_MESSAGES) {
      uint32_t u;
      if (check_duplicates(doc, v, metadata_watched, err)) {
        err->param = "metadata.user_id";
        return -1;
      }
      u = mg_json_getc(doc, v, "user_id");
      if (is_type(doc, u, MG_JSON_STRING) && string_of(r, doc, u, &r->user))
        return fail(err, MG_REQ_NOMEM, NULL, "Out of memory.");
    }
    for (k = 0, i = v + 1; k < doc->toks[v].count;
         k++, i = doc->toks[i + 1].next) {
      struct mg_str name, value;
      if (doc->toks[i + 1].type != MG_JSON_STRING)
        continue;
      if (string_of(r, doc, i, &name) || string_of(r, doc, i + 1, &value))
        break; /* too many escaped strings: the rest are ignored */
      mg_request_add_attr(r, name, value);
    }
  }
  return 0;
}
