/* config.h - one immutable, reference-counted configuration snapshot.
 *
 * The loader reads the whole file, lets each module parse its own section,
 * and either returns a complete snapshot or every error it found (each with
 * its JSON path). A reload builds a new snapshot beside the old one; requests
 * in flight keep a reference to the one they started with. */
#ifndef MG_CONFIG_H
#define MG_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "brief/brief.h"
#include "common/cfg.h"
#include "decisions/feedback.h"
#include "decisions/log.h"
#include "fallbacks/policy.h"
#include "notify/sink.h"
#include "ramps/ramp.h"
#include "config/redis.h"
#include "routing/clients.h"
#include "routing/flag.h"
#include "routing/route.h"
#include "routing/target.h"

/* Every buffer has a ceiling (STYLE.md). Defaults in config.c and the
 * README's table. */
struct mg_limits {
  uint32_t header_bytes;   /* request line + headers */
  uint32_t headers;        /* number of header fields */
  uint32_t url_bytes;      /* request target */
  uint32_t body_bytes;     /* request body after de-chunking */
  uint32_t response_bytes; /* a buffered (non-streaming) upstream answer */
  uint32_t write_high_bytes; /* queued to a client: pause the upstream */
  uint32_t write_low_bytes;  /* ...and resume it below this */
  uint32_t json_tokens;      /* values in one request body */
};

struct mg_server_cfg {
  char listen_host[128];
  int listen_port;
  uint32_t header_timeout_ms;    /* first byte of a request -> headers done */
  uint32_t body_timeout_ms;      /* between two reads of a request body */
  uint32_t keepalive_timeout_ms; /* idle between requests */
  uint32_t send_timeout_ms;      /* a client that reads nothing this long */
  uint32_t shutdown_grace_ms;    /* SIGTERM: time given to requests */
  uint32_t max_connections;
  uint32_t workers;              /* event loops; 0: one per usable CPU */
  int log_level;                 /* enum mg_log_level */
};

struct mg_upstream_cfg {
  uint32_t max_idle_connections; /* curl's connection cache */
  uint32_t max_host_connections; /* 0: no limit */
  uint32_t idle_connection_ms;   /* drop cached connections older than this */
  char *proxy;                   /* owned: egress proxy URL, or NULL */
  bool send_decision_id;         /* x-modelgate-decision on upstream calls */
};

struct mg_admin_cfg {
  bool enabled;
  char listen_host[128];
  int listen_port;
  char *token_env;        /* owned: variable holding the bearer token */
  uint32_t max_connections; /* the admin listener's own budget */
  char *state_file;       /* owned: runtime overrides persist here */
};

struct mg_config {
  _Atomic int refs;       /* any thread: workers hold snapshots */
  char hash[17];          /* XXH64 hex of the file's bytes */
  char *source;           /* owned: the file name, or "<string>" */
  struct mg_server_cfg server;
  struct mg_limits limits;
  struct mg_upstream_cfg upstream;
  struct mg_admin_cfg admin;
  struct mg_dlog_cfg dlog;
  struct mg_targets targets;
  struct mg_flags flags;
  struct mg_routes routes;
  struct mg_fallbacks fallbacks;
  struct mg_ramps ramps;       /* by flag index */
  struct mg_clients clients;   /* who may call the data plane */
  struct mg_feedback_config feedback; /* POST /v1/feedback (issue 15.1) */
  struct mg_redis_cfg redis;   /* the fleet's store (config/redis.h) */
  struct mg_briefs briefs;     /* by flag index (brief/brief.h) */
  struct mg_notify_cfg notify; /* notify.sinks (notify/sink.h) */
};

/* Load and validate; NULL with e filled on any error. */
struct mg_config *mg_config_load_file(const char *path,
                                      struct mg_cfg_errors *e);
struct mg_config *mg_config_load_string(const char *json, size_t len,
                                        const char *source,
                                        struct mg_cfg_errors *e);

struct mg_config *mg_config_ref(struct mg_config *c);
void mg_config_unref(struct mg_config *c);

#endif
