// dsv4_cpu::top_entries: the indexer's top-k, in decode and prefill alike (see __init__.py for how the kernels are
// built and used). Equal scores rank the lower entry first, the one rule of dsv4.model.attention.indexer.ranked: ReLU
// leaves many scores at exactly 0, and a verify step (prefill's path) must select what decode selects.
//
// The k best-scored entries of each row among its visible ones, in one pass over the row: a heap of the k best so
// far, whose worst score is the bar a new score must clear; 16 scores are compared with the bar at a time, and
// past the first few hundred entries almost none clears it. torch.topk over 16,384 scores (a 64K-token CSA layer)
// costs ~80 us a row, most of it spent on entries that never come near the top.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

using Scored = std::pair<float, int64_t>;  // (score, entry number)

// a ranks before b: the higher score, and of equal scores the lower entry number (a fixed, documented order).
inline bool ranks_before(const Scored& a, const Scored& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

// The best k of s[0..m) (k <= m) into heap, best first (equal scores: the lower entry first). NaN counts as -inf.
void best_of_row(const float* s, int64_t m, int64_t k, std::vector<Scored>& heap) {
  heap.clear();
  auto value = [&](int64_t j) { return std::isnan(s[j]) ? -std::numeric_limits<float>::infinity() : s[j]; };
  for (int64_t j = 0; j < k; ++j) heap.emplace_back(value(j), j);
  std::make_heap(heap.begin(), heap.end(), ranks_before);  // front: the worst of the k kept
  float bar = heap.front().first;
  // a later entry ties at best (its number is higher), so only a strictly higher score enters
  auto offer = [&](int64_t j) {
    if (s[j] > bar) {
      std::pop_heap(heap.begin(), heap.end(), ranks_before);
      heap.back() = {s[j], j};
      std::push_heap(heap.begin(), heap.end(), ranks_before);
      bar = heap.front().first;
    }
  };
  int64_t j = k;
#if defined(__AVX512F__)
  for (; j + 16 <= m; j += 16) {
    __mmask16 hit = _mm512_cmp_ps_mask(_mm512_loadu_ps(s + j), _mm512_set1_ps(bar), _CMP_GT_OQ);
    for (; hit; hit &= hit - 1) offer(j + __builtin_ctz(hit));
  }
#endif
  for (; j < m; ++j) offer(j);
  std::sort(heap.begin(), heap.end(), ranks_before);
}

// scores [b,t] float32, counts [b] (row i's visible entries are 0..counts[i]-1), k -> [b, min(k,t)] int64: each
// row's best entries, best first, then -1 where it has fewer visible entries (or their score is -inf): what
// torch.topk takes over the masked scores, up to which of equal scores it keeps and lists first.
at::Tensor top_entries(const at::Tensor& scores, const at::Tensor& counts, int64_t k) {
  TORCH_CHECK(scores.scalar_type() == at::kFloat && scores.dim() == 2, "top_entries: scores must be float32 [b, t]; got ",
              scores.sizes(), " ", scores.scalar_type());
  TORCH_CHECK(counts.dim() == 1 && counts.size(0) == scores.size(0), "top_entries: counts must be [",
              scores.size(0), "]; got ", counts.sizes());
  TORCH_CHECK(k >= 0, "top_entries: k must be >= 0; got ", k);
  const at::Tensor sc = scores.contiguous(), n = counts.to(at::kLong).contiguous();
  const int64_t rows = sc.size(0), t = sc.size(1), width = std::min(k, t);
  at::Tensor out = at::full({rows, width}, -1, sc.options().dtype(at::kLong));
  int64_t* dst = out.data_ptr<int64_t>();
  const float* src = sc.data_ptr<float>();
  const int64_t* count = n.data_ptr<int64_t>();
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(t, 1)), [&](int64_t begin, int64_t end) {
    std::vector<Scored> heap;
    heap.reserve(width);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t m = std::clamp<int64_t>(count[i], 0, t), kept = std::min(width, m);
      if (!kept) continue;
      best_of_row(src + i * t, m, kept, heap);
      for (int64_t j = 0; j < kept && heap[j].first != -std::numeric_limits<float>::infinity(); ++j)
        dst[i * width + j] = heap[j].second;
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(dsv4_cpu, m) {
  m.def("top_entries(Tensor scores, Tensor counts, int k) -> Tensor");
}

TORCH_LIBRARY_IMPL(dsv4_cpu, CPU, m) {
  m.impl("top_entries", &top_entries);
}
