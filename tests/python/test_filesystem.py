"""The reference filesystem server behind Warden, driven by the official MCP client.

Warden spawns @modelcontextprotocol/server-filesystem over stdio with
`<tmp>/data` as the server's own allowed root. The policies permit the read
tools inside `<tmp>/data/allowed` only and permit no write, so every test
here checks a decision that Warden makes, not one the server would make.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

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

# Tool names of server-filesystem 2026.8.31, as its tools/list returns them.
FILESYSTEM_TOOLS = {
    "read_file",
    "read_text_file",
    "read_media_file",
    "read_multiple_files",
    "write_file",
    "edit_file",
    "create_directory",
    "list_directory",
    "list_directory_with_sizes",
    "directory_tree",
    "move_file",
    "search_files",
    "get_file_info",
    "list_allowed_directories",
}

# Tools that read and take one `path` argument.
READ_TOOLS = [
    "read_file",
    "read_text_file",
    "read_media_file",
    "list_directory",
    "list_directory_with_sizes",
    "directory_tree",
    "search_files",
    "get_file_info",
]

ALLOWED_TEXT = "allowed-file-contents\n"
PRIVATE_TEXT = "private-file-contents\n"
OUTSIDE_TEXT = "outside-file-contents\n"


def filesystem_policies(allowed_dir: Path) -> dict[str, str]:
    """Return policies that permit reads inside `allowed_dir` and nothing else."""
    actions = ", ".join(f'Warden::Action::"fs__{tool}"' for tool in READ_TOOLS)
    return {
        "tasks.cedar": (
            '@id("start-task")\n'
            'permit (principal, action == Warden::Action::"start_task", resource);\n'
            '@id("list-tools")\n'
            'permit (principal, action == Warden::Action::"list_tools", resource);\n'
        ),
        "files.cedar": (
            '@id("fs-read-allowed")\n'
            f"permit (principal, action in [{actions}], resource)\n"
            f'when {{ context.arguments.path in Warden::Path::"{allowed_dir}" }};\n'
        ),
    }


def make_tree(root: Path) -> Path:
    """Create data/allowed/a.txt, data/allowed_private/secret.txt and outside.txt."""
    data = root / "data"
    (data / "allowed").mkdir(parents=True)
    (data / "allowed_private").mkdir()
    (data / "allowed" / "a.txt").write_text(ALLOWED_TEXT)
    (data / "allowed_private" / "secret.txt").write_text(PRIVATE_TEXT)
    (root / "outside.txt").write_text(OUTSIDE_TEXT)
    return data


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return the `data` directory served by the filesystem server."""
    return make_tree(tmp_path_factory.mktemp("files"))


@pytest.fixture(scope="module")
def gateway(start_gateway: StartGateway, tree: Path) -> Gateway:
    """Return a Warden whose only upstream is the filesystem server."""
    upstreams = {"fs": {"command": str(FILESYSTEM_SERVER), "args": [str(tree)]}}
    return start_gateway(upstreams, filesystem_policies(tree / "allowed"))


def call(
    gateway: Gateway, mode: str, calls: list[tuple[str, dict[str, Any]]]
) -> tuple[str, list[Any]]:
    """Start a task, make `calls` on /mcp in one client, and return the task id and results."""
    task = gateway.start_task()

    async def scenario() -> list[Any]:
        async with connect(gateway.mcp_url(), task["token"], mode) as client:
            return [
                await client.call_tool(name, arguments) for name, arguments in calls
            ]

    return task["task_id"], run(scenario())


def assert_denied(result: Any, tool: str) -> None:
    """Assert that `result` is Warden's refusal of a call to `tool`."""
    assert result.is_error is True
    assert decision_of(result)["decision"] == "deny"
    assert result_text(result).startswith(f"Warden denied this call to {tool}:")


@pytest.mark.parametrize("mode", MODES)
def test_tools_list_shows_namespaced_names(gateway: Gateway, mode: str) -> None:
    task = gateway.start_task()

    async def scenario() -> list[str]:
        async with connect(gateway.mcp_url(), task["token"], mode) as client:
            return [tool.name for tool in (await client.list_tools()).tools]

    names = run(scenario())
    assert set(names) == {f"fs__{tool}" for tool in FILESYSTEM_TOOLS}


@pytest.mark.parametrize("mode", MODES)
def test_allowed_read_returns_content(gateway: Gateway, tree: Path, mode: str) -> None:
    paths = [
        tree / "allowed" / "a.txt",
        f"{tree}//allowed/./a.txt",
        f"{tree}/allowed_private/../allowed/a.txt",
    ]
    _, results = call(
        gateway, mode, [("fs__read_text_file", {"path": str(path)}) for path in paths]
    )
    for path, result in zip(paths, results, strict=True):
        assert result.is_error is False, f"{path}: {result_text(result)}"
        assert result_text(result) == ALLOWED_TEXT, path


@pytest.mark.parametrize("mode", MODES)
def test_allowed_list_directory(gateway: Gateway, tree: Path, mode: str) -> None:
    _, [result] = call(
        gateway, mode, [("fs__list_directory", {"path": str(tree / "allowed")})]
    )
    assert result.is_error is False, result_text(result)
    assert result_text(result) == "[FILE] a.txt"


@pytest.mark.parametrize("mode", MODES)
def test_prefix_sibling_read_denied(gateway: Gateway, tree: Path, mode: str) -> None:
    path = tree / "allowed_private" / "secret.txt"
    _, [result] = call(gateway, mode, [("fs__read_text_file", {"path": str(path)})])
    assert_denied(result, "fs__read_text_file")
    assert decision_of(result)["policy_ids"] == []
    assert PRIVATE_TEXT.strip() not in result_text(result)


@pytest.mark.parametrize("mode", MODES)
def test_outside_read_denied(gateway: Gateway, tree: Path, mode: str) -> None:
    path = tree.parent / "outside.txt"
    _, [result] = call(gateway, mode, [("fs__read_text_file", {"path": str(path)})])
    assert_denied(result, "fs__read_text_file")
    assert OUTSIDE_TEXT.strip() not in result_text(result)


@pytest.mark.parametrize("mode", MODES)
def test_dotdot_escape_denied(gateway: Gateway, tree: Path, mode: str) -> None:
    calls = [
        (
            "fs__read_text_file",
            {"path": f"{tree}/allowed/../allowed_private/secret.txt"},
        ),
        (
            "fs__read_text_file",
            {"path": f"{tree}/allowed/./../allowed_private/secret.txt"},
        ),
        (
            "fs__read_text_file",
            {"path": f"{tree}//allowed//..//allowed_private/secret.txt"},
        ),
        ("fs__read_text_file", {"path": f"{tree}/allowed/../../outside.txt"}),
        ("fs__read_text_file", {"path": "allowed/../allowed_private/secret.txt"}),
        ("fs__list_directory", {"path": f"{tree}/allowed/.."}),
        ("fs__directory_tree", {"path": f"{tree}/allowed/../.."}),
    ]
    _, results = call(gateway, mode, calls)
    for (tool, arguments), result in zip(calls, results, strict=True):
        case = f"{tool} {arguments['path']}"
        assert result.is_error is True, f"{case}: {result_text(result)}"
        assert decision_of(result)["decision"] == "deny", case
        assert PRIVATE_TEXT.strip() not in result_text(result), case


def test_backslash_spelling_cannot_escape(gateway: Gateway, tree: Path) -> None:
    # On a POSIX upstream a backslash is part of a file name, so the server
    # reads data/<x\..\allowed\y>/../allowed_private, that is
    # data/allowed_private. Warden must decide on that same reading.
    path = f"{tree}/x\\..\\allowed\\y/../allowed_private/secret.txt"
    _, [result] = call(gateway, "legacy", [("fs__read_text_file", {"path": path})])
    assert PRIVATE_TEXT.strip() not in result_text(result)
    assert_denied(result, "fs__read_text_file")


@pytest.mark.parametrize("mode", MODES)
def test_writes_denied_and_not_performed(
    gateway: Gateway, tree: Path, mode: str
) -> None:
    new_file = tree / "allowed" / f"new-{mode}.txt"
    new_directory = tree / "allowed" / f"dir-{mode}"
    moved = tree / "allowed" / f"moved-{mode}.txt"
    calls = [
        ("fs__write_file", {"path": str(new_file), "content": "written"}),
        ("fs__create_directory", {"path": str(new_directory)}),
        (
            "fs__move_file",
            {"source": str(tree / "allowed" / "a.txt"), "destination": str(moved)},
        ),
        (
            "fs__edit_file",
            {
                "path": str(tree / "allowed" / "a.txt"),
                "edits": [{"oldText": "allowed", "newText": "edited"}],
            },
        ),
    ]
    _, results = call(gateway, mode, calls)
    for (tool, _), result in zip(calls, results, strict=True):
        assert_denied(result, tool)
    assert not new_file.exists()
    assert not new_directory.exists()
    assert not moved.exists()
    assert (tree / "allowed" / "a.txt").read_text() == ALLOWED_TEXT


@pytest.mark.parametrize("mode", MODES)
def test_trace_lists_every_decision(gateway: Gateway, tree: Path, mode: str) -> None:
    calls = [
        ("fs__read_text_file", {"path": str(tree / "allowed" / "a.txt")}),
        ("fs__read_text_file", {"path": str(tree / "allowed_private" / "secret.txt")}),
        ("fs__read_file", {"path": str(tree.parent / "outside.txt")}),
        (
            "fs__write_file",
            {"path": str(tree / "allowed" / "trace.txt"), "content": "x"},
        ),
        ("fs__list_directory", {"path": str(tree / "allowed")}),
    ]
    task_id, _ = call(gateway, mode, calls)

    records = gateway.trace(task_id, "tool.result", 2)
    decisions = [record for record in records if record["kind"] == "tool.decision"]
    results = [record for record in records if record["kind"] == "tool.result"]

    assert records[0]["kind"] == "task.start"
    assert [(record["target"], record["decision"]) for record in decisions] == [
        ("fs__read_text_file", "allow"),
        ("fs__read_text_file", "deny"),
        ("fs__read_file", "deny"),
        ("fs__write_file", "deny"),
        ("fs__list_directory", "allow"),
    ]
    assert [record["detail"]["arguments"] for record in decisions] == [
        arguments for _, arguments in calls
    ]
    assert decisions[0]["policy_ids"] == ["fs-read-allowed"]
    assert [record["target"] for record in results] == [
        "fs__read_text_file",
        "fs__list_directory",
    ]
    assert all(record["task_id"] == task_id for record in records)


@pytest.mark.parametrize("mode", MODES)
def test_task_scope_hides_and_denies_tools(
    gateway: Gateway, tree: Path, mode: str
) -> None:
    task = gateway.start_task(tools=["fs__read_text_file"])

    async def scenario() -> tuple[list[str], Any, Any]:
        async with connect(gateway.mcp_url(), task["token"], mode) as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            in_scope = await client.call_tool(
                "fs__read_text_file", {"path": str(tree / "allowed" / "a.txt")}
            )
            out_of_scope = await client.call_tool(
                "fs__read_file", {"path": str(tree / "allowed" / "a.txt")}
            )
            return names, in_scope, out_of_scope

    names, in_scope, out_of_scope = run(scenario())
    assert names == ["fs__read_text_file"]
    assert result_text(in_scope) == ALLOWED_TEXT
    assert_denied(out_of_scope, "fs__read_file")
    assert decision_of(out_of_scope)["policy_ids"] == ["warden:task-scope"]
