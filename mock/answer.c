/* answer.c - OpenAI-shaped answers of the mock: chat completions, legacy
 * completions, embeddings, their streamed events and error bodies; the
 * entry points that hand Responses and Messages requests to responses.c and
 * anthropic.c; and the helpers those modules share.
 *
 * The answer text depends only on the model and the prompt, so the same
 * request always gets the same content (the proxy's answer cache is tested
 * with it). Token counts are rough: a prompt token is four characters, a
 * completion token is one word. */
#include "mock.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/hash.h"

#define PROMPT_PREFIX_CHARS 40

static bool is_space(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
         c == '\v';
}

/* ---- process-wide settings --------------------------------------------- */

static struct {
  const char *name; /* borrowed: argv or the environment */
  uint64_t nonce;
  uint64_t next;
} env;

void mg_mock_env_init(const char *name, uint64_t nonce) {
  env.name = name && name[0] ? name : NULL;
  env.nonce = nonce;
}

const char *mg_mock_env_name(void) { return env.name; }

void mg_mock_new_id(char *out, size_t n, const char *prefix) {
  /* The counter is mixed so that consecutive ids do not look alike; the
   * mix is a bijection, so they still never repeat. */
  uint64_t k = ++env.next * 0x9E3779B97F4A7C15ull;
  k ^= k >> 29;
  snprintf(out, n, "%s%016llx%016llx", prefix, (unsigned long long)env.nonce,
           (unsigned long long)k);
}

enum mg_mock_family mg_mock_api_family(enum mg_mock_api api) {
  return api == MG_MOCK_MESSAGES || api == MG_MOCK_COUNT_TOKENS
             ? MG_MOCK_FAM_ANTHROPIC
             : MG_MOCK_FAM_OPENAI;
}

/* Unicode code points in s (bytes that do not start a UTF-8 sequence are
 * continuation bytes and are not counted). */
size_t mg_mock__utf8_chars(const char *s) {
  size_t n = 0;
  for (; *s; s++)
    if (((unsigned char)*s & 0xC0) != 0x80)
      n++;
  return n;
}

/* Byte length of the first max code points of s. */
static size_t utf8_prefix(const char *s, size_t max) {
  size_t i = 0, n = 0;
  while (s[i]) {
    if (((unsigned char)s[i] & 0xC0) != 0x80) {
      if (n == max)
        break;
      n++;
    }
    i++;
  }
  return i;
}

long mg_mock__count_words(const char *s) {
  long n = 0;
  bool in = false;
  for (; *s; s++) {
    bool sp = is_space((unsigned char)*s);
    if (!sp && !in)
      n++;
    in = !sp;
  }
  return n;
}

int mg_mock__content_text(const cJSON *content, struct mg_buf *out) {
  const cJSON *part;
  if (cJSON_IsString(content))
    return mg_buf_puts(out, content->valuestring);
  if (!cJSON_IsArray(content))
    return 0;
  cJSON_ArrayForEach(part, content) {
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
    int rc;
    if (cJSON_IsString(text) && (rc = mg_buf_puts(out, text->valuestring)))
      return rc;
  }
  return 0;
}

int mg_mock__set_err(struct mg_buf *err, const char *msg) {
  return mg_buf_puts(err, msg) ? -ENOMEM : -EINVAL;
}

int mg_mock__default_content(struct mg_mock_req *rq, const char *prompt,
                             const char *after) {
  struct mg_buf b;
  mg_buf_init(&b, SIZE_MAX / 2);
  if ((env.name && mg_buf_printf(&b, "[%s] ", env.name)) ||
      mg_buf_printf(&b, "Mock answer from %s to: ", rq->model) ||
      mg_buf_append(&b, prompt, utf8_prefix(prompt, PROMPT_PREFIX_CHARS)) ||
      (after && mg_buf_printf(&b, " (after %s)", after))) {
    mg_buf_free(&b);
    return -ENOMEM;
  }
  rq->content = mg_buf_steal(&b, NULL);
  return rq->content ? 0 : -ENOMEM;
}

long mg_mock__prompt_tokens(size_t chars) {
  long p = (long)(chars / 4);
  return p < 1 ? 1 : p;
}

static int parse_chat(struct mg_mock_req *rq, const cJSON *body,
                      struct mg_buf *err) {
  const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(body, "messages");
  const cJSON *m;
  struct mg_buf last;
  size_t chars = 0;
  int rc = 0;

  if (!cJSON_IsArray(msgs))
    return mg_mock__set_err(err,
                            "you must provide a messages parameter (an array)");
  mg_buf_init(&last, SIZE_MAX / 2);
  cJSON_ArrayForEach(m, msgs) {
    if (!cJSON_IsObject(m)) {
      rc = mg_mock__set_err(err, "each message must be an object");
      goto out;
    }
    mg_buf_reset(&last);
    if ((rc = mg_mock__content_text(
             cJSON_GetObjectItemCaseSensitive(m, "content"), &last)))
      goto out;
    if (last.data)
      chars += mg_mock__utf8_chars(last.data);
  }
  rq->prompt_tokens = mg_mock__prompt_tokens(chars);
  rq->logprobs =
      cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(body, "logprobs"));
  rc = mg_mock__default_content(rq, last.data ? last.data : "", NULL);
out:
  mg_buf_free(&last);
  return rc;
}

static int parse_completions(struct mg_mock_req *rq, const cJSON *body,
                             struct mg_buf *err) {
  const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(body, "prompt");
  const cJSON *lp = cJSON_GetObjectItemCaseSensitive(body, "logprobs");
  const char *last = "";
  size_t chars = 0;

  if (cJSON_IsString(prompt)) {
    last = prompt->valuestring;
    chars = mg_mock__utf8_chars(last);
  } else if (cJSON_IsArray(prompt)) {
    const cJSON *p;
    cJSON_ArrayForEach(p, prompt) {
      if (cJSON_IsString(p)) {
        last = p->valuestring;
        chars += mg_mock__utf8_chars(last);
      } else if (cJSON_IsNumber(p)) {
        chars += 4; /* a token id */
      } else if (!cJSON_IsArray(p)) {
        return mg_mock__set_err(
            err, "prompt must be a string or an array of strings "
                 "or tokens");
      }
    }
  } else if (prompt != NULL) {
    return mg_mock__set_err(err, "prompt must be a string or an array");
  }
  rq->prompt_tokens = mg_mock__prompt_tokens(chars);
  if (cJSON_IsNumber(lp)) {
    rq->logprobs = true;
    /* The legacy API allows at most 5; keep the cast defined anyway. */
    rq->top_logprobs = lp->valuedouble > 0 && lp->valuedouble < 20
                           ? (long)lp->valuedouble
                       : lp->valuedouble >= 20 ? 20
                                               : 0;
  }
  return mg_mock__default_content(rq, last, NULL);
}

static int parse_embeddings(struct mg_mock_req *rq, const cJSON *body,
                            struct mg_buf *err) {
  const cJSON *input = cJSON_GetObjectItemCaseSensitive(body, "input");
  const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(body, "encoding_format");
  const cJSON *it;
  size_t chars = 0;

  /* The OpenAI Node SDK (v4.x) asks for base64 unless told otherwise and
   * decodes it to float32 itself. */
  if (fmt && !cJSON_IsNull(fmt)) {
    if (cJSON_IsString(fmt) && strcmp(fmt->valuestring, "base64") == 0)
      rq->base64 = true;
    else if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "float") != 0)
      return mg_mock__set_err(
          err, "encoding_format must be \"float\" or \"base64\"");
  }
  if ((rq->inputs = cJSON_CreateArray()) == NULL)
    return -ENOMEM;
  if (cJSON_IsString(input)) {
    if (!cJSON_AddItemToArray(rq->inputs,
                              cJSON_CreateString(input->valuestring)))
      return -ENOMEM;
    chars = mg_mock__utf8_chars(input->valuestring);
  } else if (cJSON_IsArray(input) && cJSON_GetArraySize(input) > 0) {
    /* An array of strings, an array of token ids (one input), or an array
     * of arrays of token ids. Token arrays are hashed in their JSON form. */
    bool tokens = cJSON_IsNumber(input->child);
    if (tokens) {
      char *s = cJSON_PrintUnformatted(input);
      if (s == NULL ||
          !cJSON_AddItemToArray(rq->inputs, cJSON_CreateString(s))) {
        free(s);
        return -ENOMEM;
      }
      chars = 4 * (size_t)cJSON_GetArraySize(input);
      free(s);
    } else {
      cJSON_ArrayForEach(it, input) {
        char *s;
        if (cJSON_IsString(it)) {
          s = strdup(it->valuestring);
          if (s)
            chars += mg_mock__utf8_chars(s);
        } else if (cJSON_IsArray(it)) {
          s = cJSON_PrintUnformatted(it);
          chars += 4 * (size_t)cJSON_GetArraySize(it);
        } else {
          return mg_mock__set_err(err, "input must be a string or an array of "
                                       "strings or tokens");
        }
        if (s == NULL ||
            !cJSON_AddItemToArray(rq->inputs, cJSON_CreateString(s))) {
          free(s);
          return -ENOMEM;
        }
        free(s);
      }
    }
  } else {
    return mg_mock__set_err(
        err, "you must provide an input parameter (a string or a "
             "non-empty array)");
  }
  rq->prompt_tokens = mg_mock__prompt_tokens(chars);
  return 0;
}

int mg_mock_req_parse(struct mg_mock_req *rq, enum mg_mock_api api,
                      const cJSON *body, struct mg_buf *err) {
  const cJSON *model, *so;
  int rc = 0;

  memset(rq, 0, sizeof(*rq));
  rq->api = api;
  if (!cJSON_IsObject(body))
    return mg_mock__set_err(err, "the request body must be a JSON object");
  if (api == MG_MOCK_RESPONSES)
    rc = mg_mock__resp_parse(rq, body, err);
  else if (api == MG_MOCK_MESSAGES || api == MG_MOCK_COUNT_TOKENS)
    rc = mg_mock__msg_parse(rq, body, err);
  if (api >= MG_MOCK_RESPONSES) {
    if (rc == 0 && rq->content)
      rq->completion_tokens = mg_mock__count_words(rq->content);
    return rc;
  }
  model = cJSON_GetObjectItemCaseSensitive(body, "model");
  if (!cJSON_IsString(model) || model->valuestring[0] == '\0')
    return mg_mock__set_err(err, "you must provide a model parameter");
  if ((rq->model = strdup(model->valuestring)) == NULL)
    return -ENOMEM;
  rq->stream = api != MG_MOCK_EMBEDDINGS &&
               cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(body, "stream"));
  so = cJSON_GetObjectItemCaseSensitive(body, "stream_options");
  rq->include_usage =
      cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
  switch (api) {
  case MG_MOCK_CHAT:
    rc = parse_chat(rq, body, err);
    break;
  case MG_MOCK_COMPLETIONS:
    rc = parse_completions(rq, body, err);
    break;
  default:
    rc = parse_embeddings(rq, body, err);
    break;
  }
  if (rc == 0 && rq->content)
    rq->completion_tokens = mg_mock__count_words(rq->content);
  return rc;
}

int mg_mock_req_set_content(struct mg_mock_req *rq, const char *content) {
  char *c = strdup(content);
  if (c == NULL)
    return -ENOMEM;
  free(rq->content);
  rq->content = c;
  rq->completion_tokens = mg_mock__count_words(c);
  return 0;
}

void mg_mock_req_clear(struct mg_mock_req *rq) {
  free(rq->model);
  free(rq->content);
  cJSON_Delete(rq->inputs);
  cJSON_Delete(rq->echo);
  cJSON_Delete(rq->items);
  free(rq->previous_id);
  memset(rq, 0, sizeof(*rq));
}

/* ---- building JSON ------------------------------------------------------ */

int mg_mock__emit(cJSON *root, struct mg_buf *out) {
  char *s;
  int rc;
  if (root == NULL)
    return -ENOMEM;
  s = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  if (s == NULL)
    return -ENOMEM;
  rc = mg_buf_puts(out, s);
  free(s);
  return rc;
}

cJSON *mg_mock__add(struct mg_mock__jb *j, cJSON *parent, const char *key,
                    cJSON *item) {
  if (item == NULL || parent == NULL) {
    cJSON_Delete(item);
    j->oom = true;
    return NULL;
  }
  if (key ? !cJSON_AddItemToObject(parent, key, item)
          : !cJSON_AddItemToArray(parent, item)) {
    cJSON_Delete(item);
    j->oom = true;
    return NULL;
  }
  return item;
}

static cJSON *str_n(const char *s, size_t n) {
  char *t = malloc(n + 1);
  cJSON *v;
  if (t == NULL)
    return NULL;
  memcpy(t, s, n);
  t[n] = '\0';
  v = cJSON_CreateString(t);
  free(t);
  return v;
}

int mg_mock__split_words(const char *s, size_t **wstart, size_t **wend,
                         long *nwords) {
  long n = mg_mock__count_words(s), k = 0;
  size_t i = 0;
  *wstart = calloc((size_t)n + 1, sizeof(size_t));
  *wend = calloc((size_t)n + 1, sizeof(size_t));
  *nwords = n;
  if (*wstart == NULL || *wend == NULL)
    return -ENOMEM;
  while (s[i] && k < n) {
    while (s[i] && is_space((unsigned char)s[i]))
      i++;
    (*wstart)[k] = i;
    while (s[i] && !is_space((unsigned char)s[i]))
      i++;
    (*wend)[k++] = i;
  }
  return 0;
}

cJSON *mg_mock__token_logprobs(struct mg_mock__jb *j, const char *text,
                               const size_t *wstart, const size_t *wend,
                               long from, long to, double lp) {
  cJSON *arr = cJSON_CreateArray();
  long w;
  for (w = from; w < to && arr; w++) {
    cJSON *e = mg_mock__add(j, arr, NULL, cJSON_CreateObject()), *bytes;
    size_t b;
    mg_mock__add(j, e, "token", str_n(text + wstart[w], wend[w] - wstart[w]));
    mg_mock__add(j, e, "logprob", cJSON_CreateNumber(lp));
    bytes = mg_mock__add(j, e, "bytes", cJSON_CreateArray());
    for (b = wstart[w]; b < wend[w] && bytes; b++)
      mg_mock__add(j, bytes, NULL, cJSON_CreateNumber((unsigned char)text[b]));
    mg_mock__add(j, e, "top_logprobs", cJSON_CreateArray());
  }
  return arr;
}

/* Chat logprobs for words [from, to): {"content":[...]} */
static cJSON *chat_logprobs(struct mg_mock__jb *j, const char *text,
                            const size_t *wstart, const size_t *wend, long from,
                            long to, double lp) {
  cJSON *o = cJSON_CreateObject();
  mg_mock__add(j, o, "content",
               mg_mock__token_logprobs(j, text, wstart, wend, from, to, lp));
  return o;
}

/* Legacy completions logprobs: {"tokens", "token_logprobs", "top_logprobs",
 * "text_offset"}. */
static cJSON *legacy_logprobs(struct mg_mock__jb *j, const char *text,
                              const size_t *wstart, const size_t *wend,
                              long from, long to, double lp, long top,
                              size_t base_offset) {
  cJSON *o = cJSON_CreateObject(), *toks, *lps, *tops, *offs;
  long w;
  toks = mg_mock__add(j, o, "tokens", cJSON_CreateArray());
  lps = mg_mock__add(j, o, "token_logprobs", cJSON_CreateArray());
  tops = mg_mock__add(j, o, "top_logprobs",
                      top > 0 ? cJSON_CreateArray() : cJSON_CreateNull());
  offs = mg_mock__add(j, o, "text_offset", cJSON_CreateArray());
  if (j->oom)
    return o;
  for (w = from; w < to; w++) {
    mg_mock__add(j, toks, NULL, str_n(text + wstart[w], wend[w] - wstart[w]));
    mg_mock__add(j, lps, NULL, cJSON_CreateNumber(lp));
    mg_mock__add(j, offs, NULL,
                 cJSON_CreateNumber((double)(base_offset + wstart[w])));
    if (top > 0) {
      cJSON *t = mg_mock__add(j, tops, NULL, cJSON_CreateObject());
      char *tok = strndup(text + wstart[w], wend[w] - wstart[w]);
      if (tok == NULL)
        j->oom = true;
      else
        mg_mock__add(j, t, tok, cJSON_CreateNumber(lp));
      free(tok);
    }
  }
  return o;
}

/* Chat and completions usage. A behaviour's cache_read tokens are part of
 * the prompt (OpenAI counts cached tokens inside prompt_tokens) and its
 * reasoning tokens part of the completion; their details appear only when
 * set, so the default answer keeps its historical shape. */
static cJSON *usage(struct mg_mock__jb *j, const struct mg_mock_req *rq,
                    bool compl, long cache_read, long reasoning) {
  cJSON *u = cJSON_CreateObject();
  long prompt = rq->prompt_tokens + (compl ? cache_read : 0);
  long completion = rq->completion_tokens + reasoning;
  mg_mock__add(j, u, "prompt_tokens", cJSON_CreateNumber((double)prompt));
  if (compl )
    mg_mock__add(j, u, "completion_tokens",
                 cJSON_CreateNumber((double)completion));
  mg_mock__add(j, u, "total_tokens",
               cJSON_CreateNumber((double)(prompt + (compl ? completion : 0))));
  if (compl &&cache_read > 0) {
    cJSON *d =
        mg_mock__add(j, u, "prompt_tokens_details", cJSON_CreateObject());
    mg_mock__add(j, d, "cached_tokens", cJSON_CreateNumber((double)cache_read));
  }
  if (compl &&reasoning > 0) {
    cJSON *d =
        mg_mock__add(j, u, "completion_tokens_details", cJSON_CreateObject());
    mg_mock__add(j, d, "reasoning_tokens",
                 cJSON_CreateNumber((double)reasoning));
  }
  return u;
}

static void id_str(char *out, size_t n, const struct mg_mock_req *rq,
                   unsigned long id) {
  snprintf(out, n, "%s-mock-%lu", rq->api == MG_MOCK_CHAT ? "chatcmpl" : "cmpl",
           id);
}

#define EMBEDDING_DIMS 8

/* Eight floats in [-1, 1] from the model and the input text: a JSON array,
 * or (base64) what OpenAI sends for encoding_format "base64": the
 * little-endian float32 values, base64-encoded. */
static cJSON *embedding(struct mg_mock__jb *j, const char *model,
                        const char *text, bool base64) {
  static const char b64[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  unsigned char raw[EMBEDDING_DIMS * 4];
  char enc[(sizeof(raw) + 2) / 3 * 4 + 1], *o = enc;
  double vals[EMBEDDING_DIMS];
  uint64_t seed = mg_hash64(model, strlen(model));
  cJSON *arr;
  size_t i;
  int k;

  for (k = 0; k < EMBEDDING_DIMS; k++) {
    uint64_t h = mg_xxh64(text, strlen(text), seed + (uint64_t)k);
    double v = (double)(h >> 11) / 9007199254740992.0 * 2.0 - 1.0;
    vals[k] = round(v * 1e6) / 1e6;
  }
  if (!base64) {
    arr = cJSON_CreateArray();
    for (k = 0; k < EMBEDDING_DIMS && arr; k++)
      mg_mock__add(j, arr, NULL, cJSON_CreateNumber(vals[k]));
    return arr;
  }
  for (k = 0; k < EMBEDDING_DIMS; k++) {
    float f = (float)vals[k];
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    for (i = 0; i < 4; i++)
      raw[k * 4 + (int)i] = (unsigned char)(u >> (8 * i));
  }
  for (i = 0; i < sizeof(raw); i += 3) {
    size_t left = sizeof(raw) - i;
    uint32_t w = (uint32_t)raw[i] << 16 |
                 (left > 1 ? (uint32_t)raw[i + 1] << 8 : 0) |
                 (left > 2 ? (uint32_t)raw[i + 2] : 0);
    *o++ = b64[w >> 18 & 63];
    *o++ = b64[w >> 12 & 63];
    *o++ = left > 1 ? b64[w >> 6 & 63] : '=';
    *o++ = left > 2 ? b64[w & 63] : '=';
  }
  *o = '\0';
  return cJSON_CreateString(enc);
}

int mg_mock_answer(const struct mg_mock_req *rq, const struct mg_mock_bhv *b,
                   unsigned long id, struct mg_buf *out) {
  struct mg_mock__jb j = {false};
  cJSON *root, *choices, *c;
  size_t *wstart = NULL, *wend = NULL;
  long nwords = 0;
  double confidence = b->confidence;
  char idbuf[64];
  int rc;

  if (rq->api == MG_MOCK_RESPONSES)
    return mg_mock__emit(mg_mock__resp_object(rq, b->confidence, b->cache_read,
                                              b->reasoning_tokens,
                                              (long)time(NULL), true),
                         out);
  if (rq->api == MG_MOCK_MESSAGES || rq->api == MG_MOCK_COUNT_TOKENS)
    return mg_mock__msg_answer(rq, b, out);
  root = cJSON_CreateObject();
  if (rq->api == MG_MOCK_EMBEDDINGS) {
    cJSON *data, *in;
    int i = 0;
    mg_mock__add(&j, root, "object", cJSON_CreateString("list"));
    data = mg_mock__add(&j, root, "data", cJSON_CreateArray());
    cJSON_ArrayForEach(in, rq->inputs) {
      cJSON *e = mg_mock__add(&j, data, NULL, cJSON_CreateObject());
      mg_mock__add(&j, e, "object", cJSON_CreateString("embedding"));
      mg_mock__add(&j, e, "index", cJSON_CreateNumber(i++));
      mg_mock__add(&j, e, "embedding",
                   embedding(&j, rq->model, in->valuestring, rq->base64));
    }
    mg_mock__add(&j, root, "model", cJSON_CreateString(rq->model));
    mg_mock__add(&j, root, "usage", usage(&j, rq, false, 0, 0));
    goto out;
  }
  if (rq->logprobs &&
      mg_mock__split_words(rq->content, &wstart, &wend, &nwords) != 0) {
    j.oom = true;
    goto out;
  }
  id_str(idbuf, sizeof(idbuf), rq, id);
  mg_mock__add(&j, root, "id", cJSON_CreateString(idbuf));
  mg_mock__add(&j, root, "object",
               cJSON_CreateString(rq->api == MG_MOCK_CHAT ? "chat.completion"
                                                          : "text_completion"));
  mg_mock__add(&j, root, "created", cJSON_CreateNumber((double)time(NULL)));
  mg_mock__add(&j, root, "model", cJSON_CreateString(rq->model));
  choices = mg_mock__add(&j, root, "choices", cJSON_CreateArray());
  c = mg_mock__add(&j, choices, NULL, cJSON_CreateObject());
  if (rq->api == MG_MOCK_CHAT) {
    cJSON *msg;
    mg_mock__add(&j, c, "index", cJSON_CreateNumber(0));
    msg = mg_mock__add(&j, c, "message", cJSON_CreateObject());
    mg_mock__add(&j, msg, "role", cJSON_CreateString("assistant"));
    mg_mock__add(&j, msg, "content", cJSON_CreateString(rq->content));
    mg_mock__add(&j, c, "logprobs",
                 rq->logprobs ? chat_logprobs(&j, rq->content, wstart, wend, 0,
                                              nwords, log(confidence))
                              : cJSON_CreateNull());
  } else {
    mg_mock__add(&j, c, "text", cJSON_CreateString(rq->content));
    mg_mock__add(&j, c, "index", cJSON_CreateNumber(0));
    mg_mock__add(&j, c, "logprobs",
                 rq->logprobs
                     ? legacy_logprobs(&j, rq->content, wstart, wend, 0, nwords,
                                       log(confidence), rq->top_logprobs, 0)
                     : cJSON_CreateNull());
  }
  mg_mock__add(&j, c, "finish_reason", cJSON_CreateString("stop"));
  mg_mock__add(&j, root, "usage",
               usage(&j, rq, true, b->cache_read, b->reasoning_tokens));
out:
  free(wstart);
  free(wend);
  if (j.oom) {
    cJSON_Delete(root);
    return -ENOMEM;
  }
  rc = mg_mock__emit(root, out);
  return rc;
}

int mg_mock_error_body(struct mg_buf *out, const char *type, const char *msg) {
  return mg_mock_error_body_full(out, type, msg, NULL, NULL);
}

int mg_mock_error_body_full(struct mg_buf *out, const char *type,
                            const char *msg, const char *param,
                            const char *code) {
  struct mg_mock__jb j = {false};
  cJSON *root = cJSON_CreateObject(), *e;
  e = mg_mock__add(&j, root, "error", cJSON_CreateObject());
  mg_mock__add(&j, e, "message", cJSON_CreateString(msg));
  mg_mock__add(&j, e, "type", cJSON_CreateString(type));
  mg_mock__add(&j, e, "param",
               param ? cJSON_CreateString(param) : cJSON_CreateNull());
  mg_mock__add(&j, e, "code",
               code ? cJSON_CreateString(code) : cJSON_CreateNull());
  if (j.oom) {
    cJSON_Delete(root);
    return -ENOMEM;
  }
  return mg_mock__emit(root, out);
}

/* ---- streams ------------------------------------------------------------ */

int mg_mock_stream_init(struct mg_mock_stream *s, const struct mg_mock_req *rq,
                        const struct mg_mock_bhv *b, unsigned long id) {
  long fixed;

  memset(s, 0, sizeof(*s));
  s->rq = rq;
  s->id = id;
  s->created = (long)time(NULL);
  s->logprob = log(b->confidence);
  s->chunk_bytes = b->chunk_bytes;
  s->chunks = b->chunks < 1 ? 1 : b->chunks;
  s->cache_read = b->cache_read;
  s->cache_write = b->cache_write;
  s->reasoning_tokens = b->reasoning_tokens;
  if (mg_mock__split_words(rq->content, &s->wstart, &s->wend, &s->nwords))
    return -ENOMEM;
  if (rq->api == MG_MOCK_RESPONSES)
    return mg_mock__resp_stream_init(s, b->confidence);
  if (rq->api == MG_MOCK_MESSAGES)
    return mg_mock__msg_stream_init(s);
  s->events = s->chunks + (rq->include_usage ? 1 : 0) + 1;
  /* Chat: a role event, the content pieces, a finish event. Completions:
   * the pieces, then the finish event. With too few events to hold them
   * all, the first and last ones double up. */
  fixed = rq->api == MG_MOCK_CHAT ? 2 : 1;
  if (s->chunks > fixed) {
    s->first_piece = rq->api == MG_MOCK_CHAT ? 1 : 0;
    s->pieces = s->chunks - fixed;
  } else {
    s->first_piece = 0;
    s->pieces = 1;
  }
  return 0;
}

void mg_mock_stream_clear(struct mg_mock_stream *s) {
  free(s->wstart);
  free(s->wend);
  cJSON_Delete(s->final);
  memset(s, 0, sizeof(*s));
}

long mg_mock_stream_events(const struct mg_mock_stream *s) { return s->events; }

/* Piece k covers words [k*W/K, (k+1)*W/K), from the start of its first word
 * to the start of the next piece's: the pieces concatenate to the content
 * exactly. */
static long piece_word(const struct mg_mock_stream *s, long k) {
  return (long)((long long)k * s->nwords / s->pieces);
}

static size_t word_off(const struct mg_mock_stream *s, long w) {
  return w < s->nwords ? s->wstart[w] : strlen(s->rq->content);
}

char *mg_mock__piece(const struct mg_mock_stream *s, long k, long *w0,
                     long *w1) {
  const char *text = s->rq->content;
  size_t b0, b1;
  struct mg_buf pad;
  char *p;

  *w0 = piece_word(s, k);
  *w1 = piece_word(s, k + 1);
  b0 = k == 0 ? 0 : word_off(s, *w0);
  b1 = k == s->pieces - 1 ? strlen(text) : word_off(s, *w1);
  mg_buf_init(&pad, SIZE_MAX / 2);
  if (mg_buf_append(&pad, text + b0, b1 - b0))
    goto oom;
  /* chunk_bytes pads with spaces: large events without changing the words
   * (nor the logprobs). */
  while (pad.len < (size_t)s->chunk_bytes)
    if (mg_buf_append(&pad, " ", 1))
      goto oom;
  p = pad.data ? mg_buf_steal(&pad, NULL) : strdup("");
  mg_buf_free(&pad);
  return p;
oom:
  mg_buf_free(&pad);
  return NULL;
}

int mg_mock_stream_event(const struct mg_mock_stream *s, long i,
                         struct mg_buf *out) {
  const struct mg_mock_req *rq = s->rq;
  const char *text = rq->content;
  struct mg_mock__jb j = {false};
  cJSON *root, *choices, *c;
  bool chat = rq->api == MG_MOCK_CHAT;
  bool has_piece, finish;
  long k = i - s->first_piece;
  char idbuf[64];
  int rc;

  if (rq->api == MG_MOCK_RESPONSES)
    return mg_mock__resp_event(s, i, out);
  if (rq->api == MG_MOCK_MESSAGES)
    return mg_mock__msg_event(s, i, out);
  if (i >= s->chunks + (rq->include_usage ? 1 : 0))
    return mg_buf_puts(out, "data: [DONE]\n\n");
  root = cJSON_CreateObject();
  id_str(idbuf, sizeof(idbuf), rq, s->id);
  mg_mock__add(&j, root, "id", cJSON_CreateString(idbuf));
  mg_mock__add(
      &j, root, "object",
      cJSON_CreateString(chat ? "chat.completion.chunk" : "text_completion"));
  mg_mock__add(&j, root, "created", cJSON_CreateNumber((double)s->created));
  mg_mock__add(&j, root, "model", cJSON_CreateString(rq->model));
  choices = mg_mock__add(&j, root, "choices", cJSON_CreateArray());
  if (i >= s->chunks) {
    /* The usage chunk has no choices (stream_options.include_usage). */
    mg_mock__add(&j, root, "usage",
                 usage(&j, rq, true, s->cache_read, s->reasoning_tokens));
    goto out;
  }
  has_piece = k >= 0 && k < s->pieces;
  finish = i == s->chunks - 1;
  c = mg_mock__add(&j, choices, NULL, cJSON_CreateObject());
  if (chat)
    mg_mock__add(&j, c, "index", cJSON_CreateNumber(0));
  {
    long w0 = 0, w1 = 0;
    cJSON *piece = NULL, *delta = NULL;

    if (has_piece) {
      char *p = mg_mock__piece(s, k, &w0, &w1);
      if (p == NULL)
        j.oom = true;
      else
        piece = cJSON_CreateString(p);
      free(p);
    }
    if (chat) {
      delta = mg_mock__add(&j, c, "delta", cJSON_CreateObject());
      if (i == 0)
        mg_mock__add(&j, delta, "role", cJSON_CreateString("assistant"));
      if (piece)
        mg_mock__add(&j, delta, "content", piece);
      else if (i == 0)
        mg_mock__add(&j, delta, "content", cJSON_CreateString(""));
    } else {
      mg_mock__add(&j, c, "text", piece ? piece : cJSON_CreateString(""));
      mg_mock__add(&j, c, "index", cJSON_CreateNumber(0));
    }
    if (rq->logprobs && has_piece)
      mg_mock__add(
          &j, c, "logprobs",
          chat ? chat_logprobs(&j, text, s->wstart, s->wend, w0, w1, s->logprob)
               : legacy_logprobs(&j, text, s->wstart, s->wend, w0, w1,
                                 s->logprob, rq->top_logprobs, 0));
    else
      mg_mock__add(&j, c, "logprobs", cJSON_CreateNull());
  }
  mg_mock__add(&j, c, "finish_reason",
               finish ? cJSON_CreateString("stop") : cJSON_CreateNull());
  if (rq->include_usage)
    mg_mock__add(&j, root, "usage", cJSON_CreateNull());
out:
  if (j.oom) {
    cJSON_Delete(root);
    return -ENOMEM;
  }
  if ((rc = mg_buf_puts(out, "data: ")) || (rc = mg_mock__emit(root, out)) ||
      (rc = mg_buf_puts(out, "\n\n")))
    return rc;
  return 0;
}
