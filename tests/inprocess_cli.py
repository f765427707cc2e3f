"""Run a deeprec console script's main() in this process (no interpreter start-up): exit code + stderr."""

from __future__ import annotations

import importlib
import sys


def run_cli_output(module: str, argv: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """main() of `module` (e.g. "deeprec.cli.train") with sys.argv = argv: (exit code, stdout, stderr)."""
    main = importlib.import_module(module).main
    monkeypatch.setattr(sys, "argv", [module, *argv])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_cli(module: str, argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """main() of `module` with sys.argv = argv: (exit code, stderr)."""
    code, _, err = run_cli_output(module, argv, monkeypatch, capsys)
    return code, err


def one_line_error(code: int, err: str, *fragments: str) -> str:
    """Assert a deeprec user error: exit 2, one line on stderr, no traceback, naming every fragment."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
