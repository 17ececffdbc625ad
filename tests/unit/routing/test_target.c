/* test_target.c - the target keys: api and its auth header, engine,
 * anthropic_version, api_key_file (read at every load, trimmed as
 * Kubernetes mounts secrets, errors naming the file but never the key),
 * price; and every error with its JSON path. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "routing/target.h"

static char *fake_env(const char *name) {
  if (strcmp(name, "KEY") == 0)
    return "sk-env";
  return NULL;
}

struct parsed {
  struct mg_targets t;
  struct mg_cfg_errors e;
};

static void parse(struct parsed *p, const char *json) {
  cJSON *root = cJSON_Parse(json);
  assert_non_null(root);
  mg_cfg_errors_init(&p->e);
  mg_targets_parse(&p->t, root, "$.targets", fake_env, &p->e);
  cJSON_Delete(root);
}

static void done(struct parsed *p) {
  mg_targets_free(&p->t);
  mg_cfg_errors_free(&p->e);
}

static bool has_error(const struct parsed *p, const char *text) {
  size_t i;
  for (i = 0; i < p->e.n; i++)
    if (strstr(p->e.msgs[i], text))
      return true;
  return false;
}

static void print_errors(const struct parsed *p) {
  size_t i;
  for (i = 0; i < p->e.n; i++)
    print_message("  %s\n", p->e.msgs[i]);
}

/* A temporary file holding bytes; its path in path[64]. */
static void temp_file(char path[64], const char *bytes, size_t n) {
  int fd;
  snprintf(path, 64, "/tmp/mg-test-key-XXXXXX");
  fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, bytes, n), (ssize_t)n);
  close(fd);
}

static void test_defaults_and_auth(void **state) {
  struct parsed p;
  const struct mg_target *o, *a;
  (void)state;
  parse(&p, "{\"o\":{\"base_url\":\"https://api.openai.com/v1/\",\"model\":"
            "\"gpt\",\"api_key_env\":\"KEY\"},"
            "\"a\":{\"base_url\":\"http://h/v1\",\"model\":\"claude\","
            "\"api\":\"anthropic\",\"api_key_env\":\"KEY\"}}");
  print_errors(&p);
  assert_int_equal(p.e.n, 0);
  o = mg_targets_find(&p.t, "o");
  a = mg_targets_find(&p.t, "a");
  assert_int_equal(o->api, MG_API_OPENAI);
  assert_string_equal(o->auth_header, "Authorization: Bearer sk-env");
  assert_null(o->anthropic_version);
  assert_int_equal(o->engine, MG_ENGINE_AUTO);
  assert_int_equal(mg_target_engine(o), MG_ENGINE_CURL);
  assert_false(o->price.set);
  assert_string_equal(o->urls[MG_EP_RESPONSES],
                      "https://api.openai.com/v1/responses");
  assert_int_equal(a->api, MG_API_ANTHROPIC);
  assert_string_equal(a->auth_header, "x-api-key: sk-env");
  assert_string_equal(a->anthropic_version, "2023-06-01");
  assert_int_equal(mg_target_engine(a), MG_ENGINE_NATIVE);
  assert_string_equal(a->urls[MG_EP_MESSAGES], "http://h/v1/messages");
  assert_string_equal(a->urls[MG_EP_COUNT_TOKENS],
                      "http://h/v1/messages/count_tokens");
  assert_string_equal(mg_api_family_name(a->api), "anthropic");
  done(&p);
}

static void test_engine(void **state) {
  struct parsed p;
  (void)state;
  parse(&p, "{\"n\":{\"base_url\":\"http://h\",\"model\":\"m\",\"engine\":"
            "\"native\"},\"c\":{\"base_url\":\"http://h\",\"model\":\"m\","
            "\"engine\":\"curl\"}}");
  assert_int_equal(p.e.n, 0);
  assert_int_equal(mg_target_engine(mg_targets_find(&p.t, "n")),
                   MG_ENGINE_NATIVE);
  assert_int_equal(mg_target_engine(mg_targets_find(&p.t, "c")),
                   MG_ENGINE_CURL);
  done(&p);
  parse(&p, "{\"t\":{\"base_url\":\"https://h\",\"model\":\"m\",\"engine\":"
            "\"native\"},\"u\":{\"base_url\":\"http://h\",\"model\":\"m\","
            "\"engine\":\"fast\"}}");
  print_errors(&p);
  assert_true(has_error(&p, "$.targets.t.engine: native serves http:// base "
                            "URLs only"));
  assert_true(has_error(&p, "$.targets.u.engine: must be auto, native or "
                            "curl"));
  done(&p);
}

static void test_api_key_file(void **state) {
  struct parsed p;
  char path[64], json[512];
  (void)state;
  /* as Kubernetes mounts a secret: the key and a line break */
  temp_file(path, "sk-file\n", 8);
  snprintf(json, sizeof(json),
           "{\"t\":{\"base_url\":\"http://h\",\"model\":\"m\","
           "\"api_key_file\":\"%s\"}}",
           path);
  parse(&p, json);
  assert_int_equal(p.e.n, 0);
  assert_string_equal(mg_targets_find(&p.t, "t")->auth_header,
                      "Authorization: Bearer sk-file");
  done(&p);
  /* a reload reads the file again: a rotated key is in force */
  temp_file(path + 0, "sk-rotated\r\n", 12);
  snprintf(json, sizeof(json),
           "{\"t\":{\"base_url\":\"http://h\",\"model\":\"m\",\"api\":"
           "\"anthropic\",\"api_key_file\":\"%s\"}}",
           path);
  parse(&p, json);
  assert_int_equal(p.e.n, 0);
  assert_string_equal(mg_targets_find(&p.t, "t")->auth_header,
                      "x-api-key: sk-rotated");
  done(&p);
  unlink(path);
  /* gone: the error names the file and why */
  parse(&p, json);
  assert_true(has_error(&p, "$.targets.t.api_key_file: cannot read "));
  assert_true(has_error(&p, path));
  assert_true(has_error(&p, "No such file or directory"));
  done(&p);
  /* a line break inside the key: refused, without echoing the key */
  temp_file(path, "sk-a\nsk-b\n", 10);
  snprintf(json, sizeof(json),
           "{\"t\":{\"base_url\":\"http://h\",\"model\":\"m\","
           "\"api_key_file\":\"%s\"}}",
           path);
  parse(&p, json);
  assert_true(has_error(&p, "holds no key"));
  assert_false(has_error(&p, "sk-a"));
  done(&p);
  unlink(path);
  /* empty */
  temp_file(path, "\n", 1);
  snprintf(json, sizeof(json),
           "{\"t\":{\"base_url\":\"http://h\",\"model\":\"m\","
           "\"api_key_file\":\"%s\"}}",
           path);
  parse(&p, json);
  assert_true(has_error(&p, "holds no key"));
  done(&p);
  /* both sources: refused */
  snprintf(json, sizeof(json),
           "{\"t\":{\"base_url\":\"http://h\",\"model\":\"m\","
           "\"api_key_file\":\"%s\",\"api_key_env\":\"KEY\"}}",
           path);
  parse(&p, json);
  assert_true(has_error(&p, "$.targets.t.api_key_file: give api_key_env or "
                            "api_key_file, not both"));
  done(&p);
  unlink(path);
}

static void test_secret_file_limits(void **state) {
  char path[64], *key = NULL, big[100];
  (void)state;
  memset(big, 'k', sizeof(big));
  temp_file(path, big, sizeof(big));
  assert_int_equal(mg_secret_file_read(path, 64, &key), -EFBIG);
  assert_null(key);
  assert_int_equal(mg_secret_file_read(path, 100, &key), 0);
  assert_int_equal(strlen(key), 100);
  free(key);
  unlink(path);
  temp_file(path, "a\0b", 3);
  assert_int_equal(mg_secret_file_read(path, 100, &key), -EINVAL);
  unlink(path);
}

static void test_anthropic_version(void **state) {
  struct parsed p;
  (void)state;
  parse(&p, "{\"a\":{\"base_url\":\"http://h\",\"model\":\"m\",\"api\":"
            "\"anthropic\",\"anthropic_version\":\"2024-01-01\"},"
            "\"o\":{\"base_url\":\"http://h\",\"model\":\"m\","
            "\"anthropic_version\":\"2023-06-01\"},"
            "\"x\":{\"base_url\":\"http://h\",\"model\":\"m\",\"api\":"
            "\"gemini\"}}");
  print_errors(&p);
  assert_string_equal(mg_targets_find(&p.t, "a")->anthropic_version,
                      "2024-01-01");
  assert_true(has_error(&p, "$.targets.o.anthropic_version: applies to "
                            "targets with api \"anthropic\" only"));
  assert_true(has_error(&p, "$.targets.x.api: must be openai or anthropic, "
                            "not \"gemini\""));
  assert_int_equal(p.e.n, 2);
  done(&p);
}

static void test_price(void **state) {
  struct parsed p;
  const struct mg_price *pr;
  (void)state;
  parse(&p, "{\"o\":{\"base_url\":\"http://h\",\"model\":\"m\",\"price\":{"
            "\"input\":2.5,\"output\":10}},"
            "\"a\":{\"base_url\":\"http://h\",\"model\":\"m\",\"api\":"
            "\"anthropic\",\"price\":{\"input\":3,\"output\":15,"
            "\"cache_read\":0.3,\"cache_write\":3.75}}}");
  assert_int_equal(p.e.n, 0);
  pr = &mg_targets_find(&p.t, "o")->price;
  assert_true(pr->set);
  assert_int_equal(pr->api, MG_API_OPENAI);
  assert_true(pr->input == 2.5 && pr->output == 10);
  /* not given: no discount assumed */
  assert_true(pr->cached_input == 2.5);
  pr = &mg_targets_find(&p.t, "a")->price;
  assert_int_equal(pr->api, MG_API_ANTHROPIC);
  assert_true(pr->cache_read == 0.3 && pr->cache_write == 3.75);
  done(&p);
  parse(&p, "{\"o\":{\"base_url\":\"http://h\",\"model\":\"m\",\"price\":{"
            "\"input\":-1,\"cache_read\":1}},"
            "\"a\":{\"base_url\":\"http://h\",\"model\":\"m\",\"api\":"
            "\"anthropic\",\"price\":{\"input\":1,\"output\":\"2\","
            "\"cached_input\":1}}}");
  print_errors(&p);
  assert_true(has_error(&p, "$.targets.o.price.cache_read: is not a price of "
                            "api openai"));
  assert_true(has_error(&p, "$.targets.o.price.output"));
  assert_true(has_error(&p, "$.targets.o.price.input: must be between 0"));
  assert_true(has_error(&p, "$.targets.a.price.cached_input: is not a price "
                            "of api anthropic"));
  assert_true(has_error(&p, "$.targets.a.price.output: must be a number"));
  done(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults_and_auth),
      cmocka_unit_test(test_engine),
      cmocka_unit_test(test_api_key_file),
      cmocka_unit_test(test_secret_file_limits),
      cmocka_unit_test(test_anthropic_version),
      cmocka_unit_test(test_price),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
