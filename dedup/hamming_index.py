"""Find every stored 64-bit hash within Hamming distance r of a query, without scanning them all.

Multi-index hashing (Norouzi, Punjani & Fleet, CVPR 2012): cut each 64-bit code into m substrings and
keep, per substring, a table from substring value to the codes that have it. If two codes differ in at
most r bits, then by the pigeonhole principle at least one of their m substrings differs in at most
r // m bits. So probing, in every table, all substring values within r // m bits of the query's substring
finds a superset of the answer; the candidates are then checked with a full 64-bit popcount. The answer is
exactly the brute-force answer (tests/test_dedup_hamming.py checks that with hypothesis), at a cost that
grows with the number of candidates, not with the index size.

Tables are CSR arrays (per substring value, a slice of code ids), and one lookup is a fixed handful of
numpy calls over all tables at once, so Python overhead does not grow with the number of probes.
"""

from functools import lru_cache
from itertools import combinations

import numpy as np

CODE_BITS = 64
MAX_TABLE_BITS = 22  # a table's offsets array has 2**bits + 1 entries: 32 MiB of int64 at 22 bits
MIN_TABLES = -(-CODE_BITS // MAX_TABLE_BITS)  # 3


@lru_cache(maxsize=None)
def _flip_masks(bits: int, radius: int) -> np.ndarray:
    """Every `bits`-bit mask with at most `radius` bits set: XOR-ing them with a key gives its neighbours."""
    masks = [0]
    for k in range(1, min(radius, bits) + 1):
        masks += [sum(1 << b for b in chosen) for chosen in combinations(range(bits), k)]
    return np.array(masks, dtype=np.int64)


def _split(tables: int) -> list[tuple[int, int]]:
    """(shift, bits) of each substring when 64 bits are cut into `tables` nearly equal parts."""
    base, extra = divmod(CODE_BITS, tables)
    parts, shift = [], 0
    for t in range(tables):
        bits = base + (1 if t < extra else 0)
        parts.append((shift, bits))
        shift += bits
    return parts


def choose_tables(size: int, radius: int) -> int:
    """The number of substrings that minimises the expected probes + candidates of one lookup.

    Too few tables: each probes a huge neighbourhood (sum of C(bits, k) for k <= radius // m).
    Too many: short substrings, crowded buckets, many candidates. The balance depends on the index size.
    """
    best, best_cost = MIN_TABLES, float("inf")
    for m in range(MIN_TABLES, 17):
        parts = _split(m)
        if max(bits for _, bits in parts) > MAX_TABLE_BITS:
            continue
        sub_radius = radius // m
        cost = 0.0
        for _, bits in parts:
            probes = sum(_comb(bits, k) for k in range(min(sub_radius, bits) + 1))
            cost += probes * (1.0 + size / 2**bits)
        if cost < best_cost:
            best, best_cost = m, cost
    return best


def _comb(n: int, k: int) -> int:
    from math import comb

    return comb(n, k)


def popcount_distance(codes: np.ndarray, query: int) -> np.ndarray:
    """Hamming distances from `query` to every code (uint8 array)."""
    return np.bitwise_count(codes ^ np.uint64(query))


def brute_force(codes: np.ndarray, query: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, distances) of all codes within `radius` of `query`, by scanning every code; ids ascending."""
    dist = popcount_distance(codes, query)
    ids = np.flatnonzero(dist <= radius)
    return ids, dist[ids].astype(np.int64)


class HammingIndex:
    """An immutable index over a uint64 array of codes; code i is reported as id i.

    `radius` is the radius the tables are tuned for; lookups may ask for any radius (larger ones just
    probe more). Everything is plain numpy arrays, so the index pickles and rebuilds cheaply.
    """

    def __init__(self, codes: np.ndarray, radius: int = 10, tables: int | None = None):
        self.codes = np.ascontiguousarray(codes, dtype=np.uint64)
        self.tables = tables or choose_tables(len(self.codes), radius)
        if not MIN_TABLES <= self.tables <= CODE_BITS:
            raise ValueError(f"tables={self.tables}: need {MIN_TABLES}..{CODE_BITS} substrings of 64 bits")
        self.parts = _split(self.tables)
        # All tables share two flat arrays: offsets (table t's slice starts at table_base[t]) and ids.
        offsets, ids, bases, base = [], [], [], 0
        for shift, bits in self.parts:
            keys = ((self.codes >> np.uint64(shift)) & np.uint64((1 << bits) - 1)).astype(np.int64)
            counts = np.bincount(keys, minlength=1 << bits)
            table_offsets = np.zeros((1 << bits) + 1, dtype=np.int64)
            np.cumsum(counts, out=table_offsets[1:])
            # ids of table t live at positions t*n .. (t+1)*n-1 of the shared ids array.
            offsets.append(table_offsets + len(self.codes) * len(bases))
            ids.append(np.argsort(keys, kind="stable").astype(np.int32))
            bases.append(base)
            base += (1 << bits) + 1
        self._offsets = np.concatenate(offsets) if offsets else np.zeros(1, dtype=np.int64)
        self._ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int32)
        self._bases = np.array(bases, dtype=np.int64)
        self._probe_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.codes)

    def __getstate__(self):
        # The tables are cheap to rebuild and three times the size of the codes: pickle only the codes.
        return {"codes": self.codes, "tables": self.tables}

    def __setstate__(self, state):
        self.__init__(state["codes"], tables=state["tables"])

    def _probes(self, sub_radius: int) -> tuple[np.ndarray, np.ndarray]:
        """For every table, the flip masks to probe: (table of each mask, mask)."""
        if sub_radius not in self._probe_cache:
            tables, masks = [], []
            for t, (_, bits) in enumerate(self.parts):
                m = _flip_masks(bits, sub_radius)
                tables.append(np.full(len(m), t, dtype=np.int64))
                masks.append(m)
            self._probe_cache[sub_radius] = (np.concatenate(tables), np.concatenate(masks))
        return self._probe_cache[sub_radius]

    def _substrings(self, queries: np.ndarray) -> np.ndarray:
        """(len(queries), tables) array of each query's substring values."""
        q = np.asarray(queries, dtype=np.uint64)[:, None]
        shifts = np.array([s for s, _ in self.parts], dtype=np.uint64)
        widths = np.array([(1 << b) - 1 for _, b in self.parts], dtype=np.uint64)
        return ((q >> shifts) & widths).astype(np.int64)

    def _candidate_ids(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (into the flattened probe array) and code ids of every code in the probed buckets."""
        starts = self._offsets[keys]
        lengths = self._offsets[keys + 1] - starts
        total = int(lengths.sum())
        if total == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
        ends = np.cumsum(lengths)
        positions = np.repeat(starts - ends + lengths, lengths) + np.arange(total)
        owner = np.repeat(np.arange(len(keys)), lengths)
        return owner, self._ids[positions]

    def query(self, query: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, distances) of every code within `radius` of `query`; ids ascending, exactly brute force."""
        if len(self.codes) == 0 or radius < 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        mask_table, masks = self._probes(radius // self.tables)
        subs = self._substrings(np.array([query], dtype=np.uint64))[0]
        keys = (subs[mask_table] ^ masks) + self._bases[mask_table]
        _, ids = self._candidate_ids(keys)
        dist = popcount_distance(self.codes[ids], query)
        hit = dist <= radius
        ids, first = np.unique(ids[hit], return_index=True)  # a code may be found through several tables
        return ids.astype(np.int64), dist[hit][first].astype(np.int64)

    def query_many(self, queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (query position, id, distance) triples within `radius`, sorted by query then id.

        The batch form amortises numpy's per-call overhead over many queries.
        """
        queries = np.asarray(queries, dtype=np.uint64)
        empty = np.zeros(0, dtype=np.int64)
        if len(self.codes) == 0 or len(queries) == 0 or radius < 0:
            return empty, empty, empty
        mask_table, masks = self._probes(radius // self.tables)
        subs = self._substrings(queries)  # (Q, tables)
        keys = ((subs[:, mask_table] ^ masks) + self._bases[mask_table]).ravel()
        owner, ids = self._candidate_ids(keys)
        qpos = owner // len(masks)
        dist = np.bitwise_count(self.codes[ids] ^ queries[qpos])
        hit = dist <= radius
        qpos, ids, dist = qpos[hit], ids[hit].astype(np.int64), dist[hit].astype(np.int64)
        # Deduplicate (query, id) pairs found through several tables.
        pair = qpos * len(self.codes) + ids
        pair, first = np.unique(pair, return_index=True)
        return pair // len(self.codes), pair % len(self.codes), dist[first]
