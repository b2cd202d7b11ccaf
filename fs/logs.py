"""Logs of a mount: one line per operation, as text for people or JSON for log shippers.

Every line of the ``gobi.fs.ops`` logger describes one finished operation of a class:

``upload``  one journal entry sent (op, path, bytes, ms, result)
``fetch``   the chunks an open file had to fetch, logged when it is closed
``pull``    a batch of remote changes applied to the mirror (events, seq)
``pin``     a pin or unpin and each pass that made pinned content local
``link``    the server became reachable or unreachable
``mount``   mounted, unmounted (changes still pending), drained after unmount
``repair``  a difference between the mirror and the server put right (``gobi.fs.verify``)

``oplog(kind, **fields)`` emits such a line; ``setup(fmt, verbose)`` configures the
process's logging once (``gobi mount --log-format text|json``). Nothing here ever sees a
token: the Authorization header lives in ``gobi.fs.remote`` only, and fields are named
values chosen by the caller (paths, counts, durations, errors) — never request headers.
"""

from __future__ import annotations

import json
import logging
import time

OPS = logging.getLogger("gobi.fs.ops")

#: Standard attributes of a LogRecord; anything else came in through ``extra``.
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def oplog(kind: str, level: int = logging.INFO, **fields: object) -> None:
    """One line for one operation of class ``kind`` (fields with value None are left out)."""
    if not OPS.isEnabledFor(level):
        return
    clean = {k: v for k, v in fields.items() if v is not None}
    text = " ".join(f"{k}={_text(v)}" for k, v in clean.items())
    OPS.log(level, "%s %s", kind, text, extra={"event": kind, "fields": clean})


def _text(value: object) -> str:
    s = str(value)
    if not s or any(c in s for c in ' ="\n\t'):
        return json.dumps(s, ensure_ascii=False)
    return s


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, time, level, logger and msg; operation lines have
    ``event`` (the class: upload, fetch, …) and their fields at the top level instead."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        event = getattr(record, "event", None)
        if event is not None:
            out["event"] = event
            out.update(getattr(record, "fields", {}))
        else:
            out["msg"] = record.getMessage()
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in ("event", "fields") and key not in out:
                out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup(fmt: str = "text", verbose: bool = False) -> None:
    """Configure the root logger of a mount process (stderr: the journal or mount.log)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        # One line per HTTP request is the server's access log's job, not the mount's.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("httpcore").setLevel(logging.WARNING)


__all__ = ["JsonFormatter", "OPS", "oplog", "setup"]
