#!/usr/bin/env bash
# Install, if missing, the Debian packages headless MuJoCo rendering needs (MUJOCO_GL=egl, Mesa),
# and tcmalloc, which the keycld command runs under when present (keycld/_allocator.py): a
# failure to install tcmalloc only warns, since keycld works without it (slower training steps).
set -euo pipefail
missing_of() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  echo "${missing[@]}"
}
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
apt_install() {
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@"
}
required=$(missing_of libegl1 libgl1 libgl1-mesa-dri libglvnd0)
if [ -n "$required" ]; then
  echo "installing Debian packages for headless rendering: $required"
  apt_install $required
fi
optional=$(missing_of libtcmalloc-minimal4)
if [ -n "$optional" ]; then
  echo "installing tcmalloc for faster training steps: $optional"
  apt_install $optional || echo "warning: could not install $optional; keycld runs with glibc's malloc" >&2
fi
