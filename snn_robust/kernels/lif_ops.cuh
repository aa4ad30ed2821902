// Per-element steps of the LIF bound recurrences, shared by the CUDA kernels
// (lif_kernels.cu, compiled by NVRTC through CuPy) and the host harness (host_harness.cpp,
// compiled by g++ or nvcc as host code and run on the CPU by the tests).
//
// Each function repeats, operation for operation, the float arithmetic of the torch
// reference (snn_robust/bounds/lif.py: ibp_recurrence, crown_recurrence), so that results
// agree to the bit where the operations are the same: every product and sum is rounded on
// its own (the kernels are compiled with --fmad=false, the harness with -ffp-contract=off)
// except where torch itself fuses them (addcmul is one fused multiply-add on CPU and CUDA:
// fma() here).
//
// Layouts (row-major, contiguous): S-IBP tensors [T, B*N]; S-CROWN coefficients
// [T, B, S, N], relaxation lines [T, B, N]. Neuron parameters are per neuron [N].
#pragma once

#ifndef __CUDACC__
#include <cmath>
#define __host__
#define __device__
#define SNNR_FMA(a, b, c) std::fma((a), (b), (c))
#else
#define SNNR_FMA(a, b, c) fma((a), (b), (c))
#endif

namespace snnr {

// torch.maximum / torch.minimum: NaN-propagating.
template <typename F> __host__ __device__ inline F tmax(F a, F b) {
    return (a != a) ? a : ((b != b) ? b : (a > b ? a : b));
}
template <typename F> __host__ __device__ inline F tmin(F a, F b) {
    return (a != a) ? a : ((b != b) ? b : (a < b ? a : b));
}
template <typename F> __host__ __device__ inline F tabs(F a) { return a < F(0) ? -a : (a == F(0) ? F(0) : a); }

// Gradient share of torch.minimum(a, b) / torch.maximum(a, b) for the first argument:
// 1 where it is chosen, 1/2 at a tie, 0 otherwise (torch's rule).
template <typename F> __host__ __device__ inline F share_min(F a, F b) {
    return a < b ? F(1) : (a == b ? F(0.5) : F(0));
}
template <typename F> __host__ __device__ inline F share_max(F a, F b) {
    return a > b ? F(1) : (a == b ? F(0.5) : F(0));
}

template <typename F> struct Neuron {
    F alpha, th, scale, kappa;
};

// State carried from step t-1 to step t by the S-IBP recurrence of one neuron.
template <typename F> struct IbpState {
    F cl, cu;      // carry interval c_{t-1}
    F v_abs;       // bound on |v|, the membrane after the previous reset
    F m_prev;      // m^l_{t-1} (the point-membrane path uses it)
    F s_prev;      // 1 if surely firing at t-1
};

template <typename F> __host__ __device__ inline IbpState<F> ibp_init() {
    IbpState<F> s;
    s.cl = s.cu = s.v_abs = s.m_prev = s.s_prev = F(0);
    return s;
}

// The charge of LIF.charge (reference arithmetic): scale * sp + carry.
template <typename F>
__host__ __device__ inline F charge(const Neuron<F>& p, bool hard, F m_prev, F s_prev, F sp) {
    F carry = hard ? p.alpha * (m_prev * (F(1) - s_prev)) : p.alpha * m_prev - (p.kappa * p.th) * s_prev;
    return p.scale * sp + carry;
}

// The carry interval after the reset (relaxations.reset_interval / soft_reset_interval).
template <typename F>
__host__ __device__ inline void reset_carry(const Neuron<F>& p, bool hard, F ml, F mu, F& cl, F& cu) {
    const bool fires = ml > p.th, silent = mu < p.th;
    if (hard) {
        F zl = silent ? ml : (fires ? F(0) : tmin(ml, F(0)));
        F zu = silent ? mu : (fires ? F(0) : tmax(tmin(mu, p.th), F(0)));
        cl = p.alpha * zl;
        cu = p.alpha * zu;
    } else {
        F drop = p.kappa * p.th;
        F sl = p.alpha * ml, su = p.alpha * tmin(mu, p.th);
        F fl = p.alpha * tmax(ml, p.th) - drop, fu = p.alpha * mu - drop;
        cl = silent ? p.alpha * ml : (fires ? p.alpha * ml - drop : tmin(sl, fl));
        cu = silent ? p.alpha * mu : (fires ? p.alpha * mu - drop : tmax(su, fu));
    }
}

// The charge of one S-IBP step of one neuron: the membrane interval [ml, mu] at t from the
// spatial input interval [spl, spu] and the carried state, widened by charge_error (eight_u
// is 8 u, rounding.charge_error; err receives the widening), or the network's own float at
// an exact point (fixed input and carry; returned in point).
template <typename F>
__host__ __device__ inline void ibp_charge(const Neuron<F>& p, bool hard, bool exact_points, F eight_u, F spl, F spu,
                                           const IbpState<F>& s, F& ml, F& mu, F& err, bool& point) {
    F sp_abs = tmax(tabs(spl), tabs(spu));
    err = eight_u * ((F(1) + p.scale) * sp_abs + ((F(2) + p.alpha) + p.scale) * s.v_abs);
    point = exact_points && spl == spu && s.cl == s.cu;
    if (exact_points) err = err * (point ? F(0) : F(1));
    ml = (p.scale * spl + s.cl) - err;
    mu = (p.scale * spu + s.cu) + err;
    if (point) ml = mu = charge(p, hard, s.m_prev, s.s_prev, spl);
}

// The state after step t from its final membrane interval (fire and reset).
template <typename F>
__host__ __device__ inline void ibp_advance(const Neuron<F>& p, bool hard, F ml, F mu, IbpState<F>& s) {
    reset_carry(p, hard, ml, mu, s.cl, s.cu);
    s.v_abs = tmax(tabs(ml), tabs(mu)) + (hard ? F(0) : p.th);
    s.m_prev = ml;
    s.s_prev = ml > p.th ? F(1) : F(0);
}

// Gradients of the neuron parameters, accumulated per element.
template <typename F> struct ParamGrad {
    F alpha, th, scale, kappa;
};

// Reverse of reset_carry: gradients gcl, gcu on the carry -> onto ml, mu and parameters
// (torch's rules: clamp passes strictly inside, minimum/maximum split ties in half).
template <typename F>
__host__ __device__ inline void reset_carry_grad(const Neuron<F>& p, bool hard, F ml, F mu, F gcl, F gcu,
                                                 F& gml, F& gmu, ParamGrad<F>& gp) {
    const bool fires = ml > p.th, silent = mu < p.th;
    if (hard) {
        F zl = silent ? ml : (fires ? F(0) : tmin(ml, F(0)));
        F zu = silent ? mu : (fires ? F(0) : tmax(tmin(mu, p.th), F(0)));
        gp.alpha += gcl * zl + gcu * zu;
        F gzl = gcl * p.alpha, gzu = gcu * p.alpha;
        if (silent) {
            gml += gzl;
            gmu += gzu;
        } else if (!fires) {
            if (ml < F(0)) gml += gzl;
            F x = tmin(mu, p.th);
            if (x > F(0)) {
                gmu += gzu * share_min(mu, p.th);
                gp.th += gzu * share_min(p.th, mu);
            }
        }
        return;
    }
    F drop = p.kappa * p.th, gdrop = F(0);
    if (silent || fires) {
        gml += gcl * p.alpha;
        gmu += gcu * p.alpha;
        gp.alpha += gcl * ml + gcu * mu;
        if (!silent) gdrop -= gcl + gcu;  // firing (silent wins where both hold, as in the forward)
    } else {
        F mx = tmax(ml, p.th), mn = tmin(mu, p.th);
        F sl = p.alpha * ml, fl = p.alpha * mx - drop;
        F su = p.alpha * mn, fu = p.alpha * mu - drop;
        F ga = gcl * share_min(sl, fl), gb = gcl * share_min(fl, sl);
        gml += ga * p.alpha;
        gp.alpha += ga * ml + gb * mx;
        F gmx = gb * p.alpha;
        gml += gmx * share_max(ml, p.th);
        gp.th += gmx * share_max(p.th, ml);
        gdrop -= gb;
        F gc = gcu * share_max(su, fu), gd = gcu * share_max(fu, su);
        gp.alpha += gc * mn + gd * mu;
        F gmn = gc * p.alpha;
        gmu += gmn * share_min(mu, p.th) + gd * p.alpha;
        gp.th += gmn * share_min(p.th, mu);
        gdrop -= gd;
    }
    gp.kappa += gdrop * p.th;
    gp.th += gdrop * p.kappa;
}

// One S-CROWN backward step through one LIF neuron for one specification row
// (bounds/lif.py: crown_recurrence, the loop body). lam_s: the coefficient on s_t
// (A_t plus the carry onto s_t); lines fd/fdd/fb/fdb of the fire relaxation at t
// ("upper, lower - upper"); carry_m: the carry onto m_t (0 at the last step).
// am: coefficients given on m_t itself (has_am). Returns lam_m, the coefficient on m_t;
// bias accumulates this neuron's bias terms.
template <typename F>
__host__ __device__ inline F crown_fire(F lam_s, F fd, F fdd, F fb, F fdb, bool first, F carry_m, bool has_am, F am,
                                        F ce, F& bias) {
    F pos = tmax(lam_s, F(0));
    F lam_m = SNNR_FMA(pos, fdd, lam_s * fd);
    bias += lam_s * fb + pos * fdb;
    if (!first) lam_m = lam_m + carry_m;
    if (has_am) lam_m = lam_m + am;  // coefficients straight on the membrane (full S-CROWN)
    bias -= tabs(lam_m) * ce;
    return lam_m;
}

// The carry of lam_m (coefficient on m_t) onto m_{t-1} and s_{t-1} through the reset planes
// at t-1 (hard: premultiplied by alpha, "upper, lower - upper"; soft: ra = alpha, rb = drop).
template <typename F>
__host__ __device__ inline void crown_reset(bool hard, F lam_m, F ra, F rda, F rb, F rdb, F rc, F rdc, F& carry_m,
                                            F& carry_s, F& bias) {
    if (!hard) {
        carry_m = lam_m * ra;
        carry_s = lam_m * rb;
        return;
    }
    F pos = tmax(lam_m, F(0));
    carry_m = SNNR_FMA(pos, rda, lam_m * ra);
    carry_s = SNNR_FMA(pos, rdb, lam_m * rb);
    bias += lam_m * rc + pos * rdc;
}

// ---- one element over all steps (a CUDA thread; one iteration of the host harness) ----

template <typename F>
__host__ __device__ inline Neuron<F> neuron_at(const F* alpha, const F* th, const F* scale, const F* kappa,
                                               long long n) {
    Neuron<F> p;
    p.alpha = alpha[n];
    p.th = th[n];
    p.scale = scale[n];
    p.kappa = kappa[n];
    return p;
}

// S-IBP forward: spl, spu [T, E] (E = B * N) -> ml, mu, err [T, E].
template <typename F>
__host__ __device__ inline void ibp_forward_element(long long e, const F* spl, const F* spu, const F* alpha,
                                                    const F* th, const F* scale, const F* kappa, const F* clip_l,
                                                    const F* clip_u, F* ml, F* mu, F* err, long long T, long long E,
                                                    long long N, int hard, int exact_points, int has_clip,
                                                    F eight_u) {
    Neuron<F> p = neuron_at(alpha, th, scale, kappa, e % N);
    IbpState<F> s = ibp_init<F>();
    for (long long t = 0; t < T; ++t) {
        long long i = t * E + e;
        F l, u;
        bool point;
        ibp_charge(p, hard != 0, exact_points != 0, eight_u, spl[i], spu[i], s, l, u, err[i], point);
        if (has_clip) {  // other sound membrane bounds (full S-CROWN's), before the carry
            l = tmax(l, clip_l[i]);
            u = tmin(u, clip_u[i]);
        }
        ml[i] = l;
        mu[i] = u;
        ibp_advance(p, hard != 0, l, u, s);
    }
}

// S-IBP backward: gradients gml, gmu [T, E] on the forward's ml, mu -> gspl, gspu [T, E],
// gclip_l, gclip_u [T, E] (with a clip) and per-element parameter gradients galpha, gth,
// gscale, gkappa [E] (summed by the caller). The state before each step is rebuilt from the
// forward's ml, mu of the step before, bit for bit as in the forward.
template <typename F>
__host__ __device__ inline void ibp_backward_element(long long e, const F* spl, const F* spu, const F* alpha,
                                                     const F* th, const F* scale, const F* kappa, const F* clip_l,
                                                     const F* clip_u, const F* ml, const F* mu, const F* gml,
                                                     const F* gmu, F* gspl, F* gspu, F* gclip_l, F* gclip_u,
                                                     F* galpha, F* gth, F* gscale, F* gkappa, long long T, long long E,
                                                     long long N, int hard, int exact_points, int has_clip,
                                                     F eight_u) {
    Neuron<F> p = neuron_at(alpha, th, scale, kappa, e % N);
    ParamGrad<F> gp = {F(0), F(0), F(0), F(0)};
    F gcl = F(0), gcu = F(0), gmp = F(0);
    for (long long t = T - 1; t >= 0; --t) {
        long long i = t * E + e;
        F Gml = gml[i] + gmp, Gmu = gmu[i];
        if (t < T - 1) reset_carry_grad(p, hard != 0, ml[i], mu[i], gcl, gcu, Gml, Gmu, gp);
        IbpState<F> s = ibp_init<F>();
        if (t > 0) ibp_advance(p, hard != 0, ml[i - E], mu[i - E], s);
        F l, u, err;
        bool point;
        ibp_charge(p, hard != 0, exact_points != 0, eight_u, spl[i], spu[i], s, l, u, err, point);
        if (has_clip) {  // torch.maximum / minimum: ties split the gradient in half
            gclip_l[i] = Gml * share_max(clip_l[i], l);
            gclip_u[i] = Gmu * share_min(clip_u[i], u);
            Gml = Gml * share_max(l, clip_l[i]);
            Gmu = Gmu * share_min(u, clip_u[i]);
        }
        if (point) {
            F g = Gml + Gmu;
            gspl[i] = g * p.scale;
            gspu[i] = F(0);
            gp.scale += g * spl[i];
            if (hard) {
                gp.alpha += g * (s.m_prev * (F(1) - s.s_prev));
                gmp = (g * p.alpha) * (F(1) - s.s_prev);
            } else {
                gp.alpha += g * s.m_prev;
                gmp = g * p.alpha;
                F gs = -(g * s.s_prev);
                gp.kappa += gs * p.th;
                gp.th += gs * p.kappa;
            }
            gcl = gcu = F(0);
        } else {
            gspl[i] = Gml * p.scale;
            gspu[i] = Gmu * p.scale;
            gp.scale += Gml * spl[i] + Gmu * spu[i];
            gcl = Gml;
            gcu = Gmu;
            gmp = F(0);
        }
    }
    galpha[e] = gp.alpha;
    gth[e] = gp.th;
    gscale[e] = gp.scale;
    gkappa[e] = gp.kappa;
}

// S-CROWN backward through one LIF layer: coefficients A [T, B, S, N] on the spikes (and
// A_m [T, B, S, N] on the membranes, with has_am) ->
// lam [T, B, S, N] on the spatial input (times scale), bias [B, S, N] (summed over N by
// the caller). Fire lines fd, fdd, fb, fdb and reset lines ra, rda, rb, rdb, rc, rdc are
// [T, B, N] (soft reset: ra = alpha, rb = -kappa th, per neuron [N], rest unused);
// scale [N]; ce [T, B, N] the charge errors (zeros when absent).
template <typename F>
__host__ __device__ inline void crown_backward_element(long long e, const F* A, const F* A_m, const F* fd,
                                                       const F* fdd, const F* fb, const F* fdb, const F* ra,
                                                       const F* rda, const F* rb, const F* rdb, const F* rc,
                                                       const F* rdc, const F* scale, const F* ce, F* lam, F* bias,
                                                       F* lam_s_out, F* lam_m_out, long long T, long long B,
                                                       long long S, long long N, int hard, int unit_scale, int has_am,
                                                       int save) {
    long long E = B * S * N;
    long long n = e % N, b = e / (S * N);
    F acc = F(0), carry_m = F(0), carry_s = F(0);
    for (long long t = T - 1; t >= 0; --t) {
        long long r = (t * B + b) * N + n;
        F a = A[t * E + e];
        F lam_s = t == T - 1 ? a : a + carry_s;
        F am = has_am ? A_m[t * E + e] : F(0);
        F lam_m = crown_fire(lam_s, fd[r], fdd[r], fb[r], fdb[r], t == T - 1, carry_m, has_am != 0, am, ce[r], acc);
        lam[t * E + e] = unit_scale ? lam_m : lam_m * scale[n];
        if (save) {  // for the gradient (crown_grad_element)
            lam_s_out[t * E + e] = lam_s;
            lam_m_out[t * E + e] = lam_m;
        }
        if (t == 0) break;
        long long q = hard ? r - B * N : n;  // the reset planes at t - 1 (soft: per neuron)
        crown_reset(hard != 0, lam_m, ra[q], rda[q], rb[q], rdb[q], rc[q], rdc[q], carry_m, carry_s, acc);
    }
    bias[e] = acc;
}

// Gradient of crown_backward_element for one neuron n of sample b (e = b * N + n) and every
// row s, so that the gradients of the lines (shared by the rows) are summed over s in this
// thread, in a fixed order (no atomics). lam_s, lam_m: the forward's saved coefficients;
// glam [T, B, S, N] and gbias [B, S, N]: the incoming gradients. Writes gA (and gA_m) and
// adds to the line gradients gfd.. [T, B, N] and (hard reset) gra.. [T, B, N], which start at
// zero; gscale, galpha, gdrop [B * N] (soft reset: the per-neuron alpha and drop) are per
// thread, summed over the batch by the caller. The charge-error term has no gradient (the
// torch code detaches it).
template <typename F>
__host__ __device__ inline void crown_grad_element(long long e, const F* fd, const F* fdd, const F* fb, const F* fdb,
                                                   const F* ra, const F* rda, const F* rb, const F* rdb, const F* rc,
                                                   const F* rdc, const F* scale, const F* lam_s, const F* lam_m,
                                                   const F* glam, const F* gbias, F* gA, F* gA_m, F* gfd, F* gfdd,
                                                   F* gfb,
                                                   F* gfdb, F* gra, F* grda, F* grb, F* grdb, F* grc, F* grdc,
                                                   F* gscale, F* galpha, F* gdrop, long long T, long long B,
                                                   long long S, long long N, int hard, int unit_scale,
                                                   int has_am) {
    long long n = e % N, b = e / N, E = B * S * N;
    F gsc = F(0), gal = F(0), gdr = F(0);
    for (long long s = 0; s < S; ++s) {
        long long es = (b * S + s) * N + n;
        F gb = gbias[es], gcm = F(0), gcs = F(0);
        for (long long t = 0; t < T; ++t) {
            long long r = (t * B + b) * N + n, i = t * E + es;
            F ls = lam_s[i], lm = lam_m[i], go = glam[i];
            F glm = unit_scale ? go : go * scale[n];
            if (!unit_scale) gsc += go * lm;
            if (t > 0) {  // lam_m made the carry onto step t - 1 (and, hard reset, a bias term)
                if (hard) {
                    long long q = r - B * N;
                    F pm = tmax(lm, F(0));
                    F gpm = gcm * rda[q] + gcs * rdb[q] + gb * rdc[q];
                    glm += gcm * ra[q] + gcs * rb[q] + gb * rc[q];
                    if (lm > F(0)) glm += gpm;
                    gra[q] += gcm * lm;
                    grda[q] += gcm * pm;
                    grb[q] += gcs * lm;
                    grdb[q] += gcs * pm;
                    grc[q] += gb * lm;
                    grdc[q] += gb * pm;
                } else {
                    glm += gcm * ra[n] + gcs * rb[n];
                    gal += gcm * lm;
                    gdr += gcs * lm;
                }
            }
            if (has_am) gA_m[i] = glm;
            F pos = tmax(ls, F(0));
            F gls = glm * fd[r] + gb * fb[r];
            F gpos = glm * fdd[r] + gb * fdb[r];
            gfd[r] += glm * ls;
            gfdd[r] += glm * pos;
            gfb[r] += gb * ls;
            gfdb[r] += gb * pos;
            if (ls > F(0)) gls += gpos;
            gA[i] = gls;
            gcm = glm;  // lam_m_t = ... + carry_m_t and lam_s_t = A_t + carry_s_t
            gcs = gls;
        }
    }
    gscale[e] = gsc;
    galpha[e] = gal;
    gdrop[e] = gdr;
}

}  // namespace snnr

// ---- the entry points, one definition for both builds ----
// lif_kernels.cu defines SNNR_ENTRY as `extern "C" __global__ void` and SNNR_FOR_EACH(e, n)
// as "this thread's element, if it is one of the n"; host_harness.cpp as `extern "C" void`
// and a loop over all n elements. Each entry point exists for float (_f32) and double (_f64).
#define SNNR_ENTRY_POINTS(F, SUFFIX) \
    SNNR_ENTRY ibp_forward_##SUFFIX(const F* spl, const F* spu, const F* alpha, const F* th, const F* scale,       \
            const F* kappa, const F* clip_l, const F* clip_u, F* ml, F* mu, F* err, long long T, long long E,      \
            long long N, int hard, int exact_points, int has_clip, F eight_u) {                                    \
        SNNR_FOR_EACH(e, E)                                                                                        \
            snnr::ibp_forward_element<F>(e, spl, spu, alpha, th, scale, kappa, clip_l, clip_u, ml, mu, err, T, E,  \
                N, hard, exact_points, has_clip, eight_u);                                                         \
    }                                                                                                              \
    SNNR_ENTRY ibp_backward_##SUFFIX(const F* spl, const F* spu, const F* alpha, const F* th, const F* scale,      \
            const F* kappa, const F* clip_l, const F* clip_u, const F* ml, const F* mu, const F* gml,              \
            const F* gmu, F* gspl, F* gspu, F* gclip_l, F* gclip_u, F* galpha, F* gth, F* gscale, F* gkappa,       \
            long long T, long long E, long long N, int hard, int exact_points, int has_clip, F eight_u) {          \
        SNNR_FOR_EACH(e, E)                                                                                        \
            snnr::ibp_backward_element<F>(e, spl, spu, alpha, th, scale, kappa, clip_l, clip_u, ml, mu, gml, gmu,  \
                gspl, gspu, gclip_l, gclip_u, galpha, gth, gscale, gkappa, T, E, N, hard, exact_points, has_clip,  \
                eight_u);                                                                                          \
    }                                                                                                              \
    SNNR_ENTRY crown_backward_##SUFFIX(const F* A, const F* A_m, const F* fd, const F* fdd, const F* fb,           \
            const F* fdb, const F* ra, const F* rda, const F* rb, const F* rdb, const F* rc, const F* rdc,         \
            const F* scale, const F* ce, F* lam, F* bias, F* lam_s_out, F* lam_m_out, long long T, long long B,    \
            long long S, long long N, int hard, int unit_scale, int has_am, int save) {                            \
        SNNR_FOR_EACH(e, B * S * N)                                                                                \
            snnr::crown_backward_element<F>(e, A, A_m, fd, fdd, fb, fdb, ra, rda, rb, rdb, rc, rdc, scale, ce,     \
                lam, bias, lam_s_out, lam_m_out, T, B, S, N, hard, unit_scale, has_am, save);                      \
    }                                                                                                              \
    SNNR_ENTRY crown_grad_##SUFFIX(const F* fd, const F* fdd, const F* fb, const F* fdb, const F* ra,              \
            const F* rda, const F* rb, const F* rdb, const F* rc, const F* rdc, const F* scale, const F* lam_s,    \
            const F* lam_m, const F* glam, const F* gbias, F* gA, F* gA_m, F* gfd, F* gfdd, F* gfb, F* gfdb,       \
            F* gra, F* grda, F* grb, F* grdb, F* grc, F* grdc, F* gscale, F* galpha, F* gdrop, long long T,        \
            long long B, long long S, long long N, int hard, int unit_scale, int has_am) {                         \
        SNNR_FOR_EACH(e, B * N)                                                                                    \
            snnr::crown_grad_element<F>(e, fd, fdd, fb, fdb, ra, rda, rb, rdb, rc, rdc, scale, lam_s, lam_m, glam, \
                gbias, gA, gA_m, gfd, gfdd, gfb, gfdb, gra, grda, grb, grdb, grc, grdc, gscale, galpha, gdrop, T,  \
                B, S, N, hard, unit_scale, has_am);                                                                \
    }                                                                                                              \
