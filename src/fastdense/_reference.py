"""Plain-NumPy twin of `fastdense._kernels`: the test oracle and the readable specification.

Every public function of the compiled module has a twin here with the same name, parameters,
defaults and buffer semantics: `# OUT` / `# INOUT` arrays are written in place and return values
match. Each is written from the mathematics (Keras 3's activations, losses and optimizer updates,
and the kernel docstrings) as vectorized NumPy, not as a copy of the Cython loops, so
reading this file tells you what a kernel computes. `tests/test_kernels.py` runs the kernel tests on
both modules and compares them directly; the reference is far too slow to train with.

Precision follows the kernels: arithmetic on buffers is done in the buffers' own float type, while
losses, metrics and weight penalties are accumulated in float64, as the kernels do.

Dropout masks come from the kernels' generator (splitmix64 over the caller's 64-bit state, one
53-bit uniform per element in row-major order, op by op, batch by batch), reproduced here
vectorized, so `train_steps` with dropout gives the same masks as the compiled one.
"""
import numpy as np
from scipy import special

from . import _kernels, _kinds

CODES = _kernels.CODES
_K = CODES

# Activations whose derivative needs the pre-activation S, not only the output Z (_kinds.py).
ACT_NEEDS_PRE = _kinds.NEEDS_PRE

SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805
LEAKY_SLOPE = 0.2
CLIP_EPS = 1e-7  # Keras's `epsilon()`: probabilities are clipped to [eps, 1 - eps]
INV_SQRT2 = 0.7071067811865476
INV_SQRT_2PI = 0.3989422804014327


# ---------------------------------------------------------------------------------------------
# Activations: act(x), and act'(x) written through the output z = act(x) where possible.
# ---------------------------------------------------------------------------------------------
# Per activation (by its name in _kinds.ACTIVATIONS): act(x), and act'(s) as a function of
# (s, z = act(s)). At the kinks these are TF's values: relu'(0) = 0, leaky_relu'(0) = 0.2,
# hard_sigmoid'(-3) = hard_sigmoid'(3) = 0. softmax's derivative is a Jacobian (see
# activation_backward). np.minimum keeps expm1 from overflowing on the branch np.where discards.
_ACTIVATIONS = {
    "LINEAR": (lambda x: x, lambda s, z: np.ones_like(z)),
    "SIGMOID": (special.expit, lambda s, z: z * (1 - z)),
    "SOFTMAX": (lambda x: special.softmax(x, axis=-1), None),
    "TANH": (np.tanh, lambda s, z: 1 - z * z),
    "RELU": (lambda x: np.maximum(x, 0), lambda s, z: (z > 0).astype(z.dtype)),
    "ELU": (lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
            lambda s, z: np.where(z > 0, 1, z + 1).astype(z.dtype)),
    "SELU": (lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0))),
             lambda s, z: np.where(z > 0, SELU_SCALE, z + SELU_SCALE * SELU_ALPHA).astype(z.dtype)),
    "SOFTPLUS": (lambda x: np.logaddexp(0, x),
                 lambda s, z: -np.expm1(-z)),  # sigmoid(s) = 1 - exp(-softplus(s))
    "SOFTSIGN": (lambda x: x / (1 + np.abs(x)),
                 lambda s, z: (1 - np.abs(z)) ** 2),  # 1 / (1 + |s|)^2
    "SWISH": (lambda x: x * special.expit(x),
              lambda s, z: special.expit(s) * (1 + s * (1 - special.expit(s)))),
    "GELU": (lambda x: 0.5 * x * (1 + special.erf(x * INV_SQRT2)),
             lambda s, z: (0.5 * (1 + special.erf(s * INV_SQRT2))
                           + s * INV_SQRT_2PI * np.exp(-0.5 * s * s))),
    "LEAKY_RELU": (lambda x: np.where(x > 0, x, LEAKY_SLOPE * x),
                   lambda s, z: np.where(z > 0, 1, LEAKY_SLOPE).astype(z.dtype)),
    "HARD_SIGMOID": (lambda x: np.clip(x + 3, 0, 6) / 6,  # relu6(x + 3) / 6
                     lambda s, z: np.where((z > 0) & (z < 1), 1 / 6, 0).astype(z.dtype)),
    "EXPONENTIAL": (np.exp, lambda s, z: z),
}
_FORWARD = {_K["ACT_" + name]: pair[0] for name, pair in _ACTIVATIONS.items()}
_DERIVATIVE = {_K["ACT_" + name]: pair[1] for name, pair in _ACTIVATIONS.items()}


def activation_forward(act, Z):
    """Z := act(Z) in place (softmax over each row).   # INOUT Z (n, m)"""
    Z[...] = _FORWARD[act](Z)


def activation_backward(act, S, Z, dZ, dS):
    """dS := dZ * act'(S), with Z = act(S). # IN S, Z, dZ (n, m)   # OUT dS (n, m)"""
    if act == _K["ACT_SOFTMAX"]:
        # Jacobian-vector product of softmax: z * (dz - <dz, z>) row by row.
        dS[...] = Z * (dZ - np.sum(dZ * Z, axis=1, keepdims=True))
    else:
        dS[...] = dZ * _DERIVATIVE[act](S, Z)


# ---------------------------------------------------------------------------------------------
# Dense layer.
# ---------------------------------------------------------------------------------------------
def dense_forward(X, W, b, act, Z, S=None, threads=1):
    """Z := act(X @ W + b); S := X @ W + b if S is given. b may be empty (no bias). threads:
    the compiled kernel's (no effect on the result).

    # IN X (n, n_in), W (n_in, n_out), b (n_out,) or (0,)   # OUT Z (n, n_out), S (n, n_out)
    """
    pre = X @ W
    if len(b):
        pre += b
    if S is not None:
        S[...] = pre
    Z[...] = _FORWARD[act](pre)


def dense_backward(X, W, dS, dW, db, dX=None, threads=1, sparse=True):
    """dW := X^T @ dS; db := sum_rows(dS) (if db is not empty); dX := dS @ W^T (if dX is given).
    threads, sparse: the compiled kernel's options (no effect on the result).

    # IN X (n, n_in), W (n_in, n_out), dS (n, n_out)   # OUT dW, db, dX
    """
    dW[...] = X.T @ dS
    if len(db):
        db[...] = dS.sum(axis=0)
    if dX is not None:
        dX[...] = dS @ W.T


def packed_gemm(A, B, C, ta=False, tb=False, alpha=1, beta=0, bias=None, relu=False, threads=1,
                gate=None, bsum=None, bsum_lr=0):
    """C := alpha * op(A) @ op(B) + beta * C (+ bias per column, then relu; then C := 0 where
    gate <= 0), op(A) = A.T when ta, op(B) = B.T when tb; bsum := op(B)'s column sums, or with
    bsum_lr > 0, bsum -= bsum_lr * those sums (float32; the compiled one rounds each element's
    chain of FMAs; threads: no effect on the result).

    # IN A, B (shapes matching C after the transposes), bias (C's columns), gate (C's shape)
    # INOUT C, bsum (C's columns)
    """
    a = (A.T if ta else A).astype(np.float64)
    b = (B.T if tb else B).astype(np.float64)
    out = alpha * (a @ b) + beta * C.astype(np.float64)
    if bias is not None:
        out += bias
    if relu:
        out = np.maximum(out, 0)
    if gate is not None:
        out = np.where(gate > 0, out, 0)
    C[...] = out
    if bsum is not None:
        sums = b.sum(axis=0)
        bsum[...] = bsum - bsum_lr * sums if bsum_lr > 0 else sums


# ---------------------------------------------------------------------------------------------
# Losses: per-sample loss_i (n,) and its gradient d loss_i / dL (n, m), in float64.
# ---------------------------------------------------------------------------------------------
def _one_hot(Y, m):
    """Sparse labels (n, 1), class ids stored as floats -> one-hot (n, m)."""
    return (np.arange(m) == Y[:, :1].astype(np.intp)).astype(np.float64)


def _mse(L, Y):
    d = L - Y
    return np.mean(d * d, axis=1), 2 * d / L.shape[1]


def _mae(L, Y):
    d = L - Y
    return np.mean(np.abs(d), axis=1), np.sign(d) / L.shape[1]


def _cce_logits(L, Y):
    # -sum y log softmax(l); the gradient is TF's softmax(l) - y (exact when each row of y sums to 1).
    log_p = special.log_softmax(L, axis=1)
    return -np.sum(Y * log_p, axis=1), np.exp(log_p) - Y


def _cce(P, Y):
    # Keras: rows normalised to sum 1, clipped to [eps, 1 - eps]; -sum y log p. The clip has zero
    # gradient where it is active, as in an autodiff graph.
    s = P.sum(axis=1, keepdims=True)
    p = P / s
    o = np.clip(p, CLIP_EPS, 1 - CLIP_EPS)
    g = np.where((p >= CLIP_EPS) & (p <= 1 - CLIP_EPS), -Y / o, 0.0)  # d loss / d p
    # p_j = P_j / s  =>  d p_j / d P_k = (delta_jk - p_j) / s
    return -np.sum(Y * np.log(o), axis=1), (g - np.sum(g * p, axis=1, keepdims=True)) / s


def _bce(P, Y):
    # Keras 3: o = clip(p, eps, 1 - eps); -(y log(o) + (1 - y) log(1 - o)), mean over j.
    m = P.shape[1]
    o = np.clip(P, CLIP_EPS, 1 - CLIP_EPS)
    loss = -(Y * np.log(o) + (1 - Y) * np.log(1 - o))
    g = np.where((P >= CLIP_EPS) & (P <= 1 - CLIP_EPS), -Y / o + (1 - Y) / (1 - o), 0.0)
    return loss.mean(axis=1), g / m


def _bce_logits(L, Y):
    # log(1 + e^l) - l*y, i.e. max(l, 0) - l*y + log1p(e^-|l|); gradient sigmoid(l) - y.
    m = L.shape[1]
    return np.mean(np.logaddexp(0, L) - L * Y, axis=1), (special.expit(L) - Y) / m


_LOSSES = {
    _K["LOSS_MSE"]: _mse,
    _K["LOSS_MAE"]: _mae,
    _K["LOSS_CCE"]: _cce,
    _K["LOSS_CCE_LOGITS"]: _cce_logits,
    _K["LOSS_SCCE"]: lambda P, Y: _cce(P, _one_hot(Y, P.shape[1])),
    _K["LOSS_SCCE_LOGITS"]: lambda L, Y: _cce_logits(L, _one_hot(Y, L.shape[1])),
    _K["LOSS_BCE"]: _bce,
    _K["LOSS_BCE_LOGITS"]: _bce_logits,
}


def _weights(sw, n):
    return np.asarray(sw, dtype=np.float64) if len(sw) else np.ones(n)


def loss_grad(code, L, Y, sw, dL=None):
    """Returns the batch loss sum_i w_i*loss_i / n; dL := d(batch loss)/dL if dL is given.

    # IN L (n, m) outputs or logits, Y (n, m) or (n, 1) for the sparse codes, sw (n,) or (0,)
    """
    n = L.shape[0]
    w = _weights(sw, n)
    loss, grad = _LOSSES[code](np.asarray(L, np.float64), np.asarray(Y, np.float64))
    if dL is not None:
        dL[...] = grad * (w / n)[:, None]
    return float(w @ loss / n)


# ---------------------------------------------------------------------------------------------
# Metrics: a value per sample, float64.
# ---------------------------------------------------------------------------------------------
_METRICS = {
    _K["METRIC_CATEGORICAL_ACCURACY"]: lambda Z, Y: np.argmax(Z, 1) == np.argmax(Y, 1),
    _K["METRIC_SPARSE_CATEGORICAL_ACCURACY"]: lambda Z, Y: np.argmax(Z, 1) == Y[:, 0].astype(np.intp),
    # Keras 3 compares y_true itself with the thresholded prediction: a soft 0.9 never matches.
    _K["METRIC_BINARY_ACCURACY"]: lambda Z, Y: np.mean(Y == (Z > 0.5), axis=1),
    _K["METRIC_MSE"]: lambda Z, Y: np.mean((Z - Y) ** 2, axis=1),
    _K["METRIC_MAE"]: lambda Z, Y: np.mean(np.abs(Z - Y), axis=1),
}


def metric_update(codes, Z, Y, sw, acc):
    """acc[2k] += sum_i w_i * metric_k(row i); acc[2k+1] += sum_i w_i.   # INOUT acc"""
    w = _weights(sw, Z.shape[0])
    Z64, Y64 = np.asarray(Z, np.float64), np.asarray(Y, np.float64)
    for k, code in enumerate(codes):
        acc[2 * k] += w @ _METRICS[code](Z64, Y64).astype(np.float64)
        acc[2 * k + 1] += w.sum()


# ---------------------------------------------------------------------------------------------
# Optimizer step (Keras 3 update rules) over the flat parameter vector.
# ---------------------------------------------------------------------------------------------
def optimizer_step(code, hp, lr, step, params, grads, state):
    """One update of params from grads (clipped in place) and the optimizer slots in state.

    # IN hp (N_HP,), lr, step (updates so far)   # INOUT params, grads, state (k * n_params)

    Order: global-norm clipping, value clipping, decoupled weight decay `w -= w * wd * lr`, then
    the optimizer's rule. Slots: state[k*n:(k+1)*n] is slot k (SGD momentum: m; Adam: m, v;
    RMSprop: v, momentum, mean gradient; Adagrad: accumulator).
    """
    f = params.dtype.type
    n = params.shape[0]
    g = grads
    clipnorm, clipvalue = hp[_K["HP_GLOBAL_CLIPNORM"]], hp[_K["HP_CLIPVALUE"]]
    if clipnorm > 0:
        norm = np.sqrt(np.sum(np.square(g, dtype=np.float64)))
        if norm > clipnorm:
            g *= f(clipnorm / norm)
    if clipvalue > 0:
        np.clip(g, -f(clipvalue), f(clipvalue), out=g)
    if hp[_K["HP_WEIGHT_DECAY"]] != 0:
        params -= params * f(hp[_K["HP_WEIGHT_DECAY"]] * lr)
    slot = [state[k * n:(k + 1) * n] for k in range(3)]  # views; empty past the allocated slots
    lr_, mom, eps = f(lr), f(hp[_K["HP_MOMENTUM"]]), f(hp[_K["HP_EPSILON"]])
    if code == _K["OPT_SGD"]:
        params -= lr_ * g
    elif code in (_K["OPT_SGD_MOMENTUM"], _K["OPT_SGD_NESTEROV"]):
        m = slot[0]
        m[...] = mom * m - lr_ * g
        params += m if code == _K["OPT_SGD_MOMENTUM"] else mom * m - lr_ * g
    elif code == _K["OPT_ADAM"]:
        b1, b2 = hp[_K["HP_BETA_1"]], hp[_K["HP_BETA_2"]]
        t = step + 1
        alpha = f(lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t))
        m, v = slot[0], slot[1]
        m += (g - m) * (1 - f(b1))
        v += (g * g - v) * (1 - f(b2))
        params -= m * alpha / (np.sqrt(v) + eps)
    elif code == _K["OPT_RMSPROP"]:
        rho = f(hp[_K["HP_RHO"]])
        v, velocity, mean_g = slot[0], slot[1], slot[2]
        v[...] = rho * v + (1 - rho) * g * g
        if hp[_K["HP_CENTERED"]] != 0:
            mean_g[...] = rho * mean_g + (1 - rho) * g
            increment = lr_ * g / np.sqrt(v - mean_g * mean_g + eps)
        else:
            increment = lr_ * g / np.sqrt(v + eps)  # Keras: epsilon inside the root
        if mom > 0:
            velocity[...] = mom * velocity + increment
            params -= velocity
        else:
            params -= increment
    elif code == _K["OPT_ADAGRAD"]:
        acc = slot[0]
        acc += g * g
        params -= lr_ * g / np.sqrt(acc + eps)
    else:
        raise ValueError(f"unknown optimizer code {code}")


# ---------------------------------------------------------------------------------------------
# The network described by a plan (see PLAN_* in the kernels): forward, penalties, training.
# ---------------------------------------------------------------------------------------------
_GAMMA = np.uint64(0x9E3779B97F4A7C15)


def _uniform(rng, size):
    """`size` uniforms in [0, 1) from splitmix64, advancing the state rng[0] by `size` draws."""
    z = rng[0] + np.arange(1, size + 1, dtype=np.uint64) * _GAMMA  # wraps mod 2**64
    rng[0] = z[-1] if size else rng[0]
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def _normals(rng, size, mean, stddev, dtype):
    """The kernel's normal draws: Box-Muller on consecutive pairs of splitmix64 uniforms (u1 in
    (0, 1], u2 in [0, 1)), both results used, in order."""
    u = _uniform(rng, 2 * (-(-size // 2)))
    r = np.sqrt(-2.0 * np.log(u[0::2] + 2.0 ** -53))
    t = 2 * np.pi * u[1::2]
    z = np.stack([r * np.cos(t), r * np.sin(t)], axis=1).reshape(-1)[:size]
    return (mean + stddev * z).astype(dtype)


def _plan_float(row, col):
    return float(np.array(row[_K[col]], dtype=np.int64).view(np.float64))


def _vec(params, off, m):
    return params[off:off + m] if off >= 0 else None


def _norm_forward(params, row, reg_row, A, training, rng):
    """The normalization and noise ops (see _norm_forward in the kernels). Returns (Z, saved):
    saved is what the backward pass needs (xhat and 1/std, or the noise multiplier)."""
    kind, m = row[_K["PLAN_KIND"]], row[_K["PLAN_N_OUT"]]
    dt = params.dtype
    gamma, beta = _vec(params, row[_K["PLAN_W"]], m), _vec(params, row[_K["PLAN_B"]], m)
    A64 = A.astype(np.float64)
    if kind in (_K["OP_BATCHNORM"], _K["OP_LAYERNORM"]):
        eps = _plan_float(row, "PLAN_F0")
        if kind == _K["OP_LAYERNORM"]:
            mean = A64.mean(axis=1, keepdims=True)
            inv = 1.0 / np.sqrt(((A64 - mean) ** 2).mean(axis=1, keepdims=True) + eps)
        elif training and reg_row[1] == 0:
            mean, var = A64.mean(axis=0), A64.var(axis=0)
            mm, mv = _vec(params, row[_K["PLAN_P2"]], m), _vec(params, row[_K["PLAN_P3"]], m)
            mom = reg_row[0]
            mm[...] = mm * dt.type(mom) + mean.astype(dt) * dt.type(1 - mom)
            mv[...] = mv * dt.type(mom) + var.astype(dt) * dt.type(1 - mom)
            inv = 1.0 / np.sqrt(var + eps)
        else:
            mean = _vec(params, row[_K["PLAN_P2"]], m).astype(np.float64)
            inv = 1.0 / np.sqrt(_vec(params, row[_K["PLAN_P3"]], m).astype(np.float64) + eps)
        xhat = (A64 - mean) * inv
        Z = xhat * (gamma if gamma is not None else 1) + (beta if beta is not None else 0)
        return Z.astype(dt), (xhat, inv)
    if kind == _K["OP_NORMALIZE"]:
        var = _vec(params, row[_K["PLAN_P3"]], m)
        return ((A - _vec(params, row[_K["PLAN_P2"]], m))
                / np.maximum(np.sqrt(var), dt.type(1e-7))).astype(dt), None
    if kind == _K["OP_RESCALE"]:
        return (A * dt.type(_plan_float(row, "PLAN_F0"))
                + dt.type(_plan_float(row, "PLAN_F1"))).astype(dt), None
    if not training or reg_row[0] <= 0:  # the noise ops: the identity at inference
        return A.copy(), None
    if kind == _K["OP_GAUSS_NOISE"]:
        return (A + _normals(rng, A.size, 0.0, reg_row[0], dt).reshape(A.shape)).astype(dt), None
    M = _normals(rng, A.size, 1.0, reg_row[0], dt).reshape(A.shape)
    return (A * M).astype(dt), M


def _norm_backward(params, grads, row, reg_row, D, saved, want_dx):
    """d loss/d output -> d loss/d input of one normalization/noise op; gamma's and beta's
    gradients into `grads` when they are trainable (reg_row[2])."""
    kind, m = row[_K["PLAN_KIND"]], row[_K["PLAN_N_OUT"]]
    dt = params.dtype
    gamma = _vec(params, row[_K["PLAN_W"]], m)
    g = gamma.astype(np.float64) if gamma is not None else 1.0
    D64 = D.astype(np.float64)
    if kind in (_K["OP_BATCHNORM"], _K["OP_LAYERNORM"]):
        xhat, inv = saved
        dgamma, dbeta = (D64 * xhat).sum(axis=0), D64.sum(axis=0)
        if kind == _K["OP_LAYERNORM"]:
            G = D64 * g
            dx = inv * (G - G.mean(axis=1, keepdims=True)
                        - xhat * (G * xhat).mean(axis=1, keepdims=True))
        elif reg_row[1] != 0:
            dx = D64 * g * inv
        else:
            dx = g * inv * (D64 - dbeta / len(D) - xhat * dgamma / len(D))
        if reg_row[2]:
            for off, val in ((row[_K["PLAN_W"]], dgamma), (row[_K["PLAN_B"]], dbeta)):
                if off >= 0:
                    grads[off:off + m] = val
        return dx.astype(dt) if want_dx else None
    if kind == _K["OP_NORMALIZE"]:
        var = _vec(params, row[_K["PLAN_P3"]], m)
        return (D / np.maximum(np.sqrt(var), dt.type(1e-7))).astype(dt)
    if kind == _K["OP_RESCALE"]:
        return (D * dt.type(_plan_float(row, "PLAN_F0"))).astype(dt)
    if kind == _K["OP_GAUSS_DROPOUT"] and saved is not None:
        return (D * saved).astype(dt)
    return D


def _view(buf, offset, n, width):
    return buf[offset:offset + n * width].reshape(n, width)


def _dense_params(params, row):
    n_in, n_out = row[_K["PLAN_N_IN"]], row[_K["PLAN_N_OUT"]]
    W = _view(params, row[_K["PLAN_W"]], n_in, n_out)
    b = params[row[_K["PLAN_B"]]:row[_K["PLAN_B"]] + n_out] if row[_K["PLAN_B"]] >= 0 else params[:0]
    return W, b


def _net_forward(params, plan, reg, work, A, training, rng):
    """Runs every op on the batch A. Returns, per op, (input, pre-activation, output, mask).

    Outputs (and pre-activations / masks where the plan keeps them) are written to `work` at the
    plan's offsets, as the kernels do.
    """
    n = A.shape[0]
    trace = []
    for l, row in enumerate(plan):
        kind, width, act = row[_K["PLAN_KIND"]], row[_K["PLAN_N_OUT"]], row[_K["PLAN_ACT"]]
        Z = _view(work, row[_K["PLAN_Z"]], n, width)
        S = _view(work, row[_K["PLAN_S"]], n, width) if row[_K["PLAN_S"]] >= 0 else \
            np.empty((n, width), work.dtype)
        M = None
        if kind in (_K["OP_DENSE"], _K["OP_DENSE_FROZEN"]):
            W, b = _dense_params(params, row)
            dense_forward(A, W, b, act, Z, S)
        elif kind == _K["OP_ACTIVATION"]:
            S[...] = A
            Z[...] = A
            activation_forward(act, Z)
        elif kind == _K["OP_DROPOUT"]:
            rate = reg[l, 0] if reg is not None else 0.0
            if training and rate > 0:
                M = _view(work, row[_K["PLAN_MASK"]], n, width)
                M[...] = np.where(_uniform(rng, n * width).reshape(n, width) < rate,
                                  0, 1.0 / (1.0 - rate))
                Z[...] = A * M
            else:
                Z[...] = A
        elif kind != _K["OP_ACTIVATION"]:
            Z[...], M = _norm_forward(params, row, reg[l] if training else None, A, training, rng)
        trace.append((A, S, Z, M))
        A = Z
    return trace


def _penalty(params, plan, reg):
    """Sum of l1*|w| + l2*w^2 over every penalised kernel/bias (float64), and its gradient."""
    total, grad = 0.0, np.zeros(params.shape[0])
    for l, row in enumerate(plan):
        if row[_K["PLAN_KIND"]] != _K["OP_DENSE"]:
            continue
        n_w = row[_K["PLAN_N_IN"]] * row[_K["PLAN_N_OUT"]]
        parts = [(row[_K["PLAN_W"]], n_w, reg[l, 0], reg[l, 1])]
        if row[_K["PLAN_B"]] >= 0:
            parts.append((row[_K["PLAN_B"]], row[_K["PLAN_N_OUT"]], reg[l, 2], reg[l, 3]))
        for off, size, l1, l2 in parts:
            w = params[off:off + size].astype(np.float64)
            total += l1 * np.abs(w).sum() + l2 * (w * w).sum()
            grad[off:off + size] += l1 * np.sign(w) + 2 * l2 * w
    return total, grad


def _batches(start, stop, batch_size):
    return [(pos, min(pos + batch_size, stop)) for pos in range(start, stop, batch_size)]


def train_steps(params, grads, state, plan, reg, layout, work, X, Y, sw, order, start, stop,
                batch_size, loss_code, fused_logits, metrics, opt_code, hp, lrs, step, rng, stats):
    """Runs the training steps over samples start..stop (in batches of batch_size).

    For every batch (rows order[pos:end] if order is not empty): forward with dropout on, loss
    (plus penalties) and metrics of the pre-update outputs, backward, one optimizer update with
    learning rate lrs[k] for the k-th batch of this call. stats as in the kernel: [0] += loss*n,
    [1] += n, [2] += 1, [3 + 2k], [4 + 2k] metric k, [last] = 1 if a loss was not finite; that
    batch counts but is not applied, and the call stops. Returns the number of batches run.
    `layout` only places the kernel's scratch buffers; the reference keeps those in locals.
    `grads` is scratch too: the reference leaves the last batch's (clipped) gradient in it, while
    the kernel may fold a plain SGD update into the gradient products and not write it.
    """
    plan, last = np.asarray(plan), len(plan) - 1
    done = 0
    # A non-finite loss is a result (stats[-1]), not an error.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for pos, end in _batches(start, stop, batch_size):
            rows = order[pos:end] if len(order) else np.arange(pos, end)
            Xb, Yb = X[rows], Y[rows]
            swb = sw[rows] if len(sw) else sw
            n = end - pos
            trace = _net_forward(params, plan, reg, work, Xb, True, rng)
            A, S, Z, M = trace[last]
            D = np.empty_like(Z)
            penalty, penalty_grad = _penalty(params, plan, reg)
            loss = loss_grad(loss_code, S if fused_logits else Z, Yb, swb, D) + penalty
            # compile() metrics are not sample-weighted in Keras 3 (only weighted_metrics are)
            metric_update(metrics, Z, Yb, Yb[:0, 0], stats[3:3 + 2 * len(metrics)])
            stats[0] += loss * n
            stats[1] += n
            stats[2] += 1
            done += 1
            if not np.isfinite(loss):
                stats[-1] = 1
                break
            # D = d loss / d(output of op l); with fused logits, of the last op's pre-activation.
            for l in range(last, -1, -1):
                row = plan[l]
                kind, act = row[_K["PLAN_KIND"]], row[_K["PLAN_ACT"]]
                A, S, Z, M = trace[l]
                if kind in (_K["OP_DENSE"], _K["OP_ACTIVATION"], _K["OP_DENSE_FROZEN"]) \
                        and not (l == last and fused_logits):
                    activation_backward(act, S, Z, D, D)
                if kind == _K["OP_DENSE_FROZEN"]:  # the input's gradient only
                    W, _ = _dense_params(params, row)
                    D = (D @ W.T).astype(D.dtype) if l > 0 else None
                elif kind == _K["OP_DENSE"]:
                    W, b = _dense_params(params, row)
                    dW = _view(grads, row[_K["PLAN_W"]], *W.shape)
                    db = grads[row[_K["PLAN_B"]]:row[_K["PLAN_B"]] + len(b)] if len(b) else b
                    dX = np.empty_like(A) if l > 0 else None
                    dense_backward(A, W, D, dW, db, dX)
                    D = dX
                elif kind == _K["OP_DROPOUT"] and M is not None:
                    D = D * M
                elif kind not in (_K["OP_DROPOUT"], _K["OP_ACTIVATION"]):
                    D = _norm_backward(params, grads, row, reg[l], D, M, l > 0)
            # the optimizer steps over the trainable parameters, the first len(grads)
            n_train = grads.shape[0]
            grads += penalty_grad[:n_train].astype(grads.dtype)
            optimizer_step(opt_code, hp, lrs[done - 1], step + done - 1, params[:n_train], grads,
                           state)
    return done


def forward(params, plan, work, X, out, batch_size, threads=1):
    """out := network(X), computed batch_size rows at a time (inference: dropout off). `threads`
    is the compiled twin's; the results do not depend on it.

    # IN  params, plan, X (n, n_in)   # INOUT work (one batch of activations)   # OUT out (n, n_out)
    """
    plan = np.asarray(plan)
    for pos, end in _batches(0, X.shape[0], batch_size):
        out[pos:end] = _net_forward(params, plan, None, work, X[pos:end], False, None)[-1][2]


def evaluate_steps(params, plan, reg, work, X, Y, sw, start, stop, batch_size, loss_code,
                   fused_logits, metrics, stats, threads=1):
    """Loss and metrics of the network on samples start..stop, batch by batch, no update.
    `threads` is the compiled twin's; the results do not depend on it.

    # INOUT stats: same layout as in `train_steps`. Returns the number of batches.
    """
    plan = np.asarray(plan)
    penalty = _penalty(params, plan, reg)[0]
    done = 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for pos, end in _batches(start, stop, batch_size):
            A, S, Z, M = _net_forward(params, plan, reg, work, X[pos:end], False, None)[-1]
            swb = sw[pos:end] if len(sw) else sw
            loss = loss_grad(loss_code, S if fused_logits else Z, Y[pos:end], swb) + penalty
            metric_update(metrics, Z, Y[pos:end], Y[:0, 0], stats[3:3 + 2 * len(metrics)])
            if not np.isfinite(loss):
                stats[-1] = 1
            stats[0] += loss * (end - pos)
            stats[1] += end - pos
            stats[2] += 1
            done += 1
    return done


def all_finite(X, threads=1):
    """True when no element of X is NaN or +-Inf (`threads` only changes the compiled speed)."""
    return bool(np.isfinite(X).all())
