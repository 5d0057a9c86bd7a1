// Column tiles of a row-major (n, d) array, for the per-column estimators.
//
// A column read straight from a row-major array touches one cache line per element; a tile
// of neighbouring columns read row by row uses whole lines, so per-column work first copies
// a tile into contiguous columns.
#pragma once

#include <algorithm>
#include <cstddef>

namespace miprun::mi {

// Columns per tile: enough that a row of the tile spans whole cache lines.
constexpr std::size_t kColumnTile = 16;

// Copy columns j0..j0+w-1 of x: (n, d) into out: (w, n), column after column.
template <class T>
inline void gather_columns(const T* x, std::size_t n, std::size_t d, std::size_t j0, std::size_t w, T* out) {
  for (std::size_t i = 0; i < n; ++i) {
    const T* row = x + i * d + j0;
    for (std::size_t c = 0; c < w; ++c) out[c * n + i] = row[c];
  }
}

inline std::size_t tile_count(std::size_t d, std::size_t tile) { return (d + tile - 1) / tile; }

inline std::size_t tile_width(std::size_t d, std::size_t tile, std::size_t t) {
  return std::min(tile, d - t * tile);
}

}  // namespace miprun::mi
