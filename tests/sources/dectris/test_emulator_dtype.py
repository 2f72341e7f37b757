"""The emulator's --dtype with an --hdf5 stack of another dtype: a uint16 stack sent as
uint32 keeps its gap markers (65535 becomes uint32's largest, not a count of 65535);
a narrower or signed --dtype is refused (it cast silently before)."""

from __future__ import annotations

import numpy as np
import pytest

from stream.sources.dectris.emulator import as_dtype


def test_a_wider_dtype_keeps_the_markers():
    frame = np.array([[0, 7, 65535], [65534, 65535, 1]], np.uint16)
    (wide,) = as_dtype([frame], "uint32")
    assert wide.dtype == np.uint32
    assert wide.tolist() == [[0, 7, 2**32 - 1], [65534, 2**32 - 1, 1]]
    assert np.array_equal(as_dtype([frame], "uint16")[0], frame)


@pytest.mark.parametrize("dtype, given", [(np.uint32, "uint16"), (np.int32, "uint32")])
def test_a_narrower_or_signed_stack_is_refused(dtype, given):
    with pytest.raises(ValueError, match="cannot be sent as"):
        as_dtype([np.zeros((2, 2), dtype)], given)
