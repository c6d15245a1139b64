// Plain CUDA launchers of the SMD low-rank adapter kernels (csrc/cuda/lowrank_adapter_kernels.cu), called by the ATen
// host code csrc/cuda/lowrank_adapter.cpp. No torch headers: raw device pointers (contiguous, row-major) and a stream.
// T is float or double.
//
//   forward:  r [P, d], u [P, L, d], c [L] = softplus(s)  ->  out [P, d] = W_L(...(W_1 r)), W_l r = u_l (u_l . r) + c_l r
//   backward: g [P, d] (grad of out) -> grad_r [P, d], grad_u [P, L, d], gc_part [P, L] (per-pixel g_l . r_{l-1};
//             the caller sums it over P and multiplies by softplus'(s) for grad_s)
// Both return cudaGetLastError() after the launch; P = 0 launches nothing.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "gmmkernels/common.h"

namespace gmmkernels {

template <typename T>
cudaError_t launch_lowrank_adapter_forward(const T* r, const T* u, const T* c, T* out, int64_t P, int64_t L, int64_t d,
                                           cudaStream_t stream);

template <typename T>
cudaError_t launch_lowrank_adapter_backward(const T* g, const T* r, const T* u, const T* c, T* grad_r, T* grad_u,
                                            T* gc_part, int64_t P, int64_t L, int64_t d, cudaStream_t stream);

}  // namespace gmmkernels
