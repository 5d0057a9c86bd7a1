#include "select/greedy.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

#include "select/table_view.hpp"

namespace miprun::select {

std::vector<int> greedy(const std::vector<double>& single, int num_remove) {
  const int n = static_cast<int>(single.size());
  check_num_remove(num_remove, n);
  for (int b = 0; b < n; ++b) {
    if (std::isnan(single[b])) {
      throw std::invalid_argument("the single-block score of block " + std::to_string(b) +
                                  " is NaN; rescore the table");
    }
  }
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return single[a] > single[b]; });
  std::vector<int> out(order.begin(), order.begin() + num_remove);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace miprun::select
