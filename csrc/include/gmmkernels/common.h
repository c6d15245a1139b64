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

// GMMK_INSTANTIATE_LAUNCHER(launch_x): the float and double instantiations of the launcher template
// gmmkernels::launch_x, written at the end of the csrc/cuda/<op>_kernels.cu that defines it. The .cu files define the
// launchers of their <op>_launch.h with qualified names (gmmkernels::launch_x) and instantiate them with the types of
// those declarations (decltype): a definition that drifts from its declaration is a second overload, decltype of the
// name then does not compile, and a drifting non-template function does not compile either. So a mismatch between
// csrc/cuda/<op>.cpp and csrc/cuda/<op>_kernels.cu is a compile error rather than a symbol missing at import.
#define GMMK_INSTANTIATE_LAUNCHER(launch_x)                                    \
  template decltype(gmmkernels::launch_x<float>) gmmkernels::launch_x<float>; \
  template decltype(gmmkernels::launch_x<double>) gmmkernels::launch_x<double>;
