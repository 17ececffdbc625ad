/* harness.c - integration-test support (see harness.h).
 *
 * Children are started with fork/execve, their stdout and stderr going to a
 * log file in their own scratch directory, and every one of them is killed
 * at exit, so a failing test never leaves a process behind. Socket I/O uses
 * poll() with what is left of the caller's time budget. Responses are parsed
 * by hand (status line, headers, Content-Length, chunked, read-until-close)
 * and read with MSG_PEEK so that exactly one response is consumed: the bytes
 * of a pipelined next response stay in the socket for the next call. */

/* on_exit() (glibc) gives the exit status, so scratch directories are kept
 * when the test failed. Everything else here is POSIX. */
#define _DEFAULT_SOURCE 1

#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <cjson/cJSON.h>

#include "common/buf.h"

extern char **environ;

#define MAX_CHILDREN 128
#define MAX_DIRS 256
#define START_TIMEOUT_MS 10000
#define SEND_TIMEOUT_MS 10000
#define CONTROL_TIMEOUT_MS 5000
#define HEAD_MAX (1024 * 1024)
#define BODY_MAX ((size_t)1 << 30)
#define LOG_TAIL 8192

/* Every child ever started: pid 0 once reaped by mg_h_stop. */
static struct child {
  pid_t pid;
  bool reaped; /* waitpid() collected it; status is valid */
  int status;  /* raw wait status */
  char name[16];
  char log_file[320];
} children[MAX_CHILDREN];
static size_t nchildren;

static char *dirs[MAX_DIRS]; /* owned: scratch directories to remove */
static size_t ndirs;
static bool exit_hook_installed;

/* ---- time -----------------------------------------------------------------
 */

double mg_h_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

void mg_h_sleep_ms(int ms) {
  struct timespec ts, rem;
  if (ms <= 0)
    return;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (long)(ms % 1000) * 1000000L;
  while (nanosleep(&ts, &rem) != 0 && errno == EINTR)
    ts = rem;
}

/* Milliseconds left until deadline, at least 0, rounded up. */
static int left_ms(double deadline) {
  double d = deadline - mg_h_now_ms();
  if (d <= 0)
    return 0;
  return d > 2e9 ? 2000000000 : (int)d + 1;
}

/* ---- children and exit ----------------------------------------------------
 */

static struct child *child_of(pid_t pid) {
  size_t i;
  for (i = 0; i < nchildren; i++)
    if (children[i].pid == pid)
      return &children[i];
  return NULL;
}

/* Has the child exited? Collects its status once. */
static bool child_reap(struct child *ch, bool block) {
  int st;
  pid_t r;
  if (ch->reaped)
    return true;
  do
    r = waitpid(ch->pid, &st, block ? 0 : WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r == ch->pid || (r < 0 && errno == ECHILD)) {
    ch->reaped = true;
    ch->status = r == ch->pid ? st : 0;
    return true;
  }
  return false;
}

static void print_log_tail(const char *what, const char *path) {
  char buf[LOG_TAIL + 1];
  FILE *f = fopen(path, "r");
  long size;
  size_t n;

  if (f == NULL)
    return;
  fseek(f, 0, SEEK_END);
  size = ftell(f);
  if (size <= 0) {
    fclose(f);
    return;
  }
  if (size > LOG_TAIL)
    fseek(f, size - LOG_TAIL, SEEK_SET);
  else
    fseek(f, 0, SEEK_SET);
  n = fread(buf, 1, LOG_TAIL, f);
  fclose(f);
  buf[n] = '\0';
  fprintf(stderr, "---- %s log %s%s ----\n%s%s---- end of %s log ----\n", what,
          path, size > LOG_TAIL ? " (tail)" : "", buf,
          n && buf[n - 1] != '\n' ? "\n" : "", what);
}

static void kill_children(void) {
  size_t i;
  for (i = 0; i < nchildren; i++) {
    struct child *ch = &children[i];
    if (ch->pid > 0 && !child_reap(ch, false)) {
      kill(ch->pid, SIGKILL);
      child_reap(ch, true);
    }
  }
}

static void exit_hook_status(int status) {
  size_t i;
  kill_children();
  if (status == 0) {
    mg_h_cleanup_dirs();
    return;
  }
  /* A failed test: show what the servers said and keep their files. */
  for (i = 0; i < nchildren; i++)
    if (children[i].log_file[0])
      print_log_tail(children[i].name, children[i].log_file);
  for (i = 0; i < ndirs; i++)
    fprintf(stderr, "harness: kept %s\n", dirs[i]);
  for (i = 0; i < ndirs; i++)
    free(dirs[i]);
  ndirs = 0;
}

#ifdef __GLIBC__
static void exit_hook(int status, void *arg) {
  (void)arg;
  exit_hook_status(status);
}
#else
static void exit_hook(void) { exit_hook_status(0); }
#endif

static void install_exit_hook(void) {
  if (exit_hook_installed)
    return;
  exit_hook_installed = true;
#ifdef __GLIBC__
  on_exit(exit_hook, NULL);
#else
  atexit(exit_hook);
#endif
}

/* ---- files ----------------------------------------------------------------
 */

int mg_h_tmpdir(char *out, size_t n) {
  const char *base = getenv("TMPDIR");
  char tmpl[512];

  if (base == NULL || base[0] == '\0')
    base = "/tmp";
  if ((size_t)snprintf(tmpl, sizeof(tmpl), "%s/mgtest-XXXXXX", base) >=
      sizeof(tmpl))
    return -1;
  if (mkdtemp(tmpl) == NULL) {
    fprintf(stderr, "harness: mkdtemp %s: %s\n", tmpl, strerror(errno));
    return -1;
  }
  if (strlen(tmpl) >= n)
    return -1;
  strcpy(out, tmpl);
  install_exit_hook();
  if (ndirs < MAX_DIRS && (dirs[ndirs] = strdup(tmpl)) != NULL)
    ndirs++;
  return 0;
}

/* Set `engine` on every target and traditional tier of a config that does
 * not pin one and reaches a plain http:// URL (https:// stays on curl).
 * What MG_TEST_ENGINE asks for: the upstream tests run once per engine
 * (issue 17.3) from the same sources. */
static void pin_engine(cJSON *section, const char *url_key,
                       const char *engine) {
  cJSON *it;
  if (!cJSON_IsObject(section))
    return;
  cJSON_ArrayForEach(it, section) {
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(it, url_key);
    if (!cJSON_IsObject(it) || !cJSON_IsString(u) ||
        strncmp(u->valuestring, "http://", 7) != 0 ||
        cJSON_GetObjectItemCaseSensitive(it, "engine"))
      continue;
    cJSON_AddStringToObject(it, "engine", engine);
  }
}

static char *with_engine(const char *content) {
  const char *engine = getenv("MG_TEST_ENGINE");
  cJSON *root;
  char *out = NULL;
  if (engine == NULL || *engine == '\0' || strcmp(engine, "auto") == 0)
    return NULL;
  root = cJSON_Parse(content);
  if (cJSON_IsObject(root) &&
      cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "targets"))) {
    pin_engine(cJSON_GetObjectItemCaseSensitive(root, "targets"), "base_url",
               engine);
    pin_engine(cJSON_GetObjectItemCaseSensitive(root, "traditional"), "url",
               engine);
    out = cJSON_Print(root);
  }
  cJSON_Delete(root);
  return out;
}

int mg_h_write_file(const char *path, const char *content) {
  char *pinned = with_engine(content);
  const char *c = pinned ? pinned : content;
  size_t len = strlen(c);
  FILE *f = fopen(path, "w");
  int ok;
  if (f == NULL) {
    free(pinned);
    return -1;
  }
  ok = fwrite(c, 1, len, f) == len;
  ok = fclose(f) == 0 && ok;
  free(pinned);
  return ok ? 0 : -1;
}

char *mg_h_read_file(const char *path, size_t *len) {
  struct mg_buf b;
  char tmp[8192];
  size_t n;
  FILE *f = fopen(path, "r");

  if (f == NULL)
    return NULL;
  mg_buf_init(&b, BODY_MAX);
  while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
    if (mg_buf_append(&b, tmp, n) != 0) {
      fclose(f);
      mg_buf_free(&b);
      return NULL;
    }
  fclose(f);
  if (b.data == NULL) {
    if (len)
      *len = 0;
    return strdup("");
  }
  return mg_buf_steal(&b, len);
}

static void rm_rf(const char *path) {
  struct stat st;
  DIR *d;
  struct dirent *e;

  if (lstat(path, &st) != 0)
    return;
  if (!S_ISDIR(st.st_mode)) {
    unlink(path);
    return;
  }
  if ((d = opendir(path)) != NULL) {
    while ((e = readdir(d)) != NULL) {
      char sub[4096];
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
        continue;
      if ((size_t)snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name) <
          sizeof(sub))
        rm_rf(sub);
    }
    closedir(d);
  }
  rmdir(path);
}

void mg_h_cleanup_dirs(void) {
  const char *keep = getenv("MG_KEEP_TMP");
  size_t i;
  for (i = 0; i < ndirs; i++) {
    if (keep && *keep)
      fprintf(stderr, "harness: kept %s\n", dirs[i]);
    else
      rm_rf(dirs[i]);
    free(dirs[i]);
  }
  ndirs = 0;
}

/* ---- processes ------------------------------------------------------------
 */

/* In the child, between fork and exec: only async-signal-safe calls. */
static void child_setup(int out_fd, pid_t parent, const char *cwd) {
  long max = sysconf(_SC_OPEN_MAX), fd;
  int devnull;

#ifdef __linux__
  /* Die with the test process, even when it is SIGKILLed (ctest timeout). */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
  if (getppid() != parent)
    _exit(127);
  devnull = open("/dev/null", O_RDONLY);
  if (devnull >= 0 && devnull != 0) {
    dup2(devnull, 0);
    close(devnull);
  }
  dup2(out_fd, 1);
  dup2(out_fd, 2);
  /* No inherited sockets: a client socket the test closes must really
   * close (FIN), not live on in a server started after it. */
  if (max < 0 || max > 65536)
    max = 65536;
  for (fd = 3; fd < max; fd++)
    close((int)fd);
  if (cwd && chdir(cwd) != 0)
    _exit(127);
  /* The signal dispositions and mask of the test process are not the
   * child's business. */
  {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
  }
}

static int register_child(pid_t pid, const char *name, const char *log) {
  struct child *ch;
  if (nchildren == MAX_CHILDREN) {
    /* Reuse a slot of a child already stopped. */
    size_t i;
    for (i = 0; i < nchildren; i++)
      if (children[i].pid == 0)
        break;
    if (i == nchildren)
      return -1;
    ch = &children[i];
  } else {
    ch = &children[nchildren++];
  }
  memset(ch, 0, sizeof(*ch));
  ch->pid = pid;
  snprintf(ch->name, sizeof(ch->name), "%s", name);
  if (log)
    snprintf(ch->log_file, sizeof(ch->log_file), "%s", log);
  return 0;
}

/* Parse "listen=N\nadmin=N\n". The child writes it atomically; a missing
 * final newline means a child that does not, so wait. */
static bool read_port_file(struct mg_h_proc *p) {
  size_t len;
  char *s = mg_h_read_file(p->port_file, &len), *line, *save = NULL;
  bool ok = false;

  if (s == NULL)
    return false;
  if (len == 0 || s[len - 1] != '\n') {
    free(s);
    return false;
  }
  for (line = strtok_r(s, "\n", &save); line;
       line = strtok_r(NULL, "\n", &save)) {
    int port;
    if (sscanf(line, "listen=%d", &port) == 1 && port > 0 && port < 65536) {
      p->port = port;
      ok = true;
    } else if (sscanf(line, "admin=%d", &port) == 1 && port > 0 &&
               port < 65536) {
      p->admin_port = port;
    }
  }
  free(s);
  return ok;
}

static void describe_status(int st, char *out, size_t n) {
  if (WIFEXITED(st))
    snprintf(out, n, "exited with status %d", WEXITSTATUS(st));
  else if (WIFSIGNALED(st))
    snprintf(out, n, "killed by signal %d", WTERMSIG(st));
  else
    snprintf(out, n, "ended (wait status %d)", st);
}

/* Fork and exec argv with envp in a fresh scratch directory; wait for the
 * port file. */
static int start_child(struct mg_h_proc *p, const char *name,
                       const char *const *argv_in, size_t argc_fixed,
                       char *const *envp) {
  const char *argv[16];
  pid_t pid, parent = getpid();
  double deadline;
  int log_fd;
  size_t i;
  struct child *ch;
  char why[128];

  p->pid = 0;
  p->port = 0;
  p->admin_port = 0;
  if (mg_h_tmpdir(p->dir, sizeof(p->dir)) != 0)
    return -1;
  snprintf(p->port_file, sizeof(p->port_file), "%s/port", p->dir);
  snprintf(p->log_file, sizeof(p->log_file), "%s/%s.log", p->dir, name);
  for (i = 0; i < argc_fixed && i < 12; i++)
    argv[i] = argv_in[i];
  argv[i++] = "--port-file";
  argv[i++] = p->port_file;
  if (strcmp(name, "mock") == 0)
    argv[i++] = "--quiet";
  argv[i] = NULL;

  log_fd = open(p->log_file, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (log_fd < 0) {
    fprintf(stderr, "harness: %s: %s\n", p->log_file, strerror(errno));
    return -1;
  }
  fflush(NULL);
  pid = fork();
  if (pid < 0) {
    fprintf(stderr, "harness: fork: %s\n", strerror(errno));
    close(log_fd);
    return -1;
  }
  if (pid == 0) {
    child_setup(log_fd, parent, p->dir);
    execve(argv[0], (char *const *)argv, envp);
    {
      static const char msg[] = "harness: execve failed\n";
      ssize_t w = write(2, msg, sizeof(msg) - 1);
      (void)w;
    }
    _exit(127);
  }
  close(log_fd);
  if (register_child(pid, name, p->log_file) != 0) {
    fprintf(stderr, "harness: too many children\n");
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
  }
  p->pid = pid;
  ch = child_of(pid);

  deadline = mg_h_now_ms() + START_TIMEOUT_MS;
  for (;;) {
    if (read_port_file(p))
      return 0;
    if (child_reap(ch, false)) {
      describe_status(ch->status, why, sizeof(why));
      break;
    }
    if (mg_h_now_ms() > deadline) {
      snprintf(why, sizeof(why), "wrote no port file in %d ms",
               START_TIMEOUT_MS);
      kill(pid, SIGKILL);
      child_reap(ch, true);
      break;
    }
    mg_h_sleep_ms(5);
  }
  fprintf(stderr, "harness: %s (%s) failed to start: %s\n", name, argv[0], why);
  print_log_tail(name, p->log_file);
  ch->pid = 0;
  p->pid = 0;
  return -1;
}

int mg_h_start_mock(struct mg_h_proc *p) {
  return mg_h_start_mock_args(p, NULL);
}

int mg_h_start_mock_args(struct mg_h_proc *p, const char *const *extra) {
  const char *argv[12] = {MG_MOCK_BIN, "--listen", "127.0.0.1:0"};
  size_t n = 3;
  /* start_child adds --port-file, --quiet and the NULL: 4 slots. */
  while (extra && *extra && n < 12 - 4)
    argv[n++] = *extra++;
  if (extra && *extra) {
    fprintf(stderr, "harness: too many mock arguments\n");
    return -1;
  }
  return start_child(p, "mock", argv, n, environ);
}

/* The name part of "NAME=value". */
static size_t env_name_len(const char *kv) {
  const char *eq = strchr(kv, '=');
  return eq ? (size_t)(eq - kv) : strlen(kv);
}

int mg_h_start_gate(struct mg_h_proc *p, const char *config_path,
                    const char *const *env) {
  char config[4096];
  const char *argv[4];
  char **envp;
  size_t n = 0, extra = 0, i, j;
  int rc;

  /* The child runs in its scratch directory (relative paths in the config,
   * a decision log say, land there), so the config path must not be
   * relative to ours. */
  if (config_path[0] == '/') {
    snprintf(config, sizeof(config), "%s", config_path);
  } else {
    char cwd[2048];
    if (getcwd(cwd, sizeof(cwd)) == NULL)
      return -1;
    snprintf(config, sizeof(config), "%s/%s", cwd, config_path);
  }
  while (environ[n])
    n++;
  while (env && env[extra])
    extra++;
  if ((envp = calloc(n + extra + 1, sizeof(*envp))) == NULL)
    return -1;
  /* The extra variables override inherited ones of the same name. */
  for (i = 0, j = 0; i < n; i++) {
    size_t k, nl = env_name_len(environ[i]);
    bool overridden = false;
    for (k = 0; k < extra; k++)
      if (env_name_len(env[k]) == nl && strncmp(env[k], environ[i], nl) == 0)
        overridden = true;
    if (!overridden)
      envp[j++] = environ[i];
  }
  for (i = 0; i < extra; i++)
    envp[j++] = (char *)env[i];
  envp[j] = NULL;

  argv[0] = MG_BIN;
  argv[1] = "serve";
  argv[2] = "-c";
  argv[3] = config;
  rc = start_child(p, "modelgate", argv, 4, envp);
  free(envp);
  return rc;
}

int mg_h_run(const char *const *argv, char **out, int timeout_ms) {
  struct mg_buf b;
  int fds[2], st = 0, rc = -1;
  pid_t pid, parent = getpid();
  double deadline = mg_h_now_ms() + timeout_ms;
  bool timed_out = false;

  if (out)
    *out = NULL;
  if (pipe(fds) != 0)
    return -1;
  fcntl(fds[0], F_SETFD, FD_CLOEXEC);
  fflush(NULL);
  pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return -1;
  }
  if (pid == 0) {
    child_setup(fds[1], parent, NULL);
    execvp(argv[0], (char *const *)argv);
    _exit(127);
  }
  close(fds[1]);
  mg_buf_init(&b, 64 * 1024 * 1024);
  for (;;) {
    struct pollfd pfd = {fds[0], POLLIN, 0};
    char tmp[8192];
    ssize_t n;
    int pr = poll(&pfd, 1, left_ms(deadline));
    if (pr < 0 && errno == EINTR)
      continue;
    if (pr <= 0) {
      timed_out = true;
      break;
    }
    n = read(fds[0], tmp, sizeof(tmp));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    if (mg_buf_append(&b, tmp, (size_t)n) != 0)
      break; /* past 64 MiB: keep what fits */
  }
  close(fds[0]);
  if (!timed_out) {
    /* Output closed: the command is ending; wait for it in the budget. */
    for (;;) {
      pid_t r = waitpid(pid, &st, WNOHANG);
      if (r == pid) {
        rc = WIFEXITED(st)     ? WEXITSTATUS(st)
             : WIFSIGNALED(st) ? 128 + WTERMSIG(st)
                               : -1;
        break;
      }
      if (r < 0 && errno != EINTR)
        break;
      if (mg_h_now_ms() > deadline) {
        timed_out = true;
        break;
      }
      mg_h_sleep_ms(2);
    }
  }
  if (timed_out) {
    fprintf(stderr, "harness: %s timed out after %d ms\n", argv[0], timeout_ms);
    kill(pid, SIGKILL);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
      ;
    rc = -1;
  }
  if (out) {
    *out = mg_buf_steal(&b, NULL);
    if (*out == NULL)
      *out = strdup("");
  }
  mg_buf_free(&b);
  return rc;
}

int mg_h_stop(struct mg_h_proc *p, int sig, int timeout_ms) {
  struct child *ch;
  double deadline = mg_h_now_ms() + timeout_ms;
  int st, rc;

  if (p->pid <= 0 || (ch = child_of(p->pid)) == NULL)
    return -1;
  if (!ch->reaped)
    kill(p->pid, sig);
  while (!child_reap(ch, false)) {
    if (mg_h_now_ms() > deadline) {
      fprintf(stderr,
              "harness: %s (pid %d) still running %d ms after "
              "signal %d: SIGKILL\n",
              ch->name, (int)p->pid, timeout_ms, sig);
      kill(p->pid, SIGKILL);
      child_reap(ch, true);
      print_log_tail(ch->name, ch->log_file);
      ch->pid = 0;
      p->pid = 0;
      return -1;
    }
    mg_h_sleep_ms(2);
  }
  st = ch->status;
  rc = WIFEXITED(st)     ? WEXITSTATUS(st)
       : WIFSIGNALED(st) ? 128 + WTERMSIG(st)
                         : -1;
  if (rc != 0) {
    /* An unclean exit (a sanitizer report, a crash): show why. */
    char why[128];
    describe_status(st, why, sizeof(why));
    fprintf(stderr, "harness: %s (pid %d) %s\n", ch->name, (int)p->pid, why);
    print_log_tail(ch->name, ch->log_file);
  }
  ch->pid = 0;
  p->pid = 0;
  return rc;
}

bool mg_h_alive(struct mg_h_proc *p) {
  struct child *ch;
  if (p->pid <= 0 || (ch = child_of(p->pid)) == NULL)
    return false;
  return !child_reap(ch, false);
}

/* ---- sockets --------------------------------------------------------------
 */

int mg_h_connect(int port) {
  struct sockaddr_in sa;
  int fd, one = 1;

  fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  /* A server started later must not inherit the test's sockets. */
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    if (errno == EINTR)
      continue;
    close(fd);
    return -1;
  }
  return fd;
}

static int send_until(int fd, const void *buf, size_t n, double deadline) {
  const char *p = buf;
  while (n > 0) {
    struct pollfd pfd = {fd, POLLOUT, 0};
    ssize_t w;
    int pr = poll(&pfd, 1, left_ms(deadline));
    if (pr < 0 && errno == EINTR)
      continue;
    if (pr <= 0)
      return -1;
    w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
        continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

int mg_h_send(int fd, const void *buf, size_t n) {
  return send_until(fd, buf, n, mg_h_now_ms() + SEND_TIMEOUT_MS);
}

int mg_h_sends(int fd, const char *s) { return mg_h_send(fd, s, strlen(s)); }

bool mg_h_wait_closed(int fd, int timeout_ms) {
  double deadline = mg_h_now_ms() + timeout_ms;
  char tmp[16384];
  for (;;) {
    struct pollfd pfd = {fd, POLLIN, 0};
    ssize_t n;
    int pr = poll(&pfd, 1, left_ms(deadline));
    if (pr < 0 && errno == EINTR)
      continue;
    if (pr <= 0)
      return false;
    n = recv(fd, tmp, sizeof(tmp), MSG_DONTWAIT);
    if (n == 0)
      return true;
    if (n < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
      return true;
  }
}

/* ---- responses ------------------------------------------------------------
 */

enum rp_state {
  RP_HEAD,       /* status line and headers, up to the empty line */
  RP_LENGTH,     /* Content-Length body */
  RP_CHUNK_SIZE, /* a chunk-size line */
  RP_CHUNK_DATA,
  RP_CHUNK_END, /* the CRLF after a chunk's data */
  RP_TRAILERS,  /* trailer lines up to the empty line */
  RP_UNTIL_EOF, /* neither length nor chunked: the body ends at close */
  RP_DONE
};

struct rp {
  enum rp_state state;
  struct mg_buf head; /* raw head of the final response */
  struct mg_buf body; /* de-chunked body */
  struct mg_buf line; /* a chunk-size or trailer line */
  unsigned long long left;
  bool head_request;
  bool bad;        /* unparseable: stop */
  bool conn_close; /* Connection: close, or HTTP/1.0 */
};

/* Does the comma-separated header value contain token (case-insensitive)? */
static bool has_token(const char *v, const char *token) {
  size_t tl = strlen(token);
  while (*v) {
    const char *end;
    size_t l;
    while (*v == ' ' || *v == '\t' || *v == ',')
      v++;
    end = v;
    while (*end && *end != ',')
      end++;
    l = (size_t)(end - v);
    while (l && (v[l - 1] == ' ' || v[l - 1] == '\t'))
      l--;
    if (l == tl && strncasecmp(v, token, tl) == 0)
      return true;
    v = end;
  }
  return false;
}

static const char *header_in(const char *head, const char *name, char *out,
                             size_t n) {
  size_t nl = strlen(name);
  const char *line;

  if (head == NULL || n == 0)
    return NULL;
  line = strchr(head, '\n');
  while (line) {
    const char *end, *v;
    size_t vl;
    line++;
    end = strchr(line, '\n');
    if (end == NULL)
      end = line + strlen(line);
    if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
      v = line + nl + 1;
      while (v < end && (*v == ' ' || *v == '\t'))
        v++;
      vl = (size_t)(end - v);
      while (vl && (v[vl - 1] == '\r' || v[vl - 1] == ' ' || v[vl - 1] == '\t'))
        vl--;
      if (vl >= n)
        vl = n - 1;
      memcpy(out, v, vl);
      out[vl] = '\0';
      return out;
    }
    line = *end ? end : NULL;
  }
  return NULL;
}

const char *mg_h_header(const struct mg_h_resp *r, const char *name, char *out,
                        size_t n) {
  return header_in(r->head, name, out, n);
}

/* The head is complete: decide how the body is framed. */
static void rp_head_done(struct rp *p, struct mg_h_resp *r) {
  char v[1024];
  int status = 0, minor = 1;

  if (sscanf(p->head.data, "HTTP/1.%d %d", &minor, &status) != 2 ||
      status < 100 || status > 999) {
    p->bad = true;
    return;
  }
  if (status < 200 && status != 101) {
    /* An interim response (100 Continue): the real one follows. */
    mg_buf_reset(&p->head);
    return;
  }
  r->status = status;
  p->conn_close = minor == 0;
  if (header_in(p->head.data, "connection", v, sizeof(v)))
    p->conn_close =
        has_token(v, "close") || (minor == 0 && !has_token(v, "keep-alive"));
  if (p->head_request || status == 204 || status == 304 || status == 101) {
    p->state = RP_DONE;
  } else if (header_in(p->head.data, "transfer-encoding", v, sizeof(v)) &&
             has_token(v, "chunked")) {
    r->chunked = true;
    p->state = RP_CHUNK_SIZE;
  } else if (header_in(p->head.data, "content-length", v, sizeof(v))) {
    char *end;
    errno = 0;
    p->left = strtoull(v, &end, 10);
    if (errno || end == v || *end) {
      p->bad = true;
      return;
    }
    p->state = p->left ? RP_LENGTH : RP_DONE;
  } else {
    p->state = RP_UNTIL_EOF;
  }
}

/* Feed bytes; returns how many belong to this response. */
static size_t rp_feed(struct rp *p, struct mg_h_resp *r, const char *d,
                      size_t n) {
  size_t i = 0;

  while (i < n && p->state != RP_DONE && !p->bad) {
    switch (p->state) {
    case RP_HEAD:
      if (mg_buf_append(&p->head, d + i, 1) != 0) {
        p->bad = true;
        break;
      }
      i++;
      if (p->head.len >= 2 && p->head.data[p->head.len - 1] == '\n' &&
          (p->head.data[p->head.len - 2] == '\n' ||
           (p->head.len >= 4 &&
            memcmp(p->head.data + p->head.len - 4, "\r\n\r\n", 4) == 0)))
        rp_head_done(p, r);
      break;
    case RP_LENGTH:
    case RP_CHUNK_DATA: {
      size_t take = n - i;
      if (take > p->left)
        take = (size_t)p->left;
      if (mg_buf_append(&p->body, d + i, take) != 0) {
        p->bad = true;
        break;
      }
      i += take;
      p->left -= take;
      if (p->left == 0)
        p->state = p->state == RP_LENGTH ? RP_DONE : RP_CHUNK_END;
      break;
    }
    case RP_UNTIL_EOF:
      if (mg_buf_append(&p->body, d + i, n - i) != 0)
        p->bad = true;
      i = n;
      break;
    case RP_CHUNK_SIZE:
    case RP_CHUNK_END:
    case RP_TRAILERS:
      if (mg_buf_append(&p->line, d + i, 1) != 0) {
        p->bad = true;
        break;
      }
      i++;
      if (p->line.data[p->line.len - 1] != '\n')
        break;
      if (p->state == RP_CHUNK_END) {
        if (!(p->line.len == 2 && p->line.data[0] == '\r'))
          p->bad = true;
        p->state = RP_CHUNK_SIZE;
      } else if (p->state == RP_TRAILERS) {
        if (p->line.len <= 2)
          p->state = RP_DONE;
      } else {
        char *end;
        errno = 0;
        p->left = strtoull(p->line.data, &end, 16);
        if (errno || end == p->line.data ||
            (*end != '\r' && *end != ';' && *end != '\n'))
          p->bad = true;
        else
          p->state = p->left ? RP_CHUNK_DATA : RP_TRAILERS;
      }
      mg_buf_reset(&p->line);
      break;
    default:
      break;
    }
  }
  return i;
}

static int read_response(int fd, struct mg_h_resp *r, int timeout_ms,
                         bool head_request) {
  double start = mg_h_now_ms(), deadline = start + timeout_ms;
  struct rp p;
  char tmp[65536];

  memset(r, 0, sizeof(*r));
  memset(&p, 0, sizeof(p));
  mg_buf_init(&p.head, HEAD_MAX);
  mg_buf_init(&p.body, BODY_MAX);
  mg_buf_init(&p.line, 4096);
  p.head_request = head_request;

  while (p.state != RP_DONE && !p.bad && mg_h_now_ms() < deadline) {
    struct pollfd pfd = {fd, POLLIN, 0};
    ssize_t n;
    size_t used;
    int pr = poll(&pfd, 1, left_ms(deadline));

    if (pr < 0 && errno == EINTR)
      continue;
    if (pr <= 0)
      break; /* out of time */
    n = recv(fd, tmp, sizeof(tmp), MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
      continue;
    if (n <= 0) {
      /* Closed (0) or reset (ECONNRESET): a body that runs to the close is
       * complete now; anything else is cut short. */
      r->closed = true;
      if (p.state == RP_UNTIL_EOF)
        p.state = RP_DONE;
      break;
    }
    /* Consume exactly the bytes of this response. */
    used = rp_feed(&p, r, tmp, (size_t)n);
    if (used > 0 && recv(fd, tmp, used, MSG_DONTWAIT) < 0)
      break;
  }
  r->complete = p.state == RP_DONE && !p.bad;
  if (r->complete && !r->closed) {
    /* Did the server close after it? Wait for the close it announced (in
     * the budget); otherwise only look. */
    struct pollfd pfd = {fd, POLLIN, 0};
    int wait = p.conn_close ? left_ms(deadline) : 0;
    if (wait > 1000)
      wait = 1000;
    if (poll(&pfd, 1, wait) > 0) {
      ssize_t n = recv(fd, tmp, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n == 0 ||
          (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        r->closed = true;
    }
  }
  r->head = mg_buf_steal(&p.head, NULL);
  if (r->head == NULL)
    r->head = strdup("");
  r->body = mg_buf_steal(&p.body, &r->body_len);
  if (r->body == NULL) {
    r->body = strdup("");
    r->body_len = 0;
  }
  mg_buf_free(&p.line);
  r->ms = mg_h_now_ms() - start;
  return r->complete ? 0 : -1;
}

int mg_h_read_response(int fd, struct mg_h_resp *r, int timeout_ms) {
  return read_response(fd, r, timeout_ms, false);
}

void mg_h_resp_free(struct mg_h_resp *r) {
  free(r->head);
  free(r->body);
  r->head = NULL;
  r->body = NULL;
  r->body_len = 0;
}

int mg_h_request(int port, const char *method, const char *path,
                 const char *extra_headers, const char *body,
                 struct mg_h_resp *r, int timeout_ms) {
  double start = mg_h_now_ms(), deadline = start + timeout_ms;
  struct mg_buf req;
  int fd, rc;
  size_t blen = body ? strlen(body) : 0;
  char ct[8];

  mg_buf_init(&req, BODY_MAX);
  rc = mg_buf_printf(&req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n", method,
                     path, port);
  if (rc == 0 && extra_headers)
    rc = mg_buf_puts(&req, extra_headers);
  if (rc == 0 && body) {
    char with_nl[4096];
    /* A Content-Type among the extra headers wins over ours. */
    snprintf(with_nl, sizeof(with_nl), "\r\n%s",
             extra_headers ? extra_headers : "");
    if (!header_in(with_nl, "content-type", ct, sizeof(ct)))
      rc = mg_buf_puts(&req, "Content-Type: application/json\r\n");
    if (rc == 0)
      rc = mg_buf_printf(&req, "Content-Length: %zu\r\n", blen);
  }
  if (rc == 0)
    rc = mg_buf_puts(&req, "\r\n");
  if (rc == 0 && body)
    rc = mg_buf_append(&req, body, blen);
  fd = rc == 0 ? mg_h_connect(port) : -1;
  if (fd < 0) {
    mg_buf_free(&req);
    memset(r, 0, sizeof(*r));
    r->head = strdup("");
    r->body = strdup("");
    r->ms = mg_h_now_ms() - start;
    return -1;
  }
  /* A server may answer (and close) before reading all of the body: read
   * the response even when sending failed. */
  (void)send_until(fd, req.data, req.len, deadline);
  mg_buf_free(&req);
  rc = read_response(fd, r, left_ms(deadline), strcmp(method, "HEAD") == 0);
  close(fd);
  r->ms = mg_h_now_ms() - start;
  return rc;
}

/* ---- mock control ---------------------------------------------------------
 */

static int control(int port, const char *method, const char *json) {
  struct mg_h_resp r;
  int rc = mg_h_request(port, method, "/_mock/behaviour", NULL, json, &r,
                        CONTROL_TIMEOUT_MS);
  if (rc != 0 || r.status != 200) {
    fprintf(stderr, "harness: %s /_mock/behaviour %s -> %d %s\n", method,
            json ? json : "", r.status, r.body);
    rc = -1;
  }
  mg_h_resp_free(&r);
  return rc;
}

int mg_h_mock_set(int mock_port, const char *json) {
  return control(mock_port, "POST", json);
}

int mg_h_mock_reset(int mock_port) {
  return control(mock_port, "DELETE", NULL);
}

char *mg_h_mock_stats(int mock_port) {
  struct mg_h_resp r;
  char *s = NULL;
  if (mg_h_request(mock_port, "GET", "/_mock/stats", NULL, NULL, &r,
                   CONTROL_TIMEOUT_MS) == 0 &&
      r.status == 200) {
    s = r.body;
    r.body = NULL;
  } else {
    fprintf(stderr, "harness: GET /_mock/stats -> %d\n", r.status);
  }
  mg_h_resp_free(&r);
  return s;
}

/* ---- JSON -----------------------------------------------------------------
 */

/* Resolve an RFC 6901 pointer. */
static const cJSON *json_at(const cJSON *v, const char *ptr) {
  if (*ptr == '\0')
    return v;
  if (*ptr != '/')
    return NULL;
  while (v && *ptr == '/') {
    char tok[1024];
    size_t n = 0;
    ptr++;
    while (*ptr && *ptr != '/') {
      char ch = *ptr++;
      if (ch == '~') {
        if (*ptr == '0')
          ch = '~';
        else if (*ptr == '1')
          ch = '/';
        else
          return NULL;
        ptr++;
      }
      if (n + 1 >= sizeof(tok))
        return NULL;
      tok[n++] = ch;
    }
    tok[n] = '\0';
    if (cJSON_IsObject(v)) {
      v = cJSON_GetObjectItemCaseSensitive(v, tok);
    } else if (cJSON_IsArray(v)) {
      char *end;
      long i;
      if (n == 0 || (n > 1 && tok[0] == '0'))
        return NULL;
      i = strtol(tok, &end, 10);
      if (*end || i < 0)
        return NULL;
      v = cJSON_GetArrayItem(v, (int)i);
    } else {
      return NULL;
    }
  }
  return v;
}

double mg_h_json_num(const char *json, const char *pointer, double def) {
  cJSON *root = json ? cJSON_Parse(json) : NULL;
  const cJSON *v = root ? json_at(root, pointer) : NULL;
  double d = def;
  if (cJSON_IsNumber(v))
    d = v->valuedouble;
  else if (cJSON_IsBool(v))
    d = cJSON_IsTrue(v) ? 1 : 0;
  cJSON_Delete(root);
  return d;
}

const char *mg_h_json_str(const char *json, const char *pointer, char *out,
                          size_t n) {
  cJSON *root = json ? cJSON_Parse(json) : NULL;
  const cJSON *v = root ? json_at(root, pointer) : NULL;
  const char *res = NULL;

  if (v && n > 0) {
    /* A string is copied as is; any other value in its compact JSON form
     * (handy to compare an object or an array). */
    char *printed = cJSON_IsString(v) ? NULL : cJSON_PrintUnformatted(v);
    const char *s = cJSON_IsString(v) ? v->valuestring : printed;
    if (s) {
      snprintf(out, n, "%s", s);
      res = out;
    }
    free(printed);
  }
  cJSON_Delete(root);
  return res;
}
