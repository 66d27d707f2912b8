#!/usr/bin/env python3
"""CPython's side of `cargo bench --bench vs_python`: the same workloads, counts
and checks as benches/vs_python/*.rs, with CPython's multiprocessing.

Standard library only. Usage:

    python3 benches/python/vs_python.py --start-method spawn|fork|forkserver [--quick]
        [--count N] [WORKLOAD ...]

Runs the named workloads (all when none is named) and prints one JSON object
to stdout:

    {"python": "3.11.7", "start_method": "fork", "quick": false,
     "counts": {WORKLOAD: N}, "results": {WORKLOAD: number}}

`--count N` overrides the workload's count (the Rust harness passes its own
count, so both sides run the same number of items). Every workload checks its
result (map checksums, the contended counter's final value, echoed values) and
the script exits non-zero with a message on stderr when a check fails.
"""

import argparse
import json
import multiprocessing as mp
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor

# Full-mode counts; --quick divides each by 10 (at least 1), except where
# QUICK_COUNTS says otherwise. Keep in step with
# the `count` of each workload in benches/vs_python/*.rs (the harness passes
# its count explicitly anyway).
COUNTS = {
    "spawn_join_ms": 20,  # start+join rounds
    "pool_startup_ms": 10,  # Pool(2) up, one task, close, join
    "pool_map_tasks_per_s": 200_000,  # items
    "pool_map_chunksize1_tasks_per_s": 20_000,  # items
    "pool_imap_tasks_per_s": 50_000,  # items
    "pool_apply_roundtrip_us": 2_000,  # applies
    "executor_submit_roundtrip_us": 2_000,  # submit().result() calls
    "executor_map_tasks_per_s": 20_000,  # items, chunksize 1
    "queue_pingpong_us": 10_000,  # round trips
    "queue_throughput_msgs_per_s": 200_000,  # messages
    "pipe_pingpong_us": 20_000,  # round trips
    "pipe_throughput_mb_per_s": 256,  # MiB, as 1 MiB messages
    "lock_uncontended_ns": 1_000_000,  # acquire+release pairs
    "lock_contended_ops_per_s": 100_000,  # increments per process (2 processes)
    "event_pingpong_us": 5_000,  # round trips
    "manager_namespace_set_get_us": 2_000,  # set+get pairs
    "manager_dict_ops_per_s": 10_000,  # ops (half sets, half gets)
    "cpu_speedup_2proc": 8,  # CPU-bound tasks
    "shm_attach_us": 20_000,  # attach + close of a 1 MiB block
    "shared_array_sum_gb_per_s": 256,  # MiB of float64 summed by a worker
}

QUICK_COUNTS = {"cpu_speedup_2proc": 8}  # fewer steps per task instead

# CPU-bound task of cpu_speedup_2proc: this many LCG steps (about 0.1 s of
# CPython; the Rust side runs more steps so one task takes a similar time: the
# figure is a dimensionless speedup, serial time / Pool(2) time).
CPU_STEPS = 1_500_000
CPU_STEPS_QUICK = 300_000

MIB = 1 << 20


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)


# ---------------------------------------------------------------- targets
# Module level, so the spawn start method can pickle them.


def noop(_=None):
    return None


def square(x):
    return x * x


def cpu_task(args):
    seed, steps = args
    x = seed
    for _ in range(steps):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def pipe_echo(conn):
    while True:
        x = conn.recv()
        if x is None:
            break
        conn.send(x + 1)
    conn.close()


def pipe_sender(conn, n_mib):
    buf = bytearray(MIB)
    conn.send("ready")
    check(conn.recv() == "go", "pipe_throughput: no go")
    for i in range(n_mib):
        buf[0:8] = i.to_bytes(8, "little")
        conn.send_bytes(buf)
    conn.close()


def queue_echo(inq, outq):
    while True:
        x = inq.get()
        if x is None:
            break
        outq.put(x + 1)


def queue_producer(q, go, n):
    q.put(-1)  # ready
    go.get()
    for i in range(n):
        q.put(i)


def contended_worker(value, barrier, done, n):
    barrier.wait()
    for _ in range(n):
        with value.get_lock():
            value.value += 1
    done.put(1)


def event_echo(ping, pong, n):
    for _ in range(n):
        ping.wait()
        ping.clear()
        pong.set()


# -------------------------------------------------------------- workloads
# Each takes (ctx, n, quick) and returns the figure; warm-up is untimed.


def spawn_join_ms(ctx, n, quick):
    p = ctx.Process(target=noop)
    p.start()
    p.join()  # warm-up
    t0 = time.perf_counter()
    for _ in range(n):
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        check(p.exitcode == 0, "spawn_join: exit code %r" % p.exitcode)
    return (time.perf_counter() - t0) * 1e3 / n


def pool_startup_ms(ctx, n, quick):
    total = 0.0
    for i in range(n + 1):  # round 0 is the warm-up
        t0 = time.perf_counter()
        pool = ctx.Pool(2)
        r = pool.apply(square, (7,))
        pool.close()
        pool.join()
        dt = time.perf_counter() - t0
        check(r == 49, "pool_startup: apply gave %r" % r)
        if i:
            total += dt
    return total * 1e3 / n


def _map_rate(ctx, n, chunksize, imap):
    with ctx.Pool(2) as pool:
        check(pool.apply(square, (3,)) == 9, "pool warm-up")
        pool.map(square, range(1000))  # warm-up
        t0 = time.perf_counter()
        if imap:
            got = 0
            for r in pool.imap(square, range(n), chunksize=chunksize):
                got += r
        elif chunksize is None:
            got = sum(pool.map(square, range(n)))
        else:
            got = sum(pool.map(square, range(n), chunksize=chunksize))
        dt = time.perf_counter() - t0
        pool.close()
        pool.join()
    want = (n - 1) * n * (2 * n - 1) // 6
    check(got == want, "map checksum %d != %d" % (got, want))
    return n / dt


def pool_map_tasks_per_s(ctx, n, quick):
    return _map_rate(ctx, n, None, False)


def pool_map_chunksize1_tasks_per_s(ctx, n, quick):
    return _map_rate(ctx, n, 1, False)


def pool_imap_tasks_per_s(ctx, n, quick):
    return _map_rate(ctx, n, 64, True)


def pool_apply_roundtrip_us(ctx, n, quick):
    with ctx.Pool(2) as pool:
        for _ in range(50):  # warm-up
            pool.apply(noop)
        t0 = time.perf_counter()
        for _ in range(n):
            pool.apply(noop)
        dt = time.perf_counter() - t0
        pool.close()
        pool.join()
    return dt * 1e6 / n


def executor_submit_roundtrip_us(ctx, n, quick):
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        for _ in range(50):  # warm-up
            ex.submit(noop).result()
        t0 = time.perf_counter()
        for _ in range(n):
            ex.submit(noop).result()
        dt = time.perf_counter() - t0
    return dt * 1e6 / n


def executor_map_tasks_per_s(ctx, n, quick):
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        check(ex.submit(square, 3).result() == 9, "executor warm-up")
        check(sum(ex.map(square, range(1000))) == 332_833_500, "executor warm-up map")
        t0 = time.perf_counter()
        got = 0
        for r in ex.map(square, range(n), chunksize=1):
            got += r
        dt = time.perf_counter() - t0
    want = (n - 1) * n * (2 * n - 1) // 6
    check(got == want, "executor map checksum %d != %d" % (got, want))
    return n / dt


def queue_pingpong_us(ctx, n, quick):
    inq, outq = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=queue_echo, args=(inq, outq))
    p.start()
    for i in range(100):  # warm-up
        inq.put(i)
        check(outq.get() == i + 1, "queue echo")
    t0 = time.perf_counter()
    for i in range(n):
        inq.put(i)
        r = outq.get()
        if r != i + 1:
            raise CheckFailed("queue echo %r != %r" % (r, i + 1))
    dt = time.perf_counter() - t0
    inq.put(None)
    p.join()
    check(p.exitcode == 0, "queue echo exit code")
    return dt * 1e6 / n


def queue_throughput_msgs_per_s(ctx, n, quick):
    q, go = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=queue_producer, args=(q, go, n))
    p.start()
    check(q.get() == -1, "producer ready")
    t0 = time.perf_counter()
    go.put(1)
    got = 0
    for _ in range(n):
        got += q.get()
    dt = time.perf_counter() - t0
    p.join()
    check(p.exitcode == 0, "producer exit code")
    want = (n - 1) * n // 2
    check(got == want, "queue checksum %d != %d" % (got, want))
    return n / dt


def pipe_pingpong_us(ctx, n, quick):
    a, b = ctx.Pipe(duplex=True)
    p = ctx.Process(target=pipe_echo, args=(b,))
    p.start()
    b.close()
    for i in range(100):  # warm-up
        a.send(i)
        check(a.recv() == i + 1, "pipe echo")
    t0 = time.perf_counter()
    for i in range(n):
        a.send(i)
        r = a.recv()
        if r != i + 1:
            raise CheckFailed("pipe echo %r != %r" % (r, i + 1))
    dt = time.perf_counter() - t0
    a.send(None)
    p.join()
    check(p.exitcode == 0, "pipe echo exit code")
    return dt * 1e6 / n


def pipe_throughput_mb_per_s(ctx, n, quick):
    a, b = ctx.Pipe(duplex=True)
    p = ctx.Process(target=pipe_sender, args=(b, n))
    p.start()
    b.close()
    check(a.recv() == "ready", "pipe sender ready")
    t0 = time.perf_counter()
    a.send("go")
    total = 0
    for i in range(n):
        m = a.recv_bytes()
        if len(m) != MIB or int.from_bytes(m[0:8], "little") != i:
            raise CheckFailed("pipe_throughput: message %d wrong" % i)
        total += len(m)
    dt = time.perf_counter() - t0
    p.join()
    check(p.exitcode == 0, "pipe sender exit code")
    check(total == n * MIB, "pipe_throughput: byte count")
    return total / MIB / dt


def lock_uncontended_ns(ctx, n, quick):
    lock = ctx.Lock()
    for _ in range(1000):  # warm-up
        lock.acquire()
        lock.release()
    acquire, release = lock.acquire, lock.release
    t0 = time.perf_counter()
    for _ in range(n):
        acquire()
        release()
    dt = time.perf_counter() - t0
    return dt * 1e9 / n


def lock_contended_ops_per_s(ctx, n, quick):
    value = ctx.Value("q", 0)
    barrier = ctx.Barrier(3)
    done = ctx.Queue()
    ps = [ctx.Process(target=contended_worker, args=(value, barrier, done, n)) for _ in range(2)]
    for p in ps:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    done.get()
    done.get()
    dt = time.perf_counter() - t0
    for p in ps:
        p.join()
        check(p.exitcode == 0, "contended worker exit code")
    check(value.value == 2 * n, "contended count %d != %d" % (value.value, 2 * n))
    return 2 * n / dt


def event_pingpong_us(ctx, n, quick):
    warm = 100
    ping, pong = ctx.Event(), ctx.Event()
    p = ctx.Process(target=event_echo, args=(ping, pong, n + warm))
    p.start()
    for i in range(n + warm):
        if i == warm:
            t0 = time.perf_counter()
        ping.set()
        check(pong.wait(60), "event pong timed out")
        pong.clear()
    dt = time.perf_counter() - t0
    p.join()
    check(p.exitcode == 0, "event echo exit code")
    return dt * 1e6 / n


def manager_namespace_set_get_us(ctx, n, quick):
    with ctx.Manager() as m:
        ns = m.Namespace()
        for i in range(50):  # warm-up
            ns.x = i
            check(ns.x == i, "namespace warm-up")
        t0 = time.perf_counter()
        for i in range(n):
            ns.x = i
            if ns.x != i:
                raise CheckFailed("namespace get %d" % i)
        dt = time.perf_counter() - t0
    return dt * 1e6 / n


def manager_dict_ops_per_s(ctx, n, quick):
    half = n // 2
    with ctx.Manager() as m:
        d = m.dict()
        for i in range(50):  # warm-up
            d[-1 - i] = i
        d.clear()
        t0 = time.perf_counter()
        for i in range(half):
            d[i] = i
        got = 0
        for i in range(half):
            got += d[i]
        dt = time.perf_counter() - t0
        check(len(d) == half, "dict len")
    want = (half - 1) * half // 2
    check(got == want, "dict checksum %d != %d" % (got, want))
    return 2 * half / dt


def cpu_speedup_2proc(ctx, n, quick):
    steps = CPU_STEPS_QUICK if quick else CPU_STEPS
    work = [(seed, steps) for seed in range(1, n + 1)]
    cpu_task((0, steps // 10))  # warm-up
    t0 = time.perf_counter()
    serial = [cpu_task(w) for w in work]
    t_serial = time.perf_counter() - t0
    with ctx.Pool(2) as pool:
        check(pool.apply(square, (2,)) == 4, "pool warm-up")
        t0 = time.perf_counter()
        parallel = pool.map(cpu_task, work, chunksize=1)
        t_pool = time.perf_counter() - t0
        pool.close()
        pool.join()
    check(parallel == serial, "cpu tasks: pool results differ from serial ones")
    return t_serial / t_pool


def shm_attach_us(ctx, n, quick):
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(create=True, size=MIB)
    shm.buf[0] = 7

    def once():
        other = shared_memory.SharedMemory(shm.name)
        check(other.buf[0] == 7, "attached to another block")
        other.close()

    once()  # warm-up
    t0 = time.perf_counter()
    for _ in range(n):
        once()
    us = (time.perf_counter() - t0) * 1e6 / n
    shm.close()
    shm.unlink()
    return us


SUM_PASSES = 4


def _array_sum(buf):
    try:
        import numpy as np

        arr = np.ndarray((len(buf) // 8,), dtype=np.float64, buffer=buf)
        return lambda: float(arr.sum())
    except ImportError:
        view = buf.cast("d")
        return lambda: sum(view)


def shm_sum_worker(name, conn):
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name)
    total = _array_sum(shm.buf)
    expected = total()  # untimed pass
    t0 = time.perf_counter()
    for _ in range(SUM_PASSES):
        check(total() == expected, "sum changed between passes")
    gbps = shm.size * SUM_PASSES / (time.perf_counter() - t0) / 1e9
    conn.send((gbps, expected))
    del total
    shm.close()


def shared_array_sum_gb_per_s(ctx, n, quick):
    from array import array
    from multiprocessing import shared_memory

    size = n * MIB
    shm = shared_memory.SharedMemory(create=True, size=size)
    pattern = array("d", range(1000)).tobytes()
    shm.buf[:size] = (pattern * (size // len(pattern) + 1))[:size]
    count = size // 8
    want = float(sum(range(1000)) * (count // 1000) + sum(range(count % 1000)))
    ours, theirs = ctx.Pipe()
    p = ctx.Process(target=shm_sum_worker, args=(shm.name, theirs))
    p.start()
    gbps, got = ours.recv()
    p.join()
    check(p.exitcode == 0, "sum worker: exit code %r" % p.exitcode)
    check(got == want, "shared sum %r != %r" % (got, want))
    shm.close()
    shm.unlink()
    return gbps


WORKLOADS = {
    f.__name__: f
    for f in [
        spawn_join_ms,
        pool_startup_ms,
        pool_map_tasks_per_s,
        pool_map_chunksize1_tasks_per_s,
        pool_imap_tasks_per_s,
        pool_apply_roundtrip_us,
        executor_submit_roundtrip_us,
        executor_map_tasks_per_s,
        queue_pingpong_us,
        queue_throughput_msgs_per_s,
        pipe_pingpong_us,
        pipe_throughput_mb_per_s,
        lock_uncontended_ns,
        lock_contended_ops_per_s,
        event_pingpong_us,
        manager_namespace_set_get_us,
        manager_dict_ops_per_s,
        cpu_speedup_2proc,
        shm_attach_us,
        shared_array_sum_gb_per_s,
    ]
}
assert set(WORKLOADS) == set(COUNTS)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--start-method", choices=["spawn", "fork", "forkserver"], required=True)
    ap.add_argument("--quick", action="store_true", help="10x fewer iterations")
    ap.add_argument("--count", type=int, help="override the count (one workload only)")
    ap.add_argument("workloads", nargs="*", help="workload names (default: all)")
    args = ap.parse_args()
    names = args.workloads or list(WORKLOADS)
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown:
        ap.error("unknown workload(s): %s; known: %s" % (", ".join(unknown), ", ".join(WORKLOADS)))
    if args.count is not None and (len(names) != 1 or args.count < 1):
        ap.error("--count needs exactly one workload and a positive number")
    ctx = mp.get_context(args.start_method)
    counts, results = {}, {}
    for name in names:
        if args.count is not None:
            n = args.count
        else:
            n = QUICK_COUNTS.get(name, max(1, COUNTS[name] // 10)) if args.quick else COUNTS[name]
        counts[name] = n
        try:
            results[name] = WORKLOADS[name](ctx, n, args.quick)
        except CheckFailed as e:
            print("vs_python.py: %s (%s): check failed: %s" % (name, args.start_method, e), file=sys.stderr)
            sys.exit(3)
    json.dump(
        {
            "python": platform.python_version(),
            "start_method": args.start_method,
            "quick": args.quick,
            "counts": counts,
            "results": results,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
