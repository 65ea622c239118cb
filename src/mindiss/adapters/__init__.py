"""Thin adapters for a user's own PCD loop: ``optim`` (the minimal-dissipation optimizer and LR
scheduler) and ``tracker`` (``WorkTracker``, the live ledger). They call the one ledger
(``core.ledger``) and the one set of estimators (``rates``); they re-implement neither.

May import: core.ledger, rates, estimators, energies, errors. Not app.
"""
