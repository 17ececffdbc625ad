/* fuzz_time.c - the date parsers: HTTP dates (an upstream's Retry-After)
 * and RFC 3339 (config windows, ramp state). What either accepts must be a
 * real instant: written back as RFC 3339 it parses to the same
 * millisecond. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/time.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void round_trip(int64_t ms) {
  char text[32];
  int64_t back;
  /* Four-digit years only: 0000-01-01 .. 9999-12-31. */
  if (ms < -62167219200000LL || ms > 253402300799999LL)
    return;
  mg_rfc3339_format(ms, text);
  if (mg_rfc3339_parse(text, &back) != 0 || back != ms)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = malloc(size + 1);
  int64_t ms;
  if (s == NULL)
    return 0;
  memcpy(s, data, size);
  s[size] = '\0';
  if (mg_http_date_parse(s, &ms) == 0) {
    /* Whole seconds, and no date an HTTP date cannot write. */
    if (ms % 1000 != 0)
      abort();
    round_trip(ms);
  }
  if (mg_rfc3339_parse(s, &ms) == 0)
    round_trip(ms);
  free(s);
  return 0;
}
