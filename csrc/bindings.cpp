// The Python bindings of miprun's native core: one m.def per entry point.
// Docstrings live here, once; the implementations are torch-free C++ in mi/ and select/.
#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>
#include <pybind11/functional.h>

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "miprun native core: CPU mutual-information estimators and block selectors";
#ifdef MIPRUN_OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
  // --- mi: estimators (csrc/mi) ---

  // --- select: selectors (csrc/select) ---
}
