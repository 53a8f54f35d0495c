"""Atomic output folders, shared by results folders and study folders.

A folder is written atomically: everything is built in a hidden staging sibling and
renamed into place at the end (:func:`atomic_folder`), so an interrupted write never
leaves a folder that looks complete. An existing non-empty folder is only replaced with
``overwrite=True``, and only when it holds nothing but files of its kind
(:class:`FolderKind`), so a mistaken ``--out ~`` cannot delete anything else. The folder
check (:func:`check_folder`, run before any simulation) also proves that the location is
writable, by creating and removing an empty probe folder (:func:`check_writable`), so a
bad ``--out`` is reported before a long run rather than after it.

A folder given as a symbolic link is written *through* the link: the folder it points to
is replaced and the link kept (a link to nothing is refused).

A process killed while writing leaves its hidden staging folder
``.<name>.partial-<pid>-<host>-<hex>`` behind. The next write into the same parent folder
removes such leftovers, and only those (:func:`remove_stale_staging`): folders named that
way by a process of this host that is no longer alive, holding nothing but files jaxstage
writes (a retired ``.<name>.old-...`` folder is removed only once ``<name>`` exists again,
since until then it may be the only copy of the earlier results). Anything else is never
touched, and nothing is ever deleted recursively.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import shutil
import socket
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "FolderKind",
    "folder_path",
    "link_target",
    "named",
    "check_writable",
    "check_folder",
    "atomic_folder",
    "remove_if_only",
    "remove_stale_staging",
    "process_alive",
    "host_tag",
]


@dataclasses.dataclass(frozen=True)
class FolderKind:
    """A kind of output folder: the files it may hold, and how its refusals read.

    Attributes:
        files: every file name a folder of this kind may hold; an existing folder holding
            anything else is never replaced, and only these are ever deleted from it.
        files_label: what the files are called in a refusal (``"study files"``).
        replace_verb: what a refused write was going to do (``"write the study into"``).
        not_empty: how an existing non-empty folder is described (``"already holds a
            study"``).
    """

    files: frozenset[str]
    files_label: str
    replace_verb: str
    not_empty: str


def folder_path(folder: str | os.PathLike[str]) -> Path:
    """``folder`` as a path, refusing names that cannot be an output folder.

    ``Path("")`` is the current folder, so an empty name would silently write (or refuse
    to write) somewhere the user did not name; ``.`` and ``..`` have no name of their own
    for the hidden staging sibling, which would land inside the target itself.
    """
    text = os.fspath(folder)
    if not isinstance(text, str):
        raise TypeError(f"output folder must be a str or path, got {folder!r}")
    if text == "":
        raise ValueError("output folder must name a folder, got an empty string ''")
    path = Path(text)
    if path.name in ("", ".", ".."):
        raise ValueError(
            f"output folder must end in a folder name, got {text!r}; name the folder itself "
            f"(e.g. {os.path.join(text, 'run')!r})"
        )
    return path


def link_target(path: Path) -> Path:
    """The folder that a write to ``path`` really creates or replaces.

    ``path`` itself, or for a symbolic link the folder it points to: a link is kept and
    written through (replacing the link by a folder would leave the linked folder stale
    and surprise whoever set the link up). A link to nothing is refused, since writing
    would create its target somewhere the user may not expect (an unmounted disk).
    """
    if not path.is_symlink():
        return path
    real = Path(os.path.realpath(path))
    if not real.exists():
        raise ValueError(
            f"output folder {str(path)!r} is a symbolic link to {str(real)!r}, which does "
            f"not exist; create that folder or remove the link"
        )
    return real


def named(path: Path, real: Path) -> str:
    """``'path'``, or ``'path' (a link to 'real')`` when a link is written through."""
    return repr(str(path)) if path == real else f"{str(path)!r} (a link to {str(real)!r})"


def host_tag() -> str:
    """8 hex digits naming this host, so stale-folder cleanup only judges local PIDs."""
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _new_tag() -> str:
    """``<pid>-<host>-<hex>``: unique, and enough to tell later whether its writer lives."""
    return f"{os.getpid()}-{host_tag()}-{uuid.uuid4().hex[:8]}"


#: Hidden folders :func:`atomic_folder` and :func:`check_writable` make: a staging folder
#: (``partial``), a retired previous folder (``old``) or a write probe. Folders of versions
#: before the host tag have no ``<host>``.
_OWN_NAME = re.compile(
    r"\.(?:(?P<name>.+)\.(?P<kind>partial|old)|jaxstage-(?P<probe>probe))"
    r"-(?P<pid>\d+)-(?:(?P<host>[0-9a-f]{8})-)?[0-9a-f]{8}"
)


def check_writable(folder: Path, where: Path) -> None:
    """Prove that a folder can be made in ``where`` (or, when it does not exist yet, in its
    nearest existing ancestor, under which it will be created) before any simulation runs.

    Permission bits alone cannot tell (read-only mounts, ``/proc``, ACLs, running as root),
    so an empty, uniquely named probe folder is created and removed there: exactly the
    operation the write makes at the end, when a failure would lose the whole run.

    Raises:
        ValueError: naming ``folder``, the location and the reason.
    """
    ancestor = where
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(
            f"cannot write output folder {str(folder)!r}: {str(ancestor)!r} is not a folder"
        )
    probe = ancestor / f".jaxstage-probe-{_new_tag()}"
    try:
        probe.mkdir()
    except OSError as error:
        raise ValueError(
            f"cannot write output folder {str(folder)!r}: cannot create a folder in "
            f"{str(ancestor)!r} ({error.strerror or error})"
        ) from None
    with contextlib.suppress(OSError):  # just made and empty; else a later write removes it
        probe.rmdir()


def check_folder(folder: str | os.PathLike[str], kind: FolderKind, *, overwrite: bool) -> Path:
    """Check that a folder of ``kind`` may be written to ``folder``; before a long run.

    A symbolic link is checked through (:func:`link_target`). Foreign entries are
    reported first: ``--overwrite`` would not help with them, so it is not suggested.

    Returns:
        ``folder`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``folder`` is empty, ``.`` or ``..``, a file, a link to nothing; or it
            holds anything but plain files named in ``kind.files`` (never replaced); or it
            is not empty and ``overwrite`` is false; or its location is not writable.
    """
    path = folder_path(folder)
    real = link_target(path)
    if real.exists() and not real.is_dir():
        raise ValueError(f"output folder {named(path, real)} exists and is not a folder")
    if real.is_dir():
        entries = sorted(entry.name for entry in real.iterdir())
        foreign = [
            name
            for name in entries
            if name not in kind.files or (real / name).is_symlink() or not (real / name).is_file()
        ]
        if foreign:
            raise ValueError(
                f"refusing to {kind.replace_verb} {named(path, real)}: it holds "
                f"{foreign[:5]}, which are not {kind.files_label} "
                f"({', '.join(sorted(kind.files))})"
            )
        if entries and not overwrite:
            raise ValueError(
                f"output folder {named(path, real)} {kind.not_empty}; pass overwrite=True "
                f"(--overwrite) or choose another folder"
            )
    check_writable(path, real.parent)
    return path


def _jaxstage_files() -> frozenset[str]:
    """Every file name a results or study folder may hold (imported late: no cycle)."""
    from jaxstage.results import RESULT_FILES
    from jaxstage.study import STUDY_FILES

    return RESULT_FILES | STUDY_FILES


def remove_if_only(folder: Path, allowed: frozenset[str]) -> list[str]:
    """Delete ``folder`` if it holds nothing but plain files named in ``allowed``.

    Returns the entries that are not such files, in which case nothing is deleted: a
    folder jaxstage made can only hold files jaxstage wrote, so anything else means it is
    not (only) ours. Files are unlinked one by one (no recursive delete that could follow
    into something unexpected).
    """
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    foreign = sorted(
        entry.name
        for entry in entries
        if entry.name not in allowed or not entry.is_file(follow_symlinks=False)
    )
    if foreign:
        return foreign
    try:
        for entry in entries:
            os.unlink(entry.path)
        folder.rmdir()
    except OSError:
        pass  # something appeared meanwhile, or no permission: keep the rest
    return []


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host may still be running (when unsure: yes)."""
    if os.name != "posix" or pid <= 0 or pid == os.getpid():
        return True  # os.kill(pid, 0) terminates the process on Windows; never risk it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    return True


def remove_stale_staging(parent: Path) -> list[Path]:
    """Remove the hidden folders interrupted writes of dead processes left in ``parent``.

    A kill during the final write leaves its staging folder behind (a ``finally`` cannot
    run after ``SIGKILL``); without this, every such kill would leave one for good. Only
    folders named as this module names them (:data:`_OWN_NAME`), written on this host by
    a process that is no longer alive, that are real folders holding nothing but files
    jaxstage writes are removed. A retired ``old`` folder is removed only when the folder
    it was retired from exists again: before that it may be the only copy of the earlier
    results. A probe folder is removed only when empty.

    Returns:
        The folders removed.
    """
    host, removed = host_tag(), []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        match = _OWN_NAME.fullmatch(entry.name)
        if match is None or match["host"] not in (None, host):
            continue
        if not entry.is_dir(follow_symlinks=False) or process_alive(int(match["pid"])):
            continue
        path = Path(entry.path)
        if match["kind"] == "old" and not os.path.lexists(parent / match["name"]):
            continue
        allowed = frozenset() if match["probe"] else _jaxstage_files()
        if not remove_if_only(path, allowed) and not os.path.lexists(path):
            removed.append(path)
    return removed


@contextmanager
def atomic_folder(
    folder: str | os.PathLike[str],
    overwrite: bool,
    check: Callable[..., Path],
    allowed: frozenset[str],
) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; rename it to ``folder`` on success.

    On any exception the temporary folder is removed and ``folder`` is left as it was.
    An existing ``folder`` is moved aside, the new one renamed in, then the old removed,
    so a complete-looking folder is always either the old or the new one. ``check`` is
    the folder check (``check(folder, overwrite=...)``), run before and at the end;
    ``allowed`` the file names it accepts, the only ones deleted from the old folder.
    A symbolic link is written through (:func:`link_target`). Staging folders that
    killed writes left in the same parent are cleaned up first
    (:func:`remove_stale_staging`).
    """
    target = check(folder, overwrite=overwrite)
    real = link_target(target)
    real.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(real.parent)
    tag = _new_tag()
    staging = real.parent / f".{real.name}.partial-{tag}"
    staging.mkdir()
    try:
        yield staging
        check(target, overwrite=overwrite)  # nothing appeared meanwhile
        if real.is_dir() and any(real.iterdir()):
            retired = real.parent / f".{real.name}.old-{tag}"
            os.replace(real, retired)
            try:
                os.replace(staging, real)
            except BaseException:
                os.replace(retired, real)
                raise
            foreign = remove_if_only(retired, allowed)
            if foreign:  # appeared after the check: keep them, and say where
                warnings.warn(
                    f"kept the previous {str(real)!r} as {str(retired)!r}: it holds "
                    f"{foreign[:5]}, which jaxstage did not write",
                    RuntimeWarning,
                    stacklevel=3,
                )
        else:
            os.replace(staging, real)  # rename(2) replaces an empty directory
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # made just above: only ours inside
        raise
