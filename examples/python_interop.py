"""Python half of examples/python_interop.rs: a plain CPython client.

It connects to the Rust listener with the standard library's
multiprocessing.connection.Client, sends work items with Connection.send()
(pickles) and reads the results with Connection.recv(). Nothing here knows
that the other end is Rust.

Usage: python3 python_interop.py HOST PORT   (authkey in $MP_AUTHKEY, hex)
"""
import os
import sys
from multiprocessing.connection import Client


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    authkey = bytes.fromhex(os.environ["MP_AUTHKEY"])
    work = [
        ("sum", [1.0, 2.0, 3.5]),
        ("mean", [2.0, 4.0, 9.0]),
        ("max", [3.0, -1.0, 7.25]),
        ("mean", []),
        ("median", [1.0]),
    ]
    with Client((host, port), authkey=authkey) as conn:
        for op, numbers in work:
            conn.send((op, numbers))
            reply = conn.recv()  # a dict built from a Rust struct
            print(f"python: {op}({numbers}) -> {reply}")
            assert reply["op"] == op
        conn.send(None)  # no more work
        summary = conn.recv()
        print(f"python: rust handled {summary['handled']} items, {summary['failed']} failed")
        assert summary == {"handled": 5, "failed": 2}, summary


if __name__ == "__main__":
    main()
