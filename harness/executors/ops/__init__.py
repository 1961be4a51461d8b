"""Op implementations, one module per layer family (see :mod:`harness.executors`).

Every module here is imported by :func:`harness.executors.registry.load_ops`;
a module registers its ops with :func:`harness.executors.registry.register`.
"""
