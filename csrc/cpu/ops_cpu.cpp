// C++ CPU kernels of the ops. One pass over the inputs, fp32 accumulation, OpenMP over
// (row, chunk) work items through at::parallel_for. Chunk boundaries are fixed (kChunk elements)
// and partial sums are combined in chunk order, so results do not depend on the thread count.
//
// Inputs: any float dtype (fp32/fp16/bf16; d, y, v are cast to the first input's dtype
// if they differ — one documented copy; gather_combine also takes fp64, accumulating in fp64).
// Rows may have any stride; the elements inside a row must be contiguous, otherwise the row
// block is made contiguous once (documented copy).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <c10/util/accumulate.h>

#include <cstring>
#include <type_traits>
#include <vector>

#include "../accept_rule.h"
#include "../sdsv_ops.h"

// Runtime ISA selection without -march=native: GCC/Clang emit AVX-512, AVX2(+FMA,F16C) and
// baseline clones of the hot loops and pick one when the library loads.
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__)) && !defined(SDSV_NO_CLONES)
#define SDSV_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SDSV_CLONES
#endif
#define SDSV_INLINE inline __attribute__((always_inline))

namespace sdsv {
namespace {

constexpr int64_t kChunk = 1 << 15;  // elements per work item
constexpr int kLanes = 16;           // independent fp32 accumulators (vectorisable, fixed order)
// work items (chunks) per thread at least: a parallel region costs a fork/join, and on a loaded
// machine a wake-up of the other threads; ~256K elements per thread keep that negligible
constexpr int64_t kGrain = 8;

// ---- element loads, upcast to fp32 right away ------------------------------------------------
SDSV_INLINE float ld(const float* p) { return *p; }
SDSV_INLINE float ld(const c10::BFloat16* p) {
  uint16_t b;
  std::memcpy(&b, p, 2);
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
#if defined(__FLT16_MAX__)
// IEEE binary16, same bits as c10::Half; converts with vcvtph2ps where F16C is available
SDSV_INLINE float ld(const c10::Half* p) { return float(*reinterpret_cast<const _Float16*>(p)); }
#else
SDSV_INLINE float ld(const c10::Half* p) { return static_cast<float>(*p); }
#endif
SDSV_INLINE double ld(const double* p) { return *p; }

// the accumulation type: fp32, or fp64 for fp64 data
template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <typename T, typename A>
SDSV_INLINE T st(A v) { return static_cast<T>(v); }  // round-to-nearest-even, as torch's .to()

// ---- pair statistics of one chunk ------------------------------------------------------------
template <typename T>
SDSV_INLINE void stats_chunk(const T* t, const T* d, const T* y, float h, int64_t n, float* out) {
  float a0[kLanes] = {}, a1[kLanes] = {}, a2[kLanes] = {}, a3[kLanes] = {}, a4[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float tv = ld(t + i + l), dv = ld(d + i + l), yv = ld(y + i + l);
      const float df = tv - dv, nx = yv + h * tv;
      a0[l] += tv * dv;
      a1[l] += tv * tv;
      a2[l] += dv * dv;
      a3[l] += df * df;
      a4[l] += nx * nx;
    }
  }
  for (int l = 0; i < n; ++i, ++l) {  // tail: lane l, still a fixed order
    const float tv = ld(t + i), dv = ld(d + i), yv = ld(y + i);
    const float df = tv - dv, nx = yv + h * tv;
    a0[l] += tv * dv;
    a1[l] += tv * tv;
    a2[l] += dv * dv;
    a3[l] += df * df;
    a4[l] += nx * nx;
  }
  float s[5] = {};
  for (int l = 0; l < kLanes; ++l) {
    s[0] += a0[l];
    s[1] += a1[l];
    s[2] += a2[l];
    s[3] += a3[l];
    s[4] += a4[l];
  }
  std::memcpy(out, s, sizeof(s));
}

SDSV_CLONES void stats_chunk_f32(const float* t, const float* d, const float* y, float h, int64_t n, float* o) {
  stats_chunk(t, d, y, h, n, o);
}
SDSV_CLONES void stats_chunk_f16(const c10::Half* t, const c10::Half* d, const c10::Half* y, float h, int64_t n, float* o) {
  stats_chunk(t, d, y, h, n, o);
}
SDSV_CLONES void stats_chunk_bf16(const c10::BFloat16* t, const c10::BFloat16* d, const c10::BFloat16* y, float h,
                                  int64_t n, float* o) {
  stats_chunk(t, d, y, h, n, o);
}
SDSV_INLINE void stats_chunk_any(const float* t, const float* d, const float* y, float h, int64_t n, float* o) {
  stats_chunk_f32(t, d, y, h, n, o);
}
SDSV_INLINE void stats_chunk_any(const c10::Half* t, const c10::Half* d, const c10::Half* y, float h, int64_t n, float* o) {
  stats_chunk_f16(t, d, y, h, n, o);
}
SDSV_INLINE void stats_chunk_any(const c10::BFloat16* t, const c10::BFloat16* d, const c10::BFloat16* y, float h,
                                 int64_t n, float* o) {
  stats_chunk_bf16(t, d, y, h, n, o);
}

// ---- out = x + h v over one chunk ----------------------------------------------------------------
template <typename T, typename O>
SDSV_INLINE void axpy_chunk(const T* x, const T* v, float h, O* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = st<O>(ld(x + i) + h * ld(v + i));
}
SDSV_CLONES void axpy_chunk_f32(const float* x, const float* v, float h, float* o, int64_t n) {
  axpy_chunk(x, v, h, o, n);
}
SDSV_CLONES void axpy_chunk_f16(const c10::Half* x, const c10::Half* v, float h, c10::Half* o, int64_t n) {
  axpy_chunk(x, v, h, o, n);
}
SDSV_CLONES void axpy_chunk_bf16(const c10::BFloat16* x, const c10::BFloat16* v, float h, c10::BFloat16* o, int64_t n) {
  axpy_chunk(x, v, h, o, n);
}
SDSV_INLINE void axpy_chunk_any(const float* x, const float* v, float h, float* o, int64_t n) {
  axpy_chunk_f32(x, v, h, o, n);
}
SDSV_INLINE void axpy_chunk_any(const c10::Half* x, const c10::Half* v, float h, c10::Half* o, int64_t n) {
  axpy_chunk_f16(x, v, h, o, n);
}
SDSV_INLINE void axpy_chunk_any(const c10::BFloat16* x, const c10::BFloat16* v, float h, c10::BFloat16* o, int64_t n) {
  axpy_chunk_bf16(x, v, h, o, n);
}

// ---- out = c0 base + sum_a c_a bank[idx_a] over one chunk --------------------------------------
// One term at a time into a small tile, in the reference's order; every pass over the tile
// vectorises. base/bank/out point at the chunk's first column; out may be base (same element
// read, then written), never bank.
template <typename T>
SDSV_INLINE void combine_chunk(const T* base, const T* bank, int64_t st_bank, const int64_t* idx, const acc_t<T>* c,
                               int64_t n_terms, T* out, int64_t n) {
  using A = acc_t<T>;
  constexpr int64_t kTile = 256;
  A tile[kTile];
  for (int64_t lo = 0; lo < n; lo += kTile) {
    const int64_t m = std::min(kTile, n - lo);
    for (int64_t i = 0; i < m; ++i) tile[i] = c[0] * ld(base + lo + i);
    for (int64_t a = 0; a < n_terms; ++a) {
      const T* src = bank + idx[a] * st_bank + lo;
      const A ca = c[a + 1];
      for (int64_t i = 0; i < m; ++i) tile[i] += ca * ld(src + i);
    }
    for (int64_t i = 0; i < m; ++i) out[lo + i] = st<T>(tile[i]);
  }
}
SDSV_CLONES void combine_chunk_k(const float* b, const float* k, int64_t sk, const int64_t* j, const float* c,
                                 int64_t na, float* o, int64_t n) {
  combine_chunk(b, k, sk, j, c, na, o, n);
}
SDSV_CLONES void combine_chunk_k(const c10::Half* b, const c10::Half* k, int64_t sk, const int64_t* j, const float* c,
                                 int64_t na, c10::Half* o, int64_t n) {
  combine_chunk(b, k, sk, j, c, na, o, n);
}
SDSV_CLONES void combine_chunk_k(const c10::BFloat16* b, const c10::BFloat16* k, int64_t sk, const int64_t* j,
                                 const float* c, int64_t na, c10::BFloat16* o, int64_t n) {
  combine_chunk(b, k, sk, j, c, na, o, n);
}
SDSV_CLONES void combine_chunk_k(const double* b, const double* k, int64_t sk, const int64_t* j, const double* c,
                                 int64_t na, double* o, int64_t n) {
  combine_chunk(b, k, sk, j, c, na, o, n);
}

// ---- layout helpers ----------------------------------------------------------------------------
// [R, D] with unit stride inside a row: a view when possible, else one copy
at::Tensor as_rows(const at::Tensor& x, int64_t n_rows) {
  // D spelled out, not -1 (ambiguous for a tensor with no elements)
  auto x2 = x.reshape({n_rows, c10::multiply_integers(x.sizes().slice(1))});
  if (x2.size(1) > 1 && x2.stride(1) != 1) x2 = x2.contiguous();
  return x2;
}

at::Tensor like_dtype(const at::Tensor& x, at::ScalarType dt) { return x.scalar_type() == dt ? x : x.to(dt); }

void check_float(const at::Tensor& x, const char* op, const char* name, bool allow_f64 = false) {
  TORCH_CHECK(x.device().is_cpu(), "sdsv cpp ", op, ": ", name, " must be a CPU tensor");
  const auto dt = x.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16 || (allow_f64 && dt == at::kDouble), "sdsv cpp ",
              op, ": ", name, " must be float32, float16 or bfloat16", allow_f64 ? " or float64" : "", ", got ", dt);
}

// A [rows, D] destination: `out` itself when its rows are unit-stride inside and its dtype is
// `dt`, else a fresh buffer that the caller copies into `out` afterwards (staging).
struct Dest {
  at::Tensor rows;
  bool staged;
};
Dest destination(const std::optional<at::Tensor>& out, at::IntArrayRef shape, int64_t n_rows, int64_t numel,
                 const at::TensorOptions& opts, const char* op) {
  if (!out.has_value()) return {at::empty({n_rows, numel}, opts), false};
  const auto& o = *out;
  TORCH_CHECK(o.numel() == n_rows * numel, "sdsv cpp ", op, ": out has ", o.numel(), " elements, expected ",
              n_rows * numel);
  TORCH_CHECK(o.device().is_cpu(), "sdsv cpp ", op, ": out must be a CPU tensor");
  if (o.scalar_type() == opts.dtype().toScalarType() && n_rows > 0) {
    auto v = o.view({n_rows, -1});  // throws if not viewable; caught below by is_view test
    if (v.size(1) <= 1 || v.stride(1) == 1) return {v, false};
  }
  return {at::empty({n_rows, numel}, opts), true};
}

Dest destination_safe(const std::optional<at::Tensor>& out, at::IntArrayRef shape, int64_t n_rows, int64_t numel,
                      const at::TensorOptions& opts, const char* op) {
  try {
    return destination(out, shape, n_rows, numel, opts, op);
  } catch (const c10::Error& e) {
    if (out.has_value() && out->numel() == n_rows * numel) return {at::empty({n_rows, numel}, opts), true};
    throw;
  }
}

// Calls f(row, chunk, lo, n) for every (row, chunk) work item of `rows` rows of `numel` elements
// (chunk `chunk` covers elements [lo, lo + n)), in parallel; the chunking never depends on threads
template <typename F>
void for_each_chunk(int64_t rows, int64_t numel, F&& f) {
  const int64_t chunks = std::max<int64_t>(1, (numel + kChunk - 1) / kChunk);
  at::parallel_for(0, rows * chunks, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) {
      const int64_t r = w / chunks, c = w % chunks;
      const int64_t lo = c * kChunk, n = std::min(numel, lo + kChunk) - lo;
      if (n > 0) f(r, c, lo, n);
    }
  });
}

// fp32 / fp16 / bf16, and fp64 for the ops that take it (check_float rejects the rest): calls f
// with a value of the C++ type
template <bool kWithF64 = false, typename F>
void dispatch_float(at::ScalarType dt, const char* op, F&& f) {
  switch (dt) {
    case at::kFloat: f(float{}); break;
    case at::kHalf: f(c10::Half{}); break;
    case at::kBFloat16: f(c10::BFloat16{}); break;
    case at::kDouble:
      if constexpr (kWithF64) {
        f(double{});
        break;
      }
      [[fallthrough]];
    default: TORCH_CHECK(false, "sdsv cpp ", op, ": unsupported dtype ", dt);
  }
}

}  // namespace

// ================================================================================================
at::Tensor pair_stats_cpu(const at::Tensor& t, const at::Tensor& d, const at::Tensor& y, const at::Tensor& h) {
  check_float(t, "pair_stats", "t");
  check_float(d, "pair_stats", "d");
  check_float(y, "pair_stats", "y");
  TORCH_CHECK(t.dim() >= 1 && t.sizes() == d.sizes() && t.sizes() == y.sizes(),
              "sdsv cpp pair_stats: t, d, y must have the same shape, got ", t.sizes(), ", ", d.sizes(), ", ",
              y.sizes());
  const int64_t n_rows = t.size(0);
  TORCH_CHECK(h.numel() == n_rows, "sdsv cpp pair_stats: h has ", h.numel(), " values for ", n_rows, " rows");
  auto out = at::zeros({n_rows, 5}, t.options().dtype(at::kFloat));
  if (n_rows == 0) return out;
  const auto dt = t.scalar_type();
  auto t2 = as_rows(t, n_rows), d2 = as_rows(like_dtype(d, dt), n_rows), y2 = as_rows(like_dtype(y, dt), n_rows);
  auto hf = h.to(at::kFloat).contiguous();
  const int64_t numel = t2.size(1);
  const int64_t chunks = std::max<int64_t>(1, (numel + kChunk - 1) / kChunk);
  std::vector<float> part(static_cast<size_t>(n_rows * chunks * 5), 0.f);
  const float* hp = hf.data_ptr<float>();
  dispatch_float(dt, "sdsv_pair_stats_cpu", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* tp = t2.data_ptr<scalar_t>();
    const scalar_t* dp = d2.data_ptr<scalar_t>();
    const scalar_t* yp = y2.data_ptr<scalar_t>();
    const int64_t st_t = t2.stride(0), st_d = d2.stride(0), st_y = y2.stride(0);
    for_each_chunk(n_rows, numel, [&](int64_t r, int64_t c, int64_t lo, int64_t n) {
      stats_chunk_any(tp + r * st_t + lo, dp + r * st_d + lo, yp + r * st_y + lo, hp[r], n, &part[(r * chunks + c) * 5]);
    });
  });
  float* o = out.data_ptr<float>();
  for (int64_t r = 0; r < n_rows; ++r)
    for (int64_t c = 0; c < chunks; ++c)
      for (int s = 0; s < 5; ++s) o[r * 5 + s] += part[(r * chunks + c) * 5 + s];
  return out;
}

// ================================================================================================
std::tuple<at::Tensor, at::Tensor> accept_commit_cpu(const at::Tensor& stats, const at::Tensor& y, const at::Tensor& t,
                                                     const at::Tensor& h, const at::Tensor& sigma,
                                                     const at::Tensor& window_k, int64_t metric, double tau, bool full,
                                                     const std::optional<at::Tensor>& out) {
  check_float(y, "accept_commit", "y");
  check_float(t, "accept_commit", "t");
  TORCH_CHECK(metric >= 0 && metric <= 3, "sdsv cpp accept_commit: unknown metric id ", metric);
  TORCH_CHECK(y.dim() >= 1 && y.sizes() == t.sizes(), "sdsv cpp accept_commit: y and t must have the same shape");
  const int64_t n_rows = y.size(0);
  auto st = stats.to(at::kFloat).contiguous();
  TORCH_CHECK(st.dim() == 2 && st.size(0) == n_rows && st.size(1) == 5, "sdsv cpp accept_commit: stats must be [",
              n_rows, ", 5], got ", stats.sizes());
  auto hf = h.to(at::kFloat).contiguous(), sf = sigma.to(at::kFloat).contiguous();
  TORCH_CHECK(hf.numel() == n_rows && sf.numel() == n_rows, "sdsv cpp accept_commit: h and sigma need one value per row");
  auto kk = window_k.to(at::kLong).contiguous();
  const int64_t n_samples = kk.numel();
  const auto dt = y.scalar_type();
  auto y2 = as_rows(y, n_rows), t2 = as_rows(like_dtype(t, dt), n_rows);
  const int64_t numel = y2.size(1);

  // decisions: a handful of scalars per sample, serial
  auto accepted = at::empty({n_samples}, kk.options());
  std::vector<int64_t> commit(static_cast<size_t>(n_samples));
  {
    const int64_t* kp = kk.data_ptr<int64_t>();
    int64_t* ap = accepted.data_ptr<int64_t>();
    int64_t start = 0;
    for (int64_t b = 0; b < n_samples; ++b) {
      TORCH_CHECK(kp[b] >= 0, "sdsv cpp accept_commit: window_k[", b, "] = ", kp[b], " < 0");
      const int64_t n = rows_of(kp[b], full);
      TORCH_CHECK(start + n <= n_rows, "sdsv cpp accept_commit: window_k asks for more rows than the ", n_rows, " given");
      decide(st.data_ptr<float>(), 5, hf.data_ptr<float>(), sf.data_ptr<float>(), static_cast<float>(numel), metric,
             static_cast<float>(tau), full, start, kp[b], ap + b, &commit[b]);
      start += n;
    }
    TORCH_CHECK(start == n_rows, "sdsv cpp accept_commit: window_k accounts for ", start, " rows, stats has ", n_rows);
  }

  std::vector<int64_t> shape(y.sizes().begin(), y.sizes().end());
  shape[0] = n_samples;
  auto dest = destination_safe(out, shape, n_samples, numel, y.options(), "accept_commit");
  const float* hp = hf.data_ptr<float>();
  dispatch_float(dt, "sdsv_accept_commit_cpu", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* yp = y2.data_ptr<scalar_t>();
    const scalar_t* tp = t2.data_ptr<scalar_t>();
    scalar_t* op = dest.rows.data_ptr<scalar_t>();
    const int64_t st_y = y2.stride(0), st_t = t2.stride(0), st_o = dest.rows.stride(0);
    for_each_chunk(n_samples, numel, [&](int64_t b, int64_t, int64_t lo, int64_t n) {
      const int64_t r = commit[b];
      axpy_chunk_any(yp + r * st_y + lo, tp + r * st_t + lo, hp[r], op + b * st_o + lo, n);
    });
  });
  if (out.has_value()) {
    if (dest.staged) out->copy_(dest.rows.view(out->sizes()));
    return {*out, accepted};
  }
  return {dest.rows.view(shape), accepted};
}

// ================================================================================================
at::Tensor rollout_step_cpu(const at::Tensor& x, const at::Tensor& v, const at::Tensor& h,
                            const std::optional<at::Tensor>& out) {
  check_float(x, "rollout_step", "x");
  check_float(v, "rollout_step", "v");
  TORCH_CHECK(x.dim() >= 1 && x.sizes() == v.sizes(), "sdsv cpp rollout_step: x and v must have the same shape");
  const int64_t n_rows = x.size(0);
  const auto dt = x.scalar_type();
  auto x2 = as_rows(x, n_rows), v2 = as_rows(like_dtype(v, dt), n_rows);
  const int64_t numel = n_rows ? x2.size(1) : 0;
  auto hf = h.to(at::kFloat).contiguous();
  TORCH_CHECK(hf.numel() == 1 || hf.numel() == n_rows, "sdsv cpp rollout_step: h has ", hf.numel(), " values for ",
              n_rows, " rows");
  auto dest = destination_safe(out, x.sizes(), n_rows, numel, x.options(), "rollout_step");
  const float* hp = hf.data_ptr<float>();
  const int64_t h_step = hf.numel() > 1 ? 1 : 0;
  if (n_rows > 0 && numel > 0) {
    dispatch_float(dt, "sdsv_rollout_step_cpu", [&](auto tag) {
    using scalar_t = decltype(tag);
      const scalar_t* xp = x2.data_ptr<scalar_t>();
      const scalar_t* vp = v2.data_ptr<scalar_t>();
      scalar_t* op = dest.rows.data_ptr<scalar_t>();
      const int64_t st_x = x2.stride(0), st_v = v2.stride(0), st_o = dest.rows.stride(0);
      for_each_chunk(n_rows, numel, [&](int64_t r, int64_t, int64_t lo, int64_t n) {
        axpy_chunk_any(xp + r * st_x + lo, vp + r * st_v + lo, hp[r * h_step], op + r * st_o + lo, n);
      });
    });
  }
  if (out.has_value()) {
    if (dest.staged) out->copy_(dest.rows.view(out->sizes()));
    return *out;
  }
  return dest.rows.view(x.sizes());
}

// ================================================================================================
at::Tensor gather_combine_cpu(const at::Tensor& base, const at::Tensor& bank, const at::Tensor& index,
                              const at::Tensor& coeffs, const std::optional<at::Tensor>& out) {
  check_float(base, "gather_combine", "base", /*allow_f64=*/true);
  check_gather_combine(base, bank, index, coeffs, "cpp");
  const auto dt = base.scalar_type();
  const int64_t n_rows = base.size(0), n_slots = bank.size(0), n_terms = index.size(1);
  auto idx = index.contiguous(), cf = coeffs.contiguous();
  const int64_t* ip = idx.data_ptr<int64_t>();
  for (int64_t k = 0; k < n_rows * n_terms; ++k)  // host memory: checking costs no sync here
    TORCH_CHECK(ip[k] >= 0 && ip[k] < n_slots, "sdsv cpp gather_combine: index[", k / n_terms, ", ", k % n_terms,
                "] = ", ip[k], " is out of range for a bank of ", n_slots, " slots");
  auto base2 = as_rows(base, n_rows);
  const int64_t numel = base2.size(1);
  auto bank2 = n_terms > 0 ? as_rows(bank, n_slots) : base2;  // no terms: the bank is never read
  auto dest = destination_safe(out, base.sizes(), n_rows, numel, base.options(), "gather_combine");
  if (numel > 0) {
    dispatch_float<true>(dt, "sdsv_gather_combine_cpu", [&](auto tag) {
      using scalar_t = decltype(tag);
      const scalar_t* bp = base2.data_ptr<scalar_t>();
      const scalar_t* kp = bank2.data_ptr<scalar_t>();
      const acc_t<scalar_t>* cp = cf.data_ptr<acc_t<scalar_t>>();
      scalar_t* op = dest.rows.data_ptr<scalar_t>();
      const int64_t st_b = base2.stride(0), st_k = bank2.stride(0), st_o = dest.rows.stride(0);
      for_each_chunk(n_rows, numel, [&](int64_t r, int64_t, int64_t lo, int64_t n) {
        combine_chunk_k(bp + r * st_b + lo, kp + lo, st_k, ip + r * n_terms, cp + r * (n_terms + 1), n_terms,
                        op + r * st_o + lo, n);
      });
    });
  }
  if (out.has_value()) {
    if (dest.staged) out->copy_(dest.rows.view(out->sizes()));
    return *out;
  }
  return dest.rows.view(base.sizes());
}

}  // namespace sdsv
