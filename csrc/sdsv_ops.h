// Ops of sdsv_kernels._C. Semantics: sdsv_kernels/reference.py (the spec); the Python wrappers in
// sdsv_kernels/_ext.py convert h/sigma/scale to fp32 tensors and the metric/verify names to ints.
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

// x + h v, or x + h (u + g (v - u)); h, g fp32 with 1 or R values
at::Tensor rollout_step_cpu(const at::Tensor& x, const at::Tensor& v, const at::Tensor& h,
                            const std::optional<at::Tensor>& out, const std::optional<at::Tensor>& uncond,
                            const std::optional<at::Tensor>& scale);

#ifdef SDSV_WITH_CUDA
at::Tensor pair_stats_cuda(const at::Tensor& t, const at::Tensor& d, const at::Tensor& y, const at::Tensor& h);
std::tuple<at::Tensor, at::Tensor> accept_commit_cuda(const at::Tensor& stats, const at::Tensor& y,
                                                      const at::Tensor& t, const at::Tensor& h,
                                                      const at::Tensor& sigma, const at::Tensor& window_k,
                                                      int64_t metric, double tau, bool full,
                                                      const std::optional<at::Tensor>& out);
at::Tensor rollout_step_cuda(const at::Tensor& x, const at::Tensor& v, const at::Tensor& h,
                             const std::optional<at::Tensor>& out, const std::optional<at::Tensor>& uncond,
                             const std::optional<at::Tensor>& scale);
#endif

}  // namespace sdsv
