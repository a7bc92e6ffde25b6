"""``mailslot serve --config FILE``: the TOML file, MAILSLOT_* environment variables, flags, their
precedence, secrets read from files, and one-line errors naming the key (docs/configuration.md)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import mailslot.cli.serve
from mailslot.bootstrap import MAX_MESSAGE_SIZE_CAP, BrokerConfig
from mailslot.cli.main import app
from mailslot.cli.serve import NOT_SETTINGS, PARAMETER_SETTINGS
from mailslot.config import ConfigError, Schema


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[BrokerConfig]:
    """Runs ``mailslot serve`` up to the config it would start the broker with."""
    seen: list[BrokerConfig] = []

    def fake_run_serve(config: BrokerConfig, log_level: str = "info") -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr(mailslot.cli.serve, "run_serve", fake_run_serve)
    return seen


def serve(args: list[str], env: dict[str, str] | None = None) -> Any:
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1", **(env or {})})
    return runner.invoke(app, ["serve", *args])


def write(tmp_path: Path, text: str, name: str = "mailslot.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_broker_setting_has_a_config_key_and_an_environment_variable() -> None:
    schema = Schema(BrokerConfig)
    internal = {f.name for f in dataclasses.fields(BrokerConfig) if f.metadata.get("config") is False}
    assert internal == {"resource_reader"}
    assert set(schema.settings) == {f.name for f in dataclasses.fields(BrokerConfig)} - internal
    assert schema.settings["tls_port"].env == "MAILSLOT_TLS_PORT"


def test_every_serve_flag_sets_a_setting_of_the_same_name_with_the_same_default() -> None:
    """The rule other engineers rely on: a flag named like a BrokerConfig field needs no extra code."""
    command = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    defaults = BrokerConfig()
    for param in command.params:
        if param.name in NOT_SETTINGS or param.name == "help":
            continue
        setting = PARAMETER_SETTINGS.get(param.name, param.name)
        assert hasattr(defaults, setting), f"--{param.name} sets no BrokerConfig field"
        default = getattr(defaults, setting)
        flag_default = param.default.value if hasattr(param.default, "value") else param.default
        converted = Schema(BrokerConfig).from_flags({setting: (flag_default, "--x")})[setting][0]
        assert converted == default, f"--{param.name}'s help shows {flag_default!r}, the broker uses {default!r}"


def test_precedence_flags_over_environment_over_file_over_defaults(tmp_path: Path, captured: list[BrokerConfig]) -> None:
    config = write(tmp_path, 'host = "127.0.0.2"\namqp_port = 1111\nhttp_port = 2222\nheartbeat = 7\n')
    env = {"MAILSLOT_AMQP_PORT": "3333", "MAILSLOT_HTTP_PORT": "4444"}
    result = serve(["--config", str(config), "--port", "5555"], env)
    assert result.exit_code == 0, result.output
    [got] = captured
    assert got.amqp_port == 5555  # flag beats environment and file
    assert got.http_port == 4444  # environment beats file
    assert (got.host, got.heartbeat) == ("127.0.0.2", 7)  # file beats defaults
    assert got.frame_max == BrokerConfig().frame_max  # defaults fill the rest


def test_the_config_file_can_come_from_the_environment(tmp_path: Path, captured: list[BrokerConfig]) -> None:
    config = write(tmp_path, "heartbeat = 9\n")
    assert serve([], {"MAILSLOT_CONFIG": str(config)}).exit_code == 0
    assert captured[0].heartbeat == 9


def test_tables_group_keys_and_types_are_converted(tmp_path: Path, captured: list[BrokerConfig]) -> None:
    (tmp_path / "s.crt").write_text("x")
    config = write(
        tmp_path,
        f"""
amqp_port = "none"               # the plain listener is off
max_message_size = 134_217_728   # 128 MiB, RabbitMQ 3.x's default
memory_high_watermark = 0.6
disk_free_limit = "1GB"
consumer_timeout = "none"
loopback_users = []
users = {{ admin = "s3cret" }}

[tls]
port = 5671
cert = "{tmp_path / 's.crt'}"
key = "{tmp_path / 's.key'}"
ca = "{tmp_path / 'ca.crt'}"
verify_peer = true
""",
    )
    result = serve(["--config", str(config)])
    assert result.exit_code == 0, result.output
    [got] = captured
    assert got.amqp_port is None
    assert got.tls_port == 5671 and got.tls_verify_peer is True
    assert got.tls_cert == tmp_path / "s.crt"
    assert got.max_message_size == 128 * 1024 * 1024
    assert got.memory_high_watermark == 0.6 and got.disk_free_limit == "1GB"
    assert got.consumer_timeout is None
    assert got.loopback_users == frozenset() and got.users == {"admin": "s3cret"}


def test_environment_values_are_parsed_from_text(captured: list[BrokerConfig]) -> None:
    env = {
        "MAILSLOT_TLS_VERIFY_PEER": "yes",
        "MAILSLOT_TLS_PORT": "5671",
        "MAILSLOT_TLS_CERT": "/etc/mailslot/server.crt",
        "MAILSLOT_TLS_KEY": "/etc/mailslot/server.key",
        "MAILSLOT_TLS_CA": "/etc/mailslot/ca.crt",
        "MAILSLOT_HTTP_PORT": "none",
        "MAILSLOT_VHOSTS": "/,staging",
        "MAILSLOT_USERS": '{ops = "pw"}',
        "MAILSLOT_MEMORY_HIGH_WATERMARK": "512MiB",
        "MAILSLOT_CONSUMER_TIMEOUT": "2.5",
    }
    assert serve([], env).exit_code == 0
    [got] = captured
    assert got.tls_verify_peer is True and got.tls_port == 5671 and got.http_port is None
    assert got.tls_ca == Path("/etc/mailslot/ca.crt")
    assert got.vhosts == frozenset({"/", "staging"}) and got.users == {"ops": "pw"}
    assert got.memory_high_watermark == "512MiB" and got.consumer_timeout == 2.5


def test_a_flag_turns_off_what_the_file_turned_on(tmp_path: Path, captured: list[BrokerConfig]) -> None:
    config = write(tmp_path, "http_port = 8080\n[tls]\nverify_peer = true\nca = 'ca.pem'\n")
    assert serve(["--config", str(config), "--http-port", "none", "--no-tls-verify-peer"]).exit_code == 0
    assert captured[0].http_port is None and captured[0].tls_verify_peer is False


def test_secrets_are_read_from_files(tmp_path: Path, captured: list[BrokerConfig]) -> None:
    secret = tmp_path / "key-password"
    secret.write_text("correct horse\n")
    config = write(tmp_path, f'tls_key_password_file = "{secret}"\n')
    assert serve(["--config", str(config)]).exit_code == 0
    assert captured[0].tls_key_password == "correct horse"  # the trailing newline is not part of it
    other = tmp_path / "from-env"
    other.write_text("battery staple")
    assert serve(["--config", str(config)], {"MAILSLOT_TLS_KEY_PASSWORD_FILE": str(other)}).exit_code == 0
    assert captured[1].tls_key_password == "battery staple"  # the environment beats the file


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("amqp_prot = 5672\n", {}, "error: amqp_prot: unknown setting (did you mean 'amqp_port'?) ({file})"),
        ("heartbeat = 'often'\n", {}, "error: heartbeat: expected an integer, got 'often' ({file})"),
        ("tls_verify_peer = 'yes'\n", {}, "error: tls_verify_peer: expected true or false, got 'yes' ({file})"),
        ("vhosts = '/'\n", {}, "error: vhosts: expected a list, got '/' ({file})"),
        (
            "max_message_size = 1073741824\n",
            {},
            f"error: max_message_size: 1073741824 is out of range: at most {MAX_MESSAGE_SIZE_CAP} (512 MiB, "
            "RabbitMQ's cap), at least 1 ({file})",
        ),
        ("amqp_port = 70000\n", {}, "error: amqp_port: 70000 is not a port number (0-65535, 0 picks a free one) ({file})"),
        ("", {"MAILSLOT_FRAME_MAX": "big"}, "error: frame_max: expected an integer, got 'big' (MAILSLOT_FRAME_MAX)"),
        (
            "disk_free_limit = '50 parsecs'\n",
            {},
            "error: disk_free_limit: unknown unit 'parsecs' in '50 parsecs'; use k, M, G, T (1024-based) or kB, MB, "
            "GB, TB ({file})",
        ),
        ("log_level = 'loud'\n", {}, "error: log_level: 'loud' is not one of debug, info, warning, error ({file})"),
        ("heartbeat = \n", {}, "error: config: {file} is not valid TOML: Invalid value (at line 1, column 13)"),
        (
            "tls_key_password = 'a'\ntls_key_password_file = 'b'\n",
            {},
            "error: tls_key_password: give tls_key_password or tls_key_password_file, not both ({file})",
        ),
        ("heartbeat_file = 'x'\n", {}, "error: heartbeat_file: heartbeat is not text, so it cannot be read from a file ({file})"),
        ("tls_key_password_file = '/no/such/file'\n", {},
         "error: tls_key_password_file: cannot read /no/such/file: No such file or directory ({file})"),
        ("[tls]\nprot = 1\n", {}, "error: tls_prot: unknown setting (did you mean 'tls_port'?) ({file})"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_key_and_where_it_came_from(
    tmp_path: Path, captured: list[BrokerConfig], text: str, env: dict[str, str], expected: str
) -> None:
    config = write(tmp_path, text)
    result = serve(["--config", str(config)], env)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [expected.format(file=config)]
    assert not captured


def test_a_missing_config_file_is_one_line(tmp_path: Path, captured: list[BrokerConfig]) -> None:
    result = serve(["--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"error: config: cannot read {tmp_path / 'nope.toml'}: No such file or directory"]


def test_a_flag_that_breaks_a_rule_names_the_flag(captured: list[BrokerConfig]) -> None:
    result = serve(["--max-message-size", str(MAX_MESSAGE_SIZE_CAP + 1)])
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: max_message_size: 536870913 is out of range") and line.endswith("(--max-message-size)")


def test_a_misspelt_environment_variable_is_pointed_out(captured: list[BrokerConfig]) -> None:
    result = serve([], {"MAILSLOT_HEARTBEAT_": "5", "MAILSLOT_URL": "amqp://elsewhere"})
    assert result.exit_code == 0
    assert result.stderr.splitlines() == ["warning: MAILSLOT_HEARTBEAT_ is not a setting (did you mean MAILSLOT_HEARTBEAT?)"]


def test_a_new_field_is_configurable_without_code() -> None:
    """The schema follows the dataclass: a field added to a config class is a key and a variable at once."""

    @dataclasses.dataclass
    class Extended:
        node_name: str = "mailslot@localhost"
        max_connections: int | None = None
        postgres_dsn: str | None = None

    schema = Schema(Extended)
    got = schema.load(None, environ={"MAILSLOT_MAX_CONNECTIONS": "100", "MAILSLOT_NODE_NAME": "n2"})
    assert (got.node_name, got.max_connections) == ("n2", 100)
    with pytest.raises(ConfigError, match="postgres_dsn: expected a string or none, got 5"):
        schema.build(schema._resolve({"postgres_dsn": (5, "f")}, from_text=False))


def test_an_unsupported_field_type_fails_loudly() -> None:
    @dataclasses.dataclass
    class Odd:
        callback: Any = None

    with pytest.raises(TypeError, match="Odd.callback|callback: type"):
        Schema(Odd)
