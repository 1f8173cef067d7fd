"""benchmarks/_bench.py: the ``meta`` keys (and their order) that the benchmark scripts'
results files have always had, and the results tail."""

import importlib.util
import json
from pathlib import Path

import pytest

HELPER = Path(__file__).resolve().parents[1] / "benchmarks" / "_bench.py"
SHARED = ["command", "cpu", "threads", "torch", "date", "loadavg_start", "shared_machine"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("_bench", HELPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_meta_keys_in_order(bench):
    # profile_step.py / overhead.py --paired: loadavg_end stamped after the run, last
    meta = bench.finish(bench.run_meta("profile_step.py", ["--steps", "1"], "cpu") | {"device": "cpu"})
    assert list(meta) == SHARED + ["device", "loadavg_end"]
    assert meta["command"] == "python benchmarks/profile_step.py --steps 1"
    assert " + " not in meta["cpu"]
    # overhead.py / billion.py: built at the end, with the load average taken at the start
    meta = bench.run_meta("billion.py", [], ram=True, loadavg_start=(9.0, 0.0, 0.0), finished=True)
    ram, end = SHARED[:3] + ["ram_gib"] + SHARED[3:6], ["loadavg_end", "shared_machine"]
    assert list(meta) == ram + end
    assert meta["command"] == "python benchmarks/billion.py " and meta["loadavg_start"] == (9.0, 0.0, 0.0)
    # simulator_floor.py: no threads; qpu.py: no load average
    assert "threads" not in bench.run_meta("simulator_floor.py", [], threads=False)
    assert list(bench.run_meta("qpu.py", [], shared=False)) == SHARED[:5]


def test_write_results(bench, tmp_path, capsys):
    out = tmp_path / "a" / "b"
    text = bench.write_results(out, "x", {"meta": {"k": 1}}, lambda path, word: path.write_text(f"# {word}\n"), "hi")
    assert json.loads((out / "x.json").read_text()) == {"meta": {"k": 1}}
    assert (out / "x.md").read_text() == text == "# hi\n"
    assert capsys.readouterr().out == "# hi\n\n"
