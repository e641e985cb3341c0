"""`shimnn run` / `shimnn compare` and the corpus of unmodified PyTorch scripts in examples/."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import shimnn
from conftest import autograd_forbidden
from shimnn.runner import compare_outputs, run_script

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


def _run(path: Path, use_shimnn: bool) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = run_script(str(path), [], seed=0, use_shimnn=use_shimnn)
    assert status == 0
    return out.getvalue()


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_prints_exactly_what_torch_prints(script: Path) -> None:
    reference = _run(script, use_shimnn=False)
    with autograd_forbidden():
        shimmed = _run(script, use_shimnn=True)
    assert reference.strip(), "the script printed nothing"
    result = compare_outputs(reference, shimmed)
    assert result.numbers_identical and result.text_identical, result.first_difference
    assert result.numbers_compared >= 10


def test_corpus_covers_the_styles() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"disc_sequential", "module_subclass_functional", "tanh_between_layers",
            "weight_sharing", "manual_sgd", "batch_and_single_sample", "eval_argmax",
            "residual", "char_lstm", "rnn_loop"} <= names


def test_patch_serves_shimnn_and_restores_torch() -> None:
    originals = (torch.nn.Linear, torch.nn.functional.relu, torch.optim.SGD, torch.nn.Parameter)
    state = torch.random.get_rng_state()
    with shimnn.patch_torch():
        import torch.nn.functional as F
        from torch import nn

        assert nn.Linear is shimnn.Linear and F.relu is shimnn.functional.relu
        assert torch.optim.SGD is shimnn.optim.SGD and nn.Parameter is shimnn.Parameter
        assert nn.Module is shimnn.Module.__mro__[1]  # torch's Module stays torch's
        assert nn.Conv2d is not None  # names shimnn lacks stay torch's
    assert (torch.nn.Linear, torch.nn.functional.relu, torch.optim.SGD,
            torch.nn.Parameter) == originals
    assert torch.equal(torch.random.get_rng_state(), state)  # no random number consumed


def test_unsupported_torch_module_in_a_shimnn_graph_is_named_at_backward() -> None:
    with shimnn.patch_torch():
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LogSigmoid()
                                    if not hasattr(shimnn, "LogSigmoid") else torch.nn.Mish(),
                                    torch.nn.Linear(4, 1))
        out = model(torch.randn(2, 3))
    with pytest.raises(NotImplementedError, match="(log_sigmoid|mish)"):
        out.sum().backward()


def test_compare_outputs_finds_first_numeric_difference() -> None:
    same = compare_outputs("loss 0.25\nacc 1\n", "loss 0.25\nacc 1\n")
    assert same.numbers_identical and same.text_identical and same.numbers_compared == 2
    diff = compare_outputs("a 1.0\nb 2.5e-3\n", "a 1.0\nb 2.6e-3\n")
    assert not diff.numbers_identical and "line 2" in (diff.first_difference or "")
    text = compare_outputs("x 1 <class 'torch'>\n", "x 1 <class 'shim'>\n")
    assert text.numbers_identical and not text.text_identical


def test_cli_compare_and_run(tmp_path: Path) -> None:
    script = tmp_path / "tiny.py"
    script.write_text(
        "import sys, torch, torch.nn as nn\n"
        "m = nn.Linear(2, 1)\n"
        "loss = nn.MSELoss()(m(torch.ones(3, 2)), torch.zeros(3, 1))\n"
        "loss.backward()\n"
        "print(sys.argv[1:], loss.item(), m.weight.grad.tolist(), type(m).__module__)\n")
    done = subprocess.run([sys.executable, "-m", "shimnn", "compare", str(script), "--flag", "3"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "numbers printed identical: yes" in done.stdout
    run = subprocess.run([sys.executable, "-m", "shimnn", "run", "--seed", "1", str(script),
                          "a"], capture_output=True, text=True)
    assert run.returncode == 0 and "shimnn.modules.linear" in run.stdout, run.stderr
    bad = subprocess.run([sys.executable, "-m", "shimnn", "run", str(tmp_path / "missing.py")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no such script" in bad.stderr
