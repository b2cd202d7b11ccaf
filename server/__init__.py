"""The gobi server (installed as ``gobi.server``): a Sanic API over a metadata store, a
storage driver and an event fan-out. ``app.create_app`` is the composition root."""
