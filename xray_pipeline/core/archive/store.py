"""Where the archive's files live: a folder (by default under the state folder) or an
object-store URL (s3://, gs://, az://, ...). A folder's files are replaced atomically (a new
file, fsync, rename); an object store's PUT replaces an object whole. URLs go through fsspec
(installed with Dagster) and its backend for the scheme (`pip install s3fs` for s3://,
`gcsfs` for gs://, `adlfs` for az://); Polars reads the same URLs natively."""

import os
import tempfile
from pathlib import Path


class ArchiveError(Exception):
    """The archive cannot be written or read: says which setting or file, and what to do."""


class ArchiveStore:
    def __init__(self, root: str, storage_options: dict | None = None) -> None:
        self.root = root.rstrip("/")
        self.storage_options = storage_options or {}
        self.remote = "://" in root and not root.startswith("file://")
        self._fs = None
        if not self.remote:
            self.root = str(Path(root.removeprefix("file://")).expanduser())

    def __repr__(self) -> str:
        return f"ArchiveStore({self.root!r})"

    @property
    def fs(self):
        """The fsspec filesystem of a URL (its backend imported on first use)."""
        if self._fs is None:
            import fsspec

            protocol = self.root.split("://", 1)[0]
            try:
                self._fs = fsspec.filesystem(
                    protocol, skip_instance_cache=True, **self.storage_options
                )
            except (ImportError, ValueError) as exc:
                raise ArchiveError(
                    f"[archive] url {self.root}: no fsspec backend for {protocol}:// ({exc}); "
                    "install it (s3fs, gcsfs or adlfs) or set [archive] url to a folder"
                ) from exc
        return self._fs

    def uri(self, rel: str) -> str:
        """The path or URL of `rel` (for Polars' scans)."""
        return f"{self.root}/{rel}"

    def put(self, rel: str, data: bytes) -> None:
        """Write `data` as `rel`, replacing it whole: a crash leaves the old file or the new."""
        if self.remote:
            self.fs.pipe_file(self.uri(rel), data)
            return
        path = Path(self.uri(rel))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def get(self, rel: str) -> bytes | None:
        """The bytes of `rel`, None when it is missing."""
        try:
            if self.remote:
                return self.fs.cat_file(self.uri(rel))
            return Path(self.uri(rel)).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, rel: str) -> None:
        if self.remote:
            if self.fs.exists(self.uri(rel)):
                self.fs.rm_file(self.uri(rel))
            return
        Path(self.uri(rel)).unlink(missing_ok=True)

    def listdir(self, rel: str) -> list[str]:
        """The names in the folder `rel` (none when it is missing)."""
        if self.remote:
            try:
                names = self.fs.ls(self.uri(rel), detail=False)
                return sorted(p.rsplit("/", 1)[-1] for p in names)
            except FileNotFoundError:
                return []
        folder = Path(self.uri(rel))
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def configured_store(settings) -> ArchiveStore | None:
    """The archive of `settings` ([archive] url), or None when [archive] enabled = false."""
    return ArchiveStore(settings.archive_root) if settings.archive.enabled else None
