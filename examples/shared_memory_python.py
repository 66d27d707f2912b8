"""The CPython side of examples/shared_memory_python.rs.

    python3 shared_memory_python.py sum NAME   # attach to a float64 block, print its sum
    python3 shared_memory_python.py list       # make a ShareableList, let Rust edit it

Python before 3.13 registers a block it merely attaches to with its
resource tracker, which would unlink it when this script exits; each block
is handed back with `resource_tracker.unregister` (3.13: `track=False`).
"""
import sys
from multiprocessing import resource_tracker, shared_memory


def untrack(shm):
    resource_tracker.unregister(shm._name, "shared_memory")


def sum_block(name):
    shm = shared_memory.SharedMemory(name)
    untrack(shm)
    try:
        import numpy as np

        arr = np.ndarray((shm.size // 8,), dtype=np.float64, buffer=shm.buf)
        total, how = float(arr.sum()), "numpy"
        del arr
    except ImportError:
        view = shm.buf.cast("d")
        total, how = sum(view), "memoryview.cast('d')"
        view.release()
    print(f"python sum: {total:.1f} ({how}, {shm.size} bytes)", flush=True)
    shm.close()


def make_list():
    # This process outlives Rust's use of the list and unlinks it itself, so
    # its tracker may keep it.
    sl = shared_memory.ShareableList([42, 3.25, True, "from python", b"\x01\x02", None])
    print(sl.shm.name, flush=True)
    sys.stdin.readline()  # Rust has read and written it
    print(f"python sees: {list(sl)!r}", flush=True)
    sl.shm.close()
    sl.shm.unlink()


if __name__ == "__main__":
    if sys.argv[1] == "sum":
        sum_block(sys.argv[2])
    else:
        make_list()
