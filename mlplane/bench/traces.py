"""Request traces for `mlplane bench traffic`: Mooncake JSONL and Azure LLM CSV, turned into prompts.

Mooncake (kvcache-ai/Mooncake FAST25-release/traces): one JSON object a line with ``timestamp``
(ms), ``input_length`` and ``output_length`` (tokens) and ``hash_ids``, one id per 512-token block
of the prompt; equal ids are equal blocks. Azure (Azure/AzurePublicDataset, Splitwise): CSV
``TIMESTAMP,ContextTokens,GeneratedTokens`` with wall-clock timestamps and no prefix information.
Either may be gzip-compressed (``.gz``).

Prompts are synthetic text in which a token is 4 bytes (4 ASCII characters), the same count the
simulator and the router use: a block id always becomes the same 2,048 characters, so requests
that share leading hash ids share a leading text prefix, and a prompt is exactly
``input_length`` tokens long. Azure prompts are unique per request.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

BLOCK_TOKENS = 512  # Mooncake's hash-id block size
BYTES_PER_TOKEN = 4  # the simulator's and the router's token estimate
_ALPHABET = b"abcdefghijklmnopqrstuvwxyz"  # words are 3 letters and a space (= 1 token)
_LETTER_OF_BYTE = bytes(_ALPHABET[b % 26] for b in range(256))


class TraceError(Exception):
    """A trace file that cannot be read: the message names the file, line and field."""


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One request of a trace; ``arrival_s`` is relative to the first request of the file."""

    index: int  # position in the file (0-based, after sorting by arrival)
    arrival_s: float
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...] | None  # Mooncake block ids; None when the trace has no prefix information


# --- reading -----------------------------------------------------------------------------------

def _open_text(path: Path) -> io.TextIOBase:
    if not path.exists():
        raise TraceError(f"{path}: no such file")
    if not path.is_file():
        raise TraceError(f"{path}: not a file")
    raw = path.open("rb")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8")
    return io.TextIOWrapper(raw, encoding="utf-8")


def _format(path: Path, first_line: str) -> str:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if name.endswith((".jsonl", ".json")) or first_line.lstrip().startswith("{"):
        return "mooncake"
    if name.endswith(".csv") or first_line.upper().startswith("TIMESTAMP"):
        return "azure"
    raise TraceError(f"{path}: unknown trace format (expected Mooncake JSONL or an Azure LLM CSV)")


def load_trace(path: str | Path, limit: int | None = None, skip: int = 0) -> list[TraceRecord]:
    """``limit`` requests (by arrival) after the first ``skip`` of a Mooncake JSONL or Azure CSV trace."""
    path = Path(path)
    try:
        with _open_text(path) as f:
            lines = f.read().splitlines()
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as e:
        raise TraceError(f"{path}: cannot read: {e}") from None
    first = next((ln for ln in lines if ln.strip()), "")
    if not first:
        raise TraceError(f"{path}: the trace is empty")
    records = _mooncake(path, lines) if _format(path, first) == "mooncake" else _azure(path, lines)
    if not records:
        raise TraceError(f"{path}: the trace has no requests")
    records.sort(key=lambda r: r[0])
    t0 = records[0][0]
    out = [TraceRecord(i, t - t0, inp, outp, ids) for i, (t, inp, outp, ids) in enumerate(records)]
    return out[skip:skip + limit] if limit is not None else out[skip:]


def _count(where: str, name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TraceError(f"{where}: field {name!r} must be an integer, got {value!r}")
    if value < minimum:
        raise TraceError(f"{where}: field {name!r} must be >= {minimum}, got {value}")
    return value


def _mooncake(path: Path, lines: list[str]) -> list[tuple]:
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise TraceError(f"{where}: not valid JSON: {e.msg}") from None
        if not isinstance(obj, dict):
            raise TraceError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        for key in ("timestamp", "input_length", "output_length", "hash_ids"):
            if key not in obj:
                raise TraceError(f"{where}: field {key!r} is missing")
        ts = obj["timestamp"]
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or ts < 0 or not math.isfinite(ts):
            raise TraceError(f"{where}: field 'timestamp' must be a non-negative number of ms, got {ts!r}")
        inp = _count(where, "input_length", obj["input_length"], 1)
        outp = _count(where, "output_length", obj["output_length"], 1)
        ids = obj["hash_ids"]
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise TraceError(f"{where}: field 'hash_ids' must be a list of integers")
        need = math.ceil(inp / BLOCK_TOKENS)
        if len(ids) < need:
            raise TraceError(f"{where}: field 'hash_ids' has {len(ids)} ids, but input_length {inp} "
                             f"needs {need} blocks of {BLOCK_TOKENS} tokens")
        out.append((ts / 1000.0, inp, outp, tuple(ids[:need])))
    return out


def _parse_time(where: str, text: str) -> float:
    s = text.strip()
    # Azure writes 7 fractional digits; datetime takes at most 6.
    head, dot, frac = s.partition(".")
    try:
        base = datetime.fromisoformat(head)
    except ValueError:
        raise TraceError(f"{where}: field 'TIMESTAMP' is not a time (YYYY-MM-DD HH:MM:SS.fff): {text!r}") from None
    if dot and not frac.isdigit():
        raise TraceError(f"{where}: field 'TIMESTAMP' is not a time (YYYY-MM-DD HH:MM:SS.fff): {text!r}")
    return base.timestamp() + (float("0." + frac) if dot else 0.0)


def _azure(path: Path, lines: list[str]) -> list[tuple]:
    rows = csv.reader(lines)
    header = next(rows, None)
    cols = [c.strip() for c in header or []]
    for key in ("TIMESTAMP", "ContextTokens", "GeneratedTokens"):
        if key not in cols:
            raise TraceError(f"{path}:1: column {key!r} is missing from the header (found {cols})")
    it, ic, ig = cols.index("TIMESTAMP"), cols.index("ContextTokens"), cols.index("GeneratedTokens")
    out = []
    for n, row in enumerate(rows, 2):
        if not row or not any(c.strip() for c in row):
            continue
        where = f"{path}:{n}"
        if len(row) < len(cols):
            raise TraceError(f"{where}: expected {len(cols)} columns, got {len(row)}")
        vals = []
        for name, i in (("ContextTokens", ic), ("GeneratedTokens", ig)):
            try:
                vals.append(int(row[i]))
            except ValueError:
                raise TraceError(f"{where}: field {name!r} must be an integer, got {row[i]!r}") from None
            if vals[-1] < 1:
                raise TraceError(f"{where}: field {name!r} must be >= 1, got {vals[-1]}")
        out.append((_parse_time(where, row[it]), vals[0], vals[1], None))
    return out


# --- prompts -----------------------------------------------------------------------------------

def _block(key: bytes) -> str:
    """BLOCK_TOKENS tokens of text derived from ``key``: 3-letter words each followed by a space."""
    letters = bytearray()
    need = BLOCK_TOKENS * 3
    counter = 0
    while len(letters) < need:
        letters += hashlib.blake2b(key + counter.to_bytes(4, "little"), digest_size=64).digest()
        counter += 1
    letters = bytes(letters[:need]).translate(_LETTER_OF_BYTE)
    out = bytearray(b" " * (BLOCK_TOKENS * BYTES_PER_TOKEN))
    for k in range(3):
        out[k::BYTES_PER_TOKEN] = letters[k::3]
    return out.decode("ascii")


class PromptBuilder:
    """Builds prompt text for trace records, caching the text of each block id."""

    def __init__(self) -> None:
        self._blocks: dict[int, str] = {}

    def block(self, block_id: int) -> str:
        text = self._blocks.get(block_id)
        if text is None:
            text = self._blocks[block_id] = _block(b"mooncake:%d" % block_id)
        return text

    def prompt(self, record: TraceRecord) -> str:
        """Exactly ``record.input_tokens`` tokens (4 characters each) of text."""
        n = record.input_tokens
        blocks = math.ceil(n / BLOCK_TOKENS)
        if record.hash_ids is not None:
            parts = [self.block(i) for i in record.hash_ids[:blocks]]
        else:
            parts = [_block(b"unique:%d:%d" % (record.index, b)) for b in range(blocks)]
        text = "".join(parts)[: n * BYTES_PER_TOKEN]
        return text


def prompt_tokens(text: str) -> int:
    """The simulator's and the router's token count of ``text``: ceil(UTF-8 bytes / 4)."""
    return -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN)
