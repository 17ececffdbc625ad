/* fuzz_feedback.c - untrusted POST /v1/feedback bodies through what reads
 * them (handlers/feedback.c): the JSON, each item's validation against
 * declared metrics, the error answer, the feedback line, and the decision
 * tag read from an accepted id. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "decisions/dtag.h"
#include "decisions/feedback.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct mg_feedback_config cfg;

static void setup(void) {
  static const char sec[] =
      "{\"metrics\":{\"thumbs_up\":{\"type\":\"boolean\"},"
      "\"accuracy\":{\"type\":\"float\",\"min\":-1,\"max\":5}}}";
  struct mg_cfg_errors e;
  cJSON *j = cJSON_Parse(sec);
  mg_cfg_errors_init(&e);
  if (mg_feedback_parse(j, "$.feedback", &cfg, &e) != 0)
    __builtin_trap();
  mg_cfg_errors_free(&e);
  cJSON_Delete(j);
}

static void one(const cJSON *item, int index, struct mg_buf *out) {
  struct mg_feedback_item it;
  struct mg_feedback_error err;
  struct mg_dtag tag;
  mg_buf_reset(out);
  if (mg_feedback_validate(&cfg, item, index, &it, &err) != 0) {
    (void)mg_feedback_error_json(&err, out);
    return;
  }
  if (!mg_feedback_is_decision_id(it.decision_id, strlen(it.decision_id)))
    __builtin_trap();
  (void)mg_dtag_get(it.decision_id, &tag);
  (void)mg_feedback_format(&it, 1764756000000, "client", "instance", out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int ready;
  struct mg_buf out;
  cJSON *doc, *it;
  int i = 0;
  if (!ready) {
    setup();
    ready = 1;
  }
  doc = cJSON_ParseWithLength((const char *)data, size);
  if (doc == NULL)
    return 0;
  mg_buf_init(&out, 1u << 20);
  if (cJSON_IsArray(doc)) {
    cJSON_ArrayForEach(it, doc) {
      if (i >= 100)
        break;
      one(it, i++, &out);
    }
  } else {
    one(doc, -1, &out);
  }
  mg_buf_free(&out);
  cJSON_Delete(doc);
  return 0;
}
