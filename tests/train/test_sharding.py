"""Sharded pretraining on 8 simulated CPU devices: meshes agree with one device, checkpoints move
between meshes, parameters get the shardings their logical names ask for."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from aura.commands.distributed import distributed_kwargs
from aura.configs import pretrain as pretrain_presets
from aura.data.corpus import build_corpus
from aura.data.tokenizer import TokenizerConfig, train_tokenizer
from aura.experiments.lm import pretrain as lm_loop
from aura.models.adapter import SelfTeachingAdapter
from aura.train import sharding
from aura.train.optim import make_lm_optimizer

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "pretrain.py"


def tiny_model(**kw):

    model = pretrain_presets.get_config("tiny").model
    model.update(num_experts=4, **kw)  # 4 experts: one per device of a 4-wide expert axis
    return model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard")
    res = build_corpus(root / "corpus", max_docs=120)
    tok = train_tokenizer(root / "corpus" / "text", root / "tok", TokenizerConfig(vocab_size=400))
    return str(res.instruct), str(tok.model_path)


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    """mesh -> (losses of 4 pretrain steps, checkpoint dir); each mesh runs once per module."""
    cache = {}

    def run(mesh: dict):
        key = json.dumps(mesh, sort_keys=True)
        if key not in cache:
            out = tmp_path_factory.mktemp("run")
            cfg = lm_loop.PretrainConfig(
                jsonl=corpus[0], spm_model=corpus[1], ckpt_out=str(out), model=tiny_model(),
                steps=4, batch_size=8, max_len=32, log_every=1, save_every=100, mesh=mesh,
                tensorboard=False,
            )  # fmt: skip
            result = lm_loop.pretrain(cfg, log=lambda s: None)
            assert result["devices"] == int(np.prod(list(mesh.values())))
            with open(out / "metrics.jsonl") as f:
                losses = [r["train/loss"] for r in map(json.loads, f) if "train/loss" in r]
            cache[key] = (losses, str(out))
        return cache[key]

    return run


MESHES = [
    pytest.param({"data": 2, "expert": 4}, id="data2-expert4"),
    pytest.param({"data": 8}, id="data8", marks=pytest.mark.slow),
    pytest.param({"data": 4, "fsdp": 2}, id="data4-fsdp2", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("mesh", MESHES)
def test_pretrain_losses_on_a_mesh_equal_the_one_device_run(runs, mesh):
    one, _ = runs({"data": 1})
    losses, _ = runs(mesh)
    assert len(losses) == 4 and len(set(losses)) == 4  # four real steps
    np.testing.assert_allclose(losses, one, rtol=0, atol=1e-5)


def test_checkpoint_from_8_devices_restores_on_1_device_and_on_2x4_meshes(runs):
    _, ckpt = runs({"data": 2, "expert": 4})  # saved by 8 devices, experts split 4 ways
    _, one, meta = lm_loop.restore_state(ckpt)
    assert meta["mesh"] == {"data": 2, "fsdp": 1, "expert": 4} and int(one.step) == 4
    assert all(len(x.sharding.device_set) == 1 for x in jax.tree.leaves(one))
    for shape in ({"data": 2, "expert": 4}, {"data": 2, "fsdp": 4}):
        _, moved, _ = lm_loop.restore_state(ckpt, sharding.make_mesh(shape))
        for a, b in zip(jax.tree.leaves(moved), jax.tree.leaves(one), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        w1 = moved.params["core"]["experts"]["w1"]  # [E=4, D=32, F=64]
        assert w1.sharding.spec == P("expert", "fsdp", None)
        rows = 4 // shape.get("expert", 1)
        assert {s.data.shape for s in w1.addressable_shards} == {
            (rows, 32 // shape.get("fsdp", 1), 64)
        }


def test_adapter_parameters_get_the_shardings_their_logical_names_ask_for():
    model = SelfTeachingAdapter(tiny_model(vocab_size=400, dim=128, expert_hidden=256))
    optimizer, _ = make_lm_optimizer(1e-3, 10)
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "expert": 2})
    abstract, shardings = sharding.abstract_sharded(
        lm_loop.state_init(model, optimizer, 8, 0), mesh
    )
    params = shardings.params
    assert params["embed"]["embedding"].spec == P(None, "fsdp")  # ("vocab", "embed")
    assert params["head"]["kernel"].spec == P("fsdp", None)  # ("embed", "vocab")
    assert params["core"]["experts"]["w1"].spec == P("expert", "fsdp", None)
    assert params["core"]["experts"]["w2"].spec == P("expert", None, "fsdp")
    # The Adam moments follow their parameters; unnamed large leaves fall back to fsdp.
    mu = shardings.opt_state[1][0].mu
    assert mu["core"]["experts"]["w1"].spec == P("expert", "fsdp", None)
    flat = jax.tree_util.tree_leaves_with_path(abstract.params)
    big = [(p, x) for p, x in flat if x.size >= sharding.FSDP_MIN_SIZE]
    assert big and all("fsdp" in str(x.sharding.spec) for _, x in big)
    batch = sharding.batch_sharding(mesh, ndim=3, batch_axis=1)
    assert batch.spec[1] == ("data", "fsdp", "expert") and batch.spec[0] is None
    assert list(sharding.process_batch_rows(batch, (1, 8, 4), axis=1)) == list(range(8))


def test_mesh_flags_and_distributed_flags_are_validated(corpus, tmp_path):
    assert sharding.parse_mesh("data=2, expert=4") == {"data": 2, "expert": 4}
    assert sharding.resolve_mesh_shape({"data": -1, "expert": 2}, 8) == (4, 1, 2)
    with pytest.raises(ValueError, match="'model=2': expected AXIS=SIZE"):
        sharding.parse_mesh("model=2")
    with pytest.raises(ValueError, match="needs 16 devices, but 8 are available"):
        sharding.make_mesh({"data": 4, "expert": 4})
    with pytest.raises(ValueError, match="needs --process_count and --process_index"):
        distributed_kwargs(True, "localhost:1234", None, None)
    with pytest.raises(ValueError, match="--process_index=2 must be in"):
        distributed_kwargs(True, "localhost:1234", 2, 2)
    with pytest.raises(ValueError, match="need --init_distributed"):
        distributed_kwargs(False, None, 2, None)
    assert distributed_kwargs(True, None, None, None) == {}  # Cloud TPU: detected
    cfg = lm_loop.PretrainConfig(
        jsonl=corpus[0], spm_model=corpus[1], ckpt_out=str(tmp_path / "x"), model=tiny_model(),
        batch_size=6, mesh={"data": 4}, tensorboard=False,
    )  # fmt: skip
    with pytest.raises(ValueError, match="--batch_size=6 must be a multiple of the 4 batch"):
        lm_loop.pretrain(cfg, log=lambda s: None)
    cfg.batch_size, cfg.mesh = 8, {"data": 1, "expert": 8}
    with pytest.raises(ValueError, match="num_experts=4 must be a multiple of the mesh's expert"):
        lm_loop.pretrain(cfg, log=lambda s: None)
    assert not (tmp_path / "x").exists()  # nothing written before validation
