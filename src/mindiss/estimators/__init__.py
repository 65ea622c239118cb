"""Estimators and references: numbers computed beside a run, not by it.

``bounds``: closed forms (harmonic bound, learnable-variance optimum, Schmiedl-Seifert, joules);
``free_energy``: Delta F by Jarzynski, BAR, TI and AIS with errors; ``evaluate``: grid-quadrature NLL
and AIS log Z for models; ``references``: the OU moment map, the harmonic linear recursion and
adaptive ODE integration used as exact references.

May import: energies, backends, rates.schedules, errors. Not core or app.
"""
