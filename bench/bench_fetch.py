"""Fetch -> resize -> write throughput: OpenWIT's shard writer against img2dataset 1.47, on the same local web.

    python bench/bench_fetch.py [--urls 10000] [--runs 3]

Serves a few hundred varied photo-like JPEGs (300-1600 px, ~120 KiB) with nginx on 127.0.0.1 under --urls
distinct URL paths, then downloads the list with both tools, each in a fresh process, with the same image
size (256), resize mode (border), encoding (jpg, quality 95) and core count, and reports images/s (median of
--runs) and the ratio. OpenWIT runs its real shard path, pipeline/write_shards.ShardBuilder.build (fetch,
decode/resize, sha256 + pHash, tar + parquet + stats). img2dataset runs from its own venv:

    python3.11 -m venv bench/work/i2d-venv && bench/work/i2d-venv/bin/pip install img2dataset==1.47.0
    apt-get install nginx-light
"""

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, "work", "fetch")
I2D_PYTHON = os.path.join(HERE, "work", "i2d-venv", "bin", "python")


def run_openwit(urls_file: str, out: str, samples_per_shard: int, threads: int, processes: int) -> dict:
    """One OpenWIT run in this process: the real ShardBuilder over shards of the URL list."""
    sys.path.insert(0, ROOT)
    from pipeline.fetch import FetchOptions
    from pipeline.resize import ImageOptions
    from pipeline.write_shards import ShardBuilder, ShardConfig

    with open(urls_file) as f:
        urls = f.read().split()
    config = ShardConfig(output=out, fetch=FetchOptions(allow_private_addresses=True, timeout_s=10, retries=0),
                         image=ImageOptions(image_size=256, resize_mode="border", encode_format="jpg",
                                            encode_quality=95), threads=threads, processes=processes)
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    builder = ShardBuilder(config)
    successes = 0
    for shard, start in enumerate(range(0, len(urls), samples_per_shard)):
        candidates = [{"url": u, "caption": "a benchmark photo", "queries": [0], "page_url": "", "index": i,
                       "key": f"{shard:05d}{i:04d}"} for i, u in enumerate(urls[start:start + samples_per_shard])]
        successes += builder.build(shard, candidates)["successes"]
    builder.close()
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": time.perf_counter() - started, "successes": successes, "peak_rss_mib": peak_rss_mib,
            "cpu_seconds": cpu_seconds() - cpu_before}


def cpu_seconds() -> float:
    """This process's and its finished children's (the sample processes, once closed)."""
    return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                        resource.RUSAGE_CHILDREN)))


def timed_subprocess(cmd: list[str]) -> dict:
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--urls", type=int, default=10000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--images", type=int, default=300, help="distinct image files behind the URLs")
    p.add_argument("--samples-per-shard", type=int, default=10000, help="OpenWIT shard size (its default)")
    p.add_argument("--threads", type=int, default=0, help="OpenWIT decode threads (0: cores + 1)")
    p.add_argument("--sample-processes", type=int, default=os.cpu_count() or 1,
                   help="OpenWIT sample processes (default: one per core, as a local build; 0: threads)")
    p.add_argument("--i2d-processes", type=int, default=2)
    p.add_argument("--i2d-threads", type=int, default=64)
    p.add_argument("--only", choices=["openwit", "img2dataset"])
    p.add_argument("--one-openwit", nargs=2, metavar=("URLS_FILE", "OUT"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one_openwit:  # a child process: one timed OpenWIT run
        print(json.dumps(run_openwit(*a.one_openwit, a.samples_per_shard, a.threads, a.sample_processes)))
        return

    sys.path.insert(0, HERE)
    from fetch_site import Nginx, make_images

    names = make_images(os.path.join(WORK, "images"), a.images)
    with Nginx(os.path.join(WORK, "images"), os.path.join(WORK, "nginx")) as base:
        urls_file = os.path.join(WORK, "urls.txt")
        with open(urls_file, "w") as f:
            f.writelines(f"{base}/i/{n}/{names[n % len(names)]}\n" for n in range(a.urls))
        tools = {
            "openwit": [sys.executable, __file__, "--one-openwit", urls_file, "{out}",
                        "--samples-per-shard", str(a.samples_per_shard), "--threads", str(a.threads),
                        "--sample-processes", str(a.sample_processes)],
            "img2dataset": [I2D_PYTHON, os.path.join(HERE, "i2d_run.py"), "--urls", urls_file, "--out", "{out}",
                            "--processes", str(a.i2d_processes), "--threads", str(a.i2d_threads)],
        }
        if a.only:
            tools = {a.only: tools[a.only]}
        figures = {name: [] for name in tools}
        for run in range(a.runs):
            for name, cmd in tools.items():  # interleaved, so drift on the shared machine hits both alike
                out = os.path.join(WORK, f"out-{name}")
                shutil.rmtree(out, ignore_errors=True)
                r = timed_subprocess([c.replace("{out}", out) for c in cmd])
                figures[name].append(r)
                rss = f", peak RSS {r['peak_rss_mib']:.0f} MiB" if "peak_rss_mib" in r else ""
                print(f"run {run + 1} {name}: {r['successes']} images in {r['seconds']:.1f}s = "
                      f"{r['successes'] / r['seconds']:.0f} img/s, {1000 * r['cpu_seconds'] / r['successes']:.1f} "
                      f"CPU-ms/img{rss}", flush=True)

    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), "?")
    print(f"\nmachine: {os.cpu_count()} cores, {cpu}, {platform.python_implementation()} {platform.python_version()}")
    rates, costs = {}, {}
    for name, runs in figures.items():
        each = [r["successes"] / r["seconds"] for r in runs]
        rates[name] = statistics.median(each)
        costs[name] = statistics.median(1000 * r["cpu_seconds"] / r["successes"] for r in runs)
        print(f"{name}: median {rates[name]:.0f} img/s over {len(runs)} runs ({', '.join(f'{x:.0f}' for x in each)}); "
              f"median {costs[name]:.1f} CPU-ms per image")
    if len(rates) == 2:
        # On a shared machine the wall-clock ratio also measures how the scheduler split the cores;
        # CPU time per image is what the same work costs, so it is reported beside it.
        print(f"ratio openwit / img2dataset: {rates['openwit'] / rates['img2dataset']:.2f}x images/s, "
              f"{costs['img2dataset'] / costs['openwit']:.2f}x less CPU per image")


if __name__ == "__main__":
    main()
