"""The Dockerfile, checked by reading it: no Docker engine is needed (or available in CI)."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def pins(text: str) -> dict[str, str]:
    return dict(re.findall(r"\b(torch|torchvision)==([\w.+]+)", text))


def dockerfile() -> list[tuple[str, str]]:
    return instructions((ROOT / "Dockerfile").read_text())


def test_build_args_are_declared_after_from_and_used():
    steps = dockerfile()
    first_from = next(i for i, (word, _) in enumerate(steps) if word == "FROM")
    args = {rest.split("=")[0]: rest.partition("=")[2] for word, rest in steps[first_from:] if word == "ARG"}
    # an ARG only before FROM would be empty inside RUN
    assert args.get("TORCH_FLAVOUR") == "pypi"
    assert args.get("WITH_INFINIBAND") == "0"
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "https://download.pytorch.org/whl/${TORCH_FLAVOUR}" in runs
    assert '"$WITH_INFINIBAND" = "1"' in runs and "libibverbs1" in runs


def test_every_install_goes_through_the_constraints_file():
    """One home for exact versions: constraints.txt pins torch and torchvision; the Dockerfile and the
    Makefile install through it, and the library itself pins neither."""
    constraints = pins((ROOT / "constraints.txt").read_text())
    assert constraints == {"torch": "2.14.1", "torchvision": "0.29.1"}
    runs = [rest for word, rest in dockerfile() if word == "RUN" and "pip install" in rest]
    makefile = [line for line in (ROOT / "Makefile").read_text().splitlines() if "pip install" in line
                and ("torch" in line or "-e " in line)]
    for command in (*runs, *makefile):
        assert "-c constraints.txt" in command and not pins(command), command
    assert not pins((ROOT / "pyproject.toml").read_text())


def test_copied_files_exist():
    copies = [rest for word, rest in dockerfile() if word in ("COPY", "ADD")]
    assert copies
    for rest in copies:
        parts = [p for p in rest.split() if not p.startswith("--")]
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"Dockerfile copies {source!r}, which is not in the repository"


def test_dockerignore_keeps_copied_files_and_drops_the_venv():
    patterns = [line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    ignored = lambda path: any(fnmatch.fnmatch(path, p) for p in patterns)  # noqa: E731
    sources = [p for word, rest in dockerfile() if word == "COPY" for p in rest.split()[:-1] if p != "."]
    assert sources and not [s for s in sources if ignored(s)]
    assert ignored(".venv")  # COPY . . would otherwise put the local virtualenv into the image
