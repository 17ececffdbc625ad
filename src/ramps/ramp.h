/* ramp.h - automatic ramps and rollback guards (DESIGN.md, "Automatic ramps
 * and rollback").
 *
 *   "flags": {"chat": {...,
 *     "ramp": {"variant": "v2", "interval_ms": 10000,
 *              "steps": [{"weight": 1, "hold_ms": 600000},
 *                        {"weight": 5, "hold_ms": 3600000},
 *                        {"weight": 25, "hold_ms": 3600000, "manual": true},
 *                        {"weight": 50, "hold_ms": 3600000},
 *                        {"weight": 100}]},
 *     "guards": {"window_ms": 300000, "min_requests": 200, "consecutive": 3,
 *                "max_error_rate": 0.05, "max_error_ratio": 2,
 *                "max_p95_ms": 8000, "max_fallback_rate": 0.2,
 *                "max_low_confidence_rate": 0.1}}}
 *
 * Every interval the guards are checked on the ramped variant's window (and
 * the control's, for the ratio). With fewer than min_requests in the window
 * nothing happens. A check with a breached guard counts; `consecutive` of
 * them in a row roll the variant back to 0% at once. A step whose hold has
 * passed advances on the next green check, or waits for a promote when the
 * step is manual. Pure: wall-clock time comes in as `now` (milliseconds),
 * so tests drive a fake clock and the state survives restarts. */
#ifndef MG_RAMP_H
#define MG_RAMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/cfg.h"
#include "ramps/window.h"
#include "routing/flag.h"

struct mg_ramp_step {
  uint32_t weight;   /* basis points of the ramped variant */
  uint32_t hold_ms;  /* time at this step before it may advance */
  bool manual;       /* once held, wait for a human promote */
};

struct mg_guards {
  uint32_t window_ms;
  uint32_t min_requests;
  uint32_t consecutive;
  double max_error_rate;          /* < 0: off */
  double max_error_ratio;         /* treatment / control, counted only
                                   * when significant (z > 2.33); < 0: off */
  double max_p95_ms;              /* < 0: off */
  double max_fallback_rate;       /* < 0: off */
  double max_low_confidence_rate; /* < 0: off */
};

struct mg_ramp_cfg {
  bool enabled;                 /* the flag has a ramp */
  uint32_t variant;             /* the ramped variant */
  uint32_t control;             /* the flag's off_variant */
  struct mg_ramp_step *steps;   /* owned */
  uint32_t nsteps;
  uint32_t interval_ms;
  struct mg_guards guards;
};

/* Ramp configs of a snapshot, by flag index. */
struct mg_ramps {
  struct mg_ramp_cfg *v; /* owned */
  size_t n;
};

/* Parse "ramp" and "guards" of every flag in the "flags" section. */
void mg_ramps_parse(struct mg_ramps *out, const cJSON *flags_section,
                    const struct mg_flags *flags, struct mg_cfg_errors *e);
void mg_ramps_free(struct mg_ramps *r);

enum mg_ramp_status {
  MG_RAMP_RUNNING,     /* holding a step, checking guards */
  MG_RAMP_WAITING,     /* a manual step was held: waiting for promote */
  MG_RAMP_PAUSED,      /* paused by hand: guards still checked */
  MG_RAMP_DONE,        /* the last step is in force */
  MG_RAMP_ROLLED_BACK, /* a guard fired, or rolled back by hand: 0% */
};

const char *mg_ramp_status_name(enum mg_ramp_status s);

struct mg_ramp_state {
  enum mg_ramp_status status;
  uint32_t step;           /* index into the steps */
  int64_t step_started;    /* wall clock ms; shifted by pauses */
  int64_t paused_at;       /* wall clock ms while paused */
  uint32_t failures;       /* failed checks in a row */
  int64_t last_check;      /* wall clock ms of the last check */
  /* Why it rolled back (empty when by hand or never). */
  char guard[32];
  double observed, threshold;
  int64_t rolled_back_at;
};

/* A fresh ramp: the first step, starting now. */
void mg_ramp_start(struct mg_ramp_state *st, int64_t now);

/* The weight of the ramped variant in force (0 when rolled back). */
uint32_t mg_ramp_weight(const struct mg_ramp_cfg *c,
                        const struct mg_ramp_state *st);

/* Put the ramp's weights in force in a flag state: the ramped variant at
 * its step's weight, the control taking what the others leave. */
void mg_ramp_apply(const struct mg_ramp_cfg *c, const struct mg_ramp_state *st,
                   const struct mg_flag *f, struct mg_flag_state *fs);

enum mg_ramp_event {
  MG_RAMP_NOTHING,     /* no change */
  MG_RAMP_ADVANCED,    /* moved to the next step (or to done) */
  MG_RAMP_ROLLBACK,    /* a guard rolled it back */
  MG_RAMP_WAIT,        /* held a manual step: now waiting for promote */
};

/* One check: treatment's and control's windows summed at now. Returns what
 * changed (the state is updated). Does nothing before interval_ms has
 * passed since the last check. */
enum mg_ramp_event mg_ramp_check(const struct mg_ramp_cfg *c,
                                 struct mg_ramp_state *st, int64_t now,
                                 const struct mg_window_sum *treatment,
                                 const struct mg_window_sum *control);

/* Admin actions; each returns 0 or -EINVAL when not possible in the state
 * the ramp is in (the message says why). */
int mg_ramp_pause(struct mg_ramp_state *st, int64_t now);
int mg_ramp_resume(struct mg_ramp_state *st, int64_t now);
int mg_ramp_promote(const struct mg_ramp_cfg *c, struct mg_ramp_state *st,
                    int64_t now);
int mg_ramp_rollback(struct mg_ramp_state *st, int64_t now);
void mg_ramp_restart(struct mg_ramp_state *st, int64_t now);

/* The state as JSON, and back (a restart resumes where it was). */
cJSON *mg_ramp_state_to_json(const struct mg_ramp_state *st);
int mg_ramp_state_from_json(struct mg_ramp_state *st, const cJSON *j,
                            uint32_t nsteps);

#endif
