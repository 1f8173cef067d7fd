"""``Turns``: calls taken alone wait for every other call; the others run side by side."""

import threading

from qpeft.jobs.turns import Turns


def test_side_by_side_calls_share_and_a_call_alone_waits_for_them():
    turns = Turns()
    assert turns.take(False, 0.01) and turns.take(False, 0.01)  # (two side by side)
    assert not turns.take(True, 0.05)  # a call alone waits for both, refused past its timeout
    turns.give(False)
    assert not turns.take(True, 0.05)
    turns.give(False)
    assert turns.take(True, 0.01)
    assert not turns.take(False, 0.05) and not turns.take(True, 0.05)  # nothing beside a call alone
    turns.give(True)
    assert turns.take(False, 0.01)


def test_a_waiting_call_gets_its_turn_when_the_other_gives_it_back():
    turns, got = Turns(), []
    assert turns.take(True, 0.01)
    waiter = threading.Thread(target=lambda: got.append(turns.take(False, 5.0)))
    waiter.start()
    threading.Timer(0.1, turns.give, args=(True,)).start()
    waiter.join(10)
    assert got == [True] and not turns.take(True, 0.01)  # (the waiter holds a side-by-side turn)
