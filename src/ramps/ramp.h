/* ramp.h - automatic ramps and rollback guards (DESIGN.md, "Automatic ramps
 * and rollback", "Quality signals and cost"; issues 11.5, 15.4, 15.5).
 *
 *   "flags": {"chat": {...,
 *     "ramp": {"variant": "v2", "interval_ms": 10000,
 *              "steps": [{"weight": 100, "hold_ms": 3600000,
 *                         "inputs": {"max_chars": 2000, "max_tools": 0}},
 *                        {"weight": 100, "hold_ms": 3600000,
 *                         "inputs": {"max_chars": 8000, "max_tools": 3},
 *                         "min_requests": 5000, "min_units": 500,
 *                         "guards": {"max_error_rate": 0.02}},
 *                        {"weight": 100}],
 *              "cells": {"chars": [2000, 8000]}},
 *     "guards": {"window_ms": 300000, "min_requests": 200, "consecutive": 1,
 *                "max_error_rate": 0.05, "max_p95_ms": 8000,
 *                "max_fallback_rate": 0.2, "max_low_confidence_rate": 0.1,
 *                "max_error_ratio": 2, "max_latency_ratio": 1.2,
 *                "max_cost_ratio": 1.10,
 *                "feedback": {"complaint": {"max_ratio": 3},
 *                             "accuracy": {"min": 0.85}},
 *                "alpha": 0.01, "detect_ratio": 1.5}}}
 *
 * Two kinds of guards.
 *   - Absolute guards (max_error_rate, max_p95_ms, max_fallback_rate,
 *     max_low_confidence_rate) compare the treatment's last window_ms with a
 *     threshold, once the window holds min_requests.
 *   - Sequential guards (max_error_ratio, max_latency_ratio, max_cost_ratio,
 *     and every feedback guard: min, max, max_ratio, min_ratio) are
 *     always-valid tests (seqtest.h) on the evidence gathered since the step
 *     began (window.h, "total"), never on the sliding window, each arm
 *     needing min_requests observations of what the guard measures. Their
 *     variance is widened by each arm's design effect, from the units
 *     hashed into the window's buckets (seqtest.h, "Clustering").
 *   Either kind needs the treatment's window to hold min_requests before
 *   anything happens (no rollback, no advance).
 *
 * Alpha. `alpha` is the chance that the comparative guards ever roll back a
 * treatment that is within every threshold, over the whole ramp: every
 * step, every look, every cell. It is split by Bonferroni (valid whatever
 * the dependence between tests): a step gets alpha / nsteps, shared evenly
 * by its sequential tests (guards x judged cells). Each step starts fresh
 * evidence, so the steps' tests are separate tests, and the union bound
 * over them is what keeps the ramp as a whole at alpha. Why not pool the
 * evidence over the steps: the allocation changes at every step (5%, then
 * 25%, ...), so cumulative sums would weigh the treatment towards later
 * hours and wider inputs and the control towards earlier ones; a base rate
 * that drifts with the time of day, or harder inputs let in, would then
 * look like a worse treatment (Simpson's paradox). Within a step the
 * allocation and the admitted inputs are fixed, and drift hits both arms
 * alike. A step with its own `alpha` spends that one (the ramp's rate is
 * then the mean of the steps' alphas); a manual restart of the ramp, or a
 * process restart (the evidence lives in memory), begins the spending
 * afresh.
 *
 * Input cells. Guards judge "all" and each input cell on its own, so a
 * breach in the long inputs rolls back even while the aggregate looks fine.
 * Tool counts use the report's cells (0, 1-2, 3+). input.chars uses fixed
 * edges (`cells.chars`; by default the steps' distinct inputs.max_chars,
 * else 500, 2000, 8000): the report's chars cells are quartiles of the whole
 * log, which a live window cannot know in advance, and edges taken from the
 * steps make each step's newly admitted inputs a cell of their own. A cell
 * is judged only when the step admits at least two cells of its axis
 * (otherwise it holds the same requests as "all").
 *
 * Input gates. A step with `inputs` lets the treatment see only inputs
 * within its limits: the flag layer checks mg_ramp_admits before the
 * rollout bucket, and a request beyond the limits is served by the control
 * with reason `ramp_inputs` (not randomized, so neither guards nor the
 * report compare it). Both arms' rollout requests are then drawn from the
 * same inputs, which is what makes the comparison fair.
 *
 * Exit criteria. A step advances when its hold has passed, the guards are
 * green, and the treatment has had min_requests requests and min_units
 * distinct units (hll.h) since the step began; a manual step then waits for
 * a promote. `consecutive` breached checks in a row roll back at once.
 *
 * Pure: wall-clock time comes in as `now` (milliseconds), so tests drive a
 * fake clock and the state survives restarts. */
#ifndef MG_RAMP_H
#define MG_RAMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/cfg.h"
#include "ramps/window.h"
#include "routing/flag.h"
#include "routing/request.h"

#define MG_RAMP_CHARS_EDGES 3   /* at most 4 input.chars cells */
#define MG_FB_NAME_MAX 64       /* a guarded metric's name, NUL included */
#define MG_RAMP_GUARD_MAX 96    /* "feedback.<name>.max_ratio" */
#define MG_RAMP_CELL_NAME_MAX 48

/* Guards on one feedback metric; each part off unless set. */
struct mg_fb_guard {
  bool on;                /* any part set */
  bool has_min, has_max;
  double min, max;        /* floor / ceiling of the treatment's mean */
  double max_ratio;       /* treatment mean <= k x control's; < 0: off */
  double min_ratio;       /* treatment mean >= k x control's; < 0: off */
};

struct mg_guards {
  uint32_t window_ms;
  uint32_t min_requests;          /* per cell and arm, of what a guard
                                   * measures (requests, feedback, costs) */
  uint32_t consecutive;
  double max_error_rate;          /* < 0: off */
  double max_error_ratio;         /* sequential; < 0: off */
  double max_p95_ms;              /* < 0: off */
  double max_fallback_rate;       /* < 0: off */
  double max_low_confidence_rate; /* < 0: off */
  double max_latency_ratio;       /* sequential, geometric-mean latency;
                                   * < 0: off */
  double max_cost_ratio;          /* sequential, cost per successful answer;
                                   * < 0: off */
  struct mg_fb_guard fb[MG_MAX_FEEDBACK_METRICS]; /* by metric index */
  char fb_name[MG_MAX_FEEDBACK_METRICS][MG_FB_NAME_MAX];
  double alpha;                   /* family-wise, over the ramp */
  double detect_ratio;            /* the excess the tests are tuned for */
};

struct mg_ramp_step {
  uint32_t weight;   /* basis points of the ramped variant */
  uint32_t hold_ms;  /* time at this step before it may advance */
  bool manual;       /* once held, wait for a human promote */
  bool gated;        /* inputs limits below */
  uint64_t max_chars; /* UINT64_MAX: no limit */
  uint32_t max_tools; /* UINT32_MAX: no limit */
  uint64_t min_requests; /* treatment requests since the step began */
  uint64_t min_units;    /* treatment units since the step began */
  struct mg_guards *guards; /* owned; NULL: the flag's */
};

struct mg_ramp_cfg {
  bool enabled;                 /* the flag has a ramp */
  uint32_t variant;             /* the ramped variant */
  uint32_t control;             /* the flag's off_variant */
  struct mg_ramp_step *steps;   /* owned */
  uint32_t nsteps;
  uint32_t interval_ms;
  struct mg_guards guards;
  uint32_t nchars_edges;        /* 1..MG_RAMP_CHARS_EDGES */
  uint64_t chars_edges[MG_RAMP_CHARS_EDGES]; /* cell i: edge[i-1] < x <=
                                              * edge[i] */
};

/* Ramp configs of a snapshot, by flag index. */
struct mg_ramps {
  struct mg_ramp_cfg *v; /* owned */
  size_t n;
};

/* Parse "ramp" and "guards" of every flag in the "flags" section. metrics
 * are the names declared in feedback.metrics, in order (a feedback guard's
 * index is its metric's position; only the first MG_MAX_FEEDBACK_METRICS
 * can be guarded); a feedback guard on any other name is an error. */
void mg_ramps_parse_metrics(struct mg_ramps *out, const cJSON *flags_section,
                            const struct mg_flags *flags,
                            const char *const *metrics, size_t nmetrics,
                            struct mg_cfg_errors *e);
/* The same with no feedback metrics declared. */
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

/* Why a ramp rolled back: what the event and the notification carry. */
struct mg_ramp_evidence {
  char guard[MG_RAMP_GUARD_MAX];  /* "max_error_ratio",
                                   * "feedback.complaint.max_ratio",
                                   * "manual" */
  char cell[MG_RAMP_CELL_NAME_MAX]; /* "all", "chars 2001-8000", "tools 3+";
                                     * empty when manual */
  double observed, threshold;     /* ratio guards: the treatment's ratio to
                                   * the control and k */
  uint32_t window_ms;             /* absolute guards: the window read; 0 for
                                   * sequential ones (since the step began) */
  bool sequential;
  double statistic;               /* log of the mixture likelihood ratio */
  double boundary;                /* log(1 / alpha) */
  double alpha;                   /* this test's share of alpha_family */
  double alpha_family;            /* the guards' alpha */
  uint64_t n_treatment, n_control; /* observations behind the value */
  int64_t since;                  /* wall ms: start of the step's evidence */
  uint32_t step;
};

struct mg_ramp_state {
  enum mg_ramp_status status;
  uint32_t step;           /* index into the steps */
  int64_t step_started;    /* wall clock ms; shifted by pauses */
  int64_t paused_at;       /* wall clock ms while paused */
  uint32_t failures;       /* failed checks in a row */
  int64_t last_check;      /* wall clock ms of the last check */
  uint64_t epoch;          /* changes when a step (re)starts: windows keep
                            * their evidence per epoch (window.h) */
  /* Why it rolled back ("manual" by hand; empty when never). guard,
   * observed and threshold repeat why's for callers that predate it. */
  char guard[MG_RAMP_GUARD_MAX];
  double observed, threshold;
  int64_t rolled_back_at;
  struct mg_ramp_evidence why;
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

/* The guards in force at the ramp's step (the step's own, else the
 * flag's). */
const struct mg_guards *mg_ramp_guards(const struct mg_ramp_cfg *c,
                                       const struct mg_ramp_state *st);

/* The input gate of the step in force. on is false when the step has no
 * limits, or the ramp is rolled back (the treatment has 0% anyway). */
struct mg_ramp_gate {
  bool on;
  uint64_t max_chars; /* UINT64_MAX: no limit */
  uint32_t max_tools; /* UINT32_MAX: no limit */
};
void mg_ramp_gate(const struct mg_ramp_cfg *c, const struct mg_ramp_state *st,
                  struct mg_ramp_gate *out);
/* Whether the step in force lets the treatment see this input; false means
 * the request goes to the control with reason `ramp_inputs`. */
bool mg_ramp_admits(const struct mg_ramp_cfg *c,
                    const struct mg_ramp_state *st, const struct mg_input *in);

/* The window cells of an input (for struct mg_window_outcome). */
void mg_ramp_cells(const struct mg_ramp_cfg *c, const struct mg_input *in,
                   uint8_t *chars_cell, uint8_t *tools_cell);
/* "all", "chars <= 2000", "chars 2001-8000", "chars > 8000", "tools 0",
 * "tools 1-2", "tools 3+"; "" for an unused cell. Returns buf. */
const char *mg_ramp_cell_name(const struct mg_ramp_cfg *c, unsigned cell,
                              char *buf, size_t n);

enum mg_ramp_event {
  MG_RAMP_NOTHING,     /* no change */
  MG_RAMP_ADVANCED,    /* moved to the next step (or to done) */
  MG_RAMP_ROLLBACK,    /* a guard rolled it back */
  MG_RAMP_WAIT,        /* held a manual step: now waiting for promote */
};

/* One check at now on the treatment's and the control's views (each the
 * merge of every worker's window, read at the same moment). Does nothing
 * before interval_ms has passed since the last check. Returns what changed
 * (the state is updated); on MG_RAMP_ROLLBACK, why (may be NULL) gets the
 * evidence, also kept in st->why. */
enum mg_ramp_event mg_ramp_judge(const struct mg_ramp_cfg *c,
                                 struct mg_ramp_state *st, int64_t now,
                                 const struct mg_window_view *treatment,
                                 const struct mg_window_view *control,
                                 struct mg_ramp_evidence *why);

/* The check before views: the sliding sums of "all" stand in for the
 * evidence too. The sequential tests are then NOT always valid (the window
 * forgets); kept only until the runtime calls mg_ramp_judge. */
enum mg_ramp_event mg_ramp_check(const struct mg_ramp_cfg *c,
                                 struct mg_ramp_state *st, int64_t now,
                                 const struct mg_window_sum *treatment,
                                 const struct mg_window_sum *control);

/* Every guard of the step in force, on every judged cell with data: its
 * value, threshold and, for sequential ones, statistic and boundary (for
 * /admin/state and the live view). NULL on allocation failure. */
cJSON *mg_ramp_guards_json(const struct mg_ramp_cfg *c,
                           const struct mg_ramp_state *st,
                           const struct mg_window_view *treatment,
                           const struct mg_window_view *control);

/* Admin actions; each returns 0 or -EINVAL when not possible in the state
 * the ramp is in (the message says why). */
int mg_ramp_pause(struct mg_ramp_state *st, int64_t now);
int mg_ramp_resume(struct mg_ramp_state *st, int64_t now);
int mg_ramp_promote(const struct mg_ramp_cfg *c, struct mg_ramp_state *st,
                    int64_t now);
int mg_ramp_rollback(struct mg_ramp_state *st, int64_t now);
void mg_ramp_restart(struct mg_ramp_state *st, int64_t now);

/* The state as JSON, and back (a restart resumes where it was). Files
 * written before epochs and evidence load: the new keys are optional. */
cJSON *mg_ramp_state_to_json(const struct mg_ramp_state *st);
int mg_ramp_state_from_json(struct mg_ramp_state *st, const cJSON *j,
                            uint32_t nsteps);

#endif
