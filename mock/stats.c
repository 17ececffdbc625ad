/* stats.c - what GET /_mock/stats reports: counters, requests per model and
 * per endpoint, the last request body and headers per model (tests check
 * with them what the proxy sent upstream), and the Anthropic headers last
 * seen. */
#include "mock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The maps of the stats, in one array so reset and free walk them. */
#define NMAPS 5

static cJSON **maps(struct mg_mock_stats *st, size_t i) {
  cJSON **m[NMAPS] = {&st->by_model, &st->received_by_model, &st->by_endpoint,
                      &st->last, &st->anthropic};
  return m[i];
}

int mg_mock_stats_init(struct mg_mock_stats *st) {
  size_t i;
  memset(st, 0, sizeof(*st));
  for (i = 0; i < NMAPS; i++)
    if ((*maps(st, i) = cJSON_CreateObject()) == NULL) {
      mg_mock_stats_free(st);
      return -ENOMEM;
    }
  return 0;
}

void mg_mock_stats_free(struct mg_mock_stats *st) {
  size_t i;
  for (i = 0; i < NMAPS; i++) {
    cJSON_Delete(*maps(st, i));
    *maps(st, i) = NULL;
  }
}

void mg_mock_stats_reset(struct mg_mock_stats *st) {
  cJSON *fresh[NMAPS];
  size_t i;
  bool ok = true;
  for (i = 0; i < NMAPS; i++)
    ok = (fresh[i] = cJSON_CreateObject()) != NULL && ok;
  for (i = 0; i < NMAPS; i++) {
    if (ok) {
      cJSON_Delete(*maps(st, i));
      *maps(st, i) = fresh[i];
    } else {
      /* Keep the old maps rather than lose them to an allocation failure. */
      cJSON_Delete(fresh[i]);
    }
  }
  st->requests = 0;
  st->requests_received = 0;
  st->bodies_read = 0;
  st->idle_closes = 0;
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

int mg_mock_stats_count(cJSON *map, const char *key) {
  cJSON *count = cJSON_GetObjectItemCaseSensitive(map, key);
  if (count) {
    cJSON_SetNumberValue(count, count->valuedouble + 1);
  } else if ((count = cJSON_CreateNumber(1)) == NULL ||
             !cJSON_AddItemToObject(map, key, count)) {
    cJSON_Delete(count);
    return -ENOMEM;
  }
  return 0;
}

/* Add a string member, or null when s is NULL. */
static bool add_str(cJSON *o, const char *key, const char *s) {
  cJSON *v = s ? cJSON_CreateString(s) : cJSON_CreateNull();
  if (v == NULL || !cJSON_AddItemToObject(o, key, v)) {
    cJSON_Delete(v);
    return false;
  }
  return true;
}

int mg_mock_stats_anthropic(struct mg_mock_stats *st, const char *api_key,
                            const char *authorization, const char *version,
                            const char *beta) {
  cJSON *o = cJSON_CreateObject();
  if (o == NULL || !add_str(o, "x-api-key", api_key) ||
      !add_str(o, "authorization", authorization) ||
      !add_str(o, "anthropic-version", version) ||
      !add_str(o, "anthropic-beta", beta)) {
    cJSON_Delete(o);
    return -ENOMEM;
  }
  cJSON_Delete(st->anthropic);
  st->anthropic = o;
  return 0;
}

int mg_mock_stats_record(struct mg_mock_stats *st, const char *model,
                         const char *method, const char *path,
                         const char *request_id, const cJSON *body,
                         const char *hdrs, size_t nhdrs) {
  cJSON *entry = NULL, *b, *h;

  if (mg_mock_stats_count(st->by_model, model))
    return -ENOMEM;
  if ((entry = cJSON_CreateObject()) == NULL)
    return -ENOMEM;
  b = body ? cJSON_Duplicate(body, 1) : cJSON_CreateNull();
  if (b == NULL || !cJSON_AddItemToObject(entry, "body", b)) {
    cJSON_Delete(b);
    goto oom;
  }
  if (!add_str(entry, "method", method) || !add_str(entry, "path", path) ||
      !add_str(entry, "request_id", request_id))
    goto oom;
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
  char *recv = cJSON_PrintUnformatted(st->received_by_model);
  char *ep = cJSON_PrintUnformatted(st->by_endpoint);
  char *last = cJSON_PrintUnformatted(st->last);
  char *anth = cJSON_PrintUnformatted(st->anthropic);
  int rc = -ENOMEM;

  if (by && recv && ep && last && anth) {
    rc = mg_buf_puts(out, "{\"name\":");
    if (rc == 0)
      rc = st->name ? mg_buf_json_str(out, st->name, strlen(st->name))
                    : mg_buf_puts(out, "null");
    if (rc == 0)
      rc = mg_buf_printf(
          out,
          ",\"requests\":%lu,\"requests_received\":%lu,"
          "\"bodies_read\":%lu,\"connections_opened\":%lu,"
          "\"connections_active\":%lu,\"idle_closes\":%lu,"
          "\"active_streams\":%lu,\"streams_completed\":%lu,"
          "\"streams_aborted\":%lu,\"streams_died\":%lu,"
          "\"chunks_sent\":%lu,\"responses_stored\":%zu,\"by_model\":%s,"
          "\"received_by_model\":%s,\"by_endpoint\":%s,\"last\":%s,"
          "\"anthropic\":%s}",
          st->requests, st->requests_received, st->bodies_read,
          st->connections_opened, st->connections_active, st->idle_closes,
          st->active_streams, st->streams_completed, st->streams_aborted,
          st->streams_died, st->chunks_sent, st->responses_stored, by, recv, ep,
          last, anth);
  }
  free(by);
  free(recv);
  free(ep);
  free(last);
  free(anth);
  return rc;
}
