"""``SdmHook``: a ``DbApiHook`` whose connections reach PostgreSQL through sdm.

The Airflow connection (type ``sdm``) holds the service account token in its password field, the
resource name in host, the database in schema, an optional database user in login, and in extra
(JSON) optional ``labels`` (``{"team": "data"}``) and ``api_url``. The worker never holds a
database password: the gateway logs in with the credentials stored on the resource.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import sdm
from airflow.providers.common.sql.hooks.sql import DbApiHook

__all__ = ["SdmHook"]


def task_labels() -> Dict[str, str]:
    """The audit labels of the running task (dag_id, task_id, run_id, try_number); empty
    outside a task."""
    try:
        from airflow.sdk import get_current_context

        context = get_current_context()
    except Exception:  # no task runs in this process (the UI's "Test", a script)
        return {}
    labels: Dict[str, str] = {}
    ti = context.get("ti") or context.get("task_instance")
    for key, value in (
        ("dag_id", getattr(ti, "dag_id", None)),
        ("task_id", getattr(ti, "task_id", None)),
        ("run_id", context.get("run_id")),
        ("try_number", getattr(ti, "try_number", None)),
    ):
        if value is not None:
            labels[key] = str(value)
    return labels


class SdmHook(DbApiHook):
    """Runs SQL through sdm: ``SQLExecuteQueryOperator(conn_id=…)``, ``get_records``,
    ``get_pandas_df``/``get_df``, ``run``, ``insert_rows`` and ``get_sqlalchemy_engine()``.

    Each ``get_conn()`` is a psycopg connection with a tunnel of its own, closed with it; the
    SQLAlchemy engine's pool shares one tunnel (``sdm.Session.creator``). The hook logs in once
    per process, with the task's dag_id, task_id, run_id and try_number as audit labels (plus
    the connection's ``labels``). A missing or wrong token, or a resource name that matches
    nothing or several resources, raises the ``sdm.Error`` subclass with its message.
    """

    conn_name_attr = "sdm_conn_id"
    default_conn_name = "sdm_default"
    conn_type = "sdm"
    hook_name = "sdm"
    supports_autocommit = True
    supports_executemany = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._schema: Optional[str] = kwargs.get("schema")
        self._sdm_session: Optional[sdm.Session] = None
        self._sdm_pid = 0

    @classmethod
    def get_ui_field_behaviour(cls) -> Dict[str, Any]:
        """The connection form of the Airflow UI."""
        return {
            "hidden_fields": ["port"],
            "relabeling": {
                "host": "Resource",
                "schema": "Database",
                "login": "Database user (optional)",
                "password": "Service account token",
            },
            "placeholders": {
                "host": "pgsql (a resource name, or a unique part of one)",
                "schema": "app",
                "password": "sdm_svc_…",
                "extra": '{"labels": {"team": "data"}, "api_url": "https://sdm.example:8443"}',
            },
        }

    # --- sdm ---------------------------------------------------------------------------------

    @property
    def resource(self) -> str:
        """The resource name of the connection (its host field)."""
        resource = self.connection.host
        if not resource:
            raise sdm.InvalidArgumentError(
                f"the Airflow connection {self.get_conn_id()!r} names no resource: put the sdm "
                "resource name in its host field"
            )
        return str(resource)

    @property
    def database(self) -> Optional[str]:
        """The database: the hook's ``schema`` argument, else the connection's schema field."""
        return self._schema or self.connection.schema or None

    def sdm_session(self) -> sdm.Session:
        """The hook's sdm session in this process (logged in on first use)."""
        if self._sdm_session is None or self._sdm_pid != os.getpid():
            conn = self.connection
            if not conn.password:
                raise sdm.InvalidTokenError(
                    f"the Airflow connection {self.get_conn_id()!r} has no token: put the sdm "
                    "service account token in its password field"
                )
            extra = conn.extra_dejson
            labels = {str(k): str(v) for k, v in dict(extra.get("labels") or {}).items()}
            labels.update(task_labels())
            self._sdm_session = sdm.login(conn.password, api_url=extra.get("api_url"), labels=labels)
            self._sdm_pid = os.getpid()
        return self._sdm_session

    def _driver_args(self) -> Dict[str, Any]:
        args: Dict[str, Any] = {"dbname": self.database}
        if self.connection.login:
            args["user"] = self.connection.login
        return args

    # --- DbApiHook -----------------------------------------------------------------------------

    def get_conn(self) -> Any:
        """A psycopg connection through its own tunnel; closing it closes the tunnel."""
        return self.sdm_session().connect_db(self.resource, "psycopg", **self._driver_args())

    @property
    def sqlalchemy_url(self) -> Any:
        from sqlalchemy.engine import URL

        return URL.create("postgresql+psycopg", database=self.database)

    def get_sqlalchemy_engine(self, engine_kwargs: Optional[Dict[str, Any]] = None) -> Any:
        """A SQLAlchemy engine whose pool's connections share one sdm tunnel."""
        from sqlalchemy import create_engine

        creator = self.sdm_session().creator(self.resource, "psycopg", **self._driver_args())
        kwargs = {"pool_pre_ping": True, **(engine_kwargs or {})}
        return create_engine("postgresql+psycopg://", creator=creator, **kwargs)

    def get_uri(self) -> str:
        """The SQLAlchemy URL without credentials (the token never appears in a URI)."""
        return str(self.sqlalchemy_url)
