"""A provider key given to a real daemon never reaches the journal, a log line, a reply or a stage.

The daemon runs with its key in the environment, ``env_allow = ["*"]`` (the most an operator can
open up) and debug logging; the fake provider is hostile: it echoes the key back in its answer and
in an error body. Pipelines then try every way out: a stage dumping its environment and the
daemon's ``/proc/<pid>/environ``, ``{{env.KEY}}`` in a template, the LLM output. The oracle is a
byte search of every file and every reply.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon_support import DaemonProcess
from llm.fake_chat import FakeChatServer, Received, Reply

KEY_ENV = "FM_TEST_PROVIDER_KEY"

LEAKY = {
    "id": "leaky",
    "stages": [
        {"id": "ask", "component_type": "generator", "provider": "local", "config": {"prompt": "say the key"}},
        {"id": "env_dump", "component_type": "shell", "depends_on": ["ask"],
         "config": {"command": "env; tr '\\0' '\\n' < /proc/$PPID/environ", "check": False}},
        {"id": "template", "component_type": "shell", "depends_on": ["ask"], "on_error": "continue",
         "config": {"command": ["printf", "%s", "{{env." + KEY_ENV + "}}"]}},
        {"id": "echo_output", "component_type": "shell", "depends_on": ["ask"],
         "config": {"command": ["printf", "%s", "{{upstream.ask.content}}"]}},
    ],
}
REJECTED = {"id": "rejected", "stages": [
    {"id": "ask", "component_type": "generator", "provider": "local", "config": {"prompt": "hi"}}]}


def echo_key(received: Received) -> Reply:
    """A hostile provider: puts the credential it received into its answer."""
    return Reply.completion(f"your key is {received.headers.get('authorization', '')}")


def reject_echoing_key(received: Received) -> Reply:
    """A provider that rejects the key and quotes it back in its error."""
    return Reply(status=401, body={"error": {"message": f"invalid key {received.headers.get('authorization')}"}})


def test_the_provider_key_appears_nowhere(daemon_factory: Callable[..., DaemonProcess],
                                          write_pipeline: Callable[[dict[str, Any]], Path],
                                          state_dir: Path, tmp_path: Path) -> None:
    """After runs that try every path, no file of the state dir, no log and no reply holds the key's bytes."""
    key = "sk-leakcheck-" + secrets.token_hex(16)
    fake = FakeChatServer()
    try:
        fake.default = echo_key
        write_pipeline(LEAKY)
        write_pipeline(REJECTED)
        config = {"providers": {"local": {"base_url": fake.base_url, "default_model": "m",
                                          "api_key_env": KEY_ENV, "timeout_s": 5.0}},
                  "env_allow": ["*"], "log_level": "debug", "shutdown_grace_s": 2.0}
        daemon = daemon_factory(config=config, env={KEY_ENV: key}).start()
        replies: list[str] = []

        def cli(*args: str) -> None:
            done = daemon.cli(*args)
            replies.append(done.stdout + done.stderr)

        with daemon.client() as client:
            leaky = client.runs_start("leaky").run_id
            info = daemon.wait_for_status(leaky, {"succeeded", "failed"})
            assert info["status"] == "succeeded", info
            fake.default = reject_echoing_key
            rejected = client.runs_start("rejected").run_id
            assert daemon.wait_for_status(rejected, {"succeeded", "failed"})["status"] == "failed"
            for method, params in [("runs.show", {"run_id": leaky}), ("runs.show", {"run_id": rejected}),
                                   ("runs.events", {"run_id": leaky}), ("runs.events", {"run_id": rejected}),
                                   ("runs.output", {"run_id": leaky, "path": "env_dump"}),
                                   ("runs.list", {}), ("status", {}), ("pipelines.list", {}),
                                   ("pipelines.show", {"pipeline_id": "leaky"})]:
                replies.append(json.dumps(client.call(method, params)))
        for args in (["show", leaky, "--json"], ["show", rejected], ["events", leaky, "--json"],
                     ["show", leaky, "--output", "echo_output"], ["status"], ["runs"], ["pipelines", "--json"]):
            cli(*args)
        files = {p.name: p.read_bytes() for p in state_dir.iterdir() if p.is_file()}  # -wal while running
        assert daemon.stop() == 0
        files.update({p.name + " (stopped)": p.read_bytes() for p in state_dir.iterdir() if p.is_file()})

        # The test means something only if the key was really used and really echoed.
        assert [r.headers["authorization"] for r in fake.requests] == [f"Bearer {key}"] * 2
        assert "journal.sqlite3-wal" in files
        stages = {s["path"]: s for s in json.loads(replies[0])["stages"]}
        assert "your key is Bearer [redacted]" in stages["ask"]["output"]["content"]
        assert "PATH=" in stages["env_dump"]["output"]["stdout"]  # the dump ran
        assert "not set" in stages["template"]["error"]

        secret = key.encode()
        for name, data in files.items():
            assert secret not in data, f"key in {name}"
        assert secret not in daemon.log_path.read_bytes(), "key in the daemon's log"
        for reply in replies:
            assert key not in reply, f"key in a reply: {reply[:300]}"
    finally:
        fake.close()
