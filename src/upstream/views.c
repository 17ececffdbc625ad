/* views.c - per-snapshot destinations of a worker (views.h). */
#include "upstream/views.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

struct mg_up_views {
  size_t ntargets;
  struct mg_up_dest_ref *targets; /* owned: ntargets x MG_EP__COUNT */
  size_t ntrad;
  struct mg_up_dest_ref *trad;    /* owned: by traditional index */
};

/* A separate object, not an initializer of an array of strings: clang's
 * -Wstring-concatenation reads "a" MACRO inside one as a missing comma. */
static const char user_agent[] = "User-Agent: modelgate/" MG_VERSION;

static void ref_free(struct mg_up_dest_ref *r) {
  if (r->ops && r->dest)
    r->ops->dest_free(r->dest);
  r->dest = NULL;
}

void mg_up_views_free(struct mg_up_views *v) {
  size_t i;
  if (v == NULL)
    return;
  for (i = 0; i < v->ntargets * MG_EP__COUNT; i++)
    ref_free(&v->targets[i]);
  for (i = 0; i < v->ntrad; i++)
    ref_free(&v->trad[i]);
  free(v->targets);
  free(v->trad);
  free(v);
}

/* The engine for url (DESIGN.md, "Scale -> Upstream engines"): `auto` is
 * the native engine for plain http:// unless an egress proxy is set (only
 * libcurl speaks to proxies), libcurl for everything else. */
static struct mg_up_engine *pick(const struct mg_config *cfg,
                                 const struct mg_up_engines *e,
                                 enum mg_engine conf, const char *url) {
  if (conf == MG_ENGINE_CURL || e->native == NULL)
    return e->curl;
  if (conf == MG_ENGINE_NATIVE)
    return e->native;
  if (url && strncmp(url, "http://", 7) == 0 &&
      (cfg->upstream.proxy == NULL || cfg->upstream.proxy[0] == '\0'))
    return e->native;
  return e->curl;
}

static int build(struct mg_up_dest_ref *r, struct mg_up_engine *e,
                 const char *url, const char *const *lines, size_t n,
                 const struct mg_up_tls *tls, const char *what,
                 const char *name) {
  char err[256];
  r->engine = e;
  r->ops = e->ops;
  r->dest = e->ops->dest_new(e, url, lines, n, tls, err, sizeof(err));
  if (r->dest == NULL) {
    mg_error("upstream: cannot prepare %s %s: %s", what, name, err);
    return -1;
  }
  return 0;
}

struct mg_up_views *mg_up_views_new(const struct mg_config *cfg,
                                    const struct mg_up_engines *e) {
  struct mg_up_views *v = calloc(1, sizeof(*v));
  size_t i;
  int j;
  if (v == NULL)
    return NULL;
  v->ntargets = cfg->targets.n;
  v->ntrad = cfg->fallbacks.ntrad;
  v->targets = calloc(v->ntargets ? v->ntargets * MG_EP__COUNT : 1,
                      sizeof(*v->targets));
  v->trad = calloc(v->ntrad ? v->ntrad : 1, sizeof(*v->trad));
  if (v->targets == NULL || v->trad == NULL)
    goto fail;
  for (i = 0; i < v->ntargets; i++) {
    const struct mg_target *t = &cfg->targets.v[i];
    const char *lines[3] = {"Content-Type: application/json", user_agent,
                            t->auth_header};
    struct mg_up_tls tls = {t->ca_file, t->tls_verify};
    for (j = 0; j < MG_EP__COUNT; j++)
      if (build(&v->targets[i * MG_EP__COUNT + (size_t)j],
                pick(cfg, e, t->engine, t->urls[j]),
                t->urls[j], lines, t->auth_header ? 3 : 2, &tls, "target",
                t->name) != 0)
        goto fail;
  }
  for (i = 0; i < v->ntrad; i++) {
    const struct mg_traditional *t = &cfg->fallbacks.trad[i];
    const char *lines[2] = {"Content-Type: application/json", user_agent};
    struct mg_up_tls tls = {NULL, true};
    if (t->url && build(&v->trad[i], pick(cfg, e, t->engine, t->url),
                        t->url, lines, 2, &tls,
                        "traditional path", t->name) != 0)
      goto fail;
  }
  return v;
fail:
  mg_up_views_free(v);
  return NULL;
}

const struct mg_up_dest_ref *mg_up_views_target(const struct mg_up_views *v,
                                                const struct mg_target *t,
                                                enum mg_endpoint_id ep) {
  return &v->targets[t->index * MG_EP__COUNT + (size_t)ep];
}

const struct mg_up_dest_ref *
mg_up_views_trad(const struct mg_up_views *v, const struct mg_traditional *t) {
  const struct mg_up_dest_ref *r = &v->trad[t->index];
  return r->dest ? r : NULL;
}
