// Inverted dropout with a counter-based mask: nothing random is drawn on the host, nothing is
// copied to the device, and the backward pass recomputes the mask instead of storing it.
//
// Element i of a call is kept when the top 31 bits of mix64(base + (i + 1) * GOLDEN) are at least
// `threshold`, with base = mix64(key ^ mix64(call)) (a SplitMix64 stream per call; constants and
// reasoning in kernels/interface.py). The CPU kernel (kernels/cpu/dropout.py) computes the same
// bits, so its masks are this kernel's exactly.
//
// The forward kernel reads the layer's state [key, calls] and copies it into `stream`, which the
// backward kernel reads; the wrapper then advances calls on the device. Nothing here is a
// per-step kernel argument, so a captured CUDA graph still draws a new mask at every replay.
//
// NumPy reference: dropout_forward / dropout_backward in tests/cuda_reference.py.
#include "common.cuh"

#define MINIRES_GOLDEN 0x9E3779B97F4A7C15ULL

// SplitMix64's finaliser: a bijection of 64-bit integers that mixes every input bit.
__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

__device__ __forceinline__ unsigned long long stream_base(const long long* stream) {
    return mix64((unsigned long long)stream[0] ^ mix64((unsigned long long)stream[1]));
}

// Whether element i of the stream starting at `base` is kept.
__device__ __forceinline__ bool kept(unsigned long long base, int i, int threshold) {
    const unsigned long long bits = mix64(base + ((unsigned long long)i + 1ULL) * MINIRES_GOLDEN);
    return (int)(bits >> 33) >= threshold;
}

// y = x * scale where kept, else 0; stream = state (for the backward pass).
template <typename T>
__global__ void dropout_forward(const T* x, const long long* state, long long* stream, T* y,
                                int threshold, T scale, int n) {
    const unsigned long long base = stream_base(state);
    if (blockIdx.x == 0 && threadIdx.x < 2) {
        stream[threadIdx.x] = state[threadIdx.x];
    }
    MINIRES_GRID_STRIDE_LOOP(i, n) {
        y[i] = kept(base, i, threshold) ? x[i] * scale : T(0);
    }
}

// gx = gy * scale where the forward pass kept the element, else 0.
template <typename T>
__global__ void dropout_backward(const T* gy, const long long* stream, T* gx, int threshold,
                                 T scale, int n) {
    const unsigned long long base = stream_base(stream);
    MINIRES_GRID_STRIDE_LOOP(i, n) {
        gx[i] = kept(base, i, threshold) ? gy[i] * scale : T(0);
    }
}
