/* flagbench.c - time one flag evaluation (issue 3: under 1 microsecond for
 * a flag with 5 rules and 3 variants). Requests are parsed beforehand, as
 * the proxy does once per request; only mg_flag_eval is timed.
 *
 *   build/mg-flagbench [EVALUATIONS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "routing/flag.h"

#define NREQ 1024

static const char *const CONFIG =
    "{\"targets\":{"
    "\"v1\":{\"base_url\":\"http://h/v1\",\"model\":\"m1\"},"
    "\"v2\":{\"base_url\":\"http://h/v1\",\"model\":\"m2\"},"
    "\"v3\":{\"base_url\":\"http://h/v1\",\"model\":\"m3\"}},"
    "\"flags\":{\"chat\":{\"off_variant\":\"control\","
    "\"block\":[\"banned-1\",\"banned-2\"],"
    "\"variants\":{"
    "\"control\":{\"target\":\"v1\",\"weight\":80,\"allow\":[\"qa-1\"]},"
    "\"treatment\":{\"target\":\"v2\",\"weight\":15,\"allow\":[\"beta-1\"]},"
    "\"large\":{\"target\":\"v3\",\"weight\":5}},"
    "\"rules\":["
    "{\"if\":{\"attr\":\"region\",\"op\":\"in\",\"values\":[\"cn\",\"ru\"]},"
    "\"variant\":\"control\"},"
    "{\"if\":{\"all\":[{\"attr\":\"tier\",\"op\":\"eq\",\"value\":\"enterprise\"},"
    "{\"input\":\"tools\",\"op\":\"gt\",\"value\":4}]},\"variant\":\"large\"},"
    "{\"if\":{\"input\":\"chars\",\"op\":\"gt\",\"value\":50000},"
    "\"variant\":\"control\"},"
    "{\"if\":{\"attr\":\"customer\",\"op\":\"prefix\",\"value\":\"internal-\"},"
    "\"variant\":\"treatment\"},"
    "{\"if\":{\"not\":{\"attr\":\"plan\",\"op\":\"exists\"}},"
    "\"variant\":\"control\"}]}},"
    "\"aliases\":{\"chat\":{\"flag\":\"chat\"}}}";

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv) {
  static char bodies[NREQ][512];
  static struct mg_json_doc docs[NREQ];
  static struct mg_request reqs[NREQ];
  static const char *const regions[] = {"eu", "us", "cn", "br"};
  static const char *const tiers[] = {"free", "pro", "enterprise"};
  long n = argc > 1 ? atol(argv[1]) : 20000000L, i;
  struct mg_cfg_errors e;
  struct mg_config *cfg;
  const struct mg_flag *f;
  struct mg_flag_state st;
  struct mg_flag_decision d;
  unsigned counts[4] = {0};
  double t0, t1;

  mg_cfg_errors_init(&e);
  cfg = mg_config_load_string(CONFIG, strlen(CONFIG), "bench", &e);
  if (cfg == NULL) {
    fprintf(stderr, "config: %s\n", e.n ? e.msgs[0] : "?");
    return 1;
  }
  f = mg_flags_find(&cfg->flags, "chat");
  mg_flag_state_init(&st, f);
  for (i = 0; i < NREQ; i++) {
    struct mg_request_error err;
    snprintf(bodies[i], sizeof(bodies[i]),
             "{\"model\":\"chat\",\"user\":\"user-%ld\",\"tools\":[%s],"
             "\"messages\":[{\"role\":\"user\",\"content\":\"question "
             "%ld\"}],\"metadata\":{\"region\":\"%s\",\"tier\":\"%s\","
             "\"customer\":\"%s-%ld\"%s}}",
             i, i % 7 == 0 ? "{},{},{},{},{}" : "{}", i, regions[i % 4],
             tiers[i % 3], i % 5 == 0 ? "internal" : "acme", i,
             i % 3 ? ",\"plan\":\"x\"" : "");
    mg_json_init(&docs[i], 10000);
    mg_request_init(&reqs[i], MG_EP_CHAT);
    if (mg_request_parse(&reqs[i], bodies[i], strlen(bodies[i]), &docs[i],
                         &err) != 0) {
      fprintf(stderr, "request %ld: %s\n", i, err.message);
      return 1;
    }
  }
  /* warm up */
  for (i = 0; i < 100000; i++)
    mg_flag_eval(f, &st, &reqs[i % NREQ], 0, (uint64_t)i, &d);
  t0 = now_ns();
  for (i = 0; i < n; i++) {
    mg_flag_eval(f, &st, &reqs[i & (NREQ - 1)], 0, (uint64_t)i, &d);
    counts[d.reason == MG_REASON_ROLLOUT ? 0 : d.reason == MG_REASON_RULE ? 1 : 2]++;
  }
  t1 = now_ns();
  printf("flag evaluation: %.1f ns per evaluation (%ld evaluations; flag with "
         "%u rules, %u variants; %.0f%% rollout, %.0f%% rule)\n",
         (t1 - t0) / n, n, f->nrules, f->nvariants, 100.0 * counts[0] / n,
         100.0 * counts[1] / n);
  for (i = 0; i < NREQ; i++) {
    mg_request_free(&reqs[i]);
    mg_json_free(&docs[i]);
  }
  mg_config_unref(cfg);
  mg_cfg_errors_free(&e);
  return 0;
}
