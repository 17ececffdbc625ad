/* time.h - wall-clock helpers: RFC 3339 in and out, HTTP dates in, epoch
 * milliseconds. */
#ifndef MG_TIME_H
#define MG_TIME_H

#include <stddef.h>
#include <stdint.h>

/* Parse "2026-11-21T09:30:00Z", with optional fraction and a numeric
 * offset ("+01:00"). 0 and epoch milliseconds in *ms, or -EINVAL. */
int mg_rfc3339_parse(const char *s, int64_t *ms);

/* Format epoch milliseconds as "2026-11-21T09:30:00.123Z" (24 chars + NUL). */
void mg_rfc3339_format(int64_t ms, char out[32]);

/* Parse an HTTP date (RFC 9110, 5.6.7) in any of its three forms:
 * "Sun, 06 Nov 1994 08:49:37 GMT" (IMF-fixdate), "Sunday, 06-Nov-94
 * 08:49:37 GMT" (RFC 850; a two-digit year is 19xx from 70, else 20xx) and
 * "Sun Nov  6 08:49:37 1994" (asctime). The day name is not checked against
 * the date. 0 and epoch milliseconds in *ms, or -EINVAL. */
int mg_http_date_parse(const char *s, int64_t *ms);

/* Wall clock, epoch milliseconds. */
int64_t mg_wall_ms(void);

#endif
