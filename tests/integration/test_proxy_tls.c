/* test_proxy_tls.c - an HTTPS upstream: nginx terminates TLS on loopback in
 * front of mg-mock, with a certificate made by the test from its own CA.
 * modelgate must verify it against the target's ca_file, refuse it
 * against the system bundle (where that CA is not), and accept it with
 * tls_verify off. nginx and openssl come with scripts/deps.sh
 * (nginx-light, openssl). */
#define _DEFAULT_SOURCE 1

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "common.h"

struct tls_env {
  struct tenv *e;
  pid_t nginx;
  int port;      /* nginx's TLS port */
  char ca[320];  /* the CA certificate */
  char log[320]; /* nginx's error log */
};

static const char *find_nginx(void) {
  static const char *const paths[] = {"/usr/sbin/nginx", "/usr/bin/nginx",
                                      "/usr/local/sbin/nginx",
                                      "/usr/local/nginx/sbin/nginx", NULL};
  size_t i;
  for (i = 0; paths[i]; i++)
    if (access(paths[i], X_OK) == 0)
      return paths[i];
  return NULL;
}

static int run_openssl(const char *const *argv) {
  char *out = NULL;
  int rc = mg_h_run(argv, &out, 20000);
  if (rc != 0)
    fprintf(stderr, "test_proxy_tls: %s %s failed (%d)%s:\n%s\n", argv[0],
            argv[1], rc, rc == 127 ? " - is openssl installed?" : "",
            out ? out : "");
  free(out);
  return rc;
}

/* A CA, and a certificate it signed for localhost and 127.0.0.1. */
static int make_certs(const char *dir, char *ca_out, size_t n) {
  char ca_key[320], ca[320], key[320], csr[320], crt[320], ext[320];
  snprintf(ca_key, sizeof(ca_key), "%s/ca.key", dir);
  snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
  snprintf(key, sizeof(key), "%s/server.key", dir);
  snprintf(csr, sizeof(csr), "%s/server.csr", dir);
  snprintf(crt, sizeof(crt), "%s/server.pem", dir);
  snprintf(ext, sizeof(ext), "%s/server.ext", dir);
  {
    const char *argv[] = {"openssl",
                          "req",
                          "-x509",
                          "-newkey",
                          "ec",
                          "-pkeyopt",
                          "ec_paramgen_curve:prime256v1",
                          "-nodes",
                          "-keyout",
                          ca_key,
                          "-out",
                          ca,
                          "-days",
                          "2",
                          "-subj",
                          "/CN=modelgate test CA",
                          "-addext",
                          "basicConstraints=critical,CA:TRUE",
                          "-addext",
                          "keyUsage=critical,keyCertSign,cRLSign",
                          NULL};
    if (run_openssl(argv) != 0)
      return -1;
  }
  {
    const char *argv[] = {"openssl",
                          "req",
                          "-newkey",
                          "ec",
                          "-pkeyopt",
                          "ec_paramgen_curve:prime256v1",
                          "-nodes",
                          "-keyout",
                          key,
                          "-out",
                          csr,
                          "-subj",
                          "/CN=localhost",
                          NULL};
    if (run_openssl(argv) != 0)
      return -1;
  }
  if (mg_h_write_file(ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                           "basicConstraints=CA:FALSE\n"
                           "keyUsage=critical,digitalSignature\n"
                           "extendedKeyUsage=serverAuth\n") != 0)
    return -1;
  {
    const char *argv[] = {
        "openssl", "x509", "-req",   "-in",  csr,
        "-CA",     ca,     "-CAkey", ca_key, "-CAcreateserial",
        "-out",    crt,    "-days",  "2",    "-extfile",
        ext,       NULL};
    if (run_openssl(argv) != 0)
      return -1;
  }
  snprintf(ca_out, n, "%s", ca);
  return 0;
}

/* nginx with TLS on a free loopback port, proxying to the mock without
 * buffering (streams pass as they come). */
static int start_nginx(struct tls_env *t) {
  const char *bin = find_nginx();
  const char *dir = t->e->dir;
  char conf[320], tmp[320], startup[320], *text;
  double deadline;
  int fd;

  if (bin == NULL) {
    fprintf(stderr, "test_proxy_tls: nginx not found (/usr/sbin/nginx): "
                    "install nginx-light (scripts/deps.sh does)\n");
    return -1;
  }
  t->port = free_port();
  snprintf(conf, sizeof(conf), "%s/nginx.conf", dir);
  snprintf(tmp, sizeof(tmp), "%s/nginx-tmp", dir);
  snprintf(startup, sizeof(startup), "%s/nginx-startup.log", dir);
  snprintf(t->log, sizeof(t->log), "%s/nginx-error.log", dir);
  if (mkdir(tmp, 0700) != 0)
    return -1;
  text = fmt("daemon off;\nmaster_process off;\nworker_processes 1;\n"
             "pid %s/nginx.pid;\nerror_log %s info;\n"
             "events { worker_connections 256; }\n"
             "http {\n"
             "  access_log off;\n"
             "  client_body_temp_path %s/body;\n"
             "  proxy_temp_path %s/proxy;\n"
             "  fastcgi_temp_path %s/fastcgi;\n"
             "  uwsgi_temp_path %s/uwsgi;\n"
             "  scgi_temp_path %s/scgi;\n"
             "  server {\n"
             "    listen 127.0.0.1:%d ssl;\n"
             "    server_name localhost;\n"
             "    ssl_certificate %s/server.pem;\n"
             "    ssl_certificate_key %s/server.key;\n"
             "    location / {\n"
             "      proxy_pass http://127.0.0.1:%d;\n"
             "      proxy_http_version 1.1;\n"
             "      proxy_set_header Connection \"\";\n"
             "      proxy_buffering off;\n"
             "      proxy_request_buffering off;\n"
             "    }\n"
             "  }\n"
             "}\n",
             dir, t->log, tmp, tmp, tmp, tmp, tmp, t->port, dir, dir,
             t->e->mock.port);
  fd = mg_h_write_file(conf, text);
  free(text);
  if (fd != 0)
    return -1;
  {
    const char *argv[] = {bin, "-p", dir, "-c", conf, "-e", startup, NULL};
    char out[320];
    snprintf(out, sizeof(out), "%s/nginx.out", dir);
    t->nginx = spawn(argv, out);
  }
  if (t->nginx <= 0)
    return -1;
  /* Ready when it accepts. */
  deadline = mg_h_now_ms() + 10000;
  while (mg_h_now_ms() < deadline) {
    int st, c;
    if (waitpid(t->nginx, &st, WNOHANG) == t->nginx) {
      fprintf(stderr, "test_proxy_tls: nginx exited at start; see %s\n",
              startup);
      t->nginx = 0;
      return -1;
    }
    if ((c = mg_h_connect(t->port)) >= 0) {
      close(c);
      return 0;
    }
    mg_h_sleep_ms(20);
  }
  fprintf(stderr, "test_proxy_tls: nginx did not listen on %d\n", t->port);
  return -1;
}

static int tls_teardown(void **state) {
  struct tls_env *t = *state;
  int rc = 0;
  if (t == NULL)
    return 0;
  if (t->nginx > 0 && reap(t->nginx, SIGTERM, 5000) < 0)
    rc = -1;
  if (t->e) {
    void *e = t->e;
    if (tenv_teardown(&e) != 0)
      rc = -1;
  }
  free(t);
  *state = NULL;
  return rc;
}

static int tls_setup(void **state) {
  struct tls_env *t = calloc(1, sizeof(*t));
  void *e = NULL;
  if (t == NULL || tenv_setup(&e) != 0) {
    free(t);
    return -1;
  }
  t->e = e;
  *state = t;
  if (make_certs(t->e->dir, t->ca, sizeof(t->ca)) != 0 || start_nginx(t) != 0) {
    tls_teardown(state);
    return -1;
  }
  return 0;
}

/* Targets on the same HTTPS upstream, verified three ways. */
static void gate_tls(struct tls_env *t) {
  char *cfg = fmt(
      "{\"admin\":{\"listen\":\"127.0.0.1:0\"},"
      "\"server\":{\"listen\":\"127.0.0.1:0\",\"log_level\":\"debug\","
      "\"shutdown_grace_ms\":2000},"
      "\"targets\":{"
      "\"tls-ca\":{\"base_url\":\"https://localhost:%d/v1\",\"model\":"
      "\"up-model\",\"api_key_env\":\"" KEY_ENV "\",\"ca_file\":\"%s\"},"
      "\"tls-ip\":{\"base_url\":\"https://127.0.0.1:%d/v1\",\"model\":"
      "\"ip-model\",\"ca_file\":\"%s\"},"
      "\"tls-system\":{\"base_url\":\"https://localhost:%d/v1\",\"model\":"
      "\"up-model\"},"
      "\"tls-noverify\":{\"base_url\":\"https://localhost:%d/v1\",\"model\":"
      "\"noverify-model\",\"tls_verify\":false}},"
      "\"aliases\":{\"gpt-ca\":{\"target\":\"tls-ca\"},"
      "\"gpt-ip\":{\"target\":\"tls-ip\"},"
      "\"gpt-system\":{\"target\":\"tls-system\"},"
      "\"gpt-noverify\":{\"target\":\"tls-noverify\"}}}",
      t->port, t->ca, t->port, t->ca, t->port, t->port);
  assert_int_equal(gate_start(t->e, cfg), 0);
  free(cfg);
}

static void test_tls_with_ca_file(void **state) {
  struct tls_env *t = *state;
  struct tenv *e = t->e;
  struct mg_h_resp r;
  struct events ev;
  char v[256], *s;
  int fd;

  gate_tls(t);
  assert_int_equal(chat(e->gate.port, "gpt-ca", "over TLS", "", &r), 0);
  if (r.status != 200)
    fail_msg("HTTPS upstream with ca_file: %d %s", r.status, r.body);
  assert_string_equal(mg_h_header(&r, "x-modelgate-served-by", v, sizeof(v)),
                      "tls-ca");
  assert_non_null(strstr(r.body, "Mock answer from up-model to: over TLS"));
  mg_h_resp_free(&r);
  /* It went through nginx to the mock, key and all. */
  s = mg_h_mock_stats(e->mock.port);
  assert_non_null(s);
  assert_string_equal(
      mg_h_json_str(s, "/last/up-model/headers/authorization", v, sizeof(v)),
      "Bearer " KEY_VALUE);
  assert_string_equal(
      mg_h_json_str(s, "/last/up-model/body/model", v, sizeof(v)), "up-model");
  free(s);

  /* The certificate names 127.0.0.1 too. */
  assert_int_equal(chat(e->gate.port, "gpt-ip", "by address", "", &r), 0);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.body, "Mock answer from ip-model"));
  mg_h_resp_free(&r);

  /* Streaming through TLS, twice on one client connection. */
  set_mock(e->mock.port, "{\"chunks\":6,\"chunk_ms\":50}");
  fd = mg_h_connect(e->gate.port);
  assert_true(fd >= 0);
  send_chat(fd, "gpt-ca", "stream it", ",\"stream\":true");
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  assert_int_equal(r.status, 200);
  assert_true(r.chunked);
  events_parse(r.body, &ev);
  assert_string_equal(ev.rest, "");
  assert_int_equal(ev.n, 7);
  assert_string_equal(ev.items[6], "[DONE]");
  events_free(&ev);
  mg_h_resp_free(&r);
  send_chat(fd, "gpt-ca", "stream it again", ",\"stream\":true");
  assert_int_equal(mg_h_read_response(fd, &r, T_MS), 0);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.body, "data: [DONE]\n\n"));
  mg_h_resp_free(&r);
  close(fd);
  assert_int_equal((int)stat_num(e->mock.port, "/streams_completed"), 2);
}

static void test_tls_verification(void **state) {
  struct tls_env *t = *state;
  struct tenv *e = t->e;
  struct mg_h_resp r;
  char msg[512];

  gate_tls(t);
  /* A good connection to the same host and port first: a cached,
   * verified connection must not be lent to a target that would not have
   * verified it. */
  assert_int_equal(chat(e->gate.port, "gpt-ca", "first", "", &r), 0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);

  /* The system bundle does not know the test CA. */
  assert_int_equal(chat(e->gate.port, "gpt-system", "refused", "", &r), 0);
  assert_error_msg(&r, 502, "upstream_unreachable", msg, sizeof(msg));
  if (strstr(msg, "certificate") == NULL)
    fail_msg("the error does not mention the certificate: %s", msg);
  assert_non_null(strstr(msg, "tls-system"));
  mg_h_resp_free(&r);
  assert_int_equal((int)stat_num(e->mock.port, "/by_model/up-model"), 1);

  /* Without verification it goes through. */
  assert_int_equal(chat(e->gate.port, "gpt-noverify", "unchecked", "", &r), 0);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.body, "Mock answer from noverify-model"));
  mg_h_resp_free(&r);

  /* And the verified target still works, and the refused one still fails
   * (a connection made without verification is not reused for it). */
  assert_int_equal(chat(e->gate.port, "gpt-ca", "again", "", &r), 0);
  assert_int_equal(r.status, 200);
  mg_h_resp_free(&r);
  assert_int_equal(chat(e->gate.port, "gpt-system", "still refused", "", &r),
                   0);
  assert_error(&r, 502, "upstream_unreachable");
  mg_h_resp_free(&r);
  assert_int_equal((int)stat_num(e->mock.port, "/by_model/up-model"), 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_tls_with_ca_file, tls_setup,
                                      tls_teardown),
      cmocka_unit_test_setup_teardown(test_tls_verification, tls_setup,
                                      tls_teardown),
  };
  signal(SIGPIPE, SIG_IGN);
  if (find_nginx() == NULL) {
    fprintf(stderr, "test_proxy_tls: nginx is not installed; it terminates "
                    "TLS in front of the mock. Install nginx-light and "
                    "openssl (scripts/deps.sh).\n");
    return 1;
  }
  return cmocka_run_group_tests(tests, NULL, NULL);
}
