"""Algorithms built on the ops: batched mixture fitting over many independent data sets.

  em.py      fit_em            maximum likelihood by EM (scikit-learn ``GaussianMixture`` arithmetic)
  vb.py      fit_vb            variational Bayes (scikit-learn ``BayesianGaussianMixture`` arithmetic)
  gibbs.py   gibbs             Gibbs sampling of a conjugate diagonal Bayesian GMM, many chains
  kmeans.py  kmeans, kmeans_plusplus, lloyd     k-means++ seeding and Lloyd's iterations on the dispatcher kernel
  chunked.py fit_em_chunked, fit_vb_chunked     EM / VB on data in chunks (DataLoader) or over torch.distributed
  _data.py                     the one pass per iteration: in-memory, chunked, all-reduced
  _common.py                   checks, M-step helpers, initialisation and convergence bookkeeping shared by EM and VB
"""
from ._common import FitResult
from .chunked import fit_em_chunked, fit_vb_chunked
from .em import fit_em
from .gibbs import GibbsResult, gibbs
from .kmeans import KMeans, kmeans, kmeans_plusplus
from .vb import fit_vb

__all__ = ["FitResult", "GibbsResult", "KMeans", "fit_em", "fit_em_chunked", "fit_vb", "fit_vb_chunked", "gibbs", "kmeans",
           "kmeans_plusplus"]
