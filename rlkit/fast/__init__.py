"""Speed paths, out of the files people read: each one computes exactly what a plain PyTorch path computes,
only faster on small CPU batches, and ``tests/test_fast.py`` checks each against that plain path (outputs,
and gradients where it trains).

* :mod:`rlkit.fast.numpy_forward`: acting in numpy on views of the live weights (batches of 1-64).
* :mod:`rlkit.fast.flat_adam`: Adam over one flat parameter buffer (five tensor ops per step).

Agents and the engine select a fast path by calling it: each returns None where it does not apply (a GPU
model, images, an unusual layer), and the caller then takes the plain torch path.
"""
