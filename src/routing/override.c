/* override.c - runtime overrides of flags and their persistence. */
#include "routing/override.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/time.h"

void mg_overrides_init(struct mg_overrides *o) {
  o->v = NULL;
  o->n = 0;
}

static void override_free(struct mg_override *x) {
  uint32_t i;
  for (i = 0; i < x->nweights; i++)
    free(x->variants[i]);
  free(x->variants);
  free(x->weights);
  free(x->flag);
  free(x->by);
  free(x->reason);
  memset(x, 0, sizeof(*x));
}

static void clear_weights(struct mg_override *x) {
  uint32_t i;
  for (i = 0; i < x->nweights; i++)
    free(x->variants[i]);
  free(x->variants);
  free(x->weights);
  x->variants = NULL;
  x->weights = NULL;
  x->nweights = 0;
  x->has_weights = false;
}

void mg_overrides_free(struct mg_overrides *o) {
  size_t i;
  for (i = 0; i < o->n; i++)
    override_free(&o->v[i]);
  free(o->v);
  mg_overrides_init(o);
}

struct mg_override *mg_overrides_find(const struct mg_overrides *o,
                                      const char *flag) {
  size_t i;
  for (i = 0; i < o->n; i++)
    if (strcmp(o->v[i].flag, flag) == 0)
      return &o->v[i];
  return NULL;
}

static struct mg_override *get_or_add(struct mg_overrides *o,
                                      const char *flag) {
  struct mg_override *x = mg_overrides_find(o, flag), *v;
  if (x)
    return x;
  v = realloc(o->v, (o->n + 1) * sizeof(*v));
  if (v == NULL)
    return NULL;
  o->v = v;
  x = &o->v[o->n];
  memset(x, 0, sizeof(*x));
  if ((x->flag = strdup(flag)) == NULL)
    return NULL;
  o->n++;
  return x;
}

/* Drop an override that no longer changes anything. */
static void prune(struct mg_overrides *o, struct mg_override *x) {
  size_t i = (size_t)(x - o->v);
  if (x->killed || x->has_weights)
    return;
  override_free(x);
  memmove(&o->v[i], &o->v[i + 1], (o->n - i - 1) * sizeof(*x));
  o->n--;
}

int mg_overrides_note(struct mg_overrides *o, const char *flag,
                      const char *by, const char *reason) {
  struct mg_override *x = mg_overrides_find(o, flag);
  char *b = NULL, *r = NULL;
  if (x == NULL)
    return 0;
  if ((by && (b = strdup(by)) == NULL) ||
      (reason && (r = strdup(reason)) == NULL)) {
    free(b);
    return -ENOMEM;
  }
  free(x->by);
  free(x->reason);
  x->by = b;
  x->reason = r;
  return 0;
}

int mg_overrides_kill(struct mg_overrides *o, const char *flag, bool killed,
                      int64_t now_ms) {
  struct mg_override *x = get_or_add(o, flag);
  if (x == NULL)
    return -ENOMEM;
  x->killed = killed;
  x->updated_ms = now_ms;
  prune(o, x);
  return 0;
}

int mg_overrides_set_weights(struct mg_overrides *o, const char *flag,
                             const char *const *variants,
                             const uint32_t *weights, uint32_t n,
                             int64_t now_ms) {
  struct mg_override *x = get_or_add(o, flag);
  char **names;
  uint32_t *w, i;
  if (x == NULL)
    return -ENOMEM;
  names = calloc(n, sizeof(*names));
  w = calloc(n, sizeof(*w));
  if (names == NULL || w == NULL)
    goto oom;
  for (i = 0; i < n; i++) {
    if ((names[i] = strdup(variants[i])) == NULL)
      goto oom;
    w[i] = weights[i];
  }
  clear_weights(x);
  x->variants = names;
  x->weights = w;
  x->nweights = n;
  x->has_weights = true;
  x->updated_ms = now_ms;
  return 0;
oom:
  if (names)
    for (i = 0; i < n; i++)
      free(names[i]);
  free(names);
  free(w);
  prune(o, x);
  return -ENOMEM;
}

void mg_overrides_clear_weights(struct mg_overrides *o, const char *flag) {
  struct mg_override *x = mg_overrides_find(o, flag);
  if (x == NULL)
    return;
  clear_weights(x);
  prune(o, x);
}

void mg_overrides_state(const struct mg_overrides *o, const struct mg_flag *f,
                        struct mg_flag_state *st, bool *stale) {
  const struct mg_override *x = mg_overrides_find(o, f->name);
  uint32_t w[MG_FLAG_MAX_VARIANTS], i, j;

  mg_flag_state_init(st, f);
  if (stale)
    *stale = false;
  if (x == NULL)
    return;
  if (x->killed)
    st->killed = true;
  if (!x->has_weights)
    return;
  /* The override names every variant of the flag, and nothing else. */
  if (x->nweights != f->nvariants)
    goto stale;
  for (i = 0; i < f->nvariants; i++) {
    for (j = 0; j < x->nweights; j++)
      if (strcmp(x->variants[j], f->variants[i].name) == 0)
        break;
    if (j == x->nweights)
      goto stale;
    w[i] = x->weights[j];
  }
  if (mg_flag_state_set_weights(st, f, w) == 0)
    return;
stale:
  if (stale)
    *stale = true;
}

int mg_overrides_to_json(const struct mg_overrides *o, cJSON **out) {
  cJSON *root = cJSON_CreateObject();
  size_t i;
  uint32_t j;
  if (root == NULL)
    return -ENOMEM;
  for (i = 0; i < o->n; i++) {
    const struct mg_override *x = &o->v[i];
    cJSON *f = cJSON_AddObjectToObject(root, x->flag);
    char ts[32];
    if (f == NULL)
      goto oom;
    if (cJSON_AddBoolToObject(f, "killed", x->killed) == NULL)
      goto oom;
    if (x->has_weights) {
      cJSON *w = cJSON_AddObjectToObject(f, "weights");
      if (w == NULL)
        goto oom;
      for (j = 0; j < x->nweights; j++)
        if (cJSON_AddNumberToObject(w, x->variants[j],
                                    x->weights[j] / 100.0) == NULL)
          goto oom;
    }
    mg_rfc3339_format(x->updated_ms, ts);
    if (cJSON_AddStringToObject(f, "updated", ts) == NULL)
      goto oom;
    if (x->by && cJSON_AddStringToObject(f, "by", x->by) == NULL)
      goto oom;
    if (x->reason && cJSON_AddStringToObject(f, "reason", x->reason) == NULL)
      goto oom;
  }
  *out = root;
  return 0;
oom:
  cJSON_Delete(root);
  return -ENOMEM;
}

int mg_overrides_from_json(struct mg_overrides *o, const cJSON *json,
                           char *err, size_t errlen) {
  struct mg_overrides fresh;
  const cJSON *f;

  mg_overrides_init(&fresh);
  if (!cJSON_IsObject(json)) {
    snprintf(err, errlen, "overrides: not an object");
    return -EINVAL;
  }
  cJSON_ArrayForEach(f, json) {
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(f, "killed");
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(f, "weights");
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(f, "updated");
    int64_t updated = 0;
    if (!cJSON_IsObject(f) || (k && !cJSON_IsBool(k)) ||
        (w && !cJSON_IsObject(w))) {
      snprintf(err, errlen, "overrides.%s: malformed", f->string);
      goto fail;
    }
    if (cJSON_IsString(u))
      mg_rfc3339_parse(u->valuestring, &updated);
    if (k && cJSON_IsTrue(k) &&
        mg_overrides_kill(&fresh, f->string, true, updated) != 0)
      goto oom;
    if (w) {
      const char *names[MG_FLAG_MAX_VARIANTS];
      uint32_t bp[MG_FLAG_MAX_VARIANTS], n = 0;
      const cJSON *v;
      cJSON_ArrayForEach(v, w) {
        double x = cJSON_IsNumber(v) ? v->valuedouble : -1;
        if (n == MG_FLAG_MAX_VARIANTS || !(x >= 0 && x <= 100)) {
          snprintf(err, errlen, "overrides.%s.weights: malformed", f->string);
          goto fail;
        }
        names[n] = v->string;
        bp[n++] = (uint32_t)llround(x * 100);
      }
      if (mg_overrides_set_weights(&fresh, f->string, names, bp, n,
                                   updated) != 0)
        goto oom;
    }
    {
      const cJSON *by = cJSON_GetObjectItemCaseSensitive(f, "by"),
                  *why = cJSON_GetObjectItemCaseSensitive(f, "reason");
      if ((by || why) &&
          mg_overrides_note(&fresh, f->string, cJSON_GetStringValue(by),
                            cJSON_GetStringValue(why)) != 0)
        goto oom;
    }
  }
  mg_overrides_free(o);
  *o = fresh;
  return 0;
oom:
  snprintf(err, errlen, "out of memory");
fail:
  mg_overrides_free(&fresh);
  return -EINVAL;
}

int mg_write_file_atomic(const char *path, const char *data, size_t len) {
  char tmp[4096], dir[4096];
  const char *slash;
  int fd, rc = 0;
  size_t off = 0;

  if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >=
      (int)sizeof(tmp))
    return -ENAMETOOLONG;
  /* A temp file is always made new (O_EXCL), never through a symlink: a
   * leftover of a crashed process of the same pid is removed first (unlink
   * removes a planted symlink itself, not what it names). */
  (void)unlink(tmp);
  fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0)
    return -errno;
  while (off < len) {
    ssize_t n = write(fd, data + off, len - off);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      rc = -errno;
      break;
    }
    off += (size_t)n;
  }
  /* The data must be on disk before the rename makes it the file: a crash
   * leaves either the old state or the new one, never a torn one. */
  if (rc == 0 && fsync(fd) != 0)
    rc = -errno;
  if (close(fd) != 0 && rc == 0)
    rc = -errno;
  if (rc == 0 && rename(tmp, path) != 0)
    rc = -errno;
  if (rc != 0) {
    unlink(tmp);
    return rc;
  }
  slash = strrchr(path, '/');
  if (slash == NULL)
    snprintf(dir, sizeof(dir), ".");
  else
    snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path + (slash == path)),
             path);
  fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd); /* the rename itself */
    close(fd);
  }
  return 0;
}
