"""Per-core throughput of the pipeline's CPU stages before the shard writer, for docs/SCALE.md.

    python bench/bench_stages.py [--captions 100000]

One process, plain Python cores (no Beam): reading a url+caption Parquet table into candidate records, and
cleaning captions without and with language identification (lingua, --languages en). Matching and WARC
extraction have their own benchmarks (bench_match.py, bench_warc.py); fetch/resize/write: bench_fetch.py.
"""

import argparse
import os
import random
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pipeline.captions import CaptionCleaner, CaptionRules  # noqa: E402
from pipeline.read_pairs import TableColumns, read_table  # noqa: E402

WORDS = ("photo view of the old red house river city street mountain dog cat people festival museum bridge "
         "night summer winter portrait garden church market train station beach park library").split()


def captions(n: int) -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 16))).capitalize() for _ in range(n)]


def rate(n: int, fn) -> float:
    started = time.process_time()
    fn()
    return n / (time.process_time() - started)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--captions", type=int, default=100000)
    a = p.parse_args()
    texts = captions(a.captions)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "pairs.parquet")
        pq.write_table(pa.table({"url": [f"https://h{i % 997}.example/img/{i}.jpg" for i in range(len(texts))],
                                 "caption": texts}), path)
        read = rate(len(texts), lambda: sum(1 for _ in read_table(path, TableColumns())))
    print(f"read pairs (Parquet -> candidate records): {read:,.0f} rows/s per core")
    for languages in ((), ("en",)):
        cleaner = CaptionCleaner(CaptionRules(languages=languages))
        cleaner.setup()
        r = rate(len(texts), lambda: [cleaner.clean(t) for t in texts])
        print(f"clean captions (languages={','.join(languages) or 'any'}): {r:,.0f} captions/s per core")


if __name__ == "__main__":
    main()
