"""Captioning speed, measured side by side in one run.

It times
  (a) decoding only (features already computed), 32 images:
      - the step decoder, batched: greedy (beam 1) and beam search (beam 3), every image's beams
        in one ``step`` call per word (``decoding.greedy_search`` / ``beam_search``);
      - the tutorials' loop: per image, per word, the whole training model re-run on the padded
        prefix (``model.predict([photo, sequence])``, then argmax at the last position), greedy;
        both as the tutorials write it (``model.predict``) and with the call compiled once
        (``tf.function``), so the ratio is not only Keras's per-call overhead. It checks that
        this loop produces the same greedy captions as the step decoder.
  (b) warm end to end: ``Captioner.caption_many`` on real photos, batches of 32, beam 3
      (load + resize, encoder, beam search), in ms per image;
  (c) cold start: the ``caption`` command in a subprocess (Python imports, bundle and encoder
      load, one photo, no PNG), wall clock, against ``python -c "import tensorflow"`` in the same
      run (interleaved, best of ``--repeats``; issue 19's target: at most 0.4x). The command uses
      the bundle's exported form (LiteRT, no TensorFlow), made beforehand if it has none;
  (d) warm per photo, the exported form against the TensorFlow path: ``caption_many`` on the same
      batch of 32, beam 3, best of ``--repeats`` (target: no slower), and whether every caption
      is the same word for word.

(a) and (b) run the TensorFlow path (``Captioner.load(runtime="tensorflow")``).

Without ``--model`` it builds a timing bundle: efficientnet_lite0 with its real ImageNet weights and
an UNTRAINED merge decoder of the default size (embedding 256, units 256) with a vocabulary of
``--vocab-size`` words and max length 20. The arithmetic per step is that of a trained model of
the same size; an untrained decoder rarely ends early, so step counts are the worst case.

    python -m benchmarks.bench_captioning [--model DIR] [--images DIR] [--prefix-images 8]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT_ROOT = Path(__file__).resolve().parent.parent

import numpy as np

from captioning.data.images import find_images
from captioning.data.text import END, START
from captioning.inference import search as decoding
from captioning.inference.captioner import Captioner

DEFAULT_IMAGES = PROJECT_ROOT.parent / "shared" / "datasets" / "flickr8k" / "Images"
BATCH = 32


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a trained bundle (default: build a timing bundle)")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES,
                        help="folder of photos (default: %(default)s, else examples/)")
    parser.add_argument("--vocab-size", type=int, default=5000, help="timing bundle vocabulary size")
    parser.add_argument("--prefix-images", type=int, default=8,
                        help="images for the slow prefix re-run loops (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, best kept")
    return parser.parse_args()


def build_timing_bundle(target: Path, vocab_size: int) -> Path:
    """An untrained default-size merge decoder over efficientnet_lite0 (ImageNet weights)."""
    import keras

    from captioning.bundles import store as bundle
    from captioning.bundles.schema import BundleConfig, EncoderSpec
    from captioning.config import DecoderConfig
    from captioning.data.text import RESERVED_TOKENS, Vocabulary
    from captioning.models import build_decoder

    vocab = Vocabulary([*RESERVED_TOKENS, *(f"w{i}" for i in range(vocab_size - len(RESERVED_TOKENS)))])
    decoder = DecoderConfig(kind="merge")
    keras.utils.set_random_seed(0)
    model = build_decoder(len(vocab), 20, (1280,), decoder)
    settings = BundleConfig(encoder=EncoderSpec(name="efficientnet_lite0", weights_id="imagenet"), decoder=decoder,
                            vocab_size=len(vocab), max_length=20, feature_shape=(1280,))
    return bundle.save_bundle(target, model, vocab, settings, {"loss": [0.0], "val_loss": [0.0]})


def best_of(repeats: int, function) -> tuple[float, object]:
    """Smallest wall time of ``repeats`` calls (the least disturbed by other processes), and a result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def prefix_greedy(model, features: np.ndarray, max_length: int, compiled: bool) -> list[list[int]]:
    """The tutorials' inference: for each image, for each word, re-run the model on the prefix."""
    import tensorflow as tf

    steps = max_length - 1
    call = tf.function(lambda inputs: model(inputs, training=False)) if compiled else None
    captions = []
    for row in features:
        sequence = [START]
        for _ in range(steps):
            tokens = np.zeros((1, steps), np.int32)  # post-padded prefix, as the training graph reads it
            tokens[0, :len(sequence)] = sequence
            inputs = {"features": row[None].astype(np.float32), "tokens": tokens}
            logits = call(inputs).numpy() if compiled else model.predict(inputs, verbose=0)
            scores = decoding.mask_banned(logits[:, len(sequence) - 1])  # (1, V) at the last position
            token = int(np.argmax(scores[0]))
            if token == END:
                break
            sequence.append(token)
        captions.append(sequence[1:])
    return captions


def time_decoding(captioner: Captioner, features: np.ndarray, prefix_images: int, repeats: int) -> dict:
    step, length = captioner.step_decoder, captioner.max_length
    greedy_search = lambda f: decoding.greedy_search(step, f, length)  # noqa: E731
    greedy_search(features[:2])  # trace once
    decoding.beam_search(step, features[:2], 3, length)
    greedy_s, greedy = best_of(repeats, lambda: greedy_search(features))
    beam_s, _ = best_of(repeats, lambda: decoding.beam_search(step, features, 3, length))
    model, few = captioner.bundle.model, features[:prefix_images]
    prefix_greedy(model, few[:1], length, compiled=True)  # trace once
    compiled_s, compiled = best_of(1, lambda: prefix_greedy(model, few, length, compiled=True))
    predict_s, _ = best_of(1, lambda: prefix_greedy(model, few, length, compiled=False))
    n, m = len(features), len(few)
    return {
        "same": compiled == greedy[:m],
        "words": np.mean([len(c) for c in greedy]),
        "greedy_ms": 1000 * greedy_s / n, "beam_ms": 1000 * beam_s / n,
        "prefix_compiled_ms": 1000 * compiled_s / m, "prefix_predict_ms": 1000 * predict_s / m,
    }


def time_end_to_end(captioner: Captioner, paths: list[Path], repeats: int) -> float:
    captioner.caption_many(paths[:BATCH], beam_size=3)  # warm: traces the encoder and decoder
    seconds, results = best_of(repeats, lambda: captioner.caption_many(paths[:BATCH], beam_size=3))
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    return 1000 * seconds / len(results)


def run_timed(command: list[str]) -> tuple[float, str]:
    """Wall time of a fresh process, and its stdout."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=tempfile.gettempdir())
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{command[1:3]} failed: {done.stderr.strip().splitlines()[-1:]}")
    return seconds, done.stdout


def time_cold_start(model_dir: Path, photo: Path, repeats: int) -> dict:
    """``caption`` of one photo against ``import tensorflow``, interleaved so load hits both alike."""
    caption = [sys.executable, str(PROJECT_ROOT / "image_captioning.py"), "caption", str(photo),
               "--model", str(model_dir), "--no-png"]
    import_tf = [sys.executable, "-c", "import tensorflow"]
    caption_s, import_s, lines = [], [], set()
    for _ in range(repeats):
        seconds, out = run_timed(caption)
        caption_s.append(seconds)
        lines.add(out.strip().splitlines()[0].split(": ", 1)[1])
        import_s.append(run_timed(import_tf)[0])
    return {"caption_s": min(caption_s), "import_tf_s": min(import_s), "captions": lines}


def time_exported_against_tensorflow(exported: Captioner, reference: Captioner, paths: list[Path],
                                     repeats: int) -> dict:
    """Warm ms per photo on both runtimes (interleaved, best of ``repeats``), and captions differing."""
    batch = paths[:BATCH]
    lite = exported.caption_many(batch, beam_size=3)  # warm both
    tf_results = reference.caption_many(batch, beam_size=3)
    lite_s, tf_s = [], []
    for _ in range(repeats):
        lite_s.append(best_of(1, lambda: exported.caption_many(batch, beam_size=3))[0])
        tf_s.append(best_of(1, lambda: reference.caption_many(batch, beam_size=3))[0])
    differ = sum(a.tokens != b.tokens for a, b in zip(lite, tf_results, strict=True))
    return {"exported_ms": 1000 * min(lite_s) / len(batch), "tf_ms": 1000 * min(tf_s) / len(batch),
            "differ": differ, "count": len(batch), "tf_caption_0": tf_results[0].caption}


def main() -> None:
    args = parse_args()
    folder = args.images if args.images.is_dir() else PROJECT_ROOT / "examples"
    paths = find_images(folder)[:BATCH]
    paths = (paths * (BATCH // len(paths) + 1))[:BATCH]  # a few examples repeat to fill a batch
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model.resolve() if args.model else build_timing_bundle(Path(scratch) / "timing", args.vocab_size)
        load_s, captioner = best_of(1, lambda: Captioner.load(model_dir, runtime="tensorflow"))
        from captioning.data.images import load_image

        pixels = np.stack([load_image(p, captioner.encoder.input_size) for p in paths])
        features = captioner.encode(pixels)  # (32, D) float16, as captioning sees them
        decode = time_decoding(captioner, features, args.prefix_images, args.repeats)
        warm_ms = time_end_to_end(captioner, paths, args.repeats)
        exported = Captioner.load(model_dir, runtime="litert", log=print)  # makes the export if missing
        versus = time_exported_against_tensorflow(exported, captioner, paths, args.repeats)
        cold = time_cold_start(model_dir, paths[0], args.repeats)
    print(f"model: {model_dir if args.model else 'timing bundle (untrained decoder, vocab ' + str(args.vocab_size) + ')'}"
          f"; encoder {captioner.encoder.name} ({captioner.encoder.weights_id}); max length "
          f"{captioner.max_length}; photos from {folder}")
    print(f"bundle + encoder load in-process: {load_s:.2f} s")
    print(f"\ndecoding only ({len(features)} images, {decode['words']:.1f} words per caption on average), ms/image:")
    print(f"  step decoder, batched, greedy (beam 1)      {decode['greedy_ms']:8.2f}")
    print(f"  step decoder, batched, beam 3               {decode['beam_ms']:8.2f}")
    print(f"  prefix re-run per word, compiled call       {decode['prefix_compiled_ms']:8.2f}"
          f"   ({args.prefix_images} images; same captions as greedy: {'yes' if decode['same'] else 'NO'})")
    print(f"  prefix re-run per word, model.predict       {decode['prefix_predict_ms']:8.2f}   (the tutorials' loop)")
    print(f"  speed-up at beam 1: {decode['prefix_predict_ms'] / decode['greedy_ms']:.1f}x vs the tutorials' loop, "
          f"{decode['prefix_compiled_ms'] / decode['greedy_ms']:.1f}x vs its compiled form (target >= 5x)")
    print(f"  beam 3 costs {decode['beam_ms'] / decode['greedy_ms']:.1f}x greedy; "
          f"{decode['prefix_predict_ms'] / decode['beam_ms']:.1f}x faster than the tutorials' greedy loop")
    print(f"\nwarm end to end (load + encoder + beam 3, batches of {BATCH}): {warm_ms:.1f} ms/image "
          f"(target <= 100 ms)")
    print(f"\nexported form (LiteRT) against the TensorFlow path, warm, batches of {BATCH}, beam 3:")
    print(f"  TensorFlow {versus['tf_ms']:8.1f} ms/photo   exported {versus['exported_ms']:8.1f} ms/photo   "
          f"ratio {versus['exported_ms'] / versus['tf_ms']:.2f}x (target <= 1)")
    print(f"  captions differing word for word: {versus['differ']} of {versus['count']}")
    same = cold["captions"] == {versus["tf_caption_0"]}
    print(f"\ncold start, best of {args.repeats} interleaved (fresh processes):")
    print(f"  `caption` of one photo (exported form, no PNG)  {cold['caption_s']:6.2f} s"
          f"   caption {'the same as' if same else 'NOT the same as'} the TensorFlow path's")
    print(f"  python -c \"import tensorflow\"                  {cold['import_tf_s']:6.2f} s")
    print(f"  ratio {cold['caption_s'] / cold['import_tf_s']:.2f}x (target <= 0.4x); "
          f"= {1000 * cold['caption_s'] / warm_ms:.0f}x one warm TensorFlow image")


if __name__ == "__main__":
    main()
