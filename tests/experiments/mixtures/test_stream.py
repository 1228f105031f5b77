"""The Cerebrum stream: pure batches, a cold start (no legacy expert), the default 5-regime
stream (about 9 CPU seconds). The tiny stream end to end and its exact resume are in
tests/commands/test_cerebrum_cmd.py."""

import numpy as np
import pytest

from aura.experiments.mixtures import StreamConfig, run_cerebrum_stream
from aura.experiments.mixtures.stream import make_stream, stream_batch


def test_stream_batches_are_a_pure_function_of_the_step():
    spec = make_stream(3, 4, batches_per_regime=2, batch_size=16, seed=3)
    a, ra = stream_batch(spec, 3)
    b, rb = stream_batch(spec, 3)
    np.testing.assert_array_equal(a, b)
    assert ra == rb == 1
    assert not np.allclose(stream_batch(spec, 2)[0], a)


def test_bad_stream_settings_name_the_value():
    with pytest.raises(ValueError, match="batch_size=1 must be >= 2"):
        make_stream(3, 4, batch_size=1)
    with pytest.raises(ValueError, match=r"unknown controller settings \['bogus'\]"):
        StreamConfig(controller={"bogus": 1}).validated()


def test_cold_start_spawns_the_first_expert_at_the_first_batch(tmp_path):
    cfg = StreamConfig(n_regimes=2, dim=3, batches_per_regime=2, batch_size=64, capacity=3,
                       warm_start=False, dp_gmm=False, workdir=str(tmp_path),
                       tensorboard=False)  # fmt: skip
    r = run_cerebrum_stream(cfg, log=lambda s: None)
    assert [(e["step"], e["id"]) for e in r["spawn_events"]] == [(0, "adapter_0"), (2, "adapter_1")]
    assert r["experts_by_regime"] == [1, 2] and r["distinct_owners"] == 2
    assert r["routing_accuracy"] > 0.95


def test_default_stream_five_regimes(tmp_path):
    r = run_cerebrum_stream(StreamConfig(workdir=str(tmp_path)), log=lambda s: None)
    assert 4 <= r["experts_final"] <= 6
    assert r["routing_accuracy"] > 0.95 and r["distinct_owners"] == 5
    assert r["dp_gmm_components"] is None or 3 <= r["dp_gmm_components"] <= 8
    assert max(r["forgetting"]) < 0.5
