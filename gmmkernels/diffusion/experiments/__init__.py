"""The experiments of the methods in :mod:`gmmkernels.diffusion.methods`: their toy and digits reproductions
(``gmmkernels reproduce <name>``) and their short demo sections (``gmmkernels demo --methods <names>``), with the
tables, verdicts and plots. One module per method.

:data:`EXPERIMENTS` is the one list of them, read by both commands. An entry names its two functions
"module:function" in this package, imported when first used:

  reproduce(out: Path, quick: bool, device) -> dict   the reproduction, written into ``out``
  demo_section(out: Path, quick: bool) -> dict         the method's short part of the demo, written into ``out``
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Dict, Tuple


@dataclass(frozen=True)
class Experiment:
    """One method's experiments: its ``name`` (the command-line name), a one-line ``description``, the reproduce
    and demo-section functions as "module:function" of this package, and optional short ``aliases``."""

    name: str
    description: str
    reproduce_fn: str
    demo_fn: str
    aliases: Tuple[str, ...] = ()

    @property
    def reproduce(self) -> Callable:
        """``reproduce(out, quick, device) -> dict``."""
        return _load(self.reproduce_fn)

    @property
    def demo_section(self) -> Callable:
        """``demo_section(out, quick) -> dict``."""
        return _load(self.demo_fn)


def _load(ref: str) -> Callable:
    module, fn = ref.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), fn)


#: name -> Experiment, in the order the commands list them
EXPERIMENTS: Dict[str, Experiment] = {e.name: e for e in (
    Experiment("gms", "GMS vs DDPM / SN-DDPM at few steps: exact-oracle toy mixtures and digits",
               "gms:reproduce_gms", "gms:demo_section"),
    Experiment("mgdm", "MGDM vs DPS on inverse problems: the exact gmm_25 toy and digits inpainting / denoising",
               "mgdm:reproduce_mgdm", "mgdm:demo_section"),
    Experiment("mixddpm", "DDPM vs mixDDPM and SGM vs mixSGM at equal training budgets: gmm25 toy and digits",
               "mixddpm:reproduce_mixddpm", "mixddpm:demo_section"),
    Experiment("ngmg", "NGMG vs BCE for the auxiliary classifier; feature- vs class-conditioned digits",
               "ngmg:reproduce_ngmg", "ngmg:demo_section"),
    Experiment("smd", "SMD vs vanilla denoising at few steps: the 7x7 grid toy and digits",
               "smd:reproduce_smd", "smd:demo_section"),
)}


def names() -> Tuple[str, ...]:
    """Every name the commands accept: the registry's names, then the aliases."""
    return tuple(EXPERIMENTS) + tuple(a for e in EXPERIMENTS.values() for a in e.aliases)


def resolve(name: str) -> str:
    """The registry name of ``name`` (a name or an alias); KeyError when there is none."""
    if name in EXPERIMENTS:
        return name
    for e in EXPERIMENTS.values():
        if name in e.aliases:
            return e.name
    raise KeyError(name)


__all__ = ["EXPERIMENTS", "Experiment", "names", "resolve"]
