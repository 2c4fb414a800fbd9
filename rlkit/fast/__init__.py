"""Speed paths, out of the files people read: each one computes what a plain PyTorch path computes, only faster
on small CPU batches, and a test checks each against that plain path (outputs, and gradients or optimizer steps
where it trains: ``tests/test_fast.py``, ``test_fast_ppo.py``, ``test_fast_fused.py``).

* :mod:`rlkit.fast.numpy_forward`: acting in numpy on views of the live weights (batches of 1-64).
* :mod:`rlkit.fast.flat_adam`: Adam over one flat parameter buffer (five tensor ops per step).
* :mod:`rlkit.fast.presample`: one forward of a fixed network over a training round's minibatches (DQN targets).
* :mod:`rlkit.fast.fused_mlp`: DQN's whole gradient step on an MLP Q-network without autograd, bit for bit the
  autograd step's result.
* :mod:`rlkit.fast.stacked_dqn`: several seeds' DQN gradient steps (and greedy actions) as one, their networks
  stacked (``tests/test_fast_stacked.py``).
* :mod:`rlkit.fast.ppo_update`: PPO's functional evaluator and flat-buffer optimizer.
* :mod:`rlkit.fast.fused_cql`: CQL's critic step by hand (the actor's trunk once per state, the penalty's gradient
  in closed form, the backward as matrix products into fixed buffers; ``tests/test_fast_cql.py``).
* :mod:`rlkit.fast.fused_conv`: DQN's gradient step on the MinAtar convolutional Q-network by hand (im2col patches,
  feature-major activations, the optimizer's own state), one seed or several stacked (``tests/test_fast_conv.py``).
* :mod:`rlkit.fast.fused_ac_conv`: A2C's update and acting on the MinAtar convolutional actor-critic by hand, on
  the same layout (``tests/test_fast_ac_conv.py``).

Agents and the engine select a fast path by calling it: each returns None where it does not apply (a GPU
model, images, an unusual layer), and the caller then takes the plain torch path.
"""
