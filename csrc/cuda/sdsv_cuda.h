// CUDA kernels of sdsv_kernels, as plain CUDA C++ behind a pointer-and-stride API: no torch
// headers, so `nvcc -c sdsv_cuda_kernels.cu` compiles standalone (CI does that, so the CUDA code
// cannot rot on CPU-only machines). ops_cuda.cpp is the thin torch glue, built only with CUDA.
//
// Layout: every tensor is R rows of D elements; elements of a row are contiguous, rows are
// `stride` elements apart. Rows are cut into `splits` chunks of `chunk` elements; one block per
// (chunk, row). Reductions use a fixed order (warp shuffles, then warps in index order, then
// chunks in index order): no atomics, same bits on every run.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace sdsv {
namespace cuda {

enum class DType : int { kF32 = 0, kF16 = 1, kBF16 = 2, kF64 = 3 };  // kF64: gather_combine only

constexpr int kThreads = 256;
constexpr int64_t kMaxTerms = 1024;  // gather_combine: A per launch (shared memory holds the row's terms)

// Chunking for R rows of D elements on a GPU with `sm_count` SMs (about 4 blocks per SM).
void plan_splits(int64_t rows, int64_t numel, int sm_count, int64_t* splits, int64_t* chunk);

// stats[R, 5] (fp32) <- dot(t,d), |t|^2, |d|^2, |t-d|^2, |y+ht|^2; partial: R*splits*5 fp32 scratch
cudaError_t pair_stats(DType dt, const void* t, int64_t stride_t, const void* d, int64_t stride_d, const void* y,
                       int64_t stride_y, const float* h, int64_t rows, int64_t numel, int64_t splits, int64_t chunk,
                       float* partial, float* stats, cudaStream_t stream);

// Decide each of `samples` windows from stats[R, 5] and write out[b] = y[r] + h[r] t[r] for its
// commit row r, accepted[b] = draft steps kept. window_k: int64 [samples] on the device.
cudaError_t accept_commit(DType dt, const float* stats, const void* y, int64_t stride_y, const void* t,
                          int64_t stride_t, const float* h, const float* sigma, const int64_t* window_k,
                          int64_t samples, int64_t numel, int metric, float tau, bool full, void* out,
                          int64_t stride_out, int64_t* accepted, int64_t splits, int64_t chunk, cudaStream_t stream);

// out = x + h v; h: 1 value (h_step 0) or R (h_step 1)
cudaError_t rollout_step(DType dt, const void* x, int64_t stride_x, const void* v, int64_t stride_v, const float* h,
                         int64_t h_step, void* out, int64_t stride_out, int64_t rows, int64_t numel, int64_t splits,
                         int64_t chunk, cudaStream_t stream);

// out[r] = c[r,0] base[r] + sum_a c[r,a+1] bank[index[r,a]] for r < rows; index: int64 [rows, terms]
// contiguous; coeffs: [rows, terms + 1] contiguous, float (double for kF64); terms <= kMaxTerms.
// The index range is not checked on the host (that would sync): an out-of-range slot is never
// read and its row comes out NaN. out may be base (same element read, then written), not bank.
cudaError_t gather_combine(DType dt, const void* base, int64_t stride_base, const void* bank, int64_t stride_bank,
                           int64_t slots, const int64_t* index, const void* coeffs, int64_t terms, void* out,
                           int64_t stride_out, int64_t rows, int64_t numel, int64_t splits, int64_t chunk,
                           cudaStream_t stream);

}  // namespace cuda
}  // namespace sdsv
