"""The step framework: how steps are declared, called, launched and generated.

:mod:`spec` is how a step is declared, :mod:`execute` how every runner calls one,
:mod:`generate` what is derived from the declarations, and :mod:`launch` (here) and
:mod:`trainjob` (a cluster) start the processes of a data-parallel ``train``. The framework
knows no step: its callers hand it the declarations (:data:`tlops.steps.STEPS`).
"""
