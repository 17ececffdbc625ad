/* test_metrics.c - the Prometheus text a scraper reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "telemetry/metrics.h"

static void test_render(void **state) {
  static const double bounds[] = {0.1, 1};
  struct mg_metrics *m = mg_metrics_new();
  struct mg_buf out, l;
  (void)state;
  assert_int_equal(mg_metrics_family(m, "x_total", "Things.", MG_COUNTER,
                                     NULL, 0),
                   0);
  assert_int_equal(mg_metrics_family(m, "lat_seconds", "Latency.",
                                     MG_HISTOGRAM, bounds, 2),
                   0);
  assert_int_equal(mg_metrics_family(m, "g", "Gauge.", MG_GAUGE, NULL, 0), 0);
  mg_buf_init(&l, 1024);
  assert_int_equal(mg_metrics_labels(&l, "route", "a\"b\\c\nd", "status",
                                     "200", NULL),
                   0);
  assert_string_equal(l.data, "route=\"a\\\"b\\\\c\\nd\",status=\"200\"");
  mg_series_add(mg_metrics_series(m, "x_total", l.data), 2);
  mg_series_add(mg_metrics_series(m, "x_total", l.data), 1);
  assert_true(mg_series_value(mg_metrics_series(m, "x_total", l.data)) == 3);
  mg_series_observe(mg_metrics_series(m, "lat_seconds", ""), 0.05);
  mg_series_observe(mg_metrics_series(m, "lat_seconds", ""), 0.5);
  mg_series_observe(mg_metrics_series(m, "lat_seconds", ""), 7);
  mg_series_set(mg_metrics_series(m, "g", ""), 4);
  assert_null(mg_metrics_series(m, "undeclared", ""));
  mg_buf_init(&out, 1 << 20);
  assert_int_equal(mg_metrics_render(m, &out), 0);
  assert_non_null(strstr(out.data, "# TYPE x_total counter\n"));
  assert_non_null(strstr(
      out.data, "x_total{route=\"a\\\"b\\\\c\\nd\",status=\"200\"} 3\n"));
  assert_non_null(strstr(out.data, "# TYPE lat_seconds histogram\n"));
  /* buckets are cumulative and end with +Inf == count */
  assert_non_null(strstr(out.data, "lat_seconds_bucket{le=\"0.1\"} 1\n"));
  assert_non_null(strstr(out.data, "lat_seconds_bucket{le=\"1\"} 2\n"));
  assert_non_null(strstr(out.data, "lat_seconds_bucket{le=\"+Inf\"} 3\n"));
  assert_non_null(strstr(out.data, "lat_seconds_count 3\n"));
  assert_non_null(strstr(out.data, "lat_seconds_sum 7.55\n"));
  assert_non_null(strstr(out.data, "g 4\n"));
  mg_buf_free(&out);
  mg_buf_free(&l);
  mg_metrics_free(m);
}

/* A hidden gauge series is not rendered until it is set again. */
static void test_hide(void **state) {
  struct mg_metrics *m = mg_metrics_new();
  struct mg_buf out;
  (void)state;
  assert_int_equal(mg_metrics_family(m, "info", "Info.", MG_GAUGE, NULL, 0),
                   0);
  mg_series_set(mg_metrics_series(m, "info", "hash=\"old\""), 1);
  mg_metrics_hide(m, "info");
  mg_series_set(mg_metrics_series(m, "info", "hash=\"new\""), 1);
  mg_metrics_hide(m, "no_such_family");
  mg_buf_init(&out, 1 << 20);
  assert_int_equal(mg_metrics_render(m, &out), 0);
  assert_non_null(strstr(out.data, "info{hash=\"new\"} 1\n"));
  assert_null(strstr(out.data, "old"));
  /* Set again: back. */
  mg_metrics_hide(m, "info");
  mg_series_set(mg_metrics_series(m, "info", "hash=\"old\""), 1);
  mg_buf_reset(&out);
  assert_int_equal(mg_metrics_render(m, &out), 0);
  assert_non_null(strstr(out.data, "info{hash=\"old\"} 1\n"));
  assert_null(strstr(out.data, "new"));
  mg_buf_free(&out);
  mg_metrics_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_render),
      cmocka_unit_test(test_hide),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
