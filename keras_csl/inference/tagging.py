"""Tagging image files: the classes a model sees in each, optionally drawn.

`tag_images` runs a `Predictor` (or anything `load_predictor` opens) over
image files and folders and keeps, for each image, the classes whose
probability reaches a threshold, at most `top_k`, most likely first; the
authors' demo uses top 30 and threshold 0.97 for its OpenImages model. A
file that is not a decodable image is reported by name (a warning and the
`error` of its result) and the others are tagged as usual. Pictures with
their tags drawn need pillow.
"""

import json
import logging
import os

import numpy as np

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


def list_images(paths):
    """Image files among `paths` (files as given, folders' images sorted).

    A folder contributes its files with an image extension
    (`IMAGE_EXTENSIONS`), not recursively; a file is taken whatever its
    name.

    Raises:
        ValueError: naming a path that does not exist.
    """
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
    """Indices of the tags of one image: >= threshold, at most top_k, best first.

    Example:

    >>> select_tags(np.array([0.2, 0.9, 0.55, 0.7]), threshold=0.5, top_k=2)
    [1, 3]

    Args:
        probabilities: vector of `C` probabilities.
        threshold: minimum probability of a tag.
        top_k: at most this many tags (0 or None: no limit).
    """
    probabilities = np.asarray(probabilities)
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
    resize_method=None,
):
    """Tags image files; optionally saves them with their tags drawn.

    Example:

    ```python
    results = tag_images("exports/coco", ["photos/"], threshold=0.7)
    results[0]["tags"][0]  # {"index": 0, "class_id": "/m/01g317",
                           #  "name": "Person", "score": 0.98}
    ```

    Args:
        model: a `keras_csl.inference.Predictor`, or a path for
            `load_predictor` (an export, a SavedModel version folder, a
            `.keras` file or a training run folder).
        images: image files or folders (a path or a list of them).
        threshold: minimum probability of a tag.
        top_k: at most this many tags per image (0 or None: no limit).
        output_dir: if set, each picture is saved there as
            `<name>.jpg` with its tags drawn, plus `tags.json`.
        batch_size: images per model call.
        classes_csv: for a `.keras` model, overrides the card's classes;
            for an export or a `Predictor`, may only rename them (as in
            `load_predictor`).
        resize_mode: for a `.keras` model, overrides the card's; for an
            export or a `Predictor`, a value other than the card's raises.
        jpeg_downscale: likewise.
        from_logits: likewise.
        resize_method: likewise.

    Returns:
        One dict per image, in order: `path`, `tags` (a list of dicts with
        `index`, `class_id`, `name`, `score`), `error` (None, or why the
        file could not be read as an image; its tags are then empty), and
        with `output_dir` `output`, the path of the picture drawn.

    Raises:
        ValueError: for a threshold outside [0, 1], a `batch_size` that is
            not a positive int, a missing image path, or settings or classes
            that disagree with an export's or a `Predictor`'s.
    """
    from keras_csl.data.preprocessing import check_positive_int
    from keras_csl.inference.predictor import as_predictor

    if not 0.0 <= threshold <= 1.0:
        raise ValueError(
            "Invalid value for argument `threshold`. Expected a probability "
            f"in [0, 1]. Received: threshold={threshold!r}"
        )
    batch_size = check_positive_int("batch_size", batch_size)
    if output_dir is not None:
        _require_pillow()
    files = list_images(images)
    predictor = as_predictor(
        model, classes_csv=classes_csv, resize_mode=resize_mode,
        jpeg_downscale=jpeg_downscale, from_logits=from_logits,
        resize_method=resize_method,
    )
    results = []
    for start in range(0, len(files), batch_size):
        batch = files[start : start + batch_size]
        encoded = []
        for path in batch:
            with open(path, "rb") as f:
                encoded.append(f.read())
        probabilities, valid = predictor.predict_encoded(
            encoded, batch_size=len(batch), return_valid=True
        )
        for path, data, probs, ok in zip(batch, encoded, probabilities, valid):
            error = None if ok else undecodable_reason(data)
            if error:
                logger.warning("Cannot read %s as an image: %s", path, error)
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
        _save_pictures(results, output_dir)
    bad = sum(1 for r in results if r["error"])
    logger.info("Tagged %d images with %s (%d unreadable).", len(results) - bad,
                predictor.source, bad)
    return results


def undecodable_reason(data):
    """Why `data` is no decodable image: TensorFlow's own message, one line.

    Decodes the file alone, eagerly, as training does; used only for files
    already found invalid, to say why.
    """
    import tensorflow as tf

    from keras_csl.data.preprocessing import decode_image

    if not data:
        return "empty file"
    try:
        decode_image(tf.constant(data))
    except tf.errors.InvalidArgumentError as error:
        return _short_error(error.message)
    return "not a decodable JPEG, PNG, GIF or BMP image"


def _short_error(message):
    """The op's own line of a TensorFlow error (not the graph trace)."""
    lines = [
        line.strip() for line in message.splitlines()
        if line.strip() and not line.startswith((" ", "\t", "<"))
        and not line.startswith(("Graph execution error", "Detected at node"))
    ]
    text = lines[-1] if lines else message.strip()
    # Eager errors start with "{{function_node ...}}": keep what follows.
    return text.split("}} ", 1)[-1]


def _save_pictures(results, output_dir):
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
    """One line per image: `path: name (score), ...` or `path: [error: ...]`."""
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
