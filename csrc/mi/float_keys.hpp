// Order-preserving unsigned keys of floating-point values, and their inverse.
//
// key(a) < key(b) exactly when a < b for finite values (and -0.0 sorts just below +0.0):
// negative values flip every bit, the others set the sign bit. Radix sorting, radix
// selection and the bin-code lookup table all work on these keys.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace miprun::mi {

template <class T>
struct FloatKey;

template <>
struct FloatKey<float> {
  using U = std::uint32_t;
  static U key(float v) {
    U b;
    std::memcpy(&b, &v, sizeof b);
    // the sign as a mask (arithmetic shift), not a branch: signs of data are unpredictable
    return b ^ (static_cast<U>(static_cast<std::int32_t>(b) >> 31) | 0x80000000u);
  }
  static float value(U k) {
    const U b = (k >> 31) ? (k & 0x7FFFFFFFu) : ~k;
    float v;
    std::memcpy(&v, &b, sizeof v);
    return v;
  }
};

template <>
struct FloatKey<double> {
  using U = std::uint64_t;
  static U key(double v) {
    U b;
    std::memcpy(&b, &v, sizeof b);
    return b ^ (static_cast<U>(static_cast<std::int64_t>(b) >> 63) | 0x8000000000000000ull);
  }
  static double value(U k) {
    const U b = (k >> 63) ? (k & 0x7FFFFFFFFFFFFFFFull) : ~k;
    double v;
    std::memcpy(&v, &b, sizeof v);
    return v;
  }
};

// Bucket of v among 2^16 ordered buckets: the top 16 bits of the key of v rounded to float
// (sign, exponent and 7 mantissa bits: 128 buckets per octave). Rounding to float is
// monotone, so v1 < v2 implies bucket(v1) <= bucket(v2) for float and double alike, and
// double values get the same resolution as floats (the top 16 bits of a double key would
// give only 16 buckets per octave).
constexpr int kBucketBits = 16;

template <class T>
inline std::size_t float_bucket(T v) {
  return static_cast<std::size_t>(FloatKey<float>::key(static_cast<float>(v)) >> (32 - kBucketBits));
}

}  // namespace miprun::mi
