"""Parsing OpenAI completions / chat bodies for the endpoint picker, and the prefix hashes of a prompt."""

import orjson
import pytest

from mlplane.policy.traffic.prefix import PrefixIndex, block_hashes, chain_seed, request_hashes
from mlplane.policy.traffic.request import BadRequest, estimate_tokens, parse_request


def parse(path, doc, headers=None, **kw):
    body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return parse_request(path, body, headers or {}, request_id="r1", **kw)


def test_completion_prompt_and_token_estimate():
    r = parse("/v1/completions", {"model": "llama", "prompt": "a" * 10, "max_tokens": 7, "stream": True})
    assert (r.model, r.prompt, r.prompt_tokens, r.max_tokens, r.stream) == ("llama", "a" * 10, 3, 7, True)
    assert r.lora is None and r.priority == 0 and r.fairness_id == "default-flow"
    assert r.size == len(orjson.dumps({"model": "llama", "prompt": "a" * 10, "max_tokens": 7, "stream": True}))


def test_token_estimate_counts_utf8_bytes():
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("日本") == 2  # 6 bytes


def test_completion_prompt_forms():
    assert parse("/v1/completions", {"model": "m", "prompt": [1, 2, 3]}).prompt_tokens == 3
    assert parse("/v1/completions", {"model": "m", "prompt": [[1, 2], [3]]}).prompt_tokens == 3
    r = parse("/v1/completions", {"model": "m", "prompt": ["abcd", "efgh"]})
    assert r.prompt_tokens == 2 and r.prompt.startswith("abcd")


def test_chat_turns_share_a_prefix_with_the_next_turn():
    system = {"role": "system", "content": "You are a helpful assistant. " * 20}
    turn1 = [system, {"role": "user", "content": "What is KV caching?"}]
    turn2 = turn1 + [{"role": "assistant", "content": "It keeps attention keys and values."},
                     {"role": "user", "content": [{"type": "text", "text": "And prefix caching?"}]}]
    p1 = parse("/v1/chat/completions", {"model": "m", "messages": turn1}).prompt
    p2 = parse("/v1/chat/completions", {"model": "m", "messages": turn2}).prompt
    assert p2.startswith(p1)
    assert "system" in p1 and "And prefix caching?" in p2
    # the same messages always flatten the same way
    assert parse("/v1/chat/completions", {"model": "m", "messages": turn2}).prompt == p2


def test_chat_flattens_like_a_chat_template():
    r = parse("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hello"}]})
    assert r.prompt == "<|user|>\nhello\n<|assistant|>\n"
    assert r.prompt_tokens == 8  # 29 bytes


def test_chat_roles_keep_prompts_apart():
    a = parse("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}).prompt
    b = parse("/v1/chat/completions", {"model": "m", "messages": [{"role": "system", "content": "hi"}]}).prompt
    assert a != b


@pytest.mark.parametrize("path, body, message", [
    ("/v1/completions", b"{not json", "body is not valid JSON"),
    ("/v1/completions", b"[1]", "body must be a JSON object"),
    ("/v1/completions", {"prompt": "x"}, "'model' is required"),
    ("/v1/completions", {"model": 3, "prompt": "x"}, "'model' must be a string"),
    ("/v1/completions", {"model": "m"}, "'prompt' is required"),
    ("/v1/completions", {"model": "m", "prompt": {"a": 1}}, "'prompt' must be a string or a list"),
    ("/v1/completions", {"model": "m", "prompt": "x", "max_tokens": 0}, "'max_tokens' must be at least 1"),
    ("/v1/completions", {"model": "m", "prompt": "x", "max_tokens": "5"}, "'max_tokens' must be an integer"),
    ("/v1/completions", {"model": "m", "prompt": "x", "max_completion_tokens": 1.5},
     "'max_completion_tokens' must be an integer"),
    ("/v1/completions", {"model": "m", "prompt": "x", "stream": "yes"}, "'stream' must be a boolean"),
    ("/v1/chat/completions", {"model": "m"}, "'messages' is required"),
    ("/v1/chat/completions", {"model": "m", "messages": "hi"}, "'messages' must be a list"),
    ("/v1/chat/completions", {"model": "m", "messages": [{"content": "hi"}]}, "'messages[0].role'"),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": 5}]},
     "'messages[0].content' must be a string or a list"),
    ("/v1/embeddings", {"model": "m"}, "not an inference endpoint"),
])
def test_bad_requests_name_the_field(path, body, message):
    with pytest.raises(BadRequest) as err:
        parse(path, body)
    assert message in str(err.value)


def test_lora_adapter_is_a_model_outside_the_base_models():
    r = parse("/v1/completions", {"model": "sql-lora", "prompt": "x"}, base_models={"llama"})
    assert r.lora == "sql-lora"
    assert parse("/v1/completions", {"model": "llama", "prompt": "x"}, base_models={"llama"}).lora is None


def test_fairness_id_from_header_or_its_alias():
    r = parse("/v1/completions", {"model": "m", "prompt": "x"}, {"x-llm-d-inference-fairness-id": "tenant-a"})
    assert r.fairness_id == "tenant-a"
    r = parse("/v1/completions", {"model": "m", "prompt": "x"}, {"x-gateway-inference-fairness-id": "tenant-b"})
    assert r.fairness_id == "tenant-b"


def test_queue_ttl_header():
    r = parse("/v1/completions", {"model": "m", "prompt": "x"}, {"x-llm-d-inference-ttl": "1500ms"})
    assert r.state["ttl"] == 1.5
    with pytest.raises(BadRequest, match="header x-llm-d-inference-ttl: 'soon' is not a duration"):
        parse("/v1/completions", {"model": "m", "prompt": "x"}, {"x-llm-d-inference-ttl": "soon"})


# ---------------------------------------------------------------- prefix hashes and index

def test_block_hashes_are_chained_and_model_scoped():
    block = 4 * 16
    a, b = "a" * block, "b" * block
    seed = chain_seed("llama")
    h_ab = block_hashes(a + b, seed, block_tokens=16)
    h_bb = block_hashes(b + b, seed, block_tokens=16)
    assert len(h_ab) == 2
    assert h_ab[1] != h_bb[1]  # the same second block after a different first block is a different hash
    assert block_hashes(a + b + "tail", seed, block_tokens=16) == h_ab  # partial blocks are not hashed
    assert block_hashes(a + b, chain_seed("other-model"), block_tokens=16)[0] != h_ab[0]
    assert len(block_hashes(a * 10, seed, block_tokens=16, max_blocks=3)) == 3


def test_request_hashes_are_computed_once_per_request():
    r = parse("/v1/completions", {"model": "m", "prompt": "x" * 1024})
    first = request_hashes(r, 64)
    assert len(first) == 4 and request_hashes(r, 64) is first


def test_index_matches_consecutive_blocks_per_endpoint():
    idx = PrefixIndex()
    idx.insert("e1", [1, 2, 3, 4])
    idx.insert("e2", [1, 2, 9])
    assert idx.match([1, 2, 3, 4, 5]) == {"e1": 4, "e2": 2}
    assert idx.match([7, 1, 2]) == {}
    idx.remove_endpoint("e1")
    assert idx.match([1, 2, 3]) == {"e2": 2}


def test_index_lru_evicts_a_prompts_tail_first():
    idx = PrefixIndex(capacity=4)
    idx.insert("e1", [1, 2, 3])
    idx.insert("e1", [7, 8])  # over capacity: the oldest block goes, which is the tail of [1, 2, 3]
    assert idx.size("e1") == 4
    assert idx.match([1, 2, 3]) == {"e1": 2}
    assert idx.match([7, 8]) == {"e1": 2}
    idx.set_capacity("e1", 2)
    assert idx.size("e1") == 2 and idx.match([7, 8]) == {"e1": 2}
