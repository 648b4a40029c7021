// The indexer's decode scores straight from packed MXFP4 keys: scores[i, j * per_row + e] = Σ_h w[i,h] ·
// ReLU(q[i,h] · k) for the key k at entry e of pool row index[i,j]. Keys are decoded where they are scored, never
// into a gathered float copy (gather_index_keys, then a matmul, moved 4x the bytes and cost ~0.1 us a key: the
// decode step's main growth with the context, 16K keys per CSA layer at 64K tokens).
// A key block's scale is a power of two, so code value x scale is exact and each product q x k is the reference's;
// the sums are these kernels' order (float32 roundoff against the Python path).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "packed_formats.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace dsv4_kernels {
namespace {

// One key at a time, dimension by dimension: the portable path, and shapes the vector one does not take.
class KeyScorer {
 public:
  KeyScorer(const float* q, const float* w, int64_t heads, int64_t dim, int64_t block)
      : q_(q), w_(w), heads_(heads), dim_(dim), block_(block), key_(dim) {}

  float score(const uint8_t* p) {
    const float* lut = fp4_table().data();
    for (int64_t j = 0; j < dim_ / 2; ++j) {
      const float scale = e8m0(p[dim_ / 2 + 2 * j / block_]);
      key_[2 * j] = lut[p[j] & 0x0F] * scale;
      key_[2 * j + 1] = lut[p[j] >> 4] * scale;
    }
    float total = 0.0f;
    for (int64_t h = 0; h < heads_; ++h) {
      float dot = 0.0f;
      for (int64_t d = 0; d < dim_; ++d) dot += q_[h * dim_ + d] * key_[d];
      total += w_[h] * std::max(dot, 0.0f);
    }
    return total;
  }

 private:
  const float *q_, *w_;
  int64_t heads_, dim_, block_;
  std::vector<float> key_;
};

#if defined(__AVX512F__)
// r[i] lane j -> r[j] lane i, 32-bit lanes
void transpose16(__m512i* r) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int g = 0; g < 16; g += 4) {  // r[g + m]: rows g..g+3 of columns 4L + m, 128-bit lane L
    r[g] = _mm512_unpacklo_epi64(t[g], t[g + 2]);
    r[g + 1] = _mm512_unpackhi_epi64(t[g], t[g + 2]);
    r[g + 2] = _mm512_unpacklo_epi64(t[g + 1], t[g + 3]);
    r[g + 3] = _mm512_unpackhi_epi64(t[g + 1], t[g + 3]);
  }
  for (int m = 0; m < 4; ++m) {
    const __m512i u0 = _mm512_shuffle_i32x4(r[m], r[4 + m], 0x88), u1 = _mm512_shuffle_i32x4(r[m], r[4 + m], 0xdd);
    const __m512i v0 = _mm512_shuffle_i32x4(r[8 + m], r[12 + m], 0x88);
    const __m512i v1 = _mm512_shuffle_i32x4(r[8 + m], r[12 + m], 0xdd);
    t[m] = _mm512_shuffle_i32x4(u0, v0, 0x88);
    t[8 + m] = _mm512_shuffle_i32x4(u0, v0, 0xdd);
    t[4 + m] = _mm512_shuffle_i32x4(u1, v1, 0x88);
    t[12 + m] = _mm512_shuffle_i32x4(u1, v1, 0xdd);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// Sixteen keys at a time, one per vector lane: each key's 64 code bytes (128 dims) load as one vector, a 16 x 16
// transpose of 32-bit words puts 8 dims of every key in each vector, decoded into a [dim][16] tile; then every head's
// dot products run down the tile as 16-lane FMAs with q broadcast. Scoring a key alone (a dot product across lanes,
// reduced a head at a time) loaded q and the key for each FMA and spent a third of its time in the reductions: this
// is 1.6-1.8x faster at 4 heads, 2.7x at V4's 64 (AMD EPYC, Zen 4). Gathering the words instead of the transpose:
// 1.3x slower.
class GroupScorer {
 public:
  static constexpr int kHeads = 4;  // heads a pass (two accumulators each: eight FMA chains in flight)
  static constexpr int64_t kMaxDim = 256;

  // codes 128 dims (64 bytes) a load; scale bytes read 4 at a time (a key's last word is its own); 32-bit offsets
  static bool fits(int64_t dim, int64_t block, int64_t pool_bytes) {
    return dim % 128 == 0 && dim <= kMaxDim && block % 8 == 0 && (dim / block) % 4 == 0 && pool_bytes <= INT32_MAX;
  }

  GroupScorer(const float* q, const float* w, int64_t heads, int64_t dim, int64_t block)
      : heads_((heads + kHeads - 1) / kHeads * kHeads), dim_(dim), block_(block), q_(heads_ * dim, 0.0f),
        w_(heads_, 0.0f) {
    // padded heads have q = 0 and w = 0: they add +0 to every score
    std::copy(q, q + heads * dim, q_.begin());
    std::copy(w, w + heads, w_.begin());
    lut_ = _mm512_loadu_ps(fp4_table().data());
  }

  // the scores of n <= 16 keys at byte offsets off[0..n) from base, into out[0..n)
  void score(const uint8_t* base, const int32_t* off, int n, float* out) {
    const __mmask16 live = static_cast<__mmask16>((1u << n) - 1);
    int32_t at[16] = {};  // idle lanes read the pool's first key
    std::copy(off, off + n, at);
    decode(base, at, _mm512_loadu_si512(at));
    __m512 total = _mm512_setzero_ps();
    for (int64_t h = 0; h < heads_; h += kHeads) {
      const float* q = q_.data() + h * dim_;
      __m512 acc[2 * kHeads];  // each head's even and odd dims
      for (int r = 0; r < 2 * kHeads; ++r) acc[r] = _mm512_setzero_ps();
      for (int64_t d = 0; d < dim_; d += 2) {
        const __m512 k0 = _mm512_load_ps(tile_ + d * 16), k1 = _mm512_load_ps(tile_ + d * 16 + 16);
        for (int r = 0; r < kHeads; ++r) {
          acc[2 * r] = _mm512_fmadd_ps(_mm512_set1_ps(q[r * dim_ + d]), k0, acc[2 * r]);
          acc[2 * r + 1] = _mm512_fmadd_ps(_mm512_set1_ps(q[r * dim_ + d + 1]), k1, acc[2 * r + 1]);
        }
      }
      for (int r = 0; r < kHeads; ++r) {
        const __m512 dot = _mm512_max_ps(_mm512_add_ps(acc[2 * r], acc[2 * r + 1]), _mm512_setzero_ps());
        total = _mm512_add_ps(total, _mm512_mul_ps(dot, _mm512_set1_ps(w_[h + r])));
      }
    }
    _mm512_mask_storeu_ps(out, live, total);
  }

 private:
  // tile[d][lane] = code value x scale of dimension d of the lane's key
  void decode(const uint8_t* base, const int32_t* off, __m512i at) {
    __m512i scales = _mm512_setzero_si512();
    __m512 scale = _mm512_setzero_ps();
    __m512i words[16];
    for (int64_t c = 0; c < dim_ / 8; ++c) {
      if (c % 16 == 0) {  // the next 64 code bytes of each key (128 dims), one key a vector, then lane by word
        for (int i = 0; i < 16; ++i) words[i] = _mm512_loadu_si512(base + off[i] + c * 4);
        transpose16(words);
      }
      if (c * 8 % block_ == 0) {
        const int64_t s = c * 8 / block_;
        if (s % 4 == 0)
          scales = _mm512_i32gather_epi32(_mm512_add_epi32(at, _mm512_set1_epi32(dim_ / 2 + s)), base, 1);
        const __m512i e = _mm512_and_si512(_mm512_srli_epi32(scales, 8 * (s % 4)), _mm512_set1_epi32(0xFF));
        scale = _mm512_mask_blend_ps(_mm512_cmpeq_epi32_mask(e, _mm512_setzero_si512()),
                                     _mm512_castsi512_ps(_mm512_slli_epi32(e, 23)), _mm512_set1_ps(0x1p-127f));
      }
      const __m512i codes = words[c % 16];
      for (int m = 0; m < 8; ++m)
        _mm512_store_ps(tile_ + (c * 8 + m) * 16,
                        _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(codes, 4 * m), lut_), scale));
    }
  }


  int64_t heads_, dim_, block_;
  std::vector<float> q_, w_;
  __m512 lut_;
  alignas(64) float tile_[kMaxDim * 16];  // [dim][16 keys], on 64-byte lines
};
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
// One row's query as CodeScorer reads it, prepared once a call (its checks cost as much as scoring a few hundred
// keys, and every chunk of the row shares it).
struct CodeQuery {
  static constexpr int kHeads = 4;  // heads a scoring pass: padded to a multiple (q = 0, w = 0: they add +0)
  static constexpr int64_t kMaxDim = 256, kBlock = 32;

  static bool fits(int64_t dim, int64_t block, int64_t pool_bytes) {
    return dim % 128 == 0 && dim <= kMaxDim && block == kBlock && pool_bytes <= INT32_MAX;
  }

  int64_t heads = 0, dim = 0;
  bool ok = false;  // every block of q is small integers x a power of two
  std::vector<uint32_t> pairs;  // per head and 8-dim group: the even dims' four qi bytes, then the odd dims'
  std::vector<float> unit, w;  // per head and block: 2^(e-2); per head: its weight
  std::vector<int32_t> offset;  // per head and block: 12 · Σ qi (the keys enter as ki + 12)

  CodeQuery(const float* q, const float* weights, int64_t n_heads, int64_t d)
      : heads((n_heads + kHeads - 1) / kHeads * kHeads), dim(d), pairs(heads * d / 4, 0),
        unit(heads * (d / kBlock), 0.0f), w(heads, 0.0f), offset(heads * (d / kBlock), 0) {
    std::copy(weights, weights + n_heads, w.begin());
    const int64_t blocks = d / kBlock;
    for (int64_t h = 0; h < n_heads; ++h)
      for (int64_t b = 0; b < blocks; ++b)
        if (!block(q + h * d + b * kBlock, h * d / 4 + b * kBlock / 4, h * blocks + b)) return;
    ok = true;
  }

 private:
  // one 32-dim block x: qi = x · 2^(1-e), e putting its largest magnitude in [4, 8) x 2^e; false off that grid
  bool block(const float* x, int64_t pair_at, int64_t hb) {
    float amax = 0.0f;
    for (int64_t d = 0; d < kBlock; ++d) amax = std::max(amax, std::fabs(x[d]));
    if (!std::isfinite(amax)) return false;
    if (amax == 0.0f) return true;  // qi = 0: the block adds 0
    int top;
    std::frexp(amax, &top);  // amax in [2^(top-1), 2^top)
    const int e = top - 3;
    if (e - 2 < -126 || 1 - e < -126 || 1 - e > 127) return false;  // 2^(e-2) and 2^(1-e) normal floats
    const float up = std::ldexp(1.0f, 1 - e);
    int32_t sum = 0;
    for (int64_t d = 0; d < kBlock; ++d) {
      const float v = x[d] * up;  // exact: a power-of-two scaling that stays normal (|v| < 16)
      const int32_t i = static_cast<int32_t>(v);
      if (static_cast<float>(i) != v || (i == 0 && x[d] != 0.0f)) return false;  // (a tiny x that scaled to 0)
      const int64_t c = d / 8, lane = d % 8;  // group c: byte lane / 2 of its even (lane even) or odd word
      pairs[pair_at + 2 * c + lane % 2] |= static_cast<uint32_t>(static_cast<uint8_t>(static_cast<int8_t>(i)))
                                           << (8 * (lane / 2));
      sum += i;
    }
    unit[hb] = std::ldexp(1.0f, e - 2);
    offset[hb] = 12 * sum;
    return true;
  }
};

// The indexer's queries are MXFP4-simulated too (fp4_round: each 32-dim block e2m1 codes x a power of two), so a
// key block's dot product is an integer sum scaled by two powers of two: Σ q·k = 2^e/4 · scale · Σ qi·ki with
// qi = 2q/2^e and ki = 2 x the key's code, small integers (|qi| < 16, |ki| <= 12). VNNI sums four byte products a
// lane (vpdpbusd: unsigned x signed, so keys enter as ki + 12 and 12·Σqi comes off), where GroupScorer decodes
// every dimension to float and spends one FMA on each: ~3x fewer instructions a key (16K keys: 2.1x faster at 4
// heads, 2.5x at 64 on AMD EPYC Zen 4, shared by two threads). Each block's sum is exact (no
// rounding at all), then scaled exactly and added block after block in float32: the products of the float path,
// summed in this order. A query block that is not of that form (simulate_kv_quant off) leaves the call to
// GroupScorer.
class CodeScorer {
 public:
  static constexpr int kHeads = CodeQuery::kHeads;
  static constexpr int64_t kMaxDim = CodeQuery::kMaxDim, kBlock = CodeQuery::kBlock;

  explicit CodeScorer(const CodeQuery& q) : q_(q), dim_(q.dim) {
    alignas(16) int8_t table[16];  // ki + 12 of each 4-bit code (e2m1 x 2: 0 1 2 3 4 6 8 12, bit 3 the sign)
    const int8_t grid[8] = {0, 1, 2, 3, 4, 6, 8, 12};
    for (int c = 0; c < 16; ++c) table[c] = static_cast<int8_t>(12 + ((c & 8) ? -grid[c & 7] : grid[c & 7]));
    lut_ = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(table)));
  }

  // the scores of n <= 16 keys at byte offsets off[0..n) from base, into out[0..n)
  void score(const uint8_t* base, const int32_t* off, int n, float* out) {
    const __mmask16 live = static_cast<__mmask16>((1u << n) - 1);
    int32_t at[16] = {};  // idle lanes read the pool's first key
    std::copy(off, off + n, at);
    decode(base, at, _mm512_loadu_si512(at));
    const int64_t blocks = dim_ / kBlock, groups = kBlock / 8;
    __m512 total = _mm512_setzero_ps();
    for (int64_t h = 0; h < q_.heads; h += kHeads) {
      __m512 dot[kHeads];
      for (int r = 0; r < kHeads; ++r) dot[r] = _mm512_setzero_ps();
      for (int64_t b = 0; b < blocks; ++b) {
        __m512i acc[2 * kHeads];
        for (int r = 0; r < 2 * kHeads; ++r) acc[r] = _mm512_setzero_si512();
        for (int64_t c = b * groups; c < (b + 1) * groups; ++c) {
          const __m512i even = tile_[2 * c], odd = tile_[2 * c + 1];
          for (int r = 0; r < kHeads; ++r) {
            const uint32_t* qp = q_.pairs.data() + (h + r) * dim_ / 4 + 2 * c;
            acc[2 * r] = _mm512_dpbusd_epi32(acc[2 * r], even, _mm512_set1_epi32(static_cast<int32_t>(qp[0])));
            acc[2 * r + 1] = _mm512_dpbusd_epi32(acc[2 * r + 1], odd, _mm512_set1_epi32(static_cast<int32_t>(qp[1])));
          }
        }
        for (int r = 0; r < kHeads; ++r) {  // (Σ qi·ki) x 2^(e-2) x the key block's scale, exact
          const int64_t hb = (h + r) * blocks + b;
          const __m512i sum = _mm512_sub_epi32(_mm512_add_epi32(acc[2 * r], acc[2 * r + 1]),
                                               _mm512_set1_epi32(q_.offset[hb]));
          const __m512 part = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(q_.unit[hb])),
                                            scale_[b]);
          dot[r] = _mm512_add_ps(dot[r], part);
        }
      }
      for (int r = 0; r < kHeads; ++r)
        total = _mm512_add_ps(total, _mm512_mul_ps(_mm512_max_ps(dot[r], _mm512_setzero_ps()),
                                                   _mm512_set1_ps(q_.w[h + r])));
    }
    _mm512_mask_storeu_ps(out, live, total);
  }

 private:
  // tile[2c], tile[2c + 1]: ki + 12 of each lane's key, dims 8c + 2i (even) and 8c + 2i + 1 (odd) in byte i of a
  // lane; scale[b]: each lane's key block scale
  void decode(const uint8_t* base, const int32_t* off, __m512i at) {
    __m512i words[16];
    const __m512i low = _mm512_set1_epi8(0x0F);
    for (int64_t c = 0; c < dim_ / 8; ++c) {
      if (c % 16 == 0) {  // the next 64 code bytes of each key (128 dims), one key a vector, then lane by word
        for (int i = 0; i < 16; ++i) words[i] = _mm512_loadu_si512(base + off[i] + c * 4);
        transpose16(words);
      }
      const __m512i codes = words[c % 16];
      tile_[2 * c] = _mm512_shuffle_epi8(lut_, _mm512_and_si512(codes, low));
      tile_[2 * c + 1] = _mm512_shuffle_epi8(lut_, _mm512_and_si512(_mm512_srli_epi16(codes, 4), low));
    }
    __m512i scales = _mm512_setzero_si512();
    for (int64_t b = 0; b < dim_ / kBlock; ++b) {
      if (b % 4 == 0) scales = _mm512_i32gather_epi32(_mm512_add_epi32(at, _mm512_set1_epi32(dim_ / 2 + b)), base, 1);
      const __m512i e = _mm512_and_si512(_mm512_srli_epi32(scales, 8 * (b % 4)), _mm512_set1_epi32(0xFF));
      scale_[b] = _mm512_mask_blend_ps(_mm512_cmpeq_epi32_mask(e, _mm512_setzero_si512()),
                                       _mm512_castsi512_ps(_mm512_slli_epi32(e, 23)), _mm512_set1_ps(0x1p-127f));
    }
  }

  const CodeQuery& q_;
  int64_t dim_;
  __m512i lut_;
  __m512i tile_[kMaxDim / 4];
  __m512 scale_[kMaxDim / kBlock];
};
#endif

// A decode step runs torch's own ops on one thread, so the other cores idle while one indexer scores every key of a
// long context (a 64K-token CSA layer: 16,384; 16K tokens: 4,096). Past kShareScores scores a call, the inter-op
// pool's threads take chunks of keys beside the calling thread; each score is computed as alone: the same values.
constexpr int64_t kShareScores = 4096, kChunkScores = 1024;

// work(c) for every c in [0, chunks), taken from a shared counter by the calling thread and, when `share`, by up to
// (inter-op threads - 1) pool tasks; returns once every chunk is done. A task that starts late finds no chunk left
// and touches only the counters, which it keeps alive.
void share_chunks(int64_t chunks, bool share, const std::function<void(int64_t)>& work) {
  struct Counters {
    std::atomic<int64_t> next{0}, done{0};
  };
  auto counters = std::make_shared<Counters>();
  auto run = [counters, chunks, fn = &work] {
    for (int64_t c; (c = counters->next.fetch_add(1)) < chunks; counters->done.fetch_add(1)) (*fn)(c);
  };
  const int64_t helpers = share ? std::min<int64_t>(at::get_num_interop_threads(), chunks) - 1 : 0;
  for (int64_t i = 0; i < helpers; ++i) at::launch(run);
  run();
  while (counters->done.load() < chunks) std::this_thread::yield();  // chunks a helper took and is finishing
}

}  // namespace

at::Tensor index_scores_packed(const at::Tensor& q, const at::Tensor& weights, const at::Tensor& pool,
                               const at::Tensor& index, int64_t dim, int64_t block) {
  const int64_t nbytes = dim / 2 + dim / block;
  TORCH_CHECK(block > 0 && block % 2 == 0 && dim % block == 0, "index_scores_packed: dim ", dim,
              " must be a multiple of an even block, got block ", block);
  TORCH_CHECK(pool.scalar_type() == at::kByte && pool.dim() >= 2 && pool.size(-1) == nbytes && pool.is_contiguous(),
              "index_scores_packed: a contiguous uint8 pool [n, ..., ", nbytes, "] is needed; got ", pool.sizes(), " ",
              pool.scalar_type());
  TORCH_CHECK(q.scalar_type() == at::kFloat && q.dim() == 3 && q.size(2) == dim,
              "index_scores_packed: q must be float32 [rows, heads, ", dim, "]; got ", q.sizes(), " ", q.scalar_type());
  const int64_t rows = q.size(0), heads = q.size(1);
  TORCH_CHECK(weights.scalar_type() == at::kFloat && weights.dim() == 2 && weights.size(0) == rows &&
              weights.size(1) == heads, "index_scores_packed: weights must be float32 [", rows, ", ", heads, "]; got ",
              weights.sizes(), " ", weights.scalar_type());
  TORCH_CHECK(index.dim() == 2 && index.size(0) == rows, "index_scores_packed: index must be [", rows,
              ", t]; got ", index.sizes());
  const at::Tensor qc = q.contiguous(), wc = weights.contiguous(), idx = index.to(at::kLong).contiguous();
  const int64_t n = pool.size(0), per_row = pool[0].numel() / nbytes, t = idx.size(1);
  const int64_t* ip = idx.data_ptr<int64_t>();
  for (int64_t i = 0; i < idx.numel(); ++i)
    TORCH_CHECK(ip[i] >= 0 && ip[i] < n, "index_scores_packed: index ", ip[i], " is out of range for a pool of ", n,
                " rows");
  at::Tensor out = at::empty({rows, t * per_row}, q.options());
  const uint8_t* src = pool.data_ptr<uint8_t>();
  float* dst = out.data_ptr<float>();
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
  std::vector<CodeQuery> coded;  // each row's query for the integer path, where it fits
  if (CodeQuery::fits(dim, block, pool.numel()))
    for (int64_t i = 0; i < rows; ++i)
      coded.emplace_back(qc.data_ptr<float>() + i * heads * dim, wc.data_ptr<float>() + i * heads, heads, dim);
#endif
  const int64_t per_chunk = std::max<int64_t>(1, kChunkScores / per_row);
  const int64_t chunks_a_row = (t + per_chunk - 1) / per_chunk;
  share_chunks(rows * chunks_a_row, rows * t * per_row >= kShareScores, [&](int64_t c) {
    const int64_t i = c / chunks_a_row, a = c % chunks_a_row * per_chunk, b = std::min(t, a + per_chunk);
    const float *qi = qc.data_ptr<float>() + i * heads * dim, *wi = wc.data_ptr<float>() + i * heads;
    float* o = dst + (i * t + a) * per_row;  // the chunk's scores, in (j, e) order
    // the chunk's keys (entries a..b-1 of row i, each pool row's per_row keys) sixteen at a time
    auto by_sixteen = [&](auto& scorer) {
      int32_t off[16];
      int k = 0;
      for (int64_t j = a; j < b; ++j)
        for (int64_t e = 0; e < per_row; ++e) {
          off[k++] = static_cast<int32_t>((ip[i * t + j] * per_row + e) * nbytes);
          if (k == 16) scorer.score(src, off, 16, o), o += 16, k = 0;
        }
      if (k) scorer.score(src, off, k, o);
    };
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
    if (!coded.empty() && coded[i].ok) {
      CodeScorer scorer(coded[i]);
      return by_sixteen(scorer);
    }
#endif
#if defined(__AVX512F__)
    if (GroupScorer::fits(dim, block, pool.numel())) {
      GroupScorer scorer(qi, wi, heads, dim, block);
      return by_sixteen(scorer);
    }
#endif
    KeyScorer scorer(qi, wi, heads, dim, block);
    for (int64_t j = a; j < b; ++j)
      for (int64_t e = 0; e < per_row; ++e) *o++ = scorer.score(src + (ip[i * t + j] * per_row + e) * nbytes);
  });
  return out;
}

}  // namespace dsv4_kernels
