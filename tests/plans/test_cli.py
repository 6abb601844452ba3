"""The features, plans and models commands and ``users set-plan``, through CliRunner."""

from __future__ import annotations

from typer.testing import CliRunner, Result

from tokenbank.cli import app

runner = CliRunner()


def invoke(url: str, *args: str) -> Result:
    result = runner.invoke(app, [*args, "--database-url", url])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


def ok(url: str, *args: str) -> list[str]:
    result = invoke(url, *args)
    assert (result.exit_code, result.stderr) == (0, ""), (args, result.output)
    return result.stdout.splitlines()


def fails(url: str, *args: str, code: int) -> str:
    result = invoke(url, *args)
    assert (result.exit_code, result.stdout) == (code, ""), (args, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_features_plans_models_and_set_plan(database_url: str) -> None:
    url = database_url
    ok(url, "users", "create", "alice")
    assert ok(
        url,
        "features",
        "create",
        "chat",
        "--name",
        "Chat",
        "--output-ratio",
        "4",
        "--min-balance",
        "10",
    ) == [
        'feature created: chat  \'Chat\'  {"type":"output_ratio","ratio":"4"}  v1  min balance 10'
    ]
    ok(url, "features", "create", "img", "--name", "Images", "--image", "--hold-tokens", "6000")
    ok(url, "features", "create", "llm", "--name", "LLM", "--per-unit", "--profit-percent", "5")
    ok(
        url,
        "features",
        "create",
        "ratio",
        "--name",
        "R",
        "--rule",
        '{"type": "output_ratio", "ratio": 2.5}',
    )  # a JSON decimal, not a float
    listed = ok(url, "features", "list")
    assert [line.split()[0] for line in listed] == ["chat", "img", "llm", "ratio"]
    assert '"ratio":"2.5"' in listed[3]

    assert ok(
        url,
        "plans",
        "create",
        "pro",
        "--allocation",
        "1000",
        "--profit-percent",
        "20",
        "--feature",
        "chat",
        "--feature",
        "img",
    ) == ["plan created: pro  allocation 1000/month, expire, profit 20%: chat, img"]
    ok(url, "plans", "add-feature", "pro", "llm")
    ok(url, "plans", "remove-feature", "pro", "img")
    assert ok(url, "plans", "list") == ["pro  allocation 1000/month, expire, profit 20%: chat, llm"]
    assert ok(url, "users", "set-plan", "alice", "pro") == ["alice is now on plan pro"]
    assert "in use" in fails(url, "plans", "delete", "pro", code=1)

    assert ok(url, "models", "set", "GPT-4o", "--input", "0.5", "--output", "2")[0].startswith(
        "gpt-4o"
    )
    models = ok(url, "models", "list")
    assert [line.split()[0] for line in models] == [
        "dall-e-2",
        "dall-e-3",
        "default",
        "google",
        "gpt-4o",
    ]
    assert models[-1].endswith("(database)") and models[0].endswith("(shipped)")
    ok(url, "models", "delete", "gpt-4o")
    ok(url, "features", "delete", "img")

    # Errors: one line, exit 2 for bad input and 1 for the rest.
    assert "exactly one of" in fails(url, "features", "create", "x", "--name", "X", code=2)
    assert "exactly one of" in fails(
        url, "features", "create", "x", "--name", "X", "--fixed", "1", "--per-unit", code=2
    )
    assert "not valid JSON" in fails(
        url, "features", "create", "x", "--name", "X", "--rule", "{bad", code=2
    )
    assert "type must be one of" in fails(
        url, "features", "create", "x", "--name", "X", "--rule", '{"type": "free"}', code=2
    )
    assert "already exists" in fails(
        url, "features", "create", "chat", "--name", "X", "--fixed", "1", code=1
    )
    assert "no plan named 'gold'" in fails(url, "users", "set-plan", "alice", "gold", code=2)
    assert "User wallet not found" in fails(url, "users", "set-plan", "bob", "pro", code=1)
    assert "not a decimal" in fails(
        url, "models", "set", "m", "--input", "one", "--output", "1", code=2
    )
    assert "no override" in fails(url, "models", "delete", "gpt-4o", code=1)
    assert "Feature endpoint not found" in fails(url, "features", "delete", "img", code=1)
    assert "not found" in fails(url, "plans", "add-feature", "gold", "chat", code=1)
