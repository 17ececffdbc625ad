/* harness.h - integration-test support: start the real binaries on loopback
 * ports chosen at run time, talk raw HTTP/1.1 to them, and stop them.
 *
 * Everything here is blocking and bounded by explicit timeouts so a broken
 * server fails a test instead of hanging CI. */
#ifndef MG_HARNESS_H
#define MG_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* A child process started by the harness. */
struct mg_h_proc {
  pid_t pid;             /* 0 when not running */
  int port;              /* main listener, read from the port file */
  int admin_port;        /* admin listener (modelgate only), or 0 */
  char dir[256];         /* scratch directory of this process */
  char port_file[320];   /* "listen=PORT\nadmin=PORT\n" written by the child */
  char log_file[320];    /* the child's stderr */
};

/* A fresh scratch directory under $TMPDIR (or /tmp); removed by
 * mg_h_cleanup_dirs() at exit when the test passed. */
int mg_h_tmpdir(char *out, size_t n);
int mg_h_write_file(const char *path, const char *content);
/* Read a whole file into a fresh NUL-terminated buffer (NULL on error). */
char *mg_h_read_file(const char *path, size_t *len);

/* Start mg-mock on 127.0.0.1:0 and wait (up to 10 s) for its port file. */
int mg_h_start_mock(struct mg_h_proc *p);
/* The same with extra arguments (NULL-ended, at most 5: "--name", "a"). */
int mg_h_start_mock_args(struct mg_h_proc *p, const char *const *extra);
/* Start `modelgate serve -c config_path --port-file ...`. env: extra
 * "NAME=value" strings added to the child's environment (NULL-ended, may be
 * NULL). Waits up to 10 s for the port file. */
int mg_h_start_gate(struct mg_h_proc *p, const char *config_path,
                    const char *const *env);
/* Run a command to completion; returns its exit status (or -1), capturing
 * stdout+stderr into *out (malloc'd, may be NULL). */
int mg_h_run(const char *const *argv, char **out, int timeout_ms);
/* Send sig and wait up to timeout_ms for exit. Returns the exit status
 * (0..255), 128+signal when killed by one, or -1 on timeout (the child is
 * then SIGKILLed). */
int mg_h_stop(struct mg_h_proc *p, int sig, int timeout_ms);
/* Is the process still running? */
bool mg_h_alive(struct mg_h_proc *p);

/* Blocking TCP connection to 127.0.0.1:port; -1 on error. */
int mg_h_connect(int port);
/* Write all n bytes; 0 or -1. */
int mg_h_send(int fd, const void *buf, size_t n);
int mg_h_sends(int fd, const char *s);

/* One parsed HTTP/1.1 response. */
struct mg_h_resp {
  int status;           /* 0 when nothing arrived */
  char *head;           /* owned: raw status line and headers */
  char *body;           /* owned: de-chunked body, NUL-terminated */
  size_t body_len;
  bool chunked;         /* the body came chunked */
  bool complete;        /* the body ended properly (length or last chunk) */
  bool closed;          /* the server closed the connection after it */
  double ms;            /* time from the call to the last byte */
};

/* Read one response from fd, waiting at most timeout_ms in all. Returns 0
 * when a complete response arrived, -1 otherwise (r holds what came). */
int mg_h_read_response(int fd, struct mg_h_resp *r, int timeout_ms);
/* Value of a response header (case-insensitive name) copied into out;
 * returns out, or NULL when absent. */
const char *mg_h_header(const struct mg_h_resp *r, const char *name, char *out,
                        size_t n);
void mg_h_resp_free(struct mg_h_resp *r);

/* Connect, send one request (Content-Length framing when body != NULL),
 * read the response, close. extra_headers: "Name: value\r\n..." or NULL. */
int mg_h_request(int port, const char *method, const char *path,
                 const char *extra_headers, const char *body,
                 struct mg_h_resp *r, int timeout_ms);

/* Wait until the peer closes fd (read returns 0 or an error); true if it did
 * within timeout_ms. */
bool mg_h_wait_closed(int fd, int timeout_ms);

/* Mock control: POST /_mock/behaviour with the given JSON; 0 on 200. */
int mg_h_mock_set(int mock_port, const char *json);
/* DELETE /_mock/behaviour: every model back to "ok". */
int mg_h_mock_reset(int mock_port);
/* GET /_mock/stats into a fresh string (caller frees), NULL on error. */
char *mg_h_mock_stats(int mock_port);
/* A number from a JSON document by RFC 6901 pointer ("/by_model/m"); def
 * when absent. */
double mg_h_json_num(const char *json, const char *pointer, double def);
/* A string from a JSON document by pointer, copied into out; NULL if absent. */
const char *mg_h_json_str(const char *json, const char *pointer, char *out,
                          size_t n);

/* Monotonic milliseconds. */
double mg_h_now_ms(void);
/* Sleep. */
void mg_h_sleep_ms(int ms);

/* Remove scratch directories (called at exit; keeps them when
 * MG_KEEP_TMP is set in the environment). */
void mg_h_cleanup_dirs(void);

#endif
