// Every subset of blocks: the ground truth for small models.
#pragma once

#include <vector>

#include "select/table_view.hpp"

namespace miprun::select {

struct ExhaustiveResult {
  std::vector<int> removed;  // sorted block indices
  double damage = 0.0;       // sum over the subset's maximal runs of 1 - score(run)
  double subsets = 0.0;      // C(T, N), the number of subsets examined
};

// Examine every num_remove-subset of the blocks; its damage is the sum over its maximal
// runs of 1 - score(run) (the objective of `optimal`), and a subset with a maximal run
// longer than table.max_run is infeasible. Refuses (std::invalid_argument) when C(T, N)
// exceeds max_subsets. Ties go to the lexicographically first subset.
ExhaustiveResult exhaustive(const TableView& scores, int num_remove, double max_subsets);

// C(n, k) as a double (exact up to 2^53).
double binomial(int n, int k);

}  // namespace miprun::select
