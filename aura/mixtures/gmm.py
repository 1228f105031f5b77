"""`GaussianMixture`: a scikit-learn-compatible Gaussian mixture fitted by EM in JAX.

The estimator is a thin host-side shell over the pure functions of `aura.mixtures.gmm_em`: it
validates data (`DataError` on NaN/inf rows, wrong rank, too few points, singular covariances
without regularisation), pads it to a bucket size (so fits and scores of similar sizes reuse one
compiled function), runs all `n_init` restarts in one vmapped call and keeps the best.

Conventions follow scikit-learn: `score` is the MEAN per-sample log-likelihood (nats),
`score_samples` the per-sample values; `bic`/`aic` count parameters the same way.

Example::

    gm = GaussianMixture(3, covariance_type="diag", n_init=2).fit(x)     # x [N, D]
    gm.score(x_test), gm.predict(x_test), gm.sample(100)

Shapes: N points, D features, K components.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aura.data.errors import DataError
from aura.mixtures import gmm_em
from aura.mixtures.validate import as_points, bucket, pad_rows
from aura.nn import gaussian as gauss

__all__ = ["GaussianMixture"]


class GaussianMixture:
    """Gaussian mixture model with EM (default) or gradient (optax Adam) fitting.

    Attributes after `fit`: ``params`` (dict of numpy arrays: weights [K], means [K, D],
    covariances), ``converged_``, ``n_iter_``, ``lower_bound_`` (mean log-likelihood at the
    last E-step), ``history_`` (mean log-likelihood per iteration of the best restart).
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init: Any = None,
        means_init: Any = None,
        covariances_init: Any = None,
        fit_method: str = "em",
        learning_rate: float = 0.05,
        seed: int = 0,
    ) -> None:
        """Configures the model (nothing is computed).

        Args:
          n_components: K >= 1.
          covariance_type: "full", "diag" or "spherical".
          tol: convergence threshold on the change of the mean log-likelihood.
          reg_covar: non-negative value added to covariance diagonals.
          max_iter: EM iterations (or Adam steps for ``fit_method="gradient"``), >= 1.
          n_init: restarts (run together under vmap); the best lower bound is kept.
          init_params: "kmeans" (k-means++ then 20 Lloyd steps), "k-means++", "random" or
            "random_from_data".
          weights_init, means_init, covariances_init: explicit initial parameters (all three,
            shapes [K], [K, D] and per `covariance_type`); they override `init_params`.
          fit_method: "em" or "gradient".
          learning_rate: Adam step size for gradient fitting.
          seed: PRNG seed for the initialisation and `sample`.

        Raises:
          ValueError: a setting out of range or an unknown choice.
        """
        gauss.check_covariance_type(covariance_type)
        if n_components < 1 or max_iter < 1 or n_init < 1:
            raise ValueError(
                f"n_components={n_components}, max_iter={max_iter}, n_init={n_init}: all >= 1"
            )
        if reg_covar < 0 or tol < 0:
            raise ValueError(f"reg_covar={reg_covar} and tol={tol} must be >= 0")
        if init_params not in gmm_em.INIT_METHODS:
            raise ValueError(f"init_params={init_params!r}; use one of {gmm_em.INIT_METHODS}")
        if fit_method not in gmm_em.FIT_METHODS:
            raise ValueError(f"fit_method={fit_method!r}; use one of {gmm_em.FIT_METHODS}")
        explicit = [v is not None for v in (weights_init, means_init, covariances_init)]
        if any(explicit) and not all(explicit):
            raise ValueError("give weights_init, means_init and covariances_init together")
        self.n_components, self.covariance_type = int(n_components), covariance_type
        self.tol, self.reg_covar, self.max_iter = float(tol), float(reg_covar), int(max_iter)
        self.n_init, self.init_params, self.seed = int(n_init), init_params, int(seed)
        self.fit_method, self.learning_rate = fit_method, float(learning_rate)
        self._init = (weights_init, means_init, covariances_init) if all(explicit) else None
        self.params: dict[str, np.ndarray] | None = None
        self.converged_, self.n_iter_, self.lower_bound_ = False, 0, -math.inf
        self.history_ = np.zeros((0,), np.float32)

    # ------------------------------------------------------------------ configuration

    def get_config(self) -> dict[str, Any]:
        """The JSON-able settings (explicit initial parameters are not included)."""
        keys = ("n_components", "covariance_type", "tol", "reg_covar", "max_iter", "n_init")
        keys += ("init_params", "fit_method", "learning_rate", "seed")
        return {k: getattr(self, k) for k in keys}

    @property
    def n_features(self) -> int:
        return int(self._fitted()["means"].shape[1])

    def _fitted(self) -> dict[str, np.ndarray]:
        if self.params is None:
            raise ValueError("this GaussianMixture is not fitted yet; call fit(X) first")
        return self.params

    # ------------------------------------------------------------------ fitting

    def _explicit_init(self, d: int) -> dict[str, jax.Array]:
        w, m, c = (np.asarray(v, np.float32) for v in self._init)
        k = self.n_components
        want = {"weights": (k,), "means": (k, d)}
        want["covariances"] = gauss.covariance_shape(self.covariance_type, k, d)
        for name, arr in zip(want, (w, m, c), strict=True):
            if arr.shape != want[name]:
                raise ValueError(f"{name}_init has shape {arr.shape}, expected {want[name]}")
        return {"weights": jnp.asarray(w), "means": jnp.asarray(m), "covariances": jnp.asarray(c)}

    def _check_no_constant_feature(self, x: np.ndarray, where: str) -> None:
        if self.reg_covar > 0:
            return
        const = np.flatnonzero(np.ptp(x, axis=0) == 0)
        if const.size:
            raise DataError(
                f"{where}: feature {int(const[0])} is constant, so every covariance is singular "
                "with reg_covar=0; drop the feature or set reg_covar > 0 (e.g. 1e-6)"
            )

    def fit(self, x: Any, where: str = "X") -> GaussianMixture:
        """Fits the mixture to points x [N, D] (N >= n_components).

        Raises:
          DataError: bad data, or a covariance that became singular (names the component).
        """
        x = as_points(x, where, min_rows=self.n_components)
        self._check_no_constant_feature(x, where)
        n = x.shape[0]
        xp = jnp.asarray(pad_rows(x, bucket(n)))
        w = jnp.asarray((np.arange(xp.shape[0]) < n).astype(np.float32))
        kw = dict(cov_type=self.covariance_type, reg_covar=self.reg_covar, tol=self.tol)
        if self._init is not None:
            p0 = jax.tree.map(lambda a: a[None], self._explicit_init(x.shape[1]))
            fit_one = gmm_em.gradient_fit if self.fit_method == "gradient" else gmm_em.em
            extra = {"learning_rate": self.learning_rate} if self.fit_method == "gradient" else {}
            res = jax.vmap(lambda p: fit_one(xp, w, p, max_iter=self.max_iter, **kw, **extra))(p0)
        else:
            keys = jax.random.split(jax.random.key(self.seed), self.n_init)
            res = gmm_em.fit_many(
                keys, xp, w, k=self.n_components, max_iter=self.max_iter,
                init_method=self.init_params, fit_method=self.fit_method,
                learning_rate=self.learning_rate, **kw,
            )  # fmt: skip
        res = jax.device_get(res)
        singular = np.asarray(res.singular)  # [I, K]
        lbs = np.where(singular.any(axis=1), -np.inf, res.lower_bound)
        best = int(np.argmax(lbs))
        if not np.isfinite(lbs[best]):
            bad = np.flatnonzero(singular[best])
            which = f"component {int(bad[0])}" if bad.size else "a component"
            raise DataError(
                f"{where}: fitting failed: the covariance of {which} became singular "
                f"(reg_covar={self.reg_covar}); some component holds fewer distinct points than "
                "features. Increase reg_covar (e.g. 1e-6 or 1e-3), use fewer components, or a "
                "'diag'/'spherical' covariance"
            )
        self.params = {k: np.asarray(v[best]) for k, v in res.params.items()}
        self.converged_ = bool(res.converged[best])
        self.n_iter_ = int(res.n_iter[best])
        self.lower_bound_ = float(res.lower_bound[best])
        self.history_ = np.asarray(res.history[best])[: self.n_iter_]
        return self

    # ------------------------------------------------------------------ inference

    def _log(self, x: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
        params = self._fitted()
        x = as_points(x, where, expect_dim=params["means"].shape[1])
        n = x.shape[0]
        log_p, log_resp = gmm_em.score_samples(
            jnp.asarray(pad_rows(x, bucket(n))), params, self.covariance_type
        )
        return np.asarray(log_p)[:n], np.asarray(log_resp)[:n]

    def score_samples(self, x: Any, where: str = "X") -> np.ndarray:
        """Per-sample log-likelihood [N] (nats)."""
        return self._log(x, where)[0]

    def score(self, x: Any, where: str = "X") -> float:
        """Mean per-sample log-likelihood (as scikit-learn's `GaussianMixture.score`)."""
        return float(np.mean(self.score_samples(x, where)))

    def predict_proba(self, x: Any, where: str = "X") -> np.ndarray:
        """Component responsibilities [N, K]."""
        return np.exp(self._log(x, where)[1])

    def predict(self, x: Any, where: str = "X") -> np.ndarray:
        """Most likely component per point, int [N]."""
        return np.argmax(self._log(x, where)[1], axis=1)

    def sample(self, n: int, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Draws n points: ``(x [n, D], component labels [n])``."""
        p = self._fitted()
        k1, k2 = jax.random.split(jax.random.key(self.seed if seed is None else seed))
        labels = jax.random.categorical(k1, jnp.log(jnp.asarray(p["weights"])), shape=(n,))
        cov = jnp.asarray(p["covariances"])[labels]
        x = gauss.sample_components(k2, jnp.asarray(p["means"])[labels], cov, self.covariance_type)
        return np.asarray(x), np.asarray(labels)

    def n_parameters(self) -> int:
        """Free parameters (scikit-learn's `_n_parameters`)."""
        k, d = self.n_components, self.n_features
        return gauss.num_covariance_params(self.covariance_type, k, d) + k * d + k - 1

    def bic(self, x: Any) -> float:
        """Bayesian information criterion on x (lower is better)."""
        n = np.asarray(x).shape[0]
        return -2.0 * self.score(x) * n + self.n_parameters() * math.log(n)

    def aic(self, x: Any) -> float:
        """Akaike information criterion on x (lower is better)."""
        return -2.0 * self.score(x) * np.asarray(x).shape[0] + 2.0 * self.n_parameters()

    def get_weights(self) -> np.ndarray:
        return self._fitted()["weights"]

    def get_means(self) -> np.ndarray:
        return self._fitted()["means"]

    def get_variances(self) -> np.ndarray:
        """The covariances in this model's parameterisation ([K, D, D], [K, D] or [K])."""
        return self._fitted()["covariances"]

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, np.ndarray]:
        """Fitted arrays (for saving)."""
        return dict(self._fitted())

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, Any]) -> GaussianMixture:
        """Rebuilds a fitted model from `get_config()` and `state_dict()` output."""
        gm = cls(**config)
        want = {"weights", "means", "covariances"}
        if set(arrays) != want:
            raise DataError(f"GMM state has arrays {sorted(arrays)}, expected {sorted(want)}")
        gm.params = {k: np.asarray(v, np.float32) for k, v in arrays.items()}
        return gm
