"""Publishing is atomic: readers of the site, on disk and over HTTP, read whole builds while 20
rebuilds land, never a missing, half-built or mixed site; builds running at once publish in the
order they read their data; leftovers of killed builds go; the lock is not in the repository."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import orjson
import pytest

from kpi.aggregate_docs import put_aggregates
from kpi.backfill import backfill
from kpi.couch import AGGREGATES, CouchStore, content_of
from kpi.publish import build_site
from kpi.serve import make_server
from kpi.site import build_id
from kpi.sitedir import PublishError, builds_dir, publish_lock

pytestmark = pytest.mark.integration
START, END = date(2026, 10, 2), date(2026, 10, 3)
REBUILDS = 20
BUILD_META = re.compile(rb'<meta name="kpi-build" content="([^"]+)">')


def _digest(content: bytes) -> str:
    return hashlib.sha1(content).hexdigest()


def _build_of(path: str, content: bytes) -> str | None:
    """The build id a page or the manifest names (None for other files)."""
    if path.endswith(".html"):
        found = BUILD_META.search(content)
        return found.group(1).decode() if found else "<no build id>"
    if path == "data/manifest.json":
        return orjson.loads(content)["build_id"]
    if path.startswith("data/view/"):  # what the pages' scripts fetch
        return orjson.loads(content)["build"]
    return None


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_readers_see_whole_builds_during_20_rebuilds(settings):
    backfill(START, END, settings, progress=False)
    site = settings.site_dir
    assert site.is_symlink()
    # every file but the archive of earlier builds, which rotates out (kpi.changes)
    names = [name for name in _files(site) if name.endswith((".html", ".csv", ".json"))
             and not name.startswith("archive/")]
    store = CouchStore(settings)
    day_doc = content_of(store.get(AGGREGATES, END.isoformat()))
    published: dict[str, dict[str, str]] = {}  # build id → file → digest, as each build landed
    errors: list[str] = []
    disk_passes: list[tuple[str, dict[str, str]]] = []
    http_reads: list[tuple[str, str]] = []
    stop = threading.Event()

    def record():
        files = _files(site.resolve())
        published[orjson.loads(files["data/manifest.json"])["build_id"]] = {
            name: _digest(content) for name, content in files.items()}

    def builder():
        for n in range(REBUILDS):  # every build publishes other data: its own fetched count
            doc = {**day_doc, "quality": {**day_doc["quality"], "fetched": 1000 + n}}
            put_aggregates(store, doc)
            build_site(settings)
            record()

    record()  # the backfill's build

    def disk_reader():
        while not stop.is_set():
            try:
                target = site.resolve()  # one pass reads one build, as a server pinning it
                contents = {name: (target / name).read_bytes() for name in names}
            except OSError as exc:
                errors.append(f"disk: {exc!r}")
                continue
            builds = {_build_of(n, c) for n, c in contents.items()} - {None}
            if len(builds) != 1:
                errors.append(f"disk: one pass saw builds {builds}")
                continue
            disk_passes.append((builds.pop(),
                                {n: _digest(c) for n, c in contents.items()}))

    server = make_server(site, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def http_reader():
        with httpx.Client(base_url=base, timeout=30) as client:
            while not stop.is_set():
                for name in names:
                    response = client.get(f"/{name}")
                    if response.status_code != 200:
                        errors.append(f"http: {name} answered {response.status_code}")
                        continue
                    http_reads.append((name, _digest(response.content)))

    readers = [threading.Thread(target=disk_reader), threading.Thread(target=http_reader)]
    for thread in readers:
        thread.start()
    builder()
    stop.set()
    for thread in readers:
        thread.join()
    server.shutdown()
    server.server_close()

    print(f"{REBUILDS} rebuilds: {len(disk_passes)} whole-site passes on disk over "
          f"{len({b for b, _ in disk_passes})} builds, {len(http_reads)} HTTP reads, "
          f"{len(errors)} errors")
    assert errors == []
    assert len(published) == REBUILDS + 1
    # every pass read exactly the files one build published: none missing, partial or mixed
    mixed = [build for build, digests in disk_passes
             if build not in published
             or {n: published[build][n] for n in digests} != digests]
    assert len(disk_passes) >= REBUILDS and mixed == []
    assert len({build for build, _ in disk_passes}) > 2
    # over HTTP, every answer is a whole file some build published
    whole = {(name, digest) for files in published.values() for name, digest in files.items()}
    assert len(http_reads) > len(names) and set(http_reads) <= whole
    # the builds of the last minutes stay, for readers half-way through them
    kept = sorted(p.name for p in builds_dir(site).iterdir())
    assert len(kept) == REBUILDS + 1 and not [n for n in kept if n.startswith(".")
                                              or n.endswith(".partial")]


def test_a_build_reads_its_data_and_stamps_its_time_once_it_holds_the_lock(settings):
    """So builds publish in the order they read: an older build never replaces a newer one."""
    backfill(START, END, settings, progress=False)
    site = settings.site_dir
    store = CouchStore(settings)
    day_doc = content_of(store.get(AGGREGATES, END.isoformat()))
    with publish_lock(site):  # another build is publishing
        waiting = threading.Thread(target=build_site, args=(settings,))
        waiting.start()
        waiting.join(timeout=3)
        assert waiting.is_alive()  # it waits for the lock...
        put_aggregates(store, {**day_doc, "quality": {**day_doc["quality"], "fetched": 4242}})
        released = datetime.now(UTC)
    waiting.join()
    # ...and read the data and the time after it got it
    assert orjson.loads((site / "data" / "manifest.json").read_bytes())["build_id"] >= (
        build_id(released))
    quality = (site / "data" / "data_quality.csv").read_text()
    assert f"{END},Total,Total,fetched,4242,," in quality


def test_leftovers_of_killed_builds_go_and_the_lock_is_outside_the_site(settings, tmp_path):
    backfill(START, END, settings, progress=False)
    site = settings.site_dir
    builds = builds_dir(site)
    killed = builds / "20261003T000000-killed.partial"
    (killed / "data").mkdir(parents=True)
    (killed / "data" / "assertions.csv").write_text("half")
    older_scheme = site.parent / f".{site.name}.new-4242"
    older_scheme.mkdir()
    (builds / ".link-deadbeef").symlink_to(killed.name)
    build_site(settings, now=datetime.now(UTC))
    assert not killed.exists() and not older_scheme.exists()
    assert not (builds / ".link-deadbeef").is_symlink()
    assert len(list(builds.iterdir())) == 2  # the backfill's build and this one
    for build in builds.iterdir():
        os.utime(build, (0, 0))  # both published long ago
    current = site.resolve()
    build_site(settings, now=datetime.now(UTC))
    assert sorted(builds.iterdir()) == sorted([current, site.resolve()])  # and the one before
    # the lock is the builds folder itself: no lock file beside the site or in the repository
    beside = {p.name for p in site.parent.iterdir()}
    assert not [name for name in beside if name.endswith(".lock")], beside
    assert not [p for p in Path(__file__).parents[2].glob("*.lock")]


def test_a_site_path_linked_elsewhere_by_hand_is_refused(settings, tmp_path):
    web_root = tmp_path / "www"
    web_root.mkdir()
    (web_root / "index.html").write_text("the operator's page")
    settings.site_dir.parent.mkdir(parents=True, exist_ok=True)
    settings.site_dir.symlink_to(web_root)
    with pytest.raises(PublishError, match="not to one of its builds"):
        backfill(START, END, settings, progress=False)
    assert settings.site_dir.resolve() == web_root
    assert [p.name for p in web_root.iterdir()] == ["index.html"]
    assert [p.name for p in builds_dir(settings.site_dir).iterdir()] == []


def test_a_site_folder_of_an_older_version_becomes_a_link_to_a_build(settings):
    site = settings.site_dir
    site.mkdir(parents=True)
    (site / "index.html").write_text("an old build")
    backfill(START, END, settings, progress=False)
    assert site.is_symlink() and (site / "data" / "manifest.json").exists()
    moved = [p for p in builds_dir(site).iterdir() if (p / "index.html").exists()
             and (p / "index.html").read_text() == "an old build"]
    assert len(moved) == 1  # kept as the build before, then pruned like any other
    assert os.path.isabs(os.readlink(site)) is False  # a relative link: the folder may move
