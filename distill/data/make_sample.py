"""Generate the bundled sample of logged agent sessions: `distill/data/sample/agent_sessions.jsonl`.

distill runs on this file by default (`source=jsonl`); it is a small, realistic input for demos and tests. It
holds about 80 made-up sessions about software work, logged by an agent gateway, an IDE plugin and an eval harness:
plain and multi-turn chats, tool use, best-of-N alternatives (rewards, labels, ranks), rejected and under-review
answers (some mid-conversation, so curation leaves a gap), lifecycle changes and superseded records, whole sessions
repeated later, empty texts, several timestamp notations, a few sessions whose rows are out of time order, and six
malformed lines (invalid JSON, invalid UTF-8, wrong types, an unknown category, a bad timestamp, a JSON list).
`provenance.sig_hash` is the sha256 of the row as written here (sorted keys), without its `provenance`.

The file is generated, never edited by hand. After changing this script, regenerate it with

    python distill/data/make_sample.py

The output depends only on the seed: two runs write byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

SEED = 20261123
OUT = Path(__file__).resolve().parent / "sample" / "agent_sessions.jsonl"

WINDOW_START = datetime(2026, 11, 2, 6, 0, tzinfo=timezone.utc)
WINDOW_DAYS = 18
PLUS_TWO = timezone(timedelta(hours=2))
TENANTS = ("acme", "globex", "initech")
RUN_PREFIX = {"agent-gateway": "gw-run", "ide-plugin": "ide-run", "eval-harness": "eval-run"}
LOG_NAME = {"agent-gateway": "gateway", "ide-plugin": "ide", "eval-harness": "eval"}
BOTS = {
    "coder-v3": "coder-34b-instruct-2026-10",
    "coder-v1": "coder-13b-2025-06",
    "sql-helper-v1": "sql-13b-ft-2026-09",
    "docs-bot-v2": "docs-8b-2026-09",
    "eval-policy-7b": "policy-7b-rl-step-1200",
}
STYLES = ("z", "offset", "epoch_int", "epoch_float", "naive", "mixed")
STYLE_WEIGHTS = (68, 10, 7, 7, 4, 4)
SHUFFLED_SESSIONS = 5
MISSING_PROVENANCE = 0.04

ACC = {"category": "accepted"}
PART = {"category": "partially_accepted"}
REJ = {"category": "rejected"}
REVIEW = {"category": "needs_human_review"}
NOCAT: dict = {}


def run_id(source: str, moment: datetime) -> str:
    return f"{RUN_PREFIX[source]}-{moment:%m%d}"


def call(name: str, **arguments) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


class Sample:
    """All sessions of the sample; every id, clock and choice comes from one seeded Random."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.sessions: list[Session] = []
        self._last_id = 0

    def new_id(self) -> str:
        self._last_id += 1
        return f"rec-{self._last_id:06d}"

    def token(self, prefix: str) -> str:
        return f"{prefix}-{self.rng.getrandbits(32):08x}"

    def session(self, shape: str, *, source: str = "agent-gateway", bot: str = "coder-v3",
                start: datetime | None = None, system: str | None = None, **fields) -> Session:
        if start is None:
            start = WINDOW_START + timedelta(seconds=self.rng.randrange(WINDOW_DAYS * 86400))
        base = {
            "session_id": self.token("sess"), "run_id": run_id(source, start),
            "task_id": f"task:{shape}-{len(self.sessions) + 1}", "tenant": self.rng.choice(TENANTS),
            "source": source, "bot_id": bot,
            "lifecycle_status": None if source == "eval-harness" else "active",
        }
        session = Session(self, start, {**base, **fields})
        self.sessions.append(session)
        if system:
            session.add("system", system, pause=(1, 2))
        return session


class Session:
    """One logged conversation: its rows share the session's fields and follow its clock."""

    def __init__(self, sample: Sample, start: datetime, fields: dict) -> None:
        self.sample = sample
        self.start = start
        self.clock = start
        self.fields = fields
        self.rows: list[dict] = []
        self.style = sample.rng.choices(STYLES, weights=STYLE_WEIGHTS)[0]

    def add(self, role: str, text: str | None, pause: tuple[float, float] = (3, 90), **extra) -> dict:
        low, high = pause
        self.clock += timedelta(milliseconds=self.sample.rng.randint(int(low * 1000), int(high * 1000)))
        row = {"id": self.sample.new_id(), **self.fields, "created_at": self.clock, "role": role, "text": text}
        row = {key: value for key, value in {**row, **extra}.items() if value is not None}
        self.rows.append(row)
        return row

    def reply(self, text: str | None, pause: tuple[float, float] = (2, 25), **extra) -> dict:
        rng = self.sample.rng
        base: dict = {"metadata": {"model": BOTS[self.fields["bot_id"]], "latency_ms": rng.randint(350, 9000)}}
        if rng.random() < 0.9:
            size = len(text) if text else len(json.dumps(extra.get("tool_calls")))
            base["tokens_used"] = size // 4 + rng.randint(3, 40)
        return self.add("assistant", text, pause, **{**base, **extra})

    def ask(self, text: str, **extra) -> dict:
        if self.fields["source"] == "ide-plugin":
            extra.setdefault("metadata", {"client": "vscode", "plugin_version": "0.14.2"})
        follow_up = any(row["role"] == "user" for row in self.rows)
        return self.add("user", text, pause=(20, 300) if follow_up else (2, 40), **extra)

    def resume(self, hours: float, **fields) -> None:
        self.clock += timedelta(hours=hours)
        self.fields.update(run_id=run_id(self.fields["source"], self.clock), **fields)


def pick_source(sample: Sample) -> str:
    return sample.rng.choice(("agent-gateway", "agent-gateway", "ide-plugin"))


def chat(session: Session, turns) -> Session:
    for user, answer, extra in turns:
        session.ask(user)
        session.reply(answer, **extra)
    return session


def simple_chat(sample: Sample, user: str, answer: str, extra: dict, **fields) -> Session:
    source = fields.pop("source", None) or pick_source(sample)
    system = SYSTEM_CODER if source == "agent-gateway" else None
    return chat(sample.session("qa", source=source, system=system, **fields), [(user, answer, extra)])


def multi_turn(sample: Sample, turns, **fields) -> Session:
    source = fields.pop("source", None) or pick_source(sample)
    system = fields.pop("system", SYSTEM_CODER if source == "agent-gateway" else None)
    return chat(sample.session("pair", source=source, system=system, **fields), turns)


def tool_use(sample: Sample, user: str, steps, answer: str, extra: dict, **fields) -> Session:
    """steps: (text or None, [tool calls], [results]); a result is its text or (text, extra fields)."""
    session = sample.session("agent", system=SYSTEM_TOOLS, **fields)
    session.ask(user)
    for text, calls, results in steps:
        session.reply(text, tool_calls=calls)
        for tool_call, result in zip(calls, results):
            output, more = result if isinstance(result, tuple) else (result, {})
            session.add("tool", output, pause=(1, 12), name=tool_call["function"]["name"],
                        metadata={"duration_ms": sample.rng.randint(40, 4000)}, **more)
    session.reply(answer, **extra)
    return session


def best_of_n(sample: Sample, prompt: str, alternatives, reward_source: str | None = None,
              same_time: bool = False, followup=None, **fields) -> tuple[Session, list[dict]]:
    """One prompt, several sampled answers sharing a group_id; alternatives are (text, scores)."""
    fields.setdefault("source", "eval-harness")
    fields.setdefault("bot", "eval-policy-7b" if fields["source"] == "eval-harness" else "coder-v3")
    system = SYSTEM_EVAL if fields["source"] == "eval-harness" else SYSTEM_CODER
    session = sample.session("eval", system=system, **fields)
    if same_time:
        session.style = "z"
    session.ask(prompt)
    group_id = sample.token("grp")
    rows = []
    for index, (text, scores) in enumerate(alternatives):
        metadata = {"model": BOTS[session.fields["bot_id"]], "sample_index": index, "temperature": 0.8}
        pause = (0, 0) if same_time and index else (1, 6)
        rows.append(session.reply(text, pause=pause, group_id=group_id, metadata=metadata,
                                  reward_source=reward_source if "reward" in scores else None, **scores))
    if followup:
        chat(session, [followup])
    return session, rows


def doc_summary(sample: Sample, external_id: str, title: str, excerpt: str, summary: str, extra: dict,
                **fields) -> dict:
    session = sample.session("summarise", bot="docs-bot-v2", system=SYSTEM_DOCS, **fields)
    session.ask(f"Summarise this excerpt from {title} ({external_id}):\n\n{excerpt}", external_id=external_id)
    return session.reply(summary, external_id=external_id, **extra)


def supersede(old: dict, new: dict, status: str | None = "superseded") -> None:
    old["superseded_by_id"] = new["id"]
    new["supersedes_id"] = old["id"]
    if status:
        old["lifecycle_status"] = status


def retried(sample: Sample, prompt: str, bad: str, bad_extra: dict, good: str | None, task_id: str) -> None:
    first = simple_chat(sample, prompt, bad, bad_extra, task_id=task_id)
    if good:
        later = first.start + timedelta(days=sample.rng.randint(1, 3), minutes=sample.rng.randint(0, 600))
        simple_chat(sample, prompt, good, ACC, task_id=task_id, tenant=first.fields["tenant"], start=later)


def duplicate(sample: Sample, original: Session, days: int) -> Session:
    """The same texts as `original`, logged again later under new ids, session and run."""
    copy = sample.session("dup", source=original.fields["source"], bot=original.fields["bot_id"],
                          tenant=original.fields["tenant"], start=original.start + timedelta(days=days))
    for row in original.rows:
        extra = {key: row[key] for key in ("category", "source_files") if key in row}
        if row["role"] == "assistant":
            copy.reply(row["text"], **extra)
        elif row["role"] == "user":
            copy.ask(row["text"], **extra)
        else:
            copy.add(row["role"], row["text"], pause=(1, 2), **extra)
    return copy


def build_sessions(sample: Sample) -> None:
    for user, answer, extra in SIMPLE:
        simple_chat(sample, user, answer, extra)
    undo = simple_chat(sample, *UNDO_COMMIT, source="ide-plugin", task_id=None)
    simple_chat(sample, *PII_CHAT, lifecycle_status="tombstoned")
    simple_chat(sample, *FLAG_NAMING, bot="coder-v1", source="agent-gateway")

    for turns, fields in MULTI:
        multi_turn(sample, turns, **fields)
    go_loops = multi_turn(sample, GO_LOOPS, source="agent-gateway")
    refactor = multi_turn(sample, REFACTOR[:1], task_id="task:refactor-42", source="agent-gateway")
    refactor.fields["task_id"] = "task:refactor-43"
    chat(refactor, REFACTOR[1:])
    ci = multi_turn(sample, CI_SPEEDUP[:1], source="ide-plugin")
    ci.resume(hours=17.5)
    chat(ci, CI_SPEEDUP[1:])
    compose = multi_turn(sample, COMPOSE, source="agent-gateway", run_id=None)
    compose.add("user", "  \n", pause=(30, 90))

    for item in TOOLS:
        tool_use(sample, **item)

    for item in BEST_OF_N:
        best_of_n(sample, **item)
    _, (old, new, _) = best_of_n(sample, **BASH_RETRY)
    supersede(old, new, status=None)

    for turns, fields in GAPS:
        multi_turn(sample, turns, **fields)

    for item in RETRIES:
        retried(sample, **item)

    for item in DOCS:
        doc_summary(sample, **item)
    for old_item, new_item in REVISED_DOCS:
        old = doc_summary(sample, **old_item)
        later = sample.sessions[-1].start + timedelta(days=sample.rng.randint(3, 6))
        supersede(old, doc_summary(sample, start=later, tenant=sample.sessions[-1].fields["tenant"], **new_item))

    duplicate(sample, undo, days=4)
    duplicate(sample, go_loops, days=5)


def stamp(moment: datetime, style: str, rng: random.Random):
    if style == "mixed":
        style = rng.choice(STYLES[:-1])
    if style == "z":
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if style == "offset":
        return moment.astimezone(PLUS_TWO).isoformat(timespec="seconds")
    if style == "epoch_int":
        return int(moment.timestamp())
    if style == "epoch_float":
        return round(moment.timestamp(), 3)
    return moment.replace(tzinfo=None).isoformat(timespec="seconds")


def dump(value) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False).encode("utf-8")


def render(row: dict, style: str, rng: random.Random, offsets: dict[str, int], always: bool = False) -> dict:
    out = {**row, "created_at": stamp(row["created_at"], style, rng)}
    if always or rng.random() >= MISSING_PROVENANCE:
        path = f"logs/{row['created_at']:%Y-%m-%d}/{LOG_NAME[row['source']]}.jsonl"
        offsets[path] = offsets.get(path, 0) + rng.randint(1, 40)
        out["provenance"] = {"source_file": path, "line_offset": offsets[path],
                             "sig_hash": hashlib.sha256(dump(out)).hexdigest()}
    return out


def malformed_lines(sample: Sample, offsets: dict[str, int]) -> list[bytes]:
    """Six lines a real log ends up with; each must become one quarantine row, and the rest must still load."""
    moment = WINDOW_START + timedelta(days=10, hours=8)

    def row(text: str, role: str = "assistant", **extra) -> dict:
        nonlocal moment
        moment += timedelta(hours=5, seconds=sample.rng.randint(0, 3600))
        base = {"id": sample.new_id(), "session_id": sample.token("sess"), "run_id": run_id("agent-gateway", moment),
                "task_id": "task:gateway-import", "tenant": "globex", "source": "agent-gateway",
                "bot_id": "coder-v3", "lifecycle_status": "active", "created_at": moment, "role": role, "text": text}
        return render({**base, **extra}, "z", sample.rng, offsets, always=True)

    truncated = dump(row("To rotate the signing key, first publish the new public key to the JWKS endpoint, "
                         "wait for caches to expire, and only then start signing with it.", category="accepted"))
    garbled = dump(row("The build log shows: ld: warning: <BAD> in libpermits.a, then it stops.", role="user"))
    return [
        truncated[: len(truncated) * 2 // 3],
        garbled.replace(b"<BAD>", b"\xff\xfe"),
        dump({**row("Use `pathlib.Path.read_text()`; it opens and closes the file for you.", category="accepted"),
              "reward": "high", "reward_source": "human"}),
        dump({**row("Add `--frozen` to `uv sync` in CI so the lock file is never rewritten."), "category": "great"}),
        dump({**row("The cron expression `0 3 * * 1-5` runs at 03:00 on weekdays.", category="accepted"),
              "created_at": "yesterday"}),
        dump([sample.new_id(), "assistant", "Close the cursor before returning the connection to the pool."]),
    ]


def build_rows(seed: int = SEED) -> list[bytes]:
    """The sample's lines (without newlines), in file order."""
    sample = Sample(seed)
    build_sessions(sample)
    rng = sample.rng
    for session in rng.sample([s for s in sample.sessions if len(s.rows) >= 4], SHUFFLED_SESSIONS):
        rng.shuffle(session.rows)
    offsets: dict[str, int] = {}
    lines = [
        dump(render(row, session.style, rng, offsets))
        for session in sorted(sample.sessions, key=lambda s: (s.start, s.fields["session_id"]))
        for row in session.rows
    ]
    bad = malformed_lines(sample, offsets)
    count = len(lines)
    for k in reversed(range(len(bad))):
        lines.insert((k + 1) * count // (len(bad) + 1), bad[k])
    return lines


def main(out: Path = OUT) -> None:
    lines = build_rows(SEED)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"".join(line + b"\n" for line in lines))
    print(f"wrote {len(lines)} lines to {out}")


SYSTEM_CODER = (
    "You are a careful senior software engineer working in the user's repository. Prefer small, reviewable "
    "changes and explain the reasoning behind each one."
)
SYSTEM_SQL = (
    "You are a SQL assistant for a PostgreSQL 16 analytics warehouse. Return one formatted query per answer and "
    "state any assumption you make about the schema."
)
SYSTEM_TOOLS = (
    "You are a coding agent with the tools search_docs, read_file, grep_repo, run_sql, run_tests and run_linter. "
    "Call a tool whenever you need facts about the repository or the database; never guess them."
)
SYSTEM_DOCS = (
    "You summarise internal engineering documents for busy readers. Keep summaries short and faithful to the "
    "excerpt; never add facts that are not in it."
)
SYSTEM_EVAL = "Answer the programming question. Be correct first, then brief."

SIMPLE = [
    (
        "What's the difference between `git merge --squash` and `git rebase -i` when I want to clean up a feature "
        "branch before merging?",
        "`git merge --squash feature` takes all the changes from the branch and stages them as one new commit on "
        "your current branch. The branch's own history is left alone and git does not record it as merged, so you "
        "usually delete the branch afterwards.\n\n`git rebase -i main` rewrites the feature branch itself: you can "
        "squash, reorder, reword or drop individual commits, and then merge the cleaned-up branch (often as a "
        "fast-forward). Use `--squash` when you want exactly one commit per feature; use an interactive rebase when "
        "a few well-described commits tell the story better. Don't rebase a branch that others have already pulled.",
        ACC,
    ),
    (
        "Explain what this regex does: `^(?=.*\\d)(?=.*[a-z]).{8,}$`",
        "It matches strings of at least eight characters that contain at least one digit and at least one "
        "lowercase letter. The two `(?=...)` groups are lookaheads: each checks a condition from the start of the "
        "string without consuming characters, and `.{8,}$` then requires eight or more characters up to the end. "
        "It does not require uppercase letters or symbols, and `.` won't match a newline unless DOTALL is on.",
        ACC,
    ),
    (
        "In Python, why does `def add(item, bucket=[])` keep items between calls?",
        "Default values are evaluated once, when the `def` statement runs, not on every call. Every call that omits "
        "`bucket` shares the same list object, and `append` mutates it.\n\nUse `None` as the sentinel instead:\n\n"
        "```python\ndef add(item, bucket=None):\n    if bucket is None:\n        bucket = []\n    bucket.append(item)\n"
        "    return bucket\n```\n\nLinters flag this pattern (ruff rule `B006`), so it is worth enabling that rule.",
        ACC,
    ),
    (
        "Write a bash one-liner that lists the 10 largest files under the current directory.",
        "```bash\nfind . -type f -printf '%s\\t%p\\n' | sort -nr | head -n 10\n```\n\nIt prints the size in bytes and "
        "the path of each file. `-printf` is GNU find only; on macOS use "
        "`find . -type f -exec stat -f '%z %N' {} + | sort -nr | head -n 10`.",
        PART,
    ),
    (
        "Can you explain the difference between a Kubernetes readiness probe and a liveness probe?",
        "A liveness probe answers \"is this container stuck?\": when it fails repeatedly, the kubelet restarts the "
        "container. A readiness probe answers \"can this pod take traffic right now?\": when it fails, the pod is "
        "removed from the Service's endpoints but keeps running.\n\nA common mistake is to point both at an endpoint "
        "that checks the database. If the database blips, every pod fails liveness and restarts at once, which turns "
        "a short outage into a long one. Keep liveness cheap and local, and put dependency checks in readiness.",
        ACC,
    ),
    (
        "How do I make pytest show print output for a test that passes?",
        "Run it with `-s` (short for `--capture=no`) so output goes straight to the terminal, or keep capturing and "
        "add `-rP` to print the captured output of passing tests in the summary.",
        ACC,
    ),
    (
        "What does `SELECT ... FOR UPDATE SKIP LOCKED` do in Postgres, and when would I use it?",
        "It locks the rows it returns, like `FOR UPDATE`, but skips rows that another transaction has already locked "
        "instead of waiting for them. That makes it the standard way to build a job queue on a table. Each worker "
        "runs\n\n```sql\nSELECT id, payload FROM jobs\nWHERE status = 'pending'\nORDER BY created_at\nLIMIT 10\n"
        "FOR UPDATE SKIP LOCKED;\n```\n\ninside a transaction, processes the rows, marks them done and commits. "
        "Workers never block each other and never pick the same job. Don't use it for reads that need a consistent "
        "view: the result intentionally depends on what other transactions hold.",
        ACC,
    ),
    (
        "Explain the difference between `asyncio.gather` and `asyncio.TaskGroup`.",
        "Both run awaitables concurrently. `TaskGroup` (Python 3.11+) is structured: if one task fails, the group "
        "cancels the others and raises an `ExceptionGroup` with every error when the `async with` block exits. "
        "`gather` propagates the first exception but leaves the other tasks running, which can leak work; with "
        "`return_exceptions=True` it returns errors as values instead. Prefer `TaskGroup` in new code unless you "
        "want results in the order of a fixed list, which `gather` gives you directly.",
        NOCAT,
    ),
    (
        "Our Dockerfile copies the whole repo before `pip install`, so every code change reinstalls all "
        "dependencies. How do I fix the layer caching?",
        "Copy only the dependency manifest first, install, then copy the rest:\n\n```dockerfile\n"
        "COPY requirements.txt .\nRUN pip install --no-cache-dir -r requirements.txt\nCOPY . .\n```\n\n"
        "Docker reuses the install layer as long as `requirements.txt` is unchanged. Add a `.dockerignore` (at least "
        "`.git`, `__pycache__` and `.venv`) so unrelated files don't invalidate the `COPY . .` layer either. With "
        "BuildKit you can also keep pip's cache between builds: "
        "`RUN --mount=type=cache,target=/root/.cache/pip pip install -r requirements.txt`.",
        ACC,
    ),
    (
        "Is it safe to use `float` for money amounts in our invoice service?",
        "No. Binary floats can't represent most decimal fractions exactly, so `0.1 + 0.2 != 0.3` and rounding errors "
        "add up across line items. Store amounts as integer minor units (cents) or use `decimal.Decimal` with an "
        "explicit rounding mode, and keep the currency next to the amount. In the database use `NUMERIC(12, 2)` or "
        "`BIGINT` cents, never `REAL` or `DOUBLE PRECISION`.",
        ACC,
    ),
    (
        "Give me a one-sentence explanation of what a race condition is, for a non-engineer.",
        "A race condition is when two things happen at almost the same time and the result depends on which one "
        "finishes first, like two people editing the same shared document and one silently overwriting the other.",
        ACC,
    ),
    (
        "What does HTTP 409 mean, and when should our API return it?",
        "409 Conflict means the request is well-formed but conflicts with the current state of the resource. "
        "Typical cases are creating a user whose email already exists, or an update that loses an optimistic-locking "
        "check. Return a body that explains the conflict so the client can resolve it; when a precondition header "
        "such as `If-Match` fails, 412 is the more precise code.",
        PART,
    ),
]

UNDO_COMMIT = (
    "How do I undo my last commit but keep the changes?",
    "Use `git reset --soft HEAD~1`. The commit is removed and its changes stay staged, so you can edit and commit "
    "again. If you want them unstaged, use `git reset HEAD~1` (the default `--mixed`). If the commit was already "
    "pushed, prefer `git revert` so you don't rewrite shared history.",
    ACC,
)

PII_CHAT = (
    "Reformat this as a CSV row with a header: name Jane Roe, email jane.roe@example.com, phone +1 555 0100, "
    "plan Business.",
    "```csv\nname,email,phone,plan\nJane Roe,jane.roe@example.com,+1 555 0100,Business\n```",
    ACC,
)

FLAG_NAMING = (
    "What's a good naming scheme for feature flags?",
    "Name a flag after the behaviour it enables, with a team or area prefix and a verb, e.g. "
    "`checkout.enable_saved_cards`. Put an owner and an expiry date in the flag's description, and delete the flag "
    "within a couple of sprints of full rollout: long-lived flags turn into untested configuration.",
    {**ACC, "lifecycle_status": "retired"},
)

REFACTOR = [
    (
        "I have a 400-line function `process_order` in `orders/service.py` that validates the cart, prices it, "
        "reserves stock and sends the confirmation email. How should I start breaking it up?",
        "Start by pinning down its current behaviour, then extract along the responsibilities you just named.\n\n"
        "1. Write a few characterisation tests that call `process_order` with realistic carts and assert on the "
        "result, the stock reservations and the emails sent (mock the mailer). They protect you during the "
        "refactor.\n2. Extract the pure steps first: `validate_cart(cart) -> list[Problem]` and "
        "`price_cart(cart, rules) -> Quote`. They have no side effects and are easy to test on their own.\n"
        "3. Then extract the side effects, `reserve_stock(quote)` and `send_confirmation(order)`, and keep "
        "`process_order` as a short coordinator that calls them in order.\n\nDo one extraction per commit so each "
        "diff stays reviewable.",
        {**ACC, "source_files": ["orders/service.py"]},
    ),
    (
        "Should the email sending stay synchronous inside `process_order`?",
        "I would move it out of the request path. Today a slow or failing mail provider makes the whole order fail "
        "or hang. Write an `OrderPlaced` event to an outbox table in the same transaction as the order, and let a "
        "worker send the email from there. The order commits exactly once, the email is retried on its own, and "
        "`process_order` no longer needs the mailer at all.",
        {**ACC, "source_files": ["orders/service.py", "orders/outbox.py"]},
    ),
]

GO_LOOPS = [
    (
        "In Go, why does my loop that starts goroutines print the same value five times?",
        "Before Go 1.22 the loop variable is a single variable reused by every iteration. Each goroutine's closure "
        "captures that variable, not its value at the time, and by the time the goroutines run the loop has usually "
        "finished, so they all see the last value.",
        ACC,
    ),
    (
        "We're on Go 1.21. What's the cleanest fix?",
        "Shadow the variable inside the loop body with `v := v` before starting the goroutine, or pass it as an "
        "argument: `go func(v int) { ... }(v)`. Both give each goroutine its own copy. Once you move to Go 1.22 (with "
        "`go 1.22` in `go.mod`), each iteration gets a fresh variable and the shadowing becomes unnecessary.",
        ACC,
    ),
]

CI_SPEEDUP = [
    (
        "Our GitHub Actions workflow takes about 25 minutes, and most of it looks like dependency installation. "
        "Any ideas?",
        "First check where the time really goes: open a run and look at each step's duration. If installation "
        "dominates, cache it: `actions/setup-python` with `cache: pip` (or `actions/cache` keyed on the lock file's "
        "hash) usually brings installs under a minute. Also make sure the matrix isn't testing combinations nobody "
        "uses.",
        PART,
    ),
    (
        "Caching is already on. The test step alone takes 18 minutes.",
        "Then trim and parallelise the tests. `pytest --durations=25` lists the slowest tests; a handful usually "
        "dominate (sleeps, real network calls, large fixtures built per test). Add `pytest-xdist` and run "
        "`pytest -n auto`. If that still isn't enough, split the suite across matrix jobs with `pytest-split`, which "
        "balances the shards using recorded durations.",
        ACC,
    ),
]

COMPOSE = [
    (
        "My app container can't reach Postgres at `localhost:5432` under docker compose.",
        "Inside a container, `localhost` is the container itself. Compose puts the services on a shared network "
        "where each service name is a hostname, so connect to `db:5432` (or whatever your Postgres service is "
        "called).",
        ACC,
    ),
    (
        "Now it says connection refused right at startup, then works a few seconds later.",
        "The app starts before Postgres accepts connections. Give the database a healthcheck and make the app wait "
        "for it:\n\n```yaml\nservices:\n  db:\n    image: postgres:16\n    healthcheck:\n"
        "      test: [\"CMD-SHELL\", \"pg_isready -U postgres\"]\n      interval: 2s\n      retries: 15\n  app:\n"
        "    depends_on:\n      db:\n        condition: service_healthy\n```\n\nKeep a retry on connect in the app "
        "anyway; the database can restart later too.",
        ACC,
    ),
]

MULTI = [
    (
        [
            (
                "Our Celery workers get OOM-killed after a few hours. Memory climbs slowly and steadily. Where do I "
                "start?",
                "A slow, steady climb usually means something keeps references across tasks, rather than one huge "
                "task. Set `worker_max_tasks_per_child` (for example 200) so workers recycle while you investigate, "
                "and take `tracemalloc` snapshots a few hundred tasks apart in one worker to see which lines allocate "
                "the memory that stays. Module-level caches, growing result lists and unclosed sessions are the "
                "usual suspects.",
                PART,
            ),
            (
                "We found a module-level dict in `pricing/rates.py` used as a cache. It never evicts anything.",
                "That matches the symptom: every distinct key stays in memory for the life of the worker. Replace it "
                "with a bounded cache, e.g. `functools.lru_cache(maxsize=4096)` on the lookup function, or "
                "`cachetools.TTLCache(maxsize=4096, ttl=600)` if rates change and entries must expire. Keep "
                "`worker_max_tasks_per_child` as a safety net, but the bounded cache is the actual fix.",
                {**ACC, "source_files": ["pricing/rates.py"]},
            ),
        ],
        {"task_id": "task:debug-17"},
    ),
    (
        [
            (
                "I need monthly active users from `events(user_id, event_type, occurred_at)`. Active means at least "
                "one event in that month.",
                "```sql\nSELECT date_trunc('month', occurred_at) AS month,\n       count(DISTINCT user_id) AS "
                "active_users\nFROM events\nGROUP BY 1\nORDER BY 1;\n```\n\nThis assumes `occurred_at` is a "
                "`timestamptz`. Month boundaries follow the session time zone, so run `SET TIME ZONE 'UTC'` first if "
                "that matters.",
                ACC,
            ),
            (
                "Can you exclude internal users? They're flagged in `users(id, is_internal)`.",
                "```sql\nSELECT date_trunc('month', e.occurred_at) AS month,\n       count(DISTINCT e.user_id) AS "
                "active_users\nFROM events e\nJOIN users u ON u.id = e.user_id\nWHERE NOT u.is_internal\nGROUP BY 1\n"
                "ORDER BY 1;\n```\n\nThe inner join drops events without a matching user; use a `LEFT JOIN` with "
                "`WHERE u.is_internal IS NOT TRUE` if you want to keep them.",
                ACC,
            ),
            (
                "Now add the month-over-month change as a percentage.",
                "```sql\nWITH monthly AS (\n  SELECT date_trunc('month', e.occurred_at) AS month,\n"
                "         count(DISTINCT e.user_id) AS active_users\n  FROM events e\n  JOIN users u ON u.id = "
                "e.user_id\n  WHERE NOT u.is_internal\n  GROUP BY 1\n)\nSELECT month,\n       active_users,\n"
                "       round(100.0 * (active_users - lag(active_users) OVER w)\n"
                "             / nullif(lag(active_users) OVER w, 0), 1) AS mom_change_pct\nFROM monthly\n"
                "WINDOW w AS (ORDER BY month)\nORDER BY month;\n```\n\nThe first month has no previous value, so its "
                "change is `NULL`.",
                ACC,
            ),
        ],
        {"task_id": "task:sql-8", "bot": "sql-helper-v1", "source": "agent-gateway", "system": SYSTEM_SQL},
    ),
    (
        [
            (
                "What does this do? `items.sort(key=lambda x: (-x.priority, x.created_at))`",
                "It sorts `items` in place by priority, highest first, and items with the same priority by "
                "`created_at`, oldest first. Tuples compare element by element, and negating `priority` makes that "
                "part descending while `created_at` stays ascending. This only works because `priority` is numeric; "
                "for a descending string key you would sort twice (the sort is stable) or use "
                "`functools.cmp_to_key`.",
                ACC,
            ),
            (
                "Would `sorted()` be better here?",
                "Only if you need to keep the original order somewhere. `sorted(items, key=...)` returns a new list "
                "and leaves `items` untouched; `items.sort(...)` mutates it and returns `None`. Both are "
                "O(n log n).",
                NOCAT,
            ),
        ],
        {"source": "ide-plugin"},
    ),
    (
        [
            (
                "TypeScript says `Object is possibly 'undefined'` on `config.retries.max` inside a `setTimeout` "
                "callback, even though I check `if (config.retries)` right before it.",
                "Narrowing a property doesn't carry into a callback: TypeScript can't prove `config.retries` is "
                "still defined when the callback runs later, since something may reassign it in between. Copy it "
                "into a local constant after the check:\n\n```ts\nconst retries = config.retries;\nif (retries) {\n"
                "  setTimeout(() => schedule(retries.max), delayMs);\n}\n```\n\n`retries` is a `const`, so its "
                "narrowed type holds inside the closure.",
                ACC,
            ),
            (
                "That worked, thanks. Is there a lint rule that stops people from writing `config.retries!.max` "
                "instead?",
                "Yes: `@typescript-eslint/no-non-null-assertion`. It is part of typescript-eslint's `strict` preset; "
                "make it an error so every `!` assertion needs an explicit disable comment with a reason.",
                ACC,
            ),
        ],
        {"source": "ide-plugin"},
    ),
    (
        [
            (
                "Rust borrow checker: `cannot borrow self.cache as mutable because it is also borrowed as "
                "immutable`. The method looks up a key and inserts a computed value if it's missing.",
                "Use the entry API, so the lookup and the insert are one mutable borrow:\n\n```rust\n"
                "let value = self.cache.entry(key).or_insert_with(|| compute(&params));\n```\n\n`entry` borrows "
                "`self.cache` mutably once, and `or_insert_with` runs the closure only when the key is absent, so "
                "there is no earlier immutable borrow from a `get` left overlapping it.",
                ACC,
            ),
            (
                "What if computing the value needs `&self` for other fields?",
                "Then the closure borrows all of `self` while `self.cache` is mutably borrowed, which the compiler "
                "rejects. Either compute the value before touching the cache (check `contains_key`, compute, then "
                "`insert`), or borrow the fields separately: `let Self { cache, config, .. } = self;` and pass "
                "`config` into the computation. Moving the cache into its own type is the cleaner long-term design.",
                PART,
            ),
        ],
        {},
    ),
    (
        [
            (
                "How should we structure logs so we can follow one request across services?",
                "Give every request an id at the edge (or reuse the W3C `traceparent` header), pass it on every "
                "outgoing call, and log it as a field on every line. Log JSON, so fields are queryable instead of "
                "parsed out of free text. If you can, adopt OpenTelemetry: its trace and span ids do exactly this "
                "and link your logs to traces.",
                ACC,
            ),
            (
                "We use Python's `logging` module. How do I put the request id on every log line without passing it "
                "to every function?",
                "Keep it in a `contextvars.ContextVar` set at the start of the request, and add a logging filter "
                "that copies it onto each record:\n\n```python\nrequest_id = contextvars.ContextVar(\"request_id\", "
                "default=\"-\")\n\nclass RequestIdFilter(logging.Filter):\n    def filter(self, record):\n"
                "        record.request_id = request_id.get()\n        return True\n```\n\nAttach the filter to your "
                "handler and add `%(request_id)s` to the format. Context variables follow asyncio tasks, so this "
                "works in async code too.",
                ACC,
            ),
        ],
        {},
    ),
    (
        [
            (
                "What's the difference between the dependencies in `pyproject.toml` and a pinned "
                "`requirements.txt`?",
                "`pyproject.toml` states what your package needs, usually as ranges (`httpx>=0.27`), so it can "
                "coexist with other packages. A pinned `requirements.txt` is a lock: the exact versions of "
                "everything, transitive dependencies included, that you tested and deploy. Libraries publish ranges; "
                "applications deploy from a lock.",
                ACC,
            ),
            (
                "How do we keep the two in sync?",
                "Generate the lock from the project file instead of editing it by hand: "
                "`pip-compile pyproject.toml -o requirements.txt` (pip-tools) or "
                "`uv pip compile pyproject.toml -o requirements.txt`. In CI, regenerate it and fail when the result "
                "differs from the committed file, so a pull request can't change one without the other.",
                NOCAT,
            ),
        ],
        {"source": "ide-plugin"},
    ),
    (
        [
            (
                "Is it OK to log full request bodies in production for debugging?",
                "Generally no. Bodies contain passwords, tokens, card numbers and personal data, and logs are copied "
                "to more systems and kept longer than your database. If you need bodies for debugging, log them at "
                "debug level behind a flag, for a short time, with field-level redaction, and never for "
                "authentication endpoints.",
                ACC,
            ),
            (
                "What about just the headers?",
                "Safer, but not safe: `Authorization`, `Cookie`, `Set-Cookie` and API-key headers are credentials. "
                "Log an allowlist of headers (`User-Agent`, `Content-Type`, `X-Request-Id`, …) rather than removing "
                "a denylist, so a new sensitive header isn't logged by default.",
                ACC,
            ),
        ],
        {"task_id": "phase:deploy"},
    ),
    (
        [
            (
                "How do I debounce a search input in React so we don't call the API on every keystroke?",
                "Debounce the value, not the handler:\n\n```tsx\nconst [query, setQuery] = useState(\"\");\n"
                "const [debounced, setDebounced] = useState(query);\n\nuseEffect(() => {\n"
                "  const t = setTimeout(() => setDebounced(query), 300);\n  return () => clearTimeout(t);\n"
                "}, [query]);\n```\n\nThen fetch in an effect that depends on `debounced`. Each keystroke clears the "
                "previous timer, so the request fires 300 ms after the user stops typing.",
                ACC,
            ),
            (
                "Sometimes an older request comes back after a newer one and the results flicker.",
                "Cancel the stale request when the query changes. In the fetching effect, create an "
                "`AbortController`, pass its `signal` to `fetch`, and call `controller.abort()` in the cleanup "
                "function. An aborted fetch rejects with an `AbortError`, which you ignore, so only the latest "
                "request can set state. TanStack Query does this for you when you key requests on the query.",
                ACC,
            ),
        ],
        {"source": "ide-plugin"},
    ),
    (
        [
            (
                "`groupby().apply()` in pandas is very slow on 5M rows. What are the alternatives?",
                "`apply` calls a Python function once per group, so it's slow when there are many groups. Express "
                "the computation with built-in aggregations where you can "
                "(`groupby(\"key\").agg(total=(\"x\", \"sum\"))`), which run in C, or use `transform` for per-row "
                "results. If you still need custom logic, Polars runs group-bys in parallel and is often 5–10× "
                "faster.",
                ACC,
            ),
            (
                "The function computes a weighted average of `x` with weights `w` per group.",
                "That one vectorises cleanly: sum `w * x` and `w` per group, then divide.\n\n```python\n"
                "g = df.assign(wx=df[\"w\"] * df[\"x\"]).groupby(\"key\")[[\"wx\", \"w\"]].sum()\n"
                "weighted = g[\"wx\"] / g[\"w\"]\n```\n\nTwo sums over 5M rows take well under a second.",
                ACC,
            ),
        ],
        {},
    ),
    (
        [
            (
                "Explain the difference between a process and a thread, briefly.",
                "A process has its own memory space; threads live inside a process and share its memory. Switching "
                "and communicating between threads is cheaper, but shared memory means you need locks or other "
                "synchronisation, while processes are isolated and talk through pipes, sockets or shared memory "
                "you set up explicitly.",
                ACC,
            ),
            (
                "So in Python, which should I use for CPU-heavy work?",
                "Processes. The GIL lets only one thread execute Python bytecode at a time, so threads don't speed "
                "up CPU-bound Python code (they are fine for I/O). Use `concurrent.futures.ProcessPoolExecutor` or "
                "`multiprocessing`. NumPy and other C extensions that release the GIL are the exception, and the "
                "free-threaded build of Python 3.13 changes the picture, but it is still experimental.",
                PART,
            ),
            (
                "What about async? Does that help here?",
                "No. `asyncio` runs on a single thread and helps only when tasks spend their time waiting on I/O. A "
                "CPU-bound coroutine blocks the event loop for as long as it runs. If an async service needs heavy "
                "computation, hand it to a process pool with `loop.run_in_executor`.",
                ACC,
            ),
        ],
        {"source": "agent-gateway"},
    ),
]

TOOLS = [
    dict(
        user="Which config key controls the retry backoff in the payments client?",
        steps=[(
            "Let me check the payments client docs.",
            [call("search_docs", query="payments client retry backoff")],
            [(
                "[doc-12#chunk-3] Retries. The client retries idempotent requests on connection errors and 5xx "
                "responses. `retry.backoff_ms` (default 200) is the initial delay; it doubles after each attempt up "
                "to `retry.max_backoff_ms` (default 5000). `retry.max_attempts` (default 4) includes the first "
                "attempt.",
                {"external_id": "doc-12#chunk-3"},
            )],
        )],
        answer="`retry.backoff_ms` sets the initial delay (200 ms by default). It doubles after each failed attempt, "
        "capped by `retry.max_backoff_ms` (5000 ms), and `retry.max_attempts` (4, counting the first try) bounds the "
        "total. Only idempotent requests are retried, and only on connection errors and 5xx responses.",
        extra=ACC,
    ),
    dict(
        user="How many orders failed payment yesterday, broken down by payment provider?",
        steps=[(
            "I'll query the orders table.",
            [call("run_sql", query="SELECT provider, count(*) AS failed\nFROM orders\n"
                  "WHERE status = 'payment_failed'\n  AND created_at >= date_trunc('day', now()) - interval '1 day'\n"
                  "  AND created_at < date_trunc('day', now())\nGROUP BY provider\nORDER BY failed DESC;")],
            [" provider | failed\n----------+--------\n stripe   |     41\n adyen    |     17\n paypal   |      5\n"
             "(3 rows)"],
        )],
        answer="Yesterday 63 orders failed payment: Stripe 41, Adyen 17 and PayPal 5. \"Yesterday\" here is the "
        "previous calendar day in the database's time zone (UTC).",
        extra=ACC,
        bot="sql-helper-v1",
        task_id="task:sql-8",
    ),
    dict(
        user="`test_invoice_rounding` started failing after yesterday's merge. Can you find out why?",
        steps=[
            (
                "Running the failing test first.",
                [call("run_tests", path="tests/billing/test_invoice.py::test_invoice_rounding")],
                ["FAILED tests/billing/test_invoice.py::test_invoice_rounding\n"
                 "E   AssertionError: assert Decimal('10.01') == Decimal('10.00')\n"
                 "E    +  where Decimal('10.01') = Invoice(lines=[...]).total\n1 failed in 0.42s"],
            ),
            (
                "The total is off by one cent. Reading the invoice code.",
                [call("read_file", path="billing/invoice.py")],
                ["41      @property\n42      def total(self) -> Decimal:\n"
                 "43          subtotal = sum(line.amount for line in self.lines)\n"
                 "44          return subtotal.quantize(Decimal(\"0.01\"), rounding=ROUND_HALF_UP)"],
            ),
        ],
        answer="The merge changed the rounding mode in `Invoice.total` (`billing/invoice.py`, line 44) to "
        "`ROUND_HALF_UP`. The test's invoice has a subtotal of exactly 10.005, which rounds half-up to 10.01, while "
        "the test was written for banker's rounding (`ROUND_HALF_EVEN`) and expects 10.00.\n\nDecide which behaviour "
        "the business wants. If half-up is intended (most invoicing rules require it), update the expected value and "
        "add a case like 10.015. If not, restore `ROUND_HALF_EVEN`.",
        extra={**ACC, "source_files": ["billing/invoice.py", "tests/billing/test_invoice.py"]},
        task_id="task:debug-17",
    ),
    dict(
        user="Where do we set the JWT expiry for the mobile app?",
        steps=[(
            None,
            [call("grep_repo", pattern="JWT_EXPIRY")],
            ["auth/settings.py:14:JWT_EXPIRY_SECONDS = int(os.environ.get(\"JWT_EXPIRY_SECONDS\", 3600))\n"
             "auth/tokens.py:52:    exp = now + timedelta(seconds=settings.JWT_EXPIRY_SECONDS)\n"
             "deploy/mobile-api/prod.env:3:JWT_EXPIRY_SECONDS=86400"],
        )],
        answer="The default is one hour, in `auth/settings.py` (line 14), read from the `JWT_EXPIRY_SECONDS` "
        "environment variable. The mobile API overrides it in production: `deploy/mobile-api/prod.env` sets it to "
        "86400, so mobile tokens live 24 hours. `auth/tokens.py` applies the setting when it issues a token.",
        extra={**ACC, "source_files": ["auth/settings.py", "auth/tokens.py", "deploy/mobile-api/prod.env"]},
    ),
    dict(
        user="What does the deployment runbook say about rolling back a release?",
        steps=[(
            "Searching the runbook.",
            [call("search_docs", query="deployment runbook rollback")],
            [(
                "[doc-7#chunk-4] Rolling back. Roll back by redeploying the previous release tag with "
                "`deployctl release <tag> --env prod`; do not revert commits on main to roll back. Database "
                "migrations are forward-only: if a release included a migration, read its migration notes before "
                "rolling back, and page the on-call DBA for any destructive change.",
                {"external_id": "doc-7#chunk-4"},
            )],
        )],
        answer="Roll back by redeploying the previous release tag (`deployctl release <tag> --env prod`), not by "
        "reverting commits on main. Migrations only go forward, so if the release included one, read its notes first.",
        extra=PART,
        task_id="phase:deploy",
    ),
    dict(
        user="Is the `customer_email` column on `customers` indexed?",
        steps=[(
            "Checking the table's indexes.",
            [call("run_sql", query="SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'customers';")],
            ["    indexname     |                                indexdef\n"
             "------------------+------------------------------------------------------------------------\n"
             " customers_pkey   | CREATE UNIQUE INDEX customers_pkey ON public.customers USING btree (id)\n"
             " customers_tenant | CREATE INDEX customers_tenant ON public.customers USING btree (tenant_id, "
             "created_at)\n(2 rows)"],
        )],
        answer="No. `customers` has two indexes: the primary key on `id` and one on `(tenant_id, created_at)`. "
        "Lookups by `customer_email` scan the table. If you query by email often, create an index without blocking "
        "writes:\n\n```sql\nCREATE INDEX CONCURRENTLY customers_email_idx ON customers (lower(customer_email));\n"
        "```\n\nand query with `lower(customer_email) = lower($1)` so the index is used.",
        extra=ACC,
        bot="sql-helper-v1",
    ),
    dict(
        user="Run the linter on the permits module and tell me what's wrong.",
        steps=[(
            None,
            [call("run_linter", path="permits/")],
            ["permits/review.py:88:5: F841 Local variable `deadline` is assigned to but never used\n"
             "permits/api.py:12:8: F401 `json` imported but unused\nFound 2 errors.\n"
             "[*] 1 fixable with the `--fix` option."],
        )],
        answer="Two findings:\n\n- `permits/review.py:88`: `deadline` is assigned but never used. Check whether the "
        "review was meant to compare against it; in review code an unused deadline may be a real bug rather than "
        "dead code.\n- `permits/api.py:12`: `json` is imported but unused; `ruff check --fix` removes it.",
        extra={**ACC, "source_files": ["permits/review.py", "permits/api.py"]},
        task_id="permit:P-17",
    ),
    dict(
        user="What was the p95 latency of the permits API over the last 24 hours?",
        steps=[
            (
                "Querying the latency table.",
                [call("run_sql", query="SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) "
                      "FROM api_latency WHERE service = 'permits' AND ts > now() - interval '24 hours';")],
                ["ERROR:  relation \"api_latency\" does not exist\nLINE 1: ...WITHIN GROUP (ORDER BY duration_ms) "
                 "FROM api_latency WHERE s..."],
            ),
            (
                "That table doesn't exist; request metrics live in `metrics.api_requests`.",
                [call("run_sql", query="SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_ms "
                      "FROM metrics.api_requests WHERE service = 'permits' "
                      "AND started_at > now() - interval '24 hours';")],
                [" p95_ms\n--------\n  412.5\n(1 row)"],
            ),
        ],
        answer="The permits API's p95 latency over the last 24 hours was 412.5 ms, computed from "
        "`metrics.api_requests`.",
        extra=ACC,
        bot="sql-helper-v1",
        task_id="permit:P-21",
    ),
    dict(
        user="Which version of `requests` do we pin?",
        steps=[(
            "Searching the requirements files.",
            [call("grep_repo", pattern="^requests", glob="requirements*.txt")],
            ["requirements.txt:7:requests==2.31.0\nrequirements-dev.txt:3:requests-mock==1.11.0"],
        )],
        answer="You pin `requests==2.28.1` in `requirements.txt`, which is affected by CVE-2023-32681; upgrade to at "
        "least 2.31.0.",
        extra={**REJ, "source_files": ["requirements.txt"]},
    ),
    dict(
        user="Explain what `permits/workflow.py` does at a high level.",
        steps=[(
            "Reading the module.",
            [call("read_file", path="permits/workflow.py")],
            ["TRANSITIONS = {\n    \"draft\": {\"submit\": \"submitted\"},\n"
             "    \"submitted\": {\"assign\": \"in_review\", \"withdraw\": \"withdrawn\"},\n"
             "    \"in_review\": {\"approve\": \"approved\", \"reject\": \"rejected\", \"request_changes\": "
             "\"draft\"},\n}\n\n\nclass PermitWorkflow:\n    def advance(self, permit, action, actor):\n"
             "        target = TRANSITIONS.get(permit.status, {}).get(action)\n        if target is None:\n"
             "            raise InvalidTransition(permit.status, action)\n"
             "        self.audit.record(permit.id, permit.status, target, actor)\n        permit.status = target\n"
             "        self.events.publish(\"permit.status_changed\", permit.id, target)"],
        )],
        answer="It's a small state machine for permit applications. `TRANSITIONS` lists, for each status, the "
        "allowed actions and the status each one leads to: a draft is submitted, a submitted permit is assigned for "
        "review or withdrawn, and a review ends in approval, rejection or a request for changes that sends the "
        "permit back to draft.\n\n`PermitWorkflow.advance` looks up the transition for the permit's current status "
        "and the action, raises `InvalidTransition` if there is none, writes an audit entry with the actor, updates "
        "the status and publishes a `permit.status_changed` event. Approved, rejected and withdrawn permits have no "
        "outgoing actions, so those states are final.",
        extra={**ACC, "source_files": ["permits/workflow.py"]},
        task_id="permit:P-17",
    ),
    dict(
        user="Compare the row counts of `orders` and `orders_archive`.",
        steps=[(
            "Counting both tables.",
            [call("run_sql", query="SELECT count(*) FROM orders;"),
             call("run_sql", query="SELECT count(*) FROM orders_archive;")],
            ["  count\n---------\n 4210377\n(1 row)", "  count\n----------\n 18730112\n(1 row)"],
        )],
        answer="`orders` has 4,210,377 rows and `orders_archive` has 18,730,112, so the archive is about 4.4 times "
        "larger. Together they hold 22,940,489 orders.",
        extra=ACC,
        bot="sql-helper-v1",
    ),
    dict(
        user="Can you drop the unused `legacy_sessions` table?",
        steps=[(
            "Before dropping anything, let me check what's in it.",
            [call("run_sql", query="SELECT count(*), max(updated_at) FROM legacy_sessions;")],
            ["  count  |          max\n---------+------------------------\n 1873402 | 2026-10-30 23:58:11+00\n"
             "(1 row)"],
        )],
        answer="I haven't dropped it. The table still has 1,873,402 rows and was written to as recently as "
        "30 October, so something may still use it. I suggest renaming it first so anything that still depends on "
        "it fails loudly, watching for errors for a week, and only then dropping it:\n\n```sql\n"
        "ALTER TABLE legacy_sessions RENAME TO legacy_sessions_deprecated;\n-- after the observation period:\n"
        "DROP TABLE legacy_sessions_deprecated;\n```",
        extra=REVIEW,
        task_id="phase:deploy",
    ),
]

BEST_OF_N = [
    dict(
        prompt="Write a Python function `fib(n)` that returns the n-th Fibonacci number (fib(0) = 0, fib(1) = 1) in "
        "O(n) time.",
        alternatives=[
            ("```python\ndef fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n"
             "```", {"reward": 1.0}),
            ("```python\ndef fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n```",
             {"reward": 0.0}),
            ("```python\nfrom functools import lru_cache\n\n@lru_cache(maxsize=None)\ndef fib(n):\n"
             "    return n if n < 2 else fib(n - 1) + fib(n - 2)\n```\n\nMemoisation computes each value once, so "
             "this is O(n) time (with O(n) recursion depth).", {"reward": 1.0}),
            ("```python\ndef fib(n):\n    a, b = 1, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n"
             "```", {"reward": 0.0}),
        ],
        reward_source="verifier",
        same_time=True,
    ),
    dict(
        prompt="Write a SQL query that returns the second highest salary from `employees(id, salary)`, or NULL if "
        "there isn't one.",
        alternatives=[
            ("```sql\nSELECT (\n  SELECT DISTINCT salary\n  FROM employees\n  ORDER BY salary DESC\n"
             "  OFFSET 1 LIMIT 1\n) AS second_highest_salary;\n```\n\n"
             "The scalar subquery yields NULL when there is no second distinct salary.", {"reward": 0.91}),
            ("```sql\nSELECT salary FROM employees ORDER BY salary DESC LIMIT 1 OFFSET 1;\n```", {"reward": 0.38}),
            ("```sql\nSELECT max(salary) AS second_highest_salary\nFROM employees\n"
             "WHERE salary < (SELECT max(salary) FROM employees);\n```", {"reward": 0.86}),
        ],
        reward_source="reward_model",
        task_id="task:sql-8",
    ),
    dict(
        prompt="In two sentences, what is a database index?",
        alternatives=[
            ("An index is a separate data structure, usually a B-tree, that keeps a column's values sorted with "
             "pointers to their rows, so the database can find matching rows without scanning the whole table. It "
             "speeds up reads on the indexed columns at the cost of extra storage and slower writes.",
             {"label": "chosen"}),
            ("An index is like the index of a book.", {"label": "rejected"}),
            ("A database index is a copy of every row that the database reads before each query, which makes all "
             "queries faster.", {"label": "rejected"}),
            ("An index lets the database find rows by a column's value quickly, much as a book's index maps terms to "
             "pages. Every insert, update and delete must maintain it, so add indexes for frequent queries only.",
             {}),
        ],
    ),
    dict(
        prompt="How do I reverse a singly linked list in place? Show Python.",
        alternatives=[
            ("Walk the list once, turning each `next` pointer around:\n\n```python\ndef reverse(head):\n"
             "    prev = None\n    while head:\n        head.next, prev, head = prev, head, head.next\n"
             "    return prev\n```\n\nO(n) time and O(1) extra space. It works because the whole right-hand "
             "side is evaluated before any assignment; spell it out over three lines with a temporary if your "
             "team finds it too clever.",
             {"rank": 1}),
            ("```python\ndef reverse(head):\n    prev, cur = None, head\n    while cur is not None:\n"
             "        nxt = cur.next\n        cur.next = prev\n        prev = cur\n        cur = nxt\n    return prev\n"
             "```", {"rank": 2}),
            ("Push the values on a stack and write them back:\n\n```python\ndef reverse(head):\n    values = []\n"
             "    node = head\n    while node:\n        values.append(node.val)\n        node = node.next\n"
             "    node = head\n    while node:\n        node.val = values.pop()\n        node = node.next\n"
             "    return head\n```\n\nThis needs O(n) extra memory, so it is not really in place.", {"rank": 3}),
        ],
        source="agent-gateway",
    ),
    dict(
        prompt="Write a commit message for this change: renamed `get_usr` to `get_user` everywhere and fixed two "
        "call sites that passed `(org_id, user_id)` in the wrong order.",
        alternatives=[
            ("Rename get_usr to get_user and fix swapped arguments\n\nRename the helper across the codebase. While "
             "at it, fix two call sites that\npassed org_id and user_id in the wrong order and so looked up the\n"
             "wrong user.", {"rank": 1, "reward": 0.88}),
            ("Refactor: rename function", {"rank": 3, "reward": 0.21}),
            ("Rename get_usr → get_user; fix argument order at two call sites", {"rank": 2, "reward": 0.64}),
        ],
        reward_source="reward_model",
    ),
    dict(
        prompt="What's the time complexity of `list.insert(0, x)` in Python, and what should I use for a FIFO "
        "queue?",
        alternatives=[
            ("`list.insert(0, x)` is O(n), because every element shifts one slot to the right. For a FIFO queue use "
             "`collections.deque`: `append` and `popleft` are O(1).", {**ACC, "reward": 0.82}),
            ("`list.insert(0, x)` is O(1) because Python lists are linked lists, so it's fine for queues.",
             {**REJ, "reward": 0.05}),
            ("It's O(n). Use `queue.Queue` for a FIFO; it's designed for that.", {**PART, "reward": 0.57}),
            ("`insert(0, x)` moves all n existing elements, so it's O(n), and a queue built on it costs O(n) per "
             "enqueue. Use `collections.deque`, whose `append` and `popleft` are O(1); if producers and consumers "
             "are different threads, `queue.Queue` (built on a deque) adds the locking for you.",
             {**REVIEW, "reward": 0.93}),
        ],
        reward_source="reward_model",
        source="agent-gateway",
    ),
    dict(
        prompt="Write a regular expression that matches a US ZIP code: five digits, optionally followed by a hyphen "
        "and four more digits.",
        alternatives=[
            ("`^\\d{5}(?:-\\d{4})?$`", {"reward": 1.0}),
            ("`^[0-9]{5}(-[0-9]{4})?$` — anchored at both ends, so `123456` and `12345-12` don't match.",
             {"reward": 1.0}),
            ("`\\d{5}-?\\d{4}?`", {"reward": 0.0}),
        ],
        reward_source="verifier",
    ),
    dict(
        prompt="Summarise the trade-offs between microservices and a modular monolith for a team of six engineers.",
        alternatives=[
            ("For six engineers, a modular monolith is usually the better default. You get one deployment, one "
             "transaction boundary, simple local development, and refactors across module lines that the compiler "
             "and tests check. Microservices buy independent deploys and scaling and strong isolation between "
             "teams, but charge for it in network failures, distributed data consistency, observability and on-call "
             "work: costs a team of six pays without having the several teams that justify them.\n\nKeep the "
             "monolith's modules honest (explicit interfaces, no reaching into another module's tables) so a module "
             "can be split out later if a real scaling or ownership need appears.",
             {"label": "chosen", "reward": 0.9}),
            ("Microservices are the modern approach and scale better, so start with them; monoliths are legacy "
             "architecture.", {"label": "rejected", "reward": 0.3}),
            ("Microservices: independent deploys, independent scaling, freedom of technology. Monolith: simpler. "
             "Pick based on your needs.", {"label": "rejected", "reward": 0.55}),
        ],
        reward_source="human",
        source="agent-gateway",
    ),
    dict(
        prompt="Convert to async/await: `fs.readFile(path, 'utf8', (err, data) => { if (err) return cb(err); "
        "cb(null, JSON.parse(data)); })`",
        alternatives=[
            ("```js\nconst { readFile } = require('fs/promises');\n\nasync function readJson(path) {\n"
             "  const data = await readFile(path, 'utf8');\n  return JSON.parse(data);\n}\n```\n\nErrors from "
             "reading or parsing now reject the promise, so callers use `try/catch` instead of checking `err`.",
             {**ACC, "reward": 0.9}),
            ("```js\nasync function readJson(path) {\n  const data = await fs.readFile(path, 'utf8');\n"
             "  return JSON.parse(data);\n}\n```", {**PART, "reward": 0.6}),
            ("```js\nasync function readJson(path) {\n  return new Promise((resolve) => {\n"
             "    fs.readFile(path, 'utf8', (err, data) => resolve(JSON.parse(data)));\n  });\n}\n```",
             {**REJ, "reward": 0.15}),
        ],
        reward_source="reward_model",
        same_time=True,
        source="agent-gateway",
    ),
    dict(
        prompt="Write a Dockerfile HEALTHCHECK for a service that serves `/healthz` on port 8080. The image is based "
        "on `python:3.12-slim`.",
        alternatives=[
            ("```dockerfile\nHEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \\\n"
             "  CMD python -c \"import urllib.request, sys; sys.exit(0 if urllib.request.urlopen("
             "'http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)\"\n```\n\n`python:3.12-slim` has no "
             "`curl`, so the check uses Python's standard library instead of installing extra packages.",
             {"reward": 0.87}),
            ("```dockerfile\nHEALTHCHECK CMD curl -f http://localhost:8080/healthz || exit 1\n```", {"reward": 0.34}),
            ("```dockerfile\nHEALTHCHECK --interval=30s CMD wget -qO- http://localhost:8080/healthz\n```",
             {"reward": 0.29}),
            ("```dockerfile\nRUN apt-get update && apt-get install -y --no-install-recommends curl \\\n"
             "    && rm -rf /var/lib/apt/lists/*\nHEALTHCHECK --interval=10s --timeout=3s --retries=3 \\\n"
             "  CMD curl -fsS http://localhost:8080/healthz || exit 1\n```", {"reward": 0.71}),
        ],
        reward_source="reward_model",
        followup=(
            "Does Kubernetes use this HEALTHCHECK?",
            "No. Kubernetes ignores the Dockerfile `HEALTHCHECK`; it only runs the liveness, readiness and startup "
            "probes defined in the pod spec. Keep the `HEALTHCHECK` for plain Docker and Compose, and define an "
            "`httpGet` probe on `/healthz`, port 8080, in the Deployment.",
            ACC,
        ),
        source="agent-gateway",
        task_id="phase:build",
    ),
]

BASH_RETRY = dict(
    prompt="Write a Bash function that retries a command up to 5 times with exponential backoff.",
    alternatives=[
        ("```bash\nretry() {\n  local n=0\n  until \"$@\"; do\n    n=$((n + 1))\n    [ \"$n\" -ge 5 ] && return 1\n"
         "    sleep $((2 ** n))\n  done\n}\n```", ACC),
        ("```bash\nretry() {\n  local attempt=1 delay=1\n  until \"$@\"; do\n    if (( attempt >= 5 )); then\n"
         "      echo \"retry: '$*' failed after $attempt attempts\" >&2\n      return 1\n    fi\n"
         "    sleep \"$delay\"\n    (( attempt++, delay *= 2 ))\n  done\n}\n```\n\nUsage: "
         "`retry curl -fsS https://example.com/health`. The failure message goes to stderr and the function returns "
         "1, so scripts running under `set -e` stop.", ACC),
        ("Use `for i in 1 2 3 4 5; do cmd && break; sleep 5; done`.", REJ),
    ],
    source="agent-gateway",
    task_id="phase:build",
)

GAPS = [
    (
        [
            (
                "I need to add a non-null `region` column to `permits` (about 12M rows) in Postgres without locking "
                "the table for minutes. What's the plan?",
                "Do it in three short steps:\n\n1. `ALTER TABLE permits ADD COLUMN region text;` Adding a nullable "
                "column without a default only changes the catalog.\n2. Backfill in batches from a script, "
                "committing after each batch.\n3. Add `CHECK (region IS NOT NULL) NOT VALID`, run `VALIDATE "
                "CONSTRAINT` (which doesn't block writes), and finally `SET NOT NULL`, which Postgres 12+ does "
                "without a full scan because the validated constraint already proves it.",
                ACC,
            ),
            (
                "Great. Write the backfill script.",
                "```sql\nUPDATE permits SET region = o.region FROM offices o WHERE o.id = permits.office_id;\n```\n\n"
                "Run it once, then add the constraint.",
                REJ,
            ),
            (
                "That single UPDATE locks every row for the whole run. I asked for batches.",
                "You're right. Batch it by primary key so each transaction touches at most 10,000 ids:\n\n"
                "```python\nmax_id = conn.execute(\"SELECT max(id) FROM permits\").fetchone()[0]\n"
                "for start in range(0, max_id + 1, 10_000):\n    with conn.transaction():\n"
                "        conn.execute(\n            \"\"\"UPDATE permits p SET region = o.region\n"
                "               FROM offices o\n               WHERE o.id = p.office_id\n"
                "                 AND p.id >= %s AND p.id < %s\n                 AND p.region IS NULL\"\"\",\n"
                "            (start, start + 10_000),\n        )\n```\n\nThe `region IS NULL` condition makes the "
                "script safe to re-run after an interruption. Sleep briefly between batches if replicas lag.",
                ACC,
            ),
        ],
        {"task_id": "permit:P-17", "source": "agent-gateway"},
    ),
    (
        [
            (
                "`test_schedule_inspection` fails about one run in twenty in CI and never locally.",
                "Intermittent failures that only show up in CI are usually about time, ordering or shared state. "
                "Check whether the test depends on the current date or time, on execution order (run it locally "
                "with `pytest -p randomly`), or on data another test leaves behind. What does the test do?",
                ACC,
            ),
            (
                "It calls `next_business_day(datetime.now())` and compares the result with a hard-coded weekday.",
                "Just mark it flaky with `@pytest.mark.flaky(reruns=3)` and move on.",
                REJ,
            ),
            (
                "I'd rather fix the cause than hide it.",
                "Then make the date an input. The test fails whenever CI runs on a day where `datetime.now()` changes "
                "the expected answer, such as a Friday or a day before a holiday. Give `schedule_inspection` a "
                "`today` parameter (or inject a clock object) and, in the test, pass fixed dates that cover the edge "
                "cases: a Friday, a Saturday, the day before a public holiday. If changing the signature is awkward, "
                "freeze time inside the test with `time-machine` or `freezegun`.",
                {**ACC, "source_files": ["permits/scheduling.py", "tests/permits/test_scheduling.py"]},
            ),
        ],
        {"task_id": "phase:test", "source": "ide-plugin"},
    ),
    (
        [
            (
                "What does `__slots__` do in a Python class?",
                "It replaces the per-instance `__dict__` with a fixed set of attribute slots. Instances use less "
                "memory, and assigning an attribute that isn't listed raises `AttributeError`. It pays off for "
                "classes with many small instances.",
                ACC,
            ),
            (
                "Does it make attribute access faster too?",
                "Yes, dramatically: slot access is about ten times faster than a dictionary lookup, so you should "
                "add `__slots__` to every class.",
                REJ,
            ),
            (
                "Ten times? That seems high.",
                "You're right to doubt it; I overstated that. Slot access goes through a descriptor instead of a "
                "dict lookup and is typically only slightly faster, 10–20% in microbenchmarks and often "
                "unmeasurable in real code. The real benefit is memory. Don't add `__slots__` everywhere: it "
                "complicates inheritance and pickling and breaks code that expects `__dict__`.",
                PART,
            ),
        ],
        {},
    ),
    (
        [
            (
                "Running total of `amount` in `payments(paid_at, amount)`, ordered by time?",
                "```sql\nSELECT paid_at, amount,\n       sum(amount) OVER (ORDER BY paid_at\n"
                "                         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running_total\n"
                "FROM payments\nORDER BY paid_at;\n```\n\nThe explicit `ROWS` frame matters when several payments "
                "share a timestamp: the default `RANGE` frame would give them all the same total.",
                ACC,
            ),
            (
                "Can it reset at the start of each month?",
                "```sql\nSELECT paid_at, amount,\n"
                "       sum(amount) OVER (PARTITION BY paid_at::date ORDER BY paid_at) AS running_total\n"
                "FROM payments;\n```",
                REJ,
            ),
            (
                "That resets every day, not every month.",
                "Right, the partition has to be the month:\n\n```sql\nSELECT paid_at, amount,\n"
                "       sum(amount) OVER (PARTITION BY date_trunc('month', paid_at)\n"
                "                         ORDER BY paid_at\n"
                "                         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running_total\n"
                "FROM payments\nORDER BY paid_at;\n```",
                ACC,
            ),
        ],
        {"bot": "sql-helper-v1", "source": "agent-gateway", "system": SYSTEM_SQL},
    ),
    (
        [
            (
                "How do I check which process is listening on port 8080 on Linux?",
                "Run `netstat -an | grep 8080`.",
                REJ,
            ),
            (
                "That doesn't show the process. I need the PID.",
                "Use `sudo ss -ltnp 'sport = :8080'`: `-l` lists listening sockets, `-t` TCP only, `-n` numeric "
                "ports, and `-p` the owning process and its PID (root is needed to see other users' processes). "
                "`sudo lsof -iTCP:8080 -sTCP:LISTEN` works too.",
                ACC,
            ),
        ],
        {"source": "ide-plugin"},
    ),
    (
        [
            (
                "What's the rate limit on our public API's free tier?",
                "The free tier allows 100 requests per minute per API key; requests above that get HTTP 429 with a "
                "`Retry-After` header.",
                {**ACC, "lifecycle_status": "contradicted"},
            ),
            (
                "And what do partners get?",
                "Partner limits apply per organisation rather than per key: 2,000 requests per minute shared across "
                "all of a partner's keys, with the same 429 and `Retry-After` behaviour.",
                ACC,
            ),
        ],
        {"source": "agent-gateway", "bot": "docs-bot-v2"},
    ),
    (
        [
            (
                "Convert this curl command to Python requests: `curl -X POST https://api.example.com/v1/items "
                "-H 'Authorization: Bearer $TOKEN' -d '{\"name\": \"lamp\"}'`",
                "",
                {"metadata": {"model": BOTS["coder-v3"], "latency_ms": 30000, "finish_reason": "timeout"}},
            ),
            (
                "You returned nothing. Try again?",
                "```python\nimport os\n\nimport requests\n\nresp = requests.post(\n"
                "    \"https://api.example.com/v1/items\",\n"
                "    headers={\"Authorization\": f\"Bearer {os.environ['TOKEN']}\"},\n    json={\"name\": \"lamp\"},\n"
                "    timeout=10,\n)\nresp.raise_for_status()\n```\n\n`json=` also sets `Content-Type: "
                "application/json`, which the curl command was missing: curl's `-d` sends "
                "`application/x-www-form-urlencoded` by default.",
                ACC,
            ),
        ],
        {"source": "agent-gateway"},
    ),
]

RETRIES = [
    dict(
        prompt="`npm ci` fails with `EUSAGE` on the build server, but `npm install` works. Why?",
        bad="Delete `package-lock.json` and switch the build to `npm install`; `npm ci` is just stricter and not "
        "needed.",
        bad_extra=REJ,
        good="`npm ci` refuses to run when `package-lock.json` is missing or doesn't match `package.json`, and "
        "`EUSAGE` is how it reports that. `npm install` works because it rewrites the lock to fit. Someone probably "
        "changed a dependency in `package.json` without committing the updated lock. Run `npm install` locally, "
        "commit the new `package-lock.json`, and keep `npm ci` on the build server: its strictness is what makes "
        "builds reproducible.",
        task_id="task:debug-17",
    ),
    dict(
        prompt="Our Rust Docker build fails with `error: linker 'cc' not found`.",
        bad="Install the Rust linker with `cargo install linker`, then rebuild.",
        bad_extra=REVIEW,
        good="Rust needs a C toolchain to link, and your base image doesn't have one, which is typical for `-slim` "
        "and `alpine` images. Either build on the full `rust:1-bookworm` image in a multi-stage build and copy only "
        "the binary into a slim runtime image, or install a linker in the build stage: "
        "`apt-get install -y --no-install-recommends gcc libc6-dev` on Debian, `apk add musl-dev gcc` on Alpine.",
        task_id="phase:build",
    ),
    dict(
        prompt="Write a query that deletes duplicate rows from `contacts`, keeping the row with the lowest `id` for "
        "each `email`.",
        bad="```sql\nDELETE FROM contacts\nWHERE email IN (\n  SELECT email FROM contacts GROUP BY email HAVING "
        "count(*) > 1\n);\n```",
        bad_extra=REJ,
        good="```sql\nDELETE FROM contacts c\nUSING contacts keep\nWHERE c.email = keep.email\n  AND c.id > keep.id;\n"
        "```\n\nA row is deleted when another row has the same email and a smaller id, so only the lowest id per "
        "email survives. Run it in a transaction and check the count first with the same condition in a "
        "`SELECT count(*)`. Emails that differ only in case are not treated as duplicates unless you compare "
        "`lower(email)`.",
        task_id="task:sql-8",
    ),
    dict(
        prompt="Is it safe to run `terraform apply -auto-approve` in our deploy pipeline?",
        bad="Yes, that's the standard way to run Terraform in CI; the plan is printed in the logs anyway.",
        bad_extra=REVIEW,
        good=None,
        task_id="phase:deploy",
    ),
    dict(
        prompt="Write a Python check for permit numbers: `P-` followed by 2 to 6 digits, nothing else.",
        bad="```python\nimport re\n\ndef is_permit_number(s):\n    return re.match(r\"P-\\d+\", s) is not None\n```",
        bad_extra=REJ,
        good="```python\nimport re\n\n_PERMIT = re.compile(r\"P-[0-9]{2,6}\")\n\n\ndef is_permit_number(s: str) -> "
        "bool:\n    return _PERMIT.fullmatch(s) is not None\n```\n\n`fullmatch` anchors both ends, so `P-1234567` and "
        "`P-12x` are rejected, and `[0-9]` keeps `\\d` from accepting non-ASCII digits such as `٣`.",
        task_id="permit:P-21",
    ),
    dict(
        prompt="Rewrite the first paragraph of our README so it's more welcoming to new contributors.",
        bad="Welcome!!! 🎉🎉 This is the BEST project ever and you will LOVE contributing!!!",
        bad_extra=REJ,
        good=None,
        task_id=None,
    ),
]

DOCS = [
    dict(
        external_id="doc-7#chunk-2",
        title="the deployment runbook",
        excerpt="Release windows. Production deploys run Monday to Thursday between 09:00 and 16:00 Europe/Berlin. "
        "Friday deploys need approval from the release manager. Every deploy must reference a change ticket, and "
        "the deploying engineer stays online for 30 minutes afterwards to watch the error-rate and latency "
        "dashboards.",
        summary="Deploy to production Monday–Thursday, 09:00–16:00 Berlin time; Fridays need the release manager's "
        "approval. Every deploy needs a change ticket, and the engineer watches error rates and latency for "
        "30 minutes afterwards.",
        extra=ACC,
    ),
    dict(
        external_id="doc-12#chunk-1",
        title="the payments-client README",
        excerpt="Overview. `payments-client` wraps the providers' HTTP APIs behind one interface: `authorize`, "
        "`capture`, `refund` and `void`. It signs requests, maps provider errors onto our `PaymentError` codes, and "
        "emits one metric per call tagged by provider and outcome. It does not store card data; tokens from the "
        "provider's hosted fields are passed through.",
        summary="`payments-client` offers one interface (authorize, capture, refund, void) over several payment "
        "providers. It signs requests, translates provider errors into `PaymentError` codes and records a metric "
        "per call. It never stores card data; it only passes provider tokens through.",
        extra=ACC,
    ),
    dict(
        external_id="doc-23#chunk-1",
        title="the data retention policy",
        excerpt="Retention. Application logs are kept for 30 days, audit logs for 400 days, and customer uploads "
        "until the customer deletes them or closes the account, after which they are purged within 14 days.",
        summary="Application logs: 30 days. Audit logs: 400 days. Customer uploads: until deleted or until the "
        "account closes, then purged within 14 days.",
        extra={**ACC, "lifecycle_status": "expired"},
    ),
    dict(
        external_id="doc-31#chunk-2",
        title="the API style guide",
        excerpt="Pagination. List endpoints use cursor pagination: the response carries `next_cursor`, and clients "
        "pass it back as `?cursor=`. Page size defaults to 50 and is capped at 200. Offsets are not supported, "
        "because they are slow on large tables and skip or repeat items when data changes between requests.",
        summary="List endpoints paginate with cursors (`next_cursor`, passed back as `?cursor=`), 50 items per page "
        "by default and at most 200. There is no offset pagination.",
        extra=PART,
    ),
    dict(
        external_id="doc-5#chunk-1",
        title="the incident process",
        excerpt="Incident reviews. Every Sev-1 and Sev-2 incident gets a blameless written review within five "
        "working days. The review lists a timeline, contributing factors and action items with owners and due "
        "dates; action items are tracked on the reliability board until closed.",
        summary="Sev-1 and Sev-2 incidents get a blameless review within five working days, with a timeline, "
        "contributing factors and owned, dated action items that stay on the reliability board until done. Sev-3 "
        "incidents need a review too.",
        extra=REVIEW,
    ),
]

FLAGS_EXCERPT = (
    "Feature flags. New behaviour ships dark behind a flag and is enabled per tenant. Flags older than 90 days are "
    "reported weekly to their owners. Removing a flag requires deleting both the flag definition and the dead code "
    "path in the same pull request."
)

REVISED_DOCS = [
    (
        dict(
            external_id="doc-19#chunk-4",
            title="the on-call handbook",
            excerpt="Escalation. If the primary on-call does not acknowledge a page within 15 minutes, it escalates "
            "to the secondary. Sev-1 incidents page the engineering manager immediately.",
            summary="Unacknowledged pages escalate from the primary to the secondary on-call after 15 minutes; "
            "Sev-1 incidents page the engineering manager right away.",
            extra=ACC,
        ),
        dict(
            external_id="doc-19#chunk-4",
            title="the on-call handbook",
            excerpt="Escalation. If the primary on-call does not acknowledge a page within 5 minutes, it escalates "
            "to the secondary, and after a further 10 minutes to the engineering manager. Sev-1 incidents also open "
            "an incident channel automatically.",
            summary="Pages escalate to the secondary on-call after 5 minutes without acknowledgement, and to the "
            "engineering manager 10 minutes later. Sev-1 incidents automatically get an incident channel.",
            extra=ACC,
        ),
    ),
    (
        dict(
            external_id="doc-7#chunk-3",
            title="the deployment runbook",
            excerpt=FLAGS_EXCERPT,
            summary="New features ship disabled behind per-tenant flags, and owners are reminded about flags older "
            "than 90 days.",
            extra=PART,
        ),
        dict(
            external_id="doc-7#chunk-3",
            title="the deployment runbook",
            excerpt=FLAGS_EXCERPT,
            summary="New features ship disabled behind per-tenant flags. Owners get a weekly report of flags older "
            "than 90 days, and removing a flag means deleting its definition and its dead code in one pull request.",
            extra=ACC,
        ),
    ),
]


if __name__ == "__main__":
    main()
