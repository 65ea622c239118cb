"""The core: the canonical update exists here once.

* ``options``: the grouped options of ``train`` (dynamics, chains, estimation, checkpointing, output).
* ``contract``: ``check_contract`` validates every input and makes every path choice once, before
  the first update; it returns a frozen ``Plan``. Bad pairings are refused here and nowhere else.
* ``step``: ``bind`` turns a plan and a replica's state into the chosen paths; ``step`` is one
  canonical update (g_hat -> theta -> work -> move -> heat); ``run_updates`` is the loop around it
  (stop requests, history rows, observers, progress, checkpoints).

May import: energies, backends (chains, moments, Fokker-Planck, sharded), samplers, schedules,
preconditioners, data, errors. Must not import: the app layer (cli, config, report, experiments).
"""
