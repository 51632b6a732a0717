"""The Airflow provider of sdm: the connection type ``sdm`` and ``SdmHook``.

    from sdm_airflow import SdmHook
    SQLExecuteQueryOperator(task_id="load", conn_id="warehouse", sql="…")   # conn type sdm
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .hooks import SdmHook

__all__ = ["SdmHook"]


def __getattr__(name: str) -> object:
    # SdmHook imports Airflow; get_provider_info (this package too) must not.
    if name == "SdmHook":
        from .hooks import SdmHook

        return SdmHook
    raise AttributeError(name)
