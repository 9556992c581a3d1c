"""Beam pass for SAMD's implicit similarity (Equation 3): users per visited-scenario set, then the matrix.

Equation 3 only needs how many users visited exactly each scenario set S (see
`similarity.py`), so one pass over the (user, scenario) rows suffices:

    rows --(per file or batch, vectorised)--> (user, bit of the row's scenario), routed to a
         bucket by a hash of the user id
         --CombinePerKey(bucket, bitwise OR per user)--> each user's full set S_u, then users per set
         --CombinePerKey(set, sum)--> {S: n_S} (hundreds of entries) --> matrix, written once.

Repeated (user, scenario) rows need no separate distinct step: OR is idempotent.

Why batches, not one element per row or per user: the DirectRunner spends microseconds
per element and per transform, which for 10 million users (tens of millions of rows) is
minutes; here each element is a numpy batch. The group-by-user is still global: a user's
bucket is a hash of the id, the same in every file and worker, so every partial mask of
a user meets in one bucket's combine, where the OR per user runs on sorted arrays.
Users are kept as exact byte strings (the 64-bit hash only routes and sorts; a hash
collision is detected and resolved by sorting on the ids), so the counts are exact.

Sources: raw CSVs (`<data_root>/day=N/*.csv`, read with Arrow inside a DoFn, per file,
only the `user_id` and `scenario_id` columns) or ExampleGen's output (gzipped TFRecords
of tf.Example with `user_id` and `scenario_id` bytes features, all splits).
"""

from __future__ import annotations

import io
import json
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from components.scenario_similarity import similarity

USER_COLUMN = "user_id"
SCENARIO_COLUMN = "scenario_id"
JSON_NAME = "similarity.json"
NPZ_NAME = "similarity.npz"
DEFAULT_BUCKETS = 32

_HASH_SEED = np.uint64(0xCBF29CE484222325)
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


class SimilarityDataError(ValueError):
    """Input rows that cannot enter Equation 3; the message names the file and the problem."""


# ---------------------------------------------------------------------------------------
# Vectorised helpers (numpy); a batch is (users: bytes 'S' [n], masks: unsigned ints [n, W]).


def mask_words(num_scenarios: int) -> int:
    """Words per scenario bitmask (64 scenarios per word)."""
    return max(1, (num_scenarios + 63) // 64)


def mask_dtype(num_scenarios: int):
    """The smallest unsigned type holding a word: what crosses the shuffle is mostly ids and masks."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if num_scenarios <= 8 * np.dtype(dtype).itemsize:
            return dtype
    return np.uint64


def user_hash(users: np.ndarray) -> np.ndarray:
    """64-bit hash of each id in a fixed-width bytes ('S') array, 8 bytes at a time.

    All-NUL words (the padding of a short id; ids hold no NUL) are skipped, so the hash
    does not depend on the array's width, which differs between files and batches.
    """
    n, width = len(users), users.dtype.itemsize
    if width % 8:
        users = users.astype(f"S{-(-width // 8) * 8}")
        width = users.dtype.itemsize
    words = np.ascontiguousarray(users).view(np.uint64).reshape(n, width // 8)
    h = np.full(n, _HASH_SEED, np.uint64)
    for k in range(width // 8):
        w = words[:, k]
        x = (h ^ w) * _HASH_MULTIPLIER
        x ^= x >> np.uint64(31)
        h = np.where(w != 0, x, h)
    return h


def bit_table(num_scenarios: int) -> np.ndarray:
    """[N, W]: row c is the bitmask of scenario c alone; bit_table(N)[codes] masks rows at once."""
    table = np.zeros((num_scenarios, mask_words(num_scenarios)), mask_dtype(num_scenarios))
    for c in range(num_scenarios):
        table[c, c // 64] = 1 << (c % 64)
    return table


def or_per_user(users: np.ndarray, masks: np.ndarray):
    """One row per distinct user with the OR of its masks (the global group-by-user)."""
    hashes = user_hash(users)  # recomputed, not shipped: cheaper than 8 more bytes a row in the shuffle
    order = np.argsort(hashes)  # unstable is fine: OR is commutative, collisions are caught below
    hashes, users, masks = hashes[order], users[order], masks[order]
    same_user = users[1:] == users[:-1]
    if np.any((hashes[1:] == hashes[:-1]) & ~same_user):
        # Two ids share a 64-bit hash: sort by (hash, id) so each id's rows are adjacent.
        order = np.lexsort((users, hashes))
        hashes, users, masks = hashes[order], users[order], masks[order]
        same_user = users[1:] == users[:-1]
    starts = np.flatnonzero(np.concatenate([[True], ~same_user]))
    return users[starts], np.bitwise_or.reduceat(masks, starts, axis=0)


def count_masks(masks: np.ndarray) -> List[Tuple[Tuple[int, ...], int]]:
    """[(mask as a tuple of Python ints, number of users with it)]."""
    if len(masks) == 0:
        return []
    if masks.shape[1] == 1:  # up to 64 scenarios: a 1-D unique is far faster than unique(axis=0)
        uniq, counts = np.unique(masks[:, 0], return_counts=True)
        return [((int(m),), int(n)) for m, n in zip(uniq, counts)]
    uniq, counts = np.unique(masks, axis=0, return_counts=True)
    return [(tuple(int(w) for w in row), int(n)) for row, n in zip(uniq, counts)]


def mask_to_scenarios(mask: Sequence[int], scenarios: Sequence[str]) -> Tuple[str, ...]:
    """The scenarios whose bits are set, in the order of `scenarios`."""
    return tuple(s for c, s in enumerate(scenarios) if (mask[c // 64] >> (c % 64)) & 1)


def _split_by_bucket(users: np.ndarray, masks: np.ndarray, num_buckets: int):
    """(bucket, (users, masks)) per bucket present; a user's bucket is the same in every file and worker."""
    hashes = user_hash(users)
    bucket = ((hashes >> np.uint64(33)) % np.uint64(num_buckets)).astype(np.uint16)
    order = np.argsort(bucket, kind="stable")  # radix sort on 16-bit keys
    bucket, users, masks = bucket[order], users[order], masks[order]
    cuts = np.flatnonzero(np.diff(bucket)) + 1
    for part in np.split(np.arange(len(bucket)), cuts):
        if len(part):
            sl = slice(part[0], part[-1] + 1)
            yield int(bucket[part[0]]), (users[sl], masks[sl])


# ---------------------------------------------------------------------------------------
# Sources.


def _fixed_width(strings) -> np.ndarray:
    """Arrow string/binary array (no nulls) -> numpy 'S' array, built from Arrow's buffers."""
    import pyarrow as pa

    strings = strings.cast(pa.binary())
    n = len(strings)
    _, offsets_buf, data_buf = strings.buffers()
    offsets = np.frombuffer(offsets_buf, np.int32, count=n + 1, offset=strings.offset * 4).astype(np.int64)
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None and data_buf.size else np.zeros(1, np.uint8)
    lengths = np.diff(offsets)
    width = max(1, int(lengths.max()) if n else 1)
    mat = np.zeros((n, width), np.uint8)
    for k in range(width):  # one column of bytes at a time: ids are short, rows many
        has = lengths > k
        mat[has, k] = data[offsets[:-1][has] + k]
    return mat.view(f"S{width}").ravel()


class ReadCsvMasks(beam.DoFn):
    """One CSV file -> (bucket, batch) per Arrow block: each row's user and scenario bit, vectorised."""

    def __init__(self, scenarios: Sequence[str], num_buckets: int, block_size: int = 1 << 26):
        self._scenarios = list(scenarios)
        self._buckets = num_buckets
        self._block_size = block_size

    def process(self, path: str):
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pacsv

        names = pa.array(self._scenarios, pa.string())
        bits = bit_table(len(self._scenarios))
        with FileSystems.open(path, compression_type="uncompressed") as f:
            try:
                reader = pacsv.open_csv(
                    f,
                    read_options=pacsv.ReadOptions(use_threads=False, block_size=self._block_size),
                    convert_options=pacsv.ConvertOptions(
                        include_columns=[USER_COLUMN, SCENARIO_COLUMN],
                        column_types={USER_COLUMN: pa.string(), SCENARIO_COLUMN: pa.string()},
                    ),
                )
            except (pa.ArrowInvalid, KeyError) as e:
                raise SimilarityDataError(
                    f"{path}: cannot read as a CSV with columns {USER_COLUMN}, {SCENARIO_COLUMN}: {e}") from None
            offset = 0
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except pa.ArrowInvalid as e:
                    raise SimilarityDataError(f"{path}: not a readable CSV file after row {offset}: {e}") from None
                n = batch.num_rows
                if n == 0:
                    continue
                user_col, scen_col = batch.column(USER_COLUMN), batch.column(SCENARIO_COLUMN)
                empty = np.asarray(pc.fill_null(pc.equal(pc.binary_length(user_col), 0), True))
                if empty.any():
                    line = offset + int(np.flatnonzero(empty)[0]) + 2  # line 1 is the header
                    raise SimilarityDataError(f"{path}, line {line}: empty {USER_COLUMN}")
                codes = pc.index_in(scen_col, value_set=names)
                if codes.null_count:
                    row = int(np.flatnonzero(np.asarray(codes.is_null()))[0])
                    raise SimilarityDataError(
                        f"{path}, line {offset + row + 2}: scenario {scen_col[row].as_py()!r} is not in the "
                        f"scenario list ({', '.join(self._scenarios)})")
                # One mask per row; a user's rows are OR-ed in the combine, across files alike.
                masks = bits[np.asarray(codes)]
                yield from _split_by_bucket(_fixed_width(user_col), masks, self._buckets)
                offset += n


class ParseExampleMasks(beam.DoFn):
    """A batch of (file, serialized tf.Example) -> (bucket, batch) of each row's user and scenario bit."""

    def __init__(self, scenarios: Sequence[str], num_buckets: int):
        self._scenarios = list(scenarios)
        self._buckets = num_buckets

    def setup(self):
        from tensorflow.core.example import example_pb2

        self._example = example_pb2.Example
        self._index = {s.encode(): c for c, s in enumerate(self._scenarios)}
        self._bits = bit_table(len(self._scenarios))

    def _value(self, example, name: str, path: str) -> bytes:
        feature = example.features.feature.get(name)
        values = feature.bytes_list.value if feature is not None else ()
        if len(values) != 1 or not values[0]:
            raise SimilarityDataError(f"{path}: a tf.Example has {len(values)} '{name}' value(s) "
                                      f"(needs exactly one, non-empty bytes value)")
        return values[0]

    def process(self, records: List[Tuple[str, bytes]]):
        users, codes = [], []
        for path, record in records:
            ex = self._example.FromString(record)
            scenario = self._value(ex, SCENARIO_COLUMN, path)
            code = self._index.get(scenario)
            if code is None:
                raise SimilarityDataError(f"{path}: scenario {scenario.decode(errors='replace')!r} is not in the "
                                          f"scenario list ({', '.join(self._scenarios)})")
            users.append(self._value(ex, USER_COLUMN, path))
            codes.append(code)
        if not users:
            return
        masks = self._bits[np.array(codes, np.int64)]
        yield from _split_by_bucket(np.array(users, dtype=bytes), masks, self._buckets)


# ---------------------------------------------------------------------------------------
# The global OR per user.


class OrPerUserCombineFn(beam.CombineFn):
    """Per bucket: bitwise OR of all partial masks of each user, then users per distinct mask.

    The accumulator is a list of batches, compacted (sorted, OR-reduced per user) when it
    grows, so adding a file's batch costs no re-sort of everything seen so far. A batch
    may hold a user many times; a compacted one is marked (users, masks, True) so that
    Beam's compact-then-extract does not sort it twice.
    """

    _MAX_PARTS = 16

    def create_accumulator(self):
        return []

    def add_input(self, acc, batch):
        acc.append(batch)
        return self.compact(acc) if len(acc) >= self._MAX_PARTS else acc

    def merge_accumulators(self, accs):
        merged = [b for acc in accs for b in acc]
        return self.compact(merged) if len(merged) >= self._MAX_PARTS else merged

    def compact(self, acc):
        if not acc or (len(acc) == 1 and len(acc[0]) == 3):
            return acc
        users, masks = or_per_user(np.concatenate([b[0] for b in acc]), np.concatenate([b[1] for b in acc]))
        return [(users, masks, True)]

    def extract_output(self, acc):
        acc = self.compact(acc)
        return count_masks(acc[0][1]) if acc else []


class ScenarioSetCounts(beam.PTransform):
    """PBegin -> PCollection of (scenario bitmask as a tuple of ints, number of users with that set).

    source: "csv" (paths: CSV files) or "examples" (paths: gzipped TFRecord files of tf.Example).
    """

    def __init__(self, source: str, paths: Sequence[str], scenarios: Sequence[str],
                 num_buckets: int = DEFAULT_BUCKETS):
        super().__init__()
        if source not in ("csv", "examples"):
            raise ValueError(f"source must be 'csv' or 'examples', got {source!r}")
        if not paths:
            raise SimilarityDataError(f"no {source} files to read")
        self._source, self._paths = source, sorted(paths)
        self._scenarios, self._buckets = list(scenarios), num_buckets

    def expand(self, pbegin):
        files = pbegin | "Files" >> beam.Create(self._paths)
        if self._source == "csv":
            batches = files | "ReadCsv" >> beam.ParDo(ReadCsvMasks(self._scenarios, self._buckets))
        else:
            batches = (
                files
                | "ReadExamples" >> beam.io.ReadAllFromTFRecord(
                    coder=beam.coders.BytesCoder(),
                    compression_type=beam.io.filesystem.CompressionTypes.GZIP, with_filename=True)
                | "Batch" >> beam.BatchElements(min_batch_size=1024, max_batch_size=65536)
                | "Parse" >> beam.ParDo(ParseExampleMasks(self._scenarios, self._buckets))
            )
        return (
            batches
            | "OrPerUser" >> beam.CombinePerKey(OrPerUserCombineFn())
            | "MaskCounts" >> beam.FlatMap(lambda kv: kv[1])
            | "UsersPerSet" >> beam.CombinePerKey(sum)
        )


# ---------------------------------------------------------------------------------------
# Result.


def similarity_result(mask_counts: Iterable[Tuple[Sequence[int], int]], scenarios: Sequence[str],
                      alpha: float, g: int) -> Tuple[Dict, Dict[str, np.ndarray]]:
    """(similarity.json content, similarity.npz arrays) from users per scenario bitmask."""
    set_counts: Dict[Tuple[str, ...], int] = {}
    for mask, n in mask_counts:
        key = mask_to_scenarios(mask, scenarios)
        set_counts[key] = set_counts.get(key, 0) + n
    set_counts = dict(sorted(set_counts.items(), key=lambda kv: (-kv[1], kv[0])))
    sim = similarity.grouped_similarity(set_counts, scenarios, alpha)  # Equation 3
    neighbours = similarity.top_g(sim, g)
    M, n = similarity.membership_matrix(set_counts, scenarios)
    doc = {
        "scenarios": list(scenarios),
        "alpha": float(alpha),
        "g": int(g),
        "matrix": sim.tolist(),
        "top_g": {s: [scenarios[j] for j in neighbours[i]] for i, s in enumerate(scenarios)},
        "users": int(n.sum()),
        "scenario_sets": len(set_counts),
        "users_per_set": [{"scenarios": list(k), "users": int(v)} for k, v in set_counts.items()],
    }
    arrays = {"matrix": sim, "scenarios": np.array(scenarios), "alpha": np.array(float(alpha)),
              "set_membership": M.astype(np.uint8), "set_users": n.astype(np.int64),
              "top_g": np.array(neighbours, np.int64).reshape(len(scenarios), -1)}
    return doc, arrays


def _write_outputs(mask_counts, output_dir: str, scenarios: Sequence[str], alpha: float, g: int) -> None:
    if not mask_counts:
        raise SimilarityDataError(f"no (user, scenario) rows were read; {output_dir} not written")
    doc, arrays = similarity_result(mask_counts, scenarios, alpha, g)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    if not FileSystems.exists(output_dir):
        FileSystems.mkdirs(output_dir)
    with FileSystems.create(FileSystems.join(output_dir, NPZ_NAME)) as f:
        f.write(buf.getvalue())
    with FileSystems.create(FileSystems.join(output_dir, JSON_NAME)) as f:
        f.write(json.dumps(doc, indent=1).encode())


def build(pipeline: beam.Pipeline, source: str, paths: Sequence[str], scenarios: Sequence[str], alpha: float,
          g: int, output_dir: str, num_buckets: int = DEFAULT_BUCKETS) -> None:
    """Adds the whole computation to `pipeline`; running it writes similarity.json and .npz to output_dir."""
    _ = (
        pipeline
        | "ScenarioSetCounts" >> ScenarioSetCounts(source, paths, scenarios, num_buckets)
        | "Collect" >> beam.combiners.ToList()
        | "Write" >> beam.Map(_write_outputs, output_dir, list(scenarios), float(alpha), int(g))
    )


def run(source: str, paths: Sequence[str], scenarios: Sequence[str], output_dir: str, alpha: float = 1.0,
        g: int = 2, beam_args: Optional[Sequence[str]] = None, num_buckets: int = DEFAULT_BUCKETS) -> Dict:
    """Runs the pipeline on its own (tests, benchmark) and returns similarity.json's content."""
    from apache_beam.options.pipeline_options import PipelineOptions

    with beam.Pipeline(options=PipelineOptions(list(beam_args or []))) as p:
        build(p, source, paths, scenarios, alpha, g, output_dir, num_buckets)
    with FileSystems.open(FileSystems.join(output_dir, JSON_NAME)) as f:
        return json.loads(f.read())
