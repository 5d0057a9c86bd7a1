// A read-only view of a dense score table, shared by the selectors.
#pragma once

#include <cmath>
#include <stdexcept>
#include <string>

namespace miprun::select {

// values[start * max_run + (length - 1)] scores the run of blocks start..start+length-1.
// Entries with start + length > num_blocks are NaN and never read.
struct TableView {
  const double* values;
  int num_blocks;
  int max_run;

  bool covers(int start, int length) const {
    return length >= 1 && length <= max_run && start >= 0 && start + length <= num_blocks;
  }

  // The score of run (start, length); throws std::invalid_argument (ValueError in Python)
  // when the table does not hold it, naming the run and what to change.
  double at(int start, int length) const {
    if (!covers(start, length)) {
      throw std::invalid_argument(
          "the score table has no entry for run (start=" + std::to_string(start) +
          ", length=" + std::to_string(length) + "): it has " + std::to_string(num_blocks) +
          " blocks and runs up to length " + std::to_string(max_run) +
          "; score the model with max_run >= " + std::to_string(length));
    }
    const double v = values[static_cast<long>(start) * max_run + (length - 1)];
    if (std::isnan(v)) {
      throw std::invalid_argument(
          "the score table holds NaN for run (start=" + std::to_string(start) +
          ", length=" + std::to_string(length) +
          ") although the run lies inside the model; rescore the table");
    }
    return v;
  }
};

inline void check_num_remove(int num_remove, int num_blocks) {
  if (num_remove < 1 || num_remove >= num_blocks) {
    throw std::invalid_argument(
        "num_remove=" + std::to_string(num_remove) + " but the model has " +
        std::to_string(num_blocks) + " blocks; remove between 1 and " +
        std::to_string(num_blocks - 1) + " blocks");
  }
}

}  // namespace miprun::select
