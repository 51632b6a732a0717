"""The released artefacts, installed the way a user installs them, with no Rust toolchain on
PATH (scripts/suites/40-release.sh)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import DIST, PREFIX, ROOT

import sdm
from sdm.testing import Installation


def test_no_rust_toolchain_is_on_path() -> None:
    assert shutil.which("cargo") is None and shutil.which("rustc") is None


def test_sdm_comes_from_the_wheel_in_this_venv() -> None:
    assert Path(sdm.__file__).is_relative_to(Path(sys.prefix))
    wheel = next(DIST.glob("sdm_tunnel-*.whl"))
    assert wheel.name == f"sdm_tunnel-{sdm.__version__}-cp39-abi3-manylinux_2_34_x86_64.whl"


def test_checksums_cover_every_artefact() -> None:
    done = subprocess.run(
        ["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=DIST, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    listed = sorted(line.split()[1] for line in (DIST / "SHA256SUMS").read_text().splitlines())
    version = sdm.__version__
    assert listed == sorted(
        [
            f"sdm-{version}-x86_64-linux-gnu.tar.gz",
            f"sdm_tunnel-{version}-cp39-abi3-manylinux_2_34_x86_64.whl",
            f"sdm_tunnel-{version}.tar.gz",
            f"sdm_tunnel_airflow-{version}-py3-none-any.whl",
        ]
    )


def test_a_job_runs_with_the_tarball_binaries(installation: Installation) -> None:
    assert os.environ["SDM_SERVER_BIN"] == str(PREFIX / "bin" / "sdm-server")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SDM_", "PG"))}
    env["SDM_SERVICE_TOKEN"] = installation.new_token()
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "python" / "etl.py"), "--dbname", "postgres"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "etl: summarised 3 days\n"


C_PROGRAM = """
#include <stdio.h>
#include <sdm.h>
int main(void) { printf("libsdm %s\\n", sdm_version()); return 0; }
"""


def test_a_c_program_builds_with_the_tarball_pkg_config(tmp_path: Path) -> None:
    source = tmp_path / "version.c"
    source.write_text(C_PROGRAM)
    env = dict(os.environ, PKG_CONFIG_PATH=str(PREFIX / "lib" / "pkgconfig"))
    flags = subprocess.run(
        ["pkg-config", "--cflags", "--libs", "sdm"], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert f"-I{PREFIX}/lib/pkgconfig/../../include" in flags
    program = tmp_path / "version"
    subprocess.run(["cc", str(source), "-o", str(program), *flags], check=True, timeout=120)
    done = subprocess.run(
        [str(program)],
        env=dict(env, LD_LIBRARY_PATH=str(PREFIX / "lib")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"libsdm {sdm.__version__}\n"
