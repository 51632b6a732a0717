"""SSH from Python through a tunnel opened with `import sdm`: paramiko reaches a real `sshd`
with no key and no password of its own (the gateway logs in with the key the admin stored),
drives an interactive shell on a pty whose size it changes, runs commands with their exit
status, and loses the session when its account is suspended. Every wait is bounded."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

import sdm

paramiko = pytest.importorskip("paramiko")

SSHD = next((p for p in ("/usr/sbin/sshd", "/usr/bin/sshd") if os.path.exists(p)), None)
pytestmark = pytest.mark.skipif(SSHD is None, reason="openssh-server is not installed")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, timeout=30)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


@pytest.fixture(scope="module")
def sshd() -> Iterator[Dict[str, Any]]:
    """A private sshd on a free port that lets in the tests' OS user with one key."""
    d = Path(tempfile.mkdtemp(prefix="sdm-py-sshd-"))
    os.chmod(d, 0o755)
    host_pub = keygen(d / "host_key")
    login_pub = keygen(d / "login_key")
    (d / "authorized_keys").write_text(login_pub + "\n")
    port = free_port()
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    (d / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1:{port}\nHostKey {d}/host_key\nAuthorizedKeysFile "
        f"{d}/authorized_keys\nPidFile none\nUsePAM no\nStrictModes no\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nSubsystem sftp internal-sftp\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(8).startswith(b"SSH-2.0"):
                    break
        except OSError:
            pass
        assert proc.poll() is None, "sshd exited"
        assert time.monotonic() < deadline, "sshd did not start"
        time.sleep(0.05)
    try:
        yield {"port": port, "user": user, "host_key": host_pub, "key_file": d / "login_key"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def web(fixture: Any, sshd: Dict[str, Any]) -> str:
    """The ssh resource `web`, added as an admin does it (`sdm admin servers add ssh`)."""
    env = {**os.environ, "SDM_ADMIN_TOKEN": fixture["admin_token"]}
    subprocess.run(
        [os.environ["SDM_BIN"], "admin", "servers", "add", "ssh", "web",
         "--hostname", "127.0.0.1", "--port", str(sshd["port"]), "--username", sshd["user"],
         "--key-file", str(sshd["key_file"]), "--host-key", sshd["host_key"]],
        env=env, check=True, timeout=60, capture_output=True)
    return "web"


def transport(host: str, port: int) -> Any:
    """A paramiko transport logged in with `none`: no key, no password."""
    t = paramiko.Transport((host, port))
    t.start_client(timeout=30)
    t.auth_none("job")
    assert t.is_authenticated()
    return t


def read_until(chan: Any, marker: bytes, timeout: float = 30) -> bytes:
    chan.settimeout(timeout)
    seen = b""
    while marker not in seen:
        chunk = chan.recv(4096)
        if not chunk:
            break
        seen += chunk
    return seen


def test_paramiko_runs_a_command_with_no_key_and_gets_its_exit_status(
        new_account: Any, web: str) -> None:
    _, token = new_account(web)
    with sdm.login(token) as session, session.connect(web) as tunnel:
        t = transport(tunnel.host, tunnel.port)
        try:
            chan = t.open_session(timeout=30)
            chan.exec_command("echo from $(whoami); exit 4")
            out = read_until(chan, b"\n")
            assert out.startswith(b"from ")
            assert chan.recv_exit_status() == 4
        finally:
            t.close()


def test_the_gateway_host_key_is_given_with_the_resource_to_pin_it(
        new_account: Any, web: str) -> None:
    _, token = new_account(web)
    with sdm.login(token) as session:
        (listed,) = session.list_resources()
        assert listed.ssh_host_key is not None and listed.ssh_host_key.startswith("ssh-ed25519 ")
        with session.connect(web) as tunnel:
            assert tunnel.resource.ssh_host_key == listed.ssh_host_key
            # The key the tunnel presents is the one to pin.
            t = transport(tunnel.host, tunnel.port)
            try:
                shown = t.get_remote_server_key()
                assert f"{shown.get_name()} {shown.get_base64()}" == listed.ssh_host_key
            finally:
                t.close()


def test_an_interactive_shell_follows_the_terminal_size(new_account: Any, web: str) -> None:
    _, token = new_account(web)
    with sdm.login(token) as session, session.connect(web) as tunnel:
        t = transport(tunnel.host, tunnel.port)
        try:
            chan = t.open_session(timeout=30)
            chan.get_pty(term="xterm", width=80, height=24)
            chan.invoke_shell()
            # The marker is computed, so that the terminal's echo of the line does not match it.
            chan.sendall(b"stty size; echo done-$((0 + 1))\n")
            assert b"24 80" in read_until(chan, b"done-1\r\n")
            chan.resize_pty(width=132, height=43)
            chan.sendall(b"stty size; echo done-$((1 + 1))\n")
            assert b"43 132" in read_until(chan, b"done-2\r\n")
            chan.sendall(b"exit 0\n")
            assert chan.recv_exit_status() == 0
        finally:
            t.close()


def test_suspending_the_account_ends_the_ssh_session(
        fixture: Any, new_account: Any, web: str) -> None:
    name, token = new_account(web)
    with sdm.login(token) as session, session.connect(web) as tunnel:
        t = transport(tunnel.host, tunnel.port)
        try:
            chan = t.open_session(timeout=30)
            chan.exec_command("echo up; sleep 60")
            assert read_until(chan, b"up\n") == b"up\n"
            fixture.command(f"suspend {name}")
            # The gateway disconnects the session: the channel ends (EOF) instead of the read
            # timing out while `sleep 60` runs.
            chan.settimeout(30)
            while chan.recv(4096):
                pass
            deadline = time.monotonic() + 30
            while t.is_active() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not t.is_active()
        finally:
            t.close()
