"""Section F: SSH sessions through sdm beside direct `ssh` to the same `sshd`.

One private sshd (own host key and config, key-only auth, SFTP) serves both rows. `direct` is
the OpenSSH client with the key, straight to it. `sdm` is the same client with no key through
an `sdm connect` tunnel to an ssh resource whose stored key the gateway logs in with (the
gateway speaks SSH to the client and to the server, so it is one SSH hop more than direct).
Two measurements per row and repetition: `scp` of BULK_SSH bytes up (wall MB/s), and SSH_RUNS
sequential `ssh HOST true` (connect, log in, run, exit; p50, p99 and total).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time

from .paths import clean_env
from .procs import BenchError, Procs, free_port, listening, run, wait_until


def _config(d: str, port: int, user: str) -> str:
    return f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host_key
PidFile none
AuthorizedKeysFile {d}/authorized_keys
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
Subsystem sftp internal-sftp
UseDNS no
MaxStartups 100:30:200
LogLevel ERROR
"""


class SshRows:
    """The sshd, the sdm installation in front of it, and the two client command lines."""

    def __init__(self, work: str, bins: dict, procs: Procs) -> None:
        self.work = work
        self.bins = bins
        self.procs = procs
        self.user = run(["id", "-un"], timeout=5).strip()
        d = self.dir = os.path.join(work, "sshd")
        os.makedirs(d, mode=0o700)
        for key in ("host_key", "client_key"):
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f",
                 os.path.join(d, key)], timeout=30)
        with open(os.path.join(d, "client_key.pub")) as f, \
                open(os.path.join(d, "authorized_keys"), "w") as out:
            out.write(f.read())
        with open(os.path.join(d, "host_key.pub")) as f:
            self.host_pub = " ".join(f.read().split()[:2])
        self.sshd_port = free_port()
        with open(os.path.join(d, "sshd_config"), "w") as f:
            f.write(_config(d, self.sshd_port, self.user))
        run([bins["sshd"], "-t", "-f", f"{d}/sshd_config"], timeout=10)
        sshd = procs.start("gateway", "sshd-F", [bins["sshd"], "-D", "-e", "-f",
                                                 f"{d}/sshd_config"])
        wait_until("sshd listening", lambda: listening(self.sshd_port), 10, sshd.alive)
        with open(os.path.join(d, "known_hosts"), "w") as f:
            f.write(f"[127.0.0.1]:{self.sshd_port} {self.host_pub}\n")
        self.sdm_port = self._sdm()

    def _sdm(self) -> int:
        """sdm-server with the ssh resource `web` (the stored key, the host key given), granted
        to `bench`, and `sdm connect web`: the tunnel's port."""
        d = os.path.join(self.work, "sdm-server")
        home = os.path.join(self.work, "sdm-home")
        token_file = os.path.join(self.work, "admin.token")
        api, gport = free_port(), free_port()
        server = self.procs.start("gateway", "sdm-server-F", [
            self.bins["sdm-server"], "serve", "--data-dir", d, "--listen", f"127.0.0.1:{api}",
            "--gateway-listen", f"127.0.0.1:{gport}", "--admin-token-file", token_file])
        wait_until("sdm-server ready",
                   lambda: os.path.exists(token_file) and listening(api) and listening(gport),
                   30, server.alive)
        with open(token_file) as f:
            admin = f.read().strip()
        env = clean_env()
        admin_env = {**env, "SDM_ADMIN_TOKEN": admin}
        sdm = self.bins["sdm"]
        service = run([sdm, "admin", "services", "create", "bench"], 30, env=admin_env).strip()
        run([sdm, "admin", "servers", "add", "ssh", "web", "--hostname", "127.0.0.1",
             "--port", str(self.sshd_port), "--username", self.user,
             "--key-file", os.path.join(self.dir, "client_key"), "--host-key", self.host_pub],
            30, env=admin_env)
        run([sdm, "admin", "grant", "bench", "web"], 30, env=admin_env)
        self.job_env = {**env, "SDM_HOME": home, "SDM_SERVICE_TOKEN": service}
        run([sdm, "login"], 40, env=self.job_env)
        with open(os.path.join(home, "agent.pid")) as f:
            agent = self.procs.adopt(int(f.read().strip()), "client", "sdm-agent-F")
        self.job_env.pop("SDM_SERVICE_TOKEN")
        out = json.loads(run([sdm, "connect", "web", "--json"], 40, env=self.job_env))
        port = int(out["port"])
        wait_until("sdm tunnel listening", lambda: listening(port), 15, agent.alive)
        return port

    def client(self, program: str, row: str) -> list[str]:
        """`ssh` or `scp` for a row, with everything but the destination."""
        port_flag = "-p" if program == "ssh" else "-P"
        common = ["-F", "none", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
                  "-o", "ControlMaster=no", "-o", "ControlPath=none"]
        if row == "direct":
            return [program, port_flag, str(self.sshd_port), *common,
                    "-i", os.path.join(self.dir, "client_key"), "-o", "IdentitiesOnly=yes",
                    "-o", "StrictHostKeyChecking=yes",
                    "-o", f"UserKnownHostsFile={self.dir}/known_hosts"]
        # Through the tunnel: no key at all; the gateway's host key is not what is measured.
        return [program, port_flag, str(self.sdm_port), *common,
                "-o", "PubkeyAuthentication=no", "-o", "PasswordAuthentication=no",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]

    def stop(self) -> None:
        try:
            run([self.bins["sdm"], "logout"], 20, env=self.job_env, check=False)
        except (BenchError, AttributeError):
            pass


def scp_up(rows: SshRows, row: str, source: str, size: int) -> dict:
    """Wall-clock MB/s of one `scp` of `source` to the server."""
    dest = os.path.join(rows.work, f"scp-{row}.bin")
    argv = rows.client("scp", row) + [source, f"{rows.user}@127.0.0.1:{dest}"]
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    secs = time.perf_counter() - t0
    got = os.path.getsize(dest) if os.path.exists(dest) else 0
    if os.path.exists(dest):
        os.remove(dest)
    if r.returncode != 0 or got != size:
        return {"error": f"scp exit {r.returncode}, {got} of {size} bytes: {r.stderr.strip()[-300:]}"}
    return {"scp_bytes": size, "scp_s": round(secs, 3), "scp_MBps": size / secs / 1e6}


def run_true(rows: SshRows, row: str, runs: int, max_s: float) -> dict:
    """`runs` sequential `ssh HOST true`, each timed (bounded by `max_s` in all)."""
    argv = rows.client("ssh", row) + [f"{rows.user}@127.0.0.1", "true"]
    times, errors = [], 0
    deadline = time.monotonic() + max_s
    for _ in range(runs):
        if time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        r = subprocess.run(argv, capture_output=True, timeout=60)
        if r.returncode == 0:
            times.append((time.perf_counter() - t0) * 1e3)
        else:
            errors += 1
    if not times:
        return {"error": f"no `ssh true` succeeded ({errors} failed)", "true_errors": errors}
    times.sort()
    return {"true_runs": len(times), "true_errors": errors,
            "true_p50_ms": statistics.median(times),
            "true_p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
            "true_total_s": round(sum(times) / 1e3, 3)}
