// CPU kernels for the native AST (transforms/model/ast_native.py), loaded by MindSpore as
// ops.Custom(func_type="aot") operators. MindSpore 2.7's own CPU kernels for erf, LayerNorm and
// Softmax are single-threaded and scalar on AVX2 hosts; these are plain loops the compiler
// vectorises (-O3 -mavx2 -mfma), split over the cores this process may use (std::thread; no
// OpenMP, whose spinning workers would compete with MindSpore's own pool).
//
// AOT signature (MindSpore ops.Custom "aot"): inputs then outputs in params[].
//   int f(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
//         void *stream, void *extra)
// All kernels take float32 only and return 1 (failure) on anything else.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <sched.h>
#include <thread>
#include <vector>

namespace {

int worker_count() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;
}

// Runs body(begin, end) over [0, rows) in contiguous chunks, one per worker thread.
template <typename F>
void parallel_rows(int64_t rows, int64_t min_rows_per_thread, F body) {
  int workers = worker_count();
  int64_t max_workers = std::max<int64_t>(1, rows / std::max<int64_t>(1, min_rows_per_thread));
  workers = static_cast<int>(std::min<int64_t>(workers, max_workers));
  if (workers <= 1) {
    body(0, rows);
    return;
  }
  std::vector<std::thread> threads;
  threads.reserve(workers - 1);
  int64_t chunk = (rows + workers - 1) / workers;
  for (int w = 1; w < workers; ++w) {
    int64_t b = w * chunk, e = std::min(rows, b + chunk);
    if (b >= e) break;
    threads.emplace_back(body, b, e);
  }
  body(0, std::min(rows, chunk));
  for (auto &t : threads) t.join();
}

int64_t numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

bool all_float32(int nparam, const char **dtypes) {
  for (int i = 0; i < nparam; ++i)
    if (std::strcmp(dtypes[i], "float32") != 0 && std::strcmp(dtypes[i], "float") != 0) return false;
  return true;
}

// exp(x) for x <= 0 (and moderate x > 0): Cody-Waite range reduction x = n ln2 + r, a degree-6
// polynomial for exp(r) on |r| <= ln2/2 (relative error ~2e-7), and 2^n built in the exponent
// bits. Branch-free, so the loops that call it vectorise.
inline float fast_exp(float x) {
  x = std::min(88.3762626647949f, std::max(-87.3365447504f, x));
  float n = std::nearbyint(x * 1.44269504088896341f);
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// erf(x), Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7), the formula PyTorch's own
// vectorised CPU erf uses.
inline float fast_erf(float x) {
  float ax = std::fabs(x);
  float t = 1.0f / (1.0f + 0.3275911f * ax);
  float poly = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t
                + 0.254829592f) * t;
  float y = 1.0f - poly * fast_exp(-ax * ax);
  return std::copysign(y, x);
}

}  // namespace

extern "C" {

// y = gelu(x + bias), exact (erf) GELU; x (..., n), bias (n), y like x.
int BiasGeluErf(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                void *, void *) {
  if (nparam != 3 || !all_float32(nparam, dtypes)) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *bias = static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  const int64_t n = shapes[0][ndims[0] - 1];
  const int64_t rows = numel(ndims[0], shapes[0]) / n;
  if (numel(ndims[1], shapes[1]) != n) return 1;
  parallel_rows(rows, 16, [=](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float *xr = x + r * n;
      float *yr = y + r * n;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        float v = xr[i] + bias[i];
        yr[i] = 0.5f * v * (1.0f + fast_erf(v * 0.70710678118654752f));
      }
    }
  });
  return 0;
}

// y = LayerNorm(x) * weight + bias over the last axis; inputs x (..., n), weight (n), bias (n),
// eps (1); output y like x. Two-pass mean/variance in float (rows of <= a few thousand).
int LayerNormLastAxis(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                      void *, void *) {
  if (nparam != 5 || !all_float32(nparam, dtypes)) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *w = static_cast<const float *>(params[1]);
  const float *bb = static_cast<const float *>(params[2]);
  const float eps = *static_cast<const float *>(params[3]);
  float *y = static_cast<float *>(params[4]);
  const int64_t n = shapes[0][ndims[0] - 1];
  const int64_t rows = numel(ndims[0], shapes[0]) / n;
  parallel_rows(rows, 8, [=](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float *xr = x + r * n;
      float *yr = y + r * n;
      float sum = 0.f;
#pragma omp simd reduction(+ : sum)
      for (int64_t i = 0; i < n; ++i) sum += xr[i];
      const float mean = sum / n;
      float sq = 0.f;
#pragma omp simd reduction(+ : sq)
      for (int64_t i = 0; i < n; ++i) {
        float d = xr[i] - mean;
        sq += d * d;
      }
      const float inv = 1.0f / std::sqrt(sq / n + eps);
      for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - mean) * inv * w[i] + bb[i];
    }
  });
  return 0;
}

// y = softmax(x) over the last axis; x (..., n), y like x.
int SoftmaxLastAxis(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                    void *, void *) {
  if (nparam != 2 || !all_float32(nparam, dtypes)) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  const int64_t n = shapes[0][ndims[0] - 1];
  const int64_t rows = numel(ndims[0], shapes[0]) / n;
  parallel_rows(rows, 8, [=](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float *xr = x + r * n;
      float *yr = y + r * n;
      float m = -INFINITY;
#pragma omp simd reduction(max : m)
      for (int64_t i = 0; i < n; ++i) m = std::max(m, xr[i]);
      float s = 0.f;
#pragma omp simd reduction(+ : s)
      for (int64_t i = 0; i < n; ++i) {
        float v = fast_exp(xr[i] - m);
        yr[i] = v;
        s += v;
      }
      const float inv = 1.0f / s;
      for (int64_t i = 0; i < n; ++i) yr[i] *= inv;
    }
  });
  return 0;
}

}  // extern "C"
