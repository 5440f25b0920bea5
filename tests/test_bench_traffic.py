"""`mlplane bench traffic`: trace reading and prompt synthesis, the command line, and one real run.

The end-to-end case runs every process for real (serve-sim, our gateway, the peer routers from
.venv) on a tiny slice of the Mooncake trace, and checks the JSON contract of issue 5 part 6.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mlplane.bench import harness, traffic
from mlplane.bench.plot import cdf_and_bars
from mlplane.bench.traces import BLOCK_TOKENS, PromptBuilder, TraceError, TraceRecord, load_trace, prompt_tokens
from mlplane.cli.main import main as mlplane_main

ROOT = Path(__file__).resolve().parent.parent
MOONCAKE = Path("/work/shared/data/mooncake-fast25/synthetic_trace.jsonl.gz")
AZURE_HEAD = ("TIMESTAMP,ContextTokens,GeneratedTokens\n"
              "2023-11-16 18:17:03.9799600,4808,10\n"
              "2023-11-16 18:17:04.0319600,3180,8\n"
              "2023-11-16 18:17:04.0781490,110,27")  # the first rows of AzureLLMInferenceTrace_code.csv


def _jsonl(tmp_path: Path, rows: list, name: str = "t.jsonl") -> Path:
    p = tmp_path / name
    text = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"
    if name.endswith(".gz"):
        p.write_bytes(gzip.compress(text.encode()))
    else:
        p.write_text(text)
    return p


def bench(*args: str) -> int:
    """``mlplane bench traffic ARGS`` in this process: the exit code."""
    return mlplane_main(["bench", "traffic", *args])


def _row(ts=0, inp=1000, out=5, ids=(0, 1)):
    return {"timestamp": ts, "input_length": inp, "output_length": out, "hash_ids": list(ids)}


# --- prompts -----------------------------------------------------------------------------------

def test_equal_hash_ids_give_equal_text_prefix_and_exact_token_counts():
    b = PromptBuilder()
    shared_a = TraceRecord(0, 0.0, 3 * BLOCK_TOKENS, 1, (7, 8, 9))
    shared_b = TraceRecord(1, 0.0, 2 * BLOCK_TOKENS + 100, 1, (7, 8, 42))
    other = TraceRecord(2, 0.0, 1000, 1, (5, 6))
    pa, pb, po = b.prompt(shared_a), b.prompt(shared_b), b.prompt(other)
    two_blocks = 2 * BLOCK_TOKENS * 4
    assert pa[:two_blocks] == pb[:two_blocks]
    assert pa[two_blocks:two_blocks + 400] != pb[two_blocks:two_blocks + 400]
    assert po[:4] != pa[:4]  # different first block: the text differs from the first word
    for rec, text in ((shared_a, pa), (shared_b, pb), (other, po)):
        assert prompt_tokens(text) == rec.input_tokens
        assert len(text.encode()) == 4 * rec.input_tokens
    # the same block id always becomes the same text, also from a fresh builder
    assert PromptBuilder().prompt(shared_b) == pb


def test_mooncake_trace_first_requests():
    recs = load_trace(MOONCAKE, 3)
    assert [(r.arrival_s, r.input_tokens, r.output_tokens) for r in recs] == [
        (0.0, 40160, 6), (0.0, 36640, 4), (0.04, 23769, 3)]  # the rows quoted in shared/data/README.md
    assert recs[0].hash_ids[:3] == (0, 1, 2) and len(recs[0].hash_ids) == math.ceil(40160 / 512)
    b = PromptBuilder()
    assert all(prompt_tokens(b.prompt(r)) == r.input_tokens for r in recs)


def test_gzip_and_plain_jsonl_read_the_same(tmp_path):
    rows = [_row(0), _row(1500, ids=(0, 3))]
    plain = load_trace(_jsonl(tmp_path, rows))
    gz = load_trace(_jsonl(tmp_path, rows, "t.jsonl.gz"))
    assert plain == gz
    assert [r.arrival_s for r in plain] == [0.0, 1.5]


def test_azure_csv_times_are_relative_and_prompts_unique(tmp_path):
    p = tmp_path / "azure.csv"
    p.write_text(AZURE_HEAD)  # no newline at the end, like the upstream file
    recs = load_trace(p)
    assert [(r.input_tokens, r.output_tokens) for r in recs] == [(4808, 10), (3180, 8), (110, 27)]
    assert recs[0].arrival_s == 0.0
    assert recs[1].arrival_s == pytest.approx(0.052, abs=1e-6)
    assert recs[2].arrival_s == pytest.approx(0.098189, abs=1e-6)
    assert all(r.hash_ids is None for r in recs)
    b = PromptBuilder()
    texts = [b.prompt(r) for r in recs]
    assert [prompt_tokens(t) for t in texts] == [4808, 3180, 110]
    assert texts[0][:400] != texts[1][:400]


@pytest.mark.parametrize("rows, message", [
    (['{"timestamp": 0, "input_length": 10'], "t.jsonl:1: not valid JSON"),
    ([_row(), {"timestamp": 5, "output_length": 3, "hash_ids": [0]}], "t.jsonl:2: field 'input_length' is missing"),
    ([_row(inp="many")], "t.jsonl:1: field 'input_length' must be an integer, got 'many'"),
    ([_row(out=0)], "t.jsonl:1: field 'output_length' must be >= 1, got 0"),
    ([_row(ts=-1)], "t.jsonl:1: field 'timestamp' must be a non-negative number of ms"),
    ([_row(ids=("a",))], "t.jsonl:1: field 'hash_ids' must be a list of integers"),
    ([_row(inp=1500, ids=(0, 1))], "t.jsonl:1: field 'hash_ids' has 2 ids, but input_length 1500 needs 3 blocks"),
    (["[1, 2]"], "t.jsonl:1: expected a JSON object, got list"),
])
def test_bad_mooncake_lines_name_file_line_and_field(tmp_path, rows, message):
    p = _jsonl(tmp_path, rows)
    with pytest.raises(TraceError) as e:
        load_trace(p)
    assert str(e.value).startswith(f"{tmp_path}/{message}")


@pytest.mark.parametrize("text, message", [
    ("TIMESTAMP,ContextTokens\n2023-11-16 18:17:03.9,5\n", "azure.csv:1: column 'GeneratedTokens' is missing"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9,5,x\n",
     "azure.csv:2: field 'GeneratedTokens' must be an integer, got 'x'"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,5,1\n", "azure.csv:2: field 'TIMESTAMP' is not a time"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9,5\n", "azure.csv:2: expected 3 columns, got 2"),
])
def test_bad_azure_rows_name_file_line_and_field(tmp_path, text, message):
    p = tmp_path / "azure.csv"
    p.write_text(text)
    with pytest.raises(TraceError) as e:
        load_trace(p)
    assert str(e.value).startswith(f"{tmp_path}/{message}")


def test_missing_and_empty_trace_files(tmp_path):
    with pytest.raises(TraceError, match=r"nope\.jsonl: no such file"):
        load_trace(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(TraceError, match=r"empty\.jsonl: the trace is empty"):
        load_trace(tmp_path / "empty.jsonl")


# --- command line ------------------------------------------------------------------------------

def test_cli_errors_exit_1_with_a_message(tmp_path, capsys):
    assert bench("--trace", str(tmp_path / "missing.jsonl"), "--routers", "mlplane:default") == 1
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    assert bench("--trace", str(MOONCAKE), "--routers", "mlplane:default,nginx") == 1
    err = capsys.readouterr().err
    assert "--routers: unknown router 'nginx'" in err and "sglang-router" in err
    assert bench() == 1
    assert "--trace FILE is required" in capsys.readouterr().err
    assert bench("--trace", str(MOONCAKE), "--requests", "0") == 1
    assert "--requests must be at least 1" in capsys.readouterr().err


def test_missing_peer_binary_is_an_error_row_not_a_crash(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(harness, "peer_binary", lambda name: None)
    trace = _jsonl(tmp_path, [_row(i * 10) for i in range(4)])
    assert bench("--trace", str(trace), "--routers", "vllm-router", "-o", "json") == 0
    (row,) = json.loads(capsys.readouterr().out)["results"]
    assert row["router"] == "vllm-router" and row["failed"] == 4 and row["completed"] == 0
    assert "vllm-router is not installed" in row["error"]


def test_plot_is_svg_with_a_line_per_router():
    svg = cdf_and_bars({"a": [0.1, 0.2, 0.3], "b": [0.5, 1.0]}, ["a", "b"], {"p50": [0.2, 0.75], "p99": [0.3, 1.0]},
                       "TTFT CDF", "s", "TTFT", "s")
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f".//{ns}polyline")) == 2
    assert len([r for r in root.findall(f".//{ns}rect") if r.get("height") and r.get("width") != "10"]) >= 4


def test_goal_rows_compare_default_with_the_better_peer_and_round_robin():
    def row(name, p90):
        return {**traffic.error_result(name, 1, "x"), "ttft_p90_s": p90}

    rows = traffic.goal_rows([row("mlplane:round-robin", 4.0), row("mlplane:default", 1.0),
                              row("sglang-router", 2.0), row("vllm-router", 1.25)])
    assert rows == ["| TTFT p90, mlplane:default vs the better peer | 1.000 s | 1.250 s (vllm-router) = 0.80x "
                    "| <= 0.8x |",
                    "| TTFT p90, mlplane:default vs round-robin | 1.000 s | 4.000 s = 0.25x | <= 0.5x |"]
    assert traffic.goal_rows([row("sglang-router", 2.0)]) == []


# --- end to end --------------------------------------------------------------------------------

def _bench_process(*args: str, timeout: float) -> dict:
    """``mlplane bench traffic ARGS`` (with ``-o json``) as its own process: the JSON it printed.
    Killed at ``timeout``; the servers and routers it started then end with it (see the next test)."""
    proc = subprocess.run([sys.executable, "-m", "mlplane.cli.main", "bench", "traffic", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")  # not reaped yet
    except FileNotFoundError:
        return True


def test_processes_the_benchmark_starts_end_when_it_is_killed(tmp_path):
    script = ("import sys, time; from pathlib import Path; from mlplane.bench.harness import Proc; "
              "p = Proc('child', ['sleep', '60'], Path(sys.argv[1])); print(p.p.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    child = None
    try:
        child = int(parent.stdout.readline())
        assert not _gone(child)
        parent.kill()  # no chance to clean up
        parent.wait(10)
        for _ in range(500):
            if _gone(child):
                break
            time.sleep(0.01)
        assert _gone(child)
    finally:
        parent.kill()
        parent.wait(10)
        parent.stdout.close()
        if child is not None and not _gone(child):
            os.kill(child, signal.SIGKILL)


def test_end_to_end_json_contract(tmp_path):
    routers = ["mlplane:round-robin", "mlplane:default", "vllm-router", "sglang-router"]
    out = tmp_path / "r.json"
    # requests 3900..3919 of the trace share prefixes (30% of their blocks) and all fit the context
    doc = _bench_process("--trace", str(MOONCAKE), "--skip", "3900", "--requests", "20", "--servers", "2",
                         "--rate-scale", "20", "--time-scale", "0.01", "--routers", ",".join(routers),
                         "--request-timeout", "20", "-o", "json", "--json-out", str(out), timeout=110)
    assert list(doc) == ["results"]
    assert [r["router"] for r in doc["results"]] == routers
    for r in doc["results"]:
        assert list(r)[:9] == list(traffic.RESULT_KEYS), r
        assert "error" not in r, r
        assert r["completed"] + r["failed"] == 20 and r["completed"] == 20, r
        for k in ("ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "e2e_p50_s", "throughput_rps", "prefix_hit_rate"):
            assert isinstance(r[k], float), (k, r)
        assert 0 < r["ttft_p50_s"] <= r["ttft_p90_s"] <= r["ttft_p99_s"] <= r["e2e_p50_s"] * 20
        assert 0.0 <= r["prefix_hit_rate"] <= 1.0
        assert sum(r["requests_per_server"]) == 20
    assert max(r["prefix_hit_rate"] for r in doc["results"]) > 0  # the simulators' counters were read
    saved = json.loads(out.read_text())
    assert saved["results"] == doc["results"] and saved["settings"]["requests"] == 20
    ET.fromstring(out.with_suffix(".svg").read_text())  # the plot next to the JSON


def test_overhead_mode_json(tmp_path):
    doc = _bench_process("--overhead", "--routers", "mlplane:round-robin", "--rate", "100", "--duration", "0.5",
                         "--concurrency", "4", "-o", "json", timeout=60)
    assert list(doc) == ["overhead"]
    direct, ours = doc["overhead"]
    assert direct["router"] == "direct" and ours["router"] == "mlplane:round-robin"
    for row in (direct, ours):
        assert {"router", "added_p50_ms", "added_p99_ms", "max_rps"} <= set(row)
        assert isinstance(row["added_p50_ms"], float) and isinstance(row["added_p99_ms"], float)
        assert row["max_rps"] > 0 and row["failed"] == 0
