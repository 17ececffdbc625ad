/* exchange.c - one proxied request.
 *
 *   start: body -> features -> alias -> flag -> variant -> first target;
 *          the answer cache first when it serves hits; then the plan
 *   run:   carry out the plan's steps (fallbacks/plan.c): call a target,
 *          wait and retry, try the cache, a traditional path, or fail
 *   call:  splice the upstream model (and a logprobs request for the gate)
 *          into the body, start an upstream call
 *   on_data (streams): relay each piece as a chunk, pausing the upstream
 *          while the client's write queue is over the high watermark
 *   on_done: classify the outcome (gate included); answer, or hand the
 *          outcome to the plan and run its next step
 *   finish: metrics, release everything, let the connection go on
 *
 * Re-entrancy: writing to the client can fail and close the connection,
 * which calls our `gone` hook while we are still inside one of our own
 * functions. Every entry point holds the exchange; finishing only
 * marks it, and the last release frees it (Redis' freeClientAsync idea). */
#include "handlers/exchange.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/log.h"
#include "common/hash.h"
#include "common/time.h"
#include "config/config.h"
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

struct mg_exchange {
  struct mg_worker *w;          /* borrowed: the worker we run on */
  struct mg_resp *conn;         /* borrowed; NULL once the client is gone */
  struct mg_wsnap *ws;          /* owned reference: the snapshot we began
                                 * on, as this worker holds it */
  const struct mg_config *cfg;  /* ws->snap->cfg */
  enum mg_endpoint ep;
  struct mg_buf body;           /* owned: the client's request body */
  struct mg_buf hdrcopy;        /* owned: header values routing uses */
  struct mg_request req;        /* slices into body and hdrcopy; its doc is
                                 * the worker's scratch, valid in start only */
  const struct mg_alias *alias; /* borrowed from cfg */
  const struct mg_flag *flag;   /* borrowed from cfg, or NULL */
  struct mg_flag_decision fd;   /* the flag's decision, when flag is set */
  uint32_t weights[MG_FLAG_MAX_VARIANTS]; /* in force at the decision */
  bool has_weights;
  const struct mg_target *target; /* borrowed: the variant's target */
  struct mg_plan plan;
  struct mg_step step;
  struct mg_up_call *call;      /* the call in flight, or NULL */
  const struct mg_target *call_target;      /* ...to this target, or */
  const struct mg_traditional *call_trad;   /* ...to this traditional path */
  bool call_asked_logprobs;     /* we added logprobs: strip them again */
  bool call_buffered;           /* a stream asked for whole, to gate it */
  struct wait_timer *timer;     /* owned until closed; NULL when none */
  struct mg_cache_key ckey;
  bool has_ckey;
  enum cache_state cache;
  char id[33];
  const char *client;           /* borrowed from cfg: the authenticated
                                 * client, or NULL */
  char served_by[96];           /* target, "cache" or "traditional:<name>" */
  uint64_t t_start;             /* uv_hrtime() when the request was read */
  uint64_t t_call;              /* uv_hrtime() when the current call began */
  struct mg_timeouts call_timeouts; /* in force for the current call */
  uint64_t up_ns;               /* time spent waiting for upstreams */
  uint64_t t_head;              /* uv_hrtime() when a stream head went out */
  int64_t tokens_prompt;        /* from the answer's usage, or -1 */
  int64_t tokens_completion;
  double threshold;             /* the serving target's gate, when on */
  bool has_threshold;
  int status;                   /* status sent to the client */
  double confidence;            /* of the answer served, when known */
  bool has_confidence;
  double rejected_confidence;   /* of the last answer below the gate */
  bool has_rejected;
  /* The last failure, to answer with when nothing else can. */
  const char *fail_tier;        /* borrowed: who failed ("" for none) */
  int fail_status;
  const char *fail_code;        /* static */
  char fail_msg[320];
  struct mg_buf fail_body;      /* owned: an upstream's own JSON error */
  char fail_pass[PASS_MAX];     /* ...and its pass-through headers */
  /* Response headers of the upstream answer served that clients rely on
   * (DESIGN.md, "The APIs"): "name: value\r\n" lines, or "". */
  char pass[PASS_MAX];
  struct attempt attempts[MAX_ATTEMPTS];
  int nattempts;
  struct mg_gate_acc acc;       /* logprobs of a stream passing through */
  struct mg_buf sse_line;       /* owned: a partial SSE line */
  bool stream_gate;             /* record confidence from the stream */
  int holds;                    /* entry points active on the stack */
  bool finished;
  bool accounted;               /* counted and recorded (account()) */
  bool in_data;                 /* inside on_data (curl's write callback) */
  bool stream_started;          /* the head of a stream was sent */
  bool stream_failed;           /* a stream ended with an error event */
  bool doc_fresh;               /* the scratch tokens are still this
                                 * request's (from start to the first call) */
  char extra[EXTRA_MAX];        /* x-modelgate-* header lines */
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
  mg_buf_free(&ex->sse_line);
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
  char why[24], conf[32];
  size_t len = 0;
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
  if (ex->served_by[0])
    extra_add(ex, &len, "x-modelgate-served-by", ex->served_by);
  if (ex->plan.why)
    extra_add(ex, &len, "x-modelgate-fallback", mg_trigger_name(ex->plan.why));
  if (ex->has_confidence) {
    snprintf(conf, sizeof(conf), "%.4f", ex->confidence);
    extra_add(ex, &len, "x-modelgate-confidence", conf);
  }
  {
    size_t pl = strlen(ex->pass);
    if (pl && len + pl < sizeof(ex->extra)) {
      memcpy(ex->extra + len, ex->pass, pl + 1);
      len += pl;
    }
  }
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

static void served_by(struct mg_exchange *ex, const char *prefix,
                      const char *name) {
  snprintf(ex->served_by, sizeof(ex->served_by), "%s%s", prefix, name);
}

/* ---- the decision record --------------------------------------------------- */

static const char *tier_of(const struct mg_exchange *ex) {
  if (ex->cache == CACHE_HIT)
    return "cache";
  if (strncmp(ex->served_by, "traditional:", 12) == 0)
    return "traditional";
  if (ex->served_by[0] == '\0' || ex->status >= 400)
    return "none";
  return mg_plan_fell_back(&ex->plan) ? "fallback" : "primary";
}

static void write_record(struct mg_exchange *ex, uint64_t total_ns) {
  static const char *const cache_names[] = {"off", "miss", "hit", "store"};
  const struct mg_dlog_cfg *dc = &ex->cfg->dlog;
  struct mg_record_weight w[MG_FLAG_MAX_VARIANTS];
  struct mg_record_attr attrs[MG_REQ_MAX_ATTRS];
  struct mg_record_attempt at[MAX_ATTEMPTS];
  struct mg_record r;
  char why[24], unit_hex[17];
  struct mg_str raw = MG_STR_NULL;
  size_t i, j;

  if (false)
    return;
  memset(&r, 0, sizeof(r));
  r.ts_ms = mg_wall_ms();
  r.id = ex->id;
  r.config = ex->cfg->hash;
  r.endpoint = mg_endpoint_name(ex->ep);
  r.alias = ex->alias ? ex->alias->name : NULL;
  r.bucket = -1;
  r.unit_kind = "request";
  if (ex->flag) {
    const struct mg_flag *f = ex->flag;
    r.flag = f->name;
    r.variant = f->variants[ex->fd.variant].name;
    r.reason = mg_reason_name(ex->fd.reason, ex->fd.rule, why, sizeof(why));
    r.unit_kind = mg_unit_kind_name(ex->fd.unit_kind);
    if (ex->fd.bucket != MG_NO_BUCKET)
      r.bucket = ex->fd.bucket;
    if (ex->fd.unit_kind == MG_UNIT_USER)
      raw = ex->req.user.len ? ex->req.user : ex->req.unit_header;
    else if (ex->fd.unit_kind == MG_UNIT_ATTR) {
      const struct mg_str *v = mg_request_attr(
          &ex->req, (struct mg_str){f->unit_attr, f->unit_attr_len});
      if (v)
        raw = *v;
    }
    if (ex->fd.unit_kind != MG_UNIT_REQUEST) {
      /* Pseudonymized unless the config asks for raw ids (input units have
       * no raw id: their digest is the unit). */
      if (dc->raw_units && raw.len) {
        r.unit = raw.p;
        r.unit_len = raw.len;
      } else {
        snprintf(unit_hex, sizeof(unit_hex), "%016llx",
                 (unsigned long long)ex->fd.unit_hash);
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
  r.served_by = ex->served_by[0] ? ex->served_by : NULL;
  r.tier = tier_of(ex);
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
  r.tokens_prompt = ex->tokens_prompt;
  r.tokens_completion = ex->tokens_completion;
  mg_tel_decision(ex->w->tel, &r);
}

/* ---- finishing -------------------------------------------------------------- */

/* Count the request, write its record and feed its guards: right before
 * the last bytes of its answer are written, so that whoever sees the answer
 * (and asks /metrics on another worker next) sees it counted. */
static void account(struct mg_exchange *ex, int status) {
  struct mg_worker *w = ex->w;
  uint64_t total_ns;

  if (ex->accounted)
    return;
  ex->accounted = true;
  if (status)
    ex->status = status;
  total_ns = uv_hrtime() - ex->t_start;
  mg_tel_observe(w->tel, ex->alias ? ex->alias->name : "-",
                     ex->target ? ex->target->name : NULL, ex->status,
                     total_ns, ex->up_ns);
  /* Counted when a fallback tier gave the answer, not when every tier
   * failed (the metric counts answered requests). */
  if (ex->plan.why && ex->target && ex->status < 400 && !ex->stream_failed &&
      ex->served_by[0])
    mg_tel_fallback(w->tel, ex->target->name, ex->served_by,
                                mg_trigger_name(ex->plan.why));
  /* A stream that failed after its head went out is a 200 on the wire but
   * an error to the client: counted apart. */
  if (ex->stream_failed)
    mg_tel_stream_error(w->tel, ex->alias ? ex->alias->name : "-");
  write_record(ex, total_ns);
  /* Guards compare randomized traffic only. An error here is the
   * variant's own target failing even when a fallback answered: hiding a
   * failing treatment behind its fallbacks is exactly what must not pass. */
  if (ex->flag && ex->fd.reason == MG_REASON_ROLLOUT &&
      ex->cfg->ramps.v[ex->flag->index].enabled) {
    bool low_conf = false;
    int k;
    for (k = 0; k < ex->nattempts; k++)
      if (ex->attempts[k].outcome &&
          strcmp(ex->attempts[k].outcome, "low_confidence") == 0)
        low_conf = true;
    const struct mg_ramp_cfg *rc = &ex->cfg->ramps.v[ex->flag->index];
    int arm = ex->fd.variant == rc->variant
                  ? 0
                  : (ex->fd.variant == rc->control ? 1 : -1);
    mg_rt_ramp_observe(
        ex->ws->snap->ramps[ex->flag->index],
        ex->ws->snap->ramp_epochs[ex->flag->index], w->index, arm,
        (int64_t)now_ms(ex),
        (ex->plan.why && ex->plan.why != MG_TRIG_LOW_CONF) ||
            (ex->status >= 400 && ex->status != 499) || ex->stream_failed,
        ex->plan.why != 0, low_conf, total_ns / 1e6);
  }
  mg_debug("request %s %s -> %s %d %.3f ms", ex->id,
           ex->alias ? ex->alias->name : "-",
           ex->served_by[0] ? ex->served_by : "-", ex->status, total_ns / 1e6);
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

static void respond_error(struct mg_exchange *ex, int status,
                          const char *message, const char *code,
                          const char *param) {
  set_extra(ex);
  account(ex, status);
  if (ex->conn)
    mg_resp_error(ex->conn, status, message, code, param, ex->extra);
  finish(ex, status);
}

/* The client already has a 200 stream head: end it with an OpenAI-style
 * error event. Never a fake [DONE] (DESIGN.md, "Streaming"). */
static void fail_stream(struct mg_exchange *ex, const char *message,
                        const char *code) {
  struct mg_buf ev;
  ex->stream_failed = true;
  account(ex, 200);
  mg_buf_init(&ev, 64u << 10);
  if (mg_buf_puts(&ev, "data: ") == 0 &&
      mg_http_error_json(&ev, message, "server_error", NULL, code) == 0 &&
      mg_buf_puts(&ev, "\n\n") == 0 && ex->conn) {
    mg_resp_stream_chunk(ex->conn, ev.data, ev.len);
    if (ex->conn)
      mg_resp_stream_end(ex->conn);
  }
  mg_buf_free(&ev);
  ex->stream_failed = true;
  finish(ex, 200);
}

/* A whole answer body: JSON as it is, or replayed as a stream when the
 * client asked for one (a cached answer, a gated buffered stream). */
static void respond_body(struct mg_exchange *ex, int status, const char *body,
                         size_t len) {
  set_extra(ex);
  if (ex->conn && ex->req.input.stream && status == 200) {
    struct mg_json_doc *doc = &ex->w->scratch;
    struct mg_buf sse;
    doc->max_tokens = answer_tokens(ex);
    mg_buf_init(&sse, (size_t)-1 / 2);
    if (mg_json_parse(doc, body, len, NULL) == 0 &&
        mg_answer_replay_sse(doc, &sse) == 0) {
      mg_resp_stream_head(ex->conn, 200, "text/event-stream", ex->extra);
      if (ex->conn)
        mg_resp_stream_chunk(ex->conn, sse.data, sse.len);
      account(ex, 200);
      if (ex->conn)
        mg_resp_stream_end(ex->conn);
      mg_buf_free(&sse);
      finish(ex, 200);
      return;
    }
    mg_buf_free(&sse);
    /* not a completion we can replay: send it as it is */
  }
  account(ex, status);
  if (ex->conn)
    mg_resp_send(ex->conn, status, "application/json", ex->extra, body,
                    len);
  finish(ex, status);
}

/* ---- attempts and failures ------------------------------------------------- */

static struct attempt *attempt_add(struct mg_exchange *ex, const char *name) {
  struct attempt *a;
  if (ex->nattempts == MAX_ATTEMPTS)
    return NULL;
  a = &ex->attempts[ex->nattempts++];
  memset(a, 0, sizeof(*a));
  a->target = name;
  return a;
}

static void describe_failure(const struct mg_timeouts *t, const char *name,
                             const struct mg_up_call *call,
                             enum mg_up_result res, uint32_t limit,
                             int *status, char *msg, size_t n,
                             const char **code) {
  *status = 502;
  switch (res) {
  case MG_UP_TIMEOUT_CONNECT:
    *status = 504;
    *code = "upstream_timeout";
    snprintf(msg, n, "Could not connect to the upstream of %s within %u ms.",
             name, t->connect_ms);
    break;
  case MG_UP_TIMEOUT_FIRST_BYTE:
    *status = 504;
    *code = "upstream_timeout";
    snprintf(msg, n, "The upstream of %s sent no answer within %u ms.", name,
             t->first_byte_ms);
    break;
  case MG_UP_TIMEOUT_IDLE:
    *status = 504;
    *code = "upstream_timeout";
    snprintf(msg, n, "The upstream of %s stalled for %u ms mid-answer.", name,
             t->idle_ms);
    break;
  case MG_UP_TIMEOUT_TOTAL:
    *status = 504;
    *code = "upstream_timeout";
    snprintf(msg, n, "The upstream of %s did not finish within %u ms.", name,
             t->total_ms);
    break;
  case MG_UP_CONNECT_ERROR:
    *code = "upstream_unreachable";
    snprintf(msg, n, "Could not reach the upstream of %s: %s", name,
             call->error[0] ? call->error : "connection failed");
    break;
  case MG_UP_RESET:
    *code = "upstream_reset";
    snprintf(msg, n,
             "The upstream of %s closed the connection without answering.",
             name);
    break;
  case MG_UP_TRUNCATED:
    *code = "upstream_truncated";
    snprintf(msg, n, "The upstream of %s sent an incomplete answer.", name);
    break;
  case MG_UP_TOO_BIG:
    *code = "upstream_too_large";
    snprintf(msg, n, "The answer of the upstream of %s exceeds %u bytes.",
             name, limit);
    break;
  case MG_UP_PROTOCOL:
    *code = "upstream_invalid_response";
    if (call->error[0])
      snprintf(msg, n, "The upstream of %s did not answer in valid HTTP: %s.",
               name, call->error);
    else
      snprintf(msg, n, "The upstream of %s did not answer in HTTP.", name);
    break;
  default:
    *code = "upstream_error";
    snprintf(msg, n, "The upstream of %s failed: %s", name,
             call->error[0] ? call->error : mg_up_result_name(res));
    break;
  }
}

static uint32_t trigger_of(enum mg_up_result res) {
  switch (res) {
  case MG_UP_CONNECT_ERROR:
  case MG_UP_RESET:
    return MG_TRIG_CONNECT;
  case MG_UP_TIMEOUT_CONNECT:
  case MG_UP_TIMEOUT_FIRST_BYTE:
  case MG_UP_TIMEOUT_IDLE:
  case MG_UP_TIMEOUT_TOTAL:
    return MG_TRIG_TIMEOUT;
  default:
    return MG_TRIG_INVALID;
  }
}

static void set_failure(struct mg_exchange *ex, int status, const char *code,
                        const char *msg) {
  ex->fail_pass[0] = '\0';
  if (ex->call_target)
    ex->fail_tier = ex->call_target->name;
  ex->fail_status = status;
  ex->fail_code = code;
  snprintf(ex->fail_msg, sizeof(ex->fail_msg), "%s", msg);
  mg_buf_reset(&ex->fail_body);
}

/* Nothing more to try: answer with the last failure, naming the target
 * that gave it. */
static void answer_failure(struct mg_exchange *ex) {
  if (ex->served_by[0] == '\0' && ex->fail_tier)
    served_by(ex, "", ex->fail_tier);
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
     * Retry-After and retry-after-ms. */
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
  served_by(ex, "", "cache");
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

/* ---- traditional answers --------------------------------------------------- */

static void answer_text(struct mg_exchange *ex, const char *model,
                        const char *text, size_t len) {
  enum mg_answer_kind kind =
      ex->ep == MG_EP_CHAT ? MG_ANSWER_CHAT : MG_ANSWER_COMPLETION;
  char id[48];
  struct mg_buf out;
  int rc;

  snprintf(id, sizeof(id), "mg-%s", ex->id);
  mg_buf_init(&out, (size_t)-1 / 2);
  set_extra(ex);
  if (ex->req.input.stream)
    rc = mg_answer_wrap_sse(&out, kind, id, mg_wall_ms() / 1000, model, text,
                            len);
  else
    rc = mg_answer_wrap(&out, kind, id, mg_wall_ms() / 1000, model, text, len);
  if (rc != 0) {
    mg_buf_free(&out);
    respond_error(ex, 500, "Out of memory.", "internal_error", NULL);
    return;
  }
  account(ex, 200);
  if (ex->conn && ex->req.input.stream) {
    mg_resp_stream_head(ex->conn, 200, "text/event-stream", ex->extra);
    if (ex->conn)
      mg_resp_stream_chunk(ex->conn, out.data, out.len);
    if (ex->conn)
      mg_resp_stream_end(ex->conn);
  } else if (ex->conn) {
    mg_resp_send(ex->conn, 200, "application/json", ex->extra, out.data,
                    out.len);
  }
  mg_buf_free(&out);
  finish(ex, 200);
}

/* ---- upstream callbacks --------------------------------------------------- */

/* Feed the bytes of a passing stream to the gate, line by line. */
static void gate_stream_bytes(struct mg_exchange *ex, const char *p,
                              size_t n) {
  size_t i, start = 0;
  for (i = 0; i < n; i++) {
    if (p[i] != '\n')
      continue;
    if (mg_buf_append(&ex->sse_line, p + start, i - start) == 0 &&
        ex->sse_line.len > 6 && memcmp(ex->sse_line.data, "data: ", 6) == 0 &&
        !(ex->sse_line.len >= 12 &&
          memcmp(ex->sse_line.data + 6, "[DONE]", 6) == 0))
      mg_gate_acc_event(&ex->acc, ex->sse_line.data + 6,
                        ex->sse_line.len - 6, &ex->w->scratch);
    mg_buf_reset(&ex->sse_line);
    start = i + 1;
  }
  if (start < n && mg_buf_append(&ex->sse_line, p + start, n - start) != 0)
    mg_buf_reset(&ex->sse_line); /* an absurd line: skip it */
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
      served_by(ex, "", ex->call_target->name);
    collect_pass(call, ex->pass);
    set_extra(ex);
    mg_resp_stream_head(ex->conn, 200,
                        call->content_type[0] ? call->content_type
                                              : "text/event-stream",
                        ex->extra);
  } else if (mg_resp_congested(ex->conn)) {
    /* Keep the bytes in curl; the connection tells us when it drained. */
    ex->in_data = false;
    release(ex);
    return MG_UP_PAUSE;
  }
  if (ex->conn && mg_resp_stream_chunk(ex->conn, p, n) == 0 && ex->conn) {
    taken = n;
    if (ex->stream_gate)
      gate_stream_bytes(ex, p, n);
  }
  ex->in_data = false;
  release(ex);
  return taken;
}

static void on_target_done(struct mg_up_call *call, enum mg_up_result res);
static void on_trad_done(struct mg_up_call *call, enum mg_up_result res);
static const struct mg_up_call_cbs target_cbs = {on_data, on_target_done};
static const struct mg_up_call_cbs trad_cbs = {on_data, on_trad_done};

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

/* A complete answer from a target: 0 and the body to serve (maybe with
 * logprobs stripped, in out), or a trigger. Also reads the confidence. */
static uint32_t judge_answer(struct mg_exchange *ex, struct mg_up_call *call,
                             struct mg_buf *out, struct attempt *a) {
  const struct mg_policy *pol = mg_policy_of(&ex->cfg->fallbacks,
                                             ex->call_target);
  const struct mg_gate_cfg *g = &pol->gate;
  struct mg_json_doc *doc = &ex->w->scratch;
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
             ex->call_target->name, call->status);
    set_failure(ex, 502, "upstream_invalid_response", msg);
    a->outcome = "invalid";
    return MG_TRIG_INVALID;
  }
  if (g->enabled && ex->ep != MG_EP_EMBEDDINGS) {
    char hv[64];
    ex->threshold = g->min;
    ex->has_threshold = true;
    const char *header = NULL;
    if (g->source == MG_CONF_HEADER &&
        mg_up_call_header(call, g->header, hv, sizeof(hv)) == 0)
      header = hv;
    rc = mg_gate_confidence(g, doc, header, &conf);
    if (rc == 0) {
      a->confidence = conf;
      a->has_confidence = true;
      ex->confidence = conf;
      ex->has_confidence = true;
    }
    if ((rc == 0 && conf < g->min) || (rc != 0 && g->missing_fails)) {
      char msg[256];
      if (rc == 0)
        snprintf(msg, sizeof(msg),
                 "The answer of %s had confidence %.4f, below %.4f.",
                 ex->call_target->name, conf, g->min);
      else
        snprintf(msg, sizeof(msg),
                 "The answer of %s carried no confidence signal.",
                 ex->call_target->name);
      set_failure(ex, 422, "low_confidence", msg);
      a->outcome = "low_confidence";
      return MG_TRIG_LOW_CONF;
    }
  }
  if (ex->call_asked_logprobs) {
    if (mg_gate_strip_logprobs(doc, out) != 0) {
      set_failure(ex, 500, "internal_error", "Out of memory.");
      a->outcome = "error";
      return MG_TRIG_INVALID;
    }
  } else if (mg_buf_append(out, call->body.data, call->body.len) != 0) {
    set_failure(ex, 500, "internal_error", "Out of memory.");
    a->outcome = "error";
    return MG_TRIG_INVALID;
  }
  /* Tokens for the decision log, when the answer says. */
  {
    int64_t v;
    uint32_t u = mg_json_getc(doc, 0, "usage"), x;
    if (u != MG_JSON_NOTFOUND && doc->toks[u].type == MG_JSON_OBJECT) {
      x = mg_json_getc(doc, u, "prompt_tokens");
      if (x != MG_JSON_NOTFOUND && mg_json_int(doc, x, &v) == 0)
        ex->tokens_prompt = v;
      x = mg_json_getc(doc, u, "completion_tokens");
      if (x != MG_JSON_NOTFOUND && mg_json_int(doc, x, &v) == 0)
        ex->tokens_completion = v;
    }
  }
  a->outcome = "ok";
  return 0;
}

static void on_target_done(struct mg_up_call *call, enum mg_up_result res) {
  struct mg_exchange *ex = call->owner;
  const struct mg_target *t = ex->call_target;
  struct attempt *a;
  struct mg_outcome o = {0, 0};
  struct mg_buf answer;
  int status = 0;

  hold(ex);
  ex->call = NULL;
  ex->up_ns += call->t_end - call->t_start;
  mg_buf_init(&answer, (size_t)-1 / 2);
  a = attempt_add(ex, t->name);
  if (a == NULL)
    a = &ex->attempts[MAX_ATTEMPTS - 1];
  a->ms = (uint32_t)((call->t_end - call->t_start) / 1000000);
  a->status = (int)call->status;

  if (ex->conn == NULL || res == MG_UP_ABORTED) {
    a->outcome = "client_gone";
    mg_plan_abandon(&ex->plan);
    finish(ex, 499);
    goto out;
  }
  if (ex->stream_started) {
    /* Bytes reached the client: no fallback is possible any more. */
    if (res == MG_UP_OK) {
      double conf;
      const struct mg_policy *pol = mg_policy_of(&ex->cfg->fallbacks, t);
      a->outcome = "ok";
      if (ex->stream_gate &&
          mg_gate_acc_confidence(&ex->acc, pol->gate.source, &conf) == 0) {
        a->confidence = ex->confidence = conf;
        a->has_confidence = ex->has_confidence = true;
      }
      account(ex, 200);
      mg_resp_stream_end(ex->conn);
      o.trigger = 0;
      mg_plan_end(&ex->plan, &o, (int64_t)now_ms(ex));
      finish(ex, 200);
    } else {
      const char *code = NULL;
      char msg[320];
      describe_failure(&ex->call_timeouts, t->name, call, res,
                       ex->cfg->limits.response_bytes, &status, msg,
                       sizeof(msg), &code);
      a->outcome = mg_up_result_name(res);
      o.trigger = trigger_of(res);
      mg_plan_end(&ex->plan, &o, (int64_t)now_ms(ex));
      fail_stream(ex, msg, code);
    }
    goto breaker;
  }

  if (res != MG_UP_OK) {
    const char *code = NULL;
    char msg[320];
    describe_failure(&ex->call_timeouts, t->name, call, res,
                     ex->cfg->limits.response_bytes, &status, msg,
                     sizeof(msg), &code);
    mg_debug("request %s: %s", ex->id, msg);
    set_failure(ex, status, code, msg);
    a->outcome = mg_up_result_name(res);
    o.trigger = trigger_of(res);
  } else if (call->status == 429 || call->status >= 500) {
    char msg[256];
    o.trigger = call->status == 429 ? MG_TRIG_429 : MG_TRIG_5XX;
    o.retry_after_ms = retry_after(call);
    a->outcome = call->status == 429 ? "429" : "5xx";
    snprintf(msg, sizeof(msg), "The upstream of %s answered HTTP %ld.",
             t->name, call->status);
    set_failure(ex, call->status >= 500 && call->status < 600
                        ? (int)call->status
                        : 502,
                "upstream_error", msg);
    /* Keep the upstream's own JSON error to pass on if nothing else
     * answers; a non-JSON one becomes a 502 of ours. */
    {
      struct mg_json_doc *doc = &ex->w->scratch;
      doc->max_tokens = answer_tokens(ex);
      if (call->body.len &&
          mg_json_parse(doc, call->body.data, call->body.len, NULL) == 0 &&
          doc->toks[0].type == MG_JSON_OBJECT) {
        ex->fail_status = (int)call->status;
        if (mg_buf_append(&ex->fail_body, call->body.data, call->body.len))
          mg_buf_reset(&ex->fail_body);
        /* SDKs wait as long as the upstream asks before they retry, and
         * log its request id. */
        collect_pass(call, ex->fail_pass);
      } else {
        snprintf(msg, sizeof(msg),
                 "The upstream of %s answered HTTP %ld with a body that is "
                 "not JSON.",
                 t->name, call->status);
        set_failure(ex, 502, "upstream_error", msg);
      }
    }
  } else if (call->status >= 400) {
    /* The client's own request was refused: returned as it is, never
     * masked by a fallback (DESIGN.md). The upstream itself is fine. */
    struct mg_json_doc *doc = &ex->w->scratch;
    a->outcome = "client_error";
    mg_plan_end(&ex->plan, &o, (int64_t)now_ms(ex));
    served_by(ex, "", t->name);
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
  } else if (call->status < 200 || call->status >= 300) {
    char msg[256];
    snprintf(msg, sizeof(msg), "The upstream of %s answered HTTP %ld.",
             t->name, call->status);
    set_failure(ex, 502, "upstream_invalid_response", msg);
    a->outcome = "invalid";
    o.trigger = MG_TRIG_INVALID;
  } else {
    o.trigger = judge_answer(ex, call, &answer, a);
    if (o.trigger == MG_TRIG_LOW_CONF &&
        !mg_policy_of(&ex->cfg->fallbacks, t)->gate.abstain) {
      /* Another tier will answer: the header and the record describe the
       * answer served, not this one (the attempt keeps its value). */
      ex->rejected_confidence = ex->confidence;
      ex->has_rejected = ex->has_confidence;
      ex->has_confidence = false;
      ex->has_threshold = false;
    }
    if (o.trigger == MG_TRIG_LOW_CONF &&
        mg_policy_of(&ex->cfg->fallbacks, t)->gate.abstain) {
      /* Abstain: say the model is unsure rather than try another. */
      mg_plan_end(&ex->plan, &o, (int64_t)now_ms(ex));
      served_by(ex, "", t->name);
      respond_error(ex, 422, ex->fail_msg, "low_confidence", NULL);
      goto breaker;
    }
  }

  mg_plan_result(&ex->plan, &o, (int64_t)now_ms(ex),
                 mg_worker_random(ex->w), &ex->step);
  if (ex->step.kind == MG_STEP_DONE) {
    served_by(ex, "", t->name);
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
  if (a) {
    a->ms = (uint32_t)((call->t_end - call->t_start) / 1000000);
    a->status = (int)call->status;
  }
  mg_buf_init(&tmp, (size_t)-1 / 2);
  if (ex->conn == NULL || res == MG_UP_ABORTED) {
    finish(ex, 499);
  } else if (res == MG_UP_OK && call->status >= 200 && call->status < 300 &&
             mg_answer_text(call->body.data ? call->body.data : "",
                            call->body.len, t->field, &ex->w->scratch, &tmp,
                            &text, &len) == 0) {
    if (a)
      a->outcome = "ok";
    served_by(ex, "traditional:", t->name);
    answer_text(ex, name, text, len);
  } else {
    if (a)
      a->outcome = res == MG_UP_OK ? "invalid" : mg_up_result_name(res);
    mg_plan_skip(&ex->plan,
                 res == MG_UP_OK ? MG_TRIG_INVALID : trigger_of(res),
                 (int64_t)now_ms(ex), &ex->step);
    run(ex);
  }
  mg_buf_free(&tmp);
  mg_up_call_release(call);
  release(ex);
}

/* ---- calls ------------------------------------------------------------------ */

/* The upstream request body for target t: the client's body with `model`
 * replaced, logprobs asked for when the gate needs them and the client did
 * not, and `stream` turned off when a stream is to be gated whole. */
static int upstream_body(struct mg_exchange *ex, const struct mg_target *t,
                         char **out, size_t *len) {
  const struct mg_gate_cfg *g =
      &mg_policy_of(&ex->cfg->fallbacks, t)->gate;
  struct mg_json_doc *doc = &ex->w->scratch;
  struct mg_buf b, tmp;
  uint32_t m, s;
  int rc;

  ex->call_buffered = ex->req.input.stream && g->enabled && g->buffer_streams;
  /* A stream relayed as it comes cannot have logprobs taken out again: in
   * that mode the gate records only what the client asked for. */
  ex->call_asked_logprobs = mg_gate_needs_logprobs(g) && !ex->req.logprobs &&
                            ex->ep != MG_EP_EMBEDDINGS &&
                            (!ex->req.input.stream || ex->call_buffered);
  ex->stream_gate = ex->req.input.stream && !ex->call_buffered &&
                    g->enabled && g->source != MG_CONF_JSON;
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
  if (rc == 0 && s != MG_JSON_NOTFOUND && doc->toks[s].start > doc->toks[m].start) {
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
  if (rc == 0 && ex->call_asked_logprobs) {
    /* One more pass for the logprobs member: rare (gated targets only). */
    if (mg_json_parse(doc, b.data, b.len, NULL) != 0 ||
        mg_gate_ask_logprobs(doc, ex->ep == MG_EP_CHAT, &tmp) != 0) {
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

/* The request's own header lines: the decision id when the config sends
 * it upstream. */
static size_t call_extra(struct mg_exchange *ex, char *out, size_t n) {
  int l;
  if (!ex->cfg->upstream.send_decision_id)
    return 0;
  l = snprintf(out, n, "x-modelgate-decision: %s\r\n", ex->id);
  return l > 0 && (size_t)l < n ? (size_t)l : 0;
}

static struct mg_up_call *start_call(struct mg_exchange *ex,
                                     const struct mg_up_dest_ref *d,
                                     struct mg_up_request *ur,
                                     const struct mg_up_call_cbs *cbs) {
  char extra[96];
  ur->method = "POST";
  ur->extra_len = call_extra(ex, extra, sizeof(extra));
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
  mg_gate_acc_init(&ex->acc);
  mg_buf_reset(&ex->sse_line);
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
  ex->call = start_call(ex, mg_up_views_target(views, t, ex->ep), &ur,
                        &target_cbs);
  if (ex->call == NULL) {
    struct mg_outcome o = {MG_TRIG_CONNECT, 0};
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
  ex->call = start_call(ex, d, &ur, &trad_cbs);
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
      if (ex->step.trad->static_text) {
        char name[96];
        snprintf(name, sizeof(name), "traditional:%s", ex->step.trad->name);
        served_by(ex, "traditional:", ex->step.trad->name);
        attempt_add(ex, ex->step.trad->name)->outcome = "ok";
        answer_text(ex, name, ex->step.trad->static_text,
                    strlen(ex->step.trad->static_text));
        return;
      }
      if (ex->ep == MG_EP_EMBEDDINGS) {
        /* A traditional service cannot make embeddings. */
        mg_plan_skip(&ex->plan, 0, (int64_t)now_ms(ex), &ex->step);
        continue;
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
 * name becomes the attribute `client` (added first, so that neither a
 * header nor the body's metadata can claim another) and goes on record.
 * false when the request was answered with a 401. */
static bool authenticate(struct mg_exchange *ex, const struct mg_http_req *rq) {
  const char *name;
  if (!mg_auth_client(ex->cfg, rq, &name)) {
    ex->status = 401;
    set_extra(ex);
    account(ex, 401);
    if (ex->conn)
      mg_resp_error(ex->conn, 401, mg_auth_message(rq), "invalid_api_key",
                    NULL, ex->extra);
    finish(ex, 401);
    return false;
  }
  ex->client = name;
  mg_request_add_attr(&ex->req, MG_STR_LIT("client"), mg_str_c(name));
  return true;
}

/* The reason slot of a flag decision in the worker's series table: the
 * fixed reasons, then one per rule. */
static uint32_t reason_slot(const struct mg_flag_decision *d) {
  return d->reason == MG_REASON_RULE ? (uint32_t)(MG_REASON_DEFAULT + 1) +
                                           (uint32_t)d->rule
                                     : (uint32_t)d->reason;
}

static void on_gone(void *arg);
static void on_drained(void *arg);
static void on_abort(void *arg);
static const struct mg_resp_hooks resp_hooks = {on_gone, on_drained,
                                                on_abort};

void mg_exchange_handle(void *owner, struct mg_resp *c,
                        const struct mg_route *route) {
  struct mg_worker *w = owner;
  struct mg_http_req *rq = mg_resp_req(c);
  struct mg_exchange *ex = calloc(1, sizeof(*ex));
  struct mg_request_error err;
  const struct mg_policy *pol;
  const struct mg_snap *snap;

  if (ex == NULL) {
    mg_resp_error(c, 503, "Out of memory.", "internal_error", NULL, NULL);
    mg_resp_done(c);
    return;
  }
  ex->w = w;
  ex->conn = c;
  ex->ws = mg_worker_snap(w);
  snap = ex->ws->snap;
  ex->cfg = snap->cfg;
  ex->ep = *(const enum mg_endpoint *)route->arg;
  ex->t_start = uv_hrtime();
  ex->body = rq->body;
  mg_buf_init(&rq->body, ex->body.max);
  mg_buf_init(&ex->fail_body, ex->cfg->limits.response_bytes);
  mg_buf_init(&ex->sse_line, 1u << 20);
  mg_request_init(&ex->req, ex->ep);
  mg_worker_new_id(w, ex->id);
  ex->tokens_prompt = ex->tokens_completion = -1;
  mg_resp_attach(c, &resp_hooks, ex);
  mg_worker_begin(w);
  hold(ex);
  if (ex->cfg->clients.enabled && !authenticate(ex, rq))
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
  if (ex->alias->flag) {
    const struct mg_flag *f = ex->alias->flag;
    /* The wall clock is read only for flags with a time window. */
    int64_t now = (f->start_ms != INT64_MIN || f->end_ms != INT64_MAX)
                      ? mg_wall_ms()
                      : 0;
    ex->flag = f;
    mg_flag_eval(f, &snap->flag_states[f->index], &ex->req, now,
                 mg_worker_random(w), &ex->fd);
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

  /* The cache key is read now, while the request's tokens are at hand. */
  pol = mg_policy_of(&ex->cfg->fallbacks, ex->target);
  if (ex->cfg->fallbacks.cache.enabled && ex->ep != MG_EP_EMBEDDINGS &&
      (ex->cfg->fallbacks.cache.serve_hits || chain_has_cache(pol)) &&
      mg_cache_key(ex->alias->name, &w->scratch, &ex->ckey) == 0)
    ex->has_ckey = true;
  if (ex->has_ckey && ex->cfg->fallbacks.cache.serve_hits &&
      answer_from_cache(ex))
    goto out;

  mg_plan_start(&ex->plan, &ex->cfg->fallbacks, ex->target, snap->breakers,
                (int64_t)now_ms(ex), &ex->step);
  ex->doc_fresh = true;
  run(ex);
out:
  release(ex);
}

static void on_gone(void *arg) {
  struct mg_exchange *ex = arg;
  if (ex->finished)
    return;
  ex->conn = NULL;
  /* Inside curl's write callback we may not touch the transfer: on_data
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
    if (a) {
      a->outcome = "client_gone";
      a->ms = (uint32_t)(spent / 1000000);
    }
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
