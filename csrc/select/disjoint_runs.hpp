// Step 6 of Fast-Block-Select: the best set of separated runs with given lengths.
#pragma once

#include <utility>
#include <vector>

namespace miprun::select {

// Runs of one length: `count` of them must be chosen among `candidates` (start, score).
struct RunClass {
  int length = 1;
  int count = 1;
  std::vector<std::pair<int, double>> candidates;
};

struct DisjointChoice {
  bool feasible = false;
  double total = 0.0;                   // sum of the chosen runs' scores
  std::vector<std::vector<int>> starts;  // per class, chosen starts in increasing order
};

// Choose exactly `count` distinct candidate runs of every class so that no two chosen runs
// overlap and, unless allow_touching, no two are adjacent (at least one kept block between
// them), maximising the sum of their scores. Exact: a dynamic programme over block positions
// whose state is how many runs of each class are chosen so far, prod(count + 1) states, so
// O(num_blocks * states * classes) time. Ties go to the choice whose runs start earlier.
//
// Which group of Fast-Block-Select receives which run of its length does not matter: the
// score depends only on the run, so any feasible set of runs can be handed out one per group.
DisjointChoice best_disjoint_runs(int num_blocks, const std::vector<RunClass>& classes,
                                  bool allow_touching);

}  // namespace miprun::select
