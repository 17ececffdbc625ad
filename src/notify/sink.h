/* sink.h - notification sinks and payloads (DESIGN.md, "Notifications,
 * briefs and the live view"; issue 16.1).
 *
 *   "notify": {"queue_size": 1000,
 *     "sinks": {"ops": {"url": "https://hooks.example.com/modelgate",
 *                       "format": "json", "events": ["rollback", "kill"],
 *                       "min_severity": "warning",
 *                       "secret_env": "MODELGATE_NOTIFY_SECRET"}}}
 *
 * Pure: the config, the payloads (generic JSON or Slack-style {"text":..}),
 * the dedup key and the HMAC-SHA256 signature; delivery is notify.h's. */
#ifndef MG_NOTIFY_SINK_H
#define MG_NOTIFY_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/buf.h"
#include "common/cfg.h"
#include "runtime/event.h"

enum mg_notify_format { MG_NOTIFY_JSON, MG_NOTIFY_SLACK };

struct mg_notify_sink_cfg {
  char *name;                 /* owned */
  char *url;                  /* owned */
  enum mg_notify_format format;
  char **events;              /* owned: event types sent; NULL: all */
  size_t nevents;
  enum mg_severity min_severity;
  char *secret_env;           /* owned, or NULL */
  char *secret;               /* owned: its value at load, wiped when freed */
  uint32_t timeout_ms;        /* one attempt */
  uint32_t retries;           /* attempts after the first */
  uint32_t backoff_ms;        /* first retry's delay (jittered, doubling) */
  uint32_t max_backoff_ms;
  uint32_t breaker_failures;  /* failed attempts in a row that open it */
  uint32_t breaker_cooldown_ms;
};

struct mg_notify_cfg {
  struct mg_notify_sink_cfg *sinks; /* owned */
  size_t nsinks;
  uint32_t queue_size;              /* deliveries waiting, all sinks */
};

/* Parse the root's "notify" (NULL: no sinks); errors name their path. */
void mg_notify_cfg_parse(struct mg_notify_cfg *out, const cJSON *obj,
                         struct mg_cfg_errors *e);
void mg_notify_cfg_free(struct mg_notify_cfg *c);

/* Does the sink want this event? */
bool mg_notify_wants(const struct mg_notify_sink_cfg *s,
                     const struct mg_event *ev);

/* The event's dedup key: 16 hex digits from the event's identity and its
 * time (ts_ms), the same for every sink and every retry. */
void mg_notify_key(const struct mg_event *ev, int64_t ts_ms, char out[17]);

/* The payload of ev for format (brief: the flag's brief summary, or NULL).
 * 0 or -ENOMEM. */
int mg_notify_payload(const struct mg_event *ev, enum mg_notify_format fmt,
                      int64_t ts_ms, const char *key, const char *brief,
                      struct mg_buf *out) MG_WARN_UNUSED;

/* "sha256=<hex of HMAC-SHA256(secret, body)>" into out. */
void mg_notify_sign(const char *secret, const char *body, size_t len,
                    char out[72]);

#endif
