"""Data that is not one in-memory array: generators, iterators, `PyDataset`s, and arrays read a
chunk at a time (memmaps, or arrays whose float copy would be large).

In-memory arrays never come here: `Sequential` converts them once and hands them to the kernels
as they are. Everything here ends in the same kernels, fed a chunk of many batches per call (the
chunk buffer is reused), so the per-batch Python cost is one `next()` and a copy.

Sources and the feeds that turn them into training chunks (`take(k)` -> X, Y, sw, batch size):
- `BatchSource`: the raw batches of a generator/iterator or a `PyDataset`, epoch by epoch, with
  Keras's rules for `steps_per_epoch` (an iterator is never restarted; a `PyDataset` is indexed
  in passes, shuffled per pass when `shuffle=True`, and `on_epoch_end()` is called after each epoch).
  `BatchFeed` prepares each batch and joins runs of equal-size batches into one buffer.
- `ArraySource`: a big array's rows, gathered (through the epoch's permutation when shuffling)
  and cast to the model's dtype one chunk at a time; `ArrayFeed` cuts an epoch into chunks.
- `blocks()` re-cuts streamed pieces into the batches `evaluate` makes of a whole array.

The epoch's permutation of an `ArraySource` is drawn exactly as for in-memory arrays, and the rows
of every batch are the same, so training on a memmap gives the in-memory result bit for bit.
"""
import collections.abc
import concurrent.futures
import itertools

import numpy as np

from . import _random, _validation
from .utils import PyDataset

# A float copy larger than this is made a chunk at a time instead of once (bytes).
STREAM_BYTES = 1 << 28
# Rows per piece when an ArraySource is evaluated or predicted.
PIECE_ROWS = 8192
# The most bytes of converted inputs one training chunk holds: with a small model the ~50 ms a
# chunk aims at could be hundreds of MB of rows, and streamed memory must not grow with the data.
CHUNK_BYTES = 1 << 24


def chunk_batches(k, batch_size, width, dtype):
    """k, capped so that k batches of (batch_size, width) floats take at most CHUNK_BYTES."""
    per_batch = batch_size * width * np.dtype(dtype).itemsize
    return max(1, min(k, CHUNK_BYTES // max(1, per_batch)))


def is_batch_stream(x):
    """True for the objects that yield batches: generators, iterators and PyDatasets."""
    return isinstance(x, (PyDataset, collections.abc.Iterator))


def streams_array(x, dtype):
    """True when the ndarray `x` is read a chunk at a time: a memmap that would need a converted
    copy (another dtype, byte order or layout), or an array whose converted copy would take more
    than STREAM_BYTES. A memmap already of the model's dtype is used in place, like any array."""
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "biuf" or x.ndim < 1 or len(x) == 0:
        return False
    target = np.dtype(dtype)
    if x.dtype == target and x.dtype.isnative and x.flags.c_contiguous:
        return False
    return isinstance(x, np.memmap) or x.size * target.itemsize > STREAM_BYTES


def describe(x):
    if isinstance(x, PyDataset):
        return f"the PyDataset {type(x).__name__}"
    return f"the {type(x).__name__}"


def unpack(batch, index, source, need_y):
    """A batch as (x, y, sample_weight) (y/sample_weight None when absent), Keras's forms:
    `(x,)`, `(x, y)`, `(x, y, sample_weight)`, or a bare array (for predict)."""
    if isinstance(batch, list):
        batch = tuple(batch)
    if not isinstance(batch, tuple):
        if need_y:
            raise TypeError(
                f"Each batch from {source} must be a tuple (x, y) or (x, y, sample_weight) to "
                f"train or evaluate. Received: batch {index} of type {type(batch).__name__}")
        batch = (batch,)
    if not 1 <= len(batch) <= 3:
        raise ValueError(
            f"Each batch from {source} must be a tuple (x,), (x, y) or (x, y, sample_weight). "
            f"Received: batch {index}, a tuple of {len(batch)} elements")
    x = batch[0]
    y = batch[1] if len(batch) > 1 else None
    sw = batch[2] if len(batch) > 2 else None
    if need_y and y is None:
        raise ValueError(
            f"Each batch from {source} must hold targets to train or evaluate: a tuple (x, y) or "
            f"(x, y, sample_weight). Received: batch {index}, a tuple of {len(batch)} element(s)")
    return x, y, sw


def _prefetched(dataset, indices, workers, queue_size):
    """dataset[i] for i in indices, in order; `workers` threads fetch up to `queue_size` ahead."""
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending = collections.deque()
        it = iter(indices)
        for i in itertools.islice(it, queue_size):
            pending.append(pool.submit(dataset.__getitem__, i))
        while pending:
            batch = pending.popleft().result()
            for i in itertools.islice(it, 1):
                pending.append(pool.submit(dataset.__getitem__, i))
            yield batch


class BatchSource:
    """The raw batches of a generator/iterator or a PyDataset, epoch by epoch.

    Args:
        data: the generator, iterator or PyDataset.
        steps: batches per epoch (`steps_per_epoch`, `validation_steps`, `steps`) or None: a
            PyDataset's length, or for an iterator "until it is exhausted".
        shuffle: shuffle a PyDataset's batch order each pass (iterators are never shuffled).
        name: the argument it came in (`x`, `validation_data`) for messages.
    """

    def __init__(self, data, steps, shuffle, name):
        self.data = data
        self.name = name
        self.source = f"{describe(data)} passed as `{name}`"
        self.label = describe(data) if name == "x" else f"{describe(data)} ({name})"
        self.shuffle = shuffle
        self.is_dataset = isinstance(data, PyDataset)
        self.epochs_done = 0
        if self.is_dataset:
            n = data.num_batches
            if n is not None:
                n = _validation.nonneg_int(f"len({name})", n)
                if n == 0:
                    raise ValueError(f"{self.source} is empty: its __len__() returned 0. "
                                     f"Received: len({name})=0")
                if steps is not None and steps > n:
                    raise ValueError(
                        f"{self.source} holds {n} batches, fewer than the {steps} steps asked "
                        f"per epoch. Lower the steps or lengthen the PyDataset. "
                        f"Received: steps={steps}, len({name})={n}")
            if n is None and steps is None:
                raise ValueError(f"{self.source} is endless (its num_batches is None): pass the "
                                 "number of batches per epoch as `steps_per_epoch` (or `steps`, "
                                 "`validation_steps`). Received: steps=None")
            self.length = n
            self.steps = steps if steps is not None else n
            self._iter = None
        else:
            self.length = None
            self.steps = steps
            self._iter = data
        self._pending = []  # batches drawn to build the model, given back first

    def _dataset_passes(self):
        """A PyDataset's batches, one pass after another (Keras continues where the previous
        epoch stopped when steps_per_epoch < len)."""
        ds = self.data
        workers = max(1, int(getattr(ds, "workers", 1) or 1))
        queue_size = max(1, int(getattr(ds, "max_queue_size", 10) or 10))
        while True:
            if self.length is None:
                indices = itertools.count()
            elif self.shuffle:
                indices = _random.generator().permutation(self.length).tolist()
            else:
                indices = range(self.length)
            if workers > 1:
                yield from _prefetched(ds, indices, workers, queue_size)
            else:
                for i in indices:
                    yield ds[i]
            if self.length is None:
                return

    def peek(self):
        """The first batch (it is given back by the next epoch)."""
        if not self._pending:
            it = self._raw()
            try:
                self._pending.append(next(it))
            except StopIteration:
                raise ValueError(f"{self.source} yielded no batch: there is no data to use. "
                                 f"Received: an empty {type(self.data).__name__}") from None
        return self._pending[0]

    def _raw(self):
        if self._iter is None:
            self._iter = self._dataset_passes()
        return self._iter

    def epoch(self):
        """The raw batches of the next epoch (up to `steps`)."""
        if self.is_dataset:
            self.data.on_epoch_begin()
        it = itertools.chain(self._pending, self._raw())
        self._pending = []
        count = 0
        while self.steps is None or count < self.steps:
            try:
                batch = next(it)
            except StopIteration:
                if self.steps is not None or count == 0:
                    self._ran_dry(count)
                return
            count += 1
            yield batch

    def _ran_dry(self, count):
        epoch = self.epochs_done + 1
        if self.steps is None:
            raise ValueError(
                f"{self.source} ran out of data: pass {epoch} got no batch. An iterator is not "
                "restarted between epochs; make it yield forever (e.g. `while True:`) and pass "
                f"`steps_per_epoch` (or `validation_steps`), or use a fastdense.utils.PyDataset. "
                f"Received: a {type(self.data).__name__} already exhausted")
        raise ValueError(
            f"{self.source} ran out of data after {count} of the {self.steps} batches asked for "
            f"pass {epoch}; the updates made so far are kept. It must yield at least "
            "steps * epochs batches: make it repeat (e.g. `while True:`) or lower the steps. "
            f"Received: steps={self.steps}")

    def end_epoch(self):
        self.epochs_done += 1
        if self.is_dataset:
            self.data.on_epoch_end()


class ArraySource:
    """Rows of a big x (a memmap, or an array too big to copy as floats) with in-memory Y and sw.

    Args:
        x: the array, validated (numeric, feature shape) but not converted.
        Y, sw: prepared targets and weights (sw may be empty), as for an in-memory array.
        dtype: the model's dtype; xname: for messages.
    """

    def __init__(self, x, Y, sw, dtype, xname):
        self.x = x.reshape(len(x), -1) if x.ndim != 2 else x
        self.Y, self.sw, self.dtype, self.xname = Y, sw, dtype, xname
        self.n = len(x)

    def rows(self, index):
        """Rows `index` (a slice or an index array) as a (rows, n_features) float matrix."""
        part = self.x[index]
        name = f"{self.xname} (rows {_describe_rows(index, self.n)})"
        return _validation.as_float_matrix(name, np.asarray(part), self.dtype)

    def pieces(self):
        """(X, Y, sw) pieces of PIECE_ROWS rows, in order (for evaluate and predict)."""
        for start in range(0, self.n, PIECE_ROWS):
            s = slice(start, min(self.n, start + PIECE_ROWS))
            yield self.rows(s), self.Y[s] if self.Y is not None else None, \
                self.sw[s] if self.sw.size else self.sw


def _describe_rows(index, n):
    if isinstance(index, slice):
        return f"{index.start}..{index.stop - 1}"
    return f"{int(index.min())}..{int(index.max())} of {n}"


class ArrayFeed:
    """Training chunks from an ArraySource: the epoch's permutation is drawn as for in-memory
    arrays, and each chunk's rows are gathered and cast into one buffer."""

    def __init__(self, source, batch_size):
        self.source, self.batch_size = source, batch_size
        self.n = source.n
        self.steps = -(-self.n // batch_size)
        self.order = None
        self.batch = 0

    def begin_epoch(self, shuffle):
        # the same draw as Sequential._epochs makes for in-memory arrays
        self.order = _random.generator().permutation(self.n).astype(np.intp) if shuffle else None
        self.batch = 0

    def take(self, k):
        """(X, Y, sw, batch_size) for the next k batches, or None at the end of the epoch."""
        start = self.batch * self.batch_size
        if start >= self.n:
            return None
        k = chunk_batches(k, self.batch_size, self.source.x.shape[1], self.source.dtype)
        stop = min(self.n, start + k * self.batch_size)
        ids = slice(start, stop) if self.order is None else self.order[start:stop]
        X = self.source.rows(ids)
        Y, sw = self.source.Y[ids], (self.source.sw[ids] if self.source.sw.size else self.source.sw)
        self.batch += -(-(stop - start) // self.batch_size)
        return X, np.ascontiguousarray(Y), np.ascontiguousarray(sw), self.batch_size

    def end_epoch(self):
        pass


class BatchFeed:
    """Training chunks from a BatchSource: each batch is prepared (validated, cast) by
    `prepare(batch, index) -> (X, Y, sw)`, then up to k batches of one size (the last may be
    smaller) are joined in a reused buffer, so the kernel makes the same batches."""

    def __init__(self, source, prepare):
        self.source, self.prepare = source, prepare
        self.steps = source.steps
        self._it = None
        self._held = None  # a prepared batch that did not fit the previous chunk
        self._bufs = {}

    def begin_epoch(self, shuffle):
        raw = self.source.epoch()
        self._it = (self.prepare(b, i) for i, b in enumerate(raw))
        self._held = None

    def take(self, k):
        parts = []
        size = None
        nbytes = 0
        while len(parts) < k and nbytes < CHUNK_BYTES:
            if self._held is not None:
                part, self._held = self._held, None
            else:
                part = next(self._it, None)
                if part is None:
                    break
            n = len(part[0])
            if size is None:
                size = n
            elif n > size:
                self._held = part  # a bigger batch starts the next chunk
                break
            parts.append(part)
            nbytes += part[0].nbytes
            if n < size:
                break  # a smaller batch ends the run of equal batches
        if not parts:
            return None
        X, Y, sw = join(parts, self._bufs)
        return X, Y, sw, size

    def end_epoch(self):
        self.source.end_epoch()


def join(parts, bufs):
    """Concatenates prepared (X, Y, sw) parts, into buffers kept in `bufs` between calls; a part
    without weights gets weight 1 when another has some."""
    if len(parts) == 1:
        return parts[0]
    rows = sum(len(p[0]) for p in parts)
    out = []
    for j, what in ((0, "x"), (1, "y")):
        first = parts[0][j]
        width = first.shape[1]
        for p in parts:
            if p[j].shape[1] != width:
                raise ValueError(
                    f"Batches must agree in shape: one has {what} of width {width}, another "
                    f"{p[j].shape[1]}. Received: a batch with {what}.shape={p[j].shape}")
        buf = bufs.get(j)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != width or buf.dtype != first.dtype:
            buf = bufs[j] = np.empty((rows, width), dtype=first.dtype)
        out.append(np.concatenate([p[j] for p in parts], axis=0, out=buf[:rows]))
    if any(p[2].size for p in parts):
        sw = np.concatenate([p[2] if p[2].size else np.ones(len(p[0]), dtype=out[0].dtype)
                             for p in parts])
    else:
        sw = parts[0][2]
    return out[0], out[1], sw


def blocks(pieces, bs, rows_per_call):
    """Re-cuts a stream of (X, Y, sw) pieces into arrays holding whole blocks of `bs` rows (the
    last may be partial), about `rows_per_call` rows each, so a stream is evaluated in the same
    batches as the whole array would be."""
    held = []
    count = 0
    target = max(bs, rows_per_call // bs * bs)
    for piece in pieces:
        held.append(piece)
        count += len(piece[0])
        if count >= target:
            X, Y, sw = join(held, {})
            cut = count // bs * bs
            yield X[:cut], Y[:cut], sw[:cut] if sw.size else sw
            held = [(X[cut:], Y[cut:], sw[cut:] if sw.size else sw)] if cut < count else []
            count -= cut
    if count:
        yield join(held, {})
