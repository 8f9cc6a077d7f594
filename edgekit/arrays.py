"""Reading a user's .npy file: one ``error:`` line for anything that is not a plain array."""
from __future__ import annotations

import numpy as np

from .errors import EdgekitError


def load_npy(path, what: str, error: type[EdgekitError] = EdgekitError) -> np.ndarray:
    """The array in ``path`` (a .npy file, never unpickled). An empty or truncated file, an .npz
    archive, a pickle or a directory is one error naming the file and ``what`` it should hold."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise error(f"{path}: cannot read {what} ({first}); give a plain .npy array (np.save, no pickled objects)") from None
    if not isinstance(data, np.ndarray):  # np.load opens .npz archives too
        data.close()
        raise error(f"{path}: an .npz archive; give {what} as one .npy array (np.save)")
    return data
