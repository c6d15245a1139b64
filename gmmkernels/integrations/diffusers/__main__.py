"""``python -m gmmkernels.integrations.diffusers demo [--quick] [--out DIR]``."""
import sys

from .demo import main

sys.exit(main())
