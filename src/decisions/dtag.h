/* dtag.h - the decision tag: 32 bits inside every decision id that say
 * which flag variant made the decision, whether it was randomized, and the
 * input cells of its request (issue 15.1).
 *
 * Why in the id. Feedback (`POST /v1/feedback`) names only a decision id,
 * and may reach any worker of any instance, long after the decision. The
 * report joins feedback to decisions from the log, but a ramp's guards
 * must see feedback as it arrives, without shared state and without a
 * table of recent decisions: so the id itself carries what the guard
 * windows need (flag and variant, as a hash of their names; rollout or
 * not; the ramp's chars and tools cells). A decision of another config
 * (a variant renamed, removed) simply matches nothing.
 *
 * Layout: the id is 16 bytes as 32 lowercase hex digits; bytes 4..7
 * (hex digits 8..15) hold the tag, big-endian:
 *
 *   bit 31      rollout (the decision was randomized)
 *   bits 30..28 chars cell: 0 unknown, 1..4 (ramps/window.h's
 *               MG_CELL_CHARS0 + 0..3)
 *   bits 27..26 tools cell: 0 unknown, 1..3 (MG_CELL_TOOLS0 + 0..2)
 *   bits 25..0  XXH64("<flag>\x1f<variant>") & 0x3ffffff, never 0
 *
 * An untagged id (no flag) has a tag of 0. The tag is not a secret and not
 * authenticated: a client can forge a tag as it can send feedback about
 * any decision; the per-client feedback rate bounds either. Pure. */
#ifndef MG_DTAG_H
#define MG_DTAG_H

#include <stdbool.h>
#include <stdint.h>

struct mg_dtag {
  uint32_t hash;      /* 26 bits of the flag and variant names; 0: none */
  bool rollout;
  uint8_t chars;      /* the ramp's input.chars cell: 1..4, 0 unknown */
  uint8_t tools;      /* its tool-count cell: 1..3, 0 unknown */
};

/* The hash part of a flag variant's tag (26 bits, never 0). */
uint32_t mg_dtag_hash(const char *flag, const char *variant);

/* Write t into the decision id (32 hex digits). */
void mg_dtag_set(char id[33], const struct mg_dtag *t);

/* Read the tag of a decision id (32 lowercase hex digits: validated by
 * the caller). false when the id carries none. */
bool mg_dtag_get(const char *id, struct mg_dtag *out);

#endif
