// Definitions shared by every part of gmmkernels' native code: the CPU kernels, the CUDA host code and the CUDA
// kernels. No torch header, so it compiles in plain C++ and in nvcc translation units.
#pragma once

// GMMK_HD marks the maths shared by the CPU and the CUDA kernels (csrc/include/gmmkernels/<op>.h): host and device
// inline functions under nvcc, plain inline functions elsewhere.
#if defined(__CUDACC__)
#define GMMK_HD __host__ __device__ __forceinline__
#else
#define GMMK_HD inline
#endif
