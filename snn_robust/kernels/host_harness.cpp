// Host harness: the CUDA kernels' per-element code (lif_ops.cuh) looped over the elements
// on the CPU, as a shared library for ctypes. The tests compare its output bit for bit
// with the torch reference, so the kernels' arithmetic is checked on machines without a
// GPU. Build: g++ -O2 -ffp-contract=off -shared -fPIC host_harness.cpp -o harness.so
// (snn_robust.kernels.host.HostHarness does this).
#include "lif_ops.cuh"

#define SNNR_ENTRY extern "C" void
#define SNNR_FOR_EACH(e, n) for (long long e = 0; e < (n); ++e)

SNNR_ENTRY_POINTS(float, f32)
SNNR_ENTRY_POINTS(double, f64)
