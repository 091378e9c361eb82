"""The artefact store: where snapshots, model versions, run logs, metrics and generated files live, named by one
URL. A local folder (the quickstart), or any filesystem fsspec knows: ``s3://bucket/prefix`` through s3fs
(MinIO, Ceph, AWS), which reads its endpoint and credentials from the environment as boto does
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``).

A folder crosses as a *tree*: its files first, then ``MANIFEST.json`` (each file's size and sha256), so a
reader never takes a half-uploaded folder for a whole one. Every transfer is checked: an upload against the
store's own account of what it received (the size, and the ETag where S3 gives an MD5), a download against the
manifest's sha256 (or, for one file, the ``#sha256=`` its URL carries).

The trainer reads its inputs through ``materialise``: a store URL becomes a verified local copy in its cache
folder (named by the content's hash, so a model many runs start from is fetched once per machine); a local path
or a Hugging Face id passes through.
"""

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import fsspec
from fsspec.implementations.local import LocalFileSystem

MANIFEST = "MANIFEST.json"
HASH_MARK = "#sha256="
BLOCK = 1 << 20


class StoreError(Exception):
    """A transfer that did not arrive whole, or an artefact the store does not hold."""


def is_store_url(reference: str | os.PathLike) -> bool:
    """Whether a trainer input names the store (``s3://...``, ``memory://...``) rather than a local path or a
    Hugging Face id. ``file://`` URLs count as local paths."""
    text = str(reference)
    return "://" in text and not text.startswith("file://")


def file_digests(path: Path) -> tuple[str, str]:
    """The file's sha256 and MD5, read once."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as content:
        for block in iter(lambda: content.read(BLOCK), b""):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def _multipart_etag(path: Path, part_size: int) -> str:
    """The ETag S3 gives an object uploaded in parts of ``part_size``: the MD5 of the parts' MD5s, and the count."""
    digests = []
    with open(path, "rb") as content:
        for part in iter(lambda: content.read(part_size), b""):
            digests.append(hashlib.md5(part, usedforsecurity=False).digest())
    return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"


class Store:
    """One artefact store. Keys are ``/``-separated paths under its root (``runs/reward-3/model``)."""

    def __init__(self, url: str | os.PathLike, **storage_options) -> None:
        self.url = str(url)
        if is_store_url(self.url):  # other machines write here: never answer from a stale listing
            storage_options.setdefault("use_listings_cache", False)
        self.fs, root = fsspec.core.url_to_fs(self.url, **storage_options)
        self.root = root.rstrip("/")
        self.is_local = isinstance(self.fs, LocalFileSystem)

    def path(self, key: str) -> str:
        return f"{self.root}/{key.strip('/')}" if key else self.root

    def url_for(self, key: str) -> str:
        """The key as a URL the trainer can be given: a local path for a local store."""
        return self.path(key) if self.is_local else self.fs.unstrip_protocol(self.path(key))

    def local_path(self, key: str) -> Path:
        """Where a key lies on this machine; only for a local store."""
        if not self.is_local:
            raise StoreError(f"{self.url} is not a local folder.")
        return Path(self.path(key))

    def ensure(self) -> None:
        """Make the store's root (a folder, or an S3 bucket) if it is missing."""
        if not self.fs.exists(self.root):
            self.fs.makedirs(self.root, exist_ok=True)

    def exists(self, key: str) -> bool:
        return self.fs.exists(self.path(key))

    def open(self, key: str) -> IO[bytes]:
        try:
            return self.fs.open(self.path(key), "rb")
        except FileNotFoundError:
            raise StoreError(f"The artefact store holds no {key}.") from None

    def read_text(self, key: str) -> str:
        with self.open(key) as content:
            return content.read().decode("utf-8")

    def remove(self, key: str) -> None:
        if self.fs.exists(self.path(key)):
            self.fs.rm(self.path(key), recursive=True)

    # Uploads

    def put_file(self, source: Path, key: str) -> str:
        """Store one file and check that it arrived whole; returns its sha256."""
        sha, md5 = file_digests(source)
        target = self.path(key)
        if self.is_local:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            partial = f"{target}.partial-{uuid.uuid4().hex[:8]}"
            shutil.copyfile(source, partial)
            if file_digests(Path(partial))[0] != sha:
                os.unlink(partial)
                raise StoreError(f"{key} changed on its way into the store.")
            os.replace(partial, target)
            return sha
        self.fs.put_file(str(source), target)
        self._check_upload(source, key, md5)
        return sha

    def _check_upload(self, source: Path, key: str, md5: str) -> None:
        """The store's account of an upload against the local file: its size, and its ETag where S3 gives one
        (the MD5, or for an upload in parts the MD5 of the parts' MD5s)."""
        info = self.fs.info(self.path(key), refresh=True)
        size = source.stat().st_size
        if info.get("size") != size:
            raise StoreError(f"{key} arrived with {info.get('size')} bytes of {size}.")
        etag = str(info.get("ETag") or "").strip('"')
        if not etag or "-" not in etag:
            if etag and len(etag) == 32 and etag != md5:
                raise StoreError(f"{key} arrived altered (ETag {etag}, local MD5 {md5}).")
            return
        parts = int(etag.rsplit("-", 1)[1])
        from s3fs.core import calculate_chunksize  # how s3fs cut the upload into parts

        if _multipart_etag(source, calculate_chunksize(size)) != etag:
            raise StoreError(f"{key} arrived altered (ETag {etag} over {parts} parts).")

    def put_tree(self, folder: Path, key: str, *, skip: tuple[str, ...] = ()) -> dict:
        """Store a folder's files under ``key`` (but those under the relative folders in ``skip``), each
        checked, then its manifest; returns the manifest. A local store that already holds the folder at that
        key only gains the manifest."""
        files = {}
        in_place = self.is_local and Path(self.path(key)).resolve() == folder.resolve()
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder).as_posix()
            if not path.is_file() or relative == MANIFEST or any(relative.startswith(f"{s}/") for s in skip):
                continue
            sha = file_digests(path)[0] if in_place else self.put_file(path, f"{key}/{relative}")
            files[relative] = {"size": path.stat().st_size, "sha256": sha}
        manifest = {"files": files}
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as out:
            json.dump(manifest, out, indent=1)
        try:
            self.put_file(Path(out.name), f"{key}/{MANIFEST}")
        finally:
            os.unlink(out.name)
        return manifest

    # Downloads

    def manifest(self, key: str) -> dict:
        """The manifest of a stored tree; a tree without one was never finished."""
        try:
            return json.loads(self.read_text(f"{key}/{MANIFEST}"))
        except StoreError:
            raise StoreError(f"The artefact store holds no finished folder at {key} (no {MANIFEST}).") from None

    def get_file(self, key: str, target: Path, sha256: str) -> Path:
        """Fetch one file to ``target`` and check its sha256; a partial file never takes the target's name."""
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.partial-{uuid.uuid4().hex[:8]}")
        try:
            self.fs.get_file(self.path(key), str(partial))
        except FileNotFoundError:
            raise StoreError(f"The artefact store holds no {key}.") from None
        got = file_digests(partial)[0]
        if got != sha256:
            partial.unlink()
            raise StoreError(f"{key} arrived altered: sha256 {got}, expected {sha256}.")
        os.replace(partial, target)
        return target

    def get_tree(self, key: str, target: Path) -> Path:
        """Fetch a stored tree into ``target`` (made whole in a neighbouring folder, then renamed), each file
        checked against the manifest."""
        manifest = self.manifest(key)
        if target.exists():
            return target
        partial = target.with_name(f"{target.name}.partial-{uuid.uuid4().hex[:8]}")
        try:
            for relative, entry in manifest["files"].items():
                self.get_file(f"{key}/{relative}", partial / relative, entry["sha256"])
            (partial / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
            try:
                os.rename(partial, target)
            except OSError:  # another process fetched the same tree meanwhile
                if not target.exists():
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return target

    def stream(self, key: str, sha256: str, chunk: int = BLOCK) -> Iterator[bytes]:
        """A stored file's bytes, hashed on the way: should they not match ``sha256``, the stream ends with an
        error rather than quietly, so that whoever reads it never takes an altered copy for the real one."""
        digest = hashlib.sha256()
        with self.open(key) as content:
            for block in iter(lambda: content.read(chunk), b""):
                digest.update(block)
                yield block
        if digest.hexdigest() != sha256:
            raise StoreError(f"{key} was read altered from the store: sha256 {digest.hexdigest()}, not {sha256}.")


def materialise(reference: str | os.PathLike, cache_dir: str | os.PathLike) -> str:
    """A trainer input as a local path. A store URL is fetched into ``cache_dir/store`` and checked: a folder
    (a model) by its manifest, one file (a snapshot) by the ``#sha256=`` its URL ends with. A local path or a
    Hugging Face id comes back as it is."""
    text = str(reference)
    if not is_store_url(text):
        return text
    url, _, sha256 = text.partition(HASH_MARK)
    fs, path = fsspec.core.url_to_fs(url)
    store = Store(fs.unstrip_protocol(path.rsplit("/", 1)[0]))
    name = path.rsplit("/", 1)[1]
    cache = Path(cache_dir) / "store"
    if sha256:
        target = cache / sha256 / name
        if target.exists():
            return str(target)
        return str(store.get_file(name, target, sha256))
    manifest = store.manifest(name)
    tree_hash = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    return str(store.get_tree(name, cache / tree_hash / name))
