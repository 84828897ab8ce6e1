#!/usr/bin/env bash
# Builds the receiver's image with buildah, offline and without a Docker daemon: `make image`.
#
#   1. the base image (deploy/base-image.sh: a stand-in python:3.11-slim when the name is missing),
#   2. the wheels of the project and of its dependencies with every extra but `dev`, for CPython 3.11 on
#      manylinux x86_64 whatever the host's Python, into build/wheels (the only build context),
#   3. `buildah bud` with no network in the build and no pull; the image it replaces is removed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
IMAGE=${IMAGE:-localhost/kontext-receiver:dev}
PYTHON=${PYTHON:-$root/.venv/bin/python}
RUNTIME=${RUNTIME:-/usr/sbin/runc}
wheels=build/wheels
# Debian bookworm has glibc 2.36; pip does not widen a manylinux tag given with --platform, so all of them.
platforms=(--platform any)
for minor in $(seq 5 36); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
start=$(date +%s)

for tool in buildah skopeo umoci debootstrap "$RUNTIME"; do
    command -v "$tool" >/dev/null || {
        echo "build-image: $tool is missing (apt-get install buildah runc skopeo umoci debootstrap)" >&2
        exit 1
    }
done

deploy/base-image.sh

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
"$PYTHON" -m pip download --quiet --dest "$wheels" --find-links "$wheels" --only-binary=:all: \
    --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
    "${platforms[@]}" --requirement "$wheels/requirements.txt"

previous=$(buildah inspect --type image --format '{{.FromImageID}}' "$IMAGE" 2>/dev/null || true)
buildah bud --quiet --pull=never --runtime "$RUNTIME" --network none --build-arg "VERSION=$version" \
    --tag "$IMAGE" --file Dockerfile .
# The image this name pointed at before is left without a name: remove it rather than pile them up.
if [ -n "$previous" ] && [ "$previous" != "$(buildah inspect --type image --format '{{.FromImageID}}' "$IMAGE")" ]; then
    buildah rmi "$previous" >/dev/null 2>&1 || true
fi
echo "build-image: $IMAGE ($requirement) built in $(($(date +%s) - start)) s"
