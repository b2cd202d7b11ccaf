"""gobi: self-hosted file sync. A vault on a server appears as an ordinary folder.

Installed layout (see docs/architecture.md): ``gobi.protocol`` (wire models shared by
both sides), ``gobi.server`` (the Sanic API, from ``server/``), ``gobi.drivers`` (storage
drivers, from ``drivers/``), ``gobi.fs`` (the FUSE client, from ``fs/``), ``gobi.cli``.
"""

__version__ = "0.1.0"
