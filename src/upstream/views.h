/* views.h - how a worker reaches each target of a snapshot: for every
 * target and endpoint the engine that serves it and the destination that
 * engine prepared (URL parsed, constant headers folded), built once per
 * snapshot and worker when the worker takes the snapshot. */
#ifndef MG_UP_VIEWS_H
#define MG_UP_VIEWS_H

#include "config/config.h"
#include "upstream/call.h"

/* The engines of one worker (NULL for a kind it does not have). */
struct mg_up_engines {
  struct mg_up_engine *curl;
  struct mg_up_engine *native;
};

struct mg_up_dest_ref {
  struct mg_up_engine *engine; /* borrowed: the worker's */
  const struct mg_up_engine_ops *ops; /* the engine's: destinations are
                                       * freed with them, maybe after the
                                       * engine closed */
  void *dest;                  /* owned by the views */
};

struct mg_up_views;

/* Every destination of cfg. NULL when out of memory or a destination
 * cannot be built (logged). */
struct mg_up_views *mg_up_views_new(const struct mg_config *cfg,
                                    const struct mg_up_engines *e);
void mg_up_views_free(struct mg_up_views *v);

const struct mg_up_dest_ref *mg_up_views_target(const struct mg_up_views *v,
                                                const struct mg_target *t,
                                                enum mg_endpoint_id ep);
/* NULL when the traditional path has no URL. */
const struct mg_up_dest_ref *
mg_up_views_trad(const struct mg_up_views *v, const struct mg_traditional *t);

#endif
