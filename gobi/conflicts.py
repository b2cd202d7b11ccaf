"""Conflict strategies: who wins when two sides changed the same thing.

Pure decisions, no I/O, shared by the server (which applies them to writes sent with
``on_conflict="strategy"``) and the client (which applies them to remote events that meet
local changes). A strategy answers one question per case: which side should the tree
show? What happens to the other side is fixed per case and never loses data (the loser
becomes a conflicted copy, a version in history, a trash entry or a recorded conflict);
``docs/conflicts.md`` has the full table.

``mine`` is the side that arrives second (the request, or the local change a client holds
when a remote event comes in); ``theirs`` is the state already there.

    Decision.MINE     mine is applied; theirs stays in history / trash / is renamed
    Decision.THEIRS   theirs stays; mine is kept in history / trash / under another name
    Decision.BOTH     both stay visible (conflicted copy, surviving new files)
    Decision.MANUAL   theirs stays, mine is kept and the conflict waits for a decision

Also here: the vault's per-path rules (``strategy_for``) and the conflicted-copy name.
"""

from __future__ import annotations

import abc
import enum
import functools
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from .protocol import MAX_NAME_BYTES, VaultSettings


class Case(str, enum.Enum):
    MODIFY_MODIFY = "modify_modify"
    MODIFY_DELETE = "modify_delete"     # mine modifies content that theirs deleted
    DELETE_MODIFY = "delete_modify"     # mine deletes content that theirs modified
    DELETE_DELETE = "delete_delete"
    RENAME_RENAME = "rename_rename"
    ATTR_ATTR = "attr_attr"
    NAME_CLASH = "name_clash"           # create/create, file vs directory, move onto a new name
    PARENT_DELETED = "parent_deleted"   # mine creates inside a directory theirs deleted
    DIR_CHANGED = "dir_changed"         # mine deletes a directory, theirs changed a node inside


class Decision(str, enum.Enum):
    MINE = "mine"
    THEIRS = "theirs"
    BOTH = "both"
    MANUAL = "manual"


@dataclass(frozen=True)
class Side:
    """One side of a conflict: who, and when the change was made (ns since the epoch;
    content: the file's mtime; deletes and renames: when they happened)."""

    device: str | None = None
    time_ns: int = 0


class ConflictStrategy(abc.ABC):
    name: str = ""

    @abc.abstractmethod
    def decide(self, case: Case, mine: Side, theirs: Side) -> Decision:
        """Which side the tree should show for this case."""


class KeepBoth(ConflictStrategy):
    """The default. Content is never hidden: two edits give two files; an edit beats a
    delete; metadata (names, modes) follow the later change; new files inside a deleted
    directory survive."""

    name = "keep-both"

    def decide(self, case: Case, mine: Side, theirs: Side) -> Decision:
        if case in (Case.MODIFY_MODIFY, Case.NAME_CLASH, Case.DIR_CHANGED, Case.PARENT_DELETED):
            return Decision.BOTH
        if case is Case.DELETE_MODIFY:
            return Decision.THEIRS          # the modification survives
        return Decision.MINE                # modify/delete: the modification survives;
        #                                     rename, attrs: the later change wins


class LastWriterWins(ConflictStrategy):
    """The newer change (by its time) is shown; the older one stays in history or trash.
    Ties go to mine (it arrived later)."""

    name = "last-writer-wins"

    def decide(self, case: Case, mine: Side, theirs: Side) -> Decision:
        if case is Case.PARENT_DELETED:
            return Decision.BOTH
        return Decision.MINE if mine.time_ns >= theirs.time_ns else Decision.THEIRS


class ServerWins(ConflictStrategy):
    """What the server has stays; the request's side is kept out of sight (history,
    trash, another name). New files in a deleted directory still survive."""

    name = "server-wins"

    def decide(self, case: Case, mine: Side, theirs: Side) -> Decision:
        if case is Case.PARENT_DELETED:
            return Decision.BOTH
        return Decision.THEIRS


class ClientWins(ConflictStrategy):
    """The request's side is applied; the server's is kept in history, trash or under
    another name."""

    name = "client-wins"

    def decide(self, case: Case, mine: Side, theirs: Side) -> Decision:
        return Decision.MINE


class Manual(ConflictStrategy):
    """Content and name conflicts wait for ``resolve`` (keep mine, theirs or both); until
    then the tree shows theirs and mine is kept. Attributes keep theirs; new files in a
    deleted directory survive."""

    name = "manual"

    def decide(self, case: Case, mine: Side, theirs: Side) -> Decision:
        if case in (Case.MODIFY_MODIFY, Case.MODIFY_DELETE, Case.DELETE_MODIFY,
                    Case.RENAME_RENAME, Case.NAME_CLASH):
            return Decision.MANUAL
        if case in (Case.DIR_CHANGED, Case.PARENT_DELETED):
            return Decision.BOTH
        return Decision.THEIRS


STRATEGIES: dict[str, ConflictStrategy] = {
    s.name: s for s in (KeepBoth(), LastWriterWins(), ServerWins(), ClientWins(), Manual())
}


def get_strategy(name: str) -> ConflictStrategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown conflict strategy {name!r}") from None


# --------------------------------------------------------------------------- path rules


@functools.lru_cache(maxsize=512)
def _glob_re(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1:end]
                neg = body.startswith("!")
                body = body[1:] if neg else body
                out.append("[" + ("^" if neg else "") + body.replace("\\", "\\\\") + "]")
                i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def glob_match(pattern: str, path: str) -> bool:
    """gitignore-like: a pattern without ``/`` matches the last path component, one with
    ``/`` the whole path (a leading ``/`` is ignored); ``*`` and ``?`` stay within a
    component, ``**`` crosses components."""
    path = path.strip("/")
    if "/" not in pattern.strip("/"):
        return bool(_glob_re(pattern.strip("/")).match(path.rsplit("/", 1)[-1]))
    return bool(_glob_re(pattern.strip("/")).match(path))


def strategy_for(settings: VaultSettings, path: str) -> ConflictStrategy:
    """The strategy for a vault path: the first matching rule, else the vault's default."""
    for rule in settings.conflict_rules:
        if glob_match(rule.pattern, path):
            return STRATEGIES[rule.strategy]
    return STRATEGIES[settings.conflict_strategy]


# --------------------------------------------------------------------------- names


def _fit(stem: str, suffix: str) -> str:
    """Shorten ``stem`` so that ``stem + suffix`` fits a name (≤ 255 bytes of UTF-8)."""
    room = MAX_NAME_BYTES - len(suffix.encode())
    data = stem.encode()
    if len(data) > room:
        stem = data[:max(room, 1)].decode("utf-8", "ignore")
    return stem + suffix


def split_ext(name: str, is_dir: bool = False) -> tuple[str, str]:
    """``report.final.docx`` → (``report.final``, ``.docx``); dot files and directories
    keep their whole name as the stem."""
    if is_dir:
        return name, ""
    stem, dot, ext = name.rpartition(".")
    if not stem or not dot or "/" in ext:
        return name, ""
    return stem, "." + ext


def conflicted_name(name: str, device: str, when: datetime | float, is_dir: bool = False,
                    attempt: int = 1) -> str:
    """``NAME (conflicted copy DEVICE YYYY-MM-DD HHMMSS).EXT`` (UTC); ``attempt`` > 1
    adds `` N`` inside the parentheses when that name is taken too."""
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(when, timezone.utc)
    stem, ext = split_ext(name, is_dir)
    extra = f" {attempt}" if attempt > 1 else ""
    return _fit(stem, f" (conflicted copy {device} {when:%Y-%m-%d %H%M%S}{extra}){ext}")


def held_name(name: str, is_dir: bool = False, attempt: int = 1) -> str:
    """``NAME (held).EXT``, then ``NAME (held 2).EXT``…: a held-deleted directory moved
    aside because the device that deleted it made a new one of that name."""
    stem, ext = split_ext(name, is_dir)
    extra = f" {attempt}" if attempt > 1 else ""
    return _fit(stem, f" (held{extra}){ext}")


def restored_name(name: str, is_dir: bool = False, attempt: int = 1) -> str:
    """``NAME (restored).EXT``, then ``NAME (restored 2).EXT``…: a trash entry restored
    where its name is taken."""
    stem, ext = split_ext(name, is_dir)
    extra = f" {attempt}" if attempt > 1 else ""
    return _fit(stem, f" (restored{extra}){ext}")
