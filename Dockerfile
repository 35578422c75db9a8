# smtpwire-server in a container: see docs/deploy.md.
#   docker build -t smtpwire .
#   docker run --rm -p 8025:8025 smtpwire
# Settings come as SMTPWIRE_* variables (docker run -e SMTPWIRE_CLASS=...), or as
# arguments after the image name, which replace the CMD below.
FROM python:3.12-slim

# The three distributions from this checkout (common, client, server), in
# dependency order; no build tools are left in the image.
COPY packages/ /tmp/smtpwire/packages/
RUN pip install --no-cache-dir \
        /tmp/smtpwire/packages/common \
        /tmp/smtpwire/packages/client \
        /tmp/smtpwire/packages/server \
    && rm -rf /tmp/smtpwire

# A user of its own: the server never needs root (8025 is not a privileged port),
# and started as anyone but root it never switches user, so -n is not needed.
RUN useradd --system --create-home --home-dir /var/lib/smtpwire --shell /usr/sbin/nologin smtpwire
USER smtpwire
WORKDIR /var/lib/smtpwire

# Python output straight to the container log; Debugging flushes each message anyway.
ENV PYTHONUNBUFFERED=1

EXPOSE 8025
# docker stop sends SIGTERM: the server stops accepting, lets transactions in
# progress finish (--shutdown-grace, 10 s), then exits 0.  docker stop's own
# timeout (-t, 10 s by default) should be longer: docker stop -t 15.
STOPSIGNAL SIGTERM
CMD ["smtpwire-server", "-l", "0.0.0.0:8025"]
