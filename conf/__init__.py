"""qsweep's Hydra config tree (installed as the package ``harness.conf``).

Groups: ``model``, ``data``, ``executor``, ``search``, ``selector``,
``storage``; the defaults list is in ``config.yaml``. The schema that validates
every key is :mod:`harness.config`.
"""
