// Fast-Block-Select (MI-PRUN, section 3.3): choose blocks to remove with few run scores.
#pragma once

#include <cmath>
#include <functional>
#include <vector>

#include "select/run_scorer.hpp"
#include "select/table_view.hpp"

namespace miprun::select {

// The choices the paper leaves open, with its likely reading as the default.
struct FbsOptions {
  // Base of the logarithm in K = min(ceil(log L) + 5, S). The paper writes "log" without a
  // base, and its Figure 3 (K = 5, 6, 5 for L = 2, 3, 5) does not settle it: no base gives
  // K = 5 at L = 2 (ceil(log 2) >= 1) unless S = 5 there; base 10 gives 6 at L = 3, base e
  // gives 7 unless S = 6. Default: e, the usual meaning of "log" in the paper's field.
  double log_base = 2.718281828459045;
  // false: two chosen runs may neither overlap nor be adjacent, because adjacent runs merge
  // into one longer run whose score is not the sum of theirs. true: adjacent runs are allowed
  // (their groups merge at the next iteration, as the L = 2, 3 then 5 of Figure 3 suggests).
  bool allow_touching = true;
  // Guard against cycling; reaching it is reported (converged = false), not silent.
  int max_iterations = 100;
};

struct FbsCandidate {
  int start = 0;
  double estimated = 0.0;  // sum of the single-block scores r(i) of its blocks
  double actual = 0.0;     // the run's own score, e.g. MI(h_start, h_{start+length})
};

struct FbsGroup {
  int start = 0;   // the group's run at the start of the iteration
  int length = 0;
  int listed = 0;  // S: runs of this length made only of blocks of the pool
  int k = 0;       // K = min(ceil(log L) + 5, S)
  std::vector<FbsCandidate> candidates;  // the K best estimates, then the group's own run
  int chosen_start = 0;
};

struct FbsIteration {
  std::vector<int> pruning_set;  // P at the start of the iteration, sorted
  std::vector<FbsGroup> groups;
  double current_sum = 0.0;  // sum of the actual scores of P's own runs
  double chosen_sum = 0.0;   // sum of the actual scores of the chosen runs
  std::vector<int> new_pruning_set;
};

struct FbsResult {
  std::vector<int> removed;  // sorted block indices
  int evaluations = 0;         // distinct run scores of length >= 2 computed (step 5)
  int single_evaluations = 0;  // single-block scores r(i) read (step 1): num_blocks
  int iterations = 0;
  bool converged = false;  // false when max_iterations passes ended with P still changing
  std::vector<FbsIteration> trace;
};

// Fast-Block-Select on any source of run scores (oriented: higher = more removable).
//
// 1. read r(i), the score of every single block, and rank the blocks by it, most redundant
//    first (ties: lower index first);
// 2. P = the first num_remove, A = the next M = min(N, T - N); the pool P u A is fixed;
// 3. split P into groups of contiguous blocks;
// 4. for a group of length L, list every run of length L made only of pool blocks (S of
//    them), estimate each by the sum of its r, sort (best first, ties: lower start first);
// 5. compute the actual score of the K = min(ceil(log L) + 5, S) best; the group's own
//    run is always added as a candidate (and scored) even when it is not among the K, so
//    that keeping P is always possible and a valid plan always exists;
// 6. choose one candidate per group, no two overlapping (nor touching, unless
//    allow_touching), maximising the sum of actual scores, exactly (best_disjoint_runs).
//    P is replaced only when the choice beats P's own sum, so a tie keeps P and, without
//    touching, the sum rises strictly at every change and the loop cannot cycle.
// Steps 3-6 repeat until P does not change or max_iterations passes have run.
//
// Counting: a length-1 actual score is r(i), already read, so it costs nothing; r reads are
// single_evaluations, the longer runs scored in step 5 are evaluations, each counted once.
FbsResult fast_block_select(RunScorer& scorer, int num_remove, const FbsOptions& options);

FbsResult fast_block_select_table(const TableView& table, int num_remove,
                                  const FbsOptions& options);

FbsResult fast_block_select_callback(int num_blocks,
                                     const std::function<double(int, int)>& score,
                                     int num_remove, const FbsOptions& options);

// ceil(log_base(length)), exact at integer powers (log(1000)/log(10) is 2.9999999999999996).
int ceil_log(int length, double log_base);

}  // namespace miprun::select
