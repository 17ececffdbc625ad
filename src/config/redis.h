/* redis.h - the `redis` section of the config (DESIGN.md, "Scale ->
 * Instances"): where the fleet's shared store is and how to reach it.
 * Without the section, each instance works alone on its state file.
 *
 * Pure: parsed and validated here; the connection lives in store/redis.c.
 * The section is read at start only (a reload keeps the store it has). */
#ifndef MG_CONFIG_REDIS_H
#define MG_CONFIG_REDIS_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/cfg.h"

struct mg_redis_cfg {
  bool enabled;           /* the section is present */
  char *url;              /* owned: as written, for messages */
  char host[256];         /* TCP: host name or address */
  int port;               /* TCP port (default 6379) */
  char *unix_path;        /* owned: unix socket path, or NULL for TCP */
  uint32_t db;            /* SELECT n (default 0) */
  char *password_env;     /* owned: variable holding the password, or NULL */
  char *password_file;    /* owned: file holding it, or NULL */
  char *prefix;           /* owned: key and channel prefix ("modelgate:") */
  uint32_t timeout_ms;    /* connect and reply deadline (default 500) */
  uint32_t resync_ms;     /* full resync period (default 5000) */
  uint32_t lease_ms;      /* a ramp leader's lease (default 3000) */
  char *instance;         /* owned: this instance's name, or NULL: host:port */
};

/* Parse obj ($.redis; NULL: absent) into c; errors into e. */
void mg_redis_cfg_parse(struct mg_redis_cfg *c, const cJSON *obj,
                        struct mg_cfg_errors *e);
void mg_redis_cfg_free(struct mg_redis_cfg *c);

/* Parse a redis URL: "redis://[:password@]host[:port][/db]" or
 * "unix:/path/to.sock[?db=n]". 0, or -1 with a reason in why. The
 * password part of a URL is refused (secrets stay out of config files):
 * use password_env or password_file. */
int mg_redis_url_parse(struct mg_redis_cfg *c, const char *url,
                       const char **why);

#endif
