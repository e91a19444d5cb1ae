"""Every command in README.md and docs/*.md is checked, so the documentation cannot drift from the code.

The command lines of the fenced ``bash`` / ``sh`` / ``console`` blocks are extracted (``\\`` continuations
joined, comments dropped, ``&&`` / ``;`` / ``|`` chains split), and so are the commands written inline in the
prose and tables (`` `python finetune.py model=hiera_l ...` ``); each is checked by what it runs:

* ``python train.py|finetune.py|eval.py [-m] OVERRIDES``: composed for real with ``compose_config`` (every
  value of a ``-m`` sweep ``KEY=a,b,c``), resolved, and given the entry points' checks that need no file;
  a ``pretrained=`` / ``resume=`` placeholder (``PATH``, ``MAE_CKPT``, ...) becomes a real temporary file;
* ``torchrun ... train.py ...``, ``srun ... python ...``, ``sbatch --wrap ...``, ``docker run IMAGE CMD``:
  the command inside, checked the same way; ``docker build``: its ``--build-arg``s are ``ARG``s of the Dockerfile;
* ``python SCRIPT.py ...`` (``analyze.py``, ``demo.py``, ``bench/*.py``) and ``python -m abswin.convert ...``:
  the file exists, ``--help`` exits 0 and names every ``--option`` the line uses;
* ``make TARGET``: the Makefile has the target; ``pip install`` / ``python -m pytest``: the extras / paths exist.

A command of any other kind fails, so a new kind of command must come with a check here. ``python`` blocks
must compile; a block of any other language fails. Also: README.md has at most 250 lines, and every relative
link of README.md and docs/*.md (anchors included) points at something that exists.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250

SHELL = {"bash", "sh", "shell", "console"}
ENTRY_POINTS = {"train.py": "train", "finetune.py": "finetune", "eval.py": "eval", "linprobe.py": "linprobe"}
PYTHONS = {"python", "python3", ".venv/bin/python"}
CONTROL = {"&&", "||", ";", "|"}
# settings a documented command may use before the config that defines them has landed: KEY -> what is
# missing. A composition error for any other key fails.
PENDING: dict[str, str] = {}


# ------------------------------------------------------------------------------------------ extraction
def code_blocks(path: Path):
    """``(language, first line number, lines)`` of every fenced block of a Markdown file."""
    lang, start, lines = None, 0, []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fence = re.match(r"\s*```\s*(\S*)", line)
        if fence and lang is None:
            lang, start, lines = fence.group(1).lower(), number + 1, []
        elif fence:
            yield lang, start, lines
            lang = None
        elif lang is not None:
            lines.append((number, line))
    assert lang is None, f"{path.name}: a code block opened at line {start - 1} is never closed"


def shell_commands(lines):
    """``(line number, argv)`` per command of a shell block."""
    joined, first = "", None
    for number, line in lines:
        first = first or number
        text = re.sub(r"^\s*\$ ", "", line) if not joined else line
        if text.rstrip().endswith("\\"):
            joined += text.rstrip()[:-1] + " "
            continue
        joined += text
        lexer = shlex.shlex(joined, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split, lexer.commenters = True, "#"
        tokens = list(lexer)
        for is_control, group in itertools.groupby(tokens, lambda t: t in CONTROL):
            if not is_control:
                yield first, list(group)
        joined, first = "", None


INLINE_COMMAND = re.compile(r"(?:python|make|torchrun|srun|sbatch|docker|pip)\s.*")


def inline_commands(path: Path):
    """``(line number, argv)`` of every command written inline in the prose (`python train.py model=hiera_l`),
    tables included; a bare name (`make`) or an elided one (`python train.py ...`) is prose, not a command."""
    in_code = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if re.match(r"\s*```", line):
            in_code = not in_code
        elif not in_code:
            for span in re.findall(r"`([^`]+)`", line):
                if INLINE_COMMAND.fullmatch(span) and "..." not in span:
                    yield number, shlex.split(span)


def all_commands():
    for path in DOCS:
        found = [c for lang, _, lines in code_blocks(path) if lang in SHELL for c in shell_commands(lines)]
        for number, argv in sorted([*found, *inline_commands(path)]):
            yield pytest.param(argv, id=f"{path.relative_to(ROOT)}:{number}: {' '.join(argv)}"[:150])


def all_blocks():
    for path in DOCS:
        for lang, start, lines in code_blocks(path):
            yield pytest.param(path, lang, start, lines, id=f"{path.relative_to(ROOT)}:{start}")


# ------------------------------------------------------------------------------------------ checks
def run_help(argv: tuple[str, ...]) -> tuple[int, str]:
    """``(exit status, stdout + stderr)`` of ``python ARGV --help`` run from the repository root."""
    r = subprocess.run([sys.executable, *argv, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=180,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return r.returncode, r.stdout + r.stderr


# ``python SCRIPT --help`` for many scripts in one subprocess that imports torch and Lightning once: each script
# runs in a fork of it, with the sys.path Python gives that script (its folder, or the cwd for -m) and none of
# this repository's modules imported, so a script that cannot import what it needs fails as it would alone.
HELP_RUNNER = r"""
import json, os, runpy, sys, tempfile, traceback
sys.path = [p for p in sys.path if p not in ("", os.getcwd())]
import torch, numpy
try:
    import lightning.pytorch, torchvision
except ImportError:
    pass
base, children, results = list(sys.path), {}, {}
for target in json.loads(sys.argv[1]):
    out = tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        code = 0
        try:
            if target[0] == "-m":
                sys.argv, sys.path = [target[1], "--help"], [os.getcwd(), *base]
                runpy.run_module(target[1], run_name="__main__", alter_sys=True)
            else:
                path = os.path.abspath(target[0])
                sys.argv, sys.path = [path, "--help"], [os.path.dirname(path), *base]
                runpy.run_path(path, run_name="__main__")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    children[pid] = (target, out)
while children:
    pid, status = os.wait()
    target, out = children.pop(pid)
    out.seek(0)
    results[" ".join(target)] = [os.waitstatus_to_exitcode(status), out.read().decode(errors="replace")]
print(json.dumps(results))
"""
HELP: dict[str, tuple[int, str]] = {}  # "bench/x.py" or "-m abswin.convert" -> (exit status, output)
RUNNER: list[subprocess.Popen] = []


def help_text(argv: tuple[str, ...]) -> tuple[int, str]:
    if RUNNER and RUNNER[0].returncode is None:
        out, err = RUNNER[0].communicate(timeout=300)
        assert RUNNER[0].returncode == 0, f"the --help runner failed:\n{err[-3000:]}"
        HELP.update({k: tuple(v) for k, v in json.loads(out).items()})
    key = " ".join(argv)
    if key not in HELP:
        HELP[key] = run_help(argv)
    return HELP[key]


def help_scripts() -> list[tuple[str, ...]]:
    """Every ``python SCRIPT.py`` / ``python -m MODULE`` the documents check with ``--help``."""
    found = set()
    for param in all_commands():
        argv = strip_env(param.values[0])
        argv = argv[argv.index("python"):] if argv[0] == "srun" and "python" in argv else argv
        if argv and argv[0] in PYTHONS and len(argv) > 1:
            if argv[1] == "-m" and len(argv) > 2 and argv[2] not in ("pytest", "pip"):
                found.add(("-m", argv[2]))
            elif argv[1].endswith(".py") and argv[1] not in ENTRY_POINTS and (ROOT / argv[1]).is_file():
                found.add((argv[1],))
    return sorted(found)


@pytest.fixture(scope="module", autouse=True)
def start_help():
    """Start the ``--help`` runs at once: they run while the configs are composed."""
    RUNNER.append(subprocess.Popen([sys.executable, "-c", HELP_RUNNER, json.dumps(help_scripts())], cwd=ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, "PYTHONWARNINGS": "ignore"}))
    yield
    if RUNNER[0].returncode is None:
        RUNNER[0].kill()
        RUNNER[0].communicate()
    RUNNER.clear()
    if placeholder_file.cache_info().currsize:
        shutil.rmtree(Path(placeholder_file()).parent, ignore_errors=True)
        placeholder_file.cache_clear()


def check_help(argv: list[str], module: str | None = None) -> None:
    script = (("-m", module) if module else (argv[0],))
    if not module:
        assert (ROOT / argv[0]).is_file(), f"{argv[0]} does not exist"
    status, text = help_text(script)
    assert status == 0, f"{' '.join(script)} --help exits {status}:\n{text[-2000:]}"
    for token in argv[1:]:
        if token.startswith("--"):
            option = token.split("=", 1)[0]
            assert re.search(rf"{re.escape(option)}\b", text), f"{' '.join(script)} has no option {option}"


def compose_module():
    try:
        from training import config
    except ImportError:
        config = None
    if config is None or not hasattr(config, "compose_config"):
        from training import launch as config
    return config


@cache
def published_names() -> frozenset[str]:
    import abswin

    return frozenset(abswin.list_pretrained())


def split_sweep(value: str) -> list[str]:
    """``224,256`` -> ``['224', '256']``; ``[14,14],[3,3]`` -> two lists (commas inside brackets stay)."""
    parts, depth, current = [], 0, ""
    for char in value:
        depth += char in "[({"
        depth -= char in "])}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


@cache
def placeholder_file() -> str:
    """The real (empty) file that stands for ``pretrained=PATH`` and the like."""
    path = Path(tempfile.mkdtemp(prefix="test_docs_")) / "checkpoint.ckpt"
    path.write_bytes(b"")
    return str(path)


def check_compose(script: str, args: list[str]) -> None:
    """Compose ``script``'s config for ``args`` as Hydra would (each point of a ``-m`` sweep)."""
    multirun = bool({"-m", "--multirun"} & set(args))
    choices = []
    for arg in args:
        if arg in ("-m", "--multirun"):
            continue
        assert "=" in arg or arg.startswith("~"), f"{arg!r} is not a Hydra override (key=value)"
        key, is_value, value = arg.partition("=")
        if not is_value:  # ~key: drop a setting
            choices.append([arg])
            continue
        values = split_sweep(value) if multirun else [value]
        if key.lstrip("+") in ("pretrained", "resume"):
            values = [v if v in published_names() or v in ("true", "false", "auto", "null") else placeholder_file()
                      for v in values]
        choices.append([f"{key}={v}" for v in values])
    for overrides in itertools.product(*choices):
        compose_and_check(ENTRY_POINTS[script], overrides)


@cache
def compose_and_check(config_name: str, overrides: tuple[str, ...]) -> None:
    """One composition (README and docs repeat commands: each is composed once)."""
    from omegaconf import OmegaConf

    config = compose_module()
    try:
        cfg = config.compose_config(config_name, list(overrides))
    except Exception as e:
        missing = re.search(r"Could not override '([^']+)'|Key '([^']+)' is not in struct", str(e))
        key = missing and next(k for k in missing.groups() if k)
        if key in PENDING:
            pytest.xfail(f"{key}: {PENDING[key]}")
        raise AssertionError(f"{config_name}: {' '.join(overrides)}: {e}") from None
    cfg.paths.run_dir = str(Path(placeholder_file()).parent / "run")
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation and resolver (the model's name)
    if hasattr(config, "check_config"):
        config.check_config(cfg)  # what the entry point checks before it touches a file


def strip_env(argv: list[str]) -> list[str]:
    """``VAR=value ... cmd`` -> ``cmd``."""
    while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):
        argv = argv[1:]
    return argv


@cache
def makefile_targets() -> frozenset[str]:
    text = (ROOT / "Makefile").read_text()
    return frozenset(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M))


def dockerfile_args() -> set[str]:
    return set(re.findall(r"^ARG\s+(\w+)", (ROOT / "Dockerfile").read_text(), re.M))


DOCKER_RUN_VALUE_OPTIONS = {"-e", "--env", "-v", "--volume", "--ulimit", "--name", "-w", "--workdir", "--device",
                            "--cap-add", "--network", "--shm-size", "--gpus", "--ipc", "--entrypoint", "-p"}


def check_python(argv: list[str]) -> None:
    args = argv[1:]
    assert args, "python without a script"
    if args[0] == "-m":
        module, rest = args[1], args[2:]
        if module == "pytest":
            for arg in rest:
                if not arg.startswith("-") and "=" not in arg:
                    assert (ROOT / arg.split("::")[0]).exists(), f"{arg} does not exist"
        elif module == "pip":
            check_pip(["pip", *rest])
        else:
            assert module.startswith(("abswin", "datamodules")), f"python -m {module}: no check for this module"
            check_help(rest, module=module)
    elif args[0] == "-c":
        compile(args[1], "<python -c>", "exec")
    elif args[0] in ENTRY_POINTS:
        check_compose(args[0], args[1:])
    elif args[0].endswith(".py"):
        check_help(args, None)
    else:
        raise AssertionError(f"python {args[0]}: no check for this")


def check_pip(argv: list[str]) -> None:
    assert argv[1] == "install", f"pip {argv[1]}: no check for this"
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    args = iter(argv[2:])
    for arg in args:
        if arg in ("-c", "--constraint", "-r"):
            assert (ROOT / next(args)).is_file()
        elif arg.startswith("-"):
            continue
        else:
            match = re.fullmatch(r"\.(?:\[([\w,]+)\])?", arg)
            assert match, f"pip install {arg}: only this project (. or .[extras]) is documented"
            assert set(filter(None, (match.group(1) or "").split(","))) <= extras, f"unknown extra in {arg}"


def check_command(argv: list[str]) -> None:
    argv = strip_env(argv)
    head = argv[0]
    if head == "export":
        assert all(re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", a) for a in argv[1:]), argv
    elif head == "make":
        for arg in argv[1:]:
            if "=" in arg:
                assert re.search(rf"^{re.escape(arg.split('=')[0])}\s*[?:]?=", (ROOT / "Makefile").read_text(), re.M)
            else:
                assert arg in makefile_targets(), f"the Makefile has no target {arg!r}"
    elif head in PYTHONS:
        check_python(argv)
    elif head in ("pip", "pip3"):
        check_pip(argv)
    elif head == "torchrun":
        script = next((i for i, a in enumerate(argv) if a.endswith(".py")), None)
        assert script is not None, "torchrun without a script"
        check_python(["python", *argv[script:]])
    elif head == "srun":
        inner = next((i for i, a in enumerate(argv) if a in PYTHONS), None)
        assert inner is not None, "srun without a python command"
        check_command(argv[inner:])
    elif head == "sbatch":
        wrap = next((a.split("=", 1)[1] if "=" in a else argv[i + 1] for i, a in enumerate(argv)
                     if a.split("=")[0] == "--wrap"), None)
        assert wrap, "sbatch without --wrap: put the job script in its own block"
        for _, inner in shell_commands([(0, wrap)]):
            check_command(inner)
    elif head == "docker":
        check_docker(argv)
    else:
        raise AssertionError(f"no check for the command {head!r}: add one to tests/test_docs.py")


def check_docker(argv: list[str]) -> None:
    if argv[1] == "build":
        args = iter(argv[2:])
        for arg in args:
            if arg == "--build-arg":
                name = next(args).split("=")[0]
                assert name in dockerfile_args(), f"the Dockerfile has no ARG {name}"
            elif arg in ("-t", "--tag"):
                next(args)
            elif not arg.startswith("-"):
                assert (ROOT / arg).is_dir() and (ROOT / arg / "Dockerfile").is_file(), arg
    elif argv[1] == "run":
        i = 2
        while i < len(argv) and argv[i].startswith("-"):
            i += 1 + (argv[i] in DOCKER_RUN_VALUE_OPTIONS)
        assert i < len(argv), "docker run without an image"
        if argv[i + 1:]:
            check_command(argv[i + 1:])
    else:
        raise AssertionError(f"docker {argv[1]}: no check for this")


# ------------------------------------------------------------------------------------------ the tests
@pytest.mark.parametrize("argv", list(all_commands()))
def test_documented_command(argv):
    check_command(argv)


@pytest.mark.parametrize("path, lang, start, lines", list(all_blocks()))
def test_code_block_is_checked(path, lang, start, lines):
    """Shell blocks are checked command by command (above); Python blocks must compile; nothing else."""
    if lang == "python":
        compile("\n".join(line for _, line in lines), f"{path.name}:{start}", "exec")
    else:
        assert lang in SHELL, f"{path.name}:{start}: a ```{lang} block: use bash (commands) or python"


def test_there_are_commands_to_check():
    assert len(list(all_commands())) >= 20


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


SETTING = re.compile(r"[+~]?((?:model|data|module|trainer|callbacks|logger|paths)(?:\.[a-z_0-9]+)+)(?:=\S*)?")
# the configs a setting named in the prose must exist in (at least one of them)
CONTEXTS = [("train", []), ("finetune", []), ("eval", ["pretrained=x"]),
            ("train", ["model=hiera_l", "data=k400", "trainer=multinode"]),
            ("finetune", ["model=hiera_l", "data=k400", "trainer=multinode", "pretrained=x"]),
            ("linprobe", ["pretrained=x"])]


def has_key(node, key: str) -> bool:
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_settings_named_in_the_prose_exist():
    """A setting written as `data.decoder=pyav` or `trainer.strategy.timeout_s` outside the code blocks is a
    key of the composed configs (so a renamed setting cannot linger in the documents)."""
    from omegaconf import OmegaConf

    configs = [OmegaConf.to_container(compose_module().compose_config(name, overrides))
               for name, overrides in CONTEXTS]
    missing = []
    for path in DOCS:
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        for span in re.findall(r"`([^`\n]+)`", text):
            for token in span.split():
                match = SETTING.fullmatch(token)
                if match and not any(has_key(c, match.group(1)) for c in configs):
                    missing.append(f"{path.relative_to(ROOT)}: {token}")
    assert not missing, "settings that no config has:\n" + "\n".join(sorted(set(missing)))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen, found, in_code = {}, set(), False
    for line in path.read_text().splitlines():
        in_code ^= bool(re.match(r"\s*```", line))
        heading = re.match(r"#{1,6}\s+(.*)", line) if not in_code else None
        if heading:
            base = slug(heading.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def test_readme_links_every_doc_and_every_link_resolves():
    readme = (ROOT / "README.md").read_text()
    linked = set(re.findall(r"\]\((docs/[\w-]+\.md)(?:#[\w-]*)?\)", readme))
    assert linked, "README.md links no docs/*.md"
    every_doc = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")}
    assert every_doc <= linked, f"docs not linked from README.md: {sorted(every_doc - linked)}"
    bad = []
    for path in DOCS:
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                bad.append(f"{path.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                bad.append(f"{path.name}: {target} (no such heading)")
    assert not bad, "\n".join(bad)
