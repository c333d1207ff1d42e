// ctpipe's CUDA kernels: fused GroupNorm(+SiLU) forward and backward, and the optimiser and
// EMA updates as one pass per parameter. Each has a Rust CPU twin it must agree with
// (src/nn/fused.rs, src/train/optim.rs).
//
// Written in a small subset of CUDA so that the same file also compiles as host C++ under
// emulation/cuda_emulation.h, where src/cuda/emulated.rs tests it on machines without a GPU:
// one fixed block size, shared-memory tree reductions with __syncthreads (no warp shuffles, no
// atomics), every result written by a fixed thread in a fixed order. The last point also makes
// the kernels deterministic run to run.
//
// Built to PTX with `nvcc -fmad=false` (build.rs): no fused multiply-adds, so that the
// element-wise f32 arithmetic rounds exactly as the CPU code does.

#define CT_BLOCK 256
#define CT_GRAD_LIMIT 1e5f

__device__ __forceinline__ double ct_sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }

// Sums NV per-thread values over the block; every thread gets the totals in v. shm holds
// NV * CT_BLOCK doubles.
template <int NV>
__device__ void ct_block_sum(double* v, double* shm) {
  const unsigned t = threadIdx.x;
  for (int k = 0; k < NV; ++k) shm[k * CT_BLOCK + t] = v[k];
  __syncthreads();
  for (unsigned s = CT_BLOCK / 2; s > 0; s >>= 1) {
    if (t < s)
      for (int k = 0; k < NV; ++k) shm[k * CT_BLOCK + t] += shm[k * CT_BLOCK + t + s];
    __syncthreads();
  }
  for (int k = 0; k < NV; ++k) v[k] = shm[k * CT_BLOCK];
  __syncthreads();
}

// Mean and 1/sqrt(var + eps) of one (image, group) block: two passes, f64, biased variance.
__device__ void ct_group_stats(const float* xb, long long len, double eps, double* shm, double* mean, double* rstd) {
  double s[1] = {0.0};
  for (long long i = threadIdx.x; i < len; i += CT_BLOCK) s[0] += (double)xb[i];
  ct_block_sum<1>(s, shm);
  const double mu = s[0] / (double)len;
  double q[1] = {0.0};
  for (long long i = threadIdx.x; i < len; i += CT_BLOCK) {
    const double d = (double)xb[i] - mu;
    q[0] += d * d;
  }
  ct_block_sum<1>(q, shm);
  *mean = mu;
  *rstd = 1.0 / sqrt(q[0] / (double)len + eps);
}

// y = [SiLU](GroupNorm(x) * gamma + beta) for NCHW x. One block per (image, group).
extern "C" __global__ void ct_group_norm_silu_fwd(const float* x, const float* gamma, const float* beta, float* y,
                                                  int c, int groups, int hw, double eps, int silu) {
  __shared__ double shm[2 * CT_BLOCK];
  const int cg = c / groups;
  const long long len = (long long)cg * hw, b = blockIdx.x;
  const float* xb = x + b * len;
  float* yb = y + b * len;
  const int c0 = (int)(b % groups) * cg;
  double mean, rstd;
  ct_group_stats(xb, len, eps, shm, &mean, &rstd);
  for (long long i = threadIdx.x; i < len; i += CT_BLOCK) {
    const int ch = c0 + (int)(i / hw);
    const double v = ((double)xb[i] - mean) * rstd * (double)gamma[ch] + (double)beta[ch];
    yb[i] = silu ? (float)(v * ct_sigmoid(v)) : (float)v;
  }
}

// dL/dx of the op above, and per-(image, channel) partial sums of dL/dgamma and dL/dbeta in
// part[(n * c + ch) * 2 + {0, 1}] (ct_group_norm_affine_sum finishes them). affine = [gamma | beta].
// One block per (image, group).
extern "C" __global__ void ct_group_norm_silu_bwd(const float* x, const float* affine, const float* dout, float* dx,
                                                  double* part, int c, int groups, int hw, double eps, int silu) {
  __shared__ double shm[2 * CT_BLOCK];
  const int cg = c / groups;
  const long long len = (long long)cg * hw, b = blockIdx.x;
  const float* xb = x + b * len;
  const float* gb = dout + b * len;
  float* dxb = dx + b * len;
  const int c0 = (int)(b % groups) * cg;
  const long long img = b / groups;
  double mean, rstd;
  ct_group_stats(xb, len, eps, shm, &mean, &rstd);
  // Pass 1: dL/dx-hat (kept in dx; each thread reads back only what it wrote), its two group
  // sums, and the affine partial sums channel by channel.
  double sums[2] = {0.0, 0.0};
  for (int k = 0; k < cg; ++k) {
    const int ch = c0 + k;
    const double g = (double)affine[ch], bt = (double)affine[c + ch];
    double p[2] = {0.0, 0.0};
    for (long long i = threadIdx.x; i < hw; i += CT_BLOCK) {
      const long long j = (long long)k * hw + i;
      const double xh = ((double)xb[j] - mean) * rstd;
      const double yv = xh * g + bt;
      double dy;
      if (silu) {
        const double s = ct_sigmoid(yv);
        dy = (double)gb[j] * s * (1.0 + yv * (1.0 - s));
      } else {
        dy = (double)gb[j];
      }
      p[0] += dy * xh;
      p[1] += dy;
      const double dxh = dy * g;
      sums[0] += dxh;
      sums[1] += dxh * xh;
      dxb[j] = (float)dxh;
    }
    ct_block_sum<2>(p, shm);
    if (threadIdx.x == 0) {
      part[(img * c + ch) * 2] = p[0];
      part[(img * c + ch) * 2 + 1] = p[1];
    }
  }
  ct_block_sum<2>(sums, shm);
  const double m1 = sums[0] / (double)len, m2 = sums[1] / (double)len;
  // Pass 2: the normalisation's gradient.
  for (int k = 0; k < cg; ++k) {
    for (long long i = threadIdx.x; i < hw; i += CT_BLOCK) {
      const long long j = (long long)k * hw + i;
      const double xh = ((double)xb[j] - mean) * rstd;
      dxb[j] = (float)(rstd * ((double)dxb[j] - m1 - xh * m2));
    }
  }
}

// dL/dgamma and dL/dbeta: the partial sums reduced over images in order 0..n (as the CPU op).
extern "C" __global__ void ct_group_norm_affine_sum(const double* part, float* dgamma, float* dbeta, int n, int c) {
  const long long ch = (long long)blockIdx.x * CT_BLOCK + threadIdx.x;
  if (ch >= c) return;
  double g = 0.0, bt = 0.0;
  for (long long i = 0; i < n; ++i) {
    g += part[(i * c + ch) * 2];
    bt += part[(i * c + ch) * 2 + 1];
  }
  dgamma[ch] = (float)g;
  dbeta[ch] = (float)bt;
}

// NaN -> 0, anything beyond +-1e5 -> +-1e5 (optim.rs `clean`).
__device__ __forceinline__ float ct_clean(float g) {
  if (g != g) return 0.0f;
  return fminf(fmaxf(g, -CT_GRAD_LIMIT), CT_GRAD_LIMIT);
}

// Per-block partial sums of the cleaned gradient's squares: partial[blockIdx.x].
extern "C" __global__ void ct_clean_sumsq(const float* g, long long n, double* partial) {
  __shared__ double shm[CT_BLOCK];
  double s[1] = {0.0};
  for (long long i = (long long)blockIdx.x * CT_BLOCK + threadIdx.x; i < n; i += (long long)gridDim.x * CT_BLOCK) {
    const double v = (double)ct_clean(g[i]);
    s[0] += v * v;
  }
  ct_block_sum<1>(s, shm);
  if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}

// out[0] = the sum of n values, one block.
extern "C" __global__ void ct_sum_f64(const double* values, long long n, double* out) {
  __shared__ double shm[CT_BLOCK];
  double s[1] = {0.0};
  for (long long i = threadIdx.x; i < n; i += CT_BLOCK) s[0] += values[i];
  ct_block_sum<1>(s, shm);
  if (threadIdx.x == 0) out[0] = s[0];
}

// One optimiser step of one parameter, in place: clean and scale the gradient, update the
// moments, decay and update theta. kind: 0 Adam, 1 RAdam, 2 Lion. rect < 0: RAdam's
// unrectified phase. The f32 expressions are optim.rs `host_update`'s, term for term.
extern "C" __global__ void ct_optimizer_step(float* theta, const float* g, float* m, float* v, long long n, int kind,
                                             float b1, float b2, float eps, float lr, float wd, float scale,
                                             float adam_step, float bc1, float sbc2, float rect) {
  for (long long i = (long long)blockIdx.x * CT_BLOCK + threadIdx.x; i < n; i += (long long)gridDim.x * CT_BLOCK) {
    const float gi = ct_clean(g[i]) * scale;
    const float decayed = theta[i] * (1.0f - lr * wd);
    if (kind == 2) {
      const float cm = b1 * m[i] + (1.0f - b1) * gi;
      const float u = cm != cm ? cm : (cm > 0.0f ? 1.0f : (cm < 0.0f ? -1.0f : 0.0f));
      theta[i] = decayed - lr * u;
      m[i] = b2 * m[i] + (1.0f - b2) * gi;
    } else {
      const float mi = b1 * m[i] + (1.0f - b1) * gi;
      const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
      m[i] = mi;
      v[i] = vi;
      if (kind == 0) {
        theta[i] = decayed - adam_step * mi / (sqrtf(vi) / sbc2 + eps);
      } else {
        const float mhat = mi / bc1;
        const float delta = rect >= 0.0f ? lr * mhat * rect * sbc2 / (sqrtf(vi) + eps) : lr * mhat;
        theta[i] = decayed - delta;
      }
    }
  }
}

// ema <- b * ema + a * online, in place.
extern "C" __global__ void ct_ema(float* ema, const float* online, long long n, float b, float a) {
  for (long long i = (long long)blockIdx.x * CT_BLOCK + threadIdx.x; i < n; i += (long long)gridDim.x * CT_BLOCK)
    ema[i] = b * ema[i] + a * online[i];
}
