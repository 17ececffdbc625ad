/* conv.c - response ids that name the target holding the conversation. */
#include "api/conv.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";

#define PREFIX_LEN (sizeof(MG_CONV_PREFIX) - 1)
/* A target name decoded from an id is at most this long. */
#define NAME_MAX_BYTES 300

static bool id_byte(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
}

static bool id_safe(struct mg_str s) {
  size_t i;
  if (s.len == 0)
    return false;
  for (i = 0; i < s.len; i++)
    if (!id_byte(s.p[i]))
      return false;
  return true;
}

/* base32 of n bytes into out (8 characters per 5 bytes, no padding);
 * returns the length, or -E2BIG past cap. */
static int b32_encode(const unsigned char *p, size_t n, char *out,
                      size_t cap) {
  size_t o = 0, i;
  uint32_t acc = 0;
  int bits = 0;
  for (i = 0; i < n; i++) {
    acc = (acc << 8) | p[i];
    bits += 8;
    while (bits >= 5) {
      if (o >= cap)
        return -E2BIG;
      out[o++] = b32[(acc >> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) {
    if (o >= cap)
      return -E2BIG;
    out[o++] = b32[(acc << (5 - bits)) & 31];
  }
  return (int)o;
}

/* The inverse, strict: only canonical encodings (the unused low bits of
 * the last character zero, no impossible lengths) decode, so one name has
 * one id. Returns the length, or -EINVAL. */
static int b32_decode(const char *s, size_t n, unsigned char *out,
                      size_t cap) {
  size_t o = 0, i;
  uint32_t acc = 0;
  int bits = 0;
  /* 5 bytes make 8 characters; 1, 3 and 6 leftover characters are no
   * whole number of bytes. */
  if (n % 8 == 1 || n % 8 == 3 || n % 8 == 6)
    return -EINVAL;
  for (i = 0; i < n; i++) {
    const char *c = s[i] ? memchr(b32, s[i], 32) : NULL;
    if (c == NULL)
      return -EINVAL;
    acc = (acc << 5) | (uint32_t)(c - b32);
    bits += 5;
    if (bits >= 8) {
      if (o >= cap)
        return -EINVAL;
      out[o++] = (unsigned char)(acc >> (bits - 8));
      bits -= 8;
      acc &= (1u << bits) - 1;
    }
  }
  if (acc != 0)
    return -EINVAL;
  return (int)o;
}

int mg_conv_wrap(const char *target, struct mg_str upstream_id, char *out,
                 size_t n) {
  size_t tl = strlen(target), need;
  int el;

  if (!id_safe(upstream_id) || tl == 0)
    return -EINVAL;
  if (n > MG_CONV_ID_MAX)
    n = MG_CONV_ID_MAX;
  if (n < PREFIX_LEN + 1)
    return -E2BIG;
  memcpy(out, MG_CONV_PREFIX, PREFIX_LEN);
  el = b32_encode((const unsigned char *)target, tl, out + PREFIX_LEN,
                  n - PREFIX_LEN);
  if (el < 0)
    return el;
  need = PREFIX_LEN + (size_t)el + 1 + upstream_id.len + 1;
  if (need > n)
    return -E2BIG;
  out[PREFIX_LEN + (size_t)el] = '_';
  memcpy(out + PREFIX_LEN + (size_t)el + 1, upstream_id.p, upstream_id.len);
  out[need - 1] = '\0';
  return 0;
}

int mg_conv_local_id(const char *decision_id, char *out, size_t n) {
  int w = snprintf(out, n, MG_CONV_PREFIX "_%s", decision_id);
  return w < 0 || (size_t)w >= n ? -E2BIG : 0;
}

int mg_conv_unwrap(struct mg_str id, const struct mg_targets *targets,
                   const struct mg_target **target,
                   struct mg_str *upstream_id) {
  unsigned char name[NAME_MAX_BYTES + 1];
  const struct mg_target *t;
  const char *us;
  struct mg_str up;
  int nl;

  *target = NULL;
  if (id.len <= PREFIX_LEN || id.len >= MG_CONV_ID_MAX ||
      memcmp(id.p, MG_CONV_PREFIX, PREFIX_LEN) != 0)
    return -ENOENT;
  us = memchr(id.p + PREFIX_LEN, '_', id.len - PREFIX_LEN);
  if (us == NULL)
    return -ENOENT;
  up.p = us + 1;
  up.len = (size_t)(id.p + id.len - up.p);
  if (us == id.p + PREFIX_LEN)
    return up.len > 0 ? -EPERM : -ENOENT;
  if (!id_safe(up))
    return -ENOENT;
  nl = b32_decode(id.p + PREFIX_LEN, (size_t)(us - id.p - PREFIX_LEN), name,
                  NAME_MAX_BYTES);
  if (nl <= 0 || memchr(name, 0, (size_t)nl) != NULL)
    return -ENOENT;
  name[nl] = '\0';
  t = mg_targets_find(targets, (const char *)name);
  /* Stored responses are the Responses API's: an Anthropic target holds
   * none. */
  if (t == NULL || t->api != MG_API_OPENAI)
    return -ENOENT;
  *target = t;
  *upstream_id = up;
  return 0;
}

/* ---- rewriting ------------------------------------------------------------ */

/* Copy doc with the `id` and `previous_response_id` strings of the object
 * at obj wrapped for target. */
static int rewrite_ids(const struct mg_json_doc *d, uint32_t obj,
                       const char *target, struct mg_buf *out) {
  static const char *const keys[] = {"id", "previous_response_id"};
  uint32_t at[2];
  size_t start = out->len, pos = 0, i, n = 0;
  int rc = 0;

  for (i = 0; i < 2; i++) {
    uint32_t v = mg_json_getc(d, obj, keys[i]);
    if (v < d->n && d->toks[v].type == MG_JSON_STRING && !d->toks[v].escaped)
      at[n++] = v;
  }
  /* Splice in document order. */
  if (n == 2 && d->toks[at[0]].start > d->toks[at[1]].start) {
    uint32_t t = at[0];
    at[0] = at[1];
    at[1] = t;
  }
  for (i = 0; i < n && rc == 0; i++) {
    const struct mg_json_tok *tok = &d->toks[at[i]];
    char wrapped[MG_CONV_ID_MAX];
    if (mg_conv_wrap(target, mg_json_str_raw(d, at[i]), wrapped,
                     sizeof(wrapped)) != 0)
      continue; /* not an id we can wrap: left as it is */
    if ((rc = mg_buf_append(out, d->src + pos, tok->start - pos)) != 0 ||
        (rc = mg_buf_json_str(out, wrapped, strlen(wrapped))) != 0)
      break;
    pos = tok->end;
  }
  if (rc == 0)
    rc = mg_buf_append(out, d->src + pos, d->len - pos);
  if (rc)
    mg_buf_truncate(out, start);
  return rc;
}

int mg_conv_rewrite_response(const struct mg_json_doc *doc, const char *target,
                             struct mg_buf *out) {
  if (doc->src == NULL)
    return 0;
  if (doc->n == 0 || doc->toks[0].type != MG_JSON_OBJECT)
    return mg_buf_append(out, doc->src, doc->len);
  return rewrite_ids(doc, 0, target, out);
}

int mg_conv_rewrite_event(const struct mg_json_doc *ev, const char *target,
                          struct mg_buf *out) {
  uint32_t r;
  int rc;
  if (ev->src == NULL || ev->n == 0 || ev->toks[0].type != MG_JSON_OBJECT)
    return 0;
  r = mg_json_getc(ev, 0, "response");
  if (r >= ev->n || ev->toks[r].type != MG_JSON_OBJECT)
    return 0;
  rc = rewrite_ids(ev, r, target, out);
  return rc ? rc : 1;
}

int mg_conv_unwrap_request(const struct mg_json_doc *req, uint32_t prev_tok,
                           struct mg_str upstream_id, struct mg_buf *out) {
  const struct mg_json_tok *t;
  size_t start = out->len;
  int rc;
  if (prev_tok >= req->n || req->toks[prev_tok].type != MG_JSON_STRING ||
      !id_safe(upstream_id))
    return -EINVAL;
  t = &req->toks[prev_tok];
  if ((rc = mg_buf_append(out, req->src, t->start)) != 0 ||
      (rc = mg_buf_json_str(out, upstream_id.p, upstream_id.len)) != 0 ||
      (rc = mg_buf_append(out, req->src + t->end, req->len - t->end)) != 0)
    mg_buf_truncate(out, start);
  return rc;
}

/* ---- where a follow-up goes ------------------------------------------------ */

static bool variant_serves(const struct mg_flag *f,
                           const struct mg_flag_state *st, uint32_t v) {
  uint32_t r;
  if (v == f->off_variant || f->variants[v].nallow > 0)
    return true;
  if (st->has_weights && st->weights[v] > 0)
    return true;
  for (r = 0; r < f->nrules; r++)
    if (f->rules[r].variant == v)
      return true;
  return false;
}

static bool allowed(const struct mg_alias *a, const struct mg_flag_state *st,
                    int64_t now_ms, const struct mg_target *pinned) {
  const struct mg_flag *f = a ? a->flag : NULL;
  uint32_t v;
  if (a == NULL)
    return false;
  if (f == NULL)
    return a->target == pinned;
  /* Killed or outside its window, a flag serves its off_variant alone:
   * that is `chosen`, which was compared already. */
  if (st == NULL || st->killed || now_ms < f->start_ms || now_ms >= f->end_ms)
    return false;
  for (v = 0; v < f->nvariants; v++)
    if (f->variants[v].target == pinned && variant_serves(f, st, v))
      return true;
  return false;
}

enum mg_conv_pin mg_conv_pin(const struct mg_alias *a,
                             const struct mg_flag_state *st, int64_t now_ms,
                             const struct mg_target *pinned,
                             const struct mg_target *chosen) {
  if (pinned == NULL)
    return MG_PIN_UNAVAILABLE;
  if (pinned == chosen || allowed(a, st, now_ms, pinned))
    return MG_PIN_STAY;
  if (chosen && mg_target_shares_state(pinned, chosen))
    return MG_PIN_MOVE;
  return MG_PIN_UNAVAILABLE;
}

const char *mg_conv_pin_name(enum mg_conv_pin p) {
  switch (p) {
  case MG_PIN_STAY:
    return "stay";
  case MG_PIN_MOVE:
    return "move";
  default:
    return "unavailable";
  }
}
