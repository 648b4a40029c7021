// The packed number formats the kernels decode (MXFP4 codes, UE8M0 scales), shared by cpu_ops.cpp and
// index_scores.cpp, and the indexer's scoring op that index_scores.cpp holds.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <cstring>

namespace dsv4_kernels {

// e2m1 value of each 4-bit code: magnitude by code & 7, negative when bit 3 is set.
inline const std::array<float, 16>& fp4_table() {
  static const std::array<float, 16> table = [] {
    const float grid[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    std::array<float, 16> t{};
    for (int c = 0; c < 16; ++c) t[c] = (c & 8) ? -grid[c & 7] : grid[c & 7];
    return t;
  }();
  return table;
}

// A UE8M0 byte as its power-of-two scale 2 ** (byte - 127); byte 0 reads as 2 ** -127, as e8m0_decode does.
inline float e8m0(uint8_t byte) {
  if (byte == 0) return 0x1p-127f;
  uint32_t bits = static_cast<uint32_t>(byte) << 23;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}


// The indexer's decode scores of packed MXFP4 keys (index_scores.cpp).
at::Tensor index_scores_packed(const at::Tensor& q, const at::Tensor& weights, const at::Tensor& pool,
                               const at::Tensor& index, int64_t dim, int64_t block);

}  // namespace dsv4_kernels
