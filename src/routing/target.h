/* target.h - a target: one model version on one upstream (DESIGN.md,
 * "Targets, confidence and fallbacks"). */
#ifndef MG_TARGET_H
#define MG_TARGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/cfg.h"
#include "common/map.h"

/* The OpenAI endpoints modelgate proxies. */
enum mg_endpoint {
  MG_EP_CHAT,
  MG_EP_COMPLETIONS,
  MG_EP_EMBEDDINGS,
  MG_EP__COUNT
};

/* "/v1/chat/completions" and so on. */
const char *mg_endpoint_path(enum mg_endpoint ep);
/* "chat", "completions", "embeddings": the endpoint's name in decision
 * records and metrics. */
const char *mg_endpoint_name(enum mg_endpoint ep);
/* Map a request path to an endpoint; -1 when it is not one of ours. */
int mg_endpoint_from_path(const char *path, size_t len);

struct mg_timeouts {
  uint32_t connect_ms;    /* TCP + TLS handshake */
  uint32_t first_byte_ms; /* request sent -> first byte of the response body */
  uint32_t idle_ms;       /* between two chunks of the response body */
  uint32_t total_ms;      /* the whole attempt */
};

struct mg_target {
  char *name;                  /* owned */
  char *base_url;              /* owned, without a trailing '/' */
  char *urls[MG_EP__COUNT];    /* owned: base_url + the endpoint's suffix */
  char *model;                 /* owned: the upstream model name */
  char *api_key_env;           /* owned: the variable's name, or NULL */
  char *auth_header;           /* owned: "Authorization: Bearer <key>", or
                                * NULL. A secret: never logged or echoed. */
  char *ca_file;               /* owned: CA bundle for HTTPS, or NULL */
  bool tls_verify;             /* verify the upstream's certificate */
  struct mg_timeouts timeouts;
  uint32_t index;              /* position in the snapshot's target array */
};

struct mg_targets {
  struct mg_target *v; /* owned array */
  size_t n;
  struct mg_map by_name; /* name -> struct mg_target * (into v) */
};

/* Parse the "targets" object. getenv_fn resolves api_key_env (NULL means
 * getenv). Errors go to e with their JSON path. */
void mg_targets_parse(struct mg_targets *out, const cJSON *section,
                      const char *path, char *(*getenv_fn)(const char *),
                      struct mg_cfg_errors *e);
void mg_targets_free(struct mg_targets *t);
const struct mg_target *mg_targets_find(const struct mg_targets *t,
                                        const char *name);

#endif
