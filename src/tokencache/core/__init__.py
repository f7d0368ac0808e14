"""The method-independent core.

| module | what it holds |
|---|---|
| ``config`` | ``BaseConfig`` (validation, presets, serialisation, the method contract), the method registry |
| ``schedule`` | :class:`StepAction`, open step kinds, plan resampling |
| ``state`` | :class:`CallState` per cache context, :class:`ContextStates` |
| ``calls`` | call detection: ``cache_context`` probe, scheduler watch, the outermost step hook |
| ``hooks`` | the handle of one ``tc.apply``, bindings, the call-scoped hook base, output slots, ``outside_graph`` |
| ``approximators`` | how a skipped output is produced: reuse, taylor, hermite, foca |
| ``accounting`` | meta-device twin, exact MACs, :class:`Summary` |
| ``tokens`` | pure token math (scores, selection, gather/scatter, pruning, recovery) |
| ``rng`` | tokencache's own seeded generators |
"""
