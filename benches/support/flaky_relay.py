#!/usr/bin/env python3
"""A TCP relay that fails now and then (benches/soak.sh only; not a test peer).

    flaky_relay.py LISTEN_PORT TARGET_PORT [MEAN_MIB]

Relays 127.0.0.1:LISTEN_PORT to 127.0.0.1:TARGET_PORT. Every connection is reset (RST) after a
random number of upstream bytes, exponentially distributed with a mean of MEAN_MIB (default 64):
a reset in the middle of a body about once per MEAN_MIB relayed, whether or not the client keeps
its connections alive — the upstream failure a proxy must survive without keeping bad bytes or
leaking state. Prints how many connections it cut on SIGTERM.
"""

import asyncio
import random
import signal
import sys

DROPPED = 0


async def pipe(reader, writer, budget):
    """Copies until EOF; `budget` (bytes) cuts the copy early, None = no cut. Returns True if cut."""
    try:
        while True:
            data = await reader.read(256 * 1024)
            if not data:
                break
            if budget is not None:
                if len(data) >= budget:
                    writer.write(data[:budget])
                    await writer.drain()
                    return True
                budget -= len(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    return False


async def handle(cr, cw, target, drop):
    global DROPPED
    try:
        ur, uw = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        cw.close()
        return
    cut = max(1, int(random.expovariate(1.0 / (drop * (1 << 20)))))
    up = asyncio.ensure_future(pipe(cr, uw, None))
    down = asyncio.ensure_future(pipe(ur, cw, cut))
    done, pending = await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
    if down in done and down.result():
        DROPPED += 1
        # An abortive close (RST), as a crashed upstream or middlebox gives.
        sock = cw.get_extra_info("socket")
        if sock is not None:
            import socket
            import struct

            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    for t in pending:
        t.cancel()
    for w in (cw, uw):
        try:
            w.close()
        except OSError:
            pass


async def main():
    listen, target = int(sys.argv[1]), int(sys.argv[2])
    drop = float(sys.argv[3]) if len(sys.argv) > 3 else 64.0
    server = await asyncio.start_server(lambda r, w: handle(r, w, target, drop), "127.0.0.1", listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()
    print(f"dropped {DROPPED}", flush=True)


asyncio.run(main())
