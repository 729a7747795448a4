"""The step framework: how a step is declared (:mod:`spec`), how every runner calls one
(:mod:`execute`), what is generated from the declarations (:mod:`generate`), and the launchers
of a data-parallel ``train`` (:mod:`launch` here, :mod:`trainjob` on a cluster).
"""
