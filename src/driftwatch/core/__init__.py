"""The pure pipeline: decode -> slice -> join -> fold into tick summaries -> windows -> metrics -> rules.

Nothing here opens a socket, a file or reads a clock: time is always an
argument. The daemon, ``driftwatch replay`` and the tests all drive it.
"""
