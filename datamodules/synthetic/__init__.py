"""A generated stand-in for MagnaTagATune, laid out exactly like the real dataset.

The real MTAT audio (3 GB) cannot be downloaded everywhere the suite runs, so tests and demos
use this dataset: same files, same byte-level CSV conventions, same MP3 folder layout, and tags
that are *audible* in the audio, so that a model trained on it really learns something.

The package, in the order a clip is made:

* `datamodules.synthetic.plan`: what a clip contains and how it was annotated (`plan_clip`, `TAGS`);
* `datamodules.synthetic.render`: its audio (`render_clip`, `synthesize_clip`);
* `datamodules.synthetic.folder`: names, CSVs and the dataset folder (`generate_synthetic_mtat`,
  `ensure_synthetic_mtat`, `read_metadata`).

Layout written by `generate_synthetic_mtat(out_dir, ...)`:

* ``annotations_final.csv``: tab-separated, every field double-quoted, CRLF line ends; columns
  ``clip_id``, the 50 tag columns of `TAGS` (in that order, which is *not* the standard top-50
  order: readers must select columns by name), ``mp3_path``; values ``"0"``/``"1"``.
* ``clip_info_final.csv``: same conventions; columns ``clip_id, track_number, title, artist,
  album, url, segmentStart, segmentEnd, original_url, mp3_path`` (one row per clip, all with an
  MP3; unlike the real file, no rows with an empty ``mp3_path``).
* ``mp3/<0-f>/<artist>-<album>-<track>-<title>-<start>-<end>.mp3``: 16 kHz mono MP3 (libsndfile's
  default VBR with a LAME header, which decodes to exactly ``clip_samples`` samples). Clip ``i``
  goes to folder ``"0123456789abcdef"[i % 16]``, so the MTAT folder split (0-b / c / d-f) gives
  75 % / 6.25 % / 18.75 % of the clips (real MTAT: 72 % / 7 % / 21 %).
* ``synthetic.json``: ``{"clip_samples", "sample_rate", "n_clips", "seed", "generator_version",
  "tags"}``, written last and atomically: its presence means the dataset is complete.

Clip ids are ``2 + 3 * i`` (not contiguous, like the real ids, so code that confuses clip ids with
row numbers fails on it too).
"""

from datamodules.synthetic.folder import (
                                          ANNOTATIONS_FILE,
                                          CLIP_INFO_COLUMNS,
                                          CLIP_INFO_FILE,
                                          DEFAULT_N_CLIPS,
                                          GENERATOR_VERSION,
                                          HEX_FOLDERS,
                                          LOCK_FILE,
                                          METADATA_FILE,
                                          MIN_CLIP_SAMPLES,
                                          MP3_DIR,
                                          PARTIAL_FILE,
                                          ClipInfo,
                                          clip_info,
                                          ensure_synthetic_mtat,
                                          generate_synthetic_mtat,
                                          read_metadata,
                                          synthetic_dir_name,
)
from datamodules.synthetic.plan import (
                                          DRUM_PATTERNS,
                                          GENRES,
                                          INSTRUMENTS,
                                          NO_TAG_PROBABILITY,
                                          TAGS,
                                          TEMPO_RANGES,
                                          VOICES,
                                          ClipPlan,
                                          clip_rng,
                                          plan_clip,
)
from datamodules.synthetic.render import SyntheticClip, render_clip, synthesize_clip

__all__ = [
                                          "ANNOTATIONS_FILE",
                                          "CLIP_INFO_COLUMNS",
                                          "CLIP_INFO_FILE",
                                          "DEFAULT_N_CLIPS",
                                          "DRUM_PATTERNS",
                                          "GENERATOR_VERSION",
                                          "GENRES",
                                          "HEX_FOLDERS",
                                          "INSTRUMENTS",
                                          "LOCK_FILE",
                                          "METADATA_FILE",
                                          "MIN_CLIP_SAMPLES",
                                          "MP3_DIR",
                                          "NO_TAG_PROBABILITY",
                                          "PARTIAL_FILE",
                                          "TAGS",
                                          "TEMPO_RANGES",
                                          "VOICES",
                                          "ClipInfo",
                                          "ClipPlan",
                                          "SyntheticClip",
                                          "clip_info",
                                          "clip_rng",
                                          "ensure_synthetic_mtat",
                                          "generate_synthetic_mtat",
                                          "plan_clip",
                                          "read_metadata",
                                          "render_clip",
                                          "synthesize_clip",
                                          "synthetic_dir_name",
]
