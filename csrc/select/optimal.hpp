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

// The k best plans of the same objective, exactly, best first: the dynamic programme of
// `optimal` keeping, in every state (blocks seen, blocks removed), the k least-damage
// partial plans instead of one, merged from its predecessors (every plan has exactly one
// path through the states, since a run is always followed by a kept block or the end, so
// no plan appears twice). O(T * N * max_run * k log k) time, O(T * N * k) memory. Fewer
// than k plans come back when fewer are feasible. Ties keep the order of `optimal`, so the
// first plan is `optimal`'s own. Throws std::invalid_argument when no plan is feasible or
// k < 1.
std::vector<OptimalResult> optimal_kbest(const TableView& scores, int num_remove, int k);

}  // namespace miprun::select
