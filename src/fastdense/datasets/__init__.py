"""Small built-in datasets, loaded the way `keras.datasets` loads them."""

from . import california_housing, fashion_mnist, mnist

__all__ = ["california_housing", "fashion_mnist", "mnist"]
