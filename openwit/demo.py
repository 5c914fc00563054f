"""`openwit demo` (and `make demo`): the whole pipeline, offline, on the demo web.

Starts the demo web on 127.0.0.1, writes its url+caption table and a query list, and runs build_wit on them
with the local runner, which prints the totals and where the shards, stats and report are. Nothing leaves the machine: the demo
opts in to fetching from loopback with --allow-private-addresses, which real runs leave off.
"""

import argparse
import os

from openwit.demo_web import DemoWebServer, generate_site, write_inputs
from pipeline import build_wit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="openwit demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="demo-out", help="output folder (default: demo-out)")
    parser.add_argument("--samples-per-shard", type=int, default=40)
    args, extra = parser.parse_known_args(argv)  # anything else goes to build_wit (e.g. --image-size 128)

    site = generate_site()
    with DemoWebServer(site) as base_url:
        print(f"demo web serving {len(site.pairs)} image links on {base_url}")
        pairs, queries = write_inputs(site, base_url, os.path.join(args.output, "input"))
        code = build_wit.main([
            "--pairs", pairs, "--queries", queries, "--output", args.output,
            "--samples-per-shard", str(args.samples_per_shard), "--allow-private-addresses",
            "--overwrite",  # each demo serves on a new port, so its inputs differ from the last demo's
            *extra,
        ])
    return code
