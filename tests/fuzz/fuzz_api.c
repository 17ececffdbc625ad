/* fuzz_api.c - untrusted upstream answers and stream events of every
 * endpoint through the endpoint table's operations (usage, stream state,
 * confidence, logprobs stripping, replays), the conversation id rewriting
 * and unwrapping, and request bodies through ask_logprobs. The first byte
 * picks the endpoint and the event's name. Whatever is written must be
 * valid JSON again (replays: every data line). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/conv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct mg_json_doc doc, scratch;
static struct mg_targets targets;

static void init(void) {
  const char *cfg = "{\"a-main\":{\"base_url\":\"http://h\",\"model\":\"m\"},"
                    "\"c\":{\"base_url\":\"http://h\",\"model\":\"m\","
                    "\"api\":\"anthropic\"}}";
  struct mg_cfg_errors e;
  cJSON *root = cJSON_Parse(cfg);
  mg_json_init(&doc, 1u << 16);
  mg_json_init(&scratch, 1u << 16);
  mg_cfg_errors_init(&e);
  mg_targets_parse(&targets, root, "$.targets", NULL, &e);
  mg_cfg_errors_free(&e);
  cJSON_Delete(root);
}

/* Every data line of SSE bytes is one JSON value. */
static void check_sse(const struct mg_buf *b) {
  const char *p = b->data, *e = b->data + b->len;
  while (p && p < e) {
    const char *nl = memchr(p, '\n', (size_t)(e - p));
    if (nl == NULL)
      __builtin_trap(); /* every line ends */
    if (nl - p > 6 && memcmp(p, "data: ", 6) == 0 &&
        !(nl - p == 12 && memcmp(p + 6, "[DONE]", 6) == 0) &&
        mg_json_parse(&scratch, p + 6, (size_t)(nl - p - 6), NULL) != 0)
      __builtin_trap();
    p = nl + 1;
  }
}

static void check_json(const struct mg_buf *b) {
  if (mg_json_parse(&scratch, b->data ? b->data : "", b->len, NULL) != 0)
    __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int ready;
  static const char *const names[] = {
      "",  "response.created", "response.completed", "response.failed",
      "response.output_text.delta", "error", "message_start",
      "message_delta", "message_stop"};
  const struct mg_endpoint *ep;
  struct mg_stream_state st;
  struct mg_sse_event ev;
  struct mg_gate_cfg g;
  struct mg_usage u;
  struct mg_buf out;
  const struct mg_target *t;
  struct mg_str up;
  const char *body;
  double c;

  if (!ready) {
    init();
    ready = 1;
  }
  if (size == 0)
    return 0;
  ep = mg_endpoint_get((enum mg_endpoint_id)(data[0] % MG_EP__COUNT));
  body = (const char *)data + 1;
  size--;

  /* The bytes as one stream event. */
  if (ep->ops->stream_event) {
    mg_stream_state_init(&st);
    st.want_logprobs = true;
    ev.event = mg_str_c(names[(data[0] / MG_EP__COUNT) %
                              (sizeof(names) / sizeof(names[0]))]);
    ev.data = (struct mg_str){body, size};
    ep->ops->stream_event(&st, &ev, &scratch);
    if (strlen(st.response_id) >= sizeof(st.response_id))
      __builtin_trap();
    mg_buf_init(&out, (size_t)1 << 30);
    if (ep->ops->stream_error(&out, &st, NULL, "m", "c") == 0)
      check_sse(&out);
    mg_buf_free(&out);
  }
  (void)mg_conv_unwrap((struct mg_str){body, size}, &targets, &t, &up);

  if (mg_json_parse(&doc, body, size, NULL) != 0)
    return 0;
  mg_usage_init(&u);
  if (ep->ops->usage)
    ep->ops->usage(&doc, &u);
  memset(&g, 0, sizeof(g));
  g.source = MG_CONF_LOGPROBS_MEAN;
  if (mg_api_confidence(ep, &g, &doc, NULL, &c) == 0 && !(c >= 0 && c <= 1))
    __builtin_trap();
  if (ep->ops->strip_logprobs) {
    mg_buf_init(&out, (size_t)1 << 30);
    if (ep->ops->strip_logprobs(&doc, &out) == 0)
      check_json(&out);
    mg_buf_free(&out);
  }
  if (ep->ops->ask_logprobs) {
    mg_buf_init(&out, (size_t)1 << 30);
    if (ep->ops->ask_logprobs(&doc, &out) == 0)
      check_json(&out);
    mg_buf_free(&out);
  }
  if (ep->ops->replay_sse) {
    mg_buf_init(&out, (size_t)1 << 30);
    if (ep->ops->replay_sse(&doc, &out) == 0)
      check_sse(&out);
    mg_buf_free(&out);
  }
  mg_buf_init(&out, (size_t)1 << 30);
  if (mg_conv_rewrite_response(&doc, "a-main", &out) == 0)
    check_json(&out);
  mg_buf_reset(&out);
  if (mg_conv_rewrite_event(&doc, "a-main", &out) == 1)
    check_json(&out);
  mg_buf_free(&out);
  return 0;
}
