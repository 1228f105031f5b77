"""Language path: masked loss, exact accumulation, pretrain + resume + preemption, chat."""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.configs import pretrain as pretrain_presets
from aura.data.corpus import build_corpus
from aura.data.errors import DataError
from aura.data.tokenizer import TokenizerConfig, train_tokenizer
from aura.experiments.lm import pretrain as lm_loop
from aura.experiments.lm.step import build_lm_train_step, masked_next_token_loss
from aura.models.adapter import SelfTeachingAdapter
from aura.train import loop
from aura.train.optim import TrainState as LMState
from aura.train.optim import make_lm_optimizer


def tiny_model(vocab=300):
    c = pretrain_presets.get_config("tiny")
    c.model.vocab_size = vocab
    return c.model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    res = build_corpus(root / "corpus", max_docs=120)
    tok = train_tokenizer(root / "corpus" / "text", root / "tok", TokenizerConfig(vocab_size=400))
    return root, res, tok.model_path


def test_masked_loss_ignores_prompt_tokens():
    logits = jax.random.normal(jax.random.key(0), (2, 6, 11))
    tokens = jnp.array([[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]])
    mask = jnp.array([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0]], jnp.float32)
    total, count = masked_next_token_loss(logits, tokens, mask)
    # Naive: position t predicts token t+1, scored iff mask[t+1].
    logp = jax.nn.log_softmax(logits, -1)
    naive = -sum(
        float(logp[b, t, tokens[b, t + 1]])
        for b in range(2)
        for t in range(5)
        if mask[b, t + 1] == 1
    )
    np.testing.assert_allclose(total, naive, rtol=1e-5)
    assert float(count) == 5
    # Changing logits at positions whose next token is a prompt token changes nothing.
    changed = logits.at[0, 0:2].set(100.0)
    np.testing.assert_allclose(masked_next_token_loss(changed, tokens, mask)[0], total, rtol=1e-6)


def test_accumulation_equals_the_full_batch_gradient():
    model = SelfTeachingAdapter(tiny_model(vocab=50))
    tokens = jax.random.randint(jax.random.key(0), (4, 12), 0, 50)
    mask = (jax.random.uniform(jax.random.key(1), (4, 12)) > 0.4).astype(jnp.float32)
    params = model.init(jax.random.key(2), tokens[:1])["params"]
    opt, _ = make_lm_optimizer(1e-3, 10, warmup=1)
    step = jax.jit(build_lm_train_step(model, opt))
    state = LMState(params, opt.init(params), jnp.asarray(0))
    full, m_full = step(state, tokens[None], mask[None])  # A=1, B=4
    state = LMState(params, opt.init(params), jnp.asarray(0))
    acc, m_acc = step(state, tokens.reshape(2, 2, 12), mask.reshape(2, 2, 12))  # A=2, B=2
    np.testing.assert_allclose(m_full["loss"], m_acc["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(acc.params), strict=True):
        np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-4)


def pretrain_cfg(corpus, out, steps, **kw):
    root, res, model_path = corpus
    return lm_loop.PretrainConfig(
        jsonl=str(res.instruct),
        spm_model=model_path,
        ckpt_out=str(out),
        model=tiny_model(vocab=0),
        steps=steps,
        batch_size=4,
        max_len=32,
        log_every=1,
        save_every=2,
        tensorboard=False,
        **kw,
    )


def test_pretrain_resumes_and_chat_generates(corpus, tmp_path):
    out = tmp_path / "ckpt"
    r1 = lm_loop.pretrain(pretrain_cfg(corpus, out, 2), log=lambda s: None)
    assert r1["steps"] == 2 and np.isfinite(r1["final_loss"])
    logs = []
    r2 = lm_loop.pretrain(pretrain_cfg(corpus, out, 4), log=logs.append)
    assert r2["steps"] == 4 and any("resumed from step 2" in s for s in logs)

    from aura.serve.chat import Chat

    buf = io.StringIO()
    chat = Chat(str(out), corpus[2], out=buf)
    chat.answer("Explain json", max_len=64, gen_len=8, temperature=1.0, top_k=0, top_p=1.0, seed=0)
    assert len(buf.getvalue().strip()) > 0  # some text was streamed


def test_sigterm_saves_and_the_same_command_resumes(corpus, tmp_path, monkeypatch, stop_after):
    out = tmp_path / "ckpt"
    monkeypatch.setattr(loop, "PreemptionGuard", stop_after(2))
    part = lm_loop.pretrain(pretrain_cfg(corpus, out, 6), log=lambda s: None)
    assert part["interrupted"] and part["steps"] == 3
    monkeypatch.undo()
    done = lm_loop.pretrain(pretrain_cfg(corpus, out, 6), log=lambda s: None)
    assert done["steps"] == 6 and not done["interrupted"]


def test_vocab_mismatch_is_reported(corpus, tmp_path):
    cfg = pretrain_cfg(corpus, tmp_path / "x", 1)
    cfg.model.vocab_size = 123
    with pytest.raises(DataError, match="tokenizer has 400 pieces but the config's vocab_size"):
        lm_loop.pretrain(cfg, log=lambda s: None)
    assert not (tmp_path / "x").exists()  # nothing written before validation


def test_chat_on_missing_checkpoint_is_a_clear_error(corpus, tmp_path):
    from aura.serve.chat import Chat
    from aura.train.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="no checkpoint in"):
        Chat(str(tmp_path / "nothing"), corpus[2])


def test_on_save_hook_sees_every_checkpoint(corpus, tmp_path):
    calls = []
    lm_loop.pretrain(
        pretrain_cfg(corpus, tmp_path / "ckpt", 4),
        log=lambda s: None,
        on_save=lambda step, params: calls.append((step, params["core"]["experts"]["w1"].shape)),
    )
    assert [c[0] for c in calls] == [2, 4]  # save_every=2, and the final save
    assert calls[0][1][0] == 2  # the tiny preset's 2 experts, stacked
