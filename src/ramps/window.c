/* window.c - sliding windows of request outcomes, with the sequential
 * evidence beside them (window.h). */
#include "ramps/window.h"

#include <math.h>
#include <string.h>

/* Bucket i holds latencies up to 1 ms * 1.12^i. Computed when read, not
 * cached in a static: workers on several threads share this code. */
static double bound(int i) { return pow(1.12, i); }

static int lat_bucket(double ms) {
  int i;
  if (!(ms > 1))
    return 0;
  i = (int)ceil(log(ms) / log(1.12));
  return i >= MG_WINDOW_LAT_BUCKETS ? MG_WINDOW_LAT_BUCKETS - 1 : i;
}

static void set_geometry(struct mg_window *w, uint32_t window_ms) {
  w->window_ms = window_ms ? window_ms : 1;
  w->slot_ms = w->window_ms / MG_WINDOW_SLOTS;
  if (w->slot_ms == 0)
    w->slot_ms = 1;
}

/* A slot that never held anything. */
#define NO_START INT64_MIN

static void clear_slots(struct mg_window *w) {
  int i;
  memset(w->slots, 0, sizeof(w->slots));
  memset(w->stored, 0, sizeof(w->stored));
  for (i = 0; i < MG_WINDOW_SLOTS; i++)
    w->slots[i].start = NO_START;
}

void mg_window_init(struct mg_window *w, uint32_t window_ms) {
  memset(w, 0, sizeof(*w));
  clear_slots(w);
  set_geometry(w, window_ms);
}

void mg_window_resize(struct mg_window *w, uint32_t window_ms) {
  clear_slots(w);
  set_geometry(w, window_ms);
}

static void sum_sub(struct mg_window_sum *acc, const struct mg_window_sum *x);

/* The slot of now, started afresh when it holds an earlier lap: its sums
 * leave `stored`. Once a lap (slot 0), `stored` is summed again from the
 * slots, so that rounding in its floating-point sums cannot build up. */
static struct mg_window_sum *slot_at(struct mg_window *w, int64_t now) {
  int64_t start = now - (now % w->slot_ms);
  int i = (int)((now / w->slot_ms) % MG_WINDOW_SLOTS), c, j;
  if (w->slots[i].start != start) {
    for (c = 0; c < MG_CELLS; c++)
      sum_sub(&w->stored[c], &w->slots[i].cell[c]);
    memset(w->slots[i].cell, 0, sizeof(w->slots[i].cell));
    w->slots[i].start = start;
    if (i == 0) {
      memset(w->stored, 0, sizeof(w->stored));
      for (j = 0; j < MG_WINDOW_SLOTS; j++)
        for (c = 0; c < MG_CELLS; c++)
          mg_window_sum_add(&w->stored[c], &w->slots[j].cell[c]);
    }
  }
  return w->slots[i].cell;
}

/* Whether an outcome under epoch joins the totals; a newer epoch (a step
 * began) restarts them. */
static bool epoch_take(struct mg_window *w, uint64_t epoch) {
  if (epoch > w->epoch) {
    memset(w->total, 0, sizeof(w->total));
    memset(w->buckets, 0, sizeof(w->buckets));
    mg_hll_init(&w->units);
    w->epoch = epoch;
  }
  return epoch == w->epoch;
}

static bool cell_ok(uint8_t c) { return c > 0 && c < MG_CELLS; }

/* The cells an observation goes to: "all", then its chars and tools
 * cells when known. Returns how many. */
static int cells_of(uint8_t chars_cell, uint8_t tools_cell, uint8_t out[3]) {
  int n = 0;
  out[n++] = MG_CELL_ALL;
  if (cell_ok(chars_cell))
    out[n++] = chars_cell;
  if (cell_ok(tools_cell) && tools_cell != chars_cell)
    out[n++] = tools_cell;
  return n;
}

/* The bucket of a unit; an observation without one is a unit of its own,
 * spread round-robin. */
static unsigned bucket_of(struct mg_window *w, bool has_unit,
                          uint64_t unit_hash) {
  uint64_t h = has_unit ? unit_hash : w->anonymous++;
  return (unsigned)(mg_hll_mix(h) % MG_UNIT_BUCKETS);
}

static void add_outcome(struct mg_window_sum *s, const struct mg_window_outcome *o,
                        double ln_ms, bool hist) {
  s->requests++;
  s->errors += o->error;
  s->fallbacks += o->fallback;
  s->low_conf += o->low_conf;
  s->ok += o->ok;
  s->ln_ms += ln_ms;
  s->ln_ms_sq += ln_ms * ln_ms;
  if (isfinite(o->cost) && o->cost >= 0) {
    s->cost_n++;
    s->cost += o->cost;
    s->cost_sq += o->cost * o->cost;
    if (o->ok) {
      s->cost_ok++;
      s->cost_of_ok += o->cost;
    }
  }
  if (hist)
    s->lat[lat_bucket(o->latency_ms)]++;
}

void mg_window_record(struct mg_window *w, int64_t now, uint64_t epoch,
                      const struct mg_window_outcome *o) {
  struct mg_window_sum *slot = slot_at(w, now);
  bool tot = epoch_take(w, epoch);
  /* Latencies under 1 us are clamped: the log needs a positive number. */
  double ln_ms = log(o->latency_ms > 1e-3 ? o->latency_ms : 1e-3);
  bool cost = isfinite(o->cost) && o->cost >= 0;
  unsigned b = tot ? bucket_of(w, o->has_unit, o->unit_hash) : 0;
  uint8_t cells[3];
  int n = cells_of(o->chars_cell, o->tools_cell, cells), i;
  for (i = 0; i < n; i++) {
    add_outcome(&slot[cells[i]], o, ln_ms, true);
    add_outcome(&w->stored[cells[i]], o, ln_ms, true);
    if (tot) {
      struct mg_unit_bucket *u = &w->buckets[cells[i]][b];
      add_outcome(&w->total[cells[i]], o, ln_ms, false);
      u->requests++;
      u->errors += o->error;
      u->ln_ms += ln_ms;
      if (cost) {
        u->cost += o->cost;
        u->cost_ok += o->ok;
      }
    }
  }
  if (tot && o->has_unit)
    mg_hll_add(&w->units, o->unit_hash);
}

static void add_fb(struct mg_fb_sum *f, double value) {
  f->n++;
  f->sum += value;
  f->sq += value * value;
}

void mg_window_feedback(struct mg_window *w, int64_t now, uint64_t epoch,
                        const struct mg_window_fb *f) {
  struct mg_window_sum *slot;
  bool tot;
  unsigned b;
  uint8_t cells[3];
  int n, i;
  if (f->metric >= MG_MAX_FEEDBACK_METRICS || !isfinite(f->value))
    return;
  slot = slot_at(w, now);
  tot = epoch_take(w, epoch);
  b = tot ? bucket_of(w, f->has_unit, f->unit_hash) : 0;
  n = cells_of(f->chars_cell, f->tools_cell, cells);
  for (i = 0; i < n; i++) {
    add_fb(&slot[cells[i]].fb[f->metric], f->value);
    add_fb(&w->stored[cells[i]].fb[f->metric], f->value);
    if (tot) {
      add_fb(&w->total[cells[i]].fb[f->metric], f->value);
      w->buckets[cells[i]][b].fb_n[f->metric]++;
      w->buckets[cells[i]][b].fb_sum[f->metric] += f->value;
    }
  }
}

void mg_window_add(struct mg_window *w, int64_t now, bool error,
                   bool fallback, bool low_conf, double latency_ms) {
  struct mg_window_outcome o;
  memset(&o, 0, sizeof(o));
  o.error = error;
  o.fallback = fallback;
  o.low_conf = low_conf;
  o.ok = !error;
  o.latency_ms = latency_ms;
  o.cost = NAN;
  o.chars_cell = o.tools_cell = MG_CELL_NONE;
  mg_window_record(w, now, w->epoch, &o);
}

void mg_window_sum_add(struct mg_window_sum *acc,
                       const struct mg_window_sum *x) {
  int j;
  acc->requests += x->requests;
  acc->errors += x->errors;
  acc->fallbacks += x->fallbacks;
  acc->low_conf += x->low_conf;
  acc->ok += x->ok;
  acc->ln_ms += x->ln_ms;
  acc->ln_ms_sq += x->ln_ms_sq;
  acc->cost_n += x->cost_n;
  acc->cost_ok += x->cost_ok;
  acc->cost += x->cost;
  acc->cost_sq += x->cost_sq;
  acc->cost_of_ok += x->cost_of_ok;
  for (j = 0; j < MG_MAX_FEEDBACK_METRICS; j++) {
    acc->fb[j].n += x->fb[j].n;
    acc->fb[j].sum += x->fb[j].sum;
    acc->fb[j].sq += x->fb[j].sq;
  }
  for (j = 0; j < MG_WINDOW_LAT_BUCKETS; j++)
    acc->lat[j] += x->lat[j];
}

static void sum_sub(struct mg_window_sum *acc, const struct mg_window_sum *x) {
  int j;
  acc->requests -= x->requests;
  acc->errors -= x->errors;
  acc->fallbacks -= x->fallbacks;
  acc->low_conf -= x->low_conf;
  acc->ok -= x->ok;
  acc->ln_ms -= x->ln_ms;
  acc->ln_ms_sq -= x->ln_ms_sq;
  acc->cost_n -= x->cost_n;
  acc->cost_ok -= x->cost_ok;
  acc->cost -= x->cost;
  acc->cost_sq -= x->cost_sq;
  acc->cost_of_ok -= x->cost_of_ok;
  for (j = 0; j < MG_MAX_FEEDBACK_METRICS; j++) {
    acc->fb[j].n -= x->fb[j].n;
    acc->fb[j].sum -= x->fb[j].sum;
    acc->fb[j].sq -= x->fb[j].sq;
  }
  for (j = 0; j < MG_WINDOW_LAT_BUCKETS; j++)
    acc->lat[j] -= x->lat[j];
}

static bool slot_live(const struct mg_window *w, int i, int64_t now) {
  return w->slots[i].start != NO_START && !(w->slots[i].start > now ||
           now - w->slots[i].start >= w->window_ms);
}

/* A slot that holds sums (stored) but lies outside the window at now. */
static bool slot_expired(const struct mg_window *w, int i, int64_t now) {
  return w->slots[i].start != NO_START && !slot_live(w, i, now);
}

/* The sum of the live slots of a cell: what is stored, less the slots
 * that have expired but not yet been recycled (few, while traffic flows). */
static void live_sum(const struct mg_window *w, int64_t now, unsigned cell,
                     struct mg_window_sum *out) {
  int i;
  *out = w->stored[cell];
  for (i = 0; i < MG_WINDOW_SLOTS; i++)
    if (slot_expired(w, i, now))
      sum_sub(out, &w->slots[i].cell[cell]);
}

void mg_window_sum(const struct mg_window *w, int64_t now,
                   struct mg_window_sum *out) {
  live_sum(w, now, MG_CELL_ALL, out);
}

void mg_window_view_init(struct mg_window_view *v) {
  memset(v, 0, sizeof(*v));
}

void mg_window_read(const struct mg_window *w, int64_t now,
                    struct mg_window_view *out) {
  int c;
  for (c = 0; c < MG_CELLS; c++)
    live_sum(w, now, (unsigned)c, &out->win[c]);
  out->epoch = w->epoch;
  memcpy(out->total, w->total, sizeof(out->total));
  memcpy(out->buckets, w->buckets, sizeof(out->buckets));
  out->units = w->units;
}

void mg_window_view_merge(struct mg_window_view *acc,
                          const struct mg_window_view *x) {
  int c;
  for (c = 0; c < MG_CELLS; c++)
    mg_window_sum_add(&acc->win[c], &x->win[c]);
  if (x->epoch > acc->epoch) {
    acc->epoch = x->epoch;
    memcpy(acc->total, x->total, sizeof(acc->total));
    memcpy(acc->buckets, x->buckets, sizeof(acc->buckets));
    acc->units = x->units;
  } else if (x->epoch == acc->epoch) {
    for (c = 0; c < MG_CELLS; c++) {
      int b, j;
      mg_window_sum_add(&acc->total[c], &x->total[c]);
      for (b = 0; b < MG_UNIT_BUCKETS; b++) {
        struct mg_unit_bucket *u = &acc->buckets[c][b];
        const struct mg_unit_bucket *v = &x->buckets[c][b];
        u->requests += v->requests;
        u->errors += v->errors;
        u->ln_ms += v->ln_ms;
        u->cost_ok += v->cost_ok;
        u->cost += v->cost;
        for (j = 0; j < MG_MAX_FEEDBACK_METRICS; j++) {
          u->fb_n[j] += v->fb_n[j];
          u->fb_sum[j] += v->fb_sum[j];
        }
      }
    }
    mg_hll_merge(&acc->units, &x->units);
  }
}

double mg_window_quantile(const struct mg_window_sum *s, double q) {
  uint64_t n = 0, want, seen = 0;
  int i;
  for (i = 0; i < MG_WINDOW_LAT_BUCKETS; i++)
    n += s->lat[i];
  if (n == 0)
    return 0;
  want = (uint64_t)ceil(q * (double)n);
  if (want == 0)
    want = 1;
  for (i = 0; i < MG_WINDOW_LAT_BUCKETS; i++) {
    seen += s->lat[i];
    if (seen >= want)
      return bound(i);
  }
  return bound(MG_WINDOW_LAT_BUCKETS - 1);
}
