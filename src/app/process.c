/* process.c - the serve command's lifecycle (process.h).
 *
 *   start    runtime (state file), telemetry (decision log), workers bound
 *            (SO_REUSEPORT), admin listener, signals, ramp timer, port file
 *   serve    workers on their loops; the control side on the main loop
 *   SIGHUP   reload: validate the file, apply it to the runtime (every
 *            worker sees the new snapshot on its next request)
 *   SIGTERM  stop accepting everywhere, let requests finish within the
 *            grace, abort what is left, close, join the threads, flush the
 *            decision log, exit 0 */
#include "app/process.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "common/log.h"
#include "common/time.h"
#include "handlers/admin.h"
#include "handlers/data.h"
#include "notify/notify.h"
#include "runtime/runtime.h"
#include "server/conn.h"
#include "server/worker.h"
#include "store/redis.h"
#include "telemetry/telemetry.h"

struct process {
  uv_loop_t *loop;                /* borrowed: the main loop */
  char *config_path;              /* owned, or NULL */
  const char *port_file;          /* borrowed */
  struct mg_runtime *rt;          /* owned */
  struct mg_telemetry *tm;        /* owned */
  struct mg_store *store;         /* owned: the fleet's store, or NULL */
  struct mg_shared sh;
  unsigned nworkers;
  unsigned ninit;                 /* workers set up */
  struct mg_worker *workers;      /* owned array; [0] on the main loop */
  uv_tcp_t admin_listener;
  bool admin_listening;
  int admin_port;
  struct mg_conn_env admin_env;   /* on worker 0's loop, its own budget */
  uv_signal_t sig_term, sig_int, sig_hup, sig_usr1;
  uv_timer_t grace_timer;
  uv_timer_t ramp_timer;
  uv_timer_t watch_timer;         /* fallback storms (mg_rt_watch) */
  uint32_t ramp_period;
  uv_async_t stopped_async;       /* a worker stopped (any thread) */
  _Atomic unsigned nstopped;
  bool draining;
  bool closed;
  int open_handles;
  int exit_code;
  uint32_t grace_ms;              /* server.shutdown_grace_ms at start */
  uint64_t shutdown_ns;           /* uv_hrtime() when draining began */
  char instance[300];             /* host:port, this instance's name */
  struct mg_notifier *notifier;   /* owned: notify.sinks of notify_cfg */
  struct mg_config *notify_cfg;   /* owned reference: the start config */
};

/* ---- hooks of the runtime ------------------------------------------------------- */

static void on_event(void *arg, const struct mg_event *ev) {
  struct process *p = arg;
  struct mg_event e = *ev;
  /* Which instance acted, once there are several. */
  if (e.instance == NULL && p->instance[0])
    e.instance = p->instance;
  mg_tel_event(p->tm, &e);
  /* A breaker of this instance opened (a hint names another instance):
   * the others skip the target too. */
  if (p->store && ev->instance == NULL && ev->target && ev->state &&
      strcmp(ev->type, "breaker") == 0 && strcmp(ev->state, "open") == 0)
    mg_store_breaker_opened(p->store, ev->target);
  if (p->notifier) {
    /* Ramp notifications carry the flag's release brief (issue 16.2). */
    const char *brief = NULL;
    struct mg_snap *s = e.flag && p->rt ? mg_rt_snap(p->rt) : NULL;
    size_t i;
    for (i = 0; s && i < s->cfg->flags.n && i < s->cfg->briefs.n; i++)
      if (strcmp(s->cfg->flags.v[i].name, e.flag) == 0)
        brief = mg_brief_summary(&s->cfg->briefs.v[i]);
    mg_notify_event(p->notifier, &e, brief);
    if (s)
      mg_snap_unref(s);
  }
}

static void on_override_changed(void *arg, const char *flag) {
  struct process *p = arg;
  mg_store_override_changed(p->store, flag);
}

/* Ramps in a fleet: one instance (the lease holder) judges each. */
static bool on_ramp_leads(void *arg, const char *flag) {
  struct process *p = arg;
  return mg_store_ramp_leads(p->store, flag);
}

static void on_ramp_fleet_views(void *arg, const char *flag,
                                struct mg_window_view *v) {
  struct process *p = arg;
  mg_store_ramp_fleet_views(p->store, flag, v);
}

static void on_ramp_changed(void *arg, const char *flag) {
  struct process *p = arg;
  mg_store_ramp_changed(p->store, flag);
}

/* ---- the ramp timer --------------------------------------------------------------- */

static void on_ramp_timer(uv_timer_t *t);

/* Run the guard checks at the period the runtime asks for. */
static void ramp_sync(struct process *p, uint32_t period) {
  if (period == p->ramp_period || p->closed)
    return;
  p->ramp_period = period;
  if (period == 0)
    uv_timer_stop(&p->ramp_timer);
  else
    uv_timer_start(&p->ramp_timer, on_ramp_timer, period, period);
}

/* How often the control side looks for fallback storms. */
#define WATCH_MS 5000

static void on_watch_timer(uv_timer_t *t) {
  struct process *p = t->data;
  mg_rt_watch(p->rt, (int64_t)uv_now(p->loop));
}

static void on_ramp_timer(uv_timer_t *t) {
  struct process *p = t->data;
  ramp_sync(p, mg_rt_tick(p->rt, mg_wall_ms(), (int64_t)uv_now(p->loop)));
}

/* ---- reload ---------------------------------------------------------------------------- */

static int reload(void *arg, struct mg_cfg_errors *e) {
  struct process *p = arg;
  struct mg_snap *old = mg_rt_snap(p->rt);
  struct mg_config *cfg;
  int rc = 0;

  if (p->config_path == NULL) {
    mg_cfg_error(e, "$", "modelgate runs on its built-in demo config: there "
                         "is no file to reload");
    rc = -EINVAL;
    goto out;
  }
  cfg = mg_config_load_file(p->config_path, e);
  if (cfg == NULL) {
    size_t i;
    mg_error("reload of %s refused; the old config keeps serving:",
             p->config_path);
    for (i = 0; i < e->n; i++)
      mg_error("  %s", e->msgs[i]);
    rc = -EINVAL;
    goto out;
  }
  {
    const struct mg_config *o = old->cfg;
    if (strcmp(cfg->server.listen_host, o->server.listen_host) != 0 ||
        cfg->server.listen_port != o->server.listen_port ||
        strcmp(cfg->admin.listen_host, o->admin.listen_host) != 0 ||
        cfg->admin.listen_port != o->admin.listen_port ||
        cfg->admin.enabled != o->admin.enabled ||
        cfg->server.workers != o->server.workers)
      mg_warn("reload: listen addresses and workers change only on restart");
    /* The state file is owned (locked) by this process from its start:
     * it moves only on restart, and the reload says so (issue 10.3). */
    if (strcmp(cfg->admin.state_file, o->admin.state_file) != 0)
      mg_warn("reload: admin.state_file changes only on restart: overrides "
              "stay in %s, not %s",
              o->admin.state_file, cfg->admin.state_file);
    if (cfg->redis.enabled != o->redis.enabled ||
        (cfg->redis.url && o->redis.url &&
         strcmp(cfg->redis.url, o->redis.url) != 0))
      mg_warn("reload: the redis section changes only on restart");
    if (cfg->notify.nsinks != o->notify.nsinks ||
        (cfg->notify.nsinks && p->notify_cfg == NULL))
      mg_warn("reload: notify.sinks change only on restart");
  }
  /* Requests in flight keep their snapshot and finish on it; new ones see
   * the new one from now on, on every worker. */
  rc = mg_rt_apply(p->rt, cfg);
  if (rc != 0) {
    mg_config_unref(cfg);
    mg_cfg_error(e, "$", "out of memory");
    goto out;
  }
  mg_log_set_level((enum mg_log_level)cfg->server.log_level);
  p->admin_env.max_connections = cfg->admin.max_connections;
  mg_info("reloaded %s: config %s -> %s", p->config_path, old->cfg->hash,
          cfg->hash);
  if (mg_tel_dlog_apply(p->tm, &cfg->dlog) != 0)
    mg_warn("reload: the decision log could not follow the new config");
  mg_rt_reload_event(p->rt, old->cfg->hash, cfg->hash, 0);
  ramp_sync(p, mg_rt_tick_period(p->rt));
  mg_config_unref(cfg);
out:
  if (rc != 0)
    mg_rt_reload_event(p->rt, old->cfg->hash, NULL, e->n);
  mg_tel_reload(p->tm, rc == 0);
  mg_snap_unref(old);
  return rc;
}

/* ---- shutdown ----------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) {
  struct process *p = h->data;
  p->open_handles--;
}

static void close_handle(struct process *p, uv_handle_t *h) {
  if (uv_is_closing(h))
    return;
  h->data = p;
  p->open_handles++;
  uv_close(h, on_handle_closed);
}

/* Every worker stopped and no admin connection is left: close the control
 * handles so that the main loop ends. */
static void maybe_close_all(struct process *p) {
  if (p->closed || !p->draining ||
      atomic_load(&p->nstopped) < p->ninit || p->admin_env.nconns > 0)
    return;
  p->closed = true;
  close_handle(p, (uv_handle_t *)&p->grace_timer);
  close_handle(p, (uv_handle_t *)&p->ramp_timer);
  close_handle(p, (uv_handle_t *)&p->watch_timer);
  close_handle(p, (uv_handle_t *)&p->sig_term);
  close_handle(p, (uv_handle_t *)&p->sig_int);
  close_handle(p, (uv_handle_t *)&p->sig_hup);
  close_handle(p, (uv_handle_t *)&p->sig_usr1);
  close_handle(p, (uv_handle_t *)&p->admin_listener);
  close_handle(p, (uv_handle_t *)&p->stopped_async);
  mg_store_close(p->store);
  mg_notify_close(p->notifier);
  mg_info("stopped");
}

static void on_admin_idle(void *owner) {
  /* owner is worker 0; the process is reached through its stopped_arg. */
  struct mg_worker *w0 = owner;
  maybe_close_all(w0->stopped_arg);
}

static void on_stopped_async(uv_async_t *a) { maybe_close_all(a->data); }

/* A worker is done (its thread, or the main one). */
static void on_worker_stopped(void *arg, struct mg_worker *w) {
  struct process *p = arg;
  (void)w;
  atomic_fetch_add(&p->nstopped, 1);
  uv_async_send(&p->stopped_async);
}

static void on_grace_over(uv_timer_t *t) {
  struct process *p = t->data;
  unsigned i;
  for (i = 0; i < p->ninit; i++)
    if (!p->workers[i].threaded || p->workers[i].running)
      mg_worker_post(&p->workers[i], MG_WMSG_ABORT);
  mg_conn_abort_all(&p->admin_env);
}

static void shutdown_begin(struct process *p) {
  unsigned i;
  if (p->draining)
    return;
  p->draining = true;
  p->shutdown_ns = uv_hrtime();
  mg_info("shutdown: draining %u worker(s)", p->ninit);
  if (p->admin_listening) {
    p->admin_listening = false;
    close_handle(p, (uv_handle_t *)&p->admin_listener);
  }
  mg_conn_drain_all(&p->admin_env);
  for (i = 0; i < p->ninit; i++) {
    struct mg_worker *w = &p->workers[i];
    /* A worker whose thread never started (a failed start) cannot drain
     * itself: mg_worker_free closes its loop. */
    if (w->threaded && !w->running)
      atomic_fetch_add(&p->nstopped, 1);
    else
      mg_worker_post(w, MG_WMSG_DRAIN);
  }
  p->grace_timer.data = p;
  uv_timer_start(&p->grace_timer, on_grace_over, p->grace_ms, 0);
  /* The grace timer must not keep the loop alive once all is done. */
  uv_unref((uv_handle_t *)&p->grace_timer);
  maybe_close_all(p);
}

static void on_signal(uv_signal_t *h, int signum) {
  struct process *p = h->data;
  mg_info("received %s", signum == SIGTERM ? "SIGTERM" : "SIGINT");
  shutdown_begin(p);
}

static void on_sigusr1(uv_signal_t *h, int signum) {
  struct process *p = h->data;
  (void)signum;
  mg_tel_dlog_reopen(p->tm);
}

static void on_sighup(uv_signal_t *h, int signum) {
  struct process *p = h->data;
  struct mg_cfg_errors e;
  (void)signum;
  mg_info("received SIGHUP: reloading");
  mg_cfg_errors_init(&e);
  (void)reload(p, &e);
  mg_cfg_errors_free(&e);
}

/* ---- start -------------------------------------------------------------------------- */

/* server.workers, or for "auto" MODELGATE_WORKERS from the environment
 * (as GOMAXPROCS for Go), else the CPUs this process may use. */
static unsigned workers_wanted(const struct mg_config *cfg) {
  unsigned n = cfg->server.workers;
  const char *env = getenv("MODELGATE_WORKERS");
  if (n == 0 && env && *env) {
    char *end;
    long v = strtol(env, &end, 10);
    if (*end == '\0' && v >= 1 && v <= 256)
      n = (unsigned)v;
    else
      mg_warn("MODELGATE_WORKERS=%s is not a number from 1 to 256: ignored",
              env);
  }
  if (n == 0)
    n = uv_available_parallelism();
  return n ? n : 1;
}

static int write_port_file(struct process *p, int port) {
  char tmp[4096], body[64];
  int fd, n;
  ssize_t w;

  snprintf(tmp, sizeof(tmp), "%s.tmp", p->port_file);
  n = snprintf(body, sizeof(body), "listen=%d\nadmin=%d\n", port,
               p->admin_port);
  /* Made new, never through a symlink (see mg_write_file_atomic). */
  (void)unlink(tmp);
  fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0)
    return -errno;
  w = write(fd, body, (size_t)n);
  close(fd);
  if (w != n || rename(tmp, p->port_file) != 0)
    return -EIO;
  return 0;
}

static void on_admin_connection(uv_stream_t *listener, int status) {
  struct process *p = listener->data;
  if (status < 0) {
    mg_worker_accept_failed(&p->workers[0], true, status);
    return;
  }
  mg_conn_accept(&p->admin_env, listener);
}

/* 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104. */
static bool host_is_loopback(const char *host) {
  unsigned char a[16];
  static const unsigned char v6_lo[16] = {0, 0, 0, 0, 0, 0, 0, 0,
                                          0, 0, 0, 0, 0, 0, 0, 1};
  static const unsigned char v4_mapped[12] = {0, 0, 0, 0, 0,    0,
                                              0, 0, 0, 0, 0xff, 0xff};
  if (inet_pton(AF_INET, host, a) == 1)
    return a[0] == 127;
  if (inet_pton(AF_INET6, host, a) == 1)
    return memcmp(a, v6_lo, 16) == 0 ||
           (memcmp(a, v4_mapped, 12) == 0 && a[12] == 127);
  return false;
}

static int start_admin(struct process *p) {
  struct mg_worker *w0 = &p->workers[0];
  const struct mg_admin_cfg *ac = &w0->cfg->admin;
  struct sockaddr_storage ss;
  int rc, namelen = sizeof(ss);

  /* The admin listener's connections live on worker 0's loop, with their
   * own connection budget; their handlers call the runtime's verbs there. */
  p->admin_env = w0->env;
  p->admin_env.admin = true;
  p->admin_env.draining = &p->draining;
  p->admin_env.max_connections = ac->max_connections;
  p->admin_env.route = mg_admin_route;
  p->admin_env.refused = NULL;
  p->admin_env.count = NULL;
  p->admin_env.idle = on_admin_idle;
  p->admin_env.conns = NULL;
  p->admin_env.nconns = 0;
  if (!ac->enabled)
    return 0;
  {
    /* Anyone who reaches an admin API without a token reads the state and
     * the config's names: off the loopback, a token is required (issue 10,
     * point 4). */
    struct mg_wsnap *ws = mg_worker_snap(w0);
    bool open_api = ws->snap->admin_token == NULL;
    mg_wsnap_release(ws);
    if (open_api && !host_is_loopback(ac->listen_host)) {
      mg_error("admin: refusing to listen on %s without a token: set the "
               "variable admin.token_env names, or listen on 127.0.0.1",
               ac->listen_host);
      return -EINVAL;
    }
  }
  if ((rc = uv_ip4_addr(ac->listen_host, ac->listen_port,
                        (struct sockaddr_in *)&ss)) != 0 &&
      (rc = uv_ip6_addr(ac->listen_host, ac->listen_port,
                        (struct sockaddr_in6 *)&ss)) != 0) {
    mg_error("admin: invalid address %s", ac->listen_host);
    return rc;
  }
  rc = uv_tcp_bind(&p->admin_listener, (const struct sockaddr *)&ss, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&p->admin_listener, 128,
                   on_admin_connection);
  if (rc) {
    mg_error("admin: listen on %s:%d: %s", ac->listen_host, ac->listen_port,
             uv_strerror(rc));
    return rc;
  }
  p->admin_listening = true;
  uv_tcp_getsockname(&p->admin_listener, (struct sockaddr *)&ss, &namelen);
  p->admin_port = ss.ss_family == AF_INET6
                      ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                      : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  {
    struct mg_wsnap *ws = mg_worker_snap(w0);
    mg_info("admin API on %s:%d (changes %s)", ac->listen_host,
            p->admin_port,
            ws->snap->admin_token ? "need the bearer token"
                                  : "disabled: no token configured");
    mg_wsnap_release(ws);
  }
  return 0;
}

static int start(struct process *p, struct mg_config *cfg) {
  struct mg_rt_hooks hooks;
  char err[512];
  int rc, port = 0;
  unsigned i;

  uv_tcp_init(p->loop, &p->admin_listener);
  p->admin_listener.data = p;
  uv_timer_init(p->loop, &p->grace_timer);
  uv_timer_init(p->loop, &p->ramp_timer);
  p->ramp_timer.data = p;
  uv_timer_init(p->loop, &p->watch_timer);
  p->watch_timer.data = p;
  uv_signal_init(p->loop, &p->sig_term);
  uv_signal_init(p->loop, &p->sig_int);
  uv_signal_init(p->loop, &p->sig_hup);
  uv_signal_init(p->loop, &p->sig_usr1);
  p->sig_term.data = p->sig_int.data = p->sig_hup.data = p;
  p->sig_usr1.data = p;
  uv_async_init(p->loop, &p->stopped_async, on_stopped_async);
  p->stopped_async.data = p;
  uv_unref((uv_handle_t *)&p->stopped_async);

  p->nworkers = workers_wanted(cfg);
  p->tm = mg_tel_new(p->nworkers);
  p->workers = calloc(p->nworkers, sizeof(*p->workers));
  if (p->tm == NULL || p->workers == NULL)
    return -ENOMEM;
  memset(&hooks, 0, sizeof(hooks));
  hooks.arg = p;
  hooks.event = on_event;
  hooks.override_changed = on_override_changed;
  if (cfg->redis.enabled) {
    hooks.ramp_leads = on_ramp_leads;
    hooks.ramp_fleet_views = on_ramp_fleet_views;
    hooks.ramp_changed = on_ramp_changed;
  }
  if (mg_tel_dlog_apply(p->tm, &cfg->dlog) != 0)
    return -EIO;
  if (cfg->notify.nsinks) {
    /* notify.sinks are read at start; a reload keeps them. */
    p->notify_cfg = mg_config_ref(cfg);
    p->notifier = mg_notify_new(p->loop, &cfg->notify);
    if (p->notifier == NULL)
      return -ENOMEM;
    mg_tel_set_extra(p->tm, mg_notify_metrics, p->notifier);
  }
  p->rt = mg_rt_new(cfg, p->nworkers, &hooks, err, sizeof(err));
  if (p->rt == NULL) {
    mg_error("%s", err);
    return -EINVAL;
  }
  p->sh.rt = p->rt;
  p->sh.tm = p->tm;
  p->sh.nworkers = p->nworkers;
  p->sh.workers = p->workers;
  p->sh.reload = reload;
  p->sh.reload_arg = p;

  /* The first worker binds the configured port (maybe 0: any); the others
   * bind the port it got, beside it. */
  for (i = 0; i < p->nworkers; i++) {
    rc = mg_worker_init(&p->workers[i], i, &p->sh, i == 0 ? p->loop : NULL,
                        mg_data_route, &port, on_worker_stopped, p);
    p->ninit = i + 1;
    if (rc != 0)
      return rc;
  }
  {
    char host[256];
    if (gethostname(host, sizeof(host)) != 0)
      snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    snprintf(p->instance, sizeof(p->instance), "%s:%d", host, port);
    if (cfg->redis.instance)
      snprintf(p->instance, sizeof(p->instance), "%s", cfg->redis.instance);
    p->sh.instance = p->instance;
  }
  /* The fleet's overrides are read before any worker serves. */
  if (cfg->redis.enabled) {
    p->store = mg_store_new(&cfg->redis, p->loop, p->rt, p->instance, err,
                            sizeof(err));
    if (p->store == NULL) {
      mg_error("%s", err);
      return -EINVAL;
    }
    p->sh.store = p->store;
  }
  if ((rc = start_admin(p)) != 0)
    return rc;
  for (i = 0; i < p->nworkers; i++)
    if ((rc = mg_worker_run(&p->workers[i])) != 0)
      return rc;
  uv_signal_start(&p->sig_term, on_signal, SIGTERM);
  uv_signal_start(&p->sig_int, on_signal, SIGINT);
  uv_signal_start(&p->sig_hup, on_sighup, SIGHUP);
  uv_signal_start(&p->sig_usr1, on_sigusr1, SIGUSR1);
  ramp_sync(p, mg_rt_tick_period(p->rt));
  uv_timer_start(&p->watch_timer, on_watch_timer, WATCH_MS, WATCH_MS);
  if (p->port_file && (rc = write_port_file(p, port)) != 0) {
    mg_error("cannot write port file %s: %s", p->port_file, uv_strerror(rc));
    return rc;
  }
  mg_info("listening on %s:%d with %u worker(s) (config %s, %zu targets, "
          "%zu aliases)",
          cfg->server.listen_host, port, p->nworkers, cfg->hash,
          cfg->targets.n, cfg->routes.n);
  return 0;
}

/* The least time the decision log gets to write its last lines at exit. */
#define LOG_CLOSE_MIN_MS 100

int mg_process_serve(struct mg_config *cfg, const char *config_path,
                     const char *port_file) {
  struct process p;
  uv_loop_t loop;
  unsigned i;
  int rc, code;

  memset(&p, 0, sizeof(p));
  atomic_init(&p.nstopped, 0);
  if (uv_loop_init(&loop) != 0)
    return 1;
  p.loop = &loop;
  p.port_file = port_file;
  p.config_path = config_path ? strdup(config_path) : NULL;
  p.grace_ms = cfg->server.shutdown_grace_ms;
  mg_log_set_level((enum mg_log_level)cfg->server.log_level);
  rc = start(&p, cfg);
  if (rc != 0) {
    /* Whatever started stops again, in order. */
    p.exit_code = 1;
    shutdown_begin(&p);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  code = rc ? 1 : p.exit_code;
  for (i = 0; i < p.ninit; i++)
    mg_worker_free(&p.workers[i]);
  free(p.workers);
  if (uv_loop_close(&loop) != 0) {
    /* A handle left open is a bug: name it. */
    mg_error("event loop did not close cleanly; open handles:");
    uv_print_all_handles(&loop, stderr);
    code = code ? code : 1;
  }
  /* Every line queued reaches the file; then the state goes. */
  if (p.tm) {
    /* The grace bounds the whole exit, the log's last lines included: a
     * sink that blocks (a FIFO nobody reads, a hung mount) must not keep
     * the process alive (issue 10, point 3). The log gets what is left of
     * the grace, and at least LOG_CLOSE_MIN_MS for its last batch. */
    int64_t left = (int64_t)p.grace_ms;
    if (p.draining)
      left -= (int64_t)((uv_hrtime() - p.shutdown_ns) / 1000000u);
    if (left < LOG_CLOSE_MIN_MS)
      left = LOG_CLOSE_MIN_MS;
    mg_tel_dlog_close_within(p.tm, left);
  }
  mg_store_free(p.store);
  mg_rt_free(p.rt);
  mg_tel_free(p.tm);
  mg_notify_free(p.notifier);
  if (p.notify_cfg)
    mg_config_unref(p.notify_cfg);
  free(p.config_path);
  return code;
}
