r"""Tags image files with a trained model: a table, and optionally the pictures.

    python recipes/infer.py --export_dir=exports/coco --images=photos/ \
        [--images=more.jpg ...] [--threshold=0.5] [--top_k=10] \
        [--output_dir=tagged/]

or with a training run's Keras model (a run folder or its `best.keras`:
the classes, resize mode and `jpeg_downscale` then come from the run's
`config.json` unless given as flags):

    python recipes/infer.py --model=runs/coco_rps --images=photos/

`--images` takes files or folders (their JPEG, PNG, GIF and BMP files, not
recursive) and may be repeated. A tag is a class whose probability is at
least `--threshold`, at most `--top_k` per image (0: no limit), most likely
first; the authors' demo uses top 30 and threshold 0.97 for its OpenImages
model. Images are decoded and resized by the export's own preprocessing,
as in training. With `--output_dir`, each picture is saved there with its
tags drawn on it (needs pillow, `pip install pillow`), and `tags.json` holds
the tags of all images.

Time (2 shared CPU cores): about 10 s of start-up, then a few ms per photo
for a tiny CNN and about 90 ms for a ResNet50 at 224 px. Output: one line
per image, `path: name (score), ...` (`[error: ...]` for a file that is not
an image).
"""

import json
import logging
import os

from absl import app
from absl import flags

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")

FLAGS = flags.FLAGS


def define_flags():
    """Defines the command-line flags (only when run as a script)."""
    flags.DEFINE_string("export_dir", None, "A serving export (base path or version).")
    flags.DEFINE_string(
        "model", None, "A training run folder, a .keras file or a SavedModel folder."
    )
    flags.DEFINE_string("classes_csv", None, "classes.csv, for a .keras model.")
    flags.DEFINE_multi_string("images", [], "Image files or folders (repeatable).")
    flags.DEFINE_float("threshold", 0.5, "Minimum probability of a tag.")
    flags.DEFINE_integer("top_k", 10, "At most this many tags per image (0: no limit).")
    flags.DEFINE_string("output_dir", None, "Save the pictures with their tags here.")
    flags.DEFINE_integer("batch_size", 16, "Images per model call.")
    flags.DEFINE_enum(
        "resize_mode", None, ["squash", "pad", "crop"],
        "Resize mode of training, for a .keras model (default: the run's, "
        "else squash).",
    )
    flags.DEFINE_bool(
        "jpeg_downscale", None,
        "Decode large JPEGs at reduced scale, for a .keras model (default: "
        "the run's, else true).",
    )
    flags.DEFINE_bool(
        "from_logits", None,
        "The .keras model outputs logits (default true; false: probabilities).",
    )


def list_images(paths):
    """Image files among `paths` (files as given, folders' images sorted)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            files.extend(
                os.path.join(path, name)
                for name in sorted(os.listdir(path))
                if name.lower().endswith(IMAGE_EXTENSIONS)
                and os.path.isfile(os.path.join(path, name))
            )
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise ValueError(
                "Invalid value for argument `images`. Expected image files or "
                f"folders. Received: {path!r}, which does not exist"
            )
    return files


def select_tags(probabilities, threshold=0.5, top_k=10):
    """Indices of the tags of one image: >= threshold, at most top_k, best first."""
    import numpy as np

    order = np.argsort(-probabilities, kind="stable")
    if top_k:
        order = order[:top_k]
    return [int(i) for i in order if probabilities[i] >= threshold]


def tag_images(
    model,
    images,
    threshold=0.5,
    top_k=10,
    output_dir=None,
    batch_size=16,
    classes_csv=None,
    resize_mode=None,
    jpeg_downscale=None,
    from_logits=None,
):
    """Tags image files; optionally saves them with their tags drawn.

    Example:

    ```python
    results = tag_images("exports/coco", ["photos/"], threshold=0.7)
    results[0]["tags"][0]  # {"index": 0, "class_id": "/m/01g317",
                           #  "name": "Person", "score": 0.98}
    ```

    Args:
        model: a `keras_csl.export.Predictor`, or a path for
            `keras_csl.export.load_predictor` (an export, a SavedModel
            version folder, a training run folder or a `.keras` file).
        images: image files or folders (a path or a list of them).
        threshold: minimum probability of a tag.
        top_k: at most this many tags per image (0 or None: no limit).
        output_dir: if set, each picture is saved there as
            `<name>.jpg` with its tags drawn, plus `tags.json`.
        batch_size: images per model call.
        classes_csv: `classes.csv`, for a `.keras` model (default: its
            training run's).
        resize_mode: the training resize mode, for a `.keras` model
            (default: its training run's, else `"squash"`).
        jpeg_downscale: likewise (default: the run's, else True).
        from_logits: whether a `.keras` model outputs logits (default True).

    Returns:
        One dict per image, in order: `path`, `tags` (a list of dicts with
        `index`, `class_id`, `name`, `score`), `error` (None, or why the
        file could not be read as an image; its tags are then empty), and
        with `output_dir` `output`, the path of the picture drawn.

    Raises:
        ValueError: for a threshold outside [0, 1], a `batch_size` that is
            not a positive int, or a missing image path.
    """
    from keras_csl.export import Predictor
    from keras_csl.export import load_predictor

    if not 0.0 <= threshold <= 1.0:
        raise ValueError(
            "Invalid value for argument `threshold`. Expected a probability "
            f"in [0, 1]. Received: threshold={threshold!r}"
        )
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or (
        batch_size < 1
    ):
        raise ValueError(
            "Invalid value for argument `batch_size`. Expected a positive int. "
            f"Received: batch_size={batch_size!r}"
        )
    if output_dir is not None:
        _require_pillow()
    files = list_images(images)
    predictor = model if isinstance(model, Predictor) else load_predictor(
        model, classes_csv=classes_csv, resize_mode=resize_mode,
        jpeg_downscale=jpeg_downscale, from_logits=from_logits,
    )
    results = []
    for start in range(0, len(files), batch_size):
        batch = files[start : start + batch_size]
        probabilities, errors = _predict_files(predictor, batch)
        for path, probs, error in zip(batch, probabilities, errors):
            tags = [] if error else [
                dict(
                    index=i,
                    class_id=predictor.class_ids[i],
                    name=predictor.display_names[i],
                    score=float(probs[i]),
                )
                for i in select_tags(probs, threshold, top_k)
            ]
            results.append(dict(path=path, tags=tags, error=error))
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        used = set()
        for result in results:
            if result["error"] is None:
                result["output"] = draw_tags(
                    result["path"], result["tags"],
                    _unique_name(output_dir, result["path"], used),
                )
        with open(os.path.join(output_dir, "tags.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1, ensure_ascii=False)
    return results


def _predict_files(predictor, files):
    """Probabilities per file; a file that fails alone gets an error instead."""
    import numpy as np
    import tensorflow as tf

    encoded = []
    for path in files:
        with open(path, "rb") as f:
            encoded.append(f.read())
    try:
        probabilities = predictor.predict_encoded(encoded, batch_size=len(files))
        return probabilities, [None] * len(files)
    except tf.errors.InvalidArgumentError:
        pass  # one bad file fails the batch: retry one by one
    probabilities, errors = [], []
    for path, data in zip(files, encoded):
        try:
            probabilities.append(predictor.predict_encoded([data])[0])
            errors.append(None)
        except tf.errors.InvalidArgumentError as error:
            reason = _short_error(error.message)
            logging.warning("Cannot read %s as an image: %s", path, reason)
            probabilities.append(np.zeros(predictor.num_classes, "float32"))
            errors.append(reason)
    return probabilities, errors


def _short_error(message):
    """The op's own line of a TensorFlow error (not the graph trace)."""
    lines = [
        line.strip() for line in message.splitlines()
        if line.strip() and not line.startswith((" ", "\t", "<"))
        and not line.startswith(("Graph execution error", "Detected at node"))
    ]
    return lines[-1] if lines else message.strip()


def _unique_name(output_dir, path, used):
    stem = os.path.splitext(os.path.basename(path))[0]
    name, n = stem, 1
    while name in used:
        n += 1
        name = f"{stem}_{n}"
    used.add(name)
    return os.path.join(output_dir, name + ".jpg")


def _require_pillow():
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise ImportError(
            "Saving pictures with their tags (output_dir) needs pillow: "
            "pip install pillow (or pip install keras-csl[demo])."
        ) from None


def draw_tags(image_path, tags, output_path):
    """Saves the picture with its tags (name and score) in a box, top left.

    Like the authors' demo, which titles the picture with the predicted
    classes. The picture keeps its stored orientation (the model sees the
    pixels as stored too: EXIF rotation is not applied). Returns
    `output_path`.
    """
    _require_pillow()
    from PIL import Image
    from PIL import ImageDraw
    from PIL import ImageFont

    with Image.open(image_path) as image:
        image = image.convert("RGB")
    size = max(12, round(min(image.size) / 25))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        font = ImageFont.load_default()
    lines = [f"{tag['name']}  {tag['score']:.2f}" for tag in tags] or ["(no tag)"]
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    margin = max(2, size // 4)
    boxes = [draw.textbbox((0, 0), line, font=font) for line in lines]
    line_height = max(b[3] - b[1] for b in boxes) + margin
    width = max(b[2] - b[0] for b in boxes) + 2 * margin
    height = line_height * len(lines) + margin
    draw.rectangle([0, 0, width, height], fill=(0, 0, 0, 150))
    for row, line in enumerate(lines):
        draw.text(
            (margin, margin + row * line_height), line, font=font,
            fill=(255, 255, 255, 255),
        )
    Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB").save(
        output_path, quality=90
    )
    return output_path


def format_table(results):
    """One line per image: `path: name (score), ...`."""
    lines = []
    for result in results:
        if result.get("error"):
            tags = f"[error: {result['error']}]"
        else:
            tags = ", ".join(
                f"{t['name']} ({t['score']:.2f})" for t in result["tags"]
            ) or "(no tag)"
        lines.append(f"{result['path']}: {tags}")
    return "\n".join(lines)


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    if bool(FLAGS.export_dir) == bool(FLAGS.model):
        raise app.UsageError("Pass exactly one of --export_dir and --model.")
    if not FLAGS.images:
        raise app.UsageError("Pass --images (files or folders).")
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
    )
    print(format_table(results))


if __name__ == "__main__":
    define_flags()
    app.run(main)
