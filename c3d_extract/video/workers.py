"""Decode worker processes, one video at a time each, watched by the parent.

Native decoder code can hang or abort the process (SPEC section 7), so
decoding never runs in the process that holds the model and the output. A
worker that dies is reported as that video's error; one that produces no
frame for ``timeout`` seconds is killed. Either way a fresh worker takes its
place and the run goes on.

This module must not import torch: spawned workers import it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import types
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np

from c3d_extract.errors import VideoReadError
from c3d_extract.video.decoders import VideoDecoder
from c3d_extract.video.opening import FALLBACK, available_decoders, open_decoder
from c3d_extract.video.preprocess import (RESIZE_TORCHVISION, Preprocessing, prepare_frame,
                                          resize_frame)
from c3d_extract.video.resample import FrameSelector

FRAMES_PER_MESSAGE = 16
#: Messages a worker decodes ahead while the parent is busy (each 16 cropped frames, 0.6 MB).
READ_AHEAD_MESSAGES = 4
#: Seconds a fresh worker may take to start (imports) before its first video's clock runs.
STARTUP_SECONDS = 120.0


@dataclass(frozen=True)
class FrameSampling:
    """Which frames a worker sends, and how far prepared.

    ``target_fps``: resample to this rate by presentation time (``resample``); 0 sends
    every decoded frame. ``crop``: send the preset's centre crop (one crop per clip);
    False sends the resized, uncropped frames, from which several crops are cut on the
    device.
    """

    target_fps: float = 0.0
    crop: bool = True


# ---------------------------------------------------------------- events seen by the parent

@dataclass(frozen=True)
class Started:
    slot: int
    fps: float
    codec: str = ""
    decoder: str = ""          # the backend that decodes the video (after any fallback)
    declared_frames: int = 0   # what the container declares (0: nothing)


@dataclass(frozen=True)
class Frames:
    slot: int
    # (k, crop, crop, 3) uint8 in the preset's channel order; (k, H, W, 3) resized
    # frames when the crops are cut on the device (``FrameSampling.crop`` False)
    frames: np.ndarray


@dataclass(frozen=True)
class Finished:
    slot: int
    n_frames: int  # frames sent: the resampled sequence with a target frame rate
    width: int
    height: int
    decoded_frames: int = 0  # frames the decoder produced


@dataclass(frozen=True)
class Warned:
    slot: int
    message: str  # a problem that did not stop the decoding


@dataclass(frozen=True)
class Noted:
    slot: int
    message: str  # how the video was read (decoder choice): recorded, not shown


@dataclass(frozen=True)
class Damaged:
    slot: int
    message: str  # damage let through by ``allow_damaged``: kept as the video's error text


@dataclass(frozen=True)
class Failed:
    slot: int
    message: str
    n_frames: Optional[int] = None  # frames decoded before the failure, when known


Event = Any  # Started | Frames | Warned | Noted | Damaged | Finished | Failed


# ---------------------------------------------------------------- inside a worker

def _die_with_parent() -> None:
    """Ask Linux to kill this worker when the parent dies (even by SIGKILL)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def decode_video(decoder: str, path: str, preprocessing: Preprocessing, send,
                 sampling: FrameSampling = FrameSampling(), allow_damaged: bool = False) -> None:
    """Decode one video, sending ``("start", fps, codec, decoder, declared_frames)``,
    ``("frames", array)``..., any ``("warning", text)``, ``("note", text)``,
    ``("damage", text)`` (with ``allow_damaged``) and ``("end", n_sent, width, height,
    n_decoded)``, or ``("error", message, n_decoded)``.

    When ``decoder`` fails before it has sent any frame and has a fallback
    (``opening.FALLBACK``), the fallback decodes the video instead, and a note (kept in
    the video table) says why; if that fails too, its message is sent, as it usually names
    the cause better.
    A folder is a frame folder, whatever the decoder.
    """
    fallback = FALLBACK.get(decoder)
    if os.path.isdir(path) or (fallback is not None and fallback not in available_decoders()):
        fallback = None
    failure = _decode_with(decoder, path, preprocessing, send, fallback is not None,
                           allow_damaged, sampling=sampling)
    if failure is not None and fallback is not None:
        note = f"decoded with {_NAMES.get(fallback, fallback)}: {decoder} failed ({failure})"
        _decode_with(fallback, path, preprocessing, send, False, allow_damaged, (note,),
                     sampling=sampling)


_NAMES = {"pyav": "PyAV"}


class _Count:
    decoded = 0


def sampled_frames(video: VideoDecoder, target_fps: float,
                   count: _Count) -> Iterator[Tuple[np.ndarray, int]]:
    """``(decoded frame, times it is used)`` for every frame used at least once: each frame
    once without a ``target_fps``, else as often as the resampled sequence repeats it.
    ``count.decoded`` follows the frames decoded."""
    if not target_fps:
        for frame in video.frames():
            count.decoded += 1
            yield frame, 1
        return
    selector = FrameSelector(target_fps)
    held: Optional[np.ndarray] = None
    for when, frame in video.timed_frames():
        if not np.isfinite(when):
            raise VideoReadError(f"frame {count.decoded} has no presentation time to "
                                 "resample by (--fps)")
        count.decoded += 1
        used = selector.push(when)
        if used and held is not None:
            yield held, used
        held = frame
    used = selector.finish()
    if used and held is not None:
        yield held, used


def _decode_with(decoder: str, path: str, preprocessing: Preprocessing, send,
                 quiet_failure: bool, allow_damaged: bool = False,
                 notes: Tuple[str, ...] = (),
                 sampling: FrameSampling = FrameSampling()) -> Optional[str]:
    """Decode with one backend. With ``quiet_failure``, a failure before the first frame
    is returned instead of sent (the caller may try another backend); else None."""
    n_frames, width, height = 0, 0, 0
    count = _Count()
    started = False
    warnings: Tuple[str, ...] = ()
    prepare = prepare_frame if sampling.crop else resize_frame
    damage = ""
    video: Optional[VideoDecoder] = None
    start: Optional[Tuple[Any, ...]] = None

    def fail(message: str) -> Optional[str]:
        """Report a failure; a video that was opened still gets its metadata and notes."""
        quiet = quiet_failure and not started
        if not quiet:
            if start is not None and not started:
                send(start)
            for line in video.warnings if video is not None else ():
                send(("warning", line))
            for line in video.notes if video is not None else ():  # not the fallback's
                send(("note", line))
        return _failed(message, count.decoded, quiet, send)

    try:
        video = open_decoder(decoder, path, allow_damaged)
        start = ("start", video.fps(), video.codec(), video.name, video.declared_frames())
        with video:
            chunk: List[np.ndarray] = []
            for frame, used in sampled_frames(video, sampling.target_fps, count):
                if n_frames == 0:
                    height, width = frame.shape[:2]
                prepared = prepare(frame, preprocessing)
                for _ in range(used):
                    chunk.append(prepared)
                    n_frames += 1
                    if len(chunk) == FRAMES_PER_MESSAGE:
                        if not started:
                            send(start)
                            started = True
                        send(("frames", np.stack(chunk)))
                        chunk = []
            if not started:
                send(start)
                started = True
            if chunk:
                send(("frames", np.stack(chunk)))
            warnings = tuple(video.warnings)
            notes += video.notes
            damage = video.damage
    except VideoReadError as error:
        return fail(_with_position(str(error), count.decoded))
    except (OSError, ValueError, MemoryError) as error:
        return fail(_with_position(f"{type(error).__name__}: {error}", count.decoded))
    if n_frames == 0:
        return _failed("no frames could be decoded", 0, quiet_failure, send)
    for warning in warnings:
        send(("warning", warning))
    for note in notes:
        send(("note", note))
    if damage:
        send(("damage", damage))
    send(("end", n_frames, width, height, count.decoded))
    return None


def _failed(message: str, n_frames: int, quiet: bool, send) -> Optional[str]:
    if quiet:
        return message
    send(("error", message, n_frames))
    return None


def _with_position(message: str, n_frames: int) -> str:
    """The failure with how far decoding got, unless the message already says it."""
    if not n_frames or "frames decoded" in message:
        return message
    return f"{message} (after {n_frames} decoded frames)"


def _silence_native_logs() -> None:
    """FFmpeg inside the decoders logs to fd 2 and would tear the parent's progress bar;
    every failure reaches the parent as a message instead."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


class _BackgroundSender:
    """Sends a worker's messages from a thread, so that decoding goes on while the parent
    is busy with the network instead of waiting for it to read the pipe.

    At most ``depth`` messages wait, so memory stays bounded. Once the parent is gone,
    ``send`` raises ``BrokenPipeError``.
    """

    def __init__(self, connection: Connection, depth: int = READ_AHEAD_MESSAGES) -> None:
        self._connection = connection
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=depth)
        self._broken = threading.Event()
        self._thread = threading.Thread(target=self._run, name="c3d-send", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            message = self._queue.get()
            if message is None:
                return
            if self._broken.is_set():
                continue  # keep draining so that ``send`` never blocks
            try:
                self._connection.send(message)
            except (BrokenPipeError, OSError):
                self._broken.set()

    def send(self, message: Any) -> None:
        if self._broken.is_set():
            raise BrokenPipeError("the parent closed the connection")
        self._queue.put(message)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()


def worker_main(connection: Connection, decoder: str, preprocessing: Preprocessing,
                native_logs: bool = False, sampling: FrameSampling = FrameSampling(),
                allow_damaged: bool = False) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    _die_with_parent()
    if not native_logs:
        _silence_native_logs()
    try:
        import cv2
        cv2.setNumThreads(1)
    except ImportError:
        pass
    if preprocessing.resize_method == RESIZE_TORCHVISION:
        import torch  # torchvision's resize runs in torch: one thread per decode worker

        torch.set_num_threads(1)
    try:
        connection.send((None, ("ready",)))
    except (BrokenPipeError, OSError):
        return
    sender = _BackgroundSender(connection)
    try:
        while True:
            try:
                task = connection.recv()
            except (EOFError, OSError):
                return
            if task is None:
                return
            slot, path = task
            try:
                decode_video(decoder, path, preprocessing,
                             lambda message: sender.send((slot, message)), sampling,
                             allow_damaged)
            except (BrokenPipeError, EOFError):
                return
    finally:
        sender.close()


# ---------------------------------------------------------------- the parent's side

@contextlib.contextmanager
def _caller_main_hidden():
    """A spawned worker re-imports the parent's ``__main__`` unless told otherwise: a
    script without an ``if __name__ == "__main__"`` guard would start another extraction
    in every worker, and ``python -`` cannot be re-imported at all. Workers need only this
    package, so they are started while ``__main__`` is an empty module."""
    caller_main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if caller_main is not None:
            sys.modules["__main__"] = caller_main


class _Worker:
    def __init__(self, context, decoder: str, preprocessing: Preprocessing,
                 native_logs: bool, sampling: FrameSampling = FrameSampling(),
                 allow_damaged: bool = False) -> None:
        self.connection, child = context.Pipe(duplex=True)
        self.process = context.Process(target=worker_main,
                                       args=(child, decoder, preprocessing, native_logs,
                                             sampling, allow_damaged),
                                       daemon=True, name="c3d-decode")
        with _caller_main_hidden():
            self.process.start()
        child.close()
        self.slot: Optional[int] = None
        self.ready = False  # imports done: from then on the watchdog's timeout applies
        self.last_progress = time.monotonic()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.connection.close()


class DecodePool:
    """``workers`` decode processes; ``submit`` a video, ``poll`` for events."""

    def __init__(self, workers: int, decoder: str, preprocessing: Preprocessing,
                 timeout: float, sampling: FrameSampling = FrameSampling(),
                 allow_damaged: bool = False) -> None:
        self.decoder = decoder
        self.sampling = sampling
        self.allow_damaged = allow_damaged
        self.native_logs = bool(os.environ.get("C3D_EXTRACT_DECODER_LOGS"))
        # Workers need the geometry only; the mean volume stays in the parent.
        self.preprocessing = preprocessing.geometry()
        self.timeout = timeout
        self._context = multiprocessing.get_context("spawn")
        self._workers = [self._start() for _ in range(workers)]

    def _start(self) -> _Worker:
        return _Worker(self._context, self.decoder, self.preprocessing, self.native_logs,
                       self.sampling, self.allow_damaged)

    @property
    def worker_pids(self) -> List[int]:
        """Process ids of the decode workers (they change as workers are replaced)."""
        return [worker.process.pid for worker in self._workers if worker.process.pid]

    @property
    def idle(self) -> int:
        return sum(worker.slot is None for worker in self._workers)

    @property
    def busy(self) -> int:
        return len(self._workers) - self.idle

    def submit(self, slot: int, path: str) -> None:
        worker = next(w for w in self._workers if w.slot is None)
        try:
            worker.connection.send((slot, path))
        except (BrokenPipeError, OSError):
            # It died while idle; its replacement takes the video.
            worker = self._replace(worker)
            worker.connection.send((slot, path))
        worker.slot = slot
        worker.last_progress = time.monotonic()

    def poll(self, wait_seconds: float, max_messages: int = 64) -> List[Event]:
        """Events from busy workers, waiting up to ``wait_seconds`` for the first."""
        busy = [w for w in self._workers if w.slot is not None]
        if not busy:
            return []
        ready = wait([w.connection for w in busy] + [w.process.sentinel for w in busy],
                     timeout=wait_seconds)
        events: List[Event] = []
        for worker in busy:
            if worker.connection in ready or worker.process.sentinel in ready:
                events.extend(self._drain(worker, max_messages))
        now = time.monotonic()
        for worker in busy:
            # A fresh worker is still importing its decoder: that is not the video's time.
            limit = self.timeout if worker.ready else max(self.timeout, STARTUP_SECONDS)
            if worker.slot is not None and now - worker.last_progress > limit \
                    and not worker.connection.poll():
                events.append(Failed(worker.slot, f"the decoder made no progress for "
                                                  f"{self.timeout:g} s and was stopped"))
                self._replace(worker)
        return events

    def _drain(self, worker: _Worker, max_messages: int) -> List[Event]:
        events: List[Event] = []
        for _ in range(max_messages):
            try:
                if not worker.connection.poll():
                    return events
                slot, message = worker.connection.recv()
            except (EOFError, OSError):
                break  # every message is read and the worker is gone
            worker.last_progress = time.monotonic()
            if message[0] == "ready":
                worker.ready = True
                continue
            events.append(_event(slot, message))
            if message[0] in ("end", "error"):
                worker.slot = None
                return events
        else:
            return events  # more to read next time
        # A dead worker's pipe reads as end-of-file (poll() is then true, so check here).
        worker.process.join(timeout=5)
        code = worker.process.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        events.append(Failed(worker.slot, f"the decoder crashed ({how})"))  # type: ignore[arg-type]
        self._replace(worker)
        return events

    def _replace(self, worker: _Worker) -> _Worker:
        worker.kill()
        index = self._workers.index(worker)
        self._workers[index] = self._start()
        return self._workers[index]

    def close(self) -> None:
        for worker in self._workers:
            if worker.slot is None and worker.process.is_alive():
                try:
                    worker.connection.send(None)
                except (BrokenPipeError, OSError):
                    pass
        deadline = time.monotonic() + 2
        for worker in self._workers:
            if worker.slot is None:
                worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            worker.kill()
        self._workers = []

    def __enter__(self) -> "DecodePool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _event(slot: int, message: Tuple[Any, ...]) -> Event:
    kind = message[0]
    if kind == "start":
        return Started(slot, float(message[1]), str(message[2]), str(message[3]),
                       int(message[4]))
    if kind == "frames":
        return Frames(slot, message[1])
    if kind == "warning":
        return Warned(slot, str(message[1]))
    if kind == "damage":
        return Damaged(slot, str(message[1]))
    if kind == "note":
        return Noted(slot, str(message[1]))
    if kind == "end":
        return Finished(slot, int(message[1]), int(message[2]), int(message[3]),
                        int(message[4]))
    return Failed(slot, str(message[1]), int(message[2]) if len(message) > 2 else None)


def default_workers(device_type: str) -> int:
    """Decoding is cheap next to the network on a CPU; a GPU needs many decoders."""
    cores = os.cpu_count() or 1
    return 1 if device_type == "cpu" else max(1, min(cores - 1, 12))
