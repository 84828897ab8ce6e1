#!/usr/bin/env bash
# Builds the receiver's image with buildah, offline and without a Docker daemon: `make image`.
#
#   1. the base image (deploy/base-image.sh: a stand-in python:3.11-slim when the name is missing),
#   2. into build/wheels (the only build context): the project's wheel, built here, and the wheels of its
#      dependencies with every extra but `dev`, fetched by the base image's own pip: pip evaluates
#      markers such as `python_full_version < "3.11.3"` against the Python it runs on, so only the
#      base's interpreter picks the right set,
#   3. `buildah bud` with no network and no pull; the image it replaces is removed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
IMAGE=${IMAGE:-localhost/kontext-receiver:dev}
BASE=docker.io/library/python:3.11-slim  # the Dockerfile's FROM
PYTHON=${PYTHON:-$root/.venv/bin/python}
RUNTIME=${RUNTIME:-/usr/sbin/runc}
wheels=build/wheels
start=$(date +%s)

for tool in buildah skopeo umoci debootstrap "$RUNTIME"; do
    command -v "$tool" >/dev/null || {
        echo "build-image: $tool is missing (apt-get install buildah runc skopeo umoci debootstrap)" >&2
        exit 1
    }
done

BASE=$BASE deploy/base-image.sh

# All of build/: setuptools would put files it left in build/lib last time into the wheel.
rm -rf build && mkdir -p "$wheels"
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$wheels" .
read -r version requirement < <("$PYTHON" - <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = ",".join(sorted(name for name in project.get("optional-dependencies", {}) if name != "dev"))
name = project["name"] + (f"[{extras}]" if extras else "")
print(project["version"], f"{name}=={project['version']}")
PY
)
echo "$requirement" > "$wheels/requirements.txt"

# The base's pip, in a throw-away virtualenv of a throw-away container, on the host's network (PyPI),
# with the host's CA bundle and pip cache.
pip_cache=$("$PYTHON" -m pip cache dir)
mkdir -p "$pip_cache"
fetcher=$(buildah from --pull=never "$BASE")
trap 'buildah rm "$fetcher" >/dev/null' EXIT
buildah run --runtime "$RUNTIME" --network host \
    --volume "$root/$wheels:/wheels" --volume "$pip_cache:/root/.cache/pip" \
    --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
    --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt --env PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$fetcher" -- sh -c 'python3 -m venv /tmp/fetch && /tmp/fetch/bin/pip download --quiet \
        --dest /wheels --find-links /wheels --only-binary=:all: --requirement /wheels/requirements.txt'

previous=$(buildah inspect --type image --format '{{.FromImageID}}' "$IMAGE" 2>/dev/null || true)
buildah bud --quiet --pull=never --runtime "$RUNTIME" --network none --build-arg "VERSION=$version" \
    --tag "$IMAGE" --file Dockerfile .
# The image this name pointed at before is left without a name: remove it rather than pile them up.
if [ -n "$previous" ] && [ "$previous" != "$(buildah inspect --type image --format '{{.FromImageID}}' "$IMAGE")" ]; then
    buildah rmi "$previous" >/dev/null 2>&1 || true
fi
echo "build-image: $IMAGE ($requirement) built in $(($(date +%s) - start)) s"
