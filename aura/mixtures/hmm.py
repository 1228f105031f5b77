"""`HiddenMarkov`: an HMM with Gaussian-mixture emissions, fitted by Baum-Welch in JAX.

With ``n_mix=1`` it is hmmlearn's `GaussianHMM`, otherwise its `GMMHMM`. Sequences are given
either padded ``[B, T, D]`` (optional ``lengths [B]``) or hmmlearn-style as concatenated frames
``[sum(lengths), D]`` with ``lengths``. They are padded to bucket sizes (batch and time), so
data of similar sizes reuse one compiled function, and all sequences run batched.

Conventions follow hmmlearn: `score` is the TOTAL log-likelihood of all sequences (nats);
`score_sequences` gives one value per sequence.

Example::

    hm = HiddenMarkov(4, n_mix=2, covariance_type="diag").fit(x, lengths)
    hm.score(x, lengths), hm.decode(x, lengths), hm.sample(50, n_sequences=3)

Shapes: B sequences, T steps, D features, S states, M mixtures per state.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aura.data.errors import DataError
from aura.mixtures import hmm_em
from aura.mixtures.validate import as_sequences, bucket, pad_rows
from aura.nn import gaussian as gauss
from aura.nn import hmm as hmm_ops

__all__ = ["HiddenMarkov"]

_ARRAYS = ("startprob", "transmat", "weights", "means", "covariances")


class HiddenMarkov:
    """HMM with GMM emissions.

    Attributes after `fit`: ``params`` (dict of numpy arrays), ``converged_``, ``n_iter_``,
    ``lower_bound_`` (total log-likelihood at the last E-step), ``history_``.
    """

    def __init__(
        self,
        n_states: int = 2,
        n_mix: int = 1,
        *,
        covariance_type: str = "diag",
        tol: float = 1e-2,
        reg_covar: float = 1e-3,
        max_iter: int = 100,
        n_init: int = 1,
        method: str = "scan",
        topology: str = "ergodic",
        seed: int = 0,
        params_init: dict | None = None,
    ) -> None:
        """Configures the model.

        Args:
          n_states: S >= 1 hidden states.
          n_mix: M >= 1 Gaussians per state.
          covariance_type: "full", "diag" or "spherical".
          tol: convergence threshold on the change of the total log-likelihood (hmmlearn's).
          reg_covar: added to covariance diagonals (hmmlearn's `min_covar` plays this role).
          max_iter: Baum-Welch iterations >= 1.
          n_init: restarts under vmap; the best total log-likelihood is kept.
          method: "scan" or "associative" forward-backward (the latter for long sequences).
          topology: "ergodic" (uniform start/transitions, as hmmlearn) or "left_right"
            (start in state 0, stay or advance; states initialised from time slices).
          seed: PRNG seed (initialisation and `sample`).
          params_init: explicit initial parameters (all five arrays, see the module
            docstring); they replace the k-means initialisation (and `n_init`).

        Raises:
          ValueError: a setting out of range.
        """
        gauss.check_covariance_type(covariance_type)
        if method not in hmm_ops.HMM_METHODS:
            raise ValueError(f"method={method!r}; use one of {hmm_ops.HMM_METHODS}")
        if min(n_states, n_mix, max_iter, n_init) < 1:
            raise ValueError(
                f"n_states={n_states}, n_mix={n_mix}, max_iter={max_iter}, n_init={n_init}: "
                "all must be >= 1"
            )
        if reg_covar < 0 or tol < 0:
            raise ValueError(f"reg_covar={reg_covar} and tol={tol} must be >= 0")
        if topology not in ("ergodic", "left_right"):
            raise ValueError(f"topology={topology!r}; use 'ergodic' or 'left_right'")
        self.topology = topology
        if params_init is not None and set(params_init) != set(_ARRAYS):
            raise ValueError(f"params_init needs exactly the arrays {_ARRAYS}")
        self._init = params_init
        self.n_states, self.n_mix, self.covariance_type = int(n_states), int(n_mix), covariance_type
        self.tol, self.reg_covar, self.max_iter = float(tol), float(reg_covar), int(max_iter)
        self.n_init, self.method, self.seed = int(n_init), method, int(seed)
        self.params: dict[str, np.ndarray] | None = None
        self.converged_, self.n_iter_, self.lower_bound_ = False, 0, -math.inf
        self.history_ = np.zeros((0,), np.float32)

    def get_config(self) -> dict[str, Any]:
        """The JSON-able settings."""
        keys = ("n_states", "n_mix", "covariance_type", "tol", "reg_covar", "max_iter")
        return {k: getattr(self, k) for k in keys + ("n_init", "method", "topology", "seed")}

    def _fitted(self) -> dict[str, np.ndarray]:
        if self.params is None:
            raise ValueError("this HiddenMarkov is not fitted yet; call fit(X, lengths) first")
        return self.params

    def _padded(self, x: Any, lengths: Any, where: str, fitting: bool = False):
        """Validated, bucket-padded (x [B', T', D], mask [B', T'], B)."""
        expect = None if fitting else self._fitted()["means"].shape[2]
        need = self.n_states * self.n_mix if fitting else 1
        xs, lens = as_sequences(x, lengths, where, min_frames=need, expect_dim=expect)
        b, t = xs.shape[:2]
        tb = bucket(t, minimum=8)
        xs = np.pad(xs, ((0, 0), (0, tb - t), (0, 0)))
        xs = pad_rows(xs, bucket(b, minimum=8))
        lens = pad_rows(lens, xs.shape[0])  # padded sequences have length 0 (fully masked)
        mask = np.arange(tb)[None] < lens[:, None]
        return jnp.asarray(xs), jnp.asarray(mask), b

    def fit(self, x: Any, lengths: Any = None, where: str = "X") -> HiddenMarkov:
        """Fits by Baum-Welch.

        Raises:
          DataError: bad sequences, too few frames, or a degenerate covariance.
        """
        xs, mask, _ = self._padded(x, lengths, where, fitting=True)
        kw = dict(cov_type=self.covariance_type, reg_covar=self.reg_covar, tol=self.tol,
                  max_iter=self.max_iter, method=self.method)  # fmt: skip
        if self._init is not None:
            p0 = {k: jnp.asarray(v, jnp.float32)[None] for k, v in self._init.items()}
            res = jax.vmap(lambda p: hmm_em.baum_welch(xs, mask, p, **kw))(p0)
        else:
            keys = jax.random.split(jax.random.key(self.seed), self.n_init)
            res = hmm_em.fit_many(
                keys, xs, mask, s=self.n_states, m=self.n_mix, topology=self.topology, **kw
            )
        res = jax.device_get(res)
        singular = np.asarray(res.singular).any(axis=1)
        lbs = np.where(singular, -np.inf, res.lower_bound)
        best = int(np.argmax(lbs))
        if not np.isfinite(lbs[best]):
            raise DataError(
                f"{where}: fitting failed: an emission covariance became singular or the "
                f"likelihood is not finite (reg_covar={self.reg_covar}); increase reg_covar, "
                "use fewer states/mixtures, or drop constant features"
            )
        self.params = {k: np.asarray(v[best]) for k, v in res.params.items()}
        self.converged_, self.n_iter_ = bool(res.converged[best]), int(res.n_iter[best])
        self.lower_bound_ = float(res.lower_bound[best])
        self.history_ = np.asarray(res.history[best])[: self.n_iter_]
        return self

    def score_sequences(self, x: Any, lengths: Any = None, where: str = "X") -> np.ndarray:
        """Log-likelihood of each sequence [B] (nats)."""
        xs, mask, b = self._padded(x, lengths, where)
        ll = hmm_em.log_lik(xs, mask, self._fitted(), self.covariance_type, self.method)
        return np.asarray(ll)[:b]

    def score(self, x: Any, lengths: Any = None, where: str = "X") -> float:
        """TOTAL log-likelihood of all sequences (as hmmlearn's `score`)."""
        return float(np.sum(self.score_sequences(x, lengths, where)))

    def predict_proba(self, x: Any, lengths: Any = None, where: str = "X") -> np.ndarray:
        """State posteriors [B, T, S] (zero on padding)."""
        xs, mask, b = self._padded(x, lengths, where)
        _, gamma = hmm_em.score_and_posteriors(
            xs, mask, self._fitted(), self.covariance_type, self.method
        )
        t = int(np.asarray(as_sequences(x, lengths, where)[0]).shape[1])
        return np.asarray(gamma)[:b, :t]

    def decode(
        self, x: Any, lengths: Any = None, where: str = "X"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Viterbi: ``(log_prob of each best path [B], states int [B, T], -1 on padding)``."""
        xs, mask, b = self._padded(x, lengths, where)
        paths, logp = hmm_em.decode(xs, mask, self._fitted(), self.covariance_type)
        t = int(np.asarray(as_sequences(x, lengths, where)[0]).shape[1])
        return np.asarray(logp)[:b], np.asarray(paths)[:b, :t]

    def predict(self, x: Any, lengths: Any = None, where: str = "X") -> np.ndarray:
        """Most likely state path per sequence, int [B, T] (-1 on padding)."""
        return self.decode(x, lengths, where)[1]

    def sample(
        self, n_steps: int, n_sequences: int = 1, seed: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draws sequences: ``(x [n_sequences, n_steps, D], states [n_sequences, n_steps])``."""
        p = {k: jnp.asarray(v) for k, v in self._fitted().items()}
        key = jax.random.key(self.seed if seed is None else seed)
        x, states = _sample(key, p, int(n_steps), int(n_sequences), self.covariance_type)
        return np.asarray(x), np.asarray(states)

    def get_initial_prob(self) -> np.ndarray:
        return self._fitted()["startprob"]

    def get_transition_matrix(self) -> np.ndarray:
        return self._fitted()["transmat"]

    def get_weights(self) -> np.ndarray:
        """Mixture weights [S, M]."""
        return self._fitted()["weights"]

    def get_means(self) -> np.ndarray:
        """Emission means [S, M, D]."""
        return self._fitted()["means"]

    def get_variances(self) -> np.ndarray:
        """Emission covariances in this model's parameterisation."""
        return self._fitted()["covariances"]

    def n_parameters(self) -> int:
        s, m, d = self._fitted()["means"].shape
        cov = gauss.num_covariance_params(self.covariance_type, s * m, d)
        return (s - 1) + s * (s - 1) + s * (m - 1) + s * m * d + cov

    def state_dict(self) -> dict[str, np.ndarray]:
        return dict(self._fitted())

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, Any]) -> HiddenMarkov:
        """Rebuilds a fitted model from `get_config()` and `state_dict()` output."""
        hm = cls(**config)
        if set(arrays) != set(_ARRAYS):
            raise DataError(f"HMM state has arrays {sorted(arrays)}, expected {sorted(_ARRAYS)}")
        hm.params = {k: np.asarray(v, np.float32) for k, v in arrays.items()}
        return hm


def _sample(key, p, n_steps, n_seq, cov_type):
    s, m, d = p["means"].shape
    k0, kscan = jax.random.split(key)
    state0 = jax.random.categorical(k0, jnp.log(p["startprob"]), shape=(n_seq,))

    def step(state, k):
        km, kx, kt = jax.random.split(k, 3)
        mix = jax.random.categorical(km, jnp.log(p["weights"][state]))  # [B]
        cov = p["covariances"][state, mix]
        x = gauss.sample_components(kx, p["means"][state, mix], cov, cov_type)
        nxt = jax.random.categorical(kt, jnp.log(p["transmat"][state]))
        return nxt, (x, state)

    _, (xs, states) = jax.lax.scan(step, state0, jax.random.split(kscan, n_steps))
    return jnp.swapaxes(xs, 0, 1), states.T  # [T, B, D] -> [B, T, D]; [T, B] -> [B, T]
