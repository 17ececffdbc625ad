/* time.h - wall-clock helpers: RFC 3339 in and out, epoch milliseconds. */
#ifndef MG_TIME_H
#define MG_TIME_H

#include <stddef.h>
#include <stdint.h>

/* Parse "2026-11-21T09:30:00Z", with optional fraction and a numeric
 * offset ("+01:00"). 0 and epoch milliseconds in *ms, or -EINVAL. */
int mg_rfc3339_parse(const char *s, int64_t *ms);

/* Format epoch milliseconds as "2026-11-21T09:30:00.123Z" (24 chars + NUL). */
void mg_rfc3339_format(int64_t ms, char out[32]);

/* Wall clock, epoch milliseconds. */
int64_t mg_wall_ms(void);

#endif
