/* worker.h - one event loop's worth of modelgate (h2o's context): its loop
 * and thread, its listener (SO_REUSEPORT when there are several), its
 * connections, its upstream engines, its scratch space, its Date cache and
 * its view of the state in force. DESIGN.md, "Scale -> Cores".
 *
 * A worker reads the process-wide state (struct mg_shared) through its
 * current snapshot: one atomic load per request tells whether it is still
 * the one in force. Everything else it touches on the request path is its
 * own. */
#ifndef MG_WORKER_H
#define MG_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/json.h"
#include "config/config.h"
#include "runtime/runtime.h"
#include "server/conn.h"
#include "telemetry/metrics.h"
#include "telemetry/telemetry.h"
#include "upstream/native.h"
#include "upstream/views.h"

/* What the whole process shares with its workers and handlers. */
struct mg_shared {
  struct mg_runtime *rt;         /* borrowed: outlives every worker */
  struct mg_telemetry *tm;       /* borrowed */
  unsigned nworkers;
  struct mg_worker *workers;     /* borrowed: all of them, for live gauges */
  const char *instance;          /* this instance's name (records, events,
                                  * notifications): host:port by default */
  /* Reload the config file (the admin API's /admin/reload): 0, or errors
   * in e and the old config keeps serving. Control thread only. */
  int (*reload)(void *arg, struct mg_cfg_errors *e);
  void *reload_arg;
  struct mg_store *store;        /* borrowed: the fleet's store
                                  * (store/redis.h), or NULL: alone */
};

struct mg_worker;
struct mg_store;

/* A worker's view of one snapshot: the reference it holds, and what it
 * derives from it for itself. Counted by the worker alone (the worker
 * while it is current, and each exchange begun on it). */
struct mg_wsnap {
  struct mg_snap *snap;            /* owned reference */
  unsigned refs;
  struct mg_worker *w;             /* borrowed */
  struct mg_up_views *views;       /* owned, built on first use */
  /* modelgate_flag_requests_total series by flag, variant and reason
   * slot, looked up on first use. */
  struct mg_series ***flag_series; /* owned: per flag, an owned array */
  /* The per-variant series, by flag and variant, made on first use. */
  struct mg_tel_variant ***variants; /* owned */
};

/* Decides what answers a request on this worker (handlers/). */
typedef void (*mg_route_fn)(void *owner, struct mg_http_req *req,
                            struct mg_route *out);

struct mg_worker {
  unsigned index;
  struct mg_shared *sh;          /* borrowed */
  struct mg_wtel *tel;           /* borrowed from sh->tm */
  uv_loop_t *loop;               /* own_loop, or the main loop */
  uv_loop_t own_loop;
  uv_thread_t thread;
  bool threaded;                 /* runs on a thread of its own */
  bool running;                  /* mg_worker_run succeeded */
  struct mg_wsnap *cur;          /* the snapshot in force here */
  struct mg_config *cfg;         /* cur->snap->cfg, for connections */
  uv_tcp_t listener;
  bool listening;
  struct mg_conn_env env;
  bool read_busy;
  struct mg_up_engines up;       /* owned */
  int engines_open;              /* engines still closing */
  struct mg_json_doc scratch;    /* owned: tokens of the body being looked
                                  * at; valid only within one callback */
  size_t inflight;               /* exchanges not finished, orphans too */
  /* Mirrors of env.nconns and inflight for a scrape on another thread. */
  _Atomic size_t live_conns, live_inflight;
  struct mg_native_stats up_stats; /* the native engine's, copied on the
                                    * tick; under wake_mu */
  bool draining;
  bool closed;
  int open_handles;
  char date[40];                 /* IMF-fixdate, refreshed by tick */
  uv_timer_t tick;
  uv_async_t wake;               /* messages from the control thread */
  _Atomic unsigned msgs;         /* MG_WMSG_* bits */
  uv_mutex_t wake_mu;            /* a post and the close of wake exclude
                                  * each other */
  bool wake_closed;              /* under wake_mu */
  uint64_t id_seed, id_counter, rng;
  void (*stopped)(void *arg, struct mg_worker *w); /* any thread */
  void *stopped_arg;
  char read_buf[MG_READ_BUF_SIZE];
};

enum {
  MG_WMSG_DRAIN = 1u << 0, /* SIGTERM: stop accepting, finish, close */
  MG_WMSG_ABORT = 1u << 1, /* grace over: end what is left */
};

/* Set the worker up on loop (NULL: a loop of its own, run on a thread by
 * mg_worker_run). The listener is bound (SO_REUSEPORT with several
 * workers); *port is the port it got (pass the first worker's port to the
 * others when the config asks for port 0). 0 or a negative code. */
int mg_worker_init(struct mg_worker *w, unsigned index, struct mg_shared *sh,
                   uv_loop_t *loop, mg_route_fn route, int *port,
                   void (*stopped)(void *arg, struct mg_worker *w),
                   void *stopped_arg) MG_WARN_UNUSED;
/* Start listening; for a threaded worker, start its thread. */
int mg_worker_run(struct mg_worker *w) MG_WARN_UNUSED;
/* Tell a worker something (any thread). */
void mg_worker_post(struct mg_worker *w, unsigned msgs);
/* After it stopped: join its thread and free what it owns. */
void mg_worker_free(struct mg_worker *w);

/* ---- for handlers (the worker's thread) --------------------------------- */

/* The snapshot in force, with a reference for the caller. */
struct mg_wsnap *mg_worker_snap(struct mg_worker *w);
void mg_wsnap_release(struct mg_wsnap *ws);
/* The upstream destinations of ws (built on first use); NULL when out of
 * memory. */
const struct mg_up_views *mg_wsnap_views(struct mg_wsnap *ws);
/* The series of flag f's variant v in this worker (NULL when out of
 * memory). */
struct mg_tel_variant *mg_wsnap_variant(struct mg_wsnap *ws,
                                        const struct mg_flag *f, uint32_t v);
/* Count a flag decision (reason slot: see handlers/exchange.c). */
void mg_wsnap_count_flag(struct mg_wsnap *ws, const struct mg_flag *f,
                         uint32_t variant, uint32_t slot, uint32_t nslots,
                         const char *reason);

/* An exchange began on this worker; its answer is counted (its last bytes
 * about to go out: the in-flight gauge drops then, with the other
 * counters); it ended. */
void mg_worker_begin(struct mg_worker *w);
void mg_worker_answered(struct mg_worker *w);
void mg_worker_end(struct mg_worker *w);

/* A fresh decision id: 32 lowercase hex digits, unique in the process. */
void mg_worker_new_id(struct mg_worker *w, char out[33]);
/* A random number for request units and jitter. */
uint64_t mg_worker_random(struct mg_worker *w);

/* This worker's gauges now (any thread): open connections, requests in
 * flight, upstream transfers, and pauses so far. */
void mg_worker_live(struct mg_worker *w, struct mg_tel_live *out);
/* An accept of this worker's listener (or of the admin listener, on
 * worker 0) failed with status: counted and logged, rate-limited. */
void mg_worker_accept_failed(struct mg_worker *w, bool admin, int status);

#endif
