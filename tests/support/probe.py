"""A linear probe of generated audio: do simple Mel statistics predict the tags the generator wrote?

The stand-ins' tests use it to show that their tags are audible (learnable from the audio), not noise.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold
from sklearn.preprocessing import StandardScaler

from datamodules.frontend import LogMel
from datamodules.mel_config import MelConfig


def mel_features(audio: np.ndarray) -> np.ndarray:
    """(items, samples) audio -> (items, features): per-band mean, spread and change, band-group onset flux, peak."""
    mel = LogMel(MelConfig(n_fft=1024, hop_length=256, n_mels=48, backend="torchaudio"))(
        torch.from_numpy(audio)).numpy()
    flux = np.maximum(np.diff(mel, axis=2), 0)
    return np.concatenate([mel.mean(2), mel.std(2), np.abs(np.diff(mel, axis=2)).std(2),
                           flux.reshape(len(audio), 8, 6, -1).mean((2, 3)), mel.max((1, 2))[:, None]], axis=1)


def cross_validated_scores(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each item's tag scores from a logistic regression per tag fitted on the other folds (4-fold)."""
    scores = np.zeros(labels.shape)
    for train, test in KFold(4, shuffle=True, random_state=0).split(features):
        scaler = StandardScaler().fit(features[train])
        for j in range(labels.shape[1]):
            y = labels[train, j]
            if y.min() == y.max():
                scores[test, j] = y.mean()
                continue
            model = LogisticRegression(C=0.05, max_iter=2000).fit(scaler.transform(features[train]), y)
            scores[test, j] = model.predict_proba(scaler.transform(features[test]))[:, 1]
    return scores
