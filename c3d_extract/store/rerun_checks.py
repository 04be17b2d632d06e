"""Checks before a run writes: the output's folder exists, and a rerun asks for what the
existing file and journal were made with."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Sequence

from c3d_extract.device.sharding import Shard
from c3d_extract.errors import ParameterMismatchError, StoreError
from c3d_extract.store.journal import Journal
from c3d_extract.store.read import read_attributes, recorded_shard
from c3d_extract.store.records import RunParameters


def check_output_location(path: str) -> None:
    """Raise ``StoreError`` unless ``path``'s folder exists and is writable (cheap: runs
    before the network is built, so a mistyped output fails at once)."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise StoreError(f"{directory} is not a directory, so {path} cannot be written in it")
    if not os.path.isdir(directory):
        raise StoreError(f"the output directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise StoreError(f"the output directory {directory} is not writable")


def check_parameters(recorded: RunParameters, requested: RunParameters, where: str) -> None:
    """Raise ``ParameterMismatchError`` naming every field in which ``requested`` differs
    from the parameters ``where`` (a file or journal) was made with."""
    differences = recorded.differences(requested)
    if differences:
        raise ParameterMismatchError(
            f"{where} was made with other parameters ({'; '.join(differences)}); "
            "rerun with the same options, choose another output, or pass --overwrite "
            "to replace it")


def check_shard(recorded: Optional[Shard], requested: Optional[Shard], where: str) -> None:
    if recorded != requested:
        raise ParameterMismatchError(
            f"{where} holds {_describe_shard(recorded)}, this run "
            f"{_describe_shard(requested)}; rerun with the same --shard, choose another "
            "output, or pass --overwrite to replace it")


def _describe_shard(shard: Optional[Shard]) -> str:
    return "all videos" if shard is None else f"shard {shard}"


def journal_header(journal: Journal) -> Optional[Dict[str, Any]]:
    for meta, _ in journal.records():
        if meta.get("kind") == "header":
            return meta
    return None


def header_shard(header: Dict[str, Any]) -> Optional[Shard]:
    shard = header.get("shard")
    return Shard(*shard) if shard else None


def journal_folded(path: str, header: Optional[Dict[str, Any]]) -> bool:
    """Whether the journal with ``header`` was already folded into the output (its commit
    finished; the process died before removing it)."""
    return header is not None and bool(header.get("token")) and os.path.exists(path) \
        and read_attributes(path).get("folded_journal") == header["token"]


def check_rerun(path: str, requested: Callable[[RunParameters], RunParameters],
                shard: Optional[Shard] = None) -> None:
    """Refuse at once a run that the existing output ``path`` (or its unfinished run's
    journal) would refuse, before the run loads weights or converts a network.

    ``requested(recorded)`` gives the parameters of this run as far as they are known
    before the network is loaded, the others copied from ``recorded``. The message is
    the one ``FeatureStore`` gives. Read without the lock and only as a first look:
    anything unreadable is left for ``FeatureStore``, which checks again when it opens.
    """
    path = os.path.abspath(path)
    try:
        header = journal_header(Journal(path + ".journal"))
        folded = journal_folded(path, header)
    except (StoreError, OSError, KeyError, ValueError):
        return
    replaces_output = False
    if header is not None and not folded:
        try:
            recorded = RunParameters.from_attrs(header["params"])
        except (KeyError, TypeError, ValueError):
            return
        where = f"the unfinished run's journal {path}.journal"
        check_parameters(recorded, requested(recorded), where)
        check_shard(header_shard(header), shard, where)
        replaces_output = bool(header.get("replaces_output", False))
    if os.path.exists(path) and not replaces_output:
        try:
            attrs = read_attributes(path)
            recorded = RunParameters.from_attrs(attrs)
        except (StoreError, OSError, KeyError, TypeError, ValueError):
            return
        where = f"the existing output {path}"
        check_parameters(recorded, requested(recorded), where)
        check_shard(recorded_shard(attrs), shard, where)


def check_resumable(path: str, params: RunParameters, fields: Sequence[str]) -> None:
    """Raise ``ParameterMismatchError`` if the existing output ``path`` was made with other
    values of ``fields`` than ``params``: a cheap look before the network is built. The
    store checks every field again when it opens."""
    if not os.path.exists(path):
        return
    try:
        recorded = RunParameters.from_attrs(read_attributes(path))
    except (StoreError, KeyError, ValueError):
        return  # not readable now: the store, under its lock, says why
    differences = [text for text in recorded.differences(params)
                   if text.split(":", 1)[0] in fields]
    if differences:
        raise ParameterMismatchError(
            f"the existing output {path} was made with other parameters "
            f"({'; '.join(differences)}); rerun with the same options, choose another "
            "output, or pass --overwrite to replace it")
