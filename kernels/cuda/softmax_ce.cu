// Softmax cross-entropy of logits (N, K) against integer labels (N,), and its mean over rows.
//
// The forward pass is ONE block: each warp takes rows warp, warp + warps, ... and writes, per
// row, log_z = log(sum_k exp(logits[k])) in double; the block then sums the rows' losses
// log_z - logits[label] in a fixed order (per warp in row order, then block_sum over warps) and
// writes their mean. So the mean needs no second launch and is the same on every run.
//
// log_z stays double because it is subtracted from a logit in the backward pass: for logits
// near 1000 a float log_z is only good to about 3e-5 (half of float's spacing there), and
// exp(logit - log_z) would carry that error into every probability (2.7e-5 relative to the
// largest gradient, against 1e-7 in double; test_cuda_emulated.py measures both).
//
// The backward pass recomputes softmax = exp(logits - log_z) from the saved log_z instead of
// storing an (N, K) probability matrix. An out-of-range label gives a NaN loss (and NaN
// gradients in its row) rather than a host-side check, which would synchronise the device on
// every step.
//
// NumPy references: softmax_cross_entropy_forward / _backward in tests/cuda_reference.py (which
// agree with the CPU kernels).
#include "common.cuh"

// One block; blockDim.x a multiple of 32, at most 1024. loss: one T; log_z: N doubles.
template <typename T>
__global__ void softmax_ce_forward(const T* logits, const long long* labels, T* loss,
                                   double* log_z, int N, int K) {
    __shared__ double warp_partials[32];
    const int lane = threadIdx.x & 31;
    const int warps = blockDim.x >> 5;
    double row_losses = 0.0;  // lane 0's running sum over this warp's rows
    for (int row = threadIdx.x >> 5; row < N; row += warps) {
        const T* z = logits + (long long)row * K;
        T m = z[0];
        for (int k = lane; k < K; k += 32) {
            m = z[k] > m ? z[k] : m;
        }
        m = warp_max(m);
        double s = 0.0;
        for (int k = lane; k < K; k += 32) {
            s += exp((double)z[k] - (double)m);
        }
        s = warp_sum(s);
        if (lane == 0) {
            const double lz = (double)m + log(s);
            const long long label = labels[row];
            log_z[row] = lz;
            row_losses += (label >= 0 && label < K) ? lz - (double)z[label]
                                                    : quiet_nan<double>();
        }
    }
    const double total = block_sum(lane == 0 ? row_losses : 0.0, warp_partials);
    if (threadIdx.x == 0) {
        loss[0] = (T)(total / N);
    }
}

// Elementwise: gx[n, k] = (softmax[n, k] - [k == label[n]]) * gy / N in double, rounded once to
// T; gy is a device scalar (read on the device, so the host never waits for it).
template <typename T>
__global__ void softmax_ce_backward(const T* logits, const long long* labels,
                                    const double* log_z, const T* gy, T* gx, int N, int K) {
    const int total = N * K;
    const double scale = (double)gy[0] / N;
    MINIRES_GRID_STRIDE_LOOP(i, total) {
        const int row = i / K;
        const int k = i - row * K;
        const long long label = labels[row];
        if (label < 0 || label >= K) {
            gx[i] = quiet_nan<T>();
            continue;
        }
        const double p = exp((double)logits[i] - log_z[row]);
        gx[i] = (T)((p - (k == label ? 1.0 : 0.0)) * scale);
    }
}
