// A k-d tree for exact searches in a norm (mi/norms.hpp): the k-th smallest key and counts
// of keys below a bound, as the KSG estimator needs them in the joint space and in each
// marginal space.
//
// Every answer equals a brute-force scan's bit for bit: point keys are formed like the
// reference's distances, and a box is skipped (or counted whole) only when the same
// rounded differences at its bounds prove that none (or all) of its points qualify;
// rounding is monotone, so no point's own rounded key can disagree. A leaf's points are
// scanned all at once, coordinate by coordinate across points: the loops vectorise and
// have no data-dependent branch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace miprun::mi {

// Norm: norms::MaxNorm or norms::BlockEuclidean (instantiated in kd_tree.cpp).
template <class Norm>
class KdTree {
 public:
  // The rows of a: (m, da) followed, when b is given, by those of b: (m, db), as points
  // of da + db coordinates (for BlockEuclidean, a's are x and b's are y). m < 2^32.
  KdTree(const double* a, std::size_t da, const double* b, std::size_t db, std::size_t m);

  std::size_t size() const { return index_.size(); }
  // Tree position of the point of original index i, and the reverse.
  std::uint32_t position(std::size_t i) const { return position_[i]; }
  std::uint32_t point(std::size_t p) const { return index_[p]; }

  // k-th smallest key from the point at position p to the other points (duplicates of it
  // count, at key 0). best: scratch of k doubles.
  double kth_key(std::size_t p, int k, double* best) const;

  // Number of points (p's own included) whose key from the point at position p is below
  // bound; 0 when bound <= 0.
  std::size_t count_below(std::size_t p, double bound) const;

 private:
  struct Node {
    std::uint32_t begin, end;  // positions of its points
    std::uint32_t left = 0, right = 0;  // children; 0: a leaf (the root is nobody's child)
  };
  std::uint32_t build(std::uint32_t begin, std::uint32_t end);
  void knn(std::uint32_t node, const double* q, std::size_t self, int k, double* best) const;
  std::size_t count(std::uint32_t node, const double* q, double bound) const;
  // the least key from q any point of the node's box can have, stopping once it reaches `bound`
  double box_key(std::uint32_t node, const double* q, double bound) const;

  Norm norm_;
  std::size_t w_;
  std::vector<double> pts_;              // (m, w_) in tree order: the query points
  std::vector<double> cols_;             // (w_, m) the same, coordinate-major: the leaf scans
  std::vector<std::uint32_t> index_;     // original index of each position
  std::vector<std::uint32_t> position_;  // position of each original index
  std::vector<Node> nodes_;
  std::vector<double> lo_, hi_;  // (nodes, w_) bounding boxes
};

}  // namespace miprun::mi
