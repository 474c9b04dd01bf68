// CUDA kernels of sdsv_kernels (see sdsv_cuda.h). Compiles standalone: nvcc -c sdsv_cuda_kernels.cu
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../accept_rule.h"
#include "sdsv_cuda.h"

namespace sdsv {
namespace cuda {
namespace {

// ---- loads (upcast to fp32 right away) and stores ---------------------------------------------
__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
__device__ __forceinline__ double to_f(double v) { return v; }

// accumulation type of T (fp32; fp64 for fp64 data) and the rounding store back to T
template <typename T>
struct Io {
  using acc = float;
  static __device__ __forceinline__ T store(float v) { return from_f<T>(v); }
};
template <>
struct Io<double> {
  using acc = double;
  static __device__ __forceinline__ double store(double v) { return v; }
};

// 16-byte vector of T: 4 floats or 8 halves
template <typename T>
struct Pack {
  static constexpr int N = 16 / sizeof(T);
  union {
    uint4 raw;
    T v[N];
  };
};

template <typename T>
__device__ __forceinline__ bool aligned16(const void* p, int64_t stride, int64_t chunk) {
  return (reinterpret_cast<uintptr_t>(p) % 16 == 0) && ((stride * (int64_t)sizeof(T)) % 16 == 0) &&
         ((chunk * (int64_t)sizeof(T)) % 16 == 0);
}

// deterministic block sum of 5 values; result valid in thread 0
__device__ __forceinline__ void block_sum5(float (&a)[5]) {
  __shared__ float warp_sums[kThreads / 32][5];
#pragma unroll
  for (int s = 0; s < 5; ++s)
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) a[s] += __shfl_down_sync(0xffffffffu, a[s], off);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0)
#pragma unroll
    for (int s = 0; s < 5; ++s) warp_sums[warp][s] = a[s];
  __syncthreads();
  if (threadIdx.x == 0) {
#pragma unroll
    for (int s = 0; s < 5; ++s) {
      float acc = 0.f;
      for (int w = 0; w < kThreads / 32; ++w) acc += warp_sums[w][s];
      a[s] = acc;
    }
  }
}

__device__ __forceinline__ void accumulate(float (&a)[5], float t, float d, float y, float h) {
  const float df = t - d, nx = y + h * t;
  a[0] += t * d;
  a[1] += t * t;
  a[2] += d * d;
  a[3] += df * df;
  a[4] += nx * nx;
}

// grid (splits, rows)
template <typename T>
__global__ void __launch_bounds__(kThreads) pair_stats_partial_kernel(const T* __restrict__ t, int64_t st_t,
                                                                      const T* __restrict__ d, int64_t st_d,
                                                                      const T* __restrict__ y, int64_t st_y,
                                                                      const float* __restrict__ h, int64_t numel,
                                                                      int64_t chunk, float* __restrict__ partial) {
  const int64_t split = blockIdx.x, row = blockIdx.y, splits = gridDim.x;
  const int64_t lo = split * chunk;
  const int64_t hi = lo + chunk < numel ? lo + chunk : numel;
  const T* tr = t + row * st_t;
  const T* dr = d + row * st_d;
  const T* yr = y + row * st_y;
  const float hv = h[row];
  float a[5] = {0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t i0 = lo;
  constexpr int N = Pack<T>::N;
  if (aligned16<T>(t, st_t, chunk) && aligned16<T>(d, st_d, chunk) && aligned16<T>(y, st_y, chunk)) {
    const int64_t nvec = (hi - lo) / N;
    for (int64_t j = threadIdx.x; j < nvec; j += kThreads) {
      Pack<T> pt, pd, py;
      const int64_t e = lo + j * N;
      pt.raw = __ldg(reinterpret_cast<const uint4*>(tr + e));
      pd.raw = __ldg(reinterpret_cast<const uint4*>(dr + e));
      py.raw = __ldg(reinterpret_cast<const uint4*>(yr + e));
#pragma unroll
      for (int q = 0; q < N; ++q) accumulate(a, to_f(pt.v[q]), to_f(pd.v[q]), to_f(py.v[q]), hv);
    }
    i0 = lo + nvec * N;
  }
  for (int64_t i = i0 + threadIdx.x; i < hi; i += kThreads) accumulate(a, to_f(tr[i]), to_f(dr[i]), to_f(yr[i]), hv);
  block_sum5(a);
  if (threadIdx.x == 0) {
    float* p = partial + (row * splits + split) * 5;
#pragma unroll
    for (int s = 0; s < 5; ++s) p[s] = a[s];
  }
}

// one thread per (row, column): sum the row's chunk partials in chunk order
__global__ void pair_stats_finalize_kernel(const float* __restrict__ partial, int64_t rows, int64_t splits,
                                           float* __restrict__ stats) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= rows * 5) return;
  const int64_t row = i / 5, col = i % 5;
  float acc = 0.f;
  for (int64_t s = 0; s < splits; ++s) acc += partial[(row * splits + s) * 5 + col];
  stats[i] = acc;
}

// grid (splits, samples); thread 0 of every block decides its sample (a few dozen scalars)
template <typename T>
__global__ void __launch_bounds__(kThreads) accept_commit_kernel(
    const float* __restrict__ stats, const T* __restrict__ y, int64_t st_y, const T* __restrict__ t, int64_t st_t,
    const float* __restrict__ h, const float* __restrict__ sigma, const int64_t* __restrict__ window_k,
    int64_t numel, int metric, float tau, bool full, T* __restrict__ out, int64_t st_out,
    int64_t* __restrict__ accepted, int64_t chunk) {
  __shared__ int64_t commit_row;
  const int64_t split = blockIdx.x, b = blockIdx.y;
  if (threadIdx.x == 0) {
    int64_t start = 0;
    for (int64_t q = 0; q < b; ++q) start += rows_of(window_k[q], full);
    int64_t a = 0, r = 0;
    decide(stats, 5, h, sigma, static_cast<float>(numel), metric, tau, full, start, window_k[b], &a, &r);
    commit_row = r;
    if (split == 0) accepted[b] = a;
  }
  __syncthreads();
  const int64_t r = commit_row;
  const float hv = h[r];
  const T* yr = y + r * st_y;
  const T* tr = t + r * st_t;
  T* orow = out + b * st_out;
  const int64_t lo = split * chunk;
  const int64_t hi = lo + chunk < numel ? lo + chunk : numel;
  for (int64_t i = lo + threadIdx.x; i < hi; i += kThreads) orow[i] = from_f<T>(to_f(yr[i]) + hv * to_f(tr[i]));
}

// grid (splits, rows)
template <typename T>
__global__ void __launch_bounds__(kThreads) rollout_kernel(const T* __restrict__ x, int64_t st_x,
                                                           const T* __restrict__ v, int64_t st_v,
                                                           const float* __restrict__ h, int64_t h_step, T* out,
                                                           int64_t st_out, int64_t numel, int64_t chunk) {
  const int64_t split = blockIdx.x, row = blockIdx.y;
  const float hv = h[row * h_step];
  const T* xr = x + row * st_x;
  const T* vr = v + row * st_v;
  T* orow = out + row * st_out;
  const int64_t lo = split * chunk;
  const int64_t hi = lo + chunk < numel ? lo + chunk : numel;
  for (int64_t i = lo + threadIdx.x; i < hi; i += kThreads) orow[i] = from_f<T>(to_f(xr[i]) + hv * to_f(vr[i]));
}

// grid (splits, rows). The row's gathered slot pointers and coefficients are staged in shared
// memory once; each thread then streams base and every gathered bank row through its elements.
template <typename T>
__global__ void __launch_bounds__(kThreads) gather_combine_kernel(const T* base, int64_t st_base,
                                                                  const T* __restrict__ bank, int64_t st_bank,
                                                                  int64_t slots, const int64_t* __restrict__ index,
                                                                  const typename Io<T>::acc* __restrict__ coeffs,
                                                                  int64_t terms, T* out, int64_t st_out,
                                                                  int64_t numel, int64_t chunk) {
  using A = typename Io<T>::acc;
  extern __shared__ __align__(16) unsigned char smem[];
  const T** src = reinterpret_cast<const T**>(smem);  // [terms], then the coefficients [terms + 1]
  A* c = reinterpret_cast<A*>(src + terms);
  __shared__ int bad;
  const int64_t split = blockIdx.x, row = blockIdx.y;
  if (threadIdx.x == 0) bad = 0;
  __syncthreads();
  for (int64_t a = threadIdx.x; a < terms; a += kThreads) {
    const int64_t j = index[row * terms + a];
    const bool ok = j >= 0 && j < slots;
    if (!ok) bad = 1;  // unchecked on the host (a GPU index would sync): never read, NaN row
    src[a] = ok ? bank + j * st_bank : bank;
  }
  for (int64_t a = threadIdx.x; a <= terms; a += kThreads) c[a] = coeffs[row * (terms + 1) + a];
  __syncthreads();
  const T* br = base + row * st_base;
  T* orow = out + row * st_out;
  const int64_t lo = split * chunk;
  const int64_t hi = lo + chunk < numel ? lo + chunk : numel;
  if (bad) {
    for (int64_t i = lo + threadIdx.x; i < hi; i += kThreads) orow[i] = Io<T>::store(A(NAN));
    return;
  }
  int64_t i0 = lo;
  constexpr int N = Pack<T>::N;
  // 16-byte loads and stores where every row is aligned (the profile's scalar loads left most of
  // the bandwidth unused); each element still sums base first, then the terms in order, so both
  // paths give the same bits
  if (aligned16<T>(base, st_base, chunk) && aligned16<T>(bank, st_bank, chunk) && aligned16<T>(out, st_out, chunk)) {
    const int64_t nvec = (hi - lo) / N;
    for (int64_t j = threadIdx.x; j < nvec; j += kThreads) {
      const int64_t e = lo + j * N;
      Pack<T> pb, po;
      pb.raw = __ldg(reinterpret_cast<const uint4*>(br + e));
      A acc[N];
#pragma unroll
      for (int q = 0; q < N; ++q) acc[q] = c[0] * to_f(pb.v[q]);
      for (int64_t a = 0; a < terms; ++a) {
        Pack<T> ps;
        ps.raw = __ldg(reinterpret_cast<const uint4*>(src[a] + e));
        const A ca = c[a + 1];
#pragma unroll
        for (int q = 0; q < N; ++q) acc[q] += ca * to_f(ps.v[q]);
      }
#pragma unroll
      for (int q = 0; q < N; ++q) po.v[q] = Io<T>::store(acc[q]);
      *reinterpret_cast<uint4*>(orow + e) = po.raw;
    }
    i0 = lo + nvec * N;
  }
  for (int64_t i = i0 + threadIdx.x; i < hi; i += kThreads) {
    A acc = c[0] * to_f(br[i]);  // the reference's order: base first, then the terms in order
    for (int64_t a = 0; a < terms; ++a) acc += c[a + 1] * to_f(src[a][i]);
    orow[i] = Io<T>::store(acc);
  }
}

// fp32 / fp16 / bf16, and fp64 for the ops that take it
template <bool kWithF64 = false, typename F>
cudaError_t by_dtype(DType dt, F&& f) {
  switch (dt) {
    case DType::kF32: return f(float{});
    case DType::kF16: return f(__half{});
    case DType::kBF16: return f(__nv_bfloat16{});
    case DType::kF64:
      if constexpr (kWithF64) return f(double{});
      break;
  }
  return cudaErrorInvalidValue;
}

}  // namespace

void plan_splits(int64_t rows, int64_t numel, int sm_count, int64_t* splits, int64_t* chunk) {
  const int64_t unit = (int64_t)kThreads * 8;  // a chunk is a multiple of 2048 elements (16-byte packs)
  const int64_t want = 4 * (int64_t)(sm_count > 0 ? sm_count : 1);
  int64_t s = rows > 0 ? (want + rows - 1) / rows : 1;
  const int64_t max_s = (numel + 4 * unit - 1) / (4 * unit);  // at least ~8K elements per block
  if (s > max_s) s = max_s;
  if (s < 1) s = 1;
  if (s > 65535) s = 65535;
  int64_t c = (numel + s - 1) / s;
  c = ((c + unit - 1) / unit) * unit;
  if (c < unit) c = unit;
  *chunk = c;
  *splits = numel > 0 ? (numel + c - 1) / c : 1;
}

cudaError_t pair_stats(DType dt, const void* t, int64_t stride_t, const void* d, int64_t stride_d, const void* y,
                       int64_t stride_y, const float* h, int64_t rows, int64_t numel, int64_t splits, int64_t chunk,
                       float* partial, float* stats, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (rows > 65535) return cudaErrorInvalidConfiguration;
  cudaError_t err = by_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    pair_stats_partial_kernel<T><<<dim3((unsigned)splits, (unsigned)rows), kThreads, 0, stream>>>(
        static_cast<const T*>(t), stride_t, static_cast<const T*>(d), stride_d, static_cast<const T*>(y), stride_y, h,
        numel, chunk, partial);
    return cudaGetLastError();
  });
  if (err != cudaSuccess) return err;
  const int64_t n = rows * 5;
  pair_stats_finalize_kernel<<<(unsigned)((n + 127) / 128), 128, 0, stream>>>(partial, rows, splits, stats);
  return cudaGetLastError();
}

cudaError_t accept_commit(DType dt, const float* stats, const void* y, int64_t stride_y, const void* t,
                          int64_t stride_t, const float* h, const float* sigma, const int64_t* window_k,
                          int64_t samples, int64_t numel, int metric, float tau, bool full, void* out,
                          int64_t stride_out, int64_t* accepted, int64_t splits, int64_t chunk, cudaStream_t stream) {
  if (samples == 0) return cudaSuccess;
  if (samples > 65535) return cudaErrorInvalidConfiguration;
  return by_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    accept_commit_kernel<T><<<dim3((unsigned)splits, (unsigned)samples), kThreads, 0, stream>>>(
        stats, static_cast<const T*>(y), stride_y, static_cast<const T*>(t), stride_t, h, sigma, window_k, numel,
        metric, tau, full, static_cast<T*>(out), stride_out, accepted, chunk);
    return cudaGetLastError();
  });
}

cudaError_t rollout_step(DType dt, const void* x, int64_t stride_x, const void* v, int64_t stride_v, const float* h,
                         int64_t h_step, void* out, int64_t stride_out, int64_t rows, int64_t numel, int64_t splits,
                         int64_t chunk, cudaStream_t stream) {
  if (rows == 0 || numel == 0) return cudaSuccess;
  if (rows > 65535) return cudaErrorInvalidConfiguration;
  return by_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    rollout_kernel<T><<<dim3((unsigned)splits, (unsigned)rows), kThreads, 0, stream>>>(
        static_cast<const T*>(x), stride_x, static_cast<const T*>(v), stride_v, h, h_step, static_cast<T*>(out),
        stride_out, numel, chunk);
    return cudaGetLastError();
  });
}

cudaError_t gather_combine(DType dt, const void* base, int64_t stride_base, const void* bank, int64_t stride_bank,
                           int64_t slots, const int64_t* index, const void* coeffs, int64_t terms, void* out,
                           int64_t stride_out, int64_t rows, int64_t numel, int64_t splits, int64_t chunk,
                           cudaStream_t stream) {
  if (rows == 0 || numel == 0) return cudaSuccess;
  if (rows > 65535 || terms < 0 || terms > kMaxTerms) return cudaErrorInvalidConfiguration;
  return by_dtype<true>(dt, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Io<T>::acc;
    const size_t shared = (size_t)terms * sizeof(const T*) + (size_t)(terms + 1) * sizeof(A);
    gather_combine_kernel<T><<<dim3((unsigned)splits, (unsigned)rows), kThreads, shared, stream>>>(
        static_cast<const T*>(base), stride_base, static_cast<const T*>(bank), stride_bank, slots, index,
        static_cast<const A*>(coeffs), terms, static_cast<T*>(out), stride_out, numel, chunk);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace sdsv
