"""Processes the harness starts, and what they cost.

Every process is started through `Procs.start` and recorded with its start time, so that it is
stopped later by its own pid (never by name) and only while it is still the same process.
CPU and memory are read from /proc for a recorded process and all its live descendants.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

PORT_RANGE = (20000, 29999)  # below the kernel's ephemeral range: no clash with clients
CLK_TCK = os.sysconf("SC_CLK_TCK")
_taken: set[int] = set()


class BenchError(Exception):
    """A step of the harness failed (not a performance verdict)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (and this run has not handed out)."""
    for _ in range(500):
        port = random.randint(*PORT_RANGE)
        if port in _taken:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        _taken.add(port)
        return port
    raise BenchError("no free port on 127.0.0.1")


def listening(port: int) -> bool:
    """Whether 127.0.0.1:port accepts (probed from /proc/net/tcp: no connection is made)."""
    want = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[1] == want and parts[3] == "0A":
                    return True
    except OSError:
        pass
    return False


def wait_until(what: str, check: Callable[[], bool], timeout: float,
               alive: Optional[Callable[[], bool]] = None) -> None:
    """Polls `check` every 20 ms for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if alive is not None and not alive():
            raise BenchError(f"{what}: the process exited")
        time.sleep(0.02)
    raise BenchError(f"{what}: not within {timeout:.0f} s")


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    return s[s.rfind(")") + 2:].split()  # index 0 is field 3 (state)


def start_time(pid: int) -> Optional[str]:
    """The start time of a live process; None when it is gone or a zombie (exited)."""
    try:
        st = _stat(pid)
        return None if st[0] in ("Z", "X") else st[19]
    except (OSError, IndexError):
        return None


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                kids.setdefault(int(_stat(int(d))[1]), []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return kids


@dataclass
class Proc:
    """A recorded process: pid plus start time (guards against a recycled pid)."""
    pid: int
    started: str
    role: str  # "client", "gateway" or "infra"
    name: str

    def alive(self) -> bool:
        return start_time(self.pid) == self.started


def tree(procs: Iterable[Proc]) -> list[int]:
    """Pids of the live recorded processes and all their descendants."""
    roots = [p.pid for p in procs if p.alive()]
    kids = _children()
    seen: set[int] = set()
    todo = list(roots)
    while todo and len(seen) < 100_000:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo.extend(kids.get(p, []))
    return sorted(seen)


def cpu_seconds(procs: Iterable[Proc]) -> float:
    """user+system CPU of the processes and their descendants (reaped children included)."""
    ticks = 0
    for pid in tree(procs):
        try:
            f = _stat(pid)
            ticks += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        except (OSError, IndexError, ValueError):
            pass
    return ticks / CLK_TCK


class MachineCpu:
    """Where all of the machine's CPU went while something ran, beside the path's own processes:
    the whole machine (`/proc/stat`: busy, idle, and of busy the time in interrupts, where
    loopback's receive path runs, also charged to the process it interrupted), the children this
    process waited for meanwhile (pgbench), and `others` (PostgreSQL)."""

    def __init__(self, others: list[Proc]):
        self.others = others
        self.machine = _machine_ticks()
        self.children = _children_seconds()
        self.other = cpu_seconds(others)

    def spent(self) -> dict[str, float]:
        """Seconds of CPU (summed over CPUs) since the count began."""
        machine = _machine_ticks()
        spent = {k: (machine[k] - self.machine[k]) / CLK_TCK for k in machine}
        spent["children"] = _children_seconds() - self.children
        spent["others"] = cpu_seconds(self.others) - self.other
        return spent


def _machine_ticks() -> dict[str, int]:
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return {"busy": user + nice + system + irq + softirq + steal,
            "interrupts": irq + softirq,
            "idle": idle + iowait}


def _children_seconds() -> float:
    t = os.times()
    return t.children_user + t.children_system


def _switches_by_thread(procs: Iterable[Proc]) -> dict[int, int]:
    """Voluntary plus involuntary context switches of each live thread of the processes and
    their descendants."""
    counts: dict[int, int] = {}
    for pid in tree(procs):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    n = 0
                    for line in f:
                        key, _, value = line.partition(":")
                        if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
                            n += int(value)
                counts[int(tid)] = n
            except (OSError, ValueError):
                pass
    return counts


class SwitchCount:
    """Counts the context switches (how often a thread slept and was woken, or was put off a
    CPU) of a path side's threads while something runs. `/proc` forgets a thread when it ends,
    and some peers end a thread or process with each connection (stunnel, sshd), so the threads
    are looked at once a second meanwhile, each counted up to the last look that found it; one
    that lives less than a second can be missed (stunnel's, one per connection, under -C)."""

    PERIOD = 1.0

    def __init__(self, procs: list[Proc]):
        self.procs = procs
        self.first = _switches_by_thread(procs)
        self.last = dict(self.first)
        self.done = threading.Event()
        self.looking = threading.Thread(target=self._look, daemon=True)
        self.looking.start()

    def _look(self) -> None:
        while not self.done.wait(self.PERIOD):
            self.last.update(_switches_by_thread(self.procs))

    def stop(self) -> int:
        """Switches since the count began."""
        self.done.set()
        self.looking.join()
        self.last.update(_switches_by_thread(self.procs))
        return sum(n - self.first.get(tid, 0) for tid, n in self.last.items())


def memory(procs: Iterable[Proc]) -> dict:
    """RSS and PSS (KiB) summed over the processes and their descendants."""
    rss = pss = n = 0
    for pid in tree(procs):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
            n += 1
        except (OSError, ValueError):
            pass
    return {"rss_kib": rss, "pss_kib": pss, "procs": n}


@dataclass
class Procs:
    """The processes of one path instance (or of the run's infrastructure)."""
    log_dir: str
    procs: list[Proc] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    def start(self, role: str, name: str, argv: list[str], env: Optional[dict] = None,
              cwd: Optional[str] = None, user: Optional[str] = None) -> Proc:
        """Starts argv in the background (stdin /dev/null, output to LOG_DIR/name.log)."""
        log = open(os.path.join(self.log_dir, f"{name}.log"), "ab")
        full = argv if user is None else ["runuser", "-u", user, "--", *argv]
        try:
            p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 env=env, cwd=cwd, start_new_session=True)
        finally:
            log.close()
        st = None
        for _ in range(100):
            st = start_time(p.pid)
            if st is not None:
                break
            time.sleep(0.001)
        proc = Proc(p.pid, st or "?", role, name)
        self.procs.append(proc)
        self.commands.append(f"{role}: {' '.join(argv)}")
        return proc

    def adopt(self, pid: int, role: str, name: str) -> Proc:
        """Records a process that started itself (a daemon), to measure and stop it."""
        proc = Proc(pid, start_time(pid) or "?", role, name)
        self.procs.append(proc)
        return proc

    def role(self, role: str) -> list[Proc]:
        return [p for p in self.procs if p.role == role]

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM to each recorded process still alive (newest first) and to its descendants,
        then SIGKILL to whatever is left after `grace` seconds."""
        victims: list[Proc] = []
        kids = _children()
        for p in reversed(self.procs):
            if not p.alive():
                continue
            victims.append(p)
            todo, seen = list(kids.get(p.pid, [])), set()
            while todo and len(seen) < 10_000:
                c = todo.pop()
                if c in seen:
                    continue
                seen.add(c)
                st = start_time(c)
                if st is not None:
                    victims.append(Proc(c, st, p.role, p.name + "-child"))
                todo.extend(kids.get(c, []))
        for v in victims:
            if v.alive():
                try:
                    os.kill(v.pid, signal.SIGTERM)
                except OSError:
                    pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(v.alive() for v in victims):
            time.sleep(0.05)
        for v in victims:
            if v.alive():
                try:
                    os.kill(v.pid, signal.SIGKILL)
                except OSError:
                    pass
        # Reap our own direct children so that none is left as a zombie.
        for v in victims:
            try:
                os.waitpid(v.pid, os.WNOHANG)
            except ChildProcessError:
                pass
        self.procs = []


def run(argv: list[str], timeout: float, env: Optional[dict] = None, input: Optional[str] = None,
        cwd: Optional[str] = None, user: Optional[str] = None, check: bool = True) -> str:
    """Runs a short command to completion (bounded); returns stdout."""
    full = argv if user is None else ["runuser", "-u", user, "--", *argv]
    try:
        r = subprocess.run(full, capture_output=True, text=True, timeout=timeout, env=env,
                           input=input, cwd=cwd)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{argv[0]} did not finish within {timeout:.0f} s") from e
    if check and r.returncode != 0:
        raise BenchError(f"{' '.join(argv[:4])}… exited {r.returncode}: "
                         f"{(r.stderr or r.stdout).strip()[-400:]}")
    return r.stdout
