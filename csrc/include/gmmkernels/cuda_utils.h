// Helpers of the CUDA host code (csrc/cuda/<op>.cpp; ATen side, not for .cu files).
#pragma once
#include <ATen/cuda/CUDAContext.h>
#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>

namespace gmmkernels {

// The stream the launchers run on: the current stream of the current device.
inline cudaStream_t current_stream() { return at::cuda::getCurrentCUDAStream().stream(); }

// Raises "<op>: CUDA launch failed: <error>" unless err, what a launch_<op>* function returned, is cudaSuccess.
inline void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(err));
}

}  // namespace gmmkernels
