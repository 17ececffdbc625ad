/* log.c - the decision log writer thread. */
#include "decisions/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

/* Above this much queued, the loop wakes the writer at once; below, the
 * writer's own timer picks lines up (no system call per request). */
#define WAKE_BYTES (64u << 10)

struct mg_dlog {
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;         /* the writer waits here */
  /* Guarded by mu. */
  struct mg_buf front;       /* owned: lines the loop queued */
  uint64_t front_lines;
  bool stop;
  bool reopen;
  struct mg_dlog_cfg pending; /* the config to switch to at reopen */
  bool has_pending;
  struct mg_dlog_stats st;
  uint64_t back_lines;       /* lines of the batch being written */
  bool done;                 /* the writer has returned */
  pthread_cond_t done_cv;    /* mg_dlog_close waits here */
  /* The writer's own. */
  struct mg_buf back;        /* owned: lines being written */
  struct mg_dlog_cfg cfg;    /* owned copy in force */
  int fd;
  uint64_t size;             /* bytes in the current file */
  int64_t warned_ms;         /* monotonic ms of the last write-error line */
};

/* ---- config ------------------------------------------------------------------- */

static const char *const keys[] = {"enabled",  "path",      "max_bytes",
                                   "keep",     "buffer_bytes", "flush_ms",
                                   "raw_units", "attrs",    NULL};

void mg_dlog_cfg_parse(struct mg_dlog_cfg *c, const cJSON *obj,
                       struct mg_cfg_errors *e) {
  const char *p = "$.decision_log";
  const cJSON *a;
  memset(c, 0, sizeof(*c));
  if (obj != NULL && !mg_cfg_object(obj, p, keys, e))
    obj = NULL;
  c->enabled = mg_cfg_bool(obj, "enabled", p, true, e);
  c->path = mg_cfg_str(obj, "path", p, "decisions.jsonl", true, e);
  c->max_bytes = (uint64_t)mg_cfg_int(obj, "max_bytes", p, 256 << 20, 4096,
                                      (int64_t)1 << 42, e);
  c->keep = (uint32_t)mg_cfg_int(obj, "keep", p, 5, 0, 1000, e);
  c->buffer_bytes = (uint32_t)mg_cfg_int(obj, "buffer_bytes", p, 8 << 20,
                                         64 << 10, 1 << 30, e);
  c->flush_ms = (uint32_t)mg_cfg_int(obj, "flush_ms", p, 200, 1, 60000, e);
  c->raw_units = mg_cfg_bool(obj, "raw_units", p, false, e);
  a = obj ? cJSON_GetObjectItemCaseSensitive(obj, "attrs") : NULL;
  if (a) {
    const cJSON *it;
    size_t i = 0;
    if (!cJSON_IsArray(a)) {
      mg_cfg_error(e, "$.decision_log.attrs", "must be an array of names");
      return;
    }
    c->attrs = calloc((size_t)cJSON_GetArraySize(a) + 1, sizeof(char *));
    cJSON_ArrayForEach(it, a) {
      char ip[MG_CFG_PATH_MAX];
      mg_cfg_join_idx(ip, "$.decision_log.attrs", i++);
      if (!cJSON_IsString(it) || it->valuestring[0] == '\0') {
        mg_cfg_error(e, ip, "must be a non-empty string");
        continue;
      }
      if (c->attrs)
        c->attrs[c->nattrs++] = strdup(it->valuestring);
    }
  }
}

void mg_dlog_cfg_free(struct mg_dlog_cfg *c) {
  size_t i;
  free(c->path);
  for (i = 0; i < c->nattrs; i++)
    free(c->attrs[i]);
  free(c->attrs);
  memset(c, 0, sizeof(*c));
}

int mg_dlog_cfg_check(const struct mg_dlog_cfg *c, struct mg_cfg_errors *e) {
  const char *p = "$.decision_log.path";
  struct stat sb;
  char dir[4096];
  const char *slash;
  int err = 0;

  if (!c->enabled || c->path == NULL)
    return 0;
  if (stat(c->path, &sb) == 0) {
    if (S_ISDIR(sb.st_mode))
      err = EISDIR;
    else if (!S_ISFIFO(sb.st_mode) && access(c->path, W_OK) != 0)
      err = errno;
  } else if (errno != ENOENT) {
    err = errno;
  } else {
    /* The file is created when the log opens: its directory must exist and
     * take new files. */
    slash = strrchr(c->path, '/');
    if (slash == NULL)
      snprintf(dir, sizeof(dir), ".");
    else if (slash == c->path)
      snprintf(dir, sizeof(dir), "/");
    else
      snprintf(dir, sizeof(dir), "%.*s", (int)(slash - c->path), c->path);
    if (stat(dir, &sb) != 0)
      err = errno;
    else if (!S_ISDIR(sb.st_mode))
      err = ENOTDIR;
    else if (access(dir, W_OK | X_OK) != 0)
      err = errno;
  }
  if (err == 0)
    return 0;
  mg_cfg_error(e, p, "cannot open decision log %s: %s", c->path,
               strerror(err));
  return -err;
}

static int cfg_copy(struct mg_dlog_cfg *dst, const struct mg_dlog_cfg *src) {
  size_t i;
  *dst = *src;
  dst->path = strdup(src->path ? src->path : "decisions.jsonl");
  dst->attrs = NULL;
  dst->nattrs = 0;
  if (dst->path == NULL)
    return -ENOMEM;
  if (src->nattrs) {
    dst->attrs = calloc(src->nattrs, sizeof(char *));
    if (dst->attrs == NULL)
      return -ENOMEM;
    for (i = 0; i < src->nattrs; i++)
      if ((dst->attrs[dst->nattrs] = strdup(src->attrs[i])) != NULL)
        dst->nattrs++;
  }
  return 0;
}

/* ---- the file ------------------------------------------------------------------- */

static int open_file(struct mg_dlog *l) {
  struct stat sb;
  /* O_NOFOLLOW: a symlink planted where the log goes (a world-writable
   * directory, fs.protected_symlinks off) must not make us append to the
   * file it names; open fails with ELOOP ("too many levels of symbolic
   * links"), reported with the path. */
  l->fd = open(l->cfg.path,
               O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (l->fd < 0)
    return -errno;
  l->size = fstat(l->fd, &sb) == 0 ? (uint64_t)sb.st_size : 0;
  return 0;
}

/* path -> path.1 -> path.2 ... path.keep (the oldest is dropped). */
static void rotate(struct mg_dlog *l) {
  char from[4096], to[4096];
  uint32_t k;
  close(l->fd);
  l->fd = -1;
  if (l->cfg.keep == 0) {
    unlink(l->cfg.path);
  } else {
    for (k = l->cfg.keep; k > 1; k--) {
      snprintf(from, sizeof(from), "%s.%u", l->cfg.path, k - 1);
      snprintf(to, sizeof(to), "%s.%u", l->cfg.path, k);
      rename(from, to);
    }
    snprintf(to, sizeof(to), "%s.1", l->cfg.path);
    rename(l->cfg.path, to);
  }
  if (open_file(l) != 0)
    mg_error("decision log: cannot open %s after rotation: %s", l->cfg.path,
             strerror(errno));
  pthread_mutex_lock(&l->mu);
  l->st.rotations++;
  pthread_mutex_unlock(&l->mu);
}

static void count_lines(const char *p, size_t n, uint64_t *lines) {
  const char *q = p, *end = p + n;
  while ((q = memchr(q, '\n', (size_t)(end - q))) != NULL) {
    (*lines)++;
    q++;
  }
}

/* Write the back buffer; lines that cannot be written are counted as
 * dropped, and the next batch tries again (a full disk may recover). A
 * line cut by a failed write is taken back out of the file, so that the
 * file holds whole lines only. */
static void write_back(struct mg_dlog *l) {
  size_t off = 0, len = l->back.len;
  uint64_t lines = 0, lost = 0, start;
  int err = 0;

  if (len == 0)
    return;
  if (l->fd >= 0 && l->cfg.max_bytes && l->size > 0 &&
      l->size + len > l->cfg.max_bytes)
    rotate(l);
  if (l->fd < 0 && open_file(l) != 0)
    err = errno;
  start = l->size;
  while (err == 0 && off < len) {
    ssize_t n = write(l->fd, l->back.data + off, len - off);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      err = errno;
      break;
    }
    off += (size_t)n;
    l->size += (uint64_t)n;
  }
  if (err && off > 0) {
    /* Keep up to the last whole line this batch wrote. */
    const char *nl = NULL, *q;
    for (q = l->back.data; q < l->back.data + off; q++)
      if (*q == '\n')
        nl = q;
    off = nl ? (size_t)(nl - l->back.data) + 1 : 0;
    if (ftruncate(l->fd, (off_t)(start + off)) == 0)
      l->size = start + off;
  }
  count_lines(l->back.data, off, &lines);
  if (off < len)
    count_lines(l->back.data + off, len - off, &lost);
  pthread_mutex_lock(&l->mu);
  l->st.lines += lines;
  l->st.bytes += off;
  if (err) {
    l->st.write_errors++;
    l->st.dropped += lost;
  }
  l->back_lines = 0; /* counted now, one way or the other */
  lost = l->st.dropped;
  pthread_mutex_unlock(&l->mu);
  if (err) {
    /* Said while it happens (a full disk), at most every 10 seconds, not
     * only in the exit summary (issue 10, point 3). */
    struct timespec now;
    int64_t ms;
    clock_gettime(CLOCK_MONOTONIC, &now);
    ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    if (l->warned_ms == 0 || ms - l->warned_ms >= 10000) {
      l->warned_ms = ms;
      mg_warn("decision log: cannot write %s: %s (%llu lines dropped so far)",
              l->cfg.path, strerror(err), (unsigned long long)lost);
    }
  }
  mg_buf_reset(&l->back);
}

static void *writer(void *arg) {
  struct mg_dlog *l = arg;
  for (;;) {
    struct timespec deadline;
    bool stop, reopen;
    struct mg_buf tmp;

    pthread_mutex_lock(&l->mu);
    /* Nothing queued: sleep until the first line of the next batch (an
     * idle gate does not wake every flush_ms). */
    while (!l->stop && !l->reopen && l->front.len == 0)
      pthread_cond_wait(&l->cv, &l->mu);
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_nsec += (long)(l->cfg.flush_ms % 1000) * 1000000L;
    deadline.tv_sec += l->cfg.flush_ms / 1000 + deadline.tv_nsec / 1000000000L;
    deadline.tv_nsec %= 1000000000L;
    while (!l->stop && !l->reopen && l->front.len < WAKE_BYTES) {
      if (pthread_cond_timedwait(&l->cv, &l->mu, &deadline) == ETIMEDOUT)
        break;
    }
    /* Swap: the loop gets the empty buffer, we take its lines. */
    tmp = l->back;
    l->back = l->front;
    l->front = tmp;
    l->front.max = l->back.max;
    l->back_lines = l->front_lines;
    l->front_lines = 0;
    stop = l->stop;
    reopen = l->reopen;
    l->reopen = false;
    if (reopen && l->has_pending) {
      mg_dlog_cfg_free(&l->cfg);
      l->cfg = l->pending;
      l->front.max = l->cfg.buffer_bytes;
      l->has_pending = false;
    }
    pthread_mutex_unlock(&l->mu);

    /* Lines queued before a reopen belong to the old file. */
    write_back(l);
    if (reopen) {
      if (l->fd >= 0)
        close(l->fd);
      if (open_file(l) != 0)
        mg_error("decision log: cannot reopen %s: %s", l->cfg.path,
                 strerror(errno));
    }

    if (stop) {
      /* Stopping: loop until nothing is left (the loop thread no longer
       * writes once it asked us to stop). */
      bool empty;
      pthread_mutex_lock(&l->mu);
      empty = l->front.len == 0;
      pthread_mutex_unlock(&l->mu);
      if (empty)
        break;
    }
  }
  pthread_mutex_lock(&l->mu);
  l->done = true;
  pthread_cond_broadcast(&l->done_cv);
  pthread_mutex_unlock(&l->mu);
  return NULL;
}

struct mg_dlog *mg_dlog_open(const struct mg_dlog_cfg *cfg, char *err,
                             size_t errlen) {
  struct mg_dlog *l = calloc(1, sizeof(*l));
  if (l == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  l->fd = -1;
  if (cfg_copy(&l->cfg, cfg) != 0) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  mg_buf_init(&l->front, cfg->buffer_bytes);
  mg_buf_init(&l->back, cfg->buffer_bytes);
  if (open_file(l) != 0) {
    snprintf(err, errlen, "cannot open decision log %s: %s", cfg->path,
             strerror(errno));
    goto fail;
  }
  pthread_mutex_init(&l->mu, NULL);
  pthread_cond_init(&l->cv, NULL);
  pthread_cond_init(&l->done_cv, NULL);
  if (pthread_create(&l->thread, NULL, writer, l) != 0) {
    snprintf(err, errlen, "cannot start the decision log writer");
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    pthread_cond_destroy(&l->done_cv);
    close(l->fd);
    goto fail;
  }
  return l;
fail:
  mg_dlog_cfg_free(&l->cfg);
  mg_buf_free(&l->front);
  mg_buf_free(&l->back);
  free(l);
  return NULL;
}

int mg_dlog_write(struct mg_dlog *l, const char *line, size_t len) {
  int rc;
  bool wake;
  pthread_mutex_lock(&l->mu);
  /* The line and its newline together, or nothing: never half a line. */
  rc = mg_buf_reserve(&l->front, len + 1);
  if (rc == 0) {
    memcpy(l->front.data + l->front.len, line, len);
    l->front.len += len;
    l->front.data[l->front.len++] = '\n';
    l->front.data[l->front.len] = '\0';
    l->front_lines++;
  } else {
    l->st.dropped++;
  }
  /* The first line of a batch starts the writer's flush_ms wait; a full
   * batch cuts it short. */
  wake = l->front.len >= WAKE_BYTES || (rc == 0 && l->front.len == len + 1);
  pthread_mutex_unlock(&l->mu);
  if (wake)
    pthread_cond_signal(&l->cv);
  return rc == 0 ? 0 : -ENOSPC;
}

void mg_dlog_drop(struct mg_dlog *l) {
  pthread_mutex_lock(&l->mu);
  l->st.dropped++;
  pthread_mutex_unlock(&l->mu);
}

void mg_dlog_reopen(struct mg_dlog *l, const struct mg_dlog_cfg *cfg) {
  pthread_mutex_lock(&l->mu);
  if (cfg) {
    if (l->has_pending)
      mg_dlog_cfg_free(&l->pending);
    l->has_pending = cfg_copy(&l->pending, cfg) == 0;
  }
  l->reopen = true;
  pthread_mutex_unlock(&l->mu);
  pthread_cond_signal(&l->cv);
}

void mg_dlog_stats(struct mg_dlog *l, struct mg_dlog_stats *out) {
  pthread_mutex_lock(&l->mu);
  *out = l->st;
  pthread_mutex_unlock(&l->mu);
}

bool mg_dlog_close_within(struct mg_dlog *l, int64_t ms,
                          struct mg_dlog_stats *final) {
  struct timespec deadline;
  if (l == NULL)
    return true;
  clock_gettime(CLOCK_REALTIME, &deadline);
  if (ms >= 0) {
    deadline.tv_sec += (time_t)(ms / 1000);
    deadline.tv_nsec += (long)(ms % 1000) * 1000000L;
    deadline.tv_sec += deadline.tv_nsec / 1000000000L;
    deadline.tv_nsec %= 1000000000L;
  }
  pthread_mutex_lock(&l->mu);
  l->stop = true;
  pthread_cond_signal(&l->cv);
  while (!l->done) {
    if (ms < 0) {
      pthread_cond_wait(&l->done_cv, &l->mu);
    } else if (pthread_cond_timedwait(&l->done_cv, &l->mu, &deadline) ==
                   ETIMEDOUT &&
               !l->done) {
      /* The sink does not take the lines (a FIFO nobody reads, a hung
       * mount): the writer is stuck in write() or open(), and nothing can
       * take it out. Whatever it holds and whatever is queued is counted as
       * dropped, and the writer and its buffers are left to the process's
       * exit: freeing them under a thread that may wake would be worse. */
      l->st.dropped += l->front_lines + l->back_lines;
      l->front_lines = l->back_lines = 0;
      if (final)
        *final = l->st;
      pthread_mutex_unlock(&l->mu);
      pthread_detach(l->thread);
      return false;
    }
  }
  pthread_mutex_unlock(&l->mu);
  pthread_join(l->thread, NULL);
  if (l->fd >= 0) {
    fsync(l->fd);
    close(l->fd);
  }
  if (final)
    *final = l->st;
  if (l->has_pending)
    mg_dlog_cfg_free(&l->pending);
  mg_dlog_cfg_free(&l->cfg);
  mg_buf_free(&l->front);
  mg_buf_free(&l->back);
  pthread_mutex_destroy(&l->mu);
  pthread_cond_destroy(&l->cv);
  pthread_cond_destroy(&l->done_cv);
  free(l);
  return true;
}

void mg_dlog_close(struct mg_dlog *l, struct mg_dlog_stats *final) {
  (void)mg_dlog_close_within(l, -1, final);
}
