"""End to end: the whole `openwit build` command against the whole `img2dataset` command, on the same local web.

    python bench/bench_build.py [--urls 10000] [--runs 3]
    python bench/bench_build.py --memory 2000,20000 --only openwit     # peak RSS per worker as input grows
    python bench/bench_build.py --baseline DIR   # also another OpenWIT source tree (git archive REV | tar -x -C DIR)

Each tool runs as its own command in a fresh process, start-up included, with every core (OpenWIT: its
default, a worker process per two cores, sample processes (pipeline/sample_processes.py) one per core; img2dataset:
--processes_count = cores, 64 threads each), the same input (a Parquet table of url + caption), image size
256, resize mode border, jpg quality 95, 10 s timeout, no retries, 1,000 samples per shard. The web is
bench_fetch.py's: a few hundred photo-like JPEGs served by nginx on 127.0.0.1 under distinct URLs. CPU is
user + system time of the command and every process it waited for; peak RSS is the largest of those processes'
(a worker's). img2dataset runs from its own venv:

    python3.11 -m venv bench/work/i2d-venv && bench/work/i2d-venv/bin/pip install img2dataset==1.47.0
    apt-get install nginx-light
"""

import argparse
import glob
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, "work", "build")
I2D = os.path.join(HERE, "work", "i2d-venv", "bin", "img2dataset")
OPENWIT = os.path.join(os.path.dirname(sys.executable), "openwit")
# img2dataset's albumentations asks the network for updates at import: offline, that is start-up time of no use.
ENV = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")


def children_usage() -> tuple[float, float]:
    """CPU seconds and the largest peak RSS (MiB) of the finished processes this one waited for (and theirs)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime, r.ru_maxrss / 1024


def timed(cmd: list[str]) -> dict:
    cpu_before, _ = children_usage()
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=ENV)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    cpu_after, _ = children_usage()
    return {"seconds": seconds, "cpu_seconds": cpu_after - cpu_before, "stderr": done.stderr}


def peak_rss_mib(cmd: list[str]) -> float:
    """Peak RSS of the largest process of one command, measured in a fresh bench child so runs don't mix."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    done = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, cwd=ROOT, env=ENV)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def successes(tool: str, out: str) -> int:
    if tool in ("openwit", "baseline"):
        with open(os.path.join(out, "stats.json")) as f:
            return json.load(f)["kept"]
    return sum(json.load(open(p))["successes"] for p in glob.glob(os.path.join(out, "*_stats.json")))


def commands(pairs: str, queries: str, out: str, cores: int, baseline: str | None = None) -> dict[str, list[str]]:
    build = ["build", "--pairs", pairs, "--queries", queries, "--output", out,
                    "--image-size", "256", "--resize-mode", "border", "--encode-format", "jpg",
                    "--encode-quality", "95", "--fetch-timeout", "10", "--retries", "0",
                    "--samples-per-shard", "1000", "--allow-private-addresses",
                    # img2dataset has no per-host cap; ours (8) would be split over the 10 shards of this one-host
                    # web, one connection each. (Measured: no difference on loopback, 2,000 URLs.)
                    "--per-host-concurrency", "1024"]
    tools = {"openwit": [OPENWIT, *build]}
    if baseline:
        # The same venv, another version of our code: `python -m openwit` with that tree first on sys.path
        # (ahead of this checkout's editable install), run by env. -P: without it `-m` puts the working
        # directory, this checkout, ahead of PYTHONPATH, and the "baseline" ran this checkout's code (as it did
        # until speed pass 5).
        tools["baseline"] = ["env", f"PYTHONPATH={os.path.abspath(baseline)}", sys.executable, "-P", "-m",
                             "openwit", *build]
    return {**tools,
        "img2dataset": [I2D, "--url_list", pairs, "--input_format", "parquet", "--url_col", "url",
                        "--caption_col", "caption", "--output_folder", out, "--output_format", "webdataset",
                        "--image_size", "256", "--resize_mode", "border", "--encode_format", "jpg",
                        "--encode_quality", "95", "--timeout", "10", "--retries", "0",
                        "--processes_count", str(cores), "--thread_count", "64",
                        "--number_sample_per_shard", "1000", "--distributor", "multiprocessing",
                        "--enable_wandb", "False", "--compute_hash", "sha256"],
    }


def write_input(base: str, names: list[str], n: int) -> tuple[str, str]:
    os.makedirs(WORK, exist_ok=True)
    pairs, queries = os.path.join(WORK, f"pairs-{n}.parquet"), os.path.join(WORK, "queries.txt")
    urls = [f"{base}/i/{i}/{names[i % len(names)]}" for i in range(n)]
    pq.write_table(pa.table({"url": urls, "caption": [f"a photo of a benchmark scene number {i}" for i in range(n)]}),
                   pairs)
    with open(queries, "w") as f:
        f.write("benchmark\nphoto\n")
    return pairs, queries


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--urls", type=int, default=10000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--images", type=int, default=300, help="distinct image files behind the URLs")
    p.add_argument("--only", help="comma-separated tools to run: openwit, baseline, img2dataset (default: all)")
    p.add_argument("--baseline", help="source tree of another OpenWIT version, timed too (interleaved), as "
                                      "'baseline'")
    p.add_argument("--memory", help="comma-separated input sizes: peak RSS per worker of each (one run each)")
    a = p.parse_args()
    cores = os.cpu_count() or 1

    sys.path.insert(0, HERE)
    from fetch_site import Nginx, make_images

    images = os.path.join(HERE, "work", "fetch", "images")
    names = make_images(images, a.images)
    with Nginx(images, os.path.join(WORK, "nginx")) as base:
        if a.memory:
            for n in (int(x) for x in a.memory.split(",")):
                pairs, queries = write_input(base, names, n)
                for tool, cmd in commands(pairs, queries, "{out}", cores, a.baseline).items():
                    if a.only is None or tool in a.only.split(","):
                        out = os.path.join(WORK, f"out-{tool}")
                        shutil.rmtree(out, ignore_errors=True)
                        rss = peak_rss_mib([c.replace("{out}", out) for c in cmd])
                        print(f"{tool} {n} urls: {successes(tool, out)} images, peak RSS of the largest process "
                              f"{rss:.0f} MiB", flush=True)
            return
        pairs, queries = write_input(base, names, a.urls)
        figures = {}
        for run in range(a.runs):
            # Interleaved, so drift hits every tool, and in a rotating order: a run right after img2dataset's
            # (2 processes x 64 threads) measured slower than the same code in the next slot (RESULTS.md, Speed pass 4).
            tools = list(commands(pairs, queries, "{out}", cores, a.baseline).items())
            for tool, cmd in tools[run % len(tools):] + tools[:run % len(tools)]:
                if a.only is not None and tool not in a.only.split(","):
                    continue
                out = os.path.join(WORK, f"out-{tool}")
                shutil.rmtree(out, ignore_errors=True)
                r = timed([c.replace("{out}", out) for c in cmd])
                r["successes"] = successes(tool, out)
                figures.setdefault(tool, []).append(r)
                print(f"run {run + 1} {tool}: {r['successes']} images in {r['seconds']:.1f}s = "
                      f"{r['successes'] / r['seconds']:.0f} img/s, "
                      f"{1000 * r['cpu_seconds'] / r['successes']:.1f} CPU-ms/img", flush=True)

    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), "?")
    print(f"\nmachine: {cores} cores, {cpu}, {platform.python_implementation()} {platform.python_version()}, "
          f"load average before the last run {os.getloadavg()[0]:.1f}")
    rates, costs = {}, {}
    for tool, runs in figures.items():
        each = [r["successes"] / r["seconds"] for r in runs]
        rates[tool] = statistics.median(each)
        costs[tool] = statistics.median(1000 * r["cpu_seconds"] / r["successes"] for r in runs)
        print(f"{tool}: median {rates[tool]:.0f} img/s ({', '.join(f'{x:.0f}' for x in each)}); "
              f"median {costs[tool]:.1f} CPU-ms per image")
    if "baseline" in rates:
        print(f"ratio openwit / baseline: {rates['openwit'] / rates['baseline']:.2f}x images/s, "
              f"{costs['baseline'] / costs['openwit']:.2f}x less CPU per image")
    if "baseline" in rates and "img2dataset" in rates:
        print(f"ratio baseline / img2dataset: {rates['baseline'] / rates['img2dataset']:.2f}x images/s, "
              f"{costs['img2dataset'] / costs['baseline']:.2f}x less CPU per image")
    if "openwit" in rates and "img2dataset" in rates:
        print(f"ratio openwit / img2dataset: {rates['openwit'] / rates['img2dataset']:.2f}x images/s, "
              f"{costs['img2dataset'] / costs['openwit']:.2f}x less CPU per image")


if __name__ == "__main__":
    main()
