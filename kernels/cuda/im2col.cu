// im2col and col2im for NCHW images.
//
// Layout (the same as im2col in kernels/cpu/conv.py): col is (N, C, KH, KW, OH, OW), which in
// memory is (N, C*KH*KW, OH*OW), one GEMM-ready matrix per image.
//
// NumPy references: im2col / col2im in tests/cuda_reference.py (and the numba kernels in
// kernels/cpu/conv.py, which compute the same values in the same summation order).
#include "common.cuh"

// col[n, c, kh, kw, oh, ow] = x[n, c, oh*SH - PH + kh, ow*SW - PW + kw], or 0 in the padding.
// One thread per col element: consecutive threads write consecutive ow, so stores coalesce.
template <typename T>
__global__ void im2col(const T* x, T* col, int N, int C, int H, int W, int KH, int KW, int OH,
                       int OW, int SH, int SW, int PH, int PW) {
    const int total = N * C * KH * KW * OH * OW;
    MINIRES_GRID_STRIDE_LOOP(i, total) {
        const int ow = i % OW;
        int rest = i / OW;
        const int oh = rest % OH;
        rest /= OH;
        const int kw = rest % KW;
        rest /= KW;
        const int kh = rest % KH;
        const int nc = rest / KH;  // n * C + c
        const int ih = oh * SH - PH + kh;
        const int iw = ow * SW - PW + kw;
        const bool inside = ih >= 0 && ih < H && iw >= 0 && iw < W;
        col[i] = inside ? x[(nc * H + ih) * W + iw] : T(0);
    }
}

// x[n, c, ih, iw] = sum of the col entries that im2col copied from that pixel: the adjoint of
// im2col. Gather, not scatter: one thread owns one input pixel and adds its (at most KH*KW)
// contributions in (kh, kw) order, so there are no atomics and the result is bit-for-bit
// reproducible (and equal to the CPU kernel's, which adds in the same order).
template <typename T>
__global__ void col2im(const T* col, T* x, int N, int C, int H, int W, int KH, int KW, int OH,
                       int OW, int SH, int SW, int PH, int PW) {
    const int total = N * C * H * W;
    MINIRES_GRID_STRIDE_LOOP(i, total) {
        const int iw = i % W;
        int rest = i / W;
        const int ih = rest % H;
        const int nc = rest / H;
        T sum = T(0);
        for (int kh = 0; kh < KH; ++kh) {
            // Output row oh reads input row ih through kernel row kh when oh*SH - PH + kh == ih.
            const int h = ih + PH - kh;
            if (h < 0 || h % SH != 0 || h / SH >= OH) {
                continue;
            }
            const int oh = h / SH;
            for (int kw = 0; kw < KW; ++kw) {
                const int w = iw + PW - kw;
                if (w < 0 || w % SW != 0 || w / SW >= OW) {
                    continue;
                }
                const int ow = w / SW;
                sum += col[(((nc * KH + kh) * KW + kw) * OH + oh) * OW + ow];
            }
        }
        x[i] = sum;
    }
}
