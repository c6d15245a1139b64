"""Front-ends on the fused ops for the libraries users already work in; each one is an optional extra.

  gmmkernels.integrations.sklearn        GaussianMixture, BayesianGaussianMixture: scikit-learn estimators on
                                         fit_em / fit_vb                                 pip install gmmkernels[sklearn]
  gmmkernels.integrations.distributions  MixtureOfGaussians: a torch.distributions.Distribution whose log_prob runs
                                         the fused mixture kernel (a pyro.sample site too) pip install gmmkernels[pyro]
  gmmkernels.integrations.diffusers      schedules both ways, a UNet adapter for the project's samplers, GMS as a
                                         diffusers scheduler, MGDM / DPS pipelines, SMD on a UNet
                                                                                         pip install gmmkernels[diffusers]

Importing this package imports none of those libraries; importing a front-end whose library is missing raises
ImportError naming the extra to install. Guides: docs/integrations/<frontend>.md.
"""
from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, frontend: str, extra: str) -> ModuleType:
    """Import ``module`` for the front-end ``frontend``; without it, an ImportError that names the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"gmmkernels.integrations.{frontend} needs the package '{module.split('.')[0]}', which is not installed: "
            f"pip install 'gmmkernels[{extra}]'") from e
