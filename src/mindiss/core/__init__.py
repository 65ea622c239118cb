"""The core: the canonical update exists here once.

* ``options``: the grouped options of ``train`` (dynamics, ensemble, estimation, checkpointing, output).
* ``contract``: ``check_contract`` validates every input and makes every path choice once, before
  the first update; it returns a frozen ``Plan``. Bad pairings are refused here and nowhere else.
* ``step``: ``Paths`` binds a plan to a replica; ``step`` is one canonical update
  (g_hat -> theta -> work -> move -> heat); ``run_updates`` is the loop around it.
* ``state``: ``ReplicaState``, what a checkpoint saves; ``checkpoint``: safe checkpoints;
  ``ledger``: the one ledger (work, heat, Delta F dispatch, excess work, measured bias);
  ``results``: ``TrainResult``, ``History``, ``ThetaProtocol``; ``summary``: per-replica summaries;
  ``train``: ``train()`` and ``replay()``, the replicas around the loop.

May import: energies, backends, rates, estimators, data, errors. Not adapters or app.
"""
