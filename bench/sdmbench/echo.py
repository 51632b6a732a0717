"""Echo server on 127.0.0.1 (the upstream of sections B and D). Run as a script:

    python3 echo.py PORT MAX_SECONDS

Stops by itself after MAX_SECONDS, or on SIGTERM.
"""

import asyncio
import signal
import sys


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def main(port: int, max_seconds: float) -> None:
    server = await asyncio.start_server(echo, "127.0.0.1", port, backlog=2048, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), max_seconds)
    except asyncio.TimeoutError:
        pass
    server.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
