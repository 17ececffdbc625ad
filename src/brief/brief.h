/* brief.h - release briefs (DESIGN.md, "Notifications, briefs and the live
 * view"; issue 16.2): what a flag's rollout changes, for whom, who to call
 * and how it is stopped, and `modelgate brief`'s release brief and
 * customer-support handoff built from it and the flag's ramp.
 *
 *   "flags": {"chat": {...,
 *     "brief": {"summary": "New answer model for chat",
 *               "changes": "Answers come from gpt-5-mini ...",
 *               "audience": "Free-tier users of the web chat",
 *               "contact": "#ml-releases, ana@example.com",
 *               "disable": "Kill the flag: ..."}}}
 *
 * Every key is optional; what is missing is said from the config (the
 * variants and their targets, the kill switch of the admin API).
 * Pure: no libuv; the start time comes in as an argument. */
#ifndef MG_BRIEF_H
#define MG_BRIEF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/buf.h"
#include "common/cfg.h"
#include "decisions/decide.h"
#include "ramps/ramp.h"
#include "routing/flag.h"

struct mg_brief {
  bool set;        /* the flag has a "brief" */
  char *summary;   /* owned, or NULL */
  char *changes;   /* owned, or NULL */
  char *audience;  /* owned, or NULL */
  char *contact;   /* owned, or NULL */
  char *disable;   /* owned, or NULL */
  /* The flag's decide rule (its errors are the loader's: check_decide),
   * for the exit criteria in words. */
  bool has_decide;
  struct mg_decide decide; /* owned when has_decide */
};

/* Briefs of a snapshot, by flag index. */
struct mg_briefs {
  struct mg_brief *v; /* owned */
  size_t n;
};

/* Parse "brief" of every flag in the "flags" section; errors name their
 * path ("$.flags.chat.brief.contact"). */
void mg_briefs_parse(struct mg_briefs *out, const cJSON *flags_section,
                     const struct mg_flags *flags, struct mg_cfg_errors *e);
void mg_briefs_free(struct mg_briefs *b);

enum mg_brief_format { MG_BRIEF_TEXT, MG_BRIEF_MARKDOWN };

/* The release brief and the CS handoff of flag f: what changes, for whom,
 * the step plan with the dates its holds give from start_ms (wall ms), the
 * exit criteria in words, how to disable it, the contact. r: the flag's
 * ramp config (r->enabled false: no ramp). admin: "host:port" of the admin
 * API for the disable command. */
int mg_brief_render(const struct mg_flag *f, const struct mg_brief *b,
                    const struct mg_ramp_cfg *r, const char *admin,
                    int64_t start_ms,
                    enum mg_brief_format fmt, struct mg_buf *out)
    MG_WARN_UNUSED;

/* One line for notifications: the summary, else "<flag>: <variant>". */
const char *mg_brief_summary(const struct mg_brief *b);

#endif
