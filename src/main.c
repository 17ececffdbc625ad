/* main.c - the modelgate command line. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "brief/brief.h"
#include "common/log.h"
#include "common/time.h"
#include "config/config.h"
#include "app/process.h"
#include "report/report.h"

/* conf/demo.json, compiled in (CMakeLists.txt). */
extern const char mg_demo_config[];
extern const size_t mg_demo_config_len;

static void usage(FILE *f) {
  fprintf(f,
          "usage: modelgate <command> [options]\n"
          "\n"
          "commands:\n"
          "  serve [-c FILE] [--port-file FILE] run the proxy (without -c: the\n"
          "                                     built-in demo config, "
          "conf/demo.json)\n"
          "  check -c FILE                      validate a config, print every "
          "error\n"
          "  report [options] LOG...            cohort analysis of decision "
          "logs\n"
          "                                     (modelgate report --help)\n"
          "  brief -c FILE FLAG [--start RFC3339] [--format text|markdown]\n"
          "                                     the flag's release brief and "
          "CS handoff\n"
          "  version                            print the version\n"
          "\n"
          "serve exits 0 after SIGTERM or SIGINT once requests in flight have "
          "finished,\n"
          "2 when the config is invalid, 1 on other failures.\n");
}

static struct mg_config *load(const char *path) {
  struct mg_cfg_errors e;
  struct mg_config *cfg;
  size_t i;

  mg_cfg_errors_init(&e);
  if (path == NULL) {
    path = "<built-in demo config>";
    cfg = mg_config_load_string(mg_demo_config, mg_demo_config_len, path, &e);
  } else {
    cfg = mg_config_load_file(path, &e);
  }
  for (i = 0; i < e.n; i++)
    fprintf(stderr, "%s: %s\n", path, e.msgs[i]);
  if (cfg == NULL)
    fprintf(stderr, "%s: %zu error%s\n", path, e.n, e.n == 1 ? "" : "s");
  mg_cfg_errors_free(&e);
  return cfg;
}

static int cmd_check(const char *path) {
  struct mg_config *cfg = load(path);
  if (cfg == NULL)
    return 2;
  printf("%s: ok (config %s, %zu targets, %zu aliases)\n", path, cfg->hash,
         cfg->targets.n, cfg->routes.n);
  mg_config_unref(cfg);
  return 0;
}

static int cmd_serve(const char *path, const char *port_file) {
  struct mg_config *cfg;
  int code;

  cfg = load(path);
  if (cfg == NULL) {
    mg_error("refusing to start with an invalid config");
    return 2;
  }
  /* A client that disconnects must not kill the process with SIGPIPE. */
  signal(SIGPIPE, SIG_IGN);
  /* Before any thread: curl's global state is set up once. */
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    mg_config_unref(cfg);
    return 1;
  }
  code = mg_process_serve(cfg, path, port_file);
  mg_config_unref(cfg);
  curl_global_cleanup();
  return code;
}

/* modelgate brief -c FILE FLAG [--start RFC3339] [--format text|markdown] */
static int cmd_brief(int argc, char **argv) {
  const char *config = NULL, *flag = NULL;
  enum mg_brief_format fmt = MG_BRIEF_TEXT;
  int64_t start = mg_wall_ms();
  struct mg_config *cfg;
  struct mg_buf out;
  char admin[160];
  size_t i;
  int k, rc;

  for (k = 2; k < argc; k++) {
    if ((strcmp(argv[k], "-c") == 0 || strcmp(argv[k], "--config") == 0) &&
        k + 1 < argc)
      config = argv[++k];
    else if (strcmp(argv[k], "--start") == 0 && k + 1 < argc) {
      if (mg_rfc3339_parse(argv[++k], &start) != 0) {
        fprintf(stderr, "modelgate brief: --start %s is not RFC 3339\n",
                argv[k]);
        return 2;
      }
    } else if (strcmp(argv[k], "--format") == 0 && k + 1 < argc) {
      k++;
      if (strcmp(argv[k], "text") == 0)
        fmt = MG_BRIEF_TEXT;
      else if (strcmp(argv[k], "markdown") == 0)
        fmt = MG_BRIEF_MARKDOWN;
      else {
        fprintf(stderr, "modelgate brief: --format is text or markdown\n");
        return 2;
      }
    } else if (argv[k][0] != '-' && flag == NULL)
      flag = argv[k];
    else {
      fprintf(stderr, "modelgate brief: unknown argument: %s\n", argv[k]);
      return 2;
    }
  }
  if (config == NULL || flag == NULL) {
    fprintf(stderr, "usage: modelgate brief -c FILE FLAG [--start RFC3339] "
                    "[--format text|markdown]\n");
    return 2;
  }
  if ((cfg = load(config)) == NULL)
    return 2;
  for (i = 0; i < cfg->flags.n; i++)
    if (strcmp(cfg->flags.v[i].name, flag) == 0)
      break;
  if (i == cfg->flags.n) {
    fprintf(stderr, "modelgate brief: %s has no flag %s\n", config, flag);
    mg_config_unref(cfg);
    return 2;
  }
  snprintf(admin, sizeof(admin), "%s:%d", cfg->admin.listen_host,
           cfg->admin.listen_port);
  mg_buf_init(&out, 4u << 20);
  rc = mg_brief_render(&cfg->flags.v[i],
                       i < cfg->briefs.n ? &cfg->briefs.v[i] : NULL,
                       i < cfg->ramps.n ? &cfg->ramps.v[i] : NULL, admin,
                       start, fmt, &out);
  if (rc == 0)
    fwrite(out.data, 1, out.len, stdout);
  mg_buf_free(&out);
  mg_config_unref(cfg);
  return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  const char *config = NULL, *port_file = NULL, *cmd;
  int i;

  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  cmd = argv[1];
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
    printf("modelgate %s\n", MG_VERSION);
    return 0;
  }
  if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 ||
      strcmp(cmd, "-h") == 0) {
    usage(stdout);
    return 0;
  }
  /* report has options of its own (src/report/report.h). */
  if (strcmp(cmd, "report") == 0)
    return mg_report_main(argc - 1, argv + 1);
  if (strcmp(cmd, "brief") == 0)
    return cmd_brief(argc, argv);
  for (i = 2; i < argc; i++) {
    if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) &&
        i + 1 < argc)
      config = argv[++i];
    else if (strcmp(argv[i], "--port-file") == 0 && i + 1 < argc)
      port_file = argv[++i];
    else {
      fprintf(stderr, "modelgate: unknown argument: %s\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }
  if (strcmp(cmd, "serve") == 0 && config == NULL) {
    mg_warn("no -c FILE given: serving the built-in demo config "
            "(conf/demo.json; upstream: mg-mock on 127.0.0.1:9900)");
    return cmd_serve(NULL, port_file);
  }
  if (strcmp(cmd, "serve") == 0 || strcmp(cmd, "check") == 0) {
    if (config == NULL) {
      fprintf(stderr, "modelgate %s: -c FILE is required\n", cmd);
      return 2;
    }
    return cmd[0] == 's' ? cmd_serve(config, port_file) : cmd_check(config);
  }
  fprintf(stderr, "modelgate: unknown command: %s\n", cmd);
  usage(stderr);
  return 2;
}
