// One SGD step on one parameter, in place, with PyTorch's semantics (dampening 0):
//
//   d = grad + weight_decay * param
//   momentum != 0:  buf = d on the first step, else buf = momentum * buf + d
//                   d = d + momentum * buf (nesterov) or d = buf
//   param -= lr * d
//
// NumPy reference: minires.kernels.cuda.reference.sgd_update (which agrees with torch.optim.SGD).
#include "common.cuh"

// velocity is read and written only when momentum != 0 (the caller may then pass any pointer).
template <typename T>
__device__ void sgd_update(T* param, const T* grad, T* velocity, int n, T lr, T momentum,
                           T weight_decay, int nesterov, int first_step) {
    MINIRES_GRID_STRIDE_LOOP(i, n) {
        const T p = param[i];
        T d = grad[i] + weight_decay * p;
        if (momentum != T(0)) {
            const T buf = first_step ? d : momentum * velocity[i] + d;
            velocity[i] = buf;
            d = nesterov ? d + momentum * buf : buf;
        }
        param[i] = p - lr * d;
    }
}

extern "C" __global__ void sgd_update_f32(float* param, const float* grad, float* velocity,
                                          int n, float lr, float momentum, float weight_decay,
                                          int nesterov, int first_step) {
    sgd_update<float>(param, grad, velocity, n, lr, momentum, weight_decay, nesterov, first_step);
}

extern "C" __global__ void sgd_update_f64(double* param, const double* grad, double* velocity,
                                          int n, double lr, double momentum, double weight_decay,
                                          int nesterov, int first_step) {
    sgd_update<double>(param, grad, velocity, n, lr, momentum, weight_decay, nesterov,
                       first_step);
}
