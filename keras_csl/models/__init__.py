"""Models for multi-label classification: backbone factory and layers.

The checkpoint converter is the submodule
`keras_csl.models.convert_checkpoint` (also a command:
`python -m keras_csl.models.convert_checkpoint`), not imported here.
"""

from keras_csl.models.backbones import BACKBONES
from keras_csl.models.backbones import build_model
from keras_csl.models.backbones import set_sync_batchnorm
from keras_csl.models.card import ModelCard
from keras_csl.models.card import ModelCardLayer
from keras_csl.models.card import get_model_card
from keras_csl.models.card import read_model_card
from keras_csl.models.card import set_model_card
from keras_csl.models.hub import load_model
from keras_csl.models.layers import CaffePreprocessing
from keras_csl.models.tresnet import TRESNET_VARIANTS
from keras_csl.models.tresnet import TResNetSpec
from keras_csl.models.tresnet import build_tresnet
from keras_csl.models.tresnet_layers import BlurPool2D
from keras_csl.models.tresnet_layers import SpaceToDepth
