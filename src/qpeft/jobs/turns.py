"""Turns at an object some of whose calls may run side by side and others only alone: an SDK
object that is not thread-safe for every call (qiskit-ibm-runtime's service object switches its
active instance inside its lookups, which its submissions read; submissions agree among
themselves). A turn not free within its timeout is refused, never waited for without end."""

from __future__ import annotations

import threading


class Turns:
    """Calls taken ``alone`` run with no other call in flight; the others side by side, with none
    taken alone. No fairness: a call taken alone may wait out its timeout behind a stream of
    side-by-side ones (the caller retries)."""

    def __init__(self):
        self._changed = threading.Condition()
        self._side_by_side, self._alone = 0, False

    def take(self, alone: bool, timeout: float) -> bool:
        """Whether the turn was taken within ``timeout`` seconds (then :meth:`give` it back)."""
        with self._changed:
            free = self._changed.wait_for(lambda: not self._alone and not (alone and self._side_by_side), timeout)
            if free:
                self._alone = self._alone or alone
                self._side_by_side += not alone
            return free

    def give(self, alone: bool) -> None:
        """Give back a turn :meth:`take` gave."""
        with self._changed:
            self._alone = self._alone and not alone
            self._side_by_side -= not alone
            self._changed.notify_all()
