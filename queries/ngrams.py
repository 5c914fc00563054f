"""Word and bigram counts over Wikipedia, and the bigrams' PMI, as Beam combines.

PMI, exactly as MetaCLIP computes it (metaclip/build_metadata.py: `wiki_bigrams` scores bigrams with NLTK's
`BigramCollocationFinder(word_fd, bigram_fd).score_ngrams(BigramAssocMeasures.pmi)`):

    pmi(w1 w2) = log2( count(w1 w2) * N / (count(w1) * count(w2)) ),   N = total number of word tokens

It is base 2 (bits), not the natural log, and N is the corpus size, not the number of bigrams. MetaCLIP keeps
pmi >= 30, i.e. the pair occurs 2^30 (~1.07e9) times more often than chance. That cut depends on corpus size:
since count(w1 w2) <= min(count(w1), count(w2)), pmi <= log2(N / max(count(w1), count(w2))), so only pairs of
words each occurring at most N / 2^30 times can pass (about 4 times each on English Wikipedia's ~4e9 tokens):
rare names that nearly always occur together. A bigram seen once passes as soon as N >= 2^30 and its words
are unique, so we also require a minimum bigram count (default 2; MetaCLIP has none, i.e. 1).

Scale: counts are pre-summed per bundle inside the counting DoFn (a bounded dictionary, flushed when it
grows), cut into COUNT_SHARDS tables by a stable hash of the key, and the tables of each shard are summed
across workers by CombinePerKey. The PMI join looks up count(w1) and count(w2) with two
keyed joins; before joining, words that occur more than N / 2^min_pmi times (which can never pass) are cut,
which also removes the hot keys ("the", "of") whose groups would otherwise be huge.
"""

import math
import zlib
from collections import Counter

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from queries.tokens import segments
from queries.wikitext import strip_markup

FLUSH_AT_KEYS = 500_000  # distinct unigrams + bigrams held per worker before they are emitted (~100 MB)
COUNT_SHARDS = 512  # partial count tables per flush; each shard's total table is 1/512 of the vocabulary
HOT_WORD_COUNT = 10_000  # a word more frequent than this that cannot reach min_pmi is dropped before the join


def count_text(text: str, unigrams: Counter, bigrams: Counter) -> int:
    """Add the words and adjacent word pairs of plain `text` to the counters; return its number of words."""
    runs = segments(text)
    # One update per article, not per segment: Counter.update has a fixed cost per call.
    words = [word for run in runs for word in run]
    unigrams.update(words)
    bigrams.update(pair for run in runs for pair in zip(run, run[1:]))
    return len(words)


def pmi(bigram_count: int, count1: int, count2: int, total: int) -> float:
    """MetaCLIP's (NLTK's) PMI in bits; see the module docstring."""
    return math.log2(bigram_count * total / (count1 * count2))


def max_word_count_for(total: int, min_pmi: float) -> float:
    """No bigram containing a word counted more often than this can have pmi >= min_pmi."""
    return total / 2.0**min_pmi


def shard_of(key, shards: int) -> int:
    """A stable shard for a word or word pair (Python's hash() differs between worker processes)."""
    text = key if isinstance(key, str) else "\x1f".join(key)
    return zlib.crc32(text.encode("utf-8", "surrogatepass")) % shards


def split_into_shards(counts: Counter, shards: int) -> dict[int, dict]:
    tables = {}
    for key, n in counts.items():
        tables.setdefault(shard_of(key, shards), {})[key] = n
    return tables


class CountNgrams(beam.DoFn):
    """Article wiki texts -> partial count tables (shard, {word: n}) and, on "bigrams", (shard, {(w1, w2): n}).

    Counts are summed inside the bundle first (in-mapper combining) and leave the worker as one table per
    shard, so Beam moves a few hundred dictionaries instead of one element per distinct word: per-element
    overhead in Beam's Python SDK would otherwise cost ten times the counting itself. Memory stays under
    FLUSH_AT_KEYS entries.
    """

    def __init__(self, shards: int):
        self.shards = shards
        self.tokens = Metrics.counter("queries", "tokens_counted")

    def start_bundle(self):
        self.unigrams, self.bigrams = Counter(), Counter()

    def _flush(self, wrap):
        # finish_bundle has no input element to take a window from, so it must emit WindowedValues.
        for shard, table in split_into_shards(self.unigrams, self.shards).items():
            yield wrap((shard, table))
        for shard, table in split_into_shards(self.bigrams, self.shards).items():
            yield beam.pvalue.TaggedOutput("bigrams", wrap((shard, table)))
        self.unigrams, self.bigrams = Counter(), Counter()

    def process(self, wikitext):
        self.tokens.inc(count_text(strip_markup(wikitext), self.unigrams, self.bigrams))
        if len(self.unigrams) + len(self.bigrams) >= FLUSH_AT_KEYS:
            yield from self._flush(lambda value: value)

    def finish_bundle(self):
        yield from self._flush(GlobalWindows.windowed_value)


class MergeCounts(beam.CombineFn):
    """Sum count tables ({key: n}) of one shard; Counter.update adds a whole table in C."""

    def create_accumulator(self):
        return Counter()

    def add_input(self, accumulator, table):
        accumulator.update(table)
        return accumulator

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for other in accumulators:
            merged.update(other)
        return merged

    def extract_output(self, accumulator):
        return dict(accumulator)


def _join_first_word(item, max_count):
    """(w1, {"count": [c1], "bigrams": [(w2, c12), ...]}) -> (w2, (w1, c12, c1)) for each bigram."""
    w1, grouped = item
    counts = grouped["count"]
    if not counts or counts[0] > max_count:
        return
    for w2, n in grouped["bigrams"]:
        yield w2, (w1, n, counts[0])


def _score_second_word(item, total, min_pmi):
    """(w2, {"count": [c2], "bigrams": [(w1, c12, c1), ...]}) -> ("w1 w2", c12, pmi) for pmi >= min_pmi."""
    w2, grouped = item
    counts = grouped["count"]
    if not counts:
        return
    for w1, n, count1 in grouped["bigrams"]:
        score = pmi(n, count1, counts[0], total)
        if score >= min_pmi:
            yield f"{w1} {w2}", n, score


class CountWikipediaNgrams(beam.PTransform):
    """Article wiki texts -> (unigram_counts, bigram_counts, total_tokens).

    unigram_counts: (word, count) for every word; bigram_counts: ((w1, w2), count) for bigrams seen at least
    min_bigram_count times; total_tokens: one int. The sums are CombinePerKey over COUNT_SHARDS shards.
    """

    def __init__(self, min_bigram_count: int = 1, shards: int = COUNT_SHARDS):
        super().__init__()
        self.min_bigram_count, self.shards = min_bigram_count, shards

    def expand(self, articles):
        min_count = self.min_bigram_count
        counted = articles | "CountNgrams" >> beam.ParDo(CountNgrams(self.shards)).with_outputs(
            "bigrams", main="unigrams")
        unigram_tables = counted.unigrams | "SumUnigrams" >> beam.CombinePerKey(MergeCounts())
        unigram_counts = unigram_tables | "Unigrams" >> beam.FlatMap(lambda shard: shard[1].items())
        bigram_counts = (
            counted.bigrams
            | "SumBigrams" >> beam.CombinePerKey(MergeCounts())
            | "Bigrams" >> beam.FlatMap(lambda shard: ((pair, n) for pair, n in shard[1].items() if n >= min_count))
        )
        total = (unigram_tables
                 | "ShardTokens" >> beam.Map(lambda shard: sum(shard[1].values()))
                 | "TotalTokens" >> beam.CombineGlobally(sum))
        return unigram_counts, bigram_counts, total


class ScoreBigrams(beam.PTransform):
    """bigram_counts -> ("w1 w2", count, pmi) for bigrams with count >= min_count and pmi >= min_pmi."""

    def __init__(self, unigram_counts, total, min_pmi: float, min_count: int):
        super().__init__()
        self.unigram_counts, self.total = unigram_counts, total
        self.min_pmi, self.min_count = min_pmi, min_count

    def expand(self, bigram_counts):
        total = beam.pvalue.AsSingleton(self.total)
        min_pmi, min_count = self.min_pmi, self.min_count
        # Words that can never be in a passing bigram; only frequent ones are listed, so the set stays small.
        hot_words = (
            self.unigram_counts
            | "HotWords" >> beam.Filter(
                lambda wc, n: wc[1] > HOT_WORD_COUNT and wc[1] > max_word_count_for(n, min_pmi), total)
            | "HotWordKeys" >> beam.Keys()
            | "HotWordSet" >> beam.combiners.ToSet()
        )
        by_first_word = (
            bigram_counts
            | "MinBigramCount" >> beam.Filter(lambda pc: pc[1] >= min_count)
            | "DropHotWords" >> beam.Filter(
                lambda pc, hot: pc[0][0] not in hot and pc[0][1] not in hot, beam.pvalue.AsSingleton(hot_words))
            | "KeyByFirstWord" >> beam.Map(lambda pc: (pc[0][0], (pc[0][1], pc[1])))
        )
        with_first_count = (
            {"count": self.unigram_counts, "bigrams": by_first_word}
            | "JoinFirstWord" >> beam.CoGroupByKey()
            | "FirstWordCount" >> beam.FlatMap(
                lambda item, n: _join_first_word(item, max_word_count_for(n, min_pmi)), total)
        )
        return (
            {"count": self.unigram_counts, "bigrams": with_first_count}
            | "JoinSecondWord" >> beam.CoGroupByKey()
            | "Pmi" >> beam.FlatMap(_score_second_word, total, min_pmi)
        )
