"""The ``mailslot`` command line: argument parsing, help, and the errors a user can act on."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from mailslot.cli.main import app

# Wide, plain help output so that assertions do not depend on the terminal running the tests.
runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200", "NO_COLOR": "1"})


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something is listening on (never a fixed port number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (just released by the OS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_no_arguments_shows_the_commands() -> None:
    result = runner.invoke(app, [])
    for command in ("serve", "publish", "consume"):
        assert command in result.output


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("serve", ["--host", "--port", "--data-dir", "--store", "--heartbeat", "--log-level"]),
        ("publish", ["--url", "--exchange", "--routing-key", "--persistent", "--count", "--confirm"]),
        ("consume", ["--url", "--queue", "--count", "--no-ack", "--prefetch"]),
    ],
)
def test_help_lists_the_options(command: str, options: list[str]) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    for option in options:
        assert option in result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("mailslot ")


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--store", "oracle"],
        ["serve", "--port", "70000"],
        ["serve", "--log-level", "loud"],
        ["publish", "--count", "0", "x"],
        ["publish"],  # BODY is required
        ["consume"],  # --queue is required
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2


@pytest.mark.parametrize(
    ("args", "line"),
    [
        ([], "error: postgres_dsn: is required with store postgres (--postgres-dsn, MAILSLOT_POSTGRES_DSN)"),
        (["--postgres-dsn", "postgresql://x@127.0.0.1/db", "--postgres-schema", "Bad-Name"],
         "error: postgres_schema: 'Bad-Name': use lower-case letters, digits and _ (--postgres-schema)"),
    ],
)
def test_serve_on_postgres_with_unusable_settings_prints_one_line(args: list[str], line: str) -> None:
    result = runner.invoke(app, ["serve", "--port", "0", "--http-port", "0", "--store", "postgres", *args])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [line]


def test_serve_on_an_unreachable_postgres_prints_one_line_and_exits_1(closed_port: int) -> None:
    dsn = f"postgresql://postgres:secret@127.0.0.1:{closed_port}/test"
    result = runner.invoke(
        app, ["serve", "--port", "0", "--http-port", "0", "--store", "postgres", "--postgres-dsn", dsn]
    )
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: cannot start the broker: cannot use PostgreSQL at ") and "refused" in line
    assert "secret" not in line and "Traceback" not in result.output


def test_serve_on_a_taken_port_prints_one_line_and_exits_1(taken_port: int) -> None:
    result = runner.invoke(
        app, ["serve", "--host", "127.0.0.1", "--port", str(taken_port), "--store", "memory"]
    )
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: port {taken_port} on 127.0.0.1 is already in use; choose another with --port"
    ]
    assert "Traceback" not in result.output


def test_publish_to_a_closed_port_prints_one_line_and_exits_1(closed_port: int) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{closed_port}/%2F"
    result = runner.invoke(app, ["publish", "--url", url, "-r", "q", "hello"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == ["error: cannot connect to the broker: Connection refused"]


def test_publish_rejects_a_non_amqp_url() -> None:
    result = runner.invoke(app, ["publish", "--url", "http://user:secret@example.invalid/", "x"])
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1
    assert "secret" not in result.stderr  # the password is never echoed back


def test_publish_then_consume_through_a_real_broker(mailslot_url: str) -> None:
    published = runner.invoke(
        app,
        ["publish", "--url", mailslot_url, "--declare", "-r", "cli-test", "--count", "2", "--confirm", "hi"],
    )
    assert published.exit_code == 0, published.output
    from_stdin = runner.invoke(app, ["publish", "--url", mailslot_url, "-r", "cli-test", "-"], input="piped")
    assert from_stdin.exit_code == 0, from_stdin.output

    consumed = runner.invoke(app, ["consume", "--url", mailslot_url, "-q", "cli-test", "--count", "3"])
    assert consumed.exit_code == 0, consumed.output
    assert consumed.stdout.splitlines() == ["cli-test\thi", "cli-test\thi", "cli-test\tpiped"]


def test_consume_from_a_missing_queue_reports_the_404(mailslot_url: str) -> None:
    result = runner.invoke(app, ["consume", "--url", mailslot_url, "-q", "no-such-queue", "--count", "1"])
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: the broker closed the channel: 404 NOT_FOUND")


@pytest.mark.parametrize("command", [["publish"], ["consume"], ["bench"], ["queues"], ["spike"], ["worker"],
                                     ["trace"], ["dlq", "list"], ["ctl"]])
def test_every_command_names_the_broker_with_url(command: list[str]) -> None:
    """One convention (issue 15): the broker is ``--url`` (env MAILSLOT_URL), an AMQP URL, for every
    command that talks to one (``queues`` still accepts its old ``--http-url``)."""
    result = CliRunner(env={"COLUMNS": "250", "NO_COLOR": "1"}).invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "--url" in result.output and "MAILSLOT_URL" in result.output


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ctl", "add_user"], "mailslot ctl add_user: Missing argument 'username'."),
        (["serve", "--port", "abc"], "mailslot serve: Invalid value for '--port'"),
        (["no-such-command"], "mailslot: No such command 'no-such-command'."),
    ],
)
def test_usage_mistakes_are_one_line_and_exit_code_2(
    argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The installed command (``main``), not the typer app: a usage mistake is one line on stderr."""
    from mailslot.cli.main import main

    monkeypatch.setattr("sys.argv", ["mailslot", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(message), err
    assert "--help" in err


def test_help_still_prints_the_full_usage(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from mailslot.cli.main import main

    monkeypatch.setattr("sys.argv", ["mailslot", "ctl", "add_user", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0
    assert "Usage" in capsys.readouterr().out
