"""pytest plugin: run an existing torch test suite with shimnn serving torch.nn, functional, optim.

::

    pytest -p shimnn.testing.plugin --shimnn tests/   # any environment with shimnn importable
    pytest --shimnn tests/                            # shimnn installed (a pytest11 entry point)
    shimnn run -m pytest tests/                       # started by shimnn: served already

With ``--shimnn`` the whole session runs inside :func:`shimnn.patch_torch`: every ``torch.nn``
module, ``torch.nn.functional`` function and ``torch.optim`` optimizer shimnn implements is
shimnn's, so the suite's ``loss.backward()`` calls run hand-written backward functions. The
header says that shimnn is serving torch, and the summary says which tests

- failed on an operation shimnn lacks (the operation named by shimnn's error), and
- passed while torch's autograd engine ran in them (their gradients were partly torch's, e.g. a
  tensor the test made with ``requires_grad=True`` and differentiated through plain torch ops).

``--shimnn-forbid-autograd`` makes that second kind fail instead (every test runs inside
:func:`shimnn.testing.assert_no_autograd`). Without either option, and when torch is not
patched, the plugin changes nothing (it is loaded in every pytest run once shimnn is installed;
loading it imports shimnn, and so torch).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Generator
from typing import Any

import pytest

_STACK = pytest.StashKey[contextlib.ExitStack]()
_STATE = pytest.StashKey[dict[str, Any]]()
_MISSING = re.compile(r"shimnn has no hand-written backward for '([^']+)'|"
                      r"shimnn[^\n]*?(?:not supported|not implemented)[^\n]*", re.IGNORECASE)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shimnn", "shimnn: hand-written gradients serving torch")
    group.addoption("--shimnn", action="store_true", default=False,
                    help="serve torch.nn / torch.nn.functional / torch.optim from shimnn for "
                         "the whole session (shimnn.patch_torch())")
    group.addoption("--shimnn-forbid-autograd", action="store_true", default=False,
                    help="with --shimnn: fail any test in which torch's autograd engine runs")


def _state(config: pytest.Config) -> dict[str, Any] | None:
    return config.stash.get(_STATE, None)


def _serve(config: pytest.Config, how: str, forbid: bool) -> None:
    import shimnn
    from shimnn._patch import is_patched

    stack = contextlib.ExitStack()
    if not is_patched():
        stack.enter_context(shimnn.patch_torch())
    config.stash[_STACK] = stack
    config.stash[_STATE] = {"how": how, "forbid": forbid, "engine": {}, "missing": {}}


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser,
                                  args: list[str]) -> None:
    """Patch before the first conftest.py is imported: a ``from torch.nn import Linear`` at
    the top of one then binds shimnn's class, as a test module's does."""
    options = early_config.known_args_namespace
    forbid = bool(getattr(options, "shimnn_forbid_autograd", False))
    if getattr(options, "shimnn", False) or forbid:
        _serve(early_config, "pytest --shimnn", forbid)


def pytest_configure(config: pytest.Config) -> None:
    if _state(config) is not None:
        return  # served since the initial conftests
    forbid = bool(config.getoption("shimnn_forbid_autograd"))
    if config.getoption("shimnn") or forbid:
        _serve(config, "pytest --shimnn", forbid)
        return
    import sys

    patch = sys.modules.get("shimnn._patch")
    if patch is not None and patch.is_patched():  # shimnn run -m pytest, or a patched parent
        _serve(config, "shimnn run", False)


def pytest_unconfigure(config: pytest.Config) -> None:
    stack = config.stash.get(_STACK, None)
    if stack is not None:
        stack.close()


def pytest_report_header(config: pytest.Config) -> str | None:
    state = _state(config)
    if state is None:
        return None
    import torch

    import shimnn
    from shimnn._patch import patched_names

    guard = ("forbidden in tests" if state["forbid"] else
             "allowed (tests that use it are listed at the end)")
    return (f"shimnn {shimnn.__version__} is serving torch {torch.__version__} ({state['how']}): "
            f"{len(patched_names())} names of torch.nn, torch.nn.functional and torch.optim "
            f"are shimnn's; torch's autograd engine: {guard}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    state = _state(item.config)
    if state is None:
        return (yield)
    from shimnn.testing._guard import assert_no_autograd, watch_autograd

    def record(entry: str) -> None:
        state["engine"][item.nodeid] = entry

    guard = assert_no_autograd() if state["forbid"] else watch_autograd(record)
    with guard:
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    state = _state(item.config)
    if state is not None and report.when == "call" and report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)  # the exception's own message
        found = _MISSING.search(str(getattr(crash, "message", report.longrepr)))
        if found:
            state["missing"][item.nodeid] = found.group(1) or found.group(0).strip()
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = _state(config)
    if state is None:
        return
    write = terminalreporter.write_line
    passed = {r.nodeid for r in terminalreporter.stats.get("passed", [])}
    engine = {k: v for k, v in state["engine"].items() if k in passed}
    missing = state["missing"]
    if not (missing or engine):
        return
    terminalreporter.section("shimnn")
    if missing:
        write(f"{len(missing)} failed on something shimnn does not implement:")
        for nodeid, op in missing.items():
            write(f"  {nodeid}: {op}")
    if engine:
        write(f"{len(engine)} passed, but torch's autograd engine ran in them (some gradients "
              "were torch's, not shimnn's):")
        for nodeid in engine:
            write(f"  {nodeid}")
