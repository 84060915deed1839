"""Decode every MTAT clip once into one on-disk int16 array, then read it fast.

Decoding MP3s in every epoch would cost an epoch over MTAT minutes of CPU (docs/benchmarks.md
has the decode rate). `prepare_cache` decodes each clip once, in parallel
worker processes, into a cache folder:

``waveforms.int16``
    raw little-endian int16, shape (n_rows, clip_samples), row i = annotation row i, samples
    scaled by `INT16_SCALE` (float x -> round(x * 32768) clipped to int16). Rows that failed
    to decode are all zeros and are never served.
``index.csv``
    one line per row: ``row, clip_id, mp3_path, status, decoded_samples``.
``manifest.json``
    ``format_version, clip_samples, sample_rate, n_rows, n_ok, dtype, fingerprint``: written
    last; a folder without a valid manifest is not a cache.

`open_cache` returns a `WaveformCache` that maps ``waveforms.int16`` read-only on first access
in each process (it pickles without the mapping, so it works in DataLoader workers and DDP).

Statuses (`STATUSES`)
---------------------
``ok``
    decoded; within `LENGTH_TOLERANCE` samples of ``clip_samples`` (zero-padded or trimmed to
    exactly ``clip_samples``; the decoded length is recorded). Stereo is averaged to mono.
``missing`` / ``empty``
    no file / a zero-byte file (three MP3s of the official MTAT download are zero bytes).
``decode_error``
    libsndfile refused the file. It reports garbage files with the misleading text "File does
    not exist or is not a regular file", so the status is decided from our own checks first
    (`datamodules.decoding`).
``wrong_length``
    decoded length off by more than `LENGTH_TOLERANCE` (a truncated MP3 decodes without error
    but short).
``wrong_rate``
    sample rate other than `SAMPLE_RATE`.

Every status but ``ok`` is a skipped clip: zero-filled, excluded from `WaveformCache.ok_rows`,
and listed in one warning at the end of the preparation.

Interruption, resumption, atomicity
-----------------------------------
Work happens in ``cache_dir/partial/``: ``inputs.json`` (fingerprint of the inputs),
``waveforms.int16`` (pre-sized sparse file that workers write rows into with ``pwrite``) and
``progress.npy`` (status and decoded length per row, status 0 = pending). A worker writes a
chunk's rows; the main process fsyncs the waveform file before it marks them in
``progress.npy`` (one fsync for every chunk finished so far, while the workers decode on), which
it replaces atomically (write tmp, fsync, ``os.replace``). A process killed at any point (SIGKILL
included) loses at most the chunks in flight; the next call redoes them, and since decoding is
deterministic the result is byte-identical to an uninterrupted run. When every row is done the
index and the manifest are written into ``partial/``, the old cache's manifest (if any) is
removed, and the files are renamed into ``cache_dir`` with the manifest last; a rerun after a
kill during these renames completes them. A cache whose fingerprint differs from the current
inputs is rebuilt from scratch in ``partial/`` (never mixed) and stays usable for `open_cache`
until the new one is ready to replace it. A lock file (``cache_dir/.lock``) keeps
two processes (e.g. DDP ranks) from preparing the same folder at once (`infrastructure.io.file_lock`).

The fingerprint covers the format version, clip length, sample rate and, per row, the clip id,
mp3 path and MP3 file size (so replacing a broken MP3 with a good one triggers a rebuild, while
re-extracting the same zip does not). The audio root's location is not part of it: a dataset
folder can move without invalidating its cache.

Modules
-------
`datamodules.store.format` (file names, statuses, fingerprint, manifest), `datamodules.store.rows`
(one MP3 to one row), `datamodules.store.prepare` (`prepare_cache`), `datamodules.store.reader`
(`open_cache`, `WaveformCache`).
"""

from datamodules.store.format import (
                                      CACHE_FORMAT_VERSION,
                                      INDEX_COLUMNS,
                                      INDEX_FILE,
                                      MANIFEST_FILE,
                                      STATUSES,
                                      WAVEFORMS_FILE,
                                      cache_fingerprint,
                                      read_index,
)
from datamodules.store.prepare import DEFAULT_CHUNK_ROWS, prepare_cache
from datamodules.store.reader import WaveformCache, open_cache
from datamodules.store.rows import (
                                      LENGTH_TOLERANCE,
                                      ClipDecoder,
                                      DecodedClip,
                                      decode_clip,
                                      float_to_int16,
)

__all__ = [
                                      "CACHE_FORMAT_VERSION",
                                      "DEFAULT_CHUNK_ROWS",
                                      "INDEX_COLUMNS",
                                      "INDEX_FILE",
                                      "LENGTH_TOLERANCE",
                                      "MANIFEST_FILE",
                                      "STATUSES",
                                      "WAVEFORMS_FILE",
                                      "ClipDecoder",
                                      "DecodedClip",
                                      "WaveformCache",
                                      "cache_fingerprint",
                                      "decode_clip",
                                      "float_to_int16",
                                      "open_cache",
                                      "prepare_cache",
                                      "read_index",
]
