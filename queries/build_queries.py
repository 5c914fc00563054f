"""Build CLIP's query list (WIT's 500,000 queries) from Wikipedia, its page views and WordNet.

The recipe is the CLIP paper's (sec. 2.2) as MetaCLIP reproduces it (DESIGN.md §4):
  unigram  every word of English Wikipedia articles occurring >= --min-unigram-count times (100)
  bigram   adjacent word pairs with PMI >= --min-pmi (30 bits, MetaCLIP's NLTK PMI; see queries/ngrams.py)
           seen >= --min-bigram-count times (2)
  title    article titles viewed >= --min-title-views times (70), summed over the page-view files given
  wordnet  every WordNet lemma
then union with source tags, dedupe and cap at --max-queries (500,000) by the rule in queries/merge.py.
Output (local or any Beam filesystem): queries.parquet, queries.txt, queries_summary.json (counts, rejects).

Run: `openwit queries ...`, `python -m queries.build_queries ...` or `beam run queries/build_queries.py ...`;
any Beam option passes through (--runner DataflowRunner ...). With no --runner it runs locally on FnApiRunner
(add --direct_running_mode=multi_processing --direct_num_workers=N for N worker processes).
"""

import argparse
import logging
import os
import re
import sys

if __package__ in (None, ""):  # `python queries/build_queries.py`: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from openwit.errors import EXIT_BAD_INPUT, InputError
from openwit.files import expand_patterns
from openwit.options import OutputOptions, help_parser, parse_pipeline_options
from queries import wordnet
from queries.merge import MergeAndWrite, write_summary
from queries.ngrams import CountWikipediaNgrams, ScoreBigrams
from queries.pageviews import DEFAULT_PROJECTS, SKIPPED_PROJECT_COUNTER, TitleViews
from queries.wiki_dump import ReadWikipedia, check_dump_start


class BuildQueriesOptions(OutputOptions, PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        inputs = parser.add_argument_group("inputs (give at least one source)")
        inputs.add_argument("--wiki-dump", action="append", default=[],
                            help="Wikipedia XML dump(s): paths or globs, .xml/.xml.bz2/.xml.gz (repeatable)")
        inputs.add_argument("--wiki-index", action="append", default=[],
                            help="multistream index(es) (*-multistream-index.txt.bz2) of the dumps, to split a "
                                 "dump across workers (repeatable, optional)")
        inputs.add_argument("--pageviews", action="append", default=[],
                            help="page-view dump(s) `project title count bytes`: paths or globs (repeatable)")
        inputs.add_argument("--wordnet", help="WordNet 3.x dict directory (data.noun, data.verb, ...)")

        keep = parser.add_argument_group("thresholds")
        keep.add_argument("--min-unigram-count", type=int, default=100)
        keep.add_argument("--min-pmi", type=float, default=30.0, help="in bits (log2), as MetaCLIP/NLTK")
        keep.add_argument("--min-bigram-count", type=int, default=2)
        keep.add_argument("--min-title-views", type=int, default=70)
        keep.add_argument("--projects", default=",".join(DEFAULT_PROJECTS),
                          help="page-view project codes to count, comma-separated")
        keep.add_argument("--max-queries", type=int, default=500_000)


def _help_parser() -> argparse.ArgumentParser:
    return help_parser(BuildQueriesOptions, "openwit queries",
                       "Build CLIP's query list from Wikipedia, page views and WordNet.")


def parse_options(argv: list[str]) -> BuildQueriesOptions:
    return parse_pipeline_options(argv, BuildQueriesOptions, "openwit queries")


def check_options(o: BuildQueriesOptions) -> None:
    if not (o.wiki_dump or o.pageviews or o.wordnet):
        raise InputError("no input: give --wiki-dump, --pageviews and/or --wordnet")
    if o.wiki_index and not o.wiki_dump:
        raise InputError("--wiki-index needs the dump it indexes: give --wiki-dump too")
    if not o.output:
        raise InputError("no output folder: give --output")
    for name in ("min_unigram_count", "min_bigram_count", "min_title_views", "max_queries"):
        if getattr(o, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(o, name)}")
    if not [p for p in o.projects.split(",") if p.strip()]:
        raise InputError("--projects is empty; give page-view project codes such as en,en.m")


def build_pipeline(p: beam.Pipeline, o: BuildQueriesOptions) -> None:
    """Wire the sources into (query, (source, evidence)) offers and merge them into the written list."""
    offers = []
    if o.wiki_dump:
        dumps = expand_patterns(o.wiki_dump, "--wiki-dump")
        indexes = expand_patterns(o.wiki_index, "--wiki-index") if o.wiki_index else []
        for path in dumps:
            check_dump_start(path)  # a wrong file fails here, before any worker starts
        articles = p | "ReadWikipedia" >> ReadWikipedia(dumps, indexes)
        unigram_counts, bigram_counts, total = articles | "CountNgrams" >> CountWikipediaNgrams(o.min_bigram_count)
        min_unigram = o.min_unigram_count
        offers.append(
            unigram_counts
            | "MinUnigramCount" >> beam.Filter(lambda wc: wc[1] >= min_unigram)
            | "UnigramOffers" >> beam.MapTuple(lambda word, n: (word, ("unigram", n))))
        offers.append(
            bigram_counts
            | "ScoreBigrams" >> ScoreBigrams(unigram_counts, total, o.min_pmi, o.min_bigram_count)
            | "BigramOffers" >> beam.Map(lambda scored: (scored[0], ("bigram", (scored[1], scored[2])))))
    if o.pageviews:
        projects = [code.strip() for code in o.projects.split(",") if code.strip()]
        offers.append(
            p
            | "TitleViews" >> TitleViews(expand_patterns(o.pageviews, "--pageviews"), o.min_title_views, projects)
            | "TitleOffers" >> beam.MapTuple(lambda title, views: (title, ("title", views))))
    if o.wordnet:
        offers.append(
            p
            | "WordNetFiles" >> beam.Create(wordnet.data_paths(o.wordnet))
            | "WordNetLemmas" >> beam.FlatMap(wordnet.read_lemmas)
            | "WordNetOffers" >> beam.Map(lambda lemma: (lemma, ("wordnet", None))))
    (offers | "AllOffers" >> beam.Flatten()
     | "MergeAndWrite" >> MergeAndWrite(o.max_queries, o.output))


_WORKER_INPUT_ERROR = re.compile(r"openwit\.errors\.InputError: (.*)")
_BEAM_STEP_SUFFIX = re.compile(r" \[while running '[^']*'\]$")


def _input_error_from_worker(error: Exception) -> InputError | None:
    """Workers' InputErrors reach the driver wrapped (a RuntimeError holding the remote traceback)."""
    if isinstance(error, InputError):
        return InputError(_BEAM_STEP_SUFFIX.sub("", str(error)))
    found = _WORKER_INPUT_ERROR.search(str(error))
    return InputError(_BEAM_STEP_SUFFIX.sub("", found.group(1).strip())) if found else None


def counters(result) -> dict[str, int]:
    """The pipeline's `queries` counters, summed over steps."""
    totals = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace("queries"))["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + (value or 0)
    return totals


def check_sources(o: BuildQueriesOptions, counts: dict[str, int]) -> list[str]:
    """An InputError when a given input yielded nothing at all; warnings for empty sources."""
    if o.wiki_dump and counts.get("pages_articles", 0) == 0:
        raise InputError(f"--wiki-dump {o.wiki_dump}: no article (namespace 0, not a redirect) in the dump(s); "
                         "give a pages-articles dump")
    warnings = []
    for source, given in (("unigram", o.wiki_dump), ("bigram", o.wiki_dump), ("title", o.pageviews),
                          ("wordnet", o.wordnet)):
        if given and counts.get(f"entries_{source}", 0) == 0:
            why = "its input is too small for the thresholds"
            skipped = skipped_projects(counts)
            if source == "title" and skipped:
                why = (f"its lines are of projects other than --projects {o.projects} ({_top(skipped)} lines "
                       "skipped), or too few views for the thresholds")
            warnings.append(f"source {source!r} contributed no entry: {why}")
    return warnings


def skipped_projects(counts: dict[str, int]) -> dict[str, int]:
    """Page-view lines skipped per project not in --projects, most first."""
    skipped = {name.removeprefix(SKIPPED_PROJECT_COUNTER): n for name, n in counts.items()
               if name.startswith(SKIPPED_PROJECT_COUNTER)}
    return dict(sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))


def _top(skipped: dict[str, int], n: int = 5) -> str:
    shown = ", ".join(f"{project} {count}" for project, count in list(skipped.items())[:n])
    return shown + (f" and {len(skipped) - n} more projects" if len(skipped) > n else "")


def run(argv: list[str] | None = None) -> dict:
    """Build the list; return the summary also written to OUTPUT/queries_summary.json."""
    o = parse_options(sys.argv[1:] if argv is None else argv)
    check_options(o)
    p = beam.Pipeline(options=o)
    build_pipeline(p, o)
    try:
        result = p.run()
        result.wait_until_finish()
    except Exception as e:
        error = _input_error_from_worker(e)
        if error is None:
            raise
        raise error from e
    counts = counters(result)
    warnings = check_sources(o, counts)
    summary = {
        "counters": counts,
        "pageview_lines_skipped_by_project": skipped_projects(counts),
        "warnings": warnings,
        "thresholds": {name: getattr(o, name) for name in (
            "min_unigram_count", "min_pmi", "min_bigram_count", "min_title_views", "max_queries", "projects")},
        "inputs": {"wiki_dump": o.wiki_dump, "wiki_index": o.wiki_index, "pageviews": o.pageviews,
                   "wordnet": o.wordnet},
    }
    write_summary(summary, o.output)
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        _help_parser().print_help()
        return 0
    try:
        summary = run(argv)
    except InputError as e:
        print(f"build_queries: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    counts = summary["counters"]
    print(f"build_queries: wrote {counts.get('queries_written', 0)} queries "
          f"(of {counts.get('entries_merged', 0)} candidates: "
          + ", ".join(f"{s} {counts.get('entries_' + s, 0)}" for s in ("unigram", "bigram", "title", "wordnet"))
          + f"); {counts.get('tokens_counted', 0)} tokens in {counts.get('pages_articles', 0)} articles")
    if summary["pageview_lines_skipped_by_project"]:
        print("build_queries: page-view lines of projects not in --projects, skipped: "
              + _top(summary["pageview_lines_skipped_by_project"]))
    for warning in summary["warnings"]:
        print(f"build_queries: warning: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    sys.exit(main())
