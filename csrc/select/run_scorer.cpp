#include "select/run_scorer.hpp"

#include <cmath>
#include <stdexcept>
#include <string>
#include <utility>

namespace miprun::select {

RunScorer::RunScorer(int num_blocks, ScoreFn score)
    : num_blocks_(num_blocks), score_(std::move(score)) {
  if (num_blocks < 1) {
    throw std::invalid_argument("num_blocks=" + std::to_string(num_blocks) + " must be >= 1");
  }
  const std::size_t cells = static_cast<std::size_t>(num_blocks) * num_blocks;
  cache_.assign(cells, 0.0);
  known_.assign(cells, 0);
}

double RunScorer::get(int start, int length) {
  if (length < 1 || start < 0 || start + length > num_blocks_) {
    throw std::invalid_argument("run (start=" + std::to_string(start) + ", length=" +
                                std::to_string(length) + ") is outside a model of " +
                                std::to_string(num_blocks_) + " blocks");
  }
  const std::size_t i = static_cast<std::size_t>(start) * num_blocks_ + (length - 1);
  if (known_[i]) return cache_[i];
  const double v = score_(start, length);
  if (std::isnan(v)) {
    throw std::invalid_argument("the score of run (start=" + std::to_string(start) +
                                ", length=" + std::to_string(length) +
                                ") is NaN; the score function must return a number");
  }
  cache_[i] = v;
  known_[i] = 1;
  (length == 1 ? singles_ : runs_) += 1;
  return v;
}

}  // namespace miprun::select
