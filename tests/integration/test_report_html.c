/* test_report_html.c - the HTML report in a real browser: headless Chromium
 * (Debian's chromium, installed by scripts/deps.sh) loads the page from a
 * file with networking and background services off, and the serialized
 * DOM must hold every chart the page promises. Then the page is laid out
 * at 1,280 and 1,920 px wide (issue 11.3): a copy of it with a measuring
 * script appended (the report itself has none) reports, from the element
 * boxes, anything wider than the window (a horizontal scroll), any table
 * cell whose text overflows it, any chart label outside its chart (a
 * clipped label) and any two labels of one chart that overlap; there must
 * be none. Screenshots at both widths are kept in the build directory
 * (tests/artifacts/report-1280.png, report-1920.png) for a look.
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
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
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

#ifndef MG_ARTIFACT_DIR
#define MG_ARTIFACT_DIR "."
#endif

/* The measuring script: results as JSON in <pre id="mg-layout">. Boxes are
 * measured, never guessed: getBoundingClientRect for overlaps and page
 * width, getBBox (user units) against each chart's viewBox for clipping. */
static const char MEASURE_JS[] =
    "<script>(function(){"
    "var out={width:innerWidth,scrollWidth:document.documentElement."
    "scrollWidth,scrollers:[],cells:[],clipped:[],overlaps:[],texts:0};"
    "document.querySelectorAll('*').forEach(function(e){"
    " var cs=getComputedStyle(e);"
    " if((cs.overflowX=='auto'||cs.overflowX=='scroll')&&"
    "  e.scrollWidth>e.clientWidth+1)"
    "  out.scrollers.push((e.id||e.className||e.tagName)+' '+e.scrollWidth+"
    "   '>'+e.clientWidth);});"
    "document.querySelectorAll('td,th').forEach(function(e){"
    " if(e.scrollWidth>e.clientWidth+1)"
    "  out.cells.push(e.textContent.slice(0,60));});"
    "document.querySelectorAll('svg.chart').forEach(function(svg){"
    " var vb=svg.viewBox.baseVal,t=svg.querySelectorAll('text'),r=[],i,j;"
    " for(i=0;i<t.length;i++){var b=t[i].getBBox();out.texts++;"
    "  if(b.x<vb.x-0.5||b.y<vb.y-0.5||b.x+b.width>vb.x+vb.width+0.5||"
    "   b.y+b.height>vb.y+vb.height+0.5)"
    "   out.clipped.push(svg.id+': '+t[i].textContent.slice(0,60));"
    "  r.push(t[i].getBoundingClientRect());}"
    " for(i=0;i<t.length;i++)for(j=i+1;j<t.length;j++){"
    "  var a=r[i],c=r[j],ow=Math.min(a.right,c.right)-Math.max(a.left,c.left),"
    "  oh=Math.min(a.bottom,c.bottom)-Math.max(a.top,c.top);"
    "  if(ow>1&&oh>1)out.overlaps.push(svg.id+': \\''+"
    "   t[i].textContent.slice(0,40)+'\\' / \\''+"
    "   t[j].textContent.slice(0,40)+'\\'');}});"
    "var p=document.createElement('pre');p.id='mg-layout';"
    "p.textContent=JSON.stringify(out).replace(/[&<>]/g,'_');"
    "document.body.appendChild(p);})();</script>";

/* Run Chromium headless on url with one extra argument (--dump-dom or
 * --screenshot=...) in a window width wide. */
static int browse_w(const char *dir, const char *url, const char *what,
                    int width, char **out) {
  char profile[600], size[64];
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
  snprintf(size, sizeof(size), "--window-size=%d,2400", width);
  argv[n++] = "--hide-scrollbars";
  argv[n++] = size;
  argv[n++] = profile;
  argv[n++] = what;
  argv[n++] = url;
  argv[n] = NULL;
  return mg_h_run(argv, out, RUN_MS);
}

static int browse(const char *dir, const char *url, const char *what,
                  char **out) {
  return browse_w(dir, url, what, 1400, out);
}

/* Print the members of a JSON array of strings; how many there were. */
static int list(const cJSON *o, const char *key, int width) {
  const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key), *e;
  int n = 0;
  assert_true(cJSON_IsArray(a));
  cJSON_ArrayForEach(e, a) {
    print_message("at %d px, %s: %s\n", width, key,
                  cJSON_IsString(e) ? e->valuestring : "?");
    n++;
  }
  return n;
}

/* Lay the page out at width px: no horizontal scroll, no cell overflow, no
 * clipped or overlapping chart label; and a screenshot kept. */
static void check_layout(const char *dir, const char *html, int width) {
  char check[700], url[800], shot[900], png[700], *page, *out = NULL, *s, *e;
  int bad = 0;
  cJSON *j;
  FILE *f;

  page = mg_h_read_file(html, NULL);
  assert_non_null(page);
  snprintf(check, sizeof(check), "%s/layout-%d.html", dir, width);
  f = fopen(check, "w");
  assert_non_null(f);
  e = strstr(page, "</body>");
  assert_non_null(e);
  fwrite(page, 1, (size_t)(e - page), f);
  fputs(MEASURE_JS, f);
  fputs(e, f);
  assert_int_equal(fclose(f), 0);
  free(page);

  snprintf(url, sizeof(url), "file://%s", check);
  assert_int_equal(browse_w(dir, url, "--dump-dom", width, &out), 0);
  assert_non_null(out);
  s = strstr(out, "<pre id=\"mg-layout\">");
  if (s == NULL)
    fail_msg("the measuring script did not run at %d px", width);
  s += strlen("<pre id=\"mg-layout\">");
  e = strstr(s, "</pre>");
  assert_non_null(e);
  *e = '\0';
  j = cJSON_Parse(s);
  if (j == NULL)
    fail_msg("layout results are not JSON: %.300s", s);
  print_message("at %d px: page %d px wide, %d chart labels measured\n",
                width,
                cJSON_GetObjectItemCaseSensitive(j, "scrollWidth")->valueint,
                cJSON_GetObjectItemCaseSensitive(j, "texts")->valueint);
  assert_int_equal(cJSON_GetObjectItemCaseSensitive(j, "width")->valueint,
                   width);
  assert_true(cJSON_GetObjectItemCaseSensitive(j, "texts")->valueint > 100);
  if (cJSON_GetObjectItemCaseSensitive(j, "scrollWidth")->valueint > width) {
    print_message("at %d px the page scrolls sideways\n", width);
    bad++;
  }
  bad += list(j, "scrollers", width);
  bad += list(j, "cells", width);
  bad += list(j, "clipped", width);
  bad += list(j, "overlaps", width);
  cJSON_Delete(j);
  free(out);
  if (bad)
    fail_msg("%d layout faults at %d px (listed above)", bad, width);

  /* The screenshot, kept where ctest leaves its output. */
  assert_true(mkdir(MG_ARTIFACT_DIR, 0755) == 0 || errno == EEXIST);
  snprintf(png, sizeof(png), "%s/report-%d.png", MG_ARTIFACT_DIR, width);
  snprintf(shot, sizeof(shot), "--screenshot=%s", png);
  snprintf(url, sizeof(url), "file://%s", html);
  assert_int_equal(browse_w(dir, url, shot, width, &out), 0);
  free(out);
  f = fopen(png, "rb");
  assert_non_null(f);
  fclose(f);
  print_message("screenshot at %d px: %s\n", width, png);
}

static void test_html_in_chromium(void **state) {
  struct rg_scen s;
  struct rg_truth t;
  char dir[256], paths[8][512], html[600], png[600], url[700], shot[700];
  char cfg[600];
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
  s.feedback = 0.3;
  assert_int_equal(mg_h_tmpdir(dir, sizeof(dir)), 0);
  rg_write(&s, dir, paths, &t);
  /* Cost, feedback and a decide rule: the quality table and the verdict
   * are laid out too. */
  snprintf(cfg, sizeof(cfg), "%s/config.json", dir);
  assert_int_equal(
      mg_h_write_file(cfg,
                      "{\"feedback\":{\"metrics\":{\"accuracy\":{\"type\":"
                      "\"boolean\"}}},\"flags\":{\"chat\":{\"decide\":{"
                      "\"metric\":\"accuracy\",\"min_lift\":0.02,"
                      "\"guardrails\":{\"error_rate\":{\"max_increase\":"
                      "0.005},\"p95_ms\":{\"max_ratio\":1.2}}}}}}"),
      0);
  snprintf(html, sizeof(html), "%s/report.html", dir);
  argv[0] = MG_BIN;
  argv[1] = "report";
  argv[2] = "--format";
  argv[3] = "html";
  argv[4] = "--out";
  argv[5] = html;
  argv[6] = paths[0];
  argv[7] = paths[1];
  argv[8] = "-c";
  argv[9] = cfg;
  argv[10] = NULL;
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
  /* Cost and feedback per flag, the verdict of chat's rule. */
  assert_non_null(strstr(out, "id=\"quality-0\""));
  assert_int_equal(count(out, "class=\"verdict\""), 1);
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
  /* The layout at the two widths people read it at. */
  check_layout(dir, html, 1280);
  check_layout(dir, html, 1920);
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
