"""AsyncSession: coroutines usable from any loop and thread; cancellation reaches the core."""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
from typing import Any, Dict, List

import pytest

import sdm
from conftest import Fixture, SilentServer


def test_methods_are_coroutines_that_return_results(fixture: Fixture) -> None:
    async def main() -> None:
        pending = sdm.AsyncSession.login(fixture["token"])
        assert inspect.iscoroutine(pending)
        s = await pending
        assert isinstance(s, sdm.AsyncSession)
        call = s.list_resources()
        assert inspect.iscoroutine(call)
        resources = await call
        assert [r.name for r in resources] == fixture["granted"]
        status = await s.status()
        assert isinstance(status, sdm.Status) and "pgsql_1_31" in str(status)
        t = await s.connect("server-echo")
        assert isinstance(t, sdm.Tunnel) and t.is_open
        reader, writer = await asyncio.open_connection(*t.address)
        writer.write(b"async echo")
        assert await reader.readexactly(10) == b"async echo"
        writer.close()
        await s.disconnect("server-echo")
        assert not t.is_open
        sock = await s.dial("server-echo")
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"dialled")
        assert await reader.readexactly(7) == b"dialled"
        writer.close()
        with pytest.raises(sdm.AmbiguousResourceError):
            await s.connect("echo")
        await s.logout()
        with pytest.raises(sdm.ClosedError):
            await s.list_resources()

    asyncio.run(main())


def test_one_session_on_several_loops_and_threads(fixture: Fixture) -> None:
    session = asyncio.run(sdm.AsyncSession.login(fixture["token"]))
    # Used again from a new loop in this thread…
    assert len(asyncio.run(session.list_resources())) == 3
    # …and from four threads, each running its own loop, at once.
    barrier = threading.Barrier(4, timeout=60)
    results: List[Any] = []

    def in_thread(i: int) -> None:
        async def main() -> int:
            await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
            async with await session.connect("server-echo") as t:
                reader, writer = await asyncio.open_connection(*t.address)
                writer.write(bytes([i]))
                got = await reader.readexactly(1)
                writer.close()
                return got[0]

        try:
            results.append(asyncio.run(main()))
        except BaseException as e:  # reported below
            results.append(e)

    threads = [threading.Thread(target=in_thread, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert sorted(results) == [0, 1, 2, 3], results
    asyncio.run(session.close())


def test_cancelling_the_task_cancels_the_call(fixture: Fixture, silent_server: SilentServer) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(
            sdm.AsyncSession.login(fixture["token"], api_url=silent_server.url, timeout=300)
        )
        assert await loop.run_in_executor(None, silent_server.accepted.wait, 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The core dropped its connection to the silent API: the call really stopped.
        assert await loop.run_in_executor(None, silent_server.wait_client_gone, 60)

    asyncio.run(main())


def test_asyncio_wait_for_times_out_the_call(fixture: Fixture, silent_server: SilentServer) -> None:
    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(
                sdm.AsyncSession.login(fixture["token"], api_url=silent_server.url, timeout=300),
                timeout=0.5,
            )

    asyncio.run(main())


def test_errors_arrive_as_sdm_exceptions(fixture: Fixture) -> None:
    async def main() -> None:
        with pytest.raises(sdm.UnauthenticatedError):
            await sdm.AsyncSession.login(fixture["unknown_token"])
        with pytest.raises(sdm.ApiUnreachableError):
            await sdm.AsyncSession.login(fixture["unreachable_token"], timeout=10)
        s = await sdm.AsyncSession.login(fixture["token"])
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            with pytest.raises(sdm.PortInUseError):
                await s.connect("server-echo", port=busy.getsockname()[1])
        with pytest.raises(sdm.ResourceNotFoundError):
            await s.dial("nothing-like-this")
        await s.close()

    asyncio.run(main())


def test_calling_without_a_running_loop_is_a_clear_error(fixture: Fixture) -> None:
    raw = sdm._native.RawSession.login(fixture["token"], None, None, None, None)
    with pytest.raises(RuntimeError, match="no running event loop"):
        raw.list_resources_async()


def test_a_loop_closed_before_the_result_arrives_is_harmless(
    fixture: Fixture, pg: Dict[str, Any]
) -> None:
    # The result of a call whose loop is gone is dropped; later calls still work.
    session = asyncio.run(sdm.AsyncSession.login(fixture["token"]))

    async def abandon() -> None:
        asyncio.ensure_future(session.connect("server-echo"))

    asyncio.run(abandon())  # closes the loop with the call in flight
    assert len(asyncio.run(session.list_resources())) == 3
    asyncio.run(session.close())
