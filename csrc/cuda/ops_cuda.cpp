// Torch glue of the CUDA kernels (built only with SDSV_WITH_CUDA): checks, layout, allocation,
// current stream; the kernels themselves are plain CUDA in sdsv_cuda_kernels.cu.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/accumulate.h>

#include "../sdsv_ops.h"
#include "sdsv_cuda.h"

namespace sdsv {
namespace {

cuda::DType dtype_of(const at::Tensor& x, const char* op, bool allow_f64 = false) {
  switch (x.scalar_type()) {
    case at::kFloat: return cuda::DType::kF32;
    case at::kHalf: return cuda::DType::kF16;
    case at::kBFloat16: return cuda::DType::kBF16;
    case at::kDouble:
      if (allow_f64) return cuda::DType::kF64;
      [[fallthrough]];
    default:
      TORCH_CHECK(false, "sdsv cuda ", op, ": float32, float16 or bfloat16", allow_f64 ? " or float64" : "",
                  " expected, got ", x.scalar_type());
  }
}

at::Tensor as_rows(const at::Tensor& x, int64_t n_rows) {
  // D spelled out, not -1 (ambiguous for a tensor with no elements)
  auto x2 = x.reshape({n_rows, c10::multiply_integers(x.sizes().slice(1))});
  if (x2.size(1) > 1 && x2.stride(1) != 1) x2 = x2.contiguous();
  return x2;
}

at::Tensor like(const at::Tensor& x, const at::Tensor& ref) {
  return x.scalar_type() == ref.scalar_type() ? x : x.to(ref.scalar_type());
}

int sm_count(const at::Tensor& x) {
  int n = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, x.get_device()));
  return n;
}

// `out` itself when writable as [rows, D] rows with unit inner stride and the right dtype, else staging
std::pair<at::Tensor, bool> destination(const std::optional<at::Tensor>& out, int64_t n_rows, int64_t numel,
                                        const at::TensorOptions& opts) {
  if (!out.has_value()) return {at::empty({n_rows, numel}, opts), false};
  TORCH_CHECK(out->numel() == n_rows * numel, "sdsv cuda: out has ", out->numel(), " elements, expected ",
              n_rows * numel);
  TORCH_CHECK(out->device() == opts.device(), "sdsv cuda: out must be on ", opts.device());
  if (out->scalar_type() == opts.dtype().toScalarType() && n_rows > 0) {
    try {
      auto v = out->view({n_rows, -1});
      if (v.size(1) <= 1 || v.stride(1) == 1) return {v, false};
    } catch (const c10::Error&) {
    }
  }
  return {at::empty({n_rows, numel}, opts), true};
}

}  // namespace

at::Tensor pair_stats_cuda(const at::Tensor& t, const at::Tensor& d, const at::Tensor& y, const at::Tensor& h) {
  TORCH_CHECK(t.is_cuda() && d.device() == t.device() && y.device() == t.device() && h.device() == t.device(),
              "sdsv cuda pair_stats: all inputs must be on one CUDA device");
  TORCH_CHECK(t.dim() >= 1 && t.sizes() == d.sizes() && t.sizes() == y.sizes(),
              "sdsv cuda pair_stats: t, d, y must have the same shape");
  const c10::cuda::CUDAGuard guard(t.device());
  const int64_t n_rows = t.size(0);
  auto t2 = as_rows(t, n_rows), d2 = as_rows(like(d, t), n_rows), y2 = as_rows(like(y, t), n_rows);
  auto hf = h.to(at::kFloat).contiguous();
  TORCH_CHECK(hf.numel() == n_rows, "sdsv cuda pair_stats: h needs one value per row");
  auto stats = at::empty({n_rows, 5}, t.options().dtype(at::kFloat));
  if (n_rows == 0) return stats;
  const int64_t numel = t2.size(1);
  int64_t splits = 1, chunk = 1;
  cuda::plan_splits(n_rows, numel, sm_count(t), &splits, &chunk);
  auto partial = at::empty({n_rows, splits, 5}, stats.options());
  C10_CUDA_CHECK(cuda::pair_stats(dtype_of(t, "pair_stats"), t2.data_ptr(), t2.stride(0), d2.data_ptr(), d2.stride(0),
                                  y2.data_ptr(), y2.stride(0), hf.data_ptr<float>(), n_rows, numel, splits, chunk,
                                  partial.data_ptr<float>(), stats.data_ptr<float>(),
                                  c10::cuda::getCurrentCUDAStream().stream()));
  return stats;
}

std::tuple<at::Tensor, at::Tensor> accept_commit_cuda(const at::Tensor& stats, const at::Tensor& y,
                                                      const at::Tensor& t, const at::Tensor& h,
                                                      const at::Tensor& sigma, const at::Tensor& window_k,
                                                      int64_t metric, double tau, bool full,
                                                      const std::optional<at::Tensor>& out) {
  TORCH_CHECK(y.is_cuda() && t.device() == y.device(), "sdsv cuda accept_commit: y and t must be on one CUDA device");
  TORCH_CHECK(y.dim() >= 1 && y.sizes() == t.sizes(), "sdsv cuda accept_commit: y and t must have the same shape");
  TORCH_CHECK(metric >= 0 && metric <= 3, "sdsv cuda accept_commit: unknown metric id ", metric);
  const c10::cuda::CUDAGuard guard(y.device());
  const int64_t n_rows = y.size(0);
  auto st = stats.to(y.device(), at::kFloat).contiguous();
  TORCH_CHECK(st.dim() == 2 && st.size(0) == n_rows && st.size(1) == 5, "sdsv cuda accept_commit: stats must be [R, 5]");
  auto hf = h.to(y.device(), at::kFloat).contiguous(), sf = sigma.to(y.device(), at::kFloat).contiguous();
  auto kk = window_k.to(y.device(), at::kLong).contiguous();
  const int64_t samples = kk.numel();
  auto y2 = as_rows(y, n_rows), t2 = as_rows(like(t, y), n_rows);
  const int64_t numel = y2.size(1);
  auto [dest, staged] = destination(out, samples, numel, y.options());
  auto accepted = at::empty({samples}, kk.options());
  int64_t splits = 1, chunk = 1;
  cuda::plan_splits(samples, numel, sm_count(y), &splits, &chunk);
  // no host sync: the rows-per-sample offsets and the decisions are computed in the kernel
  C10_CUDA_CHECK(cuda::accept_commit(dtype_of(y, "accept_commit"), st.data_ptr<float>(), y2.data_ptr(), y2.stride(0),
                                     t2.data_ptr(), t2.stride(0), hf.data_ptr<float>(), sf.data_ptr<float>(),
                                     kk.data_ptr<int64_t>(), samples, numel, static_cast<int>(metric),
                                     static_cast<float>(tau), full, dest.data_ptr(), dest.stride(0),
                                     accepted.data_ptr<int64_t>(), splits, chunk,
                                     c10::cuda::getCurrentCUDAStream().stream()));
  std::vector<int64_t> shape(y.sizes().begin(), y.sizes().end());
  shape[0] = samples;
  if (out.has_value()) {
    if (staged) out->copy_(dest.view(out->sizes()));
    return {*out, accepted};
  }
  return {dest.view(shape), accepted};
}

at::Tensor rollout_step_cuda(const at::Tensor& x, const at::Tensor& v, const at::Tensor& h,
                             const std::optional<at::Tensor>& out) {
  TORCH_CHECK(x.is_cuda() && v.device() == x.device(), "sdsv cuda rollout_step: x and v must be on one CUDA device");
  TORCH_CHECK(x.dim() >= 1 && x.sizes() == v.sizes(), "sdsv cuda rollout_step: x and v must have the same shape");
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n_rows = x.size(0);
  auto x2 = as_rows(x, n_rows), v2 = as_rows(like(v, x), n_rows);
  const int64_t numel = n_rows ? x2.size(1) : 0;
  auto hf = h.to(x.device(), at::kFloat).contiguous();
  TORCH_CHECK(hf.numel() == 1 || hf.numel() == n_rows, "sdsv cuda rollout_step: h needs 1 or R values");
  auto [dest, staged] = destination(out, n_rows, numel, x.options());
  int64_t splits = 1, chunk = 1;
  cuda::plan_splits(n_rows, numel, sm_count(x), &splits, &chunk);
  C10_CUDA_CHECK(cuda::rollout_step(dtype_of(x, "rollout_step"), x2.data_ptr(), x2.stride(0), v2.data_ptr(),
                                    v2.stride(0), hf.data_ptr<float>(), hf.numel() > 1 ? 1 : 0, dest.data_ptr(),
                                    dest.stride(0), n_rows, numel, splits, chunk,
                                    c10::cuda::getCurrentCUDAStream().stream()));
  if (out.has_value()) {
    if (staged) out->copy_(dest.view(out->sizes()));
    return *out;
  }
  return dest.view(x.sizes());
}

at::Tensor gather_combine_cuda(const at::Tensor& base, const at::Tensor& bank, const at::Tensor& index,
                               const at::Tensor& coeffs, const std::optional<at::Tensor>& out) {
  TORCH_CHECK(base.is_cuda(), "sdsv cuda gather_combine: base must be a CUDA tensor");
  check_gather_combine(base, bank, index, coeffs, "cuda");
  const auto dt = dtype_of(base, "gather_combine", /*allow_f64=*/true);
  const int64_t n_rows = base.size(0), n_slots = bank.size(0), n_terms = index.size(1);
  TORCH_CHECK(n_terms <= cuda::kMaxTerms, "sdsv cuda gather_combine: at most ", cuda::kMaxTerms, " terms, got ", n_terms);
  const c10::cuda::CUDAGuard guard(base.device());
  auto base2 = as_rows(base, n_rows);
  const int64_t numel = base2.size(1);
  // no terms: the bank is never read; an empty bank (all indices out of range): never read either
  auto bank2 = n_terms > 0 && n_slots > 0 ? as_rows(bank, n_slots) : base2;
  auto idx = index.contiguous(), cf = coeffs.contiguous();
  auto [dest, staged] = destination(out, n_rows, numel, base.options());
  int64_t splits = 1, chunk = 1;
  cuda::plan_splits(n_rows, numel, sm_count(base), &splits, &chunk);
  // no host sync: the index range is checked in the kernel (an out-of-range slot gives a NaN row)
  C10_CUDA_CHECK(cuda::gather_combine(dt, base2.data_ptr(), base2.stride(0), bank2.data_ptr(), bank2.stride(0), n_slots,
                                      idx.data_ptr<int64_t>(), cf.data_ptr(), n_terms, dest.data_ptr(), dest.stride(0),
                                      n_rows, numel, splits, chunk, c10::cuda::getCurrentCUDAStream().stream()));
  if (out.has_value()) {
    if (staged) out->copy_(dest.view(out->sizes()));
    return *out;
  }
  return dest.view(base.sizes());
}

}  // namespace sdsv
