"""Sub-commands of the ``yofo`` command line, one module each (see :mod:`yofo.cli`)."""
