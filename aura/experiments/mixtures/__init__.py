"""The mixtures experiment: fitting GMM/HMM/mmm models on files or the embedded digits
(`fit_mixture`, `run_fit`) and the Cerebrum regime-change stream on the shared loop
(`run_cerebrum_stream`)."""

from aura.experiments.mixtures.cerebrum_stream import StreamConfig, run_cerebrum_stream
from aura.experiments.mixtures.fit import fit_mixture, run_fit

__all__ = ["StreamConfig", "fit_mixture", "run_cerebrum_stream", "run_fit"]
