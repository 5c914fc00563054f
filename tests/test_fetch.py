"""The fetcher against real aiohttp servers on 127.0.0.1 that misbehave in every way the web does.

Each hostile case must end in its own reason from fetch.REASONS, quickly (short limits), without raising and
without holding more than the byte cap.
"""

import asyncio
import gzip
import socket
import time
import tracemalloc

import pytest
from aiohttp import web

from fetch_helpers import fetch_all, jpeg_bytes, serve, short_options
from pipeline.fetch import REASONS, Fetcher, FetchOptions

pytestmark = pytest.mark.timeout(60)

JPEG = jpeg_bytes()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


async def image(request):
    return web.Response(body=JPEG, content_type="image/jpeg")


def test_success_fills_every_field():
    [r] = fetch_all({"/cat.jpg": image}, ["/cat.jpg"])
    assert r.reason is None and r.body == JPEG and r.http_status == 200
    assert r.final_url.endswith("/cat.jpg") and r.content_type == "image/jpeg" and r.attempts == 1


def test_many_urls_concurrently_all_arrive_intact():
    bodies = {f"/img/{i}.jpg": jpeg_bytes(color=(i, 2 * i, 3 * i)) for i in range(60)}

    async def handler(request):
        return web.Response(body=bodies[request.path])

    results = fetch_all({"/img/{name}": handler}, list(bodies), max_concurrency=8, per_host_concurrency=4)
    assert [r.body for r in results] == list(bodies.values())


def test_http_errors_become_http_code_reasons():
    async def missing(request):
        raise web.HTTPNotFound()

    async def broken(request):
        raise web.HTTPInternalServerError()

    async def odd(request):
        return web.Response(status=599, body=b"?")

    results = fetch_all({"/missing": missing, "/broken": broken, "/odd": odd}, ["/missing", "/broken", "/odd"])
    assert [r.reason for r in results] == ["http_404", "http_500", "http_other"]
    assert [r.http_status for r in results] == [404, 500, 599]
    assert all(r.reason in REASONS for r in results)


def test_format_is_sniffed_not_taken_from_content_type():
    async def jpeg_as_html(request):
        return web.Response(body=JPEG, content_type="text/html")

    async def html_as_jpeg(request):
        return web.Response(body=b"<html><body>Not found, sorry</body></html>", content_type="image/jpeg")

    async def empty(request):
        return web.Response(body=b"", content_type="image/png")

    ok, html, nothing = fetch_all({"/a": jpeg_as_html, "/b": html_as_jpeg, "/c": empty}, ["/a", "/b", "/c"])
    assert ok.reason is None and ok.body == JPEG
    assert html.reason == "not_an_image" and nothing.reason == "not_an_image"


def test_slow_drip_ends_in_timeout():
    async def drip(request):
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        await resp.prepare(request)
        await resp.write(PNG_MAGIC)
        while True:  # one byte every 50 ms, forever: per-read timeouts would never fire
            await asyncio.sleep(0.05)
            await resp.write(b"\0")

    [r] = fetch_all({"/drip": drip}, ["/drip"], timeout_s=0.5)
    assert r.reason == "timeout" and r.body is None


def test_server_that_never_answers_ends_in_timeout():
    async def silent(request):
        await asyncio.sleep(30)

    [r] = fetch_all({"/silent": silent}, ["/silent"], timeout_s=0.3)
    assert r.reason == "timeout"


def test_endless_body_is_aborted_at_the_cap():
    sent = []

    async def endless(request):
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})  # no Content-Length
        await resp.prepare(request)
        await resp.write(PNG_MAGIC)
        chunk = b"\0" * 65536
        try:
            while True:
                await resp.write(chunk)
                sent.append(len(chunk))
        except (ConnectionError, RuntimeError):
            return resp

    tracemalloc.start()
    [r] = fetch_all({"/endless": endless}, ["/endless"], max_bytes=300_000, timeout_s=10)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert r.reason == "too_large" and r.body is None
    assert peak < 20_000_000  # Python memory of client and server together stayed near the cap
    # The client hung up: the server got to send the cap plus what socket buffers hold, not an endless stream.
    assert sum(sent) < 50_000_000


def test_declared_huge_size_is_refused_before_reading():
    async def huge(request):
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.content_length = 10**12
        await resp.prepare(request)
        await resp.write(JPEG)
        await asyncio.sleep(30)  # would hang a client that waits for the declared terabyte
        return resp

    [r] = fetch_all({"/huge": huge}, ["/huge"], timeout_s=5)
    assert r.reason == "too_large" and "Content-Length" in r.error_message


def test_gzip_bomb_is_capped_on_the_decompressed_size():
    bomb = gzip.compress(PNG_MAGIC + b"\0" * 20_000_000)  # ~20 KB on the wire, 20 MB unpacked

    async def gz(request):
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "image/png"})

    [r] = fetch_all({"/gz": gz}, ["/gz"], max_bytes=1_000_000)
    assert len(bomb) < 1_000_000 and r.reason == "too_large"


def test_connection_cut_mid_body_is_a_connection_error():
    async def cut(request):
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.content_length = len(JPEG) * 10
        await resp.prepare(request)
        await resp.write(JPEG)
        request.transport.close()
        return resp

    [r] = fetch_all({"/cut": cut}, ["/cut"])
    assert r.reason == "connection_error"


def test_a_declared_body_that_is_no_image_is_refused_on_its_first_bytes():
    # Bodies of a declared length are read in one call after a look at the first bytes: an HTML page that
    # says it is 900 KB and then goes silent ends in not_an_image at once, not in a wait for the rest.
    async def page_then_silence(request):
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.content_length = 900_000
        await resp.prepare(request)
        await resp.write(b"<!DOCTYPE html><html><body>")
        await asyncio.sleep(10)
        return resp

    async def image_in_pieces(request):  # the magic number split over writes: sniffed once it is all there
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.content_length = len(JPEG)
        await resp.prepare(request)
        for start in (0, 2, 5, 4096):
            await resp.write(JPEG[start:{0: 2, 2: 5, 5: 4096}.get(start)])
            await asyncio.sleep(0.05)
        return resp

    started = time.monotonic()
    html, ok = fetch_all({"/p": page_then_silence, "/i": image_in_pieces}, ["/p", "/i"], timeout_s=5.0,
                         stall_timeout_s=5.0)
    assert time.monotonic() - started < 3
    assert html.reason == "not_an_image" and ok.reason is None and ok.body == JPEG


def test_closed_port_is_a_connection_error():
    with socket.socket() as s:  # a port that was free a moment ago and now has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    [r] = fetch_all({}, [f"http://127.0.0.1:{port}/x.jpg"])
    assert r.reason == "connection_error"


def test_garbage_instead_of_http_is_a_protocol_error():
    async def main():
        async def garbage(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\nthis is not HTTP\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(garbage, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, Fetcher(short_options()) as fetcher:
            return await fetcher.fetch(f"http://127.0.0.1:{port}/x.jpg")

    r = asyncio.run(main())
    assert r.reason == "protocol_error", r


@pytest.mark.parametrize("url", ["ftp://example.com/a.jpg", "not a url", "http://", "/relative.jpg",
                                 "data:image/png;base64,AAAA", "http://exa mple.com/a.jpg", "http://[::1/x"])
def test_bad_urls_are_rejected_without_a_request(url):
    async def main():
        async with Fetcher(short_options()) as fetcher:
            return await fetcher.fetch(url)

    r = asyncio.run(main())
    assert r.reason == "bad_url" and r.url == url


def test_redirects_are_followed_up_to_the_limit():
    async def hop(request):
        n = int(request.match_info["n"])
        if n == 0:
            return web.Response(body=JPEG)
        raise web.HTTPFound(f"/hop/{n - 1}")  # relative Location, resolved against the current URL

    five, six = fetch_all({"/hop/{n}": hop}, ["/hop/5", "/hop/6"], max_redirects=5)
    assert five.reason is None and five.body == JPEG and five.final_url.endswith("/hop/0")
    assert six.reason == "too_many_redirects"


def test_redirect_loop_stops_at_once():
    hits = []

    async def ping(request):
        hits.append(request.path)
        raise web.HTTPMovedPermanently("/pong" if request.path == "/ping" else "/ping")

    [r] = fetch_all({"/ping": ping, "/pong": ping}, ["/ping"], max_redirects=5)
    assert r.reason == "too_many_redirects" and "loop" in r.error_message
    assert hits == ["/ping", "/pong"]


def test_redirect_without_location_and_to_other_schemes():
    async def no_location(request):
        return web.Response(status=302)

    async def to_file(request):
        raise web.HTTPFound("file:///etc/passwd")

    a, b = fetch_all({"/a": no_location, "/b": to_file}, ["/a", "/b"])
    assert a.reason == "http_302" and b.reason == "bad_url"


def test_429_with_retry_after_pauses_then_retries():
    arrivals = []

    async def busy(request):
        arrivals.append(asyncio.get_running_loop().time())
        if len(arrivals) == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.Response(body=JPEG)

    [r] = fetch_all({"/busy": busy}, ["/busy"], retries=1)
    assert r.reason is None and r.attempts == 2
    # The retry waited for the time the server asked for (a lower bound, so it cannot flake).
    assert arrivals[1] - arrivals[0] >= 0.95


def test_retry_after_beyond_the_cap_gives_up_without_waiting():
    hits = []

    async def busy(request):
        hits.append(1)
        return web.Response(status=503, headers={"Retry-After": "3600"})

    [r] = fetch_all({"/busy": busy}, ["/busy"], retries=3, max_retry_after_s=5)
    assert r.reason == "http_503" and len(hits) == 1


def test_503_without_retry_after_backs_off_and_recovers():
    hits = []

    async def flaky(request):
        hits.append(1)
        return web.Response(status=503) if len(hits) == 1 else web.Response(body=JPEG)

    [r] = fetch_all({"/f": flaky}, ["/f"], retries=2)
    assert r.reason is None and r.attempts == 2


def test_per_host_and_total_concurrency_are_bounded():
    in_flight = {"now": 0, "max": 0}

    async def slow(request):
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        await asyncio.sleep(0.02)  # keep requests overlapping so the limit is what bounds them
        in_flight["now"] -= 1
        return web.Response(body=JPEG)

    results = fetch_all({"/img/{n}": slow}, [f"/img/{n}" for n in range(40)], per_host_concurrency=3)
    assert all(r.reason is None for r in results)
    assert in_flight["max"] == 3

    in_flight["max"] = 0

    async def two_hosts():  # "127.0.0.1" and "localhost" are two hosts to the fetcher, one server here
        async with serve({"/img/{n}": slow}) as base:
            port = base.rsplit(":", 1)[1]
            urls = [f"http://{h}:{port}/img/{n}" for n in range(20) for h in ("127.0.0.1", "localhost")]
            async with Fetcher(short_options(per_host_concurrency=4, max_concurrency=5)) as fetcher:
                return await asyncio.gather(*(fetcher.fetch(u) for u in urls))

    assert all(r.reason is None for r in asyncio.run(two_hosts()))
    assert in_flight["max"] == 5


def test_minimum_delay_between_requests_to_a_host():
    arrivals = []

    async def timed(request):
        arrivals.append(asyncio.get_running_loop().time())
        return web.Response(body=JPEG)

    results = fetch_all({"/i/{n}": timed}, [f"/i/{n}" for n in range(4)], min_host_delay_s=0.2)
    assert all(r.reason is None for r in results)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    # Spacing holds over the run; one gap may come a little short from scheduler jitter on a loaded machine.
    assert len(gaps) == 3 and arrivals[-1] - arrivals[0] >= 0.57 and min(gaps) >= 0.1


def test_user_agent_has_a_contact_url_and_is_configurable():
    seen = []

    async def record(request):
        seen.append(request.headers["User-Agent"])
        return web.Response(body=JPEG)

    fetch_all({"/a": record}, ["/a"])
    fetch_all({"/a": record}, ["/a"], user_agent="MyLab-WIT/2.0 (+mailto:data@mylab.example)")
    assert seen[0] == FetchOptions().user_agent and "+http" in seen[0]
    assert seen[1] == "MyLab-WIT/2.0 (+mailto:data@mylab.example)"


def test_fetcher_pickles_as_plain_config():
    import pickle

    options = FetchOptions(per_host_concurrency=2, allowed_endpoints=("10.0.0.2:8080",))
    assert pickle.loads(pickle.dumps(options)) == options
    fetcher = pickle.loads(pickle.dumps(Fetcher(options)))
    assert fetcher.options == options


@pytest.mark.parametrize("bad", [dict(max_concurrency=0), dict(per_host_concurrency=0), dict(timeout_s=0),
                                 dict(max_bytes=-1), dict(retries=-1), dict(user_agent="  ")])
def test_options_that_would_hang_or_mislead_are_input_errors(bad):
    from openwit.errors import InputError

    with pytest.raises(InputError):
        FetchOptions(**bad)


def _self_signed_cert(folder) -> tuple[str, str]:
    """A certificate for 127.0.0.1 that no CA signed: what a man-in-the-middle or a misconfigured host shows."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_untrusted_certificate_is_a_tls_error(tmp_path):
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*_self_signed_cert(tmp_path))

    async def main():
        app = web.Application()
        app.router.add_get("/a.jpg", image)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        try:
            async with Fetcher(short_options()) as fetcher:
                return await fetcher.fetch(f"https://127.0.0.1:{runner.addresses[0][1]}/a.jpg")
        finally:
            await runner.cleanup()

    r = asyncio.run(main())
    assert r.reason == "tls_error" and "certificate" in r.error_message.lower()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_hostile_images_over_http_each_end_in_their_reason():
    # The whole download path of the shard writer: fetch, then process_image, against served files.
    import io

    from PIL import Image

    from pipeline.resize import ImageOptions, ImageRejected, process_image

    def png(img):
        out = io.BytesIO()
        img.save(out, "PNG")
        return out.getvalue()

    big = jpeg_bytes(size=(600, 400))
    files = {
        "/ok.jpg": (big, None),
        "/truncated.jpg": (big[: len(big) // 2], "decode_error"),
        "/corrupt.png": (png(Image.new("RGB", (50, 50)))[:20] + b"\xde\xad" * 40, "decode_error"),
        "/bomb.png": (png(Image.new("1", (10000, 9000))), "too_many_pixels"),
        "/needle.png": (png(Image.new("RGB", (1, 20000), (255, 0, 0))), "too_small"),  # 1 px < min size
        "/strip.png": (png(Image.new("RGB", (20, 20000), (255, 0, 0))), "bad_aspect_ratio"),
        "/tiny.jpg": (jpeg_bytes(size=(8, 8)), "too_small"),
        "/page.jpg": (b"<html>moved</html>", "not_an_image"),
    }

    async def serve_file(request):
        return web.Response(body=files[request.path][0], content_type="image/jpeg")

    results = fetch_all({path: serve_file for path in files}, list(files))
    options = ImageOptions(min_image_size=16, max_aspect_ratio=10)
    for (path, (_, expected)), result in zip(files.items(), results):
        reason = result.reason
        if reason is None:
            try:
                process_image(result.body, options)
            except ImageRejected as e:
                reason = e.reason
        assert reason == expected, path
