// One SGD step on one parameter, in place, with PyTorch's semantics (dampening 0):
//
//   d = grad + weight_decay * param
//   momentum != 0:  buf = momentum * buf + d   (buf starts at zero: the first step sets buf = d)
//                   d = d + momentum * buf (nesterov) or d = buf
//   param -= lr * d
//
// NumPy reference: sgd_step in tests/cuda_reference.py (which agrees with torch.optim.SGD).
#include "common.cuh"

// velocity is read and written only when momentum != 0 (the caller may then pass any pointer).
template <typename T>
__global__ void sgd_update(T* param, const T* grad, T* velocity, int n, T lr, T momentum,
                           T weight_decay, int nesterov) {
    MINIRES_GRID_STRIDE_LOOP(i, n) {
        const T p = param[i];
        T d = grad[i] + weight_decay * p;
        if (momentum != T(0)) {
            const T buf = momentum * velocity[i] + d;
            velocity[i] = buf;
            d = nesterov ? d + momentum * buf : buf;
        }
        param[i] = p - lr * d;
    }
}
