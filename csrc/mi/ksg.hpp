// Kraskov-Stoegbauer-Grassberger estimator 1 (max-norm) on prepared float64 point sets.
//
// I = psi(k) + psi(m) - mean_i [psi(n_x(i) + 1) + psi(n_y(i) + 1)], where eps_i is the
// max-norm distance from point i to its k-th nearest neighbour in the joint space and
// n_x(i) counts the points j != i with ||x_i - x_j||_inf < eps_i (strictly). Raw value,
// not clipped at 0.
#pragma once

#include <cstddef>

namespace miprun::mi {

// Digamma of x > 0 (recurrence up to x >= 10, then the asymptotic series); -inf at 0.
double digamma(double x);

// KSG of scalar pairs x, y: (m,). Marginal counts by sorting and binary search; the joint
// k-NN search cuts the points into slabs of equal count in x, each sorted by y, and visits
// only slabs and points within the current k-th distance: about O(m log m) in all.
// Runs on all threads when `parallel`.
double ksg_scalar(const double* x, const double* y, std::size_t m, int k, bool parallel);

// KSG of point sets x: (m, dx), y: (m, dy) row-major, any dx, dy >= 1, exact neighbours.
// The points are sorted by the first coordinate of x (and, for the y counts, of y); each
// search walks outwards from the point in that order and stops where the gap in that one
// coordinate alone reaches the k-th distance (or eps, for the counts). The cost follows
// the number of points within eps in one coordinate: near O(m log m) in few dimensions,
// O(m^2 (dx + dy)) at worst. eps and the counts equal a brute-force scan's exactly.
double ksg_joint(const double* x, const double* y, std::size_t m, std::size_t dx, std::size_t dy, int k);

// KSG of point sets x: (m, dx), y: (m, dy) row-major: ksg_scalar for scalar pairs,
// ksg_joint otherwise.
double ksg_points(const double* x, const double* y, std::size_t m, std::size_t dx, std::size_t dy, int k);

// Mean over columns j of ksg_scalar(x[:, j], y[:, j]) for x, y: (m, d) row-major,
// parallel over columns.
double ksg_per_dim(const double* x, const double* y, std::size_t m, std::size_t d, int k);

}  // namespace miprun::mi
