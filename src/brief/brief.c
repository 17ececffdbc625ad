/* brief.c - release briefs and the CS handoff (brief.h). */
#include "brief/brief.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/time.h"

static const char *const brief_keys[] = {"summary", "changes", "audience",
                                         "contact", "disable", NULL};

static void brief_free(struct mg_brief *b) {
  if (b->has_decide)
    mg_decide_free(&b->decide);
  free(b->summary);
  free(b->changes);
  free(b->audience);
  free(b->contact);
  free(b->disable);
  memset(b, 0, sizeof(*b));
}

void mg_briefs_parse(struct mg_briefs *out, const cJSON *flags_section,
                     const struct mg_flags *flags, struct mg_cfg_errors *e) {
  size_t i;
  memset(out, 0, sizeof(*out));
  if (flags->n == 0)
    return;
  out->v = calloc(flags->n, sizeof(*out->v));
  if (out->v == NULL) {
    mg_cfg_error(e, "$.flags", "out of memory");
    return;
  }
  out->n = flags->n;
  for (i = 0; i < flags->n; i++) {
    const struct mg_flag *f = &flags->v[i];
    const cJSON *fj = cJSON_GetObjectItemCaseSensitive(flags_section, f->name);
    const cJSON *bj = cJSON_GetObjectItemCaseSensitive(fj, "brief");
    const cJSON *dj = cJSON_GetObjectItemCaseSensitive(fj, "decide");
    struct mg_brief *b = &out->v[i];
    char fp[MG_CFG_PATH_MAX], bp[MG_CFG_PATH_MAX];
    mg_cfg_join(fp, "$.flags", f->name);
    if (dj) {
      /* Errors are said once, by the loader's own check of the rule. */
      struct mg_cfg_errors quiet;
      mg_cfg_errors_init(&quiet);
      mg_cfg_join(bp, fp, "decide");
      if (mg_decide_parse(dj, bp, &b->decide, &quiet) == 0 && quiet.n == 0)
        b->has_decide = true;
      else
        mg_decide_free(&b->decide);
      mg_cfg_errors_free(&quiet);
    }
    if (bj == NULL)
      continue;
    mg_cfg_join(bp, fp, "brief");
    if (!mg_cfg_object(bj, bp, brief_keys, e))
      continue;
    b->set = true;
    b->summary = mg_cfg_str(bj, "summary", bp, NULL, true, e);
    b->changes = mg_cfg_str(bj, "changes", bp, NULL, true, e);
    b->audience = mg_cfg_str(bj, "audience", bp, NULL, true, e);
    b->contact = mg_cfg_str(bj, "contact", bp, NULL, true, e);
    b->disable = mg_cfg_str(bj, "disable", bp, NULL, true, e);
  }
}

void mg_briefs_free(struct mg_briefs *b) {
  size_t i;
  for (i = 0; i < b->n; i++)
    brief_free(&b->v[i]);
  free(b->v);
  memset(b, 0, sizeof(*b));
}

const char *mg_brief_summary(const struct mg_brief *b) {
  return b && b->summary ? b->summary : NULL;
}

/* ---- rendering ---------------------------------------------------------------- */

struct w {
  struct mg_buf *out;
  enum mg_brief_format fmt;
  int rc;
};

static void put(struct w *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void put(struct w *w, const char *fmt, ...) {
  char tmp[2048];
  va_list ap;
  int n;
  if (w->rc)
    return;
  va_start(ap, fmt);
  n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
  va_end(ap);
  if (n < 0)
    w->rc = -1;
  else if ((size_t)n < sizeof(tmp))
    w->rc = mg_buf_puts(w->out, tmp);
  else {
    /* Long free text from the config: print it without the format. */
    char *big = malloc((size_t)n + 1);
    if (big == NULL) {
      w->rc = -1;
      return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    w->rc = mg_buf_puts(w->out, big);
    free(big);
  }
}

static void heading(struct w *w, int level, const char *title) {
  if (w->fmt == MG_BRIEF_MARKDOWN)
    put(w, "%s %s\n\n", level == 1 ? "#" : "##", title);
  else if (level == 1)
    put(w, "%s\n%.*s\n\n", title, (int)strlen(title),
        "=================================================================="
        "==============================================================");
  else
    put(w, "%s\n%.*s\n", title, (int)strlen(title),
        "------------------------------------------------------------------"
        "--------------------------------------------------------------");
}

static void para(struct w *w, const char *label, const char *text) {
  if (w->fmt == MG_BRIEF_MARKDOWN)
    put(w, "**%s:** %s\n\n", label, text);
  else
    put(w, "%s: %s\n", label, text);
}

static void item(struct w *w, const char *text) {
  put(w, "%s%s\n", w->fmt == MG_BRIEF_MARKDOWN ? "- " : "  - ", text);
}

/* "1h 30min", "45s", "2d 4h" */
static void duration(uint64_t ms, char *out, size_t n) {
  uint64_t s = ms / 1000, d = s / 86400, h = s % 86400 / 3600,
           m = s % 3600 / 60, sec = s % 60;
  size_t len = 0;
  out[0] = '\0';
  if (d)
    len += (size_t)snprintf(out + len, n - len, "%llud ", (unsigned long long)d);
  if (h && len < n)
    len += (size_t)snprintf(out + len, n - len, "%lluh ", (unsigned long long)h);
  if (m && len < n)
    len += (size_t)snprintf(out + len, n - len, "%llumin ",
                            (unsigned long long)m);
  if ((sec || len == 0) && len < n)
    len += (size_t)snprintf(out + len, n - len, "%llus ",
                            (unsigned long long)sec);
  if (len > 0 && len <= n)
    out[len - 1] = '\0';
}

/* "2026-12-03 10:00 UTC" */
static void date(int64_t ms, char out[40]) {
  char r[32];
  mg_rfc3339_format(ms, r);
  /* r is "YYYY-MM-DDTHH:MM:SS[.mmm]Z" */
  snprintf(out, 40, "%.10s %.5s UTC", r, r + 11);
}

static void pct(uint32_t bp, char out[16]) {
  if (bp % 100 == 0)
    snprintf(out, 16, "%u%%", bp / 100);
  else
    snprintf(out, 16, "%.2f%%", bp / 100.0);
}

/* The guards in words, one item each. */
static void guards_words(struct w *w, const struct mg_guards *g,
                         const char *variant, const char *control) {
  char line[512], win[48];
  unsigned k;
  duration(g->window_ms, win, sizeof(win));
  if (g->max_error_rate >= 0) {
    snprintf(line, sizeof(line),
             "the error rate of %s stays at or below %.4g%% over any %s "
             "window", variant, g->max_error_rate * 100, win);
    item(w, line);
  }
  if (g->max_p95_ms >= 0) {
    snprintf(line, sizeof(line),
             "the p95 latency of %s stays at or below %.6g ms over any %s "
             "window", variant, g->max_p95_ms, win);
    item(w, line);
  }
  if (g->max_fallback_rate >= 0) {
    snprintf(line, sizeof(line),
             "at most %.4g%% of %s's requests are served by a fallback over "
             "any %s window", g->max_fallback_rate * 100, variant, win);
    item(w, line);
  }
  if (g->max_low_confidence_rate >= 0) {
    snprintf(line, sizeof(line),
             "at most %.4g%% of %s's answers are low-confidence over any %s "
             "window", g->max_low_confidence_rate * 100, variant, win);
    item(w, line);
  }
  if (g->max_error_ratio >= 0) {
    snprintf(line, sizeof(line),
             "the error rate of %s is not shown to exceed %.4gx %s's "
             "(sequential test since the step began)", variant,
             g->max_error_ratio, control);
    item(w, line);
  }
  if (g->max_latency_ratio >= 0) {
    snprintf(line, sizeof(line),
             "the latency of %s (geometric mean) is not shown to exceed "
             "%.4gx %s's", variant, g->max_latency_ratio, control);
    item(w, line);
  }
  if (g->max_cost_ratio >= 0) {
    snprintf(line, sizeof(line),
             "the cost per successful answer of %s is not shown to exceed "
             "%.4gx %s's", variant, g->max_cost_ratio, control);
    item(w, line);
  }
  for (k = 0; k < MG_MAX_FEEDBACK_METRICS; k++) {
    const struct mg_fb_guard *fb = &g->fb[k];
    if (!fb->on)
      continue;
    if (fb->has_min) {
      snprintf(line, sizeof(line), "feedback %s of %s stays at or above %.4g",
               g->fb_name[k], variant, fb->min);
      item(w, line);
    }
    if (fb->has_max) {
      snprintf(line, sizeof(line), "feedback %s of %s stays at or below %.4g",
               g->fb_name[k], variant, fb->max);
      item(w, line);
    }
    if (fb->max_ratio >= 0) {
      snprintf(line, sizeof(line),
               "feedback %s of %s is not shown to exceed %.4gx %s's",
               g->fb_name[k], variant, fb->max_ratio, control);
      item(w, line);
    }
    if (fb->min_ratio >= 0) {
      snprintf(line, sizeof(line),
               "feedback %s of %s is not shown to fall below %.4gx %s's",
               g->fb_name[k], variant, fb->min_ratio, control);
      item(w, line);
    }
  }
  snprintf(line, sizeof(line),
           "a guard is judged once the window holds %u requests; %u breached "
           "check%s in a row roll%s the ramp back to 0%% at once",
           g->min_requests, g->consecutive, g->consecutive == 1 ? "" : "s",
           g->consecutive == 1 ? "s" : "");
  item(w, line);
}

/* The flag's decide rule in words: what ships it (DESIGN.md, "Quality
 * signals and cost": `modelgate report`'s verdict). */
static void decide_words(struct w *w, const struct mg_decide *d,
                         const char *variant, const char *control) {
  char line[512];
  size_t k;
  put(w, "%sTo ship %s (the decide rule `modelgate report -c` applies):\n%s",
      w->fmt == MG_BRIEF_MARKDOWN ? "\n" : "", variant, w->fmt == MG_BRIEF_MARKDOWN ? "\n" : "");
  snprintf(line, sizeof(line),
           "feedback %s of %s is at least %.4g above %s's, at %.4g%% "
           "confidence (the units still needed at %.4g%% power are in the "
           "report)",
           d->metric ? d->metric : "?", variant, d->min_lift, control,
           (1 - d->alpha) * 100, d->power * 100);
  item(w, line);
  for (k = 0; k < MG_DECIDE_NGUARDS; k++) {
    const struct mg_decide_guard *g = &d->guard[k];
    if (!g->set)
      continue;
    if (!isnan(g->max_increase)) {
      snprintf(line, sizeof(line),
               "and its %s is no more than %.4g above %s's",
               mg_decide_guard_names[k], g->max_increase, control);
      item(w, line);
    }
    if (!isnan(g->max_ratio)) {
      snprintf(line, sizeof(line), "and its %s is at most %.4gx %s's",
               mg_decide_guard_names[k], g->max_ratio, control);
      item(w, line);
    }
  }
}

int mg_brief_render(const struct mg_flag *f, const struct mg_brief *b,
                    const struct mg_ramp_cfg *r, const char *admin,
                    int64_t start_ms, enum mg_brief_format fmt,
                    struct mg_buf *out) {
  struct w w = {out, fmt, 0};
  const struct mg_variant *ctl = &f->variants[f->off_variant];
  const struct mg_variant *trt =
      r && r->enabled && r->variant < f->nvariants ? &f->variants[r->variant]
                                                   : NULL;
  char title[512], line[1024], when[40], until[40], hold[48], p[16];
  uint32_t i;
  int64_t t = start_ms;

  if (b && b->summary)
    snprintf(title, sizeof(title), "Release brief: %s - %s", f->name,
             b->summary);
  else
    snprintf(title, sizeof(title), "Release brief: %s", f->name);
  heading(&w, 1, title);
  if (b && b->changes)
    para(&w, "What changes", b->changes);
  else if (trt) {
    snprintf(line, sizeof(line), "requests of flag %s move from %s (%s) to "
             "%s (%s)", f->name, ctl->name, ctl->target ? ctl->target->name
             : "-", trt->name, trt->target ? trt->target->name : "-");
    para(&w, "What changes", line);
  } else
    para(&w, "What changes", "(not stated: add brief.changes)");
  para(&w, "For whom",
       b && b->audience ? b->audience
                        : "every unit of the flag, by the rollout's weights");
  snprintf(line, sizeof(line), "%s on %s (control: %s on %s)",
           trt ? trt->name : "-",
           trt && trt->target ? trt->target->name : "-", ctl->name,
           ctl->target ? ctl->target->name : "-");
  para(&w, "Variants", line);
  para(&w, "Contact",
       b && b->contact ? b->contact : "(not stated: add brief.contact)");
  if (fmt == MG_BRIEF_TEXT)
    put(&w, "\n");

  heading(&w, 2, "Plan");
  if (!trt) {
    put(&w, "%sThe flag has no ramp: its weights are in force as written.\n",
        fmt == MG_BRIEF_TEXT ? "" : "");
  } else {
    date(start_ms, when);
    snprintf(line, sizeof(line), "Starts %s; each step holds at least its "
             "time and its guards must be green before the next.", when);
    put(&w, "%s\n%s", line, fmt == MG_BRIEF_MARKDOWN ? "\n" : "");
    if (fmt == MG_BRIEF_MARKDOWN)
      put(&w, "| step | %s gets | from | held | then |\n|---|---|---|---|---|"
              "\n", trt->name);
    for (i = 0; i < r->nsteps; i++) {
      const struct mg_ramp_step *s = &r->steps[i];
      char then[256], extra[256];
      bool last = i + 1 == r->nsteps;
      pct(s->weight, p);
      date(t, when);
      duration(s->hold_ms, hold, sizeof(hold));
      date(t + s->hold_ms, until);
      extra[0] = '\0';
      if (s->gated) {
        char c[48] = "any length", tl[32] = "any number of";
        if (s->max_chars != UINT64_MAX)
          snprintf(c, sizeof(c), "up to %llu characters",
                   (unsigned long long)s->max_chars);
        if (s->max_tools != UINT32_MAX)
          snprintf(tl, sizeof(tl), "up to %u", s->max_tools);
        snprintf(extra, sizeof(extra), "; inputs of %s with %s tools", c,
                 tl);
      }
      if (last)
        snprintf(then, sizeof(then), "final");
      else if (s->manual)
        snprintf(then, sizeof(then), "waits for a human promote (earliest %s)",
                 until);
      else
        snprintf(then, sizeof(then), "advances at the earliest %s", until);
      if (!last && (s->min_requests || s->min_units)) {
        size_t l = strlen(then);
        snprintf(then + l, sizeof(then) - l,
                 ", after %llu requests and %llu units",
                 (unsigned long long)s->min_requests,
                 (unsigned long long)s->min_units);
      }
      if (fmt == MG_BRIEF_MARKDOWN)
        put(&w, "| %u | %s%s | %s | %s | %s |\n", i + 1, p, extra, when,
            last ? "-" : hold, then);
      else
        put(&w, "  %u. %s of units%s from %s%s%s; %s\n", i + 1, p, extra,
            when, last ? "" : ", held ", last ? "" : hold, then);
      if (s->manual && !last)
        t += s->hold_ms; /* the earliest: a human may take longer */
      else
        t += s->hold_ms;
    }
    put(&w, "\n");
    heading(&w, 2, "Exit criteria");
    put(&w, "A step advances only while every guard holds; a breach rolls "
            "the ramp back to %s:\n%s", ctl->name,
        fmt == MG_BRIEF_MARKDOWN ? "\n" : "");
    guards_words(&w, &r->guards, trt->name, ctl->name);
    if (b && b->has_decide)
      decide_words(&w, &b->decide, trt->name, ctl->name);
    for (i = 0; i < r->nsteps; i++)
      if (r->steps[i].guards) {
        put(&w, "%sStep %u has its own guards:\n%s",
            fmt == MG_BRIEF_MARKDOWN ? "\n" : "", i + 1,
            fmt == MG_BRIEF_MARKDOWN ? "\n" : "");
        guards_words(&w, r->steps[i].guards, trt->name, ctl->name);
      }
  }
  put(&w, "\n");
  heading(&w, 2, "How to disable");
  if (b && b->disable)
    put(&w, "%s\n", b->disable);
  snprintf(line, sizeof(line),
           "curl -X POST -H \"Authorization: Bearer $MODELGATE_ADMIN_TOKEN\" "
           "http://%s/admin/flags/%s/kill", admin ? admin : "ADMIN", f->name);
  if (fmt == MG_BRIEF_MARKDOWN)
    put(&w, "%sKill switch (every request goes to %s at once, survives "
            "restarts):\n\n```\n%s\n```\n",
        b && b->disable ? "\n" : "", ctl->name, line);
  else
    put(&w, "Kill switch (every request goes to %s at once, survives "
            "restarts):\n  %s\n", ctl->name, line);
  if (trt)
    put(&w, "%sTo stop the ramp only: POST .../admin/flags/%s/ramp/rollback\n",
        fmt == MG_BRIEF_MARKDOWN ? "\n" : "", f->name);
  put(&w, "\n");

  heading(&w, 2, "Customer-support handoff");
  para(&w, "What customers may notice",
       b && b->changes ? b->changes : "answers from a different model");
  para(&w, "Who",
       b && b->audience ? b->audience : "a growing share of the flag's units");
  if (trt) {
    date(start_ms, when);
    date(t, until);
    snprintf(line, sizeof(line), "from %s; everyone in scope by %s at the "
             "earliest", when, until);
    para(&w, "When", line);
  }
  snprintf(line, sizeof(line),
           "note the time and the request id (x-modelgate-decision), and "
           "contact %s; they can disable the change at once (above)",
           b && b->contact ? b->contact : "the flag's owner");
  para(&w, "If a customer reports a problem", line);
  return w.rc;
}
