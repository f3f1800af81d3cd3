// Device helpers shared by minires' CUDA kernels.
//
// The loader pastes this file in place of `#include "common.cuh"` before handing a source to
// NVRTC, so the compiler sees one self-contained translation unit. Nothing here includes a
// header: NVRTC (what CuPy compiles with) has no host headers, and built-ins are all we need.
//
// Every kernel is a `template <typename T> __global__` function; the loader compiles each source
// with the name expressions `kernel<float>` and `kernel<double>`, so NVRTC instantiates both and
// tells CuPy their mangled names.
#ifndef MINIRES_COMMON_CUH
#define MINIRES_COMMON_CUH

// Grid-stride loop over [0, n): correct for any grid size, so the host may cap the grid.
// 32-bit indices: the Python wrappers refuse arrays so large that i + stride could overflow.
#define MINIRES_GRID_STRIDE_LOOP(i, n) \
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += blockDim.x * gridDim.x)

// A position (row, col) of a grid with `cols` columns, walked in steps of `step` flat positions.
// The step is split once into whole rows and a remainder, so each advance is two additions and
// one comparison instead of the division and modulo that `i / cols`, `i % cols` would cost per
// element. Start at flat position `start` (any value >= 0).
struct GridCursor {
    int row, col;
    int drow, dcol, cols;
    __device__ GridCursor(int start, int step, int cols_) : cols(cols_) {
        row = start / cols_;
        col = start - row * cols_;
        drow = step / cols_;
        dcol = step - drow * cols_;
    }
    __device__ __forceinline__ void advance() {
        col += dcol;
        row += drow;
        if (col >= cols) {
            col -= cols;
            ++row;
        }
    }
};

// q = h / s when s divides h >= 0 (returns whether it does), without a division for the
// strides 1 and 2 that the networks use.
__device__ __forceinline__ bool divide_exactly(int h, int s, int* q) {
    if (s == 1) {
        *q = h;
        return true;
    }
    if (s == 2) {
        *q = h >> 1;
        return (h & 1) == 0;
    }
    *q = h / s;
    return *q * s == h;
}

// A quiet NaN in T, written where an input is invalid (an out-of-range label) so the error shows
// in the result instead of forcing a host synchronisation to check.
template <typename T> __device__ __forceinline__ T quiet_nan();
template <> __device__ __forceinline__ float quiet_nan<float>() {
    return __int_as_float(0x7fc00000);
}
template <> __device__ __forceinline__ double quiet_nan<double>() {
    return __longlong_as_double(0x7ff8000000000000LL);
}

// Sum of one double per thread over the whole block, returned to every thread.
//
// `shared` must hold 32 doubles. blockDim.x must be a multiple of 32 and at most 1024. The
// summation order depends only on blockDim.x, never on timing, so results are reproducible run
// to run. Ends with a barrier so the caller may call it again with the same `shared`.
__device__ __forceinline__ double block_sum(double v, double* shared) {
    const unsigned lane = threadIdx.x & 31u;
    const unsigned warp = threadIdx.x >> 5;
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_down_sync(0xffffffffu, v, offset);
    }
    if (lane == 0) {
        shared[warp] = v;
    }
    __syncthreads();
    if (warp == 0) {
        const unsigned warps = blockDim.x >> 5;
        v = lane < warps ? shared[lane] : 0.0;
        for (int offset = 16; offset > 0; offset >>= 1) {
            v += __shfl_down_sync(0xffffffffu, v, offset);
        }
        if (lane == 0) {
            shared[0] = v;
        }
    }
    __syncthreads();
    const double total = shared[0];
    __syncthreads();
    return total;
}

// Largest value over a warp, returned to every lane.
template <typename T> __device__ __forceinline__ T warp_max(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        const T other = __shfl_xor_sync(0xffffffffu, v, offset);
        v = other > v ? other : v;
    }
    return v;
}

// Sum over a warp, returned to every lane (butterfly order: the same on every run).
__device__ __forceinline__ double warp_sum(double v) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    }
    return v;
}

#endif  // MINIRES_COMMON_CUH
