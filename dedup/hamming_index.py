"""Find every stored 64-bit hash within Hamming distance r of a query, without scanning them all.

Multi-index hashing (Norouzi, Punjani & Fleet, CVPR 2012): cut each 64-bit code into m substrings and
keep, per substring, a table from substring value to the codes that have it. Write r = q*m + a with
0 <= a < m. If two codes differ in at most r bits, then one of the first a+1 substrings differs in at most
q bits, or one of the others in at most q-1 bits (else the differences add up to more than r). So probing
every substring value within q bits in the first a+1 tables, and within q-1 bits in the rest, finds a
superset of the answer; each candidate is then checked with a full 64-bit popcount. The answer is exactly
the brute-force answer (tests/test_dedup_hamming.py checks that with hypothesis).

Layout: per table, the codes sorted by their substring value (a copy, so a bucket is one contiguous run of
codes read front to back) and an offsets array indexed by substring value. A candidate found through
several tables is reported only by the first table that probes it, so no set is needed to deduplicate.

The inner loop is compiled with numba: the work per lookup is a few hundred bucket probes and a few
thousand popcounts, which is ~100x less than a numpy scan of a million codes, but numpy's per-call
overhead would eat most of that gain (measured in bench/bench_dedup_speed.py, see bench/RESULTS.md). The
kernels release the GIL, so the shard writer's thread pool looks up samples in parallel.
"""

from functools import lru_cache
from itertools import combinations
from math import comb

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

CODE_BITS = 64
MAX_TABLE_BITS = 22  # a table's offsets array has 2**bits + 1 entries: 32 MiB of int64 at 22 bits
MIN_TABLES = -(-CODE_BITS // MAX_TABLE_BITS)  # 3
MAX_TABLES = 16
# Cost model of one lookup, fitted to bench/bench_dedup_speed.py on the project's 2-core machine: a bucket
# probe is a cache miss (~100 ns), a candidate a streamed 8-byte read and a popcount (~6.5 ns).
PROBE_COST, CANDIDATE_COST = 100.0, 6.5


@intrinsic
def _popcount(typingctx, x):
    """LLVM's ctpop: one POPCNT instruction on the CPUs we run on (numba has no popcount of its own)."""
    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, args)

    return types.int64(types.uint64), codegen


@lru_cache(maxsize=None)
def _flip_masks(bits: int, radius: int) -> np.ndarray:
    """Every `bits`-bit mask with at most `radius` bits set: XOR-ing them with a key gives its neighbours."""
    masks = [0]
    for k in range(1, min(radius, bits) + 1):
        masks += [sum(1 << b for b in chosen) for chosen in combinations(range(bits), k)]
    return np.array(masks, dtype=np.uint64)


def _split(tables: int) -> list[tuple[int, int]]:
    """(shift, bits) of each substring when 64 bits are cut into `tables` nearly equal parts."""
    base, extra = divmod(CODE_BITS, tables)
    parts, shift = [], 0
    for t in range(tables):
        bits = base + (1 if t < extra else 0)
        parts.append((shift, bits))
        shift += bits
    return parts


def _table_radii(tables: int, radius: int) -> list[int]:
    """How many bits each table is probed at for a lookup of `radius` (-1: not probed at all)."""
    q, a = divmod(radius, tables)
    return [q if t <= a else q - 1 for t in range(tables)]


def lookup_cost(size: int, radius: int, tables: int) -> float:
    """Expected nanoseconds of one lookup (see PROBE_COST): bucket probes plus candidates checked."""
    cost = 0.0
    for (_, bits), r in zip(_split(tables), _table_radii(tables, radius)):
        probes = sum(comb(bits, k) for k in range(min(r, bits) + 1)) if r >= 0 else 0
        cost += probes * (PROBE_COST + CANDIDATE_COST * size / 2**bits)
    return cost


def choose_tables(size: int, radius: int) -> int:
    """The number of substrings that minimises the expected cost of one lookup.

    Too few tables: each probes a huge neighbourhood (sum of C(bits, k) for k <= radius // m).
    Too many: short substrings, crowded buckets, many candidates. The balance depends on the index size.
    """
    options = [m for m in range(MIN_TABLES, MAX_TABLES + 1)
               if max(bits for _, bits in _split(m)) <= MAX_TABLE_BITS]
    return min(options, key=lambda m: (lookup_cost(size, radius, m), m))


def popcount_distance(codes: np.ndarray, query: int) -> np.ndarray:
    """Hamming distances from `query` to every code (uint8 array)."""
    return np.bitwise_count(codes ^ np.uint64(query))


def brute_force(codes: np.ndarray, query: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, distances) of all codes within `radius` of `query`, by scanning every code; ids ascending."""
    dist = popcount_distance(codes, query)
    ids = np.flatnonzero(dist <= radius)
    return ids, dist[ids].astype(np.int64)


@intrinsic
def _prefetch(typingctx, array, index):
    """Ask the CPU to start loading array[index] now: bucket reads are cache misses, and a handful in
    flight at once instead of one after the other makes lookups ~1.5x faster (bench/bench_dedup_speed.py)."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        # read, keep in all cache levels, data cache
        builder.call(fn, [builder.bitcast(builder.gep(data, [args[1]]), i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, types.int64), codegen


PREFETCH_AHEAD = 8  # buckets requested ahead of the one being scanned


@numba.njit(nogil=True, cache=False)
def _search(query, radius, table_radii, probe_start, masks, shifts, widths, bases, offsets, sorted_codes,
            sorted_ids, n, qpos, out_q, out_ids, out_dist, found, starts, ends):
    """Append every code within `radius` of `query` to the out arrays from position `found` on.

    Returns the new count; past the arrays' capacity it only counts, so the caller can grow them and rerun.
    """
    tables = shifts.shape[0]
    probes = probe_start[tables]
    # First the bounds of every probed bucket (independent loads the CPU overlaps), then the buckets.
    for t in range(tables):
        key = (query >> shifts[t]) & widths[t]
        for p in range(probe_start[t], probe_start[t + 1]):
            slot = bases[t] + np.int64(key ^ masks[p])
            starts[p] = t * n + offsets[slot]
            ends[p] = t * n + offsets[slot + 1]
    for p in range(min(PREFETCH_AHEAD, probes)):
        _prefetch(sorted_codes, starts[p])
    t = 0
    for p in range(probes):
        while p >= probe_start[t + 1]:
            t += 1
        if p + PREFETCH_AHEAD < probes:
            _prefetch(sorted_codes, starts[p + PREFETCH_AHEAD])
        for j in range(starts[p], ends[p]):
            x = sorted_codes[j] ^ query
            d = _popcount(x)
            if d > radius:
                continue
            # Report the code only through the first table that probes it.
            earlier = False
            for u in range(t):
                if _popcount((x >> shifts[u]) & widths[u]) <= table_radii[u]:
                    earlier = True
                    break
            if earlier:
                continue
            if found < out_ids.shape[0]:
                out_q[found] = qpos
                out_ids[found] = sorted_ids[j]
                out_dist[found] = d
            found += 1
    return found


@numba.njit(nogil=True, cache=False)
def _search_many(queries, radius, table_radii, probe_start, masks, shifts, widths, bases, offsets, sorted_codes,
                 sorted_ids, n, out_q, out_ids, out_dist):
    starts = np.empty(masks.shape[0], dtype=np.int64)
    ends = np.empty(masks.shape[0], dtype=np.int64)
    found = 0
    for i in range(queries.shape[0]):
        found = _search(queries[i], radius, table_radii, probe_start, masks, shifts, widths, bases, offsets,
                        sorted_codes, sorted_ids, n, i, out_q, out_ids, out_dist, found, starts, ends)
    return found


class HammingIndex:
    """An immutable index over a uint64 array of codes; code i is reported as id i.

    `radius` is the radius the tables are tuned for; lookups may ask for any radius (larger ones just
    probe more). Everything is plain numpy arrays, so the index pickles and rebuilds cheaply.
    """

    def __init__(self, codes: np.ndarray, radius: int = 10, tables: int | None = None):
        self.codes = np.ascontiguousarray(codes, dtype=np.uint64)
        n = len(self.codes)
        self.tables = tables or choose_tables(n, radius)
        if not MIN_TABLES <= self.tables <= CODE_BITS:
            raise ValueError(f"tables={self.tables}: need {MIN_TABLES}..{CODE_BITS} substrings of 64 bits")
        self.parts = _split(self.tables)
        self._shifts = np.array([s for s, _ in self.parts], dtype=np.uint64)
        self._widths = np.array([(1 << b) - 1 for _, b in self.parts], dtype=np.uint64)
        # All tables share flat arrays: table t's offsets start at _bases[t]; its sorted codes and their
        # ids occupy positions t*n .. (t+1)*n-1.
        offsets, sorted_codes, sorted_ids, bases, base = [], [], [], [], 0
        for shift, bits in self.parts:
            keys = ((self.codes >> np.uint64(shift)) & np.uint64((1 << bits) - 1)).astype(np.int64)
            order = np.argsort(keys, kind="stable")
            table_offsets = np.zeros((1 << bits) + 1, dtype=np.int64)
            np.cumsum(np.bincount(keys, minlength=1 << bits), out=table_offsets[1:])
            offsets.append(table_offsets)
            sorted_codes.append(self.codes[order])
            sorted_ids.append(order.astype(np.int32))
            bases.append(base)
            base += (1 << bits) + 1
        self._offsets = np.concatenate(offsets)
        self._sorted_codes = np.concatenate(sorted_codes)
        self._sorted_ids = np.concatenate(sorted_ids)
        self._bases = np.array(bases, dtype=np.int64)
        self._probe_cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.codes)

    def __getstate__(self):
        # The tables are cheap to rebuild and several times the size of the codes: pickle only the codes.
        return {"codes": self.codes, "tables": self.tables}

    def __setstate__(self, state):
        self.__init__(state["codes"], tables=state["tables"])

    def _probes(self, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(radius of each table, start of each table's masks, the masks) for a lookup of `radius`."""
        probes = self._probe_cache.get(radius)
        if probes is None:
            radii = _table_radii(self.tables, radius)
            masks = [_flip_masks(bits, r) if r >= 0 else np.zeros(0, np.uint64)
                     for (_, bits), r in zip(self.parts, radii)]
            start = np.zeros(self.tables + 1, dtype=np.int64)
            np.cumsum([len(m) for m in masks], out=start[1:])
            probes = (np.array(radii, dtype=np.int64), start, np.concatenate(masks))
            self._probe_cache[radius] = probes  # a benign race between threads: both compute the same
        return probes

    def _run(self, queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        radii, start, masks = self._probes(radius)
        capacity = max(64, 4 * len(queries))
        while True:
            # Fresh buffers per call: the shard writer calls lookups from several threads at once.
            out_q = np.empty(capacity, dtype=np.int64)
            out_ids = np.empty(capacity, dtype=np.int64)
            out_dist = np.empty(capacity, dtype=np.int64)
            found = _search_many(queries, radius, radii, start, masks, self._shifts, self._widths, self._bases,
                                 self._offsets, self._sorted_codes, self._sorted_ids, len(self.codes),
                                 out_q, out_ids, out_dist)
            if found <= capacity:
                return out_q[:found], out_ids[:found], out_dist[:found]
            capacity = found

    def query(self, query: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, distances) of every code within `radius` of `query`; ids ascending, exactly brute force."""
        if len(self.codes) == 0 or radius < 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        _, ids, dist = self._run(np.array([query], dtype=np.uint64), radius)
        order = np.argsort(ids, kind="stable")
        return ids[order], dist[order]

    def query_many(self, queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (query position, id, distance) triples within `radius`, sorted by query then id."""
        queries = np.ascontiguousarray(queries, dtype=np.uint64)
        empty = np.zeros(0, dtype=np.int64)
        if len(self.codes) == 0 or len(queries) == 0 or radius < 0:
            return empty, empty, empty
        qpos, ids, dist = self._run(queries, radius)
        order = np.lexsort((ids, qpos))
        return qpos[order], ids[order], dist[order]
