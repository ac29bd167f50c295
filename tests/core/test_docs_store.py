"""Document collections: indexing every type, statuses, re-index on change, cancel, crash atomicity."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core.docs import DocsLibrary, search
from core.docs.chunking import chunk_pages
from core.errors import AlreadyExistsError, CancelledError, HearthError, NotFoundError
from core.events import CancelToken, Progress
from tests.core.test_docs_support import encrypted_pdf_bytes, pdf_bytes, write_handbook

ROOT = Path(__file__).resolve().parents[2]


def _statuses(collection: object) -> dict[str, tuple[str, str]]:
    return {Path(f.path).name: (f.status, f.reason) for f in collection.files()}  # type: ignore[attr-defined]


def test_every_type_is_indexed_and_bad_files_are_skipped_with_the_reason(tmp_path: Path) -> None:
    import docx

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("Plain text about the kettle and its limescale.\nA second line.\n")
    (folder / "b.md").write_text("# Intro\nWelcome words here.\n\n# Parking\nPermits come from the facilities desk.\n")
    (folder / "c.html").write_text("<html><body><h1>Wifi</h1><p>The guest network password changes weekly.</p>"
                                   "<script>var x = 1;</script></body></html>")
    document = docx.Document()
    document.add_paragraph("A docx paragraph about annual leave and holidays.")
    document.save(str(folder / "d.docx"))
    (folder / "e.pdf").write_bytes(pdf_bytes(["Page one is about printers and toner.", "Page two covers badges."]))
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (folder / "locked.pdf").write_bytes(encrypted_pdf_bytes())
    (folder / "scan.pdf").write_bytes(pdf_bytes(["", ""]))  # pages without a text layer
    (folder / "empty.txt").write_text("")
    (folder / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / ".hidden.txt").write_text("hidden files are not documents")

    with DocsLibrary().create("kb") as collection:
        report = collection.add([folder])
        statuses = _statuses(collection)
        assert {n for n, (s, _) in statuses.items() if s == "indexed"} == {"a.txt", "b.md", "c.html", "d.docx", "e.pdf"}
        assert "readable PDF" in statuses["broken.pdf"][1]
        assert statuses["locked.pdf"] == ("skipped", "is a password-protected PDF")
        assert "no text" in statuses["scan.pdf"][1]
        assert statuses["empty.txt"] == ("skipped", "is empty")
        assert "unsupported type '.png'" in statuses["photo.png"][1]
        assert ".hidden.txt" not in statuses
        assert len(report.added) == 5 and len(report.skipped) == 5

        info = collection.info()
        assert (info.files, info.indexed, info.skipped, info.chunks) == (10, 5, 5, 7)

        (page_two,) = search(collection, "badges", 1)
        assert Path(page_two.file).name == "e.pdf" and page_two.page == 2
        assert page_two.location.startswith("page 2")
        (parking,) = search(collection, "permits facilities", 1)
        assert parking.section == "Parking" and parking.location == "§ Parking, lines 4–5"
        (wifi,) = search(collection, "password", 1)
        assert Path(wifi.file).name == "c.html" and "var x" not in wifi.text


def test_chunks_are_word_windows_with_overlap_that_keep_their_lines() -> None:
    text = "\n".join(" ".join(f"w{line}_{i}" for i in range(10)) for line in range(1, 101))  # 100 lines × 10 words
    chunks = chunk_pages([text], size=250, overlap=50)
    assert [c.n_words for c in chunks] == [250, 250, 250, 250, 200]
    assert chunks[0].text.split()[-50:] == chunks[1].text.split()[:50]
    assert (chunks[0].line_start, chunks[0].line_end) == (1, 25)
    assert (chunks[1].line_start, chunks[1].line_end) == (21, 45)
    assert chunks[0].page is None and chunks[0].location() == "lines 1–25"
    with pytest.raises(ValueError):
        chunk_pages([text], size=4)


def test_refresh_reindexes_what_changed_on_disk_by_mtime_then_hash(tmp_path: Path) -> None:
    folder = write_handbook(tmp_path / "handbook")
    with DocsLibrary().create("kb") as collection:
        assert len(collection.add([folder]).added) == 12
        assert not collection.refresh().changed

        kettle, plants, wifi = folder / "kettle.md", folder / "plants.txt", folder / "wifi.txt"
        kettle.touch()  # a new mtime, the same bytes: hashed, found unchanged, not re-chunked
        import os

        os.utime(kettle, (1, 1))
        plants.write_text("The cactus on the roof terrace needs no water in winter.\n")
        wifi.unlink()
        report = collection.refresh()
        assert [Path(p).name for p in report.unchanged] == ["kettle.md"]
        assert [Path(p).name for p in report.updated] == ["plants.txt"]
        assert [Path(p).name for p in report.missing] == ["wifi.txt"]
        assert _statuses(collection)["wifi.txt"][0] == "missing"
        assert [Path(p.file).name for p in search(collection, "cactus terrace", 1)] == ["plants.txt"]
        assert not search(collection, "ferns", 3) or all(Path(p.file).name != "plants.txt"
                                                          for p in search(collection, "ferns", 3))
        assert not any(Path(p.file).name == "wifi.txt" for p in search(collection, "guest wireless network", 5))

        wifi.write_text("The guest wireless network is back, with a new password.\n")
        report = collection.refresh()
        assert [Path(p).name for p in report.updated] == ["wifi.txt"]
        assert _statuses(collection)["wifi.txt"][0] == "indexed"
        assert not collection.refresh().changed


def test_remove_files_and_delete_a_collection(tmp_path: Path) -> None:
    folder = write_handbook(tmp_path / "handbook")
    library = DocsLibrary()
    with library.create("kb") as collection:
        collection.add([folder])
        removed = collection.remove([folder / "kettle.md"])
        assert [Path(p).name for p in removed] == ["kettle.md"]
        assert not search(collection, "kettle descaled", 5) or all(
            Path(p.file).name != "kettle.md" for p in search(collection, "kettle descaled", 5))
        assert collection.info().files == 11
        with pytest.raises(NotFoundError, match="docs show kb"):
            collection.remove([tmp_path / "nothing.txt"])
        assert len(collection.remove([folder])) == 11
        assert collection.info().chunks == 0
    with pytest.raises(AlreadyExistsError):
        library.create("kb")
    library.delete("kb")
    assert library.names() == []
    with pytest.raises(NotFoundError):
        library.open("kb")
    with pytest.raises(HearthError, match="cannot name a collection"):
        library.create("../escape")


def test_cancel_by_token_event_or_callback_leaves_the_collection_as_it_was(tmp_path: Path) -> None:
    folder = write_handbook(tmp_path / "handbook")
    extra = tmp_path / "extra"
    extra.mkdir()
    for i in range(300):
        (extra / f"note{i:04}.txt").write_text(f"Note number {i} about the item zebra{i}.\n")
    with DocsLibrary().create("kb") as collection:
        collection.add([folder])
        before = (collection.info().chunks, collection.generation, collection.files())

        seen: list[Progress] = []

        def stop_at_100(report: Progress) -> bool:
            seen.append(report)
            return report.done < 100

        with pytest.raises(CancelledError, match="as it was before"):
            collection.add([extra], progress=stop_at_100)
        assert seen[0].total == 300 and seen[-1].done == 100
        assert (collection.info().chunks, collection.generation, collection.files()) == before

        token = CancelToken()
        event = threading.Event()
        for cancel, trigger in ((token, token.cancel), (event, event.set)):
            def at_50(report: Progress, trigger: object = trigger) -> None:
                if report.done == 50:
                    trigger()  # type: ignore[operator]

            with pytest.raises(CancelledError):
                collection.add([extra], progress=at_50, cancel=cancel)
            assert (collection.info().chunks, collection.generation, collection.files()) == before
        assert search(collection, "zebra7", 1) == []
        assert len(collection.add([extra]).added) == 300


CRASH = """
import os, sys
from core.docs import DocsLibrary
def die(report):
    if report.done == 6:
        os._exit(9)   # no rollback, no cleanup: as a power cut or a kill -9 mid-index
with DocsLibrary().open("kb") as collection:
    collection.add([sys.argv[1]], progress=die)
"""


def test_a_crash_mid_index_leaves_the_last_committed_collection(tmp_path: Path) -> None:
    first = tmp_path / "first"
    first.mkdir()
    (first / "kept.txt").write_text("The kept note about lighthouses stays searchable.\n")
    second = write_handbook(tmp_path / "handbook")
    library = DocsLibrary()
    with library.create("kb") as collection:
        collection.add([first])
        before = collection.files()

    crashed = subprocess.run([sys.executable, "-c", CRASH, str(second)], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
    assert crashed.returncode == 9, crashed.stderr

    with library.open("kb") as collection:
        assert collection.files() == before
        assert collection.conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('integrity-check')") is not None
        assert [Path(p.file).name for p in search(collection, "lighthouses", 3)] == ["kept.txt"]
        assert search(collection, "kettle descaled", 3) == []
        assert len(collection.add([second]).added) == 12


def test_an_error_mid_index_rolls_back_and_a_half_built_collection_is_never_listed(tmp_path: Path) -> None:
    folder = write_handbook(tmp_path / "handbook")
    library = DocsLibrary()
    with library.create("kb") as collection:
        def boom(report: Progress) -> None:
            if report.done == 3:
                raise RuntimeError("disk on fire")

        with pytest.raises(RuntimeError):
            collection.add([folder], progress=boom)
        assert collection.info().files == 0 and collection.generation == 0
    (library.root / ".other.new-abc").mkdir()  # what a crash during create leaves
    assert library.names() == ["kb"]


def test_files_deleted_or_changed_while_indexing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_handbook(tmp_path / "handbook")
    victim = folder / "wifi.txt"

    def delete_the_last(report: Progress) -> None:
        if report.done == 1 and victim.exists():
            victim.unlink()

    with DocsLibrary().create("kb") as collection:
        collection.add([folder], progress=delete_the_last)
        assert _statuses(collection)["wifi.txt"] == ("skipped", "was deleted before it could be read")

        import core.docs.store as store

        real = store.read_pages

        def read_then_edit(path: Path) -> list[str]:
            pages = real(path)
            if path.name == "plants.txt":
                with path.open("a") as handle:
                    handle.write("An edit made while the file was being read.\n")
            return pages

        monkeypatch.setattr(store, "read_pages", read_then_edit)
        (folder / "plants.txt").write_text("The ferns are watered on Tuesdays.\n")
        collection.refresh()
        status, reason = _statuses(collection)["plants.txt"]
        assert status == "indexed" and "changed while it was being indexed" in reason
        monkeypatch.setattr(store, "read_pages", real)
        assert [Path(p).name for p in collection.refresh().updated] == ["plants.txt"]
        assert search(collection, "edit made while", 1)[0].file.endswith("plants.txt")


def test_ten_thousand_files_report_progress_and_cancel_quickly(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    for sub in range(10):
        (folder / f"part{sub}").mkdir(parents=True)
        for i in range(1000):
            (folder / f"part{sub}" / f"n{i:04}.txt").write_text(f"Short note {sub}-{i} about topic{i % 37}.\n")
    reports: list[Progress] = []

    def until_2000(report: Progress) -> bool:
        reports.append(report)
        return report.done < 2000

    with DocsLibrary().create("many") as collection:
        with pytest.raises(CancelledError):
            collection.add([folder], progress=until_2000)
        assert reports[0].total == 10_000 and [r.done for r in reports[:3]] == [0, 1, 2]
        assert collection.info().files == 0


def test_a_change_while_another_process_writes_waits_then_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import core.docs.store as store

    folder = write_handbook(tmp_path / "handbook")
    library = DocsLibrary()
    library.create("kb").close()
    monkeypatch.setattr(store, "LOCK_WAIT_S", 0.2)
    with library.open("kb") as writer, library.open("kb") as other:
        writer.conn.execute("BEGIN IMMEDIATE")  # as a long add in another process holds the write lock
        try:
            with pytest.raises(HearthError, match="being changed by another Hearth"):
                other.add([folder])
            assert other.info().files == 0 and search(other, "kettle", 1) == []  # reading still works
        finally:
            writer.conn.execute("ROLLBACK")
