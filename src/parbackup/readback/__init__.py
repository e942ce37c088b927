"""Readback: restore to a directory, onto a block device, to a stream, and verify.

One core for all four (DESIGN.md "Readback"): ``select`` chooses the set, files and
records from the catalog; ``core`` starts one reader process per device (``reader``),
each checking every record and feeding a sink (``sinks``); ``restore``, ``image``,
``stream`` and ``verify`` are the four uses.
"""
