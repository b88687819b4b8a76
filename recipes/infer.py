r"""Tags image files with a trained model: a table, and optionally the pictures.

    python recipes/infer.py --model=ANY/PATH/model.keras --images=photos/

or with a serving export (its latest version):

    python recipes/infer.py --export_dir=exports/coco --images=photos/ \
        [--images=more.jpg ...] [--threshold=0.5] [--top_k=10] \
        [--output_dir=tagged/]

The classes and the preprocessing come from the model card (inside the
`.keras` file, or the export's `assets.extra/model_card.json`); for a
`.keras` model, `--classes_csv`, `--resize_mode`, `--resize_method`,
`--[no]jpeg_downscale` and `--[no]from_logits` override it. `--model` also
takes a training run folder (its `best.keras`) or a SavedModel folder.

`--images` takes files or folders (their JPEG, PNG, GIF and BMP files, not
recursive) and may be repeated. A tag is a class whose probability is at
least `--threshold`, at most `--top_k` per image (0: no limit), most likely
first; the authors' demo uses top 30 and threshold 0.97 for its OpenImages
model. A file that is not a decodable image is reported by name (a warning,
and `[error: ...]` in its line) and the others are tagged as usual. With
`--output_dir`, each picture is saved there with its tags drawn on it
(needs pillow), and `tags.json` holds the tags of all images.

Time (2 shared CPU cores): about 10 s of start-up, then a few ms per photo
for a tiny CNN and about 90 ms for a ResNet50 at 224 px. Output: one line
per image, `path: name (score), ...`.
"""

import logging

from absl import app
from absl import flags

FLAGS = flags.FLAGS


def define_flags():
    """Defines the command-line flags (only when run as a script)."""
    from keras_csl.models.card import RESIZE_METHODS
    from keras_csl.models.card import RESIZE_MODES

    flags.DEFINE_string("export_dir", None, "A serving export (base path or version).")
    flags.DEFINE_string(
        "model", None, "A .keras file, a training run folder or a SavedModel folder."
    )
    flags.DEFINE_multi_string("images", [], "Image files or folders (repeatable).")
    flags.DEFINE_float("threshold", 0.5, "Minimum probability of a tag.")
    flags.DEFINE_integer("top_k", 10, "At most this many tags per image (0: no limit).")
    flags.DEFINE_string("output_dir", None, "Save the pictures with their tags here.")
    flags.DEFINE_integer("batch_size", 16, "Images per model call.")
    flags.DEFINE_string(
        "classes_csv", None, "Override, for a .keras model: the card's classes."
    )
    flags.DEFINE_enum(
        "resize_mode", None, list(RESIZE_MODES),
        "Override, for a .keras model: the card's resize mode.",
    )
    flags.DEFINE_enum(
        "resize_method", None, list(RESIZE_METHODS),
        "Override, for a .keras model: how the resized pixels are computed "
        "(default: the card's; pillow_bicubic: Pillow's default resize).",
    )
    flags.DEFINE_bool(
        "jpeg_downscale", None,
        "Override, for a .keras model: the card's JPEG downscale.",
    )
    flags.DEFINE_bool(
        "from_logits", None,
        "Override, for a .keras model: whether it outputs logits.",
    )


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    if bool(FLAGS.export_dir) == bool(FLAGS.model):
        raise app.UsageError("Pass exactly one of --export_dir and --model.")
    if not FLAGS.images:
        raise app.UsageError("Pass --images (files or folders).")
    from keras_csl.inference import format_table
    from keras_csl.inference import tag_images

    results = tag_images(
        FLAGS.export_dir or FLAGS.model,
        FLAGS.images,
        threshold=FLAGS.threshold,
        top_k=FLAGS.top_k,
        output_dir=FLAGS.output_dir,
        batch_size=FLAGS.batch_size,
        classes_csv=FLAGS.classes_csv,
        resize_mode=FLAGS.resize_mode,
        jpeg_downscale=FLAGS.jpeg_downscale,
        from_logits=FLAGS.from_logits,
        resize_method=FLAGS.resize_method,
    )
    print(format_table(results))


if __name__ == "__main__":
    define_flags()
    app.run(main)
