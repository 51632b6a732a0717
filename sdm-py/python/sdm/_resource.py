"""Typed, frozen values: ``Resource``, ``ResourceStatus``, ``Status``."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Dict, Mapping, Optional, Tuple

__all__ = ["Resource", "ResourceStatus", "Status"]

# What the native module returns for a resource: (id, name, kind, tags, port, healthy,
# ssh_host_key).
_RawResource = Tuple[str, str, str, Dict[str, str], Optional[int], bool, Optional[str]]


@dataclass(frozen=True, repr=False)
class Resource:
    """A resource granted to the session's account.

    Attributes:
        id: the resource's id (a UUID as text).
        name: its unique name, e.g. ``"pgsql_1_31"``.
        kind: what it speaks: ``"postgres"``, ``"mysql"``, ``"redis"``, ``"ssh"``, ``"tcp"``, or
            a newer kind's name.
        tags: free-form tags (read-only).
        port: the local port its tunnels listen on when an admin fixed one, else ``None``.
        healthy: whether a live gateway serves it.
        ssh_host_key: for an ssh resource, the host key the gateway presents
            (``"ssh-ed25519 AAAA…"``), the same on every gateway: pin it for the tunnel's
            address (paramiko: ``client.get_host_keys().add(...)``); ``None`` for other kinds.
    """

    id: str
    name: str
    kind: str
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    port: Optional[int] = None
    healthy: bool = True
    ssh_host_key: Optional[str] = None

    def __post_init__(self) -> None:
        # Frozen all the way down: a read-only copy of the tags.
        object.__setattr__(self, "tags", MappingProxyType(dict(self.tags)))

    def __hash__(self) -> int:
        return hash((self.id, self.name))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Resource):
            return NotImplemented
        return self._fields() == other._fields()

    def _fields(self) -> tuple[object, ...]:
        return (
            self.id,
            self.name,
            self.kind,
            dict(self.tags),
            self.port,
            self.healthy,
            self.ssh_host_key,
        )

    def __repr__(self) -> str:
        parts = [f"name={self.name!r}", f"kind={self.kind!r}"]
        if self.port is not None:
            parts.append(f"port={self.port}")
        parts.append(f"healthy={self.healthy}")
        if self.tags:
            parts.append(f"tags={dict(self.tags)!r}")
        parts.append(f"id={self.id!r}")
        return f"Resource({', '.join(parts)})"

    def __reduce__(self) -> tuple[object, ...]:
        return (Resource, self._fields())

    @classmethod
    def _from_raw(cls, raw: _RawResource) -> Resource:
        id_, name, kind, tags, port, healthy, ssh_host_key = raw
        return cls(
            id=id_,
            name=name,
            kind=kind,
            tags=tags,
            port=port,
            healthy=healthy,
            ssh_host_key=ssh_host_key,
        )


@dataclass(frozen=True)
class ResourceStatus:
    """One row of ``Session.status()``.

    Attributes:
        resource: the resource.
        connected: whether this session has a tunnel open to it.
        address: ``(host, port)`` of the open TCP tunnel, else ``None``.
        connections: local connections the tunnel carries now.
        port: the tunnel's TCP port when connected, else the resource's fixed port (or
            ``None``).
        unix_socket: the socket path of an open Unix-socket tunnel, else ``None``.
    """

    resource: Resource
    connected: bool
    address: Optional[Tuple[str, int]]
    connections: int
    port: Optional[int]
    unix_socket: Optional[str] = None


@dataclass(frozen=True)
class Status:
    """What ``sdm status`` shows, as data; ``str(status)`` is the table.

    Attributes:
        account: the account's name.
        resources: every granted resource with its connection state, sorted by name.
        table: the status table as ``sdm status`` prints it.
        unreachable: set when the control plane could not be asked: what happened, in one
            line (the rows are then what the session last knew, and its open tunnels keep
            working on their current leases); else ``None``.
        leases_hold_for: with ``unreachable``, the seconds the open tunnels' current leases
            still hold (the shortest), or ``None`` when no tunnel is open.
    """

    account: str
    resources: Tuple[ResourceStatus, ...]
    table: str = field(repr=False)
    unreachable: Optional[str] = None
    leases_hold_for: Optional[float] = None

    def __str__(self) -> str:
        return self.table

    @classmethod
    def _from_raw(
        cls,
        raw: Tuple[
            str,
            list[
                Tuple[
                    _RawResource,
                    bool,
                    Optional[Tuple[str, int]],
                    int,
                    Optional[int],
                    Optional[str],
                ]
            ],
            str,
            Optional[Tuple[str, Optional[float]]],
        ],
    ) -> Status:
        account, rows, table, unreachable = raw
        return cls(
            account=account,
            resources=tuple(
                ResourceStatus(
                    resource=Resource._from_raw(r),
                    connected=connected,
                    address=address,
                    connections=connections,
                    port=port,
                    unix_socket=unix_socket,
                )
                for r, connected, address, connections, port, unix_socket in rows
            ),
            table=table,
            unreachable=unreachable[0] if unreachable else None,
            leases_hold_for=unreachable[1] if unreachable else None,
        )
