// Runs one kernel of ../fused.cu under emulation, for src/nn/cuda/emulated.rs:
//   harness OP ARGS...   inputs as raw little-endian f32 on stdin, outputs likewise on stdout
// launched with the grids the Rust launchers use (src/cuda/launch.rs, src/cuda/mod.rs).
#include "cuda_emulation.h"
#include "../fused.cu"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

static std::vector<float> read_f32(size_t n) {
  std::vector<float> v(n);
  if (n && std::fread(v.data(), sizeof(float), n, stdin) != n) {
    std::fprintf(stderr, "harness: expected %zu f32 values on stdin\n", n);
    std::exit(2);
  }
  return v;
}

template <class T>
static void write(const std::vector<T>& v) {
  std::fwrite(v.data(), sizeof(T), v.size(), stdout);
}

static long long arg_i(char** argv, int i) { return std::strtoll(argv[i], nullptr, 10); }
static double arg_f(char** argv, int i) { return std::strtod(argv[i], nullptr); }

// Blocks per parameter for the grid-stride kernels: as many as needed, at most `cap`.
static unsigned grid_for(long long n, unsigned cap) {
  long long blocks = (n + CT_BLOCK - 1) / CT_BLOCK;
  return (unsigned)(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
}

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const std::string op = argv[1];
  if (op == "gn-fwd" || op == "gn-bwd") {
    // n c groups hw eps silu; stdin: x, gamma, beta[, dout]; stdout: y | dx, dgamma, dbeta
    const int n = (int)arg_i(argv, 2), c = (int)arg_i(argv, 3), groups = (int)arg_i(argv, 4), hw = (int)arg_i(argv, 5);
    const double eps = arg_f(argv, 6);
    const int silu = (int)arg_i(argv, 7);
    const size_t len = (size_t)n * c * hw;
    auto x = read_f32(len);
    auto affine = read_f32(2 * (size_t)c);
    if (op == "gn-fwd") {
      std::vector<float> y(len);
      ct_launch(n * groups, CT_BLOCK, [&] {
        ct_group_norm_silu_fwd(x.data(), affine.data(), affine.data() + c, y.data(), c, groups, hw, eps, silu);
      });
      write(y);
    } else {
      auto dout = read_f32(len);
      std::vector<float> out(len + 2 * (size_t)c);
      std::vector<double> part(2 * (size_t)n * c);
      ct_launch(n * groups, CT_BLOCK, [&] {
        ct_group_norm_silu_bwd(x.data(), affine.data(), dout.data(), out.data(), part.data(), c, groups, hw, eps, silu);
      });
      ct_launch((c + CT_BLOCK - 1) / CT_BLOCK, CT_BLOCK, [&] {
        ct_group_norm_affine_sum(part.data(), out.data() + len, out.data() + len + c, n, c);
      });
      write(out);
    }
  } else if (op == "sumsq") {
    // n blocks; stdin: g; stdout: the f64 sum of squares
    const long long n = arg_i(argv, 2);
    const unsigned blocks = (unsigned)arg_i(argv, 3);
    auto g = read_f32((size_t)n);
    std::vector<double> partial(blocks), total(1);
    ct_launch(blocks, CT_BLOCK, [&] { ct_clean_sumsq(g.data(), n, partial.data()); });
    ct_launch(1, CT_BLOCK, [&] { ct_sum_f64(partial.data(), blocks, total.data()); });
    write(total);
  } else if (op == "optim") {
    // n kind b1 b2 eps lr wd scale adam_step bc1 sbc2 rect; stdin: theta, g, m, v; stdout: theta, m, v
    const long long n = arg_i(argv, 2);
    const int kind = (int)arg_i(argv, 3);
    float p[10];
    for (int i = 0; i < 10; ++i) p[i] = std::strtof(argv[4 + i], nullptr);
    auto theta = read_f32((size_t)n), g = read_f32((size_t)n), m = read_f32((size_t)n), v = read_f32((size_t)n);
    ct_launch(grid_for(n, 1024), CT_BLOCK, [&] {
      ct_optimizer_step(theta.data(), g.data(), m.data(), v.data(), n, kind, p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9]);
    });
    write(theta);
    write(m);
    write(v);
  } else if (op == "ema") {
    // n b a; stdin: ema, online; stdout: ema
    const long long n = arg_i(argv, 2);
    const float b = std::strtof(argv[3], nullptr), a = std::strtof(argv[4], nullptr);
    auto ema = read_f32((size_t)n), online = read_f32((size_t)n);
    ct_launch(grid_for(n, 1024), CT_BLOCK, [&] { ct_ema(ema.data(), online.data(), n, b, a); });
    write(ema);
  } else {
    std::fprintf(stderr, "harness: unknown op %s\n", op.c_str());
    return 2;
  }
  return 0;
}
