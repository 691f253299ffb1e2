"""How long a test waits for something: a net against a hang, never a measure of speed.

The suite must pass while other work saturates the machine's cores, so a test waits for the
condition itself (a message, a state, an exit), and every wait gives up only after PATIENCE_S,
far beyond what the slowest machine takes. A test never asserts that work finished in a time.
"""

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

PATIENCE_S = 300.0


def deadline() -> float:
    """The monotonic time after which a wait that began now has hung."""
    return time.monotonic() + PATIENCE_S


def wait_until(
    check: Callable[[], T],
    what: str | Callable[[], str],
    poll_s: float = 0.05,
    *,
    between: Callable[[], object] | None = None,
) -> T:
    """check()'s first truthy value; fail naming what was awaited if it never comes.

    Between checks it sleeps poll_s, or calls between() (e.g. a read that itself blocks a
    little); `what` may be a function, for a message that says the state at the end.
    """
    end = deadline()
    while not (result := check()):
        if time.monotonic() >= end:
            raise AssertionError(f"gave up waiting for {what() if callable(what) else what}")
        if between is None:
            time.sleep(poll_s)
        else:
            between()
    return result


def returns(call: Callable[[], T], what: str) -> T:
    """call()'s result, from a thread: fail if it blocks instead of returning (a hang)."""
    out: list[T] = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    thread.join(PATIENCE_S)
    assert not thread.is_alive(), f"{what} never returned"
    return out[0]
