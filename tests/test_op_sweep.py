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
import torch

import op_sweep
import shimnn._graph as _graph

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



# The harness itself: a broken op must come out silent (or autograd), never identical.

EXP = next(op for op in ALL_OPS if op_sweep.full_name(op) == "exp")


def _patch_exp(monkeypatch: pytest.MonkeyPatch, op: object) -> None:
    for f in (torch.exp, torch.Tensor.exp):
        monkeypatch.setitem(_graph.HANDLED, f, op)


def _outcomes(variant: str = "function") -> set[str]:
    """The outcomes of exp's first sample (20 elements) in both dtypes."""
    report = op_sweep.sweep_op(EXP, max_samples=1)
    return {c.outcome for c in report.cases if c.variant == variant}


def test_harness_finds_a_wrong_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    def exp_with_identity_backward(input: torch.Tensor) -> torch.Tensor:
        with _graph.no_dispatch():
            return _graph.record(torch.exp(input), "ExpBackward0", lambda g: (g,),
                                 (_graph.edge(input),))

    _patch_exp(monkeypatch, exp_with_identity_backward)
    assert _outcomes() == {op_sweep.SILENT}
    assert _outcomes("method") == {op_sweep.SILENT}


def test_harness_finds_a_dropped_gradient_and_a_wrong_value(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def exp_untracked(input: torch.Tensor) -> torch.Tensor:
        with _graph.no_dispatch():
            return torch.exp(input.detach())

    _patch_exp(monkeypatch, exp_untracked)
    assert _outcomes() == {op_sweep.SILENT}

    def exp_off_by_one_ulp(input: torch.Tensor) -> torch.Tensor:
        with _graph.no_dispatch():
            value = torch.nextafter(torch.exp(input), torch.tensor(float("inf")))
            return _graph.record(value, "ExpBackward0", lambda g: (g * value,),
                                 (_graph.edge(input),), (value,))

    _patch_exp(monkeypatch, exp_off_by_one_ulp)
    assert _outcomes() == {op_sweep.SILENT}


def test_harness_counts_refusals_and_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    def exp_refused(input: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("shimnn: exp refused")

    _patch_exp(monkeypatch, exp_refused)
    assert _outcomes() == {op_sweep.RAISES}

    def exp_through_autograd(input: torch.Tensor) -> torch.Tensor:
        with _graph.no_dispatch():
            x = input.detach().requires_grad_()
            torch.autograd.grad(torch.exp(x).sum(), x)
            return torch.exp(input.detach())

    _patch_exp(monkeypatch, exp_through_autograd)
    assert _outcomes() == {op_sweep.AUTOGRAD}


def test_harness_matches_an_exact_op() -> None:
    assert _outcomes() == {op_sweep.IDENTICAL}
