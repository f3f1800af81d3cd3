// ReLU forward and backward as single elementwise kernels, and ReLU fused with the addition
// before it (the join of a residual block).
//
// On CuPy, `gy * (y > 0)` is two kernels and a temporary boolean array; the backward kernel here
// reads gy and y once and writes gx once. (ReLU right after BatchNorm is fused into the
// BatchNorm kernels instead: see batchnorm.cu's fuse_relu.)
//
// NumPy references: relu_forward / relu_backward in tests/cuda_reference.py.
#include "common.cuh"

// y = max(x, 0); NaN stays NaN (as numpy.maximum), so a diverging run still shows.
template <typename T>
__global__ void relu_forward(const T* x, T* y, int n) {
    MINIRES_GRID_STRIDE_LOOP(i, n) {
        const T v = x[i];
        y[i] = v < T(0) ? T(0) : v;
    }
}

// gx = gy where the forward output y is positive, else 0.
template <typename T>
__global__ void relu_backward(const T* gy, const T* y, T* gx, int n) {
    MINIRES_GRID_STRIDE_LOOP(i, n) {
        gx[i] = y[i] > T(0) ? gy[i] : T(0);
    }
}

// y = max(a + b, 0): the residual join in one pass (an addition kernel and a ReLU kernel would
// write and re-read the sum). Its gradient with respect to a and to b is relu_backward's.
template <typename T>
__global__ void add_relu_forward(const T* a, const T* b, T* y, int n) {
    MINIRES_GRID_STRIDE_LOOP(i, n) {
        const T v = a[i] + b[i];
        y[i] = v < T(0) ? T(0) : v;
    }
}
