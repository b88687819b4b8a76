"""The gRPC client of docs/SERVING.md against a stand-in PredictionService.

No TF Serving binary is available on the development machines; the
stand-in serves the export's `serving_default` signature through the
`tensorflow_serving.apis` protos over a real gRPC channel, so the client
code, the proto conversions and the `valid` output are what a client of
TF Serving sees. Needs `pip install tensorflow-serving-api` (not a
keras-csl dependency): skipped without it.
"""

from concurrent import futures

import numpy as np
import pytest
import tensorflow as tf

grpc = pytest.importorskip("grpc")
predict_pb2 = pytest.importorskip("tensorflow_serving.apis.predict_pb2")
prediction_service_pb2_grpc = pytest.importorskip(
    "tensorflow_serving.apis.prediction_service_pb2_grpc"
)

from keras_csl.export import export_for_serving  # noqa: E402
from keras_csl.models import ModelCard  # noqa: E402
from keras_csl.models import build_model  # noqa: E402
from keras_csl.models import set_model_card  # noqa: E402


class StandIn(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict of one SavedModel's signatures, as TF Serving answers it."""

    def __init__(self, path):
        self.signatures = tf.saved_model.load(path).signatures

    def Predict(self, request, context):  # noqa: N802 (gRPC method name)
        signature = self.signatures[request.model_spec.signature_name]
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        outputs = signature(**{k: tf.constant(v) for k, v in inputs.items()})
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(request.model_spec)
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response


def test_docs_grpc_client_reads_valid(tmp_path):
    model = set_model_card(build_model("tiny", 3, image_size=32), ModelCard(
        image_size=32, class_ids=("/m/a", "/m/b", "/m/c"),
        display_names=("Cat", "Dog", "Bird"),
    ))
    export_path = export_for_serving(model, tmp_path / "export")
    rng = np.random.default_rng(0)
    (tmp_path / "cat.jpg").write_bytes(
        tf.io.encode_jpeg(rng.integers(0, 256, (40, 50, 3), np.uint8)).numpy()
    )
    (tmp_path / "notes.txt").write_bytes(b"not an image")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        StandIn(export_path), server
    )
    port = server.add_insecure_port("localhost:0")
    server.start()
    try:
        # The client of docs/SERVING.md, section 9 (paths made absolute).
        channel = grpc.insecure_channel(f"localhost:{port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        paths = [str(tmp_path / "cat.jpg"), str(tmp_path / "notes.txt")]
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "csl"
        request.model_spec.signature_name = "serving_default"
        request.inputs["image_bytes"].CopyFrom(
            tf.make_tensor_proto(
                [open(p, "rb").read() for p in paths], dtype=tf.string
            )
        )
        response = stub.Predict(request, timeout=10.0)
        valid = tf.make_ndarray(response.outputs["valid"])
        names = tf.make_ndarray(response.outputs["top_k_names"])
        scores = tf.make_ndarray(response.outputs["top_k_scores"])
        printed = []
        for path, ok, row, row_scores in zip(paths, valid, names, scores):
            if not ok:
                printed.append((path, "not a decodable image"))
                continue
            printed.append(
                (path, [(n.decode("utf-8"), float(s)) for n, s in zip(row, row_scores)])
            )
        channel.close()
    finally:
        server.stop(None)
    assert valid.dtype == bool and valid.tolist() == [True, False]
    assert printed[1] == (paths[1], "not a decodable image")
    assert sorted(n for n, _ in printed[0][1]) == ["Bird", "Cat", "Dog"]
    reference = tf.saved_model.load(export_path).signatures["serving_default"](
        image_bytes=tf.constant([open(paths[0], "rb").read()])
    )["top_k_scores"].numpy()[0]
    np.testing.assert_allclose([s for _, s in printed[0][1]], reference, atol=1e-6)
