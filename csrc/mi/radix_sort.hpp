// LSD radix sorts on order-preserving keys: one stable pass per byte, O(n) and free of
// data-dependent branches. On the 10^3..10^6 values of one column or one KSG point set they
// are several times faster than comparison sorts or repeated selection.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "mi/float_keys.hpp"

namespace miprun::mi {

// Sort keys: (n,) ascending, moving payload: (n,) along when given (stable). tmp and
// payload_tmp are scratch of the same sizes; results end in keys and payload.
template <class U, class P = std::uint32_t>
void radix_sort(std::vector<U>& keys, std::vector<U>& tmp, std::vector<P>* payload = nullptr,
                std::vector<P>* payload_tmp = nullptr) {
  constexpr int kBytes = static_cast<int>(sizeof(U));
  const std::size_t n = keys.size();
  tmp.resize(n);
  if (payload) payload_tmp->resize(n);
  std::array<std::array<std::size_t, 256>, kBytes> count{};
  for (std::size_t i = 0; i < n; ++i)
    for (int b = 0; b < kBytes; ++b) ++count[static_cast<std::size_t>(b)][(keys[i] >> (8 * b)) & 0xFF];
  for (int b = 0; b < kBytes; ++b) {
    std::array<std::size_t, 256>& c = count[static_cast<std::size_t>(b)];
    if (n == 0 || c[(keys[0] >> (8 * b)) & 0xFF] == n) continue;  // one bucket: the pass moves nothing
    std::size_t pos = 0;
    for (std::size_t& x : c) {
      const std::size_t t = x;
      x = pos;
      pos += t;
    }
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t d = c[(keys[i] >> (8 * b)) & 0xFF]++;
      tmp[d] = keys[i];
      if (payload) (*payload_tmp)[d] = (*payload)[i];
    }
    keys.swap(tmp);
    if (payload) payload->swap(*payload_tmp);
  }
}

// Indices that sort v: (n,) ascending, ties in index order. n < 2^32.
inline std::vector<std::uint32_t> radix_argsort(const double* v, std::size_t n) {
  std::vector<std::uint64_t> keys(n), tmp;
  std::vector<std::uint32_t> idx(n), idx_tmp;
  for (std::size_t i = 0; i < n; ++i) {
    keys[i] = FloatKey<double>::key(v[i]);
    idx[i] = static_cast<std::uint32_t>(i);
  }
  radix_sort(keys, tmp, &idx, &idx_tmp);
  return idx;
}

}  // namespace miprun::mi
