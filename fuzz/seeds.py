"""Write the seed corpora (fuzz/corpus/NAME/*): ``python fuzz/seeds.py``.

Each seed is the option octets a target reads first (see its ``check_*`` in
properties.py) followed by a realistic payload, so the fuzzer starts from inputs
that reach deep into each parser.  Kept small: a few files per target, each
under 4 KiB.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"

EHLO_REPLY = (
    b"250-mx.example Hello\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n250-PIPELINING\r\n"
    b"250-AUTH PLAIN LOGIN\r\n250-AUTH=LOGIN\r\n250-CHUNKING\r\n250 HELP\r\n"
)
SESSION = (
    b"EHLO client.example\r\nMAIL FROM:<anne@example.com> SIZE=100\r\n"
    b"RCPT TO:<bob@example.org>\r\nDATA\r\nSubject: hi\r\n\r\n..dot\r\nbare\nLF\r\n.\r\n"
    b"MAIL FROM:<> BODY=BINARYMIME\r\nRCPT TO:<c@example.org> NOTIFY=SUCCESS\r\n"
    b"BDAT 5\r\nab\r\ncBDAT 2 LAST\r\nx\nVRFY postmaster\r\nRSET\r\nSTARTTLS\r\nQUIT\r\n"
)
V2_HEADER = (
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11"
    + struct.pack("!H", 12 + 7)
    + bytes([192, 0, 2, 1, 198, 51, 100, 2])
    + struct.pack("!HH", 40000, 25)
    + b"\x01\x00\x04smtp"
)

SEEDS: dict[str, list[bytes]] = {
    "reply_parser": [
        b"\x00\x00\x05\x00" + EHLO_REPLY + b"220 ready\r\n354 go ahead\r\n",
        b"\x02\x02\x01\x00250-a\n250-b\r\n250 c\r\n550 5.1.1 no\r\n421",
        b"\x00\x00\x07\x14" + b"250-" + b"x" * 200 + b"\r\n250 end\r\n",
    ],
    "command_line": [
        b"\x00\x00\x00\x05\x00" + SESSION,
        b"\x01\x01\x01\x01\x00NOOP\r\nHELO a\nMAIL FROM:<\xc3\xa9@example.com>\r\nX\rY\r\n",
        b"\x02\x00\x02\x07\x12" + b"NOOP " + b"x" * 100 + b"\r\n",
    ],
    "paths": [
        b"\x00\x00\x00\x00FROM:<anne@example.com> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=a+2Bb",
        b'\x01\x01\x01\x00TO:<"quoted local"@[IPv6:2001:db8::1]> NOTIFY=SUCCESS,DELAY'
        b" ORCPT=rfc822;b+40example.org",
        b"\x00\x00\x00\x01FROM: <@route.example,@b.example:j\xc3\xb6rg@ex\xc3\xa4mple.com>"
        b" SMTPUTF8 AUTH=<>",
        b"\x01\x00\x00\x02TO:postmaster ORCPT=utf-8;\\x{E9}t\\x{E9}",
    ],
    "xtext": [
        b"\x01\x01a+2Bb+3Dc+20d",
        b"\x01\x01rfc822;j+C3+B6rg@example.com",
        b"\x00\x00x+0D+0Ay",
    ],
    "sasl": [
        b"\x00AGFubmUAc2VjcmV0",
        b"\x00dXNlcj1hbm5lAWF1dGg9QmVhcmVyIHRva2VuAQE=",
        b"\x01YW5uZSA5YTE2YzIxNzY0OTc3Y2I1Y2FmNzQ4N2Q4M2Y1YzA2Mw==",
        b"\x00*",
        b"\x01anne\x00secret",
    ],
    "data_decoder": [
        b"\x00\x00\x00\x05\x09\x00Subject: hi\r\n\r\n..dot\r\n.\r\nNOOP\r\n",
        b"\x01\x02\x03\x01\x21\x00a\nb\r\n.\nnot the end\r\n\r.\r\nx\r\n.\r\n",
        b"\x02\x04\x04\x03\x02\x12line\r\n",
        b"\x00\x01\x05\x07\x08\x00" + b"y" * 90 + b"\r\n.\r\n",
    ],
    "bdat": [
        b"\x00\x05\x00\x01\x03\x00hello world\r\nNOOP\r\n",
        b"\x00\x04\x01\x01\x05\x00a\r\r\nb\nQUIT\r\n",
        b"\x00\x03\x02\x00\x02\x10x\rz",
    ],
    "proxy": [
        b"\x03\x00PROXY TCP4 192.0.2.1 198.51.100.2 40000 25\r\nEHLO c\r\n",
        b"\x05\x00PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n",
        b"\x02\x00PROXY UNKNOWN\r\n",
        b"\x07\x00" + V2_HEADER + b"EHLO c\r\n",
    ],
    "ehlo": [
        EHLO_REPLY,
        b"250-mx\n250-SIZE\n250-AUTH=PLAIN CRAM-MD5\n250-x_bad\n250 DSN\n",
        b"550 5.7.1 go away\r\n",
    ],
    "session_bytes": [
        bytes(10) + b"\x05\x00" + SESSION,
        b"\x0f\x01\x01\x02\x03\x00\x00\x00\x00\x01\x07\x00" + SESSION,
        b"\x83\x02\x02\x02\x02\x03\x01\x01\x01\x02\x01\x00" + SESSION,
    ],
    "session_commands": [
        bytes(10) + b"\x03\x05\x20" + bytes(range(64)) * 4,
        b"\x03\x00\x02\x00\x00\x00\x00\x00\x00\x00\x01\x09\x30" + bytes(range(255, 0, -1)),
        b"\x01\x01\x01\x02\x00\x04\x00\x00\x00\x03\x07\x11\x18" + b"\x00\x02\x04\x09" * 40,
    ],
    "client_replies": [
        b"\x03\x05\x00220 mx ready\r\n" + EHLO_REPLY + b"250 OK\r\n",
        b"\x00\x01\x00421 4.3.2 shutting down\r\n",
        b"\x02\x07\x10250-a\r\n250 b\r\n",
    ],
}


def main() -> None:
    for name, seeds in SEEDS.items():
        directory = CORPUS / name
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        for index, seed in enumerate(seeds):
            if len(seed) >= 4096:
                raise ValueError(f"seed {name}/{index} is {len(seed)} octets")
            (directory / f"seed-{index:02d}").write_bytes(seed)


if __name__ == "__main__":
    main()
