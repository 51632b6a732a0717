"""What Airflow's ProvidersManager reads through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any, Dict


def get_provider_info() -> Dict[str, Any]:
    return {
        "package-name": "sdm-tunnel-airflow",
        "name": "sdm",
        "description": "Service-account tunnels to databases: the connection type `sdm` and "
        "`SdmHook`, a DbApiHook for SQLExecuteQueryOperator.",
        "integrations": [
            {
                "integration-name": "sdm",
                "external-doc-url": "https://github.com/sdm-dev/sdm",
                "tags": ["software"],
            }
        ],
        "hooks": [{"integration-name": "sdm", "python-modules": ["sdm_airflow.hooks"]}],
        "connection-types": [
            {
                "hook-class-name": "sdm_airflow.hooks.SdmHook",
                "connection-type": "sdm",
                "hook-name": "sdm",
            }
        ],
    }
