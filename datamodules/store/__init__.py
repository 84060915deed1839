"""One waveform store: every clip or track decoded once into one on-disk int16 file, then read fast.

Decoding MP3s in every epoch would cost an epoch over MTAT minutes of CPU (docs/benchmarks.md
has the decode rate). A store decodes each file once, in parallel worker processes, into a
folder; the data module then reads segments of it through a memory map. It has two layouts of the
same format (`datamodules.store.format.Layout`), chosen by the dataset reader:

* fixed-length (`datamodules.store.fixed`, MTAT): every row exactly ``clip_samples`` long, row i at
  ``i * clip_samples``; a row that failed is zeros and never served;
* ragged (`datamodules.store.ragged`, MTG-Jamendo): tracks of any length one after the other, row i at
  ``offsets[i]:offsets[i + 1]``; a skipped track is empty.

Files of a finished store::

    waveforms.int16   raw little-endian int16 samples, scaled by INT16_SCALE (round(x * 32768), clipped)
    offsets.npy       ragged only: int64 (n_rows + 1,)
    index.csv         one line per input row: fixed ``row, clip_id, mp3_path, status, decoded_samples``
                      (comma-separated); ragged ``row, key, path, status, samples, detail`` (tab-separated)
    manifest.json     format_version, sample_rate, n_ok, dtype, fingerprint, and fixed ``n_rows,
                      clip_samples`` / ragged ``n_tracks, total_samples, excerpt_samples``: written last;
                      a folder without a valid manifest is not a store

`datamodules.store.reader.open_store` opens either; the memory map opens on first access in each
process and the store pickles without it (DataLoader workers, DDP).

Statuses (`datamodules.store.format.STATUSES`, one vocabulary with the decoder's): ``ok``; ``missing``
(no file); ``empty`` (a zero-byte file; three MP3s of the official MTAT download are zero bytes);
``decode_error`` (libsndfile refused the file; it reports garbage files with the misleading text "File
does not exist or is not a regular file", so the status is decided from our own checks first);
``wrong_length`` (fixed: decoded length off by more than `datamodules.decoding.LENGTH_TOLERANCE`, e.g. a
truncated MP3, which decodes without error but short; within it a row is zero-padded or trimmed);
``wrong_rate`` (fixed: a sample rate other than 16 kHz; the ragged layout resamples); ``truncated``
(ragged: the stream ends before the length its header announces). Every status but ``ok`` is a
skipped row, recorded in the index and named in one warning at the end of the writing.

Interruption, resumption, atomicity (`datamodules.store.journal.write_store`, the same for both layouts)
-------------------------------------------------------------------------------------------------------
Work happens in ``folder/partial/``: ``inputs.json`` (the fingerprint of the inputs),
``waveforms.int16`` (fixed: pre-sized sparse, rows written in place by the workers; ragged: appended
in row order) and ``journal.tsv``, one line per finished row (``row, status, samples, detail``). The
waveform file is fsynced before the lines of the rows written since are appended to the journal and
fsynced (fixed: after every chunk; ragged: every ``commit_bytes`` of audio), so the journal never names
audio that is not on disk. A process killed at any point (SIGKILL included) loses at most the rows not
journaled; the next call keeps the journaled ones (ragged: the waveform file is cut to the samples they
account for) and decodes the rest, and since decoding is deterministic the result is byte-identical to an
uninterrupted run. Ctrl-C stops the workers at once and says how many rows the journal keeps. When every
row is done the index (and offsets) and the manifest are written into ``partial/``, the old store's
manifest (if any) is removed, and the files are renamed into ``folder`` with the manifest last; a rerun
after a kill during these renames completes them. A store whose fingerprint differs from the current
inputs is rebuilt from scratch in ``partial/`` (never mixed) and stays readable until the new one
replaces it. A lock file (``folder/.lock``) keeps two processes (e.g. DDP ranks) from writing the same
store at once (`infrastructure.io.file_lock`).

The fingerprint covers the format version, the rate, the clip length (fixed) or excerpt (ragged) and,
per row, its key, path and file size (so replacing a broken file with a good one triggers a rebuild,
while re-extracting the same archive does not). A fixed-length store records paths relative to the
audio root, so a dataset folder can move without invalidating it.

Modules (none is imported here: import the one you need)
-------------------------------------------------------
`datamodules.store.format` (file names, statuses, layouts, fingerprint, manifest),
`datamodules.store.journal` (writing either layout), `datamodules.store.fixed` and
`datamodules.store.ragged` (each layout's writer and the spec a dataset reader hands the data module),
`datamodules.store.reader` (`open_store` and the store classes).
"""
