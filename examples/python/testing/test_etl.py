"""Tests of examples/python/etl.py through a real sdm installation (sdm.testing)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import sdm
from sdm.testing import Installation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import etl  # noqa: E402  (examples/python/etl.py, the job under test)


def test_run_summarises_three_days(sdm_token: str, sdm_installation: Installation) -> None:
    with sdm.login(sdm_token) as session:
        assert etl.run(session, "pgsql", sdm_installation.dbname or "postgres") == 3


def test_main_reads_the_token_from_the_environment(
    sdm_token: str,
    sdm_installation: Installation,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SDM_SERVICE_TOKEN", sdm_token)
    monkeypatch.delenv("SDM_ADMIN_TOKEN", raising=False)
    assert etl.main(["--dbname", sdm_installation.dbname or "postgres"]) == 0
    assert capsys.readouterr().out == "etl: summarised 3 days\n"
