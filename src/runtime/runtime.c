/* runtime.c - the state in force and its publication (runtime.h).
 *
 *   verbs (control thread) -> overrides / ramp states / config
 *                          -> publish(): a new immutable struct mg_snap,
 *                             swapped in under pub_mu, generation + 1
 *                          -> save_state(), hooks (events, published)
 *   workers                -> mg_rt_gen() per request, mg_rt_snap() when it
 *                             moved; breakers, guard windows and the cache
 *                             through their own locks
 *
 * Everything but the snapshot pointer, the breakers, the windows and the
 * cache belongs to the control thread, and needs no lock. */
#include "runtime/runtime.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/map.h"
#include "common/time.h"
#include "routing/override.h"
#include "routing/target_override.h"
#include "runtime/statefile.h"

#include <sys/stat.h>
#include <unistd.h>

/* ---- the structures -------------------------------------------------------- */

/* A flag's ramp: its state (control thread) and one pair of guard windows
 * per worker (each under its own lock: the worker adds, the tick sums). */
struct rt_slot {
  pthread_mutex_t mu;
  struct mg_window w[2]; /* treatment, control */
};

/* The live windows of a flag variant: one per worker, each under its own
 * lock (the worker adds, a reader of /admin/live sums). */
struct mg_rt_live {
  char *key;               /* owned: "<flag>\x1f<variant>", the map key */
  bool storm;              /* in a fallback storm (control thread only) */
  unsigned nslots;
  struct {
    pthread_mutex_t mu;
    struct mg_live l;
  } *slots;                /* owned: one per worker */
};

struct mg_rt_ramp {
  char *flag;              /* owned; the map key */
  struct mg_ramp_state st;
  char *treatment;         /* owned: the variant names the windows hold */
  char *control;
  uint32_t window_ms;
  /* Bumped whenever the windows are emptied (a restart, new variants):
   * outcomes of requests begun before belong to what was there before,
   * and are dropped. Read by workers, written by the control thread. */
  _Atomic uint32_t epoch;
  unsigned nslots;
  struct rt_slot *slots;   /* owned: one per worker */
};

/* The cache in shards, each under its own lock: workers looking up
 * different keys do not wait for each other. Small caches keep one shard
 * so that their LRU order is exact. */
#define CACHE_MAX_SHARDS 16
struct rt_cache_shard {
  pthread_mutex_t mu;
  struct mg_cache *c;      /* owned */
};

struct mg_runtime {
  struct mg_rt_hooks hooks;
  unsigned nworkers;
  struct mg_config *cfg;           /* owned reference: the config in force */
  char *state_file;                /* owned: where overrides persist */
  int state_lock;                  /* owned: the flock on state_file.lock,
                                    * or -1 */
  struct mg_overrides overrides;
  struct mg_target_overrides toverrides; /* min_confidence by target */
  /* Feedback budgets by client name ("" for callers without a key): token
   * buckets of items, taken by any worker under fb_mu. Bounded by the
   * client names the configs named. */
  pthread_mutex_t fb_mu;
  struct mg_map fb_buckets;        /* name -> owned struct fb_bucket */
  struct mg_map breakers;          /* target name -> owned struct mg_breaker
                                    * (name stored after it) */
  struct mg_map ramps;             /* flag name -> owned struct mg_rt_ramp */
  struct mg_map live;              /* flag/variant -> owned mg_rt_live; they
                                    * outlive reloads, like the ramps */
  cJSON *pending_ramps;            /* owned: ramp states from the state file,
                                    * used when their flag's ramp starts */
  uint64_t reloads;
  int64_t loaded_ms;
  uint32_t tick_period;
  unsigned ncache;
  struct rt_cache_shard cache[CACHE_MAX_SHARDS];

  /* The publication. */
  pthread_mutex_t pub_mu;          /* guards cur */
  struct mg_snap *cur;             /* owned reference */
  _Atomic uint64_t gen;
};

/* A client's feedback budget (mg_rt_feedback_admit). */
struct fb_bucket {
  double tokens;
  int64_t last;                    /* mono ms of the last refill */
  char name[];                     /* the map key */
};

/* ---- snapshots ---------------------------------------------------------------- */

static void snap_free(struct mg_snap *s) {
  free(s->flag_states);
  free(s->flag_stale);
  free(s->breakers);
  free(s->ramps);
  free(s->ramp_states);
  free(s->ramp_epochs);
  free(s->min_conf);
  if (s->live) {
    size_t i;
    for (i = 0; i < s->cfg->flags.n; i++)
      free(s->live[i]);
    free(s->live);
  }
  if (s->admin_token) {
    memset(s->admin_token, 0, strlen(s->admin_token));
    free(s->admin_token);
  }
  mg_config_unref(s->cfg);
  free(s);
}

void mg_snap_unref(struct mg_snap *s) {
  if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
    snap_free(s);
}

uint64_t mg_rt_gen(const struct mg_runtime *rt) {
  return atomic_load_explicit(&((struct mg_runtime *)rt)->gen,
                              memory_order_acquire);
}

struct mg_snap *mg_rt_snap(struct mg_runtime *rt) {
  struct mg_snap *s;
  pthread_mutex_lock(&rt->pub_mu);
  s = rt->cur;
  atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
  pthread_mutex_unlock(&rt->pub_mu);
  return s;
}

/* ---- breakers ------------------------------------------------------------------ */

static struct mg_breaker *breaker_for(struct mg_runtime *rt, const char *name) {
  struct mg_breaker *b = mg_map_get(&rt->breakers, name, strlen(name));
  char *key;
  if (b)
    return b;
  b = calloc(1, sizeof(*b) + strlen(name) + 1);
  if (b == NULL)
    return NULL;
  mg_breaker_init(b);
  /* The name is stored right after the breaker: one allocation. */
  key = (char *)(b + 1);
  strcpy(key, name);
  if (mg_map_put(&rt->breakers, key, strlen(key), b) != 0) {
    mg_breaker_destroy(b);
    free(b);
    return NULL;
  }
  return b;
}

void mg_rt_breaker_changed(struct mg_runtime *rt, const char *target,
                           int state) {
  const char *name = mg_breaker_state_name((enum mg_breaker_state)state);
  struct mg_event ev;
  if (state == MG_BREAKER_OPEN)
    mg_warn("breaker of target %s: open (requests skip it)", target);
  else
    mg_info("breaker of target %s: %s", target, name);
  memset(&ev, 0, sizeof(ev));
  ev.type = "breaker";
  ev.severity = state == MG_BREAKER_OPEN ? MG_SEV_WARNING : MG_SEV_INFO;
  ev.target = target;
  ev.state = name;
  ev.step = -1;
  ev.weight_bp = -1;
  if (rt->hooks.event)
    rt->hooks.event(rt->hooks.arg, &ev);
}

/* ---- ramps --------------------------------------------------------------------- */

static void ramp_free(struct mg_rt_ramp *r) {
  unsigned i;
  for (i = 0; i < r->nslots; i++)
    pthread_mutex_destroy(&r->slots[i].mu);
  free(r->slots);
  free(r->flag);
  free(r->treatment);
  free(r->control);
  free(r);
}

static void ramp_reset_windows(struct mg_rt_ramp *r) {
  unsigned i;
  atomic_fetch_add(&r->epoch, 1);
  for (i = 0; i < r->nslots; i++) {
    pthread_mutex_lock(&r->slots[i].mu);
    mg_window_init(&r->slots[i].w[0], r->window_ms);
    mg_window_init(&r->slots[i].w[1], r->window_ms);
    pthread_mutex_unlock(&r->slots[i].mu);
  }
}

/* The runtime of a flag's ramp, made on first use: from the state file
 * when it knows the flag, else a fresh start. Windows follow the config. */
static struct mg_rt_ramp *ramp_for(struct mg_runtime *rt,
                                   const struct mg_flag *f,
                                   const struct mg_ramp_cfg *rc) {
  struct mg_rt_ramp *r = mg_map_get(&rt->ramps, f->name, strlen(f->name));
  const char *tn = f->variants[rc->variant].name;
  const char *cn = f->variants[rc->control].name;
  if (r == NULL) {
    const cJSON *saved =
        rt->pending_ramps
            ? cJSON_GetObjectItemCaseSensitive(rt->pending_ramps, f->name)
            : NULL;
    unsigned i;
    r = calloc(1, sizeof(*r));
    if (r)
      r->slots = calloc(rt->nworkers, sizeof(*r->slots));
    if (r == NULL || r->slots == NULL || (r->flag = strdup(f->name)) == NULL ||
        mg_map_put(&rt->ramps, r->flag, strlen(r->flag), r) != 0) {
      if (r) {
        free(r->slots);
        free(r->flag);
      }
      free(r);
      return NULL;
    }
    r->nslots = rt->nworkers;
    for (i = 0; i < r->nslots; i++)
      pthread_mutex_init(&r->slots[i].mu, NULL);
    if (saved && mg_ramp_state_from_json(&r->st, saved, rc->nsteps) == 0) {
      mg_info("ramp of flag %s: resumed at step %u (%s)", f->name, r->st.step,
              mg_ramp_status_name(r->st.status));
    } else {
      mg_ramp_start(&r->st, mg_wall_ms());
      mg_info("ramp of flag %s: started", f->name);
    }
  }
  if (r->treatment == NULL || strcmp(r->treatment, tn) != 0 ||
      r->control == NULL || strcmp(r->control, cn) != 0) {
    free(r->treatment);
    free(r->control);
    r->treatment = strdup(tn);
    r->control = strdup(cn);
    r->window_ms = rc->guards.window_ms;
    ramp_reset_windows(r);
  } else if (r->window_ms != rc->guards.window_ms) {
    unsigned i;
    /* A new window length keeps the evidence (the step's totals). */
    r->window_ms = rc->guards.window_ms;
    for (i = 0; i < r->nslots; i++) {
      pthread_mutex_lock(&r->slots[i].mu);
      mg_window_resize(&r->slots[i].w[0], r->window_ms);
      mg_window_resize(&r->slots[i].w[1], r->window_ms);
      pthread_mutex_unlock(&r->slots[i].mu);
    }
  }
  if (r->st.step >= rc->nsteps && rc->nsteps)
    r->st.step = rc->nsteps - 1;
  return r;
}

/* The worker's slot of arm, or NULL when the outcome belongs to no window
 * of this ramp (another arm, or windows emptied since its decision). */
static struct rt_slot *ramp_slot(struct mg_rt_ramp *r, uint32_t reset_epoch,
                                 unsigned widx, int arm) {
  if (r == NULL || arm < 0 || arm > 1 || widx >= r->nslots ||
      reset_epoch != atomic_load_explicit(&r->epoch, memory_order_relaxed))
    return NULL;
  return &r->slots[widx];
}

void mg_rt_ramp_observe(struct mg_rt_ramp *r, uint32_t reset_epoch,
                        uint64_t step_epoch, unsigned widx, int arm,
                        int64_t mono, const struct mg_window_outcome *o) {
  struct rt_slot *s = ramp_slot(r, reset_epoch, widx, arm);
  if (s == NULL)
    return;
  pthread_mutex_lock(&s->mu);
  mg_window_record(&s->w[arm], mono, step_epoch, o);
  pthread_mutex_unlock(&s->mu);
}

void mg_rt_ramp_feedback(struct mg_rt_ramp *r, uint32_t reset_epoch,
                         uint64_t step_epoch, unsigned widx, int arm,
                         int64_t mono, const struct mg_window_fb *f) {
  struct rt_slot *s = ramp_slot(r, reset_epoch, widx, arm);
  if (s == NULL)
    return;
  pthread_mutex_lock(&s->mu);
  mg_window_feedback(&s->w[arm], mono, step_epoch, f);
  pthread_mutex_unlock(&s->mu);
}

/* Both windows of a ramp as one view each: every worker's, merged (heap:
 * a view is ~56 KB). NULL when out of memory. */
static struct mg_window_view *ramp_views(struct mg_rt_ramp *r, int64_t mono) {
  struct mg_window_view *v = malloc(3 * sizeof(*v));
  unsigned i, k;
  if (v == NULL)
    return NULL;
  mg_window_view_init(&v[0]);
  mg_window_view_init(&v[1]);
  for (i = 0; i < r->nslots; i++) {
    for (k = 0; k < 2; k++) {
      pthread_mutex_lock(&r->slots[i].mu);
      mg_window_read(&r->slots[i].w[k], mono, &v[2]);
      pthread_mutex_unlock(&r->slots[i].mu);
      mg_window_view_merge(&v[k], &v[2]);
    }
  }
  return v;
}

/* ---- live windows -------------------------------------------------------------- */

static void live_free(struct mg_rt_live *l) {
  unsigned i;
  for (i = 0; i < l->nslots; i++)
    pthread_mutex_destroy(&l->slots[i].mu);
  free(l->slots);
  free(l->key);
  free(l);
}

static struct mg_rt_live *live_for(struct mg_runtime *rt, const char *flag,
                                   const char *variant) {
  size_t fl = strlen(flag), vl = strlen(variant);
  char *key = malloc(fl + vl + 2);
  struct mg_rt_live *l;
  unsigned i;
  if (key == NULL)
    return NULL;
  memcpy(key, flag, fl);
  key[fl] = '\x1f';
  memcpy(key + fl + 1, variant, vl + 1);
  if ((l = mg_map_get(&rt->live, key, fl + vl + 1)) != NULL) {
    free(key);
    return l;
  }
  l = calloc(1, sizeof(*l));
  if (l)
    l->slots = calloc(rt->nworkers, sizeof(*l->slots));
  if (l == NULL || l->slots == NULL ||
      mg_map_put(&rt->live, key, fl + vl + 1, l) != 0) {
    if (l)
      free(l->slots);
    free(l);
    free(key);
    return NULL;
  }
  l->key = key;
  l->nslots = rt->nworkers;
  for (i = 0; i < l->nslots; i++) {
    pthread_mutex_init(&l->slots[i].mu, NULL);
    mg_live_init(&l->slots[i].l);
  }
  return l;
}

void mg_rt_live_observe(struct mg_rt_live *l, unsigned widx, int64_t mono,
                        bool error, bool fallback, bool low_conf, double ms,
                        double cost) {
  if (l == NULL || widx >= l->nslots)
    return;
  pthread_mutex_lock(&l->slots[widx].mu);
  mg_live_add(&l->slots[widx].l, mono, error, fallback, low_conf, ms, cost);
  pthread_mutex_unlock(&l->slots[widx].mu);
}

void mg_rt_live_feedback(struct mg_rt_live *l, unsigned widx, int64_t mono,
                         uint32_t metric, double value) {
  if (l == NULL || widx >= l->nslots)
    return;
  pthread_mutex_lock(&l->slots[widx].mu);
  mg_live_feedback(&l->slots[widx].l, mono, metric, value);
  pthread_mutex_unlock(&l->slots[widx].mu);
}

void mg_rt_live_read(struct mg_rt_live *l, int64_t mono, uint32_t span_ms,
                     struct mg_live_sum *acc) {
  unsigned i;
  if (l == NULL)
    return;
  for (i = 0; i < l->nslots; i++) {
    pthread_mutex_lock(&l->slots[i].mu);
    mg_live_sum(&l->slots[i].l, mono, span_ms, acc);
    pthread_mutex_unlock(&l->slots[i].mu);
  }
}

void mg_rt_watch(struct mg_runtime *rt, int64_t mono) {
  struct mg_snap *s = mg_rt_snap(rt);
  const struct mg_config *cfg = s->cfg;
  size_t i, j;
  for (i = 0; i < cfg->flags.n; i++) {
    const struct mg_flag *f = &cfg->flags.v[i];
    for (j = 0; j < f->nvariants; j++) {
      struct mg_rt_live *l = s->live[i][j];
      struct mg_live_sum sum;
      struct mg_event ev;
      double rate;
      bool storm;
      if (l == NULL)
        continue;
      memset(&sum, 0, sizeof(sum));
      mg_rt_live_read(l, mono, MG_STORM_WINDOW_MS, &sum);
      rate = sum.requests ? (double)sum.fallbacks / (double)sum.requests : 0;
      storm = l->storm ? sum.requests >= MG_STORM_MIN_REQUESTS &&
                             rate >= MG_STORM_RATE / 2
                       : sum.requests >= MG_STORM_MIN_REQUESTS &&
                             rate >= MG_STORM_RATE;
      if (storm == l->storm)
        continue;
      l->storm = storm;
      if (storm)
        mg_warn("fallback storm: flag %s variant %s: %.0f%% of %llu "
                "requests in the last minute answered by a fallback",
                f->name, f->variants[j].name, rate * 100,
                (unsigned long long)sum.requests);
      else
        mg_info("fallback storm over: flag %s variant %s", f->name,
                f->variants[j].name);
      memset(&ev, 0, sizeof(ev));
      ev.type = storm ? "fallback_storm" : "fallback_storm_over";
      ev.severity = storm ? MG_SEV_WARNING : MG_SEV_INFO;
      ev.flag = f->name;
      ev.variant = f->variants[j].name;
      ev.step = -1;
      ev.weight_bp = -1;
      ev.guard = "fallback_rate";
      ev.observed = rate;
      ev.threshold = MG_STORM_RATE;
      ev.window_ms = MG_STORM_WINDOW_MS;
      if (rt->hooks.event)
        rt->hooks.event(rt->hooks.arg, &ev);
    }
  }
  mg_snap_unref(s);
}

/* ---- publication -------------------------------------------------------------- */

/* Build the snapshot of what is in force now and swap it in. */
static int publish(struct mg_runtime *rt) {
  struct mg_config *cfg = rt->cfg;
  const struct mg_flags *fl = &cfg->flags;
  size_t nf = fl->n ? fl->n : 1, nt = cfg->targets.n ? cfg->targets.n : 1, i;
  struct mg_snap *s = calloc(1, sizeof(*s)), *old;
  const char *tok_env = cfg->admin.token_env;
  const char *tok = tok_env ? getenv(tok_env) : NULL;

  if (s == NULL)
    return -ENOMEM;
  atomic_init(&s->refs, 1);
  s->cfg = mg_config_ref(cfg);
  s->flag_states = calloc(nf, sizeof(*s->flag_states));
  s->flag_stale = calloc(nf, sizeof(*s->flag_stale));
  s->ramps = calloc(nf, sizeof(*s->ramps));
  s->ramp_states = calloc(nf, sizeof(*s->ramp_states));
  s->ramp_epochs = calloc(nf, sizeof(*s->ramp_epochs));
  s->live = calloc(nf, sizeof(*s->live));
  s->breakers = calloc(nt, sizeof(*s->breakers));
  s->min_conf = calloc(nt, sizeof(*s->min_conf));
  s->admin_token = tok && *tok ? strdup(tok) : NULL;
  s->loaded_ms = rt->loaded_ms;
  s->reloads = rt->reloads;
  if (s->flag_states == NULL || s->flag_stale == NULL || s->ramps == NULL ||
      s->ramp_states == NULL || s->ramp_epochs == NULL || s->live == NULL ||
      s->breakers == NULL || s->min_conf == NULL ||
      (tok && *tok && s->admin_token == NULL))
    goto oom;
  for (i = 0; i < cfg->targets.n; i++) {
    const struct mg_target *t = &cfg->targets.v[i];
    const struct mg_gate_cfg *g = &mg_policy_of(&cfg->fallbacks, t)->gate;
    const struct mg_target_override *x =
        mg_toverrides_find(&rt->toverrides, t->name);
    /* An override of a target whose gate is now off waits, unapplied. */
    s->min_conf[i] = x && g->enabled ? x->min_confidence : g->min;
  }
  for (i = 0; i < cfg->targets.n; i++)
    if ((s->breakers[i] = breaker_for(rt, cfg->targets.v[i].name)) == NULL)
      goto oom;
  for (i = 0; i < fl->n; i++) {
    const struct mg_flag *f = &fl->v[i];
    const struct mg_ramp_cfg *rc = &cfg->ramps.v[i];
    uint32_t j;
    mg_overrides_state(&rt->overrides, f, &s->flag_states[i],
                       &s->flag_stale[i]);
    s->live[i] = calloc(f->nvariants, sizeof(**s->live));
    if (s->live[i] == NULL)
      goto oom;
    for (j = 0; j < f->nvariants; j++)
      if ((s->live[i][j] = live_for(rt, f->name, f->variants[j].name)) ==
          NULL)
        goto oom;
    /* A ramp owns its flag's weights (a kill still wins: it is not a
     * weight). */
    if (rc->enabled) {
      struct mg_rt_ramp *r = ramp_for(rt, f, rc);
      if (r == NULL)
        goto oom;
      s->ramps[i] = r;
      s->ramp_states[i] = r->st;
      s->ramp_epochs[i] = atomic_load(&r->epoch);
      mg_ramp_apply(rc, &r->st, f, &s->flag_states[i]);
      {
        struct mg_ramp_gate g;
        mg_ramp_gate(rc, &r->st, &g);
        s->flag_states[i].gated = g.on;
        s->flag_states[i].gate_max_chars = g.max_chars;
        s->flag_states[i].gate_max_tools = g.max_tools;
      }
    }
  }
  pthread_mutex_lock(&rt->pub_mu);
  old = rt->cur;
  s->gen = old ? old->gen + 1 : 1;
  rt->cur = s;
  atomic_store_explicit(&rt->gen, s->gen, memory_order_release);
  pthread_mutex_unlock(&rt->pub_mu);
  mg_snap_unref(old);
  if (rt->hooks.published)
    rt->hooks.published(rt->hooks.arg, s);
  return 0;
oom:
  snap_free(s);
  return -ENOMEM;
}

/* Warn about weights overrides that no longer fit their flag. */
static void warn_stale(struct mg_runtime *rt) {
  struct mg_snap *s = rt->cur;
  size_t i;
  for (i = 0; i < s->cfg->flags.n; i++)
    if (s->flag_stale[i])
      mg_warn("flag %s: the weights override names variants the config no "
              "longer has; the file's weights are in force",
              s->cfg->flags.v[i].name);
}

/* ---- the state file ----------------------------------------------------------- */

/* {"version": 1, "overrides": {...}, "ramps": {...}} */
static int save_state(struct mg_runtime *rt) {
  cJSON *root = cJSON_CreateObject(), *ov = NULL;
  char *text = NULL;
  int rc = -ENOMEM;
  if (root == NULL || cJSON_AddNumberToObject(root, "version", 1) == NULL ||
      mg_overrides_to_json(&rt->overrides, &ov) != 0)
    goto out;
  cJSON_AddItemToObject(root, "overrides", ov);
  if (rt->toverrides.n) {
    cJSON *tv = NULL;
    if (mg_toverrides_to_json(&rt->toverrides, &tv) != 0)
      goto out;
    cJSON_AddItemToObject(root, "targets", tv);
  }
  {
    cJSON *ramps = cJSON_AddObjectToObject(root, "ramps");
    size_t i;
    for (i = 0; ramps && i < rt->ramps.cap; i++) {
      struct mg_rt_ramp *r = rt->ramps.slots[i].value;
      if (rt->ramps.slots[i].key)
        cJSON_AddItemToObject(ramps, r->flag, mg_ramp_state_to_json(&r->st));
    }
  }
  text = cJSON_Print(root);
  if (text == NULL)
    goto out;
  rc = mg_write_file_atomic(rt->state_file, text, strlen(text));
  if (rc != 0)
    mg_error("cannot save state to %s: %s", rt->state_file, strerror(-rc));
out:
  free(text);
  cJSON_Delete(root);
  return rc;
}

static int load_state(struct mg_runtime *rt, char *err, size_t errlen) {
  FILE *f = fopen(rt->state_file, "rb");
  char *buf = NULL, msg[256];
  size_t len = 0, cap = 0, n;
  cJSON *root = NULL;
  int rc = 0;

  if (f == NULL) {
    if (errno == ENOENT)
      return 0; /* first start: nothing overridden yet */
    rc = -errno;
    snprintf(err, errlen, "cannot read state file %s: %s", rt->state_file,
             strerror(errno));
    return rc;
  }
  {
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
      snprintf(err, errlen,
               "state file %s is a directory; admin.state_file must name a "
               "file",
               rt->state_file);
      fclose(f);
      return -EISDIR;
    }
  }
  do {
    if (len == cap) {
      char *p = realloc(buf, cap = cap ? cap * 2 : 4096);
      if (p == NULL) {
        rc = -ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto out;
      }
      buf = p;
    }
    n = fread(buf + len, 1, cap - len, f);
    len += n;
  } while (n > 0 && len < (64u << 20));
  root = cJSON_ParseWithLength(buf ? buf : "", len);
  if (!cJSON_IsObject(root)) {
    /* A kill switch must not silently vanish: refuse to start instead. */
    snprintf(err, errlen, "state file %s is not valid JSON; fix or remove it",
             rt->state_file);
    rc = -EINVAL;
    goto out;
  }
  {
    /* A file of another version is not read as if it were ours: its kills
     * might mean something else, or nothing (issue 10, point 3). */
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "version");
    if (!cJSON_IsNumber(v) || v->valuedouble != 1) {
      char *vs = v ? cJSON_PrintUnformatted(v) : NULL;
      snprintf(err, errlen,
               "state file %s has %s%s; this modelgate reads version 1: fix "
               "or remove it",
               rt->state_file, vs ? "version " : "no version",
               vs ? vs : "");
      free(vs);
      rc = -EINVAL;
      goto out;
    }
  }
  {
    const cJSON *ov = cJSON_GetObjectItemCaseSensitive(root, "overrides");
    if (ov && mg_overrides_from_json(&rt->overrides, ov, msg, sizeof(msg))) {
      snprintf(err, errlen, "state file %s: %s", rt->state_file, msg);
      rc = -EINVAL;
      goto out;
    }
  }
  if (rt->overrides.n)
    mg_info("restored %zu flag override(s) from %s", rt->overrides.n,
            rt->state_file);
  {
    const cJSON *tv = cJSON_GetObjectItemCaseSensitive(root, "targets");
    if (tv &&
        mg_toverrides_from_json(&rt->toverrides, tv, msg, sizeof(msg))) {
      snprintf(err, errlen, "state file %s: %s", rt->state_file, msg);
      rc = -EINVAL;
      goto out;
    }
    if (rt->toverrides.n)
      mg_info("restored %zu target override(s) from %s", rt->toverrides.n,
              rt->state_file);
  }
  {
    const cJSON *ramps = cJSON_GetObjectItemCaseSensitive(root, "ramps");
    if (cJSON_IsObject(ramps))
      rt->pending_ramps = cJSON_Duplicate(ramps, 1);
  }
out:
  cJSON_Delete(root);
  free(buf);
  fclose(f);
  return rc;
}

/* ---- the cache ------------------------------------------------------------------ */

static struct rt_cache_shard *shard_of(struct mg_runtime *rt,
                                       const struct mg_cache_key *k) {
  return &rt->cache[k->lo % rt->ncache];
}

/* Each shard gets an equal part of the limits. */
static void cache_cfg_part(const struct mg_cache_cfg *c, unsigned n,
                           struct mg_cache_cfg *out) {
  *out = *c;
  out->max_entries = c->max_entries / n ? c->max_entries / n : 1;
  out->max_bytes = c->max_bytes / n ? c->max_bytes / n : 1;
}

static int cache_init(struct mg_runtime *rt, const struct mg_cache_cfg *c) {
  struct mg_cache_cfg part;
  unsigned i, n = c->max_entries / 256;
  if (n < 1)
    n = 1;
  if (n > CACHE_MAX_SHARDS)
    n = CACHE_MAX_SHARDS;
  rt->ncache = n;
  cache_cfg_part(c, n, &part);
  for (i = 0; i < n; i++) {
    pthread_mutex_init(&rt->cache[i].mu, NULL);
    if ((rt->cache[i].c = mg_cache_new(&part)) == NULL)
      return -ENOMEM;
  }
  return 0;
}

static void cache_configure(struct mg_runtime *rt,
                            const struct mg_cache_cfg *c) {
  struct mg_cache_cfg part;
  unsigned i;
  cache_cfg_part(c, rt->ncache, &part);
  for (i = 0; i < rt->ncache; i++) {
    pthread_mutex_lock(&rt->cache[i].mu);
    mg_cache_configure(rt->cache[i].c, &part);
    pthread_mutex_unlock(&rt->cache[i].mu);
  }
}

bool mg_rt_cache_get(struct mg_runtime *rt, const struct mg_cache_key *k,
                     int64_t mono, struct mg_buf *out) {
  struct rt_cache_shard *sh = shard_of(rt, k);
  const char *body;
  size_t len;
  bool hit;
  pthread_mutex_lock(&sh->mu);
  hit = mg_cache_get(sh->c, k, mono, &body, &len);
  /* The entry is only valid under the shard's lock: copy it out. */
  if (hit && mg_buf_append(out, body, len) != 0)
    hit = false;
  pthread_mutex_unlock(&sh->mu);
  return hit;
}

int mg_rt_cache_put(struct mg_runtime *rt, const struct mg_cache_key *k,
                    int64_t mono, const char *body, size_t len) {
  struct rt_cache_shard *sh = shard_of(rt, k);
  int rc;
  pthread_mutex_lock(&sh->mu);
  rc = mg_cache_put(sh->c, k, mono, body, len);
  pthread_mutex_unlock(&sh->mu);
  return rc;
}

void mg_rt_cache_stats(struct mg_runtime *rt, struct mg_cache_stats *out) {
  unsigned i;
  memset(out, 0, sizeof(*out));
  for (i = 0; i < rt->ncache; i++) {
    struct mg_cache_stats s;
    pthread_mutex_lock(&rt->cache[i].mu);
    mg_cache_stats(rt->cache[i].c, &s);
    pthread_mutex_unlock(&rt->cache[i].mu);
    out->entries += s.entries;
    out->bytes += s.bytes;
    out->hits += s.hits;
    out->misses += s.misses;
    out->stores += s.stores;
    out->evictions += s.evictions;
    out->expirations += s.expirations;
  }
}

/* ---- life ------------------------------------------------------------------------ */

static uint32_t compute_tick_period(const struct mg_config *cfg) {
  uint32_t period = 0;
  size_t i;
  for (i = 0; i < cfg->flags.n; i++) {
    const struct mg_ramp_cfg *rc = &cfg->ramps.v[i];
    if (rc->enabled && (period == 0 || rc->interval_ms < period))
      period = rc->interval_ms;
  }
  return period;
}

struct mg_runtime *mg_rt_new(struct mg_config *cfg, unsigned nworkers,
                             const struct mg_rt_hooks *hooks, char *err,
                             size_t errlen) {
  struct mg_runtime *rt = calloc(1, sizeof(*rt));
  if (rt == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  rt->hooks = *hooks;
  rt->nworkers = nworkers ? nworkers : 1;
  rt->cfg = mg_config_ref(cfg);
  rt->loaded_ms = mg_wall_ms();
  pthread_mutex_init(&rt->pub_mu, NULL);
  atomic_init(&rt->gen, 0);
  mg_overrides_init(&rt->overrides);
  mg_toverrides_init(&rt->toverrides);
  pthread_mutex_init(&rt->fb_mu, NULL);
  mg_map_init(&rt->fb_buckets);
  mg_map_init(&rt->breakers);
  mg_map_init(&rt->ramps);
  mg_map_init(&rt->live);
  rt->state_lock = -1;
  rt->state_file = strdup(cfg->admin.state_file);
  if (rt->state_file == NULL || cache_init(rt, &cfg->fallbacks.cache) != 0) {
    snprintf(err, errlen, "out of memory");
    mg_rt_free(rt);
    return NULL;
  }
  /* One owner per state file; then what its crashed saves left goes. */
  if ((rt->state_lock = mg_statefile_lock(rt->state_file, err, errlen)) < -1) {
    rt->state_lock = -1;
    mg_rt_free(rt);
    return NULL;
  }
  (void)mg_statefile_clean(rt->state_file);
  if (load_state(rt, err, errlen) != 0) {
    mg_rt_free(rt);
    return NULL;
  }
  if (publish(rt) != 0) {
    snprintf(err, errlen, "out of memory");
    mg_rt_free(rt);
    return NULL;
  }
  warn_stale(rt);
  rt->tick_period = compute_tick_period(cfg);
  /* Ramps that just started are on record, so that a restart resumes the
   * hold of their first step instead of beginning it again. */
  if (rt->ramps.count)
    (void)save_state(rt);
  return rt;
}

void mg_rt_free(struct mg_runtime *rt) {
  size_t i;
  if (rt == NULL)
    return;
  mg_snap_unref(rt->cur);
  rt->cur = NULL;
  for (i = 0; i < rt->ramps.cap; i++)
    if (rt->ramps.slots[i].key)
      ramp_free(rt->ramps.slots[i].value);
  mg_map_free(&rt->ramps);
  for (i = 0; i < rt->live.cap; i++)
    if (rt->live.slots[i].key)
      live_free(rt->live.slots[i].value);
  mg_map_free(&rt->live);
  /* Snapshots hold pointers to the breakers: freed after the last one. */
  for (i = 0; i < rt->breakers.cap; i++)
    if (rt->breakers.slots[i].key) {
      mg_breaker_destroy(rt->breakers.slots[i].value);
      free(rt->breakers.slots[i].value);
    }
  mg_map_free(&rt->breakers);
  for (i = 0; i < rt->ncache; i++) {
    mg_cache_free(rt->cache[i].c);
    pthread_mutex_destroy(&rt->cache[i].mu);
  }
  cJSON_Delete(rt->pending_ramps);
  mg_overrides_free(&rt->overrides);
  mg_toverrides_free(&rt->toverrides);
  for (i = 0; i < rt->fb_buckets.cap; i++)
    if (rt->fb_buckets.slots[i].key)
      free(rt->fb_buckets.slots[i].value);
  mg_map_free(&rt->fb_buckets);
  pthread_mutex_destroy(&rt->fb_mu);
  if (rt->state_lock >= 0)
    close(rt->state_lock);
  free(rt->state_file);
  mg_config_unref(rt->cfg);
  pthread_mutex_destroy(&rt->pub_mu);
  free(rt);
}

int mg_rt_apply(struct mg_runtime *rt, struct mg_config *cfg) {
  struct mg_config *old = rt->cfg;
  int rc;
  rt->cfg = mg_config_ref(cfg);
  rt->reloads++;
  rt->loaded_ms = mg_wall_ms();
  rc = publish(rt);
  if (rc != 0) {
    rt->cfg = old;
    rt->reloads--;
    mg_config_unref(cfg);
    return rc;
  }
  warn_stale(rt);
  cache_configure(rt, &cfg->fallbacks.cache);
  rt->tick_period = compute_tick_period(cfg);
  (void)save_state(rt); /* ramps that just started are on record */
  mg_config_unref(old);
  return 0;
}

void mg_rt_reload_event(struct mg_runtime *rt, const char *from,
                        const char *to, size_t errors) {
  struct mg_event ev;
  memset(&ev, 0, sizeof(ev));
  ev.type = "reload";
  ev.severity = to ? MG_SEV_INFO : MG_SEV_WARNING;
  ev.from_hash = from;
  ev.to_hash = to;
  ev.result = to ? "ok" : "refused";
  ev.errors = errors;
  ev.step = -1;
  ev.weight_bp = -1;
  if (rt->hooks.event)
    rt->hooks.event(rt->hooks.arg, &ev);
}

/* ---- overrides ------------------------------------------------------------------ */

/* An override changed: publish, save, tell. */
static int override_changed(struct mg_runtime *rt, const struct mg_flag *f,
                            const char *what, const char *event,
                            const struct mg_actor *by, char *msg, size_t n) {
  const struct mg_flag_state *st;
  const char *names[MG_FLAG_MAX_VARIANTS];
  struct mg_event ev;
  uint32_t i, before[MG_FLAG_MAX_VARIANTS];
  /* The weights in force before the change, for the notification. */
  memcpy(before, rt->cur->flag_states[f->index].weights, sizeof(before));
  /* Saved first, then in force: a change in force is never newer than the
   * state file (a crash in between cannot bring a killed version back). A
   * failed save does not hold the change back. Who asked, and why, is kept
   * with the override (issue 10, point 4). */
  int saved = (by && mg_overrides_note(&rt->overrides, f->name, by->by,
                                       by->reason) != 0)
                  ? -ENOMEM
                  : save_state(rt),
      rc = publish(rt);
  if (rc != 0) {
    snprintf(msg, n, "Out of memory.");
    return rc;
  }
  warn_stale(rt);
  mg_info("admin: %s %s", what, f->name);
  if (rt->hooks.override_changed)
    rt->hooks.override_changed(rt->hooks.arg, f->name);
  st = &rt->cur->flag_states[f->index];
  memset(&ev, 0, sizeof(ev));
  ev.type = event;
  ev.severity = strcmp(event, "kill") == 0 ? MG_SEV_WARNING : MG_SEV_INFO;
  ev.flag = f->name;
  ev.actor = by;
  ev.step = -1;
  ev.weight_bp = -1;
  /* The weights in force after the change. */
  if (st->has_weights) {
    for (i = 0; i < f->nvariants; i++)
      names[i] = f->variants[i].name;
    ev.variants = names;
    ev.nvariants = f->nvariants;
    ev.weights_after = st->weights;
    ev.weights_before = before;
  }
  if (rt->hooks.event)
    rt->hooks.event(rt->hooks.arg, &ev);
  if (saved != 0) {
    /* The change is in force but not saved: say so rather than pretend. */
    snprintf(msg, n,
             "The change is in force but could not be saved to the state "
             "file: %s.",
             strerror(-saved));
    return -EIO;
  }
  return 0;
}

static const struct mg_flag *flag_of(struct mg_runtime *rt, const char *name,
                                     char *msg, size_t n) {
  const struct mg_flag *f = mg_flags_find(&rt->cfg->flags, name);
  if (f == NULL)
    snprintf(msg, n, "No flag named \"%s\".", name);
  return f;
}

int mg_rt_kill(struct mg_runtime *rt, const char *flag, bool killed,
               const struct mg_actor *by, char *msg, size_t n) {
  const struct mg_flag *f = flag_of(rt, flag, msg, n);
  if (f == NULL)
    return -ENOENT;
  if (mg_overrides_kill(&rt->overrides, f->name, killed, mg_wall_ms()) != 0) {
    snprintf(msg, n, "Out of memory.");
    return -ENOMEM;
  }
  return override_changed(rt, f, killed ? "killed" : "unkilled",
                          killed ? "kill" : "unkill", by, msg, n);
}

int mg_rt_set_weights(struct mg_runtime *rt, const char *flag,
                      const char *const *variants, const uint32_t *bp,
                      uint32_t nv, const struct mg_actor *by, char *msg,
                      size_t n) {
  const struct mg_flag *f = flag_of(rt, flag, msg, n);
  if (f == NULL)
    return -ENOENT;
  if (mg_overrides_set_weights(&rt->overrides, f->name, variants, bp, nv,
                               mg_wall_ms()) != 0) {
    snprintf(msg, n, "Out of memory.");
    return -ENOMEM;
  }
  return override_changed(rt, f, "set weights of", "weights", by, msg, n);
}

int mg_rt_clear_weights(struct mg_runtime *rt, const char *flag,
                        const struct mg_actor *by, char *msg, size_t n) {
  const struct mg_flag *f = flag_of(rt, flag, msg, n);
  if (f == NULL)
    return -ENOENT;
  mg_overrides_clear_weights(&rt->overrides, f->name);
  return override_changed(rt, f, "cleared the weights of", "weights_cleared",
                          by, msg, n);
}

cJSON *mg_rt_overrides_json(struct mg_runtime *rt) {
  cJSON *ov = NULL;
  if (mg_overrides_to_json(&rt->overrides, &ov) != 0)
    return NULL;
  return ov;
}

void mg_rt_override_of(struct mg_runtime *rt, const char *flag, bool *kill,
                       bool *weights) {
  const struct mg_override *x = mg_overrides_find(&rt->overrides, flag);
  *kill = x && x->killed;
  *weights = x && x->has_weights;
}

/* ---- target overrides ------------------------------------------------------------ */

int mg_rt_set_min_confidence(struct mg_runtime *rt, const char *target,
                             bool clear, double value,
                             const struct mg_actor *by, char *msg,
                             size_t n) {
  const struct mg_target *t = mg_targets_find(&rt->cfg->targets, target);
  const struct mg_gate_cfg *g;
  const struct mg_target_override *x;
  struct mg_event ev;
  double before;
  int saved, rc;
  if (t == NULL) {
    snprintf(msg, n, "No target named \"%s\".", target);
    return -ENOENT;
  }
  g = &mg_policy_of(&rt->cfg->fallbacks, t)->gate;
  if (!g->enabled) {
    snprintf(msg, n,
             "Target %s has no confidence gate (targets.%s.confidence): "
             "there is no threshold to set.",
             t->name, t->name);
    return -EINVAL;
  }
  if (!clear && (!isfinite(value) ||
                 (mg_gate_needs_logprobs(g) && (value < 0 || value > 1)))) {
    snprintf(msg, n,
             "min_confidence must be a number%s.",
             mg_gate_needs_logprobs(g) ? " between 0 and 1" : "");
    return -EINVAL;
  }
  x = mg_toverrides_find(&rt->toverrides, t->name);
  before = x ? x->min_confidence : g->min;
  if (clear)
    mg_toverrides_clear(&rt->toverrides, t->name);
  else if (mg_toverrides_set(&rt->toverrides, t->name, value,
                             by ? by->by : NULL, by ? by->reason : NULL,
                             mg_wall_ms()) != 0) {
    snprintf(msg, n, "Out of memory.");
    return -ENOMEM;
  }
  /* Saved first, then in force (as the flag overrides). */
  saved = save_state(rt);
  rc = publish(rt);
  if (rc != 0) {
    snprintf(msg, n, "Out of memory.");
    return rc;
  }
  mg_info("admin (%s): min_confidence of %s %.4g -> %.4g",
          by && by->by ? by->by : "admin", t->name, before,
          clear ? g->min : value);
  memset(&ev, 0, sizeof(ev));
  ev.type = clear ? "min_confidence_cleared" : "min_confidence";
  ev.severity = MG_SEV_INFO;
  ev.target = t->name;
  ev.actor = by;
  ev.step = -1;
  ev.weight_bp = -1;
  ev.has_min_confidence = true;
  ev.min_confidence_before = before;
  ev.min_confidence = clear ? g->min : value;
  if (rt->hooks.event)
    rt->hooks.event(rt->hooks.arg, &ev);
  if (saved != 0) {
    snprintf(msg, n,
             "The change is in force but could not be saved to the state "
             "file: %s.",
             strerror(-saved));
    return -EIO;
  }
  return 0;
}

cJSON *mg_rt_targets_json(struct mg_runtime *rt, const struct mg_snap *s) {
  const struct mg_config *cfg = s->cfg;
  cJSON *root = cJSON_CreateObject();
  size_t i;
  for (i = 0; root && i < cfg->targets.n; i++) {
    const struct mg_target *t = &cfg->targets.v[i];
    const struct mg_gate_cfg *g = &mg_policy_of(&cfg->fallbacks, t)->gate;
    const struct mg_target_override *x =
        mg_toverrides_find(&rt->toverrides, t->name);
    cJSON *o = cJSON_AddObjectToObject(root, t->name), *ov;
    char ts[32];
    if (o == NULL)
      break;
    if (!g->enabled) {
      cJSON_AddNullToObject(o, "min_confidence");
      cJSON_AddNullToObject(o, "file_min_confidence");
    } else {
      cJSON_AddNumberToObject(o, "min_confidence", s->min_conf[i]);
      cJSON_AddNumberToObject(o, "file_min_confidence", g->min);
    }
    if (x == NULL) {
      cJSON_AddNullToObject(o, "min_confidence_override");
      continue;
    }
    ov = cJSON_AddObjectToObject(o, "min_confidence_override");
    if (ov == NULL)
      break;
    cJSON_AddNumberToObject(ov, "value", x->min_confidence);
    cJSON_AddBoolToObject(ov, "applied", g->enabled);
    cJSON_AddStringToObject(ov, "by", x->by);
    if (x->reason)
      cJSON_AddStringToObject(ov, "reason", x->reason);
    else
      cJSON_AddNullToObject(ov, "reason");
    mg_rfc3339_format(x->updated_ms, ts);
    cJSON_AddStringToObject(ov, "updated", ts);
  }
  return root;
}

/* ---- feedback budgets ----------------------------------------------------------- */

/* Clients seen before the budgets are forgotten (bounds the map when
 * client names keep changing through reloads of a keys file). */
#define FB_BUCKETS_MAX 4096

bool mg_rt_feedback_admit(struct mg_runtime *rt, const char *client,
                          uint32_t items, double per_second, double burst,
                          int64_t mono, uint32_t *retry_ms) {
  const char *name = client ? client : "";
  size_t len = strlen(name);
  struct fb_bucket *b;
  double need = items > burst ? burst : (double)items;
  bool ok;
  pthread_mutex_lock(&rt->fb_mu);
  b = mg_map_get(&rt->fb_buckets, name, len);
  if (b == NULL) {
    if (rt->fb_buckets.count >= FB_BUCKETS_MAX) {
      size_t i;
      for (i = 0; i < rt->fb_buckets.cap; i++)
        if (rt->fb_buckets.slots[i].key)
          free(rt->fb_buckets.slots[i].value);
      mg_map_free(&rt->fb_buckets);
      mg_map_init(&rt->fb_buckets);
    }
    b = malloc(sizeof(*b) + len + 1);
    if (b) {
      memcpy(b->name, name, len + 1);
      b->tokens = burst;
      b->last = mono;
      if (mg_map_put(&rt->fb_buckets, b->name, len, b) != 0) {
        free(b);
        b = NULL;
      }
    }
    if (b == NULL) {
      /* Out of memory: refuse rather than let feedback flood the log. */
      pthread_mutex_unlock(&rt->fb_mu);
      *retry_ms = 1000;
      return false;
    }
  }
  if (mono > b->last) {
    b->tokens += (double)(mono - b->last) / 1000.0 * per_second;
    b->last = mono;
  }
  if (b->tokens > burst)
    b->tokens = burst;
  ok = b->tokens >= need;
  if (ok) {
    b->tokens -= need;
    *retry_ms = 0;
  } else {
    *retry_ms = (uint32_t)ceil((need - b->tokens) / per_second * 1000.0);
  }
  pthread_mutex_unlock(&rt->fb_mu);
  return ok;
}

/* ---- ramp changes ------------------------------------------------------------- */

/* Something changed a ramp's state: weights, state file, event, log. The
 * ramp's rollback evidence comes from its state. */
static void ramp_changed(struct mg_runtime *rt, const struct mg_flag *f,
                         const struct mg_ramp_cfg *rc, struct mg_rt_ramp *r,
                         const char *event, const struct mg_actor *by) {
  uint32_t w = mg_ramp_weight(rc, &r->st);
  bool rollback = r->st.status == MG_RAMP_ROLLED_BACK &&
                  strcmp(event, "rollback") == 0;
  struct mg_event ev;
  const char *names[MG_FLAG_MAX_VARIANTS];
  uint32_t before[MG_FLAG_MAX_VARIANTS], i;
  /* The weights in force before the change, for the notification. */
  memcpy(before, rt->cur->flag_states[f->index].weights, sizeof(before));
  (void)save_state(rt);
  if (publish(rt) != 0)
    mg_error("ramp of flag %s: out of memory publishing its state", f->name);
  if (rollback && r->st.guard[0])
    mg_warn("ramp of flag %s: ROLLED BACK %s to 0%% (%s: observed %.4g, "
            "threshold %.4g)",
            f->name, r->treatment, r->st.guard, r->st.observed,
            r->st.threshold);
  else
    mg_info("ramp of flag %s: %s, step %u, %s at %.2f%%", f->name, event,
            r->st.step, r->treatment, w / 100.0);
  memset(&ev, 0, sizeof(ev));
  ev.type = event;
  ev.severity = rollback ? MG_SEV_CRITICAL
                         : (strcmp(event, "ramp_waiting") == 0
                                ? MG_SEV_WARNING
                                : MG_SEV_INFO);
  ev.flag = f->name;
  ev.variant = r->treatment;
  ev.state = mg_ramp_status_name(r->st.status);
  ev.step = (int32_t)r->st.step;
  ev.weight_bp = w;
  ev.actor = by;
  for (i = 0; i < f->nvariants; i++)
    names[i] = f->variants[i].name;
  ev.variants = names;
  ev.nvariants = f->nvariants;
  ev.weights_before = before;
  ev.weights_after = rt->cur->flag_states[f->index].weights;
  if (r->st.status == MG_RAMP_ROLLED_BACK && r->st.guard[0]) {
    ev.guard = r->st.guard;
    ev.observed = r->st.observed;
    ev.threshold = r->st.threshold;
    ev.window_ms = r->st.why.window_ms ? r->st.why.window_ms
                                       : rc->guards.window_ms;
    ev.evidence = &r->st.why;
  }
  if (rt->hooks.event)
    rt->hooks.event(rt->hooks.arg, &ev);
  if (rt->hooks.ramp_changed)
    rt->hooks.ramp_changed(rt->hooks.arg, f->name);
}

uint32_t mg_rt_tick_period(struct mg_runtime *rt) { return rt->tick_period; }

uint32_t mg_rt_tick(struct mg_runtime *rt, int64_t wall, int64_t mono) {
  const struct mg_config *cfg = rt->cfg;
  size_t i;
  for (i = 0; i < cfg->flags.n; i++) {
    const struct mg_ramp_cfg *rc = &cfg->ramps.v[i];
    const struct mg_flag *f = &cfg->flags.v[i];
    struct mg_window_view *views;
    struct mg_rt_ramp *r;
    enum mg_ramp_event ev;
    if (!rc->enabled || (r = ramp_for(rt, f, rc)) == NULL ||
        (rt->hooks.ramp_leads &&
         !rt->hooks.ramp_leads(rt->hooks.arg, f->name)) ||
        (views = ramp_views(r, mono)) == NULL)
      continue;
    /* With a fleet, the guards judge every instance's outcomes. */
    if (rt->hooks.ramp_fleet_views)
      rt->hooks.ramp_fleet_views(rt->hooks.arg, f->name, views);
    /* The guards judge every worker's outcomes, on the evidence since the
     * step began (always-valid sequential tests, ramps/seqtest.h). */
    ev = mg_ramp_judge(rc, &r->st, wall, &views[0], &views[1], NULL);
    free(views);
    if (ev == MG_RAMP_ADVANCED)
      ramp_changed(rt, f, rc, r, "ramp_step", NULL);
    else if (ev == MG_RAMP_ROLLBACK)
      ramp_changed(rt, f, rc, r, "rollback", NULL);
    else if (ev == MG_RAMP_WAIT)
      ramp_changed(rt, f, rc, r, "ramp_waiting", NULL);
  }
  return rt->tick_period;
}

int mg_rt_ramp_action(struct mg_runtime *rt, const char *flag,
                      const char *action, const struct mg_actor *by,
                      char *msg, size_t n) {
  const struct mg_flag *f = flag_of(rt, flag, msg, n);
  const struct mg_ramp_cfg *rc;
  struct mg_rt_ramp *r;
  int64_t now = mg_wall_ms();
  int rc2 = -EINVAL;
  const char *event = action;

  if (f == NULL)
    return -ENOENT;
  rc = &rt->cfg->ramps.v[f->index];
  if (!rc->enabled) {
    snprintf(msg, n, "Flag %s has no ramp.", f->name);
    return -ENOENT;
  }
  r = ramp_for(rt, f, rc);
  if (r == NULL) {
    snprintf(msg, n, "Out of memory.");
    return -ENOMEM;
  }
  if (strcmp(action, "pause") == 0) {
    rc2 = mg_ramp_pause(&r->st, now);
    event = "ramp_paused";
  } else if (strcmp(action, "resume") == 0) {
    rc2 = mg_ramp_resume(&r->st, now);
    event = "ramp_resumed";
  } else if (strcmp(action, "promote") == 0) {
    rc2 = mg_ramp_promote(rc, &r->st, now);
    event = "ramp_step";
  } else if (strcmp(action, "rollback") == 0) {
    rc2 = mg_ramp_rollback(&r->st, now);
    event = "rollback";
  } else if (strcmp(action, "restart") == 0) {
    mg_ramp_restart(&r->st, now);
    /* Old outcomes belong to the version that failed. */
    ramp_reset_windows(r);
    rc2 = 0;
    event = "ramp_restarted";
  } else {
    snprintf(msg, n, "Unknown ramp action '%s'.", action);
    return -EINVAL;
  }
  if (rc2 != 0) {
    snprintf(msg, n, "Cannot %s the ramp of %s: it is %s.", action, f->name,
             mg_ramp_status_name(r->st.status));
    return rc2;
  }
  ramp_changed(rt, f, rc, r, event, by);
  mg_info("admin: ramp %s on flag %s", action, f->name);
  return 0;
}

cJSON *mg_rt_ramp_json(struct mg_runtime *rt, const struct mg_flag *f,
                       int64_t mono) {
  const struct mg_ramp_cfg *rc;
  struct mg_rt_ramp *r;
  struct mg_window_sum sums[2];
  cJSON *o, *w, *arr;
  uint32_t i;
  int k;
  if (f->index >= rt->cfg->flags.n ||
      rt->cfg->flags.v[f->index].name != f->name)
    return NULL; /* a flag of another snapshot */
  rc = &rt->cfg->ramps.v[f->index];
  if (!rc->enabled || (r = ramp_for(rt, f, rc)) == NULL)
    return NULL;
  o = mg_ramp_state_to_json(&r->st);
  if (o == NULL)
    return NULL;
  cJSON_AddStringToObject(o, "variant", r->treatment);
  cJSON_AddNumberToObject(o, "weight", mg_ramp_weight(rc, &r->st) / 100.0);
  /* When the step in force may advance (its hold over), or that a human
   * must promote it. */
  cJSON_AddBoolToObject(o, "waiting_for_human",
                        r->st.status == MG_RAMP_WAITING);
  if (r->st.status == MG_RAMP_RUNNING && r->st.step + 1 < rc->nsteps) {
    int64_t left = r->st.step_started + rc->steps[r->st.step].hold_ms -
                   mg_wall_ms();
    cJSON_AddNumberToObject(o, "next_step_in_ms",
                            (double)(left > 0 ? left : 0));
  } else {
    cJSON_AddNullToObject(o, "next_step_in_ms");
  }
  arr = cJSON_AddArrayToObject(o, "steps");
  for (i = 0; i < rc->nsteps; i++) {
    cJSON *st = cJSON_CreateObject();
    cJSON_AddNumberToObject(st, "weight", rc->steps[i].weight / 100.0);
    cJSON_AddNumberToObject(st, "hold_ms", rc->steps[i].hold_ms);
    cJSON_AddBoolToObject(st, "manual", rc->steps[i].manual);
    cJSON_AddItemToArray(arr, st);
  }
  {
    struct mg_window_view *views = ramp_views(r, mono);
    if (views == NULL) {
      cJSON_Delete(o);
      return NULL;
    }
    sums[0] = views[0].win[MG_CELL_ALL];
    sums[1] = views[1].win[MG_CELL_ALL];
    {
      cJSON *g = mg_ramp_guards_json(rc, &r->st, &views[0], &views[1]);
      if (g)
        cJSON_AddItemToObject(o, "guards", g);
    }
    free(views);
  }
  w = cJSON_AddObjectToObject(o, "window");
  for (k = 0; k < 2; k++) {
    cJSON *v = cJSON_AddObjectToObject(w, k ? r->control : r->treatment);
    double nr = (double)sums[k].requests;
    cJSON_AddNumberToObject(v, "requests", nr);
    cJSON_AddNumberToObject(v, "error_rate", nr ? sums[k].errors / nr : 0);
    cJSON_AddNumberToObject(v, "fallback_rate",
                            nr ? sums[k].fallbacks / nr : 0);
    cJSON_AddNumberToObject(v, "low_confidence_rate",
                            nr ? sums[k].low_conf / nr : 0);
    cJSON_AddNumberToObject(v, "p95_ms", mg_window_quantile(&sums[k], 0.95));
  }
  return o;
}

bool mg_rt_ramp_view(const struct mg_snap *s, size_t i, int64_t mono,
                     struct mg_rt_ramp_view *v) {
  const struct mg_ramp_cfg *rc;
  const struct mg_flag *f;
  if (i >= s->cfg->flags.n || s->ramps[i] == NULL)
    return false;
  rc = &s->cfg->ramps.v[i];
  f = &s->cfg->flags.v[i];
  v->treatment = f->variants[rc->variant].name;
  v->control = f->variants[rc->control].name;
  v->step = s->ramp_states[i].step;
  v->rolled_back = s->ramp_states[i].status == MG_RAMP_ROLLED_BACK;
  {
    struct mg_window_view *views = ramp_views(s->ramps[i], mono);
    if (views == NULL)
      return false;
    v->sum[0] = views[0].win[MG_CELL_ALL];
    v->sum[1] = views[1].win[MG_CELL_ALL];
    free(views);
  }
  return true;
}

/* ---- the fleet's store ---------------------------------------------------------- */

const struct mg_overrides *mg_rt_overrides(struct mg_runtime *rt) {
  return &rt->overrides;
}

int mg_rt_replace_overrides(struct mg_runtime *rt, struct mg_overrides *fresh,
                            const char *store) {
  struct mg_snap *before = mg_rt_snap(rt);
  struct mg_overrides old = rt->overrides;
  const struct mg_actor by = {store, "a change made on another instance"};
  size_t i;
  int rc;

  rt->overrides = *fresh;
  mg_overrides_init(fresh);
  /* Saved first, then in force, as for an admin change. */
  (void)save_state(rt);
  rc = publish(rt);
  if (rc != 0) {
    *fresh = rt->overrides;
    rt->overrides = old;
    mg_snap_unref(before);
    return rc;
  }
  mg_overrides_free(&old);
  warn_stale(rt);
  for (i = 0; i < rt->cfg->flags.n && before->cfg == rt->cfg; i++) {
    const struct mg_flag *f = &rt->cfg->flags.v[i];
    const struct mg_flag_state *a = &before->flag_states[i],
                               *b = &rt->cur->flag_states[i];
    const char *names[MG_FLAG_MAX_VARIANTS];
    struct mg_event ev;
    uint32_t j;
    bool wchanged = a->has_weights != b->has_weights ||
                    (b->has_weights &&
                     memcmp(a->weights, b->weights,
                            f->nvariants * sizeof(a->weights[0])) != 0);
    if (a->killed == b->killed && !wchanged)
      continue;
    memset(&ev, 0, sizeof(ev));
    ev.flag = f->name;
    ev.actor = &by;
    ev.step = -1;
    ev.weight_bp = -1;
    if (a->killed != b->killed) {
      ev.type = b->killed ? "kill" : "unkill";
      ev.severity = b->killed ? MG_SEV_WARNING : MG_SEV_INFO;
    } else {
      ev.type = b->has_weights ? "weights" : "weights_cleared";
      ev.severity = MG_SEV_INFO;
    }
    if (b->has_weights) {
      for (j = 0; j < f->nvariants; j++)
        names[j] = f->variants[j].name;
      ev.variants = names;
      ev.nvariants = f->nvariants;
      ev.weights_after = b->weights;
    }
    mg_info("%s: flag %s %s (changed on another instance)", store, f->name,
            ev.type);
    if (rt->hooks.event)
      rt->hooks.event(rt->hooks.arg, &ev);
  }
  mg_snap_unref(before);
  return 0;
}

void mg_rt_breaker_hint(struct mg_runtime *rt, const char *target,
                        const char *origin, int64_t mono) {
  const struct mg_target *t = mg_targets_find(&rt->cfg->targets, target);
  struct mg_breaker *b;
  struct mg_event ev;
  if (t == NULL || (b = breaker_for(rt, t->name)) == NULL)
    return;
  if (!mg_breaker_trip(b, &mg_policy_of(&rt->cfg->fallbacks, t)->breaker,
                       mono))
    return;
  mg_warn("breaker of target %s: open on a hint from instance %s (requests "
          "skip it; this instance probes it itself when half-open)",
          t->name, origin);
  memset(&ev, 0, sizeof(ev));
  ev.type = "breaker";
  ev.severity = MG_SEV_WARNING;
  ev.target = t->name;
  ev.state = mg_breaker_state_name(MG_BREAKER_OPEN);
  ev.step = -1;
  ev.weight_bp = -1;
  ev.instance = origin;
  if (rt->hooks.event)
    rt->hooks.event(rt->hooks.arg, &ev);
}

cJSON *mg_rt_ramp_state_json(struct mg_runtime *rt, const char *flag) {
  const struct mg_flag *f = mg_flags_find(&rt->cfg->flags, flag);
  const struct mg_ramp_cfg *rc;
  struct mg_rt_ramp *r;
  if (f == NULL || !(rc = &rt->cfg->ramps.v[f->index])->enabled ||
      (r = ramp_for(rt, f, rc)) == NULL)
    return NULL;
  return mg_ramp_state_to_json(&r->st);
}

bool mg_rt_ramp_local_views(struct mg_runtime *rt, const char *flag,
                            int64_t mono, struct mg_window_view v[2]) {
  const struct mg_flag *f = mg_flags_find(&rt->cfg->flags, flag);
  const struct mg_ramp_cfg *rc;
  struct mg_window_view *views;
  struct mg_rt_ramp *r;
  if (f == NULL || !(rc = &rt->cfg->ramps.v[f->index])->enabled ||
      (r = ramp_for(rt, f, rc)) == NULL || (views = ramp_views(r, mono)) == NULL)
    return false;
  memcpy(v, views, 2 * sizeof(*v));
  free(views);
  return true;
}

int mg_rt_ramp_adopt(struct mg_runtime *rt, const char *flag,
                     const cJSON *state, const char *origin) {
  const struct mg_flag *f = mg_flags_find(&rt->cfg->flags, flag);
  const struct mg_ramp_cfg *rc;
  struct mg_rt_ramp *r;
  struct mg_ramp_state st, old;
  const char *event = NULL;
  const struct mg_actor by = {origin, "decided on another instance"};
  struct mg_event ev;
  uint32_t w;
  if (f == NULL || !(rc = &rt->cfg->ramps.v[f->index])->enabled ||
      (r = ramp_for(rt, f, rc)) == NULL)
    return -ENOENT;
  memset(&st, 0, sizeof(st));
  if (mg_ramp_state_from_json(&st, state, rc->nsteps) != 0)
    return -EINVAL;
  old = r->st;
  if (st.status == old.status && st.step == old.step &&
      st.epoch == old.epoch && st.step_started == old.step_started &&
      st.paused_at == old.paused_at) {
    /* Nothing a request sees changed; keep the bookkeeping in step. */
    r->st = st;
    return 0;
  }
  r->st = st;
  /* A restart there empties the evidence here too. */
  if (st.status == MG_RAMP_RUNNING && st.step == 0 &&
      old.status == MG_RAMP_ROLLED_BACK)
    ramp_reset_windows(r);
  (void)save_state(rt);
  if (publish(rt) != 0)
    return -ENOMEM;
  if (st.status == MG_RAMP_ROLLED_BACK && old.status != MG_RAMP_ROLLED_BACK)
    event = "rollback";
  else if (st.status == MG_RAMP_PAUSED && old.status != MG_RAMP_PAUSED)
    event = "ramp_paused";
  else if (st.status == MG_RAMP_WAITING && old.status != MG_RAMP_WAITING)
    event = "ramp_waiting";
  else if (st.step != old.step)
    event = "ramp_step";
  else if (old.status == MG_RAMP_PAUSED)
    event = "ramp_resumed";
  else if (old.status == MG_RAMP_ROLLED_BACK)
    event = "ramp_restarted";
  w = mg_ramp_weight(rc, &r->st);
  mg_info("ramp of flag %s: %s from instance %s: step %u, %s at %.2f%%",
          f->name, event ? event : "state", origin, r->st.step, r->treatment,
          w / 100.0);
  if (event == NULL)
    return 0;
  memset(&ev, 0, sizeof(ev));
  ev.type = event;
  ev.severity = strcmp(event, "rollback") == 0 ? MG_SEV_CRITICAL
                                                 : MG_SEV_INFO;
  ev.flag = f->name;
  ev.variant = r->treatment;
  ev.state = mg_ramp_status_name(r->st.status);
  ev.step = (int32_t)r->st.step;
  ev.weight_bp = w;
  ev.actor = &by;
  if (r->st.status == MG_RAMP_ROLLED_BACK && r->st.guard[0]) {
    ev.guard = r->st.guard;
    ev.observed = r->st.observed;
    ev.threshold = r->st.threshold;
    ev.window_ms = r->st.why.window_ms ? r->st.why.window_ms
                                       : rc->guards.window_ms;
    ev.evidence = &r->st.why;
  }
  if (rt->hooks.event)
    rt->hooks.event(rt->hooks.arg, &ev);
  return 0;
}

const char *mg_rt_ramp_flag(struct mg_runtime *rt, size_t i) {
  size_t k, n = 0;
  for (k = 0; k < rt->cfg->flags.n; k++)
    if (rt->cfg->ramps.v[k].enabled && n++ == i)
      return rt->cfg->flags.v[k].name;
  return NULL;
}
