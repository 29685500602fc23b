#!/bin/sh
# Installs the Debian/Ubuntu packages the demo and the tests need, and only
# those that are missing. Uses sudo when not root; fails with a clear message
# where neither is possible.
set -eu

need=""
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need="$need mosquitto"
command -v mosquitto_sub >/dev/null 2>&1 || need="$need mosquitto-clients"
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need="$need chromium"
# `nigehbaan tech flash` writes into disk images with mtools; the tests build
# images with sfdisk (fdisk) and mkfs.vfat (dosfstools).
command -v mcopy >/dev/null 2>&1 || need="$need mtools"
command -v mkfs.vfat >/dev/null 2>&1 || [ -x /usr/sbin/mkfs.vfat ] || need="$need dosfstools"
command -v sfdisk >/dev/null 2>&1 || [ -x /usr/sbin/sfdisk ] || need="$need fdisk"
# The cluster tests and `nigehbaan cluster up` start RabbitMQ nodes of their own
# (docs/cluster.md); the package brings Erlang with it.
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || command -v rabbitmq-server >/dev/null 2>&1 \
    || [ -x /usr/sbin/rabbitmq-server ] || need="$need rabbitmq-server"
command -v erl >/dev/null 2>&1 || need="$need erlang-base"
# The synthetic plate renderer (simulators/plates.py) draws with DejaVu Sans
# Bold (fonts-dejavu-core) and DejaVu Sans Condensed (fonts-dejavu-extra).
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf ] || need="$need fonts-dejavu-core"
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSansCondensed.ttf ] || need="$need fonts-dejavu-extra"
py="${PY:-python3}"
if ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    need="$need python3-venv"
fi

if [ -z "$need" ]; then
    exit 0
fi

echo "nigehbaan setup: installing system packages:$need"
if ! command -v apt-get >/dev/null 2>&1; then
    echo "nigehbaan setup: apt-get not found; install these by hand:$need" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "nigehbaan setup: not root and no sudo; ask an administrator to install:$need" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
if ! $SUDO apt-get install -y --no-install-recommends $need; then
    $SUDO apt-get update
    # shellcheck disable=SC2086
    $SUDO apt-get install -y --no-install-recommends $need || {
        echo "nigehbaan setup: apt-get could not install:$need" >&2
        exit 1
    }
fi
# Debian's mosquitto and rabbitmq-server packages start system brokers on 1883
# and 5672; we never rely on them (tests, the demo and `nigehbaan cluster up`
# start their own on free ports), so leave them as they are.
