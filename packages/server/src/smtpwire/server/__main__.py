"""``python -m smtpwire.server``: the same command as ``smtpwire-server``."""

from smtpwire.server.main import main

if __name__ == "__main__":
    main()
