// Softmax cross-entropy of logits (N, K) against integer labels (N,).
//
// The forward pass writes, per row, log_z = log(sum_k exp(logits[k])) and the row's loss
// log_z - logits[label]; the mean over rows is left to the caller. The backward pass recomputes
// softmax = exp(logits - log_z) from the saved log_z instead of storing an (N, K) probability
// matrix. An out-of-range label gives a NaN loss (and NaN gradients) rather than a host-side check,
// which would synchronise the device on every step.
//
// NumPy references: softmax_cross_entropy_forward / _backward in tests/cuda_reference.py (which
// agree with the CPU kernels).
#include "common.cuh"

// One warp per row (blockDim.x a multiple of 32): max, then the sum of exp(logit - max) in double.
template <typename T>
__global__ void softmax_ce_forward(const T* logits, const long long* labels, T* loss, T* log_z,
                                   int N, int K) {
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (row >= N) {
        return;  // uniform across the warp: all 32 lanes share the row
    }
    const T* z = logits + (long long)row * K;
    T m = z[0];
    for (int k = lane; k < K; k += 32) {
        m = z[k] > m ? z[k] : m;
    }
    m = warp_max(m);
    double s = 0.0;
    for (int k = lane; k < K; k += 32) {
        s += exp((double)(z[k] - m));
    }
    s = warp_sum(s);
    if (lane == 0) {
        const double lz = (double)m + log(s);
        const long long label = labels[row];
        log_z[row] = (T)lz;
        loss[row] = (label >= 0 && label < K) ? (T)(lz - (double)z[label]) : quiet_nan<T>();
    }
}

// Elementwise: gx[n, k] = (softmax[n, k] - [k == label[n]]) * gy / N, with gy a device scalar
// (read on the device, so the host never waits for it).
template <typename T>
__global__ void softmax_ce_backward(const T* logits, const long long* labels, const T* log_z,
                                    const T* gy, T* gx, int N, int K) {
    const int total = N * K;
    const T scale = gy[0] / (T)N;
    MINIRES_GRID_STRIDE_LOOP(i, total) {
        const int row = i / K;
        const int k = i - row * K;
        const long long label = labels[row];
        if (label < 0 || label >= K) {
            gx[i] = quiet_nan<T>();
            continue;
        }
        const T p = (T)exp((double)logits[i] - (double)log_z[row]);
        gx[i] = (p - (k == label ? T(1) : T(0))) * scale;
    }
}
