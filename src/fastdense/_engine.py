"""Between the Python API and the compiled kernels: the plan of a network, its workspace, and the
loops that hand the kernels many batches per call.

The plan is built once per (model structure, batch size, loss) and cached on the model; a workspace
is allocated per call (so concurrent predict/evaluate calls share nothing) and reused for every
batch of that call, so there is no per-step allocation.
"""
import time

import numpy as np

from . import _kernels, _random, activations
from .layers import Activation, Dense, Dropout

_K = _kernels.CODES


class Plan:
    """The ops of a built model as the kernels read them, for batches of up to `batch_size` rows.

    Attributes: plan (n_ops, N_PLAN) intp; reg (n_ops, 4) float64; layout (N_LAY,) intp;
    work_size: elements of the workspace; out_width; last_activation (name).
    """

    def __init__(self, model, batch_size, keep_logits, training):
        rows, reg = [], []
        offset = 0
        B = int(batch_size)

        def take(size):
            nonlocal offset
            start = offset
            offset += size
            return start

        n_in0 = int(np.prod(model._feature_shape))
        width = n_in0
        widths = [width]
        # Dense, Activation, Dropout, and the layers that describe their own op (`_plan_op`)
        ops = [l for l in model.layers
               if isinstance(l, (Dense, Activation, Dropout)) or hasattr(l, "_plan_op")]
        self.last_activation = None
        for i, layer in enumerate(ops):
            last = i == len(ops) - 1
            row = [0] * _K["N_PLAN"]
            r = [0.0, 0.0, 0.0, 0.0]
            row[_K["PLAN_N_IN"]] = width
            row[_K["PLAN_P2"]] = row[_K["PLAN_P3"]] = -1
            act = None
            own = None
            if hasattr(layer, "_plan_op"):
                own = layer._plan_op(model._flat_offsets.get(layer.name, []), training)
                row[_K["PLAN_KIND"]] = _K[own["kind"]]
                for col in ("W", "B", "P2", "P3"):
                    row[_K["PLAN_" + col]] = own.get(col, -1)
                for col in ("F0", "F1"):
                    row[_K["PLAN_" + col]] = own.get(col, 0)
                r = list(own.get("reg", r))
            elif isinstance(layer, Dense):
                # a frozen layer's weights are read, never written (no weight gradient)
                row[_K["PLAN_KIND"]] = _K["OP_DENSE"] if layer.trainable or not training \
                    else _K["OP_DENSE_FROZEN"]
                w_off, b_off = model._offsets[layer.name]
                row[_K["PLAN_W"]] = w_off
                row[_K["PLAN_B"]] = b_off
                width = layer.units
                act = layer.activation
                for j, regz in enumerate((layer.kernel_regularizer, layer.bias_regularizer)):
                    # Keras penalizes trainable weights only
                    if regz is not None and layer.trainable:
                        r[2 * j], r[2 * j + 1] = regz.l1, regz.l2
            elif isinstance(layer, Activation):
                row[_K["PLAN_KIND"]] = _K["OP_ACTIVATION"]
                act = layer.activation
                row[_K["PLAN_W"]] = row[_K["PLAN_B"]] = -1
            else:
                row[_K["PLAN_KIND"]] = _K["OP_DROPOUT"]
                row[_K["PLAN_W"]] = row[_K["PLAN_B"]] = -1
                r[0] = layer.rate
            row[_K["PLAN_N_OUT"]] = width
            row[_K["PLAN_ACT"]] = act.code if act is not None else _K["ACT_LINEAR"]
            row[_K["PLAN_Z"]] = take(B * width)
            needs_pre = act is not None and (act.code in activations.NEEDS_PRE_ACTIVATION
                                             or (last and keep_logits))
            row[_K["PLAN_S"]] = take(B * width) if (needs_pre and training) or (last and keep_logits) else -1
            row[_K["PLAN_MASK"]] = take(B * width) if (training and row[_K["PLAN_KIND"]] == _K["OP_DROPOUT"]) else -1
            if own is not None:  # the normalized input (or noise) and the op's scratch
                row[_K["PLAN_S"]] = take(B * width) if own.get("xhat") and training else -1
                row[_K["PLAN_MASK"]] = take(own["aux"](B, width)) if "aux" in own and training else -1
            if last:
                self.last_activation = act.name if act is not None else None
            rows.append(row)
            reg.append(r)
            widths.append(width)
        # One scratch region for the second half of any cut forward product (fd_half in _simd.h),
        # also the transposed delta of the input-gradient product (fd_input_grad), which pads
        # the batch to a multiple of 16 rows.
        B16 = -(-B // 16) * 16
        part = take(B16 * max(widths))
        for row in rows:
            row[_K["PLAN_PART"]] = part
        # The forward pass of swish/gelu does not need S at inference; the backward pass does.
        layout = np.zeros(_K["N_LAY"], dtype=np.intp)
        if training:
            layout[_K["LAY_X"]] = take(B * n_in0)
            layout[_K["LAY_Y"]] = take(B * width)
            layout[_K["LAY_SW"]] = take(B)
            layout[_K["LAY_D0"]] = take(B * max(widths))
            layout[_K["LAY_D1"]] = take(B * max(widths))
            first = rows[0] if rows else None
            if first is not None and first[_K["PLAN_KIND"]] == _K["OP_DENSE"] \
                    and widths[1] % 16:
                # a copy of the first layer's weights in 16-column panels (the Trainer), plus
                # 64 bytes of slack to align it
                layout[_K["LAY_W0"]] = take(widths[0] * (-(-widths[1] // 16) * 16) + 16)
            else:
                layout[_K["LAY_W0"]] = -1
            # per row block, the partial weight and bias gradients of the layers after the first
            later = [(row[_K["PLAN_N_IN"]] * row[_K["PLAN_N_OUT"]]
                      + (row[_K["PLAN_N_OUT"]] if row[_K["PLAN_B"]] >= 0 else 0))
                     for row in rows[1:] if row[_K["PLAN_KIND"]] == _K["OP_DENSE"]]
            # ... the first layer's delta, all rows, and each block's product scratch
            layout[_K["LAY_MID"]] = take(2 * sum(later) + B * widths[1] + 2 * B16 * max(widths)) \
                if len(rows) >= 2 else -1
        if training:
            # the kernels write gradients at the offsets of trainable weights only, and the
            # gradient vector holds the trainable part of the parameters: a plan made across a
            # change of `trainable` would write past it
            for row, r in zip(rows, reg):
                writes = row[_K["PLAN_KIND"]] == _K["OP_DENSE"] or (
                    row[_K["PLAN_KIND"]] in (_K["OP_BATCHNORM"], _K["OP_LAYERNORM"]) and r[2])
                if writes and max(row[_K["PLAN_W"]], row[_K["PLAN_B"]]) >= model._n_trainable:
                    raise RuntimeError("The model's parameter layout does not match its layers' "
                                       "`trainable` flags: call compile() again.")
        self.plan = np.array(rows, dtype=np.intp).reshape(-1, _K["N_PLAN"])
        self.reg = np.array(reg, dtype=np.float64).reshape(-1, 4)
        self.layout = layout
        self.work_size = max(offset, 1)
        self.out_width = width
        self.n_in = n_in0
        self.batch_size = B

    def workspace(self, dtype):
        return np.empty(self.work_size, dtype=dtype)


class ChunkTimer:
    """How many batches to hand the kernel per call so that Python is back every ~`target` s."""

    def __init__(self, target=0.05, first=8, fixed=None):
        self.target, self.size, self.fixed = target, first, fixed

    def next(self, remaining):
        return min(remaining, self.fixed or self.size)

    def observe(self, batches, seconds):
        if self.fixed or batches <= 0:
            return
        per = max(seconds / batches, 1e-7)
        self.size = int(max(1, min(100000, 0.5 * self.size + 0.5 * self.target / per)))


class Training:
    """The compiled state of one `fit` (or `train_on_batch`) call: a `_kernels.Trainer` per batch
    size (a feed may bring batches of another size), sharing one gradient buffer and one dropout
    generator, and the data it trains on (arrays X, Y, sw by rows, or a feed by chunks)."""

    def __init__(self, model, batch_size, metrics, X=None, Y=None, sw=None, feed=None,
                 update=None):
        """update: (optimizer code, hyper-parameters) of the rule the steps apply; default: the
        model's optimizer's."""
        self.model = model
        self.update = update
        self.batch_size = batch_size
        self.X, self.Y, self.sw, self.feed = X, Y, sw, feed
        self.n = len(X) if X is not None else None
        self.metrics = metrics
        self.metric_names = [m.name for m in metrics]
        self.metric_codes = np.array([m.code for m in metrics], dtype=np.intp)
        self.loss_code, self.fused = model.loss.codes(model._plan(batch_size).last_activation)
        self.grads = np.empty(model._n_trainable, dtype=model.dtype)
        self.rng = np.array([_random.generator().integers(0, 2**63)], dtype=np.uint64)
        self.options = {k: v for k, v in model._engine_options.items() if k != "threads"}
        self.trainers = {}
        self.trainer(batch_size)  # the plan's checks run before the first epoch

    def trainer(self, batch_size):
        """The Trainer for batches of up to `batch_size` rows (built once)."""
        trainer = self.trainers.get(batch_size)
        if trainer is None:
            model, opt = self.model, self.model.optimizer
            code, hp = self.update or (opt._kernel_code(), opt._hyper())
            plan = model._plan(batch_size, keep_logits=self.fused, training=True)
            options = dict(self.options)
            if model._packed(batch_size):  # (batches of PACKED_MIN_ROWS or more: packed GEMM)
                options.setdefault("own_rows", min(_kernels.CODES["MAX_OWN_ROWS"],
                                                   model.PACKED_MIN_ROWS - 1))
            trainer = _kernels.Trainer(
                plan.plan, plan.reg, plan.layout, plan.workspace(model.dtype), self.grads,
                batch_size, self.loss_code, self.fused, self.metric_codes, code, hp, self.rng,
                **options)
            self.trainers[batch_size] = trainer
        return trainer

    def run(self, X, Y, sw, order, start, stop, batch_size, stats, threads):
        """Trains on samples start..stop of (X, Y, sw) (through `order` when not empty) with the
        optimizer's learning rates from its current step; returns the number of batches run
        (see Trainer.run; the caller advances the optimizer's step count)."""
        opt = self.model.optimizer
        count = -(-(stop - start) // batch_size)
        return self.trainer(batch_size).run(
            self.model._params, opt._slots, X, Y, sw, order, start, stop,
            opt._rates(opt.iterations, count), opt.iterations, stats, threads)

    def release(self):
        """Drops the workspaces (a fit's Training may stay referenced by a callback)."""
        self.trainers.clear()


class FixedThreads:
    """A thread 'governor' that always picks the same count (the engine option "threads")."""

    probing = False

    def __init__(self, threads):
        self.threads = max(1, int(threads))

    def start(self):
        pass

    def choose(self):
        return self.threads, None

    def best(self):
        return self.threads

    def observe(self, threads, batches, seconds):
        pass


def stats_buffer(n_metrics):
    return np.zeros(4 + 2 * n_metrics, dtype=np.float64)


def stats_logs(stats, loss_key, metric_names, prefix=""):
    """Epoch logs from a stats vector: loss = batch-size-weighted mean; metrics weighted means."""
    n = stats[1]
    logs = {prefix + loss_key: float(stats[0] / n) if n else float("nan")}
    for k, name in enumerate(metric_names):
        num, den = stats[3 + 2 * k], stats[4 + 2 * k]
        logs[prefix + name] = float(num / den) if den else 0.0
    return logs


class Timer:
    def __init__(self):
        self.t0 = time.perf_counter()

    def elapsed(self):
        return time.perf_counter() - self.t0


class ThreadGovernor:
    """Picks 1 or `max_threads` threads for each chunk of training steps by measuring both.

    The split products give bit-identical results either way, so the choice is only about speed,
    and that depends on the machine's load: on an idle machine the threads win, but when another
    process holds a core, every parallel region waits for a scheduler slice and the threads
    become many times slower. The governor measures seconds per batch with each setting,
    uses the faster one, and re-measures the other with a short probe chunk. Loads come and go
    (another library's BLAS threads spin for a while after their last call, for instance). On
    one thread, a load that leaves does not show, so the first re-measurement of the threads
    comes soon and the interval doubles each time a probe confirms the choice, up to about once
    a second; a probe that changes the choice starts the short intervals again. On max threads,
    a load that arrives shows: a chunk at least as long as a probe 30% slower or faster than its
    setting's figure re-measures both at once, and a probe of one thread comes once a second
    (each probe costs its chunk on the slower setting and the next chunk's cold caches: probing
    soon after confirming the threads took a quarter of a 784-512-512-10 epoch at batch 256).
    A probe is about PROBE_SECONDS of training (at most PROBE_BATCHES batches, at least 2): a
    fixed 32 batches of that net at batch 256 was a third of a 24,000-row epoch spent probing,
    half of it on the slower setting.
    The first chunk on several threads wakes the workers and warms its caches: it trains but is not
    taken as a measurement (only its pace sizes the probes). A model keeps its governor across
    fit() calls (see Sequential._governor), so repeated short fits do not start from scratch.
    """

    PROBE_BATCHES = 32  # the most batches in a probe chunk
    PROBE_SECONDS = 0.02  # ... and about this much training
    WARM_BATCHES = 4    # the first chunk (not a measurement)
    MARGIN = 0.85       # a probe must beat the current choice by 15% to replace it
    PROBE_FIRST = 0.02  # seconds of training before the first re-measurement
    PROBE_EVERY = 1.0   # the longest interval between probes
    SHIFT = 1.3         # a chunk this much slower or faster than its setting's figure: probe now

    def __init__(self, max_threads):
        self.max = max(1, int(max_threads))
        self.per_batch = {}
        self.since_probe = 0.0
        self.interval = self.PROBE_FIRST
        self.probing = False
        self.warm = self.max == 1
        self.current = None  # the setting in use once both are measured
        self.before = None   # the choice when a scheduled probe started
        self.cold = False    # the next chunk is the first of a fit() call
        self.pace = None     # seconds per batch of the last chunk, any setting

    def start(self):
        """A fit() call begins: its first chunk runs on cold caches (and may wake the worker),
        so it trains but is not taken as a measurement."""
        self.cold = True

    def choose(self):
        """(threads, batch cap) for the next chunk."""
        if self.max == 1:
            return 1, None
        if not self.warm:
            self.probing = True
            return self.max, self.WARM_BATCHES
        for threads in (self.max, 1):
            if threads not in self.per_batch:
                self.probing = True
                return threads, self.probe_batches()
        best = self.best()
        # On max threads a load that arrives shows as slower chunks (see observe), so only a
        # rare probe of one thread is needed; on one thread a load that leaves does not show,
        # so the threads are re-measured soon, then less often.
        interval = self.interval if best == 1 else self.PROBE_EVERY
        if self.since_probe >= interval and not self.cold:
            self.since_probe = 0.0
            self.probing = True
            self.before = best
            return self._other(best), self.probe_batches()
        self.probing = False
        return best, None

    def probe_batches(self):
        """Batches in a probe chunk: about PROBE_SECONDS at the last chunk's pace."""
        if self.pace is None:
            return self.PROBE_BATCHES
        return int(max(2, min(self.PROBE_BATCHES, self.PROBE_SECONDS / self.pace + 1)))

    def _other(self, threads):
        """The setting that is not `threads`: 1 and max are the two compared."""
        return 1 if threads == self.max else self.max

    def best(self):
        if self.max == 1 or len(self.per_batch) < 2:
            return self.max if not self.per_batch else min(self.per_batch, key=self.per_batch.get)
        current = self.current
        if current is None:
            current = min(self.per_batch, key=self.per_batch.get)
        other = self._other(current)
        # Run-to-run noise here is +-20%: a single short probe only wins by a clear margin
        # (a core lost to another process makes two threads several times slower, not 15%).
        if self.per_batch[other] < self.MARGIN * self.per_batch[current]:
            current = other
        self.current = current
        return current

    def observe(self, threads, batches, seconds):
        if batches <= 0:
            return
        long_enough = batches >= self.probe_batches()  # (by the pace before this chunk)
        self.pace = seconds / batches
        self.since_probe = 0.0 if self.probing else self.since_probe + seconds
        if not self.warm:
            self.warm = True
            return
        if self.cold:
            self.cold = False
            if not self.probing:
                return
        per = seconds / batches
        old = self.per_batch.get(threads)
        # (a chunk shorter than a probe, such as the first few of a fit() call, is too noisy
        # to tell a load change: here 8 batches vary by 40% from one to the next)
        shifted = (not self.probing and old is not None and len(self.per_batch) == 2
                   and long_enough and (per > self.SHIFT * old or per * self.SHIFT < old))
        if shifted:
            # The load changed under the current setting (another process took or left a core):
            # the other setting's figure is stale; dropping it re-measures it with the next
            # chunk instead of up to a second later.
            del self.per_batch[self._other(threads)]
            self.current = None
        # A probe, or a chunk after such a change, replaces the old figure; regular chunks
        # smooth it.
        self.per_batch[threads] = per if (old is None or self.probing or shifted) \
            else 0.5 * old + 0.5 * per
        if self.probing and len(self.per_batch) == 2 and self.before is not None:
            same = self.best() == self.before
            self.interval = min(2 * self.interval, self.PROBE_EVERY) if same else self.PROBE_FIRST
            self.before = None


def run_chunked(steps, every, run, on_begin=None, on_end=None):
    """Runs `steps` batches through `run(first_batch, count) -> batches done`, in chunks of about
    50 ms (one batch each when `every`), calling `on_begin(batch)` before each batch when `every`
    and `on_end(last_batch_done, first_batch, count)` after each chunk."""
    chunker = ChunkTimer(fixed=1 if every else None)
    batch = 0
    while batch < steps:
        k = chunker.next(steps - batch)
        if every and on_begin is not None:
            on_begin(batch)
        t0 = time.perf_counter()
        done = run(batch, k)
        chunker.observe(done, time.perf_counter() - t0)
        if on_end is not None:
            on_end(batch + done - 1, batch, done)
        batch += done
