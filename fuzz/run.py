"""Run the atheris targets one after another and report executions per target.

    python fuzz/run.py --quick              # 6 s per target, about 2 minutes in all
    python fuzz/run.py --time 600           # 600 s per target
    python fuzz/run.py --time 60 --targets reply_parser,proxy

Each target starts from a scratch copy of its committed seed corpus
(fuzz/corpus/NAME), so the run's new inputs never land in the repository; crash
reproducers are written to ``--artifacts`` (a temporary directory by default) and
their paths printed.  The exit status is non-zero when a target found a crash.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
TARGETS = (
    "reply_parser",
    "command_line",
    "paths",
    "xtext",
    "sasl",
    "data_decoder",
    "bdat",
    "proxy",
    "ehlo",
    "session_bytes",
    "session_commands",
    "client_replies",
)
MAX_LEN = 1024 * 1024  # libFuzzer's own inputs; amplified payloads reach 2 MiB
RSS_LIMIT_MB = 2048
TIMEOUT = 60  # seconds for one input
QUICK = 6  # seconds per target in --quick mode (about two minutes for all, with start-up)


class Result(NamedTuple):
    target: str
    runs: int
    exec_per_second: int
    seconds: float
    crashed: bool
    artifacts: list[str]
    done_line: str


def run_target(name: str, seconds: int, artifacts: Path) -> Result:
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as scratch:
        corpus = Path(scratch) / "corpus"
        shutil.copytree(CORPUS / name, corpus) if (CORPUS / name).is_dir() else corpus.mkdir()
        prefix = artifacts / f"{name}-"
        command = [
            sys.executable, str(HERE / "target.py"), name,
            f"-max_total_time={seconds}", f"-max_len={MAX_LEN}",
            f"-rss_limit_mb={RSS_LIMIT_MB}", f"-timeout={TIMEOUT}",
            f"-artifact_prefix={prefix}", "-print_final_stats=1", str(corpus),
        ]  # fmt: skip
        started = time.monotonic()
        completed = subprocess.run(  # noqa: S603 - our own interpreter and script
            command, capture_output=True, text=True, check=False
        )
        elapsed = time.monotonic() - started
    output = completed.stdout + completed.stderr
    done = re.findall(r"^#(\d+)\s+DONE\b.*?exec/s: (\d+).*$", output, re.MULTILINE)
    done_line = next((line for line in output.splitlines() if re.match(r"#\d+\s+DONE\b", line)), "")
    runs_line = re.search(r"^stat::number_of_executed_units: (\d+)", output, re.MULTILINE)
    runs = int(runs_line[1]) if runs_line else (int(done[-1][0]) if done else 0)
    rate = int(done[-1][1]) if done else int(runs / elapsed) if elapsed else 0
    found = sorted(str(path) for path in artifacts.glob(f"{name}-*"))
    crashed = completed.returncode != 0 or bool(found)
    if crashed:
        print(output[-4000:], file=sys.stderr)
    return Result(name, runs, rate, round(elapsed, 1), crashed, found, done_line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK} seconds per target")
    parser.add_argument("--time", type=int, default=60, help="seconds per target (default 60)")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated names")
    parser.add_argument("--artifacts", type=Path, help="where crash reproducers go")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    options = parser.parse_args()
    seconds = QUICK if options.quick else options.time
    artifacts = options.artifacts or Path(tempfile.mkdtemp(prefix="smtpwire-fuzz-artifacts-"))
    artifacts.mkdir(parents=True, exist_ok=True)
    names = [name for name in options.targets.split(",") if name]
    unknown = set(names) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    started = time.monotonic()
    results = []
    print(f"{'target':<18} {'runs':>10} {'exec/s':>8} {'seconds':>8}  result", flush=True)
    for name in names:
        result = run_target(name, seconds, artifacts)
        results.append(result)
        verdict = "CRASH " + " ".join(result.artifacts) if result.crashed else "ok"
        print(
            f"{name:<18} {result.runs:>10} {result.exec_per_second:>8} {result.seconds:>8}  "
            f"{verdict}",
            flush=True,
        )
    total = time.monotonic() - started
    print(f"total {total:.0f} s; artifacts in {artifacts}")
    if options.json:
        options.json.write_text(json.dumps([result._asdict() for result in results], indent=2))
    return 1 if any(result.crashed for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
