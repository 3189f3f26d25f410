"""Parameters: typed from defaults or type=, JSON, required, command-line parsing, clear errors."""

from __future__ import annotations

import argparse
import pathlib

import pytest

from nbflow.parameters import (
    JSONType,
    Parameter,
    ParameterError,
    add_arguments,
    check_names,
    declared,
    help_lines,
    param,
    parse_args,
    resolve,
    set_values,
    values,
    values_from_namespace,
)

ALPHA = Parameter("alpha", help="Learning rate", default=0.01)
GDP = Parameter("gdp", help="Country-GDP Mapping", type=JSONType, default='{"US": 1939}')
N = Parameter("num_components", help="Number of components", required=True, type=int)
FLAG = Parameter("verbose", default=False, help="Talk more")


@pytest.mark.parametrize(
    "p,type_name,default",
    [
        (ALPHA, "FLOAT", 0.01),
        (Parameter("n", default=3), "INT", 3),
        (Parameter("s", default="x"), "STR", "x"),
        (Parameter("s"), "STR", None),
        (FLAG, "BOOL", False),
        (GDP, "JSON", {"US": 1939}),
        (Parameter("d", default={"a": [1]}), "JSON", {"a": [1]}),
        (Parameter("p", type=pathlib.Path, default="a/b"), "PATH", pathlib.Path("a/b")),
    ],
)
def test_type_comes_from_default_or_type(p: Parameter, type_name: str, default: object) -> None:
    assert p.type_name == type_name
    assert p.default == default


@pytest.mark.parametrize(
    "p,given,expected",
    [
        (ALPHA, "0.6", 0.6),
        (ALPHA, 1, 1.0),
        (Parameter("n", default=3), "12", 12),
        (FLAG, "yes", True),
        (FLAG, False, False),
        (GDP, '{"US": 1}', {"US": 1}),
        (GDP, {"FR": 2}, {"FR": 2}),
    ],
)
def test_convert_accepts(p: Parameter, given: object, expected: object) -> None:
    assert p.convert(given) == expected


@pytest.mark.parametrize(
    "p,given,words",
    [
        (ALPHA, "fast", ["parameter 'alpha' expects a number", "'fast'"]),
        (ALPHA, True, ["expects a number", "True (bool)"]),
        (Parameter("n", default=3), 2.5, ["parameter 'n' expects an integer", "2.5 (float)"]),
        (Parameter("n", default=3), "2.5", ["expects an integer", "'2.5'"]),
        (FLAG, "maybe", ["parameter 'verbose' expects true or false"]),
        (GDP, "{US: 1}", ["parameter 'gdp' expects JSON", "property name", "--gdp '{\"a\": 1}'"]),
        (GDP, {"x": object()}, ["not JSON-serializable"]),
    ],
)
def test_convert_rejects_with_a_clear_error(p: Parameter, given: object, words: list[str]) -> None:
    with pytest.raises(ParameterError) as info:
        p.convert(given)
    for w in words:
        assert w in str(info.value)


def test_bad_declarations() -> None:
    with pytest.raises(ParameterError, match="default 'x' .* as its default|got 'x' as its default"):
        Parameter("n", default="x", type=int)
    with pytest.raises(ParameterError, match="cannot infer a type"):
        Parameter("o", default=object())
    with pytest.raises(ParameterError, match="not valid"):
        Parameter("bad name")
    with pytest.raises(ParameterError, match="two parameters are named 'a'"):
        check_names([Parameter("a"), Parameter("a")])
    with pytest.raises(ParameterError, match="clashes"):
        check_names([Parameter("store")], reserved={"store"})


def test_resolve_fills_defaults_and_checks_required() -> None:
    assert resolve([ALPHA, GDP, N], {"num_components": "3"}) == {
        "alpha": 0.01, "gdp": {"US": 1939}, "num_components": 3,
    }
    with pytest.raises(ParameterError, match=r"parameter 'num_components' is required; pass "
                                             r"--num_components INT \(Number of components\)"):
        resolve([ALPHA, N], {})
    with pytest.raises(ParameterError, match="the flow has no parameter 'beta'; its parameters: alpha"):
        resolve([ALPHA], {"beta": 1})
    with pytest.raises(ParameterError, match="from alpha=..."):
        resolve([ALPHA], {"alpha": [1]})


def test_dashed_names_are_options_and_attributes() -> None:
    p = Parameter("learning-rate", default=0.1)
    assert p.attr == "learning_rate" and p.option == "--learning-rate"
    assert resolve([p], {"learning-rate": "0.5"}) == {"learning_rate": 0.5}
    assert resolve([p], {"learning_rate": 0.5}) == {"learning_rate": 0.5}


def test_command_line_options_and_help() -> None:
    assert parse_args([ALPHA, GDP, N, FLAG], ["--alpha", "0.6", "--num_components", "4",
                                              "--gdp", '{"US": 1}', "--verbose"]) == {
        "alpha": 0.6, "gdp": {"US": 1}, "num_components": 4, "verbose": True,
    }
    assert parse_args([FLAG], ["--no-verbose"]) == {"verbose": False}
    parser = argparse.ArgumentParser(prog="flow.py run")
    add_arguments(parser, [ALPHA, GDP, N])
    text = parser.format_help()
    assert "--alpha FLOAT" in text and "Learning rate [default: 0.01]" in text
    assert "--num_components INT" in text and "[required]" in text
    assert '[default: {"US": 1939}]' in text
    # only what was given is reported, so defaults stay distinguishable
    assert values_from_namespace(parser.parse_args(["--alpha", "1"]), [ALPHA, GDP, N]) == {"alpha": 1.0}
    assert help_lines([ALPHA, N]) == [
        "--alpha FLOAT         Learning rate [default: 0.01]",
        "--num_components INT  Number of components [required]",
    ]


def test_bad_command_line_value_exits_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args([ALPHA], ["--alpha", "fast"], prog="flow.py run")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --alpha: parameter 'alpha' expects a number, got 'fast' from --alpha" in err


def test_param_helper_declares_and_takes_values() -> None:
    set_values(None)
    assert param("alpha", 0.01, help="Learning rate") == 0.01
    assert declared()["alpha"].help == "Learning rate"
    with values({"alpha": "0.6"}):
        assert param("alpha", 0.01) == 0.6
    assert param("alpha", 0.01) == 0.01
    with pytest.raises(ParameterError, match="required"):
        param("k", type=int, required=True)
    set_values({"k": 3})
    try:
        assert param("k", type=int, required=True) == 3
    finally:
        set_values(None)


def test_parameter_is_a_read_only_descriptor_in_flows() -> None:
    class Holder:
        alpha = Parameter("alpha", default=0.5)

    assert isinstance(Holder.alpha, Parameter) and Holder.alpha.attr == "alpha"
    h = Holder()
    assert h.alpha == 0.5
    h.alpha = 0.7  # outside a flow it is a plain attribute
    assert h.alpha == 0.7
