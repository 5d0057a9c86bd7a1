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

// Gather tile t of the columns of x and of y (both (n, d)) into xs and ys (kColumnTile * n
// each) and call fn(j, x_column_j, y_column_j) for each column j of the tile.
template <class T, class F>
inline void for_each_tile_column(const T* x, const T* y, std::size_t n, std::size_t d, std::size_t t, T* xs, T* ys,
                                 F&& fn) {
  const std::size_t j0 = t * kColumnTile;
  const std::size_t w = tile_width(d, kColumnTile, t);
  gather_columns(x, n, d, j0, w, xs);
  gather_columns(y, n, d, j0, w, ys);
  for (std::size_t c = 0; c < w; ++c) fn(j0 + c, xs + c * n, ys + c * n);
}

}  // namespace miprun::mi
