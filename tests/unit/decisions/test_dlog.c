/* test_dlog.c - the decision log writer (src/decisions/log.c) on real files
 * in a fresh mkdtemp directory: lines reach the file whole and in order,
 * the writer batches on its timer and wakes early for a large backlog,
 * rotation by size (keep, keep 0, no line split across files), reopen after
 * the file was renamed away (SIGUSR1) or with a new config (reload), a full
 * buffer drops and counts (a writer stuck on a pipe nobody reads: the
 * caller never blocks), a file that cannot be opened or written drops and
 * counts and recovers, concurrent writers, and the config section with its
 * JSON-path errors.
 *
 * A full disk is simulated with RLIMIT_FSIZE (a per-process file size
 * limit, no root needed): writes past it fail with EFBIG the way writes to
 * a full disk fail with ENOSPC, including the short write at the edge.
 * A small tmpfs would need root (mount), so it is not used. */
#define _DEFAULT_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/cfg.h"
#include "common/json.h"
#include "decisions/log.h"

/* Timing bounds: the sanitizer build is slower. */
#ifdef MG_SANITIZE
#define SLOW 4
#else
#define SLOW 1
#endif

/* ---- helpers ------------------------------------------------------------- */

struct world {
  char dir[256];
  char path[320];
};

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static int rm_rf(const char *path) {
  struct stat sb;
  if (lstat(path, &sb) != 0)
    return 0;
  if (S_ISDIR(sb.st_mode)) {
    DIR *d = opendir(path);
    struct dirent *de;
    if (d == NULL)
      return -1;
    while ((de = readdir(d)) != NULL) {
      char sub[1024];
      if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
        continue;
      snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
      rm_rf(sub);
    }
    closedir(d);
    chmod(path, 0700);
    return rmdir(path);
  }
  return unlink(path);
}

static int setup(void **state) {
  struct world *w = calloc(1, sizeof(*w));
  const char *tmp = getenv("TMPDIR");
  if (w == NULL)
    return -1;
  snprintf(w->dir, sizeof(w->dir), "%s/mg-dlog-XXXXXX",
           tmp && *tmp ? tmp : "/tmp");
  if (mkdtemp(w->dir) == NULL) {
    free(w);
    return -1;
  }
  snprintf(w->path, sizeof(w->path), "%s/decisions.jsonl", w->dir);
  *state = w;
  return 0;
}

static int teardown(void **state) {
  struct world *w = *state;
  if (getenv("MG_KEEP_TMP") == NULL)
    rm_rf(w->dir);
  free(w);
  return 0;
}

/* A config with the defaults of the section, then the given values. */
static void cfg_init(struct mg_dlog_cfg *c, const char *path,
                     uint64_t max_bytes, uint32_t keep, uint32_t buffer_bytes,
                     uint32_t flush_ms) {
  struct mg_cfg_errors e;
  mg_cfg_errors_init(&e);
  mg_dlog_cfg_parse(c, NULL, &e);
  assert_int_equal(e.n, 0);
  mg_cfg_errors_free(&e);
  free(c->path);
  c->path = strdup(path);
  assert_non_null(c->path);
  c->max_bytes = max_bytes;
  c->keep = keep;
  c->buffer_bytes = buffer_bytes;
  c->flush_ms = flush_ms;
}

static struct mg_dlog *open_log(const struct mg_dlog_cfg *c) {
  char err[512] = "";
  struct mg_dlog *l = mg_dlog_open(c, err, sizeof(err));
  if (l == NULL)
    fail_msg("mg_dlog_open(%s): %s", c->path, err);
  return l;
}

/* Line number n padded to len bytes (without the newline):
 * {"n":42,"pad":"xxxx..."} */
static size_t make_line(char *out, size_t cap, unsigned n, size_t len) {
  int k = snprintf(out, cap, "{\"n\":%u,\"pad\":\"", n);
  size_t i = (size_t)k;
  assert_true(len >= i + 2 && len < cap);
  while (i < len - 2)
    out[i++] = 'x';
  out[i++] = '"';
  out[i++] = '}';
  out[i] = '\0';
  return i;
}

static void write_line(struct mg_dlog *l, unsigned n, size_t len) {
  char buf[70000];
  size_t k = make_line(buf, sizeof(buf), n, len);
  assert_int_equal(mg_dlog_write(l, buf, k), 0);
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *s;
  long n;
  if (f == NULL)
    return NULL;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  s = malloc((size_t)n + 1);
  assert_non_null(s);
  assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
  s[n] = '\0';
  fclose(f);
  *len = (size_t)n;
  return s;
}

static bool exists(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0;
}

static off_t file_size(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 ? sb.st_size : -1;
}

/* The numbers of a file's lines, in order, into ns (at most cap); every
 * line must be a whole JSON object {"n":...}, and the file must end with a
 * newline. Returns the count. */
static size_t read_numbers(const char *path, unsigned *ns, size_t cap) {
  size_t len, count = 0;
  char *s = slurp(path, &len), *p, *end;
  struct mg_json_doc d;
  if (s == NULL)
    fail_msg("cannot read %s", path);
  mg_json_init(&d, 1000);
  if (len && s[len - 1] != '\n')
    fail_msg("%s ends with a partial line: ...%s", path,
             s + (len > 80 ? len - 80 : 0));
  for (p = s; p < s + len; p = end + 1) {
    uint32_t v;
    int64_t n;
    end = memchr(p, '\n', (size_t)(s + len - p));
    assert_non_null(end);
    if (mg_json_parse(&d, p, (size_t)(end - p), NULL) != 0 ||
        (v = mg_json_getc(&d, 0, "n")) == MG_JSON_NOTFOUND ||
        mg_json_int(&d, v, &n) != 0)
      fail_msg("%s: line %zu is not a whole record: %.*s", path, count + 1,
               (int)(end - p > 200 ? 200 : end - p), p);
    if (count < cap)
      ns[count] = (unsigned)n;
    count++;
  }
  mg_json_free(&d);
  free(s);
  return count;
}

static struct mg_dlog_stats stats(struct mg_dlog *l) {
  struct mg_dlog_stats st;
  mg_dlog_stats(l, &st);
  return st;
}

/* Wait (bounded) until the writer has dealt with `want` lines: written or
 * dropped. */
static void wait_handled(struct mg_dlog *l, uint64_t want, int timeout_ms) {
  double deadline = now_ms() + timeout_ms * SLOW;
  struct mg_dlog_stats st;
  for (;;) {
    st = stats(l);
    if (st.lines + st.dropped >= want)
      return;
    if (now_ms() > deadline)
      fail_msg("the writer handled %llu lines of %llu in %d ms",
               (unsigned long long)(st.lines + st.dropped),
               (unsigned long long)want, timeout_ms * SLOW);
    sleep_ms(1);
  }
}

/* Make the writer take what is queued now, as one batch, and wait until it
 * has: a reopen (at the same path) wakes the writer at once. With a long
 * flush interval this gives batches of exactly the lines queued since the
 * last call, whatever the scheduler does. */
static void flush_now(struct mg_dlog *l, uint64_t want) {
  mg_dlog_reopen(l, NULL);
  wait_handled(l, want, 2000);
}

/* ---- order and flushing ---------------------------------------------------- */

/* Lines reach the file whole, in order; closing writes every line queued;
 * the counts match the file. */
static void test_order_and_close_flush(void **state) {
  struct world *w = *state;
  struct mg_dlog_cfg c;
  struct mg_dlog *l;
  struct mg_dlog_stats st;
  static unsigned ns[5000];
  unsigned i;

  /* A long flush interval: nothing but close() makes the writer write. */
  cfg_init(&c, w->path, 1ull << 30, 5, 8u << 20, 60000);
  l = open_log(&c);
  assert_true(exists(w->path)); /* opened (created) at once */
  for (i = 0; i < 5000; i++)
    write_line(l, i, 40 + i % 50);
  mg_dlog_close(l, &st);
  assert_int_equal(st.lines, 5000);
  assert_int_equal(st.dropped, 0);
  assert_int_equal(st.write_errors, 0);
  assert_int_equal(st.rotations, 0);
  assert_int_equal(st.bytes, (uint64_t)file_size(w->path));
  assert_int_equal(read_numbers(w->path, ns, 5000), 5000);
  for (i = 0; i < 5000; i++)
    assert_int_equal(ns[i], i);
  mg_dlog_cfg_free(&c);

  /* The file is appended to, never truncated: a restart adds lines. */
  cfg_init(&c, w->path, 1ull << 30, 5, 8u << 20, 60000);
  l = open_log(&c);
  write_line(l, 5000, 40);
  mg_dlog_close(l, NULL);
  assert_int_equal(read_numbers(w->path, ns, 5000), 5001);
  mg_dlog_cfg_free(&c);

  /* Closing nothing is harmless. */
  mg_dlog_close(NULL, NULL);
}

/* Many small lines are written in batches: with a long flush interval and
 * less than the wake-up backlog queued, nothing reaches the file until the
 * timer or close (no system call per line); with a short interval, lines
 * reach the file without close; a backlog of 64 KiB or more wakes the
 * writer at once. */
static void test_batching(void **state) {
  struct world *w = *state;
  struct mg_dlog_cfg c;
  struct mg_dlog *l;
  unsigned i;

  cfg_init(&c, w->path, 1ull << 30, 5, 8u << 20, 60000);
  l = open_log(&c);
  for (i = 0; i < 500; i++)
    write_line(l, i, 60); /* 30 KB: under the wake-up backlog */
  sleep_ms(300);
  assert_int_equal(file_size(w->path), 0);
  assert_int_equal(stats(l).lines, 0);
  /* Past 64 KiB queued: the writer wakes without waiting for its timer. */
  for (; i < 1200; i++)
    write_line(l, i, 100);
  wait_handled(l, 1, 3000);
  assert_true(stats(l).lines > 0);
  mg_dlog_close(l, NULL);
  /* Whatever was written went in whole lines, all of them at close. */
  assert_int_equal(read_numbers(w->path, NULL, 0), 1200);
  mg_dlog_cfg_free(&c);

  /* A short flush interval: lines reach the file on the writer's timer. */
  unlink(w->path);
  cfg_init(&c, w->path, 1ull << 30, 5, 8u << 20, 20);
  l = open_log(&c);
  write_line(l, 0, 50);
  write_line(l, 1, 50);
  wait_handled(l, 2, 2000);
  assert_int_equal(file_size(w->path), 102);
  assert_int_equal(stats(l).bytes, 102);
  mg_dlog_close(l, NULL);
  mg_dlog_cfg_free(&c);
}

/* ---- rotation -------------------------------------------------------------- */

static void rotated(const struct world *w, unsigned k, char *out, size_t n) {
  snprintf(out, n, "%s.%u", w->path, k);
}

/* max_bytes 4096, keep 2, batches of ten 100-byte lines (1000 bytes): a
 * file takes four batches (4000 bytes; a fifth would pass 4096), so 200
 * lines make five files; the two newest rotated ones are kept, the oldest
 * are dropped; no line is split across files; the lines of the files kept
 * are consecutive and end with the last one written. */
static void test_rotation_keep(void **state) {
  struct world *w = *state;
  struct mg_dlog_cfg c;
  struct mg_dlog *l;
  struct mg_dlog_stats st;
  char p1[400], p2[400], p3[400];
  static unsigned a[100], b[100], cur[100];
  size_t na, nb, nc, i;
  unsigned n = 0, batch;

  rotated(w, 1, p1, sizeof(p1));
  rotated(w, 2, p2, sizeof(p2));
  rotated(w, 3, p3, sizeof(p3));
  cfg_init(&c, w->path, 4096, 2, 8u << 20, 60000);
  l = open_log(&c);
  for (batch = 0; batch < 20; batch++) {
    for (i = 0; i < 10; i++)
      write_line(l, n++, 99);
    flush_now(l, n);
  }
  st = stats(l);
  mg_dlog_close(l, &st);
  assert_int_equal(st.lines, 200);
  assert_int_equal(st.dropped, 0);
  assert_int_equal(st.write_errors, 0);

  assert_true(exists(w->path));
  assert_true(exists(p1));
  assert_true(exists(p2));
  assert_false(exists(p3)); /* beyond keep */
  nc = read_numbers(w->path, cur, 100);
  na = read_numbers(p1, a, 100);
  nb = read_numbers(p2, b, 100);
  /* No file passes max_bytes (each batch is far smaller than it). */
  assert_true(file_size(w->path) <= 4096);
  assert_true(file_size(p1) <= 4096);
  assert_true(file_size(p2) <= 4096);
  assert_true(nc > 0 && na > 0 && nb > 0);
  /* Oldest to newest: p2, p1, path; consecutive and ending at 199. */
  for (i = 1; i < nb; i++)
    assert_int_equal(b[i], b[i - 1] + 1);
  assert_int_equal(a[0], b[nb - 1] + 1);
  for (i = 1; i < na; i++)
    assert_int_equal(a[i], a[i - 1] + 1);
  assert_int_equal(cur[0], a[na - 1] + 1);
  for (i = 1; i < nc; i++)
    assert_int_equal(cur[i], cur[i - 1] + 1);
  assert_int_equal(cur[nc - 1], 199);
  /* A file is never filled past max_bytes: 4 batches each, so the two
   * rotated files hold 40 lines each. */
  assert_int_equal(na, 40);
  assert_int_equal(nb, 40);
  assert_int_equal(st.rotations, 4);
  /* Every line written is accounted for: kept ones plus the 80 dropped
   * with the oldest files. */
  assert_int_equal(nc + na + nb + 80, 200);
  mg_dlog_cfg_free(&c);
}

/* keep large enough: every line written is in one of the files, in order
 * across them, none split. */
static void test_rotation_preserves_all(void **state) {
  struct world *w = *state;
  struct mg_dlog_cfg c;
  struct mg_dlog *l;
  struct mg_dlog_stats st;
  static unsigned ns[400];
  unsigned n = 0, next = 0, k;
  size_t total = 0, i;
  int batch;
  char p[400];

  cfg_init(&c, w->path, 4096, 50, 8u << 20, 60000);
  l = open_log(&c);
  for (batch = 0; batch < 60; batch++) {
    /* Batches of 1 to 7 lines of varied length. */
    int j, m = 1 + batch % 7;
    for (j = 0; j < m; j++)
      write_line(l, n++, 30 + (size_t)((batch * 7 + j * 13) % 400));
    flush_now(l, n);
  }
  mg_dlog_close(l, &st);
  assert_int_equal(st.lines, n);
  assert_true(st.rotations >= 3);
  /* From the oldest rotated file to the current one. */
  for (k = (unsigned)st.rotations; k >= 1; k--) {
    size_t cnt;
    rotated(w, k, p, sizeof(p));
    assert_true(exists(p));
    assert_true(file_size(p) <= 4096);
    cnt = read_numbers(p, ns, 400);
    for (i = 0; i < cnt; i++)
      assert_int_equal(ns[i], next++);
    total += cnt;
  }
  rotated(w, (unsigned)st.rotations + 1, p, sizeof(p));
  assert_false(exists(p));
  {
    size_t cnt = read_numbers(w->path, ns, 400);
    for (i = 0; i < cnt; i++)
      assert_int_equal(ns[i], next++);
    total += cnt;
  }
  assert_int_equal(total, n);
  mg_dlog_cfg_free(&c);
}

/* keep 0: the file is started afresh, nothing is kept. */
static void test_rotation_keep_zero(void **state) {
  struct world *w = *state;
  struct mg_dlog_cfg c;
  struct mg_dlog *l;
  struct mg_dlog_stats st;
  static unsigned ns[100];
  char p1[400];
  unsigned n = 0;
  size_t cnt;
  int batch, j;

  rotated(w, 1, p1, sizeof(p1));
  cfg_init(&c, w->path, 4096, 0, 8u << 20, 60000);
  l = open_log(&c);
  for (batch = 0; batch < 10; batch++) {
    for (j = 0; j < 10; j++)
      write_line(l, n++, 99);
    flush_now(l, n);
  }
  mg_dlog_close(l, &st);
  assert_false(exists(p1));
  assert_int_equal(st.rotations, 2);
  cnt = read_numbers(w->path, ns, 100);
  assert_int_equal(cnt, 20);
  assert_int_equal(ns[0], 80);
  assert_int_equal(ns[19], 99);
  mg_dlog_cfg_free(&c);
}

/* ---- reopen ---------------------------------------------------------------- */

/* The file was renamed away (logrotate's create mode, then SIGUSR1): the
 * log reopens at its path, creating a new file; lines written before go to
 * the old file, lines after to the new one; none are lost. */
static void test_reopen_after_rename(void **state) {
  struct world *w = *state;
  struct mg_dlog_cfg c;
  struct mg_dlog *l;
  struct mg_dlog_stats st;
  char old[400];
  static unsigned a[100], b[100];
  double deadline;
  unsigned i;

  snprintf(old, sizeof(old), "%s.old", w->path);
  cfg_init(&c, w->path, 1ull << 30, 5, 8u << 20, 10);
  l = open_log(&c);
  for (i = 0; i < 10; i++)
    write_line(l, i, 60);
  wait_handled(l, 10, 2000);
  assert_int_equal(rename(w->path, old), 0);
  /* Still open: a line now goes to the renamed file. */
  write_line(l, 10, 60);
  wait_handled(l, 11, 2000);
  assert_false(exists(w->path));
  mg_dlog_reopen(l, NULL);
  /* The writer reopens at once, not on its next timer tick. */
  deadline = now_ms() + 2000 * SLOW;
  while (!exists(w->path) && now_ms() < deadline)
    sleep_ms(1);
  assert_true(exists(w->path));
  for (i = 11; i < 20; i++)
    write_line(l, i, 60);
  mg_dlog_close(l, &st);
  assert_int_equal(st.lines, 20);
  assert_int_equal(st.dropped, 0);
  assert_int_equal(read_numbers(old, a, 100), 11);
  assert_int_equal(read_numbers(w->path, b, 100), 9);
  for (i = 0; i < 11; i++)
    assert_int_equal(a[i], i);
  for (i = 0; i < 9; i++)
    assert_int_equal(b[i], 11 + i);
  mg_dlog_cfg_free(&c);
}

/* Lines queued before the reopen was asked for belong to the old file even
 * when the writer had not written them yet. */
static void test_reopen_queued_lines_go_to_old_file(void **state) {
  struct world *w = *state;
  struct mg_dlog_cfg c;
  struct mg_dlog *l;
  char old[400];
  static unsigned a[100];

  snprintf(old, sizeof(old), "%s.old", w->path);
  cfg_init(&c, w->path, 1ull << 30, 5, 8u << 20, 60000);
  l = open_log(&c);
  write_line(l, 0, 60);
  write_line(l, 1, 60);
  assert_int_equal(stats(l).lines, 0); /* still queued */
  assert_int_equal(rename(w->path, old), 0);
  mg_dlog_reopen(l, NULL);
  wait_handled(l, 2, 2000);
  mg_dlog_close(l, NULL);
  assert_int_equal(read_numbers(old, a, 100), 2);
  assert_true(exists(w->path));
  assert_int_equal(file_size(w->path), 0);
  mg_dlog_cfg_free(&c);
}

/* A reload with a new path and limits: later lines go to the new file, with
 * the new limits. */
static void test_reopen_with_new_config(void **state) {
  struct world *w = *state;
  struct mg_dlog_cfg c, c2;
  struct mg_dlog *l;
  struct mg_dlog_stats st;
  char path2[400], p21[420];
  static unsigned a[200], b[200];
  size_t na, nb, nb1;
  unsigned n = 0;
  double deadline;
  int batch, j;

  snprintf(path2, sizeof(path2), "%s/other.jsonl", w->dir);
  snprintf(p21, sizeof(p21), "%s.1", path2);
  cfg_init(&c, w->path, 1ull << 30, 5, 8u << 20, 5);
  cfg_init(&c2, path2, 4096, 1, 1u << 20, 1);
  l = open_log(&c);
  for (; n < 5; n++)
    write_line(l, n, 99);
  wait_handled(l, n, 2000);
  mg_dlog_reopen(l, &c2);
  /* The copy is the log's: the caller may free its config at once. */
  mg_dlog_cfg_free(&c2);
  deadline = now_ms() + 2000 * SLOW;
  while (!exists(path2) && now_ms() < deadline)
    sleep_ms(1);
  assert_true(exists(path2));
  for (batch = 0; batch < 6; batch++) {
    for (j = 0; j < 10; j++)
      write_line(l, n++, 99);
    wait_handled(l, n, 2000);
  }
  mg_dlog_close(l, &st);
  assert_int_equal(st.lines, n);
  na = read_numbers(w->path, a, 200);
  assert_int_equal(na, 5);
  /* The new max_bytes and keep apply: path2 rotated into path2.1. */
  assert_true(exists(p21));
  assert_true(st.rotations >= 1);
  nb1 = read_numbers(p21, b, 200);
  nb = read_numbers(path2, b, 200);
  assert_int_equal(b[nb - 1], n - 1);
  assert_true(nb + nb1 <= n - 5);
  mg_dlog_cfg_free(&c);
}

/* The file cannot be reopened (its directory is gone): lines are dropped
 * and counted as write errors, the writer keeps trying, and once the
 * directory is back lines reach the file again. */
static void test_reopen_failure_recovers(void **state) {
  struct world *w = *state;
  struct mg_dlog_cfg c;
  struct mg_dlog *l;
  struct mg_dlog_stats st;
  char sub[300], sub2[300], path[400], moved[400];
  static unsigned a[100], b[100];
  unsigned n = 0;

  snprintf(sub, sizeof(sub), "%s/sub", w->dir);
  snprintf(sub2, sizeof(sub2), "%s/sub2", w->dir);
  snprintf(path, sizeof(path), "%s/log.jsonl", sub);
  snprintf(moved, sizeof(moved), "%s/log.jsonl", sub2);
  assert_int_equal(mkdir(sub, 0755), 0);
  cfg_init(&c, path, 1ull << 30, 5, 8u << 20, 5);
  l = open_log(&c);
  for (; n < 3; n++)
    write_line(l, n, 60);
  wait_handled(l, n, 2000);
  assert_int_equal(rename(sub, sub2), 0);
  mg_dlog_reopen(l, NULL); /* fails: logged, not fatal */
  /* The writer wakes at once for a reopen; lines queued before it acts
   * would still go to the old file. */
  sleep_ms(200 * SLOW);
  for (; n < 6; n++)
    write_line(l, n, 60);
  wait_handled(l, n, 2000);
  st = stats(l);
  assert_int_equal(st.lines, 3);
  assert_int_equal(st.dropped, 3);
  assert_true(st.write_errors >= 1);
  assert_int_equal(mkdir(sub, 0755), 0);
  for (; n < 9; n++)
    write_line(l, n, 60);
  mg_dlog_close(l, &st);
  assert_int_equal(st.lines, 6);
  assert_int_equal(st.dropped, 3);
  assert_int_equal(read_numbers(moved, a, 100), 3);
  assert_int_equal(a[2], 2);
  assert_int_equal(read_numbers(path, b, 100), 3);
  assert_int_equal(b[0], 6);
  assert_int_equal(b[2], 8);
  mg_dlog_cfg_free(&c);
}

/* ---- a full buffer ------------------------------------------------------------ */

struct drain {
  int fd;
  struct mg_buf got;
  bool go;
  pthread_mutex_t mu;
};

/* Read the pipe until every writer closed it. */
static void *drain_thread(void *arg) {
  struct drain *d = arg;
  char buf[65536];
  for (;;) {
    struct pollfd p = {d->fd, POLLIN, 0};
    ssize_t n;
    if (poll(&p, 1, 100) < 0 && errno != EINTR)
      break;
    n = read(d->fd, buf, sizeof(buf));
    if (n > 0) {
      if (mg_buf_append(&d->got, buf, (size_t)n) != 0)
        break;
      continue;
    }
    if (n == 0)
      break; /* no writer left */
    if (errno != EAGAIN && errno != EINTR)
      break;
  }
  return NULL;
}

/* The writer is stuck on a pipe nobody reads (a disk that does not answer):
 * the caller never blocks, the buffer fills, further lines are dropped and
 * counted (-ENOSPC), and once the reader is back every line queued is
 * delivered: written + dropped == submitted, and the lines delivered are
 * whole and in order. */
static void test_full_buffer_drops_and_counts(void **state) {
  struct world *w = *state;
  struct mg_dlog_cfg c;
  struct mg_dlog *l;
  struct mg_dlog_stats st;
  struct drain d;
  pthread_t th;
  char fifo[400], buf[2000];
  unsigned i, submitted = 3000, refused = 0, prev = 0;
  double worst = 0;
  const char *p, *end;
  size_t got = 0;

  snprintf(fifo, sizeof(fifo), "%s/fifo", w->dir);
  assert_int_equal(mkfifo(fifo, 0644), 0);
  d.fd = open(fifo, O_RDONLY | O_NONBLOCK);
  assert_true(d.fd >= 0);
  mg_buf_init(&d.got, 64u << 20);
  cfg_init(&c, fifo, 1ull << 40, 5, 64u << 10, 5);
  l = open_log(&c);
  for (i = 0; i < submitted; i++) {
    size_t k = make_line(buf, sizeof(buf), i, 200);
    double t0 = now_ms(), dt;
    int rc = mg_dlog_write(l, buf, k);
    dt = now_ms() - t0;
    if (dt > worst)
      worst = dt;
    if (rc == -ENOSPC)
      refused++;
    else
      assert_int_equal(rc, 0);
    if (i % 100 == 99)
      sleep_ms(2); /* let the writer fill the pipe and block */
  }
  /* 600 KB offered; the pipe and both buffers hold far less. */
  assert_true(refused > 0);
  if (worst > 100 * SLOW)
    fail_msg("a write took %.1f ms while the file was stuck", worst);
  st = stats(l);
  assert_int_equal(st.dropped, refused);

  assert_int_equal(pthread_create(&th, NULL, drain_thread, &d), 0);
  mg_dlog_close(l, &st);
  assert_int_equal(pthread_join(th, NULL), 0);
  close(d.fd);

  assert_int_equal(st.dropped, refused);
  assert_int_equal(st.lines + st.dropped, submitted);
  assert_int_equal(st.bytes, d.got.len);
  /* Whole lines, in order, none twice. */
  for (p = d.got.data; d.got.data && p < d.got.data + d.got.len;
       p = end + 1) {
    unsigned n;
    end = memchr(p, '\n', (size_t)(d.got.data + d.got.len - p));
    assert_non_null(end);
    assert_int_equal(sscanf(p, "{\"n\":%u,", &n), 1);
    assert_int_equal((size_t)(end - p), 200);
    if (got)
      assert_true(n > prev);
    prev = n;
    got++;
  }
  assert_int_equal(got, st.lines);
  mg_buf_free(&d.got);
  mg_dlog_cfg_free(&c);
}

/* The smallest buffer (64 KiB) and a plain file, lines written as fast as
 * the caller can: whether or not the writer keeps up, every line is either
 * written whole or dropped and counted, and the caller learns which. */
static void test_small_buffer_accounting(void **state) {
  struct world *w = *state;
  struct mg_dlog_cfg c;
  struct mg_dlog *l;
  struct mg_dlog_stats st;
  char buf[400];
  unsigned i, submitted = 20000, refused = 0;

  cfg_init(&c, w->path, 1ull << 40, 5, 64u << 10, 1);
  l = open_log(&c);
  for (i = 0; i < submitted; i++) {
    size_t k = make_line(buf, sizeof(buf), i, 300);
    int rc = mg_dlog_write(l, buf, k);
    if (rc == -ENOSPC)
      refused++;
    else
      assert_int_equal(rc, 0);
  }
  mg_dlog_close(l, &st);
  assert_int_equal(st.dropped, refused);
  assert_int_equal(st.lines + st.dropped, submitted);
  assert_int_equal(st.write_errors, 0);
  assert_int_equal(read_numbers(w->path, NULL, 0), st.lines);
  assert_int_equal((uint64_t)file_size(w->path), st.bytes);
  mg_dlog_cfg_free(&c);
}

/* A line longer than the whole buffer can never be queued: dropped and
 * counted, never cut. One that just fits (with its newline) is kept. */
static void test_line_larger_than_buffer(void **state) {
  struct world *w = *state;
  struct mg_dlog_cfg c;
  struct mg_dlog *l;
  struct mg_dlog_stats st;
  static char big[65536 + 10];
  size_t len;
  char *s;

  cfg_init(&c, w->path, 1ull << 30, 5, 64u << 10, 60000);
  l = open_log(&c);
  make_line(big, sizeof(big), 1, 65536);
  assert_int_equal(mg_dlog_write(l, big, 65536), -ENOSPC);
  make_line(big, sizeof(big), 2, 65535); /* + newline = the buffer */
  assert_int_equal(mg_dlog_write(l, big, 65535), 0);
  mg_dlog_close(l, &st);
  assert_int_equal(st.dropped, 1);
  assert_int_equal(st.lines, 1);
  s = slurp(w->path, &len);
  assert_int_equal(len, 65536);
  assert_memory_equal(s, "{\"n\":2,", 7);
  free(s);
  mg_dlog_cfg_free(&c);
}

/* ---- write errors: a full disk -------------------------------------------------- */

/* The file may not grow past `limit` bytes (RLIMIT_FSIZE) while f runs:
 * writes past it fail with EFBIG, as writes to a full disk fail with ENOSPC
 * (and, at the edge, a write is cut short the same way). */
static struct rlimit saved_fsize;

static void limit_file_size(rlim_t limit) {
  struct rlimit r;
  signal(SIGXFSZ, SIG_IGN); /* a failed write, not a dead process */
  assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved_fsize), 0);
  r = saved_fsize;
  r.rlim_cur = limit;
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &r), 0);
}

static void unlimit_file_size(void) {
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved_fsize), 0);
}

/* The disk fills up while lines are written: the lines that do not fit are
 * dropped and counted as write errors, the caller never sees an error, and
 * the lines counted as written are the whole lines in the file. */
static void test_disk_full_counts(void **state) {
  struct world *w = *state;
  struct mg_dlog_cfg c;
  struct mg_dlog *l;
  struct mg_dlog_stats st;
  unsigned n;

  cfg_init(&c, w->path, 1ull << 30, 5, 8u << 20, 1);
  l = open_log(&c);
  limit_file_size(8192);
  /* One line a batch, 100 bytes each: line 81 ends at 8200, past 8192. */
  for (n = 0; n < 120; n++) {
    write_line(l, n, 99);
    wait_handled(l, n + 1, 2000);
  }
  st = stats(l);
  unlimit_file_size();
  mg_dlog_close(l, &st);
  assert_int_equal(st.lines + st.dropped, 120);
  assert_int_equal(st.lines, 81);
  assert_int_equal(st.dropped, 39);
  assert_true(st.write_errors >= 1);
  assert_true(file_size(w->path) <= 8192);
  mg_dlog_cfg_free(&c);
}

/* The disk fills up in the middle of a line (a short write), then space is
 * freed and logging goes on: the file must hold only whole lines. Half a
 * line left at the end would glue itself to the next line written, and
 * that line, counted as written, would be unreadable. */
static void test_disk_full_mid_line_then_recovers(void **state) {
  struct world *w = *state;
  struct mg_dlog_cfg c;
  struct mg_dlog *l;
  struct mg_dlog_stats st;
  size_t cnt;
  unsigned n;

  cfg_init(&c, w->path, 1ull << 30, 5, 8u << 20, 1);
  l = open_log(&c);
  /* 8242: line 82 ([8200, 8300)) is cut after 42 bytes. */
  limit_file_size(8242);
  for (n = 0; n < 90; n++) {
    write_line(l, n, 99);
    wait_handled(l, n + 1, 2000);
  }
  st = stats(l);
  assert_int_equal(st.lines, 82);
  assert_int_equal(st.dropped, 8);
  assert_true(st.write_errors >= 1);
  /* Space again. */
  unlimit_file_size();
  for (; n < 100; n++) {
    write_line(l, n, 99);
    wait_handled(l, n + 1, 2000);
  }
  mg_dlog_close(l, &st);
  assert_int_equal(st.lines + st.dropped, 100);
  assert_int_equal(st.lines, 92);
  /* Every line in the file whole (read_numbers fails otherwise), and as
   * many as were counted written. */
  cnt = read_numbers(w->path, NULL, 0);
  assert_int_equal(cnt, st.lines);
  mg_dlog_cfg_free(&c);
}

/* ---- concurrency ------------------------------------------------------------ */

struct producer {
  struct mg_dlog *l;
  unsigned id, n;
};

static void *produce(void *arg) {
  struct producer *p = arg;
  char buf[200];
  unsigned i;
  for (i = 0; i < p->n; i++) {
    int k = snprintf(buf, sizeof(buf), "{\"n\":%u,\"t\":%u,\"i\":%u}",
                     p->id * 1000000 + i, p->id, i);
    if (mg_dlog_write(p->l, buf, (size_t)k) != 0)
      abort();
  }
  return NULL;
}

/* Several threads write at once (the loop thread and whoever else): every
 * line arrives whole, each thread's lines in its own order. */
static void test_concurrent_writers(void **state) {
  struct world *w = *state;
  struct mg_dlog_cfg c;
  struct mg_dlog *l;
  struct mg_dlog_stats st;
  struct producer ps[4];
  pthread_t th[4];
  static unsigned ns[40000];
  unsigned next[4] = {0, 0, 0, 0};
  size_t cnt, i;
  int t;

  cfg_init(&c, w->path, 1ull << 30, 5, 16u << 20, 2);
  l = open_log(&c);
  for (t = 0; t < 4; t++) {
    ps[t].l = l;
    ps[t].id = (unsigned)t;
    ps[t].n = 10000;
    assert_int_equal(pthread_create(&th[t], NULL, produce, &ps[t]), 0);
  }
  for (t = 0; t < 4; t++)
    assert_int_equal(pthread_join(th[t], NULL), 0);
  mg_dlog_close(l, &st);
  assert_int_equal(st.lines, 40000);
  assert_int_equal(st.dropped, 0);
  cnt = read_numbers(w->path, ns, 40000);
  assert_int_equal(cnt, 40000);
  for (i = 0; i < cnt; i++) {
    unsigned tid = ns[i] / 1000000, seq = ns[i] % 1000000;
    assert_true(tid < 4);
    assert_int_equal(seq, next[tid]);
    next[tid]++;
  }
  mg_dlog_cfg_free(&c);
}

/* ---- open errors ------------------------------------------------------------- */

static void test_open_errors(void **state) {
  struct world *w = *state;
  struct mg_dlog_cfg c;
  char path[400], err[512] = "";

  snprintf(path, sizeof(path), "%s/no/such/dir/decisions.jsonl", w->dir);
  cfg_init(&c, path, 1ull << 30, 5, 8u << 20, 200);
  assert_null(mg_dlog_open(&c, err, sizeof(err)));
  assert_non_null(strstr(err, path));
  assert_non_null(strstr(err, strerror(ENOENT)));
  mg_dlog_cfg_free(&c);

  /* A directory where the file should be. */
  cfg_init(&c, w->dir, 1ull << 30, 5, 8u << 20, 200);
  err[0] = '\0';
  assert_null(mg_dlog_open(&c, err, sizeof(err)));
  assert_non_null(strstr(err, w->dir));
  assert_non_null(strstr(err, strerror(EISDIR)));
  mg_dlog_cfg_free(&c);
}

/* ---- the config section ------------------------------------------------------- */

static void parse_section(const char *json, struct mg_dlog_cfg *c,
                          struct mg_cfg_errors *e) {
  cJSON *root = cJSON_Parse(json);
  assert_non_null(root);
  mg_cfg_errors_init(e);
  mg_dlog_cfg_parse(c, cJSON_GetObjectItemCaseSensitive(root, "decision_log"),
                    e);
  cJSON_Delete(root);
}

static bool has_error(const struct mg_cfg_errors *e, const char *want) {
  size_t i;
  for (i = 0; i < e->n; i++)
    if (strcmp(e->msgs[i], want) == 0)
      return true;
  return false;
}

static void expect_error(const struct mg_cfg_errors *e, const char *want) {
  size_t i;
  if (has_error(e, want))
    return;
  for (i = 0; i < e->n; i++)
    fprintf(stderr, "  error: %s\n", e->msgs[i]);
  fail_msg("no error \"%s\"", want);
}

static void test_config_defaults(void **state) {
  struct mg_dlog_cfg c;
  struct mg_cfg_errors e;
  (void)state;
  parse_section("{}", &c, &e);
  assert_int_equal(e.n, 0);
  assert_true(c.enabled);
  assert_string_equal(c.path, "decisions.jsonl");
  assert_int_equal(c.max_bytes, 268435456);
  assert_int_equal(c.keep, 5);
  assert_int_equal(c.buffer_bytes, 8388608);
  assert_int_equal(c.flush_ms, 200);
  assert_false(c.raw_units);
  assert_int_equal(c.nattrs, 0);
  mg_dlog_cfg_free(&c);
  mg_cfg_errors_free(&e);

  /* The whole section as the README gives it. */
  parse_section("{\"decision_log\":{\"enabled\":true,\"path\":"
                "\"/var/log/modelgate/decisions.jsonl\",\"max_bytes\":4096,"
                "\"keep\":0,\"buffer_bytes\":65536,\"flush_ms\":1,"
                "\"raw_units\":true,\"attrs\":[\"region\",\"customer\"]}}",
                &c, &e);
  assert_int_equal(e.n, 0);
  assert_true(c.enabled);
  assert_string_equal(c.path, "/var/log/modelgate/decisions.jsonl");
  assert_int_equal(c.max_bytes, 4096);
  assert_int_equal(c.keep, 0);
  assert_int_equal(c.buffer_bytes, 65536);
  assert_int_equal(c.flush_ms, 1);
  assert_true(c.raw_units);
  assert_int_equal(c.nattrs, 2);
  assert_string_equal(c.attrs[0], "region");
  assert_string_equal(c.attrs[1], "customer");
  mg_dlog_cfg_free(&c);
  mg_cfg_errors_free(&e);

  /* Upper limits are accepted. */
  parse_section("{\"decision_log\":{\"max_bytes\":4398046511104,"
                "\"keep\":1000,\"buffer_bytes\":1073741824,"
                "\"flush_ms\":60000,\"attrs\":[]}}",
                &c, &e);
  assert_int_equal(e.n, 0);
  assert_int_equal(c.max_bytes, 4398046511104ULL);
  assert_int_equal(c.keep, 1000);
  assert_int_equal(c.buffer_bytes, 1073741824);
  assert_int_equal(c.flush_ms, 60000);
  assert_int_equal(c.nattrs, 0);
  mg_dlog_cfg_free(&c);
  mg_cfg_errors_free(&e);
}

static void test_config_disabled(void **state) {
  struct mg_dlog_cfg c;
  struct mg_cfg_errors e;
  (void)state;
  parse_section("{\"decision_log\":{\"enabled\":false}}", &c, &e);
  assert_int_equal(e.n, 0);
  assert_false(c.enabled);
  /* The rest keeps its defaults (a reload may turn it on again). */
  assert_string_equal(c.path, "decisions.jsonl");
  assert_int_equal(c.keep, 5);
  mg_dlog_cfg_free(&c);
  mg_cfg_errors_free(&e);
}

/* Every mistake is reported at once, each with its JSON path. */
static void test_config_errors(void **state) {
  struct mg_dlog_cfg c;
  struct mg_cfg_errors e;
  (void)state;

  parse_section("{\"decision_log\":{\"enabled\":\"yes\",\"path\":\"\","
                "\"max_bytes\":4095,\"keep\":-1,\"buffer_bytes\":65535,"
                "\"flush_ms\":0,\"raw_units\":1,\"attrs\":[\"ok\",1,\"\"],"
                "\"bogus\":true}}",
                &c, &e);
  expect_error(&e, "$.decision_log.bogus: unknown key");
  expect_error(&e, "$.decision_log.enabled: must be true or false, not a "
                   "string");
  expect_error(&e, "$.decision_log.path: must not be empty");
  expect_error(&e, "$.decision_log.max_bytes: must be between 4096 and "
                   "4398046511104, not 4095");
  expect_error(&e, "$.decision_log.keep: must be between 0 and 1000, not -1");
  expect_error(&e, "$.decision_log.buffer_bytes: must be between 65536 and "
                   "1073741824, not 65535");
  expect_error(&e, "$.decision_log.flush_ms: must be between 1 and 60000, "
                   "not 0");
  expect_error(&e, "$.decision_log.raw_units: must be true or false, not a "
                   "number");
  expect_error(&e, "$.decision_log.attrs[1]: must be a non-empty string");
  expect_error(&e, "$.decision_log.attrs[2]: must be a non-empty string");
  assert_int_equal(e.n, 10);
  /* The good attribute is kept. */
  assert_int_equal(c.nattrs, 1);
  assert_string_equal(c.attrs[0], "ok");
  mg_dlog_cfg_free(&c);
  mg_cfg_errors_free(&e);

  parse_section("{\"decision_log\":{\"attrs\":\"region\",\"path\":7}}", &c,
                &e);
  expect_error(&e, "$.decision_log.attrs: must be an array of names");
  expect_error(&e, "$.decision_log.path: must be a string, not a number");
  mg_dlog_cfg_free(&c);
  mg_cfg_errors_free(&e);

  parse_section("{\"decision_log\":[1]}", &c, &e);
  assert_int_equal(e.n, 1);
  assert_non_null(strstr(e.msgs[0], "$.decision_log: must be an object"));
  assert_true(c.enabled); /* defaults */
  mg_dlog_cfg_free(&c);
  mg_cfg_errors_free(&e);

  parse_section("{\"decision_log\":{\"max_bytes\":1.5,\"keep\":true}}", &c,
                &e);
  expect_error(&e, "$.decision_log.max_bytes: must be an integer, not 1.5");
  expect_error(&e, "$.decision_log.keep: must be an integer, not a boolean");
  mg_dlog_cfg_free(&c);
  mg_cfg_errors_free(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_order_and_close_flush, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_batching, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rotation_keep, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rotation_preserves_all, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_rotation_keep_zero, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_reopen_after_rename, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_reopen_queued_lines_go_to_old_file,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_reopen_with_new_config, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_reopen_failure_recovers, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_full_buffer_drops_and_counts, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_small_buffer_accounting, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_line_larger_than_buffer, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_disk_full_counts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_disk_full_mid_line_then_recovers,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_concurrent_writers, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
      cmocka_unit_test(test_config_defaults),
      cmocka_unit_test(test_config_disabled),
      cmocka_unit_test(test_config_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
