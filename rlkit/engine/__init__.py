"""The engine: the training loops, written once, that every learner in ``agents/`` runs on.

* :mod:`rlkit.engine.off_policy`: act, store in a replay buffer, update (DQN, DDPG, TD3, SAC).
* :mod:`rlkit.engine.on_policy`: collect a rollout, update on it (A2C, PPO).
* :mod:`rlkit.engine.asynchronous`: Hogwild worker processes over one shared model (A3C), each reusing the
  rollout collection and A2C's gradients.
* :mod:`rlkit.engine.imitation`: the imitation learners' loops (BC epochs, DAgger rounds, the
  adversarial and preference learners' rounds).

An agent file declares what it needs from its loop (a small learner class: networks, ``update()``, what
to checkpoint) and its ``train(cfg, resume=False, callbacks=None)`` is one call into the engine. Around
every loop, :class:`rlkit.run.Run` keeps the run's bookkeeping: evaluation cadence, the log rows and the
progress bar, checkpoints and resume, signals, callbacks, ``target_return`` and the best checkpoint.
:mod:`rlkit.engine.common` holds what the loops share.
"""
