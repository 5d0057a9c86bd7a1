#include "select/fast_block_select.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <stdexcept>
#include <string>

#include "select/disjoint_runs.hpp"

namespace miprun::select {

namespace {

struct Run {
  int start;
  int length;
};

std::vector<Run> runs_of(const std::vector<int>& sorted_blocks) {
  std::vector<Run> out;
  for (int b : sorted_blocks) {
    if (!out.empty() && out.back().start + out.back().length == b) {
      ++out.back().length;
    } else {
      out.push_back({b, 1});
    }
  }
  return out;
}

struct Listed {
  int start;
  double estimated;
};

// Step 4: every run of `length` blocks all in the pool, best estimate first.
std::vector<Listed> list_runs(int length, const std::vector<char>& in_pool,
                              const std::vector<double>& single) {
  const int n = static_cast<int>(single.size());
  std::vector<Listed> out;
  for (int s = 0; s + length <= n; ++s) {
    bool ok = true;
    double est = 0.0;
    for (int b = s; b < s + length; ++b) {
      if (!in_pool[b]) {
        ok = false;
        break;
      }
      est += single[b];
    }
    if (ok) out.push_back({s, est});
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const Listed& a, const Listed& b) { return a.estimated > b.estimated; });
  return out;
}

void check_options(const FbsOptions& o) {
  if (!(o.log_base > 1.0) || !std::isfinite(o.log_base)) {
    throw std::invalid_argument("log_base=" + std::to_string(o.log_base) +
                                " must be a finite number > 1 (e.g. e, 2 or 10)");
  }
  if (o.max_iterations < 1) {
    throw std::invalid_argument("max_iterations=" + std::to_string(o.max_iterations) +
                                " must be >= 1");
  }
}

}  // namespace

int ceil_log(int length, double log_base) {
  if (length <= 1) return 0;
  const double v = std::log(static_cast<double>(length)) / std::log(log_base);
  const double r = std::round(v);
  if (std::fabs(v - r) < 1e-9) return static_cast<int>(r);
  return static_cast<int>(std::ceil(v));
}

FbsResult fast_block_select(RunScorer& scorer, int num_remove, const FbsOptions& options) {
  const int n = scorer.num_blocks();
  check_num_remove(num_remove, n);
  check_options(options);

  // Step 1: single-block scores and their ranking.
  std::vector<double> single(n);
  for (int b = 0; b < n; ++b) single[b] = scorer.get(b, 1);
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return single[a] > single[b]; });

  // Step 2: P and the alternative set A; the pool P u A bounds every candidate run.
  const int alternatives = std::min(num_remove, n - num_remove);
  std::vector<int> pruning(order.begin(), order.begin() + num_remove);
  std::sort(pruning.begin(), pruning.end());
  std::vector<char> in_alternatives(n, 0);
  for (int i = num_remove; i < num_remove + alternatives; ++i) in_alternatives[order[i]] = 1;

  FbsResult result;
  for (int iteration = 1; iteration <= options.max_iterations; ++iteration) {
    std::vector<char> in_pool = in_alternatives;
    for (int b : pruning) in_pool[b] = 1;

    // Step 3.
    const std::vector<Run> group_runs = runs_of(pruning);

    // Steps 4-5, one listing per distinct length (groups of equal length share it).
    std::map<int, std::vector<Listed>> listings;
    for (const Run& g : group_runs) {
      if (!listings.count(g.length)) listings[g.length] = list_runs(g.length, in_pool, single);
    }
    FbsIteration it;
    it.pruning_set = pruning;
    std::map<int, RunClass> classes;  // by length
    for (const Run& g : group_runs) {
      const std::vector<Listed>& listed = listings[g.length];
      FbsGroup group;
      group.start = g.start;
      group.length = g.length;
      group.listed = static_cast<int>(listed.size());
      group.k = std::min(ceil_log(g.length, options.log_base) + 5, group.listed);
      bool own_in_top = false;
      double own_estimate = 0.0;
      for (int i = 0; i < group.listed; ++i) {
        if (listed[i].start == g.start) {
          own_in_top = i < group.k;
          own_estimate = listed[i].estimated;
        }
      }
      for (int i = 0; i < group.k; ++i) {
        group.candidates.push_back(
            {listed[i].start, listed[i].estimated, scorer.get(listed[i].start, g.length)});
      }
      if (!own_in_top) {
        group.candidates.push_back({g.start, own_estimate, scorer.get(g.start, g.length)});
      }
      RunClass& cls = classes[g.length];
      cls.length = g.length;
      cls.count = 0;  // counted below
      for (const FbsCandidate& c : group.candidates) {
        const bool seen = std::any_of(cls.candidates.begin(), cls.candidates.end(),
                                      [&](const auto& sc) { return sc.first == c.start; });
        if (!seen) cls.candidates.push_back({c.start, c.actual});
      }
      it.current_sum += scorer.get(g.start, g.length);
      it.groups.push_back(std::move(group));
    }
    std::vector<RunClass> class_list;
    for (auto& [length, cls] : classes) {
      cls.count = static_cast<int>(std::count_if(
          group_runs.begin(), group_runs.end(), [&](const Run& g) { return g.length == length; }));
      class_list.push_back(cls);
    }

    // Step 6: keep P unless some conflict-free choice scores strictly more.
    const DisjointChoice choice = best_disjoint_runs(n, class_list, options.allow_touching);
    const double tolerance = 1e-12 * std::max(1.0, std::fabs(it.current_sum));
    const bool replace = choice.feasible && choice.total > it.current_sum + tolerance;
    it.chosen_sum = replace ? choice.total : it.current_sum;
    if (replace) {
      // Hand the chosen runs out: a group whose own run was chosen keeps it, the other
      // groups of that length take the remaining runs in order of position.
      for (std::size_t c = 0; c < class_list.size(); ++c) {
        std::vector<int> left = choice.starts[c];
        std::vector<FbsGroup*> waiting;
        for (FbsGroup& g : it.groups) {
          if (g.length != class_list[c].length) continue;
          auto own = std::find(left.begin(), left.end(), g.start);
          if (own != left.end()) {
            g.chosen_start = g.start;
            left.erase(own);
          } else {
            waiting.push_back(&g);
          }
        }
        for (std::size_t i = 0; i < waiting.size(); ++i) waiting[i]->chosen_start = left[i];
      }
    } else {
      for (FbsGroup& g : it.groups) g.chosen_start = g.start;
    }
    std::vector<int> next;
    for (const FbsGroup& g : it.groups) {
      for (int b = g.chosen_start; b < g.chosen_start + g.length; ++b) next.push_back(b);
    }
    std::sort(next.begin(), next.end());
    it.new_pruning_set = next;
    result.trace.push_back(std::move(it));
    result.iterations = iteration;
    if (next == pruning) {
      result.converged = true;
      break;
    }
    pruning = std::move(next);
  }

  result.removed = pruning;  // converged or not, the last pass's choice
  result.evaluations = scorer.run_evaluations();
  result.single_evaluations = scorer.single_evaluations();
  return result;
}

FbsResult fast_block_select_table(const TableView& table, int num_remove,
                                  const FbsOptions& options) {
  RunScorer scorer(table.num_blocks,
                   [&table](int start, int length) { return table.at(start, length); });
  return fast_block_select(scorer, num_remove, options);
}

FbsResult fast_block_select_callback(int num_blocks,
                                     const std::function<double(int, int)>& score,
                                     int num_remove, const FbsOptions& options) {
  RunScorer scorer(num_blocks, score);
  return fast_block_select(scorer, num_remove, options);
}

}  // namespace miprun::select
