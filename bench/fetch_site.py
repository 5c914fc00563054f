"""The local web for bench_fetch.py: varied photo-like JPEGs served by nginx on 127.0.0.1.

`make_images` writes a few hundred distinct JPEGs of realistic sizes (300-1600 px a side) with real structure
(gradients, shapes, texture and sensor-like noise), so decode and resize cost what web photos cost. `Nginx`
serves them under many URL paths (/i/<n>/<file>), so a URL list of any length maps onto the same files.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def make_images(folder: str, count: int = 300, seed: int = 0) -> list[str]:
    """Write `count` JPEGs into folder (kept if already there); return their file names."""
    os.makedirs(folder, exist_ok=True)
    names = [f"{i:04d}.jpg" for i in range(count)]
    if all(os.path.exists(os.path.join(folder, n)) for n in names):
        return names
    rng = np.random.default_rng(seed)
    for name in names:
        w, h = (int(v) for v in rng.integers(300, 1601, size=2))
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        base = rng.uniform(0, 255, 3)
        slope = rng.uniform(-0.3, 0.3, (2, 3))
        arr = base + x[..., None] * slope[0] + y[..., None] * slope[1]
        arr += 25 * np.sin(x / rng.uniform(5, 40))[..., None] * np.cos(y / rng.uniform(5, 40))[..., None]
        img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(5, 25))):  # shapes with edges, like objects in a photo
            x0, y0 = rng.integers(0, w), rng.integers(0, h)
            x1, y1 = x0 + rng.integers(20, w // 2 + 21), y0 + rng.integers(20, h // 2 + 21)
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2)))
        noisy = np.asarray(img, dtype=np.int16) + rng.normal(0, 6, (h, w, 3)).astype(np.int16)
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(os.path.join(folder, name), "JPEG",
                                                                   quality=int(rng.integers(75, 93)))
    return names


NGINX_CONF = """
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path {work}/tmp; proxy_temp_path {work}/tmp; fastcgi_temp_path {work}/tmp;
    uwsgi_temp_path {work}/tmp; scgi_temp_path {work}/tmp;
    types {{ image/jpeg jpg; }}
    server {{
        listen 127.0.0.1:{port};
        location ~ ^/i/[0-9]+/(?<file>[0-9]+\\.jpg)$ {{ alias {images}/$file; }}
    }}
}}
"""


class Nginx:
    """nginx on 127.0.0.1:<free port> serving `images`; a context manager that stops it on exit."""

    def __init__(self, images: str, work: str):
        self.images, self.work = os.path.abspath(images), os.path.abspath(work)

    def __enter__(self) -> str:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(binary):
            raise SystemExit("nginx is not installed: apt-get install nginx-light (or nginx)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        os.makedirs(os.path.join(self.work, "tmp"), exist_ok=True)
        conf = os.path.join(self.work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(work=self.work, port=self.port, images=self.images))
        self.proc = subprocess.Popen([binary, "-c", conf, "-p", self.work], stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{self.port}"
        for _ in range(100):  # wait until it answers
            try:
                urllib.request.urlopen(f"{base}/i/0/0000.jpg", timeout=1).read()
                return base
            except OSError:
                time.sleep(0.05)
        self.__exit__()
        raise SystemExit(f"nginx did not start; see {self.work}/nginx-error.log")

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGQUIT)
        self.proc.wait(timeout=10)
