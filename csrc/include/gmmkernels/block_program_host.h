// HostLaunch: runs the block programs of gmmkernels/block_program.h on CPU threads, one std::thread per CUDA thread
// and one block after the other, so that the CUDA kernels' code is tested on machines without a GPU. It checks what
// it can of the CUDA execution model: the shared memory starts as NaN (all bits set) in every block, and a block
// whose threads do not all reach the same sync() (or a warp whose lanes do not all reach the same sync_warp()), or
// leave the program while others wait, is reported as an error instead of hanging. It does not model the lockstep
// of a warp's lanes between those calls, the memory consistency of global memory across blocks (blocks run one
// after the other here) or timing; a GPU run (the CUDA tests, compute-sanitizer) covers those.
//
// Plain C++ (no torch, no CUDA headers).
#pragma once

#include <condition_variable>
#include <cstring>
#include <exception>
#include <memory>
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
  HostBarrier* bar;   // the block's
  HostBarrier* wbar;  // the thread's warp's
  double* xch;        // one value per thread, for warp_sum
  int tid() const { return t; }
  Idx3 block() const { return b; }
  Idx3 grid() const { return g; }
  void sync() const { bar->sync(); }
  void sync_warp() const { wbar->sync(); }
  // The butterfly of __shfl_xor_sync: at each step every lane adds its partner's value (float and double pass
  // through the double exchange buffer exactly).
  template <typename T>
  T warp_sum(T v) const {
    for (int o = 16; o > 0; o /= 2) {
      xch[t] = static_cast<double>(v);
      wbar->sync();
      const T other = static_cast<T>(xch[t ^ o]);
      wbar->sync();
      v += other;
    }
    return v;
  }
};

// Runs block programs on the CPU; run() throws std::runtime_error (naming the program's block) on divergence.
struct HostLaunch {
  using Error = int;
  static constexpr Error kOk = 0;

  template <class P>
  Error run(Idx3 grid, const typename P::Params& p) const {
    static_assert(P::kThreads % 32 == 0, "block programs run whole warps");
    constexpr int kWarpsPerBlock = P::kThreads / 32;
    const size_t bytes = P::smem_bytes(p);
    std::vector<double> smem((bytes + sizeof(double) - 1) / sizeof(double) + 1);
    std::vector<double> xch(P::kThreads);
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          std::memset(smem.data(), 0xff, smem.size() * sizeof(double));  // NaN in float and double
          HostBarrier bar(P::kThreads);
          std::vector<std::unique_ptr<HostBarrier>> wbars;
          for (int w = 0; w < kWarpsPerBlock; ++w) wbars.emplace_back(new HostBarrier(32));
          std::vector<std::thread> threads;
          threads.reserve(P::kThreads);
          for (int t = 0; t < P::kThreads; ++t)
            threads.emplace_back([&, t] {
              HostBarrier* wbar = wbars[t / 32].get();
              const HostBlock blk{t, {x, y, z}, grid, &bar, wbar, xch.data()};
              const char* error = nullptr;
              try {
                P::run(blk, reinterpret_cast<unsigned char*>(smem.data()), p);
              } catch (const std::exception&) {
                error = "sync() or sync_warp() was not reached by every thread of the block or warp";
              }
              wbar->leave(error);
              bar.leave(error);
            });
          for (auto& th : threads) th.join();
          std::string why = bar.broken() ? bar.why() : "";
          for (int w = 0; w < kWarpsPerBlock && why.empty(); ++w)
            if (wbars[w]->broken()) why = "warp " + std::to_string(w) + ": " + wbars[w]->why();
          if (!why.empty())
            throw std::runtime_error("block (" + std::to_string(x) + ", " + std::to_string(y) + ", " +
                                     std::to_string(z) + "): " + why);
        }
    return kOk;
  }

  Error zero(void* ptr, size_t bytes) const {
    std::memset(ptr, 0, bytes);
    return kOk;
  }
};

}  // namespace gmmkernels
