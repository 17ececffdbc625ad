#!/usr/bin/env python3
"""Reference values for tests/unit/ramps/test_seqtest.c, worked independently
of src/ramps/seqtest.c (python3, standard library only):

- the mixture likelihood ratio (equal weights on the scales tau, 4 tau and
  16 tau) is integrated numerically for each scale (composite Simpson
  over theta in [0, 40 tau] of the half-normal density times the Gaussian
  likelihood ratio exp(theta S - theta^2 I / 2)), not taken from the closed
  form the C code uses;
- every variance is summed over the raw observations (sum of (y - R s)^2),
  not from the moment sums the C code receives; 0/1 data use the Bernoulli
  variance at the null value, p0 (1 - p0) / n, recognised from the values
  themselves.

Run: python3 tests/unit/ramps/seqtest_ref.py
"""
import math


def mixture_log_lr(est, v, tau):
    """log of the mean over tau, 4 tau, 16 tau of the one-scale mixtures."""
    ls = [one_scale_log_lr(est, v, tau * 4 ** j) for j in range(3)]
    top = max(ls)
    return top + math.log(sum(math.exp(x - top) for x in ls) / 3)


def one_scale_log_lr(est, v, tau, steps=200000):
    """log of int_0^inf (2/tau) phi(theta/tau) exp(theta S - theta^2 I/2)."""
    S, I = est / v, 1.0 / v
    # the integrand peaks at theta* = S / (I + 1/tau^2); integrate around it
    # on a log scale to avoid overflow: factor out the maximum exponent
    a = I + 1.0 / tau ** 2
    peak = max(S / a, 0.0)
    hi = peak + 40.0 / math.sqrt(a)

    def expo(th):
        return th * S - th * th * I / 2 - th * th / (2 * tau * tau)

    m = expo(peak)
    h = hi / steps
    total = 0.0
    for i in range(steps + 1):
        th = i * h
        w = 1 if i in (0, steps) else (4 if i % 2 else 2)
        total += w * math.exp(expo(th) - m)
    integral = total * h / 3
    return math.log(2 / (tau * math.sqrt(2 * math.pi))) + m + math.log(integral)


def is01(y, s):
    return set(y) <= {0, 1} and set(s) == {1}


def ratio_test(yt, st, yc, sc, k, direction, detect, design=(1, 1)):
    """returns estimate, variance, tau, observed; None when undefined"""
    rt = sum(yt) / sum(st)
    rc = sum(yc) / sum(sc)
    r0 = (sum(yt) / k + sum(yc)) / (sum(st) + sum(sc))
    rc_tau = rc if rc > 0 else 0.5 / sum(sc)
    observed = rt / rc if rc > 0 else rt * sum(sc)
    if is01(yt, st) and is01(yc, sc):
        # square-root scale, Bernoulli variances at the null value; each arm
        # must expect 5 events and 5 non-events under the null
        nt, nc = len(yt), len(yc)
        for p, n in ((k * r0, nt), (r0, nc)):
            if p * n < 5 or (1 - p) * n < 5:
                return None
        v = ((1 - k * r0) / (4 * nt) * design[0] +
             k * (1 - r0) / (4 * nc) * design[1])
        est = direction * (math.sqrt(rt) - math.sqrt(k * rc))
        tau = (math.sqrt(detect) - 1) * math.sqrt(k * rc_tau)
        return est, v, tau, observed
    vt = sum((y - k * r0 * s) ** 2 for y, s in zip(yt, st)) / sum(st) ** 2
    vc = sum((y - r0 * s) ** 2 for y, s in zip(yc, sc)) / sum(sc) ** 2
    v = vt * design[0] + k * k * vc * design[1]
    est = direction * (rt - k * rc)
    tau = (detect - 1) * k * rc_tau
    return est, v, tau, observed


def design_effect(clusters):
    """clusters: a list of lists of (y, s) pairs, one list per bucket.
    Cluster-robust over independent residual sums of squares, >= 1."""
    flat = [o for c in clusters for o in c]
    R = sum(y for y, _ in flat) / sum(s for _, s in flat)
    nonempty = [c for c in clusters if c]
    g = len(nonempty)
    cl = sum((sum(y for y, _ in c) - R * sum(s for _, s in c)) ** 2
             for c in nonempty) * g / (g - 1)
    iid = sum((y - R * s) ** 2 for y, s in flat)
    return max(1.0, cl / iid)


def shift_test(lt, lc, k, detect):
    def mv(x):
        m = sum(x) / len(x)
        return m, sum((a - m) ** 2 for a in x) / (len(x) - 1)

    mt, vt = mv(lt)
    mc, vc = mv(lc)
    est = (mt - mc) - math.log(k)
    v = vt / len(lt) + vc / len(lc)
    return est, v, math.log(detect), math.exp(mt - mc)


def level_test(y, thr, direction, detect):
    n = len(y)
    m = sum(y) / n
    if set(y) <= {0, 1}:
        if thr * n < 5 or (1 - thr) * n < 5:
            return None
        d = math.sqrt(detect)
        tau = (d - 1 if direction > 0 else 1 - 1 / d) * math.sqrt(thr)
        return (direction * (math.sqrt(m) - math.sqrt(thr)),
                (1 - thr) / (4 * n), tau, m)
    v = sum((a - thr) ** 2 for a in y) / n ** 2
    scale = abs(thr) if thr != 0 else 1
    tau = (detect - 1 if direction > 0 else 1 - 1 / detect) * scale
    return direction * (m - thr), v, tau, m


def show(name, r):
    if r is None:
        print(f"{name}: undefined")
        return
    est, v, tau, observed = r
    print(f"{name}: estimate={est:.12g} se={math.sqrt(v):.12g} "
          f"z={est / math.sqrt(v):.12g} tau={tau:.12g} "
          f"log_lr={mixture_log_lr(est, v, tau):.10g} observed={observed:.12g}")


if __name__ == "__main__":
    # 1. error ratio: treatment 40 errors in 1000, control 150 in 10000,
    #    k = 1.5, H1 treatment worse, detect 1.5
    yt = [1] * 40 + [0] * 960
    yc = [1] * 150 + [0] * 9850
    show("error_ratio", ratio_test(yt, [1] * 1000, yc, [1] * 10000, 1.5, +1,
                                    1.5))
    # 2. the same counts against k = 3 (within the threshold)
    show("error_ratio_k3", ratio_test(yt, [1] * 1000, yc, [1] * 10000, 3, +1,
                                       1.5))
    # 3. a control with no errors: 5 in 300 against 0 in 3000, k = 2: the
    #    null expects 0.45 treatment events, below the 5 the normal
    #    approximation needs: undefined
    show("error_ratio_zero_control",
         ratio_test([1] * 5 + [0] * 295, [1] * 300, [0] * 3000, [1] * 3000, 2,
                     +1, 1.5))
    # 3b. a control with none but enough expected events: 30 of 1000
    #     against 0 of 3000, k = 2
    show("error_ratio_zero_control_defined",
         ratio_test([1] * 30 + [0] * 970, [1] * 1000, [0] * 3000, [1] * 3000,
                    2, +1, 1.5))
    # 4. cost per successful answer: costs (y) and success flags (s)
    ct = [0.004, 0.006, 0.005, 0.007, 0.0, 0.009, 0.005, 0.006, 0.008, 0.004]
    cs = [1, 1, 1, 1, 0, 1, 1, 1, 1, 1]
    cc = [0.003, 0.004, 0.002, 0.005, 0.004, 0.003, 0.001, 0.004, 0.003, 0.0]
    ccs = [1, 1, 1, 1, 1, 1, 1, 1, 1, 0]
    show("cost_ratio", ratio_test(ct * 30, cs * 30, cc * 30, ccs * 30, 1.1,
                                   +1, 1.5))
    # 5. feedback min_ratio: accuracy 0.80 (t) against 0.90 (c), k = 0.95,
    #    H1 treatment below 0.95 x control
    at = [1] * 160 + [0] * 40
    ac = [1] * 270 + [0] * 30
    show("accuracy_min_ratio", ratio_test(at, [1] * 200, ac, [1] * 300, 0.95,
                                           -1, 1.5))
    # 5b. a float feedback metric (a rating 1..5) max_ratio 1.1, non-binary
    rt_ = [3, 4, 5, 2, 4, 5, 5, 3, 4, 5, 1, 5]
    rc_ = [3, 3, 4, 2, 3, 4, 3, 3, 2, 4, 3, 3, 4, 2]
    show("rating_max_ratio", ratio_test(rt_ * 8, [1] * 96, rc_ * 8, [1] * 112,
                                         1.1, +1, 1.5))
    # 6. latency shift on ln ms, k = 1.2
    lt = [math.log(x) for x in [120, 340, 95, 800, 410, 230, 150, 600, 275,
                                  330, 90, 510]]
    lc = [math.log(x) for x in [100, 200, 80, 300, 250, 180, 120, 400, 210,
                                  150, 70, 260, 190, 230]]
    show("latency_shift", shift_test(lt * 10, lc * 10, 1.2, 1.5))
    # 7. floor: accuracy >= 0.85 with 70 of 100 right
    show("accuracy_floor", level_test([1] * 70 + [0] * 30, 0.85, -1, 1.5))
    # 8. ceiling: complaint rate <= 0.05 with 3 of 200 (within)
    show("complaint_ceiling", level_test([1] * 6 + [0] * 194, 0.05, +1, 1.5))
    # 9. design effect: 8 buckets of (error, 1) pairs, errors clustered in
    #    two buckets; then the error ratio with it on the treatment arm
    sizes = [30, 25, 40, 35, 20, 30, 45, 25]
    errs = [0, 1, 0, 9, 0, 1, 8, 1]
    clusters = [[(1, 1)] * e + [(0, 1)] * (n - e) for n, e in zip(sizes, errs)]
    d = design_effect(clusters)
    print(f"design_effect: {d:.12g}")
    flat_y = [y for c in clusters for y, _ in c]
    show("error_ratio_clustered",
         ratio_test(flat_y, [1] * len(flat_y), [1] * 60 + [0] * 2940,
                     [1] * 3000, 1, +1, 1.5, design=(d, 1)))
