// Python module sdsv_kernels._C: one entry per op, dispatching on the tensors' device.
#include <torch/extension.h>

#include "sdsv_ops.h"

namespace {

bool has_cuda() {
#ifdef SDSV_WITH_CUDA
  return true;
#else
  return false;
#endif
}

[[noreturn]] void no_cuda(const char* op) {
  TORCH_CHECK(false, "sdsv_kernels._C.", op, ": CUDA tensors, but the extension was built without CUDA");
}

at::Tensor pair_stats(const at::Tensor& t, const at::Tensor& d, const at::Tensor& y, const at::Tensor& h) {
  if (t.is_cuda()) {
#ifdef SDSV_WITH_CUDA
    return sdsv::pair_stats_cuda(t, d, y, h);
#else
    no_cuda("pair_stats");
#endif
  }
  return sdsv::pair_stats_cpu(t, d, y, h);
}

std::tuple<at::Tensor, at::Tensor> accept_commit(const at::Tensor& stats, const at::Tensor& y, const at::Tensor& t,
                                                 const at::Tensor& h, const at::Tensor& sigma,
                                                 const at::Tensor& window_k, int64_t metric, double tau, bool full,
                                                 const std::optional<at::Tensor>& out) {
  if (y.is_cuda()) {
#ifdef SDSV_WITH_CUDA
    return sdsv::accept_commit_cuda(stats, y, t, h, sigma, window_k, metric, tau, full, out);
#else
    no_cuda("accept_commit");
#endif
  }
  return sdsv::accept_commit_cpu(stats, y, t, h, sigma, window_k, metric, tau, full, out);
}

at::Tensor rollout_step(const at::Tensor& x, const at::Tensor& v, const at::Tensor& h,
                        const std::optional<at::Tensor>& out) {
  if (x.is_cuda()) {
#ifdef SDSV_WITH_CUDA
    return sdsv::rollout_step_cuda(x, v, h, out);
#else
    no_cuda("rollout_step");
#endif
  }
  return sdsv::rollout_step_cpu(x, v, h, out);
}

at::Tensor gather_combine(const at::Tensor& base, const at::Tensor& bank, const at::Tensor& index,
                          const at::Tensor& coeffs, const std::optional<at::Tensor>& out) {
  if (base.is_cuda()) {
#ifdef SDSV_WITH_CUDA
    return sdsv::gather_combine_cuda(base, bank, index, coeffs, out);
#else
    no_cuda("gather_combine");
#endif
  }
  return sdsv::gather_combine_cpu(base, bank, index, coeffs, out);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "sdsv_kernels native ops (C++ CPU kernels; CUDA kernels when built with CUDA)";
  m.def("has_cuda", &has_cuda, "whether the CUDA kernels were compiled in");
  m.def("pair_stats", &pair_stats, py::arg("t"), py::arg("d"), py::arg("y"), py::arg("h"));
  m.def("accept_commit", &accept_commit, py::arg("stats"), py::arg("y"), py::arg("t"), py::arg("h"),
        py::arg("sigma"), py::arg("window_k"), py::arg("metric"), py::arg("tau"), py::arg("full"),
        py::arg("out") = py::none());
  m.def("rollout_step", &rollout_step, py::arg("x"), py::arg("v"), py::arg("h"), py::arg("out") = py::none());
  m.def("gather_combine", &gather_combine, py::arg("base"), py::arg("bank"), py::arg("index"), py::arg("coeffs"),
        py::arg("out") = py::none());
}
