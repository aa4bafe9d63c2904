"""Running a prediction generator in a thread, a few items ahead of its consumer.

The evaluation node yields one case at a time and Kedro writes each case's NIfTI images (resampling,
gzip) before asking for the next. Run in the same thread, the GPU waits for every write. Here the
predictions are made in a worker thread that stays at most ``ahead`` cases ahead, so the GPU samples
the next cases while the main thread writes the last one, and memory holds only that small window.
The worker thread does all of the prediction, including compiling the network on its first call (one
thread compiles at a time: torch.compile is not thread-safe for concurrent compilations). Callers keep
CUDA-graph modes out of it: cudagraph trees keep per-thread state that torch releases before mid-2026 set up
for the main thread only (pytorch/pytorch#123177).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


def in_background(make: Callable[[], Iterator[T]], ahead: int) -> Iterator[T]:
    """The items of ``make()``, produced in a thread at most ``ahead`` items ahead (``ahead`` 0: this thread).

    An exception in the worker is raised here, at the item where it happened; closing this generator early
    (the consumer failed or stopped) stops the worker after its current item.
    """
    if ahead <= 0:
        yield from make()
        return
    items: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in make():
                if not put((item, None)):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            put((_DONE, error))
            return
        put((_DONE, None))

    worker = threading.Thread(target=work, name="prediction", daemon=True)
    worker.start()
    try:
        while True:
            item, error = items.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        worker.join()
