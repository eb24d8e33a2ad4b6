"""Recycled large arrays (clemlab/_recycle.py): memory is reused only once nothing refers to it."""

import gc
import os
import signal
import threading
import time

import numpy as np
import pytest

from clemlab import _recycle


@pytest.fixture(autouse=True)
def _empty_pool(monkeypatch):
    monkeypatch.setattr(_recycle, "_FREE", {})
    monkeypatch.setattr(_recycle, "_FREE_BYTES", [0])


def test_views_keep_the_memory_from_being_handed_out_again():
    a = _recycle.empty((1024, 1024), np.uint16)
    owner = a.base
    # numpy stops collapsing view chains at an array whose base is not an array: every view
    # refers to `owner`, whose finalizer is what returns the memory
    assert isinstance(owner, np.ndarray) and not isinstance(owner.base, np.ndarray)
    views = [a[3:], a.view(np.uint8), a.reshape(-1)[5:].view(np.int16), np.asarray(a)[::2], a.T]
    assert all(v.base is owner for v in views)
    keep = a[100:200, 7:9]
    a[...] = 7
    del a, owner, views
    gc.collect()
    assert _recycle.pool_bytes() == 0  # `keep` still refers to the memory
    b = _recycle.empty((1024, 1024), np.uint16)
    assert not np.shares_memory(b, keep)
    b[...] = 9
    assert (keep == 7).all()
    del keep
    gc.collect()
    kept = _recycle.pool_bytes()
    assert 2 * 2**20 <= kept <= 2 * 2**20 * 17 // 16 + 4096  # the mapping, with its 1/16 headroom
    c = _recycle.empty((2048, 512), np.uint16)  # same size: the freed mapping, any shape
    assert _recycle.pool_bytes() == 0 and c.shape == (2048, 512) and c.flags.c_contiguous and c.flags.writeable
    del c
    gc.collect()
    d = _recycle.empty(2 * 2**20 + 16, np.uint8)  # a little larger (a codec header more) fits too
    assert _recycle.pool_bytes() == 0 and d.nbytes == 2 * 2**20 + 16
    del d
    gc.collect()
    e = _recycle.empty(4 * 2**20, np.uint8)  # much larger: a new mapping, the small one stays free
    assert _recycle.pool_bytes() == kept and e.nbytes == 4 * 2**20


def test_small_and_object_arrays_are_plain_numpy():
    small = _recycle.empty((100, 100), np.float32)
    assert small.flags.owndata and small.dtype == np.float32
    obj = _recycle.empty((1 << 18,), object)
    assert obj.flags.owndata


def test_free_memory_kept_is_bounded(monkeypatch):
    monkeypatch.setattr(_recycle, "KEEP_BYTES", 3 * 2**20)
    arrays = [_recycle.empty(2**20, np.uint8) for _ in range(5)]
    del arrays
    gc.collect()
    assert 2 * 2**20 < _recycle.pool_bytes() <= 3 * 2**20  # two of the five mappings (1 MiB + 1/16 each)


def test_threads_never_share_live_memory():
    errors = []

    def work(k):
        try:
            for i in range(40):
                a = _recycle.empty((512, 1024), np.uint32)
                a[...] = k * 1000 + i
                b = a[::3]
                del a
                if not (b == k * 1000 + i).all():
                    errors.append((k, i))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_can_allocate_while_another_thread_held_the_lock():
    # dask's multiprocessing scheduler may fork while a worker thread is inside the pool lock
    held, release = threading.Event(), threading.Event()

    def hold():
        with _recycle._LOCK:
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(10)
    pid = os.fork()
    if pid == 0:  # child: would block forever on the inherited, held lock
        code = 1
        try:
            a = _recycle.empty((1024, 1024), np.uint8)
            a[...] = 1
            del a
            gc.collect()
            code = 0 if _recycle.pool_bytes() > 0 else 2
        finally:
            os._exit(code)
    release.set()
    t.join()
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung on the pool lock")
        time.sleep(0.05)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
