// Just enough of CUDA to run ../fused.cu on the host: every thread of a block is an OS thread,
// __syncthreads is a barrier, __shared__ arrays are function statics (blocks run one after
// another, so one copy is enough), and the built-in indices are globals set per launch.
// Only for testing the kernels' logic where there is no GPU; nothing here is fast.
#pragma once
#include <barrier>
#include <cmath>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
inline thread_local dim3 threadIdx;
inline dim3 blockIdx, blockDim, gridDim;
inline std::barrier<>* ct_emulated_barrier = nullptr;

inline void __syncthreads() { ct_emulated_barrier->arrive_and_wait(); }

using std::exp;
using std::sqrt;

// kernel<<<grid, block>>>(args...) as ct_launch(grid, block, [&] { kernel(args...); }).
template <class Kernel>
void ct_launch(unsigned grid, unsigned block, Kernel kernel) {
  gridDim.x = grid;
  blockDim.x = block;
  for (unsigned b = 0; b < grid; ++b) {
    blockIdx.x = b;
    std::barrier<> bar(block);
    ct_emulated_barrier = &bar;
    std::vector<std::thread> threads;
    threads.reserve(block);
    for (unsigned t = 0; t < block; ++t)
      threads.emplace_back([t, &kernel] {
        threadIdx.x = t;
        kernel();
      });
    for (auto& th : threads) th.join();
  }
}
