"""The web server under load, against captioning the same photos in one process, side by side.

It runs, one after the other on the same photos (beam 3, the shipped model unless ``--model``):
  (a) in one process, no server: ``Captioner.caption_paths`` one photo per call (what a naive
      server doing one request at a time would achieve), and all photos in one call (batches of
      32: the ceiling);
  (b) ``serve`` in a subprocess on a free loopback port, with N concurrent clients each posting one
      photo per request to ``POST /api/captions`` (keep-alive connections), twice: with request
      batching on (the default) and off (``--max-batch 1``).
Each phase is bounded in requests (``--rounds`` x photos) and time (``--seconds``). It prints
throughput (photos/s), per-request latency p50/p95, the server's batches (from /healthz), whether
the server's captions equal the in-process ones, and the ratios. Traffic goes to 127.0.0.1 only.

    python benchmarks/bench_serve.py [--model DIR] [--photos DIR] [--images 32] [--clients 8]
                                     [--rounds 2] [--seconds 180]
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
sys.path.insert(0, str(PROJECT_ROOT))

from captioning.images import find_images  # noqa: E402
from tests.serve_process import running_server  # noqa: E402

DEFAULT_PHOTOS = PROJECT_ROOT.parent / "shared" / "datasets" / "coco-mini" / "Images"
BEAM = 3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=PROJECT_ROOT / "saved_models" / "default")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS,
                        help="folder of photos (default: %(default)s, else examples/)")
    parser.add_argument("--images", type=int, default=32, help="distinct photos used (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="each photo is posted this many times per server phase (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=180.0,
                        help="time limit of each phase; unfinished requests are not sent (default: %(default)s)")
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


def in_process(model: Path, photos: list[Path], deadline_s: float) -> tuple[Phase, Phase]:
    """One photo per call, then all photos in one call, on a Captioner in this process."""
    from captioning.captioner import Captioner
    from captioning.tf_runtime import import_tensorflow

    import_tensorflow().get_logger().setLevel("ERROR")
    captioner = Captioner.from_bundle(model)
    captioner.caption_paths(photos[:2], BEAM)  # trace the graphs for any batch size, as serve does
    captioner.caption_paths(photos[:1], BEAM)
    single = Phase("in process, one photo per call")
    start = time.perf_counter()
    for photo in photos:
        if time.perf_counter() - start > deadline_s:
            single.note = "stopped at the time limit"
            break
        began = time.perf_counter()
        result = captioner.caption_paths([photo], BEAM)[0]
        single.latencies.append(time.perf_counter() - began)
        single.captions[photo.name] = result.caption
        single.photos += 1
    single.seconds = time.perf_counter() - start
    batched = Phase("in process, all photos in one call (batches of 32)")
    start = time.perf_counter()
    results = captioner.caption_paths(photos, BEAM)
    batched.seconds = time.perf_counter() - start
    batched.photos = len(results)
    batched.latencies = [batched.seconds] * len(results)  # every photo waits for the whole call
    batched.captions = {r.path.name: r.caption for r in results}
    return single, batched


def through_server(model: Path, photos: list[Path], clients: int, rounds: int, deadline_s: float,
                   max_batch: int | None) -> tuple[Phase, dict]:
    """N concurrent clients posting one photo per request; returns the phase and /healthz after."""
    import httpx2

    name = "server, batching on" if max_batch is None else f"server, --max-batch {max_batch} (batching off)"
    phase = Phase(name)
    extra = [] if max_batch is None else ["--max-batch", str(max_batch)]
    payloads = [(photo.name, photo.read_bytes()) for photo in photos]
    jobs = [payloads[i % len(payloads)] for i in range(len(payloads) * rounds)]
    lock = threading.Lock()
    next_job = [0]
    errors: list[str] = []
    with running_server("--model", str(model), *extra) as server:
        with httpx2.Client(base_url=server.url, timeout=300) as warm:
            warm.post("api/captions", files=[("files", payloads[0])])  # connection and first-call costs
        start = time.perf_counter()

        def client() -> None:
            with httpx2.Client(base_url=server.url, timeout=300) as http:
                while True:
                    with lock:
                        index = next_job[0]
                        next_job[0] += 1
                    if index >= len(jobs) or time.perf_counter() - start > deadline_s:
                        return
                    began = time.perf_counter()
                    response = http.post("api/captions", files=[("files", jobs[index])],
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
        phase.seconds = time.perf_counter() - start
        with httpx2.Client(base_url=server.url, timeout=60) as http:
            health = http.get("healthz").json()
    if phase.photos < len(jobs):
        phase.note = f"{len(jobs) - phase.photos} requests not completed (time limit or errors)"
    if errors:
        phase.note += f"; {len(errors)} errors, first: {errors[0]}"
    return phase, health


def main() -> int:
    args = parse_args()
    folder = args.photos if args.photos.is_dir() else PROJECT_ROOT / "examples"
    photos = find_images(folder)[:args.images]
    print(f"{len(photos)} photos from {folder}, model {args.model}, beam {BEAM}, {args.clients} clients, "
          f"{args.rounds} rounds, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    single, batched = in_process(args.model, photos, args.seconds)
    print(f"in process: {single.throughput:.2f} photos/s one at a time, {batched.throughput:.2f} in one call",
          flush=True)
    on, health_on = through_server(args.model, photos, args.clients, args.rounds, args.seconds, None)
    print(f"server, batching on: {on.throughput:.2f} photos/s", flush=True)
    off, health_off = through_server(args.model, photos, args.clients, args.rounds, args.seconds, 1)
    print(f"server, batching off: {off.throughput:.2f} photos/s", flush=True)

    print()
    print(f"{'':52} {'photos':>6} {'photos/s':>9} {'p50 s':>7} {'p95 s':>7}")
    for phase in (single, batched, on, off):
        print(f"{phase.name:52} {phase.photos:>6} {phase.throughput:>9.2f} {phase.percentile(50):>7.2f} "
              f"{phase.percentile(95):>7.2f}  {phase.note}")
    for label, health in (("batching on", health_on), ("batching off", health_off)):
        mean = health["images"] / health["batches"] if health["batches"] else 0.0
        print(f"server {label}: {health['requests']} requests in {health['batches']} batches "
              f"(mean {mean:.1f} photos per batch, largest {health['largest_batch']})")
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
