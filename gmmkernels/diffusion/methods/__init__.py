"""The algorithms of the five Gaussian-mixture diffusion methods, built on the diffusion core: models, losses,
samplers and training helpers, one module per method.

  gms       GMS (Gaussian Mixture Solvers): the fused GMS sampler step, eps2 / eps3 heads, the ablations
  smd       SMD (Soft Mixture Denoising): the latent identifier, hypernetwork adapters, loss, training, sampling
  mixddpm   mixDDPM / mixSGM: the Gaussian-mixture prior, the centred forward process, training and sampling
  ngmg      GMM conditioning and the NGMG loss: feature GMMs, the auxiliary classifier, conditional training
  mgdm      MGDM (and DPS) for inverse problems: observation models, the Gibbs / Gauss_VI sampler

Their experiments (toy and digits reproductions, tables, plots, demo sections) are in
:mod:`gmmkernels.diffusion.experiments`.
"""
