"""Two upstreams at once: the filesystem server over stdio and the everything
server over Streamable HTTP, both behind one Warden.

The everything server (@modelcontextprotocol/server-everything) also offers
resources and prompts, so resources/read and prompts/get are checked here in
both directions: permitted by policy, then forbidden by policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import MCPError

from conftest import (
    FILESYSTEM_SERVER,
    MODES,
    Gateway,
    StartGateway,
    connect,
    decision_of,
    requires_node,
    result_text,
    run,
)

pytestmark = requires_node

# Error code of a refused resources/read or prompts/get: these results have
# no isError field, so Warden answers with a JSON-RPC error.
INVALID_REQUEST = -32600

DYNAMIC_RESOURCE = "demo://resource/dynamic/text/1"
STATIC_RESOURCE = "demo://resource/static/document/features.md"
ALLOWED_TEXT = "allowed-file-contents\n"

BASE_POLICIES = {
    "tasks.cedar": (
        '@id("start-task")\n'
        'permit (principal, action == Warden::Action::"start_task", resource);\n'
        '@id("list-tools")\n'
        'permit (principal, action == Warden::Action::"list_tools", resource);\n'
    ),
    "everything.cedar": (
        '@id("everything-echo")\n'
        'permit (principal, action == Warden::Action::"everything__echo", resource);\n'
        '@id("everything-sum")\n'
        'permit (principal, action == Warden::Action::"everything__get-sum", resource);\n'
        '@id("everything-resources")\n'
        'permit (principal, action == Warden::Action::"read_resource", resource in Warden::Server::"everything");\n'
        '@id("everything-prompts")\n'
        'permit (principal, action == Warden::Action::"get_prompt", resource in Warden::Server::"everything");\n'
    ),
}

FORBID_POLICIES = {
    "forbid.cedar": (
        '@id("no-resources")\n'
        'forbid (principal, action == Warden::Action::"read_resource", resource);\n'
        '@id("no-prompts")\n'
        'forbid (principal, action == Warden::Action::"get_prompt", resource);\n'
    ),
}


def files_policy(allowed_dir: Path) -> str:
    """Return a policy permitting read_text_file inside `allowed_dir`."""
    return (
        '@id("fs-read-allowed")\n'
        'permit (principal, action == Warden::Action::"fs__read_text_file", resource)\n'
        f'when {{ context.arguments.path in Warden::Path::"{allowed_dir}" }};\n'
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a `data` directory holding allowed/a.txt."""
    data = tmp_path_factory.mktemp("files") / "data"
    (data / "allowed").mkdir(parents=True)
    (data / "allowed" / "a.txt").write_text(ALLOWED_TEXT)
    return data


def upstreams(tree: Path, everything_url: str) -> dict[str, dict[str, Any]]:
    """Return the upstream table: `fs` over stdio and `everything` over HTTP."""
    return {
        "fs": {"command": str(FILESYSTEM_SERVER), "args": [str(tree)]},
        "everything": {"url": everything_url},
    }


@pytest.fixture(scope="module")
def gateway(start_gateway: StartGateway, tree: Path, everything_server: str) -> Gateway:
    """Return a Warden that permits echo, get-sum, resources, prompts and reads in allowed/."""
    policies = {**BASE_POLICIES, "files.cedar": files_policy(tree / "allowed")}
    return start_gateway(upstreams(tree, everything_server), policies)


@pytest.fixture(scope="module")
def forbidding_gateway(
    start_gateway: StartGateway, tree: Path, everything_server: str
) -> Gateway:
    """Return a Warden with the same permits plus forbids on resources and prompts."""
    policies = {
        **BASE_POLICIES,
        "files.cedar": files_policy(tree / "allowed"),
        **FORBID_POLICIES,
    }
    return start_gateway(upstreams(tree, everything_server), policies)


@pytest.mark.parametrize("mode", MODES)
def test_both_upstreams_in_one_task(gateway: Gateway, tree: Path, mode: str) -> None:
    task = gateway.start_task()

    async def scenario() -> tuple[list[str], Any, Any]:
        async with connect(gateway.mcp_url(), task["token"], mode) as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            echo = await client.call_tool(
                "everything__echo", {"message": "hello through warden"}
            )
            read = await client.call_tool(
                "fs__read_text_file", {"path": str(tree / "allowed" / "a.txt")}
            )
            return names, echo, read

    names, echo, read = run(scenario())
    assert "everything__echo" in names
    assert "fs__read_text_file" in names
    assert all(name.startswith(("everything__", "fs__")) for name in names), names
    assert echo.is_error is False, result_text(echo)
    assert result_text(echo) == "Echo: hello through warden"
    assert read.is_error is False, result_text(read)
    assert result_text(read) == ALLOWED_TEXT


@pytest.mark.parametrize("mode", MODES)
def test_server_endpoint_uses_own_names(gateway: Gateway, mode: str) -> None:
    task = gateway.start_task()

    async def scenario() -> tuple[list[str], Any, Any]:
        async with connect(
            gateway.mcp_url("everything"), task["token"], mode
        ) as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            echo = await client.call_tool("echo", {"message": "one server"})
            total = await client.call_tool("get-sum", {"a": 2, "b": 3})
            return names, echo, total

    names, echo, total = run(scenario())
    assert "echo" in names
    assert "get-sum" in names
    assert not any("__" in name for name in names), names
    assert "read_text_file" not in names
    assert result_text(echo) == "Echo: one server"
    assert total.is_error is False, result_text(total)
    assert result_text(total) == "The sum of 2 and 3 is 5."


@pytest.mark.parametrize("mode", MODES)
def test_unpermitted_tool_denied(gateway: Gateway, mode: str) -> None:
    task = gateway.start_task()

    async def scenario() -> tuple[Any, Any]:
        async with connect(gateway.mcp_url(), task["token"], mode) as all_servers:
            qualified = await all_servers.call_tool("everything__get-env", {})
        async with connect(
            gateway.mcp_url("everything"), task["token"], mode
        ) as one_server:
            own_name = await one_server.call_tool("get-env", {})
        return qualified, own_name

    for result in run(scenario()):
        assert result.is_error is True
        assert decision_of(result)["decision"] == "deny"
        assert decision_of(result)["task_id"] == task["task_id"]
        assert result_text(result).startswith(
            "Warden denied this call to everything__get-env:"
        )
        assert "PATH" not in result_text(result)


@pytest.mark.parametrize("mode", MODES)
def test_resource_read_allowed(gateway: Gateway, mode: str) -> None:
    task = gateway.start_task()

    async def scenario() -> tuple[Any, Any]:
        async with connect(
            gateway.mcp_url("everything"), task["token"], mode
        ) as one_server:
            dynamic = await one_server.read_resource(DYNAMIC_RESOURCE)
        async with connect(gateway.mcp_url(), task["token"], mode) as all_servers:
            static = await all_servers.read_resource(STATIC_RESOURCE)
        return dynamic, static

    dynamic, static = run(scenario())
    assert [str(content.uri) for content in dynamic.contents] == [DYNAMIC_RESOURCE]
    assert "Resource 1" in dynamic.contents[0].text
    assert [str(content.uri) for content in static.contents] == [STATIC_RESOURCE]
    assert static.contents[0].text.strip() != ""


@pytest.mark.parametrize("mode", MODES)
def test_prompt_get_allowed(gateway: Gateway, mode: str) -> None:
    task = gateway.start_task()

    async def scenario() -> tuple[list[str], Any, Any]:
        async with connect(
            gateway.mcp_url("everything"), task["token"], mode
        ) as one_server:
            names = [
                prompt.name for prompt in (await one_server.list_prompts()).prompts
            ]
            simple = await one_server.get_prompt("simple-prompt")
        async with connect(gateway.mcp_url(), task["token"], mode) as all_servers:
            with_arguments = await all_servers.get_prompt(
                "everything__args-prompt", {"city": "Lisbon"}
            )
        return names, simple, with_arguments

    names, simple, with_arguments = run(scenario())
    assert "simple-prompt" in names
    assert len(simple.messages) >= 1
    assert simple.messages[0].content.text.strip() != ""
    assert "Lisbon" in with_arguments.messages[0].content.text


@pytest.mark.parametrize("mode", MODES)
def test_forbid_refuses_resource_and_prompt(
    forbidding_gateway: Gateway, mode: str
) -> None:
    task = forbidding_gateway.start_task()

    async def scenario() -> tuple[MCPError, MCPError]:
        async with connect(
            forbidding_gateway.mcp_url("everything"), task["token"], mode
        ) as client:
            with pytest.raises(MCPError) as resource_error:
                await client.read_resource(DYNAMIC_RESOURCE)
            with pytest.raises(MCPError) as prompt_error:
                await client.get_prompt("simple-prompt")
            echo = await client.call_tool("echo", {"message": "still allowed"})
            assert result_text(echo) == "Echo: still allowed"
        return resource_error.value, prompt_error.value

    resource_error, prompt_error = run(scenario())
    assert resource_error.code == INVALID_REQUEST
    assert resource_error.message.startswith(
        f"Warden refused resources/read of {DYNAMIC_RESOURCE}:"
    )
    assert resource_error.data["dev.warden/decision"]["decision"] == "deny"
    assert resource_error.data["dev.warden/decision"]["policy_ids"] == ["no-resources"]
    assert prompt_error.code == INVALID_REQUEST
    assert prompt_error.message.startswith(
        "Warden refused prompts/get of everything__simple-prompt:"
    )
    assert prompt_error.data["dev.warden/decision"]["decision"] == "deny"
    assert prompt_error.data["dev.warden/decision"]["policy_ids"] == ["no-prompts"]

    records = forbidding_gateway.trace(task["task_id"], "prompt.decision", 1)
    decided = [
        (record["kind"], record["target"], record["decision"]) for record in records
    ]
    assert ("resource.decision", DYNAMIC_RESOURCE, "deny") in decided
    assert ("prompt.decision", "everything__simple-prompt", "deny") in decided
    assert not any(
        record["kind"] in ("resource.result", "prompt.result") for record in records
    )
