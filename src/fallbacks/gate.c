/* gate.c - the confidence gate: read a confidence from token logprobs, a
 * header or a JSON field of the answer, and rewrite bodies so the upstream
 * sends logprobs the client never sees.
 *
 * Everything works on the token array of a body scanned once
 * (common/json.h): values are read by token and rewrites splice bytes by
 * token offsets, so whatever is not rewritten stays byte for byte. */
#include "fallbacks/gate.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A number in a header or a JSON string: "0.8", " -1e-3 ". Longer text is
 * not a confidence. */
#define NUM_TEXT_MAX 64

static inline bool is_type(const struct mg_json_doc *d, uint32_t i,
                           enum mg_json_type t) {
  return i < d->n && d->toks[i].type == t;
}

/* The first choice of an answer or a stream chunk: the element of
 * `choices` whose "index" is 0. A chunk of an n > 1 stream may carry
 * another choice alone, so position 0 is not enough; an element without a
 * numeric index counts by its position. */
static uint32_t first_choice(const struct mg_json_doc *d) {
  uint32_t ch, i, k;

  if (!is_type(d, 0, MG_JSON_OBJECT))
    return MG_JSON_NOTFOUND;
  ch = mg_json_getc(d, 0, "choices");
  if (!is_type(d, ch, MG_JSON_ARRAY))
    return MG_JSON_NOTFOUND;
  for (k = 0, i = ch + 1; k < d->toks[ch].count; k++, i = d->toks[i].next) {
    double idx;
    if (d->toks[i].type != MG_JSON_OBJECT)
      continue;
    if (mg_json_num(d, mg_json_getc(d, i, "index"), &idx) != 0) {
      if (k == 0)
        return i;
      continue;
    }
    if (idx == 0)
      return i;
  }
  return MG_JSON_NOTFOUND;
}

#if FLT_EVAL_METHOD == 0
/* Read the JSON number p[0..e) when that is exact, else return false.
 * Logprobs are short decimals ("-0.0021447763", "-1.98e-06") and strtod
 * costs more than everything else the gate does. A mantissa below 2^53 and
 * a power of ten up to 1e22 are both exact doubles, and one IEEE division
 * or multiplication of them rounds correctly, as strtod does (Clinger's
 * fast path; it needs FLT_EVAL_METHOD 0, or the operation rounds twice). */
static bool fast_num(const char *p, const char *e, double *out) {
  static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,
                                 1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17,
                                 1e18, 1e19, 1e20, 1e21, 1e22};
  uint64_t m = 0;
  long exp10 = 0, x = 0;
  bool neg, xneg = false;
  double v;

  /* The scanner checked the grammar: -?int(.frac)?([eE][+-]?digits)? */
  neg = *p == '-';
  p += neg;
  for (; p < e && *p >= '0' && *p <= '9'; p++) {
    m = m * 10 + (uint64_t)(*p - '0');
    if (m >= (1ull << 53))
      return false;
  }
  if (p < e && *p == '.')
    for (p++; p < e && *p >= '0' && *p <= '9'; p++) {
      m = m * 10 + (uint64_t)(*p - '0');
      exp10--;
      if (m >= (1ull << 53))
        return false;
    }
  if (p < e) { /* 'e' or 'E' */
    p++;
    if (*p == '+' || *p == '-')
      xneg = *p++ == '-';
    for (; p < e; p++) {
      x = x * 10 + (*p - '0');
      if (x > 1000)
        return false;
    }
    exp10 += xneg ? -x : x;
  }
  if (exp10 < -22 || exp10 > 22)
    return false;
  v = exp10 < 0 ? (double)m / pow10[-exp10] : (double)m * pow10[exp10];
  *out = neg ? -v : v;
  return true;
}
#endif

/* The number at index i as a double (0), or -EINVAL. */
static int num(const struct mg_json_doc *d, uint32_t i, double *out) {
  if (!is_type(d, i, MG_JSON_NUMBER))
    return -EINVAL;
#if FLT_EVAL_METHOD == 0
  if (fast_num(d->src + d->toks[i].start, d->src + d->toks[i].end, out))
    return 0;
#endif
  return mg_json_num(d, i, out);
}

static void acc_add(struct mg_gate_acc *a, double lp) {
  /* A log probability is at most 0. A larger value is an upstream's
   * rounding or bug and must not lift the confidence above 1. */
  if (!(lp <= 0))
    lp = 0;
  a->sum += lp;
  if (a->n == 0 || lp < a->min)
    a->min = lp;
  a->n++;
}

/* Add the token logprobs of one choice (of an answer or of a chunk):
 * logprobs.content[].logprob (chat) or logprobs.token_logprobs[] (legacy
 * completions, whose first token may be null). Anything else is skipped. */
static void acc_choice(struct mg_gate_acc *a, const struct mg_json_doc *d,
                       uint32_t choice) {
  uint32_t lp = mg_json_getc(d, choice, "logprobs"), arr, i, k;
  double v;

  if (!is_type(d, lp, MG_JSON_OBJECT))
    return;
  arr = mg_json_getc(d, lp, "content");
  if (is_type(d, arr, MG_JSON_ARRAY)) {
    for (k = 0, i = arr + 1; k < d->toks[arr].count;
         k++, i = d->toks[i].next)
      if (d->toks[i].type == MG_JSON_OBJECT &&
          num(d, mg_json_getc(d, i, "logprob"), &v) == 0)
        acc_add(a, v);
    return;
  }
  arr = mg_json_getc(d, lp, "token_logprobs");
  if (!is_type(d, arr, MG_JSON_ARRAY))
    return;
  for (k = 0, i = arr + 1; k < d->toks[arr].count; k++, i = d->toks[i].next)
    if (num(d, i, &v) == 0)
      acc_add(a, v);
}

/* A finite decimal number filling p[0..n) but for surrounding blanks.
 * strtod alone would also take "inf", "nan" and hex floats. */
static int parse_number(const char *p, size_t n, double *out) {
  char buf[NUM_TEXT_MAX];
  char *end;
  double v;
  size_t i;

  while (n > 0 && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) {
    p++;
    n--;
  }
  while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r' ||
                   p[n - 1] == '\n'))
    n--;
  if (n == 0 || n >= sizeof(buf))
    return -ENOENT;
  for (i = 0; i < n; i++) {
    char c = p[i];
    if (!((c >= '0' && c <= '9') || c == '.' || c == '-' || c == '+' ||
          c == 'e' || c == 'E'))
      return -ENOENT;
  }
  memcpy(buf, p, n);
  buf[n] = '\0';
  v = strtod(buf, &end);
  if (end != buf + n || !isfinite(v))
    return -ENOENT;
  *out = v;
  return 0;
}

/* The value at index i as a confidence: a finite number, or a string that
 * holds one ("0.8"). */
static int conf_value(const struct mg_json_doc *d, uint32_t i, double *out) {
  double v;

  if (is_type(d, i, MG_JSON_NUMBER)) {
    if (mg_json_num(d, i, &v) != 0 || !isfinite(v))
      return -ENOENT;
    *out = v;
    return 0;
  }
  if (is_type(d, i, MG_JSON_STRING)) {
    struct mg_str s = mg_json_str_raw(d, i);
    struct mg_buf b;
    int rc;

    if (!d->toks[i].escaped)
      return parse_number(s.p, s.len, out);
    mg_buf_init(&b, NUM_TEXT_MAX);
    rc = mg_json_str_decode(d, i, &b) == 0 && b.data
             ? parse_number(b.data, b.len, out)
             : -ENOENT;
    mg_buf_free(&b);
    return rc;
  }
  return -ENOENT;
}

uint32_t mg_gate_choice_text(const struct mg_json_doc *d) {
  uint32_t c = first_choice(d), msg;
  if (c == MG_JSON_NOTFOUND)
    return MG_JSON_NOTFOUND;
  msg = mg_json_getc(d, c, "message");
  return is_type(d, msg, MG_JSON_OBJECT) ? mg_json_getc(d, msg, "content")
                                         : mg_json_getc(d, c, "text");
}

/* json:<pointer>: the response itself first, then the answer's text
 * parsed as JSON - a model asked to answer {"answer": ...,
 * "confidence": 0.8}. */
int mg_gate_json_confidence(const char *ptr, const struct mg_json_doc *d,
                            uint32_t content, double *out) {
  struct mg_json_doc sub;
  struct mg_buf tmp;
  struct mg_str s;
  int rc = -ENOENT;

  if (ptr == NULL || d == NULL)
    return -ENOENT;
  if (d->n > 0 && conf_value(d, mg_json_pointer(d, 0, ptr), out) == 0)
    return 0;
  if (!is_type(d, content, MG_JSON_STRING))
    return -ENOENT;

  s = mg_json_str_raw(d, content);
  /* Decoding never lengthens a string. */
  mg_buf_init(&tmp, s.len);
  mg_json_init(&sub, d->max_tokens);
  if (d->toks[content].escaped) {
    if (mg_json_str_decode(d, content, &tmp) != 0 || tmp.data == NULL)
      goto out;
    s.p = tmp.data;
    s.len = tmp.len;
  }
  if (mg_json_parse(&sub, s.p, s.len, NULL) == 0)
    rc = conf_value(&sub, mg_json_pointer(&sub, 0, ptr), out);
out:
  mg_json_free(&sub);
  mg_buf_free(&tmp);
  return rc;
}

int mg_gate_confidence(const struct mg_gate_cfg *g, const struct mg_json_doc *doc,
                       const char *header_value, double *conf) {
  struct mg_gate_acc a;
  uint32_t c;

  switch (g->source) {
  case MG_CONF_LOGPROBS_MEAN:
  case MG_CONF_LOGPROBS_MIN:
    if (doc == NULL)
      return -ENOENT;
    mg_gate_acc_init(&a);
    c = first_choice(doc);
    if (c != MG_JSON_NOTFOUND)
      acc_choice(&a, doc, c);
    return mg_gate_acc_confidence(&a, g->source, conf);
  case MG_CONF_HEADER:
    if (header_value == NULL)
      return -ENOENT;
    return parse_number(header_value, strlen(header_value), conf);
  case MG_CONF_JSON:
    if (doc == NULL)
      return -ENOENT;
    return mg_gate_json_confidence(g->pointer, doc, mg_gate_choice_text(doc),
                                   conf);
  }
  return -EINVAL;
}

void mg_gate_acc_init(struct mg_gate_acc *a) {
  a->sum = 0;
  a->min = 0;
  a->n = 0;
}

void mg_gate_acc_event(struct mg_gate_acc *a, const char *data, size_t len,
                       struct mg_json_doc *scratch) {
  uint32_t c;

  /* A malformed event is not the gate's business: the stream relay
   * decides what a broken upstream means. */
  if (mg_json_parse(scratch, data, len, NULL) != 0)
    return;
  c = first_choice(scratch);
  if (c != MG_JSON_NOTFOUND)
    acc_choice(a, scratch, c);
}

void mg_gate_acc_chunk(struct mg_gate_acc *a, const struct mg_json_doc *doc) {
  uint32_t c = first_choice(doc);
  if (c != MG_JSON_NOTFOUND)
    acc_choice(a, doc, c);
}

void mg_gate_acc_add_tok(struct mg_gate_acc *a, const struct mg_json_doc *doc,
                         uint32_t i) {
  double v;
  if (num(doc, i, &v) == 0)
    acc_add(a, v);
}

int mg_gate_acc_confidence(const struct mg_gate_acc *a,
                           enum mg_conf_source source, double *conf) {
  if (source != MG_CONF_LOGPROBS_MEAN && source != MG_CONF_LOGPROBS_MIN)
    return -EINVAL;
  if (a->n == 0)
    return -ENOENT;
  *conf = exp(source == MG_CONF_LOGPROBS_MEAN ? a->sum / (double)a->n
                                              : a->min);
  return 0;
}

/* Append src[*pos..at), then the replacement, and continue after end. */
static int splice(struct mg_buf *out, const char *src, size_t *pos, size_t at,
                  size_t end, const char *with) {
  int rc;
  if ((rc = mg_buf_append(out, src + *pos, at - *pos)) != 0 ||
      (rc = mg_buf_puts(out, with)) != 0)
    return rc;
  *pos = end;
  return 0;
}

int mg_gate_strip_logprobs(const struct mg_json_doc *doc, struct mg_buf *out) {
  const char *src = doc->src;
  size_t start = out->len, pos = 0;
  uint32_t ch, i, k;
  int rc = 0;

  if (!is_type(doc, 0, MG_JSON_OBJECT))
    goto rest;
  ch = mg_json_getc(doc, 0, "choices");
  if (!is_type(doc, ch, MG_JSON_ARRAY))
    goto rest;
  for (k = 0, i = ch + 1; k < doc->toks[ch].count;
       k++, i = doc->toks[i].next) {
    uint32_t m, key;
    if (doc->toks[i].type != MG_JSON_OBJECT)
      continue;
    /* Every "logprobs" member, duplicates included: parsers differ on
     * which duplicate wins, and none may leak. */
    for (m = 0, key = i + 1; m < doc->toks[i].count;
         m++, key = doc->toks[key + 1].next) {
      const struct mg_json_tok *v = &doc->toks[key + 1];
      if (v->type == MG_JSON_NULL ||
          !mg_json_str_eq(doc, key, "logprobs", 8))
        continue;
      if ((rc = splice(out, src, &pos, v->start, v->end, "null")) != 0)
        goto fail;
    }
  }
rest:
  /* A document that was never scanned has no bytes (src is NULL). */
  if (src != NULL &&
      (rc = mg_buf_append(out, src + pos, doc->len - pos)) != 0)
    goto fail;
  return 0;
fail:
  mg_buf_truncate(out, start);
  return rc;
}

int mg_gate_ask_logprobs(const struct mg_json_doc *req, bool chat,
                         struct mg_buf *out) {
  const char *value = chat ? "true" : "1";
  const struct mg_json_tok *root;
  size_t start = out->len, pos = 0;
  uint32_t m, key;
  bool found = false;
  int rc = 0;

  if (!is_type(req, 0, MG_JSON_OBJECT))
    return -EINVAL;
  root = &req->toks[0];
  for (m = 0, key = 1; m < root->count; m++, key = req->toks[key + 1].next)
    if (mg_json_str_eq(req, key, "logprobs", 8))
      found = true;

  if (!found) {
    /* First member, so the rest of the object follows unchanged; an
     * empty object gets no separating comma. */
    if ((rc = mg_buf_append(out, req->src, root->start + 1)) != 0 ||
        (rc = mg_buf_puts(out, "\"logprobs\":")) != 0 ||
        (rc = mg_buf_puts(out, value)) != 0 ||
        (root->count > 0 && (rc = mg_buf_append(out, ",", 1)) != 0))
      goto fail;
    pos = root->start + 1;
  } else {
    for (m = 0, key = 1; m < root->count;
         m++, key = req->toks[key + 1].next) {
      const struct mg_json_tok *v = &req->toks[key + 1];
      if (mg_json_str_eq(req, key, "logprobs", 8) &&
          (rc = splice(out, req->src, &pos, v->start, v->end, value)) != 0)
        goto fail;
    }
  }
  if ((rc = mg_buf_append(out, req->src + pos, req->len - pos)) != 0)
    goto fail;
  return 0;
fail:
  mg_buf_truncate(out, start);
  return rc;
}

/* An HTTP field name: one or more tchar (RFC 9110, 5.1 and 5.6.2). */
static bool valid_header_name(const char *s) {
  static const char extra[] = "!#$%&'*+-.^_`|~";
  if (*s == '\0')
    return false;
  for (; *s; s++) {
    char c = *s;
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
          (c >= 'A' && c <= 'Z') || strchr(extra, c) != NULL))
      return false;
  }
  return true;
}

/* An RFC 6901 pointer: "" or "/..." where every '~' is "~0" or "~1". */
static bool valid_pointer(const char *s) {
  if (*s != '\0' && *s != '/')
    return false;
  for (; *s; s++)
    if (*s == '~' && s[1] != '0' && s[1] != '1')
      return false;
  return true;
}

int mg_gate_parse_source(struct mg_gate_cfg *g, const char *s) {
  enum mg_conf_source src;
  char *header = NULL, *pointer = NULL;

  if (s == NULL)
    return -EINVAL;
  if (strcmp(s, "logprobs_mean") == 0) {
    src = MG_CONF_LOGPROBS_MEAN;
  } else if (strcmp(s, "logprobs_min") == 0) {
    src = MG_CONF_LOGPROBS_MIN;
  } else if (strncmp(s, "header:", 7) == 0) {
    if (!valid_header_name(s + 7))
      return -EINVAL;
    if ((header = strdup(s + 7)) == NULL)
      return -ENOMEM;
    src = MG_CONF_HEADER;
  } else if (strncmp(s, "json:", 5) == 0) {
    if (!valid_pointer(s + 5))
      return -EINVAL;
    if ((pointer = strdup(s + 5)) == NULL)
      return -ENOMEM;
    src = MG_CONF_JSON;
  } else {
    return -EINVAL;
  }
  free(g->header);
  free(g->pointer);
  g->header = header;
  g->pointer = pointer;
  g->source = src;
  return 0;
}
