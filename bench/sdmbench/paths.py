"""The paths (rows) a client can take to an upstream on 127.0.0.1.

Each path starts its processes for one target and reports the local port(s) a client connects
to; `stop` ends them. Processes are recorded with a role: "client" (what runs beside the job)
or "gateway" (what runs beside the resource), which section A bills CPU to and section D
weighs.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass, field
from typing import Optional

from .procs import BenchError, Procs, free_port, listening, run, wait_until


@dataclass
class Target:
    """What a path must reach: `kind` "tcp" (raw bytes), "postgres" or "mysql"; `tunnels` is how many
    separate tunnels (local ports) to open to it (only sdm supports more than one)."""
    port: int
    kind: str = "tcp"
    tunnels: int = 1
    pg_login: Optional[dict] = None  # {"username","password","database"} for stored credentials


@dataclass
class Instance:
    ports: list[int]
    procs: Procs
    facts: dict = field(default_factory=dict)


class Path:
    name = ""
    label = ""
    #: sections this path takes part in
    sections = "ABCDG"

    def __init__(self, work: str, bins: dict):
        self.work = work
        self.bins = bins

    def start(self, target: Target, state: str) -> Instance:
        raise NotImplementedError

    def stop(self, inst: Instance) -> None:
        inst.procs.stop()

    def probe(self, inst: Instance) -> dict:
        return {}


class Direct(Path):
    name = "direct"
    label = "direct TCP (no tunnel)"

    def start(self, target: Target, state: str) -> Instance:
        return Instance([target.port], Procs(state))


class SshAesGcm(Path):
    """`ssh -N -L` through a private sshd: own host key and config, key-only auth, one port."""
    name = "ssh"
    label = "ssh -L (aes128-gcm@openssh.com)"
    cipher = "aes128-gcm@openssh.com"

    def start(self, target: Target, state: str) -> Instance:
        procs = Procs(state)
        d = os.path.join(state, "ssh")
        os.makedirs(d, mode=0o700)
        for key in ("host_key", "client_key"):
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f",
                 os.path.join(d, key)], timeout=30)
        shutil.copy(os.path.join(d, "client_key.pub"), os.path.join(d, "authorized_keys"))
        if os.geteuid() == 0:
            # sshd run as root insists on its privilege separation directory, which a fresh
            # machine only gets from the first sshd its init system starts.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        sport, lport = free_port(), free_port()
        user = run(["id", "-un"], timeout=5).strip()
        with open(os.path.join(d, "host_key.pub")) as f:
            host_pub = " ".join(f.read().split()[:2])
        with open(os.path.join(d, "known_hosts"), "w") as f:
            f.write(f"[127.0.0.1]:{sport} {host_pub}\n")
        config = f"""Port {sport}
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
AllowTcpForwarding local
PermitOpen 127.0.0.1:{target.port}
X11Forwarding no
PermitTTY no
UseDNS no
MaxStartups 100:30:200
LogLevel ERROR
"""
        with open(os.path.join(d, "sshd_config"), "w") as f:
            f.write(config)
        sshd = self.bins["sshd"]
        run([sshd, "-t", "-f", f"{d}/sshd_config"], timeout=10)
        gw = procs.start("gateway", "sshd", [sshd, "-D", "-e", "-f", f"{d}/sshd_config"])
        wait_until("sshd listening", lambda: listening(sport), 10, gw.alive)
        client = procs.start("client", "ssh", [
            "ssh", "-F", "none", "-p", str(sport), "-i", f"{d}/client_key",
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={d}/known_hosts", "-o", "ServerAliveInterval=0",
            "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR", "-c", self.cipher,
            "-N", "-L", f"127.0.0.1:{lport}:127.0.0.1:{target.port}", f"{user}@127.0.0.1"])
        wait_until("ssh -L listening", lambda: listening(lport), 15, client.alive)
        procs.commands.append(f"sshd_config: {config!r}")
        return Instance([lport], procs, {"cipher": self.cipher, "sshd_port": sport})


class Stunnel(Path):
    """Client stunnel → server stunnel over TLS 1.3 (self-signed ECDSA P-256, verified)."""
    name = "stunnel"
    label = "stunnel TLS 1.3"

    def start(self, target: Target, state: str) -> Instance:
        procs = Procs(state)
        d = os.path.join(state, "stunnel")
        os.makedirs(d, mode=0o700)
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "2", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem"], timeout=30)
        gport, lport = free_port(), free_port()
        common = "foreground = yes\npid =\nsyslog = no\ndebug = 3\n"
        server = (common + f"[gateway]\naccept = 127.0.0.1:{gport}\n"
                  f"connect = 127.0.0.1:{target.port}\ncert = {d}/cert.pem\nkey = {d}/key.pem\n"
                  "sslVersionMin = TLSv1.3\nsslVersionMax = TLSv1.3\n")
        client = (common + f"[client]\nclient = yes\naccept = 127.0.0.1:{lport}\n"
                  f"connect = 127.0.0.1:{gport}\nsslVersionMin = TLSv1.3\nsslVersionMax = TLSv1.3\n"
                  f"verifyPeer = yes\nCAfile = {d}/cert.pem\ncheckHost = localhost\n")
        for name, text in (("server.conf", server), ("client.conf", client)):
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        gw = procs.start("gateway", "stunnel-server", [self.bins["stunnel"], f"{d}/server.conf"])
        wait_until("stunnel server listening", lambda: listening(gport), 10, gw.alive)
        cl = procs.start("client", "stunnel-client", [self.bins["stunnel"], f"{d}/client.conf"])
        wait_until("stunnel client listening", lambda: listening(lport), 10, cl.alive)
        procs.commands += [f"server.conf: {server!r}", f"client.conf: {client!r}"]
        return Instance([lport], procs, {"gateway_port": gport})

    def probe(self, inst: Instance) -> dict:
        return tls_probe(inst.facts["gateway_port"], None)


class Sdm(Path):
    """sdm: `sdm-server serve` (control plane + gateway) and the `sdm` agent (client).

    Setup as an admin would do it, with the public CLI: a service account, one resource per
    tunnel and the grants (`sdm admin`); a postgres resource without stored credentials is
    created through the admin API, which the CLI does not offer. The job side is `sdm login`
    and `sdm connect`, whose agent process holds the session and the tunnels.
    """
    name = "sdm"
    label = "sdm (agent → gateway, TLS 1.3)"
    creds = False
    #: every kind carried as plain TCP: no protocol handling and no statement audit
    passthrough = False

    def start(self, target: Target, state: str) -> Instance:
        procs = Procs(state)
        d = os.path.join(state, "server")
        home = os.path.join(state, "home")
        token_file = os.path.join(state, "admin.token")
        api, gport = free_port(), free_port()
        server = procs.start("gateway", "sdm-server", [
            self.bins["sdm-server"], "serve", "--data-dir", d,
            "--listen", f"127.0.0.1:{api}", "--gateway-listen", f"127.0.0.1:{gport}",
            "--admin-token-file", token_file])
        wait_until("sdm-server ready",
                   lambda: os.path.exists(token_file) and listening(api) and listening(gport),
                   30, server.alive)
        with open(token_file) as f:
            admin = f.read().strip()
        env = clean_env()
        admin_env = {**env, "SDM_ADMIN_TOKEN": admin}
        sdm = self.bins["sdm"]
        service = run([sdm, "admin", "services", "create", "bench"], 30, env=admin_env).strip()
        names = [f"r{i}" for i in range(target.tunnels)]
        for name in names:
            if (target.kind == "tcp" or self.passthrough
                    or (target.kind == "mysql" and not self.creds)):
                # A mysql resource without stored credentials is passed through as it is.
                run([sdm, "admin", "servers", "add", "tcp", name, "--hostname", "127.0.0.1",
                     "--port", str(target.port)], 30, env=admin_env)
            elif self.creds:
                login = target.pg_login or {}
                run([sdm, "admin", "datasources", "add", target.kind, name,
                     "--hostname", "127.0.0.1", "--port", str(target.port),
                     "--database", login["database"], "--username", login["username"],
                     "--password-stdin"], 30, env=admin_env, input=login["password"] + "\n")
            else:
                api_post(f"https://127.0.0.1:{api}/v1/admin/resources", admin,
                         os.path.join(d, "ca.pem"),
                         {"name": name, "kind": "postgres", "hostname": "127.0.0.1",
                          "port": target.port})
            run([sdm, "admin", "grant", "bench", name], 30, env=admin_env)
        job_env = {**env, "SDM_HOME": home, "SDM_SERVICE_TOKEN": service}
        run([sdm, "login"], 40, env=job_env)
        with open(os.path.join(home, "agent.pid")) as f:
            agent = procs.adopt(int(f.read().strip()), "client", "sdm-agent")
        job_env.pop("SDM_SERVICE_TOKEN")
        if len(names) == 1:
            out = json.loads(run([sdm, "connect", names[0], "--json"], 40, env=job_env))
            tunnels = [out]
        else:
            out = json.loads(run([sdm, "connect", "--all", "--json"], 60, env=job_env))
            tunnels = out["tunnels"] if isinstance(out, dict) else out
        ports = sorted(int(t["port"]) for t in tunnels)
        if len(ports) != len(names):
            raise BenchError(f"sdm connect opened {len(ports)} tunnels, wanted {len(names)}")
        wait_until("sdm tunnels listening", lambda: all(listening(p) for p in ports), 15,
                   agent.alive)
        procs.commands += [
            "setup: sdm-server serve --data-dir DIR --listen 127.0.0.1:API "
            "--gateway-listen 127.0.0.1:GW --admin-token-file FILE",
            "setup: sdm admin services create bench; sdm admin servers add tcp|datasources add "
            "postgres NAME …; sdm admin grant bench NAME",
            "client: SDM_SERVICE_TOKEN=… sdm login; sdm connect NAME --json"]
        return Instance(ports, procs, {"gateway_port": gport, "home": home, "env": job_env,
                                      "service_token": service})

    def stop(self, inst: Instance) -> None:
        try:
            run([self.bins["sdm"], "logout"], 20, env=inst.facts["env"], check=False)
        except BenchError:
            pass
        inst.procs.stop()

    def probe(self, inst: Instance) -> dict:
        return tls_probe(inst.facts["gateway_port"], "sdm/1")


class SdmCreds(Sdm):
    """sdm with credentials stored at the resource: the gateway logs in to PostgreSQL itself."""
    name = "sdm_creds"
    label = "sdm, stored credentials (gateway logs in)"
    sections = "CG"
    creds = True


class SdmTcp(Sdm):
    """sdm with PostgreSQL carried as a tcp resource: the same tunnel without the gateway's
    PostgreSQL handling, so without the audit trail of every statement."""
    name = "sdm_tcp"
    label = "sdm, PostgreSQL as plain TCP (no statement audit)"
    sections = "C"
    passthrough = True


class Relay(Path):
    """Two plain TCP relays in a row (`sdm-load relay`: sdm's pump, one thread each), no TLS:
    not a peer but the floor of a tunnel with a hop on each side, so that each target can be
    read against what is left once the hops themselves are paid."""
    name = "relay"
    label = "2 plain relays (no TLS; floor)"
    sections = "ABCG"
    #: what joins the two relays: nothing, or TLS (`--tls-in` on the gateway side's relay,
    #: `--tls-out` on the client side's, with the state directory for the CA between them)
    tls = False

    def start(self, target: Target, state: str) -> Instance:
        procs = Procs(state)
        gport, lport = free_port(), free_port()
        load = self.bins["sdm-load"]
        bound = ["--seconds", str(4 * 3600)]  # outlives any run; stopped with the path
        tls_in, tls_out = (["--tls-in", state], ["--tls-out", state]) if self.tls else ([], [])
        gw = procs.start("gateway", f"{self.name}-server",
                         [load, "relay", "--listen", str(gport), "--to", str(target.port),
                          *tls_in, *bound])
        wait_until(f"{self.name} server listening", lambda: listening(gport), 10, gw.alive)
        cl = procs.start("client", f"{self.name}-client",
                         [load, "relay", "--listen", str(lport), "--to", str(gport),
                          *tls_out, *bound])
        wait_until(f"{self.name} client listening", lambda: listening(lport), 10, cl.alive)
        joined = " --tls-in|--tls-out DIR" if self.tls else ""
        procs.commands.append(f"sdm-load relay --listen PORT --to PORT{joined} (twice, chained)")
        return Instance([lport], procs, {"gateway_port": gport})


class TlsRelay(Relay):
    """The two relays of `relay` joined by TLS 1.3 with sdm's record layer (`sdm-load relay
    --tls-out/--tls-in`, sdm_proto's gateway configurations), still without lease, framing or
    audit: what sdm's records and cipher cost on their own, so that sdm can be read against the
    floor of an encrypted tunnel as well as of a plain one."""
    name = "tls_relay"
    label = "2 relays joined by sdm's TLS records (encrypted floor)"
    sections = "ABC"
    tls = True


ALL = [Direct, SshAesGcm, Stunnel, Sdm, SdmCreds, SdmTcp, Relay, TlsRelay]


def clean_env() -> dict:
    """The environment without sdm settings of whoever runs the bench, except the two a run may
    set on purpose: SDM_LOG, and SDM_RUNTIME_THREADS for section H's in-process jobs."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("SDM_") or k in ("SDM_LOG", "SDM_RUNTIME_THREADS")}


def api_post(url: str, token: str, cafile: str, body: dict) -> dict:
    ctx = ssl.create_default_context(cafile=cafile)
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=20) as r:
            return json.loads(r.read() or b"{}")
    except OSError as e:
        raise BenchError(f"POST {url}: {e}") from e


def tls_probe(port: int, alpn: Optional[str]) -> dict:
    """The TLS version and cipher suite a gateway negotiates with OpenSSL's client."""
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief"]
    if alpn:
        argv += ["-alpn", alpn]
    try:
        r = subprocess.run(argv, input="", capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    facts = {}
    for line in (r.stdout + r.stderr).splitlines():
        for key, prefix in (("tls", "Protocol version:"), ("ciphersuite", "Ciphersuite:"),
                            ("kx", "Peer Temp Key:")):
            if line.startswith(prefix):
                facts[key] = line[len(prefix):].strip()
    return facts
