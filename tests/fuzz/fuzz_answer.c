/* fuzz_answer.c - untrusted upstream answers through everything that reads
 * them: the confidence gate (every source), logprobs stripping, the replay
 * of a buffered answer as server-sent events, traditional answer text, and
 * the stream gate fed the same bytes as one event. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "fallbacks/answer.h"
#include "fallbacks/gate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static struct mg_json_doc doc, scratch;
  static int ready;
  static const char *const sources[] = {
      "logprobs_mean", "logprobs_min", "header:x-confidence",
      "json:/confidence", "json:/choices/0/message/content/score"};
  const char *body = (const char *)data;
  struct mg_gate_cfg g;
  struct mg_gate_acc acc;
  struct mg_buf out, tmp;
  const char *text;
  size_t len, i;
  double conf;

  if (!ready) {
    mg_json_init(&doc, 1u << 16);
    mg_json_init(&scratch, 1u << 16);
    ready = 1;
  }
  mg_buf_init(&tmp, (size_t)1 << 30);
  (void)mg_answer_text(body, size, "/answer", &scratch, &tmp, &text, &len);
  mg_buf_free(&tmp);
  mg_gate_acc_init(&acc);
  mg_gate_acc_event(&acc, body, size, &scratch);
  (void)mg_gate_acc_confidence(&acc, MG_CONF_LOGPROBS_MEAN, &conf);
  if (mg_json_parse(&doc, body, size, NULL) != 0)
    return 0;
  for (i = 0; i < sizeof(sources) / sizeof(sources[0]); i++) {
    memset(&g, 0, sizeof(g));
    g.enabled = true;
    if (mg_gate_parse_source(&g, sources[i]) == 0 &&
        mg_gate_confidence(&g, &doc, "0.5", &conf) == 0 &&
        mg_gate_needs_logprobs(&g) && !(conf >= 0 && conf <= 1))
      __builtin_trap(); /* a logprobs confidence lies in [0, 1] */
    free(g.header);
    free(g.pointer);
  }
  mg_buf_init(&out, (size_t)1 << 30);
  if (mg_gate_strip_logprobs(&doc, &out) == 0 &&
      mg_json_parse(&scratch, out.data, out.len, NULL) != 0)
    __builtin_trap(); /* stripping keeps valid JSON valid */
  mg_buf_free(&out);
  mg_buf_init(&out, (size_t)1 << 30);
  (void)mg_answer_replay_sse(&doc, &out);
  mg_buf_free(&out);
  return 0;
}
