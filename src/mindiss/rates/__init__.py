"""Learning rates: everything that decides lr_k and the learning-rate matrix P_k of an update.

``schedules``: eta(t) (scalar schedules, alpha(t), the harmonic optimum, natural gradient) and their
discretisation into updates; ``preconditioners``: learning-rate matrices (Fisher full/diag/low-rank,
Friction, Adam) and their estimators; ``relaxation``: relaxation times and friction tensors from chain
trajectories (the one tau estimator); ``recipes``: named (schedule, matrix) pairs; ``optimal``: exact
and numerical optima.

May import: energies, backends (pilot runs), estimators, errors. Not core or app.
"""
