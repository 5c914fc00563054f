"""`openwit report OUT`: the dataset card, `OUT/report.html`, and the summary printed when a build ends.

The card is one self-contained file (charts as SVG data URIs, thumbnails as JPEG data URIs, no script, no
external link but the overlap reports beside it), so it opens offline and can be mailed. Everything on it comes
from `aggregates.json` and a few thumbnails read from the tars: its size does not grow with the build.
Every string from the data (captions, queries, URLs, hosts, eval set names) is HTML-escaped, and a
Content-Security-Policy forbids scripts outright, as a second wall.
"""

import argparse
import base64
import html
import io
import os
import tarfile

from apache_beam.io.filesystems import FileSystems
from PIL import Image

from pipeline import aggregates
from pipeline.write_shards import shard_path

THUMBNAIL_SIDE = 160
IMAGE_EXTENSIONS = ("jpg", "webp", "png")
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """body{font-family:system-ui,sans-serif;max-width:62em;margin:2em auto;padding:0 1em;color:#222}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.headline{display:flex;gap:1em;flex-wrap:wrap}.headline div{border:1px solid #ccc;border-radius:6px;padding:.6em 1em}
.headline b{display:block;font-size:1.6em}img.chart{width:100%;max-width:52em;display:block;margin:.5em 0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:12px}
.grid figure{margin:0;font-size:.85em;overflow-wrap:anywhere}.grid img{width:160px;height:160px;object-fit:contain;
background:#f4f4f4}.muted{color:#777}.bad{color:#b00;font-weight:bold}"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _table(header: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="n">{esc(v)}</td>' if i in numeric else f"<td>{esc(v)}</td>"
                                    for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _chart(uri: str, name: str, alt: str) -> str:
    return f'<img class="chart" id="chart-{esc(name)}" alt="{esc(alt)}" src="{uri}">'


def dominant_reject(stats: dict) -> tuple[str, str, int] | None:
    reasons = [(n, stage, reason) for stage, rs in stats["rejected"].items() for reason, n in rs.items()]
    if not reasons:
        return None
    n, stage, reason = max(reasons, key=lambda r: (r[0], r[1], r[2]))
    return stage, reason, n


def thumbnails(output: str, samples: list[dict]) -> dict[str, str]:
    """key -> JPEG data URI of the sample's image, read from its shard's tar (one pass per tar, stopping once
    its samples are found). Re-encoding leaves only pixels: nothing from the file's own bytes reaches the card."""
    wanted: dict[int, set[str]] = {}
    for s in samples:
        wanted.setdefault(s["shard"], set()).add(s["key"])
    found = {}
    for shard, keys in sorted(wanted.items()):
        path = shard_path(output, shard, ".tar")
        if not FileSystems.exists(path):
            continue
        with FileSystems.open(path) as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                if key in keys and ext in IMAGE_EXTENSIONS and key not in found:
                    found[key] = _thumbnail(tar.extractfile(member).read())
                    if keys <= found.keys():
                        break
    return {k: v for k, v in found.items() if v}


def _thumbnail(data: bytes) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=80)
    except Exception:  # a thumbnail is decoration: an unreadable image leaves its cell out, not the card
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _link(url: str, text: str) -> str:
    # Only web links are clickable: a javascript: or data: URL in the data stays plain text.
    if url.lower().startswith(("http://", "https://")):
        return f'<a href="{esc(url)}" rel="noreferrer nofollow">{esc(text)}</a>'
    return esc(text)


def chart_arguments(agg: dict, names=None) -> dict[str, tuple]:
    """The card's charts (pipeline/charts.py functions by name) and what each is drawn from."""
    stats, q = agg["stats"], agg["queries"]
    every = {
        "funnel": lambda: (agg["funnel"],), "rejects": lambda: (stats["rejected"],),
        "query_distribution": lambda: (q,), "caption_lengths": lambda: (agg["caption_chars"],),
        "languages": lambda: (agg["languages"],), "image_sides": lambda: (agg["image_sides"],),
        "hosts": lambda: (agg["hosts"]["top"],),
    }
    return {name: every[name]() for name in (names or every)}


def draw_charts(agg: dict, drawn: dict[str, str | None] | None = None) -> dict[str, str]:
    """name -> SVG data URI of every chart, drawn here unless `drawn` (another process's work) has it."""
    drawn = drawn or {}
    uris = {}
    for name, args in chart_arguments(agg).items():
        uri = drawn.get(name)
        if uri is None:
            from pipeline import charts  # matplotlib: only where a chart is drawn

            uri = getattr(charts, name)(*args)
        uris[name] = uri
    return uris


def render(agg: dict, images: dict[str, str], charts: dict[str, str] | None = None) -> str:
    """The card's HTML; `charts` from draw_charts (drawn here when not given)."""
    charts = draw_charts(agg) if charts is None else charts
    stats, q = agg["stats"], agg["queries"]
    top = dominant_reject(stats)
    t_text = "unknown (run `openwit report OUT --max-per-query T`)" if q["t"] is None else f"{q['t']:,.0f}"
    headline = [
        ("kept samples", f"{stats['kept']:,}", f"{_pct(stats['kept'], stats['candidates'])} of "
                                               f"{stats['candidates']:,} candidates"),
        ("dominant reject reason", f"{top[2]:,}" if top else "0",
         f"{top[0]}: {top[1]}" if top else "nothing rejected"),
        ("queries at t", "-" if q["at_t"] is None else f"{q['at_t']:,}", f"of {q['matched']:,} matched; t = {t_text}"),
    ]
    cards = "".join(f"<div><b>{esc(v)}</b>{esc(label)}<br><span class=muted>{esc(note)}</span></div>"
                    for label, v, note in headline)
    adds_up = ("the counts add up" if stats["adds_up"]
               else '<span class="bad">THE COUNTS DO NOT ADD UP</span>')

    reject_rows = [[stage, reason, n, _pct(n, stats["candidates"])]
                   for stage, reasons in stats["rejected"].items() for reason, n in reasons.items()]

    def query_rows(rows):
        return [[r["query"], r["candidates"], r["selected"], r["kept"]] for r in rows]

    hosts = agg["hosts"]
    host_rows = [[h["host"], h["attempted"], h["failed"], f"{100 * h['failure_rate']:.1f}%"] for h in hosts["top"]]

    cells, seen = [], set()
    for s in agg["thumbnails"]:
        if s["key"] in seen or s["key"] not in images:
            continue
        seen.add(s["key"])
        cells.append(f'<figure class="sample"><img alt="sample {esc(s["key"])}" src="{images[s["key"]]}">'
                     f'<figcaption class="caption">{esc(s["caption"])}</figcaption>'
                     f'<div class="muted">query: {esc(s["query"])} · {_link(s["url"], s["key"])}</div></figure>')

    decon = agg["decontamination"]
    decon_html = _table(
        ["eval set", "eval items with a match", "samples matched", "samples by method"],
        [[d["eval_set"], d["eval_items_matched"], d["samples_matched"],
          ", ".join(f"{m}: {n}" for m, n in d["samples_by_method"].items())] for d in decon], {1, 2},
    ) if decon else "<p class=muted>No eval set was checked, or none matched (build with --eval-index).</p>"
    dropped = stats["rejected"].get("decontaminate", {}).get("eval_duplicate", 0)
    links = "".join(f'<li><a href="{esc(p)}">{esc(p)}</a></li>' for p in agg["overlap_reports"])
    overlap_links = f"<p>Overlap reports:</p><ul>{links}</ul>" if links else (
        "<p class=muted>No overlap report yet: `openwit overlap --build OUT --predictions P.parquet` (the CLIP "
        "paper's overlap analysis) writes one to overlap_report/ and links it here.</p>")
    # `openwit overlap` puts its link between these marks without redrawing the card (dedup/overlap_report.py).
    overlap_links = f"<!--overlap-report-->{overlap_links}<!--/overlap-report-->"

    languages = agg["languages"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>OpenWIT dataset card</title><style>{STYLE}</style></head><body>
<h1>OpenWIT dataset card</h1>
<section id="totals"><div class="headline">{cards}</div>
<p>{stats['candidates']:,} candidate pairs read; {stats['kept']:,} kept in {stats['shards']:,} shards;
{stats['rejected_total']:,} rejected ({adds_up}).</p>
<h2>From candidates to kept samples</h2>{_chart(charts['funnel'], 'funnel', 'funnel chart')}
{_table(['step', 'candidates left'], [[('after ' if 0 < i < len(agg['funnel']) - 1 else '') + s, n]
                                       for i, (s, n) in enumerate(agg['funnel'])], {1})}</section>
<section id="rejects"><h2>Rejected, by stage and reason</h2>
{_chart(charts['rejects'], 'rejects', 'rejects by stage and reason')}
{_table(['stage', 'reason', 'candidates', 'share'], reject_rows, {2, 3})}</section>
<section id="queries"><h2>Balance: pairs per query</h2>
<p>{q['queries']:,} queries; {q['matched']:,} matched a candidate, {q['never_matched']:,} matched none.
<b>{'-' if q['at_t'] is None else f"{q['at_t']:,}"}</b> queries had more than t = {esc(t_text)} candidates, so balancing
cut them to about t; <b>{q['without_sample']:,}</b> matched queries have no kept sample.</p>
{_chart(charts['query_distribution'], 'queries', 'pairs per query against query rank, log-log')}
<h3>Head: most candidates</h3>{_table(['query', 'candidates', 'selected', 'kept'], query_rows(q['head']), {1, 2, 3})}
<h3>Tail: fewest candidates</h3>{_table(['query', 'candidates', 'selected', 'kept'], query_rows(q['tail']), {1, 2, 3})}
</section>
<section id="captions"><h2>Captions</h2>
{_chart(charts['caption_lengths'], 'caption-lengths', 'caption length histogram')}
<p>Languages detected in a sample of {languages['sample']:,} kept captions, spread over the shards:</p>
{_chart(charts['languages'], 'languages', 'caption languages')}</section>
<section id="images"><h2>Image sizes</h2>
{_chart(charts['image_sides'], 'image-sizes', 'original and written image sizes')}</section>
<section id="hosts"><h2>Hosts</h2>
{_chart(charts['hosts'], 'hosts', 'top hosts, kept and failed')}
{_table(['host', 'attempted', 'failed', 'failure rate'], host_rows, {1, 2, 3})}
{'<p class=muted>Hosts beyond the largest were pruned while counting; the table above is of the largest.</p>'
 if hosts['pruned'] else ''}</section>
<section id="samples"><h2>Samples</h2>
<p class=muted>One sample per query, the queries spread from the head to the tail of the distribution; the
same build always shows the same samples.</p>
<div class="grid">{''.join(cells) or '<p class=muted>No kept samples.</p>'}</div></section>
<section id="decontamination"><h2>Decontamination</h2>{decon_html}
<p>{dropped:,} samples dropped as eval-set near-duplicates.</p>{overlap_links}</section>
</body></html>
"""


def write_report(output: str, t: float | None, chart_process=None) -> dict:
    """aggregates.json and report.html for the build in `output`; returns the aggregates.

    chart_process (a pipeline.chart_worker.ChartProcess): the charts are drawn there, beside the language
    sample and the thumbnails made here, instead of after them; the same card either way."""
    agg, shards = aggregates.scan(output, t)
    drawn = {}
    if chart_process is not None:  # all but the languages, the longest first
        early = ("image_sides", "query_distribution", "funnel", "caption_lengths", "hosts", "rejects")
        for name, args in chart_arguments(agg, early).items():
            chart_process.submit(name, *args)
    aggregates.add_languages(agg, aggregates.language_sample(shards))
    if chart_process is not None:
        chart_process.submit("languages", *chart_arguments(agg, ["languages"])["languages"])
    images = thumbnails(output, agg["thumbnails"])
    if chart_process is not None:
        drawn = {name: chart_process.result(name) for name in chart_arguments(agg)}
        chart_process.stop()  # it shuts down while the card is written
    aggregates.write(output, agg)
    with FileSystems.create(FileSystems.join(output, "report.html")) as f:
        f.write(render(agg, images, draw_charts(agg, drawn)).encode())
    return agg


def summary(output: str, agg: dict) -> str:
    """One screen for the end of a run: the three numbers a user checks first, and where everything is."""
    stats, q = agg["stats"], agg["queries"]
    out = output if "://" in output else os.path.abspath(output)
    top = dominant_reject(stats)
    top_text = f"{top[0]}/{top[1]}: {top[2]} ({_pct(top[2], stats['candidates'])})" if top else "none"
    at_t = ("unknown (t not recorded)" if q["at_t"] is None
            else f"{q['at_t']} of {q['matched']} matched queries had more than t = {q['t']:,.0f} candidates")
    return "\n".join([
        f"{stats['candidates']} candidates -> {stats['kept']} samples in {stats['shards']} shards, "
        f"{stats['rejected_total']} rejected (adds up: {stats['adds_up']})",
        f"  kept:         {stats['kept']} ({_pct(stats['kept'], stats['candidates'])} of candidates)",
        f"  top reject:   {top_text}",
        f"  queries at t: {at_t}; {q['without_sample']} matched queries have no sample",
        f"  card:    {out}/report.html",
        f"  shards:  {out}/shards/*.tar (WebDataset) and *.parquet",
        f"  stats:   {out}/stats.json   aggregates: {out}/aggregates.json   rejects: {out}/rejects/",
    ])


def finish_build(output: str, t: float, chart_process=None) -> str:
    """Called when a build ends: write the card, return the summary to print."""
    return summary(output, write_report(output, t, chart_process))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="openwit report", description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="output folder of a finished build (local, gs://, s3://, ...)")
    parser.add_argument("--max-per-query", type=float, default=None,
                        help="the build's t (x --oversample) to mark; default: the one its last report recorded")
    args = parser.parse_args(argv)
    t = args.max_per_query if args.max_per_query is not None else (
        aggregates.previous_t(args.output) if FileSystems.exists(FileSystems.join(args.output, "stats.json"))
        else None)
    print(summary(args.output, write_report(args.output, t)))
    return 0
