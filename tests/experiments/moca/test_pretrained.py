"""Text-task options: a projected (MiniLM) token table, freezing it, label smoothing."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.configs import moca as presets
from aura.data.errors import DataError
from aura.experiments.moca import pretrained, steps
from aura.experiments.moca.experiment import (
    MocaExperiment,
    RunConfig,
    full_view,
    stored_view,
    task_model,
)
from aura.models.moca import MocaNet
from aura.models.sentence_encoder import default_encoder_dir
from aura.nn.moe import RoutingControls


def _text_setup(**model):
    c = presets.get_config("tiny")
    c.model.update(model)
    m = task_model(c, "textcls", vocab_size=50, num_labels=3)
    net = MocaNet(m)
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, 50, (4, 8)), jnp.int32)
    data = {"tokens": tokens, "labels": jnp.asarray([0, 1, 2, 1]), "weight": jnp.ones(4)}
    controls = RoutingControls.create(m.num_experts, top_k=m.top_k)
    return c, m, net, data, controls


@pytest.mark.parametrize("freeze", [False, True])
def test_projected_table_trains_unless_frozen(freeze):
    c, m, net, data, controls = _text_setup(embed_dim=12, freeze_embed=freeze)
    params = net.init(jax.random.key(0), data["tokens"])["params"]
    assert params["embed"]["embedding"].shape == (50, 12)
    assert params["embed_proj"]["kernel"].shape == (12, m.dim)
    opt = steps.make_optimizer(1e-2, 1, 10, 1.0, 0.1, steps.frozen_params(m))
    step = jax.jit(steps.build_train_step(net, opt, c.loss, "textcls"))
    state = steps.MocaState(params, opt.init(params))
    for _ in range(2):  # the first step's learning rate is 0 (warm-up)
        state, _ = step(state, data, controls)
    same = np.array_equal(state.params["embed"]["embedding"], params["embed"]["embedding"])
    assert same == freeze  # frozen: no update and no weight decay
    assert not np.array_equal(state.params["head"]["kernel"], params["head"]["kernel"])


def test_label_smoothing_raises_the_loss_of_a_confident_model():
    c, _, net, data, controls = _text_setup()
    params = net.init(jax.random.key(0), data["tokens"])["params"]
    params["head"]["bias"] = jnp.zeros(3).at[1].set(20.0)  # confidently predicts label 1
    data["labels"] = jnp.ones(4, jnp.int32)  # ... and is right
    loss = {}
    for smooth in (0.0, 0.2):
        c.loss.label_smoothing = smooth
        out = steps.classification_loss(net, params, data, controls, c.loss)[1]
        loss[smooth] = float(out["task_loss"])
    assert loss[0.0] < 0.01 and loss[0.2] > 1.0  # smoothing penalises over-confidence


def _minilm_available() -> bool:
    try:
        default_encoder_dir()
    except DataError:
        return False
    return True


@pytest.mark.skipif(not _minilm_available(), reason="all-MiniLM-L6-v2 package not installed")
def test_minilm_embeddings_tokenize_with_wordpiece_and_start_from_its_table(tmp_path):
    rows = [{"text": f"{w} socket number {i}", "label": w} for i in range(10)
            for w in ("network", "parser")]  # fmt: skip
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    c = presets.get_config("tiny")
    c.text.embeddings, c.model.freeze_embed = "minilm", True
    exp = MocaExperiment(RunConfig("textcls", str(tmp_path / "w"), c, data=str(path)))
    wp = pretrained.load_text_tokenizer(exp.text.tokenizer_path)
    assert exp.text.vocab_size == wp.get_piece_size() == 30522
    ids = wp.encode(["network socket number 3"])[0]
    assert 101 not in ids and 102 not in ids  # no [CLS]/[SEP]
    row = next(i for i, t in enumerate(exp.text.train.texts) if t.startswith("network"))
    assert exp.text.train_tokens[row, :4].tolist() == wp.encode([exp.text.train.texts[row]])[0]
    table = pretrained.minilm_word_table()
    params = exp.init_state().params
    np.testing.assert_array_equal(params["embed"]["embedding"], table)
    assert params["embed_proj"]["kernel"].shape == (384, c.model.dim)
    with pytest.raises(ValueError, match="embeddings"):
        c.text.embeddings = "glove"
        MocaExperiment(RunConfig("textcls", str(tmp_path / "w2"), c, data=str(path)))


def test_a_frozen_minilm_table_stays_out_of_checkpoints_and_comes_back():
    pytest.importorskip("all_minilm_l6_v2")
    table = pretrained.minilm_word_table()  # [V, 384]
    params = {"embed": {"embedding": jnp.zeros(table.shape)}, "head": {"kernel": jnp.ones(3)}}
    state = steps.MocaState(params, ())
    stored = stored_view(state, "minilm")
    assert set(stored.params) == {"head"}
    assert stored_view(state, None) is state and full_view(stored, None) is stored
    back = full_view(stored, "minilm")
    np.testing.assert_array_equal(back.params["embed"]["embedding"], table)
    np.testing.assert_array_equal(back.params["head"]["kernel"], params["head"]["kernel"])
