"""The wide-and-deep text classifier: the wide path's logits, its own rate, restore at inference."""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aura.configs import moca as presets
from aura.experiments.moca import steps
from aura.experiments.moca.classifier import Classifier
from aura.experiments.moca.experiment import MocaExperiment, RunConfig, task_model, train
from aura.models.moca import MocaNet
from aura.nn.moe import RoutingControls
from tests.commands.conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import ablate_moca  # noqa: E402

F = 64


def _setup(**model):
    c = presets.get_config("tiny")
    c.model.update(wide_buckets=F, **model)
    m = task_model(c, "textcls", vocab_size=50, num_labels=3)
    rng = np.random.default_rng(0)
    data = {
        "tokens": jnp.asarray(rng.integers(1, 50, (4, 8)), jnp.int32),
        "labels": jnp.asarray([0, 1, 2, 1]),
        "weight": jnp.ones(4),
        "wide_ids": jnp.asarray(rng.integers(0, F, (4, 5)), jnp.int32),
        "wide_vals": jnp.asarray(rng.random((4, 5)), jnp.float32),
    }
    return c, m, MocaNet(m), data, RoutingControls.create(m.num_experts, top_k=m.top_k)


def _logits(net, params, data, controls):
    t, wide = data["tokens"], (data["wide_ids"], data["wide_vals"])
    return net.apply({"params": params}, t, None, controls, t != 0, None, None, wide)[0]


def test_wide_logits_add_to_the_deep_ones_and_deep_scale_zero_leaves_only_them():
    _, _, net, data, controls = _setup()
    _, _, off, _, _ = _setup(deep_scale=0.0)
    params = jax.jit(net.init)(jax.random.key(0), data["tokens"])["params"]
    assert params["wide"]["kernel"].shape == (F, 3)
    kernel = jax.random.normal(jax.random.key(1), (F, 3))
    trained = {**params, "wide": {"kernel": kernel}}

    @jax.jit  # one compiled call, not op by op
    def three(p0, p):  # the wide kernel of p0 is its zero initialisation
        return tuple(_logits(n, q, data, controls) for n, q in ((net, p0), (net, p), (off, p)))

    deep, both, wide_only = three(params, trained)
    wide = jnp.einsum("bk,bkl->bl", data["wide_vals"], kernel[data["wide_ids"]])  # [B, L]
    np.testing.assert_allclose(both, deep + wide, atol=1e-5)
    np.testing.assert_allclose(wide_only, wide, atol=1e-5)


def test_the_wide_path_trains_at_its_own_rate():
    m = task_model(presets.get_config("tiny"), "textcls", vocab_size=50, num_labels=3)
    m.wide_buckets = F
    params = {"wide": {"kernel": jnp.zeros((F, 3))}, "head": {"kernel": jnp.zeros((4, 3))}}
    grads = jax.tree.map(jnp.ones_like, params)
    opt = steps.make_optimizer(1e-4, 1, 10, 1.0, 0.0, (), steps.own_rates(m, 0.5, 0.0))
    state = opt.init(params)
    for _ in range(2):  # the first step's learning rate is 0 (warm-up)
        updates, state = opt.update(grads, state, params)
    moved = jax.tree.map(lambda u: float(jnp.max(jnp.abs(u))), updates)
    np.testing.assert_allclose(moved["wide"]["kernel"], 0.5, rtol=1e-3)  # Adam: |step| = lr
    np.testing.assert_allclose(moved["head"]["kernel"], 1e-4, rtol=1e-3)
    m.wide_buckets = 0
    assert steps.own_rates(m, 0.5, 0.0) == {}


def test_text_ablation_variants_turn_off_one_path_of_the_textcls_preset():
    base = presets.get_config("textcls")
    assert base.model.wide_buckets == 1 << 18 and base.model.deep_scale == 1.0
    assert ablate_moca.variant_config(base, "wide_only").model.deep_scale == 0.0
    assert ablate_moca.variant_config(base, "moca_only").model.wide_buckets == 0
    assert base.model.wide_buckets == 1 << 18  # untouched


def _jsonl(path, n: int = 40) -> None:
    words = {"math": "sum product root square number integer divide angle cosine",
             "files": "path directory open read write file folder disk rename"}  # fmt: skip
    with open(path, "w") as f:
        for i in range(n):
            label = "math" if i % 2 == 0 else "files"
            w = words[label].split()
            text = " ".join(w[(i + j) % len(w)] for j in range(5))
            f.write(json.dumps({"text": f"{text} item {i}", "label": label}) + "\n")


@pytest.mark.slow  # a whole (tiny) run, then a restore
def test_classify_rebuilds_the_wide_features_and_predicts_as_at_eval(tmp_path):
    data, work = tmp_path / "d.jsonl", tmp_path / "run"
    _jsonl(data)
    c = presets.get_config("tiny")
    c.model.wide_buckets, c.text.wide_top_k, c.steps = 256, 8, 4
    cfg = RunConfig("textcls", str(work), c, data=str(data), tensorboard=False)
    result = train(cfg, log=lambda *_: None)
    exp = MocaExperiment(cfg, log=lambda *_: None)  # the same split and features again
    clf = Classifier(str(work))
    eval_texts = list(exp.text.eval.texts)
    for a, b in zip(clf.wide.transform(eval_texts, clf.wide_top_k), exp.text.eval_wide,
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    assert np.any(clf.params["wide"]["kernel"])  # trained
    preds = [p["label"] for p in clf.predict(eval_texts)]
    acc = np.mean([p == t for p, t in zip(preds, exp.text.eval.labels, strict=True)])
    assert acc == result["accuracy"]
