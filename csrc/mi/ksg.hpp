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

// KSG of point sets x: (m, dx), y: (m, dy) row-major. Scalar pairs take ksg_scalar; other
// dimensions a brute-force scan over all points per point (O(m^2 (dx + dy)) time, O(k)
// extra memory per thread).
double ksg_points(const double* x, const double* y, std::size_t m, std::size_t dx, std::size_t dy, int k);

// Mean over columns j of ksg_scalar(x[:, j], y[:, j]) for x, y: (m, d) row-major,
// parallel over columns.
double ksg_per_dim(const double* x, const double* y, std::size_t m, std::size_t d, int k);

}  // namespace miprun::mi
