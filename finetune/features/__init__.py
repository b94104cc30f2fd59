"""Features and image retrieval: descriptors from any layer, pooling, search, evaluation.

:class:`FeatureExtractor` turns images into descriptors from named layers of
any model that follows the model protocol, with the classic poolings of
convolutional maps (SUM, AVG, MAX, GeM, CroW, R-MAC, MOP), multi-scale
extraction and PCA whitening; :class:`RetrievalIndex` searches them exactly
(with query expansion and database augmentation); the evaluation functions
score rankings with the Oxford Buildings and revisited Oxford/Paris protocols,
or by class for labelled data sets.
"""

from ._descriptors import descriptor_ids, image_inputs, load_descriptors, save_descriptors
from ._evaluation import (average_precision, class_retrieval_map, mean_average_precision,
                          precision_at_k, ranked_ap)
from ._extractor import FeatureExtractor
from ._gt_match import evaluate_ground_truth
from ._index import RetrievalIndex
from ._mop import MOP
from ._oxford import OxfordGroundTruth, RevisitedGroundTruth, crop_query
from ._pooling import RMAC, AvgPooling, CroW, GeM, MaxPooling, Pooling, SumPooling, rmac_regions
from ._postprocess import PCAWhitening, l2_normalize
from ._registry import get_pooling, pooling_names

__all__ = sorted([
    "AvgPooling", "CroW", "FeatureExtractor", "GeM", "MOP", "MaxPooling", "OxfordGroundTruth",
    "PCAWhitening", "Pooling", "RMAC", "RetrievalIndex", "RevisitedGroundTruth", "SumPooling",
    "average_precision", "class_retrieval_map", "crop_query", "descriptor_ids", "evaluate_ground_truth",
    "get_pooling", "image_inputs", "l2_normalize", "load_descriptors", "mean_average_precision", "pooling_names",
    "precision_at_k", "ranked_ap", "rmac_regions", "save_descriptors",
])
