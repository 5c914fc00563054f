"""One img2dataset run for bench_fetch.py, executed by the img2dataset venv's python (bench/work/i2d-venv).

Prints {"seconds": ..., "successes": ..., "cpu_seconds": ...} as the last line. Timing starts after the import,
as for OpenWIT; CPU counts this process and its worker processes.
"""

import argparse
import glob
import json
import os
import resource
import time

from img2dataset import download


def cpu_seconds() -> float:
    """User + system CPU of this process and of its finished children."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--urls", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--resize-mode", default="border")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=64)
    p.add_argument("--samples-per-shard", type=int, default=1000)
    a = p.parse_args()
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    download(url_list=a.urls, input_format="txt", output_folder=a.out, output_format="webdataset",
             image_size=a.image_size, resize_mode=a.resize_mode, encode_format="jpg", encode_quality=95,
             processes_count=a.processes, thread_count=a.threads, number_sample_per_shard=a.samples_per_shard,
             timeout=10, retries=0, distributor="multiprocessing", enable_wandb=False, compute_hash="sha256")
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before  # the worker processes are joined by now, so RUSAGE_CHILDREN has them
    successes = sum(json.load(open(f))["successes"] for f in glob.glob(os.path.join(a.out, "*_stats.json")))
    print(json.dumps({"seconds": seconds, "successes": successes, "cpu_seconds": cpu}))
