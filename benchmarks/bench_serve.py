"""The web server under load, against captioning the same photos in one process, side by side.

It runs, taking turns on the same photos (beam 3, the shipped model unless ``--model``):
  (a) in one process, no server: ``Captioner.caption_many`` one photo per call (what a naive
      server doing one request at a time would achieve), and all photos in one call (batches of
      32: the ceiling);
  (b) ``serve`` in a subprocess on a free loopback port, with N concurrent clients each posting one
      photo per request to ``POST /api/captions`` (keep-alive connections), twice: with request
      batching on (the default) and off (``--max-batch 1``).
Each way captions every photo once per round (``--rounds``), and a server round stops sending
after ``--seconds``: bounded in requests and time. It prints
throughput (photos/s), per-request latency p50/p95, the server's batches (from /healthz), whether
the server's captions equal the in-process ones, and the ratios. Traffic goes to 127.0.0.1 only.

    python -m benchmarks.bench_serve [--model DIR] [--photos DIR] [--images 32] [--clients 8]
                                     [--rounds 3] [--seconds 120]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT_ROOT = Path(__file__).resolve().parent.parent

from captioning.data.images import find_images
from tests.support.serve_process import running_server

DEFAULT_PHOTOS = PROJECT_ROOT.parent / "shared" / "datasets" / "coco-mini" / "Images"
BEAM = 3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=PROJECT_ROOT / "saved_models" / "default")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS,
                        help="folder of photos (default: %(default)s, else examples/)")
    parser.add_argument("--images", type=int, default=32, help="distinct photos used (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="turns of the four ways; each captions every photo once per turn "
                             "(default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=120.0,
                        help="time limit of one server turn; requests not sent by then are left out "
                             "(default: %(default)s)")
    return parser.parse_args()


@dataclass
class Phase:
    name: str
    photos: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    captions: dict[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def throughput(self) -> float:
        return self.photos / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class InProcess:
    """A Captioner in this process: one photo per call, and all photos in one call."""

    def __init__(self, model: Path, photos: list[Path]):
        from captioning.cli.runtime import import_tensorflow
        from captioning.inference.captioner import Captioner

        import_tensorflow().get_logger().setLevel("ERROR")
        self.captioner = Captioner.load(model)
        self.photos = photos
        self.captioner.caption_many(photos[:2], BEAM)  # trace for any batch size, as serve does
        self.captioner.caption_many(photos[:1], BEAM)

    def one_at_a_time(self, phase: Phase) -> None:
        start = time.perf_counter()
        for photo in self.photos:
            began = time.perf_counter()
            result = self.captioner.caption_many([photo], BEAM)[0]
            phase.latencies.append(time.perf_counter() - began)
            phase.captions.setdefault(photo.name, result.caption)
            phase.photos += 1
        phase.seconds += time.perf_counter() - start

    def one_call(self, phase: Phase) -> None:
        start = time.perf_counter()
        results = self.captioner.caption_many(self.photos, BEAM)
        elapsed = time.perf_counter() - start
        phase.seconds += elapsed
        phase.photos += len(results)
        phase.latencies += [elapsed] * len(results)  # every photo waits for the whole call
        for result in results:
            phase.captions.setdefault(result.path.name, result.caption)


def post_concurrently(url: str, photos: list[Path], clients: int, deadline_s: float, phase: Phase) -> None:
    """Each photo posted once, one per request, by ``clients`` concurrent keep-alive clients."""
    import httpx2

    payloads = [(photo.name, photo.read_bytes()) for photo in photos]
    lock = threading.Lock()
    next_job = [0]
    errors: list[str] = []
    start = time.perf_counter()

    def client() -> None:
        with httpx2.Client(base_url=url, timeout=300) as http:
            while True:
                with lock:
                    index = next_job[0]
                    next_job[0] += 1
                if index >= len(payloads) or time.perf_counter() - start > deadline_s:
                    return
                began = time.perf_counter()
                response = http.post("api/captions", files=[("files", payloads[index])],
                                     data={"beam_size": str(BEAM)})
                elapsed = time.perf_counter() - began
                with lock:
                    if response.status_code != 200:
                        errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                        continue
                    entry = response.json()["results"][0]
                    phase.latencies.append(elapsed)
                    phase.captions.setdefault(entry["image"], entry["caption"])
                    phase.photos += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    phase.seconds += time.perf_counter() - start
    if errors:
        phase.note += f" {len(errors)} errors, first: {errors[0]}"


def main() -> int:
    import httpx2

    args = parse_args()
    folder = args.photos if args.photos.is_dir() else PROJECT_ROOT / "examples"
    photos = find_images(folder)[:args.images]
    print(f"{len(photos)} photos from {folder}, model {args.model}, beam {BEAM}, {args.clients} clients, "
          f"{args.rounds} rounds, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    single = Phase("in process, one photo per call")
    batched = Phase("in process, all photos in one call (batches of 32)")
    on = Phase("server, batching on (default)")
    off = Phase("server, --max-batch 1 (batching off)")
    local = InProcess(args.model, photos)
    # Both servers run at once, idle but for their turn, and the four ways take turns round by
    # round, so load from other processes falls on all of them alike.
    with running_server("--model", str(args.model)) as server_on, \
            running_server("--model", str(args.model), "--max-batch", "1") as server_off:
        for server in (server_on, server_off):  # connections and first-call costs
            with httpx2.Client(base_url=server.url, timeout=300) as http:
                http.post("api/captions", files=[("files", (photos[0].name, photos[0].read_bytes()))])
        ways = [lambda: local.one_at_a_time(single), lambda: local.one_call(batched),
                lambda: post_concurrently(server_on.url, photos, args.clients, args.seconds, on),
                lambda: post_concurrently(server_off.url, photos, args.clients, args.seconds, off)]
        for round_index in range(args.rounds):
            for way in ways[round_index % len(ways):] + ways[:round_index % len(ways)]:
                way()
            print(f"round {round_index + 1}: " + ", ".join(
                f"{phase.throughput:.2f}" for phase in (single, batched, on, off)) + " photos/s so far",
                flush=True)
        health = {}
        for label, server in (("batching on", server_on), ("batching off", server_off)):
            with httpx2.Client(base_url=server.url, timeout=60) as http:
                health[label] = http.get("healthz").json()

    print()
    print(f"{'':52} {'photos':>6} {'photos/s':>9} {'p50 s':>7} {'p95 s':>7}")
    for phase in (single, batched, on, off):
        print(f"{phase.name:52} {phase.photos:>6} {phase.throughput:>9.2f} {phase.percentile(50):>7.2f} "
              f"{phase.percentile(95):>7.2f} {phase.note}")
    for label, stats in health.items():
        mean = stats["images"] / stats["batches"] if stats["batches"] else 0.0
        print(f"server {label}: {stats['requests']} requests in {stats['batches']} batches "
              f"(mean {mean:.1f} photos per batch, largest {stats['largest_batch']})")
    for phase in (on, off):
        same = sum(phase.captions.get(name) == caption for name, caption in batched.captions.items())
        print(f"{phase.name}: captions equal to in-process for {same} of {len(batched.captions)} photos")
    print()
    print(f"batching on / batching off (server throughput):   {on.throughput / off.throughput:.2f}x")
    print(f"server batching on / in process one at a time:     {on.throughput / single.throughput:.2f}x")
    print(f"server batching off / in process one at a time:    {off.throughput / single.throughput:.2f}x")
    print(f"server batching on / in process one call:          {on.throughput / batched.throughput:.2f}x")
    print(f"p95 latency, batching off / on:                    {off.percentile(95) / on.percentile(95):.2f}x")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
