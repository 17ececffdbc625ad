/* window.h - what a ramp's guards read about one variant: a sliding window
 * of request outcomes (counts, a latency histogram, latency logs, cost,
 * feedback) in time slots, per input cell; beside it the cumulative sums
 * since the current ramp step began (the evidence of the sequential tests)
 * and the step's distinct units. Pure; time comes in as `now` (ms).
 *
 * Why two kinds of sums. The absolute guards (max_error_rate, max_p95_ms,
 * ...) compare what the last window_ms looked like with a threshold. The
 * sequential tests (seqtest.h) must not read a sliding window: their
 * guarantee rests on the evidence only growing (a martingale in the number
 * of observations); a window that forgets old outcomes makes each look a
 * fresh sample, and a healthy canary looked at a thousand times is rolled
 * back far more often than alpha. So each window also keeps `total`: every
 * outcome recorded since its epoch began. The ramp state carries the epoch
 * (it changes when a step begins); an outcome recorded under a newer epoch
 * restarts the totals, one under an older epoch (a worker that has not yet
 * seen the step change) only joins the sliding window.
 *
 * Summable. One window per worker and variant; the check reads each
 * (mg_window_read) and merges the views (mg_window_view_merge): counts and
 * sums add, the units' sketches take a register-wise max, and only views of
 * the newest epoch contribute totals. The merge of several workers' views
 * is a valid input to mg_ramp_judge.
 *
 * Cells. MG_CELL_ALL (0) holds every outcome; 1..4 are input.chars bands
 * and 5..7 tool-count bands (ramp.h, mg_ramp_cells), so every outcome is
 * in "all", one chars cell and one tools cell.
 *
 * Memory: sizeof(struct mg_window) is about 240 KB (30 slots x 8 cells x
 * 760 bytes, the totals, 8 x 32 unit buckets of 168 bytes, a 1 KiB
 * sketch); a view is about 56 KB (keep it off small stacks). */
#ifndef MG_WINDOW_H
#define MG_WINDOW_H

#include <stdbool.h>
#include <stdint.h>

#include "ramps/hll.h"

#define MG_WINDOW_SLOTS 30
/* Latency buckets: upper bounds in ms, roughly 12% apart from 1 ms to
 * ten minutes, so a p95 read from them is within ~12% of the truth. */
#define MG_WINDOW_LAT_BUCKETS 120
/* Feedback metrics a window keeps, by index into feedback.metrics. */
#define MG_MAX_FEEDBACK_METRICS 8
/* "all", four input.chars bands, three tool-count bands. */
#define MG_CELLS 8
#define MG_CELL_ALL 0
#define MG_CELL_CHARS0 1
#define MG_CELL_TOOLS0 5
#define MG_CELL_NONE 0xff

struct mg_fb_sum {
  uint64_t n;      /* observations */
  double sum, sq;  /* sum of values, of squares */
};

struct mg_window_sum {
  uint64_t requests;
  uint64_t errors;        /* the variant's own target failed, or the client
                           * saw an error */
  uint64_t fallbacks;     /* answered by a fallback tier */
  uint64_t low_conf;      /* an unsure answer */
  uint64_t ok;            /* successful answers: the client got its answer */
  double ln_ms, ln_ms_sq; /* sums of ln(latency in ms) and of its square */
  uint64_t cost_n;        /* requests whose cost is known */
  uint64_t cost_ok;       /* successful answers among them */
  double cost, cost_sq;   /* sums over the cost_n requests */
  double cost_of_ok;      /* cost of the cost_ok answers */
  struct mg_fb_sum fb[MG_MAX_FEEDBACK_METRICS];
  uint32_t lat[MG_WINDOW_LAT_BUCKETS]; /* sliding sums only: the totals
                                        * keep no histogram */
};

/* Units hashed into buckets, for the sequential tests' design effect
 * (seqtest.h, "Clustering"): the evidence's sums per bucket. */
#define MG_UNIT_BUCKETS 32

struct mg_unit_bucket {
  double requests, errors, ln_ms;
  double cost_ok, cost;            /* over requests with a known cost */
  double fb_n[MG_MAX_FEEDBACK_METRICS], fb_sum[MG_MAX_FEEDBACK_METRICS];
};

/* One finished request, as the guards see it. */
struct mg_window_outcome {
  bool error, fallback, low_conf;
  bool ok;            /* the client got a whole successful answer */
  double latency_ms;
  double cost;        /* NaN when unknown (no usage, no price) */
  uint8_t chars_cell; /* mg_ramp_cells; MG_CELL_NONE: "all" only */
  uint8_t tools_cell;
  bool has_unit;      /* unit_hash names the unit (min_units, clusters);
                       * without it the request is a unit of its own */
  uint64_t unit_hash;
};

/* One feedback value, as the guards see it. */
struct mg_window_fb {
  uint32_t metric;    /* index into feedback.metrics; from
                       * MG_MAX_FEEDBACK_METRICS on, ignored */
  double value;
  uint8_t chars_cell; /* the cells of the request it is about;
                       * MG_CELL_NONE when unknown */
  uint8_t tools_cell;
  bool has_unit;      /* the unit of that request, when known */
  uint64_t unit_hash;
};

struct mg_window {
  uint32_t window_ms;
  uint32_t slot_ms;
  uint64_t epoch;                      /* of the totals */
  struct {
    int64_t start;
    struct mg_window_sum cell[MG_CELLS];
  } slots[MG_WINDOW_SLOTS];
  struct mg_window_sum stored[MG_CELLS]; /* the sum of every slot held,
                                          * live or expired: a read
                                          * subtracts the expired ones */
  struct mg_window_sum total[MG_CELLS]; /* since the epoch began */
  struct mg_unit_bucket buckets[MG_CELLS][MG_UNIT_BUCKETS]; /* the same */
  struct mg_hll units;                  /* since the epoch began */
  uint64_t anonymous;                   /* outcomes without a unit */
};

/* What a check reads: one worker's window, or several merged. */
struct mg_window_view {
  uint64_t epoch;
  struct mg_window_sum win[MG_CELLS];   /* the last window_ms */
  struct mg_window_sum total[MG_CELLS]; /* since the epoch began */
  struct mg_unit_bucket buckets[MG_CELLS][MG_UNIT_BUCKETS];
  struct mg_hll units;
};

/* A fresh window (epoch 0, nothing recorded). */
void mg_window_init(struct mg_window *w, uint32_t window_ms);
/* Change the window's length: the sliding slots start afresh, the totals,
 * units and epoch (the sequential evidence) are kept. */
void mg_window_resize(struct mg_window *w, uint32_t window_ms);

/* Record a finished request at now under the ramp state's epoch. */
void mg_window_record(struct mg_window *w, int64_t now, uint64_t epoch,
                      const struct mg_window_outcome *o);
/* Record a feedback value at its arrival time now (feedback comes after
 * its request: it joins the slot and the evidence of now). */
void mg_window_feedback(struct mg_window *w, int64_t now, uint64_t epoch,
                        const struct mg_window_fb *f);

/* The view of a window at now. */
void mg_window_read(const struct mg_window *w, int64_t now,
                    struct mg_window_view *out);
void mg_window_view_init(struct mg_window_view *v);
/* acc := acc + x (see "Summable" above). */
void mg_window_view_merge(struct mg_window_view *acc,
                          const struct mg_window_view *x);
void mg_window_sum_add(struct mg_window_sum *acc,
                       const struct mg_window_sum *x);

/* Before cells and epochs: a request in "all" only, under the window's
 * current epoch, successful unless an error, cost unknown. */
void mg_window_add(struct mg_window *w, int64_t now, bool error,
                   bool fallback, bool low_conf, double latency_ms);
/* The "all" sum of the slots within the last window_ms. */
void mg_window_sum(const struct mg_window *w, int64_t now,
                   struct mg_window_sum *out);

/* The q quantile (0..1) of the latencies in a sum, in ms (the upper bound
 * of the bucket holding it); 0 when empty. */
double mg_window_quantile(const struct mg_window_sum *s, double q);

#endif
