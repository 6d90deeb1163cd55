"""Reading one HDF5 dataset of a weights file from a stranger, in bounded memory and time.

HDF5 trusts a file's storage description: a dataset's chunks may be far larger than the dataset
(libhdf5 allocates the whole chunk to read it), a filter may return fewer bytes than a chunk holds
(libhdf5 then hands back uninitialised heap memory as data), and a deflate stream may expand
without limit. So before a dataset is read, its storage is checked to be one Keras or fastdense
writes, with every byte of it present in the file:

- contiguous or compact storage, without filters (what Keras writes), holding exactly the
  dataset's bytes, inside the file;
- chunked storage (what fastdense writes: one chunk, Fletcher-32 checksum) with no filter other
  than Fletcher-32, chunks no larger than the dataset (at most `MAX_CHUNKS` of them), every chunk
  stored, unfiltered-mask, with exactly its bytes (+ 4 for the checksum), inside the file.

Compression filters (deflate, LZF, szip, ...) are refused: Keras never writes them, and without
them the bytes read are the bytes stored, so memory is bounded by the dataset's own size.
"""
import math

import numpy as np

MAX_CHUNKS = 4096        # chunks per dataset (fastdense writes 1, Keras writes none)
_FLETCHER32 = 3          # H5Z_FILTER_FLETCHER32
_FILTER_NAMES = {1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit",
                 6: "scaleoffset", 32000: "lzf"}


class StorageError(ValueError):
    """A dataset whose storage fastdense refuses to read (the message names the dataset)."""


def read_dataset(ds, shape, kinds, file_size, where):
    """The data of h5py dataset `ds` as a new NumPy array, after checking its shape (== `shape`),
    its dtype kind (a letter of `kinds`: "f" float, "iu" integer) and its storage (see the module
    docstring); `file_size` is the byte length of the HDF5 file, `where` names the dataset."""
    shape = tuple(shape)
    if ds.shape != shape:
        raise StorageError(f"{where} has shape {ds.shape}; the model needs {shape}")
    dt = ds.dtype
    if dt.kind not in kinds or dt.itemsize not in (2, 4, 8) or dt.fields is not None \
            or dt.subdtype is not None:
        raise StorageError(f"{where} has dtype {dt}; expected a "
                           f"{'float' if kinds == 'f' else 'integer'} dataset")
    check_storage(ds, shape, where, file_size)
    arr = np.asarray(ds[()])
    if arr.shape != shape:
        raise StorageError(f"{where} read back with shape {arr.shape}")
    return arr


def check_storage(ds, shape, where, file_size):
    """Raises StorageError unless `ds` is stored as Keras or fastdense store datasets, entirely
    inside a file of `file_size` bytes (see the module docstring)."""
    h5py = _h5py()
    dsid = ds.id
    dcpl = dsid.get_create_plist()
    itemsize = dsid.get_type().get_size()
    nbytes = math.prod(shape) * itemsize
    if dcpl.get_external_count():
        raise StorageError(f"{where} keeps its data in an external file, which fastdense refuses")
    filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
    layout = dcpl.get_layout()
    if layout == h5py.h5d.CONTIGUOUS and not filters:
        offset, size = dsid.get_offset(), dsid.get_storage_size()
        if nbytes and (offset is None or size != nbytes or offset + size > file_size):
            raise StorageError(f"{where} declares {nbytes} bytes of data, but the file holds "
                               f"{0 if offset is None else size} of them (truncated or damaged)")
    elif layout == h5py.h5d.COMPACT and not filters:
        if dsid.get_storage_size() != nbytes:
            raise StorageError(f"{where} declares {nbytes} bytes of data, but its compact "
                               f"storage holds {dsid.get_storage_size()}")
    elif layout == h5py.h5d.CHUNKED:
        _check_chunks(ds, shape, filters, itemsize, file_size, where)
    else:
        kind = {h5py.h5d.CONTIGUOUS: "contiguous", h5py.h5d.COMPACT: "compact",
                h5py.h5d.CHUNKED: "chunked"}.get(layout, f"layout {layout} (virtual?)")
        raise StorageError(f"{where} has {kind} storage with filters {filters}, which Keras "
                           "does not write")


def _check_chunks(ds, shape, filters, itemsize, file_size, where):
    bad = [f for f in filters if f != _FLETCHER32]
    if bad:
        names = ", ".join(f"{_FILTER_NAMES.get(f, 'filter')} ({f})" for f in bad)
        raise StorageError(f"{where} is stored with HDF5 filter {names}; fastdense reads "
                           "uncompressed datasets only (as Keras writes them), optionally with "
                           "Fletcher-32 checksums")
    chunks = tuple(ds.chunks or ())
    if len(chunks) != len(shape) or any(c < 1 or c > d for c, d in zip(chunks, shape)):
        raise StorageError(f"{where} has chunks of shape {chunks}, larger than the dataset's "
                           f"shape {shape}")
    grid = [-(-d // c) for d, c in zip(shape, chunks)]
    n_chunks = math.prod(grid)
    if n_chunks > MAX_CHUNKS:
        raise StorageError(f"{where} is split into {n_chunks} chunks, more than the "
                           f"{MAX_CHUNKS} fastdense reads")
    dsid = ds.id
    if dsid.get_num_chunks() != n_chunks:
        raise StorageError(f"{where} stores {dsid.get_num_chunks()} of its {n_chunks} chunks "
                           "(truncated or damaged)")
    stored = math.prod(chunks) * itemsize + (4 if filters else 0)
    for index in np.ndindex(*grid):
        coord = tuple(int(i) * c for i, c in zip(index, chunks))
        info = dsid.get_chunk_info_by_coord(coord)
        if info.byte_offset is None or info.size != stored or info.filter_mask != 0 \
                or info.byte_offset + info.size > file_size:
            raise StorageError(f"{where}: its chunk at {coord} is missing, damaged or not "
                               f"{stored} bytes (holds {info.size})")


def _h5py():
    import h5py

    return h5py
