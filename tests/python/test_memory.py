"""Task memory, tool classes and labels, shadow mode and pre-checks, through
`warden serve`.

The upstream is servers/memory_tools.py, a stdio server built with the
official MCP SDK. The config classifies four of its tools: `fetch` is a
`read` whose output is `untrusted-content`, `send` an `external-send`,
`pay` a `payment` whose `amount` is summed per task tree, and `note` a
`write`. `browse` and `wipe` are not in the config, so Warden classifies
them from their MCP annotations. The policies permit every tool call and
then read `context.memory`: they hold an external send once the task has
read untrusted content, deny a payment that takes the task's total above
100.00, deny the fourth write, and hold every delete.

Three gateways share that setup: one enforcing the policies, one in shadow
mode, and one with a candidate set in `[policy] shadow_dir` that forbids
`fetch`. Held calls return at once (`approvals.wait_seconds = 0`). The
agent is the official MCP client, and httpx drives the pre-check, token
exchange and admin endpoints. These tests need no Node.js.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import (
    HTTP_TIMEOUT_SECONDS,
    Gateway,
    StartGateway,
    connect,
    decision_of,
    result_text,
    run,
    toml_value,
)

SERVER = Path(__file__).resolve().parent / "servers" / "memory_tools.py"
ADMIN_TOKEN = "memory-test-admin-token-3b7e91"
HELPER_AGENT = "spiffe://warden.local/agent/memory-helper"
MODE = "auto"

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"

FETCH = "t__fetch"
BROWSE = "t__browse"
SEND = "t__send"
PAY = "t__pay"
NOTE = "t__note"
WIPE = "t__wipe"

HOLD_SEND = "hold-send-after-untrusted"
PAYMENT_CAP = "payment-cap"
WRITE_BUDGET = "write-budget"
HOLD_DELETE = "hold-delete"

PAGE_ARGUMENTS = {"url": "https://shop.example.test/rates"}
SEND_ARGUMENTS = {"to": "customer@acme.test", "body": "Shipping costs 4.90."}

POLICIES = {
    "tasks.cedar": """
@id("start-task")
permit (principal, action == Warden::Action::"start_task", resource);

@id("list-tools")
permit (principal, action == Warden::Action::"list_tools", resource);

@id("delegate")
permit (principal, action == Warden::Action::"delegate", resource);
""",
    "tools.cedar": f"""
@id("call-tools")
permit (principal, action in Warden::Action::"call_tool", resource);

@id("{HOLD_SEND}")
@hold("this task has read untrusted content")
forbid (principal, action in Warden::Action::"call_tool", resource)
when {{
  context.memory.labels.contains("untrusted-content") &&
  resource.classes.contains("external-send")
}};

@id("{PAYMENT_CAP}")
@reason("this task may pay at most 100.00 in total")
forbid (principal, action in Warden::Action::"call_tool", resource)
when {{
  resource.classes.contains("payment") &&
  context.memory.sums_with_call.amount.greaterThan(decimal("100.0"))
}};

@id("{WRITE_BUDGET}")
@reason("this task may write at most three times")
forbid (principal, action in Warden::Action::"call_tool", resource)
when {{ resource.classes.contains("write") && context.memory.class_calls.write >= 3 }};

@id("{HOLD_DELETE}")
@hold("deleting needs a person's approval")
forbid (principal, action in Warden::Action::"call_tool", resource)
when {{ resource.classes.contains("delete") }};
""",
}

# The candidate set of the shadow_dir gateway: everything the enforced set
# permits, except fetch.
CANDIDATE_NO_FETCH = "candidate-no-fetch"
CANDIDATE_POLICIES = {
    "candidate.cedar": f"""
@id("candidate-call-tools")
permit (principal, action in Warden::Action::"call_tool", resource);

@id("{CANDIDATE_NO_FETCH}")
@reason("the candidate set does not fetch pages")
forbid (principal, action == Warden::Action::"{FETCH}", resource);
""",
}

TOOL_SETTINGS = """
[upstreams.t.tools.fetch]
classes = ["read"]
labels = ["untrusted-content"]

[upstreams.t.tools.send]
classes = ["external-send"]

[upstreams.t.tools.pay]
classes = ["payment"]
sum_arguments = ["amount"]

[upstreams.t.tools.note]
classes = ["write"]
"""


def write_policies(directory: Path, policies: dict[str, str]) -> Path:
    """Write `policies` as Cedar files into `directory` and return it."""
    directory.mkdir()
    for name, text in policies.items():
        (directory / name).write_text(text)
    return directory


def start_memory_gateway(
    start_gateway: StartGateway,
    tmp_path_factory: pytest.TempPathFactory,
    mode: str = "enforce",
    candidate: dict[str, str] | None = None,
) -> Gateway:
    """Start a Warden in front of memory_tools.py with the memory policies.

    `mode` is `[policy] mode`. `candidate`, if given, is written to the
    directory named by `[policy] shadow_dir`.
    """
    directory = tmp_path_factory.mktemp("memory-policies")
    policy_dir = write_policies(directory / "enforced", POLICIES)
    policy = [
        "",
        "[policy]",
        f"dir = {toml_value(str(policy_dir))}",
        f"mode = {toml_value(mode)}",
    ]
    if candidate is not None:
        candidate_dir = write_policies(directory / "candidate", candidate)
        policy.append(f"shadow_dir = {toml_value(str(candidate_dir))}")
    extra = "\n".join(policy) + "\n\n[approvals]\nwait_seconds = 0\n" + TOOL_SETTINGS
    upstreams = {"t": {"command": sys.executable, "args": [str(SERVER)]}}
    return start_gateway(
        upstreams, None, extra=extra, env={"WARDEN_ADMIN_TOKEN": ADMIN_TOKEN}
    )


@pytest.fixture(scope="module")
def gateway(
    start_gateway: StartGateway, tmp_path_factory: pytest.TempPathFactory
) -> Gateway:
    """Return a Warden that enforces the memory policies."""
    return start_memory_gateway(start_gateway, tmp_path_factory)


@pytest.fixture(scope="module")
def shadow_gateway(
    start_gateway: StartGateway, tmp_path_factory: pytest.TempPathFactory
) -> Gateway:
    """Return a Warden whose memory policies run in shadow mode."""
    return start_memory_gateway(start_gateway, tmp_path_factory, mode="shadow")


@pytest.fixture(scope="module")
def candidate_gateway(
    start_gateway: StartGateway, tmp_path_factory: pytest.TempPathFactory
) -> Gateway:
    """Return a Warden that enforces the memory policies and shadows a set forbidding fetch."""
    return start_memory_gateway(
        start_gateway, tmp_path_factory, candidate=CANDIDATE_POLICIES
    )


def call_tools(
    gateway: Gateway, token: str, calls: list[tuple[str, dict[str, Any]]]
) -> list[Any]:
    """Make each (tool, arguments) call in order in one MCP session and return the results."""

    async def scenario() -> list[Any]:
        async with connect(gateway.mcp_url(), token, MODE) as client:
            return [await client.call_tool(name, arguments) for name, arguments in calls]

    return run(scenario())


def call_tool(gateway: Gateway, token: str, name: str, arguments: dict[str, Any]) -> Any:
    """Make one tool call in a new MCP session and return its result."""
    [result] = call_tools(gateway, token, [(name, arguments)])
    return result


def pay_arguments(amount: Any) -> dict[str, Any]:
    """Return the arguments of a payment of `amount`."""
    return {"amount": amount, "to": "supplier@acme.test"}


def assert_allowed(result: Any) -> None:
    """Assert that the upstream ran the call."""
    assert result.is_error is not True, result_text(result)


def assert_refused(result: Any, decision: str, policy_ids: list[str]) -> None:
    """Assert that Warden refused the call with `decision` by `policy_ids`."""
    assert result.is_error is True, result_text(result)
    assert decision_of(result)["decision"] == decision
    assert decision_of(result)["policy_ids"] == policy_ids


def records_of(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Return the records of `kind`, in trace order."""
    return [record for record in records if record["kind"] == kind]


def precheck(gateway: Gateway, token: str, body: Any) -> httpx.Response:
    """Send POST /v1/decisions with `body` as JSON and return the raw response."""
    return httpx.post(
        f"{gateway.base_url}/v1/decisions",
        headers={"Authorization": f"Bearer {token}"},
        json=body,
        timeout=HTTP_TIMEOUT_SECONDS,
    )


def precheck_raw(gateway: Gateway, token: str, content: bytes) -> httpx.Response:
    """Send POST /v1/decisions with `content` as the body, as it is."""
    return httpx.post(
        f"{gateway.base_url}/v1/decisions",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        content=content,
        timeout=HTTP_TIMEOUT_SECONDS,
    )


def pending_approvals(gateway: Gateway) -> list[dict[str, Any]]:
    """Return the pending approvals from GET /v1/approvals with the admin token."""
    response = httpx.get(
        f"{gateway.base_url}/v1/approvals?status=pending&limit=1000",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    assert response.status_code == 200, response.text
    return response.json()["approvals"]


def delegate(gateway: Gateway, token: str, agent: str, scope: str) -> dict[str, Any]:
    """Delegate the task of `token` to `agent` with `scope` and return the 200 body."""
    form = {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": token,
        "subject_token_type": JWT_TOKEN_TYPE,
        "actor_token": gateway.issue_svid(agent),
        "actor_token_type": JWT_TOKEN_TYPE,
        "scope": scope,
    }
    response = httpx.post(
        f"{gateway.base_url}/oauth2/token", data=form, timeout=HTTP_TIMEOUT_SECONDS
    )
    assert response.status_code == 200, f"POST /oauth2/token: {response.text}"
    return response.json()


def test_send_held_after_fetch(gateway: Gateway) -> None:
    task = gateway.start_task(tools=[FETCH, SEND])
    before, fetched, after = call_tools(
        gateway,
        task["token"],
        [(SEND, SEND_ARGUMENTS), (FETCH, PAGE_ARGUMENTS), (SEND, SEND_ARGUMENTS)],
    )

    assert_allowed(before)
    assert result_text(before) == "sent 20 characters to customer@acme.test"
    assert_allowed(fetched)
    assert "Shipping rates" in result_text(fetched)
    assert_refused(after, "hold", [HOLD_SEND])
    assert decision_of(after)["approval_id"]
    assert decision_of(after)["reason"] == "this task has read untrusted content"

    records = gateway.trace(task["task_id"], "tool.decision", 3)
    decisions = records_of(records, "tool.decision")
    assert [record["target"] for record in decisions] == [SEND, FETCH, SEND]
    assert [record["decision"] for record in decisions] == ["allow", "allow", "hold"]
    assert decisions[2]["policy_ids"] == [HOLD_SEND]


def test_hold_opens_approval_for_call(gateway: Gateway) -> None:
    task = gateway.start_task(tools=[FETCH, SEND])
    _, held = call_tools(
        gateway, task["token"], [(FETCH, PAGE_ARGUMENTS), (SEND, SEND_ARGUMENTS)]
    )
    approval_id = decision_of(held)["approval_id"]

    [pending] = [a for a in pending_approvals(gateway) if a["approval_id"] == approval_id]
    assert pending["task_id"] == task["task_id"]
    assert pending["tool"] == SEND
    assert pending["arguments"] == SEND_ARGUMENTS


def test_payments_summed_per_task(gateway: Gateway) -> None:
    task = gateway.start_task(tools=[PAY])
    first, second, third, fourth = call_tools(
        gateway,
        task["token"],
        [
            (PAY, pay_arguments(60)),
            (PAY, pay_arguments(30)),
            (PAY, pay_arguments(20)),
            (PAY, pay_arguments(10)),
        ],
    )

    assert_allowed(first)
    assert_allowed(second)
    assert_refused(third, "deny", [PAYMENT_CAP])
    assert decision_of(third)["reason"] == "this task may pay at most 100.00 in total"
    # The denied 20 was not counted, so 60 + 30 + 10 reaches the cap exactly.
    assert_allowed(fourth)


def test_payment_string_amount_counts(gateway: Gateway) -> None:
    task = gateway.start_task(tools=[PAY])
    large, small, over = call_tools(
        gateway,
        task["token"],
        [(PAY, pay_arguments(90)), (PAY, pay_arguments("5")), (PAY, pay_arguments(10))],
    )

    assert_allowed(large)
    assert_allowed(small)
    assert result_text(small) == "paid 5.00 to supplier@acme.test"
    # 90 + 5 + 10 = 105: the string "5" was summed as 5.
    assert_refused(over, "deny", [PAYMENT_CAP])


def test_payment_sums_separate_per_task(gateway: Gateway) -> None:
    first = gateway.start_task(tools=[PAY])
    second = gateway.start_task(tools=[PAY])
    spent = call_tool(gateway, first["token"], PAY, pay_arguments(90))
    fresh = call_tool(gateway, second["token"], PAY, pay_arguments(90))

    assert_allowed(spent)
    assert_allowed(fresh)


def test_fourth_write_denied(gateway: Gateway) -> None:
    task = gateway.start_task(tools=[NOTE, FETCH])
    results = call_tools(
        gateway,
        task["token"],
        [(NOTE, {"text": f"step {index}"}) for index in range(1, 5)]
        + [(FETCH, PAGE_ARGUMENTS)],
    )

    for allowed in results[:3]:
        assert_allowed(allowed)
    assert result_text(results[2]) == "noted: step 3"
    assert_refused(results[3], "deny", [WRITE_BUDGET])
    # The budget counts writes only: a read still goes through.
    assert_allowed(results[4])


def test_delegated_task_shares_labels(gateway: Gateway) -> None:
    root = gateway.start_task(tools=[FETCH, SEND, PAY])
    child = delegate(gateway, root["token"], HELPER_AGENT, f"{SEND} {PAY}")

    sent_before = call_tool(gateway, child["access_token"], SEND, SEND_ARGUMENTS)
    fetched = call_tool(gateway, root["token"], FETCH, PAGE_ARGUMENTS)
    sent_after = call_tool(gateway, child["access_token"], SEND, SEND_ARGUMENTS)

    assert_allowed(sent_before)
    assert_allowed(fetched)
    assert_refused(sent_after, "hold", [HOLD_SEND])
    assert decision_of(sent_after)["task_id"] == child["task_id"]


def test_delegated_task_shares_sums(gateway: Gateway) -> None:
    root = gateway.start_task(tools=[PAY])
    child = delegate(gateway, root["token"], HELPER_AGENT, PAY)

    root_paid = call_tool(gateway, root["token"], PAY, pay_arguments(60))
    child_paid, child_over = call_tools(
        gateway,
        child["access_token"],
        [(PAY, pay_arguments(30)), (PAY, pay_arguments(20))],
    )
    root_over = call_tool(gateway, root["token"], PAY, pay_arguments(20))

    assert_allowed(root_paid)
    assert_allowed(child_paid)
    # 60 by the root and 30 by the delegated agent leave 10 for the tree.
    assert_refused(child_over, "deny", [PAYMENT_CAP])
    assert_refused(root_over, "deny", [PAYMENT_CAP])


def test_annotations_classify_browse(gateway: Gateway) -> None:
    task = gateway.start_task(tools=[BROWSE, SEND])
    before, browsed, after = call_tools(
        gateway,
        task["token"],
        [(SEND, SEND_ARGUMENTS), (BROWSE, PAGE_ARGUMENTS), (SEND, SEND_ARGUMENTS)],
    )

    assert_allowed(before)
    # A read-only tool is not held as a delete, and its open-world output
    # is untrusted content.
    assert_allowed(browsed)
    assert "Shipping rates" in result_text(browsed)
    assert_refused(after, "hold", [HOLD_SEND])


def test_unannotated_tool_held_as_delete(gateway: Gateway) -> None:
    task = gateway.start_task(tools=[WIPE])
    wiped = call_tool(gateway, task["token"], WIPE, {"path": "/srv/data/report.csv"})

    assert_refused(wiped, "hold", [HOLD_DELETE])
    assert decision_of(wiped)["approval_id"]


def test_policy_schema_declares_memory(gateway: Gateway) -> None:
    completed = gateway.warden("policy", "schema")
    assert completed.returncode == 0, completed.stderr

    schema = completed.stdout
    start = schema.index("type Memory = {")
    memory = schema[start : schema.index("};", start)]
    for class_name in ["read", "write", "delete", '"external-send"', "payment"]:
        assert f"{class_name}: __cedar::Long" in memory
    assert "sums_with_call: {" in memory
    assert "amount: __cedar::decimal" in memory


def test_unannotated_tool_is_external_send(gateway: Gateway) -> None:
    task = gateway.start_task(tools=[FETCH, WIPE])
    _, wiped = call_tools(
        gateway,
        task["token"],
        [(FETCH, PAGE_ARGUMENTS), (WIPE, {"path": "/srv/data/report.csv"})],
    )

    assert_refused(wiped, "hold", [HOLD_DELETE, HOLD_SEND])


def test_unannotated_tool_is_write(gateway: Gateway) -> None:
    task = gateway.start_task(tools=[NOTE, WIPE, BROWSE])
    results = call_tools(
        gateway,
        task["token"],
        [(NOTE, {"text": f"step {index}"}) for index in range(1, 4)]
        + [(WIPE, {"path": "/srv/data/report.csv"}), (BROWSE, PAGE_ARGUMENTS)],
    )

    wiped, browsed = results[3], results[4]
    assert wiped.is_error is True, result_text(wiped)
    # A plain forbid that matches beside a hold wins: the call is denied.
    assert decision_of(wiped)["decision"] == "deny"
    assert WRITE_BUDGET in decision_of(wiped)["policy_ids"]
    # A read-only tool is no write, so the write budget does not stop it.
    assert_allowed(browsed)


def test_refused_read_adds_no_label(gateway: Gateway) -> None:
    task = gateway.start_task(tools=[SEND])
    refused, sent = call_tools(
        gateway, task["token"], [(FETCH, PAGE_ARGUMENTS), (SEND, SEND_ARGUMENTS)]
    )

    assert_refused(refused, "deny", ["warden:task-scope"])
    assert_allowed(sent)


def test_precheck_holds_send_after_fetch(gateway: Gateway) -> None:
    task = gateway.start_task(tools=[FETCH, SEND])
    before = precheck(gateway, task["token"], {"tool": SEND, "arguments": SEND_ARGUMENTS})
    call_tool(gateway, task["token"], FETCH, PAGE_ARGUMENTS)
    after = precheck(gateway, task["token"], {"tool": SEND, "arguments": SEND_ARGUMENTS})

    assert before.status_code == 200, before.text
    assert before.json()["decision"] == "allow"
    assert after.status_code == 200, after.text
    assert after.json()["decision"] == "hold"
    assert after.json()["policy_ids"] == [HOLD_SEND]
    assert after.json()["reason"] == "this task has read untrusted content"


def test_precheck_opens_no_approval(gateway: Gateway) -> None:
    task = gateway.start_task(tools=[FETCH, SEND])
    call_tool(gateway, task["token"], FETCH, PAGE_ARGUMENTS)
    answer = precheck(gateway, task["token"], {"tool": SEND, "arguments": SEND_ARGUMENTS})

    assert answer.json()["decision"] == "hold"
    assert "approval_id" not in answer.json()
    task_approvals = [
        a for a in pending_approvals(gateway) if a["task_id"] == task["task_id"]
    ]
    assert task_approvals == []


def test_precheck_leaves_memory_unchanged(gateway: Gateway) -> None:
    task = gateway.start_task(tools=[PAY])
    question = {"tool": PAY, "arguments": pay_arguments(90)}
    first = precheck(gateway, task["token"], question)
    second = precheck(gateway, task["token"], question)
    paid = call_tool(gateway, task["token"], PAY, pay_arguments(90))
    after_payment = precheck(gateway, task["token"], {"tool": PAY, "arguments": pay_arguments(20)})

    assert first.json()["decision"] == "allow"
    assert second.json()["decision"] == "allow"
    assert_allowed(paid)
    # The pre-check reads the memory that the real payment updated.
    assert after_payment.json()["decision"] == "deny"
    assert after_payment.json()["policy_ids"] == [PAYMENT_CAP]


def test_precheck_recorded_in_trace(gateway: Gateway) -> None:
    task = gateway.start_task(tools=[PAY])
    arguments = pay_arguments(15)
    answer = precheck(gateway, task["token"], {"tool": PAY, "arguments": arguments})
    assert answer.status_code == 200, answer.text

    records = gateway.trace(task["task_id"], "precheck.decision", 1)
    [record] = records_of(records, "precheck.decision")
    assert record["target"] == PAY
    assert record["decision"] == "allow"
    assert record["detail"]["arguments"] == arguments
    assert records_of(records, "tool.decision") == []


@pytest.mark.parametrize(
    ("tool", "policy_id"),
    [
        pytest.param("t__nosuch", "warden:unknown-tool", id="unknown-tool"),
        pytest.param(NOTE, "warden:task-scope", id="out-of-scope"),
        pytest.param("other__fetch", "warden:task-scope", id="unknown-server"),
    ],
)
def test_precheck_denies_builtin(gateway: Gateway, tool: str, policy_id: str) -> None:
    task = gateway.start_task(tools=["t__nosuch", FETCH])
    answer = precheck(gateway, task["token"], {"tool": tool, "arguments": {}})

    assert answer.status_code == 200, answer.text
    assert answer.json()["decision"] == "deny"
    assert answer.json()["policy_ids"] == [policy_id]
    assert answer.json()["reason"]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"tool": "t__send", "arguments": ', id="truncated-json"),
        pytest.param(b'{"tool": "t__send", "tool": "t__fetch"}', id="duplicate-key"),
        pytest.param(b'{"tool": "t__send", "args": {}}', id="unknown-field"),
        pytest.param(b'{"tool": "t__send", "arguments": [1]}', id="arguments-not-object"),
        pytest.param(b'{"tool": "t__send", "route": "api"}', id="tool-and-route"),
        pytest.param(b"{}", id="neither-tool-nor-route"),
        pytest.param(b"[]", id="array"),
    ],
)
def test_precheck_malformed_body_400(gateway: Gateway, content: bytes) -> None:
    task = gateway.start_task(tools=[FETCH, SEND])
    answer = precheck_raw(gateway, task["token"], content)

    assert answer.status_code == 400, answer.text


def test_precheck_needs_task_token(gateway: Gateway) -> None:
    answer = httpx.post(
        f"{gateway.base_url}/v1/decisions",
        json={"tool": SEND, "arguments": SEND_ARGUMENTS},
        timeout=HTTP_TIMEOUT_SECONDS,
    )

    assert answer.status_code == 401, answer.text


def test_shadow_mode_lets_hold_through(shadow_gateway: Gateway) -> None:
    gateway = shadow_gateway
    task = gateway.start_task(tools=[FETCH, SEND])
    _, sent = call_tools(
        gateway, task["token"], [(FETCH, PAGE_ARGUMENTS), (SEND, SEND_ARGUMENTS)]
    )

    assert_allowed(sent)
    assert result_text(sent) == "sent 20 characters to customer@acme.test"

    records = gateway.trace(task["task_id"], "tool.decision", 2)
    _, send_record = records_of(records, "tool.decision")
    assert send_record["target"] == SEND
    assert send_record["decision"] == "allow"
    would = send_record["detail"]["shadow"]["would"]
    assert would["decision"] == "hold"
    assert would["policy_ids"] == [HOLD_SEND]
    assert records_of(records, "approval.requested") == []
    task_approvals = [
        a for a in pending_approvals(gateway) if a["task_id"] == task["task_id"]
    ]
    assert task_approvals == []


def test_shadow_mode_lets_deny_through(shadow_gateway: Gateway) -> None:
    gateway = shadow_gateway
    task = gateway.start_task(tools=[PAY])
    _, over = call_tools(
        gateway, task["token"], [(PAY, pay_arguments(90)), (PAY, pay_arguments(20))]
    )

    assert_allowed(over)
    records = gateway.trace(task["task_id"], "tool.decision", 2)
    _, over_record = records_of(records, "tool.decision")
    assert over_record["detail"]["shadow"]["would"]["decision"] == "deny"
    assert over_record["detail"]["shadow"]["would"]["policy_ids"] == [PAYMENT_CAP]


def test_shadow_mode_keeps_scope(shadow_gateway: Gateway) -> None:
    gateway = shadow_gateway
    task = gateway.start_task(tools=[FETCH])
    outside = call_tool(gateway, task["token"], SEND, SEND_ARGUMENTS)

    assert_refused(outside, "deny", ["warden:task-scope"])


def test_shadow_set_records_candidate(candidate_gateway: Gateway) -> None:
    gateway = candidate_gateway
    task = gateway.start_task(tools=[FETCH, NOTE])
    fetched, noted = call_tools(
        gateway, task["token"], [(FETCH, PAGE_ARGUMENTS), (NOTE, {"text": "rates read"})]
    )

    assert_allowed(fetched)
    assert "Shipping rates" in result_text(fetched)
    assert_allowed(noted)

    records = gateway.trace(task["task_id"], "tool.decision", 2)
    fetch_record, note_record = records_of(records, "tool.decision")
    assert fetch_record["decision"] == "allow"
    candidate = fetch_record["detail"]["shadow"]["candidate"]
    assert candidate["decision"] == "deny"
    assert candidate["policy_ids"] == [CANDIDATE_NO_FETCH]
    assert note_record["detail"]["shadow"]["candidate"]["decision"] == "allow"
    assert "would" not in fetch_record["detail"]["shadow"]


def test_precheck_unknown_route_404(gateway: Gateway) -> None:
    task = gateway.start_task(tools=[FETCH])
    answer = precheck(gateway, task["token"], {"route": "nosuchroute", "path": "/items"})

    assert answer.status_code == 404, answer.text
    assert '"nosuchroute"' in answer.json()["message"]
    assert "[http.NAME]" in answer.json()["message"]
