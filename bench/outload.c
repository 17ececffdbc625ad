/* outload.c - closed-loop HTTP/1.1 load with a record of every request, for
 * bench/outage.sh. wrk reports latency percentiles but cannot say which
 * upstream served each answer, nor what happened to the first requests of an
 * outage compared with the later ones; this does both:
 *
 *   outload -p PORT -c CONNS -d SECONDS [-n MAX_REQUESTS] [-t TIMEOUT_MS]
 *           -b BODY [-H 'Name: value']... [-k TOKEN] [-x HEADER]
 *           [-N PHASE_N] [-s SLOW_MS] [-l LOGFILE]
 *
 * CONNS keep-alive connections each keep one POST in flight until SECONDS
 * have passed or MAX_REQUESTS were sent (both bounds always apply); requests
 * in flight at the end are waited for (at most TIMEOUT_MS) and counted. A
 * request unanswered after TIMEOUT_MS counts as an error (timeout) and its
 * connection is replaced; so is a connection the server closes or resets
 * (socket error). An answer containing TOKEN in its body was served by the
 * upstream that puts TOKEN there (the healthy fallback); HEADER's values are
 * tallied (e.g. x-modelgate-fallback). A request slower than SLOW_MS "waited"
 * (for the primary's timeout). The first PHASE_N requests, by send time, are
 * summarized apart from the rest.
 *
 * Output on stdout, one "key value..." line each (see the end of main).
 * LOGFILE gets one line per request: send time (us from the start), latency
 * (us), status (0: timeout or socket error), served (b: TOKEN, o: other, -:
 * no 2xx answer), HEADER's value. Exit 0 when the load ran, 2 on bad usage,
 * 1 when it could not run at all. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEADERS 16
#define BUF_CAP (4 << 20)
#define TALLY_MAX 16
#define VALUE_MAX 64

/* 16 bytes a request: the default bound of 4 million requests needs 64 MB. */
struct rec {
  double sent;         /* us since start */
  float latency;       /* us (exact to the us up to 16 s) */
  short status;        /* 0: no answer */
  char served;         /* 'b', 'o', '-' */
  unsigned char value; /* index into values[], NO_VALUE: none */
};
#define NO_VALUE 255

struct conn {
  int fd;
  int busy;      /* a request is in flight */
  double sent;   /* when it was sent */
  size_t len;    /* bytes in buf */
  char *buf;
};

static struct rec *recs;
static long nrecs, caprecs;
/* The distinct values of the tallied header, in order of appearance; "-"
 * (absent) and "(other)" (beyond TALLY_MAX distinct values) included. */
static char values[TALLY_MAX + 2][VALUE_MAX];
static int nvalues;

static unsigned char value_index(const char *v, size_t vlen) {
  char tmp[VALUE_MAX];
  int i;
  if (v == NULL)
    return NO_VALUE;
  if (vlen >= VALUE_MAX)
    vlen = VALUE_MAX - 1;
  memcpy(tmp, v, vlen);
  tmp[vlen] = 0;
  for (i = 0; i < nvalues; i++)
    if (strcmp(values[i], tmp) == 0)
      return (unsigned char)i;
  if (nvalues == TALLY_MAX) {
    snprintf(values[nvalues], VALUE_MAX, "(other)");
    return (unsigned char)nvalues;
  }
  snprintf(values[nvalues], VALUE_MAX, "%s", tmp);
  return (unsigned char)nvalues++;
}
static const char *token, *tally_header;

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int dial(int port) {
  struct sockaddr_in a;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  if (fd < 0)
    return -1;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

static int send_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t k = write(fd, p, n);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      return -1;
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

/* Value of header NAME in the header block [h, end), or NULL. */
static const char *find_header(const char *h, const char *end, const char *name,
                               size_t *vlen) {
  size_t nl = strlen(name);
  const char *p = memchr(h, '\n', (size_t)(end - h)); /* skip status line */
  while (p != NULL && p + 1 < end) {
    const char *line = p + 1, *eol = memchr(line, '\n', (size_t)(end - line));
    if (eol == NULL)
      eol = end;
    if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 &&
        line[nl] == ':') {
      const char *v = line + nl + 1;
      while (v < eol && (*v == ' ' || *v == '\t'))
        v++;
      *vlen = (size_t)(eol - v);
      while (*vlen > 0 && (v[*vlen - 1] == '\r' || v[*vlen - 1] == ' '))
        (*vlen)--;
      return v;
    }
    p = eol < end ? eol : NULL;
  }
  return NULL;
}

/* Is a complete response in buf? Returns its total length (0: not yet,
 * -1: malformed); *status, *body and *blen describe it (a chunked body is
 * searched in place, chunk framing included, which is harmless for TOKEN). */
static long complete(const char *buf, size_t len, int *status, const char **body,
                     size_t *blen) {
  const char *hend = memmem(buf, len, "\r\n\r\n", 4), *v;
  size_t vlen, hlen;
  if (hend == NULL)
    return len > 65536 ? -1 : 0;
  hlen = (size_t)(hend + 4 - buf);
  if (len < 12 || strncmp(buf, "HTTP/1.", 7) != 0)
    return -1;
  *status = atoi(buf + 9);
  *body = buf + hlen;
  if ((v = find_header(buf, hend + 2, "content-length", &vlen)) != NULL) {
    size_t cl = strtoul(v, NULL, 10);
    if (len < hlen + cl)
      return 0;
    *blen = cl;
    return (long)(hlen + cl);
  }
  if ((v = find_header(buf, hend + 2, "transfer-encoding", &vlen)) != NULL &&
      vlen >= 7 && strncasecmp(v + vlen - 7, "chunked", 7) == 0) {
    size_t off = hlen;
    for (;;) {
      const char *eol = memmem(buf + off, len - off, "\r\n", 2);
      size_t sz;
      if (eol == NULL)
        return 0;
      sz = strtoul(buf + off, NULL, 16);
      off = (size_t)(eol - buf) + 2;
      if (sz == 0) { /* no trailers expected: final CRLF */
        if (len < off + 2)
          return 0;
        *blen = off - hlen;
        return (long)(off + 2);
      }
      if (len < off + sz + 2)
        return 0;
      off += sz + 2;
    }
  }
  if (*status == 204 || *status == 304) {
    *blen = 0;
    return (long)hlen;
  }
  return -1; /* close-delimited bodies are not expected from these servers */
}

static void record(double sent, double latency, int status, char served,
                   const char *v, size_t vlen) {
  struct rec *r;
  if (nrecs == caprecs) {
    caprecs = caprecs ? caprecs * 2 : 65536;
    recs = realloc(recs, (size_t)caprecs * sizeof(*recs));
    if (recs == NULL) {
      perror("outload: realloc");
      exit(1);
    }
  }
  r = &recs[nrecs++];
  r->sent = sent;
  r->latency = (float)latency;
  r->status = (short)status;
  r->served = served;
  r->value = value_index(v, vlen);
}

static const char *value_of(const struct rec *r) {
  return r->value == NO_VALUE ? "-" : values[r->value];
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
static int cmp_sent(const void *a, const void *b) {
  const struct rec *x = a, *y = b;
  return x->sent < y->sent ? -1 : x->sent > y->sent;
}

/* Nearest-rank percentile of sorted v[0..n). */
static double pct(const double *v, long n, double p) {
  long k;
  if (n == 0)
    return 0;
  k = (long)(p / 100.0 * n + 0.999999) - 1;
  if (k < 0)
    k = 0;
  if (k >= n)
    k = n - 1;
  return v[k];
}

/* "name n p50 p99 max waited" over recs[from, to), latency in us. */
static void summary(const char *name, long from, long to, double slow_us) {
  long n = to > from ? to - from : 0, i, waited = 0;
  double *v = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
  for (i = 0; i < n; i++) {
    v[i] = (double)recs[from + i].latency;
    if (v[i] >= slow_us)
      waited++;
  }
  qsort(v, (size_t)n, sizeof(double), cmp_double);
  printf("%s %ld %.0f %.0f %.0f %ld\n", name, n, pct(v, n, 50), pct(v, n, 99),
         n ? v[n - 1] : 0.0, waited);
  free(v);
}

static void usage(void) {
  fprintf(stderr,
          "usage: outload -p PORT -c CONNS -d SECONDS [-n MAX_REQUESTS] "
          "[-t TIMEOUT_MS]\n               -b BODY [-H 'Name: value']... [-k "
          "TOKEN] [-x HEADER] [-N PHASE_N]\n               [-s SLOW_MS] [-l "
          "LOGFILE]\n");
  exit(2);
}

int main(int argc, char **argv) {
  int port = 0, nconns = 8, nh = 0, opt, i;
  long max_requests = 4000000, phase_n = 20, issued = 0;
  long sock_err = 0, timeouts = 0, non2xx = 0, backup = 0, other = 0;
  double seconds = 20, timeout_ms = 30000, slow_ms = 1e18, t0, deadline, t_end;
  const char *body = NULL, *headers[MAX_HEADERS], *logfile = NULL;
  char *req;
  size_t reqlen, cap;
  struct conn *conns;
  struct pollfd *pf;

  while ((opt = getopt(argc, argv, "p:c:d:n:t:b:H:k:x:N:s:l:")) != -1) {
    switch (opt) {
    case 'p': port = atoi(optarg); break;
    case 'c': nconns = atoi(optarg); break;
    case 'd': seconds = atof(optarg); break;
    case 'n': max_requests = atol(optarg); break;
    case 't': timeout_ms = atof(optarg); break;
    case 'b': body = optarg; break;
    case 'H':
      if (nh == MAX_HEADERS)
        usage();
      headers[nh++] = optarg;
      break;
    case 'k': token = optarg; break;
    case 'x': tally_header = optarg; break;
    case 'N': phase_n = atol(optarg); break;
    case 's': slow_ms = atof(optarg); break;
    case 'l': logfile = optarg; break;
    default: usage();
    }
  }
  if (port <= 0 || nconns <= 0 || seconds <= 0 || max_requests <= 0 ||
      timeout_ms <= 0 || body == NULL)
    usage();

  cap = strlen(body) + 512;
  for (i = 0; i < nh; i++)
    cap += strlen(headers[i]) + 2;
  req = malloc(cap);
  reqlen = (size_t)snprintf(req, cap,
                            "POST /v1/chat/completions HTTP/1.1\r\nHost: "
                            "127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                            "Content-Length: %zu\r\n",
                            port, strlen(body));
  for (i = 0; i < nh; i++)
    reqlen += (size_t)snprintf(req + reqlen, cap - reqlen, "%s\r\n", headers[i]);
  reqlen += (size_t)snprintf(req + reqlen, cap - reqlen, "\r\n%s", body);

  conns = calloc((size_t)nconns, sizeof(*conns));
  pf = calloc((size_t)nconns, sizeof(*pf));
  for (i = 0; i < nconns; i++) {
    conns[i].buf = malloc(BUF_CAP);
    conns[i].fd = dial(port);
    if (conns[i].fd < 0) {
      fprintf(stderr, "outload: cannot connect to 127.0.0.1:%d: %s\n", port,
                      strerror(errno));
      return 1;
    }
  }

  t0 = now_us();
  deadline = t0 + seconds * 1e6;
  for (;;) {
    double now = now_us();
    int inflight = 0, k;
    /* Send on every idle connection while both bounds allow. */
    for (i = 0; i < nconns; i++) {
      struct conn *c = &conns[i];
      if (!c->busy && now < deadline && issued < max_requests) {
        if (c->fd < 0 && (c->fd = dial(port)) < 0) {
          sock_err++;
          continue; /* retried on the next turn */
        }
        c->sent = now_us();
        c->len = 0;
        if (send_all(c->fd, req, reqlen) != 0) {
          record(c->sent - t0, now_us() - c->sent, 0, '-', NULL, 0);
          sock_err++;
          close(c->fd);
          c->fd = -1;
          issued++;
          continue;
        }
        c->busy = 1;
        issued++;
      }
      inflight += c->busy;
    }
    if (inflight == 0 && (now >= deadline || issued >= max_requests))
      break;
    for (i = 0; i < nconns; i++) {
      pf[i].fd = conns[i].busy ? conns[i].fd : -1;
      pf[i].events = POLLIN;
      pf[i].revents = 0;
    }
    k = poll(pf, (nfds_t)nconns, inflight ? 50 : 10);
    if (k < 0 && errno != EINTR) {
      perror("outload: poll");
      return 1;
    }
    now = now_us();
    for (i = 0; i < nconns; i++) {
      struct conn *c = &conns[i];
      if (!c->busy)
        continue;
      if (pf[i].revents & (POLLIN | POLLERR | POLLHUP)) {
        ssize_t n = read(c->fd, c->buf + c->len, BUF_CAP - c->len);
        int status = 0;
        const char *b = NULL, *v = NULL;
        size_t blen = 0, vlen = 0;
        long total;
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
          continue;
        if (n <= 0) { /* closed or reset before a whole answer */
          record(c->sent - t0, now_us() - c->sent, 0, '-', NULL, 0);
          sock_err++;
          close(c->fd);
          c->fd = -1;
          c->busy = 0;
          continue;
        }
        c->len += (size_t)n;
        total = complete(c->buf, c->len, &status, &b, &blen);
        if (total == 0 && c->len < BUF_CAP)
          continue;
        if (total <= 0) { /* malformed or too large */
          record(c->sent - t0, now_us() - c->sent, 0, '-', NULL, 0);
          sock_err++;
          close(c->fd);
          c->fd = -1;
          c->busy = 0;
          continue;
        }
        {
          const char *hend = memmem(c->buf, c->len, "\r\n\r\n", 4);
          char served = '-';
          size_t cl;
          if (tally_header)
            v = find_header(c->buf, hend + 2, tally_header, &vlen);
          if (status >= 200 && status < 300) {
            served = token && memmem(b, blen, token, strlen(token)) ? 'b' : 'o';
            if (served == 'b')
              backup++;
            else
              other++;
          } else {
            non2xx++;
          }
          record(c->sent - t0, now_us() - c->sent, status, served, v, vlen);
          c->busy = 0;
          /* A server that says it closes: open a new connection next time. */
          if (find_header(c->buf, hend + 2, "connection", &cl) != NULL &&
              strncasecmp(find_header(c->buf, hend + 2, "connection", &cl),
                          "close", 5) == 0) {
            close(c->fd);
            c->fd = -1;
          } else if ((size_t)total < c->len) { /* unexpected extra bytes */
            close(c->fd);
            c->fd = -1;
          }
        }
      } else if (now - c->sent > timeout_ms * 1e3) {
        record(c->sent - t0, now - c->sent, 0, '-', NULL, 0);
        timeouts++;
        close(c->fd);
        c->fd = -1;
        c->busy = 0;
      }
    }
  }
  t_end = now_us();

  qsort(recs, (size_t)nrecs, sizeof(*recs), cmp_sent);
  if (logfile) {
    FILE *f = fopen(logfile, "w");
    long j;
    if (f == NULL) {
      perror(logfile);
      return 1;
    }
    for (j = 0; j < nrecs; j++)
      fprintf(f, "%.0f\t%.0f\t%d\t%c\t%s\n", recs[j].sent, (double)recs[j].latency,
              recs[j].status, recs[j].served, value_of(&recs[j]));
    fclose(f);
  }
  {
    double slow_us = slow_ms * 1e3, el = (t_end - t0) / 1e6;
    long first = phase_n < nrecs ? phase_n : nrecs, j, none = 0;
    long counts[TALLY_MAX + 2] = {0};
    int t;
    printf("requests %ld\n", nrecs);
    printf("seconds %.3f\n", el);
    printf("rps %.2f\n", nrecs / el);
    printf("errors %ld\n", non2xx + sock_err + timeouts);
    printf("non2xx %ld\n", non2xx);
    printf("socket_errors %ld\n", sock_err);
    printf("timeouts %ld\n", timeouts);
    printf("served_backup %ld\n", backup);
    printf("served_other %ld\n", other);
    /* name n p50_us p99_us max_us waited */
    summary("all", 0, nrecs, slow_us);
    summary("first", 0, first, slow_us);
    summary("rest", first, nrecs, slow_us);
    for (j = 0; j < nrecs; j++) {
      if (recs[j].value == NO_VALUE)
        none++;
      else
        counts[recs[j].value]++;
    }
    for (t = 0; t <= nvalues && t < TALLY_MAX + 1; t++)
      if (counts[t] > 0)
        printf("tally %s %ld\n", values[t], counts[t]);
    if (none > 0)
      printf("tally - %ld\n", none);
  }
  for (i = 0; i < nconns; i++) {
    if (conns[i].fd >= 0)
      close(conns[i].fd);
    free(conns[i].buf);
  }
  free(conns);
  free(pf);
  free(req);
  free(recs);
  return 0;
}
