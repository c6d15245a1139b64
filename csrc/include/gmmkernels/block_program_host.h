// HostLaunch: runs the block programs of gmmkernels/block_program.h on CPU threads, one std::thread per CUDA thread
// and one block after the other, so that the CUDA kernels' code is tested on machines without a GPU. It checks what
// it can of the CUDA execution model: the shared memory starts as NaN (all bits set) in every block, and a block
// whose threads do not all reach the same sync() (or leave the program while others wait) is reported as an error
// instead of hanging. It does not model warps, the memory consistency of global memory across blocks (blocks run
// one after the other here) or timing; compute-sanitizer on a GPU covers those.
//
// Plain C++ (no torch, no CUDA headers).
#pragma once

#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "gmmkernels/block_program.h"

namespace gmmkernels {

// A barrier for the threads of one block that detects divergence: sync() throws once some thread has left the
// program (or failed) while others are waiting, or arrives after one has left.
class HostBarrier {
 public:
  explicit HostBarrier(int n) : n_(n) {}

  void sync() {
    std::unique_lock<std::mutex> lock(mu_);
    if (broken_ || left_ > 0) fail("a thread reached sync() after another thread of its block left the program");
    const unsigned long gen = gen_;
    if (++arrived_ == n_) {
      arrived_ = 0;
      ++gen_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return gen_ != gen || broken_; });
    if (gen_ == gen) throw std::runtime_error(why_);
  }

  // Called by every thread when it leaves the program (normally or by an exception).
  void leave(const char* error) {
    std::lock_guard<std::mutex> lock(mu_);
    ++left_;
    if (error != nullptr && !broken_) {
      broken_ = true;
      why_ = error;
    } else if (arrived_ > 0 && !broken_) {
      broken_ = true;
      why_ = "a thread left the program while others of its block waited in sync()";
    }
    cv_.notify_all();
  }

  bool broken() const { return broken_; }
  const std::string& why() const { return why_; }

 private:
  [[noreturn]] void fail(const char* what) {
    if (!broken_) {
      broken_ = true;
      why_ = what;
    }
    cv_.notify_all();
    throw std::runtime_error(why_);
  }

  std::mutex mu_;
  std::condition_variable cv_;
  const int n_;
  int arrived_ = 0, left_ = 0;
  unsigned long gen_ = 0;
  bool broken_ = false;
  std::string why_;
};

struct HostBlock {
  int t;
  Idx3 b, g;
  HostBarrier* bar;
  int tid() const { return t; }
  Idx3 block() const { return b; }
  Idx3 grid() const { return g; }
  void sync() const { bar->sync(); }
};

// Runs block programs on the CPU; run() throws std::runtime_error (naming the program's block) on divergence.
struct HostLaunch {
  using Error = int;
  static constexpr Error kOk = 0;

  template <class P>
  Error run(Idx3 grid, const typename P::Params& p) const {
    const size_t bytes = P::smem_bytes(p);
    std::vector<double> smem((bytes + sizeof(double) - 1) / sizeof(double) + 1);
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          std::memset(smem.data(), 0xff, smem.size() * sizeof(double));  // NaN in float and double
          HostBarrier bar(P::kThreads);
          std::vector<std::thread> threads;
          threads.reserve(P::kThreads);
          for (int t = 0; t < P::kThreads; ++t)
            threads.emplace_back([&, t] {
              const HostBlock blk{t, {x, y, z}, grid, &bar};
              const char* error = nullptr;
              try {
                P::run(blk, reinterpret_cast<unsigned char*>(smem.data()), p);
              } catch (const std::exception&) {
                error = "sync() was not reached by every thread of the block";
              }
              bar.leave(error);
            });
          for (auto& th : threads) th.join();
          if (bar.broken())
            throw std::runtime_error("block (" + std::to_string(x) + ", " + std::to_string(y) + ", " +
                                     std::to_string(z) + "): " + bar.why());
        }
    return kOk;
  }

  Error zero(void* ptr, size_t bytes) const {
    std::memset(ptr, 0, bytes);
    return kOk;
  }
};

}  // namespace gmmkernels
