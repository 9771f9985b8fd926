"""The object store, on a local folder and on an S3 server over HTTP."""

from __future__ import annotations

import multiprocessing
import os
import threading

import pytest

from serving.errors import AlreadyExists, InvalidName, ObjectNotFound, StoreUnavailable
from serving.settings import AwsSettings
from serving.store import Store


def test_write_then_read_round_trips_bytes(store: Store) -> None:
    store.write("a/b/c.bin", b"\x00hello\xff")
    assert store.read("a/b/c.bin") == b"\x00hello\xff"
    assert store.exists("a/b/c.bin")


def test_write_replaces_the_previous_object(store: Store) -> None:
    store.write("k", b"one")
    store.write("k", b"two")
    assert store.read("k") == b"two"


def test_reading_a_missing_key_names_it(store: Store) -> None:
    with pytest.raises(ObjectNotFound) as info:
        store.read("no/such/key")
    assert info.value.message == "no object at key 'no/such/key'"
    assert not store.exists("no/such/key")


@pytest.mark.parametrize(
    "key", ["../x", "a/../b", "/abs", "a//b", "", "a/./b", "a\\b", "x" * 1025, "sp ace", "a/"]
)
def test_keys_that_could_escape_the_root_are_refused(store: Store, key: str) -> None:
    with pytest.raises(InvalidName) as info:
        store.write(key, b"x")
    assert info.value.kind == "key"


def test_list_shows_direct_children_without_temporaries(store: Store) -> None:
    for key in ("d/x.json", "d/y/z.bin", "d/y/w.bin", "other"):
        store.write(key, b"1")
    assert store.list("d") == ["x.json", "y"]
    assert store.list("missing") == []
    assert store.walk("d") == ["x.json", "y/w.bin", "y/z.bin"]


def test_delete_is_idempotent(store: Store) -> None:
    store.write("gone", b"1")
    store.delete("gone")
    store.delete("gone")
    assert not store.exists("gone")


def test_create_refuses_to_overwrite(store: Store) -> None:
    store.create("once", b"first")
    with pytest.raises(AlreadyExists) as info:
        store.create("once", b"second")
    assert info.value.message == "an object already exists at key 'once'"
    assert store.read("once") == b"first"


def test_open_output_streams_and_appears_only_on_success(store: Store) -> None:
    with store.open_output("big/object") as out:
        for _ in range(64):
            out.write(b"x" * 65536)
    chunks = list(store.stream("big/object", chunk=1 << 20))
    assert max(len(c) for c in chunks) == 1 << 20
    assert b"".join(chunks) == b"x" * 64 * 65536
    with pytest.raises(ObjectNotFound):
        store.stream("big/absent")
    with pytest.raises(RuntimeError), store.open_output("failed/object") as out:
        out.write(b"partial")
        raise RuntimeError("upload interrupted")
    assert not store.exists("failed/object")
    assert store.list("failed") == []


def test_concurrent_updates_lose_nothing(store: Store) -> None:
    def add_one(current: bytes | None) -> bytes:
        return str(int(current or b"0") + 1).encode()

    threads = [
        threading.Thread(target=lambda: [store.update("counter", add_one) for _ in range(5)])
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.read("counter") == b"20"


def _add_ones(root: str, times: int) -> None:
    store = Store.from_url(root)
    for _ in range(times):
        store.update("counter", lambda current: str(int(current or b"0") + 1).encode())


def test_updates_from_several_processes_on_disk_lose_nothing(tmp_path) -> None:
    # Each update replaces the file the others wait to lock: a waiter must notice, and
    # retry on the new one; the first ones race to create it.
    processes = [
        multiprocessing.get_context("fork").Process(target=_add_ones, args=(str(tmp_path), 40))
        for _ in range(3)
    ]
    for p in processes:
        p.start()
    _add_ones(str(tmp_path), 40)
    for p in processes:
        p.join(60)
        assert p.exitcode == 0
    assert Store.from_url(str(tmp_path)).read("counter") == b"160"
    assert sorted(os.listdir(tmp_path)) == ["counter"]  # no lock or temporary file left


def test_unreachable_s3_is_reported_as_unavailable() -> None:
    dead = AwsSettings(endpoint_url="http://127.0.0.1:9", access_key_id="x", secret_access_key="x")
    store = Store.from_url("s3://bucket/prefix", dead)
    with pytest.raises(StoreUnavailable) as info:
        store.read("k")
    assert info.value.status == 503
    assert info.value.message.startswith("object store s3://bucket/prefix is unavailable")


def test_unknown_url_schemes_are_refused() -> None:
    with pytest.raises(InvalidName) as info:
        Store.from_url("ftp://host/x")
    assert "use a path, file://path or s3://bucket/prefix" in info.value.message


def test_file_urls_and_paths_name_the_same_folder(tmp_path) -> None:
    Store.from_url(f"file://{tmp_path}").write("k", b"v")
    assert Store.from_url(str(tmp_path)).read("k") == b"v"


def test_an_objects_uri_is_absolute_and_is_taken_back(store: Store) -> None:
    key = "in/a=1/b@c+d.csv"
    store.write(key, b"x")
    uri = store.uri(key)
    if store.is_local:
        assert uri.startswith("file:///") and uri.endswith("/in/a%3D1/b%40c%2Bd.csv")
        assert store.key_of(store.path(key), "location") == key  # an absolute path too
    else:
        assert uri == f"{store.url}/{key}"  # s3://bucket/prefix/key, as the AWS CLI takes it
    assert store.key_of(uri, "location") == key
    assert store.key_of(key, "location") == key


def test_a_location_outside_the_store_is_refused_naming_its_field(store: Store, tmp_path) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_text("x")
    refused = ["/etc/passwd", "file:///etc/passwd", "../x", "s3://other/root/x", "ftp://h/x"]
    refused += [str(outside), outside.as_uri(), f"{store.root_uri}/../x", f"{store.root_uri}x/y"]
    if store.is_local:
        store.write("in/a", b"x")
        link = store.path("in/a").replace("/in/a", "/in/link")
        os.symlink(outside, link)
        refused += ["in/link", link, f"{store.root_uri}/in/link"]
    for location in refused:
        with pytest.raises(InvalidName) as info:
            store.key_of(location, "input_location")
        assert info.value.message == (
            f"invalid input_location {location!r}: must name an object in the store: a key, "
            f"or {store.root_uri}/<key>"
        ), location
