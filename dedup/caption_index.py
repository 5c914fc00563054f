"""Find eval captions that a sample's caption copies or nearly copies (COCO/Flickr-style eval sets).

Captions are compared as sets of word bigrams after lower-casing and dropping punctuation, so
"A man riding a horse." and "a man riding a horse" are the same caption, while two different captions
that share common words ("a man ...") stay far apart. MinHash LSH (datasketch) finds candidates in time
independent of the number of eval captions; each candidate is then confirmed with the exact Jaccard
similarity of the bigram sets, so the reported distance (1 - Jaccard) is exact, not an estimate.
"""

import re

from datasketch import MinHash, MinHashLSH

NUM_PERM = 128
SEED = 1  # fixed: the same caption gets the same MinHash on every worker
# A sample caption within this distance (1 - Jaccard of word bigrams) of an eval caption is an overlap.
# 0.5 means at least half of the two captions' combined bigrams are shared: a copy with a word or two
# changed, added or dropped (see bench/RESULTS.md, "Eval-set decontamination").
DEFAULT_MAX_DISTANCE = 0.5
MIN_WORDS = 3  # "a dog" matches thousands of captions; so short a caption says nothing about copying

_WORD = re.compile(r"\w+")


def shingles(caption: str) -> frozenset[str]:
    """Word bigrams of the normalised caption; empty when it has fewer than MIN_WORDS words."""
    words = _WORD.findall(caption.lower())
    if len(words) < MIN_WORDS:
        return frozenset()
    return frozenset(f"{a} {b}" for a, b in zip(words, words[1:]))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def minhash(shingle_set: frozenset[str]) -> MinHash:
    m = MinHash(num_perm=NUM_PERM, seed=SEED)
    m.update_batch([s.encode("utf-8") for s in sorted(shingle_set)])
    return m


class CaptionIndex:
    """Eval captions, each owned by an eval item (an int the caller gives)."""

    def __init__(self, captions: list[str], owners: list[int], max_distance: float = DEFAULT_MAX_DISTANCE):
        self.captions, self.owners, self.max_distance = list(captions), list(owners), max_distance
        self._shingles = [shingles(c) for c in self.captions]
        # LSH banding tuned for the similarity threshold; a candidate still has to pass the exact check.
        self._lsh = MinHashLSH(threshold=max(0.05, 1.0 - max_distance) * 0.9, num_perm=NUM_PERM)
        with self._lsh.insertion_session() as session:
            for i, s in enumerate(self._shingles):
                if s:
                    session.insert(i, minhash(s), check_duplication=False)

    def __len__(self) -> int:
        return len(self.captions)

    def query(self, caption: str, max_distance: float | None = None) -> list[tuple[int, float]]:
        """(owner, distance) for every eval caption within `max_distance`; best distance per owner."""
        limit = self.max_distance if max_distance is None else max_distance
        s = shingles(caption)
        if not s or not self.captions:
            return []
        best: dict[int, float] = {}
        for i in self._lsh.query(minhash(s)):
            d = 1.0 - jaccard(s, self._shingles[i])
            if d <= limit and d < best.get(self.owners[i], 2.0):
                best[self.owners[i]] = d
        return sorted(best.items())
