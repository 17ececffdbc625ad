/* sse.h - for the api tests: split server-sent event bytes into events as
 * a client does (WHATWG HTML, "Server-sent events": fields per line, an
 * empty line ends an event), and parse their data with cJSON, an
 * independent parser. */
#ifndef TEST_SSE_H
#define TEST_SSE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#define SSE_MAX 64

struct sse_ev {
  char event[64]; /* "" when the event has no event: field */
  char *data;     /* owned */
  cJSON *json;    /* owned: data parsed, or NULL */
};

struct sse {
  struct sse_ev ev[SSE_MAX];
  int n;
  int bad;        /* lines that are no field, or events past SSE_MAX */
};

static inline void sse_free(struct sse *s) {
  int i;
  for (i = 0; i < s->n; i++) {
    free(s->ev[i].data);
    cJSON_Delete(s->ev[i].json);
  }
  memset(s, 0, sizeof(*s));
}

/* Every event must end with an empty line; a trailing partial event counts
 * as bad. */
static inline void sse_parse(struct sse *s, const char *p, size_t len) {
  const char *e = p + len;
  struct sse_ev cur;
  memset(s, 0, sizeof(*s));
  memset(&cur, 0, sizeof(cur));
  while (p < e) {
    const char *nl = memchr(p, '\n', (size_t)(e - p));
    size_t n;
    if (nl == NULL) {
      s->bad++;
      break;
    }
    n = (size_t)(nl - p);
    if (n == 0) {
      if (cur.data || cur.event[0]) {
        if (s->n < SSE_MAX) {
          if (cur.data)
            cur.json = cJSON_Parse(cur.data);
          s->ev[s->n++] = cur;
        } else {
          free(cur.data);
          s->bad++;
        }
      }
      memset(&cur, 0, sizeof(cur));
    } else if (n > 7 && memcmp(p, "event: ", 7) == 0 && n - 7 < 64) {
      memcpy(cur.event, p + 7, n - 7);
      cur.event[n - 7] = '\0';
    } else if (n >= 6 && memcmp(p, "data: ", 6) == 0 && cur.data == NULL) {
      cur.data = malloc(n - 6 + 1);
      memcpy(cur.data, p + 6, n - 6);
      cur.data[n - 6] = '\0';
    } else {
      s->bad++;
    }
    p = nl + 1;
  }
  if (cur.data || cur.event[0]) {
    free(cur.data);
    s->bad++;
  }
}

static inline const char *jstr(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static inline double jnum(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsNumber(v) ? v->valuedouble : -12345;
}

static inline const cJSON *jget(const cJSON *o, const char *key) {
  return cJSON_GetObjectItemCaseSensitive(o, key);
}

#endif
