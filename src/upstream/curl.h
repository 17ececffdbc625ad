/* curl.h - the libcurl engine (upstream/call.h): curl's multi interface
 * driven by a worker's libuv loop (the shape of curl's
 * docs/examples/multi-uv.c), for https:// upstreams and any target that
 * pins `engine: "curl"`.
 *
 * One engine per loop holds the multi handle (and with it curl's connection
 * cache, so connections to upstreams are reused) and a pool of calls, each
 * with its curl easy handle and timer: a request allocates nothing here. */
#ifndef MG_UP_CURL_H
#define MG_UP_CURL_H

#include <uv.h>

#include "upstream/call.h"

extern const struct mg_up_engine_ops mg_curl_ops;

/* A new engine on loop; NULL when out of memory. Free it with its close
 * operation (which runs the loop's close callbacks). */
struct mg_up_engine *mg_curl_new(uv_loop_t *loop,
                                 const struct mg_up_engine_cfg *cfg);

#endif
