"""Keras-style automatic names: `dense`, `dense_1`, ... counted per process, per prefix."""
import re
import threading

_counts = {}
_lock = threading.Lock()


def snake_case(class_name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", class_name).lower()


def unique_name(prefix):
    with _lock:
        n = _counts.get(prefix, 0)
        _counts[prefix] = n + 1
    return prefix if n == 0 else f"{prefix}_{n}"
