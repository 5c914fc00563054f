#!/bin/sh
# Flat graphics for bench/bench_dedup_quality.py's hard negatives: Debian's papirus-icon-theme and
# breeze-icon-theme rendered to 128 px PNG on white (as icons sit on web pages), and the Noto colour emoji
# font (rendered by the benchmark itself). Needs rsvg-convert (librsvg2-bin; unpacked here if not installed).
set -e
dest=${1:-bench/work/photos}
cd "$dest"
apt-get download papirus-icon-theme breeze-icon-theme fonts-noto-color-emoji
for d in papirus-icon-theme_*.deb breeze-icon-theme_*.deb fonts-noto-color-emoji_*.deb; do dpkg-deb -x "$d" x; done
rsvg=$(command -v rsvg-convert || true)
if [ -z "$rsvg" ]; then
    apt-get download librsvg2-bin && dpkg-deb -x librsvg2-bin_*.deb rsvg && rsvg=rsvg/usr/bin/rsvg-convert
fi
mkdir -p icons
# Breeze's 16-32 px variants are simplified copies of its larger icons: left out, they would be near-duplicates.
find x/usr/share/icons/Papirus/64x64 x/usr/share/icons/breeze -name '*.svg' ! -type l \
    | grep -v 'breeze/.*/\(16\|22\|24\|32\)/' | sort | while read -r f; do
    out="icons/$(echo "$f" | tr '/' '_' | sed 's/\.svg$/.png/')"
    [ -f "$out" ] || "$rsvg" -w 128 -h 128 -b white "$f" -o "$out" 2>/dev/null || true
done
