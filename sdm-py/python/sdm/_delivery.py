"""The delivery thread: where sdm's log events and async results reach Python.

sdm's runtime threads never run Python code. What they have for Python (a log record for
``logging``, the result an asyncio future waits for) is queued in the native module, and this
module's thread, ``sdm-delivery``, runs it in order.

Around ``os.fork()`` the thread is held still: before the fork, the forking thread takes the
gate that every delivery holds, so no log record of sdm's is half written to a file (whose
lock the child would inherit held, for ever) when the process forks; the parent releases it
after the fork, and the child starts anew with an empty queue and, at its first sdm call, a
thread of its own.
"""

from __future__ import annotations

# Imported first on purpose: logging's own fork hook (it takes logging's module lock) is then
# registered before ours and so runs after ours, while our hook waits for a delivery that may
# need that lock.
import logging
import os
import threading
from typing import Optional

from . import _native

__all__ = ["start"]

# Items run per turn of the gate: a fork waits for at most one batch.
_BATCH = 64
# How long the thread sleeps when nothing comes (a bound, not a poll that anything needs).
_IDLE = 1.0
# How long a fork waits for the delivery in progress to end before it goes ahead anyway (only a
# handler that blocks for this long, or one that waits for the forking thread, would reach it).
_FORK_WAIT = 10.0
# At exit: how long to wait for the thread, and how many items to deliver after it.
_EXIT_WAIT = 2.0
_EXIT_BATCH = 10_000

_log = logging.getLogger("sdm")

# Held while items are delivered; held by the forking thread across a fork.
_gate = threading.RLock()
_held_for_fork = False
_thread: Optional[threading.Thread] = None
_start_lock = threading.Lock()


def start() -> None:
    """Starts this process's delivery thread unless it runs (the native module calls this at
    each sdm call until it has succeeded once in this process)."""
    global _thread
    with _start_lock:
        if _thread is not None and _thread.is_alive():
            return
        thread = threading.Thread(target=_run, name="sdm-delivery", daemon=True)
        thread.start()
        _thread = thread


def _run() -> None:
    while _native._wait_for_items(_IDLE):
        try:
            _deliver(_BATCH)
        except Exception:  # only the dropped-events warning can raise (a broken filter)
            pass


def _deliver(limit: int) -> None:
    with _gate:
        dropped = _native._deliver(limit)
        if dropped:
            _log.warning(
                "%d log events of sdm were dropped: the logging handlers did not keep up", dropped
            )


def _before_fork() -> None:
    global _held_for_fork
    if threading.current_thread() is _thread:
        return  # a log handler forks: this thread's own delivery is the one in progress
    _held_for_fork = _gate.acquire(timeout=_FORK_WAIT)


def _after_fork_in_parent() -> None:
    global _held_for_fork
    if _held_for_fork:
        _held_for_fork = False
        _gate.release()


def _after_fork_in_child() -> None:
    # The parent's thread does not exist here and its queue is not this process's: start anew.
    global _gate, _held_for_fork, _thread, _start_lock
    _gate = threading.RLock()
    _held_for_fork = False
    _thread = None
    _start_lock = threading.Lock()


def _at_exit() -> None:
    """Stops the thread, then delivers what is still queued (the last log lines) here."""
    _native._shutdown()
    thread = _thread
    if thread is not None and thread is not threading.current_thread():
        thread.join(_EXIT_WAIT)
    if _gate.acquire(timeout=_EXIT_WAIT):
        try:
            _native._deliver(_EXIT_BATCH)
        finally:
            _gate.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
