"""Ctrl-C on the command line, with real signals sent to `python -m qpeft.cli` in its own
process: `qpeft train` stops with a checkpoint and the same command continues it (never
overwriting a checkpoint, one history in metrics.jsonl), a changed command is refused in one
line, `qpeft eval` and `qpeft compare` say one line and no traceback; what a finished run prints
on stderr carries no warning of ours; on a terminal, evaluation shows what it evaluates and its
progress."""

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from qpeft.testing import tiny_model_dir

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
ENV["PYTHONWARNINGS"] = "default"  # every warning once per place, as a user sees them
TIMEOUT = 600  # seconds for one command on a loaded 2-core machine


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(tiny_model_dir(tmp_path_factory.mktemp("tiny-interrupt")))


def _qpeft(*args) -> list[str]:
    return [sys.executable, "-m", "qpeft.cli", *args]


def _flags(tiny, steps=40) -> list[str]:
    """A short run on the tiny model; no checkpoint before the interrupt's own."""
    flags = ["--model", tiny, "--data", "arithmetic:1", "--adapter", '{"r": 2, "bond_dim": 2}', "--steps", str(steps)]
    flags += ["--batch-size", "2", "--max-examples", "40", "--max-length", "64", "--save-steps", "100"]
    return flags + ["--eval-examples", "2", "--no-progress"]


def _train_args(tiny, out, steps=40) -> list[str]:
    return ["train", *_flags(tiny, steps), "--out", str(out)]


def _logged_steps(out) -> list[int]:
    path = Path(out) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [r["step"] for r in map(json.loads, path.read_text().splitlines()) if "loss" in r]


def _interrupt_when(cmd, ready, tmp_path, sig=signal.SIGINT) -> tuple[int, str, str]:
    """Run ``cmd``, send ``sig`` once ``ready()`` holds; (exit code, stdout, stderr)."""
    out, err = open(tmp_path / "stdout", "w+"), open(tmp_path / "stderr", "w+")
    # the child takes SIGINT as a terminal's Ctrl-C would reach it: a shell that starts the test run
    # in the background (`make test &`) leaves SIGINT ignored, which the child would inherit
    process = subprocess.Popen(
        cmd, env=ENV, stdout=out, stderr=err, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    )
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        assert process.poll() is None, f"exited before the signal: {open(tmp_path / 'stderr').read()}"
        assert time.monotonic() < deadline, "never ready for the signal"
        time.sleep(0.05)
    process.send_signal(sig)
    code = process.wait(timeout=TIMEOUT)
    out.seek(0), err.seek(0)
    return code, out.read(), err.read()


def _run(cmd) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=TIMEOUT)


def _ours(stderr: str) -> list[str]:
    """The lines qpeft's command line prints on stderr (not the Trainer's log records)."""
    return [line for line in stderr.splitlines() if line.startswith("qpeft")]


@pytest.mark.slow
def test_ctrl_c_in_train_then_the_same_command_continues(tiny, tmp_path):
    out = tmp_path / "run"
    code, _, err = _interrupt_when(_qpeft(*_train_args(tiny, out)), lambda: 2 in _logged_steps(out), tmp_path)
    assert code == 3, err
    assert "Traceback" not in err
    (checkpoint,) = out.glob("checkpoint-*")
    stopped_at = int(checkpoint.name.split("-")[1])
    assert 2 <= stopped_at < 40
    assert _ours(err) == [
        f"qpeft: SIGINT: saving a checkpoint at step {stopped_at} and stopping",
        f"qpeft train: stopped at step {stopped_at} of 40 with a checkpoint in {checkpoint}; "
        "run the same command again to continue",
    ]
    saved = {p.name: p.stat().st_mtime_ns for p in checkpoint.iterdir()}

    changed = _run(_qpeft(*_train_args(tiny, out, steps=50)))  # another run into the same directory
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    (line,) = _ours(changed.stderr)
    assert line.startswith(f"qpeft train: error: {out} holds {checkpoint.name} of a run with other settings")
    assert "steps 40 -> 50" in line and "--resume" in line and "--overwrite" in line
    assert _logged_steps(out) == list(range(1, stopped_at + 1))

    again = _run(_qpeft(*_train_args(tiny, out)))
    assert again.returncode == 0, again.stderr
    assert _ours(again.stderr) == [f"qpeft train: continuing {out} from {checkpoint.name}"]
    assert "Warning" not in again.stderr  # e.g. transformers' FutureWarning for a flag we passed unasked
    assert _logged_steps(out) == list(range(1, 41))  # one history: no step twice, none missing
    assert {p.name: p.stat().st_mtime_ns for p in checkpoint.iterdir()} == saved  # never overwritten
    assert json.loads((out / "results.json").read_text())["finished"]

    more = _run(_qpeft("train", "--resume", "--steps", "44", "--out", str(out)))  # its recorded settings, 4 more steps
    assert more.returncode == 0, more.stderr
    assert _logged_steps(out) == list(range(1, 45))
    assert json.loads((out / "train_config.json").read_text())["model"] == tiny


def _weights_adapter(tiny, run) -> str:
    """A saved (untrained) qtha-weights adapter in ``run/adapter``: circuits for the job engine."""
    from qpeft.adapters import get_model
    from qpeft.models import load_model

    model = get_model(load_model(tiny)[0], "qtha-weights", r=4, bond_dim=2, qnn_layers=1)
    return str(model.save_pretrained(Path(run) / "adapter"))


@pytest.mark.slow
@pytest.mark.parametrize("engine", [False, True], ids=["base-model", "job-engine"])
def test_ctrl_c_in_eval_is_one_line_and_exit_130(tiny, tmp_path, engine):
    # 400 problems answered: long enough to be interrupted in the evaluation
    cmd = ["eval", "--model", tiny, "--data", "arithmetic:1", "--split", "all", "--examples", "400"]
    cmd += ["--max-length", "64"]
    what, kept = (
        f"base model {tiny} (no adapter)",
        "no results were written; the same command again starts the evaluation over",
    )
    if engine:  # the circuits through the job engine, on a local job service that takes its time
        adapter = _weights_adapter(tiny, tmp_path / "run")
        options = {"workers": 1, "delay": 0.3, "poll_interval": 0.01}
        cmd += ["--adapter", adapter, "--quantum-backend", "local:shots", "--shots", "100"]
        cmd += ["--quantum-options", json.dumps(options)]
        what = f"adapter {adapter} on {tiny}"
        kept = (
            "no results were written; the same command again starts over and re-attaches to the jobs already "
            f"submitted (ledger: {tmp_path / 'run' / 'jobs'}), without paying for them again"
        )
    started = []

    def evaluating():
        if "qpeft eval: " in (tmp_path / "stderr").read_text():
            started.append(time.monotonic())
        return started and time.monotonic() - started[0] > 2  # past loading, into the evaluation

    code, out, err = _interrupt_when(_qpeft(*cmd), evaluating, tmp_path)
    assert code == 130 and out == "" and "Traceback" not in err and "KeyboardInterrupt" not in err, err
    # (an adapter saved outside a run: eval warns that the training split is unknown)
    assert [line for line in _ours(err) if ": warning: " not in line] == [
        f"qpeft eval: {what}: 400 examples: loss, accuracy of greedy answers and generated samples",
        f"qpeft eval: interrupted; {kept}",
    ]


@pytest.mark.slow
def test_ctrl_c_in_compare_says_it_once(tiny, tmp_path):
    out = tmp_path / "cmp"
    cmd = _qpeft("compare", *_flags(tiny), "--methods", "lora,qtha", "--out", str(out))
    code, _, err = _interrupt_when(cmd, lambda: 2 in _logged_steps(out / "lora-seed0"), tmp_path)
    assert code == 3 and "Traceback" not in err
    lines = _ours(err)
    assert len(lines) == 2 and lines[0].startswith("qpeft: SIGINT: saving a checkpoint at step")
    assert lines[1] == (
        f"qpeft compare: stopped in {out / 'lora-seed0'} with a checkpoint; run the same command again to continue "
        "(finished cells are reused)"
    )


def _on_terminal(cmd) -> str:
    """What ``cmd`` shows on a terminal (stdout and stderr on one pseudo-terminal)."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # 160 columns (a new pty has 0)
    process = subprocess.Popen(cmd, env=ENV, stdin=child, stdout=child, stderr=child)
    os.close(child)
    chunks, deadline = [], time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 1.0)
        if ready:
            try:
                data = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(main)
    assert process.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_evaluation_on_a_terminal_says_what_it_evaluates_and_shows_progress(tiny, tmp_path):
    out = tmp_path / "run"
    shown = _on_terminal(_qpeft(*[a for a in _train_args(tiny, out, steps=2) if a != "--no-progress"]))
    assert "final adapter, 2 held-out examples: loss:" in shown  # a bar: examples scored of 2
    assert "final adapter, 2 held-out examples: answers (greedy, up to 96 tokens):" in shown
    assert "/2 [" in shown
    shown = _on_terminal(_qpeft("eval", "--adapter", str(out / "adapter"), "--max-length", "64"))
    assert f"qpeft eval: adapter {out / 'adapter'} on {tiny}: 2 held-out examples: loss, accuracy" in shown
    assert "\rloss:" in shown or "loss:   0%" in shown
    assert "answers (greedy, up to 96 tokens):" in shown and "answer/s]" in shown
