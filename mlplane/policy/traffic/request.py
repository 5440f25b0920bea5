"""Parse an OpenAI completions / chat-completions body into the picker's ``InferenceRequest``.

The prompt text kept for prefix hashing is the completion prompt, or the chat messages flattened in
order as ``role`` + content text, so a shared system prompt and the earlier turns of a conversation
form a shared prefix of the later turns. Token counts are estimated the way llm-d's tokenizer-free
``estimate`` mode does: 4 bytes of UTF-8 per token.
"""

from __future__ import annotations

from typing import Collection, Mapping

import orjson

from mlplane.policy.traffic.plugins import parse_duration
from mlplane.policy.traffic.types import DEFAULT_FLOW, InferenceRequest

COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"
PATHS = (COMPLETIONS, CHAT)

BYTES_PER_TOKEN = 4

# Request headers naming the fairness flow (llm-d name first, then the older GIE alias).
FAIRNESS_HEADERS = ("x-llm-d-inference-fairness-id", "x-gateway-inference-fairness-id")
# Request headers naming the InferenceObjective (resolved to a priority by the gateway).
OBJECTIVE_HEADERS = ("x-llm-d-inference-objective", "x-gateway-inference-objective")
# How long this request may wait in the flow-control queue (a Go duration, e.g. "1500ms"; llm-d).
TTL_HEADER = "x-llm-d-inference-ttl"


class BadRequest(ValueError):
    """The body is not a request we can route; the message names the field (answered with 400)."""


def estimate_tokens(text: str) -> int:
    """Tokens in ``text`` at 4 UTF-8 bytes per token, rounded up."""
    n = len(text) if text.isascii() else len(text.encode())
    return (n + BYTES_PER_TOKEN - 1) // BYTES_PER_TOKEN


def header(headers: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    """The first non-empty value among ``names`` (lower-case header names)."""
    for name in names:
        value = headers.get(name)
        if value:
            return value
    return None


def parse_request(path: str, body: bytes, headers: Mapping[str, str], *, request_id: str,
                  base_models: Collection[str] | None = None) -> InferenceRequest:
    """Parse ``body`` sent to ``path``. ``headers`` have lower-case names. When ``base_models`` is given,
    a ``model`` outside it names a LoRA adapter (``request.lora``)."""
    if path not in PATHS:
        raise BadRequest(f"path {path!r} is not an inference endpoint (want {' or '.join(PATHS)})")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"body is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise BadRequest(f"body must be a JSON object, not {_kind(doc)}")

    model = doc.get("model")
    if model is None or model == "":
        raise BadRequest("'model' is required")
    if not isinstance(model, str):
        raise BadRequest(f"'model' must be a string, not {_kind(model)}")

    max_tokens = None
    for field in ("max_tokens", "max_completion_tokens"):
        value = doc.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"'{field}' must be an integer, not {_kind(value)}")
        if value < 1:
            raise BadRequest(f"'{field}' must be at least 1, got {value}")
        max_tokens = value if max_tokens is None else min(max_tokens, value)

    stream = doc.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequest(f"'stream' must be a boolean, not {_kind(stream)}")

    if path == COMPLETIONS:
        prompt, tokens = _completion_prompt(doc)
    else:
        prompt = _chat_prompt(doc)
        tokens = estimate_tokens(prompt)

    lora = None
    if base_models is not None and model not in base_models:
        lora = model
    request = InferenceRequest(
        id=request_id, model=model, prompt=prompt, prompt_tokens=tokens, max_tokens=max_tokens,
        stream=stream, lora=lora, headers=headers, size=len(body),
        fairness_id=header(headers, FAIRNESS_HEADERS) or DEFAULT_FLOW)
    ttl = headers.get(TTL_HEADER)
    if ttl:
        try:
            request.state["ttl"] = parse_duration(ttl)
        except ValueError as e:
            raise BadRequest(f"header {TTL_HEADER}: {e}") from None
    salt = doc.get("cache_salt")
    if salt is not None:
        if not isinstance(salt, str):
            raise BadRequest(f"'cache_salt' must be a string, not {_kind(salt)}")
        request.state["cache_salt"] = salt
    return request


def _completion_prompt(doc: dict) -> tuple[str, int]:
    """(hashing text, estimated tokens) of a completions ``prompt``: a string, a list of strings, a list
    of token ids, or a list of token-id lists. Token ids are kept as text "id id id …" for hashing and
    counted one token each."""
    if "prompt" not in doc or doc["prompt"] is None:
        raise BadRequest("'prompt' is required")
    prompt = doc["prompt"]
    if isinstance(prompt, str):
        return prompt, estimate_tokens(prompt)
    if not isinstance(prompt, list):
        raise BadRequest(f"'prompt' must be a string or a list, not {_kind(prompt)}")
    if not prompt:
        raise BadRequest("'prompt' must not be an empty list")
    if all(isinstance(p, str) for p in prompt):
        text = "\n".join(prompt)
        return text, sum(estimate_tokens(p) for p in prompt)
    if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
        return " ".join(map(str, prompt)), len(prompt)
    if all(isinstance(p, list) for p in prompt):
        for i, ids in enumerate(prompt):
            if not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
                raise BadRequest(f"'prompt[{i}]' must be a list of token ids (integers)")
        return "\n".join(" ".join(map(str, ids)) for ids in prompt), sum(len(ids) for ids in prompt)
    raise BadRequest("'prompt' must be a string, a list of strings, a list of token ids "
                     "or a list of token-id lists")


def _chat_prompt(doc: dict) -> str:
    """The chat messages flattened in order as ``<|role|>\\n<content>\\n`` plus the generation prompt
    ``<|assistant|>\\n`` (the same text the simulator's tokenizer sees, so token counts and block
    boundaries agree; a turn's text is a prefix of the next turn's)."""
    messages = doc.get("messages")
    if messages is None:
        raise BadRequest("'messages' is required")
    if not isinstance(messages, list):
        raise BadRequest(f"'messages' must be a list, not {_kind(messages)}")
    if not messages:
        raise BadRequest("'messages' must not be empty")
    parts: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"'messages[{i}]' must be an object, not {_kind(message)}")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise BadRequest(f"'messages[{i}].role' must be a non-empty string")
        parts.append(f"<|{role}|>\n")
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if isinstance(part, str):
                    parts.append(part)
                    continue
                if not isinstance(part, dict):
                    raise BadRequest(f"'messages[{i}].content[{j}]' must be an object, not {_kind(part)}")
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
                elif text is not None:
                    raise BadRequest(f"'messages[{i}].content[{j}].text' must be a string, not {_kind(text)}")
                else:  # a non-text part (image, audio …): its kind and reference keep prompts distinct
                    kind = part.get("type")
                    ref = part.get(kind) if isinstance(kind, str) else None
                    if isinstance(ref, dict):
                        ref = ref.get("url") or ref.get("data")
                    parts.append(f"<{kind}:{ref}>" if isinstance(ref, str) else f"<{kind}>")
        elif content is not None:
            raise BadRequest(f"'messages[{i}].content' must be a string or a list of parts, not {_kind(content)}")
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                fn = call["function"]
                parts.append(f"<tool_call:{fn.get('name')}:{fn.get('arguments')}>")
        parts.append("\n")
    parts.append("<|assistant|>\n")  # the generation prompt: the next turn's assistant message starts with it
    return "".join(parts)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
