"""The mixtures experiment: fitting GMM/HMM/mmm models on files or the embedded digits
(`fit_mixture`) and the Cerebrum regime-change stream (`run_cerebrum_stream`)."""

from aura.experiments.mixtures.fit import fit_mixture
from aura.experiments.mixtures.stream import run_cerebrum_stream

__all__ = ["fit_mixture", "run_cerebrum_stream"]
