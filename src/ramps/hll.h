/* hll.h - distinct units, for a ramp step's `min_units` exit criterion.
 *
 * A HyperLogLog (Flajolet, Fusy, Gandouet, Meunier 2007) with 2^10 one-byte
 * registers: 1 KiB, a relative standard error of 1.04 / sqrt(1024) = 3.3%,
 * and below 2.5 x 1024 units the linear-counting estimate of the same
 * paper, which is within a few units of the truth at the sizes steps ask
 * for. Why not an exact set: each worker counts its own units and the check
 * sums the workers; two HyperLogLogs merge by a register-wise max (a unit
 * seen by two workers counts once), in fixed memory, whereas exact sets
 * would need a bounded union of up to min_units ids per worker and per arm.
 * A 3% error on a threshold that only lets a step advance (never rolls
 * back) is acceptable; the README says so.
 *
 * Input: a 64-bit hash of the unit (the decision's XXH64 unit hash); it is
 * mixed again here so that a weak hash cannot skew the registers. Pure. */
#ifndef MG_HLL_H
#define MG_HLL_H

#include <stdint.h>

#define MG_HLL_BITS 10
#define MG_HLL_REGS (1u << MG_HLL_BITS)

struct mg_hll {
  uint8_t reg[MG_HLL_REGS];
};

void mg_hll_init(struct mg_hll *h);
void mg_hll_add(struct mg_hll *h, uint64_t hash);
/* acc := the union of acc and x. */
void mg_hll_merge(struct mg_hll *acc, const struct mg_hll *x);
/* The estimated number of distinct hashes added. */
double mg_hll_estimate(const struct mg_hll *h);
/* The mixer applied to every hash (splitmix64's finaliser): for other
 * users of unit hashes that need well-spread bits. */
uint64_t mg_hll_mix(uint64_t x);

#endif
