"""``mailslot queues`` shows the policy in force and the limits as they run (arguments and policies)."""

from __future__ import annotations

from rich.console import Console

from mailslot.cli.queues import effective_limits, policy_text, render_table


def test_limits_combine_arguments_and_policies_lower_wins() -> None:
    queue = {"arguments": {"x-max-length": 100, "x-overflow": "drop-head"},
             "effective_policy_definition": {"max-length": 10, "max-length-bytes": 2048}}
    assert effective_limits(queue) == {"x-max-length": 10, "x-overflow": "drop-head", "x-max-length-bytes": 2048}
    assert effective_limits({"arguments": {"x-max-length": 5}, "effective_policy_definition": {"max-length": 9}}) == {
        "x-max-length": 5}
    assert effective_limits({"arguments": {}}) == {}


def test_policy_text() -> None:
    assert policy_text({"policy": "p", "operator_policy": "o"}) == "policy: p, operator: o"
    assert policy_text({"policy": None, "operator_policy": "o"}) == "operator: o"
    assert policy_text({"policy": None}) == ""
    assert policy_text({}) == ""


def test_table_shows_policy_and_effective_limit() -> None:
    queues = [{"vhost": "/", "name": "orders", "messages": 3, "messages_ready": 3, "arguments": {},
               "policy": "cap", "operator_policy": None, "effective_policy_definition": {"max-length": 10}}]
    console = Console(width=200, record=True, color_system=None)
    console.print(render_table(queues, "http://broker"))
    text = console.export_text()
    assert "orders (policy: cap)" in text
    row = next(line for line in text.splitlines() if "orders" in line)
    assert row.rstrip().endswith("10")  # the limit column: the policy's max-length


def _table_text(queues: list[dict[str, object]]) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(render_table(queues, "http://broker"))
    return console.export_text()


def test_table_shows_each_queues_node_when_there_are_several() -> None:
    queues = [{"vhost": "/", "name": "orders", "node": "mailslot@n1", "arguments": {}},
              {"vhost": "/", "name": "emails", "node": "mailslot@n2", "arguments": {}}]
    text = _table_text(queues)
    assert "node" in text.splitlines()[2]  # the heading row, after the title and a blank line
    assert "mailslot@n1" in next(line for line in text.splitlines() if "orders" in line)
    assert "mailslot@n2" in next(line for line in text.splitlines() if "emails" in line)
    # One node (no cluster): no node column.
    single = _table_text([{**q, "node": "mailslot@n1"} for q in queues])
    assert "mailslot@n1" not in single
