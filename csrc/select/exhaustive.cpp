#include "select/exhaustive.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace miprun::select {

double binomial(int n, int k) {
  if (k < 0 || k > n) return 0.0;
  k = std::min(k, n - k);
  double out = 1.0;
  for (int i = 1; i <= k; ++i) out = out * (n - k + i) / i;
  return std::round(out);
}

namespace {

// Depth-first over subsets in lexicographic order, adding a run's damage when it closes.
struct Search {
  const TableView& scores;
  int num_remove;
  std::vector<int> chosen;
  std::vector<int> best_set;
  double best = std::numeric_limits<double>::infinity();

  // chosen holds `depth` blocks; the open run is (run_start, run_length); `cost` covers the
  // runs already closed.
  void visit(int depth, int next, int run_start, int run_length, double cost) {
    const int n = scores.num_blocks;
    if (depth == num_remove) {
      const double total = cost + 1.0 - scores.at(run_start, run_length);
      if (total < best) {
        best = total;
        best_set = chosen;
      }
      return;
    }
    for (int b = next; b <= n - (num_remove - depth); ++b) {
      chosen.push_back(b);
      if (depth > 0 && b == run_start + run_length) {
        if (run_length + 1 <= scores.max_run) visit(depth + 1, b + 1, run_start, run_length + 1, cost);
      } else if (depth == 0) {
        visit(1, b + 1, b, 1, 0.0);
      } else {
        visit(depth + 1, b + 1, b, 1, cost + 1.0 - scores.at(run_start, run_length));
      }
      chosen.pop_back();
    }
  }
};

}  // namespace

ExhaustiveResult exhaustive(const TableView& scores, int num_remove, double max_subsets) {
  check_num_remove(num_remove, scores.num_blocks);
  const double subsets = binomial(scores.num_blocks, num_remove);
  if (subsets > max_subsets) {
    throw std::invalid_argument(
        "exhaustive search over C(" + std::to_string(scores.num_blocks) + ", " +
        std::to_string(num_remove) + ") = " + std::to_string(subsets) +
        " subsets exceeds the limit of " + std::to_string(max_subsets) +
        "; use selector='optimal' (exact for the same objective) or raise max_subsets");
  }
  Search search{scores, num_remove, {}, {}};
  search.chosen.reserve(num_remove);
  search.visit(0, 0, 0, 0, 0.0);
  if (search.best_set.empty()) {
    throw std::invalid_argument(
        "no subset of " + std::to_string(num_remove) + " of " +
        std::to_string(scores.num_blocks) + " blocks has all its runs within max_run=" +
        std::to_string(scores.max_run) + "; score runs up to a longer max_run");
  }
  return {search.best_set, search.best, subsets};
}

}  // namespace miprun::select
