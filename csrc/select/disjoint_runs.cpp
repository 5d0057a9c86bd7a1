#include "select/disjoint_runs.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace miprun::select {

namespace {
constexpr double kNone = -std::numeric_limits<double>::infinity();
constexpr double kMaxCells = 5e7;  // DP cells (positions x states) we agree to allocate
}  // namespace

DisjointChoice best_disjoint_runs(int num_blocks, const std::vector<RunClass>& classes,
                                  bool allow_touching) {
  const int num_classes = static_cast<int>(classes.size());
  const int gap = allow_touching ? 0 : 1;

  // Mixed-radix state: digit c counts the runs of class c chosen so far.
  std::vector<long> radix(num_classes);
  long states = 1;
  for (int c = 0; c < num_classes; ++c) {
    radix[c] = states;
    states *= classes[c].count + 1;
  }
  const long full = states - 1;  // every digit at its maximum
  if (static_cast<double>(states) * (num_blocks + 1) > kMaxCells) {
    throw std::invalid_argument("choosing runs for " + std::to_string(num_classes) +
                                " run lengths needs " + std::to_string(states) +
                                " states per position, more than this solver allocates; "
                                "remove fewer blocks");
  }

  // score_at[c][p]: score of candidate run (p, length_c), NaN when it is not a candidate.
  std::vector<std::vector<double>> score_at(num_classes,
                                            std::vector<double>(num_blocks, std::nan("")));
  for (int c = 0; c < num_classes; ++c) {
    for (const auto& [start, score] : classes[c].candidates) {
      if (start >= 0 && start + classes[c].length <= num_blocks) score_at[c][start] = score;
    }
  }

  auto digit = [&](long state, int c) { return (state / radix[c]) % (classes[c].count + 1); };

  // best[p * states + s]: the largest score still to gain from positions p.. when the
  // chosen counts are s; kNone when the counts can no longer be completed.
  const int positions = num_blocks + 1;
  std::vector<double> best(static_cast<std::size_t>(positions) * states, kNone);
  // Value of starting a run of class c at block p in state s (then completing optimally);
  // kNone when that run is not a candidate, its class is used up, or nothing can follow.
  // The backward pass and the forward walk both use it, so they make the same decisions.
  auto take_value = [&](int p, long s, int c) {
    const int len = classes[c].length;
    if (p + len > num_blocks || std::isnan(score_at[c][p]) || digit(s, c) >= classes[c].count) return kNone;
    const int next = std::min(p + len + gap, num_blocks);
    const double rest = best[static_cast<std::size_t>(next) * states + s + radix[c]];
    return rest == kNone ? kNone : score_at[c][p] + rest;
  };
  best[static_cast<std::size_t>(num_blocks) * states + full] = 0.0;
  for (int p = num_blocks - 1; p >= 0; --p) {
    for (long s = 0; s < states; ++s) {
      double value = best[static_cast<std::size_t>(p + 1) * states + s];  // block p not chosen
      for (int c = 0; c < num_classes; ++c) {
        // >= : on a tie, starting a run here (earlier) beats starting it later.
        const double v = take_value(p, s, c);
        if (v != kNone && v >= value) value = v;
      }
      best[static_cast<std::size_t>(p) * states + s] = value;
    }
  }

  DisjointChoice out;
  out.starts.assign(num_classes, {});
  if (best[0] == kNone) return out;  // state 0 at position 0
  out.feasible = true;
  out.total = best[0];

  // Walk forward, repeating the decisions the backward pass made (same tie rule).
  long s = 0;
  int p = 0;
  while (p < num_blocks && s != full) {
    int take = -1;
    double chosen_value = best[static_cast<std::size_t>(p + 1) * states + s];
    for (int c = 0; c < num_classes; ++c) {
      const double v = take_value(p, s, c);
      if (v != kNone && v >= chosen_value) {
        chosen_value = v;
        take = c;
      }
    }
    if (take < 0) {
      ++p;
      continue;
    }
    out.starts[take].push_back(p);
    s += radix[take];
    p = std::min(p + classes[take].length + gap, num_blocks);
  }
  return out;
}

}  // namespace miprun::select
