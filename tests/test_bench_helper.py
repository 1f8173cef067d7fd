"""benchmarks/_bench.py: the ``meta`` keys (and their order) of the benchmark scripts' results
files, the load average refused or marked, the one measuring function, and the results tail."""

import importlib.util
import json
import os
import time
from pathlib import Path

import pytest

HELPER = Path(__file__).resolve().parents[1] / "benchmarks" / "_bench.py"
SHARED = ["command", "cpu", "threads", "torch", "date", "cores", "loadavg_start"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("_bench", HELPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_meta_keys_in_order(bench):
    # profile_step.py / overhead.py --paired: loadavg_end and loaded stamped after the run, last
    meta = bench.finish(bench.run_meta("profile_step.py", ["--steps", "1"], "cpu") | {"device": "cpu"})
    assert list(meta) == SHARED + ["device", "loadavg_end", "loaded"]
    assert meta["command"] == "python benchmarks/profile_step.py --steps 1"
    assert " + " not in meta["cpu"]
    # overhead.py / billion.py: built at the end, with the load average taken at the start
    meta = bench.run_meta("billion.py", [], ram=True, loadavg_start=(9.0, 0.0, 0.0), finished=True)
    assert list(meta) == SHARED[:3] + ["ram_gib"] + SHARED[3:] + ["loadavg_end", "loaded"]
    assert meta["command"] == "python benchmarks/billion.py " and meta["loadavg_start"] == (9.0, 0.0, 0.0)
    # simulator_floor.py: threads per row
    assert "threads" not in bench.run_meta("simulator_floor.py", [], threads=False)


def test_a_run_above_the_core_count_is_refused_or_marked(bench, monkeypatch):
    cores = bench.cores()
    monkeypatch.setattr(os, "getloadavg", lambda: (cores + 0.5, 1.0, 1.0))
    with pytest.raises(SystemExit, match=rf"load average {cores + 0.5:.1f} is above the {cores} cores.*--allow-load"):
        bench.load_start(allow=False)
    start = bench.load_start(allow=True)
    meta = bench.run_meta("x.py", [], loadavg_start=start, finished=True)
    assert meta["loaded"] and "Loaded run" in bench.load_note(meta)
    monkeypatch.setattr(os, "getloadavg", lambda: (cores - 0.5, 1.0, 1.0))
    quiet = bench.run_meta("x.py", [], loadavg_start=bench.load_start(allow=False), finished=True)
    assert not quiet["loaded"] and "Loaded" not in bench.load_note(quiet)
    assert bench.finish(dict(quiet, loadavg_start=(cores + 1.0, 0.0, 0.0)))["loaded"]  # loaded at the start only


def test_measure_interleaves_rounds_and_runs_slow_contenders_once_per_round(bench):
    order = []

    def contender(name: str, seconds: float):
        def run():
            order.append(name)
            time.sleep(seconds)

        return run

    timed = bench.measure(
        {"fast": contender("fast", 0.001), "slow": contender("slow", 0.03)},
        rounds=3,
        repeats=2,
        warmup=2,
        slow_limit=0.02,
    )
    # warm-up: fast twice, slow once (it is slow); then per round: fast twice, slow once
    assert order == ["fast", "fast", "slow"] + ["fast", "fast", "slow"] * 3
    assert (timed["fast"]["runs"], timed["slow"]["runs"]) == (2, 1)
    assert len(timed["slow"]["rounds_seconds"]) == 3 and timed["slow"]["seconds"]["min"] >= 0.03
    ratio = bench.round_ratio(timed, "slow", "fast")
    assert ratio["min"] > 3 and ratio["min"] <= ratio["median"] <= ratio["max"]
    assert timed["fast"]["page_faults"] >= 0


def test_write_results(bench, tmp_path, capsys):
    out = tmp_path / "a" / "b"
    text = bench.write_results(out, "x", {"meta": {"k": 1}}, lambda path, word: path.write_text(f"# {word}\n"), "hi")
    assert json.loads((out / "x.json").read_text()) == {"meta": {"k": 1}}
    assert (out / "x.md").read_text() == text == "# hi\n"
    assert capsys.readouterr().out == "# hi\n\n"
