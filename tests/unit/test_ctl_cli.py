"""``mailslot ctl`` without a broker: the commands exist with rabbitmqctl's names, bad arguments are
usage errors (exit 2), bad definitions are refused with one line before anything is sent."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mailslot.cli.ctl_backends import USER_LIMITS, VHOST_LIMITS, CtlError, parse_limits
from mailslot.cli.main import app

runner = CliRunner()
NOWHERE = "http://guest:guest@127.0.0.1:9"  # the discard port: nothing may be sent there anyway

COMMANDS = [
    "add_user",
    "change_password",
    "clear_password",
    "delete_user",
    "set_user_tags",
    "list_users",
    "add_vhost",
    "delete_vhost",
    "list_vhosts",
    "set_permissions",
    "clear_permissions",
    "list_permissions",
    "list_user_permissions",
    "set_topic_permissions",
    "clear_topic_permissions",
    "list_topic_permissions",
    "set_vhost_limits",
    "clear_vhost_limits",
    "list_vhost_limits",
    "set_user_limits",
    "clear_user_limits",
    "list_user_limits",
    "import_definitions",
    "export_definitions",
    "close_connection",
    "list_connections",
    "set_policy",
    "clear_policy",
    "list_policies",
    "set_operator_policy",
    "clear_operator_policy",
    "list_operator_policies",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_rabbitmqctl_command_has_help(command: str) -> None:
    result = runner.invoke(app, ["ctl", command, "--help"])
    assert result.exit_code == 0, result.output
    assert f"mailslot ctl {command}" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["set_permissions", "app", ".*", ".*"],  # READ missing
        ["set_policy", "p", ".*"],  # DEFINITION missing
        ["set_policy", "--priority", "high", "p", ".*", "{}"],
        ["list_users", "--format", "xml"],
        ["add_vhost"],
        ["frobnicate"],
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str]) -> None:
    assert runner.invoke(app, ["ctl", "--url", NOWHERE, *args]).exit_code == 2


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["set_vhost_limits", "{max-queues: 1}"], "not JSON"),
        (["set_vhost_limits", '{"max-queues": 1.5}'], "must be an integer"),
        (["set_vhost_limits", '{"max-channels": 1}'], "unknown limit 'max-channels'"),
        (["set_user_limits", "app", "[]"], "JSON object"),
        (["clear_user_limits", "app", "max-queues"], "unknown limit"),
        (["set_policy", "p", ".*", "not json"], "not JSON"),
        (["set_operator_policy", "p", ".*", "[1]"], "JSON object"),
        (["import_definitions", "/nonexistent/defs.json"], "cannot read"),
    ],
)
def test_bad_input_is_one_line_before_any_request(args: list[str], text: str) -> None:
    result = runner.invoke(app, ["ctl", "--url", NOWHERE, *args])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.stderr


def test_a_url_that_is_no_broker_url_is_one_line() -> None:
    result = runner.invoke(app, ["ctl", "--url", "ftp://x", "list_users"])
    assert result.exit_code == 1 and result.stderr.startswith("error: not a broker URL")


def test_parse_limits() -> None:
    assert parse_limits('{"max-connections": 10, "max-queues": -1}', VHOST_LIMITS) == {
        "max-connections": 10,
        "max-queues": -1,
    }
    assert parse_limits('{"max-channels": 0}', USER_LIMITS) == {"max-channels": 0}
    for bad in ("{}", '{"max-channels": true}', '{"max-connections": "5"}', "5"):
        with pytest.raises(CtlError):
            parse_limits(bad, USER_LIMITS)
