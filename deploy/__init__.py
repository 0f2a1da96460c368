"""The deploy tier: what runs the platform on top of the layers. The ``lambdarec`` command line, the
supervisor behind ``up`` / ``ps`` / ``down``, the demo and its report, the event generator, the evaluation
on a public interactions file and ``status``. Nothing in the layers or the core imports it.
"""
