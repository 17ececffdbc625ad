/* reader.h - streaming decision logs (src/decisions/record.h) into the
 * compact per-flag aggregates `modelgate report` analyses.
 *
 * Files are read in large blocks and split at newlines in place; every line
 * is scanned by one reused mg_json_doc and never copied or allocated for.
 * What the analysis needs is kept per flag:
 *
 *   - arms: one per variant seen (served, or named in a "weights" object),
 *     with record counts by reason;
 *   - rows: one 28-byte struct per `rollout` record (the randomized ones:
 *     DESIGN.md, "Flags"), in log order, for quantiles and the input-axis
 *     breakdown;
 *   - units: one aggregate per (flag, arm, unit) in a hash map keyed by the
 *     unit string's hash, so per-unit statistics never revisit the rows;
 *   - weight sets: the distinct "weights" objects of rollout records, with
 *     how many records carried each and when.
 *
 * A record without a unit (unit null: unit_kind "request") is its own unit:
 * its row carries MG_RP_NONE and it gets no aggregate.
 *
 * Speed. A line costs one JSON scan (the larger part) and a probe of the
 * unit map. Probes miss the cache, so they are not made line by line:
 * each block of lines queues its rows, then resolves them in one loop that
 * prefetches the slot of the row a few places ahead; rows are added to
 * their units once a read call ends, in one pass whose misses overlap. A large regular file is cut
 * at newlines into log->threads ranges, each parsed by its own thread into
 * its own log, and the partial logs are merged in file order (so line
 * numbers and examples read as if one thread had done it all).
 *
 * A line that is not JSON, not an object, or a record whose fields have the
 * wrong types is counted as malformed and skipped, with the first few kept
 * as examples (file, line number, why). Blank lines are ignored. Lines that
 * hold an "event" key are counted by event name and flag. */
#ifndef MG_REPORT_READER_H
#define MG_REPORT_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/json.h"
#include "common/map.h"

#define MG_RP_NONE UINT32_MAX
#define MG_RP_MAX_ARMS 64   /* variants per flag (the proxy allows 16) */
#define MG_RP_MAX_WSETS 32  /* distinct weight sets tracked per flag */
#define MG_RP_NO_WSET 255   /* a row without (tracked) weights */
#define MG_RP_MAX_BAD 8     /* malformed lines kept as examples */
#define MG_RP_MAX_LINE (64u << 20) /* longer lines are malformed */

/* mg_rp_row.bits */
enum {
  MG_RP_ERR = 1,  /* "error": the client saw an error */
  MG_RP_FB = 2,   /* tier fallback/cache/traditional, or a fallback_reason */
  MG_RP_LC = 4,   /* fallback_reason or an attempt outcome "low_confidence" */
  MG_RP_CONF = 8, /* "confidence" is a number */
  MG_RP_TOK = 16, /* "tokens" is an object */
  MG_RP_COST = 32, /* "cost" is a number */
  MG_RP_FBK = 64, /* the decision has feedback (set by mg_rp_log_join) */
};

#define MG_RP_MAX_NAMES 64   /* distinct instances, clients, endpoints kept */
#define MG_RP_MAX_FB_METRICS 64

/* unit_source values, counted per flag. */
enum {
  MG_RP_US_SAFETY,   /* "safety_identifier" */
  MG_RP_US_USER,     /* "user" */
  MG_RP_US_HEADER,   /* "header" */
  MG_RP_US_CLIENT,   /* "client" */
  MG_RP_US_NONE,     /* null: no unit */
  MG_RP_US_OTHER,    /* anything else (attributes, request units) */
  MG_RP_US_ABSENT,   /* records of a writer without the field */
  MG_RP_NUS
};
extern const char *const mg_rp_unit_sources[MG_RP_NUS];

/* Distinct strings with counts (instances, clients, endpoints), the first
 * MG_RP_MAX_NAMES of them; later ones are counted in other. */
struct mg_rp_names {
  char *name[MG_RP_MAX_NAMES];   /* owned */
  uint64_t n[MG_RP_MAX_NAMES];
  uint32_t count;
  uint64_t other;
};

/* A decision's id (32 hex digits as two numbers) and where its record is. */
struct mg_rp_id {
  uint64_t hi, lo;
  uint32_t flag;                 /* index into log->flags, or MG_RP_NONE */
  uint32_t row;                  /* index into the flag's rows (rollout
                                  * records), or MG_RP_NONE */
};

/* One feedback line. */
struct mg_rp_fb {
  uint64_t hi, lo;               /* the decision's id */
  int64_t ts_ms;                 /* its "ts" (0 when absent) */
  uint64_t seq;                  /* read order, the tie-breaker */
  float value;
  uint16_t metric;               /* index into log->fb_metrics */
};

/* A feedback metric as the lines name it. */
struct mg_rp_fb_metric {
  char *name;                    /* owned */
  uint64_t lines;
  bool non_boolean;              /* some value was a number, not a boolean */
};

/* One feedback value joined to a rollout decision (mg_rp_log_join). */
struct mg_rp_fbj {
  uint32_t flag;
  uint32_t unit;                 /* index into log->units, or MG_RP_NONE
                                  * for a request unit (then row says who) */
  uint32_t row;
  uint16_t metric;
  uint8_t arm;
  float value;
};

/* One rollout record. */
struct mg_rp_row {
  uint32_t unit;           /* index into log->units, or MG_RP_NONE */
  uint32_t chars;          /* input.chars (saturated) */
  float ms;                /* "ms" */
  float confidence;        /* valid with MG_RP_CONF */
  uint32_t tok_prompt;     /* valid with MG_RP_TOK (saturated) */
  uint32_t tok_completion;
  float cost;              /* USD, valid with MG_RP_COST */
  uint8_t arm;             /* index into the flag's arms */
  uint8_t tools;           /* input.tools (saturated at 255) */
  uint8_t bits;            /* MG_RP_* */
  uint8_t wset;            /* index into the flag's wsets, or MG_RP_NO_WSET */
};

/* The rollout records of one unit in one arm of one flag, summed. */
struct mg_rp_unit {
  uint64_t hash;           /* XXH3 of the logged unit string */
  uint32_t flag;           /* index into log->flags */
  uint32_t requests;
  uint32_t errors, fallbacks, lowconf, conf_n, tok_n;
  uint32_t cost_n;         /* records with a cost */
  uint32_t ok_cost_n;      /* of them, answers without an error */
  uint32_t fb_rows;        /* decisions with feedback (mg_rp_log_join) */
  uint32_t wsets;          /* bit i: a record carried weight set i (< 32) */
  uint8_t arm;             /* index into the flag's arms */
  double conf_sum, ms_sum, cost_sum;
  uint64_t tok_prompt, tok_completion;
};

struct mg_rp_arm {
  char *name;              /* owned */
  uint64_t records;        /* every reason */
  uint64_t rollout;        /* reason "rollout" */
  uint64_t off;            /* killed, window, blocked, default, no_unit:
                            * the records that name the flag's off_variant */
  uint64_t no_unit;        /* reason "no_unit" */
  /* rollout records' token details (absent or null members count 0) */
  uint64_t tok_cached, tok_reasoning, tok_cache_read, tok_cache_write;
};

/* Records of one arm with one reason. */
struct mg_rp_reason {
  char *reason;            /* owned */
  uint8_t arm;
  uint64_t n;
};

/* One distinct "weights" object. */
struct mg_rp_wset {
  uint32_t n;                    /* variants in it */
  uint8_t arm[MG_RP_MAX_ARMS];   /* sorted by arm index */
  uint32_t bp[MG_RP_MAX_ARMS];   /* basis points: percent x 100 */
  uint64_t records;              /* rollout records that carried it */
  char first_ts[40], last_ts[40]; /* earliest and latest "ts" ("" if none) */
};

struct mg_rp_flag {
  char *name;                    /* owned; also the key in log->by_name */
  size_t base_len;               /* the flag's own name: name[0..base_len);
                                  * the rest names a section ("--by
                                  * endpoint": "chat [responses]") */
  uint32_t index;                /* position in log->flags */
  struct mg_rp_arm arms[MG_RP_MAX_ARMS];
  uint32_t narms;
  struct mg_rp_row *rows;        /* owned */
  size_t nrows, caprows;
  size_t summed;                 /* rows already added to their units */
  struct mg_rp_reason *reasons;  /* owned */
  size_t nreasons, capreasons;
  struct mg_rp_wset *wsets;      /* owned: MG_RP_MAX_WSETS slots */
  uint32_t nwsets;
  uint64_t wsets_untracked;      /* records whose weight set came after
                                  * the first MG_RP_MAX_WSETS */
  uint64_t records;              /* every reason */
  uint64_t unit_source[MG_RP_NUS]; /* records by unit_source */
  struct mg_rp_names endpoints;  /* rollout records by endpoint */
  char *last_weights;            /* owned: raw bytes of the last "weights"
                                  * object, a cache for the common case */
  size_t last_weights_len, last_weights_cap;
  uint8_t last_wset;
};

struct mg_rp_event {
  char *name;                    /* owned */
  char *flag;                    /* owned; "" when the line names none */
  uint64_t n;
};

struct mg_rp_bad {
  const char *file;              /* borrowed from log->files */
  uint64_t line;
  const char *why;               /* static text */
};

/* One slot of the unit map. It holds the whole key, so a probe settles
 * without touching the aggregate (another cache miss). */
struct mg_rp_slot {
  uint64_t hash;                 /* the unit's hash */
  uint32_t flag_arm;             /* flag index << 8 | arm */
  uint32_t unit;                 /* index into units; MG_RP_NONE: empty */
};

/* A row waiting for its unit's index (resolved in batches). */
struct mg_rp_pending {
  uint64_t hash;
  uint32_t flag;
  uint32_t arm;
  size_t row;                    /* index into the flag's rows */
};

struct mg_rp_log {
  struct mg_rp_flag **flags;     /* owned, each owned */
  size_t nflags, capflags;
  struct mg_map by_name;         /* flag name -> struct mg_rp_flag *;
                                  * keys borrowed from the flags */
  struct mg_rp_unit *units;      /* owned */
  size_t nunits, capunits;
  struct mg_rp_slot *slots;      /* owned: open addressing, power of two */
  size_t capslots;
  struct mg_rp_pending *pend;    /* owned: rows of the current block */
  size_t npend, cappend;
  struct mg_rp_event *events;    /* owned */
  size_t nevents, capevents;
  char **files;                  /* owned: the names read, in order */
  size_t nfiles;
  uint64_t bytes, lines, blank, records, event_lines, unflagged, malformed;
  struct mg_rp_bad bad[MG_RP_MAX_BAD];
  size_t nbad;
  /* decisions' ids and feedback (joined by mg_rp_log_join) */
  struct mg_rp_id *ids;          /* owned */
  size_t nids, capids;
  struct mg_rp_fb *fb;           /* owned */
  size_t nfb, capfb;
  struct mg_rp_fb_metric fb_metrics[MG_RP_MAX_FB_METRICS];
  uint32_t nfb_metrics;
  uint64_t fb_lines, fb_metric_overflow;
  struct mg_rp_fbj *fbj;         /* owned: after mg_rp_log_join */
  size_t nfbj;
  uint64_t fb_matched;           /* lines joined to a rollout decision */
  uint64_t fb_not_rollout;       /* joined to a decision that was not
                                  * randomized (or of no flag) */
  uint64_t fb_orphans;           /* no decision with that id in the logs */
  uint64_t fb_superseded;        /* a later line for the same decision and
                                  * metric replaced it */
  uint64_t duplicate_ids;        /* records whose id an earlier one had */
  struct mg_rp_names instances;  /* every line's "instance" */
  struct mg_rp_names clients;    /* records' and feedback's "client" */
  bool by_endpoint;              /* --by endpoint: flags split into
                                  * "flag [endpoint]"; set before reading */
  bool joined;
  struct mg_json_doc doc;        /* reused for every line */
  struct mg_buf scratch;         /* unescaped strings */
  unsigned threads;              /* parsers for a large regular file; set
                                  * before reading (mg_rp_log_init: 1) */
};

void mg_rp_log_init(struct mg_rp_log *log);
void mg_rp_log_free(struct mg_rp_log *log);

/* Read one log from fd to its end; name labels it in messages and examples.
 * A regular file is read as it was when this call began (bytes appended
 * later are not). Returns 0, -errno on a read error, or -ENOMEM. Malformed
 * lines are not errors. */
int mg_rp_read_fd(struct mg_rp_log *log, int fd, const char *name)
    MG_WARN_UNUSED;

/* Feed bytes that hold whole lines (a final line may lack its newline):
 * for tests and for callers that have the log in memory. */
int mg_rp_read_mem(struct mg_rp_log *log, const char *p, size_t n,
                   const char *name) MG_WARN_UNUSED;

/* Join every feedback line to its decision by id, once all logs are read
 * (feedback may come before or after its decision, in any file): the
 * latest line (by ts, then read order) for one decision and metric
 * counts, earlier ones are superseded; lines whose decision is a rollout
 * record become log->fbj entries and mark the row MG_RP_FBK and its unit's
 * fb_rows; the others are counted. Idempotent. Returns 0 or -ENOMEM. */
int mg_rp_log_join(struct mg_rp_log *log) MG_WARN_UNUSED;

/* The flag called name, or NULL. */
struct mg_rp_flag *mg_rp_log_flag(const struct mg_rp_log *log,
                                  const char *name);

#endif
