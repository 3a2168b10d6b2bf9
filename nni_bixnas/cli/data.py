"""``bixnas data inspect SCHEME:PATH``: what a dataset holds and what is wrong with it; ``bixnas data sample OUT``:
one of its items as a PNG."""

from __future__ import annotations

import argparse
import json

# Every scheme of nni_bixnas.data.spec.SCHEMES and its layout (kept here, not imported from nni_bixnas.data, so
# that `bixnas data inspect --help` does not load torch; tests/test_cli_lazy.py checks that none is missing).
SCHEMES_HELP = """\
data specs (SCHEME:PATH, or default):
  default[:n=32,size=64,seed=0]
      embedded synthetic H&E-like tiles with exact binary masks (no download); n tiles of size x size px
  folder:PATH  or  folder:IMGDIR,MASKDIR
      your own data: PATH/images/ and PATH/masks/ (or the two folders named), paired by file stem
      (images/a.png <-> masks/a.png; .png .tif .tiff .jpg .jpeg .bmp), image and mask of the same size.
      Masks are single-channel: binary {0, 1} or {0, 255} (one output class, sigmoid), or integer class
      labels 0..K-1 with 0 the background (multi-class, K = largest label + 1 <= 64, softmax). A grayscale
      first image means 1 input channel, else 3 (RGB). Each image is one item and one split unit.
  monuseg:PATH[?masks=auto|png|xml]
      MoNuSeg 2018: PATH/Tissue_Images/*.tif with PATH/Annotations/*.xml and/or PATH/Binary_masks/*.png;
      or a flat folder of .tif tiles with their .xml beside them; or PATH/x/ + PATH/y/ (the authors' layout).
      masks=auto (default) uses the XML polygons when every tile has them, else the PNG masks; each tile is
      cut into four 512x512 corner patches, split by tile
  tnbc:PATH
      TNBC: PATH/Slide_XX/XX_N.png images and PATH/GT_XX/XX_N.png masks {0, 255}; split by slide
  chaos:PATH
      CHAOS MR (Train_Sets/MR): PATH/<patient>/T1DUAL/DICOM_anon/{InPhase,OutPhase}/*.dcm,
      PATH/<patient>/T1DUAL/Ground/*.png, PATH/<patient>/T2SPIR/{DICOM_anon,Ground}/; 5 classes (liver,
      kidneys, spleen), 5-fold split by patient; needs pip install "nni-bixnas[dicom]"
  isbi2012:PATH
      ISBI 2012 EM: PATH/image/*.png grayscale slices and PATH/label/*.png {0, 255} (cell interiors are
      the foreground); each slice is one split unit
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("data", help="inspect datasets; write a sample tile (and its mask)",
                                   description="Dataset tools.")
    commands = parser.add_subparsers(dest="data_command", metavar="ACTION")
    inspect = commands.add_parser(
        "inspect",
        help="count tiles and patches, measure the foreground fraction, list problems",
        description="Decode every item of a dataset and report tiles, patches, image size, channels, classes,\n"
        "the masks used (MoNuSeg: png or xml), foreground fraction and problems. Files with problems\n"
        "(unreadable, bad masks, NaN/inf pixels) are dropped and listed; without --strict the exit status\n"
        "is still 0.",
        epilog=SCHEMES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inspect.add_argument("spec", metavar="SCHEME:PATH",
                         help="e.g. monuseg:/data/MoNuSegTrainingData, monuseg:PATH?masks=xml, folder:PATH or default "
                              "(every scheme and its layout below)")
    inspect.add_argument("--format", choices=("json", "text"), default="text", help="output format (default: text)")
    inspect.add_argument("--strict", action="store_true",
                         help="exit with status 2 if any file is dropped (default: list the problems, exit 0)")
    inspect.set_defaults(func=run_inspect)
    sample = commands.add_parser(
        "sample", help="write one item of a dataset as a PNG (and its mask), e.g. a tile for bixnas predict",
        description="Write item INDEX of a dataset (a patch, as training sees it) to OUT as a PNG, RGB or grayscale;\n"
        "with --mask also its mask (0/255 binary, else class ids). The default data is an embedded synthetic\n"
        "tile of another seed than the default training data ('default:n=1,size=256,seed=100').",
        epilog=SCHEMES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sample.add_argument("out", metavar="OUT.png", help="the image file to write")
    sample.add_argument("--data", default=None, metavar="SCHEME:PATH",
                        help="the dataset (default: the embedded synthetic tile above)")
    sample.add_argument("--index", type=int, default=0, help="which item (default 0; see bixnas data inspect)")
    sample.add_argument("--mask", metavar="MASK.png", help="also write the item's mask here")
    sample.set_defaults(func=run_sample)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def run_inspect(args: argparse.Namespace) -> int:
    from nni_bixnas.data import inspect_dataset

    report = inspect_dataset(args.spec)
    if args.format == "json":
        print(json.dumps(report))
    else:
        _print_report(report)
    if args.strict and report["dropped"]:
        more = len(report["problems"]) - 1
        raise ValueError(
            f"--strict: {report['dropped']} file(s) of {args.spec} dropped; first: {report['problems'][0]}"
            + (f" (and {more} more problem(s) in the report)" if more else "")
        )
    return 0


def run_sample(args: argparse.Namespace) -> int:
    from nni_bixnas.data.sample import SAMPLE_SPEC, write_sample

    written = write_sample(args.out, args.data or SAMPLE_SPEC, args.index, args.mask)
    print(f"{written['key']} of {args.data or SAMPLE_SPEC} -> {written['image']}"
          + (f", mask -> {written['mask']}" if "mask" in written else ""))
    return 0


def _print_report(report: dict) -> None:
    fraction = report["foreground_fraction"]
    if isinstance(fraction, dict):
        fraction = ", ".join(f"{name} {value:.4f}" for name, value in fraction.items())
    else:
        fraction = f"{fraction:.4f}"
    size = "x".join(map(str, report["image_size"])) if report["image_size"] else "varies"
    print(f"dataset:             {report['name']} ({report['spec']})")
    print(f"tiles:               {report['tiles']}")
    print(f"patches:             {report['patches']}")
    print(f"image size (HxW):    {size}")
    if report.get("masks"):
        print(f"masks:               {report['masks']}")
    print(f"channels:            {report['channels']}")
    print(f"classes:             {report['classes']}")
    print(f"foreground fraction: {fraction}")
    print(f"dropped files:       {report['dropped']}")
    print(f"problems:            {len(report['problems'])}")
    for problem in report["problems"]:
        print(f"  - {problem}")
