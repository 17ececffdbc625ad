/* live.c - GET /admin/live (live.h). */
#include "handlers/live.h"

#include <stdio.h>
#include <string.h>

#include "common/time.h"
#include "runtime/live.h"

static cJSON *window_json(const struct mg_live_sum *s,
                          const struct mg_config *cfg) {
  cJSON *o = cJSON_CreateObject(), *fb;
  double n = (double)s->requests;
  size_t i;
  cJSON_AddNumberToObject(o, "requests", n);
  cJSON_AddNumberToObject(o, "error_rate", n ? s->errors / n : 0);
  cJSON_AddNumberToObject(o, "fallback_rate", n ? s->fallbacks / n : 0);
  cJSON_AddNumberToObject(o, "low_confidence_rate", n ? s->low_conf / n : 0);
  cJSON_AddNumberToObject(o, "p50_ms", mg_live_quantile(s, 0.50));
  cJSON_AddNumberToObject(o, "p95_ms", mg_live_quantile(s, 0.95));
  cJSON_AddNumberToObject(o, "p99_ms", mg_live_quantile(s, 0.99));
  if (s->cost_n)
    cJSON_AddNumberToObject(o, "cost_per_request", s->cost / s->cost_n);
  else
    cJSON_AddNullToObject(o, "cost_per_request");
  fb = cJSON_AddObjectToObject(o, "feedback");
  /* The declared metrics, in order (the live slots keep the first
   * MG_LIVE_FEEDBACK). */
  for (i = 0; fb && i < cfg->feedback.nmetrics && i < MG_LIVE_FEEDBACK; i++) {
    cJSON *m = cJSON_AddObjectToObject(fb, cfg->feedback.metrics[i].name);
    if (m == NULL)
      break;
    cJSON_AddNumberToObject(m, "n", (double)s->fb_n[i]);
    if (s->fb_n[i])
      cJSON_AddNumberToObject(m, "mean", s->fb_sum[i] / (double)s->fb_n[i]);
    else
      cJSON_AddNullToObject(m, "mean");
  }
  return o;
}

cJSON *mg_live_json(struct mg_worker *w) {
  static const struct {
    const char *name;
    uint32_t ms;
  } spans[] = {{"1m", 60000}, {"5m", 300000}, {"15m", 900000}};
  struct mg_wsnap *ws = mg_worker_snap(w);
  const struct mg_snap *sn = ws->snap;
  const struct mg_config *cfg = sn->cfg;
  int64_t mono = (int64_t)uv_now(w->loop);
  cJSON *root = cJSON_CreateObject(), *flags, *br;
  char ts[32];
  size_t i;

  mg_rfc3339_format(mg_wall_ms(), ts);
  cJSON_AddStringToObject(root, "now", ts);
  if (w->sh->instance)
    cJSON_AddStringToObject(root, "instance", w->sh->instance);
  else
    cJSON_AddNullToObject(root, "instance");
  cJSON_AddStringToObject(cJSON_AddObjectToObject(root, "config"), "hash",
                          cfg->hash);
  flags = cJSON_AddObjectToObject(root, "flags");
  for (i = 0; i < cfg->flags.n; i++) {
    const struct mg_flag *f = &cfg->flags.v[i];
    const struct mg_flag_state *st = &sn->flag_states[i];
    cJSON *o = cJSON_AddObjectToObject(flags, f->name), *vs, *ramp;
    uint32_t j;
    size_t k;
    cJSON_AddBoolToObject(o, "enabled", f->enabled);
    cJSON_AddBoolToObject(o, "killed", st->killed);
    if (st->has_weights) {
      cJSON *wj = cJSON_AddObjectToObject(o, "weights");
      for (j = 0; j < f->nvariants; j++)
        cJSON_AddNumberToObject(wj, f->variants[j].name,
                                st->weights[j] / 100.0);
    } else {
      cJSON_AddNullToObject(o, "weights");
    }
    vs = cJSON_AddObjectToObject(o, "variants");
    for (j = 0; j < f->nvariants; j++) {
      cJSON *v = cJSON_AddObjectToObject(vs, f->variants[j].name), *wins;
      cJSON_AddStringToObject(v, "target", f->variants[j].target->name);
      wins = cJSON_AddObjectToObject(v, "windows");
      for (k = 0; k < sizeof(spans) / sizeof(spans[0]); k++) {
        struct mg_live_sum s;
        memset(&s, 0, sizeof(s));
        mg_rt_live_read(sn->live[i][j], mono, spans[k].ms, &s);
        cJSON_AddItemToObject(wins, spans[k].name, window_json(&s, cfg));
      }
    }
    ramp = mg_rt_ramp_json(w->sh->rt, f, mono);
    if (ramp)
      cJSON_AddItemToObject(o, "ramp", ramp);
    else
      cJSON_AddNullToObject(o, "ramp");
  }
  br = cJSON_AddObjectToObject(root, "breakers");
  for (i = 0; i < cfg->targets.n; i++)
    cJSON_AddStringToObject(
        cJSON_AddObjectToObject(br, cfg->targets.v[i].name), "state",
        mg_breaker_state_name(mg_breaker_state(sn->breakers[i])));
  cJSON_AddItemToObject(root, "events", mg_tel_recent_events(w->sh->tm));
  mg_wsnap_release(ws);
  return root;
}
