/* clients.h - who may call the data plane (DESIGN.md, "Clients").
 *
 *   "clients": {"keys": {"billing-app": "<SHA-256 hex of its key>", ...},
 *               "keys_file": "/run/secrets/modelgate-clients.json"}
 *
 * A request presents its key as `Authorization: Bearer <key>` (OpenAI
 * SDKs) or `x-api-key: <key>` (Anthropic SDKs); its SHA-256 is compared
 * with the stored digests in constant time. The keys file holds an object
 * of the same shape as `keys`; it is read when the config is loaded, so a
 * reload (SIGHUP, /admin/reload) re-reads it - how Kubernetes rotates a
 * mounted secret. Keys themselves are never stored, logged or echoed.
 * Without a `clients` section every caller is accepted. */
#ifndef MG_CLIENTS_H
#define MG_CLIENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/cfg.h"

struct mg_client {
  char *name;              /* owned */
  unsigned char digest[32];
};

struct mg_clients {
  bool enabled;            /* the section is present: keys are required */
  struct mg_client *v;     /* owned */
  size_t n;
};

/* Parse the "clients" section (NULL: none); errors name the JSON path (or
 * the keys file). */
void mg_clients_parse(struct mg_clients *out, const cJSON *section,
                      struct mg_cfg_errors *e);
void mg_clients_free(struct mg_clients *c);

/* The client whose key this is, or NULL. Every stored digest is compared,
 * in constant time, whichever matches: the time taken says nothing about
 * the key. */
const struct mg_client *mg_clients_find(const struct mg_clients *c,
                                        const char *key, size_t len);

/* SHA-256 of data into out. */
void mg_sha256(const void *data, size_t len, unsigned char out[32]);

#endif
