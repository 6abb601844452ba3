"""`make bench`: tokenbank's benchmark harness, every case in one run, side by side.

It starts what it measures itself: a bare ASGI app (the floor of Python HTTP here),
`tokenbank serve` on a fresh SQLite file (synchronous FULL, and a copy served with
NORMAL) and on a fresh database of a PostgreSQL it starts (tokenbank.testing.postgres).
It loads each server from a separate process over loopback with `wrk` and a Lua
script per case, bounded in time; runs the embedded `debit` (no HTTP) and `pgbench`
on the same PostgreSQL; repeats every case in alternating order; and prints one
table of medians and the ratios issue 5 asks for, with a JSON file of everything.

A fast wrong answer is worth nothing: after every run of a mutating case it runs
`tokenbank audit` (it must pass) and checks the ledger against what the load
generator saw acknowledged. It stops at the first failure, loudly.

From the repository's root::

    .venv/bin/python -m bench            # full run (~10-15 min), updates bench/RESULTS.md
    .venv/bin/python -m bench --quick    # smoke run, under a minute
    .venv/bin/python -m bench --cases deduct,ping --backends postgres --repeats 5
    .venv/bin/python -m bench --profile deduct/postgres   # py-spy flame graph of the server
    .venv/bin/python -m bench --scale     # deduct at 1M users / 10M entries beside 10k users

The modules: `common` (paths, the failure, progress lines), `cases` (what is
measured), `options` (the command line), `processes` (the servers and other child
processes), `databases` (filling, auditing and checking them), `runs` (one measured
run of each kind), `profiling` (py-spy), `harness` (setup, the rounds, teardown),
`scale` (--scale's bulk-loaded database), `report` and `scale_report` (tables, JSON,
RESULTS.md) and `__main__` (the entry point). populate.py,
embedded_debits.py and bare_app.py are scripts and an app its child processes run.
"""
