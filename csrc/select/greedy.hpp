// The N best single blocks: the paper's ablation without the data processing inequality.
#pragma once

#include <vector>

namespace miprun::select {

// Indices (sorted) of the num_remove blocks with the highest single-block scores
// (oriented: higher = more removable); ties go to the lower index. `single` has one score
// per block; NaN is refused.
std::vector<int> greedy(const std::vector<double>& single, int num_remove);

}  // namespace miprun::select
