"""The wheel carries every subpackage and every config: a plain `pip install .` must find them all."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def declared_packages() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^packages = \[(.*?)\]", text, re.S | re.M).group(1)
    return set(re.findall(r'"([\w.]+)"', block))


def test_every_subpackage_is_declared_in_pyproject():
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "deeprec").rglob("__init__.py")}
    assert found - declared_packages() == set(), "add these to [tool.setuptools] packages"
    assert "deeprec.conf" in declared_packages()


def test_every_config_group_is_shipped_by_the_package_data_glob():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"deeprec.conf" = \["\*\.yaml", "\*\*/\*\.yaml"\]', text)
    assert (ROOT / "conf" / "__init__.py").exists()  # deeprec.conf is a package, found by importlib.resources
