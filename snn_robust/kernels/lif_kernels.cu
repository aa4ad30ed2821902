// CUDA kernels for the LIF bound recurrences over time: one thread per neuron (S-IBP) or
// per neuron and specification row (S-CROWN), looping over the T steps in registers.
// All arithmetic and the entry points' signatures are in lif_ops.cuh (shared with the host
// harness host_harness.cpp); this file only maps a thread to its element. Loaded by
// snn_robust/kernels/_cupy.py with cupy.RawModule(options=("--fmad=false", ...)).
#include "lif_ops.cuh"

#define SNNR_ENTRY extern "C" __global__ void
// one element per thread (the loop runs at most once)
#define SNNR_FOR_EACH(e, n) for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < (n); e = (n))

SNNR_ENTRY_POINTS(float, f32)
SNNR_ENTRY_POINTS(double, f64)
