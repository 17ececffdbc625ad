/* redis.c - the fleet's store on Redis (redis.h).
 *
 *   tick (50 ms)   watchdog: a connect or a reply older than timeout_ms
 *                  drops both connections; reconnect with backoff
 *                  (100 ms .. 2 s); a full resync every resync_ms
 *   connect        AUTH, SELECT, PING on the command connection; AUTH,
 *                  SUBSCRIBE on the other; reachable once both answered:
 *                  pending changes are written, then the hash is read
 *   message        {"type":"override"}: read the hash now;
 *                  {"type":"breaker"}: mg_rt_breaker_hint
 *   resync         HGETALL -> the fleet's overrides, with this instance's
 *                  pending changes (not yet acknowledged) kept and the
 *                  overrides Redis does not hold written back; put in
 *                  force when they differ from the runtime's
 *
 * hiredis 0.14's async API has no timeouts: the watchdog is ours. Every
 * reply callback runs exactly once, with NULL when its connection is freed;
 * the store forgets a connection (sets its pointer to NULL) before freeing
 * it, so a callback can tell a live connection from a dying one. */
#include "store/redis.h"

#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <cjson/cJSON.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
/* The adapter is a header of static functions, some with unprototyped
 * style that -Wstrict-prototypes and -Wmissing-prototypes do not like. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#pragma GCC diagnostic ignored "-Wmissing-prototypes"
#pragma GCC diagnostic ignored "-Wshadow"
#include <hiredis/adapters/libuv.h>
#pragma GCC diagnostic pop

#include "common/log.h"
#include "common/time.h"
#include "routing/override.h"

#define TICK_MS 50
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define HINT_QUEUE 32

/* Set the field to the value if Redis holds nothing for it or something
 * older (ARGV[5] "1": unconditionally, an admin change made now), and
 * publish the message; 1 when written, 0 when Redis held newer. */
static const char set_script[] =
    "local cur = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if cur and ARGV[5] ~= '1' then\n"
    "  local ok, v = pcall(cjson.decode, cur)\n"
    "  if ok and type(v) == 'table' and tonumber(v.updated_ms) and\n"
    "     tonumber(v.updated_ms) >= tonumber(ARGV[3]) then return 0 end\n"
    "end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('PUBLISH', KEYS[2], ARGV[4])\n"
    "return 1\n";

/* A ramp's lease (KEYS: lease, token counter; ARGV: instance, lease ms):
 * renewed when this instance holds it, taken with a new fencing token
 * when nobody does; the token held, or 0 when another instance leads. */
static const char lease_script[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur then\n"
    "  local inst, tok = string.match(cur, '^(.*) (%d+)$')\n"
    "  if inst == ARGV[1] then\n"
    "    redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "    return tonumber(tok)\n"
    "  end\n"
    "  return 0\n"
    "end\n"
    "local tok = redis.call('INCR', KEYS[2])\n"
    "redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. tok, 'PX', ARGV[2])\n"
    "return tok\n";

/* A ramp's state (KEYS: the ramps hash, the lease, the channel; ARGV:
 * flag, value, token or '0' for an admin action, the version it
 * replaces, the message): refused with -2 when the token is not the
 * lease's (a leader that lost its lease: fencing), -1 when the state
 * changed since (compare and set); else the new version. */
static const char ramp_script[] =
    "if ARGV[3] ~= '0' then\n"
    "  local cur = redis.call('GET', KEYS[2])\n"
    "  if not cur then return -2 end\n"
    "  local tok = string.match(cur, ' (%d+)$')\n"
    "  if tok ~= ARGV[3] then return -2 end\n"
    "end\n"
    "local old = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "local ver = 0\n"
    "if old then\n"
    "  local ok, v = pcall(cjson.decode, old)\n"
    "  if ok and type(v) == 'table' and tonumber(v.version) then\n"
    "    ver = tonumber(v.version)\n"
    "  end\n"
    "end\n"
    "if ver ~= tonumber(ARGV[4]) then return -1 end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('PUBLISH', KEYS[3], ARGV[5])\n"
    "return ver + 1\n";

/* The guard windows of every other instance that published lately (KEYS:
 * the ramp's instances, a sorted set by time; ARGV: oldest time kept,
 * this instance, the prefix of the view keys). */
static const char views_script[] =
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])\n"
    "local ids = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')\n"
    "local out = {}\n"
    "for _, id in ipairs(ids) do\n"
    "  if id ~= ARGV[2] then\n"
    "    local v = redis.call('GET', ARGV[3] .. id)\n"
    "    if v then out[#out + 1] = v end\n"
    "  end\n"
    "end\n"
    "return out\n";

/* Published views: magic, the size of one view, two views. Instances of
 * one fleet run one build; another build's views are ignored. */
#define VIEW_MAGIC "MGV1"

/* A change of this instance not yet acknowledged by Redis. */
struct pending {
  char *flag;   /* owned */
  int64_t ts;   /* updated_ms of the change */
};

/* What this instance knows of one ramp's leadership and shared state. */
struct ramp_lead {
  char *flag;                    /* owned */
  int64_t token;                 /* > 0 while this instance holds the lease:
                                  * the fencing token of its writes */
  int64_t lead_until;            /* uv_now until which it may act on it */
  int64_t version;               /* of the state last read or written; 0:
                                  * Redis holds none */
  bool writing, dirty;           /* a write in flight; changed since */
  struct mg_window_view *views;  /* owned: the other instances' windows,
                                  * two per instance (treatment, control) */
  size_t nviews;                 /* instances */
};

struct mg_store {
  uv_loop_t *loop;               /* borrowed: the control loop */
  struct mg_runtime *rt;         /* borrowed: outlives the store */
  char *instance;                /* owned */
  char *url;                     /* owned, for messages */
  char host[256];
  int port;
  char *unix_path;               /* owned or NULL */
  uint32_t db, timeout_ms, resync_ms;
  char *password;                /* owned secret or NULL; wiped when freed */
  char *key;                     /* owned: <prefix>overrides */
  char *channel;                 /* owned: <prefix>events */
  char *prefix;                  /* owned */
  char *ramps_key;               /* owned: <prefix>ramps */
  uint32_t lease_ms;
  struct ramp_lead *ramps;       /* owned array: one per ramped flag seen */
  size_t nramps;
  int64_t next_ramp;             /* uv_now of the next lease round */

  redisAsyncContext *cmd;        /* hiredis-owned; NULL when not connected */
  redisAsyncContext *sub;        /* the subscribed connection, or NULL */
  bool cmd_ready, sub_ready;     /* answered the opening commands */
  int64_t connect_started;       /* uv_now when the connections began */
  unsigned awaiting;             /* replies due on cmd */
  int64_t busy_since;            /* last reply (or first send) while due */
  int64_t next_connect, backoff;
  int64_t next_resync;
  bool resolving;                /* uv_getaddrinfo in flight */
  char addr[256];                /* the resolved address (TCP) */
  bool was_up;                   /* logged as reachable since the last drop */
  bool closing;

  uv_timer_t tick;
  uv_async_t wake;               /* breaker hints from workers */
  uv_getaddrinfo_t gai;
  struct pending *pending;       /* owned array */
  size_t npending;

  /* Shared with workers. */
  pthread_mutex_t mu;            /* guards hints, nhints, detail, last_sync */
  char *hints[HINT_QUEUE];       /* owned target names */
  unsigned nhints;
  char detail[320];
  char leads[512];               /* JSON array of the ramps led here */
  int64_t last_sync;             /* wall ms of the last resync, or 0 */
  _Atomic bool reachable;
  _Atomic unsigned long errors, syncs, written;
  _Atomic size_t npending_pub;
};

/* ---- small helpers ------------------------------------------------------------ */

static void set_detail(struct mg_store *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_detail(struct mg_store *s, const char *fmt, ...) {
  va_list ap;
  pthread_mutex_lock(&s->mu);
  va_start(ap, fmt);
  vsnprintf(s->detail, sizeof(s->detail), fmt, ap);
  va_end(ap);
  pthread_mutex_unlock(&s->mu);
}

static int64_t now(const struct mg_store *s) { return (int64_t)uv_now(s->loop); }

static struct pending *pending_find(struct mg_store *s, const char *flag) {
  size_t i;
  for (i = 0; i < s->npending; i++)
    if (strcmp(s->pending[i].flag, flag) == 0)
      return &s->pending[i];
  return NULL;
}

static void pending_set(struct mg_store *s, const char *flag, int64_t ts) {
  struct pending *p = pending_find(s, flag), *v;
  if (p) {
    p->ts = ts;
    return;
  }
  v = realloc(s->pending, (s->npending + 1) * sizeof(*v));
  if (v == NULL)
    return;
  s->pending = v;
  if ((v[s->npending].flag = strdup(flag)) == NULL)
    return;
  v[s->npending++].ts = ts;
  atomic_store(&s->npending_pub, s->npending);
}

static void pending_done(struct mg_store *s, const char *flag, int64_t ts) {
  struct pending *p = pending_find(s, flag);
  size_t i;
  /* A newer change of the same flag is still on its way. */
  if (p == NULL || p->ts != ts)
    return;
  i = (size_t)(p - s->pending);
  free(p->flag);
  memmove(p, p + 1, (s->npending - i - 1) * sizeof(*p));
  s->npending--;
  atomic_store(&s->npending_pub, s->npending);
}

/* The value of flag's field: the override, or a tombstone (no kill, no
 * weights) that still carries when it was cleared. */
static char *value_json(const struct mg_store *s, const struct mg_override *x,
                        int64_t ts) {
  cJSON *o = cJSON_CreateObject();
  char *text = NULL;
  uint32_t j;
  if (o == NULL)
    return NULL;
  cJSON_AddBoolToObject(o, "killed", x && x->killed);
  if (x && x->has_weights) {
    cJSON *w = cJSON_AddObjectToObject(o, "weights");
    for (j = 0; w && j < x->nweights; j++)
      cJSON_AddNumberToObject(w, x->variants[j], x->weights[j] / 100.0);
  }
  cJSON_AddNumberToObject(o, "updated_ms", (double)ts);
  cJSON_AddStringToObject(o, "instance", s->instance);
  text = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  return text;
}

static char *message_json(const struct mg_store *s, const char *type,
                          const char *key, const char *value) {
  cJSON *o = cJSON_CreateObject();
  char *text;
  if (o == NULL)
    return NULL;
  cJSON_AddStringToObject(o, "type", type);
  cJSON_AddStringToObject(o, key, value);
  cJSON_AddStringToObject(o, "instance", s->instance);
  text = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  return text;
}

/* ---- connections -------------------------------------------------------------- */

static void drop(struct mg_store *s, const char *why);

static void on_tick(uv_timer_t *t);

/* Send a command on the command connection; the callback runs once. */
static int cmd_send(struct mg_store *s, redisCallbackFn *fn, void *priv,
                    int argc, const char **argv, const size_t *lens) {
  if (s->cmd == NULL)
    return -1;
  if (redisAsyncCommandArgv(s->cmd, fn, priv, argc, argv, lens) != REDIS_OK)
    return -1;
  if (s->awaiting++ == 0)
    s->busy_since = now(s);
  return 0;
}

/* A reply on the command connection arrived (or it went away). False when
 * the connection is no longer ours: the callback then only cleans up. */
static bool cmd_reply(struct mg_store *s, redisAsyncContext *ac,
                      redisReply *r, const char *what) {
  if (ac != s->cmd)
    return false;
  if (s->awaiting)
    s->awaiting--;
  s->busy_since = now(s);
  if (r == NULL) {
    drop(s, "the connection closed");
    return false;
  }
  if (r->type == REDIS_REPLY_ERROR) {
    char why[300];
    snprintf(why, sizeof(why), "%s: %s", what, r->str);
    drop(s, why);
    return false;
  }
  return true;
}

static void resync(struct mg_store *s);
static void ramps_read(struct mg_store *s);
static void write_flag(struct mg_store *s, const char *flag, int64_t ts,
                       bool force);

static void became_reachable(struct mg_store *s) {
  size_t i, n;
  char **flags;
  if (!s->cmd_ready || !s->sub_ready)
    return;
  atomic_store(&s->reachable, true);
  s->backoff = BACKOFF_MIN_MS;
  set_detail(s, "redis %s: reachable", s->url);
  if (!s->was_up)
    mg_info("store: redis %s reachable (instance %s)", s->url, s->instance);
  s->was_up = true;
  /* What changed here while Redis was away goes first, if newer than what
   * the fleet holds; then the fleet's state, which includes it. */
  n = s->npending;
  flags = calloc(n ? n : 1, sizeof(*flags));
  for (i = 0; flags && i < n; i++)
    flags[i] = strdup(s->pending[i].flag);
  for (i = 0; flags && i < n; i++) {
    struct pending *p = flags[i] ? pending_find(s, flags[i]) : NULL;
    if (p)
      write_flag(s, flags[i], p->ts, false);
    free(flags[i]);
  }
  free(flags);
  resync(s);
}

static void on_ready(redisAsyncContext *ac, void *reply, void *priv) {
  struct mg_store *s = priv;
  if (!cmd_reply(s, ac, reply, "redis refused the connection's setup"))
    return;
  s->cmd_ready = true;
  became_reachable(s);
}

/* AUTH and SELECT: they can only fail the connection. */
static void on_opening(redisAsyncContext *ac, void *reply, void *priv) {
  (void)cmd_reply(priv, ac, reply, "redis refused the connection's setup");
}

static void on_sub_auth(redisAsyncContext *ac, void *reply, void *priv) {
  struct mg_store *s = priv;
  redisReply *r = reply;
  if (ac != s->sub)
    return;
  if (r == NULL || r->type == REDIS_REPLY_ERROR) {
    char why[300];
    snprintf(why, sizeof(why), "AUTH: %s", r ? r->str : "no answer");
    drop(s, why);
  }
}

static void on_message(redisAsyncContext *ac, void *reply, void *priv);

static void on_connect(const redisAsyncContext *ac, int status) {
  struct mg_store *s = ac->data;
  if (status == REDIS_OK || s == NULL)
    return;
  /* hiredis frees a context whose connect failed, after this returns. */
  if (ac == s->cmd)
    s->cmd = NULL;
  else if (ac == s->sub)
    s->sub = NULL;
  else
    return;
  {
    char why[300];
    snprintf(why, sizeof(why), "cannot connect: %s",
             ac->errstr[0] ? ac->errstr : "error");
    drop(s, why);
  }
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  struct mg_store *s = ac->data;
  (void)status;
  if (s == NULL)
    return;
  /* hiredis frees the context after this returns. */
  if (ac == s->cmd)
    s->cmd = NULL;
  else if (ac == s->sub)
    s->sub = NULL;
  else
    return;
  drop(s, ac->errstr[0] ? ac->errstr : "disconnected");
}

static redisAsyncContext *open_one(struct mg_store *s) {
  redisAsyncContext *ac = s->unix_path ? redisAsyncConnectUnix(s->unix_path)
                                       : redisAsyncConnect(s->addr, s->port);
  if (ac == NULL)
    return NULL;
  if (ac->err) {
    char why[300];
    snprintf(why, sizeof(why), "cannot connect: %s", ac->errstr);
    redisAsyncFree(ac);
    set_detail(s, "redis %s: %s", s->url, why);
    return NULL;
  }
  ac->data = s;
  if (redisLibuvAttach(ac, s->loop) != REDIS_OK) {
    redisAsyncFree(ac);
    return NULL;
  }
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  return ac;
}

static void connect_now(struct mg_store *s) {
  char db[16];
  const char *argv[3];
  size_t lens[3];
  s->cmd_ready = s->sub_ready = false;
  s->awaiting = 0;
  s->connect_started = now(s);
  s->cmd = open_one(s);
  s->sub = s->cmd ? open_one(s) : NULL;
  if (s->cmd == NULL || s->sub == NULL) {
    drop(s, "cannot connect");
    return;
  }
  /* hiredis queues these until the connection is up. */
  if (s->password) {
    argv[0] = "AUTH";
    argv[1] = s->password;
    lens[0] = 4;
    lens[1] = strlen(s->password);
    (void)cmd_send(s, on_opening, s, 2, argv, lens);
    (void)redisAsyncCommandArgv(s->sub, on_sub_auth, s, 2, argv, lens);
  }
  if (s->db) {
    snprintf(db, sizeof(db), "%u", s->db);
    argv[0] = "SELECT";
    argv[1] = db;
    lens[0] = 6;
    lens[1] = strlen(db);
    (void)cmd_send(s, on_opening, s, 2, argv, lens);
  }
  argv[0] = "PING";
  lens[0] = 4;
  /* The last of the opening commands says the connection is ready; the
   * earlier ones only fail it. */
  (void)cmd_send(s, on_ready, s, 1, argv, lens);
  argv[0] = "SUBSCRIBE";
  argv[1] = s->channel;
  lens[0] = 9;
  lens[1] = strlen(s->channel);
  (void)redisAsyncCommandArgv(s->sub, on_message, s, 2, argv, lens);
}

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  struct mg_store *s = req->data;
  s->resolving = false;
  if (s->closing) {
    uv_freeaddrinfo(res);
    return;
  }
  if (status != 0 || res == NULL) {
    char why[300];
    snprintf(why, sizeof(why), "cannot resolve %s: %s", s->host,
             uv_strerror(status));
    uv_freeaddrinfo(res);
    drop(s, why);
    return;
  }
  if (res->ai_family == AF_INET6)
    uv_ip6_name((struct sockaddr_in6 *)res->ai_addr, s->addr, sizeof(s->addr));
  else
    uv_ip4_name((struct sockaddr_in *)res->ai_addr, s->addr, sizeof(s->addr));
  uv_freeaddrinfo(res);
  connect_now(s);
}

/* Connect, resolving a host name off the loop first: hiredis would call a
 * blocking getaddrinfo on the control loop, which also serves requests. */
static void start_connect(struct mg_store *s) {
  struct in6_addr a6;
  struct in_addr a4;
  if (s->unix_path || uv_inet_pton(AF_INET, s->host, &a4) == 0 ||
      uv_inet_pton(AF_INET6, s->host, &a6) == 0) {
    snprintf(s->addr, sizeof(s->addr), "%s", s->host);
    connect_now(s);
    return;
  }
  {
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    s->gai.data = s;
    s->connect_started = now(s);
    if (uv_getaddrinfo(s->loop, &s->gai, on_resolved, s->host, NULL,
                       &hints) == 0)
      s->resolving = true;
    else
      drop(s, "cannot resolve the host");
  }
}

/* Forget both connections and free them; say so once; reconnect later. */
static void drop(struct mg_store *s, const char *why) {
  redisAsyncContext *cmd = s->cmd, *sub = s->sub;
  bool was = atomic_load(&s->reachable);
  s->cmd = s->sub = NULL;
  s->cmd_ready = s->sub_ready = false;
  s->awaiting = 0;
  atomic_store(&s->reachable, false);
  if (cmd)
    redisAsyncFree(cmd);
  if (sub)
    redisAsyncFree(sub);
  if (s->closing)
    return;
  atomic_fetch_add(&s->errors, 1);
  set_detail(s,
             "redis %s unreachable (%s): serving on the last known state; "
             "admin changes need force_local",
             s->url, why);
  if (was || s->was_up || s->next_connect == 0)
    mg_warn("store: redis %s unreachable (%s): serving on the last known "
            "state, retrying",
            s->url, why);
  else
    mg_debug("store: redis %s still unreachable (%s)", s->url, why);
  s->was_up = false;
  s->next_connect = now(s) + s->backoff;
  s->backoff = s->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff * 2;
}

/* ---- overrides ------------------------------------------------------------------ */

struct write_req {
  struct mg_store *s;
  int64_t ts;
  char flag[];
};

static void on_written(redisAsyncContext *ac, void *reply, void *priv) {
  struct write_req *w = priv;
  struct mg_store *s = w->s;
  redisReply *r = reply;
  if (cmd_reply(s, ac, r, "writing an override")) {
    /* Written, or Redis held a newer change (read back by the resync
     * that follows): either way this one is settled. */
    pending_done(s, w->flag, w->ts);
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 1)
      atomic_fetch_add(&s->written, 1);
  }
  free(w);
}

/* Write flag's override as the runtime holds it (ts: when it changed). */
static void write_flag(struct mg_store *s, const char *flag, int64_t ts,
                       bool force) {
  const struct mg_override *x =
      mg_overrides_find(mg_rt_overrides(s->rt), flag);
  char *value = value_json(s, x, ts), *msg = message_json(s, "override",
                                                          "flag", flag);
  char tsbuf[24];
  size_t fl = strlen(flag);
  struct write_req *w = malloc(sizeof(*w) + fl + 1);
  const char *argv[10];
  size_t lens[10];
  int i;
  if (value == NULL || msg == NULL || w == NULL)
    goto out;
  w->s = s;
  w->ts = ts;
  memcpy(w->flag, flag, fl + 1);
  snprintf(tsbuf, sizeof(tsbuf), "%lld", (long long)ts);
  argv[0] = "EVAL";
  argv[1] = set_script;
  argv[2] = "2";
  argv[3] = s->key;
  argv[4] = s->channel;
  argv[5] = flag;
  argv[6] = value;
  argv[7] = tsbuf;
  argv[8] = msg;
  argv[9] = force ? "1" : "0";
  for (i = 0; i < 10; i++)
    lens[i] = strlen(argv[i]);
  if (cmd_send(s, on_written, w, 10, argv, lens) == 0)
    w = NULL;
out:
  free(w);
  free(value);
  free(msg);
}

static int copy_override(struct mg_overrides *to, const struct mg_override *x) {
  if (x->killed && mg_overrides_kill(to, x->flag, true, x->updated_ms) != 0)
    return -ENOMEM;
  if (x->has_weights &&
      mg_overrides_set_weights(to, x->flag, (const char *const *)x->variants,
                               x->weights, x->nweights, x->updated_ms) != 0)
    return -ENOMEM;
  return 0;
}

static bool override_equal(const struct mg_override *a,
                           const struct mg_override *b) {
  uint32_t i, j;
  if (b == NULL || a->killed != b->killed ||
      a->has_weights != b->has_weights || a->updated_ms != b->updated_ms)
    return false;
  if (!a->has_weights)
    return true;
  if (a->nweights != b->nweights)
    return false;
  for (i = 0; i < a->nweights; i++) {
    for (j = 0; j < b->nweights; j++)
      if (strcmp(a->variants[i], b->variants[j]) == 0)
        break;
    if (j == b->nweights || a->weights[i] != b->weights[j])
      return false;
  }
  return true;
}

static bool overrides_equal(const struct mg_overrides *a,
                            const struct mg_overrides *b) {
  size_t i;
  if (a->n != b->n)
    return false;
  for (i = 0; i < a->n; i++)
    if (!override_equal(&a->v[i], mg_overrides_find(b, a->v[i].flag)))
      return false;
  return true;
}

/* One field of the hash into fresh; false when it is not ours to read. */
static void parse_field(struct mg_overrides *fresh, const char *flag,
                        const char *text, size_t len) {
  cJSON *o = cJSON_ParseWithLength(text, len);
  const cJSON *k = cJSON_GetObjectItemCaseSensitive(o, "killed");
  const cJSON *w = cJSON_GetObjectItemCaseSensitive(o, "weights");
  const cJSON *u = cJSON_GetObjectItemCaseSensitive(o, "updated_ms");
  int64_t ts = cJSON_IsNumber(u) ? (int64_t)u->valuedouble : 0;
  if (!cJSON_IsObject(o)) {
    mg_warn("store: field %s of the overrides hash is not JSON: ignored",
            flag);
    goto out;
  }
  if (cJSON_IsTrue(k) && mg_overrides_kill(fresh, flag, true, ts) != 0)
    goto out;
  if (cJSON_IsObject(w)) {
    const char *names[MG_FLAG_MAX_VARIANTS];
    uint32_t bp[MG_FLAG_MAX_VARIANTS], n = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, w) {
      double x = cJSON_IsNumber(v) ? v->valuedouble : -1;
      if (n == MG_FLAG_MAX_VARIANTS || !(x >= 0 && x <= 100))
        goto out;
      names[n] = v->string;
      bp[n++] = (uint32_t)(x * 100 + 0.5);
    }
    if (mg_overrides_set_weights(fresh, flag, names, bp, n, ts) != 0)
      goto out;
  }
out:
  cJSON_Delete(o);
}

/* The hash (HGETALL's flat array of fields and values) against the
 * runtime: the fleet's state with this instance's unsettled changes kept,
 * and what Redis lost written back. */
static void apply_hash(struct mg_store *s, const redisReply *r) {
  const struct mg_overrides *local = mg_rt_overrides(s->rt);
  struct mg_overrides fresh;
  size_t i;
  char **lost = NULL;
  int64_t *lost_ts = NULL;
  size_t nlost = 0;

  mg_overrides_init(&fresh);
  for (i = 0; i + 1 < r->elements; i += 2) {
    const redisReply *f = r->element[i], *v = r->element[i + 1];
    if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
        memchr(f->str, '\0', f->len) || pending_find(s, f->str))
      continue;
    parse_field(&fresh, f->str, v->str, v->len);
  }
  if (local->n) {
    lost = calloc(local->n, sizeof(*lost));
    lost_ts = calloc(local->n, sizeof(*lost_ts));
  }
  for (i = 0; i < local->n; i++) {
    const struct mg_override *x = &local->v[i];
    bool in_redis = false;
    size_t j;
    if (!pending_find(s, x->flag)) {
      for (j = 0; j + 1 < r->elements && !in_redis; j += 2)
        in_redis = r->element[j]->type == REDIS_REPLY_STRING &&
                   strcmp(r->element[j]->str, x->flag) == 0;
      if (in_redis)
        continue;
      /* Redis does not know it (it restarted without persistence, or this
       * instance set it while Redis was away and restarted since): keep it
       * and write it back, unless another instance has written since. */
      if (lost && lost_ts) {
        lost[nlost] = x->flag;
        lost_ts[nlost++] = x->updated_ms;
      }
    }
    (void)copy_override(&fresh, x);
  }
  for (i = 0; i < nlost; i++) {
    char *flag = strdup(lost[i]);
    if (flag == NULL)
      continue;
    mg_info("store: redis does not hold the override of flag %s: writing "
            "it back",
            flag);
    pending_set(s, flag, lost_ts[i]);
    write_flag(s, flag, lost_ts[i], false);
    free(flag);
  }
  free(lost);
  free(lost_ts);
  if (!overrides_equal(&fresh, local) &&
      mg_rt_replace_overrides(s->rt, &fresh, "redis") != 0)
    mg_error("store: out of memory applying the fleet's overrides");
  mg_overrides_free(&fresh);
  atomic_fetch_add(&s->syncs, 1);
  pthread_mutex_lock(&s->mu);
  s->last_sync = mg_wall_ms();
  pthread_mutex_unlock(&s->mu);
}

static void on_hash(redisAsyncContext *ac, void *reply, void *priv) {
  struct mg_store *s = priv;
  redisReply *r = reply;
  if (!cmd_reply(s, ac, r, "reading the overrides"))
    return;
  if (r->type == REDIS_REPLY_ARRAY)
    apply_hash(s, r);
}

static void resync(struct mg_store *s) {
  const char *argv[2] = {"HGETALL", s->key};
  size_t lens[2] = {7, strlen(s->key)};
  if (!atomic_load(&s->reachable))
    return;
  s->next_resync = now(s) + s->resync_ms;
  (void)cmd_send(s, on_hash, s, 2, argv, lens);
  ramps_read(s);
}

void mg_store_override_changed(struct mg_store *s, const char *flag) {
  const struct mg_override *x;
  int64_t ts;
  if (s == NULL || s->closing)
    return;
  x = mg_overrides_find(mg_rt_overrides(s->rt), flag);
  /* A cleared override leaves no entry: its tombstone is dated now. */
  ts = x ? x->updated_ms : mg_wall_ms();
  pending_set(s, flag, ts);
  if (atomic_load(&s->reachable))
    write_flag(s, flag, ts, true);
  else
    mg_warn("store: the change of flag %s is in force on this instance "
            "only; it is written to redis when it returns",
            flag);
}

/* ---- messages and breaker hints ------------------------------------------------ */

static void on_message(redisAsyncContext *ac, void *reply, void *priv) {
  struct mg_store *s = priv;
  redisReply *r = reply;
  const redisReply *kind, *body;
  cJSON *m;
  const cJSON *type, *inst;
  if (ac != s->sub)
    return;
  if (r == NULL) {
    drop(s, "the subscription closed");
    return;
  }
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 3)
    return;
  kind = r->element[0];
  body = r->element[2];
  if (kind->type != REDIS_REPLY_STRING)
    return;
  if (strcmp(kind->str, "subscribe") == 0) {
    s->sub_ready = true;
    became_reachable(s);
    return;
  }
  if (strcmp(kind->str, "message") != 0 || body->type != REDIS_REPLY_STRING)
    return;
  m = cJSON_ParseWithLength(body->str, body->len);
  type = cJSON_GetObjectItemCaseSensitive(m, "type");
  inst = cJSON_GetObjectItemCaseSensitive(m, "instance");
  if (cJSON_IsString(type) && cJSON_IsString(inst) &&
      strcmp(inst->valuestring, s->instance) != 0) {
    if (strcmp(type->valuestring, "override") == 0) {
      resync(s);
    } else if (strcmp(type->valuestring, "ramp") == 0) {
      ramps_read(s);
    } else if (strcmp(type->valuestring, "breaker") == 0) {
      const cJSON *t = cJSON_GetObjectItemCaseSensitive(m, "target");
      if (cJSON_IsString(t))
        mg_rt_breaker_hint(s->rt, t->valuestring, inst->valuestring, now(s));
    }
  }
  cJSON_Delete(m);
}

static void on_published(redisAsyncContext *ac, void *reply, void *priv) {
  (void)cmd_reply(priv, ac, reply, "publishing a breaker hint");
}

static void on_wake(uv_async_t *a) {
  struct mg_store *s = a->data;
  char *hints[HINT_QUEUE];
  unsigned n, i;
  pthread_mutex_lock(&s->mu);
  n = s->nhints;
  memcpy(hints, s->hints, n * sizeof(hints[0]));
  s->nhints = 0;
  pthread_mutex_unlock(&s->mu);
  for (i = 0; i < n; i++) {
    char *msg = message_json(s, "breaker", "target", hints[i]);
    const char *argv[3] = {"PUBLISH", s->channel, msg};
    size_t lens[3] = {7, strlen(s->channel), msg ? strlen(msg) : 0};
    /* A hint is about now: when Redis is away it is not kept. */
    if (msg && atomic_load(&s->reachable))
      (void)cmd_send(s, on_published, s, 3, argv, lens);
    free(msg);
    free(hints[i]);
  }
}

void mg_store_breaker_opened(struct mg_store *s, const char *target) {
  char *t;
  if (s == NULL)
    return;
  t = strdup(target);
  pthread_mutex_lock(&s->mu);
  if (t && !s->closing && s->nhints < HINT_QUEUE) {
    s->hints[s->nhints++] = t;
    t = NULL;
    uv_async_send(&s->wake);
  }
  pthread_mutex_unlock(&s->mu);
  free(t);
}

/* ---- ramps ---------------------------------------------------------------------- */

static struct ramp_lead *ramp_get(struct mg_store *s, const char *flag,
                                  bool create) {
  struct ramp_lead *v;
  size_t i;
  for (i = 0; i < s->nramps; i++)
    if (strcmp(s->ramps[i].flag, flag) == 0)
      return &s->ramps[i];
  if (!create)
    return NULL;
  v = realloc(s->ramps, (s->nramps + 1) * sizeof(*v));
  if (v == NULL)
    return NULL;
  s->ramps = v;
  memset(&v[s->nramps], 0, sizeof(*v));
  if ((v[s->nramps].flag = strdup(flag)) == NULL)
    return NULL;
  return &v[s->nramps++];
}

/* "<prefix>ramp:<flag>:<what>" */
static char *ramp_key(const struct mg_store *s, const char *flag,
                      const char *what) {
  size_t n = strlen(s->prefix) + strlen(flag) + strlen(what) + 8;
  char *k = malloc(n);
  if (k)
    snprintf(k, n, "%sramp:%s:%s", s->prefix, flag, what);
  return k;
}

struct ramp_req {
  struct mg_store *s;
  int64_t sent;       /* uv_now when sent */
  int64_t expected;   /* the version a write replaces */
  char flag[];
};

static struct ramp_req *ramp_req_new(struct mg_store *s, const char *flag) {
  size_t n = strlen(flag);
  struct ramp_req *q = malloc(sizeof(*q) + n + 1);
  if (q == NULL)
    return NULL;
  q->s = s;
  q->sent = now(s);
  q->expected = 0;
  memcpy(q->flag, flag, n + 1);
  return q;
}

static void ramps_read(struct mg_store *s);
static void ramp_write(struct mg_store *s, struct ramp_lead *e);

static void on_ramp_written(redisAsyncContext *ac, void *reply, void *priv) {
  struct ramp_req *q = priv;
  struct mg_store *s = q->s;
  redisReply *r = reply;
  struct ramp_lead *e = ramp_get(s, q->flag, false);
  if (e)
    e->writing = false;
  if (!cmd_reply(s, ac, r, "writing a ramp's state")) {
    if (e)
      e->dirty = true; /* written again when Redis is back */
    free(q);
    return;
  }
  if (e && r->type == REDIS_REPLY_INTEGER && r->integer > 0) {
    e->version = r->integer;
    if (e->dirty) {
      e->dirty = false;
      ramp_write(s, e);
    }
  } else if (e && r->type == REDIS_REPLY_INTEGER) {
    /* Fenced (this instance lost the lease) or overtaken (the state
     * changed there since): the fleet's state wins. */
    mg_warn("store: the ramp of flag %s changed on another instance (%s): "
            "its state there is put in force here",
            q->flag, r->integer == -2 ? "this instance's lease expired"
                                      : "a newer change");
    if (r->integer == -2)
      e->token = 0;
    e->dirty = false;
    ramps_read(s);
  }
  free(q);
}

/* Write this instance's state of the ramp (leader: fenced by its token;
 * an admin action elsewhere: token 0), replacing the version it knows. */
static void ramp_write(struct mg_store *s, struct ramp_lead *e) {
  cJSON *st = mg_rt_ramp_state_json(s->rt, e->flag), *o = NULL;
  char *value = NULL, *msg = NULL, tok[24], ver[24];
  char *lease = ramp_key(s, e->flag, "lease");
  struct ramp_req *q = ramp_req_new(s, e->flag);
  const char *argv[11];
  size_t lens[11];
  int i;
  if (e->writing) {
    e->dirty = true;
    goto out;
  }
  if (st == NULL || lease == NULL || q == NULL ||
      (o = cJSON_CreateObject()) == NULL)
    goto out;
  cJSON_AddItemToObject(o, "state", st);
  st = NULL;
  cJSON_AddNumberToObject(o, "version", (double)(e->version + 1));
  cJSON_AddNumberToObject(o, "token", (double)e->token);
  cJSON_AddStringToObject(o, "instance", s->instance);
  value = cJSON_PrintUnformatted(o);
  msg = message_json(s, "ramp", "flag", e->flag);
  if (value == NULL || msg == NULL)
    goto out;
  snprintf(tok, sizeof(tok), "%lld", (long long)e->token);
  snprintf(ver, sizeof(ver), "%lld", (long long)e->version);
  q->expected = e->version;
  argv[0] = "EVAL";
  argv[1] = ramp_script;
  argv[2] = "3";
  argv[3] = s->ramps_key;
  argv[4] = lease;
  argv[5] = s->channel;
  argv[6] = e->flag;
  argv[7] = value;
  argv[8] = tok;
  argv[9] = ver;
  argv[10] = msg;
  for (i = 0; i < 11; i++)
    lens[i] = strlen(argv[i]);
  if (cmd_send(s, on_ramp_written, q, 11, argv, lens) == 0) {
    q = NULL;
    e->writing = true;
  } else {
    e->dirty = true;
  }
out:
  cJSON_Delete(st);
  cJSON_Delete(o);
  free(value);
  free(msg);
  free(lease);
  free(q);
}

/* The ramps hash: adopt what the fleet decided (a newer version). */
static void apply_ramps(struct mg_store *s, const redisReply *r) {
  size_t i, k;
  /* Entries may be added below: room for every field too. */
  bool *seen = calloc(s->nramps + r->elements / 2 + 1, sizeof(*seen));
  for (i = 0; i + 1 < r->elements; i += 2) {
    const redisReply *f = r->element[i], *v = r->element[i + 1];
    struct ramp_lead *e;
    cJSON *o;
    const cJSON *ver, *st, *inst;
    if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
        memchr(f->str, '\0', f->len))
      continue;
    /* Only ramps this instance runs. */
    if ((o = mg_rt_ramp_state_json(s->rt, f->str)) == NULL)
      continue;
    cJSON_Delete(o);
    e = ramp_get(s, f->str, true);
    if (e == NULL)
      continue;
    k = (size_t)(e - s->ramps);
    if (seen && k < s->nramps)
      seen[k] = true;
    o = cJSON_ParseWithLength(v->str, v->len);
    ver = cJSON_GetObjectItemCaseSensitive(o, "version");
    st = cJSON_GetObjectItemCaseSensitive(o, "state");
    inst = cJSON_GetObjectItemCaseSensitive(o, "instance");
    if (cJSON_IsNumber(ver) && cJSON_IsObject(st) &&
        (int64_t)ver->valuedouble > e->version && !e->writing) {
      e->version = (int64_t)ver->valuedouble;
      if (mg_rt_ramp_adopt(s->rt, e->flag, st,
                           cJSON_IsString(inst) ? inst->valuestring : "?") !=
          0)
        mg_warn("store: the ramp state of flag %s in redis is not usable",
                e->flag);
    }
    cJSON_Delete(o);
  }
  /* Ramps Redis does not hold (it lost them, or nobody wrote yet): the
   * leader writes its state at its next lease round. */
  for (k = 0; seen && k < s->nramps; k++)
    if (!seen[k] && !s->ramps[k].writing)
      s->ramps[k].version = 0;
  free(seen);
}

static void on_ramps(redisAsyncContext *ac, void *reply, void *priv) {
  struct mg_store *s = priv;
  redisReply *r = reply;
  if (!cmd_reply(s, ac, r, "reading the ramps"))
    return;
  if (r->type == REDIS_REPLY_ARRAY)
    apply_ramps(s, r);
}

static void ramps_read(struct mg_store *s) {
  const char *argv[2] = {"HGETALL", s->ramps_key};
  size_t lens[2] = {7, strlen(s->ramps_key)};
  (void)cmd_send(s, on_ramps, s, 2, argv, lens);
}

static void on_lease(redisAsyncContext *ac, void *reply, void *priv) {
  struct ramp_req *q = priv;
  struct mg_store *s = q->s;
  redisReply *r = reply;
  struct ramp_lead *e;
  if (!cmd_reply(s, ac, r, "a ramp's lease") ||
      (e = ramp_get(s, q->flag, false)) == NULL ||
      r->type != REDIS_REPLY_INTEGER) {
    free(q);
    return;
  }
  if (r->integer > 0) {
    if (e->token != r->integer)
      mg_info("store: this instance leads the ramp of flag %s (fencing "
              "token %lld)",
              e->flag, (long long)r->integer);
    e->token = r->integer;
    /* Another instance may take the lease once it expires in Redis: act
     * only until well before (a reply's delay and clock rates). */
    e->lead_until = q->sent + (int64_t)s->lease_ms - (int64_t)s->timeout_ms;
    if (e->version == 0 && !e->writing)
      ramp_write(s, e); /* the fleet's first record of this ramp */
  } else {
    if (e->token > 0)
      mg_info("store: another instance leads the ramp of flag %s now",
              e->flag);
    e->token = 0;
  }
  {
    /* What /readyz and /admin/state say this instance leads. */
    char buf[512];
    size_t i, n = 0;
    buf[n++] = '[';
    for (i = 0; i < s->nramps; i++)
      if (s->ramps[i].token > 0 &&
          n + strlen(s->ramps[i].flag) + 4 < sizeof(buf))
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s\"%s\"",
                              n > 1 ? "," : "", s->ramps[i].flag);
    buf[n++] = ']';
    buf[n] = '\0';
    pthread_mutex_lock(&s->mu);
    memcpy(s->leads, buf, n + 1);
    pthread_mutex_unlock(&s->mu);
  }
  free(q);
}

static void on_views(redisAsyncContext *ac, void *reply, void *priv) {
  struct ramp_req *q = priv;
  struct mg_store *s = q->s;
  redisReply *r = reply;
  struct ramp_lead *e;
  size_t i, n = 0, one = sizeof(struct mg_window_view);
  struct mg_window_view *v;
  if (!cmd_reply(s, ac, r, "reading the guard windows") ||
      (e = ramp_get(s, q->flag, false)) == NULL ||
      r->type != REDIS_REPLY_ARRAY) {
    free(q);
    return;
  }
  v = calloc(r->elements ? r->elements : 1, 2 * one);
  for (i = 0; v && i < r->elements; i++) {
    const redisReply *b = r->element[i];
    uint32_t sz;
    if (b->type != REDIS_REPLY_STRING || b->len != 8 + 2 * one ||
        memcmp(b->str, VIEW_MAGIC, 4) != 0)
      continue;
    memcpy(&sz, b->str + 4, 4);
    if (sz != one)
      continue;
    memcpy(&v[2 * n], b->str + 8, 2 * one);
    n++;
  }
  if (v) {
    free(e->views);
    e->views = v;
    e->nviews = n;
  }
  free(q);
}

static void on_plain(redisAsyncContext *ac, void *reply, void *priv) {
  (void)cmd_reply(priv, ac, reply, "publishing guard windows");
}

/* Publish this instance's guard windows of e's ramp, and fetch the
 * others' when it leads. */
static void ramp_views_round(struct mg_store *s, struct ramp_lead *e) {
  size_t one = sizeof(struct mg_window_view);
  struct mg_window_view *v = malloc(2 * one);
  char *blob = malloc(8 + 2 * one), *key = NULL, *set = NULL, *pre = NULL;
  char px[24], score[24];
  uint32_t sz = (uint32_t)one;
  const char *argv[8];
  size_t lens[8];
  if (v == NULL || blob == NULL ||
      !mg_rt_ramp_local_views(s->rt, e->flag, now(s), v))
    goto out;
  memcpy(blob, VIEW_MAGIC, 4);
  memcpy(blob + 4, &sz, 4);
  memcpy(blob + 8, v, 2 * one);
  {
    size_t n = strlen(s->instance) + 8;
    char *what = malloc(n);
    if (what)
      snprintf(what, n, "view:%s", s->instance);
    key = what ? ramp_key(s, e->flag, what) : NULL;
    free(what);
  }
  set = ramp_key(s, e->flag, "views");
  pre = ramp_key(s, e->flag, "view:");
  if (key == NULL || set == NULL || pre == NULL)
    goto out;
  snprintf(px, sizeof(px), "%u", s->lease_ms * 3);
  argv[0] = "SET";
  argv[1] = key;
  argv[2] = blob;
  argv[3] = "PX";
  argv[4] = px;
  lens[0] = 3;
  lens[1] = strlen(key);
  lens[2] = 8 + 2 * one;
  lens[3] = 2;
  lens[4] = strlen(px);
  (void)cmd_send(s, on_plain, s, 5, argv, lens);
  snprintf(score, sizeof(score), "%lld", (long long)mg_wall_ms());
  argv[0] = "ZADD";
  argv[1] = set;
  argv[2] = score;
  argv[3] = s->instance;
  lens[0] = 4;
  lens[1] = strlen(set);
  lens[2] = strlen(score);
  lens[3] = strlen(s->instance);
  (void)cmd_send(s, on_plain, s, 4, argv, lens);
  if (e->token > 0) {
    struct ramp_req *q = ramp_req_new(s, e->flag);
    snprintf(score, sizeof(score), "%lld",
             (long long)(mg_wall_ms() - 3 * (int64_t)s->lease_ms));
    argv[0] = "EVAL";
    argv[1] = views_script;
    argv[2] = "1";
    argv[3] = set;
    argv[4] = score;
    argv[5] = s->instance;
    argv[6] = pre;
    lens[0] = 4;
    lens[1] = strlen(views_script);
    lens[2] = 1;
    lens[3] = strlen(set);
    lens[4] = strlen(score);
    lens[5] = strlen(s->instance);
    lens[6] = strlen(pre);
    if (q && cmd_send(s, on_views, q, 7, argv, lens) != 0)
      free(q);
  }
out:
  free(v);
  free(blob);
  free(key);
  free(set);
  free(pre);
}

/* Every lease_ms / 3: take or renew each ramp's lease, publish the guard
 * windows, and (leader) fetch the others'. */
static void ramp_round(struct mg_store *s) {
  const char *flag;
  size_t i;
  s->next_ramp = now(s) + s->lease_ms / 3;
  for (i = 0; (flag = mg_rt_ramp_flag(s->rt, i)) != NULL; i++) {
    struct ramp_lead *e = ramp_get(s, flag, true);
    char *lease = ramp_key(s, flag, "lease"),
         *token = ramp_key(s, flag, "token"), ms[24];
    struct ramp_req *q = ramp_req_new(s, flag);
    const char *argv[7];
    size_t lens[7];
    int k;
    if (e && lease && token && q) {
      snprintf(ms, sizeof(ms), "%u", s->lease_ms);
      argv[0] = "EVAL";
      argv[1] = lease_script;
      argv[2] = "2";
      argv[3] = lease;
      argv[4] = token;
      argv[5] = s->instance;
      argv[6] = ms;
      for (k = 0; k < 7; k++)
        lens[k] = strlen(argv[k]);
      if (cmd_send(s, on_lease, q, 7, argv, lens) == 0)
        q = NULL;
      if (e->dirty && !e->writing) {
        e->dirty = false;
        ramp_write(s, e);
      }
      ramp_views_round(s, e);
    }
    free(q);
    free(lease);
    free(token);
  }
}

bool mg_store_ramp_leads(struct mg_store *s, const char *flag) {
  struct ramp_lead *e;
  if (s == NULL)
    return true;
  e = ramp_get(s, flag, false);
  return e && e->token > 0 && now(s) < e->lead_until &&
         atomic_load(&s->reachable);
}

void mg_store_ramp_fleet_views(struct mg_store *s, const char *flag,
                               struct mg_window_view *v) {
  struct ramp_lead *e = s ? ramp_get(s, flag, false) : NULL;
  size_t i;
  for (i = 0; e && i < e->nviews; i++) {
    mg_window_view_merge(&v[0], &e->views[2 * i]);
    mg_window_view_merge(&v[1], &e->views[2 * i + 1]);
  }
}

void mg_store_ramp_changed(struct mg_store *s, const char *flag) {
  struct ramp_lead *e;
  if (s == NULL || s->closing || (e = ramp_get(s, flag, true)) == NULL)
    return;
  if (atomic_load(&s->reachable))
    ramp_write(s, e);
  else
    e->dirty = true;
}

/* ---- the tick --------------------------------------------------------------------- */

static void on_tick(uv_timer_t *t) {
  struct mg_store *s = t->data;
  int64_t n = now(s);
  if (s->closing)
    return;
  if (s->cmd && !atomic_load(&s->reachable) &&
      n - s->connect_started > (int64_t)s->timeout_ms) {
    drop(s, "no answer within timeout_ms");
    return;
  }
  if (s->resolving && n - s->connect_started > (int64_t)s->timeout_ms * 4) {
    /* A lookup that hangs: try again later (its callback is ignored). */
    uv_cancel((uv_req_t *)&s->gai);
    return;
  }
  if (s->awaiting && n - s->busy_since > (int64_t)s->timeout_ms) {
    drop(s, "no reply within timeout_ms");
    return;
  }
  if (s->cmd == NULL && !s->resolving && n >= s->next_connect) {
    start_connect(s);
    return;
  }
  if (atomic_load(&s->reachable) && n >= s->next_resync)
    resync(s);
  if (atomic_load(&s->reachable) && n >= s->next_ramp)
    ramp_round(s);
}

/* ---- start and stop ----------------------------------------------------------------- */

static char *read_password(const struct mg_redis_cfg *c, char *err,
                           size_t errlen) {
  char *pw = NULL;
  if (c->password_env) {
    const char *v = getenv(c->password_env);
    if (v == NULL || *v == '\0') {
      snprintf(err, errlen,
               "redis.password_env names %s, which is not set or empty",
               c->password_env);
      return NULL;
    }
    pw = strdup(v);
  } else if (c->password_file) {
    FILE *f = fopen(c->password_file, "rb");
    char buf[1024];
    size_t n;
    if (f == NULL) {
      snprintf(err, errlen, "redis.password_file %s: %s", c->password_file,
               strerror(errno));
      return NULL;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
      n--;
    buf[n] = '\0';
    if (n == 0) {
      snprintf(err, errlen, "redis.password_file %s is empty",
               c->password_file);
      return NULL;
    }
    pw = strdup(buf);
    memset(buf, 0, sizeof(buf));
  }
  return pw;
}

/* The fleet's overrides, read once before serving, so that an instance
 * that starts (or all that restart) serve the fleet's state from their
 * first request. Blocking, bounded by timeout_ms per step, before any
 * worker runs. */
static void load_sync(struct mg_store *s) {
  struct timeval tv = {(time_t)(s->timeout_ms / 1000),
                       (suseconds_t)(s->timeout_ms % 1000) * 1000};
  redisContext *c = s->unix_path
                        ? redisConnectUnixWithTimeout(s->unix_path, tv)
                        : redisConnectWithTimeout(s->host, s->port, tv);
  redisReply *r = NULL;
  const char *why = NULL;
  if (c == NULL || c->err) {
    why = c ? c->errstr : "out of memory";
    goto out;
  }
  redisSetTimeout(c, tv);
  if (s->password) {
    r = redisCommand(c, "AUTH %s", s->password);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
      why = r ? r->str : c->errstr;
      goto out;
    }
    freeReplyObject(r);
  }
  if (s->db) {
    r = redisCommand(c, "SELECT %u", s->db);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
      why = r ? r->str : c->errstr;
      goto out;
    }
    freeReplyObject(r);
  }
  r = redisCommand(c, "HGETALL %s", s->key);
  if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
    why = r && r->type == REDIS_REPLY_ERROR ? r->str : c->errstr;
    goto out;
  }
  apply_hash(s, r);
  freeReplyObject(r);
  r = redisCommand(c, "HGETALL %s", s->ramps_key);
  if (r && r->type == REDIS_REPLY_ARRAY)
    apply_ramps(s, r);
  mg_info("store: loaded the fleet's overrides from redis %s (%zu flag(s) "
          "overridden)",
          s->url, mg_rt_overrides(s->rt)->n);
out:
  if (why) {
    char msg[300];
    snprintf(msg, sizeof(msg), "%s", why);
    mg_warn("store: redis %s unreachable at start (%s): serving on the state "
            "file's overrides until it returns",
            s->url, msg);
    set_detail(s,
               "redis %s unreachable (%s): serving on the last known state; "
               "admin changes need force_local",
               s->url, msg);
    atomic_fetch_add(&s->errors, 1);
  }
  if (r)
    freeReplyObject(r);
  if (c)
    redisFree(c);
}

struct mg_store *mg_store_new(const struct mg_redis_cfg *c, uv_loop_t *loop,
                              struct mg_runtime *rt, const char *instance,
                              char *err, size_t errlen) {
  struct mg_store *s = calloc(1, sizeof(*s));
  size_t pl = strlen(c->prefix ? c->prefix : "");
  if (s == NULL)
    goto oom;
  s->loop = loop;
  s->rt = rt;
  pthread_mutex_init(&s->mu, NULL);
  atomic_init(&s->reachable, false);
  atomic_init(&s->errors, 0);
  atomic_init(&s->syncs, 0);
  atomic_init(&s->written, 0);
  atomic_init(&s->npending_pub, 0);
  s->instance = strdup(c->instance ? c->instance : instance);
  s->url = strdup(c->url);
  snprintf(s->host, sizeof(s->host), "%s", c->host);
  s->port = c->port;
  s->unix_path = c->unix_path ? strdup(c->unix_path) : NULL;
  s->db = c->db;
  s->timeout_ms = c->timeout_ms;
  s->resync_ms = c->resync_ms;
  s->lease_ms = c->lease_ms;
  s->prefix = strdup(c->prefix ? c->prefix : "");
  s->ramps_key = malloc(pl + 16);
  s->key = malloc(pl + 16);
  s->channel = malloc(pl + 16);
  s->backoff = BACKOFF_MIN_MS;
  if (s->instance == NULL || s->url == NULL || s->key == NULL ||
      s->channel == NULL || s->prefix == NULL || s->ramps_key == NULL ||
      (c->unix_path && s->unix_path == NULL))
    goto oom;
  snprintf(s->key, pl + 16, "%soverrides", c->prefix ? c->prefix : "");
  snprintf(s->channel, pl + 16, "%sevents", c->prefix ? c->prefix : "");
  snprintf(s->ramps_key, pl + 16, "%sramps", c->prefix ? c->prefix : "");
  if ((c->password_env || c->password_file) &&
      (s->password = read_password(c, err, errlen)) == NULL) {
    mg_store_free(s);
    return NULL;
  }
  set_detail(s, "redis %s: connecting", s->url);
  load_sync(s);
  uv_timer_init(loop, &s->tick);
  s->tick.data = s;
  uv_async_init(loop, &s->wake, on_wake);
  s->wake.data = s;
  s->next_connect = 0;
  uv_timer_start(&s->tick, on_tick, 0, TICK_MS);
  return s;
oom:
  snprintf(err, errlen, "out of memory");
  mg_store_free(s);
  return NULL;
}

void mg_store_close(struct mg_store *s) {
  if (s == NULL || s->closing)
    return;
  pthread_mutex_lock(&s->mu);
  s->closing = true;
  pthread_mutex_unlock(&s->mu);
  drop(s, "closing");
  if (s->resolving)
    uv_cancel((uv_req_t *)&s->gai);
  uv_close((uv_handle_t *)&s->tick, NULL);
  uv_close((uv_handle_t *)&s->wake, NULL);
}

void mg_store_free(struct mg_store *s) {
  size_t i;
  if (s == NULL)
    return;
  for (i = 0; i < s->nhints; i++)
    free(s->hints[i]);
  for (i = 0; i < s->npending; i++)
    free(s->pending[i].flag);
  free(s->pending);
  for (i = 0; i < s->nramps; i++) {
    free(s->ramps[i].flag);
    free(s->ramps[i].views);
  }
  free(s->ramps);
  free(s->prefix);
  free(s->ramps_key);
  if (s->password) {
    memset(s->password, 0, strlen(s->password));
    free(s->password);
  }
  free(s->instance);
  free(s->url);
  free(s->unix_path);
  free(s->key);
  free(s->channel);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

/* ---- what others read ------------------------------------------------------------ */

bool mg_store_reachable(const struct mg_store *s) {
  return s && atomic_load(&((struct mg_store *)s)->reachable);
}

int mg_store_ready_json(struct mg_store *s, struct mg_buf *out) {
  char ts[32] = "";
  int rc;
  pthread_mutex_lock(&s->mu);
  if (s->last_sync)
    mg_rfc3339_format(s->last_sync, ts);
  rc = mg_buf_puts(out, "{\"kind\":\"redis\",\"url\":");
  rc = rc ? rc : mg_buf_json_str(out, s->url, strlen(s->url));
  rc = rc ? rc : mg_buf_puts(out, ",\"instance\":");
  rc = rc ? rc : mg_buf_json_str(out, s->instance, strlen(s->instance));
  rc = rc ? rc
          : mg_buf_printf(out, ",\"reachable\":%s,\"detail\":",
                          atomic_load(&s->reachable) ? "true" : "false");
  rc = rc ? rc : mg_buf_json_str(out, s->detail, strlen(s->detail));
  rc = rc ? rc
          : mg_buf_printf(out,
                          ",\"pending_changes\":%zu,\"leads_ramps\":%s,"
                          "\"last_sync\":",
                          atomic_load(&s->npending_pub),
                          s->leads[0] ? s->leads : "[]");
  if (rc == 0)
    rc = ts[0] ? mg_buf_printf(out, "\"%s\"}", ts) : mg_buf_puts(out, "null}");
  pthread_mutex_unlock(&s->mu);
  return rc;
}

int mg_store_metrics(struct mg_store *s, struct mg_buf *out) {
  return mg_buf_printf(
      out,
      "# HELP modelgate_store_up Whether the fleet's store is reachable (0: "
      "serving on the last known state).\n"
      "# TYPE modelgate_store_up gauge\n"
      "modelgate_store_up{store=\"redis\"} %d\n"
      "# HELP modelgate_store_errors_total Times the store was found "
      "unreachable (a refused or lost connection, a timeout).\n"
      "# TYPE modelgate_store_errors_total counter\n"
      "modelgate_store_errors_total{store=\"redis\"} %lu\n"
      "# HELP modelgate_store_syncs_total Full reads of the fleet's overrides.\n"
      "# TYPE modelgate_store_syncs_total counter\n"
      "modelgate_store_syncs_total{store=\"redis\"} %lu\n"
      "# HELP modelgate_store_writes_total Overrides this instance wrote to "
      "the store.\n"
      "# TYPE modelgate_store_writes_total counter\n"
      "modelgate_store_writes_total{store=\"redis\"} %lu\n"
      "# HELP modelgate_store_pending_changes Changes made here that the "
      "store has not acknowledged yet.\n"
      "# TYPE modelgate_store_pending_changes gauge\n"
      "modelgate_store_pending_changes{store=\"redis\"} %zu\n",
      atomic_load(&s->reachable) ? 1 : 0, atomic_load(&s->errors),
      atomic_load(&s->syncs), atomic_load(&s->written),
      atomic_load(&s->npending_pub));
}
