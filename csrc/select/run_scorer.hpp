// Run scores on demand, each computed at most once and counted.
#pragma once

#include <functional>
#include <vector>

namespace miprun::select {

// Wraps a score function (a table lookup or a caller's callback that estimates the MI of a
// run) with a cache, so repeated requests for the same run cost nothing and the number of
// distinct scores computed is known. Single blocks (length 1) and longer runs are counted
// apart: Fast-Block-Select reads every single block in its first step, while the paper's
// saving is in the longer runs.
class RunScorer {
 public:
  using ScoreFn = std::function<double(int start, int length)>;

  RunScorer(int num_blocks, ScoreFn score);

  // The score of the run of blocks start..start+length-1; throws std::invalid_argument
  // for a run outside the model or a NaN score.
  double get(int start, int length);

  int num_blocks() const { return num_blocks_; }
  int single_evaluations() const { return singles_; }
  int run_evaluations() const { return runs_; }

 private:
  int num_blocks_;
  ScoreFn score_;
  std::vector<double> cache_;  // (num_blocks, num_blocks): [start, length - 1]
  std::vector<char> known_;
  int singles_ = 0;
  int runs_ = 0;
};

}  // namespace miprun::select
