// ReLU forward and backward as single elementwise kernels.
//
// On CuPy, `gy * (y > 0)` is two kernels and a temporary boolean array; the backward kernel here
// reads gy and y once and writes gx once. (ReLU right after BatchNorm is fused into the
// BatchNorm kernels instead: see batchnorm.cu's fuse_relu.)
//
// NumPy references: minires.kernels.cuda.reference.relu_forward / relu_backward.
#include "common.cuh"

// y = max(x, 0); NaN stays NaN (as numpy.maximum), so a diverging run still shows.
template <typename T>
__device__ void relu_forward(const T* x, T* y, int n) {
    MINIRES_GRID_STRIDE_LOOP(i, n) {
        const T v = x[i];
        y[i] = v < T(0) ? T(0) : v;
    }
}

// gx = gy where the forward output y is positive, else 0.
template <typename T>
__device__ void relu_backward(const T* gy, const T* y, T* gx, int n) {
    MINIRES_GRID_STRIDE_LOOP(i, n) {
        gx[i] = y[i] > T(0) ? gy[i] : T(0);
    }
}

extern "C" __global__ void relu_forward_f32(const float* x, float* y, int n) {
    relu_forward<float>(x, y, n);
}

extern "C" __global__ void relu_forward_f64(const double* x, double* y, int n) {
    relu_forward<double>(x, y, n);
}

extern "C" __global__ void relu_backward_f32(const float* gy, const float* y, float* gx, int n) {
    relu_backward<float>(gy, y, gx, n);
}

extern "C" __global__ void relu_backward_f64(const double* gy, const double* y, double* gx,
                                             int n) {
    relu_backward<double>(gy, y, gx, n);
}
