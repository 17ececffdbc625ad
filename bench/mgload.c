/* mgload.c - send exactly N POST requests over C keep-alive connections and
 * report throughput and latency percentiles. Used by bench/run.sh for the
 * callgrind instruction counts (which need an exact request count) and for
 * the idle-connection memory figure. Not a general load generator: wrk is
 * used for throughput. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int dial(int port) {
  struct sockaddr_in a;
  int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
    perror("connect");
    exit(1);
  }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

/* Read one response with Content-Length framing; returns its status. */
static int read_response(int fd, char *buf, size_t cap) {
  size_t len = 0;
  for (;;) {
    ssize_t n = read(fd, buf + len, cap - len - 1);
    char *hend, *cl;
    if (n <= 0)
      return -1;
    len += (size_t)n;
    buf[len] = 0;
    hend = strstr(buf, "\r\n\r\n");
    if (!hend)
      continue;
    cl = strcasestr(buf, "content-length:");
    if (!cl || cl > hend)
      return -1;
    if (len >= (size_t)(hend + 4 - buf) + strtoul(cl + 15, NULL, 10))
      return atoi(buf + 9);
  }
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  int port, conns, i, idle_only = 0, errors = 0;
  long n, done = 0;
  const char *path = "/v1/chat/completions";
  const char *auth = NULL, *header = NULL;
  const char *body = "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":"
                     "\"user\",\"content\":\"Say hello to the benchmark, "
                     "please.\"}]}";
  char req[16384], *buf;
  double *lat, t0;
  int *fds;

  if (argc < 4) {
    fprintf(stderr, "usage: mgload PORT CONNS REQUESTS [--idle SECONDS] "
                    "[--body JSON] [--auth KEY] [--path PATH] "
                    "[--header 'Name: value']\n"
                    "  --idle: open CONNS connections, send one request on "
                    "each, then hold them idle\n"
                    "  --body: the request body (default: a small chat "
                    "completion request)\n"
                    "  --auth: send Authorization: Bearer KEY, as an SDK "
                    "does\n"
                    "  --path: the request path (default "
                    "/v1/chat/completions)\n"
                    "  --header: one more request header\n");
    return 2;
  }
  port = atoi(argv[1]);
  conns = atoi(argv[2]);
  n = atol(argv[3]);
  if (conns < 1 || conns > 100000 || n < 0) {
    fprintf(stderr, "mgload: CONNS must be 1..100000, REQUESTS >= 0\n");
    return 2;
  }
  for (i = 4; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--idle") == 0)
      idle_only = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--body") == 0)
      body = argv[i + 1];
    else if (strcmp(argv[i], "--auth") == 0)
      auth = argv[i + 1];
    else if (strcmp(argv[i], "--path") == 0)
      path = argv[i + 1];
    else if (strcmp(argv[i], "--header") == 0)
      header = argv[i + 1];
  }
  snprintf(req, sizeof(req),
           "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s%s%s%sContent-Type: "
           "application/json\r\nContent-Length: %zu\r\n\r\n%s",
           path, auth ? "Authorization: Bearer " : "", auth ? auth : "",
           auth ? "\r\n" : "", header ? header : "", header ? "\r\n" : "",
           strlen(body), body);
  buf = malloc(1 << 20);
  fds = calloc((size_t)conns, sizeof(int));
  lat = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
  for (i = 0; i < conns; i++)
    fds[i] = dial(port);
  if (idle_only) {
    for (i = 0; i < conns; i++) {
      if (write(fds[i], req, strlen(req)) < 0 ||
          read_response(fds[i], buf, 1 << 20) != 200)
        errors++;
    }
    printf("idle: %d connections open, %d errors\n", conns, errors);
    fflush(stdout);
    sleep((unsigned)idle_only);
    return errors != 0;
  }
  /* Round-robin, one request in flight per connection at a time, all
   * connections in flight together. */
  t0 = now_us();
  {
    double *sent = calloc((size_t)conns, sizeof(double));
    struct pollfd *pf = calloc((size_t)conns, sizeof(*pf));
    long issued = 0;
    for (i = 0; i < conns && issued < n; i++, issued++) {
      sent[i] = now_us();
      if (write(fds[i], req, strlen(req)) < 0)
        return 1;
    }
    while (done < n) {
      int k;
      for (i = 0; i < conns; i++) {
        pf[i].fd = fds[i];
        pf[i].events = POLLIN;
      }
      k = poll(pf, (nfds_t)conns, 10000);
      if (k <= 0) {
        fprintf(stderr, "mgload: timeout\n");
        return 1;
      }
      for (i = 0; i < conns; i++) {
        if (!(pf[i].revents & POLLIN))
          continue;
        if (read_response(fds[i], buf, 1 << 20) != 200)
          errors++;
        lat[done++] = now_us() - sent[i];
        if (issued < n) {
          issued++;
          sent[i] = now_us();
          if (write(fds[i], req, strlen(req)) < 0)
            return 1;
        }
      }
    }
    free(sent);
    free(pf);
  }
  {
    double el = now_us() - t0;
    qsort(lat, (size_t)n, sizeof(double), cmp);
    printf("requests=%ld errors=%d seconds=%.3f rps=%.0f p50_us=%.1f "
           "p99_us=%.1f\n",
           n, errors, el / 1e6, n / (el / 1e6), lat[n / 2],
           lat[(size_t)(n * 0.99)]);
  }
  for (i = 0; i < conns; i++)
    close(fds[i]);
  free(buf);
  free(fds);
  free(lat);
  return errors != 0;
}
