/* hll.c - HyperLogLog (see hll.h). */
#include "ramps/hll.h"

#include <math.h>
#include <string.h>

void mg_hll_init(struct mg_hll *h) { memset(h, 0, sizeof(*h)); }

/* splitmix64's finaliser: every input bit reaches every output bit. */
uint64_t mg_hll_mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

void mg_hll_add(struct mg_hll *h, uint64_t hash) {
  uint64_t x = mg_hll_mix(hash);
  uint32_t idx = (uint32_t)(x >> (64 - MG_HLL_BITS));
  uint64_t rest = x << MG_HLL_BITS;
  /* rank: position of the first 1 bit in the remaining 54 bits (1-based);
   * all zeros is rank 55. */
  uint8_t rank = 1;
  while (rank <= 64 - MG_HLL_BITS && !(rest & (1ULL << 63))) {
    rest <<= 1;
    rank++;
  }
  if (rank > h->reg[idx])
    h->reg[idx] = rank;
}

void mg_hll_merge(struct mg_hll *acc, const struct mg_hll *x) {
  uint32_t i;
  for (i = 0; i < MG_HLL_REGS; i++)
    if (x->reg[i] > acc->reg[i])
      acc->reg[i] = x->reg[i];
}

double mg_hll_estimate(const struct mg_hll *h) {
  const double m = MG_HLL_REGS;
  double sum = 0, e;
  uint32_t i, zeros = 0;
  for (i = 0; i < MG_HLL_REGS; i++) {
    sum += ldexp(1.0, -(int)h->reg[i]);
    zeros += h->reg[i] == 0;
  }
  /* alpha_m for m >= 128 (Flajolet et al., figure 3) */
  e = 0.7213 / (1 + 1.079 / m) * m * m / sum;
  if (e <= 2.5 * m && zeros > 0)
    e = m * log(m / zeros); /* linear counting */
  return e;
}
