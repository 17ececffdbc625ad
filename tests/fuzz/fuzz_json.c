/* fuzz_json.c - libFuzzer target for the JSON scanner (src/common/json.c).
 *
 * Every input is parsed with one doc that lives across inputs, as a
 * connection's doc does. On success the target checks the token layout and
 * runs every accessor over the tokens, asserting the properties callers rely
 * on: decoding agrees with comparison and character counts, get/pointer find
 * what the walk finds, and the canonical form is valid JSON and its own
 * canonical form. Any broken property aborts, so libFuzzer reports it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,      \
              #cond);                                                        \
      abort();                                                               \
    }                                                                        \
  } while (0)

/* Keep the work per input bounded on big token arrays. */
#define MAX_CHECKED 256

static void check_layout(const struct mg_json_doc *d) {
  uint32_t i;

  CHECK(d->n > 0 && d->toks[0].next == d->n);
  for (i = 0; i < d->n; i++) {
    const struct mg_json_tok *t = &d->toks[i];
    CHECK(t->start < t->end && t->end <= d->len);
    CHECK(t->next > i && t->next <= d->n);
    if (t->type == MG_JSON_OBJECT || t->type == MG_JSON_ARRAY) {
      uint32_t k = i + 1, c;
      for (c = 0; c < t->count; c++) {
        CHECK(k < t->next);
        if (t->type == MG_JSON_OBJECT) {
          CHECK(d->toks[k].type == MG_JSON_STRING && d->toks[k].next == k + 1);
          k = d->toks[k + 1].next;
        } else {
          k = d->toks[k].next;
        }
      }
      CHECK(k == t->next);
    } else {
      CHECK(t->count == 0 && t->next == i + 1);
    }
  }
}

/* Append s as an RFC 6901 reference token. */
static int ptr_escape(struct mg_buf *b, const char *s, size_t n) {
  size_t i;
  int rc = 0;
  for (i = 0; i < n && rc == 0; i++) {
    if (s[i] == '~')
      rc = mg_buf_append(b, "~0", 2);
    else if (s[i] == '/')
      rc = mg_buf_append(b, "~1", 2);
    else
      rc = mg_buf_append(b, s + i, 1);
  }
  return rc;
}

static void check_string(const struct mg_json_doc *d, uint32_t i,
                         struct mg_buf *tmp) {
  size_t j, lead = 0;

  mg_buf_reset(tmp);
  CHECK(mg_json_str_decode(d, i, tmp) == 0);
  CHECK(tmp->len <= mg_json_str_raw(d, i).len);
  for (j = 0; j < tmp->len; j++)
    lead += ((unsigned char)tmp->data[j] & 0xC0) != 0x80;
  CHECK(mg_json_str_chars(d, i) == lead);
  CHECK(mg_json_str_eq(d, i, tmp->data, tmp->len));
  if (tmp->len > 0)
    CHECK(!mg_json_str_eq(d, i, tmp->data, tmp->len - 1));
}

static void check_object(const struct mg_json_doc *d, uint32_t obj,
                         struct mg_buf *key, struct mg_buf *ptr) {
  uint32_t k = obj + 1, c;

  for (c = 0; c < d->toks[obj].count && c < MAX_CHECKED; c++) {
    uint32_t v;
    mg_buf_reset(key);
    CHECK(mg_json_str_decode(d, k, key) == 0);
    /* get finds this member or an earlier one with the same key. */
    v = mg_json_get(d, obj, key->data, key->len);
    CHECK(v != MG_JSON_NOTFOUND && v <= k + 1);
    CHECK(mg_json_str_eq(d, v - 1, key->data, key->len));
    /* So does a pointer, when the key can be spelled as a C string. */
    if (memchr(key->data, '\0', key->len) == NULL) {
      mg_buf_reset(ptr);
      CHECK(mg_buf_append(ptr, "/", 1) == 0);
      CHECK(ptr_escape(ptr, key->data, key->len) == 0);
      CHECK(mg_json_pointer(d, obj, ptr->data) == v);
    }
    k = d->toks[k + 1].next;
  }
}

static void check_array(const struct mg_json_doc *d, uint32_t arr,
                        struct mg_buf *ptr) {
  uint32_t k = arr + 1, c;

  for (c = 0; c < d->toks[arr].count && c < MAX_CHECKED; c++) {
    CHECK(mg_json_at(d, arr, c) == k);
    mg_buf_reset(ptr);
    CHECK(mg_buf_printf(ptr, "/%u", c) == 0);
    CHECK(mg_json_pointer(d, arr, ptr->data) == k);
    k = d->toks[k].next;
  }
  CHECK(mg_json_at(d, arr, d->toks[arr].count) == MG_JSON_NOTFOUND);
}

static void check_number(const struct mg_json_doc *d, uint32_t i) {
  double x;
  int64_t v;

  CHECK(mg_json_num(d, i, &x) == 0);
  if (mg_json_int(d, i, &v) == 0 && v > -(INT64_C(1) << 53) &&
      v < (INT64_C(1) << 53))
    CHECK((double)v == x);
}

/* The canonical form of the root parses and is a fixed point. */
static void check_canonical(const struct mg_json_doc *d) {
  struct mg_json_doc d2;
  struct mg_buf a, b;
  const char *skip[2] = {NULL, NULL};
  int rc;

  mg_json_init(&d2, d->n + 1);
  mg_buf_init(&a, 1 << 24);
  mg_buf_init(&b, 1 << 24);
  CHECK(mg_json_canonical(d, 0, NULL, &a) == 0);
  rc = mg_json_parse(&d2, a.data, a.len, NULL);
  if (rc != 0)
    fprintf(stderr, "canonical form does not parse: %s\n", a.data);
  CHECK(rc == 0);
  CHECK(mg_json_canonical(&d2, 0, NULL, &b) == 0);
  CHECK(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
  /* Leaving out the first key never adds bytes. */
  if (d->toks[0].type == MG_JSON_OBJECT && d->toks[0].count > 0) {
    mg_buf_reset(&b);
    CHECK(mg_json_str_decode(d, 1, &b) == 0);
    if (memchr(b.data, '\0', b.len) == NULL) {
      char *k = strdup(b.data);
      CHECK(k != NULL);
      skip[0] = k;
      mg_buf_reset(&b);
      CHECK(mg_json_canonical(d, 0, skip, &b) == 0);
      CHECK(b.len < a.len);
      free(k);
    }
  }
  mg_buf_free(&a);
  mg_buf_free(&b);
  mg_json_free(&d2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static struct mg_json_doc doc; /* reused across inputs, like a conn's */
  static int inited;
  struct mg_json_error err = {0, NULL};
  struct mg_buf key, ptr;
  uint32_t i;
  int rc;

  if (!inited) {
    mg_json_init(&doc, 1 << 20);
    inited = 1;
  }
  rc = mg_json_parse(&doc, (const char *)data, size, &err);
  if (rc != 0) {
    CHECK(doc.n == 0);
    CHECK(err.msg != NULL && err.offset <= size);
    return 0;
  }
  check_layout(&doc);

  mg_buf_init(&key, 1 << 24);
  mg_buf_init(&ptr, 1 << 24);
  CHECK(mg_json_pointer(&doc, 0, "") == 0);
  for (i = 0; i < doc.n && i < MAX_CHECKED; i++) {
    switch (doc.toks[i].type) {
    case MG_JSON_STRING:
      check_string(&doc, i, &key);
      break;
    case MG_JSON_NUMBER:
      check_number(&doc, i);
      break;
    case MG_JSON_OBJECT:
      check_object(&doc, i, &key, &ptr);
      break;
    case MG_JSON_ARRAY:
      check_array(&doc, i, &ptr);
      break;
    default:
      break;
    }
  }
  check_canonical(&doc);
  mg_buf_free(&key);
  mg_buf_free(&ptr);
  return 0;
}
