#!/usr/bin/env bash
# Replays one AgentDojo suite (banking or slack) through Warden with the
# default policy pack and writes the harness's JSON summary and per-run
# calls to target/agentdojo/SUITE.json.
#
#   DOJO_HARNESS=/path/to/dojo.py examples/agentdojo/run.sh banking [HARNESS OPTION...]
#
# Extra options go to `dojo.py run` (for example --limit 3 or
# --benign-only). Environment:
#   DOJO_HARNESS  path of the replay harness dojo.py (required)
#   DOJO_VENV     its Python virtual environment, created with pinned
#                 packages when missing (default target/dojo-venv)
#   WARDEN_BIN    the Warden binary (default target/debug/warden, built
#                 with `cargo build -p warden` when missing)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

# Ports of each suite: Warden's listener and the tools server that the
# harness starts, as written in SUITE.toml.
suite_ports() {
    case "$1" in
    banking) echo "8930 8931" ;;
    slack) echo "8932 8933" ;;
    *)
        echo "unknown suite '$1'; use banking or slack" >&2
        return 2
        ;;
    esac
}

# Internal mode for --svid-command: waits until Warden is ready, then
# prints a development JWT-SVID for the replaying agent.
if [[ "${1:-}" == "--svid" ]]; then
    suite=$2
    read -r warden_port _ < <(suite_ports "$suite")
    for _ in $(seq 1 120); do
        if curl -fsS -o /dev/null "http://127.0.0.1:$warden_port/readyz"; then
            exec "${WARDEN_BIN:-$root/target/debug/warden}" identity issue \
                spiffe://dojo.test/agent/assistant --config "$here/$suite.toml"
        fi
        sleep 0.5
    done
    echo "timed out after 60 s waiting for Warden's /readyz on 127.0.0.1:$warden_port; see target/agentdojo/$suite-warden.log" >&2
    exit 1
fi

suite=${1:?usage: run.sh banking|slack [HARNESS OPTION...]}
shift
read -r warden_port tools_port < <(suite_ports "$suite")
harness=${DOJO_HARNESS:?set DOJO_HARNESS to the path of the replay harness dojo.py}
venv=${DOJO_VENV:-$root/target/dojo-venv}
warden=${WARDEN_BIN:-$root/target/debug/warden}
out=$root/target/agentdojo
mkdir -p "$out"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating $venv with agentdojo 0.1.35" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet agentdojo==0.1.35 mcp==2.3.0 uvicorn==0.55.0
fi
if [[ ! -x "$warden" ]]; then
    (cd "$root" && cargo build -p warden)
fi

pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# The harness serves the suite's tools itself and first replays every task
# against them directly (the baseline). Warden fails to start while its
# upstream is down, so it starts once the tools port accepts connections.
# The harness runs the --svid command, which waits for Warden, only after
# its baseline.
"$venv/bin/python" "$harness" run --suite "$suite" --port "$tools_port" \
    --target warden --warden "http://127.0.0.1:$warden_port" \
    --svid-command "$here/run.sh --svid $suite" \
    --admin-token "$(cat "$here/admin-token")" \
    --json "$out/$suite.json" "$@" &
harness_pid=$!
pids+=("$harness_pid")

listening=false
for _ in $(seq 1 120); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$tools_port") 2>/dev/null; then
        listening=true
        break
    fi
    if ! kill -0 "$harness_pid" 2>/dev/null; then
        status=0
        wait "$harness_pid" || status=$?
        echo "the harness exited with status $status before its tools server listened on 127.0.0.1:$tools_port" >&2
        exit 1
    fi
    sleep 0.5
done
if [[ $listening != true ]]; then
    echo "timed out after 60 s waiting for the harness's tools server on 127.0.0.1:$tools_port" >&2
    exit 1
fi

"$warden" serve --config "$here/$suite.toml" >"$out/$suite-warden.log" 2>&1 &
pids+=("$!")

status=0
wait "$harness_pid" || status=$?
if [[ $status -eq 0 ]]; then
    echo "summary and runs written to $out/$suite.json" >&2
else
    echo "the harness failed with status $status; Warden's log is $out/$suite-warden.log" >&2
fi
exit "$status"
