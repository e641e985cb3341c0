"""pytest-benchmark setup for ``bench/``: one torch thread, the environment in the header.

These benchmarks are not part of the test suite (``testpaths`` is ``tests/``); run them with
``.venv/bin/python -m pytest bench/ --benchmark-only``.
"""

from __future__ import annotations

from typing import Any

import torch

from bench._timing import environment, environment_line

torch.set_num_threads(1)


def pytest_report_header(config: Any) -> str:
    return environment_line(environment())
