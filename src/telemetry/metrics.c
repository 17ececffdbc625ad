/* metrics.c - a small Prometheus registry. */
#include "telemetry/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/map.h"

struct mg_series {
  struct mg_series *next;     /* owned list, in creation order */
  struct mg_family *family;   /* borrowed: the family outlives its series */
  char *key;                  /* owned: "name{labels}", the map key */
  char *labels;               /* owned: rendered labels, maybe "" */
  double value;               /* counter or gauge */
  uint64_t *buckets;          /* owned: histogram counts per bound */
  uint64_t count;
  double sum;
  int hidden;                 /* not rendered until set again */
};

struct mg_family {
  struct mg_family *next;     /* owned list, in declaration order */
  char *name, *help;          /* owned */
  enum mg_metric_type type;
  double *bounds;             /* owned */
  size_t nbounds;
  struct mg_series *series, **tail;
};

struct mg_metrics {
  struct mg_family *families, **tail; /* owned */
  struct mg_map by_name;  /* family name -> family */
  struct mg_map by_key;   /* series key -> series */
};

struct mg_metrics *mg_metrics_new(void) {
  struct mg_metrics *m = calloc(1, sizeof(*m));
  if (m == NULL)
    return NULL;
  m->tail = &m->families;
  mg_map_init(&m->by_name);
  mg_map_init(&m->by_key);
  return m;
}

void mg_metrics_free(struct mg_metrics *m) {
  struct mg_family *f, *fn;
  if (m == NULL)
    return;
  for (f = m->families; f; f = fn) {
    struct mg_series *s, *sn;
    fn = f->next;
    for (s = f->series; s; s = sn) {
      sn = s->next;
      free(s->key);
      free(s->labels);
      free(s->buckets);
      free(s);
    }
    free(f->name);
    free(f->help);
    free(f->bounds);
    free(f);
  }
  mg_map_free(&m->by_name);
  mg_map_free(&m->by_key);
  free(m);
}

int mg_metrics_family(struct mg_metrics *m, const char *name, const char *help,
                      enum mg_metric_type type, const double *bounds,
                      size_t nbounds) {
  struct mg_family *f;
  if (mg_map_get(&m->by_name, name, strlen(name)))
    return 0;
  f = calloc(1, sizeof(*f));
  if (f == NULL)
    return -ENOMEM;
  f->name = strdup(name);
  f->help = strdup(help);
  f->type = type;
  f->tail = &f->series;
  if (type == MG_HISTOGRAM && nbounds) {
    f->bounds = malloc(nbounds * sizeof(*bounds));
    if (f->bounds)
      memcpy(f->bounds, bounds, nbounds * sizeof(*bounds));
    f->nbounds = nbounds;
  }
  if (f->name == NULL || f->help == NULL ||
      (type == MG_HISTOGRAM && nbounds && f->bounds == NULL) ||
      mg_map_put(&m->by_name, f->name, strlen(f->name), f)) {
    free(f->name);
    free(f->help);
    free(f->bounds);
    free(f);
    return -ENOMEM;
  }
  *m->tail = f;
  m->tail = &f->next;
  return 0;
}

struct mg_series *mg_metrics_series(struct mg_metrics *m, const char *name,
                                    const char *labels) {
  char stack[256], *key = stack;
  size_t nl = strlen(name), ll = strlen(labels), kl = nl + ll + 2;
  struct mg_series *s;
  struct mg_family *f;

  if (kl + 1 > sizeof(stack) && (key = malloc(kl + 1)) == NULL)
    return NULL;
  memcpy(key, name, nl);
  key[nl] = '{';
  memcpy(key + nl + 1, labels, ll);
  key[kl - 1] = '}';
  key[kl] = '\0';
  s = mg_map_get(&m->by_key, key, kl);
  if (s)
    goto out;
  f = mg_map_get(&m->by_name, name, nl);
  if (f == NULL)
    goto out;
  s = calloc(1, sizeof(*s));
  if (s == NULL)
    goto out;
  s->family = f;
  s->key = strdup(key);
  s->labels = strdup(labels);
  if (f->type == MG_HISTOGRAM)
    s->buckets = calloc(f->nbounds + 1, sizeof(*s->buckets));
  if (s->key == NULL || s->labels == NULL ||
      (f->type == MG_HISTOGRAM && s->buckets == NULL) ||
      mg_map_put(&m->by_key, s->key, kl, s)) {
    free(s->key);
    free(s->labels);
    free(s->buckets);
    free(s);
    s = NULL;
    goto out;
  }
  *f->tail = s;
  f->tail = &s->next;
out:
  if (key != stack)
    free(key);
  return s;
}

void mg_metrics_hide(struct mg_metrics *m, const char *name) {
  struct mg_family *f = mg_map_get(&m->by_name, name, strlen(name));
  struct mg_series *s;
  for (s = f ? f->series : NULL; s; s = s->next)
    s->hidden = 1;
}

void mg_series_add(struct mg_series *s, double v) {
  if (s) {
    s->value += v;
    s->hidden = 0;
  }
}

void mg_series_set(struct mg_series *s, double v) {
  if (s) {
    s->value = v;
    s->hidden = 0;
  }
}

double mg_series_value(const struct mg_series *s) { return s ? s->value : 0; }

void mg_series_observe(struct mg_series *s, double v) {
  size_t i;
  if (s == NULL || s->buckets == NULL)
    return;
  /* Bounds are few (under 20); a linear scan beats a branchy search. */
  for (i = 0; i < s->family->nbounds; i++)
    if (v <= s->family->bounds[i])
      break;
  s->buckets[i]++;
  s->count++;
  s->sum += v;
}

int mg_metrics_labels(struct mg_buf *out, ...) {
  va_list ap;
  const char *name;
  int rc = 0, first = 1;
  va_start(ap, out);
  while (rc == 0 && (name = va_arg(ap, const char *)) != NULL) {
    const char *v = va_arg(ap, const char *), *p;
    if (!first)
      rc = mg_buf_append(out, ",", 1);
    first = 0;
    if (rc == 0)
      rc = mg_buf_printf(out, "%s=\"", name);
    for (p = v ? v : ""; rc == 0 && *p; p++) {
      if (*p == '\\')
        rc = mg_buf_append(out, "\\\\", 2);
      else if (*p == '"')
        rc = mg_buf_append(out, "\\\"", 2);
      else if (*p == '\n')
        rc = mg_buf_append(out, "\\n", 2);
      else
        rc = mg_buf_append(out, p, 1);
    }
    if (rc == 0)
      rc = mg_buf_append(out, "\"", 1);
  }
  va_end(ap);
  return rc;
}

/* Prometheus floats: integers without a fraction, +Inf spelled out. */
static int put_num(struct mg_buf *out, double v) {
  if (isinf(v))
    return mg_buf_puts(out, v > 0 ? "+Inf" : "-Inf");
  if (v == floor(v) && fabs(v) < 1e15)
    return mg_buf_printf(out, "%.0f", v);
  return mg_buf_printf(out, "%.9g", v);
}

static int render_hist(const struct mg_family *f, const struct mg_series *s,
                       struct mg_buf *out) {
  uint64_t cum = 0;
  size_t i;
  int rc = 0;
  const char *sep = s->labels[0] ? "," : "";
  for (i = 0; rc == 0 && i <= f->nbounds; i++) {
    cum += s->buckets[i];
    rc = mg_buf_printf(out, "%s_bucket{%s%sle=\"", f->name, s->labels, sep);
    if (rc == 0)
      rc = put_num(out, i < f->nbounds ? f->bounds[i] : INFINITY);
    if (rc == 0)
      rc = mg_buf_printf(out, "\"} %llu\n", (unsigned long long)cum);
  }
  /* No braces at all for a series without labels. */
  if (rc == 0)
    rc = s->labels[0] ? mg_buf_printf(out, "%s_sum{%s} ", f->name, s->labels)
                      : mg_buf_printf(out, "%s_sum ", f->name);
  if (rc == 0)
    rc = put_num(out, s->sum);
  if (rc == 0)
    rc = s->labels[0]
             ? mg_buf_printf(out, "\n%s_count{%s} %llu\n", f->name,
                             s->labels, (unsigned long long)s->count)
             : mg_buf_printf(out, "\n%s_count %llu\n", f->name,
                             (unsigned long long)s->count);
  return rc;
}

int mg_metrics_render(const struct mg_metrics *m, struct mg_buf *out) {
  static const char *types[] = {"counter", "gauge", "histogram"};
  const struct mg_family *f;
  int rc = 0;
  for (f = m->families; rc == 0 && f; f = f->next) {
    const struct mg_series *s;
    rc = mg_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help,
                       f->name, types[f->type]);
    for (s = f->series; rc == 0 && s; s = s->next) {
      if (s->hidden)
        continue;
      if (f->type == MG_HISTOGRAM) {
        rc = render_hist(f, s, out);
        continue;
      }
      rc = s->labels[0] ? mg_buf_printf(out, "%s{%s} ", f->name, s->labels)
                        : mg_buf_printf(out, "%s ", f->name);
      if (rc == 0)
        rc = put_num(out, s->value);
      if (rc == 0)
        rc = mg_buf_append(out, "\n", 1);
    }
  }
  return rc;
}

int mg_metrics_merge(struct mg_metrics *dst, const struct mg_metrics *src) {
  const struct mg_family *f;
  for (f = src->families; f; f = f->next) {
    const struct mg_series *s;
    if (mg_metrics_family(dst, f->name, f->help, f->type, f->bounds,
                          f->nbounds) != 0)
      return -ENOMEM;
    for (s = f->series; s; s = s->next) {
      struct mg_series *d;
      size_t i;
      if (s->hidden)
        continue;
      d = mg_metrics_series(dst, f->name, s->labels);
      if (d == NULL)
        return -ENOMEM;
      d->hidden = 0;
      if (f->type != MG_HISTOGRAM) {
        d->value += s->value;
        continue;
      }
      if (d->family->nbounds != f->nbounds || d->buckets == NULL)
        continue; /* declared differently: a bug, not worth a crash */
      for (i = 0; i <= f->nbounds; i++)
        d->buckets[i] += s->buckets[i];
      d->count += s->count;
      d->sum += s->sum;
    }
  }
  return 0;
}
