"""The command line: a missing extra is one line with the pip command; any other import
failure is a bug and shows its traceback; --help shows what each option defaults to."""

from __future__ import annotations

import argparse

import pytest

from edgeboost import cli


def _failing(name: str):  # type: ignore[no-untyped-def]
    def handler(args: argparse.Namespace) -> int:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    return handler


def test_a_missing_extra_is_one_line_with_the_pip_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = cli._parser()
    monkeypatch.setattr(cli, "_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["predict"].set_defaults(  # type: ignore[union-attr]
        handler=_failing("xgboost.core")
    )
    assert cli.main(["predict", "bundle", "rows.json"]) == 1
    assert "pip install 'edgeboost[compile]'" in capsys.readouterr().err


def test_any_other_import_failure_is_a_bug_shown_in_full(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = cli._parser()
    monkeypatch.setattr(cli, "_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["predict"].set_defaults(  # type: ignore[union-attr]
        handler=_failing("edgeboost.runtime.not_there")
    )
    with pytest.raises(ModuleNotFoundError, match="not_there"):
        cli.main(["predict", "bundle", "rows.json"])


def test_help_names_defaults_and_no_developer_notes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    top = capsys.readouterr().out
    assert "``" not in top and "Each subcommand imports" not in top
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    serve = " ".join(capsys.readouterr().out.split())  # as if unwrapped
    assert "(default: edgeboost/inference/request)" in serve
    assert "(default: 262144)" in serve and "(default: None)" not in serve
    with pytest.raises(SystemExit):
        cli.main(["package", "--help"])
    assert "(default: local/result)" in " ".join(capsys.readouterr().out.split())
