"""Makes tests/models/data/minilm_reference.npz: sentence-transformers embeddings to match.

Not part of AURA and not run by the tests (it needs torch). It was run once, in a scratch venv
outside the repository, on the model directory that `default_encoder_dir()` extracts:

    /root/.pyenv/versions/3.11.7/bin/python -m venv /tmp/stenv
    /tmp/stenv/bin/pip install torch==2.13.0          # the CPU wheel
    /tmp/stenv/bin/pip install sentence-transformers  # 6.2.0 (transformers 5.24.0)
    /tmp/stenv/bin/python tests/models/make_encoder_fixture.py \
        ~/.cache/aura/encoders/all-MiniLM-L6-v2-0.1.2 tests/models/data/minilm_reference.npz

The npz holds ``texts`` (unicode array), ``embeddings`` [N, 384] float32 and ``versions`` (the
library versions used), loadable with ``allow_pickle=False``.
"""

import sys

import numpy as np
import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

LONG = " ".join(
    [
        "The hippocampus binds the elements of an episode into one memory trace, and the "
        "neocortex slowly consolidates these traces into semantic knowledge during sleep and rest."
    ]
    * 6
)  # about 170 WordPiece tokens: past 128 (tokenizer.json's own limit), below 256

VERY_LONG = " ".join(["Repeated words overflow the maximum sequence length of the model."] * 40)

TEXTS = [
    "hello world",
    "",
    " ",
    "a",
    "?",
    "The cat sat on the mat.",
    "My sister moved to Lisbon last spring.",
    "Actually, my sister now lives in Porto, not Lisbon.",
    "What is the capital of France?",
    "Return the number of items in a container.",
    "Café, naïve résumé, and jalapeño: accents are stripped or kept?",
    "東京は日本の首都です。",
    "Привет, как дела?",
    "emoji test 🙂🚀 done",
    "x = lambda y: y ** 2  # a Python one-liner",
    "ALL CAPS SENTENCE WITH NUMBERS 12345 AND 3.14159",
    "tab\tseparated\nnewline separated",
    LONG,
    VERY_LONG,
    "subword tokenization of antidisestablishmentarianism and pneumonoultramicroscopic",
]


def main(model_dir: str, out: str) -> None:
    torch.manual_seed(0)
    model = SentenceTransformer(model_dir, device="cpu")
    emb = model.encode(TEXTS, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)
    lengths = [len(model.tokenizer(t)["input_ids"]) for t in TEXTS]
    print("max_seq_length", model.max_seq_length, "token lengths", lengths)
    versions = (
        f"torch {torch.__version__}; sentence-transformers {sentence_transformers.__version__}"
    )
    np.savez(
        out,
        texts=np.array(TEXTS, dtype=np.str_),
        embeddings=emb.astype(np.float32),
        versions=np.array(versions, dtype=np.str_),
    )
    print("wrote", out, emb.shape)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
