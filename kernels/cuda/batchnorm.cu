// Batch normalisation over every axis but the channel axis (PyTorch's conventions), with an
// optional fused ReLU.
//
// x is viewed as (N, C, S) with S = H*W (S = 1 for (N, C) inputs); a channel has count = N*S
// values, j = n*S + s. Training normalises with the batch mean and the biased variance and
// updates the running statistics with the unbiased one; evaluation normalises with the running
// statistics.
//
// Work split: every reduction uses B blocks per channel (grid = C*B, block b of channel c is
// blockIdx.x = c*B + b) and runs in two kernels:
//   1. each block sums its contiguous slice [count*b/B, count*(b+1)/B) of the channel and
//      writes one partial sum per quantity (partial[(c*B + b)*2 + q]);
//   2. each block adds its channel's B partials, always in the order b = 0..B-1, then applies
//      the result to its slice (normalise, or compute gx); block 0 of the channel also writes
//      the per-channel outputs.
// The block sums reduce in a fixed tree (block_sum) and B depends only on the shape, so the
// results are the same bits on every run. Sums are in double for float and double inputs.
//
// The variance uses sums shifted by the channel's first value K (sum of x - K and of
// (x - K)^2): with K inside the data, the subtraction S2 - S1^2/count does not cancel the way
// an unshifted sum of squares does when the mean is large against the spread.
//
// NumPy references: batch_norm_forward / batch_norm_backward in tests/cuda_reference.py (which
// agree with the CPU kernels).
#include "common.cuh"

// The slice of channel c that block b of B covers, and a cursor over its (n, s) positions.
struct ChannelSlice {
    int begin, end;  // j range within the channel
    __device__ ChannelSlice(int count, int b, int B) {
        begin = (int)((long long)count * b / B);
        end = (int)((long long)count * (b + 1) / B);
    }
};

// Flat index (n*C + c)*S + s of the channel's j-th value, advanced without division.
struct ChannelCursor {
    GridCursor ns;  // (n, s)
    int C, c, S;
    __device__ ChannelCursor(int j, int step, int c_, int C_, int S_)
        : ns(j, step, S_), C(C_), c(c_), S(S_) {}
    __device__ __forceinline__ int index() const { return (ns.row * C + c) * S + ns.col; }
    __device__ __forceinline__ void advance() { ns.advance(); }
};

// Pass 1 of training: partial[(c*B + b)*2 + {0, 1}] = sum over the block's slice of
// (x - K) and (x - K)^2, with K = x[0, c, 0].
template <typename T>
__global__ void bn_partial_sums(const T* x, double* partial, int N, int C, int S, int B) {
    __shared__ double shared[32];
    const int c = blockIdx.x / B;
    const int b = blockIdx.x - c * B;
    const ChannelSlice slice(N * S, b, B);
    const double shift = (double)x[c * S];
    double sum = 0.0;
    double squares = 0.0;
    ChannelCursor at(slice.begin + threadIdx.x, blockDim.x, c, C, S);
    for (int j = slice.begin + threadIdx.x; j < slice.end; j += blockDim.x, at.advance()) {
        const double d = (double)x[at.index()] - shift;
        sum += d;
        squares += d * d;
    }
    sum = block_sum(sum, shared);
    squares = block_sum(squares, shared);
    if (threadIdx.x == 0) {
        partial[blockIdx.x * 2] = sum;
        partial[blockIdx.x * 2 + 1] = squares;
    }
}

// Adds channel c's B partials of quantity q in the order b = 0..B-1 (the same in every block).
__device__ __forceinline__ double channel_total(const double* partial, int c, int B, int q) {
    double total = 0.0;
    for (int b = 0; b < B; ++b) {
        total += partial[(c * B + b) * 2 + q];
    }
    return total;
}

// Pass 2 of training: y = (x - mean) * gamma / sqrt(var + eps) + beta (then ReLU if fused) over
// the block's slice. Block 0 of each channel writes the batch mean and 1/sqrt(var + eps) and,
// when update_running is non-zero,
// running = (1 - momentum) * running + momentum * batch statistic (unbiased variance).
template <typename T>
__global__ void bn_normalize(const T* x, const T* gamma, const T* beta, const double* partial,
                             T* y, T* mean_out, T* inv_std_out, T* running_mean,
                             T* running_var, int N, int C, int S, int B, T eps, T momentum,
                             int update_running, int fuse_relu) {
    const int c = blockIdx.x / B;
    const int b = blockIdx.x - c * B;
    const int count = N * S;
    const double shifted_mean = channel_total(partial, c, B, 0) / count;
    double var = channel_total(partial, c, B, 1) / count - shifted_mean * shifted_mean;
    var = var > 0.0 ? var : 0.0;  // biased: normalises the batch
    const double mean = (double)x[c * S] + shifted_mean;
    const double inv_std = 1.0 / sqrt(var + (double)eps);
    const double scale = (double)gamma[c] * inv_std;
    const double shift = (double)beta[c];

    const ChannelSlice slice(count, b, B);
    ChannelCursor at(slice.begin + threadIdx.x, blockDim.x, c, C, S);
    for (int j = slice.begin + threadIdx.x; j < slice.end; j += blockDim.x, at.advance()) {
        const int i = at.index();
        T v = (T)(((double)x[i] - mean) * scale + shift);
        if (fuse_relu && v < T(0)) {  // NaN passes through, as numpy.maximum
            v = T(0);
        }
        y[i] = v;
    }

    if (b == 0 && threadIdx.x == 0) {
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

// Evaluation forward: normalises with the running statistics, updates nothing. One (n, c) plane
// per block at a time. The blocks of the planes of image 0 (plane == c) also record the
// statistics used (mean_out, inv_std_out) for the backward pass.
template <typename T>
__global__ void bn_forward_eval(const T* x, const T* gamma, const T* beta, const T* running_mean,
                                const T* running_var, T* y, T* mean_out, T* inv_std_out, int N,
                                int C, int S, T eps, int fuse_relu) {
    for (int plane = blockIdx.x; plane < N * C; plane += gridDim.x) {
        const int c = plane - (plane / C) * C;
        const double mean = (double)running_mean[c];
        const double inv_std = 1.0 / sqrt((double)running_var[c] + (double)eps);
        const double scale = (double)gamma[c] * inv_std;
        const double shift = (double)beta[c];
        for (int s = threadIdx.x; s < S; s += blockDim.x) {
            const int i = plane * S + s;
            T v = (T)(((double)x[i] - mean) * scale + shift);
            if (fuse_relu && v < T(0)) {  // NaN passes through, as numpy.maximum
                v = T(0);
            }
            y[i] = v;
        }
        if (plane < C && threadIdx.x == 0) {
            mean_out[c] = running_mean[c];
            inv_std_out[c] = (T)inv_std;
        }
    }
}

// The upstream gradient where it flows: gy, masked by the fused ReLU's output when fused.
template <typename T>
__device__ __forceinline__ double flowing(const T* gy, const T* y, int i, int fuse_relu) {
    return (fuse_relu && !(y[i] > T(0))) ? 0.0 : (double)gy[i];
}

// Backward pass 1: partial[(c*B + b)*2 + {0, 1}] = sum over the block's slice of g and of
// g * xhat, with g the flowing gradient and xhat = (x - mean) * inv_std. y is read only when
// fuse_relu.
template <typename T>
__global__ void bn_backward_partial_sums(const T* gy, const T* x, const T* y, const T* mean,
                                         const T* inv_std, double* partial, int N, int C, int S,
                                         int B, int fuse_relu) {
    __shared__ double shared[32];
    const int c = blockIdx.x / B;
    const int b = blockIdx.x - c * B;
    const double mu = (double)mean[c];
    const double istd = (double)inv_std[c];
    const ChannelSlice slice(N * S, b, B);
    double sum_g = 0.0;
    double sum_g_xhat = 0.0;
    ChannelCursor at(slice.begin + threadIdx.x, blockDim.x, c, C, S);
    for (int j = slice.begin + threadIdx.x; j < slice.end; j += blockDim.x, at.advance()) {
        const int i = at.index();
        const double g = flowing(gy, y, i, fuse_relu);
        sum_g += g;
        sum_g_xhat += g * ((double)x[i] - mu) * istd;
    }
    sum_g = block_sum(sum_g, shared);
    sum_g_xhat = block_sum(sum_g_xhat, shared);
    if (threadIdx.x == 0) {
        partial[blockIdx.x * 2] = sum_g;
        partial[blockIdx.x * 2 + 1] = sum_g_xhat;
    }
}

// Backward pass 2: gbeta = sum g, ggamma = sum g * xhat (block 0 of each channel writes them),
// and over the block's slice, when write_gx:
//   training: gx = gamma * inv_std * (g - (gbeta + xhat * ggamma) / count)
//   eval:     gx = gamma * inv_std * g
template <typename T>
__global__ void bn_backward_apply(const T* gy, const T* x, const T* y, const T* gamma,
                                  const T* mean, const T* inv_std, const double* partial, T* gx,
                                  T* ggamma, T* gbeta, int N, int C, int S, int B, int training,
                                  int fuse_relu, int write_gx) {
    const int c = blockIdx.x / B;
    const int b = blockIdx.x - c * B;
    const int count = N * S;
    const double gb = channel_total(partial, c, B, 0);
    const double gg = channel_total(partial, c, B, 1);
    if (b == 0 && threadIdx.x == 0) {
        gbeta[c] = (T)gb;
        ggamma[c] = (T)gg;
    }
    if (!write_gx) {
        return;
    }
    const double mu = (double)mean[c];
    const double istd = (double)inv_std[c];
    const double scale = (double)gamma[c] * istd;
    const ChannelSlice slice(count, b, B);
    ChannelCursor at(slice.begin + threadIdx.x, blockDim.x, c, C, S);
    for (int j = slice.begin + threadIdx.x; j < slice.end; j += blockDim.x, at.advance()) {
        const int i = at.index();
        const double g = flowing(gy, y, i, fuse_relu);
        if (training) {
            const double xhat = ((double)x[i] - mu) * istd;
            gx[i] = (T)(scale * (g - (gb + xhat * gg) / count));
        } else {
            gx[i] = (T)(scale * g);
        }
    }
}
