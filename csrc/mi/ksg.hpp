// Kraskov-Stoegbauer-Grassberger estimator 1 on prepared float64 point sets.
//
// I = psi(k) + psi(m) - mean_i [psi(n_x(i) + 1) + psi(n_y(i) + 1)], where eps_i is the
// distance from point i to its k-th nearest neighbour in the joint space, the larger of
// the distances in x and in y, and n_x(i) counts the points j != i with
// ||x_i - x_j|| < eps_i (strictly). Within x and within y the norm is the max-norm or the
// Euclidean norm (Metric). Raw value, not clipped at 0.
#pragma once

#include <cstddef>

namespace miprun::mi {

// The norm within x and within y. Euclidean counts compare squared distances (sums of
// squares added in coordinate order): n_x(i) counts the j whose squared distance in x is
// below the larger of the two squared distances to i's k-th neighbour. With one coordinate
// in each space the two norms are the same distance, computed as the max-norm.
enum class Metric { kChebyshev, kEuclidean };

// Digamma of x > 0 (recurrence up to x >= 10, then the asymptotic series); -inf at 0.
double digamma(double x);

// KSG of scalar pairs x, y: (m,). Marginal counts by sorting and binary search; the joint
// k-NN search cuts the points into slabs of equal count in x, each sorted by y, and visits
// only slabs and points within the current k-th distance: about O(m log m) in all.
// Runs on all threads when `parallel`.
double ksg_scalar(const double* x, const double* y, std::size_t m, int k, bool parallel);

// KSG of point sets x: (m, dx), y: (m, dy) row-major, any dx, dy >= 1, exact neighbours
// in the metric. Searches run in a k-d tree (or, for the max-norm in many coordinates, over
// points sorted by one coordinate); the cost is near O(m log m) in few dimensions,
// O(m^2 (dx + dy)) at worst. eps and the counts equal a brute-force scan's exactly.
double ksg_joint(const double* x, const double* y, std::size_t m, std::size_t dx, std::size_t dy, int k,
                 Metric metric);

// KSG of point sets x: (m, dx), y: (m, dy) row-major: ksg_scalar for scalar pairs (the
// metrics coincide there), ksg_joint otherwise.
double ksg_points(const double* x, const double* y, std::size_t m, std::size_t dx, std::size_t dy, int k,
                  Metric metric = Metric::kChebyshev);

// Mean over columns j of ksg_scalar(x[:, j], y[:, j]) for x, y: (m, d) row-major,
// parallel over columns.
double ksg_per_dim(const double* x, const double* y, std::size_t m, std::size_t d, int k);

}  // namespace miprun::mi
