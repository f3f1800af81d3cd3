// Batch normalisation over every axis but the channel axis (PyTorch's conventions), with an
// optional fused ReLU.
//
// x is viewed as (N, C, S) with S = H*W (S = 1 for (N, C) inputs); a channel has count = N*S
// values. Training normalises with the batch mean and the biased variance and updates the
// running statistics with the unbiased one; evaluation normalises with the running statistics.
// Reductions accumulate in double for float and double inputs alike, in two passes (mean, then
// squared deviations), so the variance does not suffer from cancellation.
//
// NumPy references: batch_norm_forward / batch_norm_backward in tests/cuda_reference.py (which
// agree with the CPU kernels).
#include "common.cuh"

// Element j of channel c's (N*S) values, for j = n*S + s.
__device__ __forceinline__ int channel_index(int j, int c, int C, int S) {
    const int n = j / S;
    return (n * C + c) * S + (j - n * S);
}

// Training forward, one block per channel (grid = C).
// Writes y, the batch mean and 1/sqrt(var + eps) of the channel, and, when update_running is
// non-zero, running = (1 - momentum) * running + momentum * batch statistic.
template <typename T>
__global__ void bn_forward_train(const T* x, const T* gamma, const T* beta, T* y, T* mean_out,
                                 T* inv_std_out, T* running_mean, T* running_var, int N, int C,
                                 int S, T eps, T momentum, int update_running, int fuse_relu) {
    __shared__ double shared[32];
    const int c = blockIdx.x;
    const int count = N * S;

    double sum = 0.0;
    for (int j = threadIdx.x; j < count; j += blockDim.x) {
        sum += (double)x[channel_index(j, c, C, S)];
    }
    const double mean = block_sum(sum, shared) / count;

    double squares = 0.0;
    for (int j = threadIdx.x; j < count; j += blockDim.x) {
        const double d = (double)x[channel_index(j, c, C, S)] - mean;
        squares += d * d;
    }
    const double var = block_sum(squares, shared) / count;  // biased: normalises the batch
    const double inv_std = 1.0 / sqrt(var + (double)eps);

    const double scale = (double)gamma[c] * inv_std;
    const double shift = (double)beta[c];
    for (int j = threadIdx.x; j < count; j += blockDim.x) {
        const int i = channel_index(j, c, C, S);
        T v = (T)(((double)x[i] - mean) * scale + shift);
        if (fuse_relu && v < T(0)) {  // NaN passes through, as numpy.maximum
            v = T(0);
        }
        y[i] = v;
    }

    if (threadIdx.x == 0) {
        mean_out[c] = (T)mean;
        inv_std_out[c] = (T)inv_std;
        if (update_running) {
            const double m = (double)momentum;
            const double unbiased = var * count / (count > 1 ? count - 1 : 1);
            running_mean[c] = (T)((1.0 - m) * (double)running_mean[c] + m * mean);
            running_var[c] = (T)((1.0 - m) * (double)running_var[c] + m * unbiased);
        }
    }
}

// Evaluation forward, elementwise: normalises with the running statistics, updates nothing.
// Threads 0..C-1 also record the statistics used (mean_out, inv_std_out) for the backward pass.
template <typename T>
__global__ void bn_forward_eval(const T* x, const T* gamma, const T* beta, const T* running_mean,
                                const T* running_var, T* y, T* mean_out, T* inv_std_out, int N,
                                int C, int S, T eps, int fuse_relu) {
    const int total = N * C * S;
    MINIRES_GRID_STRIDE_LOOP(i, total) {
        const int c = (i / S) % C;
        const double inv_std = 1.0 / sqrt((double)running_var[c] + (double)eps);
        const double scale = (double)gamma[c] * inv_std;
        T v = (T)(((double)x[i] - (double)running_mean[c]) * scale + (double)beta[c]);
        if (fuse_relu && v < T(0)) {  // NaN passes through, as numpy.maximum
            v = T(0);
        }
        y[i] = v;
        if (i < C) {
            mean_out[i] = running_mean[i];
            inv_std_out[i] = (T)(1.0 / sqrt((double)running_var[i] + (double)eps));
        }
    }
}

// Backward, one block per channel (grid = C).
// With xhat = (x - mean) * inv_std and g = gy (times the ReLU mask y > 0 when fuse_relu):
//   gbeta = sum g, ggamma = sum g * xhat,
//   training: gx = gamma * inv_std * (g - (gbeta + xhat * ggamma) / count)
//   eval:     gx = gamma * inv_std * g
// gx is skipped when write_gx is 0 (the input needs no gradient); y is read only when fuse_relu.
template <typename T>
__global__ void bn_backward(const T* gy, const T* x, const T* y, const T* gamma, const T* mean,
                            const T* inv_std, T* gx, T* ggamma, T* gbeta, int N, int C, int S,
                            int training, int fuse_relu, int write_gx) {
    __shared__ double shared[32];
    const int c = blockIdx.x;
    const int count = N * S;
    const double mu = (double)mean[c];
    const double istd = (double)inv_std[c];

    double sum_g = 0.0;
    double sum_g_xhat = 0.0;
    for (int j = threadIdx.x; j < count; j += blockDim.x) {
        const int i = channel_index(j, c, C, S);
        const double g = (fuse_relu && !(y[i] > T(0))) ? 0.0 : (double)gy[i];
        sum_g += g;
        sum_g_xhat += g * ((double)x[i] - mu) * istd;
    }
    const double gb = block_sum(sum_g, shared);
    const double gg = block_sum(sum_g_xhat, shared);
    if (threadIdx.x == 0) {
        gbeta[c] = (T)gb;
        ggamma[c] = (T)gg;
    }
    if (!write_gx) {
        return;
    }

    const double scale = (double)gamma[c] * istd;
    for (int j = threadIdx.x; j < count; j += blockDim.x) {
        const int i = channel_index(j, c, C, S);
        const double g = (fuse_relu && !(y[i] > T(0))) ? 0.0 : (double)gy[i];
        if (training) {
            const double xhat = ((double)x[i] - mu) * istd;
            gx[i] = (T)(scale * (g - (gb + xhat * gg) / count));
        } else {
            gx[i] = (T)(scale * g);
        }
    }
}
