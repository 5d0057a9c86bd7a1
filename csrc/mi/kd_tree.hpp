// A k-d tree for exact max-norm searches: the k-th nearest distance and counts within a
// radius, as the KSG estimator needs them in the joint space and in each marginal space.
//
// Every answer equals a brute-force scan's bit for bit: point distances are formed as
// |q_t - p_t| like the reference's, and a box is skipped (or counted whole) only when
// the same rounded differences at its bounds prove that none (or all) of its points
// qualify; rounding is monotone, so no point's own rounded distance can disagree.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace miprun::mi {

class KdTree {
 public:
  // The rows of a: (m, da) followed, when b is given, by those of b: (m, db), as points
  // of da + db coordinates. m < 2^32.
  KdTree(const double* a, std::size_t da, const double* b, std::size_t db, std::size_t m);

  std::size_t size() const { return index_.size(); }
  // Tree position of the point of original index i, and the reverse.
  std::uint32_t position(std::size_t i) const { return position_[i]; }
  std::uint32_t point(std::size_t p) const { return index_[p]; }

  // k-th smallest distance from the point at position p to the other points (duplicates of
  // it count, at distance 0). best: scratch of k doubles.
  double kth_distance(std::size_t p, int k, double* best) const;

  // Number of points (p's own included) strictly within eps of the point at position p;
  // 0 when eps <= 0.
  std::size_t count_within(std::size_t p, double eps) const;

 private:
  struct Node {
    std::uint32_t begin, end;  // positions of its points
    std::uint32_t left = 0, right = 0;  // children; 0: a leaf (the root is nobody's child)
  };
  std::uint32_t build(std::uint32_t begin, std::uint32_t end);
  void knn(std::uint32_t node, const double* q, std::size_t self, int k, double* best) const;
  std::size_t count(std::uint32_t node, const double* q, double eps) const;
  // max_t of the gap between q and the node's box, stopping once it reaches `bound`
  double box_gap(std::uint32_t node, const double* q, double bound) const;

  std::size_t w_;
  std::vector<double> pts_;              // (m, w_) in tree order
  std::vector<std::uint32_t> index_;     // original index of each position
  std::vector<std::uint32_t> position_;  // position of each original index
  std::vector<Node> nodes_;
  std::vector<double> lo_, hi_;  // (nodes, w_) bounding boxes
};

}  // namespace miprun::mi
