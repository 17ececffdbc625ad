/* report.c - the `modelgate report` command line: options, reading every
 * LOG, analysing, rendering, writing. */
#include "report/report.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/cfg.h"
#include "decisions/decide.h"
#include "decisions/feedback.h"
#include "report/analysis.h"
#include "report/reader.h"
#include "report/render.h"

/* Rendered reports are small next to the logs; this only bounds a bug. */
#define MG_REPORT_MAX_OUTPUT (512u << 20)
/* A config file larger than this is not one. */
#define MG_REPORT_MAX_CONFIG (16u << 20)

/* The whole of a regular file, NUL-terminated, at most max bytes; NULL
 * with errno set. */
static char *slurp(const char *path, size_t max, size_t *len) {
  char *buf = NULL;
  size_t cap = 0, n = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC), saved;
  if (fd < 0)
    return NULL;
  for (;;) {
    ssize_t got;
    if (n + 1 >= cap) {
      char *nb;
      if (cap >= max) {
        errno = EFBIG;
        goto fail;
      }
      cap = cap ? cap * 2 : 65536;
      nb = realloc(buf, cap);
      if (nb == NULL)
        goto fail;
      buf = nb;
    }
    got = read(fd, buf + n, cap - n - 1);
    if (got < 0) {
      if (errno == EINTR)
        continue;
      goto fail;
    }
    if (got == 0)
      break;
    n += (size_t)got;
  }
  close(fd);
  buf[n] = '\0';
  *len = n;
  return buf;
fail:
  saved = errno;
  close(fd);
  free(buf);
  errno = saved;
  return NULL;
}

const char mg_report_usage[] =
    "usage: modelgate report [-c CONFIG] [--control VARIANT] [--flag NAME]\n"
    "                        [--by endpoint] [--format text|json|html]\n"
    "                        [--out FILE] LOG...\n"
    "  Cohort analysis of decision logs (JSON lines; several files from\n"
    "  several instances; \"-\" reads stdin). Per flag and variant: units,\n"
    "  requests, error, fallback and low-confidence rates, confidence,\n"
    "  latency and tokens; each treatment against the control with 95%\n"
    "  intervals and p-values computed per unit; sample-ratio, cohort-\n"
    "  balance, cross-flag and input-axis checks. Exits 0 when the report\n"
    "  was written (alarms or not), 1 when a log or the output failed,\n"
    "  2 on a usage error.\n"
    "  -c CONFIG          the proxy's config file (plain JSON): feedback\n"
    "                     metrics' types and directions, each flag's\n"
    "                     decide rule (a verdict per treatment)\n"
    "  --by endpoint      one section per flag and endpoint (chat,\n"
    "                     responses, messages, ...)\n"
    "  --control VARIANT  the variant to compare against (default: the\n"
    "                     flag's off_variant in the -c config, else as\n"
    "                     the records show it, else \"control\", else the\n"
    "                     largest logged weight)\n"
    "  --flag NAME        report this flag only\n"
    "  --format FORMAT    text (default), json, or html (a self-contained\n"
    "                     page with charts)\n"
    "  --out FILE         write the report to FILE instead of stdout\n";

enum format { FMT_TEXT, FMT_JSON, FMT_HTML };

struct args {
  struct mg_rp_options opt;
  const char *config;  /* borrowed from argv, or NULL */
  bool by_endpoint;
  enum format format;
  const char *out;   /* borrowed from argv, or NULL: stdout */
  char **logs;       /* borrowed from argv */
  int nlogs;
};

static int usage_error(const char *fmt, const char *arg) {
  fputs("modelgate report: ", stderr);
  fprintf(stderr, fmt, arg);
  fputs("\n", stderr);
  fputs(mg_report_usage, stderr);
  return 2;
}

/* The value of option name at argv[*i]: "--name VALUE" or "--name=VALUE".
 * NULL when argv[*i] is not that option; *missing when it is, without a
 * value. */
static const char *opt_value(int argc, char **argv, int *i, const char *name,
                             bool *missing) {
  size_t n = strlen(name);
  if (strncmp(argv[*i], name, n) != 0)
    return NULL;
  if (argv[*i][n] == '=')
    return argv[*i] + n + 1;
  if (argv[*i][n] != '\0')
    return NULL;
  if (*i + 1 >= argc) {
    *missing = true;
    return NULL;
  }
  return argv[++*i];
}

/* 0, 2 on a usage error (printed), or -1 for --help (printed). */
static int parse_args(int argc, char **argv, struct args *a) {
  bool only_logs = false;
  int i;

  memset(a, 0, sizeof(*a));
  a->logs = calloc((size_t)argc + 1, sizeof(char *));
  if (a->logs == NULL)
    return 2;
  for (i = 1; i < argc; i++) {
    const char *arg = argv[i], *v;
    bool missing = false;
    if (only_logs || arg[0] != '-' || strcmp(arg, "-") == 0) {
      a->logs[a->nlogs++] = argv[i];
      continue;
    }
    if (strcmp(arg, "--") == 0) {
      only_logs = true;
      continue;
    }
    if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
      fputs(mg_report_usage, stdout);
      return -1;
    }
    if ((v = opt_value(argc, argv, &i, "-c", &missing)) != NULL ||
        (!missing &&
         (v = opt_value(argc, argv, &i, "--config", &missing)) != NULL)) {
      a->config = v;
    } else if ((v = opt_value(argc, argv, &i, "--by", &missing)) != NULL) {
      if (strcmp(v, "endpoint") != 0)
        return usage_error("--by takes \"endpoint\", not %s", v);
      a->by_endpoint = true;
    } else if ((v = opt_value(argc, argv, &i, "--control", &missing)) != NULL) {
      a->opt.control = v;
    } else if ((v = opt_value(argc, argv, &i, "--flag", &missing)) != NULL) {
      a->opt.flag = v;
    } else if ((v = opt_value(argc, argv, &i, "--out", &missing)) != NULL ||
               (!missing &&
                (v = opt_value(argc, argv, &i, "-o", &missing)) != NULL)) {
      a->out = v;
    } else if ((v = opt_value(argc, argv, &i, "--format", &missing)) !=
               NULL) {
      if (strcmp(v, "text") == 0)
        a->format = FMT_TEXT;
      else if (strcmp(v, "json") == 0)
        a->format = FMT_JSON;
      else if (strcmp(v, "html") == 0)
        a->format = FMT_HTML;
      else
        return usage_error("unknown format: %s (text, json or html)", v);
    } else if (missing) {
      return usage_error("%s needs a value", arg);
    } else {
      return usage_error("unknown option: %s", arg);
    }
    if (v[0] == '\0')
      return usage_error("%s needs a non-empty value", arg);
  }
  if (a->nlogs == 0)
    return usage_error("%s", "no LOG given");
  return 0;
}

/* Parsers per large file: the processors online (at most 8), or
 * MG_REPORT_THREADS. */
static unsigned threads(void) {
  const char *env = getenv("MG_REPORT_THREADS");
  long n = env && *env ? strtol(env, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
  if (n < 1)
    n = 1;
  return n > 8 ? 8 : (unsigned)n;
}

/* The config's feedback metrics and decide rules. */
struct config {
  struct mg_feedback_config feedback;
  struct mg_rp_decide_rule *rules; /* owned: nrules, each rule owned */
  size_t nrules;
  cJSON *json;                     /* owned: the flag names live in it */
};

static void config_free(struct config *c) {
  size_t i;
  mg_feedback_config_free(&c->feedback);
  for (i = 0; i < c->nrules; i++)
    if (c->rules[i].has_rule)
      mg_decide_free(&c->rules[i].rule);
  free(c->rules);
  cJSON_Delete(c->json);
  memset(c, 0, sizeof(*c));
}

/* Read path as plain JSON (the report does not need the proxy's loader):
 * "feedback" and every "flags.<name>.decide". 0, or 1 with messages
 * naming the JSON path of every error. */
static int config_load(struct config *c, const char *path) {
  struct mg_cfg_errors e;
  const cJSON *flags, *f;
  size_t len = 0, i, n = 0;
  char *text;
  int rc = 1;

  memset(c, 0, sizeof(*c));
  mg_cfg_errors_init(&e);
  text = slurp(path, MG_REPORT_MAX_CONFIG, &len);
  if (text == NULL) {
    fprintf(stderr, "modelgate report: cannot read %s: %s\n", path,
            strerror(errno));
    goto out;
  }
  c->json = cJSON_ParseWithLength(text, len);
  free(text);
  if (c->json == NULL || !cJSON_IsObject(c->json)) {
    fprintf(stderr, "modelgate report: %s is not a JSON object\n", path);
    goto out;
  }
  if (mg_feedback_parse(cJSON_GetObjectItemCaseSensitive(c->json, "feedback"),
                        "$.feedback", &c->feedback, &e) == -ENOMEM)
    goto out;
  flags = cJSON_GetObjectItemCaseSensitive(c->json, "flags");
  if (cJSON_IsObject(flags)) {
    cJSON_ArrayForEach(f, flags) n++;
    c->rules = calloc(n ? n : 1, sizeof(*c->rules));
    if (c->rules == NULL)
      goto out;
    cJSON_ArrayForEach(f, flags) {
      const cJSON *d = cJSON_GetObjectItemCaseSensitive(f, "decide");
      const cJSON *off = cJSON_GetObjectItemCaseSensitive(f, "off_variant");
      char p[MG_CFG_PATH_MAX], dp[MG_CFG_PATH_MAX];
      struct mg_rp_decide_rule *r;
      r = &c->rules[c->nrules++];
      r->flag = f->string;
      r->off_variant = cJSON_IsString(off) ? off->valuestring : NULL;
      if (d == NULL)
        continue;
      mg_cfg_join(p, "$.flags", f->string);
      mg_cfg_join(dp, p, "decide");
      r->has_rule = true;
      if (mg_decide_parse(d, dp, &r->rule, &e) == -ENOMEM)
        goto out;
      if (r->rule.metric && c->feedback.nmetrics &&
          !mg_feedback_metric(&c->feedback, r->rule.metric)) {
        char mp[MG_CFG_PATH_MAX];
        mg_cfg_join(mp, dp, "metric");
        mg_cfg_error(&e, mp, "names no metric of feedback.metrics");
      }
    }
  } else if (flags) {
    mg_cfg_error(&e, "$.flags", "must be an object");
  }
  if (e.n) {
    for (i = 0; i < e.n; i++)
      fprintf(stderr, "modelgate report: %s: %s\n", path, e.msgs[i]);
    goto out;
  }
  rc = 0;
out:
  mg_cfg_errors_free(&e);
  return rc;
}

/* Read every log; 0, or 1 with a message. */
static int read_logs(struct mg_rp_log *log, const struct args *a) {
  bool stdin_used = false;
  int i;

  for (i = 0; i < a->nlogs; i++) {
    const char *path = a->logs[i];
    int fd, rc;
    if (strcmp(path, "-") == 0) {
      if (stdin_used) {
        fprintf(stderr, "modelgate report: \"-\" (stdin) given twice\n");
        return 1;
      }
      stdin_used = true;
      rc = mg_rp_read_fd(log, 0, "<stdin>");
    } else {
      fd = open(path, O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        fprintf(stderr, "modelgate report: cannot read %s: %s\n", path,
                strerror(errno));
        return 1;
      }
      rc = mg_rp_read_fd(log, fd, path);
      close(fd);
    }
    if (rc) {
      fprintf(stderr, "modelgate report: cannot read %s: %s\n",
              strcmp(path, "-") == 0 ? "<stdin>" : path, strerror(-rc));
      return 1;
    }
  }
  return 0;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Write the rendered report; 0, or 1 with a message. */
static int write_out(const struct args *a, const struct mg_buf *b) {
  int fd = 1, rc;

  if (a->out) {
    fd = open(a->out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
      fprintf(stderr, "modelgate report: cannot write %s: %s\n", a->out,
              strerror(errno));
      return 1;
    }
  }
  rc = write_all(fd, b->data ? b->data : "", b->len);
  if (a->out && close(fd) != 0 && rc == 0)
    rc = -errno;
  if (rc) {
    fprintf(stderr, "modelgate report: cannot write %s: %s\n",
            a->out ? a->out : "<stdout>", strerror(-rc));
    return 1;
  }
  return 0;
}

static void no_such_flag(const struct mg_rp_log *log, const char *name) {
  size_t i;
  int k = 0;
  fprintf(stderr, "modelgate report: no records for flag \"%s\" in the logs",
          name);
  for (i = 0; i < log->nflags; i++)
    if (log->flags[i]->records > 0)
      fprintf(stderr, "%s%s", k++ ? ", " : " (flags seen: ",
              log->flags[i]->name);
  fprintf(stderr, "%s\n", k ? ")" : " (no flagged records at all)");
}

int mg_report_main(int argc, char **argv) {
  struct mg_rp_report report;
  struct mg_rp_log log;
  struct config cfg;
  struct mg_buf out;
  struct args a;
  int rc, code = 1;

  mg_rp_log_init(&log);
  mg_buf_init(&out, MG_REPORT_MAX_OUTPUT);
  memset(&report, 0, sizeof(report));
  memset(&cfg, 0, sizeof(cfg));
  rc = parse_args(argc, argv, &a);
  if (rc) {
    code = rc < 0 ? 0 : rc;
    goto out;
  }
  if (a.config) {
    if (config_load(&cfg, a.config))
      goto out;
    a.opt.feedback = &cfg.feedback;
    a.opt.rules = cfg.rules;
    a.opt.nrules = cfg.nrules;
  }
  log.threads = threads();
  log.by_endpoint = a.by_endpoint;
  if (read_logs(&log, &a))
    goto out;
  if (mg_rp_log_join(&log)) {
    fprintf(stderr, "modelgate report: %s\n", strerror(ENOMEM));
    goto out;
  }
  rc = mg_rp_analyze(&log, &a.opt, &report);
  if (rc == -ENOENT) {
    no_such_flag(&log, a.opt.flag);
    goto out;
  }
  if (rc == 0)
    rc = a.format == FMT_JSON   ? mg_rp_render_json(&report, &out)
         : a.format == FMT_HTML ? mg_rp_render_html(&report, &out)
                                : mg_rp_render_text(&report, &out);
  if (rc) {
    fprintf(stderr, "modelgate report: %s\n", strerror(-rc));
    goto out;
  }
  code = write_out(&a, &out);
out:
  mg_rp_report_free(&report);
  mg_rp_log_free(&log);
  mg_buf_free(&out);
  config_free(&cfg);
  free(a.logs);
  return code;
}
