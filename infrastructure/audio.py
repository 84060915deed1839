"""The one source of truth for the audio format of MagnaTagATune.

Every MTAT clip is 16 kHz mono MP3, 29.124 s long: 465,984 samples. Other modules read these
names; nothing else in the suite spells the numbers out. A dataset whose clips are shorter
(the synthetic stand-in can be generated with shorter clips for tests) records its own clip
length in its metadata, and the data and model code take it from there.
"""

SAMPLE_RATE = 16_000
"""Sample rate of MTAT audio and of every waveform the suite feeds a model (Hz)."""

MTAT_CLIP_SAMPLES = 465_984
"""Length of one MTAT clip in samples (29.124 s at 16 kHz)."""

INT16_SCALE = 32_768.0
"""Divisor that maps the int16 cache samples to float waveforms in [-1, 1)."""
