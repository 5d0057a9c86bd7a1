#include "select/optimal.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

namespace miprun::select {

OptimalResult optimal(const TableView& scores, int num_remove) {
  const int n = scores.num_blocks;
  check_num_remove(num_remove, n);
  const int longest = std::min(scores.max_run, num_remove);
  const double inf = std::numeric_limits<double>::infinity();

  // cost[i][k]: least damage of blocks 0..i-1 with k removed, block i-1 kept (or i = 0), so
  // a run may start at i. run[i][k]: the length of the run that ends just before the kept
  // block i-1 on the best way there (0: block i-1 kept after a kept block or the start).
  const int cols = num_remove + 1;
  std::vector<double> cost(static_cast<std::size_t>(n + 1) * cols, inf);
  std::vector<int> run(static_cast<std::size_t>(n + 1) * cols, 0);
  auto at = [cols](int i, int k) { return static_cast<std::size_t>(i) * cols + k; };
  cost[at(0, 0)] = 0.0;
  double best = inf;
  int best_start = -1, best_length = 0;  // a final run ending at the last block, if any
  for (int i = 0; i < n; ++i) {
    for (int k = 0; k <= num_remove; ++k) {
      const double c = cost[at(i, k)];
      if (c == inf) continue;
      if (c < cost[at(i + 1, k)]) {  // keep block i
        cost[at(i + 1, k)] = c;
        run[at(i + 1, k)] = 0;
      }
      for (int len = 1; len <= std::min(longest, num_remove - k) && i + len <= n; ++len) {
        const double d = c + 1.0 - scores.at(i, len);
        if (i + len == n) {  // the run ends the model: it must complete the plan
          if (k + len == num_remove && d < best) {
            best = d;
            best_start = i;
            best_length = len;
          }
        } else if (d < cost[at(i + len + 1, k + len)]) {  // block i+len kept after it
          cost[at(i + len + 1, k + len)] = d;
          run[at(i + len + 1, k + len)] = len;
        }
      }
    }
  }
  int i = n, k = num_remove;
  OptimalResult out;
  if (cost[at(n, num_remove)] <= best && cost[at(n, num_remove)] < inf) {
    best = cost[at(n, num_remove)];
  } else if (best_start >= 0) {
    for (int b = best_start; b < n; ++b) out.removed.push_back(b);
    i = best_start;
    k = num_remove - best_length;
  } else {
    throw std::invalid_argument(
        "no plan removes " + std::to_string(num_remove) + " of " + std::to_string(n) +
        " blocks with runs of at most " + std::to_string(longest) +
        " blocks separated by kept blocks; score runs up to a longer max_run");
  }
  out.damage = best;
  // Walk back: at (i, k) block i-1 is kept; run[i][k] says how many removed blocks precede it.
  while (i > 0) {
    const int len = run[at(i, k)];
    for (int b = i - 1 - len; b < i - 1; ++b) out.removed.push_back(b);
    i -= len + 1;
    k -= len;
  }
  std::sort(out.removed.begin(), out.removed.end());
  return out;
}

}  // namespace miprun::select
