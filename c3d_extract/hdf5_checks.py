"""Checks every HDF5 file this tool reads (weights, features, PCA) passes before any dataset
is read.

HDF5 can make a dataset out of bytes outside the file: external storage (raw bytes of
any local file, e.g. ``/proc/self/environ``), virtual datasets (slices of other files)
and soft or external links (another file's objects). A downloaded file could so copy a
local file into our outputs; such files are refused, naming the dataset. A dataset's
declared size must also be backed by the file: a chunked dataset that declares
gigabytes but whose chunks were never written (or a contiguous one reaching past the
end of the file) would make the reader allocate all of it before anything is checked.
"""

from __future__ import annotations

from typing import Any, Optional, Type

#: Most bytes one compressed byte of a chunk may become (deflate's own limit is 1032).
MAX_CHUNK_RATIO = 1100
#: Datasets up to this many bytes are never refused for their size.
SMALL_DATASET_BYTES = 1 << 20
#: Most objects a file may hold.
MAX_OBJECTS = 100_000


def declared_bytes(dataset: Any) -> int:
    """``prod(shape) * itemsize`` of a dataset, in Python integers (no overflow)."""
    count = 1
    for dim in dataset.shape or ():
        count *= int(dim)
    return count * int(dataset.dtype.itemsize)


def check_dataset(dataset: Any, name: str, path: str, file_size: int,
                  error: Type[Exception], *, written: bool = False, sizes: bool = True) -> None:
    """Refuse a dataset stored outside the file, or (with ``sizes``) declaring more than the
    file holds.

    With ``written`` a dataset whose storage was never written (it reads as its fill value
    only) is refused too.
    """
    if dataset.is_virtual:
        raise error(f"refusing to read {path}: dataset {name} is a virtual dataset (its data "
                    "would come from other files)")
    if dataset.id.get_create_plist().get_external_count() > 0:
        raise error(f"refusing to read {path}: dataset {name} has external storage (its data "
                    "would come from another local file)")
    if not sizes:
        return
    declared = declared_bytes(dataset)
    stored = int(dataset.id.get_storage_size())
    if written and declared and stored == 0:
        raise error(f"refusing to read {path}: dataset {name} was never written (it holds "
                    "only its fill value)")
    if stored > file_size:
        raise error(f"refusing to read {path}: dataset {name} declares {stored} bytes of "
                    f"storage in a file of {file_size}")
    if declared > max(stored * MAX_CHUNK_RATIO, SMALL_DATASET_BYTES):
        raise error(f"refusing to read {path}: dataset {name} declares shape "
                    f"{tuple(dataset.shape)} ({declared} bytes) but stores {stored} bytes")


def check_hdf5(handle: Any, path: str, error: Type[Exception], *, written: bool = False,
               sizes: bool = True, file_size: Optional[int] = None) -> None:
    """Walk every link of an open ``h5py.File`` (hard-link cycles visited once) and check
    each dataset (``check_dataset``); soft and external links are refused. Without
    ``sizes`` only where the data comes from is checked (the caller checks each dataset's
    size before reading it)."""
    import h5py

    if file_size is None:
        file_size = int(handle.id.get_filesize())
    seen = {handle.id}
    pending = [("", handle)]
    count = 0
    while pending:
        prefix, group = pending.pop()
        for key in group:
            name = f"{prefix}/{key}"
            count += 1
            if count > MAX_OBJECTS:
                raise error(f"refusing to read {path}: it holds over {MAX_OBJECTS} objects")
            link = group.get(key, getlink=True)
            if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
                kind = "a soft link" if isinstance(link, h5py.SoftLink) else "an external link"
                raise error(f"refusing to read {path}: {name} is {kind} (only objects stored "
                            "in the file itself are read)")
            item = group.get(key)
            if isinstance(item, h5py.Group):
                if item.id not in seen:
                    seen.add(item.id)
                    pending.append((name, item))
            elif isinstance(item, h5py.Dataset):
                check_dataset(item, name.lstrip("/"), path, file_size, error, written=written,
                              sizes=sizes)
            elif not isinstance(item, h5py.Datatype):  # a named type holds no data
                raise error(f"refusing to read {path}: {name} is neither a group nor a dataset")
