"""The documentation cannot rot: its code runs, its command lines parse, and the API reference's
docstring check finds what it is meant to find.

* Every ```python block of ``docs/**/*.md`` runs, page by page: a page's blocks in document
  order, in one namespace and one fresh working directory, as a reader pastes them.
* A ```bash block marked ``<!-- docs-test: run -->`` on the line above runs too (each line a
  ``qpeft`` command, in the same directory, after the page's earlier blocks); every ``qpeft``
  command line of the other bash blocks is parsed by the CLI's own parser, and the training
  subcommands' flags are checked by ``TrainConfig``, so a renamed flag or a bad value fails here.
* A block that needs a real QPU account or a long run is marked
  ``<!-- docs-test: skip: REASON -->`` on the line above (kept rare, and listed by
  ``test_skipped_blocks_are_few``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from optional_sdks import missing_optional

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MARKER = re.compile(r"^<!-- docs-test: (run|skip: .+) -->$")
FENCE = re.compile(r"^```(\w+)?\s*$")
#: most blocks a page may skip, all pages together (a skipped block can rot)
MAX_SKIPPED = 3


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the first code line
    language: str
    code: str
    marker: str | None  # "run", "skip: REASON" or None


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, with the marker on the line above each."""
    found, lines = [], page.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None or opening.group(1) is None:
            i += 1
            continue
        above = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(above)
        if above.startswith("<!-- docs-test") and marker is None:
            raise ValueError(f"{page}:{i}: malformed marker {above!r}; use <!-- docs-test: run --> or skip: REASON")
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        code = "\n".join(lines[i + 1 : end]) + "\n"
        found.append(Block(page, i + 2, opening.group(1), code, marker.group(1) if marker else None))
        i = end + 1
    return found


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.parts)


def _id(page: Path) -> str:
    return page.relative_to(DOCS).as_posix()


def commands(code: str) -> list[list[str]]:
    """The command lines of a shell block (continuations joined, comments dropped)."""
    joined = code.replace("\\\n", " ")
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


def qpeft_argv(argv: list[str]) -> list[str] | None:
    """The qpeft CLI arguments of a command line (``qpeft ...`` or ``torchrun ... -m qpeft.cli ...``)."""
    if argv[0] == "qpeft":
        return argv[1:]
    if "-m" in argv and argv[argv.index("-m") + 1 : argv.index("-m") + 2] == ["qpeft.cli"]:
        return argv[argv.index("-m") + 2 :]
    return None


def _environment() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def _needs(code: str) -> None:
    """Skip a page whose code imports an optional package that is not installed."""
    for module in ("trl", "tensorboard", "peft", "qiskit", "datasets"):
        if re.search(rf"^\s*(from|import) {module}\b", code, flags=re.MULTILINE) and not importlib.util.find_spec(
            module
        ):
            pytest.skip(f"{module} is not installed")


RUNNABLE = [p for p in pages() if any(b.marker != "skip" and b.language == "python" for b in blocks(p))]


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE, ids=[_id(p) for p in RUNNABLE])
def test_page_code_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, value in _environment().items():
        if name != "PYTHONPATH":
            monkeypatch.setenv(name, value)
    todo = [b for b in blocks(page) if not (b.marker or "").startswith("skip")]
    _needs("".join(b.code for b in todo if b.language == "python"))
    namespace: dict = {"__name__": "__docs__"}
    for block in todo:
        if block.language == "python":
            # padded so that a traceback names the page and the line of the Markdown file
            try:
                exec(compile("\n" * (block.line - 1) + block.code, str(page), "exec"), namespace)
            except ImportError as err:  # qpeft's "needs X: pip install qpeft[...]" for an SDK not installed
                if (name := missing_optional(err)) is None:
                    raise
                pytest.skip(f"{_id(page)}:{block.line} needs {name}, which is not installed")
        elif block.language == "bash" and block.marker == "run":
            for argv in commands(block.code):
                args = qpeft_argv(argv)
                assert args is not None, f"{page}:{block.line}: only qpeft commands can be run, got {argv}"
                done = subprocess.run(
                    [sys.executable, "-m", "qpeft.cli", *args], capture_output=True, text=True, env=_environment()
                )
                assert done.returncode == 0, f"{page}:{block.line}: {shlex.join(argv)}\n{done.stdout}\n{done.stderr}"


def test_blocks_and_markers_are_read(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# A page\n\n```python\nx = 1\n```\n\n<!-- docs-test: skip: needs a QPU account -->\n"
        "```python\nsubmit()\n```\n<!-- docs-test: run -->\n\n```bash\nqpeft --help\n```\n"
    )
    found = [(b.line, b.language, b.code, b.marker) for b in blocks(page)]
    assert found == [
        (4, "python", "x = 1\n", None),
        (9, "python", "submit()\n", "skip: needs a QPU account"),
        (14, "bash", "qpeft --help\n", "run"),
    ]
    page.write_text("<!-- docs-test: skip -->\n```python\nx = 1\n```\n")
    with pytest.raises(ValueError, match="malformed marker"):
        blocks(page)
    assert commands("qpeft train \\\n  --steps 3  # three\nmake test\n") == [
        ["qpeft", "train", "--steps", "3"],
        ["make", "test"],
    ]
    assert qpeft_argv(["torchrun", "--nproc_per_node", "2", "-m", "qpeft.cli", "train"]) == ["train"]


def _parse(args: list[str]) -> str | None:
    """None when the CLI accepts ``args`` (and TrainConfig its training fields), else the error."""
    from qpeft.cli import build_parser, config_from_args

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parsed = build_parser().parse_args(args)
    except SystemExit as stop:
        if stop.code == 0:  # --version, --help: accepted, argparse exits after printing
            return None
        return err.getvalue().strip().splitlines()[-1]
    if parsed.command in ("train", "compare", "plan") and parsed.config is None:
        try:
            config_from_args(parsed)
        except ValueError as error:
            return str(error)
    return None


def test_every_documented_command_line_parses():
    lines = [
        (block, args)
        for page in pages()
        for block in blocks(page)
        if block.language == "bash"
        for argv in commands(block.code)
        if (args := qpeft_argv(argv)) is not None
    ]
    assert len(lines) > 20  # the guides are full of them; none found means the extraction broke
    bad = [
        f"{b.page.relative_to(ROOT)}:{b.line}: qpeft {shlex.join(a)}\n    {err}" for b, a in lines if (err := _parse(a))
    ]
    assert not bad, "command lines in the docs that qpeft rejects:\n" + "\n".join(bad)


def test_a_renamed_flag_is_caught():
    # the check above can fail: a flag the CLI does not have, and a value TrainConfig refuses
    assert "unrecognized arguments: --stepz" in _parse(["train", "--stepz", "3"])
    assert "`report_to`" in _parse(["train", "--report-to", "tensorbord"])
    assert _parse(["train", "--steps", "3", "--report-to", "tensorboard"]) is None
    assert _parse(["--version"]) is None and _parse(["--verzion"]) is not None


def test_skipped_blocks_are_few():
    skipped = [f"{b.page.relative_to(ROOT)}:{b.line} ({b.marker})" for p in pages() for b in blocks(p) if b.marker]
    skipped = [s for s in skipped if "(skip:" in s]
    assert len(skipped) <= MAX_SKIPPED, "too many doc blocks are not run:\n" + "\n".join(skipped)


def _hook():
    spec = importlib.util.spec_from_file_location("docstrings_hook", DOCS / "hooks" / "docstrings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docstring_check_finds_what_is_missing(tmp_path):
    pytest.importorskip("griffe")
    hook = _hook()
    package = tmp_path / "src" / "toy"
    (package / "_private").mkdir(parents=True)
    (package / "__init__.py").write_text('"""A toy package."""\nfrom toy.core import Thing\n__all__ = ["Thing"]\n')
    (package / "core.py").write_text(
        '"""Core."""\nimport torch\n\n'
        'def documented():\n    """Says what it does."""\n\n'
        "def bare():\n    pass\n\n"
        "def _private():\n    pass\n\n"
        'class Thing(torch.nn.Module):\n    """A thing."""\n\n'
        "    def forward(self, x):\n        return x\n\n"  # documented by torch.nn.Module.forward
        "    def method(self):\n        pass\n\n"
        '    @property\n    def size(self):\n        """Its size."""\n        return 1\n\n'
        "class Child(Thing):\n    def method(self):\n        pass\n"
    )
    (package / "undocumented.py").write_text("X = 1\n")
    (package / "_private" / "__init__.py").write_text("def hidden():\n    pass\n")
    missing, checked = hook.missing_docstrings("toy", tmp_path / "src")
    assert missing == [
        "toy.core.Child",
        "toy.core.Child.method",
        "toy.core.Thing.method",
        "toy.core.bare",
        "toy.undocumented",
    ]
    assert checked == 11  # 3 modules, documented, bare, Thing, forward, method, size, Child, Child.method

    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "toy.md").write_text("# toy\n\n::: toy\n\n::: toy.core\n")
    assert hook.unrendered_modules("toy", tmp_path / "src", tmp_path / "api") == ["toy.undocumented"]


def test_every_public_qpeft_module_is_on_an_api_page():
    pytest.importorskip("griffe")
    assert _hook().unrendered_modules() == []


def test_every_public_qpeft_name_has_a_docstring():
    pytest.importorskip("griffe")
    missing, checked = _hook().missing_docstrings()
    assert checked > 500 and missing == [], "public names without a docstring:\n" + "\n".join(missing)
