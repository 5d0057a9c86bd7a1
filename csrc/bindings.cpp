// The Python bindings of miprun's native core: one m.def per entry point.
// Docstrings live here, once; the implementations are torch-free C++ in mi/ and select/.
#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>
#include <pybind11/functional.h>

#include "mi/edges.hpp"
#include "mi/finite.hpp"
#include "mi/gaussian.hpp"
#include "mi/hist.hpp"
#include "mi/ksg.hpp"
#include "select/exhaustive.hpp"
#include "select/fast_block_select.hpp"
#include "select/greedy.hpp"
#include "select/optimal.hpp"

namespace py = pybind11;

// pyproject.toml's version, passed in by CMakeLists.txt; miprun/_native.py refuses a core
// whose version is not the package's.
#ifndef MIPRUN_VERSION
#define MIPRUN_VERSION "unknown"
#endif

PYBIND11_MODULE(_core, m) {
  m.doc() = "miprun native core: CPU mutual-information estimators and block selectors";
  m.attr("__version__") = MIPRUN_VERSION;
#ifdef MIPRUN_OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
  // --- mi: estimators (csrc/mi) ---
  {
    namespace mi = miprun::mi;
    // A numeric array viewed as a C-contiguous (n, d) matrix: float32 and float16 arrays
    // become float32, every other real dtype float64 (both conversions are exact).
    struct Matrix {
      py::array array;
      bool f32 = false;
      std::size_t n = 0, d = 0;
      const float* f() const { return static_cast<const float*>(array.data()); }
      const double* g() const { return static_cast<const double*>(array.data()); }
      std::size_t size() const { return n * d; }
    };
    auto as_matrix = [](const py::array& a, const char* name, bool force_f64) {
      const char kind = a.dtype().kind();
      if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b') {
        throw std::invalid_argument(std::string(name) + " must be a real numeric array, got dtype " +
                                    std::string(py::str(a.dtype())));
      }
      if (a.ndim() != 1 && a.ndim() != 2) {
        throw std::invalid_argument(std::string(name) + " must have shape (n,) or (n, d), got " +
                                    std::to_string(a.ndim()) + " dimensions");
      }
      Matrix m;
      m.f32 = !force_f64 && kind == 'f' && a.itemsize() <= 4;
      m.array = m.f32 ? py::array(py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a))
                      : py::array(py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(a));
      if (!m.array) throw py::error_already_set();
      m.n = static_cast<std::size_t>(a.shape(0));
      m.d = a.ndim() == 2 ? static_cast<std::size_t>(a.shape(1)) : 1;
      if (m.size() == 0) {
        throw std::invalid_argument(std::string(name) + " is empty (shape (" + std::to_string(m.n) + ", " +
                                    std::to_string(m.d) + "))");
      }
      return m;
    };
    // x and y with one element type: float32 only when both are.
    auto as_pair = [as_matrix](const py::array& x, const py::array& y) {
      Matrix mx = as_matrix(x, "x", false), my = as_matrix(y, "y", false);
      if (mx.f32 != my.f32) {
        mx = as_matrix(x, "x", true);
        my = as_matrix(y, "y", true);
      }
      return std::make_pair(mx, my);
    };
    auto check_finite = [](const Matrix& m, const char* name) {
      const std::size_t bad = m.f32 ? mi::count_non_finite(m.f(), m.size()) : mi::count_non_finite(m.g(), m.size());
      if (bad > 0) {
        throw std::invalid_argument(std::string(name) + " contains " + std::to_string(bad) +
                                    " NaN or infinite values; drop or mask them first");
      }
    };
    auto check_same_shape = [](const Matrix& x, const Matrix& y, bool per_dim) {
      const bool ok = x.n == y.n && (per_dim ? x.d == y.d : x.size() == y.size());
      if (!ok) {
        throw std::invalid_argument("x and y must pair up element for element" +
                                    std::string(per_dim ? " and column for column" : "") + ": got shapes (" +
                                    std::to_string(x.n) + ", " + std::to_string(x.d) + ") and (" +
                                    std::to_string(y.n) + ", " + std::to_string(y.d) + ")");
      }
    };
    auto reduction_is_per_dim = [](const std::string& reduction) {
      if (reduction == "per_dim") return true;
      if (reduction == "pooled") return false;
      throw std::invalid_argument("reduction must be 'pooled' or 'per_dim', got '" + reduction + "'");
    };

    m.def(
        "compute_edges",
        [as_matrix, check_finite](const py::array& x, int bins, const std::string& binning, bool per_dim) {
          const Matrix mx = as_matrix(x, "x", false);
          const mi::Binning b = mi::parse_binning(binning);
          mi::check_bins(bins);
          const py::ssize_t ne = bins - 1;
          py::array_t<double> out = per_dim ? py::array_t<double>({static_cast<py::ssize_t>(mx.d), ne})
                                            : py::array_t<double>({ne});
          double* o = out.mutable_data();
          {
            py::gil_scoped_release release;
            check_finite(mx, "x");
            if (mx.f32)
              mi::compute_edges(mx.f(), mx.n, mx.d, bins, b, per_dim, o);
            else
              mi::compute_edges(mx.g(), mx.n, mx.d, bins, b, per_dim, o);
          }
          return out;
        },
        py::arg("x"), py::arg("bins"), py::arg("binning") = "quantile", py::arg("per_dim") = false,
        R"pbdoc(Bin edges of ``x`` for the histogram estimator.

Parameters
----------
x : ndarray, shape (n,) or (n, d)
    Samples; float32 (float16 widened) or float64 (other real dtypes converted).
bins : int
    Bins per variable, 2..256.
binning : {"quantile", "uniform"}
    ``quantile``: the order statistics ``sorted(v)[floor(j N / bins)]``, ``j = 1..bins-1``,
    found by a radix sort of the values' keys, or from ``N = 2^18`` on by a bucket
    histogram and selection inside the wanted buckets; no comparison sort. ``uniform``:
    ``min + (max - min) j / bins``.
per_dim : bool
    Edges over all ``N = n*d`` elements, or for each column (``N = n``).

Returns
-------
ndarray, float64, shape (bins-1,) or (d, bins-1)
)pbdoc");

    m.def(
        "codes_from_edges",
        [as_matrix](const py::array& x, const py::array& edges) {
          const Matrix mx = as_matrix(x, "x", false);
          const auto e = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(edges);
          if (!e) throw py::error_already_set();
          const bool per_dim = e.ndim() == 2;
          if (e.ndim() != 1 && !(per_dim && static_cast<std::size_t>(e.shape(0)) == mx.d)) {
            throw std::invalid_argument("edges must have shape (bins-1,) or (d, bins-1) with d=" +
                                        std::to_string(mx.d) + " columns of x; got " + std::to_string(e.ndim()) +
                                        " dimensions");
          }
          const std::size_t ne = static_cast<std::size_t>(e.shape(e.ndim() - 1));
          py::array_t<std::uint8_t> out({static_cast<py::ssize_t>(mx.n), static_cast<py::ssize_t>(mx.d)});
          std::uint8_t* o = out.mutable_data();
          const double* ep = e.data();
          std::size_t bad = 0;
          {
            py::gil_scoped_release release;
            // finiteness is checked while coding, in the same pass over x
            bad = mx.f32 ? mi::codes_from_edges(mx.f(), mx.n, mx.d, ep, ne, per_dim, o)
                         : mi::codes_from_edges(mx.g(), mx.n, mx.d, ep, ne, per_dim, o);
          }
          if (bad > 0) {
            throw std::invalid_argument("x contains " + std::to_string(bad) +
                                        " NaN or infinite values; drop or mask them first");
          }
          return out;
        },
        py::arg("x"), py::arg("edges"),
        R"pbdoc(Bin codes ``#{j : edges[j] <= v}`` of ``x`` (``searchsorted(edges, v, right=True)``).

Parameters
----------
x : ndarray, shape (n,) or (n, d)
    Samples, compared in float64.
edges : ndarray, float64, shape (bins-1,) or (d, bins-1)
    Sorted edges for all elements, or one row per column of ``x``; ``bins <= 256``.

Returns
-------
ndarray, uint8, shape (n, d)
    Codes in ``0..bins-1``.
)pbdoc");

    m.def(
        "joint_counts",
        [](const py::array& cx, const py::array& cy, int bins, bool per_dim) {
          using Codes = py::array_t<std::uint8_t, py::array::c_style>;
          const std::string ux = py::str(cx.dtype()), uy = py::str(cy.dtype());
          if (ux != "uint8" || uy != "uint8")
            throw std::invalid_argument("codes must be uint8 arrays, got " + ux + " and " + uy);
          const Codes ax = Codes::ensure(cx), ay = Codes::ensure(cy);
          if (!ax || !ay) throw py::error_already_set();
          if (ax.ndim() != 2 || ay.ndim() != 2 || ax.shape(0) != ay.shape(0) || ax.shape(1) != ay.shape(1)) {
            throw std::invalid_argument("codes cx and cy must both have shape (n, d)");
          }
          mi::check_bins(bins);
          const std::size_t n = static_cast<std::size_t>(ax.shape(0)), d = static_cast<std::size_t>(ax.shape(1));
          const py::ssize_t b = bins;
          py::array_t<std::int64_t> out = per_dim ? py::array_t<std::int64_t>({static_cast<py::ssize_t>(d), b, b})
                                                  : py::array_t<std::int64_t>({b, b});
          std::int64_t* o = out.mutable_data();
          {
            py::gil_scoped_release release;
            mi::joint_counts(ax.data(), ay.data(), n, d, bins, per_dim, o);
          }
          return out;
        },
        py::arg("cx"), py::arg("cy"), py::arg("bins"), py::arg("per_dim") = false,
        R"pbdoc(Joint histogram of paired bin codes.

Parameters
----------
cx, cy : ndarray, uint8, shape (n, d)
    Codes below ``bins``.
bins : int
    Bins per variable, 2..256.
per_dim : bool
    One table over all ``n*d`` pairs, or one per column.

Returns
-------
ndarray, int64, shape (bins, bins) or (d, bins, bins)
    ``counts[a, b]`` = number of pairs with ``cx == a`` and ``cy == b``. Each thread
    counts into its own tables, merged at the end; ValueError for a code ``>= bins``.
)pbdoc");

    m.def(
        "mi_from_counts",
        [](const py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>& counts, bool miller_madow) {
          if (counts.ndim() != 2 && counts.ndim() != 3)
            throw std::invalid_argument("counts must have shape (bx, by) or (d, bx, by), got " +
                                        std::to_string(counts.ndim()) + " dimensions");
          const std::size_t tables = counts.ndim() == 3 ? static_cast<std::size_t>(counts.shape(0)) : 1;
          const std::size_t bx = static_cast<std::size_t>(counts.shape(counts.ndim() - 2));
          const std::size_t by = static_cast<std::size_t>(counts.shape(counts.ndim() - 1));
          if (tables == 0) throw std::invalid_argument("counts holds no tables");
          double sum = 0.0;
          for (std::size_t t = 0; t < tables; ++t)
            sum += mi::mi_from_counts(counts.data() + t * bx * by, bx, by, miller_madow);
          return sum / static_cast<double>(tables);
        },
        py::arg("counts"), py::arg("miller_madow") = false,
        R"pbdoc(Plug-in MI in nats of joint counts, or the mean over a stack of tables.

``I = sum p_ab log(p_ab / (p_a p_b))`` with probabilities ``count / N``; Miller-Madow
adds ``(m_x + m_y - m_xy - 1) / (2 N)`` (``m``: occupied bins).

Parameters
----------
counts : ndarray, int64, shape (bx, by) or (d, bx, by)
miller_madow : bool

Returns
-------
float
    MI in nats (the mean over the ``d`` tables for a stack).
)pbdoc");

    m.def(
        "hist_mi",
        [as_pair, check_finite, check_same_shape, reduction_is_per_dim](
            const py::array& x, const py::array& y, int bins, const std::string& binning,
            const std::string& reduction, bool miller_madow) {
          const auto [mx, my] = as_pair(x, y);
          const bool per_dim = reduction_is_per_dim(reduction);
          check_same_shape(mx, my, per_dim);
          const mi::Binning b = mi::parse_binning(binning);
          mi::check_bins(bins);
          py::gil_scoped_release release;
          check_finite(mx, "x");
          check_finite(my, "y");
          return mx.f32 ? mi::hist_mi(mx.f(), my.f(), mx.n, mx.d, bins, b, per_dim, miller_madow)
                        : mi::hist_mi(mx.g(), my.g(), mx.n, mx.d, bins, b, per_dim, miller_madow);
        },
        py::arg("x"), py::arg("y"), py::kw_only(), py::arg("bins"), py::arg("binning") = "quantile",
        py::arg("reduction") = "pooled", py::arg("miller_madow") = false,
        R"pbdoc(Histogram (plug-in) MI in nats, edges to MI in one call; codes are never stored.

Parameters
----------
x, y : ndarray, shape (n,) or (n, d)
    Paired samples; float32 when both are float32 (or float16), else float64.
bins : int
    Bins per variable, 2..256.
binning : {"quantile", "uniform"}
    As in :func:`compute_edges`.
reduction : {"pooled", "per_dim"}
    ``pooled``: all ``n*d`` element pairs as one scalar pair; ``per_dim``: the mean over
    columns of the MI of column ``j`` of ``x`` with column ``j`` of ``y``.
miller_madow : bool
    Add the Miller-Madow bias correction.

Returns
-------
float
    MI in nats; 0 for a constant variable.
)pbdoc");

    m.def(
        "gaussian_mi",
        [as_pair, check_finite, check_same_shape, reduction_is_per_dim](const py::array& x, const py::array& y,
                                                                        const std::string& reduction) {
          const auto [mx, my] = as_pair(x, y);
          const bool per_dim = reduction_is_per_dim(reduction);
          check_same_shape(mx, my, per_dim);
          py::gil_scoped_release release;
          check_finite(mx, "x");
          check_finite(my, "y");
          return mx.f32 ? mi::gaussian_mi(mx.f(), my.f(), mx.n, mx.d, per_dim)
                        : mi::gaussian_mi(mx.g(), my.g(), mx.n, mx.d, per_dim);
        },
        py::arg("x"), py::arg("y"), py::kw_only(), py::arg("reduction") = "pooled",
        R"pbdoc(Gaussian MI ``-1/2 log(1 - rho^2)`` in nats from the Pearson correlation (float64).

Parameters
----------
x, y : ndarray, shape (n,) or (n, d)
reduction : {"pooled", "per_dim"}
    ``pooled``: one correlation over all ``n*d`` element pairs; ``per_dim``: the mean of
    the per-column values.

Returns
-------
float
    MI in nats; 0 for a constant variable; ``rho^2`` is capped at ``1 - 1e-12``.
)pbdoc");

    auto as_points = [as_matrix, check_finite](const py::array& a, const char* name) {
      Matrix m = as_matrix(a, name, true);
      check_finite(m, name);
      return m;
    };

    auto parse_metric = [](const std::string& metric) {
      if (metric == "chebyshev") return mi::Metric::kChebyshev;
      if (metric == "euclidean") return mi::Metric::kEuclidean;
      throw std::invalid_argument("metric must be 'chebyshev' or 'euclidean', got '" + metric + "'");
    };

    m.def(
        "ksg_points",
        [as_points, parse_metric](const py::array& x, const py::array& y, int k, const std::string& metric) {
          const Matrix mx = as_points(x, "x"), my = as_points(y, "y");
          if (mx.n != my.n)
            throw std::invalid_argument("x and y must pair up point for point: " + std::to_string(mx.n) + " and " +
                                        std::to_string(my.n) + " points");
          const mi::Metric norm = parse_metric(metric);
          py::gil_scoped_release release;
          return mi::ksg_points(mx.g(), my.g(), mx.n, mx.d, my.d, k, norm);
        },
        py::arg("x"), py::arg("y"), py::arg("k") = 3, py::arg("metric") = "chebyshev",
        R"pbdoc(KSG estimator 1 in nats on prepared point sets, not clipped at 0.

``I = psi(k) + psi(m) - mean_i [psi(n_x(i) + 1) + psi(n_y(i) + 1)]`` where ``eps_i`` is
the distance from point ``i`` to its ``k``-th neighbour in the joint space (the larger of
its distances in x and in y) and ``n_x(i)`` counts the points ``j != i`` with
``||x_i - x_j|| < eps_i`` (strictly).

Parameters
----------
x : ndarray, float64, shape (m,) or (m, dx)
y : ndarray, float64, shape (m,) or (m, dy)
    Paired points (standardised and jittered by the caller).
k : int
    Neighbours, ``1 <= k < m``.
metric : {"chebyshev", "euclidean"}
    The norm within x and within y: the max-norm, or the Euclidean norm, compared squared
    (sums of squares added in coordinate order, against the k-th neighbour's larger sum).
    With one column in each space the two are the same distance (the max-norm's).

Returns
-------
float
    The raw estimate in nats. Scalar pairs take an O(m log m) path (sorted marginals,
    binary search; joint neighbours by an outward scan in ``x`` order); other dimensions
    exact searches in a k-d tree (for the max-norm up to 128 coordinates in a space, beyond
    that in points sorted by their first coordinate), with the same eps and counts as a
    brute-force scan.
)pbdoc");

    m.def(
        "ksg_per_dim",
        [as_points](const py::array& x, const py::array& y, int k) {
          const Matrix mx = as_points(x, "x"), my = as_points(y, "y");
          if (mx.n != my.n || mx.d != my.d)
            throw std::invalid_argument("x and y must have the same shape (m, d): got (" + std::to_string(mx.n) +
                                        ", " + std::to_string(mx.d) + ") and (" + std::to_string(my.n) + ", " +
                                        std::to_string(my.d) + ")");
          py::gil_scoped_release release;
          return mi::ksg_per_dim(mx.g(), my.g(), mx.n, mx.d, k);
        },
        py::arg("x"), py::arg("y"), py::arg("k") = 3,
        R"pbdoc(Mean over columns ``j`` of the scalar KSG of ``x[:, j]`` with ``y[:, j]``, in nats.

Parameters
----------
x, y : ndarray, float64, shape (m, d)
k : int

Returns
-------
float
    The mean of the raw per-column estimates (not clipped). Parallel over columns.
)pbdoc");
  }

  // --- select: selectors (csrc/select) ---
  {
    namespace sel = miprun::select;
    using Array = py::array_t<double, py::array::c_style | py::array::forcecast>;
    // The table must stay alive (it is an argument of the call) while the view is used.
    auto table_view = [](const Array& t) {
      if (t.ndim() != 2 || t.shape(0) < 1 || t.shape(1) < 1) {
        throw std::invalid_argument("scores must be a 2-D array (num_blocks, max_run), got " +
                                    std::to_string(t.ndim()) + " dimensions");
      }
      return sel::TableView{t.data(), static_cast<int>(t.shape(0)), static_cast<int>(t.shape(1))};
    };

    py::class_<sel::FbsCandidate>(m, "FbsCandidate", "A run scored in step 5 of Fast-Block-Select.")
        .def_readonly("start", &sel::FbsCandidate::start)
        .def_readonly("estimated", &sel::FbsCandidate::estimated, "sum of its blocks' single scores")
        .def_readonly("actual", &sel::FbsCandidate::actual, "the run's own score");
    py::class_<sel::FbsGroup>(m, "FbsGroup", "One group of contiguous blocks of P in one iteration.")
        .def_readonly("start", &sel::FbsGroup::start)
        .def_readonly("length", &sel::FbsGroup::length)
        .def_readonly("listed", &sel::FbsGroup::listed, "S: runs of this length within the pool")
        .def_readonly("k", &sel::FbsGroup::k, "K = min(ceil(log L) + 5, S)")
        .def_readonly("candidates", &sel::FbsGroup::candidates)
        .def_readonly("chosen_start", &sel::FbsGroup::chosen_start);
    py::class_<sel::FbsIteration>(m, "FbsIteration", "One pass of steps 3-6 of Fast-Block-Select.")
        .def_readonly("pruning_set", &sel::FbsIteration::pruning_set)
        .def_readonly("groups", &sel::FbsIteration::groups)
        .def_readonly("current_sum", &sel::FbsIteration::current_sum)
        .def_readonly("chosen_sum", &sel::FbsIteration::chosen_sum)
        .def_readonly("new_pruning_set", &sel::FbsIteration::new_pruning_set);
    py::class_<sel::FbsResult>(m, "FbsResult", "The plan of Fast-Block-Select and how it was found.")
        .def_readonly("removed", &sel::FbsResult::removed)
        .def_readonly("evaluations", &sel::FbsResult::evaluations,
                      "distinct run scores of length >= 2 computed (step 5)")
        .def_readonly("single_evaluations", &sel::FbsResult::single_evaluations,
                      "single-block scores read (step 1)")
        .def_readonly("iterations", &sel::FbsResult::iterations)
        .def_readonly("converged", &sel::FbsResult::converged)
        .def_readonly("trace", &sel::FbsResult::trace);

    m.def(
        "fast_block_select",
        [table_view](const Array& scores, int num_remove, double log_base, bool allow_touching,
                     int max_iterations) {
          const sel::TableView view = table_view(scores);
          py::gil_scoped_release release;
          return sel::fast_block_select_table(view, num_remove,
                                              {log_base, allow_touching, max_iterations});
        },
        py::arg("scores"), py::arg("num_remove"), py::kw_only(),
        py::arg("log_base") = 2.718281828459045, py::arg("allow_touching") = true,
        py::arg("max_iterations") = 100,
        R"pbdoc(Fast-Block-Select (MI-PRUN section 3.3) on a score table.

Parameters
----------
scores : ndarray, shape (num_blocks, max_run), float64
    Oriented run scores (higher: more removable); ``scores[s, L-1]`` scores blocks
    ``s..s+L-1``. Entries outside the model are NaN and never read.
num_remove : int
    Number of blocks to remove, ``1 <= num_remove < num_blocks``.
log_base : float
    Base of the logarithm in ``K = min(ceil(log L) + 5, S)`` (the paper does not say; e).
allow_touching : bool
    Whether two chosen runs may be adjacent (default: yes, the paper's reading, as its
    Figure 3 shows; adjacent runs merge into one group at the next pass).
max_iterations : int
    Passes of steps 3-6 at most; ``converged`` is False when it is reached.

Returns
-------
FbsResult
    ``removed``, ``evaluations`` (runs of length >= 2 scored), ``single_evaluations``,
    ``iterations``, ``converged`` and the per-iteration ``trace``. Ties in every ranking
    go to the lower index; the group's own run is always a candidate, so keeping the
    current plan is always possible. Runs without the GIL.
)pbdoc");

    m.def(
        "fast_block_select_callback",
        [](int num_blocks, const std::function<double(int, int)>& score, int num_remove,
           double log_base, bool allow_touching, int max_iterations) {
          return sel::fast_block_select_callback(num_blocks, score, num_remove,
                                                 {log_base, allow_touching, max_iterations});
        },
        py::arg("num_blocks"), py::arg("score"), py::arg("num_remove"), py::kw_only(),
        py::arg("log_base") = 2.718281828459045, py::arg("allow_touching") = true,
        py::arg("max_iterations") = 100,
        R"pbdoc(Fast-Block-Select with run scores computed on demand.

``score(start, length) -> float`` returns the oriented score of blocks
``start..start+length-1``; it is called at most once per run (results are cached), so
``single_evaluations + evaluations`` is the number of calls. Holds the GIL. Other
arguments and the result as in :func:`fast_block_select`.
)pbdoc");

    m.def(
        "optimal",
        [table_view](const Array& scores, int num_remove) {
          const sel::TableView view = table_view(scores);
          py::gil_scoped_release release;
          const sel::OptimalResult r = sel::optimal(view, num_remove);
          return std::make_pair(r.removed, r.damage);
        },
        py::arg("scores"), py::arg("num_remove"),
        R"pbdoc(The exact minimum of the additive damage, by dynamic programming.

Removes ``num_remove`` blocks as runs separated by kept blocks, runs of length
``<= max_run``, minimising the sum over runs of ``1 - scores[s, L-1]`` (scores
normalised to [0, 1]). O(num_blocks * num_remove * max_run).

Returns
-------
(removed, damage) : (list[int], float)
)pbdoc");

    m.def(
        "optimal_kbest",
        [table_view](const Array& scores, int num_remove, int k) {
          const sel::TableView view = table_view(scores);
          std::vector<sel::OptimalResult> plans;
          {
            py::gil_scoped_release release;
            plans = sel::optimal_kbest(view, num_remove, k);
          }
          std::vector<std::pair<std::vector<int>, double>> out;
          for (const auto& p : plans) out.emplace_back(p.removed, p.damage);
          return out;
        },
        py::arg("scores"), py::arg("num_remove"), py::arg("k"),
        R"pbdoc(The ``k`` best plans of :func:`optimal`'s objective, exactly, best first.

The dynamic programme of :func:`optimal` keeping the ``k`` least-damage partial plans in
every state instead of one. Every plan (``num_remove`` blocks as runs of length
``<= max_run`` separated by kept blocks) has one path through the states, so no plan
appears twice. Ties keep :func:`optimal`'s order: the first plan is its plan.
O(num_blocks * num_remove * max_run * k log k).

Parameters
----------
scores : ndarray, shape (num_blocks, max_run), float64
    Normalised run scores in [0, 1]; damage of a run is ``1 - scores[s, L-1]``.
num_remove : int
k : int
    How many plans, ``>= 1``; fewer come back when fewer plans are feasible.

Returns
-------
list of (removed, damage) : list[tuple[list[int], float]]
    Sorted by damage, ascending. Raises ValueError when no plan is feasible.
)pbdoc");

    m.def(
        "exhaustive",
        [table_view](const Array& scores, int num_remove, double max_subsets) {
          const sel::TableView view = table_view(scores);
          py::gil_scoped_release release;
          const sel::ExhaustiveResult r = sel::exhaustive(view, num_remove, max_subsets);
          return std::make_tuple(r.removed, r.damage, r.subsets);
        },
        py::arg("scores"), py::arg("num_remove"), py::kw_only(), py::arg("max_subsets") = 5e7,
        R"pbdoc(Every ``num_remove``-subset of the blocks, scored by the damage of :func:`optimal`.

A subset whose maximal run is longer than ``max_run`` is infeasible. Raises ValueError
when ``C(num_blocks, num_remove) > max_subsets``.

Returns
-------
(removed, damage, subsets) : (list[int], float, float)
)pbdoc");

    m.def(
        "greedy",
        [](const py::array_t<double, py::array::c_style | py::array::forcecast>& single,
           int num_remove) {
          if (single.ndim() != 1) {
            throw std::invalid_argument("single must be 1-D (num_blocks,), got " +
                                        std::to_string(single.ndim()) + " dimensions");
          }
          std::vector<double> v(single.data(), single.data() + single.shape(0));
          return sel::greedy(v, num_remove);
        },
        py::arg("single"), py::arg("num_remove"),
        R"pbdoc(The ``num_remove`` blocks with the highest single-block scores, sorted.

Ties go to the lower index (the paper's ablation without the data processing inequality).
)pbdoc");
  }
}
