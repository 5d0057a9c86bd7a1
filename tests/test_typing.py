"""Type checkers read miprun's annotations: the package ships py.typed (PEP 561), and a client
of the public API passes ``mypy --strict`` while wrong calls are refused.

mypy runs in-process with the settings of pyproject.toml ``[tool.mypy]`` on the files in
tests/typed_api/, finding miprun the way any tool does: as the installed package. Its cache
lives in the system's temporary folder, so a repeated run takes about a second.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

import miprun

REPO = Path(__file__).resolve().parents[1]
api = pytest.importorskip("mypy.api", reason="mypy is not installed (it is in the test extra)")


def _mypy(path: Path) -> tuple[str, int]:
    cache = Path(tempfile.gettempdir()) / f"miprun-mypy-cache-{miprun.__version__}"
    out, err, status = api.run(["--config-file", str(REPO / "pyproject.toml"), "--cache-dir", str(cache),
                                "--no-error-summary", "--hide-error-context", str(path)])
    return out + err, status


def test_the_installed_package_carries_py_typed():
    assert (Path(miprun.__file__).parent / "py.typed").is_file()


def test_a_client_of_the_public_api_passes_strict_mypy():
    out, status = _mypy(REPO / "tests" / "typed_api" / "client.py")
    assert status == 0, out
    assert "error" not in out, out


def test_wrong_calls_are_refused():
    """Without the marker, or with loose annotations, these would be Any and pass unnoticed."""
    out, status = _mypy(REPO / "tests" / "typed_api" / "wrong_client.py")
    assert status == 1, out
    errors = re.findall(r"wrong_client\.py:(\d+): error: (.*)", out)
    assert [int(line) for line, _ in errors] == [14, 15, 16, 17, 18], out
    assert 'Argument "k" to "mutual_information" has incompatible type "str"; expected "int"' in errors[0][1]
    assert '"bias_correction"' in errors[1][1]
    assert 'expression has type "float", variable has type "str"' in errors[2][1]
    assert '"int" has no attribute "upper"' in errors[3][1]
    assert 'Argument "metric" to "mutual_information" has incompatible type "int"; expected "str | None"' in errors[4][1]
