// Prefill's attention to each query's own keys (the CSA entries its indexer picked) read in place from a table of
// distinct keys: logits[i,h,j] = q[i,h] . rows[index[i,j]] and out[i,h] = sum_j p[i,h,j] rows[index[i,j]].
// The Python path copies every query's keys into a [queries, k, d] tensor first (index_select: 8.6% of a 4K-token
// prefill) and then multiplies each query's 4 heads by them, a batch of [4 x 512] x [512 x 64] products that run far
// below the GEMM's speed; neighbouring queries pick mostly the same entries, so the table is small and stays in cache.
//
// The sums' order is fixed and the same on every CPU: a dot product keeps 16 partial sums (dimension d in partial
// d % 16, fused multiply-adds in dimension order), then adds them as halves (8 + 8, 4 + 4, 2 + 2, 1 + 1); a value
// sum adds the keys in the listed order, one fused multiply-add each. The AVX-512 loops and the scalar ones compute
// those same operations (float32 roundoff against the Python path's einsums).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "lanes.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

using dsv4_kernels::halves;
using dsv4_kernels::kLanes;

#if defined(__AVX512F__)
// H heads x K keys of one query: their H x K dot products, one 16-lane accumulator each (K keys share each load
// of q; H x K independent FMA chains).
template <int H, int K>
inline void dot_block(const float* q, const float* const* keys, int64_t dim, int64_t t, float* out) {
  __m512 acc[K][H];
  for (int k = 0; k < K; ++k)
    for (int h = 0; h < H; ++h) acc[k][h] = _mm512_setzero_ps();
  for (int64_t d = 0; d < dim; d += kLanes) {
    __m512 kv[K];
    for (int k = 0; k < K; ++k) kv[k] = _mm512_loadu_ps(keys[k] + d);
    for (int h = 0; h < H; ++h) {
      const __m512 qv = _mm512_loadu_ps(q + h * dim + d);
      for (int k = 0; k < K; ++k) acc[k][h] = _mm512_fmadd_ps(qv, kv[k], acc[k][h]);
    }
  }
  for (int k = 0; k < K; ++k)
    for (int h = 0; h < H; ++h) out[h * t + k] = halves(acc[k][h]);
}

template <int K>
inline void dot_heads(const float* q, const float* const* keys, int64_t heads, int64_t dim, int64_t t, float* out) {
  int64_t h = 0;
  for (; h + 4 <= heads; h += 4) dot_block<4, K>(q + h * dim, keys, dim, t, out + h * t);
  switch (heads - h) {
    case 3: dot_block<3, K>(q + h * dim, keys, dim, t, out + h * t); break;
    case 2: dot_block<2, K>(q + h * dim, keys, dim, t, out + h * t); break;
    case 1: dot_block<1, K>(q + h * dim, keys, dim, t, out + h * t); break;
  }
}

// G heads' values over 64 dims from d: 4 x G accumulators, the keys added in the listed order.
template <int G>
inline void value_block(const float* p, const float* rows, const int64_t* index, int64_t dim, int64_t t, int64_t d,
                        float* out) {
  __m512 acc[G][4];
  for (int r = 0; r < G; ++r)
    for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t j = 0; j < t; ++j) {
    const float* key = rows + index[j] * dim + d;
    const __m512 k[4] = {_mm512_loadu_ps(key), _mm512_loadu_ps(key + 16), _mm512_loadu_ps(key + 32),
                         _mm512_loadu_ps(key + 48)};
    for (int r = 0; r < G; ++r) {
      const __m512 w = _mm512_set1_ps(p[r * t + j]);
      for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_fmadd_ps(w, k[c], acc[r][c]);
    }
  }
  for (int r = 0; r < G; ++r)
    for (int c = 0; c < 4; ++c) _mm512_storeu_ps(out + r * dim + d + c * kLanes, acc[r][c]);
}
#endif

// The logits of one query: q [heads, dim], its keys' rows by index [t] -> out [heads, t].
void query_logits(const float* q, const float* rows, const int64_t* index, int64_t heads, int64_t dim, int64_t t,
                  float* out) {
#if defined(__AVX512F__)
  if (dim % kLanes == 0) {
    int64_t j = 0;
    for (; j + 2 <= t; j += 2) {
      const float* keys[2] = {rows + index[j] * dim, rows + index[j + 1] * dim};
      dot_heads<2>(q, keys, heads, dim, t, out + j);
    }
    if (j < t) {
      const float* keys[1] = {rows + index[j] * dim};
      dot_heads<1>(q, keys, heads, dim, t, out + j);
    }
    return;
  }
#endif
  for (int64_t j = 0; j < t; ++j) {
    const float* key = rows + index[j] * dim;
    for (int64_t h = 0; h < heads; ++h) {
      float part[kLanes] = {};
      for (int64_t d = 0; d < dim; ++d) part[d % kLanes] = std::fma(q[h * dim + d], key[d], part[d % kLanes]);
      out[h * t + j] = halves(part);
    }
  }
}

// The values of one query: p [heads, t] over its keys' rows by index [t] -> out [heads, dim].
void query_values(const float* p, const float* rows, const int64_t* index, int64_t heads, int64_t dim, int64_t t,
                  float* out) {
#if defined(__AVX512F__)
  if (dim % (4 * kLanes) == 0) {
    for (int64_t h = 0; h < heads; h += 4)
      for (int64_t d = 0; d < dim; d += 4 * kLanes) {
        const float* ph = p + h * t;
        float* oh = out + h * dim;
        switch (std::min<int64_t>(4, heads - h)) {
          case 4: value_block<4>(ph, rows, index, dim, t, d, oh); break;
          case 3: value_block<3>(ph, rows, index, dim, t, d, oh); break;
          case 2: value_block<2>(ph, rows, index, dim, t, d, oh); break;
          case 1: value_block<1>(ph, rows, index, dim, t, d, oh); break;
        }
      }
    return;
  }
#endif
  std::fill(out, out + heads * dim, 0.0f);
  for (int64_t j = 0; j < t; ++j) {
    const float* key = rows + index[j] * dim;
    for (int64_t h = 0; h < heads; ++h) {
      const float w = p[h * t + j];
      for (int64_t d = 0; d < dim; ++d) out[h * dim + d] = std::fma(w, key[d], out[h * dim + d]);
    }
  }
}

// rows [u, dim] float32, index [n, t] int64 within [0, u): checked, contiguous
void check_table(const char* op, const at::Tensor& rows, const at::Tensor& index, int64_t n, int64_t dim) {
  TORCH_CHECK(rows.scalar_type() == at::kFloat && rows.dim() == 2 && rows.size(1) == dim, op,
              ": rows must be float32 [u, ", dim, "]; got ", rows.sizes(), " ", rows.scalar_type());
  TORCH_CHECK(index.scalar_type() == at::kLong && index.dim() == 2 && index.size(0) == n, op,
              ": index must be int64 [", n, ", t]; got ", index.sizes(), " ", index.scalar_type());
  const at::Tensor idx = index.contiguous();
  const int64_t* ip = idx.data_ptr<int64_t>();
  for (int64_t i = 0; i < idx.numel(); ++i)
    TORCH_CHECK(ip[i] >= 0 && ip[i] < rows.size(0), op, ": index ", ip[i], " is out of range for ", rows.size(0),
                " rows");
}

// One query's kernel, fn(x_i, rows, index_i, heads, dim, t, out_i), over n queries of x [n, heads, x_width] ->
// out [n, heads, width], the queries split between threads (each computed as alone).
template <class Fn>
at::Tensor each_query(Fn fn, const at::Tensor& x, const at::Tensor& rows, const at::Tensor& index, int64_t dim,
                      int64_t width) {
  const at::Tensor xc = x.contiguous(), rc = rows.contiguous(), idx = index.contiguous();
  const int64_t n = x.size(0), heads = x.size(1), t = idx.size(1), x_width = x.size(2);
  at::Tensor out = at::empty({n, heads, width}, x.options());
  const float *xp = xc.data_ptr<float>(), *rp = rc.data_ptr<float>();
  const int64_t* ip = idx.data_ptr<int64_t>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, n, 4, [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) fn(xp + i * heads * x_width, rp, ip + i * t, heads, dim, t, op + i * heads * width);
  });
  return out;
}

}  // namespace

// q [n, heads, dim], rows [u, dim], index [n, t] -> logits [n, heads, t]
at::Tensor indexed_logits(const at::Tensor& q, const at::Tensor& rows, const at::Tensor& index) {
  TORCH_CHECK(q.scalar_type() == at::kFloat && q.dim() == 3, "indexed_logits: q must be float32 [n, heads, dim]; got ",
              q.sizes(), " ", q.scalar_type());
  check_table("indexed_logits", rows, index, q.size(0), q.size(2));
  return each_query(query_logits, q, rows, index, q.size(2), index.size(1));
}

// p [n, heads, t], rows [u, dim], index [n, t] -> values [n, heads, dim]
at::Tensor indexed_values(const at::Tensor& p, const at::Tensor& rows, const at::Tensor& index) {
  TORCH_CHECK(p.scalar_type() == at::kFloat && p.dim() == 3, "indexed_values: p must be float32 [n, heads, t]; got ",
              p.sizes(), " ", p.scalar_type());
  const int64_t dim = rows.dim() == 2 ? rows.size(1) : -1;
  check_table("indexed_values", rows, index, p.size(0), dim);
  TORCH_CHECK(index.size(1) == p.size(2), "indexed_values: index must be [", p.size(0), ", ", p.size(2), "]; got ",
              index.sizes());
  return each_query(query_values, p, rows, index, dim, dim);
}

TORCH_LIBRARY_FRAGMENT(dsv4_cpu, m) {
  m.def("indexed_logits(Tensor q, Tensor rows, Tensor index) -> Tensor");
  m.def("indexed_values(Tensor p, Tensor rows, Tensor index) -> Tensor");
}

TORCH_LIBRARY_IMPL(dsv4_cpu, CPU, m) {
  m.impl("indexed_logits", &indexed_logits);
  m.impl("indexed_values", &indexed_values);
}
