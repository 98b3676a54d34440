"""Command-line surface: argument parsing and dispatch only.

Each subcommand's work lives in ``captioning.cli.commands.<name>.run(args) -> int``, imported only when
that subcommand runs, so ``--help`` and the menu start without importing TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from captioning import config
from captioning.cli import runtime
from captioning.cli.arg_types import (
    dropout_rate,
    non_negative_float,
    png_file,
    port_number,
    positive_float,
    positive_int,
)
from captioning.errors import CaptioningError
from captioning.storage.safe_text import escape, protect_streams

NO_TAGS_HELP = ("do not make captions name what the encoder's ImageNet classifier is sure of "
                "(tags are on for models whose encoder has one, e.g. efficientnet_lite0)")
MODEL_HELP = ("model bundle (default: the one chosen with `default DIR` or `train --make-default`, "
              "else the shipped saved_models/default)")


def _add_dataset_arg(parser: argparse.ArgumentParser, default: str | None, help_extra: str = "") -> None:
    parser.add_argument(
        "--dataset",
        default=default,
        metavar="mini-coco|PATH",
        help="'mini-coco' (download with kagglehub) or a local dataset folder" + help_extra,
    )


def _add_encoder_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", choices=config.ENCODER_NAMES, default=config.DEFAULT_ENCODER,
                        help="image encoder (default: %(default)s)")
    parser.add_argument("--encoder-weights", default=config.DEFAULT_ENCODER_WEIGHTS, metavar="imagenet|none|FILE",
                        help="ImageNet weights (default: %(default)s; resnet50 and densenet201 download "
                             "theirs once, EfficientNet-Lite's ship with it), a local copy of Keras's .h5 file "
                             "(resnet50, densenet201; md5-checked) or a .pth state dict "
                             "(EfficientNet-Lite), or 'none' (random, for tests and benchmarks only)")


def _info_parser(sub) -> None:
    p = sub.add_parser("info", help="summarise a dataset and/or a model bundle",
                       description="Print a summary of a dataset (counts, caption lengths, skipped "
                                   "items) and/or a model bundle.")
    _add_dataset_arg(p, None)
    p.add_argument("--model", metavar="DIR", nargs="?", const="",
                   help="a model bundle folder; --model alone: the default model")


def _extract_parser(sub) -> None:
    p = sub.add_parser("extract", help="extract and cache CNN features for a dataset",
                       description="Run the encoder over a dataset's images into the on-disk feature "
                                   "cache (resumable; a second run reuses it).")
    _add_dataset_arg(p, config.MINI_COCO_SOURCE, " (default: %(default)s)")
    _add_encoder_args(p)
    p.add_argument("--limit", type=positive_int, metavar="N", help="only the first N images")
    p.add_argument("--batch-size", type=positive_int, default=config.EXTRACT_BATCH_SIZE,
                   metavar="N", help="images per batch (default: %(default)s)")
    p.add_argument("--grid", action="store_true",
                   help="cache the spatial feature grid (for attention models) instead of pooled vectors")
    p.add_argument("--shard", metavar="I/N",
                   help="compute only share I of N (0 <= I < N) of the photos: every Nth photo in path order, "
                        "from the I-th; run 0/N .. N-1/N on several hosts over one shared cache folder "
                        "(CAPTIONING_DATA_DIR) and the shares merge into one cache (default: all photos)")


def _add_run_output_args(parser: argparse.ArgumentParser, default_output: str) -> None:
    """--output, --resume and --make-default: the same for every command that writes a bundle by training."""
    parser.add_argument("--output", metavar="DIR", help=f"bundle folder to write (default: {default_output})")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run in --output from its last finished epoch")
    parser.add_argument("--make-default", action="store_true",
                        help="when the run finishes, make its model the default for caption, evaluate and "
                             "the menu (otherwise the default stays as it is)")


def _train_parser(sub) -> None:
    t, d = config.TrainConfig, config.DecoderConfig
    p = sub.add_parser("train", help="train a captioning model",
                       description="Extract features (cached), build the vocabulary, train the decoder "
                                   "and save a model bundle.")
    _add_dataset_arg(p, config.MINI_COCO_SOURCE, " (default: %(default)s)")
    _add_encoder_args(p)
    p.add_argument("--decoder", choices=config.DECODER_KINDS, default=d.kind,
                   help="decoder architecture: attention looks at the photo's grid of cells for "
                        "each word, merge at their mean (default: %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=t.epochs, metavar="N",
                   help="maximum epochs; early stopping may end sooner (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=t.batch_size, metavar="N",
                   help="captions per batch (default: %(default)s)")
    p.add_argument("--learning-rate", type=positive_float, default=t.learning_rate, metavar="LR",
                   help="Adam learning rate (default: %(default)s)")
    p.add_argument("--embedding-dim", type=positive_int, metavar="N",
                   help=f"word embedding width (default: {d.embedding_dim}, or the size of --word-vectors)")
    p.add_argument("--word-vectors", metavar="FILE",
                   help="start the word embedding from pretrained vectors in GloVe's text format (for "
                        "example glove.6B.300d.txt, downloaded and unzipped by you from "
                        "nlp.stanford.edu/projects/glove); words it lacks start random (default: none)")
    p.add_argument("--freeze-word-vectors", action="store_true",
                   help="keep the --word-vectors fixed instead of training them further")
    p.add_argument("--units", type=positive_int, default=d.units, metavar="N",
                   help="LSTM and dense width (default: %(default)s)")
    p.add_argument("--dropout", type=dropout_rate, default=d.dropout, metavar="P",
                   help="dropout rate while training, 0 to below 1: on the image and word inputs "
                        "(merge) or before the output layer (attention) (default: %(default)s)")
    p.add_argument("--attention-regularization", type=non_negative_float, default=d.attention_regularization,
                   metavar="W", help="attention decoder: weight of the doubly stochastic penalty that pushes "
                                     "each grid cell's attention, summed over a caption, toward 1; 0 turns "
                                     "it off (default: %(default)s)")
    p.add_argument("--min-count", type=positive_int, default=config.VocabConfig.min_count, metavar="N",
                   help="keep words seen at least N times in training captions (default: %(default)s)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="only the first N images (quick runs)")
    p.add_argument("--seed", type=int, default=t.seed, metavar="N",
                   help="seed for the train/val/test split and the weights' initialisation "
                        "(default: %(default)s)")
    p.add_argument("--select-by", choices=config.EPOCH_SELECTION, default=t.select_by,
                   help="what chooses the epoch kept and stops training early: the validation loss, or "
                        "the CIDEr-D of captions of --select-images validation photos after each epoch "
                        "(slower; the learning-rate plateau stays on the loss) (default: %(default)s)")
    p.add_argument("--select-images", type=positive_int, default=t.select_images, metavar="N",
                   help="validation photos captioned for --select-by val_cider (default: %(default)s)")
    _add_run_output_args(p, "saved_models/<dataset>-<encoder>-<decoder>")
    p.add_argument("--precision", choices=config.TRAINING_PRECISIONS, default=t.precision,
                   help="compute dtype: auto = mixed bfloat16 (float32 weights) where the CPU has native "
                        "bfloat16 instructions (AVX512_BF16 or AMX) and no GPU is used, else float32 "
                        "(default: %(default)s)")
    p.add_argument("--strategy", choices=config.TRAINING_STRATEGIES, default=config.DEFAULT_STRATEGY,
                   help="tf.distribute strategy: auto = MirroredStrategy when several GPUs are "
                        "visible, else the default; multi-worker = MultiWorkerMirroredStrategy over the "
                        "hosts in the TF_CONFIG environment variable (run on every host; features "
                        "extracted beforehand, see `extract --shard`) (default: %(default)s)")


def _scst_parser(sub) -> None:
    s = config.SelfCriticalConfig
    p = sub.add_parser("scst", help="fine-tune a trained model for CIDEr-D (self-critical training)",
                       description="Self-critical sequence training (Rennie et al. 2017): the decoder "
                                   "captions each training photo several times by sampling and learns "
                                   "from how each sample scores (CIDEr-D against the references) "
                                   "compared with the photo's other samples. Writes a new bundle; the "
                                   "epoch kept is the one with the best validation CIDEr-D.")
    p.add_argument("--model", metavar="DIR", help=MODEL_HELP)
    p.add_argument("--member", type=positive_int, metavar="N",
                   help="an ensemble's member to fine-tune (1 = the first); fine-tune each, then "
                        "combine them with `ensemble` (default: none, for a single-decoder bundle)")
    _add_dataset_arg(p, None, " (default: the dataset the model was trained on, with its split)")
    p.add_argument("--epochs", type=positive_int, default=s.epochs, metavar="N",
                   help="maximum epochs; stops sooner after --patience epochs without a validation "
                        "gain (default: %(default)s)")
    p.add_argument("--learning-rate", type=positive_float, default=s.learning_rate, metavar="LR",
                   help="Adam learning rate, about a twentieth of cross-entropy's (default: %(default)s)")
    p.add_argument("--samples", type=positive_int, default=s.samples_per_image, metavar="K",
                   help="captions sampled per photo; each one's baseline is the mean reward of the "
                        "others, so K >= 2 (default: %(default)s)")
    p.add_argument("--batch-images", type=positive_int, default=s.images_per_batch, metavar="N",
                   help="photos per optimiser step (default: %(default)s)")
    p.add_argument("--monitor-images", type=positive_int, default=s.monitor_images, metavar="N",
                   help="validation photos captioned after each epoch to measure CIDEr-D "
                        "(default: %(default)s)")
    p.add_argument("--monitor-beam-size", type=positive_int, default=s.monitor_beam_size, metavar="N",
                   help="beam width of those validation captions (default: %(default)s)")
    p.add_argument("--patience", type=positive_int, default=s.patience, metavar="N",
                   help="epochs without a validation CIDEr-D gain before stopping (default: %(default)s)")
    p.add_argument("--seed", type=int, default=s.seed, help="seed for sampling, order and the monitored "
                                                            "photos (default: %(default)s)")
    p.add_argument("--limit", type=positive_int, metavar="N",
                   help="only the first N training photos (quick trials; default: all)")
    _add_run_output_args(p, "MODEL-scst, or MODEL-member-N-scst, beside it")


def _caption_parser(sub) -> None:
    p = sub.add_parser("caption", help="caption images or folders",
                       description="Caption images. One image: writes captioned_image.png (or "
                                   "--output). Several: one annotated PNG each in --output-dir.")
    p.add_argument("paths", nargs="+", metavar="IMAGE_OR_FOLDER",
                   help="image files, and folders whose images (searched recursively) are captioned")
    p.add_argument("--model", metavar="DIR", help=MODEL_HELP)
    p.add_argument("--beam-size", type=positive_int, default=config.DEFAULT_BEAM_SIZE, metavar="N",
                   help="beam width; 1 is greedy (default: %(default)s)")
    p.add_argument("--no-tags", action="store_true", help=NO_TAGS_HELP)
    p.add_argument("--output", metavar="PNG", type=png_file,
                   help=f"annotated PNG for a single image (default: {config.DEFAULT_CAPTION_PNG}); "
                        "an existing file is replaced only if this tool drew it")
    p.add_argument("--output-dir", metavar="DIR", default=config.DEFAULT_CAPTION_FOLDER,
                   help="folder for the annotated PNGs when captioning several images (default: "
                        "%(default)s); left out of the folders searched, and a name held by a file this "
                        "tool did not draw gets -2, -3...")
    p.add_argument("--no-png", action="store_true", help="print captions only")
    p.add_argument("--json", metavar="FILE", help="also write the captions as JSON")
    p.add_argument("--attention-map", action="store_true",
                   help="attention models: also write a per-word attention map PNG per image")


def _evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="score a model on held-out images",
                       description="Caption held-out images and score them against all references "
                                   "(BLEU-1..4, METEOR, ROUGE-L, CIDEr-D).")
    p.add_argument("--model", metavar="DIR", help=MODEL_HELP)
    _add_dataset_arg(p, None, " (default: the dataset the model was trained on)")
    p.add_argument("--split", choices=config.EVALUATION_SPLITS, default=config.EVALUATION_SPLITS[0],
                   help="which held-out split (default: %(default)s)")
    p.add_argument("--beam-size", type=positive_int, default=config.DEFAULT_BEAM_SIZE, metavar="N",
                   help="beam width; 1 is greedy (default: %(default)s)")
    p.add_argument("--no-tags", action="store_true", help=NO_TAGS_HELP)
    p.add_argument("--limit", type=positive_int, metavar="N", help="only the first N images")
    p.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    p.add_argument("--update-bundle", action="store_true",
                   help="also replace the bundle's own metrics.json and evaluation_samples.png, which "
                        "a full evaluation of its test split at the default beam otherwise replaces "
                        "for every bundle but the shipped saved_models/default")


def _default_parser(sub) -> None:
    p = sub.add_parser("default", help="show or choose the model used when --model is not given",
                       description="Without arguments: print the model caption, evaluate and the menu "
                                   "use when no --model is given. With MODEL_DIR: make it that model. "
                                   "With --shipped: go back to the shipped saved_models/default.")
    group = p.add_mutually_exclusive_group()
    group.add_argument("model", nargs="?", metavar="MODEL_DIR", help="the bundle to use by default")
    group.add_argument("--shipped", action="store_true", help="use the shipped model by default again")


def _ensemble_parser(sub) -> None:
    p = sub.add_parser("ensemble", help="combine trained models into one that averages them",
                       description="Write a model bundle whose members caption together: at each word "
                                   "the members' next-word probabilities are averaged. The members "
                                   "must share the encoder, vocabulary, split and decoder sizes "
                                   "(they may differ in --dropout and --attention-regularization). "
                                   "An ensemble named here brings all its members, so naming one with "
                                   "a newly trained model grows it.")
    p.add_argument("models", nargs="+", metavar="MODEL_DIR",
                   help="two or more trained bundles (an ensemble counts as its members)")
    p.add_argument("--output", metavar="DIR", required=True, help="the ensemble bundle folder to write")


def _serve_parser(sub) -> None:
    serve = config.ServeConfig
    p = sub.add_parser("serve", help="the captioning web page and HTTP API",
                       description="Serve a web page for captioning photos, and the same as an HTTP "
                                   "API (docs at /docs), until Ctrl-C. The model is loaded once.")
    p.add_argument("--model", metavar="DIR",
                   help="model bundle (default: newest in saved_models/, else saved_models/default)")
    p.add_argument("--host", default=serve.host,
                   help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 "
                        "makes the page reachable from the network, without a password)")
    p.add_argument("--port", type=port_number, default=serve.port,
                   help="TCP port (default: %(default)s; 0 picks a free one)")
    p.add_argument("--max-batch", type=positive_int, default=serve.batch_max_images, metavar="N",
                   help="most photos captioned together when requests arrive at once; 1 turns "
                        "batching off (default: %(default)s)")
    p.add_argument("--batch-wait-ms", type=non_negative_float, default=serve.batch_wait_ms, metavar="MS",
                   help="how long a batch waits for more requests to join (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser: no subcommand means the interactive menu."""
    parser = argparse.ArgumentParser(
        prog="image_captioning.py",
        description="Train image-captioning models and caption photos. "
                    "Run without a subcommand for the interactive menu.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_train_parser, _scst_parser, _caption_parser, _evaluate_parser, _info_parser, _extract_parser,
                _ensemble_parser, _default_parser, _serve_parser):
        add(sub)
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Run one parsed subcommand, turning expected failures into one line on stderr."""
    try:
        module = importlib.import_module(f"captioning.cli.commands.{args.command}")
        return module.run(args)
    except CaptioningError as error:
        print(f"error: {escape(error)}", file=sys.stderr)  # it may name a file that is not UTF-8
        return runtime.EXIT_FAILURE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return runtime.EXIT_INTERRUPTED


def main(argv: list[str] | None = None) -> int:
    """Entry point: the menu without arguments, else the subcommand."""
    # File names that are not UTF-8 reach many messages; the terminal shows them escaped
    # (caf\xe9.jpg) instead of raising UnicodeEncodeError mid-run.
    protect_streams()
    args = build_parser().parse_args(argv)
    try:
        if args.command is None:
            from captioning.cli import menu

            return menu.run()
        return run_command(args)
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as other command-line tools do. Later
        # writes, Python's own flush at exit included, go nowhere instead of raising again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return runtime.EXIT_FAILURE
