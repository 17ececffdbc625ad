/* ramp.c - ramps, guards and their state (ramp.h). */
#include "ramps/ramp.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/time.h"
#include "ramps/seqtest.h"

static const char *const status_names[] = {"running", "waiting", "paused",
                                           "done", "rolled_back"};

const char *mg_ramp_status_name(enum mg_ramp_status s) {
  return status_names[s];
}

/* ---- config ------------------------------------------------------------------ */

static const char *const ramp_keys[] = {"variant", "steps", "interval_ms",
                                        "cells", NULL};
static const char *const step_keys[] = {"weight",       "hold_ms",
                                        "manual",       "inputs",
                                        "guards",       "min_requests",
                                        "min_units",    NULL};
static const char *const input_keys[] = {"max_chars", "max_tools", NULL};
static const char *const cells_keys[] = {"chars", NULL};
static const char *const guard_keys[] = {
    "window_ms",         "min_requests",      "consecutive",
    "max_error_rate",    "max_error_ratio",   "max_p95_ms",
    "max_fallback_rate", "max_low_confidence_rate",
    "max_latency_ratio", "max_cost_ratio",    "feedback",
    "alpha",             "detect_ratio",      NULL};
/* A step's guards share the flag's window (one window per variant). */
static const char *const step_guard_keys[] = {
    "min_requests",      "consecutive",       "max_error_rate",
    "max_error_ratio",   "max_p95_ms",        "max_fallback_rate",
    "max_low_confidence_rate", "max_latency_ratio", "max_cost_ratio",
    "feedback",          "alpha",             "detect_ratio", NULL};
static const char *const fb_keys[] = {"min", "max", "max_ratio", "min_ratio",
                                      NULL};

/* Names of the declared feedback metrics, for the parse. */
struct metric_names {
  const char *const *v; /* borrowed */
  size_t n;
};

static void guards_defaults(struct mg_guards *g) {
  memset(g, 0, sizeof(*g));
  g->window_ms = 300000;
  g->min_requests = 100;
  g->consecutive = 1;
  g->max_error_rate = g->max_error_ratio = g->max_p95_ms =
      g->max_fallback_rate = g->max_low_confidence_rate =
          g->max_latency_ratio = g->max_cost_ratio = -1;
  g->alpha = 0.01;
  g->detect_ratio = 1.5;
}

static void parse_feedback(struct mg_guards *g, const cJSON *obj,
                           const char *path, const struct metric_names *mn,
                           struct mg_cfg_errors *e) {
  const cJSON *it;
  if (!cJSON_IsObject(obj)) {
    mg_cfg_error(e, path, "must be an object of metric names");
    return;
  }
  cJSON_ArrayForEach(it, obj) {
    char p[MG_CFG_PATH_MAX];
    size_t i;
    struct mg_fb_guard *f;
    const cJSON *v;
    mg_cfg_join(p, path, it->string);
    for (i = 0; i < mn->n; i++)
      if (strcmp(mn->v[i], it->string) == 0)
        break;
    if (i == mn->n) {
      mg_cfg_error(e, p, "no feedback metric \"%s\" is declared in "
                   "feedback.metrics", it->string);
      continue;
    }
    if (i >= MG_MAX_FEEDBACK_METRICS) {
      mg_cfg_error(e, p, "only the first %d declared feedback metrics can be "
                   "guarded", MG_MAX_FEEDBACK_METRICS);
      continue;
    }
    if (strlen(it->string) >= MG_FB_NAME_MAX) {
      mg_cfg_error(e, p, "a guarded metric's name has at most %d characters",
                   MG_FB_NAME_MAX - 1);
      continue;
    }
    if (!mg_cfg_object(it, p, fb_keys, e))
      continue;
    if (cJSON_GetArraySize(it) == 0) {
      mg_cfg_error(e, p, "give min, max, max_ratio or min_ratio");
      continue;
    }
    f = &g->fb[i];
    snprintf(g->fb_name[i], sizeof(g->fb_name[i]), "%s", it->string);
    if (!f->on) {
      f->max_ratio = f->min_ratio = -1;
      f->on = true;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(it, "min")) != NULL) {
      double x = mg_cfg_num(it, "min", p, NAN, -1e300, 1e300, e);
      if (!isnan(x)) {
        f->has_min = true;
        f->min = x;
      }
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(it, "max")) != NULL) {
      double x = mg_cfg_num(it, "max", p, NAN, -1e300, 1e300, e);
      if (!isnan(x)) {
        f->has_max = true;
        f->max = x;
      }
    }
    f->max_ratio = mg_cfg_num(it, "max_ratio", p, f->max_ratio, 1e-6, 1e6, e);
    f->min_ratio = mg_cfg_num(it, "min_ratio", p, f->min_ratio, 1e-6, 1e6, e);
    if (f->has_min && f->has_max && !(f->min < f->max)) {
      char q[MG_CFG_PATH_MAX];
      mg_cfg_join(q, p, "min");
      mg_cfg_error(e, q, "must be below max (%g), not %g", f->max, f->min);
    }
  }
}

/* Parse a guards object over g (already holding the defaults, or the
 * flag's guards for a step's own). */
static void parse_guards(struct mg_guards *g, const cJSON *obj,
                         const char *path, bool step,
                         const struct metric_names *mn,
                         struct mg_cfg_errors *e) {
  const cJSON *fb;
  if (obj == NULL ||
      !mg_cfg_object(obj, path, step ? step_guard_keys : guard_keys, e))
    return;
  if (!step)
    g->window_ms = (uint32_t)mg_cfg_int(obj, "window_ms", path, g->window_ms,
                                        100, 86400000, e);
  g->min_requests = (uint32_t)mg_cfg_int(obj, "min_requests", path,
                                         g->min_requests, 1, 100000000, e);
  g->consecutive =
      (uint32_t)mg_cfg_int(obj, "consecutive", path, g->consecutive, 1, 1000,
                           e);
  g->max_error_rate =
      mg_cfg_num(obj, "max_error_rate", path, g->max_error_rate, 0, 1, e);
  g->max_error_ratio =
      mg_cfg_num(obj, "max_error_ratio", path, g->max_error_ratio, 1, 1e6, e);
  g->max_p95_ms =
      mg_cfg_num(obj, "max_p95_ms", path, g->max_p95_ms, 1, 86400000, e);
  g->max_fallback_rate =
      mg_cfg_num(obj, "max_fallback_rate", path, g->max_fallback_rate, 0, 1, e);
  g->max_low_confidence_rate =
      mg_cfg_num(obj, "max_low_confidence_rate", path,
                 g->max_low_confidence_rate, 0, 1, e);
  g->max_latency_ratio = mg_cfg_num(obj, "max_latency_ratio", path,
                                    g->max_latency_ratio, 1e-3, 1e6, e);
  g->max_cost_ratio =
      mg_cfg_num(obj, "max_cost_ratio", path, g->max_cost_ratio, 1e-3, 1e6, e);
  g->alpha = mg_cfg_num(obj, "alpha", path, g->alpha, 1e-9, 0.5, e);
  g->detect_ratio =
      mg_cfg_num(obj, "detect_ratio", path, g->detect_ratio, 1.01, 100, e);
  fb = cJSON_GetObjectItemCaseSensitive(obj, "feedback");
  if (fb) {
    char p[MG_CFG_PATH_MAX];
    mg_cfg_join(p, path, "feedback");
    parse_feedback(g, fb, p, mn, e);
  }
}

/* A step's "inputs": the limits of what the treatment sees. */
static void parse_inputs(struct mg_ramp_step *s, const cJSON *obj,
                         const char *path, struct mg_cfg_errors *e) {
  s->max_chars = UINT64_MAX;
  s->max_tools = UINT32_MAX;
  if (obj == NULL)
    return;
  if (!mg_cfg_object(obj, path, input_keys, e))
    return;
  if (cJSON_GetArraySize(obj) == 0) {
    mg_cfg_error(e, path, "give max_chars and/or max_tools");
    return;
  }
  s->gated = true;
  if (cJSON_GetObjectItemCaseSensitive(obj, "max_chars"))
    s->max_chars = (uint64_t)mg_cfg_int(obj, "max_chars", path, 0, 0,
                                        (int64_t)1 << 50, e);
  if (cJSON_GetObjectItemCaseSensitive(obj, "max_tools"))
    s->max_tools =
        (uint32_t)mg_cfg_int(obj, "max_tools", path, 0, 0, 100000, e);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* The input.chars edges: the ramp's "cells", else the steps' limits, else
 * the defaults. */
static void parse_cells(struct mg_ramp_cfg *c, const cJSON *obj,
                        const char *path, struct mg_cfg_errors *e) {
  static const uint64_t defaults[MG_RAMP_CHARS_EDGES] = {500, 2000, 8000};
  uint64_t v[64];
  uint32_t n = 0, i;
  const cJSON *chars = obj ? cJSON_GetObjectItemCaseSensitive(obj, "chars")
                           : NULL;
  char p[MG_CFG_PATH_MAX];
  mg_cfg_join(p, path, "cells");
  if (obj && !mg_cfg_object(obj, p, cells_keys, e))
    chars = NULL;
  if (chars) {
    const cJSON *it;
    char q[MG_CFG_PATH_MAX];
    mg_cfg_join(q, p, "chars");
    if (!cJSON_IsArray(chars) || cJSON_GetArraySize(chars) < 1 ||
        cJSON_GetArraySize(chars) > MG_RAMP_CHARS_EDGES) {
      mg_cfg_error(e, q, "must be an array of 1 to %d increasing character "
                   "counts", MG_RAMP_CHARS_EDGES);
      goto fallback;
    }
    cJSON_ArrayForEach(it, chars) {
      if (!cJSON_IsNumber(it) || it->valuedouble < 0 ||
          it->valuedouble > 1e15 ||
          it->valuedouble != floor(it->valuedouble) ||
          (n > 0 && (uint64_t)it->valuedouble <= c->chars_edges[n - 1])) {
        mg_cfg_error(e, q, "must be an array of 1 to %d increasing character "
                     "counts", MG_RAMP_CHARS_EDGES);
        goto fallback;
      }
      c->chars_edges[n++] = (uint64_t)it->valuedouble;
    }
    c->nchars_edges = n;
    return;
  }
  for (i = 0; i < c->nsteps && n < 64; i++) {
    uint32_t j;
    bool seen = false;
    if (c->steps[i].max_chars == UINT64_MAX)
      continue;
    for (j = 0; j < n; j++)
      seen |= v[j] == c->steps[i].max_chars;
    if (!seen)
      v[n++] = c->steps[i].max_chars;
  }
  if (n > MG_RAMP_CHARS_EDGES) {
    mg_cfg_error(e, p, "the steps' inputs.max_chars make %u input cells: "
                 "name at most %d edges in \"cells\": {\"chars\": [...]}",
                 n + 1, MG_RAMP_CHARS_EDGES);
    goto fallback;
  }
  if (n > 0) {
    qsort(v, n, sizeof(v[0]), cmp_u64);
    memcpy(c->chars_edges, v, n * sizeof(v[0]));
    c->nchars_edges = n;
    return;
  }
fallback:
  memcpy(c->chars_edges, defaults, sizeof(defaults));
  c->nchars_edges = MG_RAMP_CHARS_EDGES;
}

static void parse_ramp(struct mg_ramp_cfg *c, const struct mg_flag *f,
                       const cJSON *obj, const cJSON *guards,
                       const char *path, const struct metric_names *mn,
                       struct mg_cfg_errors *e) {
  const cJSON *steps, *it;
  char p[MG_CFG_PATH_MAX], rp[MG_CFG_PATH_MAX], gp[MG_CFG_PATH_MAX];
  uint32_t others = 0, i, prev = 0;
  uint64_t prev_chars = 0;
  uint32_t prev_tools = 0;
  char *name;

  if (obj == NULL) {
    if (guards) {
      mg_cfg_join(p, path, "guards");
      mg_cfg_error(e, p, "guards protect a ramp: add \"ramp\" to the flag");
    }
    return;
  }
  mg_cfg_join(rp, path, "ramp");
  if (!mg_cfg_object(obj, rp, ramp_keys, e))
    return;
  c->enabled = true;
  c->control = f->off_variant;
  name = mg_cfg_str(obj, "variant", rp, NULL, true, e);
  if (name) {
    int vi = mg_flag_variant_index(f, name);
    char q[MG_CFG_PATH_MAX];
    mg_cfg_join(q, rp, "variant");
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
    mg_cfg_error(e, rp, "name the variant to ramp (\"variant\")");
  }
  c->interval_ms =
      (uint32_t)mg_cfg_int(obj, "interval_ms", rp, 10000, 10, 3600000, e);
  /* The flag's guards first: a step's own guards start from them. */
  mg_cfg_join(gp, path, "guards");
  guards_defaults(&c->guards);
  parse_guards(&c->guards, guards, gp, false, mn, e);
  /* Variants other than the control and the ramped one keep the file's
   * weights; the ramp must leave room for them. */
  for (i = 0; i < f->nvariants; i++)
    if (i != c->variant && i != c->control)
      others += f->variants[i].weight;
  steps = cJSON_GetObjectItemCaseSensitive(obj, "steps");
  mg_cfg_join(p, rp, "steps");
  if (!cJSON_IsArray(steps) || cJSON_GetArraySize(steps) == 0) {
    mg_cfg_error(e, p, "must be a non-empty array of steps");
    parse_cells(c, cJSON_GetObjectItemCaseSensitive(obj, "cells"), rp, e);
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
    const cJSON *w, *sg;
    char sp[MG_CFG_PATH_MAX], wp[MG_CFG_PATH_MAX], ip[MG_CFG_PATH_MAX];
    double bp;
    s->max_chars = UINT64_MAX;
    s->max_tools = UINT32_MAX;
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
    s->min_requests = (uint64_t)mg_cfg_int(it, "min_requests", sp, 0, 0,
                                           (int64_t)1 << 50, e);
    s->min_units = (uint64_t)mg_cfg_int(it, "min_units", sp, 0, 0,
                                        (int64_t)1 << 40, e);
    mg_cfg_join(ip, sp, "inputs");
    parse_inputs(s, cJSON_GetObjectItemCaseSensitive(it, "inputs"), ip, e);
    /* A later step never shows the treatment less than an earlier one:
     * the inputs only widen, as the weights only go up. */
    if (c->nsteps > 1 &&
        (s->max_chars < prev_chars || s->max_tools < prev_tools))
      mg_cfg_error(e, ip, "a ramp only widens its inputs: this step admits "
                   "less than the one before");
    prev_chars = s->max_chars;
    prev_tools = s->max_tools;
    sg = cJSON_GetObjectItemCaseSensitive(it, "guards");
    if (sg) {
      char q[MG_CFG_PATH_MAX];
      mg_cfg_join(q, sp, "guards");
      s->guards = malloc(sizeof(*s->guards));
      if (s->guards == NULL) {
        mg_cfg_error(e, q, "out of memory");
        continue;
      }
      *s->guards = c->guards;
      parse_guards(s->guards, sg, q, true, mn, e);
    }
  }
  parse_cells(c, cJSON_GetObjectItemCaseSensitive(obj, "cells"), rp, e);
}

void mg_ramps_parse_metrics(struct mg_ramps *out, const cJSON *section,
                            const struct mg_flags *flags,
                            const char *const *metrics, size_t nmetrics,
                            struct mg_cfg_errors *e) {
  struct metric_names mn;
  size_t i;
  mn.v = metrics;
  mn.n = metrics ? nmetrics : 0;
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
               cJSON_GetObjectItemCaseSensitive(fj, "guards"), path, &mn, e);
  }
}

void mg_ramps_parse(struct mg_ramps *out, const cJSON *section,
                    const struct mg_flags *flags, struct mg_cfg_errors *e) {
  mg_ramps_parse_metrics(out, section, flags, NULL, 0, e);
}

void mg_ramps_free(struct mg_ramps *r) {
  size_t i;
  uint32_t j;
  for (i = 0; i < r->n; i++) {
    for (j = 0; j < r->v[i].nsteps; j++)
      free(r->v[i].steps[j].guards);
    free(r->v[i].steps);
  }
  free(r->v);
  memset(r, 0, sizeof(*r));
}

/* ---- cells and input gates ------------------------------------------------------ */

/* The smallest input of each tools cell: 0, 1-2, 3+ (the report's). */
static const uint32_t tools_lo[3] = {0, 1, 3};

void mg_ramp_cells(const struct mg_ramp_cfg *c, const struct mg_input *in,
                   uint8_t *chars_cell, uint8_t *tools_cell) {
  uint32_t i = 0;
  if (!c->enabled || c->nchars_edges == 0) {
    *chars_cell = *tools_cell = MG_CELL_NONE;
    return;
  }
  while (i < c->nchars_edges && in->chars > c->chars_edges[i])
    i++;
  *chars_cell = (uint8_t)(MG_CELL_CHARS0 + i);
  *tools_cell = (uint8_t)(MG_CELL_TOOLS0 + (in->tools == 0   ? 0
                                            : in->tools <= 2 ? 1
                                                             : 2));
}

const char *mg_ramp_cell_name(const struct mg_ramp_cfg *c, unsigned cell,
                              char *buf, size_t n) {
  static const char *const tools[3] = {"tools 0", "tools 1-2", "tools 3+"};
  unsigned i;
  buf[0] = '\0';
  if (cell == MG_CELL_ALL) {
    snprintf(buf, n, "all");
  } else if (cell >= MG_CELL_TOOLS0 && cell < MG_CELLS) {
    snprintf(buf, n, "%s", tools[cell - MG_CELL_TOOLS0]);
  } else if (cell >= MG_CELL_CHARS0 && cell <= MG_CELL_CHARS0 + c->nchars_edges &&
             c->nchars_edges > 0) {
    i = cell - MG_CELL_CHARS0;
    if (i == 0)
      snprintf(buf, n, "chars <= %llu", (unsigned long long)c->chars_edges[0]);
    else if (i == c->nchars_edges)
      snprintf(buf, n, "chars > %llu",
               (unsigned long long)c->chars_edges[i - 1]);
    else
      snprintf(buf, n, "chars %llu-%llu",
               (unsigned long long)c->chars_edges[i - 1] + 1,
               (unsigned long long)c->chars_edges[i]);
  }
  return buf;
}

static const struct mg_ramp_step *step_of(const struct mg_ramp_cfg *c,
                                          const struct mg_ramp_state *st) {
  if (c->nsteps == 0)
    return NULL;
  return &c->steps[st->step < c->nsteps ? st->step : c->nsteps - 1];
}

void mg_ramp_gate(const struct mg_ramp_cfg *c, const struct mg_ramp_state *st,
                  struct mg_ramp_gate *out) {
  const struct mg_ramp_step *s = step_of(c, st);
  out->on = false;
  out->max_chars = UINT64_MAX;
  out->max_tools = UINT32_MAX;
  if (!c->enabled || s == NULL || !s->gated ||
      st->status == MG_RAMP_ROLLED_BACK)
    return;
  out->on = true;
  out->max_chars = s->max_chars;
  out->max_tools = s->max_tools;
}

bool mg_ramp_admits(const struct mg_ramp_cfg *c,
                    const struct mg_ramp_state *st, const struct mg_input *in) {
  struct mg_ramp_gate g;
  mg_ramp_gate(c, st, &g);
  return !g.on || (in->chars <= g.max_chars && in->tools <= g.max_tools);
}

const struct mg_guards *mg_ramp_guards(const struct mg_ramp_cfg *c,
                                       const struct mg_ramp_state *st) {
  const struct mg_ramp_step *s = step_of(c, st);
  return s && s->guards ? s->guards : &c->guards;
}

/* The cells a step's guards judge: "all", and each axis's cells when the
 * step admits at least two of them (one admitted cell holds the same
 * requests as "all"). Returns how many, written to out. */
static unsigned judged_cells(const struct mg_ramp_cfg *c,
                             const struct mg_ramp_step *s,
                             uint8_t out[MG_CELLS]) {
  unsigned n = 0, i, k;
  uint8_t axis[4];
  out[n++] = MG_CELL_ALL;
  for (k = 0, i = 0; c->nchars_edges > 0 && i <= c->nchars_edges; i++) {
    uint64_t lo = i == 0 ? 0 : c->chars_edges[i - 1] + 1;
    if (s == NULL || !s->gated || lo <= s->max_chars)
      axis[k++] = (uint8_t)(MG_CELL_CHARS0 + i);
  }
  if (k >= 2)
    for (i = 0; i < k; i++)
      out[n++] = axis[i];
  for (k = 0, i = 0; c->nchars_edges > 0 && i < 3; i++)
    if (s == NULL || !s->gated || tools_lo[i] <= s->max_tools)
      axis[k++] = (uint8_t)(MG_CELL_TOOLS0 + i);
  if (k >= 2)
    for (i = 0; i < k; i++)
      out[n++] = axis[i];
  return n;
}

/* How many sequential tests a guards object runs per cell. */
static unsigned sequential_count(const struct mg_guards *g) {
  unsigned n = 0, i;
  n += g->max_error_ratio >= 0;
  n += g->max_latency_ratio >= 0;
  n += g->max_cost_ratio >= 0;
  for (i = 0; i < MG_MAX_FEEDBACK_METRICS; i++)
    if (g->fb[i].on)
      n += g->fb[i].has_min + g->fb[i].has_max +
           (g->fb[i].max_ratio > 0) + (g->fb[i].min_ratio > 0);
  return n;
}

/* ---- judging ---------------------------------------------------------------------- */

/* One guard on one cell, judged. */
struct probe {
  char guard[MG_RAMP_GUARD_MAX];
  unsigned cell;
  bool sequential;
  bool breach;
  double observed, threshold;
  struct mg_seq_result r;  /* sequential only */
  double alpha;            /* sequential only: this test's share */
  uint64_t n_t, n_c;
};

/* Called for every probe with enough data; returns true to stop. */
typedef bool (*probe_fn)(void *ctx, const struct probe *p);

struct walk {
  const struct mg_ramp_cfg *c;
  const struct mg_ramp_state *st;
  const struct mg_guards *g;
  const struct mg_window_view *t, *ctl;
  double alpha;            /* per sequential test */
  probe_fn fn;
  void *ctx;
};

static bool absolute(struct walk *w, unsigned cell, const char *guard,
                     double value, double max, uint64_t n) {
  struct probe p;
  if (max < 0)
    return false;
  memset(&p, 0, sizeof(p));
  snprintf(p.guard, sizeof(p.guard), "%s", guard);
  p.cell = cell;
  p.observed = value;
  p.threshold = max;
  p.breach = value > max;
  p.n_t = n;
  return w->fn(w->ctx, &p);
}

enum seq_kind { SEQ_RATIO, SEQ_SHIFT, SEQ_LEVEL };

static bool sequential(struct walk *w, unsigned cell, const char *guard,
                       enum seq_kind kind, const struct mg_seq_arm *t,
                       const struct mg_seq_arm *c, double thr, int dir) {
  struct probe p;
  memset(&p, 0, sizeof(p));
  snprintf(p.guard, sizeof(p.guard), "%s", guard);
  p.cell = cell;
  p.sequential = true;
  p.alpha = w->alpha;
  p.threshold = thr;
  p.n_t = (uint64_t)t->n;
  p.n_c = c ? (uint64_t)c->n : 0;
  if (kind == SEQ_RATIO)
    mg_seq_ratio(t, c, thr, dir, w->g->detect_ratio, w->alpha, &p.r);
  else if (kind == SEQ_SHIFT)
    mg_seq_shift(t, c, thr, w->g->detect_ratio, w->alpha, &p.r);
  else
    mg_seq_level(t, thr, dir, w->g->detect_ratio, w->alpha, &p.r);
  p.observed = p.r.observed;
  p.breach = p.r.reject;
  return w->fn(w->ctx, &p);
}

/* What a design effect is computed for. */
enum measure { M_ERRORS, M_LATENCY, M_COST, M_FEEDBACK };

/* Set an arm's design effect from the view's unit buckets of a cell. */
static void set_design(struct mg_seq_arm *a, const struct mg_window_view *v,
                       unsigned cell, enum measure m, unsigned metric) {
  double y[MG_UNIT_BUCKETS], s[MG_UNIT_BUCKETS];
  unsigned b;
  for (b = 0; b < MG_UNIT_BUCKETS; b++) {
    const struct mg_unit_bucket *u = &v->buckets[cell][b];
    switch (m) {
    case M_ERRORS:
      y[b] = u->errors;
      s[b] = u->requests;
      break;
    case M_LATENCY:
      y[b] = u->ln_ms;
      s[b] = u->requests;
      break;
    case M_COST:
      y[b] = u->cost;
      s[b] = u->cost_ok;
      break;
    default:
      y[b] = u->fb_sum[metric];
      s[b] = u->fb_n[metric];
      break;
    }
  }
  a->design = mg_seq_design_effect(a, y, s, MG_UNIT_BUCKETS);
}

static struct mg_seq_arm cost_arm(const struct mg_window_sum *s) {
  struct mg_seq_arm a;
  a.n = (double)s->cost_n;
  a.sum = s->cost;
  a.sq = s->cost_sq;
  a.den = (double)s->cost_ok;
  a.den_sq = (double)s->cost_ok;
  a.cross = s->cost_of_ok;
  a.design = 1;
  return a;
}

/* Every guard on every judged cell, in a fixed order: per cell ("all"
 * first) the absolute guards, then the sequential ones. Stops when fn
 * says so; returns whether it did. */
static bool walk_guards(struct walk *w) {
  const struct mg_guards *g = w->g;
  const struct mg_window_view *t = w->t, *ctl = w->ctl;
  uint8_t cells[MG_CELLS];
  unsigned ncells = judged_cells(w->c, step_of(w->c, w->st), cells), k, m;
  bool tev = t->epoch == w->st->epoch, cev = ctl->epoch == w->st->epoch;
  uint64_t min = g->min_requests;

  m = sequential_count(g) * ncells;
  /* Bonferroni: alpha over the steps, a step's share over its tests. */
  w->alpha = g->alpha / (w->c->nsteps ? w->c->nsteps : 1) / (m ? m : 1);
  for (k = 0; k < ncells; k++) {
    unsigned cell = cells[k], i;
    const struct mg_window_sum *tw = &t->win[cell];
    const struct mg_window_sum *tt = &t->total[cell], *ct = &ctl->total[cell];
    char name[MG_RAMP_GUARD_MAX];
    if (tw->requests >= min) {
      double n = (double)tw->requests;
      if (absolute(w, cell, "max_error_rate", tw->errors / n,
                   g->max_error_rate, tw->requests) ||
          absolute(w, cell, "max_p95_ms", mg_window_quantile(tw, 0.95),
                   g->max_p95_ms, tw->requests) ||
          absolute(w, cell, "max_fallback_rate", tw->fallbacks / n,
                   g->max_fallback_rate, tw->requests) ||
          absolute(w, cell, "max_low_confidence_rate", tw->low_conf / n,
                   g->max_low_confidence_rate, tw->requests))
        return true;
    }
    if (!tev)
      continue;
    if (cev && tt->requests >= min && ct->requests >= min) {
      struct mg_seq_arm a = mg_seq_arm_mean((double)tt->requests,
                                            (double)tt->errors,
                                            (double)tt->errors);
      struct mg_seq_arm b = mg_seq_arm_mean((double)ct->requests,
                                            (double)ct->errors,
                                            (double)ct->errors);
      set_design(&a, t, cell, M_ERRORS, 0);
      set_design(&b, ctl, cell, M_ERRORS, 0);
      if (g->max_error_ratio >= 0 &&
          sequential(w, cell, "max_error_ratio", SEQ_RATIO, &a, &b,
                     g->max_error_ratio, +1))
        return true;
      a = mg_seq_arm_mean((double)tt->requests, tt->ln_ms, tt->ln_ms_sq);
      b = mg_seq_arm_mean((double)ct->requests, ct->ln_ms, ct->ln_ms_sq);
      set_design(&a, t, cell, M_LATENCY, 0);
      set_design(&b, ctl, cell, M_LATENCY, 0);
      if (g->max_latency_ratio >= 0 &&
          sequential(w, cell, "max_latency_ratio", SEQ_SHIFT, &a, &b,
                     g->max_latency_ratio, +1))
        return true;
    }
    if (g->max_cost_ratio >= 0 && cev && tt->cost_n >= min &&
        ct->cost_n >= min) {
      struct mg_seq_arm a = cost_arm(tt), b = cost_arm(ct);
      set_design(&a, t, cell, M_COST, 0);
      set_design(&b, ctl, cell, M_COST, 0);
      if (sequential(w, cell, "max_cost_ratio", SEQ_RATIO, &a, &b,
                     g->max_cost_ratio, +1))
        return true;
    }
    for (i = 0; i < MG_MAX_FEEDBACK_METRICS; i++) {
      const struct mg_fb_guard *f = &g->fb[i];
      const struct mg_fb_sum *tf = &tt->fb[i], *cf = &ct->fb[i];
      struct mg_seq_arm a = mg_seq_arm_mean((double)tf->n, tf->sum, tf->sq);
      struct mg_seq_arm b = mg_seq_arm_mean((double)cf->n, cf->sum, cf->sq);
      bool both = cev && tf->n >= min && cf->n >= min;
      if (!f->on)
        continue;
      set_design(&a, t, cell, M_FEEDBACK, i);
      set_design(&b, ctl, cell, M_FEEDBACK, i);
#define FB(part, cond, kind, ctlarm, thr, dir)                                \
  do {                                                                        \
    if (cond) {                                                               \
      snprintf(name, sizeof(name), "feedback.%s." part, g->fb_name[i]);       \
      if (sequential(w, cell, name, kind, &a, ctlarm, thr, dir))              \
        return true;                                                          \
    }                                                                         \
  } while (0)
      FB("min", f->has_min && tf->n >= min, SEQ_LEVEL, NULL, f->min, -1);
      FB("max", f->has_max && tf->n >= min, SEQ_LEVEL, NULL, f->max, +1);
      FB("max_ratio", f->max_ratio > 0 && both, SEQ_RATIO, &b, f->max_ratio,
         +1);
      FB("min_ratio", f->min_ratio > 0 && both, SEQ_RATIO, &b, f->min_ratio,
         -1);
#undef FB
    }
  }
  return false;
}

static bool first_breach(void *ctx, const struct probe *p) {
  struct probe *out = ctx;
  if (!p->breach)
    return false;
  *out = *p;
  return true;
}

static void evidence_of(const struct mg_ramp_cfg *c,
                        const struct mg_ramp_state *st,
                        const struct mg_guards *g, const struct probe *p,
                        struct mg_ramp_evidence *ev) {
  memset(ev, 0, sizeof(*ev));
  snprintf(ev->guard, sizeof(ev->guard), "%s", p->guard);
  mg_ramp_cell_name(c, p->cell, ev->cell, sizeof(ev->cell));
  ev->observed = p->observed;
  ev->threshold = p->threshold;
  ev->sequential = p->sequential;
  ev->alpha_family = g->alpha;
  ev->n_treatment = p->n_t;
  ev->n_control = p->n_c;
  ev->step = st->step;
  if (p->sequential) {
    ev->statistic = p->r.log_lr;
    ev->boundary = p->r.boundary;
    ev->alpha = p->alpha;
    ev->since = st->step_started;
  } else {
    ev->window_ms = g->window_ms;
  }
}

static void begin_step(struct mg_ramp_state *st, int64_t now) {
  st->step_started = now;
  st->epoch++;
}

enum mg_ramp_event mg_ramp_judge(const struct mg_ramp_cfg *c,
                                 struct mg_ramp_state *st, int64_t now,
                                 const struct mg_window_view *t,
                                 const struct mg_window_view *ctl,
                                 struct mg_ramp_evidence *why) {
  const struct mg_guards *g;
  const struct mg_ramp_step *s;
  struct walk w;
  struct probe hit;

  if (!c->enabled || c->nsteps == 0 || st->status == MG_RAMP_ROLLED_BACK)
    return MG_RAMP_NOTHING;
  if (now - st->last_check < (int64_t)c->interval_ms)
    return MG_RAMP_NOTHING;
  st->last_check = now;
  g = mg_ramp_guards(c, st);
  s = step_of(c, st);
  /* Too little traffic: no conclusion either way. */
  if (t->win[MG_CELL_ALL].requests < g->min_requests)
    return MG_RAMP_NOTHING;
  memset(&w, 0, sizeof(w));
  w.c = c;
  w.st = st;
  w.g = g;
  w.t = t;
  w.ctl = ctl;
  w.fn = first_breach;
  w.ctx = &hit;
  if (walk_guards(&w)) {
    if (++st->failures < g->consecutive)
      return MG_RAMP_NOTHING;
    st->status = MG_RAMP_ROLLED_BACK;
    st->rolled_back_at = now;
    evidence_of(c, st, g, &hit, &st->why);
    snprintf(st->guard, sizeof(st->guard), "%s", st->why.guard);
    st->observed = st->why.observed;
    st->threshold = st->why.threshold;
    if (why)
      *why = st->why;
    return MG_RAMP_ROLLBACK;
  }
  st->failures = 0;
  if (st->status != MG_RAMP_RUNNING || st->step + 1 >= c->nsteps)
    return MG_RAMP_NOTHING;
  if (now - st->step_started < (int64_t)s->hold_ms)
    return MG_RAMP_NOTHING;
  /* Exit criteria: enough of the treatment's traffic since the step
   * began (evidence of another epoch is not this step's). */
  if (s->min_requests &&
      (t->epoch != st->epoch ||
       t->total[MG_CELL_ALL].requests < s->min_requests))
    return MG_RAMP_NOTHING;
  if (s->min_units && (t->epoch != st->epoch ||
                       mg_hll_estimate(&t->units) < (double)s->min_units))
    return MG_RAMP_NOTHING;
  if (s->manual) {
    st->status = MG_RAMP_WAITING;
    return MG_RAMP_WAIT;
  }
  st->step++;
  begin_step(st, now);
  if (st->step + 1 >= c->nsteps)
    st->status = MG_RAMP_DONE;
  return MG_RAMP_ADVANCED;
}

enum mg_ramp_event mg_ramp_check(const struct mg_ramp_cfg *c,
                                 struct mg_ramp_state *st, int64_t now,
                                 const struct mg_window_sum *t,
                                 const struct mg_window_sum *ctl) {
  struct mg_window_view *v = malloc(2 * sizeof(*v));
  enum mg_ramp_event ev;
  int k;
  if (v == NULL)
    return MG_RAMP_NOTHING;
  for (k = 0; k < 2; k++) {
    mg_window_view_init(&v[k]);
    v[k].epoch = st->epoch;
    v[k].win[MG_CELL_ALL] = k == 0 ? *t : *ctl;
    v[k].total[MG_CELL_ALL] = v[k].win[MG_CELL_ALL];
  }
  ev = mg_ramp_judge(c, st, now, &v[0], &v[1], NULL);
  free(v);
  return ev;
}

struct json_ctx {
  const struct mg_ramp_cfg *c;
  cJSON *arr;
};

static bool probe_json(void *ctx, const struct probe *p) {
  struct json_ctx *j = ctx;
  cJSON *o = cJSON_CreateObject();
  char cell[MG_RAMP_CELL_NAME_MAX];
  if (o == NULL)
    return false;
  cJSON_AddStringToObject(o, "guard", p->guard);
  cJSON_AddStringToObject(o, "cell",
                          mg_ramp_cell_name(j->c, p->cell, cell, sizeof(cell)));
  cJSON_AddNumberToObject(o, "observed",
                          isfinite(p->observed) ? p->observed : 0);
  cJSON_AddNumberToObject(o, "threshold", p->threshold);
  cJSON_AddBoolToObject(o, "breached", p->breach);
  cJSON_AddNumberToObject(o, "n_treatment", (double)p->n_t);
  if (p->sequential) {
    cJSON_AddNumberToObject(o, "n_control", (double)p->n_c);
    cJSON_AddBoolToObject(o, "defined", p->r.defined);
    cJSON_AddNumberToObject(o, "statistic", p->r.log_lr);
    cJSON_AddNumberToObject(o, "boundary", p->r.boundary);
    cJSON_AddNumberToObject(o, "alpha", p->alpha);
  }
  cJSON_AddItemToArray(j->arr, o);
  return false;
}

cJSON *mg_ramp_guards_json(const struct mg_ramp_cfg *c,
                           const struct mg_ramp_state *st,
                           const struct mg_window_view *t,
                           const struct mg_window_view *ctl) {
  struct walk w;
  struct json_ctx j;
  j.c = c;
  j.arr = cJSON_CreateArray();
  if (j.arr == NULL || !c->enabled || c->nsteps == 0)
    return j.arr;
  memset(&w, 0, sizeof(w));
  w.c = c;
  w.st = st;
  w.g = mg_ramp_guards(c, st);
  w.t = t;
  w.ctl = ctl;
  w.fn = probe_json;
  w.ctx = &j;
  walk_guards(&w);
  return j.arr;
}

/* ---- state -------------------------------------------------------------------- */

void mg_ramp_start(struct mg_ramp_state *st, int64_t now) {
  memset(st, 0, sizeof(*st));
  st->status = MG_RAMP_RUNNING;
  st->step_started = now;
  st->last_check = now;
  st->epoch = 1;
}

uint32_t mg_ramp_weight(const struct mg_ramp_cfg *c,
                        const struct mg_ramp_state *st) {
  if (st->status == MG_RAMP_ROLLED_BACK || c->nsteps == 0)
    return 0;
  return step_of(c, st)->weight;
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
  begin_step(st, now);
  st->failures = 0;
  st->paused_at = 0;
  st->status = st->step + 1 >= c->nsteps ? MG_RAMP_DONE : MG_RAMP_RUNNING;
  return 0;
}

int mg_ramp_rollback(struct mg_ramp_state *st, int64_t now) {
  if (st->status == MG_RAMP_ROLLED_BACK)
    return -EINVAL;
  st->status = MG_RAMP_ROLLED_BACK;
  memset(&st->why, 0, sizeof(st->why));
  snprintf(st->why.guard, sizeof(st->why.guard), "manual");
  st->why.step = st->step;
  snprintf(st->guard, sizeof(st->guard), "manual");
  st->observed = st->threshold = 0;
  st->rolled_back_at = now;
  return 0;
}

void mg_ramp_restart(struct mg_ramp_state *st, int64_t now) {
  uint64_t epoch = st->epoch;
  mg_ramp_start(st, now);
  /* A new epoch: the evidence against the rolled-back run is not this
   * run's. */
  st->epoch = epoch + 1;
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
  cJSON_AddNumberToObject(o, "epoch", (double)st->epoch);
  if (st->status == MG_RAMP_ROLLED_BACK) {
    const struct mg_ramp_evidence *w = &st->why;
    cJSON *rb = cJSON_AddObjectToObject(o, "rollback");
    cJSON_AddStringToObject(rb, "guard", st->guard);
    cJSON_AddNumberToObject(rb, "observed", st->observed);
    cJSON_AddNumberToObject(rb, "threshold", st->threshold);
    mg_rfc3339_format(st->rolled_back_at, ts);
    cJSON_AddStringToObject(rb, "at", ts);
    if (w->cell[0])
      cJSON_AddStringToObject(rb, "cell", w->cell);
    cJSON_AddNumberToObject(rb, "step", w->step);
    if (w->window_ms)
      cJSON_AddNumberToObject(rb, "window_ms", w->window_ms);
    if (w->sequential) {
      cJSON *sq = cJSON_AddObjectToObject(rb, "sequential");
      cJSON_AddNumberToObject(sq, "statistic", w->statistic);
      cJSON_AddNumberToObject(sq, "boundary", w->boundary);
      cJSON_AddNumberToObject(sq, "alpha", w->alpha);
      cJSON_AddNumberToObject(sq, "alpha_family", w->alpha_family);
      cJSON_AddNumberToObject(sq, "n_treatment", (double)w->n_treatment);
      cJSON_AddNumberToObject(sq, "n_control", (double)w->n_control);
      mg_rfc3339_format(w->since, ts);
      cJSON_AddStringToObject(sq, "since", ts);
    } else if (w->n_treatment) {
      cJSON_AddNumberToObject(rb, "n_treatment", (double)w->n_treatment);
    }
  }
  return o;
}

static double num_or(const cJSON *o, const char *key, double def) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsNumber(v) && isfinite(v->valuedouble) ? v->valuedouble : def;
}

/* A count from a file that may be corrupt: clamped into [0, max] before
 * the conversion (an out-of-range double to integer is undefined). */
static uint64_t count_or(const cJSON *o, const char *key, uint64_t def,
                         uint64_t max) {
  double v = num_or(o, key, (double)def);
  if (!(v > 0))
    return 0;
  return v >= (double)max ? max : (uint64_t)v;
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
  x.step = (uint32_t)count_or(j, "step", 0, UINT32_MAX);
  /* A config with fewer steps than before: stay at its last one. */
  if (nsteps && x.step >= nsteps)
    x.step = nsteps - 1;
  if (mg_rfc3339_parse(started->valuestring, &x.step_started) != 0)
    return -EINVAL;
  if (cJSON_IsString(paused))
    mg_rfc3339_parse(paused->valuestring, &x.paused_at);
  x.last_check = x.step_started;
  x.failures = (uint32_t)count_or(j, "failures", 0, UINT32_MAX);
  /* Files from before epochs have none: any epoch of at least 1 will do,
   * the windows of a fresh process start at 0. */
  x.epoch = count_or(j, "epoch", 1, (uint64_t)1 << 52);
  if (x.epoch == 0)
    x.epoch = 1;
  if (cJSON_IsObject(rb)) {
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(rb, "guard");
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(rb, "at");
    const cJSON *cell = cJSON_GetObjectItemCaseSensitive(rb, "cell");
    const cJSON *sq = cJSON_GetObjectItemCaseSensitive(rb, "sequential");
    struct mg_ramp_evidence *w = &x.why;
    if (cJSON_IsString(g))
      snprintf(w->guard, sizeof(w->guard), "%s", g->valuestring);
    w->observed = num_or(rb, "observed", 0);
    w->threshold = num_or(rb, "threshold", 0);
    if (cJSON_IsString(at))
      mg_rfc3339_parse(at->valuestring, &x.rolled_back_at);
    if (cJSON_IsString(cell))
      snprintf(w->cell, sizeof(w->cell), "%s", cell->valuestring);
    w->step = (uint32_t)count_or(rb, "step", x.step, UINT32_MAX);
    w->window_ms = (uint32_t)count_or(rb, "window_ms", 0, UINT32_MAX);
    w->n_treatment = count_or(rb, "n_treatment", 0, (uint64_t)1 << 62);
    if (cJSON_IsObject(sq)) {
      const cJSON *since = cJSON_GetObjectItemCaseSensitive(sq, "since");
      w->sequential = true;
      w->statistic = num_or(sq, "statistic", 0);
      w->boundary = num_or(sq, "boundary", 0);
      w->alpha = num_or(sq, "alpha", 0);
      w->alpha_family = num_or(sq, "alpha_family", 0);
      w->n_treatment = count_or(sq, "n_treatment", 0, (uint64_t)1 << 62);
      w->n_control = count_or(sq, "n_control", 0, (uint64_t)1 << 62);
      if (cJSON_IsString(since))
        mg_rfc3339_parse(since->valuestring, &w->since);
    }
    snprintf(x.guard, sizeof(x.guard), "%s", w->guard);
    x.observed = w->observed;
    x.threshold = w->threshold;
  }
  *st = x;
  return 0;
}
