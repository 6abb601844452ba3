"""The one error path: commands raise ``CommandFailed``, the root group reports it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from sqlalchemy.exc import DBAPIError, OperationalError
from typer.core import TyperGroup

from tokenbank.errors import IdempotencyConflict, InvalidInput, TokenBankError

BAD_INPUT = 2
FAILED = 1


class CommandFailed(Exception):
    """A command could not do its work: MESSAGE for stderr, EXIT_CODE for the shell."""

    def __init__(self, message: str, exit_code: int = FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, exit_code: int = FAILED) -> NoReturn:
    """Stop the command; the root group prints ``error: MESSAGE`` and exits EXIT_CODE."""
    raise CommandFailed(message, exit_code)


def failure_from(error: Exception) -> CommandFailed | None:
    """The failure an expected library error stands for; None for a bug."""
    if isinstance(error, InvalidInput | IdempotencyConflict):
        return CommandFailed(str(error), BAD_INPUT)
    if isinstance(error, TokenBankError):
        return CommandFailed(str(error), FAILED)
    if isinstance(error, OperationalError | OSError):
        return CommandFailed(f"cannot use the database: {first_line(error)}", FAILED)
    if isinstance(error, DBAPIError):
        return CommandFailed(f"database refused the operation: {first_line(error)}", FAILED)
    if isinstance(error, ValueError):  # e.g. an unsupported database URL
        return CommandFailed(str(error), BAD_INPUT)
    return None


def first_line(error: BaseException) -> str:
    """The first line of a (database) error, or its class name when it says nothing."""
    text = str(getattr(error, "orig", None) or error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


@contextmanager
def expected_errors() -> Iterator[None]:
    """Turn the errors tokenbank and the database raise on purpose into ``CommandFailed``."""
    try:
        yield
    except Exception as error:
        failure = failure_from(error)
        if failure is None:
            raise
        raise failure from error


class ReportingGroup(TyperGroup):
    """The root command group: the one place a failed command is printed and exits."""

    def invoke(self, ctx: Any) -> Any:  # Any: Typer's Click context type is private
        try:
            return super().invoke(ctx)
        except CommandFailed as failure:
            typer.echo(f"error: {failure}", err=True)
            raise typer.Exit(failure.exit_code) from None
