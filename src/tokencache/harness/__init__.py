"""The harness around the methods: ``bench``, ``generate``, ``eval``, ``demo``, the peers, the published shapes,
pipeline I/O, one progress helper, one table printer and one "method[:preset] or file" parser.

Importing this package is light (no torch); :mod:`.registry` is the only module that imports the core.
"""
