// One SGD step on many parameters in ONE launch, in place, with PyTorch's semantics
// (dampening 0). For each parameter p with gradient g, velocity v and weight decay wd:
//
//   d = g + wd * p
//   momentum != 0:  v = momentum * v + d   (v starts at zero: the first step sets v = d)
//                   d = d + momentum * v (nesterov) or d = v
//   p -= lr * d
//
// The parameters travel by value in the kernel's arguments (SgdTensors: pointers, weight
// decays and where each parameter starts in one flat index space), so there is no table in
// device memory to fill, and a CUDA graph that captures the launch keeps them. The learning
// rate is read from device memory when lr_from_device is set (a graph replays with the rate
// the host last wrote there), else taken from the argument lr.
//
// Compiled with --fmad=false (loader.SOURCE_OPTIONS): each product and sum is rounded on its
// own, as NumPy rounds them, so the update is NumPy's to the bit (CuPy's -ftz=true still
// flushes float32 values below 1.2e-38 to zero).
//
// NumPy reference: sgd_step in tests/cuda_reference.py (which agrees with torch.optim.SGD).
#include "common.cuh"

// Must equal MAX_TENSORS in sgd.py, which lays out the same struct with NumPy.
#define MINIRES_SGD_MAX_TENSORS 96

template <typename T>
struct SgdTensors {
    T* param[MINIRES_SGD_MAX_TENSORS];
    const T* grad[MINIRES_SGD_MAX_TENSORS];
    T* velocity[MINIRES_SGD_MAX_TENSORS];   // read and written only when momentum != 0
    T weight_decay[MINIRES_SGD_MAX_TENSORS];
    int start[MINIRES_SGD_MAX_TENSORS + 1];  // parameter t holds flat indices [start[t], start[t+1])
    int count;
};

template <typename T>
__global__ void sgd_update(SgdTensors<T> tensors, const T* lr_on_device, T lr, T momentum,
                           int lr_from_device, int nesterov) {
    const T rate = lr_from_device ? lr_on_device[0] : lr;
    const int total = tensors.start[tensors.count];
    int t = 0;  // a thread's flat index only grows, so its parameter index only moves forward
    MINIRES_GRID_STRIDE_LOOP(i, total) {
        while (i >= tensors.start[t + 1]) {
            ++t;
        }
        const int j = i - tensors.start[t];
        T* param = tensors.param[t];
        const T p = param[j];
        T d = tensors.grad[t][j] + tensors.weight_decay[t] * p;
        if (momentum != T(0)) {
            T* velocity = tensors.velocity[t];
            const T buf = momentum * velocity[j] + d;
            velocity[j] = buf;
            d = nesterov ? d + momentum * buf : buf;
        }
        param[j] = p - rate * d;
    }
}
