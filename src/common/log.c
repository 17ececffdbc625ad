/* log.c - the operational log on stderr. */
#include "common/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Set on reload (one thread), read by every worker: relaxed is enough, a
 * worker may log one more line at the old level. */
static _Atomic int min_level = MG_LOG_INFO;

void mg_log_set_level(enum mg_log_level level) {
  atomic_store_explicit(&min_level, (int)level, memory_order_relaxed);
}

enum mg_log_level mg_log_get_level(void) {
  return (enum mg_log_level)atomic_load_explicit(&min_level,
                                                 memory_order_relaxed);
}

int mg_log_level_parse(const char *s) {
  static const char *names[] = {"debug", "info", "warn", "error"};
  int i;
  for (i = 0; i < 4; i++)
    if (strcmp(s, names[i]) == 0)
      return i;
  return -1;
}

void mg_log(enum mg_log_level level, const char *fmt, ...) {
  static const char *tags[] = {"debug", "info", "warn", "error"};
  char line[1024];
  struct timespec ts;
  struct tm tm;
  va_list ap;
  int n, m;

  if ((int)level < atomic_load_explicit(&min_level, memory_order_relaxed))
    return;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ",
               tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
               tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, tags[level]);
  va_start(ap, fmt);
  m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
  va_end(ap);
  if (m < 0)
    m = 0;
  n += m;
  if ((size_t)n > sizeof(line) - 2)
    n = (int)sizeof(line) - 2;
  line[n++] = '\n';
  /* One write per line so lines from concurrent processes do not interleave. */
  fwrite(line, 1, (size_t)n, stderr);
}
