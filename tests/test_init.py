import math

import numpy as np
import pytest
import torch

from slt_deploy.errors import SltError
from slt_deploy.init import InitSpec, frozen_weight, uniform01, weight_checksum


def test_philox_stream_is_pinned():
    # Golden values: the portable generator must give these bits on every machine and release.
    assert uniform01(0, "fc1", 4).tolist() == [
        0.910327274887353,
        0.13220093664558719,
        0.006183143283847725,
        0.7311566609863892,
    ]
    assert frozen_weight(InitSpec("uniform", 0), "fc1", (2, 3)).flatten().tolist() == [
        1.1605807542800903,
        -1.0402928590774536,
        -1.3967249393463135,
        0.6538097858428955,
        -1.366093635559082,
        -0.6628097891807556,
    ]


def test_same_seed_and_name_same_bytes_different_name_or_seed_differs():
    a = frozen_weight(InitSpec("kaiming-normal", 7), "conv1", (64, 3, 3, 3))
    b = frozen_weight(InitSpec("kaiming-normal", 7), "conv1", (64, 3, 3, 3))
    assert torch.equal(a, b)
    assert not torch.equal(a, frozen_weight(InitSpec("kaiming-normal", 7), "conv2", (64, 3, 3, 3)))
    assert not torch.equal(a, frozen_weight(InitSpec("kaiming-normal", 8), "conv1", (64, 3, 3, 3)))


@pytest.mark.parametrize("shape", [(300, 784), (64, 16, 3, 3)])
def test_scheme_scales(shape):
    fan_in = int(np.prod(shape[1:]))
    std = math.sqrt(2.0) / math.sqrt(fan_in)
    signed = frozen_weight(InitSpec("signed-constant", 0), "w", shape)
    assert torch.allclose(signed.abs(), torch.full(shape, std))
    assert abs(float((signed > 0).float().mean()) - 0.5) < 0.02
    uniform = frozen_weight(InitSpec("uniform", 0), "w", shape)
    assert float(uniform.abs().max()) <= math.sqrt(3.0) * std + 1e-7
    assert abs(float(uniform.std()) / std - 1.0) < 0.03
    normal = frozen_weight(InitSpec("kaiming-normal", 0), "w", shape)
    assert abs(float(normal.std()) / std - 1.0) < 0.03
    assert abs(float(normal.mean())) < 0.03 * std


def test_checksum_changes_with_any_weight():
    w = frozen_weight(InitSpec("uniform", 0), "fc1", (10, 10))
    base = weight_checksum([("fc1", w)])
    changed = w.clone()
    changed[3, 4] = torch.nextafter(changed[3, 4], torch.tensor(10.0))
    assert weight_checksum([("fc1", changed)]) != base
    assert weight_checksum([("fc2", w)]) != base
    assert weight_checksum([("fc1", w)]) == base


def test_unknown_scheme_is_a_user_error():
    with pytest.raises(SltError, match="unknown init scheme"):
        frozen_weight(InitSpec("xavier", 0), "fc1", (2, 2))
