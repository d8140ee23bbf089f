#!/usr/bin/env python3
"""S2 client: holds N concurrent SSE streams open against one API instance and measures, for every
event received, commit -> event latency (the event's payload carries the sender's clock_timestamp()
as "sent", seconds since the epoch; same machine, same clock).

usage: client.py HOST PORT KEY STREAMS READY_FILE
Stream i (0-based) is /events/stream/bench_sse_<i+1>. When every stream has answered 200 the client
writes READY_FILE; on SIGTERM it prints one line
  SSE streams=N opened_s=.. events=.. p50_ms=.. p99_ms=.. max_ms=.. errors=..
and exits."""
import asyncio
import json
import signal
import sys
import time

HOST, PORT, KEY, STREAMS, READY = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
latencies = []
errors = 0


async def stream(index, opened):
    global errors
    try:
        reader, writer = await asyncio.open_connection(HOST, PORT)
        writer.write(
            (f"GET /events/stream/bench_sse_{index + 1} HTTP/1.1\r\nHost: {HOST}\r\n"
             f"Authorization: Bearer {KEY}\r\nAccept: text/event-stream\r\n\r\n").encode())
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"stream {index}: {status!r}")
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        opened.release()
        while True:
            line = await reader.readline()
            if not line:
                raise RuntimeError(f"stream {index} closed")
            # chunked framing lines (sizes, blanks) are skipped; data lines carry the payload
            if line.startswith(b"data:"):
                received = time.time()
                try:
                    sent = json.loads(line[5:].strip())["sent"]
                except (ValueError, KeyError, TypeError):
                    continue
                latencies.append((received - float(sent)) * 1000)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # noqa: BLE001 - counted and reported
        errors += 1
        if errors <= 3:
            print(f"stream error: {error}", file=sys.stderr)
        opened.release()


def percentile(values, fraction):
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * fraction) - 1))]


async def main():
    opened = asyncio.Semaphore(0)
    start = time.time()
    tasks = []
    for index in range(STREAMS):
        tasks.append(asyncio.create_task(stream(index, opened)))
        if index % 200 == 199:
            await asyncio.sleep(0.05)
    for _ in range(STREAMS):
        await opened.acquire()
    opened_s = time.time() - start
    with open(READY, "w") as ready:
        ready.write(f"{opened_s:.1f}\n")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    print(f"SSE streams={STREAMS} opened_s={opened_s:.1f} events={len(latencies)} "
          f"p50_ms={percentile(latencies, 0.50):.1f} p99_ms={percentile(latencies, 0.99):.1f} "
          f"max_ms={max(latencies, default=0):.1f} errors={errors}", flush=True)
    for task in tasks:
        task.cancel()


asyncio.run(main())
