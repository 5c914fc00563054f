#!/bin/sh
# Real photographs for bench/bench_dedup_quality.py, from packages only: Debian's mate-backgrounds and
# ukui-wallpapers (photographic wallpapers) and the sample images in scikit-image's wheel.
set -e
dest=${1:-bench/work/photos}
mkdir -p "$dest" && cd "$dest"
apt-get download mate-backgrounds ukui-wallpapers
for d in *.deb; do dpkg-deb -x "$d" x; done
pip download --no-deps -d wheel scikit-image==0.26.0
(cd wheel && unzip -q -o ./*.whl 'skimage/data/*')
# Sentences for bench/bench_dedup_captions.py: Debian's fortunes (data files only).
apt-get download fortunes
mkdir -p fortunes && dpkg-deb -x fortunes_*.deb fortunes
