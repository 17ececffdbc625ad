/* live.h - GET /admin/live: what the live dashboard shows (DESIGN.md,
 * "Live view"), as JSON for it and for other tools:
 *
 *   {"now": RFC 3339, "instance": "...", "config": {"hash": "..."},
 *    "flags": {"<flag>": {"enabled", "killed", "weights": {...}|null,
 *      "variants": {"<variant>": {"target": "...", "windows": {"1m": W,
 *        "5m": W, "15m": W}}},
 *      "ramp": null | {"status", "variant", "step", "steps", "weight",
 *        "next_step_in_ms", "waiting_for_human", "guards", ...}}},
 *    "breakers": {"<target>": {"state": "closed|open|half_open"}},
 *    "events": [the last event lines, newest first]}
 *
 * W = {"requests", "error_rate", "fallback_rate", "low_confidence_rate",
 *      "p50_ms", "p95_ms", "p99_ms", "cost_per_request": n|null,
 *      "feedback": {"<metric>": {"mean", "n"}}} */
#ifndef MG_LIVE_HANDLER_H
#define MG_LIVE_HANDLER_H

#include <cjson/cJSON.h>

#include "server/worker.h"

/* The live view now (on the control loop: worker 0's). */
cJSON *mg_live_json(struct mg_worker *w);

#endif
