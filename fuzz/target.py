"""One atheris target: ``python fuzz/target.py NAME [libFuzzer options] [corpus dirs]``.

NAME is a key of :data:`properties.TARGETS`.  smtpwire is imported under
atheris's instrumentation, so libFuzzer's coverage guidance sees its branches.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["smtpwire"]):
    import properties

# proxy_protocol logs every refused header: keep the fuzzer's output readable.
logging.disable(logging.CRITICAL)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in properties.TARGETS:
        names = ", ".join(properties.TARGETS)
        raise SystemExit(f"usage: target.py NAME [libFuzzer options]; NAME is one of {names}")
    check = properties.TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
