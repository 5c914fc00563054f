"""Per-host limits over several worker processes: the load one host sees when its URLs are split over k shards
fetched at the same moment by k processes, with the plan's share (each shard gets 1/k) and without it.

    python bench/bench_host_share.py [--rate 50] [--concurrency 8] [--urls 25] [--runs 3]

One loopback aiohttp server stands for the host and records every request's arrival and the requests in flight
(each held 50 ms, so concurrency shows). k separate processes (spawned, as the multi-process runner's workers)
each run a real pipeline.fetch.Fetcher over their own --urls URLs of the host. Reported per k, median of --runs:
the host's aggregate rate (requests over the span plus one share interval) under --max-host-rate, and the most
requests in flight under --per-host-concurrency (run without a rate). No peer tool: img2dataset has no per-host
limit at all (its load on a host is processes x threads).
"""

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


class Host:
    """The loopback server, in a thread of this process."""

    def __init__(self):
        self.arrivals, self.in_flight, self.max_in_flight = [], 0, 0
        self.ready = threading.Event()
        threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True).start()
        self.ready.wait()

    async def _serve(self):
        from aiohttp import web

        from tests.fetch_helpers import jpeg_bytes

        body = jpeg_bytes()

        async def handler(request):
            loop = asyncio.get_running_loop()
            self.arrivals.append(loop.time())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(0.05)
                return web.Response(body=body)
            finally:
                self.in_flight -= 1

        app = web.Application()
        app.router.add_get("/{name}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.base = "http://127.0.0.1:%d" % runner.addresses[0][1]
        self.ready.set()
        await asyncio.Event().wait()

    def reset(self):
        self.arrivals, self.max_in_flight = [], 0


def shard_worker(base, shard, urls, share, rate, concurrency, start):
    from pipeline.fetch import Fetcher, FetchOptions

    async def main():
        options = FetchOptions(allow_private_addresses=True, respect_robots=False, max_host_rate=rate,
                               per_host_concurrency=concurrency, max_concurrency=64)
        async with Fetcher(options, host_shards={"127.0.0.1": share}) as fetcher:
            results = await asyncio.gather(*(fetcher.fetch(f"{base}/{shard}-{i}.jpg") for i in range(urls)))
        assert all(r.reason is None for r in results), [r.reason for r in results if r.reason][:3]

    start.wait()
    asyncio.run(main())


def run(host, k, share, rate, concurrency, urls):
    """k processes at once, each told the host was split into `share` shards -> (rate, most in flight)."""
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=shard_worker, args=(host.base, s, urls, share, rate, concurrency, start))
             for s in range(k)]
    for p in procs:
        p.start()
    host.reset()
    start.set()  # all shards start together: the worst case for the host
    for p in procs:
        p.join()
        assert p.exitcode == 0
    span = max(host.arrivals) - min(host.arrivals)
    interval = share / rate if rate else 0.0
    return len(host.arrivals) / (span + interval), host.max_in_flight


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=50.0, help="--max-host-rate")
    p.add_argument("--concurrency", type=int, default=8, help="--per-host-concurrency")
    p.add_argument("--urls", type=int, default=25, help="URLs per shard")
    p.add_argument("--shards", default="1,2,4,8", help="values of k")
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    host = Host()
    print(f"--max-host-rate {a.rate:g}, --per-host-concurrency {a.concurrency}, {a.urls} URLs per shard, "
          f"{os.cpu_count()} cores, median of {a.runs}")
    print("| k shards at once | host rate, shared (req/s) | host rate, not shared | most in flight, shared "
          "| most in flight, not shared |")
    print("|---|---|---|---|---|")
    for k in map(int, a.shards.split(",")):
        row = []
        for share in (k, 1):
            row.append(statistics.median(run(host, k, share, a.rate, a.concurrency, a.urls)[0]
                                         for _ in range(a.runs)))
        for share in (k, 1):
            row.append(statistics.median(run(host, k, share, 0.0, a.concurrency, a.urls)[1]
                                         for _ in range(a.runs)))
        print(f"| {k} | {row[0]:.1f} | {row[1]:.1f} | {row[2]} | {row[3]} |")


if __name__ == "__main__":
    main()
