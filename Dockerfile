# `newsletter serve` in a container: the public side (unsubscribe links, archive) of a project
# that is mounted at /project. See docs/deploy.md.
#
#   docker build -t newsletter .
#   docker run -d --name newsletter -p 127.0.0.1:8000:8000 \
#       -v "$PWD:/project" -e NEWSLETTER_SECRET newsletter
#
# The project folder must be writable by the container's user (uid 10001): the subscriber store
# (newsletter.db and its -wal/-shm files) lives there. The signing secret comes only from the
# environment (NEWSLETTER_SECRET, or the variable named by [unsubscribe] secret_env); nothing
# secret is baked into the image.

ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The package only (no test extras); the sources are removed once installed.
COPY pyproject.toml README.md /tmp/newsletter-src/
COPY newsletter /tmp/newsletter-src/newsletter
RUN pip install /tmp/newsletter-src && rm -rf /tmp/newsletter-src

# A user of its own, with no login and no home to write to: the app needs only /project.
RUN groupadd --system --gid 10001 newsletter \
    && useradd --system --uid 10001 --gid newsletter --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin newsletter
USER newsletter:newsletter

# The project (newsletter.toml, templates, issues, newsletter.db, dist/) is mounted here.
WORKDIR /project
VOLUME ["/project"]

EXPOSE 8000

# slim has no curl: Python's urllib asks the app itself. A 503 (store unreadable) or no answer
# raises, and the non-zero exit marks the container unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# 0.0.0.0 is deliberate and only right here: inside the container, 127.0.0.1 would be unreachable
# from the published port. Publish it on the host's loopback (-p 127.0.0.1:8000:8000) and put
# the TLS proxy in front; the command line overrides [serve] host/port in newsletter.toml.
CMD ["newsletter", "serve", "--host", "0.0.0.0", "--port", "8000"]
