"""Memory-aware chat as a library: the memories' routing bias and the prompt's memory block."""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.memory.session import Recall
from aura.models.adapter import SelfTeachingAdapter, adapter_config
from aura.models.memory_head import MemoryGateHead, memory_weights
from aura.models.zone_heads import ThalamusGateHead
from aura.nn.moe import RoutingControls
from aura.serve.memory_chat import MemoryChat, memory_json


@pytest.fixture(scope="module")
def adapter():
    c = adapter_config()
    c.update(vocab_size=64, dim=32, expert_hidden=64, num_layers=1, num_experts=4)
    model = SelfTeachingAdapter(c)
    params = nn.meta.unbox(model.init(jax.random.key(1), jnp.zeros((1, 8), jnp.int32))["params"])
    gate = params["core"]["router"]["expert_gate"]  # a decisive gate: routing depends on tokens
    gate["kernel"] = gate["kernel"] * 40.0
    return model, params


def _routing(model, params, tokens, bias=None):
    controls = None if bias is None else RoutingControls.create(4, bias=bias)
    r = model.apply(
        {"params": params}, jnp.asarray([tokens]), None, controls,
        method=SelfTeachingAdapter.gate_weights,
    )  # fmt: skip
    return np.asarray(r.probs).mean(axis=0)  # [T, E] -> [E]


def test_gate_head_matches_a_naive_reference_and_moves_the_prompts_routing(adapter):
    model, params = adapter
    memories, scores = [[3, 9, 12, 40], [7, 7, 21]], [0.9, -0.2]  # a negative score weighs 0
    bias, info = MemoryGateHead(model, params)(memories, scores)
    assert info["head"] == "gate" and info["weights"] == [1.0, 0.0]
    want = np.zeros(4)  # naive: each memory alone, unpadded, its tokens' mean log probability
    for ids, w in zip(memories, memory_weights(scores), strict=True):
        r = model.apply(
            {"params": params}, jnp.asarray([ids]), method=SelfTeachingAdapter.gate_weights
        )
        logp = np.log(np.maximum(np.asarray(r.probs).reshape(len(ids), 4), 1e-9)).mean(0)
        want += w * (logp - logp.mean())
    np.testing.assert_allclose(bias, want, atol=1e-5)
    assert np.ptp(bias) > 0.1  # the memory prefers some experts clearly
    prompt = [5, 6, 7, 8, 9]
    before, after = _routing(model, params, prompt), _routing(model, params, prompt, bias)
    assert not np.allclose(before, after, atol=1e-3)  # the bias changes the gate
    favoured = int(np.argmax(bias))
    assert after[favoured] > before[favoured]  # towards the experts the memory would use


def test_thalamus_head_routes_the_pooled_memory_embedding(adapter):
    model, params = adapter
    emb = np.asarray(params["embed"]["embedding"])  # [V, D]
    centroids = np.stack([emb[3], emb[30], emb[50], emb[60]])  # expert e's region of token space
    thal = {"centroids": centroids, "scale": np.float32(0.5), "offset": np.zeros(4, np.float32)}
    bias, info = MemoryGateHead(model, params, thalamus=thal)([[3, 3, 3]], [1.0])
    want = ThalamusGateHead(4, 32).apply(
        {"params": thal}, emb[[3]], method=ThalamusGateHead.prompt_bias
    )
    assert info["head"] == "thalamus"
    np.testing.assert_allclose(bias, np.asarray(want), atol=1e-5)
    assert int(np.argmax(bias)) == 0  # a memory made of token 3 pulls towards expert 0
    zeros, none = MemoryGateHead(model, params, thalamus=thal)([], [])
    assert none["head"] == "none" and not zeros.any()


def test_memory_block_keeps_whole_memories_that_fit(adapter, capsys):
    model, params = adapter
    words = lambda text: text.split()  # one token per word
    chat = types.SimpleNamespace(
        model=model, params=params, heads={},
        fmt=types.SimpleNamespace(encode_prompt=lambda text: words(text) + ["<INST>", "<RESP>"]),
    )  # fmt: skip
    bot = MemoryChat(chat, memory=None, k=3)
    recalls = [Recall(i, f"fact number {i} is here", 1.0 - i / 10, {"dense": 0.5}, "index")
               for i in range(3)]  # fmt: skip
    block, kept = bot.context(recalls, "where is it", max_len=100)
    assert kept == 3 and block.startswith("Memories:\n- fact number 0")
    block, kept = bot.context(recalls, "where is it", max_len=19)
    # "Memories:" + 2 x 6 words + 3 prompt words + 2 symbols = 18 <= 19; a third needs 24
    assert kept == 2 and "number 2" not in block
    assert "1 of 3 recalled memories left out" in capsys.readouterr().err
    assert bot.context(recalls, "where is it", max_len=4) == ("", 0)
    assert memory_json(recalls[0]) == {
        "id": 0,
        "text": "fact number 0 is here",
        "score": 1.0,
        "components": {"dense": 0.5},
    }
