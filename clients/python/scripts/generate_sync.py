"""Write the blocking client, ``client/_sync/``, from the asyncio client, ``client/_async/``.

    python scripts/generate_sync.py                   # rewrite _sync (make sync-client)
    python scripts/generate_sync.py --check           # exit 1 naming each stale file
    python scripts/generate_sync.py --output-dir DIR  # write into DIR instead

Each module of ``_async`` but ``__init__.py`` becomes the module of the same name in
``_sync``, in four steps:

1. the ``unasync`` library drops ``async`` and ``await`` and renames names in the
   code: its own (``__aenter__``, ``asynccontextmanager``, ``AsyncIterator``, ...) and
   ``REPLACEMENTS``;
2. ``REPLACEMENTS`` and ``PHRASES`` are applied, as whole words, to the docstrings and
   comments too, which unasync leaves alone;
3. a header says where the file comes from;
4. ruff formats it with the settings of the file it replaces (lines wrapped for the
   longer async spelling fit on one line without it).

What renaming cannot express (``asyncio.sleep`` or ``time.sleep``, shielding a refund
from cancellation) is in ``client/_concurrency.py``, in both flavours.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import unasync

CLIENT_DIR = Path(__file__).resolve().parent.parent / "src" / "tokenbank" / "client"
ASYNC_DIR = CLIENT_DIR / "_async"
SYNC_DIR = CLIENT_DIR / "_sync"

# Async name -> blocking name, besides unasync's own. unasync would turn any other
# ``AsyncX`` into ``SyncX``.
REPLACEMENTS = {
    "AsyncTokenClient": "TokenClient",
    "AsyncReservation": "Reservation",
    "AsyncClient": "Client",  # httpx
    "AsyncBaseTransport": "BaseTransport",  # httpx
    "aclose": "close",
    "async_sleep": "sleep",  # _concurrency
    "async_run_to_the_end": "run_to_the_end",  # _concurrency
}

# Words of the docstrings that differ between the flavours (applied after REPLACEMENTS).
PHRASES = {
    "asyncio client": "blocking client",
    "an async context manager": "a context manager",
    "async with": "with",
}

HEADER = (
    "# Generated from _async/{name} by scripts/generate_sync.py; do not edit.\n"
    "# Edit the source, then run `make sync-client` at the repository's root.\n"
)


def sources() -> list[Path]:
    return sorted(path for path in ASYNC_DIR.glob("*.py") if path.name != "__init__.py")


def _rename_in_text(text: str) -> str:
    for old, new in (*REPLACEMENTS.items(), *PHRASES.items()):
        text = re.sub(rf"\b{re.escape(old)}\b", new, text)
    return text


def _ruff_format(text: str, target: Path) -> str:
    # --stdin-filename: the settings are those of the committed file's place.
    result = subprocess.run(  # noqa: S603 (a fixed command: this interpreter's ruff)
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(target), "-"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"ruff format failed on {target.name}:\n{result.stderr}")
    return result.stdout


def generate() -> dict[str, str]:
    """The text of each generated module, by file name."""
    generated: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as scratch:
        rule = unasync.Rule(str(ASYNC_DIR), scratch, additional_replacements=REPLACEMENTS)
        unasync.unasync_files([str(path) for path in sources()], rules=[rule])
        for path in sources():
            text = (Path(scratch) / path.name).read_text(encoding="utf-8")
            text = HEADER.format(name=path.name) + _rename_in_text(text)
            generated[path.name] = _ruff_format(text, SYNC_DIR / path.name)
    return generated


def stale(directory: Path = SYNC_DIR) -> list[Path]:
    """The generated files that ``directory`` lacks or has with other contents."""
    return [
        directory / name
        for name, text in generate().items()
        if not (directory / name).is_file()
        or (directory / name).read_text(encoding="utf-8") != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; fail if stale")
    parser.add_argument("--output-dir", type=Path, help=f"instead of {SYNC_DIR}")
    arguments = parser.parse_args(argv)
    if arguments.check:
        old = stale()
        for path in old:
            print(f"{path} is stale: run make sync-client", file=sys.stderr)
        return 1 if old else 0
    output_dir: Path = arguments.output_dir or SYNC_DIR
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in generate().items():
        (output_dir / name).write_text(text, encoding="utf-8")
        print(output_dir / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
