// The exact optimum of the additive damage objective, by dynamic programming.
#pragma once

#include <vector>

#include "select/table_view.hpp"

namespace miprun::select {

struct OptimalResult {
  std::vector<int> removed;  // sorted block indices
  double damage = 0.0;       // sum over the removed runs of 1 - score(run)
};

// Remove exactly num_remove blocks as runs separated by kept blocks, each run of length
// <= table.max_run, minimising the sum over runs of damage(run) = 1 - score(run), where
// score is the normalised table (1: the run is an identity). O(T * N * max_run) time.
// The objective is additive by construction: it is the model of damage that makes the
// exact optimum computable, and the yardstick against which the other selectors are held.
// Ties go to the plan found first (keeping a block before removing it, shorter runs first).
OptimalResult optimal(const TableView& scores, int num_remove);

}  // namespace miprun::select
