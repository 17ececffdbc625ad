/* conv.h - conversations stay where their state is (DESIGN.md, "The
 * APIs"; issue 14.3).
 *
 * A Responses upstream keeps a response's state (previous_response_id
 * chains, GET, DELETE, input_items) where it made it. modelgate needs no
 * shared state to send a follow-up there: the id it hands the client
 * names the target.
 *
 *   resp_mg<base32(target name)>_<upstream id>
 *
 * base32 is RFC 4648's alphabet in lower case without padding
 * ("abcdefghijklmnopqrstuvwxyz234567"), which holds no '_': the first '_'
 * after "resp_mg" ends the name. The name (not an index) survives
 * restarts, reloads that reorder targets, and any number of instances.
 * An answer modelgate made itself (cache, traditional) has no upstream
 * state: its id is "resp_mg_<decision id>" (an empty name).
 *
 * Unwrapping validates: a canonical base32 name of a target of the
 * snapshot that speaks the OpenAI API, and an upstream id of URL-safe
 * bytes. Anything else (a forged or foreign id) is not ours: a 404. The
 * id is not a secret nor signed: a client that names another target gets
 * what that target holds under the upstream id it names, as it would by
 * calling the upstream with modelgate's key through a direct alias. */
#ifndef MG_CONV_H
#define MG_CONV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/json.h"
#include "common/str.h"
#include "routing/flag.h"
#include "routing/route.h"
#include "routing/target.h"

#define MG_CONV_ID_MAX 512 /* a wrapped id, terminator included */
#define MG_CONV_PREFIX "resp_mg"

/* The id a client sees for upstream_id made by target: 0, -E2BIG when it
 * would not fit n bytes (or MG_CONV_ID_MAX), -EINVAL for an upstream id
 * that is empty or holds bytes outside [A-Za-z0-9_.-]. */
int mg_conv_wrap(const char *target, struct mg_str upstream_id, char *out,
                 size_t n);
/* The id of an answer modelgate made: "resp_mg_<decision id>". */
int mg_conv_local_id(const char *decision_id, char *out, size_t n);

/* The target and upstream id an id names: 0 (upstream_id points into id);
 * -EPERM for a modelgate-made answer (no state anywhere: a follow-up is
 * conversation_unavailable, a GET is 404); -ENOENT when the id is not one
 * of ours or names no OpenAI target of the snapshot (404). */
int mg_conv_unwrap(struct mg_str id, const struct mg_targets *targets,
                   const struct mg_target **target, struct mg_str *upstream_id);

/* Copy a Response JSON body (POST /v1/responses buffered, GET, DELETE)
 * with its root `id` and `previous_response_id` strings wrapped for
 * target; every other byte unchanged. Values that are not plain id
 * strings are copied as they are. 0 or -ENOMEM/-E2BIG. */
int mg_conv_rewrite_response(const struct mg_json_doc *doc, const char *target,
                             struct mg_buf *out) MG_WARN_UNUSED;

/* One stream event's data (scanned into ev): the events that carry the
 * response (response.created, .in_progress, .queued, .completed,
 * .incomplete, .failed) get `response.id` and `response.previous_
 * response_id` wrapped; the copy goes to out and 1 is returned. 0 (out
 * untouched) for events without a `response` object: relay those bytes
 * as they are. Negative on -ENOMEM/-E2BIG. */
int mg_conv_rewrite_event(const struct mg_json_doc *ev, const char *target,
                          struct mg_buf *out);

/* Copy a request body with the value at prev_tok (its
 * previous_response_id, mg_request.previous_tok) replaced by upstream_id:
 * what the target expects. */
int mg_conv_unwrap_request(const struct mg_json_doc *req, uint32_t prev_tok,
                           struct mg_str upstream_id,
                           struct mg_buf *out) MG_WARN_UNUSED;

/* Where a follow-up (previous_response_id) goes when the target that holds
 * its conversation is `pinned` and the request's alias chose `chosen` now
 * (DESIGN.md: the pinned target while it is still allowed; else the
 * current choice when it shares the stored state; else an error). */
enum mg_conv_pin {
  MG_PIN_STAY,        /* send it to pinned */
  MG_PIN_MOVE,        /* pinned is no longer allowed; chosen shares its
                       * state (same API, base URL and key): send it there */
  MG_PIN_UNAVAILABLE, /* neither: 400 conversation_unavailable */
};

/* pinned is "allowed" when it is chosen, or the target of a variant of
 * the alias's flag that still serves someone: the flag is not killed and
 * inside its window, and the variant is the off_variant, has weight in
 * force, an allow list or a rule. A direct alias allows only its target.
 * st: the flag's state in force (NULL for a direct alias). */
enum mg_conv_pin mg_conv_pin(const struct mg_alias *a,
                             const struct mg_flag_state *st, int64_t now_ms,
                             const struct mg_target *pinned,
                             const struct mg_target *chosen);
/* "stay", "move", "unavailable". */
const char *mg_conv_pin_name(enum mg_conv_pin p);

#endif
