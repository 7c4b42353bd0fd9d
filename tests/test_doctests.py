"""The examples in the API's docstrings run: each verb shows a call that works, with what it prints."""

from __future__ import annotations

import doctest
import importlib

import pytest

import ttplan

#: the modules whose docstrings hold the verbs' examples
MODULES = ("ttplan", "ttplan.core.layer", "ttplan.runtime.layers", "ttplan.runtime.batchnorm",
           "ttplan.arch.architecture", "ttplan.arch.apply")
#: every verb of the API, as the package docstring calls it
VERBS = ("plan_layer", "TTConv2d.from_conv", "TTLinear.from_linear", "plan_architecture", "convert", "freeze", "load")


@pytest.mark.parametrize("name", MODULES)
def test_the_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted, f"{name} has no examples"
    assert not result.failed, f"{result.failed} of {name}'s examples failed (doctest's report is above)"


def test_every_verb_has_an_example_in_the_package_docstring() -> None:
    examples = [ex.source for test in doctest.DocTestFinder().find(ttplan) for ex in test.examples]
    missing = [verb for verb in VERBS if not any(f"ttplan.{verb}(" in source for source in examples)]
    assert not missing, f"add an example of {', '.join(missing)} to ttplan/__init__.py's docstring"
