"""Signing in, out and up over HTTP: one answer for every refusal, locking, CSRF on
every form, a fresh session on every sign-in, and options A and B (both engines)."""

from __future__ import annotations

import jwt
import pytest
from sqlalchemy import func, select

from tests.accounts.conftest import JWT_SECRET, PASSWORD, Site
from tokenbank.accounts.errors import SIGN_IN_REFUSED
from tokenbank.db.models import Account, Wallet, WebSession


async def sessions_of(site: Site) -> list[WebSession]:
    async with (await site.services.tokens.engine()).connect() as conn:
        return list((await conn.execute(select(WebSession))).all())  # type: ignore[arg-type]


async def test_signing_in_sets_an_httponly_lax_session_cookie_and_goes_on(site: Site) -> None:
    answer = await site.sign_in("Bob@Example.com")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/tokens"
    cookie = answer.headers["set-cookie"]
    assert "tb_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # a setting: on behind TLS
    token = site.client.cookies["tb_session"]
    # The table holds the token's hash only.
    assert all(token not in repr(row) for row in await sessions_of(site))


@pytest.mark.parametrize(
    ("email", "password"),
    [("bob@example.com", "wrong password!"), ("nobody@example.com", PASSWORD), ("", "")],
)
async def test_every_refusal_is_the_same_answer(site: Site, email: str, password: str) -> None:
    answer = await site.sign_in(email, password)
    assert answer.status_code == 401
    assert SIGN_IN_REFUSED.split(":")[0] in answer.text
    assert "tb_session" not in site.client.cookies


async def test_repeated_failures_lock_the_email_even_with_the_right_password(site: Site) -> None:
    for _ in range(10):
        assert (await site.sign_in("bob@example.com", "wrong password!")).status_code == 401
    assert (await site.sign_in("bob@example.com")).status_code == 401  # locked
    # An unknown email locks the same way: nothing tells them apart.
    for _ in range(10):
        await site.sign_in("ghost@example.com", "wrong password!")
    assert (await site.sign_in("ghost@example.com")).status_code == 401
    site.clock.advance(15 * 60 + 1)
    assert (await site.sign_in("bob@example.com")).status_code == 303


async def test_failures_are_slowed_before_the_lock(site: Site) -> None:
    people = site.services.accounts
    slow = people._slowdown_seconds
    assert [slow(None)] == [0.0]
    settings = site.services.settings.model_copy(update={"sign_in_slowdown_seconds": 1.0})
    people._settings = settings
    rows = [type("Row", (), {"failures": n})() for n in (1, 2, 3, 4, 9)]
    assert [people._slowdown_seconds(row) for row in rows] == [0.0, 0.0, 1.0, 2.0, 5.0]


async def test_forms_without_their_csrf_token_are_refused(site: Site) -> None:
    await site.csrf()
    answer = await site.client.post(
        "/login", data={"email": "bob@example.com", "password": PASSWORD}
    )
    assert answer.status_code == 403
    assert "tb_session" not in site.client.cookies
    wrong = await site.client.post(
        "/login", data={"email": "bob@example.com", "password": PASSWORD, "csrf_token": "x"}
    )
    assert wrong.status_code == 403
    assert (await site.sign_in("bob@example.com")).status_code == 303
    out = await site.client.post("/logout", data={})
    assert out.status_code == 403
    assert len([s for s in await sessions_of(site) if s.revoked_at is None]) == 1


async def test_a_planted_session_token_is_never_the_one_signed_in(site: Site) -> None:
    site.client.cookies.set("tb_session", "planted-by-an-attacker", domain="tokenbank.test")
    answer = await site.sign_in("bob@example.com")
    assert answer.status_code == 303
    assert answer.cookies["tb_session"] != "planted-by-an-attacker"
    assert await site.services.accounts.session("planted-by-an-attacker") is None


async def signed_in_csrf(site: Site) -> str:
    signed_in = await site.services.accounts.session(site.client.cookies["tb_session"])
    assert signed_in is not None
    return signed_in.csrf_token


async def test_signing_out_ends_the_session_and_everywhere_ends_them_all(site: Site) -> None:
    assert (await site.sign_in("bob@example.com")).status_code == 303
    other = await site.services.accounts.sign_in("bob@example.com", PASSWORD)
    first = site.client.cookies["tb_session"]
    out = await site.client.post("/logout", data={"csrf_token": await signed_in_csrf(site)})
    assert (out.status_code, out.headers["location"]) == (303, "/login")
    assert await site.services.accounts.session(first) is None
    assert await site.services.accounts.session(other.token) is not None
    assert (await site.sign_in("bob@example.com")).status_code == 303
    everywhere = {"csrf_token": await signed_in_csrf(site), "everywhere": "1"}
    assert (await site.client.post("/logout", data=everywhere)).status_code == 303
    assert await site.services.accounts.session(other.token) is None


async def test_sessions_expire(site: Site) -> None:
    assert (await site.sign_in("bob@example.com")).status_code == 303
    token = site.client.cookies["tb_session"]
    site.clock.advance(7 * 24 * 3600 + 1)
    assert await site.services.accounts.session(token) is None


async def test_signing_up_opens_a_wallet_with_its_welcome_bonus_once(site: Site) -> None:
    token = await site.csrf("/signup")
    form = {"email": "new@example.com", "password": PASSWORD, "confirm": PASSWORD}
    answer = await site.client.post("/signup", data={**form, "csrf_token": token})
    assert (answer.status_code, answer.headers["location"]) == (303, "/login?signed_up=1")
    account = await site.services.accounts.get("new@example.com")
    assert account.user_id is not None
    balance = await site.services.tokens.get_balance(account.user_id)
    assert balance is not None and balance.tokens_balance == 1_000
    assert (await site.sign_in("new@example.com")).status_code == 303
    site.client.cookies.clear()
    wallets_before = await _wallets(site)
    token = await site.csrf("/signup")
    again = await site.client.post("/signup", data={**form, "csrf_token": token})
    assert again.status_code == 303
    async with (await site.services.tokens.engine()).connect() as conn:
        accounts = (await conn.execute(select(Account.email))).scalars().all()
    assert sorted(accounts).count("new@example.com") == 1
    # The second sign-up opened no wallet: no welcome bonus for nobody.
    assert await _wallets(site) == wallets_before


async def _wallets(site: Site) -> int:
    async with (await site.services.tokens.engine()).connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(Wallet)) or 0)


async def test_sign_up_does_not_tell_whether_an_email_exists(site: Site) -> None:
    """A taken email and a new one get the same answer, the same page after it, and
    no session; the taken account's password is unchanged."""
    answers = []
    for email in ("bob@example.com", "fresh@example.com"):
        site.client.cookies.clear()
        token = await site.csrf("/signup")
        form = {"email": email, "password": "another password", "confirm": "another password"}
        answer = await site.client.post("/signup", data={**form, "csrf_token": token})
        assert "tb_session" not in answer.cookies
        landing = await site.client.get(answer.headers["location"])
        answers.append((answer.status_code, answer.headers["location"], landing.status_code))
        assert "If this email was new" in landing.text
    assert answers[0] == answers[1]
    site.client.cookies.clear()
    assert (await site.sign_in("bob@example.com")).status_code == 303


@pytest.mark.parametrize(
    "form",
    [
        {"email": "not-an-email", "password": PASSWORD, "confirm": PASSWORD},
        {"email": "x@example.com", "password": "short", "confirm": "short"},
        {"email": "x@example.com", "password": PASSWORD, "confirm": PASSWORD + "!"},
    ],
)
async def test_bad_sign_ups_write_nothing(site: Site, form: dict[str, str]) -> None:
    token = await site.csrf("/signup")
    answer = await site.client.post("/signup", data={**form, "csrf_token": token})
    assert answer.status_code == 400
    assert len(await site.services.accounts.list_accounts()) == 2


async def test_option_a_answers_who_the_forwarded_cookie_belongs_to(site: Site) -> None:
    assert (await site.sign_in("bob@example.com")).status_code == 303
    cookie = site.client.cookies["tb_session"]
    site.client.cookies.clear()
    key = {"Authorization": f"Bearer {site.app_key}"}
    answer = await site.client.get(
        "/api/session", headers={**key, "Cookie": f"tb_session={cookie}"}
    )
    assert answer.status_code == 200
    data = answer.json()["data"]
    assert (data["userId"], data["email"], data["roles"]) == ("bob", "bob@example.com", ["user"])
    assert (await site.client.get("/api/session", headers=key)).status_code == 401
    no_key = await site.client.get("/api/session", headers={"Cookie": f"tb_session={cookie}"})
    assert no_key.status_code == 401


async def test_option_b_gives_a_signed_in_user_a_short_lived_jwt(site: Site) -> None:
    assert (await site.sign_in("bob@example.com")).status_code == 303
    headers = {"X-CSRF-Token": await signed_in_csrf(site)}
    answer = await site.client.post("/auth/token", headers=headers)
    assert answer.status_code == 200, answer.text
    token = answer.json()["data"]["token"]
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert (claims["sub"], claims["email"]) == ("bob", "bob@example.com")
    assert claims["exp"] - int(site.clock().timestamp()) == 3_600
    assert (await site.client.post("/auth/token")).status_code == 403  # no CSRF token


async def test_signed_out_pages_go_to_sign_in_and_back(site: Site) -> None:
    answer = await site.client.get("/login?next=//evil.example/x")
    assert 'name="next" value=""' in answer.text
    assert (await site.sign_in("root@example.com")).status_code == 303
