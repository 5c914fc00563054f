"""Union of the four sources into one list: tag, dedupe, cap at --max-queries, write.

Each source offers (query, source, evidence). Queries are normalised (whitespace runs -> one space, trimmed)
and entries from different sources with the same text become one entry that lists all its sources.
Dropped while merging: empty entries, punctuation-only entries, entries longer than 256 characters (as in
MetaCLIP 2's metadata builder).

Cap rule ("best supported" first), deterministic:
  1. more sources first: a word that is frequent, a WordNet lemma and a popular title is surely a concept;
  2. then more uses: max(unigram_count, bigram_count, views), i.e. how often Wikipedia's text mentions it or
     its readers open it (WordNet-only entries have 0 and come last in their group);
  3. then the query text, so ties break the same way on every run.
The list is written best first, so a query's id (its position) also ranks it.
"""

import io
import json

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from openwit.errors import InputError
from queries.tokens import is_punctuation_only

SOURCES = ("unigram", "bigram", "title", "wordnet")
MAX_QUERY_CHARS = 256

SCHEMA = pa.schema([
    ("query", pa.string()),
    ("sources", pa.list_(pa.string())),
    ("unigram_count", pa.int64()),
    ("bigram_count", pa.int64()),
    ("pmi", pa.float64()),
    ("views", pa.int64()),
])


def normalize_query(text: str) -> str | None:
    query = " ".join(text.split())
    if not query or len(query) > MAX_QUERY_CHARS or is_punctuation_only(query):
        return None
    return query


def merge_entry(query: str, offers) -> dict:
    """One output row from the (source, evidence) offers made for `query`."""
    entry = {"query": query, "sources": [], "unigram_count": None, "bigram_count": None, "pmi": None,
             "views": None}
    sources = set()
    for source, evidence in offers:
        sources.add(source)
        if source == "unigram":
            entry["unigram_count"] = evidence
        elif source == "bigram":
            entry["bigram_count"], entry["pmi"] = evidence
        elif source == "title":
            entry["views"] = evidence
    entry["sources"] = [s for s in SOURCES if s in sources]
    return entry


def rank_key(entry: dict) -> tuple:
    """Smaller is better; see the module docstring."""
    uses = max(entry["unigram_count"] or 0, entry["bigram_count"] or 0, entry["views"] or 0)
    return -len(entry["sources"]), -uses, entry["query"]


def write_query_list(entries: list[dict], output: str) -> None:
    """queries.parquet (all columns) and queries.txt (one query per line), best first."""
    if not entries:
        raise InputError("no query passed the thresholds, so no list was written; lower --min-unigram-count, "
                         "--min-title-views or --min-pmi, or give more input")
    table = pa.Table.from_pylist(entries, schema=SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    with FileSystems.create(FileSystems.join(output, "queries.parquet")) as f:
        f.write(buffer.getvalue())
    with FileSystems.create(FileSystems.join(output, "queries.txt")) as f:
        f.write("".join(entry["query"] + "\n" for entry in entries).encode("utf-8"))


def write_summary(summary: dict, output: str) -> None:
    with FileSystems.create(FileSystems.join(output, "queries_summary.json")) as f:
        f.write(json.dumps(summary, indent=2, sort_keys=True).encode("utf-8"))


class _MergeEntry(beam.DoFn):
    def __init__(self):
        self.entries = Metrics.counter("queries", "entries_merged")
        self.per_source = {source: Metrics.counter("queries", f"entries_{source}") for source in SOURCES}

    def process(self, grouped):
        entry = merge_entry(*grouped)
        self.entries.inc()
        for source in entry["sources"]:
            self.per_source[source].inc()
        yield entry


class _Write(beam.DoFn):
    def __init__(self, output: str):
        self.output = output
        self.written = Metrics.counter("queries", "queries_written")

    def process(self, best):
        write_query_list(best, self.output)
        self.written.inc(len(best))
        yield len(best)


class MergeAndWrite(beam.PTransform):
    """(query, (source, evidence)) offers -> the capped list, written to `output` (emits its length)."""

    def __init__(self, max_queries: int, output: str):
        super().__init__()
        self.max_queries, self.output = max_queries, output

    def expand(self, offers):
        return (
            offers
            | "Normalize" >> beam.FlatMap(
                lambda offer: [(query, offer[1])] if (query := normalize_query(offer[0])) is not None else [])
            | "GroupByQuery" >> beam.GroupByKey()
            | "MergeEntry" >> beam.ParDo(_MergeEntry())
            | "KeepBest" >> beam.combiners.Top.Of(self.max_queries, key=rank_key, reverse=True)
            | "Write" >> beam.ParDo(_Write(self.output))
        )
