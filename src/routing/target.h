/* target.h - a target: one model version on one upstream (DESIGN.md,
 * "Targets, confidence and fallbacks", "The APIs", "Quality signals and
 * cost"). */
#ifndef MG_TARGET_H
#define MG_TARGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/cfg.h"
#include "common/map.h"

/* The endpoints of the data plane. The table that says what each one is
 * lives in api/api.c (mg_endpoint_get); routing only needs the ids. */
enum mg_endpoint_id {
  MG_EP_CHAT,                 /* POST /v1/chat/completions */
  MG_EP_COMPLETIONS,          /* POST /v1/completions */
  MG_EP_EMBEDDINGS,           /* POST /v1/embeddings */
  MG_EP_RESPONSES,            /* POST /v1/responses */
  MG_EP_RESPONSE_GET,         /* GET /v1/responses/{id} */
  MG_EP_RESPONSE_DELETE,      /* DELETE /v1/responses/{id} */
  MG_EP_RESPONSE_INPUT_ITEMS, /* GET /v1/responses/{id}/input_items */
  MG_EP_MESSAGES,             /* POST /v1/messages (Anthropic) */
  MG_EP_COUNT_TOKENS,         /* POST /v1/messages/count_tokens */
  MG_EP__COUNT
};

/* Legacy spelling, for code that does not include api/api.h (whose
 * `struct mg_endpoint` shares the tag namespace): `enum mg_endpoint_id` is
 * `enum mg_endpoint_id`. api.h undefines it. To be removed once the proxy
 * layer says mg_endpoint_id. */
#ifndef MG_API_H
#define mg_endpoint mg_endpoint_id
#endif

/* The API a target speaks (its `api` key) and an endpoint belongs to. */
enum mg_api_family {
  MG_API_OPENAI,
  MG_API_ANTHROPIC,
};

/* "openai", "anthropic". */
const char *mg_api_family_name(enum mg_api_family f);

/* Legacy (the endpoint table in api/api.c supersedes these three):
 * "/v1/chat/completions" and so on; for the pinned Responses endpoints
 * the prefix "/v1/responses/". */
const char *mg_endpoint_path(enum mg_endpoint_id ep);
/* "chat", "completions", "embeddings", "responses", "responses.get",
 * "responses.delete", "responses.input_items", "messages",
 * "messages.count_tokens": the endpoint's name in decision records and
 * metrics. NULL past MG_EP__COUNT. */
const char *mg_endpoint_name(enum mg_endpoint_id ep);
/* Legacy: map a request path to one of the three chat-era endpoints; -1
 * otherwise (the exchange of today serves no other). New code calls
 * mg_endpoint_match (api/api.h). */
int mg_endpoint_from_path(const char *path, size_t len);

struct mg_timeouts {
  uint32_t connect_ms;    /* TCP + TLS handshake */
  uint32_t first_byte_ms; /* request sent -> first byte of the response body */
  uint32_t idle_ms;       /* between two chunks of the response body */
  uint32_t total_ms;      /* the whole attempt */
};

/* The upstream engine a target uses (DESIGN.md, "Scale -> Upstream
 * engines"). */
enum mg_engine {
  MG_ENGINE_AUTO,   /* native for http://, curl for https:// */
  MG_ENGINE_NATIVE, /* modelgate's own HTTP/1.1 client: http:// only */
  MG_ENGINE_CURL,
};

/* Prices in USD per million tokens (DESIGN.md, "Cost"). A price that the
 * file does not give is the `input` price for the cached and cache
 * classes (no discount assumed: an overestimate, never an underestimate). */
struct mg_price {
  bool set;                 /* the target has a `price` */
  enum mg_api_family api;   /* how usage maps to the classes below */
  double input;             /* uncached input tokens */
  double cached_input;      /* OpenAI: cached input tokens */
  double output;            /* output tokens, reasoning included */
  double cache_read;        /* Anthropic: cache_read_input_tokens */
  double cache_write;       /* Anthropic: cache_creation_input_tokens */
};

struct mg_target {
  char *name;                  /* owned */
  char *base_url;              /* owned, without a trailing '/' */
  char *urls[MG_EP__COUNT];    /* owned: base_url + the endpoint's upstream
                                * path, for every endpoint id (the pinned
                                * ones without the id: the caller appends
                                * "/<id>"). Legacy: the upstream layer may
                                * join base_url and the endpoint table's
                                * upstream_path itself. */
  char *model;                 /* owned: the upstream model name */
  enum mg_api_family api;      /* `api`: "openai" (default), "anthropic" */
  enum mg_engine engine;       /* `engine`, as configured */
  char *anthropic_version;     /* owned: anthropic-version sent when the
                                * client sends none (anthropic only), or
                                * NULL for openai targets */
  char *api_key_env;           /* owned: the variable's name, or NULL */
  char *api_key_file;          /* owned: the file's path, or NULL */
  char *auth_header;           /* owned: "Authorization: Bearer <key>"
                                * (openai) or "x-api-key: <key>"
                                * (anthropic), or NULL. A secret: never
                                * logged or echoed. */
  char *ca_file;               /* owned: CA bundle for HTTPS, or NULL */
  bool tls_verify;             /* verify the upstream's certificate */
  struct mg_timeouts timeouts;
  struct mg_price price;
  uint32_t index;              /* position in the snapshot's target array */
};

struct mg_targets {
  struct mg_target *v; /* owned array */
  size_t n;
  struct mg_map by_name; /* name -> struct mg_target * (into v) */
};

/* Parse the "targets" object. getenv_fn resolves api_key_env (NULL means
 * getenv); api_key_file is read here, so every load (and reload) reads
 * the file again. Errors go to e with their JSON path. */
void mg_targets_parse(struct mg_targets *out, const cJSON *section,
                      const char *path, char *(*getenv_fn)(const char *),
                      struct mg_cfg_errors *e);
void mg_targets_free(struct mg_targets *t);
const struct mg_target *mg_targets_find(const struct mg_targets *t,
                                        const char *name);

/* The engine that serves t: `engine` with auto resolved by the scheme. */
enum mg_engine mg_target_engine(const struct mg_target *t);
/* "auto", "native", "curl". */
const char *mg_engine_name(enum mg_engine e);

/* Do a and b share the state an upstream keeps (stored responses): the
 * same API, base URL and key. Conversations may move between them. */
bool mg_target_shares_state(const struct mg_target *a,
                            const struct mg_target *b);

/* Read a secret file as Kubernetes mounts them: its bytes without the
 * trailing line break(s). 0 with *out owned by the caller, or a negative
 * errno: -ENOENT/-EACCES/... from open, -EFBIG past max bytes, -EINVAL
 * when empty or holding a control byte (a line break inside the key, a
 * NUL). Symlinks are followed: a mounted secret is one. */
int mg_secret_file_read(const char *path, size_t max, char **out);

#endif
