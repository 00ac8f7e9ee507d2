#!/usr/bin/env bash
# Install the Debian packages headless MuJoCo rendering (MUJOCO_GL=egl, Mesa) needs, if missing.
set -euo pipefail
pkgs=(libegl1 libgl1 libgl1-mesa-dri libglvnd0)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages for headless rendering: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
