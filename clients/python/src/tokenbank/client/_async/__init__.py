"""The asyncio client: the one hand-written source of both clients.

scripts/generate_sync.py (``make sync-client``) writes the blocking client, ``_sync``, from
every module here but this one; tests/client/test_generated.py fails when ``_sync`` is
stale. What renaming cannot turn into blocking code is in ``_concurrency``.
"""
