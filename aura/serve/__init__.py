"""Inference as a library: chat sessions, sampling with the recurrent state, zone heads."""

from aura.serve.chat import Chat
from aura.serve.sampling import Generator, sample_logits

__all__ = ["Chat", "Generator", "sample_logits"]
