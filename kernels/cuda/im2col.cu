// im2col and col2im for NCHW images, in two layouts of the patch matrix, and the
// (N, C, S) -> (C, N, S) transpose the weight gradient needs.
//
// Row r = (c*KH + kh)*KW + kw of the patch matrix holds, for every image n and output pixel
// p = oh*OW + ow, the input value that kernel tap (kh, kw) of channel c sees there. Where the
// row of image n starts is given by two strides, so one kernel writes both layouts:
//
//   GEMM layout (C*KH*KW, N*OH*OW): row_stride = N*P, image_stride = P. The convolution uses
//       it: y[n] = W (OC, C*KH*KW) @ col[:, n*P:(n+1)*P], gW = gy^T @ col^T with K = N*P.
//   patch layout (N, C, KH, KW, OH, OW): row_stride = P, image_stride = C*KH*KW*P. The
//       interface's im2col/col2im return it (max pooling takes its windows from it), as the
//       CPU side does.
//
// One block works on one (image, channel) plane at a time; its threads walk the output pixels
// with a GridCursor, so there is one division per thread per plane and none per element.
//
// NumPy references: im2col / col2im in tests/cuda_reference.py (patch layout; the GEMM layout is
// the same values with the image axis moved, checked through the convolution).
#include "common.cuh"

// col[row r, image n, pixel p] = x[n, c, oh*SH - PH + kh, ow*SW - PW + kw], or 0 in the padding.
template <typename T>
__global__ void im2col(const T* x, T* col, int N, int C, int H, int W, int KH, int KW, int OH,
                       int OW, int SH, int SW, int PH, int PW, int row_stride,
                       int image_stride) {
    const int P = OH * OW;
    const int planes = N * C;
    for (int plane = blockIdx.x; plane < planes; plane += gridDim.x) {
        const int n = plane / C;
        const int c = plane - n * C;
        const T* image = x + plane * H * W;
        T* out = col + c * KH * KW * row_stride + n * image_stride;
        GridCursor at(threadIdx.x, blockDim.x, OW);  // (oh, ow) of pixel p
        for (int p = threadIdx.x; p < P; p += blockDim.x, at.advance()) {
            const int ih0 = at.row * SH - PH;
            const int iw0 = at.col * SW - PW;
            for (int kh = 0; kh < KH; ++kh) {
                const int ih = ih0 + kh;
                const bool row_inside = ih >= 0 && ih < H;
                for (int kw = 0; kw < KW; ++kw) {
                    const int iw = iw0 + kw;
                    const bool inside = row_inside && iw >= 0 && iw < W;
                    out[(kh * KW + kw) * row_stride + p] = inside ? image[ih * W + iw] : T(0);
                }
            }
        }
    }
}

// x[n, c, ih, iw] = sum of the col entries that im2col copied from that pixel: the adjoint of
// im2col. Gather, not scatter: one thread owns one input pixel and adds its (at most KH*KW)
// contributions in (kh, kw) order, so there are no atomics and the result is bit-for-bit
// reproducible (and equal to the CPU kernel's, which adds in the same order).
template <typename T>
__global__ void col2im(const T* col, T* x, int N, int C, int H, int W, int KH, int KW, int OH,
                       int OW, int SH, int SW, int PH, int PW, int row_stride,
                       int image_stride) {
    const int HW = H * W;
    const int planes = N * C;
    for (int plane = blockIdx.x; plane < planes; plane += gridDim.x) {
        const int n = plane / C;
        const int c = plane - n * C;
        const T* in = col + c * KH * KW * row_stride + n * image_stride;
        T* image = x + plane * HW;
        GridCursor at(threadIdx.x, blockDim.x, W);  // (ih, iw) of pixel i
        for (int i = threadIdx.x; i < HW; i += blockDim.x, at.advance()) {
            T sum = T(0);
            for (int kh = 0; kh < KH; ++kh) {
                // Output row oh reads input row ih through kernel row kh when
                // oh*SH - PH + kh == ih.
                const int h = at.row + PH - kh;
                int oh;
                if (h < 0 || !divide_exactly(h, SH, &oh) || oh >= OH) {
                    continue;
                }
                for (int kw = 0; kw < KW; ++kw) {
                    const int w = at.col + PW - kw;
                    int ow;
                    if (w < 0 || !divide_exactly(w, SW, &ow) || ow >= OW) {
                        continue;
                    }
                    sum += in[(kh * KW + kw) * row_stride + oh * OW + ow];
                }
            }
            image[i] = sum;
        }
    }
}

// y (C, N, S) = x (N, C, S) with the first two axes swapped: the upstream gradient of a
// convolution as the (OC, N*OH*OW) matrix of the weight-gradient GEMM.
template <typename T>
__global__ void channel_major(const T* x, T* y, int N, int C, int S) {
    const int planes = N * C;
    for (int plane = blockIdx.x; plane < planes; plane += gridDim.x) {
        const int n = plane / C;
        const int c = plane - n * C;
        const T* src = x + plane * S;
        T* dst = y + (c * N + n) * S;
        for (int s = threadIdx.x; s < S; s += blockDim.x) {
            dst[s] = src[s];
        }
    }
}
