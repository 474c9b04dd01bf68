// The acceptance rule, shared by the C++ CPU kernels and the CUDA kernels (plain C++, no torch).
// Mirrors sdsv_kernels/reference.py: metric_values, accept_mask, accepted_steps — in fp32 with
// the same operation order, so decisions at the threshold agree with the reference.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SDSV_HD __host__ __device__ inline
#else
#define SDSV_HD inline
#endif

namespace sdsv {

constexpr float kEps = 1e-20f;  // reference._EPS

// torch.clamp_min semantics: NaN stays NaN (fmaxf would turn it into lo and could accept it)
SDSV_HD float clamp_min_nan(float x, float lo) { return x < lo ? lo : x; }

// stats: the 5 columns of one row; h, sigma: that row's step size and noise level
SDSV_HD float metric_value(const float* s, float h, float sigma, float numel, int64_t metric) {
  switch (metric) {
    case 0: return s[0] / clamp_min_nan(sqrtf(s[1] * s[2]), kEps);             // cosine
    case 1: return sqrtf(s[3]) / clamp_min_nan(sqrtf(s[1]), kEps);             // rel_l2
    case 2: return fabsf(h) * sqrtf(s[3]) / clamp_min_nan(sqrtf(s[4]), kEps);  // state_rel_l2
    default: return sigma * sqrtf(s[3] / numel);                               // x0_rms
  }
}

// NaN compares false both ways, so a broken row never passes
SDSV_HD bool passes(float value, int64_t metric, float tau) { return metric == 0 ? value >= tau : value <= tau; }

// reference.accept_commit also requires all five statistics to be finite (NaN/inf in y, t or d)
SDSV_HD bool finite5(const float* s) {
  bool ok = true;
  for (int c = 0; c < 5; ++c) ok = ok && (fabsf(s[c]) <= 3.402823466e+38f);  // false for NaN and inf
  return ok;
}

SDSV_HD bool row_passes(const float* s, float h, float sigma, float numel, int64_t metric, float tau) {
  return finite5(s) && passes(metric_value(s, h, sigma, numel, metric), metric, tau);
}

SDSV_HD int64_t rows_of(int64_t k, bool full) { return full ? k + 1 : (k > 0 ? 2 : 1); }

// Decide one sample whose n = rows_of(k) rows start at `start`. Writes the accepted draft steps
// and the commit row (global index). full: leading rows j < k that pass; endpoints: all or none.
SDSV_HD void decide(const float* stats, int64_t stats_stride, const float* h, const float* sigma, float numel,
                    int64_t metric, float tau, bool full, int64_t start, int64_t k, int64_t* accepted,
                    int64_t* commit_row) {
  const int64_t n = rows_of(k, full);
  if (full) {
    int64_t a = k;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t r = start + j;
      if (!row_passes(stats + r * stats_stride, h[r], sigma[r], numel, metric, tau)) {
        a = j;
        break;
      }
    }
    *accepted = a;
    *commit_row = start + a;
    return;
  }
  bool ok = k > 0;
  for (int64_t j = 0; j < n && ok; ++j) {
    const int64_t r = start + j;
    ok = row_passes(stats + r * stats_stride, h[r], sigma[r], numel, metric, tau);
  }
  *accepted = ok ? k : 0;
  *commit_row = start + (ok ? n - 1 : 0);
}

}  // namespace sdsv
