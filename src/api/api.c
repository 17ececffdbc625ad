/* api.c - the endpoint table, and what does not depend on one family:
 * matching a request line, confidence, usage and cost, family checks. */
#include "api/api.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "api/family.h"

static const struct mg_endpoint table[MG_EP__COUNT] = {
    [MG_EP_CHAT] = {.id = MG_EP_CHAT,
                    .name = "chat",
                    .path = "/v1/chat/completions",
                    .upstream_path = "/chat/completions",
                    .method = MG_HTTP_POST,
                    .kind = MG_EPK_MODEL,
                    .family = MG_API_OPENAI,
                    .shape = MG_SHAPE_CHAT,
                    .gated = true,
                    .cacheable = true,
                    .traditional = true,
                    .streams = true,
                    .ops = &mg_api__chat_ops},
    [MG_EP_COMPLETIONS] = {.id = MG_EP_COMPLETIONS,
                           .name = "completions",
                           .path = "/v1/completions",
                           .upstream_path = "/completions",
                           .method = MG_HTTP_POST,
                           .kind = MG_EPK_MODEL,
                           .family = MG_API_OPENAI,
                           .shape = MG_SHAPE_COMPLETIONS,
                           .gated = true,
                           .cacheable = true,
                           .traditional = true,
                           .streams = true,
                           .ops = &mg_api__completions_ops},
    [MG_EP_EMBEDDINGS] = {.id = MG_EP_EMBEDDINGS,
                          .name = "embeddings",
                          .path = "/v1/embeddings",
                          .upstream_path = "/embeddings",
                          .method = MG_HTTP_POST,
                          .kind = MG_EPK_MODEL,
                          .family = MG_API_OPENAI,
                          .shape = MG_SHAPE_EMBEDDINGS,
                          .ops = &mg_api__embeddings_ops},
    [MG_EP_RESPONSES] = {.id = MG_EP_RESPONSES,
                         .name = "responses",
                         .path = "/v1/responses",
                         .upstream_path = "/responses",
                         .method = MG_HTTP_POST,
                         .kind = MG_EPK_MODEL,
                         .family = MG_API_OPENAI,
                         .shape = MG_SHAPE_RESPONSES,
                         .gated = true,
                         .cacheable = true,
                         .traditional = true,
                         .streams = true,
                         .conversation_ids = true,
                         .ops = &mg_api__responses_ops},
    [MG_EP_RESPONSE_GET] = {.id = MG_EP_RESPONSE_GET,
                            .name = "responses.get",
                            .path = "/v1/responses/",
                            .pinned_suffix = "",
                            .upstream_path = "/responses",
                            .method = MG_HTTP_GET,
                            .kind = MG_EPK_PINNED,
                            .family = MG_API_OPENAI,
                            .shape = MG_SHAPE_NONE,
                            .conversation_ids = true,
                            .ops = &mg_api__responses_store_ops},
    [MG_EP_RESPONSE_DELETE] = {.id = MG_EP_RESPONSE_DELETE,
                               .name = "responses.delete",
                               .path = "/v1/responses/",
                               .pinned_suffix = "",
                               .upstream_path = "/responses",
                               .method = MG_HTTP_DELETE,
                               .kind = MG_EPK_PINNED,
                               .family = MG_API_OPENAI,
                               .shape = MG_SHAPE_NONE,
                               .conversation_ids = true,
                               .ops = &mg_api__responses_store_ops},
    /* The items' ids are message ids, not response ids: nothing to wrap. */
    [MG_EP_RESPONSE_INPUT_ITEMS] = {.id = MG_EP_RESPONSE_INPUT_ITEMS,
                                    .name = "responses.input_items",
                                    .path = "/v1/responses/",
                                    .pinned_suffix = "/input_items",
                                    .upstream_path = "/responses",
                                    .method = MG_HTTP_GET,
                                    .kind = MG_EPK_PINNED,
                                    .family = MG_API_OPENAI,
                                    .shape = MG_SHAPE_NONE,
                                    .ops = &mg_api__responses_store_ops},
    [MG_EP_MESSAGES] = {.id = MG_EP_MESSAGES,
                        .name = "messages",
                        .path = "/v1/messages",
                        .upstream_path = "/messages",
                        .method = MG_HTTP_POST,
                        .kind = MG_EPK_MODEL,
                        .family = MG_API_ANTHROPIC,
                        .shape = MG_SHAPE_MESSAGES,
                        .gated = true,
                        .cacheable = true,
                        .traditional = true,
                        .streams = true,
                        .ops = &mg_api__messages_ops},
    [MG_EP_COUNT_TOKENS] = {.id = MG_EP_COUNT_TOKENS,
                            .name = "messages.count_tokens",
                            .path = "/v1/messages/count_tokens",
                            .upstream_path = "/messages/count_tokens",
                            .method = MG_HTTP_POST,
                            .kind = MG_EPK_MODEL,
                            .family = MG_API_ANTHROPIC,
                            .shape = MG_SHAPE_MESSAGES,
                            .ops = &mg_api__count_tokens_ops},
};

const struct mg_endpoint *mg_endpoint_get(enum mg_endpoint_id id) {
  return (unsigned)id < MG_EP__COUNT ? &table[id] : NULL;
}

/* An id in a path: one non-empty segment of URL-safe bytes. OpenAI's ids
 * are [A-Za-z0-9_-]; modelgate's wrapped ids too (api/conv.h). */
static bool id_segment(const char *p, size_t n) {
  size_t i;
  if (n == 0 || n > 512)
    return false;
  for (i = 0; i < n; i++) {
    char c = p[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
      return false;
  }
  return true;
}

/* The pinned endpoints a path names: GET/DELETE of /v1/responses/{id}, or
 * GET of /v1/responses/{id}/input_items. 0 when not such a path, 1 for the
 * response itself, 2 for its input items. */
static int pinned_form(const char *path, size_t len, struct mg_str *id) {
  static const char prefix[] = "/v1/responses/";
  static const char items[] = "/input_items";
  const size_t pl = sizeof(prefix) - 1, il = sizeof(items) - 1;
  const char *p, *slash;
  size_t n;

  if (len <= pl || memcmp(path, prefix, pl) != 0)
    return 0;
  p = path + pl;
  n = len - pl;
  slash = memchr(p, '/', n);
  if (slash == NULL) {
    if (!id_segment(p, n))
      return 0;
    if (id)
      *id = (struct mg_str){p, n};
    return 1;
  }
  if ((size_t)(p + n - slash) != il || memcmp(slash, items, il) != 0 ||
      !id_segment(p, (size_t)(slash - p)))
    return 0;
  if (id)
    *id = (struct mg_str){p, (size_t)(slash - p)};
  return 2;
}

const struct mg_endpoint *mg_endpoint_match(const char *path, size_t len,
                                            int method, bool *path_known) {
  size_t i;
  int form;

  *path_known = false;
  for (i = 0; i < MG_EP__COUNT; i++) {
    const struct mg_endpoint *ep = &table[i];
    size_t n;
    if (ep->kind != MG_EPK_MODEL)
      continue;
    n = strlen(ep->path);
    if (len == n && memcmp(path, ep->path, n) == 0) {
      *path_known = true;
      return method == ep->method ? ep : NULL;
    }
  }
  form = pinned_form(path, len, NULL);
  if (form == 0)
    return NULL;
  *path_known = true;
  if (form == 2)
    return method == MG_HTTP_GET ? &table[MG_EP_RESPONSE_INPUT_ITEMS] : NULL;
  if (method == MG_HTTP_GET)
    return &table[MG_EP_RESPONSE_GET];
  if (method == MG_HTTP_DELETE)
    return &table[MG_EP_RESPONSE_DELETE];
  return NULL;
}

const char *mg_endpoint_allow(const char *path, size_t len) {
  bool known;
  int form;
  (void)mg_endpoint_match(path, len, -1, &known);
  if (!known)
    return NULL;
  form = pinned_form(path, len, NULL);
  if (form == 1)
    return "GET, DELETE";
  if (form == 2)
    return "GET";
  return "POST";
}

int mg_endpoint_pinned_id(const struct mg_endpoint *ep, const char *path,
                          size_t len, struct mg_str *id) {
  int form;
  if (ep == NULL || ep->kind != MG_EPK_PINNED)
    return -EINVAL;
  form = pinned_form(path, len, id);
  if (form == 0 || (form == 2) != (ep->id == MG_EP_RESPONSE_INPUT_ITEMS))
    return -EINVAL;
  return 0;
}

int mg_endpoint_pinned_path(const struct mg_endpoint *ep,
                            struct mg_str upstream_id, struct mg_buf *out) {
  size_t start = out->len;
  int rc;
  if (ep == NULL || ep->kind != MG_EPK_PINNED ||
      !id_segment(upstream_id.p, upstream_id.len))
    return -EINVAL;
  if ((rc = mg_buf_append(out, "/", 1)) != 0 ||
      (rc = mg_buf_append(out, upstream_id.p, upstream_id.len)) != 0 ||
      (rc = mg_buf_puts(out, ep->pinned_suffix)) != 0)
    mg_buf_truncate(out, start);
  return rc;
}

/* ---- confidence, usage, cost ---------------------------------------------- */

int mg_api_confidence(const struct mg_endpoint *ep,
                      const struct mg_gate_cfg *g,
                      const struct mg_json_doc *doc, const char *header_value,
                      double *conf) {
  struct mg_gate_acc a;
  switch (g->source) {
  case MG_CONF_LOGPROBS_MEAN:
  case MG_CONF_LOGPROBS_MIN:
    if (doc == NULL || ep->ops->logprobs == NULL)
      return -ENOENT;
    mg_gate_acc_init(&a);
    ep->ops->logprobs(doc, &a);
    return mg_gate_acc_confidence(&a, g->source, conf);
  case MG_CONF_HEADER:
    return mg_gate_confidence(g, doc, header_value, conf);
  case MG_CONF_JSON:
    if (doc == NULL)
      return -ENOENT;
    return mg_gate_json_confidence(
        g->pointer, doc,
        ep->ops->answer_text ? ep->ops->answer_text(doc) : MG_JSON_NOTFOUND,
        conf);
  }
  return -EINVAL;
}

void mg_usage_init(struct mg_usage *u) {
  u->prompt = u->completion = u->cached = u->reasoning = -1;
  u->cache_read = u->cache_write = -1;
}

void mg_stream_state_init(struct mg_stream_state *st) {
  memset(st, 0, sizeof(*st));
  mg_usage_init(&st->usage);
  mg_gate_acc_init(&st->acc);
  st->seq = -1;
}

static double known(int64_t v) { return v > 0 ? (double)v : 0.0; }

int mg_price_cost(const struct mg_price *p, const struct mg_usage *u,
                  double *usd) {
  double c;
  if (p == NULL || !p->set)
    return -EINVAL;
  if (u->prompt < 0 || u->completion < 0)
    return -ENOENT;
  if (p->api == MG_API_ANTHROPIC) {
    /* input_tokens excludes cache reads and writes: each class is priced
     * on its own, none is subtracted. */
    c = known(u->prompt) * p->input + known(u->cache_read) * p->cache_read +
        known(u->cache_write) * p->cache_write +
        known(u->completion) * p->output;
  } else {
    /* prompt_tokens (input_tokens) include the cached ones; reasoning
     * tokens are part of completion_tokens and billed as output. A cached
     * count above the prompt is an upstream's bug: capped. */
    double cached = known(u->cached);
    if (cached > known(u->prompt))
      cached = known(u->prompt);
    c = (known(u->prompt) - cached) * p->input + cached * p->cached_input +
        known(u->completion) * p->output;
  }
  *usd = c / 1e6;
  return 0;
}

/* ---- families ---------------------------------------------------------- */

void mg_api_check_families(const struct mg_targets *targets,
                           const struct mg_flags *flags,
                           const struct mg_fallbacks *fb,
                           struct mg_cfg_errors *e) {
  char path[MG_CFG_PATH_MAX], p[MG_CFG_PATH_MAX], q[MG_CFG_PATH_MAX];
  size_t i;
  uint32_t j;

  /* A flag's variants serve the same requests: one API for all of them,
   * the control's (fallback_to_control sends a variant's requests to it). */
  for (i = 0; flags && i < flags->n; i++) {
    const struct mg_flag *f = &flags->v[i];
    const struct mg_target *ref;
    if (f->nvariants == 0 || f->off_variant >= f->nvariants)
      continue;
    ref = f->variants[f->off_variant].target;
    if (ref == NULL)
      continue;
    for (j = 0; j < f->nvariants; j++) {
      const struct mg_target *t = f->variants[j].target;
      if (t == NULL || t->api == ref->api)
        continue;
      mg_cfg_join(path, "$.flags", f->name);
      mg_cfg_join(p, path, "variants");
      mg_cfg_join(q, p, f->variants[j].name);
      mg_cfg_join(p, q, "target");
      mg_cfg_error(e, p,
                   "target \"%s\" speaks api %s, but the flag's off_variant "
                   "\"%s\" (target \"%s\") speaks %s: a flag's variants must "
                   "speak one API",
                   t->name, mg_api_family_name(t->api),
                   f->variants[f->off_variant].name, ref->name,
                   mg_api_family_name(ref->api));
    }
  }
  /* A fallback target answers the request of the target it backs. */
  for (i = 0; fb && targets && i < targets->n && i < fb->npolicies; i++) {
    const struct mg_target *t = &targets->v[i];
    const struct mg_policy *pol = &fb->policies[i];
    for (j = 0; j < pol->nchain; j++) {
      const struct mg_tier *tier = &pol->chain[j];
      if (tier->kind != MG_TIER_TARGET || tier->target == NULL ||
          tier->target->api == t->api)
        continue;
      mg_cfg_join(path, "$.targets", t->name);
      mg_cfg_join(p, path, "fallbacks");
      mg_cfg_join_idx(q, p, j);
      mg_cfg_error(e, q,
                   "target \"%s\" speaks api %s, but \"%s\" speaks %s: a "
                   "fallback must speak its target's API",
                   tier->target->name, mg_api_family_name(tier->target->api),
                   t->name, mg_api_family_name(t->api));
    }
  }
}

int mg_api_alias_family(const struct mg_alias *a, enum mg_api_family *out) {
  const struct mg_target *t = NULL;
  if (a == NULL)
    return -ENOENT;
  if (a->target)
    t = a->target;
  else if (a->flag && a->flag->nvariants > 0 &&
           a->flag->off_variant < a->flag->nvariants)
    t = a->flag->variants[a->flag->off_variant].target;
  if (t == NULL)
    return -ENOENT;
  *out = t->api;
  return 0;
}

bool mg_api_alias_serves(const struct mg_alias *a,
                         const struct mg_endpoint *ep) {
  enum mg_api_family f;
  return ep && mg_api_alias_family(a, &f) == 0 && f == ep->family;
}

int mg_api_wrong_family_error(const struct mg_endpoint *ep,
                              const struct mg_alias *a, struct mg_str model,
                              struct mg_buf *out, int *status) {
  enum mg_api_family f = ep->family == MG_API_OPENAI ? MG_API_ANTHROPIC
                                                     : MG_API_OPENAI;
  char msg[400];
  int n = model.len > 200 ? 200 : (int)model.len;
  (void)mg_api_alias_family(a, &f);
  snprintf(msg, sizeof(msg),
           "The model `%.*s` does not exist on %s: it is served by the %s "
           "API (%s).",
           n, model.p ? model.p : "", ep->path,
           f == MG_API_ANTHROPIC ? "Anthropic Messages" : "OpenAI",
           f == MG_API_ANTHROPIC ? "POST /v1/messages"
                                 : "POST /v1/chat/completions or "
                                   "/v1/responses");
  *status = 404;
  return ep->ops->error_body(out, 404, NULL, msg, "model", "model_not_found");
}
