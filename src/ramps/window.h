/* window.h - a sliding window of request outcomes for one variant: counts
 * and a latency histogram in time slots, summed over the last window_ms.
 * Pure; time comes in as `now` (milliseconds). */
#ifndef MG_WINDOW_H
#define MG_WINDOW_H

#include <stdbool.h>
#include <stdint.h>

#define MG_WINDOW_SLOTS 30
/* Latency buckets: upper bounds in ms, roughly 12% apart from 1 ms to
 * ten minutes, so a p95 read from them is within ~12% of the truth. */
#define MG_WINDOW_LAT_BUCKETS 120

struct mg_window_sum {
  uint64_t requests;
  uint64_t errors;        /* the variant's own target failed, or the client
                           * saw an error */
  uint64_t fallbacks;     /* answered by a fallback tier */
  uint64_t low_conf;      /* an unsure answer */
  uint32_t lat[MG_WINDOW_LAT_BUCKETS];
};

struct mg_window {
  uint32_t window_ms;
  uint32_t slot_ms;
  struct {
    int64_t start;
    struct mg_window_sum s;
  } slots[MG_WINDOW_SLOTS];
};

void mg_window_init(struct mg_window *w, uint32_t window_ms);
void mg_window_add(struct mg_window *w, int64_t now, bool error,
                   bool fallback, bool low_conf, double latency_ms);
/* Sum of the slots within the last window_ms. */
void mg_window_sum(const struct mg_window *w, int64_t now,
                   struct mg_window_sum *out);
/* The q quantile (0..1) of the latencies in a sum, in ms (the upper bound
 * of the bucket holding it); 0 when empty. */
double mg_window_quantile(const struct mg_window_sum *s, double q);

#endif
