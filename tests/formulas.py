"""Keras 3's activations written out in float64 NumPy (keras/src/activations/activations.py):
the independent oracle of the activation tests (test_parity, test_ops)."""
import math

import numpy as np
from scipy.special import erf

SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def sigmoid(z):
    return 0.5 * (1 + np.tanh(0.5 * z))  # no overflow for large |z|


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


ACTIVATIONS = {
    "linear": lambda z: z,
    "sigmoid": sigmoid,
    "softmax": softmax,
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0),
    "elu": lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0))),
    "selu": lambda z: SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * np.expm1(np.minimum(z, 0))),
    "softplus": lambda z: np.logaddexp(0, z),
    "softsign": lambda z: z / (1 + np.abs(z)),
    "swish": lambda z: z * sigmoid(z),
    "silu": lambda z: z * sigmoid(z),
    "gelu": lambda z: 0.5 * z * (1 + erf(z / math.sqrt(2))),  # exact erf form
    "leaky_relu": lambda z: np.where(z > 0, z, 0.2 * z),
    "hard_sigmoid": lambda z: np.clip(z + 3, 0, 6) / 6,  # relu6(x + 3) / 6
    "exponential": np.exp,
}
