"""The op_db parity sweep (``tests/op_sweep.py``) in the suite: one test per OpInfo.

By default a fixed subset runs (every ``CI_STRIDE``-th OpInfo, every OpInfo shimnn implements,
the first ``CI_MAX_SAMPLES`` samples of each); ``SHIMNN_SWEEP=full`` runs every OpInfo and
sample. A test fails on a silent case missing from ``tests/op_sweep_known_silent.txt``, on a
listed case that is no longer silent (so the list only shrinks), on any use of torch's autograd
by shimnn, and on any error of the harness itself.
"""

from __future__ import annotations

import collections
import os

import pytest

import op_sweep

FULL = os.environ.get("SHIMNN_SWEEP", "") == "full"
ALL_OPS = op_sweep.op_db()
OPS = ALL_OPS if FULL else op_sweep.ci_subset(ALL_OPS)
MAX_SAMPLES = None if FULL else op_sweep.CI_MAX_SAMPLES
KNOWN = op_sweep.read_known()
KNOWN_BY_OP: dict[str, set[str]] = collections.defaultdict(set)
for _key in KNOWN:
    KNOWN_BY_OP[_key.split(" ", 1)[0]].add(_key)


def _runs_here(key: str) -> bool:
    return MAX_SAMPLES is None or int(key.rsplit(" ", 1)[1]) < MAX_SAMPLES


@pytest.mark.parametrize("op", OPS, ids=op_sweep.full_name)
def test_op_sweep(op: object) -> None:
    report = op_sweep.sweep_op(op, max_samples=MAX_SAMPLES)
    broken = [f"{c.key}: {c.outcome}: {c.detail}" for c in report.cases
              if c.outcome in (op_sweep.AUTOGRAD, op_sweep.ERROR)]
    assert not broken, "\n".join(broken)
    silent = {c.key: c.detail for c in report.cases if c.outcome == op_sweep.SILENT}
    outcome = {c.key: c.outcome for c in report.cases}
    listed = {k for k in KNOWN_BY_OP.get(report.name, ()) if _runs_here(k)}
    new = sorted(set(silent) - listed)
    fixed = sorted(listed - set(silent))
    lines = [f"new silent case {k}: {silent[k]}" for k in new]
    lines += [f"listed as silent, now {outcome.get(k, 'not run')}: {k} (remove it from "
              f"{os.path.basename(op_sweep.KNOWN_SILENT_FILE)})" for k in fixed]
    assert not lines, "\n".join(lines)


def test_known_silent_names_exist() -> None:
    """Every line of the known-silent list names an OpInfo of this torch's op_db."""
    names = {op_sweep.full_name(op) for op in ALL_OPS}
    assert not sorted(set(KNOWN_BY_OP) - names)

