"""``tokenbank accounts``: the people who sign in to tokenbank's pages (decision 17).

Passwords are asked for at a terminal (twice, not echoed) and read from standard input
otherwise (its first line), never taken as an argument: arguments land in shell
histories and process lists.
"""

from __future__ import annotations

import getpass
import sys
from enum import StrEnum
from typing import Annotated

import typer

from tokenbank.accounts.service import AccountService, AccountView
from tokenbank.cli._common import DatabaseUrl, group, run, with_service
from tokenbank.cli._errors import BAD_INPUT, fail
from tokenbank.config import get_settings
from tokenbank.ledger.service import TokenService

app = group("Accounts: who signs in to the pages, with which role.")

CLI_ACTOR = "cli"


class Role(StrEnum):
    SUPERADMIN = "superadmin"
    ADMIN = "admin"
    USER = "user"


def read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Password again: "):
            fail("the two passwords differ", BAD_INPUT)
        return first
    return sys.stdin.readline().rstrip("\r\n")


def describe(account: AccountView) -> str:
    wallet = f"wallet {account.user_id}" if account.user_id else "no wallet"
    return f"{account.email}: {account.role}, {wallet}"


async def _accounts(service: TokenService) -> AccountService:
    return AccountService(await service.engine(), settings=get_settings(), clock=service.clock)


@app.command("create")
def accounts_create(
    email: str,
    role: Annotated[Role, typer.Option(help="superadmin (everything), admin (sees), user.")],
    user_id: Annotated[
        str | None,
        typer.Option(help="The wallet the account owns (opened if it does not exist)."),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an account; the password is asked for (or read from standard input)."""
    password = read_password()

    async def act(service: TokenService) -> AccountView:
        if user_id is not None and await service.get_balance(user_id) is None:
            await service.open_wallet(user_id)
        people = await _accounts(service)
        account = await people.create(email, password, role=role.value, user_id=user_id)
        await people.audit(
            CLI_ACTOR,
            "account.create",
            account.email,
            None,
            {"role": account.role, "userId": account.user_id},
        )
        return account

    typer.echo(f"account created: {describe(run(with_service(database_url, act)))}")


@app.command("set-role")
def accounts_set_role(email: str, role: Role, database_url: DatabaseUrl = None) -> None:
    """Change an account's role."""

    async def act(service: TokenService) -> AccountView:
        people = await _accounts(service)
        return await people.set_role(email, role.value, actor=CLI_ACTOR)

    typer.echo(f"account updated: {describe(run(with_service(database_url, act)))}")


@app.command("reset-password")
def accounts_reset_password(email: str, database_url: DatabaseUrl = None) -> None:
    """Set a new password (asked for, or read from standard input); every session of
    the account ends."""
    password = read_password()

    async def act(service: TokenService) -> int:
        people = await _accounts(service)
        return await people.reset_password(email, password, actor=CLI_ACTOR)

    ended = run(with_service(database_url, act))
    typer.echo(f"password reset for {email.strip().lower()}; {ended} session(s) ended")


@app.command("list")
def accounts_list(
    search: Annotated[str | None, typer.Option(help="Part of an email.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List accounts."""

    async def act(service: TokenService) -> list[AccountView]:
        return await (await _accounts(service)).list_accounts(search=search)

    found = run(with_service(database_url, act))
    for account in found:
        typer.echo(describe(account))
    if not found:
        typer.echo("no accounts")
