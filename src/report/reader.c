/* reader.c - decision logs into per-flag aggregates (reader.h).
 *
 * The hot path is one line: scan it with the reused JSON doc, walk the root
 * object's members once to find the fields that matter, intern the flag and
 * variant (a map lookup and a short linear scan), then append a row and add
 * it to its unit's aggregate. Nothing is allocated per line once the arrays
 * have grown to size. */
#include "report/reader.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/hash.h"
#include "common/time.h"

#define BLOCK (4u << 20)       /* bytes per read(2) */
#define MAX_TOKENS (1u << 16)  /* JSON values per line */

static void names_free(struct mg_rp_names *t);

void mg_rp_log_init(struct mg_rp_log *log) {
  memset(log, 0, sizeof(*log));
  log->threads = 1;
  mg_map_init(&log->by_name);
  mg_json_init(&log->doc, MAX_TOKENS);
  mg_buf_init(&log->scratch, MG_RP_MAX_LINE);
}

static void flag_free(struct mg_rp_flag *f) {
  size_t i;
  for (i = 0; i < f->narms; i++)
    free(f->arms[i].name);
  for (i = 0; i < f->nreasons; i++)
    free(f->reasons[i].reason);
  free(f->reasons);
  free(f->rows);
  free(f->wsets);
  free(f->last_weights);
  names_free(&f->endpoints);
  free(f->name);
  free(f);
}

void mg_rp_log_free(struct mg_rp_log *log) {
  size_t i;
  for (i = 0; i < log->nflags; i++)
    flag_free(log->flags[i]);
  free(log->flags);
  mg_map_free(&log->by_name);
  free(log->units);
  free(log->slots);
  free(log->pend);
  for (i = 0; i < log->nevents; i++) {
    free(log->events[i].name);
    free(log->events[i].flag);
  }
  free(log->events);
  for (i = 0; i < log->nfiles; i++)
    free(log->files[i]);
  free(log->files);
  free(log->ids);
  free(log->fb);
  free(log->fbj);
  for (i = 0; i < log->nfb_metrics; i++)
    free(log->fb_metrics[i].name);
  names_free(&log->instances);
  names_free(&log->clients);
  mg_json_free(&log->doc);
  mg_buf_free(&log->scratch);
  memset(log, 0, sizeof(*log));
}

struct mg_rp_flag *mg_rp_log_flag(const struct mg_rp_log *log,
                                  const char *name) {
  return mg_map_get(&log->by_name, name, strlen(name));
}

/* Make room for need elements of size bytes in *p (capacity *cap). */
static int grow(void *pp, size_t *cap, size_t need, size_t size) {
  void **p = pp, *q;
  size_t c = *cap ? *cap : 16;

  if (need <= *cap)
    return 0;
  while (c < need) {
    if (c > SIZE_MAX / 2 / size)
      return -ENOMEM;
    c *= 2;
  }
  q = realloc(*p, c * size);
  if (q == NULL)
    return -ENOMEM;
  *p = q;
  *cap = c;
  return 0;
}

static char *dup_n(const char *p, size_t n) {
  char *s = malloc(n + 1);
  if (s) {
    memcpy(s, p, n);
    s[n] = '\0';
  }
  return s;
}

/* ---- per-line context --------------------------------------------------- */

struct line_ctx {
  const char *file; /* borrowed from log->files */
  uint64_t line;
};

static void malformed(struct mg_rp_log *log, const struct line_ctx *c,
                      const char *why) {
  log->malformed++;
  if (log->nbad < MG_RP_MAX_BAD) {
    log->bad[log->nbad].file = c->file;
    log->bad[log->nbad].line = c->line;
    log->bad[log->nbad].why = why;
    log->nbad++;
  }
}

/* The string at token i, unescaped when it needs to be: then it lives in
 * log->scratch until the next call. */
static int str_at(struct mg_rp_log *log, uint32_t i, struct mg_str *out) {
  int rc;
  if (!log->doc.toks[i].escaped) {
    *out = mg_json_str_raw(&log->doc, i);
    return 0;
  }
  mg_buf_reset(&log->scratch);
  rc = mg_json_str_decode(&log->doc, i, &log->scratch);
  if (rc)
    return rc;
  out->p = log->scratch.data ? log->scratch.data : "";
  out->len = log->scratch.len;
  return 0;
}

static inline bool is_type(const struct mg_json_doc *d, uint32_t i, int type) {
  return i != MG_JSON_NOTFOUND && d->toks[i].type == type;
}

static inline bool is_null(const struct mg_json_doc *d, uint32_t i) {
  return i == MG_JSON_NOTFOUND || d->toks[i].type == MG_JSON_NULL;
}

static const double pow10_tab[19] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,
                                     1e7,  1e8,  1e9,  1e10, 1e11, 1e12, 1e13,
                                     1e14, 1e15, 1e16, 1e17, 1e18};

/* The number at token i. Plain decimals ("1712.4", the whole of a
 * record's numbers) are converted here; strtod (through mg_json_num) costs
 * more than scanning the line and is left for exponents and long mantissas.
 * The result may differ from strtod's by an ulp, far below what a report
 * prints. */
static bool num_at(const struct mg_json_doc *d, uint32_t i, double *out) {
  const struct mg_json_tok *t;
  const char *s, *e;
  uint64_t ip = 0, fp = 0;
  int idig = 0, fdig = 0;
  bool neg = false;
  double v;

  if (!is_type(d, i, MG_JSON_NUMBER))
    return false;
  t = &d->toks[i];
  s = d->src + t->start;
  e = d->src + t->end;
  if (*s == '-') {
    neg = true;
    s++;
  }
  while (s < e && (unsigned)(*s - '0') < 10) {
    ip = ip * 10 + (uint64_t)(*s - '0');
    s++;
    idig++;
  }
  if (s < e && *s == '.') {
    s++;
    while (s < e && (unsigned)(*s - '0') < 10) {
      if (fdig < 18) {
        fp = fp * 10 + (uint64_t)(*s - '0');
        fdig++;
      }
      s++;
    }
  }
  if (s != e || idig > 18)
    return mg_json_num(d, i, out) == 0;
  v = (double)ip + (fdig ? (double)fp / pow10_tab[fdig] : 0.0);
  *out = neg ? -v : v;
  return true;
}

static inline uint32_t sat_u32(double v) {
  if (!(v > 0))
    return 0;
  return v >= 4294967295.0 ? UINT32_MAX : (uint32_t)v;
}

/* ---- interning ---------------------------------------------------------- */

static struct mg_rp_flag *flag_get(struct mg_rp_log *log, struct mg_str name) {
  struct mg_rp_flag *f = mg_map_get(&log->by_name, name.p, name.len);
  if (f)
    return f;
  if (grow(&log->flags, &log->capflags, log->nflags + 1, sizeof(*log->flags)))
    return NULL;
  f = calloc(1, sizeof(*f));
  if (f == NULL)
    return NULL;
  f->name = dup_n(name.p, name.len);
  f->base_len = name.len;
  f->wsets = calloc(MG_RP_MAX_WSETS, sizeof(*f->wsets));
  f->last_wset = MG_RP_NO_WSET;
  if (f->name == NULL || f->wsets == NULL ||
      mg_map_put(&log->by_name, f->name, name.len, f)) {
    flag_free(f);
    return NULL;
  }
  f->index = (uint32_t)log->nflags;
  log->flags[log->nflags++] = f;
  return f;
}

/* The arm index of variant name in f, created when new; -ENOMEM, or
 * -E2BIG past MG_RP_MAX_ARMS. */
static int arm_get(struct mg_rp_flag *f, struct mg_str name) {
  uint32_t i;
  for (i = 0; i < f->narms; i++)
    if (strlen(f->arms[i].name) == name.len &&
        memcmp(f->arms[i].name, name.p, name.len) == 0)
      return (int)i;
  if (f->narms == MG_RP_MAX_ARMS)
    return -E2BIG;
  f->arms[f->narms].name = dup_n(name.p, name.len);
  if (f->arms[f->narms].name == NULL)
    return -ENOMEM;
  return (int)f->narms++;
}

/* Count n records of arm with reason r. */
static int reason_count(struct mg_rp_flag *f, uint8_t arm, struct mg_str r,
                        uint64_t n) {
  size_t i;
  for (i = 0; i < f->nreasons; i++) {
    struct mg_rp_reason *x = &f->reasons[i];
    if (x->arm == arm && strlen(x->reason) == r.len &&
        memcmp(x->reason, r.p, r.len) == 0) {
      x->n += n;
      return 0;
    }
  }
  if (grow(&f->reasons, &f->capreasons, f->nreasons + 1, sizeof(*f->reasons)))
    return -ENOMEM;
  f->reasons[f->nreasons].reason = dup_n(r.p, r.len);
  if (f->reasons[f->nreasons].reason == NULL)
    return -ENOMEM;
  f->reasons[f->nreasons].arm = arm;
  f->reasons[f->nreasons].n = n;
  f->nreasons++;
  return 0;
}

/* Count n event lines of this name and flag. */
static int event_count(struct mg_rp_log *log, struct mg_str name,
                       struct mg_str flag, uint64_t n) {
  size_t i;
  for (i = 0; i < log->nevents; i++) {
    struct mg_rp_event *e = &log->events[i];
    if (strlen(e->name) == name.len && memcmp(e->name, name.p, name.len) == 0 &&
        strlen(e->flag) == flag.len &&
        (flag.len == 0 || memcmp(e->flag, flag.p, flag.len) == 0)) {
      e->n += n;
      return 0;
    }
  }
  if (grow(&log->events, &log->capevents, log->nevents + 1,
           sizeof(*log->events)))
    return -ENOMEM;
  log->events[log->nevents].name = dup_n(name.p, name.len);
  log->events[log->nevents].flag = dup_n(flag.len ? flag.p : "", flag.len);
  log->events[log->nevents].n = n;
  if (log->events[log->nevents].name == NULL ||
      log->events[log->nevents].flag == NULL) {
    free(log->events[log->nevents].name);
    free(log->events[log->nevents].flag);
    return -ENOMEM;
  }
  log->nevents++;
  return 0;
}

/* ---- units -------------------------------------------------------------- */

static inline uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= UINT64_C(0xff51afd7ed558ccd);
  x ^= x >> 33;
  x *= UINT64_C(0xc4ceb9fe1a85ec53);
  x ^= x >> 33;
  return x;
}

static inline uint64_t unit_key(uint64_t hash, uint32_t flag_arm) {
  return mix64(hash ^ ((uint64_t)flag_arm + 1) * UINT64_C(0x9e3779b97f4a7c15));
}

/* Where the probe for a unit starts, fetched ahead of the probe. */
static inline void unit_prefetch(const struct mg_rp_log *log, uint64_t hash,
                                 uint32_t flag_arm) {
  if (log->capslots)
    __builtin_prefetch(
        &log->slots[unit_key(hash, flag_arm) & (log->capslots - 1)]);
}

static int slots_grow(struct mg_rp_log *log) {
  size_t cap = log->capslots ? log->capslots * 2 : 1024, i;
  struct mg_rp_slot *s = malloc(cap * sizeof(*s));

  if (s == NULL)
    return -ENOMEM;
  for (i = 0; i < cap; i++)
    s[i].unit = MG_RP_NONE;
  for (i = 0; i < log->nunits; i++) {
    const struct mg_rp_unit *u = &log->units[i];
    uint32_t fa = u->flag << 8 | u->arm;
    size_t j = (size_t)unit_key(u->hash, fa) & (cap - 1);
    while (s[j].unit != MG_RP_NONE)
      j = (j + 1) & (cap - 1);
    s[j].hash = u->hash;
    s[j].flag_arm = fa;
    s[j].unit = (uint32_t)i;
  }
  free(log->slots);
  log->slots = s;
  log->capslots = cap;
  return 0;
}

/* The aggregate of (flag, arm, unit hash), created zeroed when new; its
 * index, or MG_RP_NONE when out of memory. */
static uint32_t unit_get(struct mg_rp_log *log, uint64_t hash, uint32_t flag,
                         uint8_t arm) {
  uint32_t fa = flag << 8 | arm;
  struct mg_rp_unit *u;
  size_t j;

  /* Keep the load under one half so probes stay short. */
  if ((log->nunits + 1) * 2 > log->capslots && slots_grow(log))
    return MG_RP_NONE;
  j = (size_t)unit_key(hash, fa) & (log->capslots - 1);
  while (log->slots[j].unit != MG_RP_NONE) {
    if (log->slots[j].hash == hash && log->slots[j].flag_arm == fa)
      return log->slots[j].unit;
    j = (j + 1) & (log->capslots - 1);
  }
  if (log->nunits >= MG_RP_NONE - 1 ||
      grow(&log->units, &log->capunits, log->nunits + 1, sizeof(*log->units)))
    return MG_RP_NONE;
  u = &log->units[log->nunits];
  memset(u, 0, sizeof(*u));
  u->hash = hash;
  u->flag = flag;
  u->arm = arm;
  log->slots[j].hash = hash;
  log->slots[j].flag_arm = fa;
  log->slots[j].unit = (uint32_t)log->nunits;
  return (uint32_t)log->nunits++;
}

/* ---- weights ------------------------------------------------------------ */

/* The weight set of the "weights" object at token w: MG_RP_NO_WSET when
 * the record has none or the flag already tracks MG_RP_MAX_WSETS; -1 with
 * *why set when the object is malformed; -ENOMEM. */
static int wset_of(struct mg_rp_log *log, struct mg_rp_flag *f, uint32_t w,
                   const char **why) {
  const struct mg_json_doc *d = &log->doc;
  struct mg_str raw;
  struct mg_rp_wset ws;
  uint32_t i, k, m;

  if (is_null(d, w))
    return MG_RP_NO_WSET;
  if (d->toks[w].type != MG_JSON_OBJECT) {
    *why = "\"weights\" is not an object";
    return -1;
  }
  /* Every record of a steady experiment carries the same bytes: compare
   * them before parsing anything. */
  raw = mg_json_raw(d, w);
  if (f->last_weights_len == raw.len && f->last_weights &&
      memcmp(f->last_weights, raw.p, raw.len) == 0)
    return f->last_wset;

  memset(&ws, 0, sizeof(ws));
  i = w + 1;
  for (m = 0; m < d->toks[w].count; m++) {
    uint32_t key = i, val = i + 1;
    struct mg_str name;
    double pct;
    int arm;
    i = d->toks[val].next;
    if (!num_at(d, val, &pct) || pct < 0 || pct > 100) {
      *why = "a weight is not a percentage";
      return -1;
    }
    if (str_at(log, key, &name))
      return -ENOMEM;
    arm = arm_get(f, name);
    if (arm == -ENOMEM)
      return -ENOMEM;
    if (arm < 0) {
      *why = "more variants than a flag can have";
      return -1;
    }
    /* Insert sorted by arm index, so equal sets compare equal whatever
     * order the object listed them in. */
    for (k = ws.n; k > 0 && ws.arm[k - 1] > arm; k--) {
      ws.arm[k] = ws.arm[k - 1];
      ws.bp[k] = ws.bp[k - 1];
    }
    if (k > 0 && ws.arm[k - 1] == arm) {
      *why = "a variant appears twice in \"weights\"";
      return -1;
    }
    ws.arm[k] = (uint8_t)arm;
    ws.bp[k] = (uint32_t)llround(pct * 100.0);
    ws.n++;
  }
  for (k = 0; k < f->nwsets; k++)
    if (f->wsets[k].n == ws.n &&
        memcmp(f->wsets[k].arm, ws.arm, ws.n) == 0 &&
        memcmp(f->wsets[k].bp, ws.bp, ws.n * sizeof(ws.bp[0])) == 0)
      break;
  if (k == f->nwsets) {
    if (f->nwsets == MG_RP_MAX_WSETS)
      return MG_RP_NO_WSET;
    f->wsets[f->nwsets++] = ws;
  }
  if (f->last_weights_cap < raw.len + 1) {
    char *p = realloc(f->last_weights, raw.len + 1);
    if (p == NULL)
      return -ENOMEM;
    f->last_weights = p;
    f->last_weights_cap = raw.len + 1;
  }
  memcpy(f->last_weights, raw.p, raw.len);
  f->last_weights_len = raw.len;
  f->last_wset = (uint8_t)k;
  return (int)k;
}

static void wset_seen(struct mg_rp_wset *ws, const struct mg_json_doc *d,
                      uint32_t ts) {
  struct mg_str t;
  ws->records++;
  if (!is_type(d, ts, MG_JSON_STRING))
    return;
  t = mg_json_str_raw(d, ts);
  if (t.len >= sizeof(ws->first_ts))
    t.len = sizeof(ws->first_ts) - 1;
  /* RFC 3339 UTC stamps of one length order as strings. */
  if (ws->first_ts[0] == '\0' || strncmp(t.p, ws->first_ts, t.len) < 0) {
    memcpy(ws->first_ts, t.p, t.len);
    ws->first_ts[t.len] = '\0';
  }
  if (strncmp(t.p, ws->last_ts, t.len) > 0) {
    memcpy(ws->last_ts, t.p, t.len);
    ws->last_ts[t.len] = '\0';
  }
}

/* ---- one line ----------------------------------------------------------- */

/* Indexes of the root object's values that the report reads. */
struct fields {
  uint32_t event, flag, unit, variant, reason, weights, input, attempts, tier,
      fallback_reason, confidence, status, error, ms, tokens, ts, id,
      endpoint, unit_source, cost, client, instance, feedback;
};

static void fields_scan(const struct mg_json_doc *d, struct fields *f) {
  uint32_t i = 1, m;

  memset(f, 0xff, sizeof(*f)); /* every index MG_JSON_NOTFOUND */
  for (m = 0; m < d->toks[0].count; m++) {
    uint32_t k = i, v = i + 1;
    struct mg_str key;
    /* Inline mg_json_str_raw: this loop runs for every member of every
     * line. */
    key.p = d->src + d->toks[k].start + 1;
    key.len = d->toks[k].end - d->toks[k].start - 2;
    i = d->toks[v].next;
    /* The first of duplicate keys wins, as with mg_json_get. Keys the
     * record writer never escapes are compared raw. */
#define FIELD(name, field)                                                    \
  if (key.len == sizeof(name) - 1 && memcmp(key.p, name, key.len) == 0) {     \
    if (f->field == MG_JSON_NOTFOUND)                                         \
      f->field = v;                                                           \
    continue;                                                                 \
  }
    FIELD("ts", ts)
    FIELD("ms", ms)
    FIELD("flag", flag)
    FIELD("unit", unit)
    FIELD("tier", tier)
    FIELD("event", event)
    FIELD("input", input)
    FIELD("error", error)
    FIELD("reason", reason)
    FIELD("status", status)
    FIELD("tokens", tokens)
    FIELD("variant", variant)
    FIELD("weights", weights)
    FIELD("attempts", attempts)
    FIELD("confidence", confidence)
    FIELD("fallback_reason", fallback_reason)
    FIELD("id", id)
    FIELD("cost", cost)
    FIELD("client", client)
    FIELD("endpoint", endpoint)
    FIELD("instance", instance)
    FIELD("feedback", feedback)
    FIELD("unit_source", unit_source)
#undef FIELD
  }
}

static bool str_is(const struct mg_json_doc *d, uint32_t i, const char *s) {
  struct mg_str v;
  if (!is_type(d, i, MG_JSON_STRING))
    return false;
  if (d->toks[i].escaped)
    return mg_json_str_eq(d, i, s, strlen(s));
  v = mg_json_str_raw(d, i);
  return mg_str_eq_c(v, s);
}

/* Fill the measurements of a rollout record into row; NULL, or why the
 * record is malformed. */
/* Token details the rows do not keep: summed per arm. */
struct tok_extra {
  double cached, reasoning, cache_read, cache_write;
};

static const char *measure(const struct mg_json_doc *d, const struct fields *fl,
                           struct mg_rp_row *row, struct tok_extra *tx) {
  double v;
  uint32_t i, m;

  if (!num_at(d, fl->ms, &v) || !(v >= 0))
    return "rollout record without a number in \"ms\"";
  row->ms = (float)v;

  if (!is_null(d, fl->input)) {
    uint32_t c, t;
    if (d->toks[fl->input].type != MG_JSON_OBJECT)
      return "\"input\" is not an object";
    c = mg_json_getc(d, fl->input, "chars");
    t = mg_json_getc(d, fl->input, "tools");
    if (c != MG_JSON_NOTFOUND) {
      if (!num_at(d, c, &v))
        return "\"input.chars\" is not a number";
      row->chars = sat_u32(v);
    }
    if (t != MG_JSON_NOTFOUND) {
      if (!num_at(d, t, &v))
        return "\"input.tools\" is not a number";
      row->tools = v >= 255 ? 255 : (uint8_t)sat_u32(v);
    }
  }

  if (is_type(d, fl->error, MG_JSON_TRUE)) {
    row->bits |= MG_RP_ERR;
  } else if (fl->error == MG_JSON_NOTFOUND || is_null(d, fl->error)) {
    /* Older lines without "error": what record.h defines it as. */
    if (num_at(d, fl->status, &v) && v >= 400 && v != 499)
      row->bits |= MG_RP_ERR;
  } else if (!is_type(d, fl->error, MG_JSON_FALSE)) {
    return "\"error\" is not a boolean";
  }

  if (!is_null(d, fl->fallback_reason)) {
    if (d->toks[fl->fallback_reason].type != MG_JSON_STRING)
      return "\"fallback_reason\" is not a string";
    row->bits |= MG_RP_FB;
    if (str_is(d, fl->fallback_reason, "low_confidence"))
      row->bits |= MG_RP_LC;
  }
  if (str_is(d, fl->tier, "fallback") || str_is(d, fl->tier, "cache") ||
      str_is(d, fl->tier, "traditional"))
    row->bits |= MG_RP_FB;

  if (!is_null(d, fl->attempts)) {
    if (d->toks[fl->attempts].type != MG_JSON_ARRAY)
      return "\"attempts\" is not an array";
    i = fl->attempts + 1;
    for (m = 0; m < d->toks[fl->attempts].count; m++) {
      if (d->toks[i].type == MG_JSON_OBJECT &&
          str_is(d, mg_json_getc(d, i, "outcome"), "low_confidence"))
        row->bits |= MG_RP_LC;
      i = d->toks[i].next;
    }
  }

  if (!is_null(d, fl->confidence)) {
    if (!num_at(d, fl->confidence, &v))
      return "\"confidence\" is not a number";
    row->confidence = (float)v;
    row->bits |= MG_RP_CONF;
  }

  if (!is_null(d, fl->tokens)) {
    uint32_t p, c;
    double pv = 0, cv = 0;
    if (d->toks[fl->tokens].type != MG_JSON_OBJECT)
      return "\"tokens\" is not an object";
    p = mg_json_getc(d, fl->tokens, "prompt");
    c = mg_json_getc(d, fl->tokens, "completion");
    if ((p != MG_JSON_NOTFOUND && !is_null(d, p) && !num_at(d, p, &pv)) ||
        (c != MG_JSON_NOTFOUND && !is_null(d, c) && !num_at(d, c, &cv)))
      return "\"tokens\" holds a non-number";
    row->tok_prompt = sat_u32(pv);
    row->tok_completion = sat_u32(cv);
    row->bits |= MG_RP_TOK;
    /* The details (absent or null when unknown). */
    if (d->toks[fl->tokens].count > 2) {
      static const char *const names[4] = {"cached", "reasoning", "cache_read",
                                           "cache_write"};
      double *out[4] = {&tx->cached, &tx->reasoning, &tx->cache_read,
                        &tx->cache_write};
      int k;
      for (k = 0; k < 4; k++) {
        uint32_t t = mg_json_getc(d, fl->tokens, names[k]);
        double tv;
        if (is_null(d, t))
          continue;
        if (!num_at(d, t, &tv) || tv < 0)
          return "\"tokens\" holds a non-number";
        *out[k] = tv;
      }
    }
  }

  if (!is_null(d, fl->cost)) {
    if (!num_at(d, fl->cost, &v) || !(v >= 0))
      return "\"cost\" is not a number of USD";
    row->cost = (float)v;
    row->bits |= MG_RP_COST;
  }
  return NULL;
}

static int add_row(struct mg_rp_flag *f, const struct mg_rp_row *row) {
  if (grow(&f->rows, &f->caprows, f->nrows + 1, sizeof(*f->rows)))
    return -ENOMEM;
  f->rows[f->nrows++] = *row;
  return 0;
}

static void unit_add(struct mg_rp_unit *u, const struct mg_rp_row *row) {
  u->requests++;
  u->errors += (row->bits & MG_RP_ERR) != 0;
  u->fallbacks += (row->bits & MG_RP_FB) != 0;
  u->lowconf += (row->bits & MG_RP_LC) != 0;
  u->ms_sum += row->ms;
  if (row->bits & MG_RP_CONF) {
    u->conf_n++;
    u->conf_sum += row->confidence;
  }
  if (row->bits & MG_RP_TOK) {
    u->tok_n++;
    u->tok_prompt += row->tok_prompt;
    u->tok_completion += row->tok_completion;
  }
  if (row->bits & MG_RP_COST) {
    u->cost_n++;
    u->ok_cost_n += (row->bits & MG_RP_ERR) == 0;
    u->cost_sum += row->cost;
  }
  if (row->wset < 32)
    u->wsets |= UINT32_C(1) << row->wset;
}

static bool is_off_reason(struct mg_str r) {
  return mg_str_eq_c(r, "killed") || mg_str_eq_c(r, "window") ||
         mg_str_eq_c(r, "blocked") || mg_str_eq_c(r, "default") ||
         mg_str_eq_c(r, "no_unit");
}

const char *const mg_rp_unit_sources[MG_RP_NUS] = {
    [MG_RP_US_SAFETY] = "safety_identifier", [MG_RP_US_USER] = "user",
    [MG_RP_US_HEADER] = "header",           [MG_RP_US_CLIENT] = "client",
    [MG_RP_US_NONE] = "none",               [MG_RP_US_OTHER] = "other",
    [MG_RP_US_ABSENT] = "not logged"};

static int unit_source_of(const struct mg_json_doc *d, uint32_t i) {
  int k;
  if (i == MG_JSON_NOTFOUND)
    return MG_RP_US_ABSENT;
  if (d->toks[i].type == MG_JSON_NULL)
    return MG_RP_US_NONE;
  for (k = 0; k < MG_RP_US_NONE; k++)
    if (str_is(d, i, mg_rp_unit_sources[k]))
      return k;
  return MG_RP_US_OTHER;
}

/* Count one more of name in t. */
static int names_count(struct mg_rp_names *t, struct mg_str name, uint64_t n) {
  uint32_t i;
  for (i = 0; i < t->count; i++)
    if (strlen(t->name[i]) == name.len &&
        memcmp(t->name[i], name.p, name.len) == 0) {
      t->n[i] += n;
      return 0;
    }
  if (t->count == MG_RP_MAX_NAMES) {
    t->other += n;
    return 0;
  }
  t->name[t->count] = dup_n(name.p, name.len);
  if (t->name[t->count] == NULL)
    return -ENOMEM;
  t->n[t->count++] = n;
  return 0;
}

static void names_free(struct mg_rp_names *t) {
  uint32_t i;
  for (i = 0; i < t->count; i++)
    free(t->name[i]);
  memset(t, 0, sizeof(*t));
}

static int names_merge(struct mg_rp_names *to, const struct mg_rp_names *from) {
  uint32_t i;
  for (i = 0; i < from->count; i++)
    if (names_count(to, mg_str_c(from->name[i]), from->n[i]))
      return -ENOMEM;
  to->other += from->other;
  return 0;
}

/* A hex digit's value by byte; 16 for anything else. */
static const uint8_t HEX[256] = {
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
     0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 16, 16, 16, 16, 16, 16,
    16, 10, 11, 12, 13, 14, 15, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 10, 11, 12, 13, 14, 15, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
};

/* 16 hex digits at p into *out; false when one is not a hex digit. */
static inline bool hex64(const unsigned char *p, uint64_t *out) {
  uint64_t v = 0;
  unsigned bad = 0;
  int k;
  for (k = 0; k < 16; k++) {
    unsigned d = HEX[p[k]];
    bad |= d;
    v = v << 4 | (d & 15);
  }
  *out = v;
  return (bad & 16) == 0;
}

/* 32 hex digits into two numbers; false when the string is not that. */
static bool id_of(const struct mg_json_doc *d, uint32_t i, uint64_t *hi,
                  uint64_t *lo) {
  const struct mg_json_tok *t;
  const unsigned char *p;
  if (i == MG_JSON_NOTFOUND)
    return false;
  t = &d->toks[i];
  /* A string token spans its quotes. */
  if (t->type != MG_JSON_STRING || t->escaped || t->end - t->start != 34)
    return false;
  p = (const unsigned char *)d->src + t->start + 1;
  /* Both halves are decoded either way: no branch to mispredict. */
  return (int)hex64(p, hi) & (int)hex64(p + 16, lo);
}

static int id_add(struct mg_rp_log *log, uint64_t hi, uint64_t lo,
                  uint32_t flag, uint32_t row) {
  struct mg_rp_id *x;
  if (grow(&log->ids, &log->capids, log->nids + 1, sizeof(*log->ids)))
    return -ENOMEM;
  x = &log->ids[log->nids++];
  x->hi = hi;
  x->lo = lo;
  x->flag = flag;
  x->row = row;
  return 0;
}

static int count_name(struct mg_rp_log *log, struct mg_rp_names *t,
                      uint32_t i) {
  struct mg_str s;
  if (!is_type(&log->doc, i, MG_JSON_STRING))
    return 0;
  if (str_at(log, i, &s))
    return -ENOMEM;
  return names_count(t, s, 1);
}

/* The index of feedback metric name, interned; -1 past the maximum. */
static int fb_metric_get(struct mg_rp_log *log, struct mg_str name) {
  uint32_t i;
  for (i = 0; i < log->nfb_metrics; i++)
    if (strlen(log->fb_metrics[i].name) == name.len &&
        memcmp(log->fb_metrics[i].name, name.p, name.len) == 0)
      return (int)i;
  if (log->nfb_metrics == MG_RP_MAX_FB_METRICS)
    return -1;
  log->fb_metrics[i].name = dup_n(name.p, name.len);
  if (log->fb_metrics[i].name == NULL)
    return -ENOMEM;
  log->fb_metrics[i].lines = 0;
  log->fb_metrics[i].non_boolean = false;
  log->nfb_metrics++;
  return (int)i;
}

/* A {"feedback": ...} line. 0 (also when malformed) or -ENOMEM. */
static int feedback_line(struct mg_rp_log *log, const struct fields *fl,
                         const struct line_ctx *c) {
  const struct mg_json_doc *d = &log->doc;
  uint32_t o = fl->feedback, id, metric, value;
  struct mg_rp_fb fb;
  struct mg_str s;
  double v;
  int m;

  if (!is_type(d, o, MG_JSON_OBJECT)) {
    malformed(log, c, "\"feedback\" is not an object");
    return 0;
  }
  memset(&fb, 0, sizeof(fb));
  id = mg_json_getc(d, o, "decision_id");
  metric = mg_json_getc(d, o, "metric");
  value = mg_json_getc(d, o, "value");
  if (!id_of(d, id, &fb.hi, &fb.lo)) {
    malformed(log, c, "feedback without a 32-hex \"decision_id\"");
    return 0;
  }
  if (!is_type(d, metric, MG_JSON_STRING)) {
    malformed(log, c, "feedback without a \"metric\" string");
    return 0;
  }
  if (is_type(d, value, MG_JSON_TRUE)) {
    v = 1;
  } else if (is_type(d, value, MG_JSON_FALSE)) {
    v = 0;
  } else if (!num_at(d, value, &v) || !isfinite(v)) {
    malformed(log, c, "feedback whose \"value\" is neither a boolean nor "
                      "a number");
    return 0;
  }
  if (is_type(d, fl->ts, MG_JSON_STRING)) {
    char ts[40];
    struct mg_str t = mg_json_str_raw(d, fl->ts);
    if (t.len < sizeof(ts)) {
      memcpy(ts, t.p, t.len);
      ts[t.len] = '\0';
      if (mg_rfc3339_parse(ts, &fb.ts_ms) != 0)
        fb.ts_ms = 0;
    }
  }
  if (str_at(log, metric, &s))
    return -ENOMEM;
  m = fb_metric_get(log, s);
  if (m == -ENOMEM)
    return -ENOMEM;
  log->fb_lines++;
  if (m < 0) {
    log->fb_metric_overflow++;
    return 0;
  }
  log->fb_metrics[m].lines++;
  if (d->toks[value].type == MG_JSON_NUMBER)
    log->fb_metrics[m].non_boolean = true;
  fb.metric = (uint16_t)m;
  fb.value = (float)v;
  fb.seq = log->fb_lines;
  if (count_name(log, &log->clients, mg_json_getc(d, o, "client")) ||
      count_name(log, &log->instances, mg_json_getc(d, o, "instance")))
    return -ENOMEM;
  if (grow(&log->fb, &log->capfb, log->nfb + 1, sizeof(*log->fb)))
    return -ENOMEM;
  log->fb[log->nfb++] = fb;
  return 0;
}

/* One line without its newline. Returns 0 (also for malformed lines) or
 * -ENOMEM. */
static int line(struct mg_rp_log *log, const char *p, size_t n,
                const struct line_ctx *c) {
  struct mg_json_doc *d = &log->doc;
  struct mg_rp_flag *f;
  struct mg_rp_row row;
  struct fields fl;
  struct mg_str s;
  const char *why = NULL;
  struct tok_extra tx = {0, 0, 0, 0};
  bool rollout, has_id;
  uint64_t id_hi = 0, id_lo = 0;
  uint32_t fi;
  int arm, ws, rc;

  while (n > 0 && (p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t'))
    n--;
  log->lines++;
  if (n == 0) {
    log->blank++;
    return 0;
  }
  rc = mg_json_parse(d, p, n, NULL);
  if (rc == MG_JSON_ENOMEM)
    return -ENOMEM;
  if (rc) {
    malformed(log, c, rc == MG_JSON_EINVAL ? "not valid JSON"
                                           : "too large or too deep");
    return 0;
  }
  if (d->toks[0].type != MG_JSON_OBJECT) {
    malformed(log, c, "not a JSON object");
    return 0;
  }
  fields_scan(d, &fl);

  if (fl.feedback != MG_JSON_NOTFOUND && fl.flag == MG_JSON_NOTFOUND &&
      fl.event == MG_JSON_NOTFOUND)
    return feedback_line(log, &fl, c);
  if (count_name(log, &log->instances, fl.instance))
    return -ENOMEM;
  if (fl.event != MG_JSON_NOTFOUND) {
    struct mg_str name, flag = MG_STR_NULL;
    if (!is_type(d, fl.event, MG_JSON_STRING)) {
      malformed(log, c, "\"event\" is not a string");
      return 0;
    }
    /* Event names and flags are counted as logged (raw bytes). */
    name = mg_json_str_raw(d, fl.event);
    if (is_type(d, fl.flag, MG_JSON_STRING))
      flag = mg_json_str_raw(d, fl.flag);
    log->event_lines++;
    return event_count(log, name, flag, 1);
  }
  if (fl.flag == MG_JSON_NOTFOUND) {
    malformed(log, c, "neither a decision record nor an event");
    return 0;
  }
  log->records++;
  has_id = id_of(d, fl.id, &id_hi, &id_lo);
  if (count_name(log, &log->clients, fl.client))
    return -ENOMEM;
  if (is_null(d, fl.flag)) {
    log->unflagged++;
    if (has_id && id_add(log, id_hi, id_lo, MG_RP_NONE, MG_RP_NONE))
      return -ENOMEM;
    return 0;
  }
  if (!is_type(d, fl.flag, MG_JSON_STRING)) {
    why = "\"flag\" is not a string";
    goto bad;
  }
  if (!is_type(d, fl.variant, MG_JSON_STRING)) {
    why = "a flagged record without a \"variant\" string";
    goto bad;
  }
  if (!is_type(d, fl.reason, MG_JSON_STRING)) {
    why = "a flagged record without a \"reason\" string";
    goto bad;
  }

  if (str_at(log, fl.flag, &s))
    return -ENOMEM;
  if (log->by_endpoint) {
    /* One section per flag and endpoint: "chat [responses]". */
    char name[512];
    struct mg_str ep = is_type(d, fl.endpoint, MG_JSON_STRING)
                           ? mg_json_str_raw(d, fl.endpoint)
                           : mg_str_c("unknown");
    size_t base = s.len;
    if (s.len + ep.len + 3 < sizeof(name)) {
      memcpy(name, s.p, s.len);
      name[s.len] = ' ';
      name[s.len + 1] = '[';
      memcpy(name + s.len + 2, ep.p, ep.len);
      name[s.len + 2 + ep.len] = ']';
      s.p = name;
      s.len += ep.len + 3;
    }
    f = flag_get(log, s);
    if (f == NULL)
      return -ENOMEM;
    f->base_len = base;
  } else {
    f = flag_get(log, s);
    if (f == NULL)
      return -ENOMEM;
  }
  fi = f->index;
  if (str_at(log, fl.variant, &s))
    return -ENOMEM;
  arm = arm_get(f, s);
  if (arm == -ENOMEM)
    return -ENOMEM;
  if (arm < 0) {
    why = "more variants than a flag can have";
    goto bad;
  }
  rollout = str_is(d, fl.reason, "rollout");

  memset(&row, 0, sizeof(row));
  row.unit = MG_RP_NONE;
  row.arm = (uint8_t)arm;
  row.wset = MG_RP_NO_WSET;
  if (rollout) {
    why = measure(d, &fl, &row, &tx);
    if (why)
      goto bad;
    if (!is_null(d, fl.unit) && !is_type(d, fl.unit, MG_JSON_STRING)) {
      why = "\"unit\" is not a string";
      goto bad;
    }
    ws = wset_of(log, f, fl.weights, &why);
    if (ws == -ENOMEM)
      return -ENOMEM;
    if (ws < 0)
      goto bad;
    row.wset = (uint8_t)ws;
  }

  /* The record is good: count it. The reason is decoded last because
   * weights may have used the scratch buffer. */
  if (str_at(log, fl.reason, &s))
    return -ENOMEM;
  f->records++;
  f->arms[arm].records++;
  f->unit_source[unit_source_of(d, fl.unit_source)]++;
  if (reason_count(f, (uint8_t)arm, s, 1))
    return -ENOMEM;
  if (!rollout) {
    if (is_off_reason(s))
      f->arms[arm].off++;
    if (mg_str_eq_c(s, "no_unit"))
      f->arms[arm].no_unit++;
    if (has_id && id_add(log, id_hi, id_lo, fi, MG_RP_NONE))
      return -ENOMEM;
    return 0;
  }
  f->arms[arm].rollout++;
  f->arms[arm].tok_cached += (uint64_t)tx.cached;
  f->arms[arm].tok_reasoning += (uint64_t)tx.reasoning;
  f->arms[arm].tok_cache_read += (uint64_t)tx.cache_read;
  f->arms[arm].tok_cache_write += (uint64_t)tx.cache_write;
  if (is_type(d, fl.endpoint, MG_JSON_STRING) &&
      names_count(&f->endpoints, mg_json_str_raw(d, fl.endpoint), 1))
    return -ENOMEM;
  if (has_id && id_add(log, id_hi, id_lo, fi, (uint32_t)f->nrows))
    return -ENOMEM;
  if (row.wset != MG_RP_NO_WSET)
    wset_seen(&f->wsets[row.wset], d, fl.ts);
  if (add_row(f, &row))
    return -ENOMEM;
  if (is_type(d, fl.unit, MG_JSON_STRING)) {
    /* The unit's index comes later, in a batch (resolve_pending); its
     * sums later still (sum_units). */
    struct mg_str u = mg_json_raw(d, fl.unit);
    struct mg_rp_pending *pd;
    if (grow(&log->pend, &log->cappend, log->npend + 1, sizeof(*log->pend)))
      return -ENOMEM;
    pd = &log->pend[log->npend++];
    pd->hash = mg_hash64(u.p, u.len);
    pd->flag = fi;
    pd->arm = (uint32_t)arm;
    pd->row = f->nrows - 1;
  }
  return 0;

bad:
  log->records--;
  malformed(log, c, why);
  return 0;
}

/* ---- files ------------------------------------------------------------- */

/* Add the rows appended since the last call to their units' sums. The
 * rows are read in order and the units touched at random, but no
 * iteration waits for another, so the cache misses overlap. */
static void sum_units(struct mg_rp_log *log) {
  size_t i, k;
  for (i = 0; i < log->nflags; i++) {
    struct mg_rp_flag *f = log->flags[i];
    for (k = f->summed; k < f->nrows; k++)
      if (f->rows[k].unit != MG_RP_NONE)
        unit_add(&log->units[f->rows[k].unit], &f->rows[k]);
    f->summed = f->nrows;
  }
}

static int add_file(struct mg_rp_log *log, const char *name,
                    struct line_ctx *c) {
  char **v = realloc(log->files, (log->nfiles + 1) * sizeof(*v));
  if (v == NULL)
    return -ENOMEM;
  log->files = v;
  v[log->nfiles] = dup_n(name, strlen(name));
  if (v[log->nfiles] == NULL)
    return -ENOMEM;
  c->file = v[log->nfiles++];
  c->line = 0;
  return 0;
}

/* Give the queued rows their units' indexes. Each probe would wait for
 * memory; fetching the slot of the row PREFETCH places ahead lets the
 * waits overlap. */
#define PREFETCH 12
static int resolve_pending(struct mg_rp_log *log) {
  const struct mg_rp_pending *p = log->pend;
  size_t i, n = log->npend;

  for (i = 0; i < n; i++) {
    uint32_t u;
    if (i + PREFETCH < n)
      unit_prefetch(log, p[i + PREFETCH].hash,
                    p[i + PREFETCH].flag << 8 | p[i + PREFETCH].arm);
    u = unit_get(log, p[i].hash, p[i].flag, (uint8_t)p[i].arm);
    if (u == MG_RP_NONE)
      return -ENOMEM;
    log->flags[p[i].flag]->rows[p[i].row].unit = u;
  }
  log->npend = 0;
  return 0;
}

/* Feed every complete line of p[0..n); returns the bytes consumed (up to
 * and including the last newline) or -ENOMEM. */
static ptrdiff_t lines(struct mg_rp_log *log, const char *p, size_t n,
                       struct line_ctx *c) {
  const char *s = p, *e = p + n, *nl;
  while (s < e && (nl = memchr(s, '\n', (size_t)(e - s))) != NULL) {
    c->line++;
    if (line(log, s, (size_t)(nl - s), c))
      return -ENOMEM;
    s = nl + 1;
  }
  if (resolve_pending(log))
    return -ENOMEM;
  return s - p;
}

int mg_rp_read_mem(struct mg_rp_log *log, const char *p, size_t n,
                   const char *name) {
  struct line_ctx c;
  ptrdiff_t used;

  if (add_file(log, name, &c))
    return -ENOMEM;
  log->bytes += n;
  used = lines(log, p, n, &c);
  if (used < 0) {
    log->npend = 0; /* rows of a failed read never get their units */
    return -ENOMEM;
  }
  if ((size_t)used < n) {
    c.line++;
    if (line(log, p + used, n - (size_t)used, &c) || resolve_pending(log)) {
      log->npend = 0;
      return -ENOMEM;
    }
  }
  sum_units(log);
  return 0;
}

/* Read lines from fd into log: the bytes [start, end) with pread when end
 * is not -1, else everything read(2) gives until its end. c counts lines
 * from where the range starts. Returns 0, -errno or -ENOMEM. */
static int read_range(struct mg_rp_log *log, int fd, off_t start, off_t end,
                      struct line_ctx *c) {
  size_t cap = BLOCK, len = 0;
  char *buf = malloc(cap);
  bool skipping = false; /* inside a line longer than MG_RP_MAX_LINE */
  int rc;

  if (buf == NULL)
    return -ENOMEM;
  for (;;) {
    ssize_t got;
    ptrdiff_t used;
    size_t want;

    if (len == cap) {
      /* A whole buffer without a newline: grow it for a long line, up to
       * the ceiling; past it, count the line once and drop its bytes up
       * to its newline. */
      if (cap >= MG_RP_MAX_LINE) {
        c->line++;
        log->lines++;
        malformed(log, c, "line longer than the 64 MiB limit");
        skipping = true;
        len = 0;
      } else {
        char *nb = realloc(buf, cap * 2);
        if (nb == NULL) {
          rc = -ENOMEM;
          goto out;
        }
        buf = nb;
        cap *= 2;
      }
    }
    want = cap - len;
    if (end >= 0) {
      if (start >= end)
        break;
      if ((off_t)want > end - start)
        want = (size_t)(end - start);
      got = pread(fd, buf + len, want, start);
    } else {
      got = read(fd, buf + len, want);
    }
    if (got < 0) {
      if (errno == EINTR)
        continue;
      rc = -errno;
      goto out;
    }
    if (got == 0)
      break;
    start += got;
    log->bytes += (uint64_t)got;
    if (skipping) {
      /* len is 0 here: the bytes read are all of the buffer. */
      char *nl = memchr(buf, '\n', (size_t)got);
      if (nl == NULL)
        continue;
      skipping = false;
      len = (size_t)(buf + got - (nl + 1));
      memmove(buf, nl + 1, len);
    } else {
      len += (size_t)got;
    }
    /* The kept partial line is scanned again for a newline: it is shorter
     * than a block but for rare giant lines. */
    used = lines(log, buf, len, c);
    if (used < 0) {
      rc = -ENOMEM;
      goto out;
    }
    memmove(buf, buf + used, len - (size_t)used);
    len -= (size_t)used;
  }
  if (len > 0 && !skipping) {
    c->line++;
    if (line(log, buf, len, c) || resolve_pending(log)) {
      rc = -ENOMEM;
      goto out;
    }
  }
  rc = 0;
out:
  free(buf);
  return rc;
}

/* ---- feedback ------------------------------------------------------------ */

static inline size_t id_slot(uint64_t hi, uint64_t lo, size_t cap) {
  return (size_t)mix64(hi ^ (lo * UINT64_C(0x9e3779b97f4a7c15))) & (cap - 1);
}

/* Whether feedback line a was given after line b (by ts, then read
 * order). */
static inline bool fb_later(const struct mg_rp_fb *a, const struct mg_rp_fb *b) {
  return a->ts_ms != b->ts_ms ? a->ts_ms > b->ts_ms : a->seq > b->seq;
}

int mg_rp_log_join(struct mg_rp_log *log) {
  const struct mg_rp_fb *fb = log->fb;
  uint32_t *slots = NULL, *next = NULL;
  uint8_t *state = NULL; /* 0 live, 1 superseded, 2 joined */
  size_t n = log->nfb, i, cap = 16, capfbj = 0;
  int rc = 0;

  if (log->joined)
    return 0;
  while (cap < 2 * n)
    cap *= 2;
  slots = malloc(cap * sizeof(*slots));
  next = malloc((n ? n : 1) * sizeof(*next));
  state = calloc(n ? n : 1, 1);
  if (slots == NULL || next == NULL || state == NULL) {
    rc = -ENOMEM;
    goto out;
  }
  memset(slots, 0xff, cap * sizeof(*slots));
  /* One chain of lines per decision id; of the lines for one decision and
   * metric only the latest stays in it. */
  for (i = 0; i < n; i++) {
    size_t j = id_slot(fb[i].hi, fb[i].lo, cap);
    uint32_t *link, k;
    while (slots[j] != UINT32_MAX &&
           (fb[slots[j]].hi != fb[i].hi || fb[slots[j]].lo != fb[i].lo))
      j = (j + 1) & (cap - 1);
    for (link = &slots[j]; (k = *link) != UINT32_MAX; link = &next[k])
      if (fb[k].metric == fb[i].metric)
        break;
    log->fb_superseded += k != UINT32_MAX;
    if (k == UINT32_MAX) {
      next[i] = slots[j];
      slots[j] = (uint32_t)i;
    } else if (fb_later(&fb[i], &fb[k])) {
      next[i] = next[k];
      *link = (uint32_t)i;
      state[k] = 1;
    } else {
      state[i] = 1;
    }
  }
  for (i = 0; i < log->nids && n; i++) {
    const struct mg_rp_id *x = &log->ids[i];
    size_t j = id_slot(x->hi, x->lo, cap);
    struct mg_rp_row *row = NULL;
    uint32_t g;
    while (slots[j] != UINT32_MAX &&
           (fb[slots[j]].hi != x->hi || fb[slots[j]].lo != x->lo))
      j = (j + 1) & (cap - 1);
    if (slots[j] == UINT32_MAX)
      continue;
    if (state[slots[j]] == 2) {
      /* Two records with one id: the first one read keeps the feedback. */
      log->duplicate_ids++;
      continue;
    }
    if (x->flag != MG_RP_NONE && x->row != MG_RP_NONE)
      row = &log->flags[x->flag]->rows[x->row];
    for (g = slots[j]; g != UINT32_MAX; g = next[g]) {
      struct mg_rp_fbj *e;
      state[g] = 2;
      if (row == NULL) {
        log->fb_not_rollout++;
        continue;
      }
      if (grow(&log->fbj, &capfbj, log->nfbj + 1, sizeof(*log->fbj))) {
        rc = -ENOMEM;
        goto out;
      }
      e = &log->fbj[log->nfbj++];
      e->flag = x->flag;
      e->unit = row->unit;
      e->row = x->row;
      e->metric = fb[g].metric;
      e->arm = row->arm;
      e->value = fb[g].value;
      log->fb_matched++;
      if (!(row->bits & MG_RP_FBK)) {
        row->bits |= MG_RP_FBK;
        if (row->unit != MG_RP_NONE)
          log->units[row->unit].fb_rows++;
      }
    }
  }
  for (i = 0; i < n; i++)
    log->fb_orphans += state[i] == 0;
  log->joined = true;
out:
  free(slots);
  free(next);
  free(state);
  return rc;
}

/* ---- parallel reading ----------------------------------------------------- */

/* Files smaller than this are not worth a thread. */
#define PARALLEL_MIN (16 << 20)
#define MAX_THREADS 8

/* One range of a file, parsed by its own thread into its own log. */
struct job {
  struct mg_rp_log log;  /* owned: the partial result */
  int fd;
  off_t start, end;
  struct line_ctx c;     /* c.file borrowed from the main log */
  int rc;
  pthread_t thread;
  bool started;
};

static void *job_run(void *arg) {
  struct job *j = arg;
  j->rc = read_range(&j->log, j->fd, j->start, j->end, &j->c);
  return NULL;
}

/* The offset just past the first newline at or after pos, or size when
 * there is none. */
static int line_start_after(int fd, off_t pos, off_t size, off_t *out) {
  char buf[65536];
  while (pos < size) {
    ssize_t got = pread(fd, buf, sizeof(buf), pos);
    char *nl;
    if (got < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    if (got == 0)
      break;
    nl = memchr(buf, '\n', (size_t)got);
    if (nl) {
      *out = pos + (nl - buf) + 1;
      return 0;
    }
    pos += got;
  }
  *out = size;
  return 0;
}

/* Merge the weight set ws of a partial flag (arms renumbered by am) into
 * f; its index there, or MG_RP_NO_WSET when f tracks the maximum. */
static uint8_t wset_merge(struct mg_rp_flag *f, const struct mg_rp_wset *ws,
                          const int *am) {
  struct mg_rp_wset n;
  uint32_t i, k;

  memset(&n, 0, sizeof(n));
  for (i = 0; i < ws->n; i++) {
    uint8_t arm = (uint8_t)am[ws->arm[i]];
    for (k = n.n; k > 0 && n.arm[k - 1] > arm; k--) {
      n.arm[k] = n.arm[k - 1];
      n.bp[k] = n.bp[k - 1];
    }
    n.arm[k] = arm;
    n.bp[k] = ws->bp[i];
    n.n++;
  }
  for (k = 0; k < f->nwsets; k++)
    if (f->wsets[k].n == n.n && memcmp(f->wsets[k].arm, n.arm, n.n) == 0 &&
        memcmp(f->wsets[k].bp, n.bp, n.n * sizeof(n.bp[0])) == 0)
      break;
  if (k == f->nwsets) {
    if (f->nwsets == MG_RP_MAX_WSETS) {
      f->wsets_untracked += ws->records;
      return MG_RP_NO_WSET;
    }
    f->wsets[f->nwsets++] = n;
    f->wsets[k].records = 0;
    f->wsets[k].first_ts[0] = f->wsets[k].last_ts[0] = '\0';
  }
  f->wsets[k].records += ws->records;
  if (ws->first_ts[0] && (f->wsets[k].first_ts[0] == '\0' ||
                          strcmp(ws->first_ts, f->wsets[k].first_ts) < 0))
    memcpy(f->wsets[k].first_ts, ws->first_ts, sizeof(ws->first_ts));
  if (strcmp(ws->last_ts, f->wsets[k].last_ts) > 0)
    memcpy(f->wsets[k].last_ts, ws->last_ts, sizeof(ws->last_ts));
  return (uint8_t)k;
}

/* Append partial log p (parsed from a later range of the same file, whose
 * first line is number line_offset + 1) to log. */
static int merge(struct mg_rp_log *log, const struct mg_rp_log *p,
                 uint64_t line_offset) {
  uint32_t *um = NULL, **rowmap = NULL, *fm = NULL;
  uint16_t mm[MG_RP_MAX_FB_METRICS];
  uint64_t seq0 = log->fb_lines;
  size_t i, k;
  int rc = 0;

  log->bytes += p->bytes;
  log->lines += p->lines;
  log->blank += p->blank;
  log->records += p->records;
  log->event_lines += p->event_lines;
  log->unflagged += p->unflagged;
  log->malformed += p->malformed;
  for (i = 0; i < p->nbad && log->nbad < MG_RP_MAX_BAD; i++) {
    log->bad[log->nbad] = p->bad[i];
    log->bad[log->nbad].line += line_offset;
    log->nbad++;
  }
  for (i = 0; i < p->nevents; i++)
    if ((rc = event_count(log, mg_str_c(p->events[i].name),
                          mg_str_c(p->events[i].flag), p->events[i].n)) != 0)
      return rc;

  log->fb_lines += p->fb_lines;
  log->fb_metric_overflow += p->fb_metric_overflow;
  log->duplicate_ids += p->duplicate_ids;
  if (names_merge(&log->instances, &p->instances) ||
      names_merge(&log->clients, &p->clients))
    return -ENOMEM;
  um = malloc((p->nunits ? p->nunits : 1) * sizeof(*um));
  rowmap = calloc(p->nflags ? p->nflags : 1, sizeof(*rowmap));
  fm = malloc((p->nflags ? p->nflags : 1) * sizeof(*fm));
  if (um == NULL || rowmap == NULL || fm == NULL) {
    rc = -ENOMEM;
    goto out;
  }
  for (i = 0; i < p->nunits; i++)
    um[i] = MG_RP_NONE;
  for (i = 0; i < p->nflags; i++) {
    const struct mg_rp_flag *pf = p->flags[i];
    struct mg_rp_flag *f = flag_get(log, mg_str_c(pf->name));
    uint8_t wm[MG_RP_MAX_WSETS];
    int am[MG_RP_MAX_ARMS];
    uint32_t a;

    if (f == NULL) {
      rc = -ENOMEM;
      goto out;
    }
    f->base_len = pf->base_len;
    fm[i] = f->index;
    rowmap[i] = malloc((pf->nrows ? pf->nrows : 1) * sizeof(uint32_t));
    if (rowmap[i] == NULL) {
      rc = -ENOMEM;
      goto out;
    }
    for (k = 0; k < MG_RP_NUS; k++)
      f->unit_source[k] += pf->unit_source[k];
    if (names_merge(&f->endpoints, &pf->endpoints)) {
      rc = -ENOMEM;
      goto out;
    }
    for (a = 0; a < pf->narms; a++) {
      am[a] = arm_get(f, mg_str_c(pf->arms[a].name));
      if (am[a] == -ENOMEM) {
        rc = -ENOMEM;
        goto out;
      }
      if (am[a] >= 0) {
        f->arms[am[a]].records += pf->arms[a].records;
        f->arms[am[a]].rollout += pf->arms[a].rollout;
        f->arms[am[a]].off += pf->arms[a].off;
        f->arms[am[a]].no_unit += pf->arms[a].no_unit;
        f->arms[am[a]].tok_cached += pf->arms[a].tok_cached;
        f->arms[am[a]].tok_reasoning += pf->arms[a].tok_reasoning;
        f->arms[am[a]].tok_cache_read += pf->arms[a].tok_cache_read;
        f->arms[am[a]].tok_cache_write += pf->arms[a].tok_cache_write;
      }
    }
    for (k = 0; k < pf->nreasons; k++) {
      const struct mg_rp_reason *r = &pf->reasons[k];
      if (am[r->arm] >= 0 &&
          reason_count(f, (uint8_t)am[r->arm], mg_str_c(r->reason), r->n)) {
        rc = -ENOMEM;
        goto out;
      }
    }
    for (k = 0; k < pf->nwsets; k++) {
      bool ok = true;
      for (a = 0; a < pf->wsets[k].n; a++)
        ok &= am[pf->wsets[k].arm[a]] >= 0;
      wm[k] = ok ? wset_merge(f, &pf->wsets[k], am) : MG_RP_NO_WSET;
    }
    f->wsets_untracked += pf->wsets_untracked;
    f->records += pf->records;
    for (k = 0; k < pf->nrows; k++) {
      struct mg_rp_row row = pf->rows[k];
      rowmap[i][k] = MG_RP_NONE;
      if (am[row.arm] < 0) {
        /* The union of both ranges' variants outgrew a flag. */
        log->records--;
        log->malformed++;
        continue;
      }
      row.arm = (uint8_t)am[row.arm];
      row.wset = row.wset == MG_RP_NO_WSET ? MG_RP_NO_WSET : wm[row.wset];
      if (row.unit != MG_RP_NONE) {
        uint32_t u = row.unit;
        if (um[u] == MG_RP_NONE) {
          um[u] = unit_get(log, p->units[u].hash, f->index, row.arm);
          if (um[u] == MG_RP_NONE) {
            rc = -ENOMEM;
            goto out;
          }
        }
        row.unit = um[u];
      }
      rowmap[i][k] = (uint32_t)f->nrows;
      if (add_row(f, &row)) {
        rc = -ENOMEM;
        goto out;
      }
    }
  }
  /* Decisions' ids, pointing at the merged flags and rows. */
  for (i = 0; i < p->nids; i++) {
    const struct mg_rp_id *x = &p->ids[i];
    uint32_t flag = x->flag == MG_RP_NONE ? MG_RP_NONE : fm[x->flag];
    uint32_t row = x->flag == MG_RP_NONE || x->row == MG_RP_NONE
                       ? MG_RP_NONE
                       : rowmap[x->flag][x->row];
    if ((rc = id_add(log, x->hi, x->lo, flag, row)) != 0)
      goto out;
  }
  /* Feedback, metrics renumbered by name, read order continued. */
  for (k = 0; k < p->nfb_metrics; k++) {
    int mi = fb_metric_get(log, mg_str_c(p->fb_metrics[k].name));
    if (mi == -ENOMEM) {
      rc = -ENOMEM;
      goto out;
    }
    mm[k] = mi < 0 ? UINT16_MAX : (uint16_t)mi;
    if (mi >= 0) {
      log->fb_metrics[mi].lines += p->fb_metrics[k].lines;
      log->fb_metrics[mi].non_boolean |= p->fb_metrics[k].non_boolean;
    } else {
      log->fb_metric_overflow += p->fb_metrics[k].lines;
    }
  }
  for (i = 0; i < p->nfb; i++) {
    struct mg_rp_fb fb = p->fb[i];
    if (mm[fb.metric] == UINT16_MAX)
      continue;
    fb.metric = mm[fb.metric];
    fb.seq += seq0;
    if (grow(&log->fb, &log->capfb, log->nfb + 1, sizeof(*log->fb))) {
      rc = -ENOMEM;
      goto out;
    }
    log->fb[log->nfb++] = fb;
  }
out:
  if (rowmap)
    for (i = 0; i < p->nflags; i++)
      free(rowmap[i]);
  free(rowmap);
  free(fm);
  free(um);
  return rc;
}

/* Cut [0, size) at newlines into up to n ranges, parse them in parallel,
 * merge in order. */
static int read_parallel(struct mg_rp_log *log, int fd, off_t size,
                         unsigned n, struct line_ctx *c) {
  struct job *jobs;
  off_t bounds[MAX_THREADS + 1];
  unsigned i, nj = 0;
  uint64_t offset;
  int rc = 0;

  bounds[0] = 0;
  for (i = 1; i < n; i++) {
    rc = line_start_after(fd, size / n * i, size, &bounds[i]);
    if (rc)
      return rc;
    if (bounds[i] < bounds[i - 1])
      bounds[i] = bounds[i - 1];
  }
  bounds[n] = size;
  jobs = calloc(n, sizeof(*jobs));
  if (jobs == NULL)
    return -ENOMEM;
  /* Ranges 1..n-1 on threads into their own logs; range 0 here, straight
   * into log. */
  for (i = 1; i < n; i++) {
    struct job *j = &jobs[nj++];
    mg_rp_log_init(&j->log);
    j->fd = fd;
    j->start = bounds[i];
    j->end = bounds[i + 1];
    j->c.file = c->file;
    if (pthread_create(&j->thread, NULL, job_run, j) == 0) {
      j->started = true;
    } else {
      /* No thread: parse the range here, after range 0. */
      j->started = false;
    }
  }
  rc = read_range(log, fd, 0, bounds[1], c);
  for (i = 0; i < nj; i++) {
    if (jobs[i].started)
      pthread_join(jobs[i].thread, NULL);
    else
      job_run(&jobs[i]);
  }
  offset = c->line;
  for (i = 0; i < nj; i++) {
    if (rc == 0)
      rc = jobs[i].rc;
    if (rc == 0)
      rc = merge(log, &jobs[i].log, offset);
    offset += jobs[i].c.line;
    mg_rp_log_free(&jobs[i].log);
  }
  c->line = offset;
  free(jobs);
  return rc;
}

int mg_rp_read_fd(struct mg_rp_log *log, int fd, const char *name) {
  struct line_ctx c;
  struct stat st;
  unsigned n = log->threads ? log->threads : 1;
  int rc;

  rc = add_file(log, name, &c);
  if (rc)
    return rc;
  if (n > MAX_THREADS)
    n = MAX_THREADS;
  if (n > 1 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
      st.st_size >= PARALLEL_MIN && lseek(fd, 0, SEEK_CUR) == 0)
    rc = read_parallel(log, fd, st.st_size, n, &c);
  else
    rc = read_range(log, fd, 0, -1, &c);
  /* After a failure, queued rows never get their units. */
  log->npend = 0;
  sum_units(log);
  return rc;
}
