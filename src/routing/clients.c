/* clients.c - client keys (clients.h). */
#include "routing/clients.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

void mg_sha256(const void *data, size_t len, unsigned char out[32]) {
  unsigned int n = 32;
  if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1)
    memset(out, 0, 32); /* matches no stored digest: a refusal */
}

static int hexval(char ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

static bool parse_digest(const char *s, unsigned char out[32]) {
  size_t i;
  if (strlen(s) != 64)
    return false;
  for (i = 0; i < 32; i++) {
    int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    out[i] = (unsigned char)(hi * 16 + lo);
  }
  return true;
}

/* {"name": "digest", ...} from the config or the keys file. */
static void add_keys(struct mg_clients *c, const cJSON *obj, const char *path,
                     struct mg_cfg_errors *e) {
  const cJSON *it;
  size_t n = 0;
  struct mg_client *v;
  if (!cJSON_IsObject(obj)) {
    mg_cfg_error(e, path,
                 "must be an object of client names to the SHA-256 (hex) of "
                 "their keys");
    return;
  }
  cJSON_ArrayForEach(it, obj) n++;
  v = realloc(c->v, (c->n + n + 1) * sizeof(*v));
  if (v == NULL) {
    mg_cfg_error(e, path, "out of memory");
    return;
  }
  c->v = v;
  cJSON_ArrayForEach(it, obj) {
    char p[MG_CFG_PATH_MAX];
    struct mg_client *cl = &c->v[c->n];
    size_t i;
    mg_cfg_join(p, path, it->string);
    if (it->string[0] == '\0') {
      mg_cfg_error(e, p, "a client needs a name");
      continue;
    }
    if (!cJSON_IsString(it) || !parse_digest(it->valuestring, cl->digest)) {
      mg_cfg_error(e, p,
                   "must be the SHA-256 of the client's key as 64 hex digits "
                   "(printf %%s \"$KEY\" | sha256sum), never the key itself");
      continue;
    }
    for (i = 0; i < c->n; i++)
      if (strcmp(c->v[i].name, it->string) == 0)
        break;
    if (i < c->n) {
      mg_cfg_error(e, p, "client \"%s\" is named twice", it->string);
      continue;
    }
    if ((cl->name = strdup(it->string)) == NULL) {
      mg_cfg_error(e, p, "out of memory");
      continue;
    }
    c->n++;
  }
}

static char *read_small_file(const char *path, size_t max, int *err) {
  FILE *f = fopen(path, "rb");
  char *buf;
  size_t n;
  if (f == NULL) {
    *err = errno;
    return NULL;
  }
  buf = malloc(max + 1);
  if (buf == NULL) {
    fclose(f);
    *err = ENOMEM;
    return NULL;
  }
  n = fread(buf, 1, max + 1, f);
  fclose(f);
  if (n > max) {
    free(buf);
    *err = EFBIG;
    return NULL;
  }
  buf[n] = '\0';
  return buf;
}

void mg_clients_parse(struct mg_clients *out, const cJSON *section,
                      struct mg_cfg_errors *e) {
  static const char *const keys[] = {"keys", "keys_file", NULL};
  const char *p = "$.clients";
  const cJSON *k;
  char *file;

  memset(out, 0, sizeof(*out));
  if (section == NULL)
    return;
  if (!mg_cfg_object(section, p, keys, e))
    return;
  out->enabled = true;
  k = cJSON_GetObjectItemCaseSensitive(section, "keys");
  if (k)
    add_keys(out, k, "$.clients.keys", e);
  file = mg_cfg_str(section, "keys_file", p, NULL, true, e);
  if (file) {
    int err = 0;
    char *text = read_small_file(file, 16u << 20, &err);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    if (text == NULL) {
      mg_cfg_error(e, "$.clients.keys_file", "cannot read %s: %s", file,
                   strerror(err));
    } else if (j == NULL) {
      mg_cfg_error(e, "$.clients.keys_file", "%s is not valid JSON", file);
    } else {
      char fp[MG_CFG_PATH_MAX];
      snprintf(fp, sizeof(fp), "%s", file);
      add_keys(out, j, fp, e);
    }
    cJSON_Delete(j);
    free(text);
    free(file);
  }
  if (out->n == 0 && e->n == 0)
    mg_cfg_error(e, p,
                 "names no client: give \"keys\" or \"keys_file\" (or remove "
                 "the section to accept every caller)");
}

void mg_clients_free(struct mg_clients *c) {
  size_t i;
  for (i = 0; i < c->n; i++)
    free(c->v[i].name);
  free(c->v);
  memset(c, 0, sizeof(*c));
}

const struct mg_client *mg_clients_find(const struct mg_clients *c,
                                        const char *key, size_t len) {
  unsigned char d[32];
  const struct mg_client *found = NULL;
  size_t i, j;
  if (len == 0)
    return NULL;
  mg_sha256(key, len, d);
  /* Every digest is looked at, each byte of each one. */
  for (i = 0; i < c->n; i++) {
    unsigned char diff = 0;
    for (j = 0; j < 32; j++)
      diff |= (unsigned char)(c->v[i].digest[j] ^ d[j]);
    if (diff == 0 && found == NULL)
      found = &c->v[i];
  }
  memset(d, 0, sizeof(d));
  return found;
}
