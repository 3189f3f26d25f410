from __future__ import annotations

import numpy as np
import pytest

from nbflow.store.codec import OUT_OF_BAND_MIN, encode, value_digest


def test_digest_folds_in_dtype_and_shape() -> None:
    a = np.zeros(8, dtype=np.int32)  # 32 zero bytes
    b = np.zeros(4, dtype=np.int64)  # the same 32 zero bytes
    c = np.zeros((2, 4), dtype=np.int32)
    assert a.tobytes() == b.tobytes() == c.tobytes()
    assert len({value_digest(a), value_digest(b), value_digest(c)}) == 3
    big_a = np.zeros(OUT_OF_BAND_MIN, dtype=np.int32)
    big_b = np.zeros(OUT_OF_BAND_MIN // 2, dtype=np.int64)
    assert value_digest(big_a) != value_digest(big_b)


def test_equal_content_equal_digest_and_out_of_band() -> None:
    x = np.arange(100_000, dtype=np.float64)
    e1, e2 = encode(x), encode(x.copy())
    assert e1.digest == e2.digest
    assert len(e1.buffers) == 1 and e1.buffers[0].nbytes == x.nbytes
    assert encode(x + 1).digest != e1.digest


def test_decoded_arrays_are_read_only_copies_for_small_values() -> None:
    x = np.arange(100_000)
    y = encode(x).decode()
    with pytest.raises(ValueError):
        y[0] = 5
    small = {"a": [1, 2]}
    enc = encode(small)
    got = enc.decode()
    got["a"].append(3)
    assert enc.decode() == {"a": [1, 2]}


@pytest.mark.parametrize("value", [0, -5, 2**70, 1.5, float("inf"), 2 - 1j, "", "é" * 300, b"ab", True,
                                   None])
def test_a_scalar_has_the_digest_cloudpickle_gives_it(value: object) -> None:
    """Scalars skip cloudpickle's pickler; their bytes, hence every stored key, are the same."""
    import cloudpickle

    assert encode(value).stream == cloudpickle.dumps(value, protocol=5)
