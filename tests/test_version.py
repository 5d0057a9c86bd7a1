"""One version: pyproject.toml's, seen by the package, its metadata and the native core; a core of another version is refused."""

from __future__ import annotations

import re
import sys
import types
from importlib import metadata
from pathlib import Path

import pytest
from support import REPO, requires_native

import miprun
from miprun import _native

try:
    import tomllib
except ImportError:  # Python 3.10: the first version line is [project]'s in this pyproject.toml
    PYPROJECT_VERSION = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
else:
    PYPROJECT_VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def test_package_version_is_pyprojects():
    assert miprun.__version__ == _native.package_version() == PYPROJECT_VERSION


def test_installed_metadata_agrees():
    try:
        dist = metadata.distribution("miprun")
    except metadata.PackageNotFoundError:
        pytest.skip("miprun is not installed (running from the source tree)")
    if not Path(miprun.__file__).resolve().is_relative_to(Path(dist.locate_file("")).resolve()):
        pytest.skip("the miprun imported is not the installed one")
    assert dist.version == miprun.__version__ == PYPROJECT_VERSION


@requires_native
def test_native_core_version_is_the_packages():
    from miprun import _core
    assert _core.__version__ == miprun.__version__ == PYPROJECT_VERSION
    assert _native.core() is _core


@pytest.fixture
def fake_core(monkeypatch):
    """Make miprun._native import the module this returns a setter for, with a clean cache."""
    monkeypatch.setattr(_native, "_core", None)
    monkeypatch.setattr(_native, "_error", None)
    fake = types.ModuleType("miprun._core")
    real_import = _native.importlib.import_module

    def import_module(name, *args):
        return fake if name == "miprun._core" else real_import(name, *args)

    monkeypatch.setattr(_native.importlib, "import_module", import_module)
    return fake


def test_core_of_another_version_is_refused(fake_core):
    fake_core.__version__ = "0.0.1"
    message = (f"miprun._core is version 0.0.1 but the package is {miprun.__version__}: rebuild it with "
               "`pip install .` (or scripts/build_inplace.sh)")
    with pytest.raises(ImportError) as info:
        _native.core()
    assert str(info.value) == message
    with pytest.raises(ImportError, match="is version 0.0.1"):  # remembered, refused again
        _native.core()
    assert not _native.native_available()


def test_core_without_a_version_is_refused(fake_core):
    with pytest.raises(ImportError, match=r"miprun._core is version unknown but the package is .*: rebuild it"):
        _native.core()


def test_core_of_the_same_version_is_used(fake_core):
    fake_core.__version__ = miprun.__version__
    assert _native.core() is fake_core and _native.native_available()


def test_core_that_does_not_import_gives_the_build_hint(monkeypatch):
    monkeypatch.setattr(_native, "_core", None)
    monkeypatch.setattr(_native, "_error", None)

    def import_module(name, *args):
        raise ImportError("undefined symbol: _ZN6miprun")

    monkeypatch.setattr(_native.importlib, "import_module", import_module)
    with pytest.raises(ImportError, match=r"scripts/build_inplace.sh.*undefined symbol: _ZN6miprun"):
        _native.core()


PYPROJECT = """\
[build-system]
requires = ["x"]

[project]
name = "miprun"
dependencies = [
    "numpy>=1.24",
]
version = "1.2.3rc1"

[tool.other]
version = "9.9.9"
"""


@pytest.mark.parametrize("tomllib_available", [True, False])
def test_pyproject_version_is_the_project_tables(monkeypatch, tomllib_available):
    if not tomllib_available:  # Python 3.10 has no tomllib
        monkeypatch.setitem(sys.modules, "tomllib", None)
    assert _native._pyproject_version(PYPROJECT) == "1.2.3rc1"
    assert _native._pyproject_version(PYPROJECT.replace('"miprun"', '"other"')) is None
    assert _native._pyproject_version(PYPROJECT.replace('version = "1.2.3rc1"\n', "")) is None
