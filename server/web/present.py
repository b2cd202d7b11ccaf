"""How the web page words things: sizes, times, what a conflict is and what each way of
resolving it does, in the terms of the devices involved.

Everything here returns plain text; the templates escape it (Jinja2 autoescaping), so
names from the vault never become markup.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from urllib.parse import quote

from gobi.protocol import ConflictInfo


def filesize(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def when(ts: float | None) -> str:
    """``2026-05-01 14:03 UTC``: the server does not know the reader's zone (no script)."""
    if not ts:
        return ""
    return _dt(ts).strftime("%Y-%m-%d %H:%M UTC")


def iso(ts: float | None) -> str:
    return _dt(ts).isoformat(timespec="seconds") if ts else ""


def ago(ts: float | None, now: float | None = None) -> str:
    if not ts:
        return ""
    secs = (time.time() if now is None else now) - ts
    future = secs < 0
    secs = abs(secs)
    for size, unit in ((86400 * 365, "year"), (86400 * 30, "month"), (86400, "day"),
                       (3600, "hour"), (60, "minute")):
        if secs >= size:
            n = int(secs // size)
            text = f"{n} {unit}{'s' if n != 1 else ''}"
            return f"in {text}" if future else f"{text} ago"
    return "in a moment" if future else "just now"


def duration(seconds: float) -> str:
    seconds = max(1, int(seconds))
    if seconds < 90:
        return f"{seconds} seconds"
    minutes = round(seconds / 60)
    return f"{minutes} minutes" if minutes < 90 else f"{round(minutes / 60)} hours"


def mtime(ns: int | None) -> str:
    return when(ns / 1e9) if ns else ""


def content_disposition(name: str, suffix: str = "") -> str:
    """``attachment`` with an ASCII fallback and the exact UTF-8 name (RFC 6266/8187)."""
    if suffix:
        stem, dot, ext = name.rpartition(".")
        name = f"{stem}{suffix}.{ext}" if dot and stem else f"{name}{suffix}"
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\;%' else "_" for c in name) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def origin_text(origin: str | None) -> str:
    if not origin:
        return ""
    if origin.startswith("restore:"):
        return f"restored from version {origin.split(':', 1)[1]}"
    if origin == "conflict":
        return "kept from a conflict"
    return origin


CASE_TITLES = {
    "modify_modify": "Edited on two devices",
    "modify_delete": "Edited after it was deleted",
    "delete_modify": "Deleted after it was edited",
    "delete_delete": "Deleted on two devices",
    "rename_rename": "Renamed on two devices",
    "attr_attr": "Attributes changed on two devices",
    "name_clash": "Two items with the same name",
    "parent_deleted": "Created in a deleted folder",
    "dir_changed": "Folder deleted while its contents changed",
}


def who(info: ConflictInfo) -> str:
    return info.device or info.user or "another device"


def conflict_story(info: ConflictInfo) -> str:
    """One sentence: what happened and what the vault shows until someone decides."""
    dev = who(info)
    case = info.case
    if case == "modify_modify":
        return (f"{dev} saved changes to a version of this file that had meanwhile been changed "
                f"elsewhere. The file shows the other change; {dev}'s edit is kept as version "
                f"{info.mine.get('rev', '?')}.")
    if case == "modify_delete":
        return (f"{dev} saved changes to this file after it had been deleted elsewhere. It stays "
                f"deleted for now; {dev}'s edit is kept as version {info.mine.get('rev', '?')}.")
    if case == "delete_modify":
        return (f"{dev} deleted this file without having seen a newer change to it. The file "
                f"is still there.")
    if case == "rename_rename":
        return (f"{dev} renamed this item to “{info.mine.get('name', '?')}” after it had been "
                f"renamed elsewhere. It keeps the other name for now.")
    if case == "name_clash":
        return (f"{dev} created an item with a name that had been taken meanwhile; {dev}'s item "
                f"was given another name.")
    return info.message or CASE_TITLES.get(case, case)


def resolve_choices(info: ConflictInfo, is_dir: bool = False) -> list[tuple[str, str]]:
    """(keep, button label) for the choices that make sense for this case, the
    recommended (nothing lost) one first where there is one."""
    dev = who(info)
    case = info.case
    if case == "modify_modify":
        return [("both", f"Keep both ({dev}'s edit as a conflicted copy)"),
                ("mine", f"Use {dev}'s edit"),
                ("theirs", "Keep the current content")]
    if case == "modify_delete":
        return [("mine", f"Bring it back with {dev}'s edit"), ("theirs", "Leave it deleted")]
    if case == "delete_modify":
        return [("theirs", "Keep the file"), ("mine", "Delete it (to the trash)")]
    if case == "rename_rename":
        choices = [("mine", f"Rename it to “{info.mine.get('name', '?')}”"),
                   ("theirs", "Keep the current name")]
        if not is_dir:
            choices.append(("both", "Keep both names (a copy under the other name)"))
        return choices
    if case == "name_clash":
        return [("both", "Keep both"),
                ("mine", f"{dev}'s item takes the name (the other goes to the trash)"),
                ("theirs", f"Remove {dev}'s item (to the trash)")]
    return [("mine", "Keep mine"), ("theirs", "Keep theirs"), ("both", "Keep both")]


FILTERS = {"filesize": filesize, "when": when, "iso": iso, "ago": ago, "mtime": mtime,
           "origin_text": origin_text}
