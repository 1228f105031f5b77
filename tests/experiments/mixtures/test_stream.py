"""run_cerebrum_stream: a tiny stream end to end, and the default 5-regime stream (slow)."""

import numpy as np
import pytest

from aura.experiments.mixtures import run_cerebrum_stream
from aura.experiments.mixtures.stream import make_stream, stream_batch
from aura.mixtures.cerebrum import Cerebrum


def test_stream_batches_are_a_pure_function_of_the_step():
    spec = make_stream(3, 4, batches_per_regime=2, batch_size=16, seed=3)
    a, ra = stream_batch(spec, 3)
    b, rb = stream_batch(spec, 3)
    np.testing.assert_array_equal(a, b)
    assert ra == rb == 1
    assert not np.allclose(stream_batch(spec, 2)[0], a)


def test_tiny_stream_end_to_end(tmp_path):
    r = run_cerebrum_stream(tmp_path, n_regimes=3, dim=4, batches_per_regime=3, batch_size=64,
                            capacity=4, dp_gmm=False)  # fmt: skip
    assert r["experts_final"] == 3 and r["distinct_owners"] == 3
    assert [e["regime"] for e in r["spawn_events"]] == [1, 2]
    assert r["routing_accuracy"] > 0.95
    assert len(r["timeline"]) == 9 and len(r["forgetting"]) == 3
    assert all(f < 0.5 for f in r["forgetting"])
    assert all(a <= o + 0.5 for a, o in zip(r["ll_final"], r["ll_oracle"], strict=True))
    assert (tmp_path / "cerebrum_timeline.png").stat().st_size > 1000
    back = Cerebrum.load(tmp_path / "cerebrum")
    assert len(back.active_ids()) == 3


@pytest.mark.slow
def test_default_stream_five_regimes():
    r = run_cerebrum_stream()
    assert 4 <= r["experts_final"] <= 6
    assert r["routing_accuracy"] > 0.95 and r["distinct_owners"] == 5
    assert r["dp_gmm_components"] is None or 3 <= r["dp_gmm_components"] <= 8
    assert max(r["forgetting"]) < 0.5
