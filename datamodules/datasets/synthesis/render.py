"""Audio rendering of a synthetic clip: a `ClipPlan` in, float32 samples at 16 kHz out (numpy only).

How each concept of `datamodules.datasets.synthesis.plan` sounds:

* instruments have distinct timbres, built from per-note wavetables: plucked decaying harmonics
  for guitar, harp (soft, high), sitar (buzzy, with pitch bends, over a drone) and harpsichord
  (bright, fast); hammered partials with a click for piano; bowed sawtooth with vibrato and
  body resonances for violin, cello and string ensembles; near-sine plus breath noise for flute;
  detuned saw/square for synth; distorted power chords for rock/metal guitar;
* drums/beat/beats are kick, snare, hi-hat, clap or tabla hits in genre patterns; the tempo is
  slow (55-78 BPM), medium or fast (140-185 BPM) and drives note rates too;
* loud / quiet / soft are the level (saturated to full scale, or a peak of -30..-22 dBFS);
* voices are formant-shaped pitched tones (5 vowels, vibrato, noisy consonant onsets): female
  (high), male (low), opera (wide vibrato, singer's formant), choir (four voices in chords, with
  reverb);
* ambient / new age are slow pads with a reverb-like smear; techno / dance / electronic have a
  four-on-the-floor kick (or breakbeats) and synths; indian has sitar, drone and tabla; weird
  has ring-modulated, bit-crushed bleeps; classical has acoustic instruments in a reverberant
  hall and no drums.

The clip's random stream continues from where its plan left it (`synthesize_clip`), so the
audio depends on (seed, clip index) alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datamodules.datasets.synthesis.plan import ClipPlan, clip_rng, plan_clip
from infrastructure.audio import SAMPLE_RATE

_TABLE = 2048
"""Samples in one wavetable period."""

_ENV_HOP = 8
"""Envelopes are computed every 8 samples (0.5 ms) and held in between."""

_MAX_PARTIAL_HZ = 7_600.0
"""Partials above this are left out of the wavetables (no aliasing at 16 kHz)."""

_HARMONICS = np.arange(1, _TABLE // 2, dtype=np.float64)

_SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10), "raga": (0, 1, 4, 5, 7, 8, 11),
    "pentatonic": (0, 2, 4, 7, 9), "chromatic": tuple(range(12)),
}

_VOWELS = np.array([  # formant frequencies (Hz) and bandwidths of a, e, i, o, u (male speaker)
    [[730, 1090, 2440], [80, 90, 120]],
    [[530, 1840, 2480], [60, 100, 120]],
    [[300, 2250, 3000], [50, 100, 140]],
    [[570, 840, 2410], [70, 80, 120]],
    [[330, 870, 2240], [50, 80, 120]],
], dtype=np.float64)
_VOWEL_GAINS = np.array([1.0, 0.5, 0.25])


def _midi_hz(midi) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def _scale_notes(key: int, mode: str, low: int, high: int) -> np.ndarray:
    """MIDI notes of the scale on ``key`` between ``low`` and ``high`` inclusive."""
    steps = np.asarray(_SCALES[mode])
    notes = (key % 12 + steps[None, :] + 12 * np.arange(-1, 11)[:, None]).ravel()
    notes = np.sort(notes[(notes >= low) & (notes <= high)])
    return notes if len(notes) else np.array([low])


def _wavetables(f0: np.ndarray, amplitudes, rng: np.random.Generator) -> np.ndarray:
    """One period of each note's waveform: (len(f0), _TABLE) float32 with unit RMS.

    ``amplitudes(h, freq)`` gives the amplitude of harmonic number ``h`` at frequency ``freq``
    (arrays broadcast to (len(f0), harmonics)); partials above `_MAX_PARTIAL_HZ` are dropped.
    """
    f0 = np.asarray(f0, dtype=np.float64)[:, None]
    freq = f0 * _HARMONICS[None, :]
    amp = np.where(freq <= _MAX_PARTIAL_HZ, amplitudes(_HARMONICS[None, :], freq), 0.0)
    amp[:, 0] = np.maximum(amp[:, 0], 1e-3)
    amp /= np.sqrt(0.5 * np.sum(amp**2, axis=1, keepdims=True))
    phases = rng.uniform(0, 2 * np.pi, size=len(_HARMONICS))
    spectrum = np.zeros((len(f0), _TABLE // 2 + 1), dtype=np.complex128)
    spectrum[:, 1 : _TABLE // 2] = amp * (_TABLE / 2) * np.exp(1j * phases)[None, :]
    return np.fft.irfft(spectrum, n=_TABLE, axis=1).astype(np.float32)


@dataclass
class _Line:
    """A monophonic note sequence: onsets (samples, increasing), gate lengths (s), pitch (MIDI)."""

    onsets: np.ndarray
    gates: np.ndarray
    midi: np.ndarray
    velocity: np.ndarray


def _rhythm(rng: np.random.Generator, n: int, beat: float, durations: tuple, probs: tuple,
            legato: float = 0.95, start: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Onsets (samples) and gate lengths (s) of notes with durations (in beats) drawn from
    ``durations``/``probs``, filling ``n`` samples from ``start`` seconds."""
    step = beat * min(durations)
    count = int((n / SAMPLE_RATE - start) / step) + 2
    lengths = np.asarray(durations)[rng.choice(len(durations), size=count, p=np.asarray(probs) / sum(probs))]
    times = start + np.concatenate([[0.0], np.cumsum(lengths * beat)[:-1]])
    keep = times * SAMPLE_RATE < n
    onsets = np.round(times[keep] * SAMPLE_RATE).astype(np.int64)
    return onsets, lengths[keep] * beat * legato


def _walk(rng: np.random.Generator, notes: np.ndarray, count: int) -> np.ndarray:
    """A melodic random walk of ``count`` notes over the sorted pitch set ``notes``."""
    m = len(notes) - 1
    if m <= 0:
        return np.full(count, notes[0])
    steps = rng.choice([-3, -2, -1, 0, 1, 2, 3], size=count, p=[0.05, 0.15, 0.28, 0.04, 0.28, 0.15, 0.05])
    pos = int(rng.integers(0, m + 1)) + np.cumsum(steps)
    pos = np.mod(pos, 2 * m)
    pos = np.where(pos > m, 2 * m - pos, pos)
    return notes[pos]


def _melody(rng, n, beat, notes, durations, probs, legato=0.95, velocity=(0.7, 1.0)) -> _Line:
    onsets, gates = _rhythm(rng, n, beat, durations, probs, legato)
    return _Line(onsets, gates, _walk(rng, notes, len(onsets)), rng.uniform(*velocity, size=len(onsets)))


def _chords(rng: np.random.Generator, key: int, mode: str, n_bars: int) -> np.ndarray:
    """(n_bars, 3) MIDI triads (root position, around ``key``) following a random progression."""
    scale = np.asarray(_SCALES[mode])
    if len(scale) != 7:
        scale = np.asarray(_SCALES["major"])
    progression = [(0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 4), (5, 3, 0, 4), (0, 0, 3, 4)][int(rng.integers(0, 5))]
    degrees = np.asarray(progression)[np.arange(n_bars) % 4][:, None] + np.array([0, 2, 4])[None, :]
    return key + scale[degrees % 7] + 12 * (degrees // 7)


def _fit_range(midi: np.ndarray, low: int, high: int) -> np.ndarray:
    """Transpose each note by octaves into [low, high] (as far as possible)."""
    midi = np.asarray(midi)
    midi = midi + 12 * np.ceil((low - midi) / 12).clip(min=0)
    return midi - 12 * np.ceil((midi - high) / 12).clip(min=0)


def _chord_line(rng, n, beat, chords, tone: int, low: int, high: int, beats_per_chord=4.0,
                legato=1.0) -> _Line:
    """One voice of a chord accompaniment: chord tone ``tone`` of each bar, held."""
    onsets = np.round(np.arange(len(chords)) * beats_per_chord * beat * SAMPLE_RATE).astype(np.int64)
    keep = onsets < n
    midi = _fit_range(chords[keep][:, tone % 3] + 12 * (tone // 3), low, high)
    gates = np.full(keep.sum(), beats_per_chord * beat * legato)
    return _Line(onsets[keep], gates, midi, rng.uniform(0.8, 1.0, size=keep.sum()))


def _arpeggio(rng, n, beat, chords, low, high, per_beat=2, beats_per_chord=4.0, legato=0.9) -> _Line:
    """Chord tones in a rising-falling figure, ``per_beat`` notes a beat."""
    step = beat / per_beat
    count = int(n / SAMPLE_RATE / step) + 1
    onsets = np.round(np.arange(count) * step * SAMPLE_RATE).astype(np.int64)
    bar = np.minimum((np.arange(count) * step / (beats_per_chord * beat)).astype(int), len(chords) - 1)
    figure = np.array([0, 1, 2, 3, 2, 1])[np.arange(count) % 6]
    midi = chords[bar, figure % 3] + 12 * (figure // 3)
    return _Line(onsets, np.full(count, step * legato), _fit_range(midi, low, high),
                 rng.uniform(0.6, 0.9, size=count))


def _render(n: int, line: _Line, amplitudes, rng: np.random.Generator, *, attack=0.01, decay=None,
            sustain=0.0, release=0.05, vibrato=(0.0, 0.0), glide=(0.0, 0.05), detune=0.0,
            dull=None, bright_time=0.3, table_key=None) -> np.ndarray:
    """Render a monophonic ``line`` with per-note wavetables (harmonic ``amplitudes``).

    The envelope of each note: linear attack, exponential decay (time constant ``decay`` s, None
    for none) towards ``sustain``, exponential release after the gate. ``vibrato`` = (rate Hz,
    depth as a fraction of f0); ``glide`` = (initial pitch offset as a fraction, time constant s);
    ``dull``: amplitudes the timbre decays to with time constant ``bright_time`` (plucked strings).
    ``table_key``: extra per-note integer the timbre depends on (e.g. the vowel), with
    ``amplitudes(h, freq, key)``. The table position is exact fixed-point integer arithmetic;
    envelopes, vibrato and glides are evaluated every `_ENV_HOP` samples and held.
    """
    out = np.zeros(n, dtype=np.float32)
    if len(line.onsets) == 0:
        return out
    first = int(line.onsets[0])
    m = n - first
    counts = np.diff(np.append(line.onsets, n))
    t_samples = np.arange(m) - np.repeat(line.onsets - first, counts)
    f0_note = _midi_hz(line.midi) * (1.0 + detune)
    keys = np.zeros(len(line.midi), dtype=np.int64) if table_key is None else np.asarray(table_key).ravel()
    combo = np.round(np.asarray(line.midi) * 100).astype(np.int64) * 16 + keys
    _, first_of_unique, table_of_note = np.unique(combo, return_index=True, return_inverse=True)
    f0_unique = f0_note[first_of_unique]
    key_unique = keys[first_of_unique][:, None]

    def tables_for(law):
        if table_key is None:
            return _wavetables(f0_unique, law, rng)
        return _wavetables(f0_unique, lambda h, f: law(h, f, key_unique), rng)

    tables = tables_for(amplitudes)
    # Table position in fixed point (16 fractional bits): exact integer phase for any note length.
    increment = np.round(f0_note / SAMPLE_RATE * _TABLE * 65536).astype(np.int64)
    index = (t_samples * np.repeat(increment, counts)) >> 16
    # Envelopes and pitch modulations are smooth: computed every _ENV_HOP samples, then held.
    tc = t_samples[::_ENV_HOP].astype(np.float32) * np.float32(1.0 / SAMPLE_RATE)
    note_c = np.repeat(np.arange(len(counts)), counts)[::_ENV_HOP]
    rate, depth = vibrato
    offset, tau = glide
    if depth or offset:
        extra = np.zeros(len(tc), dtype=np.float32)  # phase offset in cycles of f0
        if depth:
            phase0 = float(rng.uniform(0, 1))
            wobble = np.cos(np.float32(2 * np.pi) * np.mod(np.float32(rate) * tc + np.float32(phase0), np.float32(1.0)))
            extra += np.float32(depth / (2 * np.pi * rate)) * (np.float32(np.cos(2 * np.pi * phase0)) - wobble)
        if offset:
            extra += np.float32(offset * tau) * (np.float32(1.0) - np.exp(tc * np.float32(-1.0 / tau)))
        extra *= f0_note.astype(np.float32)[note_c] * np.float32(_TABLE)
        index += np.repeat(extra.astype(np.int64), _ENV_HOP)[:m]
    index &= _TABLE - 1
    index += np.repeat(table_of_note * _TABLE, counts)
    y = tables.ravel()[index]
    env = np.minimum(tc * np.float32(1.0 / attack), np.float32(1.0))
    if decay is not None:
        env *= np.float32(sustain) + np.float32(1.0 - sustain) * np.exp(tc * np.float32(-1.0 / decay))
    late = np.maximum(tc - line.gates.astype(np.float32)[note_c], np.float32(0.0))
    env *= np.exp(late * np.float32(-1.0 / release)) * line.velocity.astype(np.float32)[note_c]
    if dull is not None:
        y_dull = tables_for(dull).ravel()[index]
        bright = np.repeat(np.exp(tc * np.float32(-1.0 / bright_time)), _ENV_HOP)[:m]
        y = y_dull + bright * (y - y_dull)
    out[first:] = y * np.repeat(env, _ENV_HOP)[:m]
    return out


# Harmonic amplitude laws: h = harmonic number, f = its frequency (Hz).
def _pluck(position: float, tilt: float):
    return lambda h, f: np.abs(np.sin(np.pi * h * position)) / h**tilt + 1e-4 / h


def _resonances(f, centres, widths, gains):
    out = np.zeros_like(f)
    for c, w, g in zip(centres, widths, gains):
        out = out + g / (1.0 + ((f - c) / w) ** 2)
    return out


def _bowed(body: tuple):
    return lambda h, f: (1.0 / h) * (0.35 + _resonances(f, body, (150.0, 400.0, 900.0), (1.0, 0.8, 0.6)))


def _lowpass(law, cutoff: float, order: float = 4.0):
    return lambda h, f: law(h, f) / (1.0 + (f / cutoff) ** order)


def _saw(h, f):
    return 1.0 / h


def _square(h, f):
    return (h % 2 == 1) / h + 1e-3 / h


def _voice_law(formant_scale: float, tilt: float, singer_formant: float):
    def law(h, f, vowel):
        formants = _VOWELS[vowel[:, 0], 0] * formant_scale  # (notes, 3)
        widths = _VOWELS[vowel[:, 0], 1] * formant_scale
        shape = np.zeros_like(f)
        for i in range(3):
            shape += _VOWEL_GAINS[i] / (1.0 + ((f - formants[:, i : i + 1]) / widths[:, i : i + 1]) ** 2)
        if singer_formant:
            shape += singer_formant / (1.0 + ((f - 3000.0) / 300.0) ** 2)
        return (shape + 0.01) / h**tilt
    return law


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal(n).astype(np.float32)


def _highpass(x: np.ndarray, times: int = 1) -> np.ndarray:
    for _ in range(times):
        x = np.diff(x, prepend=x[:1])
    return x


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average over ``width`` samples (a crude low-pass)."""
    c = np.cumsum(np.concatenate([[0.0], x.astype(np.float64)]))
    y = (c[width:] - c[:-width]) / width
    return np.concatenate([np.full(width - 1, y[0]), y]).astype(np.float32)


def _rms_normalise(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    return x / rms if rms > 1e-9 else x


def _instrument(rng, part: str, n: int, beat: float, key: int, mode: str, chords: np.ndarray) -> np.ndarray:
    """One instrument part at roughly unit RMS."""
    if part == "guitar":
        if rng.random() < 0.6:
            line = _arpeggio(rng, n, beat, chords, 52, 76, per_beat=2, legato=1.5)
        else:
            line = _melody(rng, n, beat, _scale_notes(key, mode, 50, 79), (0.5, 1.0, 0.25), (0.5, 0.3, 0.2))
        return _render(n, line, _pluck(0.18, 1.0), rng, attack=0.002, decay=0.7, release=0.08,
                       dull=_pluck(0.18, 2.6), bright_time=0.15)
    if part == "harp":
        line = _arpeggio(rng, n, beat, chords, 60, 91, per_beat=int(rng.choice([2, 3, 4])), legato=3.0)
        return _render(n, line, _pluck(0.5, 2.2), rng, attack=0.003, decay=1.2, release=0.4,
                       dull=_pluck(0.5, 3.5), bright_time=0.2)
    if part == "harpsichord":
        line = _melody(rng, n, beat, _scale_notes(key, mode, 55, 86), (0.25, 0.5), (0.6, 0.4), legato=1.0)
        return _render(n, line, _pluck(0.08, 0.7), rng, attack=0.001, decay=0.45, release=0.05,
                       dull=_pluck(0.08, 1.3), bright_time=0.25)
    if part == "sitar":
        line = _melody(rng, n, beat, _scale_notes(key, "raga" if mode != "chromatic" else mode, 55, 79),
                       (0.5, 1.0, 0.25, 2.0), (0.35, 0.3, 0.2, 0.15), legato=1.0)
        buzz = lambda h, f: (1.0 / h**0.55) * (0.3 + _resonances(f, (1200.0, 2600.0), (500.0, 700.0), (1.0, 0.7)))
        return _render(n, line, buzz, rng, attack=0.002, decay=1.0, release=0.1, glide=(-0.06, 0.08),
                       dull=_pluck(0.1, 1.2), bright_time=0.5)
    if part == "tanpura":
        onsets = np.round(np.arange(0, n / SAMPLE_RATE, 0.6) * SAMPLE_RATE).astype(np.int64)
        pattern = np.array([7, 12, 12, 0])[np.arange(len(onsets)) % 4] + key - 12
        line = _Line(onsets, np.full(len(onsets), 2.4), _fit_range(pattern, 40, 62), np.full(len(onsets), 0.8))
        return 0.6 * _render(n, line, _pluck(0.02, 0.5), rng, attack=0.01, decay=2.0, release=1.0)
    if part == "piano":
        if rng.random() < 0.5:
            line = _melody(rng, n, beat, _scale_notes(key, mode, 55, 88), (0.5, 1.0, 0.25), (0.45, 0.35, 0.2))
        else:
            line = _arpeggio(rng, n, beat, chords, 48, 79, per_beat=int(rng.choice([2, 4])), legato=2.0)
        law = lambda h, f: np.exp(-h / 10.0) / h**1.2
        y = _render(n, line, law, rng, attack=0.002, decay=0.9, sustain=0.0, release=0.25,
                    dull=lambda h, f: 1.0 / h**3.0, bright_time=0.12)
        clicks = np.zeros(n, dtype=np.float32)
        burst = _highpass(_noise(rng, 200)) * np.exp(-np.arange(200) / 40.0).astype(np.float32)
        for onset, v in zip(line.onsets, line.velocity):
            seg = clicks[onset : onset + 200]
            seg += 0.5 * v * burst[: len(seg)]
        return y + clicks
    if part in ("violin", "cello", "strings"):
        if part == "violin":
            line = _melody(rng, n, beat, _scale_notes(key, mode, 60, 91), (1.0, 2.0, 0.5), (0.4, 0.35, 0.25),
                           legato=1.0)
            voices = [(line, 0.0)]
            body = (450.0, 1000.0, 2800.0)
        elif part == "cello":
            line = _melody(rng, n, beat, _scale_notes(key, mode, 36, 62), (1.0, 2.0), (0.5, 0.5), legato=1.0)
            voices = [(line, 0.0)]
            body = (220.0, 600.0, 1500.0)
        else:
            voices = [(_chord_line(rng, n, beat, chords, tone, low, low + 19), det)
                      for tone, low, det in ((0, 43, 0.0), (1, 55, 0.003), (2, 62, -0.003), (3, 67, 0.002))]
            body = (400.0, 1000.0, 2500.0)
        y = np.zeros(n, dtype=np.float32)
        for line, det in voices:
            ensemble = part == "strings"
            y += _render(n, line, _bowed(body), rng, attack=0.35 if ensemble else 0.08,
                         release=0.4 if ensemble else 0.15,
                         vibrato=(float(rng.uniform(5.0, 6.5)), 0.006), detune=det)
        return y
    if part == "flute":
        line = _melody(rng, n, beat, _scale_notes(key, mode, 64, 93), (1.0, 0.5, 2.0), (0.45, 0.35, 0.2), legato=0.9)
        law = lambda h, f: np.exp(-1.5 * (h - 1))
        y = _render(n, line, law, rng, attack=0.05, release=0.08, vibrato=(5.0, 0.004))
        env = _smooth(np.abs(y), 400)  # breath noise follows the played notes
        breath = _smooth(_highpass(_noise(rng, n)), 3)
        return y + 0.35 * breath * env
    if part in ("synth", "synth_bass", "pad", "bass"):
        if part == "synth":
            per_beat = int(rng.choice([2, 4]))
            line = (_arpeggio(rng, n, beat, chords, 55, 84, per_beat=per_beat, legato=0.6) if rng.random() < 0.5
                    else _melody(rng, n, beat, _scale_notes(key, mode, 55, 84), (0.5, 0.25, 1.0), (0.5, 0.3, 0.2),
                                 legato=0.7))
            law = _lowpass(_saw if rng.random() < 0.5 else _square, float(rng.uniform(1800, 5000)))
            kw = dict(attack=0.005, release=0.03)
            detunes = (-0.006, 0.006)
        elif part == "pad":
            span = 8.0 if beat > 0.6 else 4.0  # beats per chord
            line = _chord_line(rng, n, beat, chords, int(rng.integers(0, 3)), 55, 74, beats_per_chord=span)
            lines = [line] + [_chord_line(rng, n, beat, chords, tone, 48, 70, beats_per_chord=span)
                              for tone in (0, 1)]
            law = _lowpass(_saw, float(rng.uniform(700, 1500)), 3.0)
            y = np.zeros(n, dtype=np.float32)
            for ln, det in zip(lines + [lines[0]], (-0.004, 0.003, -0.002, 0.005)):  # detuned: chorus
                y += _render(n, ln, law, rng, attack=1.2, release=1.5, detune=det, vibrato=(0.3, 0.002))
            return y
        elif part == "synth_bass":
            line = _chord_line(rng, n, beat / 2, np.repeat(chords, 8, axis=0) - 12, 0, 31, 50,
                               beats_per_chord=1.0, legato=0.5)
            law = _lowpass(_saw, 600.0)
            kw = dict(attack=0.003, decay=0.2, sustain=0.5, release=0.03)
            detunes = (0.0,)
        else:  # electric bass: plucked, low
            line = _chord_line(rng, n, beat, np.repeat(chords, 4, axis=0) - 12, 0, 31, 52, beats_per_chord=1.0,
                               legato=0.9)
            law = _pluck(0.2, 1.6)
            kw = dict(attack=0.004, decay=0.6, release=0.05)
            detunes = (0.0,)
        y = np.zeros(n, dtype=np.float32)
        for det in detunes:
            y += _render(n, line, law, rng, detune=det, **kw)
        return y
    if part == "eguitar":
        chord_roots = _fit_range(np.repeat(chords[:, 0], 8), 40, 52)
        step = beat / 2
        count = min(len(chord_roots), int(n / SAMPLE_RATE / step) + 1)
        onsets = np.round(np.arange(count) * step * SAMPLE_RATE).astype(np.int64)
        y = np.zeros(n, dtype=np.float32)
        for interval in (0, 7, 12):
            line = _Line(onsets, np.full(count, step * 0.9), chord_roots[:count] + interval,
                         rng.uniform(0.8, 1.0, count))
            y += _render(n, line, _saw, rng, attack=0.003, release=0.02,
                         detune=float(rng.uniform(-0.003, 0.003)))
        drive = float(rng.uniform(4.0, 9.0))
        return _smooth(np.tanh(drive * y / (np.abs(y).max() + 1e-9)), 2)
    if part == "bleeps":
        onsets, gates = _rhythm(rng, n, beat, (0.25, 0.5, 0.75, 1.5), (0.35, 0.3, 0.2, 0.15), legato=0.8)
        k = len(onsets)
        t_abs = np.arange(n) / SAMPLE_RATE
        note = np.maximum(np.searchsorted(onsets, np.arange(n), side="right") - 1, 0)
        t = t_abs - onsets[note] / SAMPLE_RATE
        fa = rng.uniform(200, 3000, size=k)[note]
        fb = rng.uniform(30, 900, size=k)[note]
        sweep = rng.uniform(-0.8, 0.8, size=k)[note]
        carrier = np.mod(fa * t * (1 + sweep * t), 1.0).astype(np.float32)
        modulator = np.mod(fb * t, 1.0).astype(np.float32)
        y = np.sin(np.float32(2 * np.pi) * carrier) * np.sin(np.float32(2 * np.pi) * modulator)  # ring modulation
        rising = rng.random(k)[note] < 0.5  # reversed envelopes on half of the notes
        g = gates[note]
        env = np.where(rising, np.clip(t / np.maximum(g, 1e-3), 0, 1) ** 2, np.exp(-t / 0.08)) * (t < g)
        y = (y * env).astype(np.float32)
        bits = float(rng.choice([3.0, 4.0, 5.0]))
        y = np.round(y * 2**bits) / 2**bits  # bit crushing
        hold = int(rng.choice([2, 3, 4]))  # sample-rate reduction
        y = np.repeat(y[::hold], hold)[:n]
        return y.astype(np.float32)
    raise ValueError(f"unknown instrument part {part!r}")


def _voice(rng, kind: str, n: int, beat: float, key: int, mode: str, chords: np.ndarray) -> np.ndarray:
    """A sung part at roughly unit RMS: formant-shaped harmonics with vibrato."""
    if kind == "choir":
        y = np.zeros(n, dtype=np.float32)
        for tone, low, high, scale in ((0, 41, 57, 1.0), (2, 50, 64, 1.0), (1, 57, 72, 1.17), (0, 62, 79, 1.2)):
            line = _chord_line(rng, n, beat, chords, tone, low, high, beats_per_chord=2.0 if beat < 0.7 else 4.0)
            vowel = rng.choice([0, 3, 4], size=len(line.onsets))
            y += _render(n, line, _voice_law(scale, 1.0, 0.0), rng, attack=0.25,
                         release=0.3, vibrato=(float(rng.uniform(4.5, 6.0)), 0.012), table_key=vowel)
        return y
    if kind in ("female", "opera_female"):
        low, high, scale = 62, 81, 1.17
    else:
        low, high, scale = 43, 64, 1.0
    opera = kind.startswith("opera")
    onsets, gates = _rhythm(rng, n, beat, (1.0, 2.0, 0.5, 4.0) if opera else (0.5, 1.0, 2.0),
                            (0.35, 0.35, 0.15, 0.15) if opera else (0.4, 0.4, 0.2), legato=0.92)
    sings = rng.random(len(onsets)) > 0.15  # rests between phrases
    line = _Line(onsets, np.where(sings, gates, 0.0), _walk(rng, _scale_notes(key, mode, low, high), len(onsets)),
                 np.where(sings, rng.uniform(0.7, 1.0, size=len(onsets)), 0.0))
    vowel = rng.integers(0, 5, size=len(onsets))
    vibrato = (float(rng.uniform(5.5, 6.5)), 0.035) if opera else (float(rng.uniform(4.5, 6.0)), 0.02)
    y = _render(n, line, _voice_law(scale, 1.1 if opera else 1.3, 0.8 if opera else 0.0), rng,
                attack=0.06, release=0.06, vibrato=vibrato, table_key=vowel)
    # Consonants: a short burst of high-passed noise before most sung syllables.
    burst_len = int(0.05 * SAMPLE_RATE)
    shape = np.sin(np.linspace(0, np.pi, burst_len)).astype(np.float32)
    level = 0.5 * float(np.sqrt(np.mean(y.astype(np.float64) ** 2)))
    noise = _highpass(_noise(rng, n), 2)
    for onset, sung, consonant in zip(onsets, sings, rng.random(len(onsets)) < 0.7):
        if sung and consonant:
            seg = y[onset : onset + burst_len]
            seg += level * shape[: len(seg)] * noise[onset : onset + len(seg)]
    return y


def _drum_kit(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Percussion one-shots (float32 templates) for this clip."""
    def t(seconds):
        return np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE

    tk = t(0.35)
    kick_f = 45.0 + float(rng.uniform(80, 130)) * np.exp(-tk / 0.03)
    kick = np.sin(2 * np.pi * np.cumsum(kick_f) / SAMPLE_RATE) * np.exp(-tk / 0.12)
    ts = t(0.25)
    snare = (0.7 * _highpass(_noise(rng, len(ts))) * np.exp(-ts / 0.06)
             + 0.6 * np.sin(2 * np.pi * float(rng.uniform(170, 210)) * ts) * np.exp(-ts / 0.05))
    th = t(0.08)
    hat = _highpass(_noise(rng, len(th)), 2) * np.exp(-th / 0.015) * 0.5
    to = t(0.3)
    open_hat = _highpass(_noise(rng, len(to)), 2) * np.exp(-to / 0.1) * 0.35
    tc = t(0.2)
    clap_env = sum(np.exp(-np.maximum(tc - d, 0) / (0.01 if d < 0.02 else 0.07)) * (tc >= d)
                   for d in (0.0, 0.011, 0.022))
    clap = _smooth(_highpass(_noise(rng, len(tc))), 3) * clap_env * 0.8
    tt = t(0.3)
    na_f = float(rng.uniform(330, 480))
    na = sum(a * np.sin(2 * np.pi * na_f * r * tt) for a, r in ((1.0, 1.0), (0.6, 2.0), (0.4, 3.0), (0.25, 4.05)))
    na = na * np.exp(-tt / 0.09) / 1.5
    tg = t(0.5)
    ge = np.sin(2 * np.pi * np.cumsum(85.0 + 40.0 * np.exp(-tg / 0.15)) / SAMPLE_RATE) * np.exp(-tg / 0.25)
    tz = t(0.06)
    glitch = np.round(_noise(rng, len(tz)) * 2) / 2 * np.exp(-tz / 0.03) * 0.5
    return {name: np.asarray(x, dtype=np.float32) for name, x in dict(
        kick=kick, snare=snare, hat=hat, open_hat=open_hat, clap=clap, na=na, ge=ge, glitch=glitch).items()}


# (drum, 16th-note steps within a bar, velocity) of each pattern.
_PATTERNS = {
    "rock": (("kick", (0, 8, 10), 1.0), ("snare", (4, 12), 0.9), ("hat", tuple(range(0, 16, 2)), 0.6)),
    "pop": (("kick", (0, 6, 8), 1.0), ("snare", (4, 12), 0.8), ("hat", tuple(range(0, 16, 2)), 0.5),
            ("clap", (12,), 0.4)),
    "four": (("kick", (0, 4, 8, 12), 1.0), ("open_hat", (2, 6, 10, 14), 0.6), ("clap", (4, 12), 0.7),
             ("hat", tuple(range(16)), 0.25)),
    "breaks": (("kick", (0, 10), 1.0), ("snare", (4, 12), 0.9), ("hat", tuple(range(16)), 0.35),
               ("snare", (7, 15), 0.3)),
    "metal": (("kick", tuple(range(16)), 0.9), ("snare", (4, 12), 1.0), ("open_hat", tuple(range(0, 16, 2)), 0.5)),
    "boom_chick": (("kick", (0, 8), 1.0), ("snare", (4, 12), 0.6), ("hat", tuple(range(0, 16, 2)), 0.3)),
    "tabla": (("ge", (0, 6, 10), 1.0), ("na", (2, 4, 8, 12, 14), 0.8), ("na", (3, 11, 15), 0.5)),
    "glitch": (),
}


def _drums(rng: np.random.Generator, pattern: str, n: int, beat: float) -> np.ndarray:
    """A percussion track at roughly unit RMS."""
    kit = _drum_kit(rng)
    step = beat / 4
    n_steps = int(n / SAMPLE_RATE / step) + 1
    hits: list[tuple[str, np.ndarray, np.ndarray]] = []
    if pattern == "glitch":
        chosen = np.flatnonzero(rng.random(n_steps) < 0.3)
        hits.append(("glitch", chosen, rng.uniform(0.5, 1.0, len(chosen))))
        chosen = np.flatnonzero(rng.random(n_steps) < 0.1)
        hits.append(("kick", chosen, rng.uniform(0.5, 1.0, len(chosen))))
    else:
        bars = np.arange(0, n_steps, 16)
        for drum, steps, velocity in _PATTERNS[pattern]:
            positions = (bars[:, None] + np.asarray(steps)[None, :]).ravel()
            positions = positions[positions < n_steps]
            hits.append((drum, positions, velocity * rng.uniform(0.8, 1.0, len(positions))))
    out = np.zeros(n, dtype=np.float32)
    for drum, positions, velocities in hits:
        template = kit[drum]
        jitter = rng.normal(0.0, 0.002, len(positions))
        starts = np.round((positions * step + jitter).clip(min=0) * SAMPLE_RATE).astype(np.int64)
        for start, velocity in zip(starts, velocities):
            if start >= n:
                continue
            seg = out[start : start + len(template)]
            seg += velocity * template[: len(seg)]
    return out * 2.0


def _reverb(rng: np.random.Generator, x: np.ndarray, wet: float) -> np.ndarray:
    """A reverb-like smear: 14 decaying, low-passed echoes spread over about 1.5 s."""
    if wet <= 0:
        return x
    n = len(x)
    dull = _smooth(x, 6)
    out = x.copy()
    delays = np.sort(rng.uniform(0.03, 1.5, size=14))
    for d in delays:
        lag = int(d * SAMPLE_RATE)
        if lag >= n:
            continue
        gain = wet * np.exp(-d / 0.5) * float(rng.uniform(0.6, 1.0)) * float(rng.choice([-1.0, 1.0]))
        out[lag:] += gain * dull[: n - lag]
    return out


def render_clip(plan: ClipPlan, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """The audio of ``plan``: ``n_samples`` float32 samples at 16 kHz, peak below 1.0 except for
    'loud' clips (saturated to full scale)."""
    n = int(n_samples)
    beat = 60.0 / plan.tempo
    n_bars = int(n / SAMPLE_RATE / (4 * beat)) + 2
    chords = _chords(rng, plan.key, plan.mode, n_bars)
    gains = {"bass": 0.5, "synth_bass": 0.6, "tanpura": 0.6, "pad": 0.6}
    mix = np.zeros(n, dtype=np.float32)
    for i, part in enumerate(plan.parts):
        gain = gains.get(part, 1.0 if i == 0 else 0.6)
        mix += gain * _rms_normalise(_instrument(rng, part, n, beat, plan.key, plan.mode, chords))
    if plan.voice is not None:
        mix += (1.5 if plan.voice != "choir" else 1.0) * _rms_normalise(
            _voice(rng, plan.voice, n, beat, plan.key, plan.mode, chords))
    mix = _reverb(rng, mix, plan.reverb)
    if plan.drums is not None:
        mix += 0.9 * _rms_normalise(_drums(rng, plan.drums, n, beat))
    mix = _rms_normalise(mix)
    peak = float(np.abs(mix).max())
    if peak <= 0:
        return mix.astype(np.float32)
    if plan.level == "loud":
        drive = float(rng.uniform(1.5, 3.0))
        mix = np.tanh(drive * mix / peak) / np.tanh(drive)  # saturated: peak exactly full scale
        return mix.astype(np.float32)
    target = float(rng.uniform(0.03, 0.08)) if plan.level == "quiet" else float(rng.uniform(0.3, 0.75))
    return (mix * (target / peak)).astype(np.float32)


@dataclass(frozen=True)
class SyntheticClip:
    """One generated clip: its plan (with tags) and its audio (float32, 16 kHz)."""

    plan: ClipPlan
    audio: np.ndarray

    @property
    def tags(self) -> tuple[str, ...]:
        return self.plan.tags


def synthesize_clip(seed: int, index: int, clip_samples: int) -> SyntheticClip:
    """Plan and render clip ``index`` of the dataset with ``seed`` (deterministic)."""
    rng = clip_rng(seed, index)
    plan = plan_clip(seed, index, rng)
    return SyntheticClip(plan=plan, audio=render_clip(plan, clip_samples, rng))
