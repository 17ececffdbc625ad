/* stats.c - what GET /_mock/stats reports: counters, requests per model, and
 * the last request body and headers per model (tests check with them what
 * the proxy sent upstream). */
#include "mock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int mg_mock_stats_init(struct mg_mock_stats *st) {
  memset(st, 0, sizeof(*st));
  st->by_model = cJSON_CreateObject();
  st->last = cJSON_CreateObject();
  if (st->by_model == NULL || st->last == NULL) {
    mg_mock_stats_free(st);
    return -ENOMEM;
  }
  return 0;
}

void mg_mock_stats_free(struct mg_mock_stats *st) {
  cJSON_Delete(st->by_model);
  cJSON_Delete(st->last);
  st->by_model = NULL;
  st->last = NULL;
}

void mg_mock_stats_reset(struct mg_mock_stats *st) {
  cJSON *by = cJSON_CreateObject(), *last = cJSON_CreateObject();
  if (by == NULL || last == NULL) {
    /* Keep the old maps rather than lose them to an allocation failure. */
    cJSON_Delete(by);
    cJSON_Delete(last);
  } else {
    cJSON_Delete(st->by_model);
    cJSON_Delete(st->last);
    st->by_model = by;
    st->last = last;
  }
  st->requests = 0;
  st->connections_opened = 0;
  st->streams_completed = 0;
  st->streams_aborted = 0;
  st->streams_died = 0;
  st->chunks_sent = 0;
}

static cJSON *headers_object(const char *hdrs, size_t nhdrs) {
  cJSON *o = cJSON_CreateObject();
  size_t i;

  for (i = 0; o && i < nhdrs; i++) {
    const char *name = hdrs, *value = name + strlen(name) + 1;
    cJSON *prev = cJSON_GetObjectItemCaseSensitive(o, name), *v;

    hdrs = value + strlen(value) + 1;
    if (prev) {
      /* A repeated field is one list (RFC 9110, 5.3). */
      size_t n = strlen(prev->valuestring) + 2 + strlen(value) + 1;
      char *joined = malloc(n);
      if (joined == NULL)
        goto oom;
      snprintf(joined, n, "%s, %s", prev->valuestring, value);
      v = cJSON_CreateString(joined);
      free(joined);
      if (v == NULL || !cJSON_ReplaceItemInObjectCaseSensitive(o, name, v)) {
        cJSON_Delete(v);
        goto oom;
      }
    } else if ((v = cJSON_CreateString(value)) == NULL ||
               !cJSON_AddItemToObject(o, name, v)) {
      cJSON_Delete(v);
      goto oom;
    }
  }
  return o;
oom:
  cJSON_Delete(o);
  return NULL;
}

int mg_mock_stats_record(struct mg_mock_stats *st, const char *model,
                         const cJSON *body, const char *hdrs, size_t nhdrs) {
  cJSON *count = cJSON_GetObjectItemCaseSensitive(st->by_model, model);
  cJSON *entry = NULL, *b, *h;

  if (count) {
    cJSON_SetNumberValue(count, count->valuedouble + 1);
  } else if ((count = cJSON_CreateNumber(1)) == NULL ||
             !cJSON_AddItemToObject(st->by_model, model, count)) {
    cJSON_Delete(count);
    return -ENOMEM;
  }
  if ((entry = cJSON_CreateObject()) == NULL)
    return -ENOMEM;
  b = cJSON_Duplicate(body, 1);
  if (b == NULL || !cJSON_AddItemToObject(entry, "body", b)) {
    cJSON_Delete(b);
    goto oom;
  }
  h = headers_object(hdrs, nhdrs);
  if (h == NULL || !cJSON_AddItemToObject(entry, "headers", h)) {
    cJSON_Delete(h);
    goto oom;
  }
  if (cJSON_GetObjectItemCaseSensitive(st->last, model)) {
    if (!cJSON_ReplaceItemInObjectCaseSensitive(st->last, model, entry))
      goto oom;
  } else if (!cJSON_AddItemToObject(st->last, model, entry)) {
    goto oom;
  }
  return 0;
oom:
  cJSON_Delete(entry);
  return -ENOMEM;
}

int mg_mock_stats_json(const struct mg_mock_stats *st, struct mg_buf *out) {
  char *by = cJSON_PrintUnformatted(st->by_model);
  char *last = cJSON_PrintUnformatted(st->last);
  int rc = -ENOMEM;

  if (by && last)
    rc = mg_buf_printf(
        out,
        "{\"requests\":%lu,\"connections_opened\":%lu,"
        "\"connections_active\":%lu,\"active_streams\":%lu,"
        "\"streams_completed\":%lu,\"streams_aborted\":%lu,"
        "\"streams_died\":%lu,\"chunks_sent\":%lu,\"by_model\":%s,"
        "\"last\":%s}",
        st->requests, st->connections_opened, st->connections_active,
        st->active_streams, st->streams_completed, st->streams_aborted,
        st->streams_died, st->chunks_sent, by, last);
  free(by);
  free(last);
  return rc;
}
