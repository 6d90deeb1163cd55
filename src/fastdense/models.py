"""`Sequential`: Keras's model API for a stack of dense layers, running on fastdense's kernels."""
import math
import numbers
import sys
import threading
import warnings

import numpy as np

from . import _data, _engine, _kernels, _naming, _random, _validation, config, losses as losses_mod
from . import metrics as metrics_mod, optimizers as optimizers_mod
from .layers import Dense, Flatten, InputLayer, Layer, LAYER_CLASSES, assign_weights

_K = _kernels.CODES
_COMPILE_FIRST = "You must call `compile()` before using the model."
# Inference runs at most this many rows per kernel pass: the rows stay on fastdense's own
# micro-kernels, which compute every row bit-identically whatever the batch it is in, so
# predict() does not depend on batch_size. Rows are independent, so nothing else changes.
_INFER_ROWS = 256
# The kernels' float32/float64 specialisations, looked up once: calling a fused Cython function
# picks one from its arguments' types on every call (~5 us, a third of a one-row prediction).
_FORWARD = {np.dtype(np.float32): _kernels.forward["float"],
            np.dtype(np.float64): _kernels.forward["double"]}
_ALL_FINITE = {np.dtype(np.float32): _kernels.all_finite["float"],
               np.dtype(np.float64): _kernels.all_finite["double"]}


class Sequential:
    """A linear stack of layers.

    Args:
        layers: optional list of layers (it may start with `Input(shape)`).
        name: the model's name (default `sequential`, `sequential_1`, ...).

    Example:
    >>> model = Sequential()
    >>> model.add(Dense(100, activation="sigmoid", input_shape=(784,)))
    >>> model.add(Dense(10, activation="softmax"))
    >>> model.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"])
    >>> history = model.fit(x_train, y_train, epochs=40, validation_data=(x_val, y_val))
    """

    def __init__(self, layers=None, name=None, trainable=True):
        self.name = name or _naming.unique_name("sequential")
        self._layers = []
        self._input_layer = None
        self._feature_shape = None
        self.built = False
        self.compiled = False
        self.optimizer = None
        self.loss = None
        self.stop_training = False
        self.history = None
        self._fit_lock = threading.Lock()
        self._governor_cache = None  # ((max_threads, batch_size), ThreadGovernor)
        # the compiled engine's options for this model (see _kernels.Trainer; "threads" fixes
        # the thread count): tests switch its same-bits optimisations off through them
        self._engine_options = {}
        self._invalidate()
        for layer in layers or []:
            self.add(layer)
        if not trainable:
            self.trainable = False

    # -- structure -------------------------------------------------------------------------------
    @property
    def layers(self):
        return list(self._layers)

    def add(self, layer):
        """Appends a layer (an `Input(...)` is accepted first)."""
        if not self._append(layer, {l.name for l in self._layers}):
            return
        if self._feature_shape is not None:
            try:
                self.build((None,) + tuple(self._feature_shape))
            except Exception:
                self._layers.pop()
                self._invalidate()
                if self._layers:
                    self.build((None,) + tuple(self._feature_shape))
                raise

    def _append(self, layer, names):
        """`add` without the build: checks `layer` (its name against the set `names`, which it
        joins), appends it; False for an `Input`, which only sets the input shape."""
        if isinstance(layer, InputLayer):
            if self._layers or self._input_layer is not None:
                raise ValueError("An Input can only be the first element of a Sequential model. "
                                 f"Received: {layer!r} after {len(self._layers)} layers")
            self._input_layer = layer
            self._feature_shape = layer.shape
            return False
        if not isinstance(layer, Layer):
            raise ValueError("Only instances of fastdense.layers.Layer can be added to a Sequential "
                             f"model. Received: {layer!r} (of type {type(layer).__name__})")
        if layer.name in names:
            raise ValueError(f"All layers added to a Sequential model should have unique names. "
                             f"Name {layer.name!r} is already the name of a layer in this model.")
        if not self._layers and self._input_layer is None and layer._input_shape_arg is not None:
            self._feature_shape = layer._input_shape_arg
        names.add(layer.name)
        self._layers.append(layer)
        self._invalidate()
        return True

    def _add_all(self, layers):
        """`add` of every layer, building once at the end instead of after each layer (which is
        quadratic in the layer count: a file of 20,000 layers would never load). Used to
        rebuild models from configs; a failure leaves a half-filled model, so build a new one."""
        names = {l.name for l in self._layers}
        for layer in layers:
            self._append(layer, names)
        if self._feature_shape is not None and self._layers:
            self.build((None,) + tuple(self._feature_shape))

    def pop(self):
        """Removes the last layer."""
        if not self._layers:
            raise TypeError("There are no layers in the model.")
        layer = self._layers.pop()
        self._invalidate()
        if self._layers and self._feature_shape is not None:
            self.build((None,) + tuple(self._feature_shape))
        return layer

    def _invalidate(self):
        self.built = False
        self._plans = {}
        self._params = None

    def build(self, input_shape=None):
        """Creates every weight for inputs of shape `input_shape` = (None, *feature_shape)."""
        if input_shape is None:
            if self._feature_shape is None:
                raise ValueError("You must provide an `input_shape` argument to build the model "
                                 "(or give the first layer `input_shape=`). Received: input_shape=None")
            input_shape = (None,) + tuple(self._feature_shape)
        feature_shape = tuple(int(d) for d in tuple(input_shape)[1:])
        if not feature_shape:
            feature_shape = (1,)
        if not self._layers:
            raise ValueError("The model has no layers: add at least one Dense layer before building it.")
        shape = feature_shape
        for layer in self._layers:
            layer.build((None,) + shape)
            shape = layer.output_feature_shape
        if len(shape) != 1:
            raise ValueError(f"The model's output must be flat (batch, units). Received: output "
                             f"shape {(None,) + shape}")
        dtypes = {l.dtype for l in self._layers if l.weights}
        self.dtype = dtypes.pop() if len(dtypes) == 1 else self._layers[0].dtype
        if dtypes:
            raise ValueError(f"All layers of a fastdense model must share one dtype. "
                             f"Received: {sorted({l.dtype for l in self._layers if l.weights})}")
        # One flat parameter vector; every weight becomes a view into it. The trainable weights
        # come first, in get_weights() order (the optimizer steps over params[:n_trainable]
        # only, and its slots follow that order, as Keras's variables do), then the
        # non-trainable ones (moving statistics, frozen layers' weights).
        flat = [(layer, k, w, bool(t)) for layer in self._layers
                for k, (w, t) in enumerate(layer._flat_weights())]
        ordered = [e for e in flat if e[3]] + [e for e in flat if not e[3]]
        # (at least one element, for a model without weights: the kernels take its address)
        params = np.zeros(max(sum(e[2].size for e in flat), 1), dtype=self.dtype)
        offsets = {}
        off = 0
        for layer, k, w, _ in ordered:
            offsets.setdefault(layer.name, {})[k] = off
            off += w.size
        self._offsets, self._flat_offsets = {}, {}
        for layer in self._layers:
            mine = offsets.get(layer.name)
            if not mine:
                continue
            offs = [mine[k] for k in range(len(mine))]
            layer._bind([params[o:o + w.size].reshape(w.shape)
                         for o, (w, _) in zip(offs, layer._flat_weights())])
            self._flat_offsets[layer.name] = offs
            self._offsets[layer.name] = (offs[0], offs[1] if len(offs) > 1 else -1)
        self._n_trainable = sum(e[2].size for e in flat if e[3])
        self._trainable_layout = self._trainable_flags()
        self._params = params
        self._np_dtype = np.dtype(self.dtype)
        self._feature_shape = feature_shape
        self._output_units = shape[0]
        self._plans = {}
        self.built = True
        if self.optimizer is not None:
            self.optimizer.build(self._n_trainable, self.dtype)

    def _ensure_built(self, x_arr):
        if not self.built:
            self._feature_shape = self._feature_shape or _validation.infer_feature_shape("x", x_arr)
            self.build((None,) + tuple(self._feature_shape))

    def _plan(self, batch_size, keep_logits=False, training=False):
        key = (batch_size, keep_logits, training)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _engine.Plan(self, batch_size, keep_logits, training)
        return plan

    @property
    def input_shape(self):
        return None if self._feature_shape is None else (None,) + tuple(self._feature_shape)

    @property
    def output_shape(self):
        return (None, self._output_units) if self.built else None

    @property
    def weights(self):
        return [w for l in self._layers for w in l.weights]

    def count_params(self):
        return sum(l.count_params() for l in self._layers)

    def get_weights(self):
        """Copies of all weights: `[kernel_0, bias_0, kernel_1, bias_1, ...]`."""
        return [np.array(w) for w in self.weights]

    def set_weights(self, weights):
        """Assigns all weights after checking their count and every shape (all or nothing)."""
        assign_weights(self.weights, weights, None)

    def summary(self, line_length=None, print_fn=None):
        """Prints Keras 3's table: layer (type), output shape, parameter count, then totals."""
        print_fn = print_fn or print
        rows = [(f"{l.name} ({type(l).__name__})",
                 str((None,) + l.output_feature_shape) if l.built else "?",
                 f"{l.count_params():,}" if l.built else "0 (unbuilt)") for l in self._layers]
        widths = [max([len("Layer (type)")] + [len(r[0]) for r in rows]) + 2,
                  max([len("Output Shape")] + [len(r[1]) for r in rows]) + 2,
                  max([len("Param #")] + [len(r[2]) for r in rows]) + 2]

        def line(left, fill, mid, right):
            return left + mid.join(fill * (w + 2) for w in widths) + right

        def cells(values, edge, sep):
            a, b, c = values
            return (f"{edge} {a.ljust(widths[0])} {sep} {b.ljust(widths[1])} {sep} "
                    f"{c.rjust(widths[2])} {edge}")

        out = [f'Model: "{self.name}"', line("┏", "━", "┳", "┓"),
               cells(("Layer (type)", "Output Shape", "Param #"), "┃", "┃"),
               line("┡", "━", "╇", "┩")]
        for k, r in enumerate(rows):
            if k:
                out.append(line("├", "─", "┼", "┤"))
            out.append(cells(r, "│", "│"))
        out.append(line("└", "─", "┴", "┘"))
        total = self.count_params() if self.built else 0
        itemsize = np.dtype(getattr(self, "dtype", "float32")).itemsize
        train = [w for w in self.trainable_weights] if self.built else []
        frozen = [w for w in self.non_trainable_weights] if self.built else []
        n_train = sum(w.size for w in train)
        n_frozen = sum(w.size for w in frozen)
        b_train = sum(w.nbytes for w in train)
        b_frozen = sum(w.nbytes for w in frozen)
        out.append(f" Total params: {total:,} ({_human_bytes(b_train + b_frozen)})")
        out.append(f" Trainable params: {n_train:,} ({_human_bytes(b_train)})")
        out.append(f" Non-trainable params: {n_frozen:,} ({_human_bytes(b_frozen)})")
        slots = getattr(self.optimizer, "_slots", None)
        if slots is not None and slots.size:
            out.append(f" Optimizer params: {slots.size:,} ({_human_bytes(slots.size * itemsize)})")
        for text in out:
            print_fn(text)

    # -- compile ---------------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None,
                weighted_metrics=None, run_eagerly=False, steps_per_execution=1,
                jit_compile="auto", auto_scale_loss=True):
        """Configures training.

        Args:
            optimizer: name (case-insensitive: `"sgd"`, `"adam"`, `"adamw"`, `"rmsprop"`,
                `"adagrad"`) or a `fastdense.optimizers` instance.
            loss: name (`"mse"`, `"mae"`, `"binary_crossentropy"`, `"categorical_crossentropy"`,
                `"sparse_categorical_crossentropy"`) or a `fastdense.losses` instance.
            metrics: list of `"accuracy"`/`"acc"`, `"mse"`, `"mae"`, ... or metric objects.
        """
        if loss is None:
            raise ValueError("fastdense needs a loss to compile: e.g. loss='mse' or "
                             "loss='categorical_crossentropy'. Received: loss=None")
        if loss_weights is not None or weighted_metrics is not None:
            raise ValueError("fastdense models have one output: `loss_weights` and `weighted_metrics` "
                             "are not supported. Received: "
                             f"loss_weights={loss_weights!r}, weighted_metrics={weighted_metrics!r}")
        opt = optimizers_mod.get(optimizer)
        loss_obj = losses_mod.get(loss)
        if metrics is None:
            metrics = []
        if isinstance(metrics, (str, metrics_mod.Metric)):
            raise ValueError("`metrics` must be a list, e.g. metrics=['accuracy']. "
                             f"Received: metrics={metrics!r}")
        checked = [metrics_mod.check(m) for m in metrics]
        self.optimizer = opt
        self.loss = loss_obj
        self._loss_identifier = loss
        self._metric_ids = checked
        self.compiled = True
        self._compile_config = {"optimizer": optimizer if isinstance(optimizer, str) else None,
                                "loss": loss if isinstance(loss, str) else None,
                                "metrics": [m for m in metrics if isinstance(m, str)]}
        if self.built:
            if self._trainable_layout != self._trainable_flags():
                self.build((None,) + tuple(self._feature_shape))  # Keras: trainable takes effect at compile
            opt.build(self._n_trainable, self.dtype)

    def _require_compiled(self):
        if not self.compiled:
            raise ValueError(_COMPILE_FIRST)

    def _resolve_metrics(self, y_arr):
        resolved = [metrics_mod.resolve(m, y_arr.shape, self._output_units, self.loss.sparse)
                    for m in self._metric_ids]
        for metric in resolved:
            metric.check_target_shape(y_arr, self._output_units)
        return resolved

    @property
    def metrics_names(self):
        names = ["loss"]
        for m in getattr(self, "_metric_ids", []):
            names.append(m.name if isinstance(m, metrics_mod.Metric) else m)
        return names

    # -- data preparation (once per call) --------------------------------------------------------
    def _prepare_xy(self, x, y, sample_weight=None, class_weight=None, xname="x", yname="y",
                    swname="sample_weight", lazy_x=False):
        """(X, Y, sw, y_arr) checked and converted; with `lazy_x`, X is x itself, checked
        (dtype, shape) but not converted: an `_data.ArraySource` converts it a chunk at a time."""
        was_built = self.built
        try:
            return self._prepare_xy_checked(x, y, sample_weight, class_weight, xname, yname, swname,
                                            lazy_x)
        except Exception:
            if not was_built:
                self._unbuild()  # a rejected first call must not fix the input shape
            raise

    def _unbuild(self):
        self._invalidate()
        declared = self._input_layer.shape if self._input_layer is not None else \
            (self._layers[0]._input_shape_arg if self._layers else None)
        self._feature_shape = declared
        if self.optimizer is not None:
            self.optimizer._slots = None  # built together with the model, so undone with it
        for layer in self._layers:
            layer.built = False
            if isinstance(layer, Dense):
                layer.kernel = layer.bias = None
            elif hasattr(layer, "_reset_weights"):
                layer._reset_weights()

    def _prepare_xy_checked(self, x, y, sample_weight, class_weight, xname, yname, swname,
                            lazy_x=False):
        x_arr = _validation.numeric_array(xname, x)
        self._ensure_built(x_arr)
        if lazy_x:
            _validation.blas_sizes(xname, x_arr)
            _validation.model_input(xname, x_arr[:1], self._feature_shape, self.dtype)  # shape
            X = x_arr
        else:
            X = _validation.model_input(xname, x_arr, self._feature_shape, self.dtype)
        if y is None:
            raise ValueError(f"`{yname}` is required to train or evaluate a model. Received: {yname}=None")
        y_arr = _validation.numeric_array(yname, y)
        Y = self.loss.prepare_targets(y_arr, len(X), self._output_units, self.dtype, name=yname,
                                      xname=xname)
        sw = None
        if sample_weight is not None:
            sw = _validation.sample_weights(swname, sample_weight, len(X), xname)
        if class_weight is not None:
            if sample_weight is not None:
                raise ValueError("You cannot use `class_weight` and `sample_weight` at the same "
                                 "time: fold the class weights into `sample_weight` instead. "
                                 f"Received: class_weight={class_weight!r} and a sample_weight array")
            cw = self._class_weights(class_weight, y_arr)
            sw = cw if sw is None else sw * cw
        if sw is not None:
            sw = np.ascontiguousarray(sw, dtype=self.dtype)
        else:
            sw = np.empty(0, dtype=self.dtype)
        return X, Y, sw, y_arr

    def _class_weights(self, class_weight, y_arr):
        if not isinstance(class_weight, dict):
            raise ValueError("`class_weight` must be a dict {class index: weight}. "
                             f"Received: class_weight={class_weight!r}")
        if y_arr.ndim == 2 and y_arr.shape[1] > 1:
            classes = np.argmax(y_arr, axis=1)
        else:
            flat = y_arr.reshape(-1)
            classes = np.round(flat).astype(np.int64) if self._output_units > 1 else (flat > 0.5).astype(np.int64)
        table = np.ones(max(int(classes.max()) + 1, max((int(k) for k in class_weight), default=0) + 1))
        for k, v in class_weight.items():
            table[int(k)] = _validation.finite_float(f"class_weight[{k!r}]", v, minimum=0.0)
        return table[classes]

    # -- training --------------------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_steps=None,
            validation_batch_size=None, validation_freq=1):
        """Trains the model for `epochs` epochs (Keras semantics); returns a `History`.

        The compiled kernel runs many batches per call; Python returns every ~50 ms to draw the
        progress bar, run callbacks and notice Ctrl-C. A callback that overrides a per-batch
        hook makes every batch return to Python.

        `x` may be an array (with `y`), a generator or iterator yielding `(x, y)` or
        `(x, y, sample_weight)` tuples (bounded by `steps_per_epoch`; never restarted), or a
        `fastdense.utils.PyDataset`; `validation_data` likewise (bounded by `validation_steps`).
        Memmaps, and arrays whose float copy would exceed 256 MB, are read and cast a chunk at a
        time. With `shuffle=False`, a generator or PyDataset yielding the batches the array path
        makes gives the array result bit for bit.
        """
        self._require_compiled()
        batch_size = _validation.positive_int("batch_size", batch_size, allow_none=True) or 32
        epochs = _validation.nonneg_int("epochs", epochs)
        initial_epoch = _validation.nonneg_int("initial_epoch", initial_epoch)
        verbose = _validation.verbose_level(verbose)
        steps_per_epoch = _validation.positive_int("steps_per_epoch", steps_per_epoch, allow_none=True)
        validation_steps = _validation.positive_int("validation_steps", validation_steps,
                                                    allow_none=True)
        val_batch = _validation.positive_int("validation_batch_size", validation_batch_size,
                                             allow_none=True) or batch_size
        validation_freq = _validation.positive_int("validation_freq", validation_freq)
        if not isinstance(validation_split, (int, float)) or isinstance(validation_split, bool) \
                or not 0.0 <= validation_split < 1.0:
            raise ValueError("`validation_split` must be a float in [0, 1). "
                             f"Received: validation_split={validation_split!r}")
        if not self._fit_lock.acquire(blocking=False):
            raise RuntimeError("This model is already training in another thread; fastdense "
                               "does not run two `fit` calls on one model at once.")
        try:
            if steps_per_epoch is not None and not _data.is_batch_stream(x):
                raise ValueError("`steps_per_epoch` bounds a generator or a PyDataset; with arrays "
                                 "the epoch is the whole array (set `batch_size` instead). "
                                 f"Received: steps_per_epoch={steps_per_epoch!r} with x of type "
                                 f"{type(x).__name__}")
            return self._fit(x, y, batch_size, epochs, verbose, callbacks, validation_split,
                             validation_data, shuffle, class_weight, sample_weight,
                             initial_epoch, val_batch, validation_freq, validation_steps,
                             steps_per_epoch)
        finally:
            self._fit_lock.release()

    def _fit(self, x, y, batch_size, epochs, verbose, callbacks, validation_split,
             validation_data, shuffle, class_weight, sample_weight, initial_epoch, val_batch,
             validation_freq, validation_steps=None, steps_per_epoch=None):
        from . import callbacks as callbacks_mod

        batches = _data.is_batch_stream(x)
        if batches:
            self._refuse_with_batches(x, y=y, sample_weight=sample_weight,
                                      validation_split=validation_split)
        if validation_data is None and validation_split:
            x_arr = _validation.numeric_array("x", x)
            y_arr = _validation.numeric_array("y", y)
            _validation.same_length(len(x_arr), "y", y_arr)
            # Keras 3 keeps floor(n * (1 - split)) rows for training; the rest validate.
            n_train = int(math.floor(len(x_arr) * (1.0 - validation_split)))
            n_val = len(x_arr) - n_train
            if n_val == 0 or n_train == 0:
                raise ValueError(f"`validation_split`={validation_split} leaves {n_train} training "
                                 f"and {n_val} validation samples out of {len(x_arr)}; both must "
                                 f"be at least 1. Received: validation_split={validation_split!r}")
            sw_all = None if sample_weight is None else np.asarray(sample_weight)
            validation_data = (x_arr[n_train:], y_arr[n_train:]) if sw_all is None else \
                (x_arr[n_train:], y_arr[n_train:], sw_all[n_train:])
            x, y = x_arr[:n_train], y_arr[:n_train]
            sample_weight = None if sw_all is None else sw_all[:n_train]

        feed = None
        if batches:
            source = _data.BatchSource(x, steps_per_epoch, shuffle, "x")
            first = self._prepare_batch(source.peek(), 0, source, class_weight)  # builds the model
            y_arr = first[3]
            feed = _data.BatchFeed(
                source, lambda b, i: self._prepare_batch(b, i, source, class_weight)[:3])
            batch_size = len(first[0])  # the plan's; later batches may differ
            X = Y = sw = None
            steps = source.steps
        elif _data.streams_array(x, self._floatx()):
            X, Y, sw, y_arr = self._prepare_xy(x, y, sample_weight, class_weight, lazy_x=True)
            feed = _data.ArrayFeed(_data.ArraySource(X, Y, sw, self.dtype, "x"), batch_size)
            X = Y = sw = None
            steps = feed.steps
        else:
            X, Y, sw, y_arr = self._prepare_xy(x, y, sample_weight, class_weight)
            steps = -(-len(X) // batch_size)
        self._check_trainable_layout()
        metrics = self._resolve_metrics(y_arr)
        val = self._validation_source(validation_data, validation_steps)

        opt = self.optimizer
        opt.build(self._n_trainable, self.dtype)
        training = _engine.Training(self, batch_size, metrics, X, Y, sw, feed)
        cbs = callbacks_mod.CallbackList(callbacks, add_history=True, add_progbar=verbose != 0,
                                         model=self, verbose=verbose, epochs=epochs, steps=steps)
        try:
            return self._epochs(cbs, training, initial_epoch, epochs, steps, shuffle,
                                (val, val_batch, validation_freq))
        finally:
            training.release()

    def _governor(self, max_threads, batch_size):
        """The thread governor of this model for (max_threads, batch_size), kept across fits;
        a fixed count when the engine options give one (tests), and all the threads for batches
        on the packed GEMM (_packed): their products are long enough that hand-offs cost little,
        while a probe of one thread costs whole slow batches (9% of a 784-1024-1024-10 epoch at
        batch 1024). (BLAS, which ran the largest of them before, never probed.)"""
        fixed = self._engine_options.get("threads")
        if fixed is not None:
            return _engine.FixedThreads(fixed)
        if self._packed(batch_size):
            return _engine.FixedThreads(max_threads)
        key = (max_threads, batch_size)
        cached = self._governor_cache
        if cached is None or cached[0] != key:
            cached = (key, _engine.ThreadGovernor(max_threads))
            self._governor_cache = cached
        return cached[1]

    # Training batches of at least PACKED_MIN_ROWS rows through a dense layer of at least
    # PACKED_MIN_WEIGHTS weights run on the packed GEMM even within the own kernels' rows
    # (paired A/B, 784-512-512-10 adam: 4-10% faster at 256 rows, 4% at 192, 8% slower at 160;
    # 100-512-512-10 at 256: 20% faster; the seed net's 784 x 100 layer at 256: 5% slower).
    PACKED_MIN_ROWS = 192
    PACKED_MIN_WEIGHTS = 512 * 512

    def _packed(self, batch_size):
        """Whether training steps of this batch size run their products on the packed GEMM
        (float32; batches over the own kernels' rows, or wide layers' batches of
        PACKED_MIN_ROWS or more; see _kernels.Trainer)."""
        if self.dtype != "float32" or not self._engine_options.get("packed", True):
            return False
        if batch_size > _kernels.CODES["MAX_OWN_ROWS"]:
            return True
        widest = max((w.size for w in self.weights if np.ndim(w) == 2), default=0)
        return batch_size >= self.PACKED_MIN_ROWS and widest >= self.PACKED_MIN_WEIGHTS

    def _step_threads(self, batch_size):
        """Threads for a lone training step (train_on_batch, loss_and_gradients): one, whose
        hand-offs a single step would not repay, except on the packed GEMM's long products."""
        fixed = self._engine_options.get("threads")
        if fixed is not None:
            return fixed
        return config.num_threads() if self._packed(batch_size) else 1

    def _num_threads(self):
        """Threads for inference: the engine options' fixed count, else the configured most."""
        return self._engine_options.get("threads") or config.num_threads()

    def _epochs(self, cbs, training, initial_epoch, epochs, steps, shuffle, validation):
        """The epoch loop over `training`'s data (see _engine.Training): by rows of its arrays,
        or, with a feed, a chunk of batches at a time. validation: (data source or None, batch
        size, frequency)."""
        from . import callbacks as callbacks_mod

        val, val_batch, validation_freq = validation
        every_batch = cbs.needs_every_batch
        chunker = _engine.ChunkTimer(fixed=1 if every_batch else None)
        governor = self._governor(config.num_threads(), training.batch_size)
        governor.start()
        opt, feed, n = self.optimizer, training.feed, training.n
        self.stop_training = False
        cbs.on_train_begin()
        logs = {}
        epoch = initial_epoch
        for epoch in range(initial_epoch, epochs):
            cbs.on_epoch_begin(epoch)
            if feed is None:
                order = _random.generator().permutation(n).astype(np.intp) if shuffle \
                    else np.empty(0, dtype=np.intp)
            else:
                feed.begin_epoch(shuffle)
                order = np.empty(0, dtype=np.intp)
            stats = _engine.stats_buffer(len(training.metric_names))
            batch = 0
            while steps is None or batch < steps:
                k = chunker.next(steps - batch if steps is not None else 1 << 30)
                threads, cap = governor.choose()
                if cap is not None and not every_batch:
                    k = min(k, cap)
                t0 = _engine.time.perf_counter()
                if feed is None:
                    Xc, Yc, swc, bs = training.X, training.Y, training.sw, training.batch_size
                    start = batch * bs
                    stop = min(n, start + k * bs)
                else:
                    chunk = feed.take(k)
                    if chunk is None:
                        break
                    Xc, Yc, swc, bs = chunk
                    start, stop = 0, len(Xc)
                if every_batch:
                    cbs.on_train_batch_begin(batch)
                done = training.run(Xc, Yc, swc, order, start, stop, bs, stats, threads)
                elapsed = _engine.time.perf_counter() - t0
                governor.observe(threads, done, elapsed)
                if not governor.probing:
                    chunker.observe(done, elapsed)
                bad = stats[-1] != 0
                opt.iterations += done - (1 if bad else 0)
                batch += done
                logs = _engine.stats_logs(stats, "loss", training.metric_names)
                if bad and not any(isinstance(c, callbacks_mod.TerminateOnNaN) for c in cbs.callbacks):
                    raise FloatingPointError(
                        f"The loss became {logs['loss']} at epoch {epoch + 1}, batch {batch} "
                        f"(of {steps}); training stopped and that batch's update was not applied. "
                        "Lower the learning rate, scale the inputs, or add "
                        "callbacks=[fastdense.callbacks.TerminateOnNaN()] to stop quietly.")
                if bad:
                    logs = dict(logs, loss=float("nan"))
                cbs.on_train_batch_end(batch - 1, logs)
                if bad or self.stop_training:
                    break
            if feed is not None:
                feed.end_epoch()
                if steps is None:
                    steps = batch  # an iterator's length, learned from its first epoch
            epoch_logs = dict(logs)
            if val is not None and (epoch + 1) % validation_freq == 0:
                vlogs = self._evaluate_data(val, val_batch, training.metrics, cbs=cbs,
                                            threads=governor.best())
                epoch_logs.update({"val_" + k: v for k, v in vlogs.items()})
            cbs.on_epoch_end(epoch, epoch_logs)
            if self.stop_training:
                break
        cbs.on_train_end(epoch_logs if epochs > initial_epoch else {})
        self.history = cbs.history
        return cbs.history

    def _evaluate_arrays(self, X, Y, sw, batch_size, metrics, cbs=None, threads=None):
        """Loss and metric means over (X, Y, sw); with `cbs`, the test hooks run per chunk (or
        per batch when a callback needs every batch). threads: 1 or 2 (default: the configured
        most); with 2, the two threads share the batches (same results)."""
        if threads is None:
            threads = self._num_threads()
        # The loss is a per-sample mean, so the kernel may take bigger batches than the user's
        # (fewer, fuller passes); batch indices reported to callbacks stay in the user's units.
        every = cbs is not None and cbs.needs_every_test_batch
        n = len(X)
        bs = batch_size if every else max(batch_size, min(_INFER_ROWS, n))
        loss_code, fused, plan, work, stats, codes, names = self._eval_setup(bs, metrics)
        if cbs is None:
            _kernels.evaluate_steps(self._params, plan.plan, plan.reg, work, X, Y, sw, 0, n,
                                    bs, loss_code, fused, codes, stats, threads)
            return _engine.stats_logs(stats, "loss", names)

        def run(batch, k):
            start = batch * bs
            return _kernels.evaluate_steps(self._params, plan.plan, plan.reg, work, X, Y, sw,
                                           start, min(n, start + k * bs), bs, loss_code, fused,
                                           codes, stats, threads)

        def on_end(last, first, done):
            # reported in the user's batch units
            stop = min(n, (last + 1) * bs)
            cbs.on_test_batch_end(-(-stop // batch_size) - 1,
                                  _engine.stats_logs(stats, "loss", names))

        cbs.on_test_begin()
        _engine.run_chunked(-(-n // bs), every, run, cbs.on_test_batch_begin, on_end)
        logs = _engine.stats_logs(stats, "loss", names)
        cbs.on_test_end(logs)
        return logs

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None,
                 steps=None, callbacks=None, return_dict=False):
        """Loss (and metrics) on the given data: a float when there are no metrics, else
        `[loss, metric, ...]` in compile order, or a dict with `return_dict=True`. `x` may also
        be a generator, iterator or PyDataset of `(x, y[, sample_weight])` batches (bounded by
        `steps`, else read to its end), or a memmap (read a chunk at a time)."""
        self._require_compiled()
        batch_size = _validation.positive_int("batch_size", batch_size, allow_none=True) or 32
        verbose = _validation.verbose_level(verbose)
        steps = _validation.positive_int("steps", steps, allow_none=True)
        if self._streamed(x, steps):
            if _data.is_batch_stream(x):
                self._refuse_with_batches(x, y=y, sample_weight=sample_weight)
            logs, metrics = self._evaluate_stream(x, y, batch_size, verbose, sample_weight, steps,
                                                  callbacks)
            if return_dict:
                return logs
            values = [logs["loss"]] + [logs[m.name] for m in metrics]
            return values[0] if len(values) == 1 else values
        X, Y, sw, y_arr = self._prepare_xy(x, y, sample_weight, None)
        metrics = self._resolve_metrics(y_arr)
        cbs = None
        if verbose or callbacks:
            from . import callbacks as callbacks_mod

            cbs = callbacks_mod.CallbackList(callbacks, add_progbar=verbose != 0, model=self,
                                             verbose=verbose, epochs=1,
                                             steps=-(-len(X) // batch_size))
        logs = self._evaluate_arrays(X, Y, sw, batch_size, metrics, cbs=cbs)
        if return_dict:
            return logs
        values = [logs["loss"]] + [logs[m.name] for m in metrics]
        return values[0] if len(values) == 1 else values

    # -- inference -------------------------------------------------------------------------------
    def _forward(self, x, batch_size):
        # Fast path for the common call (a C-contiguous 2-D array of the model's dtype, e.g. one
        # row): the same checks as model_input, without its general conversions.
        if type(x) is np.ndarray and self.built and x.ndim == 2 and x.dtype == self._np_dtype \
                and x.flags.c_contiguous and x.shape[0] > 0 and len(self._feature_shape) == 1 \
                and x.shape[1] == self._feature_shape[0] and _ALL_FINITE[x.dtype](x):
            X = x
        else:
            was_built = self.built
            try:
                x_arr = _validation.numeric_array("x", x)
                self._ensure_built(x_arr)
                X = _validation.model_input("x", x_arr, self._feature_shape, self.dtype)
            except Exception:
                if not was_built:
                    self._unbuild()
                raise
        bs = min(batch_size, len(X), _INFER_ROWS)
        plan = self._plan(bs)
        out = np.empty((len(X), plan.out_width), dtype=self.dtype)
        # several batches: two threads may share them; one stays on this thread
        _FORWARD[X.dtype](self._params, plan.plan, plan.workspace(self.dtype), X, out, bs,
                          self._num_threads() if len(X) > bs else 1)
        return out

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """The model's outputs for x, an array of the model's dtype, `(n, units)`. `x` may also
        be a generator, iterator or PyDataset of batches (`x`, `(x,)` or `(x, y)`; bounded by
        `steps`, else read to its end), or a memmap (read a chunk at a time)."""
        batch_size = _validation.positive_int("batch_size", batch_size, allow_none=True) or 32
        verbose = _validation.verbose_level(verbose)
        if self._streamed(x, steps):
            steps = _validation.positive_int("steps", steps, allow_none=True)
            return self._predict_stream(x, batch_size, verbose, steps, callbacks)
        if not verbose and not callbacks:
            return self._forward(x, batch_size)
        from . import callbacks as callbacks_mod

        x_arr = _validation.numeric_array("x", x)
        self._ensure_built(x_arr)
        X = _validation.model_input("x", x_arr, self._feature_shape, self.dtype)
        n = len(X)
        steps_n = -(-n // batch_size)
        cbs = callbacks_mod.CallbackList(callbacks, add_progbar=verbose != 0, model=self,
                                         verbose=verbose, epochs=1, steps=steps_n)
        bs = min(batch_size, n, _INFER_ROWS)
        plan = self._plan(bs)
        work = plan.workspace(self.dtype)
        out = np.empty((n, plan.out_width), dtype=self.dtype)

        threads = self._num_threads()

        def run(batch, k):
            start, stop = batch * batch_size, min(n, (batch + k) * batch_size)
            _kernels.forward(self._params, plan.plan, work, X[start:stop], out[start:stop], bs,
                             threads)
            return k

        def on_end(last, first, done):
            start, stop = first * batch_size, min(n, (last + 1) * batch_size)
            cbs.on_predict_batch_end(last, {"outputs": out[start:stop]})

        cbs.on_predict_begin()
        _engine.run_chunked(steps_n, cbs.needs_every_predict_batch, run,
                            cbs.on_predict_batch_begin, on_end)
        cbs.on_predict_end()
        return out

    def __call__(self, x, training=False):
        """The model's outputs for x (inference), with the least overhead."""
        return self._forward(x, 1024)

    def predict_on_batch(self, x):
        return self._forward(x, 1 << 30)

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One update on one batch; returns the pre-update loss (and metrics)."""
        self._require_compiled()
        X, Y, sw, y_arr = self._prepare_xy(x, y, sample_weight, class_weight)
        metrics = self._resolve_metrics(y_arr)
        self._check_trainable_layout()
        opt = self.optimizer
        opt.build(self._n_trainable, self.dtype)
        bs = len(X)
        stats = _engine.stats_buffer(len(metrics))
        done = _engine.Training(self, bs, metrics).run(
            X, Y, sw, np.empty(0, dtype=np.intp), 0, bs, bs, stats, self._step_threads(bs))
        if stats[-1] == 0:
            opt.iterations += done
        logs = _engine.stats_logs(stats, "loss", [m.name for m in metrics])
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        self._require_compiled()
        X, Y, sw, y_arr = self._prepare_xy(x, y, sample_weight, None)
        metrics = self._resolve_metrics(y_arr)
        logs = self._evaluate_arrays(X, Y, sw, len(X), metrics)
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    # -- persistence -----------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config):
        """A new model from `get_config()` output (or a Keras 3 Sequential config)."""
        from . import saving

        return saving.model_from_config(config)

    def get_config(self):
        layers = []
        if self._feature_shape is not None:
            layers.append({"module": "keras.layers", "class_name": "InputLayer",
                           "config": {"batch_shape": [None] + list(self._feature_shape),
                                      "dtype": getattr(self, "dtype", "float32"), "sparse": False,
                                      "name": self._input_layer.name if self._input_layer else "input_layer"},
                           "registered_name": None})
        for l in self._layers:
            layers.append({"module": "keras.layers", "class_name": type(l).__name__,
                           "config": l.get_config(), "registered_name": None})
        return {"name": self.name, "trainable": self.trainable, "dtype": None, "layers": layers}

    def save(self, filepath, overwrite=True):
        """Saves architecture, weights, compile config and optimizer state to a `.keras` file."""
        from . import saving

        saving.save_model(self, filepath, overwrite=overwrite)

    def save_weights(self, filepath, overwrite=True):
        """Saves the weights to a `.weights.h5` file (Keras 3 layout)."""
        from . import saving

        saving.save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath):
        """Loads weights from a `.weights.h5` or `.keras` file; all or nothing."""
        from . import saving

        saving.load_weights(self, filepath)

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None,
               **kwargs):
        """Writes the inference function (`predict`) for serving without fastdense.

        fastdense writes `format="onnx"`: a standard ONNX model with a dynamic batch dimension,
        in the model's float type, that onnxruntime runs (`pip install "fastdense[onnx]"`).

        Args:
            filepath: where to write, e.g. `"model.onnx"`.
            format: `"onnx"` (Keras's default, `"tf_saved_model"`, needs TensorFlow).
            verbose: print where the file was written (default: yes, as Keras).
            input_signature: `None` (the model's input shape, any batch size).
            opset_version: the ONNX opset, 17 (default) to 21.
        """
        if format != "onnx":
            raise ValueError("fastdense exports to ONNX only: call model.export(filepath, "
                             f"format='onnx'). Received: format={format!r}")
        if input_signature is not None:
            raise ValueError("fastdense exports the model's own input shape with a dynamic batch "
                             f"dimension. Received: input_signature={input_signature!r}")
        unknown = set(kwargs) - {"opset_version"}
        if unknown:
            raise ValueError(f"Unknown argument(s) for the ONNX export: {sorted(unknown)}. "
                             f"Received: {kwargs}")
        from .export import onnx as onnx_export

        return onnx_export.export_onnx(self, filepath, verbose=verbose,
                                       opset_version=kwargs.get("opset_version"))

    # -- pickling (as Keras 3: through the .keras format) ----------------------------------------
    def __reduce__(self):
        """Pickles the model as the bytes of its `.keras` file (what `save` writes: architecture,
        weights, compile config, optimizer state), as Keras 3 does, so joblib, Dask and
        `copy.deepcopy` can move it; nothing else of the object is pickled. `history` is not kept."""
        from . import _keras_bytes

        return (_keras_bytes.from_bytes, (_keras_bytes.to_bytes(self),))

    # -- the classic custom training loop and Keras's model utilities ---------------------------
    @property
    def trainable_weights(self):
        """The weights an optimizer updates, in `get_weights()` order: views into the model's
        parameter vector, so `optimizer.apply_gradients(zip(grads, model.trainable_weights))`
        updates the model in place. (A later `add`, `pop` or rebuild makes new arrays.)"""
        return [w for l in self._layers for w in _layer_weights(l, True)]

    @property
    def non_trainable_weights(self):
        """The weights of layers with `trainable=False` (and a layer's own non-trainable ones)."""
        return [w for l in self._layers for w in _layer_weights(l, False)]

    trainable_variables = trainable_weights
    non_trainable_variables = non_trainable_weights

    @property
    def trainable(self):
        """False when every layer is frozen. Setting it sets every layer's `trainable` (as
        Keras's model.trainable does); it takes effect at the next compile()."""
        return any(l.trainable for l in self._layers) if self._layers else True

    @trainable.setter
    def trainable(self, value):
        for layer in self._layers:
            layer.trainable = bool(value)

    def _trainable_flags(self):
        return tuple(bool(l.trainable) for l in self._layers)

    def _check_trainable_layout(self):
        """A `trainable` flag changed since the parameters were laid out (build or compile): as
        in Keras 3, the change takes effect at the next compile(), or at the first training
        call when nothing has been trained yet; after that it must be compiled again."""
        if self._trainable_layout == self._trainable_flags():
            return
        if self.optimizer is not None and self.optimizer.iterations == 0:
            self.build((None,) + tuple(self._feature_shape))
            self.optimizer.build(self._n_trainable, self.dtype)
            return
        changed = [l.name for l, before in zip(self._layers, self._trainable_layout)
                   if bool(l.trainable) != before]
        raise ValueError("The `trainable` attribute of layers changed after the model was "
                         "compiled and trained: call `compile()` again for it to take effect "
                         f"(as in Keras 3). Received: trainable changed on {changed}")

    def loss_and_gradients(self, x, y, sample_weight=None):
        """`(loss, grads)` of one batch, for a custom training loop.

        The compiled loss (with regularization penalties) and its gradient with respect to
        each of `trainable_variables`, in training mode (dropout active): the arithmetic of one
        `fit` step, without the update. So over the batches of an epoch,

            loss, grads = model.loss_and_gradients(xb, yb)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))

        gives `fit`'s weights (shuffle=False) to float32 rounding. A non-finite loss comes back
        as it is, with NaN gradients (which `apply_gradients` refuses).

        Args:
            x, y, sample_weight: one batch, checked as in `fit`.
        Returns:
            `(loss, grads)`: a float and one new array per trainable variable, shaped like it.
        """
        self._require_compiled()
        X, Y, sw, _ = self._prepare_xy(x, y, sample_weight, None)
        self._check_trainable_layout()
        n = len(X)
        # the Trainer always ends with an update: it updates a copy of the parameters here, and
        # plain SGD with a weight decay term is a rule it never folds into the products, so
        # the gradient buffer receives the whole gradient first.
        hp = np.zeros(_K["N_HP"], dtype=np.float64)
        hp[_K["HP_WEIGHT_DECAY"]] = 1.0
        training = _engine.Training(self, n, [], update=(_K["OPT_SGD"], hp))
        grads = training.grads
        stats = _engine.stats_buffer(0)
        updated = self._params.copy()
        training.trainer(n).run(updated, np.empty(0, dtype=self.dtype), X, Y, sw,
                                np.empty(0, dtype=np.intp), 0, n, np.ones(1, dtype=np.float64), 0,
                                stats, self._step_threads(n))
        loss = float(stats[0] / stats[1])
        # the forward pass in training mode moves BatchNormalization's statistics, as calling
        # a Keras model with training=True does; the trainable weights stay as they were
        self._params[self._n_trainable:] = updated[self._n_trainable:]
        if stats[-1] != 0:
            grads.fill(np.nan)  # the kernel stops before the backward pass of a non-finite loss
        return loss, [self._flat_view(grads, w).copy() for w in self.trainable_weights]

    def _flat_view(self, flat, weight):
        """The part of `flat` (shaped like the parameter vector) that `weight` occupies in it."""
        base = self._params.__array_interface__["data"][0]
        off, rem = divmod(weight.__array_interface__["data"][0] - base, self._params.itemsize)
        if rem or off < 0 or off + weight.size > self._params.size or not weight.flags.c_contiguous:
            raise RuntimeError(f"A weight of shape {weight.shape} is not part of the model's "
                               "parameter vector (was the model rebuilt?)")
        return flat[off:off + weight.size].reshape(weight.shape)

    def get_layer(self, name=None, index=None):
        """A layer by its name or its index in `model.layers` (not both)."""
        if index is not None and name is not None:
            raise ValueError("Provide only a layer name or a layer index. "
                             f"Received: index={index!r}, name={name!r}.")
        if index is not None:
            if isinstance(index, (bool, np.bool_)) or not isinstance(index, numbers.Integral):
                raise TypeError(f"`index` must be an integer. Received: index={index!r}")
            if not -len(self._layers) <= index < len(self._layers):
                raise ValueError(f"Was asked to retrieve layer at index {index} but model only "
                                 f"has {len(self._layers)} layers. Received: index={index}")
            return self._layers[index]
        if name is not None:
            for layer in self._layers:
                if layer.name == name:
                    return layer
            raise ValueError(f"No such layer: {name}. Existing layers are: "
                             f"{[l.name for l in self._layers]}. Received: name={name!r}")
        raise ValueError("Provide either a layer name or layer index at `get_layer`. "
                         "Received: name=None, index=None")

    def to_json(self, **kwargs):
        """The model's architecture (and compile config) as Keras 3's JSON: what
        `keras.models.model_from_json` and `fastdense.models.model_from_json` read. Keyword
        arguments go to `json.dumps` (e.g. `indent=2`). Weights are not included."""
        import json

        from . import saving

        return json.dumps(saving._model_file_config(self), allow_nan=False,
                          default=_json_default, **kwargs)

    # -- streamed data: generators, iterators, PyDatasets, arrays read a chunk at a time --------
    def _streamed(self, x, steps):
        """Whether evaluate/predict read x as a stream (a generator, iterator or PyDataset, a
        memmap or a large array to convert, or any x with `steps`). An in-memory array already
        in the model's dtype is answered first: the checks cost a one-row predict 13%."""
        if (steps is None and type(x) is np.ndarray and self.built and x.dtype == self._np_dtype
                and x.flags.c_contiguous):
            return False
        return (steps is not None or _data.is_batch_stream(x)
                or _data.streams_array(x, self._floatx()))

    def _floatx(self):
        """The model's dtype, known before it is built (for choosing how to read the data)."""
        if self.built:
            return self.dtype
        return self._layers[0].dtype if self._layers else config.floatx()

    @staticmethod
    def _refuse_with_batches(x, **given):
        """Arguments that only make sense with arrays, refused for a generator or PyDataset."""
        what = _data.describe(x)
        for name, value in given.items():
            if name == "validation_split" and value:
                raise ValueError(
                    f"`validation_split` takes the last rows of arrays; with {what} as `x`, pass "
                    f"`validation_data` instead. Received: validation_split={value!r}")
            if name != "validation_split" and value is not None:
                raise ValueError(
                    f"With {what} as `x`, each batch carries its own targets and weights: `{name}` "
                    f"must not be given. Received: {name} of type {type(value).__name__}")

    def _prepare_batch(self, batch, index, source, class_weight=None, need_y=True):
        """One batch of a BatchSource checked and converted: (X, Y, sw, y_arr), or X alone for
        predict. Messages name the batch."""
        x, y, sw = _data.unpack(batch, index, source.source, need_y)
        xname = f"x in batch {index} of {source.label}"
        if not need_y:
            x_arr = _validation.numeric_array(xname, x)
            was_built = self.built
            try:
                self._ensure_built(x_arr)
                return _validation.model_input(xname, x_arr, self._feature_shape, self.dtype)
            except Exception:
                if not was_built:
                    self._unbuild()
                raise
        return self._prepare_xy(x, y, sw, class_weight, xname=xname,
                                yname=f"y in batch {index} of {source.label}",
                                swname=f"sample_weight in batch {index} of {source.label}")

    def _eval_data(self, x, y, sample_weight, steps, name, xname="x", yname="y",
                   swname="sample_weight", steps_name="steps"):
        """Evaluation data as `_evaluate_data` takes it, and the first targets (for metrics):
        arrays (X, Y, sw), an ArraySource, or a BatchSource."""
        if _data.is_batch_stream(x):
            source = _data.BatchSource(x, steps, False, name)
            first = self._prepare_batch(source.peek(), 0, source)
            return source, first[3]
        if steps is not None:
            raise ValueError(f"`{steps_name}` bounds a generator or a PyDataset; with arrays the "
                             f"whole array is used. Received: {steps_name}={steps!r} with {xname} "
                             f"of type {type(x).__name__}")
        lazy = _data.streams_array(x, self._floatx())
        X, Y, sw, y_arr = self._prepare_xy(x, y, sample_weight, None, xname=xname, yname=yname,
                                           swname=swname, lazy_x=lazy)
        if lazy:
            return _data.ArraySource(X, Y, sw, self.dtype, xname), y_arr
        return (X, Y, sw), y_arr

    def _validation_source(self, validation_data, validation_steps):
        """`validation_data` as `_evaluate_data` takes it (None when absent)."""
        if validation_data is None:
            return None
        if _data.is_batch_stream(validation_data):
            return self._eval_data(validation_data, None, None, validation_steps,
                                   "validation_data")[0]
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("`validation_data` must be a tuple (x_val, y_val) or "
                             "(x_val, y_val, val_sample_weight), a generator or a PyDataset. "
                             f"Received: validation_data of type {type(validation_data).__name__}")
        vx, vy = validation_data[0], validation_data[1]
        vsw = validation_data[2] if len(validation_data) == 3 else None
        return self._eval_data(vx, vy, vsw, validation_steps, "validation_data", xname="x_val",
                               yname="y_val", swname="val_sample_weight",
                               steps_name="validation_steps")[0]

    def _evaluate_data(self, data, batch_size, metrics, cbs=None, threads=None):
        """Loss and metric means over arrays (X, Y, sw), an ArraySource or a BatchSource."""
        if isinstance(data, tuple):
            return self._evaluate_arrays(*data, batch_size, metrics, cbs=cbs, threads=threads)
        if isinstance(data, _data.ArraySource):
            return self._evaluate_pieces(data.pieces(), batch_size, metrics, cbs, threads)
        # a BatchSource: batches as they come; its own batch size, like the array path's
        batch_size = len(_data.unpack(data.peek(), 0, data.source, True)[0])
        pieces = (self._prepare_batch(b, i, data)[:3] for i, b in enumerate(data.epoch()))
        logs = self._evaluate_pieces(pieces, batch_size, metrics, cbs, threads)
        data.end_epoch()
        return logs

    def _eval_setup(self, bs, metrics):
        """What an evaluation in batches of `bs` needs: (loss_code, fused, plan, workspace,
        stats, metric codes, metric names)."""
        loss_code, fused = self.loss.codes(self._plan(bs).last_activation)
        plan = self._plan(bs, keep_logits=fused, training=False)
        return (loss_code, fused, plan, plan.workspace(self.dtype), _engine.stats_buffer(len(metrics)),
                np.array([m.code for m in metrics], dtype=np.intp), [m.name for m in metrics])

    def _evaluate_pieces(self, pieces, batch_size, metrics, cbs, threads):
        """`_evaluate_arrays` for data arriving in (X, Y, sw) pieces: cut into the batches the
        whole array would be evaluated in, so the results are the array's."""
        if threads is None:
            threads = self._num_threads()
        every = cbs is not None and cbs.needs_every_test_batch
        bs = batch_size if every else max(batch_size, _INFER_ROWS)
        loss_code, fused, plan, work, stats, codes, names = self._eval_setup(bs, metrics)
        if cbs is not None:
            cbs.on_test_begin()
        rows = 0
        for X, Y, sw in _data.blocks(pieces, bs, bs if every else 16 * bs):
            if every:
                cbs.on_test_batch_begin(rows // batch_size)
            _kernels.evaluate_steps(self._params, plan.plan, plan.reg, work, X, Y, sw, 0, len(X),
                                    bs, loss_code, fused, codes, stats, threads)
            rows += len(X)
            if cbs is not None:
                cbs.on_test_batch_end(-(-rows // batch_size) - 1,
                                      _engine.stats_logs(stats, "loss", names))
        logs = _engine.stats_logs(stats, "loss", names)
        if cbs is not None:
            cbs.on_test_end(logs)
        return logs

    def _evaluate_stream(self, x, y, batch_size, verbose, sample_weight, steps, callbacks):
        """evaluate() on a generator, iterator, PyDataset, or an array read a chunk at a time."""
        data, y_arr = self._eval_data(x, y, sample_weight, steps, "x")
        metrics = self._resolve_metrics(y_arr)
        cbs = None
        if verbose or callbacks:
            from . import callbacks as callbacks_mod

            n_steps = data.steps if isinstance(data, _data.BatchSource) \
                else -(-data.n // batch_size)
            cbs = callbacks_mod.CallbackList(callbacks, add_progbar=verbose != 0, model=self,
                                             verbose=verbose, epochs=1, steps=n_steps)
        return self._evaluate_data(data, batch_size, metrics, cbs=cbs), metrics

    def _predict_stream(self, x, batch_size, verbose, steps, callbacks):
        """predict() on a generator, iterator, PyDataset, or an array read a chunk at a time."""
        if _data.is_batch_stream(x):
            source = _data.BatchSource(x, steps, False, "x")
            self._prepare_batch(source.peek(), 0, source, need_y=False)  # builds the model
            pieces = (self._prepare_batch(b, i, source, need_y=False)
                      for i, b in enumerate(source.epoch()))
            n_steps = source.steps
        else:
            if steps is not None:
                raise ValueError("`steps` bounds a generator or a PyDataset; with arrays the "
                                 f"whole array is used. Received: steps={steps!r}")
            array = _data.ArraySource(self._lazy_x(x), None, np.empty(0), self.dtype, "x")
            pieces = (p[0] for p in array.pieces())
            n_steps = -(-array.n // batch_size)
            source = None
        cbs = None
        if verbose or callbacks:
            from . import callbacks as callbacks_mod

            cbs = callbacks_mod.CallbackList(callbacks, add_progbar=verbose != 0, model=self,
                                             verbose=verbose, epochs=1, steps=n_steps)
            cbs.on_predict_begin()
        outs, rows = [], 0
        for i, X in enumerate(pieces):
            out = self._forward(X, batch_size)
            outs.append(out)
            rows += len(X)
            if cbs is not None:
                cbs.on_predict_batch_end(i if source is not None else -(-rows // batch_size) - 1,
                                         {"outputs": out})
        if cbs is not None:
            cbs.on_predict_end()
        if source is not None:
            source.end_epoch()
        return np.concatenate(outs) if len(outs) > 1 else outs[0]

    def _lazy_x(self, x):
        """x checked (numeric, the model's feature shape) but not converted."""
        x_arr = _validation.numeric_array("x", x)
        was_built = self.built
        try:
            self._ensure_built(x_arr)
            _validation.blas_sizes("x", x_arr)
            _validation.model_input("x", x_arr[:1], self._feature_shape, self.dtype)
        except Exception:
            if not was_built:
                self._unbuild()
            raise
        return x_arr



def _human_bytes(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}"
        n /= 1024


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """Loads a model saved by `model.save()` (fastdense or Keras 3 `.keras` files)."""
    from . import saving

    return saving.load_model(filepath, compile=compile)


Model = Sequential


# ---------------------------------------------------------------------------------------------
# Keras's model utilities
# ---------------------------------------------------------------------------------------------
def _layer_weights(layer, trainable):
    """A layer's trainable (or non-trainable) weights: all of them by its `trainable` flag,
    unless the layer lists its own (a layer with non-trainable statistics)."""
    own = getattr(layer, "trainable_weights" if trainable else "non_trainable_weights", None)
    if own is not None:
        return list(own) if layer.trainable or not trainable else []
    return list(layer.weights) if bool(layer.trainable) == trainable else []


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def clone_model(model, input_tensors=None, clone_function=None, **kwargs):
    """A new model with `model`'s architecture, freshly initialized weights, and no compile
    state (Keras's `clone_model`). Layers keep their configs (and names).

    Args:
        model: a `Sequential` model.
        clone_function: optional `layer -> new layer`; default
            `type(layer).from_config(layer.get_config())`.
    """
    if not isinstance(model, Sequential):
        raise ValueError("Expected `model` argument to be a fastdense `Sequential` model. "
                         f"Received: model={model!r}")
    if input_tensors is not None or kwargs:
        given = dict(kwargs)
        if input_tensors is not None:
            given["input_tensors"] = input_tensors
        raise ValueError("fastdense's clone_model supports `clone_function` only. "
                         f"Received: {given}")
    if clone_function is None:
        def clone_function(layer):
            return type(layer).from_config(layer.get_config())
    elif not callable(clone_function):
        raise ValueError("`clone_function` must be callable. "
                         f"Received: clone_function={clone_function!r}")
    clone = Sequential(name=model.name)
    if model._input_layer is not None:
        clone.add(InputLayer.from_config(model._input_layer.get_config()))
    for layer in model.layers:
        new = clone_function(layer)
        if not isinstance(new, Layer):
            raise ValueError("`clone_function` must return a fastdense layer. "
                             f"Received: {new!r} for layer {layer.name!r}")
        if new is layer:
            raise ValueError("`clone_function` must return a new layer: a layer belongs to one "
                             f"model. Received: the original layer {layer.name!r}")
        clone.add(new)
    if model.built and not clone.built:
        clone.build(model.input_shape)
    return clone


def model_from_json(json_string, custom_objects=None):
    """A new model from `model.to_json()` or Keras 3's `to_json()` output: architecture (and the
    compile config, when the JSON has one), freshly initialized weights. Names in the JSON are
    looked up in fastdense's own tables; nothing in it names code to import."""
    import json

    from . import saving

    if custom_objects:
        raise ValueError("fastdense loads its own layers only: `custom_objects` is not "
                         f"supported. Received: custom_objects={custom_objects!r}")
    if not isinstance(json_string, (str, bytes, bytearray)):
        raise TypeError("`json_string` must be a JSON string. "
                        f"Received: json_string of type {type(json_string).__name__}")

    def reject_constant(constant):
        raise ValueError(f"holds {constant}, which is not valid JSON")

    try:
        config = json.loads(json_string, parse_constant=reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"Invalid model JSON: {exc}. Received: a string of "
                         f"{len(json_string)} characters") from None
    if not isinstance(config, dict):
        raise ValueError("Invalid model JSON: expected an object with `class_name` and `config`. "
                         f"Received: {type(config).__name__}")
    try:
        plan = saving._model_plan(config)
        compile_plan = saving._compile_plan(config, plan)
    except saving._FormatError as exc:
        raise ValueError(f"Invalid model JSON: {exc}") from None
    model = saving._sequential_from_plan(plan)
    if compile_plan is not None:
        model.compile(optimizer=compile_plan["optimizer"], loss=compile_plan["loss"],
                      metrics=compile_plan["metrics"])
    return model
