/* call.c - what both engines share. */
#include "upstream/call.h"

static const char *const result_names[] = {
    "ok",          "connect_error",      "timeout_connect",
    "timeout_first_byte", "timeout_idle", "timeout_total",
    "reset",       "truncated",          "too_big",
    "protocol_error", "aborted",         "local_error", "error"};

const char *mg_up_result_name(enum mg_up_result r) {
  if ((size_t)r < sizeof(result_names) / sizeof(result_names[0]))
    return result_names[r];
  return "error";
}
