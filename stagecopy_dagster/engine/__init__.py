"""The copy engine: plan one table's copy from facts, then run the chosen path.

Modules, in the order a copy uses them: :mod:`~stagecopy_dagster.engine.types` (the values that
cross function boundaries), ``describe`` (source and target facts), ``plan`` (the one pure
decision), ``session`` (source snapshot, target transaction), ``steps`` and ``stream`` (the named
steps and the COPY pump), one module per path (``direct``, ``staged``, ``diff``, ``parallel``),
and ``copier`` (:class:`TableCopier`, whose ``run()`` reads as the algorithm).

This package imports nothing at import time, so :mod:`stagecopy_dagster.statements` can use
its types without a cycle.
"""
