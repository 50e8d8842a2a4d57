"""Tools that run on a developer machine with a checkout of the repository, never on a gateway.

- :mod:`.deploy`: ``edgevib deploy bundle|ssh`` (builds the gateway's wheel from the checkout,
  pins and downloads its dependencies, ships the bundle over ssh).

Nothing in the runtime (``edgevib`` core, ``edgevib.protocol``, ``edgevib.edge``,
``edgevib.models``, ``edgevib.cloud``) imports this package; only the CLI does, when one of
its commands runs (``tests/test_import_table.py``). docs/design.md says why it is kept apart.
"""

__all__: list[str] = []
