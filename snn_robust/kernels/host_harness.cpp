// Host harness: the CUDA kernels' per-element code (lif_ops.cuh) looped over the elements
// on the CPU, as a shared library for ctypes. The tests compare its output bit for bit
// with the torch reference, so the kernels' arithmetic is checked on machines without a
// GPU. Build: g++ -O2 -ffp-contract=off -shared -fPIC host_harness.cpp -o harness.so
// (snn_robust.kernels.host.build_harness does this).
#include "lif_ops.cuh"

#define SNNR_HOST(F, SUFFIX) \
    extern "C" void ibp_forward_##SUFFIX(const F* spl, const F* spu, const F* alpha, const F* th, const F* scale,  \
            const F* kappa, const F* clip_l, const F* clip_u, F* ml, F* mu, F* err, long long T, long long E,      \
            long long N, int hard, int exact_points, int has_clip, F eight_u) {                                    \
        for (long long e = 0; e < E; ++e)                                                                          \
            snnr::ibp_forward_element<F>(e, spl, spu, alpha, th, scale, kappa, clip_l, clip_u, ml, mu, err, T, E,  \
                N, hard, exact_points, has_clip, eight_u);                                                         \
    }                                                                                                              \
    extern "C" void ibp_backward_##SUFFIX(const F* spl, const F* spu, const F* alpha, const F* th, const F* scale, \
            const F* kappa, const F* clip_l, const F* clip_u, const F* ml, const F* mu, const F* gml,              \
            const F* gmu, F* gspl, F* gspu, F* gclip_l, F* gclip_u, F* galpha, F* gth, F* gscale, F* gkappa,       \
            long long T, long long E, long long N, int hard, int exact_points, int has_clip, F eight_u) {          \
        for (long long e = 0; e < E; ++e)                                                                          \
            snnr::ibp_backward_element<F>(e, spl, spu, alpha, th, scale, kappa, clip_l, clip_u, ml, mu, gml, gmu,  \
                gspl, gspu, gclip_l, gclip_u, galpha, gth, gscale, gkappa, T, E, N, hard, exact_points, has_clip,  \
                eight_u);                                                                                          \
    }                                                                                                              \
    extern "C" void crown_backward_##SUFFIX(const F* A, const F* A_m, const F* fd, const F* fdd, const F* fb,      \
            const F* fdb, const F* ra, const F* rda, const F* rb, const F* rdb, const F* rc, const F* rdc,         \
            const F* scale, const F* ce, F* lam, F* bias, F* lam_s_out, F* lam_m_out, long long T, long long B,    \
            long long S, long long N, int hard, int unit_scale, int has_am, int save) {                            \
        for (long long e = 0; e < B * S * N; ++e)                                                                  \
            snnr::crown_backward_element<F>(e, A, A_m, fd, fdd, fb, fdb, ra, rda, rb, rdb, rc, rdc, scale, ce,     \
                lam, bias, lam_s_out, lam_m_out, T, B, S, N, hard, unit_scale, has_am, save);                      \
    }                                                                                                              \
    extern "C" void crown_grad_##SUFFIX(const F* fd, const F* fdd, const F* fb, const F* fdb, const F* ra,         \
            const F* rda, const F* rb, const F* rdb, const F* rc, const F* rdc, const F* scale, const F* lam_s,    \
            const F* lam_m, const F* glam, const F* gbias, F* gA, F* gA_m, F* gfd, F* gfdd, F* gfb, F* gfdb,       \
            F* gra, F* grda, F* grb, F* grdb, F* grc, F* grdc, F* gscale, F* galpha, F* gdrop, long long T,        \
            long long B, long long S, long long N, int hard, int unit_scale, int has_am) {                         \
        for (long long e = 0; e < B * N; ++e)                                                                      \
            snnr::crown_grad_element<F>(e, fd, fdd, fb, fdb, ra, rda, rb, rdb, rc, rdc, scale, lam_s, lam_m, glam, \
                gbias, gA, gA_m, gfd, gfdd, gfb, gfdb, gra, grda, grb, grdb, grc, grdc, gscale, galpha, gdrop, T,  \
                B, S, N, hard, unit_scale, has_am);                                                                \
    }                                                                                                              \

SNNR_HOST(float, f32)
SNNR_HOST(double, f64)
