"""A refactor of the networks or the registry changes no network: same configs, initial weights, outputs, sweeps.

For every model registered before the network refactor (issue 27: one network interface, the registry as the only
list of models), its fingerprint (tests/support/network_fingerprints.py: config and state_dict digests of its default
and CPU-sized networks built after the same seed, eval- and train-mode outputs and gradients on a fixed input, its
sweep space and baselines) equals the one recorded here. The values were computed by the same fingerprint code run
against commit 2f67a39 (the code before the refactor: its registry, its tests' CPU variants, its sweep spaces), on
one thread, and `python tests/support/network_fingerprints.py` on the refactored code printed the same lines. So
old checkpoints load into the new classes (same state_dict keys and shapes), the same seed trains the same network,
and a sweep's default study name (a digest of its space) reopens the same study.
"""

from __future__ import annotations

import pytest

from tests.support.helpers import one_torch_thread
from tests.support.network_fingerprints import fingerprint

# Recorded from commit 2f67a39 (see the module doc).
BEFORE = {
    'sample_cnn': dict(
        config='2a540f6fc2f6ee66', state='5ac534da6629d293', sweep='980a067d924f5540',
        small_config='bfa7207b3dd3583f', small_state='0e028b78e918cb51',
        eval=[-0.007381, 2.006344, -0.091199], train=[16.827268, 119.015024, 10.249539],
        grad=[273.55608, 13387.850376, 248.692711]),
    'sample_cnn_frames': dict(
        config='59892c756b974dbc', state='562c7896ba461d2d', sweep='a559d0ab37bd912c',
        small_config='59892c756b974dbc', small_state='562c7896ba461d2d',
        eval=[1.128453, 3.720383, 0.087575], train=[3.526909, 68.722531, -3.728938],
        grad=[22.643094, 32347.012008, 101.310446]),
    'mel_cnn': dict(
        config='a3620a97e8d16a8b', state='4aa99a0dcfa49203', sweep='136dc09987c5cd3e',
        small_config='202c891a1ab90beb', small_state='637354998e41c097',
        eval=[60.590664, 203.138932, -5.66948], train=[-4.246201, 94.456938, 4.973195],
        grad=[217.938024, 841.107712, 127.033912]),
    'lstm_mel': dict(
        config='71fea63b46aabc75', state='f8590366c2edfb9d', sweep='1864d801eaffcc93',
        small_config='390197d4193d7f69', small_state='b55e481a52797c31',
        eval=[0.084746, 2.90606, -0.12317], train=[0.084746, 2.90606, -0.12317],
        grad=[11.535511, 15.820462, 8.876186]),
    'fcn': dict(
        config='db72ca310060c525', state='10d88c8aafe26ff8', sweep='d4afcf22cac05743',
        small_config='70c9a43bef26abeb', small_state='6b68bcd16967d926',
        eval=[3.527245, 69.265165, 3.939423], train=[10.682283, 126.86343, 14.745861],
        grad=[79.98726, 3220.143119, 49.903701]),
    'crnn': dict(
        config='51ee08bc596ce71c', state='e46c6f2ac835b30d', sweep='9b22f8cbde79c5e1',
        small_config='8ad0572adc66a358', small_state='6c226ab848150c4e',
        eval=[-2.162343, 27.106229, -0.320186], train=[-2.033265, 29.100839, 2.417099],
        grad=[1.235786, 274.785239, 0.819573]),
    'musicnn': dict(
        config='87fee0524e383ee0', state='60db8235c4609292', sweep='635295d801501d7e',
        small_config='9b9689330e119d2c', small_state='8c6104bf2cc5211b',
        eval=[129.711776, 1022.321595, -29.007019], train=[0.700903, 104.89743, -6.639402],
        grad=[-818.595827, 7078.008237, 175.269616]),
    'sample_cnn_se': dict(
        config='d822c3b766fcc8ba', state='53d69a7bbd08fcbc', sweep='27028309d5b0147e',
        small_config='3172d326ebdcab22', small_state='c2ec0cabc266b8c8',
        eval=[0.405264, 3.080413, -0.004624], train=[8.163507, 67.858253, 7.998535],
        grad=[-2.128086, 6408.890883, 69.548284]),
    'short_chunk_cnn': dict(
        config='88afc049e97161f3', state='e7decb845f64a4ce', sweep='1aecbb8dee383673',
        small_config='79d4b9d177de5e7a', small_state='064206d6bf770ca1',
        eval=[1.890713, 17.63737, 0.318266], train=[-6.822102, 71.834077, 0.623924],
        grad=[-11.686097, 715.923562, 12.888989]),
    'short_chunk_resnet': dict(
        config='adb1dbc7662bfe7b', state='d8449c30e0b844e8', sweep='17aad83ac76438d8',
        small_config='d1100581df9e1d14', small_state='9a1c6652ae8b76f3',
        eval=[-5.809658, 15.558688, -0.049748], train=[-8.0677, 69.097543, 5.99572],
        grad=[2.182984, 327.837466, -2.301506]),
    'harmonic_cnn': dict(
        config='691eec2f3ac8be1d', state='474a92714962107f', sweep='2b58bdcd625d6522',
        small_config='b84541b3b93c1eeb', small_state='e4d0b21deabf1734',
        eval=[-43.415435, 186.800247, -0.670231], train=[-7.003427, 71.475444, 0.446254],
        grad=[-9.136522, 1164.988011, 5.026011]),
    'tagging_transformer': dict(
        config='cc8727057913b54b', state='3c8c43573c2af3ab', sweep='0fd3342c6202a469',
        small_config='34b8387961c93489', small_state='924844822023ad51',
        eval=[-3.193034, 52.412345, 3.694918], train=[3.658934, 51.218868, 5.53959],
        grad=[1.157491, 445.178784, 1.330152]),
}
DIGESTS = ("config", "state", "small_config", "small_state", "sweep")


@pytest.mark.parametrize("name", BEFORE)
def test_the_network_is_the_one_before_the_refactor(name):
    with one_torch_thread():
        now = fingerprint(name)
    before = BEFORE[name]
    assert {k: now[k] for k in DIGESTS} == {k: before[k] for k in DIGESTS}
    for key in ("eval", "train", "grad"):  # float sums: equal up to rounding in the last digits
        assert now[key] == pytest.approx(before[key], rel=1e-5, abs=1e-5 * before[key][1]), key
