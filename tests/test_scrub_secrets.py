"""scrub_secrets: secrets and PII are redacted with typed placeholders (or the record dropped), everywhere they could
leak: the exported data, the quarantine and tool calls."""

from __future__ import annotations

import builtins

import jsonschema
import pytest
from helpers import read_jsonl, run_cli, run_pipeline, write_jsonl
from pydantic import ValidationError
from step_helpers import apply, make_step, rec

from distill.validation import load_schema

GITHUB = "ghp_" + "A1b2C3d4E5" * 4
SECRETS = {
    "email": "jane.doe@example.com",
    "phone": "+1 (415) 555-0132",
    "ipv4": "10.0.12.7",
    "aws_access_key": "AKIAIOSFODNN7EXAMPLE",
    "github_token": GITHUB,
    "openai_key": "sk-proj-abcdefghijklmnopqrstuvwx12",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
}
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAwJ\nq9x2Zz\n-----END RSA PRIVATE KEY-----"


def test_redacts_each_kind_with_a_typed_placeholder_and_keeps_the_record():
    records = [rec(kind, i, text=f"before {value} after") for i, (kind, value) in enumerate(SECRETS.items())]
    records.append(rec("url", 20, text="db at postgres://admin:hunter2@db.internal:5432/app"))
    records.append(rec("key", 21, text=f"key:\n{PRIVATE_KEY}\nthanks"))
    records.append(rec("clean", 22, text="version 1.2 shipped on 2024-01-15, ticket 12345678, call me later"))
    step = make_step("scrub_secrets", library="none")
    ledger_kept, dropped, stage = apply(step, records)
    assert dropped == {} and len(ledger_kept) == len(records)
    texts = {r.id: r.text for r in step.map_batch(records)}
    for kind in SECRETS:
        assert texts[kind] == f"before [REDACTED:{kind}] after"
    assert texts["url"] == "db at postgres://admin:[REDACTED:url_password]@db.internal:5432/app"
    assert texts["key"] == "key:\n[REDACTED:private_key]\nthanks"
    assert texts["clean"] == records[-1].text
    assert stage["redactions"] == {**dict.fromkeys(SECRETS, 1), "url_password": 1, "private_key": 1}
    assert stage["records_with_secrets"] == 9


def test_tool_call_arguments_are_scrubbed_too():
    calls = [{"type": "function", "function": {"name": "send", "arguments": {"to": "bob@example.org", "body": "hi"}}}]
    (scrubbed,) = make_step("scrub_secrets", library="none").map_batch([rec("a", 1, role="assistant", tool_calls=calls)])
    assert scrubbed.tool_calls[0]["function"]["arguments"] == {"to": "[REDACTED:email]", "body": "hi"}


def test_drop_action_quarantines_with_reason_secret_and_the_kinds_found():
    kept, dropped, stage = apply(
        make_step("scrub_secrets", action="drop", library="none"),
        [rec("a", 1, text=f"mail me: {SECRETS['email']}"), rec("b", 2, text="nothing here")],
    )
    assert kept == ["b"]
    assert dropped["a"].reason.value == "secret" and dropped["a"].detail == {"found": {"email": 1}}
    assert SECRETS["email"] not in " ".join(dropped["a"].errors)
    assert stage["found"] == {"email": 1}


def test_kinds_and_own_patterns_are_configurable():
    step = make_step("scrub_secrets", library="none", kinds=["email"], patterns={"ticket": r"TCK-(?P<secret>\d{6})"})
    (scrubbed,) = step.map_batch([rec("a", 1, text="x@y.io from 10.0.0.1 about TCK-123456")])
    assert scrubbed.text == "[REDACTED:email] from 10.0.0.1 about TCK-[REDACTED:ticket]"
    with pytest.raises(ValidationError, match="unknown kinds"):
        make_step("scrub_secrets", library="none", kinds=["passport"])
    with pytest.raises(ValidationError, match="not a regular expression"):
        make_step("scrub_secrets", library="none", patterns={"bad": "("})


def test_detect_secrets_library_adds_vendor_patterns():
    pytest.importorskip("detect_secrets")
    text = "twilio SK0123456789abcdef0123456789abcdef and slack xoxb-1234-5678-abcdefghij"
    (scrubbed,) = make_step("scrub_secrets").map_batch([rec("a", 1, text=text)])
    assert scrubbed.text == "twilio [REDACTED:twilio_api_key] and slack [REDACTED:slack_token]"
    (without,) = make_step("scrub_secrets", library="none").map_batch([rec("a", 1, text=text)])
    assert "SK0123456789abcdef" in without.text


def test_missing_library_is_a_clear_config_error(monkeypatch):
    real_import = builtins.__import__

    def no_detect_secrets(name, *args, **kwargs):
        if name.startswith("detect_secrets"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_detect_secrets)
    with pytest.raises(ValidationError, match=r"detect-secrets is not installed: pip install 'distill\[secrets\]'"):
        make_step("scrub_secrets")


@pytest.fixture
def leaky_logs(tmp_path):
    return write_jsonl(tmp_path / "logs.jsonl", [
        {"id": "u1", "session_id": "s1", "role": "user", "text": f"my key is {SECRETS['aws_access_key']}", "created_at": 1},
        {"id": "a1", "session_id": "s1", "role": "assistant", "text": "noted", "created_at": 2, "category": "accepted"},
        {"id": "u2", "session_id": "s2", "role": "user", "text": f"write to {SECRETS['email']}", "created_at": 3},
        {"id": "a2", "session_id": "s2", "role": "assistant", "text": "ok", "created_at": 4, "category": "rejected"},
        {"id": "x", "session_id": "s3", "role": "user", "text": f"call {SECRETS['phone']}", "created_at": "not a date"},
        f'{{"id": "broken", "text": "{SECRETS["github_token"]}"',
    ])


def test_exported_data_and_every_quarantine_row_are_redacted(tmp_path, leaky_logs):
    run_pipeline(tmp_path / "run", [f"source.path={leaky_logs}", "split=none", "++curation.steps.scrub_secrets.library=none"])
    written = (tmp_path / "run" / "sft.jsonl").read_text() + (tmp_path / "run" / "quarantine.jsonl").read_text()
    for value in SECRETS.values():
        assert value not in written
    assert "[REDACTED:aws_access_key]" in (tmp_path / "run" / "sft.jsonl").read_text()
    rows = {row["record_id"]: row for row in read_jsonl(tmp_path / "run" / "quarantine.jsonl")}
    assert rows["u2"]["record"]["text"] == "write to [REDACTED:email]"  # dropped by the firewall, after scrubbing
    assert "[REDACTED:phone]" in rows["x"]["record"]["text"]  # a parse-stage row (bad timestamp)
    (unparsed,) = [row for row in rows.values() if row["reason"] == "invalid_json"]
    assert "[REDACTED:github_token]" in unparsed["record"]  # raw text of a line that is not JSON
    for row in rows.values():
        jsonschema.validate(row, load_schema("quarantine_row"))


def test_quarantine_keeps_secrets_when_no_scrub_step_is_configured(tmp_path, leaky_logs):
    run_pipeline(tmp_path / "run", [f"source.path={leaky_logs}", "split=none"])
    assert SECRETS["email"] in (tmp_path / "run" / "quarantine.jsonl").read_text()


def test_cli_drop_mode(tmp_path, leaky_logs):
    done = run_cli(
        [f"source.path={leaky_logs}", "split=none", "++curation.steps.scrub_secrets.action=drop",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    rows = read_jsonl(tmp_path / "run" / "quarantine.jsonl")
    assert sorted(r["record_id"] for r in rows if r["reason"] == "secret") == ["u1", "u2"]
    assert all(value not in (tmp_path / "run" / "quarantine.jsonl").read_text() for value in SECRETS.values())
