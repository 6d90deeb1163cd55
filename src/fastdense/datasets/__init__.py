"""Small built-in datasets, loaded the way `keras.datasets` loads them."""

from . import fashion_mnist

__all__ = ["fashion_mnist"]
