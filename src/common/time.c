/* time.c - wall-clock helpers. */
#include "common/time.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm),
 * valid for the proleptic Gregorian calendar; no timezone database. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  int64_t era;
  unsigned yoe, doy, doe;
  y -= m <= 2;
  era = (y >= 0 ? y : y - 399) / 400;
  yoe = (unsigned)(y - era * 400);
  doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

static int digits(const char **p, int n, int *out) {
  int v = 0, i;
  for (i = 0; i < n; i++) {
    unsigned c = (unsigned char)(*p)[i] - '0';
    if (c > 9)
      return -EINVAL;
    v = v * 10 + (int)c;
  }
  *p += n;
  *out = v;
  return 0;
}

/* Seconds since the epoch of a UTC civil time, checked: 0, or -EINVAL for a
 * day the month does not have or a time of day out of range. A leap second
 * counts as the second before it. */
static int civil_seconds(int y, int mo, int d, int h, int mi, int sec,
                         int64_t *out) {
  static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 ||
      sec > 60)
    return -EINVAL;
  if (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
    return -EINVAL;
  if (sec == 60)
    sec = 59;
  *out = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 +
         mi * 60 + sec;
  return 0;
}

int mg_rfc3339_parse(const char *s, int64_t *ms) {
  int y, mo, d, h, mi, sec, frac_ms = 0, off = 0;
  int64_t secs;
  const char *p = s;

  if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) ||
      *p++ != '-' || digits(&p, 2, &d) || (*p != 'T' && *p != 't'))
    return -EINVAL;
  p++;
  if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) ||
      *p++ != ':' || digits(&p, 2, &sec))
    return -EINVAL;
  if (*p == '.') {
    int n = 0;
    p++;
    while (*p >= '0' && *p <= '9') {
      if (n < 3)
        frac_ms = frac_ms * 10 + (*p - '0');
      n++;
      p++;
    }
    if (n == 0)
      return -EINVAL;
    for (; n < 3; n++)
      frac_ms *= 10;
  }
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int oh, om, sign = *p == '-' ? -1 : 1;
    p++;
    if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 ||
        om > 59)
      return -EINVAL;
    off = sign * (oh * 60 + om);
  } else {
    return -EINVAL;
  }
  if (*p != '\0' || civil_seconds(y, mo, d, h, mi, sec, &secs) != 0)
    return -EINVAL;
  *ms = (secs - off * 60) * 1000 + frac_ms;
  return 0;
}

void mg_rfc3339_format(int64_t ms, char out[32]) {
  time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
  int frac = (int)(ms - (int64_t)t * 1000);
  struct tm tm;
  unsigned y;
  gmtime_r(&t, &tm);
  /* Four-digit years only (RFC 3339): clamp what cannot be written. */
  y = tm.tm_year + 1900 < 0 ? 0u : (unsigned)(tm.tm_year + 1900) % 10000u;
  snprintf(out, 32, "%04u-%02u-%02uT%02u:%02u:%02u.%03uZ", y,
           (unsigned)(tm.tm_mon + 1) % 100u, (unsigned)tm.tm_mday % 100u,
           (unsigned)tm.tm_hour % 100u, (unsigned)tm.tm_min % 100u,
           (unsigned)tm.tm_sec % 100u, (unsigned)frac % 1000u);
}

/* "Jan".."Dec" to 1..12, or 0. Case-sensitive, as the grammar is. */
static int month_of(const char *p) {
  static const char names[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
  int i;
  for (i = 0; i < 12; i++)
    if (p[0] == names[3 * i] && p[1] == names[3 * i + 1] &&
        p[2] == names[3 * i + 2])
      return i + 1;
  return 0;
}

static int hms(const char **p, int *h, int *mi, int *sec) {
  if (digits(p, 2, h) || *(*p)++ != ':' || digits(p, 2, mi) ||
      *(*p)++ != ':' || digits(p, 2, sec))
    return -EINVAL;
  return 0;
}

int mg_http_date_parse(const char *s, int64_t *ms) {
  const char *p = s;
  int y, mo, d, h, mi, sec;
  int64_t secs;

  /* The day name: "Sun," (IMF-fixdate), "Sunday," (RFC 850), "Sun " (asctime). */
  while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'))
    p++;
  if (p == s)
    return -EINVAL;
  if (*p == ',') {
    bool rfc850 = p - s > 3;
    if (*++p != ' ')
      return -EINVAL;
    p++;
    if (digits(&p, 2, &d) || *p++ != (rfc850 ? '-' : ' ') ||
        (mo = month_of(p)) == 0)
      return -EINVAL;
    p += 3;
    if (*p++ != (rfc850 ? '-' : ' '))
      return -EINVAL;
    if (rfc850) {
      if (digits(&p, 2, &y))
        return -EINVAL;
      y += y >= 70 ? 1900 : 2000;
    } else if (digits(&p, 4, &y)) {
      return -EINVAL;
    }
    if (*p++ != ' ' || hms(&p, &h, &mi, &sec) || strncmp(p, " GMT", 4) != 0)
      return -EINVAL;
    p += 4;
  } else if (*p == ' ' && p - s == 3) {
    /* asctime: "Nov  6 08:49:37 1994" */
    p++;
    if ((mo = month_of(p)) == 0 || p[3] != ' ')
      return -EINVAL;
    p += 4;
    if (*p == ' ')
      p++;
    if (*p < '0' || *p > '9')
      return -EINVAL;
    d = *p++ - '0';
    if (*p >= '0' && *p <= '9')
      d = d * 10 + (*p++ - '0');
    if (*p++ != ' ' || hms(&p, &h, &mi, &sec) || *p++ != ' ' ||
        digits(&p, 4, &y))
      return -EINVAL;
  } else {
    return -EINVAL;
  }
  while (*p == ' ' || *p == '\t')
    p++;
  if (*p != '\0' || civil_seconds(y, mo, d, h, mi, sec, &secs) != 0)
    return -EINVAL;
  *ms = secs * 1000;
  return 0;
}

int64_t mg_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
