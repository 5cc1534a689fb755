"""Fetching and loading model versions: S3 -> verified copy in the cache directory -> LoadedModel.

Light on purpose (no numpy, no onnxruntime at import): serving's init builds a loader and starts
:meth:`ModelLoader.prefetch` first thing, so the download of the champion's bundle overlaps the
import of everything heavy (numpy, ONNX Runtime, Pydantic models, the HTTP layer). The load that
follows finds the copy verified in this process (:func:`shelfwise.bundle_files.download_bundle`
waits for a download of the same directory already in flight, and hashes nothing twice).
"""

from __future__ import annotations

import importlib
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shelfwise.bundle_files import BundleError, download_bundle
from shelfwise.serving.errors import ModelLoadError

if TYPE_CHECKING:
    from shelfwise.registry import Aliases
    from shelfwise.serving.model import LoadedModel

_runtime_import: threading.Thread | None = None


def _import_runtime_in_background() -> None:
    """Start importing onnxruntime while the bundle downloads (cold start: the two overlap).

    The download and the checksums release the GIL, so the import's CPU work runs beside them;
    ``from_directory`` then finds the module imported (or waits on the import lock).
    """
    global _runtime_import
    if _runtime_import is None and "onnxruntime" not in sys.modules:
        _runtime_import = threading.Thread(target=importlib.import_module, args=("onnxruntime",), daemon=True)
        _runtime_import.start()


@dataclass
class Prefetch:
    """A running :meth:`ModelLoader.prefetch`: the aliases it read, and its thread."""

    thread: threading.Thread | None = None
    read: Aliases | None = None
    aliases_read: threading.Event = field(default_factory=threading.Event)

    def aliases(self) -> Aliases | None:
        """The aliases the prefetch read (waits for that read), or None when it failed."""
        self.aliases_read.wait()
        return self.read

    def join(self, timeout: float | None = None) -> None:
        """Wait for the downloads too."""
        if self.thread is not None:
            self.thread.join(timeout)


class ModelLoader:
    """Fetches versions from S3 into a local cache directory (``/tmp`` in Lambda) and loads them.

    ``fetch(version, directory)`` downloads and verifies; the default is
    :func:`shelfwise.bundle.download_bundle` from ``s3://bucket/models/<name>/<version>/``.
    """

    def __init__(
        self,
        s3: Any,
        bucket: str,
        model_name: str,
        cache_dir: str | Path,
        *,
        intra_op_threads: int = 1,
        fetch: Callable[[str, Path], Path] | None = None,
    ) -> None:
        self.s3, self.bucket, self.model_name = s3, bucket, model_name
        self.cache_dir = Path(cache_dir) / model_name
        self.intra_op_threads = intra_op_threads
        self._fetch = fetch or self._download
        # download_bundle verifies every checksum (of the download or of the cached copy), so the
        # load does not hash the bundle a second time; a custom fetch gets the full verification.
        self._fetch_verifies = fetch is None

    def _download(self, version: str, directory: Path) -> Path:
        return download_bundle(self.s3, self.bucket, f"models/{self.model_name}/{version}", directory)

    def prefetch(self, read_aliases: Callable[[], Aliases]) -> Prefetch:
        """Read the aliases and download their versions on a daemon thread.

        Only warms the cache: failures are left to the load that follows, which retries, reports
        them (health, metrics, logs) and refuses the version. That load can take the aliases
        read here (``Prefetch.aliases``), so a cold start reads SSM once.
        """
        prefetch = Prefetch()

        def run() -> None:
            try:
                aliases: Aliases | None = read_aliases()
            except Exception:  # the sync reads them again and reports it
                aliases = None
            prefetch.read = aliases
            prefetch.aliases_read.set()
            if aliases is None:
                return
            for version in dict.fromkeys(v for v in (aliases.champion, aliases.challenger) if v):
                try:
                    self._fetch(version, self.cache_dir / version)
                except Exception:  # reported by the load
                    continue

        prefetch.thread = threading.Thread(target=run, name="model-prefetch", daemon=True)
        prefetch.thread.start()
        return prefetch

    def load(self, version: str) -> LoadedModel:
        """Download (or reuse the verified cached copy) and load ``version``; ModelLoadError when it fails."""
        directory = self.cache_dir / version
        _import_runtime_in_background()
        try:
            t0 = time.perf_counter()
            self._fetch(version, directory)
            fetched = time.perf_counter() - t0
            from shelfwise.serving.model import LoadedModel

            model = LoadedModel.from_directory(
                directory, version, self.intra_op_threads, checksums=not self._fetch_verifies
            )
            model.fetch_seconds = fetched
            return model
        except BundleError as exc:
            shutil.rmtree(directory, ignore_errors=True)
            if isinstance(exc, ModelLoadError):
                raise
            raise ModelLoadError(f"version {version}: {exc}") from exc

    def prune(self, keep: set[str]) -> None:
        """Delete cached versions not in ``keep`` (``/tmp`` is small and shared by all versions)."""
        if not self.cache_dir.is_dir():
            return
        for path in self.cache_dir.iterdir():
            if path.is_dir() and path.name not in keep and not path.name.startswith("."):
                shutil.rmtree(path, ignore_errors=True)
