"""Optimizers with Keras 3's update rules, defaults and names.

An optimizer holds its hyper-parameters in Python and its slots (momenta, second moments) in one
flat array beside the model's flat parameter vector; the compiled step updates them in one pass.
`learning_rate` is a float or a schedule (any callable `step -> rate`), settable at any time
(callbacks do so between epochs).
"""
import math
import numbers
import warnings

import numpy as np

from . import _kernels, _validation

_K = _kernels.CODES


class LearningRateSchedule:
    """Base of schedules: `schedule(step) -> learning rate`, step = updates applied so far."""

    def __call__(self, step):
        raise NotImplementedError

    def get_config(self):
        return {}


class ExponentialDecay(LearningRateSchedule):
    """`initial_learning_rate * decay_rate ** (step / decay_steps)` (floored if staircase)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name=None):
        self.initial_learning_rate = _validation.finite_float(
            "initial_learning_rate", initial_learning_rate, positive=True)
        self.decay_steps = _validation.positive_int("decay_steps", decay_steps)
        self.decay_rate = _validation.finite_float("decay_rate", decay_rate, positive=True)
        self.staircase = bool(staircase)

    def __call__(self, step):
        p = step / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate ** p

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate,
                "staircase": self.staircase}


class InverseTimeDecay(LearningRateSchedule):
    """`initial_learning_rate / (1 + decay_rate * step / decay_steps)` (floored if staircase)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name=None):
        self.initial_learning_rate = _validation.finite_float(
            "initial_learning_rate", initial_learning_rate, positive=True)
        self.decay_steps = _validation.positive_int("decay_steps", decay_steps)
        self.decay_rate = _validation.finite_float("decay_rate", decay_rate, minimum=0.0)
        self.staircase = bool(staircase)

    def __call__(self, step):
        p = step / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate / (1 + self.decay_rate * p)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate,
                "staircase": self.staircase}


class schedules:  # noqa: N801 - mirrors the `keras.optimizers.schedules` namespace
    LearningRateSchedule = LearningRateSchedule
    ExponentialDecay = ExponentialDecay
    InverseTimeDecay = InverseTimeDecay


class Optimizer:
    """Base class. Keras 3 arguments common to every optimizer:

    Args:
        learning_rate: float > 0, or a callable `step -> float` (a schedule).
        weight_decay: decoupled decay, `w -= w * weight_decay * lr` before the update.
        clipvalue: clip every gradient element to [-clipvalue, clipvalue].
        global_clipnorm: rescale all gradients so their joint L2 norm is at most this.
        name: the optimizer's name.
    Legacy Keras 2 arguments are accepted with a DeprecationWarning: `lr` (alias of
    `learning_rate`) and `decay` (learning rate `lr / (1 + decay * step)`).
    """
    code = None
    n_slots = 0
    default_name = None

    def __init__(self, learning_rate, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, use_ema=False, name=None, **kwargs):
        if "lr" in kwargs:
            warnings.warn("The `lr` argument is deprecated, use `learning_rate` instead.",
                          DeprecationWarning, stacklevel=3)
            learning_rate = kwargs.pop("lr")
        self.decay = 0.0
        if "decay" in kwargs:
            warnings.warn("The `decay` argument is deprecated: fastdense applies Keras 2's rule "
                          "lr / (1 + decay * step); prefer optimizers.schedules.InverseTimeDecay.",
                          DeprecationWarning, stacklevel=3)
            self.decay = _validation.finite_float("decay", kwargs.pop("decay"), minimum=0.0)
        if kwargs:
            raise ValueError(f"Argument(s) not recognized by {type(self).__name__}: "
                             f"{sorted(kwargs)}. Received: {kwargs}")
        if clipnorm is not None:
            raise ValueError("fastdense does not support per-variable `clipnorm`; use "
                             f"`global_clipnorm` or `clipvalue`. Received: clipnorm={clipnorm!r}")
        if use_ema:
            raise ValueError(f"fastdense does not support `use_ema`. Received: use_ema={use_ema!r}")
        self.learning_rate = learning_rate
        self.weight_decay = 0.0 if weight_decay is None else _validation.finite_float(
            "weight_decay", weight_decay, minimum=0.0)
        self.clipvalue = None if clipvalue is None else _validation.finite_float(
            "clipvalue", clipvalue, positive=True)
        self.global_clipnorm = None if global_clipnorm is None else _validation.finite_float(
            "global_clipnorm", global_clipnorm, positive=True)
        self.name = name or self.default_name
        self.iterations = 0
        self._slots = None
        # Keras 3 state for plain arrays (build(var_list), apply): the variables, their slots
        self._variables = None
        self._var_index = {}
        self._var_slots = []

    @property
    def learning_rate(self):
        """The current learning rate (a schedule is evaluated at the current step)."""
        if callable(self._learning_rate):
            return float(self._learning_rate(self.iterations))
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        if callable(value):
            self._learning_rate = value
            return
        if isinstance(value, np.ndarray) and value.size == 1:
            value = value.item()
        self._learning_rate = _validation.finite_float("learning_rate", value, positive=True)

    # Keras 2 spelling
    lr = learning_rate

    def _rates(self, start, count):
        """Learning rates of the updates start .. start+count-1 (float64)."""
        lr = self._learning_rate
        if callable(lr):
            out = np.array([float(lr(start + k)) for k in range(count)], dtype=np.float64)
            if not np.isfinite(out).all() or (out <= 0).any():
                raise ValueError("The learning-rate schedule returned a non-positive or non-finite "
                                 f"rate. Received: {out[(~np.isfinite(out)) | (out <= 0)][0]!r}")
        else:
            out = np.full(count, lr, dtype=np.float64)
        if self.decay:
            out /= 1.0 + self.decay * np.arange(start, start + count, dtype=np.float64)
        return out

    def _hyper(self):
        hp = np.zeros(_K["N_HP"], dtype=np.float64)
        hp[_K["HP_WEIGHT_DECAY"]] = self.weight_decay
        hp[_K["HP_CLIPVALUE"]] = self.clipvalue or 0.0
        hp[_K["HP_GLOBAL_CLIPNORM"]] = self.global_clipnorm or 0.0
        return hp

    def _kernel_code(self):
        return self.code

    def _initial_slots(self, n_params, dtype):
        return np.zeros(self.n_slots * n_params, dtype=dtype)

    def build(self, var_list, dtype=None):
        """Creates the optimizer's state (momenta, moments) for the variables it will update.

        `build(var_list)` (Keras 3): one set of slots per array of `var_list`, kept until the
        next `build`; `apply`/`apply_gradients` build on their first call and then accept only
        these arrays. `build(n_params, dtype)`: the slots for a model's flat parameter vector,
        as `fit` uses them (reallocated only when the size or dtype changes).
        """
        if dtype is not None or isinstance(var_list, numbers.Integral):
            n_params = var_list
            if self._slots is None or self._slots.size != self.n_slots * n_params or \
                    self._slots.dtype != np.dtype(dtype):
                self._slots = self._initial_slots(n_params, dtype)
            return
        variables = _checked_variables(var_list)
        self._variables = variables
        self._var_index = {id(v): i for i, v in enumerate(variables)}
        self._var_slots = [self._initial_slots(v.size, v.dtype) for v in variables]

    @property
    def built(self):
        """Whether `build(var_list)` has run (explicitly or by a first `apply`)."""
        return self._variables is not None

    def apply_gradients(self, grads_and_vars):
        """Updates each variable in place from its gradient: `apply_gradients(zip(grads, vars))`.

        Returns the number of updates applied so far (`iterations`). See `apply`.
        """
        pairs = list(grads_and_vars)
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError("`grads_and_vars` must hold (gradient, variable) pairs, e.g. "
                                 "zip(grads, variables). Received: item "
                                 f"{i} of type {type(pair).__name__}")
        grads = [g for g, _ in pairs]
        variables = [v for _, v in pairs]
        self.apply(grads, variables)
        return self.iterations

    def apply(self, grads, trainable_variables=None):
        """One update of every variable from its gradient, in place (Keras 3's rule and state).

        Args:
            grads: one gradient per variable, shaped like it (any float dtype; never modified).
                A None gradient skips its variable (with a warning, as in Keras).
            trainable_variables: writable float32/float64 NumPy arrays (e.g.
                `model.trainable_variables`); default: the variables the optimizer was built
                with. The first call builds the optimizer with these variables; later calls
                must pass variables from that set.

        Learning-rate schedules, `clipvalue`, `global_clipnorm` (over all the gradients of the
        call) and `weight_decay` apply as in `fit`; `iterations` grows by one per call (an empty
        call is a no-op, as in Keras).
        Everything is checked before any variable changes.
        """
        grads = list(grads)
        variables = None if trainable_variables is None else list(trainable_variables)
        if not grads and not variables:
            return  # nothing to update, as in Keras (the optimizer is not built by it)
        if variables is None:
            if not self.built:
                raise ValueError("When passing `grads` without `trainable_variables`, the "
                                 "optimizer must already be built: call "
                                 "`optimizer.build(variables)` or pass the variables. "
                                 "Received: trainable_variables=None")
            variables = list(self._variables)
        if len(grads) != len(variables):
            raise ValueError(f"There must be one gradient per variable. Received: {len(grads)} "
                             f"gradients for {len(variables)} variables")
        for i, v in enumerate(variables):
            _check_variable(f"trainable_variables[{i}]", v)
        if not self.built:
            self.build(variables)
        pairs = [(i, g, v) for i, (g, v) in enumerate(zip(grads, variables)) if g is not None]
        if not pairs:
            raise ValueError("No gradients provided for any variable. Received: grads with "
                             f"only None for {len(variables)} variables")
        if len(pairs) < len(variables):
            warnings.warn(f"Gradients do not exist for {len(variables) - len(pairs)} of the "
                          f"{len(variables)} variables; those variables are not updated.",
                          UserWarning, stacklevel=2)
        # Checked and converted first, so that a bad pair changes no variable.
        work = []
        for i, g, v in pairs:
            k = self._var_index.get(id(v))
            if k is None or self._variables[k] is not v:
                raise ValueError(
                    f"Unknown variable: this optimizer was built with {len(self._variables)} "
                    "arrays and updates only those; call `optimizer.build(variables)` with every "
                    "variable, or use a new optimizer for a new set of variables. Received: "
                    f"trainable_variables[{i}] of shape {v.shape}, not one of them")
            if self._var_slots[k].size != self.n_slots * v.size or \
                    self._var_slots[k].dtype != v.dtype:
                raise ValueError(f"trainable_variables[{i}] changed shape or dtype since the "
                                 f"optimizer was built. Received: shape {v.shape}, dtype {v.dtype}")
            work.append((_checked_gradient(f"grads[{i}]", g, v), v, self._var_slots[k]))
        lr = float(self._rates(self.iterations, 1)[0])
        hp = self._hyper()
        if self.global_clipnorm:
            # the norm is over all the gradients of this call, as in fit's flat vector
            norm = math.sqrt(sum(float(np.dot(g.astype(np.float64).ravel(),
                                              g.astype(np.float64).ravel())) for g, _, _ in work))
            if norm > self.global_clipnorm:
                for g, v, _ in work:
                    g *= v.dtype.type(self.global_clipnorm / norm)
            hp[_K["HP_GLOBAL_CLIPNORM"]] = 0.0
        code = self._kernel_code()
        for g, v, slots in work:
            if v.size == 0:
                continue
            flat = v.reshape(-1) if v.flags.c_contiguous else np.ascontiguousarray(v).reshape(-1)
            _kernels.optimizer_step(code, hp, lr, self.iterations, flat, g.reshape(-1), slots)
            if not v.flags.c_contiguous:
                v[...] = flat.reshape(v.shape)
        self.iterations += 1

    def get_config(self):
        lr = self._learning_rate
        cfg = {"name": self.name,
               "learning_rate": lr if not callable(lr) else _serialize_schedule(lr),
               "weight_decay": self.weight_decay or None, "clipnorm": None,
               "global_clipnorm": self.global_clipnorm, "clipvalue": self.clipvalue,
               "use_ema": False, "ema_momentum": 0.99, "ema_overwrite_frequency": None,
               "loss_scale_factor": None, "gradient_accumulation_steps": None}
        cfg.update(self._own_config())
        return cfg

    def _own_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("ema_momentum", "ema_overwrite_frequency", "loss_scale_factor",
                    "gradient_accumulation_steps", "is_legacy_optimizer", "jit_compile"):
            config.pop(key, None)
        if config.get("use_ema") is False:
            config.pop("use_ema")
        if config.get("clipnorm") is None:
            config.pop("clipnorm", None)
        lr = config.get("learning_rate")
        if isinstance(lr, dict):
            config["learning_rate"] = _deserialize_schedule(lr)
        return cls(**config)


def _serialize_schedule(schedule):
    if isinstance(schedule, LearningRateSchedule):
        return {"module": "keras.optimizers.schedules", "class_name": type(schedule).__name__,
                "config": schedule.get_config(), "registered_name": None}
    raise ValueError("Only fastdense.optimizers.schedules objects can be saved in a config. "
                     f"Received: learning_rate={schedule!r}")


def _deserialize_schedule(cfg):
    classes = {"ExponentialDecay": ExponentialDecay, "InverseTimeDecay": InverseTimeDecay}
    cls = classes.get(cfg.get("class_name"))
    if cls is None:
        raise ValueError(f"Unknown learning-rate schedule: expected one of {sorted(classes)}. "
                         f"Received: class_name={cfg.get('class_name')!r}")
    return cls(**(cfg.get("config") or {}))


def _checked_variables(var_list):
    if isinstance(var_list, np.ndarray) or not hasattr(var_list, "__iter__"):
        raise TypeError("`var_list` must be a list of arrays. Received: "
                        f"var_list of type {type(var_list).__name__}")
    variables = list(var_list)
    seen = set()
    for i, v in enumerate(variables):
        _check_variable(f"var_list[{i}]", v)
        if id(v) in seen:
            raise ValueError(f"Each variable may appear once in `var_list`. Received: "
                             f"var_list[{i}] twice")
        seen.add(id(v))
    return variables


def _check_variable(name, v):
    """A variable the optimizer updates in place: a writable float32/float64 ndarray."""
    if not isinstance(v, np.ndarray):
        raise TypeError(f"`{name}` must be a NumPy array, which the optimizer updates in place. "
                        f"Received: {name} of type {type(v).__name__}")
    if v.dtype not in (np.float32, np.float64) or not v.dtype.isnative:
        raise TypeError(f"`{name}` must have dtype float32 or float64 (native byte order). "
                        f"Received: {name}.dtype={v.dtype}")
    if not v.flags.writeable:
        raise ValueError(f"`{name}` is read-only; the optimizer updates variables in place. "
                         f"Received: {name} with writeable=False")


def _checked_gradient(name, g, v):
    """`g` as a new C-contiguous array of v's dtype (the update clips it in place)."""
    arr = _validation.numeric_array(name, g)
    if arr.dtype.kind != "f":
        raise TypeError(f"`{name}` must hold floating-point values. Received: {name}.dtype={arr.dtype}")
    if arr.shape != v.shape:
        raise ValueError(f"`{name}` must have the shape of its variable, {v.shape}. "
                         f"Received: {name}.shape={arr.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.array(arr, dtype=v.dtype, order="C", copy=True)
    if not np.isfinite(out).all():
        raise ValueError(f"`{name}` contains NaN or Inf (or values too large for {v.dtype}); "
                         "no variable was updated. Received: a non-finite gradient")
    return out


def _unit_interval(name, value):
    return _validation.finite_float(name, value, minimum=0.0, below=1.0)


class SGD(Optimizer):
    """Gradient descent, with optional (Nesterov) momentum.

    `w -= lr * g`; with momentum `m = momentum * m - lr * g`, then `w += m` (or, Nesterov,
    `w += momentum * m - lr * g`).

    Example:
    >>> model.compile(optimizer=fastdense.optimizers.SGD(learning_rate=0.1, momentum=0.9), loss="mse")
    """
    default_name = "SGD"

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.momentum = _validation.finite_float("momentum", momentum, minimum=0.0, below=1.0 + 1e-12)
        if self.momentum > 1:
            raise ValueError(f"`momentum` must be in [0, 1]. Received: momentum={momentum!r}")
        self.nesterov = bool(nesterov)

    @property
    def n_slots(self):
        return 1 if self.momentum else 0

    def _kernel_code(self):
        if not self.momentum:
            return _K["OPT_SGD"]
        return _K["OPT_SGD_NESTEROV"] if self.nesterov else _K["OPT_SGD_MOMENTUM"]

    def _hyper(self):
        hp = super()._hyper()
        hp[_K["HP_MOMENTUM"]] = self.momentum
        return hp

    def _own_config(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam: `m += (g - m)(1 - beta_1)`, `v += (g^2 - v)(1 - beta_2)`,
    `w -= lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)`."""
    default_name = "adam"
    n_slots = 2

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
                 **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1 = _unit_interval("beta_1", beta_1)
        self.beta_2 = _unit_interval("beta_2", beta_2)
        self.epsilon = _validation.finite_float("epsilon", epsilon, positive=True)
        if amsgrad:
            raise ValueError(f"fastdense does not support `amsgrad`. Received: amsgrad={amsgrad!r}")
        self.amsgrad = False
        self.code = _K["OPT_ADAM"]

    def _hyper(self):
        hp = super()._hyper()
        hp[_K["HP_BETA_1"]], hp[_K["HP_BETA_2"]] = self.beta_1, self.beta_2
        hp[_K["HP_EPSILON"]] = self.epsilon
        return hp

    def _own_config(self):
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "amsgrad": False}


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.004): `w -= w * weight_decay * lr` first."""
    default_name = "adamw"

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7, amsgrad=False, **kwargs):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad,
                         weight_decay=weight_decay, **kwargs)


class RMSprop(Optimizer):
    """RMSprop: `v = rho v + (1 - rho) g^2`; `w -= lr g / sqrt(v + epsilon)` (Keras puts epsilon
    inside the root); `centered` subtracts the squared mean gradient; `momentum` accumulates."""
    default_name = "rmsprop"

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False,
                 **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.rho = _unit_interval("rho", rho)
        self.momentum = _unit_interval("momentum", momentum)
        self.epsilon = _validation.finite_float("epsilon", epsilon, positive=True)
        self.centered = bool(centered)
        self.code = _K["OPT_RMSPROP"]

    n_slots = 3

    def _hyper(self):
        hp = super()._hyper()
        hp[_K["HP_RHO"]], hp[_K["HP_MOMENTUM"]] = self.rho, self.momentum
        hp[_K["HP_EPSILON"]], hp[_K["HP_CENTERED"]] = self.epsilon, float(self.centered)
        return hp

    def _own_config(self):
        return {"rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                "centered": self.centered}


class Adagrad(Optimizer):
    """Adagrad: `acc += g^2`; `w -= lr g / sqrt(acc + epsilon)`, acc starting at
    `initial_accumulator_value`."""
    default_name = "adagrad"
    n_slots = 1

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.initial_accumulator_value = _validation.finite_float(
            "initial_accumulator_value", initial_accumulator_value, minimum=0.0)
        self.epsilon = _validation.finite_float("epsilon", epsilon, positive=True)
        self.code = _K["OPT_ADAGRAD"]

    def _initial_slots(self, n_params, dtype):
        return np.full(n_params, self.initial_accumulator_value, dtype=dtype)

    def _hyper(self):
        hp = super()._hyper()
        hp[_K["HP_EPSILON"]] = self.epsilon
        return hp

    def _own_config(self):
        return {"initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad}
_BY_CLASS = {c.__name__: c for c in _BY_NAME.values()}


def get(identifier):
    """An optimizer from a case-insensitive name, a `{"class_name", "config"}` dict or instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, dict) and identifier.get("class_name") in _BY_CLASS:
        return _BY_CLASS[identifier["class_name"]].from_config(identifier.get("config") or {})
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    import difflib

    close = difflib.get_close_matches(str(identifier).lower(), list(_BY_NAME), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"Unknown optimizer: expected one of {sorted(_BY_NAME)} (any case) or a "
        f"fastdense.optimizers.Optimizer.{hint} Received: optimizer={identifier!r}"
    )
