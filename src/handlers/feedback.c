/* feedback.c - POST /v1/feedback (feedback.h).
 *
 * One request, in order: the client's key (as model requests, when
 * `clients` is set); the body's size against feedback.max_bytes; the JSON;
 * the number of items against feedback.max_batch; the client's budget
 * (feedback.rate_per_client, items per second: a refused request still
 * spent nothing, an invalid one spent its items, so a flood of bad items
 * is bounded too); then every item is validated before any is written, so
 * that a batch is taken whole or refused whole with the field that is
 * wrong ("[3].value"). Accepted items become feedback lines in the
 * decision log (the same writer as the records: never blocking; a full
 * buffer drops and counts the line, and the answer says how many), and
 * reach the live view and the ramp guards of the flag variant named by the
 * decision id's tag (decisions/dtag.h). An id of no known flag variant - a
 * request that had no flag, another config's, another deployment's - is
 * accepted all the same: the report joins it, or not, at report time. */
#include "handlers/feedback.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/hash.h"
#include "common/time.h"
#include "decisions/dtag.h"
#include "decisions/feedback.h"
#include "handlers/auth.h"
#include "runtime/runtime.h"
#include "server/worker.h"
#include "telemetry/telemetry.h"

/* The decision headers every answer carries (issue 3): a feedback answer
 * decides nothing. */
static void plain_extra(struct mg_worker *w, char *out, size_t n) {
  char id[33];
  mg_worker_new_id(w, id);
  snprintf(out, n,
           "x-modelgate-decision: %s\r\nx-modelgate-flag: -\r\n"
           "x-modelgate-variant: -\r\nx-modelgate-reason: unrouted\r\n",
           id);
}

/* The flag and variant a decision id's tag names in snapshot s: false
 * when none does. */
static bool find_variant(const struct mg_snap *s, const struct mg_dtag *t,
                         size_t *flag, uint32_t *variant) {
  const struct mg_flags *fl = &s->cfg->flags;
  size_t i;
  uint32_t j;
  for (i = 0; i < fl->n; i++)
    for (j = 0; j < fl->v[i].nvariants; j++)
      if (mg_dtag_hash(fl->v[i].name, fl->v[i].variants[j].name) ==
          t->hash) {
        *flag = i;
        *variant = j;
        return true;
      }
  return false;
}

/* Feed one accepted item to the live view and the ramp's guard windows. */
static void observe(struct mg_worker *w, const struct mg_snap *s,
                    const struct mg_feedback_item *it, int64_t mono) {
  const struct mg_config *cfg = s->cfg;
  uint32_t metric = (uint32_t)(it->metric - cfg->feedback.metrics);
  struct mg_dtag tag;
  size_t f;
  uint32_t v;
  if (!mg_dtag_get(it->decision_id, &tag) || !find_variant(s, &tag, &f, &v))
    return;
  mg_rt_live_feedback(s->live[f][v], w->index, mono, metric, it->value);
  /* Guards compare randomized decisions only, as with requests. */
  if (tag.rollout && cfg->ramps.v[f].enabled) {
    const struct mg_ramp_cfg *rc = &cfg->ramps.v[f];
    int arm = v == rc->variant ? 0 : (v == rc->control ? 1 : -1);
    struct mg_window_fb fb;
    memset(&fb, 0, sizeof(fb));
    fb.metric = metric;
    fb.value = it->value;
    fb.chars_cell = tag.chars ? (uint8_t)(MG_CELL_CHARS0 + tag.chars - 1)
                              : MG_CELL_NONE;
    fb.tools_cell = tag.tools ? (uint8_t)(MG_CELL_TOOLS0 + tag.tools - 1)
                              : MG_CELL_NONE;
    /* The unit, when the app names it, joins the unit's cluster (the
     * hash a flag's unit gets, routing/flag.c). */
    if (it->unit) {
      fb.has_unit = true;
      fb.unit_hash = mg_xxh64(it->unit, strlen(it->unit), 0);
    }
    mg_rt_ramp_feedback(s->ramps[f], s->ramp_epochs[f],
                        s->ramp_states[f].epoch, w->index, arm, mono, &fb);
  }
}

static void refuse(struct mg_resp *c, int status, const char *extra,
                   const char *msg, const char *code, const char *param) {
  mg_resp_error(c, status, msg, code, param, extra);
}

void mg_feedback_handle(void *owner, struct mg_resp *c,
                        const struct mg_route *route) {
  struct mg_worker *w = owner;
  struct mg_wsnap *ws = mg_worker_snap(w);
  const struct mg_snap *s = ws->snap;
  const struct mg_feedback_config *fc = &s->cfg->feedback;
  const struct mg_http_req *rq = mg_resp_req(c);
  struct mg_feedback_item *items = NULL;
  struct mg_feedback_error ferr;
  const char *client = NULL;
  char extra[512], msg[320];
  int64_t mono = (int64_t)uv_now(w->loop), wall;
  cJSON *doc = NULL, *it;
  uint32_t n = 0, i, retry_ms, dropped = 0;
  (void)route;

  plain_extra(w, extra, sizeof(extra));
  if (!mg_auth_client(s->cfg, rq, &client)) {
    refuse(c, 401, extra, mg_auth_message(rq), "invalid_api_key", NULL);
    goto out;
  }
  if (rq->body.len > fc->max_bytes) {
    snprintf(msg, sizeof(msg),
             "The feedback body is %zu bytes; at most %u are accepted "
             "(feedback.max_bytes).",
             rq->body.len, fc->max_bytes);
    mg_tel_feedback(w->tel, "-", "too_large", 1);
    refuse(c, 413, extra, msg, "request_too_large", NULL);
    goto out;
  }
  doc = cJSON_ParseWithLength(rq->body.data ? rq->body.data : "",
                              rq->body.len);
  if (!cJSON_IsObject(doc) && !cJSON_IsArray(doc)) {
    mg_tel_feedback(w->tel, "-", "invalid", 1);
    refuse(c, 400, extra,
           "The body must be a JSON object {\"decision_id\", \"metric\", "
           "\"value\"} or an array of them.",
           "invalid_json", NULL);
    goto out;
  }
  n = cJSON_IsArray(doc) ? (uint32_t)cJSON_GetArraySize(doc) : 1;
  if (n == 0 || n > fc->max_batch) {
    if (n)
      snprintf(msg, sizeof(msg),
               "A feedback batch holds at most %u items, not %u "
               "(feedback.max_batch).",
               fc->max_batch, n);
    else
      snprintf(msg, sizeof(msg), "The feedback batch is empty.");
    mg_tel_feedback(w->tel, "-", "invalid", n ? n : 1);
    refuse(c, 400, extra, msg, n ? "batch_too_large" : "empty_batch", NULL);
    goto out;
  }
  if (!mg_rt_feedback_admit(w->sh->rt, client, n, fc->rate_per_second,
                            fc->rate_burst, mono, &retry_ms)) {
    size_t l = strlen(extra);
    snprintf(extra + l, sizeof(extra) - l, "retry-after: %u\r\n",
             (retry_ms + 999) / 1000);
    snprintf(msg, sizeof(msg),
             "Rate limit reached for feedback: %g items per second, bursts "
             "of %g (feedback.rate_per_client). Try again in %u ms.",
             fc->rate_per_second, fc->rate_burst, retry_ms);
    mg_tel_feedback(w->tel, "-", "rate_limited", n);
    refuse(c, 429, extra, msg, "rate_limit_exceeded", NULL);
    goto out;
  }
  items = calloc(n, sizeof(*items));
  if (items == NULL) {
    refuse(c, 503, extra, "Out of memory.", "internal_error", NULL);
    goto out;
  }
  i = 0;
  if (cJSON_IsArray(doc)) {
    cJSON_ArrayForEach(it, doc) {
      if (mg_feedback_validate(fc, it, (int)i, &items[i], &ferr) != 0)
        break;
      i++;
    }
  } else if (mg_feedback_validate(fc, doc, -1, &items[0], &ferr) == 0) {
    i = 1;
  }
  if (i < n) {
    mg_tel_feedback(w->tel, "-", "invalid", n);
    refuse(c, 400, extra, ferr.message, ferr.code,
           ferr.param[0] ? ferr.param : NULL);
    goto out;
  }
  wall = mg_wall_ms();
  for (i = 0; i < n; i++) {
    if (mg_tel_feedback_line(w->tel, &items[i], wall, client,
                             w->sh->instance) != 0) {
      dropped++;
      mg_tel_feedback(w->tel, items[i].metric->name, "dropped", 1);
    }
    mg_tel_feedback(w->tel, items[i].metric->name, "accepted", 1);
    observe(w, s, &items[i], mono);
  }
  {
    char body[128];
    int len = snprintf(body, sizeof(body),
                       "{\"object\":\"feedback\",\"accepted\":%u,"
                       "\"dropped\":%u}",
                       n, dropped);
    mg_resp_send(c, 200, "application/json", extra, body, (size_t)len);
  }
out:
  free(items);
  cJSON_Delete(doc);
  mg_wsnap_release(ws);
  mg_resp_done(c);
}
