"""The Dockerfile installs what the README and the Makefile install, on a CUDA PyTorch image."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).parents[1]
INSTALL = re.compile(r"pip install[^\n]*?-e\s+['\"]?\.(\[[\w,\s-]+\])?['\"]?")


def _pyproject() -> tuple[set[str], str]:
    """The optional-dependency groups and the readme of pyproject.toml (tomllib is 3.11+ only)."""
    text = (REPO / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    (readme,) = re.findall(r'^readme\s*=\s*"([^"]+)"', text, flags=re.M)
    return set(re.findall(r"^([\w-]+)\s*=", section, flags=re.M)), readme


def _extras(text: str, where: str) -> set[frozenset[str]]:
    found = {
        frozenset(e.strip() for e in (m.group(1) or "[]")[1:-1].split(",") if e.strip())
        for m in INSTALL.finditer(text)
    }
    assert found, f"{where}: no `pip install -e .[extras]` line"
    return found


def test_dockerfile_readme_and_makefile_install_the_same_extras():
    docker = _extras((REPO / "Dockerfile").read_text(), "Dockerfile")
    readme = _extras((REPO / "README.md").read_text(), "README.md")
    make = _extras((REPO / "Makefile").read_text(), "Makefile")
    assert docker == readme == make, f"Dockerfile {docker}, README {readme}, Makefile {make}"
    declared, _ = _pyproject()
    assert set().union(*docker) <= declared, "every installed extra exists in pyproject.toml"


def test_dockerfile_uses_a_cuda_pytorch_image_and_the_kdlab_entrypoint():
    text = (REPO / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert base.startswith("pytorch/pytorch:") and "cuda" in base, base
    assert re.search(r'^ENTRYPOINT \["kdlab"\]', text, flags=re.M)
    copied = " ".join(re.findall(r"^COPY\s+(.+)$", text, flags=re.M))
    for needed in ("pyproject.toml", _pyproject()[1], "kdlab", "experiments"):
        assert needed in copied, f"the image needs {needed} to install and run kdlab"
