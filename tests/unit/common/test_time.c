/* test_time.c - HTTP dates (RFC 9110, 5.6.7) in their three forms, against
 * RFC 3339 for the same instants; every malformed form is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/time.h"

static int64_t rfc3339(const char *s) {
  int64_t ms = 0;
  assert_int_equal(mg_rfc3339_parse(s, &ms), 0);
  return ms;
}

static int64_t http_date(const char *s) {
  int64_t ms = -1;
  if (mg_http_date_parse(s, &ms) != 0)
    fail_msg("not accepted as an HTTP date: \"%s\"", s);
  return ms;
}

static void test_three_forms(void **state) {
  int64_t want = rfc3339("1994-11-06T08:49:37Z");
  (void)state;
  assert_int_equal(http_date("Sun, 06 Nov 1994 08:49:37 GMT"), want);
  assert_int_equal(http_date("Sunday, 06-Nov-94 08:49:37 GMT"), want);
  assert_int_equal(http_date("Sun Nov  6 08:49:37 1994"), want);
  assert_int_equal(http_date("Sun Nov 06 08:49:37 1994"), want);
  /* Trailing whitespace, as header values may carry. */
  assert_int_equal(http_date("Sun, 06 Nov 1994 08:49:37 GMT  "), want);
}

static void test_calendar(void **state) {
  (void)state;
  assert_int_equal(http_date("Sat, 21 Nov 2026 15:40:00 GMT"),
                   rfc3339("2026-11-21T15:40:00Z"));
  assert_int_equal(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
  assert_int_equal(http_date("Tue, 29 Feb 2028 23:59:59 GMT"),
                   rfc3339("2028-02-29T23:59:59Z"));
  assert_int_equal(http_date("Fri, 31 Dec 2100 12:00:00 GMT"),
                   rfc3339("2100-12-31T12:00:00Z"));
  /* RFC 850 years: 70..99 are 19xx, 00..69 are 20xx. */
  assert_int_equal(http_date("Thursday, 01-Jan-70 00:00:00 GMT"), 0);
  assert_int_equal(http_date("Saturday, 21-Nov-26 15:40:00 GMT"),
                   rfc3339("2026-11-21T15:40:00Z"));
  /* A leap second counts as the second before it. */
  assert_int_equal(http_date("Sat, 31 Dec 2016 23:59:60 GMT"),
                   rfc3339("2016-12-31T23:59:59Z"));
}

static void test_refused(void **state) {
  static const char *const bad[] = {
      "",
      "GMT",
      "2026-11-21T15:40:00Z",
      "1700000000",
      "Sun, 06 Nov 1994 08:49:37",         /* no zone */
      "Sun, 06 Nov 1994 08:49:37 UTC",     /* only GMT */
      "Sun, 06 Nov 1994 08:49:37 GMT x",   /* trailing garbage */
      "Sun, 6 Nov 1994 08:49:37 GMT",      /* two-digit day */
      "Sun, 06 nov 1994 08:49:37 GMT",     /* month names are cased */
      "Sun, 06 Foo 1994 08:49:37 GMT",
      "Sun, 06 Nov 94 08:49:37 GMT",       /* four-digit year */
      "Sun, 06-Nov-1994 08:49:37 GMT",     /* dashes are RFC 850's */
      "Sunday, 06 Nov 1994 08:49:37 GMT",  /* ...and spaces IMF-fixdate's */
      "Sun, 31 Nov 1994 08:49:37 GMT",     /* no 31 November */
      "Sun, 29 Feb 2026 08:49:37 GMT",     /* not a leap year */
      "Sun, 00 Nov 1994 08:49:37 GMT",
      "Sun, 06 Nov 1994 24:00:00 GMT",
      "Sun, 06 Nov 1994 08:60:00 GMT",
      "Sun, 06 Nov 1994 08:49:61 GMT",
      "Sun, 06 Nov 1994 8:49:37 GMT",
      "Sun Nov  6 08:49:37 94",            /* asctime: four-digit year */
      "Sun Nov  6 08:49:37 1994 GMT",
      "Sunday Nov  6 08:49:37 1994",
      "Sun Nov    6 08:49:37 1994",
      "Sun Nov",
      "Sun,",
  };
  size_t i;
  (void)state;
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    int64_t ms = 0;
    if (mg_http_date_parse(bad[i], &ms) == 0)
      fail_msg("accepted as an HTTP date: \"%s\"", bad[i]);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_three_forms),
      cmocka_unit_test(test_calendar),
      cmocka_unit_test(test_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
