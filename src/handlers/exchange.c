/* exchange.c - one proxied request, on any endpoint of the table
 * (api/api.h): the endpoint says how to read the body, how to read usage
 * and confidence from the answer, how to render an answer modelgate makes
 * and how to write an error. Nothing here branches on which endpoint it
 * serves.
 *
 *   start: client key -> body -> alias -> family -> flag -> variant ->
 *          conversation pin -> the answer cache first when it serves
 *          hits; then the plan
 *   run:   carry out the plan's steps (fallbacks/plan.c): call a target,
 *          wait and retry, try the cache, a traditional answer, or fail
 *   call:  splice the upstream model (and logprobs for the gate, the
 *          upstream id of a previous response) into the body; start an
 *          upstream call on the target's engine
 *   relay (streams): the upstream's events, one at a time, as they come,
 *          pausing the upstream while the client's write queue is over the
 *          high watermark; ids rewritten where the endpoint has them
 *   done:  classify the attempt once (judge); answer, or hand the outcome
 *          to the plan and run its next step
 *   finish: count and record right before the last bytes go out, release
 *          everything, let the connection go on
 *
 * What is decided is decided once, in its layer, and carried in the
 * exchange: the unit and its source (routing), the tier that served and
 * why (fallbacks), how each attempt ended (judge); headers and the record
 * read those, never re-derive them.
 *
 * Re-entrancy: writing to the client can fail and close the connection,
 * which calls our `gone` hook while we are still inside one of our own
 * functions. Every entry point holds the exchange; finishing only marks it,
 * and the last release frees it (Redis' freeClientAsync idea). */
#include "handlers/exchange.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/conv.h"
#include "common/hash.h"
#include "common/json.h"
#include "common/log.h"
#include "common/time.h"
#include "config/config.h"
#include "decisions/dtag.h"
#include "decisions/record.h"
#include "fallbacks/answer.h"
#include "fallbacks/cache.h"
#include "fallbacks/gate.h"
#include "fallbacks/plan.h"
#include "handlers/auth.h"
#include "routing/request.h"
#include "routing/route.h"
#include "runtime/runtime.h"
#include "server/http.h"
#include "server/resp.h"
#include "server/worker.h"
#include "telemetry/telemetry.h"
#include "upstream/call.h"
#include "upstream/views.h"

#define EXTRA_MAX 2048
#define PASS_MAX 1024
#define MAX_ATTEMPTS 16
/* One server-sent event of an upstream stream, at most. */
#define SSE_EVENT_MAX (1u << 20)

/* A timer for retry waits, apart from the exchange: its memory must live
 * until libuv's close callback, which may come after the exchange ended. */
struct wait_timer {
  uv_timer_t t;
  struct mg_exchange *ex; /* borrowed; NULL once the exchange let go */
};

struct attempt {
  const char *target;  /* borrowed from the snapshot: target or tier name */
  const char *outcome; /* static: "ok", "timeout_first_byte", "5xx", ... */
  int status;          /* upstream HTTP status, or 0 */
  uint32_t ms;
  double confidence;
  bool has_confidence;
};

enum cache_state { CACHE_OFF, CACHE_MISS, CACHE_HIT, CACHE_STORE };

/* Who answered. */
enum served_tier {
  SERVED_NONE,        /* nothing did (an error), or not yet */
  SERVED_TARGET,      /* a target: the variant's, a fallback, the control */
  SERVED_CACHE,
  SERVED_TRADITIONAL,
};

/* How one attempt ended, judged once (judge()), for the plan, the record,
 * the breaker and the answer. */
struct verdict {
  uint32_t trigger;         /* MG_TRIG_*, or 0: a good answer */
  uint32_t retry_after_ms;
  const char *outcome;      /* static, for the attempt */
  bool client_error;        /* the client's own 4xx: returned as it is */
  bool keep_body;           /* an upstream JSON error to pass on */
  int status;               /* to answer with when nothing else can */
  const char *code;         /* static */
  char msg[320];
};

/* Server-sent events as they arrive: lines gathered into one event at a
 * time (bounded), relayed whole. */
struct sse {
  struct mg_buf ev;         /* owned: the raw bytes of the event so far */
  bool oversize;            /* over SSE_EVENT_MAX: relayed as it comes,
                             * not parsed, until its blank line */
  bool at_line_start;       /* oversize: the last byte relayed was '\n' */
};

struct mg_exchange {
  struct mg_worker *w;          /* borrowed: the worker we run on */
  struct mg_resp *conn;         /* borrowed; NULL once the client is gone */
  struct mg_wsnap *ws;          /* owned reference: the snapshot we began
                                 * on, as this worker holds it */
  const struct mg_config *cfg;  /* ws->snap->cfg */
  const struct mg_endpoint *ep; /* static: the endpoint table's */
  struct mg_buf body;           /* owned: the client's request body */
  struct mg_buf hdrcopy;        /* owned: header values routing uses */
  /* The routing decision. */
  const struct mg_alias *alias; /* borrowed from cfg */
  const struct mg_flag *flag;   /* borrowed from cfg, or NULL */
  struct mg_flag_decision fd;   /* the flag's decision, when flag is set */
  struct mg_str unit;           /* its raw unit id (slice of body, hdrcopy
                                 * or cfg), or empty */
  uint32_t weights[MG_FLAG_MAX_VARIANTS]; /* in force at the decision */
  bool has_weights;
  const struct mg_target *target; /* borrowed: the variant's target */
  const struct mg_target *pinned; /* the target a previous response lives
                                   * on, or NULL */
  struct mg_str prev_up;        /* ...and its upstream id (slice of body) */
  const char *client;           /* borrowed from cfg: the authenticated
                                 * client, or NULL */
  /* The fallbacks' decisions. */
  struct mg_plan plan;
  struct mg_step step;
  enum served_tier served;
  const char *served_name;      /* borrowed: target or traditional name */
  const struct mg_target *served_target; /* borrowed: SERVED_TARGET's */
  struct mg_cache_key ckey;
  bool has_ckey;
  enum cache_state cache;
  /* The call in flight. */
  struct mg_up_call *call;      /* or NULL */
  const struct mg_target *call_target;      /* ...to this target, or */
  const struct mg_traditional *call_trad;   /* ...to this traditional path */
  bool call_asked_logprobs;     /* we added logprobs: strip them again */
  bool call_buffered;           /* a stream asked for whole, to gate it */
  struct wait_timer *timer;     /* owned until closed; NULL when none */
  /* The answer. */
  char id[33];
  uint64_t t_start;             /* uv_hrtime() when the request was read */
  uint64_t t_call;              /* uv_hrtime() when the current call began */
  struct mg_timeouts call_timeouts; /* in force for the current call */
  uint64_t up_ns;               /* time spent waiting for upstreams */
  uint64_t t_head;              /* uv_hrtime() when a stream head went out */
  struct mg_usage usage;        /* of the answer served */
  double cost;
  bool has_cost;
  double threshold;             /* the serving target's gate, when on */
  bool has_threshold;
  int status;                   /* status sent to the client */
  double confidence;            /* of the answer served, when known */
  bool has_confidence;
  double rejected_confidence;   /* of the last answer below the gate */
  bool has_rejected;
  /* The last failure, to answer with when nothing else can. */
  const struct mg_target *fail_target; /* borrowed: who failed, or NULL */
  int fail_status;
  const char *fail_code;        /* static */
  struct mg_buf fail_body;      /* owned: an upstream's own JSON error */
  int nattempts;                /* attempts[] in use */
  /* A stream passing through. */
  struct mg_stream_state st;
  struct sse sse;
  bool rewrite_ids;             /* the stream's response ids are wrapped */
  int holds;                    /* entry points active on the stack */
  bool finished;
  bool accounted;               /* counted and recorded (account()) */
  bool in_data;                 /* inside on_data (the engine's callback) */
  bool stream_started;          /* the head of a stream was sent */
  bool stream_failed;           /* a stream ended with an error event */
  bool doc_fresh;               /* the scratch tokens are still this
                                 * request's (from start to the first call) */
  /* ---- Not zeroed when the exchange is made (exchange_new): 6 KiB that
   * a memset per request would spend most of the exchange's set-up on.
   * The strings begin empty; an attempt is written whole when it is made
   * (nattempts counts them). Keep these last: exchange_new zeroes what
   * comes before query. */
  char query[512];              /* a pinned request's query string, or "" */
  struct mg_request req;        /* mg_request_init'ed; slices into body and
                                 * hdrcopy; its doc is the worker's scratch,
                                 * valid in start only */
  char fail_msg[320];           /* the last failure's words */
  char fail_pass[PASS_MAX];     /* ...and its pass-through headers */
  /* Response headers of the upstream answer served that clients rely on
   * (DESIGN.md, "The APIs"): "name: value\r\n" lines, or "". */
  char pass[PASS_MAX];
  struct attempt attempts[MAX_ATTEMPTS];
  char extra[EXTRA_MAX];        /* x-modelgate-* and pass-through lines */
};

static void run(struct mg_exchange *ex);
static void report_breaker(struct mg_exchange *ex);
static void timer_release(struct mg_exchange *ex);

static void ex_free(struct mg_exchange *ex) {
  timer_release(ex);
  mg_request_free(&ex->req);
  mg_buf_free(&ex->body);
  mg_buf_free(&ex->hdrcopy);
  mg_buf_free(&ex->fail_body);
  mg_buf_free(&ex->sse.ev);
  mg_wsnap_release(ex->ws);
  free(ex);
}

static void hold(struct mg_exchange *ex) { ex->holds++; }

static void release(struct mg_exchange *ex) {
  struct mg_worker *w = ex->w;
  uint32_t keep = ex->cfg->limits.json_tokens;
  if (--ex->holds == 0 && ex->finished)
    ex_free(ex);
  /* An outlier answer grew the worker's scratch: give it back now, or one
   * 16 MiB answer would keep ~160 MiB of tokens for good (issue 10.5). */
  mg_json_shrink(&w->scratch, keep);
}

/* The ceiling of an upstream answer's tokens: all that a body within
 * limits.response_bytes can hold, and no more. */
static uint32_t answer_tokens(const struct mg_exchange *ex) {
  return mg_json_max_tokens_for(ex->cfg->limits.response_bytes);
}

static uint64_t now_ms(const struct mg_exchange *ex) {
  return uv_now(ex->w->loop);
}

static const char *tier_name(const struct mg_exchange *ex) {
  switch (ex->served) {
  case SERVED_CACHE:
    return "cache";
  case SERVED_TRADITIONAL:
    return "traditional";
  case SERVED_TARGET:
    if (ex->status >= 400)
      return "none";
    return mg_plan_fell_back(&ex->plan) ? "fallback" : "primary";
  case SERVED_NONE:
    break;
  }
  return "none";
}

/* x-modelgate-served-by and the record's served_by: the target's name,
 * "cache", or "traditional:<name>". */
static const char *served_by(const struct mg_exchange *ex, char *buf,
                             size_t n) {
  switch (ex->served) {
  case SERVED_TARGET:
    return ex->served_name;
  case SERVED_CACHE:
    return "cache";
  case SERVED_TRADITIONAL:
    snprintf(buf, n, "traditional:%s", ex->served_name);
    return buf;
  case SERVED_NONE:
    break;
  }
  return NULL;
}

static void serve(struct mg_exchange *ex, enum served_tier tier,
                  const char *name) {
  ex->served = tier;
  ex->served_name = name;
  ex->served_target = NULL;
}

static void serve_target(struct mg_exchange *ex, const struct mg_target *t) {
  serve(ex, SERVED_TARGET, t->name);
  ex->served_target = t;
}

/* ---- headers -------------------------------------------------------------- */

/* Append "name: value\r\n" to the extra headers, if it fits. */
static void extra_add(struct mg_exchange *ex, size_t *len, const char *name,
                      const char *value) {
  size_t nl = strlen(name), vl = strlen(value);
  if (*len + nl + vl + 5 > sizeof(ex->extra))
    return;
  memcpy(ex->extra + *len, name, nl);
  *len += nl;
  memcpy(ex->extra + *len, ": ", 2);
  *len += 2;
  memcpy(ex->extra + *len, value, vl);
  *len += vl;
  memcpy(ex->extra + *len, "\r\n", 3); /* with the terminator */
  *len += 2;
}

/* The decision headers (DESIGN.md, "What the client sees"), on every
 * answer: "-" where a request never reached a flag. */
static void set_extra(struct mg_exchange *ex) {
  char why[24], conf[32], cost[32], sb[96];
  const char *by = served_by(ex, sb, sizeof(sb));
  size_t len = 0, pl;
  extra_add(ex, &len, "x-modelgate-decision", ex->id);
  if (ex->flag) {
    extra_add(ex, &len, "x-modelgate-flag", ex->flag->name);
    extra_add(ex, &len, "x-modelgate-variant",
              ex->flag->variants[ex->fd.variant].name);
    extra_add(ex, &len, "x-modelgate-reason",
              mg_reason_name(ex->fd.reason, ex->fd.rule, why, sizeof(why)));
  } else {
    extra_add(ex, &len, "x-modelgate-flag", "-");
    extra_add(ex, &len, "x-modelgate-variant", "-");
    extra_add(ex, &len, "x-modelgate-reason",
              ex->alias ? "direct" : "unrouted");
  }
  if (by)
    extra_add(ex, &len, "x-modelgate-served-by", by);
  if (ex->plan.why)
    extra_add(ex, &len, "x-modelgate-fallback", mg_trigger_name(ex->plan.why));
  if (ex->has_confidence) {
    snprintf(conf, sizeof(conf), "%.4f", ex->confidence);
    extra_add(ex, &len, "x-modelgate-confidence", conf);
  }
  /* Known before the head only for whole answers: a stream's usage comes
   * at its end (DESIGN.md, "Cost"). */
  if (ex->has_cost) {
    snprintf(cost, sizeof(cost), "%.8f", ex->cost);
    extra_add(ex, &len, "x-modelgate-cost", cost);
  }
  pl = strlen(ex->pass);
  if (pl && len + pl < sizeof(ex->extra))
    memcpy(ex->extra + len, ex->pass, pl + 1);
}

/* The upstream response headers clients read, passed on: OpenAI's request
 * id (the SDKs' `_request_id`), processing time, API version and rate
 * limits; Anthropic's request id and its anthropic-* headers; the waits an
 * upstream asks for. Never hop-by-hop or framing headers: those are this
 * connection's own (RFC 9110, 7.6.1). */
static bool passes(const char *name, size_t n) {
  static const char *const exact[] = {"x-request-id", "openai-processing-ms",
                                      "openai-version", "openai-organization",
                                      "request-id", "retry-after",
                                      "retry-after-ms", NULL};
  static const char *const prefix[] = {"x-ratelimit-", "anthropic-", NULL};
  struct mg_str s = {name, n};
  const char *const *p;
  for (p = exact; *p; p++)
    if (mg_str_eq_nocase(s, mg_str_c(*p)))
      return true;
  for (p = prefix; *p; p++)
    if (mg_str_has_prefix_nocase(s, *p))
      return true;
  return false;
}

struct pass_acc {
  char *out;
  size_t len, cap;
};

static void pass_one(void *arg, const char *name, size_t nlen,
                     const char *value, size_t vlen) {
  struct pass_acc *a = arg;
  size_t i;
  if (!passes(name, nlen) || a->len + nlen + vlen + 5 > a->cap)
    return;
  for (i = 0; i < vlen; i++)
    if (value[i] == '\r' || value[i] == '\n')
      return; /* never a header split */
  memcpy(a->out + a->len, name, nlen);
  a->len += nlen;
  memcpy(a->out + a->len, ": ", 2);
  a->len += 2;
  memcpy(a->out + a->len, value, vlen);
  a->len += vlen;
  memcpy(a->out + a->len, "\r\n", 3);
  a->len += 2;
}

static void collect_pass(struct mg_up_call *call, char out[PASS_MAX]) {
  struct pass_acc a = {out, 0, PASS_MAX};
  out[0] = '\0';
  call->ops->each_header(call, pass_one, &a);
}

/* ---- the decision record --------------------------------------------------- */

static void write_record(struct mg_exchange *ex, uint64_t total_ns) {
  static const char *const cache_names[] = {"off", "miss", "hit", "store"};
  const struct mg_dlog_cfg *dc = &ex->cfg->dlog;
  struct mg_record_weight w[MG_FLAG_MAX_VARIANTS];
  struct mg_record_attr attrs[MG_REQ_MAX_ATTRS];
  struct mg_record_attempt at[MAX_ATTEMPTS];
  struct mg_record r;
  char why[24], unit_hex[17], sb[96];
  size_t i, j;

  mg_record_init(&r);
  r.ts_ms = mg_wall_ms();
  r.id = ex->id;
  r.config = ex->cfg->hash;
  r.endpoint = ex->ep->name;
  r.alias = ex->alias ? ex->alias->name : NULL;
  r.unit_kind = "request";
  r.client = ex->client;
  r.instance = ex->w->sh->instance;
  if (ex->flag) {
    const struct mg_flag *f = ex->flag;
    r.flag = f->name;
    r.variant = f->variants[ex->fd.variant].name;
    r.reason = mg_reason_name(ex->fd.reason, ex->fd.rule, why, sizeof(why));
    r.unit_kind = mg_unit_kind_name(ex->fd.unit_kind);
    if (ex->fd.has_unit && ex->fd.unit_kind == MG_UNIT_USER)
      r.unit_source = mg_unit_source_name(ex->fd.unit_source);
    if (ex->fd.bucket != MG_NO_BUCKET)
      r.bucket = ex->fd.bucket;
    if (ex->fd.has_unit && ex->fd.unit_kind != MG_UNIT_REQUEST) {
      /* Pseudonymized unless the config asks for raw ids (input units have
       * no raw id: their digest is the unit). */
      if (dc->raw_units && ex->unit.len) {
        r.unit = ex->unit.p;
        r.unit_len = ex->unit.len;
      } else {
        static const char hx[] = "0123456789abcdef";
        uint64_t h = ex->fd.unit_hash;
        int k;
        for (k = 15; k >= 0; k--, h >>= 4) /* "%016llx", without printf */
          unit_hex[k] = hx[h & 15];
        unit_hex[16] = '\0';
        r.unit = unit_hex;
        r.unit_len = 16;
      }
    }
    if (ex->has_weights) {
      for (i = 0; i < f->nvariants; i++) {
        w[i].variant = f->variants[i].name;
        w[i].bp = ex->weights[i];
      }
      r.weights = w;
      r.nweights = f->nvariants;
    }
  } else if (ex->alias) {
    r.reason = "direct";
  } else {
    r.reason = "unrouted";
  }
  /* Only the attributes the config names; values are the request's. */
  for (i = 0; i < dc->nattrs; i++) {
    const struct mg_str *v = mg_request_attr(&ex->req, mg_str_c(dc->attrs[i]));
    if (v == NULL || r.nattrs == MG_REQ_MAX_ATTRS)
      continue;
    attrs[r.nattrs].name = dc->attrs[i];
    attrs[r.nattrs].name_len = strlen(dc->attrs[i]);
    attrs[r.nattrs].value = v->p;
    attrs[r.nattrs].value_len = v->len;
    r.nattrs++;
  }
  r.attrs = attrs;
  r.input_chars = ex->req.input.chars;
  r.input_messages = ex->req.input.messages;
  r.input_tools = ex->req.input.tools;
  r.input_stream = ex->req.input.stream;
  for (j = 0; j < (size_t)ex->nattempts; j++) {
    at[j].target = ex->attempts[j].target;
    at[j].outcome = ex->attempts[j].outcome ? ex->attempts[j].outcome : "error";
    at[j].status = ex->attempts[j].status;
    at[j].ms = ex->attempts[j].ms;
    at[j].confidence = ex->attempts[j].confidence;
    at[j].has_confidence = ex->attempts[j].has_confidence;
  }
  r.attempts = at;
  r.nattempts = (size_t)ex->nattempts;
  r.served_by = served_by(ex, sb, sizeof(sb));
  r.tier = tier_name(ex);
  r.fallback_reason = ex->plan.why ? mg_trigger_name(ex->plan.why) : NULL;
  r.confidence = ex->confidence;
  r.has_confidence = ex->has_confidence;
  r.threshold = ex->threshold;
  r.has_threshold = ex->has_threshold;
  r.cache = cache_names[ex->cache];
  r.status = ex->status;
  /* What the client saw as an error; 499 is its own disconnect. */
  r.error = (ex->status >= 400 && ex->status != 499) || ex->stream_failed;
  r.ms = total_ns / 1e6;
  /* A whole answer goes out at the end; a client that left got nothing. */
  if (ex->t_head)
    r.ttfb_ms = (ex->t_head - ex->t_start) / 1e6;
  else
    r.ttfb_ms = ex->status == 499 ? -1 : r.ms;
  r.overhead_us = total_ns > ex->up_ns ? (total_ns - ex->up_ns) / 1000 : 0;
  r.tokens_prompt = ex->usage.prompt;
  r.tokens_completion = ex->usage.completion;
  r.tokens_cached = ex->usage.cached;
  r.tokens_reasoning = ex->usage.reasoning;
  r.tokens_cache_read = ex->usage.cache_read;
  r.tokens_cache_write = ex->usage.cache_write;
  r.cost = ex->cost;
  r.has_cost = ex->has_cost;
  mg_tel_decision(ex->w->tel, &r);
}

/* ---- finishing -------------------------------------------------------------- */

/* Count the request, write its record and feed its guards: right before
 * the last bytes of its answer are written, so that whoever sees the answer
 * (and asks /metrics on another worker next) sees it counted. */
static void account(struct mg_exchange *ex, int status) {
  struct mg_worker *w = ex->w;
  const char *route = ex->alias ? ex->alias->name : "-";
  uint64_t total_ns;
  char sb[96];

  if (ex->accounted)
    return;
  ex->accounted = true;
  mg_worker_answered(w);
  if (status)
    ex->status = status;
  total_ns = uv_hrtime() - ex->t_start;
  mg_tel_observe(w->tel, route, ex->target ? ex->target->name : NULL,
                 ex->status, total_ns, ex->up_ns);
  /* Counted when a fallback tier gave the answer, not when every tier
   * failed (the metric counts answered requests). */
  if (ex->plan.why && ex->target && ex->status < 400 && !ex->stream_failed &&
      ex->served != SERVED_NONE)
    mg_tel_fallback(w->tel, ex->target->name, served_by(ex, sb, sizeof(sb)),
                    mg_trigger_name(ex->plan.why));
  /* A stream that failed after its head went out is a 200 on the wire but
   * an error to the client: counted apart. */
  if (ex->stream_failed)
    mg_tel_stream_error(w->tel, route);
  if (ex->flag) {
    const struct mg_target *st = ex->served_target;
    bool low_conf = false;
    int k;
    for (k = 0; k < ex->nattempts; k++)
      if (ex->attempts[k].outcome &&
          strcmp(ex->attempts[k].outcome, "low_confidence") == 0)
        low_conf = true;
    mg_rt_live_observe(
        ex->ws->snap->live[ex->flag->index][ex->fd.variant], w->index,
        (int64_t)now_ms(ex),
        (ex->status >= 400 && ex->status != 499) || ex->stream_failed,
        ex->plan.why != 0, low_conf, total_ns / 1e6,
        ex->has_cost ? ex->cost : NAN);
    mg_tel_variant_observe(w->tel,
                           mg_wsnap_variant(ex->ws, ex->flag, ex->fd.variant),
                           ex->status, ex->stream_failed, ex->plan.why != 0,
                           total_ns / 1e9, st ? st->name : NULL,
                           st ? st->index : 0, ex->cost,
                           ex->has_cost && st != NULL);
  }
  write_record(ex, total_ns);
  /* Guards compare randomized traffic only. An error here is the
   * variant's own target failing even when a fallback answered: hiding a
   * failing treatment behind its fallbacks is exactly what must not pass. */
  if (ex->flag && ex->fd.reason == MG_REASON_ROLLOUT &&
      ex->cfg->ramps.v[ex->flag->index].enabled) {
    const struct mg_ramp_cfg *rc = &ex->cfg->ramps.v[ex->flag->index];
    const struct mg_snap *sn = ex->ws->snap;
    int arm = ex->fd.variant == rc->variant
                  ? 0
                  : (ex->fd.variant == rc->control ? 1 : -1);
    struct mg_window_outcome o;
    int k;
    memset(&o, 0, sizeof(o));
    for (k = 0; k < ex->nattempts; k++)
      if (ex->attempts[k].outcome &&
          strcmp(ex->attempts[k].outcome, "low_confidence") == 0)
        o.low_conf = true;
    o.error = (ex->plan.why && ex->plan.why != MG_TRIG_LOW_CONF) ||
              (ex->status >= 400 && ex->status != 499) || ex->stream_failed;
    o.fallback = ex->plan.why != 0;
    o.ok = ex->status < 400 && !ex->stream_failed;
    o.latency_ms = total_ns / 1e6;
    o.cost = ex->has_cost ? ex->cost : NAN;
    mg_ramp_cells(rc, &ex->req.input, &o.chars_cell, &o.tools_cell);
    o.has_unit = ex->fd.has_unit && ex->fd.unit_kind != MG_UNIT_REQUEST;
    o.unit_hash = o.has_unit ? ex->fd.unit_hash : mg_worker_random(w);
    mg_rt_ramp_observe(sn->ramps[ex->flag->index],
                       sn->ramp_epochs[ex->flag->index],
                       sn->ramp_states[ex->flag->index].epoch, w->index, arm,
                       (int64_t)now_ms(ex), &o);
  }
  mg_debug("request %s %s -> %s %d %.3f ms", ex->id, route,
           served_by(ex, sb, sizeof(sb)) ? served_by(ex, sb, sizeof(sb))
                                         : "-",
           ex->status, total_ns / 1e6);
}

static void finish(struct mg_exchange *ex, int status) {
  struct mg_worker *w = ex->w;
  struct mg_resp *c = ex->conn;

  if (ex->finished)
    return;
  ex->finished = true;
  timer_release(ex);
  account(ex, status);
  ex->conn = NULL;
  if (c)
    mg_resp_done(c);
  mg_worker_end(w);
}

/* An error in the endpoint's shape (the route carries it to the
 * connection). */
static void respond_error(struct mg_exchange *ex, int status,
                          const char *message, const char *code,
                          const char *param) {
  set_extra(ex);
  account(ex, status);
  if (ex->conn)
    mg_resp_error(ex->conn, status, message, code, param, ex->extra);
  finish(ex, status);
}

/* Send a whole stream at once: head, events, end. */
static void send_stream(struct mg_exchange *ex, const struct mg_buf *sse) {
  mg_resp_stream_head(ex->conn, 200, "text/event-stream", ex->extra);
  if (ex->conn)
    mg_resp_stream_chunk(ex->conn, sse->data, sse->len);
  account(ex, 200);
  if (ex->conn)
    mg_resp_stream_end(ex->conn);
}

/* The client already has a 200 stream head: end it the way the family ends
 * a failed stream (chat: an error event; Responses: response.failed then
 * error; Messages: an error event). Never a fake end (DESIGN.md,
 * "Streaming"). */
static void fail_stream(struct mg_exchange *ex, const char *message,
                        const char *code) {
  char wrapped[MG_CONV_ID_MAX];
  const char *rid = NULL;
  struct mg_buf ev;
  ex->stream_failed = true;
  account(ex, 200);
  if (ex->rewrite_ids && ex->st.response_id[0] && ex->call_target &&
      mg_conv_wrap(ex->call_target->name, mg_str_c(ex->st.response_id),
                   wrapped, sizeof(wrapped)) == 0)
    rid = wrapped;
  mg_buf_init(&ev, 64u << 10);
  if (ex->ep->ops->stream_error(&ev, &ex->st, rid, message, code) == 0 &&
      ex->conn) {
    mg_resp_stream_chunk(ex->conn, ev.data, ev.len);
    if (ex->conn)
      mg_resp_stream_end(ex->conn);
  }
  mg_buf_free(&ev);
  finish(ex, 200);
}

/* A whole answer body: as it is, or replayed as the family's stream when
 * the client asked for one (a cached answer, a gated buffered stream). */
static void respond_body(struct mg_exchange *ex, int status, const char *body,
                         size_t len) {
  set_extra(ex);
  if (ex->conn && ex->req.input.stream && status == 200 &&
      ex->ep->ops->replay_sse) {
    struct mg_json_doc *doc = &ex->w->scratch;
    struct mg_buf sse;
    doc->max_tokens = answer_tokens(ex);
    mg_buf_init(&sse, (size_t)-1 / 2);
    if (mg_json_parse(doc, body, len, NULL) == 0 &&
        ex->ep->ops->replay_sse(doc, &sse) == 0) {
      send_stream(ex, &sse);
      mg_buf_free(&sse);
      finish(ex, 200);
      return;
    }
    mg_buf_free(&sse);
    /* not an answer we can replay: send it as it is */
  }
  account(ex, status);
  if (ex->conn)
    mg_resp_send(ex->conn, status, "application/json", ex->extra, body, len);
  finish(ex, status);
}

/* ---- attempts and failures ------------------------------------------------- */

static struct attempt *attempt_add(struct mg_exchange *ex, const char *name) {
  static struct attempt overflow; /* the 17th and later: not recorded */
  struct attempt *a;
  if (ex->nattempts == MAX_ATTEMPTS) {
    memset(&overflow, 0, sizeof(overflow));
    return &overflow;
  }
  a = &ex->attempts[ex->nattempts++];
  memset(a, 0, sizeof(*a));
  a->target = name;
  return a;
}

/* A transport failure: its trigger, code, status and words. */
static void judge_transport(const struct mg_exchange *ex, const char *name,
                            const struct mg_up_call *call,
                            enum mg_up_result res, struct verdict *v) {
  const struct mg_timeouts *t = &ex->call_timeouts;
  size_t n = sizeof(v->msg);
  v->status = 502;
  v->outcome = mg_up_result_name(res);
  switch (res) {
  case MG_UP_TIMEOUT_CONNECT:
    v->trigger = MG_TRIG_TIMEOUT;
    v->status = 504;
    v->code = "upstream_timeout";
    snprintf(v->msg, n, "Could not connect to the upstream of %s within %u ms.",
             name, t->connect_ms);
    break;
  case MG_UP_TIMEOUT_FIRST_BYTE:
    v->trigger = MG_TRIG_TIMEOUT;
    v->status = 504;
    v->code = "upstream_timeout";
    snprintf(v->msg, n, "The upstream of %s sent no answer within %u ms.",
             name, t->first_byte_ms);
    break;
  case MG_UP_TIMEOUT_IDLE:
    v->trigger = MG_TRIG_TIMEOUT;
    v->status = 504;
    v->code = "upstream_timeout";
    snprintf(v->msg, n, "The upstream of %s stalled for %u ms mid-answer.",
             name, t->idle_ms);
    break;
  case MG_UP_TIMEOUT_TOTAL:
    v->trigger = MG_TRIG_TIMEOUT;
    v->status = 504;
    v->code = "upstream_timeout";
    snprintf(v->msg, n, "The upstream of %s did not finish within %u ms.",
             name, t->total_ms);
    break;
  case MG_UP_CONNECT_ERROR:
    v->trigger = MG_TRIG_CONNECT;
    v->code = "upstream_unreachable";
    snprintf(v->msg, n, "Could not reach the upstream of %s: %s", name,
             call->error[0] ? call->error : "connection failed");
    break;
  case MG_UP_RESET:
    v->trigger = MG_TRIG_CONNECT;
    v->code = "upstream_reset";
    snprintf(v->msg, n,
             "The upstream of %s closed the connection without answering.",
             name);
    break;
  case MG_UP_TRUNCATED:
    v->trigger = MG_TRIG_INVALID;
    v->code = "upstream_truncated";
    snprintf(v->msg, n, "The upstream of %s sent an incomplete answer.",
             name);
    break;
  case MG_UP_TOO_BIG:
    v->trigger = MG_TRIG_INVALID;
    v->code = "upstream_too_large";
    snprintf(v->msg, n, "The answer of the upstream of %s exceeds %u bytes.",
             name, ex->cfg->limits.response_bytes);
    break;
  case MG_UP_PROTOCOL:
    v->trigger = MG_TRIG_INVALID;
    v->code = "upstream_invalid_response";
    if (call->error[0])
      snprintf(v->msg, n,
               "The upstream of %s did not answer in valid HTTP: %s.", name,
               call->error);
    else
      snprintf(v->msg, n, "The upstream of %s did not answer in HTTP.", name);
    break;
  case MG_UP_LOCAL:
    /* Our own trouble (out of descriptors): not the upstream's fault. It
     * still fails this attempt; the answer says whose it is. */
    v->trigger = MG_TRIG_CONNECT;
    v->status = 503;
    v->code = "local_resources_exhausted";
    snprintf(v->msg, n, "modelgate could not call the upstream of %s: %s",
             name, call->error[0] ? call->error : "out of resources");
    break;
  default:
    v->trigger = MG_TRIG_INVALID;
    v->code = "upstream_error";
    snprintf(v->msg, n, "The upstream of %s failed: %s", name,
             call->error[0] ? call->error : mg_up_result_name(res));
    break;
  }
}

/* The wait a 429 or 5xx asked for, in milliseconds: `retry-after-ms`, or
 * `Retry-After` in seconds or as an HTTP date. */
static uint32_t retry_after(struct mg_up_call *call) {
  char v_ms[64], v[64];
  bool has_ms = mg_up_call_header(call, "retry-after-ms", v_ms,
                                  sizeof(v_ms)) == 0;
  bool has = mg_up_call_header(call, "retry-after", v, sizeof(v)) == 0;
  return mg_retry_after_ms(has_ms ? v_ms : NULL, has ? v : NULL,
                           mg_wall_ms());
}

/* How a call to a target ended, judged once: transport failures, an
 * upstream's 429/5xx (its JSON kept to pass on), the client's own 4xx, a
 * status no answer may have, or an answer to read. */
static void judge(struct mg_exchange *ex, struct mg_up_call *call,
                  enum mg_up_result res, struct verdict *v) {
  const char *name = ex->call_target->name;
  memset(v, 0, sizeof(*v));
  if (res != MG_UP_OK) {
    judge_transport(ex, name, call, res, v);
    return;
  }
  if (call->status == 429 || call->status >= 500) {
    struct mg_json_doc *doc = &ex->w->scratch;
    v->trigger = call->status == 429 ? MG_TRIG_429 : MG_TRIG_5XX;
    v->retry_after_ms = retry_after(call);
    v->outcome = call->status == 429 ? "429" : "5xx";
    v->status = (int)call->status;
    v->code = "upstream_error";
    snprintf(v->msg, sizeof(v->msg), "The upstream of %s answered HTTP %ld.",
             name, call->status);
    doc->max_tokens = answer_tokens(ex);
    /* The upstream's own JSON error is passed on if nothing else answers;
     * a non-JSON one becomes a 502 of ours. */
    if (call->body.len &&
        mg_json_parse(doc, call->body.data, call->body.len, NULL) == 0 &&
        doc->toks[0].type == MG_JSON_OBJECT) {
      v->keep_body = true;
    } else {
      v->status = 502;
      snprintf(v->msg, sizeof(v->msg),
               "The upstream of %s answered HTTP %ld with a body that is not "
               "JSON.",
               name, call->status);
    }
    return;
  }
  if (call->status >= 400) {
    v->client_error = true;
    v->outcome = "client_error";
    return;
  }
  if (call->status < 200 || call->status >= 300) {
    v->trigger = MG_TRIG_INVALID;
    v->outcome = "invalid";
    v->status = 502;
    v->code = "upstream_invalid_response";
    snprintf(v->msg, sizeof(v->msg), "The upstream of %s answered HTTP %ld.",
             name, call->status);
    return;
  }
  v->outcome = "ok";
}

static void set_failure(struct mg_exchange *ex, int status, const char *code,
                        const char *msg) {
  ex->fail_pass[0] = '\0';
  if (ex->call_target)
    ex->fail_target = ex->call_target;
  ex->fail_status = status;
  ex->fail_code = code;
  snprintf(ex->fail_msg, sizeof(ex->fail_msg), "%s", msg);
  mg_buf_reset(&ex->fail_body);
}

/* Nothing more to try: answer with the last failure, naming the target
 * that gave it. */
static void answer_failure(struct mg_exchange *ex) {
  if (ex->served == SERVED_NONE && ex->fail_target)
    serve_target(ex, ex->fail_target);
  if (ex->plan.last == MG_TRIG_BREAKER && ex->fail_status == 0) {
    char msg[256];
    snprintf(msg, sizeof(msg),
             "The upstream of %s is failing (circuit breaker open) and no "
             "fallback could answer.",
             ex->target->name);
    respond_error(ex, 503, msg, "upstream_unavailable", NULL);
    return;
  }
  if (ex->fail_body.len) {
    /* The upstream's own error (5xx, 429), passed on as it is, with its
     * Retry-After, retry-after-ms and request id. */
    memcpy(ex->pass, ex->fail_pass, sizeof(ex->pass));
    respond_body(ex, ex->fail_status, ex->fail_body.data, ex->fail_body.len);
    return;
  }
  if (ex->fail_status == 0)
    set_failure(ex, 502, "upstream_error", "No fallback could answer.");
  /* Nothing replaced an unsure answer: the client is told how unsure. */
  if (ex->fail_code && strcmp(ex->fail_code, "low_confidence") == 0 &&
      ex->has_rejected) {
    ex->confidence = ex->rejected_confidence;
    ex->has_confidence = true;
  }
  respond_error(ex, ex->fail_status, ex->fail_msg, ex->fail_code, NULL);
}

/* ---- the cache ------------------------------------------------------------- */

static bool chain_has_cache(const struct mg_policy *p) {
  uint32_t i;
  for (i = 0; i < p->nchain; i++)
    if (p->chain[i].kind == MG_TIER_CACHE)
      return true;
  return false;
}

/* Serve from the cache; false on a miss. */
static bool answer_from_cache(struct mg_exchange *ex) {
  struct mg_buf copy;
  if (!ex->has_ckey)
    return false;
  /* The shared cache copies the entry out: the copy is ours while the
   * answer is written (a stream replay reuses the scratch tokens). */
  mg_buf_init(&copy, (size_t)-1 / 2);
  if (!mg_rt_cache_get(ex->w->sh->rt, &ex->ckey, (int64_t)now_ms(ex),
                       &copy)) {
    mg_buf_free(&copy);
    ex->cache = CACHE_MISS;
    return false;
  }
  ex->cache = CACHE_HIT;
  serve(ex, SERVED_CACHE, NULL);
  attempt_add(ex, "cache")->outcome = "hit";
  respond_body(ex, 200, copy.data, copy.len);
  mg_buf_free(&copy);
  return true;
}

static void cache_store(struct mg_exchange *ex, const char *body, size_t len) {
  if (!ex->has_ckey)
    return;
  if (mg_rt_cache_put(ex->w->sh->rt, &ex->ckey, (int64_t)now_ms(ex), body,
                      len) == 0)
    ex->cache = ex->cache == CACHE_HIT ? CACHE_HIT : CACHE_STORE;
}

/* ---- answers modelgate makes ----------------------------------------------- */

/* A traditional answer (text, or a static_json document), in the
 * endpoint's shape, whole or as its stream. */
static void answer_made(struct mg_exchange *ex, const char *model,
                        const char *text, size_t len) {
  const struct mg_endpoint_ops *ops = ex->ep->ops;
  char id[MG_CONV_ID_MAX];
  struct mg_answer_meta m;
  struct mg_buf out;
  int rc;

  if (ex->ep->conversation_ids)
    mg_conv_local_id(ex->id, id, sizeof(id));
  else if (ex->ep->family == MG_API_ANTHROPIC)
    snprintf(id, sizeof(id), "msg_mg_%s", ex->id);
  else
    snprintf(id, sizeof(id), "mg-%s", ex->id);
  m.id = id;
  m.created = mg_wall_ms() / 1000;
  m.model = model;
  mg_buf_init(&out, (size_t)-1 / 2);
  set_extra(ex);
  rc = ex->req.input.stream ? ops->wrap_text_sse(&out, &m, text, len)
                            : ops->wrap_text(&out, &m, text, len);
  if (rc != 0) {
    mg_buf_free(&out);
    respond_error(ex, 500, "Out of memory.", "internal_error", NULL);
    return;
  }
  if (ex->conn && ex->req.input.stream) {
    send_stream(ex, &out);
  } else {
    account(ex, 200);
    if (ex->conn)
      mg_resp_send(ex->conn, 200, "application/json", ex->extra, out.data,
                   out.len);
  }
  mg_buf_free(&out);
  finish(ex, 200);
}

/* ---- upstream streams ------------------------------------------------------- */

/* Learn from one complete event and relay it (its ids rewritten where the
 * endpoint wraps them). false when the client is gone. */
static bool relay_event(struct mg_exchange *ex, const char *p, size_t n,
                        const struct mg_sse_event *ev) {
  if (ev) {
    ex->ep->ops->stream_event(&ex->st, ev, &ex->w->scratch);
    if (ex->rewrite_ids && ev->data.len) {
      struct mg_json_doc *doc = &ex->w->scratch;
      struct mg_buf out;
      int rc;
      doc->max_tokens = answer_tokens(ex);
      if (mg_json_parse(doc, ev->data.p, ev->data.len, NULL) == 0) {
        mg_buf_init(&out, SSE_EVENT_MAX * 2);
        rc = mg_conv_rewrite_event(doc, ex->call_target->name, &out);
        if (rc == 1) {
          /* The event's data replaced; its other lines are kept. */
          struct mg_buf whole;
          size_t pre = (size_t)(ev->data.p - p);
          size_t post = n - pre - ev->data.len;
          mg_buf_init(&whole, SSE_EVENT_MAX * 3);
          if (mg_buf_append(&whole, p, pre) == 0 &&
              mg_buf_append(&whole, out.data, out.len) == 0 &&
              mg_buf_append(&whole, ev->data.p + ev->data.len, post) == 0 &&
              ex->conn)
            mg_resp_stream_chunk(ex->conn, whole.data, whole.len);
          mg_buf_free(&whole);
          mg_buf_free(&out);
          return ex->conn != NULL;
        }
        mg_buf_free(&out);
      }
    }
  }
  if (ex->conn)
    mg_resp_stream_chunk(ex->conn, p, n);
  return ex->conn != NULL;
}

/* One line of a whole event ("event: x", "data: {...}"). */
static void sse_field(struct mg_sse_event *ev, const char *line, size_t n) {
  if (n >= 5 && memcmp(line, "data:", 5) == 0) {
    size_t k = 5 + (n > 5 && line[5] == ' ');
    /* The families send one data line an event: the first is kept. */
    if (ev->data.p == NULL) {
      ev->data.p = line + k;
      ev->data.len = n - k;
    }
  } else if (n >= 6 && memcmp(line, "event:", 6) == 0) {
    size_t k = 6 + (n > 6 && line[6] == ' ');
    ev->event.p = line + k;
    ev->event.len = n - k;
  }
}

/* The fields of the whole event in s->ev. */
static bool sse_parse(const struct sse *s, struct mg_sse_event *ev) {
  const char *p = s->ev.data, *e = p + s->ev.len;
  memset(ev, 0, sizeof(*ev));
  while (p < e) {
    const char *nl = memchr(p, '\n', (size_t)(e - p));
    size_t len = nl ? (size_t)(nl - p) : (size_t)(e - p);
    if (len && p[len - 1] == '\r')
      len--;
    if (len)
      sse_field(ev, p, len);
    p = nl ? nl + 1 : e;
  }
  return ev->data.p != NULL || ev->event.p != NULL;
}

/* Does the event buffer end with a blank line (the end of an event)? */
static bool sse_ends_event(const struct mg_buf *b) {
  const char *d = b->data;
  size_t n = b->len;
  if (n >= 2 && d[n - 1] == '\n' && d[n - 2] == '\n')
    return true;
  if (n >= 3 && d[n - 1] == '\n' && d[n - 2] == '\r' && d[n - 3] == '\n')
    return true;
  /* A lone blank line. */
  return (n == 1 && d[0] == '\n') || (n == 2 && d[0] == '\r' && d[1] == '\n');
}

/* Past SSE_EVENT_MAX: what was gathered and seg go out as they are, and
 * the rest of the event after them, unparsed. false when the client is
 * gone. */
static bool sse_oversize(struct mg_exchange *ex, const char *seg, size_t n,
                         bool ends_line) {
  struct sse *s = &ex->sse;
  bool ok = relay_event(ex, s->ev.data, s->ev.len, NULL) &&
            relay_event(ex, seg, n, NULL);
  mg_buf_reset(&s->ev);
  s->oversize = true;
  s->at_line_start = ends_line;
  return ok;
}

/* Take bytes of an upstream stream: gather them into events, relay each
 * event once it is whole. false when the client is gone. */
static bool relay_bytes(struct mg_exchange *ex, const char *p, size_t n) {
  struct sse *s = &ex->sse;
  size_t i, from = 0;
  for (i = 0; i < n; i++) {
    size_t seg;
    if (p[i] != '\n')
      continue;
    seg = i + 1 - from;
    if (s->oversize) {
      bool blank = s->at_line_start &&
                   (i == from || (i == from + 1 && p[from] == '\r'));
      if (!relay_event(ex, p + from, seg, NULL))
        return false;
      if (blank)
        s->oversize = false; /* the big event ended: parse again */
      s->at_line_start = true;
      from = i + 1;
      continue;
    }
    if (mg_buf_append(&s->ev, p + from, seg) != 0) {
      if (!sse_oversize(ex, p + from, seg, true))
        return false;
      from = i + 1;
      continue;
    }
    from = i + 1;
    if (sse_ends_event(&s->ev)) {
      struct mg_sse_event ev;
      bool ok = relay_event(ex, s->ev.data, s->ev.len,
                            sse_parse(s, &ev) ? &ev : NULL);
      mg_buf_reset(&s->ev);
      if (!ok)
        return false;
    }
  }
  if (from < n) {
    if (s->oversize) {
      if (!relay_event(ex, p + from, n - from, NULL))
        return false;
      s->at_line_start = false;
    } else if (mg_buf_append(&s->ev, p + from, n - from) != 0 &&
               !sse_oversize(ex, p + from, n - from, false)) {
      return false;
    }
  }
  return true;
}

static size_t on_data(struct mg_up_call *call, const char *p, size_t n) {
  struct mg_exchange *ex = call->owner;
  size_t taken = 0;

  if (ex->conn == NULL)
    return 0;
  hold(ex);
  ex->in_data = true;
  if (!ex->stream_started) {
    ex->stream_started = true;
    ex->status = 200;
    ex->t_head = uv_hrtime();
    /* The head goes out now: the target streaming is the one serving. */
    if (ex->call_target)
      serve_target(ex, ex->call_target);
    collect_pass(call, ex->pass);
    set_extra(ex);
    mg_resp_stream_head(ex->conn, 200,
                        call->content_type[0] ? call->content_type
                                              : "text/event-stream",
                        ex->extra);
  } else if (mg_resp_congested(ex->conn)) {
    /* Keep the bytes in the engine; the connection tells us when it
     * drained. */
    ex->in_data = false;
    release(ex);
    return MG_UP_PAUSE;
  }
  if (ex->conn && relay_bytes(ex, p, n))
    taken = n;
  ex->in_data = false;
  release(ex);
  return taken;
}

static void on_target_done(struct mg_up_call *call, enum mg_up_result res);
static void on_trad_done(struct mg_up_call *call, enum mg_up_result res);
static const struct mg_up_call_cbs target_cbs = {on_data, on_target_done};
static const struct mg_up_call_cbs trad_cbs = {on_data, on_trad_done};

/* A complete 2xx answer from a target: 0 and the body to serve (logprobs
 * modelgate asked for stripped, conversation ids wrapped) in out, or a
 * trigger. Also reads usage, cost and confidence. */
static uint32_t read_answer(struct mg_exchange *ex, struct mg_up_call *call,
                            struct mg_buf *out, struct attempt *a) {
  const struct mg_target *t = ex->call_target;
  const struct mg_policy *pol = mg_policy_of(&ex->cfg->fallbacks, t);
  const struct mg_gate_cfg *g = &pol->gate;
  const struct mg_endpoint_ops *ops = ex->ep->ops;
  struct mg_json_doc *doc = &ex->w->scratch;
  struct mg_buf tmp;
  double conf;
  int rc;

  doc->max_tokens = answer_tokens(ex);
  if (call->body.len == 0 ||
      mg_json_parse(doc, call->body.data, call->body.len, NULL) != 0 ||
      doc->toks[0].type != MG_JSON_OBJECT) {
    char msg[256];
    snprintf(msg, sizeof(msg),
             "The upstream of %s answered HTTP %ld with a body that is not a "
             "JSON object.",
             t->name, call->status);
    set_failure(ex, 502, "upstream_invalid_response", msg);
    a->outcome = "invalid";
    return MG_TRIG_INVALID;
  }
  if (g->enabled && ex->ep->gated) {
    char hv[64];
    const char *header = NULL;
    /* The threshold in force: the config's, or the admin's (issue 15.6). */
    const double min = ex->ws->snap->min_conf[t->index];
    ex->threshold = min;
    ex->has_threshold = true;
    if (g->source == MG_CONF_HEADER &&
        mg_up_call_header(call, g->header, hv, sizeof(hv)) == 0)
      header = hv;
    rc = mg_api_confidence(ex->ep, g, doc, header, &conf);
    if (rc == 0) {
      a->confidence = conf;
      a->has_confidence = true;
      ex->confidence = conf;
      ex->has_confidence = true;
    }
    if ((rc == 0 && conf < min) || (rc != 0 && g->missing_fails)) {
      char msg[256];
      if (rc == 0)
        snprintf(msg, sizeof(msg),
                 "The answer of %s had confidence %.4f, below %.4f.", t->name,
                 conf, min);
      else
        snprintf(msg, sizeof(msg),
                 "The answer of %s carried no confidence signal.", t->name);
      set_failure(ex, 422, "low_confidence", msg);
      a->outcome = "low_confidence";
      return MG_TRIG_LOW_CONF;
    }
  }
  /* Usage and cost of the answer that will be served: read before the
   * body is rewritten (the scratch still holds it). */
  mg_usage_init(&ex->usage);
  if (ops->usage)
    ops->usage(doc, &ex->usage);
  ex->has_cost = mg_price_cost(&t->price, &ex->usage, &ex->cost) == 0;
  /* The client sees ids that name the target holding the conversation.
   * The scratch still holds the upstream's body: rewritten from it as it
   * is, scanned again only when the logprobs we asked for were cut out. */
  mg_buf_init(&tmp, (size_t)-1 / 2);
  if (ex->call_asked_logprobs && ops->strip_logprobs) {
    rc = ops->strip_logprobs(doc, &tmp);
    if (rc == 0 && ex->ep->conversation_ids)
      rc = mg_json_parse(doc, tmp.data, tmp.len, NULL) != 0
               ? -EINVAL
               : mg_conv_rewrite_response(doc, t->name, out);
    else if (rc == 0)
      rc = mg_buf_append(out, tmp.data, tmp.len);
  } else if (ex->ep->conversation_ids) {
    rc = mg_conv_rewrite_response(doc, t->name, out);
  } else {
    rc = mg_buf_append(out, call->body.data, call->body.len);
  }
  mg_buf_free(&tmp);
  if (rc != 0) {
    set_failure(ex, 500, "internal_error", "Out of memory.");
    a->outcome = "error";
    return MG_TRIG_INVALID;
  }
  a->outcome = "ok";
  return 0;
}

/* The stream's usage and cost, once it ended. */
static void stream_usage(struct mg_exchange *ex, const struct mg_target *t) {
  ex->usage = ex->st.usage;
  ex->has_cost = mg_price_cost(&t->price, &ex->usage, &ex->cost) == 0;
}

static void on_target_done(struct mg_up_call *call, enum mg_up_result res) {
  struct mg_exchange *ex = call->owner;
  const struct mg_target *t = ex->call_target;
  const struct mg_policy *pol = mg_policy_of(&ex->cfg->fallbacks, t);
  struct attempt *a;
  struct mg_outcome o = {0, 0, false};
  struct verdict v;
  struct mg_buf answer;

  hold(ex);
  ex->call = NULL;
  ex->up_ns += call->t_end - call->t_start;
  mg_buf_init(&answer, (size_t)-1 / 2);
  a = attempt_add(ex, t->name);
  a->ms = (uint32_t)((call->t_end - call->t_start) / 1000000);
  a->status = (int)call->status;

  if (ex->conn == NULL || res == MG_UP_ABORTED) {
    a->outcome = "client_gone";
    mg_plan_abandon(&ex->plan);
    finish(ex, 499);
    goto out;
  }
  judge(ex, call, res, &v);
  if (res == MG_UP_LOCAL) {
    /* Out of descriptors (or memory) here: the upstream is not to blame,
     * its breaker learns nothing, and operators hear of it at once
     * (issue 10, point 3). */
    static _Thread_local uint64_t last_warn;
    uint64_t now = uv_now(ex->w->loop);
    o.local = true;
    mg_tel_local_error(ex->w->tel, t->name);
    if (last_warn == 0 || now - last_warn >= 1000) {
      last_warn = now;
      mg_warn("request %s: cannot call target %s: %s (a local shortage, "
              "not the upstream's fault)",
              ex->id, t->name, call->error[0] ? call->error : "no resources");
    }
  }
  if (ex->stream_started) {
    /* Bytes reached the client: no fallback is possible any more. The
     * stream's own end event says whether it completed: a transport that
     * ended cleanly without it (responses, messages) did not. */
    bool whole = res == MG_UP_OK &&
                 (ex->st.done || ex->ep->family == MG_API_OPENAI) &&
                 !(ex->rewrite_ids && !ex->st.done) && !ex->st.failed;
    stream_usage(ex, t);
    if (whole) {
      double conf;
      a->outcome = "ok";
      if (ex->st.want_logprobs &&
          mg_gate_acc_confidence(&ex->st.acc, pol->gate.source, &conf) == 0) {
        a->confidence = ex->confidence = conf;
        a->has_confidence = ex->has_confidence = true;
      }
      mg_plan_end(&ex->plan, &o, (int64_t)now_ms(ex));
      account(ex, 200);
      mg_resp_stream_end(ex->conn);
      finish(ex, 200);
    } else if (res == MG_UP_OK && ex->st.failed) {
      /* The upstream ended its stream with its own failure event, which
       * the client already has: nothing to add but the end. */
      a->outcome = "stream_failed";
      o.trigger = MG_TRIG_5XX;
      mg_plan_end(&ex->plan, &o, (int64_t)now_ms(ex));
      ex->stream_failed = true;
      account(ex, 200);
      mg_resp_stream_end(ex->conn);
      finish(ex, 200);
    } else {
      if (res == MG_UP_OK) {
        v.trigger = MG_TRIG_INVALID;
        v.outcome = "truncated";
        v.code = "upstream_truncated";
        snprintf(v.msg, sizeof(v.msg),
                 "The stream of the upstream of %s ended before its end "
                 "event.",
                 t->name);
      }
      a->outcome = v.outcome;
      o.trigger = v.trigger;
      mg_plan_end(&ex->plan, &o, (int64_t)now_ms(ex));
      fail_stream(ex, v.msg, v.code);
    }
    goto breaker;
  }

  if (v.client_error) {
    /* The client's own request was refused: returned as it is, never
     * masked by a fallback (DESIGN.md). The upstream itself is fine. */
    struct mg_json_doc *doc = &ex->w->scratch;
    a->outcome = v.outcome;
    mg_plan_end(&ex->plan, &o, (int64_t)now_ms(ex));
    serve_target(ex, t);
    doc->max_tokens = answer_tokens(ex);
    if (call->body.len &&
        mg_json_parse(doc, call->body.data, call->body.len, NULL) == 0) {
      collect_pass(call, ex->pass);
      respond_body(ex, (int)call->status, call->body.data, call->body.len);
    } else {
      char msg[256];
      snprintf(msg, sizeof(msg),
               "The upstream of %s answered HTTP %ld with a body that is not "
               "JSON.",
               t->name, call->status);
      respond_error(ex, 502, msg, "upstream_error", NULL);
    }
    goto breaker;
  }
  if (v.trigger) {
    a->outcome = v.outcome;
    o.trigger = v.trigger;
    o.retry_after_ms = v.retry_after_ms;
    mg_debug("request %s: %s", ex->id, v.msg);
    set_failure(ex, v.status, v.code, v.msg);
    if (v.keep_body) {
      if (mg_buf_append(&ex->fail_body, call->body.data, call->body.len))
        mg_buf_reset(&ex->fail_body);
      /* SDKs wait as long as the upstream asks before they retry, and log
       * its request id. */
      collect_pass(call, ex->fail_pass);
    }
  } else {
    o.trigger = read_answer(ex, call, &answer, a);
    if (o.trigger == MG_TRIG_LOW_CONF && pol->gate.abstain) {
      /* Abstain: say the model is unsure rather than try another. */
      mg_plan_end(&ex->plan, &o, (int64_t)now_ms(ex));
      serve_target(ex, t);
      respond_error(ex, 422, ex->fail_msg, "low_confidence", NULL);
      goto breaker;
    }
    if (o.trigger == MG_TRIG_LOW_CONF) {
      /* Another tier will answer: the header and the record describe the
       * answer served, not this one (the attempt keeps its value). */
      ex->rejected_confidence = ex->confidence;
      ex->has_rejected = ex->has_confidence;
      ex->has_confidence = false;
      ex->has_threshold = false;
    }
    if (o.trigger) {
      /* What this attempt used is not what the client is charged for. */
      mg_usage_init(&ex->usage);
      ex->has_cost = false;
    }
  }

  mg_plan_result(&ex->plan, &o, (int64_t)now_ms(ex), mg_worker_random(ex->w),
                 &ex->step);
  if (ex->step.kind == MG_STEP_DONE) {
    serve_target(ex, t);
    cache_store(ex, answer.data, answer.len);
    collect_pass(call, ex->pass);
    respond_body(ex, (int)call->status, answer.data, answer.len);
  } else {
    run(ex);
  }
breaker:
  report_breaker(ex);
out:
  mg_buf_free(&answer);
  mg_up_call_release(call);
  release(ex);
}

static void on_trad_done(struct mg_up_call *call, enum mg_up_result res) {
  struct mg_exchange *ex = call->owner;
  const struct mg_traditional *t = ex->call_trad;
  struct mg_buf tmp;
  const char *text = NULL;
  size_t len = 0;
  struct attempt *a;
  char name[96];

  hold(ex);
  ex->call = NULL;
  ex->up_ns += call->t_end - call->t_start;
  snprintf(name, sizeof(name), "traditional:%s", t->name);
  a = attempt_add(ex, t->name);
  a->ms = (uint32_t)((call->t_end - call->t_start) / 1000000);
  a->status = (int)call->status;
  mg_buf_init(&tmp, (size_t)-1 / 2);
  if (ex->conn == NULL || res == MG_UP_ABORTED) {
    a->outcome = "client_gone";
    finish(ex, 499);
  } else if (res == MG_UP_OK && call->status >= 200 && call->status < 300 &&
             mg_answer_text(call->body.data ? call->body.data : "",
                            call->body.len, t->field, &ex->w->scratch, &tmp,
                            &text, &len) == 0) {
    a->outcome = "ok";
    serve(ex, SERVED_TRADITIONAL, t->name);
    answer_made(ex, name, text, len);
  } else {
    struct verdict v;
    memset(&v, 0, sizeof(v));
    if (res == MG_UP_OK) {
      v.trigger = MG_TRIG_INVALID;
      v.outcome = "invalid";
    } else {
      judge_transport(ex, t->name, call, res, &v);
    }
    a->outcome = v.outcome;
    mg_plan_skip(&ex->plan, v.trigger, (int64_t)now_ms(ex), &ex->step);
    run(ex);
  }
  mg_buf_free(&tmp);
  mg_up_call_release(call);
  release(ex);
}

/* ---- calls ------------------------------------------------------------------ */

/* The upstream request body for target t: the client's body with `model`
 * replaced, `stream` turned off when a stream is to be gated whole, the
 * upstream id of a previous response, and logprobs asked for when the gate
 * needs them and the client did not. */
static int upstream_body(struct mg_exchange *ex, const struct mg_target *t,
                         char **out, size_t *len) {
  const struct mg_gate_cfg *g = &mg_policy_of(&ex->cfg->fallbacks, t)->gate;
  const struct mg_endpoint_ops *ops = ex->ep->ops;
  struct mg_json_doc *doc = &ex->w->scratch;
  struct mg_buf b, tmp;
  uint32_t m, s;
  int rc;

  ex->call_buffered = ex->req.input.stream && g->enabled && g->buffer_streams &&
                      ex->ep->gated;
  /* A stream relayed as it comes cannot have logprobs taken out again: in
   * that mode the gate records only what the client asked for. */
  ex->call_asked_logprobs = mg_gate_needs_logprobs(g) && !ex->req.logprobs &&
                            ex->ep->gated && ops->ask_logprobs &&
                            (!ex->req.input.stream || ex->call_buffered);
  ex->st.want_logprobs = ex->req.input.stream && !ex->call_buffered &&
                         g->enabled && ex->ep->gated &&
                         mg_gate_needs_logprobs(g);
  /* The first call reuses the tokens start read; later ones (retries,
   * fallbacks) scan the body again, as the scratch served others since. */
  if (!ex->doc_fresh) {
    doc->max_tokens = ex->cfg->limits.json_tokens;
    if (mg_json_parse(doc, ex->body.data, ex->body.len, NULL) != 0)
      return -EINVAL; /* parsed fine at start; cannot happen */
  }
  ex->doc_fresh = false;
  mg_buf_init(&b, (size_t)-1 / 2);
  mg_buf_init(&tmp, (size_t)-1 / 2);
  /* Splices, from the end of the body to its start so that earlier
   * offsets stay valid: stream, then model. */
  m = mg_json_getc(doc, 0, "model");
  s = ex->call_buffered ? mg_json_getc(doc, 0, "stream") : MG_JSON_NOTFOUND;
  rc = mg_buf_reserve(&b, ex->body.len + strlen(t->model) * 6 + 16);
  if (rc == 0 && s != MG_JSON_NOTFOUND &&
      doc->toks[s].start > doc->toks[m].start) {
    rc = mg_buf_append(&b, ex->body.data, doc->toks[m].start);
    if (rc == 0)
      rc = mg_buf_json_str(&b, t->model, strlen(t->model));
    if (rc == 0)
      rc = mg_buf_append(&b, ex->body.data + doc->toks[m].end,
                         doc->toks[s].start - doc->toks[m].end);
    if (rc == 0)
      rc = mg_buf_puts(&b, "false");
    if (rc == 0)
      rc = mg_buf_append(&b, ex->body.data + doc->toks[s].end,
                         ex->body.len - doc->toks[s].end);
  } else if (rc == 0 && s != MG_JSON_NOTFOUND) {
    rc = mg_buf_append(&b, ex->body.data, doc->toks[s].start);
    if (rc == 0)
      rc = mg_buf_puts(&b, "false");
    if (rc == 0)
      rc = mg_buf_append(&b, ex->body.data + doc->toks[s].end,
                         doc->toks[m].start - doc->toks[s].end);
    if (rc == 0)
      rc = mg_buf_json_str(&b, t->model, strlen(t->model));
    if (rc == 0)
      rc = mg_buf_append(&b, ex->body.data + doc->toks[m].end,
                         ex->body.len - doc->toks[m].end);
  } else if (rc == 0) {
    rc = mg_buf_append(&b, ex->body.data, doc->toks[m].start);
    if (rc == 0)
      rc = mg_buf_json_str(&b, t->model, strlen(t->model));
    if (rc == 0)
      rc = mg_buf_append(&b, ex->body.data + doc->toks[m].end,
                         ex->body.len - doc->toks[m].end);
  }
  /* The upstream knows its own id of the previous response, not ours. */
  if (rc == 0 && ex->pinned) {
    uint32_t prev;
    if (mg_json_parse(doc, b.data, b.len, NULL) != 0 ||
        (prev = mg_json_getc(doc, 0, "previous_response_id")) ==
            MG_JSON_NOTFOUND ||
        mg_conv_unwrap_request(doc, prev, ex->prev_up, &tmp) != 0) {
      rc = -EINVAL;
    } else {
      mg_buf_free(&b);
      b = tmp;
      mg_buf_init(&tmp, (size_t)-1 / 2);
    }
  }
  if (rc == 0 && ex->call_asked_logprobs) {
    /* One more pass for the logprobs member: rare (gated targets only). */
    if (mg_json_parse(doc, b.data, b.len, NULL) != 0 ||
        ops->ask_logprobs(doc, &tmp) != 0) {
      rc = -ENOMEM;
    } else {
      mg_buf_free(&b);
      b = tmp;
      mg_buf_init(&tmp, 0);
    }
  }
  mg_buf_free(&tmp);
  if (rc) {
    mg_buf_free(&b);
    return rc;
  }
  *out = mg_buf_steal(&b, len);
  return 0;
}

static uint32_t min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }

/* The request's own header lines: the decision id when the config sends it
 * upstream; for Anthropic targets the API version (the client's, else the
 * target's) and the client's beta features. */
static size_t call_extra(struct mg_exchange *ex, const struct mg_target *t,
                         char *out, size_t n) {
  struct mg_http_req *rq = ex->conn ? mg_resp_req(ex->conn) : NULL;
  size_t len = 0;
  int l;
  if (ex->cfg->upstream.send_decision_id) {
    l = snprintf(out, n, "x-modelgate-decision: %s\r\n", ex->id);
    if (l > 0 && (size_t)l < n)
      len = (size_t)l;
  }
  if (t && t->api == MG_API_ANTHROPIC) {
    struct mg_str v;
    const char *ver = t->anthropic_version;
    int vl = ver ? (int)strlen(ver) : 0;
    if (rq && mg_http_req_header(rq, "anthropic-version", &v) && v.len &&
        v.len < 64) {
      ver = v.p;
      vl = (int)v.len;
    }
    if (ver) {
      l = snprintf(out + len, n - len, "anthropic-version: %.*s\r\n", vl, ver);
      if (l > 0 && (size_t)l < n - len)
        len += (size_t)l;
    }
    if (rq && mg_http_req_header(rq, "anthropic-beta", &v) && v.len &&
        v.len < 512 && memchr(v.p, '\r', v.len) == NULL) {
      l = snprintf(out + len, n - len, "anthropic-beta: %.*s\r\n", (int)v.len,
                   v.p);
      if (l > 0 && (size_t)l < n - len)
        len += (size_t)l;
    }
  }
  return len;
}

static struct mg_up_call *start_call(struct mg_exchange *ex,
                                     const struct mg_up_dest_ref *d,
                                     const struct mg_target *t,
                                     struct mg_up_request *ur,
                                     const struct mg_up_call_cbs *cbs) {
  char extra[1024];
  if (ur->method == NULL)
    ur->method = "POST";
  ur->extra_len = call_extra(ex, t, extra, sizeof(extra));
  ur->extra_headers = ur->extra_len ? extra : NULL;
  ur->max_response = ex->cfg->limits.response_bytes;
  ex->t_call = uv_hrtime();
  ex->call_timeouts = ur->timeouts;
  ur->dest = d->dest;
  return d->engine->ops->start(d->engine, ur, cbs, ex);
}

static void start_target_call(struct mg_exchange *ex,
                              const struct mg_target *t, uint32_t budget) {
  const struct mg_up_views *views = mg_wsnap_views(ex->ws);
  struct mg_up_request ur;
  char *body = NULL;
  size_t len = 0;

  memset(&ur, 0, sizeof(ur));
  ex->call_target = t;
  ex->call_trad = NULL;
  mg_stream_state_init(&ex->st);
  mg_buf_reset(&ex->sse.ev);
  ex->sse.oversize = false;
  ex->rewrite_ids = ex->ep->conversation_ids;
  if (views == NULL || upstream_body(ex, t, &body, &len) != 0) {
    respond_error(ex, 500, "Out of memory.", "internal_error", NULL);
    return;
  }
  ur.body = body;
  ur.body_len = len;
  /* Each attempt gets what is left of the request's deadline, at most. */
  ur.timeouts.connect_ms = min_u32(t->timeouts.connect_ms, budget);
  ur.timeouts.first_byte_ms = min_u32(t->timeouts.first_byte_ms, budget);
  ur.timeouts.idle_ms = t->timeouts.idle_ms;
  ur.timeouts.total_ms = min_u32(t->timeouts.total_ms, budget);
  ur.stream = ex->req.input.stream && !ex->call_buffered;
  ex->call = start_call(ex, mg_up_views_target(views, t, ex->ep->id), t, &ur,
                        &target_cbs);
  if (ex->call == NULL) {
    struct mg_outcome o = {MG_TRIG_CONNECT, 0, false};
    set_failure(ex, 503, "upstream_unavailable",
                "Could not start the upstream request.");
    mg_plan_result(&ex->plan, &o, (int64_t)now_ms(ex), 0, &ex->step);
    run(ex);
  }
}

static void start_trad_call(struct mg_exchange *ex,
                            const struct mg_traditional *t, uint32_t budget) {
  const struct mg_up_views *views = mg_wsnap_views(ex->ws);
  const struct mg_up_dest_ref *d = views ? mg_up_views_trad(views, t) : NULL;
  struct mg_up_request ur;
  char *body;

  memset(&ur, 0, sizeof(ur));
  ex->call_target = NULL;
  ex->call_trad = t;
  /* The traditional service receives the client's original request. */
  body = malloc(ex->body.len + 1);
  if (d == NULL || body == NULL) {
    free(body);
    mg_plan_skip(&ex->plan, MG_TRIG_INVALID, (int64_t)now_ms(ex), &ex->step);
    run(ex);
    return;
  }
  memcpy(body, ex->body.data ? ex->body.data : "", ex->body.len);
  ur.body = body;
  ur.body_len = ex->body.len;
  ur.timeouts.connect_ms = min_u32(t->timeout_ms, budget);
  ur.timeouts.first_byte_ms = min_u32(t->timeout_ms, budget);
  ur.timeouts.idle_ms = t->timeout_ms;
  ur.timeouts.total_ms = min_u32(t->timeout_ms, budget);
  ur.stream = false;
  ex->call = start_call(ex, d, NULL, &ur, &trad_cbs);
  if (ex->call == NULL) {
    mg_plan_skip(&ex->plan, MG_TRIG_CONNECT, (int64_t)now_ms(ex), &ex->step);
    run(ex);
  }
}

/* ---- waiting ---------------------------------------------------------------- */

static void on_wait_closed(uv_handle_t *h) { free(h->data); }

static void timer_release(struct mg_exchange *ex) {
  struct wait_timer *w = ex->timer;
  if (w == NULL)
    return;
  ex->timer = NULL;
  w->ex = NULL;
  w->t.data = w;
  uv_close((uv_handle_t *)&w->t, on_wait_closed);
}

static void on_wait(uv_timer_t *t) {
  struct wait_timer *w = t->data;
  struct mg_exchange *ex = w->ex;
  if (ex == NULL || ex->finished)
    return;
  hold(ex);
  timer_release(ex);
  mg_plan_resume(&ex->plan, (int64_t)now_ms(ex), &ex->step);
  run(ex);
  release(ex);
}

static void wait_then_retry(struct mg_exchange *ex, uint32_t ms) {
  struct wait_timer *w = calloc(1, sizeof(*w));
  if (w == NULL) {
    mg_plan_resume(&ex->plan, (int64_t)now_ms(ex), &ex->step);
    run(ex);
    return;
  }
  w->ex = ex;
  uv_timer_init(ex->w->loop, &w->t);
  w->t.data = w;
  ex->timer = w;
  mg_tel_retry(ex->w->tel, ex->plan.current->name);
  uv_timer_start(&w->t, on_wait, ms, 0);
}

/* ---- the plan's steps ------------------------------------------------------ */

/* Report a breaker state change the plan noted, once. */
static void report_breaker(struct mg_exchange *ex) {
  if (ex->plan.breaker_target == NULL)
    return;
  mg_rt_breaker_changed(ex->w->sh->rt, ex->plan.breaker_target->name,
                        ex->plan.breaker_state);
  ex->plan.breaker_target = NULL;
}

/* A tier the plan passed over for the request's contract or endpoint
 * (response_format, tool_choice, n, logprobs): on record as an attempt. */
static void on_skip(void *arg, const struct mg_plan_skipped *s) {
  struct mg_exchange *ex = arg;
  static const char *const names[] = {
      "skipped:response_format", "skipped:tool_choice", "skipped:n",
      "skipped:logprobs", "skipped:endpoint"};
  static const char *const reasons[] = {"response_format", "tool_choice", "n",
                                        "logprobs", "endpoint"};
  const char *who;
  size_t i;
  if (!s->contract)
    return;
  who = s->kind == MG_TIER_TARGET
            ? s->target->name
            : (s->kind == MG_TIER_CACHE ? "cache" : s->trad->name);
  for (i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
    if (strcmp(s->reason, reasons[i]) == 0) {
      attempt_add(ex, who)->outcome = names[i];
      return;
    }
  attempt_add(ex, who)->outcome = "skipped";
}

static void run(struct mg_exchange *ex) {
  for (;;) {
    report_breaker(ex);
    if (ex->finished)
      return;
    switch (ex->step.kind) {
    case MG_STEP_CALL:
      start_target_call(ex, ex->step.target, ex->step.budget_ms);
      return;
    case MG_STEP_WAIT:
      wait_then_retry(ex, ex->step.wait_ms);
      return;
    case MG_STEP_CACHE:
      if (answer_from_cache(ex))
        return;
      mg_plan_skip(&ex->plan, 0, (int64_t)now_ms(ex), &ex->step);
      continue;
    case MG_STEP_TRADITIONAL:
      if (ex->step.text) {
        char name[96];
        snprintf(name, sizeof(name), "traditional:%s", ex->step.trad->name);
        serve(ex, SERVED_TRADITIONAL, ex->step.trad->name);
        attempt_add(ex, ex->step.trad->name)->outcome = "ok";
        answer_made(ex, name, ex->step.text, strlen(ex->step.text));
        return;
      }
      start_trad_call(ex, ex->step.trad, ex->step.budget_ms);
      return;
    case MG_STEP_FAIL:
      answer_failure(ex);
      return;
    case MG_STEP_DONE:
      return;
    }
  }
}

/* ---- start ------------------------------------------------------------------ */

/* Copy the headers routing reads (unit and attributes) so that they outlive
 * the connection's buffers. */
static void copy_headers(struct mg_exchange *ex, const struct mg_http_req *rq) {
  static const char attr_prefix[] = "x-modelgate-attr-";
  const size_t plen = sizeof(attr_prefix) - 1;
  size_t need = 0;
  uint32_t i;

  for (i = 0; i < rq->nhdrs; i++) {
    struct mg_str name = {rq->head.data + rq->hdrs[i].name_off,
                          rq->hdrs[i].name_len};
    if (mg_str_has_prefix_nocase(name, "x-modelgate-"))
      need += rq->hdrs[i].name_len + rq->hdrs[i].value_len;
  }
  mg_buf_init(&ex->hdrcopy, need + 1);
  /* One reservation up front: slices into hdrcopy stay valid. */
  if (need == 0 || mg_buf_reserve(&ex->hdrcopy, need) != 0)
    return;
  for (i = 0; i < rq->nhdrs; i++) {
    struct mg_str name = {rq->head.data + rq->hdrs[i].name_off,
                          rq->hdrs[i].name_len};
    struct mg_str value = {rq->head.data + rq->hdrs[i].value_off,
                           rq->hdrs[i].value_len};
    const char *v;
    if (mg_str_eq_nocase(name, MG_STR_LIT("x-modelgate-unit"))) {
      v = ex->hdrcopy.data + ex->hdrcopy.len;
      if (mg_buf_append(&ex->hdrcopy, value.p, value.len) == 0)
        ex->req.unit_header = (struct mg_str){v, value.len};
    } else if (name.len > plen && mg_str_has_prefix_nocase(name, attr_prefix)) {
      char *n = ex->hdrcopy.data + ex->hdrcopy.len;
      size_t nl = name.len - plen;
      if (mg_buf_append(&ex->hdrcopy, name.p + plen, nl) != 0)
        continue;
      v = ex->hdrcopy.data + ex->hdrcopy.len;
      if (mg_buf_append(&ex->hdrcopy, value.p, value.len) == 0)
        mg_request_add_attr(&ex->req, (struct mg_str){n, nl},
                            (struct mg_str){v, value.len});
    }
  }
}

static const char *request_error_code(enum mg_request_code c) {
  switch (c) {
  case MG_REQ_INVALID_JSON:
  case MG_REQ_NOT_OBJECT:
    return "invalid_json";
  case MG_REQ_MISSING_MODEL:
    return "missing_model";
  case MG_REQ_DUPLICATE_KEY:
    return "duplicate_key";
  case MG_REQ_TOO_COMPLEX:
    return "body_too_complex";
  default:
    return "invalid_request";
  }
}

/* With `clients` configured, only a known key gets through; its client's
 * name is the attribute `client` (it wins over any header or metadata) and
 * goes on record. false when the request was answered with a 401. */
static bool authenticate(struct mg_exchange *ex, const struct mg_http_req *rq) {
  const char *name;
  if (!mg_auth_client(ex->cfg, rq, &name)) {
    respond_error(ex, 401, mg_auth_message(rq), "invalid_api_key", NULL);
    return false;
  }
  ex->client = name;
  if (name)
    mg_request_set_client(&ex->req, mg_str_c(name));
  return true;
}

/* The reason slot of a flag decision in the worker's series table: the
 * fixed reasons, then one per rule. */
static uint32_t reason_slot(const struct mg_flag_decision *d) {
  return d->reason == MG_REASON_RULE ? (uint32_t)(MG_REASON_DEFAULT + 1) +
                                           (uint32_t)d->rule
                                     : (uint32_t)d->reason;
}

/* A previous response names the target holding the conversation. It is
 * sent there while that target may serve the flag; when it may not (killed,
 * rolled back), to the flag's current choice only if that shares the
 * stored state; otherwise a clear error (DESIGN.md, "Conversations stay
 * where their state is"). false when answered. */
static bool pin_conversation(struct mg_exchange *ex, int64_t now) {
  const struct mg_target *pinned;
  char msg[400];
  int rc;
  if (!ex->ep->conversation_ids || ex->req.previous_response_id.len == 0)
    return true;
  rc = mg_conv_unwrap(ex->req.previous_response_id, &ex->cfg->targets,
                      &pinned, &ex->prev_up);
  if (rc == -EPERM) {
    /* An answer modelgate made itself: no upstream holds its state. */
    snprintf(msg, sizeof(msg),
             "Previous response with id '%.*s' was answered by a fallback "
             "without stored state; the conversation cannot continue from "
             "it.",
             (int)(ex->req.previous_response_id.len > 200
                       ? 200
                       : ex->req.previous_response_id.len),
             ex->req.previous_response_id.p);
    respond_error(ex, 400, msg, "conversation_unavailable",
                  "previous_response_id");
    return false;
  }
  if (rc != 0) {
    snprintf(msg, sizeof(msg), "Previous response with id '%.*s' not found.",
             (int)(ex->req.previous_response_id.len > 200
                       ? 200
                       : ex->req.previous_response_id.len),
             ex->req.previous_response_id.p);
    respond_error(ex, 404, msg, "previous_response_not_found",
                  "previous_response_id");
    return false;
  }
  switch (mg_conv_pin(ex->alias,
                      ex->flag ? &ex->ws->snap->flag_states[ex->flag->index]
                               : NULL,
                      now, pinned, ex->target)) {
  case MG_PIN_STAY:
    ex->target = pinned;
    break;
  case MG_PIN_MOVE:
    break; /* the flag's choice holds the same state */
  case MG_PIN_UNAVAILABLE:
    snprintf(msg, sizeof(msg),
             "The conversation of previous response '%.*s' is held by a model "
             "version that no longer serves %s, and the version serving it "
             "now does not share its state.",
             (int)(ex->req.previous_response_id.len > 200
                       ? 200
                       : ex->req.previous_response_id.len),
             ex->req.previous_response_id.p, ex->alias->name);
    respond_error(ex, 400, msg, "conversation_unavailable",
                  "previous_response_id");
    return false;
  }
  ex->pinned = pinned;
  return true;
}

/* Write the decision's flag variant, randomization and input cells into
 * its id, so that feedback naming the id can reach the variant's live and
 * guard windows on any worker or instance (decisions/dtag.h). */
static void tag_decision(struct mg_exchange *ex) {
  const struct mg_flag *f = ex->flag;
  const struct mg_ramp_cfg *rc = &ex->cfg->ramps.v[f->index];
  struct mg_dtag tag;
  memset(&tag, 0, sizeof(tag));
  tag.hash = mg_dtag_hash(f->name, f->variants[ex->fd.variant].name);
  tag.rollout = ex->fd.reason == MG_REASON_ROLLOUT;
  if (rc->enabled) {
    uint8_t cc, tc;
    mg_ramp_cells(rc, &ex->req.input, &cc, &tc);
    tag.chars = cc != MG_CELL_NONE ? (uint8_t)(cc - MG_CELL_CHARS0 + 1) : 0;
    tag.tools = tc != MG_CELL_NONE ? (uint8_t)(tc - MG_CELL_TOOLS0 + 1) : 0;
  }
  mg_dtag_set(ex->id, &tag);
}

static void on_gone(void *arg);
static void on_drained(void *arg);
static void on_abort(void *arg);
static const struct mg_resp_hooks resp_hooks = {on_gone, on_drained,
                                                on_abort};

/* Everything but the answer: both handlers start so. */
static struct mg_exchange *exchange_new(struct mg_worker *w, struct mg_resp *c,
                                        const struct mg_endpoint *ep) {
  struct mg_http_req *rq = mg_resp_req(c);
  struct mg_exchange *ex = malloc(sizeof(*ex));
  if (ex == NULL) {
    mg_resp_error(c, 503, "Out of memory.", "internal_error", NULL, NULL);
    mg_resp_done(c);
    return NULL;
  }
  memset(ex, 0, offsetof(struct mg_exchange, query));
  ex->query[0] = ex->fail_msg[0] = ex->fail_pass[0] = '\0';
  ex->pass[0] = ex->extra[0] = '\0';
  ex->w = w;
  ex->conn = c;
  ex->ws = mg_worker_snap(w);
  ex->cfg = ex->ws->snap->cfg;
  ex->ep = ep;
  ex->t_start = uv_hrtime();
  ex->body = rq->body;
  mg_buf_init(&rq->body, ex->body.max);
  mg_buf_init(&ex->fail_body, ex->cfg->limits.response_bytes);
  mg_buf_init(&ex->sse.ev, SSE_EVENT_MAX);
  mg_request_init(&ex->req, ep->id);
  mg_usage_init(&ex->usage);
  mg_stream_state_init(&ex->st);
  mg_worker_new_id(w, ex->id);
  mg_resp_attach(c, &resp_hooks, ex);
  mg_worker_begin(w);
  hold(ex);
  return ex;
}

void mg_exchange_handle(void *owner, struct mg_resp *c,
                        const struct mg_route *route) {
  struct mg_worker *w = owner;
  struct mg_http_req *rq = mg_resp_req(c);
  struct mg_exchange *ex = exchange_new(w, c, route->arg);
  struct mg_request_error err;
  struct mg_plan_opts po;
  const struct mg_policy *pol;
  const struct mg_snap *snap;
  int64_t now;

  if (ex == NULL)
    return;
  snap = ex->ws->snap;
  if (!authenticate(ex, rq))
    goto out;
  copy_headers(ex, rq);

  w->scratch.max_tokens = ex->cfg->limits.json_tokens;
  if (mg_request_parse(&ex->req, ex->body.data ? ex->body.data : "",
                       ex->body.len, &w->scratch, &err) != 0) {
    respond_error(ex, err.code == MG_REQ_NOMEM ? 503 : 400, err.message,
                  request_error_code(err.code), err.param);
    goto out;
  }
  ex->alias = mg_route_lookup(&ex->cfg->routes, ex->req.model);
  if (ex->alias == NULL) {
    char msg[300];
    snprintf(msg, sizeof(msg), "The model `%.*s` does not exist.",
             (int)(ex->req.model.len > 200 ? 200 : ex->req.model.len),
             ex->req.model.p);
    respond_error(ex, 404, msg, "model_not_found", "model");
    goto out;
  }
  if (!mg_api_alias_serves(ex->alias, ex->ep)) {
    /* A model of another API family: never sent to it (DESIGN.md). */
    struct mg_buf b;
    int status = 404;
    mg_buf_init(&b, 64u << 10);
    if (mg_api_wrong_family_error(ex->ep, ex->alias, ex->req.model, &b,
                                  &status) == 0) {
      set_extra(ex);
      account(ex, status);
      if (ex->conn)
        mg_resp_send(ex->conn, status, "application/json", ex->extra, b.data,
                     b.len);
      finish(ex, status);
    } else {
      respond_error(ex, 404, "This model does not serve this API.",
                    "model_not_found", "model");
    }
    mg_buf_free(&b);
    goto out;
  }
  now = 0;
  if (ex->alias->flag) {
    const struct mg_flag *f = ex->alias->flag;
    /* The wall clock is read only for flags with a time window. */
    now = (f->start_ms != INT64_MIN || f->end_ms != INT64_MAX) ? mg_wall_ms()
                                                               : 0;
    ex->flag = f;
    mg_flag_eval(f, &snap->flag_states[f->index], &ex->req, now,
                 mg_worker_random(w), &ex->fd);
    tag_decision(ex);
    /* The raw unit id, for records that log it raw. */
    if (ex->fd.has_unit && ex->fd.unit_kind == MG_UNIT_USER) {
      mg_request_unit(&ex->req, &ex->unit);
    } else if (ex->fd.has_unit && ex->fd.unit_kind == MG_UNIT_ATTR) {
      const struct mg_str *v = mg_request_attr(
          &ex->req, (struct mg_str){f->unit_attr, f->unit_attr_len});
      if (v)
        ex->unit = *v;
    }
    /* The weights in force now, for the log: they may change later. */
    if (snap->flag_states[f->index].has_weights) {
      memcpy(ex->weights, snap->flag_states[f->index].weights,
             sizeof(ex->weights));
      ex->has_weights = true;
    }
    ex->target = f->variants[ex->fd.variant].target;
    {
      char why[24];
      mg_wsnap_count_flag(
          ex->ws, f, ex->fd.variant, reason_slot(&ex->fd),
          (uint32_t)MG_REASON_DEFAULT + 1 + f->nrules,
          mg_reason_name(ex->fd.reason, ex->fd.rule, why, sizeof(why)));
    }
  } else {
    ex->target = ex->alias->target;
  }
  if (!pin_conversation(ex, now ? now : mg_wall_ms()))
    goto out;

  /* The cache key is read now, while the request's tokens are at hand; a
   * conversation's turn depends on state the key cannot see. */
  pol = mg_policy_of(&ex->cfg->fallbacks, ex->target);
  if (ex->cfg->fallbacks.cache.enabled && ex->ep->cacheable &&
      ex->pinned == NULL &&
      (ex->cfg->fallbacks.cache.serve_hits || chain_has_cache(pol)) &&
      mg_cache_key(ex->alias->name, &w->scratch, &ex->ckey) == 0)
    ex->has_ckey = true;
  if (ex->has_ckey && ex->cfg->fallbacks.cache.serve_hits &&
      answer_from_cache(ex))
    goto out;

  memset(&po, 0, sizeof(po));
  po.needs = ex->req.needs;
  po.no_cache = !ex->ep->cacheable || ex->pinned != NULL;
  po.no_traditional = !ex->ep->traditional;
  po.on_skip = on_skip;
  po.arg = ex;
  /* A variant whose chain is exhausted falls back to the control's target
   * (fallback_to_control), charged to the variant in the record. */
  if (ex->flag && ex->flag->fallback_to_control &&
      ex->fd.variant != ex->flag->off_variant && ex->pinned == NULL)
    po.control = ex->flag->variants[ex->flag->off_variant].target;
  mg_plan_begin(&ex->plan, &ex->cfg->fallbacks, ex->target, &po,
                snap->breakers, (int64_t)now_ms(ex), &ex->step);
  ex->doc_fresh = true;
  run(ex);
out:
  release(ex);
}

/* ---- stored responses (GET and DELETE /v1/responses/{id}) ------------------ */

static void on_pinned_done(struct mg_up_call *call, enum mg_up_result res) {
  struct mg_exchange *ex = call->owner;
  const struct mg_target *t = ex->call_target;
  struct attempt *a;
  struct verdict v;

  hold(ex);
  ex->call = NULL;
  ex->up_ns += call->t_end - call->t_start;
  a = attempt_add(ex, t->name);
  a->ms = (uint32_t)((call->t_end - call->t_start) / 1000000);
  a->status = (int)call->status;
  serve_target(ex, t);
  if (ex->conn == NULL || res == MG_UP_ABORTED) {
    a->outcome = "client_gone";
    finish(ex, 499);
  } else if (res != MG_UP_OK) {
    memset(&v, 0, sizeof(v));
    judge_transport(ex, t->name, call, res, &v);
    a->outcome = v.outcome;
    respond_error(ex, v.status, v.msg, v.code, NULL);
  } else {
    struct mg_json_doc *doc = &ex->w->scratch;
    struct mg_buf out;
    a->outcome = call->status < 400 ? "ok" : "client_error";
    doc->max_tokens = answer_tokens(ex);
    mg_buf_init(&out, (size_t)-1 / 2);
    collect_pass(call, ex->pass);
    /* The response object of GET and DELETE carries its id: the client
     * sees ours. input_items holds item ids only. */
    if (call->status < 300 && ex->ep->conversation_ids && call->body.len &&
        mg_json_parse(doc, call->body.data, call->body.len, NULL) == 0 &&
        mg_conv_rewrite_response(doc, t->name, &out) == 0)
      respond_body(ex, (int)call->status, out.data, out.len);
    else
      respond_body(ex, (int)call->status, call->body.data, call->body.len);
    mg_buf_free(&out);
  }
  mg_up_call_release(call);
  release(ex);
}

static size_t on_pinned_data(struct mg_up_call *call, const char *p,
                             size_t n) {
  (void)call;
  (void)p;
  return n; /* never a stream */
}

static const struct mg_up_call_cbs pinned_cbs = {on_pinned_data,
                                                 on_pinned_done};

void mg_exchange_pinned(void *owner, struct mg_resp *c,
                        const struct mg_route *route) {
  struct mg_worker *w = owner;
  struct mg_http_req *rq = mg_resp_req(c);
  struct mg_exchange *ex = exchange_new(w, c, route->arg);
  struct mg_str path, id, up;
  const struct mg_target *t;
  const struct mg_up_views *views;
  struct mg_up_request ur;
  struct mg_buf extra;
  const char *q;
  int rc;

  if (ex == NULL)
    return;
  if (!authenticate(ex, rq))
    goto out;
  path = mg_http_req_path(rq);
  /* The query (input_items' order, limit, after) goes upstream as it is. */
  q = memchr(rq->head.data, '?', rq->url_len);
  if (q) {
    size_t ql = rq->url_len - (size_t)(q - rq->head.data);
    if (ql < sizeof(ex->query) && memchr(q, '#', ql) == NULL) {
      memcpy(ex->query, q, ql);
      ex->query[ql] = '\0';
    }
  }
  if (mg_endpoint_pinned_id(ex->ep, path.p, path.len, &id) != 0 ||
      (rc = mg_conv_unwrap(id, &ex->cfg->targets, &t, &up)) != 0) {
    char msg[320];
    snprintf(msg, sizeof(msg), "No response found with id '%.*s'.",
             (int)(id.len > 200 ? 200 : id.len), id.p ? id.p : "");
    respond_error(ex, 404, msg, "not_found", NULL);
    goto out;
  }
  /* A stored response is read where it was made, whatever the flags say
   * now: a killed version's conversations stay readable. */
  ex->target = t;
  ex->call_target = t;
  views = mg_wsnap_views(ex->ws);
  mg_buf_init(&extra, 4096);
  if (views == NULL || mg_endpoint_pinned_path(ex->ep, up, &extra) != 0 ||
      mg_buf_puts(&extra, ex->query) != 0) {
    mg_buf_free(&extra);
    respond_error(ex, 500, "Out of memory.", "internal_error", NULL);
    goto out;
  }
  memset(&ur, 0, sizeof(ur));
  ur.method = ex->ep->method == MG_HTTP_DELETE ? "DELETE" : "GET";
  ur.path_extra = extra.data;
  ur.timeouts = t->timeouts;
  ur.stream = false;
  ex->call = start_call(ex, mg_up_views_target(views, t, ex->ep->id), t, &ur,
                        &pinned_cbs);
  mg_buf_free(&extra);
  if (ex->call == NULL)
    respond_error(ex, 503, "Could not start the upstream request.",
                  "upstream_unavailable", NULL);
out:
  release(ex);
}

/* ---- the connection's hooks ------------------------------------------------- */

static void on_gone(void *arg) {
  struct mg_exchange *ex = arg;
  if (ex->finished)
    return;
  ex->conn = NULL;
  /* Inside the engine's data callback we may not touch the call: on_data
   * sees the missing connection and aborts it instead. */
  if (ex->in_data)
    return;
  hold(ex);
  if (ex->call) {
    struct mg_up_call *call = ex->call;
    uint64_t spent = uv_hrtime() - call->t_start;
    struct attempt *a = attempt_add(
        ex, ex->call_target ? ex->call_target->name
                            : (ex->call_trad ? ex->call_trad->name : "-"));
    ex->call = NULL;
    ex->up_ns += spent;
    a->outcome = "client_gone";
    a->ms = (uint32_t)(spent / 1000000);
    mg_up_call_cancel(call);
    mg_plan_abandon(&ex->plan);
  }
  finish(ex, 499);
  release(ex);
}

static void on_drained(void *arg) {
  struct mg_exchange *ex = arg;
  if (ex->finished || ex->call == NULL)
    return;
  hold(ex);
  mg_up_call_resume(ex->call);
  release(ex);
}

static void on_abort(void *arg) {
  struct mg_exchange *ex = arg;
  if (ex->finished)
    return;
  hold(ex);
  if (ex->call) {
    struct mg_up_call *call = ex->call;
    ex->call = NULL;
    ex->up_ns += uv_hrtime() - call->t_start;
    mg_up_call_cancel(call);
    mg_plan_abandon(&ex->plan);
  }
  if (ex->stream_started)
    fail_stream(ex, "modelgate is shutting down.", "shutting_down");
  else
    respond_error(ex, 503, "modelgate is shutting down.", "shutting_down",
                  NULL);
  release(ex);
}
