/* test_report_html.c - the HTML report in a real browser: headless Chromium
 * (Debian's chromium, installed by scripts/deps.sh) loads the page from a
 * file with networking and background services off, and the serialized
 * DOM must hold every chart the page promises; a screenshot is taken too
 * (kept with MG_KEEP_TMP=1 for a look).
 *
 * Exits 77 (ctest: skipped) when no Chromium is installed. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "report_gen.h"

#define RUN_MS 120000

static char chromium[512];

/* The first Chromium on PATH; false when there is none. */
static bool find_chromium(void) {
  static const char *const names[] = {"chromium", "chromium-browser",
                                      "google-chrome"};
  const char *path = getenv("PATH");
  char dirs[4096], *save = NULL, *d;
  size_t i;

  snprintf(dirs, sizeof(dirs), "%s", path ? path : "/usr/bin:/bin");
  for (d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save))
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
      snprintf(chromium, sizeof(chromium), "%s/%s", d, names[i]);
      if (access(chromium, X_OK) == 0)
        return true;
    }
  return false;
}

static int count(const char *hay, const char *needle) {
  int n = 0;
  while ((hay = strstr(hay, needle)) != NULL) {
    n++;
    hay += strlen(needle);
  }
  return n;
}

/* Run Chromium headless on url with one extra argument (--dump-dom or
 * --screenshot=...). */
static int browse(const char *dir, const char *url, const char *what,
                  char **out) {
  char profile[600];
  const char *argv[20];
  int n = 0;
  /* A fresh profile each time: nothing from an earlier run, no locks. */
  snprintf(profile, sizeof(profile), "--user-data-dir=%s/chromium-%s", dir,
           what[2] == 'd' ? "dom" : "shot");
  argv[n++] = chromium;
  argv[n++] = "--headless";
  argv[n++] = "--no-sandbox";
  argv[n++] = "--disable-gpu";
  argv[n++] = "--disable-quic";
  argv[n++] = "--no-first-run";
  argv[n++] = "--disable-background-networking";
  argv[n++] = "--disable-component-update";
  argv[n++] = "--disable-sync";
  argv[n++] = "--window-size=1400,2400";
  argv[n++] = profile;
  argv[n++] = what;
  argv[n++] = url;
  argv[n] = NULL;
  return mg_h_run(argv, out, RUN_MS);
}

static void test_html_in_chromium(void **state) {
  struct rg_scen s;
  struct rg_truth t;
  char dir[256], paths[8][512], html[600], png[600], url[700], shot[700];
  char *out = NULL, *page;
  const char *argv[12];
  unsigned char sig[8];
  FILE *f;
  long size;
  (void)state;

  /* Two flags, one with a treatment that fails on long inputs: alarms,
   * comparisons, and a cross-flag pair all appear. */
  memset(&s, 0, sizeof(s));
  s.seed = 77;
  s.units = 8000;
  s.nflags = 2;
  s.weight_t = 40;
  s.heavy = 0.03;
  s.heavy_requests = 30;
  s.heavy_t = -1;
  s.err = 0.03;
  s.err_long_t = 0.09;
  s.malformed = 2;
  s.files = 2;
  assert_int_equal(mg_h_tmpdir(dir, sizeof(dir)), 0);
  rg_write(&s, dir, paths, &t);
  snprintf(html, sizeof(html), "%s/report.html", dir);
  argv[0] = MG_BIN;
  argv[1] = "report";
  argv[2] = "--format";
  argv[3] = "html";
  argv[4] = "--out";
  argv[5] = html;
  argv[6] = paths[0];
  argv[7] = paths[1];
  argv[8] = NULL;
  assert_int_equal(mg_h_run(argv, &out, RUN_MS), 0);
  free(out);

  /* Self-contained: no scripts, nothing fetched (the SVG namespace is a
   * name, not a fetch). */
  page = mg_h_read_file(html, NULL);
  assert_non_null(page);
  assert_null(strstr(page, "<script"));
  assert_null(strstr(page, "src="));
  assert_null(strstr(page, "href=\"http"));
  assert_null(strstr(page, "url("));
  assert_null(strstr(page, "@import"));
  free(page);

  snprintf(url, sizeof(url), "file://%s", html);
  assert_int_equal(browse(dir, url, "--dump-dom", &out), 0);
  assert_non_null(out);
  /* The headline lists the alarm first. */
  assert_non_null(strstr(out, "id=\"alarms\""));
  assert_true(count(out, "class=\"alarm-item\"") >= 1);
  assert_true(strstr(out, "id=\"alarms\"") < strstr(out, "id=\"flag-0\""));
  /* Per flag: rates with intervals, differences, the input axis (chart and
   * table); per variant with requests: a latency histogram. */
  assert_int_equal(count(out, "class=\"chart rates\""), 2);
  assert_int_equal(count(out, "class=\"chart diffs\""), 2);
  assert_int_equal(count(out, "class=\"chart input-axis\""), 2);
  assert_int_equal(count(out, "class=\"input-axis\""), 2);
  assert_int_equal(count(out, "class=\"chart latency\""), 4);
  assert_non_null(strstr(out, "id=\"rates-0\""));
  assert_non_null(strstr(out, "id=\"latency-0-1\""));
  assert_non_null(strstr(out, "id=\"axis-0\""));
  assert_non_null(strstr(out, "id=\"axis-table-0\""));
  assert_non_null(strstr(out, "id=\"cross-flag\""));
  /* The charts have marks in them, not just frames. */
  assert_true(count(out, "class=\"bar\"") > 40);
  assert_true(count(out, "class=\"quantile\"") == 12);
  assert_true(count(out, "<circle") > 20);
  assert_true(count(out, "class=\"flagged\"") >= 1);
  free(out);

  snprintf(png, sizeof(png), "%s/report.png", dir);
  snprintf(shot, sizeof(shot), "--screenshot=%s", png);
  assert_int_equal(browse(dir, url, shot, &out), 0);
  free(out);
  f = fopen(png, "rb");
  assert_non_null(f);
  assert_int_equal(fread(sig, 1, 8, f), 8);
  assert_memory_equal(sig, "\x89PNG\r\n\x1a\n", 8);
  fseek(f, 0, SEEK_END);
  size = ftell(f);
  fclose(f);
  /* A blank 1400x2400 page compresses to a few kilobytes. */
  assert_true(size > 50000);
  print_message("screenshot: %s (%ld bytes; MG_KEEP_TMP=1 keeps it)\n", png,
                size);
  rg_truth_free(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_html_in_chromium),
  };
  if (!find_chromium()) {
    printf("chromium is not installed (scripts/deps.sh installs it): "
           "skipping\n");
    return 77;
  }
  return cmocka_run_group_tests(tests, NULL, NULL);
}
