"""Models for multi-label classification: backbone factory and layers."""

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
