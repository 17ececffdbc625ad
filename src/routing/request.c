/* request.c - read routing features from a request body. */
#include "routing/request.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mg_request_init(struct mg_request *r, enum mg_endpoint ep) {
  memset(r, 0, sizeof(*r));
  r->endpoint = ep;
  r->messages_tok = MG_JSON_NOTFOUND;
  r->model_tok = MG_JSON_NOTFOUND;
  r->input.max_tokens = -1;
}

void mg_request_free(struct mg_request *r) {
  size_t i;
  for (i = 0; i < r->nowned; i++)
    free(r->owned[i]);
  r->nowned = 0;
}

const struct mg_str *mg_request_attr(const struct mg_request *r,
                                     struct mg_str name) {
  size_t i;
  /* Names compare case-insensitively: headers carry them too, and header
   * names are case-insensitive. */
  for (i = 0; i < r->nattrs; i++)
    if (mg_str_eq_nocase(r->attrs[i].name, name))
      return &r->attrs[i].value;
  return NULL;
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

/* Characters of a message `content`: a string, or an array of parts whose
 * `text` strings count (images and audio parts have none). */
static uint64_t content_chars(const struct mg_json_doc *d, uint32_t c) {
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
      if (t != MG_JSON_NOTFOUND && d->toks[t].type == MG_JSON_STRING)
        n += mg_json_str_chars(d, t);
    }
  }
  return n;
}

static void read_input(struct mg_request *r, const struct mg_json_doc *d) {
  uint32_t m = r->messages_tok, i, k;
  if (m == MG_JSON_NOTFOUND)
    return;
  if (r->endpoint == MG_EP_CHAT) {
    if (d->toks[m].type != MG_JSON_ARRAY)
      return;
    r->input.messages = d->toks[m].count;
    for (k = 0, i = m + 1; k < d->toks[m].count; k++, i = d->toks[i].next)
      if (d->toks[i].type == MG_JSON_OBJECT)
        r->input.chars += content_chars(d, mg_json_getc(d, i, "content"));
    return;
  }
  /* completions `prompt` and embeddings `input`: a string or an array of
   * strings (token arrays count as inputs without characters). */
  if (d->toks[m].type == MG_JSON_STRING) {
    r->input.messages = 1;
    r->input.chars = mg_json_str_chars(d, m);
  } else if (d->toks[m].type == MG_JSON_ARRAY) {
    r->input.messages = d->toks[m].count;
    for (k = 0, i = m + 1; k < d->toks[m].count; k++, i = d->toks[i].next)
      if (d->toks[i].type == MG_JSON_STRING)
        r->input.chars += mg_json_str_chars(d, i);
  }
}

/* The keys whose meaning modelgate itself depends on. A body naming one of
 * them twice is refused: modelgate and the upstream could otherwise read
 * different values (most JSON parsers keep the last, the scanner the first). */
static const char *const watched_keys[] = {
    "model",    "user",   "stream", "metadata",   "messages",
    "prompt",   "input",  "tools",  "functions",  "max_tokens",
    "logprobs", "max_completion_tokens", "top_logprobs", NULL};

int mg_request_parse(struct mg_request *r, const char *body, size_t len,
                     struct mg_json_doc *doc, struct mg_request_error *err) {
  struct mg_json_error jerr;
  uint32_t i, k, v, n;
  int rc;

  r->body = body;
  r->body_len = len;
  r->doc = doc;
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

  n = doc->toks[0].count;
  for (k = 0, i = 1; k < n; k++, i = doc->toks[i + 1].next) {
    const char *const *w;
    uint32_t j, kk;
    for (w = watched_keys; *w; w++)
      if (mg_json_str_eq(doc, i, *w, strlen(*w)))
        break;
    if (*w == NULL)
      continue;
    /* Quadratic only over the watched keys, which are few. */
    for (kk = 0, j = 1; kk < k; kk++, j = doc->toks[j + 1].next)
      if (mg_json_str_eq(doc, j, *w, strlen(*w)))
        return fail(err, MG_REQ_DUPLICATE_KEY, *w,
                    "The key '%s' appears more than once in your request.",
                    *w);
  }

  v = mg_json_getc(doc, 0, "model");
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

  v = mg_json_getc(doc, 0, "stream");
  if (v != MG_JSON_NOTFOUND) {
    if (doc->toks[v].type == MG_JSON_TRUE)
      r->input.stream = true;
    else if (doc->toks[v].type != MG_JSON_FALSE &&
             doc->toks[v].type != MG_JSON_NULL)
      return fail(err, MG_REQ_INVALID_FIELD, "stream",
                  "The stream parameter must be a boolean.");
  }
  if (r->endpoint == MG_EP_EMBEDDINGS)
    r->input.stream = false;

  v = mg_json_getc(doc, 0, "user");
  if (v != MG_JSON_NOTFOUND && doc->toks[v].type == MG_JSON_STRING &&
      string_of(r, doc, v, &r->user))
    return fail(err, MG_REQ_NOMEM, NULL, "Out of memory.");

  v = mg_json_getc(doc, 0, "logprobs");
  if (v != MG_JSON_NOTFOUND)
    r->logprobs = doc->toks[v].type == MG_JSON_TRUE ||
                  doc->toks[v].type == MG_JSON_NUMBER;

  v = mg_json_getc(doc, 0, "max_tokens");
  if (v == MG_JSON_NOTFOUND)
    v = mg_json_getc(doc, 0, "max_completion_tokens");
  if (v != MG_JSON_NOTFOUND && doc->toks[v].type == MG_JSON_NUMBER) {
    int64_t mt;
    if (mg_json_int(doc, v, &mt) == 0 && mt >= 0)
      r->input.max_tokens = mt;
  }

  v = mg_json_getc(doc, 0, "tools");
  if (v == MG_JSON_NOTFOUND)
    v = mg_json_getc(doc, 0, "functions");
  if (v != MG_JSON_NOTFOUND && doc->toks[v].type == MG_JSON_ARRAY)
    r->input.tools = doc->toks[v].count;

  r->messages_tok = mg_json_getc(
      doc, 0,
      r->endpoint == MG_EP_CHAT
          ? "messages"
          : (r->endpoint == MG_EP_COMPLETIONS ? "prompt" : "input"));
  read_input(r, doc);

  /* Body metadata: string values become attributes unless a header set the
   * same name. Other value types are not attributes. */
  v = mg_json_getc(doc, 0, "metadata");
  if (v != MG_JSON_NOTFOUND && doc->toks[v].type == MG_JSON_OBJECT) {
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
