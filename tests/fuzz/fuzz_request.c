/* fuzz_request.c - untrusted request bodies through everything that reads
 * them before routing: feature extraction, the cache key (canonical JSON),
 * and the logprobs request modelgate may splice in. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/json.h"
#include "fallbacks/cache.h"
#include "fallbacks/gate.h"
#include "routing/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static struct mg_json_doc doc;
  static int ready;
  struct mg_request r;
  struct mg_request_error err;
  struct mg_cache_key key;
  struct mg_buf out;
  enum mg_endpoint ep;

  if (!ready) {
    mg_json_init(&doc, 1u << 16);
    ready = 1;
  }
  if (size == 0)
    return 0;
  /* The first byte picks the endpoint and a header attribute. */
  ep = (enum mg_endpoint)(data[0] % MG_EP__COUNT);
  mg_request_init(&r, ep);
  mg_request_add_attr(&r, mg_str_c("region"), mg_str_c("eu"));
  if (mg_request_parse(&r, (const char *)data + 1, size - 1, &doc, &err) ==
      0) {
    /* Whatever was accepted has a model and sane features. */
    if (r.model.len == 0 || r.model_tok >= doc.n)
      __builtin_trap();
    (void)mg_request_attr(&r, mg_str_c("tier"));
    (void)!mg_cache_key("alias", &doc, &key);
    mg_buf_init(&out, (size_t)1 << 30);
    if (mg_gate_ask_logprobs(&doc, ep == MG_EP_CHAT, &out) == 0) {
      /* The spliced body must still be one valid JSON object. */
      struct mg_json_doc d2;
      mg_json_init(&d2, 1u << 17);
      if (mg_json_parse(&d2, out.data, out.len, NULL) != 0)
        __builtin_trap();
      mg_json_free(&d2);
    }
    mg_buf_free(&out);
  }
  mg_request_free(&r);
  return 0;
}
