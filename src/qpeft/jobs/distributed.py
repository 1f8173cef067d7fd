"""One submitter under ``torchrun``: rank 0 runs the job engine, the other ranks get its results.

Under data parallel training every process holds the same adapter weights (DDP keeps them equal),
so every process would build the same circuits for a step; if each ran them, each would pay for
them (and write the same ledger). :class:`RankZeroEngine` stands where the engine stands: on rank
0 it runs the real engine (the only provider, ledger and cache of the run) and broadcasts the
results, or the error, through ``torch.distributed``; on the other ranks it receives them. Every
rank must call it at the same points (the step runner does: a step's first forward, a periodic
evaluation's); after the last collective call (rank 0's final evaluation, which runs alone)
:meth:`RankZeroEngine.alone` turns the broadcast off.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence

import numpy as np

from qpeft.jobs.base import BoundCircuit
from qpeft.jobs.engine import JobEngine


def world() -> tuple[int, int]:
    """(rank, world size) of this process as torchrun sets them (0, 1 outside torchrun).

    Raises:
        ValueError: ``RANK`` or ``WORLD_SIZE`` is not an integer, or not a rank of that world.
    """
    rank, size = _environ_int("RANK", 0), _environ_int("WORLD_SIZE", 1)
    if size < 1 or not 0 <= rank < size:
        raise ValueError(
            f"the environment sets RANK={rank} and WORLD_SIZE={size}: torchrun sets WORLD_SIZE to the number "
            "of processes (1 or more) and RANK to 0 .. WORLD_SIZE - 1; unset both to run in one process"
        )
    return rank, size


def _environ_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"the environment sets {name}={text!r}, not an integer (torchrun sets it for each process); "
            "unset it to run in one process"
        ) from None


class RankZeroEngine:
    """The job engine of rank 0, shared with the other ranks by broadcast (see module docstring).

    engine: the real engine on rank 0, None on the other ranks.
    """

    def __init__(self, engine: JobEngine | None):
        rank, _ = world()
        if (engine is None) != (rank != 0):
            raise ValueError(f"rank {rank}: the job engine belongs on rank 0 only")
        self.engine = engine
        self.together = True

    @property
    def ledger(self):
        """Rank 0's job ledger (:class:`qpeft.jobs.ledger.Ledger`); None on the other ranks, which
        write none."""
        return self.engine.ledger if self.engine is not None else None

    @property
    def provider(self):
        """Rank 0's provider; None on the other ranks, which submit nothing."""
        return self.engine.provider if self.engine is not None else None

    def alone(self) -> None:
        """From now on only rank 0 calls :meth:`run` (no broadcast)."""
        self.together = False

    def close(self, raise_errors: bool = True) -> None:
        """Close rank 0's engine (:meth:`JobEngine.close`); nothing to do on the other ranks."""
        if self.engine is not None:
            self.engine.close(raise_errors)

    def run(self, circuits: Sequence[BoundCircuit], shots: int | None, scope: str = "") -> list[np.ndarray]:
        """:meth:`JobEngine.run` on rank 0; the same results on every rank."""
        if not self.together:
            if self.engine is None:
                raise RuntimeError("only rank 0 runs circuits once the ranks no longer run them together")
            return self.engine.run(circuits, shots, scope)
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError(
                "WORLD_SIZE > 1 but torch.distributed is not initialized: the ranks cannot share rank 0's job "
                "results (run training through the Trainer, which sets the process group up)"
            )
        payload: list = [None]
        if self.engine is not None:
            try:
                results = self.engine.run(circuits, shots, scope)
            except BaseException as err:  # the others must not wait for ever: they raise it too
                payload[0] = ("error", _portable(err))
                dist.broadcast_object_list(payload, src=0)
                raise
            payload[0] = ("ok", (len(circuits), results))
        dist.broadcast_object_list(payload, src=0)
        kind, value = payload[0]
        if kind == "error":
            raise value
        count, results = value
        if count != len(circuits):  # every rank builds the same circuits; anything else is a bug
            raise RuntimeError(f"rank 0 ran {count} circuits for scope {scope!r}, this rank has {len(circuits)}")
        return results


def _portable(err: BaseException) -> BaseException:
    """``err`` if it survives pickling (to the other ranks), else a RuntimeError with its text."""
    try:
        return pickle.loads(pickle.dumps(err))
    except Exception:
        return RuntimeError(f"rank 0: {type(err).__name__}: {err}")
