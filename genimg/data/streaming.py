"""Training records streamed from a store version's Parquet shards, in bounded memory.

Each data-parallel rank reads its own shards: every epoch the version's shards are put in an
order drawn from (seed, epoch), the same on every rank, and rank r takes shards r, r + W, … of it
(with fewer shards than ranks, each rank reads them all and keeps rows r, r + W, …). A rank's
records pass through a shuffle buffer of `shuffle_buffer` records and come out in batches; a
batch may span the end of one epoch and the start of the next (no record is dropped).

Resume is exact: the order in which records leave the buffer is drawn from (seed, rank, epoch)
alone (`emission_order`, computed on record indices, not on records), so the records of any step
are known without replaying the steps before it. A restart at step s reads from the first shard
that still holds a record due after s × batch, and skips the records the run had already used.

Memory: the buffer (shuffle_buffer + batch records), the shard being read and `prefetch_shards`
shards read ahead on a background thread; none of it grows with the dataset.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from genimg.data.versions import DatasetVersion
from genimg.errors import DataError

DEFAULT_SHUFFLE_BUFFER = 4096  # records
DEFAULT_PREFETCH_SHARDS = 2


@dataclass(frozen=True)
class ShardPart:
    """The rows of one shard a rank reads: rows `first`, `first + stride`, … (labelled ones only
    when the stream keeps labelled records)."""

    shard: Mapping[str, Any]  # the manifest's entry
    first: int
    stride: int
    records: int


def emission_order(count: int, buffer: int, rng: np.random.Generator) -> np.ndarray:
    """The order in which `count` records read in sequence leave a shuffle buffer of `buffer`
    records: fill the buffer, then repeatedly emit a random slot and refill it with the next record.
    Records read-but-not-emitted never exceed `buffer`."""
    order = np.empty(count, np.int64)
    held = list(range(min(buffer, count)))
    next_record = len(held)
    draws = rng.random(count)
    for position in range(count):
        slot = int(draws[position] * len(held))
        order[position] = held[slot]
        if next_record < count:
            held[slot] = next_record
            next_record += 1
        else:
            held[slot] = held[-1]
            held.pop()
    return order


class StreamPlan:
    """Which shard rows a rank reads in each epoch, from the manifest alone (no records read)."""

    def __init__(
        self,
        shards: Sequence[Mapping[str, Any]],
        rank: int,
        world: int,
        seed: int,
        labels: Sequence[np.ndarray] | None = None,
    ) -> None:
        if not shards:
            raise DataError("no shards to stream")
        self.shards, self.rank, self.world, self.seed = list(shards), rank, world, seed
        self.labels = labels  # per shard, when only labelled records are kept
        self._sizes: dict[int, int] = {}

    def rows_kept(self, shard_index: int, first: int, stride: int) -> int:
        if self.labels is None:
            return len(range(first, int(self.shards[shard_index]["records"]), stride))
        return int(np.count_nonzero(self.labels[shard_index][first::stride] >= 0))

    def parts(self, epoch: int) -> list[ShardPart]:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed % 2**32, epoch, 0x5EED]))
        order = [int(i) for i in rng.permutation(len(self.shards))]
        if len(order) >= self.world:
            chosen = [(index, 0, 1) for index in order[self.rank :: self.world]]
        else:
            chosen = [(index, self.rank, self.world) for index in order]
        return [
            ShardPart(self.shards[index], first, stride, self.rows_kept(index, first, stride))
            for index, first, stride in chosen
        ]

    def epoch_size(self, epoch: int) -> int:
        if epoch not in self._sizes:
            size = sum(part.records for part in self.parts(epoch))
            if size == 0:
                raise DataError(f"rank {self.rank} of {self.world} has no records to stream in epoch {epoch}")
            self._sizes[epoch] = size
        return self._sizes[epoch]

    def locate(self, position: int) -> tuple[int, int]:
        """(epoch, offset in that epoch's emitted records) of a position in the rank's stream."""
        epoch = 0
        while position >= self.epoch_size(epoch):
            position -= self.epoch_size(epoch)
            epoch += 1
        return epoch, position

    def buffer_order(self, epoch: int, buffer: int) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed % 2**32, self.rank, epoch, 0xB0F]))
        return emission_order(self.epoch_size(epoch), buffer, rng)


class ShardReader:
    """Reads parts in sequence on a background thread, `ahead` parts ahead of the consumer."""

    def __init__(self, version: DatasetVersion, parts: Iterator[ShardPart], ahead: int, labelled_only: bool) -> None:
        self.version, self.parts, self.ahead, self.labelled_only = version, parts, max(1, ahead), labelled_only
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genimg-shards")
        self.pending: deque[Future[tuple[np.ndarray, np.ndarray | None]]] = deque()

    def read(self, part: ShardPart) -> tuple[np.ndarray, np.ndarray | None]:
        records, labels = self.version.read_shard(dict(part.shard))
        data, labels = records[part.first :: part.stride], labels[part.first :: part.stride]
        if self.labelled_only:
            keep = labels >= 0
            data, labels = data[keep], labels[keep]
        if len(data) != part.records:  # the plan counted labelled records from another read
            raise DataError(
                f"{self.version.ref}: shard {part.shard['key']} gave {len(data)} records, "
                f"its manifest says {part.records}"
            )
        return data, (labels if self.version.labelled else None)

    def next(self) -> tuple[np.ndarray, np.ndarray | None]:
        while len(self.pending) < self.ahead + 1:
            self.pending.append(self.pool.submit(self.read, next(self.parts)))
        return self.pending.popleft().result()

    def close(self) -> None:
        for future in self.pending:
            future.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)


class RecordPool:
    """Fixed slots for records read but not yet in a batch (the shuffle buffer's contents)."""

    def __init__(self, slots: int, record_shape: tuple[int, ...]) -> None:
        self.data = np.empty((slots, *record_shape), np.uint8)
        self.labels = np.full(slots, -1, np.int64)
        self.free = list(range(slots - 1, -1, -1))

    def put(self, data: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        if len(data) > len(self.free):
            raise RuntimeError("shuffle buffer overflow")  # emission_order bounds what is held
        slots = np.array([self.free.pop() for _ in range(len(data))], np.int64)
        self.data[slots] = data
        if labels is not None:
            self.labels[slots] = labels
        return slots

    def take(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        data, labels = self.data[slots], self.labels[slots]
        self.free.extend(int(slot) for slot in slots)
        return data, labels


class EpochCursor:
    """One epoch of a rank's stream, from an offset: its records in emission order."""

    def __init__(
        self,
        plan: StreamPlan,
        epoch: int,
        offset: int,
        buffer: int,
        pool: RecordPool,
        reader: ShardReader | None = None,
    ) -> None:
        self.order = plan.buffer_order(epoch, buffer)
        self.parts = plan.parts(epoch)
        self.pool, self.reader, self.position = pool, reader, offset
        self.pending = np.ones(len(self.order), bool)  # not yet emitted
        self.pending[self.order[:offset]] = False
        self.slot_of = np.full(len(self.order), -1, np.int64)
        # Every record before the first one still due was emitted: the shards holding only those
        # are not read again (the reader was started at `first_part`).
        first_due = int(self.order[offset:].min()) if offset < len(self.order) else len(self.order)
        starts = np.cumsum([0] + [part.records for part in self.parts])
        if first_due < len(self.order):
            self.first_part = int(np.searchsorted(starts, first_due, side="right") - 1)
            self.read_upto = int(starts[self.first_part])
        else:
            self.first_part, self.read_upto = len(self.parts), len(self.order)
        self.current: tuple[np.ndarray, np.ndarray | None] | None = None
        self.current_start = self.read_upto

    @property
    def remaining(self) -> int:
        return len(self.order) - self.position

    def read_until(self, index: int) -> None:
        while self.read_upto <= index:
            if self.current is None:
                assert self.reader is not None
                self.current, self.current_start = self.reader.next(), self.read_upto
            data, labels = self.current
            start = self.read_upto - self.current_start
            stop = min(len(data), index + 1 - self.current_start)
            rows = np.arange(self.read_upto, self.current_start + stop)
            keep = self.pending[rows]
            slots = self.pool.put(data[start:stop][keep], labels[start:stop][keep] if labels is not None else None)
            self.slot_of[rows[keep]] = slots
            self.read_upto = self.current_start + stop
            if stop == len(data):
                self.current = None

    def take(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        due = self.order[self.position : self.position + count]
        self.read_until(int(due.max()))
        self.position += len(due)
        return self.pool.take(self.slot_of[due])


class RecordStream:
    """A rank's training records from a store version, as (records, labels) batches of fixed size.

    `batches(step)` yields the batches of steps step, step + 1, …; the records of a step do not
    depend on where the stream was started."""

    def __init__(
        self,
        version: DatasetVersion,
        splits: tuple[str, ...],
        *,
        rank: int,
        world: int,
        seed: int,
        batch_size: int,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        prefetch_shards: int = DEFAULT_PREFETCH_SHARDS,
        labelled_only: bool = False,
    ) -> None:
        shards = version.shards(splits)
        labels = [version.load_shard_labels(shard) for shard in shards] if labelled_only else None
        self.version, self.splits, self.batch_size = version, splits, batch_size
        self.plan = StreamPlan(shards, rank, world, seed, labels)
        self.shuffle_buffer, self.prefetch_shards, self.labelled_only = shuffle_buffer, prefetch_shards, labelled_only
        self.labelled = version.labelled

    @property
    def record_shape(self) -> tuple[int, ...]:
        return self.version.record_shape

    def records_per_epoch(self) -> int:
        return self.plan.epoch_size(0)

    def parts_from(self, epoch: int, first_part: int) -> Iterator[ShardPart]:
        yield from self.plan.parts(epoch)[first_part:]
        while True:
            epoch += 1
            yield from self.plan.parts(epoch)

    def batches(self, step: int) -> Generator[tuple[np.ndarray, np.ndarray | None], None, None]:
        epoch, offset = self.plan.locate(step * self.batch_size)
        pool = RecordPool(self.shuffle_buffer + self.batch_size, self.record_shape)
        cursor = EpochCursor(self.plan, epoch, offset, self.shuffle_buffer, pool)
        reader = ShardReader(
            self.version, self.parts_from(epoch, cursor.first_part), self.prefetch_shards, self.labelled_only
        )
        cursor.reader = reader
        try:
            while True:
                pieces = []
                wanted = self.batch_size
                while wanted:
                    if cursor.remaining == 0:
                        epoch += 1
                        cursor = EpochCursor(self.plan, epoch, 0, self.shuffle_buffer, pool, reader)
                    piece = cursor.take(min(wanted, cursor.remaining))
                    pieces.append(piece)
                    wanted -= len(piece[0])
                data = np.concatenate([p[0] for p in pieces]) if len(pieces) > 1 else pieces[0][0]
                labels = np.concatenate([p[1] for p in pieces]) if len(pieces) > 1 else pieces[0][1]
                yield data, (labels if self.labelled else None)
        finally:
            reader.close()


__all__ = ["DEFAULT_PREFETCH_SHARDS", "DEFAULT_SHUFFLE_BUFFER", "RecordStream", "StreamPlan", "emission_order"]
