// CUDA kernels for the LIF bound recurrences over time: one thread per neuron (S-IBP) or
// per neuron and specification row (S-CROWN), looping over the T steps in registers.
// All arithmetic is in lif_ops.cuh (the *_element functions, shared with the host harness
// host_harness.cpp); these wrappers only map a thread to its element. Loaded by
// snn_robust/kernels/_cupy.py with cupy.RawModule(options=("--fmad=false", ...)).
#include "lif_ops.cuh"

#define SNNR_INDEX (long long)blockIdx.x * blockDim.x + threadIdx.x

#define SNNR_KERNELS(F, SUFFIX) \
    extern "C" __global__ void ibp_forward_##SUFFIX(const F* spl, const F* spu, const F* alpha, const F* th,       \
            const F* scale, const F* kappa, const F* clip_l, const F* clip_u, F* ml, F* mu, F* err, long long T,   \
            long long E, long long N, int hard, int exact_points, int has_clip, F eight_u) {                       \
        long long e = SNNR_INDEX;                                                                                  \
        if (e < E)                                                                                                 \
            snnr::ibp_forward_element<F>(e, spl, spu, alpha, th, scale, kappa, clip_l, clip_u, ml, mu, err, T, E,  \
                N, hard, exact_points, has_clip, eight_u);                                                         \
    }                                                                                                              \
    extern "C" __global__ void ibp_backward_##SUFFIX(const F* spl, const F* spu, const F* alpha, const F* th,      \
            const F* scale, const F* kappa, const F* clip_l, const F* clip_u, const F* ml, const F* mu,            \
            const F* gml, const F* gmu, F* gspl, F* gspu, F* gclip_l, F* gclip_u, F* galpha, F* gth, F* gscale,    \
            F* gkappa, long long T, long long E, long long N, int hard, int exact_points, int has_clip,            \
            F eight_u) {                                                                                           \
        long long e = SNNR_INDEX;                                                                                  \
        if (e < E)                                                                                                 \
            snnr::ibp_backward_element<F>(e, spl, spu, alpha, th, scale, kappa, clip_l, clip_u, ml, mu, gml, gmu,  \
                gspl, gspu, gclip_l, gclip_u, galpha, gth, gscale, gkappa, T, E, N, hard, exact_points, has_clip,  \
                eight_u);                                                                                          \
    }                                                                                                              \
    extern "C" __global__ void crown_backward_##SUFFIX(const F* A, const F* A_m, const F* fd, const F* fdd,        \
            const F* fb, const F* fdb, const F* ra, const F* rda, const F* rb, const F* rdb, const F* rc,          \
            const F* rdc, const F* scale, const F* ce, F* lam, F* bias, F* lam_s_out, F* lam_m_out, long long T,   \
            long long B, long long S, long long N, int hard, int unit_scale, int has_am, int save) {               \
        long long e = SNNR_INDEX;                                                                                  \
        if (e < B * S * N)                                                                                         \
            snnr::crown_backward_element<F>(e, A, A_m, fd, fdd, fb, fdb, ra, rda, rb, rdb, rc, rdc, scale, ce,     \
                lam, bias, lam_s_out, lam_m_out, T, B, S, N, hard, unit_scale, has_am, save);                      \
    }                                                                                                              \
    extern "C" __global__ void crown_grad_##SUFFIX(const F* fd, const F* fdd, const F* fb, const F* fdb,           \
            const F* ra, const F* rda, const F* rb, const F* rdb, const F* rc, const F* rdc, const F* scale,       \
            const F* lam_s, const F* lam_m, const F* glam, const F* gbias, F* gA, F* gA_m, F* gfd, F* gfdd,        \
            F* gfb, F* gfdb, F* gra, F* grda, F* grb, F* grdb, F* grc, F* grdc, F* gscale, F* galpha, F* gdrop,    \
            long long T, long long B, long long S, long long N, int hard, int unit_scale, int has_am) {            \
        long long e = SNNR_INDEX;                                                                                  \
        if (e < B * N)                                                                                             \
            snnr::crown_grad_element<F>(e, fd, fdd, fb, fdb, ra, rda, rb, rdb, rc, rdc, scale, lam_s, lam_m, glam, \
                gbias, gA, gA_m, gfd, gfdd, gfb, gfdb, gra, grda, grb, grdb, grc, grdc, gscale, galpha, gdrop, T,  \
                B, S, N, hard, unit_scale, has_am);                                                                \
    }                                                                                                              \

SNNR_KERNELS(float, f32)
SNNR_KERNELS(double, f64)
