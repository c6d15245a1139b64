// Block programs: a CUDA kernel's body written once against a small block context, so that the same code runs as a
// CUDA kernel (CudaLaunch, in nvcc translation units) and, for the tests, on CPU threads (HostLaunch in
// gmmkernels/block_program_host.h: one std::thread per CUDA thread, a barrier for __syncthreads, the shared memory
// filled with NaN before each block so that a read of an unwritten element shows in the results).
//
// A program is a struct P with
//   static constexpr int kThreads;                         threads per block (a multiple of 32, at most 256)
//   struct Params { ... };                                 plain values and pointers, passed by value to every block
//   static size_t smem_bytes(const Params&);               dynamic shared memory per block
//   template <class Blk> static GMMK_DEV void run(const Blk& blk, unsigned char* smem, const Params& p);
// where blk.tid() is threadIdx.x, blk.block() blockIdx, blk.grid() gridDim, blk.sync() __syncthreads(),
// blk.sync_warp() __syncwarp() (all 32 lanes) and blk.warp_sum(v) the fixed-order butterfly sum over the 32 lanes
// (__shfl_xor_sync, every lane gets the same bits). kThreads is a multiple of 32. Shared memory is the dynamic
// buffer only (no __shared__ declarations), and threads exchange data through it, global memory and those calls
// alone (no other warp primitives, no atomics), which is what the host runner reproduces. As in CUDA, every thread
// of a block must reach every sync() (and every lane of a warp every sync_warp() and warp_sum()); the host runner
// reports a block whose threads do not (a hang or worse on a GPU).
//
// No torch header: it compiles in plain C++ and in nvcc translation units.
#pragma once

#include <cstddef>
#include <cstdint>

#include "gmmkernels/common.h"

// GMMK_DEV marks block programs and their helpers: device functions under nvcc, plain inline functions elsewhere.
#if defined(__CUDACC__)
#define GMMK_DEV __device__ __forceinline__
#else
#define GMMK_DEV inline
#endif

// GMMK_UNROLL: `#pragma unroll` for nvcc (other compilers would warn about an unknown pragma).
#if defined(__CUDACC__)
#define GMMK_UNROLL _Pragma("unroll")
#else
#define GMMK_UNROLL
#endif

namespace gmmkernels {

// blockIdx / gridDim of a block program (dim3 without the CUDA headers).
struct Idx3 {
  unsigned x = 1, y = 1, z = 1;
};

GMMK_HD int imin(int a, int b) { return a < b ? a : b; }
GMMK_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

#if defined(__CUDACC__)

struct DeviceBlock {
  __device__ __forceinline__ int tid() const { return static_cast<int>(threadIdx.x); }
  __device__ __forceinline__ Idx3 block() const { return {blockIdx.x, blockIdx.y, blockIdx.z}; }
  __device__ __forceinline__ Idx3 grid() const { return {gridDim.x, gridDim.y, gridDim.z}; }
  __device__ __forceinline__ void sync() const { __syncthreads(); }
  __device__ __forceinline__ void sync_warp() const { __syncwarp(); }
  template <typename T>
  __device__ __forceinline__ T warp_sum(T v) const {
    GMMK_UNROLL
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
  }
};

// No __launch_bounds__: with it, ptxas (nvcc 13.0, sm_90) capped some programs at 64 or 128 registers and spilled
// (the one-pass EM statistics in float32, both Gibbs layouts); without it none of them spills. Blocks of at most 256
// threads launch at any register count ptxas may choose (255 x 256 < 65536).
template <class P>
__global__ void block_program_kernel(const typename P::Params p) {
  static_assert(P::kThreads <= 256, "larger blocks need __launch_bounds__ to be sure to launch");
  extern __shared__ __align__(16) unsigned char block_program_smem[];
  P::run(DeviceBlock{}, block_program_smem, p);
}

// Launches block programs on a stream; every call returns the launch error (cudaSuccess when fine).
struct CudaLaunch {
  using Error = cudaError_t;
  cudaStream_t stream;
  static constexpr Error kOk = cudaSuccess;

  template <class P>
  Error run(Idx3 grid, const typename P::Params& p) const {
    if (grid.x == 0 || grid.y == 0 || grid.z == 0) return cudaSuccess;
    const size_t smem = P::smem_bytes(p);
    if (smem > 48 * 1024) {  // above the default limit of dynamic shared memory: opt in
      const Error err =
          cudaFuncSetAttribute(block_program_kernel<P>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
      if (err != cudaSuccess) return err;
    }
    block_program_kernel<P><<<dim3(grid.x, grid.y, grid.z), P::kThreads, smem, stream>>>(p);
    return cudaGetLastError();
  }

  Error zero(void* ptr, size_t bytes) const { return cudaMemsetAsync(ptr, 0, bytes, stream); }
};

#endif  // __CUDACC__

}  // namespace gmmkernels
