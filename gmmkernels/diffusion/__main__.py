"""``python -m gmmkernels.diffusion {train,sample} ...`` (also the torchrun entry point for DDP training)."""
import sys

from .commands import main

sys.exit(main())
