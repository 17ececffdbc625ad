/* behaviour.c - the table of behaviours set through /_mock/behaviour.
 *
 * Every model has a base behaviour (until replaced) and a queue of
 * behaviours that apply to a counted number of requests (`times`). A request
 * uses the head of its model's queue, else the model's base, else the same
 * for "*", else "ok". Posting a behaviour without `times` replaces the
 * model's base and drops its queue; posting one with `times` queues it, so
 * "fail twice then succeed" is one call and two queued calls run in the
 * order they were posted. */
#include "mock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/cfg.h"

struct mg_mock_entry {
  char *model; /* owned */
  bool has_base;
  struct mg_mock_bhv base;   /* owns its strings */
  struct mg_mock_bhv *queue; /* owned list, consumed from the head */
  struct mg_mock_entry *next;
};

static const char *const mode_names[] = {
    "ok",       "slow",           "status",     "hang",  "reset", "garbage",
    "truncate", "low_confidence", "stream_die", "close", "raw",   NULL};

const char *mg_mock_mode_name(enum mg_mock_mode m) { return mode_names[m]; }

void mg_mock_bhv_default(struct mg_mock_bhv *b) {
  memset(b, 0, sizeof(*b));
  b->mode = MG_MOCK_OK;
  b->status = 500;
  b->confidence = 0.95;
  b->chunks = 5;
  b->die_after = 2;
}

void mg_mock_bhv_clear(struct mg_mock_bhv *b) {
  free(b->body);
  free(b->content);
  free(b->headers);
  free(b->raw);
  mg_mock_bhv_default(b);
}

static char *mem_dup(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

/* Deep copy without the queue link. */
static int bhv_copy(struct mg_mock_bhv *dst, const struct mg_mock_bhv *src) {
  *dst = *src;
  dst->next = NULL;
  dst->body = NULL;
  dst->content = NULL;
  dst->headers = NULL;
  dst->raw = NULL;
  if (src->body && (dst->body = strdup(src->body)) == NULL)
    goto oom;
  if (src->content && (dst->content = strdup(src->content)) == NULL)
    goto oom;
  if (src->headers && (dst->headers = strdup(src->headers)) == NULL)
    goto oom;
  if (src->raw && (dst->raw = mem_dup(src->raw, src->raw_len)) == NULL)
    goto oom;
  return 0;
oom:
  mg_mock_bhv_clear(dst);
  return -ENOMEM;
}

static void queue_free(struct mg_mock_bhv *q) {
  while (q) {
    struct mg_mock_bhv *next = q->next;
    mg_mock_bhv_clear(q);
    free(q);
    q = next;
  }
}

void mg_mock_table_init(struct mg_mock_table *t) { t->head = NULL; }

void mg_mock_table_free(struct mg_mock_table *t) {
  struct mg_mock_entry *e = t->head;
  while (e) {
    struct mg_mock_entry *next = e->next;
    free(e->model);
    mg_mock_bhv_clear(&e->base);
    queue_free(e->queue);
    free(e);
    e = next;
  }
  t->head = NULL;
}

static struct mg_mock_entry *find(const struct mg_mock_table *t,
                                  const char *model) {
  struct mg_mock_entry *e;
  for (e = t->head; e; e = e->next)
    if (strcmp(e->model, model) == 0)
      return e;
  return NULL;
}

/* A string parameter that may also be given as any other JSON value, which
 * is then used in its compact serialised form (a `content` that is itself
 * JSON, say). */
static char *str_or_json(const cJSON *v) {
  if (cJSON_IsString(v))
    return strdup(v->valuestring);
  return cJSON_PrintUnformatted(v);
}

static const char *const allowed_keys[] = {
    "model", "mode", "ms", "status", "body", "retry_after", "confidence",
    "header_confidence", "content", "chunks", "chunk_ms", "chunk_bytes",
    "die_after", "times", "retry_after_format", "cache_read", "cache_write",
    "reasoning_tokens", "headers", "close_idle_ms", "raw", "then", NULL};

/* RFC 9110, 5.6.2: tchar. */
static bool is_token(const char *s) {
  if (*s == '\0')
    return false;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c)))
      return false;
  }
  return true;
}

/* Does the comma-separated value v contain token t (case-insensitive)? */
static bool has_token(const char *v, const char *t) {
  size_t tl = strlen(t);
  while (*v) {
    const char *end;
    size_t l;
    while (*v == ' ' || *v == '\t' || *v == ',')
      v++;
    for (end = v; *end && *end != ','; end++)
      ;
    l = (size_t)(end - v);
    while (l && (v[l - 1] == ' ' || v[l - 1] == '\t'))
      l--;
    if (l == tl && strncasecmp(v, t, tl) == 0)
      return true;
    v = end;
  }
  return false;
}

/* `headers`: an object of header names and values (strings or numbers),
 * kept as the lines to send. Framing stays the mock's (raw breaks it). */
static void parse_headers(const cJSON *o, const char *path,
                          struct mg_mock_bhv *b, struct mg_cfg_errors *e) {
  const cJSON *h;
  struct mg_buf lines;
  char p[MG_CFG_PATH_MAX];

  mg_cfg_join(p, path, "headers");
  if (!cJSON_IsObject(o)) {
    mg_cfg_error(e, p, "must be an object of header names and values");
    return;
  }
  mg_buf_init(&lines, MG_MOCK_HEADERS_MAX);
  cJSON_ArrayForEach(h, o) {
    char hp[MG_CFG_PATH_MAX], num[64];
    const char *v = NULL, *c;
    mg_cfg_join(hp, p, h->string);
    if (cJSON_IsString(h)) {
      v = h->valuestring;
    } else if (cJSON_IsNumber(h)) {
      snprintf(num, sizeof(num), "%.17g", h->valuedouble);
      v = num;
    } else {
      mg_cfg_error(e, hp, "must be a string or a number");
      continue;
    }
    if (!is_token(h->string)) {
      mg_cfg_error(e, hp, "a header name must be a token (RFC 9110, 5.6.2)");
      continue;
    }
    for (c = v; *c; c++)
      if (*c == '\r' || *c == '\n')
        break;
    if (*c) {
      mg_cfg_error(e, hp, "a header value cannot hold CR or LF (use raw)");
      continue;
    }
    if (strcasecmp(h->string, "content-length") == 0) {
      mg_cfg_error(e, hp, "the mock frames the body itself (use raw)");
      continue;
    }
    if (strcasecmp(h->string, "transfer-encoding") == 0) {
      if (strcasecmp(v, "chunked") != 0) {
        mg_cfg_error(e, hp,
                     "only \"chunked\" keeps the answer readable "
                     "(use raw)");
        continue;
      }
      b->h_chunked = true;
    } else if (strcasecmp(h->string, "content-type") == 0) {
      b->h_ctype = true;
    } else if (strcasecmp(h->string, "connection") == 0) {
      b->h_conn = true;
      b->h_close = has_token(v, "close");
    }
    if (mg_buf_printf(&lines, "%s: %s\r\n", h->string, v)) {
      mg_cfg_error(e, p, "too long (at most %d bytes)", MG_MOCK_HEADERS_MAX);
      break;
    }
  }
  b->headers = mg_buf_steal(&lines, NULL);
  mg_buf_free(&lines);
}

/* Parse one behaviour object; errors go to e. *model is a fresh copy. */
static void parse_one(const cJSON *o, const char *path, struct mg_mock_bhv *b,
                      char **model, struct mg_cfg_errors *e) {
  const cJSON *v;
  char *mode;
  size_t i;

  mg_mock_bhv_default(b);
  *model = NULL;
  if (!mg_cfg_object(o, path, allowed_keys, e))
    return;
  *model = mg_cfg_str(o, "model", path, "*", true, e);
  mode = mg_cfg_str(o, "mode", path, "ok", true, e);
  if (mode) {
    for (i = 0; mode_names[i]; i++)
      if (strcmp(mode, mode_names[i]) == 0)
        break;
    if (mode_names[i] == NULL) {
      char p[MG_CFG_PATH_MAX];
      mg_cfg_join(p, path, "mode");
      mg_cfg_error(e, p,
                   "unknown mode \"%s\" (ok, slow, status, hang, reset, "
                   "garbage, truncate, low_confidence, stream_die, close, "
                   "raw)",
                   mode);
    } else {
      b->mode = (enum mg_mock_mode)i;
    }
    free(mode);
  }
  if (b->mode == MG_MOCK_LOW_CONFIDENCE)
    b->confidence = 0.3;
  /* `ms` delays any mode (a 503 after 200 ms, say); slow defaults to 1 s. */
  b->ms = (long)mg_cfg_int(o, "ms", path, b->mode == MG_MOCK_SLOW ? 1000 : 0, 0,
                           3600000, e);
  /* 1xx statuses would break the framing of what follows. */
  b->status = (int)mg_cfg_int(o, "status", path, 500, 200, 599, e);
  if ((v = cJSON_GetObjectItemCaseSensitive(o, "body")) != NULL)
    b->body = str_or_json(v);
  if ((v = cJSON_GetObjectItemCaseSensitive(o, "retry_after")) != NULL) {
    b->has_retry_after = true;
    b->retry_after = mg_cfg_num(o, "retry_after", path, 0, 0, 86400, e);
  }
  if ((v = cJSON_GetObjectItemCaseSensitive(o, "retry_after_format")) != NULL) {
    static const char *const formats[] = {"seconds", "date", "ms", NULL};
    char *f = mg_cfg_str(o, "retry_after_format", path, "seconds", true, e);
    for (i = 0; f && formats[i]; i++)
      if (strcmp(f, formats[i]) == 0)
        break;
    if (f && formats[i] == NULL) {
      char p[MG_CFG_PATH_MAX];
      mg_cfg_join(p, path, "retry_after_format");
      mg_cfg_error(e, p, "unknown format \"%s\" (seconds, date, ms)", f);
    } else if (f) {
      b->retry_after_format = (int)i;
    }
    free(f);
  }
  b->confidence =
      mg_cfg_num(o, "confidence", path, b->confidence, 1e-300, 1, e);
  if ((v = cJSON_GetObjectItemCaseSensitive(o, "header_confidence")) != NULL) {
    b->has_header_confidence = true;
    b->header_confidence =
        mg_cfg_num(o, "header_confidence", path, 0, -1e300, 1e300, e);
  }
  if ((v = cJSON_GetObjectItemCaseSensitive(o, "content")) != NULL)
    b->content = str_or_json(v);
  b->chunks = (long)mg_cfg_int(o, "chunks", path, 5, 1, 1000000, e);
  b->chunk_ms = (long)mg_cfg_int(o, "chunk_ms", path, 0, 0, 600000, e);
  b->chunk_bytes =
      (long)mg_cfg_int(o, "chunk_bytes", path, 0, 0, 16 * 1024 * 1024, e);
  b->die_after = (long)mg_cfg_int(o, "die_after", path, 2, 0, 1000000, e);
  b->times = (long)mg_cfg_int(o, "times", path, 0, 1, 1000000000, e);
  b->cache_read = (long)mg_cfg_int(o, "cache_read", path, 0, 0, 1000000000, e);
  b->cache_write =
      (long)mg_cfg_int(o, "cache_write", path, 0, 0, 1000000000, e);
  b->reasoning_tokens =
      (long)mg_cfg_int(o, "reasoning_tokens", path, 0, 0, 1000000000, e);
  b->close_idle_ms =
      (long)mg_cfg_int(o, "close_idle_ms", path, 0, 1, 3600000, e);
  if ((v = cJSON_GetObjectItemCaseSensitive(o, "headers")) != NULL)
    parse_headers(v, path, b, e);
  if ((v = cJSON_GetObjectItemCaseSensitive(o, "raw")) != NULL) {
    char p[MG_CFG_PATH_MAX];
    mg_cfg_join(p, path, "raw");
    if (!cJSON_IsString(v) || v->valuestring[0] == '\0')
      mg_cfg_error(e, p, "must be a non-empty string (the response bytes)");
    else if ((b->raw_len = strlen(v->valuestring)) > MG_MOCK_RAW_MAX)
      mg_cfg_error(e, p, "longer than %d bytes", MG_MOCK_RAW_MAX);
    else
      b->raw = mem_dup(v->valuestring, b->raw_len);
  }
  if ((v = cJSON_GetObjectItemCaseSensitive(o, "then")) != NULL) {
    char *t = mg_cfg_str(o, "then", path, "close", true, e), p[MG_CFG_PATH_MAX];
    mg_cfg_join(p, path, "then");
    if (t && strcmp(t, "keep") == 0)
      b->raw_keep = true;
    else if (t && strcmp(t, "close") != 0)
      mg_cfg_error(e, p, "unknown value \"%s\" (close, keep)", t);
    free(t);
  }
  if (b->mode == MG_MOCK_RAW && b->raw == NULL &&
      cJSON_GetObjectItemCaseSensitive(o, "raw") == NULL) {
    char p[MG_CFG_PATH_MAX];
    mg_cfg_join(p, path, "raw");
    mg_cfg_error(e, p, "mode raw needs the response bytes");
  }
}

/* Apply one parsed behaviour; takes ownership of b's strings and of model. */
static int apply(struct mg_mock_table *t, char *model, struct mg_mock_bhv *b) {
  struct mg_mock_entry *e = find(t, model);

  if (e == NULL) {
    if ((e = calloc(1, sizeof(*e))) == NULL)
      goto oom;
    e->model = model;
    mg_mock_bhv_default(&e->base);
    e->next = t->head;
    t->head = e;
  } else {
    free(model);
  }
  model = NULL;
  if (b->times == 0) {
    queue_free(e->queue);
    e->queue = NULL;
    mg_mock_bhv_clear(&e->base);
    e->base = *b;
    e->has_base = true;
  } else {
    struct mg_mock_bhv *q = malloc(sizeof(*q)), **tail;
    if (q == NULL)
      goto oom;
    *q = *b;
    q->next = NULL;
    for (tail = &e->queue; *tail; tail = &(*tail)->next)
      ;
    *tail = q;
  }
  mg_mock_bhv_default(b);
  return 0;
oom:
  free(model);
  mg_mock_bhv_clear(b);
  return -ENOMEM;
}

int mg_mock_table_set(struct mg_mock_table *t, const cJSON *v,
                      struct mg_buf *err) {
  struct mg_cfg_errors e;
  struct mg_mock_bhv *bs = NULL;
  char **models = NULL;
  size_t n, i;
  int rc = 0;

  mg_cfg_errors_init(&e);
  n = cJSON_IsArray(v) ? (size_t)cJSON_GetArraySize(v) : 1;
  if (n == 0) {
    rc = mg_buf_puts(err, "$: an empty array sets nothing") ? -ENOMEM : -EINVAL;
    goto out;
  }
  bs = calloc(n, sizeof(*bs));
  models = calloc(n, sizeof(*models));
  if (bs == NULL || models == NULL) {
    rc = -ENOMEM;
    goto out;
  }
  /* Validate everything before touching the table, so a bad element in an
   * array changes nothing. */
  if (cJSON_IsArray(v)) {
    const cJSON *it;
    i = 0;
    cJSON_ArrayForEach(it, v) {
      char p[MG_CFG_PATH_MAX];
      mg_cfg_join_idx(p, "$", i);
      parse_one(it, p, &bs[i], &models[i], &e);
      i++;
    }
  } else {
    parse_one(v, "$", &bs[0], &models[0], &e);
  }
  if (e.n) {
    for (i = 0; i < e.n; i++)
      if (mg_buf_printf(err, "%s%s", i ? "; " : "", e.msgs[i])) {
        rc = -ENOMEM;
        goto out;
      }
    rc = -EINVAL;
    goto out;
  }
  for (i = 0; i < n; i++) {
    if (models[i] == NULL) {
      rc = -ENOMEM;
      goto out;
    }
    rc = apply(t, models[i], &bs[i]);
    models[i] = NULL;
    if (rc)
      goto out;
  }
out:
  if (bs)
    for (i = 0; i < n; i++)
      mg_mock_bhv_clear(&bs[i]);
  if (models)
    for (i = 0; i < n; i++)
      free(models[i]);
  free(bs);
  free(models);
  mg_cfg_errors_free(&e);
  return rc;
}

/* The behaviour an entry gives, using up a queued one; NULL when it has
 * none of its own. *done is set when a queued behaviour ran out: the caller
 * frees it after copying. */
static struct mg_mock_bhv *entry_take(struct mg_mock_entry *e,
                                      struct mg_mock_bhv **done) {
  struct mg_mock_bhv *q = e->queue;
  *done = NULL;
  if (q) {
    if (--q->times == 0) {
      e->queue = q->next;
      *done = q;
    }
    return q;
  }
  return e->has_base ? &e->base : NULL;
}

int mg_mock_table_take(struct mg_mock_table *t, const char *model,
                       struct mg_mock_bhv *out) {
  struct mg_mock_entry *e = find(t, model);
  struct mg_mock_bhv *b = NULL, *done = NULL;
  int rc;

  if (e)
    b = entry_take(e, &done);
  if (b == NULL && (e = find(t, "*")) != NULL)
    b = entry_take(e, &done);
  if (b == NULL) {
    mg_mock_bhv_default(out);
    return 0;
  }
  rc = bhv_copy(out, b);
  out->times = 0;
  if (done) {
    mg_mock_bhv_clear(done);
    free(done);
  }
  return rc;
}
