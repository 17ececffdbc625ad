/* log.h - the decision log file: written off the request path by a thread
 * of its own (DESIGN.md, "The decision log").
 *
 * The loop appends lines to a bounded front buffer under a mutex (no I/O,
 * no allocation once warm); the writer thread swaps it with its back
 * buffer and writes that in one go. A slow or full disk therefore never
 * blocks or fails a request: when the front buffer is full, lines are
 * dropped and counted. The file is rotated by size (path -> path.1 ->
 * path.2 ...) and reopened on demand (SIGUSR1, for external log rotation);
 * closing flushes every line queued. */
#ifndef MG_DLOG_H
#define MG_DLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/buf.h"
#include "common/cfg.h"

struct mg_dlog_cfg {
  bool enabled;
  char *path;            /* owned */
  uint64_t max_bytes;    /* rotate when the file would grow past this */
  uint32_t keep;         /* rotated files kept: path.1 .. path.keep */
  uint32_t buffer_bytes; /* lines queued before new ones are dropped */
  uint32_t flush_ms;     /* the writer wakes at least this often */
  bool raw_units;        /* log unit ids as they are, not hashed */
  char **attrs;          /* owned: attribute names to log */
  size_t nattrs;
};

/* Parse the "decision_log" section (may be NULL: the defaults). */
void mg_dlog_cfg_parse(struct mg_dlog_cfg *c, const cJSON *obj,
                       struct mg_cfg_errors *e);
void mg_dlog_cfg_free(struct mg_dlog_cfg *c);
/* Can the log be opened where c says (the path is not a directory, its
 * directory exists and is writable)? Creates nothing. 0, or a negative
 * errno with the error added to e. `check`, `serve` and a reload all ask,
 * so that they judge a config the same way. */
int mg_dlog_cfg_check(const struct mg_dlog_cfg *c, struct mg_cfg_errors *e);

struct mg_dlog_stats {
  uint64_t lines;        /* written to the file */
  uint64_t dropped;      /* lost: buffer full or write errors */
  uint64_t bytes;
  uint64_t write_errors;
  uint64_t rotations;
};

struct mg_dlog;

/* Open the file and start the writer. NULL with a message in err. */
struct mg_dlog *mg_dlog_open(const struct mg_dlog_cfg *cfg, char *err,
                             size_t errlen);
/* Queue one line (the log adds the newline). 0, or -ENOSPC when the line
 * was dropped. Never blocks on I/O. */
int mg_dlog_write(struct mg_dlog *l, const char *line, size_t len);
/* Count one line as dropped that never reached mg_dlog_write (it could not
 * be formatted): a record is never lost uncounted. */
void mg_dlog_drop(struct mg_dlog *l);
/* Reopen the file at the next write (SIGUSR1); with a new config (reload),
 * the new path and limits apply from then on. */
void mg_dlog_reopen(struct mg_dlog *l, const struct mg_dlog_cfg *cfg);
void mg_dlog_stats(struct mg_dlog *l, struct mg_dlog_stats *out);
/* Write everything queued, stop the writer, close the file; the final
 * counts go to final (may be NULL). */
void mg_dlog_close(struct mg_dlog *l, struct mg_dlog_stats *final);
/* The same, waiting at most ms (< 0: for ever). When the sink has not
 * taken every line by then, the lines not written are counted as dropped
 * in final, the writer thread is left blocked (l must not be used again)
 * and false is returned. */
bool mg_dlog_close_within(struct mg_dlog *l, int64_t ms,
                          struct mg_dlog_stats *final);

#endif
