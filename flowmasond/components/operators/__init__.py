"""Built-in operators: deterministic components (shell, HTTP, data shaping, logging, test helpers)."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from collections.abc import Iterator


@contextmanager
def shadowing_fields() -> Iterator[None]:
    """Allow model fields named like deprecated ``BaseModel`` methods (``json``, ``schema``).

    Pipeline files name these fields (``{{upstream.s.json}}``, ``config.schema``), so they keep
    their plain names instead of aliases that a ``model_fields`` lookup would not see.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r'Field name "(json|schema)"', category=UserWarning)
        yield
