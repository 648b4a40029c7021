// Sums of 16 float32 partials in one fixed order, the same in AVX-512 registers and in scalar code: kernels that
// keep 16 partial sums (dimension d in partial d % 16) reduce them with `halves`, so their results do not depend on
// the CPU's vector width.
#pragma once

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace dsv4_kernels {

constexpr int kLanes = 16;

// The 16 partial sums as halves: [i] + [i + 8], then + 4, + 2, + 1.
inline float halves(const float* part) {
  float s8[8], s4[4];
  for (int i = 0; i < 8; ++i) s8[i] = part[i] + part[i + 8];
  for (int i = 0; i < 4; ++i) s4[i] = s8[i] + s8[i + 4];
  return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

#if defined(__AVX512F__)
inline float halves(__m512 v) {
  const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));  // [0 + 2, 1 + 3]
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}
#endif

}  // namespace dsv4_kernels
