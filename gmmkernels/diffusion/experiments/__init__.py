"""The experiments of the methods in :mod:`gmmkernels.diffusion.methods`: their toy and digits reproductions
(``gmmkernels reproduce <name>``) and their short demo sections (``gmmkernels demo --methods <names>``), with the
tables, verdicts and plots. One module per method.
"""
