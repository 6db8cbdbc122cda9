"""The site folder: each build is written beside the live site and swapped in atomically.

`KPI_SITE_DIR` (default `site_output/site`) is a symbolic link to the published build, in
`.<name>.builds/` beside it. A build is rendered into a new folder there, then the link is
replaced in one step (a new link renamed over the old one): a reader always finds a whole
site, the old one or the new one. Builds of one site take a lock, so an older one never
replaces a newer one; recent builds stay a while for readers half-way through them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

KEEP_SECONDS = 600  # builds published this recently stay, for readers half-way through them
PARTIAL = ".partial"  # suffix of a build being written (or killed while it was)


class PublishError(RuntimeError):
    """The site cannot be published where it is asked to be."""


def site_path(site_dir: Path) -> Path:
    """`site_dir` made absolute without following it (it is a link to the published build)."""
    site_dir = Path(site_dir)
    return Path(os.path.realpath(site_dir.absolute().parent)) / site_dir.name


def builds_dir(site_dir: Path) -> Path:
    """The folder beside `site_dir` that holds its builds (`.<name>.builds`)."""
    site_dir = site_path(site_dir)
    return site_dir.parent / f".{site_dir.name}.builds"


@contextmanager
def publish_lock(site_dir: Path) -> Iterator[None]:
    """Held from the moment a build reads its data to its swap, so builds of one site run one
    after the other and an older one never replaces a newer one. The lock is the builds folder
    itself (`flock` on it): no lock file, and every publisher of the site, whatever its user or
    temporary folder, takes the same lock."""
    builds = builds_dir(site_dir)
    builds.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(builds, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def published_build(site_dir: Path) -> Path | None:
    """The build folder `site_dir` shows now (the folder it links to, or the folder itself
    when a site published by an older version is a real folder), or None. Ask holding
    `publish_lock(site_dir)`: the next `publish` replaces exactly this build."""
    site_dir = site_path(site_dir)
    if site_dir.is_symlink():
        target = site_dir.resolve()
        return target if target.is_dir() else None
    return site_dir if site_dir.is_dir() else None


def publish(build: Callable[[Path], None], site_dir: Path) -> Path:
    """Run `build` into a new folder under `builds_dir(site_dir)`, then make `site_dir` a link
    to it in one atomic step (a new link renamed over the old one): a reader always finds a
    whole site, the old one or the new one. Call it holding `publish_lock(site_dir)`.

    If `build` fails, the published site is left exactly as it was. The build before and those
    published in the last `KEEP_SECONDS` stay (readers may be half-way through them); older
    ones and what killed builds left are deleted. A `site_dir` that is a real folder (a site
    published by an older version) is moved among the builds first; one that is a link
    elsewhere is refused (PublishError).

    Returns:
        `site_dir`, absolute.
    """
    _refuse_a_folder_inside_a_build(site_dir)
    site_dir = site_path(site_dir)
    builds = builds_dir(site_dir)
    builds.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    partial = Path(tempfile.mkdtemp(prefix=f"{stamp}-", suffix=PARTIAL, dir=builds))
    try:
        build(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.chmod(0o755)  # mkdtemp's folder is private; a web server must read it
    previous = site_dir.resolve() if site_dir.is_symlink() else None
    if previous is not None and previous.parent != builds:
        shutil.rmtree(partial, ignore_errors=True)
        msg = (f"{site_dir} is a link to {previous}, not to one of its builds in {builds}: "
               "set KPI_SITE_DIR to the path the web server serves (it becomes a link to the "
               "published build) rather than linking it elsewhere yourself")
        raise PublishError(msg)
    if site_dir.is_dir() and not site_dir.is_symlink():  # once: the folder becomes a link
        if any(site_dir.iterdir()):
            log.warning("moving the site folder %s among the builds: it becomes a link",
                        site_dir)
            previous = builds / f"{stamp}-folder"
            site_dir.rename(previous)
        else:
            site_dir.rmdir()
    target = partial.with_name(partial.name.removesuffix(PARTIAL))
    partial.rename(target)  # whole now: never pruned as a killed build's leftover
    os.utime(target)  # its publication time, for `_prune`
    link = builds / f".link-{uuid.uuid4().hex}"
    link.symlink_to(os.path.relpath(target, site_dir.parent))
    os.replace(link, site_dir)
    _prune(builds, keep={target, previous})
    return site_dir


def _refuse_a_folder_inside_a_build(site_dir: Path) -> None:
    """Raise PublishError when a folder above `site_dir` is a link to a published build: a
    site published with the old default (`KPI_SITE_DIR=site_output`, a link to a build) would
    otherwise get the new site nested inside its old build, and the web server, serving the
    old link, would show the old site forever."""
    for folder in Path(site_dir).absolute().parents:
        if folder.is_symlink() and folder.resolve().parent.name.endswith(".builds"):
            msg = (f"{folder} is a link to a published build ({folder.resolve()}), from the "
                   f"layout before site_output/site: remove the link (`rm {folder}`) and its "
                   "builds and cache beside it, then serve the new KPI_SITE_DIR "
                   f"({site_dir}); see docs/operations.md, \"Upgrading\"")
            raise PublishError(msg)


def _prune(builds: Path, keep: set[Path | None]) -> None:
    """Delete every build in `builds` but `keep` and those published less than `KEEP_SECONDS`
    ago (a reader may be half-way through one), and what older versions and killed builds left
    beside the site."""
    recent = time.time() - KEEP_SECONDS
    for path in builds.iterdir():
        published = not path.name.startswith(".") and not path.name.endswith(PARTIAL)
        if path in keep or (published and path.lstat().st_mtime > recent):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    site_name = builds.name.removeprefix(".").removesuffix(".builds")
    for pattern in (f".{site_name}.new-*", f".{site_name}.old-*"):  # the two-rename scheme's
        for path in builds.parent.glob(pattern):
            shutil.rmtree(path, ignore_errors=True)
