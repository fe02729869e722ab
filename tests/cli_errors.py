"""A helper for the CLI tests: the one error line a failing command prints."""


def one_error_line(capsys, command):
    """The single non-empty stderr line, which starts with ``ntk-theory COMMAND: ``."""
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"ntk-theory {command}: "), lines[0]
    return lines[0]
