"""WARC extraction speed: OpenWIT's read_archive vs MetaCLIP's WARC parser (warcio + selectolax).

Writes a Common-Crawl-like WARC (one gzip member per record; request, response and metadata records as CC
stores them; ~60 kB HTML pages with navigation, text and 25 images each, some in <figure>, some lazy-loaded)
and times, on one core, (image URL, text) extraction by:
- ours:    pipeline.read_warc.read_archive (zlib member-by-member, fastwarc, selectolax lexbor)
- MetaCLIP: metaclip/cc_matching.py WARCCurator.parse + parse_html logic (warcio ArchiveIterator, selectolax
           — lexbor, as selectolax 1.0 removed the modest parser MetaCLIP used — img alt/title/data-image-title), language ID and process pool left out so both do
           the same work. It runs in its own venv: bench/work/peer-venv (pip install warcio selectolax==1.0.2).
Reports MB/s of uncompressed WARC per core (median of runs) and the ratio.

    python bench/bench_warc.py [--pages 800] [--runs 5]
"""

import argparse
import gzip
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "bench", "work")
PEER_PYTHON = os.path.join(WORK, "peer-venv", "bin", "python")

PEER = r'''
import sys, time
from urllib.parse import urljoin
from warcio.archiveiterator import ArchiveIterator
from selectolax.lexbor import LexborHTMLParser as HTMLParser  # selectolax 1.0 dropped modest
KOI = ["alt", "title", "data-image-title"]
def parse_html(html, target_uri, data):
    tree = HTMLParser(html)
    for img in tree.tags("img"):
        texts, url = [], None
        for key in img.attrs.keys():
            if key not in KOI + ["src"]:
                continue
            text = img.attrs[key]
            if text is None:
                continue
            text = text.strip().replace("\n", "").replace("\r", "")
            if not text:
                continue
            if key == "src":
                url = urljoin(target_uri, text)
            if key in KOI:
                texts.append([key, text])
        if url is not None and texts:
            data.append((url, texts))
start = time.perf_counter()
data = []
with open(sys.argv[1], "rb") as stream:
    for record in ArchiveIterator(stream):
        if record.rec_type == "response":
            parse_html(record.raw_stream.read().strip(), record.rec_headers.get_header("WARC-Target-URI"), data)
print(time.perf_counter() - start, sum(len(t) for _, t in data))
'''


def page(i: int) -> bytes:
    nav = "".join(f'<li><a href="/section/{j}">Section {j}</a></li>' for j in range(60))
    text = " ".join(f"Paragraph {k} of story {i} with some words about the city, the river and the people."
                    for k in range(40))
    images = []
    for k in range(25):
        if k % 5 == 0:
            images.append(f'<figure><img src="/img/{i}/{k}.jpg" width="640"><figcaption>Figure {k}: the '
                          f'harbour of town {i} at dawn</figcaption></figure>')
        elif k % 5 == 1:
            images.append(f'<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-src="/img/{i}/{k}.webp" '
                          f'alt="Lazy photo {k} of a red bicycle near the station">')
        else:
            images.append(f'<img src="https://cdn{k % 3}.example.com/{i}/{k}.jpg" alt="A photo {k} of a dog '
                          f'playing in the park, story {i}" title="Dog {k}" class="thumb" loading="lazy">')
    body = (f'<!doctype html><html><head><meta charset="utf-8"><title>Story {i}</title>'
            f'<script>{"var x = 1;" * 300}</script><style>{".a{color:red}" * 300}</style></head><body>'
            f'<nav><ul>{nav}</ul></nav><main><p>{text}</p>{"".join(images)}<p>{text}</p></main></body></html>')
    return body.encode()


def record(headers: dict, block: bytes) -> bytes:
    lines = ["WARC/1.0", *(f"{k}: {v}" for k, v in headers.items()), f"Content-Length: {len(block)}"]
    return gzip.compress(("\r\n".join(lines) + "\r\n\r\n").encode() + block + b"\r\n\r\n", compresslevel=6, mtime=0)


def write_warc(path: str, pages: int) -> int:
    raw = 0
    with open(path, "wb") as f:
        for i in range(pages):
            url = f"https://news{i % 50}.example.org/story/{i}.html"
            request = f"GET /story/{i}.html HTTP/1.1\r\nHost: news.example.org\r\n\r\n".encode()
            body = page(i)
            http = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            meta = b"fetchTimeMs: 120\r\ncharset-detected: UTF-8\r\n"
            for kind, block, ctype in (("request", request, "application/http; msgtype=request"),
                                       ("response", http, "application/http; msgtype=response"),
                                       ("metadata", meta, "application/warc-fields")):
                data = record({"WARC-Type": kind, "WARC-Target-URI": url, "Content-Type": ctype}, block)
                raw += len(gzip.decompress(data))
                f.write(data)
    return raw


def ours(path: str) -> tuple[float, int]:
    from pipeline.read_warc import read_archive

    start = time.perf_counter()
    with open(path, "rb") as f:
        n = sum(1 for tag, _ in read_archive(path, f) if tag == "candidate")
    return time.perf_counter() - start, n


def peer(path: str) -> tuple[float, int]:
    out = subprocess.run([PEER_PYTHON, "-c", PEER, path], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), int(out[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=800)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    os.makedirs(WORK, exist_ok=True)
    path = os.path.join(WORK, "bench.warc.gz")
    raw = write_warc(path, args.pages)
    mb, gz_mb = raw / 1e6, os.path.getsize(path) / 1e6

    our_runs = [ours(path) for _ in range(args.runs)]
    peer_runs = [peer(path) for _ in range(args.runs)] if os.path.exists(PEER_PYTHON) else []
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    print(f"machine: {model}, Python {platform.python_version()}, one process (one core)")
    print(f"input: {args.pages} pages, {mb:.1f} MB WARC ({gz_mb:.1f} MB gzip per record)")
    ours_s = statistics.median(t for t, _ in our_runs)
    print(f"OpenWIT read_archive: {mb / ours_s:.1f} MB/s ({gz_mb / ours_s:.1f} MB/s compressed), "
          f"{our_runs[0][1]} candidates; runs {', '.join(f'{t:.2f}' for t, _ in our_runs)} s")
    if peer_runs:
        peer_s = statistics.median(t for t, _ in peer_runs)
        print(f"MetaCLIP warcio+selectolax: {mb / peer_s:.1f} MB/s, {peer_runs[0][1]} texts; "
              f"runs {', '.join(f'{t:.2f}' for t, _ in peer_runs)} s")
        print(f"ratio: {peer_s / ours_s:.2f}x")
    else:
        print(f"peer venv missing: python3 -m venv {WORK}/peer-venv && "
              f"{WORK}/peer-venv/bin/pip install warcio selectolax==1.0.2", file=sys.stderr)


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main()
