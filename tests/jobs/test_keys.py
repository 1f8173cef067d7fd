"""Content keys per template, the append-only result cache, and jobs run on the caller's thread."""

import math
import threading

import numpy as np
import pytest
import torch

from qpeft.jobs import BoundCircuit, JobEngine, LocalProvider
from qpeft.jobs.cache import ResultCache
from qpeft.jobs.keys import Templates, job_key, key_circuits
from qpeft.quantum.circuit import Circuit, Input, Weight
from qpeft.testing import TOL

FAST = dict(poll_interval=0.001, max_poll_interval=0.004, progress=False)


def _ry():
    return Circuit(1).add("RY", [0], Weight(0))


def _keys(circuits, header="local|100|s", fingerprint="fp"):
    templates = Templates()
    templates.reset(fingerprint)
    keyed = key_circuits(circuits, templates)
    return keyed, job_key(header, keyed, range(len(keyed.circuits)))


def test_circuits_are_the_same_by_content_not_by_object():
    a, b = _ry(), _ry()  # two objects, one template
    other = Circuit(1).add("RX", [0], Weight(0))
    circuits = [BoundCircuit(a, (0.3,)), BoundCircuit(b, (0.3,)), BoundCircuit(a, (0.4,)), BoundCircuit(other, (0.3,))]
    keyed, _ = _keys(circuits)
    assert keyed.index == [0, 0, 1, 2]  # input order kept; the duplicate points at its first occurrence
    assert [c.weights for c in keyed.circuits] == [(0.3,), (0.4,), (0.3,)]


def test_a_job_key_changes_with_every_part_of_the_content():
    ry = _ry()
    circuits = [BoundCircuit(ry, (0.3,)), BoundCircuit(ry, (0.4,))]
    _, base = _keys(circuits)
    assert _keys([BoundCircuit(_ry(), (0.3,)), BoundCircuit(_ry(), (0.4,))])[1] == base
    assert _keys([BoundCircuit(ry, (0.3,)), BoundCircuit(ry, (math.nextafter(0.4, 1.0),))])[1] != base
    assert _keys(circuits[::-1])[1] != base  # job order is result order
    assert _keys(circuits, header="local|200|s")[1] != base  # shots (or scope)
    assert _keys(circuits, fingerprint="fp2")[1] != base  # provider, backend, options
    rx = Circuit(1).add("RX", [0], Weight(0))
    assert _keys([BoundCircuit(rx, (0.3,)), BoundCircuit(rx, (0.4,))])[1] != base
    # inputs count as much as weights
    both = Circuit(1).add("RY", [0], Weight(0)).add("RY", [0], Input(0))
    keyed, _ = _keys([BoundCircuit(both, (0.1,), (0.2,)), BoundCircuit(both, (0.1,), (0.3,))])
    assert list(keyed.index) == [0, 1]


def test_angles_that_do_not_fit_the_template_are_an_error():
    ry = _ry()
    with pytest.raises(ValueError, match="binds 2 weights to a template that reads 1 weights and 0 inputs"):
        _keys([BoundCircuit(ry, (0.3,)), BoundCircuit(ry, (0.3, 0.1))])
    with pytest.raises(ValueError, match="binds 1 inputs to a template that reads 1 weights and 0 inputs"):
        _keys([BoundCircuit(ry, (0.3,), (0.2,))])


def test_the_engine_answers_in_input_order_with_duplicates():
    thetas = np.random.default_rng(0).uniform(0, 2 * math.pi, 30)
    templates = [_ry() for _ in range(3)]  # equal content, three objects
    circuits = [BoundCircuit(templates[i % 3], (float(t),)) for i, t in enumerate(thetas)]
    circuits += circuits[:7]
    thetas = np.concatenate([thetas, thetas[:7]])
    provider = LocalProvider("torch", max_circuits=4)
    out = JobEngine(provider, None, **FAST).run(circuits, None)
    expected = np.stack([np.cos(thetas / 2) ** 2, np.sin(thetas / 2) ** 2], axis=1)  # RY|0>, closed form
    np.testing.assert_allclose(np.stack(out), expected, **TOL[torch.complex64])  # the torch backend's default


class _ThreadLog(LocalProvider):
    def __init__(self, fail_on=None):
        super().__init__("torch", max_circuits=2)
        self.threads, self.fail_on = set(), fail_on

    def submit(self, circuits, shots, tag):
        self.threads.add(threading.get_ident())
        if self.fail_on is not None and any(c.weights == self.fail_on for c in circuits):
            raise RuntimeError("invalid circuit")
        return super().submit(circuits, shots, tag)


def test_one_job_at_a_time_runs_on_the_calling_thread(tmp_path):
    ry = _ry()
    circuits = [BoundCircuit(ry, (0.1 * i,)) for i in range(6)]
    provider = _ThreadLog()
    JobEngine(provider, tmp_path, max_parallel=1, **FAST).run(circuits, None)
    assert provider.threads == {threading.get_ident()}
    parallel = _ThreadLog()
    JobEngine(parallel, tmp_path / "p", max_parallel=3, **FAST).run(circuits, None)
    assert threading.get_ident() not in parallel.threads
    # a failure stops the call; the jobs before it stay cached
    failing = _ThreadLog(fail_on=(0.1 * 4,))
    with pytest.raises(RuntimeError, match="invalid circuit"):
        JobEngine(failing, tmp_path / "f", max_parallel=1, **FAST).run(circuits, None)
    rerun = _ThreadLog()
    out = JobEngine(rerun, tmp_path / "f", max_parallel=1, **FAST).run(circuits, None)
    assert len(out) == 6 and len(rerun.threads) == 1 and len(rerun._jobs) == 1  # only the failed job ran


def test_the_result_cache_survives_a_torn_index_line(tmp_path):
    first = [np.array([0.25, 0.75]), np.array([1.0, 0.0, 0.0, 0.0])]
    cache = ResultCache(tmp_path)
    cache.put_job("a", first)
    with open(tmp_path / "index.jsonl", "a") as f:
        f.write('{"key": "b", "offs')  # a crash mid-line
    with open(tmp_path / "results.f64", "ab") as f:
        f.write(b"\x00" * 12)  # and bytes that no index line covers
    reopened = ResultCache(tmp_path)
    assert reopened.get_job("b", 1) is None
    got = reopened.get_job("a", 2)
    assert [g.tolist() for g in got] == [p.tolist() for p in first]
    second = [np.array([0.5, 0.5])]
    reopened.put_job("c", second)  # appended after the torn line, which it must not join
    third = ResultCache(tmp_path)
    assert third.get_job("c", 1)[0].tolist() == [0.5, 0.5] and third.get_job("a", 2)[1].tolist() == first[1].tolist()
    assert ResultCache(None).get_job("a", 2) is None


@pytest.mark.parametrize(
    "bad",
    [
        "7",
        "[]",
        "null",
        '{"key": "b", "offset": -8, "bytes": 16}',
        '{"key": 5, "offset": 0, "bytes": 16}',
        '{"kex": "b", "offset": 0, "bytes": 16}',
        '{"key": "b", "offset": 1e999, "bytes": 16}',
    ],
)
def test_an_index_line_that_is_no_entry_is_skipped_not_a_crash(tmp_path, bad):
    """A damaged or hand-edited index line that is JSON but no entry (not an object, a negative
    offset, a key that is no string) is skipped like a torn one: its job's results are not used
    (fetched again by id if needed), and every other entry still is."""
    cache = ResultCache(tmp_path)
    cache.put_job("a", [np.array([0.25, 0.75])])
    with open(tmp_path / "index.jsonl", "a") as f:
        f.write(bad + "\n")
    reopened = ResultCache(tmp_path)
    assert reopened.get_job("b", 1) is None and reopened.get_job("a", 1)[0].tolist() == [0.25, 0.75]


def test_distinct_circuits_are_grouped_by_template_in_input_order():
    ry, rx = _ry(), Circuit(1).add("RX", [0], Weight(0))
    for first, second in ((ry, rx), (rx, ry)):  # whichever has the lower address: input order decides
        circuits = [BoundCircuit(first, (0.1,)), BoundCircuit(second, (0.2,)), BoundCircuit(first, (0.3,))]
        keyed, _ = _keys(circuits)
        assert [(c.circuit, c.weights) for c in keyed.circuits] == [(first, (0.1,)), (first, (0.3,)), (second, (0.2,))]
        assert keyed.index == [0, 2, 1]


def test_batch_built_and_hand_built_circuits_have_the_same_keys():
    import dataclasses

    c = Circuit(2).add("RY", [0], Weight(0)).add("RX", [1], Weight(1))
    w = np.array([[0.1, -0.0], [1.0, 2.5], [0.1, -0.0]])  # a negative zero and a duplicate row

    def keys(circuits):
        keyed, header = _keys(circuits)
        return header, list(keyed.index)

    assert keys(BoundCircuit.batch(c, w)) == keys([BoundCircuit(c, tuple(r)) for r in w.tolist()])
    # replace() makes a circuit of other weights: it must not keep the batch's angle bytes
    moved = dataclasses.replace(BoundCircuit.batch(c, w[:1])[0], weights=(0.2, 0.0))
    assert keys([moved]) == keys([BoundCircuit(c, (0.2, 0.0))])
    with pytest.raises(ValueError, match="input-free template"):
        BoundCircuit.batch(c, w[:, :1])
