// CPU kernels of the compiled decode step's opaque ops (namespace dsv4_cpu), the same computations as the Python
// custom ops of dsv4.cache.views / dsv4.cache.layout / dsv4.model.moe, bit for bit (index_scores_packed: the same
// products, summed in its own order). A compiled step calls its
// opaque ops from C++ (inductor's cpp_wrapper); a Python op there costs ~35 us of interpreter per call, ~40 calls a
// step, where these cost a dispatcher call. Built on first use by torch.utils.cpp_extension (see __init__.py).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Float8_e4m3fn.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "packed_formats.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

// The float value of every float8_e4m3fn byte (torch's own conversion, as the Python table is built).
const std::array<float, 256>& fp8_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int b = 0; b < 256; ++b) t[b] = static_cast<float>(c10::Float8_e4m3fn(static_cast<uint8_t>(b), c10::Float8_e4m3fn::from_bits()));
    return t;
  }();
  return table;
}

using dsv4_kernels::e8m0;
using dsv4_kernels::fp4_table;

#if defined(__AVX512F__)
// 16 float8_e4m3fn bytes -> 16 floats, as the table holds them: exponent field 0 is m·2^-9, else the bits move into
// a float32's fields (exponent + 120); NaN bytes (0x7F, 0xFF) take the table's own values.
inline __m512 fp8_x16(const uint8_t* p, const float* lut) {
  const __m512i x = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m512i em = _mm512_and_si512(x, _mm512_set1_epi32(0x7F));
  const __m512i sign = _mm512_slli_epi32(_mm512_and_si512(x, _mm512_set1_epi32(0x80)), 24);
  const __m512i normal = _mm512_add_epi32(_mm512_slli_epi32(em, 20), _mm512_set1_epi32(120 << 23));
  const __m512 tiny = _mm512_mul_ps(_mm512_cvtepi32_ps(em), _mm512_set1_ps(0x1p-9f));
  const __mmask16 subnormal = _mm512_cmplt_epi32_mask(em, _mm512_set1_epi32(8));
  __m512 v = _mm512_mask_blend_ps(subnormal, _mm512_castsi512_ps(normal), tiny);
  v = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(v), sign));
  const __mmask16 nan = _mm512_cmpeq_epi32_mask(em, _mm512_set1_epi32(0x7F));
  return nan ? _mm512_mask_i32gather_ps(v, nan, x, lut, 4) : v;
}
#endif

inline float bf16_bits(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float bf16_at(const uint8_t* p) {
  return bf16_bits(static_cast<uint16_t>(p[0] | (p[1] << 8)));
}

std::vector<int64_t> gathered_shape(const at::Tensor& pool, const at::Tensor& index, int64_t dim) {
  std::vector<int64_t> shape(index.sizes().begin(), index.sizes().end());
  for (int64_t d = 1; d < pool.dim() - 1; ++d) shape.push_back(pool.size(d));
  shape.push_back(dim);
  return shape;
}

// The entries of a packed pool [n, ..., nbytes] at rows `index` (int64 in [0, n)), each decoded by
// decode(entry bytes, `dim` output floats) -> float32 [*index.shape, ..., dim].
template <typename Decode>
at::Tensor gather(const at::Tensor& pool, const at::Tensor& index, int64_t nbytes, int64_t dim, const char* what,
                  Decode decode) {
  TORCH_CHECK(pool.scalar_type() == at::kByte && pool.dim() >= 2 && pool.size(-1) == nbytes, what,
              ": a uint8 pool [n, ..., ", nbytes, "] is needed; got ", pool.sizes(), " ", pool.scalar_type());
  TORCH_CHECK(pool.is_contiguous(), what, ": the pool must be contiguous");
  const at::Tensor idx = index.to(at::kLong).contiguous();
  const int64_t n = pool.size(0), per_row = pool[0].numel() / nbytes;
  const int64_t* ip = idx.data_ptr<int64_t>();
  for (int64_t i = 0; i < idx.numel(); ++i)
    TORCH_CHECK(ip[i] >= 0 && ip[i] < n, what, ": index ", ip[i], " is out of range for a pool of ", n, " rows");
  at::Tensor out = at::empty(gathered_shape(pool, index, dim), pool.options().dtype(at::kFloat));
  const uint8_t* src = pool.data_ptr<uint8_t>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, idx.numel() * per_row, 64, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e)
      decode(src + (ip[e / per_row] * per_row + e % per_row) * nbytes, dst + e * dim);
  });
  return out;
}

at::Tensor gather_main_entries(const at::Tensor& pool, const at::Tensor& index, int64_t head_dim, int64_t rope_dim,
                               int64_t block) {
  const int64_t nope = head_dim - rope_dim, n_scales = nope / block, nbytes = nope + 2 * rope_dim + n_scales + 1;
  const float* lut = fp8_table().data();
  return gather(pool, index, nbytes, head_dim, "gather_main_entries", [=](const uint8_t* p, float* o) {
    for (int64_t s = 0; s < n_scales; ++s) {
      const float scale = e8m0(p[nope + 2 * rope_dim + s]);
      int64_t k = s * block;
#if defined(__AVX512F__)
      for (; k + 16 <= (s + 1) * block; k += 16)
        _mm512_storeu_ps(o + k, _mm512_mul_ps(fp8_x16(p + k, lut), _mm512_set1_ps(scale)));
#endif
      for (; k < (s + 1) * block; ++k) o[k] = lut[p[k]] * scale;
    }
    for (int64_t k = 0; k < rope_dim; ++k) o[nope + k] = bf16_at(p + nope + 2 * k);
  });
}

at::Tensor gather_index_keys(const at::Tensor& pool, const at::Tensor& index, int64_t dim, int64_t block) {
  const int64_t n_scales = dim / block, nbytes = dim / 2 + n_scales;
  const float* lut = fp4_table().data();
  return gather(pool, index, nbytes, dim, "gather_index_keys", [=](const uint8_t* p, float* o) {
    for (int64_t s = 0; s < n_scales; ++s) {
      const float scale = e8m0(p[dim / 2 + s]);
      for (int64_t k = s * block / 2; k < (s + 1) * block / 2; ++k) {
        o[2 * k] = lut[p[k] & 0x0F] * scale;
        o[2 * k + 1] = lut[p[k] >> 4] * scale;
      }
    }
  });
}

// x [n,in] float32 times a weight [out,in] held in BF16 (values that BF16 holds exactly: dequantized FP8 / FP4 /
// BF16 checkpoint weights) -> [n,out] float32: each product is the float32 one, the sums are this kernel's order.
// A decode step streams every dense weight once; in BF16 it moves half the bytes of a float32 copy.
// R rows of x times O weight rows, from column k on (the SIMD part, if any, done by the caller), into out.
template <int R, int O>
void linear_tail(const float* x, const uint16_t* w, float* out, int64_t in, int64_t out_features, int64_t k,
                 float (&sums)[R][O]) {
  for (; k < in; ++k)
    for (int o = 0; o < O; ++o) {
      const float wk = bf16_bits(w[o * in + k]);
      for (int r = 0; r < R; ++r) sums[r][o] += x[r * in + k] * wk;
    }
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) out[r * out_features + o] = sums[r][o];
}

// A block of R rows x O outputs: R·O independent accumulators, so the FMAs pipeline instead of waiting on one chain
// (a single accumulator was latency-bound: 4 cycles a 16-wide step); each weight vector loaded once for the R rows.
template <int R, int O>
void linear_block(const float* x, const uint16_t* w, float* out, int64_t in, int64_t out_features) {
  float sums[R][O] = {};
  int64_t k = 0;
#if defined(__AVX512F__)
  __m512 acc[R][O];
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) acc[r][o] = _mm512_setzero_ps();
  for (; k + 16 <= in; k += 16) {
    __m512 wv[O];
    for (int o = 0; o < O; ++o)
      wv[o] = _mm512_castsi512_ps(_mm512_slli_epi32(
          _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + o * in + k))), 16));
    for (int r = 0; r < R; ++r) {
      const __m512 xv = _mm512_loadu_ps(x + r * in + k);
      for (int o = 0; o < O; ++o) acc[r][o] = _mm512_fmadd_ps(xv, wv[o], acc[r][o]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) sums[r][o] = _mm512_reduce_add_ps(acc[r][o]);
#endif
  linear_tail<R, O>(x, w, out, in, out_features, k, sums);
}

template <int R>
void linear_rows(const float* x, const uint16_t* w, float* out, int64_t in, int64_t out_features) {
  int64_t o = 0;
  for (; o + 4 <= out_features; o += 4) linear_block<R, 4>(x, w + o * in, out + o, in, out_features);
  for (; o < out_features; ++o) linear_block<R, 1>(x, w + o * in, out + o, in, out_features);
}

// out [n,out_features] = x [n,in] · w [out_features,in]ᵀ (w BF16 bits), rows in blocks of 4.
void linear_bf16_into(const float* x, int64_t n, const uint16_t* w, int64_t in, int64_t out_features, float* out) {
  int64_t r = 0;
  for (; r + 4 <= n; r += 4) linear_rows<4>(x + r * in, w, out + r * out_features, in, out_features);
  switch (n - r) {
    case 3: linear_rows<3>(x + r * in, w, out + r * out_features, in, out_features); break;
    case 2: linear_rows<2>(x + r * in, w, out + r * out_features, in, out_features); break;
    case 1: linear_rows<1>(x + r * in, w, out + r * out_features, in, out_features); break;
    default: break;
  }
}

at::Tensor linear_bf16(const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2, "linear_bf16: x must be float32 [n, in]; got ", x.sizes(),
              " ", x.scalar_type());
  TORCH_CHECK(weight.scalar_type() == at::kBFloat16 && weight.dim() == 2 && weight.size(1) == x.size(1),
              "linear_bf16: weight must be bfloat16 [out, ", x.size(1), "]; got ", weight.sizes(), " ",
              weight.scalar_type());
  const at::Tensor xc = x.contiguous(), wc = weight.contiguous();
  at::Tensor out = at::empty({x.size(0), weight.size(0)}, x.options());
  linear_bf16_into(xc.data_ptr<float>(), x.size(0), reinterpret_cast<const uint16_t*>(wc.data_ptr()), x.size(1),
                   weight.size(0), out.data_ptr<float>());
  return out;
}

// pool[rows, cols] = value: rows and cols broadcast to value's leading shape; each written row is a copy of bytes.
void put_rows(at::Tensor pool, const at::Tensor& rows, const at::Tensor& cols, const at::Tensor& value) {
  TORCH_CHECK(pool.is_contiguous() && pool.dim() >= 2, "put_rows: the pool must be contiguous, [slots, n, ...]");
  TORCH_CHECK(value.scalar_type() == pool.scalar_type(), "put_rows: value dtype ", value.scalar_type(),
              " differs from the pool's ", pool.scalar_type());
  const int64_t n = pool.size(1), slots = pool.size(0);
  at::Tensor at_ = (rows * n + cols).to(at::kLong).contiguous().view(-1);
  at::Tensor v = value.contiguous();
  const int64_t row_bytes = pool[0][0].numel() * pool.element_size();
  TORCH_CHECK(v.numel() * v.element_size() == at_.numel() * row_bytes, "put_rows: value ", value.sizes(),
              " does not hold one pool row per (row, col) pair of ", at_.numel());
  const int64_t* ap = at_.data_ptr<int64_t>();
  auto* dst = static_cast<uint8_t*>(pool.data_ptr());
  const auto* src = static_cast<const uint8_t*>(v.data_ptr());
  for (int64_t i = 0; i < at_.numel(); ++i) {
    TORCH_CHECK(ap[i] >= 0 && ap[i] < slots * n, "put_rows: row ", ap[i], " is out of range for a pool of ",
                slots * n, " rows");
    std::memcpy(dst + ap[i] * row_bytes, src + i * row_bytes, row_bytes);
  }
}

// mHC's Sinkhorn normalization of comb [n,hc,hc] (positive): columns to sum 1 (each divided by its sum + eps), then
// iters - 1 times rows, then columns. Each matrix is a few registers' worth: one pass over the batch, where the
// torch ops (two a half-iteration) made 80 passes over a prefill chunk's 2,048 matrices. Sums in index order, then
// + eps: the batched products' values (tests/kernels compare them bit for bit).
at::Tensor sinkhorn(const at::Tensor& comb, int64_t iters, double eps) {
  TORCH_CHECK(comb.scalar_type() == at::kFloat && comb.dim() == 3 && comb.size(1) == comb.size(2) && iters >= 1,
              "sinkhorn: comb must be float32 [n, hc, hc] and iters >= 1; got ", comb.sizes(), " ",
              comb.scalar_type(), ", iters ", iters);
  at::Tensor m = comb.contiguous().clone();
  const int64_t n = m.size(0), hc = m.size(1);
  const float e = static_cast<float>(eps);
  float* p = m.data_ptr<float>();
  // each of the hc lines (columns: stride 1 between lines, hc along one; rows: the reverse) divided by its sum + eps
  auto normalize = [hc, e](float* a, int64_t between, int64_t along) {
    for (int64_t o = 0; o < hc; ++o) {
      float* line = a + o * between;
      float s = 0.0f;
      for (int64_t i = 0; i < hc; ++i) s += line[i * along];
      s += e;
      for (int64_t i = 0; i < hc; ++i) line[i * along] /= s;
    }
  };
  at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float* a = p + i * hc * hc;
      normalize(a, 1, hc);  // columns
      for (int64_t it = 1; it < iters; ++it) normalize(a, hc, 1), normalize(a, 1, hc);  // rows, columns
    }
  });
  return m;
}

// x [n,in] whose rows come in runs of one group each (groups [n], non-decreasing), weight [g,out,in] -> [n,out].
// A BF16 bank (compact experts, values it holds exactly) runs through linear_bf16's blocks, float32 through mm.
at::Tensor grouped_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& groups) {
  at::Tensor out = at::empty({x.size(0), weight.size(1)}, x.options());
  at::Tensor ids = groups.to(at::kLong).contiguous();
  const bool compact = weight.scalar_type() == at::kBFloat16 && x.scalar_type() == at::kFloat;
  TORCH_CHECK(!compact || weight.is_contiguous(), "grouped_linear: a bfloat16 bank must be contiguous");
  const at::Tensor xc = compact ? x.contiguous() : x;
  const int64_t* g = ids.data_ptr<int64_t>();
  const int64_t len = ids.numel(), in = x.size(1), out_features = weight.size(1);
  for (int64_t start = 0, end = 1; end <= len; ++end) {
    if (end == len || g[end] != g[start]) {
      TORCH_CHECK(g[start] >= 0 && g[start] < weight.size(0), "grouped_linear: group ", g[start],
                  " is out of range for ", weight.size(0), " matrices");
      if (compact) {
        const auto* w = reinterpret_cast<const uint16_t*>(weight.data_ptr()) + g[start] * out_features * in;
        linear_bf16_into(xc.data_ptr<float>() + start * in, end - start, w, in, out_features,
                         out.data_ptr<float>() + start * out_features);
      } else {
        at::Tensor o = out.narrow(0, start, end - start);
        at::mm_out(o, x.narrow(0, start, end - start), weight[g[start]].t());
      }
      start = end;
    }
  }
  return out;
}

}  // namespace

TORCH_LIBRARY(dsv4_cpu, m) {
  m.def("put_rows(Tensor(a!) pool, Tensor rows, Tensor cols, Tensor value) -> ()");
  m.def("gather_main_entries(Tensor pool, Tensor index, int head_dim, int rope_dim, int block) -> Tensor");
  m.def("gather_index_keys(Tensor pool, Tensor index, int dim, int block) -> Tensor");
  m.def("grouped_linear(Tensor x, Tensor weight, Tensor groups) -> Tensor");
  m.def("linear_bf16(Tensor x, Tensor weight) -> Tensor");
  m.def("sinkhorn(Tensor comb, int iters, float eps) -> Tensor");
  m.def("index_scores_packed(Tensor q, Tensor weights, Tensor pool, Tensor index, int dim, int block) -> Tensor");
}

TORCH_LIBRARY_IMPL(dsv4_cpu, CPU, m) {
  m.impl("put_rows", &put_rows);
  m.impl("gather_main_entries", &gather_main_entries);
  m.impl("gather_index_keys", &gather_index_keys);
  m.impl("grouped_linear", &grouped_linear);
  m.impl("index_scores_packed", &dsv4_kernels::index_scores_packed);
  m.impl("linear_bf16", &linear_bf16);
  m.impl("sinkhorn", &sinkhorn);
}
