// Ops of sdsv_kernels._C. Semantics: sdsv_kernels/reference.py (the spec); the Python wrappers in
// sdsv_kernels/_ext.py convert h/sigma to fp32 tensors and the metric/verify names to ints.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace sdsv {

// metric ids, as sdsv_kernels._ext.METRIC_IDS
enum Metric : int64_t { kCosine = 0, kRelL2 = 1, kStateRelL2 = 2, kX0Rms = 3 };

// [R, 5] fp32: dot(t,d), |t|^2, |d|^2, |t-d|^2, |y + h t|^2 per row; h fp32 [R]
at::Tensor pair_stats_cpu(const at::Tensor& t, const at::Tensor& d, const at::Tensor& y, const at::Tensor& h);

// (x_next [B, ...], accepted [B] int64); h, sigma fp32 [R]; window_k int64 [B]
std::tuple<at::Tensor, at::Tensor> accept_commit_cpu(const at::Tensor& stats, const at::Tensor& y, const at::Tensor& t,
                                                     const at::Tensor& h, const at::Tensor& sigma,
                                                     const at::Tensor& window_k, int64_t metric, double tau, bool full,
                                                     const std::optional<at::Tensor>& out);

// x + h v; h fp32 with 1 or R values
at::Tensor rollout_step_cpu(const at::Tensor& x, const at::Tensor& v, const at::Tensor& h,
                            const std::optional<at::Tensor>& out);

// out[r] = c[r,0] base[r] + sum_a c[r,a+1] bank[index[r,a]]; fp32/fp16/bf16/fp64 data, index int64
// [R, A], coeffs [R, A+1] fp32 (fp64 for fp64 data), accumulated in the coefficients' dtype
// (checked by check_gather_combine below; the index range only on the CPU)
at::Tensor gather_combine_cpu(const at::Tensor& base, const at::Tensor& bank, const at::Tensor& index,
                              const at::Tensor& coeffs, const std::optional<at::Tensor>& out);

// The layout checks of gather_combine that the CPU and CUDA glue share: they keep a direct call
// of the module memory-safe (sdsv_kernels.reference.check_gather_combine_args checks everything
// first, with friendlier messages). `who` names the backend in the messages.
inline void check_gather_combine(const at::Tensor& base, const at::Tensor& bank, const at::Tensor& index,
                                 const at::Tensor& coeffs, const char* who) {
  const auto dt = base.scalar_type();
  TORCH_CHECK(bank.scalar_type() == dt, "sdsv ", who, " gather_combine: bank must be ", dt, ", got ", bank.scalar_type());
  TORCH_CHECK(bank.device() == base.device() && index.device() == base.device() && coeffs.device() == base.device(),
              "sdsv ", who, " gather_combine: bank, index and coeffs must be on base's device ", base.device());
  TORCH_CHECK(base.dim() >= 1 && bank.dim() == base.dim() && bank.sizes().slice(1) == base.sizes().slice(1), "sdsv ",
              who, " gather_combine: base [R, *F] and bank [S, *F] must share F, got ", base.sizes(), ", ", bank.sizes());
  TORCH_CHECK(index.scalar_type() == at::kLong && index.dim() == 2 && index.size(0) == base.size(0), "sdsv ", who,
              " gather_combine: index must be int64 [R, A], got ", index.scalar_type(), " ", index.sizes());
  const auto acc = dt == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(coeffs.scalar_type() == acc && coeffs.dim() == 2 && coeffs.size(0) == base.size(0) &&
                  coeffs.size(1) == index.size(1) + 1,
              "sdsv ", who, " gather_combine: coeffs must be ", acc, " [R, A+1], got ", coeffs.scalar_type(), " ",
              coeffs.sizes());
}

#ifdef SDSV_WITH_CUDA
at::Tensor pair_stats_cuda(const at::Tensor& t, const at::Tensor& d, const at::Tensor& y, const at::Tensor& h);
std::tuple<at::Tensor, at::Tensor> accept_commit_cuda(const at::Tensor& stats, const at::Tensor& y,
                                                      const at::Tensor& t, const at::Tensor& h,
                                                      const at::Tensor& sigma, const at::Tensor& window_k,
                                                      int64_t metric, double tau, bool full,
                                                      const std::optional<at::Tensor>& out);
at::Tensor rollout_step_cuda(const at::Tensor& x, const at::Tensor& v, const at::Tensor& h,
                             const std::optional<at::Tensor>& out);
at::Tensor gather_combine_cuda(const at::Tensor& base, const at::Tensor& bank, const at::Tensor& index,
                               const at::Tensor& coeffs, const std::optional<at::Tensor>& out);
#endif

}  // namespace sdsv
