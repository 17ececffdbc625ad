/* ramp.c - ramps, guards and their state. */
#include "ramps/ramp.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/time.h"

static const char *const status_names[] = {"running", "waiting", "paused",
                                           "done", "rolled_back"};

const char *mg_ramp_status_name(enum mg_ramp_status s) {
  return status_names[s];
}

/* ---- config ------------------------------------------------------------------ */

static const char *const ramp_keys[] = {"variant", "steps", "interval_ms",
                                        NULL};
static const char *const step_keys[] = {"weight", "hold_ms", "manual", NULL};
static const char *const guard_keys[] = {
    "window_ms",         "min_requests",      "consecutive",
    "max_error_rate",    "max_error_ratio",   "max_p95_ms",
    "max_fallback_rate", "max_low_confidence_rate", NULL};

static void parse_guards(struct mg_guards *g, const cJSON *obj,
                         const char *path, struct mg_cfg_errors *e) {
  g->window_ms = 300000;
  g->min_requests = 100;
  g->consecutive = 1;
  g->max_error_rate = g->max_error_ratio = g->max_p95_ms =
      g->max_fallback_rate = g->max_low_confidence_rate = -1;
  if (obj == NULL || !mg_cfg_object(obj, path, guard_keys, e))
    return;
  g->window_ms =
      (uint32_t)mg_cfg_int(obj, "window_ms", path, 300000, 100, 86400000, e);
  g->min_requests =
      (uint32_t)mg_cfg_int(obj, "min_requests", path, 100, 1, 100000000, e);
  g->consecutive =
      (uint32_t)mg_cfg_int(obj, "consecutive", path, 1, 1, 1000, e);
  g->max_error_rate = mg_cfg_num(obj, "max_error_rate", path, -1, 0, 1, e);
  g->max_error_ratio =
      mg_cfg_num(obj, "max_error_ratio", path, -1, 1, 1e6, e);
  g->max_p95_ms = mg_cfg_num(obj, "max_p95_ms", path, -1, 1, 86400000, e);
  g->max_fallback_rate =
      mg_cfg_num(obj, "max_fallback_rate", path, -1, 0, 1, e);
  g->max_low_confidence_rate =
      mg_cfg_num(obj, "max_low_confidence_rate", path, -1, 0, 1, e);
}

static void parse_ramp(struct mg_ramp_cfg *c, const struct mg_flag *f,
                       const cJSON *obj, const cJSON *guards,
                       const char *path, struct mg_cfg_errors *e) {
  const cJSON *steps, *it;
  char p[MG_CFG_PATH_MAX];
  uint32_t others = 0, i, prev = 0;
  char *name;

  if (obj == NULL) {
    if (guards) {
      mg_cfg_join(p, path, "guards");
      mg_cfg_error(e, p, "guards protect a ramp: add \"ramp\" to the flag");
    }
    return;
  }
  mg_cfg_join(p, path, "ramp");
  if (!mg_cfg_object(obj, p, ramp_keys, e))
    return;
  c->enabled = true;
  c->control = f->off_variant;
  name = mg_cfg_str(obj, "variant", p, NULL, true, e);
  if (name) {
    int vi = mg_flag_variant_index(f, name);
    char q[MG_CFG_PATH_MAX];
    mg_cfg_join(q, p, "variant");
    if (vi < 0)
      mg_cfg_error(e, q, "unknown variant \"%s\"", name);
    else if ((uint32_t)vi == f->off_variant)
      mg_cfg_error(e, q, "the off_variant is the control; ramp a treatment");
    else
      c->variant = (uint32_t)vi;
    free(name);
  } else if (f->nvariants == 2) {
    c->variant = f->off_variant == 0 ? 1 : 0;
  } else {
    mg_cfg_error(e, p, "name the variant to ramp (\"variant\")");
  }
  c->interval_ms =
      (uint32_t)mg_cfg_int(obj, "interval_ms", p, 10000, 10, 3600000, e);
  /* Variants other than the control and the ramped one keep the file's
   * weights; the ramp must leave room for them. */
  for (i = 0; i < f->nvariants; i++)
    if (i != c->variant && i != c->control)
      others += f->variants[i].weight;
  steps = cJSON_GetObjectItemCaseSensitive(obj, "steps");
  {
    char rp[MG_CFG_PATH_MAX];
    mg_cfg_join(rp, path, "ramp");
    mg_cfg_join(p, rp, "steps");
  }
  if (!cJSON_IsArray(steps) || cJSON_GetArraySize(steps) == 0) {
    mg_cfg_error(e, p, "must be a non-empty array of steps");
    return;
  }
  c->steps = calloc((size_t)cJSON_GetArraySize(steps), sizeof(*c->steps));
  if (c->steps == NULL) {
    mg_cfg_error(e, p, "out of memory");
    return;
  }
  i = 0;
  cJSON_ArrayForEach(it, steps) {
    struct mg_ramp_step *s = &c->steps[c->nsteps++];
    const cJSON *w;
    char sp[MG_CFG_PATH_MAX], wp[MG_CFG_PATH_MAX];
    double bp;
    mg_cfg_join_idx(sp, p, i++);
    if (!mg_cfg_object(it, sp, step_keys, e))
      continue;
    w = cJSON_GetObjectItemCaseSensitive(it, "weight");
    mg_cfg_join(wp, sp, "weight");
    bp = cJSON_IsNumber(w) ? w->valuedouble * 100 : -1;
    if (!(bp > 0 && bp <= 10000) || fabs(bp - round(bp)) > 1e-6) {
      mg_cfg_error(e, wp,
                   "must be a percentage above 0 with at most two decimals");
      continue;
    }
    s->weight = (uint32_t)round(bp);
    if (s->weight < prev)
      mg_cfg_error(e, wp, "a ramp only goes up: %.2f follows %.2f",
                   s->weight / 100.0, prev / 100.0);
    if (s->weight + others > 10000)
      mg_cfg_error(e, wp,
                   "leaves no room for the other variants' %.2f%%",
                   others / 100.0);
    prev = s->weight;
    s->hold_ms = (uint32_t)mg_cfg_int(it, "hold_ms", sp, 0, 0, 2000000000, e);
    s->manual = mg_cfg_bool(it, "manual", sp, false, e);
  }
  mg_cfg_join(p, path, "guards");
  parse_guards(&c->guards, guards, p, e);
}

void mg_ramps_parse(struct mg_ramps *out, const cJSON *section,
                    const struct mg_flags *flags, struct mg_cfg_errors *e) {
  size_t i;
  memset(out, 0, sizeof(*out));
  out->n = flags->n;
  out->v = calloc(flags->n ? flags->n : 1, sizeof(*out->v));
  if (out->v == NULL) {
    mg_cfg_error(e, "$.flags", "out of memory");
    return;
  }
  for (i = 0; i < flags->n; i++) {
    const struct mg_flag *f = &flags->v[i];
    const cJSON *fj = cJSON_GetObjectItemCaseSensitive(section, f->name);
    char path[MG_CFG_PATH_MAX];
    if (f->nvariants == 0)
      continue;
    mg_cfg_join(path, "$.flags", f->name);
    parse_ramp(&out->v[i], f, cJSON_GetObjectItemCaseSensitive(fj, "ramp"),
               cJSON_GetObjectItemCaseSensitive(fj, "guards"), path, e);
  }
}

void mg_ramps_free(struct mg_ramps *r) {
  size_t i;
  for (i = 0; i < r->n; i++)
    free(r->v[i].steps);
  free(r->v);
  memset(r, 0, sizeof(*r));
}

/* ---- state -------------------------------------------------------------------- */

void mg_ramp_start(struct mg_ramp_state *st, int64_t now) {
  memset(st, 0, sizeof(*st));
  st->status = MG_RAMP_RUNNING;
  st->step_started = now;
  st->last_check = now;
}

uint32_t mg_ramp_weight(const struct mg_ramp_cfg *c,
                        const struct mg_ramp_state *st) {
  if (st->status == MG_RAMP_ROLLED_BACK || c->nsteps == 0)
    return 0;
  return c->steps[st->step < c->nsteps ? st->step : c->nsteps - 1].weight;
}

void mg_ramp_apply(const struct mg_ramp_cfg *c, const struct mg_ramp_state *st,
                   const struct mg_flag *f, struct mg_flag_state *fs) {
  uint32_t w[MG_FLAG_MAX_VARIANTS], used = 0, i;
  for (i = 0; i < f->nvariants; i++) {
    w[i] = (i == c->variant || i == c->control) ? 0 : f->variants[i].weight;
    used += w[i];
  }
  w[c->variant] = mg_ramp_weight(c, st);
  used += w[c->variant];
  w[c->control] = used <= 10000 ? 10000 - used : 0;
  mg_flag_state_set_weights(fs, f, w);
}

/* The first guard the treatment breaches, if any. */
static bool breached(const struct mg_guards *g,
                     const struct mg_window_sum *t,
                     const struct mg_window_sum *c, const char **guard,
                     double *observed, double *threshold) {
  double n = (double)t->requests;
  double rate = t->errors / n;
#define BREACH(name, value, max)                                             \
  do {                                                                       \
    if ((max) >= 0 && (value) > (max)) {                                     \
      *guard = (name);                                                       \
      *observed = (value);                                                   \
      *threshold = (max);                                                    \
      return true;                                                           \
    }                                                                        \
  } while (0)
  BREACH("max_error_rate", rate, g->max_error_rate);
  if (g->max_error_ratio >= 0 && c->requests >= g->min_requests &&
      t->errors > 0) {
    /* The ratio alone is noise on small samples (one error against none
     * is an infinite ratio): it counts only when the treatment's rate is
     * also significantly above the control's (one-sided two-proportion
     * z-test, p < 0.01). */
    double tr = t->errors / n, cr = (double)c->errors / (double)c->requests;
    double pooled = (double)(t->errors + c->errors) /
                    (double)(t->requests + c->requests);
    double se = sqrt(pooled * (1 - pooled) *
                     (1.0 / n + 1.0 / (double)c->requests));
    double ratio = cr > 0 ? tr / cr : INFINITY;
    if (se > 0 && (tr - cr) / se > 2.326) {
      /* Report a finite number for the log when the control had none. */
      if (!isfinite(ratio))
        ratio = tr * (double)c->requests;
      BREACH("max_error_ratio", ratio, g->max_error_ratio);
    }
  }
  BREACH("max_p95_ms", mg_window_quantile(t, 0.95), g->max_p95_ms);
  BREACH("max_fallback_rate", t->fallbacks / n, g->max_fallback_rate);
  BREACH("max_low_confidence_rate", t->low_conf / n,
         g->max_low_confidence_rate);
#undef BREACH
  return false;
}

enum mg_ramp_event mg_ramp_check(const struct mg_ramp_cfg *c,
                                 struct mg_ramp_state *st, int64_t now,
                                 const struct mg_window_sum *t,
                                 const struct mg_window_sum *ctl) {
  const char *guard = NULL;
  double observed = 0, threshold = 0;

  if (!c->enabled || st->status == MG_RAMP_ROLLED_BACK)
    return MG_RAMP_NOTHING;
  if (now - st->last_check < (int64_t)c->interval_ms)
    return MG_RAMP_NOTHING;
  st->last_check = now;
  /* Too little traffic: no conclusion either way. */
  if (t->requests < c->guards.min_requests)
    return MG_RAMP_NOTHING;
  if (breached(&c->guards, t, ctl, &guard, &observed, &threshold)) {
    if (++st->failures < c->guards.consecutive)
      return MG_RAMP_NOTHING;
    st->status = MG_RAMP_ROLLED_BACK;
    snprintf(st->guard, sizeof(st->guard), "%s", guard);
    st->observed = observed;
    st->threshold = threshold;
    st->rolled_back_at = now;
    return MG_RAMP_ROLLBACK;
  }
  st->failures = 0;
  if (st->status != MG_RAMP_RUNNING || st->step + 1 >= c->nsteps)
    return MG_RAMP_NOTHING;
  if (now - st->step_started < (int64_t)c->steps[st->step].hold_ms)
    return MG_RAMP_NOTHING;
  if (c->steps[st->step].manual) {
    st->status = MG_RAMP_WAITING;
    return MG_RAMP_WAIT;
  }
  st->step++;
  st->step_started = now;
  if (st->step + 1 >= c->nsteps)
    st->status = MG_RAMP_DONE;
  return MG_RAMP_ADVANCED;
}

int mg_ramp_pause(struct mg_ramp_state *st, int64_t now) {
  if (st->status != MG_RAMP_RUNNING && st->status != MG_RAMP_WAITING)
    return -EINVAL;
  st->status = MG_RAMP_PAUSED;
  st->paused_at = now;
  return 0;
}

int mg_ramp_resume(struct mg_ramp_state *st, int64_t now) {
  if (st->status != MG_RAMP_PAUSED)
    return -EINVAL;
  /* The hold does not run while paused. */
  st->step_started += now - st->paused_at;
  st->paused_at = 0;
  st->status = MG_RAMP_RUNNING;
  return 0;
}

int mg_ramp_promote(const struct mg_ramp_cfg *c, struct mg_ramp_state *st,
                    int64_t now) {
  if (st->status == MG_RAMP_ROLLED_BACK || st->status == MG_RAMP_DONE ||
      st->step + 1 >= c->nsteps)
    return -EINVAL;
  st->step++;
  st->step_started = now;
  st->failures = 0;
  st->paused_at = 0;
  st->status = st->step + 1 >= c->nsteps ? MG_RAMP_DONE : MG_RAMP_RUNNING;
  return 0;
}

int mg_ramp_rollback(struct mg_ramp_state *st, int64_t now) {
  if (st->status == MG_RAMP_ROLLED_BACK)
    return -EINVAL;
  st->status = MG_RAMP_ROLLED_BACK;
  snprintf(st->guard, sizeof(st->guard), "manual");
  st->observed = st->threshold = 0;
  st->rolled_back_at = now;
  return 0;
}

void mg_ramp_restart(struct mg_ramp_state *st, int64_t now) {
  mg_ramp_start(st, now);
}

/* ---- persistence ----------------------------------------------------------------- */

cJSON *mg_ramp_state_to_json(const struct mg_ramp_state *st) {
  cJSON *o = cJSON_CreateObject();
  char ts[32];
  if (o == NULL)
    return NULL;
  cJSON_AddStringToObject(o, "status", mg_ramp_status_name(st->status));
  cJSON_AddNumberToObject(o, "step", st->step);
  mg_rfc3339_format(st->step_started, ts);
  cJSON_AddStringToObject(o, "step_started", ts);
  if (st->status == MG_RAMP_PAUSED) {
    mg_rfc3339_format(st->paused_at, ts);
    cJSON_AddStringToObject(o, "paused_at", ts);
  }
  cJSON_AddNumberToObject(o, "failures", st->failures);
  if (st->status == MG_RAMP_ROLLED_BACK) {
    cJSON *rb = cJSON_AddObjectToObject(o, "rollback");
    cJSON_AddStringToObject(rb, "guard", st->guard);
    cJSON_AddNumberToObject(rb, "observed", st->observed);
    cJSON_AddNumberToObject(rb, "threshold", st->threshold);
    mg_rfc3339_format(st->rolled_back_at, ts);
    cJSON_AddStringToObject(rb, "at", ts);
  }
  return o;
}

int mg_ramp_state_from_json(struct mg_ramp_state *st, const cJSON *j,
                            uint32_t nsteps) {
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "status");
  const cJSON *step = cJSON_GetObjectItemCaseSensitive(j, "step");
  const cJSON *started = cJSON_GetObjectItemCaseSensitive(j, "step_started");
  const cJSON *paused = cJSON_GetObjectItemCaseSensitive(j, "paused_at");
  const cJSON *rb = cJSON_GetObjectItemCaseSensitive(j, "rollback");
  struct mg_ramp_state x;
  size_t i;

  memset(&x, 0, sizeof(x));
  if (!cJSON_IsString(s) || !cJSON_IsNumber(step) || !cJSON_IsString(started))
    return -EINVAL;
  for (i = 0; i < sizeof(status_names) / sizeof(status_names[0]); i++)
    if (strcmp(s->valuestring, status_names[i]) == 0)
      break;
  if (i == sizeof(status_names) / sizeof(status_names[0]))
    return -EINVAL;
  x.status = (enum mg_ramp_status)i;
  x.step = step->valuedouble < 0 ? 0 : (uint32_t)step->valuedouble;
  /* A config with fewer steps than before: stay at its last one. */
  if (nsteps && x.step >= nsteps)
    x.step = nsteps - 1;
  if (mg_rfc3339_parse(started->valuestring, &x.step_started) != 0)
    return -EINVAL;
  if (cJSON_IsString(paused))
    mg_rfc3339_parse(paused->valuestring, &x.paused_at);
  x.last_check = x.step_started;
  if (cJSON_IsObject(rb)) {
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(rb, "guard");
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(rb, "observed");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(rb, "threshold");
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(rb, "at");
    if (cJSON_IsString(g))
      snprintf(x.guard, sizeof(x.guard), "%s", g->valuestring);
    if (cJSON_IsNumber(o))
      x.observed = o->valuedouble;
    if (cJSON_IsNumber(t))
      x.threshold = t->valuedouble;
    if (cJSON_IsString(at))
      mg_rfc3339_parse(at->valuestring, &x.rolled_back_at);
  }
  *st = x;
  return 0;
}
