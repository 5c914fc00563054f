"""Build a WIT-style dataset: candidate (image url, caption) pairs + a query list -> WebDataset/Parquet shards.

Stages, in order (DESIGN.md §1): read pairs -> clean captions -> match queries -> drop repeated URLs ->
balance (<= t per query) -> plan shards by host -> per shard: fetch, decode/resize/encode, decontaminate, write
-> totals. Run it as `python -m pipeline.build_wit`, `openwit build`, or `beam run pipeline/build_wit.py`;
any Beam runner option (--runner, --project, ...) passes through. With no --runner it runs locally on
FnApiRunner, which never downloads anything (Beam's DirectRunner first fetches its Prism binary from GitHub).
"""

if __name__ == "__main__":
    # `python -m pipeline.build_wit` and `beam run pipeline/build_wit.py` run the importable module instead of
    # defining everything again in __main__: DoFns then pickle as references to pipeline.build_wit, which remote
    # workers import from the staged package (dill pickles __main__'s copies in a way that fails there with
    # NameError), and Beam sees one BuildWitOptions class, not two that declare the same options.
    import logging
    import sys

    from pipeline.build_wit import main

    logging.getLogger().setLevel(logging.INFO)
    sys.exit(main())

import gc
import logging
import sys

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from openwit import beam_signatures, faults
from openwit.errors import EXIT_BAD_INPUT, InputError
from openwit.options import (OutputOptions, default_sample_processes, help_parser, local_run_summary,
                             parse_pipeline_options, use_every_core)
from pipeline import fetch, progress, resize
from pipeline.balance import Balance
from pipeline.build_record import claim_output, make_record
from pipeline.captions import CaptionCleaner, CaptionRules
from pipeline.chart_worker import ChartProcess
from pipeline.match import make_matcher
from pipeline.plan_shards import PlanShards
from pipeline.read_pages import ReadPages
from pipeline.read_pairs import ReadPairs, TableColumns
from pipeline.read_warc import DEFAULT_MAX_PAGE_BYTES, ReadWarc, ReadWat
from pipeline.totals import write_overlap, write_totals
from pipeline.write_rejects import WriteRejects
from pipeline.write_shards import DECONTAMINATE_MODES, ShardConfig, WriteShardFn
from queries.load import load_queries

beam_signatures.install()  # Beam re-inspects the same DoFn methods ~22,000 times a build: ~0.5 s

# Bounds of numeric options, checked before any work. The upper ones keep a worker's memory safe: every decode
# thread holds images of up to image_size^2 pixels (8192: ~200 MB each), every request up to max_bytes.
OPTION_BOUNDS = {
    "image_size": (1, 8192), "min_image_size": (0, 30_000), "threads": (0, 256), "sample_processes": (0, 256),
    "min_caption_chars": (0, 100_000), "max_caption_chars": (1, 100_000), "samples_per_shard": (1, 1_000_000),
    "max_concurrency": (1, 4096), "per_host_concurrency": (1, 1024), "retries": (0, 10),
    "max_bytes": (1, 2**30), "max_page_bytes": (1, 2**30),
}
# Captions per call of the matcher: enough to make the call's fixed cost (a few us) negligible.
MATCH_BATCH = 1024


class BuildWitOptions(OutputOptions, PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        inputs = parser.add_argument_group("inputs")
        inputs.add_argument("--pairs", action="append", default=[],
                            help="url+caption table(s): Parquet, CSV or TSV paths or globs (repeatable)")
        inputs.add_argument("--url-col", default="url", help="column holding the image URL")
        inputs.add_argument("--caption-col", default="caption", help="column holding the caption (alt text)")
        inputs.add_argument("--page-url-col", default=None, help="optional column holding the page URL")
        inputs.add_argument("--warc", action="append", default=[],
                            help="Common Crawl WARC file(s), *.warc.gz paths or globs (repeatable)")
        inputs.add_argument("--wat", action="append", default=[],
                            help="Common Crawl WAT file(s), *.wat.gz paths or globs (repeatable)")
        inputs.add_argument("--page-urls", action="append", default=[],
                            help="text file(s) of page URLs to crawl, one per line (repeatable)")
        inputs.add_argument("--max-page-bytes", type=int, default=DEFAULT_MAX_PAGE_BYTES,
                            help="larger WARC records are rejects (too_large)")
        inputs.add_argument("--queries", help="query list: .txt (one per line), MetaCLIP metadata.json, or "
                                              "queries.parquet")

        select = parser.add_argument_group("caption and selection")
        select.add_argument("--min-caption-chars", type=int, default=CaptionRules.min_chars)
        select.add_argument("--max-caption-chars", type=int, default=CaptionRules.max_chars)
        select.add_argument("--languages", default="",
                            help="keep captions in these languages only (ISO 639-1, comma-separated: en,de)")
        select.add_argument("--language-confidence", type=float, default=CaptionRules.language_confidence,
                            help="lingua confidence (0..1) a caption needs to count as one of --languages")
        select.add_argument("--max-per-query", type=int, default=20000,
                            help="t of MetaCLIP's balancing: about this many pairs kept per query")
        select.add_argument("--oversample", type=float, default=1.0,
                            help="raise t by this factor before download to cover fetch failures")

        image = parser.add_argument_group("images")
        image.add_argument("--image-size", type=int, default=resize.ImageOptions.image_size)
        image.add_argument("--resize-mode", default=resize.ImageOptions.resize_mode, choices=resize.RESIZE_MODES)
        image.add_argument("--encode-format", default=resize.ImageOptions.encode_format,
                           choices=resize.ENCODE_FORMATS)
        image.add_argument("--encode-quality", type=int, default=None,
                           help="jpg/webp quality 0-100 (default 95); png compression level 0-9 (default 6)")
        image.add_argument("--min-image-size", type=int, default=resize.ImageOptions.min_image_size)
        # None, not inf: pipeline options travel as JSON to portable runners (Flink, Spark), which reject Infinity.
        image.add_argument("--max-aspect-ratio", type=float, default=None,
                           help="longer side / shorter side above this is rejected (default: no limit)")
        image.add_argument("--samples-per-shard", type=int, default=10000)
        image.add_argument("--threads", type=int, default=0,
                           help="decode/resize threads per worker when it has no sample processes (0: cores + 1)")
        image.add_argument("--sample-processes", type=int, default=None,
                           help="processes per worker that decode, resize, encode and hash, instead of its threads "
                                "(default: local runs a process per core, shared among the workers; other "
                                "runners 0: a remote SDK worker already runs a process per vCPU)")

        web = parser.add_argument_group("fetching")
        # "fetch-" names: Beam's own --timeout (DaskOptions) and --user_agent (SetupOptions) share their dests.
        web.add_argument("--fetch-timeout", type=float, default=fetch.FetchOptions.timeout_s,
                         help="seconds per request, redirects included")
        web.add_argument("--max-bytes", type=int, default=fetch.FetchOptions.max_bytes)
        web.add_argument("--fetch-user-agent", default=fetch.FetchOptions.user_agent)
        web.add_argument("--max-concurrency", type=int, default=fetch.FetchOptions.max_concurrency)
        web.add_argument("--stall-timeout", type=float, default=fetch.FetchOptions.stall_timeout_s,
                         help="seconds without a byte (headers or body) before a request is given up as stalled")
        web.add_argument("--per-host-concurrency", type=int, default=fetch.FetchOptions.per_host_concurrency)
        web.add_argument("--min-host-delay", type=float, default=fetch.FetchOptions.min_host_delay_s)
        web.add_argument("--retries", type=int, default=fetch.FetchOptions.retries)
        web.add_argument("--max-host-rate", type=float, default=fetch.FetchOptions.max_host_rate,
                         help="requests/s per host over the whole run, all workers together: each of the k "
                              "shards a host was split into gets 1/k of it, and of --per-host-concurrency "
                              "(0: no rate limit)")
        web.add_argument("--dns-servers", default="",
                         help="comma-separated DNS servers for the c-ares resolver, ip or ip:port "
                              "(default: those of /etc/resolv.conf)")
        web.add_argument("--allow-private-addresses", action="store_true",
                         help="allow fetching from loopback/private networks (tests and the offline demo only)")
        web.add_argument("--ignore-robots-txt", action="store_true", help="do not honour robots.txt")
        web.add_argument("--ignore-opt-outs", action="store_true",
                         help="do not honour noai/noindex opt-outs in X-Robots-Tag")

        parser.add_argument("--no-progress", dest="progress", action="store_false",
                            help="no progress bar (shown on local runs: samples and shards done, images/s, "
                                 "failure rate)")

        dedup = parser.add_argument_group("decontamination")
        dedup.add_argument("--eval-index", default=None, help="index built by `openwit eval-index`")
        dedup.add_argument("--decontaminate", default="drop", choices=DECONTAMINATE_MODES,
                           help="drop eval-set near-duplicates, or only report them in overlap/")
        parser.add_argument("--overwrite", action="store_true",
                            help="delete a previous build of other inputs or options in --output and start over "
                                 "(without it such a folder stops the run; the same build resumes)")


def check_options(o: BuildWitOptions) -> None:
    """Whole-input problems stop the run before any work, with a message that says how to fix them."""
    if not (o.pairs or o.warc or o.wat or o.page_urls):
        raise InputError("no input: give --pairs (url+caption table), --warc, --wat or --page-urls (combinable)")
    try:
        CaptionCleaner(caption_rules(o))
    except ValueError as e:
        raise InputError(f"--languages {o.languages!r}: {e}") from e
    if not 0 <= o.language_confidence <= 1:
        raise InputError(f"--language-confidence must be in 0..1, got {o.language_confidence}")
    if not o.queries:
        raise InputError("no query list: give --queries (a .txt, MetaCLIP metadata.json, or queries.parquet)")
    if not o.output:
        raise InputError("no output folder: give --output")
    for name in ("max_per_query", "samples_per_shard", "image_size", "max_concurrency", "per_host_concurrency"):
        if getattr(o, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(o, name)}")
    for name, (low, high) in OPTION_BOUNDS.items():
        if not low <= getattr(o, name) <= high:
            raise InputError(f"--{name.replace('_', '-')} must be between {low} and {high}, got "
                             f"{getattr(o, name)}")
    if o.min_caption_chars > o.max_caption_chars:
        raise InputError(f"--min-caption-chars {o.min_caption_chars} is above --max-caption-chars "
                         f"{o.max_caption_chars}: no caption could pass")
    if o.oversample < 1:
        raise InputError(f"--oversample must be >= 1 (it raises t to cover fetch failures), got {o.oversample}")
    shard_config(o)  # image and fetch options check themselves
    if o.eval_index and not FileSystems.exists(o.eval_index):
        raise InputError(f"--eval-index {o.eval_index!r}: no such file; build one with `openwit eval-index`")
    probe = FileSystems.join(o.output, ".openwit-write-test")
    try:
        with FileSystems.create(probe) as f:
            f.write(b"ok")
        FileSystems.delete([probe])
    except Exception as e:
        raise InputError(f"output folder {o.output!r} is not writable: {e}") from e


def caption_rules(o: BuildWitOptions) -> CaptionRules:
    languages = tuple(code.strip() for code in (o.languages or "").split(",") if code.strip())
    return CaptionRules(min_chars=o.min_caption_chars, max_chars=o.max_caption_chars, languages=languages,
                        language_confidence=o.language_confidence)


def fetch_options(o: BuildWitOptions) -> fetch.FetchOptions:
    """The same client, limits and politeness for pages (--page-urls) and images."""
    return fetch.FetchOptions(
        timeout_s=o.fetch_timeout, max_bytes=o.max_bytes, user_agent=o.fetch_user_agent,
        allow_private_addresses=o.allow_private_addresses, respect_robots=not o.ignore_robots_txt,
        stall_timeout_s=o.stall_timeout,
        respect_opt_outs=not o.ignore_opt_outs, max_concurrency=o.max_concurrency,
        per_host_concurrency=o.per_host_concurrency, min_host_delay_s=o.min_host_delay, retries=o.retries,
        max_host_rate=o.max_host_rate,
        dns_servers=tuple(s.strip() for s in (o.dns_servers or "").split(",") if s.strip()))


def default_quality(encode_format: str) -> int:
    # png's "quality" is a zlib compression level (as in img2dataset); 6 is zlib's own default.
    return 6 if encode_format == "png" else resize.ImageOptions.encode_quality


def shard_config(o: BuildWitOptions, progress_dir: str | None = None) -> ShardConfig:
    return ShardConfig(
        output=o.output,
        fetch=fetch_options(o),
        image=resize.ImageOptions(
            image_size=o.image_size, resize_mode=o.resize_mode, encode_format=o.encode_format,
            encode_quality=default_quality(o.encode_format) if o.encode_quality is None else o.encode_quality,
            min_image_size=o.min_image_size,
            max_aspect_ratio=float("inf") if o.max_aspect_ratio is None else o.max_aspect_ratio),
        eval_index=o.eval_index, decontaminate=o.decontaminate, threads=o.threads,
        processes=o.sample_processes or 0, progress_dir=progress_dir,
    )


def _reject(candidate: dict, stage: str, reason: str) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput("rejects", {
        "url": candidate["url"], "caption": candidate["caption"], "stage": stage, "reason": reason,
        "source": candidate["source"]})


class CleanCaptionFn(beam.DoFn):
    """Caption stage: normalize the caption or reject the candidate with the reason."""

    def __init__(self, rules: CaptionRules):
        self.cleaner = CaptionCleaner(rules)

    def setup(self):
        self.cleaner.setup()  # the language detector, once per worker

    def process(self, candidate):
        caption, reason = self.cleaner.clean(candidate["caption"])
        if reason:
            yield _reject(candidate, "caption", reason)
        else:
            yield {**candidate, "caption": caption}


class MatchQueriesFn(beam.DoFn):
    """Match stage, on a batch of candidates: attach the ids of the queries found in each caption; no query,
    no candidate. Batches, because one compiled call per caption takes twice as long per caption."""

    def __init__(self, queries_path: str):
        self.queries_path = queries_path

    def setup(self):
        # 500k queries: the word trie is built once per worker, not shipped inside the pickled DoFn.
        self.matcher = make_matcher(load_queries(self.queries_path))

    def process(self, batch):
        faults.maybe_fail("match")  # per batch: a check per caption would cost a third of the matcher's time
        for candidate, queries in zip(batch, self.matcher.match_many([c["caption"] for c in batch])):
            if queries:
                yield {**candidate, "queries": queries}
            else:
                yield _reject(candidate, "match", "no_query_match")


def _dedup_order(candidate: dict) -> tuple:
    return candidate["caption"], candidate["page_url"], candidate["source"]


def _first_of_url(url_and_candidates):
    """URL dedup stage: one candidate per image URL (the first in a stable order); the rest are rejects.

    Two streaming passes instead of a sort: an icon linked from millions of pages must not have all its
    candidates in one worker's memory (Beam re-reads a large group from the shuffle for the second pass)."""
    _url, candidates = url_and_candidates
    best = min(map(_dedup_order, candidates))
    kept = False
    for candidate in candidates:
        if not kept and _dedup_order(candidate) == best:
            kept = True
            yield candidate
        else:
            yield _reject(candidate, "dedup", "duplicate_url")


def _reject_key(reject: dict) -> tuple[str, str]:
    beam.metrics.Metrics.counter(reject["stage"], reject["reason"]).inc()  # live in the runner's UI (Dataflow)
    return reject["stage"], reject["reason"]


def build_pipeline(p: beam.Pipeline, o: BuildWitOptions, progress_dir: str | None = None) -> None:
    # Every source yields the same candidate record and read-stage rejects; any mix runs in one pipeline.
    sources = []
    if o.pairs:
        sources.append(p | "ReadPairs" >> ReadPairs(
            o.pairs, TableColumns(url=o.url_col, caption=o.caption_col, page_url=o.page_url_col)))
    if o.warc:
        sources.append(p | "ReadWarc" >> ReadWarc(o.warc, o.max_page_bytes))
    if o.wat:
        sources.append(p | "ReadWat" >> ReadWat(o.wat, o.max_page_bytes))
    if o.page_urls:
        sources.append(p | "ReadPages" >> ReadPages(o.page_urls, fetch_options(o)))
    pairs = [candidates for candidates, _ in sources] | "AllCandidates" >> beam.Flatten()
    read_rejects = [rejects for _, rejects in sources] | "AllReadRejects" >> beam.Flatten()

    cleaned = pairs | "CleanCaptions" >> beam.ParDo(CleanCaptionFn(caption_rules(o))).with_outputs(
        "rejects", main="kept")
    matched = (
        cleaned.kept
        | "BatchForMatching" >> beam.BatchElements(min_batch_size=MATCH_BATCH, max_batch_size=MATCH_BATCH)
        | "MatchQueries" >> beam.ParDo(MatchQueriesFn(o.queries)).with_outputs("rejects", main="kept")
    )
    unique = (
        matched.kept
        | "KeyByUrl" >> beam.Map(lambda c: (c["url"], c))
        | "GroupByUrl" >> beam.GroupByKey()
        | "OnePerUrl" >> beam.FlatMap(_first_of_url).with_outputs("rejects", main="kept")
    )
    kept, balance_rejects, query_candidates = unique.kept | "Balance" >> Balance(o.max_per_query, o.oversample)
    query_selected = (
        kept
        | "SelectedQueryIds" >> beam.FlatMap(lambda c: c["queries"])
        | "CountSelected" >> beam.combiners.Count.PerElement()
    )
    summaries = (
        kept
        | "PlanShards" >> PlanShards(o.samples_per_shard)
        | "WriteShards" >> beam.ParDo(WriteShardFn(shard_config(o, progress_dir)))
    )
    if progress_dir:
        kept | "RecordPlan" >> progress.RecordPlan(progress_dir, o.samples_per_shard)

    rejects = (read_rejects, cleaned.rejects, matched.rejects, unique.rejects, balance_rejects) | (
        "AllRejects" >> beam.Flatten())
    rejects | "WriteRejects" >> WriteRejects(o.output)
    reject_counts = (
        rejects
        | "RejectKey" >> beam.Map(_reject_key)
        | "CountRejects" >> beam.combiners.Count.PerElement()
    )
    n_candidates = (
        (pairs, read_rejects)
        | "AllRead" >> beam.Flatten()
        | "CountCandidates" >> beam.combiners.Count.Globally()
    )
    # Per-sample facts are summed by combines; only per-shard, per-query and per-eval-set totals meet at the end.
    query_kept = (
        summaries
        | "KeptPerShard" >> beam.FlatMap(lambda s: s["query_kept"].items())
        | "CountKept" >> beam.CombinePerKey(sum)
    )
    overlap_counts = (
        summaries
        | "Overlaps" >> beam.FlatMap(lambda s: [(m["eval_set"], m) for m in s["overlap"]])
        | "GroupByEvalSet" >> beam.GroupByKey()
        | "WriteOverlap" >> beam.Map(write_overlap, o.output)
    )
    output, queries_path = o.output, o.queries  # the closure below must pickle: plain strings only
    (
        summaries
        | "ShardStats" >> beam.Map(lambda s: {k: s[k] for k in ("shard", "count", "successes", "failed")})
        | "AllShardStats" >> beam.combiners.ToList()
        | "WriteTotals" >> beam.Map(
            lambda shards, n, rc, qc, qs, qk, oc: write_totals(
                output, load_queries(queries_path), n, rc, shards, qc, qs, qk, oc),
            beam.pvalue.AsSingleton(n_candidates), beam.pvalue.AsDict(reject_counts),
            beam.pvalue.AsDict(query_candidates), beam.pvalue.AsDict(query_selected),
            beam.pvalue.AsDict(query_kept), beam.pvalue.AsDict(overlap_counts))
        | "LogTotals" >> beam.Map(lambda stats: logging.info("OpenWIT totals: %s", stats))
    )


def parse_options(argv: list[str]) -> BuildWitOptions:
    options = parse_pipeline_options(argv, BuildWitOptions, "openwit build")
    use_every_core(options, argv)
    if options.sample_processes is None:
        options.sample_processes = default_sample_processes(options)
    return options


def run(argv: list[str] | None = None) -> BuildWitOptions:
    o = parse_options(sys.argv[1:] if argv is None else argv)
    check_options(o)
    load_queries(o.queries)  # a bad query list fails here, before the run, not inside a worker
    claim_output(o.output, make_record(o), o.overwrite)
    if summary := local_run_summary(o):
        print(f"openwit build: {summary}", file=sys.stderr)
    p = beam.Pipeline(options=o)
    with progress.local_progress(o.view_as(StandardOptions).runner, o.progress) as progress_dir:
        build_pipeline(p, o, progress_dir)
        gc.freeze()  # Beam, the pipeline graph: alive until the end; see WriteShardFn.setup
        try:
            p.run().wait_until_finish()
        finally:
            gc.unfreeze()  # the graph is garbage now: let the rest of this process collect it
    return o


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        help_parser(BuildWitOptions, "openwit build", __doc__.split("\n\n")[0]).print_help()
        return 0
    # The dataset card's charts are drawn by a process of their own, which imports matplotlib now, beside this
    # one's single-threaded start-up, and draws while this one samples languages (pipeline/chart_worker.py).
    with ChartProcess() as chart_process:
        try:
            o = run(argv)
        except InputError as e:
            print(f"build_wit: error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        from pipeline import report  # lingua and PIL's thumbnails load in the launcher only, never in workers

        # aggregates.json, report.html
        print(report.finish_build(o.output, o.max_per_query * o.oversample, chart_process))
    return 0

