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

namespace {

// One partial plan in a state of the k-best programme: its damage and how it got there.
struct Partial {
  double cost;
  int from_state;  // index of the predecessor state, -1 for the start
  int from_rank;   // its rank in the predecessor's list
  int run;         // removed blocks between the predecessor and this state's kept block
};

}  // namespace

std::vector<OptimalResult> optimal_kbest(const TableView& scores, int num_remove, int k) {
  const int n = scores.num_blocks;
  check_num_remove(num_remove, n);
  if (k < 1) throw std::invalid_argument("k=" + std::to_string(k) + " must be >= 1");
  const int longest = std::min(scores.max_run, num_remove);
  // States as in `optimal`: (i, r) = blocks 0..i-1 seen, r removed, block i-1 kept (or i = 0).
  const int cols = num_remove + 1;
  auto at = [cols](int i, int r) { return i * cols + r; };
  std::vector<std::vector<Partial>> lists(static_cast<std::size_t>(n + 1) * cols);
  lists[at(0, 0)].push_back({0.0, -1, 0, 0});
  // Plans whose last run ends the model: (cost, from_state, from_rank, run), after the
  // state (n, num_remove) in the tie order, as in `optimal`.
  std::vector<Partial> final_runs;
  auto by_cost = [](const Partial& a, const Partial& b) { return a.cost < b.cost; };
  for (int i = 0; i < n; ++i) {
    for (int r = 0; r <= num_remove; ++r) {
      std::vector<Partial>& here = lists[at(i, r)];
      if (here.empty()) continue;
      // Every transition into (i, r) comes from a smaller i: the list is complete. Arrival
      // order breaks ties (stable), which reproduces `optimal`'s first-found choice.
      std::stable_sort(here.begin(), here.end(), by_cost);
      if (static_cast<int>(here.size()) > k) here.resize(k);
      const int src = at(i, r);
      for (int rank = 0; rank < static_cast<int>(here.size()); ++rank) {
        lists[at(i + 1, r)].push_back({here[rank].cost, src, rank, 0});  // keep block i
      }
      for (int len = 1; len <= std::min(longest, num_remove - r) && i + len <= n; ++len) {
        const double s = scores.at(i, len);
        for (int rank = 0; rank < static_cast<int>(here.size()); ++rank) {
          const double c = here[rank].cost + 1.0 - s;  // as `optimal` adds it: equal sums tie
          if (i + len == n) {
            if (r + len == num_remove) final_runs.push_back({c, src, rank, len});
          } else {
            lists[at(i + len + 1, r + len)].push_back({c, src, rank, len});
          }
        }
      }
    }
  }
  std::vector<Partial>& last = lists[at(n, num_remove)];
  std::stable_sort(last.begin(), last.end(), by_cost);
  if (static_cast<int>(last.size()) > k) last.resize(k);
  // Terminal plans: those ending on a kept block (state (n, N)), then those ending with a run.
  std::vector<Partial> ends;
  for (int rank = 0; rank < static_cast<int>(last.size()); ++rank) {
    ends.push_back({last[rank].cost, at(n, num_remove), rank, 0});
  }
  ends.insert(ends.end(), final_runs.begin(), final_runs.end());
  std::stable_sort(ends.begin(), ends.end(), by_cost);
  if (static_cast<int>(ends.size()) > k) ends.resize(k);
  if (ends.empty()) {
    throw std::invalid_argument(
        "no plan removes " + std::to_string(num_remove) + " of " + std::to_string(n) +
        " blocks with runs of at most " + std::to_string(longest) +
        " blocks separated by kept blocks; score runs up to a longer max_run");
  }
  std::vector<OptimalResult> out;
  for (const Partial& end : ends) {
    OptimalResult plan;
    plan.damage = end.cost;
    int state = end.from_state, rank = end.from_rank;
    if (end.run > 0) {  // a final run ending at the last block, entered from `state`
      for (int b = n - end.run; b < n; ++b) plan.removed.push_back(b);
    }
    // Walk back: at state (i, r) block i-1 is kept; the entry's run precedes it.
    while (state >= 0) {
      const int i = state / cols;
      const Partial& p = lists[state][rank];
      for (int b = i - 1 - p.run; b < i - 1; ++b) plan.removed.push_back(b);
      state = p.from_state;
      rank = p.from_rank;
    }
    std::sort(plan.removed.begin(), plan.removed.end());
    out.push_back(std::move(plan));
  }
  return out;
}

}  // namespace miprun::select
