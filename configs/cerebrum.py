"""Presets for the Cerebrum controller and its "mmm" hybrid model.

Run (once the command is wired)::

    python -m aura.build cerebrum --config configs/cerebrum.py --workdir W --metrics_out M.json

(append ``:<preset>`` to the config path for another preset)

    stream          the 5-regime stream experiment (`run_cerebrum_stream`); default
    tiny            a seconds-long stream and a tiny mmm model (tests use it)
    eeg             EEG seizure prediction/recognition (64 channels, long sequences)
    tts             text-to-speech voice cloning (80 mel bins, long sequences)
    speaker         speaker recognition (40 MFCCs)
    conversational  conversational text generation (512-d token embeddings, 50k vocabulary)

`model` keeps the original design's field names (input_dim, hidden_dim, z_dim, rnn_hidden,
num_states, n_mix, trans_d_model, trans_nhead, trans_layers, output_dim) plus its training
settings; `aura.mixtures.mmm` takes them as the "mmm" model type's config
(``Cerebrum.fit_and_add(data, "mmm", config=mmm_config(c.model))``). `stream` holds the
arguments of `aura.experiments.mixtures.run_cerebrum_stream` and `controller` the
`CerebrumConfig` overrides.
"""

import ml_collections

_TRAIN = ("learning_rate", "weight_decay", "kl_anneal_steps", "clip_norm", "steps", "batch_size")
_ARCH = ("input_dim", "hidden_dim", "z_dim", "rnn_hidden", "num_states", "n_mix")
_ARCH += ("trans_d_model", "trans_nhead", "trans_layers", "output_dim", "vocab_size", "max_len")

_PRESETS = {
    # input, hidden, z, rnn, states, mix, d_model, heads, layers, output, lr, kl, max_len
    "eeg": (64, 256, 128, 128, 16, 8, 256, 16, 6, 64, 5e-5, 100, 1024),
    "tts": (80, 512, 256, 256, 32, 16, 512, 16, 8, 80, 1e-4, 50, 2048),
    "speaker": (40, 256, 128, 128, 24, 12, 256, 8, 4, 40, 1e-4, 30, 800),
    "conversational": (512, 1024, 512, 512, 64, 32, 1024, 16, 12, 512, 5e-5, 100, 2048),
    "tiny": (6, 16, 4, 8, 3, 2, 16, 2, 1, 6, 3e-3, 5, 64),
    "stream": (8, 32, 8, 16, 4, 2, 16, 2, 1, 8, 1e-3, 20, 128),
}


def mmm_config(model: ml_collections.ConfigDict) -> dict:
    """The "mmm" model type's config dict from a preset's `model` block."""
    out = {k: model[k] for k in _ARCH + _TRAIN}
    out["vocab_size"] = int(out["vocab_size"] or 0)
    return out


def get_config(preset: str = "stream") -> ml_collections.ConfigDict:
    if preset not in _PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(_PRESETS)}")
    inp, hid, z, rnn, states, mix, dm, heads, layers, out, lr, kl, max_len = _PRESETS[preset]
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict(
        {
            "model_type": "mmm", "input_dim": inp, "hidden_dim": hid, "z_dim": z,
            "rnn_hidden": rnn, "num_states": states, "n_mix": mix, "trans_d_model": dm,
            "trans_nhead": heads, "trans_layers": layers, "output_dim": out,
            "vocab_size": 50000 if preset == "conversational" else 0, "max_len": max_len,
            "learning_rate": lr, "weight_decay": 1e-5, "kl_anneal_steps": kl, "clip_norm": 5.0,
            "label_smoothing": 0.1, "entropy_coef": 0.01, "steps": 200, "batch_size": 32,
        }
    )  # fmt: skip
    c.stream = ml_collections.ConfigDict(
        {"n_regimes": 5, "dim": 8, "batches_per_regime": 12, "batch_size": 256, "capacity": 8,
         "warm_start": True, "dp_gmm": True, "seed": 0}
    )  # fmt: skip
    c.controller = ml_collections.ConfigDict(
        {"adapter_components": 2, "top_k": 2, "novelty_quantile": 0.02, "novel_fraction": 0.5,
         "load_balance_weight": 1e-3}
    )  # fmt: skip
    if preset == "tiny":
        c.model.steps, c.model.batch_size = 5, 4
        c.stream.update(n_regimes=3, dim=4, batches_per_regime=3, batch_size=64, capacity=4)
        c.stream.dp_gmm = False
    return c
