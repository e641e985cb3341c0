"""More loss functions: hand-written forward/backward pairs.

Public through :mod:`shimnn.functional` (this module's ``__all__``).
"""

from __future__ import annotations

__all__: list[str] = []
